// Headers for browsers calling this function from another origin. With several functions, move _shared/
// beside them (as Supabase's supabase/functions/_shared/) and import "../_shared/cors.ts".
export const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};
