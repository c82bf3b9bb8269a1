/* edge_hive_crypto.h: the small crypto kit of the Edge Hive C SDK. One header, no other files, no
 * dependency on edge_hive.h (include either, or both, in any order).
 *
 * Own implementation, placed in the public domain (or, where that is not possible, under the
 * project's Apache-2.0 license). Checked against Python's hashlib, hmac and base64 in
 * tests/sdk/test_c_crypto.py, natively and as wasm32-wasi.
 *
 *     SHA-256       hive_sha256(data, len, out[32]); or _init / _update / _final for streams
 *     HMAC-SHA256   hive_hmac_sha256(key, key_len, data, len, out[32]); or _init / _update / _final
 *     compare       hive_ct_equal(a, b, n): 1 when equal, in time that depends only on n
 *     hex           hive_hex_encode (lowercase) and hive_hex_decode (either case)
 *     base64        hive_base64_encode / _decode (RFC 4648 section 4, "+/", padded)
 *     base64url     hive_base64url_encode / _decode (section 5, "-_", unpadded as JWT wants it)
 *     wipe          hive_secure_zero(p, n): memset the compiler may not drop
 *
 * Decoders are strict: they return -1 (and write nothing useful) for a character outside the
 * alphabet, whitespace, a length no encoding produces, misplaced or excess padding, and a
 * non-canonical last character (unused bits that are not zero), so every byte string has exactly one
 * accepted encoding, padded or not. Padding is optional for both decoders; when present it must be
 * complete. Sizes for the caller's buffers:
 *     HIVE_HEX_ENCODED_SIZE(n)     2n + 1 (with the NUL)
 *     HIVE_BASE64_ENCODED_SIZE(n)  4 * ceil(n / 3) + 1 (with the NUL; enough for both alphabets)
 *     HIVE_BASE64_DECODED_MAX(n)   an upper bound of the bytes `n` characters decode to
 *
 * Secrets: hive_ct_equal is the only comparison to use on MACs; memcmp stops at the first
 * difference and leaks how many leading bytes an attacker got right.
 */
#ifndef EDGE_HIVE_CRYPTO_H
#define EDGE_HIVE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HIVE_SHA256_SIZE 32
#define HIVE_SHA256_BLOCK 64
#define HIVE_HEX_ENCODED_SIZE(n) (2 * (size_t)(n) + 1)
#define HIVE_BASE64_ENCODED_SIZE(n) (((size_t)(n) + 2) / 3 * 4 + 1)
#define HIVE_BASE64_DECODED_MAX(n) ((size_t)(n) / 4 * 3 + 2)

#define HIVE_CRYPTO_FN static __attribute__((unused))

/* ---- SHA-256 (FIPS 180-4) --------------------------------------------------------------------- */

typedef struct hive_sha256_ctx {
    uint32_t h[8];
    uint64_t total;                     /* bytes hashed so far */
    uint8_t buf[HIVE_SHA256_BLOCK];
    size_t used;                        /* bytes waiting in buf */
} hive_sha256_ctx;

static const uint32_t hive__sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t hive__ror32(uint32_t x, unsigned n) { return x >> n | x << (32 - n); }

static void hive__sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = hive__ror32(w[i - 15], 7) ^ hive__ror32(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = hive__ror32(w[i - 2], 17) ^ hive__ror32(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (hive__ror32(e, 6) ^ hive__ror32(e, 11) ^ hive__ror32(e, 25)) + ((e & f) ^ (~e & g)) +
                      hive__sha256_k[i] + w[i];
        uint32_t t2 = (hive__ror32(a, 2) ^ hive__ror32(a, 13) ^ hive__ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

HIVE_CRYPTO_FN void hive_sha256_init(hive_sha256_ctx *ctx) {
    static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(ctx->h, iv, sizeof iv);
    ctx->total = 0;
    ctx->used = 0;
}

HIVE_CRYPTO_FN void hive_sha256_update(hive_sha256_ctx *ctx, const void *data, size_t len) {
    const uint8_t *p = data;
    ctx->total += len;
    if (ctx->used) {
        size_t take = HIVE_SHA256_BLOCK - ctx->used < len ? HIVE_SHA256_BLOCK - ctx->used : len;
        memcpy(ctx->buf + ctx->used, p, take);
        ctx->used += take;
        p += take;
        len -= take;
        if (ctx->used < HIVE_SHA256_BLOCK) return;
        hive__sha256_block(ctx->h, ctx->buf);
        ctx->used = 0;
    }
    for (; len >= HIVE_SHA256_BLOCK; p += HIVE_SHA256_BLOCK, len -= HIVE_SHA256_BLOCK)
        hive__sha256_block(ctx->h, p);
    if (len) memcpy(ctx->buf, p, len);
    ctx->used = len;
}

HIVE_CRYPTO_FN void hive_sha256_final(hive_sha256_ctx *ctx, uint8_t out[HIVE_SHA256_SIZE]) {
    uint64_t bits = ctx->total * 8;
    size_t n = ctx->used;
    ctx->buf[n++] = 0x80;
    if (n > HIVE_SHA256_BLOCK - 8) { /* no room for the length: one more block (55 fits, 56 does not) */
        memset(ctx->buf + n, 0, HIVE_SHA256_BLOCK - n);
        hive__sha256_block(ctx->h, ctx->buf);
        n = 0;
    }
    memset(ctx->buf + n, 0, HIVE_SHA256_BLOCK - 8 - n);
    for (int i = 0; i < 8; i++) ctx->buf[HIVE_SHA256_BLOCK - 1 - i] = (uint8_t)(bits >> 8 * i);
    hive__sha256_block(ctx->h, ctx->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(ctx->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(ctx->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(ctx->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)ctx->h[i];
    }
}

HIVE_CRYPTO_FN void hive_sha256(const void *data, size_t len, uint8_t out[HIVE_SHA256_SIZE]) {
    hive_sha256_ctx ctx;
    hive_sha256_init(&ctx);
    hive_sha256_update(&ctx, data, len);
    hive_sha256_final(&ctx, out);
}

/* ---- wiping and constant-time comparison ------------------------------------------------------ */

/* memset through a volatile pointer: the compiler can't drop it as a dead store. */
HIVE_CRYPTO_FN void hive_secure_zero(void *p, size_t n) {
    volatile uint8_t *v = p;
    while (n--) *v++ = 0;
}

/* 1 when the n bytes at a and b are equal, else 0. Reads every byte whatever they hold (volatile
 * loads, so no early exit can be compiled in); the time depends only on n. Compare fixed-size MACs
 * with it, never a length that depends on the secret. */
HIVE_CRYPTO_FN int hive_ct_equal(const void *a, const void *b, size_t n) {
    const volatile uint8_t *x = a, *y = b;
    uint32_t diff = 0;
    for (size_t i = 0; i < n; i++) diff |= (uint32_t)(x[i] ^ y[i]);
    return (int)(1 & ((diff - 1) >> 8)); /* diff is 0..255: 1 exactly when it is 0 */
}

/* ---- HMAC-SHA256 (RFC 2104) ------------------------------------------------------------------- */

typedef struct hive_hmac_sha256_ctx { hive_sha256_ctx inner, outer; } hive_hmac_sha256_ctx;

HIVE_CRYPTO_FN void hive_hmac_sha256_init(hive_hmac_sha256_ctx *ctx, const void *key, size_t key_len) {
    uint8_t block[HIVE_SHA256_BLOCK] = { 0 };
    if (key_len > HIVE_SHA256_BLOCK) hive_sha256(key, key_len, block); /* long keys are hashed first */
    else if (key_len) memcpy(block, key, key_len);
    for (int i = 0; i < HIVE_SHA256_BLOCK; i++) block[i] ^= 0x36;
    hive_sha256_init(&ctx->inner);
    hive_sha256_update(&ctx->inner, block, sizeof block);
    for (int i = 0; i < HIVE_SHA256_BLOCK; i++) block[i] ^= 0x36 ^ 0x5c;
    hive_sha256_init(&ctx->outer);
    hive_sha256_update(&ctx->outer, block, sizeof block);
    hive_secure_zero(block, sizeof block);
}

HIVE_CRYPTO_FN void hive_hmac_sha256_update(hive_hmac_sha256_ctx *ctx, const void *data, size_t len) {
    hive_sha256_update(&ctx->inner, data, len);
}

/* Writes the MAC and wipes the context (it holds key-derived state). */
HIVE_CRYPTO_FN void hive_hmac_sha256_final(hive_hmac_sha256_ctx *ctx, uint8_t out[HIVE_SHA256_SIZE]) {
    uint8_t inner[HIVE_SHA256_SIZE];
    hive_sha256_final(&ctx->inner, inner);
    hive_sha256_update(&ctx->outer, inner, sizeof inner);
    hive_sha256_final(&ctx->outer, out);
    hive_secure_zero(inner, sizeof inner);
    hive_secure_zero(ctx, sizeof *ctx);
}

HIVE_CRYPTO_FN void hive_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                                     uint8_t out[HIVE_SHA256_SIZE]) {
    hive_hmac_sha256_ctx ctx;
    hive_hmac_sha256_init(&ctx, key, key_len);
    hive_hmac_sha256_update(&ctx, data, len);
    hive_hmac_sha256_final(&ctx, out);
}

/* ---- hex -------------------------------------------------------------------------------------- */

/* Writes 2n lowercase hex digits and a NUL to out (HIVE_HEX_ENCODED_SIZE(n) bytes); returns 2n. */
HIVE_CRYPTO_FN size_t hive_hex_encode(const void *data, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
    return 2 * n;
}

static int hive__hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 32; /* ASCII lowercase */
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes `len` hex digits (either case) into len / 2 bytes at out. Returns 0 and sets *out_len, or -1
 * for an odd length or a non-hex character. */
HIVE_CRYPTO_FN int hive_hex_decode(const char *in, size_t len, uint8_t *out, size_t *out_len) {
    if (len % 2) return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hive__hex_digit((uint8_t)in[i]), lo = hive__hex_digit((uint8_t)in[i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *out_len = len / 2;
    return 0;
}

/* ---- base64 and base64url (RFC 4648) ---------------------------------------------------------- */

static const char hive__b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char hive__b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t hive__b64_encode(const void *data, size_t n, char *out, const char *abc, int pad) {
    const uint8_t *p = data;
    size_t o = 0, i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)p[i] << 16 | (n - i == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        if (n - i == 2) out[o++] = abc[v >> 6 & 63];
        else if (pad) out[o++] = '=';
        if (pad) out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

static int hive__b64_value(uint8_t c, int url) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

static int hive__b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len, int url) {
    const uint8_t *s = (const uint8_t *)in;
    if (len % 4 == 0 && len && s[len - 1] == '=') len -= len >= 2 && s[len - 2] == '=' ? 2 : 1;
    if (len % 4 == 1) return -1;
    size_t o = 0, i = 0;
    uint32_t v = 0;
    for (; i < len; i++) {
        int d = hive__b64_value(s[i], url);
        if (d < 0) return -1; /* also a '=' that is not trailing padding */
        v = v << 6 | (uint32_t)d;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(v >> 16);
            out[o++] = (uint8_t)(v >> 8);
            out[o++] = (uint8_t)v;
            v = 0;
        }
    }
    if (len % 4 == 2) {
        if (v & 15) return -1; /* non-canonical: the 4 unused bits must be zero */
        out[o++] = (uint8_t)(v >> 4);
    } else if (len % 4 == 3) {
        if (v & 3) return -1;
        out[o++] = (uint8_t)(v >> 10);
        out[o++] = (uint8_t)(v >> 2);
    }
    *out_len = o;
    return 0;
}

/* Encoders write the text and a NUL to out (HIVE_BASE64_ENCODED_SIZE(n) bytes) and return its length. */
HIVE_CRYPTO_FN size_t hive_base64_encode(const void *data, size_t n, char *out) {
    return hive__b64_encode(data, n, out, hive__b64_std, 1);
}

HIVE_CRYPTO_FN size_t hive_base64url_encode(const void *data, size_t n, char *out) {
    return hive__b64_encode(data, n, out, hive__b64_url, 0);
}

/* Decoders write at most HIVE_BASE64_DECODED_MAX(len) bytes to out; 0 and *out_len on success, else -1. */
HIVE_CRYPTO_FN int hive_base64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len) {
    return hive__b64_decode(in, len, out, out_len, 0);
}

HIVE_CRYPTO_FN int hive_base64url_decode(const char *in, size_t len, uint8_t *out, size_t *out_len) {
    return hive__b64_decode(in, len, out, out_len, 1);
}

#endif /* EDGE_HIVE_CRYPTO_H */
