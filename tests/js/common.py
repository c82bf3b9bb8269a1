"""Helpers for the JavaScript engine tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hive import abi
from hive.js import DEFAULT_LOAD_TIMEOUT_MS, new_instance
from hive.sandbox import CompiledModule, GuestContext, GuestInstance, GuestLimits, Sandbox


@dataclass
class Log:
    lines: list[tuple[str, int, str]] = field(default_factory=list)  # (stream, level, text)

    def sink(self, function: str, version: int, stream: str, level: int, text: str, request_id: str) -> None:
        self.lines.append((stream, level, text))

    def text(self, stream: str | None = None) -> str:
        return "\n".join(t for s, _, t in self.lines if stream is None or s == stream)


@dataclass
class Js:
    sandbox: Sandbox
    engine: CompiledModule

    def instance(
        self,
        source: str | bytes,
        *,
        env: dict[str, str] | None = None,
        limits: GuestLimits | None = None,
        log: Log | None = None,
        load_timeout_ms: int = DEFAULT_LOAD_TIMEOUT_MS,
    ) -> GuestInstance:
        code = source.encode() if isinstance(source, str) else source
        ctx = GuestContext(
            "fn", env=[f"{k}={v}".encode() for k, v in (env or {}).items()], sink=log.sink if log else None
        )
        return new_instance(
            self.sandbox,
            self.engine,
            code,
            limits or GuestLimits(timeout_ms=2000),
            ctx,
            load_timeout_ms=load_timeout_ms,
        )


def request(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    hs = [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or [])]
    return abi.encode_request(method.encode(), path.encode(), query.encode(), hs, body)


def call(
    inst: GuestInstance,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> abi.Response:
    return inst.call(request(method, path, query, headers, body))


def as_json(resp: abi.Response) -> object:
    return json.loads(resp.body)


def header(resp: abi.Response, name: str) -> str | None:
    values = [v.decode("latin-1") for k, v in resp.headers if k.decode().lower() == name]
    return ", ".join(values) if values else None
