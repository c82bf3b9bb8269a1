"""The C SDK's own printf (behind hive_fmt, hive_log and hive_response_printf), case by case against libc's:
as wasm32-wasi against wasi-libc's (musl's) printf, which modules used before, and natively against glibc.
Also hive_cat and hive_rfc3339, and that the floating point part is linked only where a float is passed."""

from __future__ import annotations

import itertools
import logging
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import wasmtime

from hive.build import C_SDK_DIR, WASM_CFLAGS
from hive.sandbox import Sandbox
from tests.sdk.common import WARN, RawGuest, decode, guest_log_lines, req, zig_cc

pytestmark = pytest.mark.slow  # runs the zig compiler

# Each CHECK formats through the hive_fmt macro and the formatter itself (with its length, NULs included)
# and compares both with libc's vsnprintf.
PROGRAM = r"""
#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    (void)req;
    return NULL;
}

static int checked, failed;
static char want[40000], got[40000];

static void check(const char *via_macro, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int nw = vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    va_start(ap, fmt);
    int ng = hive__vsnprintf(got, sizeof got, hive__fp, fmt, ap);
    va_end(ap);
    checked++;
    if (nw != ng || (nw > 0 && memcmp(want, got, (size_t)nw)) || (nw >= 0 && strcmp(via_macro, want))) {
        failed++;
        printf("MISMATCH %s\n  libc %d [%s]\n  hive %d [%s] macro [%s]\n", fmt, nw, want, ng, got, via_macro);
    }
}
#define CHECK(...) check(hive_fmt(__VA_ARGS__), __VA_ARGS__)

/* What libc and the SDK both refuse, and what the cases above cannot compare: %n, truncation, counting. */
static int fmt_(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = hive__vsnprintf(buf, cap, hive__fp, fmt, ap);
    va_end(ap);
    return n;
}

static void extras(void) {
    char o[16];
    int n1 = 0;
    signed char hh = 0;
    long long ll = 0;
    checked++;
    if (fmt_(o, sizeof o, "abc%n%5d%hhn%lln", &n1, 7, &hh, &ll) != 8 || n1 != 3 || hh != 8 || ll != 8) failed++, puts("%n");
    checked++;
    if (fmt_(o, 8, "%s", "truncated here") != 14 || strcmp(o, "truncat")) failed++, puts("truncation");
    checked++;
    if (fmt_(NULL, 0, "%.3f|%d", 2.0, 12345) != 11) failed++, puts("counting");
    checked++;
    if (fmt_(o, sizeof o, "%q") != -1 || fmt_(o, sizeof o, "abc%") != -1 || fmt_(o, sizeof o, "%99999999999d", 1) != -1 ||
        fmt_(o, sizeof o, "%1$d", 1) != -1)
        failed++, puts("invalid formats");
    checked++;
    if (strcmp(hive_fmt("%q"), "") || strcmp((hive_fmt)("%.1f", 2.25), "2.2")) failed++, puts("hive_fmt");
}

int main(void) {
CASES
    extras();
    printf("%d checked, %d failed\n", checked, failed);
    return failed != 0;
}
"""

INTS = ["0", "1", "-1", "42", "-42", "2147483647", "(-2147483647-1)", "123456789", "255", "65535"]
DOUBLES = [
    "0.0", "-0.0", "1.0", "-1.0", "0.5", "1.5", "2.5", "0.125", "0.1", "1e-5", "123456.789", "1e21", "1e100",
    "1e-300", "9.999999999", "0.00001234", "3.14159265358979", "1e308", "1.7976931348623157e308",
    "2.2250738585072014e-308", "4.9406564584124654e-324", "1e-320", "100.0", "99.5", "0.05", "5e-5", "999999.5",
    "1234567.0", "65536.0", "1.0/0.0", "-1.0/0.0", "0.0/0.0", "-(0.0/0.0)", "123.456e-10", "0.3", "2.0/3.0", "1e15",
    "1e16", "1e17", "0.95", "9.5", "0.0005", "1e-7", "123456789.0",
]  # fmt: skip
STRINGS = ['"hello"', '""', '"a longer string here"', "(char *)0"]
DENORMALS = {"4.9406564584124654e-324", "1e-320"}
LONG_DOUBLES = [
    "0.0L", "1.0L", "-2.5L", "0.1L", "1e4000L", "1e-4000L", "3.14159265358979323846264338327950288L", "LDBL_MAX",
    "LDBL_MIN", "LDBL_TRUE_MIN", "1.0L/0.0L", "0.0L/0.0L",
]  # fmt: skip


def cases(target: str) -> list[str]:
    """The CHECK lines, always the same ones. Natively some differ by design or by glibc's choice: %p (glibc
    writes "(nil)"), %a of denormals (glibc does not normalize them) and of x87 long doubles (other
    digits), "(null)" cut by a precision, and %#g after a rounding carry (glibc 2.36 drops the zeros:
    "1.e+06" for 999999.5)."""
    native = target == "native"
    rng = random.Random(1729)
    out = []
    flags = ["", "-", "+", " ", "#", "0", "-+", "+0", " 0", "#0", "-#", "+ ", "-0"]
    for fl, w, p, c in itertools.product(flags, ["", "1", "8", "25"], ["", ".0", ".1", ".3", ".10", ".40"], "diuxXo"):
        out += [f'CHECK("%{fl}{w}{p}{c}", {v});' for v in rng.sample(INTS, 2)]
    lengths = {
        "hh": ["0", "255", "-128", "300"],
        "h": ["65535", "-32768", "70000"],
        "l": ["-1L", "2147483647L"],
        "ll": ["(-9223372036854775807LL-1)", "9223372036854775807LL", "123LL"],
        "j": ["(intmax_t)-5"],
        "z": ["(size_t)77", "(size_t)-1"],
        "t": ["(ptrdiff_t)-3"],
    }
    for lm, values in lengths.items():
        for c, fl, v in itertools.product("diuxo", ["", "#", "+"], values):
            out.append(f'CHECK("%{fl}{lm}{c}", {v});')
    fflags = ["", "-", "+", " ", "#", "0", "+0", "#0", "- "]
    for c, fl, w, p in itertools.product(
        "fFeEgGaA", fflags, ["", "12", "30"], ["", ".0", ".1", ".2", ".6", ".17", ".60"]
    ):
        if native and "#" in fl and c in "gG":
            continue
        values = [v for v in DOUBLES if not (native and c in "aA" and v in DENORMALS)]
        out += [f'CHECK("%{fl}{w}{p}{c}", {v});' for v in rng.sample(values, 3)]
    for c, v in itertools.product("fegaEGA", DOUBLES):
        if not (native and c in "aA" and v in DENORMALS):
            out += [f'CHECK("%.{rng.choice([0, 1, 3, 5, 8, 13, 20, 25, 30, 33])}{c}", {v});', f'CHECK("%{c}", {v});']
    for c, p, v in itertools.product("fegaGE", ["", ".0", ".5", ".25", ".40"], LONG_DOUBLES):
        if not (native and c == "a"):
            out.append(f'CHECK("%{p}L{c}", {v});')
    out += [
        'CHECK("%.1100f", 4.9406564584124654e-324);',  # every digit of the smallest double
        'CHECK("%.1074e", 4.9406564584124654e-324);',
        'CHECK("%.0f", 1.7976931348623157e308);',
        'CHECK("%.11600Lf", LDBL_TRUE_MIN);',
        'CHECK("%.12000Le", LDBL_TRUE_MIN);',
        'CHECK("%Lf", LDBL_MAX);',
        'CHECK("%.0f|%.0f|%.0f|%.0f|%.1f|%.1f|%.2f", 0.5, 1.5, 2.5, 0.501, 0.25, 0.35, 1.005);',  # half to even
        'CHECK("%g|%g|%g|%g|%.3g|%.20g|%.0g", 100000.0, 1000000.0, 0.0001, 0.00001, 99950.0, 0.1, 0.5);',
        'CHECK("%5.1f|%-8.3e|%+g|%d|%s", 3.14159, -2.5e-7, 1e9, 7, "mixed");',
        'CHECK("%*.*f|%.*f|%*g", 10, 2, 3.14159, -1, 2.5, -9, 0.5);',
    ]
    if not native:
        out.append('CHECK("%#g|%#.6g|%#030g|%#.2G|%#g", 1e6, 999999.5, 1e6, 99.5, 0.0);')
    for fl, w, p, v in itertools.product(["", "-", "0"], ["", "3", "10"], ["", ".0", ".2", ".7"], STRINGS):
        if not (native and v == "(char *)0" and p):
            out.append(f'CHECK("%{fl}{w}{p}s", {v});')
    for fl, w, v in itertools.product(["", "-", "0"], ["", "3"], ["65", "0x7e", "32", "0"]):
        out.append(f'CHECK("%{fl}{w}c|", {v});')
    out += [
        'CHECK("%lc|%5lc|%-3lc|%lc|", (wint_t)65, (wint_t)66, (wint_t)67, (wint_t)0);',
        'CHECK("%ls|%.2ls|%8ls|%-8ls|%ls|", L"abc", L"xyz", L"wide", L"left", L"");',
        'CHECK("100%% sure %s", "yes");',
        'CHECK("%*d|%-*d|%*d", 5, 42, 5, 42, -5, 42);',
        'CHECK("%*.*s|", 8, 3, "abcdef");',
        'CHECK("%05d|%-05d|%0-5d|%.0d|%.0x|%#.0o|%#o|%#x|%#X", 42, 42, 42, 0, 0, 0, 0, 0, 0);',
        'CHECK("%+.3d|% 08.3d|%s=%d;%s=%u", 7, -7, "a", -1, "b", 4000000000u);',
        'CHECK("no conversions");',
        'CHECK("%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d '
        '%d %d %.1f", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, '
        "28, 29, 30, 31, 32, 33, 34, 35, 0.5);",  # past the 31 arguments the macro looks at
    ]
    if not native:
        out.append('CHECK("%p|%20p|%-12p|%p|%5p|%05p|%.3p|", (void *)0x1234, (void *)0, (void *)0xdeadbeef, (void *)0, '
                   '(void *)0x10, (void *)0x1, (void *)0x2);')  # fmt: skip
    return out


def program(folder: Path, target: str) -> Path:
    src = folder / f"fmt_{target}.c"
    src.write_text(PROGRAM.replace("CASES", "\n".join(cases(target))))
    return src


def test_matches_wasi_libc_printf(tmp_path: Path) -> None:
    wasm = tmp_path / "fmt.wasm"
    zig_cc("--target=wasm32-wasi", "-Os", *WARN, "-Wno-format", "-I", C_SDK_DIR, "-o", wasm, program(tmp_path, "wasm"))
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.stdout_file = str(tmp_path / "out.txt")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    instance = linker.instantiate(store, wasmtime.Module.from_file(engine, str(wasm)))
    start = instance.exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    code = 0
    try:
        start(store)
    except wasmtime.ExitTrap as e:
        code = e.code
    out = (tmp_path / "out.txt").read_text(errors="replace")
    assert code == 0 and out.endswith(f"{len(cases('wasm')) + 5} checked, 0 failed\n"), out[-4000:]


def test_matches_glibc_printf(tmp_path: Path) -> None:
    exe = tmp_path / "fmt"
    flags = ("-std=c11", "-O1", "-fsanitize=undefined", "-fsanitize-trap=undefined", *WARN, "-Wno-format")
    zig_cc(*flags, "-I", C_SDK_DIR, "-o", exe, program(tmp_path, "native"))
    proc = subprocess.run([exe], capture_output=True, text=True, errors="replace", timeout=120)
    assert proc.returncode == 0 and proc.stdout.endswith(f"{len(cases('native')) + 5} checked, 0 failed\n"), (
        proc.stdout[-4000:]
    )


# ---- hive_cat and hive_rfc3339, natively ---------------------------------------------------------------

TIMES = [0, 1, 59, 86399, 86400, 951782400, 951868800, 1700000000, 1709164800, 4107542400, 4107628800, 253402300799]
CLAMPED = {-5: 0, 253402300800: 253402300799, 2**62: 253402300799}


def test_rfc3339_and_cat(tmp_path: Path) -> None:
    calls = "\n".join(f"    hive_rfc3339({t}LL, stamp), puts(stamp);" for t in [*TIMES, *CLAMPED])
    src = tmp_path / "t.c"
    src.write_text(
        '#include "edge_hive.h"\nhive_response *handler(const hive_request *r) { (void)r; return NULL; }\n'
        "int main(void) {\n    char stamp[HIVE_RFC3339_SIZE];\n" + calls + "\n"
        '    puts(hive_cat("a", "", "bc", hive_json_escape(HIVE_STR("\\"q\\"")), "!"));\n'
        '    puts(hive_cat("only"));\n'
        "    return 0;\n}\n"
    )
    flags = ("-std=c11", "-O1", "-fsanitize=undefined", "-fsanitize-trap=undefined", *WARN)
    zig_cc(*flags, "-I", C_SDK_DIR, "-o", tmp_path / "t", src)
    lines = subprocess.run([tmp_path / "t"], capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    expected = [
        datetime.fromtimestamp(CLAMPED.get(t, t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in [*TIMES, *CLAMPED]
    ]
    assert lines == [*expected, 'abc\\"q\\"!', "only"]


# ---- floating point only where a float is passed -----------------------------------------------------

HANDLER = r"""
#include "edge_hive.h"
hive_response *handler(const hive_request *req) {
    (void)req;
    hive_log(HIVE_LOG_INFO, %s);
    hive_response *r = hive_response_new(200);
    hive_response_printf(r, %s);
    return r;
}
"""


def module(folder: Path, name: str, call: str) -> bytes:
    src = folder / f"{name}.c"
    src.write_text(HANDLER % (call, call))
    zig_cc(*WASM_CFLAGS, *WARN, "-I", C_SDK_DIR, "-o", folder / f"{name}.wasm", src)
    return (folder / f"{name}.wasm").read_bytes()


def test_floating_point_is_linked_only_when_a_float_is_passed(
    tmp_path: Path, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    ints = module(tmp_path, "ints", '"%d|%5s|%#x", 42, "ab", 255')
    floats = module(tmp_path, "floats", '"%d|%.3f|%g|%Le", 42, 2.5f, 1e-7, 1.5L')
    assert len(floats) - len(ints) > 2000  # the float formatter and its big-number arithmetic
    bodies = [decode(RawGuest(sandbox, wasm).call(req())).body for wasm in (ints, floats)]
    assert bodies == [b"42|   ab|0xff", b"42|2.500|1e-07|1.500000e+00"]
    assert [m for _, m in guest_log_lines(caplog)] == ["42|   ab|0xff", "42|2.500|1e-07|1.500000e+00"]
