"""The composition root and the lifecycle of a worker's Edge Hive: open (after fork), deploy, roll
back, delete, keep up with the registry, close. Knows no HTTP framework: the admin routes
(hive.admin) and the CLI-facing API call these."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from hive.auth import ensure_admin_token, held_token
from hive.capabilities import Capabilities
from hive.errors import BadRequest, ForbiddenImport, GuestError, InvalidModule
from hive.httprules import request_id_of
from hive.invoke import Invoker
from hive.kv import KvUnavailable
from hive.kv.lmdb import LmdbKv
from hive.logs import FunctionLog
from hive.manifest import Manifest, grant_hint
from hive.peers import SyncMarks
from hive.ratelimit import RateLimiter
from hive.registry import Registry, VersionRecord, sha256_hex
from hive.runtime import Runtime, env_for, limits_for
from hive.sandbox import GuestContext, GuestInstance, Sandbox, warm_up
from hive.sandbox.compiler import CompileLimits
from hive.settings import Settings
from hive.telemetry import Telemetry
from hive.telemetry import install as install_telemetry_patch

log = logging.getLogger("hive.app")

if TYPE_CHECKING:
    from hive.cluster.node import ClusterNode


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
    capabilities: Capabilities
    cluster: ClusterNode | None = None  # cluster mode (hive/cluster): PostgreSQL is the source of truth

    async def aclose(self) -> None:
        if self.cluster is not None:  # cluster mode: its replicator writes to the registry, so first
            self.cluster.close()
        self.marks.remove()
        self.invoker.close()
        await self.capabilities.aclose()
        self.sandbox.close()
        self.registry.close()
        self.telemetry.flush()
        self.function_log.close()
        self.limiter.close()


def open_hive(settings: Settings) -> Hive:
    """Everything process-bound, created in the worker after fork; every function warm when it returns."""
    install_telemetry_patch()  # idempotent; HiveWorker installs it first under gunicorn (fastcall's: define_all)
    data = settings.data_path
    token, token_file = ensure_admin_token(data, settings.admin_token or held_token())
    if token_file is not None:
        log.debug("admin token: %s", token_file)
    registry = Registry(
        data / "registry.lmdb", map_size_mb=settings.registry_map_size_mb, keep_versions=settings.keep_versions
    )
    sandbox = Sandbox(
        data / "cache", epoch_tick_ms=settings.epoch_tick_ms, compile_limits=CompileLimits.from_settings(settings)
    )
    registry.on_drop = sandbox.forget  # artifacts of pruned or deleted versions go with them
    function_log = FunctionLog(data / "logs" / "functions.jsonl")
    telemetry = Telemetry(function_log if settings.function_log else None)
    runtime = Runtime(settings, registry, sandbox, guest_log=telemetry.guest_output)
    marks = SyncMarks(data)
    marks.publish(-1)  # a change made while this worker warms waits for it
    runtime.on_sync = marks.publish
    cluster = None
    if settings.cluster_dsn:  # cluster mode (hive/cluster): the node catches up before this worker warms
        from hive.cluster.node import ClusterNode

        cluster = ClusterNode(settings, registry, sandbox)
        cluster.start()
    runtime.sync(force=True)  # every function warm before this worker takes a connection
    limiter = RateLimiter(data / "ratelimit.lmdb") if cluster is None else cluster.rate_limiter(data / "ratelimit.lmdb")
    # Its own environment: a full KV store can never stop deploys. Commits are not fsynced one by one
    # (5 ms each here); the watcher syncs every second, and a process crash loses nothing written.
    kv = (
        LmdbKv(
            data / "kv.lmdb", map_size_mb=settings.kv_map_size_mb, quota_bytes=settings.kv_quota_mb << 20, sync=False
        )
        if cluster is None
        else cluster.kv()
    )
    capabilities = Capabilities(settings, kv, telemetry)
    invoker = Invoker(runtime, limiter, telemetry, admin_token=token, capabilities=capabilities)
    if cluster is not None:  # past its lease, cut off from PostgreSQL: invocations answer 503 node_fenced
        cluster.watch_fence(invoker)
    # The first request pays for no first-time work in the call path (hive/sandbox/warmup.py).
    try:
        warm_up(sandbox)
        telemetry.warm_up()
        request_id_of(None)
    except Exception:
        log.exception("the call-path warm-up failed; serving anyway")
    return Hive(
        settings,
        registry,
        sandbox,
        runtime,
        token,
        telemetry,
        function_log,
        limiter,
        invoker,
        marks,
        capabilities,
        cluster,
    )


async def deploy(hive: Hive, name: str, wasm: bytes, manifest: Manifest) -> tuple[VersionRecord, dict[str, Any]]:
    """Compile, trial-start and record a new version; the previous one serves until this succeeds."""
    if manifest.kind == "js":  # source for the shared engine: the blob is its bytecode (hive/js/server.py)
        wasm, manifest = await asyncio.to_thread(
            hive.runtime.js.prepare,
            name,
            wasm,
            manifest,
            limits_for(manifest, hive.settings),
            env_for(manifest, hive.runtime.secrets),
        )
        sha = sha256_hex(wasm)
    else:
        sha = await _compile_module(hive, name, wasm, manifest)
    if hive.cluster is not None:  # cluster mode: PostgreSQL first, then every live node
        rec, live = await hive.cluster.deploy(name, wasm, manifest, sha)
    else:
        rec = hive.registry.deploy(name, wasm, manifest, sha)
        live = await live_everywhere(hive)
    hive.telemetry.m.deploys.labels(name, "deploy").inc()
    log.info("deployed %s v%d sha256=%s (%d bytes)", name, rec.version, sha[:12], len(wasm))
    return rec, live


async def _compile_module(hive: Hive, name: str, wasm: bytes, manifest: Manifest) -> str:
    """A core module compiled (the .cwasm cache) and trial-started: its sha256."""
    sha = sha256_hex(wasm)
    # Compiling is slow and runs no guest code: a thread keeps the loop serving.
    try:
        compiled = await asyncio.to_thread(
            hive.sandbox.compile, wasm, sha, manifest.allowed_wasi_imports(), manifest.limits.fuel is not None
        )
    except ForbiddenImport as e:  # say how to fix it: the manifest grant that allows it, or that none can
        qualified = e.extra.get("import_name", "")
        hint, grant = grant_hint(qualified)
        raise ForbiddenImport(e.message + hint, **{**e.extra, "grant": grant}) from None
    # Guest code runs only on the loop thread (wasmtime-py passes host-function exceptions through a
    # global). The trial runs the start function and _initialize under the time limit, so it is bounded.
    try:
        GuestInstance(
            hive.sandbox,
            compiled,
            limits_for(manifest, hive.settings),
            GuestContext(name, 0, env_for(manifest, hive.runtime.secrets)),
        )
    except GuestError as e:
        if not hive.registry.has_blob(sha):  # no version uses this module: drop its artifact
            hive.sandbox.forget([sha])
        raise InvalidModule(f"the module fails to start: {e.message}", cause=e.code) from None
    return sha


async def rollback(hive: Hive, name: str, version: int | None) -> tuple[VersionRecord, dict[str, Any]]:
    if hive.cluster is not None:  # cluster mode: PostgreSQL first, then every live node
        rec, live = await hive.cluster.rollback(name, version)
    else:
        rec = hive.registry.set_current(name, version)
        live = await live_everywhere(hive)
    hive.telemetry.m.deploys.labels(name, "rollback").inc()
    log.info("rolled %s back to v%d", name, rec.version)
    return rec, live


async def delete(hive: Hive, name: str) -> dict[str, Any]:
    if hive.cluster is not None:  # cluster mode: PostgreSQL first, then every live node
        return await hive.cluster.delete(name)
    hive.registry.delete(name)
    return await live_everywhere(hive)


_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


async def set_secrets(hive: Hive, values: dict[str, str]) -> dict[str, Any]:
    """Server-wide secrets: in every function's environment (its own config wins), live on every
    worker when this returns; never logged or listed with their values."""
    for k, v in values.items():
        if not isinstance(k, str) or not _SECRET_NAME.match(k) or not isinstance(v, str) or "\x00" in v:
            raise BadRequest(
                f"a secret needs a NAME of letters, digits and '_' (not starting with a digit) and a "
                f"text value without NUL; got {str(k)[:40]!r}"
            )
    if hive.cluster is not None:  # cluster mode: PostgreSQL first, then every live node
        live = await hive.cluster.set_secrets(values)
        log.info("secrets set: %s", ", ".join(sorted(values)))
        return live
    hive.registry.set_secrets(values)
    log.info("secrets set: %s", ", ".join(sorted(values)))
    return await live_everywhere(hive)


async def unset_secrets(hive: Hive, names: list[str]) -> tuple[list[str], dict[str, Any]]:
    if hive.cluster is not None:  # cluster mode: PostgreSQL first, then every live node
        gone, live = await hive.cluster.unset_secrets(names)
        log.info("secrets unset: %s", ", ".join(sorted(gone)) or "none were set")
        return gone, live
    gone = hive.registry.unset_secrets(names)
    log.info("secrets unset: %s", ", ".join(sorted(gone)) or "none were set")
    return gone, await live_everywhere(hive)


async def live_everywhere(hive: Hive) -> dict[str, Any]:
    """After a change to the registry: load it here, then wait (bounded by sync_wait_ms) until every
    other live worker has loaded it too, so the next request is served warm wherever it lands. A worker
    that could not load a function says so in its mark: the answer lists it (it keeps serving the
    function's previous version, if there is one)."""
    hive.runtime.sync()
    gen = hive.runtime.generation
    behind = await hive.marks.wait(gen, hive.settings.sync_wait_ms / 1000)
    if behind:
        log.warning("workers %s had not loaded generation %d after %d ms", behind, gen, hive.settings.sync_wait_ms)
    failed = hive.marks.failures(gen)
    for f in failed:
        log.warning("worker %s could not load %s: %s", f["pid"], f["function"], f["error"])
    return {"generation": gen, "workers_behind": len(behind), "workers_failed": failed}


def _kv_upkeep(hive: Hive) -> None:
    kv = hive.capabilities.kv
    try:
        kv.purge_expired(limit=1000)
        kv.sync()
    except KvUnavailable:  # cluster mode: PostgreSQL is down, serving goes on
        pass
    except Exception:
        log.exception("KV upkeep failed")


async def watch(hive: Hive) -> None:
    """In the background: keep up with the registry, and refresh the warm-instance and RSS gauges."""
    interval = hive.settings.sync_interval_ms / 1000
    m = hive.telemetry.m
    proc = psutil.Process()
    rss = m.rss.labels(str(os.getpid()))
    ticks = 0
    upkeep: asyncio.Future[None] | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            hive.runtime.sync()
            m.warm.set(hive.runtime.warm_count())
            if ticks % max(1, int(1 / interval)) == 0:  # about once a second
                rss.set(proc.memory_info().rss)
                if hive.cluster is None:
                    _kv_upkeep(hive)
                elif upkeep is None or upkeep.done():  # PostgreSQL may stall: never on the loop, one at a time
                    upkeep = asyncio.ensure_future(asyncio.to_thread(_kv_upkeep, hive))
            ticks += 1
        except Exception:
            log.exception("registry sync failed")
