/* SHA-1, SHA-256, SHA-384, SHA-512 and HMAC over them, for crypto.subtle in the JS engine guest.
 * Plain FIPS 180-4 / RFC 2104 implementations; tests/js compares them with Python's hashlib/hmac. */
#ifndef HIVE_HCRYPTO_H
#define HIVE_HCRYPTO_H

#include <stddef.h>
#include <stdint.h>

enum hc_alg { HC_SHA1 = 0, HC_SHA256 = 1, HC_SHA384 = 2, HC_SHA512 = 3 };

#define HC_MAX_DIGEST 64
#define HC_MAX_BLOCK 128

typedef struct {
    int alg;
    uint64_t len_lo, len_hi; /* message length in bytes (128 bits for SHA-512) */
    size_t fill;
    uint8_t buf[HC_MAX_BLOCK];
    union {
        uint32_t w[8];
        uint64_t d[8];
    } h;
} hc_ctx;

size_t hc_digest_size(int alg);
size_t hc_block_size(int alg);
void hc_init(hc_ctx *c, int alg);
void hc_update(hc_ctx *c, const uint8_t *p, size_t n);
void hc_final(hc_ctx *c, uint8_t *out);
void hc_hash(int alg, const uint8_t *p, size_t n, uint8_t *out);
void hc_hmac(int alg, const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len, uint8_t *out);

#endif
