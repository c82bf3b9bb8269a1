// The AssemblyScript SDK echo guest (tests/sdk/test_as_sdk.py, test_sdk_common.py): the same protocol as
// tests/sdk/guests/zig/main.zig (see tests/sdk/common.py); CASE names one of the cases in `special`.
import { JSON } from "json-as";
import {
  Headers, Request, Response, decodeUtf8, env, log, now, rfc3339, serve,
} from "edge-hive";

function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

function le32(n: i32): Uint8Array {
  const b = new Uint8Array(4);
  store<u32>(b.dataStart, <u32>n);
  return b;
}

function putField(res: Response, data: Uint8Array): void {
  res.append(le32(data.length));
  res.append(data);
}

function describe(req: Request): Response {
  const res = new Response(200);
  putField(res, utf8(req.method));
  putField(res, utf8(req.path));
  putField(res, utf8(req.query));
  res.append(le32(req.headers.length));
  for (let i = 0; i < req.headers.entries.length; i++) {
    putField(res, utf8(req.headers.entries[i].name));
    putField(res, utf8(req.headers.entries[i].value));
  }
  putField(res, req.body);
  return res;
}

function rebuild(req: Request): Response {
  const p0 = req.body.dataStart;
  const res = new Response(<i32>load<u32>(p0));
  const count = load<u32>(p0 + 4);
  let p = p0 + 8;
  for (let i: u32 = 0; i < count; i++) {
    const nl = <usize>load<u32>(p);
    const vl = <usize>load<u32>(p + 4 + nl);
    res.header(decodeUtf8(p + 4, nl), decodeUtf8(p + 8 + nl, vl));
    p += 8 + nl + vl;
  }
  const bl = <i32>load<u32>(p);
  const start = <i32>(p + 4 - p0);
  res.setText("replaced");
  res.setBody(req.body.slice(start, start + bl / 2));
  res.append(req.body.slice(start + bl / 2, start + bl));
  return res;
}

function lookup(req: Request): Response {
  const first = req.headers.get(req.query);
  const res = new Response(first !== null ? 200 : 404);
  const all = req.headers.getAll(req.query);
  for (let i = 0; i < all.length; i++) res.header("x-value", all[i]);
  if (first !== null) res.setText(first);
  return res;
}

@json
class Payload {
  a: i32 = 0;
  s: string = "";
  list: i32[] = [];
  ok: bool = false;
}

function special(req: Request): Response {
  const q = req.query;
  if (q == "abort") throw new Error("boom");
  if (q == "status") return new Response(600);
  if (q == "oom") {
    const huge = new Uint8Array(512 << 20);
    huge[0] = 1;
    return Response.text("unreachable");
  }
  if (q == "bad-headers") {
    const res = new Response(200);
    const big = "v".repeat(16385);
    let dropped = 0;
    if (!res.headers.append("x bad", "v")) dropped++;
    if (!res.headers.append("x-a", "a\r\nb")) dropped++;
    if (!res.headers.append("", "v")) dropped++;
    if (!res.headers.append("x-nul", "a\0b")) dropped++;
    if (!res.headers.append("x-big", big)) dropped++;
    if (!res.headers.append("x-long-utf8", "é".repeat(8193))) dropped++;
    res.header("x-max", big.slice(0, 16384));
    for (let i = 0; i < 300; i++) res.header("x-many", "1");
    return res.setText(dropped.toString() + " " + res.headers.length.toString());
  }
  if (q == "json") {
    const p = new Payload();
    p.a = 1;
    p.s = "é\"\n\u0001</\uD83D\uDC1D";
    p.list = [-1, 2];
    p.ok = true;
    return Response.json<Payload>(p, 201);
  }
  if (q == "parse") {
    const p = req.json<Payload>();
    if (p === null) return Response.text("invalid", 422);
    return Response.json<Payload>(p);
  }
  if (q == "object") {
    const o = req.jsonObject();
    if (o === null) return Response.text("not an object", 422);
    return Response.text(o.keys().join(","));
  }
  if (q == "text") return Response.text("plain é");
  if (q == "body-text") return Response.text(req.text());
  if (q == "bytes") {
    const b = new Uint8Array(3);
    b[1] = 0xff;
    return Response.bytes(b, "application/octet-stream");
  }
  if (q == "env") {
    const a = env("GREETING");
    const b = env("EMPTY");
    const c = env("MISSING");
    const viaProcess = process.env.has("GREETING") ? process.env.get("GREETING") : "-";
    return Response.text(
      (a !== null ? a : "-") + "|" + (b !== null ? b : "-") + "|" + (c !== null ? c : "-") + "|" + viaProcess,
    );
  }
  if (q == "log") {
    log.debug("debug 1");
    log.info("info two");
    log.warn("warn");
    log.error("err");
    console.log("from console");
    log.info("x".repeat(20000));
    return new Response(204);
  }
  if (q == "time") {
    return Response.text(
      rfc3339(0) + " " + rfc3339(951868799) + " " + rfc3339(4102444800) + " " + now().toString() + " " +
        (Date.now() / 1000).toString(),
    );
  }
  if (q == "random") {
    const x = Math.random();
    return Response.text(x >= 0 && x < 1 ? "ok" : "bad");
  }
  if (q == "query") {
    const tmp = new Request();
    tmp.query = req.text();
    const names = ["a", "b", "c", "d", "é", "zz"];
    let out = "";
    for (let i = 0; i < names.length; i++) {
      const v = tmp.queryParam(names[i]);
      out += names[i] + "=" + (v !== null ? v : "(null)") + ";";
    }
    return Response.text(out);
  }
  if (q == "big") {
    const res = new Response(200);
    for (let i = 0; i < 100000; i++) {
      let s = i.toString();
      while (s.length < 9) s = "0" + s;
      res.write(s + "\n");
    }
    return res;
  }
  if (q == "headers") {
    const h = new Headers();
    h.append("A", "1");
    h.append("b", "2");
    h.append("a", "3");
    h.set("B", "4");
    h.delete("missing");
    const res = new Response(200);
    res.headers = h;
    return res.setText((h.has("a") ? "y" : "n") + (h.has("c") ? "y" : "n"));
  }
  return Response.text("unknown case", 404);
}

serve((req: Request): Response => {
  if (req.method == "REBUILD") return rebuild(req);
  if (req.method == "LOOKUP") return lookup(req);
  if (req.method == "CASE") return special(req);
  return describe(req);
});
