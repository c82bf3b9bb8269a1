"""A small HTTP client for the admin and invoke API, used by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hive.auth import token_path
from hive.errors import ClientError, HiveError  # noqa: F401 - ClientError re-exported
from hive.settings import setting


def resolve_token(explicit: str | None, data_dir: str | None = None) -> str | None:
    if explicit:
        return explicit
    token_env, data_setting = setting("admin_token").env, setting("data_dir")
    if os.environ.get(token_env):
        return os.environ[token_env]
    path = token_path(data_dir or os.environ.get(data_setting.env) or data_setting.default)
    return path.read_text().strip() if path.is_file() else None


@dataclass
class Client:
    url: str
    token: str | None
    timeout: float = 60.0

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, admin: bool = True, **kw: Any) -> httpx.Response:
        """`admin=False` for invoke routes: the admin token must never reach a function."""
        headers = {**(self._headers() if admin else {}), **kw.pop("headers", {})}
        try:
            return httpx.request(method, self.url.rstrip("/") + path, headers=headers, timeout=self.timeout, **kw)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the server at {self.url}: is `edge-hive serve` running? (set --url or HIVE_URL)"
            ) from None
        except httpx.HTTPError as e:
            raise ClientError(f"request to {self.url} failed: {e}") from None

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = self.request(method, path, **kw)
        if r.status_code >= 400:
            raise api_error(r)
        return r.json()

    def deploy(self, name: str, wasm: Path, manifest_json: str | None = None) -> dict[str, Any]:
        data = {"function": name}
        if manifest_json:
            data["manifest"] = manifest_json
        with open(wasm, "rb") as f:
            return self.admin(
                "POST", "/api/v1/edge/deploy", data=data, files={"wasm": (wasm.name, f, "application/wasm")}
            )


def api_error(r: httpx.Response) -> ClientError:
    try:
        body = r.json()
        code, message = body.get("error", "error"), body.get("message", r.text)
    except ValueError:
        code, message = "error", r.text[:500]
    hint = ""
    if r.status_code == 401:
        hint = " (pass --token, set HIVE_ADMIN_TOKEN, or run from the folder whose .hive/admin.token the server uses)"
    err = ClientError(f"{r.status_code} {code}: {message}{hint}")
    err.status = r.status_code
    return err
