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
        ck_assert_msg(err < rtol, "%s[%zu]: analytic %.6g, finite difference %.6g", what, i, grad[i], num);
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
    kern_rope(ref, rot, c.cs + (7 % T) * rot / 2, c.sn + (7 % T) * rot / 2, neox);
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
    return crossentropy_forward_backward(NULL, c->rows, c->s, c->tg, c->N, c->Vs, 1, NT);
}
static double kl_loss(void *p) {
    loss_ctx *c = p;
    return kl_forward_backward(NULL, c->rows, c->s, c->Vs, c->t, c->Vt, c->Vsh, c->N, c->tau, c->rev, 1, NT);
}
START_TEST(test_losses) {
    int N = 4, Vs = 10, Vt = 13;
    int32_t tg[4] = {3, -1, 9, 0};
    double rows[4];
    loss_ctx c = {rand_buf((size_t)N * Vs, 3), rand_buf((size_t)N * Vt, 3), tg, rows, N, Vs, Vt, Vs, 1, false};
    float *d = calloc((size_t)N * Vs, 4);
    /* cross-entropy: value by hand for row 0, row 1 skipped */
    double ce = crossentropy_forward_backward(d, rows, c.s, tg, N, Vs, 1, NT);
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
            double kl = kl_forward_backward(d, rows, c.s, Vs, c.t, Vt, Vs, N, c.tau, c.rev, 1, NT);
            ck_assert(kl > 0);
            check_grad(rev ? "dlogits(reverse kl)" : "dlogits(kl)", c.s, (size_t)N * Vs, d, kl_loss, &c, 1e-2f, 2e-3);
        }
    /* KL of a distribution with itself is 0 */
    float *same = malloc((size_t)N * Vt * 4);
    for (int n = 0; n < N; n++) memcpy(same + (size_t)n * Vt, c.s + (size_t)n * Vs, (size_t)Vs * 4);
    ck_assert(fabs(kl_forward_backward(NULL, rows, c.s, Vs, same, Vt, Vs, N, 2.0f, false, 1, NT)) < 1e-12);
    free(same); free(c.s); free(c.t); free(d);
}
END_TEST

/* ---- the whole model ---- */
typedef struct { train_model *tm; int32_t *tok, *tg; } model_ctx;
static double model_loss(void *p) {
    model_ctx *c = p;
    tm_forward(c->tm, c->tok);
    int N = c->tm->B * c->tm->T;
    return crossentropy_forward_backward(NULL, c->tm->a.row_loss, c->tm->a.logits, c->tg, N, c->tm->cfg.hp.n_vocab, 1,
                                         NT) / N;
}
typedef enum { FAM_LLAMA, FAM_LLAMA3, FAM_QWEN2, FAM_QWEN3 } family;
static void model_case(bool tied, family fam) {
    int n_ff[2] = {12, 8}; /* per-layer widths, as a pruned model has */
    float rope_freqs[2] = {1.0f, 3.5f}; /* Llama 3's divisors of each rotated pair's frequency */
    const bool neox = fam == FAM_QWEN2 || fam == FAM_QWEN3;
    tm_config cfg = {.hp = {.n_vocab = 11, .n_embd = 8, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 4,
                            .n_rot = 4, .norm_eps = 1e-5f, .rope_freq_base = 10000.f, .tied_output = tied},
                     .n_ff = n_ff, .freq_scale = 1.f, .neox = neox, .qkv_bias = fam == FAM_QWEN2,
                     .qk_norm = fam == FAM_QWEN3, .rope_freqs = fam == FAM_LLAMA3 ? rope_freqs : NULL};
    static const char *const names[] = {"llama", "llama", "qwen2", "qwen3"};
    snprintf(cfg.hp.arch, sizeof cfg.hp.arch, "%s", names[fam]);
    train_model tm;
    slmc_err err = {{0}};
    ck_assert_msg(tm_init_random(&tm, &cfg, 5, &err) == 0, "%s", err.msg);
    /* larger weights than the default 0.02 so every path carries signal */
    for (size_t i = 0; i < tm.n_params; i++) tm.params[i] += 0.3f * frand();
    int B = 2, T = 5, N = B * T;
    ck_assert_msg(tm_plan(&tm, B, T, &err) == 0, "%s", err.msg);
    int32_t tok[10], tg[10];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)((i * 7 + 3) % cfg.hp.n_vocab);
        tg[i] = (int32_t)((i * 5 + 1) % cfg.hp.n_vocab);
    }
    model_ctx c = {&tm, tok, tg};
    model_loss(&c);
    memset(tm.a.dlogits, 0, sizeof(float) * (size_t)N * cfg.hp.n_vocab);
    crossentropy_forward_backward(tm.a.dlogits, tm.a.row_loss, tm.a.logits, tg, N, cfg.hp.n_vocab, 1.0f / N, NT);
    tm_zero_grad(&tm);
    tm_backward(&tm, tok);
    float *grad = malloc(sizeof(float) * tm.n_params);
    memcpy(grad, tm.grads, sizeof(float) * tm.n_params);
    for (int i = 0; i < tm.n_tensors; i++) {
        const tm_param *p = &tm.tensors[i];
        /* Qwen3's head norms (over 4 values here) curve sharply: a smaller step keeps the central
         * difference's own error (of order eps^2 times the third derivative) below the tolerance */
        check_grad(p->name, tm.params + p->offset, p->n, grad + p->offset, model_loss, &c,
                   fam == FAM_QWEN3 ? 3e-3f : 1e-2f, 2e-2);
    }
    free(grad);
    tm_free(&tm);
}
START_TEST(test_model_gradient) {
    model_case(false, FAM_LLAMA);
    model_case(true, FAM_LLAMA);
    model_case(false, FAM_QWEN2);
    model_case(true, FAM_LLAMA3); /* rope_freqs */
    model_case(true, FAM_QWEN3);  /* q/k head norms, NEOX rope */
}
END_TEST

int main(void) {
    Suite *s = suite_create("distill_ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_matmul);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_attention);
    tcase_add_test(tc, test_swiglu_residual);
    tcase_add_test(tc, test_losses);
    tcase_add_test(tc, test_model_gradient);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
