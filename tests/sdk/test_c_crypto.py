"""The C crypto header (hive/sdk/c/edge_hive_crypto.h) against Python's hashlib, hmac and base64, natively
and as wasm32-wasi; plus the two edge_hive.h helpers the auth and webhook examples use (hive_config,
hive_json_get_number)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import shutil
import string
import struct
import subprocess
from pathlib import Path

import pytest
import wasmtime

from hive.build import C_SDK_DIR
from tests.sdk.common import WARN, build_c_driver, zig_cc

pytestmark = pytest.mark.slow  # runs the zig compiler

STRICT = [*WARN, "-std=c11", "-Wpedantic", "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-qual"]

(
    SHA,
    SHA_STREAM,
    HMAC,
    HMAC_STREAM,
    HEX_ENC,
    HEX_DEC,
    B64_ENC,
    B64URL_ENC,
    B64_DEC,
    B64URL_DEC,
    CT_EQ,
    JSON_NUM,
    CONFIG,
) = range(13)

# One program, every operation: stdin ([u8 op][u32 len a][a][u32 len b][b])*, stdout ([i32 rc][u32 len][out])*.
# Every buffer is malloc'ed at exactly the size the header documents, so an overrun is a heap error that
# valgrind (and a canary check here) can see.
DRIVER_C = r"""
#include "edge_hive_crypto.h"
#include "edge_hive.h"
#include "edge_hive_crypto.h" /* twice, and after edge_hive.h: the include guard and no clashes */

hive_response *handler(const hive_request *req) {
    (void)req;
    return hive_response_text(200, "unused");
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void emit(int32_t rc, const void *data, size_t n) {
    uint8_t head[8];
    for (int i = 0; i < 4; i++) {
        head[i] = (uint8_t)((uint32_t)rc >> 8 * i);
        head[4 + i] = (uint8_t)(n >> 8 * i);
    }
    fwrite(head, 1, 8, stdout);
    if (n) fwrite(data, 1, n, stdout);
}

/* Feeds `data` in pieces whose sizes cycle through the u32s of `plan`, with empty updates between. */
#define STREAM(update, ctx, data, n, plan, plan_len)                                                     \
    do {                                                                                                 \
        size_t pos_ = 0, k_ = 0;                                                                         \
        while (pos_ < (n)) {                                                                             \
            size_t step_ = (plan_len) >= 4 ? rd32((plan) + 4 * (k_++ % ((plan_len) / 4))) : (n);         \
            if (step_ > (n) - pos_) step_ = (n) - pos_;                                                  \
            update(ctx, (data) + pos_, step_);                                                           \
            update(ctx, (data) + pos_, 0);                                                               \
            pos_ += step_;                                                                               \
        }                                                                                                \
    } while (0)

static void run(uint8_t op, const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
    uint8_t mac[HIVE_SHA256_SIZE];
    switch (op) {
    case 0:
        hive_sha256(a, an, mac);
        emit(0, mac, sizeof mac);
        return;
    case 1: {
        hive_sha256_ctx ctx;
        hive_sha256_init(&ctx);
        STREAM(hive_sha256_update, &ctx, a, an, b, bn);
        hive_sha256_final(&ctx, mac);
        emit(0, mac, sizeof mac);
        return;
    }
    case 2:
        hive_hmac_sha256(a, an, b, bn, mac);
        emit(0, mac, sizeof mac);
        return;
    case 3: { /* key a, message b in pieces of 1, 63, 64, 65, 7 bytes */
        static const uint8_t plan[] = { 1, 0, 0, 0, 63, 0, 0, 0, 64, 0, 0, 0, 65, 0, 0, 0, 7, 0, 0, 0 };
        hive_hmac_sha256_ctx ctx;
        hive_hmac_sha256_init(&ctx, a, an);
        STREAM(hive_hmac_sha256_update, &ctx, b, bn, plan, sizeof plan);
        hive_hmac_sha256_final(&ctx, mac);
        emit(0, mac, sizeof mac);
        return;
    }
    case 4: case 6: case 7: {
        size_t cap = op == 4 ? HIVE_HEX_ENCODED_SIZE(an) : HIVE_BASE64_ENCODED_SIZE(an), n;
        char *out = malloc(cap);
        n = op == 4 ? hive_hex_encode(a, an, out) : op == 6 ? hive_base64_encode(a, an, out)
                                                            : hive_base64url_encode(a, an, out);
        emit(n < cap && out[n] == 0 && strlen(out) == n ? 0 : -99, out, n);
        free(out);
        return;
    }
    case 5: case 8: case 9: {
        size_t cap = op == 5 ? an / 2 : HIVE_BASE64_DECODED_MAX(an), n = 0;
        uint8_t *out = malloc(cap ? cap : 1);
        int rc = op == 5 ? hive_hex_decode((const char *)a, an, out, &n)
               : op == 8 ? hive_base64_decode((const char *)a, an, out, &n)
                         : hive_base64url_decode((const char *)a, an, out, &n);
        emit(rc, out, rc == 0 ? n : 0);
        free(out);
        return;
    }
    case 10:
        emit(hive_ct_equal(a, b, an < bn ? an : bn), NULL, 0);
        return;
    case 11: { /* JSON a, key b */
        double d = -1;
        hive_str json = { (const char *)a, an };
        int rc = hive_json_get_number(json, hive_cstr((hive_str){ (const char *)b, bn }), &d);
        emit(rc, &d, sizeof d);
        return;
    }
    case 12: {
        hive_str v = hive_config(hive_cstr((hive_str){ (const char *)a, an }));
        emit(v.ptr && v.ptr[v.len] == 0 ? 0 : -1, v.ptr, v.len);
        return;
    }
    default:
        emit(-100, NULL, 0);
    }
}

/* An exact-size copy, so reading past an input is a heap error valgrind sees. */
static uint8_t *copy(const uint8_t *p, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    if (n) memcpy(c, p, n);
    return c;
}

int main(void) {
    size_t cap = 1 << 16, len = 0, n;
    uint8_t *in = malloc(cap);
    while (in && (n = fread(in + len, 1, cap - len, stdin)) > 0)
        if ((len += n) == cap) in = realloc(in, cap *= 2);
    if (!in) return 2;
    for (size_t pos = 0; pos + 5 <= len;) {
        uint8_t op = in[pos];
        size_t an = rd32(in + pos + 1);
        uint8_t *a = copy(in + pos + 5, an);
        size_t bn = rd32(in + pos + 5 + an);
        uint8_t *b = copy(in + pos + 9 + an, bn);
        pos += 9 + an + bn;
        run(op, a, an, b, bn);
        free(a);
        free(b);
        hive__release();
    }
    free(in);
    fflush(stdout);
    return 0;
}
"""


Op = tuple[int, bytes, bytes]
Result = tuple[int, bytes]


def _stdin(ops: list[Op]) -> bytes:
    return b"".join(struct.pack("<BI", op, len(a)) + a + struct.pack("<I", len(b)) + b for op, a, b in ops)


def _results(out: bytes, count: int) -> list[Result]:
    results, pos = [], 0
    while pos < len(out):
        rc, n = struct.unpack_from("<iI", out, pos)
        results.append((rc, out[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    assert len(results) == count
    return results


class Native:
    def __init__(self, exe: Path, prefix: list[str] | None = None) -> None:
        self.cmd = [*(prefix or []), str(exe)]

    def run(self, ops: list[Op], env: dict[str, str] | None = None) -> list[Result]:
        proc = subprocess.run(self.cmd, input=_stdin(ops), capture_output=True, timeout=300, env=env or {})
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
        return _results(proc.stdout, len(ops))


class Wasm:
    """The same driver as a WASI command under wasmtime, where size_t is 32 bits."""

    def __init__(self, path: Path, tmp: Path) -> None:
        self.engine = wasmtime.Engine()
        self.module = wasmtime.Module.from_file(self.engine, str(path))
        self.tmp = tmp

    def run(self, ops: list[Op], env: dict[str, str] | None = None) -> list[Result]:
        stdin, stdout = self.tmp / "stdin", self.tmp / "stdout"
        stdin.write_bytes(_stdin(ops))
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        linker.define_func("hive", "log", wasmtime.FuncType([i32, i32, i32], []), lambda *_: None)
        store = wasmtime.Store(self.engine)
        wasi = wasmtime.WasiConfig()
        wasi.stdin_file = str(stdin)
        wasi.stdout_file = str(stdout)
        wasi.env = list((env or {}).items())
        store.set_wasi(wasi)
        try:
            linker.instantiate(store, self.module).exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            assert e.code == 0
        return _results(stdout.read_bytes(), len(ops))


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return build_c_driver(tmp_path_factory.mktemp("crypto"), DRIVER_C)


@pytest.fixture(scope="module", params=["native", "wasm"])
def guest(
    request: pytest.FixtureRequest, builds: dict[str, tuple[Path, str]], tmp_path_factory: pytest.TempPathFactory
) -> Native | Wasm:
    path = builds[request.param][0]
    return Native(path) if request.param == "native" else Wasm(path, tmp_path_factory.mktemp("wasmio"))


def test_compiles_without_warnings(builds: dict[str, tuple[Path, str]]) -> None:
    assert builds["native"][1] == "" and builds["wasm"][1] == ""


@pytest.mark.parametrize("target", [[], ["--target=wasm32-wasi"]], ids=["native", "wasm32-wasi"])
def test_header_alone_passes_strict_warnings(tmp_path: Path, target: list[str]) -> None:
    """The crypto header by itself, with -Wconversion and friends on top of -Wall -Wextra."""
    src = tmp_path / "only.c"
    src.write_text(
        '#include "edge_hive_crypto.h"\n'
        "int main(void) {\n"
        "    unsigned char mac[32];\n"
        '    hive_hmac_sha256("k", 1, "m", 1, mac);\n'
        "    return hive_ct_equal(mac, mac, sizeof mac) ? 0 : 1;\n"
        "}\n"
    )
    assert zig_cc(*target, *STRICT, "-I", C_SDK_DIR, "-o", tmp_path / "only", src).stderr == ""


# ---- SHA-256 and HMAC-SHA256 ---------------------------------------------------------------------------

RNG = random.Random(20261124)
BOUNDARY_LENGTHS = sorted({*range(0, 130), 183, 184, 191, 192, 193, 255, 256, 1000, 4096, 65535})
LONG = RNG.randbytes(1_000_003)  # a long input: crosses every buffering path many times


def test_sha256_known_answers(guest: Native | Wasm) -> None:
    cases = [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
    ]
    for (data, want), (rc, out) in zip(cases, guest.run([(SHA, d, b"") for d, _ in cases]), strict=True):
        assert (rc, out.hex()) == (0, want), data[:10]


def test_sha256_matches_hashlib_at_every_boundary(guest: Native | Wasm) -> None:
    inputs = [RNG.randbytes(n) for n in BOUNDARY_LENGTHS] + [LONG, b"\x00" * 56, b"\xff" * 64]
    for data, (rc, out) in zip(inputs, guest.run([(SHA, d, b"") for d in inputs]), strict=True):
        assert (rc, out) == (0, hashlib.sha256(data).digest()), len(data)


@pytest.mark.parametrize("plan", [[1], [3], [55], [56], [63], [64], [65], [1000], [1, 63, 64, 65, 127, 128]])
def test_sha256_streaming_in_pieces(guest: Native | Wasm, plan: list[int]) -> None:
    inputs = [RNG.randbytes(n) for n in (0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 300, 5000)] + [LONG[:200_001]]
    packed = b"".join(struct.pack("<I", n) for n in plan)
    for data, (rc, out) in zip(inputs, guest.run([(SHA_STREAM, d, packed) for d in inputs]), strict=True):
        assert (rc, out) == (0, hashlib.sha256(data).digest()), (plan, len(data))


# RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (5 truncates the output).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key "
        b"needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize("op", [HMAC, HMAC_STREAM], ids=["one-shot", "streaming"])
def test_hmac_rfc4231(guest: Native | Wasm, op: int) -> None:
    for (_, msg, want), (rc, out) in zip(RFC4231, guest.run([(op, k, m) for k, m, _ in RFC4231]), strict=True):
        assert (rc, out.hex()) == (0, want), msg[:20]


@pytest.mark.parametrize("op", [HMAC, HMAC_STREAM], ids=["one-shot", "streaming"])
def test_hmac_matches_python(guest: Native | Wasm, op: int) -> None:
    cases = [
        (RNG.randbytes(k), RNG.randbytes(m))
        for k in (0, 1, 31, 32, 63, 64, 65, 128, 131, 1000)
        for m in (0, 1, 55, 56, 63, 64, 65, 200)
    ]
    cases += [(b"secret", LONG), (b"", b""), (b"k" * 64, b"")]
    for (key, msg), (rc, out) in zip(cases, guest.run([(op, k, m) for k, m in cases]), strict=True):
        assert (rc, out) == (0, hmac.new(key, msg, hashlib.sha256).digest()), (len(key), len(msg))


# ---- constant-time comparison -----------------------------------------------------------------------


def test_ct_equal(guest: Native | Wasm) -> None:
    base = RNG.randbytes(64)
    cases = [(b"", b"", 1), (b"a", b"a", 1), (base, base, 1), (base[:32], base[:32], 1)]
    for i in (0, 31, 63):
        for bit in range(8):
            flipped = bytearray(base)
            flipped[i] ^= 1 << bit
            cases.append((base, bytes(flipped), 0))
    cases += [(b"\x00" * 32, b"\xff" * 32, 0), (b"\x80", b"\x00", 0), (b"\x01", b"\x00", 0)]
    for (a, b, want), (rc, _) in zip(cases, guest.run([(CT_EQ, a, b) for a, b, _ in cases]), strict=True):
        assert rc == want, (a.hex(), b.hex())


# ---- hex ---------------------------------------------------------------------------------------------


def _hex_oracle(s: bytes) -> bytes | None:
    if len(s) % 2 or any(c not in string.hexdigits.encode() for c in s):
        return None
    return bytes.fromhex(s.decode())


def test_hex(guest: Native | Wasm) -> None:
    datas = [b"", b"\x00", bytes(range(256)), RNG.randbytes(1000)]
    for data, (rc, out) in zip(datas, guest.run([(HEX_ENC, d, b"") for d in datas]), strict=True):
        assert (rc, out) == (0, data.hex().encode())
    texts = [
        b"",
        b"00",
        b"0aFf",
        bytes(range(256)).hex().upper().encode(),
        b"0",
        b"abc",
        b"0g",
        b"g0",
        b" 00",
        b"00 ",
        b"0x00",
        b"\xff\xff",
        b"-1",
        b"+1",
        b"0:",
        b"@A",
        b"`a",
        b"fG",
    ]
    texts += [bytes(RNG.choice(b"0123456789abcdefABCDEFxyz :") for _ in range(RNG.randrange(7))) for _ in range(300)]
    for text, (rc, out) in zip(texts, guest.run([(HEX_DEC, t, b"") for t in texts]), strict=True):
        want = _hex_oracle(text)
        assert (rc, out) == ((-1, b"") if want is None else (0, want)), text


# ---- base64 and base64url ------------------------------------------------------------------------------


def _b64_oracle(s: bytes, url: bool) -> bytes | None:
    """The header's strict rule: valid, canonical, padding absent or complete."""
    alt = b"-_" if url else b"+/"
    if url and (b"+" in s or b"/" in s):  # b64decode would accept them next to the altchars
        return None
    if b"=" in s and len(s) % 4:
        return None
    padded = s + b"=" * (-len(s) % 4) if b"=" not in s else s
    try:
        out = base64.b64decode(padded, altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        return None
    return out if base64.b64encode(out, altchars=alt) == padded else None


def test_base64_encode(guest: Native | Wasm) -> None:
    datas = [RNG.randbytes(n) for n in range(0, 70)] + [bytes(range(256)) * 3, b"\xfb\xff\xbf", LONG[:100_000]]
    ops = [(op, d, b"") for d in datas for op in (B64_ENC, B64URL_ENC)]
    results = iter(guest.run(ops))
    for data in datas:
        assert next(results) == (0, base64.b64encode(data))
        assert next(results) == (0, base64.urlsafe_b64encode(data).rstrip(b"="))


def test_base64_round_trips(guest: Native | Wasm) -> None:
    """Every valid encoding decodes, padded or not, in its own alphabet only."""
    cases: list[tuple[int, bytes, bytes | None]] = []
    for n in [*range(0, 70), 1000, 100_000]:
        data = RNG.randbytes(n)
        std, url = base64.b64encode(data), base64.urlsafe_b64encode(data)
        cases += [
            (B64_DEC, std, data),
            (B64_DEC, std.rstrip(b"="), data),
            (B64URL_DEC, url.rstrip(b"="), data),
            (B64URL_DEC, url, data),
        ]
        if std != url:  # the other alphabet's characters are invalid
            cases += [(B64_DEC, url, None), (B64URL_DEC, std, None)]
    for (op, text, want), (rc, out) in zip(cases, guest.run([(op, t, b"") for op, t, _ in cases]), strict=True):
        assert (rc, out) == ((-1, b"") if want is None else (0, want)), (op, text[:40])


BAD_BASE64 = [
    b"Q",
    b"QUJDR",
    b"QQ=",
    b"QQ===",
    b"Q===",
    b"====",
    b"=",
    b"==",
    b"QQ=A",
    b"Q=Q=",
    b"=QQQ",
    b"QQ==QQ==",
    b"QUJD=",
    b"QUJD====",
    b"QR==",
    b"QR",
    b"QUK=",
    b"QUK",
    b"QUJDRB",
    b"QUJDRE",
    b"QUI\n",
    b" QUI",
    b"QU I",
    b"QUI\x00",
    b"QU\xc3\xa9",
    b"QUI.",
    b"QUI*",
    b"QUI!",
    b"Q+/=",
    b"Q-_=",
]


@pytest.mark.parametrize("op", [B64_DEC, B64URL_DEC], ids=["base64", "base64url"])
def test_base64_decoders_are_strict(guest: Native | Wasm, op: int) -> None:
    url = op == B64URL_DEC
    texts = BAD_BASE64 + [b"", b"QQ", b"QQ==", b"QUI", b"QUI=", b"QUJD", b"-_-_", b"+/+/", b"AA", b"AAA", b"_w", b"/w"]
    alphabet = b"ABCDQRSTgw01+/-_=" + b"=.\n "
    texts += [bytes(RNG.choice(alphabet) for _ in range(RNG.randrange(1, 13))) for _ in range(2000)]
    for text, (rc, out) in zip(texts, guest.run([(op, t, b"") for t in texts]), strict=True):
        want = _b64_oracle(text, url)
        assert (rc, out) == ((-1, b"") if want is None else (0, want)), text
    assert any(_b64_oracle(t, url) is not None for t in texts[len(BAD_BASE64) :])  # the fuzz hits both outcomes


# ---- the edge_hive.h helpers the examples use ----------------------------------------------------------

NAN = object()
NUMBER_CASES: list[tuple[bytes, str, int, object]] = [
    (b'{"exp":1700000000}', "exp", 1, 1700000000.0),
    (b'{"iat":1,"exp":1700000000.5,"sub":"x"}', "exp", 1, 1700000000.5),
    (b' { "exp" : -1.5e3 } ', "exp", 1, -1500.0),
    (b'{"exp":0}', "exp", 1, 0.0),
    (b'{"exp":-0}', "exp", 1, -0.0),
    (b'{"exp":0.1}', "exp", 1, 0.1),
    (b'{"exp":1E+2}', "exp", 1, 100.0),
    (b'{"exp":1e999}', "exp", 1, math.inf),
    (b'{"exp":-1e999}', "exp", 1, -math.inf),
    (b'{"exp":' + b"1" + b"0" * 99 + b"}", "exp", 1, 1e99),  # longer than the stack buffer
    (b'{"exp":"1700000000"}', "exp", 0, NAN),
    (b'{"exp":null}', "exp", 0, NAN),
    (b'{"exp":true}', "exp", 0, NAN),
    (b'{"exp":[1]}', "exp", 0, NAN),
    (b'{"exp":{"v":1}}', "exp", 0, NAN),
    (b'{"exp":1,"exp":"x"}', "exp", 0, NAN),  # the last duplicate wins
    (b'{"exp":"x","exp":2}', "exp", 1, 2.0),
    (b'{"e\\u0078p":5}', "exp", 1, 5.0),
    (b"{}", "exp", 0, 0.0),
    (b'{"nested":{"exp":1},"list":["exp"]}', "exp", 0, 0.0),
    (b'{"expires":1,"ex":2}', "exp", 0, 0.0),
    (b'{"":3}', "", 1, 3.0),
    (b"", "exp", -1, 0.0),
    (b"[1]", "exp", -1, 0.0),
    (b"1", "exp", -1, 0.0),
    (b'{"exp":01}', "exp", -1, 0.0),
    (b'{"exp":1.}', "exp", -1, 0.0),
    (b'{"exp":.5}', "exp", -1, 0.0),
    (b'{"exp":+1}', "exp", -1, 0.0),
    (b'{"exp":-}', "exp", -1, 0.0),
    (b'{"exp":1e}', "exp", -1, 0.0),
    (b'{"exp":0x10}', "exp", -1, 0.0),
    (b'{"exp":NaN}', "exp", -1, 0.0),
    (b'{"exp":Infinity}', "exp", -1, 0.0),
    (b'{"exp":1} x', "exp", -1, 0.0),
    (b'{"exp":1,}', "exp", -1, 0.0),
]


def _check_number(rc: int, out: bytes, want_rc: int, want: object, what: object) -> None:
    (value,) = struct.unpack("<d", out)
    assert rc == want_rc, what
    if want is NAN:
        assert math.isnan(value), what
    else:
        assert isinstance(want, float | int)
        assert value == want and math.copysign(1, value) == math.copysign(1, want), (what, value)


def test_json_get_number(guest: Native | Wasm) -> None:
    results = guest.run([(JSON_NUM, body, key.encode()) for body, key, _, _ in NUMBER_CASES])
    for (body, _, want_rc, want), (rc, out) in zip(NUMBER_CASES, results, strict=True):
        _check_number(rc, out, want_rc, want, body)


def test_json_get_number_matches_python(guest: Native | Wasm) -> None:
    values: list[float | int] = [RNG.uniform(-1e6, 1e6) for _ in range(200)]
    values += [RNG.randrange(-(2**53), 2**53) for _ in range(100)]
    values += [math.ldexp(RNG.random(), RNG.randrange(-1000, 1000)) for _ in range(200)]
    values += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.30000000000000004]
    bodies = [json.dumps({"a": [1, {"exp": 0}], "exp": v, "z": None}).encode() for v in values]
    results = guest.run([(JSON_NUM, b, b"exp") for b in bodies])
    for body, (rc, out) in zip(bodies, results, strict=True):
        _check_number(rc, out, 1, json.loads(body)["exp"], body)  # Python's correctly rounded parse


def test_hive_config(guest: Native | Wasm) -> None:
    env = {"JWT_SECRET": "s3cr=t ü", "EMPTY": "", "OTHER": "x"}
    keys = [b"JWT_SECRET", b"EMPTY", b"OTHER", b"MISSING", b"jwt_secret", b"JWT_SECRE", b""]
    results = guest.run([(CONFIG, k, b"") for k in keys], env=env)
    assert results == [(0, "s3cr=t ü".encode()), (0, b""), (0, b"x"), (0, b""), (0, b""), (0, b""), (0, b"")]


# ---- memory safety -------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_no_memory_errors_under_valgrind(builds: dict[str, tuple[Path, str]]) -> None:
    """Exact-size buffers everywhere: any read or write past what the header documents is a heap error."""
    ops: list[Op] = []
    for n in [*range(0, 20), 55, 56, 63, 64, 65, 200]:
        data = RNG.randbytes(n)
        ops += [
            (SHA, data, b""),
            (SHA_STREAM, data, struct.pack("<I", 7)),
            (HMAC, data, data),
            (HMAC_STREAM, data, data),
            (HEX_ENC, data, b""),
            (HEX_DEC, data.hex().encode(), b""),
            (B64_ENC, data, b""),
            (B64URL_ENC, data, b""),
            (B64_DEC, base64.b64encode(data), b""),
            (B64_DEC, base64.b64encode(data).rstrip(b"="), b""),
            (B64URL_DEC, base64.urlsafe_b64encode(data).rstrip(b"="), b""),
            (CT_EQ, data, data),
        ]
    ops += [(B64_DEC, t, b"") for t in BAD_BASE64] + [(B64URL_DEC, t, b"") for t in BAD_BASE64]
    ops += [(HEX_DEC, t, b"") for t in (b"0", b"0g", b"abc")]
    ops += [(JSON_NUM, body, key.encode()) for body, key, _, _ in NUMBER_CASES]
    d = builds["native"][0].parent
    # valgrind does not know every instruction of the host CPU zig targets by default: build for the baseline.
    zig_cc("-mcpu=baseline", "-std=c11", "-O1", "-g", *WARN, "-I", C_SDK_DIR, "-o", d / "driver-vg", d / "driver.c")
    valgrind = [shutil.which("valgrind") or "valgrind", "--error-exitcode=9", "--leak-check=no", "-q"]
    vg = Native(d / "driver-vg", valgrind)
    results = vg.run(ops)
    assert len(results) == len(ops) and all(rc != -99 for rc, _ in results)
