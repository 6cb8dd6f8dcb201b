/* gptq.c - GPTQ onto ggml block types, and Hessians from a calibration text (see gptq.h). */
#include "gptq.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/mman.h>

#include "eval/llm.h"
#include "eval/ranks.h"
#include "eval/text.h"
#include "eval/tokenizer.h"
#include "formats/fileio.h"
#include "codec/dots.h"
#include "codec/quants.h"
#include "codec/types.h"

#define TILE_ROWS 16 /* rows one thread carries through the column sweep together (reuses U rows) */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ================================================================ linear algebra */

/* s - sum of x[k] y[k] over k in [k0, k1), subtracted in order: a Cholesky entry. */
static double sub_dot(double s, const double *x, const double *y, int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; k++) s -= x[k] * y[k];
    return s;
}

/* x[k] y[k] over k in [k0, k1), added in order from 0: an entry of L^-1 or of M^T M. */
static double dot(const double *x, const double *y, int64_t k0, int64_t k1) {
    double s = 0;
    for (int64_t k = k0; k < k1; k++) s += x[k] * y[k];
    return s;
}

/* The reference: column after column, one dot product at a time. */
int gptq_cholesky_ref(double *a, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double *aj = a + j * n;
        const double d = sub_dot(aj[j], aj, aj, 0, j);
        if (!(d > 0) || !isfinite(d)) return -1;
        double ljj = sqrt(d);
        aj[j] = ljj;
        /* column j below the diagonal: every row i reads only rows i and j, so rows are independent */
#pragma omp parallel for schedule(static) if (n - j > 128)
        for (int64_t i = j + 1; i < n; i++) {
            double *ai = a + i * n;
            ai[j] = sub_dot(ai[j], ai, aj, 0, j) / ljj;
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
    return 0;
}

/* The reference: M = L^-1 column by column, then A^-1 = M^T M, one dot product at a time. */
int gptq_spd_inverse_ref(double *a, int64_t n) {
    if (gptq_cholesky_ref(a, n) != 0) return -1;
    /* M = L^-1 (lower triangular), column by column; then A^-1 = M^T M */
    double *m = calloc((size_t)(n * n), sizeof *m);
    if (!m) return -1;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t j = 0; j < n; j++) {
        m[j * n + j] = 1.0 / a[j * n + j];
        for (int64_t i = j + 1; i < n; i++) {
            double s = 0;
            for (int64_t k = j; k < i; k++) s += a[i * n + k] * m[k * n + j];
            m[i * n + j] = -s / a[i * n + i];
        }
    }
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            double s = 0;
            for (int64_t k = j; k < n; k++) s += m[k * n + i] * m[k * n + j]; /* k >= max(i, j) = j */
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    free(m);
    return 0;
}

/* The faster loops: INV_B dot products at once, as independent chains that share one of their
 * two loads, each entry adding the reference's products in the reference's order. Cholesky
 * takes the columns INV_B at a time: first the block's own rows one entry at a time, then
 * every row below, its INV_B entries together over the columns left of the block and one by
 * one within it. The inverse keeps M transposed (mt, row j = column j of M), so every dot
 * product reads two rows in order; a chain that starts before its first product (the shared
 * loop starts at the block's first index) only adds products with the zeros above M's
 * diagonal, and +0 plus +-0 is +0, the value the reference's sum starts from. */
enum { INV_B = 8 };
#define INV_UNROLL _Pragma("GCC unroll 8") /* the INV_B chains stay in registers */

int gptq_cholesky(double *a, int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += INV_B) {
        const bool whole = n - j0 >= INV_B;
        const int64_t j1 = whole ? j0 + INV_B : n;
        for (int64_t j = j0; j < j1; j++) { /* the block's rows */
            double *aj = a + j * n;
            const double d = sub_dot(aj[j], aj, aj, 0, j);
            if (!(d > 0) || !isfinite(d)) return -1;
            aj[j] = sqrt(d);
            for (int64_t i = j + 1; i < j1; i++) {
                double *ai = a + i * n;
                ai[j] = sub_dot(ai[j], ai, aj, 0, j) / aj[j];
            }
        }
        /* the rows below: each reads only itself and the block's rows, so rows are independent */
#pragma omp parallel for schedule(static) if (n - j1 > 128)
        for (int64_t i = j1; i < n; i++) {
            double *ai = a + i * n;
            if (!whole) {
                for (int64_t j = j0; j < j1; j++) ai[j] = sub_dot(ai[j], ai, a + j * n, 0, j) / a[j * n + j];
                continue;
            }
            double s[INV_B];
            INV_UNROLL
            for (int b = 0; b < INV_B; b++) s[b] = ai[j0 + b];
            for (int64_t k = 0; k < j0; k++) {
                const double aik = ai[k];
                INV_UNROLL
                for (int b = 0; b < INV_B; b++) s[b] -= aik * a[(j0 + b) * n + k];
            }
            for (int b = 0; b < INV_B; b++) {
                const double *aj = a + (j0 + b) * n;
                ai[j0 + b] = sub_dot(s[b], ai, aj, j0, j0 + b) / aj[j0 + b];
            }
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
    return 0;
}

/* mt = (L^-1)^T for the lower-triangular L in a; mt zeroed on entry. */
static void lower_inverse_t(const double *a, int64_t n, double *mt) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j0 = 0; j0 < n; j0 += INV_B) {
        const bool whole = n - j0 >= INV_B;
        const int64_t j1 = whole ? j0 + INV_B : n;
        for (int64_t j = j0; j < j1; j++) mt[j * n + j] = 1.0 / a[j * n + j];
        for (int64_t i = j0 + 1; i < n; i++) {
            const double *ai = a + i * n;
            if (i < j1 || !whole) { /* beside the diagonal: the block's columns left of i, one by one */
                for (int64_t j = j0; j < j1 && j < i; j++) mt[j * n + i] = -dot(ai, mt + j * n, j, i) / ai[i];
                continue;
            }
            double s[INV_B] = {0};
            for (int64_t k = j0; k < i; k++) {
                const double aik = ai[k];
                INV_UNROLL
                for (int b = 0; b < INV_B; b++) s[b] += aik * mt[(j0 + b) * n + k];
            }
            INV_UNROLL
            for (int b = 0; b < INV_B; b++) mt[(j0 + b) * n + i] = -s[b] / ai[i];
        }
    }
}

/* a = M^T M from mt = M^T: a[i][j] = a[j][i] = sum over k >= j of mt[i][k] mt[j][k], j >= i. */
static void rows_gram(const double *mt, int64_t n, double *a) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i0 = 0; i0 < n; i0 += INV_B) {
        const bool whole = n - i0 >= INV_B;
        const int64_t i1 = whole ? i0 + INV_B : n;
        for (int64_t j = i0; j < n; j++) {
            const double *mj = mt + j * n;
            if (j < i1 || !whole) { /* beside the diagonal: the block's rows up to j, one by one */
                for (int64_t i = i0; i < i1 && i <= j; i++) a[i * n + j] = a[j * n + i] = dot(mt + i * n, mj, j, n);
                continue;
            }
            double s[INV_B] = {0};
            for (int64_t k = j; k < n; k++) {
                const double mjk = mj[k];
                INV_UNROLL
                for (int b = 0; b < INV_B; b++) s[b] += mt[(i0 + b) * n + k] * mjk;
            }
            INV_UNROLL
            for (int b = 0; b < INV_B; b++) {
                a[(i0 + b) * n + j] = s[b];
                a[j * n + i0 + b] = s[b];
            }
        }
    }
}

int gptq_spd_inverse(double *a, int64_t n) {
    if (gptq_cholesky(a, n) != 0) return -1;
    double *mt = calloc((size_t)(n * n), sizeof *mt);
    if (!mt) return -1;
    lower_inverse_t(a, n, mt);
    rows_gram(mt, n, a);
    free(mt);
    return 0;
}

/* ================================================================ Hessians */

int gptq_hessian_init(gptq_hessian *hs, int64_t n, slmc_err *err) {
    memset(hs, 0, sizeof *hs);
    hs->h = calloc((size_t)(n * n), sizeof *hs->h);
    if (!hs->h) return slmc_fail(err, NULL, "out of memory for a %lld x %lld Hessian", (long long)n, (long long)n);
    hs->n = n;
    return 0;
}

void gptq_hessian_free(gptq_hessian *hs) {
    free(hs->h);
    memset(hs, 0, sizeof *hs);
}

void gptq_hessian_add(gptq_hessian *hs, const float *x, int n_tokens) {
    const int64_t n = hs->n;
    /* upper triangle only; row i is owned by one thread, tokens added in order: deterministic */
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t i = 0; i < n; i++) {
        double *hi = hs->h + i * n;
        for (int t = 0; t < n_tokens; t++) {
            const float *xt = x + (int64_t)t * n;
            double xi = xt[i];
            if (xi == 0) continue;
            for (int64_t j = i; j < n; j++) hi[j] += xi * xt[j];
        }
    }
    hs->n_tokens += n_tokens;
}

/* Row i of the packed upper triangle starts at i*n - i(i-1)/2; entry (i, j >= i) is j - i further. */
static size_t packed_row(int64_t n, int64_t i) { return (size_t)(i * n - i * (i - 1) / 2); }

size_t gptq_packed_len(int64_t n) { return (size_t)n * (size_t)(n + 1) / 2; }

/* ---- dst += a^T b, the sums behind every Hessian (gptq.h: gptq_gram_add) */

/* Entry (i, j) of dst: row i of the packed upper triangle (j >= i), or of the full n x n. */
static double *gram_row(double *dst, int64_t n, bool packed, int64_t i) {
    return packed ? dst + packed_row(n, i) - i : dst + i * n;
}

/* The plain loop: entries (i, j) for i in [i0, i1), j in [j0, j1) (j >= i when packed), each
 * adding tokens [t0, t1) in order. */
static void gram_block_ref(double *dst, int64_t n, const float *a, const float *b, bool packed, int64_t i0,
                           int64_t i1, int64_t j0, int64_t j1, int t0, int t1) {
    for (int64_t i = i0; i < i1; i++) {
        double *di = gram_row(dst, n, packed, i);
        const int64_t js = packed && j0 < i ? i : j0;
        for (int t = t0; t < t1; t++) {
            const double ai = a[(int64_t)t * n + i];
            if (ai == 0) continue;
            const float *bt = b + (int64_t)t * n;
            for (int64_t j = js; j < j1; j++) di[j] += ai * bt[j];
        }
    }
}

/* The reference: every row in the plain loop, each row owned by one thread. */
static void gram_add_ref(double *dst, int64_t n, const float *a, const float *b, int n_tokens, bool packed) {
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t i = 0; i < n; i++) gram_block_ref(dst, n, a, b, packed, i, i + 1, 0, n, 0, n_tokens);
}

/* The register tiles: GR rows x GC columns of dst stay in 16 registers while GT tokens pass,
 * each token one FMA per 8 entries. a and b are first copied as doubles in panels of GC
 * columns, token after token ([panel][token][GC]), so a tile reads both in order. Every entry
 * still adds its tokens in order, and a float times a float is exact in double, so the FMA
 * rounds as the plain loop's multiply and add. The plain loop skips a token whose a value is 0;
 * with finite values that changes nothing (adding +-0 leaves a sum that is not -0 as it is,
 * and a sum from zero is never -0), so the tiles run only when every value is finite. */
enum { GR = 4, GC = 32, GT = 64 };

#define GRAM_AVX512 __attribute__((target("avx512f,fma")))
#define GRAM_UNROLL _Pragma("GCC unroll 16") /* every loop over the tile: it stays in registers */

GRAM_AVX512 static void gram_tile(double *const rows[GR], int64_t c0, const double *ap, const double *bp, int t0,
                                  int t1) {
    __m512d acc[GR][GC / 8];
    GRAM_UNROLL
    for (int r = 0; r < GR; r++)
        GRAM_UNROLL
        for (int k = 0; k < GC / 8; k++) acc[r][k] = _mm512_loadu_pd(rows[r] + c0 + 8 * k);
    for (int t = t0; t < t1; t++) {
        __m512d bv[GC / 8];
        GRAM_UNROLL
        for (int k = 0; k < GC / 8; k++) bv[k] = _mm512_loadu_pd(bp + (int64_t)t * GC + 8 * k);
        GRAM_UNROLL
        for (int r = 0; r < GR; r++) {
            const __m512d av = _mm512_set1_pd(ap[(int64_t)t * GC + r]);
            GRAM_UNROLL
            for (int k = 0; k < GC / 8; k++) acc[r][k] = _mm512_fmadd_pd(av, bv[k], acc[r][k]);
        }
    }
    GRAM_UNROLL
    for (int r = 0; r < GR; r++)
        GRAM_UNROLL
        for (int k = 0; k < GC / 8; k++) _mm512_storeu_pd(rows[r] + c0 + 8 * k, acc[r][k]);
}

/* x [T][n] -> xp [n / GC][T][GC] as doubles */
static void gram_panels(const float *x, int64_t n, int T, double *xp) {
    const int64_t np = n / GC;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < np; p++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < GC; c++) xp[(p * T + t) * GC + c] = x[(int64_t)t * n + p * GC + c];
}

static bool all_finite(const float *x, size_t n) {
    bool ok = true;
    for (size_t i = 0; i < n; i++) ok &= isfinite(x[i]) != 0;
    return ok;
}

static bool gram_add_tiles(double *dst, int64_t n, const float *a, const float *b, int T, bool packed) {
    const int64_t np = n / GC, nc = np * GC; /* panels; columns (and rows) they cover */
    if (np == 0 || !kern_cpu_has_avx512() || !all_finite(a, (size_t)T * (size_t)n) ||
        (b != a && !all_finite(b, (size_t)T * (size_t)n)))
        return false;
    double *bp = malloc(sizeof *bp * (size_t)T * (size_t)nc);
    double *ap = b == a ? bp : malloc(sizeof *ap * (size_t)T * (size_t)nc);
    if (!bp || !ap) {
        free(bp);
        if (ap != bp) free(ap);
        return false;
    }
    gram_panels(b, n, T, bp);
    if (ap != bp) gram_panels(a, n, T, ap);
    /* one column panel per unit of work; with the triangle, the later panels have more rows */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t q = 0; q < np; q++) {
        const int64_t p = packed ? np - 1 - q : q, c0 = p * GC;
        const int64_t r_end = packed ? c0 + GC : nc; /* rows below have no entry here */
        for (int t0 = 0; t0 < T; t0 += GT) {
            const int t1 = T - t0 < GT ? T : t0 + GT;
            for (int64_t r0 = 0; r0 < r_end; r0 += GR) {
                if (packed && r0 + GR - 1 > c0) { /* the diagonal crosses the tile */
                    gram_block_ref(dst, n, a, b, true, r0, r0 + GR, c0, c0 + GC, t0, t1);
                    continue;
                }
                double *rows[GR];
                for (int r = 0; r < GR; r++) rows[r] = gram_row(dst, n, packed, r0 + r);
                gram_tile(rows, c0, ap + (r0 / GC) * (int64_t)T * GC + r0 % GC, bp + p * (int64_t)T * GC, t0, t1);
            }
        }
    }
    /* the edges: columns past the panels (every row), and rows past them (every column) */
    if (nc < n) {
#pragma omp parallel for schedule(dynamic, 8)
        for (int64_t i = 0; i < n; i++)
            gram_block_ref(dst, n, a, b, packed, i, i + 1, i < nc ? nc : 0, n, 0, T);
    }
    free(bp);
    if (ap != bp) free(ap);
    return true;
}

bool gptq_gram_add(double *dst, int64_t n, const float *a, const float *b, int n_tokens, bool packed, bool fast) {
    if (n_tokens <= 0 || n <= 0) return false;
    if (fast && gram_add_tiles(dst, n, a, b, n_tokens, packed)) return true;
    gram_add_ref(dst, n, a, b, n_tokens, packed);
    return false;
}

void gptq_packed_add(double *p, int64_t n, const float *x, int n_tokens) {
    gptq_gram_add(p, n, x, x, n_tokens, true, true);
}

void gptq_packed_unpack(const double *p, int64_t n, double *h) {
    for (int64_t i = 0; i < n; i++) {
        const double *pi = p + packed_row(n, i) - i;
        for (int64_t j = 0; j < i; j++) h[i * n + j] = 0;
        memcpy(h + i * n + i, pi + i, (size_t)(n - i) * sizeof *h);
    }
}

/* Copy the upper triangle onto the lower one (the collection fills only the upper). */
static void symmetrise(double *h, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) h[j * n + i] = h[i * n + j];
}

/* (H + lambda I)^-1 = U^T U: try the given damping, then ten and a hundred times more. */
static int factor_damped(const double *h, int64_t n, double lambda, const bool *dead, double *u) {
    for (int attempt = 0; attempt < 4; attempt++, lambda *= 10) {
        memcpy(u, h, (size_t)(n * n) * sizeof *u);
        for (int64_t i = 0; i < n; i++) {
            if (dead[i]) u[i * n + i] = 1; /* never-active input: decoupled, weight kept */
            u[i * n + i] += lambda;
        }
        if (gptq_spd_inverse(u, n) != 0) continue;
        if (gptq_cholesky(u, n) != 0) continue; /* lower L of H^-1; U = L^T */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) {
                u[i * n + j] = u[j * n + i];
                u[j * n + i] = 0;
            }
        return 0;
    }
    return -1;
}

int gptq_factor_init(gptq_factor *f, gptq_hessian *hs, double damp, slmc_err *err) {
    memset(f, 0, sizeof *f);
    const int64_t n = hs->n;
    if (hs->n_tokens <= 0) return slmc_fail(err, NULL, "no calibration tokens reached this %lld-column input", (long long)n);
    if (damp <= 0) damp = GPTQ_DEFAULT_DAMP;
    symmetrise(hs->h, n);
    f->u = malloc((size_t)(n * n) * sizeof *f->u);
    f->diag = malloc((size_t)n * sizeof *f->diag);
    bool *dead = malloc((size_t)n * sizeof *dead);
    if (!f->u || !f->diag || !dead) {
        free(dead);
        gptq_factor_free(f);
        return slmc_fail(err, NULL, "out of memory factoring a %lld x %lld Hessian", (long long)n, (long long)n);
    }
    f->n = n;
    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = hs->h[i * n + i];
        dead[i] = !(d > 0);
        mean += d;
    }
    mean /= (double)n;
    if (!(mean > 0) || !isfinite(mean)) {
        free(dead);
        gptq_factor_free(f);
        return slmc_fail(err, NULL, "the calibration input of a %lld-column matrix is all zero or not finite", (long long)n);
    }
    /* block importance: mean x^2 per column; dead columns get the average (their values do
     * not reach the output, keep them well represented), tiny ones a floor so no block of
     * the weighted kernels sees all-zero weights */
    double mean_x2 = mean / (double)hs->n_tokens;
    for (int64_t i = 0; i < n; i++) {
        double d = hs->h[i * n + i] / (double)hs->n_tokens;
        if (dead[i]) d = mean_x2;
        if (d < 1e-6 * mean_x2) d = 1e-6 * mean_x2;
        f->diag[i] = (float)d;
    }
    int rc = factor_damped(hs->h, n, damp * mean, dead, f->u);
    free(dead);
    if (rc != 0) {
        gptq_factor_free(f);
        return slmc_fail(err, NULL, "the damped Hessian of a %lld-column input is not positive definite", (long long)n);
    }
    return 0;
}

void gptq_factor_free(gptq_factor *f) {
    free(f->u);
    free(f->diag);
    memset(f, 0, sizeof *f);
}

/* ================================================================ the column sweep */

/* One tile of nr rows (wt: [nr][cols] working copy in double) through the whole sweep; writes
 * the rows' blocks to out (row r at out + r * rb). qv and e are scratch: [nr][G], [nr][B]. */
static void sweep_tile(const gptq_factor *f, const quant_kernels *k, int64_t G, uint64_t bb, int64_t B, double *wt,
                       int64_t nr, int64_t cols, uint8_t *out, uint64_t rb, float *seg, float *qv, double *e) {
    const double *u = f->u;
    for (int64_t b0 = 0; b0 < cols; b0 += B) {
        int64_t b1 = b0 + B < cols ? b0 + B : cols;
        for (int64_t g = b0; g < b1; g += G) {
            /* 1. decide the block from the current values of every row */
            for (int64_t r = 0; r < nr; r++) {
                for (int64_t c = 0; c < G; c++) seg[c] = (float)wt[r * cols + g + c];
                uint8_t *blk = out + (uint64_t)r * rb + (uint64_t)(g / G) * bb;
                k->quantize_weighted(seg, blk, G, f->diag + g);
                k->dequantize(blk, qv + r * G, G);
            }
            /* 2. feed each column's error forward inside the batch */
            for (int64_t i = g; i < g + G; i++) {
                const double *ui = u + i * cols;
                for (int64_t r = 0; r < nr; r++) {
                    double *wr = wt + r * cols;
                    double err = (wr[i] - (double)qv[r * G + (i - g)]) / ui[i];
                    e[r * B + (i - b0)] = err;
                    for (int64_t j = i + 1; j < b1; j++) wr[j] -= err * ui[j];
                }
            }
        }
        /* 3. lazy update of every column after the batch: W[:, b1:] -= E U[b0:b1, b1:] */
        for (int64_t i = b0; i < b1; i++) {
            const double *ui = u + i * cols;
            for (int64_t r = 0; r < nr; r++) {
                double err = e[r * B + (i - b0)];
                if (err == 0) continue;
                double *wr = wt + r * cols;
                for (int64_t j = b1; j < cols; j++) wr[j] -= err * ui[j];
            }
        }
    }
}

int gptq_quantize(const gptq_factor *f, const float *w, int64_t rows, int64_t cols, int type, uint8_t *out,
                  slmc_err *err) {
    const quant_kernels *k = quant_get(type);
    const type_info *info = type_get(type);
    if (!k || !info) return slmc_fail(err, NULL, "GPTQ: no kernels for type %s", type_name(type));
    if (cols != f->n)
        return slmc_fail(err, NULL, "GPTQ: %lld columns but the Hessian is %lld wide", (long long)cols, (long long)f->n);
    const int64_t G = info->blck_size;
    uint64_t rb = type_nbytes(type, cols);
    if (rb == 0)
        return slmc_fail(err, NULL, "GPTQ: row length %lld is not a multiple of %s's block of %lld", (long long)cols,
                         type_name(type), (long long)G);
    if (G == 1) { /* float types: nothing to compensate */
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) k->quantize(w + r * cols, out + (uint64_t)r * rb, cols);
        return 0;
    }
    int64_t B = (GPTQ_BATCH_COLUMNS + G - 1) / G * G;
    if (B > cols) B = cols;
    const int64_t n_tiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
    bool oom = false;
#pragma omp parallel
    {
        double *wt = malloc((size_t)(TILE_ROWS * cols) * sizeof *wt);
        float *seg = malloc((size_t)G * sizeof *seg);
        float *qv = malloc((size_t)(TILE_ROWS * G) * sizeof *qv);
        double *e = malloc((size_t)(TILE_ROWS * B) * sizeof *e);
        bool ok = wt && seg && qv && e;
        if (!ok) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n_tiles; t++) {
            if (!ok) continue;
            int64_t r0 = t * TILE_ROWS, nr = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
            for (int64_t i = 0; i < nr * cols; i++) wt[i] = w[r0 * cols + i];
            sweep_tile(f, k, G, info->type_size, B, wt, nr, cols, out + (uint64_t)r0 * rb, rb, seg, qv, e);
        }
        free(wt);
        free(seg);
        free(qv);
        free(e);
    }
    if (oom) return slmc_fail(err, NULL, "GPTQ: out of memory");
    return 0;
}

/* ================================================================ calibration over a model */

/* The inputs of one transformer layer; weights that read the same input share a slot. */
enum { SLOT_ATTN_IN, SLOT_ATTN_OUT, SLOT_FFN_IN, SLOT_FFN_DOWN, N_SLOTS };
enum { SUM_UNITS = 8 }; /* the most units the chunks are summed in (the collection of one layer, below) */

typedef struct calib_slot {
    gptq_hessian h;     /* sum over all chunks of x x^T of the input (h.h NULL when no token
                           reached it); upper triangle until factored */
    gptq_factor f;      /* its factor, computed on first use (f.u NULL before) */
    int64_t owner;      /* tensor whose reported input is accumulated: the first one reported in
                           the slot; the others sharing the input are the same values */
    /* while a layer is collected: the slot's place in the chunk vector (see collect_layer) */
    int64_t n;          /* its input size; 0: the layer has no matrix in this slot */
    size_t at_h;        /* packed upper triangle of the chunk's x x^T */
    size_t at_c;        /* fp target: the chunk's xf x^T, [n][n] */
    size_t at_t;        /* the chunk's token count */
    /* fp target (sequential): x is the quantized model's input, xf the unquantized one's */
    float *xf;          /* [n_ctx][n] this chunk's unquantized input, saved by the first pass */
    int64_t xf_tokens;  /* tokens saved in xf this chunk */
    int64_t xq_tokens;  /* tokens of the chunk's second pass accumulated so far */
    double *cross;      /* [n][n] sum over all chunks of xf x^T */
    double *corr;       /* [n][n] (cross - H)(H + lambda I)^-1: w* = w + w corr, on first use */
} calib_slot;

struct gptq_calib {
    const model *m;         /* the model view the forward pass reads (not owned) */
    llm_model lm;           /* forward pass over m's unquantized weights */
    llm_context ctx;        /* KV cache and scratch for one chunk */
    bool lm_ok, ctx_ok;     /* which of the two are initialised */
    int32_t *tokens;        /* [n_chunks * n_ctx] calibration tokens */
    int n_chunks, n_ctx;
    const comm *job;        /* the ranks sharing the chunks (a job of one without mpirun) */
    int64_t n_units;        /* the chunks are summed in min(n_chunks, SUM_UNITS) runs (unit_start) */
    int64_t lo, hi;         /* this rank's units [lo, hi) */
    double *vec;            /* during a collection: one unit's statistics (see collect_layer) */
    bool agreed_failure;    /* a collection failed on some rank and every rank knows it */
    int pending;            /* rank > 0: -1 when following rank 0 failed here (err_pending) */
    slmc_err err_pending;
    int32_t bos;            /* replaces each chunk's first token (-1: none), as llama-imatrix does */
    int32_t *chunk;         /* [n_ctx] the chunk being evaluated */
    float *logits;          /* [n_ctx][n_vocab] scratch (the output head runs only in the last pass) */
    double damp;            /* lambda = damp * mean(diag H) */
    int64_t *tensor_layer;  /* [n_tensors] layer of a handled tensor (n_layer: output.weight), -1 else */
    int *tensor_slot;       /* [n_tensors] its slot */
    int64_t *last_of_layer; /* [n_layer + 1] tensor whose product ends a layer's collection */
    int cur_layer;          /* layer whose Hessians the slots hold, -1 none */
    int want_layer;         /* layer being collected during a pass */
    bool stopped;           /* the hook aborted the pass on purpose (layer complete) */
    bool hook_failed;       /* the hook ran out of memory or saw a bad shape */
    calib_slot slots[N_SLOTS];
    gptq_calib_info info;
    /* sequential mode: the forward pass runs through the bytes already written */
    bool sequential;        /* collect layer L through the quantized layers 0..L-1 */
    bool fp_target;         /* sequential: fit the unquantized model's products (see gptq.h) */
    double ridge;           /* fp target: the correction's lambda = ridge * mean(diag H) */
    int pass;               /* 0: plain collection; fp target: 1 saves xf, 2 accumulates */
    llm_weight **weights;   /* [n_weights] every matrix of lm: token_embd, layer matrices, output */
    llm_weight *orig;       /* [n_weights] their source bindings, restored by gptq_calib_reset */
    int n_weights;
    uint8_t **qdata;        /* [n_tensors] written bytes of a matrix (F32 when the evaluator cannot
                               run the written type), NULL until its first rows arrive */
    size_t *qsize;          /* [n_tensors] bytes mapped at qdata (spill_alloc) */
    int *qtype;             /* [n_tensors] type of qdata */
    int64_t *qrows;         /* [n_tensors] rows received so far */
    bool *quantized;        /* [n_tensors] quantized by GPTQ since the last reset (one target per run) */
};

/* The written bytes of the earlier layers are kept in an unlinked temporary file, mapped
 * shared: like the mapped input they are page cache the kernel can write back and reclaim,
 * not heap memory that grows with the model. $TMPDIR, else /var/tmp, else /tmp. */
static uint8_t *spill_alloc(size_t n, size_t *mapped) {
    const char *env = getenv("TMPDIR");
    const char *dirs[] = {env && *env ? env : "/var/tmp", "/var/tmp", "/tmp"};
    if (n == 0) n = 1;
    for (int i = 0; i < 3; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/.slmc-gptq-XXXXXX", dirs[i]);
        int fd = mkstemp(path);
        if (fd < 0) continue;
        unlink(path);
        void *p = MAP_FAILED;
        if (ftruncate(fd, (off_t)n) == 0) p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p != MAP_FAILED) {
            *mapped = n;
            return p;
        }
    }
    return NULL;
}

static void spill_free(uint8_t *p, size_t n) {
    if (p) munmap(p, n);
}

static void slots_free(gptq_calib *c) {
    for (int s = 0; s < N_SLOTS; s++) {
        gptq_hessian_free(&c->slots[s].h);
        gptq_factor_free(&c->slots[s].f);
        free(c->slots[s].xf);
        free(c->slots[s].cross);
        free(c->slots[s].corr);
        c->slots[s].xf = NULL;
        c->slots[s].cross = c->slots[s].corr = NULL;
        c->slots[s].owner = -1;
        c->slots[s].n = 0;
    }
    c->cur_layer = -1;
}

/* Put the forward pass back on the source weights and drop the written bytes. */
static void substitutions_free(gptq_calib *c) {
    for (int i = 0; i < c->n_weights; i++) *c->weights[i] = c->orig[i];
    for (uint64_t i = 0; c->qdata && i < c->m->n_tensors; i++) {
        spill_free(c->qdata[i], c->qsize[i]);
        c->qdata[i] = NULL;
        c->qrows[i] = 0;
        c->quantized[i] = false;
    }
}

void gptq_calib_close(gptq_calib *c) {
    if (!c) return;
    slots_free(c);
    if (c->weights) substitutions_free(c);
    free(c->weights);
    free(c->orig);
    free(c->qdata);
    free(c->qtype);
    free(c->qsize);
    free(c->qrows);
    free(c->quantized);
    if (c->ctx_ok) llm_context_free(&c->ctx);
    if (c->lm_ok) llm_model_free(&c->lm);
    free(c->tokens);
    free(c->chunk);
    free(c->logits);
    free(c->tensor_layer);
    free(c->tensor_slot);
    free(c->last_of_layer);
    free(c->vec);
    free(c);
}

/* Record which layer and slot a weight belongs to. */
static void map_weight(gptq_calib *c, const llm_weight *w, int64_t layer, int slot) {
    if (w->tensor < 0 || (uint64_t)w->tensor >= c->m->n_tensors) return;
    c->tensor_layer[w->tensor] = layer;
    c->tensor_slot[w->tensor] = slot;
}

/* Tokenize enough of the text for the chunks wanted (all of it when chunks <= 0). */
static int load_tokens(gptq_calib *c, const gptq_calib_opts *o, slmc_err *err) {
    size_t want = o->chunks > 0 ? (size_t)o->chunks * (size_t)o->n_ctx : 0;
    text_tokens t;
    if (text_tokenize(c->m, o->text, want, "GPTQ calibration", &t, err) != 0) return -1;
    int64_t avail = (int64_t)t.n / o->n_ctx;
    c->n_chunks = (int)(o->chunks > 0 && o->chunks < avail ? o->chunks : avail);
    if (c->n_chunks < 1) {
        slmc_fail(err, o->text, "has %zu tokens; calibration with -c %d needs at least %d", t.n, o->n_ctx, o->n_ctx);
        text_tokens_free(&t);
        return -1;
    }
    c->tokens = t.ids;
    c->bos = t.bos;
    return 0;
}

int gptq_calib_open(gptq_calib **out, const model *m, const gptq_calib_opts *o, slmc_err *err) {
    *out = NULL;
    if (o->n_ctx < 2) return slmc_fail(err, NULL, "GPTQ calibration needs -c of at least 2, not %d", o->n_ctx);
    gptq_calib *c = calloc(1, sizeof *c);
    if (!c) return slmc_fail(err, m->path, "out of memory");
    c->m = m;
    c->n_ctx = o->n_ctx;
    c->job = ranks_job(o->comm);
    c->damp = o->damp > 0 ? o->damp : GPTQ_DEFAULT_DAMP;
    for (int s = 0; s < N_SLOTS; s++) c->slots[s].owner = -1;
    c->cur_layer = -1;
    uint64_t nt = m->n_tensors ? m->n_tensors : 1;
    c->tensor_layer = malloc(nt * sizeof *c->tensor_layer);
    c->tensor_slot = calloc(nt, sizeof *c->tensor_slot);
    if (!c->tensor_layer || !c->tensor_slot) { slmc_fail(err, m->path, "out of memory"); goto fail; }
    for (uint64_t i = 0; i < m->n_tensors; i++) c->tensor_layer[i] = -1;
    if (load_tokens(c, o, err) != 0) goto fail;
    if (llm_model_init(&c->lm, m, err) != 0) { slmc_fail_prefix(err, m->path); goto fail; }
    c->lm_ok = true;
    if (llm_context_init(&c->ctx, &c->lm, c->n_ctx, c->n_ctx, err) != 0) goto fail;
    c->ctx_ok = true;
    c->chunk = malloc((size_t)c->n_ctx * sizeof *c->chunk);
    c->logits = malloc((size_t)c->n_ctx * (size_t)c->lm.cfg.n_vocab * sizeof *c->logits);
    c->last_of_layer = malloc((size_t)(c->lm.cfg.n_layer + 1) * sizeof *c->last_of_layer);
    if (!c->chunk || !c->logits || !c->last_of_layer) { slmc_fail(err, m->path, "out of memory"); goto fail; }
    for (int64_t l = 0; l < c->lm.cfg.n_layer; l++) {
        const llm_layer *L = &c->lm.layers[l];
        map_weight(c, &L->wq, l, SLOT_ATTN_IN);
        map_weight(c, &L->wk, l, SLOT_ATTN_IN);
        map_weight(c, &L->wv, l, SLOT_ATTN_IN);
        map_weight(c, &L->wqkv, l, SLOT_ATTN_IN);
        map_weight(c, &L->wo, l, SLOT_ATTN_OUT);
        map_weight(c, &L->w_gate, l, SLOT_FFN_IN);
        map_weight(c, &L->w_up, l, SLOT_FFN_IN);
        map_weight(c, &L->w_down, l, SLOT_FFN_DOWN);
        c->last_of_layer[l] = L->w_down.tensor; /* ffn_down is the layer's last product */
    }
    c->last_of_layer[c->lm.cfg.n_layer] = -1;
    int64_t emb = model_find(m, "token_embd.weight");
    if (c->lm.output.tensor >= 0 && c->lm.output.tensor != emb) { /* a tied head is the embedding: not ours */
        map_weight(c, &c->lm.output, c->lm.cfg.n_layer, SLOT_ATTN_IN);
        c->last_of_layer[c->lm.cfg.n_layer] = c->lm.output.tensor;
    }
    /* every matrix binding of the forward pass, for sequential substitution */
    c->sequential = o->sequential || o->fp_target;
    c->fp_target = o->fp_target;
    c->ridge = o->ridge > 0 ? o->ridge : GPTQ_DEFAULT_RIDGE;
    c->n_weights = (int)(8 * c->lm.cfg.n_layer + 2);
    c->weights = malloc((size_t)c->n_weights * sizeof *c->weights);
    c->orig = malloc((size_t)c->n_weights * sizeof *c->orig);
    c->qdata = calloc(nt, sizeof *c->qdata);
    c->qtype = calloc(nt, sizeof *c->qtype);
    c->qsize = calloc(nt, sizeof *c->qsize);
    c->qrows = calloc(nt, sizeof *c->qrows);
    c->quantized = calloc(nt, sizeof *c->quantized);
    if (!c->weights || !c->orig || !c->qdata || !c->qtype || !c->qsize || !c->qrows || !c->quantized) {
        slmc_fail(err, m->path, "out of memory");
        goto fail;
    }
    int nw = 0;
    c->weights[nw++] = &c->lm.tok_embd;
    c->weights[nw++] = &c->lm.output;
    for (int64_t l = 0; l < c->lm.cfg.n_layer; l++) {
        llm_layer *L = &c->lm.layers[l];
        llm_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 8; k++) c->weights[nw++] = ws[k];
    }
    for (int i = 0; i < nw; i++) c->orig[i] = *c->weights[i];
    c->info.chunks = c->n_chunks;
    c->info.n_ctx = c->n_ctx;
    c->n_units = c->n_chunks < SUM_UNITS ? c->n_chunks : SUM_UNITS;
    comm_share(c->job, c->n_units, c->job->rank, &c->lo, &c->hi);
    *out = c;
    return 0;
fail:
    gptq_calib_close(c);
    return -1;
}

bool gptq_calib_handles(const gptq_calib *c, uint64_t ti) {
    return ti < c->m->n_tensors && c->tensor_layer[ti] >= 0;
}

/* cross [n][n] += xf^T x over the tokens of this call (the same positions of the first pass). */
static int cross_add(calib_slot *s, double *cross, const float *x, int n_tokens) {
    const int64_t n = s->n;
    if (!s->xf || s->xq_tokens + n_tokens > s->xf_tokens) return -1;
    gptq_gram_add(cross, n, s->xf + s->xq_tokens * n, x, n_tokens, false, true); /* xf^T x */
    s->xq_tokens += n_tokens;
    return 0;
}

/* matmul_input hook: accumulate the wanted layer's inputs; stop the pass after its last product. */
static int calib_hook(void *ud, const char *weight, int64_t tensor, int layer, const float *x, int n_tokens,
                      int64_t n_in) {
    (void)weight;
    gptq_calib *c = ud;
    int64_t L = layer < 0 ? c->lm.cfg.n_layer : layer; /* the output head reports layer -1 */
    if (L != c->want_layer || tensor < 0 || (uint64_t)tensor >= c->m->n_tensors || c->tensor_layer[tensor] != L)
        return 0;
    calib_slot *s = &c->slots[c->tensor_slot[tensor]];
    if (s->owner < 0) s->owner = tensor;
    if (s->owner == tensor) {
        if (s->n != n_in) { c->hook_failed = true; return 1; }
        if (c->pass == 1) { /* unquantized input: keep it for the second pass */
            if (!s->xf) s->xf = malloc((size_t)c->n_ctx * (size_t)n_in * sizeof *s->xf);
            if (!s->xf || s->xf_tokens + n_tokens > c->n_ctx) { c->hook_failed = true; return 1; }
            memcpy(s->xf + s->xf_tokens * n_in, x, (size_t)n_tokens * (size_t)n_in * sizeof *x);
            s->xf_tokens += n_tokens;
        } else { /* into this chunk's statistics */
            gptq_packed_add(c->vec + s->at_h, n_in, x, n_tokens);
            c->vec[s->at_t] += n_tokens;
            if (c->pass == 2 && cross_add(s, c->vec + s->at_c, x, n_tokens) != 0) { c->hook_failed = true; return 1; }
        }
    }
    if (tensor == c->last_of_layer[L]) { c->stopped = true; return 1; }
    return 0;
}

static void bind_written(gptq_calib *c, bool written);

/* ---- the collection of one layer, shared among the ranks ----------------------------------
 * The units of comm_sum (comm.h) are runs of consecutive chunks, at most SUM_UNITS of them (one
 * chunk each up to SUM_UNITS chunks; else n_chunks / SUM_UNITS or one more): each unit's
 * statistics are collected into one vector, chunk after chunk, and the vectors are joined by
 * the fixed tree over the unit index, so the Hessians have the same bits for one process and
 * for any number of ranks. The vector, per slot of the layer: the packed upper triangle of the
 * unit's x x^T, with the fp target the unit's xf x^T [n][n], then every slot's token count
 * (integers: exact in double). A vector is a layer's Hessians, n^2 / 2 doubles per slot (with
 * the fp target 3 n^2 / 2): 0.96 GB for a layer of Llama-3.2-1B with the fp target. Besides
 * the one being collected, the tree keeps a vector per finished subtree it cannot join yet:
 * up to 3 over 8 units, however many chunks there are (over the default 50 chunks themselves
 * it kept up to 5). More than SUM_UNITS ranks leave the rest idle.
 *
 * Under mpirun rank 0 runs quantize_model and the other ranks follow it (gptq_calib_serve):
 * rank 0 sends each collection, each set of written rows (sequential mode) and each reset as a
 * command, so every rank's forward pass runs on the same weights when the layer is collected. */

enum { CMD_COLLECT = 1, CMD_ROWS, CMD_RESET, CMD_DONE };

/* Rank 0 tells the others what comes next (in a job of one: nothing to tell). */
static int send_command(gptq_calib *c, int64_t cmd, int64_t a, int64_t b, int64_t d, int64_t e, slmc_err *err) {
    if (c->job->size == 1) return 0;
    int64_t msg[5] = {cmd, a, b, d, e};
    return comm_bcast(c->job, msg, sizeof msg, 0, err);
}

/* The slots layer L has, their input sizes (every matrix in a slot reads the same input), and
 * their places in the chunk vector; returns the vector's length. */
static size_t layer_layout(gptq_calib *c, int L) {
    for (uint64_t ti = 0; ti < c->m->n_tensors; ti++)
        if (c->tensor_layer[ti] == L && c->slots[c->tensor_slot[ti]].n == 0)
            c->slots[c->tensor_slot[ti]].n = c->m->tensors[ti].ne[0];
    size_t len = 0;
    for (int k = 0; k < N_SLOTS; k++) {
        calib_slot *s = &c->slots[k];
        if (s->n == 0) continue;
        s->at_h = len;
        len += gptq_packed_len(s->n);
        if (c->fp_target) {
            s->at_c = len;
            len += (size_t)(s->n * s->n);
        }
    }
    for (int k = 0; k < N_SLOTS; k++) c->slots[k].at_t = len + (size_t)k;
    return len + N_SLOTS;
}

/* Chunk ch up to layer L's last product, its statistics added to c->vec. */
static int collect_chunk(gptq_calib *c, int L, int64_t ch, slmc_err *err) {
    memcpy(c->chunk, c->tokens + (size_t)ch * (size_t)c->n_ctx, (size_t)c->n_ctx * sizeof *c->chunk);
    if (c->bos >= 0) c->chunk[0] = c->bos;
    int rc = 0;
    /* fp target: first the unquantized model (saves xf), then the quantized one */
    for (int pass = c->fp_target ? 1 : 0; pass <= (c->fp_target ? 2 : 0) && rc == 0; pass++) {
        c->pass = pass;
        if (c->fp_target) bind_written(c, pass == 2);
        if (pass == 1) /* a new chunk: the saved inputs start over */
            for (int s = 0; s < N_SLOTS; s++) c->slots[s].xf_tokens = c->slots[s].xq_tokens = 0;
        c->stopped = c->hook_failed = false;
        slmc_err e2 = {{0}};
        int erc = llm_eval(&c->ctx, c->chunk, c->n_ctx, 0, c->logits, &e2);
        c->info.passes++;
        if (c->hook_failed)
            rc = slmc_fail(err, c->m->path, "GPTQ calibration of layer %d: out of memory or bad input shape", L);
        else if (erc != 0 && !c->stopped) {
            if (err) *err = e2;
            rc = slmc_fail_prefix(err, c->m->path);
        }
    }
    return rc;
}

/* The first chunk of unit u (unit n_units: n_chunks). */
static int64_t unit_start(const gptq_calib *c, int64_t u) { return u * c->n_chunks / c->n_units; }

/* This rank's units, each through its chunks up to layer L's last product, each unit's
 * statistics added to sum. */
static int collect_chunks(gptq_calib *c, int L, size_t len, comm_sum *sum, slmc_err *err) {
    llm_hooks hooks = {.ud = c, .matmul_input = calib_hook};
    llm_set_hooks(&c->ctx, &hooks);
    int rc = 0;
    for (int64_t u = c->lo; u < c->hi && rc == 0; u++) {
        memset(c->vec, 0, len * sizeof *c->vec);
        for (int64_t ch = unit_start(c, u); ch < unit_start(c, u + 1) && rc == 0; ch++)
            rc = collect_chunk(c, L, ch, err);
        if (rc == 0) rc = comm_sum_add(sum, c->vec, err);
    }
    c->pass = 0;
    llm_hooks none = {0};
    llm_set_hooks(&c->ctx, &none);
    return rc;
}

/* The joined statistics into the slots: H (upper triangle) and, fp target, the cross terms. */
static int layer_unpack(gptq_calib *c, const double *total, slmc_err *err) {
    for (int k = 0; k < N_SLOTS; k++) {
        calib_slot *s = &c->slots[k];
        const int64_t tokens = llround(total[s->at_t]);
        if (s->n == 0 || tokens == 0) continue; /* h.h stays NULL: "never seen" */
        if (gptq_hessian_init(&s->h, s->n, err) != 0) return slmc_fail_prefix(err, c->m->path);
        gptq_packed_unpack(total + s->at_h, s->n, s->h.h);
        s->h.n_tokens = tokens;
        if (c->fp_target) {
            s->cross = malloc((size_t)(s->n * s->n) * sizeof *s->cross);
            if (!s->cross) return slmc_fail(err, c->m->path, "out of memory for a %lld x %lld matrix", (long long)s->n, (long long)s->n);
            memcpy(s->cross, total + s->at_c, (size_t)(s->n * s->n) * sizeof *s->cross);
        }
    }
    return 0;
}

/* Collect layer L's Hessians over every chunk (every rank its share, joined in the tree).
 * Collective: every rank calls it for the same L. Failures are agreed (c->agreed_failure),
 * except those of the communication itself. */
static int collect_layer(gptq_calib *c, int L, slmc_err *err) {
    double t0 = now_seconds();
    slots_free(c);
    c->want_layer = L;
    const size_t len = layer_layout(c, L);
    comm_sum sum;
    free(c->vec);
    c->vec = malloc(len * sizeof *c->vec);
    /* a failure following rank 0's earlier commands on this rank is reported now */
    int st = c->pending;
    if (st != 0 && err) *err = c->err_pending;
    if (st == 0 && !c->vec) st = slmc_fail(err, c->m->path, "out of memory for %zu Hessian values", len);
    bool open = false;
    if (st == 0) {
        st = comm_sum_init(&sum, c->job, COMM_F64, len, c->n_units, err);
        open = st == 0;
    }
    if (st == 0) st = collect_chunks(c, L, len, &sum, err);
    /* the tree over the units; then every rank holds the layer's sums, in c->vec (the last
     * unit's statistics are no longer needed). The tree's vectors are freed before the slots
     * take their copies. A failure of the communication itself is not agreed (it ends the job) */
    int rc = comm_agree(c->job, st, err);
    if (rc != 0) c->agreed_failure = true;
    else if (comm_sum_finish(&sum, c->vec, err) != 0) rc = -1;
    if (open) comm_sum_free(&sum);
    if (rc == 0 && (rc = comm_agree(c->job, layer_unpack(c, c->vec, err), err)) != 0) c->agreed_failure = true;
    free(c->vec);
    c->vec = NULL;
    if (rc != 0) {
        slots_free(c);
        return -1;
    }
    c->cur_layer = L;
    c->info.collect_seconds += now_seconds() - t0;
    return 0;
}

/* y[j] += a x[j], j in [0, n): each element its own multiply and add (no FMA), so eight at a
 * time with AVX-512 give the bits of one at a time. */
__attribute__((target("avx512f"))) static void axpy_avx512(double *y, double a, const double *x, int64_t n) {
    const __m512d av = _mm512_set1_pd(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm512_storeu_pd(y + j, _mm512_add_pd(_mm512_loadu_pd(y + j), _mm512_mul_pd(av, _mm512_loadu_pd(x + j))));
    for (; j < n; j++) y[j] += a * x[j];
}

/* avx512: kern_cpu_has_avx512(), asked once by the caller, not for every row it adds */
static void axpy(double *y, double a, const double *x, int64_t n, bool avx512) {
    if (avx512) {
        axpy_avx512(y, a, x, n);
        return;
    }
    for (int64_t j = 0; j < n; j++) y[j] += a * x[j];
}

enum { CORR_R = 8, CORR_J = 512 }; /* rows, and columns of them, the corrections carry together */

/* corr = (cross - H)(H + lambda I)^-1 with lambda = ridge * mean(diag H):
 * for inputs x (quantized model) and xf (unquantized), w* = w + w corr = w cross (H + lambda I)^-1
 * minimises sum_t (w xf_t - w* x_t)^2 + lambda ||w* - w||^2: the weights that best reproduce
 * the unquantized model's product from the quantized model's input, ridge-damped towards w. */
static int slot_correction(calib_slot *s, double ridge) {
    const int64_t n = s->f.n;
    const double *h = s->h.h; /* symmetric once factored */
    double *hinv = malloc((size_t)(n * n) * sizeof *hinv);
    s->corr = malloc((size_t)(n * n) * sizeof *s->corr);
    if (!hinv || !s->corr || !s->cross) {
        free(hinv);
        free(s->corr);
        s->corr = NULL;
        return -1;
    }
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += h[i * n + i];
    mean /= (double)n;
    memcpy(hinv, h, (size_t)(n * n) * sizeof *hinv);
    for (int64_t i = 0; i < n; i++) hinv[i * n + i] += (h[i * n + i] > 0 ? 0 : 1) + ridge * mean; /* dead: decoupled */
    if (gptq_spd_inverse(hinv, n) != 0) { /* cannot happen for a ridge > 0; keep w unchanged */
        memset(s->corr, 0, (size_t)(n * n) * sizeof *s->corr);
        free(hinv);
        return 0;
    }
    /* row i of corr: the rows of hinv added in order, weighted by row i of cross - H. CORR_R rows
     * at a time and CORR_J columns of them at a time, so hinv streams from memory once per
     * CORR_R rows and their sums stay in cache; every entry adds the same terms in the same
     * order as row by row. */
    const bool avx512 = kern_cpu_has_avx512();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i0 = 0; i0 < n; i0 += CORR_R) {
        const int64_t i1 = n - i0 < CORR_R ? n : i0 + CORR_R;
        for (int64_t i = i0; i < i1; i++) memset(s->corr + i * n, 0, (size_t)n * sizeof *s->corr);
        for (int64_t j0 = 0; j0 < n; j0 += CORR_J) {
            const int64_t j1 = n - j0 < CORR_J ? n : j0 + CORR_J;
            for (int64_t k = 0; k < n; k++) {
                const double *hk = hinv + k * n;
                for (int64_t i = i0; i < i1; i++) {
                    const double d = s->cross[i * n + k] - h[i * n + k];
                    if (d == 0) continue;
                    axpy(s->corr + i * n + j0, d, hk + j0, j1 - j0, avx512);
                }
            }
        }
    }
    free(hinv);
    return 0;
}

/* wt = w + w corr: each row starts as w's row and adds the rows of corr in order, weighted by
 * w's row; CORR_R rows and CORR_J columns at a time, as in slot_correction. */
static void apply_correction(const double *corr, const float *w, int64_t rows, int64_t cols, float *wt) {
    const bool avx512 = kern_cpu_has_avx512();
#pragma omp parallel
    {
        double *acc = malloc((size_t)CORR_R * (size_t)cols * sizeof *acc);
#pragma omp for schedule(dynamic, 1)
        for (int64_t r0 = 0; r0 < rows; r0 += CORR_R) {
            const int64_t nr = rows - r0 < CORR_R ? rows - r0 : CORR_R;
            if (!acc) { memcpy(wt + r0 * cols, w + r0 * cols, (size_t)(nr * cols) * sizeof *wt); continue; }
            for (int64_t j = 0; j < nr * cols; j++) acc[j] = w[r0 * cols + j];
            for (int64_t j0 = 0; j0 < cols; j0 += CORR_J) {
                const int64_t j1 = cols - j0 < CORR_J ? cols : j0 + CORR_J;
                for (int64_t k = 0; k < cols; k++) {
                    const double *ck = corr + k * cols;
                    for (int64_t r = 0; r < nr; r++) {
                        const double a = w[(r0 + r) * cols + k];
                        if (a == 0) continue;
                        axpy(acc + r * cols + j0, a, ck + j0, j1 - j0, avx512);
                    }
                }
            }
            for (int64_t j = 0; j < nr * cols; j++) wt[r0 * cols + j] = (float)acc[j];
        }
        free(acc);
    }
}

/* The slot holding tensor ti's Hessian, collecting its layer first when needed. */
static calib_slot *slot_of(gptq_calib *c, uint64_t ti, slmc_err *err) {
    if (!gptq_calib_handles(c, ti)) {
        slmc_fail(err, c->m->path, "GPTQ does not handle tensor %llu", (unsigned long long)ti);
        return NULL;
    }
    int L = (int)c->tensor_layer[ti];
    if (c->cur_layer != L &&
        (send_command(c, CMD_COLLECT, L, 0, 0, 0, err) != 0 || collect_layer(c, L, err) != 0))
        return NULL;
    calib_slot *s = &c->slots[c->tensor_slot[ti]];
    if (!s->h.h) {
        slmc_fail(err, c->m->path, "tensor %s: its input was never seen during calibration", c->m->tensors[ti].name);
        return NULL;
    }
    return s;
}

int gptq_calib_hessian(gptq_calib *c, uint64_t ti, const gptq_hessian **out, slmc_err *err) {
    calib_slot *s = slot_of(c, ti, err);
    *out = s ? &s->h : NULL;
    return s ? 0 : -1;
}

int gptq_calib_quantize(gptq_calib *c, uint64_t ti, int type, const float *w, int64_t rows, int64_t cols,
                        uint8_t *out, slmc_err *err) {
    calib_slot *s = slot_of(c, ti, err);
    if (!s) return -1;
    const char *name = c->m->tensors[ti].name;
    if (c->sequential) { /* the Hessians in memory belong to the output type being written */
        if (c->quantized[ti])
            return slmc_fail(err, c->m->path, "tensor %s: sequential GPTQ quantizes for one output type per run", name);
        c->quantized[ti] = true;
    }
    if (!s->f.u && gptq_factor_init(&s->f, &s->h, c->damp, err) != 0) return slmc_fail_prefix(err, name);
    double t0 = now_seconds();
    float *wt = NULL; /* fp target: the least-squares weights for the quantized inputs */
    if (c->fp_target) {
        if (!s->corr && slot_correction(s, c->ridge) != 0) return slmc_fail(err, c->m->path, "tensor %s: out of memory", name);
        wt = malloc((size_t)(rows * cols) * sizeof *wt);
        if (!wt) return slmc_fail(err, c->m->path, "tensor %s: out of memory", name);
        apply_correction(s->corr, w, rows, cols, wt);
        w = wt;
    }
    int rc = gptq_quantize(&s->f, w, rows, cols, type, out, err);
    free(wt);
    if (rc != 0) return slmc_fail_prefix(err, name);
    c->info.quant_seconds += now_seconds() - t0;
    return 0;
}

/* Point the forward pass's matrices at their written bytes (those complete so far), or all at
 * the source weights. */
static void bind_written(gptq_calib *c, bool written) {
    for (int i = 0; i < c->n_weights; i++) {
        llm_weight *w = c->weights[i];
        *w = c->orig[i];
        int64_t ti = w->tensor;
        if (!written || ti < 0 || !c->qdata[ti] || c->qrows[ti] != model_tensor_rows(&c->m->tensors[ti])) continue;
        w->w.data = c->qdata[ti];
        w->w.type = c->qtype[ti];
        w->w.row_bytes = type_nbytes(c->qtype[ti], w->w.n_in);
        w->w.row_map = NULL; /* written rows are in llama.cpp's order already */
    }
}

/* Point every binding of tensor ti at its written bytes. Types the evaluator's matmul does
 * not run are dequantized to F32 first (the same values, without the native rounding of the
 * activations). */
static int substitute(gptq_calib *c, uint64_t ti, slmc_err *err) {
    const model_tensor *t = &c->m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    int type = c->qtype[ti];
    if (!kern_weight_supported(type, ne0)) {
        const quant_kernels *k = quant_get(type);
        size_t fsize = 0;
        float *f = (float *)spill_alloc((size_t)(rows * ne0) * sizeof *f, &fsize);
        if (!k || !f) {
            spill_free((uint8_t *)f, fsize);
            return slmc_fail(err, c->m->path, "tensor %s: cannot run its %s bytes in the calibration pass", t->name,
                             type_name(type));
        }
        uint64_t rb = type_nbytes(type, ne0);
        for (int64_t r = 0; r < rows; r++) k->dequantize(c->qdata[ti] + (uint64_t)r * rb, f + r * ne0, ne0);
        spill_free(c->qdata[ti], c->qsize[ti]);
        c->qdata[ti] = (uint8_t *)f;
        c->qsize[ti] = fsize;
        c->qtype[ti] = type = GGML_TYPE_F32;
    }
    bind_written(c, true);
    return 0;
}

/* Whether sequential mode keeps tensor ti's written rows: only the matrices the forward pass
 * multiplies or looks up. */
static bool keeps_rows(const gptq_calib *c, uint64_t ti) {
    if (!c->sequential || ti >= c->m->n_tensors) return false;
    bool used = false;
    for (int i = 0; i < c->n_weights; i++) used |= c->orig[i].tensor == (int64_t)ti;
    return used;
}

static int use_rows(gptq_calib *c, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes, slmc_err *err) {
    const model_tensor *t = &c->m->tensors[ti];
    int64_t rows = model_tensor_rows(t);
    uint64_t rb = type_nbytes(type, t->ne[0]);
    if (rb == 0 || r0 < 0 || nr < 0 || r0 + nr > rows)
        return slmc_fail(err, c->m->path, "tensor %s: bad rows %lld..%lld of %s handed to sequential GPTQ", t->name,
                         (long long)r0, (long long)(r0 + nr), type_name(type));
    if (r0 == 0) { /* a tensor starts: a fresh buffer (a second target is refused below) */
        if (c->qdata[ti])
            return slmc_fail(err, c->m->path, "tensor %s: sequential GPTQ follows one output type per run", t->name);
        c->qdata[ti] = spill_alloc(rb * (uint64_t)rows, &c->qsize[ti]);
        if (!c->qdata[ti])
            return slmc_fail(err, c->m->path, "tensor %s: cannot map a temporary file for its written bytes", t->name);
        c->qtype[ti] = type;
        c->qrows[ti] = 0;
    }
    if (!c->qdata[ti] || c->qtype[ti] != type || r0 != c->qrows[ti])
        return slmc_fail(err, c->m->path, "tensor %s: rows handed to sequential GPTQ out of order", t->name);
    memcpy(c->qdata[ti] + rb * (uint64_t)r0, bytes, rb * (uint64_t)nr);
    c->qrows[ti] += nr;
    return c->qrows[ti] == rows ? substitute(c, ti, err) : 0;
}

int gptq_calib_use_rows(gptq_calib *c, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes,
                        slmc_err *err) {
    if (!keeps_rows(c, ti)) return 0;
    /* the other ranks' forward passes must run through the same bytes: they get them too */
    if (c->job->rank == 0 && c->job->size > 1) {
        const uint64_t n = type_nbytes(type, c->m->tensors[ti].ne[0]) * (uint64_t)(nr > 0 ? nr : 0);
        if (send_command(c, CMD_ROWS, (int64_t)ti, type, r0, nr, err) != 0 ||
            comm_bcast(c->job, (void *)bytes, (size_t)n, 0, err) != 0)
            return -1;
    }
    return use_rows(c, ti, type, r0, nr, bytes, err);
}

void gptq_calib_get_info(const gptq_calib *c, gptq_calib_info *info) { *info = c->info; }

static bool hook_wants(void *ud, uint64_t ti) { return gptq_calib_handles(ud, ti); }

static int hook_quantize(void *ud, uint64_t ti, int type, const float *w, int64_t rows, int64_t ne0, uint8_t *out,
                         slmc_err *err) {
    return gptq_calib_quantize(ud, ti, type, w, rows, ne0, out, err);
}

static int hook_written(void *ud, int target, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes,
                        slmc_err *err) {
    gptq_calib *c = ud;
    if (!c->sequential) return 0;
    if (target != 0)
        return slmc_fail(err, c->m->path, "sequential GPTQ quantizes for one output type per run (got a second target)");
    return gptq_calib_use_rows(c, ti, type, r0, nr, bytes, err);
}

quant_tensor_hook gptq_calib_hook(gptq_calib *c) {
    quant_tensor_hook h = {.ud = c, .wants = hook_wants, .quantize = hook_quantize, .written = hook_written};
    return h;
}

/* ================================================================ rank 0 leads, the others follow */

static void reset_local(gptq_calib *c) {
    slots_free(c);
    substitutions_free(c);
}

void gptq_calib_reset(gptq_calib *c) {
    slmc_err err;
    /* a failed command ends the job when the others wait for the next one: nothing to return */
    if (c->job->rank == 0) send_command(c, CMD_RESET, 0, 0, 0, 0, &err);
    reset_local(c);
}

int gptq_calib_serve(gptq_calib *c, slmc_err *err) {
    if (c->job->rank == 0) return slmc_fail(err, c->m->path, "rank 0 leads the calibration: it does not serve");
    slmc_err agreed = {{0}};
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        int64_t msg[5] = {0};
        if (comm_bcast(c->job, msg, sizeof msg, 0, err) != 0) { rc = -1; break; }
        if (msg[0] == CMD_DONE) break;
        if (msg[0] == CMD_COLLECT) {
            if (collect_layer(c, (int)msg[1], err) != 0) {
                if (!c->agreed_failure) { rc = -1; break; } /* the communication failed */
                agreed = *err; /* rank 0 fails too and sends CMD_DONE */
            }
        } else if (msg[0] == CMD_ROWS) {
            const uint64_t ti = (uint64_t)msg[1];
            if (ti >= c->m->n_tensors || msg[4] < 0) { rc = slmc_fail(err, c->m->path, "a malformed command from rank 0"); break; }
            const size_t n = (size_t)(type_nbytes((int)msg[2], c->m->tensors[ti].ne[0]) * (uint64_t)msg[4]);
            if (n > cap) {
                uint8_t *nb = realloc(buf, n);
                if (!nb) { rc = slmc_fail(err, c->m->path, "out of memory for %zu bytes of written rows", n); break; }
                buf = nb;
                cap = n;
            }
            if (comm_bcast(c->job, buf, n, 0, err) != 0) { rc = -1; break; }
            /* a failure here is this rank's: reported at the next agreement */
            if (c->pending == 0 && use_rows(c, ti, (int)msg[2], msg[3], msg[4], buf, &c->err_pending) != 0) c->pending = -1;
        } else if (msg[0] == CMD_RESET) {
            reset_local(c);
        } else {
            rc = slmc_fail(err, c->m->path, "an unknown command %lld from rank 0", (long long)msg[0]);
            break;
        }
    }
    free(buf);
    if (rc != 0) return -1; /* not agreed: the job ends (cli_error) */
    if (c->agreed_failure) {
        *err = agreed;
        return -1;
    }
    if (c->pending != 0) *err = c->err_pending;
    return comm_agree(c->job, c->pending, err);
}

int gptq_calib_release(gptq_calib *c, int status, slmc_err *err) {
    if (c->job->size == 1) return status;
    if (send_command(c, CMD_DONE, 0, 0, 0, 0, err) != 0) return -1;
    if (c->agreed_failure) return -1; /* every rank has the message already */
    return comm_agree(c->job, status, err);
}
