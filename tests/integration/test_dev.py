"""`edge-hive dev` as a real subprocess: a copy of functions/hello (C, built with the pip zig toolchain)
served by the real server, redeployed on save, a compile error shown once while the last good version
keeps serving, the function log in the terminal, and Ctrl-C stopping everything it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from hive.dev import find_functions, watch_filter
from tests.support import BIN, ROOT, free_port, poll

HELLO_C = "hello.c"
# hello.c's greeting, as it appears in the C source ("Hello" in the original).
GREETING = re.compile(r'(\\"message\\":\\")([A-Za-z ]+)(, ")')  # hello.c's hive_cat("...Hello, ", name, ...)


class DevProcess:
    """`edge-hive dev` in its own session (so the test can signal it as a terminal would), its merged
    output collected by a thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        self.proc = subprocess.Popen(
            [str(BIN / "edge-hive"), "dev", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for(self, what: str, pattern: str, timeout: float = 120) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"edge-hive dev exited ({self.proc.returncode}):\n{self.output()}")
            m = re.search(pattern, self.output(), re.MULTILINE)
            if m:
                found.append(m)
            return m is not None

        try:
            poll(what, seen, timeout=timeout, interval=0.02)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- edge-hive dev output ---\n{self.output()}") from None
        return found[0]

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self, extra: list[psutil.Process]) -> None:
        """Cleanup after a failed test: this test's processes only, by PID / process group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for p in extra:
            try:
                os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        self._reader.join(timeout=5)


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE  # is_running checks the start time too
    except psutil.NoSuchProcess:
        return True


def message(url: str) -> str | None:
    try:
        r = httpx.post(url, json={"name": "dev"}, timeout=5, headers={"x-request-id": "dev-loop-test"})
    except httpx.HTTPError:
        return None
    return r.json().get("message") if r.status_code == 200 else None


def set_greeting(src: Path, greeting: str, *, break_it: bool = False) -> None:
    text = GREETING.sub(lambda m: m.group(1) + greeting + m.group(3), src.read_text())
    good, bad = 'HIVE_STR("World");', 'HIVE_STR("World")\n'
    # A C syntax error: the statement loses its semicolon (and gets it back).
    text = text.replace(good, bad) if break_it else text.replace(bad, good + "\n")
    assert GREETING.search(text) and greeting in text
    src.write_text(text)  # what an editor's save amounts to


def save_to_answer(src: Path, url: str, greeting: str) -> float:
    """Seconds from saving the source to the server answering with the new greeting."""
    t0 = time.monotonic()
    set_greeting(src, greeting)
    poll(f"the answer {greeting!r}", lambda: message(url) == f"{greeting}, dev!", timeout=60, interval=0.01)
    return time.monotonic() - t0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "functions" / "hello", tmp_path / "functions" / "hello", ignore=shutil.ignore_patterns("*.wasm")
    )
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dev_serves_redeploys_on_save_survives_a_compile_error_and_stops_on_ctrl_c(project: Path) -> None:
    port = free_port()
    dev = DevProcess(project, "functions", "--port", str(port), "--data-dir", ".hive-dev")
    procs: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}/api/v1/edge/hello"
        dev.wait_for("the server to start", r"starting the server \(pid (\d+)")
        dev.wait_for("the URL list", rf"^  hello +{re.escape(url)}  \(v1\)$")
        dev.wait_for("the watcher", r"^watching .* for changes")
        assert message(url) == "Hello, dev!"
        master = int(dev.wait_for("the server pid", r"starting the server \(pid (\d+)").group(1))
        procs = dev.descendants()
        assert master in {p.pid for p in procs} and len(procs) >= 2  # the master and its worker

        src = project / "functions" / "hello" / HELLO_C
        latencies = [save_to_answer(src, url, greeting) for greeting in ("Howdy", "Hi", "Hey")]
        print(
            f"\nedge-hive dev: save-to-new-answer latency of a C function: "
            f"{', '.join(f'{s * 1000:.0f} ms' for s in latencies)}"
        )
        dev.wait_for("the v4 deploy", r"^\[hello\] v4 serving in")

        # A compile error: shown once, the compiler's own words, and v4 keeps serving.
        set_greeting(src, "Broken", break_it=True)
        dev.wait_for("the build error", r"^\[hello\] build failed \(v4 keeps serving\):")
        assert message(url) == "Hey, dev!"
        set_greeting(src, "Fixed")
        poll("the fixed version", lambda: message(url) == "Fixed, dev!", timeout=60)
        out = dev.output()
        assert out.count("expected ';'") == 1, out  # clang's message, printed once
        assert "hello.c:" in out and "error:" in out
        assert "Traceback" not in out
        assert out.count("build failed") == 1

        # Each invocation's log line, as `edge-hive function logs` prints it, with the function's name.
        dev.wait_for("an invocation's log line", r"^\[hello\] \S+Z v5 200 \d+us pid=\d+ req=dev-loop-test$")

        os.kill(dev.proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends it
        assert dev.proc.wait(timeout=60) == 0, dev.output()
        poll("the server's processes to exit", lambda: all(gone(p) for p in procs), timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        dev.kill(procs)


@pytest.mark.slow
def test_sigterm_stops_a_dev_server_with_no_functions_yet(tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    port = free_port()
    dev = DevProcess(tmp_path, "--port", str(port))  # DIR defaults to ./functions, data to ./.hive-dev
    procs: list[psutil.Process] = []
    try:
        dev.wait_for("the watcher", r"^watching .*functions for changes")
        assert "no function folders" in dev.output()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        assert (tmp_path / ".hive-dev" / "registry.lmdb").exists()
        procs = dev.descendants()
        assert procs
        os.kill(dev.proc.pid, signal.SIGTERM)
        assert dev.proc.wait(timeout=60) == 0, dev.output()
        poll("the server's processes to exit", lambda: all(gone(p) for p in procs), timeout=30)
    finally:
        dev.kill(procs)


def test_a_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dev = DevProcess(tmp_path, "--port", str(port))
        try:
            assert dev.proc.wait(timeout=60) == 1
        finally:
            dev.kill([])
    out = dev.output()
    assert f"127.0.0.1:{port} is in use" in out and "--port" in out
    assert "Traceback" not in out


def test_build_outputs_are_not_sources(tmp_path: Path) -> None:
    keep = watch_filter([tmp_path / ".hive-dev"])
    from watchfiles import Change

    fn = tmp_path / "functions" / "hello"
    for path in ("hello.c", "hive.toml", "src/lib.rs", "assembly/index.ts", "Cargo.toml"):
        assert keep(Change.modified, str(fn / path)), path
    for path in (
        "hello.wasm",
        "hello.wasm.tmp36de732",
        "target/wasm32-wasi/release/x.wasm",
        "target/x.d",
        "node_modules/edge-hive/index.ts",
        ".zig-cache/o/abc/x.o",
        "build/release.wat",
        "zig-out/bin/x",
        "hello.c.swp",
        "hello.c~",
    ):
        assert not keep(Change.modified, str(fn / path)), path
    assert not keep(Change.modified, str(tmp_path / ".hive-dev" / "logs" / "functions.jsonl"))


def test_function_folders_are_dir_itself_or_its_subfolders(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "hive.toml").write_text(f'[function]\nname = "{name}"\nlanguage = "c"\n')
    (tmp_path / "notes").mkdir()
    assert find_functions(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert find_functions(tmp_path / "a") == [tmp_path / "a"]


@pytest.mark.slow
def test_a_server_that_dies_ends_dev_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "functions").mkdir()
    dev = DevProcess(tmp_path, "--port", str(free_port()))
    procs: list[psutil.Process] = []
    try:
        master = int(dev.wait_for("the server to start", r"starting the server \(pid (\d+)").group(1))
        dev.wait_for("the watcher", r"^watching .*functions for changes")
        procs = dev.descendants()
        os.kill(master, signal.SIGKILL)
        assert dev.proc.wait(timeout=60) == 1
        out = dev.output()
        assert "the server was killed by signal 9" in out and "Listening at:" in out  # its log's tail
        assert "Traceback" not in out
        poll("the workers to exit", lambda: all(gone(p) for p in procs), timeout=30)
    finally:
        dev.kill(procs)
