/* quants_iq.h - internal to codec/: the i-quant and ternary kernels, one quant_kernels per type,
 * registered by quant_get (codec/quants.c). Everything else reaches them through quant_get.
 *
 *   quants_iq2.c  IQ2_XXS, IQ2_XS, IQ2_S   (8-value points of IQ2*_GRID, signs apart)
 *   quants_iq1.c  IQ1_S, IQ1_M             (8-value points of IQ1S_GRID, shifted by +-1/8)
 *   quants_iq3.c  IQ3_XXS, IQ3_S           (4-value points of IQ3*_GRID, signs apart)
 *                 TQ1_0, TQ2_0             (ternary: d * {-1, 0, 1})
 *
 * The contract is quant_kernels' (codec/quants.h), with these specifics:
 *   - quantize_weighted(x, y, n, importance) writes what llama.cpp's quantize_X writes for one
 *     row of n values (n a multiple of 256) with quant_weights = importance, byte for byte;
 *   - with importance == NULL, the types ggml can quantize without one (IQ3_XXS, IQ3_S, IQ2_S,
 *     IQ1_M, TQ1_0, TQ2_0: its quantize_row_X_ref / quantize_X with NULL weights, each with its
 *     own fallback weights) give ggml's bytes; the three ggml asserts on (IQ2_XXS, IQ2_XS,
 *     IQ1_S) use an importance of 1 for every column. llama-quantize itself refuses IQ2_XXS,
 *     IQ2_XS, IQ2_S, IQ1_S and IQ1_M (but IQ1_M for token_embd / output) without an imatrix;
 *     slmc's quantize command does the same (quant/plan.h: plan_needs_imatrix);
 *   - quantize_ref / quantize are quantize_weighted with importance NULL; the *_ref and fast
 *     variants give the same bytes;
 *   - dequantize gives llama.cpp's dequantize_row_X values bit for bit.
 * The grids' search tables (each non-grid point's nearest grid points) are built on first use,
 * once, thread-safely; the kernels never fail and never allocate afterwards.
 */
#ifndef SLMC_QUANTS_IQ_H
#define SLMC_QUANTS_IQ_H

#include "codec/quants.h"

extern const quant_kernels QUANT_IQ2_XXS, QUANT_IQ2_XS, QUANT_IQ2_S; /* quants_iq2.c */
extern const quant_kernels QUANT_IQ1_S, QUANT_IQ1_M;                 /* quants_iq1.c */
extern const quant_kernels QUANT_IQ3_XXS, QUANT_IQ3_S;               /* quants_iq3.c */
extern const quant_kernels QUANT_TQ1_0, QUANT_TQ2_0;                 /* quants_iq3.c */

#endif
