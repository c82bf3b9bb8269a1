"""`edge-hive dev`: a local server with the production runtime, every function under a folder built and
deployed to it, rebuilt and redeployed on save, and the function log streamed to the terminal.

The server is `edge-hive serve` itself (gunicorn, the real workers, an embedded registry under a dev
data dir), run as a child in its own session so that Ctrl-C in the terminal reaches only this process,
which then stops the server's whole process group. Function folders are the ones with a hive.toml:
DIR itself, or its direct subfolders.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hive.build import MANIFEST, build_function, deploy_manifest, load_function_manifest
from hive.errors import BuildError, HiveError, InvalidManifest
from hive.settings import setting

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
TAIL_INTERVAL_S = 0.05
# Build outputs and caches: a build writing them must not trigger the next build.
IGNORE_DIRS = ("target", "build", "zig-out", ".zig-cache", "zig-cache", "node_modules", "dist")
# (zig cc writes <name>.wasm.tmp<hex> and renames it; 4913 is vim's probe file.)
IGNORE_FILES = (r"\.c?wasm($|\.)", r"\.o$", r"\.tmp[0-9a-f]*$", r"^4913$")
# Where the server's workers append the function log (hive.service) and where dev puts gunicorn's log.
FUNCTION_LOG = Path("logs") / "functions.jsonl"
SERVER_LOG = "server.log"


class DevError(HiveError):
    code = "dev_failed"


class Echo(Protocol):
    def __call__(self, message: str, *, err: bool = False) -> None: ...


class _Out:
    """Whole lines from several threads, never interleaved."""

    def __init__(self, echo: Echo) -> None:
        self._echo = echo
        self._lock = threading.Lock()

    def __call__(self, message: str, *, err: bool = False) -> None:
        with self._lock:
            self._echo(message, err=err)


# --- the server ---


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DevError(
                    f"{host}:{port} is in use (another edge-hive dev or server?): pass --port to choose another"
                ) from None
            raise DevError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _die_with_parent() -> None:
    # In the child before exec: if this process dies without stopping the server (SIGKILL), the kernel
    # sends the gunicorn master SIGTERM, and its workers follow it (workers/gunicorn_conf.py).
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class DevServer:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path

    @classmethod
    def start(cls, data_dir: Path, port: int, workers: int) -> DevServer:
        host = "127.0.0.1"
        _check_port_free(host, port)
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, setting("function_log").env: "true"}  # the terminal shows it
        argv = [
            sys.executable,
            "-m",
            "hive.cli",
            "serve",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(workers),
            "--data-dir",
            str(data_dir),
        ]
        with open(data_dir / SERVER_LOG, "wb") as log:  # this session's log only
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return cls(proc, f"http://{host}:{port}", data_dir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevError(f"the server {self.exit_status()}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling interval
        raise DevError(f"the server did not become ready in {timeout:.0f} s:\n{self.log_tail()}")

    def exit_status(self) -> str:
        rc = self.proc.returncode
        return f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.data_dir / SERVER_LOG).read_text(errors="replace")
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """TERM to the server's process group (master and workers), KILL after STOP_TIMEOUT_S."""
        pgid = self.proc.pid  # its own session: the group id is the master's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the master, so the group empties
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)  # polling interval
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass


# --- the terminal: the function log and the server's warnings ---


class Tail(threading.Thread):
    """Follows the function log (every worker appends to it) and the server's log from their current
    ends, and prints each new complete line: function records as `edge-hive function logs` does, with
    the function's name in front; of the server's lines only warnings and errors."""

    def __init__(self, data_dir: Path, out: Echo) -> None:
        super().__init__(name="edge-hive-dev-tail", daemon=True)
        self.out = out
        self.stopping = threading.Event()
        self.files = {data_dir / FUNCTION_LOG: self._function_line, data_dir / SERVER_LOG: self._server_line}
        self.offsets = {path: _size(path) for path in self.files}
        self.partial = {path: b"" for path in self.files}

    def run(self) -> None:
        while not self.stopping.wait(TAIL_INTERVAL_S):
            self.poll()

    def poll(self) -> None:
        for path, show in self.files.items():
            for line in self._new_lines(path):
                show(line)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)
        self.poll()  # what the last invocations wrote

    def _new_lines(self, path: Path) -> list[bytes]:
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offsets[path]:
                    self.offsets[path], self.partial[path] = 0, b""  # rotated
                f.seek(self.offsets[path])
                data = f.read(4 << 20)
        except FileNotFoundError:
            return []
        self.offsets[path] += len(data)
        data = self.partial[path] + data
        complete, _, self.partial[path] = data.rpartition(b"\n")
        return complete.split(b"\n") if complete else []

    def _function_line(self, raw: bytes) -> None:
        from hive.logs import format_record

        try:
            rec = json.loads(raw)
        except ValueError:
            return
        if isinstance(rec, dict):
            self.out(f"[{rec.get('function', '?')}] {format_record(rec)}")

    def _server_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace")
        if any(level in line for level in ("[WARNING]", "[ERROR]", "[CRITICAL]")):
            self.out(f"[server] {line}", err=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- functions: build, deploy, watch ---


def find_functions(root: Path) -> list[Path]:
    """ROOT itself when it is a function folder, else its subfolders with a hive.toml."""
    if (root / MANIFEST).is_file():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}") if p.is_file())


@dataclass(eq=False)
class Function:
    folder: Path
    name: str | None = None  # from hive.toml, read at each build (it may change)
    version: int | None = None  # the version serving, once one deployed
    digest: str | None = None  # of what serves: name, module and manifest
    sources: dict[str, str] = field(default_factory=dict)  # path -> digest, as last built
    deployed_name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.folder.name


@dataclass
class Dev:
    root: Path
    server: DevServer
    token: str | None
    out: Echo
    keep: Any  # the watch filter: which paths are sources
    functions: dict[Path, Function] = field(default_factory=dict)

    def client(self) -> Any:
        from hive.client import Client

        return Client(self.server.url, self.token)

    def url_of(self, name: str) -> str:
        return f"{self.server.url}/api/v1/edge/{name}"

    def rescan(self) -> list[Function]:
        """Track new function folders and drop removed ones; returns the new ones."""
        found = find_functions(self.root)
        for gone in set(self.functions) - set(found):
            self.out(
                f"[{self.functions.pop(gone).label}] {gone / MANIFEST} is gone: no longer watched "
                "(its last version stays deployed)"
            )
        new = [Function(folder) for folder in found if folder not in self.functions]
        self.functions.update({f.folder: f for f in new})
        return new

    def deploy(self, fn: Function) -> bool:
        """Build and deploy one function. A failure prints its message once and leaves the last good
        version serving. True when a new version now serves."""
        t0 = time.perf_counter()
        fn.sources = source_digests(fn.folder, self.keep)
        try:
            # No echo: the compiler's messages come once, in the BuildError, not also as they stream.
            name = load_function_manifest(fn.folder)["function"]["name"]
            fn.name = name
            wasm = build_function(fn.folder)
            manifest = deploy_manifest(fn.folder)
            t1 = time.perf_counter()
            body = json.dumps(manifest, sort_keys=True) if manifest else None
            digest = hashlib.sha256(b"%s\0%s\0%s" % (name.encode(), wasm.read_bytes(), (body or "").encode()))
            if digest.hexdigest() == fn.digest:
                self.out(f"[{name}] the module is unchanged (v{fn.version} keeps serving)")
                return False
            rec = self.client().deploy(name, wasm, body)
        except (BuildError, InvalidManifest, OSError) as e:
            self._failed(fn, "build failed", getattr(e, "message", None) or str(e))
            return False
        except HiveError as e:  # the server refused it (hive.client.ClientError) or is not reachable
            self._failed(fn, "deploy failed", e.message)
            return False
        t2 = time.perf_counter()
        fn.version, fn.digest, fn.deployed_name = rec["version"], digest.hexdigest(), name
        self.out(
            f"[{name}] v{rec['version']} serving in {(t2 - t0) * 1000:.0f} ms "
            f"(build {(t1 - t0) * 1000:.0f}, deploy {(t2 - t1) * 1000:.0f})"
        )
        return True

    def _failed(self, fn: Function, what: str, message: str) -> None:
        still = f"v{fn.version} keeps serving" if fn.version else "nothing deployed yet"
        self.out(f"[{fn.label}] {what} ({still}):\n{message.rstrip()}", err=True)

    def owner(self, path: Path) -> Function | None:
        for folder, fn in self.functions.items():
            if path.is_relative_to(folder):
                return fn
        return None

    def changed(self, paths: Iterable[Path]) -> None:
        """One batch of saved files: redeploy each function they belong to, once."""
        paths = list(paths)
        todo = self.rescan() if any(p.name == MANIFEST for p in paths) else []
        touched = {id(fn): fn for fn in map(self.owner, paths) if fn is not None and fn not in todo}
        # Unchanged contents (a touch, an editor's backup dance, a tool's temp file) build nothing.
        todo += [fn for fn in touched.values() if source_digests(fn.folder, self.keep) != fn.sources]
        for fn in todo:
            before = fn.deployed_name
            if self.deploy(fn) and fn.deployed_name != before:  # new, or renamed in hive.toml
                self.out(f"[{fn.label}] {self.url_of(fn.label)}")


def source_digests(folder: Path, keep: Any) -> dict[str, str]:
    """The contents of every file in `folder` that the watcher looks at."""
    from watchfiles import Change

    out = {}
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if keep(Change.modified, os.path.join(top, d))]
        for name in files:
            path = os.path.join(top, name)
            if keep(Change.modified, path):
                try:
                    out[path] = hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
                except OSError:  # gone since the listing
                    continue
    return out


def watch_filter(ignore_paths: Iterable[Path]) -> Any:
    from watchfiles import DefaultFilter

    return DefaultFilter(
        ignore_dirs=(*DefaultFilter.ignore_dirs, *IGNORE_DIRS),
        ignore_entity_patterns=(*DefaultFilter.ignore_entity_patterns, *IGNORE_FILES),
        ignore_paths=[str(p) for p in ignore_paths],
    )


def run(root: Path, *, port: int, data_dir: Path, workers: int, echo: Echo) -> None:
    """Serve, deploy and watch until SIGINT or SIGTERM, then stop everything started here and return."""
    root, data_dir = root.resolve(), data_dir.resolve()
    if not root.is_dir():
        raise DevError(f"no folder {root}: pass the folder of your functions (default ./functions)")
    out = _Out(echo)
    main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if main_thread:  # Ctrl-C and SIGTERM both end the loop, even where a launcher ignored SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    server: DevServer | None = None
    tail: Tail | None = None
    try:
        server = DevServer.start(data_dir, port, workers)
        out(f"starting the server (pid {server.pid}, data dir {data_dir}) ...")
        server.wait_ready()
        from hive.client import resolve_token

        keep = watch_filter([data_dir])
        dev = Dev(root, server, resolve_token(None, str(data_dir)), out, keep)
        tail = Tail(data_dir, out)
        tail.start()
        dev.rescan()
        if not dev.functions:
            out(
                f"no function folders (with {MANIFEST}) in {root} yet: create one with "
                f"`edge-hive function new NAME --dir {root}`; watching for it"
            )
        for fn in dev.functions.values():
            dev.deploy(fn)
        out(f"\nEdge Hive dev server on {server.url} (admin token in {data_dir / 'admin.token'})")
        for fn in dev.functions.values():
            state = f"v{fn.version}" if fn.version else "not deployed: fix the error above and save"
            out(f"  {fn.label:<20} {dev.url_of(fn.label)}  ({state})")
        out(f"watching {root} for changes; Ctrl-C stops\n")
        _watch(dev, root, keep)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not leave the server running.
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if tail is not None:
                tail.stop()
            if server is not None:
                out("stopping the server ...")
                server.stop()
            _stop_children()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


def _watch(dev: Dev, root: Path, keep: Any) -> None:
    from watchfiles import watch

    # step: a batch ends after 50 ms without events, so an editor's write-and-rename is one change.
    # An empty batch every second (yield_on_timeout) checks that the server still runs.
    first = True
    for changes in watch(
        root, watch_filter=keep, step=50, rust_timeout=1000, yield_on_timeout=True, raise_interrupt=True
    ):
        if dev.server.proc.poll() is not None:
            raise DevError(f"the server {dev.server.exit_status()}:\n{dev.server.log_tail()}")
        paths = [Path(path) for _, path in changes]
        if first:  # the watcher runs now: catch up with saves made during the first builds
            first = False
            paths += [fn.folder / MANIFEST for fn in dev.functions.values()]
        if paths:
            dev.changed(paths)


def _stop_children() -> None:
    """A build tool still running when Ctrl-C came (subprocess gives it only 0.25 s): end this
    process's own children, by PID."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for c in children:
        try:
            c.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=3)
    for c in alive:
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass
