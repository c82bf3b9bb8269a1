"""The gunicorn worker: uvicorn with uvloop and httptools, lifespan on (it warms every function)."""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class HiveWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "server_header": False,
    }
