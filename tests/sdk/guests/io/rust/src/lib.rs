//! The Rust SDK's fetch and KV test guest (tests/sdk/test_io_rust.py; the protocol is in
//! tests/sdk/io_vectors.py). FETCH, SEND, ANY and KV requests drive one SDK call from the request's
//! fields and describe its result; GET .../proxy and .../count are the end-to-end cases on a server.
use edge_hive_wasm::fetch::{self, FetchError};
use edge_hive_wasm::kv::{self, KvError};
use edge_hive_wasm::{edge_function, Error, Request, Response};
use std::time::Duration;

fn failed(code: &str, message: &str) -> Response {
    Response::new(200).header("x-error", code).body(message)
}

fn fetched(result: Result<fetch::Response, FetchError>) -> Response {
    match result {
        Err(e) => failed(e.code(), e.message()),
        Ok(up) => {
            let mut res = Response::new(200).header("x-status", up.status().to_string());
            for (name, value) in up.headers() {
                res = res.header(name, value);
            }
            res.body(up.into_body())
        }
    }
}

fn fetch_case(req: &Request) -> Response {
    let mut f = fetch::Request::new(req.query(), req.path()).body(req.body());
    for (name, value) in req.headers() {
        f = f.header(name, value);
    }
    match req.method() {
        "FETCH" => fetched(edge_hive_wasm::fetch(f)),
        "SEND" => fetched(f.send().and_then(fetch::Pending::wait)),
        _ => match f.send() {
            Err(e) => failed(e.code(), e.message()),
            Ok(pending) => match fetch::wait_any() {
                Some((id, result)) if id == pending.id() => fetched(result),
                Some(_) => Response::new(500).body("wrong handle"),
                None => Response::new(500).body("nothing pending"),
            },
        },
    }
}

fn num<T: std::str::FromStr>(req: &Request, name: &str, default: T) -> T {
    req.header(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn kv_case(req: &Request) -> Result<Response, KvError> {
    let (store, key) = (req.path(), req.header("k").unwrap_or(""));
    let ttl = Duration::from_millis(num(req, "ttl", 0));
    let res = Response::new(200);
    Ok(match req.query() {
        "get" => match kv::get(store, key)? {
            Some(value) => res.header("x-found", "1").body(value),
            None => res.header("x-found", "0"),
        },
        "set" => {
            kv::set_with_ttl(store, key, req.body(), ttl)?;
            res
        }
        "delete" => res.header("x-deleted", if kv::delete(store, key)? { "1" } else { "0" }),
        "list" => {
            let cursor = req.header("cursor").filter(|c| !c.is_empty());
            let page = kv::list(store, key, cursor.map(str::as_bytes), num(req, "limit", 100))?;
            let mut res = res;
            for k in &page.keys {
                res = res.header("x-key", String::from_utf8_lossy(k));
            }
            match page.cursor {
                Some(c) => res.header("x-cursor", String::from_utf8_lossy(&c)),
                None => res,
            }
        }
        "incr" => {
            let value = kv::incr_with_ttl(store, key, num(req, "delta", 1), ttl)?;
            res.header("x-value", value.to_string())
        }
        _ => Response::new(404).body("unknown op"),
    })
}

fn error_json(code: &str) -> Response {
    Response::new(200)
        .header("content-type", "application/json")
        .body(format!("{{\"error\":{}}}", serde_json::to_string(code).unwrap()))
}

#[edge_function]
fn handle(req: Request) -> Result<Response, Error> {
    Ok(match req.method() {
        "FETCH" | "SEND" | "ANY" => fetch_case(&req),
        "KV" => kv_case(&req).unwrap_or_else(|e| failed(e.code(), e.message())),
        _ if req.path().ends_with("/proxy") => match fetch::get(req.header("x-url").unwrap_or("")) {
            Ok(up) => Response::new(up.status()).body(up.into_body()),
            Err(e) => error_json(e.code()),
        },
        _ if req.path().ends_with("/count") => {
            let count = match kv::incr("default", "visits", 1) {
                Ok(n) => n,
                Err(e) => return Ok(error_json(e.code())),
            };
            let stored = match kv::get("default", "visits") {
                Ok(v) => String::from_utf8_lossy(&v.unwrap_or_default()).into_owned(),
                Err(e) => return Ok(error_json(e.code())),
            };
            Response::new(200)
                .header("content-type", "application/json")
                .body(format!("{{\"count\":{count},\"stored\":{}}}", serde_json::to_string(&stored).unwrap()))
        }
        _ => Response::new(404).body("unknown case"),
    })
}
