/* test_distill_ops.c - every training op's backward against central finite differences.
 *
 * Each op's output is reduced to a scalar loss L = Σ r_i · out_i with fixed random r (summed in
 * double), so dL/dout = r. The analytic gradient from op_backward(dout = r) is compared with
 * (L(x + ε) − L(x − ε)) / 2ε, evaluated in double, for a sample of input elements. Then the
 * whole model: the gradient of the mean cross-entropy of a tiny random model of each trainable
 * family (GQA, tied and untied, llama and NEOX RoPE, biases, Llama 3's rope factors, Qwen3's
 * q/k head norms) against finite differences of tm_forward's loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/model.h"
#include "distill/ops.h"
#include "eval/kernels.h"
#include "testutil.h"

#define NT 2 /* threads every op runs on here (results do not depend on it) */

/* The matrix products' settings: the best kernel this CPU has, NT threads. */
static gemm_ctx gemm_settings(void) { return (gemm_ctx){.kernel = gemm_best_kernel(), .n_threads = NT}; }

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
static float *rand_buf(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < n; i++) x[i] = scale * frand();
    return x;
}
static double project(const float *out, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

/* Compare grad[i] with the central difference of loss() over x[i] for a spread of i. */
typedef double (*loss_fn)(void *ctx);
static void check_grad(const char *what, float *x, size_t n, const float *grad, loss_fn loss, void *ctx,
                       float eps, double rtol) {
    size_t step = n > 48 ? n / 48 : 1;
    int checked = 0;
    double worst = 0;
    for (size_t i = (n > 48 ? 7 % step : 0); i < n; i += step) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = loss(ctx);
        x[i] = keep - eps;
        double lm = loss(ctx);
        x[i] = keep;
        /* the step actually taken, (keep+eps) − (keep−eps), after float rounding */
        double num = (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
        double err = fabs(num - grad[i]) / (fabs(num) + fabs(grad[i]) + 1e-2);
        if (err > worst) worst = err;
        CK_ASSERT_QUIET(err < rtol, "%s[%zu]: analytic %.6g, finite difference %.6g", what, i, grad[i], num);
        checked++;
    }
    ck_assert_int_gt(checked, 0);
    (void)worst;
}

/* ---- embedding ---- */
typedef struct { float *out, *wte, *r; int32_t *tok; int N, C; } emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    embedding_forward(c->out, c->tok, c->wte, c->N, c->C, NT);
    return project(c->out, c->r, (size_t)c->N * c->C);
}
START_TEST(test_embedding) {
    int N = 6, C = 5, V = 4;
    int32_t tok[6] = {0, 3, 3, 1, 0, 3}; /* repeats: gradients must add up */
    emb_ctx c = {malloc(sizeof(float) * N * C), rand_buf((size_t)V * C, 1), rand_buf((size_t)N * C, 1), tok, N, C};
    float *d = calloc((size_t)V * C, sizeof(float));
    embedding_backward(d, c.r, tok, N, C, NT);
    check_grad("dwte", c.wte, (size_t)V * C, d, emb_loss, &c, 1e-2f, 1e-3);
    /* row 2 (never used) gets nothing */
    for (int i = 0; i < C; i++) ck_assert(d[2 * C + i] == 0.0f);
    free(c.out); free(c.wte); free(c.r); free(d);
}
END_TEST

/* ---- RMSNorm ---- */
typedef struct { float *out, *rstd, *x, *w, *r; int N, C; } rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5f, NT);
    return project(c->out, c->r, (size_t)c->N * c->C);
}
START_TEST(test_rmsnorm) {
    int N = 5, C = 16;
    rms_ctx c = {malloc(sizeof(float) * N * C), malloc(sizeof(float) * N), rand_buf((size_t)N * C, 1),
                 rand_buf((size_t)C, 1), rand_buf((size_t)N * C, 1), N, C};
    float *dx = calloc((size_t)N * C, sizeof(float)), *dw = calloc((size_t)C, sizeof(float));
    rms_loss(&c);
    rmsnorm_backward(dx, dw, c.r, c.x, c.w, c.rstd, N, C, NT);
    check_grad("dx", c.x, (size_t)N * C, dx, rms_loss, &c, 1e-3f, 2e-3);
    check_grad("dw", c.w, (size_t)C, dw, rms_loss, &c, 1e-3f, 2e-3);
    free(c.out); free(c.rstd); free(c.x); free(c.w); free(c.r); free(dx); free(dw);
}
END_TEST

/* ---- matmul ---- */
typedef struct { float *out, *x, *w, *b, *r; int N, C, OC; } mm_ctx;
static double mm_loss(void *p) {
    mm_ctx *c = p;
    const gemm_ctx g = gemm_settings();
    matmul_forward(c->out, c->x, c->w, c->b, c->N, c->C, c->OC, &g);
    return project(c->out, c->r, (size_t)c->N * c->OC);
}
START_TEST(test_matmul) {
    int N = 7, C = 13, OC = 9; /* N not a multiple of the 4-row tile */
    mm_ctx c = {malloc(sizeof(float) * N * OC), rand_buf((size_t)N * C, 1), rand_buf((size_t)OC * C, 1),
                rand_buf((size_t)OC, 1), rand_buf((size_t)N * OC, 1), N, C, OC};
    float *dx = calloc((size_t)N * C, 4), *dw = calloc((size_t)OC * C, 4), *db = calloc((size_t)OC, 4);
    const gemm_ctx g = gemm_settings();
    matmul_backward(dx, dw, db, c.r, c.x, c.w, N, C, OC, &g);
    check_grad("dinp", c.x, (size_t)N * C, dx, mm_loss, &c, 1e-2f, 1e-3);
    check_grad("dweight", c.w, (size_t)OC * C, dw, mm_loss, &c, 1e-2f, 1e-3);
    check_grad("dbias", c.b, (size_t)OC, db, mm_loss, &c, 1e-2f, 1e-3);
    /* forward value: one element by hand */
    mm_loss(&c);
    double ref = c.b[4];
    for (int i = 0; i < C; i++) ref += (double)c.x[2 * C + i] * c.w[4 * C + i];
    ck_assert(fabs(c.out[2 * OC + 4] - ref) < 1e-5);
    free(c.out); free(c.x); free(c.w); free(c.b); free(c.r); free(dx); free(dw); free(db);
}
END_TEST

/* ---- RoPE ---- */
typedef struct { float *x, *tmp, *cs, *sn, *r; int N, T, H, hd, rot; bool neox; } rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->N * c->H * c->hd;
    memcpy(c->tmp, c->x, n * sizeof(float));
    rope_forward(c->tmp, c->cs, c->sn, c->N, c->T, c->H, c->hd, c->rot, c->neox, NT);
    return project(c->tmp, c->r, n);
}
static void rope_case(bool neox) {
    int T = 5, N = 10, H = 2, hd = 8, rot = 6; /* partial rotation: the last 2 channels pass through */
    size_t n = (size_t)N * H * hd;
    rope_ctx c = {rand_buf(n, 1), malloc(n * 4), malloc(sizeof(float) * T * rot / 2),
                  malloc(sizeof(float) * T * rot / 2), rand_buf(n, 1), N, T, H, hd, rot, neox};
    for (int p = 0; p < T; p++) kern_rope_table(c.cs + p * rot / 2, c.sn + p * rot / 2, p, rot, 10000.f, 1.f);
    float *dx = malloc(n * 4);
    memcpy(dx, c.r, n * 4);
    rope_backward(dx, c.cs, c.sn, N, T, H, hd, rot, neox, NT);
    check_grad("dx", c.x, n, dx, rope_loss, &c, 1e-2f, 1e-3);
    /* the forward agrees with the evaluator's kernel */
    rope_loss(&c);
    float *ref = malloc(hd * 4);
    memcpy(ref, c.x + (size_t)(7 * H + 1) * hd, hd * 4);
    kern_rope(KERN_AUTO, ref, rot, c.cs + (7 % T) * rot / 2, c.sn + (7 % T) * rot / 2, neox);
    ck_assert(memcmp(ref, c.tmp + (size_t)(7 * H + 1) * hd, hd * 4) == 0);
    free(ref); free(c.x); free(c.tmp); free(c.cs); free(c.sn); free(c.r); free(dx);
}
START_TEST(test_rope) { rope_case(false); rope_case(true); }
END_TEST

/* ---- attention ---- */
typedef struct { float *out, *att, *q, *k, *v, *r; int B, T, NH, NKV, hd; } att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    attention_forward(c->out, c->att, c->q, c->k, c->v, c->B, c->T, c->NH, c->NKV, c->hd, NT);
    return project(c->out, c->r, (size_t)c->B * c->T * c->NH * c->hd);
}
START_TEST(test_attention) {
    int B = 2, T = 5, NH = 4, NKV = 2, hd = 4;
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd;
    att_ctx c = {malloc(nq * 4), malloc(sizeof(float) * B * NH * T * T), rand_buf(nq, 1), rand_buf(nk, 1),
                 rand_buf(nk, 1), rand_buf(nq, 1), B, T, NH, NKV, hd};
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    att_loss(&c);
    /* probabilities: rows sum to 1, nothing looks ahead */
    for (int r = 0; r < B * NH * T; r++) {
        double s = 0;
        for (int t2 = 0; t2 < T; t2++) s += c.att[r * T + t2];
        ck_assert(fabs(s - 1) < 1e-6);
        for (int t2 = r % T + 1; t2 < T; t2++) ck_assert(c.att[r * T + t2] == 0.0f);
    }
    attention_backward(dq, dk, dv, c.r, c.att, c.q, c.k, c.v, B, T, NH, NKV, hd, NT);
    check_grad("dq", c.q, nq, dq, att_loss, &c, 1e-2f, 2e-3);
    check_grad("dk", c.k, nk, dk, att_loss, &c, 1e-2f, 2e-3);
    check_grad("dv", c.v, nk, dv, att_loss, &c, 1e-2f, 2e-3);
    free(c.out); free(c.att); free(c.q); free(c.k); free(c.v); free(c.r); free(dq); free(dk); free(dv);
}
END_TEST

/* Bits of a and b (n floats) are the same: what an op computed on 1 and on 3 threads. */
static void same_bits(const char *what, const float *a, const float *b, size_t n) {
    ck_assert_msg(memcmp(a, b, n * sizeof(float)) == 0, "%s differs between 1 and 3 threads", what);
}

/* ---- attention with options: sliding window, soft-capped scores, any scale ---- */
typedef struct { float *out, *att, *q, *k, *v, *r; int B, T, NH, NKV, hd; attn_opts o; } attx_ctx;
static double attx_loss(void *p) {
    attx_ctx *c = p;
    attention_forward_ex(c->out, c->att, c->q, c->k, c->v, c->B, c->T, c->NH, c->NKV, c->hd, &c->o, NT);
    return project(c->out, c->r, (size_t)c->B * c->T * c->NH * c->hd);
}
/* Forward and backward (dout = r) on nt threads into out, att and zeroed dq, dk, dv. */
static void attx_run(const attx_ctx *c, int nt, float *out, float *att, float *dq, float *dk, float *dv) {
    size_t nq = (size_t)c->B * c->T * c->NH * c->hd, nk = (size_t)c->B * c->T * c->NKV * c->hd;
    memset(dq, 0, nq * 4);
    memset(dk, 0, nk * 4);
    memset(dv, 0, nk * 4);
    attention_forward_ex(out, att, c->q, c->k, c->v, c->B, c->T, c->NH, c->NKV, c->hd, &c->o, nt);
    attention_backward_ex(dq, dk, dv, c->r, att, c->q, c->k, c->v, c->B, c->T, c->NH, c->NKV, c->hd, &c->o, nt);
}
/* q and k are drawn in [-qk, qk) (large qk: scores reach the soft-cap's bend). Checks the
 * probabilities and the mask, the gradients against finite differences, and that 1 and 3
 * threads give the same bits. */
static void attx_case(int B, int T, int NH, int NKV, int hd, attn_opts o, float qk) {
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd, na = (size_t)B * NH * T * T;
    attx_ctx c = {malloc(nq * 4), malloc(na * 4), rand_buf(nq, qk), rand_buf(nk, qk), rand_buf(nk, 1),
                  rand_buf(nq, 1), B, T, NH, NKV, hd, o};
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4);
    attx_loss(&c);
    /* rows sum to 1 over the keys t0..t they see; everything else is exactly 0 */
    double max_score = 0;
    for (int r = 0; r < B * NH * T; r++) {
        const int b = r / (NH * T), h = r / T % NH, t = r % T, kh = h / (NH / NKV);
        double s = 0;
        for (int t2 = 0; t2 < T; t2++) {
            const float a = c.att[(size_t)r * T + t2];
            const bool seen = t2 <= t && (o.window == 0 || t - t2 < o.window);
            CK_ASSERT_QUIET(seen ? a > 0.0f : a == 0.0f, "att row %d key %d: %g", r, t2, a);
            s += a;
            if (!seen) continue;
            double d = 0;
            for (int i = 0; i < hd; i++)
                d += (double)c.q[((size_t)b * T + t) * NH * hd + (size_t)h * hd + i] *
                     c.k[((size_t)b * T + t2) * NKV * hd + (size_t)kh * hd + i];
            if (fabs(d * o.scale) > max_score) max_score = fabs(d * o.scale);
        }
        ck_assert(fabs(s - 1) < 1e-6);
    }
    /* with a soft-cap, some scores lie past the cap, where tanh is far from linear */
    if (o.softcap > 0) ck_assert_msg(max_score > 1.5 * o.softcap, "largest score %g", max_score);
    attention_backward_ex(dq, dk, dv, c.r, c.att, c.q, c.k, c.v, B, T, NH, NKV, hd, &o, NT);
    check_grad("dq", c.q, nq, dq, attx_loss, &c, 1e-2f, 2e-3);
    check_grad("dk", c.k, nk, dk, attx_loss, &c, 1e-2f, 2e-3);
    check_grad("dv", c.v, nk, dv, attx_loss, &c, 1e-2f, 2e-3);
    /* 1 vs 3 threads */
    float *o1 = malloc(nq * 4), *a1 = malloc(na * 4), *q1 = malloc(nq * 4), *k1 = malloc(nk * 4), *v1 = malloc(nk * 4);
    float *o3 = malloc(nq * 4), *a3 = malloc(na * 4), *q3 = malloc(nq * 4), *k3 = malloc(nk * 4), *v3 = malloc(nk * 4);
    attx_run(&c, 1, o1, a1, q1, k1, v1);
    attx_run(&c, 3, o3, a3, q3, k3, v3);
    same_bits("out", o1, o3, nq);
    same_bits("att", a1, a3, na);
    same_bits("dq", q1, q3, nq);
    same_bits("dk", k1, k3, nk);
    same_bits("dv", v1, v3, nk);
    free(o1); free(a1); free(q1); free(k1); free(v1); free(o3); free(a3); free(q3); free(k3); free(v3);
    free(c.out); free(c.att); free(c.q); free(c.k); free(c.v); free(c.r); free(dq); free(dk); free(dv);
}

/* attention_forward/backward are attention_*_ex with Llama's options, to the bit */
START_TEST(test_attention_ex_default) {
    int B = 2, T = 6, NH = 4, NKV = 2, hd = 8;
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd, na = (size_t)B * NH * T * T;
    attx_ctx c = {NULL, NULL, rand_buf(nq, 2), rand_buf(nk, 2), rand_buf(nk, 1), rand_buf(nq, 1), B, T, NH, NKV, hd,
                  {.scale = 1.0f / sqrtf((float)hd), .window = 0, .softcap = 0}};
    float *o1 = malloc(nq * 4), *a1 = malloc(na * 4), *q1 = calloc(nq, 4), *k1 = calloc(nk, 4), *v1 = calloc(nk, 4);
    float *o2 = malloc(nq * 4), *a2 = malloc(na * 4), *q2 = malloc(nq * 4), *k2 = malloc(nk * 4), *v2 = malloc(nk * 4);
    attention_forward(o1, a1, c.q, c.k, c.v, B, T, NH, NKV, hd, NT);
    attention_backward(q1, k1, v1, c.r, a1, c.q, c.k, c.v, B, T, NH, NKV, hd, NT);
    attx_run(&c, NT, o2, a2, q2, k2, v2);
    ck_assert(memcmp(o1, o2, nq * 4) == 0 && memcmp(a1, a2, na * 4) == 0);
    ck_assert(memcmp(q1, q2, nq * 4) == 0 && memcmp(k1, k2, nk * 4) == 0 && memcmp(v1, v2, nk * 4) == 0);
    /* a window as long as the sequence masks nothing: the same bits again */
    c.o.window = T;
    attx_run(&c, NT, o2, a2, q2, k2, v2);
    ck_assert(memcmp(o1, o2, nq * 4) == 0 && memcmp(a1, a2, na * 4) == 0);
    ck_assert(memcmp(q1, q2, nq * 4) == 0 && memcmp(k1, k2, nk * 4) == 0 && memcmp(v1, v2, nk * 4) == 0);
    free(o1); free(a1); free(q1); free(k1); free(v1); free(o2); free(a2); free(q2); free(k2); free(v2);
    free(c.q); free(c.k); free(c.v); free(c.r);
}
END_TEST

START_TEST(test_attention_window) {
    /* (a) window 3 on T = 7: rows 3.. lose their first keys */
    attx_case(2, 7, 4, 2, 4, (attn_opts){.scale = 0.5f, .window = 3, .softcap = 0}, 1);
    /* window 1: every row sees only its own key, so out = v and att is the identity */
    attx_case(1, 5, 2, 1, 4, (attn_opts){.scale = 0.5f, .window = 1, .softcap = 0}, 1);
    int T = 5, NH = 2, hd = 4;
    float *q = rand_buf((size_t)T * NH * hd, 1), *k = rand_buf((size_t)T * hd, 1), *v = rand_buf((size_t)T * hd, 1);
    float *out = malloc(sizeof(float) * T * NH * hd), *att = malloc(sizeof(float) * NH * T * T);
    attention_forward_ex(out, att, q, k, v, 1, T, NH, 1, hd, &(attn_opts){.scale = 0.5f, .window = 1}, NT);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            for (int t2 = 0; t2 < T; t2++) ck_assert(att[((size_t)h * T + t) * T + t2] == (t2 == t ? 1.0f : 0.0f));
            ck_assert(memcmp(out + ((size_t)t * NH + h) * hd, v + (size_t)t * hd, (size_t)hd * 4) == 0);
        }
    free(q); free(k); free(v); free(out); free(att);
}
END_TEST

/* (b) soft-capped scores, q and k scaled up so that scores pass the cap */
START_TEST(test_attention_softcap) {
    attx_case(2, 5, 2, 2, 4, (attn_opts){.scale = 0.5f, .window = 0, .softcap = 5}, 3.5f);
}
END_TEST

/* (c) both, scale 0.3, grouped-query heads */
START_TEST(test_attention_window_softcap) {
    attx_case(2, 7, 4, 2, 8, (attn_opts){.scale = 0.3f, .window = 3, .softcap = 4}, 3);
}
END_TEST

/* ---- LayerNorm ---- */
typedef struct { float *out, *mean, *rstd, *x, *w, *b, *r; int N, C; } ln_ctx;
static double ln_loss(void *p) {
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C, 1e-5f, NT);
    return project(c->out, c->r, (size_t)c->N * c->C);
}
START_TEST(test_layernorm) {
    int N = 5, C = 16;
    size_t n = (size_t)N * C;
    ln_ctx c = {malloc(n * 4), malloc(sizeof(float) * N), malloc(sizeof(float) * N), rand_buf(n, 1),
                rand_buf((size_t)C, 1), rand_buf((size_t)C, 1), rand_buf(n, 1), N, C};
    for (size_t i = 0; i < n; i++) c.x[i] += 0.7f; /* rows with a mean to remove */
    float *dx = calloc(n, 4), *dw = calloc((size_t)C, 4), *db = calloc((size_t)C, 4);
    ln_loss(&c);
    /* mean and rstd of row 3 by hand */
    double m = 0, var = 0;
    for (int i = 0; i < C; i++) m += c.x[3 * C + i];
    m /= C;
    for (int i = 0; i < C; i++) var += (c.x[3 * C + i] - m) * (c.x[3 * C + i] - m);
    ck_assert(fabs(c.mean[3] - m) < 1e-6 && fabs(c.rstd[3] - 1 / sqrt(var / C + 1e-5)) < 1e-5);
    layernorm_backward(dx, dw, db, c.r, c.x, c.w, c.mean, c.rstd, N, C, NT);
    check_grad("dx", c.x, n, dx, ln_loss, &c, 1e-3f, 2e-3);
    check_grad("dw", c.w, (size_t)C, dw, ln_loss, &c, 1e-3f, 2e-3);
    check_grad("db", c.b, (size_t)C, db, ln_loss, &c, 1e-3f, 2e-3);
    /* no bias: the same as a zero bias, and dbias NULL leaves dinp and dweight as they were */
    float *zero = calloc((size_t)C, 4), *out0 = malloc(n * 4), *dx0 = calloc(n, 4), *dw0 = calloc((size_t)C, 4);
    layernorm_forward(out0, c.mean, c.rstd, c.x, c.w, zero, N, C, 1e-5f, NT);
    layernorm_forward(c.out, c.mean, c.rstd, c.x, c.w, NULL, N, C, 1e-5f, NT);
    ck_assert(memcmp(out0, c.out, n * 4) == 0);
    memset(dx, 0, n * 4);
    memset(dw, 0, (size_t)C * 4);
    layernorm_backward(dx, dw, db, c.r, c.x, c.w, c.mean, c.rstd, N, C, NT);
    layernorm_backward(dx0, dw0, NULL, c.r, c.x, c.w, c.mean, c.rstd, N, C, NT);
    ck_assert(memcmp(dx, dx0, n * 4) == 0 && memcmp(dw, dw0, (size_t)C * 4) == 0);
    free(zero); free(out0); free(dx0); free(dw0);
    free(c.out); free(c.mean); free(c.rstd); free(c.x); free(c.w); free(c.b); free(c.r); free(dx); free(dw); free(db);
    /* 1 vs 3 threads, on more rows and channels than threads */
    N = 9, C = 40, n = (size_t)N * C;
    float *x = rand_buf(n, 2), *w = rand_buf((size_t)C, 1), *b = rand_buf((size_t)C, 1), *r = rand_buf(n, 1);
    float *res[2][6];
    for (int k = 0; k < 2; k++) {
        const int nt = k ? 3 : 1;
        float **o = res[k];
        o[0] = malloc(n * 4), o[1] = malloc(sizeof(float) * N), o[2] = malloc(sizeof(float) * N);
        o[3] = calloc(n, 4), o[4] = calloc((size_t)C, 4), o[5] = calloc((size_t)C, 4);
        layernorm_forward(o[0], o[1], o[2], x, w, b, N, C, 1e-5f, nt);
        layernorm_backward(o[3], o[4], o[5], r, x, w, o[1], o[2], N, C, nt);
    }
    static const char *const what[6] = {"out", "mean", "rstd", "dinp", "dweight", "dbias"};
    const size_t len[6] = {n, (size_t)N, (size_t)N, n, (size_t)C, (size_t)C};
    for (int i = 0; i < 6; i++) {
        same_bits(what[i], res[0][i], res[1][i], len[i]);
        free(res[0][i]);
        free(res[1][i]);
    }
    free(x); free(w); free(b); free(r);
}
END_TEST

/* ---- GELU and GeGLU ---- */
static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
typedef struct { float *out, *g, *u, *r; int n; } gl_ctx;
static double gelu_loss(void *p) {
    gl_ctx *c = p;
    gelu_forward(c->out, c->g, c->n, NT);
    return project(c->out, c->r, (size_t)c->n);
}
static double geglu_loss(void *p) {
    gl_ctx *c = p;
    geglu_forward(c->out, c->g, c->u, c->n, NT);
    return project(c->out, c->r, (size_t)c->n);
}
START_TEST(test_gelu_geglu) {
    int n = 40;
    gl_ctx c = {malloc(n * 4), rand_buf(n, 4), rand_buf(n, 2), rand_buf(n, 1), n};
    float *dg = calloc(n, 4), *du = calloc(n, 4);
    /* values against the formula in double */
    gelu_loss(&c);
    for (int i = 0; i < n; i++) ck_assert(fabs(c.out[i] - gelu_ref(c.g[i])) < 1e-6 * (1 + fabs(c.g[i])));
    geglu_loss(&c);
    for (int i = 0; i < n; i++) ck_assert(fabs(c.out[i] - gelu_ref(c.g[i]) * c.u[i]) < 1e-6 * (1 + fabs(c.g[i])) * 2);
    gelu_backward(dg, c.r, c.g, n, NT);
    check_grad("dinp(gelu)", c.g, n, dg, gelu_loss, &c, 1e-3f, 2e-3);
    memset(dg, 0, n * 4);
    geglu_backward(dg, du, c.r, c.g, c.u, n, NT);
    check_grad("dgate", c.g, n, dg, geglu_loss, &c, 1e-3f, 2e-3);
    check_grad("dup", c.u, n, du, geglu_loss, &c, 1e-3f, 2e-3);
    free(c.out); free(c.g); free(c.u); free(c.r); free(dg); free(du);
    /* 1 vs 3 threads */
    n = 1001;
    float *g = rand_buf(n, 4), *u = rand_buf(n, 2), *r = rand_buf(n, 1), *res[2][5];
    for (int k = 0; k < 2; k++) {
        const int nt = k ? 3 : 1;
        float **o = res[k];
        for (int i = 0; i < 5; i++) o[i] = calloc(n, 4);
        gelu_forward(o[0], g, n, nt);
        gelu_backward(o[1], r, g, n, nt);
        geglu_forward(o[2], g, u, n, nt);
        geglu_backward(o[3], o[4], r, g, u, n, nt);
    }
    static const char *const what[5] = {"gelu", "dinp(gelu)", "geglu", "dgate", "dup"};
    for (int i = 0; i < 5; i++) {
        same_bits(what[i], res[0][i], res[1][i], (size_t)n);
        free(res[0][i]);
        free(res[1][i]);
    }
    free(g); free(u); free(r);
}
END_TEST

/* ---- soft-cap ---- */
typedef struct { float *out, *x, *r; int n; float cap; } sc_ctx;
static double sc_loss(void *p) {
    sc_ctx *c = p;
    softcap_forward(c->out, c->x, c->n, c->cap, NT);
    return project(c->out, c->r, (size_t)c->n);
}
START_TEST(test_softcap) {
    int n = 40;
    sc_ctx c = {malloc(n * 4), rand_buf(n, 6), rand_buf(n, 1), n, 2.0f}; /* inputs to 3× the cap */
    float *dx = calloc(n, 4);
    sc_loss(&c);
    for (int i = 0; i < n; i++) ck_assert(fabs(c.out[i] - 2.0 * tanh(c.x[i] / 2.0)) < 1e-6);
    softcap_backward(dx, c.r, c.out, n, c.cap, NT);
    check_grad("dinp", c.x, n, dx, sc_loss, &c, 1e-3f, 2e-3);
    /* in place: the same bits */
    sc_loss(&c); /* check_grad left out at a perturbed x */
    float *y = malloc(n * 4);
    memcpy(y, c.x, n * 4);
    softcap_forward(y, y, n, c.cap, NT);
    ck_assert(memcmp(y, c.out, n * 4) == 0);
    free(y); free(c.out); free(c.x); free(c.r); free(dx);
    /* 1 vs 3 threads */
    n = 1001;
    float *x = rand_buf(n, 60), *r = rand_buf(n, 1), *res[2][2];
    for (int k = 0; k < 2; k++) {
        const int nt = k ? 3 : 1;
        res[k][0] = malloc(n * 4);
        res[k][1] = calloc(n, 4);
        softcap_forward(res[k][0], x, n, 30.0f, nt);
        softcap_backward(res[k][1], r, res[k][0], n, 30.0f, nt);
    }
    same_bits("softcap", res[0][0], res[1][0], (size_t)n);
    same_bits("dinp(softcap)", res[0][1], res[1][1], (size_t)n);
    free(res[0][0]); free(res[0][1]); free(res[1][0]); free(res[1][1]); free(x); free(r);
}
END_TEST

/* ---- SwiGLU and residual ---- */
typedef struct { float *out, *g, *u, *r; int n; } sw_ctx;
static double sw_loss(void *p) {
    sw_ctx *c = p;
    swiglu_forward(c->out, c->g, c->u, c->n, NT);
    return project(c->out, c->r, (size_t)c->n);
}
static double res_loss(void *p) {
    sw_ctx *c = p;
    residual_forward(c->out, c->g, c->u, c->n, NT);
    return project(c->out, c->r, (size_t)c->n);
}
START_TEST(test_swiglu_residual) {
    int n = 40;
    sw_ctx c = {malloc(n * 4), rand_buf(n, 4), rand_buf(n, 2), rand_buf(n, 1), n};
    float *dg = calloc(n, 4), *du = calloc(n, 4);
    swiglu_backward(dg, du, c.r, c.g, c.u, n, NT);
    check_grad("dgate", c.g, n, dg, sw_loss, &c, 1e-3f, 2e-3);
    check_grad("dup", c.u, n, du, sw_loss, &c, 1e-3f, 2e-3);
    memset(dg, 0, n * 4);
    memset(du, 0, n * 4);
    residual_backward(dg, du, c.r, n, NT);
    check_grad("da", c.g, n, dg, res_loss, &c, 1e-2f, 1e-3);
    check_grad("db", c.u, n, du, res_loss, &c, 1e-2f, 1e-3);
    free(c.out); free(c.g); free(c.u); free(c.r); free(dg); free(du);
}
END_TEST

/* ---- losses ---- */
typedef struct { float *s, *t; int32_t *tg; double *rows; int N, Vs, Vt, Vsh; float tau; bool rev; } loss_ctx;
static double ce_loss(void *p) {
    loss_ctx *c = p;
    return crossentropy_forward_backward(NULL, c->rows, c->s, c->tg, c->N, c->Vs, 1, NULL, NT);
}
static double kl_loss(void *p) {
    loss_ctx *c = p;
    return kl_forward_backward(NULL, c->rows, c->s, c->Vs, c->t, c->Vt, c->Vsh, c->N, c->tau, c->rev, 1, NULL, NT);
}
START_TEST(test_losses) {
    int N = 4, Vs = 10, Vt = 13;
    int32_t tg[4] = {3, -1, 9, 0};
    double rows[4];
    loss_ctx c = {rand_buf((size_t)N * Vs, 3), rand_buf((size_t)N * Vt, 3), tg, rows, N, Vs, Vt, Vs, 1, false};
    float *d = calloc((size_t)N * Vs, 4);
    /* cross-entropy: value by hand for row 0, row 1 skipped */
    double ce = crossentropy_forward_backward(d, rows, c.s, tg, N, Vs, 1, NULL, NT);
    double lse = 0;
    for (int i = 0; i < Vs; i++) lse += exp(c.s[i]);
    ck_assert(fabs(rows[0] - (log(lse) - c.s[3])) < 1e-9);
    ck_assert(rows[1] == 0.0 && fabs(ce - (rows[0] + rows[2] + rows[3])) < 1e-12);
    for (int i = 0; i < Vs; i++) ck_assert(d[Vs + i] == 0.0f);
    check_grad("dlogits(ce)", c.s, (size_t)N * Vs, d, ce_loss, &c, 1e-2f, 1e-3);
    /* KL both ways at two temperatures; the teacher's extra 3 ids are outside the comparison */
    for (int rev = 0; rev < 2; rev++)
        for (int ti = 0; ti < 2; ti++) {
            c.rev = rev;
            c.tau = ti ? 2.5f : 1.0f;
            memset(d, 0, (size_t)N * Vs * 4);
            double kl = kl_forward_backward(d, rows, c.s, Vs, c.t, Vt, Vs, N, c.tau, c.rev, 1, NULL, NT);
            ck_assert(kl > 0);
            check_grad(rev ? "dlogits(reverse kl)" : "dlogits(kl)", c.s, (size_t)N * Vs, d, kl_loss, &c, 1e-2f, 2e-3);
        }
    /* the kept exps (work) against the reference, on rows of a real vocabulary's size with logits
     * spread as a model's are, both ways, at two temperatures */
    {
        const int NB = 3, VB = 32000;
        float *sb = rand_buf((size_t)NB * VB, 3), *tb = rand_buf((size_t)NB * (VB + 5), 3);
        for (int i = 0; i < NB * VB; i++) sb[i] *= 4;
        float *d1 = calloc((size_t)NB * VB, 4), *d2 = calloc((size_t)NB * VB, 4);
        double *work = malloc(sizeof(double) * LOSS_WORK_DOUBLES(VB, NT)), r1[3], r2[3];
        for (int rev = 0; rev < 2; rev++)
            for (int ti = 0; ti < 2; ti++) {
                const float tau = ti ? 2.0f : 1.0f;
                memset(d1, 0, (size_t)NB * VB * 4);
                memset(d2, 0, (size_t)NB * VB * 4);
                const double ref = kl_forward_backward(d1, r1, sb, VB, tb, VB + 5, VB, NB, tau, rev, 0.5f, NULL, NT);
                const double got = kl_forward_backward(d2, r2, sb, VB, tb, VB + 5, VB, NB, tau, rev, 0.5f, work, NT);
                ck_assert_msg(ref > 0 && fabs(got - ref) <= 1e-12 * ref, "rev %d tau %g: %.17g vs %.17g", rev, tau, got, ref);
                for (int n = 0; n < NB; n++) ck_assert(fabs(r2[n] - r1[n]) <= 1e-12 * fabs(r1[n]));
                float big = 0;
                for (int i = 0; i < NB * VB; i++) big = fmaxf(big, fabsf(d1[i]));
                for (int i = 0; i < NB * VB; i++)
                    CK_ASSERT_QUIET(fabsf(d2[i] - d1[i]) <= 1e-6f * big, "rev %d: gradient %d %g vs %g", rev, i, d2[i], d1[i]);
                /* without dlogits: the same loss */
                ck_assert(kl_forward_backward(NULL, r2, sb, VB, tb, VB + 5, VB, NB, tau, rev, 0.5f, work, NT) == got);
            }
        /* the cross-entropy's kept exps against its reference */
        int32_t tgb[3] = {7, -1, VB - 1};
        memset(d1, 0, (size_t)NB * VB * 4);
        memset(d2, 0, (size_t)NB * VB * 4);
        const double ref = crossentropy_forward_backward(d1, r1, sb, tgb, NB, VB, 0.25f, NULL, NT);
        const double got = crossentropy_forward_backward(d2, r2, sb, tgb, NB, VB, 0.25f, work, NT);
        ck_assert_msg(ref > 0 && fabs(got - ref) <= 1e-12 * ref, "cross-entropy %.17g vs %.17g", got, ref);
        for (int i = 0; i < NB * VB; i++)
            CK_ASSERT_QUIET(fabsf(d2[i] - d1[i]) <= 1e-6f * 0.25f, "cross-entropy gradient %d %g vs %g", i, d2[i], d1[i]);
        free(sb); free(tb); free(d1); free(d2); free(work);
    }
    /* KL of a distribution with itself is 0 */
    float *same = malloc((size_t)N * Vt * 4);
    for (int n = 0; n < N; n++) memcpy(same + (size_t)n * Vt, c.s + (size_t)n * Vs, (size_t)Vs * 4);
    ck_assert(fabs(kl_forward_backward(NULL, rows, c.s, Vs, same, Vt, Vs, N, 2.0f, false, 1, NULL, NT)) < 1e-12);
    free(same); free(c.s); free(c.t); free(d);
}
END_TEST

/* ---- the distillation losses: JSD and TVD on dense logits, every kind on a teacher's top-k ---- */
typedef struct {
    float *s, *t;
    double *rows;
    int N, Vs, Vt, Vsh;
    distill_loss l;
    const teacher_topk *tk; /* NULL: dense */
} dl_ctx;
static double dl_loss(void *p) {
    dl_ctx *c = p;
    if (c->tk) return distill_topk_forward_backward(NULL, c->rows, c->s, c->Vs, c->tk, c->Vsh, c->N, &c->l, 1, NT);
    return distill_forward_backward(NULL, c->rows, c->s, c->Vs, c->t, c->Vt, c->Vsh, c->N, &c->l, 1, NULL, NT);
}

/* The k most likely of the first V ids of each teacher row at τ, as a teacher cache keeps them. */
static void topk_of(const float *t, int Vt, int V, int N, int k, float tau, int32_t *ids, float *logp, float *rest) {
    for (int n = 0; n < N; n++) {
        const float *r = t + (size_t)n * Vt;
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < V; i++) mx = fmax(mx, r[i] / tau);
        for (int i = 0; i < V; i++) sum += exp(r[i] / tau - mx);
        const double lse = mx + log(sum);
        bool used[64] = {false};
        for (int b = 0; b < k; b++) {
            int best = -1;
            for (int i = 0; i < V; i++)
                if (!used[i] && (best < 0 || r[i] > r[best])) best = i;
            used[best] = true;
            ids[n * k + b] = best;
            logp[n * k + b] = (float)(r[best] / tau - lse);
        }
        double other = 0;
        for (int i = 0; i < V; i++)
            if (!used[i]) other += exp(r[i] / tau - lse);
        rest[n] = other > 0 ? (float)log(other) : -INFINITY;
    }
}

START_TEST(test_distill_losses) {
    const int N = 3, Vs = 10, Vt = 12, V = 10;
    double rows[3], rows2[3];
    dl_ctx c = {rand_buf((size_t)N * Vs, 3), rand_buf((size_t)N * Vt, 3), rows, N, Vs, Vt, V, {DISTILL_JSD, 1.5f, 0.3f}, NULL};
    float *d = calloc((size_t)N * Vs, 4), *d2 = calloc((size_t)N * Vs, 4);
    static const char *const names[] = {"kl", "reverse kl", "jsd", "tvd"};
    for (int kind = DISTILL_KL; kind <= DISTILL_TVD; kind++) {
        c.l.kind = (distill_kind)kind;
        c.tk = NULL;
        memset(d, 0, (size_t)N * Vs * 4);
        const double dense = distill_forward_backward(d, rows, c.s, Vs, c.t, Vt, V, N, &c.l, 1, NULL, NT);
        ck_assert_msg(dense > 0 && isfinite(dense), "%s: loss %g", names[kind], dense);
        char what[64];
        snprintf(what, sizeof what, "dlogits(%s)", names[kind]);
        check_grad(what, c.s, (size_t)N * Vs, d, dl_loss, &c, 1e-2f, 3e-3);
        /* the teacher's top-V (every shared id) is the dense loss; its gradient too */
        int32_t ids[3 * 10];
        float logp[3 * 10], rest[3];
        topk_of(c.t, Vt, V, N, V, c.l.temperature, ids, logp, rest);
        teacher_topk all = {V, ids, logp, rest};
        memset(d2, 0, (size_t)N * Vs * 4);
        const double full = distill_topk_forward_backward(d2, rows2, c.s, Vs, &all, V, N, &c.l, 1, NT);
        ck_assert_msg(fabs(full - dense) < 1e-5 * dense, "%s: top-%d %.9g vs dense %.9g", names[kind], V, full, dense);
        for (int i = 0; i < N * Vs; i++) ck_assert_msg(fabsf(d2[i] - d[i]) < 1e-5f, "%s: gradient %d", names[kind], i);
        /* top-4 and the rest as one bucket: its own finite differences */
        int32_t ids4[3 * 4];
        float logp4[3 * 4], rest4[3];
        topk_of(c.t, Vt, V, N, 4, c.l.temperature, ids4, logp4, rest4);
        teacher_topk four = {4, ids4, logp4, rest4};
        c.tk = &four;
        memset(d2, 0, (size_t)N * Vs * 4);
        const double part = distill_topk_forward_backward(d2, rows2, c.s, Vs, &four, V, N, &c.l, 1, NT);
        ck_assert(part > 0 && isfinite(part));
        snprintf(what, sizeof what, "dlogits(%s, top-4)", names[kind]);
        check_grad(what, c.s, (size_t)N * Vs, d2, dl_loss, &c, 1e-2f, 3e-3);
        /* bucketing only merges: the divergence of the buckets is at most the full one */
        ck_assert_msg(part <= dense * (1 + 1e-9), "%s: top-4 %.9g above dense %.9g", names[kind], part, dense);
    }
    /* a distribution against itself: 0 for every kind */
    float *same = malloc((size_t)N * Vt * 4);
    for (int n = 0; n < N; n++) {
        memcpy(same + (size_t)n * Vt, c.s + (size_t)n * Vs, (size_t)Vs * 4);
        for (int i = Vs; i < Vt; i++) same[(size_t)n * Vt + i] = 0;
    }
    for (int kind = DISTILL_KL; kind <= DISTILL_TVD; kind++) {
        c.l.kind = (distill_kind)kind;
        ck_assert(fabs(distill_forward_backward(NULL, rows, c.s, Vs, same, Vt, V, N, &c.l, 1, NULL, NT)) < 1e-9);
    }
    free(same); free(c.s); free(c.t); free(d); free(d2);
}
END_TEST

/* ---- the whole model ---- */
typedef struct { train_model *tm; int32_t *tok, *tg; } model_ctx;
static double model_loss(void *p) {
    model_ctx *c = p;
    tm_forward(c->tm, c->tok);
    int N = c->tm->B * c->tm->T;
    double loss = crossentropy_forward_backward(NULL, c->tm->a.row_loss, c->tm->a.logits, c->tg, N,
                                                c->tm->cfg.hp.n_vocab, 1, NULL, NT) / N;
    /* with tm->dres_add (hidden-state alignment): plus Σ r · res[i] for each gradient r it adds */
    const size_t NC = (size_t)N * c->tm->cfg.hp.n_embd;
    if (c->tm->dres_add)
        for (int i = 0; i <= c->tm->cfg.hp.n_layer; i++)
            if (c->tm->dres_add[i]) loss += project(c->tm->a.res + i * NC, c->tm->dres_add[i], NC);
    return loss;
}
/* A tiny model of family `arch` (formats/arch.h): 2 layers of different FFN widths, GQA 4/2,
 * head size 4; sliding windows of 3 (the families that slide), soft-caps small enough to bend
 * (gemma2), partial rotary (phi2, stablelm), and rope factors where the family has them. */
static void model_case_full(const char *arch, bool tied, bool qkv_bias, bool rope_factors, int lora_rank, bool state_grad) {
    int n_ff[2] = {12, 8}; /* per-layer widths, as a pruned model has */
    float factors[2][2] = {{1.0f, 3.5f}, {1.5f, 0.75f}};
    const arch_desc *fam = arch_by_name(arch);
    ck_assert_ptr_nonnull(fam);
    const bool partial = fam->norm == NORM_LAYER; /* phi2, stablelm rotate part of each head */
    tm_config cfg = {.hp = {.n_vocab = 11, .n_embd = 8, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 4,
                            .n_rot = partial ? 2 : 4, .norm_eps = 1e-5f, .rope_freq_base = 10000.f,
                            .tied_output = tied, .n_swa = fam->swa != SWA_NONE ? 3 : 0,
                            .attn_softcap = fam->attn_softcap ? 1.5f : 0.f, .final_softcap = fam->final_softcap ? 2.f : 0.f,
                            .rope_freq_base_swa = fam->swa == SWA_5_TO_1 ? 1000.f : 0.f, .rope_attn_factor = 1.f,
                            .n_ctx_train = 64},
                     .n_ff = n_ff, .freq_scale = 1.f, .qkv_bias = qkv_bias};
    snprintf(cfg.hp.arch, sizeof cfg.hp.arch, "%s", arch);
    /* the rope factor tensors of the family: constants, not parameters */
    for (int i = 0; i < fam->n_globals && rope_factors && cfg.n_consts < TM_MAX_CONSTS; i++)
        if (fam->globals[i].when == WHEN_ROPE_FACTORS) {
            tm_const *k = &cfg.consts[cfg.n_consts];
            snprintf(k->name, sizeof k->name, "%s", fam->globals[i].gguf);
            k->n = cfg.hp.n_rot / 2;
            k->data = factors[cfg.n_consts++];
        }
    train_model tm;
    slmc_err err = {{0}};
    ck_assert_msg(tm_init_random(&tm, &cfg, 5, &err) == 0, "%s", err.msg);
    if (lora_rank) ck_assert_msg(tm_add_lora(&tm, lora_rank, 3.0f, 9, &err) == 0, "%s", err.msg);
    /* larger weights than the default 0.02 so every path carries signal (B too: not 0) */
    for (size_t i = 0; i < tm.n_params; i++) tm.params[i] += 0.3f * frand();
    int B = 2, T = 5, N = B * T;
    ck_assert_msg(tm_plan(&tm, B, T, &err) == 0, "%s", err.msg);
    int32_t tok[10], tg[10];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)((i * 7 + 3) % cfg.hp.n_vocab);
        tg[i] = (int32_t)((i * 5 + 1) % cfg.hp.n_vocab);
    }
    model_ctx c = {&tm, tok, tg};
    /* a gradient added to the residual stream after layer 1, as hidden-state alignment adds it */
    float *dres_add[3] = {NULL, NULL, NULL};
    if (state_grad) {
        dres_add[1] = rand_buf((size_t)N * cfg.hp.n_embd, 0.5f);
        tm.dres_add = dres_add;
    }
    model_loss(&c);
    memset(tm.a.dlogits, 0, sizeof(float) * (size_t)N * cfg.hp.n_vocab);
    /* the gradient through the kept exps (the finite differences go through the reference) */
    double *work = malloc(sizeof(double) * LOSS_WORK_DOUBLES(cfg.hp.n_vocab, NT));
    crossentropy_forward_backward(tm.a.dlogits, tm.a.row_loss, tm.a.logits, tg, N, cfg.hp.n_vocab, 1.0f / N, work, NT);
    free(work);
    tm_zero_grad(&tm);
    tm_backward(&tm, tok);
    float *grad = malloc(sizeof(float) * tm.n_params);
    memcpy(grad, tm.grads, sizeof(float) * tm.n_params);
    /* with adapters only they train: their gradients, through the frozen model */
    for (int i = lora_rank ? tm.n_base : 0; i < tm.n_tensors; i++) {
        const tm_param *p = &tm.tensors[i];
        /* head norms and LayerNorms over 4 to 8 values and soft-caps curve sharply: a step of
         * 3e-3 keeps the central difference's own error (of order eps^2 times the third
         * derivative) below the tolerance */
        check_grad(p->name, tm.params + p->offset, p->n, grad + p->offset, model_loss, &c, 3e-3f, 2e-2);
    }
    free(grad);
    free(dres_add[1]);
    tm.dres_add = NULL;
    tm_free(&tm);
}
static void model_case(const char *arch, bool tied, bool qkv_bias, bool rope_factors) {
    model_case_full(arch, tied, qkv_bias, rope_factors, 0, false);
}
static void model_case_lora(const char *arch, bool tied, bool qkv_bias, bool rope_factors, int lora_rank) {
    model_case_full(arch, tied, qkv_bias, rope_factors, lora_rank, false);
}

START_TEST(test_model_gradient) {
    model_case("llama", false, false, false);
    model_case("llama", true, false, true); /* tied, Llama 3's rope_freqs */
    model_case("qwen2", false, true, false);
    model_case("qwen3", true, false, false);  /* q/k head norms, NEOX rope */
    model_case("gemma", true, false, false);  /* GeGLU, embeddings x sqrt(n_embd) */
    model_case("gemma2", true, false, false); /* post-norms, soft-caps, sliding window on even layers */
    model_case("gemma3", true, false, false); /* q/k norms, post-norms, sliding layers with their own rope base */
    model_case("phi2", false, true, false);   /* LayerNorm + bias, parallel block, GELU FFN, biases, partial rotary */
    model_case("phi3", false, false, true);   /* fused qkv and gate_up, longrope factors, sliding window */
    model_case("stablelm", false, true, false); /* LayerNorm + bias, partial rotary, q/k/v biases */
    model_case_lora("qwen2", false, true, false, 2); /* LoRA adapters (rank 2) on the frozen matrices */
    model_case_lora("phi3", false, false, true, 3);  /* ... on fused qkv and gate_up */
    model_case_full("gemma2", true, false, false, 0, true); /* a hidden-state gradient after layer 1 */
}
END_TEST

int main(void) {
    Suite *s = suite_create("distill_ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 300); /* the whole-model gradients of ten families on a busy 2-core machine */
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_matmul);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_attention);
    tcase_add_test(tc, test_attention_ex_default);
    tcase_add_test(tc, test_attention_window);
    tcase_add_test(tc, test_attention_softcap);
    tcase_add_test(tc, test_attention_window_softcap);
    tcase_add_test(tc, test_layernorm);
    tcase_add_test(tc, test_gelu_geglu);
    tcase_add_test(tc, test_softcap);
    tcase_add_test(tc, test_swiglu_residual);
    tcase_add_test(tc, test_losses);
    tcase_add_test(tc, test_distill_losses);
    tcase_add_test(tc, test_model_gradient);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
