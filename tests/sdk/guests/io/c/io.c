/* The C SDK's fetch and KV test guest (tests/sdk/test_io_c.py; the protocol is in tests/sdk/io.py).
 * FETCH, SEND, ANY and KV requests drive one SDK call from the request's fields and describe its result;
 * GET .../proxy and .../count are the end-to-end cases on a real server. */
#include "edge_hive.h"

static hive_response *failed(hive_response *r, hive_error err) {
    hive_response_add_header_n(r, "x-error", 7, err.code.ptr, err.code.len);
    hive_response_set_body(r, err.message.ptr, err.message.len);
    return r;
}

static uint64_t num(const hive_request *req, const char *name, uint64_t dflt) {
    hive_str v = hive_request_header(req, name);
    return v.ptr ? strtoull(hive_cstr(v), NULL, 10) : dflt;
}

static hive_response *fetched(hive_fetch_response f) {
    hive_response *r = hive_response_new(200);
    if (!HIVE_OK(f.error)) return failed(r, f.error);
    hive_response_add_header(r, "x-status", hive_fmt("%u", (unsigned)f.status));
    for (size_t i = 0; i < f.header_count; i++)
        hive_response_add_header_n(r, f.headers[i].name.ptr, f.headers[i].name.len, f.headers[i].value.ptr,
                                   f.headers[i].value.len);
    hive_response_set_body(r, f.body.ptr, f.body.len);
    return r;
}

static hive_response *fetch_case(const hive_request *req, int how) {
    hive_fetch_request f = { req->query, req->path, req->headers, req->header_count, req->body };
    if (how == 0) return fetched(hive_fetch(&f));
    hive_error err;
    int32_t h = hive_fetch_send(&f, &err);
    if (!h) return failed(hive_response_new(200), err);
    hive_fetch_response res = hive_fetch_wait(how == 1 ? h : 0);
    if (HIVE_OK(res.error) && res.handle != h) return hive_response_text(500, "wrong handle");
    return fetched(res);
}

static hive_response *kv_case(const hive_request *req) {
    const char *store = hive_cstr(req->path);
    hive_str key = hive_request_header(req, "k");
    if (!key.ptr) key = HIVE_STR("");
    hive_response *r = hive_response_new(200);
    if (hive_str_eq(req->query, "get")) {
        hive_kv_value v = hive_kv_get(store, key);
        if (!HIVE_OK(v.error)) return failed(r, v.error);
        hive_response_add_header(r, "x-found", v.found ? "1" : "0");
        hive_response_set_body(r, v.value.ptr, v.value.len);
    } else if (hive_str_eq(req->query, "set")) {
        hive_error e = hive_kv_set(store, key, req->body, num(req, "ttl", 0));
        if (!HIVE_OK(e)) return failed(r, e);
    } else if (hive_str_eq(req->query, "delete")) {
        hive_kv_deleted d = hive_kv_delete(store, key);
        if (!HIVE_OK(d.error)) return failed(r, d.error);
        hive_response_add_header(r, "x-deleted", d.deleted ? "1" : "0");
    } else if (hive_str_eq(req->query, "list")) {
        hive_str cursor = hive_request_header(req, "cursor");
        if (!cursor.ptr) cursor = HIVE_STR("");
        hive_kv_page p = hive_kv_list(store, key, cursor, (uint32_t)num(req, "limit", 100));
        if (!HIVE_OK(p.error)) return failed(r, p.error);
        for (size_t i = 0; i < p.count; i++) hive_response_add_header_n(r, "x-key", 5, p.keys[i].ptr, p.keys[i].len);
        if (p.cursor.len) hive_response_add_header_n(r, "x-cursor", 8, p.cursor.ptr, p.cursor.len);
    } else if (hive_str_eq(req->query, "incr")) {
        hive_kv_number n = hive_kv_incr(store, key, (int64_t)num(req, "delta", 1), num(req, "ttl", 0));
        if (!HIVE_OK(n.error)) return failed(r, n.error);
        hive_response_add_header(r, "x-value", hive_fmt("%lld", (long long)n.value));
    } else {
        return hive_response_text(404, "unknown op");
    }
    return r;
}

static int ends_with(hive_str s, const char *suffix) {
    size_t n = strlen(suffix);
    return s.len >= n && memcmp(s.ptr + s.len - n, suffix, n) == 0;
}

static hive_response *error_json(hive_error e) {
    return hive_response_json(200, hive_fmt("{\"error\":\"%s\"}", hive_json_escape(e.code)));
}

hive_response *handler(const hive_request *req) {
    if (hive_str_eq(req->method, "FETCH")) return fetch_case(req, 0);
    if (hive_str_eq(req->method, "SEND")) return fetch_case(req, 1);
    if (hive_str_eq(req->method, "ANY")) return fetch_case(req, 2);
    if (hive_str_eq(req->method, "KV")) return kv_case(req);
    if (ends_with(req->path, "/proxy")) {
        hive_str url = hive_request_header(req, "x-url");
        hive_fetch_response f = hive_fetch_get(hive_cstr(url));
        if (!HIVE_OK(f.error)) return error_json(f.error);
        hive_response *r = hive_response_new((int)f.status);
        hive_response_set_body(r, f.body.ptr, f.body.len);
        return r;
    }
    if (ends_with(req->path, "/count")) {
        hive_kv_number n = hive_kv_incr("default", HIVE_STR("visits"), 1, 0);
        if (!HIVE_OK(n.error)) return error_json(n.error);
        hive_kv_value v = hive_kv_get("default", HIVE_STR("visits"));
        if (!HIVE_OK(v.error)) return error_json(v.error);
        return hive_response_json(200, hive_fmt("{\"count\":%lld,\"stored\":\"%s\"}", (long long)n.value,
                                                hive_json_escape(v.value)));
    }
    return hive_response_text(404, "unknown case");
}
