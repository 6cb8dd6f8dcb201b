/* quants.h - block quantization kernels, one set per tensor type.
 *
 * Every kernel works on n values that form whole blocks of the type (n a multiple of the
 * block size from codec/types.h: 32 for Q4_0..Q8_0, 256 for the K-quants, 1 for the float
 * types). Quantized data is written in ggml's exact block layout, so the bytes can go
 * straight into a GGUF file and llama.cpp reads them back (docs/quant-types.md lists the
 * layouts; codec/blocks.h declares them).
 *
 * quantize_ref reproduces llama.cpp's quantize_row_X_ref bit for bit (what llama-quantize
 * writes when it has no importance matrix); dequantize reproduces dequantize_row_X bit for
 * bit. Differences from llama.cpp only where its output would be garbage: scales beyond the
 * fp16 range saturate at +-65504 instead of becoming Inf, and non-finite intermediate values
 * never reach a float-to-int conversion.
 *
 * The kernels never fail and never allocate: a type is either supported (quant_get returns
 * its kernels) or not (NULL). Blocks are accessed through structs, so y and x must be
 * aligned to 2 bytes (4 for Q8_K), which malloc'd buffers and GGUF tensor data always are.
 */
#ifndef SLMC_QUANTS_H
#define SLMC_QUANTS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct quant_kernels {
    int type; /* ggml_type id (codec/types.h) */
    /* Plain reference quantizer: the same bytes as llama.cpp's quantize_row_X_ref. */
    void (*quantize_ref)(const float *x, void *y, int64_t n);
    /* Faster variant (may be the same function); always gives the same bytes as quantize_ref. */
    void (*quantize)(const float *x, void *y, int64_t n);
    /* Importance-weighted quantizer, llama.cpp's quantize_X with quant_weights: importance[i]
     * is the weight of column i (an imatrix entry), n values = one row. With importance ==
     * NULL it gives the same bytes as quantize_ref. For Q8_K and the float types the weights
     * are ignored. */
    void (*quantize_weighted)(const float *x, void *y, int64_t n, const float *importance);
    /* quantize_weighted with the reference searches (see below); always the same bytes. */
    void (*quantize_weighted_ref)(const float *x, void *y, int64_t n, const float *importance);
    /* Blocks back to floats: the same values as llama.cpp's dequantize_row_X. */
    void (*dequantize)(const void *x, float *y, int64_t n);
} quant_kernels;

/* The kernels for a type id, or NULL when the type has none here. Supported: F32, F16, BF16,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS, and the
 * i-quants and ternary types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, TQ1_0, TQ2_0
 * (codec/quants_iq.h: their few differences from the contract below).
 *
 * IQ4_NL is the one type where llama.cpp's quantize_row_X_ref is not what llama-quantize
 * writes: its quantize_row_iq4_nl_ref skips the scale search, while llama-quantize calls
 * quantize_iq4_nl (search with 15 tries, weights x^2 without an imatrix). quantize_ref here
 * is the latter, so files match llama-quantize's; quant_iq4_nl_row_ref below is the former. */
const quant_kernels *quant_get(int type);

/* Any type's blocks back to floats: n values (whole blocks) of `type` at src into dst, through
 * quant_get(type)->dequantize. Returns 0, or -1 (dst untouched) when the type has no kernels
 * here or n is not a whole number of blocks; with n == 0 it only answers whether the type can
 * be dequantized. The model view (formats/model.c) decodes quantized tensors with it.
 * Thread-safe. */
int quant_dequantize(int type, const void *src, float *dst, int64_t n);

/* Whether n values (whole blocks) of `type` at src all dequantize to finite numbers: 1 yes, 0 no,
 * -1 when the type has no kernels or n is not whole blocks. For the block types with fp16
 * scales it reads only the scales (finite scales times the blocks' small integers are always
 * finite, and a NaN or Inf scale makes the block's values NaN or Inf); F32/F16/BF16 and Q8_K
 * are decoded into scratch (n floats) and checked. Thread-safe. */
int quant_row_finite(int type, const void *src, int64_t n, float *scratch);

/* llama.cpp's quantize_row_iq4_nl_ref bit for bit (ggml's from_float_ref for IQ4_NL: the
 * first-guess scale only, no search). n is a multiple of 32. Only for comparison with ggml;
 * slmc writes files with quant_get(GGML_TYPE_IQ4_NL)->quantize_ref. */
void quant_iq4_nl_row_ref(const float *x, void *y, int64_t n);

/* For Q4_K and Q6_K, quantize_weighted (with importance) goes beyond llama.cpp: it starts
 * from the block llama.cpp's algorithm gives and searches nearby stored blocks (sub-block scales
 * and mins, least-squares super-block scales), keeping whichever has the lower exact error
 * quant_weighted_error. So its bytes differ from llama-quantize's, and that error is never
 * higher, block by block. Q2_K, Q3_K and Q5_K keep llama.cpp's blocks (the search did not make
 * real models better there; quants.c section 5a).
 *
 * quant_weighted_llama writes llama.cpp's blocks (quantize_row_X_impl with quant_weights) for
 * Q2_K..Q6_K and returns true; false (nothing written) for other types or importance NULL.
 * quant_weighted_error is the error the search minimises, for Q2_K..Q6_K: the sum over values
 * of w (x - dequantized)^2, with llama.cpp's weights for the type (importance * sqrt(sigma2 +
 * x^2), sigma2 the block's mean x^2 for Q2_K and twice that for Q3_K..Q5_K; the importance alone
 * for Q6_K), plus a penalty on each sub-block's weighted mean error (quants.c section 5a);
 * -1 for other types or importance NULL. n is a multiple of 256. */
bool quant_weighted_llama(int type, const float *x, void *y, int64_t n, const float *importance);
double quant_weighted_error(int type, const float *x, const void *y, int64_t n, const float *importance);

/* Two sets of scale searches: quantize, quantize_weighted and quant_weighted_llama use the
 * faster ones (codec/quants_fast.c) when the CPU has AVX2, else the reference ones;
 * quantize_ref and quantize_weighted_ref always use the reference ones. Both give the same bytes,
 * so the *_ref kernels are there to check the fast ones against (tests) and to time them
 * (benchmarks). */

/* ---- internal: the interface between quants.c and quants_fast.c ----------------------------
 * The scale searches, with the contracts of quants.c's reference functions of the same name
 * (make_qkx_quants, make_qx_quants, iq4_fit_group; iq4_levels sets L[j] to the index of the
 * IQ4 level nearest to id * x[j]). Limits: groups of at most 256 values, make_qkx nstep <= 36,
 * IQ4 ntry <= 7, iq4_levels n a multiple of 8. */
typedef struct quant_searches {
    float (*qkx)(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min, uint8_t *Laux,
                 float rmin, float rdelta, int nstep, bool use_mad, bool guarded);
    float (*qx)(int n, int nmax, const float *x, int8_t *L, const float *qw);
    float (*iq4_group)(const float *xb, const float *weight, int ntry, uint8_t *Lb);
    void (*iq4_levels)(const float *x, float id, int n, uint8_t *L);
    /* Not searches, but the same pair: whole Q8_0 / Q4_0 rows, as quants.c's quantize_X_ref. */
    void (*q8_0_rows)(const float *x, void *y, int64_t n);
    void (*q4_0_rows)(const float *x, void *y, int64_t n);
    /* The legacy types' rounding of one block of 32: L[j] = trunc_clamp((x[j] - sub) * id +
     * bias, 0, maxq) (Q4_1/Q5_1: sub = min, bias 0.5; Q5_0: sub = 0, bias 16.5). */
    void (*legacy_levels)(const float *x, float sub, float id, float bias, int maxq, uint8_t *L);
    /* Q3_K's symmetric fits of one super-block: make_q3_quants(16, 4, ...) of each of the 16
     * groups of 16 values in x[256]; L[256] the quants + 4 (0 in an all-zero group), scales[16]. */
    void (*q3_groups)(const float *x, int8_t *L, float *scales);
} quant_searches;

/* The fast searches when this CPU can run them, else NULL. */
const quant_searches *quant_fast_searches(void);

#endif
