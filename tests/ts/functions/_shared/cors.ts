// Shared by the functions of this folder, as in a Supabase project's supabase/functions/_shared/cors.ts.
export const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};
