/* quants_iq2.c - the 2-bit i-quants IQ2_XXS, IQ2_XS and IQ2_S (codec/quants_iq.h).
 *
 * All three store each group of 8 values as a point of a fixed grid (IQ2XXS_GRID, IQ2XS_GRID,
 * IQ2S_GRID: 256, 512 and 1024 points whose coordinates are 8, 25 or 43, i.e. levels 0, 1, 2 of
 * (2l + 1)), plus the 8 signs and a 4-bit scale per 32 (IQ2_XXS) or 16 values (IQ2_XS, IQ2_S)
 * under an fp16 super-block scale. Quantizing a group means choosing a scale and, for it, the
 * grid point nearest to the values: round each value to its level, and when those 8 levels are
 * not a grid point, try the point's precomputed neighbours on the grid.
 *
 * Reading order:
 *   1. helpers: rounding, fp16 stores, weights
 *   2. the lattice tables (built once per grid): which of the 3^8 level patterns are grid
 *      points, and the neighbour list of every pattern that is not
 *   3. the steps every quantizer shares: folding signs, rounding a group to the grid, the
 *      least-squares scale, make_qp_quants
 *   4. IQ2_XXS   5. IQ2_XS   6. IQ2_S: quantize and dequantize
 *   7. the kernel tables
 *
 * The algorithms are llama.cpp's (ggml-quants.c, b4747: iq2xs_init_impl, quantize_row_iq2_*_impl,
 * dequantize_row_iq2_*), rewritten here. Every floating-point expression keeps llama.cpp's
 * order of operations, so the bytes are the same; do not "simplify" the parenthesisation.
 * Where llama.cpp would abort or read out of bounds on garbage (NaN or infinite inputs, all-zero
 * importance), these kernels fall back to a valid grid point instead.
 *
 * Without an importance vector (quantize_ref, quantize, importance NULL) every column gets
 * importance 1: llama-quantize refuses these types without an imatrix (quants_iq.h).
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
#include <string.h>

#ifdef __clang__
/* a*b+c must stay two roundings (as in llama.cpp's build), never one fused multiply-add. */
#pragma STDC FP_CONTRACT OFF
#endif

/* ===================================================================== 1. helpers */

#define IQ2_MAX_EPS 1e-15f   /* IQ2_XXS / IQ2_XS: a group whose largest |x| is below this is zero */
#define IQ2_S_MAX_EPS 1e-8f  /* IQ2_S's threshold */
#define LEVELS 3             /* each coordinate is level 0, 1 or 2 (grid value 2l + 1) */
#define MAX_LEVEL (LEVELS - 1)

/* The weights of n values: importance * sqrt(sigma2 + x^2) (importance 1 when NULL), and their
 * square roots, which the neighbour search weighs with. */
static void group_weights(int n, const float *x, const float *importance, float sigma2, float *weight,
                          float *weight_sqrt) {
    for (int i = 0; i < n; ++i) weight[i] = (importance ? importance[i] : 1.f) * sqrtf(sigma2 + x[i] * x[i]);
    for (int i = 0; i < n; ++i) weight_sqrt[i] = sqrtf(weight[i]);
}

/* ===================================================================== 2. lattice tables
 * A group of 8 values rounds to a pattern of 8 levels; there are 3^8 = 6561 patterns, keyed
 * here by the base-3 number l0 + 3 l1 + 9 l2 + ... Of those, the grid's points (256, 512 or
 * 1024) are stored directly; any other pattern is replaced by one of its neighbours: the grid
 * points at the nwant smallest distinct squared distances from it (nwant 2 for IQ2_XXS and
 * IQ2_XS, 1 for IQ2_S), ordered by distance, then by grid index (llama.cpp's sorted order,
 * which decides ties in the search). The lists of all patterns are stored back to back. */

#define PATTERNS 6561 /* 3^8 */

typedef struct iq2_lattice {
    /* fixed */
    const uint64_t *grid;   /* IQ2*_GRID */
    int size;               /* points in the grid */
    int nwant;              /* distinct distances kept in each neighbour list */
    uint16_t *neighbours;   /* storage for the lists: capacity entries */
    uint32_t capacity;      /* the lists' total length for this grid: what lattice_build writes */
    pthread_once_t once;
    /* filled once by lattice_build */
    uint8_t levels[1024][8];        /* levels[g]: the 8 levels of grid point g */
    int16_t point[PATTERNS];        /* grid index of a pattern, or -1 when it is not a grid point */
    uint32_t first[PATTERNS + 1];   /* pattern p's neighbours: neighbours[first[p] .. first[p+1]) */
} iq2_lattice;

static uint16_t XXS_NEIGHBOURS[113157], XS_NEIGHBOURS[181721], S_NEIGHBOURS[44716];

static iq2_lattice LATTICE_XXS = {.grid = IQ2XXS_GRID, .size = 256, .nwant = 2, .neighbours = XXS_NEIGHBOURS,
                                  .capacity = 113157, .once = PTHREAD_ONCE_INIT};
static iq2_lattice LATTICE_XS = {.grid = IQ2XS_GRID, .size = 512, .nwant = 2, .neighbours = XS_NEIGHBOURS,
                                 .capacity = 181721, .once = PTHREAD_ONCE_INIT};
static iq2_lattice LATTICE_S = {.grid = IQ2S_GRID, .size = 1024, .nwant = 1, .neighbours = S_NEIGHBOURS,
                                .capacity = 44716, .once = PTHREAD_ONCE_INIT};

/* The level of a grid coordinate: 8 -> 0, 25 -> 1, 43 -> 2. */
static int grid_level(uint8_t v) { return v == 8 ? 0 : v == 25 ? 1 : 2; }

/* The key of 8 levels (each 0..2). */
static int pattern_key(const int8_t *l) {
    int key = 0;
    for (int i = 7; i >= 0; --i) key = LEVELS * key + l[i];
    return key;
}

/* Fill the tables of lat from its grid. */
static void lattice_build(iq2_lattice *lat) {
    for (int p = 0; p < PATTERNS; ++p) lat->point[p] = -1;
    for (int g = 0; g < lat->size; ++g) {
        int8_t l[8];
        for (int i = 0; i < 8; ++i) l[i] = (int8_t)(lat->levels[g][i] = (uint8_t)grid_level(iq_grid_byte(lat->grid[g], i)));
        lat->point[pattern_key(l)] = (int16_t)g;
    }
    uint32_t count = 0;
    int dist[1024];
    for (int p = 0; p < PATTERNS; ++p) {
        lat->first[p] = count;
        if (lat->point[p] >= 0) continue;
        int l[8];
        for (int i = 0, rest = p; i < 8; ++i, rest /= LEVELS) l[i] = rest % LEVELS;
        for (int g = 0; g < lat->size; ++g) {
            int d2 = 0;
            for (int i = 0; i < 8; ++i) d2 += (lat->levels[g][i] - l[i]) * (lat->levels[g][i] - l[i]);
            dist[g] = d2;
        }
        /* the nwant smallest distances, each with its points in index order (distances between
         * levels are a quarter of llama.cpp's between the values 2l + 1: the same order) */
        int previous = -1;
        for (int w = 0; w < lat->nwant; ++w) {
            int next = INT32_MAX;
            for (int g = 0; g < lat->size; ++g)
                if (dist[g] > previous && dist[g] < next) next = dist[g];
            for (int g = 0; g < lat->size; ++g)
                if (dist[g] == next && count < lat->capacity) lat->neighbours[count++] = (uint16_t)g;
            previous = next;
        }
    }
    lat->first[PATTERNS] = count;
}

static void build_xxs(void) { lattice_build(&LATTICE_XXS); }
static void build_xs(void) { lattice_build(&LATTICE_XS); }
static void build_s(void) { lattice_build(&LATTICE_S); }

/* The tables of a grid, built on first use (thread-safe). */
static const iq2_lattice *lattice_xxs(void) {
    pthread_once(&LATTICE_XXS.once, build_xxs);
    return &LATTICE_XXS;
}
static const iq2_lattice *lattice_xs(void) {
    pthread_once(&LATTICE_XS.once, build_xs);
    return &LATTICE_XS;
}
static const iq2_lattice *lattice_s(void) {
    pthread_once(&LATTICE_S.once, build_s);
    return &LATTICE_S;
}

/* ===================================================================== 3. shared steps */

/* (quants_util.h) */
uint8_t iq_fold_signs(const float *x, const float *weight, bool even, float *xval) {
    int nflip = 0;
    uint8_t s = 0;
    for (int i = 0; i < 8; ++i) {
        if (x[i] >= 0) {
            xval[i] = x[i];
        } else {
            xval[i] = -x[i];
            ++nflip;
            s |= (uint8_t)(1 << i);
        }
    }
    if (!even) return s;
    if (nflip % 2) {
        int least = 0;
        float min = weight[0] * x[0] * x[0];
        for (int i = 1; i < 8; ++i) {
            float v = weight[i] * x[i] * x[i];
            if (v < min) {
                min = v;
                least = i;
            }
        }
        xval[least] = -xval[least];
        s ^= (uint8_t)(1 << least);
    }
    return s & 127;
}

/* (quants_util.h) */
int iq_best_neighbour(const uint16_t *neighbours, uint32_t begin, uint32_t end, const uint8_t *levels, int dim,
                      const float *xval, const float *w_sqrt, float scale, int8_t *L) {
    float best_d2 = FLT_MAX;
    int best = neighbours[begin];
    for (uint32_t j = begin; j < end; ++j) {
        const uint8_t *lv = levels + (size_t)dim * neighbours[j];
        float d2 = 0;
        for (int i = 0; i < dim; ++i) {
            float q = 2 * lv[i] + 1;
            float diff = scale * q - xval[i];
            d2 += w_sqrt[i] * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            best = neighbours[j];
        }
    }
    for (int i = 0; i < dim; ++i) L[i] = (int8_t)levels[(size_t)dim * best + i];
    return best;
}

/* Round 8 magnitudes to levels at inverse scale id (l = round((id x - 1) / 2) in 0..2, the
 * nearest of the values (2l + 1) / id); when the pattern is not a grid point, replace it by
 * its best neighbour at `scale`. L receives the levels; returns whether the rounded pattern
 * was a grid point. */
static bool round_to_grid(const iq2_lattice *lat, const float *xval, const float *w_sqrt, float id, float scale,
                          int8_t *L) {
    for (int i = 0; i < 8; ++i) L[i] = (int8_t)imax(0, imin(MAX_LEVEL, nearest_int(0.5f * (id * xval[i] - 1))));
    const int key = pattern_key(L);
    if (lat->point[key] >= 0) return true;
    iq_best_neighbour(lat->neighbours, lat->first[key], lat->first[key + 1], &lat->levels[0][0], 8, xval, w_sqrt,
                      scale, L);
    return false;
}

/* The grid index of 8 levels. They are always a grid point for finite input; otherwise (levels
 * beyond 2 or off the grid, only with garbage input, where llama.cpp aborts) the levels are
 * clamped and the pattern's nearest neighbour is taken. */
static int grid_index(const iq2_lattice *lat, const int8_t *L) {
    int8_t l[8];
    for (int i = 0; i < 8; ++i) l[i] = (int8_t)imax(0, imin(MAX_LEVEL, L[i]));
    const int key = pattern_key(l);
    if (lat->point[key] >= 0) return lat->point[key];
    return lat->neighbours[lat->first[key]];
}

/* The sums of the weighted least-squares fit xval ~ scale * (2L + 1): scale = sumqx / sumq2,
 * and sumqx^2 / sumq2 is the error it removes. */
static void fit_sums(int n, const float *xval, const float *weight, const int8_t *L, float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
        float w = weight[i];
        float q = 2 * L[i] + 1;
        sx += w * xval[i] * q;
        s2 += w * q * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* The 4-bit code of a group scale against the super-block scale d (id = 1/d): the nearest
 * (0.5 + l) * d, l in 0..15. */
static inline int scale_code(float id, float scale) { return imax(0, imin(15, nearest_int(0.5f * (id * scale - 1)))); }

/* ===================================================================== 4. IQ2_XXS
 * Per 32 values: 4 grid points of IQ2XXS_GRID, 4 x 7 sign bits, one 4-bit scale. */

/* One group of 32 values: grid indices and 7-bit signs of its 4 points; returns its scale
 * (>= 0). The first guess is make_qp_quants' scale for levels 0..4 ("eff_max" = 3 steps of it);
 * 13 inverse scales (5 +- 0.1 .. 0.6) / eff_max are tried, rounding to the grid at each and
 * keeping the best least-squares fit; then all 4 points are rounded again at the best scale
 * and the scale refit. */
static float iq2_xxs_group(const iq2_lattice *lat, const float *xb, const float *importance, float sigma2,
                           int gidx[4], uint8_t signs[4]) {
    float weight[32], w_sqrt[32], xval[32];
    int8_t L[32], Laux[32];
    group_weights(32, xb, importance, sigma2, weight, w_sqrt);
    for (int k = 0; k < 4; ++k) signs[k] = iq_fold_signs(xb + 8 * k, weight + 8 * k, true, xval + 8 * k);
    float max = xval[0];
    for (int i = 1; i < 32; ++i) max = max > xval[i] ? max : xval[i];
    if (max < IQ2_MAX_EPS) {
        for (int k = 0; k < 4; ++k) gidx[k] = signs[k] = 0;
        return 0.f;
    }
    float scale = make_qp_quants(32, 4, xval, (uint8_t *)L, weight);
    const float eff_max = scale * 3;
    float best = 0;
    for (int is = -6; is <= 6; ++is) {
        const float id = (5 + is * 0.1f) / eff_max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 4; ++k) round_to_grid(lat, xval + 8 * k, w_sqrt + 8 * k, id, this_scale, Laux + 8 * k);
        float sumqx, sumq2;
        fit_sums(32, xval, weight, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(L, Laux, 32);
        }
    }
    if (scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 4; ++k) round_to_grid(lat, xval + 8 * k, w_sqrt + 8 * k, id, scale, L + 8 * k);
        float sumqx, sumq2;
        fit_sums(32, xval, weight, L, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
    }
    if (scale < 0) { /* cannot happen for finite input; the stored scale must be positive */
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = (uint8_t)(~signs[k] & 127);
    }
    for (int k = 0; k < 4; ++k) gidx[k] = grid_index(lat, L + 8 * k);
    return scale;
}

/* One super-block of 256 values. */
static void iq2_xxs_block(const iq2_lattice *lat, const float *x, const float *importance, block_iq2_xxs *y) {
    uint32_t q2[2 * (QK_K / 32)] = {0}; /* per 32 values: grid indices, then signs | scale << 28 */
    float scales[QK_K / 32];
    float max_scale = 0;
    const float sigma2 = sum_sq(x, QK_K) / QK_K;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        int gidx[4];
        uint8_t signs[4];
        const float scale = iq2_xxs_group(lat, x + 32 * ib, importance ? importance + 32 * ib : NULL, sigma2, gidx, signs);
        for (int k = 0; k < 4; ++k) {
            q2[2 * ib] |= (uint32_t)gidx[k] << (8 * k);
            q2[2 * ib + 1] |= (uint32_t)signs[k] << (7 * k);
        }
        scales[ib] = scale;
        max_scale = max_scale > scale ? max_scale : scale;
    }
    y->d = to_half(0.f);
    if (!max_scale) {
        memset(y->qs, 0, sizeof y->qs);
        return;
    }
    const float d = max_scale / 31;
    y->d = to_half(d);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 32; ++ib) q2[2 * ib + 1] |= (uint32_t)scale_code(id, scales[ib]) << 28;
    for (int j = 0; j < 2 * (QK_K / 32); ++j) {
        y->qs[2 * j] = (uint16_t)(q2[j] & 0xFFFF);
        y->qs[2 * j + 1] = (uint16_t)(q2[j] >> 16);
    }
}

static void quantize_iq2_xxs_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq2_lattice *lat = lattice_xxs();
    block_iq2_xxs *y = vy;
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq2_xxs_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, &y[i]);
}

static void quantize_iq2_xxs(const float *x, void *y, int64_t n) { quantize_iq2_xxs_weighted(x, y, n, NULL); }

/* value = d * (0.5 + scale) / 4 * grid * sign */
static void dequantize_iq2_xxs(const void *vx, float *y, int64_t n) {
    const block_iq2_xxs *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const uint32_t points = x[i].qs[4 * ib] | (uint32_t)x[i].qs[4 * ib + 1] << 16;
            const uint32_t rest = x[i].qs[4 * ib + 2] | (uint32_t)x[i].qs[4 * ib + 3] << 16;
            const float db = d * (0.5f + (rest >> 28)) * 0.25f;
            for (int k = 0; k < 4; ++k, y += 8) {
                const uint64_t point = IQ2XXS_GRID[(points >> (8 * k)) & 255];
                const uint8_t signs = iq_sign_bits((rest >> (7 * k)) & 127);
                for (int j = 0; j < 8; ++j) y[j] = db * iq_grid_byte(point, j) * (signs >> j & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* ===================================================================== 5. IQ2_XS and IQ2_S
 * Per 16 values: 2 grid points, their signs and one 4-bit scale. IQ2_XS (IQ2XS_GRID) keeps 7 sign
 * bits of an even count and packs index | signs << 9 into a uint16; IQ2_S (IQ2S_GRID, 10-bit
 * indices) keeps all 8 sign bits. The group search is the same for both. */

typedef struct pair_params {
    bool even_signs; /* IQ2_XS: 7 stored sign bits, even count */
    float max_eps;   /* a group with a smaller largest magnitude is zero */
} pair_params;

static const pair_params PAIR_XS = {true, IQ2_MAX_EPS}, PAIR_S = {false, IQ2_S_MAX_EPS};

/* One group of 16 values (weights given): grid indices and signs of its 2 points; returns its
 * scale (>= 0), or -1 for a zero group (nothing to store). 19 inverse scales (5 +- 0.1 .. 0.9) /
 * max are tried, rounding to the grid at each and keeping the best least-squares fit; the points
 * that were off the grid are then rounded again at the best scale and the scale refit.
 * L holds the levels between calls (llama.cpp keeps them across groups; they matter only when
 * no fit is positive, which needs zero weights). */
static float iq2_pair_group(const iq2_lattice *lat, const pair_params *pp, const float *xb, const float *weight,
                            const float *w_sqrt, int8_t L[16], int gidx[2], uint8_t signs[2]) {
    float xval[16];
    int8_t Laux[16];
    bool on_grid[2] = {true, true}, on_grid_aux[2];
    for (int k = 0; k < 2; ++k) signs[k] = iq_fold_signs(xb + 8 * k, weight + 8 * k, pp->even_signs, xval + 8 * k);
    float max = xval[0];
    for (int i = 1; i < 16; ++i) max = max > xval[i] ? max : xval[i];
    if (max < pp->max_eps) return -1.f;
    float best = 0;
    float scale = max / 5;
    for (int is = -9; is <= 9; ++is) {
        const float id = (5 + is * 0.1f) / max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 2; ++k)
            on_grid_aux[k] = round_to_grid(lat, xval + 8 * k, w_sqrt + 8 * k, id, this_scale, Laux + 8 * k);
        float sumqx, sumq2;
        fit_sums(16, xval, weight, Laux, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            memcpy(L, Laux, 16);
            on_grid[0] = on_grid_aux[0];
            on_grid[1] = on_grid_aux[1];
        }
    }
    if ((!on_grid[0] || !on_grid[1]) && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 2; ++k)
            if (!on_grid[k]) round_to_grid(lat, xval + 8 * k, w_sqrt + 8 * k, id, scale, L + 8 * k);
        float sumqx, sumq2;
        fit_sums(16, xval, weight, L, &sumqx, &sumq2);
        if (sumq2 > 0) scale = sumqx / sumq2;
    }
    if (scale < 0) { /* cannot happen for finite input; the stored scale must be positive */
        scale = -scale;
        for (int k = 0; k < 2; ++k) signs[k] = (uint8_t)(pp->even_signs ? ~signs[k] & 127 : ~signs[k]);
    }
    for (int k = 0; k < 2; ++k) gidx[k] = grid_index(lat, L + 8 * k);
    return scale;
}

/* IQ2_XS: one super-block of 256 values. L: levels kept between groups (iq2_pair_group). */
static void iq2_xs_block(const iq2_lattice *lat, const float *x, const float *importance, int8_t L[16],
                         block_iq2_xs *y) {
    float scales[QK_K / 16], weight[16], w_sqrt[16];
    uint16_t q2[QK_K / 8] = {0};
    float max_scale = 0;
    y->d = to_half(0.f);
    memset(y->scales, 0, sizeof y->scales);
    const float sigma2 = sum_sq(x, QK_K) / QK_K;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float *xb = x + 16 * ib;
        group_weights(16, xb, importance ? importance + 16 * ib : NULL, sigma2, weight, w_sqrt);
        int gidx[2];
        uint8_t signs[2];
        const float scale = iq2_pair_group(lat, &PAIR_XS, xb, weight, w_sqrt, L, gidx, signs);
        if (scale < 0) { /* zero group (IQ2_XS, unlike IQ2_S, also resets the kept levels) */
            scales[ib] = 0;
            memset(L, 0, 16);
            continue;
        }
        for (int k = 0; k < 2; ++k) q2[2 * ib + k] = (uint16_t)(gidx[k] | signs[k] << 9);
        scales[ib] = scale;
        max_scale = max_scale > scale ? max_scale : scale;
    }
    if (!max_scale) {
        memset(y->qs, 0, sizeof y->qs);
        return;
    }
    const float d = max_scale / 31;
    y->d = to_half(d);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib / 2] |= (uint8_t)(scale_code(id, scales[ib]) << (4 * (ib % 2)));
    memcpy(y->qs, q2, sizeof y->qs);
}

static void quantize_iq2_xs_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq2_lattice *lat = lattice_xs();
    block_iq2_xs *y = vy;
    int8_t L[16] = {0};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq2_xs_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, L, &y[i]);
}

static void quantize_iq2_xs(const float *x, void *y, int64_t n) { quantize_iq2_xs_weighted(x, y, n, NULL); }

/* value = d * (0.5 + scale) / 4 * grid * sign, one scale per 16 values */
static void dequantize_iq2_xs(const void *vx, float *y, int64_t n) {
    const block_iq2_xs *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const float db[2] = {d * (0.5f + (x[i].scales[ib] & 0xF)) * 0.25f,
                                 d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f};
            for (int k = 0; k < 4; ++k, y += 8) {
                const uint16_t q = x[i].qs[4 * ib + k];
                const uint64_t point = IQ2XS_GRID[q & 511];
                const uint8_t signs = iq_sign_bits(q >> 9);
                for (int j = 0; j < 8; ++j) y[j] = db[k / 2] * iq_grid_byte(point, j) * (signs >> j & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* IQ2_S: one super-block of 256 values. Its weights use twice the mean square, and the stored
 * super-block scale is shrunk by 0.9875 (the scale codes are computed with the unshrunk one). */
static void iq2_s_block(const iq2_lattice *lat, const float *x, const float *importance, int8_t L[16],
                        block_iq2_s *y) {
    float scales[QK_K / 16], weight[16], w_sqrt[16];
    float max_scale = 0;
    memset(y, 0, sizeof *y);
    y->d = to_half(0.f);
    const float sigma2 = 2 * sum_sq(x, QK_K) / QK_K;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float *xb = x + 16 * ib;
        if (importance) {
            group_weights(16, xb, importance + 16 * ib, sigma2, weight, w_sqrt);
        } else { /* llama.cpp's quantize_row_iq2_s_ref has its own weights without an imatrix */
            for (int j = 0; j < 16; ++j) weight[j] = 0.25f * sigma2 + xb[j] * xb[j];
            for (int j = 0; j < 16; ++j) w_sqrt[j] = sqrtf(weight[j]);
        }
        int gidx[2];
        uint8_t signs[2];
        const float scale = iq2_pair_group(lat, &PAIR_S, xb, weight, w_sqrt, L, gidx, signs);
        if (scale < 0) { /* zero group */
            scales[ib] = 0;
            continue;
        }
        for (int k = 0; k < 2; ++k) {
            const int i8 = 2 * ib + k; /* which group of 8 */
            y->qs[i8] = (uint8_t)(gidx[k] & 255);
            y->qh[i8 / 4] |= (uint8_t)((gidx[k] >> 8) << (2 * (i8 % 4)));
            y->qs[QK_K / 8 + i8] = signs[k];
        }
        scales[ib] = scale;
        max_scale = max_scale > scale ? max_scale : scale;
    }
    if (!max_scale) return;
    const float d = max_scale / 31;
    y->d = to_half(d * 0.9875f);
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib / 2] |= (uint8_t)(scale_code(id, scales[ib]) << (4 * (ib % 2)));
}

static void quantize_iq2_s_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq2_lattice *lat = lattice_s();
    block_iq2_s *y = vy;
    int8_t L[16] = {0};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq2_s_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, L, &y[i]);
}

static void quantize_iq2_s(const float *x, void *y, int64_t n) { quantize_iq2_s_weighted(x, y, n, NULL); }

/* value = d * (0.5 + scale) / 4 * grid * sign; index = qs byte | 2 bits of qh << 8 */
static void dequantize_iq2_s(const void *vx, float *y, int64_t n) {
    const block_iq2_s *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        const uint8_t *signs = x[i].qs + QK_K / 8;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const float db[2] = {d * (0.5f + (x[i].scales[ib] & 0xF)) * 0.25f,
                                 d * (0.5f + (x[i].scales[ib] >> 4)) * 0.25f};
            for (int k = 0; k < 4; ++k, y += 8) {
                const int i8 = 4 * ib + k;
                const uint64_t point = IQ2S_GRID[x[i].qs[i8] | ((x[i].qh[ib] >> (2 * k)) & 3) << 8];
                for (int j = 0; j < 8; ++j)
                    y[j] = db[k / 2] * iq_grid_byte(point, j) * (signs[i8] >> j & 1 ? -1.f : 1.f);
            }
        }
    }
}

/* ===================================================================== 7. kernel tables
 * One quantizer per type: the reference, fast and weighted entries are the same function. */

const quant_kernels QUANT_IQ2_XXS = {GGML_TYPE_IQ2_XXS, quantize_iq2_xxs, quantize_iq2_xxs, quantize_iq2_xxs_weighted,
                                     quantize_iq2_xxs_weighted, dequantize_iq2_xxs};
const quant_kernels QUANT_IQ2_XS = {GGML_TYPE_IQ2_XS, quantize_iq2_xs, quantize_iq2_xs, quantize_iq2_xs_weighted,
                                    quantize_iq2_xs_weighted, dequantize_iq2_xs};
const quant_kernels QUANT_IQ2_S = {GGML_TYPE_IQ2_S, quantize_iq2_s, quantize_iq2_s, quantize_iq2_s_weighted,
                                   quantize_iq2_s_weighted, dequantize_iq2_s};
