/* sha256.h - SHA-256 (FIPS 180-4), for the pipeline's cache keys.
 *
 *   sha256_ctx c; sha256_init(&c); sha256_update(&c, data, n); ...; sha256_final(&c, digest);
 */
#ifndef SLMC_PIPELINE_SHA256_H
#define SLMC_PIPELINE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
    uint32_t h[8];       /* the running hash value H(i) */
    uint8_t block[64];   /* the message block being filled */
    size_t used;         /* bytes in block */
    uint64_t total;      /* message length so far, in bytes */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t digest[32]);
/* The digest as 64 lowercase hex digits and a NUL. */
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* One call: hex digest of a buffer. */
void sha256_buf_hex(const void *data, size_t n, char hex[65]);

#endif
