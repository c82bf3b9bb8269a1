"""The HTTP API (Starlette). Everything process-bound is created in the lifespan, after fork."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hive import abi
from hive.auth import bearer_matches, ensure_admin_token, held_token
from hive.errors import (
    BadRequest,
    ClientGone,
    GuestError,
    HeadersTooLarge,
    HiveError,
    InvalidModule,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from hive.invoke import Invoker
from hive.logs import FunctionLog, read_from, tail
from hive.manifest import parse_manifest, validate_name
from hive.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hive.metrics import exposition, function_stats
from hive.peers import SyncMarks
from hive.ratelimit import RateLimiter
from hive.registry import Registry, VersionRecord, sha256_hex
from hive.runtime import Runtime, env_for, limits_for
from hive.sandbox import GuestContext, GuestInstance, Sandbox, warm_up
from hive.settings import Settings, load_settings
from hive.telemetry import Telemetry

log = logging.getLogger("hive.app")

INVOKE_METHODS = ["GET", "POST", "PUT", "PATCH", "HEAD", "OPTIONS"]
ALL_METHODS = INVOKE_METHODS + ["DELETE"]


@dataclass
class Hive:
    settings: Settings
    registry: Registry
    sandbox: Sandbox
    runtime: Runtime
    admin_token: str
    telemetry: Telemetry
    function_log: FunctionLog
    limiter: RateLimiter
    invoker: Invoker
    marks: SyncMarks


def _hive(request: Request) -> Hive:
    return request.app.state.hive


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def version_json(rec: VersionRecord) -> dict[str, Any]:
    return {
        "function": rec.name,
        "version": rec.version,
        "sha256": rec.sha256,
        "size": rec.size,
        "deployed_at": _iso(rec.deployed_at),
        **rec.manifest.public_view(),
    }


def require_admin(request: Request) -> None:
    if not bearer_matches(request.headers.get("authorization"), _hive(request).admin_token):
        raise Unauthorized("admin routes need 'Authorization: Bearer <admin token>'")


def check_content_length(cl: str | None, limit: int, what: str) -> None:
    """Refuse a declared Content-Length over `limit` (also used by the HTTP fast path, workers/fastpath.py)."""
    if cl is not None:
        if not cl.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(cl) > limit:
            raise PayloadTooLarge(f"{what} of {cl} bytes exceeds the limit of {limit} bytes", limit=limit)


def body_too_large(limit: int, what: str) -> PayloadTooLarge:
    """A body that grew past `limit` while it streamed in (also used by the HTTP fast path)."""
    return PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes", limit=limit)


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The whole body, refusing more than `limit` bytes (by Content-Length, or as it streams)."""
    check_content_length(request.headers.get("content-length"), limit, what)
    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise body_too_large(limit, what)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected before sending the whole body") from None
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was already read
    return body


# --- invoke ---


class GuestResponse(Response):
    def __init__(self, resp: abi.Response) -> None:
        self.status_code = resp.status
        self.body = resp.body
        self.background = None
        self.raw_headers = resp.headers + [(b"content-length", str(len(resp.body)).encode())]


async def invoke(request: Request) -> Response:
    invoker = _hive(request).invoker
    request_id = request_id_of(request.headers.get("x-request-id"))
    loaded = invoker.admit(request.path_params["function"], request.headers, request_id)  # type: ignore[arg-type]
    try:
        body = await read_limited(request, loaded.max_request_bytes, "request body")
    except HiveError as e:
        invoker.rejected(loaded, e, request_id)
        raise
    scope = request.scope
    # On the event loop, or in the guest threads for a function seen to run long (hive.invoke).
    resp = await invoker.acall(loaded, scope["method"].encode(), scope.get("raw_path") or scope["path"].encode(),
                               scope["query_string"], scope["headers"], body, request_id)
    return GuestResponse(resp)


# --- admin ---


async def deploy(request: Request) -> Response:
    require_admin(request)
    hive = _hive(request)
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType("deploy expects multipart/form-data with fields 'function' and 'wasm'")
    limit = hive.settings.max_upload_bytes
    try:
        await read_limited(request, limit + 64 * 1024, "upload")  # room for the multipart framing
    except PayloadTooLarge:
        raise PayloadTooLarge(f"the upload exceeds the module limit of {limit} bytes", limit=limit) from None
    async with request.form(max_files=2, max_fields=8) as form:
        for field in ("function", "wasm"):
            if field not in form:
                raise BadRequest(f"missing multipart field {field!r}")
        name = validate_name(form["function"])
        upload = form["wasm"]
        if not isinstance(upload, UploadFile):
            raise BadRequest("field 'wasm' must be a file part (curl -F wasm=@function.wasm)")
        wasm = await upload.read()
        manifest_field = form.get("manifest")
        manifest = parse_manifest(await manifest_field.read() if isinstance(manifest_field, UploadFile) else manifest_field)
    if len(wasm) > limit:
        raise PayloadTooLarge(f"module of {len(wasm)} bytes exceeds the limit of {limit} bytes", limit=limit)
    sha = sha256_hex(wasm)

    # Compiling is slow and runs no guest code: a thread keeps the loop serving.
    compiled = await asyncio.to_thread(hive.sandbox.compile, wasm, sha, manifest.allowed_wasi_imports(),
                                       manifest.limits.fuel is not None)
    # Guest code runs only on the loop thread (wasmtime-py passes host-function exceptions through a
    # global). The trial runs the start function and _initialize under the time limit, so it is bounded.
    try:
        GuestInstance(hive.sandbox, compiled, limits_for(manifest, hive.settings),
                      GuestContext(name, 0, env_for(manifest)))
    except GuestError as e:
        if not hive.registry.has_blob(sha):  # no version uses this module: drop its artifact
            hive.sandbox.artifact_path(sha, compiled.fuel).unlink(missing_ok=True)
        raise InvalidModule(f"the module fails to start: {e.message}", cause=e.code) from None
    rec = hive.registry.deploy(name, wasm, manifest, sha)
    live = await live_everywhere(hive)
    hive.telemetry.m.deploys.labels(name, "deploy").inc()
    log.info("deployed %s v%d sha256=%s (%d bytes)", name, rec.version, sha[:12], len(wasm))
    return JSONResponse({**version_json(rec), **live}, status_code=201)


async def list_functions(request: Request) -> Response:
    require_admin(request)
    _, current = _hive(request).registry.snapshot()
    stats = function_stats()
    empty = {"invocations": 0, "errors": 0, "p50_ms": None, "p99_ms": None}
    return JSONResponse({"functions": [{**version_json(r), **stats.get(name, empty)}
                                       for name, r in sorted(current.items())]})


async def function_logs(request: Request) -> Response:
    """Recent log records of one function as JSON lines; ?follow=1 keeps streaming new ones."""
    require_admin(request)
    hive = _hive(request)
    name = validate_name(request.path_params["function"])
    try:
        lines = min(int(request.query_params.get("lines", "100")), 10_000)
    except ValueError:
        raise BadRequest("lines must be an integer") from None
    follow = request.query_params.get("follow") in ("1", "true", "yes")
    path = hive.function_log.path
    records, offset = tail(path, name, lines)

    async def stream() -> AsyncIterator[bytes]:
        nonlocal offset
        for r in records:
            yield json.dumps(r).encode() + b"\n"
        while follow:
            await asyncio.sleep(0.2)
            new, offset = read_from(path, name, offset)
            for r in new:
                yield json.dumps(r).encode() + b"\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


async def metrics_endpoint(request: Request) -> Response:
    require_admin(request)
    return Response(exposition(), media_type=METRICS_CONTENT_TYPE)


async def delete_function(request: Request) -> Response:
    require_admin(request)
    hive = _hive(request)
    name = validate_name(request.path_params["function"])
    hive.registry.delete(name)
    return JSONResponse({"deleted": name, **await live_everywhere(hive)})


async def list_versions(request: Request) -> Response:
    require_admin(request)
    hive = _hive(request)
    name = validate_name(request.path_params["function"])
    current = hive.registry.current(name)
    versions = hive.registry.versions(name)
    return JSONResponse({"function": name, "current": current.version if current else None,
                         "versions": [version_json(v) for v in versions]})


async def rollback(request: Request) -> Response:
    require_admin(request)
    hive = _hive(request)
    name = validate_name(request.path_params["function"])
    raw = await read_limited(request, 4096, "rollback body")
    try:
        body = json.loads(raw) if raw.strip() else {}
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ValueError
    except (ValueError, AttributeError):
        raise BadRequest('rollback takes an optional JSON body {"version": <int>}') from None
    rec = hive.registry.set_current(name, version)
    live = await live_everywhere(hive)
    hive.telemetry.m.deploys.labels(name, "rollback").inc()
    log.info("rolled %s back to v%d", name, rec.version)
    return JSONResponse({**version_json(rec), **live})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "pid": os.getpid()})


async def readyz(request: Request) -> Response:
    rt = _hive(request).runtime
    rt.sync()
    ok, detail = rt.readiness()
    return JSONResponse({"ready": ok, "pid": os.getpid(), **detail}, status_code=200 if ok else 503)


# --- errors ---


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_ids() -> Iterator[str]:
    """16 hex digits from os.urandom, read 4 KiB at a time (one syscall per 512 ids, not per request)."""
    while True:
        block = os.urandom(4096).hex()
        for i in range(0, len(block), 16):
            yield block[i:i + 16]


_request_id_stream = _request_ids()
_request_id_lock = threading.Lock()


def _reset_request_ids() -> None:
    global _request_id_stream, _request_id_lock
    _request_id_stream, _request_id_lock = _request_ids(), threading.Lock()


os.register_at_fork(after_in_child=_reset_request_ids)  # a forked child never repeats its parent's ids


def _new_request_id() -> str:
    with _request_id_lock:
        return next(_request_id_stream)


def request_id_of(given: str | None) -> str:
    """The client's X-Request-Id when it is short and plain (it is copied into every log line), else a new one."""
    return given if given is not None and _REQUEST_ID.fullmatch(given) else _new_request_id()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def hive_error_response(exc: HiveError, method: str, path: str) -> JSONResponse:
    """The JSON response for a HiveError (also used by the HTTP fast path, workers/fastpath.py)."""
    if exc.status >= 500:
        log.warning("%s %s -> %d %s: %s", method, path, exc.status, exc.code, exc.message)
    headers = exc.headers
    if exc.status == 401 and "www-authenticate" not in headers:
        headers = {**headers, "www-authenticate": f'Bearer error="{exc.code}"'}
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def hive_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HiveError)
    return hive_error_response(exc, request.method, request.url.path)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


async def client_gone(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "client_disconnected", "message": str(exc)}, status_code=400)  # nobody reads it


def internal_error_response(method: str, path: str) -> JSONResponse:
    """The 500 for an unexpected exception; call it in the except block (also used by the HTTP fast path)."""
    log.exception("unhandled error on %s %s", method, path)
    return _error(500, "internal_error", "internal server error")


async def internal_error(request: Request, exc: Exception) -> Response:
    return internal_error_response(request.method, request.url.path)


# --- assembly ---


def open_hive(settings: Settings) -> Hive:
    data = settings.data_path
    token, token_file = ensure_admin_token(data, settings.admin_token or held_token())
    if token_file is not None:
        log.debug("admin token: %s", token_file)
    registry = Registry(data / "registry.lmdb", map_size_mb=settings.registry_map_size_mb,
                        keep_versions=settings.keep_versions)
    sandbox = Sandbox(data / "cache", epoch_tick_ms=settings.epoch_tick_ms)
    function_log = FunctionLog(data / "logs" / "functions.jsonl")
    telemetry = Telemetry(function_log if settings.function_log else None)
    runtime = Runtime(settings, registry, sandbox, guest_log=telemetry.guest_output)
    marks = SyncMarks(data)
    marks.publish(-1)  # a change made while this worker warms waits for it
    runtime.on_sync = marks.publish
    runtime.sync(force=True)  # every function warm before this worker takes a connection
    limiter = RateLimiter(data / "ratelimit.lmdb")
    invoker = Invoker(runtime, limiter, telemetry, admin_token=token)
    # The first request pays for no first-time work in the call path (hive/sandbox/warmup.py).
    try:
        warm_up(sandbox)
        telemetry.warm_up()
        request_id_of(None)
    except Exception:
        log.exception("the call-path warm-up failed; serving anyway")
    return Hive(settings, registry, sandbox, runtime, token, telemetry, function_log, limiter, invoker, marks)


async def live_everywhere(hive: Hive) -> dict[str, int]:
    """After a change to the registry: load it here, then wait (bounded by sync_wait_ms) until every
    other live worker has loaded it too, so the next request is served warm wherever it lands."""
    hive.runtime.sync()
    behind = await hive.marks.wait(hive.runtime.generation, hive.settings.sync_wait_ms / 1000)
    if behind:
        log.warning("workers %s had not loaded generation %d after %d ms", behind, hive.runtime.generation,
                    hive.settings.sync_wait_ms)
    return {"generation": hive.runtime.generation, "workers_behind": len(behind)}


async def _watch(hive: Hive) -> None:
    interval = hive.settings.sync_interval_ms / 1000
    m = hive.telemetry.m
    proc = psutil.Process()
    rss = m.rss.labels(str(os.getpid()))
    ticks = 0
    while True:
        await asyncio.sleep(interval)
        try:
            hive.runtime.sync()
            m.warm.set(hive.runtime.warm_count())
            if ticks % max(1, int(1 / interval)) == 0:  # about once a second
                rss.set(proc.memory_info().rss)
            ticks += 1
        except Exception:
            log.exception("registry sync failed")


def create_app(settings: Settings | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started = time.monotonic()
        hive = open_hive(settings or load_settings())
        app.state.hive = hive
        log.info("worker %d ready: %d functions warm in %.1f ms", os.getpid(),
                 len(hive.runtime.functions), (time.monotonic() - started) * 1000)
        watcher = asyncio.create_task(_watch(hive))
        try:
            yield
        finally:
            watcher.cancel()
            hive.marks.remove()
            hive.sandbox.close()
            hive.registry.close()
            hive.function_log.close()
            hive.limiter.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/api/v1/edge", list_functions, methods=["GET"]),
        Route("/api/v1/edge/deploy", deploy, methods=["POST"]),
        Route("/api/v1/edge/{function}/versions", list_versions, methods=["GET"]),
        Route("/api/v1/edge/{function}/rollback", rollback, methods=["POST"]),
        Route("/api/v1/edge/{function}/logs", function_logs, methods=["GET"]),
        Route("/api/v1/edge/{function}", invoke, methods=INVOKE_METHODS),
        Route("/api/v1/edge/{function}", delete_function, methods=["DELETE"]),
        # Supabase-style paths: any method, any sub-path.
        Route("/functions/v1/{function}", invoke, methods=ALL_METHODS),
        Route("/functions/v1/{function}/{rest:path}", invoke, methods=ALL_METHODS),
    ]
    handlers = {ClientGone: client_gone, HiveError: hive_error, HTTPException: http_error, Exception: internal_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,  # type: ignore[arg-type]
                    middleware=[Middleware(RequestGuard, settings=settings)])
    app.state.draining = False
    return app


def headers_too_large(headers: list[tuple[bytes, bytes]], max_headers: int, max_header_bytes: int
                      ) -> HeadersTooLarge | None:
    """The 431 for an oversized header set, or None (also used by the HTTP fast path)."""
    if len(headers) > max_headers or sum(len(k) + len(v) for k, v in headers) > max_header_bytes:
        return HeadersTooLarge(f"request headers exceed {max_headers} fields or {max_header_bytes} bytes")
    return None


class RequestGuard:
    """Outermost: refuse oversized header sets (431), and while the worker drains make every
    response say Connection: close (uvicorn then closes the connection cleanly)."""

    def __init__(self, app: ASGIApp, settings: Settings | None) -> None:
        self.app = app
        s = settings or load_settings()
        self.max_headers, self.max_header_bytes = s.max_headers, s.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        err = headers_too_large(scope["headers"], self.max_headers, self.max_header_bytes)
        if err is not None:
            return await JSONResponse(err.to_dict(), status_code=err.status)(scope, receive, send)
        if not scope["app"].state.draining:
            return await self.app(scope, receive, send)

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, send_closing)
