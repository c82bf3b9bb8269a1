/* edge_hive.h: the Edge Hive C SDK, guest ABI v1 (see docs/abi.md). One header, no other files.
 *
 * A function is one .c file that includes this header and defines `handler`:
 *
 *     #include "edge_hive.h"
 *
 *     hive_response *handler(const hive_request *req) {
 *         hive_str name;
 *         if (hive_json_get_string(req->body, "name", &name) != 1) name = HIVE_STR("World");
 *         hive_log(HIVE_LOG_INFO, "%.*s %.*s", HIVE_FMT(req->method), HIVE_FMT(req->path));
 *         return hive_response_json(200, hive_fmt("{\"hello\":\"%s\"}", hive_json_escape(name)));
 *     }
 *
 * Build it with `edge-hive function build <folder>` (zig cc --target=wasm32-wasi -Os -flto -mexec-model=reactor).
 * The header defines the ABI exports itself, so include it in exactly one translation unit.
 *
 * Request (read-only, valid until handler returns):
 *     req->method, req->path, req->query (raw, no '?'), req->body   hive_str: (ptr, len), binary-safe,
 *                                                                   NOT NUL-terminated
 *     req->headers[i].name / .value, i < req->header_count          in arrival order, names lowercase
 *     hive_request_header(req, "Content-Type")                      first value, case-insensitive;
 *                                                                   .ptr == NULL when absent
 *     hive_request_header_next(req, "accept", &it, &value)          every value of a repeated header
 *     hive_auth_claims(req)                                         the verified JWT claims as JSON
 *                                                                   text; .ptr == NULL without them
 * Response:
 *     hive_response_new(status), hive_response_add_header(res, name, value) (or _add_header_n with
 *     lengths), hive_response_set_body(res, data, len), hive_response_append(res, data, len),
 *     hive_response_printf(res, fmt, ...),
 *     hive_response_set_status(res, status); one-liners hive_response_json(status, json) and
 *     hive_response_text(status, text). Return the response from handler; returning NULL sends a 500.
 * Helpers: hive_log(level, fmt, ...), hive_fmt(fmt, ...), hive_cat(s1, s2, ...), hive_cstr(s),
 *     hive_str_of(cstr), hive_str_eq(s, cstr), hive_json_get_string(json, key, &out),
 *     hive_json_get_number(json, key, &d), hive_json_escape(s), hive_tmp_alloc(n), hive_config(key),
 *     hive_now() (Unix seconds), hive_rfc3339(secs, out) ("2026-11-24T19:40:00Z").
 * Formatting: hive_log, hive_fmt and hive_response_printf take printf formats (see "formatting" below:
 *     the SDK's own printf, not libc's, which would add about 18 KB to the module). They are macros that
 *     link the floating point part only where a float argument is passed; (hive_fmt)(...) calls the
 *     function. hive_cat joins strings with no formatter at all.
 * Configuration: hive_config("KEY") is the value the deploy manifest's "config" gave KEY (it reaches the
 *     guest as its WASI environment, so getenv works too), or "" when unset. Never log secrets.
 * Outbound HTTP (the manifest's "allowed_hosts" grants hosts; default deny):
 *     hive_fetch(&(hive_fetch_request){ HIVE_STR("POST"), url, headers, n, body }) -> hive_fetch_response
 *     (.status, .headers, .header_count, .body, or .error); hive_fetch_get(url); hive_fetch_header(&res,
 *     name); hive_fetch_send(&freq, &err) -> handle and hive_fetch_wait(handle) (0: whichever finishes
 *     first) to run several at once.
 * Key-value stores (the manifest's "kv" grants stores by name): hive_kv_get(store, key) -> .found,
 *     .value; hive_kv_set(store, key, value, ttl_ms); hive_kv_delete(store, key) -> .deleted;
 *     hive_kv_list(store, prefix, cursor, limit) -> .keys, .count, .cursor (empty on the last page);
 *     hive_kv_incr(store, key, delta, ttl_ms) -> .value. Keys and values are hive_str, binary-safe.
 *     Every fetch and KV call returns its error as a value (.error, a hive_error: code and message;
 *     HIVE_OK(err)), never aborts; a module that calls none of them imports none of the host calls.
 *
 * Memory: whatever the SDK hands out (responses, hive_fmt, hive_cstr, JSON results, hive_tmp_alloc) is
 * freed by the SDK when the request ends; never free it and never keep it across requests. If memory
 * runs out anywhere, the response becomes a 500 and the helpers return "" (or a no-op response), so a
 * handler needs no NULL checks. Builders reject (return -1, log a warning) headers the host would
 * refuse: names that are not HTTP tokens or longer than 256 bytes, values with CR, LF or NUL or
 * longer than 16 KiB, more than 256 headers.
 *
 * Natively (no __wasm__) the same code compiles without the exports, so a handler can be unit-tested:
 * call hive_dispatch(envelope, len, &out_len) and read the response envelope it returns.
 */
#ifndef EDGE_HIVE_H
#define EDGE_HIVE_H

#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#define HIVE_ABI_VERSION 1
#define HIVE_MAX_HEADERS 256
#define HIVE_MAX_HEADER_NAME 256
#define HIVE_MAX_HEADER_VALUE 16384
#define HIVE_JSON_MAX_DEPTH 64

enum { HIVE_LOG_DEBUG = 0, HIVE_LOG_INFO = 1, HIVE_LOG_WARN = 2, HIVE_LOG_ERROR = 3 };

typedef struct hive_str { const char *ptr; size_t len; } hive_str;
typedef struct hive_header { hive_str name, value; } hive_header;
typedef struct hive_request {
    hive_str method, path, query, body;
    const hive_header *headers;
    size_t header_count;
} hive_request;
typedef struct hive_response hive_response;

/* A hive_str from a string literal, and the two printf arguments for "%.*s". */
#define HIVE_STR(lit) ((hive_str){ (lit), sizeof(lit) - 1 })
#define HIVE_FMT(s) (int)(s).len, (s).ptr

/* You write this one. */
hive_response *handler(const hive_request *req);

#define HIVE_FN static __attribute__((unused))
#define HIVE_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- formatting ------------------------------------------------------------------------------- */

/* hive_fmt, hive_log and hive_response_printf format with the SDK's own printf, not libc's, which adds
 * about 18 KB to a module (software long double arithmetic, locale and errno tables). It prints what
 * wasi-libc's (musl's) printf prints: ISO C's conversions (d i u o x X c s p n % f F e E g G a A), flags,
 * width and precision (also as *) and length modifiers (hh h l ll j z t L), floating point exact to
 * the last digit (long double too) and rounded half to even; %lc and %ls write UTF-8. POSIX positional
 * arguments (%1$d) and %m are not supported: the call fails as for an invalid format.
 *
 * The floating point part (about 3 KB) is linked only into modules that pass a float, double or long
 * double to one of the three: their macros look at the arguments' types (HIVE__FP below). */

enum { HIVE__LEFT = 1 << ('-' - ' '), HIVE__PLUS = 1 << ('+' - ' '), HIVE__SPACE = 1 << 0,
       HIVE__ALT = 1 << ('#' - ' '), HIVE__ZERO = 1 << ('0' - ' '),
       HIVE__FLAGS = HIVE__LEFT | HIVE__PLUS | HIVE__SPACE | HIVE__ALT | HIVE__ZERO };

/* Output that stops storing at cap but keeps counting, as vsnprintf does. */
typedef struct hive__sink { char *p; size_t cap, n; } hive__sink;

static void hive__out(hive__sink *s, const char *d, size_t len) {
    if (s->n < s->cap) memcpy(s->p + s->n, d, len < s->cap - s->n ? len : s->cap - s->n);
    s->n += len;
}

static void hive__fill(hive__sink *s, char c, size_t count) {
    char chunk[32];
    memset(chunk, c, sizeof chunk);
    for (; count > sizeof chunk && s->n < s->cap; count -= sizeof chunk) hive__out(s, chunk, sizeof chunk);
    if (count <= sizeof chunk) hive__out(s, chunk, count);
    else s->n += count; /* past cap: only counted */
}

/* Pads a field of `len` bytes to `width` with c, unless a flag in `fl` says the padding goes elsewhere. */
static void hive__pad(hive__sink *s, char c, size_t width, size_t len, unsigned fl) {
    if (!(fl & (HIVE__LEFT | HIVE__ZERO)) && len < width) hive__fill(s, c, width - len);
}

/* Prefix, zeros up to `p` digits, then the digits a..z, padded to `w` as the flags say. */
static void hive__emit(hive__sink *s, unsigned fl, size_t w, size_t p, const char *prefix, const char *a,
                       const char *z) {
    size_t pl = strlen(prefix), len = pl + p;
    hive__pad(s, ' ', w, len, fl);
    hive__out(s, prefix, pl);
    hive__pad(s, '0', w, len, fl ^ HIVE__ZERO);
    hive__fill(s, '0', p - (size_t)(z - a));
    hive__out(s, a, (size_t)(z - a));
    hive__pad(s, ' ', w, len, fl ^ HIVE__LEFT);
}

static const char hive__xdigits[] = "0123456789abcdef0123456789ABCDEF";

/* A floating point conversion: takes its argument from *ap and writes it. */
typedef void hive__fp_fn(hive__sink *s, unsigned fl, int w, int p, int t, int long_double, va_list *ap);

/* Positions from..to of the decimal string d[0..len), zeros outside it. */
HIVE_FN void hive__run(hive__sink *s, const char *d, long long len, long long from, long long to) {
    while (from < to) {
        long long end = from < 0 ? (to < 0 ? to : 0) : from < len ? (to < len ? to : len) : to;
        if (from >= 0 && from < len) hive__out(s, d + from, (size_t)(end - from));
        else hive__fill(s, '0', (size_t)(end - from));
        from = end;
    }
}

#define HIVE__BASE 1000000000u
#define HIVE__LIMBS ((LDBL_MAX_EXP + LDBL_MANT_DIG) * 7 / 89 + 4) /* base-1e9 limbs of the longest value */
static uint32_t hive__big[HIVE__LIMBS];
static char hive__fdigits[HIVE__LIMBS * 9];

/* big = big * f + add (little-endian base-1e9 limbs); returns the new limb count. */
HIVE_FN size_t hive__mul(size_t n, uint32_t f, uint32_t add) {
    uint64_t c = add;
    size_t i = 0;
    for (; i < n; i++, c /= HIVE__BASE) {
        c += (uint64_t)hive__big[i] * f;
        hive__big[i] = (uint32_t)(c % HIVE__BASE);
    }
    for (; c; c /= HIVE__BASE) hive__big[i++] = (uint32_t)(c % HIVE__BASE);
    return i;
}

typedef unsigned __int128 hive__u128;

/* m * 2^e2 (m up to 113 bits) in conversion t (e, f, g or a, any case), after `sign`. */
HIVE_FN void hive__float(hive__sink *s, unsigned fl, size_t w, long long p, int t, const char *sign, hive__u128 m,
                         long long e2) {
    char head[4], tail[8], *h = head, *x = tail + sizeof tail, *d = hive__fdigits;
    const char *xd = hive__xdigits + (t & 32 ? 0 : 16);
    long long len, E, ex;
    int upper = !(t & 32);
    t |= 32;
    while (*sign) *h++ = *sign++;
    if (!m) e2 = 0;
    if (t == 'a') {
        /* h.hhh: the leading bit, then 28 hex digits (112 bits); a binary exponent. */
        if (m)
            for (e2 += 112; !(m >> 112); m <<= 1) e2--;
        if (p >= 0 && p < 28) {
            int drop = 4 * (28 - (int)p);
            hive__u128 rem = m & (((hive__u128)1 << drop) - 1), half = (hive__u128)1 << (drop - 1);
            m >>= drop;
            m = (m + (rem > half || (rem == half && (m & 1)))) << drop;
        }
        for (int i = 0; i <= 28; i++) d[i] = xd[m >> (112 - 4 * i) & 15];
        for (len = 29; len > 1 && d[len - 1] == '0';) len--;
        if (p < 0) p = len - 1;
        *h++ = '0';
        *h++ = upper ? 'X' : 'x';
        E = 0;
        ex = e2;
        *--x = (char)('0' + (ex < 0 ? -ex : ex) % 10); /* the exponent, at least one digit */
        for (long long a = (ex < 0 ? -ex : ex) / 10; a; a /= 10) *--x = (char)('0' + a % 10);
        *--x = ex < 0 ? '-' : '+';
        *--x = upper ? 'P' : 'p';
    } else {
        /* The exact decimal digits: m << e2, or m * 5^-e2 with the point moved left -e2 places. */
        size_t n = 0;
        for (int sh = 112; sh >= 0; sh -= 16) n = hive__mul(n, 65536, (uint32_t)(m >> sh) & 0xFFFF);
        long long e10 = e2 < 0 ? e2 : 0;
        for (int k; e2 > 0; e2 -= k) n = hive__mul(n, 1u << (k = e2 < 29 ? (int)e2 : 29), 0);
        for (; e2 < 0; e2 += 13) {
            uint32_t f = 1;
            for (long long j = e2 < -13 ? -13 : e2; j < 0; j++) f *= 5;
            n = hive__mul(n, f, 0);
        }
        char *q = d;
        for (size_t i = n; i-- > 0; q += 9)
            for (uint32_t v = hive__big[i], k = 9; k-- > 0; v /= 10) q[k] = (char)('0' + v % 10);
        if (!n) *q++ = '0';
        for (len = q - d; len > 1 && *d == '0'; len--) d++;
        E = len - 1 + e10;
        if (p < 0) p = 6;
        /* Keep P significant digits, rounding half to even. */
        long long P = t == 'e' ? p + 1 : t == 'f' ? E + 1 + p : p ? p : 1;
        if (P < len) {
            int up = 0;
            if (P >= 0) {
                int rest = 0;
                for (long long i = P + 1; i < len && !rest; i++) rest = d[i] != '0';
                up = d[P] > '5' || (d[P] == '5' && (rest || (P > 0 && (d[P - 1] & 1))));
            }
            len = P < 0 ? 0 : P;
            if (up) {
                while (len > 0 && d[len - 1] == '9') len--;
                if (len) d[len - 1]++;
                else *(d = hive__fdigits) = '1', len = 1, E++;
            }
        }
        while (len > 0 && d[len - 1] == '0') len--;
        if (t == 'g') {
            /* %f when the exponent is from -4 to below the precision, else %e; trailing zeros go. */
            t = P > E && E >= -4 ? 'f' : 'e';
            p = t == 'f' ? P - 1 - E : P - 1;
            long long have = t == 'f' ? len - 1 - E : len - 1;
            if (!(fl & HIVE__ALT) && p > have) p = have > 0 ? have : 0;
        }
        if (t == 'e') {
            ex = E < 0 ? -E : E;
            do *--x = (char)('0' + ex % 10); while ((ex /= 10) || x > tail + sizeof tail - 2);
            *--x = E < 0 ? '-' : '+';
            *--x = upper ? 'E' : 'e';
            E = 0;
        }
    }
    int point = p > 0 || (fl & HIVE__ALT);
    long long hl = h - head, xl = tail + sizeof tail - x;
    size_t total = (size_t)(hl + (E < 0 ? 1 : E + 1) + point + p + xl);
    hive__pad(s, ' ', w, total, fl);
    hive__out(s, head, (size_t)hl);
    hive__pad(s, '0', w, total, fl ^ HIVE__ZERO);
    if (E < 0) hive__out(s, "0", 1);
    else hive__run(s, d, len, 0, E + 1);
    if (point) hive__out(s, ".", 1);
    hive__run(s, d, len, E + 1, E + 1 + p);
    hive__out(s, x, (size_t)xl);
    hive__pad(s, ' ', w, total, fl ^ HIVE__LEFT);
}

/* Splits IEEE bits (mantissa width, exponent width, whether the integer bit is explicit) into sign,
 * mantissa and binary exponent; returns 1 for infinity, 2 for NaN, else 0. */
HIVE_FN int hive__split(hive__u128 bits, int mbits, int ebits, int explicit_one, int *neg, hive__u128 *m,
                       long long *e2) {
    long long emax = (1LL << ebits) - 1, e = (long long)(bits >> mbits) & emax;
    *neg = (int)(bits >> (mbits + ebits) & 1);
    *m = bits & (((hive__u128)1 << mbits) - 1);
    if (e == emax) return (explicit_one ? *m << (129 - mbits) : *m) ? 2 : 1;
    if (!explicit_one && e) *m |= (hive__u128)1 << mbits;
    *e2 = (e ? e : 1) - (emax >> 1) - mbits + explicit_one;
    return 0;
}

/* The hive__fp_fn of hive_fmt and friends: inf and nan, or hive__float. */
HIVE_FN void hive__fp(hive__sink *s, unsigned fl, int w, int p, int t, int long_double, va_list *ap) {
    hive__u128 m, bits = 0;
    long long e2 = 0;
    int neg, kind;
    if (long_double) {
        long double x = va_arg(*ap, long double);
        memcpy(&bits, &x, sizeof x < sizeof bits ? sizeof x : sizeof bits);
#if LDBL_MANT_DIG == 113
        kind = hive__split(bits, 112, 15, 0, &neg, &m, &e2);
#elif LDBL_MANT_DIG == 64
        kind = hive__split(bits, 64, 15, 1, &neg, &m, &e2);
#else
        kind = hive__split(bits, 52, 11, 0, &neg, &m, &e2);
#endif
    } else {
        double x = va_arg(*ap, double);
        uint64_t b;
        memcpy(&b, &x, sizeof b);
        kind = hive__split(b, 52, 11, 0, &neg, &m, &e2);
    }
    const char *sign = neg ? "-" : fl & HIVE__PLUS ? "+" : fl & HIVE__SPACE ? " " : "";
    if (kind) { /* inf and nan: no zero padding */
        const char *word = kind == 1 ? (t & 32 ? "inf" : "INF") : (t & 32 ? "nan" : "NAN");
        hive__emit(s, fl & ~(unsigned)HIVE__ZERO, (size_t)w, 3, sign, word, word + 3);
    } else {
        hive__float(s, fl, (size_t)w, p, t, sign, m, e2);
    }
}

static size_t hive__utf8_put(uint32_t cp, char *out);

/* UTF-8 of a wide character (up to 4 bytes); -1 for a surrogate or a value past U+10FFFF. */
static int hive__wc(wchar_t c, char *out) {
    uint32_t u = (uint32_t)c;
    return (u >= 0xD800 && u < 0xE000) || u > 0x10FFFF ? -1 : (int)hive__utf8_put(u, out);
}

/* A decimal number in a format (a width or precision); -1 past INT_MAX. */
static int hive__num(const char **f) {
    int v = 0;
    for (; **f >= '0' && **f <= '9'; ++*f) v = v < 0 || v > (INT_MAX - (**f - '0')) / 10 ? -1 : v * 10 + (**f - '0');
    return v;
}

/* An integer argument of length modifier lm (hh -2, h -1, none 0, l 1, ll 2, j 3, z 4, t 5; L is 6),
 * cut to its type's width and, for a signed conversion, sign-extended. */
static uintmax_t hive__int(va_list *ap, int lm, int sign) {
    uintmax_t v;
    int bits = lm == -2 ? 8 : lm == -1 ? 16 : (int)sizeof(int) * 8;
    switch (lm) {
    case 1: v = sign ? (uintmax_t)va_arg(*ap, long) : va_arg(*ap, unsigned long), bits = (int)sizeof(long) * 8; break;
    case 2: v = sign ? (uintmax_t)va_arg(*ap, long long) : va_arg(*ap, unsigned long long), bits = 64; break;
    case 3: v = sign ? (uintmax_t)va_arg(*ap, intmax_t) : va_arg(*ap, uintmax_t), bits = 64; break;
    case 4: v = va_arg(*ap, size_t), bits = (int)sizeof(size_t) * 8; break;
    case 5: v = (uintmax_t)va_arg(*ap, ptrdiff_t), bits = (int)sizeof(ptrdiff_t) * 8; break;
    default: v = sign ? (uintmax_t)va_arg(*ap, int) : va_arg(*ap, unsigned);
    }
    int sh = 64 - bits; /* the value as the conversion's type: truncated, then sign-extended or not */
    return sign ? (uintmax_t)((intmax_t)(v << sh) >> sh) : v << sh >> sh;
}

/* vsnprintf: the full output's length, or -1 for an invalid format or one longer than INT_MAX. A
 * floating point conversion needs fp (NULL: an invalid format). */
static int hive__vsnprintf(char *buf, size_t cap, hive__fp_fn *fp, const char *f, va_list args) {
    hive__sink out = { buf, cap ? cap - 1 : 0, 0 }, *s = &out;
    va_list ap;
    int rc = -1;
    va_copy(ap, args);
    while (*f && s->n <= INT_MAX) {
        const char *lit = f;
        while (*f && *f != '%') f++;
        hive__out(s, lit, (size_t)(f - lit));
        if (!*f++) break;
        unsigned fl = 0;
        for (; (unsigned)*f - ' ' < 32 && (HIVE__FLAGS >> (*f - ' ') & 1); f++) fl |= 1u << (*f - ' ');
        int w, p = -1;
        if (*f == '*') {
            f++;
            if ((w = va_arg(ap, int)) < 0) { /* a negative * width: left-justified */
                if (w == INT_MIN) goto done;
                fl |= HIVE__LEFT, w = -w;
            }
        } else if ((w = hive__num(&f)) < 0) {
            goto done;
        }
        if (*f == '.') {
            if (*++f == '*') {
                f++;
                if ((p = va_arg(ap, int)) < 0) p = -1; /* a negative * precision counts as none */
            } else if ((p = hive__num(&f)) < 0) {
                goto done;
            }
        }
        int lm = 0, xp = p >= 0;
        const char *lms = "jztL", *at;
        if (*f == 'h') lm = *++f == 'h' ? (f++, -2) : -1;
        else if (*f == 'l') lm = *++f == 'l' ? (f++, 2) : 1;
        else if (*f && (at = strchr(lms, *f))) lm = 3 + (int)(at - lms), f++;
        int t = *f++;
        if (fl & HIVE__LEFT) fl &= ~(unsigned)HIVE__ZERO;
        char num[3 * sizeof(uintmax_t)], *e = num + sizeof num, mb[4];
        const char *a = e, *z = e, *prefix = "";
        uintmax_t v = 0;
        switch (t) {
        case '%':
            hive__out(s, "%", 1);
            continue;
        case 'n': {
            void *dst = va_arg(ap, void *);
            size_t n = s->n;
            switch (lm) {
            case -2: *(signed char *)dst = (signed char)n; break;
            case -1: *(short *)dst = (short)n; break;
            case 1: *(long *)dst = (long)n; break;
            case 2: *(long long *)dst = (long long)n; break;
            case 3: *(intmax_t *)dst = (intmax_t)n; break;
            case 4: *(size_t *)dst = n; break;
            case 5: *(ptrdiff_t *)dst = (ptrdiff_t)n; break;
            default: *(int *)dst = (int)n;
            }
            continue;
        }
        case 'e': case 'f': case 'g': case 'a': case 'E': case 'F': case 'G': case 'A':
            if (!fp) goto done;
            fp(s, fl, w, p, t, lm == 6, &ap);
            continue;
        case 'c':
        case 's':
            if (lm == 1) { /* %lc and %ls: UTF-8, whole characters within the precision */
                wchar_t one[2] = { 0, 0 };
                const wchar_t *ws = t == 'c' ? one : va_arg(ap, const wchar_t *);
                if (t == 'c' && !(one[0] = (wchar_t)va_arg(ap, wint_t))) goto narrow;
                if (!ws) ws = L"(null)";
                size_t l = 0, lim = t == 's' && p >= 0 ? (size_t)p : SIZE_MAX;
                for (const wchar_t *q = ws; l < lim && *q; q++) {
                    int k = hive__wc(*q, mb);
                    if (k < 0) goto done;
                    if ((size_t)k > lim - l) break;
                    l += (size_t)k;
                }
                hive__pad(s, ' ', (size_t)w, l, fl & ~(unsigned)HIVE__ZERO);
                for (size_t k, done = 0; done < l; done += k) hive__out(s, mb, k = (size_t)hive__wc(*ws++, mb));
                hive__pad(s, ' ', (size_t)w, l, fl ^ HIVE__LEFT);
                continue;
            }
            if (t == 'c') {
                v = (unsigned char)va_arg(ap, int);
            narrow:
                *--e = (char)v;
                a = e;
            } else {
                a = va_arg(ap, const char *);
                if (!a) a = "(null)";
                for (z = a; (p < 0 || z - a < p) && *z;) z++;
            }
            p = (int)(z - a);
            fl &= ~(unsigned)HIVE__ZERO;
            break;
        case 'p':
            v = (uintptr_t)va_arg(ap, void *);
            if (xp && p < 2 * (int)sizeof(void *)) p = 2 * (int)sizeof(void *); /* as musl: only a given one */
            t = 'x';
            fl |= HIVE__ALT;
            goto number;
        case 'd': case 'i':
            v = hive__int(&ap, lm, 1);
            prefix = (intmax_t)v < 0 ? (v = 0 - v, "-") : fl & HIVE__PLUS ? "+" : fl & HIVE__SPACE ? " " : "";
            goto number;
        case 'u': case 'o': case 'x': case 'X':
            v = hive__int(&ap, lm, 0);
        number: {
            unsigned base = t == 'o' ? 8 : (t | 32) == 'x' ? 16 : 10;
            for (uintmax_t u = v; u; u /= base) *--e = hive__xdigits[u % base + (t == 'X' ? 16 : 0)];
            a = e;
            if ((t | 32) == 'x' && v && (fl & HIVE__ALT)) prefix = t == 'X' ? "0X" : "0x";
            if (t == 'o' && (fl & HIVE__ALT) && p < z - a + 1) p = (int)(z - a) + 1;
            if (xp) fl &= ~(unsigned)HIVE__ZERO;
            if (!v && !p) a = z;
            else if (p < z - a + !v) p = (int)(z - a) + !v;
            break;
        }
        default:
            goto done;
        }
        hive__emit(s, fl, (size_t)w, (size_t)p, prefix, a, z);
    }
    if (s->n <= INT_MAX) {
        if (cap) buf[s->n < s->cap ? s->n : s->cap] = 0;
        rc = (int)s->n;
    }
done:
    va_end(ap);
    return rc;
}

/* Whether any argument after the format is a float, double or long double, at compile time (_Generic
 * evaluates nothing): 1 when one of the first 31 is, or when there are 32 or more. hive_fmt, hive_log and
 * hive_response_printf pass the floating point formatter only then, so a module that formats no floating
 * point does not carry it (a floating point conversion needs a floating point argument anyway). */
struct hive__na;
#define HIVE__NA ((struct hive__na *)0)
#define HIVE__G(x) _Generic((x), float: 1, double: 1, long double: 1, default: 0)
#define HIVE__FP(...) HIVE__FP_(__VA_ARGS__, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, \
    HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, \
    HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, HIVE__NA, \
    HIVE__NA, HIVE__NA, HIVE__NA)
#define HIVE__FP_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, \
                  a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, ...) \
    (HIVE__G(a1) | HIVE__G(a2) | HIVE__G(a3) | HIVE__G(a4) | HIVE__G(a5) | HIVE__G(a6) | HIVE__G(a7) | HIVE__G(a8) | \
     HIVE__G(a9) | HIVE__G(a10) | HIVE__G(a11) | HIVE__G(a12) | HIVE__G(a13) | HIVE__G(a14) | HIVE__G(a15) | \
     HIVE__G(a16) | HIVE__G(a17) | HIVE__G(a18) | HIVE__G(a19) | HIVE__G(a20) | HIVE__G(a21) | HIVE__G(a22) | \
     HIVE__G(a23) | HIVE__G(a24) | HIVE__G(a25) | HIVE__G(a26) | HIVE__G(a27) | HIVE__G(a28) | HIVE__G(a29) | \
     HIVE__G(a30) | HIVE__G(a31) | HIVE__G(a32) | _Generic((a33), struct hive__na *: 0, default: 1))
#define HIVE__FLOATS(...) (HIVE__FP(__VA_ARGS__) ? hive__fp : (hive__fp_fn *)0)

/* ---- logging ---------------------------------------------------------------------------------- */

#ifdef __wasm__
__attribute__((import_module("hive"), import_name("log")))
void hive__host_log(int32_t level, const char *ptr, size_t len);
#endif

static void hive__emit_log(int level, const char *msg, size_t len) {
    if (level < HIVE_LOG_DEBUG) level = HIVE_LOG_DEBUG;
    if (level > HIVE_LOG_ERROR) level = HIVE_LOG_ERROR;
#ifdef __wasm__
    hive__host_log(level, msg, len);
#else
    static const char *const names[] = { "debug", "info", "warn", "error" };
    fprintf(stderr, "[%s] %.*s\n", names[level], (int)len, msg);
#endif
}

static void hive__vlog(hive__fp_fn *fp, int level, const char *fmt, va_list ap) {
    char stack[512], *msg = stack;
    int n = hive__vsnprintf(stack, sizeof stack, fp, fmt, ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof stack) {
        /* Long lines are rare; try the heap once and fall back to the truncated line. */
        char *big = malloc((size_t)n + 1);
        if (big) {
            hive__vsnprintf(big, (size_t)n + 1, fp, fmt, ap);
            msg = big;
        } else {
            n = (int)sizeof stack - 1;
        }
    }
    hive__emit_log(level, msg, (size_t)n);
    if (msg != stack) free(msg);
}

HIVE_FN HIVE_PRINTF(3, 4) void hive__log(hive__fp_fn *fp, int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hive__vlog(fp, level, fmt, ap);
    va_end(ap);
}

/* (The function; the macro below is what a call uses.) */
HIVE_FN HIVE_PRINTF(2, 3) void (hive_log)(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hive__vlog(hive__fp, level, fmt, ap);
    va_end(ap);
}
#define hive_log(level, ...) hive__log(HIVE__FLOATS(__VA_ARGS__), level, __VA_ARGS__)

/* One log line from pieces: the SDK's own messages, which need no formatter. */
static void hive__log_parts(int level, const hive_str *parts, size_t n) {
    char line[512];
    hive__sink s = { line, sizeof line, 0 };
    for (size_t i = 0; i < n; i++) hive__out(&s, parts[i].ptr, parts[i].len);
    hive__emit_log(level, line, s.n < s.cap ? s.n : s.cap);
}

/* ---- per-request memory ----------------------------------------------------------------------- */

typedef union hive__blk { union hive__blk *next; max_align_t align_; } hive__blk;
typedef struct hive__buf { uint8_t *p; size_t len, cap; } hive__buf;

struct hive_response {
    hive_response *next;
    uint32_t status, header_count;
    hive__buf head, body;        /* head: the encoded headers, ready to copy */
    const char *error;           /* set: send a 500 with this message instead */
};

static hive__blk *hive__blocks;
static hive_response *hive__responses;
static uint8_t *hive__last_out;
static int hive__oom;
/* Handed out when calloc fails, so builder calls stay harmless no-ops. */
static hive_response hive__dead = { .error = "out of memory" };

/* Memory that lives until the request ends. NULL (and a 500 response) when out of memory. */
HIVE_FN void *hive_tmp_alloc(size_t n) {
    hive__blk *b = n <= SIZE_MAX - sizeof *b ? malloc(sizeof *b + n) : NULL;
    if (!b) {
        hive__oom = 1;
        return NULL;
    }
    b->next = hive__blocks;
    hive__blocks = b;
    return b + 1;
}

static void hive__release(void) {
    while (hive__blocks) {
        hive__blk *b = hive__blocks;
        hive__blocks = b->next;
        free(b);
    }
    while (hive__responses) {
        hive_response *r = hive__responses;
        hive__responses = r->next;
        free(r->head.p);
        free(r->body.p);
        free(r);
    }
}

static int hive__reserve(hive__buf *b, size_t extra) {
    if (extra <= b->cap - b->len) return 0;
    if (extra > SIZE_MAX / 2 - b->len) return -1;
    size_t want = b->len + extra, cap = b->cap ? b->cap : 64;
    while (cap < want) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void hive__put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- strings ---------------------------------------------------------------------------------- */

HIVE_FN hive_str hive_str_of(const char *s) {
    hive_str r = { s ? s : "", s ? strlen(s) : 0 };
    return r;
}

/* The configured value of `key` (the deploy manifest's "config", which the host passes as the WASI
 * environment), or "" (len 0) when it is not set. Valid for the life of the instance. */
HIVE_FN hive_str hive_config(const char *key) {
    return hive_str_of(getenv(key));
}

/* ---- time ------------------------------------------------------------------------------------- */

#define HIVE_RFC3339_SIZE sizeof "2026-11-24T19:40:00Z"

/* Seconds since the Unix epoch, from the WASI realtime clock (a granted "clocks"). */
HIVE_FN int64_t hive_now(void) {
    return (int64_t)time(NULL);
}

/* `secs` (Unix seconds, clamped to years 1970 to 9999) as RFC 3339 UTC to the second, e.g.
 * "2026-11-24T19:40:00Z", NUL-terminated into out. */
HIVE_FN void hive_rfc3339(int64_t secs, char out[HIVE_RFC3339_SIZE]) {
    secs = secs < 0 ? 0 : secs > 253402300799 ? 253402300799 : secs;
    /* The civil date of a day count: Howard Hinnant's civil_from_days. */
    int64_t z = secs / 86400 + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153, month = mp < 10 ? mp + 3 : mp - 9, sod = secs % 86400;
    int64_t parts[6] = { yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) / 5 + 1,
                         sod / 3600, sod / 60 % 60, sod % 60 };
    memcpy(out, "0000-00-00T00:00:00Z", HIVE_RFC3339_SIZE);
    for (int i = 0, end = 4; i < 6; end += 3, i++)
        for (int64_t v = parts[i], k = end - 1; v; v /= 10, k--) out[k] = (char)('0' + v % 10);
}

HIVE_FN int hive_str_eq(hive_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && (n == 0 || memcmp(s.ptr, cstr, n) == 0);
}

static int hive__ieq(hive_str s, const char *cstr, size_t n) {
    if (s.len != n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s.ptr[i], b = (unsigned char)cstr[i];
        if (a >= 'A' && a <= 'Z') a += 32;
        if (b >= 'A' && b <= 'Z') b += 32;
        if (a != b) return 0;
    }
    return 1;
}

/* A NUL-terminated copy that lives until the request ends. */
HIVE_FN const char *hive_cstr(hive_str s) {
    char *p = s.len < SIZE_MAX ? hive_tmp_alloc(s.len + 1) : NULL;
    if (!p) return "";
    if (s.len) memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    return p;
}

static const char *hive__vfmt(hive__fp_fn *fp, const char *fmt, va_list ap) {
    int n = hive__vsnprintf(NULL, 0, fp, fmt, ap);
    char *p = n < 0 ? NULL : hive_tmp_alloc((size_t)n + 1);
    if (!p) return "";
    hive__vsnprintf(p, (size_t)n + 1, fp, fmt, ap);
    return p;
}

HIVE_FN HIVE_PRINTF(2, 3) const char *hive__fmt(hive__fp_fn *fp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *p = hive__vfmt(fp, fmt, ap);
    va_end(ap);
    return p;
}

/* printf into memory that lives until the request ends. */
HIVE_FN HIVE_PRINTF(1, 2) const char *(hive_fmt)(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *p = hive__vfmt(hive__fp, fmt, ap);
    va_end(ap);
    return p;
}
#define hive_fmt(...) hive__fmt(HIVE__FLOATS(__VA_ARGS__), __VA_ARGS__)

/* The strings joined, in memory that lives until the request ends ("" when out of memory). None may be
 * NULL. Where hive_fmt would only paste strings, this needs no formatter: a module that never calls
 * hive_fmt, hive_log or hive_response_printf is about 3 KB smaller. */
HIVE_FN const char *hive__cat(const char *first, ...) {
    va_list ap;
    size_t n = 0, k;
    va_start(ap, first);
    for (const char *s = first; s && n < SIZE_MAX; s = va_arg(ap, const char *))
        n = (k = strlen(s)) < SIZE_MAX - n ? n + k : SIZE_MAX; /* SIZE_MAX: too long, fails below */
    va_end(ap);
    char *out = n < SIZE_MAX ? hive_tmp_alloc(n + 1) : NULL, *p = out;
    if (!out) return "";
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        k = strlen(s);
        memcpy(p, s, k);
        p += k;
    }
    va_end(ap);
    *p = 0;
    return out;
}
#define hive_cat(...) hive__cat(__VA_ARGS__, (const char *)0)

/* ---- request ---------------------------------------------------------------------------------- */

/* Values of header `name` (any case) one by one; start with *iter = 0. Returns 1, or 0 when done. */
HIVE_FN int hive_request_header_next(const hive_request *req, const char *name, size_t *iter, hive_str *value) {
    size_t n = strlen(name);
    for (size_t i = *iter; i < req->header_count; i++) {
        if (hive__ieq(req->headers[i].name, name, n)) {
            *value = req->headers[i].value;
            *iter = i + 1;
            return 1;
        }
    }
    *iter = req->header_count;
    return 0;
}

HIVE_FN hive_str hive_request_header(const hive_request *req, const char *name) {
    hive_str v = { NULL, 0 };
    size_t it = 0;
    hive_request_header_next(req, name, &it, &v);
    return v;
}

/* The claims of the caller's JWT as compact JSON (read them with hive_json_get_string/_number), set by
 * the server after it verified the token (auth.mode "jwt"); the server drops any copy a client sent.
 * .ptr == NULL when the function has no verified token (public or API-key functions). */
#define HIVE_AUTH_CLAIMS_HEADER "x-hive-auth-claims"
HIVE_FN hive_str hive_auth_claims(const hive_request *req) {
    return hive_request_header(req, HIVE_AUTH_CLAIMS_HEADER);
}

typedef struct hive__rd { const uint8_t *p; size_t len, pos; } hive__rd;

static int hive__u32(hive__rd *r, uint32_t *v) {
    if (r->len - r->pos < 4) return -1;
    const uint8_t *p = r->p + r->pos;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    r->pos += 4;
    return 0;
}

static int hive__field(hive__rd *r, hive_str *s) {
    uint32_t n;
    if (hive__u32(r, &n) || r->len - r->pos < n) return -1;
    s->ptr = (const char *)r->p + r->pos;
    s->len = n;
    r->pos += n;
    return 0;
}

/* 0 ok, -1 malformed, -2 out of memory. */
static int hive__decode(const uint8_t *buf, size_t len, hive_request *req) {
    hive__rd r = { buf, len, 0 };
    uint32_t count;
    memset(req, 0, sizeof *req);
    if (!buf || hive__field(&r, &req->method) || hive__field(&r, &req->path) ||
        hive__field(&r, &req->query) || hive__u32(&r, &count))
        return -1;
    /* Each header takes at least 8 bytes, so a lying count can't ask for a huge array. */
    if (count > (r.len - r.pos) / 8) return -1;
    hive_header *h = NULL;
    if (count && !(h = hive_tmp_alloc(count * sizeof *h))) return -2;
    for (uint32_t i = 0; i < count; i++)
        if (hive__field(&r, &h[i].name) || hive__field(&r, &h[i].value)) return -1;
    if (hive__field(&r, &req->body) || r.pos != r.len) return -1;
    req->headers = h;
    req->header_count = count;
    return 0;
}

/* ---- response --------------------------------------------------------------------------------- */

HIVE_FN int hive_response_set_status(hive_response *res, int status) {
    if (!res || res->error) return -1;
    if (status < 100 || status > 599) {
        char digits[12], *d = digits + sizeof digits;
        unsigned u = status < 0 ? 0u - (unsigned)status : (unsigned)status;
        do *--d = (char)('0' + u % 10); while (u /= 10);
        if (status < 0) *--d = '-';
        hive_str parts[] = { HIVE_STR("invalid HTTP status "), { d, (size_t)(digits + sizeof digits - d) } };
        hive__log_parts(HIVE_LOG_ERROR, parts, 2);
        res->error = "the handler set an invalid HTTP status";
        return -1;
    }
    res->status = (uint32_t)status;
    return 0;
}

HIVE_FN hive_response *hive_response_new(int status) {
    hive_response *r = calloc(1, sizeof *r);
    if (!r) {
        hive__oom = 1;
        return &hive__dead;
    }
    r->next = hive__responses;
    hive__responses = r;
    hive_response_set_status(r, status);
    return r;
}

static int hive__is_token(const char *s, size_t n) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0 || n > HIVE_MAX_HEADER_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c != 0 && strchr(extra, c) != NULL);
        if (!ok) return 0;
    }
    return 1;
}

HIVE_FN int hive_response_add_header_n(hive_response *res, const char *name, size_t name_len,
                                       const char *value, size_t value_len) {
    if (!res || res->error) return -1;
    const char *why = NULL;
    if (res->header_count >= HIVE_MAX_HEADERS) why = "more than 256 headers";
    else if (!hive__is_token(name, name_len)) why = "the name is not an HTTP token of 1 to 256 bytes";
    else if (value_len > HIVE_MAX_HEADER_VALUE) why = "the value is longer than 16 KiB";
    else if (value_len && (memchr(value, '\r', value_len) || memchr(value, '\n', value_len) ||
                           memchr(value, 0, value_len)))
        why = "the value contains CR, LF or NUL";
    if (why) {
        hive_str parts[] = { HIVE_STR("dropped response header \""), { name, name_len < 64 ? name_len : 64 },
                             HIVE_STR("\": "), hive_str_of(why) };
        hive__log_parts(HIVE_LOG_WARN, parts, 4);
        return -1;
    }
    if (hive__reserve(&res->head, 8 + name_len + value_len)) {
        hive__oom = 1;
        return -1;
    }
    uint8_t *p = res->head.p + res->head.len;
    hive__put_u32(p, (uint32_t)name_len);
    memcpy(p + 4, name, name_len);
    hive__put_u32(p + 4 + name_len, (uint32_t)value_len);
    if (value_len) memcpy(p + 8 + name_len, value, value_len);
    res->head.len += 8 + name_len + value_len;
    res->header_count++;
    return 0;
}

HIVE_FN int hive_response_add_header(hive_response *res, const char *name, const char *value) {
    if (!name || !value) return -1;
    return hive_response_add_header_n(res, name, strlen(name), value, strlen(value));
}

HIVE_FN int hive_response_append(hive_response *res, const void *data, size_t len) {
    if (!res || res->error) return -1;
    if (len == 0) return 0;
    if (hive__reserve(&res->body, len)) {
        hive__oom = 1;
        return -1;
    }
    memcpy(res->body.p + res->body.len, data, len);
    res->body.len += len;
    return 0;
}

HIVE_FN int hive_response_set_body(hive_response *res, const void *data, size_t len) {
    if (!res || res->error) return -1;
    res->body.len = 0;
    return hive_response_append(res, data, len);
}

static int hive__vprintf(hive_response *res, hive__fp_fn *fp, const char *fmt, va_list ap) {
    if (!res || res->error) return -1;
    int n = hive__vsnprintf(NULL, 0, fp, fmt, ap);
    if (n < 0) return -1;
    if (hive__reserve(&res->body, (size_t)n + 1)) { /* +1: the formatter writes a NUL */
        hive__oom = 1;
        return -1;
    }
    hive__vsnprintf((char *)res->body.p + res->body.len, (size_t)n + 1, fp, fmt, ap);
    res->body.len += (size_t)n;
    return 0;
}

HIVE_FN HIVE_PRINTF(3, 4) int hive__response_printf(hive__fp_fn *fp, hive_response *res, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = hive__vprintf(res, fp, fmt, ap);
    va_end(ap);
    return rc;
}

HIVE_FN HIVE_PRINTF(2, 3) int (hive_response_printf)(hive_response *res, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = hive__vprintf(res, hive__fp, fmt, ap);
    va_end(ap);
    return rc;
}
#define hive_response_printf(res, ...) hive__response_printf(HIVE__FLOATS(__VA_ARGS__), res, __VA_ARGS__)

static hive_response *hive__simple(int status, const char *type, const char *body) {
    hive_response *r = hive_response_new(status);
    hive_response_add_header(r, "content-type", type);
    if (body) hive_response_set_body(r, body, strlen(body));
    return r;
}

/* `json` must already be JSON text; build strings inside it with hive_json_escape. */
HIVE_FN hive_response *hive_response_json(int status, const char *json) {
    return hive__simple(status, "application/json", json);
}

HIVE_FN hive_response *hive_response_text(int status, const char *text) {
    return hive__simple(status, "text/plain; charset=utf-8", text);
}

/* ---- JSON ------------------------------------------------------------------------------------- */

typedef struct hive__js { const uint8_t *p, *end; int depth; } hive__js;

static void hive__ws(hive__js *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hive__hex4(const uint8_t *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* Validates the string at j->p (the opening quote) and returns its raw contents. */
static int hive__js_string(hive__js *j, hive_str *raw, int *escaped) {
    if (j->p >= j->end || *j->p != '"') return -1;
    const uint8_t *start = ++j->p;
    *escaped = 0;
    while (j->p < j->end) {
        uint8_t c = *j->p;
        if (c == '"') {
            raw->ptr = (const char *)start;
            raw->len = (size_t)(j->p - start);
            j->p++;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c != '\\') {
            j->p++;
            continue;
        }
        *escaped = 1;
        if (j->end - j->p < 2) return -1;
        switch (j->p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            j->p += 2;
            break;
        case 'u': {
            uint32_t u;
            if (j->end - j->p < 6 || hive__hex4(j->p + 2, &u)) return -1;
            j->p += 6;
            break;
        }
        default:
            return -1;
        }
    }
    return -1;
}

static size_t hive__utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a string hive__js_string validated. The output is never longer than the input. */
static size_t hive__js_unescape(hive_str raw, char *out) {
    const uint8_t *p = (const uint8_t *)raw.ptr, *e = p + raw.len;
    size_t n = 0;
    while (p < e) {
        if (*p != '\\') {
            out[n++] = (char)*p++;
            continue;
        }
        uint8_t c = p[1];
        p += 2;
        switch (c) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            uint32_t u, lo;
            hive__hex4(p, &u);
            p += 4;
            if (u >= 0xD800 && u < 0xDC00 && e - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                hive__hex4(p + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (u >= 0xD800 && u < 0xE000) u = 0xFFFD; /* a lone surrogate has no UTF-8 form */
            n += hive__utf8_put(u, out + n);
            break;
        }
        default: out[n++] = (char)c; /* " \ / */
        }
    }
    return n;
}

static int hive__js_value(hive__js *j);

static int hive__js_lit(hive__js *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return -1;
    j->p += n;
    return 0;
}

static int hive__digits(hive__js *j) {
    const uint8_t *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > s ? 0 : -1;
}

static int hive__js_number(hive__js *j) {
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p < j->end && *j->p == '0') j->p++;
    else if (j->p >= j->end || *j->p < '1' || *j->p > '9' || hive__digits(j)) return -1;
    if (j->p < j->end && *j->p == '.' && (j->p++, hive__digits(j))) return -1;
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (hive__digits(j)) return -1;
    }
    return 0;
}

/* Members of an object or array whose opening bracket was consumed; calls `visit` for object keys. */
static int hive__js_members(hive__js *j, uint8_t close,
                            int (*visit)(void *ctx, hive__js *j, hive_str key, int escaped), void *ctx) {
    hive_str key;
    int esc;
    if (++j->depth > HIVE_JSON_MAX_DEPTH) return -1;
    hive__ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            hive__ws(j);
            if (hive__js_string(j, &key, &esc)) return -1;
            hive__ws(j);
            if (j->p >= j->end || *j->p != ':') return -1;
            j->p++;
            hive__ws(j);
            if (visit ? visit(ctx, j, key, esc) : hive__js_value(j)) return -1;
        } else if (hive__js_value(j)) {
            return -1;
        }
        hive__ws(j);
        if (j->p >= j->end) return -1;
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p != close) return -1;
        j->p++;
        j->depth--;
        return 0;
    }
}

static int hive__js_value(hive__js *j) {
    hive_str raw;
    int esc;
    hive__ws(j);
    if (j->p >= j->end) return -1;
    switch (*j->p) {
    case '"': return hive__js_string(j, &raw, &esc);
    case 't': return hive__js_lit(j, "true");
    case 'f': return hive__js_lit(j, "false");
    case 'n': return hive__js_lit(j, "null");
    case '{': j->p++; return hive__js_members(j, '}', NULL, NULL);
    case '[': j->p++; return hive__js_members(j, ']', NULL, NULL);
    default: return hive__js_number(j);
    }
}

typedef struct hive__js_find { const char *key; size_t key_len; int found; hive_str raw; int escaped; } hive__js_find;

static int hive__js_find_visit(void *ctx, hive__js *j, hive_str key, int escaped) {
    hive__js_find *f = ctx;
    int match = 0;
    if (!escaped) {
        match = key.len == f->key_len && memcmp(key.ptr, f->key, key.len) == 0;
    } else if (key.len >= f->key_len) { /* unescaping only shrinks */
        char *k = hive_tmp_alloc(key.len);
        match = k && hive__js_unescape(key, k) == f->key_len && memcmp(k, f->key, f->key_len) == 0;
    }
    if (!match) return hive__js_value(j);
    f->found = j->p < j->end && *j->p == '"'; /* the last duplicate wins, as in JSON.parse */
    return f->found ? hive__js_string(j, &f->raw, &f->escaped) : hive__js_value(j);
}

/* Reads the top-level string field `key` of the JSON object `json`.
 * Returns 1 and sets *out (decoded UTF-8, NUL-terminated, lives until the request ends); 0 when the
 * field is absent or not a string; -1 when `json` is not a valid JSON object. */
HIVE_FN int hive_json_get_string(hive_str json, const char *key, hive_str *out) {
    hive__js j = { (const uint8_t *)json.ptr, (const uint8_t *)json.ptr + json.len, 0 };
    hive__js_find f = { key, strlen(key), 0, { NULL, 0 }, 0 };
    out->ptr = "";
    out->len = 0;
    if (!json.ptr) return -1;
    hive__ws(&j);
    if (j.p >= j.end || *j.p != '{') return -1;
    j.p++;
    if (hive__js_members(&j, '}', hive__js_find_visit, &f)) return -1;
    hive__ws(&j);
    if (j.p != j.end) return -1;
    if (!f.found) return 0;
    char *s = hive_tmp_alloc(f.raw.len + 1);
    if (!s) return 0;
    out->len = f.escaped ? hive__js_unescape(f.raw, s) : f.raw.len;
    if (!f.escaped && f.raw.len) memcpy(s, f.raw.ptr, f.raw.len);
    s[out->len] = 0;
    out->ptr = s;
    return 1;
}

typedef struct hive__js_num {
    const char *key;
    size_t key_len;
    int found, present;
    const uint8_t *start, *end;
} hive__js_num;

static int hive__js_num_visit(void *ctx, hive__js *j, hive_str key, int escaped) {
    hive__js_num *f = ctx;
    int match = 0;
    if (!escaped) {
        match = key.len == f->key_len && memcmp(key.ptr, f->key, key.len) == 0;
    } else if (key.len >= f->key_len) {
        char *k = hive_tmp_alloc(key.len);
        match = k && hive__js_unescape(key, k) == f->key_len && memcmp(k, f->key, f->key_len) == 0;
    }
    if (!match) return hive__js_value(j);
    /* The last duplicate wins, as in JSON.parse. */
    f->found = j->p < j->end && (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'));
    f->present = 1;
    if (!f->found) return hive__js_value(j);
    f->start = j->p;
    int rc = hive__js_number(j);
    f->end = j->p;
    return rc;
}

/* Reads the top-level number field `key` of the JSON object `json`.
 * Returns 1 and sets *out to the nearest double (+-HUGE_VAL when out of range: check isfinite for
 * untrusted input); 0 when the field is absent (*out = 0) or not a number (*out = NAN, so a caller can
 * tell the two apart); -1 when `json` is not a valid JSON object (*out = 0). */
HIVE_FN int hive_json_get_number(hive_str json, const char *key, double *out) {
    hive__js j = { (const uint8_t *)json.ptr, (const uint8_t *)json.ptr + json.len, 0 };
    hive__js_num f = { key, strlen(key), 0, 0, NULL, NULL };
    *out = 0;
    if (!json.ptr) return -1;
    hive__ws(&j);
    if (j.p >= j.end || *j.p != '{') return -1;
    j.p++;
    if (hive__js_members(&j, '}', hive__js_num_visit, &f)) return -1;
    hive__ws(&j);
    if (j.p != j.end) return -1;
    if (!f.found) {
        if (f.present) *out = __builtin_nan("");
        return 0;
    }
    char stack[64], *s = stack;
    size_t n = (size_t)(f.end - f.start);
    if (n >= sizeof stack && !(s = hive_tmp_alloc(n + 1))) return 0;
    memcpy(s, f.start, n);
    s[n] = 0;
    *out = strtod(s, NULL); /* JSON numbers are a subset of what strtod reads, '.' in the C locale */
    return 1;
}

/* Length of the well-formed UTF-8 sequence at p, or -k: an ill-formed one whose first k bytes are
 * replaced by one U+FFFD (Unicode's "maximal subpart" rule, as Python and browsers do). */
static int hive__utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || p[i] < lo || p[i] > hi) return -i;
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

/* `s` escaped for use between the quotes of a JSON string, NUL-terminated, living until the request
 * ends. Ill-formed UTF-8 becomes U+FFFD, so the result is always valid JSON. */
HIVE_FN const char *hive_json_escape(hive_str s) {
    static const char hex[] = "0123456789abcdef";
    if (s.len > (SIZE_MAX - 1) / 6) return "";
    char *out = hive_tmp_alloc(s.len * 6 + 1);
    if (!out) return "";
    const uint8_t *p = (const uint8_t *)s.ptr;
    size_t i = 0, n = 0;
    while (i < s.len) {
        uint8_t c = p[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (esc) {
            out[n++] = esc[0];
            out[n++] = esc[1];
            i++;
        } else if (c < 0x20) {
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[c >> 4];
            out[n + 5] = hex[c & 15];
            n += 6;
            i++;
        } else {
            int k = hive__utf8_seq(p + i, s.len - i);
            if (k > 0) {
                memcpy(out + n, p + i, (size_t)k);
                n += (size_t)k;
                i += (size_t)k;
            } else {
                memcpy(out + n, "\xEF\xBF\xBD", 3);
                n += 3;
                i += (size_t)-k;
            }
        }
    }
    out[n] = 0;
    return out;
}

/* ---- outbound HTTP (fetch) and key-value stores (ABI v1 revision 2; docs/abi.md) ------------------ */

/* An error as a value: code.len == 0 means none. Host codes are stable snake_case (host_not_allowed,
 * timeout, quota_exceeded, ...; docs/abi.md); the SDK adds its own: too_many_pending (64 results not
 * yet read), unknown_handle, invalid_argument (more than 256 headers), out_of_memory, invalid_result (a
 * malformed result record) and no_io (natively, where there is no host). */
typedef struct hive_error { hive_str code, message; } hive_error;
#define HIVE_OK(err) ((err).code.len == 0)

typedef struct hive_fetch_request {
    hive_str method;            /* "GET" when empty */
    hive_str url;               /* absolute http:// or https:// URL, on a host in allowed_hosts */
    const hive_header *headers;
    size_t header_count;        /* at most 256 */
    hive_str body;
} hive_fetch_request;

typedef struct hive_fetch_response {
    int32_t handle;             /* which request this answers (see hive_fetch_wait(0)) */
    uint32_t status;            /* the upstream's status; 0 with an error */
    const hive_header *headers; /* as the upstream sent them, in order */
    size_t header_count;
    hive_str body;
    hive_error error;           /* set when there is no upstream response */
} hive_fetch_response;

typedef struct hive_kv_value { int found; hive_str value; hive_error error; } hive_kv_value;
typedef struct hive_kv_deleted { int deleted; hive_error error; } hive_kv_deleted;
typedef struct hive_kv_number { int64_t value; hive_error error; } hive_kv_number;
/* One page of keys; cursor.len == 0 on the last page, else pass it to the next hive_kv_list. */
typedef struct hive_kv_page { const hive_str *keys; size_t count; hive_str cursor; hive_error error; } hive_kv_page;

#define HIVE_MAX_FETCH_HEADERS 256
enum { HIVE__KV_GET = 1, HIVE__KV_SET = 2, HIVE__KV_DELETE = 3, HIVE__KV_LIST = 4, HIVE__KV_INCR = 5 };

#ifdef __wasm__
__attribute__((import_module("hive"), import_name("fetch_send")))
int32_t hive__host_fetch_send(const uint8_t *ptr, size_t len);
__attribute__((import_module("hive"), import_name("fetch_wait")))
int64_t hive__host_fetch_wait(int32_t handle);
__attribute__((import_module("hive"), import_name("kv")))
int64_t hive__host_kv(const uint8_t *ptr, size_t len);
__attribute__((import_module("hive"), import_name("result_read")))
int32_t hive__host_result_read(int32_t handle, uint8_t *ptr, size_t len);
#endif

HIVE_FN hive_error hive__err(const char *code, const char *message) {
    hive_error e = { hive_str_of(code), hive_str_of(message) };
    return e;
}

HIVE_FN hive_error hive__no_error(void) {
    hive_error e = { { "", 0 }, { "", 0 } };
    return e;
}

#define HIVE__BAD_RESULT hive__err("invalid_result", "the host sent a malformed result record")
#define HIVE__NO_MEMORY hive__err("out_of_memory", "no memory for the host's result")
#define HIVE__PENDING hive__err("too_many_pending", "64 results are not read yet: wait for some first")
#define HIVE__NO_IO hive__err("no_io", "fetch and KV need the Edge Hive host (a wasm32 build)")

/* Request-lifetime memory that, unlike hive_tmp_alloc, leaves the response alone when it fails: a
 * result too big for memory is an error value for the handler. */
HIVE_FN void *hive__tmp_try(size_t n) {
    hive__blk *b = n <= SIZE_MAX - sizeof *b ? malloc(sizeof *b + n) : NULL;
    if (!b) return NULL;
    b->next = hive__blocks;
    hive__blocks = b;
    return b + 1;
}

/* Whether `count` items of `size` bytes overflow a size_t (wasm32: a lying count could). */
HIVE_FN int hive__too_many(size_t count, size_t size) {
    return count > SIZE_MAX / size;
}

typedef struct hive__wr { uint8_t *p; size_t pos; } hive__wr;

HIVE_FN void hive__w32(hive__wr *w, uint32_t v) {
    hive__put_u32(w->p + w->pos, v);
    w->pos += 4;
}

HIVE_FN void hive__w64(hive__wr *w, uint64_t v) {
    hive__w32(w, (uint32_t)v);
    hive__w32(w, (uint32_t)(v >> 32));
}

HIVE_FN void hive__wfield(hive__wr *w, hive_str s) {
    hive__w32(w, (uint32_t)s.len);
    if (s.len) memcpy(w->p + w->pos, s.ptr, s.len);
    w->pos += s.len;
}

/* *total += 4 + s.len, or -1 when a field does not fit a u32 or the total a size_t. */
HIVE_FN int hive__grow(size_t *total, size_t n) {
    if (n > UINT32_MAX || n > SIZE_MAX - 8 - *total) return -1;
    *total += 4 + n;
    return 0;
}

/* The fetch request record in malloc'd memory (the caller frees it). */
HIVE_FN uint8_t *hive__fetch_record(const hive_fetch_request *req, size_t *len, hive_error *err) {
    hive_str method = req->method.len ? req->method : HIVE_STR("GET");
    size_t total = 4;
    if (req->header_count > HIVE_MAX_FETCH_HEADERS) {
        *err = hive__err("invalid_argument", "a fetch has at most 256 headers");
        return NULL;
    }
    int bad = hive__grow(&total, method.len) || hive__grow(&total, req->url.len) || hive__grow(&total, req->body.len);
    for (size_t i = 0; i < req->header_count && !bad; i++)
        bad = hive__grow(&total, req->headers[i].name.len) || hive__grow(&total, req->headers[i].value.len);
    if (bad || total > UINT32_MAX) {
        *err = hive__err("request_too_large", "the fetch request is larger than 4 GiB");
        return NULL;
    }
    hive__wr w = { malloc(total), 0 };
    if (!w.p) {
        *err = hive__err("out_of_memory", "no memory for the fetch request");
        return NULL;
    }
    hive__wfield(&w, method);
    hive__wfield(&w, req->url);
    hive__w32(&w, (uint32_t)req->header_count);
    for (size_t i = 0; i < req->header_count; i++) {
        hive__wfield(&w, req->headers[i].name);
        hive__wfield(&w, req->headers[i].value);
    }
    hive__wfield(&w, req->body);
    *len = w.pos;
    return w.p;
}

/* Copies result `handle` (`len` bytes, as the host announced) into request-lifetime memory and reads
 * its kind: 0 with *r positioned after it for an ok result, -1 with *err set otherwise. */
HIVE_FN int hive__take_result(int32_t handle, uint32_t len, hive__rd *r, hive_error *err) {
#ifdef __wasm__
    uint8_t *buf = hive__tmp_try(len ? len : 1);
    if (!buf) {
        hive__host_result_read(handle, NULL, 0); /* frees the host's slot */
        *err = HIVE__NO_MEMORY;
        return -1;
    }
    int32_t n = hive__host_result_read(handle, buf, len);
    if (n < 0) {
        *err = hive__err("unknown_handle", "the host has no result for this handle");
        return -1;
    }
    if ((uint32_t)n != len) { /* never read past what both sides agree on */
        *err = HIVE__BAD_RESULT;
        return -1;
    }
    r->p = buf;
    r->len = len;
    r->pos = 0;
    uint32_t kind;
    if (hive__u32(r, &kind)) {
        *err = HIVE__BAD_RESULT;
        return -1;
    }
    if (kind == 0) return 0;
    hive_error e;
    if (kind != 1 || hive__field(r, &e.code) || hive__field(r, &e.message) || r->pos != r->len || !e.code.len) {
        *err = HIVE__BAD_RESULT;
        return -1;
    }
    *err = e;
    return -1;
#else
    (void)handle, (void)len, (void)r;
    *err = HIVE__NO_IO;
    return -1;
#endif
}

/* Starts an outbound request and returns its handle (>= 1) at once; 0 with *err set (err may be NULL)
 * when it cannot start. Wait for it with hive_fetch_wait; several run concurrently. */
HIVE_FN int32_t hive_fetch_send(const hive_fetch_request *req, hive_error *err) {
    hive_error local;
    if (!err) err = &local;
    *err = hive__no_error();
#ifdef __wasm__
    size_t len;
    uint8_t *rec = hive__fetch_record(req, &len, err);
    if (!rec) return 0;
    int32_t h = hive__host_fetch_send(rec, len);
    free(rec);
    if (h < 1) {
        *err = HIVE__PENDING;
        return 0;
    }
    return h;
#else
    (void)req;
    *err = HIVE__NO_IO;
    return 0;
#endif
}

HIVE_FN hive_fetch_response hive__fetch_failed(int32_t handle, hive_error err) {
    hive_fetch_response res = { handle, 0, NULL, 0, { "", 0 }, err };
    return res;
}

/* Blocks until request `handle` is done (0: the first pending one; res.handle tells which) and returns
 * the upstream's response, or res.error. Everything in it lives until the request ends. */
HIVE_FN hive_fetch_response hive_fetch_wait(int32_t handle) {
#ifdef __wasm__
    int64_t packed = hive__host_fetch_wait(handle);
    if (packed < 0) return hive__fetch_failed(handle, hive__err("unknown_handle", "no such pending fetch"));
    int32_t got = (int32_t)(uint32_t)((uint64_t)packed >> 32);
    if (got < 1 || (handle && got != handle)) return hive__fetch_failed(handle, HIVE__BAD_RESULT);
    hive_fetch_response res = hive__fetch_failed(got, hive__no_error());
    hive__rd r;
    uint32_t status, count;
    if (hive__take_result(got, (uint32_t)packed, &r, &res.error)) return res;
    /* Each header takes at least 8 bytes, so a lying count can't ask for a huge array. */
    if (hive__u32(&r, &status) || hive__u32(&r, &count) || count > (r.len - r.pos) / 8 ||
        hive__too_many(count, sizeof(hive_header)))
        return hive__fetch_failed(got, HIVE__BAD_RESULT);
    hive_header *h = count ? hive__tmp_try(count * sizeof *h) : NULL;
    if (count && !h) return hive__fetch_failed(got, HIVE__NO_MEMORY);
    for (uint32_t i = 0; i < count; i++)
        if (hive__field(&r, &h[i].name) || hive__field(&r, &h[i].value)) return hive__fetch_failed(got, HIVE__BAD_RESULT);
    if (hive__field(&r, &res.body) || r.pos != r.len) return hive__fetch_failed(got, HIVE__BAD_RESULT);
    res.status = status;
    res.headers = h;
    res.header_count = count;
    return res;
#else
    return hive__fetch_failed(handle, HIVE__NO_IO);
#endif
}

/* One outbound request, start to finish: hive_fetch_send, then hive_fetch_wait. */
HIVE_FN hive_fetch_response hive_fetch(const hive_fetch_request *req) {
    hive_error err;
    int32_t h = hive_fetch_send(req, &err);
    return h ? hive_fetch_wait(h) : hive__fetch_failed(0, err);
}

/* GET `url` with no headers. */
HIVE_FN hive_fetch_response hive_fetch_get(const char *url) {
    hive_fetch_request req = { HIVE_STR("GET"), hive_str_of(url), NULL, 0, { "", 0 } };
    return hive_fetch(&req);
}

/* The first value of the response's header `name` (any case); .ptr == NULL when absent. */
HIVE_FN hive_str hive_fetch_header(const hive_fetch_response *res, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < res->header_count; i++)
        if (hive__ieq(res->headers[i].name, name, n)) return res->headers[i].value;
    hive_str none = { NULL, 0 };
    return none;
}

/* Runs one KV operation: `extra` (already encoded) follows op, store and key. 0 with *r after the
 * result's kind, or -1 with *err set. */
HIVE_FN int hive__kv_call(uint32_t op, const char *store, hive_str key, const uint8_t *extra, size_t extra_len,
                         hive_str value, hive__rd *r, hive_error *err) {
    *err = hive__no_error();
#ifdef __wasm__
    hive_str s = hive_str_of(store);
    size_t total = 4;
    if (hive__grow(&total, s.len) || hive__grow(&total, key.len) ||
        (op == HIVE__KV_SET && hive__grow(&total, value.len)) || extra_len > SIZE_MAX - total ||
        total + extra_len > UINT32_MAX) {
        *err = hive__err("value_too_large", "the KV operation is larger than 4 GiB");
        return -1;
    }
    hive__wr w = { malloc(total + extra_len), 0 };
    if (!w.p) {
        *err = hive__err("out_of_memory", "no memory for the KV operation");
        return -1;
    }
    hive__w32(&w, op);
    hive__wfield(&w, s);
    hive__wfield(&w, key);
    if (op == HIVE__KV_SET) hive__wfield(&w, value);
    if (extra_len) memcpy(w.p + w.pos, extra, extra_len);
    int64_t packed = hive__host_kv(w.p, w.pos + extra_len);
    free(w.p);
    if (packed < 0) {
        *err = HIVE__PENDING;
        return -1;
    }
    int32_t h = (int32_t)(uint32_t)((uint64_t)packed >> 32);
    if (h < 1) {
        *err = HIVE__BAD_RESULT;
        return -1;
    }
    return hive__take_result(h, (uint32_t)packed, r, err);
#else
    (void)op, (void)store, (void)key, (void)extra, (void)extra_len, (void)value, (void)r;
    *err = HIVE__NO_IO;
    return -1;
#endif
}

HIVE_FN int hive__end(hive__rd *r, hive_error *err) {
    if (r->pos == r->len) return 0;
    *err = HIVE__BAD_RESULT;
    return -1;
}

/* The value of `key` in `store` (a store granted in the manifest's "kv"): found = 0 when there is
 * none. The value lives until the request ends. */
HIVE_FN hive_kv_value hive_kv_get(const char *store, hive_str key) {
    hive_kv_value out = { 0, { "", 0 }, { { "", 0 }, { "", 0 } } };
    hive__rd r;
    uint32_t found;
    if (hive__kv_call(HIVE__KV_GET, store, key, NULL, 0, out.value, &r, &out.error)) return out;
    if (hive__u32(&r, &found) || found > 1 || hive__field(&r, &out.value) || hive__end(&r, &out.error)) {
        out.error = HIVE__BAD_RESULT;
        out.value = HIVE_STR("");
        return out;
    }
    out.found = (int)found;
    return out;
}

/* Sets `key` to `value`; ttl_ms > 0 makes it expire after that many milliseconds. */
HIVE_FN hive_error hive_kv_set(const char *store, hive_str key, hive_str value, uint64_t ttl_ms) {
    uint8_t extra[8];
    hive__wr w = { extra, 0 };
    hive__rd r;
    hive_error err;
    hive__w64(&w, ttl_ms);
    if (hive__kv_call(HIVE__KV_SET, store, key, extra, sizeof extra, value, &r, &err)) return err;
    hive__end(&r, &err);
    return err;
}

/* Deletes `key`; deleted = 1 when it existed. */
HIVE_FN hive_kv_deleted hive_kv_delete(const char *store, hive_str key) {
    hive_kv_deleted out = { 0, { { "", 0 }, { "", 0 } } };
    hive__rd r;
    uint32_t deleted;
    hive_str none = { "", 0 };
    if (hive__kv_call(HIVE__KV_DELETE, store, key, NULL, 0, none, &r, &out.error)) return out;
    if (hive__u32(&r, &deleted) || deleted > 1 || hive__end(&r, &out.error)) {
        out.error = HIVE__BAD_RESULT;
        return out;
    }
    out.deleted = (int)deleted;
    return out;
}

/* Keys starting with `prefix` (may be empty), in order, at most `limit` (1..1000) of them, from
 * `cursor` (empty: the start). The keys live until the request ends. */
HIVE_FN hive_kv_page hive_kv_list(const char *store, hive_str prefix, hive_str cursor, uint32_t limit) {
    hive_kv_page out = { NULL, 0, { "", 0 }, { { "", 0 }, { "", 0 } } };
    hive_str none = { "", 0 };
    hive__rd r;
    uint32_t count;
    if (cursor.len > UINT32_MAX - 8 || cursor.len > SIZE_MAX - 8) {
        out.error = hive__err("invalid_argument", "the cursor is too long");
        return out;
    }
    uint8_t stack[64], *extra = cursor.len + 8 <= sizeof stack ? stack : malloc(cursor.len + 8);
    if (!extra) {
        out.error = hive__err("out_of_memory", "no memory for the KV operation");
        return out;
    }
    hive__wr w = { extra, 0 };
    hive__wfield(&w, cursor);
    hive__w32(&w, limit);
    int rc = hive__kv_call(HIVE__KV_LIST, store, prefix, extra, w.pos, none, &r, &out.error);
    if (extra != stack) free(extra);
    if (rc) return out;
    /* Each key takes at least 4 bytes, so a lying count can't ask for a huge array. */
    if (hive__u32(&r, &count) || count > (r.len - r.pos) / 4 || hive__too_many(count, sizeof(hive_str))) {
        out.error = HIVE__BAD_RESULT;
        return out;
    }
    hive_str *keys = count ? hive__tmp_try(count * sizeof *keys) : NULL;
    if (count && !keys) {
        out.error = HIVE__NO_MEMORY;
        return out;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (hive__field(&r, &keys[i])) {
            out.error = HIVE__BAD_RESULT;
            return out;
        }
    }
    if (hive__field(&r, &out.cursor) || hive__end(&r, &out.error)) {
        out.error = HIVE__BAD_RESULT;
        out.cursor = none;
        return out;
    }
    out.keys = keys;
    out.count = count;
    return out;
}

/* Adds `delta` to the number stored at `key` (a missing key counts as 0) atomically and returns the new
 * value; ttl_ms > 0 sets an expiry when the key is created. */
HIVE_FN hive_kv_number hive_kv_incr(const char *store, hive_str key, int64_t delta, uint64_t ttl_ms) {
    hive_kv_number out = { 0, { { "", 0 }, { "", 0 } } };
    uint8_t extra[16];
    hive__wr w = { extra, 0 };
    hive__rd r;
    uint32_t lo, hi;
    hive_str none = { "", 0 };
    hive__w64(&w, (uint64_t)delta);
    hive__w64(&w, ttl_ms);
    if (hive__kv_call(HIVE__KV_INCR, store, key, extra, sizeof extra, none, &r, &out.error)) return out;
    if (hive__u32(&r, &lo) || hive__u32(&r, &hi) || hive__end(&r, &out.error)) {
        out.error = HIVE__BAD_RESULT;
        return out;
    }
    out.value = (int64_t)((uint64_t)hi << 32 | lo);
    return out;
}

/* ---- dispatch and the ABI exports ------------------------------------------------------------- */

static const uint8_t *hive__fixed(uint32_t status, const char *code, const char *message, size_t *out_len) {
    /* No allocation: this is the answer when there is no memory or no trustworthy input. */
    static uint8_t buf[256];
    static const char name[] = "content-type", type[] = "application/json";
    char body[160];
    hive__sink s = { body, sizeof body - 1, 0 };
    hive__out(&s, "{\"error\":\"", 10);
    hive__out(&s, code, strlen(code));
    hive__out(&s, "\",\"message\":\"", 13);
    hive__out(&s, message, strlen(message));
    hive__out(&s, "\"}", 2);
    size_t blen = s.n < s.cap ? s.n : s.cap;
    uint8_t *p = buf;
    hive__put_u32(p, status);
    hive__put_u32(p + 4, 1);
    hive__put_u32(p + 8, sizeof name - 1);
    memcpy(p + 12, name, sizeof name - 1);
    p += 12 + sizeof name - 1;
    hive__put_u32(p, sizeof type - 1);
    memcpy(p + 4, type, sizeof type - 1);
    p += 4 + sizeof type - 1;
    hive__put_u32(p, (uint32_t)blen);
    memcpy(p + 4, body, blen);
    *out_len = (size_t)(p + 4 + blen - buf);
    return buf;
}

static uint8_t *hive__encode(const hive_response *r, size_t *out_len) {
    if (r->body.len > UINT32_MAX - 12 - r->head.len) return NULL;
    size_t n = 12 + r->head.len + r->body.len;
    uint8_t *p = malloc(n);
    if (!p) return NULL;
    hive__put_u32(p, r->status);
    hive__put_u32(p + 4, r->header_count);
    if (r->head.len) memcpy(p + 8, r->head.p, r->head.len);
    hive__put_u32(p + 8 + r->head.len, (uint32_t)r->body.len);
    if (r->body.len) memcpy(p + 12 + r->head.len, r->body.p, r->body.len);
    *out_len = n;
    return p;
}

/* Decodes a request envelope, runs handler and returns the response envelope, which stays valid until
 * the next call. Never fails: a malformed envelope yields a 400, a failed handler a 500. */
HIVE_FN const uint8_t *hive_dispatch(const uint8_t *req, size_t len, size_t *out_len) {
    static hive_request request;
    const uint8_t *out = NULL;
    free(hive__last_out);
    hive__last_out = NULL;
    hive__oom = 0;
    int rc = hive__decode(req, len, &request);
    if (rc == -1) {
        out = hive__fixed(400, "bad_request", "malformed request envelope", out_len);
    } else if (rc == 0) {
        hive_response *res = handler(&request);
        if (hive__oom) out = NULL;
        else if (!res) out = hive__fixed(500, "handler_failed", "the handler returned no response", out_len);
        else if (res->error) out = hive__fixed(500, "handler_failed", res->error, out_len);
        else out = hive__last_out = hive__encode(res, out_len);
    }
    hive__release(); /* the envelope is a separate block: peak memory stays at one copy of the body */
    return out ? out : hive__fixed(500, "out_of_memory", "the function ran out of memory", out_len);
}

#ifdef __wasm__
void hive_abi_v1(void);
void *hive_alloc(uint32_t size);
void hive_free(void *ptr, uint32_t size);
int64_t hive_handle(const uint8_t *req, uint32_t len);

__attribute__((export_name("hive_abi_v1"))) void hive_abi_v1(void) {}

/* malloc, never an arena: the host keeps this buffer across requests. */
__attribute__((export_name("hive_alloc"))) void *hive_alloc(uint32_t size) { return malloc(size ? size : 1); }

__attribute__((export_name("hive_free"))) void hive_free(void *ptr, uint32_t size) {
    (void)size;
    free(ptr);
}

__attribute__((export_name("hive_handle"))) int64_t hive_handle(const uint8_t *req, uint32_t len) {
    size_t n;
    const uint8_t *out = hive_dispatch(req, len, &n);
    return (int64_t)((uint64_t)(uintptr_t)out << 32 | (uint64_t)n);
}
#endif

#endif /* EDGE_HIVE_H */
