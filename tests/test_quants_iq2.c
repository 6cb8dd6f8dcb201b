/* test_quants_iq2.c - the IQ2_XXS, IQ2_XS and IQ2_S kernels (codec/quants_iq2.c) against
 * llama.cpp b4747.
 *
 * Reference vectors: tests/data/iquant/W.TYPE are llama-quantize's blocks of two tensors W of
 * books-22m (scripts/make_iq_refs.sh: --pure, llama.cpp's imatrix), W.TYPE.dequant.sha256 the
 * SHA-256 of the F32 values llama.cpp decodes them to; the source values W.f32 and the imatrix
 * are in ../shared/reference/.
 *   - our quantize_weighted with the imatrix gives llama-quantize's bytes, row by row;
 *   - our dequantization of llama.cpp's blocks (and of ours) hashes to llama.cpp's;
 *   - the kernel entries agree with each other, importance NULL is importance 1 (IQ2_S: ggml's own weights), and an
 *     importance vector does change the blocks;
 *   - the weighted error is far below that of storing zeros, and drops with more bits;
 *   - hand-built blocks decode to the documented values; zeros and garbage inputs are safe;
 *   - two threads quantizing at once (first use of the search tables) agree with one.
 * (llama-quantize's IQ2_S mix writes GGML IQ2_XS; W.IQ2_S comes from its IQ2_M mix, whose base
 * type is GGML IQ2_S.)
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

static const int TYPES[] = {GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS, GGML_TYPE_IQ2_S};

typedef struct ref_tensor {
    const char *name; /* GGUF name = file name prefix */
    int64_t ne0;      /* values per row */
    int64_t rows;
} ref_tensor;

static const ref_tensor TENSORS[] = {
    {"blk.0.attn_q.weight", 256, 256},
    {"blk.1.ffn_down.weight", 768, 256},
};

/* The loop tests run over type x tensor: _i = 2 * type index + tensor index. */
#define N_CASES (COUNT(TYPES) * COUNT(TENSORS))

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

/* The SHA-256 (hex) of n floats as stored (little-endian). */
static void hash_floats(const float *y, int64_t n, char hex[65]) { sha256_buf_hex(y, (size_t)n * sizeof(float), hex); }

/* Quantize rows of x with quantize_weighted and `importance` (one row's worth, shared by all). */
static uint8_t *quantize_tensor(int type, const float *x, int64_t rows, int64_t ne0, const float *importance) {
    const quant_kernels *k = quant_get(type);
    const size_t row_bytes = type_nbytes(type, ne0);
    uint8_t *q = malloc(row_bytes * (size_t)rows);
    ck_assert_ptr_nonnull(q);
    for (int64_t r = 0; r < rows; ++r) k->quantize_weighted(x + r * ne0, q + (size_t)r * row_bytes, ne0, importance);
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

/* sum imp_j (x - y)^2 / sum imp_j x^2 over rows of ne0 values (imp NULL: 1). */
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

/* One line on stderr: how long quantizing tensor t took. */
static void print_timing(int type, const ref_tensor *t, const struct timespec *t0, const struct timespec *t1) {
    fprintf(stderr, "timing: %s %s (%lld rows x %lld) quantized in %.0f ms\n", type_name(type), t->name,
            (long long)t->rows, (long long)t->ne0,
            (double)(t1->tv_sec - t0->tv_sec) * 1e3 + (double)(t1->tv_nsec - t0->tv_nsec) / 1e6);
}

/* llama.cpp's reference file for (type, tensor) must be len bytes of that type's blocks. */
static void assert_ref_size(const ref_tensor *t, int type, size_t len) {
    const uint64_t want = type_nbytes(type, t->rows * t->ne0);
    ck_assert_msg(len == want, "tests/data/iquant/%s.%s holds %zu bytes, not %llu (%lld rows of %s blocks)", t->name,
                  type_name(type), len, (unsigned long long)want, (long long)t->rows, type_name(type));
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

/* quantize_weighted with llama.cpp's imatrix gives llama-quantize's blocks, and decoding them
 * gives llama.cpp's floats. ffn_down's quantization is timed (stderr). */
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
    assert_ref_size(t, type, len);
    imatrix im;
    slmc_err err = {{0}};
    ck_assert_msg(imatrix_load(&im, imatrix_path, &err) == 0, "%s", err.msg);
    int64_t n_imp;
    const float *imp = imatrix_importance(&im, t->name, &n_imp);
    ck_assert_msg(imp != NULL && n_imp == t->ne0, "imatrix has no entry of %lld values for %s", (long long)t->ne0,
                  t->name);

    const int64_t n = t->rows * t->ne0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint8_t *got = quantize_tensor(type, x, t->rows, t->ne0, imp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (t->ne0 == 768) print_timing(type, t, &t0, &t1);
    const int64_t diff = differing_blocks(type, got, want, n);
    ck_assert_msg(diff == 0, "%s %s: %lld of %lld blocks differ from llama-quantize's", type_name(type), t->name,
                  (long long)diff, (long long)(n / QK_K));

    /* our blocks decode to llama.cpp's floats */
    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(quant_dequantize(type, got, y, n), 0);
    char hex[65];
    hash_floats(y, n, hex);
    uint8_t *want_hex = load_data(t, type, ".dequant.sha256", NULL);
    ck_assert_ptr_nonnull(want_hex);
    ck_assert_msg(strncmp(hex, (const char *)want_hex, 64) == 0, "%s %s: dequantized hash %s, llama.cpp's %.64s",
                  type_name(type), t->name, hex, (const char *)want_hex);

    /* sanity: the weighted error is far below that of zeros */
    const double ratio = weighted_error_ratio(x, y, t->rows, t->ne0, imp);
    ck_assert_msg(ratio < 0.25, "%s %s: weighted error ratio %g", type_name(type), t->name, ratio);

    free(want_hex);
    free(y);
    free(got);
    imatrix_free(&im);
    free(want);
    free(x);
    free(imatrix_path);
}
END_TEST

/* Decoding llama.cpp's blocks gives its floats (no ../shared needed). */
START_TEST(test_llama_dequant) {
    const int type = TYPES[_i / COUNT(TENSORS)];
    const ref_tensor *t = &TENSORS[_i % COUNT(TENSORS)];
    size_t len;
    uint8_t *blocks = load_data(t, type, "", &len);
    ck_assert_msg(blocks != NULL, "tests/data/iquant/%s.%s missing", t->name, type_name(type));
    assert_ref_size(t, type, len);
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
    /* every value is finite and some are not zero */
    int64_t nonzero = 0;
    CK_ASSERT_RANGE(i, 0, n, isfinite(y[i]));
    for (int64_t i = 0; i < n; ++i) {
        nonzero += y[i] != 0;
    }
    ck_assert_int_gt(nonzero, n / 2);
    free(want_hex);
    free(y);
    free(blocks);
}
END_TEST

/* ------------------------------------------------------------------ the kernel entries */

/* quantize_ref == quantize == quantize_weighted(NULL) == quantize_weighted_ref(NULL) (==
 * importance 1 everywhere for IQ2_XXS / IQ2_XS, which ggml cannot quantize without one); quantize_weighted == quantize_weighted_ref with an importance, which
 * does change some blocks. */
START_TEST(test_entries_agree) {
    const int64_t rows = 12, ne0 = 512, n = rows * ne0;
    float *x = synthetic_rows(rows, ne0);
    float *imp = synthetic_importance(ne0);
    float *ones = malloc((size_t)ne0 * sizeof(float));
    ck_assert_ptr_nonnull(ones);
    for (int64_t j = 0; j < ne0; ++j) ones[j] = 1.f;
    for (int i = 0; i < COUNT(TYPES); ++i) {
        const int type = TYPES[i];
        const quant_kernels *k = quant_get(type);
        const size_t row_bytes = type_nbytes(type, ne0), bytes = row_bytes * (size_t)rows;
        uint8_t *q[8];
        for (int v = 0; v < 8; ++v) {
            q[v] = malloc(bytes);
            ck_assert_ptr_nonnull(q[v]);
            memset(q[v], 0xA5 + v, bytes); /* every byte must be written */
        }
        for (int64_t r = 0; r < rows; ++r) {
            const float *xr = x + r * ne0;
            const size_t off = (size_t)r * row_bytes;
            k->quantize_ref(xr, q[0] + off, ne0);
            k->quantize(xr, q[1] + off, ne0);
            k->quantize_weighted(xr, q[2] + off, ne0, NULL);
            k->quantize_weighted_ref(xr, q[3] + off, ne0, NULL);
            k->quantize_weighted(xr, q[4] + off, ne0, ones);
            k->quantize_weighted_ref(xr, q[5] + off, ne0, ones);
            k->quantize_weighted(xr, q[6] + off, ne0, imp);
            k->quantize_weighted_ref(xr, q[7] + off, ne0, imp);
        }
        static const char *const what[] = {"quantize_ref", "quantize", "weighted(NULL)", "weighted_ref(NULL)",
                                           "weighted(ones)", "weighted_ref(ones)"};
        /* IQ2_S without an importance has ggml's own weights, not 1 everywhere */
        const int agree = type == GGML_TYPE_IQ2_S ? 4 : 6;
        for (int v = 1; v < agree; ++v)
            CK_ASSERT_QUIET(memcmp(q[0], q[v], bytes) == 0, "%s: %s differs from quantize_ref in %lld blocks",
                          type_name(type), what[v], (long long)differing_blocks(type, q[0], q[v], n));
        ck_assert_msg(memcmp(q[6], q[7], bytes) == 0, "%s: weighted and weighted_ref differ", type_name(type));
        const int64_t changed = differing_blocks(type, q[0], q[6], n);
        ck_assert_msg(changed > n / QK_K / 2, "%s: an importance vector changed only %lld of %lld blocks",
                      type_name(type), (long long)changed, (long long)(n / QK_K));
        for (int v = 0; v < 8; ++v) free(q[v]);
    }
    free(ones);
    free(imp);
    free(x);
}
END_TEST

/* The weighted error of the round trip is far below that of zeros, and lower with more bits
 * (IQ2_XXS 2.06, IQ2_XS 2.31, IQ2_S 2.56 bits per value). */
START_TEST(test_error_sanity) {
    const int64_t rows = 48, ne0 = 1024, n = rows * ne0;
    float *x = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(x);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian() * 0.02f;
    float *imp = synthetic_importance(ne0);
    float *y = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(y);
    double ratio[COUNT(TYPES)];
    for (int i = 0; i < COUNT(TYPES); ++i) {
        uint8_t *q = quantize_tensor(TYPES[i], x, rows, ne0, imp);
        quant_get(TYPES[i])->dequantize(q, y, n);
        ratio[i] = weighted_error_ratio(x, y, rows, ne0, imp);
        fprintf(stderr, "error: %s weighted error / energy = %.4f (gaussian)\n", type_name(TYPES[i]), ratio[i]);
        ck_assert_msg(ratio[i] < 0.2, "%s: weighted error ratio %g", type_name(TYPES[i]), ratio[i]);
        free(q);
    }
    ck_assert_msg(ratio[0] > ratio[1] && ratio[1] > ratio[2], "errors %g %g %g do not drop with more bits", ratio[0],
                  ratio[1], ratio[2]);
    free(y);
    free(imp);
    free(x);
}
END_TEST

/* ------------------------------------------------------------------ layouts, edge cases */

static float grid_value(uint64_t point, int j) { return (float)iq_grid_byte(point, j); }

/* Hand-built blocks (d = 1) decode to d * (0.5 + scale) / 4 * grid * sign. */
START_TEST(test_dequant_formula) {
    float y[QK_K];
    { /* IQ2_XXS: group 0 = points 1, 2, 3, 4 with sign indices 1, 0, 0, 3 and scale 3 */
        block_iq2_xxs b;
        memset(&b, 0, sizeof b);
        b.d = f32_to_fp16(1.f);
        const uint32_t points = 1 | 2u << 8 | 3u << 16 | 4u << 24;
        const uint32_t rest = 1 | 3u << 21 | 3u << 28;
        b.qs[0] = (uint16_t)points, b.qs[1] = (uint16_t)(points >> 16);
        b.qs[2] = (uint16_t)rest, b.qs[3] = (uint16_t)(rest >> 16);
        quant_get(GGML_TYPE_IQ2_XXS)->dequantize(&b, y, QK_K);
        const float db = 3.5f * 0.25f;
        /* sign index 1 = bits 0 and 7 (odd count: the 8th sign evens it) */
        ck_assert_float_eq(y[0], -db * grid_value(IQ2XXS_GRID[1], 0));
        ck_assert_float_eq(y[1], db * grid_value(IQ2XXS_GRID[1], 1));
        ck_assert_float_eq(y[7], -db * grid_value(IQ2XXS_GRID[1], 7));
        ck_assert_float_eq(y[8 + 5], db * grid_value(IQ2XXS_GRID[2], 5));
        /* sign index 3 = bits 0 and 1, even */
        ck_assert_float_eq(y[24], -db * grid_value(IQ2XXS_GRID[4], 0));
        ck_assert_float_eq(y[25], -db * grid_value(IQ2XXS_GRID[4], 1));
        ck_assert_float_eq(y[31], db * grid_value(IQ2XXS_GRID[4], 7));
        /* the other groups: index 0 (all 8), scale 0 */
        ck_assert_float_eq(y[32], 0.125f * 8);
        ck_assert_float_eq(y[255], 0.125f * 8);
    }
    { /* IQ2_XS: value group 1 = point 300 with sign index 5; scales 2 (first 16) and 5 */
        block_iq2_xs b;
        memset(&b, 0, sizeof b);
        b.d = f32_to_fp16(1.f);
        b.qs[1] = (uint16_t)(300 | 5 << 9);
        b.qs[2] = 511;
        b.scales[0] = 2 | 5 << 4;
        quant_get(GGML_TYPE_IQ2_XS)->dequantize(&b, y, QK_K);
        ck_assert_float_eq(y[8], -2.5f * 0.25f * grid_value(IQ2XS_GRID[300], 0));
        ck_assert_float_eq(y[9], 2.5f * 0.25f * grid_value(IQ2XS_GRID[300], 1));
        ck_assert_float_eq(y[10], -2.5f * 0.25f * grid_value(IQ2XS_GRID[300], 2));
        ck_assert_float_eq(y[15], 2.5f * 0.25f * grid_value(IQ2XS_GRID[300], 7));
        ck_assert_float_eq(y[16 + 3], 5.5f * 0.25f * grid_value(IQ2XS_GRID[511], 3));
    }
    { /* IQ2_S, d = 2: group of 8 number 5 (values 40..47, in the first 16 of the second 32) =
       * point 0x234 with sign byte 0x81, scale 7; number 7 (values 56..63) = point 0x3FF, scale 9 */
        block_iq2_s b;
        memset(&b, 0, sizeof b);
        b.d = f32_to_fp16(2.f);
        b.qs[5] = 0x34;
        b.qs[7] = 0xFF;
        b.qh[1] = 2 << 2 | 3 << 6;
        b.qs[QK_K / 8 + 5] = 0x81;
        b.scales[1] = 7 | 9 << 4;
        quant_get(GGML_TYPE_IQ2_S)->dequantize(&b, y, QK_K);
        const float db = 2.f * 7.5f * 0.25f, db2 = 2.f * 9.5f * 0.25f;
        ck_assert_float_eq(y[40], -db * grid_value(IQ2S_GRID[0x234], 0));
        ck_assert_float_eq(y[41], db * grid_value(IQ2S_GRID[0x234], 1));
        ck_assert_float_eq(y[47], -db * grid_value(IQ2S_GRID[0x234], 7));
        ck_assert_float_eq(y[32], db * 8); /* group 4: index 0, same scale */
        ck_assert_float_eq(y[56 + 2], db2 * grid_value(IQ2S_GRID[0x3FF], 2));
        ck_assert_float_eq(y[0], 2.f * 0.5f * 0.25f * 8);
    }
}
END_TEST

/* All zeros: zero blocks. Garbage (NaN, Inf, huge, subnormal values, zero importance): the
 * kernels return, and the blocks decode to finite values. */
START_TEST(test_edge_inputs) {
    const int64_t n = 2 * QK_K;
    float x[2 * QK_K], y[2 * QK_K], imp[2 * QK_K];
    uint8_t q[2 * sizeof(block_iq2_s)], zero[sizeof q];
    memset(zero, 0, sizeof zero);
    for (int i = 0; i < COUNT(TYPES); ++i) {
        const int type = TYPES[i];
        const quant_kernels *k = quant_get(type);
        const size_t bytes = type_nbytes(type, n);
        memset(x, 0, sizeof x);
        memset(q, 0xFF, sizeof q);
        k->quantize(x, q, n);
        ck_assert_msg(memcmp(q, zero, bytes) == 0, "%s: zeros give a nonzero block", type_name(type));
        k->dequantize(q, y, n);
        for (int j = 0; j < n; ++j) ck_assert_float_eq(y[j], 0.f);

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

/* ------------------------------------------------------------------ threads */

/* Two OpenMP threads quantize at the same moment, the first use of each type's search tables in
 * this process (each test runs in a fresh one): both get the bytes one thread gets afterwards. */
START_TEST(test_threads_first_use) {
    const int64_t rows = 16, ne0 = 512, n = rows * ne0;
    float *x = synthetic_rows(rows, ne0);
    float *imp = synthetic_importance(ne0);
    uint8_t *q[COUNT(TYPES)][2];
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
        uint8_t *serial = quantize_tensor(TYPES[i], x, rows, ne0, imp);
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
    Suite *s = suite_create("quants_iq2");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_table);
    tcase_add_loop_test(tc, test_llama_bytes, 0, N_CASES);
    tcase_add_loop_test(tc, test_llama_dequant, 0, N_CASES);
    tcase_add_test(tc, test_entries_agree);
    tcase_add_test(tc, test_error_sanity);
    tcase_add_test(tc, test_dequant_formula);
    tcase_add_test(tc, test_edge_inputs);
    tcase_add_test(tc, test_threads_first_use);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
