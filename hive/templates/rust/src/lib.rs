use edge_hive_wasm::{edge_function, log, Error, Request, Response};
use serde_json::{json, Value};

#[edge_function]
fn handler(req: Request) -> Result<Response, Error> {
    log::info!("{} {}", req.method(), req.path());
    let body: Option<Value> = req.json().ok();
    let name = body
        .as_ref()
        .and_then(|v| v.get("name")?.as_str())
        .unwrap_or("World");
    Response::json(&json!({ "message": format!("Hello, {name}!") }))
}
