/* test_quants.c - the block quantization kernels (codec/quants.h) against llama.cpp.
 *
 * Reference vectors (../shared/reference/quant/, made by llama.cpp b4747 with
 * `llama-quantize --pure`, no imatrix): for two tensors W, W.f32 (source values), W.TYPE
 * (llama.cpp's blocks) and W.TYPE.dequant.f32 (llama.cpp's dequantization of them).
 *   - legacy types: our reference quantizer gives exactly llama.cpp's bytes
 *   - every type: our dequantization of llama.cpp's blocks gives exactly its floats
 *   - K-quants: our error against W.f32 is no worse than llama.cpp's (table on stderr)
 * Then synthetic checks: fast == ref, round-trip error bounds, the importance-weighted
 * quantizers, and edge cases (zeros, constants, outliers, subnormals). IQ4_NL / IQ4_XS have no
 * llama.cpp blocks in ../shared: they are checked against hand-worked blocks and an independent
 * double-precision re-derivation of llama.cpp's search. Last, fast (AVX2) searches == reference
 * searches, byte for byte, on many rows of every type, the reference tensors and garbage inputs.
 */
#include "codec/quants.h"
#include "codec/types.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The two reference tensors; ne0 is the row length (GGUF's first dimension). */
typedef struct ref_tensor {
    const char *name; /* file name prefix under reference/quant/ */
    int64_t ne0;      /* values per row */
} ref_tensor;

static const ref_tensor REF_TENSORS[] = {
    {"blk.0.attn_q.weight", 256},   /* 256 x 256 */
    {"blk.1.ffn_down.weight", 768}, /* 256 rows of ffn = 768 values */
};
#define N_REF_TENSORS ((int)(sizeof REF_TENSORS / sizeof REF_TENSORS[0]))

static const int LEGACY_TYPES[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0};
static const int K_TYPES[] = {GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
/* Every type quant_get supports. */
static const int ALL_TYPES[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K,
                                GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_K, GGML_TYPE_IQ4_NL,
                                GGML_TYPE_IQ4_XS};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ------------------------------------------------------------------ helpers */

/* Read ../shared/reference/quant/<name><suffix> (malloc'd), or NULL when missing. */
static uint8_t *load_ref(const char *name, const char *suffix, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, "reference/quant/%s%s", name, suffix);
    char *path = shared_path(rel);
    if (!path) return NULL;
    uint8_t *data = slurp(path, len);
    free(path);
    return data;
}

/* Quantize a tensor of nrows x ne0 values row by row with kernel f. */
static uint8_t *quantize_rows(int type, void (*f)(const float *, void *, int64_t), const float *x, int64_t nrows,
                              int64_t ne0) {
    const size_t row_bytes = type_nbytes(type, ne0);
    uint8_t *q = malloc(row_bytes * (size_t)nrows);
    ck_assert_ptr_nonnull(q);
    for (int64_t r = 0; r < nrows; ++r) f(x + r * ne0, q + (size_t)r * row_bytes, ne0);
    return q;
}

static double rmse(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

static double rms(const float *a, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += (double)a[i] * a[i];
    return sqrt(s / (double)n);
}

/* Deterministic pseudo-random numbers (xorshift64*), uniform in [0,1) and gaussian. */
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

/* Quantize then dequantize n values with kernel q of type t (scratch malloc'd). */
static void roundtrip(const quant_kernels *k, const float *x, float *out, int64_t n, const float *importance) {
    uint8_t *q = malloc(type_nbytes(k->type, n));
    ck_assert_ptr_nonnull(q);
    if (importance)
        k->quantize_weighted(x, q, n, importance);
    else
        k->quantize(x, q, n);
    k->dequantize(q, out, n);
    free(q);
}

/* Byte offsets of the fp16 scales in one block of each type (-1 terminated); Q8_K's float d
 * is checked separately. */
static const int *scale_offsets(int type) {
    static const int q4_0[] = {0, -1}, q4_1[] = {0, 2, -1}, q2_k[] = {80, 82, -1}, q3_k[] = {108, -1},
                     q4_k[] = {0, 2, -1}, q6_k[] = {208, -1}, none[] = {-1};
    switch (type) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: return q4_0;
    case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS: return q4_0;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: return q4_1;
    case GGML_TYPE_Q2_K: return q2_k;
    case GGML_TYPE_Q3_K: return q3_k;
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: return q4_k;
    case GGML_TYPE_Q6_K: return q6_k;
    default: return none;
    }
}

/* Every block scale of the quantized data is a finite number. */
static void assert_scales_finite(const char *what, int type, const uint8_t *q, int64_t n) {
    const type_info *ti = type_get(type);
    if (!ti->quantized) return;
    for (int64_t b = 0; b < n / ti->blck_size; ++b) {
        const uint8_t *blk = q + b * ti->type_size;
        if (type == GGML_TYPE_Q8_K) {
            float d;
            memcpy(&d, blk, 4);
            CK_ASSERT_QUIET(isfinite(d), "%s %s block %lld: scale %g", what, ti->name, (long long)b, d);
            continue;
        }
        for (const int *off = scale_offsets(type); *off >= 0; ++off) {
            uint16_t h = (uint16_t)(blk[*off] | blk[*off + 1] << 8);
            CK_ASSERT_QUIET(isfinite(fp16_to_f32(h)), "%s %s block %lld: fp16 scale 0x%04x at byte %d is not finite",
                          what, ti->name, (long long)b, h, *off);
        }
    }
}

/* ------------------------------------------------------------------ tests against llama.cpp */

START_TEST(test_table) {
    for (int i = 0; i < COUNT(ALL_TYPES); ++i) {
        const quant_kernels *k = quant_get(ALL_TYPES[i]);
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(k->type, ALL_TYPES[i]);
        ck_assert(k->quantize_ref && k->quantize && k->quantize_weighted && k->quantize_weighted_ref && k->dequantize);
    }
    /* the i-quants and ternary types (their own suites: test_quants_iq1/iq2/iq3) */
    static const int IQ[] = {GGML_TYPE_IQ1_S,   GGML_TYPE_IQ1_M, GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS, GGML_TYPE_IQ2_S,
                             GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S, GGML_TYPE_TQ1_0,   GGML_TYPE_TQ2_0};
    for (int i = 0; i < COUNT(IQ); ++i) {
        const quant_kernels *k = quant_get(IQ[i]);
        ck_assert_msg(k && k->type == IQ[i], "no kernels for %s", type_name(IQ[i]));
        ck_assert(k->quantize_ref && k->quantize && k->quantize_weighted && k->quantize_weighted_ref && k->dequantize);
    }
    ck_assert_ptr_null(quant_get(GGML_TYPE_MXFP4));
    ck_assert_ptr_null(quant_get(GGML_TYPE_Q8_1));
    ck_assert_ptr_null(quant_get(-1));
    ck_assert_ptr_null(quant_get(GGML_TYPE_COUNT));
}
END_TEST

/* Legacy types: our quantize_ref output is byte-identical to llama.cpp's. */
START_TEST(test_legacy_bit_identical) {
    char *dir = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.f32");
    free(dir);
    for (int t = 0; t < N_REF_TENSORS; ++t) {
        const ref_tensor *rt = &REF_TENSORS[t];
        size_t flen;
        float *x = (float *)load_ref(rt->name, ".f32", &flen);
        ck_assert_msg(x != NULL, "%s.f32 missing", rt->name);
        ck_assert_uint_eq(flen % (4 * (size_t)rt->ne0), 0);
        const int64_t nrows = (int64_t)(flen / 4) / rt->ne0;
        for (int i = 0; i < COUNT(LEGACY_TYPES); ++i) {
            const int type = LEGACY_TYPES[i];
            const type_info *ti = type_get(type);
            char suffix[32];
            snprintf(suffix, sizeof suffix, ".%s", ti->name);
            size_t qlen;
            uint8_t *want = load_ref(rt->name, suffix, &qlen);
            CK_ASSERT_QUIET(want != NULL, "%s%s missing", rt->name, suffix);
            ck_assert_uint_eq(qlen, type_nbytes(type, nrows * rt->ne0));
            uint8_t *got = quantize_rows(type, quant_get(type)->quantize_ref, x, nrows, rt->ne0);
            size_t diff = 0;
            while (diff < qlen && got[diff] == want[diff]) diff++;
            CK_ASSERT_QUIET(diff == qlen, "%s %s: first different byte %zu (block %zu): ours 0x%02x, llama.cpp 0x%02x",
                          rt->name, ti->name, diff, diff / ti->type_size, got[diff], want[diff]);
            free(got);
            free(want);
        }
        free(x);
    }
}
END_TEST

/* Every type: our dequantization of llama.cpp's blocks equals its own, bit for bit. */
START_TEST(test_dequant_bit_identical) {
    char *dir = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.f32");
    free(dir);
    const int types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,
                         GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    for (int t = 0; t < N_REF_TENSORS; ++t) {
        for (int i = 0; i < COUNT(types); ++i) {
            const type_info *ti = type_get(types[i]);
            char suffix[48];
            size_t qlen, dlen;
            snprintf(suffix, sizeof suffix, ".%s", ti->name);
            uint8_t *q = load_ref(REF_TENSORS[t].name, suffix, &qlen);
            snprintf(suffix, sizeof suffix, ".%s.dequant.f32", ti->name);
            float *want = (float *)load_ref(REF_TENSORS[t].name, suffix, &dlen);
            CK_ASSERT_QUIET(q && want, "%s %s reference files missing", REF_TENSORS[t].name, ti->name);
            const int64_t n = (int64_t)(dlen / 4);
            ck_assert_uint_eq(qlen, type_nbytes(types[i], n));
            float *got = malloc(dlen);
            ck_assert_ptr_nonnull(got);
            quant_get(types[i])->dequantize(q, got, n);
            int64_t diff = 0;
            while (diff < n && memcmp(&got[diff], &want[diff], 4) == 0) diff++;
            CK_ASSERT_QUIET(diff == n, "%s %s: value %lld differs: ours %.9g, llama.cpp %.9g", REF_TENSORS[t].name,
                          ti->name, (long long)diff, got[diff], want[diff]);
            free(got);
            free(want);
            free(q);
        }
    }
}
END_TEST

/* K-quants: our RMSE vs the source is no worse than llama.cpp's on every reference tensor. */
START_TEST(test_kquant_rmse) {
    char *dir = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.f32");
    free(dir);
    fprintf(stderr, "%-22s %-5s %12s %12s %8s %s\n", "tensor", "type", "ours", "llama.cpp", "ratio", "bytes");
    for (int t = 0; t < N_REF_TENSORS; ++t) {
        const ref_tensor *rt = &REF_TENSORS[t];
        size_t flen;
        float *x = (float *)load_ref(rt->name, ".f32", &flen);
        ck_assert_ptr_nonnull(x);
        const int64_t n = (int64_t)(flen / 4), nrows = n / rt->ne0;
        float *ours = malloc(flen);
        ck_assert_ptr_nonnull(ours);
        for (int i = 0; i < COUNT(K_TYPES); ++i) {
            const int type = K_TYPES[i];
            const type_info *ti = type_get(type);
            const quant_kernels *k = quant_get(type);
            char suffix[48];
            size_t qlen, dlen;
            snprintf(suffix, sizeof suffix, ".%s", ti->name);
            uint8_t *theirs_q = load_ref(rt->name, suffix, &qlen);
            snprintf(suffix, sizeof suffix, ".%s.dequant.f32", ti->name);
            float *theirs = (float *)load_ref(rt->name, suffix, &dlen);
            CK_ASSERT_QUIET(theirs_q && theirs && dlen == flen, "%s %s reference files missing", rt->name, ti->name);

            uint8_t *q = quantize_rows(type, k->quantize, x, nrows, rt->ne0);
            k->dequantize(q, ours, n);
            const double e_ours = rmse(x, ours, n), e_theirs = rmse(x, theirs, n);
            const int same = qlen == type_nbytes(type, n) && memcmp(q, theirs_q, qlen) == 0;
            fprintf(stderr, "%-22s %-5s %12.6e %12.6e %8.6f %s\n", rt->name, ti->name, e_ours, e_theirs,
                    e_ours / e_theirs, same ? "identical" : "differ");
            CK_ASSERT_QUIET(e_ours <= e_theirs, "%s %s: RMSE %.9g worse than llama.cpp's %.9g", rt->name, ti->name,
                          e_ours, e_theirs);
            /* and the error is well below the signal (Q2_K, the coarsest, is about 0.35x) */
            CK_ASSERT_QUIET(e_ours < 0.5 * rms(x, n), "%s %s: RMSE %g vs signal %g", rt->name, ti->name, e_ours,
                          rms(x, n));
            free(q);
            free(theirs);
            free(theirs_q);
        }
        free(ours);
        free(x);
    }
}
END_TEST

/* ------------------------------------------------------------------ synthetic tests */

/* fast == ref bytes, and quantize_weighted(NULL) / quantize_weighted_ref(NULL) == ref bytes, on
 * random data. */
START_TEST(test_fast_and_null_weights_match_ref) {
    const int64_t n = 4096;
    float *x = malloc(n * sizeof *x);
    uint8_t *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    ck_assert(x && a && b && c);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian() * (i % 97 == 0 ? 8.f : 0.05f) + (i % 512 < 64 ? 0.02f : 0.f);
    for (int i = 0; i < COUNT(ALL_TYPES); ++i) {
        const quant_kernels *k = quant_get(ALL_TYPES[i]);
        const size_t bytes = type_nbytes(k->type, n);
        memset(a, 0xAA, bytes);
        memset(b, 0x55, bytes);
        memset(c, 0x33, bytes);
        k->quantize_ref(x, a, n);
        k->quantize(x, b, n);
        k->quantize_weighted(x, c, n, NULL);
        ck_assert_msg(memcmp(a, b, bytes) == 0, "%s: fast differs from ref", type_name(k->type));
        ck_assert_msg(memcmp(a, c, bytes) == 0, "%s: weighted(NULL) differs from ref", type_name(k->type));
        memset(c, 0x33, bytes);
        k->quantize_weighted_ref(x, c, n, NULL);
        ck_assert_msg(memcmp(a, c, bytes) == 0, "%s: weighted_ref(NULL) differs from ref", type_name(k->type));
    }
    free(x);
    free(a);
    free(b);
    free(c);
}
END_TEST

/* Q3_K's fast groups (8 at a time in lanes) give the reference's bytes on blocks made to reach
 * every branch of make_q3_quants: gaussian and heavy-tailed groups (up to five passes), all-zero
 * and tiny groups (below the all-zero bound, and just above it), one spike, constants, values
 * on the quant grid (rounding ties), largest magnitudes tied with opposite signs, subnormals. */
START_TEST(test_q3_K_fast_matches_ref) {
    enum { NB = 512, N = 256 * NB };
    float *x = malloc(sizeof(float) * N);
    uint8_t *a = malloc(type_nbytes(GGML_TYPE_Q3_K, N)), *b = malloc(type_nbytes(GGML_TYPE_Q3_K, N));
    ck_assert(x && a && b);
    for (int g = 0; g < N / 16; ++g) {
        float *v = x + 16 * g;
        const int kind = g % 11;
        for (int i = 0; i < 16; ++i) {
            const float r = gaussian();
            switch (kind) {
            case 0: v[i] = 0.05f * r; break;
            case 1: v[i] = r * r * r; break;                               /* heavy tails */
            case 2: v[i] = 0.f; break;                                     /* all zero */
            case 3: v[i] = 1e-16f * r; break;                              /* below the bound */
            case 4: v[i] = i == 5 ? 3.f : 1e-3f * r; break;                /* one spike */
            case 5: v[i] = 0.25f; break;                                   /* constant */
            case 6: v[i] = 0.125f * (float)((g + i) % 8 - 4) + 0.0625f; break; /* on the grid, ties */
            case 7: v[i] = i == 2 ? -2.f : i == 9 ? 2.f : r; break;         /* |max| tied */
            case 8: v[i] = 1e-39f * (float)(i - 8); break;                  /* subnormals */
            case 9: v[i] = 2e-15f * r + (i == 0 ? 2e-15f : 0.f); break;     /* just above the bound */
            default: v[i] = (i % 2 ? 1.f : -1.f) * (1.f + 0.01f * r); break; /* near-symmetric */
            }
        }
    }
    const quant_kernels *k = quant_get(GGML_TYPE_Q3_K);
    const size_t bytes = type_nbytes(GGML_TYPE_Q3_K, N);
    memset(a, 0xAA, bytes);
    memset(b, 0x55, bytes);
    k->quantize_ref(x, a, N);
    k->quantize(x, b, N);
    for (int blk = 0; blk < NB; ++blk)
        CK_ASSERT_QUIET(memcmp(a + blk * bytes / NB, b + blk * bytes / NB, bytes / NB) == 0,
                        "Q3_K block %d: the fast bytes differ from the reference", blk);
    free(x);
    free(a);
    free(b);
}
END_TEST

/* Q8_0's (and Q4_0's) fast rows round as the reference does: ties (x / d exactly k + 0.5) away from zero, values
 * just below a tie down, the block maximum to +-127, tiny blocks (1/d overflows) to 0; and the
 * same bytes as the reference, block by block. */
START_TEST(test_q8_0_fast_ties) {
    enum { NB = 6 };
    float x[32 * NB];
    for (int j = 0; j < 32; ++j) x[j] = j == 0 ? 127.f : (j % 2 ? 1 : -1) * (j + 0.5f); /* d = 1: ties */
    for (int j = 0; j < 32; ++j) x[32 + j] = j == 0 ? -127.f : (j % 2 ? 1 : -1) * nextafterf(j + 0.5f, 0.f);
    for (int j = 0; j < 32; ++j) x[64 + j] = j == 31 ? 1e-39f : 0.f;                 /* subnormal amax */
    for (int j = 0; j < 32; ++j) x[96 + j] = 0.f;                                    /* all zero */
    for (int j = 0; j < 32; ++j) x[128 + j] = (float)(j - 16) / 3.f * 1e4f;          /* large values */
    for (int j = 0; j < 32; ++j) x[160 + j] = j == 5 ? -0.f : (float)j * 0.25f - 4.f; /* exact quarters */
    const quant_kernels *k = quant_get(GGML_TYPE_Q8_0);
    uint8_t a[34 * NB], b[34 * NB];
    memset(a, 0xAA, sizeof a);
    memset(b, 0x55, sizeof b);
    k->quantize_ref(x, a, 32 * NB);
    k->quantize(x, b, 32 * NB);
    for (int i = 0; i < NB; ++i) ck_assert_msg(memcmp(a + 34 * i, b + 34 * i, 34) == 0, "Q8_0 block %d: fast differs from ref", i);
    const int8_t *q = (const int8_t *)(a + 2);
    ck_assert_int_eq(q[0], 127);
    ck_assert_int_eq(q[1], 2);  /* 1.5 -> 2 */
    ck_assert_int_eq(q[2], -3); /* -2.5 -> -3 */
    ck_assert_int_eq(q[31], 32); /* 31.5 -> 32 */
    q = (const int8_t *)(a + 34 + 2);
    ck_assert_int_eq(q[1], 1);   /* just below 1.5 */
    ck_assert_int_eq(q[2], -2);  /* just above -2.5 */
    for (int j = 0; j < 32; ++j) ck_assert_int_eq(((const int8_t *)(a + 68 + 2))[j], 0);

    /* Q4_0 on the same blocks, and on magnitude ties: the first value of largest magnitude
     * gives the sign of d (block 1: -3 first; block 2: +3 first) */
    float t[32 * 3];
    for (int j = 0; j < 32; ++j) t[j] = (float)(j % 7) - 3.f;
    for (int j = 0; j < 32; ++j) t[32 + j] = j == 4 ? -3.f : j == 9 ? 3.f : 0.25f * (float)(j % 5);
    for (int j = 0; j < 32; ++j) t[64 + j] = j == 4 ? 3.f : j == 9 ? -3.f : -0.f;
    const quant_kernels *k4 = quant_get(GGML_TYPE_Q4_0);
    uint8_t c[18 * NB], e[18 * NB];
    k4->quantize_ref(x, c, 32 * NB);
    k4->quantize(x, e, 32 * NB);
    ck_assert_msg(memcmp(c, e, 18 * NB) == 0, "Q4_0: fast differs from ref");
    k4->quantize_ref(t, c, 96);
    k4->quantize(t, e, 96);
    ck_assert_msg(memcmp(c, e, 18 * 3) == 0, "Q4_0 ties: fast differs from ref");
    ck_assert(fp16_to_f32((uint16_t)(c[18] | c[19] << 8)) > 0);  /* d = -(-3) / 8 */
    ck_assert(fp16_to_f32((uint16_t)(c[36] | c[37] << 8)) < 0);  /* d = -(+3) / 8 */
}
END_TEST

/* quant_row_finite (scales only, for block types) says the same as decoding every value and
 * checking it: on quantized rows, on rows with one scale set to Inf or NaN (offsets from this
 * file's own table), and on blocks of random bytes, where about one fp16 field in 32 is not
 * finite. */
START_TEST(test_row_finite_matches_decoding) {
    enum { NBLK = 512 };
    for (int t = 0; t < COUNT(ALL_TYPES); ++t) {
        const int ty = ALL_TYPES[t];
        const type_info *ti = type_get(ty);
        const int64_t n = (int64_t)ti->blck_size * NBLK;
        const size_t bytes = type_nbytes(ty, n);
        uint8_t *q = malloc(bytes);
        float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        ck_assert(q && x && y);
        for (int64_t i = 0; i < n; ++i) x[i] = gaussian();
        quant_get(ty)->quantize(x, q, n);
        ck_assert_int_eq(quant_row_finite(ty, q, n, y), 1);
        for (const int *off = scale_offsets(ty); ti->quantized && *off >= 0; ++off) {
            for (int v = 0; v < 2; ++v) {
                uint8_t *blk = q + ti->type_size * 7;
                uint8_t save0 = blk[*off], save1 = blk[*off + 1];
                blk[*off] = v ? 0x00 : 0x01; /* +Inf, then a NaN */
                blk[*off + 1] = v ? 0x7c : 0xfe;
                CK_ASSERT_QUIET(quant_row_finite(ty, q, n, y) == 0, "%s: scale at %d not seen", ti->name, *off);
                blk[*off] = save0;
                blk[*off + 1] = save1;
            }
        }
        int bad = 0;
        for (int b = 0; b < 2000; ++b) {
            for (size_t i = 0; i < ti->type_size; ++i) q[i] = (uint8_t)(uniform() * 256);
            quant_get(ty)->dequantize(q, y, ti->blck_size);
            int decoded = 1;
            for (int64_t i = 0; i < ti->blck_size; ++i) decoded &= isfinite(y[i]) != 0;
            int got = quant_row_finite(ty, q, ti->blck_size, y);
            CK_ASSERT_QUIET(got == decoded, "%s random block %d: row_finite %d, decoding says %d", ti->name, b, got, decoded);
            bad += !decoded;
        }
        ck_assert_msg(ty == GGML_TYPE_F32 || bad > 0, "%s: no non-finite random block met", ti->name);
        ck_assert_int_eq(quant_row_finite(ty, q, ti->blck_size + (ti->blck_size > 1), y), ti->blck_size > 1 ? -1 : 1);
        free(q);
        free(x);
        free(y);
    }
}
END_TEST

/* Round trip on gaussian data: relative RMSE within what each bit width allows. The bounds
 * are about 1.3x what these kernels measure (printed), so a regression shows. */
START_TEST(test_roundtrip_bounds) {
    static const struct { int type; double max_rel; } bounds[] = {
        {GGML_TYPE_F32, 0.0},     {GGML_TYPE_F16, 3e-4},   {GGML_TYPE_BF16, 2.5e-3}, {GGML_TYPE_Q8_0, 0.012},
        {GGML_TYPE_Q8_K, 0.0095},  {GGML_TYPE_Q6_K, 0.025}, {GGML_TYPE_Q5_0, 0.055},  {GGML_TYPE_Q5_1, 0.05},
        {GGML_TYPE_Q5_K, 0.045},  {GGML_TYPE_Q4_0, 0.11},  {GGML_TYPE_Q4_1, 0.1},    {GGML_TYPE_Q4_K, 0.09},
        {GGML_TYPE_Q3_K, 0.2},    {GGML_TYPE_Q2_K, 0.42},   {GGML_TYPE_IQ4_NL, 0.095}, {GGML_TYPE_IQ4_XS, 0.095},
    };
    const int64_t n = 8192;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    ck_assert(x && y);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian();
    const double x_rms = rms(x, n);
    for (int i = 0; i < COUNT(bounds); ++i) {
        const quant_kernels *k = quant_get(bounds[i].type);
        roundtrip(k, x, y, n, NULL);
        const double rel = rmse(x, y, n) / x_rms;
        fprintf(stderr, "roundtrip %-5s relative rmse %.5f (bound %.5f)\n", type_name(k->type), rel, bounds[i].max_rel);
        ck_assert_msg(rel <= bounds[i].max_rel, "%s: relative rmse %g > %g", type_name(k->type), rel,
                      bounds[i].max_rel);
    }
    free(x);
    free(y);
}
END_TEST

/* With per-column importance, the weighted quantizer lowers the importance-weighted error
 * sum(imp * (x - q)^2) compared to the plain reference quantizer. */
START_TEST(test_importance_reduces_weighted_error) {
    const int types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0,
                         GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
                         GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS};
    const int64_t ne0 = 1024, nrows = 16;
    float *x = malloc(ne0 * nrows * sizeof *x), *imp = malloc(ne0 * sizeof *imp);
    float *y_ref = malloc(ne0 * sizeof *y_ref), *y_w = malloc(ne0 * sizeof *y_w);
    ck_assert(x && imp && y_ref && y_w);
    for (int64_t i = 0; i < ne0 * nrows; ++i) x[i] = gaussian();
    for (int64_t i = 0; i < ne0; ++i) imp[i] = expf(2.f * gaussian()); /* log-normal: a few columns dominate */
    for (int i = 0; i < COUNT(types); ++i) {
        const quant_kernels *k = quant_get(types[i]);
        double e_ref = 0, e_w = 0;
        for (int64_t r = 0; r < nrows; ++r) {
            const float *row = x + r * ne0;
            roundtrip(k, row, y_ref, ne0, NULL);
            roundtrip(k, row, y_w, ne0, imp);
            for (int64_t j = 0; j < ne0; ++j) {
                e_ref += imp[j] * ((double)row[j] - y_ref[j]) * ((double)row[j] - y_ref[j]);
                e_w += imp[j] * ((double)row[j] - y_w[j]) * ((double)row[j] - y_w[j]);
            }
        }
        fprintf(stderr, "importance %-5s weighted error: ref %.5g, weighted %.5g (%.3f)\n", type_name(k->type), e_ref,
                e_w, e_w / e_ref);
        ck_assert_msg(e_w < e_ref, "%s: weighted error %g not below unweighted %g", type_name(k->type), e_w, e_ref);
    }
    /* uniform importance still gives a sane quantization (no worse than 1.2x the ref RMSE) */
    for (int64_t j = 0; j < ne0; ++j) imp[j] = 1.f;
    for (int i = 0; i < COUNT(types); ++i) {
        const quant_kernels *k = quant_get(types[i]);
        roundtrip(k, x, y_ref, ne0, NULL);
        roundtrip(k, x, y_w, ne0, imp);
        ck_assert_msg(rmse(x, y_w, ne0) <= 1.2 * rmse(x, y_ref, ne0), "%s: uniform importance rmse %g vs ref %g",
                      type_name(k->type), rmse(x, y_w, ne0), rmse(x, y_ref, ne0));
    }
    free(x);
    free(imp);
    free(y_ref);
    free(y_w);
}
END_TEST

/* Quantize one 256-value row with every kernel variant; the scales must be finite and so
 * must every dequantized value. Returns nothing; `check` compares y against x per type. */
typedef void (*row_check)(int type, const float *x, const float *y);

static void run_edge_case(const char *what, const float *x, row_check check) {
    const int64_t n = 256;
    float imp[256], y[256];
    uint8_t q[1024];
    for (int j = 0; j < n; ++j) imp[j] = 1.f + (float)(j % 7);
    for (int i = 0; i < COUNT(ALL_TYPES); ++i) {
        const quant_kernels *k = quant_get(ALL_TYPES[i]);
        for (int variant = 0; variant < 2; ++variant) {
            if (variant == 0)
                k->quantize(x, q, n);
            else
                k->quantize_weighted(x, q, n, imp);
            assert_scales_finite(what, k->type, q, n);
            k->dequantize(q, y, n);
            for (int j = 0; j < n; ++j)
                /* F16 itself has no finite value beyond +-65504: only check representable ones */
                if (k->type != GGML_TYPE_F16 || fabsf(x[j]) <= 65504.f)
                    CK_ASSERT_QUIET(isfinite(y[j]), "%s %s%s: value %d dequantizes to %g", what, type_name(k->type),
                              variant ? " weighted" : "", j, y[j]);
            if (check) check(k->type, x, y);
        }
    }
}

static void check_zero(int type, const float *x, const float *y) {
    (void)x;
    for (int j = 0; j < 256; ++j) ck_assert_msg(y[j] == 0.f, "zeros %s: value %d = %g", type_name(type), j, y[j]);
}

static void check_close_1pct(int type, const float *x, const float *y) {
    for (int j = 0; j < 256; ++j)
        ck_assert_msg(fabsf(y[j] - x[j]) <= 0.01f * fabsf(x[j]) + 1e-6f, "constant %s: value %d = %.9g, want %.9g",
                      type_name(type), j, y[j], x[j]);
}

/* Outlier 1000 among values ~0.01: the outlier survives within 2% (it sets the scale). */
static void check_outlier(int type, const float *x, const float *y) {
    ck_assert_msg(fabsf(y[77] - x[77]) <= 0.02f * fabsf(x[77]), "outlier %s: %.9g for %.9g", type_name(type), y[77],
                  x[77]);
}

/* Tiny inputs must give tiny outputs. */
static void check_tiny(int type, const float *x, const float *y) {
    (void)x;
    for (int j = 0; j < 256; ++j)
        CK_ASSERT_QUIET(fabsf(y[j]) <= 1e-30f, "subnormal %s: value %d = %g", type_name(type), j, y[j]);
}

START_TEST(test_edge_cases) {
    float x[256];
    memset(x, 0, sizeof x);
    run_edge_case("zeros", x, check_zero);

    for (int j = 0; j < 256; ++j) x[j] = 0.5f;
    run_edge_case("constant 0.5", x, check_close_1pct);
    for (int j = 0; j < 256; ++j) x[j] = -3.25f;
    run_edge_case("constant -3.25", x, check_close_1pct);

    for (int j = 0; j < 256; ++j) x[j] = 0.01f * gaussian();
    x[77] = 1000.f;
    run_edge_case("outlier 1000", x, check_outlier);
    x[77] = -1e6f; /* beyond fp16 range for some scales: they must saturate, not become Inf */
    run_edge_case("outlier -1e6", x, NULL);
    x[77] = 3e38f;
    run_edge_case("outlier 3e38", x, NULL);

    for (int j = 0; j < 256; ++j) x[j] = (j % 3 ? 1 : -1) * 1e-40f * (float)(1 + j % 13); /* subnormal */
    run_edge_case("subnormals", x, check_tiny);
    for (int j = 0; j < 256; ++j) x[j] = (j % 2 ? 1e-38f : -1e-39f) * (float)(1 + j % 5); /* near FLT_MIN */
    run_edge_case("near FLT_MIN", x, check_tiny);
    memset(x, 0, sizeof x);
    x[5] = 1e-45f; /* the smallest subnormal, alone */
    run_edge_case("one denormal", x, check_tiny);
}
END_TEST

/* ------------------------------------------------------------------ IQ4_NL / IQ4_XS
 *
 * llama.cpp has no IQ4 reference blocks in ../shared, so these tests pin the kernels down from
 * first principles: exact bytes for blocks whose answer can be worked out by hand, the
 * dequantization formula on hand-built blocks, and an independent re-derivation (in double,
 * exhaustive nearest-level search) of what llama.cpp's search must choose on random blocks. */

/* llama.cpp's kvalues_iq4nl, written out again so the test does not trust the kernel's copy. */
static const int IQ4_TABLE[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Dequantization of hand-built blocks equals d * level (IQ4_NL) and d * (sc - 32) * level
 * (IQ4_XS), computed here from the layout description, bit for bit. */
START_TEST(test_iq4_dequant_formula) {
    const quant_kernels *nl = quant_get(GGML_TYPE_IQ4_NL), *xs = quant_get(GGML_TYPE_IQ4_XS);
    /* IQ4_NL: 3 blocks with different d (one negative, one subnormal), every nibble pair */
    const uint16_t ds[3] = {0x3555 /* ~0.333 */, 0xC800 /* -8 */, 0x0003 /* subnormal */};
    uint8_t q[3 * 18];
    for (int b = 0; b < 3; ++b) {
        q[18 * b] = (uint8_t)ds[b];
        q[18 * b + 1] = (uint8_t)(ds[b] >> 8);
        for (int j = 0; j < 16; ++j) q[18 * b + 2 + j] = (uint8_t)((j + 5 * b) % 16 | ((15 - j) << 4));
    }
    float y[256];
    nl->dequantize(q, y, 96);
    for (int b = 0; b < 3; ++b) {
        const float d = fp16_to_f32(ds[b]);
        for (int j = 0; j < 16; ++j) {
            const float lo = d * (float)IQ4_TABLE[(j + 5 * b) % 16], hi = d * (float)IQ4_TABLE[15 - j];
            CK_ASSERT_QUIET(memcmp(&y[32 * b + j], &lo, 4) == 0, "IQ4_NL block %d value %d: %g want %g", b, j,
                          y[32 * b + j], lo);
            CK_ASSERT_QUIET(memcmp(&y[32 * b + j + 16], &hi, 4) == 0, "IQ4_NL block %d value %d: %g want %g", b,
                          j + 16, y[32 * b + j + 16], hi);
        }
    }
    /* IQ4_XS: scales 6 bits each, low nibble in scales_l (even group in the low half), top 2 bits
     * in scales_h at bit 2*group. Pick scales that exercise every bit: 0, 63, 32, 17, ... */
    const int sc[8] = {0, 63, 32, 17, 46, 1, 31, 50};
    uint8_t b[136];
    memset(b, 0, sizeof b);
    b[0] = 0x66; /* d = 0x2E66 ~ 0.0998 */
    b[1] = 0x2E;
    uint16_t sh = 0;
    for (int g = 0; g < 8; ++g) {
        b[4 + g / 2] |= (uint8_t)((sc[g] & 0xF) << (4 * (g % 2)));
        sh |= (uint16_t)((sc[g] >> 4) << (2 * g));
    }
    b[2] = (uint8_t)sh;
    b[3] = (uint8_t)(sh >> 8);
    for (int i = 0; i < 128; ++i) b[8 + i] = (uint8_t)((i * 7) & 0xFF);
    xs->dequantize(b, y, 256);
    const float d = fp16_to_f32(0x2E66);
    for (int g = 0; g < 8; ++g) {
        const float dl = d * (float)(sc[g] - 32);
        for (int j = 0; j < 32; ++j) {
            const uint8_t byte = b[8 + 16 * g + j % 16];
            const int idx = j < 16 ? byte & 0xF : byte >> 4;
            const float want = dl * (float)IQ4_TABLE[idx];
            CK_ASSERT_QUIET(memcmp(&y[32 * g + j], &want, 4) == 0, "IQ4_XS group %d value %d: %g want %g", g, j,
                          y[32 * g + j], want);
        }
    }
}
END_TEST

/* Blocks that are exactly representable come back exactly, with the bytes worked out by hand:
 * x = 0.5 * level[j % 16] is fitted perfectly by the try that maps the largest value (-63.5) to
 * -127, so d = 0.5 (fp16 0x3800) and the quants are j % 16. The same for IQ4_XS with group
 * scales k * 2^-6 (k = -32 for the largest, so d = 2^-6 and the stored scales are k + 32), and
 * one all-zero group (scale 0 stored as 32, quants 8 = level 1, the level nearest 0). */
START_TEST(test_iq4_exact_blocks) {
    const quant_kernels *nl = quant_get(GGML_TYPE_IQ4_NL), *xs = quant_get(GGML_TYPE_IQ4_XS);
    float x[256], y[256];
    uint8_t q[136];
    for (int j = 0; j < 32; ++j) x[j] = 0.5f * (float)IQ4_TABLE[j % 16];
    for (int variant = 0; variant < 3; ++variant) {
        memset(q, 0xEE, sizeof q);
        if (variant == 0) nl->quantize_ref(x, q, 32);
        else if (variant == 1) nl->quantize(x, q, 32);
        else quant_iq4_nl_row_ref(x, q, 32); /* the first guess (-63.5 -> -127) is already perfect */
        ck_assert_uint_eq(le16(q), 0x3800);
        for (int j = 0; j < 16; ++j) ck_assert_uint_eq(q[2 + j], (unsigned)(j | j << 4));
        nl->dequantize(q, y, 32);
        for (int j = 0; j < 32; ++j) ck_assert_float_eq(y[j], x[j]);
    }

    const int k[8] = {5, -32, 0, 31, -1, 17, -20, 1};
    const float base = 1.f / 64;
    for (int g = 0; g < 8; ++g)
        for (int j = 0; j < 32; ++j) x[32 * g + j] = (float)k[g] * base * (float)IQ4_TABLE[(j + 3 * g) % 16];
    memset(q, 0xEE, sizeof q);
    xs->quantize(x, q, 256);
    ck_assert_uint_eq(le16(q), 0x2400); /* 2^-6 */
    for (int g = 0; g < 8; ++g) {
        const int low = (q[4 + g / 2] >> (4 * (g % 2))) & 0xF, high = (le16(q + 2) >> (2 * g)) & 3;
        ck_assert_int_eq(low | high << 4, k[g] + 32);
        for (int j = 0; j < 32; ++j) {
            const uint8_t byte = q[8 + 16 * g + j % 16];
            const int idx = j < 16 ? byte & 0xF : byte >> 4;
            ck_assert_int_eq(idx, k[g] ? (j + 3 * g) % 16 : 8);
        }
    }
    xs->dequantize(q, y, 256);
    for (int j = 0; j < 256; ++j) ck_assert_float_eq(y[j], x[j]);

    /* all zeros: IQ4_NL d = +0, IQ4_XS d = -0 (llama.cpp computes -max_scale/32 = -0.0), scales
     * 32, quants 8 */
    memset(x, 0, sizeof x);
    nl->quantize(x, q, 32);
    ck_assert_uint_eq(le16(q), 0x0000);
    for (int j = 0; j < 16; ++j) ck_assert_uint_eq(q[2 + j], 0x88);
    xs->quantize(x, q, 256);
    ck_assert_uint_eq(le16(q), 0x8000);
    ck_assert_uint_eq(le16(q + 2), 0xAAAA);
    for (int j = 0; j < 4; ++j) ck_assert_uint_eq(q[4 + j], 0);
    for (int j = 0; j < 128; ++j) ck_assert_uint_eq(q[8 + j], 0x88);
}
END_TEST

/* The nearest level to v by exhaustive search; the upper one on an exact tie (llama.cpp's
 * best_index_int8 takes the upper). *margin receives how far v is from being a tie. */
static int iq4_nearest_exhaustive(double v, double *margin) {
    int best = 0;
    double best_dist = fabs(v - IQ4_TABLE[0]), second = INFINITY;
    for (int i = 1; i < 16; ++i) {
        const double dist = fabs(v - IQ4_TABLE[i]);
        if (dist <= best_dist) {
            second = best_dist;
            best_dist = dist;
            best = i;
        } else if (dist < second) {
            second = dist;
        }
    }
    *margin = second - best_dist;
    return best;
}

/* Independent re-derivation of one IQ4_NL block (llama-quantize's search, ntry = 7) in double:
 * the 16 candidate inverse scales (127/max, then (itry - 127)/max for itry -7..7), each
 * assignment by exhaustive nearest level, the fit scale = sum w q x / sum w q^2, and the best
 * candidate is the one with the largest (sum w q x)^2 / sum w q^2; the final quants are the
 * nearest levels to x / scale. With x^2 weights, candidates that differ only in small values
 * often score within 1e-6 of each other, where the kernel's float sums legitimately decide: so
 * every candidate within `tol` of the best is returned as acceptable (scales[0..count-1], their
 * final quants in L[k]). Returns 0 when a value sits within float noise of a level midpoint. */
#define IQ4_MAX_CAND 16
static int iq4_nl_derive(const float *x, const float *imp, double scales[IQ4_MAX_CAND], int L[IQ4_MAX_CAND][32]) {
    const double tol = 1e-5;
    double w[32], sigma2 = 0, amax = 0, max = 0, obj[16], fit[16], margin;
    for (int j = 0; j < 32; ++j) sigma2 += (double)x[j] * x[j];
    sigma2 *= 2.0 / 32;
    for (int j = 0; j < 32; ++j) {
        w[j] = imp ? imp[j] * sqrt(sigma2 + (double)x[j] * x[j]) : (double)x[j] * x[j];
        if (fabs(x[j]) > amax) { amax = fabs(x[j]); max = x[j]; }
    }
    if (amax < 1e-15) {
        scales[0] = 0;
        for (int j = 0; j < 32; ++j) L[0][j] = 8;
        return 1;
    }
    double best = 0;
    for (int c = 0; c < 16; ++c) {
        const double id = c == 0 ? 127.0 / max : (c - 8 - 127.0) / max; /* c 1..15: itry -7..7 */
        double sqx = 0, sq2 = 0;
        for (int j = 0; j < 32; ++j) {
            const int l = iq4_nearest_exhaustive(id * x[j], &margin);
            if (margin < 1e-5 * fabs(id * x[j]) + 1e-9) return 0;
            sqx += w[j] * IQ4_TABLE[l] * x[j];
            sq2 += w[j] * IQ4_TABLE[l] * IQ4_TABLE[l];
        }
        obj[c] = sq2 > 0 ? sqx * sqx / sq2 : 0;
        fit[c] = sq2 > 0 ? sqx / sq2 : 0;
        if (obj[c] > best) best = obj[c];
    }
    int count = 0;
    for (int c = 0; c < 16; ++c) {
        if (obj[c] < best * (1 - tol)) continue;
        bool seen = false;
        for (int k = 0; k < count; ++k) seen |= scales[k] == fit[c];
        if (seen) continue;
        scales[count] = fit[c];
        for (int j = 0; j < 32; ++j) {
            L[count][j] = iq4_nearest_exhaustive(x[j] / fit[c], &margin);
            if (margin < 1e-5 * fabs(x[j] / fit[c]) + 1e-9) return 0;
        }
        count++;
    }
    return count;
}

/* The kernel agrees with the double-precision re-derivation on random blocks (gaussian,
 * heavy-tailed, all-positive, with and without importance): its fp16 scale and its quants are
 * those of the best candidate, or of one within 1e-5 of it. Most blocks have a single
 * acceptable answer, and those are the same bytes exactly. */
START_TEST(test_iq4_nl_matches_derivation) {
    const quant_kernels *nl = quant_get(GGML_TYPE_IQ4_NL);
    int unique = 0, among_ties = 0, skipped = 0;
    static double scales[IQ4_MAX_CAND];
    static int L[IQ4_MAX_CAND][32];
    for (int blk = 0; blk < 3000; ++blk) {
        float x[32], imp[32];
        for (int j = 0; j < 32; ++j) {
            switch (blk % 3) {
            case 0: x[j] = gaussian(); break;
            case 1: x[j] = gaussian() * gaussian() * gaussian(); break;
            default: x[j] = 0.1f + (float)uniform(); break;
            }
            imp[j] = expf(gaussian());
        }
        const bool weighted = blk % 2 == 1;
        const int count = iq4_nl_derive(x, weighted ? imp : NULL, scales, L);
        if (!count) {
            skipped++;
            continue;
        }
        uint8_t q[18];
        if (weighted) nl->quantize_weighted(x, q, 32, imp);
        else nl->quantize_ref(x, q, 32);
        bool match = false;
        for (int k = 0; k < count && !match; ++k) {
            /* the float fit may differ from the double one in the last bits: accept the fp16
             * neighbours only when the double scale sits that close to a rounding boundary */
            const uint16_t want = f32_to_fp16((float)scales[k]), got = le16(q);
            const uint16_t lo = f32_to_fp16((float)(scales[k] * (1 - 1e-5)));
            const uint16_t hi = f32_to_fp16((float)(scales[k] * (1 + 1e-5)));
            match = got == want || got == lo || got == hi;
            for (int j = 0; j < 32 && match; ++j) match = (j < 16 ? q[2 + j] & 0xF : q[2 + j - 16] >> 4) == L[k][j];
        }
        ck_assert_msg(match, "block %d%s: scale 0x%04x matches none of %d derived fits (best %.9g)", blk,
                      weighted ? " weighted" : "", le16(q), count, scales[0]);
        if (count == 1) unique++;
        else among_ties++;
    }
    fprintf(stderr, "IQ4_NL derivation: %d blocks identical to the unique answer, %d to one of near-tied fits, "
            "%d skipped (a value at a level midpoint)\n", unique, among_ties, skipped);
    ck_assert_msg(unique > 1800 && skipped < 100, "unique %d, skipped %d", unique, skipped);
}
END_TEST

/* llama.cpp's quantize_row_iq4_nl_ref (quant_iq4_nl_row_ref): no search. Its quants are the
 * nearest levels to x * -127 / max, and its scale the least-squares fit of those quants with
 * weights x^2. Checked against a double derivation; and its error is never below the searched
 * quantize_ref's on a whole tensor (the search only keeps better fits). */
START_TEST(test_iq4_nl_row_ref) {
    const quant_kernels *nl = quant_get(GGML_TYPE_IQ4_NL);
    int checked = 0;
    const int64_t n = 32 * 512;
    float *x = malloc(n * sizeof *x), *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    uint8_t *q = malloc(type_nbytes(GGML_TYPE_IQ4_NL, n));
    ck_assert(x && y1 && y2 && q);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian();
    quant_iq4_nl_row_ref(x, q, n);
    for (int64_t b = 0; b < n / 32; ++b) {
        const float *xb = x + 32 * b;
        double amax = 0, max = 0, sqx = 0, sq2 = 0, margin;
        for (int j = 0; j < 32; ++j)
            if (fabs(xb[j]) > amax) { amax = fabs(xb[j]); max = xb[j]; }
        bool tie = false;
        int L[32];
        for (int j = 0; j < 32; ++j) {
            L[j] = iq4_nearest_exhaustive(-127.0 / max * xb[j], &margin);
            tie |= margin < 1e-4;
            const double w = (double)xb[j] * xb[j];
            sqx += w * IQ4_TABLE[L[j]] * xb[j];
            sq2 += w * IQ4_TABLE[L[j]] * IQ4_TABLE[L[j]];
        }
        if (tie) continue;
        const uint8_t *blk = q + 18 * b;
        for (int j = 0; j < 32; ++j) ck_assert_int_eq(j < 16 ? blk[2 + j] & 0xF : blk[2 + j - 16] >> 4, L[j]);
        const float got = fp16_to_f32(le16(blk)), want = (float)(sqx / sq2);
        ck_assert_msg(fabsf(got - want) <= 1e-3f * fabsf(want), "block %lld: scale %.9g, derived %.9g", (long long)b,
                      got, want);
        ck_assert_msg(want * max < 0, "block %lld: the first guess maps the largest value %g to -127, scale %g",
                      (long long)b, max, want);
        checked++;
    }
    ck_assert_int_gt(checked, 480);
    nl->dequantize(q, y1, n);
    roundtrip(nl, x, y2, n, NULL);
    ck_assert_msg(rmse(x, y2, n) < rmse(x, y1, n), "searched rmse %g not below unsearched %g", rmse(x, y2, n),
                  rmse(x, y1, n));
    free(x);
    free(y1);
    free(y2);
    free(q);
}
END_TEST

/* Quantizing the dequantized values again gives the same bytes: a block that uses level -127
 * is reproduced exactly by the try that maps its largest value to -127 (a perfect fit beats
 * every other candidate). llama.cpp's 16 candidates cannot map the largest value to 113, so
 * a block whose largest value sits on 113 may move; those are counted, not asserted. Also
 * checked: IQ4_XS, for super-blocks where every group holds a -127 and the largest group
 * scale is on -32 (then every group refits exactly). */
START_TEST(test_iq4_idempotent) {
    const quant_kernels *nl = quant_get(GGML_TYPE_IQ4_NL), *xs = quant_get(GGML_TYPE_IQ4_XS);
    const int64_t n = 256 * 64;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *q1 = malloc(type_nbytes(GGML_TYPE_IQ4_NL, n)), *q2 = malloc(type_nbytes(GGML_TYPE_IQ4_NL, n));
    ck_assert(x && y && q1 && q2);
    for (int64_t i = 0; i < n; ++i) x[i] = gaussian() * (i % 1024 < 512 ? 1.f : 1e-3f);
    /* IQ4_NL */
    nl->quantize(x, q1, n);
    nl->dequantize(q1, y, n);
    nl->quantize(y, q2, n);
    int with_m127 = 0, moved_other = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t *a = q1 + 18 * b, *c = q2 + 18 * b;
        bool has0 = false;
        for (int j = 0; j < 16; ++j) has0 |= (a[2 + j] & 0xF) == 0 || (a[2 + j] >> 4) == 0;
        if (has0) {
            with_m127++;
            CK_ASSERT_QUIET(memcmp(a, c, 18) == 0, "IQ4_NL block %lld not reproduced", (long long)b);
        } else if (memcmp(a, c, 18) != 0) {
            moved_other++;
        }
    }
    fprintf(stderr, "IQ4_NL idempotence: %d of %lld blocks use -127 (all reproduced); %d others moved\n", with_m127,
            (long long)(n / 32), moved_other);
    ck_assert_int_gt(with_m127, (int)(n / 32) / 2);
    /* a second round trip changes nothing at all for any block: the fixed point is reached */
    nl->dequantize(q2, y, n);
    nl->quantize(y, q1, n);
    ck_assert(memcmp(q1, q2, type_nbytes(GGML_TYPE_IQ4_NL, n)) == 0);

    /* IQ4_XS */
    xs->quantize(x, q1, n);
    xs->dequantize(q1, y, n);
    xs->quantize(y, q2, n);
    int eligible = 0;
    for (int64_t b = 0; b < n / 256; ++b) {
        const uint8_t *a = q1 + 136 * b, *c = q2 + 136 * b;
        bool ok = false;
        for (int g = 0; g < 8; ++g) {
            const int low = (a[4 + g / 2] >> (4 * (g % 2))) & 0xF, high = (le16(a + 2) >> (2 * g)) & 3;
            ok |= (low | high << 4) == 0;
        }
        for (int g = 0; g < 8 && ok; ++g) {
            bool has0 = false;
            for (int j = 0; j < 16; ++j) has0 |= (a[8 + 16 * g + j] & 0xF) == 0 || (a[8 + 16 * g + j] >> 4) == 0;
            ok = has0;
        }
        if (!ok) continue;
        eligible++;
        ck_assert_msg(memcmp(a, c, 136) == 0, "IQ4_XS super-block %lld not reproduced", (long long)b);
    }
    fprintf(stderr, "IQ4_XS idempotence: %d of %lld super-blocks eligible, all reproduced\n", eligible,
            (long long)(n / 256));
    ck_assert_int_gt(eligible, 0);
    free(x);
    free(y);
    free(q1);
    free(q2);
}
END_TEST

/* ------------------------------------------------------------------ weighted K-quants vs llama.cpp */

/* The weighted Q4_K / Q6_K refine llama.cpp's blocks: on many random rows with random
 * positive importance, every block's error (quant_weighted_error) is at most that of llama.cpp's
 * algorithm (quant_weighted_llama) and the total is strictly lower; Q2_K / Q3_K / Q5_K give llama.cpp's
 * bytes exactly. Fast == reference bytes throughout. */
START_TEST(test_weighted_refine_no_worse) {
    const int types[] = {GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    enum { NROWS = 60, N = 512, QK_K = 256 };
    float x[N], imp[N];
    uint8_t a[N / QK_K * 210], b[N / QK_K * 210], c[N / QK_K * 210];
    for (int t = 0; t < COUNT(types); ++t) {
        const quant_kernels *k = quant_get(types[t]);
        const size_t bs = type_get(types[t])->type_size;
        double sum_old = 0, sum_new = 0, sum_ratio = 0;
        int blocks = 0, better = 0;
        for (int r = 0; r < NROWS; ++r) {
            const float scale = r % 3 == 0 ? 0.02f : r % 3 == 1 ? 1.f : 300.f;
            for (int i = 0; i < N; ++i) {
                x[i] = scale * (r % 4 == 3 ? gaussian() * gaussian() : gaussian());
                imp[i] = r % 2 ? expf(2.f * gaussian()) : 0.01f + (float)uniform();
            }
            ck_assert(quant_weighted_llama(types[t], x, a, N, imp));
            k->quantize_weighted(x, b, N, imp);
            k->quantize_weighted_ref(x, c, N, imp);
            CK_ASSERT_QUIET(memcmp(b, c, (N / QK_K) * bs) == 0, "%s: weighted fast differs from reference", type_name(types[t]));
            const bool refined = types[t] == GGML_TYPE_Q4_K || types[t] == GGML_TYPE_Q6_K;
            if (!refined)
                CK_ASSERT_QUIET(memcmp(a, b, (N / QK_K) * bs) == 0, "%s: weighted differs from llama.cpp's", type_name(types[t]));
            for (int i = 0; i < N / QK_K; ++i) {
                const double e_old = quant_weighted_error(types[t], x + QK_K * i, a + bs * i, QK_K, imp + QK_K * i);
                const double e_new = quant_weighted_error(types[t], x + QK_K * i, b + bs * i, QK_K, imp + QK_K * i);
                CK_ASSERT_QUIET(e_old > 0 && e_new >= 0, "%s: errors %g %g", type_name(types[t]), e_old, e_new);
                CK_ASSERT_QUIET(e_new <= e_old, "%s row %d block %d: weighted error %.9g above llama.cpp's %.9g",
                              type_name(types[t]), r, i, e_new, e_old);
                sum_old += e_old;
                sum_new += e_new;
                sum_ratio += e_new / e_old;
                better += e_new < e_old;
                blocks++;
            }
        }
        fprintf(stderr, "refine %-5s: %d blocks, %d improved, mean error ratio %.4f, total %.4f\n",
                type_name(types[t]), blocks, better, sum_ratio / blocks, sum_new / sum_old);
        if (types[t] == GGML_TYPE_Q4_K || types[t] == GGML_TYPE_Q6_K)
            CK_ASSERT_QUIET(sum_new < sum_old && better > blocks / 2, "%s: %d of %d blocks improved", type_name(types[t]),
                          better, blocks);
    }
    /* other types and NULL importance: not handled, nothing written */
    ck_assert(!quant_weighted_llama(GGML_TYPE_Q4_0, x, a, 32, imp));
    ck_assert(!quant_weighted_llama(GGML_TYPE_Q4_K, x, a, N, NULL));
    ck_assert(quant_weighted_error(GGML_TYPE_Q8_0, x, a, 32, imp) == -1);
}
END_TEST

/* ------------------------------------------------------------------ fast == reference, at scale */

/* Compare quantize / quantize_weighted (the fast searches) with quantize_ref /
 * quantize_weighted_ref (the reference searches), byte for byte, on one row. */
static void assert_fast_matches(const char *what, int type, const float *x, int64_t n, const float *imp) {
    const quant_kernels *k = quant_get(type);
    const size_t bytes = type_nbytes(type, n);
    uint8_t *a = malloc(bytes), *b = malloc(bytes);
    CK_ASSERT_QUIET(a && b, "out of memory");
    memset(a, 0xAA, bytes);
    memset(b, 0x55, bytes);
    if (imp) k->quantize_weighted_ref(x, a, n, imp);
    else k->quantize_ref(x, a, n);
    if (imp) k->quantize_weighted(x, b, n, imp);
    else k->quantize(x, b, n);
    size_t diff = 0;
    while (diff < bytes && a[diff] == b[diff]) diff++;
    CK_ASSERT_QUIET(diff == bytes, "%s %s%s: fast differs from reference at byte %zu (block %zu)", what, type_name(type),
                  imp ? " weighted" : "", diff, diff / type_get(type)->type_size);
    free(a);
    free(b);
}

/* Many random rows of every type, plain and weighted, with shapes the searches find hard:
 * gaussian, heavy tails, all-positive, constant stretches, zeros, huge and tiny scales. */
START_TEST(test_fast_many_rows) {
    const int64_t n = 512;
    float x[512], imp[512];
    int rows = 0;
    for (int r = 0; r < 400; ++r) {
        const int shape = r % 8;
        const float scale = r % 16 < 8 ? 1.f : (r % 3 == 0 ? 1e-20f : r % 3 == 1 ? 1e4f : 1e-3f);
        for (int64_t i = 0; i < n; ++i) {
            float v;
            switch (shape) {
            case 0: v = gaussian(); break;
            case 1: v = gaussian() * gaussian() * gaussian(); break;
            case 2: v = (float)uniform(); break;
            case 3: v = -(float)uniform() - 0.5f; break;
            case 4: v = i % 64 < 40 ? 0.25f : gaussian(); break;
            case 5: v = i % 32 == 7 ? 50.f * gaussian() : 0.01f * gaussian(); break;
            case 6: v = (float)((int)(gaussian() * 4)) / 4; break; /* few distinct values */
            default: v = i % 256 < 128 ? 0.f : gaussian(); break;
            }
            x[i] = v * scale;
            imp[i] = r % 5 == 0 ? 1.f : expf(2.f * gaussian()) * (i % 50 == 3 ? 0.f : 1.f);
        }
        for (int t = 0; t < COUNT(ALL_TYPES); ++t) {
            assert_fast_matches("random row", ALL_TYPES[t], x, n, NULL);
            assert_fast_matches("random row", ALL_TYPES[t], x, n, imp);
        }
        rows++;
    }
    ck_assert_int_eq(rows, 400);
}
END_TEST

/* The reference tensors (real trained weights): every type, fast == reference, plain and with a
 * synthetic importance; and for the K-quants the fast bytes are llama.cpp's own. */
START_TEST(test_fast_reference_tensors) {
    char *dir = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.f32");
    free(dir);
    for (int t = 0; t < N_REF_TENSORS; ++t) {
        const ref_tensor *rt = &REF_TENSORS[t];
        size_t flen;
        float *x = (float *)load_ref(rt->name, ".f32", &flen);
        ck_assert_ptr_nonnull(x);
        const int64_t nrows = (int64_t)(flen / 4) / rt->ne0;
        float *imp = malloc(rt->ne0 * sizeof *imp);
        ck_assert_ptr_nonnull(imp);
        for (int64_t i = 0; i < rt->ne0; ++i) imp[i] = expf(gaussian());
        for (int i = 0; i < COUNT(ALL_TYPES); ++i) {
            for (int64_t r = 0; r < nrows; ++r) {
                assert_fast_matches(rt->name, ALL_TYPES[i], x + r * rt->ne0, rt->ne0, NULL);
                if (r % 8 == 0) assert_fast_matches(rt->name, ALL_TYPES[i], x + r * rt->ne0, rt->ne0, imp);
            }
        }
        for (int i = 0; i < COUNT(K_TYPES); ++i) {
            const type_info *ti = type_get(K_TYPES[i]);
            char suffix[32];
            size_t qlen;
            snprintf(suffix, sizeof suffix, ".%s", ti->name);
            uint8_t *want = load_ref(rt->name, suffix, &qlen);
            ck_assert_ptr_nonnull(want);
            uint8_t *got = quantize_rows(K_TYPES[i], quant_get(K_TYPES[i])->quantize, x, nrows, rt->ne0);
            CK_ASSERT_QUIET(qlen == type_nbytes(K_TYPES[i], nrows * rt->ne0) && memcmp(got, want, qlen) == 0,
                          "%s %s: fast bytes differ from llama.cpp's", rt->name, ti->name);
            free(got);
            free(want);
        }
        free(imp);
        free(x);
    }
}
END_TEST

/* Inputs llama.cpp calls garbage (NaN, Inf, overflowing squares): fast and reference must still
 * agree, so that the choice of search never changes a file. */
START_TEST(test_fast_garbage_inputs) {
    float x[256], imp[256];
    for (int c = 0; c < 6; ++c) {
        for (int j = 0; j < 256; ++j) {
            x[j] = gaussian();
            imp[j] = 1.f + (float)(j % 3);
        }
        switch (c) {
        case 0: x[5] = NAN; break;
        case 1: x[40] = INFINITY; break;
        case 2: x[200] = -INFINITY; x[3] = NAN; break;
        case 3: x[77] = 3e38f; break;
        case 4: for (int j = 0; j < 256; ++j) x[j] *= 1e25f; break;
        default: imp[9] = NAN; imp[10] = INFINITY; break;
        }
        for (int t = 0; t < COUNT(ALL_TYPES); ++t) {
            assert_fast_matches("garbage", ALL_TYPES[t], x, 256, NULL);
            assert_fast_matches("garbage", ALL_TYPES[t], x, 256, imp);
        }
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("quants");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_legacy_bit_identical);
    tcase_add_test(tc, test_dequant_bit_identical);
    tcase_add_test(tc, test_kquant_rmse);
    tcase_add_test(tc, test_fast_and_null_weights_match_ref);
    tcase_add_test(tc, test_q3_K_fast_matches_ref);
    tcase_add_test(tc, test_q8_0_fast_ties);
    tcase_add_test(tc, test_row_finite_matches_decoding);
    tcase_add_test(tc, test_roundtrip_bounds);
    tcase_add_test(tc, test_importance_reduces_weighted_error);
    tcase_add_test(tc, test_weighted_refine_no_worse);
    tcase_add_test(tc, test_edge_cases);
    tcase_add_test(tc, test_iq4_dequant_formula);
    tcase_add_test(tc, test_iq4_exact_blocks);
    tcase_add_test(tc, test_iq4_nl_matches_derivation);
    tcase_add_test(tc, test_iq4_nl_row_ref);
    tcase_add_test(tc, test_iq4_idempotent);
    tcase_add_test(tc, test_fast_many_rows);
    tcase_add_test(tc, test_fast_reference_tensors);
    tcase_add_test(tc, test_fast_garbage_inputs);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
