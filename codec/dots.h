/* dots.h - dot products of quantized weight rows with activations, as ggml's CPU backend does.
 *
 * Weight types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS, the
 * i-quants IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S and the ternary TQ1_0, TQ2_0.
 * As in ggml, the activations are first converted to the weight type's "vec_dot type": Q8_0
 * (for Q4_0, Q5_0, Q8_0, IQ4_NL), Q8_1 (Q4_1, Q5_1), Q8_K (the K-quants, IQ4_XS, the i-quants
 * and ternary types), F16 / BF16 (rounded) for F16 / BF16 weights, plain F32 for F32. The
 * quantized dots then sum integer products block by block and scale once per block, which is
 * what makes slmc's logits match llama.cpp's closely.
 *
 * The types beyond the legacy and K-quants have no loops of their own: each is unpacked into
 * the plain arrays of one family (below), with integers whose products and sums are exactly
 * those of ggml's vec_dot (value = d * sc * q; dots.c section 4 details each):
 *   IQ4_NL             legacy: q = the IQ4 level (-127..113), d = the block scale;
 *   IQ4_XS             K, groups of 32: q = the IQ4 level, sc = ls - 32, d = the fp16 scale;
 *   IQ2_XXS/XS/S       K, groups of 16: q = grid * sign (|q| <= 43), sc = 2 ls + 1, d = fp16 d / 8;
 *   IQ3_XXS            K, groups of 16: q = grid * sign (|q| <= 62), sc = 2 ls + 1, d = fp16 d / 4;
 *   IQ3_S              K, groups of 16: q = grid * sign (|q| <= 15), sc = 2 ls + 1, d = fp16 d;
 *   IQ1_S, IQ1_M       K, groups of 16: q = 8 grid +- 1 (|q| <= 9), sc = 2 ls + 1, d = fp16 d / 8
 *                      (the +-1/8 shift made an integer);
 *   TQ1_0, TQ2_0       K, groups of 16: q = trit - 1, sc = 1, d = the fp16 scale.
 * Scales stored per 32 values are written per 16 (twice); none of these types has mins. Their
 * reference dots follow ggml's generic C vec_dot, which for IQ4_XS scales each 32 values in
 * float (the unpacked dot scales once per 256, as ggml's AVX2 code: float rounding apart).
 *
 * Two ways to compute a dot, which give the same integer parts:
 *   - kern_vec_dot_ref: straight from the blocks, one block at a time, scalar. It defines the
 *     arithmetic; tests compare everything else with it.
 *   - unpacked rows: a whole weight row is unpacked once to plain arrays (int8 quants, integer
 *     sub-block scales and mins, float block scales: kern_wrow), an activation row likewise
 *     (kern_arow), and one inner loop per family (float, legacy blocks of 32, K family) dots
 *     them, scalar (kern_dot_*_scalar, dots.c) or AVX2 (kern_dot_*_avx2, dots_avx2.c). The
 *     matmul of eval/kernels.c unpacks each weight row once and reuses it for every token,
 *     through kern_dot_block: with AVX2, register tiles of 2 rows x up to 4 tokens whose every
 *     output is bit for bit the 1x1 AVX2 dot (the same float operations in the same order; only
 *     independent outputs interleave), so the AVX2 logits do not depend on the tiling.
 * Nothing here allocates, fails or uses threads; callers own every buffer.
 */
#ifndef SLMC_DOTS_H
#define SLMC_DOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/blocks.h"

/* ------------------------------------------------------------ activations */

/* Quantize n floats (multiple of 32) to Q8_0 / Q8_1 blocks the way ggml's x86 CPU backend does
 * for activations: d = amax/127, q = round-half-even(x * 127/amax). (The Q8_0 weight quantizer
 * of codec/quants.h rounds differently in rare ties.) */
void kern_quantize_q8_0(const float *x, block_q8_0 *y, int64_t n);
void kern_quantize_q8_1(const float *x, block_q8_1 *y, int64_t n);

/* The activation format a weight type's dot product consumes (a GGML_TYPE_* id), or -1 when
 * the weight type is not supported. */
int kern_vec_dot_type(int wtype);

/* Convert one activation row of n floats to the vec_dot type of wtype; `out` must hold
 * kern_act_row_bytes(wtype, n) bytes. */
size_t kern_act_row_bytes(int wtype, int64_t n);
void kern_act_convert(int wtype, const float *x, void *out, int64_t n);

/* ------------------------------------------------------------ reference dot */

/* Reference dot of one weight row (n values in `wtype` blocks) with one activation row
 * already converted to kern_vec_dot_type(wtype) (F16/BF16 activations as raw 16-bit
 * values, F32 as floats). Scalar, block by block, as ggml's generic C code computes it.
 * NULL for an unsupported type. */
typedef float (*kern_vec_dot_fn)(int64_t n, const void *w, const void *x);
kern_vec_dot_fn kern_vec_dot_ref(int wtype);

/* ------------------------------------------------------------ unpacked rows */

/* The three families of weight types, each with one inner loop. */
typedef enum kern_wkind { KERN_WK_FLOAT, KERN_WK_LEGACY, KERN_WK_K } kern_wkind;

/* How one weight type unpacks and dots. */
typedef struct kern_wdesc {
    int type;        /* weight type (GGML_TYPE_*) */
    kern_wkind kind;
    int act_type;    /* vec_dot type of the activations */
    int block;       /* values per weight block */
    size_t bytes;    /* bytes per weight block */
    int group;       /* values per integer scale: 16 or 32 for the K family (32 for legacy) */
    bool has_min;    /* Q4_1, Q5_1, Q2_K, Q4_K, Q5_K */
} kern_wdesc;

/* The description of a weight type, or NULL when the dots do not support it. */
const kern_wdesc *kern_wdesc_get(int wtype);

/* A weight row or activation row of n values "unpacked" to plain arrays, so one inner loop
 * serves every quantized type:
 *   legacy types (block 32, IQ4_NL too): value = d[b] * q (+ m[b] for Q4_1 / Q5_1);
 *   K family (super-block 256, groups of 16 or 32: the K-quants, IQ4_XS, the i-quants, the
 *   ternary types): value = d[s] * sc[g] * q - m[s] * mn[g]. */
typedef struct kern_wrow {
    int8_t *q;       /* [n] integer quants, already offset (signed) */
    int16_t *sc;     /* [n/16] integer scale per group (K-quants) */
    int16_t *mn;     /* [n/16] integer min per group (K-quants with mins) */
    float *d;        /* [n/32] block scale (legacy) or super-block scale (K) */
    float *m;        /* [n/32] block minimum (Q4_1, Q5_1) or super-block dmin (K) */
    float *f;        /* [n] float weights (F32, F16, BF16 rows) */
} kern_wrow;

typedef struct kern_arow {
    int8_t *q;       /* [n] activation quants */
    float *d;        /* [n/32] scale per block (Q8_0/Q8_1 per 32, Q8_K per 256) */
    float *s;        /* [n/32] Q8_1: fp16 value of d * sum(q) per block */
    int32_t *bsum;   /* [n/16] Q8_K: sum of each 16 quants */
    int16_t *bsum16; /* [n/16] Q8_K: the same sums as int16, for the tiled kernels (NULL: not kept) */
    float *f;        /* [n] float activations (rounded to the weight's float type) */
    uint16_t *h;     /* [n] BF16 activations in VDPBF16PS pair order (kern_act_bf16_pairs), or NULL */
} kern_arow;

/* Bytes of memory one unpacked row of n values needs (its arrays 64-byte aligned), and the
 * layout of such memory as a weight row (w) and/or an activation row (a): both views share the
 * same memory, so pass one of them and NULL for the other. */
size_t kern_unpacked_bytes(int64_t n);
void kern_unpacked_carve(void *mem, int64_t n, kern_wrow *w, kern_arow *a);

/* Unpack one stored weight row of n values (n a multiple of wd->block) into w, and one
 * activation row already in the vec_dot type act_type (kern_act_convert's output) into a. */
void kern_unpack_wrow(const kern_wdesc *wd, const void *row, int64_t n, kern_wrow *w);
void kern_unpack_arow(int act_type, const void *row, int64_t n, kern_arow *a);

/* The dot of an unpacked weight row with an unpacked activation row of n values, through the
 * inner loop of wd's family: the AVX2 one when avx2 is true (only when kern_cpu_has_avx2()),
 * else the scalar one. */
float kern_dot_unpacked(const kern_wdesc *wd, bool avx2, int64_t n, const kern_wrow *w, const kern_arow *a);

/* The inner loops, scalar (dots.c) beside AVX2 (dots_avx2.c). The integer parts are exact in
 * both; only the order of the float additions differs. kern_dot_f32_* also serve as plain float
 * dots (eval's attention). */
float kern_dot_f32_scalar(int64_t n, const float *a, const float *b);
float kern_dot_legacy_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min);
float kern_dot_k_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min);
float kern_dot_f32_avx2(int64_t n, const float *a, const float *b);
float kern_dot_legacy_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min);
float kern_dot_k_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min);

/* ------------------------------------------------------------ tiled dots */

/* The dots of nr unpacked weight rows w[0..nr) with nt unpacked activation rows a[0..nt):
 * y[t * ldy + r] = kern_dot_unpacked(wd, avx2, n, &w[r], &a[t]), bit for bit. With avx2 the
 * rows go in pairs through kern_dot_tile_avx2 (the rest one dot at a time), so eval's matmul
 * calls this once per tile of unpacked weight rows with the whole batch. */
void kern_dot_block(const kern_wdesc *wd, bool avx2, int64_t n, const kern_wrow *w, int nr, const kern_arow *a,
                    int nt, float *y, int64_t ldy);

/* The register-tiled AVX2 kernels behind kern_dot_block: 2 weight rows x up to 4 tokens per
 * step, each output with the float operations of its 1x1 kernel (kern_dot_*_avx2: the same
 * partial sums, reduction tree and per-block scaling), only independent outputs interleaved.
 * Computes rows [0, k) x tokens [0, nt) for the largest even k <= nr and returns k; returns 0
 * (nothing written) when no tiled kernel covers the type (or, for float rows, n % 8 != 0).
 * Only when kern_cpu_has_avx2(). */
int kern_dot_tile_avx2(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                       float *y, int64_t ldy);

/* The same contract with AVX-512 registers (F32/F16/BF16 rows with n % 8 == 0, and the legacy
 * blocks Q4_0..Q8_0 and IQ4_NL), the same bits: 0 (nothing written) for other types or when
 * the CPU lacks AVX-512 F/DQ/BW/VL/VNNI. kern_dot_block tries it first when avx2 is set. */
int kern_dot_tile_avx512(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                         float *y, int64_t ldy);
bool kern_cpu_has_avx512(void);

/* F32 / F16 / BF16 weight rows as stored (rows[r]: n values each, never unpacked) with unpacked
 * activation rows: the same outputs, bit for bit, as kern_dot_tile_avx512 on the unpacked rows,
 * computed in slices of n with the rows widened in registers (see dots_avx2.c). Does rows
 * [0, k) for the largest multiple of 4 k <= nr and returns k; 0 (nothing written) when
 * kern_float_rows_avx512_ok(wtype, n) is false (other types, n % 16 != 0, a CPU without
 * AVX-512). scratch holds KERN_FLOAT_SCRATCH floats. */
#define KERN_FLOAT_SCRATCH (128 * 64 * 16)
bool kern_float_rows_avx512_ok(int wtype, int64_t n);

/* BF16 rows through VDPBF16PS (AVX512_BF16), still the same bits. The instruction adds two
 * exact bf16 products to a float lane one after the other, each rounded (odd element first):
 * exactly two FMAs of the 16-lane chain. So the 16 values each lane takes from two successive
 * chunks of 16 are paired: activations once per row by kern_act_bf16_pairs (a[t].h, value
 * i + j in the high half of word j of each 32, value i + 16 + j in the low half), weights by
 * one word permutation per load. kern_dot_float_rows_avx512 takes this path where
 * kern_float_rows_pairs(wtype, n) is true (BF16 rows it reads in place, a CPU with
 * AVX512_BF16) and every a[t].h is set: the caller asks it to know whether to make the pairs
 * (the one place this choice is made). The instruction reads a subnormal
 * bf16 (below 2^-126) as zero and flushes a subnormal result, where the FMAs keep them: no
 * model's weights or activations live there, and llama.cpp's BF16 dot on these CPUs (the same
 * instruction) does the same. */
bool kern_cpu_has_avx512bf16(void);
bool kern_float_rows_pairs(int wtype, int64_t n);
/* kern_act_bf16_pairs_ref one word at a time; kern_act_bf16_pairs the same words, 16 at a time
 * with AVX2 where the CPU has it (kern_act_bf16_pairs_avx2: false, nothing written, without). */
void kern_act_bf16_pairs_ref(const float *f, int64_t n, uint16_t *h);
void kern_act_bf16_pairs(const float *f, int64_t n, uint16_t *h);
bool kern_act_bf16_pairs_avx2(const float *f, int64_t n, uint16_t *h);
int kern_dot_float_rows_avx512(int wtype, int64_t n, const void *const *rows, int nr, const kern_arow *a, int nt,
                               float *y, int64_t ldy, float *scratch);

/* AVX2 twins of the unpacking (only when kern_cpu_has_avx2()), bit for bit the same arrays:
 * kern_unpack_wrow_avx2 as kern_unpack_wrow; kern_act_unpack_avx2 as kern_act_convert(wd->type)
 * followed by kern_unpack_arow(wd->act_type). Each returns false (nothing done) where it has
 * no vector path: F32 rows, and activation rows holding an infinity or NaN. */
bool kern_unpack_wrow_avx2(const kern_wdesc *wd, const void *row, int64_t n, kern_wrow *w);
bool kern_act_unpack_avx2(const kern_wdesc *wd, const float *x, int64_t n, kern_arow *a);

/* true when this build has the AVX2 loops and the CPU runs them (AVX2 + FMA + F16C). */
bool kern_cpu_has_avx2(void);

#endif
