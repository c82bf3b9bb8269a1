// Follows Supabase's function template: the same file runs on Supabase Edge Functions and on Edge Hive.
import { corsHeaders } from "./_shared/cors.js";

console.log("Hello from {{name}}!");

Deno.serve(async (req) => {
  if (req.method === "OPTIONS") {
    return new Response("ok", { headers: corsHeaders });
  }
  const { name = "world" } = await req.json().catch(() => ({}));
  const data = {
    message: `Hello ${name}!`,
    greeting: Deno.env.get("GREETING") ?? "Hello",
  };
  return new Response(JSON.stringify(data), {
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
});
