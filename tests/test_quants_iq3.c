/* test_quants_iq3.c - the IQ3_XXS, IQ3_S, TQ1_0 and TQ2_0 kernels (codec/quants_iq3.c) against
 * llama.cpp b4747.
 *
 * Reference vectors: tests/data/iquant/W.TYPE are llama-quantize's blocks of two tensors W of
 * books-22m (scripts/make_iq_refs.sh: --pure, llama.cpp's imatrix, which the TQ types ignore),
 * W.TYPE.dequant.sha256 the SHA-256 of the F32 values llama.cpp decodes them to, and
 * W.TYPE.noimatrix (IQ3_XXS, IQ3_S) the same command's blocks without the imatrix:
 *   llama-quantize --pure --output-tensor-type q8_0 --token-embedding-type q8_0
 *                  books-22m-BF16.gguf OUT.gguf TYPE
 *   python3 scripts/gguf_tensor.py OUT.gguf W tests/data/iquant/W.TYPE.noimatrix
 * The source values W.f32 and the imatrix are in ../shared/reference/ (those tests skip without).
 *   - our quantize_weighted with the imatrix gives llama-quantize's bytes, row by row, and our
 *     quantize_ref without one gives its no-imatrix bytes;
 *   - our dequantization of llama.cpp's blocks hashes to llama.cpp's;
 *   - the kernel entries agree with each other; the TQ types ignore the importance;
 *   - the weighted error is well below that of storing zeros;
 *   - exact ternary input comes back exactly; hand-built blocks decode to the documented values;
 *     zeros and garbage inputs are safe; an all-zero group of IQ3_S does not shift the others;
 *   - two threads quantizing at once (first use of the search tables) agree with one.
 */
#include "codec/quants.h"
#include "codec/types.h"
#include "codec/blocks.h"
#include "codec/iq_grids.h"
#include "pipeline/sha256.h"
#include "quant/imatrix.h"
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const int TYPES[] = {GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S, GGML_TYPE_TQ1_0, GGML_TYPE_TQ2_0};
static const int IQ3_TYPES[] = {GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S};

typedef struct ref_tensor {
    const char *name; /* GGUF name = file name prefix */
    int64_t ne0;      /* values per row */
    int64_t rows;
} ref_tensor;

static const ref_tensor TENSORS[] = {
    {"blk.0.attn_q.weight", 256, 256},
    {"blk.1.ffn_down.weight", 768, 256},
};

/* ------------------------------------------------------------------ helpers */

/* W.f32 from ../shared (malloc'd, rows * ne0 floats), or NULL when missing. */
static float *load_source(const ref_tensor *t) {
    char rel[256];
    snprintf(rel, sizeof rel, "reference/quant/%s.f32", t->name);
    char *path = shared_path(rel);
    if (!path) return NULL;
    size_t len;
    float *x = (float *)slurp(path, &len);
    free(path);
    ck_assert_ptr_nonnull(x);
    ck_assert_uint_eq(len, (size_t)(t->rows * t->ne0) * sizeof(float));
    return x;
}

/* tests/data/iquant/<name>.<TYPE><suffix> (malloc'd), NULL when missing. */
static uint8_t *load_data(const ref_tensor *t, int type, const char *suffix, size_t *len) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/iquant/%s.%s%s", t->name, type_name(type), suffix);
    return slurp(path, len);
}

/* llama.cpp's reference file for (type, tensor) must be len bytes of that type's blocks. */
static void assert_ref_size(const ref_tensor *t, int type, const char *suffix, size_t len) {
    const uint64_t want = type_nbytes(type, t->rows * t->ne0);
    ck_assert_msg(len == want, "tests/data/iquant/%s.%s%s holds %zu bytes, not %llu", t->name, type_name(type), suffix,
                  len, (unsigned long long)want);
}

/* The SHA-256 (hex) of n floats as stored (little-endian). */
static void hash_floats(const float *y, int64_t n, char hex[65]) { sha256_buf_hex(y, (size_t)n * sizeof(float), hex); }

/* Quantize rows of x with quantize_weighted (weighted_ref when ref) and `importance` (one row's
 * worth, shared by all rows; NULL for none). */
static uint8_t *quantize_rows(int type, const float *x, int64_t rows, int64_t ne0, const float *importance, bool ref) {
    const quant_kernels *k = quant_get(type);
    const size_t row_bytes = type_nbytes(type, ne0);
    uint8_t *q = malloc(row_bytes * (size_t)rows);
    ck_assert_ptr_nonnull(q);
    for (int64_t r = 0; r < rows; ++r)
        (ref ? k->quantize_weighted_ref : k->quantize_weighted)(x + r * ne0, q + (size_t)r * row_bytes, ne0,
                                                                 importance);
    return q;
}

/* Blocks of `type` that differ between a and b (n values). */
static int64_t differing_blocks(int type, const uint8_t *a, const uint8_t *b, int64_t n) {
    const type_info *ti = type_get(type);
    int64_t diff = 0;
    for (int64_t i = 0; i < n / ti->blck_size; ++i)
        diff += memcmp(a + i * ti->type_size, b + i * ti->type_size, ti->type_size) != 0;
    return diff;
}

/* sum imp_j (x - y)^2 / sum imp_j x^2 over rows of ne0 values (imp NULL: 1): the error relative
 * to that of storing zeros. */
static double weighted_error_ratio(const float *x, const float *y, int64_t rows, int64_t ne0, const float *imp) {
    double err = 0, energy = 0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < ne0; ++j) {
            const double w = imp ? imp[j] : 1.0, v = x[r * ne0 + j], d = v - y[r * ne0 + j];
            err += w * d * d;
            energy += w * v * v;
        }
    return err / energy;
}

/* The largest error ratio accepted for a type on real weights: the IQ3 types keep most of the
 * signal; the ternary ones (d = the block's largest magnitude, so most values round to 0) are
 * meant for ternary-trained models, not these, and only have to beat zeros clearly. */
static double max_error_ratio(int type) { return type == GGML_TYPE_IQ3_XXS || type == GGML_TYPE_IQ3_S ? 0.1 : 0.75; }

static double ms_between(const struct timespec *t0, const struct timespec *t1) {
    return (double)(t1->tv_sec - t0->tv_sec) * 1e3 + (double)(t1->tv_nsec - t0->tv_nsec) / 1e6;
}

/* Deterministic pseudo-random numbers (xorshift64*): uniform in [0,1) and gaussian. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}
static float gaussian(void) {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

/* rows x ne0 synthetic weights: gaussian rows of varying scale, some heavy-tailed, one group of
 * 32 zeros, one of tiny values, one all-positive. */
static float *synthetic_rows(int64_t rows, int64_t ne0) {
    float *x = malloc((size_t)(rows * ne0) * sizeof(float));
    ck_assert_ptr_nonnull(x);
    for (int64_t r = 0; r < rows; ++r) {
        const float scale = (float)(0.01 * pow(10, 2 * uniform()));
        for (int64_t j = 0; j < ne0; ++j) {
            float v = gaussian() * scale;
            if (r % 3 == 1) v = v * v * v / scale / scale; /* heavy tails */
            x[r * ne0 + j] = v;
        }
    }
    for (int j = 0; j < 32; ++j) {
        x[32 + j] = 0;                              /* row 0: a zero group */
        x[ne0 + 64 + j] = 1e-20f * (float)(j - 16); /* row 1: a tiny group */
        x[2 * ne0 + 96 + j] = fabsf(x[2 * ne0 + 96 + j]);
    }
    return x;
}

/* ne0 positive importance values spread over 3 decades. */
static float *synthetic_importance(int64_t ne0) {
    float *imp = malloc((size_t)ne0 * sizeof(float));
    ck_assert_ptr_nonnull(imp);
    for (int64_t j = 0; j < ne0; ++j) imp[j] = (float)pow(10, 3 * uniform() - 1);
    return imp;
}

/* ------------------------------------------------------------------ against llama.cpp */

START_TEST(test_table) {
    for (int i = 0; i < COUNT(TYPES); ++i) {
        const quant_kernels *k = quant_get(TYPES[i]);
        ck_assert_msg(k != NULL, "quant_get(%s) is NULL", type_name(TYPES[i]));
        ck_assert_int_eq(k->type, TYPES[i]);
        ck_assert(k->quantize_ref && k->quantize && k->quantize_weighted && k->quantize_weighted_ref && k->dequantize);
    }
}
END_TEST

/* quantize_weighted with llama.cpp's imatrix gives llama-quantize's blocks (and weighted_ref the
 * same); our blocks decode to llama.cpp's floats, with a weighted error well below that of zeros.
 * Quantizing ffn_down (all 256 rows) is timed (stderr). _i = 2 * type index + tensor index. */
START_TEST(test_llama_bytes) {
    const int type = TYPES[_i / COUNT(TENSORS)];
    const ref_tensor *t = &TENSORS[_i % COUNT(TENSORS)];
    char *imatrix_path = SHARED_OR_SKIP("reference/books-22m-imatrix.dat");
    float *x = load_source(t);
    if (!x) {
        free(imatrix_path);
        SKIP_TEST("../shared/reference/quant/%s.f32 not found", t->name);
    }
    size_t len;
    uint8_t *want = load_data(t, type, "", &len);
    ck_assert_msg(want != NULL, "tests/data/iquant/%s.%s missing", t->name, type_name(type));
    assert_ref_size(t, type, "", len);
    imatrix im;
    slmc_err err = {{0}};
    ck_assert_msg(imatrix_load(&im, imatrix_path, &err) == 0, "%s", err.msg);
    int64_t n_imp;
    const float *imp = imatrix_importance(&im, t->name, &n_imp);
    ck_assert_msg(imp != NULL && n_imp == t->ne0, "imatrix has no entry of %lld values for %s", (long long)t->ne0,
                  t->name);

    const int64_t n = t->rows * t->ne0;
    /* the first row alone builds the search tables (once per process): timed apart */
    struct timespec t0, t1, t2;
    uint8_t first_row[sizeof(block_iq3_s) * 3];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    quant_get(type)->quantize_weighted(x, first_row, t->ne0, imp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    uint8_t *got = quantize_rows(type, x, t->rows, t->ne0, imp, false);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (t->ne0 == 768)
        fprintf(stderr, "timing: %s %s (%lld rows x %lld) quantized in %.1f ms (first row, with the tables: %.1f ms)\n",
                type_name(type), t->name, (long long)t->rows, (long long)t->ne0, ms_between(&t1, &t2),
                ms_between(&t0, &t1));
    const int64_t diff = differing_blocks(type, got, want, n);
    ck_assert_msg(diff == 0, "%s %s: %lld of %lld blocks differ from llama-quantize's", type_name(type), t->name,
                  (long long)diff, (long long)(n / QK_K));
    uint8_t *got_ref = quantize_rows(type, x, t->rows, t->ne0, imp, true);
    ck_assert_msg(memcmp(got_ref, got, len) == 0, "%s %s: quantize_weighted_ref differs in %lld blocks",
                  type_name(type), t->name, (long long)differing_blocks(type, got, got_ref, n));

    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(quant_dequantize(type, got, y, n), 0);
    char hex[65];
    hash_floats(y, n, hex);
    uint8_t *want_hex = load_data(t, type, ".dequant.sha256", NULL);
    ck_assert_ptr_nonnull(want_hex);
    ck_assert_msg(strncmp(hex, (const char *)want_hex, 64) == 0, "%s %s: dequantized hash %s, llama.cpp's %.64s",
                  type_name(type), t->name, hex, (const char *)want_hex);

    const double ratio = weighted_error_ratio(x, y, t->rows, t->ne0, imp);
    fprintf(stderr, "quality: %s %s weighted error / that of zeros = %.4f\n", type_name(type), t->name, ratio);
    ck_assert_msg(ratio < max_error_ratio(type), "%s %s: weighted error ratio %g", type_name(type), t->name, ratio);

    free(want_hex);
    free(y);
    free(got_ref);
    free(got);
    imatrix_free(&im);
    free(want);
    free(x);
    free(imatrix_path);
}
END_TEST

/* Without an importance vector, quantize_ref gives llama-quantize's no-imatrix blocks (IQ3_XXS,
 * IQ3_S; _i = 2 * type index + tensor index). */
START_TEST(test_llama_bytes_no_imatrix) {
    const int type = IQ3_TYPES[_i / COUNT(TENSORS)];
    const ref_tensor *t = &TENSORS[_i % COUNT(TENSORS)];
    float *x = load_source(t);
    if (!x) SKIP_TEST("../shared/reference/quant/%s.f32 not found", t->name);
    size_t len;
    uint8_t *want = load_data(t, type, ".noimatrix", &len);
    ck_assert_msg(want != NULL, "tests/data/iquant/%s.%s.noimatrix missing", t->name, type_name(type));
    assert_ref_size(t, type, ".noimatrix", len);
    const quant_kernels *k = quant_get(type);
    const size_t row_bytes = type_nbytes(type, t->ne0);
    uint8_t *got = malloc(len);
    ck_assert_ptr_nonnull(got);
    for (int64_t r = 0; r < t->rows; ++r) k->quantize_ref(x + r * t->ne0, got + (size_t)r * row_bytes, t->ne0);
    const int64_t n = t->rows * t->ne0;
    const int64_t diff = differing_blocks(type, got, want, n);
    ck_assert_msg(diff == 0, "%s %s: %lld of %lld blocks differ from llama-quantize's (no imatrix)", type_name(type),
                  t->name, (long long)diff, (long long)(n / QK_K));
    /* sanity: error weighted by x^2 (what the search minimises here) far below zeros' */
    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    k->dequantize(got, y, n);
    const double ratio = weighted_error_ratio(x, y, t->rows, t->ne0, NULL);
    ck_assert_msg(ratio < 0.1, "%s %s: error ratio %g", type_name(type), t->name, ratio);
    free(y);
    free(got);
    free(want);
    free(x);
}
END_TEST

/* Decoding llama.cpp's blocks gives its floats (no ../shared needed). */
START_TEST(test_llama_dequant) {
    const int type = TYPES[_i / COUNT(TENSORS)];
    const ref_tensor *t = &TENSORS[_i % COUNT(TENSORS)];
    size_t len;
    uint8_t *blocks = load_data(t, type, "", &len);
    ck_assert_msg(blocks != NULL, "tests/data/iquant/%s.%s missing", t->name, type_name(type));
    assert_ref_size(t, type, "", len);
    const int64_t n = t->rows * t->ne0;
    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(quant_dequantize(type, blocks, y, n), 0);
    char hex[65];
    hash_floats(y, n, hex);
    uint8_t *want_hex = load_data(t, type, ".dequant.sha256", NULL);
    ck_assert_ptr_nonnull(want_hex);
    ck_assert_msg(strncmp(hex, (const char *)want_hex, 64) == 0, "%s %s: hash %s, llama.cpp's %.64s", type_name(type),
                  t->name, hex, (const char *)want_hex);
    int64_t nonzero = 0;
    CK_ASSERT_RANGE(i, 0, n, isfinite(y[i]));
    for (int64_t i = 0; i < n; ++i) {
        nonzero += y[i] != 0;
    }
    ck_assert_int_gt(nonzero, n / 8);
    free(want_hex);
    free(y);
    free(blocks);
}
END_TEST

/* ------------------------------------------------------------------ the kernel entries */

/* quantize_ref == quantize == quantize_weighted(NULL) == quantize_weighted_ref(NULL), and
 * quantize_weighted == quantize_weighted_ref with an importance vector, which changes the IQ3
 * blocks and leaves the TQ blocks alone. Every byte is written. */
START_TEST(test_entries_agree) {
    const int64_t rows = 12, ne0 = 512, n = rows * ne0;
    float *x = synthetic_rows(rows, ne0);
    float *imp = synthetic_importance(ne0);
    for (int i = 0; i < COUNT(TYPES); ++i) {
        const int type = TYPES[i];
        const quant_kernels *k = quant_get(type);
        const size_t row_bytes = type_nbytes(type, ne0), bytes = row_bytes * (size_t)rows;
        uint8_t *q[6];
        for (int v = 0; v < 6; ++v) {
            q[v] = malloc(bytes);
            ck_assert_ptr_nonnull(q[v]);
            memset(q[v], 0xA5 + v, bytes);
        }
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * ne0;
            const size_t off = (size_t)r * row_bytes;
            k->quantize_ref(xr, q[0] + off, ne0);
            k->quantize(xr, q[1] + off, ne0);
            k->quantize_weighted(xr, q[2] + off, ne0, NULL);
            k->quantize_weighted_ref(xr, q[3] + off, ne0, NULL);
            k->quantize_weighted(xr, q[4] + off, ne0, imp);
            k->quantize_weighted_ref(xr, q[5] + off, ne0, imp);
        }
        static const char *const what[] = {"quantize_ref", "quantize", "weighted(NULL)", "weighted_ref(NULL)"};
        for (int v = 1; v < 4; ++v)
            CK_ASSERT_QUIET(memcmp(q[0], q[v], bytes) == 0, "%s: %s differs from quantize_ref in %lld blocks",
                          type_name(type), what[v], (long long)differing_blocks(type, q[0], q[v], n));
        ck_assert_msg(memcmp(q[4], q[5], bytes) == 0, "%s: weighted and weighted_ref differ", type_name(type));
        const int64_t changed = differing_blocks(type, q[0], q[4], n);
        if (type == GGML_TYPE_TQ1_0 || type == GGML_TYPE_TQ2_0)
            CK_ASSERT_QUIET(changed == 0, "%s: an importance vector changed %lld blocks", type_name(type),
                          (long long)changed);
        else
            CK_ASSERT_QUIET(changed > n / QK_K / 2, "%s: an importance vector changed only %lld of %lld blocks",
                          type_name(type), (long long)changed, (long long)(n / QK_K));
        for (int v = 0; v < 6; ++v) free(q[v]);
    }
    free(imp);
    free(x);
}
END_TEST

/* On gaussian weights the weighted error is well below that of zeros, and IQ3_S (3.44 bits per
 * value) beats IQ3_XXS (3.06), which beats both ternary types. */
START_TEST(test_error_sanity) {
    const int64_t rows = 32, ne0 = 1024, n = rows * ne0;
    float *x = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian() * 0.02f;
    float *imp = synthetic_importance(ne0);
    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    double ratio[COUNT(TYPES)];
    for (int i = 0; i < COUNT(TYPES); ++i) {
        uint8_t *q = quantize_rows(TYPES[i], x, rows, ne0, imp, false);
        quant_get(TYPES[i])->dequantize(q, y, n);
        ratio[i] = weighted_error_ratio(x, y, rows, ne0, imp);
        fprintf(stderr, "quality: %s weighted error / that of zeros = %.4f (gaussian)\n", type_name(TYPES[i]), ratio[i]);
        ck_assert_msg(ratio[i] < max_error_ratio(TYPES[i]), "%s: weighted error ratio %g", type_name(TYPES[i]),
                      ratio[i]);
        free(q);
    }
    ck_assert_msg(ratio[1] < ratio[0] && ratio[0] < ratio[2] && ratio[0] < ratio[3],
                  "errors IQ3_XXS %g IQ3_S %g TQ1_0 %g TQ2_0 %g out of order", ratio[0], ratio[1], ratio[2], ratio[3]);
    /* TQ1_0 and TQ2_0 store the same trits */
    ck_assert_double_eq(ratio[2], ratio[3]);
    free(y);
    free(imp);
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ layouts, edge cases */

/* Exact ternary input d * {-1, 0, 1} (d an fp16 number, one value of magnitude d per block) comes
 * back exactly from both TQ types, with TQ1_0 and TQ2_0 agreeing value for value. */
START_TEST(test_ternary_round_trip) {
    const int64_t n = 4 * QK_K;
    float x[4 * QK_K], y1[4 * QK_K], y2[4 * QK_K];
    const float d[4] = {0.0137f, 1.f, 3.25f, 0.f};
    for (int b = 0; b < 4; ++b) {
        const float db = fp16_to_f32(f32_to_fp16(d[b]));
        for (int j = 0; j < QK_K; ++j) {
            const int t = (int)(uniform() * 3) - 1;
            x[b * QK_K + j] = db * (float)t;
        }
        x[b * QK_K + 7] = -db; /* the magnitude d is present */
    }
    uint8_t q1[4 * sizeof(block_tq1_0)], q2[4 * sizeof(block_tq2_0)];
    quant_get(GGML_TYPE_TQ1_0)->quantize(x, q1, n);
    quant_get(GGML_TYPE_TQ2_0)->quantize(x, q2, n);
    quant_get(GGML_TYPE_TQ1_0)->dequantize(q1, y1, n);
    quant_get(GGML_TYPE_TQ2_0)->dequantize(q2, y2, n);
    for (int64_t i = 0; i < n; ++i) {
        ck_assert_msg(y1[i] == x[i], "TQ1_0 value %lld: %g back as %g", (long long)i, (double)x[i], (double)y1[i]);
        ck_assert_msg(y2[i] == x[i], "TQ2_0 value %lld: %g back as %g", (long long)i, (double)x[i], (double)y2[i]);
    }
    /* block 3 is all zeros: scale 0 */
    ck_assert_uint_eq(((const block_tq1_0 *)q1)[3].d, 0);
    ck_assert_uint_eq(((const block_tq2_0 *)q2)[3].d, 0);
}
END_TEST

/* Hand-built blocks decode to the documented values (blocks.h). */
START_TEST(test_dequant_formula) {
    float y[QK_K];
    { /* IQ3_XXS, d = 2: group 1 (values 32..63) = points 10..17 with sign indices 1, 0, 0, 3 and
       * scale 5: value = d * (0.5 + 5) / 2 * grid * sign */
        block_iq3_xxs b;
        memset(&b, 0, sizeof b);
        b.d = f32_to_fp16(2.f);
        for (int k = 0; k < 8; ++k) b.qs[8 + k] = (uint8_t)(10 + k);
        const uint32_t rest = 1 | 3u << 21 | 5u << 28;
        for (int j = 0; j < 4; ++j) b.qs[QK_K / 4 + 4 + j] = (uint8_t)(rest >> (8 * j));
        quant_get(GGML_TYPE_IQ3_XXS)->dequantize(&b, y, QK_K);
        const float db = 2.f * 5.5f * 0.5f;
        /* sign index 1 = bits 0 and 7 of the first 8 values (odd count: the 8th evens it) */
        ck_assert_float_eq(y[32], -db * (float)(IQ3XXS_GRID[10] & 0xFF));
        ck_assert_float_eq(y[33], db * (float)(IQ3XXS_GRID[10] >> 8 & 0xFF));
        ck_assert_float_eq(y[39], -db * (float)(IQ3XXS_GRID[11] >> 24));
        ck_assert_float_eq(y[44], db * (float)(IQ3XXS_GRID[13] & 0xFF));
        /* sign index 3 = values 56 and 57 */
        ck_assert_float_eq(y[56], -db * (float)(IQ3XXS_GRID[16] & 0xFF));
        ck_assert_float_eq(y[57], -db * (float)(IQ3XXS_GRID[16] >> 8 & 0xFF));
        ck_assert_float_eq(y[63], db * (float)(IQ3XXS_GRID[17] >> 24));
        /* the other groups: point 0 (all 4), scale 0: 2 * 0.5 / 2 * 4 */
        ck_assert_float_eq(y[0], 2.f);
        ck_assert_float_eq(y[255], 2.f);
    }
    { /* IQ3_S, d = 0.5: group 3 (values 96..127): point 2 = index 0x1F0 (9th bit in qh[3] bit 2),
       * sign byte 0x81 for values 104..111, scale 6 (high nibble of scales[1]):
       * value = d * (1 + 2 * 6) * grid * sign */
        block_iq3_s b;
        memset(&b, 0, sizeof b);
        b.d = f32_to_fp16(0.5f);
        b.qs[8 * 3 + 2] = 0xF0;
        b.qh[3] = 1 << 2;
        b.signs[4 * 3 + 1] = 0x81;
        b.scales[1] = 4 | 6 << 4;
        quant_get(GGML_TYPE_IQ3_S)->dequantize(&b, y, QK_K);
        const float db = 0.5f * 13;
        ck_assert_float_eq(y[104], -db * (float)(IQ3S_GRID[0x1F0] & 0xFF));
        ck_assert_float_eq(y[105], db * (float)(IQ3S_GRID[0x1F0] >> 8 & 0xFF));
        ck_assert_float_eq(y[107], db * (float)(IQ3S_GRID[0x1F0] >> 24));
        ck_assert_float_eq(y[111], -db * (float)(IQ3S_GRID[0] >> 24)); /* point 3: index 0 */
        ck_assert_float_eq(y[96], db);                                   /* grid point 0 is (1, 1, 1, 1) */
        ck_assert_float_eq(y[64], 0.5f * 9);                             /* group 2: scale 4 */
        ck_assert_float_eq(y[0], 0.5f);
    }
    { /* TQ1_0, d = 1: byte 0 = ceil(t * 256 / 243) for trits (2, 0, 1, 1, 2) -> 2*81 + 9 + 3 + 2 =
       * 176 -> values 0, 32, 64, 96, 128 = 1, -1, 0, 0, 1; qh byte 1 = trits (0, 2, 2, 1) padded */
        block_tq1_0 b;
        memset(&b, 0, sizeof b);
        for (size_t j = 0; j < sizeof b.qs; ++j) b.qs[j] = 0x80; /* ceil(121 * 256 / 243) = 128: trits 1 1 1 1 1 */
        for (size_t j = 0; j < sizeof b.qh; ++j) b.qh[j] = 0x80;
        b.d = f32_to_fp16(1.f);
        b.qs[0] = (uint8_t)((176 * 256 + 242) / 243);
        b.qh[1] = (uint8_t)(((0 * 27 + 2 * 9 + 2 * 3 + 1) * 3 * 256 + 242) / 243);
        quant_get(GGML_TYPE_TQ1_0)->dequantize(&b, y, QK_K);
        ck_assert_float_eq(y[0], 1.f);
        ck_assert_float_eq(y[32], -1.f);
        ck_assert_float_eq(y[64], 0.f);
        ck_assert_float_eq(y[128], 1.f);
        ck_assert_float_eq(y[241], -1.f);
        ck_assert_float_eq(y[245], 1.f);
        ck_assert_float_eq(y[249], 1.f);
        ck_assert_float_eq(y[253], 0.f);
        for (int j = 1; j < 32; ++j) ck_assert_float_eq(y[j], 0.f);
    }
    { /* TQ2_0, d = 4: qs[33] = 2 | 0 << 2 | 1 << 4 | 2 << 6: values 129, 161, 193, 225 = 4, -4, 0, 4 */
        block_tq2_0 b;
        memset(b.qs, 0x55, sizeof b.qs);
        b.d = f32_to_fp16(4.f);
        b.qs[33] = 2 | 0 << 2 | 1 << 4 | 2 << 6;
        quant_get(GGML_TYPE_TQ2_0)->dequantize(&b, y, QK_K);
        ck_assert_float_eq(y[129], 4.f);
        ck_assert_float_eq(y[161], -4.f);
        ck_assert_float_eq(y[193], 0.f);
        ck_assert_float_eq(y[225], 4.f);
        ck_assert_float_eq(y[0], 0.f);
    }
}
END_TEST

/* All zeros: zero blocks. Garbage (NaN, Inf, huge, subnormal values, zero importance): the
 * kernels return, and the blocks decode to finite values. */
START_TEST(test_edge_inputs) {
    const int64_t n = 2 * QK_K;
    float x[2 * QK_K], y[2 * QK_K], imp[2 * QK_K];
    uint8_t q[2 * sizeof(block_iq3_s)], zero[sizeof q];
    memset(zero, 0, sizeof zero);
    for (int i = 0; i < COUNT(TYPES); ++i) {
        const int type = TYPES[i];
        const quant_kernels *k = quant_get(type);
        const size_t bytes = type_nbytes(type, n);
        memset(x, 0, sizeof x);
        memset(q, 0xFF, sizeof q);
        k->quantize(x, q, n);
        if (type == GGML_TYPE_TQ1_0 || type == GGML_TYPE_TQ2_0) { /* zeros are trit 1, d = 0 */
            k->dequantize(q, y, n);
            for (int j = 0; j < n; ++j) ck_assert_float_eq(y[j], 0.f);
        } else {
            CK_ASSERT_QUIET(memcmp(q, zero, bytes) == 0, "%s: zeros give a nonzero block", type_name(type));
        }

        for (int j = 0; j < n; ++j) {
            x[j] = gaussian();
            imp[j] = 1.f;
        }
        x[3] = NAN, x[40] = INFINITY, x[41] = -INFINITY; /* block 0 */
        for (int j = 0; j < 32; ++j) {
            x[256 + j] = 1e30f * (j % 2 ? 1 : -1); /* block 1: huge, subnormal, zero importance */
            x[288 + j] = 1e-42f * (float)j;
            imp[320 + j] = 0.f;
        }
        for (int variant = 0; variant < 2; ++variant) {
            k->quantize_weighted(x, q, n, variant ? imp : NULL);
            k->dequantize(q, y, n);
            for (int j = 0; j < n; ++j)
                CK_ASSERT_QUIET(isfinite(y[j]), "%s: value %d decodes to %g", type_name(type), j, (double)y[j]);
        }
    }
}
END_TEST

/* An all-zero group of 32 in an IQ3_S block: the groups after it are stored at their own places
 * (llama.cpp shifts them one slot early), so the block decodes as close as one without the zero
 * group; the zero group itself decodes to the smallest value d * 1 * grid 1. */
START_TEST(test_iq3_s_zero_group) {
    float x[QK_K], y[QK_K], x_nz[QK_K], y_nz[QK_K];
    for (int j = 0; j < QK_K; ++j) x[j] = x_nz[j] = gaussian();
    for (int j = 64; j < 96; ++j) x[j] = 0.f; /* group 2 */
    const quant_kernels *k = quant_get(GGML_TYPE_IQ3_S);
    block_iq3_s b, b_nz;
    k->quantize(x, &b, QK_K);
    k->quantize(x_nz, &b_nz, QK_K);
    k->dequantize(&b, y, QK_K);
    k->dequantize(&b_nz, y_nz, QK_K);
    /* the groups other than 2 are quantized as without the zeros (same scales: group 2 is not
     * the largest one) or nearly so */
    double err = 0, err_nz = 0, energy = 0;
    for (int j = 0; j < QK_K; ++j) {
        if (j >= 64 && j < 96) continue;
        err += (x[j] - y[j]) * (x[j] - y[j]);
        err_nz += (x_nz[j] - y_nz[j]) * (x_nz[j] - y_nz[j]);
        energy += x[j] * x[j];
    }
    ck_assert_msg(err < 0.1 * energy && err < 2 * err_nz, "error %g (without zeros %g, energy %g)", err, err_nz, energy);
    const float d = fp16_to_f32(b.d);
    for (int j = 64; j < 96; ++j) ck_assert_float_eq(y[j], d);
    ck_assert_uint_eq(b.scales[1] & 0xF, 0);
}
END_TEST

/* ------------------------------------------------------------------ threads */

/* Two OpenMP threads quantize at the same moment, the first use of each type's search tables in
 * this process (each test runs in a fresh one): both get the bytes one thread gets afterwards. */
START_TEST(test_threads_first_use) {
    const int64_t rows = 16, ne0 = 512, n = rows * ne0;
    float *x = synthetic_rows(rows, ne0);
    float *imp = synthetic_importance(ne0);
    uint8_t *q[COUNT(TYPES)][2] = {{NULL}};
    int nthreads = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        nthreads = omp_get_num_threads();
        const int me = omp_get_thread_num();
        for (int i = 0; i < COUNT(TYPES); ++i) {
            const size_t row_bytes = type_nbytes(TYPES[i], ne0);
            uint8_t *mine = malloc(row_bytes * (size_t)rows);
#pragma omp barrier
            if (mine)
                for (int64_t r = 0; r < rows; ++r)
                    quant_get(TYPES[i])->quantize_weighted(x + r * ne0, mine + (size_t)r * row_bytes, ne0, imp);
            if (me < 2) q[i][me] = mine;
            else free(mine);
        }
    }
    if (nthreads < 2) {
        for (int i = 0; i < COUNT(TYPES); ++i) free(q[i][0]);
        free(imp);
        free(x);
        SKIP_TEST("OpenMP gave %d thread(s), not 2", nthreads);
    }
    for (int i = 0; i < COUNT(TYPES); ++i) {
        ck_assert(q[i][0] && q[i][1]);
        uint8_t *serial = quantize_rows(TYPES[i], x, rows, ne0, imp, false);
        const size_t bytes = type_nbytes(TYPES[i], n);
        ck_assert_msg(memcmp(q[i][0], serial, bytes) == 0 && memcmp(q[i][1], serial, bytes) == 0,
                      "%s: threads gave %lld and %lld differing blocks", type_name(TYPES[i]),
                      (long long)differing_blocks(TYPES[i], q[i][0], serial, n),
                      (long long)differing_blocks(TYPES[i], q[i][1], serial, n));
        free(serial);
        free(q[i][0]);
        free(q[i][1]);
    }
    free(imp);
    free(x);
}
END_TEST

int main(void) {
    Suite *s = suite_create("quants_iq3");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_table);
    tcase_add_loop_test(tc, test_llama_bytes, 0, COUNT(TYPES) * COUNT(TENSORS));
    tcase_add_loop_test(tc, test_llama_bytes_no_imatrix, 0, COUNT(IQ3_TYPES) * COUNT(TENSORS));
    tcase_add_loop_test(tc, test_llama_dequant, 0, COUNT(TYPES) * COUNT(TENSORS));
    tcase_add_test(tc, test_entries_agree);
    tcase_add_test(tc, test_error_sanity);
    tcase_add_test(tc, test_ternary_round_trip);
    tcase_add_test(tc, test_dequant_formula);
    tcase_add_test(tc, test_edge_inputs);
    tcase_add_test(tc, test_iq3_s_zero_group);
    tcase_add_test(tc, test_threads_first_use);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
