"""A SIGTERM is not held up by an open `logs?follow=1` stream (it used to wait out graceful_timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.guests import const_wat, wat
from tests.support import BIN, poll, start_server

pytestmark = pytest.mark.slow


def test_sigterm_ends_a_following_log_stream(tmp_path) -> None:
    s = start_server(tmp_path / "data", workers=1)
    follower = None
    try:
        assert s.deploy("f", wat(const_wat("ok"))).status_code == 201
        env = {**os.environ, "HIVE_URL": s.url, "HIVE_ADMIN_TOKEN": s.token}
        follower = subprocess.Popen(
            [str(BIN / "edge-hive"), "function", "logs", "f", "--follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let the stream open (the client's pace, not a wait for the server)
        started = time.monotonic()
        os.kill(s.proc.pid, signal.SIGTERM)
        # graceful_timeout is 30 s: a stream that held the worker would keep the server up that long
        poll("the server to exit", lambda: s.proc.poll() is not None, timeout=15)
        print(f"SIGTERM to exit with a follower attached: {time.monotonic() - started:.1f} s")
        assert s.proc.returncode == 0
    finally:
        if follower is not None:
            follower.kill()
            follower.wait(10)
        s.stop()
