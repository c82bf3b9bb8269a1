type Row = { i: number; pad: number[] };

Deno.serve((req) => {
  if (new URL(req.url).searchParams.has("small")) {
    return Response.json({ rows: new Array(1000).fill(0).length });
  }
  const rows: Row[] = [];
  for (;;) rows.push({ i: rows.length, pad: new Array(4096).fill(rows.length) });
});
