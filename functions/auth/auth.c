/* auth: verifies an HS256 JSON Web Token from "Authorization: Bearer <token>".
 *
 * The key is the function's configured JWT_SECRET (deploy manifest "config"; see README.md). A valid
 * token gets 200 {"claims": <the payload object, byte for byte>}. Anything else gets a JSON error:
 *     401 missing_token         no Authorization header, not the Bearer scheme, or an empty token
 *     401 invalid_token         not three unpadded base64url parts, a header or payload that is not a JSON
 *                               object, alg other than exactly "HS256" ("none" included), a bad
 *                               signature, or an exp / nbf that is not a number
 *     401 token_expired         now >= exp
 *     401 token_not_yet_valid   now < nbf
 *     500 not_configured        JWT_SECRET is unset or empty
 * "now" is the WASI realtime clock, with LEEWAY_S seconds of tolerance for clock skew (0: none).
 * The payload is only parsed after its signature checked out.
 */
#include <math.h>
#include <strings.h>
#include <time.h>

#include "edge_hive.h"
#include "edge_hive_crypto.h"

#define LEEWAY_S 0.0

static hive_response *error(int status, const char *code, const char *message) {
    hive_response *r = hive_response_json(status, hive_fmt("{\"error\":\"%s\",\"message\":\"%s\"}", code, message));
    /* RFC 6750: a 401 names the scheme, and the error when a token was presented. */
    if (status == 401 && strcmp(code, "missing_token") == 0)
        hive_response_add_header(r, "www-authenticate", "Bearer realm=\"edge-hive\"");
    else if (status == 401)
        hive_response_add_header(r, "www-authenticate",
                                 hive_fmt("Bearer realm=\"edge-hive\", error=\"invalid_token\", "
                                          "error_description=\"%s\"", message));
    hive_response_add_header(r, "cache-control", "no-store");
    return r;
}

/* The token of "Authorization: Bearer <token>" (scheme in any case), or len 0. */
static hive_str bearer_token(const hive_request *req) {
    hive_str h = hive_request_header(req, "authorization"), none = { "", 0 };
    if (!h.ptr || h.len < 7 || strncasecmp(h.ptr, "bearer", 6) != 0 || (h.ptr[6] != ' ' && h.ptr[6] != '\t'))
        return none;
    size_t start = 7, end = h.len;
    while (start < end && (h.ptr[start] == ' ' || h.ptr[start] == '\t')) start++;
    while (end > start && (h.ptr[end - 1] == ' ' || h.ptr[end - 1] == '\t')) end--;
    hive_str t = { h.ptr + start, end - start };
    return t;
}

/* One base64url part of the token, decoded into request memory; 0 or -1. JWS (RFC 7515) forbids
 * padding, so a token has exactly one spelling. */
static int decode_part(const char *p, size_t n, hive_str *out) {
    uint8_t *buf = hive_tmp_alloc(HIVE_BASE64_DECODED_MAX(n));
    size_t len;
    if (!buf || n == 0 || memchr(p, '=', n) || hive_base64url_decode(p, n, buf, &len)) return -1;
    out->ptr = (const char *)buf;
    out->len = len;
    return 0;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF), so the claims we echo are
 * valid JSON text. */
static int utf8_valid(hive_str s) {
    const uint8_t *p = (const uint8_t *)s.ptr;
    for (size_t i = 0; i < s.len;) {
        uint8_t c = p[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else return 0;
        if (s.len - i <= need) return 0;
        for (size_t k = 1; k <= need; k++, lo = 0x80, hi = 0xBF)
            if (p[i + k] < lo || p[i + k] > hi) return 0;
        i += need + 1;
    }
    return 1;
}

hive_response *handler(const hive_request *req) {
    hive_str secret = hive_config("JWT_SECRET");
    if (secret.len == 0) {
        hive_log(HIVE_LOG_ERROR, "JWT_SECRET is not configured: deploy with manifest config JWT_SECRET");
        return error(500, "not_configured", "the function has no JWT_SECRET configured");
    }

    hive_str token = bearer_token(req);
    if (token.len == 0) return error(401, "missing_token", "expected an Authorization: Bearer <token> header");

    /* header.payload.signature: exactly two dots. */
    const char *dot1 = memchr(token.ptr, '.', token.len), *dot2 = NULL;
    if (dot1) dot2 = memchr(dot1 + 1, '.', token.len - (size_t)(dot1 + 1 - token.ptr));
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', token.len - (size_t)(dot2 + 1 - token.ptr)))
        return error(401, "invalid_token", "a JWT has three dot-separated parts");
    size_t signed_len = (size_t)(dot2 - token.ptr);
    hive_str header, payload, signature;
    if (decode_part(token.ptr, (size_t)(dot1 - token.ptr), &header) ||
        decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload) ||
        decode_part(dot2 + 1, token.len - signed_len - 1, &signature))
        return error(401, "invalid_token", "a part of the token is not base64url");

    /* The algorithm comes from our configuration, not from the token: only HS256 is accepted. */
    hive_str alg;
    int rc = hive_json_get_string(header, "alg", &alg);
    if (rc < 0) return error(401, "invalid_token", "the token header is not a JSON object");
    if (rc == 0 || !hive_str_eq(alg, "HS256"))
        return error(401, "invalid_token", "the token must be signed with HS256");

    uint8_t mac[HIVE_SHA256_SIZE];
    hive_hmac_sha256(secret.ptr, secret.len, token.ptr, signed_len, mac);
    int ok = signature.len == sizeof mac && hive_ct_equal(signature.ptr, mac, sizeof mac);
    hive_secure_zero(mac, sizeof mac);
    if (!ok) return error(401, "invalid_token", "the signature does not match");

    double exp, nbf;
    int has_exp = hive_json_get_number(payload, "exp", &exp), has_nbf = hive_json_get_number(payload, "nbf", &nbf);
    if (has_exp < 0 || !utf8_valid(payload))
        return error(401, "invalid_token", "the token payload is not a UTF-8 JSON object");
    if ((has_exp == 1 && !isfinite(exp)) || (has_exp == 0 && isnan(exp)))
        return error(401, "invalid_token", "the exp claim must be a number");
    if ((has_nbf == 1 && !isfinite(nbf)) || (has_nbf == 0 && isnan(nbf)))
        return error(401, "invalid_token", "the nbf claim must be a number");

    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return error(500, "clock_unavailable", "cannot read the clock");
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (has_nbf == 1 && now + LEEWAY_S < nbf)
        return error(401, "token_not_yet_valid", "the token is not valid yet (nbf)");
    if (has_exp == 1 && now - LEEWAY_S >= exp) return error(401, "token_expired", "the token has expired (exp)");

    hive_response *r = hive_response_new(200);
    hive_response_add_header(r, "content-type", "application/json");
    hive_response_add_header(r, "cache-control", "no-store");
    hive_response_append(r, "{\"claims\":", 10);
    hive_response_append(r, payload.ptr, payload.len);
    hive_response_append(r, "}", 1);
    return r;
}
