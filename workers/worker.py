"""The gunicorn worker: uvicorn with uvloop and httptools, lifespan on (it warms every function)."""

from __future__ import annotations

import logging
from typing import Any

from uvicorn_worker import UvicornWorker


class HiveWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hive.* (including guest stdout/stderr) goes where gunicorn's error log goes.
        logger = logging.getLogger("hive")
        logger.handlers = self.log.error_log.handlers
        logger.setLevel(self.log.error_log.level)
        logger.propagate = False
