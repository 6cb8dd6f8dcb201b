/* quants_fast.c - AVX2 versions of the scale searches in quants.c, bit-identical to them.
 *
 * Why the reference searches are slow: each candidate scale is scored by float sums over the
 * group (sum w*l, sum w*l*l, ...), and every sum is a chain of dependent additions. The order
 * of those additions decides the last bits, and the last bits decide which candidate wins, so
 * a sum cannot be split or reordered. One candidate at a time, the CPU waits ~4 cycles per
 * addition.
 *
 * What this file does instead: the candidates are independent of each other, so it scores 8
 * candidates at once, one per AVX2 lane. Lane c runs exactly the scalar code for candidate c:
 * the same operations, on the same values, in the same order, each rounded once (no fused
 * multiply-add: the functions are compiled for "avx2" only, never "fma", and
 * quants.c's drivers compare the candidates in the reference's order afterwards). So every
 * sum is bit-identical to the reference's, while 8 (or 24) chains run side by side.
 *
 * Integer rounding uses the reference's nearest_int trick (add 1.5*2^23, read the mantissa);
 * the reference's guards (NaN -> 0, huge values clamped) are reproduced by clamping before
 * the trick, which gives the same integer after the final clamp to the quant range.
 *
 * Entry point: quant_fast_searches() returns the table of fast searches when this CPU has
 * AVX2, else NULL (and quants.c then uses its reference searches).
 */
#include "quants.h"

#include "codec/blocks.h"
#include "codec/quants_util.h"
#include "codec/types.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

/* "avx2" only: with "fma" enabled a compiler allowed to contract could fuse a*b+c, which
 * rounds once instead of twice and changes bytes. */
#define AVX2 __attribute__((target("avx2")))

#define LANES 8

/* The reference's nearest_int on 8 floats, then clamped to [lo, hi]. NaN becomes 0 (as the
 * reference maps NaN to 0 before its clamp); anything beyond the range is clamped before the
 * rounding trick, which only works for |v| < 2^22. */
AVX2 static inline __m256i round_clamp(__m256 v, int lo, int hi) {
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> +0 */
    v = _mm256_max_ps(v, _mm256_set1_ps((float)(lo - 1)));
    v = _mm256_min_ps(v, _mm256_set1_ps((float)(hi + 1)));
    const __m256 shifted = _mm256_add_ps(v, _mm256_set1_ps(12582912.f));
    __m256i i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                                 _mm256_set1_epi32(0x00400000));
    i = _mm256_max_epi32(i, _mm256_set1_epi32(lo));
    return _mm256_min_epi32(i, _mm256_set1_epi32(hi));
}

/* ------------------------------------------------------------------ make_qkx_quants */

/* The quant of one value for make_qkx's candidates: unguarded (qkx2) rounds then clamps to
 * [0, nmax]; guarded (qkx3) gives 0 unless v > 0, and rounds min(v, nmax). */
AVX2 static inline __m256 qkx_level(__m256 v, int nmax, bool guarded) {
    if (!guarded) return _mm256_cvtepi32_ps(round_clamp(v, 0, nmax));
    /* v < nmax ? v : nmax (NaN -> nmax, as the reference), then keep only where v > 0 */
    const __m256 t = _mm256_min_ps(v, _mm256_set1_ps((float)nmax));
    const __m256 l = _mm256_cvtepi32_ps(round_clamp(t, 0, nmax));
    return _mm256_and_ps(l, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ));
}

static inline int qkx_level_s(float v, int nmax, bool guarded) {
    if (guarded) return v > 0 ? nearest_int(v < nmax ? v : (float)nmax) : 0;
    return iclamp(nearest_int(v), 0, nmax);
}

/* Same contract and same bytes as quants.c's make_qkx_quants (see there). */
AVX2 static float fast_qkx(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                           uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad, bool guarded) {
    (void)Laux;
    float w[256];
    float min = x[0], max = x[0];
    float sum_w = weights ? weights[0] : x[0] * x[0];
    float sum_x = sum_w * x[0];
    w[0] = sum_w;
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        w[i] = weights ? weights[i] : x[i] * x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
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
        best_error += w[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    /* Careful: the reference updates `min` when a candidate wins, and later candidates use the
     * new min (in their iscale and in x - min). So candidates are scored 8 at a time with the
     * current min, taken in order, and when one wins the rest of its chunk is discarded and
     * scoring restarts after it with the new min. Wins are rare after the first few. */
    const int ncand = nstep + 1;
    float win_is = 0, win_min = 0; /* the winning candidate's iscale and the min it rounded with */
    bool won = false;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int start = 0; start < ncand;) {
        const float cur_min = min;
        float is[LANES], cand_scale[LANES], cand_min[LANES], cand_err[LANES];
        bool cand_ok[LANES];
        for (int c = 0; c < LANES; ++c) {
            const int step = start + c < ncand ? start + c : start; /* spare lanes repeat one */
            is[c] = (rmin + rdelta * step + nmax) / (max - cur_min);
        }
        /* pass 1: the three sums of each candidate */
        const __m256 vis = _mm256_loadu_ps(is);
        __m256 sl = _mm256_setzero_ps(), sl2 = _mm256_setzero_ps(), sxl = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 l = qkx_level(_mm256_mul_ps(vis, _mm256_set1_ps(x[i] - cur_min)), nmax, guarded);
            const __m256 wl = _mm256_mul_ps(_mm256_set1_ps(w[i]), l);
            sl = _mm256_add_ps(sl, wl);
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, l));
            sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, _mm256_set1_ps(x[i])));
        }
        float a_l[LANES], a_l2[LANES], a_xl[LANES];
        _mm256_storeu_ps(a_l, sl);
        _mm256_storeu_ps(a_l2, sl2);
        _mm256_storeu_ps(a_xl, sxl);
        /* the 2x2 least-squares solve, per candidate, exactly as the reference */
        for (int c = 0; c < LANES; ++c) {
            const float sum_l = a_l[c], sum_l2 = a_l2[c], sum_xl = a_xl[c];
            const float D = sum_w * sum_l2 - sum_l * sum_l;
            float this_scale = 0, this_min = 0;
            cand_ok[c] = D > 0;
            if (D > 0) {
                this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
                this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
                if (this_min > 0) {
                    this_min = 0;
                    this_scale = sum_xl / sum_l2;
                }
            }
            cand_scale[c] = this_scale;
            cand_min[c] = this_min;
        }
        /* pass 2: the error of each candidate's fit */
        const __m256 vs = _mm256_loadu_ps(cand_scale), vm = _mm256_loadu_ps(cand_min);
        __m256 err = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 l = qkx_level(_mm256_mul_ps(vis, _mm256_set1_ps(x[i] - cur_min)), nmax, guarded);
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(vs, l), vm), _mm256_set1_ps(x[i]));
            diff = use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
            err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_set1_ps(w[i]), diff));
        }
        _mm256_storeu_ps(cand_err, err);
        /* the reference's selection, in its order, up to the first win */
        int next = start + LANES;
        for (int c = 0; c < LANES && start + c < ncand; ++c) {
            if (cand_ok[c] && cand_err[c] < best_error) {
                best_error = cand_err[c];
                scale = cand_scale[c];
                min = cand_min[c];
                win_is = is[c];
                win_min = cur_min;
                won = true;
                next = start + c + 1;
                break;
            }
        }
        start = next;
    }
    if (won) /* the winner's quants, recomputed with the same expression */
        for (int i = 0; i < n; ++i) L[i] = (uint8_t)qkx_level_s(win_is * (x[i] - win_min), nmax, guarded);
    *the_min = -min;
    return scale;
}

/* ------------------------------------------------------------------ make_qx_quants */

/* Same contract and same bytes as quants.c's make_qx_quants: lane 0 of the first chunk is the
 * first guess (iscale -nmax/max), lanes 1..18 the tries is = -9..-1, 1..9. */
AVX2 static float fast_qx(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    enum { NCAND = 19, NCHUNK = 3 };
    float is[NCHUNK * LANES], slx[NCHUNK * LANES], sl2[NCHUNK * LANES];
    is[0] = -nmax / max;
    for (int c = 1, s = -9; c < NCHUNK * LANES; ++c) {
        if (c < NCAND) {
            if (s == 0) ++s;
            is[c] = -(nmax + 0.1f * s) / max;
            ++s;
        } else {
            is[c] = is[0];
        }
    }
    for (int k = 0; k < NCHUNK; ++k) {
        const __m256 vis = _mm256_loadu_ps(is + LANES * k);
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 l = _mm256_cvtepi32_ps(round_clamp(_mm256_mul_ps(vis, _mm256_set1_ps(x[i])), -nmax, nmax - 1));
            const float w = qw ? qw[i] : x[i] * x[i];
            const __m256 vw = _mm256_set1_ps(w);
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(w * x[i]), l));
            b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_mul_ps(vw, l), l));
        }
        _mm256_storeu_ps(slx + LANES * k, a);
        _mm256_storeu_ps(sl2 + LANES * k, b);
    }
    float scale = sl2[0] ? slx[0] / sl2[0] : 0.0f;
    float best = scale * slx[0];
    int winner = 0;
    for (int c = 1; c < NCAND; ++c) {
        if (sl2[c] > 0 && slx[c] * slx[c] > best * sl2[c]) {
            scale = slx[c] / sl2[c];
            best = scale * slx[c];
            winner = c;
        }
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + iclamp(nearest_int(is[winner] * x[i]), -nmax, nmax - 1));
    return scale;
}

/* ------------------------------------------------------------------ IQ4 */

static const int8_t LEVELS[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The index of the nearest level for 8 values, exactly as the reference's binary search: the
 * upper level of the pair around v is 1 + (how many of levels 1..14 are <= v); then the nearer
 * of the pair by the same float comparison (v - lower < upper - v). Below level 0 and above
 * level 15 that comparison already gives 0 and 15; NaN gives 15, as the reference. Returns the
 * index as ints and, in *q, the level as floats. */
AVX2 static inline __m256i iq4_index8(__m256 v, __m256 *q) {
    __m256i hi = _mm256_set1_epi32(1);
    for (int k = 1; k < 15; ++k) /* mask is -1 where level k <= v */
        hi = _mm256_sub_epi32(hi, _mm256_castps_si256(_mm256_cmp_ps(_mm256_set1_ps(LEVELS[k]), v, _CMP_LE_OQ)));
    const __m256 tab_lo = _mm256_setr_ps(-127, -104, -83, -65, -49, -35, -22, -10);
    const __m256 tab_hi = _mm256_setr_ps(1, 13, 25, 38, 53, 69, 89, 113);
    const __m256i lo = _mm256_sub_epi32(hi, _mm256_set1_epi32(1));
    /* levels[i] for i in 0..15: permute within each table, pick the table by i >= 8 */
#define LEVEL_AT(ix)                                                                                                  \
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab_lo, ix), _mm256_permutevar8x32_ps(tab_hi, ix),                    \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(ix, _mm256_set1_epi32(7))))
    const __m256 vlo = LEVEL_AT(lo), vhi = LEVEL_AT(hi);
    const __m256 take_lo = _mm256_cmp_ps(_mm256_sub_ps(v, vlo), _mm256_sub_ps(vhi, v), _CMP_LT_OQ);
    __m256i idx = _mm256_add_epi32(lo, _mm256_andnot_si256(_mm256_castps_si256(take_lo), _mm256_set1_epi32(1)));
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    idx = _mm256_blendv_epi8(idx, _mm256_set1_epi32(15), _mm256_castps_si256(nan));
    *q = LEVEL_AT(idx);
#undef LEVEL_AT
    return idx;
}

/* Same contract and same bytes as quants.c's iq4_fit_group: lane 0 is the first guess, lanes
 * 1..2*ntry+1 the tries itry = -ntry..ntry. */
AVX2 static float fast_iq4_group(const float *xb, const float *weight, int ntry, uint8_t *Lb) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
        const float ax = fabsf(xb[j]);
        if (ax > amax) { amax = ax; max = xb[j]; }
    }
    if (amax < 1e-15f) {
        memset(Lb, 8, 32);
        return 0.f;
    }
    const int ncand = ntry > 0 ? 2 * ntry + 2 : 1;
    if (ncand > 2 * LANES) return -1; /* not reached: quants.c only uses ntry 7 and -1 */
    float id[2 * LANES], sqx[2 * LANES], sq2[2 * LANES];
    const float d0 = ntry > 0 ? -max / LEVELS[0] : max / LEVELS[0];
    id[0] = 1 / d0;
    for (int c = 1; c < 2 * LANES; ++c) id[c] = c < ncand ? (c - 1 - ntry + LEVELS[0]) / max : id[0];
    const int nchunks = (ncand + LANES - 1) / LANES;
    for (int k = 0; k < nchunks; ++k) {
        const __m256 vid = _mm256_loadu_ps(id + LANES * k);
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
        for (int j = 0; j < 32; ++j) {
            __m256 q;
            (void)iq4_index8(_mm256_mul_ps(vid, _mm256_set1_ps(xb[j])), &q);
            const __m256 wq = _mm256_mul_ps(_mm256_set1_ps(weight[j]), q);
            a = _mm256_add_ps(a, _mm256_mul_ps(wq, _mm256_set1_ps(xb[j])));
            b = _mm256_add_ps(b, _mm256_mul_ps(wq, q));
        }
        _mm256_storeu_ps(sqx + LANES * k, a);
        _mm256_storeu_ps(sq2 + LANES * k, b);
    }
    /* the first guess's quants go to Lb, as the reference */
    for (int j = 0; j < 32; j += LANES) {
        __m256 q;
        int32_t ix[LANES];
        _mm256_storeu_si256((__m256i *)ix, iq4_index8(_mm256_mul_ps(_mm256_set1_ps(id[0]), _mm256_loadu_ps(xb + j)), &q));
        for (int t = 0; t < LANES; ++t) Lb[j + t] = (uint8_t)ix[t];
    }
    float d = sq2[0] > 0 ? sqx[0] / sq2[0] : 0.f;
    float best = d * sqx[0];
    for (int c = 1; c < ncand; ++c) {
        if (sq2[c] > 0 && sqx[c] * sqx[c] > best * sq2[c]) {
            d = sqx[c] / sq2[c];
            best = d * sqx[c];
        }
    }
    return d;
}

/* L[j] = index of the level nearest to id * x[j], n a multiple of 8. */
AVX2 static void fast_iq4_levels(const float *x, float id, int n, uint8_t *L) {
    for (int j = 0; j < n; j += LANES) {
        __m256 q;
        int32_t ix[LANES];
        _mm256_storeu_si256((__m256i *)ix, iq4_index8(_mm256_mul_ps(_mm256_set1_ps(id), _mm256_loadu_ps(x + j)), &q));
        for (int t = 0; t < LANES; ++t) L[j + t] = (uint8_t)ix[t];
    }
}

/* The 32 values at x into v[0..4), and their largest magnitude (a NaN is skipped as fmaxf
 * skips it: VMAXPS returns its second operand, the running max, when one is NaN). */
AVX2 static inline float load_block_absmax(const float *x, __m256 v[4]) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(_mm256_andnot_ps(sign_bit, v[k]), m);
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* Q8_0 rows (n a multiple of 32), as quants.c's quantize_q8_0_ref: per block d = amax / 127 and
 * q = roundf(x / d). The block's amax is a max over |x| (exact in any order).
 * roundf (ties away from zero) is truncation plus one step away from zero when the dropped
 * fraction, computed exactly as v - trunc(v), is at least 0.5; values are clamped to [-128, 127]
 * first, as the reference clamps, and NaN products (NaN or Inf inputs) become 0 as there.
 * Same bytes as the reference, garbage inputs included (tests/test_quants.c). */
AVX2 static void fast_q8_0_rows(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / 32; ++i, x += 32) {
        __m256 v[4];
        const float d = load_block_absmax(x, v) / 127;
        float id = d ? 1.0f / d : 0.0f; /* quants.c's safe_inverse */
        if (!isfinite(id)) id = 0.0f;
        y[i].d = f32_to_fp16(fminf(d, 65504.f)); /* quants.c's to_half: saturate (d >= 0, not NaN) */
        __m256i q[4];
        for (int k = 0; k < 4; ++k) {
            __m256 s = _mm256_mul_ps(v[k], _mm256_set1_ps(id));
            s = _mm256_and_ps(s, _mm256_cmp_ps(s, s, _CMP_ORD_Q)); /* NaN (from NaN/Inf inputs) -> 0 */
            s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-128.f)), _mm256_set1_ps(127.f));
            const __m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(s, t));
            const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
            const __m256 step = _mm256_or_ps(_mm256_and_ps(s, sign_bit), _mm256_set1_ps(1.0f)); /* +-1 */
            q[k] = _mm256_cvtps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)));
        }
        /* packs work within 128-bit halves: bytes come out in dword order 0 4 1 5 2 6 3 7 */
        const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
        const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        _mm256_storeu_si256((__m256i *)y[i].qs,
                            _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
}

/* Q4_0 rows (n a multiple of 32), as quants.c's quantize_q4_0_ref: d = -(the value of largest
 * magnitude, the first one on ties) / 8, q = trunc_clamp(x / d + 8.5, 0, 15). The largest
 * magnitude is found as a max (NaN skipped, as the reference's comparison skips it), then the
 * first value with that magnitude gives the sign; all-zero blocks take +0 as the reference's
 * starting value. The clamp maps NaN to 0 (VMAXPS returns its second operand, 0) as
 * trunc_clamp does, and x * id + 8.5 is a multiply then an add, each rounded, as in C. */
AVX2 static void fast_q4_0_rows(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / 32; ++i, x += 32) {
        __m256 v[4];
        const float amax = load_block_absmax(x, v);
        float max = 0.f;
        if (amax > 0) {
            uint32_t hits = 0;
            for (int k = 0; k < 4; ++k) {
                const __m256 eq = _mm256_cmp_ps(_mm256_andnot_ps(sign_bit, v[k]), _mm256_set1_ps(amax), _CMP_EQ_OQ);
                hits |= (uint32_t)_mm256_movemask_ps(eq) << (8 * k);
            }
            max = x[__builtin_ctz(hits)];
        }
        const float d = max / -8;
        float id = d ? 1.0f / d : 0.0f; /* quants.c's safe_inverse */
        if (!isfinite(id)) id = 0.0f;
        y[i].d = f32_to_fp16(fminf(fmaxf(d, -65504.f), 65504.f)); /* quants.c's to_half (d is not NaN) */
        __m256i q[4];
        for (int k = 0; k < 4; ++k) {
            __m256 t = _mm256_add_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)), _mm256_set1_ps(8.5f));
            t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(15.f));
            q[k] = _mm256_cvttps_epi32(t);
        }
        /* byte j = quant j | quant j+16 << 4 */
        const __m256i c0 = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));
        const __m256i c1 = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
        const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(c0, c1), 0xD8);
        _mm_storeu_si128((__m128i *)y[i].qs,
                         _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
    }
}

/* quants.c's legacy_levels on 32 values: (x - sub) * id + bias, each step rounded as in C (no
 * FMA here), then trunc_clamp: NaN and negatives to 0 (VMAXPS returns its second operand, 0,
 * for a NaN), at most maxq, truncated. */
AVX2 static void fast_legacy_levels(const float *x, float sub, float id, float bias, int maxq, uint8_t *L) {
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * k), _mm256_set1_ps(sub)), _mm256_set1_ps(id));
        t = _mm256_add_ps(t, _mm256_set1_ps(bias));
        t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps((float)maxq));
        q[k] = _mm256_cvttps_epi32(t);
    }
    /* packs work within 128-bit halves: dwords come out in the order 0 4 1 5 2 6 3 7 */
    const __m256i p8 = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)L, _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/* ------------------------------------------------------------------ Q3_K groups */

/* make_q3_quants(16, 4, ...) of the 16 groups of 16 values of a super-block, one group per
 * lane: groups 0-7 in one set of 8 lanes, 8-15 in another, the two sets interleaved step by
 * step (each step waits on the one before through the group's sums, so two independent sets
 * keep the divider and the adders busy). Each lane runs the reference's operations in its
 * order (its float products and sums as written there, no fused multiply-add), so the bytes
 * are the same. The reference stops a group after a pass that changes nothing; a lane that
 * stopped changing here keeps running the passes of the others, which leave its state as it
 * is (a pass is a function of the state). */
AVX2 static void fast_q3_groups(const float *x, int8_t *L, float *scales) {
    enum { N = 16, NMAX = 4, H = 2 }; /* values per group, quant range, sets of LANES groups */
    float xt[H][N][LANES];
    for (int h = 0; h < H; ++h)
        for (int g = 0; g < LANES; ++g)
            for (int i = 0; i < N; ++i) xt[h][i][g] = x[N * (LANES * h + g) + i];
    const __m256 sign = _mm256_set1_ps(-0.f), zero = _mm256_setzero_ps();
    __m256 X[H][N], Lf[H][N], live[H], sumlx[H], suml2[H];
    for (int h = 0; h < H; ++h) {
        __m256 max = zero, amax = zero; /* the first value of largest magnitude, with its sign */
        for (int i = 0; i < N; ++i) {
            X[h][i] = _mm256_loadu_ps(xt[h][i]);
            const __m256 ax = _mm256_andnot_ps(sign, X[h][i]);
            const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = _mm256_blendv_ps(amax, ax, gt);
            max = _mm256_blendv_ps(max, X[h][i], gt);
        }
        live[h] = _mm256_cmp_ps(_mm256_andnot_ps(sign, max), _mm256_set1_ps(GROUP_MAX_EPS), _CMP_NLT_UQ);
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-NMAX), max);
        sumlx[h] = suml2[h] = zero;
        for (int i = 0; i < N; ++i) {
            Lf[h][i] = _mm256_cvtepi32_ps(round_clamp(_mm256_mul_ps(iscale, X[h][i]), -NMAX, NMAX - 1));
            const __m256 w = _mm256_mul_ps(X[h][i], X[h][i]);
            sumlx[h] = _mm256_add_ps(sumlx[h], _mm256_mul_ps(_mm256_mul_ps(w, X[h][i]), Lf[h][i]));
            suml2[h] = _mm256_add_ps(suml2[h], _mm256_mul_ps(_mm256_mul_ps(w, Lf[h][i]), Lf[h][i]));
        }
    }
    for (int pass = 0; pass < 5; ++pass) {
        __m256 changed = zero;
        for (int i = 0; i < N; ++i)
            for (int h = 0; h < H; ++h) {
                const __m256 xi = X[h][i], li = Lf[h][i];
                const __m256 w = _mm256_mul_ps(xi, xi), wx = _mm256_mul_ps(w, xi);
                __m256 slx = _mm256_sub_ps(sumlx[h], _mm256_mul_ps(wx, li)); /* the fit without value i */
                __m256 sl2 = _mm256_sub_ps(suml2[h], _mm256_mul_ps(_mm256_mul_ps(w, li), li));
                const __m256 nl =
                    _mm256_cvtepi32_ps(round_clamp(_mm256_div_ps(_mm256_mul_ps(xi, sl2), slx), -NMAX, NMAX - 1));
                __m256 take = _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ), _mm256_cmp_ps(nl, li, _CMP_NEQ_OQ));
                slx = _mm256_add_ps(slx, _mm256_mul_ps(wx, nl));
                sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, nl), nl));
                const __m256 better = _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(slx, slx), suml2[h]),
                                                    _mm256_mul_ps(_mm256_mul_ps(sumlx[h], sumlx[h]), sl2), _CMP_GT_OQ);
                take = _mm256_and_ps(take, _mm256_and_ps(_mm256_cmp_ps(sl2, zero, _CMP_GT_OQ), better));
                Lf[h][i] = _mm256_blendv_ps(li, nl, take);
                sumlx[h] = _mm256_blendv_ps(sumlx[h], slx, take);
                suml2[h] = _mm256_blendv_ps(suml2[h], sl2, take);
                changed = _mm256_or_ps(changed, _mm256_and_ps(take, live[h]));
            }
        if (!_mm256_movemask_ps(changed)) break;
    }
    for (int h = 0; h < H; ++h) {
        const __m256 scale = _mm256_and_ps(_mm256_div_ps(sumlx[h], suml2[h]), _mm256_cmp_ps(suml2[h], zero, _CMP_GT_OQ));
        _mm256_storeu_ps(scales + LANES * h, _mm256_and_ps(scale, live[h])); /* +0 where the reference returns 0.0f */
        int32_t q[N][LANES];
        for (int i = 0; i < N; ++i)
            _mm256_storeu_si256((__m256i *)q[i], _mm256_and_si256(_mm256_castps_si256(live[h]),
                                                                  _mm256_add_epi32(_mm256_cvtps_epi32(Lf[h][i]),
                                                                                   _mm256_set1_epi32(NMAX))));
        for (int g = 0; g < LANES; ++g)
            for (int i = 0; i < N; ++i) L[N * (LANES * h + g) + i] = (int8_t)q[i][g];
    }
}

static const quant_searches FAST = {fast_qkx, fast_qx, fast_iq4_group, fast_iq4_levels, fast_q8_0_rows,
                                    fast_q4_0_rows, fast_legacy_levels, fast_q3_groups};

/* No __builtin_cpu_init() needed: the runtime (libgcc, compiler-rt) fills the CPU model in a
 * constructor before main, and GCC documents the call as needed only in code that runs before
 * the constructors (other constructors, ifunc resolvers), which this never does. */
const quant_searches *quant_fast_searches(void) {
    return __builtin_cpu_supports("avx2") ? &FAST : NULL;
}

#else /* not x86-64: the reference searches are used */

const quant_searches *quant_fast_searches(void) { return NULL; }

#endif
