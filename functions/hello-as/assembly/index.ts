// hello-as: greets the "name" field of a JSON body, or the World.
import { JSON } from "json-as";
import { Request, Response, now, rfc3339, serve } from "edge-hive";

@json
class Greeting {
  message: string = "";
  timestamp: string = "";
}

function hello(req: Request): Response {
  // No body, not JSON, no "name", or "name" not a string: greet the World.
  let name = "World";
  const body = req.jsonObject();
  if (body !== null && body.has("name")) {
    const value = body.get("name");
    if (value !== null && value.type == JSON.Types.String) name = value.get<string>();
  }

  const greeting = new Greeting();
  greeting.message = "Hello, " + name + "!";
  greeting.timestamp = rfc3339(now()); // RFC 3339 UTC to the second, from the WASI realtime clock
  return Response.json<Greeting>(greeting);
}

serve(hello);
