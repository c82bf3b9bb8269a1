// Calls an upstream API: POST JSON and read JSON, a multipart FormData body, several at once, an error
// status, a timeout through AbortSignal.timeout, and a refused address.
const upstream = Deno.env.get("UPSTREAM_URL") ?? "http://127.0.0.1:9";

type Echo = { method: string; headers: Record<string, string>; body: string };

Deno.serve(async (req) => {
  const mode = new URL(req.url).searchParams.get("mode") ?? "json";
  switch (mode) {
    case "json": {
      const r = await fetch(`${upstream}/echo`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Trace": "ts-1" },
        body: JSON.stringify({ hello: "upstream", n: [1, 2, 3] }),
      });
      const doc: Echo = await r.json();
      return Response.json({
        status: r.status,
        ok: r.ok,
        type: r.headers.get("content-type"),
        method: doc.method,
        sent: JSON.parse(doc.body),
        trace: doc.headers["x-trace"],
      });
    }
    case "form": {
      const form = new FormData();
      form.append("field", "value 1");
      form.append("file", new Blob(["file body"], { type: "text/plain" }), "a.txt");
      const r = await fetch(`${upstream}/echo`, { method: "POST", body: form });
      const doc: Echo = await r.json();
      return Response.json({
        type: doc.headers["content-type"].split(";")[0],
        field: doc.body.includes('name="field"') && doc.body.includes("value 1"),
        file: doc.body.includes('filename="a.txt"') && doc.body.includes("file body"),
      });
    }
    case "parallel": {
      const texts = await Promise.all([100, 100, 100].map((ms) => fetch(`${upstream}/slow?ms=${ms}`).then((r) => r.text())));
      return Response.json({ texts });
    }
    case "status": {
      const r = await fetch(`${upstream}/fail`);
      return Response.json({ status: r.status, ok: r.ok, body: await r.json() });
    }
    case "timeout": {
      try {
        await fetch(`${upstream}/slow?ms=400`, { signal: AbortSignal.timeout(50) });
        return Response.json({ aborted: false });
      } catch (e) {
        return Response.json({ aborted: true, name: (e as Error).name });
      }
    }
    case "refused": {
      try {
        await fetch("http://169.254.169.254/latest/meta-data/");
        return Response.json({ refused: false });
      } catch (e) {
        return Response.json({ refused: true, name: (e as Error).name, message: (e as Error).message });
      }
    }
  }
  return Response.json({ error: `unknown mode ${mode}` }, { status: 400 });
});
