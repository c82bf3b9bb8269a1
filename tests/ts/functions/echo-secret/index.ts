// The first line of every `supabase functions new` template: types for the editor, nothing at run time.
import "jsr:@supabase/functions-js/edge-runtime.d.ts";

interface EchoRequest {
  message: string;
  tags?: string[];
}

Deno.serve(async (req: Request) => {
  const secret = Deno.env.get("ECHO_SECRET");
  if (!secret || req.headers.get("x-echo-secret") !== secret) {
    return Response.json({ error: "forbidden" }, { status: 403 });
  }
  const body: EchoRequest = await req.json();
  const url = new URL(req.url);
  return Response.json({
    echo: body,
    upper: body.message.toUpperCase(),
    tags: body.tags?.length ?? 0,
    method: req.method,
    path: url.pathname,
    lang: url.searchParams.get("lang"),
    region: Deno.env.get("REGION") ?? "unset",
    missing: Deno.env.get("NOT_SET") ?? null,
  }, { headers: { "x-powered-by": "edge" } });
});
