/* quants.c - reference block quantization kernels (see quants.h, docs/quant-types.md).
 *
 * Reading order:
 *   1. the block structs (ggml's exact layouts: codec/blocks.h)
 *   2. small helpers: rounding, fp16 stores, the scale packing of Q3_K / Q4_K / Q5_K (the
 *      unpacking is in blocks.h)
 *   3. the scale searches shared by several types (make_qx_quants, make_qkx2_quants, ...)
 *   4. legacy types Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 (blocks of 32)
 *   5. K-quants Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K (super-blocks of 256)
 *   5a. the search that improves the weighted K-quant blocks of llama.cpp's algorithm
 *   5b. non-linear 4-bit IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256)
 *   6. float types and the kernel table
 *
 * The algorithms are llama.cpp's (ggml-quants.c), rewritten here. To give the same bytes, every
 * floating-point expression keeps llama.cpp's order of operations: (a*b)*c is not a*(b*c) in
 * floats, and one differing rounding changes a quant. So a few expressions look oddly
 * parenthesised on purpose; do not "simplify" them.
 *
 * The drivers take their scale searches from a table (quant_searches) as a parameter:
 * quantize_ref / quantize_weighted_ref always pass the reference ones below, quantize /
 * quantize_weighted the bit-identical AVX2 ones from quants_fast.c when the CPU has AVX2.
 */
#include "quants.h"

#include "codec/blocks.h"
#include "codec/iq_grids.h"
#include "codec/types.h"
#include "codec/quants_iq.h"
#include "codec/quants_util.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#ifdef __clang__
/* a*b+c must stay two roundings (as in llama.cpp's build), never one fused multiply-add.
 * gcc in -std=c11 mode never contracts; clang needs to be told. */
#pragma STDC FP_CONTRACT OFF
#endif

/* ===================================================================== 1. block layouts
 * ggml's block structs (block_q4_0 ... block_iq4_xs), QK_LEGACY (32) and QK_K (256) and the
 * unpackers of the packed K-quant scales (k4_scale_min, q3_scale) are in codec/blocks.h. */

/* ===================================================================== 2. helpers */

static inline float from_half(ggml_half h) { return fp16_to_f32(h); }

/* Truncate toward zero into [lo, hi]: the legacy quantizers' "(int8_t)(v + 8.5f)" rounding,
 * without undefined behaviour when v is NaN or out of range. */
static inline int trunc_clamp(float v, int lo, int hi) {
    if (!(v >= (float)lo)) return lo; /* also NaN */
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* 2-bit quants L[0..255] (values 0..3) into 64 bytes: for each half of 128 values, byte l
 * holds elements l, l+32, l+64, l+96 in bits 0-1, 2-3, 4-5, 6-7. Used by Q2_K and Q3_K. */
static void pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* Q4_K / Q5_K scales: 8 six-bit scales and 8 six-bit mins in 12 bytes. Sub-blocks 0-3 use
 * bytes 0-3 (scale) and 4-7 (min) whole; sub-blocks 4-7 put their low 4 bits in bytes 8-11
 * and their top 2 bits in the spare top bits of bytes 0-7. */
static void pack_k4_scales(const uint8_t ls[8], const uint8_t lm[8], uint8_t scales[12]) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q3_K scales: 16 six-bit values (0..63) in 12 bytes. Low nibbles: scales 0-7 in the low
 * halves of bytes 0-7, scales 8-15 in the high halves. Top 2 bits: scale j goes to byte
 * 8 + j%4, bit pair j/4. */
static void pack_q3_scales(const int Ls[16], uint8_t scales[12]) {
    memset(scales, 0, 12);
    for (int j = 0; j < 16; ++j) {
        int l = Ls[j];
        if (j < 8)
            scales[j] = (uint8_t)(l & 0xF);
        else
            scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
        scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
}

/* ===================================================================== 3. scale searches */

/* The value of largest magnitude, sign kept (the first one on ties); 0 for an empty or all-zero
 * input. The symmetric searches map it to -nmax. */
static float largest_magnitude(const float *x, int n) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    return max;
}

/* Symmetric quantization of n values to integers l in [-nmax, nmax-1], returning the scale
 * (value ~ scale * l); L receives l + nmax (0..2*nmax-1).
 *
 * The first guess maps the value of largest magnitude to -nmax; the scale is refit by
 * weighted least squares (scale = sum w x l / sum w l^2) and 18 nearby guesses
 * (nmax +- 0.1..0.9) are tried, keeping the one that minimises the weighted squared error,
 * i.e. maximises (sum w x l)^2 / sum w l^2. Weights are qw, or x^2 when qw is NULL (the
 * unweighted K-quants: big values matter most). This is llama.cpp's rmse_type 1, the only
 * mode its quantizers use. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = largest_magnitude(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i)
                L[i] = (int8_t)(nmax + iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's symmetric search: like make_qx_quants (weights x^2, range [-nmax, nmax-1]) but
 * instead of trying other scales it moves single quants: for each value, the level that would
 * be best with the other values' fit fixed, kept when the total weighted error drops. Up to
 * 5 passes. L receives quant + nmax. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = largest_magnitude(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i]; /* the fit without value i */
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = iclamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric quantization with a minimum: value ~ scale * L - the_min, L in [0, nmax],
 * the_min >= 0 (the block minimum is never above 0). Returns the scale.
 *
 * Starts from min/max mapped to 0/nmax, then tries nstep+1 scales (rmin + rdelta*k + nmax
 * levels across the range); for each, rounds, solves the 2x2 weighted least-squares problem
 * for (scale, min), and keeps the fit with the smallest weighted error (absolute error when
 * use_mad, else squared). `Laux` is scratch of n bytes.
 *
 * make_qkx2 (the reference K-quants) and make_qkx3 (the importance-weighted ones) differ only
 * in guards: qkx3 also accepts weights == NULL (meaning x^2) and never rounds an out-of-range
 * or non-finite value; on ordinary data both give the same quants. */
static float make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                             uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad, bool guarded) {
    float min = x[0], max = x[0];
    float sum_w = weights ? weights[0] : x[0] * x[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights ? weights[i] : x[i] * x[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (guarded ? max <= min : max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        L[i] = (uint8_t)iclamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        float w = weights ? weights[i] : x[i] * x[i];
        best_error += w * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l;
            if (guarded) {
                float v = iscale * (x[i] - min);
                l = v > 0 ? nearest_int(v < nmax ? v : (float)nmax) : 0;
            } else {
                l = iclamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
            }
            Laux[i] = (uint8_t)l;
            float w = weights ? weights[i] : x[i] * x[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) { /* a positive minimum is not representable: refit scale alone */
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                float w = weights ? weights[i] : x[i] * x[i];
                cur_error += w * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Quantize n non-negative values (the sub-block scales or mins of a K-quant super-block) to
 * integers in [0, nmax] with one scale, minimising the error weighted by quant_weights:
 * 9 candidate scales, then single-quant moves as in make_q3_quants. Returns the scale. */
float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
    if (max < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += quant_weights[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = imin(nmax, nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * l;
            mse += quant_weights[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = imin(nmax, nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = quant_weights[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = quant_weights[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Importance weights of one group, as llama.cpp combines an imatrix entry with the value:
 * w = importance * sqrt(sigma2 + x^2). */
static void importance_weights(int n, const float *x, const float *importance, float sigma2, float *w) {
    for (int j = 0; j < n; ++j) w[j] = importance[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* The searches as a table. Each driver below that searches takes the table as its last
 * parameter and has two entry points in the kernel table (section 6): one with the reference
 * searches (quantize_X_ref, quantize_X_weighted_ref), one with fast_searches() (quantize_X_fast,
 * quantize_X_weighted). */
static float iq4_fit_group(const float *xb, const float *weight, int ntry, uint8_t *Lb);
static void iq4_levels(const float *x, float id, int n, uint8_t *L);
static void quantize_q8_0_ref(const float *x, void *vy, int64_t n);
static void quantize_q4_0_ref(const float *x, void *vy, int64_t n);
static void legacy_levels(const float *x, float sub, float id, float bias, int maxq, uint8_t *L);
static void q3_groups(const float *x, int8_t *L, float *scales) {
    for (int j = 0; j < QK_K / 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
}

static const quant_searches REF_SEARCHES = {make_qkx_quants, make_qx_quants, iq4_fit_group, iq4_levels,
                                             quantize_q8_0_ref, quantize_q4_0_ref, legacy_levels, q3_groups};

/* The searches for quantize / quantize_weighted: the bit-identical fast ones from quants_fast.c
 * when this CPU runs them, else the reference ones. */
static const quant_searches *fast_searches(void) {
    const quant_searches *fast = quant_fast_searches();
    return fast ? fast : &REF_SEARCHES;
}

/* ===================================================================== 4. legacy types */

/* Value of largest magnitude, with its sign (the first one on ties). */
static float signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; ++j) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

/* 1/d, or 0 when d is 0 or so small that 1/d overflows (quants then all come out 0). */
static inline float safe_inverse(float d) {
    if (!d) return 0.0f;
    float id = 1.0f / d;
    return isfinite(id) ? id : 0.0f;
}

/* Q4_0: d = max / -8 so the largest-magnitude value lands on quant 0 (-8) exactly. */
static void quantize_q4_0_ref(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, x += QK_LEGACY) {
        const float d = signed_absmax(x, QK_LEGACY) / -8;
        const float id = safe_inverse(d);
        y[i].d = to_half(d);
        for (int j = 0; j < QK_LEGACY / 2; ++j) {
            int q0 = trunc_clamp(x[j] * id + 8.5f, 0, 15);
            int q1 = trunc_clamp(x[j + QK_LEGACY / 2] * id + 8.5f, 0, 15);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q4_0_fast(const float *x, void *vy, int64_t n) { fast_searches()->q4_0_rows(x, vy, n); }

static void dequantize_q4_0(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d);
        for (int j = 0; j < QK_LEGACY / 2; ++j) {
            y[j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + QK_LEGACY / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* Weighted Q4_0: least-squares scale search over the block with importance weights. The
 * spread sigma2 is over the whole row, so call this once per row. */
static void q4_0_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { quantize_q4_0_ref(x, vy, n); return; }
    block_q4_0 *y = vy;
    const float sigma2 = sum_sq(x, n) / n;
    float w[QK_LEGACY];
    int8_t L[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) {
        importance_weights(QK_LEGACY, x + QK_LEGACY * i, importance + QK_LEGACY * i, sigma2, w);
        y[i].d = to_half(s->qx(QK_LEGACY, 8, x + QK_LEGACY * i, L, w));
        for (int j = 0; j < QK_LEGACY / 2; ++j) y[i].qs[j] = (uint8_t)(L[j] | (L[j + QK_LEGACY / 2] << 4));
    }
}

static void quantize_q4_0_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q4_0_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q4_0_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q4_0_weighted(x, y, n, importance, fast_searches());
}

/* Q4_1: d spans min..max in 15 steps, m = min. */
/* One block of 32 rounded for the legacy types (quant_searches.legacy_levels). */
static void legacy_levels(const float *x, float sub, float id, float bias, int maxq, uint8_t *L) {
    for (int j = 0; j < QK_LEGACY; ++j) L[j] = (uint8_t)trunc_clamp((x[j] - sub) * id + bias, 0, maxq);
}

/* Q4_1: d = (max - min) / 15, m = min, q = trunc_clamp((x - min) / d + 0.5, 0, 15). */
static void q4_1_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q4_1 *y = vy;
    uint8_t L[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, x += QK_LEGACY) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK_LEGACY; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = safe_inverse(d);
        y[i].d = to_half(d);
        y[i].m = to_half(min);
        s->legacy_levels(x, min, id, 0.5f, 15, L);
        for (int j = 0; j < QK_LEGACY / 2; ++j) y[i].qs[j] = (uint8_t)(L[j] | (L[j + QK_LEGACY / 2] << 4));
    }
}
static void quantize_q4_1_ref(const float *x, void *vy, int64_t n) { q4_1_rows(x, vy, n, &REF_SEARCHES); }
static void quantize_q4_1_fast(const float *x, void *vy, int64_t n) { q4_1_rows(x, vy, n, fast_searches()); }

static void dequantize_q4_1(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d), m = from_half(x[i].m);
        for (int j = 0; j < QK_LEGACY / 2; ++j) {
            y[j] = (x[i].qs[j] & 0x0F) * d + m;
            y[j + QK_LEGACY / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

static void q4_1_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { quantize_q4_1_ref(x, vy, n); return; }
    block_q4_1 *y = vy;
    const float sigma2 = sum_sq(x, n) / n;
    float w[QK_LEGACY], min;
    uint8_t L[QK_LEGACY], Laux[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) {
        importance_weights(QK_LEGACY, x + QK_LEGACY * i, importance + QK_LEGACY * i, sigma2, w);
        float d = s->qkx(QK_LEGACY, 15, x + QK_LEGACY * i, w, L, &min, Laux, -0.9f, 0.05f, 36, false, true);
        y[i].d = to_half(d);
        y[i].m = to_half(-min);
        for (int j = 0; j < QK_LEGACY / 2; ++j) y[i].qs[j] = (uint8_t)(L[j] | (L[j + QK_LEGACY / 2] << 4));
    }
}

static void quantize_q4_1_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q4_1_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q4_1_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q4_1_weighted(x, y, n, importance, fast_searches());
}

/* Q5_0 / Q5_1 store 5-bit quants as a low nibble (qs, paired like Q4_0) plus the 5th bit of
 * element j in bit j of qh. */
static void pack_5bit(const uint8_t L[QK_LEGACY], uint8_t qs[QK_LEGACY / 2], uint8_t qh_bytes[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < QK_LEGACY / 2; ++j) {
        qs[j] = (uint8_t)((L[j] & 0x0F) | ((L[j + QK_LEGACY / 2] & 0x0F) << 4));
        qh |= ((L[j] & 0x10u) >> 4) << j;
        qh |= ((L[j + QK_LEGACY / 2] & 0x10u) >> 4) << (j + QK_LEGACY / 2);
    }
    for (int b = 0; b < 4; ++b) qh_bytes[b] = (uint8_t)(qh >> (8 * b));
}

/* The 5-bit quant of element j (0..31). */
static inline int unpack_5bit(const uint8_t *qs, const uint8_t *qh_bytes, int j) {
    uint32_t qh = (uint32_t)qh_bytes[0] | (uint32_t)qh_bytes[1] << 8 | (uint32_t)qh_bytes[2] << 16 |
                  (uint32_t)qh_bytes[3] << 24;
    int low = j < QK_LEGACY / 2 ? qs[j] & 0x0F : qs[j - QK_LEGACY / 2] >> 4;
    return low | (int)(((qh >> j) & 1) << 4);
}

static void q5_0_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q5_0 *y = vy;
    uint8_t L[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, x += QK_LEGACY) {
        const float d = signed_absmax(x, QK_LEGACY) / -16;
        const float id = safe_inverse(d);
        y[i].d = to_half(d);
        s->legacy_levels(x, 0.0f, id, 16.5f, 31, L); /* x - 0 is x exactly */
        pack_5bit(L, y[i].qs, y[i].qh);
    }
}
static void quantize_q5_0_ref(const float *x, void *vy, int64_t n) { q5_0_rows(x, vy, n, &REF_SEARCHES); }
static void quantize_q5_0_fast(const float *x, void *vy, int64_t n) { q5_0_rows(x, vy, n, fast_searches()); }

static void dequantize_q5_0(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d);
        for (int j = 0; j < QK_LEGACY; ++j) y[j] = (unpack_5bit(x[i].qs, x[i].qh, j) - 16) * d;
    }
}

static void q5_0_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { quantize_q5_0_ref(x, vy, n); return; }
    block_q5_0 *y = vy;
    const float sigma2 = sum_sq(x, n) / n;
    float w[QK_LEGACY];
    int8_t L[QK_LEGACY];
    uint8_t U[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) {
        importance_weights(QK_LEGACY, x + QK_LEGACY * i, importance + QK_LEGACY * i, sigma2, w);
        y[i].d = to_half(s->qx(QK_LEGACY, 16, x + QK_LEGACY * i, L, w));
        for (int j = 0; j < QK_LEGACY; ++j) U[j] = (uint8_t)L[j];
        pack_5bit(U, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_0_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q5_0_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q5_0_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q5_0_weighted(x, y, n, importance, fast_searches());
}

static void q5_1_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q5_1 *y = vy;
    uint8_t L[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, x += QK_LEGACY) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK_LEGACY; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = safe_inverse(d);
        y[i].d = to_half(d);
        y[i].m = to_half(min);
        s->legacy_levels(x, min, id, 0.5f, 31, L);
        pack_5bit(L, y[i].qs, y[i].qh);
    }
}
static void quantize_q5_1_ref(const float *x, void *vy, int64_t n) { q5_1_rows(x, vy, n, &REF_SEARCHES); }
static void quantize_q5_1_fast(const float *x, void *vy, int64_t n) { q5_1_rows(x, vy, n, fast_searches()); }

static void dequantize_q5_1(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d), m = from_half(x[i].m);
        for (int j = 0; j < QK_LEGACY; ++j) y[j] = unpack_5bit(x[i].qs, x[i].qh, j) * d + m;
    }
}

static void q5_1_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { quantize_q5_1_ref(x, vy, n); return; }
    block_q5_1 *y = vy;
    const float sigma2 = sum_sq(x, n) / n;
    float w[QK_LEGACY], min;
    uint8_t L[QK_LEGACY], Laux[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) {
        importance_weights(QK_LEGACY, x + QK_LEGACY * i, importance + QK_LEGACY * i, sigma2, w);
        float d = s->qkx(QK_LEGACY, 31, x + QK_LEGACY * i, w, L, &min, Laux, -0.9f, 0.05f, 36, false, true);
        y[i].d = to_half(d);
        y[i].m = to_half(-min);
        pack_5bit(L, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_1_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q5_1_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q5_1_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q5_1_weighted(x, y, n, importance, fast_searches());
}

/* Q8_0: d = amax / 127, q = round(x / d) (roundf: ties away from zero). */
static void quantize_q8_0_ref(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, x += QK_LEGACY) {
        float amax = 0;
        for (int j = 0; j < QK_LEGACY; ++j) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = safe_inverse(d);
        y[i].d = to_half(d);
        for (int j = 0; j < QK_LEGACY; ++j) {
            float r = roundf(x[j] * id); /* NaN only for NaN or Inf inputs: stored as 0 */
            y[i].qs[j] = (int8_t)(r != r ? 0 : r > 127 ? 127 : r < -128 ? -128 : r);
        }
    }
}

static void quantize_q8_0_fast(const float *x, void *vy, int64_t n) { fast_searches()->q8_0_rows(x, vy, n); }

static void dequantize_q8_0(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d);
        for (int j = 0; j < QK_LEGACY; ++j) y[j] = x[i].qs[j] * d;
    }
}

/* Weighted Q8_0 (llama.cpp ignores the weights for Q8_0): the same least-squares scale
 * search as Q4_0, over the full int8 range [-128, 127]. */
static void q8_0_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { quantize_q8_0_ref(x, vy, n); return; }
    block_q8_0 *y = vy;
    const float sigma2 = sum_sq(x, n) / n;
    float w[QK_LEGACY];
    int8_t L[QK_LEGACY];
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) {
        importance_weights(QK_LEGACY, x + QK_LEGACY * i, importance + QK_LEGACY * i, sigma2, w);
        /* L holds q + 128 in an int8_t: 0..255 wraps, so undo it through uint8_t */
        y[i].d = to_half(s->qx(QK_LEGACY, 128, x + QK_LEGACY * i, L, w));
        for (int j = 0; j < QK_LEGACY; ++j) y[i].qs[j] = (int8_t)((int)(uint8_t)L[j] - 128);
    }
}

static void quantize_q8_0_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q8_0_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q8_0_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q8_0_weighted(x, y, n, importance, fast_searches());
}

/* ===================================================================== 5. K-quants */

/* The weighted K-quant drivers run llama.cpp's algorithm, then improve each block (section 5a). */
static void k_refine_row(int type, const float *x, void *y, int64_t n, const float *importance);

/* Q2_K requantization: with the final (fp16-rounded) scales and mins, each value gets the
 * nearest level of its sub-block of 16. Shared by the reference and weighted versions. */
static void q2_K_requantize(const float *x, const block_q2_K *b, uint8_t *L) {
    const float dall = from_half(b->d), mall = from_half(b->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * (b->scales[j] & 0xF);
        if (!d) continue;
        const float dm = mall * (b->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = (uint8_t)iclamp(nearest_int((x[16 * j + ii] + dm) / d), 0, 3);
    }
}

/* Q2_K: per 16 values a 2-bit fit with a minimum (make_qkx_quants, weights |x|, absolute
 * error), then the 16 scales and 16 mins are each quantized to 4 bits against their maximum. */
static void q2_K_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q2_K *y = vy;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = s->qkx(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true, false);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < QK_K / 16; ++j) y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            y[i].d = to_half(max_scale / 15.f);
        } else {
            memset(y[i].scales, 0, sizeof y[i].scales);
            y[i].d = to_half(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < QK_K / 16; ++j) y[i].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = to_half(max_min / 15.f);
        } else {
            y[i].dmin = to_half(0.f);
        }
        q2_K_requantize(x, &y[i], L);
        pack_2bit(L, y[i].qs);
    }
}

static void quantize_q2_K_ref(const float *x, void *y, int64_t n) { q2_K_rows(x, y, n, &REF_SEARCHES); }
static void quantize_q2_K_fast(const float *x, void *y, int64_t n) { q2_K_rows(x, y, n, fast_searches()); }

static void dequantize_q2_K(const void *vx, float *y, int64_t n) {
    const block_q2_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = from_half(x[i].d), min = from_half(x[i].dmin);
        for (int j = 0; j < QK_K; ++j) {
            /* element j: byte (j/128)*32 + j%32, bit pair (j%128)/32, sub-block j/16 */
            const uint8_t sc = x[i].scales[j / 16];
            const int q = (x[i].qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3;
            const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
            *y++ = dl * q - ml;
        }
    }
}

/* Weighted Q2_K: per-16 fits by make_qkx_quants with importance weights and squared error,
 * then scales and mins quantized by make_qp_quants weighted by each sub-block's total weight. */
static void q2_K_weighted_llama(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_q2_K *y = vy;
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        const float sigma2 = sum_sq(x, QK_K) / QK_K;
        for (int j = 0; j < QK_K / 16; ++j) {
            importance_weights(16, x + 16 * j, importance + QK_K * i + 16 * j, sigma2, weight);
            sw[j] = 0;
            for (int l = 0; l < 16; ++l) sw[j] += weight[l];
            scales[j] = s->qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false, true);
        }
        const float dm = make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
        const float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
        y[i].d = to_half(dm);
        y[i].dmin = to_half(mm);
        for (int j = 0; j < QK_K / 16; ++j) y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        q2_K_requantize(x, &y[i], L);
        pack_2bit(L, y[i].qs);
    }
}

static void q2_K_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { q2_K_rows(x, vy, n, s); return; }
    q2_K_weighted_llama(x, vy, n, importance, s);
    k_refine_row(GGML_TYPE_Q2_K, x, vy, n, importance);
}

static void quantize_q2_K_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q2_K_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q2_K_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q2_K_weighted(x, y, n, importance, fast_searches());
}

/* Q3_K (and Q6_K) requantization with the final signed scales; L gets quant + 4. */
static void q3_K_pack(uint8_t *L, block_q3_K *b);
static void q3_K_finish(const float *x, block_q3_K *b, int8_t *Ls8) {
    uint8_t L[QK_K];
    for (int j = 0; j < QK_K; ++j) L[j] = (uint8_t)Ls8[j];
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = from_half(b->d) * q3_scale(b->scales, j);
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = (uint8_t)(iclamp(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
    }
    q3_K_pack(L, b);
}

/* Q3_K quants L[0..255] (0..7) into hmask (high bit) and qs (low 2 bits). L is overwritten. */
static void q3_K_pack(uint8_t *L, block_q3_K *b) {
    /* high bit: element j goes to hmask[j % 32], bit j / 32 */
    memset(b->hmask, 0, sizeof b->hmask);
    for (int j = 0; j < QK_K; ++j) { /* no branch: L[j] > 3 is a coin toss for the predictor */
        const unsigned high = L[j] > 3;
        b->hmask[j % 32] |= (uint8_t)(high << (j / 32));
        L[j] = (uint8_t)(L[j] - 4 * high);
    }
    pack_2bit(L, b->qs);
}

/* Q3_K: per 16 values a symmetric 3-bit fit (make_q3_quants, through s->q3_groups), then the
 * 16 signed scales are quantized to 6 bits against the one of largest magnitude. */
static void q3_K_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q3_K *y = vy;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    int Ls[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max_scale = 0, amax = 0;
        s->q3_groups(x, L, scales);
        for (int j = 0; j < QK_K / 16; ++j) {
            if (fabsf(scales[j]) > amax) {
                amax = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; ++j) Ls[j] = iclamp((int8_t)nearest_int(iscale * scales[j]), -32, 31) + 32;
            pack_q3_scales(Ls, y[i].scales);
            y[i].d = to_half(1 / iscale);
        } else {
            memset(y[i].scales, 0, sizeof y[i].scales);
            y[i].d = to_half(0.f);
        }
        q3_K_finish(x, &y[i], L);
    }
}

static void quantize_q3_K_ref(const float *x, void *y, int64_t n) { q3_K_rows(x, y, n, &REF_SEARCHES); }
static void quantize_q3_K_fast(const float *x, void *y, int64_t n) { q3_K_rows(x, y, n, fast_searches()); }

static void dequantize_q3_K(const void *vx, float *y, int64_t n) {
    const block_q3_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d_all = from_half(x[i].d);
        for (int j = 0; j < QK_K; ++j) {
            const int low = (x[i].qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3;
            const int high = (x[i].hmask[j % 32] >> (j / 32)) & 1;
            const float dl = d_all * q3_scale(x[i].scales, j / 16);
            *y++ = dl * (low - (high ? 0 : 4));
        }
    }
}

/* Weighted Q3_K: per-16 fits by make_qx_quants with importance weights, then the 16 scales
 * by make_qx_quants (6 bits) weighted by each sub-block's total weight. */
static void q3_K_weighted_llama(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_q3_K *y = vy;
    int8_t L[QK_K], Ls8[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];
    int Ls[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
        for (int j = 0; j < QK_K / 16; ++j) {
            importance_weights(16, x + 16 * j, importance + QK_K * i + 16 * j, sigma2, weight);
            float sumw = 0;
            for (int l = 0; l < 16; ++l) sumw += weight[l];
            sw[j] = sumw;
            scales[j] = s->qx(16, 4, x + 16 * j, L + 16 * j, weight);
        }
        const float d_block = s->qx(QK_K / 16, 32, scales, Ls8, sw);
        for (int j = 0; j < QK_K / 16; ++j) Ls[j] = Ls8[j];
        pack_q3_scales(Ls, y[i].scales);
        y[i].d = to_half(d_block);
        q3_K_finish(x, &y[i], L);
    }
}

static void q3_K_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { q3_K_rows(x, vy, n, s); return; }
    q3_K_weighted_llama(x, vy, n, importance, s);
    k_refine_row(GGML_TYPE_Q3_K, x, vy, n, importance);
}

static void quantize_q3_K_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q3_K_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q3_K_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q3_K_weighted(x, y, n, importance, fast_searches());
}

/* Q4_K / Q5_K share everything but the number of levels (nmax 15 or 31) and the packing. */

/* Reference sub-block fits: per 32 values an asymmetric fit (make_qkx_quants, weights
 * rms + |x|), then 8 scales and 8 mins quantized to 6 bits against their maxima. Fills the
 * 12 scale bytes, d and dmin. */
static void k4_ref_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *L, uint8_t scales12[12],
                          ggml_half *d, ggml_half *dmin, const quant_searches *s) {
    uint8_t Laux[32], ls[8], lm[8];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = s->qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; ++j) {
        /* llama.cpp stores nearest_int into a uint8_t before MIN(63, .): keep the wrap */
        ls[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_scale * scales[j]));
        lm[j] = (uint8_t)imin(63, (uint8_t)nearest_int(inv_min * mins[j]));
    }
    pack_k4_scales(ls, lm, scales12);
    *d = to_half(max_scale / 63.f);
    *dmin = to_half(max_min / 63.f);
}

/* Weighted sub-block fits for Q4_K / Q5_K (make_qkx3-style, importance weights; or
 * rms + |x| weights when importance is NULL), scales and mins by make_qp_quants. */
static void k4_weighted_scales(const float *x, const float *importance, int nmax, uint8_t *L,
                               uint8_t scales12[12], ggml_half *d, ggml_half *dmin, const quant_searches *s) {
    uint8_t Laux[32], Ls[8], Lm[8];
    float weights[32], sw[8], mins[8], scales[8];
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    const float av_x = sqrtf(sigma2);
    for (int j = 0; j < QK_K / 32; ++j) {
        if (importance)
            importance_weights(32, x + 32 * j, importance + 32 * j, sigma2, weights);
        else
            for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = s->qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false, true);
    }
    const float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    pack_k4_scales(Ls, Lm, scales12);
    *d = to_half(d_block);
    *dmin = to_half(m_block);
}

/* Final quants of Q4_K / Q5_K with the stored (rounded) scales and mins. */
static void k4_requantize(const float *x, int nmax, const uint8_t scales12[12], ggml_half hd, ggml_half hdmin,
                          uint8_t *L) {
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        k4_scale_min(j, scales12, &sc, &m);
        const float d = from_half(hd) * sc;
        if (!d) continue;
        const float dm = from_half(hdmin) * m;
        for (int ii = 0; ii < 32; ++ii)
            L[32 * j + ii] = (uint8_t)iclamp(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
    }
}

/* Q4_K nibbles: each 64 values take 32 bytes, the first 32 in the low nibbles. */
static void q4_K_pack(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < QK_K; j += 64, qs += 32)
        for (int l = 0; l < 32; ++l) qs[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void q4_K_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q4_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        k4_ref_scales(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin, s);
        k4_requantize(x, 15, y[i].scales, y[i].d, y[i].dmin, L);
        q4_K_pack(L, y[i].qs);
    }
}

static void quantize_q4_K_ref(const float *x, void *y, int64_t n) { q4_K_rows(x, y, n, &REF_SEARCHES); }
static void quantize_q4_K_fast(const float *x, void *y, int64_t n) { q4_K_rows(x, y, n, fast_searches()); }

static void q4_K_weighted_llama(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_q4_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        k4_weighted_scales(x, importance + QK_K * i, 15, L, y[i].scales, &y[i].d, &y[i].dmin, s);
        k4_requantize(x, 15, y[i].scales, y[i].d, y[i].dmin, L);
        q4_K_pack(L, y[i].qs);
    }
}

static void q4_K_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { q4_K_rows(x, vy, n, s); return; }
    q4_K_weighted_llama(x, vy, n, importance, s);
    k_refine_row(GGML_TYPE_Q4_K, x, vy, n, importance);
}

static void quantize_q4_K_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q4_K_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q4_K_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q4_K_weighted(x, y, n, importance, fast_searches());
}

static void dequantize_q4_K(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = from_half(x[i].d), min = from_half(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0; j < QK_K / 32; j += 2, q += 32) {
            uint8_t sc, m;
            k4_scale_min(j, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            k4_scale_min(j + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* Q5_K: low nibbles as in Q4_K; the 5th bit of element 64k+l goes to bit 2k of qh[l], of
 * element 64k+32+l to bit 2k+1. */
static void q5_K_pack(const uint8_t *L, uint8_t *qs, uint8_t *qh) {
    memset(qh, 0, QK_K / 8);
    for (int k = 0; k < QK_K / 64; ++k, qs += 32) {
        for (int l = 0; l < 32; ++l) {
            int l1 = L[64 * k + l], l2 = L[64 * k + l + 32];
            if (l1 > 15) { l1 -= 16; qh[l] |= (uint8_t)(1u << (2 * k)); }
            if (l2 > 15) { l2 -= 16; qh[l] |= (uint8_t)(2u << (2 * k)); }
            qs[l] = (uint8_t)(l1 | (l2 << 4));
        }
    }
}

static void q5_K_rows(const float *x, void *vy, int64_t n, const quant_searches *s) {
    block_q5_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        k4_ref_scales(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin, s);
        k4_requantize(x, 31, y[i].scales, y[i].d, y[i].dmin, L);
        q5_K_pack(L, y[i].qs, y[i].qh);
    }
}

static void quantize_q5_K_ref(const float *x, void *y, int64_t n) { q5_K_rows(x, y, n, &REF_SEARCHES); }
static void quantize_q5_K_fast(const float *x, void *y, int64_t n) { q5_K_rows(x, y, n, fast_searches()); }

static void q5_K_weighted_llama(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_q5_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        k4_weighted_scales(x, importance + QK_K * i, 31, L, y[i].scales, &y[i].d, &y[i].dmin, s);
        k4_requantize(x, 31, y[i].scales, y[i].d, y[i].dmin, L);
        q5_K_pack(L, y[i].qs, y[i].qh);
    }
}

static void q5_K_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    if (!importance) { q5_K_rows(x, vy, n, s); return; }
    q5_K_weighted_llama(x, vy, n, importance, s);
    k_refine_row(GGML_TYPE_Q5_K, x, vy, n, importance);
}

static void quantize_q5_K_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q5_K_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q5_K_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q5_K_weighted(x, y, n, importance, fast_searches());
}

static void dequantize_q5_K(const void *vx, float *y, int64_t n) {
    const block_q5_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = from_half(x[i].d), min = from_half(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        for (int k = 0; k < QK_K / 64; ++k, ql += 32) {
            uint8_t sc, m;
            k4_scale_min(2 * k, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            k4_scale_min(2 * k + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            const uint8_t u1 = (uint8_t)(1u << (2 * k)), u2 = (uint8_t)(2u << (2 * k));
            for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* Q6_K: per 16 values a symmetric 6-bit fit (make_qx_quants with weights x^2, or the
 * importance directly), the 16 signed scales quantized to int8 against the largest. */
static void q6_K_pack(const uint8_t *L, block_q6_K *y);
static void quantize_q6_K_block(const float *x, block_q6_K *y, const float *importance, const quant_searches *s) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float *qw = importance ? importance + 16 * ib : NULL;
        scales[ib] = s->qx(16, 32, x + 16 * ib, L + 16 * ib, qw);
        if (fabsf(scales[ib]) > max_abs_scale) {
            max_abs_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = to_half(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = from_half(y->d) * y->scales[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ++ii)
            L[16 * j + ii] = (int8_t)(iclamp(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    q6_K_pack((const uint8_t *)L, y);
}

/* Q6_K quants L[0..255] (0..63) into ql / qh. Per 128 values: ql[l] = low nibbles of l and
 * l+64, ql[l+32] = of l+32 and l+96; qh[l] = the top 2 bits of l, l+32, l+64, l+96. */
static void q6_K_pack(const uint8_t *L, block_q6_K *y) {
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t *q = L + j + l;
            ql[l] = (uint8_t)((q[0] & 0xF) | ((q[64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((q[32] & 0xF) | ((q[96] & 0xF) << 4));
            qh[l] = (uint8_t)((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) | ((q[96] >> 4) << 6));
        }
    }
}

static void quantize_q6_K_ref(const float *x, void *vy, int64_t n) {
    block_q6_K *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i) quantize_q6_K_block(x + QK_K * i, &y[i], NULL, &REF_SEARCHES);
}

static void quantize_q6_K_fast(const float *x, void *vy, int64_t n) {
    block_q6_K *y = vy;
    const quant_searches *s = fast_searches();
    for (int64_t i = 0; i < n / QK_K; ++i) quantize_q6_K_block(x + QK_K * i, &y[i], NULL, s);
}

static void q6_K_weighted_llama(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_q6_K *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i)
        quantize_q6_K_block(x + QK_K * i, &y[i], importance ? importance + QK_K * i : NULL, s);
}

static void q6_K_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    q6_K_weighted_llama(x, vy, n, importance, s);
    if (importance) k_refine_row(GGML_TYPE_Q6_K, x, vy, n, importance);
}

static void quantize_q6_K_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    q6_K_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_q6_K_weighted(const float *x, void *y, int64_t n, const float *importance) {
    q6_K_weighted(x, y, n, importance, fast_searches());
}

static void dequantize_q6_K(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = from_half(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int k = 0; k < QK_K; k += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

/* Q8_K: one float scale per 256 values, the largest magnitude mapped to -127, plus the sums
 * of each 16 quants (what the integer dot products need). */
static void quantize_q8_K_ref(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(&y[i], 0, sizeof y[i]);
        if (!amax) continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) y[i].qs[j] = (int8_t)iclamp(nearest_int(iscale * x[j]), -128, 127);
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[16 * j + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

static void quantize_q8_K_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    (void)importance; /* Q8_K is an activation format: nothing to weigh */
    quantize_q8_K_ref(x, vy, n);
}

static void dequantize_q8_K(const void *vx, float *y, int64_t n) {
    const block_q8_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i)
        for (int j = 0; j < QK_K; ++j) *y++ = x[i].d * x[i].qs[j];
}

/* ===================================================================== 5a. refining weighted K-quants
 *
 * llama.cpp's weighted K-quant search fits each sub-block in floats, then rounds the sub-block
 * scales to 4/6/8 bits and requantizes: the rounding moves every sub-block away from its fit,
 * and nothing afterwards looks at the error of the stored block. Here each block llama.cpp's
 * algorithm produced is a starting point for a search over stored blocks, judged by the exact
 * error of the dequantized values (k_block_error):
 *     sum_i w_i (x_i - y_i)^2  +  0.1 (g-1) * sum_j (sum_{i in j} w_i (x_i - y_i))^2 / sum_{i in j} w_i
 * with llama.cpp's own weights w for the type (importance * sqrt(sigma2 + x^2); the importance
 * alone for Q6_K) and j the sub-blocks of g values. The second term is the "shift" part of a
 * sub-block's error: a change of a sub-block scale or min moves all its g values together, and
 * such correlated errors add up in a dot product with the activations, which the per-value
 * (diagonal) imatrix does not see. Without it the search lowered sum w (x - y)^2 but made the
 * KL divergence of real models worse (docs/quant-types.md has the measurements). The search:
 *   - with the super-block scales (d, dmin) fixed, each sub-block is independent: try integer
 *     scales (and mins) in a small window and the nearest levels for each, keep the best;
 *   - with all integers fixed, the value is linear in (d, dmin), so the best (d, dmin) is a
 *     2x2 weighted least-squares solve; round it to fp16 and redo the sub-blocks (twice);
 *   - starting from llama.cpp's d scaled by a few factors near 1.
 * The block that is stored is the better of llama.cpp's and the search's, so it is never worse.
 * quantize_weighted runs it for Q4_K and Q6_K only (kfmt.refine): for Q2_K every variant tried
 * made the end-to-end KL divergence worse, for Q3_K none helped, and Q5_K's refined tensors
 * made the Q3_K_M mix slightly worse; those keep llama.cpp's blocks. The search handles all five
 * formats (Q2_K, Q3_K and Q5_K were measured with it on), so switching a type on is its
 * kfmt.refine flag. */

/* Weight of the shift term of the error (see the section comment), per value of a sub-block
 * beyond the first: for a sub-block of g values, a constant error d costs (1 + 0.1 (g-1)) times
 * what sum w d^2 alone says. */
#define SHIFT_PENALTY 0.1

/* What a K-quant block can hold, as value = (d * s_j) * q - (dmin * m_j). */
typedef struct {
    int nsub;       /* sub-blocks per 256 values */
    bool has_min;   /* Q2_K / Q4_K / Q5_K: a per-sub-block minimum; else symmetric */
    int smin, smax; /* range of the integer sub-block scales s_j */
    int mmax;       /* range 0..mmax of the integer sub-block mins m_j (has_min only) */
    int qmin, qmax; /* range of the levels q */
    int radius;     /* the sub-block search tries s (and m) within +-radius of the start */
    bool refine;    /* whether quantize_weighted runs the search (see the section comment) */
} kfmt;

/* One block in that canonical form. */
typedef struct {
    float d, dmin;  /* super-block scale and min scale (fp16 values) */
    int s[16];      /* integer sub-block scales */
    int m[16];      /* integer sub-block mins (0 for symmetric types) */
    int8_t q[QK_K]; /* levels */
} kfit;

static bool kfmt_of(int type, kfmt *f) {
    switch (type) {
    case GGML_TYPE_Q2_K: *f = (kfmt){16, true, 0, 15, 15, 0, 3, 2, false}; return true;
    case GGML_TYPE_Q3_K: *f = (kfmt){16, false, -32, 31, 0, -4, 3, 3, false}; return true;
    case GGML_TYPE_Q4_K: *f = (kfmt){8, true, 0, 63, 63, 0, 15, 2, true}; return true;
    case GGML_TYPE_Q5_K: *f = (kfmt){8, true, 0, 63, 63, 0, 31, 2, false}; return true;
    case GGML_TYPE_Q6_K: *f = (kfmt){16, false, -128, 127, 0, -32, 31, 3, true}; return true;
    default: return false;
    }
}

/* The weights the type's llama.cpp algorithm minimises for, for one block of 256. */
static void k_block_weights(int type, const float *x, const float *importance, float *w) {
    if (type == GGML_TYPE_Q6_K) {
        memcpy(w, importance, QK_K * sizeof *w);
        return;
    }
    const float factor = type == GGML_TYPE_Q2_K ? 1.f : 2.f; /* Q2_K: sigma2 = mean x^2, others twice */
    importance_weights(QK_K, x, importance, factor * sum_sq(x, QK_K) / QK_K, w);
}

/* Stored block -> canonical form. */
static void k_decode(int type, const void *vb, kfit *k) {
    memset(k, 0, sizeof *k);
    switch (type) {
    case GGML_TYPE_Q2_K: {
        const block_q2_K *b = vb;
        k->d = from_half(b->d);
        k->dmin = from_half(b->dmin);
        for (int j = 0; j < 16; ++j) { k->s[j] = b->scales[j] & 0xF; k->m[j] = b->scales[j] >> 4; }
        for (int j = 0; j < QK_K; ++j) k->q[j] = (int8_t)((b->qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3);
        break;
    }
    case GGML_TYPE_Q3_K: {
        const block_q3_K *b = vb;
        k->d = from_half(b->d);
        for (int j = 0; j < 16; ++j) k->s[j] = q3_scale(b->scales, j);
        for (int j = 0; j < QK_K; ++j) {
            const int low = (b->qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3;
            const int high = (b->hmask[j % 32] >> (j / 32)) & 1;
            k->q[j] = (int8_t)(low - (high ? 0 : 4));
        }
        break;
    }
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: {
        const bool q5 = type == GGML_TYPE_Q5_K;
        const ggml_half hd = q5 ? ((const block_q5_K *)vb)->d : ((const block_q4_K *)vb)->d;
        const ggml_half hm = q5 ? ((const block_q5_K *)vb)->dmin : ((const block_q4_K *)vb)->dmin;
        const uint8_t *sc12 = q5 ? ((const block_q5_K *)vb)->scales : ((const block_q4_K *)vb)->scales;
        const uint8_t *qs = q5 ? ((const block_q5_K *)vb)->qs : ((const block_q4_K *)vb)->qs;
        k->d = from_half(hd);
        k->dmin = from_half(hm);
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            k4_scale_min(j, sc12, &sc, &m);
            k->s[j] = sc;
            k->m[j] = m;
        }
        for (int j = 0; j < QK_K; ++j) { /* element j: chunk of 64 j/64, byte j%32, high nibble if j%64 >= 32 */
            const int c = j / 64, l = j % 32, hi = (j % 64) >= 32;
            int v = (qs[32 * c + l] >> (4 * hi)) & 0xF;
            if (q5 && (((const block_q5_K *)vb)->qh[l] >> (2 * c + hi)) & 1) v += 16;
            k->q[j] = (int8_t)v;
        }
        break;
    }
    case GGML_TYPE_Q6_K: {
        const block_q6_K *b = vb;
        k->d = from_half(b->d);
        for (int j = 0; j < 16; ++j) k->s[j] = b->scales[j];
        for (int j = 0; j < QK_K; ++j) { /* inverse of q6_K_pack */
            const int h = j / 128, r = j % 128, l = r % 32, quarter = r / 32;
            const uint8_t lowbyte = b->ql[64 * h + l + 32 * (quarter & 1)];
            const int low = (lowbyte >> (4 * (quarter >> 1))) & 0xF;
            const int high = (b->qh[32 * h + l] >> (2 * quarter)) & 3;
            k->q[j] = (int8_t)((low | (high << 4)) - 32);
        }
        break;
    }
    }
}

/* Canonical form -> stored block (every field within its range). */
static void k_encode(int type, const kfit *k, void *vb) {
    uint8_t L[QK_K];
    switch (type) {
    case GGML_TYPE_Q2_K: {
        block_q2_K *b = vb;
        b->d = to_half(k->d);
        b->dmin = to_half(k->dmin);
        for (int j = 0; j < 16; ++j) b->scales[j] = (uint8_t)(k->s[j] | (k->m[j] << 4));
        for (int j = 0; j < QK_K; ++j) L[j] = (uint8_t)k->q[j];
        pack_2bit(L, b->qs);
        break;
    }
    case GGML_TYPE_Q3_K: {
        block_q3_K *b = vb;
        int Ls[16];
        for (int j = 0; j < 16; ++j) Ls[j] = k->s[j] + 32;
        pack_q3_scales(Ls, b->scales);
        b->d = to_half(k->d);
        for (int j = 0; j < QK_K; ++j) L[j] = (uint8_t)(k->q[j] + 4);
        q3_K_pack(L, b);
        break;
    }
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: {
        uint8_t ls[8], lm[8];
        for (int j = 0; j < 8; ++j) { ls[j] = (uint8_t)k->s[j]; lm[j] = (uint8_t)k->m[j]; }
        for (int j = 0; j < QK_K; ++j) L[j] = (uint8_t)k->q[j];
        if (type == GGML_TYPE_Q4_K) {
            block_q4_K *b = vb;
            b->d = to_half(k->d);
            b->dmin = to_half(k->dmin);
            pack_k4_scales(ls, lm, b->scales);
            q4_K_pack(L, b->qs);
        } else {
            block_q5_K *b = vb;
            b->d = to_half(k->d);
            b->dmin = to_half(k->dmin);
            pack_k4_scales(ls, lm, b->scales);
            q5_K_pack(L, b->qs, b->qh);
        }
        break;
    }
    case GGML_TYPE_Q6_K: {
        block_q6_K *b = vb;
        b->d = to_half(k->d);
        for (int j = 0; j < 16; ++j) b->scales[j] = (int8_t)k->s[j];
        for (int j = 0; j < QK_K; ++j) L[j] = (uint8_t)(k->q[j] + 32);
        q6_K_pack(L, b);
        break;
    }
    }
}

/* The exact weighted error of one stored block: dequantized by the type's own dequantizer. */
static double k_block_error(int type, const float *x, const float *w, const void *block) {
    float y[QK_K];
    quant_get(type)->dequantize(block, y, QK_K);
    kfmt f;
    kfmt_of(type, &f);
    const int g = QK_K / f.nsub;
    const double lambda = SHIFT_PENALTY * (g - 1);
    double e = 0;
    for (int j = 0; j < QK_K; j += g) {
        double swd = 0, sw = 0;
        for (int l = j; l < j + g; ++l) {
            const double diff = (double)x[l] - y[l];
            e += w[l] * diff * diff;
            swd += w[l] * diff;
            sw += w[l];
        }
        if (sw > 0) e += lambda * swd * swd / sw;
    }
    return e;
}

/* Best integer scale / min and levels of one sub-block of g values for fixed d and dmin,
 * searched within +-radius of (s0, m0). Levels are the nearest to each value (optimal for
 * fixed scale and min). Writes s, m, q and returns the error (the dequantizer's arithmetic). */
static double k_fit_sub(const kfmt *f, int g, const float *x, const float *w, float d, float dmin, int s0, int m0,
                        int *s, int *m, int8_t *q) {
    double best = INFINITY;
    const int slo = s0 - f->radius < f->smin ? f->smin : s0 - f->radius;
    const int shi = s0 + f->radius > f->smax ? f->smax : s0 + f->radius;
    const int mlo = !f->has_min ? 0 : m0 - f->radius < 0 ? 0 : m0 - f->radius;
    const int mhi = !f->has_min ? 0 : m0 + f->radius > f->mmax ? f->mmax : m0 + f->radius;
    int8_t qt[32];
    const double lambda = SHIFT_PENALTY * (g - 1);
    for (int si = slo; si <= shi; ++si) {
        const float ds = d * si;
        const float ids = safe_inverse(ds);
        for (int mi = mlo; mi <= mhi; ++mi) {
            const float dm = dmin * mi;
            double e = 0, swd = 0, sw = 0;
            for (int l = 0; l < g; ++l) {
                const int ql = iclamp(nearest_int((x[l] + dm) * ids), f->qmin, f->qmax);
                qt[l] = (int8_t)ql;
                const float y = ds * ql - dm;
                const double diff = (double)x[l] - y;
                e += w[l] * diff * diff;
                swd += w[l] * diff;
                sw += w[l];
            }
            if (sw > 0) e += lambda * swd * swd / sw;
            if (e < best) {
                best = e;
                *s = si;
                *m = mi;
                memcpy(q, qt, (size_t)g);
            }
        }
    }
    return best;
}

/* All sub-blocks for fixed (d, dmin); the windows are centred where the previous integers
 * land after rescaling from (prev->d, prev->dmin). Returns the block's total error. */
static double k_fit_subs(const kfmt *f, const float *x, const float *w, float d, float dmin, const kfit *prev,
                         kfit *out) {
    const int g = QK_K / f->nsub;
    double total = 0;
    out->d = d;
    out->dmin = dmin;
    for (int j = 0; j < f->nsub; ++j) {
        const int s0 = d ? iclamp(nearest_int(prev->s[j] * (prev->d / d)), f->smin, f->smax) : prev->s[j];
        const int m0 = dmin ? iclamp(nearest_int(prev->m[j] * (prev->dmin / dmin)), 0, f->mmax) : prev->m[j];
        total += k_fit_sub(f, g, x + g * j, w + g * j, d, dmin, s0, m0, &out->s[j], &out->m[j], out->q + g * j);
    }
    for (int j = f->nsub; j < 16; ++j) out->s[j] = out->m[j] = 0;
    return total;
}

/* With the integers fixed, value = d * (s_j q) - dmin * m_j is linear in (d, dmin): the weighted
 * least-squares (d, dmin), rounded to fp16. Returns false when the system is degenerate. */
static bool k_solve_scales(const kfmt *f, const float *x, const float *w, const kfit *k, float *d, float *dmin) {
    const int g = QK_K / f->nsub;
    double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
    for (int j = 0; j < QK_K; ++j) {
        const double a = (double)k->s[j / g] * k->q[j], b = -(double)k->m[j / g];
        saa += w[j] * a * a;
        sab += w[j] * a * b;
        sbb += w[j] * b * b;
        sxa += w[j] * x[j] * a;
        sxb += w[j] * x[j] * b;
    }
    double nd, nm = k->dmin;
    const double det = saa * sbb - sab * sab;
    if (f->has_min && sbb > 0 && det > 1e-12 * saa * sbb) {
        nd = (sxa * sbb - sxb * sab) / det;
        nm = (saa * sxb - sab * sxa) / det;
    } else if (saa > 0) {
        nd = (sxa - nm * sab) / saa; /* keep dmin (its terms are zero or it cannot be separated) */
    } else {
        return false;
    }
    if (!isfinite(nd) || !isfinite(nm)) return false;
    *d = from_half(to_half((float)nd));
    *dmin = f->has_min ? from_half(to_half((float)nm)) : 0.f;
    return true;
}

/* Search from one start (d, dmin): sub-blocks, then two rounds of least-squares scales. */
static double k_search_from(const kfmt *f, const float *x, const float *w, float d, float dmin, const kfit *base,
                            kfit *best) {
    kfit cur;
    double best_err = k_fit_subs(f, x, w, d, dmin, base, best);
    for (int round = 0; round < 2; ++round) {
        float nd, nm;
        if (!k_solve_scales(f, x, w, best, &nd, &nm) || !nd) break;
        if (nd == best->d && nm == best->dmin) break;
        const double e = k_fit_subs(f, x, w, nd, nm, best, &cur);
        if (!(e < best_err)) break;
        best_err = e;
        *best = cur;
    }
    return best_err;
}

/* Improve one block in place (see the section comment). */
static void k_refine_block(int type, const kfmt *f, const float *x, const float *w, void *block) {
    const size_t size = type_get(type)->type_size;
    const double base_err = k_block_error(type, x, w, block);
    if (!(base_err > 0) || !isfinite(base_err)) return;
    kfit base, cand, best = {0};
    k_decode(type, block, &base);
    if (!base.d) return;
    static const float factors[] = {1.f, 0.98f, 1.02f, 0.95f, 1.05f};
    double best_err = INFINITY;
    for (size_t t = 0; t < sizeof factors / sizeof factors[0]; ++t) {
        const float d = from_half(to_half(base.d * factors[t]));
        const float dmin = from_half(to_half(base.dmin * factors[t]));
        if (!d) continue;
        const double e = k_search_from(f, x, w, d, dmin, &base, &cand);
        if (e < best_err) {
            best_err = e;
            best = cand;
        }
    }
    if (!(best_err < base_err)) return;
    uint8_t tmp[sizeof(block_q6_K) > sizeof(block_q5_K) ? sizeof(block_q6_K) : sizeof(block_q5_K)];
    k_encode(type, &best, tmp);
    if (k_block_error(type, x, w, tmp) < base_err) memcpy(block, tmp, size);
}

static void k_refine_row(int type, const float *x, void *y, int64_t n, const float *importance) {
    kfmt f;
    if (!kfmt_of(type, &f) || !f.refine) return;
    const size_t size = type_get(type)->type_size;
    float w[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        k_block_weights(type, x + QK_K * i, importance + QK_K * i, w);
        k_refine_block(type, &f, x + QK_K * i, w, (uint8_t *)y + size * i);
    }
}

bool quant_weighted_llama(int type, const float *x, void *y, int64_t n, const float *importance) {
    if (!importance) return false;
    const quant_searches *s = fast_searches();
    switch (type) {
    case GGML_TYPE_Q2_K: q2_K_weighted_llama(x, y, n, importance, s); return true;
    case GGML_TYPE_Q3_K: q3_K_weighted_llama(x, y, n, importance, s); return true;
    case GGML_TYPE_Q4_K: q4_K_weighted_llama(x, y, n, importance, s); return true;
    case GGML_TYPE_Q5_K: q5_K_weighted_llama(x, y, n, importance, s); return true;
    case GGML_TYPE_Q6_K: q6_K_weighted_llama(x, y, n, importance, s); return true;
    default: return false;
    }
}

double quant_weighted_error(int type, const float *x, const void *y, int64_t n, const float *importance) {
    kfmt f;
    if (!kfmt_of(type, &f) || !importance) return -1;
    const size_t size = type_get(type)->type_size;
    float w[QK_K];
    double e = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        k_block_weights(type, x + QK_K * i, importance + QK_K * i, w);
        e += k_block_error(type, x + QK_K * i, w, (const uint8_t *)y + size * i);
    }
    return e;
}

/* ===================================================================== 5b. IQ4_NL / IQ4_XS */

/* A quant is an index into the 16 levels IQ4_LEVELS (codec/iq_grids.h), denser near zero, where
 * most weights are: value = d * IQ4_LEVELS[q]. */

/* The index of the level nearest to v (v in level units), as llama.cpp's best_index_int8: a
 * binary search for the pair of levels around v, then the nearer one (the upper on a tie, and
 * 15 for NaN). Keep the float expressions as they are: fast variants must match them. */
static inline int iq4_nearest_level(float v) {
    if (v <= IQ4_LEVELS[0]) return 0;
    if (v >= IQ4_LEVELS[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < IQ4_LEVELS[mid]) hi = mid;
        else lo = mid;
    }
    return v - IQ4_LEVELS[hi - 1] < IQ4_LEVELS[hi] - v ? hi - 1 : hi;
}

/* L[j] = the index of the level nearest to id * x[j], for n values. */
static void iq4_levels(const float *x, float id, int n, uint8_t *L) {
    for (int j = 0; j < n; ++j) L[j] = (uint8_t)iq4_nearest_level(id * x[j]);
}

/* Scale search for one group of 32 values (llama.cpp's quantize_row_iq4_nl_impl, first half).
 * The first guess maps the value of largest magnitude to the level 113 side (ntry > 0) or to
 * -127 (ntry <= 0); the scale is refit by weighted least squares, then for 2*ntry+1 more
 * guesses (the largest value on level -127 -+ 0..ntry) the fit is kept when it explains more
 * of the weighted signal, i.e. when (sum w q x)^2 / sum w q^2 grows. Lb receives the level
 * indices of the first guess (llama.cpp requantizes afterwards whenever ntry > 0). */
static float iq4_fit_group(const float *xb, const float *weight, int ntry, uint8_t *Lb) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
        const float ax = fabsf(xb[j]);
        if (ax > amax) { amax = ax; max = xb[j]; }
    }
    if (amax < GROUP_MAX_EPS) {
        /* llama.cpp leaves Lb unwritten here; 8 (level 1) is what requantizing gives */
        memset(Lb, 8, 32);
        return 0.f;
    }
    float d = ntry > 0 ? -max / IQ4_LEVELS[0] : max / IQ4_LEVELS[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
        const int l = iq4_nearest_level(id * xb[j]);
        Lb[j] = (uint8_t)l;
        const float q = IQ4_LEVELS[l], w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    /* llama.cpp divides unguarded: 0/0 (all weights zero) would make the scale NaN */
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
        id = (itry + IQ4_LEVELS[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
            const int l = iq4_nearest_level(id * xb[j]);
            const float q = IQ4_LEVELS[l], w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* Weights of one group of 32: importance * sqrt(sigma2 + x^2) with an imatrix, else x^2. */
static void iq4_group_weights(const float *xb, const float *importance, float sigma2, float weight[32]) {
    if (importance)
        importance_weights(32, xb, importance, sigma2, weight);
    else
        for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
}

/* IQ4 nibbles: per 32 values, byte j holds element j (low nibble) and j+16 (high), as Q4_0. */
static void iq4_pack(const uint8_t *L, int n, uint8_t *qs) {
    for (int i = 0; i < n / 32; ++i)
        for (int j = 0; j < 16; ++j) qs[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

/* One IQ4_NL block of 32 values. ntry 7 is llama.cpp's quantize_iq4_nl (what llama-quantize
 * runs, with or without an imatrix); ntry -1 its quantize_row_iq4_nl_ref (no search, no
 * requantization). The final quants are recomputed from the unrounded float scale, as
 * llama.cpp does, not from the stored fp16 one. */
static void iq4_nl_block(const float *x, const float *importance, int ntry, ggml_half *dh, uint8_t qs[16],
                         const quant_searches *s) {
    float weight[32];
    uint8_t L[32];
    const float sigma2 = importance ? sum_sq(x, 32) * (2.f / 32) : 0.f;
    iq4_group_weights(x, importance, sigma2, weight);
    const float scale = s->iq4_group(x, weight, ntry, L);
    *dh = to_half(scale);
    if (ntry > 0) s->iq4_levels(x, scale ? 1 / scale : 0, 32, L);
    iq4_pack(L, 32, qs);
}

static void quantize_iq4_nl_ref(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) iq4_nl_block(x + QK_LEGACY * i, NULL, 7, &y[i].d, y[i].qs, &REF_SEARCHES);
}

static void quantize_iq4_nl_fast(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    const quant_searches *s = fast_searches();
    for (int64_t i = 0; i < n / QK_LEGACY; ++i) iq4_nl_block(x + QK_LEGACY * i, NULL, 7, &y[i].d, y[i].qs, s);
}

static void iq4_nl_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_iq4_nl *y = vy;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i)
        iq4_nl_block(x + QK_LEGACY * i, importance ? importance + QK_LEGACY * i : NULL, 7, &y[i].d, y[i].qs, s);
}

static void quantize_iq4_nl_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    iq4_nl_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_iq4_nl_weighted(const float *x, void *y, int64_t n, const float *importance) {
    iq4_nl_weighted(x, y, n, importance, fast_searches());
}

void quant_iq4_nl_row_ref(const float *x, void *vy, int64_t n) {
    block_iq4_nl *y = vy;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i)
        iq4_nl_block(x + QK_LEGACY * i, NULL, -1, &y[i].d, y[i].qs, &REF_SEARCHES);
}

static void dequantize_iq4_nl(const void *vx, float *y, int64_t n) {
    const block_iq4_nl *x = vx;
    for (int64_t i = 0; i < n / QK_LEGACY; ++i, y += QK_LEGACY) {
        const float d = from_half(x[i].d);
        for (int j = 0; j < QK_LEGACY / 2; ++j) {
            y[j] = d * IQ4_LEVELS[x[i].qs[j] & 0xF];
            y[j + QK_LEGACY / 2] = d * IQ4_LEVELS[x[i].qs[j] >> 4];
        }
    }
}

/* IQ4_XS: per 32 values the same search as IQ4_NL (ntry 7), then the 8 signed group scales are
 * quantized to 6 bits (-32..31) against the one of largest magnitude, which maps to -32; each
 * group is requantized with its 6-bit scale times the unrounded float super-block scale. */
static void iq4_xs_block(const float *x, const float *importance, block_iq4_xs *y, const quant_searches *s) {
    float weight[32], scales[QK_K / 32];
    uint8_t L[QK_K];
    const float sigma2 = importance ? sum_sq(x, QK_K) * (2.f / QK_K) : 0.f;
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        iq4_group_weights(x + 32 * ib, importance ? importance + 32 * ib : NULL, sigma2, weight);
        scales[ib] = s->iq4_group(x + 32 * ib, weight, 7, L + 32 * ib);
        if (fabsf(scales[ib]) > amax_scale) {
            amax_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    const float d = -max_scale / 32;
    y->d = to_half(d);
    const float id = d ? 1 / d : 0.f;
    uint16_t scales_h = 0;
    memset(y->scales_l, 0, sizeof y->scales_l);
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        const int l = iclamp(nearest_int(id * scales[ib]), -32, 31);
        const float dl = d * l;
        const float idl = dl ? 1 / dl : 0.f;
        s->iq4_levels(x + 32 * ib, idl, 32, L + 32 * ib);
        /* stored + 32: low 4 bits in a nibble of scales_l, top 2 bits in scales_h */
        y->scales_l[ib / 2] |= (uint8_t)(((l + 32) & 0xF) << (4 * (ib % 2)));
        scales_h |= (uint16_t)(((l + 32) >> 4) << (2 * ib));
    }
    y->scales_h = scales_h;
    iq4_pack(L, QK_K, y->qs);
}

static void quantize_iq4_xs_ref(const float *x, void *vy, int64_t n) {
    block_iq4_xs *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i) iq4_xs_block(x + QK_K * i, NULL, &y[i], &REF_SEARCHES);
}

static void quantize_iq4_xs_fast(const float *x, void *vy, int64_t n) {
    block_iq4_xs *y = vy;
    const quant_searches *s = fast_searches();
    for (int64_t i = 0; i < n / QK_K; ++i) iq4_xs_block(x + QK_K * i, NULL, &y[i], s);
}

static void iq4_xs_weighted(const float *x, void *vy, int64_t n, const float *importance, const quant_searches *s) {
    block_iq4_xs *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq4_xs_block(x + QK_K * i, importance ? importance + QK_K * i : NULL, &y[i], s);
}

static void quantize_iq4_xs_weighted_ref(const float *x, void *y, int64_t n, const float *importance) {
    iq4_xs_weighted(x, y, n, importance, &REF_SEARCHES);
}
static void quantize_iq4_xs_weighted(const float *x, void *y, int64_t n, const float *importance) {
    iq4_xs_weighted(x, y, n, importance, fast_searches());
}

/* The 6-bit scale of group ib (-32..31). */
static inline int iq4_xs_scale(const block_iq4_xs *b, int ib) {
    const int low = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
    const int high = (b->scales_h >> (2 * ib)) & 3;
    return (low | (high << 4)) - 32;
}

static void dequantize_iq4_xs(const void *vx, float *y, int64_t n) {
    const block_iq4_xs *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = from_half(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < QK_K / 32; ++ib, qs += 16, y += 32) {
            const float dl = d * iq4_xs_scale(&x[i], ib);
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * IQ4_LEVELS[qs[j] & 0xF];
                y[j + 16] = dl * IQ4_LEVELS[qs[j] >> 4];
            }
        }
    }
}

/* ===================================================================== 6. floats, table */

static void quantize_f32(const float *x, void *y, int64_t n) { row_from_f32(GGML_TYPE_F32, x, y, n); }
static void quantize_f16(const float *x, void *y, int64_t n) { row_from_f32(GGML_TYPE_F16, x, y, n); }
static void quantize_bf16(const float *x, void *y, int64_t n) { row_from_f32(GGML_TYPE_BF16, x, y, n); }
static void quantize_f32_w(const float *x, void *y, int64_t n, const float *w) { (void)w; quantize_f32(x, y, n); }
static void quantize_f16_w(const float *x, void *y, int64_t n, const float *w) { (void)w; quantize_f16(x, y, n); }
static void quantize_bf16_w(const float *x, void *y, int64_t n, const float *w) { (void)w; quantize_bf16(x, y, n); }
static void dequantize_f32(const void *x, float *y, int64_t n) { row_to_f32(GGML_TYPE_F32, x, y, n); }
static void dequantize_f16(const void *x, float *y, int64_t n) { row_to_f32(GGML_TYPE_F16, x, y, n); }
static void dequantize_bf16(const void *x, float *y, int64_t n) { row_to_f32(GGML_TYPE_BF16, x, y, n); }

static const quant_kernels KERNELS[] = {
    /* type, quantize_ref, quantize, quantize_weighted, quantize_weighted_ref, dequantize */
    {GGML_TYPE_F32, quantize_f32, quantize_f32, quantize_f32_w, quantize_f32_w, dequantize_f32},
    {GGML_TYPE_F16, quantize_f16, quantize_f16, quantize_f16_w, quantize_f16_w, dequantize_f16},
    {GGML_TYPE_BF16, quantize_bf16, quantize_bf16, quantize_bf16_w, quantize_bf16_w, dequantize_bf16},
    {GGML_TYPE_Q4_0, quantize_q4_0_ref, quantize_q4_0_fast, quantize_q4_0_weighted, quantize_q4_0_weighted_ref,
     dequantize_q4_0},
    {GGML_TYPE_Q4_1, quantize_q4_1_ref, quantize_q4_1_fast, quantize_q4_1_weighted, quantize_q4_1_weighted_ref,
     dequantize_q4_1},
    {GGML_TYPE_Q5_0, quantize_q5_0_ref, quantize_q5_0_fast, quantize_q5_0_weighted, quantize_q5_0_weighted_ref,
     dequantize_q5_0},
    {GGML_TYPE_Q5_1, quantize_q5_1_ref, quantize_q5_1_fast, quantize_q5_1_weighted, quantize_q5_1_weighted_ref,
     dequantize_q5_1},
    {GGML_TYPE_Q8_0, quantize_q8_0_ref, quantize_q8_0_fast, quantize_q8_0_weighted, quantize_q8_0_weighted_ref,
     dequantize_q8_0},
    {GGML_TYPE_Q2_K, quantize_q2_K_ref, quantize_q2_K_fast, quantize_q2_K_weighted, quantize_q2_K_weighted_ref,
     dequantize_q2_K},
    {GGML_TYPE_Q3_K, quantize_q3_K_ref, quantize_q3_K_fast, quantize_q3_K_weighted, quantize_q3_K_weighted_ref,
     dequantize_q3_K},
    {GGML_TYPE_Q4_K, quantize_q4_K_ref, quantize_q4_K_fast, quantize_q4_K_weighted, quantize_q4_K_weighted_ref,
     dequantize_q4_K},
    {GGML_TYPE_Q5_K, quantize_q5_K_ref, quantize_q5_K_fast, quantize_q5_K_weighted, quantize_q5_K_weighted_ref,
     dequantize_q5_K},
    {GGML_TYPE_Q6_K, quantize_q6_K_ref, quantize_q6_K_fast, quantize_q6_K_weighted, quantize_q6_K_weighted_ref,
     dequantize_q6_K},
    {GGML_TYPE_Q8_K, quantize_q8_K_ref, quantize_q8_K_ref, quantize_q8_K_weighted, quantize_q8_K_weighted,
     dequantize_q8_K},
    {GGML_TYPE_IQ4_NL, quantize_iq4_nl_ref, quantize_iq4_nl_fast, quantize_iq4_nl_weighted,
     quantize_iq4_nl_weighted_ref, dequantize_iq4_nl},
    {GGML_TYPE_IQ4_XS, quantize_iq4_xs_ref, quantize_iq4_xs_fast, quantize_iq4_xs_weighted,
     quantize_iq4_xs_weighted_ref, dequantize_iq4_xs},
};

/* The i-quants and ternary types, each in its own file (codec/quants_iq.h). */
static const quant_kernels *const IQ_KERNELS[] = {&QUANT_IQ2_XXS, &QUANT_IQ2_XS, &QUANT_IQ2_S,
                                                  &QUANT_IQ1_S,   &QUANT_IQ1_M,  &QUANT_IQ3_XXS,
                                                  &QUANT_IQ3_S,   &QUANT_TQ1_0,  &QUANT_TQ2_0};

const quant_kernels *quant_get(int type) {
    for (size_t i = 0; i < sizeof KERNELS / sizeof KERNELS[0]; ++i)
        if (KERNELS[i].type == type) return &KERNELS[i];
    for (size_t i = 0; i < sizeof IQ_KERNELS / sizeof IQ_KERNELS[0]; ++i)
        if (IQ_KERNELS[i]->type == type) return IQ_KERNELS[i];
    return NULL;
}

/* Byte offsets of the fp16 scale fields in one block (-1 terminated), or NULL for the types
 * checked by decoding. */
static const int *half_scale_offsets(int type) {
    static const int q4_0[] = {offsetof(block_q4_0, d), -1}, q5_0[] = {offsetof(block_q5_0, d), -1},
                     q8_0[] = {offsetof(block_q8_0, d), -1}, iq4_nl[] = {offsetof(block_iq4_nl, d), -1},
                     iq4_xs[] = {offsetof(block_iq4_xs, d), -1},
                     q4_1[] = {offsetof(block_q4_1, d), offsetof(block_q4_1, m), -1},
                     q5_1[] = {offsetof(block_q5_1, d), offsetof(block_q5_1, m), -1},
                     q2_k[] = {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin), -1},
                     q3_k[] = {offsetof(block_q3_K, d), -1},
                     q4_k[] = {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin), -1},
                     q5_k[] = {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin), -1},
                     q6_k[] = {offsetof(block_q6_K, d), -1};
    switch (type) {
    case GGML_TYPE_Q4_0: return q4_0;
    case GGML_TYPE_Q5_0: return q5_0;
    case GGML_TYPE_Q8_0: return q8_0;
    case GGML_TYPE_IQ4_NL: return iq4_nl;
    case GGML_TYPE_IQ4_XS: return iq4_xs;
    case GGML_TYPE_Q4_1: return q4_1;
    case GGML_TYPE_Q5_1: return q5_1;
    case GGML_TYPE_Q2_K: return q2_k;
    case GGML_TYPE_Q3_K: return q3_k;
    case GGML_TYPE_Q4_K: return q4_k;
    case GGML_TYPE_Q5_K: return q5_k;
    case GGML_TYPE_Q6_K: return q6_k;
    default: return NULL;
    }
}

int quant_row_finite(int type, const void *src, int64_t n, float *scratch) {
    const type_info *info = type_get(type);
    if (!info || !quant_get(type) || n < 0 || n % info->blck_size != 0) return -1;
    const int *offsets = half_scale_offsets(type);
    if (offsets) { /* finite fp16 scales times bounded integers: finite values */
        const uint8_t *b = src;
        for (int64_t i = 0; i < n / info->blck_size; i++, b += info->type_size)
            for (const int *o = offsets; *o >= 0; o++)
                if ((((b[*o] | b[*o + 1] << 8)) & 0x7c00) == 0x7c00) return 0;
        return 1;
    }
    quant_get(type)->dequantize(src, scratch, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(scratch[i])) return 0;
    return 1;
}

int quant_dequantize(int type, const void *src, float *dst, int64_t n) {
    const quant_kernels *k = quant_get(type);
    const type_info *info = type_get(type);
    if (!k || !k->dequantize || !info || n < 0 || n % info->blck_size != 0) return -1;
    if (n > 0) k->dequantize(src, dst, n);
    return 0;
}
