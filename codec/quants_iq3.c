/* quants_iq3.c - the 3-bit i-quants IQ3_XXS and IQ3_S, and the ternary types TQ1_0 and TQ2_0
 * (codec/quants_iq.h).
 *
 * IQ3_XXS and IQ3_S store each group of 4 values as a point of a fixed grid (IQ3XXS_GRID: 256
 * points, IQ3S_GRID: 512 points) of 4 levels l in 0..7 each, plus the signs and a 4-bit scale
 * per 32 values under an fp16 super-block scale. The quantizer works with the level values
 * 2l + 1 (1, 3, ..., 15): quantizing a group of 32 means choosing a scale and, for it, the grid
 * point nearest to each 4 magnitudes: round each value to its level, and when those 4 levels are
 * not a grid point, try the pattern's precomputed neighbours on the grid.
 *
 * TQ1_0 and TQ2_0 store d * {-1, 0, 1}: d is the block's largest magnitude and each value is
 * rounded to the nearest of the three; TQ1_0 packs 5 trits per byte, TQ2_0 2 bits per value.
 *
 * Reading order:
 *   1. helpers: rounding, fp16 stores
 *   2. the lattice tables (built once per grid): which of the 8^4 level patterns are grid
 *      points, and the neighbour list of every pattern that is not
 *   3. the group search IQ3_XXS and IQ3_S share
 *   4. IQ3_XXS   5. IQ3_S   6. TQ1_0   7. TQ2_0: quantize and dequantize
 *   8. the kernel tables
 *
 * The algorithms are llama.cpp's (ggml-quants.c, b4747: iq3xs_init_impl, quantize_row_iq3_xxs_impl,
 * quantize_row_iq3_s_impl, quantize_row_tq1_0_ref, quantize_row_tq2_0_ref, dequantize_row_*),
 * rewritten here. Every floating-point expression keeps llama.cpp's order of operations, so the
 * bytes are the same; do not "simplify" the parenthesisation. Where llama.cpp would abort or
 * convert a non-finite or huge float to an integer (NaN or infinite inputs), these kernels take
 * the first neighbour, a clamped level, or the trit 0 instead, and fp16 scales saturate at +-65504
 * (codec/quants.h).
 *
 * Two places where llama.cpp's groups of a row are not independent, and what happens here:
 *   - IQ3_XXS: when no scale of the search gives a positive fit (all weights of the group zero, or
 *     values so small that the sums underflow), llama.cpp keeps the levels and "on the grid" flags
 *     of the previous group of the row. So does this file; at the start of a row (where llama.cpp
 *     reads uninitialised memory) the levels are 0 and the flags "off the grid".
 *   - IQ3_S: llama.cpp advances its write position in qs and signs only for groups it stores, so
 *     after an all-zero group of 32 every later group of the super-block lands one slot early and
 *     decodes wrongly. Here every group is written at its own place: the one difference from
 *     llama.cpp's bytes on finite input, and only in blocks llama.cpp stores corrupted.
 *
 * Without an importance vector (quantize_ref, quantize, importance NULL) the IQ3 types weigh each
 * value by x^2, as ggml's quantize_iq3_xxs / quantize_iq3_s do with NULL quant_weights; the
 * ternary types never use one.
 */
#include "codec/quants_iq.h"
#include "codec/quants_util.h"

#include "codec/blocks.h"
#include "codec/iq_grids.h"
#include "codec/types.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
/* a*b+c must stay two roundings (as in llama.cpp's build), never one fused multiply-add. */
#pragma STDC FP_CONTRACT OFF
#endif

/* ===================================================================== 1. helpers */

#define IQ3_XXS_MAX_EPS 1e-8f /* IQ3_XXS: a group whose largest |x| is below this is zero */
#define MAX_LEVEL 7           /* each coordinate is level 0..7 (value 2l + 1 in the search) */
#define GROUP 32              /* values per 4-bit scale */
#define POINTS (GROUP / 4)    /* grid points per group */

static inline float fmax_first(float a, float b) { return a > b ? a : b; } /* ggml's MAX */

/* The weights of one group of 32: importance * sqrt(sigma2 + x^2) with an importance vector,
 * else x^2; and their square roots, which the neighbour search weighs with. */
static void group_weights(const float *x, const float *importance, float sigma2, float *weight, float *w_sqrt) {
    if (importance)
        for (int i = 0; i < GROUP; ++i) weight[i] = importance[i] * sqrtf(sigma2 + x[i] * x[i]);
    else
        for (int i = 0; i < GROUP; ++i) weight[i] = x[i] * x[i];
    for (int i = 0; i < GROUP; ++i) w_sqrt[i] = sqrtf(weight[i]);
}

/* ===================================================================== 2. lattice tables
 * A group of 4 values rounds to a pattern of 4 levels; there are 8^4 = 4096 patterns, keyed here
 * by l0 + 8 l1 + 64 l2 + 512 l3 (ggml's key). Of those, the grid's points (256 or 512) are stored
 * directly; any other pattern is replaced by one of its neighbours: the grid points at the nwant
 * smallest distinct squared distances from it (nwant 2 for IQ3_XXS, 3 for IQ3_S), sorted by
 * distance, then by grid index (llama.cpp's qsort order, which decides ties in the search). The
 * lists of all patterns are stored back to back.
 *
 * The levels of a grid point come from the grid data: IQ3S_GRID's coordinates are the values
 * 2l + 1 themselves (level = v >> 1); IQ3XXS_GRID's are the dequantization values 4, 12, ..., 52
 * and 62 (level = v >> 3). Entry g of either grid is point g of ggml's search grid. */

#define PATTERNS 4096 /* 8^4 */

typedef struct iq3_lattice {
    /* fixed */
    const uint32_t *grid; /* IQ3XXS_GRID or IQ3S_GRID */
    int size;             /* points in the grid */
    int level_shift;      /* level of a coordinate v: v >> level_shift */
    int nwant;            /* distinct distances kept in each neighbour list */
    uint16_t *neighbours; /* storage for the lists: capacity entries */
    uint32_t capacity;    /* the lists' total length for this grid: what lattice_build writes */
    pthread_once_t once;
    /* filled once by lattice_build */
    uint8_t levels[512][4];       /* levels[g]: the 4 levels of grid point g */
    int16_t point[PATTERNS];      /* grid index of a pattern, or -1 when it is not a grid point */
    uint32_t first[PATTERNS + 1]; /* pattern p's neighbours: neighbours[first[p] .. first[p+1]) */
} iq3_lattice;

static uint16_t XXS_NEIGHBOURS[18985], S_NEIGHBOURS[24733];

static iq3_lattice LATTICE_XXS = {.grid = IQ3XXS_GRID, .size = 256, .level_shift = 3, .nwant = 2,
                                  .neighbours = XXS_NEIGHBOURS, .capacity = 18985, .once = PTHREAD_ONCE_INIT};
static iq3_lattice LATTICE_S = {.grid = IQ3S_GRID, .size = 512, .level_shift = 1, .nwant = 3,
                                .neighbours = S_NEIGHBOURS, .capacity = 24733, .once = PTHREAD_ONCE_INIT};

/* The key of 4 levels (each 0..7). */
static int pattern_key(const int8_t *l) { return l[0] | l[1] << 3 | l[2] << 6 | l[3] << 9; }

/* A grid point's squared distance from a pattern, with its index: what the lists are sorted by. */
typedef struct ranked_point {
    int d2;
    int index;
} ranked_point;

/* qsort order: by distance, then by grid index. */
static int compare_ranked(const void *a, const void *b) {
    const ranked_point *l = a, *r = b;
    if (l->d2 != r->d2) return l->d2 < r->d2 ? -1 : 1;
    return l->index < r->index ? -1 : l->index > r->index ? 1 : 0;
}

/* Fill the tables of lat from its grid. Distances are measured between levels: a quarter of
 * llama.cpp's between the values 2l + 1, so the order is the same. */
static void lattice_build(iq3_lattice *lat) {
    for (int p = 0; p < PATTERNS; ++p) lat->point[p] = -1;
    for (int g = 0; g < lat->size; ++g) {
        int8_t l[4];
        for (int i = 0; i < 4; ++i) {
            lat->levels[g][i] = (uint8_t)((lat->grid[g] >> (8 * i) & 0xFF) >> lat->level_shift);
            l[i] = (int8_t)lat->levels[g][i];
        }
        lat->point[pattern_key(l)] = (int16_t)g;
    }
    ranked_point ranked[512];
    uint32_t count = 0;
    for (int p = 0; p < PATTERNS; ++p) {
        lat->first[p] = count;
        if (lat->point[p] >= 0) continue;
        for (int g = 0; g < lat->size; ++g) {
            int d2 = 0;
            for (int i = 0; i < 4; ++i) {
                const int diff = lat->levels[g][i] - (p >> (3 * i) & 7);
                d2 += diff * diff;
            }
            ranked[g] = (ranked_point){d2, g};
        }
        qsort(ranked, (size_t)lat->size, sizeof ranked[0], compare_ranked);
        /* everything up to the end of the nwant-th distinct distance */
        int distinct = 0, last_d2 = -1;
        for (int j = 0; j < lat->size; ++j) {
            if (ranked[j].d2 != last_d2) {
                if (++distinct > lat->nwant) break;
                last_d2 = ranked[j].d2;
            }
            if (count < lat->capacity) lat->neighbours[count++] = (uint16_t)ranked[j].index;
        }
    }
    lat->first[PATTERNS] = count;
}

static void build_xxs(void) { lattice_build(&LATTICE_XXS); }
static void build_s(void) { lattice_build(&LATTICE_S); }

/* The tables of a grid, built on first use (thread-safe). */
static const iq3_lattice *lattice_xxs(void) {
    pthread_once(&LATTICE_XXS.once, build_xxs);
    return &LATTICE_XXS;
}
static const iq3_lattice *lattice_s(void) {
    pthread_once(&LATTICE_S.once, build_s);
    return &LATTICE_S;
}

/* ===================================================================== 3. the group search */

/* Round 4 magnitudes to levels at inverse scale id (l = round((id x - 1) / 2) in 0..7, the
 * nearest of the values (2l + 1) / id); when the pattern is not a grid point, replace it by its
 * best neighbour at `scale`. L receives the levels; returns whether the rounded pattern was a
 * grid point. */
static bool round_to_grid(const iq3_lattice *lat, const float *xval, const float *w_sqrt, float id, float scale,
                          int8_t *L) {
    for (int i = 0; i < 4; ++i) L[i] = (int8_t)iclamp(nearest_int(0.5f * (id * xval[i] - 1)), 0, MAX_LEVEL);
    const int key = pattern_key(L);
    if (lat->point[key] >= 0) return true;
    iq_best_neighbour(lat->neighbours, lat->first[key], lat->first[key + 1], &lat->levels[0][0], 4, xval, w_sqrt,
                      scale, L);
    return false;
}

/* The grid index of 4 levels. They are always a grid point here (the search only keeps grid
 * points); should they not be, the pattern's first neighbour is taken (llama.cpp aborts). */
static int grid_index(const iq3_lattice *lat, const int8_t *L) {
    const int key = pattern_key(L);
    if (lat->point[key] >= 0) return lat->point[key];
    return lat->neighbours[lat->first[key]];
}

/* The sums of the weighted least-squares fit xval ~ scale * (2L + 1) over a group: scale =
 * sumqx / sumq2, and sumqx^2 / sumq2 is the error it removes. */
static void fit_sums(const float *xval, const float *weight, const int8_t *L, float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int i = 0; i < GROUP; ++i) {
        float w = weight[i];
        float q = 2 * L[i] + 1;
        sx += w * xval[i] * q;
        s2 += w * q * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* How the two types search a group: IQ3_XXS tries 31 scales and re-rounds only the points that
 * were off the grid; IQ3_S tries 19 and re-rounds all of them. */
typedef struct iq3_search {
    int ntry;              /* inverse scales (15 + 0.2 is) / max for is = -ntry..ntry */
    bool requantize_all;   /* after the search, round every point again (else only off-grid ones) */
    bool reset_flags;      /* the "on the grid" flags start each group false (else they are kept) */
} iq3_search;

static const iq3_search SEARCH_XXS = {15, false, false}, SEARCH_S = {9, true, true};

/* What a row's groups pass on to the next (llama.cpp's L and is_on_grid): they matter only when
 * no scale of a group's search gives a positive fit. */
typedef struct iq3_carry {
    int8_t L[GROUP];       /* levels of the last group */
    bool on_grid[POINTS];  /* whether its rounded patterns were grid points */
} iq3_carry;

/* The levels of one group of 32 magnitudes xval (largest max > 0) into c->L, returning the
 * group's scale (the value of level l is scale * (2l + 1)); negative when the fit came out
 * negative (the caller flips the signs). The search: for each inverse scale (15 + 0.2 is) / max,
 * round the 8 points to the grid and keep the best least-squares fit; then round the points again
 * at the best scale and refit. */
static float search_group(const iq3_lattice *lat, const iq3_search *how, const float *xval, float max,
                          const float *weight, const float *w_sqrt, iq3_carry *c) {
    int8_t Laux[GROUP];
    bool on_grid_aux[POINTS];
    float best = 0;
    float scale = max / 15;
    if (how->reset_flags)
        for (int k = 0; k < POINTS; ++k) c->on_grid[k] = false;
    for (int is = -how->ntry; is <= how->ntry; ++is) {
        const float id = (15 + is * 0.2f) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < POINTS; ++k)
            on_grid_aux[k] = round_to_grid(lat, xval + 4 * k, w_sqrt + 4 * k, id, this_scale, Laux + 4 * k);
        float sumqx, sumq2;
        fit_sums(xval, weight, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(c->L, Laux, GROUP);
            memcpy(c->on_grid, on_grid_aux, sizeof on_grid_aux);
        }
    }
    int n_off_grid = 0;
    for (int k = 0; k < POINTS; ++k) n_off_grid += !c->on_grid[k];
    if (n_off_grid > 0 && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < POINTS; ++k) {
            if (!how->requantize_all && c->on_grid[k]) continue;
            round_to_grid(lat, xval + 4 * k, w_sqrt + 4 * k, id, scale, c->L + 4 * k);
        }
        float sumqx, sumq2;
        fit_sums(xval, weight, c->L, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
    }
    return scale;
}

/* The 4-bit code of a group scale against the super-block scale d (id = 1/d): l in 0..15 with
 * (2l + 1) * d nearest to the scale. */
static inline int scale_code(float id, float scale) { return iclamp(nearest_int(0.5f * (id * scale - 1)), 0, 15); }

/* ===================================================================== 4. IQ3_XXS
 * Per 32 values: 8 grid indices (one byte each, the first 64 bytes of qs), then one
 * little-endian uint32 of four 7-bit sign indices and the 4-bit scale (bits 28-31). */

/* One group of 32 values: grid indices and 7-bit signs of its 8 points; returns its scale (>= 0),
 * or -1 for a zero group (largest magnitude below 1e-8: nothing stored, levels reset to 0). */
static float iq3_xxs_group(const iq3_lattice *lat, const float *xb, const float *importance, float sigma2,
                           iq3_carry *c, uint8_t gidx[POINTS], uint8_t signs[4]) {
    float weight[GROUP], w_sqrt[GROUP], xval[GROUP];
    group_weights(xb, importance, sigma2, weight, w_sqrt);
    for (int k = 0; k < 4; ++k) signs[k] = iq_fold_signs(xb + 8 * k, weight + 8 * k, true, xval + 8 * k);
    float max = xval[0];
    for (int i = 1; i < GROUP; ++i) max = fmax_first(max, xval[i]);
    if (max < IQ3_XXS_MAX_EPS) {
        memset(c->L, 0, GROUP);
        return -1.f;
    }
    float scale = search_group(lat, &SEARCH_XXS, xval, max, weight, w_sqrt, c);
    if (scale < 0) { /* cannot happen for finite input; the stored scale must be positive */
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = (uint8_t)(~signs[k] & 127);
    }
    for (int k = 0; k < POINTS; ++k) gidx[k] = (uint8_t)grid_index(lat, c->L + 4 * k);
    return scale;
}

/* One super-block of 256 values. The stored super-block scale is max_scale / 31 enlarged by
 * 1.0125 (the scale codes are computed with the plain one). */
static void iq3_xxs_block(const iq3_lattice *lat, const float *x, const float *importance, iq3_carry *c,
                          block_iq3_xxs *y) {
    uint8_t grid_bytes[QK_K / 4] = {0};
    uint32_t signs_scale[QK_K / GROUP] = {0};
    float scales[QK_K / GROUP];
    float max_scale = 0;
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    for (int ib = 0; ib < QK_K / GROUP; ++ib) {
        uint8_t signs[4];
        const float scale = iq3_xxs_group(lat, x + GROUP * ib, importance ? importance + GROUP * ib : NULL, sigma2, c,
                                          grid_bytes + POINTS * ib, signs);
        if (scale < 0) {
            scales[ib] = 0;
            continue;
        }
        signs_scale[ib] = signs[0] | (uint32_t)signs[1] << 7 | (uint32_t)signs[2] << 14 | (uint32_t)signs[3] << 21;
        scales[ib] = scale;
        max_scale = fmax_first(max_scale, scale);
    }
    y->d = to_half(0.f);
    memset(y->qs, 0, sizeof y->qs);
    if (!max_scale) return;
    const float d = max_scale / 31;
    y->d = to_half(d * 1.0125f);
    const float id = 1 / d;
    memcpy(y->qs, grid_bytes, sizeof grid_bytes);
    for (int ib = 0; ib < QK_K / GROUP; ++ib) {
        const uint32_t v = signs_scale[ib] | (uint32_t)scale_code(id, scales[ib]) << 28;
        for (int b = 0; b < 4; ++b) y->qs[QK_K / 4 + 4 * ib + b] = (uint8_t)(v >> (8 * b));
    }
}

static void quantize_iq3_xxs_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq3_lattice *lat = lattice_xxs();
    block_iq3_xxs *y = vy;
    iq3_carry c = {{0}, {false}};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq3_xxs_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, &c, &y[i]);
}

static void quantize_iq3_xxs(const float *x, void *y, int64_t n) { quantize_iq3_xxs_weighted(x, y, n, NULL); }

/* value = d * (0.5 + scale) / 2 * grid * sign */
static void dequantize_iq3_xxs(const void *vx, float *y, int64_t n) {
    const block_iq3_xxs *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / GROUP; ++ib) {
            const uint8_t *packed = x[i].qs + QK_K / 4 + 4 * ib;
            const uint32_t rest = packed[0] | (uint32_t)packed[1] << 8 | (uint32_t)packed[2] << 16 |
                                  (uint32_t)packed[3] << 24;
            const float db = d * (0.5f + (rest >> 28)) * 0.5f;
            for (int k = 0; k < POINTS; ++k, y += 4) {
                const uint32_t point = IQ3XXS_GRID[x[i].qs[POINTS * ib + k]];
                const uint8_t signs = iq_sign_bits((rest >> (7 * (k / 2))) & 127);
                for (int j = 0; j < 4; ++j)
                    y[j] = db * (uint8_t)(point >> (8 * j)) * (signs >> (4 * (k % 2) + j) & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* ===================================================================== 5. IQ3_S
 * Per 32 values: 8 grid indices of 9 bits (low bytes in qs, 9th bits in one qh byte), 32 sign
 * bits (4 bytes), and a 4-bit scale (two per byte). */

/* IQ3_S: one super-block of 256 values. Its weights, like IQ3_XXS's, use twice the mean square;
 * the stored super-block scale is max_scale / 31 enlarged by 1.033. */
static void iq3_s_block(const iq3_lattice *lat, const float *x, const float *importance, iq3_carry *c,
                        block_iq3_s *y) {
    float scales[QK_K / GROUP], weight[GROUP], w_sqrt[GROUP], xval[GROUP];
    float max_scale = 0;
    memset(y, 0, sizeof *y);
    y->d = to_half(0.f);
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    for (int ib = 0; ib < QK_K / GROUP; ++ib) {
        const float *xb = x + GROUP * ib;
        group_weights(xb, importance ? importance + GROUP * ib : NULL, sigma2, weight, w_sqrt);
        uint8_t signs[4];
        for (int k = 0; k < 4; ++k) signs[k] = iq_fold_signs(xb + 8 * k, weight + 8 * k, false, xval + 8 * k);
        float max = xval[0];
        for (int i = 1; i < GROUP; ++i) max = fmax_first(max, xval[i]);
        if (!max) { /* all zeros: nothing stored (see the top of the file) */
            scales[ib] = 0;
            continue;
        }
        float scale = search_group(lat, &SEARCH_S, xval, max, weight, w_sqrt, c);
        if (scale < 0) { /* cannot happen for finite input; the stored scale must be positive */
            scale = -scale;
            for (int k = 0; k < 4; ++k) signs[k] = (uint8_t)~signs[k];
        }
        for (int k = 0; k < POINTS; ++k) {
            const int g = grid_index(lat, c->L + 4 * k);
            y->qs[POINTS * ib + k] = (uint8_t)(g & 255);
            y->qh[ib] |= (uint8_t)((g >> 8) << k);
        }
        memcpy(y->signs + 4 * ib, signs, 4);
        scales[ib] = scale;
        max_scale = fmax_first(max_scale, scale);
    }
    if (!max_scale) return;
    const float d = max_scale / 31;
    y->d = to_half(d * 1.033f);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / GROUP; ib += 2)
        y->scales[ib / 2] = (uint8_t)(scale_code(id, scales[ib]) | scale_code(id, scales[ib + 1]) << 4);
}

static void quantize_iq3_s_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq3_lattice *lat = lattice_s();
    block_iq3_s *y = vy;
    iq3_carry c = {{0}, {false}};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq3_s_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, &c, &y[i]);
}

static void quantize_iq3_s(const float *x, void *y, int64_t n) { quantize_iq3_s_weighted(x, y, n, NULL); }

/* value = d * (1 + 2 * scale) * grid * sign; index = qs byte | bit k of qh << 8 */
static void dequantize_iq3_s(const void *vx, float *y, int64_t n) {
    const block_iq3_s *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / GROUP; ++ib) {
            const float db = d * (1 + 2 * (x[i].scales[ib / 2] >> (4 * (ib % 2)) & 0xF));
            for (int k = 0; k < POINTS; ++k, y += 4) {
                const uint32_t point = IQ3S_GRID[x[i].qs[POINTS * ib + k] | (x[i].qh[ib] >> k & 1) << 8];
                const uint8_t signs = x[i].signs[4 * ib + k / 2];
                for (int j = 0; j < 4; ++j)
                    y[j] = db * (uint8_t)(point >> (8 * j)) * (signs >> (4 * (k % 2) + j) & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* ===================================================================== 6. TQ1_0
 * 256 values as trits t = q + 1 (0, 1, 2): the first 160 values as 32 bytes of 5 trits (byte m:
 * values m, m+32, ..., m+128), the next 80 as 16 bytes of 5 (byte m: values 160+m, 176+m, ...),
 * the last 16 as 4 bytes of 4 (byte j: values 240+j, 244+j, 248+j, 252+j). A byte holds its
 * trits as a base-3 number (first trit most significant, 4-trit bytes padded with a last 0),
 * scaled from 0..242 to 0..255 by rounding up: byte = ceil(number * 256 / 243), so the k-th trit
 * is the top base-3 digit of (byte * 3^k mod 256) * 3 / 256. */

/* The ternary rounding of llama.cpp's TQ types, lroundf(v) (halves away from zero), as -1, 0
 * or 1; NaN gives 0 and values beyond +-1.5 (impossible for finite input) the nearest end. */
static inline int ternary(float v) {
    if (v != v) return 0;
    if (v > 1.5f) return 1;
    if (v < -1.5f) return -1;
    return (int)lroundf(v);
}

/* The block's scale d (its largest magnitude, ggml's MAX order) and the inverse llama.cpp rounds
 * with (0 when d is 0). */
static float ternary_scale(const float *x, float *id) {
    float amax = 0.0f;
    for (int j = 0; j < QK_K; ++j) amax = fmax_first(amax, fabsf(x[j]));
    *id = amax ? 1.0f / amax : 0.0f;
    return amax;
}

/* A byte of `count` trits of the values x[0], x[stride], ... at inverse scale id, most
 * significant first, padded to 5 trits, scaled to 0..255. */
static uint8_t pack_trits(const float *x, int stride, int count, float id) {
    unsigned q = 0;
    for (int t = 0; t < count; ++t) q = q * 3 + (unsigned)(ternary(x[t * stride] * id) + 1);
    for (int t = count; t < 5; ++t) q *= 3;
    return (uint8_t)((q * 256 + (243 - 1)) / 243);
}

static void quantize_tq1_0(const float *x, void *vy, int64_t n) {
    block_tq1_0 *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float id;
        y[i].d = to_half(ternary_scale(x, &id));
        for (int m = 0; m < 32; ++m) y[i].qs[m] = pack_trits(x + m, 32, 5, id);
        for (int m = 0; m < 16; ++m) y[i].qs[32 + m] = pack_trits(x + 160 + m, 16, 5, id);
        for (int j = 0; j < 4; ++j) y[i].qh[j] = pack_trits(x + 240 + j, 4, 4, id);
    }
}

static void quantize_tq1_0_w(const float *x, void *y, int64_t n, const float *importance) {
    (void)importance; /* llama.cpp ignores it */
    quantize_tq1_0(x, y, n);
}

/* Trit k (0 = most significant) of a packed byte. */
static inline int unpack_trit(uint8_t byte, int k) {
    static const uint8_t POW3[5] = {1, 3, 9, 27, 81};
    const uint8_t q = (uint8_t)(byte * POW3[k]);
    return (q * 3) >> 8;
}

/* value = d * (trit - 1), in the order the bytes hold them */
static void dequantize_tq1_0(const void *vx, float *y, int64_t n) {
    const block_tq1_0 *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 32; ++m) *y++ = (float)(unpack_trit(x[i].qs[m], k) - 1) * d;
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 16; ++m) *y++ = (float)(unpack_trit(x[i].qs[32 + m], k) - 1) * d;
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j) *y++ = (float)(unpack_trit(x[i].qh[j], k) - 1) * d;
    }
}

/* ===================================================================== 7. TQ2_0
 * 256 values as q + 1 (0, 1, 2) in 2 bits, packed as Q2_K: for each half of 128 values, byte m
 * holds values m, m+32, m+64, m+96 in bits 0-1, 2-3, 4-5, 6-7. */

static void quantize_tq2_0(const float *x, void *vy, int64_t n) {
    block_tq2_0 *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float id;
        y[i].d = to_half(ternary_scale(x, &id));
        for (int half = 0; half < 2; ++half)
            for (int m = 0; m < 32; ++m) {
                unsigned q = 0;
                for (int k = 0; k < 4; ++k) q |= (unsigned)(ternary(x[128 * half + m + 32 * k] * id) + 1) << (2 * k);
                y[i].qs[32 * half + m] = (uint8_t)q;
            }
    }
}

static void quantize_tq2_0_w(const float *x, void *y, int64_t n, const float *importance) {
    (void)importance; /* llama.cpp ignores it */
    quantize_tq2_0(x, y, n);
}

/* value = d * (q - 1); a stored 3 (never written) gives 2d, as in llama.cpp */
static void dequantize_tq2_0(const void *vx, float *y, int64_t n) {
    const block_tq2_0 *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int half = 0; half < 2; ++half)
            for (int k = 0; k < 4; ++k)
                for (int m = 0; m < 32; ++m) *y++ = (float)((x[i].qs[32 * half + m] >> (2 * k) & 3) - 1) * d;
    }
}

/* ===================================================================== 8. kernel tables
 * One quantizer per type: the reference, fast and weighted entries are the same function. */

const quant_kernels QUANT_IQ3_XXS = {GGML_TYPE_IQ3_XXS, quantize_iq3_xxs, quantize_iq3_xxs, quantize_iq3_xxs_weighted,
                                     quantize_iq3_xxs_weighted, dequantize_iq3_xxs};
const quant_kernels QUANT_IQ3_S = {GGML_TYPE_IQ3_S, quantize_iq3_s, quantize_iq3_s, quantize_iq3_s_weighted,
                                   quantize_iq3_s_weighted, dequantize_iq3_s};
const quant_kernels QUANT_TQ1_0 = {GGML_TYPE_TQ1_0, quantize_tq1_0, quantize_tq1_0, quantize_tq1_0_w, quantize_tq1_0_w,
                                   dequantize_tq1_0};
const quant_kernels QUANT_TQ2_0 = {GGML_TYPE_TQ2_0, quantize_tq2_0, quantize_tq2_0, quantize_tq2_0_w, quantize_tq2_0_w,
                                   dequantize_tq2_0};
