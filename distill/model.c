/* model.c - the trainable Llama graph: parameters, forward, backward, AdamW, export. */
#include "distill/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <unistd.h>

#include "distill/ops.h"
#include "eval/kernels.h"
#include "formats/gguf.h"
#include "formats/hf.h"
#include "codec/quants.h"
#include "codec/types.h"

/* ---------------------------------------------------------------------------------------
 * parameter layout
 * ------------------------------------------------------------------------------------- */

static int max_ff(const tm_config *c) {
    int f = 0;
    for (int l = 0; l < c->hp.n_layer; l++)
        if (c->n_ff[l] > f) f = c->n_ff[l];
    return f;
}

/* Append one tensor to the table (GGUF write order), counting its elements. */
static void add_param(train_model *tm, const char *name, int n_dims, int64_t ne0, int64_t ne1, bool decay) {
    tm_param *p = &tm->tensors[tm->n_tensors++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n_dims = n_dims;
    p->ne[0] = ne0;
    p->ne[1] = n_dims == 2 ? ne1 : 1;
    p->offset = tm->n_params;
    p->n = (size_t)(p->ne[0] * p->ne[1]);
    p->decay = decay;
    tm->n_params += p->n;
}

/* Point a tm_weights at the tensors inside one flat vector. */
static void bind_weights(const train_model *tm, float *base, tm_weights *w) {
    int i = 0;
    w->tok_embd = base + tm->tensors[i++].offset;
    for (int l = 0; l < tm->cfg.hp.n_layer; l++) {
        tm_layer *L = &w->layers[l];
        L->attn_norm = base + tm->tensors[i++].offset;
        L->wq = base + tm->tensors[i++].offset;
        L->bq = tm->cfg.qkv_bias ? base + tm->tensors[i++].offset : NULL;
        L->q_norm = tm->cfg.qk_norm ? base + tm->tensors[i++].offset : NULL;
        L->wk = base + tm->tensors[i++].offset;
        L->bk = tm->cfg.qkv_bias ? base + tm->tensors[i++].offset : NULL;
        L->k_norm = tm->cfg.qk_norm ? base + tm->tensors[i++].offset : NULL;
        L->wv = base + tm->tensors[i++].offset;
        L->bv = tm->cfg.qkv_bias ? base + tm->tensors[i++].offset : NULL;
        L->wo = base + tm->tensors[i++].offset;
        L->ffn_norm = base + tm->tensors[i++].offset;
        L->w_gate = base + tm->tensors[i++].offset;
        L->w_up = base + tm->tensors[i++].offset;
        L->w_down = base + tm->tensors[i++].offset;
    }
    w->output_norm = base + tm->tensors[i++].offset;
    w->output = tm->cfg.hp.tied_output ? w->tok_embd : base + tm->tensors[i++].offset;
}

/* Build the tensor table for tm->cfg and allocate the four flat vectors (zeroed). */
static int tm_alloc(train_model *tm, slmc_err *err) {
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
        hp->n_head % hp->n_head_kv != 0 || hp->head_dim < 1 || hp->n_rot < 0 || hp->n_rot > hp->head_dim ||
        hp->n_rot % 2 != 0 || hp->n_vocab < 2)
        return slmc_fail(err, NULL,
                         "unsupported model shape: %lld layers, width %lld, %lld heads, %lld kv heads, head size %lld",
                         (long long)hp->n_layer, (long long)hp->n_embd, (long long)hp->n_head,
                         (long long)hp->n_head_kv, (long long)hp->head_dim);
    int per_layer = 9 + (c->qkv_bias ? 3 : 0) + (c->qk_norm ? 2 : 0);
    tm->tensors = calloc((size_t)(3 + per_layer * hp->n_layer), sizeof *tm->tensors);
    tm->w.layers = calloc((size_t)hp->n_layer, sizeof(tm_layer));
    tm->g.layers = calloc((size_t)hp->n_layer, sizeof(tm_layer));
    if (!tm->tensors || !tm->w.layers || !tm->g.layers) return slmc_fail(err, NULL, "out of memory");
    const int64_t C = hp->n_embd, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    char name[TM_NAME_MAX];
    add_param(tm, "token_embd.weight", 2, C, hp->n_vocab, true);
    for (int l = 0; l < hp->n_layer; l++) {
        const int64_t F = c->n_ff[l];
        if (F < 1) return slmc_fail(err, NULL, "layer %d has an empty feed-forward block", l);
#define P(suffix, nd, a, b, decay) \
    (snprintf(name, sizeof name, "blk.%d." suffix, l), add_param(tm, name, nd, a, b, decay))
        P("attn_norm.weight", 1, C, 1, false);
        P("attn_q.weight", 2, C, qd, true);
        if (c->qkv_bias) P("attn_q.bias", 1, qd, 1, false);
        if (c->qk_norm) P("attn_q_norm.weight", 1, hp->head_dim, 1, false);
        P("attn_k.weight", 2, C, kvd, true);
        if (c->qkv_bias) P("attn_k.bias", 1, kvd, 1, false);
        if (c->qk_norm) P("attn_k_norm.weight", 1, hp->head_dim, 1, false);
        P("attn_v.weight", 2, C, kvd, true);
        if (c->qkv_bias) P("attn_v.bias", 1, kvd, 1, false);
        P("attn_output.weight", 2, qd, C, true);
        P("ffn_norm.weight", 1, C, 1, false);
        P("ffn_gate.weight", 2, C, F, true);
        P("ffn_up.weight", 2, C, F, true);
        P("ffn_down.weight", 2, F, C, true);
#undef P
    }
    add_param(tm, "output_norm.weight", 1, C, 1, false);
    if (!hp->tied_output) add_param(tm, "output.weight", 2, C, hp->n_vocab, true);
    size_t bytes = sizeof(float) * tm->n_params;
    tm->params = calloc(1, bytes);
    tm->grads = calloc(1, bytes);
    tm->adam_m = calloc(1, bytes);
    tm->adam_v = calloc(1, bytes);
    if (!tm->params || !tm->grads || !tm->adam_m || !tm->adam_v)
        return slmc_fail(err, NULL, "out of memory for %zu parameters", tm->n_params);
    bind_weights(tm, tm->params, &tm->w);
    bind_weights(tm, tm->grads, &tm->g);
    return 0;
}

/* Deep copy of the config (n_ff and rope_freqs are owned). */
static int copy_config(tm_config *dst, const tm_config *src, slmc_err *err) {
    *dst = *src;
    dst->rope_freqs = NULL;
    dst->n_ff = malloc(sizeof(int) * (size_t)(src->hp.n_layer > 0 ? src->hp.n_layer : 1));
    if (!dst->n_ff) return slmc_fail(err, NULL, "out of memory");
    if (src->hp.n_layer > 0) memcpy(dst->n_ff, src->n_ff, sizeof(int) * (size_t)src->hp.n_layer);
    if (src->rope_freqs) {
        const size_t half = (size_t)(src->hp.n_rot / 2);
        dst->rope_freqs = malloc(sizeof(float) * (half ? half : 1));
        if (!dst->rope_freqs) return slmc_fail(err, NULL, "out of memory");
        memcpy(dst->rope_freqs, src->rope_freqs, sizeof(float) * half);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * initialisation
 * ------------------------------------------------------------------------------------- */

/* Read one tensor of the view as F32, dequantizing block types. */
static int read_tensor_f32(const model *m, int64_t ti, float *dst, size_t n, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t);
    if ((size_t)(t->ne[0] * rows) != n)
        return slmc_fail(err, m->path, "%s has %lld elements, the model shape needs %zu", t->name,
                         (long long)(t->ne[0] * rows), n);
    if (type_is_float(t->type)) return model_read_rows_f32(m, (uint64_t)ti, 0, rows, dst, err);
    const quant_kernels *qk = quant_get(t->type);
    if (!qk) return slmc_fail(err, m->path, "%s: type %s cannot be dequantized", t->name, type_name(t->type));
    uint64_t rb = model_tensor_row_bytes(t);
    uint8_t *raw = malloc(rb ? rb : 1);
    if (!raw) return slmc_fail(err, m->path, "out of memory");
    for (int64_t r = 0; r < rows; r++) {
        if (model_read_rows(m, (uint64_t)ti, r, 1, raw, err) != 0) { free(raw); return -1; }
        qk->dequantize(raw, dst + (size_t)r * (size_t)t->ne[0], t->ne[0]);
    }
    free(raw);
    return 0;
}

/* The settings a new model runs with: every thread OpenMP would use now, the best GEMM kernel. */
static void exec_default(train_model *tm) {
    tm->exec.kernel = gemm_best_kernel();
    tm->exec.n_threads = omp_get_max_threads();
}

int tm_init_from_model(train_model *tm, const model *m, slmc_err *err) {
    memset(tm, 0, sizeof *tm);
    exec_default(tm);
    const model_config *mc = &m->cfg;
    tm_config *c = &tm->cfg;
    const arch_desc *family = arch_by_name(mc->arch);
    /* the training ops cover the Llama-shaped families (RMSNorm, SwiGLU, separate Q/K/V, q/k
     * head norms, no post-norms or caps); the others load and evaluate but do not train yet */
    if (!arch_llama_shaped(family))
        return slmc_fail(err, m->path, "architecture '%s' cannot be trained yet (llama, qwen2, qwen3)", mc->arch);
    if (mc->rope_scaling[0] && strcmp(mc->rope_scaling, "none") != 0 && strcmp(mc->rope_scaling, "linear") != 0)
        return slmc_fail(err, m->path, "rope scaling '%s' is not supported for training (none, linear)",
                         mc->rope_scaling);
    /* the view's config with the defaults training relies on */
    model_config *hp = &c->hp;
    *hp = *mc;
    hp->norm_eps = mc->norm_eps > 0 ? mc->norm_eps : 1e-5f;
    hp->rope_freq_base = mc->rope_freq_base > 0 ? mc->rope_freq_base : 10000.f;
    hp->tied_output = mc->tied_output || model_find(m, "output.weight") < 0;
    c->freq_scale = strcmp(mc->rope_scaling, "linear") == 0 && mc->rope_scaling_factor > 0
                        ? 1.f / mc->rope_scaling_factor : 1.f;
    c->neox = family->rope == ROPE_NEOX;
    c->qkv_bias = model_find(m, "blk.0.attn_q.bias") >= 0;
    c->qk_norm = family->qk_norm;
    c->n_ff = malloc(sizeof(int) * (size_t)(hp->n_layer > 0 ? hp->n_layer : 1));
    if (!c->n_ff) return slmc_fail(err, m->path, "out of memory");
    const int64_t freqs = model_find(m, "rope_freqs.weight"); /* Llama 3: one divisor per rotated pair */
    if (freqs >= 0) {
        const size_t half = (size_t)(hp->n_rot / 2);
        c->rope_freqs = malloc(sizeof(float) * (half ? half : 1));
        if (!c->rope_freqs) return slmc_fail(err, m->path, "out of memory");
        if (read_tensor_f32(m, freqs, c->rope_freqs, half, err) != 0) return -1;
    }
    /* the FFN width of each layer comes from its tensors: a pruned model may vary it */
    for (int l = 0; l < hp->n_layer; l++) {
        char name[TM_NAME_MAX];
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        int64_t ti = model_find(m, name);
        if (ti < 0) return slmc_fail(err, m->path, "has no tensor %s", name);
        c->n_ff[l] = (int)m->tensors[ti].ne[1];
    }
    if (tm_alloc(tm, err) != 0) return slmc_fail_prefix(err, m->path);
    for (int i = 0; i < tm->n_tensors; i++) {
        const tm_param *p = &tm->tensors[i];
        int64_t ti = model_find(m, p->name);
        if (ti < 0) return slmc_fail(err, m->path, "has no tensor %s", p->name);
        const model_tensor *t = &m->tensors[ti];
        if (t->ne[0] != p->ne[0] || model_tensor_rows(t) != p->ne[1])
            return slmc_fail(err, m->path, "%s is %lld x %lld, the configuration implies %lld x %lld", p->name,
                             (long long)t->ne[0], (long long)model_tensor_rows(t), (long long)p->ne[0],
                             (long long)p->ne[1]);
        if (read_tensor_f32(m, ti, tm->params + p->offset, p->n, err) != 0) return -1;
    }
    return 0;
}

/* xorshift64* and Box-Muller: reproducible random weights without libc's rand state. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static float rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

int tm_init_random(train_model *tm, const tm_config *cfg, uint64_t seed, slmc_err *err) {
    memset(tm, 0, sizeof *tm);
    exec_default(tm);
    if (copy_config(&tm->cfg, cfg, err) != 0) return -1;
    if (tm_alloc(tm, err) != 0) return -1;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < tm->n_tensors; i++) {
        const tm_param *p = &tm->tensors[i];
        float *x = tm->params + p->offset;
        bool norm = strstr(p->name, "norm") != NULL, bias = strstr(p->name, ".bias") != NULL;
        for (size_t j = 0; j < p->n; j++) x[j] = norm ? 1.0f : bias ? 0.0f : 0.02f * rng_normal(&s);
    }
    return 0;
}

static void acts_free(tm_acts *a) {
    float **f[] = {&a->res, &a->ln1, &a->rstd1, &a->q, &a->k, &a->v, &a->q_raw, &a->k_raw, &a->rstd_q, &a->rstd_k,
                   &a->att, &a->atty, &a->res_mid, &a->ln2, &a->rstd2, &a->gate, &a->up, &a->h, &a->lnf, &a->rstdf,
                   &a->logits, &a->dlogits, &a->dres, &a->dln, &a->dq, &a->dk, &a->dv, &a->dq_raw, &a->dk_raw,
                   &a->datty, &a->dgate, &a->dup, &a->dh, &a->tmp};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    free(a->row_loss);
    a->row_loss = NULL;
}

void tm_free(train_model *tm) {
    acts_free(&tm->a);
    free(tm->rope_cos);
    free(tm->rope_sin);
    free(tm->params);
    free(tm->grads);
    free(tm->adam_m);
    free(tm->adam_v);
    free(tm->tensors);
    free(tm->w.layers);
    free(tm->g.layers);
    free(tm->cfg.n_ff);
    free(tm->cfg.rope_freqs);
    memset(tm, 0, sizeof *tm);
}

/* ---------------------------------------------------------------------------------------
 * activations
 * ------------------------------------------------------------------------------------- */

int tm_plan(train_model *tm, int B, int T, slmc_err *err) {
    if (tm->B == B && tm->T == T) return 0;
    acts_free(&tm->a);
    free(tm->rope_cos);
    free(tm->rope_sin);
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const size_t N = (size_t)B * T, L = (size_t)hp->n_layer, C = (size_t)hp->n_embd, F = (size_t)max_ff(c);
    const size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t V = (size_t)hp->n_vocab, half = (size_t)(hp->n_rot / 2 > 0 ? hp->n_rot / 2 : 1);
    const size_t qkn = c->qk_norm ? 1 : 0; /* the head-norm buffers exist only with qk_norm */
    tm_acts *a = &tm->a;
    struct { float **p; size_t n; } plan[] = {
        {&a->res, (L + 1) * N * C}, {&a->ln1, L * N * C}, {&a->rstd1, L * N}, {&a->q, L * N * qd},
        {&a->k, L * N * kvd}, {&a->v, L * N * kvd}, {&a->q_raw, qkn * L * N * qd}, {&a->k_raw, qkn * L * N * kvd},
        {&a->rstd_q, qkn * L * N * hp->n_head}, {&a->rstd_k, qkn * L * N * hp->n_head_kv},
        {&a->dq_raw, qkn * N * qd}, {&a->dk_raw, qkn * N * kvd}, {&a->att, L * (size_t)B * hp->n_head * T * T},
        {&a->atty, L * N * qd}, {&a->res_mid, L * N * C}, {&a->ln2, L * N * C}, {&a->rstd2, L * N},
        {&a->gate, L * N * F}, {&a->up, L * N * F}, {&a->h, L * N * F}, {&a->lnf, N * C}, {&a->rstdf, N},
        {&a->logits, N * V}, {&a->dlogits, N * V}, {&a->dres, N * C}, {&a->dln, N * C}, {&a->dq, N * qd},
        {&a->dk, N * kvd}, {&a->dv, N * kvd}, {&a->datty, N * qd}, {&a->dgate, N * F}, {&a->dup, N * F},
        {&a->dh, N * F}, {&a->tmp, N * C}, {&tm->rope_cos, (size_t)T * half}, {&tm->rope_sin, (size_t)T * half},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        *plan[i].p = calloc(plan[i].n ? plan[i].n : 1, sizeof(float));
        total += plan[i].n;
        if (!*plan[i].p) {
            tm->B = tm->T = 0;
            return slmc_fail(err, NULL, "out of memory for activations (%zu MB so far) of batch %d x %d",
                             total * 4 >> 20, B, T);
        }
    }
    a->row_loss = calloc(N, sizeof(double));
    if (!a->row_loss) return slmc_fail(err, NULL, "out of memory");
    for (int p = 0; p < T; p++)
        if (hp->n_rot > 0)
            kern_rope_table_ext(tm->rope_cos + (size_t)p * half, tm->rope_sin + (size_t)p * half, p, hp->n_rot,
                                hp->rope_freq_base, c->freq_scale, c->rope_freqs, 1.0f);
    tm->B = B;
    tm->T = T;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * forward and backward
 * ------------------------------------------------------------------------------------- */

/* The matrix products, timed: bench/distill.sh reports their share of the step. */
static void mm_fwd(train_model *tm, float *out, const float *inp, const float *w, const float *b, int N, int C, int OC) {
    double t = omp_get_wtime();
    matmul_forward(out, inp, w, b, N, C, OC, &tm->exec);
    tm->sec_matmul += omp_get_wtime() - t;
}
static void mm_bwd(train_model *tm, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                   const float *w, int N, int C, int OC) {
    double t = omp_get_wtime();
    matmul_backward(dinp, dw, db, dout, inp, w, N, C, OC, &tm->exec);
    tm->sec_matmul += omp_get_wtime() - t;
}

void tm_forward(train_model *tm, const int32_t *tokens) {
    const double t_start = omp_get_wtime();
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    tm_acts *a = &tm->a;
    const int B = tm->B, T = tm->T, N = B * T, C = hp->n_embd, L = hp->n_layer, V = hp->n_vocab;
    const int NH = hp->n_head, NKV = hp->n_head_kv, hd = hp->head_dim, qd = NH * hd, kvd = NKV * hd;
    const size_t NC = (size_t)N * C, F_max = (size_t)max_ff(c);
    const int nt = tm->exec.n_threads;
    embedding_forward(a->res, tokens, tm->w.tok_embd, N, C, nt);
    for (int l = 0; l < L; l++) {
        const tm_layer *w = &tm->w.layers[l];
        const int F = c->n_ff[l];
        float *res = a->res + l * NC, *res_next = a->res + (l + 1) * NC;
        float *ln1 = a->ln1 + l * NC, *rstd1 = a->rstd1 + (size_t)l * N;
        float *q = a->q + (size_t)l * N * qd, *k = a->k + (size_t)l * N * kvd, *v = a->v + (size_t)l * N * kvd;
        float *att = a->att + (size_t)l * B * NH * T * T, *atty = a->atty + (size_t)l * N * qd;
        float *res_mid = a->res_mid + l * NC, *ln2 = a->ln2 + l * NC, *rstd2 = a->rstd2 + (size_t)l * N;
        float *gate = a->gate + l * N * F_max, *up = a->up + l * N * F_max, *h = a->h + l * N * F_max;

        rmsnorm_forward(ln1, rstd1, res, w->attn_norm, N, C, hp->norm_eps, nt);
        if (c->qk_norm) { /* each head's q and k normalized over its head_dim values (qwen3) */
            float *q_raw = a->q_raw + (size_t)l * N * qd, *k_raw = a->k_raw + (size_t)l * N * kvd;
            mm_fwd(tm, q_raw, ln1, w->wq, w->bq, N, C, qd);
            mm_fwd(tm, k_raw, ln1, w->wk, w->bk, N, C, kvd);
            rmsnorm_forward(q, a->rstd_q + (size_t)l * N * NH, q_raw, w->q_norm, N * NH, hd, hp->norm_eps, nt);
            rmsnorm_forward(k, a->rstd_k + (size_t)l * N * NKV, k_raw, w->k_norm, N * NKV, hd, hp->norm_eps, nt);
        } else {
            mm_fwd(tm, q, ln1, w->wq, w->bq, N, C, qd);
            mm_fwd(tm, k, ln1, w->wk, w->bk, N, C, kvd);
        }
        mm_fwd(tm, v, ln1, w->wv, w->bv, N, C, kvd);
        rope_forward(q, tm->rope_cos, tm->rope_sin, N, T, NH, hd, hp->n_rot, c->neox, nt);
        rope_forward(k, tm->rope_cos, tm->rope_sin, N, T, NKV, hd, hp->n_rot, c->neox, nt);
        attention_forward(atty, att, q, k, v, B, T, NH, NKV, hd, nt);
        mm_fwd(tm, a->tmp, atty, w->wo, NULL, N, qd, C);
        residual_forward(res_mid, res, a->tmp, NC, nt);

        rmsnorm_forward(ln2, rstd2, res_mid, w->ffn_norm, N, C, hp->norm_eps, nt);
        mm_fwd(tm, gate, ln2, w->w_gate, NULL, N, C, F);
        mm_fwd(tm, up, ln2, w->w_up, NULL, N, C, F);
        swiglu_forward(h, gate, up, (int64_t)N * F, nt);
        mm_fwd(tm, a->tmp, h, w->w_down, NULL, N, F, C);
        residual_forward(res_next, res_mid, a->tmp, NC, nt);
    }
    rmsnorm_forward(a->lnf, a->rstdf, a->res + L * NC, tm->w.output_norm, N, C, hp->norm_eps, nt);
    mm_fwd(tm, a->logits, a->lnf, tm->w.output, NULL, N, C, V);
    tm->sec_graph += omp_get_wtime() - t_start;
}

void tm_backward(train_model *tm, const int32_t *tokens) {
    const double t_start = omp_get_wtime();
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    tm_acts *a = &tm->a;
    const int B = tm->B, T = tm->T, N = B * T, C = hp->n_embd, L = hp->n_layer, V = hp->n_vocab;
    const int NH = hp->n_head, NKV = hp->n_head_kv, hd = hp->head_dim, qd = NH * hd, kvd = NKV * hd;
    const size_t NC = (size_t)N * C, F_max = (size_t)max_ff(c);
    const int nt = tm->exec.n_threads;

    /* output head and final norm: dres becomes the gradient of res[L] */
    memset(a->dln, 0, sizeof(float) * NC);
    memset(a->dres, 0, sizeof(float) * NC);
    mm_bwd(tm, a->dln, tm->g.output, NULL, a->dlogits, a->lnf, tm->w.output, N, C, V);
    rmsnorm_backward(a->dres, tm->g.output_norm, a->dln, a->res + L * NC, tm->w.output_norm, a->rstdf, N, C, nt);

    for (int l = L - 1; l >= 0; l--) {
        const tm_layer *w = &tm->w.layers[l];
        tm_layer *g = &tm->g.layers[l];
        const int F = c->n_ff[l];
        float *res = a->res + l * NC;
        float *ln1 = a->ln1 + l * NC, *rstd1 = a->rstd1 + (size_t)l * N;
        float *q = a->q + (size_t)l * N * qd, *k = a->k + (size_t)l * N * kvd, *v = a->v + (size_t)l * N * kvd;
        float *att = a->att + (size_t)l * B * NH * T * T, *atty = a->atty + (size_t)l * N * qd;
        float *res_mid = a->res_mid + l * NC, *ln2 = a->ln2 + l * NC, *rstd2 = a->rstd2 + (size_t)l * N;
        float *gate = a->gate + l * N * F_max, *up = a->up + l * N * F_max, *h = a->h + l * N * F_max;
        const size_t NF = (size_t)N * F;

        /* res_next = res_mid + down(h): dres flows to res_mid unchanged and into the FFN */
        memset(a->dh, 0, sizeof(float) * NF);
        memset(a->dgate, 0, sizeof(float) * NF);
        memset(a->dup, 0, sizeof(float) * NF);
        memset(a->dln, 0, sizeof(float) * NC);
        mm_bwd(tm, a->dh, g->w_down, NULL, a->dres, h, w->w_down, N, F, C);
        swiglu_backward(a->dgate, a->dup, a->dh, gate, up, (int64_t)NF, nt);
        mm_bwd(tm, a->dln, g->w_gate, NULL, a->dgate, ln2, w->w_gate, N, C, F);
        mm_bwd(tm, a->dln, g->w_up, NULL, a->dup, ln2, w->w_up, N, C, F);
        rmsnorm_backward(a->dres, g->ffn_norm, a->dln, res_mid, w->ffn_norm, rstd2, N, C, nt);

        /* res_mid = res + wo(attention): dres flows to res unchanged and into attention */
        memset(a->datty, 0, sizeof(float) * (size_t)N * qd);
        memset(a->dq, 0, sizeof(float) * (size_t)N * qd);
        memset(a->dk, 0, sizeof(float) * (size_t)N * kvd);
        memset(a->dv, 0, sizeof(float) * (size_t)N * kvd);
        memset(a->dln, 0, sizeof(float) * NC);
        mm_bwd(tm, a->datty, g->wo, NULL, a->dres, atty, w->wo, N, qd, C);
        attention_backward(a->dq, a->dk, a->dv, a->datty, att, q, k, v, B, T, NH, NKV, hd, nt);
        rope_backward(a->dq, tm->rope_cos, tm->rope_sin, N, T, NH, hd, hp->n_rot, c->neox, nt);
        rope_backward(a->dk, tm->rope_cos, tm->rope_sin, N, T, NKV, hd, hp->n_rot, c->neox, nt);
        float *dq = a->dq, *dk = a->dk; /* the gradients of the projections */
        if (c->qk_norm) {
            memset(a->dq_raw, 0, sizeof(float) * (size_t)N * qd);
            memset(a->dk_raw, 0, sizeof(float) * (size_t)N * kvd);
            rmsnorm_backward(a->dq_raw, g->q_norm, a->dq, a->q_raw + (size_t)l * N * qd, w->q_norm,
                             a->rstd_q + (size_t)l * N * NH, N * NH, hd, nt);
            rmsnorm_backward(a->dk_raw, g->k_norm, a->dk, a->k_raw + (size_t)l * N * kvd, w->k_norm,
                             a->rstd_k + (size_t)l * N * NKV, N * NKV, hd, nt);
            dq = a->dq_raw, dk = a->dk_raw;
        }
        mm_bwd(tm, a->dln, g->wq, g->bq, dq, ln1, w->wq, N, C, qd);
        mm_bwd(tm, a->dln, g->wk, g->bk, dk, ln1, w->wk, N, C, kvd);
        mm_bwd(tm, a->dln, g->wv, g->bv, a->dv, ln1, w->wv, N, C, kvd);
        rmsnorm_backward(a->dres, g->attn_norm, a->dln, res, w->attn_norm, rstd1, N, C, nt);
    }
    embedding_backward(tm->g.tok_embd, a->dres, tokens, N, C, nt);
    tm->sec_graph += omp_get_wtime() - t_start;
}

void tm_zero_grad(train_model *tm) { memset(tm->grads, 0, sizeof(float) * tm->n_params); }

/* ---------------------------------------------------------------------------------------
 * optimizer
 * ------------------------------------------------------------------------------------- */

#define NORM_CHUNK 65536 /* partial sums over fixed chunks, added in order: thread-independent */

double tm_grad_norm(const train_model *tm) {
    const size_t n = tm->n_params, n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double *part = malloc(sizeof(double) * (n_chunks ? n_chunks : 1));
    double total = 0;
    if (part) {
#pragma omp parallel for num_threads(tm->exec.n_threads) schedule(static)
        for (size_t ch = 0; ch < n_chunks; ch++) {
            size_t i0 = ch * NORM_CHUNK, i1 = i0 + NORM_CHUNK < n ? i0 + NORM_CHUNK : n;
            double s = 0;
            for (size_t i = i0; i < i1; i++) s += (double)tm->grads[i] * tm->grads[i];
            part[ch] = s;
        }
        for (size_t ch = 0; ch < n_chunks; ch++) total += part[ch];
        free(part);
    } else {
        for (size_t i = 0; i < n; i++) total += (double)tm->grads[i] * tm->grads[i];
    }
    return sqrt(total);
}

void tm_adamw(train_model *tm, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay,
              float grad_scale) {
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    for (int ti = 0; ti < tm->n_tensors; ti++) {
        const tm_param *p = &tm->tensors[ti];
        const float wd = p->decay ? weight_decay : 0.0f;
        float *w = tm->params + p->offset, *g = tm->grads + p->offset;
        float *m = tm->adam_m + p->offset, *v = tm->adam_v + p->offset;
#pragma omp parallel for num_threads(tm->exec.n_threads) schedule(static)
        for (size_t i = 0; i < p->n; i++) {
            float gi = g[i] * grad_scale;
            m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
            v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
            float mhat = m[i] / bc1, vhat = v[i] / bc2;
            /* decoupled weight decay (Loshchilov & Hutter): shrink the weight directly */
            w[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[i]);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * export
 * ------------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int write_gguf(const train_model *tm, const model *src, const char *path, int outtype, slmc_err *err) {
    /* llama.cpp's file type ids: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32 */
    int64_t file_type = outtype == GGML_TYPE_F16 ? 1 : outtype == GGML_TYPE_BF16 ? 32 : 0;
    meta kv;
    if (model_gguf_meta(&kv, src, file_type) != 0) { meta_free(&kv); return slmc_fail(err, path, "out of memory"); }
    /* the trained model's shape: the source may have been pruned per layer, keep its keys */
    /* the parameters, then Llama 3's rope_freqs as read (not trained) */
    const int n_out = tm->n_tensors + (tm->cfg.rope_freqs ? 1 : 0);
    gguf_tensor_info *infos = calloc((size_t)n_out, sizeof *infos);
    void *row = NULL;
    int rc = -1;
    gguf_writer w;
    memset(&w, 0, sizeof w);
    bool opened = false;
    if (!infos) { slmc_fail(err, path, "out of memory"); goto done; }
    int64_t max_row = 1;
    for (int i = 0; i < tm->n_tensors; i++) {
        const tm_param *p = &tm->tensors[i];
        infos[i].name = (char *)p->name;
        infos[i].n_dims = p->n_dims;
        infos[i].ne[0] = p->ne[0];
        infos[i].ne[1] = p->ne[1];
        infos[i].ne[2] = infos[i].ne[3] = 1;
        infos[i].type = p->n_dims == 2 ? outtype : GGML_TYPE_F32;
        if (p->ne[0] > max_row) max_row = p->ne[0];
    }
    if (tm->cfg.rope_freqs) {
        gguf_tensor_info *f = &infos[tm->n_tensors];
        f->name = (char *)"rope_freqs.weight";
        f->n_dims = 1;
        f->ne[0] = tm->cfg.hp.n_rot / 2;
        f->ne[1] = f->ne[2] = f->ne[3] = 1;
        f->type = GGML_TYPE_F32;
    }
    row = malloc((size_t)max_row * sizeof(float));
    if (!row) { slmc_fail(err, path, "out of memory"); goto done; }
    if (gguf_writer_open(&w, path, &kv, infos, (uint64_t)n_out, err) != 0) goto done;
    opened = true;
    for (int i = 0; i < tm->n_tensors; i++) {
        const tm_param *p = &tm->tensors[i];
        for (int64_t r = 0; r < p->ne[1]; r++) {
            const float *x = tm->params + p->offset + (size_t)(r * p->ne[0]);
            row_from_f32(infos[i].type, x, row, p->ne[0]);
            if (gguf_writer_write(&w, row, (size_t)type_nbytes(infos[i].type, p->ne[0]), err) != 0) goto done;
        }
    }
    if (tm->cfg.rope_freqs &&
        gguf_writer_write(&w, tm->cfg.rope_freqs, sizeof(float) * (size_t)(tm->cfg.hp.n_rot / 2), err) != 0)
        goto done;
    if (gguf_writer_finish(&w, err) != 0) goto done;
    rc = 0;
done:
    if (rc != 0 && opened) gguf_writer_abort(&w);
    meta_free(&kv);
    free(infos);
    free(row);
    return rc;
}

int tm_export(const train_model *tm, const model *src, const char *path, int outtype, slmc_err *err) {
    if (outtype != GGML_TYPE_F32 && outtype != GGML_TYPE_F16 && outtype != GGML_TYPE_BF16)
        return slmc_fail(err, path, "export writes F32, F16 or BF16, not %s", type_name(outtype));
    if (ends_with(path, ".gguf")) return write_gguf(tm, src, path, outtype, err);
    /* A Hugging Face folder: write a GGUF beside it, read it back as a model view and let the
     * HF writer do the naming, config.json and tokenizer files. */
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return slmc_fail(err, path, "out of memory");
    snprintf(tmp, n, "%s.tmp-%d.gguf", path, (int)getpid());
    int rc = write_gguf(tm, src, tmp, outtype, err);
    if (rc == 0) {
        model m;
        rc = model_open(&m, tmp, NULL, err);
        if (rc == 0) {
            rc = hf_write(&m, path, outtype, HF_DEFAULT_SHARD_SIZE, NULL, err);
            model_close(&m);
        }
    }
    unlink(tmp);
    free(tmp);
    return rc;
}
