/* quants_util.h - internal to codec/: the small steps every quantizer file shares (quants.c,
 * quants_fast.c, quants_iq1.c, quants_iq2.c, quants_iq3.c). Each keeps llama.cpp's float operations exactly,
 * since the bytes depend on them. */
#ifndef SLMC_QUANTS_UTIL_H
#define SLMC_QUANTS_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "codec/blocks.h"
#include "codec/types.h"

#define GROUP_MAX_EPS 1e-15f /* a group whose largest |x| is below this is all zeros */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int iclamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Round to the nearest integer, ties to even, the way llama.cpp does it: adding 1.5*2^23
 * pushes the fraction bits out of the mantissa, so the low mantissa bits are the integer.
 * That trick only works for |v| < 2^22; llama.cpp asserts it, we clamp instead (and map NaN
 * to 0), so absurd inputs give a clamped quant rather than an arbitrary one. */
static inline int nearest_int(float v) {
    if (!(fabsf(v) <= 4194303.f)) return v != v ? 0 : v > 0 ? 4194303 : -4194303;
    float shifted = v + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

/* Store a scale as fp16. Values beyond the fp16 range saturate at +-65504 (llama.cpp would
 * store Inf, which turns every dequantized value of the block into Inf or NaN). A NaN scale
 * (only possible when squares of the input overflow, |x| > 1.8e19) is stored as 0. */
static inline ggml_half to_half(float f) {
    if (f != f) f = 0.f;
    if (f > 65504.f) f = 65504.f;
    if (f < -65504.f) f = -65504.f;
    return f32_to_fp16(f);
}

/* Sum of squares of n values, summed in order (the order matters for bit-identity). */
static inline float sum_sq(const float *x, int64_t n) {
    float s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
    return s;
}

/* llama.cpp's make_qp_quants: non-negative x quantized to levels 0..nmax with weights w, a few
 * trial scales, then 5 passes moving single levels; returns the scale (quants.c). */
float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w);

/* Split 8 values into magnitudes xval and sign bits (bit i: x[i] < 0). With `even` (the types
 * that keep 7 sign bits and derive the 8th), the stored signs must have an even number of minus
 * signs: when the count is odd, the value with the least weight * x^2 (the first on ties) keeps
 * the wrong sign, i.e. its xval becomes negative. Returns the sign bits (7 of them with even).
 * (quants_iq2.c) */
uint8_t iq_fold_signs(const float *x, const float *weight, bool even, float *xval);

/* The grid point among neighbours[begin..end) whose values (2l + 1) * scale (levels: dim bytes per
 * grid point) are nearest to xval in the error sum w_sqrt * diff^2; L receives its dim levels. The
 * first neighbour when no error is below FLT_MAX (only with garbage input, where llama.cpp
 * aborts). Returns its grid index. (quants_iq2.c; IQ2 groups of 8, IQ3 groups of 4) */
int iq_best_neighbour(const uint16_t *neighbours, uint32_t begin, uint32_t end, const uint8_t *levels, int dim,
                      const float *xval, const float *w_sqrt, float scale, int8_t *L);

#endif
