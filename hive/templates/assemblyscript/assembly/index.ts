// {{name}}: an Edge Hive function in AssemblyScript. API: docs/sdk-assemblyscript.md
import { JSON } from "json-as";
import { Request, Response, log, serve } from "edge-hive";

@json
class Reply {
  message: string = "";
}

serve((req: Request): Response => {
  log.info(req.method + " " + req.path);

  // jsonObject() is null when the body is not a JSON object; it never aborts.
  let name = "World";
  const body = req.jsonObject();
  if (body !== null && body.has("name")) {
    const value = body.get("name");
    if (value !== null && value.type == JSON.Types.String) name = value.get<string>();
  }

  const reply = new Reply();
  reply.message = "Hello, " + name + "!";
  return Response.json<Reply>(reply);
});
