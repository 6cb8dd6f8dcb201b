/* dots.c - the activation conversion, the unpacked rows and the reference dots (see dots.h).
 *
 * Reading order:
 *   1. activation quantizers (Q8_0 / Q8_1 as ggml's x86 path)
 *   2. the per-type description: family, vec_dot type, block, group
 *   3. converting an activation row to the vec_dot type
 *   4. unpacking weight and activation rows to plain arrays (4a: the memory they use)
 *   5. the scalar inner loops on unpacked rows (the AVX2 twins are in dots_avx2.c)
 *   6. the reference vec_dot per type, one block at a time
 */
#include "dots.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "codec/quants.h"
#include "codec/types.h"

/* ===================================================================== 1. activation quantizers */

/* One block of 32: ggml's x86 quantize_row_q8_0/q8_1 (AVX2 path): id = 127/amax and
 * round-half-even, which differs from the reference quantizer's roundf(x / d) in rare ties. */
static float q8_block(const float *x, int8_t *q, int *sum) {
    float amax = 0;
    for (int j = 0; j < QK_LEGACY; ++j) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    int s = 0;
    for (int j = 0; j < QK_LEGACY; ++j) {
        q[j] = (int8_t)nearbyintf(x[j] * id); /* default rounding mode: half to even */
        s += q[j];
    }
    *sum = s;
    return d;
}

void kern_quantize_q8_0(const float *x, block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_LEGACY; ++b) {
        int sum;
        y[b].d = f32_to_fp16(q8_block(x + b * QK_LEGACY, y[b].qs, &sum));
    }
}

void kern_quantize_q8_1(const float *x, block_q8_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_LEGACY; ++b) {
        int sum;
        const float d = q8_block(x + b * QK_LEGACY, y[b].qs, &sum);
        y[b].d = f32_to_fp16(d);
        y[b].s = f32_to_fp16(d * (float)sum);
    }
}

/* ===================================================================== 2. per-type description */

static const kern_wdesc WDESC[] = {
    {GGML_TYPE_F32, KERN_WK_FLOAT, GGML_TYPE_F32, 1, 4, 0, false},
    {GGML_TYPE_F16, KERN_WK_FLOAT, GGML_TYPE_F16, 1, 2, 0, false},
    {GGML_TYPE_BF16, KERN_WK_FLOAT, GGML_TYPE_BF16, 1, 2, 0, false},
    {GGML_TYPE_Q4_0, KERN_WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(block_q4_0), 32, false},
    {GGML_TYPE_Q4_1, KERN_WK_LEGACY, GGML_TYPE_Q8_1, 32, sizeof(block_q4_1), 32, true},
    {GGML_TYPE_Q5_0, KERN_WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(block_q5_0), 32, false},
    {GGML_TYPE_Q5_1, KERN_WK_LEGACY, GGML_TYPE_Q8_1, 32, sizeof(block_q5_1), 32, true},
    {GGML_TYPE_Q8_0, KERN_WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(block_q8_0), 32, false},
    {GGML_TYPE_Q2_K, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_q2_K), 16, true},
    {GGML_TYPE_Q3_K, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_q3_K), 16, false},
    {GGML_TYPE_Q4_K, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_q4_K), 32, true},
    {GGML_TYPE_Q5_K, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_q5_K), 32, true},
    {GGML_TYPE_Q6_K, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_q6_K), 16, false},
};

const kern_wdesc *kern_wdesc_get(int type) {
    for (size_t i = 0; i < sizeof WDESC / sizeof WDESC[0]; ++i)
        if (WDESC[i].type == type) return &WDESC[i];
    return NULL;
}

int kern_vec_dot_type(int wtype) {
    const kern_wdesc *w = kern_wdesc_get(wtype);
    return w ? w->act_type : -1;
}

/* ===================================================================== 3. activation conversion */

size_t kern_act_row_bytes(int wtype, int64_t n) {
    switch (kern_vec_dot_type(wtype)) {
    case GGML_TYPE_F32: return (size_t)n * 4;
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return (size_t)n * 2;
    case GGML_TYPE_Q8_0: return (size_t)(n / 32) * sizeof(block_q8_0);
    case GGML_TYPE_Q8_1: return (size_t)(n / 32) * sizeof(block_q8_1);
    case GGML_TYPE_Q8_K: return (size_t)(n / 256) * sizeof(block_q8_K);
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

/* ===================================================================== 4. unpacking rows
 * Each function unpacks one weight block into the plain arrays of kern_wrow, offset so that
 * q[] holds the signed integer the dot product multiplies. */

static void unpack_q4_0(const block_q4_0 *b, int8_t *q, float *d) {
    for (int j = 0; j < 16; ++j) {
        q[j] = (int8_t)((b->qs[j] & 0xF) - 8);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    *d = fp16_to_f32(b->d);
}

static void unpack_q4_1(const block_q4_1 *b, int8_t *q, float *d, float *m) {
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

static void unpack_q5_0(const block_q5_0 *b, int8_t *q, float *d) {
    unpack_q5(b->qh, b->qs, 16, q);
    *d = fp16_to_f32(b->d);
}

static void unpack_q5_1(const block_q5_1 *b, int8_t *q, float *d, float *m) {
    unpack_q5(b->qh, b->qs, 0, q);
    *d = fp16_to_f32(b->d);
    *m = fp16_to_f32(b->m);
}

static void unpack_q8_0(const block_q8_0 *b, int8_t *q, float *d) {
    memcpy(q, b->qs, 32);
    *d = fp16_to_f32(b->d);
}

/* 2-bit field of element j (0..255) in Q2_K/Q3_K's qs: byte (j/128)*32 + j%32, pair (j%128)/32. */
static inline int two_bits(const uint8_t *qs, int j) {
    return (qs[(j / 128) * 32 + j % 32] >> (2 * ((j % 128) / 32))) & 3;
}

static void unpack_q2_K(const block_q2_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int j = 0; j < 256; ++j) q[j] = (int8_t)two_bits(b->qs, j);
    for (int g = 0; g < 16; ++g) {
        sc[g] = b->scales[g] & 0xF;
        mn[g] = b->scales[g] >> 4;
    }
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

static void unpack_q3_K(const block_q3_K *b, int8_t *q, int16_t *sc, float *d) {
    for (int j = 0; j < 256; ++j) {
        const int high = (b->hmask[j % 32] >> (j / 32)) & 1;
        q[j] = (int8_t)(two_bits(b->qs, j) - (high ? 0 : 4));
    }
    for (int g = 0; g < 16; ++g) sc[g] = (int16_t)q3_scale(b->scales, g);
    *d = fp16_to_f32(b->d);
}

/* Q4_K / Q5_K: the 8 sub-block scales and mins (k4_scale_min, codec/blocks.h), widened. */
static void unpack_k4_scales(const uint8_t *scales, int16_t *sc, int16_t *mn) {
    for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        k4_scale_min(j, scales, &s, &m);
        sc[j] = s;
        mn[j] = m;
    }
}

/* Q4_K: per 64 values k, 32 bytes: low nibbles are elements 64k..64k+31, high the next 32. */
static void unpack_q4_K(const block_q4_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            q[64 * k + l] = (int8_t)(b->qs[32 * k + l] & 0xF);
            q[64 * k + 32 + l] = (int8_t)(b->qs[32 * k + l] >> 4);
        }
    unpack_k4_scales(b->scales, sc, mn);
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

/* Q5_K: as Q4_K plus the 5th bit: bit 2k of qh[l] for element 64k+l, bit 2k+1 for 64k+32+l. */
static void unpack_q5_K(const block_q5_K *b, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin) {
    for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
            const int h0 = ((b->qh[l] >> (2 * k)) & 1) << 4, h1 = ((b->qh[l] >> (2 * k + 1)) & 1) << 4;
            q[64 * k + l] = (int8_t)((b->qs[32 * k + l] & 0xF) | h0);
            q[64 * k + 32 + l] = (int8_t)((b->qs[32 * k + l] >> 4) | h1);
        }
    unpack_k4_scales(b->scales, sc, mn);
    *d = fp16_to_f32(b->d);
    *dmin = fp16_to_f32(b->dmin);
}

/* Q6_K: per 128 values, ql[l] holds the low nibbles of l and l+64, ql[l+32] of l+32 and
 * l+96, qh[l] the top 2 bits of l, l+32, l+64, l+96; value q - 32. */
static void unpack_q6_K(const block_q6_K *b, int8_t *q, int16_t *sc, float *d) {
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
void kern_unpack_wrow(const kern_wdesc *wd, const void *row, int64_t n, kern_wrow *w) {
    const uint8_t *p = row;
    const int64_t nb = n / wd->block;
    switch (wd->type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        row_to_f32(wd->type, row, w->f, n);
        return;
    case GGML_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q4_0((const block_q4_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; ++b) unpack_q4_1((const block_q4_1 *)p + b, w->q + 32 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q5_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q5_0((const block_q5_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q5_1:
        for (int64_t b = 0; b < nb; ++b) unpack_q5_1((const block_q5_1 *)p + b, w->q + 32 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; ++b) unpack_q8_0((const block_q8_0 *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_Q2_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q2_K((const block_q2_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->mn + 16 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q3_K:
        for (int64_t b = 0; b < nb; ++b) unpack_q3_K((const block_q3_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->d + b);
        return;
    case GGML_TYPE_Q4_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q4_K((const block_q4_K *)p + b, w->q + 256 * b, w->sc + 8 * b, w->mn + 8 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q5_K:
        for (int64_t b = 0; b < nb; ++b)
            unpack_q5_K((const block_q5_K *)p + b, w->q + 256 * b, w->sc + 8 * b, w->mn + 8 * b, w->d + b, w->m + b);
        return;
    case GGML_TYPE_Q6_K:
        for (int64_t b = 0; b < nb; ++b) unpack_q6_K((const block_q6_K *)p + b, w->q + 256 * b, w->sc + 16 * b, w->d + b);
        return;
    default:
        assert(!"unsupported weight type");
    }
}

/* Unpack one activation row already in the vec_dot type act_type. */
void kern_unpack_arow(int act_type, const void *row, int64_t n, kern_arow *a) {
    switch (act_type) {
    case GGML_TYPE_F32: memcpy(a->f, row, (size_t)n * sizeof(float)); return;
    case GGML_TYPE_F16: case GGML_TYPE_BF16: row_to_f32(act_type, row, a->f, n); return;
    case GGML_TYPE_Q8_0: {
        const block_q8_0 *b = row;
        for (int64_t i = 0; i < n / 32; ++i) {
            memcpy(a->q + 32 * i, b[i].qs, 32);
            a->d[i] = fp16_to_f32(b[i].d);
        }
        return;
    }
    case GGML_TYPE_Q8_1: {
        const block_q8_1 *b = row;
        for (int64_t i = 0; i < n / 32; ++i) {
            memcpy(a->q + 32 * i, b[i].qs, 32);
            a->d[i] = fp16_to_f32(b[i].d);
            a->s[i] = fp16_to_f32(b[i].s);
        }
        return;
    }
    case GGML_TYPE_Q8_K: {
        const block_q8_K *b = row;
        for (int64_t i = 0; i < n / 256; ++i) {
            memcpy(a->q + 256 * i, b[i].qs, 256);
            a->d[i] = b[i].d;
            for (int g = 0; g < 16; ++g) a->bsum[16 * i + g] = b[i].bsums[g];
            if (a->bsum16) memcpy(a->bsum16 + 16 * i, b[i].bsums, sizeof b[i].bsums);
        }
        return;
    }
    default:
        assert(!"unsupported activation type");
    }
}

/* ===================================================================== 4a. memory of an unpacked row */

/* Bytes one unpacked row of n values needs, 32-byte aligned pieces. */
size_t kern_unpacked_bytes(int64_t n) {
    const size_t a = 32;
    const size_t nq = ((size_t)n + a - 1) / a * a;
    const size_t n16 = ((size_t)(n / 16) * 4 + a - 1) / a * a; /* int16 or int32 per 16 */
    const size_t n32 = ((size_t)(n / 32 + 1) * 4 + a - 1) / a * a;
    return nq + 2 * n16 + 2 * n32 + (size_t)n * 4 + a;
}

/* Lay out one unpacked row in mem (>= kern_unpacked_bytes(n)); the same memory serves wrow/arow. */
void kern_unpacked_carve(void *mem, int64_t n, kern_wrow *w, kern_arow *a) {
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
    if (a) *a = (kern_arow){.q = q, .bsum = g1, .bsum16 = g2, .d = d, .s = m, .f = f};
}

/* ===================================================================== 5. scalar dots on unpacked rows */

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

/* The inner loop of wd's family (see dots.h). */
float kern_dot_unpacked(const kern_wdesc *wd, bool avx2, int64_t n, const kern_wrow *w, const kern_arow *a) {
    switch (wd->kind) {
    case KERN_WK_FLOAT: return avx2 ? kern_dot_f32_avx2(n, w->f, a->f) : kern_dot_f32_scalar(n, w->f, a->f);
    case KERN_WK_LEGACY:
        return avx2 ? kern_dot_legacy_avx2(n, w, a, wd->has_min) : kern_dot_legacy_scalar(n, w, a, wd->has_min);
    case KERN_WK_K:
    default:
        return avx2 ? kern_dot_k_avx2(n, w, a, wd->group, wd->has_min)
                    : kern_dot_k_scalar(n, w, a, wd->group, wd->has_min);
    }
}

/* Every (row, token) dot of a block of unpacked rows: the tiled AVX2 kernels where they fit,
 * the 1x1 inner loop for the rest (see dots.h). */
void kern_dot_block(const kern_wdesc *wd, bool avx2, int64_t n, const kern_wrow *w, int nr, const kern_arow *a,
                    int nt, float *y, int64_t ldy) {
    int r0 = avx2 ? kern_dot_tile_avx512(wd, n, w, nr, a, nt, y, ldy) : 0;
    if (avx2 && r0 == 0) r0 = kern_dot_tile_avx2(wd, n, w, nr, a, nt, y, ldy);
    if (r0 == nr) return;
    for (int t = 0; t < nt; ++t)
        for (int r = r0; r < nr; ++r) y[t * ldy + r] = kern_dot_unpacked(wd, avx2, n, &w[r], &a[t]);
}

/* ===================================================================== 6. reference vec_dot per type
 * One block at a time, unpacking into stack arrays: the definition the fast path is tested
 * against. */

#define REF_DOT_LEGACY(NAME, BLK, ACT, ACT_TYPE, UNPACK_CALL, HAS_MIN)                             \
    static float NAME(int64_t n, const void *vw, const void *vx) {                                 \
        const BLK *wb = vw;                                                                        \
        const ACT *xb = vx;                                                                        \
        int8_t q[32], aq[32];                                                                      \
        float d, m = 0, ad, as = 0;                                                                \
        kern_wrow w = {.q = q, .d = &d, .m = &m};                                                  \
        kern_arow a = {.q = aq, .d = &ad, .s = &as};                                               \
        float sum = 0;                                                                             \
        for (int64_t b = 0; b < n / 32; ++b) {                                                     \
            UNPACK_CALL;                                                                           \
            kern_unpack_arow(ACT_TYPE, xb + b, 32, &a);                                            \
            sum += kern_dot_legacy_scalar(32, &w, &a, HAS_MIN);                                    \
        }                                                                                          \
        return sum;                                                                                \
    }

REF_DOT_LEGACY(ref_dot_q4_0, block_q4_0, block_q8_0, GGML_TYPE_Q8_0, unpack_q4_0(wb + b, q, &d), false)
REF_DOT_LEGACY(ref_dot_q4_1, block_q4_1, block_q8_1, GGML_TYPE_Q8_1, unpack_q4_1(wb + b, q, &d, &m), true)
REF_DOT_LEGACY(ref_dot_q5_0, block_q5_0, block_q8_0, GGML_TYPE_Q8_0, unpack_q5_0(wb + b, q, &d), false)
REF_DOT_LEGACY(ref_dot_q5_1, block_q5_1, block_q8_1, GGML_TYPE_Q8_1, unpack_q5_1(wb + b, q, &d, &m), true)
REF_DOT_LEGACY(ref_dot_q8_0, block_q8_0, block_q8_0, GGML_TYPE_Q8_0, unpack_q8_0(wb + b, q, &d), false)

#define REF_DOT_K(NAME, BLK, UNPACK_CALL, GROUP, HAS_MIN)                                          \
    static float NAME(int64_t n, const void *vw, const void *vx) {                                 \
        const BLK *wb = vw;                                                                        \
        const block_q8_K *xb = vx;                                                                 \
        int8_t q[256], aq[256];                                                                    \
        int16_t sc[16], mn[16] = {0};                                                              \
        int32_t bsum[16];                                                                          \
        float d, dmin = 0, ad;                                                                     \
        kern_wrow w = {.q = q, .sc = sc, .mn = mn, .d = &d, .m = &dmin};                           \
        kern_arow a = {.q = aq, .d = &ad, .bsum = bsum};                                           \
        float sum = 0;                                                                             \
        for (int64_t b = 0; b < n / 256; ++b) {                                                    \
            UNPACK_CALL;                                                                           \
            kern_unpack_arow(GGML_TYPE_Q8_K, xb + b, 256, &a);                                     \
            sum += kern_dot_k_scalar(256, &w, &a, GROUP, HAS_MIN);                                 \
        }                                                                                          \
        return sum;                                                                                \
    }

REF_DOT_K(ref_dot_q2_K, block_q2_K, unpack_q2_K(wb + b, q, sc, mn, &d, &dmin), 16, true)
REF_DOT_K(ref_dot_q3_K, block_q3_K, unpack_q3_K(wb + b, q, sc, &d), 16, false)
REF_DOT_K(ref_dot_q4_K, block_q4_K, unpack_q4_K(wb + b, q, sc, mn, &d, &dmin), 32, true)
REF_DOT_K(ref_dot_q5_K, block_q5_K, unpack_q5_K(wb + b, q, sc, mn, &d, &dmin), 32, true)
REF_DOT_K(ref_dot_q6_K, block_q6_K, unpack_q6_K(wb + b, q, sc, &d), 16, false)

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
