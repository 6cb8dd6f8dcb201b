/* dots.c - the activation conversion, the unpacked rows and the reference dots (see dots.h).
 *
 * Reading order:
 *   1. activation quantizers (Q8_0 / Q8_1 as ggml's x86 path)
 *   2. the per-type description: family, vec_dot type, block, group
 *   3. converting an activation row to the vec_dot type
 *   4. unpacking weight and activation rows to plain arrays: the legacy and K-quant blocks, then
 *      the i-quants and ternary types mapped onto those two families (4a: the memory they use)
 *   5. the scalar inner loops on unpacked rows (the AVX2 twins are in dots_avx2.c)
 *   6. the reference vec_dot per type, one block at a time
 */
#include "dots.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "codec/iq_grids.h"
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
    /* IQ4_NL is a legacy type (q = its level, Q8_0 activations); the i-quants and ternary types
     * are K types with signed q and no mins (section 4, "i-quants and ternary types", says how
     * each maps). Their scales come per 16 values, or per 32 written twice: the tiled AVX2 loop
     * takes signed weights back out of an offset per group of 16. IQ4_XS, too wide for an
     * offset, keeps its groups of 32 (dots_avx2.c, register-tiled dots). */
    {GGML_TYPE_IQ4_NL, KERN_WK_LEGACY, GGML_TYPE_Q8_0, 32, sizeof(block_iq4_nl), 32, false},
    {GGML_TYPE_IQ4_XS, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq4_xs), 32, false},
    {GGML_TYPE_IQ3_S, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq3_s), 16, false},
    {GGML_TYPE_IQ3_XXS, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq3_xxs), 16, false},
    {GGML_TYPE_IQ2_S, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq2_s), 16, false},
    {GGML_TYPE_IQ2_XS, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq2_xs), 16, false},
    {GGML_TYPE_IQ2_XXS, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq2_xxs), 16, false},
    {GGML_TYPE_IQ1_M, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq1_m), 16, false},
    {GGML_TYPE_IQ1_S, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_iq1_s), 16, false},
    {GGML_TYPE_TQ2_0, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_tq2_0), 16, false},
    {GGML_TYPE_TQ1_0, KERN_WK_K, GGML_TYPE_Q8_K, 256, sizeof(block_tq1_0), 16, false},
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

/* ---------------------------------------------------------------- i-quants and ternary types
 * Each is written as one of the two integer families, so the inner loops below (and their AVX2
 * twins) dot them unchanged. The integers are chosen so that d * sc * q is exactly the value
 * ggml's dequantize_row_X gives, and the integer sums are those ggml's generic vec_dot forms:
 *   IQ4_NL   legacy: q = the IQ4 level (-127..113), d = the fp16 block scale;
 *   IQ4_XS   q = the IQ4 level, sc = ls - 32 per 32 values (-32..31), d = the fp16 scale;
 *   IQ2_XXS, IQ2_XS, IQ2_S
 *            q = grid * sign (|q| <= 43), sc = 2 * ls + 1 (1..31), d = fp16 d / 8
 *            (ggml: d * (0.5 + ls) / 4 = d / 8 * (2 * ls + 1));
 *   IQ3_XXS  q = grid * sign (|q| <= 62), sc = 2 * ls + 1, d = fp16 d / 4;
 *   IQ3_S    q = grid * sign (|q| <= 15), sc = 2 * ls + 1, d = fp16 d;
 *   IQ1_S, IQ1_M
 *            q = 8 * grid +- 1 (grid -1, 0, 1, so |q| <= 9), sc = 2 * ls + 1 (1..15), d = fp16 d / 8:
 *            the shift of +-1/8 becomes an integer;
 *   TQ1_0, TQ2_0
 *            q = trit - 1, sc = 1, d = the fp16 scale.
 * Dividing by 8 or 4 is exact in float, so d_a * d_w * isum rounds as ggml's d_a * d_x * isum
 * times its final 1/8 or 1/4. Scales given per 32 values are written once per 16 (twice), the
 * group every one of these types but IQ4_XS uses (dots.h: kern_wdesc.group). */


/* IQ4_NL: 32 level indices, nibbles as in Q4_0. */
static void unpack_iq4_nl(const block_iq4_nl *b, int8_t *q, float *d) {
    for (int j = 0; j < 16; ++j) {
        q[j] = IQ4_LEVELS[b->qs[j] & 0xF];
        q[j + 16] = IQ4_LEVELS[b->qs[j] >> 4];
    }
    *d = fp16_to_f32(b->d);
}

/* IQ4_XS: 6-bit scale of group ib (0..7), stored + 32: low 4 bits in scales_l, top 2 in scales_h. */
static inline int iq4_xs_scale(const block_iq4_xs *b, int ib) {
    return ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4);
}

/* IQ4_XS: per 32 values 16 bytes of level indices (as IQ4_NL) and a scale, sc = ls - 32. */
static void unpack_iq4_xs(const block_iq4_xs *b, int8_t *q, int16_t *sc, float *d) {
    for (int ib = 0; ib < 8; ++ib) {
        for (int j = 0; j < 16; ++j) {
            q[32 * ib + j] = IQ4_LEVELS[b->qs[16 * ib + j] & 0xF];
            q[32 * ib + j + 16] = IQ4_LEVELS[b->qs[16 * ib + j] >> 4];
        }
        sc[ib] = (int16_t)(iq4_xs_scale(b, ib) - 32);
    }
    *d = fp16_to_f32(b->d);
}

/* 8 values of an IQ2 / IQ3 grid point (non-negative bytes), each negated where its bit of
 * `signs` is set. */
static void put_signed_point(int8_t *q, uint64_t point, uint8_t signs) {
    for (int j = 0; j < 8; ++j) {
        const int v = iq_grid_byte(point, j);
        q[j] = (int8_t)((signs >> j) & 1 ? -v : v);
    }
}

/* Two 4-value IQ3 grid points as one 8-value point (first in the low bytes). */
static inline uint64_t iq3_pair(uint32_t first, uint32_t second) { return first | (uint64_t)second << 32; }

/* sc of both groups of 16 of the 32 values ib: 2 * ls + 1. */
static inline void odd_scale_32(int16_t *sc, int ib, int ls) { sc[2 * ib] = sc[2 * ib + 1] = (int16_t)(2 * ls + 1); }

/* IQ2_XXS: per 32 values two uint32 (read as ggml does, little-endian): four 8-bit grid indices,
 * then four 7-bit sign indices and the 4-bit scale. */
static void iq2_xxs_words(const block_iq2_xxs *b, int ib, uint32_t *grid, uint32_t *rest) {
    memcpy(grid, b->qs + 4 * ib, 4);
    memcpy(rest, b->qs + 4 * ib + 2, 4);
}

/* IQ2_XXS: four 8-value points per 32 values, one scale per 32 (written per 16), d / 8. */
static void unpack_iq2_xxs(const block_iq2_xxs *b, int8_t *q, int16_t *sc, float *d) {
    for (int ib = 0; ib < 8; ++ib) {
        uint32_t grid, rest;
        iq2_xxs_words(b, ib, &grid, &rest);
        for (int l = 0; l < 4; ++l)
            put_signed_point(q + 32 * ib + 8 * l, IQ2XXS_GRID[(grid >> (8 * l)) & 255],
                             iq_sign_bits((rest >> (7 * l)) & 127));
        odd_scale_32(sc, ib, (int)(rest >> 28));
    }
    *d = fp16_to_f32(b->d) * 0.125f;
}

/* IQ2_XS: per 8 values a 9-bit grid index and a 7-bit sign index; a 4-bit scale per 16. */
static void unpack_iq2_xs(const block_iq2_xs *b, int8_t *q, int16_t *sc, float *d) {
    for (int g = 0; g < 32; ++g) put_signed_point(q + 8 * g, IQ2XS_GRID[b->qs[g] & 511], iq_sign_bits(b->qs[g] >> 9));
    for (int ib = 0; ib < 8; ++ib) {
        sc[2 * ib] = (int16_t)(2 * (b->scales[ib] & 0xF) + 1);
        sc[2 * ib + 1] = (int16_t)(2 * (b->scales[ib] >> 4) + 1);
    }
    *d = fp16_to_f32(b->d) * 0.125f;
}

/* IQ2_S: grid index of the 8 values g: 8 bits in qs[g], the top 2 in qh[g / 4], bits 2 (g % 4)
 * and up; their sign bits are the byte qs[32 + g]. Scales as IQ2_XS. */
static inline int iq2_s_index(const block_iq2_s *b, int g) {
    return b->qs[g] | ((b->qh[g / 4] << (8 - 2 * (g % 4))) & 0x300);
}

/* IQ2_S: as IQ2_XS with 10-bit grid indices and the sign bits stored whole. */
static void unpack_iq2_s(const block_iq2_s *b, int8_t *q, int16_t *sc, float *d) {
    for (int g = 0; g < 32; ++g) put_signed_point(q + 8 * g, IQ2S_GRID[iq2_s_index(b, g)], b->qs[32 + g]);
    for (int ib = 0; ib < 8; ++ib) {
        sc[2 * ib] = (int16_t)(2 * (b->scales[ib] & 0xF) + 1);
        sc[2 * ib + 1] = (int16_t)(2 * (b->scales[ib] >> 4) + 1);
    }
    *d = fp16_to_f32(b->d) * 0.125f;
}

/* IQ3_XXS: per 32 values 8 grid indices (bytes 8 ib..), and at byte 64 + 4 ib a uint32 of four
 * 7-bit sign indices (one per 8 values) and the 4-bit scale. */
static uint32_t iq3_xxs_rest(const block_iq3_xxs *b, int ib) {
    uint32_t rest;
    memcpy(&rest, b->qs + 64 + 4 * ib, 4);
    return rest;
}

/* IQ3_XXS: two 4-value points per 8 values, one scale per 32 (written per 16), d / 4. */
static void unpack_iq3_xxs(const block_iq3_xxs *b, int8_t *q, int16_t *sc, float *d) {
    for (int ib = 0; ib < 8; ++ib) {
        const uint32_t rest = iq3_xxs_rest(b, ib);
        const uint8_t *idx = b->qs + 8 * ib;
        for (int l = 0; l < 4; ++l)
            put_signed_point(q + 32 * ib + 8 * l, iq3_pair(IQ3XXS_GRID[idx[2 * l]], IQ3XXS_GRID[idx[2 * l + 1]]),
                             iq_sign_bits((rest >> (7 * l)) & 127));
        odd_scale_32(sc, ib, (int)(rest >> 28));
    }
    *d = fp16_to_f32(b->d) * 0.25f;
}

/* IQ3_S: 9-bit grid index k (4 values each): 8 bits in qs[k], the 9th bit k % 8 of qh[k / 8]. */
static inline int iq3_s_index(const block_iq3_s *b, int k) { return b->qs[k] | (((b->qh[k / 8] >> (k % 8)) & 1) << 8); }

/* IQ3_S: two 4-value points per 8 values, one sign bit per value, a 4-bit scale per 32. */
static void unpack_iq3_s(const block_iq3_s *b, int8_t *q, int16_t *sc, float *d) {
    for (int g = 0; g < 32; ++g)
        put_signed_point(q + 8 * g, iq3_pair(IQ3S_GRID[iq3_s_index(b, 2 * g)], IQ3S_GRID[iq3_s_index(b, 2 * g + 1)]),
                         b->signs[g]);
    for (int ib = 0; ib < 8; ++ib) odd_scale_32(sc, ib, (b->scales[ib / 2] >> (4 * (ib % 2))) & 0xF);
    *d = fp16_to_f32(b->d);
}

/* 8 values of an IQ1 grid point (signed bytes -1, 0, 1) as 8 * grid + delta (delta +-1). */
static void put_iq1_point(int8_t *q, uint64_t point, int delta) {
    for (int j = 0; j < 8; ++j) q[j] = (int8_t)(8 * (int8_t)iq_grid_byte(point, j) + delta);
}

/* IQ1_S: per 32 values a uint16 qh: 3 high index bits per 8 values, the scale, the shift's sign. */
static void unpack_iq1_s(const block_iq1_s *b, int8_t *q, int16_t *sc, float *d) {
    for (int ib = 0; ib < 8; ++ib) {
        const int qh = b->qh[ib];
        const int delta = qh & 0x8000 ? -1 : 1;
        for (int l = 0; l < 4; ++l)
            put_iq1_point(q + 32 * ib + 8 * l, IQ1S_GRID[b->qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)], delta);
        odd_scale_32(sc, ib, (qh >> 12) & 7);
    }
    *d = fp16_to_f32(b->d) * 0.125f;
}

/* IQ1_M: the 4 little-endian uint16 of scales: 3-bit scales per 16 values in bits 0-11, and the
 * fp16 super-block scale in their top nibbles (first uint16 lowest). */
static void iq1_m_scales(const block_iq1_m *b, uint16_t sc16[4], float *d) {
    for (int k = 0; k < 4; ++k) sc16[k] = (uint16_t)(b->scales[2 * k] | b->scales[2 * k + 1] << 8);
    *d = fp16_to_f32((uint16_t)((sc16[0] >> 12) | ((sc16[1] >> 8) & 0x00F0) | ((sc16[2] >> 4) & 0x0F00) |
                                (sc16[3] & 0xF000)));
}

/* 3-bit scale of the 16 values h (0..15) of an IQ1_M block. */
static inline int iq1_m_scale(const uint16_t sc16[4], int h) { return (sc16[h / 4] >> (3 * (h % 4))) & 7; }

/* IQ1_M: per 8 values g, a nibble of qh (low nibble for even g): bits 0-2 are the top of the
 * 11-bit grid index, bit 3 the shift's sign. */
static void unpack_iq1_m(const block_iq1_m *b, int8_t *q, int16_t *sc, float *d) {
    uint16_t sc16[4];
    float dm;
    iq1_m_scales(b, sc16, &dm);
    for (int g = 0; g < 32; ++g) {
        const int nib = (b->qh[g / 2] >> (4 * (g % 2))) & 0xF;
        put_iq1_point(q + 8 * g, IQ1S_GRID[b->qs[g] | ((nib & 7) << 8)], nib & 8 ? -1 : 1);
    }
    for (int h = 0; h < 16; ++h) sc[h] = (int16_t)(2 * iq1_m_scale(sc16, h) + 1);
    *d = dm * 0.125f;
}

/* TQ1_0: trit n (0..4) of a byte holding 5 trits in base 3 scaled to 0..255, as ggml reads it:
 * the byte times 3^n (mod 256), times 3, top byte. */
static inline int tq1_trit(uint8_t byte, int n) {
    static const uint8_t POW3[5] = {1, 3, 9, 27, 81};
    const uint8_t v = (uint8_t)(byte * POW3[n]);
    return (v * 3) >> 8;
}

/* TQ1_0: values 0..159 from qs[0..32) (value 32 n + m is trit n of qs[m]), 160..239 from
 * qs[32..48) (160 + 16 n + m: trit n of qs[32 + m]), 240..255 from qh (240 + 4 n + j: trit n of
 * qh[j]). */
static void unpack_tq1_0(const block_tq1_0 *b, int8_t *q, int16_t *sc, float *d) {
    for (int n = 0; n < 5; ++n) {
        for (int m = 0; m < 32; ++m) q[32 * n + m] = (int8_t)(tq1_trit(b->qs[m], n) - 1);
        for (int m = 0; m < 16; ++m) q[160 + 16 * n + m] = (int8_t)(tq1_trit(b->qs[32 + m], n) - 1);
    }
    for (int n = 0; n < 4; ++n)
        for (int j = 0; j < 4; ++j) q[240 + 4 * n + j] = (int8_t)(tq1_trit(b->qh[j], n) - 1);
    for (int g = 0; g < 16; ++g) sc[g] = 1;
    *d = fp16_to_f32(b->d);
}

/* TQ2_0: 2-bit fields packed as Q2_K's, value q - 1. */
static void unpack_tq2_0(const block_tq2_0 *b, int8_t *q, int16_t *sc, float *d) {
    for (int j = 0; j < 256; ++j) q[j] = (int8_t)(two_bits(b->qs, j) - 1);
    for (int g = 0; g < 16; ++g) sc[g] = 1;
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
    case GGML_TYPE_IQ4_NL:
        for (int64_t b = 0; b < nb; ++b) unpack_iq4_nl((const block_iq4_nl *)p + b, w->q + 32 * b, w->d + b);
        return;
    case GGML_TYPE_IQ4_XS:
        for (int64_t b = 0; b < nb; ++b) unpack_iq4_xs((const block_iq4_xs *)p + b, w->q + 256 * b, w->sc + 8 * b, w->d + b);
        return;
    /* the rest: groups of 16, no mins */
#define UNPACK_K16(TYPE, BLK, FN)                                                                  \
    case TYPE:                                                                                     \
        for (int64_t b = 0; b < nb; ++b) FN((const BLK *)p + b, w->q + 256 * b, w->sc + 16 * b, w->d + b); \
        return;
    UNPACK_K16(GGML_TYPE_IQ2_XXS, block_iq2_xxs, unpack_iq2_xxs)
    UNPACK_K16(GGML_TYPE_IQ2_XS, block_iq2_xs, unpack_iq2_xs)
    UNPACK_K16(GGML_TYPE_IQ2_S, block_iq2_s, unpack_iq2_s)
    UNPACK_K16(GGML_TYPE_IQ3_XXS, block_iq3_xxs, unpack_iq3_xxs)
    UNPACK_K16(GGML_TYPE_IQ3_S, block_iq3_s, unpack_iq3_s)
    UNPACK_K16(GGML_TYPE_IQ1_S, block_iq1_s, unpack_iq1_s)
    UNPACK_K16(GGML_TYPE_IQ1_M, block_iq1_m, unpack_iq1_m)
    UNPACK_K16(GGML_TYPE_TQ1_0, block_tq1_0, unpack_tq1_0)
    UNPACK_K16(GGML_TYPE_TQ2_0, block_tq2_0, unpack_tq2_0)
#undef UNPACK_K16
    default:
        assert(!"unsupported weight type");
    }
}

/* A BF16 activation row in VDPBF16PS pair order, each value rounded to bf16 as ggml rounds
 * activations for a BF16 dot (f32_to_bf16; a value already bf16, as kern_unpack_arow leaves
 * them, passes unchanged): for each whole 32 values from i, word 2j + 1 (the high half, added
 * first) is value i + j and word 2j is value i + 16 + j, so one instruction on lane j runs the
 * two FMAs lane j of the 16-lane chain runs on chunks i and i + 16 (dots.h). A last 16 (n % 32)
 * is left as it is: the kernel takes it from the unpacked row. */
void kern_act_bf16_pairs_ref(const float *f, int64_t n, uint16_t *h) {
    for (int64_t i = 0; i + 32 <= n; i += 32)
        for (int j = 0; j < 16; ++j) {
            h[i + 2 * j] = f32_to_bf16(f[i + 16 + j]);
            h[i + 2 * j + 1] = f32_to_bf16(f[i + j]);
        }
}

void kern_act_bf16_pairs(const float *f, int64_t n, uint16_t *h) {
    if (!kern_cpu_has_avx2() || !kern_act_bf16_pairs_avx2(f, n, h)) kern_act_bf16_pairs_ref(f, n, h);
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

/* Bytes one unpacked row of n values needs, 64-byte aligned pieces. */
size_t kern_unpacked_bytes(int64_t n) {
    const size_t a = 64;
    const size_t nq = ((size_t)n + a - 1) / a * a;
    const size_t n16 = ((size_t)(n / 16) * 4 + a - 1) / a * a; /* int16 or int32 per 16 */
    const size_t n32 = ((size_t)(n / 32 + 1) * 4 + a - 1) / a * a;
    return nq + 2 * n16 + 2 * n32 + (size_t)n * 4 + a;
}

/* Lay out one unpacked row in mem (>= kern_unpacked_bytes(n)); the same memory serves wrow/arow.
 * Each array starts on a 64-byte line: a 512-bit load of a misaligned row touches two lines
 * (a microbenchmark of the in-place BF16 tiles on 2048-value rows: 3.9 ns per 512 products with
 * rows 16 bytes off a line, 3.1 aligned). */
void kern_unpacked_carve(void *mem, int64_t n, kern_wrow *w, kern_arow *a) {
    const size_t al = 64;
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

/* ---------------------------------------------------------------- i-quants and ternary types
 * Straight from the blocks, with the arithmetic of ggml's generic C vec_dot for each type: the
 * integer sums per group, the scales applied where and as ggml applies them (the 1/8 or 1/4 of
 * the IQ2 / IQ3_XXS scales once at the end, IQ1's shift through the activations' block sums,
 * IQ4_XS's float scale per 32 values). Independent of the unpacking above, which the tests
 * compare with these. */

/* sum_j grid_j * sign_j * a_j over the 8 values of an IQ2 / IQ3 grid point (ggml's inner loop). */
static int32_t signed_point_dot(uint64_t point, uint8_t signs, const int8_t *a) {
    int32_t s = 0;
    for (int j = 0; j < 8; ++j) s += iq_grid_byte(point, j) * a[j] * ((signs >> j) & 1 ? -1 : 1);
    return s;
}

/* sum_j grid_j * a_j over the 8 values of an IQ1 grid point (-1, 0, 1). */
static int32_t iq1_point_dot(uint64_t point, const int8_t *a) {
    int32_t s = 0;
    for (int j = 0; j < 8; ++j) s += (int8_t)iq_grid_byte(point, j) * a[j];
    return s;
}

/* IQ2_XXS: integer sums per 32 values times 2 ls + 1, d_x d_y per super-block, 1/8 at the end. */
static float ref_dot_iq2_xxs(int64_t n, const void *vw, const void *vx) {
    const block_iq2_xxs *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = fp16_to_f32(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int32_t bsum = 0;
        for (int ib = 0; ib < 8; ++ib) {
            uint32_t grid, rest;
            iq2_xxs_words(&x[i], ib, &grid, &rest);
            int32_t sumi = 0;
            for (int l = 0; l < 4; ++l, q8 += 8)
                sumi += signed_point_dot(IQ2XXS_GRID[(grid >> (8 * l)) & 255], iq_sign_bits((rest >> (7 * l)) & 127), q8);
            bsum += sumi * (int32_t)(2 * (rest >> 28) + 1);
        }
        sumf += d * (float)bsum;
    }
    return 0.125f * sumf;
}

/* IQ2_XS: as IQ2_XXS with a scale per 16 values. */
static float ref_dot_iq2_xs(int64_t n, const void *vw, const void *vx) {
    const block_iq2_xs *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = fp16_to_f32(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int32_t bsum = 0;
        for (int h = 0; h < 16; ++h) { /* 16 values: one scale, two grid points */
            int32_t sumi = 0;
            for (int l = 0; l < 2; ++l, q8 += 8) {
                const uint16_t v = x[i].qs[2 * h + l];
                sumi += signed_point_dot(IQ2XS_GRID[v & 511], iq_sign_bits(v >> 9), q8);
            }
            bsum += sumi * (2 * ((x[i].scales[h / 2] >> (4 * (h % 2))) & 0xF) + 1);
        }
        sumf += d * (float)bsum;
    }
    return 0.125f * sumf;
}

/* IQ2_S: as IQ2_XS (ggml sums both halves of 32 before scaling: the same integers). */
static float ref_dot_iq2_s(int64_t n, const void *vw, const void *vx) {
    const block_iq2_s *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = fp16_to_f32(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int32_t bsum = 0;
        for (int h = 0; h < 16; ++h) {
            int32_t sumi = 0;
            for (int l = 0; l < 2; ++l, q8 += 8) {
                const int g = 2 * h + l;
                sumi += signed_point_dot(IQ2S_GRID[iq2_s_index(&x[i], g)], x[i].qs[32 + g], q8);
            }
            bsum += (2 * ((x[i].scales[h / 2] >> (4 * (h % 2))) & 0xF) + 1) * sumi;
        }
        sumf += d * (float)bsum;
    }
    return 0.125f * sumf;
}

/* IQ3_XXS: as IQ2_XXS with 4-value points, 1/4 at the end. */
static float ref_dot_iq3_xxs(int64_t n, const void *vw, const void *vx) {
    const block_iq3_xxs *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = fp16_to_f32(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int32_t bsum = 0;
        for (int ib = 0; ib < 8; ++ib) {
            const uint32_t rest = iq3_xxs_rest(&x[i], ib);
            const uint8_t *idx = x[i].qs + 8 * ib;
            int32_t sumi = 0;
            for (int l = 0; l < 4; ++l, q8 += 8)
                sumi += signed_point_dot(iq3_pair(IQ3XXS_GRID[idx[2 * l]], IQ3XXS_GRID[idx[2 * l + 1]]),
                                         iq_sign_bits((rest >> (7 * l)) & 127), q8);
            bsum += sumi * (int32_t)(2 * (rest >> 28) + 1);
        }
        sumf += d * (float)bsum;
    }
    return 0.25f * sumf;
}

/* IQ3_S: integer sums per 32 values times 2 ls + 1, d_x d_y per super-block. */
static float ref_dot_iq3_s(int64_t n, const void *vw, const void *vx) {
    const block_iq3_s *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = fp16_to_f32(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int32_t bsum = 0;
        for (int ib = 0; ib < 8; ++ib) {
            int32_t sumi = 0;
            for (int l = 0; l < 4; ++l, q8 += 8) {
                const int g = 4 * ib + l;
                const uint64_t point = iq3_pair(IQ3S_GRID[iq3_s_index(&x[i], 2 * g)], IQ3S_GRID[iq3_s_index(&x[i], 2 * g + 1)]);
                sumi += signed_point_dot(point, x[i].signs[g], q8);
            }
            bsum += sumi * (2 * ((x[i].scales[ib / 2] >> (4 * (ib % 2))) & 0xF) + 1);
        }
        sumf += d * (float)bsum;
    }
    return sumf;
}

/* IQ1_S: sum(grid * a) per 32 values times the odd scale, plus the shift's 1/8 through the
 * activations' block sums: d_x * d_y * (sumi + 1/8 * sumi1), as ggml. */
static float ref_dot_iq1_s(int64_t n, const void *vw, const void *vx) {
    const block_iq1_s *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const int8_t *q8 = y[i].qs;
        int32_t sumi = 0, sumi1 = 0;
        for (int ib = 0; ib < 8; ++ib) {
            const int qh = x[i].qh[ib];
            const int ls = 2 * ((qh >> 12) & 7) + 1, delta = qh & 0x8000 ? -1 : 1;
            int32_t lsum = 0;
            for (int l = 0; l < 4; ++l, q8 += 8)
                lsum += iq1_point_dot(IQ1S_GRID[x[i].qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)], q8);
            sumi += ls * lsum;
            sumi1 += ls * delta * (y[i].bsums[2 * ib] + y[i].bsums[2 * ib + 1]);
        }
        sumf += fp16_to_f32(x[i].d) * y[i].d * ((float)sumi + IQ1_DELTA * (float)sumi1);
    }
    return sumf;
}

/* IQ1_M: as IQ1_S with a scale per 16 values and a shift per 8 (summed from the quants). */
static float ref_dot_iq1_m(int64_t n, const void *vw, const void *vx) {
    const block_iq1_m *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        uint16_t sc16[4];
        float d;
        iq1_m_scales(&x[i], sc16, &d);
        const int8_t *q8 = y[i].qs;
        int32_t sumi1 = 0, sumi2 = 0;
        for (int h = 0; h < 16; ++h) {
            const int ls = 2 * iq1_m_scale(sc16, h) + 1;
            int32_t sum1 = 0, sum2 = 0;
            for (int l = 0; l < 2; ++l, q8 += 8) {
                const int g = 2 * h + l;
                const int nib = (x[i].qh[g / 2] >> (4 * (g % 2))) & 0xF;
                int32_t asum = 0;
                for (int j = 0; j < 8; ++j) asum += q8[j];
                sum1 += iq1_point_dot(IQ1S_GRID[x[i].qs[g] | ((nib & 7) << 8)], q8);
                sum2 += asum * (nib & 8 ? -1 : 1);
            }
            sumi1 += sum1 * ls;
            sumi2 += sum2 * ls;
        }
        sumf += d * y[i].d * ((float)sumi1 + IQ1_DELTA * (float)sumi2);
    }
    return sumf;
}

/* IQ4_NL against Q8_0: per block of 32, d_a * d_w * sum(level * a). */
static float ref_dot_iq4_nl(int64_t n, const void *vw, const void *vx) {
    const block_iq4_nl *x = vw;
    const block_q8_0 *y = vx;
    float sumf = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        const float d = fp16_to_f32(y[b].d) * fp16_to_f32(x[b].d);
        int32_t sumi1 = 0, sumi2 = 0;
        for (int j = 0; j < 16; ++j) {
            sumi1 += y[b].qs[j] * IQ4_LEVELS[x[b].qs[j] & 0xF];
            sumi2 += y[b].qs[j + 16] * IQ4_LEVELS[x[b].qs[j] >> 4];
        }
        sumf += d * (float)(sumi1 + sumi2);
    }
    return sumf;
}

/* IQ4_XS: ggml's generic code scales each group of 32 in float: d_x d_y (ls - 32) * sum. */
static float ref_dot_iq4_xs(int64_t n, const void *vw, const void *vx) {
    const block_iq4_xs *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d4d8 = fp16_to_f32(x[i].d) * y[i].d;
        for (int ib = 0; ib < 8; ++ib) {
            const uint8_t *qs = x[i].qs + 16 * ib;
            const int8_t *q8 = y[i].qs + 32 * ib;
            const float dl = d4d8 * (float)(iq4_xs_scale(&x[i], ib) - 32);
            int32_t sumi1 = 0, sumi2 = 0;
            for (int j = 0; j < 16; ++j) {
                sumi1 += q8[j] * IQ4_LEVELS[qs[j] & 0xF];
                sumi2 += q8[j + 16] * IQ4_LEVELS[qs[j] >> 4];
            }
            sumf += dl * (float)(sumi1 + sumi2);
        }
    }
    return sumf;
}

/* TQ1_0: sum((trit - 1) * a) per super-block, times d_x * d_y. */
static float ref_dot_tq1_0(int64_t n, const void *vw, const void *vx) {
    const block_tq1_0 *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        const int8_t *q8 = y[i].qs;
        int32_t sum = 0;
        for (int nn = 0; nn < 5; ++nn) {
            for (int m = 0; m < 32; ++m) sum += (tq1_trit(x[i].qs[m], nn) - 1) * q8[32 * nn + m];
            for (int m = 0; m < 16; ++m) sum += (tq1_trit(x[i].qs[32 + m], nn) - 1) * q8[160 + 16 * nn + m];
        }
        for (int nn = 0; nn < 4; ++nn)
            for (int j = 0; j < 4; ++j) sum += (tq1_trit(x[i].qh[j], nn) - 1) * q8[240 + 4 * nn + j];
        sumf += (float)sum * (fp16_to_f32(x[i].d) * y[i].d);
    }
    return sumf;
}

/* TQ2_0: sum((q - 1) * a) per super-block, times d_y * d_x. */
static float ref_dot_tq2_0(int64_t n, const void *vw, const void *vx) {
    const block_tq2_0 *x = vw;
    const block_q8_K *y = vx;
    float sumf = 0;
    for (int64_t i = 0; i < n / 256; ++i) {
        int32_t sumi = 0;
        for (int j = 0; j < 256; ++j) sumi += y[i].qs[j] * (two_bits(x[i].qs, j) - 1);
        sumf += (float)sumi * (y[i].d * fp16_to_f32(x[i].d));
    }
    return sumf;
}

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
    case GGML_TYPE_IQ4_NL: return ref_dot_iq4_nl;
    case GGML_TYPE_IQ4_XS: return ref_dot_iq4_xs;
    case GGML_TYPE_IQ3_S: return ref_dot_iq3_s;
    case GGML_TYPE_IQ3_XXS: return ref_dot_iq3_xxs;
    case GGML_TYPE_IQ2_S: return ref_dot_iq2_s;
    case GGML_TYPE_IQ2_XS: return ref_dot_iq2_xs;
    case GGML_TYPE_IQ2_XXS: return ref_dot_iq2_xxs;
    case GGML_TYPE_IQ1_M: return ref_dot_iq1_m;
    case GGML_TYPE_IQ1_S: return ref_dot_iq1_s;
    case GGML_TYPE_TQ2_0: return ref_dot_tq2_0;
    case GGML_TYPE_TQ1_0: return ref_dot_tq1_0;
    default: return NULL;
    }
}
