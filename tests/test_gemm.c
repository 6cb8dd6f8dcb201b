/* test_gemm.c - the blocked GEMM of distill/gemm.c against a double-precision reference.
 *
 * Every case runs the three operand layouts the training ops use (out = X·Wᵀ, dX = dY·W,
 * dW = dYᵀ·X), overwriting and accumulating, with every micro-kernel (scalar, and AVX2 and
 * AVX-512 where the CPU has them), on sizes that are not multiples of the 6 × 16 register tile, the 256-deep K block
 * or the cache tiles, up to slices of the books-22m vocabulary projection (32000 × 256). The
 * error allowed is the textbook bound of blocked summation, (KC − 1 + ⌈K/KC⌉) · u · Σ|a·b|,
 * with u = 2⁻²⁴. Then: results are bitwise identical for 1, 2 and 3 threads and when called from
 * inside a parallel region, AVX2 and AVX-512 agree bitwise, and the parts of C outside the product are never written.
 * The kernel and thread count are the caller's gemm_ctx: each test says which it runs. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/gemm.h"
#include "testutil.h"

#define KC 256 /* GEMM_KC in gemm.c: sets the error bound */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
static float *rand_buf(size_t n) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

/* The three layouts: how A[M][K] and B[K][N] sit in memory. */
enum { LAYOUT_XWT, LAYOUT_DYW, LAYOUT_DYTX, N_LAYOUTS };
static const char *layout_name[N_LAYOUTS] = {"X·Wᵀ", "dY·W", "dYᵀ·X"};

/* A operand stored as the layout stores it: row-major [M][K] or, for dYᵀ, [K][M]. */
static gemm_mat view_a(int layout, const float *p, int M, int K) {
    if (layout == LAYOUT_DYTX) return (gemm_mat){p, 1, M};
    return (gemm_mat){p, K, 1};
}
/* B operand: [N][K] transposed (a weight used as Wᵀ) or row-major [K][N]. */
static gemm_mat view_b(int layout, const float *p, int K, int N) {
    if (layout == LAYOUT_XWT) return (gemm_mat){p, 1, K};
    return (gemm_mat){p, N, 1};
}

/* The settings of a product: up to `level`, on every thread OpenMP would use. */
static gemm_ctx ctx_for(gemm_kernel_level level) {
    return (gemm_ctx){.kernel = level, .n_threads = omp_get_max_threads()};
}

/* Run one case; ldc = N + 3 so the padding columns must stay untouched. */
static void check_case(const gemm_ctx *ctx, int M, int N, int K, int layout, bool accumulate) {
    const ptrdiff_t ldc = N + 3;
    float *a = rand_buf((size_t)M * K), *b = rand_buf((size_t)K * N), *c = rand_buf((size_t)M * ldc);
    float *c0 = malloc(sizeof(float) * (size_t)M * ldc);
    ck_assert_ptr_nonnull(c0);
    memcpy(c0, c, sizeof(float) * (size_t)M * ldc);
    gemm_mat A = view_a(layout, a, M, K), B = view_b(layout, b, K, N);
    gemm_f32(ctx, M, N, K, A, B, c, ldc, accumulate);
    const double u = ldexp(1.0, -24), bound = (KC - 1 + (K + KC - 1) / KC + 1) * u;
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = accumulate ? c0[(size_t)i * ldc + j] : 0, mag = fabs(ref);
            for (int k = 0; k < K; k++) {
                double p = (double)A.p[i * A.rs + k * A.cs] * B.p[k * B.rs + j * B.cs];
                ref += p;
                mag += fabs(p);
            }
            double err = fabs(c[(size_t)i * ldc + j] - ref);
            CK_ASSERT_QUIET(err <= bound * mag + 1e-30, "%s %dx%dx%d%s: C[%d][%d] = %.9g, reference %.9g",
                          layout_name[layout], M, N, K, accumulate ? " (+=)" : "", i, j, c[(size_t)i * ldc + j], ref);
            if (mag > 0 && err / mag > worst) worst = err / mag;
        }
    for (int i = 0; i < M; i++) CK_ASSERT_RANGE(j, N, ldc, c[(size_t)i * ldc + j] == c0[(size_t)i * ldc + j]);
    free(a); free(b); free(c); free(c0);
}

static const int sizes[][3] = {
    {1, 1, 1},    {7, 13, 5},   {6, 16, 256}, {12, 32, 512}, {5, 17, 257},
    {97, 35, 300}, {13, 517, 513}, {101, 260, 31}, {1, 600, 3}, {200, 1, 700},
};

static void run_sizes(gemm_kernel_level level) {
    const gemm_ctx ctx = ctx_for(level);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int layout = 0; layout < N_LAYOUTS; layout++)
            for (int acc = 0; acc < 2; acc++) check_case(&ctx, sizes[s][0], sizes[s][1], sizes[s][2], layout, acc);
}

START_TEST(test_odd_sizes_scalar) {
    ck_assert_str_eq(gemm_kernel_name(GEMM_SCALAR), "scalar");
    run_sizes(GEMM_SCALAR);
}
END_TEST

/* AVX2 and AVX-512 (each where the CPU has it; otherwise the fallback is tested again). */
START_TEST(test_odd_sizes_simd) {
    fprintf(stderr, "test_gemm: up to AVX2 runs %s\n", gemm_kernel_name(GEMM_AVX2));
    run_sizes(GEMM_AVX2);
    fprintf(stderr, "test_gemm: the best kernel is %s\n", gemm_kernel_name(gemm_best_kernel()));
    run_sizes(gemm_best_kernel());
}
END_TEST

/* The AVX2 and AVX-512 kernels do the same FMAs in the same order per element: equal bits. */
START_TEST(test_avx2_equals_avx512) {
    if (gemm_best_kernel() != GEMM_AVX512) {
        SKIP_TEST("this CPU has no AVX-512");
    }
    const gemm_ctx avx512 = ctx_for(GEMM_AVX512), avx2 = ctx_for(GEMM_AVX2);
    ck_assert_str_eq(gemm_kernel_name(GEMM_AVX512), "avx512");
    ck_assert_str_eq(gemm_kernel_name(GEMM_AVX2), "avx2");
    const int M = 50, N = 77, K = 600;
    float *a = rand_buf((size_t)M * K), *b = rand_buf((size_t)K * N), *c1 = rand_buf((size_t)M * N);
    float *c2 = malloc(sizeof(float) * (size_t)M * N);
    ck_assert_ptr_nonnull(c2);
    memcpy(c2, c1, sizeof(float) * (size_t)M * N);
    gemm_f32(&avx512, M, N, K, (gemm_mat){a, K, 1}, (gemm_mat){b, N, 1}, c1, N, true);
    gemm_f32(&avx2, M, N, K, (gemm_mat){a, K, 1}, (gemm_mat){b, N, 1}, c2, N, true);
    ck_assert(memcmp(c1, c2, sizeof(float) * (size_t)M * N) == 0);
    free(a); free(b); free(c1); free(c2);
}
END_TEST

/* Slices of the books-22m vocabulary projection (vocab 32000, dim 256, 1024 tokens a batch):
 * the forward logits of 37 tokens, dX of 37 tokens through all 32000 rows, dW of 211 vocab
 * rows over all 1024 tokens. */
START_TEST(test_vocab_slices) {
    const gemm_ctx ctx = ctx_for(gemm_best_kernel());
    check_case(&ctx, 37, 32000, 256, LAYOUT_XWT, false);
    check_case(&ctx, 37, 256, 32000, LAYOUT_DYW, true);
    check_case(&ctx, 211, 256, 1024, LAYOUT_DYTX, true);
}
END_TEST

/* K == 0: C = 0 (or unchanged when accumulating); M or N == 0: nothing is touched. */
START_TEST(test_empty) {
    const gemm_ctx ctx = ctx_for(gemm_best_kernel());
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {9, 9, 9, 9};
    gemm_f32(&ctx, 2, 2, 0, (gemm_mat){a, 2, 1}, (gemm_mat){b, 2, 1}, c, 2, true);
    for (int i = 0; i < 4; i++) ck_assert(c[i] == 9.0f);
    gemm_f32(&ctx, 0, 2, 2, (gemm_mat){a, 2, 1}, (gemm_mat){b, 2, 1}, c, 2, false);
    gemm_f32(&ctx, 2, 0, 2, (gemm_mat){a, 2, 1}, (gemm_mat){b, 2, 1}, c, 2, false);
    for (int i = 0; i < 4; i++) ck_assert(c[i] == 9.0f);
    gemm_f32(&ctx, 2, 2, 0, (gemm_mat){a, 2, 1}, (gemm_mat){b, 2, 1}, c, 2, false);
    for (int i = 0; i < 4; i++) ck_assert(c[i] == 0.0f);
    /* 2x2 by hand: [1 2; 3 4]·[5 6; 7 8] = [19 22; 43 50], exact in float */
    gemm_f32(&ctx, 2, 2, 2, (gemm_mat){a, 2, 1}, (gemm_mat){b, 2, 1}, c, 2, false);
    ck_assert(c[0] == 19.0f && c[1] == 22.0f && c[2] == 43.0f && c[3] == 50.0f);
}
END_TEST

/* The same product with 1, 2 and 3 threads (the context's count, whatever OpenMP's default), and
 * from inside a parallel region: bitwise equal. */
static void determinism_case(int M, int N, int K, int layout) {
    float *a = rand_buf((size_t)M * K), *b = rand_buf((size_t)K * N), *init = rand_buf((size_t)M * N);
    float *c[4];
    gemm_mat A = view_a(layout, a, M, K), B = view_b(layout, b, K, N);
    for (int r = 0; r < 4; r++) {
        c[r] = malloc(sizeof(float) * (size_t)M * N);
        ck_assert_ptr_nonnull(c[r]);
        memcpy(c[r], init, sizeof(float) * (size_t)M * N);
    }
    for (int r = 0; r < 3; r++) {
        const gemm_ctx ctx = {.kernel = gemm_best_kernel(), .n_threads = r + 1};
        gemm_f32(&ctx, M, N, K, A, B, c[r], N, true);
    }
    const gemm_ctx ctx = {.kernel = gemm_best_kernel(), .n_threads = 2};
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        gemm_f32(&ctx, M, N, K, A, B, c[3], N, true);
    }
    for (int r = 1; r < 4; r++)
        ck_assert_msg(memcmp(c[0], c[r], sizeof(float) * (size_t)M * N) == 0, "%s %dx%dx%d: run %d differs",
                      layout_name[layout], M, N, K, r);
    for (int r = 0; r < 4; r++) free(c[r]);
    free(a); free(b); free(init);
}

START_TEST(test_thread_count_invariance) {
    for (int layout = 0; layout < N_LAYOUTS; layout++) {
        determinism_case(300, 700, 600, layout);
        determinism_case(1024, 40, 1000, layout);
        determinism_case(9, 33, 1100, layout);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_odd_sizes_scalar);
    tcase_add_test(tc, test_odd_sizes_simd);
    tcase_add_test(tc, test_avx2_equals_avx512);
    tcase_add_test(tc, test_vocab_slices);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_thread_count_invariance);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
