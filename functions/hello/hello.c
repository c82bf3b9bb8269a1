/* hello: greets the "name" field of a JSON body, or the World. */
#include <time.h>

#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    hive_str name;
    if (hive_json_get_string(req->body, "name", &name) != 1) name = HIVE_STR("World");

    /* time() reads the WASI realtime clock. */
    char stamp[sizeof "2026-11-24T19:40:00Z"] = "1970-01-01T00:00:00Z";
    time_t now = time(NULL);
    struct tm utc;
    if (gmtime_r(&now, &utc)) strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);

    return hive_response_json(200, hive_fmt("{\"message\":\"Hello, %s!\",\"timestamp\":\"%s\"}",
                                            hive_json_escape(name), stamp));
}
