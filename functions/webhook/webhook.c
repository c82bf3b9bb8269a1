/* webhook: verifies a GitHub-style "X-Hub-Signature-256: sha256=<hex>" HMAC-SHA256 of the raw body.
 *
 * The key is the function's configured WEBHOOK_SECRET (deploy manifest "config"; see README.md).
 *     200 {"ok":true,"event":"<X-GitHub-Event, else the body's \"action\", else \"unknown\">"}
 *     401 missing_signature     no (or an empty) X-Hub-Signature-256 header
 *     401 invalid_signature     not "sha256=" and 64 hex digits, or not the MAC of this body
 *     500 not_configured        WEBHOOK_SECRET is unset or empty
 * The MAC covers the body bytes exactly as received, so nothing parses the body before it checks out.
 */
#include "edge_hive.h"
#include "edge_hive_crypto.h"

static hive_response *error(int status, const char *code, const char *message) {
    return hive_response_json(status, hive_fmt("{\"error\":\"%s\",\"message\":\"%s\"}", code, message));
}

hive_response *handler(const hive_request *req) {
    hive_str secret = hive_config("WEBHOOK_SECRET");
    if (secret.len == 0) {
        hive_log(HIVE_LOG_ERROR, "WEBHOOK_SECRET is not configured: deploy with manifest config WEBHOOK_SECRET");
        return error(500, "not_configured", "the function has no WEBHOOK_SECRET configured");
    }

    hive_str sig = hive_request_header(req, "x-hub-signature-256");
    if (sig.len == 0) return error(401, "missing_signature", "expected an X-Hub-Signature-256 header");

    static const char prefix[] = "sha256=";
    uint8_t got[HIVE_SHA256_SIZE], want[HIVE_SHA256_SIZE];
    size_t got_len;
    if (sig.len != sizeof prefix - 1 + 2 * HIVE_SHA256_SIZE || memcmp(sig.ptr, prefix, sizeof prefix - 1) != 0 ||
        hive_hex_decode(sig.ptr + sizeof prefix - 1, 2 * HIVE_SHA256_SIZE, got, &got_len) != 0)
        return error(401, "invalid_signature", "X-Hub-Signature-256 must be sha256= and 64 hex digits");
    hive_hmac_sha256(secret.ptr, secret.len, req->body.ptr, req->body.len, want);
    int ok = hive_ct_equal(got, want, sizeof want);
    hive_secure_zero(want, sizeof want);
    if (!ok) return error(401, "invalid_signature", "the signature does not match the body");

    hive_str event = hive_request_header(req, "x-github-event");
    if (event.len == 0 && hive_json_get_string(req->body, "action", &event) != 1) event = HIVE_STR("unknown");
    return hive_response_json(200, hive_fmt("{\"ok\":true,\"event\":\"%s\"}", hive_json_escape(event)));
}
