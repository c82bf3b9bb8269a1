// A Hono app on Supabase's routing: the function is served at /functions/v1/hono-app/*, and sees /hono-app/*.
import { Hono } from "npm:hono@4";
import { cors } from "npm:hono@4/cors";

const app = new Hono().basePath("/hono-app");

app.use("*", cors());

app.get("/", (c) => c.text("Hello Hono!"));

app.get("/users/:id", (c) => c.json({ id: c.req.param("id"), q: c.req.query("q") ?? null }));

app.post("/users", async (c) => {
  const body = await c.req.json<{ name: string }>();
  return c.json({ created: body.name, by: c.req.header("x-client") ?? "anonymous" }, 201);
});

app.get("/boom", () => {
  throw new Error("hono boom");
});

app.notFound((c) => c.json({ error: "no route", path: c.req.path }, 404));

app.onError((err, c) => c.json({ error: err.message }, 500));

Deno.serve(app.fetch);
