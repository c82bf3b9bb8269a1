"""The admin API (Starlette routes): deploy, list, versions, rollback, logs, metrics, delete.

Every route here needs the admin token: `admin_only` checks it once, before the handler runs.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hive import service
from hive.auth import bearer_matches
from hive.errors import BadRequest, ClientGone, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from hive.httprules import body_too_large, check_content_length
from hive.kv import MAX_VALUE_BYTES, KeyNotFound, check_store
from hive.logs import read_from, tail
from hive.manifest import parse_manifest, validate_name
from hive.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hive.metrics import exposition, function_stats
from hive.registry import VersionRecord
from hive.service import Hive

T = TypeVar("T")

Handler = Callable[[Request, Hive], Awaitable[Response]]


def admin_only(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route that needs 'Authorization: Bearer <admin token>'; the handler gets the Hive too."""

    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        hive: Hive = request.app.state.hive
        if not bearer_matches(request.headers.get("authorization"), hive.admin_token):
            raise Unauthorized("admin routes need 'Authorization: Bearer <admin token>'")
        return await handler(request, hive)

    return route


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


@admin_only
async def deploy(request: Request, hive: Hive) -> Response:
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
        manifest = parse_manifest(
            await manifest_field.read() if isinstance(manifest_field, UploadFile) else manifest_field
        )
    if len(wasm) > limit:
        raise PayloadTooLarge(f"module of {len(wasm)} bytes exceeds the limit of {limit} bytes", limit=limit)
    rec, live = await service.deploy(hive, name, wasm, manifest)
    return JSONResponse({**version_json(rec), **live}, status_code=201)


@admin_only
async def list_functions(request: Request, hive: Hive) -> Response:
    _, current = hive.registry.snapshot()
    stats = function_stats()
    empty = {"invocations": 0, "errors": 0, "p50_ms": None, "p99_ms": None}
    return JSONResponse(
        {"functions": [{**version_json(r), **stats.get(name, empty)} for name, r in sorted(current.items())]}
    )


@admin_only
async def function_logs(request: Request, hive: Hive) -> Response:
    """Recent log records of one function as JSON lines; ?follow=1 keeps streaming new ones until the
    client leaves or the worker shuts down."""
    name = validate_name(request.path_params["function"])
    try:
        lines = min(int(request.query_params.get("lines", "100")), 10_000)
    except ValueError:
        raise BadRequest("lines must be an integer") from None
    follow = request.query_params.get("follow") in ("1", "true", "yes")
    path = hive.function_log.path
    records, offset = tail(path, name, lines)
    state = request.app.state

    async def stream() -> AsyncIterator[bytes]:
        nonlocal offset
        for r in records:
            yield json.dumps(r).encode() + b"\n"
        while follow and not state.draining:  # a shutdown ends the stream instead of waiting on it
            await asyncio.sleep(0.2)
            new, offset = read_from(path, name, offset)
            for r in new:
                yield json.dumps(r).encode() + b"\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@admin_only
async def metrics_endpoint(request: Request, hive: Hive) -> Response:
    return Response(exposition(), media_type=METRICS_CONTENT_TYPE)


@admin_only
async def delete_function(request: Request, hive: Hive) -> Response:
    name = validate_name(request.path_params["function"])
    live = await service.delete(hive, name)
    return JSONResponse({"deleted": name, **live})


@admin_only
async def list_versions(request: Request, hive: Hive) -> Response:
    name = validate_name(request.path_params["function"])
    current = hive.registry.current(name)
    versions = hive.registry.versions(name)
    return JSONResponse(
        {
            "function": name,
            "current": current.version if current else None,
            "versions": [version_json(v) for v in versions],
        }
    )


@admin_only
async def rollback(request: Request, hive: Hive) -> Response:
    name = validate_name(request.path_params["function"])
    raw = await read_limited(request, 4096, "rollback body")
    try:
        body = json.loads(raw) if raw.strip() else {}
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ValueError
    except (ValueError, AttributeError):
        raise BadRequest('rollback takes an optional JSON body {"version": <int>}') from None
    rec, live = await service.rollback(hive, name, version)
    return JSONResponse({**version_json(rec), **live})


# --- KV stores ---


async def _kv(fn: Callable[..., T], *args: Any) -> T:
    """A KV store call off the event loop: in cluster mode it is a PostgreSQL round trip, which a stalled
    server would make last seconds for every request of the worker."""
    return await asyncio.to_thread(fn, *args)


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


@admin_only
async def kv_stores(request: Request, hive: Hive) -> Response:
    stores = await _kv(hive.capabilities.kv.stores)
    return JSONResponse({"stores": [{"name": s.name, "keys": s.keys, "bytes": s.bytes} for s in stores]})


@admin_only
async def kv_keys(request: Request, hive: Hive) -> Response:
    store = check_store(request.path_params["store"])
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    cursor = q.get("cursor")
    prefix = q.get("prefix", "").encode()
    page = await _kv(hive.capabilities.kv.list, store, prefix, cursor.encode() if cursor else None, limit)
    return JSONResponse(
        {
            "store": store,
            "keys": [_text(k) for k in page.keys],
            "cursor": None if page.next_cursor is None else _text(page.next_cursor),
        }
    )


@admin_only
async def kv_item(request: Request, hive: Hive) -> Response:
    store = check_store(request.path_params["store"])
    key = request.path_params["key"].encode()
    kv = hive.capabilities.kv
    if request.method == "GET":
        value = await _kv(kv.get, store, key)
        if value is None:
            raise KeyNotFound(f"no key {_text(key)!r} in store {store!r}")
        return Response(value, media_type="application/octet-stream")
    if request.method == "DELETE":
        return JSONResponse({"store": store, "key": _text(key), "deleted": await _kv(kv.delete, store, key)})
    ttl = request.query_params.get("ttl_s")
    try:
        ttl_s = float(ttl) if ttl else None
    except ValueError:
        raise BadRequest("ttl_s must be a number of seconds") from None
    value = await read_limited(request, MAX_VALUE_BYTES, "KV value")
    await _kv(kv.set, store, key, value, ttl_s)
    return JSONResponse({"store": store, "key": _text(key), "bytes": len(value), "ttl_s": ttl_s})


# --- server-wide secrets ---


@admin_only
async def list_secrets(request: Request, hive: Hive) -> Response:
    return JSONResponse({"secrets": [{"name": n} for n in sorted(hive.registry.secrets())]})  # names only


@admin_only
async def put_secrets(request: Request, hive: Hive) -> Response:
    raw = await read_limited(request, 1 << 20, "secrets")
    try:
        values = json.loads(raw)
        if not isinstance(values, dict) or not values:
            raise ValueError
    except ValueError:
        raise BadRequest('set secrets with a JSON object {"NAME": "value", ...}') from None
    live = await service.set_secrets(hive, values)
    return JSONResponse({"set": sorted(values), **live})


@admin_only
async def delete_secret(request: Request, hive: Hive) -> Response:
    gone, live = await service.unset_secrets(hive, [request.path_params["name"]])
    return JSONResponse({"unset": gone, **live})


# --- cluster mode (hive/cluster) ---


@admin_only
async def cluster_status(request: Request, hive: Hive) -> Response:
    """The nodes with their generation, lag and health (PostgreSQL's view, so any node answers the same)."""
    if hive.cluster is None:
        return JSONResponse({"enabled": False, "nodes": []})
    return JSONResponse(await asyncio.to_thread(hive.cluster.status))


ROUTES = [
    Route("/api/v1/cluster", cluster_status, methods=["GET"]),
    Route("/api/v1/secrets", list_secrets, methods=["GET"]),
    Route("/api/v1/secrets", put_secrets, methods=["PUT", "POST"]),
    Route("/api/v1/secrets/{name}", delete_secret, methods=["DELETE"]),
    Route("/api/v1/kv", kv_stores, methods=["GET"]),
    Route("/api/v1/kv/{store}", kv_keys, methods=["GET"]),
    Route("/api/v1/kv/{store}/{key:path}", kv_item, methods=["GET", "PUT", "DELETE"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/api/v1/edge", list_functions, methods=["GET"]),
    Route("/api/v1/edge/deploy", deploy, methods=["POST"]),
    Route("/api/v1/edge/{function}/versions", list_versions, methods=["GET"]),
    Route("/api/v1/edge/{function}/rollback", rollback, methods=["POST"]),
    Route("/api/v1/edge/{function}/logs", function_logs, methods=["GET"]),
    Route("/api/v1/edge/{function}", delete_function, methods=["DELETE"]),
]
