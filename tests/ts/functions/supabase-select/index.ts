// Supabase's "select from a table" example: the client reads the project's URL and anon key from the
// environment and forwards the caller's Authorization.
import { createClient } from "npm:@supabase/supabase-js@2";

Deno.serve(async (req) => {
  try {
    const supabase = createClient(
      Deno.env.get("SUPABASE_URL") ?? "",
      Deno.env.get("SUPABASE_ANON_KEY") ?? "",
      { global: { headers: { Authorization: req.headers.get("Authorization") ?? "" } } },
    );
    const id = new URL(req.url).searchParams.get("id");
    let query = supabase.from("t").select("id,name");
    if (id) query = query.eq("id", Number(id));
    const { data, error } = await query;
    if (error) throw error;
    return new Response(JSON.stringify({ data }), {
      headers: { "Content-Type": "application/json" },
      status: 200,
    });
  } catch (err) {
    return new Response(JSON.stringify({ message: (err as Error)?.message ?? String(err) }), {
      headers: { "Content-Type": "application/json" },
      status: 500,
    });
  }
});
