//! hello-rust: greets the "name" field of a JSON body, or the World.

use edge_hive_wasm::{edge_function, time, Error, Request, Response};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct Hello {
    message: String,
    timestamp: String,
}

#[edge_function]
fn hello(req: Request) -> Result<Response, Error> {
    // Any body that is not a JSON object with a string "name" greets the World.
    let body: Option<Value> = req.json().ok();
    let name = body
        .as_ref()
        .and_then(|v| v.get("name")?.as_str())
        .unwrap_or("World");
    // A struct, not json!(): serializing a Value would bring float formatting (ryu) into the module.
    Response::json(&Hello {
        message: format!("Hello, {name}!"),
        timestamp: time::rfc3339(time::now()), // the WASI realtime clock
    })
}
