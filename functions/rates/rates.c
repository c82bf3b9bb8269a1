/* rates: exchange rates for a base currency, fetched from an upstream JSON API and cached in KV.
 *
 * GET ?base=EUR (three letters, any case; EUR when absent) answers
 *     200 {"cached":false,"base":"EUR","fetched_at":"2026-11-24T19:40:00Z","data":<the upstream's JSON>}
 * and, for CACHE_TTL_S seconds after that, the same document from the store with "cached":true and no
 * upstream call. Configuration ([config] in hive.toml, or the deploy manifest's "config"):
 *     RATES_URL       the upstream; "{base}" in it becomes the currency, else "base=XXX" is appended
 *     CACHE_TTL_S     seconds an answer stays cached (default 60; 0: no cache)
 *     RATES_API_KEY   optional, sent as "Authorization: Bearer <key>" (a secret: never in hive.toml)
 * Errors, all JSON {"error": code, "message": ...} with Cache-Control: no-store:
 *     400 invalid_base         base is not three ASCII letters
 *     405 method_not_allowed   not GET or HEAD
 *     500 not_configured       RATES_URL unset, or CACHE_TTL_S not a whole number of seconds
 *     502 upstream_error       the upstream answered other than 200 (its status in "upstream_status")
 *     502 upstream_invalid     the upstream's body is not a JSON object
 *     502 <fetch error code>   the fetch was refused or failed (host_not_allowed, dns_failed,
 *                              connect_failed, tls_error, ...; docs/abi.md lists them)
 *     504 <fetch error code>   connect_timeout or timeout
 * The cache is an optimization: a KV error is logged and the upstream is asked instead.
 */
#include <time.h>

#include "edge_hive.h"

#define STORE "default"
#define DEFAULT_TTL_S 60
#define MAX_TTL_S (365L * 86400)

static hive_response *error(int status, const char *code, hive_str message) {
    hive_response *r = hive_response_json(status, hive_fmt("{\"error\":\"%s\",\"message\":\"%s\"}",
                                                          hive_json_escape(hive_str_of(code)),
                                                          hive_json_escape(message)));
    hive_response_add_header(r, "cache-control", "no-store");
    return r;
}

/* The raw value of query parameter `name` (no decoding: a currency code needs none); 1 when present. */
static int query_param(hive_str query, const char *name, hive_str *out) {
    size_t n = strlen(name), i = 0;
    while (i <= query.len) {
        size_t end = i;
        while (end < query.len && query.ptr[end] != '&') end++;
        if (end - i >= n && memcmp(query.ptr + i, name, n) == 0 && (end - i == n || query.ptr[i + n] == '=')) {
            size_t v = end - i == n ? end : i + n + 1;
            out->ptr = query.ptr + v;
            out->len = end - v;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* The currency in upper case, or NULL when it is not three ASCII letters. */
static const char *currency(hive_str s) {
    if (s.len != 3) return NULL;
    char *c = hive_tmp_alloc(4);
    if (!c) return NULL;
    for (size_t i = 0; i < 3; i++) {
        char ch = s.ptr[i];
        if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
        if (ch < 'A' || ch > 'Z') return NULL;
        c[i] = ch;
    }
    c[3] = 0;
    return c;
}

/* CACHE_TTL_S as seconds, or -1 when it is not a whole number in 0..MAX_TTL_S. */
static long cache_ttl_s(void) {
    hive_str s = hive_config("CACHE_TTL_S");
    if (s.len == 0) return DEFAULT_TTL_S;
    long v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.ptr[i] < '0' || s.ptr[i] > '9' || v > MAX_TTL_S) return -1;
        v = v * 10 + (s.ptr[i] - '0');
    }
    return v <= MAX_TTL_S ? v : -1;
}

/* RATES_URL with every "{base}" replaced by the currency, or with base=XXX appended. */
static const char *upstream_url(hive_str tmpl, const char *base) {
    size_t n = 0;
    for (size_t i = 0; i + 6 <= tmpl.len; i++)
        if (memcmp(tmpl.ptr + i, "{base}", 6) == 0) n++;
    if (n == 0) return hive_fmt("%.*s%cbase=%s", HIVE_FMT(tmpl), memchr(tmpl.ptr, '?', tmpl.len) ? '&' : '?', base);
    char *url = hive_tmp_alloc(tmpl.len - 3 * n + 1), *o = url; /* "{base}" is 6 bytes, a code 3 */
    if (!url) return "";
    for (size_t i = 0; i < tmpl.len;) {
        if (tmpl.len - i >= 6 && memcmp(tmpl.ptr + i, "{base}", 6) == 0) {
            memcpy(o, base, 3), o += 3, i += 6;
        } else {
            *o++ = tmpl.ptr[i++];
        }
    }
    *o = 0;
    return url;
}

static const char *now_rfc3339(void) {
    char *stamp = hive_tmp_alloc(sizeof "2026-11-24T19:40:00Z");
    if (!stamp) return "";
    strcpy(stamp, "1970-01-01T00:00:00Z");
    time_t now = time(NULL);
    struct tm utc;
    if (gmtime_r(&now, &utc)) strftime(stamp, sizeof "2026-11-24T19:40:00Z", "%Y-%m-%dT%H:%M:%SZ", &utc);
    return stamp;
}

/* `doc` is a stored document, a JSON object without the "cached" member: put it first. */
static hive_response *answer(hive_str doc, int cached) {
    hive_response *r = hive_response_new(200);
    hive_response_add_header(r, "content-type", "application/json");
    hive_response_add_header(r, "x-cache", cached ? "hit" : "miss");
    hive_response_printf(r, "{\"cached\":%s,", cached ? "true" : "false");
    hive_response_append(r, doc.ptr + 1, doc.len - 1);
    return r;
}

hive_response *handler(const hive_request *req) {
    if (!hive_str_eq(req->method, "GET") && !hive_str_eq(req->method, "HEAD")) {
        hive_response *r = error(405, "method_not_allowed", HIVE_STR("use GET ?base=EUR"));
        hive_response_add_header(r, "allow", "GET, HEAD");
        return r;
    }
    hive_str raw = HIVE_STR("EUR");
    query_param(req->query, "base", &raw);
    const char *base = currency(raw);
    if (!base) return error(400, "invalid_base", HIVE_STR("base must be a three-letter currency code, like EUR"));

    hive_str tmpl = hive_config("RATES_URL");
    long ttl = cache_ttl_s();
    if (tmpl.len == 0 || ttl < 0) {
        hive_log(HIVE_LOG_ERROR, "configure RATES_URL (an upstream URL) and CACHE_TTL_S (whole seconds)");
        return error(500, "not_configured", HIVE_STR("the function's RATES_URL or CACHE_TTL_S is not set right"));
    }
    hive_str key = hive_str_of(hive_fmt("rates:%s", base));

    if (ttl > 0) {
        hive_kv_value hit = hive_kv_get(STORE, key);
        if (!HIVE_OK(hit.error))
            hive_log(HIVE_LOG_WARN, "kv get %s: %.*s: %.*s", key.ptr, HIVE_FMT(hit.error.code), HIVE_FMT(hit.error.message));
        else if (hit.found && hit.value.len > 1 && hit.value.ptr[0] == '{')
            return answer(hit.value, 1);
    }

    hive_header headers[3] = {
        { HIVE_STR("accept"), HIVE_STR("application/json") },
        { HIVE_STR("user-agent"), HIVE_STR("edge-hive-rates/1") },
    };
    size_t header_count = 2;
    hive_str api_key = hive_config("RATES_API_KEY");
    if (api_key.len) {
        headers[2].name = HIVE_STR("authorization");
        headers[2].value = hive_str_of(hive_fmt("Bearer %.*s", HIVE_FMT(api_key)));
        header_count = 3;
    }
    hive_fetch_request f = { HIVE_STR("GET"), hive_str_of(upstream_url(tmpl, base)), headers, header_count, { "", 0 } };
    hive_fetch_response up = hive_fetch(&f);
    if (!HIVE_OK(up.error)) {
        hive_log(HIVE_LOG_WARN, "fetch for %s failed: %.*s: %.*s", base, HIVE_FMT(up.error.code), HIVE_FMT(up.error.message));
        int timed_out = hive_str_eq(up.error.code, "timeout") || hive_str_eq(up.error.code, "connect_timeout");
        return error(timed_out ? 504 : 502, hive_cstr(up.error.code), up.error.message);
    }
    if (up.status != 200) {
        hive_log(HIVE_LOG_WARN, "the upstream answered %u for %s", (unsigned)up.status, base);
        hive_response *r = hive_response_json(502, hive_fmt(
            "{\"error\":\"upstream_error\",\"upstream_status\":%u,\"message\":\"the upstream answered %u\"}",
            (unsigned)up.status, (unsigned)up.status));
        hive_response_add_header(r, "cache-control", "no-store");
        return r;
    }
    hive_str ignored;
    if (hive_json_get_string(up.body, "base", &ignored) < 0)
        return error(502, "upstream_invalid", HIVE_STR("the upstream's answer is not a JSON object"));

    /* The stored document: {"base":...,"fetched_at":...,"data":<body>}. */
    const char *head = hive_fmt("{\"base\":\"%s\",\"fetched_at\":\"%s\",\"data\":", base, now_rfc3339());
    size_t head_len = strlen(head);
    char *doc = hive_tmp_alloc(head_len + up.body.len + 1);
    if (!doc) return NULL; /* out of memory: the SDK answers 500 */
    memcpy(doc, head, head_len);
    memcpy(doc + head_len, up.body.ptr, up.body.len);
    doc[head_len + up.body.len] = '}';
    hive_str stored = { doc, head_len + up.body.len + 1 };

    if (ttl > 0) {
        hive_error err = hive_kv_set(STORE, key, stored, (uint64_t)ttl * 1000);
        if (!HIVE_OK(err))
            hive_log(HIVE_LOG_WARN, "kv set %s: %.*s: %.*s", key.ptr, HIVE_FMT(err.code), HIVE_FMT(err.message));
    }
    return answer(stored, 0);
}
