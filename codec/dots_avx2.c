/* dots_avx2.c - AVX2 + FMA twins of the scalar inner loops on unpacked rows (see dots.h).
 *
 * Compiled for every x86-64 build with __attribute__((target("avx2,fma"))) on each function,
 * so the project never needs -march=native; kern_cpu_has_avx2() checks the running CPU
 * before anyone calls them (eval's matmul asks it for each call, through kern_have_avx2;
 * the CPU is examined once).
 * On other architectures the functions fall back to the scalar ones of dots.c and
 * kern_cpu_has_avx2() returns false.
 *
 * The integer parts compute exactly what the scalar kernels compute; only the order of the
 * float additions differs (8 lanes, fused multiply-add), as in ggml's own AVX2 code.
 */
#include "dots.h"

#include <math.h>
#include <string.h>

#include "codec/iq_grids.h"
#include "codec/types.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#endif

#ifdef HAVE_AVX2_BUILD

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_F16C __attribute__((target("avx2,fma,f16c"))) /* kern_cpu_has_avx2() checks F16C too */

/* F16C straight from CPUID leaf 1 (ECX bit 29): clang 14 does not know
 * __builtin_cpu_supports("f16c"). The OS's saving of the YMM registers is part of "avx2". */
static bool cpu_has_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}

/* The CPU does not change while we run: ask once (CPUID traps to the hypervisor in a VM, and
 * eval's matmul asks on every call). */
static bool cpu_avx2;
static pthread_once_t cpu_avx2_once = PTHREAD_ONCE_INIT;
static void check_cpu_avx2(void) {
    __builtin_cpu_init();
    cpu_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}

bool kern_cpu_has_avx2(void) {
    pthread_once(&cpu_avx2_once, check_cpu_avx2);
    return cpu_avx2;
}

AVX2 static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* 32 signed int8 products summed in pairs to 16 int16: maddubs needs an unsigned operand,
 * so multiply |w| by a with w's sign moved onto it. No saturation: |w|,|a| <= 127 here. */
AVX2 static inline __m256i dot32_pairs(const int8_t *w, const int8_t *a) {
    const __m256i vw = _mm256_loadu_si256((const __m256i *)w);
    const __m256i va = _mm256_loadu_si256((const __m256i *)a);
    return _mm256_maddubs_epi16(_mm256_sign_epi8(vw, vw), _mm256_sign_epi8(va, vw));
}

AVX2 float kern_dot_f32_avx2(int64_t n, const float *a, const float *b) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = hsum_ps(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) {
        const float p = a[i] * b[i];
        s += p;
    }
    return s;
}

AVX2 float kern_dot_legacy_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        const __m256i p = _mm256_madd_epi16(dot32_pairs(w->q + 32 * b, a->q + 32 * b), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(w->d[b] * a->d[b]), _mm256_cvtepi32_ps(p), acc);
        if (has_min) {
            const float m = w->m[b] * a->s[b]; /* own statement: no compiler may fuse it into an FMA */
            mins += m;
        }
    }
    return hsum_ps(acc) + mins;
}

AVX2 float kern_dot_k_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min) {
    const int ng = 256 / group;
    float sum = 0;
    for (int64_t s = 0; s < n / 256; ++s) {
        const int8_t *wq = w->q + 256 * s, *aq = a->q + 256 * s;
        const int16_t *sc = w->sc + ng * s;
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) { /* 8 chunks of 32 values */
            const __m256i p = dot32_pairs(wq + 32 * c, aq + 32 * c);
            /* low 128 bits of p cover values 0..15 of the chunk, high bits 16..31 */
            const __m256i scale = group == 16 ? _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]))
                                              : _mm256_set1_epi16(sc[c]);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale));
        }
        const int32_t isum = hsum_epi32(acc);
        /* each product its own statement: no compiler may fuse it with the sum into an FMA (the
         * tiled kernels below round exactly these operations) */
        const float dsum = (a->d[s] * w->d[s]) * (float)isum;
        sum += dsum;
        if (has_min) {
            int32_t msum = 0;
            const int32_t *bs = a->bsum + 16 * s;
            const int16_t *mn = w->mn + ng * s;
            for (int g = 0; g < ng; ++g) msum += mn[g] * (group == 16 ? bs[g] : bs[2 * g] + bs[2 * g + 1]);
            const float dmin = (a->d[s] * w->m[s]) * (float)msum;
            sum -= dmin;
        }
    }
    return sum;
}

/* ===================================================================== register-tiled dots
 *
 * KT_R weight rows x T tokens (T = 1..KT_T) at once: every output is computed with exactly the
 * float operations of its 1x1 kernel above (the same partial-sum vectors, the same reduction
 * tree, the same per-block scaling), only the independent outputs are interleaved, so each
 * weight vector is loaded once for T tokens and each activation vector once for KT_R rows.
 * The integer parts are exact (no int16 saturation for |q_a| <= 127, and int32 sums are
 * associative), so they may be formed differently: signed K-family weights are made unsigned
 * with an offset that the activations' block sums take back out (as ggml's Q3_K/Q6_K), and the
 * sub-block sums of all outputs reduce together. The offset needs groups of 16, q + off in
 * 0..129 (VPMADDUBSW's pair sums (q + off) * a then stay within int16 for |a| <= 127) and
 * off * sc within int16: Q3_K (-4..3, off 4), Q6_K (-32..31, off 32), the i-quants and ternary
 * types (|q| <= 62, sc <= 31, off 64). IQ4_XS's levels (-127..113) span too much for any
 * offset, so its weights go in as |q| with q's sign moved onto the activations, as in the 1x1
 * kernel (signed_q). Output (r, t) lands in lane t * KT_R + r of
 * one vector, so the KT_R outputs of a token are stored together. */

#define KT_R 2 /* rows per tile: the lane layout, store_tile and the Q4_K/Q5_K mins assume 2 */
#define KT_T 4 /* tokens per tile at most: KT_R * KT_T outputs fill one vector of 8 lanes */
#define AI __attribute__((always_inline)) inline
#define UNROLL _Pragma("GCC unroll 8")

/* 8 int32 vectors -> one vector of their lane sums (integer: any order is exact). */
AVX2 static AI __m256i hsum8_epi32(const __m256i v[8]) {
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* 8 float vectors -> one vector whose lane i is hsum_ps(v[i]), with hsum_ps's own tree:
 * ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)). */
AVX2 static AI __m256 hsum8_ps(const __m256 v[8]) {
    __m256 p[4], q[2];
    UNROLL
    for (int k = 0; k < 4; ++k) /* lanes i + (i + 4) of v[2k] (low half) and v[2k+1] (high half) */
        p[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
    UNROLL
    for (int k = 0; k < 2; ++k) /* (s0 + s2), (s1 + s3) of p[2k] and p[2k+1] */
        q[k] = _mm256_add_ps(_mm256_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(q[0], q[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm256_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* r holds v0, v2, v4, v6 | v1, v3, v5, v7 */
    return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

#define LANE(r, t) ((t) * KT_R + (r))

/* Lanes 2t, 2t + 1 of v to y[t * ldy], y[t * ldy + 1] (KT_R == 2). */
AVX2 static AI void store_tile(__m256 v, int T, float *y, int64_t ldy) {
    const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    _mm_storel_pi((__m64 *)y, lo);
    if (T > 1) _mm_storeh_pi((__m64 *)(y + ldy), lo);
    if (T > 2) _mm_storel_pi((__m64 *)(y + 2 * ldy), hi);
    if (T > 3) _mm_storeh_pi((__m64 *)(y + 3 * ldy), hi);
}

/* [v0, v1] in every pair of lanes: the per-row factor of each output. */
AVX2 static AI __m256 lanes_of_rows(const float *v0, const float *v1) {
    const __m128 p = _mm_unpacklo_ps(_mm_load_ss(v0), _mm_load_ss(v1));
    return _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(p)));
}

/* a[t].d[s] (or a[t].s[s] when s_field) in lanes 2t and 2t + 1 (0 for t >= T): the per-token
 * factor of each output. */
#define TOKF(t) (s_field ? a[t].s[s] : a[t].d[s])
AVX2 static AI __m256 lanes_of_tokens(const kern_arow *a, int64_t s, int T, bool s_field) {
    /* straight into a register: four scalar stores and a vector load would stall the load */
    const __m128 x = _mm_setr_ps(TOKF(0), T > 1 ? TOKF(1) : 0.f, T > 2 ? TOKF(2) : 0.f, T > 3 ? TOKF(3) : 0.f);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(x), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
}

/* ------------------------------------------------------------ K-quants (kern_dot_k_avx2) */

AVX2 static AI void dot_k_tile(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy, const int T,
                               const int group, const bool has_min, const int off, const bool signed_q) {
    const int ng = 256 / group;
    const __m256i voff = _mm256_set1_epi8((char)off);
    /* group 16: sc[2c] in the low 128 bits, sc[2c+1] in the high (from one 32-bit broadcast) */
    const __m256i sc_shuf = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3,
                                             2, 3, 2, 3, 2, 3, 2, 3);
    __m256 sum = _mm256_setzero_ps();
    for (int64_t s = 0; s < n / 256; ++s) {
        __m256i acc[8];
        UNROLL
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) {
            UNROLL
            for (int r = 0; r < KT_R; ++r) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(w[r].q + 256 * s + 32 * c));
                if (off) wv = _mm256_add_epi8(wv, voff);
                const __m256i wu = signed_q ? _mm256_sign_epi8(wv, wv) : wv; /* the unsigned operand */
                const int16_t *sc = w[r].sc + ng * s;
                __m256i scv;
                if (group == 16) {
                    int32_t two;
                    __builtin_memcpy(&two, sc + 2 * c, 4);
                    scv = _mm256_shuffle_epi8(_mm256_set1_epi32(two), sc_shuf);
                } else {
                    scv = _mm256_set1_epi16(sc[c]);
                }
                UNROLL
                for (int t = 0; t < T; ++t) {
                    __m256i av = _mm256_loadu_si256((const __m256i *)(a[t].q + 256 * s + 32 * c));
                    if (signed_q) av = _mm256_sign_epi8(av, wv);
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, av), scv);
                    acc[LANE(r, t)] = _mm256_add_epi32(acc[LANE(r, t)], p);
                }
            }
        }
        __m256i msum = _mm256_setzero_si256(); /* lane LANE(r, t): sum_g mn_g * bsum_g */
        if (off || has_min) {
            __m256i bs[KT_T];
            UNROLL
            for (int t = 0; t < T; ++t) bs[t] = _mm256_loadu_si256((const __m256i *)(a[t].bsum16 + 16 * s));
            if (off) /* take off * sum_g sc_g * bsum_g back out (group 16) */
                UNROLL
                for (int r = 0; r < KT_R; ++r) {
                    const __m256i sc16 = _mm256_loadu_si256((const __m256i *)(w[r].sc + 16 * s));
                    const __m256i coef = _mm256_mullo_epi16(sc16, _mm256_set1_epi16((short)off));
                    UNROLL
                    for (int t = 0; t < T; ++t)
                        acc[LANE(r, t)] = _mm256_sub_epi32(acc[LANE(r, t)], _mm256_madd_epi16(coef, bs[t]));
                }
            if (has_min && group == 16) {
                __m256i macc[8];
                UNROLL
                for (int k = 0; k < 8; ++k) macc[k] = _mm256_setzero_si256();
                UNROLL
                for (int r = 0; r < KT_R; ++r) {
                    const __m256i mc = _mm256_loadu_si256((const __m256i *)(w[r].mn + 16 * s));
                    UNROLL
                    for (int t = 0; t < T; ++t) macc[LANE(r, t)] = _mm256_madd_epi16(mc, bs[t]);
                }
                msum = hsum8_epi32(macc);
            } else if (has_min) {
                /* group 32: both rows' 8 mins in one vector against the token's 8 pair sums twice */
                const __m256i mc = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w[0].mn + 8 * s))),
                    _mm_loadu_si128((const __m128i *)(w[1].mn + 8 * s)), 1);
                __m256i m[KT_T];
                UNROLL
                for (int t = 0; t < KT_T; ++t) {
                    if (t >= T) {
                        m[t] = _mm256_setzero_si256();
                        continue;
                    }
                    const __m256i b32 = _mm256_madd_epi16(bs[t], _mm256_set1_epi16(1)); /* bs[2g] + bs[2g+1] */
                    const __m256i b16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(b32, b32), _MM_SHUFFLE(2, 0, 2, 0));
                    m[t] = _mm256_madd_epi16(mc, b16); /* 4 partial sums of row 0 | of row 1 */
                }
                const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
                /* h: row 0 for tokens 0..3 | row 1 for tokens 0..3 */
                msum = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            }
        }
        const __m256 vad = lanes_of_tokens(a, s, T, false);
        /* sum += (d_a * d_w) * isum; sum -= (d_a * dmin_w) * msum */
        sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_mul_ps(vad, lanes_of_rows(w[0].d + s, w[1].d + s)),
                                               _mm256_cvtepi32_ps(hsum8_epi32(acc))));
        if (has_min)
            sum = _mm256_sub_ps(sum, _mm256_mul_ps(_mm256_mul_ps(vad, lanes_of_rows(w[0].m + s, w[1].m + s)),
                                                   _mm256_cvtepi32_ps(msum)));
    }
    store_tile(sum, T, y, ldy);
}

/* ------------------------------------------------------------ legacy blocks (kern_dot_legacy_avx2) */

AVX2 static AI void dot_legacy_tile(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy,
                                    const int T, const bool has_min) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[8], mins = _mm256_setzero_ps(); /* mins: lane LANE(r, t) */
    UNROLL
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; ++b) {
        UNROLL
        for (int r = 0; r < KT_R; ++r) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w[r].q + 32 * b));
            const __m256i wabs = _mm256_sign_epi8(wv, wv);
            const __m256 wd = _mm256_broadcast_ss(w[r].d + b);
            UNROLL
            for (int t = 0; t < T; ++t) {
                const __m256i av = _mm256_loadu_si256((const __m256i *)(a[t].q + 32 * b));
                /* Q4_1 / Q5_1 quants are >= 0: w * a straight (the sign moves change no product) */
                const __m256i p16 = has_min ? _mm256_maddubs_epi16(wv, av) : _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv));
                const __m256i p = _mm256_madd_epi16(p16, ones);
                const __m256 d = _mm256_mul_ps(wd, _mm256_broadcast_ss(a[t].d + b));
                acc[LANE(r, t)] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[LANE(r, t)]);
            }
        }
        /* mins += m_w * s_a, every output in its lane */
        if (has_min)
            mins = _mm256_add_ps(mins, _mm256_mul_ps(lanes_of_rows(w[0].m + b, w[1].m + b), lanes_of_tokens(a, b, T, true)));
    }
    __m256 v = hsum8_ps(acc);
    if (has_min) v = _mm256_add_ps(v, mins);
    store_tile(v, T, y, ldy);
}

/* ------------------------------------------------------------ floats (kern_dot_f32_avx2), n % 8 == 0
 * The 1x1 kernel keeps two chains, acc0 over the even 8-value chunks of each 16 (then the last
 * chunk when n % 16 == 8) and acc1 over the odd ones: here one chain after the other. */

AVX2 static AI void dot_f32_tile(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy,
                                 const int T) {
    const int64_t n16 = n / 16 * 16;
    __m256 acc0[8], acc1[8];
    for (int h = 0; h < 2; ++h) {
        __m256 acc[8];
        UNROLL
        for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
        for (int64_t i = 8 * h; i < n16; i += 16) {
            __m256 av[KT_T]; /* each activation vector loaded once for both rows */
            UNROLL
            for (int t = 0; t < T; ++t) {
                av[t] = _mm256_loadu_ps(a[t].f + i);
                __asm__("" : "+x"(av[t])); /* keep it in a register: no second load folded into an FMA */
            }
            UNROLL
            for (int r = 0; r < KT_R; ++r) {
                const __m256 wv = _mm256_loadu_ps(w[r].f + i);
                UNROLL
                for (int t = 0; t < T; ++t) acc[LANE(r, t)] = _mm256_fmadd_ps(wv, av[t], acc[LANE(r, t)]);
            }
        }
        if (h == 0 && n16 < n)
            UNROLL
            for (int r = 0; r < KT_R; ++r)
                UNROLL
                for (int t = 0; t < T; ++t)
                    acc[LANE(r, t)] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r].f + n16), _mm256_loadu_ps(a[t].f + n16), acc[LANE(r, t)]);
        UNROLL
        for (int k = 0; k < 8; ++k) (h ? acc1 : acc0)[k] = acc[k];
    }
    __m256 v[8];
    UNROLL
    for (int k = 0; k < 8; ++k) v[k] = _mm256_add_ps(acc0[k], acc1[k]);
    store_tile(hsum8_ps(v), T, y, ldy);
}

/* One instance per family variant and token count; T is the last argument. */
#define TILE_FNS(NAME, CALL)                                                                       \
    AVX2 static void NAME##_1(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(1); } \
    AVX2 static void NAME##_2(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(2); } \
    AVX2 static void NAME##_3(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(3); } \
    AVX2 static void NAME##_4(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(4); } \
    static void (*const NAME[KT_T + 1])(int64_t, const kern_wrow *, const kern_arow *, float *, int64_t) = {     \
        NULL, NAME##_1, NAME##_2, NAME##_3, NAME##_4};

#define CALL_Q2K(T) dot_k_tile(n, w, a, y, ldy, T, 16, true, 0, false)
#define CALL_Q3K(T) dot_k_tile(n, w, a, y, ldy, T, 16, false, 4, false)
#define CALL_Q6K(T) dot_k_tile(n, w, a, y, ldy, T, 16, false, 32, false)
#define CALL_Q45K(T) dot_k_tile(n, w, a, y, ldy, T, 32, true, 0, false)
#define CALL_IQ(T) dot_k_tile(n, w, a, y, ldy, T, 16, false, 64, false)
#define CALL_IQ4XS(T) dot_k_tile(n, w, a, y, ldy, T, 32, false, 0, true)
#define CALL_LEG(T) dot_legacy_tile(n, w, a, y, ldy, T, false)
#define CALL_LEGM(T) dot_legacy_tile(n, w, a, y, ldy, T, true)
#define CALL_F32(T) dot_f32_tile(n, w, a, y, ldy, T)
TILE_FNS(tile_q2k, CALL_Q2K)
TILE_FNS(tile_q3k, CALL_Q3K)
TILE_FNS(tile_q6k, CALL_Q6K)
TILE_FNS(tile_q45k, CALL_Q45K)
TILE_FNS(tile_iq, CALL_IQ)
TILE_FNS(tile_iq4xs, CALL_IQ4XS)
TILE_FNS(tile_leg, CALL_LEG)
TILE_FNS(tile_legm, CALL_LEGM)
TILE_FNS(tile_f32, CALL_F32)

typedef void (*tile_fn)(int64_t, const kern_wrow *, const kern_arow *, float *, int64_t);

/* Rows [0, k) x tokens [0, nt) through the tile functions fns[1..KT_T], each taking `step` rows
 * (k the largest multiple of step <= nr); returns k, or 0 when fns is NULL. */
static int run_tiles(const tile_fn *fns, int step, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                     float *y, int64_t ldy) {
    const int nr_tiled = nr / step * step;
    if (!fns || nr_tiled == 0 || nt <= 0) return 0;
    /* tokens outer: the KT_T activation rows stay in L1 while every row group passes */
    for (int t0 = 0; t0 < nt; t0 += KT_T) {
        const int tt = nt - t0 < KT_T ? nt - t0 : KT_T;
        for (int r0 = 0; r0 < nr_tiled; r0 += step) fns[tt](n, w + r0, a + t0, y + t0 * ldy + r0, ldy);
    }
    return nr_tiled;
}

int kern_dot_tile_avx2(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                       float *y, int64_t ldy) {
    const tile_fn *fns = NULL;
    switch (wd->type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        if (n % 8 == 0) fns = tile_f32;
        break;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: fns = tile_leg; break;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: fns = tile_legm; break;
    case GGML_TYPE_Q2_K: fns = tile_q2k; break;
    case GGML_TYPE_Q3_K: fns = tile_q3k; break;
    case GGML_TYPE_Q6_K: fns = tile_q6k; break;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: fns = tile_q45k; break;
    case GGML_TYPE_IQ4_NL: fns = tile_leg; break;
    case GGML_TYPE_IQ4_XS: fns = tile_iq4xs; break;
    case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S:
    case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
        fns = tile_iq; /* |q| <= 62, sc <= 31 (dots.c section 4): off 64 stays exact */
        break;
    default: break;
    }
    return run_tiles(fns, KT_R, n, w, nr, a, nt, y, ldy);
}

/* ===================================================================== AVX-512 tiles
 * The same tiles with 512-bit registers where that keeps every output's operations: for float
 * rows the 1x1 kernel's two 8-lane chains (even / odd 8-value chunks of each 16) are the two
 * halves of one 16-lane register, so one pass does both; for legacy blocks two tokens share a
 * register, each half running its own token's chain, and VPDPBUSD forms the same int32 sums of
 * four products as VPMADDUBSW + VPMADDWD (exact integers). The reduction is the AVX2 one. Rows
 * go in fours where there are four (32 registers hold the accumulators), then a last pair. */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")))

static bool cpu_avx512;
static pthread_once_t cpu_avx512_once = PTHREAD_ONCE_INIT;
static void check_cpu_avx512(void) {
    unsigned eax, ebx, ecx, edx;
    __builtin_cpu_init();
    /* avx512f: libgcc / compiler-rt also check that the OS saves the ZMM state; the rest from
     * CPUID leaf 7 (DQ ebx 17, BW ebx 30, VL ebx 31, VNNI ecx 11) */
    cpu_avx512 = kern_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
                 __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx >> 17 & 1) && (ebx >> 30 & 1) &&
                 (ebx >> 31 & 1) && (ecx >> 11 & 1);
}

bool kern_cpu_has_avx512(void) {
    pthread_once(&cpu_avx512_once, check_cpu_avx512);
    return cpu_avx512;
}

/* AVX512_BF16: CPUID leaf 7 sub-leaf 1, EAX bit 5 (asked once, as above) */
static bool cpu_avx512bf16;
static pthread_once_t cpu_avx512bf16_once = PTHREAD_ONCE_INIT;
static void check_cpu_avx512bf16(void) {
    unsigned eax, ebx, ecx, edx;
    cpu_avx512bf16 = kern_cpu_has_avx512() && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax >> 5 & 1);
}

bool kern_cpu_has_avx512bf16(void) {
    pthread_once(&cpu_avx512bf16_once, check_cpu_avx512bf16);
    return cpu_avx512bf16;
}

/* One row pair's 8 chains (lane LANE(r, t) of acc: its even 8-value chunks in the low half, the
 * odd ones in the high half) reduced as the 1x1 kernel reduces them, and stored. */
AVX512 static AI void store_f32_pair512(const __m512 acc[8], int T, float *y, int64_t ldy) {
    __m256 v[8];
    UNROLL
    for (int k = 0; k < 8; ++k) v[k] = _mm256_add_ps(_mm512_castps512_ps256(acc[k]), _mm512_extractf32x8_ps(acc[k], 1));
    store_tile(hsum8_ps(v), T, y, ldy);
}

/* The sums of 16 chains at once, c[4 * row + token] (4 rows x 4 tokens), each reduced as
 * store_f32_pair512 reduces one (its low 8 lanes plus its high 8, then hsum8_ps's tree, every
 * addition with the same operands in the same order) but 16 chains per instruction where those
 * take 8: the sum of row r, token t in lane 4 * t + r. */
AVX512 static AI __m512 hsum16x16(const __m512 c[16]) {
    __m512 h[8], p[4], q[2];
    UNROLL
    for (int j = 0; j < 8; ++j) /* [c[2j] low + high | c[2j+1] low + high] */
        h[j] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * j], c[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(c[2 * j], c[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    UNROLL
    for (int k = 0; k < 4; ++k) /* 128-bit block m: lanes i + (i + 4) of chain 4k + m */
        p[k] = _mm512_add_ps(_mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    UNROLL
    for (int k = 0; k < 2; ++k) /* (s0 + s2), (s1 + s3) of p[2k] and p[2k+1], block by block */
        q[k] = _mm512_add_ps(_mm512_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(p[2 * k], p[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* block m: chains m, 4 + m, 8 + m, 12 + m */
    return _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* 128-bit block t of v (t a constant once the caller's loop is unrolled). */
AVX512 static AI __m128 block4(__m512 v, int t) {
    switch (t) {
    case 0: return _mm512_extractf32x4_ps(v, 0);
    case 1: return _mm512_extractf32x4_ps(v, 1);
    case 2: return _mm512_extractf32x4_ps(v, 2);
    default: return _mm512_extractf32x4_ps(v, 3);
    }
}

/* The float tiles' chains: acc[row pair][LANE(row, token)], 2 row pairs x at most FR_T tokens
 * (dot_f32_tile512 uses tokens 0..KT_T-1, the in-place rows below all FR_T). */
enum { FR_T = 6 };

/* 16 weights from row + i, widened to floats (exact). */
AVX512 static AI __m512 load16_weights(const int wtype, const void *row, int64_t i) {
    if (wtype == GGML_TYPE_F32) return _mm512_loadu_ps((const float *)row + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    if (wtype == GGML_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* BF16 */
}

/* One step of the chains: values i..i+15 of P row pairs (w[0..2P-1]) x T tokens, one FMA per
 * row and token. */
AVX512 static AI void float_rows_step(__m512 acc[2][2 * FR_T], const int wtype, const int P, const int T,
                                      const void *const *w, const kern_arow *a, int64_t i) {
    __m512 av[FR_T];
    UNROLL
    for (int t = 0; t < T; ++t) {
        av[t] = _mm512_loadu_ps(a[t].f + i);
        __asm__("" : "+v"(av[t])); /* keep it in a register: no reload folded into each FMA */
    }
    UNROLL
    for (int r = 0; r < KT_R * P; ++r) {
        const __m512 wv = load16_weights(wtype, w[r], i);
        UNROLL
        for (int t = 0; t < T; ++t)
            acc[r / KT_R][LANE(r % KT_R, t)] = _mm512_fmadd_ps(wv, av[t], acc[r / KT_R][LANE(r % KT_R, t)]);
    }
}

/* P pairs of rows (P = 1 or 2: 2 or 4 rows) x T tokens; each pair's 8 outputs reduce and store
 * as in the AVX2 tile. 4 rows x 4 tokens keep 16 accumulators in registers: 8 vector loads
 * per 16 FMAs. */
AVX512 static AI void dot_f32_tile512(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy,
                                      const int T, const int P) {
    const int64_t n16 = n / 16 * 16;
    const void *rows[2 * KT_R];
    __m512 acc[2][2 * FR_T];
    UNROLL
    for (int p = 0; p < P; ++p) {
        rows[KT_R * p] = w[KT_R * p].f;
        rows[KT_R * p + 1] = w[KT_R * p + 1].f;
        UNROLL
        for (int k = 0; k < 2 * KT_T; ++k) acc[p][k] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < n16; i += 16) float_rows_step(acc, GGML_TYPE_F32, P, T, rows, a, i);
    UNROLL
    for (int p = 0; p < P; ++p) {
        if (n16 < n)
            UNROLL
            for (int k = 0; k < 2 * T; ++k) { /* the last 8 values into the low (even-chunk) chain */
                const int r = KT_R * p + k % KT_R, t = k / KT_R;
                const __m256 lo = _mm256_fmadd_ps(_mm256_loadu_ps(w[r].f + n16), _mm256_loadu_ps(a[t].f + n16),
                                                  _mm512_castps512_ps256(acc[p][k]));
                acc[p][k] = _mm512_insertf32x8(acc[p][k], lo, 0);
            }
        store_f32_pair512(acc[p], T, y + KT_R * p, ldy);
    }
}

/* Each block's activations are prepared once for all rows: two tokens' 32 quants in one register
 * and, for the signed types, their group-of-4 sums times 128: VPDPBUSD wants an unsigned
 * operand, so the weights go in as w + 128 (w ^ 0x80) and the accumulator starts at
 * -128 * sum(a), which leaves exactly sum(w * a) (integers: no rounding, no saturation). P pairs
 * of rows (P = 1 or 2). */
AVX512 static AI void dot_legacy_tile512(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy,
                                         const int T, const bool has_min, const int P) {
    enum { NP = (KT_T + 1) / 2 }; /* token pairs */
    __m512 acc[2 * KT_R][NP];
    __m256 mins[2]; /* per row pair: lane LANE(r, t) */
    UNROLL
    for (int r = 0; r < KT_R * P; ++r)
        UNROLL
        for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
    mins[0] = mins[1] = _mm256_setzero_ps();
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int64_t b = 0; b < n / 32; ++b) {
        __m512i av[NP], start[NP];
        __m512 ad[NP];
        UNROLL
        for (int p = 0; p < NP; ++p) {
            const int t0 = 2 * p, t1 = 2 * p + 1;
            if (t0 >= T) break;
            const __m256i a0 = _mm256_loadu_si256((const __m256i *)(a[t0].q + 32 * b));
            const __m256i a1 = t1 < T ? _mm256_loadu_si256((const __m256i *)(a[t1].q + 32 * b)) : _mm256_setzero_si256();
            av[p] = _mm512_inserti64x4(_mm512_castsi256_si512(a0), a1, 1);
            start[p] = has_min ? _mm512_setzero_si512()
                               : _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, av[p]));
            ad[p] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_broadcast_ss(a[t0].d + b)),
                                       t1 < T ? _mm256_broadcast_ss(a[t1].d + b) : _mm256_setzero_ps(), 1);
        }
        UNROLL
        for (int r = 0; r < KT_R * P; ++r) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w[r].q + 32 * b));
            /* Q4_1 / Q5_1 quants are >= 0 already; the others as w + 128 */
            const __m512i wu = _mm512_broadcast_i64x4(has_min ? wv : _mm256_xor_si256(wv, _mm512_castsi512_si256(bias)));
            const __m512 wd = _mm512_set1_ps(w[r].d[b]);
            UNROLL
            for (int p = 0; p < NP; ++p) {
                if (2 * p >= T) break;
                const __m512i pr = _mm512_dpbusd_epi32(start[p], wu, av[p]);
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(wd, ad[p]), _mm512_cvtepi32_ps(pr), acc[r][p]);
            }
        }
        if (has_min)
            UNROLL
            for (int q = 0; q < P; ++q)
                mins[q] = _mm256_add_ps(mins[q], _mm256_mul_ps(lanes_of_rows(w[KT_R * q].m + b, w[KT_R * q + 1].m + b),
                                                               lanes_of_tokens(a, b, T, true)));
    }
    UNROLL
    for (int q = 0; q < P; ++q) {
        __m256 v[8];
        UNROLL
        for (int k = 0; k < 8; ++k) {
            const int r = KT_R * q + k % KT_R, t = k / KT_R;
            v[k] = t % 2 ? _mm512_extractf32x8_ps(acc[r][t / 2], 1) : _mm512_castps512_ps256(acc[r][t / 2]);
        }
        __m256 out = hsum8_ps(v);
        if (has_min) out = _mm256_add_ps(out, mins[q]);
        store_tile(out, T, y + KT_R * q, ldy);
    }
}

#define CALL_F32_512(T) dot_f32_tile512(n, w, a, y, ldy, T, 1)
#define CALL_F32_512R4(T) dot_f32_tile512(n, w, a, y, ldy, T, 2)
#define CALL_LEG_512(T) dot_legacy_tile512(n, w, a, y, ldy, T, false, 1)
#define CALL_LEGM_512(T) dot_legacy_tile512(n, w, a, y, ldy, T, true, 1)
#define CALL_LEG_512R4(T) dot_legacy_tile512(n, w, a, y, ldy, T, false, 2)
#define CALL_LEGM_512R4(T) dot_legacy_tile512(n, w, a, y, ldy, T, true, 2)
#define TILE_FNS512(NAME, CALL)                                                                    \
    AVX512 static void NAME##_1(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(1); } \
    AVX512 static void NAME##_2(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(2); } \
    AVX512 static void NAME##_3(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(3); } \
    AVX512 static void NAME##_4(int64_t n, const kern_wrow *w, const kern_arow *a, float *y, int64_t ldy) { CALL(4); } \
    static void (*const NAME[KT_T + 1])(int64_t, const kern_wrow *, const kern_arow *, float *, int64_t) = {      \
        NULL, NAME##_1, NAME##_2, NAME##_3, NAME##_4};
TILE_FNS512(tile512_f32, CALL_F32_512)
TILE_FNS512(tile512_f32r4, CALL_F32_512R4)
TILE_FNS512(tile512_leg, CALL_LEG_512)
TILE_FNS512(tile512_legm, CALL_LEGM_512)
TILE_FNS512(tile512_legr4, CALL_LEG_512R4)
TILE_FNS512(tile512_legmr4, CALL_LEGM_512R4)

int kern_dot_tile_avx512(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                         float *y, int64_t ldy) {
    const tile_fn *pairs = NULL, *fours = NULL;
    switch (wd->type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        if (n % 8 == 0) pairs = tile512_f32, fours = tile512_f32r4;
        break;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: case GGML_TYPE_IQ4_NL:
        pairs = tile512_leg, fours = tile512_legr4;
        break;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: pairs = tile512_legm, fours = tile512_legmr4; break;
    default: break;
    }
    if (!pairs || !kern_cpu_has_avx512()) return 0;
    /* rows in fours, then a last pair */
    const int k = run_tiles(fours, 2 * KT_R, n, w, nr, a, nt, y, ldy);
    return k + run_tiles(pairs, KT_R, n, w + k, nr - k, a, nt, y + k, ldy);
}

/* ------------------------------------------------------------ float rows read in place
 * F32 / F16 / BF16 weights straight from the file, widened in the register that multiplies them
 * (VCVTPH2PS, or BF16 << 16: both exact), so no f32 copy of each row is written and read back
 * and the weights cross the caches at their stored size. Each output is still the 1x1 kernel's
 * pair of 8-lane chains (the 16 lanes of one register), so the bits are those of
 * kern_dot_tile_avx512 on the unpacked rows; a signalling-NaN half becomes the same quiet NaN
 * either way.
 *
 * The register tile is 4 rows x FR_T = 6 tokens: 24 chains, and per step 4 weight and 6 token
 * loads for 24 products, where the AVX2 tiles' 4 tokens take 8 loads for 16 (Llama-3.2-1B,
 * 2 chunks, perf samples of the tile against 4 x 4: BF16 4-7% fewer, F16 9-16% fewer). All 24
 * chains and the 6 tokens fit the 32 registers only if every loop over them is unrolled
 * (UNROLL_CHAINS): a 24-chain array left in memory made the tile slower than 4 x 4.
 * Blocking: n is cut into slices of FR_K values and the tokens into blocks of FR_TOK. For one
 * slice, 128 rows (256 KB as F16 at 1024 values, 512 KB as BF16 at 2048) stay in L2 while
 * every 6-token group of the block passes, and each group's 6 activation slices (24 KB as
 * F32, in L1) serve all 128 rows, so the activations are read from L3 once per 128 rows, not
 * once per 4 (128-row panels: 3% fewer perf samples in the BF16 and the F16 tile than 64, 3-4
 * alternating runs of the Llama-3.2-1B, 2 chunks). Between slices the unreduced
 * chains wait in memory (24 registers per 4 rows x 6 tokens): storing and reloading a float
 * changes nothing, so every chain runs the same FMAs in the same order as without slices.
 * (Measured on Llama-3.2-1B F16, one chunk, 4 x 4 tiles: 16 rows x 64 tokens x 256 values 4.0 s,
 * 64 x 64 x 256 3.3 s, 64 x 64 x 512 3.1 s; 128 rows, 1024 values, 16 or 32 tokens all within
 * 3%. With 4 x 6 tiles, 1024 values took 2% fewer perf samples in the F16 tile than 512, over
 * 4 alternating runs of 2 chunks, and 2048 more.)
 * The VDPBF16PS slices do twice the work per instruction, so a call's fixed part (the chains
 * loaded and stored, the row pointers) weighs twice as much: they take 2048 values at a time
 * (Llama-3.2-1B BF16, 2 chunks: 512 values 4.9 s, 1024 4.2 s, 2048 4.2 s, 8192 4.2 s). */
enum { FR_ROWS = 128, FR_TOK = 60, FR_K = 1024, FR_K_PAIRS = 2048 };
enum { FR_CHAINS = 4 * FR_T * 16 }; /* floats of one tile's unreduced chains */
_Static_assert(FR_T > 4 && FR_T <= 8, "a tile's tokens reduce as two groups of at most 4");
_Static_assert(FR_ROWS / 4 * (FR_TOK / FR_T) * FR_CHAINS <= KERN_FLOAT_SCRATCH, "the chains kept fit the scratch");

/* A slice's 4 x T chains (T <= FR_T; acc[row pair][LANE(row, token)]): at 0 for the first
 * slice, else as the last slice left them in st; after it, saved to st, or (last slice) reduced
 * and stored to y, tokens 0-3 then 4-5, each group of 4 rows x 4 tokens as one hsum16x16: about
 * 50 instructions where the two store_f32_pair512 per group it replaced took about 85, the same bits
 * (kern_matmul on Llama-3.2-1B's ffn_up shape, fastest of 5 runs in turn, ns per 24 FMAs: BF16
 * 2.19 -> 2.17, F16 4.30 -> 4.19; the medians move less than this VM's noise). */
#define UNROLL_CHAINS _Pragma("GCC unroll 16") /* all 2 * FR_T: the chains stay in registers */
AVX512 static AI void chains_start(__m512 acc[2][2 * FR_T], int T, bool first, const float *st) {
    UNROLL
    for (int p = 0; p < 2; ++p)
        UNROLL_CHAINS
        for (int k = 0; k < 2 * FR_T; ++k)
            acc[p][k] = first || k >= 2 * T ? _mm512_setzero_ps() : _mm512_loadu_ps(st + 16 * (2 * FR_T * p + k));
}
AVX512 static AI void chains_end(__m512 acc[2][2 * FR_T], int T, bool last, float *st, float *y, int64_t ldy) {
    if (last) { /* tokens 0-3, then 4-5: 4 rows x 4 tokens reduced at once, 4 rows stored per token */
        UNROLL
        for (int t0 = 0; t0 < T; t0 += 4) {
            __m512 c[16];
            UNROLL
            for (int r = 0; r < 4; ++r)
                UNROLL
                for (int t = 0; t < 4; ++t)
                    c[4 * r + t] = t0 + t < T ? acc[r / KT_R][LANE(r % KT_R, t0 + t)] : _mm512_setzero_ps();
            const __m512 sums = hsum16x16(c);
            UNROLL
            for (int t = 0; t < 4; ++t)
                if (t0 + t < T) _mm_storeu_ps(y + (t0 + t) * ldy, block4(sums, t));
        }
        return;
    }
    UNROLL
    for (int p = 0; p < 2; ++p)
        UNROLL_CHAINS
        for (int k = 0; k < 2 * T; ++k) _mm512_storeu_ps(st + 16 * (2 * FR_T * p + k), acc[p][k]);
}

/* 4 rows x T tokens over values [k0, k1): the chains start at 0 (first) or from st, and are
 * saved to st, or (last) reduced and stored to y. */
AVX512 static AI void float_rows_slice(const int wtype, const int T, const void *const *w, const kern_arow *a,
                                       int64_t k0, int64_t k1, bool first, bool last, float *st, float *y,
                                       int64_t ldy) {
    __m512 acc[2][2 * FR_T];
    chains_start(acc, T, first, st);
    for (int64_t i = k0; i < k1; i += 16) float_rows_step(acc, wtype, 2, T, w, a, i);
    chains_end(acc, T, last, st, y, ldy);
}

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,avx2,fma")))

/* The same slice for BF16 rows with VDPBF16PS (dots.h: kern_cpu_has_avx512bf16): each step of
 * 32 values is one instruction per row and token where float_rows_slice runs two FMAs, on the
 * pairs of kern_act_bf16_pairs (a[t].h) and the weights paired the same way by one VPERMW per
 * row; a last 16 values (n % 32) run float_rows_slice's FMAs. */
AVX512BF16 static AI void bf16_pairs_slice(const int T, const void *const *w, const kern_arow *a, int64_t k0,
                                           int64_t k1, bool first, bool last, float *st, float *y, int64_t ldy) {
    /* word 2j <- word 16 + j (low half, second), word 2j + 1 <- word j (high half, first) */
    const __m512i pair = _mm512_set_epi16(15, 31, 14, 30, 13, 29, 12, 28, 11, 27, 10, 26, 9, 25, 8, 24, 7, 23, 6, 22,
                                          5, 21, 4, 20, 3, 19, 2, 18, 1, 17, 0, 16);
    __m512 acc[2][2 * FR_T];
    chains_start(acc, T, first, st);
    int64_t i = k0;
    for (; i + 32 <= k1; i += 32) {
        __m512bh av[FR_T];
        UNROLL
        for (int t = 0; t < T; ++t) {
            av[t] = (__m512bh)_mm512_loadu_si512((const void *)(a[t].h + i));
            __asm__("" : "+v"(av[t]));
        }
        UNROLL
        for (int r = 0; r < 2 * KT_R; ++r) {
            const __m512bh wv = (__m512bh)_mm512_permutexvar_epi16(
                pair, _mm512_loadu_si512((const void *)((const uint16_t *)w[r] + i)));
            UNROLL
            for (int t = 0; t < T; ++t)
                acc[r / KT_R][LANE(r % KT_R, t)] = _mm512_dpbf16_ps(acc[r / KT_R][LANE(r % KT_R, t)], wv, av[t]);
        }
    }
    for (; i < k1; i += 16) float_rows_step(acc, GGML_TYPE_BF16, 2, T, w, a, i); /* an odd last 16: no pair */
    chains_end(acc, T, last, st, y, ldy);
}

typedef void (*float_slice_fn)(const void *const *, const kern_arow *, int64_t, int64_t, bool, bool, float *, float *,
                               int64_t);
#define FLOAT_SLICE_FNS(NAME, WTYPE)                                                                                 \
    AVX512 static void NAME##_1(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 1, w, a, k0, k1, f, l, st, y, ldy); } \
    AVX512 static void NAME##_2(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 2, w, a, k0, k1, f, l, st, y, ldy); } \
    AVX512 static void NAME##_3(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 3, w, a, k0, k1, f, l, st, y, ldy); } \
    AVX512 static void NAME##_4(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 4, w, a, k0, k1, f, l, st, y, ldy); } \
    AVX512 static void NAME##_5(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 5, w, a, k0, k1, f, l, st, y, ldy); } \
    AVX512 static void NAME##_6(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1, bool f, bool l,    \
                                float *st, float *y, int64_t ldy) { float_rows_slice(WTYPE, 6, w, a, k0, k1, f, l, st, y, ldy); } \
    static const float_slice_fn NAME[FR_T + 1] = {NULL, NAME##_1, NAME##_2, NAME##_3, NAME##_4, NAME##_5, NAME##_6};
FLOAT_SLICE_FNS(slice_f32, GGML_TYPE_F32)
FLOAT_SLICE_FNS(slice_f16, GGML_TYPE_F16)
FLOAT_SLICE_FNS(slice_bf16, GGML_TYPE_BF16)
#define BF16_PAIR_FN(T)                                                                                              \
    AVX512BF16 static void slice_bf16_pairs_##T(const void *const *w, const kern_arow *a, int64_t k0, int64_t k1,      \
                                                bool f, bool l, float *st, float *y, int64_t ldy) {                   \
        bf16_pairs_slice(T, w, a, k0, k1, f, l, st, y, ldy);                                                           \
    }
BF16_PAIR_FN(1)
BF16_PAIR_FN(2)
BF16_PAIR_FN(3)
BF16_PAIR_FN(4)
BF16_PAIR_FN(5)
BF16_PAIR_FN(6)
static const float_slice_fn slice_bf16_pairs[FR_T + 1] = {NULL,
                                                          slice_bf16_pairs_1,
                                                          slice_bf16_pairs_2,
                                                          slice_bf16_pairs_3,
                                                          slice_bf16_pairs_4,
                                                          slice_bf16_pairs_5,
                                                          slice_bf16_pairs_6};

static const float_slice_fn *float_slices(int wtype) {
    return wtype == GGML_TYPE_F32 ? slice_f32 : wtype == GGML_TYPE_F16 ? slice_f16 : wtype == GGML_TYPE_BF16 ? slice_bf16 : NULL;
}

bool kern_float_rows_avx512_ok(int wtype, int64_t n) {
    return float_slices(wtype) && n > 0 && n % 16 == 0 && kern_cpu_has_avx512();
}

bool kern_float_rows_pairs(int wtype, int64_t n) {
    return wtype == GGML_TYPE_BF16 && kern_float_rows_avx512_ok(wtype, n) && kern_cpu_has_avx512bf16();
}

/* Tokens in the next register tile when `left` remain in the block: 6 at a time, the last 7 to
 * 11 as two near-even tiles (7 as 4 + 3, not 6 + 1: a 1-token tile loads 4 weight vectors for
 * 4 products). At most FR_TOK / FR_T tiles per block either way. */
static int group_tokens(int left) { return left >= 2 * FR_T || left <= FR_T ? (left < FR_T ? left : FR_T) : (left + 1) / 2; }

int kern_dot_float_rows_avx512(int wtype, int64_t n, const void *const *rows, int nr, const kern_arow *a, int nt,
                               float *y, int64_t ldy, float *scratch) {
    const float_slice_fn *fns = float_slices(wtype);
    const int nr4 = nr / 4 * 4;
    if (!kern_float_rows_avx512_ok(wtype, n) || nr4 == 0 || nt <= 0) return 0;
    int64_t slice = FR_K;
    if (kern_float_rows_pairs(wtype, n)) {
        bool pairs = true;
        for (int t = 0; t < nt; ++t) pairs = pairs && a[t].h;
        if (pairs) fns = slice_bf16_pairs, slice = FR_K_PAIRS;
    }
    for (int r0 = 0; r0 < nr4; r0 += FR_ROWS) {
        const int rr = nr4 - r0 < FR_ROWS ? nr4 - r0 : FR_ROWS;
        for (int t0 = 0; t0 < nt; t0 += FR_TOK) {
            const int tt = nt - t0 < FR_TOK ? nt - t0 : FR_TOK;
            for (int64_t k0 = 0; k0 < n; k0 += slice) {
                const int64_t k1 = n - k0 < slice ? n : k0 + slice;
                for (int g = 0, gi = 0; g < tt; g += group_tokens(tt - g), ++gi) {
                    const int T = group_tokens(tt - g);
                    for (int q = 0; q < rr; q += 4) {
                        float *st = scratch + (size_t)FR_CHAINS * ((q / 4) * (FR_TOK / FR_T) + gi);
                        fns[T](rows + r0 + q, a + t0 + g, k0, k1, k0 == 0, k1 == n, st, y + (t0 + g) * ldy + r0 + q,
                               ldy);
                    }
                }
            }
        }
    }
    return nr4;
}

/* ===================================================================== unpacking with AVX2
 * The same arrays as kern_unpack_wrow and kern_act_convert + kern_unpack_arow (dots.c), bit for
 * bit: integer bit-fiddling on 32 quants at a time; the per-block scales as the scalar code. */

AVX2 static AI __m256i nibbles_lo(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
AVX2 static AI __m256i nibbles_hi(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }

/* 16 packed bytes -> 32 quants: low nibbles then high nibbles (Q4_0 / Q4_1 / Q5 layout). */
AVX2 static AI __m256i legacy_nibbles(const uint8_t *qs) {
    const __m128i b = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(b), _mm_srli_epi16(b, 4), 1);
    return nibbles_lo(v);
}

/* bit j of the 32-bit little-endian word at qh, as 0x10 / 0 in byte j. */
AVX2 static AI __m256i bits_to_0x10(const uint8_t *qh) {
    uint32_t bits;
    __builtin_memcpy(&bits, qh, 4);
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                          3, 3, 3, 3, 3);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    const __m256i mask = _mm256_set1_epi64x(0x8040201008040201ll);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask), _mm256_set1_epi8(0x10));
}

AVX2 static AI void store32(int8_t *q, __m256i v) { _mm256_storeu_si256((__m256i *)q, v); }

/* -------- the grid types: grid points loaded one by one (a table lookup per 4 or 8 values),
 * then signs, shifts and scales 32 values at a time */

/* Byte 8k + j (k = 0..3) of the result: byte k of `four`, for every j. */
AVX2 static AI __m256i bytes_per_8(uint32_t four) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                          3, 3, 3, 3, 3);
    return _mm256_shuffle_epi8(_mm256_set1_epi32((int)four), shuf);
}

/* 32 grid values (4 points of 8 non-negative bytes) with the sign bits of byte k of `signs` on
 * point k: bit j set negates value j (VPSIGNB by -1 or 1). */
AVX2 static AI __m256i signed_points(uint64_t p0, uint64_t p1, uint64_t p2, uint64_t p3, uint32_t signs) {
    const __m256i mask = _mm256_set1_epi64x(0x8040201008040201ll);
    const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(bytes_per_8(signs), mask), mask);
    const __m256i grid = _mm256_set_epi64x((long long)p3, (long long)p2, (long long)p1, (long long)p0);
    return _mm256_sign_epi8(grid, _mm256_or_si256(neg, _mm256_set1_epi8(1)));
}

/* The same for 8 points of 4 values (IQ3 grids, uint32 each): signs byte k covers points 2k, 2k+1. */
AVX2 static AI __m256i signed_points4(const uint32_t *grid, const int idx[8], uint32_t signs) {
    const __m256i mask = _mm256_set1_epi64x(0x8040201008040201ll);
    const __m256i neg = _mm256_cmpeq_epi8(_mm256_and_si256(bytes_per_8(signs), mask), mask);
    /* element by element into registers (a stack array read back as a vector stalls the load) */
    const __m128i lo = _mm_setr_epi32((int)grid[idx[0]], (int)grid[idx[1]], (int)grid[idx[2]], (int)grid[idx[3]]);
    const __m128i hi = _mm_setr_epi32((int)grid[idx[4]], (int)grid[idx[5]], (int)grid[idx[6]], (int)grid[idx[7]]);
    return _mm256_sign_epi8(_mm256_set_m128i(hi, lo), _mm256_or_si256(neg, _mm256_set1_epi8(1)));
}

/* Four 7-bit sign indices (bits 0-27 of v) as their four sign bytes (iq_sign_bits). */
static inline uint32_t four_signs(uint32_t v) {
    return iq_sign_bits(v & 127) | (uint32_t)iq_sign_bits((v >> 7) & 127) << 8 |
           (uint32_t)iq_sign_bits((v >> 14) & 127) << 16 | (uint32_t)iq_sign_bits((v >> 21) & 127) << 24;
}

/* 32 IQ1 values: 4 points of IQ1S_GRID (-1, 0, 1) as 8 * grid + delta, delta_k = byte k of
 * `deltas` (+-1) for point k. */
AVX2 static AI __m256i iq1_points(uint64_t p0, uint64_t p1, uint64_t p2, uint64_t p3, uint32_t deltas) {
    __m256i g = _mm256_set_epi64x((long long)p3, (long long)p2, (long long)p1, (long long)p0);
    g = _mm256_add_epi8(g, g);
    g = _mm256_add_epi8(g, g);
    g = _mm256_add_epi8(g, g); /* 8 * grid: bytes stay apart, unlike a 16-bit shift */
    return _mm256_add_epi8(g, bytes_per_8(deltas));
}

/* +-1 as a byte of bytes_per_8's argument */
static inline uint32_t delta_byte(bool negative) { return negative ? 0xFFu : 1u; }

/* TQ1_0: 16 trits at once: byte x (widened to 16 bits) times 3^n (mod 256), times 3, top byte;
 * minus 1; narrowed back to 16 bytes in order. */
AVX2 static AI __m128i tq1_trits16(__m256i bytes16, __m256i pow3) {
    const __m256i v = _mm256_and_si256(_mm256_mullo_epi16(bytes16, pow3), _mm256_set1_epi16(0xFF));
    /* (3 v >> 8) - 1, as (v * 768) >> 16 */
    const __m256i t = _mm256_sub_epi16(_mm256_mulhi_epu16(v, _mm256_set1_epi16(768)), _mm256_set1_epi16(1));
    return _mm_packs_epi16(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* The 16 IQ4 levels (codec/iq_grids.h) in both 128-bit lanes, for VPSHUFB. */
AVX2 static AI __m256i iq4_levels(void) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)IQ4_LEVELS));
}

/* Q4_K / Q5_K scales and mins (k4_scale_min), widened */
static inline void k4_scales(const uint8_t *scales, int16_t *sc, int16_t *mn) {
    for (int j = 0; j < 8; ++j) {
        uint8_t a, b;
        k4_scale_min(j, scales, &a, &b);
        sc[j] = a;
        mn[j] = b;
    }
}

/* F16 -> F32 with F16C: exact for every half but the NaNs (VCVTPH2PS makes a signalling NaN
 * quiet, fp16_to_f32 keeps the payload), so 8 halves holding a NaN convert the scalar way. */
AVX2_F16C static void half_to_f32_row(const uint16_t *h, float *out, int64_t n) {
    const __m128i expm = _mm_set1_epi16(0x7c00), manm = _mm_set1_epi16(0x03ff);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(h + i));
        const __m128i nan = _mm_andnot_si128(_mm_cmpeq_epi16(_mm_and_si128(v, manm), _mm_setzero_si128()),
                                             _mm_cmpeq_epi16(_mm_and_si128(v, expm), expm));
        if (_mm_testz_si128(nan, nan))
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(v));
        else
            for (int k = 0; k < 8; ++k) out[i + k] = fp16_to_f32(h[i + k]);
    }
    for (; i < n; ++i) out[i] = fp16_to_f32(h[i]);
}

/* Finite floats rounded to F16 (VCVTPS2PH, half to even: f32_to_fp16's rounding, overflow to
 * infinity and subnormal halves included) and widened back. */
AVX2_F16C static void act_f16(const float *x, int64_t n, float *out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; ++i) out[i] = fp16_to_f32(f32_to_fp16(x[i]));
}

AVX2 bool kern_unpack_wrow_avx2(const kern_wdesc *wd, const void *row, int64_t n, kern_wrow *w) {
    const int64_t nb = n / wd->block;
    switch (wd->type) {
    case GGML_TYPE_F16: half_to_f32_row(row, w->f, n); return true;
    case GGML_TYPE_BF16: {
        const uint16_t *h = row;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_si256((__m256i *)(w->f + i),
                                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i))), 16));
        for (; i < n; ++i) w->f[i] = bf16_to_f32(h[i]);
        return true;
    }
    case GGML_TYPE_Q4_0: {
        const block_q4_0 *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            store32(w->q + 32 * i, _mm256_sub_epi8(legacy_nibbles(b[i].qs), _mm256_set1_epi8(8)));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_Q4_1: {
        const block_q4_1 *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            store32(w->q + 32 * i, legacy_nibbles(b[i].qs));
            w->d[i] = fp16_to_f32(b[i].d);
            w->m[i] = fp16_to_f32(b[i].m);
        }
        return true;
    }
    case GGML_TYPE_Q5_0: {
        const block_q5_0 *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            const __m256i q = _mm256_or_si256(legacy_nibbles(b[i].qs), bits_to_0x10(b[i].qh));
            store32(w->q + 32 * i, _mm256_sub_epi8(q, _mm256_set1_epi8(16)));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_Q5_1: {
        const block_q5_1 *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            store32(w->q + 32 * i, _mm256_or_si256(legacy_nibbles(b[i].qs), bits_to_0x10(b[i].qh)));
            w->d[i] = fp16_to_f32(b[i].d);
            w->m[i] = fp16_to_f32(b[i].m);
        }
        return true;
    }
    case GGML_TYPE_Q8_0: {
        const block_q8_0 *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            store32(w->q + 32 * i, _mm256_loadu_si256((const __m256i *)b[i].qs));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_Q2_K: {
        const block_q2_K *b = row;
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
                store32(q + 128 * h, _mm256_and_si256(v, m3));
                store32(q + 128 * h + 32, _mm256_and_si256(_mm256_srli_epi16(v, 2), m3));
                store32(q + 128 * h + 64, _mm256_and_si256(_mm256_srli_epi16(v, 4), m3));
                store32(q + 128 * h + 96, _mm256_and_si256(_mm256_srli_epi16(v, 6), m3));
            }
            const __m256i sc = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales));
            _mm256_storeu_si256((__m256i *)(w->sc + 16 * i), _mm256_and_si256(sc, _mm256_set1_epi16(0xF)));
            _mm256_storeu_si256((__m256i *)(w->mn + 16 * i), _mm256_srli_epi16(sc, 4));
            w->d[i] = fp16_to_f32(b[i].d);
            w->m[i] = fp16_to_f32(b[i].dmin);
        }
        return true;
    }
    case GGML_TYPE_Q3_K: {
        const block_q3_K *b = row;
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            const __m256i hm = _mm256_loadu_si256((const __m256i *)b[i].hmask);
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
                for (int k = 0; k < 4; ++k) {
                    const int j = 4 * h + k; /* elements 32j..32j+31: bit j of hmask */
                    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(v, 2 * k), m3);
                    const __m256i bit = _mm256_set1_epi8((char)(1 << j));
                    const __m256i high = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit); /* -1 when set */
                    /* q = lo - (high ? 0 : 4) = lo - 4 + 4 * high_bit */
                    store32(q + 32 * j, _mm256_sub_epi8(lo, _mm256_andnot_si256(high, _mm256_set1_epi8(4))));
                }
            }
            for (int g = 0; g < 16; ++g) w->sc[16 * i + g] = (int16_t)q3_scale(b[i].scales, g);
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_Q4_K: {
        const block_q4_K *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            for (int k = 0; k < 4; ++k) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * k));
                store32(q + 64 * k, nibbles_lo(v));
                store32(q + 64 * k + 32, nibbles_hi(v));
            }
            k4_scales(b[i].scales, w->sc + 8 * i, w->mn + 8 * i);
            w->d[i] = fp16_to_f32(b[i].d);
            w->m[i] = fp16_to_f32(b[i].dmin);
        }
        return true;
    }
    case GGML_TYPE_Q5_K: {
        const block_q5_K *b = row;
        const __m256i x10 = _mm256_set1_epi8(0x10);
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            const __m256i qh = _mm256_loadu_si256((const __m256i *)b[i].qh);
            for (int k = 0; k < 4; ++k) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * k));
                const __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * k))), b1 = _mm256_set1_epi8((char)(1 << (2 * k + 1)));
                const __m256i h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b0), b0), x10);
                const __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), x10);
                store32(q + 64 * k, _mm256_or_si256(nibbles_lo(v), h0));
                store32(q + 64 * k + 32, _mm256_or_si256(nibbles_hi(v), h1));
            }
            k4_scales(b[i].scales, w->sc + 8 * i, w->mn + 8 * i);
            w->d[i] = fp16_to_f32(b[i].d);
            w->m[i] = fp16_to_f32(b[i].dmin);
        }
        return true;
    }
    case GGML_TYPE_Q6_K: {
        const block_q6_K *b = row;
        const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
        for (int64_t i = 0; i < nb; ++i) {
            for (int c = 0; c < 2; ++c) {
                const uint8_t *ql = b[i].ql + 64 * c, *qh = b[i].qh + 32 * c;
                int8_t *y = w->q + 256 * i + 128 * c;
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
                const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
                const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
                const __m256i q2 = _mm256_or_si256(nibbles_hi(l0), _mm256_and_si256(h, m30));
                const __m256i q3 = _mm256_or_si256(nibbles_hi(l1), _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
                store32(y, _mm256_sub_epi8(q0, k32));
                store32(y + 32, _mm256_sub_epi8(q1, k32));
                store32(y + 64, _mm256_sub_epi8(q2, k32));
                store32(y + 96, _mm256_sub_epi8(q3, k32));
            }
            _mm256_storeu_si256((__m256i *)(w->sc + 16 * i),
                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].scales)));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_IQ4_NL: {
        const block_iq4_nl *b = row;
        const __m256i levels = iq4_levels();
        for (int64_t i = 0; i < nb; ++i) {
            store32(w->q + 32 * i, _mm256_shuffle_epi8(levels, legacy_nibbles(b[i].qs)));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_IQ4_XS: {
        const block_iq4_xs *b = row;
        const __m256i levels = iq4_levels();
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                store32(w->q + 256 * i + 32 * ib, _mm256_shuffle_epi8(levels, legacy_nibbles(b[i].qs + 16 * ib)));
                const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b[i].scales_h >> (2 * ib)) & 3) << 4);
                w->sc[8 * i + ib] = (int16_t)(ls - 32);
            }
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_TQ2_0: { /* Q2_K's 2-bit fields, minus 1 */
        const block_tq2_0 *b = row;
        const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
                for (int k = 0; k < 4; ++k)
                    store32(q + 128 * h + 32 * k, _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 2 * k), m3), one));
            }
            _mm256_storeu_si256((__m256i *)(w->sc + 16 * i), _mm256_set1_epi16(1));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_TQ1_0: {
        const block_tq1_0 *b = row;
        static const int16_t POW3[5] = {1, 3, 9, 27, 81};
        for (int64_t i = 0; i < nb; ++i) {
            int8_t *q = w->q + 256 * i;
            const __m256i lo = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b[i].qs));
            const __m256i hi = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b[i].qs + 16)));
            const __m256i tail = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b[i].qs + 32)));
            for (int k = 0; k < 5; ++k) {
                const __m256i p = _mm256_set1_epi16(POW3[k]);
                _mm_storeu_si128((__m128i *)(q + 32 * k), tq1_trits16(lo, p));
                _mm_storeu_si128((__m128i *)(q + 32 * k + 16), tq1_trits16(hi, p));
                _mm_storeu_si128((__m128i *)(q + 160 + 16 * k), tq1_trits16(tail, p));
            }
            uint32_t qh4;
            memcpy(&qh4, b[i].qh, 4);
            const __m256i qh = _mm256_cvtepu8_epi16(_mm_set1_epi32((int)qh4)); /* qh[0..3] four times */
            const __m256i pow3 = _mm256_setr_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);
            _mm_storeu_si128((__m128i *)(q + 240), tq1_trits16(qh, pow3));
            _mm256_storeu_si256((__m256i *)(w->sc + 16 * i), _mm256_set1_epi16(1));
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_IQ2_XXS: {
        const block_iq2_xxs *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                uint32_t grid, rest;
                memcpy(&grid, b[i].qs + 4 * ib, 4);
                memcpy(&rest, b[i].qs + 4 * ib + 2, 4);
                store32(w->q + 256 * i + 32 * ib,
                        signed_points(IQ2XXS_GRID[grid & 255], IQ2XXS_GRID[(grid >> 8) & 255],
                                      IQ2XXS_GRID[(grid >> 16) & 255], IQ2XXS_GRID[grid >> 24], four_signs(rest)));
                w->sc[16 * i + 2 * ib] = w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * (rest >> 28) + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d) * 0.125f;
        }
        return true;
    }
    case GGML_TYPE_IQ2_XS: {
        const block_iq2_xs *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                const uint16_t *v = b[i].qs + 4 * ib;
                const uint32_t signs = iq_sign_bits(v[0] >> 9) | (uint32_t)iq_sign_bits(v[1] >> 9) << 8 |
                                       (uint32_t)iq_sign_bits(v[2] >> 9) << 16 | (uint32_t)iq_sign_bits(v[3] >> 9) << 24;
                store32(w->q + 256 * i + 32 * ib, signed_points(IQ2XS_GRID[v[0] & 511], IQ2XS_GRID[v[1] & 511],
                                                                IQ2XS_GRID[v[2] & 511], IQ2XS_GRID[v[3] & 511], signs));
                w->sc[16 * i + 2 * ib] = (int16_t)(2 * (b[i].scales[ib] & 0xF) + 1);
                w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * (b[i].scales[ib] >> 4) + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d) * 0.125f;
        }
        return true;
    }
    case GGML_TYPE_IQ2_S: {
        const block_iq2_s *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                const uint8_t *qs = b[i].qs + 4 * ib;
                const int qh = b[i].qh[ib];
                uint32_t signs;
                memcpy(&signs, b[i].qs + 32 + 4 * ib, 4);
                store32(w->q + 256 * i + 32 * ib,
                        signed_points(IQ2S_GRID[qs[0] | ((qh << 8) & 0x300)], IQ2S_GRID[qs[1] | ((qh << 6) & 0x300)],
                                      IQ2S_GRID[qs[2] | ((qh << 4) & 0x300)], IQ2S_GRID[qs[3] | ((qh << 2) & 0x300)], signs));
                w->sc[16 * i + 2 * ib] = (int16_t)(2 * (b[i].scales[ib] & 0xF) + 1);
                w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * (b[i].scales[ib] >> 4) + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d) * 0.125f;
        }
        return true;
    }
    case GGML_TYPE_IQ3_XXS: {
        const block_iq3_xxs *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                const uint8_t *k = b[i].qs + 8 * ib;
                uint32_t rest;
                memcpy(&rest, b[i].qs + 64 + 4 * ib, 4);
                const int idx[8] = {k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]};
                store32(w->q + 256 * i + 32 * ib, signed_points4(IQ3XXS_GRID, idx, four_signs(rest)));
                w->sc[16 * i + 2 * ib] = w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * (rest >> 28) + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d) * 0.25f;
        }
        return true;
    }
    case GGML_TYPE_IQ3_S: {
        const block_iq3_s *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                const uint8_t *k = b[i].qs + 8 * ib;
                const int qh = b[i].qh[ib]; /* 9th bit of index 8 ib + m: bit m */
                uint32_t signs;
                memcpy(&signs, b[i].signs + 4 * ib, 4);
                const int idx[8] = {k[0] | ((qh << 8) & 256), k[1] | ((qh << 7) & 256), k[2] | ((qh << 6) & 256),
                                    k[3] | ((qh << 5) & 256), k[4] | ((qh << 4) & 256), k[5] | ((qh << 3) & 256),
                                    k[6] | ((qh << 2) & 256), k[7] | ((qh << 1) & 256)};
                store32(w->q + 256 * i + 32 * ib, signed_points4(IQ3S_GRID, idx, signs));
                const int ls = (b[i].scales[ib / 2] >> (4 * (ib % 2))) & 0xF;
                w->sc[16 * i + 2 * ib] = w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * ls + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d);
        }
        return true;
    }
    case GGML_TYPE_IQ1_S: {
        const block_iq1_s *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            for (int ib = 0; ib < 8; ++ib) {
                const uint8_t *k = b[i].qs + 4 * ib;
                const int qh = b[i].qh[ib];
                const uint32_t delta = delta_byte(qh & 0x8000) * 0x01010101u;
                store32(w->q + 256 * i + 32 * ib,
                        iq1_points(IQ1S_GRID[k[0] | ((qh << 8) & 0x700)], IQ1S_GRID[k[1] | ((qh << 5) & 0x700)],
                                   IQ1S_GRID[k[2] | ((qh << 2) & 0x700)], IQ1S_GRID[k[3] | ((qh >> 1) & 0x700)], delta));
                w->sc[16 * i + 2 * ib] = w->sc[16 * i + 2 * ib + 1] = (int16_t)(2 * ((qh >> 12) & 7) + 1);
            }
            w->d[i] = fp16_to_f32(b[i].d) * 0.125f;
        }
        return true;
    }
    case GGML_TYPE_IQ1_M: {
        const block_iq1_m *b = row;
        for (int64_t i = 0; i < nb; ++i) {
            uint16_t sc16[4];
            memcpy(sc16, b[i].scales, 8);
            for (int ib = 0; ib < 8; ++ib) {
                const uint8_t *k = b[i].qs + 4 * ib;
                const int h0 = b[i].qh[2 * ib], h1 = b[i].qh[2 * ib + 1]; /* a nibble per 8 values */
                const uint32_t deltas = delta_byte(h0 & 0x08) | delta_byte(h0 & 0x80) << 8 | delta_byte(h1 & 0x08) << 16 |
                                        delta_byte(h1 & 0x80) << 24;
                store32(w->q + 256 * i + 32 * ib,
                        iq1_points(IQ1S_GRID[k[0] | ((h0 << 8) & 0x700)], IQ1S_GRID[k[1] | ((h0 << 4) & 0x700)],
                                   IQ1S_GRID[k[2] | ((h1 << 8) & 0x700)], IQ1S_GRID[k[3] | ((h1 << 4) & 0x700)], deltas));
            }
            /* sc[h] = 2 * ((sc16[h / 4] >> 3 (h % 4)) & 7) + 1: each uint16 in 4 lanes, the field moved
             * to bits 13-15 by a multiply (AVX2 has no per-lane 16-bit shift), then down */
            uint64_t all;
            memcpy(&all, sc16, 8);
            const __m256i rep = _mm256_shuffle_epi8(_mm256_set1_epi64x((long long)all),
                                                    _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5, 4, 5,
                                                                     4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7));
            const __m256i up = _mm256_mullo_epi16(rep, _mm256_setr_epi16(8192, 1024, 128, 16, 8192, 1024, 128, 16, 8192,
                                                                         1024, 128, 16, 8192, 1024, 128, 16));
            const __m256i ls = _mm256_srli_epi16(up, 13);
            _mm256_storeu_si256((__m256i *)(w->sc + 16 * i),
                                _mm256_add_epi16(_mm256_add_epi16(ls, ls), _mm256_set1_epi16(1)));
            const uint16_t dbits = (uint16_t)((sc16[0] >> 12) | ((sc16[1] >> 8) & 0x00F0) | ((sc16[2] >> 4) & 0x0F00) |
                                              (sc16[3] & 0xF000));
            w->d[i] = fp16_to_f32(dbits) * 0.125f;
        }
        return true;
    }
    default:
        return false; /* F32: a copy; the scalar path does it */
    }
}

/* -------- activations */

/* true when all n floats are finite (the vector paths below assume it; NaN and infinity rows go
 * the scalar way, which defines what they give). */
AVX2 static bool row_finite(const float *x, int64_t n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(3.4028235e38f);
    __m256 bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), big, _CMP_NLE_UQ));
    if (!_mm256_testz_ps(bad, bad)) return false;
    for (; i < n; ++i)
        if (!(fabsf(x[i]) <= 3.4028235e38f)) return false;
    return true;
}

AVX2 static AI float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 32 floats times s, rounded half to even, saturated to int8 (4 x 8 lanes in order). */
AVX2 static AI __m256i quant32(const float *x, __m256 s) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), s));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), s));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), s));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), s));
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* sum of the 32 int8 of v, exact */
AVX2 static AI int32_t sum_i8(__m256i v) {
    return hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1)));
}

/* Q8_K as quantize_q8_K_ref (codec/quants.c), then unpacked as kern_unpack_arow. */
AVX2 static void act_q8_K(const float *x, int64_t n, kern_arow *a) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n / 256; ++i) {
        const float *xb = x + 256 * i;
        int8_t *q = a->q + 256 * i;
        int32_t *bs = a->bsum + 16 * i;
        __m256 vm = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8) vm = _mm256_max_ps(vm, _mm256_and_ps(_mm256_loadu_ps(xb + j), absmask));
        const float amax = hmax_ps(vm);
        if (amax == 0.f) { /* the reference leaves the block zeroed */
            __builtin_memset(q, 0, 256);
            for (int g = 0; g < 16; ++g) bs[g] = 0;
            if (a->bsum16) __builtin_memset(a->bsum16 + 16 * i, 0, 32);
            a->d[i] = 0.f;
            continue;
        }
        int j0 = 0; /* the first value of largest magnitude, as the reference's strict > finds it */
        while (fabsf(xb[j0]) != amax) ++j0;
        const float iscale = -127.f / xb[j0];
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
        __m256i s4[8];
        for (int c = 0; c < 8; ++c) {
            const __m256i v = quant32(xb + 32 * c, vs);
            store32(q + 32 * c, v);
            s4[c] = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, v), one16); /* 4-sums: 0-3 group 2c, 4-7 group 2c+1 */
        }
        /* per group of 16: lanes [g0 g2 g4 g6 | g1 g3 g5 g7] of the first four chunks, then the rest */
        for (int h = 0; h < 2; ++h) {
            const __m256i x01 = _mm256_hadd_epi32(s4[4 * h], s4[4 * h + 1]), x23 = _mm256_hadd_epi32(s4[4 * h + 2], s4[4 * h + 3]);
            const __m256i g = _mm256_hadd_epi32(x01, x23); /* [c0lo c1lo c2lo c3lo | c0hi c1hi c2hi c3hi] */
            int32_t o[8];
            _mm256_storeu_si256((__m256i *)o, g);
            for (int k = 0; k < 4; ++k) {
                bs[8 * h + 2 * k] = o[k];
                bs[8 * h + 2 * k + 1] = o[4 + k];
            }
            if (a->bsum16)
                for (int k = 0; k < 8; ++k) a->bsum16[16 * i + 8 * h + k] = (int16_t)bs[8 * h + k];
        }
        a->d[i] = 1 / iscale;
    }
}

/* Q8_0 / Q8_1 as kern_quantize_q8_0 / _q8_1 (dots.c), then unpacked. */
AVX2 static void act_q8_legacy(const float *x, int64_t n, kern_arow *a, bool q8_1) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n / 32; ++i) {
        const float *xb = x + 32 * i;
        __m256 vm = _mm256_and_ps(_mm256_loadu_ps(xb), absmask);
        for (int j = 8; j < 32; j += 8) vm = _mm256_max_ps(vm, _mm256_and_ps(_mm256_loadu_ps(xb + j), absmask));
        const float amax = hmax_ps(vm);
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        const __m256i v = quant32(xb, _mm256_set1_ps(id));
        store32(a->q + 32 * i, v);
        const ggml_half dh = f32_to_fp16(d);
        a->d[i] = fp16_to_f32(dh);
        if (q8_1) a->s[i] = fp16_to_f32(f32_to_fp16(d * (float)sum_i8(v)));
    }
}

/* f32_to_bf16 of 8 floats (the bits u: half to even, NaN made quiet), each in the top half of
 * its lane, the low half 0 */
AVX2 static AI __m256i bf16_top8(__m256i u) {
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i r = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), top = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
    const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(r, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
    const __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(64 << 16));
    return _mm256_and_si256(_mm256_blendv_epi8(rounded, quiet, nan), top);
}

/* BF16: each value rounded as f32_to_bf16 and widened back. */
AVX2 static void act_bf16(const float *x, int64_t n, float *out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_si256((__m256i *)(out + i), bf16_top8(_mm256_loadu_si256((const __m256i *)(x + i))));
    for (; i < n; ++i) out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

/* Lane j (32 bits) of each 8 holds word 2j (low half: value i + 16 + j as bf16) and word 2j + 1
 * (high half: value i + j as bf16), as kern_act_bf16_pairs_ref writes them. */
AVX2 bool kern_act_bf16_pairs_avx2(const float *f, int64_t n, uint16_t *h) {
    for (int64_t i = 0; i + 32 <= n; i += 32)
        for (int j = 0; j < 16; j += 8) {
            const __m256i hi = bf16_top8(_mm256_loadu_si256((const __m256i *)(f + i + j)));
            const __m256i lo = bf16_top8(_mm256_loadu_si256((const __m256i *)(f + i + 16 + j)));
            _mm256_storeu_si256((__m256i *)(h + i + 2 * j), _mm256_or_si256(hi, _mm256_srli_epi32(lo, 16)));
        }
    return true;
}

AVX2 bool kern_act_unpack_avx2(const kern_wdesc *wd, const float *x, int64_t n, kern_arow *a) {
    switch (wd->act_type) {
    case GGML_TYPE_BF16: act_bf16(x, n, a->f); return true;
    case GGML_TYPE_F16:
        if (!row_finite(x, n)) return false;
        act_f16(x, n, a->f);
        return true;
    case GGML_TYPE_Q8_K:
        if (!row_finite(x, n)) return false;
        act_q8_K(x, n, a);
        return true;
    case GGML_TYPE_Q8_0: case GGML_TYPE_Q8_1:
        if (!row_finite(x, n)) return false;
        act_q8_legacy(x, n, a, wd->act_type == GGML_TYPE_Q8_1);
        return true;
    default: return false;
    }
}

#else /* not x86-64: no AVX2 kernels */

bool kern_cpu_has_avx2(void) { return false; }
float kern_dot_f32_avx2(int64_t n, const float *a, const float *b) { return kern_dot_f32_scalar(n, a, b); }
float kern_dot_legacy_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min) {
    return kern_dot_legacy_scalar(n, w, a, has_min);
}
float kern_dot_k_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min) {
    return kern_dot_k_scalar(n, w, a, group, has_min);
}
int kern_dot_tile_avx2(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                       float *y, int64_t ldy) {
    (void)wd, (void)n, (void)w, (void)nr, (void)a, (void)nt, (void)y, (void)ldy;
    return 0;
}
int kern_dot_tile_avx512(const kern_wdesc *wd, int64_t n, const kern_wrow *w, int nr, const kern_arow *a, int nt,
                         float *y, int64_t ldy) {
    (void)wd, (void)n, (void)w, (void)nr, (void)a, (void)nt, (void)y, (void)ldy;
    return 0;
}
bool kern_cpu_has_avx512(void) { return false; }
bool kern_cpu_has_avx512bf16(void) { return false; }
bool kern_float_rows_avx512_ok(int wtype, int64_t n) {
    (void)wtype, (void)n;
    return false;
}
bool kern_float_rows_pairs(int wtype, int64_t n) {
    (void)wtype, (void)n;
    return false;
}
int kern_dot_float_rows_avx512(int wtype, int64_t n, const void *const *rows, int nr, const kern_arow *a, int nt,
                               float *y, int64_t ldy, float *scratch) {
    (void)wtype, (void)n, (void)rows, (void)nr, (void)a, (void)nt, (void)y, (void)ldy, (void)scratch;
    return 0;
}
bool kern_unpack_wrow_avx2(const kern_wdesc *wd, const void *row, int64_t n, kern_wrow *w) {
    (void)wd, (void)row, (void)n, (void)w;
    return false;
}
bool kern_act_bf16_pairs_avx2(const float *f, int64_t n, uint16_t *h) {
    (void)f, (void)n, (void)h;
    return false;
}
bool kern_act_unpack_avx2(const kern_wdesc *wd, const float *x, int64_t n, kern_arow *a) {
    (void)wd, (void)x, (void)n, (void)a;
    return false;
}

#endif
