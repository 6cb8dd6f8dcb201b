/* kernels.c - reference kernels and the matmul driver (see kernels.h). */
#include "kernels.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "formats/types.h"
#include "quant/quants.h"

/* ===================================================================== weight block layouts
 * ggml's layouts (docs/quant-types.md); fp16 values are raw half bits. */

typedef struct { uint16_t d; uint8_t qs[16]; } blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } blk_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } blk_q8_0;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } blk_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } blk_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } blk_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } blk_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } blk_q6_K;

static_assert(sizeof(blk_q4_0) == 18, "q4_0");
static_assert(sizeof(blk_q4_1) == 20, "q4_1");
static_assert(sizeof(blk_q5_0) == 22, "q5_0");
static_assert(sizeof(blk_q5_1) == 24, "q5_1");
static_assert(sizeof(blk_q8_0) == 34, "q8_0");
static_assert(sizeof(blk_q2_K) == 84, "q2_K");
static_assert(sizeof(blk_q3_K) == 110, "q3_K");
static_assert(sizeof(blk_q4_K) == 144, "q4_K");
static_assert(sizeof(blk_q5_K) == 176, "q5_K");
static_assert(sizeof(blk_q6_K) == 210, "q6_K");
static_assert(sizeof(kq8_0) == 34, "kq8_0");
static_assert(sizeof(kq8_1) == 36, "kq8_1");
static_assert(sizeof(kq8_K) == 292, "kq8_K");

/* ===================================================================== activation quantizers */

/* One block of 32: ggml's x86 quantize_row_q8_0/q8_1 (AVX2 path): id = 127/amax and
 * round-half-even, which differs from the reference quantizer's roundf(x / d) in rare ties. */
static float q8_block(const float *x, int8_t *q, int *sum) {
    float amax = 0;
    for (int j = 0; j < KQ_LEGACY; ++j) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    int s = 0;
    for (int j = 0; j < KQ_LEGACY; ++j) {
        q[j] = (int8_t)nearbyintf(x[j] * id); /* default rounding mode: half to even */
        s += q[j];
    }
    *sum = s;
    return d;
}

void kern_quantize_q8_0(const float *x, kq8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / KQ_LEGACY; ++b) {
        int sum;
        y[b].d = f32_to_fp16(q8_block(x + b * KQ_LEGACY, y[b].qs, &sum));
    }
}

void kern_quantize_q8_1(const float *x, kq8_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / KQ_LEGACY; ++b) {
        int sum;
        const float d = q8_block(x + b * KQ_LEGACY, y[b].qs, &sum);
        y[b].d = f32_to_fp16(d);
        y[b].s = f32_to_fp16(d * (float)sum);
    }
}

/* ===================================================================== per-type description */

typedef enum wkind { WK_FLOAT, WK_LEGACY, WK_K } wkind;

typedef struct wdesc {
    int type;        /* weight type */
    wkind kind;
    int act_type;    /* vec_dot type of the activations */
    int block;       /* values per weight block */
    size_t bytes;    /* bytes per weight block */
    int group;       /* K-quants: values per integer scale (16 or 32) */
    bool has_min;    /* Q4_1, Q5_1, Q2_K, Q4_K, Q5_K */
} wdesc;

static const wdesc WDESC[] = {
    {GGML_TYPE_F32, WK_FLOAT, GGML_TYPE_F32, 1, 4, 0, false},
    {GGML_TYPE_F16, WK_FLOAT, GGML_TYPE_F16, 1, 2, 0, false},
    {GGML_TYPE_BF16, WK_FLOAT, GGML_TYPE_BF16, 1, 2, 0, false},
    {GGML_TYPE_Q4_0, WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(blk_q4_0), 32, false},
    {GGML_TYPE_Q4_1, WK_LEGACY, GGML_TYPE_Q8_1, 32, sizeof(blk_q4_1), 32, true},
    {GGML_TYPE_Q5_0, WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(blk_q5_0), 32, false},
    {GGML_TYPE_Q5_1, WK_LEGACY, GGML_TYPE_Q8_1, 32, sizeof(blk_q5_1), 32, true},
    {GGML_TYPE_Q8_0, WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(blk_q8_0), 32, false},
    {GGML_TYPE_Q2_K, WK_K, GGML_TYPE_Q8_K, 256, sizeof(blk_q2_K), 16, true},
    {GGML_TYPE_Q3_K, WK_K, GGML_TYPE_Q8_K, 256, sizeof(blk_q3_K), 16, false},
    {GGML_TYPE_Q4_K, WK_K, GGML_TYPE_Q8_K, 256, sizeof(blk_q4_K), 32, true},
    {GGML_TYPE_Q5_K, WK_K, GGML_TYPE_Q8_K, 256, sizeof(blk_q5_K), 32, true},
    {GGML_TYPE_Q6_K, WK_K, GGML_TYPE_Q8_K, 256, sizeof(blk_q6_K), 16, false},
};

static const wdesc *wdesc_get(int type) {
    for (size_t i = 0; i < sizeof WDESC / sizeof WDESC[0]; ++i)
        if (WDESC[i].type == type) return &WDESC[i];
    return NULL;
}

int kern_vec_dot_type(int wtype) {
    const wdesc *w = wdesc_get(wtype);
    return w ? w->act_type : -1;
}

bool kern_weight_supported(int type, int64_t n_in) {
    const wdesc *w = wdesc_get(type);
    return w && n_in > 0 && n_in % w->block == 0;
}

/* ===================================================================== unpacking blocks
 * Each function unpacks one weight block into the plain arrays of kern_wrow, offset so that
 * q[] holds the signed integer the dot product multiplies. */

static void unpack_q4_0(const blk_q4_0 *b, int8_t *q, float *d) {
    for (int j = 0; j < 16; ++j) {
        q[j] = (int8_t)((b->qs[j] & 0xF) - 8);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    *d = fp16_to_f32(b->d);
}

static void unpack_q4_1(const blk_q4_1 *b, int8_t *q, float *d, float *m) {
    for (int j = 0; j < 16; ++j) {
        q[j] = (int8_t)(b->qs[j] & 0xF);
        q[j + 16] = (int8_t)(b->qs[j] >> 4);
    }
    *d = fp16_to_f32(b->d);
    *m = fp16_to_f32(b->m);
}

/* Q5: bit j of the little-endian qh word is the 5th bit of element j. */
static void unpack_q5(const uint8_t qh4[4], const uint8_t qs[16], int offset, int8_t *q) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; ++j) {
        const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        q[j] = (int8_t)(((qs[j] & 0xF) | h0) - offset);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | h1) - offset);
    }
}

static void unpack_q5_0(const blk_q5_0 *b, int8_t *q, float *d) {
    unpack_q5(b->qh, b->qs, 16, q);
    *d = fp16_to_f32(b->d);
}

static void unpack_q5_1(const blk_q5_1 *b, int8_t *q, float *d, float *m) {
    unpack_q5(b->qh, b->qs, 0, q);
    *d = fp16_to_f32(b->d);
    *m = fp16_to_f32(b->m);
}

static void unpack_q8_0(const blk_q8_0 *b, int8_t *q, float *d) {
    memcpy(q, b->qs, 32);
    *d = fp16_to_f32(b->d);
}

/* 2-bit field of element j (0..255) in Q2_K/Q3_K's qs: byte (j/128)*32 + j%32, pair (j%128)/32. */
static inline int two_bits(const uint8_t *qs, int j) {
    return (qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3;
}

static void unpack_q2_K(const blk_q2_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int j = 0; j < 256; ++j) q[j] = (int8_t)two_bits(b->qs, j);
    for (int g = 0; g < 16; ++g) {
        sc[g] = b->scales[g] & 0xF;
        mn[g] = b->scales[g] >> 4;
    }
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

/* Q3_K scale g (0..15): low 4 bits in byte g%8 (low half for g<8, high for g>=8), top 2 bits
 * in byte 8 + g%4 at bit pair g/4; stored +32. */
static int q3_scale(const uint8_t *s, int g) {
    const int low = g < 8 ? s[g] & 0xF : s[g - 8] >> 4;
    const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (low | (high << 4)) - 32;
}

static void unpack_q3_K(const blk_q3_K *b, int8_t *q, int16_t *sc, float *d) {
    for (int j = 0; j < 256; ++j) {
        const int high = (b->hmask[j % 32] >> (j / 32)) & 1;
        q[j] = (int8_t)(two_bits(b->qs, j) - (high ? 0 : 4));
    }
    for (int g = 0; g < 16; ++g) sc[g] = (int16_t)q3_scale(b->scales, g);
    *d = fp16_to_f32(b->d);
}

/* Q4_K/Q5_K 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static void k4_scale_min(int j, const uint8_t *s, int16_t *sc, int16_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (int16_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (int16_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Q4_K: per 64 values k, 32 bytes: low nibbles are elements 64k..64k+31, high the next 32. */
static void unpack_q4_K(const blk_q4_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            q[64 * k + l] = (int8_t)(b->qs[32 * k + l] & 0xF);
            q[64 * k + 32 + l] = (int8_t)(b->qs[32 * k + l] >> 4);
        }
    for (int j = 0; j < 8; ++j) k4_scale_min(j, b->scales, &sc[j], &mn[j]);
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

/* Q5_K: as Q4_K plus the 5th bit: bit 2k of qh[l] for element 64k+l, bit 2k+1 for 64k+32+l. */
static void unpack_q5_K(const blk_q5_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            const int h0 = ((b->qh[l] >> (2 * k)) & 1) << 4, h1 = ((b->qh[l] >> (2 * k + 1)) & 1) << 4;
            q[64 * k + l] = (int8_t)((b->qs[32 * k + l] & 0xF) | h0);
            q[64 * k + 32 + l] = (int8_t)((b->qs[32 * k + l] >> 4) | h1);
        }
    for (int j = 0; j < 8; ++j) k4_scale_min(j, b->scales, &sc[j], &mn[j]);
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

/* Q6_K: per 128 values, ql[l] holds the low nibbles of l and l+64, ql[l+32] of l+32 and
 * l+96, qh[l] the top 2 bits of l, l+32, l+64, l+96; value q - 32. */
static void unpack_q6_K(const blk_q6_K *b, int8_t *q, int16_t *sc, float *d) {
    for (int c = 0; c < 2; ++c) {
        const uint8_t *ql = b->ql + 64 * c, *qh = b->qh + 32 * c;
        int8_t *y = q + 128 * c;
        for (int l = 0; l < 32; ++l) {
            y[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            y[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
    for (int g = 0; g < 16; ++g) sc[g] = b->scales[g];
    *d = fp16_to_f32(b->d);
}

/* Unpack a whole weight row of n values (n a multiple of the type's block). */
static void unpack_wrow(const wdesc *wd, const void *row, int64_t n, kern_wrow *w) {
    const uint8_t *p = row;
    const int64_t nb = n / wd->block;
    switch (wd->type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        row_to_f32(wd->type, row, w->f, n);
        return;
    case GGML_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q4_0((const blk_q4_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; ++b) unpack_q4_1((const blk_q4_1 *)p + b, w->q + 32 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q5_0((const blk_q5_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; ++b) unpack_q5_1((const blk_q5_1 *)p + b, w->q + 32 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q8_0((const blk_q8_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q2_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q2_K((const blk_q2_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->mn + 16 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q3_K:
        for (int64_t b = 0; b < nb; ++b) unpack_q3_K((const blk_q3_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->d + b);
        return;
    case GGML_TYPE_Q4_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q4_K((const blk_q4_K *)p + b, w->q + 256 * b, w->sc + 8 * b, w->mn + 8 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q5_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q5_K((const blk_q5_K *)p + b, w->q + 256 * b, w->sc + 8 * b, w->mn + 8 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q6_K:
        for (int64_t b = 0; b < nb; ++b) unpack_q6_K((const blk_q6_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->d + b);
        return;
    default:
        assert(!"unsupported weight type");
    }
}

/* Unpack one activation row already in the vec_dot type act_type. */
static void unpack_arow(int act_type, const void *row, int64_t n, kern_arow *a) {
    switch (act_type) {
    case GGML_TYPE_F32: memcpy(a->f, row, (size_t)n * sizeof(float)); return;
    case GGML_TYPE_F16: case GGML_TYPE_BF16: row_to_f32(act_type, row, a->f, n); return;
    case GGML_TYPE_Q8_0: {
        const kq8_0 *b = row;
        for (int64_t i = 0; i < n / 32; ++i) {
            memcpy(a->q + 32 * i, b[i].qs, 32);
            a->d[i] = fp16_to_f32(b[i].d);
        }
        return;
    }
    case GGML_TYPE_Q8_1: {
        const kq8_1 *b = row;
        for (int64_t i = 0; i < n / 32; ++i) {
            memcpy(a->q + 32 * i, b[i].qs, 32);
            a->d[i] = fp16_to_f32(b[i].d);
            a->s[i] = fp16_to_f32(b[i].s);
        }
        return;
    }
    case GGML_TYPE_Q8_K: {
        const kq8_K *b = row;
        for (int64_t i = 0; i < n / 256; ++i) {
            memcpy(a->q + 256 * i, b[i].qs, 256);
            a->d[i] = b[i].d;
            for (int g = 0; g < 16; ++g) a->bsum[16 * i + g] = b[i].bsums[g];
        }
        return;
    }
    default:
        assert(!"unsupported activation type");
    }
}

/* ===================================================================== activation conversion */

size_t kern_act_row_bytes(int wtype, int64_t n) {
    switch (kern_vec_dot_type(wtype)) {
    case GGML_TYPE_F32: return (size_t)n * 4;
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return (size_t)n * 2;
    case GGML_TYPE_Q8_0: return (size_t)(n / 32) * sizeof(kq8_0);
    case GGML_TYPE_Q8_1: return (size_t)(n / 32) * sizeof(kq8_1);
    case GGML_TYPE_Q8_K: return (size_t)(n / 256) * sizeof(kq8_K);
    default: return 0;
    }
}

void kern_act_convert(int wtype, const float *x, void *out, int64_t n) {
    switch (kern_vec_dot_type(wtype)) {
    case GGML_TYPE_F32: memcpy(out, x, (size_t)n * 4); return;
    case GGML_TYPE_F16: row_from_f32(GGML_TYPE_F16, x, out, n); return;
    case GGML_TYPE_BF16: row_from_f32(GGML_TYPE_BF16, x, out, n); return;
    case GGML_TYPE_Q8_0: kern_quantize_q8_0(x, out, n); return;
    case GGML_TYPE_Q8_1: kern_quantize_q8_1(x, out, n); return;
    case GGML_TYPE_Q8_K: quant_get(GGML_TYPE_Q8_K)->quantize_ref(x, out, n); return;
    default: assert(!"unsupported weight type");
    }
}

/* ===================================================================== scalar dots on unpacked rows */

float kern_dot_f32_scalar(int64_t n, const float *a, const float *b) {
    /* 8 partial sums, like a SIMD register, so the scalar and AVX2 paths round alike */
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
    float s = 0;
    for (int k = 0; k < 8; ++k) s += acc[k];
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

/* Legacy blocks of 32: sum over blocks of (d_w * d_a) * sum(q_w * q_a), plus m_w * s_a for
 * the types with a minimum (ggml's vec_dot_q4_1_q8_1). */
float kern_dot_legacy_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, bool has_min) {
    float sum = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        int32_t isum = 0;
        const int8_t *wq = w->q + 32 * b, *aq = a->q + 32 * b;
        for (int j = 0; j < 32; ++j) isum += wq[j] * aq[j];
        sum += (w->d[b] * a->d[b]) * (float)isum;
        if (has_min) sum += w->m[b] * a->s[b];
    }
    return sum;
}

/* K-quants against Q8_K, per super-block of 256: d_a * d_w * sum_g(sc_g * sum(q_w q_a)) minus
 * d_a * dmin_w * sum_g(mn_g * sum(q_a)); the integer parts are exact. */
float kern_dot_k_scalar(int64_t n, const kern_wrow *w, const kern_arow *a, int group, bool has_min) {
    const int ng = 256 / group;
    float sum = 0;
    for (int64_t s = 0; s < n / 256; ++s) {
        int32_t isum = 0, msum = 0;
        for (int g = 0; g < ng; ++g) {
            const int8_t *wq = w->q + 256 * s + group * g, *aq = a->q + 256 * s + group * g;
            int32_t gs = 0;
            for (int j = 0; j < group; ++j) gs += wq[j] * aq[j];
            isum += w->sc[ng * s + g] * gs;
            if (has_min) {
                const int32_t *bs = a->bsum + 16 * s + g * (group / 16);
                const int32_t asum = group == 16 ? bs[0] : bs[0] + bs[1];
                msum += w->mn[ng * s + g] * asum;
            }
        }
        sum += (a->d[s] * w->d[s]) * (float)isum;
        if (has_min) sum -= (a->d[s] * w->m[s]) * (float)msum;
    }
    return sum;
}

/* ===================================================================== reference vec_dot per type
 * One block at a time, unpacking into stack arrays: the definition the fast path is tested
 * against. */

#define REF_DOT_LEGACY(NAME, BLK, ACT, ACT_TYPE, UNPACK_CALL, HAS_MIN)                                  \
    static float NAME(int64_t n, const void *vw, const void *vx) {                             \
        const BLK *wb = vw;                                                                    \
        const ACT *xb = vx;                                                                    \
        int8_t q[32], aq[32];                                                                  \
        float d, m = 0, ad, as = 0;                                                            \
        kern_wrow w = {.q = q, .d = &d, .m = &m};                                              \
        kern_arow a = {.q = aq, .d = &ad, .s = &as};                                           \
        float sum = 0;                                                                         \
        for (int64_t b = 0; b < n / 32; ++b) {                                                 \
            UNPACK_CALL;                                                                       \
            unpack_arow(ACT_TYPE, xb + b, 32, &a);                                            \
            sum += kern_dot_legacy_scalar(32, &w, &a, HAS_MIN);                                \
        }                                                                                      \
        return sum;                                                                            \
    }

REF_DOT_LEGACY(ref_dot_q4_0, blk_q4_0, kq8_0, GGML_TYPE_Q8_0, unpack_q4_0(wb + b, q, &d), false)
REF_DOT_LEGACY(ref_dot_q4_1, blk_q4_1, kq8_1, GGML_TYPE_Q8_1, unpack_q4_1(wb + b, q, &d, &m), true)
REF_DOT_LEGACY(ref_dot_q5_0, blk_q5_0, kq8_0, GGML_TYPE_Q8_0, unpack_q5_0(wb + b, q, &d), false)
REF_DOT_LEGACY(ref_dot_q5_1, blk_q5_1, kq8_1, GGML_TYPE_Q8_1, unpack_q5_1(wb + b, q, &d, &m), true)
REF_DOT_LEGACY(ref_dot_q8_0, blk_q8_0, kq8_0, GGML_TYPE_Q8_0, unpack_q8_0(wb + b, q, &d), false)

#define REF_DOT_K(NAME, BLK, UNPACK_CALL, GROUP, HAS_MIN)                                      \
    static float NAME(int64_t n, const void *vw, const void *vx) {                             \
        const BLK *wb = vw;                                                                    \
        const kq8_K *xb = vx;                                                                  \
        int8_t q[256], aq[256];                                                                \
        int16_t sc[16], mn[16] = {0};                                                          \
        int32_t bsum[16];                                                                      \
        float d, dmin = 0, ad;                                                                 \
        kern_wrow w = {.q = q, .sc = sc, .mn = mn, .d = &d, .m = &dmin};                       \
        kern_arow a = {.q = aq, .d = &ad, .bsum = bsum};                                       \
        float sum = 0;                                                                         \
        for (int64_t b = 0; b < n / 256; ++b) {                                                \
            UNPACK_CALL;                                                                       \
            unpack_arow(GGML_TYPE_Q8_K, xb + b, 256, &a);                                      \
            sum += kern_dot_k_scalar(256, &w, &a, GROUP, HAS_MIN);                             \
        }                                                                                      \
        return sum;                                                                            \
    }

REF_DOT_K(ref_dot_q2_K, blk_q2_K, unpack_q2_K(wb + b, q, sc, mn, &d, &dmin), 16, true)
REF_DOT_K(ref_dot_q3_K, blk_q3_K, unpack_q3_K(wb + b, q, sc, &d), 16, false)
REF_DOT_K(ref_dot_q4_K, blk_q4_K, unpack_q4_K(wb + b, q, sc, mn, &d, &dmin), 32, true)
REF_DOT_K(ref_dot_q5_K, blk_q5_K, unpack_q5_K(wb + b, q, sc, mn, &d, &dmin), 32, true)
REF_DOT_K(ref_dot_q6_K, blk_q6_K, unpack_q6_K(wb + b, q, sc, &d), 16, false)

/* Float weights: both sides widened to float, products accumulated in float. */
static float ref_dot_float(int type, int64_t n, const void *w, const void *x) {
    float s = 0, a, b;
    for (int64_t i = 0; i < n; ++i) {
        row_to_f32(type, (const uint8_t *)w + i * (type == GGML_TYPE_F32 ? 4 : 2), &a, 1);
        row_to_f32(type, (const uint8_t *)x + i * (type == GGML_TYPE_F32 ? 4 : 2), &b, 1);
        s += a * b;
    }
    return s;
}
static float ref_dot_f32(int64_t n, const void *w, const void *x) { return ref_dot_float(GGML_TYPE_F32, n, w, x); }
static float ref_dot_f16(int64_t n, const void *w, const void *x) { return ref_dot_float(GGML_TYPE_F16, n, w, x); }
static float ref_dot_bf16(int64_t n, const void *w, const void *x) { return ref_dot_float(GGML_TYPE_BF16, n, w, x); }

kern_vec_dot_fn kern_vec_dot_ref(int wtype) {
    switch (wtype) {
    case GGML_TYPE_F32: return ref_dot_f32;
    case GGML_TYPE_F16: return ref_dot_f16;
    case GGML_TYPE_BF16: return ref_dot_bf16;
    case GGML_TYPE_Q4_0: return ref_dot_q4_0;
    case GGML_TYPE_Q4_1: return ref_dot_q4_1;
    case GGML_TYPE_Q5_0: return ref_dot_q5_0;
    case GGML_TYPE_Q5_1: return ref_dot_q5_1;
    case GGML_TYPE_Q8_0: return ref_dot_q8_0;
    case GGML_TYPE_Q2_K: return ref_dot_q2_K;
    case GGML_TYPE_Q3_K: return ref_dot_q3_K;
    case GGML_TYPE_Q4_K: return ref_dot_q4_K;
    case GGML_TYPE_Q5_K: return ref_dot_q5_K;
    case GGML_TYPE_Q6_K: return ref_dot_q6_K;
    default: return NULL;
    }
}

/* ===================================================================== matmul driver */

static kern_impl g_impl = KERN_AUTO;

bool kern_have_avx2(void) { return kern_cpu_has_avx2(); }

kern_impl kern_set_impl(kern_impl impl) {
    if (impl == KERN_AUTO) impl = kern_have_avx2() ? KERN_AVX2 : KERN_SCALAR;
    if (impl == KERN_AVX2 && !kern_have_avx2()) impl = KERN_SCALAR;
    g_impl = impl;
    return impl;
}

static bool use_avx2(void) {
    if (g_impl == KERN_AUTO) kern_set_impl(KERN_AUTO);
    return g_impl == KERN_AVX2;
}

/* Bytes one unpacked row of n values needs, 32-byte aligned pieces. */
static size_t unpacked_bytes(int64_t n) {
    const size_t a = 32;
    const size_t nq = ((size_t)n + a - 1) / a * a;
    const size_t n16 = ((size_t)(n / 16) * 4 + a - 1) / a * a; /* int16 or int32 per 16 */
    const size_t n32 = ((size_t)(n / 32 + 1) * 4 + a - 1) / a * a;
    return nq + 2 * n16 + 2 * n32 + (size_t)n * 4 + a;
}

/* Lay out one unpacked row in mem (>= unpacked_bytes(n)); the same memory serves wrow/arow. */
static void carve(uint8_t *mem, int64_t n, kern_wrow *w, kern_arow *a) {
    const size_t al = 32;
    uint8_t *p = (uint8_t *)(((uintptr_t)mem + al - 1) & ~(uintptr_t)(al - 1));
    const size_t nq = ((size_t)n + al - 1) / al * al;
    const size_t n16 = ((size_t)(n / 16) * 4 + al - 1) / al * al;
    const size_t n32 = ((size_t)(n / 32 + 1) * 4 + al - 1) / al * al;
    int8_t *q = (int8_t *)p; p += nq;
    void *g1 = p; p += n16;
    void *g2 = p; p += n16;
    float *d = (float *)p; p += n32;
    float *m = (float *)p; p += n32;
    float *f = (float *)p;
    if (w) *w = (kern_wrow){.q = q, .sc = g1, .mn = g2, .d = d, .m = m, .f = f};
    if (a) *a = (kern_arow){.q = q, .bsum = g1, .d = d, .s = m, .f = f};
}

#define ROW_TILE 8 /* weight rows unpacked together; their dots with one token run back to back */

static float dot_one(const wdesc *wd, bool avx2, int64_t n, const kern_wrow *w, const kern_arow *a) {
    switch (wd->kind) {
    case WK_FLOAT: return avx2 ? kern_dot_f32_avx2(n, w->f, a->f) : kern_dot_f32_scalar(n, w->f, a->f);
    case WK_LEGACY:
        return avx2 ? kern_dot_legacy_avx2(n, w, a, wd->has_min) : kern_dot_legacy_scalar(n, w, a, wd->has_min);
    case WK_K:
    default:
        return avx2 ? kern_dot_k_avx2(n, w, a, wd->group, wd->has_min)
                    : kern_dot_k_scalar(n, w, a, wd->group, wd->has_min);
    }
}

int kern_matmul(const kern_weight *W, const float *x, int64_t n_tok, float *y, slmc_err *err) {
    return kern_matmul_threads(W, x, n_tok, y, 0, err);
}

int kern_matmul_threads(const kern_weight *W, const float *x, int64_t n_tok, float *y, int n_threads, slmc_err *err) {
    if (n_threads <= 0) n_threads = omp_get_max_threads();
    const wdesc *wd = wdesc_get(W->type);
    if (!wd) return slmc_fail(err, NULL, "matmul: weight type %s is not supported", type_name(W->type));
    const int64_t n = W->n_in;
    if (n % wd->block != 0)
        return slmc_fail(err, NULL, "matmul: row length %lld is not a multiple of %s's block of %d",
                         (long long)n, type_name(W->type), wd->block);
    if (n_tok <= 0 || W->n_out <= 0) return 0;
    const bool avx2 = use_avx2();
    const size_t ub = unpacked_bytes(n);
    const size_t act_bytes = kern_act_row_bytes(W->type, n);

    /* 1. activations: convert each token to the vec_dot type (as ggml does), then unpack. */
    uint8_t *act_mem = malloc(ub * (size_t)n_tok);
    kern_arow *acts = malloc(sizeof(kern_arow) * (size_t)n_tok);
    if (!act_mem || !acts) {
        free(act_mem); free(acts);
        return slmc_fail(err, NULL, "matmul: out of memory for %lld activation rows of %lld", (long long)n_tok,
                         (long long)n);
    }
    int oom = 0;
#pragma omp parallel num_threads(n_threads)
    {
        uint8_t *raw = malloc(act_bytes);
        if (!raw) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tok; ++t) {
            if (!raw) continue;
            carve(act_mem + ub * (size_t)t, n, NULL, &acts[t]);
            kern_act_convert(W->type, x + t * n, raw, n);
            unpack_arow(wd->act_type, raw, n, &acts[t]);
        }
        free(raw);
    }
    if (oom) {
        free(act_mem); free(acts);
        return slmc_fail(err, NULL, "matmul: out of memory");
    }

    /* 2. weights: each thread takes tiles of ROW_TILE rows, unpacks them once and dots them
     * with every token. */
    const int64_t n_tiles = (W->n_out + ROW_TILE - 1) / ROW_TILE;
#pragma omp parallel num_threads(n_threads)
    {
        uint8_t *wmem = malloc(ub * ROW_TILE);
        kern_wrow rows[ROW_TILE];
        if (!wmem) {
#pragma omp atomic write
            oom = 1;
        } else {
            for (int r = 0; r < ROW_TILE; ++r) carve(wmem + ub * (size_t)r, n, &rows[r], NULL);
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t tile = 0; tile < n_tiles; ++tile) {
            if (!wmem) continue;
            const int64_t r0 = tile * ROW_TILE;
            const int nr = (int)(W->n_out - r0 < ROW_TILE ? W->n_out - r0 : ROW_TILE);
            for (int r = 0; r < nr; ++r) {
                const int64_t src = W->row_map ? W->row_map[r0 + r] : r0 + r;
                unpack_wrow(wd, W->data + W->row_bytes * (uint64_t)src, n, &rows[r]);
            }
            for (int64_t t = 0; t < n_tok; ++t)
                for (int r = 0; r < nr; ++r) y[t * W->n_out + r0 + r] = dot_one(wd, avx2, n, &rows[r], &acts[t]);
        }
        free(wmem);
    }
    free(act_mem);
    free(acts);
    if (oom) return slmc_fail(err, NULL, "matmul: out of memory");
    return 0;
}

/* ===================================================================== row ops */

void kern_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] * scale;
        out[i] = weight ? v * weight[i] : v;
    }
}

void kern_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max = fmaxf(max, x[i]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void kern_rope(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox) {
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * cos_t[i] - x1 * sin_t[i];
        x[b] = x0 * sin_t[i] + x1 * cos_t[i];
    }
}

void kern_rope_table(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base, float freq_scale) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta_extrap = (float)pos;
    for (int64_t i = 0; i < n_rot / 2; ++i) {
        const float theta = freq_scale * theta_extrap;
        cos_t[i] = cosf(theta);
        sin_t[i] = sinf(theta);
        theta_extrap *= theta_scale;
    }
}

void kern_swiglu(float *x, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + expf(-x[i])) * up[i];
}

void kern_round_f16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = fp16_to_f32(f32_to_fp16(x[i]));
}

void kern_round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
