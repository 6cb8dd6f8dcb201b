/* quants_iq1.c - the 1-bit i-quants IQ1_S and IQ1_M (codec/quants_iq.h).
 *
 * Both store each group of 8 values as a point of IQ1S_GRID (2048 points whose coordinates are
 * -1, 0 or 1, i.e. levels 0, 1, 2), shifted as a whole by +1/8 or -1/8 (IQ1_DELTA), times a 3-bit
 * odd scale (1, 3, ..., 15) per 32 values (IQ1_S) or 16 values (IQ1_M), times an fp16 super-block
 * scale. IQ1_S stores one shift sign per 32 values, IQ1_M one per group of 8.
 *
 * Quantizing a sub-block (32 or 16 values) solves the weighted least-squares problem over the
 * three levels exactly: with the values sorted, every choice of two boundaries i1 <= i2 (the
 * smallest i1 values go to level 0, the next to level 1, the rest to level 2) and every choice
 * of shift signs is scored, and the best scale comes with it. The levels of each group of 8 then
 * form a pattern; when the pattern is not a grid point, the nearest grid point is searched among
 * the pattern's precomputed neighbours.
 *
 * Reading order:
 *   1. helpers: rounding, fp16 stores, weights, the sorted order of a sub-block
 *   2. the lattice tables of IQ1S_GRID (built once): which of the 3^8 level patterns are grid
 *      points, and the neighbour list of every pattern that is not
 *   3. rounding a group of 8 levels to a grid point
 *   4. IQ1_S   5. IQ1_M: quantize and dequantize
 *   6. the kernel tables
 *
 * The algorithms are llama.cpp's (ggml-quants.c, b4747: iq2xs_init_impl for the 2048-point grid,
 * quantize_row_iq1_s_impl, quantize_row_iq1_m_impl, iq1_find_best_neighbour2,
 * dequantize_row_iq1_s / _m), rewritten here. Every floating-point expression keeps llama.cpp's
 * order of operations so the bytes are the same; do not "simplify" the parenthesisation.
 *
 * Where llama.cpp aborts or reads out of bounds (all weights of a sub-block zero, NaN or
 * infinite inputs), these kernels quantize the sub-block as llama.cpp quantizes an all-zero one
 * (or take the first neighbour) instead. A sub-block below the zero threshold keeps, as in
 * llama.cpp, the shift sign of the same sub-block of the previous super-block of the row (where
 * llama.cpp would read a stale or uninitialised value at the start of a row, "+" here).
 *
 * Without an importance vector (quantize_ref, quantize, importance NULL): IQ1_S, which ggml
 * cannot quantize without one, gives every column importance 1; IQ1_M weighs by x^2 as ggml's
 * quantize_iq1_m does (quants_iq.h). llama-quantize refuses both without an imatrix.
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

#define IQ1S_BLOCK 32          /* IQ1_S: values per 3-bit scale (and per shift sign) */
#define IQ1M_BLOCK 16          /* IQ1_M: values per 3-bit scale */
#define IQ1S_MAX_EPS 1e-12f    /* IQ1_S: a sub-block whose largest |x| is below this is zero */
#define IQ1M_MAX_EPS 1e-7f     /* IQ1_M's threshold */
#define LEVELS 3               /* each coordinate is level 0, 1 or 2 (grid value -1, 0, 1) */

/* The shifted level values: a level l stands for l - 1 + 1/8 (shift "+") or l - 1 - 1/8 ("-"). */
static const float SHIFT_PLUS[LEVELS] = {-1 + IQ1_DELTA, IQ1_DELTA, 1 + IQ1_DELTA};
static const float SHIFT_MINUS[LEVELS] = {-1 - IQ1_DELTA, -IQ1_DELTA, 1 - IQ1_DELTA};

static inline float fmax_first(float a, float b) { return a > b ? a : b; } /* ggml's MAX */

/* llama.cpp's sigma2 of a super-block: twice the mean of x^2 (summed in order). */
static float superblock_sigma2(const float *x) {
    float sumx2 = 0;
    for (int i = 0; i < QK_K; ++i) sumx2 += x[i] * x[i];
    return 2 * sumx2 / QK_K;
}

/* The weights of n values: importance * sqrt(sigma2 + x^2), importance 1 when NULL. */
static void sub_block_weights(int n, const float *x, const float *importance, float sigma2, float *weight) {
    for (int i = 0; i < n; ++i) weight[i] = (importance ? importance[i] : 1.f) * sqrtf(sigma2 + x[i] * x[i]);
}

/* IQ1_M's weights: as above with an importance; without one, x^2 (ggml's quantize_iq1_m). */
static void iq1_m_weights(int n, const float *x, const float *importance, float sigma2, float *weight) {
    if (importance) {
        sub_block_weights(n, x, importance, sigma2, weight);
        return;
    }
    for (int i = 0; i < n; ++i) weight[i] = x[i] * x[i];
}

/* The largest |x| of n values (ggml's MAX fold, first value first). */
static float largest_abs(int n, const float *x) {
    float max = fabsf(x[0]);
    for (int i = 1; i < n; ++i) max = fmax_first(max, fabsf(x[i]));
    return max;
}

/* A value and its position, sorted by value. */
typedef struct sorted_value {
    float x;
    int index;
} sorted_value;

static int by_value(const void *a, const void *b) {
    const float l = ((const sorted_value *)a)->x, r = ((const sorted_value *)b)->x;
    return l < r ? -1 : l > r ? 1 : 0;
}

/* The positions of n values in ascending order of value. The tie order must be llama.cpp's:
 * it sorts {value, position} pairs with qsort and this comparator, from the same input order,
 * which glibc's qsort (a merge sort) resolves the same way here. */
static void sort_values(int n, const float *x, sorted_value *order) {
    for (int j = 0; j < n; ++j) order[j] = (sorted_value){x[j], j};
    qsort(order, (size_t)n, sizeof *order, by_value);
}

/* ===================================================================== 2. lattice tables
 * A group of 8 values becomes a pattern of 8 levels; there are 3^8 = 6561 patterns, keyed here
 * by the base-3 number l0 + 3 l1 + 9 l2 + ... The grid's 2048 points are stored directly; any
 * other pattern is replaced by one of its neighbours: the grid points at the 3 smallest distinct
 * squared distances from it, ordered by distance, then by grid index (llama.cpp's sorted
 * order, which decides ties in the search). Grid point g is the pattern of its coordinates + 1,
 * which is also ggml's kgrid_1bit_2048[g]. The lists of all patterns are stored back to back. */

#define PATTERNS 6561           /* 3^8 */
#define NEIGHBOUR_DISTANCES 3   /* distinct distances kept per list (ggml's nwant for IQ1) */
#define NEIGHBOURS_TOTAL 327721 /* the lists' total length, a fact of IQ1S_GRID */

typedef struct iq1_lattice {
    uint8_t levels[IQ1S_GRID_SIZE][8]; /* levels[g]: the 8 levels of grid point g */
    int16_t point[PATTERNS];           /* grid index of a pattern, or -1 when it is not a grid point */
    uint32_t first[PATTERNS + 1];      /* pattern p's neighbours: neighbours[first[p] .. first[p+1]) */
    uint16_t neighbours[NEIGHBOURS_TOTAL];
} iq1_lattice;

static iq1_lattice LATTICE;
static pthread_once_t LATTICE_ONCE = PTHREAD_ONCE_INIT;

/* The key of 8 levels (each 0..2). */
static int pattern_key(const uint8_t *l) {
    int key = 0;
    for (int i = 7; i >= 0; --i) key = LEVELS * key + l[i];
    return key;
}

/* Fill LATTICE from IQ1S_GRID. */
static void lattice_build(void) {
    iq1_lattice *lat = &LATTICE;
    for (int p = 0; p < PATTERNS; ++p) lat->point[p] = -1;
    for (int g = 0; g < IQ1S_GRID_SIZE; ++g) {
        for (int i = 0; i < 8; ++i) lat->levels[g][i] = (uint8_t)((int8_t)iq_grid_byte(IQ1S_GRID[g], i) + 1);
        lat->point[pattern_key(lat->levels[g])] = (int16_t)g;
    }
    uint32_t count = 0;
    uint8_t dist[IQ1S_GRID_SIZE];
    for (int p = 0; p < PATTERNS; ++p) {
        lat->first[p] = count;
        if (lat->point[p] >= 0) continue;
        int l[8];
        for (int i = 0, rest = p; i < 8; ++i, rest /= LEVELS) l[i] = rest % LEVELS;
        bool present[8 * 4 + 1] = {false}; /* squared distances are 0..32 */
        for (int g = 0; g < IQ1S_GRID_SIZE; ++g) {
            int d2 = 0;
            for (int i = 0; i < 8; ++i) d2 += (lat->levels[g][i] - l[i]) * (lat->levels[g][i] - l[i]);
            dist[g] = (uint8_t)d2;
            present[d2] = true;
        }
        /* the smallest distances first, each with its points in index order */
        for (int d2 = 0, kept = 0; d2 <= 8 * 4 && kept < NEIGHBOUR_DISTANCES; ++d2) {
            if (!present[d2]) continue;
            ++kept;
            for (int g = 0; g < IQ1S_GRID_SIZE; ++g)
                if (dist[g] == d2 && count < NEIGHBOURS_TOTAL) lat->neighbours[count++] = (uint16_t)g;
        }
    }
    lat->first[PATTERNS] = count;
}

/* The tables, built on first use (thread-safe). */
static const iq1_lattice *lattice(void) {
    pthread_once(&LATTICE_ONCE, lattice_build);
    return &LATTICE;
}

/* ===================================================================== 3. rounding a group */

/* The grid point for one group of 8 values xb (weights weight) whose levels are L, at scale
 * `scale` with shifted level values xs: the pattern itself when it is a grid point, else the
 * neighbour with the least weighted squared error sum w (scale * xs[level] - x)^2 (the first on
 * ties: llama.cpp's iq1_find_best_neighbour2). *on_grid tells which. */
static int group_point(const iq1_lattice *lat, const uint8_t *L, const float *xb, const float *weight,
                       float scale, const float *xs, bool *on_grid) {
    const int key = pattern_key(L);
    *on_grid = lat->point[key] >= 0;
    if (*on_grid) return lat->point[key];
    const uint32_t begin = lat->first[key], end = lat->first[key + 1];
    float best_d2 = FLT_MAX;
    int best = -1;
    for (uint32_t n = begin; n < end; ++n) {
        const uint8_t *pl = lat->levels[lat->neighbours[n]];
        float d2 = 0;
        for (int i = 0; i < 8; ++i) {
            const float q = xs[pl[i]];
            const float w = weight[i];
            const float diff = scale * q - xb[i];
            d2 += w * diff * diff;
        }
        if (d2 < best_d2) {
            best_d2 = d2;
            best = lat->neighbours[n];
        }
    }
    /* only NaN or overflowing errors leave no winner (llama.cpp then reads out of bounds) */
    return best >= 0 ? best : lat->neighbours[begin];
}

/* The least-squares scale of a sub-block once its groups are grid points: sum w q x / sum w q^2
 * over the groups in order (q = the point's shifted level value, xs_of[k] for group k), or
 * `scale` unchanged when either sum is not positive. */
static float refit_scale(const iq1_lattice *lat, int ngroups, const uint16_t *index, const float *const *xs_of,
                         const float *xb, const float *weight, float scale) {
    float sumqx = 0, sumq2 = 0;
    for (int k = 0; k < ngroups; ++k) {
        const uint8_t *pl = lat->levels[index[k]];
        for (int j = 0; j < 8; ++j) {
            const float w = weight[8 * k + j];
            const float q = xs_of[k][pl[j]];
            sumqx += w * q * xb[8 * k + j];
            sumq2 += w * q * q;
        }
    }
    return sumqx > 0 && sumq2 > 0 ? sumqx / sumq2 : scale;
}

/* The levels of a sub-block from its sorted order and the two boundaries: the i1 smallest values
 * get level 0, the next i2 - i1 level 1, the rest level 2. */
static void levels_from_split(int n, const sorted_value *order, int i1, int i2, uint8_t *L) {
    for (int j = 0; j < n; ++j) L[order[j].index] = (uint8_t)(j < i1 ? 0 : j < i2 ? 1 : 2);
}

/* ===================================================================== 4. IQ1_S
 * Per 32 values: one shift sign, found with the split by the exhaustive search (prefix sums of
 * w x and w over the sorted values make each of the 561 splits O(1)). */

/* One sub-block of 32: its 4 grid indices, scale and shift (+1 or -1). Returns false when the
 * search found nothing (all weights zero, or NaN): llama.cpp aborts there. */
static bool iq1_s_sub_block(const iq1_lattice *lat, const float *xb, const float *weight, uint16_t index[4],
                            float *scale_out, int *shift_out) {
    sorted_value order[IQ1S_BLOCK];
    float sumx[IQ1S_BLOCK + 1], sumw[IQ1S_BLOCK + 1];
    sort_values(IQ1S_BLOCK, xb, order);
    sumx[0] = sumw[0] = 0;
    for (int j = 0; j < IQ1S_BLOCK; ++j) {
        const int i = order[j].index;
        sumx[j + 1] = sumx[j] + weight[i] * xb[i];
        sumw[j + 1] = sumw[j] + weight[i];
    }
    const float *const shifted[2] = {SHIFT_PLUS, SHIFT_MINUS};
    float best_score = -FLT_MIN, scale = 0;
    int besti1 = -1, besti2 = -1, shift = 0;
    for (int i1 = 0; i1 <= IQ1S_BLOCK; ++i1)
        for (int i2 = i1; i2 <= IQ1S_BLOCK; ++i2)
            for (int s = 0; s < 2; ++s) {
                const float *xs = shifted[s];
                const float sumqx = (sumx[i1] - sumx[0]) * xs[0] + (sumx[i2] - sumx[i1]) * xs[1] +
                                    (sumx[IQ1S_BLOCK] - sumx[i2]) * xs[2];
                const float sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0] + (sumw[i2] - sumw[i1]) * xs[1] * xs[1] +
                                    (sumw[IQ1S_BLOCK] - sumw[i2]) * xs[2] * xs[2];
                if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    besti1 = i1;
                    besti2 = i2;
                    shift = s == 0 ? 1 : -1;
                }
            }
    if (besti1 < 0) return false;
    uint8_t L[IQ1S_BLOCK];
    levels_from_split(IQ1S_BLOCK, order, besti1, besti2, L);
    if (scale < 0) { /* mirror: levels 0 <-> 2, the shift flips with them */
        for (int j = 0; j < IQ1S_BLOCK; ++j) L[j] = (uint8_t)(2 - L[j]);
        scale = -scale;
        shift = -shift;
    }
    const float *xs = shift == 1 ? SHIFT_PLUS : SHIFT_MINUS;
    bool all_on_grid = true;
    for (int k = 0; k < IQ1S_BLOCK / 8; ++k) {
        bool on_grid;
        index[k] = (uint16_t)group_point(lat, L + 8 * k, xb + 8 * k, weight + 8 * k, scale, xs, &on_grid);
        all_on_grid = all_on_grid && on_grid;
    }
    if (!all_on_grid) {
        const float *const xs_of[4] = {xs, xs, xs, xs};
        scale = refit_scale(lat, IQ1S_BLOCK / 8, index, xs_of, xb, weight, scale);
    }
    *scale_out = scale;
    *shift_out = shift;
    return true;
}

/* One super-block of 256 values. shifts[8] carries the shift signs from the previous
 * super-block of the row (used by sub-blocks that quantize to zero, as in llama.cpp). */
static void iq1_s_block(const iq1_lattice *lat, const float *x, const float *importance, block_iq1_s *y,
                        int shifts[QK_K / IQ1S_BLOCK]) {
    float scales[QK_K / IQ1S_BLOCK], weight[IQ1S_BLOCK];
    y->d = to_half(0.f);
    memset(y->qs, 0, sizeof y->qs);
    memset(y->qh, 0, sizeof y->qh);
    const float sigma2 = superblock_sigma2(x);
    float max_scale = 0;
    for (int ib = 0; ib < QK_K / IQ1S_BLOCK; ++ib) {
        const float *xb = x + IQ1S_BLOCK * ib;
        sub_block_weights(IQ1S_BLOCK, xb, importance ? importance + IQ1S_BLOCK * ib : NULL, sigma2, weight);
        uint16_t index[4];
        float scale;
        int shift;
        if (largest_abs(IQ1S_BLOCK, xb) < IQ1S_MAX_EPS || !iq1_s_sub_block(lat, xb, weight, index, &scale, &shift)) {
            scales[ib] = 0; /* grid index 0 stays in place, the shift sign is the stale one */
            continue;
        }
        uint16_t h = 0;
        for (int k = 0; k < 4; ++k) {
            y->qs[4 * ib + k] = (uint8_t)(index[k] & 255);
            h |= (uint16_t)((index[k] >> 8) << (3 * k));
        }
        y->qh[ib] = h;
        scales[ib] = scale;
        shifts[ib] = shift;
        max_scale = fmax_first(max_scale, scale);
    }
    if (!max_scale) return;
    const float d = max_scale / 15;
    y->d = to_half(d * 1.125f); /* llama.cpp's empirical correction */
    const float id = 1 / d;
    for (int ib = 0; ib < QK_K / IQ1S_BLOCK; ++ib) {
        int l = iclamp(nearest_int(0.5f * (id * scales[ib] - 1)), 0, 7);
        if (shifts[ib] == -1) l |= 8;
        y->qh[ib] |= (uint16_t)(l << 12);
    }
}

static void quantize_iq1_s_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq1_lattice *lat = lattice();
    block_iq1_s *y = vy;
    int shifts[QK_K / IQ1S_BLOCK] = {0};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq1_s_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, &y[i], shifts);
}

static void quantize_iq1_s(const float *x, void *y, int64_t n) { quantize_iq1_s_weighted(x, y, n, NULL); }

static void dequantize_iq1_s(const void *vx, float *y, int64_t n) {
    const block_iq1_s *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_f32(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const uint16_t qh = x[i].qh[ib];
            const float dl = d * (2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
            for (int k = 0; k < 4; ++k, y += 8) {
                const uint64_t point = IQ1S_GRID[x[i].qs[4 * ib + k] | (((qh >> (3 * k)) & 7) << 8)];
                for (int j = 0; j < 8; ++j) y[j] = dl * ((int8_t)iq_grid_byte(point, j) + delta);
            }
        }
    }
}

/* ===================================================================== 5. IQ1_M
 * Per 16 values: two groups of 8, each with its own shift sign, so the exhaustive search scores
 * 4 sign choices per split: k = 0 (+,+), 1 (+,-), 2 (-,+), 3 (-,-) for (first group, second
 * group). The sums are accumulated value by value in sorted order for every split, as llama.cpp
 * does (prefix sums as in IQ1_S would round differently); only the products are formed once. The
 * 3-bit scales are packed 4 per uint16 of
 * `scales`, and the fp16 super-block scale (refit over the whole super-block once the 3-bit
 * scales are fixed) goes in the top nibbles of those 4 uint16. */

/* The qh bits of the shift choices k: bit 3 = first group "-", bit 7 = second group "-". */
static const uint8_t SHIFT_BITS[4] = {0x00, 0x80, 0x08, 0x88};

/* The shifted level values of group g (0, 1) of a sub-block under shift choice k. */
static const float *group_shift(int k, int g) {
    const bool plus = g == 0 ? k < 2 : k % 2 == 0;
    return plus ? SHIFT_PLUS : SHIFT_MINUS;
}

/* One sub-block of 16: its 2 grid indices, scale and shift choice k. Returns false when the
 * search found nothing (all weights zero, or NaN): llama.cpp aborts there. */
static bool iq1_m_sub_block(const iq1_lattice *lat, const float *xb, const float *weight, uint16_t index[2],
                            float *scale_out, int *shift_out) {
    sorted_value order[IQ1M_BLOCK];
    sort_values(IQ1M_BLOCK, xb, order);
    /* The terms w q x and w q^2 of the value at sorted position j for each level and shift
     * choice: the same products llama.cpp forms inside its loop, formed once. */
    float term_qx[IQ1M_BLOCK][LEVELS][4], term_q2[IQ1M_BLOCK][LEVELS][4];
    for (int j = 0; j < IQ1M_BLOCK; ++j) {
        const int i = order[j].index;
        for (int level = 0; level < LEVELS; ++level)
            for (int k = 0; k < 4; ++k) {
                const float q = group_shift(k, i >= IQ1M_BLOCK / 2)[level];
                term_qx[j][level][k] = weight[i] * q * xb[i];
                term_q2[j][level][k] = weight[i] * q * q;
            }
    }
    float best_score = -FLT_MIN, scale = 0;
    int besti1 = -1, besti2 = -1, best_k = -1;
    for (int i1 = 0; i1 <= IQ1M_BLOCK; ++i1)
        for (int i2 = i1; i2 <= IQ1M_BLOCK; ++i2) {
            float sumqx[4] = {0}, sumq2[4] = {0};
            for (int j = 0; j < IQ1M_BLOCK; ++j) {
                const int level = j < i1 ? 0 : j < i2 ? 1 : 2;
                for (int k = 0; k < 4; ++k) {
                    sumqx[k] += term_qx[j][level][k];
                    sumq2[k] += term_q2[j][level][k];
                }
            }
            for (int k = 0; k < 4; ++k)
                if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    besti1 = i1;
                    besti2 = i2;
                    best_k = k;
                }
        }
    if (besti1 < 0) return false;
    uint8_t L[IQ1M_BLOCK];
    levels_from_split(IQ1M_BLOCK, order, besti1, besti2, L);
    if (scale < 0) { /* mirror: levels 0 <-> 2, both shifts flip (k 0 <-> 3, 1 <-> 2) */
        for (int j = 0; j < IQ1M_BLOCK; ++j) L[j] = (uint8_t)(2 - L[j]);
        scale = -scale;
        best_k = 3 - best_k;
    }
    const float *const xs_of[2] = {group_shift(best_k, 0), group_shift(best_k, 1)};
    bool all_on_grid = true;
    for (int k = 0; k < 2; ++k) {
        bool on_grid;
        index[k] = (uint16_t)group_point(lat, L + 8 * k, xb + 8 * k, weight + 8 * k, scale, xs_of[k], &on_grid);
        all_on_grid = all_on_grid && on_grid;
    }
    if (!all_on_grid) scale = refit_scale(lat, 2, index, xs_of, xb, weight, scale);
    *scale_out = scale;
    *shift_out = best_k;
    return true;
}

/* One super-block of 256 values. shifts[16] carries the shift choices from the previous
 * super-block of the row (used by sub-blocks that quantize to zero, as in llama.cpp). */
static void iq1_m_block(const iq1_lattice *lat, const float *x, const float *importance, block_iq1_m *y,
                        int shifts[QK_K / IQ1M_BLOCK]) {
    float scales[QK_K / IQ1M_BLOCK], weight[IQ1M_BLOCK];
    memset(y->qs, 0, sizeof y->qs);
    memset(y->qh, 0, sizeof y->qh);
    memset(y->scales, 0, sizeof y->scales);
    const float sigma2 = superblock_sigma2(x);
    float max_scale = 0;
    for (int ib = 0; ib < QK_K / IQ1M_BLOCK; ++ib) {
        const float *xb = x + IQ1M_BLOCK * ib;
        iq1_m_weights(IQ1M_BLOCK, xb, importance ? importance + IQ1M_BLOCK * ib : NULL, sigma2, weight);
        uint16_t index[2];
        float scale;
        int k;
        if (largest_abs(IQ1M_BLOCK, xb) < IQ1M_MAX_EPS || !iq1_m_sub_block(lat, xb, weight, index, &scale, &k)) {
            scales[ib] = 0; /* grid index 0 stays in place, the shift choice is the stale one */
            continue;
        }
        y->qs[2 * ib + 0] = (uint8_t)(index[0] & 255);
        y->qs[2 * ib + 1] = (uint8_t)(index[1] & 255);
        y->qh[ib] = (uint8_t)((index[0] >> 8) | ((index[1] >> 8) << 4));
        scales[ib] = scale;
        shifts[ib] = k;
        max_scale = fmax_first(max_scale, scale);
    }
    if (!max_scale) return;
    /* the 3-bit scales against max_scale / 15, then the super-block scale refit to them */
    uint16_t sc[4] = {0};
    float d = max_scale / 15;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < QK_K / IQ1M_BLOCK; ++ib) {
        const int l = iclamp(nearest_int(0.5f * (id * scales[ib] - 1)), 0, 7);
        sc[ib / 4] |= (uint16_t)(l << (3 * (ib % 4)));
        y->qh[ib] |= SHIFT_BITS[shifts[ib]];
        const float *xb = x + IQ1M_BLOCK * ib;
        iq1_m_weights(IQ1M_BLOCK, xb, importance ? importance + IQ1M_BLOCK * ib : NULL, sigma2, weight);
        for (int g = 0; g < 2; ++g) {
            const float *xs = group_shift(shifts[ib], g);
            const uint8_t *pl = lat->levels[y->qs[2 * ib + g] | (((y->qh[ib] >> (4 * g)) & 7) << 8)];
            for (int j = 0; j < 8; ++j) {
                const float w = weight[8 * g + j];
                const float q = xs[pl[j]] * (2 * l + 1);
                sumqx += w * q * xb[8 * g + j];
                sumq2 += w * q * q;
            }
        }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    const uint16_t s = to_half(d * 1.1125f); /* llama.cpp's empirical correction */
    sc[0] |= (uint16_t)((s & 0x000f) << 12);
    sc[1] |= (uint16_t)((s & 0x00f0) << 8);
    sc[2] |= (uint16_t)((s & 0x0f00) << 4);
    sc[3] |= (uint16_t)(s & 0xf000);
    for (int j = 0; j < 4; ++j) {
        y->scales[2 * j] = (uint8_t)(sc[j] & 0xff);
        y->scales[2 * j + 1] = (uint8_t)(sc[j] >> 8);
    }
}

static void quantize_iq1_m_weighted(const float *x, void *vy, int64_t n, const float *importance) {
    const iq1_lattice *lat = lattice();
    block_iq1_m *y = vy;
    int shifts[QK_K / IQ1M_BLOCK] = {0};
    for (int64_t i = 0; i < n / QK_K; ++i)
        iq1_m_block(lat, x + QK_K * i, importance ? importance + QK_K * i : NULL, &y[i], shifts);
}

static void quantize_iq1_m(const float *x, void *y, int64_t n) { quantize_iq1_m_weighted(x, y, n, NULL); }

static void dequantize_iq1_m(const void *vx, float *y, int64_t n) {
    const block_iq1_m *x = vx;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        uint16_t sc[4];
        for (int j = 0; j < 4; ++j) sc[j] = (uint16_t)(x[i].scales[2 * j] | (x[i].scales[2 * j + 1] << 8));
        const uint16_t dbits =
            (uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
        const float d = fp16_to_f32(dbits);
        for (int ib = 0; ib < QK_K / IQ1M_BLOCK; ++ib) { /* 16 values: two groups of 8 */
            const float dl = d * (2 * ((sc[ib / 4] >> (3 * (ib % 4))) & 7) + 1);
            const uint8_t qh = x[i].qh[ib];
            for (int g = 0; g < 2; ++g, y += 8) {
                const uint64_t point = IQ1S_GRID[x[i].qs[2 * ib + g] | (((qh >> (4 * g)) & 7) << 8)];
                const float delta = (qh >> (4 * g)) & 8 ? -IQ1_DELTA : IQ1_DELTA;
                for (int j = 0; j < 8; ++j) y[j] = dl * ((int8_t)iq_grid_byte(point, j) + delta);
            }
        }
    }
}

/* ===================================================================== 6. kernel tables */

const quant_kernels QUANT_IQ1_S = {
    .type = GGML_TYPE_IQ1_S,
    .quantize_ref = quantize_iq1_s,
    .quantize = quantize_iq1_s,
    .quantize_weighted = quantize_iq1_s_weighted,
    .quantize_weighted_ref = quantize_iq1_s_weighted,
    .dequantize = dequantize_iq1_s,
};

const quant_kernels QUANT_IQ1_M = {
    .type = GGML_TYPE_IQ1_M,
    .quantize_ref = quantize_iq1_m,
    .quantize = quantize_iq1_m,
    .quantize_weighted = quantize_iq1_m_weighted,
    .quantize_weighted_ref = quantize_iq1_m_weighted,
    .dequantize = dequantize_iq1_m,
};
