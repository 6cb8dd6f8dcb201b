/* test_llm.c - eval/llm, eval/perplexity, eval/eval_run and eval/generate: a tiny random
 * model in memory against a naive double-precision forward pass, batched vs token-by-token
 * evaluation, hooks, and perplexity / KL divergence / generation on the real files in
 * ../shared against llama.cpp's (and llama2.c's) figures. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_run.h"
#include "eval/generate.h"
#include "eval/llm.h"
#include "eval/perplexity.h"
#include "eval/tokenizer.h"
#include "codec/quants.h"
#include "codec/types.h"
#include "testutil.h"

/* books-22m, n_ctx 256, first 2 chunks of books-valid.txt, measured with this engine */
#define BOOKS_BF16_2 1218.9449
#define BOOKS_Q4KM_2 1215.0429

/* ===================================================================== a tiny model in memory */

typedef struct tiny {
    model m;
    int n_alloc;
} tiny;

static uint64_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* Add an F32 tensor of ne0 x ne1 random values of scale s (1-D when ne1 == 0), stored as
 * `type` (F32 or a quantized type, quantized from the random floats). */
static void add_tensor(tiny *t, const char *name, int64_t ne0, int64_t ne1, float s, float offset, int type) {
    model_tensor *mt = &t->m.tensors[t->m.n_tensors++];
    const int64_t rows = ne1 ? ne1 : 1;
    float *v = malloc(sizeof(float) * (size_t)(ne0 * rows));
    for (int64_t i = 0; i < ne0 * rows; ++i) v[i] = offset + s * frand();
    mt->name = strdup(name);
    mt->type = ne1 ? type : GGML_TYPE_F32;
    mt->n_dims = ne1 ? 2 : 1;
    mt->ne[0] = ne0;
    mt->ne[1] = rows;
    mt->ne[2] = mt->ne[3] = 1;
    mt->nbytes = type_nbytes(mt->type, ne0) * (uint64_t)rows;
    if (mt->type == GGML_TYPE_F32) {
        mt->data = (const uint8_t *)v;
    } else {
        uint8_t *q = malloc(mt->nbytes);
        quant_get(mt->type)->quantize_ref(v, q, ne0 * rows);
        free(v);
        mt->data = q;
    }
}

/* llama (or qwen2 with biases) with n_embd 64 (n_ff 256 so K-quant rows work when asked),
 * 4 heads of 16, 2 KV heads, 2 layers, vocab 300. */
static void tiny_make(tiny *t, const char *arch, bool tied, int wtype) {
    memset(t, 0, sizeof *t);
    rng = 12345;
    const int64_t E = wtype == GGML_TYPE_F32 ? 64 : 256, H = 4, HKV = 2, F = 256, V = 300, NL = 2;
    const int64_t hd = E / H;
    model_config *c = &t->m.cfg;
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->n_vocab = V; c->n_embd = E; c->n_ff = F; c->n_layer = NL; c->n_head = H; c->n_head_kv = HKV;
    c->head_dim = hd; c->n_rot = hd; c->rope_freq_base = 10000.f; c->norm_eps = 1e-5f; c->n_ctx_train = 64;
    c->tied_output = tied;
    t->m.path = strdup("tiny-in-memory");
    t->m.tensors = calloc(64, sizeof(model_tensor));
    const bool bias = strcmp(arch, "qwen2") == 0;
    add_tensor(t, "token_embd.weight", E, V, 1.0f, 0, wtype);
    for (int l = 0; l < NL; ++l) {
        char n[64];
#define T(s, a, b, sc, off) (snprintf(n, sizeof n, "blk.%d." s, l), add_tensor(t, n, a, b, sc, off, wtype))
        T("attn_norm.weight", E, 0, 0.2f, 1.0f);
        T("attn_q.weight", E, H * hd, 0.3f, 0);
        T("attn_k.weight", E, HKV * hd, 0.3f, 0);
        T("attn_v.weight", E, HKV * hd, 0.3f, 0);
        if (bias) {
            T("attn_q.bias", H * hd, 0, 0.5f, 0);
            T("attn_k.bias", HKV * hd, 0, 0.5f, 0);
            T("attn_v.bias", HKV * hd, 0, 0.5f, 0);
        }
        T("attn_output.weight", H * hd, E, 0.2f, 0);
        T("ffn_norm.weight", E, 0, 0.2f, 1.0f);
        T("ffn_gate.weight", E, F, 0.2f, 0);
        T("ffn_up.weight", E, F, 0.2f, 0);
        T("ffn_down.weight", F, E, 0.2f, 0);
#undef T
    }
    add_tensor(t, "output_norm.weight", E, 0, 0.2f, 1.0f, wtype);
    if (!tied) add_tensor(t, "output.weight", E, V, 0.3f, 0, wtype);
}

static void tiny_free(tiny *t) {
    for (uint64_t i = 0; i < t->m.n_tensors; ++i) {
        free(t->m.tensors[i].name);
        free((void *)t->m.tensors[i].data);
    }
    free(t->m.tensors);
    free(t->m.path);
}

/* ===================================================================== naive double forward */

static const double *W(const model *m, const char *name) {
    static double buf[8][256 * 300];
    static int slot = 0;
    const int64_t ti = model_find(m, name);
    ck_assert_msg(ti >= 0, "%s", name);
    const model_tensor *t = &m->tensors[ti];
    double *out = buf[slot++ % 8];
    const float *f = (const float *)t->data;
    for (int64_t i = 0; i < t->ne[0] * t->ne[1]; ++i) out[i] = f[i];
    return out;
}

static const double *Wopt(const model *m, const char *name) { return model_find(m, name) < 0 ? NULL : W(m, name); }

/* Layer tensors by suffix ("attn_q.weight"); each call formats its own name. */
static const double *WL(const model *m, int l, const char *s) {
    char n[64];
    snprintf(n, sizeof n, "blk.%d.%s", l, s);
    return W(m, n);
}
static const double *WLO(const model *m, int l, const char *s) {
    char n[64];
    snprintf(n, sizeof n, "blk.%d.%s", l, s);
    return Wopt(m, n);
}

static void d_rmsnorm(double *out, const double *x, const double *w, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

/* out[r] = sum_i w[r*n_in + i] x[i] (+ b[r]) */
static void d_matvec(double *out, const double *w, const double *b, const double *x, int64_t n_in, int64_t n_out) {
    for (int64_t r = 0; r < n_out; ++r) {
        double s = b ? b[r] : 0;
        for (int64_t i = 0; i < n_in; ++i) s += w[r * n_in + i] * x[i];
        out[r] = s;
    }
}

static void d_rope(double *x, int64_t hd, int64_t pos, double base, bool neox) {
    for (int64_t i = 0; i < hd / 2; ++i) {
        const double th = (double)pos * pow(base, -2.0 * (double)i / (double)hd);
        const int64_t a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
        const double x0 = x[a], x1 = x[b];
        x[a] = x0 * cos(th) - x1 * sin(th);
        x[b] = x0 * sin(th) + x1 * cos(th);
    }
}

/* Full recompute, no cache: logits [T][V]. Written from the textbook formulas. */
static void naive_forward(const model *m, const int32_t *tok, int T, double *logits) {
    const model_config *c = &m->cfg;
    const int64_t E = c->n_embd, H = c->n_head, HKV = c->n_head_kv, hd = c->head_dim, F = c->n_ff, V = c->n_vocab;
    const bool neox = strcmp(c->arch, "qwen2") == 0;
    double *x = calloc((size_t)(T * E), sizeof(double)), *xn = malloc(sizeof(double) * (size_t)E);
    double *q = malloc(sizeof(double) * (size_t)(T * H * hd)), *k = malloc(sizeof(double) * (size_t)(T * HKV * hd));
    double *v = malloc(sizeof(double) * (size_t)(T * HKV * hd)), *att = malloc(sizeof(double) * (size_t)(T * H * hd));
    double *g = malloc(sizeof(double) * (size_t)F), *u = malloc(sizeof(double) * (size_t)F), *o = malloc(sizeof(double) * (size_t)E);
    const double *emb = W(m, "token_embd.weight");
    for (int t = 0; t < T; ++t)
        for (int64_t i = 0; i < E; ++i) x[t * E + i] = emb[tok[t] * E + i];
    for (int l = 0; l < c->n_layer; ++l) {
#define WL(s) WL(m, l, s)
#define WLO(s) WLO(m, l, s)
        for (int t = 0; t < T; ++t) {
            d_rmsnorm(xn, x + t * E, WL("attn_norm.weight"), E, c->norm_eps);
            d_matvec(q + t * H * hd, WL("attn_q.weight"), WLO("attn_q.bias"), xn, E, H * hd);
            d_matvec(k + t * HKV * hd, WL("attn_k.weight"), WLO("attn_k.bias"), xn, E, HKV * hd);
            d_matvec(v + t * HKV * hd, WL("attn_v.weight"), WLO("attn_v.bias"), xn, E, HKV * hd);
            for (int64_t h = 0; h < H; ++h) d_rope(q + t * H * hd + h * hd, hd, t, c->rope_freq_base, neox);
            for (int64_t h = 0; h < HKV; ++h) d_rope(k + t * HKV * hd + h * hd, hd, t, c->rope_freq_base, neox);
        }
        for (int t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h) {
                const int64_t kh = h / (H / HKV);
                double s[64], max = -1e300, sum = 0;
                for (int j = 0; j <= t; ++j) {
                    double d = 0;
                    for (int64_t i = 0; i < hd; ++i) d += q[t * H * hd + h * hd + i] * k[j * HKV * hd + kh * hd + i];
                    s[j] = d / sqrt((double)hd);
                    max = fmax(max, s[j]);
                }
                for (int j = 0; j <= t; ++j) sum += (s[j] = exp(s[j] - max));
                for (int64_t i = 0; i < hd; ++i) {
                    double a = 0;
                    for (int j = 0; j <= t; ++j) a += s[j] / sum * v[j * HKV * hd + kh * hd + i];
                    att[t * H * hd + h * hd + i] = a;
                }
            }
        for (int t = 0; t < T; ++t) {
            d_matvec(o, WL("attn_output.weight"), NULL, att + t * H * hd, H * hd, E);
            for (int64_t i = 0; i < E; ++i) x[t * E + i] += o[i];
            d_rmsnorm(xn, x + t * E, WL("ffn_norm.weight"), E, c->norm_eps);
            d_matvec(g, WL("ffn_gate.weight"), NULL, xn, E, F);
            d_matvec(u, WL("ffn_up.weight"), NULL, xn, E, F);
            for (int64_t i = 0; i < F; ++i) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            d_matvec(o, WL("ffn_down.weight"), NULL, g, F, E);
            for (int64_t i = 0; i < E; ++i) x[t * E + i] += o[i];
        }
#undef WL
#undef WLO
    }
    const double *out = model_find(m, "output.weight") >= 0 ? W(m, "output.weight") : W(m, "token_embd.weight");
    const double *onorm = W(m, "output_norm.weight");
    double *outw = malloc(sizeof(double) * (size_t)(E * V));
    memcpy(outw, out, sizeof(double) * (size_t)(E * V)); /* W() reuses its buffers */
    for (int t = 0; t < T; ++t) {
        d_rmsnorm(xn, x + t * E, onorm, E, c->norm_eps);
        d_matvec(logits + t * V, outw, NULL, xn, E, V);
    }
    free(outw);
    free(x); free(xn); free(q); free(k); free(v); free(att); free(g); free(u); free(o);
}

static const int32_t TOKENS[12] = {1, 17, 299, 42, 42, 0, 150, 7, 8, 9, 288, 3};

/* llm_eval with F32 weights and F32 attention vs the double forward: ~1e-5 relative, with the
 * context's default matmul loops (KERN_AUTO) and with the scalar ones. */
static void check_vs_naive(const char *arch, bool tied) {
    tiny t;
    tiny_make(&t, arch, tied, GGML_TYPE_F32);
    llm_model lm;
    llm_context ctx;
    slmc_err err = {0};
    ck_assert_msg(llm_model_init(&lm, &t.m, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(lm.rope_neox, strcmp(arch, "qwen2") == 0);
    ck_assert_msg(llm_context_init(&ctx, &lm, 32, 32, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ctx.impl, KERN_AUTO);
    ctx.f16_attention = false;
    const int T = 12;
    const int64_t V = lm.cfg.n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)(T * V));
    double *want = malloc(sizeof(double) * (size_t)(T * V));
    naive_forward(&t.m, TOKENS, T, want);
    const kern_impl impls[] = {KERN_AUTO, KERN_SCALAR};
    for (size_t k = 0; k < sizeof impls / sizeof impls[0]; ++k) {
        ctx.impl = impls[k];
        ck_assert_msg(llm_eval(&ctx, TOKENS, T, 0, logits, &err) == 0, "%s", err.msg);
        double max_abs = 0, max_diff = 0;
        for (int64_t i = 0; i < T * V; ++i) {
            max_abs = fmax(max_abs, fabs(want[i]));
            max_diff = fmax(max_diff, fabs(want[i] - logits[i]));
        }
        ck_assert_double_gt(max_abs, 0.1); /* logits are not degenerate */
        ck_assert_msg(max_diff <= 1e-4 * max_abs, "%s impl %d: max diff %g of max %g", arch, impls[k], max_diff,
                      max_abs);
    }
    free(logits); free(want);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tiny_free(&t);
}

START_TEST(test_llama_vs_naive) { check_vs_naive("llama", false); }
END_TEST
START_TEST(test_qwen2_tied_vs_naive) { check_vs_naive("qwen2", true); }
END_TEST

/* Batched evaluation == token-by-token evaluation with the KV cache == split into steps of
 * 5, exactly: every dot is computed the same way whatever the batch. Also for quantized
 * weights and F16 attention (the default). */
static void check_batch_equivalence(int wtype) {
    tiny t;
    tiny_make(&t, "llama", false, wtype);
    llm_model lm;
    llm_context a, b, c;
    slmc_err err = {0};
    ck_assert_msg(llm_model_init(&lm, &t.m, &err) == 0, "%s", err.msg);
    ck_assert_msg(llm_context_init(&a, &lm, 16, 16, &err) == 0, "%s", err.msg);
    ck_assert_msg(llm_context_init(&b, &lm, 16, 16, &err) == 0, "%s", err.msg);
    ck_assert_msg(llm_context_init(&c, &lm, 16, 5, &err) == 0, "%s", err.msg);
    const int T = 12;
    const int64_t V = lm.cfg.n_vocab;
    float *all = malloc(sizeof(float) * (size_t)(T * V)), *one = malloc(sizeof(float) * (size_t)(T * V));
    float *split = malloc(sizeof(float) * (size_t)(T * V));
    ck_assert(llm_eval(&a, TOKENS, T, 0, all, &err) == 0);
    for (int i = 0; i < T; ++i) ck_assert_msg(llm_eval(&b, TOKENS + i, 1, i, one + i * V, &err) == 0, "%s", err.msg);
    ck_assert(llm_eval(&c, TOKENS, T, 0, split, &err) == 0);
    ck_assert_mem_eq(all, one, sizeof(float) * (size_t)(T * V));
    ck_assert_mem_eq(all, split, sizeof(float) * (size_t)(T * V));
    /* only the last rows; only rows 4..8, also across steps of 5 */
    float *last = malloc(sizeof(float) * (size_t)(5 * V));
    ck_assert(llm_eval_out(&a, TOKENS, T, 0, T - 3, last, &err) == 0);
    ck_assert_mem_eq(last, all + (T - 3) * V, sizeof(float) * (size_t)(3 * V));
    ck_assert(llm_eval_rows(&c, TOKENS, T, 0, 4, 9, last, &err) == 0);
    ck_assert_mem_eq(last, all + 4 * V, sizeof(float) * (size_t)(5 * V));
    ck_assert_int_eq(llm_eval_rows(&c, TOKENS, T, 0, 5, 4, last, &err), -1);
    ck_assert_int_eq(llm_eval_rows(&c, TOKENS, T, 0, 0, T + 1, last, &err), -1);
    /* bad requests fail with a message */
    ck_assert_int_eq(llm_eval(&a, TOKENS, T, 10, all, &err), -1); /* beyond n_ctx 16 */
    ck_assert(strstr(err.msg, "exceed") != NULL);
    const int32_t bad = 300;
    ck_assert_int_eq(llm_eval(&a, &bad, 1, 0, all, &err), -1);
    ck_assert(strstr(err.msg, "outside the vocabulary") != NULL);
    free(all); free(one); free(split); free(last);
    llm_context_free(&a); llm_context_free(&b); llm_context_free(&c);
    llm_model_free(&lm);
    tiny_free(&t);
}

START_TEST(test_batch_equivalence_f32) { check_batch_equivalence(GGML_TYPE_F32); }
END_TEST
START_TEST(test_batch_equivalence_q4_K) { check_batch_equivalence(GGML_TYPE_Q4_K); }
END_TEST
START_TEST(test_batch_equivalence_q8_0) { check_batch_equivalence(GGML_TYPE_Q8_0); }
END_TEST

/* ===================================================================== hooks */

typedef struct hook_log {
    int calls;
    char names[64][48];
    int layers[64];
    double first_sum;       /* sum of x of the first call */
    double q_sum, k_sum;    /* inputs of blk.0.attn_q and attn_k (the same activations) */
    int ffn_calls, attn_calls, out_calls;
    int fail_at;            /* return non-zero at this call (-1 never) */
} hook_log;

static double sum_of(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
}

static int on_matmul(void *ud, const char *w, int64_t tensor, int layer, const float *x, int n_tokens, int64_t n_in) {
    hook_log *h = ud;
    ck_assert_int_ge(tensor, 0);
    if (h->calls < 64) {
        snprintf(h->names[h->calls], sizeof h->names[0], "%s", w);
        h->layers[h->calls] = layer;
    }
    if (strcmp(w, "blk.0.attn_q.weight") == 0) h->q_sum = sum_of(x, n_tokens * n_in);
    if (strcmp(w, "blk.0.attn_k.weight") == 0) h->k_sum = sum_of(x, n_tokens * n_in);
    return h->calls++ == h->fail_at;
}
static int on_attn(void *ud, int layer, const float *x, int n, int64_t nh, int64_t hd) {
    (void)layer; (void)x; (void)n;
    ck_assert_int_eq(nh * hd, 64);
    ((hook_log *)ud)->attn_calls++;
    return 0;
}
static int on_ffn(void *ud, int layer, const float *x, int n, int64_t nff) {
    (void)layer; (void)x; (void)n;
    ck_assert_int_eq(nff, 256);
    ((hook_log *)ud)->ffn_calls++;
    return 0;
}
static int on_out(void *ud, int layer, const float *x, int n, int64_t ne) {
    (void)layer; (void)x; (void)n; (void)ne;
    ((hook_log *)ud)->out_calls++;
    return 0;
}

START_TEST(test_hooks) {
    tiny t;
    tiny_make(&t, "llama", false, GGML_TYPE_F32);
    llm_model lm;
    llm_context ctx;
    slmc_err err = {0};
    ck_assert(llm_model_init(&lm, &t.m, &err) == 0);
    ck_assert(llm_context_init(&ctx, &lm, 16, 16, &err) == 0);
    hook_log log = {.fail_at = -1};
    llm_hooks hooks = {.ud = &log, .matmul_input = on_matmul, .attn_heads = on_attn, .ffn_act = on_ffn, .layer_out = on_out};
    llm_set_hooks(&ctx, &hooks);
    float *logits = malloc(sizeof(float) * (size_t)(4 * lm.cfg.n_vocab));
    ck_assert(llm_eval_out(&ctx, TOKENS, 6, 0, 2, logits, &err) == 0);
    ck_assert_int_eq(log.calls, 2 * 7 + 1); /* 7 matrices per layer + the output head */
    ck_assert_str_eq(log.names[0], "blk.0.attn_q.weight");
    ck_assert_str_eq(log.names[3], "blk.0.attn_output.weight");
    ck_assert_str_eq(log.names[6], "blk.0.ffn_down.weight");
    ck_assert_str_eq(log.names[7], "blk.1.attn_q.weight");
    ck_assert_int_eq(log.layers[7], 1);
    ck_assert_str_eq(log.names[14], "output.weight");
    ck_assert_int_eq(log.layers[14], -1);
    ck_assert_double_eq(log.q_sum, log.k_sum);
    ck_assert_double_ne(log.q_sum, 0);
    ck_assert_int_eq(log.attn_calls, 2);
    ck_assert_int_eq(log.ffn_calls, 2);
    ck_assert_int_eq(log.out_calls, 2);
    /* a failing hook stops the evaluation with an error naming the weight */
    log = (hook_log){.fail_at = 4};
    ck_assert_int_eq(llm_eval(&ctx, TOKENS, 6, 0, logits, &err), -1);
    ck_assert(strstr(err.msg, "blk.0.ffn_gate.weight") != NULL);
    free(logits);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tiny_free(&t);
}
END_TEST

START_TEST(test_model_errors) {
    tiny t;
    tiny_make(&t, "gpt2", false, GGML_TYPE_F32);
    llm_model lm;
    slmc_err err = {0};
    ck_assert_int_eq(llm_model_init(&lm, &t.m, &err), -1);
    ck_assert(strstr(err.msg, "gpt2") != NULL);
    snprintf(t.m.cfg.arch, sizeof t.m.cfg.arch, "llama");
    snprintf(t.m.cfg.rope_scaling, sizeof t.m.cfg.rope_scaling, "yarn");
    ck_assert_int_eq(llm_model_init(&lm, &t.m, &err), -1);
    ck_assert(strstr(err.msg, "yarn") != NULL);
    t.m.cfg.rope_scaling[0] = 0;
    free(t.m.tensors[2].name); /* blk.0.attn_q.weight */
    t.m.tensors[2].name = strdup("blk.0.attn_qq.weight");
    ck_assert_int_eq(llm_model_init(&lm, &t.m, &err), -1);
    ck_assert_msg(strstr(err.msg, "blk.0.attn_q.weight is missing") != NULL, "%s", err.msg);
    tiny_free(&t);
}
END_TEST

/* Linear RoPE scaling divides positions by the factor: a model with factor 2 at positions
 * 0, 2, 4 ... equals one without scaling at 0, 1, 2 ... (checked through the tables). */
START_TEST(test_rope_linear_scaling) {
    tiny t;
    tiny_make(&t, "llama", false, GGML_TYPE_F32);
    snprintf(t.m.cfg.rope_scaling, sizeof t.m.cfg.rope_scaling, "linear");
    t.m.cfg.rope_scaling_factor = 2.f;
    llm_model lm;
    llm_context ctx;
    slmc_err err = {0};
    ck_assert(llm_model_init(&lm, &t.m, &err) == 0);
    ck_assert_float_eq(lm.freq_scale, 0.5f);
    ck_assert(llm_context_init(&ctx, &lm, 8, 8, &err) == 0);
    const int64_t h = lm.cfg.n_rot / 2;
    for (int i = 0; i < h; ++i) {
        const double th = 3.0 / 2.0 * pow(10000.0, -2.0 * i / (double)lm.cfg.n_rot); /* position 3 / 2 */
        ck_assert_double_le(fabs(ctx.rope_cos[3 * h + i] - cos(th)), 1e-6);
    }
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tiny_free(&t);
}
END_TEST

/* ===================================================================== real files */

/* Tokens of a ../shared text with the model's tokenizer (eval/tokenizer.h), BOS added. */
static int32_t *tokenize_file(const model *m, const char *path, size_t *n, int32_t *bos) {
    size_t len;
    uint8_t *text = slurp(path, &len);
    ck_assert_ptr_nonnull(text);
    tokenizer *tok;
    slmc_err err = {0};
    ck_assert_msg(tokenizer_create(&tok, &m->kv, &err) == 0, "%s", err.msg);
    int32_t *ids;
    ck_assert_msg(tokenizer_encode(tok, (const char *)text, len, true, false, &ids, n, &err) == 0, "%s", err.msg);
    *bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1;
    tokenizer_free(tok);
    free(text);
    return ids;
}

/* stories260K (llama.cpp's conversion) on tinystories_sample.txt, n_ctx 128: all 14 chunks,
 * through eval_run (the whole `slmc eval`); llama-perplexity printed 6.6856 +/- 0.71768
 * (../shared/reference/ppl-stories260K.json). */
static int count_chunks(void *ud, int done, int n_chunk, double ppl, double seconds) {
    (void)n_chunk, (void)seconds;
    ck_assert(isfinite(ppl) && ppl > 0);
    *(int *)ud = done;
    return 0;
}

START_TEST(test_ppl_stories260K) {
    char *mp = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    char *tp = SHARED_OR_SKIP("text/tinystories_sample.txt");
    slmc_err err = {0};
    model m;
    llm_model lm;
    ck_assert_msg(model_open(&m, mp, NULL, &err) == 0 && llm_model_init(&lm, &m, &err) == 0, "%s", err.msg);
    ck_assert(lm.output.tensor != lm.tok_embd.tensor); /* this converter stores output.weight */
    llm_model_free(&lm);
    model_close(&m);
    int seen = 0;
    const eval_opts o = {.model = mp, .text = tp, .n_ctx = 128, .max_chunks = -1};
    const eval_hooks h = {.ud = &seen, .chunk_done = count_chunks};
    eval_result r;
    ck_assert_msg(eval_run(&o, &h, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(seen, 14);
    ck_assert_int_eq(r.n_chunk, 14);
    ck_assert_int_eq(r.n_ctx, 128);
    ck_assert_int_eq(r.stats.count, 14 * 63);
    ck_assert(!r.have_kld);
    ck_assert(r.n_tokens >= 14 * 128);
    ck_assert_msg(fabs(r.ppl / 6.6856 - 1) < 0.001, "PPL %.4f, llama.cpp 6.6856", r.ppl);
    ck_assert_msg(fabs(r.ppl_stderr / 0.71768 - 1) < 0.01, "stderr %.5f, llama.cpp 0.71768", r.ppl_stderr);
    fprintf(stderr, "stories260K tinystories n_ctx 128: PPL %.4f +/- %.5f (llama.cpp 6.6856 +/- 0.71768)\n", r.ppl,
            r.ppl_stderr);
    free(mp);
    free(tp);
}
END_TEST

/* books-22m BF16 and Q4_K_M, n_ctx 256, the first 2 chunks of books-valid.txt, side by side:
 * regression values measured with this engine (the full 100-chunk runs match llama.cpp's
 * 300.429 / 300.8257 within 0.1%; see docs/eval-engine.md), and the KLD of Q4_K_M vs BF16. */
START_TEST(test_books22m_two_chunks) {
    char *bp = SHARED_OR_SKIP("reference/books-22m-BF16.gguf");
    char *qp = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *tp = SHARED_OR_SKIP("text/books-valid.txt");
    model mb, mq;
    slmc_err err = {0};
    ck_assert_msg(model_open(&mb, bp, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&mq, qp, NULL, &err) == 0, "%s", err.msg);
    size_t n;
    int32_t bos;
    int32_t *ids = tokenize_file(&mb, tp, &n, &bos);
    llm_model lb, lq;
    llm_context cb, cq;
    ck_assert(llm_model_init(&lb, &mb, &err) == 0 && llm_model_init(&lq, &mq, &err) == 0);
    ck_assert(llm_context_init(&cb, &lb, 256, 256, &err) == 0 && llm_context_init(&cq, &lq, 256, 256, &err) == 0);
    const int ns = ppl_scored(256);
    float *l1 = malloc(sizeof(float) * (size_t)ns * (size_t)lb.cfg.n_vocab);
    float *l2 = malloc(sizeof(float) * (size_t)ns * (size_t)lb.cfg.n_vocab);
    ppl_stats sb = {0}, sq = {0};
    kld_stats ks = {0};
    for (int c = 0; c < 2; ++c) {
        const int32_t *chunk = ids + c * 256;
        ck_assert_msg(ppl_eval_chunk(&cb, chunk, 256, bos, l1, &err) == 0, "%s", err.msg);
        ck_assert_msg(ppl_eval_chunk(&cq, chunk, 256, bos, l2, &err) == 0, "%s", err.msg);
        ppl_accumulate(&sb, l1, lb.cfg.n_vocab, chunk, 256);
        ppl_accumulate(&sq, l2, lb.cfg.n_vocab, chunk, 256);
        ck_assert(kld_compare(&ks, l2, l1, ns, lb.cfg.n_vocab, chunk + ppl_first(256) + 1, &err) == 0);
    }
    kld_summary k;
    ck_assert(kld_summarize(&ks, &k, &err) == 0);
    fprintf(stderr, "books-22m 2 chunks: BF16 %.4f, Q4_K_M %.4f, KLD %.6f, same top %.4f\n", ppl_value(&sb),
            ppl_value(&sq), k.kld_mean, k.same_top);
    ck_assert_int_eq(sb.count, 2 * 127);
    ck_assert_msg(fabs(ppl_value(&sb) / BOOKS_BF16_2 - 1) < 5e-4, "BF16 2-chunk PPL %.4f", ppl_value(&sb));
    ck_assert_msg(fabs(ppl_value(&sq) / BOOKS_Q4KM_2 - 1) < 5e-4, "Q4_K_M 2-chunk PPL %.4f", ppl_value(&sq));
    /* the base PPL seen through the compressed rows equals the direct one to ~1e-4 */
    ck_assert_double_le(fabs(k.ppl_base / ppl_value(&sb) - 1), 1e-3);
    ck_assert_double_le(fabs(k.ppl / ppl_value(&sq) - 1), 1e-6);
    /* llama.cpp over 100 chunks: KLD 0.000677, same top 97.5%; two chunks are noisier */
    ck_assert_double_gt(k.kld_mean, 0.0002);
    ck_assert_double_lt(k.kld_mean, 0.003);
    ck_assert_double_gt(k.same_top, 0.93);
    char report[4096];
    ck_assert_int_gt(kld_report(&k, report, sizeof report), 0);
    ck_assert(strstr(report, "Mean    KLD:") && strstr(report, "Same top p:") && strstr(report, "99.9%   KLD:"));
    ck_assert_int_eq(kld_report(&k, report, 10), -1);
    kld_stats_free(&ks);
    free(l1); free(l2); free(ids);
    llm_context_free(&cb); llm_context_free(&cq);
    llm_model_free(&lb); llm_model_free(&lq);
    model_close(&mb); model_close(&mq);
    free(bp); free(qp); free(tp);
}
END_TEST

/* Issue #12: a context's per-thread attention scratch is sized by its own thread count, not
 * by OpenMP's global one. A context made while OpenMP runs 1 thread, then used after
 * omp_set_num_threads(8), must neither write past its scratch (ASan) nor change a bit of its
 * logits. */
START_TEST(test_threads_raised_after_init) {
    tiny t;
    tiny_make(&t, "llama", false, GGML_TYPE_F32);
    llm_model lm;
    llm_context ctx;
    slmc_err err = {0};
    const int keep = omp_get_max_threads();
    ck_assert_msg(llm_model_init(&lm, &t.m, &err) == 0, "%s", err.msg);
    omp_set_num_threads(1);
    ck_assert_msg(llm_context_init(&ctx, &lm, 64, 64, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ctx.n_threads, 1);
    enum { T = 64 }; /* T * n_head = 256 attention rows per layer: every thread gets some */
    int32_t tok[T];
    for (int i = 0; i < T; ++i) tok[i] = (int32_t)((i * 37 + 11) % 300);
    const size_t bytes = sizeof(float) * (size_t)T * (size_t)lm.cfg.n_vocab;
    float *one = malloc(bytes), *many = malloc(bytes);
    ck_assert_msg(llm_eval(&ctx, tok, T, 0, one, &err) == 0, "%s", err.msg);
    omp_set_num_threads(8);
    for (int rep = 0; rep < 3; ++rep) { /* a fresh sequence each time (pos0 = 0) */
        ck_assert_msg(llm_eval(&ctx, tok, T, 0, many, &err) == 0, "%s", err.msg);
        ck_assert_mem_eq(one, many, bytes);
    }
    ck_assert_int_eq(ctx.n_threads, 1); /* still the context's own count */
    omp_set_num_threads(keep);
    free(one); free(many);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tiny_free(&t);
}
END_TEST

/* llm_context_set_threads: more or fewer threads than at init, the same logits bit for bit;
 * 0 means OpenMP's default; a negative count fails and leaves the context as it was. */
START_TEST(test_context_set_threads) {
    tiny t;
    tiny_make(&t, "llama", false, GGML_TYPE_Q8_0);
    llm_model lm;
    llm_context ctx;
    slmc_err err = {0};
    const int keep = omp_get_max_threads();
    ck_assert_msg(llm_model_init(&lm, &t.m, &err) == 0, "%s", err.msg);
    omp_set_num_threads(2);
    ck_assert_msg(llm_context_init(&ctx, &lm, 32, 32, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ctx.n_threads, 2);
    enum { T = 32 };
    int32_t tok[T];
    for (int i = 0; i < T; ++i) tok[i] = (int32_t)((i * 53 + 5) % 300);
    const size_t bytes = sizeof(float) * (size_t)T * (size_t)lm.cfg.n_vocab;
    float *want = malloc(bytes), *got = malloc(bytes);
    ck_assert_msg(llm_eval(&ctx, tok, T, 0, want, &err) == 0, "%s", err.msg);
    const int counts[] = {1, 7, 3};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; ++i) {
        ck_assert_msg(llm_context_set_threads(&ctx, counts[i], &err) == 0, "%s", err.msg);
        ck_assert_int_eq(ctx.n_threads, counts[i]);
        ck_assert_msg(llm_eval(&ctx, tok, T, 0, got, &err) == 0, "%s", err.msg);
        ck_assert_mem_eq(want, got, bytes);
    }
    omp_set_num_threads(5);
    ck_assert_msg(llm_context_set_threads(&ctx, 0, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ctx.n_threads, 5);
    ck_assert_int_eq(llm_context_set_threads(&ctx, -1, &err), -1);
    ck_assert(strstr(err.msg, "thread count") != NULL);
    ck_assert_int_eq(ctx.n_threads, 5);
    ck_assert_msg(llm_eval(&ctx, tok, T, 0, got, &err) == 0, "%s", err.msg);
    ck_assert_mem_eq(want, got, bytes);
    omp_set_num_threads(keep);
    free(want); free(got);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tiny_free(&t);
}
END_TEST

/* The AVX2 attention (eval/attn_avx2.c) gives the reference loops' logits bit for bit. Only
 * ctx.attn_impl changes between the two runs; the matmul's loops (ctx.impl) stay the same. */
static void check_attn_impls(const llm_model *lm, const int32_t *tok, int T, bool f16, int n_batch) {
    llm_context ctx;
    slmc_err err = {0};
    ck_assert_msg(llm_context_init(&ctx, lm, T, n_batch, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ctx.attn_impl, KERN_AUTO);
    ctx.f16_attention = f16;
    const size_t bytes = sizeof(float) * (size_t)T * (size_t)lm->cfg.n_vocab;
    float *want = malloc(bytes), *got = malloc(bytes);
    ctx.attn_impl = KERN_SCALAR;
    ck_assert_msg(llm_eval(&ctx, tok, T, 0, want, &err) == 0, "%s", err.msg);
    ctx.attn_impl = KERN_AVX2;
    ck_assert_msg(llm_eval(&ctx, tok, T, 0, got, &err) == 0, "%s", err.msg);
    ck_assert_mem_eq(want, got, bytes);
    /* token by token too (one query against a growing cache) */
    for (int i = 0; i < T && T <= 64; ++i)
        ck_assert_msg(llm_eval(&ctx, tok + i, 1, i, got + (size_t)i * (size_t)lm->cfg.n_vocab, &err) == 0, "%s", err.msg);
    if (T <= 64) ck_assert_mem_eq(want, got, bytes);
    free(want); free(got);
    llm_context_free(&ctx);
}

START_TEST(test_attention_avx2_bitwise) {
    if (!kern_have_avx2()) SKIP_TEST("this CPU has no AVX2");
    const char *archs[] = {"llama", "qwen2"};
    const int wtypes[] = {GGML_TYPE_F32, GGML_TYPE_Q8_0};
    enum { T = 40 };
    int32_t tok[T];
    for (int i = 0; i < T; ++i) tok[i] = (int32_t)((i * 97 + 11) % 300);
    for (size_t a = 0; a < 2; ++a)
        for (size_t w = 0; w < 2; ++w) {
            tiny t;
            tiny_make(&t, archs[a], a == 1, wtypes[w]);
            llm_model lm;
            slmc_err err = {0};
            ck_assert_msg(llm_model_init(&lm, &t.m, &err) == 0, "%s", err.msg);
            check_attn_impls(&lm, tok, T, true, T);
            check_attn_impls(&lm, tok, T, false, 7);
            llm_model_free(&lm);
            tiny_free(&t);
        }
    /* books-22m Q4_K_M: 8 heads on 4 KV heads of 32, one whole chunk of 256 */
    char *qp = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *tp = SHARED_OR_SKIP("text/books-valid.txt");
    model m;
    slmc_err err = {0};
    ck_assert_msg(model_open(&m, qp, NULL, &err) == 0, "%s", err.msg);
    size_t n;
    int32_t bos;
    int32_t *ids = tokenize_file(&m, tp, &n, &bos);
    ck_assert_uint_ge(n, 256);
    llm_model lm;
    ck_assert_msg(llm_model_init(&lm, &m, &err) == 0, "%s", err.msg);
    check_attn_impls(&lm, ids, 256, true, 256);
    llm_model_free(&lm);
    model_close(&m);
    free(ids); free(qp); free(tp);
}
END_TEST

/* Perplexity bookkeeping on hand-made logits: llama-perplexity's indices and formulas. */
START_TEST(test_ppl_indices) {
    ck_assert_int_eq(ppl_chunk_count(1000, 128, -1), 7);
    ck_assert_int_eq(ppl_chunk_count(1000, 128, 3), 3);
    ck_assert_int_eq(ppl_first(128), 64);
    ck_assert_int_eq(ppl_scored(128), 63);
    ck_assert_int_eq(ppl_scored(7), 3); /* positions 3, 4, 5 predict 4, 5, 6 */
    /* vocab 4; rows for positions 3..5; the target gets logit ln(3) against three zeros: p = 1/2 */
    const int32_t chunk[7] = {9, 9, 9, 9, 1, 2, 3};
    float logits[3][4] = {{0}};
    for (int i = 0; i < 3; ++i) logits[i][chunk[3 + i + 1]] = logf(3.f);
    ppl_stats s = {0};
    ppl_accumulate(&s, &logits[0][0], 4, chunk, 7);
    ck_assert_int_eq(s.count, 3);
    ck_assert_double_le(fabs(ppl_value(&s) - 2.0), 1e-6);
    ck_assert_double_eq(ppl_stderr(&s), 0); /* all equal: no spread */
    /* KLD of a distribution with itself is ~0 (16-bit compression error only), same top 100% */
    kld_stats k = {0};
    slmc_err err = {0};
    const int32_t next[3] = {1, 2, 3};
    ck_assert(kld_compare(&k, &logits[0][0], &logits[0][0], 3, 4, next, &err) == 0);
    ck_assert_int_eq(k.count, 3);
    ck_assert_int_eq(k.n_same_top, 3);
    ck_assert_double_le(fabs(k.sum_kld), 1e-6);
    kld_summary sm;
    ck_assert(kld_summarize(&k, &sm, &err) == 0);
    ck_assert_double_le(fabs(sm.ppl - 2.0), 1e-6);
    ck_assert_double_le(fabs(sm.ppl_base - 2.0), 1e-3);
    ck_assert_double_eq(sm.same_top, 1.0);
    kld_stats_free(&k);
}
END_TEST

/* generate_run: llama2.c's greedy sample for stories260K, piece by piece. */
typedef struct pieces {
    char text[4096];
    size_t len;
    int started;
} pieces;

static int on_start(void *ud, int n_prompt) {
    ck_assert_int_gt(n_prompt, 1); /* BOS and the prompt */
    ((pieces *)ud)->started++;
    return 0;
}

static int on_piece(void *ud, const char *bytes, size_t len) {
    pieces *p = ud;
    ck_assert_int_eq(p->started, 1);
    ck_assert_uint_lt(p->len + len, sizeof p->text);
    memcpy(p->text + p->len, bytes, len);
    p->len += len;
    p->text[p->len] = 0;
    return 0;
}

START_TEST(test_generate_stories260K) {
    char *mp = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tp = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    pieces p = {{0}, 0, 0};
    const generate_opts o = {.model = mp, .tokenizer = tp, .prompt = "Once upon a time", .n_predict = 30,
                             .temp = 0, .top_k = 40, .top_p = 0.95f, .seed = 1};
    const generate_hooks h = {.ud = &p, .start = on_start, .piece = on_piece};
    generate_result r;
    slmc_err err = {0};
    ck_assert_msg(generate_run(&o, &h, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.n_generated, 30);
    ck_assert_msg(strncmp(p.text, ", there was a little girl named Lily. She loved to play outside", 63) == 0, "%s",
                  p.text);
    /* a context that cannot hold the prompt is refused, naming the model */
    generate_opts small = o;
    small.n_ctx = 3;
    ck_assert_int_eq(generate_run(&small, NULL, &r, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, mp));
    free(mp);
    free(tp);
}
END_TEST

/* ppl_nll (the vector max and exp where the CPU has them) gives the same bits as the scalar
 * loops, on logits of several spreads and vocabulary sizes (tails of 1..7 values), the target
 * anywhere, and rows with -inf entries (masked tokens). */
START_TEST(test_ppl_nll_vector_exact) {
    static const int64_t sizes[] = {1, 7, 8, 33, 1000, 32000, 32003};
    uint64_t st = 12345;
    for (int si = 0; si < 7; ++si) {
        const int64_t n = sizes[si];
        float *l = malloc(sizeof(float) * (size_t)n);
        ck_assert_ptr_nonnull(l);
        for (int spread = 0; spread < 4; ++spread) {
            for (int64_t i = 0; i < n; ++i) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                const float u = (float)(st >> 40) / 16777216.0f;
                l[i] = (u - 0.5f) * (spread == 0 ? 1.f : spread == 1 ? 20.f : spread == 2 ? 200.f : 5.f);
                if (spread == 3 && i % 5 == 1) l[i] = -INFINITY;
            }
            for (int k = 0; k < 3; ++k) {
                const int32_t tok = (int32_t)(k == 0 ? 0 : k == 1 ? n - 1 : n / 2);
                const double a = ppl_nll(l, n, tok), b = ppl_nll_ref(l, n, tok);
                ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "n %lld spread %d tok %d: %.17g vs %.17g", (long long)n,
                              spread, tok, a, b);
            }
        }
        free(l);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("llm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_llama_vs_naive);
    tcase_add_test(tc, test_qwen2_tied_vs_naive);
    tcase_add_test(tc, test_batch_equivalence_f32);
    tcase_add_test(tc, test_batch_equivalence_q4_K);
    tcase_add_test(tc, test_batch_equivalence_q8_0);
    tcase_add_test(tc, test_hooks);
    tcase_add_test(tc, test_model_errors);
    tcase_add_test(tc, test_rope_linear_scaling);
    tcase_add_test(tc, test_threads_raised_after_init);
    tcase_add_test(tc, test_context_set_threads);
    tcase_add_test(tc, test_attention_avx2_bitwise);
    tcase_add_test(tc, test_ppl_indices);
    tcase_add_test(tc, test_ppl_nll_vector_exact);
    tcase_add_test(tc, test_ppl_stories260K);
    tcase_add_test(tc, test_generate_stories260K);
    tcase_add_test(tc, test_books22m_two_chunks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
