//! hello-rust: greets the "name" field of a JSON body, or the World.

use chrono::{SecondsFormat, Utc};
use edge_hive_wasm::{edge_function, Error, Request, Response};
use serde_json::{json, Value};

#[edge_function]
fn hello(req: Request) -> Result<Response, Error> {
    // Any body that is not a JSON object with a string "name" greets the World.
    let body: Option<Value> = req.json().ok();
    let name = body
        .as_ref()
        .and_then(|v| v.get("name")?.as_str())
        .unwrap_or("World");
    // Utc::now() reads the WASI realtime clock.
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    Response::json(&json!({ "message": format!("Hello, {name}!"), "timestamp": timestamp }))
}
