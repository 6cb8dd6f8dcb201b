/* test_quants_iq1.c - IQ1_S and IQ1_M (codec/quants_iq1.c) against llama.cpp b4747.
 *
 * tests/data/iquant/W.TYPE are llama-quantize's blocks of two books-22m tensors made with its
 * imatrix and --pure (scripts/make_iq_refs.sh), W.TYPE.dequant.sha256 the SHA-256 of the F32
 * values llama.cpp decodes them to. The source values and the imatrix are in ../shared: the
 * checks that need them skip without it; the others run on synthetic rows.
 *   llama          our quantize_weighted (and _ref) with the imatrix gives llama.cpp's bytes
 *   dequantize     decoding llama.cpp's blocks gives llama.cpp's floats (their SHA-256)
 *   variants       quantize_ref == quantize == quantize_weighted(NULL) == quantize_weighted_ref(NULL)
 *                  (== quantize_weighted(all-ones importance) for IQ1_S)
 *   error          the weighted error of our blocks is well below that of all zeros
 *   threads        two OpenMP threads quantizing at once (the first use of the search tables)
 *                  give the same bytes as one thread afterwards
 *   degenerate     zeros, tiny and huge values, zero importance, NaN, Inf: no crash, finite values
 */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/quants.h"
#include "codec/types.h"
#include "pipeline/sha256.h"
#include "quant/imatrix.h"
#include "testutil.h"

static const struct {
    const char *name;
    int64_t ne0;
} TENSORS[] = {{"blk.0.attn_q.weight", 256}, {"blk.1.ffn_down.weight", 768}};
static const int TYPES[] = {GGML_TYPE_IQ1_S, GGML_TYPE_IQ1_M};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* tests/data/iquant/<name>.<type><suffix> (malloc'd); fails the test when missing. */
static uint8_t *load_data(const char *name, int type, const char *suffix, size_t *len) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/iquant/%s.%s%s", name, type_name(type), suffix);
    uint8_t *d = slurp(path, len);
    ck_assert_msg(d != NULL, "%s not found (run from the project root)", path);
    return d;
}

/* The kernels of a type; fails the test when quant_get does not know it. */
static const quant_kernels *kernels(int type) {
    const quant_kernels *q = quant_get(type);
    ck_assert_msg(q != NULL, "quant_get(%s) is NULL", type_name(type));
    ck_assert_int_eq(q->type, type);
    return q;
}

/* ../shared/reference/quant/<name>.f32 (malloc'd, *rows rows of ne0 values); the file exists. */
static float *load_tensor(const char *path, int64_t ne0, int64_t *rows) {
    size_t len;
    float *x = (float *)slurp(path, &len);
    ck_assert_msg(x != NULL, "cannot read %s", path);
    ck_assert_uint_eq(len % (sizeof(float) * (size_t)ne0), 0);
    *rows = (int64_t)(len / sizeof(float)) / ne0;
    return x;
}

/* Quantize rows x ne0 values with quantize_weighted-like kernel f (importance may be NULL). */
static uint8_t *quantize_rows(int type, void (*f)(const float *, void *, int64_t, const float *), const float *x,
                              int64_t rows, int64_t ne0, const float *importance) {
    const size_t rb = type_nbytes(type, ne0);
    uint8_t *q = malloc(rb * (size_t)rows);
    ck_assert_ptr_nonnull(q);
    for (int64_t r = 0; r < rows; ++r) f(x + r * ne0, q + r * rb, ne0, importance);
    return q;
}

/* Blocks of a and b (n bytes, blocks of type) that differ. */
static int differing_blocks(int type, const uint8_t *a, const uint8_t *b, size_t n) {
    const size_t bb = type_get(type)->type_size;
    int differ = 0;
    for (size_t i = 0; i < n / bb; ++i) differ += memcmp(a + i * bb, b + i * bb, bb) != 0;
    return differ;
}

/* Deterministic synthetic rows: a mix of scales, repeated values (ties in the sort), a zero
 * sub-block and an outlier, so every branch of the search runs. */
static void synthetic_rows(float *x, int64_t n) {
    uint32_t s = 12345;
    for (int64_t i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        const float u = (float)(s >> 8) / 16777216.f - 0.5f; /* [-0.5, 0.5) */
        const float scale = (i / 256) % 3 == 0 ? 0.02f : (i / 256) % 3 == 1 ? 1.f : 300.f;
        x[i] = scale * u;
        if (i % 7 == 3) x[i] = x[i - 1];           /* ties */
        if (i % 256 >= 64 && i % 256 < 96) x[i] = 0; /* an all-zero sub-block */
    }
    x[5] = 40.f; /* an outlier in the first super-block */
}

/* ------------------------------------------------------------------ llama.cpp's bytes */

/* Our quantization of llama.cpp's source values with llama.cpp's imatrix: its bytes exactly. */
START_TEST(test_iq1_weighted_equals_llama) {
    char *impath = SHARED_OR_SKIP("reference/books-22m-imatrix.dat");
    imatrix im;
    slmc_err err = {0};
    ck_assert_msg(imatrix_load(&im, impath, &err) == 0, "%s", err.msg);
    free(impath);
    for (size_t t = 0; t < COUNT(TENSORS); ++t) {
        char rel[128];
        snprintf(rel, sizeof rel, "reference/quant/%s.f32", TENSORS[t].name);
        char *fp = SHARED_OR_SKIP(rel);
        const int64_t ne0 = TENSORS[t].ne0;
        int64_t rows;
        float *x = load_tensor(fp, ne0, &rows);
        free(fp);
        int64_t n_imp = 0;
        const float *imp = imatrix_importance(&im, TENSORS[t].name, &n_imp);
        ck_assert_ptr_nonnull(imp);
        ck_assert_int_eq(n_imp, ne0);
        for (size_t k = 0; k < COUNT(TYPES); ++k) {
            const int type = TYPES[k];
            const quant_kernels *q = kernels(type);
            size_t want_len;
            uint8_t *want = load_data(TENSORS[t].name, type, "", &want_len);
            ck_assert_uint_eq(want_len, type_nbytes(type, ne0) * (size_t)rows);
            uint8_t *got = quantize_rows(type, q->quantize_weighted, x, rows, ne0, imp);
            uint8_t *got_ref = quantize_rows(type, q->quantize_weighted_ref, x, rows, ne0, imp);
            const size_t nblocks = want_len / type_get(type)->type_size;
            int differ = differing_blocks(type, got, want, want_len);
            CK_ASSERT_QUIET(differ == 0, "%s %s: %d of %zu blocks differ from llama-quantize's", TENSORS[t].name,
                          type_name(type), differ, nblocks);
            differ = differing_blocks(type, got_ref, want, want_len);
            CK_ASSERT_QUIET(differ == 0, "%s %s: quantize_weighted_ref: %d of %zu blocks differ from llama-quantize's",
                          TENSORS[t].name, type_name(type), differ, nblocks);
            free(got);
            free(got_ref);
            free(want);
        }
        free(x);
    }
    imatrix_free(&im);
}
END_TEST

/* Decoding llama.cpp's blocks gives the values llama.cpp decodes them to (their SHA-256). */
START_TEST(test_iq1_dequantize_llama_blocks) {
    for (size_t t = 0; t < COUNT(TENSORS); ++t)
        for (size_t k = 0; k < COUNT(TYPES); ++k) {
            const int type = TYPES[k];
            kernels(type);
            size_t qlen, hlen;
            uint8_t *blocks = load_data(TENSORS[t].name, type, "", &qlen);
            char *hex = (char *)load_data(TENSORS[t].name, type, ".dequant.sha256", &hlen);
            ck_assert_uint_ge(hlen, 64);
            ck_assert_uint_eq(qlen % type_get(type)->type_size, 0);
            const int64_t n = (int64_t)(qlen / type_get(type)->type_size) * type_get(type)->blck_size;
            ck_assert_int_eq(n % TENSORS[t].ne0, 0);
            float *y = malloc(sizeof(float) * (size_t)n);
            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(quant_dequantize(type, blocks, y, n), 0);
            char got[65];
            sha256_buf_hex(y, sizeof(float) * (size_t)n, got);
            CK_ASSERT_QUIET(memcmp(got, hex, 64) == 0, "%s %s: dequantized values differ from llama.cpp's (%s, want %.64s)",
                          TENSORS[t].name, type_name(type), got, hex);
            free(y);
            free(hex);
            free(blocks);
        }
}
END_TEST

/* ------------------------------------------------------------------ the variants agree */

/* Wrappers so the unweighted kernels fit quantize_rows. */
static const quant_kernels *current;
static void via_ref(const float *x, void *y, int64_t n, const float *w) { (void)w; current->quantize_ref(x, y, n); }
static void via_fast(const float *x, void *y, int64_t n, const float *w) { (void)w; current->quantize(x, y, n); }

/* quantize_ref == quantize == quantize_weighted(NULL) == quantize_weighted_ref(NULL), and for
 * IQ1_S == quantize_weighted(ones), on synthetic rows of 3 super-blocks. */
START_TEST(test_iq1_variants_agree) {
    enum { NE0 = 768, ROWS = 8 };
    float *x = malloc(sizeof(float) * NE0 * ROWS), ones[NE0];
    ck_assert_ptr_nonnull(x);
    synthetic_rows(x, NE0 * ROWS);
    for (int i = 0; i < NE0; ++i) ones[i] = 1.f;
    for (size_t k = 0; k < COUNT(TYPES); ++k) {
        const int type = TYPES[k];
        const quant_kernels *q = current = kernels(type);
        const size_t len = type_nbytes(type, NE0) * ROWS;
        uint8_t *ref = quantize_rows(type, via_ref, x, ROWS, NE0, NULL);
        uint8_t *fast = quantize_rows(type, via_fast, x, ROWS, NE0, NULL);
        uint8_t *wnull = quantize_rows(type, q->quantize_weighted, x, ROWS, NE0, NULL);
        uint8_t *wrefnull = quantize_rows(type, q->quantize_weighted_ref, x, ROWS, NE0, NULL);
        uint8_t *wones = quantize_rows(type, q->quantize_weighted, x, ROWS, NE0, ones);
        ck_assert_msg(memcmp(ref, fast, len) == 0, "%s: quantize != quantize_ref", type_name(type));
        ck_assert_msg(memcmp(ref, wnull, len) == 0, "%s: quantize_weighted(NULL) != quantize_ref", type_name(type));
        ck_assert_msg(memcmp(ref, wrefnull, len) == 0, "%s: quantize_weighted_ref(NULL) != quantize_ref",
                      type_name(type));
        /* IQ1_S: ggml has no path without an importance, NULL means 1 everywhere; IQ1_M: ggml's own
         * weights x^2, which differ */
        if (type == GGML_TYPE_IQ1_S)
            CK_ASSERT_QUIET(memcmp(ref, wones, len) == 0, "%s: importance NULL != importance all ones", type_name(type));
        else
            CK_ASSERT_QUIET(memcmp(ref, wones, len) != 0, "%s: importance NULL == importance all ones", type_name(type));
        /* and the blocks are not trivial: some scale is non-zero */
        float *y = malloc(sizeof(float) * NE0 * ROWS);
        ck_assert_ptr_nonnull(y);
        ck_assert_int_eq(quant_dequantize(type, ref, y, NE0 * ROWS), 0);
        double energy = 0;
        for (int i = 0; i < NE0 * ROWS; ++i) energy += (double)y[i] * y[i];
        ck_assert(energy > 0);
        free(y);
        free(ref); free(fast); free(wnull); free(wrefnull); free(wones);
    }
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ sanity of the error */

/* sum over values of importance * (x - y)^2 */
static double weighted_sq_error(const float *x, const float *y, int64_t rows, int64_t ne0, const float *imp) {
    double s = 0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < ne0; ++j) {
            const double d = (double)x[r * ne0 + j] - (y ? y[r * ne0 + j] : 0.f);
            s += (imp ? imp[j] : 1.0) * d * d;
        }
    return s;
}

/* On the reference tensors with the imatrix, the weighted error of our blocks is well below the
 * error of all zeros (the ratio is on stderr), and IQ1_M (more bits) is not worse than IQ1_S. */
START_TEST(test_iq1_weighted_error) {
    char *impath = SHARED_OR_SKIP("reference/books-22m-imatrix.dat");
    imatrix im;
    slmc_err err = {0};
    ck_assert_msg(imatrix_load(&im, impath, &err) == 0, "%s", err.msg);
    free(impath);
    for (size_t t = 0; t < COUNT(TENSORS); ++t) {
        char rel[128];
        snprintf(rel, sizeof rel, "reference/quant/%s.f32", TENSORS[t].name);
        char *fp = SHARED_OR_SKIP(rel);
        const int64_t ne0 = TENSORS[t].ne0;
        int64_t rows, n_imp = 0;
        float *x = load_tensor(fp, ne0, &rows);
        free(fp);
        const float *imp = imatrix_importance(&im, TENSORS[t].name, &n_imp);
        ck_assert_ptr_nonnull(imp);
        const double zero_err = weighted_sq_error(x, NULL, rows, ne0, imp);
        ck_assert(zero_err > 0);
        double ratio[COUNT(TYPES)];
        for (size_t k = 0; k < COUNT(TYPES); ++k) {
            const int type = TYPES[k];
            uint8_t *q = quantize_rows(type, kernels(type)->quantize_weighted, x, rows, ne0, imp);
            float *y = malloc(sizeof(float) * (size_t)(rows * ne0));
            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(quant_dequantize(type, q, y, rows * ne0), 0);
            CK_ASSERT_RANGE(i, 0, rows * ne0, isfinite(y[i]));
            ratio[k] = weighted_sq_error(x, y, rows, ne0, imp) / zero_err;
            fprintf(stderr, "%s %s: weighted error / error of zeros = %.4f\n", TENSORS[t].name, type_name(type),
                    ratio[k]);
            CK_ASSERT_QUIET(ratio[k] < 0.5, "%s %s: weighted error ratio %.4f is not well below 1", TENSORS[t].name,
                          type_name(type), ratio[k]);
            free(y);
            free(q);
        }
        ck_assert_msg(ratio[1] <= ratio[0] * 1.05, "%s: IQ1_M (%.4f) worse than IQ1_S (%.4f)", TENSORS[t].name,
                      ratio[1], ratio[0]);
        free(x);
    }
    imatrix_free(&im);
}
END_TEST

/* ------------------------------------------------------------------ threads */

/* Two threads quantize at once in a fresh process (Check forks per test), so they race on the
 * first use of the search tables; both results equal a one-thread run made afterwards. */
START_TEST(test_iq1_two_threads_first_use) {
    enum { NE0 = 768, ROWS = 16 };
    float *x = malloc(sizeof(float) * NE0 * ROWS);
    ck_assert_ptr_nonnull(x);
    synthetic_rows(x, NE0 * ROWS);
    uint8_t *got[2][COUNT(TYPES)];
    int nthreads = 0;
#pragma omp parallel num_threads(2)
    {
        const int t = omp_get_thread_num();
#pragma omp single
        nthreads = omp_get_num_threads();
        for (size_t k = 0; k < COUNT(TYPES); ++k) {
            const int type = TYPES[(k + (size_t)t) % COUNT(TYPES)]; /* thread 1 starts with the other type */
            const quant_kernels *q = quant_get(type);
            const size_t rb = type_nbytes(type, NE0);
            uint8_t *out = malloc(rb * ROWS);
            if (out && q)
                for (int r = 0; r < ROWS; ++r) q->quantize_weighted(x + r * NE0, out + r * rb, NE0, NULL);
            got[t][(k + (size_t)t) % COUNT(TYPES)] = out;
        }
    }
    if (nthreads < 2) SKIP_TEST("OpenMP gave %d thread(s), not 2", nthreads);
    for (size_t k = 0; k < COUNT(TYPES); ++k) {
        const int type = TYPES[k];
        const size_t len = type_nbytes(type, NE0) * ROWS;
        uint8_t *serial = quantize_rows(type, kernels(type)->quantize_weighted, x, ROWS, NE0, NULL);
        for (int t = 0; t < 2; ++t) {
            ck_assert_ptr_nonnull(got[t][k]);
            CK_ASSERT_QUIET(memcmp(got[t][k], serial, len) == 0, "%s: thread %d's blocks differ (%d blocks)",
                          type_name(type), t, differing_blocks(type, got[t][k], serial, len));
            free(got[t][k]);
        }
        free(serial);
    }
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ degenerate inputs */

/* Zeros, tiny values, huge values, zero importance, a NaN or an Inf never crash and decode to
 * finite values; all zeros decode to llama.cpp's "zero" block (scale 0: every value 0). */
START_TEST(test_iq1_degenerate_inputs) {
    enum { N = 512 };
    float x[N], imp[N], y[N];
    for (size_t k = 0; k < COUNT(TYPES); ++k) {
        const int type = TYPES[k];
        const quant_kernels *q = kernels(type);
        uint8_t blocks[2 * 56];
        ck_assert_uint_le(type_nbytes(type, N), sizeof blocks);
        for (int c = 0; c < 6; ++c) {
            for (int i = 0; i < N; ++i) {
                imp[i] = 1.f;
                x[i] = c == 0 ? 0.f : c == 1 ? 1e-20f * (float)((i % 5) - 2) : c == 2 ? 1e30f * (float)((i % 3) - 1)
                                                                                        : (float)((i % 9) - 4);
            }
            if (c == 3)
                for (int i = 0; i < 64; ++i) imp[i] = 0.f; /* zero importance: llama.cpp would abort */
            if (c >= 4) { /* one NaN / one Inf among ordinary values */
                for (int i = 0; i < N; ++i) x[i] = (float)((i % 9) - 4);
                x[100] = c == 4 ? NAN : INFINITY;
            }
            q->quantize_weighted(x, blocks, N, imp);
            q->dequantize(blocks, y, N);
            for (int i = 0; i < N; ++i) CK_ASSERT_QUIET(isfinite(y[i]), "%s case %d: y[%d] = %g", type_name(type), c, i, y[i]);
            if (c == 0)
                for (int i = 0; i < N; ++i) CK_ASSERT_QUIET(y[i] == 0.f, "%s: zeros decode to %g", type_name(type), y[i]);
            if (c == 3) { /* the weighted part is still quantized well: error below that of zeros */
                double e = 0, e0 = 0;
                for (int i = 64; i < N; ++i) {
                    e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                    e0 += (double)x[i] * x[i];
                }
                CK_ASSERT_QUIET(e < 0.5 * e0, "%s: error %g vs %g", type_name(type), e, e0);
            }
        }
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("quants_iq1");
    TCase *tc = tcase_create("llama");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_iq1_weighted_equals_llama);
    tcase_add_test(tc, test_iq1_dequantize_llama_blocks);
    tcase_add_test(tc, test_iq1_variants_agree);
    tcase_add_test(tc, test_iq1_weighted_error);
    tcase_add_test(tc, test_iq1_two_threads_first_use);
    tcase_add_test(tc, test_iq1_degenerate_inputs);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
