/* types.c - the type table and the float conversions (see types.h). */
#include "types.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

static const type_info TYPES[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"F32", 1, 4, false},
    [GGML_TYPE_F16] = {"F16", 1, 2, false},
    [GGML_TYPE_Q4_0] = {"Q4_0", 32, 18, true},
    [GGML_TYPE_Q4_1] = {"Q4_1", 32, 20, true},
    [GGML_TYPE_Q5_0] = {"Q5_0", 32, 22, true},
    [GGML_TYPE_Q5_1] = {"Q5_1", 32, 24, true},
    [GGML_TYPE_Q8_0] = {"Q8_0", 32, 34, true},
    [GGML_TYPE_Q8_1] = {"Q8_1", 32, 36, true},
    [GGML_TYPE_Q2_K] = {"Q2_K", 256, 84, true},
    [GGML_TYPE_Q3_K] = {"Q3_K", 256, 110, true},
    [GGML_TYPE_Q4_K] = {"Q4_K", 256, 144, true},
    [GGML_TYPE_Q5_K] = {"Q5_K", 256, 176, true},
    [GGML_TYPE_Q6_K] = {"Q6_K", 256, 210, true},
    [GGML_TYPE_Q8_K] = {"Q8_K", 256, 292, true},
    [GGML_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66, true},
    [GGML_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74, true},
    [GGML_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98, true},
    [GGML_TYPE_IQ1_S] = {"IQ1_S", 256, 50, true},
    [GGML_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18, true},
    [GGML_TYPE_IQ3_S] = {"IQ3_S", 256, 110, true},
    [GGML_TYPE_IQ2_S] = {"IQ2_S", 256, 82, true},
    [GGML_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136, true},
    [GGML_TYPE_I8] = {"I8", 1, 1, false},
    [GGML_TYPE_I16] = {"I16", 1, 2, false},
    [GGML_TYPE_I32] = {"I32", 1, 4, false},
    [GGML_TYPE_I64] = {"I64", 1, 8, false},
    [GGML_TYPE_F64] = {"F64", 1, 8, false},
    [GGML_TYPE_IQ1_M] = {"IQ1_M", 256, 56, true},
    [GGML_TYPE_BF16] = {"BF16", 1, 2, false},
    [GGML_TYPE_TQ1_0] = {"TQ1_0", 256, 54, true},
    [GGML_TYPE_TQ2_0] = {"TQ2_0", 256, 66, true},
    [GGML_TYPE_MXFP4] = {"MXFP4", 32, 17, true},
};

const type_info *type_get(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT || !TYPES[type].name) return NULL;
    return &TYPES[type];
}

int type_from_name(const char *name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (TYPES[t].name && strcasecmp(TYPES[t].name, name) == 0) return t;
    return -1;
}

const char *type_name(int type) {
    const type_info *ti = type_get(type);
    return ti ? ti->name : "?";
}

uint64_t type_nbytes(int type, int64_t n) {
    const type_info *ti = type_get(type);
    if (!ti || n < 0 || n % ti->blck_size != 0) return 0;
    uint64_t blocks = (uint64_t)(n / ti->blck_size);
    if (blocks != 0 && ti->type_size > UINT64_MAX / blocks) return 0;
    return blocks * ti->type_size;
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);                             /* +-0 */
        float v = (float)man * (1.0f / 16777216.0f);                     /* subnormal: man * 2^-24 */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff;
    uint32_t man = u & 0x7fffff;
    if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 | (uint16_t)(man >> 13) : 0); /* inf / nan */
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00;                                  /* overflow to inf */
    if (e <= 0) {                                                       /* subnormal or zero */
        if (e < -10) return sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;          /* may carry into exp: still correct */
    return sign | (uint16_t)half;
}

float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* quiet nan */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

void fp16_round_row(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_f32(f32_to_fp16(src[i]));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#define F16C __attribute__((target("avx,f16c")))

/* AVX (with the OS saving YMM registers: libgcc checks XGETBV) and CPUID leaf 1's F16C bit
 * (clang 14 does not know __builtin_cpu_supports("f16c")); asked once. */
static bool cpu_f16c;
static pthread_once_t cpu_f16c_once = PTHREAD_ONCE_INIT;
static void check_cpu_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    __builtin_cpu_init();
    cpu_f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}

bool fp16_have_f16c(void) {
    pthread_once(&cpu_f16c_once, check_cpu_f16c);
    return cpu_f16c;
}

/* 8 halves to floats. VCVTPH2PS sets the quiet bit of a signalling NaN (exponent 31, top
 * mantissa bit clear, mantissa not 0); fp16_to_f32 keeps the payload as it is: clear bit 22
 * again in those lanes. Everything else (subnormal halves included) converts exactly. */
F16C static inline __m256 half8_to_f32(__m128i h) {
    const __m256 f = _mm256_cvtph_ps(h);
    const __m128i e = _mm_and_si128(h, _mm_set1_epi16(0x7e00));
    const __m128i snan = _mm_andnot_si128(_mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x01ff)), _mm_setzero_si128()),
                                          _mm_cmpeq_epi16(e, _mm_set1_epi16(0x7c00)));
    if (_mm_testz_si128(snan, snan)) return f;
    /* widen the 16-bit lane masks to 32 bits (sign extension of all-ones / zero) */
    const __m128 lo = _mm_castsi128_ps(_mm_unpacklo_epi16(snan, snan));
    const __m128 hi = _mm_castsi128_ps(_mm_unpackhi_epi16(snan, snan));
    const __m256 mask = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
    const __m256 quiet = _mm256_and_ps(mask, _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000)));
    return _mm256_andnot_ps(quiet, f);
}

/* VCVTPS2PH with explicit round-to-nearest-even: the scalar rounding, overflow to infinity,
 * subnormal results and NaNs (quiet, payload's top 9 bits kept) as f32_to_fp16. */
#define TO_HALF(v) _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

F16C void fp16_to_f32_row_f16c(const uint16_t *h, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, half8_to_f32(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) out[i] = fp16_to_f32(h[i]);
}

F16C void f32_to_fp16_row_f16c(const float *x, uint16_t *h, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(h + i), TO_HALF(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) h[i] = f32_to_fp16(x[i]);
}

/* The round trip never meets a signalling NaN half (f32_to_fp16 makes every NaN quiet), so
 * no fix-up is needed on the way back. */
F16C void fp16_round_row_f16c(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(TO_HALF(_mm256_loadu_ps(src + i))));
    for (; i < n; i++) dst[i] = fp16_to_f32(f32_to_fp16(src[i]));
}

#else /* no F16C in this build */

bool fp16_have_f16c(void) { return false; }
void fp16_to_f32_row_f16c(const uint16_t *h, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fp16_to_f32(h[i]);
}
void f32_to_fp16_row_f16c(const float *x, uint16_t *h, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = f32_to_fp16(x[i]);
}
void fp16_round_row_f16c(float *dst, const float *src, int64_t n) { fp16_round_row(dst, src, n); }

#endif

bool type_is_float(int type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
}

static float fp16_table[65536];
static pthread_once_t fp16_table_once = PTHREAD_ONCE_INIT;

static void fp16_table_init(void) {
    for (uint32_t h = 0; h < 65536; h++) fp16_table[h] = fp16_to_f32((uint16_t)h);
}

void row_to_f32(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    switch (type) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_TYPE_F16: {
        /* F16C when the CPU has it (the same values, NaN payloads included), else all 65536
         * halves precomputed once: a lookup is several times faster than decoding */
        if (((uintptr_t)src & 1) == 0 && fp16_have_f16c()) {
            fp16_to_f32_row_f16c(src, dst, n);
            break;
        }
        pthread_once(&fp16_table_once, fp16_table_init);
        for (int64_t i = 0; i < n; i++) dst[i] = fp16_table[s[2 * i] | s[2 * i + 1] << 8];
        break;
    }
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32((uint16_t)(s[2 * i] | s[2 * i + 1] << 8));
        break;
    default: break;
    }
}

void row_from_f32(int type, const float *src, void *dst, int64_t n) {
    uint8_t *d = dst;
    switch (type) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = type == GGML_TYPE_F16 ? f32_to_fp16(src[i]) : f32_to_bf16(src[i]);
            d[2 * i] = (uint8_t)h;
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    default: break;
    }
}
