/* llm.c - the Llama-family forward pass (see llm.h). */
#include "llm.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/dots.h"
#include "codec/quants.h"
#include "codec/types.h"

/* ===================================================================== binding the weights */

/* Append a row map to the model's owned list. */
static int keep_row_map(llm_model *lm, int64_t *map) {
    size_t n = 0;
    while (lm->row_maps && lm->row_maps[n]) ++n;
    int64_t **grown = realloc(lm->row_maps, (n + 2) * sizeof *grown);
    if (!grown) return -1;
    grown[n] = map;
    grown[n + 1] = NULL;
    lm->row_maps = grown;
    return 0;
}

/* Bind tensor `name` as a matrix of n_out rows of n_in values. */
static int bind_weight(llm_model *lm, llm_weight *w, const char *name, int64_t n_in, int64_t n_out, slmc_err *err) {
    const model *m = lm->src;
    const int64_t ti = model_find(m, name);
    if (ti < 0) return slmc_fail(err, m->path, "tensor %s is missing", name);
    const model_tensor *t = &m->tensors[ti];
    if (t->ne[0] != n_in || model_tensor_rows(t) != n_out)
        return slmc_fail(err, m->path, "%s: shape [%lld, %lld], expected [%lld, %lld]", name, (long long)t->ne[0],
                         (long long)model_tensor_rows(t), (long long)n_in, (long long)n_out);
    if (!kern_weight_supported(t->type, n_in))
        return slmc_fail(err, m->path, "%s: type %s (rows of %lld) is not supported by the evaluator", name,
                         type_name(t->type), (long long)n_in);
    *w = (llm_weight){
        .w = {.data = t->data, .type = t->type, .n_in = n_in, .n_out = n_out, .row_bytes = model_tensor_row_bytes(t)},
        .name = t->name,
        .tensor = ti,
    };
    if (t->qk_heads > 0) { /* stored in HF order: read logical row r from its HF row */
        int64_t *map = malloc(sizeof(int64_t) * (size_t)n_out);
        if (!map || keep_row_map(lm, map) != 0) {
            free(map);
            return slmc_fail(err, m->path, "%s: out of memory", name);
        }
        for (int64_t r = 0; r < n_out; ++r) map[r] = qk_row_hf_of_gguf(r, n_out, t->qk_heads);
        w->w.row_map = map;
    }
    return 0;
}

/* A 1-D tensor (norm weight or bias) of n values, copied as F32; optional ones may be absent. */
static int load_vector(llm_model *lm, float **out, const char *name, int64_t n, bool optional, slmc_err *err) {
    const model *m = lm->src;
    *out = NULL;
    const int64_t ti = model_find(m, name);
    if (ti < 0) return optional ? 0 : slmc_fail(err, m->path, "tensor %s is missing", name);
    const model_tensor *t = &m->tensors[ti];
    if (t->ne[0] != n || model_tensor_rows(t) != 1)
        return slmc_fail(err, m->path, "%s: %lld values, expected %lld", name, (long long)(t->ne[0] * model_tensor_rows(t)),
                         (long long)n);
    if (!type_is_float(t->type)) return slmc_fail(err, m->path, "%s: type %s, expected a float type", name, type_name(t->type));
    *out = malloc(sizeof(float) * (size_t)n);
    if (!*out) return slmc_fail(err, m->path, "%s: out of memory", name);
    return model_read_rows_f32(m, (uint64_t)ti, 0, 1, *out, err);
}

static int bind_layer(llm_model *lm, int il, slmc_err *err) {
    llm_layer *L = &lm->layers[il];
    const model_config *c = &lm->cfg;
    const int64_t E = c->n_embd, qd = c->n_head * c->head_dim, kvd = c->n_head_kv * c->head_dim, F = c->n_ff;
    char name[96];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s, il), name)
    if (load_vector(lm, &L->attn_norm, NAME("attn_norm.weight"), E, false, err) ||
        bind_weight(lm, &L->wq, NAME("attn_q.weight"), E, qd, err) ||
        bind_weight(lm, &L->wk, NAME("attn_k.weight"), E, kvd, err) ||
        bind_weight(lm, &L->wv, NAME("attn_v.weight"), E, kvd, err) ||
        bind_weight(lm, &L->wo, NAME("attn_output.weight"), qd, E, err) ||
        load_vector(lm, &L->bq, NAME("attn_q.bias"), qd, true, err) ||
        load_vector(lm, &L->bk, NAME("attn_k.bias"), kvd, true, err) ||
        load_vector(lm, &L->bv, NAME("attn_v.bias"), kvd, true, err) ||
        load_vector(lm, &L->ffn_norm, NAME("ffn_norm.weight"), E, false, err) ||
        bind_weight(lm, &L->w_gate, NAME("ffn_gate.weight"), E, F, err) ||
        bind_weight(lm, &L->w_up, NAME("ffn_up.weight"), E, F, err) ||
        bind_weight(lm, &L->w_down, NAME("ffn_down.weight"), F, E, err))
        return -1;
#undef NAME
    return 0;
}

int llm_model_init(llm_model *lm, const model *m, slmc_err *err) {
    memset(lm, 0, sizeof *lm);
    lm->src = m;
    const model_config *c = &m->cfg;
    const arch_desc *family = arch_by_name(c->arch);
    if (!family)
        return slmc_fail(err, m->path, "architecture '%s' is not supported by the evaluator (%s)", c->arch,
                         arch_names());
    /* the pairing of rotated dimensions: llama's Q/K rows are stored permuted for NORM pairs */
    lm->rope_neox = family->rope == ROPE_NEOX;
    /* the view's config with the defaults the engine relies on filled in */
    model_config *r = &lm->cfg;
    *r = *c;
    r->n_head_kv = c->n_head_kv > 0 ? c->n_head_kv : c->n_head;
    r->head_dim = c->head_dim > 0 ? c->head_dim : (c->n_head > 0 ? c->n_embd / c->n_head : 0);
    r->n_rot = c->n_rot > 0 ? c->n_rot : r->head_dim;
    r->rope_freq_base = c->rope_freq_base > 0 ? c->rope_freq_base : 10000.f;
    lm->freq_scale = 1.f;
    if (r->n_embd <= 0 || r->n_layer <= 0 || r->n_head <= 0 || r->n_ff <= 0 || r->head_dim <= 0)
        return slmc_fail(err, m->path, "bad dimensions: n_embd %lld, n_layer %lld, n_head %lld, n_ff %lld",
                         (long long)r->n_embd, (long long)r->n_layer, (long long)r->n_head, (long long)r->n_ff);
    if (r->n_head % r->n_head_kv != 0)
        return slmc_fail(err, m->path, "head_count %lld is not a multiple of head_count_kv %lld", (long long)r->n_head,
                         (long long)r->n_head_kv);
    if (r->n_rot % 2 != 0 || r->n_rot > r->head_dim)
        return slmc_fail(err, m->path, "rope dimension count %lld must be even and at most the head size %lld",
                         (long long)r->n_rot, (long long)r->head_dim);
    if (c->rope_scaling[0] && strcmp(c->rope_scaling, "none") != 0) {
        if (strcmp(c->rope_scaling, "linear") != 0)
            return slmc_fail(err, m->path, "rope scaling '%s' is not supported by the evaluator (none, linear)",
                             c->rope_scaling);
        if (c->rope_scaling_factor > 0) lm->freq_scale = 1.f / c->rope_scaling_factor; /* positions / factor */
    }

    const int64_t te = model_find(m, "token_embd.weight");
    if (te < 0) return slmc_fail(err, m->path, "tensor token_embd.weight is missing");
    r->n_vocab = model_tensor_rows(&m->tensors[te]);
    r->tied_output = model_find(m, "output.weight") < 0;
    lm->layers = calloc((size_t)r->n_layer, sizeof *lm->layers);
    if (!lm->layers) return slmc_fail(err, m->path, "out of memory");
    int rc = bind_weight(lm, &lm->tok_embd, "token_embd.weight", r->n_embd, r->n_vocab, err);
    for (int il = 0; rc == 0 && il < r->n_layer; ++il) rc = bind_layer(lm, il, err);
    if (rc == 0) rc = load_vector(lm, &lm->output_norm, "output_norm.weight", r->n_embd, false, err);
    if (rc == 0)
        rc = bind_weight(lm, &lm->output, r->tied_output ? "token_embd.weight" : "output.weight", r->n_embd, r->n_vocab,
                         err);
    if (rc != 0) {
        llm_model_free(lm);
        return -1;
    }
    return 0;
}

void llm_model_free(llm_model *lm) {
    if (lm->layers) {
        for (int64_t il = 0; il < lm->cfg.n_layer; ++il) {
            llm_layer *L = &lm->layers[il];
            free(L->attn_norm); free(L->ffn_norm);
            free(L->bq); free(L->bk); free(L->bv);
        }
    }
    free(lm->layers);
    free(lm->output_norm);
    for (size_t i = 0; lm->row_maps && lm->row_maps[i]; ++i) free(lm->row_maps[i]);
    free(lm->row_maps);
    memset(lm, 0, sizeof *lm);
}

/* ===================================================================== context */

int llm_context_init(llm_context *ctx, const llm_model *lm, int n_ctx, int n_batch, slmc_err *err) {
    memset(ctx, 0, sizeof *ctx);
    if (n_ctx <= 0 || n_batch <= 0) return slmc_fail(err, NULL, "context size %d and batch %d must be positive", n_ctx, n_batch);
    if (n_batch > n_ctx) n_batch = n_ctx;
    ctx->lm = lm;
    ctx->n_ctx = n_ctx;
    ctx->n_batch = n_batch;
    const model_config *c = &lm->cfg;
    ctx->kv_dim = c->n_head_kv * c->head_dim;
    ctx->f16_attention = true;
    const size_t B = (size_t)n_batch, E = (size_t)c->n_embd, qd = (size_t)(c->n_head * c->head_dim);
    const size_t cache = (size_t)c->n_layer * (size_t)n_ctx * (size_t)ctx->kv_dim;
    const size_t half_rot = (size_t)c->n_rot / 2;
    ctx->n_threads = omp_get_max_threads(); /* the count -t set; fixed for this context from now on */
    ctx->impl = KERN_AUTO;
    ctx->k_cache = calloc(cache, sizeof(float));
    ctx->v_cache = calloc(cache, sizeof(float));
    ctx->rope_cos = malloc(sizeof(float) * (size_t)n_ctx * (half_rot ? half_rot : 1));
    ctx->rope_sin = malloc(sizeof(float) * (size_t)n_ctx * (half_rot ? half_rot : 1));
    ctx->x = malloc(sizeof(float) * B * E);
    ctx->xb = malloc(sizeof(float) * B * E);
    ctx->xb2 = malloc(sizeof(float) * B * E);
    ctx->q = malloc(sizeof(float) * B * qd);
    ctx->k = malloc(sizeof(float) * B * (size_t)ctx->kv_dim);
    ctx->v = malloc(sizeof(float) * B * (size_t)ctx->kv_dim);
    ctx->att = malloc(sizeof(float) * B * qd);
    ctx->hb = malloc(sizeof(float) * B * (size_t)c->n_ff);
    ctx->hb2 = malloc(sizeof(float) * B * (size_t)c->n_ff);
    ctx->scores = malloc(sizeof(float) * (size_t)ctx->n_threads * (size_t)n_ctx);
    if (!ctx->k_cache || !ctx->v_cache || !ctx->rope_cos || !ctx->rope_sin || !ctx->x || !ctx->xb || !ctx->xb2 ||
        !ctx->q || !ctx->k || !ctx->v || !ctx->att || !ctx->hb || !ctx->hb2 || !ctx->scores) {
        llm_context_free(ctx);
        return slmc_fail(err, NULL, "out of memory for a context of %d positions", n_ctx);
    }
    for (int p = 0; p < n_ctx; ++p)
        kern_rope_table(ctx->rope_cos + (size_t)p * half_rot, ctx->rope_sin + (size_t)p * half_rot, p, c->n_rot,
                        c->rope_freq_base, lm->freq_scale);
    return 0;
}

void llm_context_free(llm_context *ctx) {
    free(ctx->k_cache); free(ctx->v_cache);
    free(ctx->rope_cos); free(ctx->rope_sin);
    free(ctx->x); free(ctx->xb); free(ctx->xb2);
    free(ctx->q); free(ctx->k); free(ctx->v); free(ctx->att);
    free(ctx->hb); free(ctx->hb2); free(ctx->scores);
    memset(ctx, 0, sizeof *ctx);
}

int llm_context_set_threads(llm_context *ctx, int n_threads, slmc_err *err) {
    if (n_threads < 0) return slmc_fail(err, NULL, "thread count %d must be positive (or 0 for the default)", n_threads);
    if (n_threads == 0) n_threads = omp_get_max_threads();
    /* one row of attention scores per thread (see attention()) */
    float *scores = realloc(ctx->scores, sizeof(float) * (size_t)n_threads * (size_t)ctx->n_ctx);
    if (!scores) return slmc_fail(err, NULL, "out of memory for the attention scratch of %d threads", n_threads);
    ctx->scores = scores;
    ctx->n_threads = n_threads;
    return 0;
}

void llm_set_hooks(llm_context *ctx, const llm_hooks *hooks) {
    if (hooks) ctx->hooks = *hooks;
    else memset(&ctx->hooks, 0, sizeof ctx->hooks);
}

/* ===================================================================== forward pass pieces */

/* out = W x for n tokens, telling the matmul_input hook first. */
static int matmul(llm_context *ctx, const llm_weight *w, int layer, const float *x, int n, float *out, slmc_err *err) {
    const llm_hooks *h = &ctx->hooks;
    if (h->matmul_input && h->matmul_input(h->ud, w->name, w->tensor, layer, x, n, w->w.n_in) != 0)
        return slmc_fail(err, NULL, "%s: the matmul_input hook failed", w->name);
    const kern_ctx kc = {.n_threads = ctx->n_threads, .impl = ctx->impl};
    if (kern_matmul(&kc, &w->w, x, n, out, err) != 0) return slmc_fail_prefix(err, w->name);
    return 0;
}

static void rmsnorm_rows(const llm_context *ctx, float *out, const float *x, const float *weight, int n, int64_t dim,
                         float eps) {
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int t = 0; t < n; ++t) kern_rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, weight, dim, eps);
}

static void add_bias(float *x, const float *bias, int n, int64_t dim) {
    if (!bias) return;
    for (int t = 0; t < n; ++t)
        for (int64_t i = 0; i < dim; ++i) x[(size_t)t * dim + i] += bias[i];
}

/* Causal attention of n new tokens at positions pos0.. for layer il, their K and V already
 * in the cache. Numerics as llama.cpp's non-flash CPU path: q rounded to F16, scores scaled
 * by 1/sqrt(head_dim), softmax, probabilities rounded to F16, weighted sum of V.
 * Each thread keeps its scores in its own row of ctx->scores, which has ctx->n_threads rows:
 * the loop must run on at most that many threads, whatever omp_set_num_threads() said since.
 * Every (token, head) is computed whole by one thread, so the result does not depend on
 * the thread count. */
static void attention(llm_context *ctx, int il, int n, int pos0) {
    const model_config *c = &ctx->lm->cfg;
    const int64_t hd = c->head_dim, n_head = c->n_head, group = c->n_head / c->n_head_kv, kvd = ctx->kv_dim;
    const float *kc = ctx->k_cache + (size_t)il * (size_t)ctx->n_ctx * (size_t)kvd;
    const float *vc = ctx->v_cache + (size_t)il * (size_t)ctx->n_ctx * (size_t)kvd;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for num_threads(ctx->n_threads) schedule(dynamic, 1)
    for (int64_t th = 0; th < (int64_t)n * n_head; ++th) {
        const int t = (int)(th / n_head);
        const int64_t h = th % n_head, kvh = h / group;
        const int pos = pos0 + t;
        float *s = ctx->scores + (size_t)omp_get_thread_num() * (size_t)ctx->n_ctx;
        float qh[hd];
        memcpy(qh, ctx->q + (size_t)t * (size_t)(n_head * hd) + h * hd, sizeof qh);
        if (ctx->f16_attention) kern_round_f16(qh, hd);
        for (int j = 0; j <= pos; ++j) s[j] = kern_dot_f32_scalar(hd, qh, kc + (size_t)j * kvd + kvh * hd) * scale;
        kern_softmax(s, pos + 1);
        if (ctx->f16_attention) kern_round_f16(s, pos + 1);
        float *out = ctx->att + (size_t)t * (size_t)(n_head * hd) + h * hd;
        for (int64_t d = 0; d < hd; ++d) out[d] = 0;
        for (int j = 0; j <= pos; ++j) {
            const float p = s[j];
            const float *vr = vc + (size_t)j * kvd + kvh * hd;
            for (int64_t d = 0; d < hd; ++d) out[d] += p * vr[d];
        }
    }
}

/* One transformer block over n tokens (residual stream in ctx->x). */
static int layer_forward(llm_context *ctx, int il, int n, int pos0, slmc_err *err) {
    const llm_model *lm = ctx->lm;
    const llm_layer *L = &lm->layers[il];
    const model_config *c = &lm->cfg;
    const int64_t E = c->n_embd, hd = c->head_dim, qd = c->n_head * hd, kvd = ctx->kv_dim, F = c->n_ff;
    const size_t half_rot = (size_t)c->n_rot / 2;
    const llm_hooks *h = &ctx->hooks;

    /* attention block */
    rmsnorm_rows(ctx, ctx->xb, ctx->x, L->attn_norm, n, E, c->rms_eps);
    if (matmul(ctx, &L->wq, il, ctx->xb, n, ctx->q, err) || matmul(ctx, &L->wk, il, ctx->xb, n, ctx->k, err) ||
        matmul(ctx, &L->wv, il, ctx->xb, n, ctx->v, err))
        return -1;
    add_bias(ctx->q, L->bq, n, qd);
    add_bias(ctx->k, L->bk, n, kvd);
    add_bias(ctx->v, L->bv, n, kvd);
    float *kc = ctx->k_cache + ((size_t)il * (size_t)ctx->n_ctx + (size_t)pos0) * (size_t)kvd;
    float *vc = ctx->v_cache + ((size_t)il * (size_t)ctx->n_ctx + (size_t)pos0) * (size_t)kvd;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int t = 0; t < n; ++t) {
        const float *cs = ctx->rope_cos + (size_t)(pos0 + t) * half_rot, *sn = ctx->rope_sin + (size_t)(pos0 + t) * half_rot;
        for (int64_t hh = 0; hh < c->n_head; ++hh)
            kern_rope(ctx->q + (size_t)t * qd + hh * hd, c->n_rot, cs, sn, lm->rope_neox);
        for (int64_t hh = 0; hh < c->n_head_kv; ++hh)
            kern_rope(ctx->k + (size_t)t * kvd + hh * hd, c->n_rot, cs, sn, lm->rope_neox);
        /* into the cache, rounded to F16 as llama.cpp's F16 cache stores them */
        memcpy(kc + (size_t)t * kvd, ctx->k + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
        memcpy(vc + (size_t)t * kvd, ctx->v + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
        if (ctx->f16_attention) {
            kern_round_f16(kc + (size_t)t * kvd, kvd);
            kern_round_f16(vc + (size_t)t * kvd, kvd);
        }
    }
    attention(ctx, il, n, pos0);
    if (h->attn_heads && h->attn_heads(h->ud, il, ctx->att, n, c->n_head, hd) != 0)
        return slmc_fail(err, NULL, "layer %d: the attn_heads hook failed", il);
    if (matmul(ctx, &L->wo, il, ctx->att, n, ctx->xb2, err)) return -1;
    for (size_t i = 0; i < (size_t)n * (size_t)E; ++i) ctx->x[i] += ctx->xb2[i];

    /* feed-forward block */
    rmsnorm_rows(ctx, ctx->xb, ctx->x, L->ffn_norm, n, E, c->rms_eps);
    if (matmul(ctx, &L->w_gate, il, ctx->xb, n, ctx->hb, err) || matmul(ctx, &L->w_up, il, ctx->xb, n, ctx->hb2, err))
        return -1;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int t = 0; t < n; ++t) kern_swiglu(ctx->hb + (size_t)t * F, ctx->hb2 + (size_t)t * F, F);
    if (h->ffn_act && h->ffn_act(h->ud, il, ctx->hb, n, F) != 0)
        return slmc_fail(err, NULL, "layer %d: the ffn_act hook failed", il);
    if (matmul(ctx, &L->w_down, il, ctx->hb, n, ctx->xb2, err)) return -1;
    for (size_t i = 0; i < (size_t)n * (size_t)E; ++i) ctx->x[i] += ctx->xb2[i];
    if (h->layer_out && h->layer_out(h->ud, il, ctx->x, n, E) != 0)
        return slmc_fail(err, NULL, "layer %d: the layer_out hook failed", il);
    return 0;
}

/* One step of at most n_batch tokens. */
static int eval_step(llm_context *ctx, const int32_t *tokens, int n, int pos0, int out_first, float *logits,
                     slmc_err *err) {
    const llm_model *lm = ctx->lm;
    const int64_t E = lm->cfg.n_embd;
    const quant_kernels *qk = quant_get(lm->tok_embd.w.type);
    if (!qk) return slmc_fail(err, lm->src->path, "token_embd.weight: type %s cannot be dequantized", type_name(lm->tok_embd.w.type));
    for (int t = 0; t < n; ++t) {
        if (tokens[t] < 0 || tokens[t] >= lm->cfg.n_vocab)
            return slmc_fail(err, lm->src->path, "token id %d at position %d is outside the vocabulary of %lld", tokens[t],
                             pos0 + t, (long long)lm->cfg.n_vocab);
        qk->dequantize(lm->tok_embd.w.data + lm->tok_embd.w.row_bytes * (uint64_t)tokens[t], ctx->x + (size_t)t * E, E);
    }
    for (int il = 0; il < lm->cfg.n_layer; ++il)
        if (layer_forward(ctx, il, n, pos0, err) != 0) return -1;
    if (out_first >= n) return 0;
    const int n_out = n - out_first;
    rmsnorm_rows(ctx, ctx->xb, ctx->x + (size_t)out_first * E, lm->output_norm, n_out, E, lm->cfg.rms_eps);
    return matmul(ctx, &lm->output, -1, ctx->xb, n_out, logits, err);
}

int llm_eval_out(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, int out_first, float *logits,
                 slmc_err *err) {
    if (n_tokens < 0 || pos0 < 0 || out_first < 0 || out_first > n_tokens)
        return slmc_fail(err, NULL, "bad eval request: %d tokens at %d, logits from %d", n_tokens, pos0, out_first);
    if ((int64_t)pos0 + n_tokens > ctx->n_ctx)
        return slmc_fail(err, NULL, "positions %d..%d exceed the context of %d", pos0, pos0 + n_tokens - 1, ctx->n_ctx);
    if (out_first < n_tokens && !logits) return slmc_fail(err, NULL, "no logits buffer");
    /* split into steps of n_batch: causal attention makes this equivalent to one big batch */
    for (int s = 0; s < n_tokens; s += ctx->n_batch) {
        const int n = n_tokens - s < ctx->n_batch ? n_tokens - s : ctx->n_batch;
        const int first = out_first - s < 0 ? 0 : (out_first - s > n ? n : out_first - s);
        const size_t row = (size_t)ctx->lm->cfg.n_vocab;
        float *out = logits && first < n ? logits + (size_t)(s + first - out_first) * row : NULL;
        if (eval_step(ctx, tokens + s, n, pos0 + s, first, out, err) != 0) return -1;
    }
    return 0;
}

int llm_eval(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, float *logits, slmc_err *err) {
    return llm_eval_out(ctx, tokens, n_tokens, pos0, 0, logits, err);
}
