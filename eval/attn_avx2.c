/* attn_avx2.c - AVX2 attention for one token and one KV head (see attn_avx2.h).
 *
 * Compiled for every x86-64 build with target attributes on each function (no -march=native),
 * called only when kern_have_avx2(). The functions that multiply and add floats are built for
 * "avx2,f16c" without FMA, so no compiler may fuse a product into a sum (the scalar reference
 * rounds both); only the exp, which reproduces glibc's FMA code, is built with "fma" and
 * written in intrinsics alone.
 */
#include "attn_avx2.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "codec/dots.h"
#include "codec/types.h"
#include "eval/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,f16c")))
#define AVX2_FMA __attribute__((target("avx2,fma")))
#define AVX512_FMA __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
/* AVX-512 without "fma" in the name, as AVX2 above: multiplies and adds stay apart */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,f16c")))

/* ===================================================================== exp as glibc's expf
 * glibc 2.28+ sysdeps/ieee754/flt-32/e_expf.c, compiled with FMA contraction (__expf_fma, the
 * variant its ifunc picks when the CPU has FMA and AVX2): with N = 32,
 *   z = InvLn2N * x; kd = round(z) by adding SHIFT (fused: fma(InvLn2N, x, SHIFT)); r = z - kd
 *   (fused: fma(InvLn2N, x, -kd)); s = 2^(k/N) from the table with k's bits shifted into the
 *   exponent; y = fma(fma(C0, r, C1), r*r, fma(r, C2, 1)) * s; (float)y.
 * Inputs with |x| >= 88 and NaNs take other branches there: those lanes call expf. */
static const uint64_t EXP2F_TAB[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};
#define EXP_INVLN2N 0x1.71547652b82fep+5 /* N / ln 2 */
#define EXP_SHIFT 0x1.8p+52
#define EXP_C0 0x1.c6af84b912394p-20 /* 0x1.c6af84b912394p-5 / N^3 */
#define EXP_C1 0x1.ebfce50fac4f3p-13 /* 0x1.ebfce50fac4f3p-3 / N^2 */
#define EXP_C2 0x1.62e42ff0c52d6p-6  /* 0x1.62e42ff0c52d6p-1 / N */

AVX2_FMA static inline __m256d exp_core4(__m256d xd) {
    const __m256d invln2n = _mm256_set1_pd(EXP_INVLN2N), shift = _mm256_set1_pd(EXP_SHIFT);
    __m256d kd = _mm256_fmadd_pd(invln2n, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    const __m256d r = _mm256_fmsub_pd(invln2n, xd, kd);
    const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    __m256i t = _mm256_i64gather_epi64((const long long *)EXP2F_TAB, idx, 8);
    t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
    const __m256d s = _mm256_castsi256_pd(t);
    const __m256d z = _mm256_fmadd_pd(_mm256_set1_pd(EXP_C0), r, _mm256_set1_pd(EXP_C1));
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(EXP_C2), _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_mul_pd(y, s);
}

/* y[k] = expf(x[k]) for the lanes k < n whose bit is set in `special`: those outside the
 * vector exp's fast range (exp8, exp16). */
static void expf_lanes(const float *x, float *y, unsigned special, int n) {
    for (int k = 0; k < n; ++k)
        if (special >> k & 1) y[k] = expf(x[k]);
}

/* expf of 8 floats; lanes outside the fast range (abstop >= top12(88.0f): |x| >= 88, inf, NaN)
 * from expf itself. */
AVX2_FMA static __m256 exp8(__m256 x) {
    const __m256d lo = exp_core4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    const __m256d hi = exp_core4(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    __m256 y = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
    const __m256i abstop = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
    const int special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(abstop, _mm256_set1_epi32(0x42a))));
    if (special) {
        float xs[8], ys[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(ys, y);
        expf_lanes(xs, ys, (unsigned)special, 8);
        y = _mm256_loadu_ps(ys);
    }
    return y;
}

/* The same steps 8 doubles at a time with AVX-512, the table read by two two-register word
 * permutations (entries 0-15 and 16-31, bit 4 picking one) instead of a gather: each lane's
 * operations are exp_core4's. */
AVX512_FMA static inline __m512d exp_core8(__m512d xd) {
    const __m512d invln2n = _mm512_set1_pd(EXP_INVLN2N), shift = _mm512_set1_pd(EXP_SHIFT);
    __m512d kd = _mm512_fmadd_pd(invln2n, xd, shift);
    const __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    const __m512d r = _mm512_fmsub_pd(invln2n, xd, kd);
    const __m512i t_lo = _mm512_permutex2var_epi64(_mm512_loadu_si512(EXP2F_TAB), ki, _mm512_loadu_si512(EXP2F_TAB + 8));
    const __m512i t_hi =
        _mm512_permutex2var_epi64(_mm512_loadu_si512(EXP2F_TAB + 16), ki, _mm512_loadu_si512(EXP2F_TAB + 24));
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), t_lo, t_hi);
    t = _mm512_add_epi64(t, _mm512_slli_epi64(ki, 47));
    const __m512d s = _mm512_castsi512_pd(t);
    const __m512d z = _mm512_fmadd_pd(_mm512_set1_pd(EXP_C0), r, _mm512_set1_pd(EXP_C1));
    const __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(r, _mm512_set1_pd(EXP_C2), _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    return _mm512_mul_pd(y, s);
}

/* expf of 16 floats, as exp8. */
AVX512_FMA static __m512 exp16(__m512 x) {
    const __m256 lo = _mm512_cvtpd_ps(exp_core8(_mm512_cvtps_pd(_mm512_castps512_ps256(x))));
    const __m256 hi = _mm512_cvtpd_ps(exp_core8(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1))));
    __m512 y = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
    const __m512i abstop = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 20), _mm512_set1_epi32(0x7ff));
    const __mmask16 special = _mm512_cmpgt_epi32_mask(abstop, _mm512_set1_epi32(0x42a));
    if (special) {
        float xs[16], ys[16];
        _mm512_storeu_ps(xs, x);
        _mm512_storeu_ps(ys, y);
        expf_lanes(xs, ys, special, 16);
        y = _mm512_loadu_ps(ys);
    }
    return y;
}

/* out[i] = expf(x[i] - sub) (sub = 0: expf(x[i]); x - 0 is x, -0 and NaN included), 8 or
 * 16 lanes; a last part shorter than the lanes padded with zeros. */
AVX2_FMA static void exp_run8(const float *x, float sub, float *out, int64_t n) {
    const __m256 m = _mm256_set1_ps(sub);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m)));
    if (i < n) {
        float xs[8] = {0}, ys[8];
        memcpy(xs, x + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(ys, exp8(_mm256_sub_ps(_mm256_loadu_ps(xs), m)));
        memcpy(out + i, ys, sizeof(float) * (size_t)(n - i));
    }
}
AVX512_FMA static void exp_run16(const float *x, float sub, float *out, int64_t n) {
    const __m512 m = _mm512_set1_ps(sub);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m)));
    if (i < n) {
        float xs[16] = {0}, ys[16];
        memcpy(xs, x + i, sizeof(float) * (size_t)(n - i));
        _mm512_storeu_ps(ys, exp16(_mm512_sub_ps(_mm512_loadu_ps(xs), m)));
        memcpy(out + i, ys, sizeof(float) * (size_t)(n - i));
    }
}

void attn_exp_lanes(const float *x, float *out, int64_t n, int lanes) {
    if (lanes == 16 && kern_cpu_has_avx512()) exp_run16(x, 0.0f, out, n);
    else exp_run8(x, 0.0f, out, n);
}

void attn_exp_avx2(const float *x, float *out, int64_t n) { attn_exp_lanes(x, out, n, 16); }

/* out[i] = expf(x[i] - sub): the subtraction rounded as in C, then the vector exp. */
void attn_sub_exp_avx2(const float *x, float sub, float *out, int64_t n) {
    if (kern_cpu_has_avx512()) exp_run16(x, sub, out, n);
    else exp_run8(x, sub, out, n);
}

/* x = x / (1 + expf(-x)) * up (kern_swiglu_ref's operations, each rounded: no FMA), a block of
 * exps at a time, then the add, the division and the product 8 lanes at a time. */
AVX2 void attn_swiglu_avx2(float *x, const float *up, int64_t n) {
    enum { BLOCK = 512 };
    float e[BLOCK];
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        const int64_t nb = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (int64_t i = 0; i < nb; ++i) e[i] = -x[i0 + i];
        attn_exp_avx2(e, e, nb);
        int64_t i = 0;
        for (; i + 8 <= nb; i += 8) {
            const __m256 g = _mm256_loadu_ps(x + i0 + i);
            const __m256 d = _mm256_add_ps(one, _mm256_loadu_ps(e + i));
            _mm256_storeu_ps(x + i0 + i, _mm256_mul_ps(_mm256_div_ps(g, d), _mm256_loadu_ps(up + i0 + i)));
        }
        for (; i < nb; ++i) x[i0 + i] = x[i0 + i] / (1.0f + e[i]) * up[i0 + i];
    }
}

/* kern_rope_ref's operations 8 lanes at a time, each with the same operands in the same order
 * (multiply, then subtract or add: no FMA). NORM pairs (x[2i], x[2i+1]), four to a register:
 * P = (x0 c, x0 s) and Q = (x1 s, x1 c) per pair, and VADDSUBPS gives x0 c - x1 s in the first
 * lane and x0 s + x1 c in the second. NEOX halves x[i] and x[i + n_rot/2], 8 at a time. */
AVX2 void attn_rope_avx2(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox) {
    const int64_t half = n_rot / 2;
    int64_t i = 0;
    if (neox) {
        for (; i + 8 <= half; i += 8) {
            const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + half);
            const __m256 c = _mm256_loadu_ps(cos_t + i), s = _mm256_loadu_ps(sin_t + i);
            _mm256_storeu_ps(x + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
            _mm256_storeu_ps(x + i + half, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
        }
    } else {
        for (; i + 4 <= half; i += 4) {
            const __m256 v = _mm256_loadu_ps(x + 2 * i);
            const __m128 c = _mm_loadu_ps(cos_t + i), s = _mm_loadu_ps(sin_t + i);
            const __m256 cs = _mm256_set_m128(_mm_unpackhi_ps(c, s), _mm_unpacklo_ps(c, s)); /* c0 s0 c1 s1 ... */
            const __m256 sc = _mm256_set_m128(_mm_unpackhi_ps(s, c), _mm_unpacklo_ps(s, c)); /* s0 c0 s1 c1 ... */
            const __m256 p = _mm256_mul_ps(_mm256_moveldup_ps(v), cs), q = _mm256_mul_ps(_mm256_movehdup_ps(v), sc);
            _mm256_storeu_ps(x + 2 * i, _mm256_addsub_ps(p, q));
        }
    }
    for (; i < half; ++i) {
        const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * cos_t[i] - x1 * sin_t[i];
        x[b] = x0 * sin_t[i] + x1 * cos_t[i];
    }
}

/* The largest of x[0..n), n >= 1 (a max is exact in any order; with a NaN among x the caller's
 * sum of exps is NaN either way). */
AVX2_FMA float attn_max_avx2(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(x[0]);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float lanes[8], r;
    _mm256_storeu_ps(lanes, m);
    r = lanes[0];
    for (int k = 1; k < 8; ++k) r = fmaxf(r, lanes[k]);
    for (; i < n; ++i) r = fmaxf(r, x[i]);
    return r;
}

/* The check at first use: every 65521st float bit pattern (both signs, all exponents: zeros,
 * subnormals, the fast range, the fall-backs) and the range softmax uses most, [-30, 0], densely. */
static bool exp_ok;
static pthread_once_t exp_once = PTHREAD_ONCE_INIT;
static void exp_check(void) {
    enum { B = 1024 };
    float x[B], y[B];
    uint64_t u = 0;
    bool ok = true;
    while (ok && u <= 0xffffffffu) {
        int n = 0;
        for (; n < B && u <= 0xffffffffu; ++n, u += 65521) {
            const uint32_t b = (uint32_t)u;
            memcpy(&x[n], &b, 4);
        }
        attn_exp_avx2(x, y, n);
        for (int k = 0; k < n && ok; ++k) {
            const float e = expf(x[k]);
            ok = memcmp(&e, &y[k], 4) == 0;
        }
    }
    for (int r = 0; ok && r < 64; ++r) {
        for (int k = 0; k < B; ++k) x[k] = -30.0f * (float)(r * B + k) / (float)(64 * B);
        attn_exp_avx2(x, y, B);
        for (int k = 0; k < B && ok; ++k) {
            const float e = expf(x[k]);
            ok = memcmp(&e, &y[k], 4) == 0;
        }
    }
    exp_ok = ok;
}

bool attn_fast_exp_ok(void) {
    pthread_once(&exp_once, exp_check);
    return exp_ok;
}

/* ===================================================================== scores */

/* r[c] lane j = r_in[j] lane c */
AVX2 static inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* transpose8 in each 256-bit half: r[c] lane j (+ 8) = r_in[j] lane c (+ 8) */
AVX512 static inline void transpose8x2(__m512 r[8]) {
    const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
    const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
    const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
    const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
    const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xee);
    const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xee);
    const __m512 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xee);
    const __m512 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xee);
    /* permute2f128's 0x20 and 0x31 in each half */
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    r[0] = _mm512_permutex2var_ps(u0, lo, u4);
    r[1] = _mm512_permutex2var_ps(u1, lo, u5);
    r[2] = _mm512_permutex2var_ps(u2, lo, u6);
    r[3] = _mm512_permutex2var_ps(u3, lo, u7);
    r[4] = _mm512_permutex2var_ps(u0, hi, u4);
    r[5] = _mm512_permutex2var_ps(u1, hi, u5);
    r[6] = _mm512_permutex2var_ps(u2, hi, u6);
    r[7] = _mm512_permutex2var_ps(u3, hi, u7);
}

/* scores' arithmetic on 16 lanes (hd % 8 == 0): register c holds, in each half, the 8 partial
 * sums of one key and one query head, summed as the scalar dot adds them after an 8 x 8
 * transpose in each half, so lane j of the result is key j's score in the low half and key
 * j + 8's (or head b's key j) in the high half. Either two heads over 8 keys (pair: q = (qa,
 * qb), each load of 8 key values broadcast to both halves) or one head over 16 keys (q in both
 * halves, keys c and c + 8 of `row` in register c). */
AVX512 static inline __attribute__((always_inline)) __m512 scores_block(const bool pair, const float *qa,
                                                                        const float *qb, const float *row,
                                                                        int64_t stride, int64_t hd) {
    __m512 acc[8];
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < hd; i += 8) {
        const __m512 qv = pair ? _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(qa + i)), _mm256_loadu_ps(qb + i), 1)
                               : _mm512_broadcast_f32x8(_mm256_loadu_ps(qa + i));
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) {
            const __m256 lo = _mm256_loadu_ps(row + c * stride + i);
            const __m512 kv = pair ? _mm512_broadcast_f32x8(lo)
                                   : _mm512_insertf32x8(_mm512_castps256_ps512(lo), _mm256_loadu_ps(row + (c + 8) * stride + i), 1);
            acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(qv, kv));
        }
    }
    transpose8x2(acc);
    __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) sum = _mm512_add_ps(sum, acc[c]);
    return sum;
}

/* One head, 16 keys at a time. Returns the keys done (a multiple of 16). */
AVX512 static int scores16(const float *q, const float *k, int64_t stride, int n, int64_t hd, float *s) {
    int j0 = 0;
    for (; j0 + 16 <= n; j0 += 16) _mm512_storeu_ps(s + j0, scores_block(false, q, q, k + (int64_t)j0 * stride, stride, hd));
    return j0;
}

/* Two query heads that read the same keys, 8 keys at a time: each key load serves both and
 * needs no insert. Returns the keys done (a multiple of 8). */
AVX512 static int scores_pair16(const float *qa, const float *qb, const float *k, int64_t stride, int n, int64_t hd,
                                float *sa, float *sb) {
    int j0 = 0;
    for (; j0 + 8 <= n; j0 += 8) {
        const __m512 sum = scores_block(true, qa, qb, k + (int64_t)j0 * stride, stride, hd);
        _mm256_storeu_ps(sa + j0, _mm512_castps512_ps256(sum));
        _mm256_storeu_ps(sb + j0, _mm512_extractf32x8_ps(sum, 1));
    }
    return j0;
}

/* s[j] = kern_dot_f32_scalar(hd, q, k + j * stride) for j < n, bit for bit: per key the 8
 * partial sums acc[c] += q[i+c] * k[i+c] (c = lane), then s = 0 + acc[0] + ... + acc[7], then
 * the tail; 8 keys side by side (16 with AVX-512 while 16 are left, hd a multiple of 8). */
AVX2 static void scores(const float *q, const float *k, int64_t stride, int n, int64_t hd, float *s) {
    const int64_t hd8 = hd & ~(int64_t)7;
    const int done = hd8 == hd && kern_cpu_has_avx512() ? scores16(q, k, stride, n, hd, s) : 0;
    for (int j0 = done; j0 < n; j0 += 8) {
        const int nk = n - j0 < 8 ? n - j0 : 8;
        const float *row[8];
        for (int c = 0; c < 8; ++c) row[c] = k + (int64_t)(j0 + (c < nk ? c : nk - 1)) * stride; /* no reads past the last key */
        __m256 acc[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd8; i += 8) {
            const __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
            for (int c = 0; c < 8; ++c) acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(qv, _mm256_loadu_ps(row[c] + i)));
        }
        transpose8(acc);
        __m256 sum = _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) sum = _mm256_add_ps(sum, acc[c]);
        if (nk == 8 && hd8 == hd) {
            _mm256_storeu_ps(s + j0, sum);
        } else {
            float v8[8];
            _mm256_storeu_ps(v8, sum);
            for (int c = 0; c < nk; ++c) {
                float v = v8[c];
                for (int64_t i = hd8; i < hd; ++i) v += q[i] * row[c][i];
                s[j0 + c] = v;
            }
        }
    }
}

/* ===================================================================== softmax */

/* kern_softmax in two parts, bit for bit: softmax_exp replaces x by exp(x - max); the caller
 * sums the exps in double in index order and gives softmax_scale 1 / sum, which scales them and
 * (f16) applies kern_round_f16. */
AVX2 static void softmax_exp(float *x, int n, bool fast_exp) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    /* max_ps(v, mx) keeps mx when v is NaN, as fmaxf(max, v) does */
    for (; i + 8 <= n; i += 8) mx = _mm256_max_ps(_mm256_loadu_ps(x + i), mx);
    float m8[8];
    _mm256_storeu_ps(m8, mx);
    float max = -INFINITY;
    for (int c = 0; c < 8; ++c) max = fmaxf(max, m8[c]);
    for (; i < n; ++i) max = fmaxf(max, x[i]);
    /* (a maximum of 0 may come out as +0 or -0 where the scalar loop had the other: x - max
     * and its exp are the same either way) */
    if (fast_exp) attn_sub_exp_avx2(x, max, x, n);
    else
        for (int k = 0; k < n; ++k) x[k] = expf(x[k] - max);
}

AVX2 static void softmax_scale(float *x, int n, float inv, bool f16) {
    const __m256 vinv = _mm256_set1_ps(inv);
    int i = 0;
    if (f16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv),
                                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        for (; i < n; ++i) x[i] = fp16_to_f32(f32_to_fp16(x[i] * inv));
    } else {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
        for (; i < n; ++i) x[i] *= inv;
    }
}

/* The sums of softmax: up to 4 rows of n exps side by side, each row's double sum in index
 * order (four chains where one row's additions would wait on each other). */
static void exp_sums4(const float *x, int64_t row, int rows, int n, double *sums) {
    const float *x0 = x, *x1 = rows > 1 ? x + row : x0, *x2 = rows > 2 ? x + 2 * row : x0, *x3 = rows > 3 ? x + 3 * row : x0;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int k = 0; k < n; ++k) {
        s0 += x0[k];
        s1 += x1[k];
        s2 += x2[k];
        s3 += x3[k];
    }
    const double s[4] = {s0, s1, s2, s3};
    for (int r = 0; r < rows; ++r) sums[r] = s[r];
}

/* ===================================================================== p . V */

/* Up to 8 output registers ("slots"), each 8 dimensions of one head: out[d] = sum over j in
 * order of p[j] * v[j][d] (multiply, then add), all slots in one pass over the keys. */
typedef struct wsum_slot {
    const float *p;  /* the head's probabilities */
    int64_t off;     /* first dimension */
    float *out;
} wsum_slot;

AVX2 static inline __attribute__((always_inline)) void wsum_pass(const int ns, const wsum_slot *sl, const float *v,
                                                                 int64_t stride, int n) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int k = 0; k < ns; ++k) acc[k] = _mm256_setzero_ps();
    for (int j = 0; j < n; ++j) {
        const float *vr = v + (int64_t)j * stride;
#pragma GCC unroll 8
        for (int k = 0; k < ns; ++k)
            acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_broadcast_ss(sl[k].p + j), _mm256_loadu_ps(vr + sl[k].off)));
    }
#pragma GCC unroll 8
    for (int k = 0; k < ns; ++k) _mm256_storeu_ps(sl[k].out, acc[k]);
}

AVX2 static void wsum(const wsum_slot *sl, int ns, const float *v, int64_t stride, int n) {
    switch (ns) {
    case 1: wsum_pass(1, sl, v, stride, n); break;
    case 2: wsum_pass(2, sl, v, stride, n); break;
    case 3: wsum_pass(3, sl, v, stride, n); break;
    case 4: wsum_pass(4, sl, v, stride, n); break;
    case 5: wsum_pass(5, sl, v, stride, n); break;
    case 6: wsum_pass(6, sl, v, stride, n); break;
    case 7: wsum_pass(7, sl, v, stride, n); break;
    default: wsum_pass(8, sl, v, stride, n); break;
    }
}

/* With AVX-512: 16 dimensions per register, and the heads of a pass share each V load. NG
 * heads (probabilities p + g * n) x ND registers of dimensions d0.. (16 each), all in one pass
 * over the keys, each output still 0 + p[0] v[0][d] + p[1] v[1][d] + ... (multiply, then add). */
AVX512 static inline __attribute__((always_inline)) void wsum16_pass(const int NG, const int ND, const float *p, int n,
                                                                     const float *v, int64_t stride, int64_t d0,
                                                                     float *out, int64_t hd) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g)
#pragma GCC unroll 4
        for (int d = 0; d < ND; ++d) acc[g][d] = _mm512_setzero_ps();
    for (int j = 0; j < n; ++j) {
        const float *vr = v + (int64_t)j * stride + d0;
        __m512 pb[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; ++g) pb[g] = _mm512_set1_ps(p[(size_t)g * (size_t)n + (size_t)j]);
#pragma GCC unroll 4
        for (int d = 0; d < ND; ++d) {
            const __m512 vv = _mm512_loadu_ps(vr + 16 * d);
#pragma GCC unroll 4
            for (int g = 0; g < NG; ++g) acc[g][d] = _mm512_add_ps(acc[g][d], _mm512_mul_ps(pb[g], vv));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g)
#pragma GCC unroll 4
        for (int d = 0; d < ND; ++d) _mm512_storeu_ps(out + g * hd + d0 + 16 * d, acc[g][d]);
}

#define WSUM16(G, D)                                                                                                   \
    case (G) * 8 + (D): wsum16_pass(G, D, p, n, v, stride, d0, out, hd); break;
AVX512 static void wsum16(int ng, int nd, const float *p, int n, const float *v, int64_t stride, int64_t d0, float *out,
                          int64_t hd) {
    switch (ng * 8 + nd) {
        WSUM16(1, 1) WSUM16(1, 2) WSUM16(1, 3) WSUM16(1, 4)
        WSUM16(2, 1) WSUM16(2, 2) WSUM16(2, 3) WSUM16(2, 4)
        WSUM16(3, 1) WSUM16(3, 2) WSUM16(3, 3) WSUM16(3, 4)
        WSUM16(4, 1) WSUM16(4, 2) WSUM16(4, 3) WSUM16(4, 4)
    default: break;
    }
}
#undef WSUM16

/* ===================================================================== one token, one KV head */

AVX2 void attn_group_avx2(const attn_job *a) {
    const int64_t hd = a->hd, hd8 = hd & ~(int64_t)7;
    const int n = a->n_keys;
    const bool fast_exp = attn_fast_exp_ok();
    float qh[a->group * hd > 0 ? a->group * hd : 1];
    for (int g = 0; g < a->group; ++g) {
        if (a->f16) fp16_round_row_f16c(qh + g * hd, a->q + g * hd, hd);
        else memcpy(qh + g * hd, a->q + g * hd, sizeof(float) * (size_t)hd);
    }
    /* scores: heads two by two where AVX-512 shares each key load between them, the keys past
     * the last 8 and any odd head as one head */
    int g = 0;
    for (; hd8 == hd && kern_cpu_has_avx512() && g + 2 <= a->group; g += 2) {
        float *sa = a->scratch + (size_t)g * (size_t)n, *sb = sa + n;
        const int done = scores_pair16(qh + g * hd, qh + (g + 1) * hd, a->k, a->stride, n, hd, sa, sb);
        if (done < n) {
            scores(qh + g * hd, a->k + (int64_t)done * a->stride, a->stride, n - done, hd, sa + done);
            scores(qh + (g + 1) * hd, a->k + (int64_t)done * a->stride, a->stride, n - done, hd, sb + done);
        }
    }
    for (; g < a->group; ++g) scores(qh + g * hd, a->k, a->stride, n, hd, a->scratch + (size_t)g * (size_t)n);
    const __m256 sc = _mm256_set1_ps(a->scale);
    for (g = 0; g < a->group; ++g) {
        float *s = a->scratch + (size_t)g * (size_t)n;
        if (a->cap > 0) kern_softcap(s, n, a->cap);
        int j = 0;
        for (; j + 8 <= n; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), sc));
        for (; j < n; ++j) s[j] *= a->scale;
        softmax_exp(s, n, fast_exp);
    }
    for (g = 0; g < a->group; g += 4) {
        const int rows = a->group - g < 4 ? a->group - g : 4;
        double sums[4];
        exp_sums4(a->scratch + (size_t)g * (size_t)n, n, rows, n, sums);
        for (int r = 0; r < rows; ++r)
            softmax_scale(a->scratch + (size_t)(g + r) * (size_t)n, n, (float)(1.0 / sums[r]), a->f16);
    }
    /* with AVX-512, the first hd16 dimensions 16 at a time: 4 heads x 64 dimensions per pass */
    const int64_t hd16 = kern_cpu_has_avx512() ? hd & ~(int64_t)15 : 0;
    for (int g = 0; g < a->group; g += 4)
        for (int64_t d = 0; d < hd16; d += 64) {
            const int ng = a->group - g < 4 ? a->group - g : 4, nd = hd16 - d < 64 ? (int)((hd16 - d) / 16) : 4;
            wsum16(ng, nd, a->scratch + (size_t)g * (size_t)n, n, a->v, a->stride, d, a->out + g * hd, hd);
        }
    /* slots: (head, 8 dimensions), heads in order, 8 per pass over the keys */
    wsum_slot sl[8];
    int ns = 0;
    for (int g = 0; g < a->group; ++g)
        for (int64_t d = hd16; d < hd8; d += 8) {
            sl[ns++] = (wsum_slot){.p = a->scratch + (size_t)g * (size_t)n, .off = d, .out = a->out + g * hd + d};
            if (ns == 8) {
                wsum(sl, ns, a->v, a->stride, n);
                ns = 0;
            }
        }
    if (ns) wsum(sl, ns, a->v, a->stride, n);
    for (int g = 0; g < a->group && hd8 < hd; ++g) {
        const float *p = a->scratch + (size_t)g * (size_t)n;
        float *out = a->out + g * hd;
        for (int64_t d = hd8; d < hd; ++d) out[d] = 0;
        for (int jj = 0; jj < n; ++jj) {
            const float *vr = a->v + (int64_t)jj * a->stride;
            for (int64_t d = hd8; d < hd; ++d) out[d] += p[jj] * vr[d];
        }
    }
}

#else /* no AVX2 in this build: never called (kern_have_avx2() is false); the scalar loops */

bool attn_fast_exp_ok(void) { return false; }
AVX2_FMA void attn_exp_avx2(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = expf(x[i]);
}
void attn_exp_lanes(const float *x, float *out, int64_t n, int lanes) {
    (void)lanes;
    attn_exp_avx2(x, out, n);
}
void attn_swiglu_avx2(float *x, const float *up, int64_t n) { kern_swiglu_ref(x, up, n); }
void attn_rope_avx2(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox) {
    kern_rope_ref(x, n_rot, cos_t, sin_t, neox);
}

void attn_group_avx2(const attn_job *a) {
    const int64_t hd = a->hd;
    const int n = a->n_keys;
    float qh[hd > 0 ? hd : 1];
    for (int g = 0; g < a->group; ++g) {
        if (a->f16) fp16_round_row(qh, a->q + g * hd, hd);
        else memcpy(qh, a->q + g * hd, sizeof(float) * (size_t)hd);
        float *s = a->scratch + (size_t)g * (size_t)n;
        for (int j = 0; j < n; ++j) {
            const float *kr = a->k + (int64_t)j * a->stride;
            float acc[8] = {0};
            int64_t i = 0;
            for (; i + 8 <= hd; i += 8)
                for (int c = 0; c < 8; ++c) acc[c] += qh[i + c] * kr[i + c];
            float v = 0;
            for (int c = 0; c < 8; ++c) v += acc[c];
            for (; i < hd; ++i) v += qh[i] * kr[i];
            if (a->cap > 0) kern_softcap(&v, 1, a->cap);
            s[j] = v * a->scale;
        }
        kern_softmax(s, n);
        if (a->f16) fp16_round_row(s, s, n);
        float *out = a->out + g * hd;
        for (int64_t d = 0; d < hd; ++d) out[d] = 0;
        for (int j = 0; j < n; ++j)
            for (int64_t d = 0; d < hd; ++d) out[d] += s[j] * a->v[(int64_t)j * a->stride + d];
    }
}

#endif
