interface Order {
  id: number;
  total: number;
}

function checkedTotal(order: Order): number {
  if (order.total < 0) {
    throw new RangeError(`order ${order.id} has a negative total`);
  }
  return order.total;
}

Deno.serve(async (req) => {
  const order: Order = await req.json();
  return Response.json({ total: checkedTotal(order) });
});
