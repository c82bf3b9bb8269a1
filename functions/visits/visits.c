/* visits: a visit counter per page, kept in the "default" KV store.
 *
 * GET or POST counts one visit of a page and answers 200 {"page":"/blog","visits":7}. The page is the
 * query's ?page= (percent-decoded), else the sub-path of /functions/v1/visits/<page>, else "/". Each page
 * is the key "visits:<page>", incremented atomically on any worker.
 *
 * GET ?list=1 lists the counters instead, in key order, one page of them at a time:
 *     ?list=1&prefix=/blog&limit=50&cursor=<the previous answer's cursor>
 *     200 {"pages":[{"page":"/blog","visits":7},...],"cursor":"<hex>"} (cursor null on the last page;
 *     a page may hold fewer than limit entries while the cursor is not null)
 * Errors, all JSON {"error": code, "message": ...}:
 *     400 invalid_page (over 256 bytes), invalid_limit (not 1..100), invalid_cursor (not from us)
 *     405 method_not_allowed   not GET or POST
 *     503 kv_unavailable, 507 quota_exceeded / kv_full, 500 for any other KV error (its code)
 */
#include "edge_hive.h"

#define STORE "default"
#define PREFIX "visits:"
#define PREFIX_LEN (sizeof PREFIX - 1)
#define MAX_PAGE 256
#define DEFAULT_LIMIT 50
#define MAX_LIMIT 100

static hive_response *error(int status, const char *code, const char *message) {
    hive_response *r = hive_response_json(status, hive_fmt("{\"error\":\"%s\",\"message\":\"%s\"}",
                                                          hive_json_escape(hive_str_of(code)),
                                                          hive_json_escape(hive_str_of(message))));
    hive_response_add_header(r, "cache-control", "no-store");
    return r;
}

static hive_response *kv_failed(hive_error e) {
    int status = hive_str_eq(e.code, "kv_unavailable") ? 503
               : hive_str_eq(e.code, "quota_exceeded") || hive_str_eq(e.code, "kv_full") ? 507 : 500;
    hive_log(HIVE_LOG_ERROR, "kv: %.*s: %.*s", HIVE_FMT(e.code), HIVE_FMT(e.message));
    return error(status, hive_cstr(e.code), hive_cstr(e.message));
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
}

/* %XX decoded (and '+' as a space when `plus`); a '%' not followed by two hex digits stays as it is. */
static hive_str percent_decode(hive_str s, int plus) {
    char *out = hive_tmp_alloc(s.len + 1);
    size_t n = 0;
    if (!out) return HIVE_STR("");
    for (size_t i = 0; i < s.len; i++) {
        int hi, lo;
        if (s.ptr[i] == '%' && s.len - i >= 3 && (hi = hex_digit(s.ptr[i + 1])) >= 0 && (lo = hex_digit(s.ptr[i + 2])) >= 0) {
            out[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[n++] = plus && s.ptr[i] == '+' ? ' ' : s.ptr[i];
        }
    }
    out[n] = 0;
    hive_str r = { out, n };
    return r;
}

/* The decoded value of query parameter `name`; 1 when present. */
static int query_param(hive_str query, const char *name, hive_str *out) {
    size_t n = strlen(name), i = 0;
    while (i <= query.len) {
        size_t end = i;
        while (end < query.len && query.ptr[end] != '&') end++;
        if (end - i >= n && memcmp(query.ptr + i, name, n) == 0 && (end - i == n || query.ptr[i + n] == '=')) {
            size_t v = end - i == n ? end : i + n + 1;
            hive_str raw = { query.ptr + v, end - v };
            *out = percent_decode(raw, 1);
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* The sub-path after /functions/v1/<name> (or /api/v1/edge/<name>), "/" when there is none. */
static hive_str sub_path(hive_str path) {
    static const char *const mounts[] = { "/functions/v1/", "/api/v1/edge/" };
    for (size_t m = 0; m < 2; m++) {
        size_t n = strlen(mounts[m]);
        if (path.len < n || memcmp(path.ptr, mounts[m], n) != 0) continue;
        const char *slash = memchr(path.ptr + n, '/', path.len - n);
        if (!slash || (size_t)(path.ptr + path.len - slash) == 1) return HIVE_STR("/");
        hive_str rest = { slash, (size_t)(path.ptr + path.len - slash) };
        return percent_decode(rest, 0);
    }
    return path.len ? percent_decode(path, 0) : HIVE_STR("/");
}

static hive_str with_prefix(hive_str page) {
    char *k = hive_tmp_alloc(PREFIX_LEN + page.len);
    if (!k) return HIVE_STR("");
    memcpy(k, PREFIX, PREFIX_LEN);
    if (page.len) memcpy(k + PREFIX_LEN, page.ptr, page.len);
    hive_str r = { k, PREFIX_LEN + page.len };
    return r;
}

static const char *hex(hive_str s) {
    static const char digits[] = "0123456789abcdef";
    char *out = hive_tmp_alloc(s.len * 2 + 1);
    if (!out) return "";
    for (size_t i = 0; i < s.len; i++) {
        out[2 * i] = digits[(unsigned char)s.ptr[i] >> 4];
        out[2 * i + 1] = digits[(unsigned char)s.ptr[i] & 15];
    }
    out[s.len * 2] = 0;
    return out;
}

/* 0 and *out, or -1 when `s` is not an even number of hex digits. */
static int unhex(hive_str s, hive_str *out) {
    if (s.len % 2) return -1;
    char *b = hive_tmp_alloc(s.len / 2 + 1);
    if (!b) return -1;
    for (size_t i = 0; i < s.len; i += 2) {
        int hi = hex_digit(s.ptr[i]), lo = hex_digit(s.ptr[i + 1]);
        if (hi < 0 || lo < 0) return -1;
        b[i / 2] = (char)(hi << 4 | lo);
    }
    out->ptr = b;
    out->len = s.len / 2;
    return 0;
}

/* A counter as a number: the store keeps incr'd values as decimal text. */
static long long parse_count(hive_str v) {
    long long n = 0;
    size_t i = v.len && v.ptr[0] == '-' ? 1 : 0;
    for (; i < v.len && v.ptr[i] >= '0' && v.ptr[i] <= '9'; i++) n = n * 10 + (v.ptr[i] - '0');
    return v.len && v.ptr[0] == '-' ? -n : n;
}

static hive_response *list(const hive_request *req) {
    hive_str prefix = HIVE_STR(""), cursor = HIVE_STR(""), arg;
    long limit = DEFAULT_LIMIT;
    query_param(req->query, "prefix", &prefix);
    if (prefix.len > MAX_PAGE) return error(400, "invalid_page", "the prefix is longer than 256 bytes");
    if (query_param(req->query, "limit", &arg)) {
        limit = 0;
        for (size_t i = 0; i < arg.len && limit <= MAX_LIMIT; i++)
            limit = arg.ptr[i] >= '0' && arg.ptr[i] <= '9' ? limit * 10 + (arg.ptr[i] - '0') : MAX_LIMIT + 1;
        if (limit < 1 || limit > MAX_LIMIT) return error(400, "invalid_limit", "limit must be 1 to 100");
    }
    if (query_param(req->query, "cursor", &arg) && arg.len && unhex(arg, &cursor))
        return error(400, "invalid_cursor", "pass back the cursor of the previous answer as it was");

    hive_kv_page page = hive_kv_list(STORE, with_prefix(prefix), cursor, (uint32_t)limit);
    if (!HIVE_OK(page.error)) return kv_failed(page.error);

    hive_response *r = hive_response_new(200);
    hive_response_add_header(r, "content-type", "application/json");
    hive_response_add_header(r, "cache-control", "no-store");
    hive_response_append(r, "{\"pages\":[", 10);
    int first = 1;
    for (size_t i = 0; i < page.count; i++) {
        hive_kv_value v = hive_kv_get(STORE, page.keys[i]);
        if (!HIVE_OK(v.error)) return kv_failed(v.error);
        if (!v.found || page.keys[i].len < PREFIX_LEN) continue; /* expired or deleted since the list */
        hive_str name = { page.keys[i].ptr + PREFIX_LEN, page.keys[i].len - PREFIX_LEN };
        hive_response_printf(r, "%s{\"page\":\"%s\",\"visits\":%lld}", first ? "" : ",", hive_json_escape(name),
                             parse_count(v.value));
        first = 0;
    }
    if (page.cursor.len) hive_response_printf(r, "],\"cursor\":\"%s\"}", hex(page.cursor));
    else hive_response_append(r, "],\"cursor\":null}", 16);
    return r;
}

hive_response *handler(const hive_request *req) {
    int get = hive_str_eq(req->method, "GET");
    if (!get && !hive_str_eq(req->method, "POST")) {
        hive_response *r = error(405, "method_not_allowed", "GET or POST counts a visit; GET ?list=1 lists them");
        hive_response_add_header(r, "allow", "GET, POST");
        return r;
    }
    hive_str flag;
    if (get && query_param(req->query, "list", &flag) && !hive_str_eq(flag, "0")) return list(req);

    hive_str page;
    if (!query_param(req->query, "page", &page) || page.len == 0) page = sub_path(req->path);
    if (page.len > MAX_PAGE) return error(400, "invalid_page", "the page is longer than 256 bytes");

    hive_kv_number n = hive_kv_incr(STORE, with_prefix(page), 1, 0);
    if (!HIVE_OK(n.error)) return kv_failed(n.error);
    hive_response *r = hive_response_json(200, hive_fmt("{\"page\":\"%s\",\"visits\":%lld}", hive_json_escape(page),
                                                        (long long)n.value));
    hive_response_add_header(r, "cache-control", "no-store");
    return r;
}
