// A signed webhook (as GitHub and Stripe sign theirs): HMAC-SHA256 of the raw body, checked with
// crypto.subtle before anything else is read.
const encoder = new TextEncoder();

function hex(buf: ArrayBuffer): string {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function key(usage: KeyUsage): Promise<CryptoKey> {
  const secret = Deno.env.get("WEBHOOK_SECRET") ?? "";
  return await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

Deno.serve(async (req) => {
  const body = await req.text();
  const signature = (req.headers.get("x-signature-256") ?? "").replace(/^sha256=/, "");
  const valid = /^[0-9a-f]{64}$/.test(signature) &&
    await crypto.subtle.verify("HMAC", await key("verify"), unhex(signature), encoder.encode(body));
  if (!valid) {
    return new Response(JSON.stringify({ error: "invalid signature" }), {
      status: 401,
      headers: { "Content-Type": "application/json" },
    });
  }
  const event = JSON.parse(body) as { id: string; type: string };
  const receipt = hex(await crypto.subtle.sign("HMAC", await key("sign"), encoder.encode(event.id)));
  const digest = hex(await crypto.subtle.digest("SHA-256", encoder.encode(body)));
  return Response.json({ ok: true, type: event.type, receipt, digest });
});
