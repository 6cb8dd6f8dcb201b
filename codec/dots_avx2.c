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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#endif

#ifdef HAVE_AVX2_BUILD

#define AVX2 __attribute__((target("avx2,fma")))

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
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

AVX2 float kern_dot_legacy_avx2(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        const __m256i p = _mm256_madd_epi16(dot32_pairs(w->q + 32 * b, a->q + 32 * b), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(w->d[b] * a->d[b]), _mm256_cvtepi32_ps(p), acc);
        if (has_min) mins += w->m[b] * a->s[b];
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
        sum += (a->d[s] * w->d[s]) * (float)isum;
        if (has_min) {
            int32_t msum = 0;
            const int32_t *bs = a->bsum + 16 * s;
            const int16_t *mn = w->mn + ng * s;
            for (int g = 0; g < ng; ++g) msum += mn[g] * (group == 16 ? bs[g] : bs[2 * g] + bs[2 * g + 1]);
            sum -= (a->d[s] * w->m[s]) * (float)msum;
        }
    }
    return sum;
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

#endif
