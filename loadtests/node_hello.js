// The comparison server: Node's plain http module with a handler equivalent to functions/hello
// (parse the JSON body, greet "name" or the World, add a UTC timestamp). Usage: node node_hello.js PORT
"use strict";
const http = require("http");

const port = Number(process.argv[2] || 8080);

function stamp() {
  return new Date().toISOString().slice(0, 19) + "Z";
}

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let name = "World";
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        if (body && typeof body.name === "string") name = body.name;
      } catch (e) {
        // not JSON: greet the World, as hello does
      }
      const out = JSON.stringify({ message: `Hello, ${name}!`, timestamp: stamp() });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
      res.end(out);
    });
  })
  .listen(port, "127.0.0.1");
