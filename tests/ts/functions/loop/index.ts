Deno.serve(async (req) => {
  const { spin } = await req.json().catch(() => ({ spin: false }));
  if (spin) {
    let n = 0;
    for (;;) n++;
  }
  return new Response("still here");
});
