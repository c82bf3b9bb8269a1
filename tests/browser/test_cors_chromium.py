"""CORS as a real browser enforces it: headless Chromium (Debian's chromium; scripts/toolchains/chromium.sh)
loads a page from one origin (a tiny HTTP server on 127.0.0.1:PORT_A) whose script calls functions on
an Edge Hive server on another (127.0.0.1:PORT_B). The page writes what each fetch() saw into the DOM,
and `chromium --dump-dom` prints it.

Each case is one the browser decides: a custom header forces a preflight, credentials mode refuses
`*`, a refused origin or header is a network error (TypeError), and the server's own errors must be
readable (status, JSON body, x-relay-error) rather than network errors."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hive import abi
from tests.guests import ECHO_WAT, LOOP_WAT, RESP, const_wat, data, guest, packed, wat
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
KEY = "browser-key-" + "k" * 20
COOKIE = "hive_session=s3cr3t"
BROWSER_TIMEOUT_S = 90
# supabase-js's browser build, from tests/node (scripts/toolchains/supabase-js.sh installs it)
SUPABASE_UMD = (
    Path(__file__).resolve().parent.parent
    / "node"
    / "node_modules"
    / "@supabase"
    / "supabase-js"
    / "dist"
    / "umd"
    / "supabase.js"
)

# The page's script: every case is {url, init} run with fetch(); the outcome is what a script can read.
SCRIPT = r"""
async function run(c) {
  try {
    const r = await fetch(c.url, c.init);
    const text = await r.text();
    return {status: r.status, body: text, relay: r.headers.get("x-relay-error"), x: r.headers.get("x"),
            type: r.type};
  } catch (e) {
    return {error: e.name, message: String(e.message)};
  }
}
// supabase-js's UMD build, as a web app uses it: which error class each failed invoke() raised.
async function sb(c) {
  const client = supabase.createClient(BASE, c.key, {auth: {persistSession: false, autoRefreshToken: false}});
  const {data, error} = await client.functions.invoke(c.fn, c.options || {});
  if (!error) return {data: typeof data === "string" ? data : JSON.stringify(data)};
  const cls = [["FunctionsRelayError", supabase.FunctionsRelayError], ["FunctionsHttpError", supabase.FunctionsHttpError],
               ["FunctionsFetchError", supabase.FunctionsFetchError]].find(([, k]) => error instanceof k);
  const ctx = error.context;
  return {error: cls ? cls[0] : String(error), status: ctx && typeof ctx.status === "number" ? ctx.status : null,
          body: ctx && typeof ctx.text === "function" ? await ctx.text() : null};
}
(async () => {
  const out = {};
  for (const [name, c] of Object.entries(CASES)) out[name] = await run(c);
  for (const [name, c] of Object.entries(SB_CASES)) {
    try { out[name] = await sb(c); } catch (e) { out[name] = {thrown: String(e)}; }
  }
  document.getElementById("out").textContent = JSON.stringify(out);
  document.title = "done";
})();
"""


class Page:
    """The page's own origin: serves one HTML page (and sets a cookie that credentials mode sends)."""

    def __init__(self) -> None:
        self.html = b""
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/supabase.js":
                    js = SUPABASE_UMD.read_bytes()
                    self.send_response(200)
                    self.send_header("content-type", "text/javascript")
                    self.send_header("content-length", str(len(js)))
                    self.end_headers()
                    self.wfile.write(js)
                    return
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page.html)))
                self.send_header("set-cookie", f"{COOKIE}; Path=/; SameSite=Lax")
                self.end_headers()
                self.wfile.write(page.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def show(self, base: str, cases: dict[str, Any], sb_cases: dict[str, Any]) -> None:
        self.html = (
            f'<!doctype html><html><head><title>running</title><script src="/supabase.js"></script>'
            f'</head><body><pre id="out">pending</pre><script>const BASE = {json.dumps(base)};\n'
            f"const CASES = {json.dumps(cases)};\nconst SB_CASES = {json.dumps(sb_cases)};\n"
            f"{SCRIPT}</script></body></html>"
        ).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def chromium_dump_dom(url: str, profile: Path) -> tuple[str, str]:
    """Chromium's DOM of `url` after its script ran; in its own process group, killed whatever happens."""
    if not SUPABASE_UMD.exists():
        raise RuntimeError(f"{SUPABASE_UMD} was not found: run scripts/toolchains/supabase-js.sh (scripts/dev runs it)")
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} was not found: run scripts/toolchains/chromium.sh (scripts/dev runs it)")
    cmd = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    finally:
        try:  # chromium's own children (zygote, renderer) are in the group we made
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.returncode is None:
            proc.wait(timeout=10)
    return out.decode(errors="replace"), err.decode(errors="replace")


def answering(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A guest whose every response is this one (as a function with its own cors.ts answers)."""
    raw = abi.encode_response(abi.Response(status, headers, body))
    return guest(packed(RESP, len(raw)), data(RESP, raw), pages=1)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    p = Page()
    yield p
    p.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, page: Page) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("browser") / "data", workers=1)
    echo = wat(ECHO_WAT)
    keyed = {"mode": "api_key", "api_keys": [KEY]}
    deploys: list[tuple[str, bytes, dict[str, Any]]] = [
        ("keyed", echo, {"auth": keyed, "cors": {"allow_origins": [page.origin], "expose_headers": ["x"]}}),
        ("creds", echo, {"auth": keyed, "cors": {"allow_origins": [page.origin], "allow_credentials": True}}),
        (
            "credsstar",
            echo,
            {
                "cors": {
                    "allow_origins": [page.origin],
                    "allow_credentials": True,
                    "allow_methods": ["*"],
                    "allow_headers": ["*"],
                    "expose_headers": ["*"],
                }
            },
        ),
        ("wild", echo, {"cors": {"allow_origins": ["*"]}}),
        ("elsewhere", echo, {"auth": keyed, "cors": {"allow_origins": ["https://app.example.com"]}}),
        (
            "noapikey",
            echo,
            {"auth": keyed, "cors": {"allow_origins": [page.origin], "allow_headers": ["content-type"]}},
        ),
        # no cors section: the function answers CORS itself, preflights included (Supabase's cors.ts)
        (
            "selfcors",
            answering(
                200,
                [(b"access-control-allow-origin", b"*"), (b"access-control-allow-headers", b"apikey, content-type")],
                b"self",
            ),
            {"auth": keyed},
        ),
        (
            "oops",
            wat(const_wat('{"error":"the function failed"}', status=500)),
            {"cors": {"allow_origins": [page.origin]}},
        ),
        ("spin", wat(LOOP_WAT), {"limits": {"timeout_ms": 50}}),  # no cors section: its 504 is still readable
    ]
    for name, wasm, manifest in deploys:
        r = s.deploy(name, wasm, json.dumps(manifest))
        assert r.status_code == 201, (name, r.text)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def seen(server: Server, page: Page, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the page's script read, case by case."""
    b = server.url
    with_key = {"apikey": KEY, "content-type": "application/json"}  # both force a preflight
    post = {"method": "POST", "body": '{"hello":"browser"}'}
    sb_cases = {
        "sb_ok": {"key": KEY, "fn": "keyed", "options": {"body": {"from": "supabase-js"}}},
        "sb_refused": {"key": "w" * 24, "fn": "keyed"},
        "sb_missing": {"key": KEY, "fn": "missing"},
        "sb_guest_500": {"key": KEY, "fn": "oops"},
    }
    page.show(
        b,
        {
            "a_key": {"url": f"{b}/api/v1/edge/keyed", "init": {**post, "headers": with_key}},
            "a_key_supabase_path": {"url": f"{b}/functions/v1/keyed", "init": {**post, "headers": with_key}},
            "b_no_key": {
                "url": f"{b}/api/v1/edge/keyed",
                "init": {**post, "headers": {"content-type": "application/json"}},
            },
            "b_wrong_key": {
                "url": f"{b}/api/v1/edge/keyed",
                "init": {**post, "headers": {**with_key, "apikey": "w" * 24}},
            },
            "c_credentials": {
                "url": f"{b}/api/v1/edge/creds",
                "init": {**post, "headers": with_key, "credentials": "include"},
            },
            "c_credentials_no_key": {
                "url": f"{b}/api/v1/edge/creds",
                "init": {**post, "headers": {"content-type": "application/json"}, "credentials": "include"},
            },
            "c_no_credentials": {"url": f"{b}/api/v1/edge/creds", "init": {**post, "headers": with_key}},
            "c_credentials_wildcards": {
                "url": f"{b}/api/v1/edge/credsstar",
                "init": {"method": "PUT", "headers": {"x-custom": "yes"}, "credentials": "include"},
            },
            "c_wildcard_with_credentials": {
                "url": f"{b}/api/v1/edge/wild",
                "init": {"method": "PUT", "credentials": "include"},
            },
            "c_wildcard": {"url": f"{b}/api/v1/edge/wild", "init": {"method": "PUT"}},
            "d_origin_refused": {"url": f"{b}/api/v1/edge/elsewhere", "init": {**post, "headers": with_key}},
            "d_header_refused": {"url": f"{b}/api/v1/edge/noapikey", "init": {**post, "headers": with_key}},
            "f_self_cors": {"url": f"{b}/functions/v1/selfcors", "init": {**post, "headers": with_key}},
            "f_self_cors_no_key": {
                "url": f"{b}/functions/v1/selfcors",
                "init": {**post, "headers": {"apikey": "w" * 24}},
            },
            "e_missing": {"url": f"{b}/functions/v1/missing", "init": {"method": "POST", "body": "{}"}},
            "e_timeout": {"url": f"{b}/api/v1/edge/spin", "init": {}},
        },
        sb_cases,
    )
    out, err = chromium_dump_dom(page.origin + "/", tmp_path_factory.mktemp("chromium-profile"))
    m = re.search(r'<pre id="out">(.*?)</pre>', out, re.S)
    assert m and "<title>done</title>" in out, f"the page did not finish:\n{out[-3000:]}\n{err[-3000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_a_protected_function_called_with_its_key_after_a_preflight(seen: dict[str, Any]) -> None:
    for case in ("a_key", "a_key_supabase_path"):
        got = seen[case]
        assert got.get("status") == 200, got
        assert '{"hello":"browser"}' in got["body"] and KEY in got["body"]  # the echo guest saw body and key
        assert got["x"] == "1"  # exposed by the cors section
        assert got["relay"] is None and got["type"] == "cors"
        assert COOKIE not in got["body"]  # no credentials mode: the browser sent no cookie


def test_a_refusal_is_a_readable_401_not_a_network_error(seen: dict[str, Any]) -> None:
    for case, code in (("b_no_key", "missing_credentials"), ("b_wrong_key", "invalid_api_key")):
        got = seen[case]
        assert got.get("status") == 401, got
        err = json.loads(got["body"])
        assert err["error"] == code and err["message"]
        assert got["relay"] == "true"  # what supabase-js needs to see to raise FunctionsRelayError


def test_credentials_mode(seen: dict[str, Any]) -> None:
    got = seen["c_credentials"]
    assert got.get("status") == 200, got
    assert COOKIE in got["body"] and KEY in got["body"]  # the browser sent the page's cookie along
    got = seen["c_credentials_no_key"]
    assert got.get("status") == 401 and json.loads(got["body"])["error"] == "missing_credentials", got
    assert got["relay"] == "true"
    got = seen["c_no_credentials"]
    assert got.get("status") == 200 and COOKIE not in got["body"], got


def test_credentials_mode_with_wildcards_in_the_cors_section(seen: dict[str, Any]) -> None:
    """A browser reads "*" literally in credentials mode: the server spells out the method (PUT), the
    header asked for (x-custom) and the headers it exposes (x)."""
    got = seen["c_credentials_wildcards"]
    assert got.get("status") == 200, got
    assert "PUT" in got["body"] and "x-custom" in got["body"] and COOKIE in got["body"]
    assert got["x"] == "1"


def test_a_wildcard_origin_is_refused_by_the_browser_in_credentials_mode(seen: dict[str, Any]) -> None:
    assert seen["c_wildcard"].get("status") == 200, seen["c_wildcard"]
    assert seen["c_wildcard_with_credentials"].get("error") == "TypeError", seen["c_wildcard_with_credentials"]


def test_a_refused_origin_or_header_is_a_network_error(seen: dict[str, Any]) -> None:
    for case in ("d_origin_refused", "d_header_refused"):
        assert seen[case].get("error") == "TypeError", (case, seen[case])


def test_the_servers_errors_are_readable_without_a_cors_section(seen: dict[str, Any]) -> None:
    for case, status, code in (("e_missing", 404, "function_not_found"), ("e_timeout", 504, "timeout")):
        got = seen[case]
        assert got.get("status") == status, (case, got)
        assert json.loads(got["body"])["error"] == code
        assert got["relay"] == "true"


def test_a_function_without_a_cors_section_answers_its_own_preflights(seen: dict[str, Any]) -> None:
    """The preflight reached the guest (no 401 for want of a key the browser never sends on one), and
    the server's refusal of a wrong key is readable."""
    assert seen["f_self_cors"].get("status") == 200 and seen["f_self_cors"]["body"] == "self", seen["f_self_cors"]
    got = seen["f_self_cors_no_key"]
    assert got.get("status") == 401 and json.loads(got["body"])["error"] == "invalid_api_key", got
    assert got["relay"] == "true"


def test_supabase_js_in_the_browser_tells_the_servers_errors_from_the_functions(seen: dict[str, Any]) -> None:
    """supabase-js always sends apikey, authorization and x-client-info (a preflight every time), and
    raises FunctionsRelayError only if it can read x-relay-error, which a browser shows a script only
    when the server exposes it."""
    got = seen["sb_ok"]
    assert "data" in got and '{"from":"supabase-js"}' in got["data"] and "x-client-info" in got["data"], got
    for case, status, code in (("sb_refused", 401, "invalid_api_key"), ("sb_missing", 404, "function_not_found")):
        got = seen[case]
        assert got.get("error") == "FunctionsRelayError" and got["status"] == status, (case, got)
        assert json.loads(got["body"])["error"] == code
    got = seen["sb_guest_500"]
    assert got.get("error") == "FunctionsHttpError" and got["status"] == 500, got
    assert json.loads(got["body"]) == {"error": "the function failed"}
