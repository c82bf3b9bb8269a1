// The Rust SDK test driver (tests/sdk/test_rust_sdk.py, test_sdk_common.py): routes by path to exercise the
// API; any other path echoes the request, re-encoded from the accessors.
use edge_hive_wasm::{edge_function, log, Error, Request, Response};

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn describe(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, req.method().as_bytes());
    field(&mut out, req.path().as_bytes());
    field(&mut out, req.query().as_bytes());
    let headers: Vec<(&str, &str)> = req.headers().collect();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        field(&mut out, name.as_bytes());
        field(&mut out, value.as_bytes());
    }
    field(&mut out, req.body());
    out
}

// The body is a (trusted) response envelope: build the same response with the builder API.
fn rebuild(env: &[u8]) -> Response {
    let u32_at = |p: usize| u32::from_le_bytes([env[p], env[p + 1], env[p + 2], env[p + 3]]) as usize;
    let text = |p: usize, n: usize| String::from_utf8(env[p..p + n].to_vec()).unwrap();
    let mut res = Response::new(u32_at(0) as u16).body("replaced");
    let mut p = 8;
    for _ in 0..u32_at(4) {
        let (nl, vl) = (u32_at(p), u32_at(p + 4 + u32_at(p)));
        res = res.header(text(p + 4, nl), text(p + 8 + nl, vl));
        p += 8 + nl + vl;
    }
    res.body(&env[p + 4..p + 4 + u32_at(p)])
}

#[edge_function]
fn handle(req: Request) -> Result<Response, Error> {
    match req.path() {
        "/t/build" => Ok(rebuild(req.body())),
        "/t/header" => {
            let mut res = Response::new(if req.header(req.query()).is_some() { 200 } else { 404 });
            for value in req.header_values(req.query()) {
                res = res.header("x-value", value);
            }
            Ok(res.body(req.header(req.query()).unwrap_or("")))
        }
        "/t/query" => {
            let names = req.text()?.split('\n').map(|n| format!("{:?}", req.query_param(n)));
            Ok(Response::text(names.collect::<Vec<_>>().join("\n")))
        }
        "/t/text" => Ok(Response::text(req.text()?.to_uppercase())),
        "/t/json" => {
            let value: serde_json::Value = req.json()?;
            Ok(Response::json(&value["a"])?.with_status(201).header("x-kind", "json"))
        }
        "/t/bad-request" => Err(Error::bad_request("no \"name\"\n")),
        "/t/teapot" => Err(Error::new(418, "short and stout").with_code("teapot")),
        "/t/parse" => Ok(Response::text(format!("{}", "x1".parse::<u32>()?))),
        "/t/bad-status" => Ok(Response::new(600)),
        "/t/bad-headers" => {
            let mut res = Response::new(200)
                .header("x bad", "v")
                .header("x-a", "a\r\nb")
                .header("", "v")
                .header("x-nul", "a\0b")
                .header("x-big", "v".repeat(16385))
                .header("x-max", "v".repeat(16384));
            for _ in 0..300 {
                res = res.header("x-many", "1");
            }
            Ok(res)
        }
        "/t/log" => {
            log::info!("info {} {}", req.method(), 42);
            log::warn!("warned");
            edge_hive_wasm::hive_log(log::Level::Error, "errored");
            Ok(Response::new(204))
        }
        "/t/env" => Ok(Response::text(std::env::var("GREETING").unwrap_or_else(|_| "unset".into()))),
        "/t/panic" => panic!("boom {}", 7),
        "/t/big" => Ok(Response::new(200).body(vec![b'x'; 1_000_000])),
        _ => Ok(Response::new(200).body(describe(&req))),
    }
}
