// The comparison for the outbound-fetch benchmark: Node's http server answering every request with the
// body of a fetch() of UPSTREAM (Node's built-in undici, keep-alive). Usage: node node_proxy.js PORT UPSTREAM
"use strict";
const http = require("http");

const port = Number(process.argv[2] || 8080);
const upstream = process.argv[3];

http
  .createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      try {
        const r = await fetch(upstream);
        const body = Buffer.from(await r.arrayBuffer());
        res.writeHead(r.status, { "content-type": "application/json", "content-length": body.length });
        res.end(body);
      } catch (e) {
        res.writeHead(502);
        res.end("fetch failed");
      }
    });
  })
  .listen(port, "127.0.0.1");
