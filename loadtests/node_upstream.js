// The upstream of the outbound-fetch benchmark: a small JSON answer, after ?ms= milliseconds when asked.
// Usage: node node_upstream.js PORT
"use strict";
const http = require("http");

const port = Number(process.argv[2] || 8080);
const body = JSON.stringify({ base: "EUR", rates: { USD: 1.08, GBP: 0.85 } });

http
  .createServer((req, res) => {
    const m = /[?&]ms=(\d+)/.exec(req.url);
    const answer = () => {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    req.resume();
    req.on("end", () => (m ? setTimeout(answer, Number(m[1])) : answer()));
  })
  .listen(port, "127.0.0.1");
