"""A worker's warm pool: each registered function's current version, loaded and instantiated.

Joins the registry (what should serve) to the sandbox (what can run). Synchronous and
single-threaded: the web app calls it from its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hive import abi
from hive.capabilities import fetch_limits, rules_of
from hive.cors import CorsPolicy
from hive.errors import FunctionNotFound, GuestError
from hive.js.server import JsEngines, blob_waits, engine_dir
from hive.jwks import JwksCache
from hive.manifest import Manifest, burst_of
from hive.outbound import FetchLimits, HostRule
from hive.policy import InvokeAuth
from hive.registry import Registry, VersionRecord
from hive.sandbox import CompiledModule, GuestContext, GuestInstance, GuestLimits, Sandbox
from hive.settings import Settings

log = logging.getLogger("hive.runtime")


def limits_for(manifest: Manifest, settings: Settings) -> GuestLimits:
    lim = manifest.limits
    return GuestLimits(
        timeout_ms=lim.timeout_ms or settings.timeout_ms,
        memory_bytes=(lim.memory_mb or settings.memory_mb) << 20,
        max_response_bytes=lim.max_response_bytes
        if lim.max_response_bytes is not None
        else settings.max_response_bytes,
        fuel=lim.fuel,
    )


def env_for(manifest: Manifest, secrets: dict[str, str] | None = None) -> list[bytes]:
    """The guest's environment: the server-wide secrets under the function's own config (which wins)."""
    values = {**(secrets or {}), **manifest.config}
    return [f"{k}={v}".encode() for k, v in sorted(values.items())]


@dataclass
class Loaded:
    """One function version, warm in this worker."""

    record: VersionRecord
    compiled: CompiledModule
    limits: GuestLimits
    max_request_bytes: int
    auth: InvokeAuth
    rate: tuple[float, int] | None  # (rps, burst), shared by every worker
    rules: tuple[HostRule, ...] = ()  # allowed_hosts, parsed
    kv_stores: frozenset[str] = frozenset()
    fetch_limits: FetchLimits = field(default_factory=FetchLimits)
    wall_timeout_ms: int = 30_000
    max_concurrency: int = 64
    max_queue: int = 64
    does_io: bool = False  # its calls may wait on fetch, KV or (JS) timers: they run on guest threads
    fresh_each_request: bool = False  # isolation = "request"
    cors: CorsPolicy | None = None
    guest_log: Callable[[str, int, str, int, str, str], None] | None = None  # JS: maps stack frames
    idle: list[GuestInstance] = field(default_factory=list)
    retired: bool = False

    @property
    def name(self) -> str:
        return self.record.name


class Runtime:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        sandbox: Sandbox,
        guest_log: Callable[[str, int, str, int, str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.guest_log = guest_log
        self.registry = registry
        self.sandbox = sandbox
        self.functions: dict[str, Loaded] = {}
        self.failed: dict[str, str] = {}  # name -> why it could not be loaded here
        self.generation = -1
        # Told the generation and what failed to load here (name -> why) after each change.
        self.on_sync: Callable[[int, dict[str, str]], None] | None = None
        self._refill: set[str] = set()
        self.secrets: dict[str, str] = {}
        self.jwks = JwksCache()  # one per worker: every function naming a JWKS URL shares its fetches
        # One engine for every JS function; built in the background when missing, then sync loads them.
        self.js = JsEngines(sandbox, engine_dir(settings.data_path), on_ready=self._load_again)
        self._stale = False
        self._read_this_turn = False  # sync_for_request: the generation was read in this loop turn
        # Counters that show the request path does no compile or instantiate in steady state.
        self.loads = 0
        self.instantiations = 0
        self.cold = 0  # instantiations a request waited for

    # Keeping up with the registry

    def sync_for_request(self) -> None:
        """sync() for the request path, at most once per event-loop turn: requests read in one turn
        share one generation read. Every LMDB call gives the GIL up (py-lmdb releases it around
        them), and a guest thread that takes it may keep it for a switch interval (5 ms) while the
        loop waits; once per turn instead of once per request. A change still reaches every worker
        before its answer (hive.service.live_everywhere waits for their marks), so a client that
        waited for that answer never meets the old version."""
        if self._read_this_turn:
            return
        try:
            asyncio.get_running_loop().call_soon(self._next_turn)
        except RuntimeError:  # no loop (tests, benchmarks): every call reads
            self.sync()
            return
        self._read_this_turn = True
        self.sync()

    def _next_turn(self) -> None:
        self._read_this_turn = False

    def sync(self, force: bool = False) -> bool:
        """Load what changed since the last sync. Returns True when anything changed."""
        if not force and not self._stale and self.registry.generation() == self.generation:
            return False
        self._stale = False
        gen, current = self.registry.snapshot()
        secrets = self.registry.secrets()
        every = secrets != self.secrets  # a secret changed: every function gets a new environment
        self.secrets = secrets
        for name in list(self.functions):
            if name not in current:
                self.functions.pop(name).retired = True
        self.failed = {k: v for k, v in self.failed.items() if k in current}
        for name, rec in current.items():
            have = self.functions.get(name)
            if have is not None and have.record == rec and not every:
                continue
            try:
                loaded = self._load(rec)
            except Exception as e:  # keep serving the others; readyz reports it
                log.exception("could not load %s v%d", name, rec.version)
                self.failed[name] = f"v{rec.version}: {e}"
                continue
            self.failed.pop(name, None)
            if have is not None:
                have.retired = True
            self.functions[name] = loaded  # the swap: new requests see the new version
        self.generation = gen
        if self.on_sync is not None:
            self.on_sync(gen, self.failed)
        return True

    def _load_again(self) -> None:
        """From another thread: the next sync retries what could not load (JS functions waiting for the engine)."""
        self._stale = True

    def _load(self, rec: VersionRecord) -> Loaded:
        allowed = rec.manifest.allowed_wasi_imports()
        fuel = rec.manifest.limits.fuel is not None
        guest_log = None
        waits = False
        if rec.manifest.kind == "js":  # the shared engine, loading this version's bytecode (hive/js/server.py)
            blob = self.registry.blob(rec.sha256)
            compiled, guest_log = self.js.function(rec, blob, self.guest_log)
            waits = blob_waits(blob)  # its bundle uses timers: they sleep in the host, on a guest thread
        else:
            try:
                compiled = self.sandbox.load(rec.sha256, None, allowed, fuel)
            except FileNotFoundError:  # not cached here, or the cached artifact was unusable
                compiled = self.sandbox.load(rec.sha256, self.registry.blob(rec.sha256), allowed, fuel)
        m = rec.manifest
        max_req = m.limits.max_request_bytes
        rate = None if m.rate_limit is None else (m.rate_limit.rps, burst_of(m.rate_limit))
        st = self.settings
        lim = m.limits
        loaded = Loaded(
            rec,
            compiled,
            limits_for(m, st),
            st.max_request_bytes if max_req is None else max_req,
            InvokeAuth(m.auth, self.jwks),
            rate,
            rules_of(m.allowed_hosts),
            frozenset(m.kv),
            fetch_limits(lim.fetch),
            lim.wall_timeout_ms or st.wall_timeout_ms,
            lim.max_concurrency or st.max_concurrency,
            st.max_queue if lim.max_queue is None else lim.max_queue,
            m.does_io or waits,
            m.isolation == "request",
            None if m.cors is None else CorsPolicy(m.cors),
            guest_log,
        )
        loaded.idle.append(self._instantiate(loaded))  # warm before it serves
        self.loads += 1
        return loaded

    def _instantiate(self, loaded: Loaded) -> GuestInstance:
        rec = loaded.record
        self.instantiations += 1
        ctx = GuestContext(
            rec.name, rec.version, env_for(rec.manifest, self.secrets), sink=loaded.guest_log or self.guest_log
        )
        return GuestInstance(self.sandbox, loaded.compiled, loaded.limits, ctx)

    # Serving

    def lookup(self, name: str) -> Loaded:
        loaded = self.functions.get(name)
        if loaded is None:
            raise FunctionNotFound(f"function {name!r} is not deployed")
        return loaded

    def invoke(
        self,
        loaded: Loaded,
        envelope: bytes,
        request_id: str = "",
        io: object = None,
        cpu_started_ns: int | None = None,
    ) -> tuple[abi.Response, int | None]:
        """The guest's response and the fuel it used (None without a fuel budget). Each call owns the
        instance it takes until it returns; with concurrent calls (guest threads) more are made.
        `cpu_started_ns`: the thread's CPU time when the invocation began (its time limit counts from
        there; from the call itself when it is not given or an instance had to be made first)."""
        if loaded.idle:
            inst = loaded.idle.pop()
        else:  # cold: after a failure, or more concurrent calls than warm instances
            self.cold += 1
            inst = self._instantiate(loaded)
            cpu_started_ns = None  # making the instance is not the guest's time
        try:
            resp = inst.call(envelope, request_id, io, cpu_started_ns)
        except GuestError as e:
            # The store may be in any state: drop it, and warm a fresh one off the request path.
            self._refill.add(loaded.name)
            if inst.fuel_used is not None:
                e.extra["fuel_used"] = inst.fuel_used
            raise
        if loaded.fresh_each_request:
            self._refill.add(loaded.name)  # a fresh instance for the next request, made off its path
        elif not loaded.retired:
            loaded.idle.append(inst)
        return resp, inst.fuel_used

    def add_instance(self, loaded: Loaded) -> None:
        """One more warm instance of a function (on a guest thread, for concurrent calls)."""
        try:
            inst = self._instantiate(loaded)
        except GuestError as e:
            log.warning("could not add an instance of %s: %s", loaded.name, e)
            return
        if not loaded.retired:
            loaded.idle.append(inst)

    def warm_count(self) -> int:
        return sum(len(f.idle) for f in self.functions.values())

    @property
    def needs_refill(self) -> bool:
        return bool(self._refill)

    def refill(self) -> None:
        names, self._refill = self._refill, set()
        for name in names:
            loaded = self.functions.get(name)
            if loaded is not None and not loaded.idle:
                try:
                    loaded.idle.append(self._instantiate(loaded))
                except GuestError as e:
                    log.warning("could not re-warm %s: %s", name, e)

    def readiness(self, detail: bool = False) -> tuple[bool, dict[str, object]]:
        """Ready once this worker serves the registry (one function that cannot load here does not make
        the worker unready: it keeps serving the others, and the previous version of that one). Names
        and error text only with `detail` (the admin's view)."""
        cold = sorted(n for n, f in self.functions.items() if not f.idle)
        ok = self.generation >= 0
        out: dict[str, object] = {
            "generation": self.generation,
            "warm": len(self.functions) - len(cold),
            "cold": len(cold),
            "failed": len(self.failed),
            "loads": self.loads,
            "instantiations": self.instantiations,
            "cold_starts": self.cold,
            "checked_at": time.time(),
        }
        if detail:
            out.update(cold=cold, failed=dict(self.failed))
        return ok, out
