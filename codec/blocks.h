/* blocks.h - ggml's block layouts, declared once for all of slmc.
 *
 * codec/ is the ground floor of slmc: how GGUF tensor data is laid out and how numbers go in and
 * out of it. It holds
 *   types.h      the one table of GGUF tensor types (block size, bytes per block, names) and the
 *                F16 / BF16 conversions;
 *   blocks.h     this file: the quantized block structs and the small unpackers of their packed
 *                scales, shared by every kernel below;
 *   quants.h     quantize (reference, importance-weighted, fast) and dequantize, per type
 *                (quants.c, with the AVX2 scale searches in quants_fast.c);
 *   dots.h       the dot products ggml's CPU backend computes: activations converted to a weight
 *                type's "vec_dot type" (Q8_0, Q8_1, Q8_K, F16, BF16), the reference vec_dot per
 *                weight type, and weight rows unpacked to plain arrays for a fast matmul
 *                (dots.c, with the AVX2 inner loops in dots_avx2.c).
 * What it is not: it knows nothing about models, files, tensor names or shapes, or threads. It
 * works on rows of values, never allocates, prints or exits, and answers the one thing that can go
 * wrong (a type it has no kernels for) with NULL or -1, so it needs no slmc_err. Files (formats/),
 * the inference engine (eval/) and the compressors (quant/, prune/, distill/) sit on top of it;
 * nothing here includes from those folders.
 *
 * The layouts are ggml's, byte for byte (docs/quant-types.md draws them): a GGUF tensor's data is
 * an array of these structs, little-endian. fp16 values are stored as their raw IEEE half bits.
 * Every struct has only 1- and 2-byte members except block_q8_K (a float), so data must be 2-byte
 * aligned (4 for Q8_K), which malloc'd buffers and GGUF tensor data always are.
 */
#ifndef SLMC_BLOCKS_H
#define SLMC_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#define QK_LEGACY 32 /* elements per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL */
#define QK_K 256     /* elements per super-block of the K-quants (Q2_K..Q8_K) and IQ4_XS */

/* fp16 values as their raw IEEE half bits (codec/types.h converts them). */
typedef uint16_t ggml_half;

/* ---------------------------------------------------------------- legacy types (blocks of 32) */

typedef struct {
    ggml_half d;               /* scale: value = d * (q - 8) */
    uint8_t qs[QK_LEGACY / 2]; /* 4-bit quants; byte j holds element j (low nibble) and j+16 (high) */
} block_q4_0;

typedef struct {
    ggml_half d;               /* scale */
    ggml_half m;               /* minimum: value = d * q + m */
    uint8_t qs[QK_LEGACY / 2]; /* 4-bit quants, nibbles as in Q4_0 */
} block_q4_1;

typedef struct {
    ggml_half d;               /* scale: value = d * (q - 16) */
    uint8_t qh[4];             /* 5th bit of each quant: bit j of this little-endian uint32 = element j */
    uint8_t qs[QK_LEGACY / 2]; /* low 4 bits, nibbles as in Q4_0 */
} block_q5_0;

typedef struct {
    ggml_half d;               /* scale */
    ggml_half m;               /* minimum: value = d * q + m */
    uint8_t qh[4];             /* 5th bits, as in Q5_0 */
    uint8_t qs[QK_LEGACY / 2]; /* low 4 bits */
} block_q5_1;

/* Q8_0 is both a weight type and the vec_dot type of Q4_0 / Q5_0 / Q8_0 weights (codec/dots.h). */
typedef struct {
    ggml_half d;           /* scale: value = d * q */
    int8_t qs[QK_LEGACY];  /* 8-bit signed quants */
} block_q8_0;

/* Q8_1: the vec_dot type of Q4_1 / Q5_1 weights (activations only; no weight kernels here). */
typedef struct {
    ggml_half d;           /* scale: value = d * q */
    ggml_half s;           /* d * sum(qs): lets the Q4_1 / Q5_1 dots add their minimum once */
    int8_t qs[QK_LEGACY];  /* 8-bit signed quants */
} block_q8_1;

/* ---------------------------------------------------------------- K-quants (super-blocks of 256) */

typedef struct {
    uint8_t scales[QK_K / 16]; /* per 16 values: low nibble scale, high nibble min (4 bits each) */
    uint8_t qs[QK_K / 4];      /* 2-bit quants: for each half of 128 values, byte l holds elements
                                * l, l+32, l+64, l+96 in bits 0-1, 2-3, 4-5, 6-7 */
    ggml_half d;               /* super-block scale of the scales */
    ggml_half dmin;            /* super-block scale of the mins: value = d*sc*q - dmin*m */
} block_q2_K;

typedef struct {
    uint8_t hmask[QK_K / 8]; /* high (3rd) bit: bit b of hmask[m] = element 32*b + m */
    uint8_t qs[QK_K / 4];    /* low 2 bits, packed as in Q2_K */
    uint8_t scales[12];      /* 16 signed 6-bit scales (stored +32), see q3_scale */
    ggml_half d;             /* super-block scale: value = d * (sc - 32) * (q - 4) */
} block_q3_K;

typedef struct {
    ggml_half d;           /* super-block scale of the scales */
    ggml_half dmin;        /* super-block scale of the mins */
    uint8_t scales[12];    /* 8 scales + 8 mins, 6 bits each, see k4_scale_min */
    uint8_t qs[QK_K / 2];  /* 4-bit quants: 64 values per 32 bytes (low nibbles first) */
} block_q4_K;

typedef struct {
    ggml_half d;           /* super-block scale of the scales */
    ggml_half dmin;        /* super-block scale of the mins */
    uint8_t scales[12];    /* as in Q4_K */
    uint8_t qh[QK_K / 8];  /* 5th bits: bit 2k / 2k+1 of qh[l] = element 64k+l / 64k+32+l */
    uint8_t qs[QK_K / 2];  /* low 4 bits, as in Q4_K */
} block_q5_K;

typedef struct {
    uint8_t ql[QK_K / 2];     /* low 4 bits of the 6-bit quants */
    uint8_t qh[QK_K / 4];     /* high 2 bits */
    int8_t scales[QK_K / 16]; /* 8-bit signed scale per 16 values */
    ggml_half d;              /* super-block scale: value = d * sc * (q - 32); stored last */
} block_q6_K;

/* Q8_K: the vec_dot type of every K-quant weight, and a GGUF type of its own. */
typedef struct {
    float d;                    /* scale (a full float): value = d * q */
    int8_t qs[QK_K];            /* 8-bit quants */
    int16_t bsums[QK_K / 16];   /* sum of the quants of each 16 values (for integer dots) */
} block_q8_K;

/* ---------------------------------------------------------------- non-linear 4-bit (IQ4) */

typedef struct {
    ggml_half d;               /* scale: value = d * IQ4_LEVELS[q] (codec/quants.c) */
    uint8_t qs[QK_LEGACY / 2]; /* 4-bit level indices, nibbles as in Q4_0 */
} block_iq4_nl;

typedef struct {
    ggml_half d;                 /* super-block scale */
    uint16_t scales_h;           /* top 2 bits of the 8 group scales: bits 2*ib, 2*ib+1 */
    uint8_t scales_l[QK_K / 64]; /* low 4 bits of the group scales, 2 per byte (even group low) */
    uint8_t qs[QK_K / 2];        /* level indices, per 32 values paired as in Q4_0:
                                  * value = d * (scale - 32) * IQ4_LEVELS[q] */
} block_iq4_xs;

/* ---------------------------------------------------------------- i-quants (super-blocks of 256)
 * Values come from codebooks (codec/iq_grids.h): each group of 8 (IQ2, IQ1) or 4 (IQ3) values is
 * one grid point, stored as its index; signs and scales are stored beside. docs/quant-types.md
 * draws the layouts; codec/quants_iq*.c quantize and dequantize them. */

typedef struct {
    ggml_half d;             /* super-block scale */
    uint16_t qs[QK_K / 8];   /* per 32 values, 4 uint16 = two uint32: the first holds four 8-bit
                              * IQ2XXS_GRID indices (8 values each), the second four 7-bit sign
                              * indices (bits 0-27) and a 4-bit scale (bits 28-31):
                              * value = d * (0.5 + scale) / 4 * grid * sign */
} block_iq2_xxs;

typedef struct {
    ggml_half d;              /* super-block scale */
    uint16_t qs[QK_K / 8];    /* per 8 values: 9-bit IQ2XS_GRID index | 7-bit sign index << 9 */
    uint8_t scales[QK_K / 32]; /* two 4-bit scales per 32 values (low nibble: first 16):
                               * value = d * (0.5 + scale) / 4 * grid * sign */
} block_iq2_xs;

typedef struct {
    ggml_half d;              /* super-block scale */
    uint8_t qs[QK_K / 4];     /* first 32 bytes: low 8 bits of the 10-bit IQ2S_GRID index per 8
                               * values; last 32 bytes: sign bits, one byte per 8 values */
    uint8_t qh[QK_K / 32];    /* top 2 bits of the 4 indices of each 32 values */
    uint8_t scales[QK_K / 32]; /* as in IQ2_XS */
} block_iq2_s;

typedef struct {
    ggml_half d;              /* super-block scale */
    uint8_t qs[3 * QK_K / 8]; /* 64 bytes of IQ3XXS_GRID indices (4 values each), then per 32
                               * values one uint32: four 7-bit sign indices and a 4-bit scale:
                               * value = d * (0.5 + scale) / 2 * grid * sign */
} block_iq3_xxs;

typedef struct {
    ggml_half d;               /* super-block scale */
    uint8_t qs[QK_K / 4];      /* low 8 bits of the 9-bit IQ3S_GRID index per 4 values */
    uint8_t qh[QK_K / 32];     /* 9th bits: bit k of qh[i] for index 8i + k */
    uint8_t signs[QK_K / 8];   /* one sign bit per value */
    uint8_t scales[QK_K / 64]; /* 4-bit scales, two per byte (per 32 values, low nibble first):
                                * value = d * (1 + 2 * scale) * grid * sign */
} block_iq3_s;

typedef struct {
    ggml_half d;             /* super-block scale */
    uint8_t qs[QK_K / 8];    /* low 8 bits of the 11-bit IQ1S_GRID index per 8 values */
    uint16_t qh[QK_K / 32];  /* per 32 values: 4 x 3 high index bits (bits 0-11), a 3-bit scale
                              * (bits 12-14), and the sign of the shift (bit 15):
                              * value = d * (2 * scale + 1) * (grid +- 0.125) */
} block_iq1_s;

typedef struct {
    uint8_t qs[QK_K / 8];     /* low 8 bits of the 11-bit IQ1S_GRID index per 8 values */
    uint8_t qh[QK_K / 16];    /* per 2 groups of 8: each nibble = 3 high index bits | shift sign */
    uint8_t scales[QK_K / 32]; /* 3-bit scales per 16 values (4 per uint16); the fp16 super-block
                                * scale is spread over the top 4 bits of the 4 uint16 */
} block_iq1_m;

/* ---------------------------------------------------------------- ternary (super-blocks of 256) */

typedef struct {
    uint8_t qs[(QK_K - 4 * QK_K / 64) / 5]; /* 240 values, 5 trits per byte (base 3, scaled to 0..255) */
    uint8_t qh[QK_K / 64];                  /* the last 16 values, 4 trits per byte */
    ggml_half d;                            /* scale: value = d * (trit - 1) */
} block_tq1_0;

typedef struct {
    uint8_t qs[QK_K / 4]; /* 2 bits per value (0..2 used), packed as Q2_K's qs */
    ggml_half d;          /* scale: value = d * (q - 1) */
} block_tq2_0;

static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs layout");
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs layout");
static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s layout");
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs layout");
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s layout");
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s layout");
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m layout");
static_assert(sizeof(block_tq1_0) == 54, "block_tq1_0 layout");
static_assert(sizeof(block_tq2_0) == 66, "block_tq2_0 layout");

/* The sizes GGUF files use (codec/types.c's table says the same). */
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 layout");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 layout");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 layout");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 layout");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 layout");
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 layout");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K layout");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K layout");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K layout");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K layout");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K layout");
static_assert(sizeof(block_q8_K) == 292, "block_q8_K layout");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl layout");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs layout");

/* ---------------------------------------------------------------- packed K-quant scales
 * The unpackers every kernel shares; their inverses (the packers) are with the quantizers in
 * codec/quants.c. */

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes q. Sub-blocks
 * 0-3 use bytes 0-3 (scale) and 4-7 (min) whole; sub-blocks 4-7 keep their low 4 bits in bytes
 * 8-11 and their top 2 bits in the spare top bits of bytes 0-7. */
static inline void k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K: signed scale of sub-block j (0..15), -32..31, from the 12 packed bytes. Low 4 bits: scales
 * 0-7 in the low halves of bytes 0-7, scales 8-15 in the high halves; top 2 bits: scale j in byte
 * 8 + j%4, bit pair j/4; stored +32. */
static inline int q3_scale(const uint8_t *scales, int j) {
    int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
    int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | (high << 4)) - 32;
}

#endif
