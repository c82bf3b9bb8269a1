/* hello: greets the "name" field of a JSON body, or the World. */
#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    hive_str name;
    if (hive_json_get_string(req->body, "name", &name) != 1) name = HIVE_STR("World");

    char stamp[HIVE_RFC3339_SIZE];
    hive_rfc3339(hive_now(), stamp); /* the WASI realtime clock */

    /* hive_cat only joins strings; hive_fmt would do too, with about 3 KB more of formatter. */
    return hive_response_json(200, hive_cat("{\"message\":\"Hello, ", hive_json_escape(name), "!\",\"timestamp\":\"",
                                            stamp, "\"}"));
}
