/* gemm.c - cache-blocked, register-tiled single-precision GEMM; see gemm.h.
 *
 * Loop nest, outermost first (names after the BLIS papers):
 *   tiles of C, MC × NC, split across threads      each thread owns whole tiles of C
 *     K blocks of GEMM_KC, in order                 fixes the summation order of every element
 *       pack A[tile rows][K block]  → MR-row panels   (MC × KC floats, stays in L2)
 *       pack B[K block][tile cols]  → NR-col panels   (KC × NC floats, L2)
 *       for each B panel                             (KC × NR floats, stays in L1)
 *         for each A panel: micro-kernel → MR × NR of C, accumulated in registers
 */
#include "distill/gemm.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GEMM_HAVE_X86 1
#else
#define GEMM_HAVE_X86 0
#endif

#define GEMM_MR 6   /* rows of the register tile: 6 × 2 vector accumulators = 12 registers */
#define GEMM_NR 32  /* columns of a packed B panel: two 16-float zmm vectors (AVX-512), or two
                     * 16-column halves done one after the other with two 8-float ymm (AVX2) */
#define GEMM_KC 256 /* depth of a K block: a B panel is KC × NR × 4 = 32 KB, inside L1 (48 KB) */
#define GEMM_MC 96  /* rows of a C tile (multiple of MR): packed A is 96 KB */
#define GEMM_NC 512 /* columns of a C tile (multiple of NR): packed B is 512 KB */

/* The micro-kernel: C[MR][NR] (row stride ldc) = (add ? C : 0) + Σ_k a[k][·] ⊗ b[k][·] over kc
 * steps, a and b being one packed A panel (kc × MR) and one packed B panel (kc × NR). */
typedef void (*gemm_kernel)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, bool add);

/* ---------------------------------------------------------------------------------------
 * micro-kernels
 * ------------------------------------------------------------------------------------- */

/* Portable reference: the same summation order as the AVX2 kernel, without fused multiply-add
 * (so the two differ in rounding only). */
static void kernel_scalar(int kc, const float *restrict a, const float *restrict b, float *restrict c, ptrdiff_t ldc,
                          bool add) {
    float acc[GEMM_MR][GEMM_NR] = {{0}};
    for (int k = 0; k < kc; k++, a += GEMM_MR, b += GEMM_NR)
        for (int i = 0; i < GEMM_MR; i++)
            for (int j = 0; j < GEMM_NR; j++) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < GEMM_MR; i++)
        for (int j = 0; j < GEMM_NR; j++) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

#if GEMM_HAVE_X86
/* Ask for the tile's rows of C before the k loop: C is often far larger than the caches (the
 * logits are 1024 × 32000) and its rows far apart, so a miss at the end of the kernel would
 * stall for as long as the FMAs took. */
static inline void prefetch_c(const float *c, ptrdiff_t ldc, int n) {
    for (int i = 0; i < GEMM_MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + n - 1), _MM_HINT_T0);
    }
}

/* One row of the tile: two accumulators (cols 0-7, 8-15) take a[row] × the two halves of b. */
#define FMA_ROW(row, lo, hi)                                  \
    do {                                                      \
        __m256 ar = _mm256_broadcast_ss(a + (row));           \
        lo = _mm256_fmadd_ps(ar, b0, lo);                     \
        hi = _mm256_fmadd_ps(ar, b1, hi);                     \
    } while (0)
/* Write one row of the tile back: C = acc, or C + acc. */
#define STORE_ROW(row, lo, hi)                                                      \
    do {                                                                            \
        float *cr = c + (row) * ldc;                                                \
        if (add) {                                                                  \
            lo = _mm256_add_ps(_mm256_loadu_ps(cr), lo);                            \
            hi = _mm256_add_ps(_mm256_loadu_ps(cr + 8), hi);                        \
        }                                                                           \
        _mm256_storeu_ps(cr, lo);                                                   \
        _mm256_storeu_ps(cr + 8, hi);                                               \
    } while (0)

/* 6 × 16 half of a tile in 12 ymm registers; per k step: 2 loads of b, 6 broadcasts of a,
 * 12 FMAs. b points into a packed panel whose rows are GEMM_NR floats apart. */
__attribute__((target("avx2,fma"))) static void kernel_avx2_half(int kc, const float *restrict a,
                                                                 const float *restrict b, float *restrict c,
                                                                 ptrdiff_t ldc, bool add) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps();
    __m256 c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps();
    __m256 c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    prefetch_c(c, ldc, 16);
    for (int k = 0; k < kc; k++, a += GEMM_MR, b += GEMM_NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        FMA_ROW(0, c00, c01);
        FMA_ROW(1, c10, c11);
        FMA_ROW(2, c20, c21);
        FMA_ROW(3, c30, c31);
        FMA_ROW(4, c40, c41);
        FMA_ROW(5, c50, c51);
    }
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
}

/* The 6 × 32 tile as two 6 × 16 halves (16 ymm registers cannot hold 24 accumulators). Each
 * element sees the same operations in the same order as in the AVX-512 kernel. */
__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *restrict a, const float *restrict b,
                                                            float *restrict c, ptrdiff_t ldc, bool add) {
    kernel_avx2_half(kc, a, b, c, ldc, add);
    kernel_avx2_half(kc, a, b + 16, c + 16, ldc, add);
}
#undef FMA_ROW
#undef STORE_ROW

/* The same with 512-bit registers: 6 × 32 in 12 zmm accumulators, per k step 2 loads of b,
 * 6 broadcasts, 12 FMAs of 16 lanes: twice the work of an AVX2 step in the same instructions.
 * Every lane computes acc = fma(a, b, acc) over k in order and then C + acc, exactly as the
 * AVX2 kernel does, so the two give bitwise identical results. */
#define FMA_ROW(row, lo, hi)                                  \
    do {                                                      \
        __m512 ar = _mm512_set1_ps(a[row]);                   \
        lo = _mm512_fmadd_ps(ar, b0, lo);                     \
        hi = _mm512_fmadd_ps(ar, b1, hi);                     \
    } while (0)
#define STORE_ROW(row, lo, hi)                                                      \
    do {                                                                            \
        float *cr = c + (row) * ldc;                                                \
        if (add) {                                                                  \
            lo = _mm512_add_ps(_mm512_loadu_ps(cr), lo);                            \
            hi = _mm512_add_ps(_mm512_loadu_ps(cr + 16), hi);                       \
        }                                                                           \
        _mm512_storeu_ps(cr, lo);                                                   \
        _mm512_storeu_ps(cr + 16, hi);                                              \
    } while (0)
__attribute__((target("avx512f"))) static void kernel_avx512(int kc, const float *restrict a,
                                                              const float *restrict b, float *restrict c,
                                                              ptrdiff_t ldc, bool add) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps();
    __m512 c11 = _mm512_setzero_ps(), c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c40 = _mm512_setzero_ps();
    __m512 c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    prefetch_c(c, ldc, 32);
    for (int k = 0; k < kc; k++, a += GEMM_MR, b += GEMM_NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        FMA_ROW(0, c00, c01);
        FMA_ROW(1, c10, c11);
        FMA_ROW(2, c20, c21);
        FMA_ROW(3, c30, c31);
        FMA_ROW(4, c40, c41);
        FMA_ROW(5, c50, c51);
    }
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
}
#undef FMA_ROW
#undef STORE_ROW
#endif

static bool cpu_has_avx2_fma(void) {
#if GEMM_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static bool cpu_has_avx512(void) {
#if GEMM_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

gemm_kernel_level gemm_best_kernel(void) {
    if (cpu_has_avx512()) return GEMM_AVX512;
    if (cpu_has_avx2_fma()) return GEMM_AVX2;
    return GEMM_SCALAR;
}

/* The level a request for `level` gets on this CPU: the widest it has, up to level. */
static gemm_kernel_level level_available(gemm_kernel_level level) {
    gemm_kernel_level best = gemm_best_kernel();
    return level < best ? level : best;
}

const char *gemm_kernel_name(gemm_kernel_level level) {
    switch (level_available(level)) {
    case GEMM_AVX512: return "avx512";
    case GEMM_AVX2: return "avx2";
    default: return "scalar";
    }
}

/* The micro-kernel of a level this CPU has. */
static gemm_kernel kernel_of(gemm_kernel_level level) {
#if GEMM_HAVE_X86
    if (level == GEMM_AVX512) return kernel_avx512;
    if (level == GEMM_AVX2) return kernel_avx2;
#endif
    (void)level;
    return kernel_scalar;
}

/* ---------------------------------------------------------------------------------------
 * packing
 * ------------------------------------------------------------------------------------- */

/* Rows i0..i0+mc of A, columns k0..k0+kc, as MR-row panels: panel p holds, for each k in order,
 * the MR values A[i0+p·MR+r][k0+k]; rows past mc are zero so the kernel never needs a mask. */
static void pack_a(float *restrict dst, gemm_mat A, int i0, int mc, int k0, int kc) {
    for (int p = 0; p < mc; p += GEMM_MR) {
        int mr = mc - p < GEMM_MR ? mc - p : GEMM_MR;
        const float *src = A.p + (ptrdiff_t)(i0 + p) * A.rs + (ptrdiff_t)k0 * A.cs;
        if (mr < GEMM_MR) memset(dst, 0, sizeof(float) * GEMM_MR * (size_t)kc);
        if (A.cs == 1) {
            /* rows contiguous along k (X, dY): read each row in order, scatter into the panel.
             * The rows may be far apart (dY of the vocabulary projection: 128 KB), too far for
             * the hardware prefetcher: fetch the next panel's row while copying this one. */
            const bool ahead = p + 2 * GEMM_MR <= mc;
            for (int r = 0; r < mr; r++)
                for (int k = 0; k < kc; k++) {
                    if (ahead && (k & 15) == 0) __builtin_prefetch(src + (r + GEMM_MR) * A.rs + k);
                    dst[k * GEMM_MR + r] = src[r * A.rs + k];
                }
        } else if (A.rs == 1) {
            /* columns contiguous (dYᵀ): each k step is one run of mr floats */
            for (int k = 0; k < kc; k++) memcpy(dst + k * GEMM_MR, src + k * A.cs, sizeof(float) * (size_t)mr);
        } else {
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < mr; r++) dst[k * GEMM_MR + r] = src[r * A.rs + k * A.cs];
        }
        dst += GEMM_MR * (size_t)kc;
    }
}

/* Rows k0..k0+kc of B, columns j0..j0+nc, as NR-column panels: panel p holds, for each k in
 * order, the NR values B[k0+k][j0+p·NR+j]; columns past nc are zero. */
static void pack_b(float *restrict dst, gemm_mat B, int k0, int kc, int j0, int nc) {
    for (int p = 0; p < nc; p += GEMM_NR) {
        int nr = nc - p < GEMM_NR ? nc - p : GEMM_NR;
        const float *src = B.p + (ptrdiff_t)k0 * B.rs + (ptrdiff_t)(j0 + p) * B.cs;
        if (nr < GEMM_NR) memset(dst, 0, sizeof(float) * GEMM_NR * (size_t)kc);
        if (B.cs == 1) {
            /* rows contiguous (W in dX = dY·W, X in dW): each k step is one run of nr floats */
            for (int k = 0; k < kc; k++) memcpy(dst + k * GEMM_NR, src + k * B.rs, sizeof(float) * (size_t)nr);
        } else if (B.rs == 1) {
            /* Wᵀ (the forward): each column is a weight row, contiguous along k */
            for (int j = 0; j < nr; j++)
                for (int k = 0; k < kc; k++) dst[k * GEMM_NR + j] = src[j * B.cs + k];
        } else {
            for (int k = 0; k < kc; k++)
                for (int j = 0; j < nr; j++) dst[k * GEMM_NR + j] = src[k * B.rs + j * B.cs];
        }
        dst += GEMM_NR * (size_t)kc;
    }
}

/* ---------------------------------------------------------------------------------------
 * one tile of C
 * ------------------------------------------------------------------------------------- */

/* Everything a tile needs, shared read-only by the threads. */
typedef struct {
    int M, N, K;      /* problem size */
    gemm_mat A, B;    /* operands */
    float *C;         /* output, row stride ldc */
    ptrdiff_t ldc;
    bool accumulate;  /* C += A·B rather than C = A·B */
    int mt, nc;       /* tile size: mt rows (multiple of MR), nc columns (multiple of NR) */
    int tiles_n;      /* tiles along N */
    gemm_kernel kern; /* micro-kernel */
} gemm_job;

/* Rows i0..i0+mc, columns j0..j0+nc of C from packed panels ap (mc × kc) and bp (kc × nc). */
static void gemm_block(const gemm_job *g, const float *ap, const float *bp, int i0, int mc, int j0, int nc, int kc,
                       bool add) {
    for (int jr = 0; jr < nc; jr += GEMM_NR) {
        const int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
        const float *b = bp + (size_t)jr * kc;
        for (int ir = 0; ir < mc; ir += GEMM_MR) {
            const int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
            const float *a = ap + (size_t)ir * kc;
            float *c = g->C + (ptrdiff_t)(i0 + ir) * g->ldc + (j0 + jr);
            if (mr == GEMM_MR && nr == GEMM_NR) {
                g->kern(kc, a, b, c, g->ldc, add);
                continue;
            }
            /* an edge tile: compute the full MR × NR into scratch, keep the part inside C */
            float tmp[GEMM_MR * GEMM_NR];
            g->kern(kc, a, b, tmp, GEMM_NR, false);
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++)
                    c[i * g->ldc + j] = add ? c[i * g->ldc + j] + tmp[i * GEMM_NR + j] : tmp[i * GEMM_NR + j];
        }
    }
}

/* Tile t of C (mt rows × nc columns) with packing buffers ap (MC × KC) and bp (KC × nc). Each
 * K block of B is packed once per tile and reused by all of the tile's rows, MC at a time. */
static void gemm_tile(const gemm_job *g, int t, float *ap, float *bp) {
    const int i0 = (t / g->tiles_n) * g->mt, j0 = (t % g->tiles_n) * g->nc;
    const int mt = g->M - i0 < g->mt ? g->M - i0 : g->mt, nc = g->N - j0 < g->nc ? g->N - j0 : g->nc;
    for (int k0 = 0; k0 < g->K; k0 += GEMM_KC) {
        const int kc = g->K - k0 < GEMM_KC ? g->K - k0 : GEMM_KC;
        const bool add = g->accumulate || k0 > 0; /* the first block overwrites unless accumulating */
        pack_b(bp, g->B, k0, kc, j0, nc);
        for (int ic = 0; ic < mt; ic += GEMM_MC) {
            const int mc = mt - ic < GEMM_MC ? mt - ic : GEMM_MC;
            pack_a(ap, g->A, i0 + ic, mc, k0, kc);
            gemm_block(g, ap, bp, i0 + ic, mc, j0, nc, kc, add);
        }
    }
}

/* The same tile without packing buffers (out of memory): plain loops, same K blocks. */
static void gemm_tile_unpacked(const gemm_job *g, int t) {
    const int i0 = (t / g->tiles_n) * g->mt, j0 = (t % g->tiles_n) * g->nc;
    const int i1 = g->M - i0 < g->mt ? g->M : i0 + g->mt, j1 = g->N - j0 < g->nc ? g->N : j0 + g->nc;
    for (int i = i0; i < i1; i++)
        for (int j = j0; j < j1; j++) {
            float *c = g->C + (ptrdiff_t)i * g->ldc + j;
            for (int k0 = 0; k0 < g->K; k0 += GEMM_KC) {
                const int k1 = g->K - k0 < GEMM_KC ? g->K : k0 + GEMM_KC;
                float acc = 0;
                for (int k = k0; k < k1; k++)
                    acc += g->A.p[(ptrdiff_t)i * g->A.rs + (ptrdiff_t)k * g->A.cs] *
                           g->B.p[(ptrdiff_t)k * g->B.rs + (ptrdiff_t)j * g->B.cs];
                *c = (g->accumulate || k0 > 0) ? *c + acc : acc;
            }
        }
}

/* Run tiles first, first+step, ... < n_tiles on this thread. */
static void gemm_run_tiles(const gemm_job *g, int n_tiles, bool parallel) {
    /* 64-byte aligned packing buffers, one pair per thread */
    const size_t a_bytes = sizeof(float) * GEMM_MC * GEMM_KC;
    const size_t b_bytes = sizeof(float) * (size_t)g->nc * GEMM_KC;
    float *ap = aligned_alloc(64, a_bytes), *bp = aligned_alloc(64, b_bytes);
    if (parallel) {
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < n_tiles; t++) {
            if (ap && bp) gemm_tile(g, t, ap, bp);
            else gemm_tile_unpacked(g, t);
        }
    } else {
        for (int t = 0; t < n_tiles; t++) {
            if (ap && bp) gemm_tile(g, t, ap, bp);
            else gemm_tile_unpacked(g, t);
        }
    }
    free(ap);
    free(bp);
}

/* ---------------------------------------------------------------------------------------
 * entry point
 * ------------------------------------------------------------------------------------- */

void gemm_f32(const gemm_ctx *ctx, int M, int N, int K, gemm_mat A, gemm_mat B, float *C, ptrdiff_t ldc,
              bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (ptrdiff_t)i * ldc, 0, sizeof(float) * (size_t)N);
        return;
    }
    gemm_job g = {M, N, K, A, B, C, ldc, accumulate, 0, GEMM_NC, 0, kernel_of(level_available(ctx->kernel))};
    const bool in_parallel = omp_in_parallel();
    const int threads = in_parallel || ctx->n_threads < 1 ? 1 : ctx->n_threads;
    /* Tiles span all rows (B is then packed once) unless there are too few column strips to
     * give every thread a few tiles to balance with: then rows are split too, and columns last.
     * The tile size never changes a result (see gemm.h), so it may depend on the thread count. */
    g.mt = (M + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    if (g.nc > N) g.nc = (N + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    const long want = threads > 1 ? 4L * threads : 1;
    while (g.mt > 2 * GEMM_MR && (long)((M + g.mt - 1) / g.mt) * ((N + g.nc - 1) / g.nc) < want)
        g.mt = (g.mt / 2 + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    while (g.nc > 2 * GEMM_NR && (long)((M + g.mt - 1) / g.mt) * ((N + g.nc - 1) / g.nc) < want)
        g.nc = (g.nc / 2 + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    g.tiles_n = (N + g.nc - 1) / g.nc;
    const int n_tiles = ((M + g.mt - 1) / g.mt) * g.tiles_n;
    if (in_parallel || threads == 1 || n_tiles == 1) {
        gemm_run_tiles(&g, n_tiles, false);
        return;
    }
#pragma omp parallel num_threads(threads)
    gemm_run_tiles(&g, n_tiles, true);
}
