"""The Starlette app: routes, the lifespan (everything process-bound is created there, after fork),
the invoke route as a thin adapter of the invocation core, error handlers and the request guard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hive import admin, service
from hive.auth import bearer_matches
from hive.errors import HiveError
from hive.httprules import head_error
from hive.render import Reply, error_reply, internal_error_reply, json_reply
from hive.routes import API_PREFIX, INVOKE_METHODS, SUPABASE_METHODS, SUPABASE_PREFIX, invoke_target
from hive.service import Hive
from hive.settings import Settings, load_settings

log = logging.getLogger("hive.app")


class ReplyResponse(Response):
    """A hive.render.Reply as it is, headers and all."""

    def __init__(self, reply: Reply) -> None:
        self.status_code = reply.status
        self.body = reply.body
        self.background = None
        self.raw_headers = reply.headers if not reply.close else [*reply.headers, (b"connection", b"close")]


async def invoke(request: Request) -> Response:
    """Moves bytes between the client and the invocation core (hive.invoke); decides nothing itself."""
    hive: Hive = request.app.state.hive
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    inv = hive.invoker.begin(
        request.path_params["function"],
        scope["method"].encode(),
        raw_path,
        scope["query_string"],
        scope["headers"],
        scope.get("http_version") == "1.1",
    )
    if inv.reply is None:
        try:
            async for chunk in request.stream():
                if chunk and not inv.feed(chunk):
                    break
        except ClientDisconnect:
            inv.lost()
    r = inv.finish()
    return ReplyResponse(r if isinstance(r, Reply) else await r)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "pid": os.getpid()})


async def readyz(request: Request) -> Response:
    """Whether this worker serves (for load balancers); function names and errors only for the admin."""
    hive: Hive = request.app.state.hive
    rt = hive.runtime
    rt.sync()
    ok, detail = rt.readiness(detail=bearer_matches(request.headers.get("authorization"), hive.admin_token))
    cluster = request.app.state.hive.cluster
    if cluster is not None:  # cluster mode: not ready before this node has caught up (hive/cluster)
        ok, detail = cluster.readiness(ok, detail)
    return JSONResponse({"ready": ok, "pid": os.getpid(), **detail}, status_code=200 if ok else 503)


# --- errors: rendered by hive.render, the same as the fast path's ---


async def hive_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HiveError)
    return ReplyResponse(error_reply(exc, request.method, request.url.path))


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return ReplyResponse(json_reply(exc.status_code, {"error": code, "message": str(exc.detail)}))


async def internal_error(request: Request, exc: Exception) -> Response:
    reply = internal_error_reply(request.method, request.url.path)
    reply.close = False  # Starlette's ServerErrorMiddleware re-raises: uvicorn ends the connection
    return ReplyResponse(reply)


# --- assembly ---


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = time.monotonic()
        hive = service.open_hive(settings or load_settings())
        app.state.hive = hive
        hive.capabilities.bind(asyncio.get_running_loop())
        log.info(
            "worker %d ready: %d functions warm in %.1f ms",
            os.getpid(),
            len(hive.runtime.functions),
            (time.monotonic() - started) * 1000,
        )
        watcher = asyncio.create_task(service.watch(hive))
        try:
            yield
        finally:
            watcher.cancel()
            await hive.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *admin.ROUTES,
        Route(API_PREFIX + "/{function}", invoke, methods=list(INVOKE_METHODS)),
        # Supabase-style paths: any method, any sub-path.
        Route(SUPABASE_PREFIX + "/{function}", invoke, methods=list(SUPABASE_METHODS)),
        Route(SUPABASE_PREFIX + "/{function}/{rest:path}", invoke, methods=list(SUPABASE_METHODS)),
    ]
    handlers = {HiveError: hive_error, HTTPException: http_error, Exception: internal_error}
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=handlers,
        middleware=[Middleware(RequestGuard, settings=settings)],
    )
    app.state.draining = False
    return app


class RequestGuard:
    """Outermost: the request-head rules of hive.httprules for every route but invocations (the
    invocation core applies them, and renders them as it renders its other errors), and while the worker drains every response says Connection: close
    (uvicorn then closes the connection cleanly)."""

    def __init__(self, app: ASGIApp, settings: Settings | None) -> None:
        self.app = app
        s = settings or load_settings()
        self.limits = (s.max_headers, s.max_header_bytes, s.max_url_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_headers, max_header_bytes, max_url = self.limits
        path, query = scope.get("raw_path") or scope["path"].encode(), scope["query_string"]
        invocation = invoke_target(scope["method"].encode(), scope["path"].encode()) is not None
        err = (
            None
            if invocation
            else head_error(
                scope["headers"],
                max_headers,
                max_header_bytes,
                len(path) + len(query) + (1 if query else 0),
                max_url,
                scope.get("http_version") == "1.1",
            )
        )
        if err is not None:
            return await ReplyResponse(error_reply(err))(scope, receive, send)
        if not scope["app"].state.draining:
            return await self.app(scope, receive, send)

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, send_closing)
