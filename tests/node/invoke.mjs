// Calls Edge Hive functions with supabase-js, unchanged, as an app would, and prints what each call gave.
//   node invoke.mjs BASE_URL CASES_JSON
// CASES_JSON: [{"name", "key", "fn", "options"}]; the client is createClient(BASE_URL, key), so its
// functions live at BASE_URL/functions/v1/NAME. Prints one JSON object: name -> outcome.
import { createClient, FunctionsFetchError, FunctionsHttpError, FunctionsRelayError } from "@supabase/supabase-js";

const [base, casesJson] = process.argv.slice(2);
const out = {};
for (const c of JSON.parse(casesJson)) {
  const supabase = createClient(base, c.key, { auth: { persistSession: false, autoRefreshToken: false } });
  const { data, error } = await supabase.functions.invoke(c.fn, c.options ?? {});
  const r = { data: typeof data === "string" ? data : data ?? null, error: null };
  if (error) {
    const ctx = error.context;
    r.error = {
      class: error.constructor.name,
      relay: error instanceof FunctionsRelayError,
      http: error instanceof FunctionsHttpError,
      fetch: error instanceof FunctionsFetchError,
      message: error.message,
      status: ctx && typeof ctx.status === "number" ? ctx.status : null,
      body: ctx && typeof ctx.text === "function" ? await ctx.text() : null,
    };
  }
  out[c.name] = r;
}
process.stdout.write(JSON.stringify(out));
