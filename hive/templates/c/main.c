/* {{name}}: an Edge Hive function in C. API: docs/sdk-c.md in Edge Hive */
#include <time.h>

#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    hive_str name;
    if (hive_json_get_string(req->body, "name", &name) != 1) name = HIVE_STR("World");
    hive_log(HIVE_LOG_INFO, "{{name}} called with %.*s %.*s", HIVE_FMT(req->method), HIVE_FMT(req->path));
    return hive_response_json(200, hive_fmt("{\"message\":\"Hello, %s!\",\"time\":%lld}",
                                            hive_json_escape(name), (long long)time(NULL)));
}
