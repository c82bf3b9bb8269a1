/* proxy: fetch the UPSTREAM config URL and answer with its status and body. */
#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    (void)req;
    hive_str url = hive_config("UPSTREAM");
    char buf[512];
    if (url.len == 0 || url.len >= sizeof buf) return hive_response_text(500, "set UPSTREAM");
    for (size_t i = 0; i < url.len; i++) buf[i] = url.ptr[i];
    buf[url.len] = 0;
    hive_fetch_response res = hive_fetch_get(buf);
    if (!HIVE_OK(res.error)) return hive_response_text(502, "fetch failed");
    hive_response *out = hive_response_new((int)res.status);
    hive_response_add_header(out, "content-type", "application/json");
    hive_response_set_body(out, res.body.ptr, res.body.len);
    return out;
}
