/* The C SDK test driver (tests/sdk/test_c_sdk.py, test_sdk_common.py): one handler whose behaviour the test
 * picks (a mode: test_set_mode as wasm, a field of the stdin protocol natively), so one program covers the API. */
#include "edge_hive.h"

static uint32_t mode;

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32(uint8_t out[4], size_t n) {
    for (int i = 0; i < 4; i++) out[i] = (uint8_t)(n >> 8 * i);
}

static void put_field(hive_response *r, hive_str s) {
    uint8_t n[4];
    le32(n, s.len);
    hive_response_append(r, n, 4);
    hive_response_append(r, s.ptr, s.len);
}

static hive_response *misc(const hive_request *req) {
    hive_response *r;
    if (hive_str_eq(req->query, "null")) return NULL;
    if (hive_str_eq(req->query, "bad-status")) return hive_response_new(600);
    if (hive_str_eq(req->query, "oom")) {
        hive_tmp_alloc(SIZE_MAX - 4);
        return hive_response_text(200, "unreachable");
    }
    if (hive_str_eq(req->query, "bad-headers")) {
        static char big[HIVE_MAX_HEADER_VALUE + 1];
        int dropped = 0, kept = 0;
        memset(big, 'v', sizeof big);
        r = hive_response_new(200);
        dropped -= hive_response_add_header(r, "x bad", "v");
        dropped -= hive_response_add_header(r, "x-a", "a\r\nb");
        dropped -= hive_response_add_header(r, "", "v");
        dropped -= hive_response_add_header_n(r, "x-nul", 5, "a\0b", 3);
        dropped -= hive_response_add_header_n(r, "x-big", 5, big, sizeof big);
        kept += hive_response_add_header_n(r, "x-max", 5, big, sizeof big - 1) == 0;
        for (int i = 0; i < 300; i++) kept += hive_response_add_header(r, "x-many", "1") == 0;
        hive_response_printf(r, "%d %d", dropped, kept);
        return r;
    }
    if (hive_str_eq(req->query, "fmt")) {
        return hive_response_text(200, hive_fmt("%s|%d|%.*s", hive_cstr(req->path), 42, HIVE_FMT(req->method)));
    }
    if (hive_str_eq(req->query, "json")) return hive_response_json(201, "{\"a\":1}");
    if (hive_str_eq(req->query, "status")) {
        r = hive_response_new(200);
        hive_response_set_status(r, 418);
        return r;
    }
    if (hive_str_eq(req->query, "big")) {
        r = hive_response_new(200);
        for (int i = 0; i < 100000; i++) hive_response_printf(r, "%09d\n", i);
        return r;
    }
    return hive_response_text(404, "unknown case");
}

hive_response *handler(const hive_request *req) {
    hive_response *r;
    switch (mode) {
    case 0: /* the request, re-encoded from the decoded fields */
        r = hive_response_new(200);
        put_field(r, req->method);
        put_field(r, req->path);
        put_field(r, req->query);
        {
            uint8_t n[4];
            le32(n, req->header_count);
            hive_response_append(r, n, 4);
        }
        for (size_t i = 0; i < req->header_count; i++) {
            put_field(r, req->headers[i].name);
            put_field(r, req->headers[i].value);
        }
        put_field(r, req->body);
        return r;
    case 1: { /* the body is a (trusted) response envelope: rebuild it with the builder API */
        const uint8_t *p = (const uint8_t *)req->body.ptr;
        r = hive_response_new((int)rd32(p));
        uint32_t count = rd32(p + 4);
        p += 8;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t nl = rd32(p), vl = rd32(p + 4 + nl);
            hive_response_add_header_n(r, (const char *)p + 4, nl, (const char *)p + 8 + nl, vl);
            p += 8 + nl + vl;
        }
        uint32_t bl = rd32(p);
        hive_response_set_body(r, "replaced", 8);
        hive_response_set_body(r, p + 4, bl / 2);
        hive_response_append(r, p + 4 + bl / 2, bl - bl / 2);
        return r;
    }
    case 2: { /* the query names a header: first value as the body, every value as an x-value header */
        const char *name = hive_cstr(req->query);
        hive_str first = hive_request_header(req, name), v;
        size_t it = 0;
        r = hive_response_new(first.ptr ? 200 : 404);
        while (hive_request_header_next(req, name, &it, &v))
            hive_response_add_header_n(r, "x-value", 7, v.ptr, v.len);
        if (first.ptr) hive_response_set_body(r, first.ptr, first.len);
        return r;
    }
    case 3: { /* the query names a key of the JSON body */
        hive_str out;
        int rc = hive_json_get_string(req->body, hive_cstr(req->query), &out);
        if (rc == 1 && out.ptr[out.len] != 0) return hive_response_text(500, "not NUL-terminated");
        r = hive_response_new(rc == 1 ? 200 : rc == 0 ? 404 : 422);
        hive_response_set_body(r, out.ptr, out.len);
        return r;
    }
    case 4:
        return hive_response_text(200, hive_json_escape(req->body));
    default:
        return misc(req);
    }
}

#ifdef __wasm__
void test_set_mode(uint32_t m);
__attribute__((export_name("test_set_mode"))) void test_set_mode(uint32_t m) { mode = m; }
#else
/* stdin: ([u32 mode][u32 len][bytes])*, stdout: ([u32 len][bytes])* */
int main(void) {
    size_t cap = 1 << 16, len = 0, n;
    uint8_t *in = malloc(cap);
    while (in && (n = fread(in + len, 1, cap - len, stdin)) > 0)
        if ((len += n) == cap) in = realloc(in, cap *= 2);
    if (!in) return 2;
    for (size_t pos = 0; pos + 8 <= len;) {
        mode = rd32(in + pos);
        size_t size = rd32(in + pos + 4), out_len;
        pos += 8;
        /* An exact-size copy, so reading past the envelope is a heap overflow valgrind can see. */
        uint8_t *req = malloc(size ? size : 1);
        memcpy(req, in + pos, size);
        pos += size;
        const uint8_t *out = hive_dispatch(req, size, &out_len);
        uint8_t head[4];
        le32(head, out_len);
        fwrite(head, 1, 4, stdout);
        fwrite(out, 1, out_len, stdout);
        free(req);
    }
    free(in);
    return 0;
}
#endif
