// The AssemblyScript SDK's fetch and KV test guest (tests/sdk/test_io_as.py; the protocol is in
// tests/sdk/io_vectors.py). FETCH, SEND, ANY and KV requests drive one SDK call from the request's fields
// and describe its result; GET .../proxy and .../count are the end-to-end cases on a real server.
import { FetchResponse, IoError, Request, RequestInit, Response, fetch, fetchSend, fetchWaitAny, kv, serve } from "edge-hive";

function failed(e: IoError): Response {
  return new Response(200).header("x-error", e.code).setText(e.message);
}

function fetched(up: FetchResponse): Response {
  const e = up.error;
  if (e !== null) return failed(e);
  const res = new Response(200).header("x-status", up.status.toString());
  for (let i = 0; i < up.headers.entries.length; i++) {
    const h = up.headers.entries[i];
    res.header(h.name, h.value);
  }
  return res.setBody(up.bytes());
}

function fetchCase(req: Request): Response {
  const init: RequestInit = { method: req.query, headers: req.headers, bytes: req.body };
  if (req.method == "FETCH") return fetched(fetch(req.path, init));
  const pending = fetchSend(req.path, init);
  const e = pending.error;
  if (e !== null) return failed(e);
  if (req.method == "SEND") return fetched(pending.wait());
  const done = fetchWaitAny();
  if (done === null) return Response.text("nothing pending", 500);
  if (done.handle != pending.handle) return Response.text("wrong handle", 500);
  return fetched(done);
}

function num(req: Request, name: string, dflt: i64): i64 {
  const v = req.headers.get(name);
  return v === null ? dflt : I64.parseInt(v);
}

function kvCase(req: Request): Response {
  const store = req.path;
  const k = req.headers.get("k");
  const key = k === null ? "" : k;
  const op = req.query;
  const res = new Response(200);
  if (op == "get") {
    const v = kv.get(store, key);
    if (v.error !== null) return failed(v.error!);
    res.header("x-found", v.found ? "1" : "0");
    const value = v.value;
    if (value !== null) res.setBody(value);
  } else if (op == "set") {
    const e = kv.setBytes(store, key, req.body, <u64>num(req, "ttl", 0));
    if (e !== null) return failed(e);
  } else if (op == "delete") {
    const d = kv.delete(store, key);
    if (d.error !== null) return failed(d.error!);
    res.header("x-deleted", d.deleted ? "1" : "0");
  } else if (op == "list") {
    const c = req.headers.get("cursor");
    const page = kv.list(store, key, c !== null && c.length > 0 ? c : null, <u32>num(req, "limit", 100));
    if (page.error !== null) return failed(page.error!);
    for (let i = 0; i < page.keys.length; i++) res.header("x-key", page.keys[i]);
    const next = page.cursor;
    if (next !== null) res.header("x-cursor", next);
  } else if (op == "incr") {
    const n = kv.incr(store, key, num(req, "delta", 1), <u64>num(req, "ttl", 0));
    if (n.error !== null) return failed(n.error!);
    res.header("x-value", n.value.toString());
  } else {
    return Response.text("unknown op", 404);
  }
  return res;
}

function errorJson(e: IoError): Response {
  return Response.rawJson('{"error":"' + e.code + '"}');
}

serve((req: Request): Response => {
  const m = req.method;
  if (m == "FETCH" || m == "SEND" || m == "ANY") return fetchCase(req);
  if (m == "KV") return kvCase(req);
  if (req.path.endsWith("/proxy")) {
    const url = req.headers.get("x-url");
    const up = fetch(url === null ? "" : url);
    if (up.error !== null) return errorJson(up.error!);
    return new Response(up.status).setBody(up.bytes());
  }
  if (req.path.endsWith("/count")) {
    const n = kv.incr("default", "visits");
    if (n.error !== null) return errorJson(n.error!);
    const v = kv.get("default", "visits");
    if (v.error !== null) return errorJson(v.error!);
    const stored = v.text();
    return Response.rawJson('{"count":' + n.value.toString() + ',"stored":"' + (stored === null ? "" : stored) + '"}');
  }
  return Response.text("unknown case", 404);
});
