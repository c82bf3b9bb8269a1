"""The example functions (hello in every SDK language, auth, webhook), built from source and deployed
to a real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import shutil
import time
from typing import Any

import httpx
import jwt
import pytest
import wasmtime

from hive.build import build_function, load_function_manifest
from hive.manifest import WASI_GROUPS
from tests.support import ROOT, Server

pytestmark = pytest.mark.slow

HELLOS = ("hello", "hello-rust", "hello-zig", "hello-as")
EXAMPLES = (*HELLOS, "auth", "webhook")
JWT_SECRET = "jwt-" + secrets.token_hex(32)
WEBHOOK_SECRET = "hook-" + secrets.token_hex(32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Each example built with `hive.build` from a clean copy of its folder."""
    out = {}
    for name in EXAMPLES:
        folder = tmp_path_factory.mktemp("examples") / name
        shutil.copytree(ROOT / "functions" / name, folder, ignore=shutil.ignore_patterns("*.wasm"))
        out[name] = build_function(folder).read_bytes()
    return out


def permissions(name: str) -> list[str]:
    return load_function_manifest(ROOT / "functions" / name).get("permissions", {}).get("wasi", [])


def manifest(name: str, config: dict[str, str] | None = None, wasi: list[str] | None = None) -> str:
    return json.dumps({"wasi": permissions(name) if wasi is None else wasi, "config": config or {}})


@pytest.fixture(scope="module")
def deployed(server: Server, built: dict[str, bytes]) -> Server:
    deploys = [
        *((name, built[name], manifest(name)) for name in HELLOS),
        ("auth", built["auth"], manifest("auth", {"JWT_SECRET": JWT_SECRET})),
        ("auth-unset", built["auth"], manifest("auth")),
        ("webhook", built["webhook"], manifest("webhook", {"WEBHOOK_SECRET": WEBHOOK_SECRET})),
        ("webhook-unset", built["webhook"], manifest("webhook")),
    ]
    for name, wasm, m in deploys:
        r = server.deploy(name, wasm, m)
        assert r.status_code == 201, r.text
    return server


def fresh(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection, so either worker may serve it: both must have the config."""
    with server.client(headers={"connection": "close"}) as c:
        return c.request(method, path, **kw)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"], body
    return body


# ---- what each example may import ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["auth", "webhook"])
def test_permissions_are_exactly_what_the_module_imports(built: dict[str, bytes], name: str) -> None:
    module = wasmtime.Module(wasmtime.Engine(), built[name])
    needed = set()
    for imp in module.imports:
        if imp.module == "hive":
            continue
        assert imp.module == "wasi_snapshot_preview1", imp.module
        needed |= {g for g, names in WASI_GROUPS.items() if imp.name in names and g != "process"}
    assert needed == set(permissions(name))  # sufficient, and nothing granted that goes unused


@pytest.mark.parametrize(
    ("name", "wasi", "missing"),
    [
        ("auth", [], ("environ_get", "environ_sizes_get", "clock_time_get")),
        ("auth", ["env"], ("clock_time_get",)),
        ("auth", ["clocks"], ("environ_get", "environ_sizes_get")),
        ("webhook", [], ("environ_get", "environ_sizes_get")),
    ],
)
def test_fewer_permissions_fail_the_deploy(
    server: Server, built: dict[str, bytes], name: str, wasi: list[str], missing: tuple[str, ...]
) -> None:
    r = server.deploy(f"{name}-denied", built[name], manifest(name, {"JWT_SECRET": "x"}, wasi=wasi))
    body = assert_error(r, 422, "forbidden_import")
    assert body["import_name"] in {f"wasi_snapshot_preview1.{n}" for n in missing}, body
    assert body["import_name"] in body["message"]
    assert fresh(server, "POST", f"/api/v1/edge/{name}-denied").status_code == 404  # nothing was deployed


# ---- hello -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HELLOS)
def test_hello_in_every_language(deployed: Server, name: str) -> None:
    r = fresh(deployed, "POST", f"/api/v1/edge/{name}", json={"name": "Edge Hive"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert set(body) == {"message", "timestamp"} and body["message"] == "Hello, Edge Hive!"
    stamp = time.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(stamp) - time.mktime(time.gmtime())) < 600  # the guest read a real clock
    r = fresh(deployed, "POST", f"/api/v1/edge/{name}", content=b"not json")
    assert r.status_code == 200 and r.json()["message"] == "Hello, World!"


# ---- auth ------------------------------------------------------------------------------------------------


def token(claims: dict[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256", **kw: Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, **kw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: bytes, payload: bytes, key: str = JWT_SECRET) -> str:
    """A token from raw header and payload bytes, correctly HS256-signed with `key`."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def call_auth(server: Server, tok: str | None, name: str = "auth", scheme: str = "Bearer") -> httpx.Response:
    headers = {} if tok is None else {"authorization": f"{scheme} {tok}"}
    return fresh(server, "GET", f"/api/v1/edge/{name}", headers=headers)


def test_auth_returns_the_claims(deployed: Server) -> None:
    now = int(time.time())
    claims = {
        "sub": "user-42",
        "name": "Ada Lovelace é 🐝",
        "admin": True,
        "scope": ["read", "write"],
        "org": {"id": 7},
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
    }
    tok = token(claims)
    for _ in range(6):  # both workers
        r = call_auth(deployed, tok)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-store"
        assert r.json() == {"claims": claims}
    # The payload object as-is, byte for byte.
    payload = base64.urlsafe_b64decode(tok.split(".")[1] + "==")
    assert r.content == b'{"claims":' + payload + b"}"


def test_auth_accepts_tokens_without_time_claims_and_any_scheme_case(deployed: Server) -> None:
    tok = token({"sub": "x"})
    assert call_auth(deployed, tok).json() == {"claims": {"sub": "x"}}
    assert call_auth(deployed, tok, scheme="bearer").status_code == 200
    assert call_auth(deployed, f"  {tok}", scheme="BEARER").status_code == 200
    float_exp = token({"sub": "x", "exp": time.time() + 60.5})
    assert call_auth(deployed, float_exp).status_code == 200


@pytest.mark.parametrize(
    ("auth_header", "what"),
    [
        (None, "no header"),
        ("Basic dXNlcjpwYXNz", "another scheme"),
        ("Bearer", "no token"),
        ("Bearertoken", "no space"),
    ],
)
def test_auth_missing_token(deployed: Server, auth_header: str | None, what: str) -> None:
    headers = {} if auth_header is None else {"authorization": auth_header}
    r = fresh(deployed, "GET", "/api/v1/edge/auth", headers=headers)
    assert_error(r, 401, "missing_token")
    assert r.headers["www-authenticate"].startswith("Bearer"), what


def test_auth_wrong_secret(deployed: Server) -> None:
    r = call_auth(deployed, token({"sub": "x"}, key="not-the-secret-" + secrets.token_hex(32)))
    assert_error(r, 401, "invalid_token")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_auth_expired(deployed: Server) -> None:
    now = int(time.time())
    assert_error(call_auth(deployed, token({"sub": "x", "exp": now - 5})), 401, "token_expired")
    assert_error(call_auth(deployed, token({"sub": "x", "exp": now - 86400, "nbf": now - 90000})), 401, "token_expired")
    # No leeway: exp == now (rounded down) is already expired.
    assert_error(call_auth(deployed, token({"sub": "x", "exp": now})), 401, "token_expired")


def test_auth_not_yet_valid(deployed: Server) -> None:
    now = int(time.time())
    assert_error(call_auth(deployed, token({"sub": "x", "nbf": now + 3600})), 401, "token_not_yet_valid")
    assert_error(
        call_auth(deployed, token({"sub": "x", "nbf": now + 60, "exp": now + 600})), 401, "token_not_yet_valid"
    )


def test_auth_rejects_every_algorithm_but_hs256(deployed: Server) -> None:
    claims = {"sub": "x", "exp": int(time.time()) + 300}
    cases = {
        "none (PyJWT)": jwt.encode(claims, None, algorithm="none"),
        "none with a valid HS256 signature": forge(b'{"alg":"none","typ":"JWT"}', json.dumps(claims).encode()),
        "HS512 with the same secret": token(claims, algorithm="HS512"),
        "HS384 with the same secret": token(claims, algorithm="HS384"),
        "lowercase hs256": forge(b'{"alg":"hs256"}', json.dumps(claims).encode()),
        "no alg": forge(b'{"typ":"JWT"}', json.dumps(claims).encode()),
        "alg not a string": forge(b'{"alg":["HS256"]}', json.dumps(claims).encode()),
        "alg with a trailing space": forge(b'{"alg":"HS256 "}', json.dumps(claims).encode()),
    }
    for what, tok in cases.items():
        r = call_auth(deployed, tok)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", (what, r.text)
    # The same claims, properly signed, pass: the rejections above are about the algorithm.
    assert call_auth(deployed, forge(b'{"alg":"HS256","typ":"JWT"}', json.dumps(claims).encode())).status_code == 200


def test_auth_rejects_malformed_and_tampered_tokens(deployed: Server) -> None:
    exp = int(time.time()) + 300
    # A token whose signature uses the URL-safe characters, to try it in the standard alphabet too.
    tokens = (token({"sub": f"user{i}", "exp": exp}) for i in range(1000))
    good = next(t for t in tokens if {"-", "_"} & set(t.split(".")[2]))
    h, p, s = good.split(".")
    mac = base64.urlsafe_b64decode(s + "=")
    evil_payload = b64url(json.dumps({"sub": "admin", "exp": exp}).encode())
    cases = {
        "two parts": f"{h}.{p}",
        "one part": h,
        "four parts": f"{good}.{s}",
        "empty signature": f"{h}.{p}.",
        "empty header": f".{p}.{s}",
        "bad base64 in the header": f"{h[:-2]}$!.{p}.{s}",
        "bad base64 in the signature": f"{h}.{p}.{s[:-1]}*",
        "standard base64 alphabet": f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}",
        "padded signature": f"{h}.{p}.{s}=",
        "impossible base64 length": f"{h}.{p}.{s}A",
        "truncated signature": f"{h}.{p}.{s[:-4]}",
        "swapped payload": f"{h}.{evil_payload}.{s}",
        "flipped signature bit": f"{h}.{p}.{b64url(bytes([mac[0] ^ 1]) + mac[1:])}",
        "signature of another key": f"{h}.{p}.{b64url(hashlib.sha256(mac).digest())}",
        "garbage": "not-a-jwt",
        "dots only": "..",
        "header not JSON": forge(b"not json", b'{"sub":"x"}'),
        "payload not JSON": forge(b'{"alg":"HS256"}', b"not json"),
        "payload a JSON array": forge(b'{"alg":"HS256"}', b'["sub"]'),
        "payload not UTF-8": forge(b'{"alg":"HS256"}', b'{"sub":"\xff"}'),
        "exp not a number": forge(b'{"alg":"HS256"}', b'{"sub":"x","exp":"tomorrow"}'),
        "exp null": forge(b'{"alg":"HS256"}', b'{"sub":"x","exp":null}'),
        "nbf not a number": forge(b'{"alg":"HS256"}', b'{"sub":"x","nbf":[1]}'),
        "exp out of range": forge(b'{"alg":"HS256"}', b'{"sub":"x","exp":1e999}'),
    }
    for what, tok in cases.items():
        r = call_auth(deployed, tok)
        assert r.status_code == 401, (what, r.text)
        assert r.json()["error"] == "invalid_token", (what, r.text)
    assert call_auth(deployed, good).status_code == 200


def test_auth_not_configured(deployed: Server) -> None:
    r = call_auth(deployed, token({"sub": "x"}), name="auth-unset")
    assert_error(r, 500, "not_configured")
    assert_error(call_auth(deployed, None, name="auth-unset"), 500, "not_configured")


# ---- webhook ---------------------------------------------------------------------------------------------


def signature(body: bytes, key: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def call_webhook(server: Server, body: bytes, headers: dict[str, str], name: str = "webhook") -> httpx.Response:
    return fresh(
        server, "POST", f"/api/v1/edge/{name}", content=body, headers={"content-type": "application/json", **headers}
    )


PR_EVENT = json.dumps({"action": "opened", "number": 7, "pull_request": {"title": "Edge Hive é"}}).encode()


def test_webhook_event_from_the_header(deployed: Server) -> None:
    for _ in range(6):  # both workers
        r = call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": signature(PR_EVENT), "x-github-event": "push"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"ok": True, "event": "push"}


def test_webhook_event_from_the_body_or_unknown(deployed: Server) -> None:
    cases = [
        (PR_EVENT, {}, "opened"),
        (PR_EVENT, {"x-github-event": ""}, "opened"),
        (b'{"zen":"Keep it logically awesome."}', {}, "unknown"),
        (b'{"action":7}', {}, "unknown"),
        (b"", {}, "unknown"),
        (b"not json \xff\x00", {}, "unknown"),  # the MAC covers raw bytes, whatever they are
        (b'{"action":"a \\"quoted\\" \\u00e9"}', {}, 'a "quoted" é'),
        (PR_EVENT, {"x-github-event": 'we"ird\\'}, 'we"ird\\'),  # JSON-escaped in the response
    ]
    for body, headers, event in cases:
        r = call_webhook(deployed, body, {"x-hub-signature-256": signature(body), **headers})
        assert r.status_code == 200, (body, r.text)
        assert r.json() == {"ok": True, "event": event}


def test_webhook_accepts_uppercase_hex(deployed: Server) -> None:
    sig = "sha256=" + signature(PR_EVENT)[7:].upper()
    assert call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": sig}).json() == {"ok": True, "event": "opened"}


def test_webhook_rejects_bad_signatures(deployed: Server) -> None:
    good = signature(PR_EVENT)
    tampered = PR_EVENT.replace(b'"number": 7', b'"number": 8')
    assert tampered != PR_EVENT
    cases = {
        "wrong secret": (PR_EVENT, signature(PR_EVENT, key="wrong-" + secrets.token_hex(32))),
        "tampered body": (tampered, good),
        "body with a trailing newline": (PR_EVENT + b"\n", good),
        "one hex digit changed": (PR_EVENT, good[:-1] + ("0" if good[-1] != "0" else "1")),
        "sha1 format": (PR_EVENT, "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), PR_EVENT, hashlib.sha1).hexdigest()),
        "no prefix": (PR_EVENT, good[7:]),
        "uppercase prefix": (PR_EVENT, "SHA256=" + good[7:]),
        "truncated": (PR_EVENT, good[:-2]),
        "too long": (PR_EVENT, good + "00"),
        "not hex": (PR_EVENT, good[:-1] + "g"),
        "base64 instead of hex": (PR_EVENT, "sha256=" + base64.b64encode(bytes.fromhex(good[7:])).decode()),
        "prefix only": (PR_EVENT, "sha256="),
    }
    for what, (body, sig) in cases.items():
        r = call_webhook(deployed, body, {"x-hub-signature-256": sig, "x-github-event": "push"})
        assert r.status_code == 401, (what, r.text)
        assert_error(r, 401, "invalid_signature")


def test_webhook_missing_signature(deployed: Server) -> None:
    assert_error(call_webhook(deployed, PR_EVENT, {"x-github-event": "push"}), 401, "missing_signature")
    assert_error(call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": ""}), 401, "missing_signature")
    # GitHub's older SHA-1 header alone is not enough.
    sha1 = "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), PR_EVENT, hashlib.sha1).hexdigest()
    assert_error(call_webhook(deployed, PR_EVENT, {"x-hub-signature": sha1}), 401, "missing_signature")


def test_webhook_not_configured(deployed: Server) -> None:
    r = call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": signature(PR_EVENT)}, name="webhook-unset")
    assert_error(r, 500, "not_configured")


# ---- secrets stay secret ---------------------------------------------------------------------------------


def test_secrets_are_never_listed_or_logged(deployed: Server) -> None:
    # Exercise every path once more, so the log below has seen them all.
    call_auth(deployed, token({"sub": "x"}))
    call_auth(deployed, token({"sub": "x"}, key="wrong-" + secrets.token_hex(32)))
    call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": signature(PR_EVENT)})
    call_webhook(deployed, PR_EVENT, {"x-hub-signature-256": signature(PR_EVENT, key="nope-" + secrets.token_hex(32))})
    texts = [fresh(deployed, "GET", "/api/v1/edge", headers=deployed.admin)]
    texts += [fresh(deployed, "GET", f"/api/v1/edge/{n}/versions", headers=deployed.admin) for n in ("auth", "webhook")]
    for r in texts:
        assert r.status_code == 200, r.text
    rows = {row["function"]: row for row in texts[0].json()["functions"]}
    assert rows["auth"]["config_keys"] == ["JWT_SECRET"] and rows["webhook"]["config_keys"] == ["WEBHOOK_SECRET"]
    assert rows["auth-unset"]["config_keys"] == []
    log = deployed.log()
    assert "deployed auth" in log  # the log is the server's, and it is being written
    for secret in (JWT_SECRET, WEBHOOK_SECRET):
        for r in texts:
            assert secret not in r.text
        assert secret not in log
        assert secret[-16:] not in log  # not even a fragment
    assert "JWT_SECRET is not configured" in log  # the not_configured path logs why, naming only the key


def test_examples_have_no_secrets_in_the_repository() -> None:
    for name in ("auth", "webhook"):
        m = load_function_manifest(ROOT / "functions" / name)
        assert "config" not in m, f"functions/{name}/hive.toml must not carry secrets"
        assert (ROOT / "functions" / name / "README.md").is_file()
