/* kernels.h - the numeric building blocks of the inference engine.
 *
 * Two families:
 *   1. matmul: y[t][r] = dot(W row r, x_t) for a weight matrix stored in any supported GGUF
 *      type (F32, F16, BF16, Q4_0..Q8_0, Q2_K..Q6_K, IQ1_S..IQ4_XS, TQ1_0, TQ2_0), with the dot products
 *      of codec/dots.h: the activations are converted to the weight type's "vec_dot type" as
 *      ggml's CPU backend does, each weight row is unpacked once per call into int8 quants +
 *      integer sub-block scales and reused for every token of the batch, with the codec's AVX2
 *      loops when the CPU has them (register tiles of 2 rows x 4 tokens, each output bit for bit
 *      the 1x1 AVX2 dot: kern_dot_block). This file adds the row tiles and the threads.
 *   2. the small per-row ops of a Llama forward pass: RMSNorm, softmax, RoPE (both pairings),
 *      SiLU.
 *
 * tests/test_kernels.c checks matmul against the codec's reference dots (kern_vec_dot_ref) and
 * both against doubles, and the tiled AVX2 dots and unpacking bit for bit against the 1x1 ones.
 */
#ifndef SLMC_KERNELS_H
#define SLMC_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

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

/* Memory a caller lends kern_matmul for its buffers (the unpacked tokens, each thread's rows
 * and chains), kept from call to call and grown when a call needs more: a fresh block per call
 * costs page faults when it is large (the allocator maps and unmaps it). Zero-initialise;
 * kern_scratch_free releases it. */
typedef struct kern_scratch {
    void *mem;
    size_t bytes;
} kern_scratch;
void kern_scratch_free(kern_scratch *s);

/* How a matmul runs. The caller owns these settings (llm_context keeps its own); nothing is
 * global. A zeroed kern_ctx is the default: all threads, the AVX2 loops when the CPU has them. */
typedef struct kern_ctx {
    int n_threads;         /* OpenMP threads (0: omp_get_max_threads()) */
    kern_impl impl;        /* KERN_AUTO, or KERN_SCALAR / KERN_AVX2 to choose (tests, benchmarks) */
    kern_scratch *scratch; /* reused memory (NULL: each call allocates and frees its own) */
} kern_ctx;

/* true when this build has the AVX2 kernels and the CPU runs them (AVX2 + FMA + F16C). */
bool kern_have_avx2(void);
/* The loops a matmul asked for impl runs on this CPU: KERN_AVX2 for KERN_AUTO and KERN_AVX2
 * when kern_have_avx2(), else KERN_SCALAR. */
kern_impl kern_impl_resolve(kern_impl impl);

/* true when kern_matmul supports rows of this type with this row length. */
bool kern_weight_supported(int type, int64_t n_in);

/* y[t * n_out + r] = dot(row r, x[t * n_in ...]) for t < n_tok, r < n_out, with ctx's loops
 * (kern_impl_resolve(ctx->impl)) on ctx->n_threads OpenMP threads over row tiles; every weight
 * row is unpacked once per call and reused for the whole batch. Allocates its work buffers
 * (returns -1 and fills err when out of memory or the type is unsupported). y does not depend
 * on the thread count. */
int kern_matmul(const kern_ctx *ctx, const kern_weight *w, const float *x, int64_t n_tok, float *y, slmc_err *err);

/* One product of a group: y = w x, y as kern_matmul writes it ([n_tok][w->n_out]). */
typedef struct kern_product {
    const kern_weight *w;
    float *y;
} kern_product;

/* kern_matmul for several weights that read the same input x (Q, K and V; gate and up): the
 * tokens are converted once for all the products of one type and row length, and one parallel
 * region runs all their row tiles. Each y is what kern_matmul(w, x) gives, bit for bit.
 * Products whose type or row length differs from the one before start a group of their own. */
int kern_matmul_group(const kern_ctx *ctx, const kern_product *prods, int n_prods, const float *x, int64_t n_tok,
                      slmc_err *err);

/* ------------------------------------------------------------ row ops */

/* out = x / sqrt(mean(x^2) + eps) * weight (weight may be NULL), as ggml_rms_norm then
 * ggml_mul: the sum of squares in double, the scale in float. out may alias x. */
void kern_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps);
/* kern_rmsnorm of `rows` consecutive rows of n values, bit for bit, four rows at a time: their
 * sums of squares interleaved (each a chain of n dependent double additions, in index order),
 * so four chains overlap where one row's would wait on each addition. */
void kern_rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps);

/* In-place softmax of x[0..n): exp(x - max) / sum, the sum accumulated in double as ggml
 * does. Returns nothing; x must have at least one finite value. */
void kern_softmax(float *x, int64_t n);

/* RoPE rotation of one head vector (head_dim values, the first n_rot rotated) at one
 * position, with cos/sin tables of n_rot/2 entries for that position.
 * neox == false: llama.cpp's NORM style, pairs (x[2i], x[2i+1]).
 * neox == true: NEOX style (qwen2), pairs (x[i], x[i + n_rot/2]).
 * kern_rope_ref one pair at a time; kern_rope the same bits, 8 lanes at a time when impl
 * resolves to KERN_AVX2 on this CPU (kern_impl_resolve; attn_avx2.h), else kern_rope_ref. */
void kern_rope_ref(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox);
void kern_rope(kern_impl impl, float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox);

/* cos/sin table entries for one position, computed as ggml does: theta_i =
 * freq_scale * pos * base^(-2i/n_rot), the power built up by repeated float products. */
void kern_rope_table(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base,
                     float freq_scale);

/* The same with llama.cpp's rope extensions (ggml_rope_ext without YaRN): each dimension pair's
 * angle divided by freq_factors[i] (Llama 3's rope_freqs, Phi-3's longrope factors; NULL for
 * none), and cos/sin multiplied by mscale (Phi-3's rope.scaling.attn_factor; 1 for none). */
void kern_rope_table_ext(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base,
                         float freq_scale, const float *freq_factors, float mscale);

/* out = (x - mean) / sqrt(var + eps) * weight + bias, as ggml_norm then ggml_mul and ggml_add:
 * the mean and the variance summed in double, the scale in float. out may alias x. */
void kern_layernorm(float *out, const float *x, const float *weight, const float *bias, int64_t n, float eps);

/* x = silu(x) * up, the SwiGLU activation of the Llama FFN (silu(x) = x / (1 + e^-x)):
 * kern_swiglu_ref one value at a time with expf; kern_swiglu the same bits, its exps 8 at a
 * time when impl resolves to KERN_AVX2 and the vector exp matches expf (attn_avx2.h), else
 * kern_swiglu_ref. */
void kern_swiglu_ref(float *x, const float *up, int64_t n);
void kern_swiglu(kern_impl impl, float *x, const float *up, int64_t n);

/* x = gelu(x), tanh approximation, as ggml's CPU backend computes it: for -10 < x < 10 the
 * input is rounded to fp16 and the result is looked up in an fp16 table (so rounded to fp16
 * too); 0 at or below -10 and x at or above 10. */
void kern_gelu(float *x, int64_t n);
/* x = gelu(x) * up: GeGLU (Gemma's FFN), the gelu as kern_gelu. */
void kern_geglu(float *x, const float *up, int64_t n);
/* x = c * tanh(x * (1/c)): Gemma 2's soft-capping of attention scores and logits, with the
 * three ops in ggml's order (scale by the reciprocal, tanh, scale). */
void kern_softcap(float *x, int64_t n, float c);

/* Round every value to the precision of fp16 / bf16 (kept as float). */
void kern_round_f16(float *x, int64_t n);
void kern_round_bf16(float *x, int64_t n);

#endif
