/* kernels.h - the numeric building blocks of the inference engine.
 *
 * Two families:
 *   1. vec_dot / matmul: y[t][r] = dot(W row r, x_t) for a weight matrix stored in any
 *      supported GGUF type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
 *      As ggml's CPU backend does, the activations are first converted to the weight type's
 *      "vec_dot type": Q8_0 (for Q4_0, Q5_0, Q8_0), Q8_1 (Q4_1, Q5_1), Q8_K (the K-quants),
 *      F16 / BF16 (rounded) for F16 / BF16 weights, plain F32 for F32. The quantized dots
 *      then sum integer products block by block and scale once per block, which is what
 *      makes our logits match llama.cpp's closely.
 *   2. the small per-row ops of a Llama forward pass: RMSNorm, softmax, RoPE (both pairings),
 *      SiLU.
 *
 * Reference kernels (kern_vec_dot_ref, written straight from the block layouts, scalar) live
 * in kernels.c and define the arithmetic. kern_matmul is the fast path: it unpacks each
 * weight row once per call into int8 quants + integer sub-block scales and reuses it for
 * every token of the batch, with AVX2 inner loops (kernels_avx2.c) when the CPU has them.
 * tests/test_kernels.c checks matmul against the reference dots and both against doubles.
 */
#ifndef SLMC_KERNELS_H
#define SLMC_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

/* ------------------------------------------------------------ activation blocks (ggml) */

#define KQ_LEGACY 32  /* block size of Q4_0..Q8_0 and Q8_0/Q8_1 activations */
#define KQ_K 256      /* super-block size of the K-quants and Q8_K */

typedef struct kq8_0 {
    uint16_t d;              /* fp16 scale: value = d * q */
    int8_t qs[KQ_LEGACY];    /* quants */
} kq8_0;

typedef struct kq8_1 {
    uint16_t d;              /* fp16 scale */
    uint16_t s;              /* fp16 of d * sum(qs): lets Q4_1/Q5_1 dots add their minimum once */
    int8_t qs[KQ_LEGACY];
} kq8_1;

typedef struct kq8_K {
    float d;                 /* scale (full float) */
    int8_t qs[KQ_K];
    int16_t bsums[KQ_K / 16];/* sum of each 16 quants */
} kq8_K;

/* Quantize n floats (multiple of 32) to Q8_0 / Q8_1 blocks the way ggml's x86 CPU backend
 * does for activations: d = amax/127, q = round-half-even(x * 127/amax). */
void kern_quantize_q8_0(const float *x, kq8_0 *y, int64_t n);
void kern_quantize_q8_1(const float *x, kq8_1 *y, int64_t n);

/* ------------------------------------------------------------ dot products */

/* The activation format a weight type's dot product consumes (a GGML_TYPE_* id), or -1
 * when the weight type is not supported. */
int kern_vec_dot_type(int wtype);

/* Reference dot of one weight row (n values in `wtype` blocks) with one activation row
 * already converted to kern_vec_dot_type(wtype) (F16/BF16 activations as raw 16-bit
 * values, F32 as floats). Scalar, block by block, as ggml's generic C code computes it.
 * NULL for an unsupported type. */
typedef float (*kern_vec_dot_fn)(int64_t n, const void *w, const void *x);
kern_vec_dot_fn kern_vec_dot_ref(int wtype);

/* Convert one activation row of n floats to the vec_dot type of wtype; `out` must hold
 * kern_act_row_bytes(wtype, n) bytes. */
size_t kern_act_row_bytes(int wtype, int64_t n);
void kern_act_convert(int wtype, const float *x, void *out, int64_t n);

/* ------------------------------------------------------------ matmul */

/* A weight matrix referenced in place: n_out rows of n_in values, row r at
 * data + row_bytes * (row_map ? row_map[r] : r). */
typedef struct kern_weight {
    const uint8_t *data;     /* first stored row (usually inside a file mapping) */
    int type;                /* GGML_TYPE_* of the rows */
    int64_t n_in;            /* values per row (ne[0]) */
    int64_t n_out;           /* rows (ne[1]) */
    uint64_t row_bytes;      /* bytes per stored row */
    const int64_t *row_map;  /* NULL, or the stored row holding logical row r (HF Q/K order) */
} kern_weight;

/* Which inner loops kern_matmul uses. */
typedef enum kern_impl { KERN_AUTO = 0, KERN_SCALAR = 1, KERN_AVX2 = 2 } kern_impl;

/* true when this build has the AVX2 kernels and the CPU runs them (AVX2 + FMA + F16C). */
bool kern_have_avx2(void);
/* Force an implementation for every later kern_matmul (tests and benchmarks); KERN_AUTO
 * picks AVX2 when available. Returns the one now in use. */
kern_impl kern_set_impl(kern_impl impl);

/* true when kern_matmul supports rows of this type with this row length. */
bool kern_weight_supported(int type, int64_t n_in);

/* y[t * n_out + r] = dot(row r, x[t * n_in ...]) for t < n_tok, r < n_out.
 * Runs OpenMP threads over row tiles; every weight row is unpacked once per call and
 * reused for the whole batch. Allocates its work buffers (returns -1 and fills err when
 * out of memory or the type is unsupported). y does not depend on the thread count. */
int kern_matmul(const kern_weight *w, const float *x, int64_t n_tok, float *y, slmc_err *err);
/* kern_matmul on n_threads OpenMP threads (0: omp_get_max_threads(), as kern_matmul). */
int kern_matmul_threads(const kern_weight *w, const float *x, int64_t n_tok, float *y, int n_threads, slmc_err *err);

/* ------------------------------------------------------------ row ops */

/* out = x / sqrt(mean(x^2) + eps) * weight (weight may be NULL), as ggml_rms_norm then
 * ggml_mul: the sum of squares in double, the scale in float. out may alias x. */
void kern_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps);

/* In-place softmax of x[0..n): exp(x - max) / sum, the sum accumulated in double as ggml
 * does. Returns nothing; x must have at least one finite value. */
void kern_softmax(float *x, int64_t n);

/* RoPE rotation of one head vector (head_dim values, the first n_rot rotated) at one
 * position, with cos/sin tables of n_rot/2 entries for that position.
 * neox == false: llama.cpp's NORM style, pairs (x[2i], x[2i+1]).
 * neox == true: NEOX style (qwen2), pairs (x[i], x[i + n_rot/2]). */
void kern_rope(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox);

/* cos/sin table entries for one position, computed as ggml does: theta_i =
 * freq_scale * pos * base^(-2i/n_rot), the power built up by repeated float products. */
void kern_rope_table(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base,
                     float freq_scale);

/* x = silu(x) * up, the SwiGLU activation of the Llama FFN (silu(x) = x / (1 + e^-x)). */
void kern_swiglu(float *x, const float *up, int64_t n);

/* Round every value to the precision of fp16 / bf16 (kept as float). */
void kern_round_f16(float *x, int64_t n);
void kern_round_bf16(float *x, int64_t n);

/* ------------------------------------------------------------ internal: kernels.c <-> kernels_avx2.c
 * Not for callers. A weight row or activation row "unpacked" to plain arrays, so one inner
 * loop serves every quantized type:
 *   legacy types (block 32): value = d[b] * q (+ m[b] for Q4_1 / Q5_1);
 *   K-quants (super-block 256, groups of 16 or 32): value = d[s] * sc[g] * q - dmin[s] * mn[g]. */
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
    float *f;        /* [n] float activations (rounded to the weight's float type) */
} kern_arow;

float kern_dot_f32_scalar(int64_t n, const float *a, const float *b);
float kern_dot_legacy_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min);
float kern_dot_k_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min);
float kern_dot_f32_avx2(int64_t n, const float *a, const float *b);
float kern_dot_legacy_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min);
float kern_dot_k_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min);
bool kern_cpu_has_avx2(void); /* from kernels_avx2.c: compiled in and supported by the CPU */

#endif
