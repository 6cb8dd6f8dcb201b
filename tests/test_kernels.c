/* test_kernels.c - eval/kernels and codec/dots: every dot product and matmul against double precision,
 * the AVX2 path against the scalar one, and the row ops against their formulas. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/kernels.h"
#include "eval/attn_avx2.h"
#include "codec/dots.h"
#include "codec/quants.h"
#include "codec/types.h"
#include "testutil.h"

static const int WTYPES[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                             GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K,
                             GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
#define N_WTYPES (int)(sizeof WTYPES / sizeof WTYPES[0])

/* Deterministic pseudo-random floats, roughly normal (sum of uniforms), scale s. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xFFFFFF) / 16777216.0f;
}
static void fill(float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; ++i) x[i] = s * (frand() + frand() + frand() - 1.5f);
}

/* The values the dot product really sees on the activation side: the vec_dot type's
 * dequantization (Q8_0/Q8_1: d * q). */
static void act_values(int wtype, const void *act, float *out, int64_t n) {
    const int at = kern_vec_dot_type(wtype);
    if (at == GGML_TYPE_Q8_0) {
        const block_q8_0 *b = act;
        for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
    } else if (at == GGML_TYPE_Q8_1) {
        const block_q8_1 *b = act;
        for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(b[i / 32].d) * b[i / 32].qs[i % 32];
    } else {
        quant_get(at)->dequantize(act, out, n);
    }
}

/* A quantized weight matrix of rows x n and its dequantized values. */
typedef struct wmat {
    uint8_t *q;
    float *deq;
    size_t row_bytes;
} wmat;

static wmat make_weights(int type, int rows, int64_t n) {
    wmat m;
    float *src = malloc(sizeof(float) * (size_t)(rows * n));
    fill(src, rows * n, 1.0f);
    m.row_bytes = type_nbytes(type, n);
    m.q = malloc(m.row_bytes * (size_t)rows);
    m.deq = malloc(sizeof(float) * (size_t)(rows * n));
    ck_assert_ptr_nonnull(m.q);
    for (int r = 0; r < rows; ++r) {
        quant_get(type)->quantize_ref(src + r * n, m.q + m.row_bytes * (size_t)r, n);
        quant_get(type)->dequantize(m.q + m.row_bytes * (size_t)r, m.deq + r * n, n);
    }
    free(src);
    return m;
}

static void free_wmat(wmat *m) { free(m->q); free(m->deq); }

/* Tolerance for a float dot of n terms: the float sums round at ~6e-8 relative per step,
 * bounded by n * eps * sum|terms|; 1e-5 of sum|terms| covers n up to ~100. For Q4_1/Q5_1
 * the min term uses ggml's fp16 copy of d*sum(q) (Q8_1's s), which is only good to 2^-11
 * relative: allow that on sum |m_b * s_b|. */
static double tolerance(int wtype, const float *w, const float *a, int64_t n) {
    double abs_sum = 0;
    for (int64_t i = 0; i < n; ++i) abs_sum += fabs((double)w[i] * a[i]);
    double tol = 1e-5 * abs_sum + 1e-6;
    if (kern_vec_dot_type(wtype) == GGML_TYPE_Q8_1) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += fabs((double)a[i]);
        tol += 2e-3 * s; /* |m| <= ~1.5 here times 2^-11 relative, on sum |a| */
    }
    return tol;
}

/* Reference vec_dot of every weight type vs double-precision products of the values both
 * sides really hold (dequantized weights, dequantized activation blocks). */
START_TEST(test_vec_dot_ref_vs_double) {
    const int64_t n = 512;
    for (int ti = 0; ti < N_WTYPES; ++ti) {
        const int type = WTYPES[ti];
        wmat W = make_weights(type, 4, n);
        float x[512], av[512];
        uint8_t act[2048];
        ck_assert_uint_le(kern_act_row_bytes(type, n), sizeof act);
        for (int trial = 0; trial < 4; ++trial) {
            fill(x, n, trial == 3 ? 100.0f : 1.0f);
            kern_act_convert(type, x, act, n);
            act_values(type, act, av, n);
            for (int r = 0; r < 4; ++r) {
                const float *wr = W.deq + r * n;
                double exact = 0;
                for (int64_t i = 0; i < n; ++i) exact += (double)wr[i] * av[i];
                const float got = kern_vec_dot_ref(type)(n, W.q + W.row_bytes * (size_t)r, act);
                CK_ASSERT_QUIET(fabs(got - exact) <= tolerance(type, wr, av, n), "%s row %d trial %d: %.9g vs %.9g",
                              type_name(type), r, trial, got, exact);
            }
        }
        free_wmat(&W);
    }
}
END_TEST

/* matmul (scalar and AVX2) vs the reference vec_dot, with a batch, a row count that is not a
 * multiple of the row tile, and a row map. */
static void check_matmul(kern_impl impl) {
    const int64_t n = 512;
    const int rows = 19, ntok = 5;
    for (int ti = 0; ti < N_WTYPES; ++ti) {
        const int type = WTYPES[ti];
        wmat W = make_weights(type, rows, n);
        float *x = malloc(sizeof(float) * (size_t)(ntok * n)), *y = malloc(sizeof(float) * (size_t)(ntok * rows));
        uint8_t *act = malloc(kern_act_row_bytes(type, n));
        int64_t map[19];
        for (int r = 0; r < rows; ++r) map[r] = (r * 7) % rows; /* a permutation: 7 is coprime with 19 */
        fill(x, ntok * n, 2.0f);
        for (int use_map = 0; use_map < 2; ++use_map) {
            kern_weight w = {.data = W.q, .type = type, .n_in = n, .n_out = rows, .row_bytes = W.row_bytes,
                             .row_map = use_map ? map : NULL};
            slmc_err err = {0};
            ck_assert_int_eq(kern_impl_resolve(impl), impl);
            CK_ASSERT_QUIET(kern_matmul(&(kern_ctx){.impl = impl}, &w, x, ntok, y, &err) == 0, "%s", err.msg);
            for (int t = 0; t < ntok; ++t) {
                kern_act_convert(type, x + t * n, act, n);
                for (int r = 0; r < rows; ++r) {
                    const int64_t src = use_map ? map[r] : r;
                    const float want = kern_vec_dot_ref(type)(n, W.q + W.row_bytes * (size_t)src, act);
                    float av[512];
                    act_values(type, act, av, n);
                    const double tol = tolerance(type, W.deq + src * n, av, n);
                    CK_ASSERT_QUIET(fabs(y[t * rows + r] - want) <= tol, "%s impl %d tok %d row %d: %.9g vs %.9g",
                                  type_name(type), impl, t, r, y[t * rows + r], want);
                }
            }
        }
        free(x); free(y); free(act);
        free_wmat(&W);
    }
}

START_TEST(test_matmul_scalar) { check_matmul(KERN_SCALAR); }
END_TEST

/* What each kern_ctx.impl runs: scalar always available, AVX2 (asked or automatic) only on a
 * CPU that has it. */
START_TEST(test_impl_resolve) {
    const kern_impl best = kern_have_avx2() ? KERN_AVX2 : KERN_SCALAR;
    ck_assert_int_eq(kern_impl_resolve(KERN_SCALAR), KERN_SCALAR);
    ck_assert_int_eq(kern_impl_resolve(KERN_AVX2), best);
    ck_assert_int_eq(kern_impl_resolve(KERN_AUTO), best);
}
END_TEST

START_TEST(test_matmul_avx2) {
    if (!kern_have_avx2()) {
        SKIP_TEST("the CPU has no AVX2/FMA");
    }
    check_matmul(KERN_AVX2);
}
END_TEST

/* The integer parts of the AVX2 quantized dots are exact, so AVX2 and scalar agree to float
 * rounding of the per-block sums (1e-6 relative of sum|terms|); F32 dots likewise. */
START_TEST(test_avx2_vs_scalar_dots) {
    if (!kern_have_avx2()) return;
    const int64_t n = 1024;
    float a[1024], b[1024];
    fill(a, n, 3.f);
    fill(b, n, 0.5f);
    double abs_sum = 0;
    for (int i = 0; i < n; ++i) abs_sum += fabs((double)a[i] * b[i]);
    ck_assert_double_le(fabs(kern_dot_f32_avx2(n, a, b) - kern_dot_f32_scalar(n, a, b)), 1e-6 * abs_sum);
    ck_assert_double_eq(kern_dot_f32_avx2(3, a, b), kern_dot_f32_scalar(3, a, b)); /* tail only: same order */
}
END_TEST

/* Activation quantizer: d = amax/127, and x*127/amax rounded half to even (ggml's AVX2
 * _mm256_round_ps), not half away from zero. */
START_TEST(test_q8_0_activation_rounding) {
    float x[32] = {0};
    x[0] = 127.f; /* amax 127: d = 1, id = 1 */
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -2.5f;
    x[4] = 0.49f;
    block_q8_0 b;
    kern_quantize_q8_0(x, &b, 32);
    ck_assert_float_eq(fp16_to_f32(b.d), 1.0f);
    ck_assert_int_eq(b.qs[0], 127);
    ck_assert_int_eq(b.qs[1], 2);
    ck_assert_int_eq(b.qs[2], 4);
    ck_assert_int_eq(b.qs[3], -2);
    ck_assert_int_eq(b.qs[4], 0);
    block_q8_1 b1;
    kern_quantize_q8_1(x, &b1, 32);
    ck_assert_float_eq(fp16_to_f32(b1.s), 127.f + 2 + 4 - 2); /* s = d * sum(q) */
    float z[32] = {0};
    kern_quantize_q8_0(z, &b, 32); /* all zero: d = 0 and no division by zero */
    ck_assert_float_eq(fp16_to_f32(b.d), 0.f);
    ck_assert_int_eq(b.qs[7], 0);
}
END_TEST

/* Activation rows for the tiled tests: ordinary values, an all-zero row, one outlier, tiny
 * values, negative zeros. */
static void fill_tokens(float *x, int nt, int64_t n) {
    for (int t = 0; t < nt; ++t) {
        float *xt = x + t * n;
        fill(xt, n, t % 3 == 0 ? 1.0f : 7.0f);
        if (t == 2) memset(xt, 0, sizeof(float) * (size_t)n);
        if (t == 4) xt[n / 2] = 3000.0f;
        if (t == 5)
            for (int64_t i = 0; i < n; ++i) xt[i] *= 1e-30f;
        if (t == 6)
            for (int64_t i = 0; i < n; i += 3) xt[i] = -0.0f;
    }
}

/* Unpack `count` weight rows (stored rows of row_bytes) and activation tokens for the dots. */
static void *unpack_all(const kern_wdesc *wd, int64_t n, const uint8_t *wq, size_t row_bytes, int nrows,
                        kern_wrow *rows, const float *x, int ntok, kern_arow *acts) {
    const size_t ub = kern_unpacked_bytes(n);
    uint8_t *mem = malloc(ub * (size_t)(nrows + ntok));
    uint8_t *raw = malloc(kern_act_row_bytes(wd->type, n) + 1);
    ck_assert_ptr_nonnull(mem);
    for (int r = 0; r < nrows; ++r) {
        kern_unpacked_carve(mem + ub * (size_t)r, n, &rows[r], NULL);
        kern_unpack_wrow(wd, wq + row_bytes * (size_t)r, n, &rows[r]);
    }
    for (int t = 0; t < ntok; ++t) {
        kern_unpacked_carve(mem + ub * (size_t)(nrows + t), n, NULL, &acts[t]);
        kern_act_convert(wd->type, x + t * n, raw, n);
        kern_unpack_arow(wd->act_type, raw, n, &acts[t]);
    }
    free(raw);
    return mem;
}

/* The register-tiled AVX2 dots (kern_dot_block / kern_dot_tile_avx2, and kern_dot_tile_avx512
 * where the CPU has it; reported below when it does not) give, bit for bit, what
 * the 1x1 AVX2 kernel gives for each (row, token): every type, row lengths of 1 to 3 blocks
 * (floats: also lengths that are not a multiple of 8, which stay 1x1), 1..9 and 19 rows, 1..9
 * tokens, an output stride wider than the rows (the gaps untouched). */
START_TEST(test_tiled_dots_bit_identical) {
    if (!kern_have_avx2()) SKIP_TEST("the CPU has no AVX2/FMA");
    if (!kern_cpu_has_avx512()) fprintf(stderr, "note: the CPU has no AVX-512 F/DQ/BW/VL/VNNI: its tiles are not tested here\n");
    enum { MAXR = 19, MAXT = 9 };
    for (int ti = 0; ti < N_WTYPES; ++ti) {
        const int type = WTYPES[ti];
        const kern_wdesc *wd = kern_wdesc_get(type);
        int64_t lens[6];
        int nlen = 0;
        if (wd->kind == KERN_WK_K) { lens[nlen++] = 256; lens[nlen++] = 768; }
        else if (wd->kind == KERN_WK_LEGACY) { lens[nlen++] = 32; lens[nlen++] = 96; lens[nlen++] = 512; }
        else { lens[nlen++] = 8; lens[nlen++] = 24; lens[nlen++] = 256; lens[nlen++] = 264; lens[nlen++] = 13; }
        for (int li = 0; li < nlen; ++li) {
            const int64_t n = lens[li];
            wmat W = make_weights(type, MAXR, n);
            float *x = malloc(sizeof(float) * (size_t)(MAXT * n));
            fill_tokens(x, MAXT, n);
            kern_wrow rows[MAXR];
            kern_arow acts[MAXT];
            void *mem = unpack_all(wd, n, W.q, W.row_bytes, MAXR, rows, x, MAXT, acts);
            float want[MAXT][MAXR];
            for (int t = 0; t < MAXT; ++t)
                for (int r = 0; r < MAXR; ++r) want[t][r] = kern_dot_unpacked(wd, true, n, &rows[r], &acts[t]);
            for (int nr = 1; nr <= MAXR; nr += nr < 9 ? 1 : 10)
                for (int nt = 1; nt <= MAXT; ++nt) {
                    const int ldy = nr + 3;
                    float y[MAXT * (MAXR + 3)];
                    for (int i = 0; i < MAXT * (MAXR + 3); ++i) y[i] = -12345.0f;
                    kern_dot_block(wd, true, n, rows, nr, acts, nt, y, ldy);
                    for (int t = 0; t < MAXT; ++t)
                        for (int r = 0; r < ldy; ++r) {
                            const float got = y[t * ldy + r];
                            if (t < nt && r < nr)
                                CK_ASSERT_QUIET(memcmp(&got, &want[t][r], sizeof got) == 0,
                                              "%s n %lld rows %d tokens %d: (%d, %d) %.9g vs 1x1 %.9g", type_name(type),
                                              (long long)n, nr, nt, r, t, got, want[t][r]);
                            else
                                CK_ASSERT_QUIET(got == -12345.0f, "%s: wrote outside the block at (%d, %d)",
                                              type_name(type), r, t);
                        }
                    /* the tiled kernel alone: even row counts, or nothing when it does not apply */
                    const int k = kern_dot_tile_avx2(wd, n, rows, nr, acts, nt, y, ldy);
                    ck_assert_int_eq(k, wd->kind == KERN_WK_FLOAT && n % 8 != 0 ? 0 : nr / 2 * 2);
                    /* the AVX-512 tiles (floats and legacy blocks), bit for bit the same */
                    if (kern_cpu_has_avx512()) {
                        for (int i = 0; i < MAXT * (MAXR + 3); ++i) y[i] = -12345.0f;
                        const int k5 = kern_dot_tile_avx512(wd, n, rows, nr, acts, nt, y, ldy);
                        const bool covered = wd->kind == KERN_WK_LEGACY || (wd->kind == KERN_WK_FLOAT && n % 8 == 0);
                        ck_assert_int_eq(k5, covered ? nr / 2 * 2 : 0);
                        for (int t = 0; t < MAXT; ++t)
                            for (int r = 0; r < ldy; ++r) {
                                const float got = y[t * ldy + r];
                                if (t < nt && r < k5)
                                    CK_ASSERT_QUIET(memcmp(&got, &want[t][r], sizeof got) == 0,
                                                  "AVX-512 %s n %lld rows %d tokens %d: (%d, %d) %.9g vs 1x1 %.9g",
                                                  type_name(type), (long long)n, nr, nt, r, t, got, want[t][r]);
                                else
                                    CK_ASSERT_QUIET(got == -12345.0f, "AVX-512 %s: wrote outside (%d, %d)", type_name(type), r, t);
                            }
                    }
                }
            free(mem);
            free(x);
            free_wmat(&W);
        }
    }
}
END_TEST

/* The float rows read in place (kern_dot_float_rows_avx512: F32/F16/BF16 widened in registers,
 * n in slices, the chains kept between them) give, bit for bit, the 1x1 AVX2 dot of the unpacked
 * rows: row lengths of one slice, a partial slice and several (16, 528, 544, 1040, and 4112 for
 * the 2048-value VDPBF16PS slices: an odd and an even count of 16-value chunks), row counts
 * around the fours and past the 128-row panels, token counts around the 6-token groups (4 x 6 register tiles)
 * and past the 60-token blocks, an output stride wider than the rows; F16
 * rows holding NaN (signalling and quiet) and infinities give the same NaN bits. With `pairs`,
 * BF16 activations also carry kern_act_bf16_pairs' order, so the VDPBF16PS slices run. */
static void check_float_rows_in_place(int type, bool pairs) {
    enum { MAXR = 134, MAXT = 70 };
    const int64_t lens[] = {16, 528, 544, 1040, 4112};
    const int nrs[] = {1, 3, 4, 7, 8, 19, 64, 70, 128, 134}, nts[] = {1, 2, 3, 4, 5, 6, 7, 11, 12, 61, 66, 70};
    const int n_nrs = (int)(sizeof nrs / sizeof nrs[0]);
    const int n_nts = (int)(sizeof nts / sizeof nts[0]);
    float *scratch = malloc(sizeof(float) * KERN_FLOAT_SCRATCH);
    float *y = malloc(sizeof(float) * MAXT * (MAXR + 3));
    float *want = malloc(sizeof(float) * MAXT * MAXR);
    for (int li = 0; li < 5; ++li) {
        const int64_t n = lens[li];
        const kern_wdesc *wd = kern_wdesc_get(type);
        ck_assert(kern_float_rows_avx512_ok(type, n));
        wmat W = make_weights(type, MAXR, n);
        if (type == GGML_TYPE_F16) { /* a signalling NaN, a quiet NaN with a payload, -inf */
            uint16_t *h = (uint16_t *)(W.q + W.row_bytes * 5);
            h[n - 1] = 0x7c01;
            ((uint16_t *)(W.q + W.row_bytes * 6))[0] = 0xfe2a;
            ((uint16_t *)(W.q + W.row_bytes * 9))[n / 2] = 0xfc00;
        }
        float *x = malloc(sizeof(float) * (size_t)(MAXT * n));
        uint16_t *hp = malloc(sizeof(uint16_t) * (size_t)(MAXT * n));
        fill_tokens(x, MAXT, n);
        kern_wrow rows[MAXR];
        kern_arow acts[MAXT];
        const void *src[MAXR];
        void *mem = unpack_all(wd, n, W.q, W.row_bytes, MAXR, rows, x, MAXT, acts);
        for (int r = 0; r < MAXR; ++r) src[r] = W.q + W.row_bytes * (size_t)r;
        for (int t = 0; t < MAXT; ++t)
            for (int r = 0; r < MAXR; ++r) want[t * MAXR + r] = kern_dot_unpacked(wd, true, n, &rows[r], &acts[t]);
        for (int t = 0; pairs && t < MAXT; ++t) {
            acts[t].h = hp + n * t;
            kern_act_bf16_pairs(acts[t].f, n, acts[t].h);
        }
        for (int ri = 0; ri < n_nrs; ++ri)
            for (int tj = 0; tj < n_nts; ++tj) {
                const int nr = nrs[ri], nt = nts[tj], ldy = nr + 3;
                for (int i = 0; i < MAXT * (MAXR + 3); ++i) y[i] = -12345.0f;
                const int k = kern_dot_float_rows_avx512(type, n, src, nr, acts, nt, y, ldy, scratch);
                ck_assert_int_eq(k, nr / 4 * 4);
                for (int t = 0; t < nt + 1 && t < MAXT; ++t)
                    for (int r = 0; r < ldy; ++r) {
                        const float got = y[t * ldy + r];
                        if (t < nt && r < k)
                            CK_ASSERT_QUIET(memcmp(&got, &want[t * MAXR + r], sizeof got) == 0,
                                            "%s%s n %lld rows %d tokens %d: (%d, %d) %.9g vs 1x1 %.9g", type_name(type),
                                            pairs ? " pairs" : "", (long long)n, nr, nt, r, t, got, want[t * MAXR + r]);
                        else
                            CK_ASSERT_QUIET(got == -12345.0f, "%s: wrote outside (%d, %d)", type_name(type), r, t);
                    }
            }
        if (type == GGML_TYPE_F16) ck_assert(isnan(want[0 * MAXR + 5]) && isnan(want[0 * MAXR + 6]));
        free(mem);
        free(x);
        free(hp);
        free_wmat(&W);
    }
    free(scratch);
    free(y);
    free(want);
}

START_TEST(test_float_rows_in_place_bit_identical) {
    if (!kern_have_avx2()) SKIP_TEST("the CPU has no AVX2/FMA");
    if (!kern_cpu_has_avx512()) SKIP_TEST("the CPU has no AVX-512 F/DQ/BW/VL/VNNI: the in-place float kernel is not used");
    check_float_rows_in_place(GGML_TYPE_F32, false);
    check_float_rows_in_place(GGML_TYPE_F16, false);
    check_float_rows_in_place(GGML_TYPE_BF16, false);
    /* not taken: other types, rows whose length is not a multiple of 16 */
    float y[4];
    ck_assert(!kern_float_rows_avx512_ok(GGML_TYPE_Q8_0, 256));
    ck_assert(!kern_float_rows_avx512_ok(GGML_TYPE_F16, 24));
    ck_assert_int_eq(kern_dot_float_rows_avx512(GGML_TYPE_F16, 24, NULL, 4, NULL, 1, y, 4, NULL), 0);
}
END_TEST

/* kern_act_bf16_pairs: word 2j + 1 of each 32 is value j, word 2j value 16 + j (the high half
 * of each 32-bit lane goes first through VDPBF16PS), each rounded to bf16; a last 16 is not written. Then the BF16
 * rows through VDPBF16PS give the 1x1 FMA chains' bits (check_float_rows_in_place). */
START_TEST(test_bf16_pairs_bit_identical) {
    float f[80];
    uint16_t h[80];
    for (int i = 0; i < 80; ++i) {
        const uint32_t u = (uint32_t)(0x3f80 + i) << 16; /* a bf16 value: its high half is 0x3f80 + i */
        memcpy(&f[i], &u, 4);
        h[i] = 0xdead;
    }
    kern_act_bf16_pairs(f, 80, h);
    for (int c = 0; c < 2; ++c)
        for (int j = 0; j < 16; ++j) {
            ck_assert_uint_eq(h[32 * c + 2 * j + 1], 0x3f80 + 32 * c + j);
            ck_assert_uint_eq(h[32 * c + 2 * j], 0x3f80 + 32 * c + 16 + j);
        }
    for (int i = 64; i < 80; ++i) ck_assert_uint_eq(h[i], 0xdead);
    /* the same words as the reference one word at a time, from any bits (low halves set too),
     * a last 16 left alone */
    enum { M = 129 * 32 + 16 };
    uint32_t *bits = malloc(sizeof(uint32_t) * M);
    uint16_t *h_ref = malloc(sizeof(uint16_t) * M), *h_fast = malloc(sizeof(uint16_t) * M);
    ck_assert(bits && h_ref && h_fast);
    uint32_t st = 12345;
    for (int i = 0; i < M; ++i) bits[i] = st = st * 1664525u + 1013904223u;
    memset(h_ref, 0xab, sizeof(uint16_t) * M);
    memset(h_fast, 0xab, sizeof(uint16_t) * M);
    kern_act_bf16_pairs_ref((const float *)bits, M, h_ref);
    kern_act_bf16_pairs((const float *)bits, M, h_fast);
    ck_assert(memcmp(h_ref, h_fast, sizeof(uint16_t) * M) == 0);
    /* each word is its value rounded as ggml rounds an activation to bf16 (the pairs are made
     * from the unrounded tokens where nothing else needs the unpacked row: kern_matmul) */
    for (int i = 0; i + 32 <= M; i += 32)
        for (int j = 0; j < 16; ++j) {
            float first, second;
            memcpy(&first, &bits[i + j], 4);
            memcpy(&second, &bits[i + 16 + j], 4);
            ck_assert_uint_eq(h_fast[i + 2 * j + 1], f32_to_bf16(first));
            ck_assert_uint_eq(h_fast[i + 2 * j], f32_to_bf16(second));
        }
    free(bits);
    free(h_ref);
    free(h_fast);
    if (!kern_have_avx2() || !kern_cpu_has_avx512()) SKIP_TEST("the CPU has no AVX-512: the in-place float kernel is not used");
    if (!kern_cpu_has_avx512bf16()) SKIP_TEST("the CPU has no AVX512_BF16: the VDPBF16PS slices are not used");
    check_float_rows_in_place(GGML_TYPE_BF16, true);
}
END_TEST

/* kern_matmul with the AVX2 loops is, bit for bit, the 1x1 AVX2 dot of each row and token, for
 * every type, batches of 1..9 tokens, row counts around the tiles, a row map, 1 or 2 threads.
 * On a CPU with AVX512_BF16, BF16 rows take each of kern_matmul's three ways there: n = 512 with
 * 8 or 16 rows, the tokens' bf16 pairs made straight from x (pairs only); n = 512 with other row
 * counts, the pairs beside the unpacked rows that the last 1-3 rows need; n = 528, an odd last
 * 16 values, which the slices run as FMAs on the unpacked rows. */
START_TEST(test_matmul_avx2_exact) {
    if (!kern_have_avx2()) SKIP_TEST("the CPU has no AVX2/FMA");
    enum { MAXR = 21, MAXT = 9 };
    for (int64_t n = 512; n <= 528; n += 16) {
        for (int ti = 0; ti < N_WTYPES; ++ti) {
            if (n % 32 && !kern_float_rows_avx512_ok(WTYPES[ti], n)) continue; /* 528: the float rows only */
            const int type = WTYPES[ti];
            const kern_wdesc *wd = kern_wdesc_get(type);
            wmat W = make_weights(type, MAXR, n);
            float *x = malloc(sizeof(float) * (size_t)(MAXT * n));
            fill_tokens(x, MAXT, n);
            kern_wrow rows[MAXR];
            kern_arow acts[MAXT];
            void *mem = unpack_all(wd, n, W.q, W.row_bytes, MAXR, rows, x, MAXT, acts);
            int64_t map[MAXR];
            for (int r = 0; r < MAXR; ++r) map[r] = (r * 5) % MAXR; /* 5 is coprime with 21 */
            const int row_counts[] = {1, 2, 7, 8, 9, 16, 21};
            for (int ri = 0; ri < (int)(sizeof row_counts / sizeof row_counts[0]); ++ri)
                for (int nt = 1; nt <= MAXT; ++nt) {
                    const int nr = row_counts[ri];
                    const int use_map = (nr + nt) % 2;
                    kern_weight w = {.data = W.q, .type = type, .n_in = n, .n_out = nr, .row_bytes = W.row_bytes,
                                     .row_map = use_map ? map : NULL};
                    float y[MAXT * MAXR];
                    slmc_err err = {0};
                    const kern_ctx ctx = {.impl = KERN_AVX2, .n_threads = 1 + nt % 2};
                    CK_ASSERT_QUIET(kern_matmul(&ctx, &w, x, nt, y, &err) == 0, "%s", err.msg);
                    for (int t = 0; t < nt; ++t)
                        for (int r = 0; r < nr; ++r) {
                            const float want = kern_dot_unpacked(wd, true, n, &rows[use_map ? map[r] : r], &acts[t]);
                            CK_ASSERT_QUIET(memcmp(&y[t * nr + r], &want, sizeof want) == 0,
                                            "%s n %lld rows %d tokens %d (%d, %d)", type_name(type), (long long)n, nr,
                                            nt, r, t);
                        }
                }
            free(mem);
            free(x);
            free_wmat(&W);
        }
    }
}
END_TEST

/* kern_matmul_group gives each product the bytes kern_matmul gives it alone: three weights of
 * one type (row counts around the 128-row tiles and the finer last units), then a group whose
 * last weight has another type (two runs), on 1 to 3 threads, with both loop sets. */
START_TEST(test_matmul_group_as_single) {
    enum { NT = 7 };
    const int64_t n = 512;
    const int counts[3] = {300, 37, 129};
    float *x = malloc(sizeof(float) * (size_t)(NT * n));
    fill_tokens(x, NT, n);
    for (int ti = 0; ti < N_WTYPES; ++ti) {
        const int type = WTYPES[ti], other = type == GGML_TYPE_F16 ? GGML_TYPE_BF16 : GGML_TYPE_F16;
        wmat W[3] = {make_weights(type, counts[0], n), make_weights(type, counts[1], n), make_weights(type, counts[2], n)};
        wmat Wo = make_weights(other, counts[2], n);
        for (int mixed = 0; mixed < 2; ++mixed)
            for (int impl = KERN_SCALAR; impl <= KERN_AVX2; ++impl)
                for (int th = 1; th <= 3; ++th) {
                    const kern_ctx kc = {.impl = (kern_impl)impl, .n_threads = th};
                    kern_weight w[3];
                    kern_product p[3];
                    float *want[3], *got[3];
                    for (int i = 0; i < 3; ++i) {
                        const wmat *m = mixed && i == 2 ? &Wo : &W[i];
                        w[i] = (kern_weight){.data = m->q, .type = mixed && i == 2 ? other : type, .n_in = n,
                                             .n_out = counts[i], .row_bytes = m->row_bytes};
                        want[i] = malloc(sizeof(float) * (size_t)(NT * counts[i]));
                        got[i] = malloc(sizeof(float) * (size_t)(NT * counts[i]));
                        p[i] = (kern_product){.w = &w[i], .y = got[i]};
                        slmc_err err = {0};
                        CK_ASSERT_QUIET(kern_matmul(&kc, &w[i], x, NT, want[i], &err) == 0, "%s", err.msg);
                    }
                    slmc_err err = {0};
                    CK_ASSERT_QUIET(kern_matmul_group(&kc, p, 3, x, NT, &err) == 0, "%s", err.msg);
                    for (int i = 0; i < 3; ++i) {
                        CK_ASSERT_QUIET(memcmp(want[i], got[i], sizeof(float) * (size_t)(NT * counts[i])) == 0,
                                        "%s%s impl %d threads %d: product %d differs", type_name(type),
                                        mixed ? " + other" : "", impl, th, i);
                        free(want[i]);
                        free(got[i]);
                    }
                }
        for (int i = 0; i < 3; ++i) free_wmat(&W[i]);
        free_wmat(&Wo);
    }
    free(x);
}
END_TEST

/* The AVX2 unpacking gives the very bytes of the scalar one: weight rows of every type, and
 * activation rows (converted to the vec_dot type and unpacked) with zeros, exact ties of the
 * rounding, outliers, tiny values; rows with an infinity or NaN are left to the scalar path. */
START_TEST(test_unpack_avx2_bit_identical) {
    if (!kern_have_avx2()) SKIP_TEST("the CPU has no AVX2/FMA");
    enum { NT = 9 };
    const int64_t n = 768;
    const size_t ub = (kern_unpacked_bytes(n) + 63) / 64 * 64; /* both buffers aligned alike: compare bytes */
    uint8_t *m1 = aligned_alloc(64, ub), *m2 = aligned_alloc(64, ub), *raw = malloc(kern_act_row_bytes(GGML_TYPE_F32, n));
    float *x = malloc(sizeof(float) * (size_t)(NT * n));
    fill_tokens(x, NT, n);
    float *tie = x + 8 * n; /* amax 127 in every block of 32 (d = 1): halves round to even */
    for (int64_t i = 0; i < n; ++i) tie[i] = i % 32 == 0 ? 127.0f : (float)(i % 7) - 3.5f;
    for (int ti = 0; ti < N_WTYPES; ++ti) {
        const int type = WTYPES[ti];
        const kern_wdesc *wd = kern_wdesc_get(type);
        wmat W = make_weights(type, 3, n);
        for (int r = 0; r < 3; ++r) {
            kern_wrow w1, w2;
            memset(m1, 0x5A, ub);
            memset(m2, 0x5A, ub);
            kern_unpacked_carve(m1, n, &w1, NULL);
            kern_unpacked_carve(m2, n, &w2, NULL);
            const uint8_t *row = W.q + W.row_bytes * (size_t)r;
            kern_unpack_wrow(wd, row, n, &w1);
            if (!kern_unpack_wrow_avx2(wd, row, n, &w2)) {
                ck_assert_int_eq(type, GGML_TYPE_F32); /* the one type without a vector unpack */
                continue;
            }
            CK_ASSERT_QUIET(memcmp(m1, m2, ub) == 0, "%s weight row %d", type_name(type), r);
        }
        for (int t = 0; t < NT; ++t) {
            kern_arow a1, a2;
            memset(m1, 0x5A, ub);
            memset(m2, 0x5A, ub);
            kern_unpacked_carve(m1, n, NULL, &a1);
            kern_unpacked_carve(m2, n, NULL, &a2);
            kern_act_convert(type, x + t * n, raw, n);
            kern_unpack_arow(wd->act_type, raw, n, &a1);
            if (!kern_act_unpack_avx2(wd, x + t * n, n, &a2)) {
                ck_assert_int_eq(type, GGML_TYPE_F32);
                continue;
            }
            CK_ASSERT_QUIET(memcmp(m1, m2, ub) == 0, "%s activation row %d", type_name(type), t);
        }
        if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) { /* every special half: NaNs (signalling too), infinities, subnormals */
            uint16_t h[768];
            for (int i = 0; i < 768; ++i) h[i] = (uint16_t)(i % 5 == 0 ? 0x7c00 + (i * 37) % 0x400 : i % 5 == 1 ? 0xfc00 + (i * 11) % 0x400
                                                        : i % 5 == 2 ? (i * 13) % 0x400 : i % 5 == 3 ? 0x8000 | (i * 7) % 0x400 : i * 85);
            kern_wrow w1, w2;
            memset(m1, 0x5A, ub);
            memset(m2, 0x5A, ub);
            kern_unpacked_carve(m1, n, &w1, NULL);
            kern_unpacked_carve(m2, n, &w2, NULL);
            kern_unpack_wrow(wd, h, n, &w1);
            ck_assert(kern_unpack_wrow_avx2(wd, h, n, &w2));
            CK_ASSERT_QUIET(memcmp(m1, m2, ub) == 0, "%s special values", type_name(type));
        }
        /* non-finite activations: the quantized types decline, the float ones round as the scalar code */
        float bad[768];
        memcpy(bad, x, sizeof bad);
        bad[300] = type % 2 ? INFINITY : NAN;
        kern_arow a1, a2;
        memset(m1, 0x5A, ub);
        memset(m2, 0x5A, ub);
        kern_unpacked_carve(m1, n, NULL, &a1);
        kern_unpacked_carve(m2, n, NULL, &a2);
        const bool done = kern_act_unpack_avx2(wd, bad, n, &a2);
        if (wd->kind == KERN_WK_FLOAT) {
            kern_act_convert(type, bad, raw, n);
            kern_unpack_arow(wd->act_type, raw, n, &a1);
            if (done) ck_assert_msg(memcmp(m1, m2, ub) == 0, "%s non-finite activation row", type_name(type));
        } else {
            CK_ASSERT_QUIET(!done, "%s: a non-finite row took the vector path", type_name(type));
        }
        free_wmat(&W);
    }
    free(m1); free(m2); free(raw); free(x);
}
END_TEST

/* ---------------------------------------------------------------- i-quants and ternary types
 * llama.cpp's own blocks of two books-22m tensors (tests/data/iquant, written by llama-quantize
 * b4747): blk.0.attn_q.weight (256 rows of 256 values) and blk.1.ffn_down.weight (256 rows of
 * 768), in every one of these types. Each type is unpacked onto the legacy or K family
 * (codec/dots.h), so the checks are those of the other types: scalar against AVX2, tiles bit
 * for bit against the 1x1 AVX2 dot, both against the reference vec_dot, all against doubles of
 * the dequantized values, and kern_matmul. */

static const int IQTYPES[] = {GGML_TYPE_IQ1_S,  GGML_TYPE_IQ1_M,   GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS,
                              GGML_TYPE_IQ2_S,  GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S,   GGML_TYPE_IQ4_NL,
                              GGML_TYPE_IQ4_XS, GGML_TYPE_TQ1_0,   GGML_TYPE_TQ2_0};
#define N_IQTYPES (int)(sizeof IQTYPES / sizeof IQTYPES[0])

/* One stored tensor: 256 rows of n values. */
typedef struct iqmat {
    uint8_t *q;
    size_t row_bytes;
    int64_t n;
} iqmat;

#define IQ_ROWS 256
static const char *const IQ_TENSORS[2] = {"blk.0.attn_q.weight", "blk.1.ffn_down.weight"};
static const int64_t IQ_LENS[2] = {256, 768};

/* Tensor `which` (0, 1) in `type`, read from tests/data/iquant (relative to the project root). */
static iqmat load_iq(int type, int which) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/iquant/%s.%s", IQ_TENSORS[which], type_name(type));
    iqmat m = {.n = IQ_LENS[which], .row_bytes = type_nbytes(type, IQ_LENS[which])};
    size_t len = 0;
    m.q = slurp(path, &len);
    ck_assert_msg(m.q != NULL, "cannot read %s (run the tests from the project root)", path);
    ck_assert_msg(len == m.row_bytes * IQ_ROWS, "%s: %zu bytes, want %zu", path, len, m.row_bytes * IQ_ROWS);
    return m;
}

/* The value d * sc * q (legacy: d * q) of element i of an unpacked row, in double (exact). */
static double unpacked_value(const kern_wdesc *wd, const kern_wrow *w, int64_t i) {
    if (wd->kind == KERN_WK_LEGACY) return (double)w->d[i / 32] * w->q[i];
    return (double)w->d[i / 256] * w->sc[i / wd->group] * w->q[i];
}

/* The float-order tolerance of the other quantized types (tolerance above): 1e-5 of
 * sum |w a|, with w from the unpacked row and a as the vec_dot type holds it. */
static double iq_tolerance(const kern_wdesc *wd, const kern_wrow *w, const float *av, int64_t n) {
    double abs_sum = 0;
    for (int64_t i = 0; i < n; ++i) abs_sum += fabs(unpacked_value(wd, w, i) * av[i]);
    return 1e-5 * abs_sum + 1e-6;
}

/* (a) scalar vs AVX2 unpacked dots, the AVX2 unpacking vs the scalar one, the tiles vs the 1x1
 * AVX2 dot bit for bit; (b) the unpacked dots vs kern_vec_dot_ref; rows spread over the
 * tensor, the tokens of fill_tokens (zeros, an outlier, tiny values). */
START_TEST(test_iq_unpacked_dots) {
    enum { NR = 19, NT = 9 };
    const bool avx2 = kern_have_avx2();
    if (!avx2) fprintf(stderr, "note: the CPU has no AVX2/FMA: only the scalar i-quant dots are tested\n");
    for (int ti = 0; ti < N_IQTYPES; ++ti)
        for (int which = 0; which < 2; ++which) {
            const int type = IQTYPES[ti];
            const kern_wdesc *wd = kern_wdesc_get(type);
            CK_ASSERT_QUIET(wd != NULL, "%s has no kern_wdesc", type_name(type));
            ck_assert_ptr_nonnull(kern_vec_dot_ref(type));
            ck_assert(kern_weight_supported(type, IQ_LENS[which]));
            iqmat W = load_iq(type, which);
            const int64_t n = W.n;
            uint8_t *rowsel = malloc(W.row_bytes * NR);
            for (int r = 0; r < NR; ++r) /* rows 0, 13, 26, ... */
                memcpy(rowsel + W.row_bytes * (size_t)r, W.q + W.row_bytes * (size_t)(13 * r), W.row_bytes);
            float *x = malloc(sizeof(float) * (size_t)(NT * n)), av[768];
            fill_tokens(x, NT, n);
            kern_wrow rows[NR];
            kern_arow acts[NT];
            void *mem = unpack_all(wd, n, rowsel, W.row_bytes, NR, rows, x, NT, acts);
            uint8_t *raw = malloc(kern_act_row_bytes(type, n) * NT);
            const size_t ab = kern_act_row_bytes(type, n);
            for (int t = 0; t < NT; ++t) kern_act_convert(type, x + t * n, raw + ab * (size_t)t, n);
            /* (a) the AVX2 unpacking gives the scalar bytes, or declines (the grid types) */
            if (avx2) {
                const size_t ub = (kern_unpacked_bytes(n) + 63) / 64 * 64;
                uint8_t *m1 = aligned_alloc(64, ub), *m2 = aligned_alloc(64, ub); /* the same lines: the same layout */
                for (int r = 0; r < NR; ++r) {
                    kern_wrow w1, w2;
                    memset(m1, 0x5A, ub);
                    memset(m2, 0x5A, ub);
                    kern_unpacked_carve(m1, n, &w1, NULL);
                    kern_unpacked_carve(m2, n, &w2, NULL);
                    kern_unpack_wrow(wd, rowsel + W.row_bytes * (size_t)r, n, &w1);
                    if (kern_unpack_wrow_avx2(wd, rowsel + W.row_bytes * (size_t)r, n, &w2))
                        CK_ASSERT_QUIET(memcmp(m1, m2, ub) == 0, "%s: AVX2 unpacking of row %d", type_name(type), r);
                }
                for (int t = 0; t < NT; ++t) {
                    kern_arow a1, a2;
                    memset(m1, 0x5A, ub);
                    memset(m2, 0x5A, ub);
                    kern_unpacked_carve(m1, n, NULL, &a1);
                    kern_unpacked_carve(m2, n, NULL, &a2);
                    kern_unpack_arow(wd->act_type, raw + ab * (size_t)t, n, &a1);
                    ck_assert(kern_act_unpack_avx2(wd, x + t * n, n, &a2));
                    CK_ASSERT_QUIET(memcmp(m1, m2, ub) == 0, "%s: AVX2 activation row %d", type_name(type), t);
                }
                free(m1);
                free(m2);
            }
            /* (a) scalar vs AVX2 within float order, (b) both vs the reference vec_dot */
            float want[NT][NR];
            for (int t = 0; t < NT; ++t) {
                act_values(type, raw + ab * (size_t)t, av, n);
                for (int r = 0; r < NR; ++r) {
                    const double tol = iq_tolerance(wd, &rows[r], av, n);
                    const float sc = kern_dot_unpacked(wd, false, n, &rows[r], &acts[t]);
                    const float ref = kern_vec_dot_ref(type)(n, rowsel + W.row_bytes * (size_t)r, raw + ab * (size_t)t);
                    CK_ASSERT_QUIET(fabs(sc - ref) <= tol, "%s n %lld (%d, %d): unpacked %.9g vs reference %.9g",
                                  type_name(type), (long long)n, r, t, sc, ref);
                    if (!avx2) continue;
                    want[t][r] = kern_dot_unpacked(wd, true, n, &rows[r], &acts[t]);
                    CK_ASSERT_QUIET(fabs(sc - want[t][r]) <= tol, "%s n %lld (%d, %d): scalar %.9g vs AVX2 %.9g",
                                  type_name(type), (long long)n, r, t, sc, want[t][r]);
                }
            }
            /* (a) every tile, and the AVX-512 tiles where they apply (IQ4_NL, a legacy type) */
            for (int nr = 1; avx2 && nr <= NR; nr += nr < 9 ? 1 : 10)
                for (int nt = 1; nt <= NT; ++nt) {
                    const int ldy = nr + 3;
                    float y[NT * (NR + 3)];
                    for (int i = 0; i < NT * (NR + 3); ++i) y[i] = -12345.0f;
                    kern_dot_block(wd, true, n, rows, nr, acts, nt, y, ldy);
                    for (int t = 0; t < NT; ++t)
                        for (int r = 0; r < ldy; ++r) {
                            const float got = y[t * ldy + r];
                            if (t < nt && r < nr)
                                CK_ASSERT_QUIET(memcmp(&got, &want[t][r], sizeof got) == 0,
                                              "%s n %lld rows %d tokens %d: (%d, %d) %.9g vs 1x1 %.9g", type_name(type),
                                              (long long)n, nr, nt, r, t, got, want[t][r]);
                            else
                                CK_ASSERT_QUIET(got == -12345.0f, "%s: wrote outside the block at (%d, %d)",
                                              type_name(type), r, t);
                        }
                    for (int i = 0; i < NT * (NR + 3); ++i) y[i] = -12345.0f;
                    const int k = kern_dot_tile_avx2(wd, n, rows, nr, acts, nt, y, ldy);
                    ck_assert_int_eq(k, nr / 2 * 2);
                    for (int t = 0; t < nt; ++t)
                        for (int r = 0; r < k; ++r)
                            CK_ASSERT_QUIET(memcmp(&y[t * ldy + r], &want[t][r], sizeof(float)) == 0, "%s AVX2 tile (%d, %d)",
                                          type_name(type), r, t);
                    if (kern_cpu_has_avx512()) {
                        for (int i = 0; i < NT * (NR + 3); ++i) y[i] = -12345.0f;
                        const int k5 = kern_dot_tile_avx512(wd, n, rows, nr, acts, nt, y, ldy);
                        ck_assert_int_eq(k5, wd->kind == KERN_WK_LEGACY ? nr / 2 * 2 : 0);
                        for (int t = 0; t < NT; ++t)
                            for (int r = 0; r < ldy; ++r) {
                                const float got = y[t * ldy + r];
                                if (t < nt && r < k5)
                                    CK_ASSERT_QUIET(memcmp(&got, &want[t][r], sizeof got) == 0, "AVX-512 %s (%d, %d)",
                                                  type_name(type), r, t);
                                else
                                    CK_ASSERT_QUIET(got == -12345.0f, "AVX-512 %s: wrote outside (%d, %d)",
                                                  type_name(type), r, t);
                            }
                    }
                }
            free(raw);
            free(mem);
            free(x);
            free(rowsel);
            free(W.q);
        }
}
END_TEST

/* (c) The unpacked values d * sc * q are exactly quant_dequantize's (llama.cpp's
 * dequantize_row_X), and the reference and unpacked dots (scalar, AVX2) of every row of both
 * tensors are within the float-order tolerance of the double dot of those values with the
 * activations as the vec_dot type holds them. The dequantizers of the i-quants are written
 * apart (codec/quants_iq*.c); a type they do not cover yet fails here, by name, after the
 * others are checked. */
START_TEST(test_iq_vs_dequantized) {
    char missing[256] = "";
    const bool avx2 = kern_have_avx2();
    for (int ti = 0; ti < N_IQTYPES; ++ti) {
        const int type = IQTYPES[ti];
        const kern_wdesc *wd = kern_wdesc_get(type);
        if (quant_dequantize(type, NULL, NULL, 0) != 0) {
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s", type_name(type));
            continue;
        }
        for (int which = 0; which < 2; ++which) {
            iqmat W = load_iq(type, which);
            const int64_t n = W.n;
            float *deq = malloc(sizeof(float) * (size_t)(n * IQ_ROWS)), *x = malloc(sizeof(float) * (size_t)n), av[768];
            ck_assert_int_eq(quant_dequantize(type, W.q, deq, n * IQ_ROWS), 0);
            uint8_t *act = malloc(kern_act_row_bytes(type, n));
            fill(x, n, 2.0f);
            kern_act_convert(type, x, act, n);
            act_values(type, act, av, n);
            kern_wrow w;
            kern_arow a;
            void *wmem = malloc(kern_unpacked_bytes(n)), *amem = malloc(kern_unpacked_bytes(n));
            kern_unpacked_carve(wmem, n, &w, NULL);
            kern_unpacked_carve(amem, n, NULL, &a);
            kern_unpack_arow(wd->act_type, act, n, &a);
            for (int r = 0; r < IQ_ROWS; ++r) {
                const uint8_t *row = W.q + W.row_bytes * (size_t)r;
                const float *dr = deq + r * n;
                kern_unpack_wrow(wd, row, n, &w);
                double exact = 0;
                for (int64_t i = 0; i < n; ++i) {
                    const double v = unpacked_value(wd, &w, i);
                    CK_ASSERT_QUIET(v == (double)dr[i], "%s n %lld row %d value %lld: unpacked %.9g, dequantized %.9g",
                                  type_name(type), (long long)n, r, (long long)i, v, dr[i]);
                    exact += (double)dr[i] * av[i];
                }
                const double tol = iq_tolerance(wd, &w, av, n);
                const float ref = kern_vec_dot_ref(type)(n, row, act), sc = kern_dot_unpacked(wd, false, n, &w, &a);
                CK_ASSERT_QUIET(fabs(ref - exact) <= tol, "%s n %lld row %d: reference %.9g vs double %.9g", type_name(type),
                              (long long)n, r, ref, exact);
                CK_ASSERT_QUIET(fabs(sc - exact) <= tol, "%s n %lld row %d: unpacked %.9g vs double %.9g", type_name(type),
                              (long long)n, r, sc, exact);
                if (avx2) {
                    const float v = kern_dot_unpacked(wd, true, n, &w, &a);
                    CK_ASSERT_QUIET(fabs(v - exact) <= tol, "%s n %lld row %d: AVX2 %.9g vs double %.9g", type_name(type),
                                  (long long)n, r, v, exact);
                }
            }
            free(wmem);
            free(amem);
            free(act);
            free(deq);
            free(x);
            free(W.q);
        }
    }
    ck_assert_msg(missing[0] == 0, "quant_dequantize has no kernels yet for%s (codec/quants_iq*.c still placeholders?); "
                  "the other i-quant types passed", missing);
}
END_TEST

/* (d) kern_matmul (scalar and AVX2, 1 or 2 threads, with and without a row map) of a small
 * weight matrix of each type (the first 19 rows of each tensor): each output within the float
 * order of the reference vec_dot, and the AVX2 outputs bit for bit the 1x1 AVX2 dots. */
START_TEST(test_iq_matmul) {
    enum { NR = 19, NT = 5 };
    int64_t map[NR];
    for (int r = 0; r < NR; ++r) map[r] = (r * 7) % NR;
    for (int ti = 0; ti < N_IQTYPES; ++ti)
        for (int which = 0; which < 2; ++which) {
            const int type = IQTYPES[ti];
            const kern_wdesc *wd = kern_wdesc_get(type);
            iqmat W = load_iq(type, which);
            const int64_t n = W.n;
            float *x = malloc(sizeof(float) * (size_t)(NT * n)), y[NT * NR], av[768];
            fill_tokens(x, NT, n);
            kern_wrow rows[NR];
            kern_arow acts[NT];
            void *mem = unpack_all(wd, n, W.q, W.row_bytes, NR, rows, x, NT, acts);
            uint8_t *act = malloc(kern_act_row_bytes(type, n));
            for (int impl = KERN_SCALAR; impl <= KERN_AVX2; ++impl) {
                if (impl == KERN_AVX2 && !kern_have_avx2()) continue;
                for (int use_map = 0; use_map < 2; ++use_map) {
                    kern_weight w = {.data = W.q, .type = type, .n_in = n, .n_out = NR, .row_bytes = W.row_bytes,
                                     .row_map = use_map ? map : NULL};
                    slmc_err err = {0};
                    const kern_ctx ctx = {.impl = (kern_impl)impl, .n_threads = 1 + use_map};
                    CK_ASSERT_QUIET(kern_matmul(&ctx, &w, x, NT, y, &err) == 0, "%s", err.msg);
                    for (int t = 0; t < NT; ++t) {
                        kern_act_convert(type, x + t * n, act, n);
                        act_values(type, act, av, n);
                        for (int r = 0; r < NR; ++r) {
                            const int64_t src = use_map ? map[r] : r;
                            const float got = y[t * NR + r];
                            const float want = kern_vec_dot_ref(type)(n, W.q + W.row_bytes * (size_t)src, act);
                            CK_ASSERT_QUIET(fabs(got - want) <= iq_tolerance(wd, &rows[src], av, n),
                                          "%s n %lld impl %d tok %d row %d: %.9g vs reference %.9g", type_name(type),
                                          (long long)n, impl, t, r, got, want);
                            if (impl == KERN_AVX2) {
                                const float one = kern_dot_unpacked(wd, true, n, &rows[src], &acts[t]);
                                CK_ASSERT_QUIET(memcmp(&got, &one, sizeof got) == 0,
                                              "%s n %lld AVX2 matmul (%d, %d): %.9g vs 1x1 %.9g", type_name(type),
                                              (long long)n, r, t, got, one);
                            }
                        }
                    }
                }
            }
            free(act);
            free(mem);
            free(x);
            free(W.q);
        }
}
END_TEST

START_TEST(test_unsupported) {
    ck_assert_int_eq(kern_vec_dot_type(GGML_TYPE_Q8_K), -1); /* an activation type only */
    ck_assert_ptr_null(kern_vec_dot_ref(GGML_TYPE_Q8_K));
    ck_assert(!kern_weight_supported(GGML_TYPE_Q4_K, 128)); /* rows must hold whole super-blocks */
    ck_assert(kern_weight_supported(GGML_TYPE_Q4_K, 256));
    uint8_t dummy[64] = {0};
    kern_weight w = {.data = dummy, .type = GGML_TYPE_Q8_K, .n_in = 256, .n_out = 1, .row_bytes = 64};
    float x[256] = {0}, y[1];
    slmc_err err = {0};
    ck_assert_int_eq(kern_matmul(&(kern_ctx){0}, &w, x, 1, y, &err), -1);
    ck_assert(strstr(err.msg, "Q8_K") != NULL);
}
END_TEST

START_TEST(test_rmsnorm) {
    float x[100], w[100], out[100];
    fill(x, 100, 2.f);
    fill(w, 100, 1.f);
    const float eps = 1e-5f;
    kern_rmsnorm(out, x, w, 100, eps);
    double ss = 0;
    for (int i = 0; i < 100; ++i) ss += (double)x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / 100 + eps);
    for (int i = 0; i < 100; ++i) ck_assert_double_le(fabs(out[i] - x[i] * inv * w[i]), 1e-6 * (fabs(x[i] * inv * w[i]) + 1e-3));
    kern_rmsnorm(x, x, NULL, 100, eps); /* in place, no weight */
    double ss2 = 0;
    for (int i = 0; i < 100; ++i) ss2 += (double)x[i] * x[i];
    ck_assert_double_le(fabs(ss2 / 100 - 1.0), 1e-4); /* unit mean square (eps is tiny here) */
}
END_TEST

/* kern_rmsnorm_rows is kern_rmsnorm row by row, to the bit: 1 to 9 rows (whole fours and the
 * rest), odd lengths, with and without a weight, in place and not, rows of very different size. */
START_TEST(test_rmsnorm_rows_as_rows) {
    enum { R = 9, N = 301 };
    float *x = malloc(sizeof(float) * R * N), *w = malloc(sizeof(float) * N);
    float *want = malloc(sizeof(float) * R * N), *got = malloc(sizeof(float) * R * N);
    fill(x, R * N, 3.f);
    fill(w, N, 1.f);
    for (int r = 0; r < R; ++r)
        for (int i = 0; i < N; ++i) x[r * N + i] *= (float)(1 << (3 * r)) / 64.f; /* scales 2^-6 .. 2^18 */
    for (int rows = 1; rows <= R; ++rows)
        for (int n = 1; n <= N; n += 60)
            for (int wt = 0; wt < 2; ++wt) {
                for (int r = 0; r < rows; ++r) kern_rmsnorm(want + r * n, x + r * N, wt ? w : NULL, n, 1e-6f);
                float *in = malloc(sizeof(float) * (size_t)(rows * n));
                for (int r = 0; r < rows; ++r) memcpy(in + r * n, x + r * N, sizeof(float) * (size_t)n);
                kern_rmsnorm_rows(got, in, wt ? w : NULL, rows, n, 1e-6f);
                CK_ASSERT_QUIET(memcmp(want, got, sizeof(float) * (size_t)(rows * n)) == 0, "rows %d n %d weight %d", rows, n, wt);
                kern_rmsnorm_rows(in, in, wt ? w : NULL, rows, n, 1e-6f); /* in place */
                CK_ASSERT_QUIET(memcmp(want, in, sizeof(float) * (size_t)(rows * n)) == 0, "in place: rows %d n %d", rows, n);
                free(in);
            }
    free(x); free(w); free(want); free(got);
}
END_TEST

START_TEST(test_softmax) {
    float x[50];
    double want[50], sum = 0, max = -1e30;
    fill(x, 50, 20.f);
    x[7] = 1000.f; /* large values must not overflow: the max is subtracted */
    for (int i = 0; i < 50; ++i) max = fmax(max, x[i]);
    for (int i = 0; i < 50; ++i) sum += (want[i] = exp(x[i] - max));
    kern_softmax(x, 50);
    double total = 0;
    for (int i = 0; i < 50; ++i) {
        ck_assert_double_le(fabs(x[i] - want[i] / sum), 1e-6 * (want[i] / sum) + 1e-30);
        total += x[i];
    }
    ck_assert_double_le(fabs(total - 1.0), 1e-6);
}
END_TEST

START_TEST(test_rope) {
    const int64_t n_rot = 16, hd = 20; /* the last 4 dims are not rotated */
    const float base = 10000.f, fscale = 0.5f;
    for (int neox = 0; neox < 2; ++neox) {
        for (int64_t pos = 0; pos < 100; pos += 13) {
            float c[8], s[8], x[20], orig[20];
            kern_rope_table(c, s, pos, n_rot, base, fscale);
            fill(x, hd, 1.f);
            memcpy(orig, x, sizeof x);
            kern_rope(KERN_AUTO, x, n_rot, c, s, neox);
            for (int64_t i = 0; i < n_rot / 2; ++i) {
                const double theta = fscale * (double)pos * pow(base, -2.0 * (double)i / (double)n_rot);
                ck_assert_double_le(fabs(c[i] - cos(theta)), 1e-4);
                ck_assert_double_le(fabs(s[i] - sin(theta)), 1e-4);
                const int64_t a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
                const double ra = orig[a] * cos(theta) - orig[b] * sin(theta);
                const double rb = orig[a] * sin(theta) + orig[b] * cos(theta);
                ck_assert_double_le(fabs(x[a] - ra), 2e-4);
                ck_assert_double_le(fabs(x[b] - rb), 2e-4);
            }
            for (int64_t i = n_rot; i < hd; ++i) ck_assert_float_eq(x[i], orig[i]);
        }
    }
    /* position 0 is the identity */
    float c[8], s[8], x[16], orig[16];
    kern_rope_table(c, s, 0, 16, base, 1.f);
    fill(x, 16, 1.f);
    memcpy(orig, x, sizeof x);
    kern_rope(KERN_AUTO, x, 16, c, s, false);
    ck_assert_mem_eq(x, orig, sizeof x);
}
END_TEST

/* LayerNorm against double: (x - mean) / sqrt(var + eps) * w + b, biased variance. */
START_TEST(test_layernorm) {
    float x[96], w[96], b[96], out[96];
    fill(x, 96, 3.f);
    for (int i = 0; i < 96; ++i) x[i] += 5.f; /* an offset the mean must remove */
    fill(w, 96, 1.f);
    fill(b, 96, 0.5f);
    const float eps = 1e-5f;
    kern_layernorm(out, x, w, b, 96, eps);
    double mean = 0, var = 0;
    for (int i = 0; i < 96; ++i) mean += x[i];
    mean /= 96;
    for (int i = 0; i < 96; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= 96;
    for (int i = 0; i < 96; ++i) {
        const double want = (x[i] - mean) / sqrt(var + eps) * w[i] + b[i];
        ck_assert_double_le(fabs(out[i] - want), 1e-5 * (fabs(want) + 1));
    }
    kern_layernorm(x, x, NULL, NULL, 96, eps); /* in place, no weight or bias: mean 0, variance 1 */
    double m2 = 0, v2 = 0;
    for (int i = 0; i < 96; ++i) m2 += x[i];
    for (int i = 0; i < 96; ++i) v2 += x[i] * x[i];
    ck_assert_double_le(fabs(m2 / 96), 1e-5);
    ck_assert_double_le(fabs(v2 / 96 - 1), 1e-3);
}
END_TEST

/* GELU as ggml: the tanh formula evaluated on the fp16-rounded input, the result rounded to
 * fp16; exactly 0 at or below -10 and the identity at or above 10. GeGLU multiplies by up. */
START_TEST(test_gelu_geglu_softcap) {
    float x[7] = {-12.f, -10.f, -1.3f, 0.f, 0.7f, 3.14159f, 10.f};
    float y[7];
    memcpy(y, x, sizeof x);
    kern_gelu(y, 7);
    ck_assert_float_eq(y[0], 0.f);
    ck_assert_float_eq(y[1], 0.f);
    ck_assert_float_eq(y[3], 0.f);
    ck_assert_float_eq(y[6], 10.f);
    for (int i = 2; i < 6; ++i) {
        const double v = (double)fp16_to_f32(f32_to_fp16(x[i]));
        const double g = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * v * (1 + 0.044715 * v * v)));
        ck_assert_double_le(fabs(y[i] - g), 1e-3 * fabs(g) + 1e-6);             /* within fp16 rounding */
        ck_assert_float_eq(y[i], fp16_to_f32(f32_to_fp16(y[i])));           /* an fp16 value */
    }
    float g2[2] = {0.7f, -1.3f}, up[2] = {2.f, -3.f};
    kern_geglu(g2, up, 2);
    ck_assert_float_eq(g2[0], y[4] * 2.f);
    ck_assert_float_eq(g2[1], y[2] * -3.f);
    /* soft-cap: c * tanh(x / c), bounded by c, odd, ~identity for small x */
    float sc[4] = {1000.f, -1000.f, 0.01f, 30.f};
    kern_softcap(sc, 4, 30.f);
    ck_assert(sc[0] <= 30.f && sc[0] > 29.99f);
    ck_assert_float_eq(sc[1], -sc[0]);
    ck_assert_double_le(fabs(sc[2] - 0.01), 1e-8);
    ck_assert_double_le(fabs(sc[3] - 30 * tanh(1.0)), 1e-5);
}
END_TEST

/* rope factors divide each pair's angle; mscale multiplies cos and sin; NULL factors and
 * mscale 1 are kern_rope_table bit for bit. */
START_TEST(test_rope_ext) {
    const int64_t n_rot = 16;
    float ff[8], c0[8], s0[8], c1[8], s1[8];
    for (int i = 0; i < 8; ++i) ff[i] = 1.f + 0.5f * (float)i;
    for (int64_t pos = 1; pos < 200; pos += 37) {
        kern_rope_table(c0, s0, pos, n_rot, 500000.f, 1.f);
        kern_rope_table_ext(c1, s1, pos, n_rot, 500000.f, 1.f, NULL, 1.f);
        ck_assert_mem_eq(c0, c1, sizeof c0);
        ck_assert_mem_eq(s0, s1, sizeof s0);
        kern_rope_table_ext(c1, s1, pos, n_rot, 500000.f, 0.25f, ff, 1.19f);
        for (int64_t i = 0; i < n_rot / 2; ++i) {
            const double theta = 0.25 * (double)pos * pow(500000.0, -2.0 * (double)i / (double)n_rot) / ff[i];
            ck_assert_double_le(fabs(c1[i] - 1.19 * cos(theta)), 2e-4);
            ck_assert_double_le(fabs(s1[i] - 1.19 * sin(theta)), 2e-4);
        }
    }
}
END_TEST

/* kern_swiglu (vector exps) gives kern_swiglu_ref's bits on every 4099th float pattern as the
 * gate (all exponents, both signs, zeros, subnormals, infinities, NaNs), odd lengths included. */
START_TEST(test_swiglu_matches_ref) {
    if (!kern_have_avx2() || !attn_fast_exp_ok()) SKIP_TEST("no AVX2, or no vector expf here: kern_swiglu is the reference");
    enum { N = 4099 };
    float *g0 = malloc(sizeof(float) * N), *g1 = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N);
    ck_assert(g0 && g1 && u);
    int differ = 0;
    for (uint64_t base = 0; base < 0x100000000ull; base += 0x100000000ull / 256) {
        for (int i = 0; i < N; ++i) {
            const uint32_t bits = (uint32_t)(base + (uint64_t)i * 4099u);
            memcpy(&g0[i], &bits, 4);
            u[i] = (float)(i % 17) * 0.37f - 2.5f;
        }
        memcpy(g1, g0, sizeof(float) * N);
        const int64_t n = N - (int64_t)(base >> 28); /* lengths N-15..N: the tail of each block */
        kern_swiglu_ref(g0, u, n);
        kern_swiglu(KERN_AUTO, g1, u, n);
        for (int64_t i = 0; i < n; ++i) differ += !(memcmp(&g0[i], &g1[i], 4) == 0 || (isnan(g0[i]) && isnan(g1[i])));
    }
    ck_assert_int_eq(differ, 0);
    free(g0);
    free(g1);
    free(u);
}
END_TEST

START_TEST(test_swiglu_and_rounding) {
    float g[4] = {-2.f, 0.f, 1.f, 30.f}, u[4] = {1.f, 5.f, 2.f, 0.5f};
    kern_swiglu(KERN_AUTO, g, u, 4);
    ck_assert_double_le(fabs(g[0] - (-2.0 / (1 + exp(2.0)))), 1e-7);
    ck_assert_float_eq(g[1], 0.f);
    ck_assert_double_le(fabs(g[2] - 2.0 / (1 + exp(-1.0))), 1e-6);
    ck_assert_double_le(fabs(g[3] - 15.0), 1e-5);
    float r[3] = {1.0f + 1.0f / 4096, 1.0f / 3, 65504.f};
    kern_round_f16(r, 3);
    ck_assert_float_eq(r[0], 1.0f); /* below half an fp16 step (2^-10): rounds down */
    ck_assert_float_eq(r[1], fp16_to_f32(f32_to_fp16(1.0f / 3)));
    ck_assert_float_eq(r[2], 65504.f);
    float bf[1] = {1.0f + 1.0f / 256}; /* exactly half a bf16 step: ties to even -> 1.0 */
    kern_round_bf16(bf, 1);
    ck_assert_float_eq(bf[0], 1.0f);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vec_dot_ref_vs_double);
    tcase_add_test(tc, test_matmul_scalar);
    tcase_add_test(tc, test_impl_resolve);
    tcase_add_test(tc, test_matmul_avx2);
    tcase_add_test(tc, test_avx2_vs_scalar_dots);
    tcase_add_test(tc, test_tiled_dots_bit_identical);
    tcase_add_test(tc, test_float_rows_in_place_bit_identical);
    tcase_add_test(tc, test_bf16_pairs_bit_identical);
    tcase_add_test(tc, test_matmul_avx2_exact);
    tcase_add_test(tc, test_matmul_group_as_single);
    tcase_add_test(tc, test_unpack_avx2_bit_identical);
    tcase_add_test(tc, test_q8_0_activation_rounding);
    tcase_add_test(tc, test_unsupported);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rmsnorm_rows_as_rows);
    tcase_add_test(tc, test_softmax);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_swiglu_and_rounding);
    tcase_add_test(tc, test_swiglu_matches_ref);
    tcase_add_test(tc, test_layernorm);
    tcase_add_test(tc, test_gelu_geglu_softcap);
    tcase_add_test(tc, test_rope_ext);
    suite_add_tcase(s, tc);
    TCase *iq = tcase_create("iquants");
    tcase_set_timeout(iq, 120);
    tcase_add_test(iq, test_iq_unpacked_dots);
    tcase_add_test(iq, test_iq_vs_dequantized);
    tcase_add_test(iq, test_iq_matmul);
    suite_add_tcase(s, iq);
    return s;
}

int main(void) { return run_suite(suite()); }
