/* test_gptq.c - GPTQ on ggml blocks: the linear-algebra helpers against textbook formulas,
 * Hessian accumulation, exact agreement with the weighted kernel when there is nothing to
 * compensate, lower output error than plain and importance-weighted quantization on
 * correlated inputs, valid blocks, and a calibrated run over the shared trained model. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "codec/dots.h"
#include "codec/types.h"
#include "quant/gptq.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "codec/quants.h"
#include "testutil.h"

/* Deterministic uniform [-1, 1) and roughly normal values (xorshift). */
static uint64_t rng_state = 88172645463325252ull;
static double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
static double nrand(void) { return (urand() + urand() + urand() + urand()) * 0.866; }

/* A = B B^T + n I for a random B: symmetric positive definite. */
static double *random_spd(int64_t n) {
    double *b = malloc((size_t)(n * n) * sizeof *b), *a = malloc((size_t)(n * n) * sizeof *a);
    for (int64_t i = 0; i < n * n; i++) b[i] = urand();
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = i == j ? (double)n : 0;
            for (int64_t k = 0; k < n; k++) s += b[i * n + k] * b[j * n + k];
            a[i * n + j] = s;
        }
    free(b);
    return a;
}

/* Textbook Gauss-Jordan inverse with partial pivoting, in double. */
static void gauss_jordan_inverse(const double *a, double *inv, int64_t n) {
    double *m = malloc((size_t)(n * 2 * n) * sizeof *m);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < 2 * n; j++) m[i * 2 * n + j] = j < n ? a[i * n + j] : (j - n == i);
    for (int64_t c = 0; c < n; c++) {
        int64_t p = c;
        for (int64_t r = c + 1; r < n; r++)
            if (fabs(m[r * 2 * n + c]) > fabs(m[p * 2 * n + c])) p = r;
        for (int64_t j = 0; j < 2 * n; j++) {
            double t = m[c * 2 * n + j];
            m[c * 2 * n + j] = m[p * 2 * n + j];
            m[p * 2 * n + j] = t;
        }
        double d = m[c * 2 * n + c];
        for (int64_t j = 0; j < 2 * n; j++) m[c * 2 * n + j] /= d;
        for (int64_t r = 0; r < n; r++) {
            if (r == c) continue;
            double f = m[r * 2 * n + c];
            for (int64_t j = 0; j < 2 * n; j++) m[r * 2 * n + j] -= f * m[c * 2 * n + j];
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) inv[i * n + j] = m[i * 2 * n + n + j];
    free(m);
}

START_TEST(cholesky_matches_textbook) {
    const int64_t n = 37;
    double *a = random_spd(n), *l = malloc((size_t)(n * n) * sizeof *l);
    memcpy(l, a, (size_t)(n * n) * sizeof *l);
    ck_assert_int_eq(gptq_cholesky(l, n), 0);
    /* Cholesky-Banachiewicz written out: L[i][j] = (A[i][j] - sum_k<j L[i][k] L[j][k]) / L[j][j] */
    double *ref = calloc((size_t)(n * n), sizeof *ref);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            double s = a[i * n + j];
            for (int64_t k = 0; k < j; k++) s -= ref[i * n + k] * ref[j * n + k];
            ref[i * n + j] = i == j ? sqrt(s) : s / ref[j * n + j];
        }
    for (int64_t i = 0; i < n * n; i++) ck_assert_double_eq_tol(l[i], ref[i], 1e-12 * (1 + fabs(ref[i])));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) ck_assert(l[i * n + j] == 0);
    /* not positive definite: refused */
    double bad[4] = {1, 2, 2, 1};
    ck_assert_int_eq(gptq_cholesky(bad, 2), -1);
    free(a); free(l); free(ref);
}
END_TEST

START_TEST(spd_inverse_matches_gauss_jordan) {
    const int64_t n = 45;
    double *a = random_spd(n), *inv = malloc((size_t)(n * n) * sizeof *inv), *gj = malloc((size_t)(n * n) * sizeof *gj);
    memcpy(inv, a, (size_t)(n * n) * sizeof *inv);
    ck_assert_int_eq(gptq_spd_inverse(inv, n), 0);
    gauss_jordan_inverse(a, gj, n);
    double max_abs = 0;
    for (int64_t i = 0; i < n * n; i++) max_abs = fmax(max_abs, fabs(gj[i]));
    for (int64_t i = 0; i < n * n; i++) ck_assert_double_eq_tol(inv[i], gj[i], 1e-10 * max_abs);
    /* A A^-1 = I */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += a[i * n + k] * inv[k * n + j];
            ck_assert_double_eq_tol(s, i == j ? 1.0 : 0.0, 1e-10);
        }
    free(a); free(inv); free(gj);
}
END_TEST

/* Correlated activations: x = z M with a random mixing M plus per-column scales spanning 30x,
 * the shape of real layer inputs (a few strong directions, uneven column magnitudes). */
static float *correlated_inputs(int64_t n_tok, int64_t n) {
    float *x = malloc((size_t)(n_tok * n) * sizeof *x);
    const int64_t k = 24; /* latent directions */
    double *mix = malloc((size_t)(k * n) * sizeof *mix);
    for (int64_t i = 0; i < k * n; i++) mix[i] = nrand();
    for (int64_t t = 0; t < n_tok; t++) {
        double z[24];
        for (int64_t i = 0; i < k; i++) z[i] = nrand() / (1.0 + (double)i * 0.3);
        for (int64_t j = 0; j < n; j++) {
            double s = 0.3 * nrand();
            for (int64_t i = 0; i < k; i++) s += z[i] * mix[i * n + j];
            x[t * n + j] = (float)(s * (0.2 + 6.0 * (double)((j * 7) % 29) / 29.0));
        }
    }
    free(mix);
    return x;
}

/* Output error sum over tokens of ||W x - Q x||^2 = tr(E H E^T), E = W - dequant(Q). */
static double output_error(const float *w, const uint8_t *q, int type, int64_t rows, int64_t cols, const double *h) {
    const quant_kernels *k = quant_get(type);
    uint64_t rb = type_nbytes(type, cols);
    float *d = malloc((size_t)cols * sizeof *d);
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        k->dequantize(q + (uint64_t)r * rb, d, cols);
        for (int64_t i = 0; i < cols; i++) d[i] = w[r * cols + i] - d[i];
        for (int64_t i = 0; i < cols; i++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += h[i * cols + j] * d[j];
            total += d[i] * s;
        }
    }
    free(d);
    return total;
}

typedef struct layer_case {
    int64_t rows, cols, n_tok;
    float *w, *x;
    gptq_hessian hs;
    gptq_factor f;
} layer_case;

static void layer_case_make(layer_case *lc, int64_t rows, int64_t cols, int64_t n_tok) {
    lc->rows = rows; lc->cols = cols; lc->n_tok = n_tok;
    lc->w = malloc((size_t)(rows * cols) * sizeof *lc->w);
    for (int64_t i = 0; i < rows * cols; i++) lc->w[i] = (float)(0.05 * nrand());
    lc->x = correlated_inputs(n_tok, cols);
    slmc_err err = {{0}};
    ck_assert_int_eq(gptq_hessian_init(&lc->hs, cols, &err), 0);
    /* two calls: accumulation across products must add up */
    gptq_hessian_add(&lc->hs, lc->x, (int)(n_tok / 2));
    gptq_hessian_add(&lc->hs, lc->x + (n_tok / 2) * cols, (int)(n_tok - n_tok / 2));
    ck_assert_msg(gptq_factor_init(&lc->f, &lc->hs, GPTQ_DEFAULT_DAMP, &err) == 0, "%s", err.msg);
}

static void layer_case_free(layer_case *lc) {
    free(lc->w); free(lc->x);
    gptq_hessian_free(&lc->hs);
    gptq_factor_free(&lc->f);
}

START_TEST(hessian_is_xtx) {
    layer_case lc;
    layer_case_make(&lc, 4, 64, 300);
    ck_assert_int_eq(lc.hs.n_tokens, 300);
    for (int64_t i = 0; i < 64; i += 7)
        for (int64_t j = 0; j < 64; j += 5) {
            double s = 0;
            for (int64_t t = 0; t < 300; t++) s += (double)lc.x[t * 64 + i] * lc.x[t * 64 + j];
            ck_assert_double_eq_tol(lc.hs.h[i * 64 + j], s, 1e-9 * (1 + fabs(s)));
        }
    /* the factor: U^T U = (H + lambda I)^-1, i.e. (U^T U)(H + lambda I) = I */
    double mean = 0;
    for (int64_t i = 0; i < 64; i++) mean += lc.hs.h[i * 64 + i];
    double lambda = GPTQ_DEFAULT_DAMP * mean / 64;
    for (int64_t i = 0; i < 64; i += 9)
        for (int64_t j = 0; j < 64; j += 4) {
            double s = 0;
            for (int64_t k = 0; k < 64; k++) {
                double hinv_ik = 0;
                for (int64_t m = 0; m < 64; m++) hinv_ik += lc.f.u[m * 64 + i] * lc.f.u[m * 64 + k];
                s += hinv_ik * (lc.hs.h[k * 64 + j] + (k == j ? lambda : 0));
            }
            ck_assert_double_eq_tol(s, i == j ? 1.0 : 0.0, 1e-8);
        }
    layer_case_free(&lc);
}
END_TEST

/* gptq_cholesky's and gptq_spd_inverse's blocked chains give the plain loops' bits, across the
 * 8-wide blocks and their partial last block, and the result is the inverse. */
START_TEST(spd_inverse_matches_plain_loops) {
    const int64_t sizes[] = {1, 2, 7, 8, 9, 16, 23, 64, 100, 131};
    for (int si = 0; si < 10; si++) {
        const int64_t n = sizes[si];
        double *a = random_spd(n);
        double *fast = malloc((size_t)(n * n) * sizeof *fast), *ref = malloc((size_t)(n * n) * sizeof *ref);
        memcpy(fast, a, (size_t)(n * n) * sizeof *a);
        memcpy(ref, a, (size_t)(n * n) * sizeof *a);
        ck_assert_int_eq(gptq_cholesky(fast, n), 0);
        ck_assert_int_eq(gptq_cholesky_ref(ref, n), 0);
        ck_assert_msg(memcmp(fast, ref, (size_t)(n * n) * sizeof *fast) == 0, "n %lld: Cholesky bits differ",
                      (long long)n);
        memcpy(fast, a, (size_t)(n * n) * sizeof *a);
        memcpy(ref, a, (size_t)(n * n) * sizeof *a);
        ck_assert_int_eq(gptq_spd_inverse(fast, n), 0);
        ck_assert_int_eq(gptq_spd_inverse_ref(ref, n), 0);
        ck_assert_msg(memcmp(fast, ref, (size_t)(n * n) * sizeof *fast) == 0, "n %lld: inverse bits differ",
                      (long long)n);
        for (int64_t i = 0; i < n; i += 3) /* a a^-1 = I */
            for (int64_t j = 0; j < n; j += 2) {
                double s = 0;
                for (int64_t k = 0; k < n; k++) s += a[i * n + k] * fast[k * n + j];
                ck_assert_double_eq_tol(s, i == j ? 1.0 : 0.0, 1e-9);
            }
        free(a);
        free(fast);
        free(ref);
    }
}
END_TEST

/* gptq_gram_add's register tiles give the plain loop's bits: packed triangle and full matrix,
 * a = b and a != b, widths around the 32-column panels and token counts around the 64-token
 * passes, a fifth of the values 0 or -0, and sums already under way in dst. With an infinity
 * in the input the tiles stand aside and the plain loop runs. */
START_TEST(gram_tiles_match_plain_loop) {
    if (!kern_cpu_has_avx512()) SKIP_TEST("the CPU has no AVX-512: gptq_gram_add runs the plain loop only");
    const int64_t widths[] = {31, 32, 37, 64, 100, 131};
    const int tokens[] = {1, 5, 70};
    for (int wi = 0; wi < 6; wi++)
        for (int ti = 0; ti < 3; ti++)
            for (int kind = 0; kind < 4; kind++) { /* packed a = b, full a = b, full a != b, with an inf */
                const int64_t n = widths[wi];
                const int T = tokens[ti];
                const bool packed = kind == 0 || kind == 3;
                float *a = malloc(sizeof *a * (size_t)(T * n)), *b = malloc(sizeof *b * (size_t)(T * n));
                for (int64_t i = 0; i < T * n; i++) {
                    const double u = urand();
                    a[i] = u < 0.1 ? 0.0f : u < 0.2 ? -0.0f : (float)nrand();
                    b[i] = (float)nrand();
                }
                if (kind == 3) a[(T / 2) * n + n / 3] = INFINITY;
                const float *bb = kind == 2 ? b : a;
                const size_t len = packed ? gptq_packed_len(n) : (size_t)(n * n);
                double *fast = malloc(sizeof *fast * len), *ref = malloc(sizeof *ref * len);
                for (size_t i = 0; i < len; i++) fast[i] = ref[i] = i % 3 ? nrand() : 0.0;
                const bool tiles = gptq_gram_add(fast, n, a, bb, T, packed, true);
                ck_assert_msg(!gptq_gram_add(ref, n, a, bb, T, packed, false), "the plain loop ran the tiles");
                ck_assert_msg(tiles == (kind != 3 && n >= 32), "n %lld kind %d: tiles %d", (long long)n, kind, tiles);
                ck_assert_msg(memcmp(fast, ref, sizeof *fast * len) == 0, "n %lld tokens %d kind %d: bits differ",
                              (long long)n, T, kind);
                free(a);
                free(b);
                free(fast);
                free(ref);
            }
}
END_TEST

/* With H a multiple of I there is nothing to feed forward: GPTQ gives exactly the weighted
 * kernel's bytes with importance diag(H). */
START_TEST(identity_hessian_gives_weighted_bytes) {
    const int64_t rows = 8, cols = 512;
    gptq_hessian hs;
    slmc_err err = {{0}};
    ck_assert_int_eq(gptq_hessian_init(&hs, cols, &err), 0);
    for (int64_t i = 0; i < cols; i++) hs.h[i * cols + i] = 4.0;
    hs.n_tokens = 2;
    gptq_factor f;
    ck_assert_int_eq(gptq_factor_init(&f, &hs, GPTQ_DEFAULT_DAMP, &err), 0);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)nrand();
    const int types[] = {GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0};
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        int ty = types[k];
        uint64_t rb = type_nbytes(ty, cols);
        uint8_t *a = malloc(rb * rows), *b = malloc(rb * rows);
        ck_assert_msg(gptq_quantize(&f, w, rows, cols, ty, a, &err) == 0, "%s", err.msg);
        const quant_kernels *kq = quant_get(ty);
        int64_t g = type_get(ty)->blck_size;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += g) /* the kernel per block, as GPTQ calls it */
                kq->quantize_weighted(w + r * cols + c, b + r * rb + (uint64_t)(c / g) * type_get(ty)->type_size, g, f.diag + c);
        ck_assert_msg(memcmp(a, b, rb * rows) == 0, "%s: bytes differ", type_name(ty));
        free(a); free(b);
    }
    ck_assert_float_eq(f.diag[0], 2.0f); /* 4 / 2 tokens */
    free(w);
    gptq_hessian_free(&hs);
    gptq_factor_free(&f);
}
END_TEST

/* The output error of GPTQ, plain and weighted-only quantization of one random layer. */
static void compare_methods(int type, double *e_gptq, double *e_plain, double *e_weighted) {
    layer_case lc;
    layer_case_make(&lc, 96, 512, 2048);
    const quant_kernels *k = quant_get(type);
    uint64_t rb = type_nbytes(type, lc.cols);
    uint8_t *q = malloc(rb * (uint64_t)lc.rows);
    slmc_err err = {{0}};
    ck_assert_msg(gptq_quantize(&lc.f, lc.w, lc.rows, lc.cols, type, q, &err) == 0, "%s", err.msg);
    /* valid blocks: every value dequantizes finite */
    float *d = malloc((size_t)lc.cols * sizeof *d);
    for (int64_t r = 0; r < lc.rows; r++) {
        k->dequantize(q + (uint64_t)r * rb, d, lc.cols);
        CK_ASSERT_RANGE(i, 0, lc.cols, isfinite(d[i]));
    }
    free(d);
    /* the factor symmetrised hs.h: the full H for the error */
    *e_gptq = output_error(lc.w, q, type, lc.rows, lc.cols, lc.hs.h);
    for (int64_t r = 0; r < lc.rows; r++) k->quantize(lc.w + r * lc.cols, q + (uint64_t)r * rb, lc.cols);
    *e_plain = output_error(lc.w, q, type, lc.rows, lc.cols, lc.hs.h);
    for (int64_t r = 0; r < lc.rows; r++) k->quantize_weighted(lc.w + r * lc.cols, q + (uint64_t)r * rb, lc.cols, lc.f.diag);
    *e_weighted = output_error(lc.w, q, type, lc.rows, lc.cols, lc.hs.h);
    free(q);
    layer_case_free(&lc);
}

START_TEST(gptq_beats_plain_and_weighted) {
    const int types[] = {GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q4_0};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        double g, p, w;
        compare_methods(types[i], &g, &p, &w);
        fprintf(stderr, "%s output error: plain %.4g, weighted %.4g, gptq %.4g (%.2fx lower than weighted)\n",
                type_name(types[i]), p, w, g, w / g);
        ck_assert_msg(g < w && g < p, "%s: gptq %g, weighted %g, plain %g", type_name(types[i]), g, w, p);
        if (types[i] == GGML_TYPE_Q2_K || types[i] == GGML_TYPE_Q3_K)
            ck_assert_msg(g < 0.8 * w, "%s: gptq %g not clearly below weighted %g", type_name(types[i]), g, w);
    }
}
END_TEST

START_TEST(gptq_rejects_bad_shapes) {
    gptq_hessian hs;
    slmc_err err = {{0}};
    ck_assert_int_eq(gptq_hessian_init(&hs, 96, &err), 0);
    ck_assert_int_eq(gptq_factor_init(&(gptq_factor){0}, &hs, 0.01, &err), -1); /* no tokens */
    ck_assert_ptr_nonnull(strstr(err.msg, "no calibration tokens"));
    for (int64_t i = 0; i < 96; i++) hs.h[i * 96 + i] = 1;
    hs.n_tokens = 1;
    gptq_factor f;
    ck_assert_int_eq(gptq_factor_init(&f, &hs, 0.01, &err), 0);
    float w[96] = {0};
    uint8_t out[512];
    ck_assert_int_eq(gptq_quantize(&f, w, 1, 96, GGML_TYPE_Q4_K, out, &err), -1); /* 96 is not a multiple of 256 */
    ck_assert_ptr_nonnull(strstr(err.msg, "not a multiple"));
    ck_assert_int_eq(gptq_quantize(&f, w, 1, 96, GGML_TYPE_Q8_0, out, &err), 0);
    gptq_factor_free(&f);
    gptq_hessian_free(&hs);
}
END_TEST

/* The shared trained model through quantize_model with the GPTQ hook: a valid file whose layer
 * matrices differ from the plain ones and whose other tensors are the plain bytes. */
START_TEST(books_gptq_through_quantize_model) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *text = SHARED_OR_SKIP("text/books-train.txt");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    gptq_calib_opts co = {.text = text, .n_ctx = 128, .chunks = 4, .damp = 0.01};
    gptq_calib *c;
    ck_assert_msg(gptq_calib_open(&c, &m, &co, &err) == 0, "%s", err.msg);
    ck_assert(gptq_calib_handles(c, (uint64_t)model_find(&m, "blk.0.attn_k.weight")));
    ck_assert(gptq_calib_handles(c, (uint64_t)model_find(&m, "output.weight")));
    ck_assert(!gptq_calib_handles(c, (uint64_t)model_find(&m, "token_embd.weight")));
    ck_assert(!gptq_calib_handles(c, (uint64_t)model_find(&m, "blk.0.attn_norm.weight")));
    plan_opts po;
    plan_opts_init(&po, MIX_Q3_K_M);
    int *types = malloc(m.n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(&m, &po, types, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    char pg[512], pp[512];
    snprintf(pg, sizeof pg, "%s/gptq.gguf", dir);
    snprintf(pp, sizeof pp, "%s/plain.gguf", dir);
    quant_tensor_hook hook = gptq_calib_hook(c);
    quantize_opts qo = {.tensor_hook = &hook};
    quant_target tg = {.path = pg, .types = types, .file_type = MIX_Q3_K_M};
    ck_assert_msg(quantize_model(&m, &tg, 1, &qo, NULL, NULL, &err) == 0, "%s", err.msg);
    gptq_calib_info info;
    gptq_calib_get_info(c, &info);
    ck_assert_int_eq(info.chunks, 4);
    ck_assert_int_eq(info.passes, 4 * 7); /* 6 layers and the output head, one pass per chunk each */
    gptq_calib_close(c);
    tg.path = pp;
    ck_assert_msg(quantize_model(&m, &tg, 1, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    gguf_file a, b;
    ck_assert_msg(gguf_open(&a, pg, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&b, pp, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.n_tensors, b.n_tensors);
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        ck_assert_str_eq(a.tensors[i].name, b.tensors[i].name);
        ck_assert_int_eq(a.tensors[i].type, b.tensors[i].type);
        bool same = memcmp(gguf_tensor_data(&a, i), gguf_tensor_data(&b, i), a.tensors[i].nbytes) == 0;
        bool layer_matrix = strncmp(a.tensors[i].name, "blk.", 4) == 0 && a.tensors[i].ne[1] > 1;
        bool gptq_tensor = layer_matrix || strcmp(a.tensors[i].name, "output.weight") == 0;
        ck_assert_msg(same != gptq_tensor, "%s: %s", a.tensors[i].name, same ? "GPTQ left it plain" : "changed");
        const quant_kernels *k = quant_get(a.tensors[i].type);
        int64_t n = a.tensors[i].ne[0] * a.tensors[i].ne[1];
        float *d = malloc((size_t)n * sizeof *d);
        k->dequantize(gguf_tensor_data(&a, i), d, n);
        CK_ASSERT_RANGE(j, 0, n, isfinite(d[j]));
        free(d);
    }
    gguf_close(&a);
    gguf_close(&b);
    tmpdir_remove(dir);
    free(types);
    model_close(&m);
    free(hf);
    free(text);
}
END_TEST


/* ---------------------------------------------------------------- sequential mode */

#define N_PROBE 4 /* one weight per input slot of a layer */
#define SEQ_CTX 32   /* calibration of the sequential tests: small, they run the model many times */
#define SEQ_CHUNKS 2
static const char *const PROBE_NAMES[N_PROBE] = {"blk.1.attn_q.weight", "blk.1.attn_output.weight",
                                                  "blk.1.ffn_gate.weight", "blk.1.ffn_down.weight"};

/* The upper triangles of a layer's four Hessians, as collected (copies). */
typedef struct layer_h {
    int64_t n[N_PROBE];
    int64_t tokens[N_PROBE];
    double *h[N_PROBE];
} layer_h;

static void layer_h_grab(layer_h *out, gptq_calib *c, const model *m) {
    slmc_err err = {{0}};
    for (int k = 0; k < N_PROBE; k++) {
        int64_t ti = model_find(m, PROBE_NAMES[k]);
        ck_assert_int_ge(ti, 0);
        const gptq_hessian *hs;
        ck_assert_msg(gptq_calib_hessian(c, (uint64_t)ti, &hs, &err) == 0, "%s", err.msg);
        out->n[k] = hs->n;
        out->tokens[k] = hs->n_tokens;
        out->h[k] = calloc((size_t)(hs->n * hs->n), sizeof *out->h[k]);
        for (int64_t i = 0; i < hs->n; i++)
            for (int64_t j = i; j < hs->n; j++) out->h[k][i * hs->n + j] = hs->h[i * hs->n + j];
    }
}

static void layer_h_free(layer_h *l) {
    for (int k = 0; k < N_PROBE; k++) free(l->h[k]);
}

/* A tensor hook around GPTQ's that grabs layer 1's Hessians just before its first tensor is
 * quantized: the very matrices the run quantizes layer 1 with. */
typedef struct probe_hook {
    quant_tensor_hook inner;
    gptq_calib *c;
    const model *m;
    int64_t first_of_layer1;
    layer_h got;
    bool grabbed;
} probe_hook;

static bool probe_wants(void *ud, uint64_t ti) {
    probe_hook *p = ud;
    return p->inner.wants(p->inner.ud, ti);
}
static int probe_quantize(void *ud, uint64_t ti, int type, const float *w, int64_t rows, int64_t ne0, uint8_t *out,
                          slmc_err *err) {
    probe_hook *p = ud;
    if ((int64_t)ti == p->first_of_layer1 && !p->grabbed) {
        layer_h_grab(&p->got, p->c, p->m);
        p->grabbed = true;
    }
    return p->inner.quantize(p->inner.ud, ti, type, w, rows, ne0, out, err);
}
static int probe_written(void *ud, int target, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes,
                         slmc_err *err) {
    probe_hook *p = ud;
    return p->inner.written(p->inner.ud, target, ti, type, r0, nr, bytes, err);
}

/* Quantize the shared model to `path` with a GPTQ calibration in the given mode. */
static void quantize_books(const model *m, const char *text, const int *types, const char *path, bool sequential,
                           bool fp_target, probe_hook *probe) {
    slmc_err err = {{0}};
    gptq_calib_opts co = {.text = text, .n_ctx = SEQ_CTX, .chunks = SEQ_CHUNKS, .damp = 0.01,
                          .sequential = sequential, .fp_target = fp_target};
    gptq_calib *c;
    ck_assert_msg(gptq_calib_open(&c, m, &co, &err) == 0, "%s", err.msg);
    quant_tensor_hook hook = gptq_calib_hook(c), wrapped;
    if (probe) {
        probe->inner = hook;
        probe->c = c;
        probe->m = m;
        probe->first_of_layer1 = model_find(m, "blk.1.attn_q.weight");
        wrapped = (quant_tensor_hook){.ud = probe, .wants = probe_wants, .quantize = probe_quantize, .written = probe_written};
    }
    quantize_opts qo = {.tensor_hook = probe ? &wrapped : &hook};
    quant_target tg = {.path = path, .types = types, .file_type = MIX_Q2_K};
    ck_assert_msg(quantize_model(m, &tg, 1, &qo, NULL, NULL, &err) == 0, "%s", err.msg);
    gptq_calib_info info;
    gptq_calib_get_info(c, &info);
    ck_assert_int_eq(info.passes, SEQ_CHUNKS * 6 * (fp_target ? 2 : 1)); /* 6 layers (the head is copied) */
    gptq_calib_close(c);
}

static int *books_plan(const model *m, int mix) {
    slmc_err err = {{0}};
    plan_opts po;
    plan_opts_init(&po, mix);
    int *types = malloc(m->n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(m, &po, types, &err) == 0, "%s", err.msg);
    /* output.weight (the largest matrix, and the last) copied as is: keeps the tests quick */
    int64_t out = model_find(m, "output.weight");
    ck_assert_int_ge(out, 0);
    types[out] = m->tensors[out].type;
    return types;
}

/* Sequential mode's layer-1 Hessians are exactly those collected (in parallel mode) from a model
 * whose token_embd and layer-0 matrices are replaced by the bytes the sequential run wrote; and
 * they differ from the unquantized model's. */
START_TEST(sequential_hessian_sees_quantized_layer0) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *text = SHARED_OR_SKIP("text/books-train.txt");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    int *types = books_plan(&m, MIX_Q2_K);
    char *dir = tmpdir_make();
    char path[512];
    snprintf(path, sizeof path, "%s/seq.gguf", dir);
    probe_hook probe = {0};
    quantize_books(&m, text, types, path, true, false, &probe);
    ck_assert(probe.grabbed);

    /* the hybrid: m with token_embd and blk.0's matrices pointing at the written bytes */
    gguf_file g;
    ck_assert_msg(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    model hy = m;
    hy.src = NULL;
    hy.tensors = malloc(m.n_tensors * sizeof *hy.tensors);
    memcpy(hy.tensors, m.tensors, m.n_tensors * sizeof *hy.tensors);
    int replaced = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const char *name = g.tensors[i].name;
        if (strcmp(name, "token_embd.weight") != 0 && strncmp(name, "blk.0.", 6) != 0) continue;
        if (g.tensors[i].ne[1] <= 1) continue; /* norms: F32 either way */
        int64_t ti = model_find(&hy, name);
        ck_assert_int_ge(ti, 0);
        model_tensor *t = &hy.tensors[ti];
        ck_assert_int_ne(t->type, g.tensors[i].type); /* really quantized */
        t->type = g.tensors[i].type;
        t->data = gguf_tensor_data(&g, i);
        t->nbytes = g.tensors[i].nbytes;
        t->qk_heads = 0; /* written rows are in llama.cpp's order */
        replaced++;
    }
    ck_assert_int_eq(replaced, 8); /* token_embd and 7 matrices */
    gptq_calib_opts co = {.text = text, .n_ctx = SEQ_CTX, .chunks = SEQ_CHUNKS, .damp = 0.01};
    gptq_calib *ref, *orig;
    ck_assert_msg(gptq_calib_open(&ref, &hy, &co, &err) == 0, "%s", err.msg);
    ck_assert_msg(gptq_calib_open(&orig, &m, &co, &err) == 0, "%s", err.msg);
    layer_h want, unq;
    layer_h_grab(&want, ref, &hy);
    layer_h_grab(&unq, orig, &m);
    for (int k = 0; k < N_PROBE; k++) {
        int64_t n = want.n[k];
        ck_assert_int_eq(probe.got.n[k], n);
        ck_assert_int_eq(probe.got.tokens[k], SEQ_CHUNKS * SEQ_CTX);
        ck_assert_int_eq(want.tokens[k], SEQ_CHUNKS * SEQ_CTX);
        double max_rel = 0, diag = 0;
        for (int64_t i = 0; i < n; i++) diag += want.h[k][i * n + i];
        for (int64_t i = 0; i < n * n; i++) {
            CK_ASSERT_QUIET(probe.got.h[k][i] == want.h[k][i], "%s: H[%lld] %.17g, hybrid model %.17g", PROBE_NAMES[k],
                          (long long)i, probe.got.h[k][i], want.h[k][i]);
            max_rel = fmax(max_rel, fabs(unq.h[k][i] - want.h[k][i]) / (diag / (double)n));
        }
        /* not vacuous: quantizing layer 0 moved layer 1's inputs */
        ck_assert_msg(max_rel > 1e-4, "%s: the unquantized model's H is the same (%g)", PROBE_NAMES[k], max_rel);
    }
    layer_h_free(&want);
    layer_h_free(&unq);
    layer_h_free(&probe.got);
    gptq_calib_close(ref);
    gptq_calib_close(orig);
    free(hy.tensors);
    gguf_close(&g);
    tmpdir_remove(dir);
    free(types);
    model_close(&m);
    free(hf);
    free(text);
}
END_TEST

/* Sequential (and fp-target) output bytes do not depend on the thread count, and differ from
 * the parallel mode's in the layer matrices after layer 0. */
START_TEST(sequential_deterministic_across_threads) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *text = SHARED_OR_SKIP("text/books-train.txt");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    int *types = books_plan(&m, MIX_Q2_K);
    char *dir = tmpdir_make();
    int threads0 = omp_get_max_threads();
    int fp0 = 0;
#ifdef TEST_SANITIZED
    fp0 = 1; /* each run takes a minute under the sanitizers: the fp-target run covers both passes */
    test_skip(__func__, "fp_target 0 across thread counts under the sanitizers: the optimized build checks it");
#endif
    for (int fp = fp0; fp < 2; fp++) {
        char p1[512], p3[512];
        snprintf(p1, sizeof p1, "%s/t1-%d.gguf", dir, fp);
        snprintf(p3, sizeof p3, "%s/t3-%d.gguf", dir, fp);
        omp_set_num_threads(1);
        quantize_books(&m, text, types, p1, true, fp, NULL);
        omp_set_num_threads(3);
        quantize_books(&m, text, types, p3, true, fp, NULL);
        omp_set_num_threads(threads0);
        size_t n1, n3;
        uint8_t *b1 = slurp(p1, &n1), *b3 = slurp(p3, &n3);
        ck_assert_uint_eq(n1, n3);
        ck_assert_msg(memcmp(b1, b3, n1) == 0, "fp_target %d: bytes depend on the thread count", fp);
        free(b1);
        free(b3);
    }
    /* against the parallel mode: token_embd is the same (plain in both), the last layers
     * differ */
    char pp[512], ps[512];
    snprintf(pp, sizeof pp, "%s/par.gguf", dir);
    snprintf(ps, sizeof ps, "%s/t1-%d.gguf", dir, fp0);
    quantize_books(&m, text, types, pp, false, false, NULL);
    gguf_file a, b;
    ck_assert_msg(gguf_open(&a, pp, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&b, ps, &err) == 0, "%s", err.msg);
    int differ = 0;
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        bool same = memcmp(gguf_tensor_data(&a, i), gguf_tensor_data(&b, i), a.tensors[i].nbytes) == 0;
        if (strcmp(a.tensors[i].name, "token_embd.weight") == 0) ck_assert(same); /* plain in both */
        if (strncmp(a.tensors[i].name, "blk.5.", 6) == 0 && a.tensors[i].ne[1] > 1) differ += !same;
    }
    ck_assert_int_eq(differ, 7);
    gguf_close(&a);
    gguf_close(&b);
    tmpdir_remove(dir);
    free(types);
    model_close(&m);
    free(hf);
    free(text);
}
END_TEST

/* One sequential calibration serves one output type per run: a second target is refused, and
 * gptq_calib_reset starts over (the same bytes as a fresh calibration). */
START_TEST(sequential_one_target_per_run) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *text = SHARED_OR_SKIP("text/books-train.txt");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    int *t2 = books_plan(&m, MIX_Q2_K), *t4 = books_plan(&m, MIX_Q4_K_M);
    char *dir = tmpdir_make();
    char pa[512], pb[512], pc[512];
    snprintf(pa, sizeof pa, "%s/a.gguf", dir);
    snprintf(pb, sizeof pb, "%s/b.gguf", dir);
    snprintf(pc, sizeof pc, "%s/c.gguf", dir);
    gptq_calib_opts co = {.text = text, .n_ctx = SEQ_CTX, .chunks = SEQ_CHUNKS, .damp = 0.01, .sequential = true};
    gptq_calib *c;
    ck_assert_msg(gptq_calib_open(&c, &m, &co, &err) == 0, "%s", err.msg);
    quant_tensor_hook hook = gptq_calib_hook(c);
    quantize_opts qo = {.tensor_hook = &hook};
    quant_target two[2] = {{.path = pa, .types = t2, .file_type = MIX_Q2_K}, {.path = pb, .types = t4, .file_type = MIX_Q4_K_M}};
    ck_assert_int_eq(quantize_model(&m, two, 2, &qo, NULL, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "one output type per run"), "%s", err.msg);
    /* after a reset: Q4_K_M alone, then compared with a fresh calibration's bytes */
    gptq_calib_reset(c);
    ck_assert_msg(quantize_model(&m, &two[1], 1, &qo, NULL, NULL, &err) == 0, "%s", err.msg);
    gptq_calib_close(c);
    ck_assert_msg(gptq_calib_open(&c, &m, &co, &err) == 0, "%s", err.msg);
    hook = gptq_calib_hook(c);
    quant_target fresh = {.path = pc, .types = t4, .file_type = MIX_Q4_K_M};
    ck_assert_msg(quantize_model(&m, &fresh, 1, &qo, NULL, NULL, &err) == 0, "%s", err.msg);
    gptq_calib_close(c);
    size_t nb, nc;
    uint8_t *bb = slurp(pb, &nb), *bc = slurp(pc, &nc);
    ck_assert_uint_eq(nb, nc);
    ck_assert(memcmp(bb, bc, nb) == 0);
    free(bb);
    free(bc);
    tmpdir_remove(dir);
    free(t2);
    free(t4);
    model_close(&m);
    free(hf);
    free(text);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("gptq");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cholesky_matches_textbook);
    tcase_add_test(tc, spd_inverse_matches_gauss_jordan);
    tcase_add_test(tc, hessian_is_xtx);
    tcase_add_test(tc, gram_tiles_match_plain_loop);
    tcase_add_test(tc, spd_inverse_matches_plain_loops);
    tcase_add_test(tc, identity_hessian_gives_weighted_bytes);
    tcase_add_test(tc, gptq_beats_plain_and_weighted);
    tcase_add_test(tc, gptq_rejects_bad_shapes);
    tcase_add_test(tc, books_gptq_through_quantize_model);
    tcase_add_test(tc, sequential_hessian_sees_quantized_layer0);
    tcase_add_test(tc, sequential_deterministic_across_threads);
    tcase_add_test(tc, sequential_one_target_per_run);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
