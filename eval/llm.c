/* llm.c - the Llama-family forward pass (see llm.h). */
#include "llm.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/dots.h"
#include "codec/quants.h"
#include "codec/types.h"
#include "eval/attn_avx2.h"

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

/* The family's tensor `t` (from its table) as a vector: NULL when the family has no such
 * tensor, required unless the table marks it conditional. */
static int load_family_vector(llm_model *lm, float **out, const arch_tensor *t, const char *name, int64_t n,
                              slmc_err *err) {
    *out = NULL;
    if (!t) return 0;
    return load_vector(lm, out, name, n, t->when != WHEN_ALWAYS, err);
}

/* Bind the family's matrix `t` if the family has it (a weight left unbound has n_out 0). */
static int bind_family_weight(llm_model *lm, llm_weight *w, const arch_tensor *t, const char *name, int64_t n_in,
                              int64_t n_out, slmc_err *err) {
    if (!t) return 0;
    return bind_weight(lm, w, name, n_in, n_out, err);
}

static int bind_layer(llm_model *lm, int il, slmc_err *err) {
    llm_layer *L = &lm->layers[il];
    const arch_desc *a = lm->arch;
    const model_config *c = &lm->cfg;
    const int64_t E = c->n_embd, hd = c->head_dim, qd = c->n_head * hd, kvd = c->n_head_kv * hd, F = c->n_ff;
    L->wq.tensor = L->wk.tensor = L->wv.tensor = L->wqkv.tensor = L->w_gate.tensor = -1;
    char name[96];
    /* the name of layer tensor s and its table entry */
#define T(s) (snprintf(name, sizeof name, "blk.%d." s, il), arch_layer_tensor(a, s)), name
    if (load_family_vector(lm, &L->attn_norm, T("attn_norm.weight"), E, err) ||
        load_family_vector(lm, &L->attn_norm_b, T("attn_norm.bias"), E, err) ||
        bind_family_weight(lm, &L->wq, T("attn_q.weight"), E, qd, err) ||
        bind_family_weight(lm, &L->wk, T("attn_k.weight"), E, kvd, err) ||
        bind_family_weight(lm, &L->wv, T("attn_v.weight"), E, kvd, err) ||
        bind_family_weight(lm, &L->wqkv, T("attn_qkv.weight"), E, qd + 2 * kvd, err) ||
        load_family_vector(lm, &L->bq, T("attn_q.bias"), qd, err) ||
        load_family_vector(lm, &L->bk, T("attn_k.bias"), kvd, err) ||
        load_family_vector(lm, &L->bv, T("attn_v.bias"), kvd, err) ||
        load_family_vector(lm, &L->q_norm, T("attn_q_norm.weight"), hd, err) ||
        load_family_vector(lm, &L->k_norm, T("attn_k_norm.weight"), hd, err) ||
        bind_family_weight(lm, &L->wo, T("attn_output.weight"), qd, E, err) ||
        load_family_vector(lm, &L->bo, T("attn_output.bias"), E, err) ||
        load_family_vector(lm, &L->attn_post_norm, T("post_attention_norm.weight"), E, err) ||
        load_family_vector(lm, &L->ffn_norm, T("ffn_norm.weight"), E, err) ||
        load_family_vector(lm, &L->ffn_norm_b, T("ffn_norm.bias"), E, err) ||
        bind_family_weight(lm, &L->w_gate, T("ffn_gate.weight"), E, F, err) ||
        bind_family_weight(lm, &L->w_up, T("ffn_up.weight"), E, L->w_gate.tensor < 0 && a->ffn == FFN_SWIGLU ? 2 * F : F,
                           err) ||
        load_family_vector(lm, &L->b_up, T("ffn_up.bias"), F, err) ||
        bind_family_weight(lm, &L->w_down, T("ffn_down.weight"), F, E, err) ||
        load_family_vector(lm, &L->b_down, T("ffn_down.bias"), E, err) ||
        load_family_vector(lm, &L->ffn_post_norm, T("post_ffw_norm.weight"), E, err))
        return -1;
#undef T
    L->slides = c->n_swa > 0 && arch_layer_slides(a, il);
    return 0;
}

/* A whole-model vector of the family (norm bias, output bias, rope factors). */
static int load_global_vector(llm_model *lm, float **out, const char *name, int64_t n, slmc_err *err) {
    return load_family_vector(lm, out, arch_global(lm->arch, name), name, n, err);
}

int llm_model_init(llm_model *lm, const model *m, slmc_err *err) {
    memset(lm, 0, sizeof *lm);
    lm->src = m;
    const model_config *c = &m->cfg;
    const arch_desc *family = arch_by_name(c->arch);
    if (!family)
        return slmc_fail(err, m->path, "architecture '%s' is not supported by the evaluator (%s)", c->arch,
                         arch_names());
    lm->arch = family;
    /* the pairing of rotated dimensions: llama's Q/K rows are stored permuted for NORM pairs */
    lm->rope_neox = family->rope == ROPE_NEOX;
    /* the view's config with the defaults the engine relies on filled in */
    model_config *r = &lm->cfg;
    *r = *c;
    r->n_head_kv = c->n_head_kv > 0 ? c->n_head_kv : c->n_head;
    r->head_dim = c->head_dim > 0 ? c->head_dim : (c->n_head > 0 ? c->n_embd / c->n_head : 0);
    r->n_rot = c->n_rot > 0 ? c->n_rot : r->head_dim;
    r->rope_freq_base = c->rope_freq_base > 0 ? c->rope_freq_base : 10000.f;
    if (!(r->rope_attn_factor > 0)) r->rope_attn_factor = 1.f;
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
    /* 1/sqrt(head_dim), or 1/sqrt(n_embd / n_head) for the shapes llama.cpp treats so (arch.h) */
    lm->attn_scale = 1.0f / sqrtf((float)arch_query_scalar(family, r->n_layer, r->n_embd, r->n_head, r->head_dim));

    const int64_t te = model_find(m, "token_embd.weight");
    if (te < 0) return slmc_fail(err, m->path, "tensor token_embd.weight is missing");
    r->n_vocab = model_tensor_rows(&m->tensors[te]);
    r->tied_output = model_find(m, "output.weight") < 0;
    lm->layers = calloc((size_t)r->n_layer, sizeof *lm->layers);
    if (!lm->layers) return slmc_fail(err, m->path, "out of memory");
    int rc = bind_weight(lm, &lm->tok_embd, "token_embd.weight", r->n_embd, r->n_vocab, err);
    for (int il = 0; rc == 0 && il < r->n_layer; ++il) rc = bind_layer(lm, il, err);
    if (rc == 0) rc = load_vector(lm, &lm->output_norm, "output_norm.weight", r->n_embd, false, err);
    if (rc == 0) rc = load_global_vector(lm, &lm->output_norm_b, "output_norm.bias", r->n_embd, err);
    if (rc == 0)
        rc = bind_weight(lm, &lm->output, r->tied_output ? "token_embd.weight" : "output.weight", r->n_embd, r->n_vocab,
                         err);
    if (rc == 0) rc = load_global_vector(lm, &lm->output_b, "output.bias", r->n_vocab, err);
    if (rc == 0) rc = load_global_vector(lm, &lm->rope_freqs, "rope_freqs.weight", r->n_rot / 2, err);
    if (rc == 0) rc = load_global_vector(lm, &lm->rope_long, "rope_factors_long.weight", r->n_rot / 2, err);
    if (rc == 0) rc = load_global_vector(lm, &lm->rope_short, "rope_factors_short.weight", r->n_rot / 2, err);
    if (rc == 0 && (!lm->rope_long) != (!lm->rope_short))
        rc = slmc_fail(err, m->path, "rope_factors_long.weight and rope_factors_short.weight come as a pair");
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
            float *vectors[] = {L->attn_norm, L->attn_norm_b, L->bq, L->bk, L->bv, L->q_norm, L->k_norm, L->bo,
                                L->attn_post_norm, L->ffn_norm, L->ffn_norm_b, L->b_up, L->b_down, L->ffn_post_norm};
            for (size_t k = 0; k < sizeof vectors / sizeof vectors[0]; ++k) free(vectors[k]);
        }
    }
    free(lm->layers);
    free(lm->output_norm); free(lm->output_norm_b); free(lm->output_b);
    free(lm->rope_freqs); free(lm->rope_long); free(lm->rope_short);
    for (size_t i = 0; lm->row_maps && lm->row_maps[i]; ++i) free(lm->row_maps[i]);
    free(lm->row_maps);
    memset(lm, 0, sizeof *lm);
}

/* ===================================================================== context */

/* n_seq sequences of n_ctx positions side by side in the cache, steps of up to n_batch tokens */
static int context_init(llm_context *ctx, const llm_model *lm, int n_seq, int n_ctx, int n_batch, slmc_err *err) {
    memset(ctx, 0, sizeof *ctx);
    if (n_ctx <= 0 || n_batch <= 0) return slmc_fail(err, NULL, "context size %d and batch %d must be positive", n_ctx, n_batch);
    if (n_batch > n_seq * n_ctx) n_batch = n_seq * n_ctx;
    ctx->lm = lm;
    ctx->n_ctx = n_ctx;
    ctx->n_seq = n_seq;
    ctx->n_batch = n_batch;
    const model_config *c = &lm->cfg;
    ctx->kv_dim = c->n_head_kv * c->head_dim;
    ctx->f16_attention = true;
    const size_t B = (size_t)n_batch, E = (size_t)c->n_embd, qd = (size_t)(c->n_head * c->head_dim);
    const size_t cache = (size_t)c->n_layer * (size_t)n_seq * (size_t)n_ctx * (size_t)ctx->kv_dim;
    const size_t half_rot = (size_t)c->n_rot / 2;
    ctx->n_threads = omp_get_max_threads(); /* the count -t set; fixed for this context from now on */
    ctx->impl = KERN_AUTO;
    ctx->attn_impl = KERN_AUTO;
    const bool fused_qkv = lm->layers[0].wqkv.tensor >= 0, fused_up = lm->layers[0].w_gate.tensor < 0;
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
    ctx->hb = malloc(sizeof(float) * B * (size_t)c->n_ff * (fused_up ? 2 : 1));
    ctx->hb2 = malloc(sizeof(float) * B * (size_t)c->n_ff);
    ctx->scores = malloc(sizeof(float) * (size_t)ctx->n_threads * (size_t)n_ctx);
    bool oom = !ctx->k_cache || !ctx->v_cache || !ctx->rope_cos || !ctx->rope_sin || !ctx->x || !ctx->xb ||
               !ctx->xb2 || !ctx->q || !ctx->k || !ctx->v || !ctx->att || !ctx->hb || !ctx->hb2 || !ctx->scores;
    if (!oom && fused_qkv) oom = !(ctx->qkv = malloc(sizeof(float) * B * (qd + 2 * (size_t)ctx->kv_dim)));
    if (!oom && lm->arch->parallel_block) oom = !(ctx->xb3 = malloc(sizeof(float) * B * E));
    const bool own_swa_rope = c->rope_freq_base_swa > 0;
    if (!oom && own_swa_rope) {
        ctx->rope_cos_swa = malloc(sizeof(float) * (size_t)n_ctx * (half_rot ? half_rot : 1));
        ctx->rope_sin_swa = malloc(sizeof(float) * (size_t)n_ctx * (half_rot ? half_rot : 1));
        oom = !ctx->rope_cos_swa || !ctx->rope_sin_swa;
    }
    if (oom) {
        llm_context_free(ctx);
        return slmc_fail(err, NULL, "out of memory for a context of %d positions", n_ctx);
    }
    /* rope factors: Llama 3's one set, or Phi-3's long set when the context exceeds the
     * original one (llama.cpp's choice by context size) */
    const float *factors = lm->rope_freqs;
    if (lm->rope_long) {
        const int64_t orig = c->rope_scaling_orig_ctx > 0 ? c->rope_scaling_orig_ctx : c->n_ctx_train;
        factors = n_ctx > orig ? lm->rope_long : lm->rope_short;
    }
    for (int p = 0; p < n_ctx; ++p) {
        const size_t at = (size_t)p * half_rot;
        kern_rope_table_ext(ctx->rope_cos + at, ctx->rope_sin + at, p, c->n_rot, c->rope_freq_base, lm->freq_scale,
                            factors, c->rope_attn_factor);
        if (own_swa_rope) /* gemma3's local layers: their own base, no scaling */
            kern_rope_table(ctx->rope_cos_swa + at, ctx->rope_sin_swa + at, p, c->n_rot, c->rope_freq_base_swa, 1.f);
    }
    return 0;
}

int llm_context_init(llm_context *ctx, const llm_model *lm, int n_ctx, int n_batch, slmc_err *err) {
    return context_init(ctx, lm, 1, n_ctx, n_batch, err);
}

int llm_context_init_seqs(llm_context *ctx, const llm_model *lm, int n_seq, int n_ctx, slmc_err *err) {
    memset(ctx, 0, sizeof *ctx);
    if (n_seq <= 0 || n_ctx <= 0 || (int64_t)n_seq * n_ctx > INT_MAX)
        return slmc_fail(err, NULL, "a context of %d sequences of %d positions cannot be made", n_seq, n_ctx);
    return context_init(ctx, lm, n_seq, n_ctx, n_seq * n_ctx, err);
}

void llm_context_free(llm_context *ctx) {
    free(ctx->k_cache); free(ctx->v_cache);
    free(ctx->rope_cos); free(ctx->rope_sin); free(ctx->rope_cos_swa); free(ctx->rope_sin_swa);
    free(ctx->x); free(ctx->xb); free(ctx->xb2); free(ctx->xb3); free(ctx->qkv);
    free(ctx->q); free(ctx->k); free(ctx->v); free(ctx->att);
    free(ctx->hb); free(ctx->hb2); free(ctx->scores);
    kern_scratch_free(&ctx->matmul_scratch);
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

/* out[i] = w[i] x for n tokens and k weights that read the same x (kern_matmul_group: the
 * tokens converted once), telling the matmul_input hook of each first. */
static int matmul_group(llm_context *ctx, const llm_weight *const *w, float *const *out, int k, int layer, const float *x,
                        int n, slmc_err *err) {
    const llm_hooks *h = &ctx->hooks;
    kern_product p[3]; /* Q, K, V at most */
    if (k < 1 || k > 3) return slmc_fail(err, NULL, "matmul: %d products in one group (1 to 3)", k);
    for (int i = 0; i < k; ++i) {
        if (h->matmul_input && h->matmul_input(h->ud, w[i]->name, w[i]->tensor, layer, x, n, w[i]->w.n_in) != 0)
            return slmc_fail(err, NULL, "%s: the matmul_input hook failed", w[i]->name);
        p[i] = (kern_product){.w = &w[i]->w, .y = out[i]};
    }
    const kern_ctx kc = {.n_threads = ctx->n_threads, .impl = ctx->impl, .scratch = &ctx->matmul_scratch};
    if (kern_matmul_group(&kc, p, k, x, n, err) != 0) {
        char names[256] = "";
        for (int i = 0; i < k; ++i)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? " / " : "", w[i]->name);
        return slmc_fail_prefix(err, names);
    }
    return 0;
}

/* out = W x for n tokens, telling the matmul_input hook first. */
static int matmul(llm_context *ctx, const llm_weight *w, int layer, const float *x, int n, float *out, slmc_err *err) {
    return matmul_group(ctx, &w, &out, 1, layer, x, n, err);
}

/* The family's norm of n rows of dim values: RMSNorm, or LayerNorm with its bias. */
static void norm_rows(const llm_context *ctx, float *out, const float *x, const float *weight, const float *bias, int n,
                      int64_t dim) {
    const bool layer_norm = ctx->lm->arch->norm == NORM_LAYER;
    const float eps = ctx->lm->cfg.norm_eps;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int t0 = 0; t0 < n; t0 += 4) { /* four rows at a time (kern_rmsnorm_rows) */
        const int m = n - t0 < 4 ? n - t0 : 4;
        if (!layer_norm) {
            kern_rmsnorm_rows(out + (size_t)t0 * dim, x + (size_t)t0 * dim, weight, m, dim, eps);
            continue;
        }
        for (int t = t0; t < t0 + m; ++t) kern_layernorm(out + (size_t)t * dim, x + (size_t)t * dim, weight, bias, dim, eps);
    }
}

/* RMSNorm of each of n_heads head vectors of hd values (q/k norms; always RMS). */
static void head_norm(const llm_context *ctx, float *x, int64_t n_heads, int64_t hd, const float *weight) {
    const float eps = ctx->lm->cfg.norm_eps;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int64_t h = 0; h < n_heads; h += 4)
        kern_rmsnorm_rows(x + h * hd, x + h * hd, weight, n_heads - h < 4 ? n_heads - h : 4, hd, eps);
}

static void add_bias(float *x, const float *bias, int n, int64_t dim) {
    if (!bias) return;
    for (int t = 0; t < n; ++t)
        for (int64_t i = 0; i < dim; ++i) x[(size_t)t * dim + i] += bias[i];
}

/* true when the attention runs eval/attn_avx2.c (ctx->attn_impl, or ctx->impl when that is
 * KERN_AUTO, resolved on this CPU) */
static bool attn_fast(const llm_context *ctx) {
    return kern_impl_resolve(ctx->attn_impl != KERN_AUTO ? ctx->attn_impl : ctx->impl) == KERN_AVX2;
}

/* The reference attention of token t of the step and query head h over the cached keys in
 * slots first..first+n_keys-1, its scores in s (n_keys floats). */
static void attend_head(llm_context *ctx, const float *kc, const float *vc, int t, int64_t h, int first, int n_keys,
                        float *s) {
    const llm_model *lm = ctx->lm;
    const model_config *c = &lm->cfg;
    const int64_t hd = c->head_dim, n_head = c->n_head, kvh = h / (c->n_head / c->n_head_kv), kvd = ctx->kv_dim;
    const float scale = lm->arch->q_prescale ? 1.0f : lm->attn_scale;
    const float cap = lm->arch->attn_softcap ? c->attn_softcap : 0.f;
    float qh[hd];
    memcpy(qh, ctx->q + (size_t)t * (size_t)(n_head * hd) + h * hd, sizeof qh);
    if (ctx->f16_attention) kern_round_f16(qh, hd);
    for (int j = 0; j < n_keys; ++j) {
        float v = kern_dot_f32_scalar(hd, qh, kc + (size_t)(first + j) * kvd + kvh * hd);
        if (cap > 0) kern_softcap(&v, 1, cap);
        s[j] = v * scale;
    }
    kern_softmax(s, n_keys);
    if (ctx->f16_attention) kern_round_f16(s, n_keys);
    float *out = ctx->att + (size_t)t * (size_t)(n_head * hd) + h * hd;
    for (int64_t d = 0; d < hd; ++d) out[d] = 0;
    for (int j = 0; j < n_keys; ++j) {
        const float p = s[j];
        const float *vr = vc + (size_t)(first + j) * kvd + kvh * hd;
        for (int64_t d = 0; d < hd; ++d) out[d] += p * vr[d];
    }
}

/* Where token t of a step sits: seq_len 0, one sequence continuing at pos0 (its slots in the
 * cache are its positions); otherwise sequences of seq_len tokens side by side from slot 0
 * (llm_eval_seqs), each from position 0. Token t's K and V go to slot pos0 + t either way. */
static int tok_pos(int t, int pos0, int seq_len) { return seq_len ? t % seq_len : pos0 + t; }
static int tok_first_slot(int t, int seq_len) { return seq_len ? t / seq_len * seq_len : 0; }

/* Causal attention of the new tokens t0..t1-1 of a step (placed as tok_pos says) for layer il,
 * their K and V already in the cache. Numerics as llama.cpp's non-flash CPU path: q rounded to F16, scores
 * q.k (soft-capped: gemma2) times the scale (1 when Q was scaled before, as llama.cpp does for
 * q_prescale families), softmax, probabilities rounded to F16, weighted sum of V. A sliding
 * layer sees the keys at positions p with pos - p < n_swa (llama.cpp's SWA mask).
 * The reference (attend_head for each token and head) runs when ctx->attn_impl (or ctx->impl,
 * when attn_impl is KERN_AUTO) is KERN_SCALAR; otherwise, when the CPU has AVX2,
 * attn_group_avx2 computes the same numbers bit for bit, a token and the query heads of one
 * KV head at a time, with lanes over keys and dimensions.
 * The reference keeps its scores in the thread's row of ctx->scores, which has ctx->n_threads
 * rows: the loop must run on at most that many threads, whatever omp_set_num_threads() said
 * since (the fast path allocates its rows per call, and falls back to those when it cannot).
 * Every (token, head) is computed whole by one thread, so the result does not depend on
 * the thread count. */
static void attention(llm_context *ctx, int il, int t0, int t1, int pos0, int seq_len) {
    const llm_model *lm = ctx->lm;
    const model_config *c = &lm->cfg;
    const int64_t hd = c->head_dim, n_head = c->n_head, n_kv = c->n_head_kv, group = n_head / n_kv, kvd = ctx->kv_dim;
    const size_t slots = (size_t)ctx->n_seq * (size_t)ctx->n_ctx;
    const float *kc = ctx->k_cache + (size_t)il * slots * (size_t)kvd;
    const float *vc = ctx->v_cache + (size_t)il * slots * (size_t)kvd;
    const bool slides = lm->layers[il].slides;
#define FIRST_KEY(pos) (slides && (pos) - c->n_swa + 1 > 0 ? (int)((pos) - c->n_swa + 1) : 0)
    if (!attn_fast(ctx)) {
#pragma omp parallel for num_threads(ctx->n_threads) schedule(dynamic, 1)
        for (int64_t th = (int64_t)t0 * n_head; th < (int64_t)t1 * n_head; ++th) {
            const int t = (int)(th / n_head), pos = tok_pos(t, pos0, seq_len), first = FIRST_KEY(pos);
            attend_head(ctx, kc, vc, t, th % n_head, tok_first_slot(t, seq_len) + first, pos - first + 1,
                        ctx->scores + (size_t)omp_get_thread_num() * (size_t)ctx->n_ctx);
        }
        return;
    }
    const float scale = lm->arch->q_prescale ? 1.0f : lm->attn_scale;
    const float cap = lm->arch->attn_softcap ? c->attn_softcap : 0.f;
    /* a unit of work: one token and hpu query heads of one KV head (all of them, sharing the
     * V loads, unless that leaves too few units for the threads: one token, few KV heads) */
    int64_t hpu = group;
    while (hpu % 2 == 0 && (int64_t)(t1 - t0) * (n_head / hpu) < 4 * (int64_t)ctx->n_threads) hpu /= 2;
    const int64_t units_per_token = n_head / hpu;
#pragma omp parallel num_threads(ctx->n_threads)
    {
        float *scratch = malloc(sizeof(float) * (size_t)hpu * (size_t)ctx->n_ctx);
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = (int64_t)t0 * units_per_token; u < (int64_t)t1 * units_per_token; ++u) {
            const int t = (int)(u / units_per_token), pos = tok_pos(t, pos0, seq_len), first = FIRST_KEY(pos);
            const int slot = tok_first_slot(t, seq_len) + first; /* of the first key */
            const int64_t h0 = (u % units_per_token) * hpu, kvh = h0 / group;
            if (!scratch) { /* out of memory: the reference, in this thread's row of ctx->scores */
                for (int64_t h = h0; h < h0 + hpu; ++h)
                    attend_head(ctx, kc, vc, t, h, slot, pos - first + 1,
                                ctx->scores + (size_t)omp_get_thread_num() * (size_t)ctx->n_ctx);
                continue;
            }
            const attn_job job = {
                .q = ctx->q + (size_t)t * (size_t)(n_head * hd) + h0 * hd,
                .k = kc + (size_t)slot * kvd + kvh * hd,
                .v = vc + (size_t)slot * kvd + kvh * hd,
                .stride = kvd,
                .n_keys = pos - first + 1,
                .hd = hd,
                .group = (int)hpu,
                .scale = scale,
                .cap = cap,
                .f16 = ctx->f16_attention,
                .scratch = scratch,
                .out = ctx->att + (size_t)t * (size_t)(n_head * hd) + h0 * hd,
            };
            attn_group_avx2(&job);
        }
        free(scratch);
    }
#undef FIRST_KEY
}

/* Q, K and V of n tokens from the normed input ctx->xb (one fused product for phi3). */
static int qkv_forward(llm_context *ctx, const llm_layer *L, int il, int n, slmc_err *err) {
    const int64_t qd = ctx->lm->cfg.n_head * ctx->lm->cfg.head_dim, kvd = ctx->kv_dim;
    if (L->wqkv.tensor >= 0) { /* rows Q | K | V */
        if (matmul(ctx, &L->wqkv, il, ctx->xb, n, ctx->qkv, err)) return -1;
        const float *r = ctx->qkv;
        for (int t = 0; t < n; ++t, r += qd + 2 * kvd) {
            memcpy(ctx->q + (size_t)t * qd, r, sizeof(float) * (size_t)qd);
            memcpy(ctx->k + (size_t)t * kvd, r + qd, sizeof(float) * (size_t)kvd);
            memcpy(ctx->v + (size_t)t * kvd, r + qd + kvd, sizeof(float) * (size_t)kvd);
        }
    } else {
        const llm_weight *w[3] = {&L->wq, &L->wk, &L->wv};
        float *out[3] = {ctx->q, ctx->k, ctx->v};
        if (matmul_group(ctx, w, out, 3, il, ctx->xb, n, err)) return -1;
    }
    add_bias(ctx->q, L->bq, n, qd);
    add_bias(ctx->k, L->bk, n, kvd);
    add_bias(ctx->v, L->bv, n, kvd);
    return 0;
}

/* The attention block of n tokens from the normed input ctx->xb: every token's K and V into the
 * cache, and the output of tokens t0..t1-1 in rows 0..t1-t0-1 of ctx->xb2. */
static int attention_block(llm_context *ctx, int il, int n, int t0, int t1, int pos0, int seq_len, slmc_err *err) {
    const llm_model *lm = ctx->lm;
    const llm_layer *L = &lm->layers[il];
    const model_config *c = &lm->cfg;
    const int64_t hd = c->head_dim, qd = c->n_head * hd, kvd = ctx->kv_dim;
    const size_t half_rot = (size_t)c->n_rot / 2;
    const llm_hooks *h = &ctx->hooks;
    if (qkv_forward(ctx, L, il, n, err)) return -1;
    if (L->q_norm) head_norm(ctx, ctx->q, (int64_t)n * c->n_head, hd, L->q_norm);
    if (L->k_norm) head_norm(ctx, ctx->k, (int64_t)n * c->n_head_kv, hd, L->k_norm);
    const bool own_rope = L->slides && ctx->rope_cos_swa;
    const float *cos_t = own_rope ? ctx->rope_cos_swa : ctx->rope_cos, *sin_t = own_rope ? ctx->rope_sin_swa : ctx->rope_sin;
    const bool prescale = lm->arch->q_prescale;
    const size_t slots = (size_t)ctx->n_seq * (size_t)ctx->n_ctx;
    float *kc = ctx->k_cache + ((size_t)il * slots + (size_t)pos0) * (size_t)kvd;
    float *vc = ctx->v_cache + ((size_t)il * slots + (size_t)pos0) * (size_t)kvd;
    const bool f16c = attn_fast(ctx); /* kern_have_avx2(): F16C too */
    const kern_impl rope = f16c ? KERN_AVX2 : KERN_SCALAR; /* RoPE follows the attention's loops */
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
    for (int t = 0; t < n; ++t) {
        const size_t pos = (size_t)tok_pos(t, pos0, seq_len);
        const float *cs = cos_t + pos * half_rot, *sn = sin_t + pos * half_rot;
        float *q = ctx->q + (size_t)t * qd;
        for (int64_t hh = 0; hh < c->n_head; ++hh) kern_rope(rope, q + hh * hd, c->n_rot, cs, sn, lm->rope_neox);
        if (prescale)
            for (int64_t i = 0; i < qd; ++i) q[i] *= lm->attn_scale;
        for (int64_t hh = 0; hh < c->n_head_kv; ++hh)
            kern_rope(rope, ctx->k + (size_t)t * kvd + hh * hd, c->n_rot, cs, sn, lm->rope_neox);
        /* into the cache, rounded to F16 as llama.cpp's F16 cache stores them (with F16C along
         * the AVX2 path: the same values) */
        if (ctx->f16_attention && f16c) {
            fp16_round_row_f16c(kc + (size_t)t * kvd, ctx->k + (size_t)t * kvd, kvd);
            fp16_round_row_f16c(vc + (size_t)t * kvd, ctx->v + (size_t)t * kvd, kvd);
            continue;
        }
        memcpy(kc + (size_t)t * kvd, ctx->k + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
        memcpy(vc + (size_t)t * kvd, ctx->v + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
        if (ctx->f16_attention) {
            kern_round_f16(kc + (size_t)t * kvd, kvd);
            kern_round_f16(vc + (size_t)t * kvd, kvd);
        }
    }
    const int m = t1 - t0;
    if (m == 0) return 0;
    attention(ctx, il, t0, t1, pos0, seq_len);
    const float *att = ctx->att + (size_t)t0 * (size_t)qd;
    if (h->attn_heads && h->attn_heads(h->ud, il, att, m, c->n_head, hd) != 0)
        return slmc_fail(err, NULL, "layer %d: the attn_heads hook failed", il);
    if (matmul(ctx, &L->wo, il, att, m, ctx->xb2, err)) return -1;
    add_bias(ctx->xb2, L->bo, m, c->n_embd);
    if (L->attn_post_norm) norm_rows(ctx, ctx->xb2, ctx->xb2, L->attn_post_norm, NULL, m, c->n_embd);
    return 0;
}

/* The feed-forward block of n tokens from the normed input `in`: output in `out`. */
static int ffn_block(llm_context *ctx, int il, int n, const float *in, float *out, slmc_err *err) {
    const llm_model *lm = ctx->lm;
    const llm_layer *L = &lm->layers[il];
    const int64_t F = lm->cfg.n_ff;
    const llm_hooks *h = &ctx->hooks;
    float *act = ctx->hb; /* the input of ffn_down, [n][F] */
    if (lm->arch->ffn == FFN_GELU) { /* down(gelu(up x + b)) + b */
        if (matmul(ctx, &L->w_up, il, in, n, ctx->hb, err)) return -1;
        add_bias(ctx->hb, L->b_up, n, F);
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
        for (int t = 0; t < n; ++t) kern_gelu(ctx->hb + (size_t)t * F, F);
    } else if (L->w_gate.tensor < 0) { /* fused gate_up: rows of 2F, gate half first */
        if (matmul(ctx, &L->w_up, il, in, n, ctx->hb, err)) return -1;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
        for (int t = 0; t < n; ++t) {
            float *g = ctx->hb + (size_t)t * 2 * F;
            kern_swiglu(ctx->impl, g, g + F, F);
            memcpy(ctx->hb2 + (size_t)t * F, g, sizeof(float) * (size_t)F);
        }
        act = ctx->hb2;
    } else {
        const llm_weight *w[2] = {&L->w_gate, &L->w_up};
        float *out[2] = {ctx->hb, ctx->hb2};
        if (matmul_group(ctx, w, out, 2, il, in, n, err)) return -1;
        const bool geglu = lm->arch->ffn == FFN_GEGLU;
#pragma omp parallel for num_threads(ctx->n_threads) schedule(static)
        for (int t = 0; t < n; ++t) {
            if (geglu) kern_geglu(ctx->hb + (size_t)t * F, ctx->hb2 + (size_t)t * F, F);
            else kern_swiglu(ctx->impl, ctx->hb + (size_t)t * F, ctx->hb2 + (size_t)t * F, F);
        }
    }
    if (h->ffn_act && h->ffn_act(h->ud, il, act, n, F) != 0)
        return slmc_fail(err, NULL, "layer %d: the ffn_act hook failed", il);
    if (matmul(ctx, &L->w_down, il, act, n, out, err)) return -1;
    add_bias(out, L->b_down, n, lm->cfg.n_embd);
    if (L->ffn_post_norm) norm_rows(ctx, out, out, L->ffn_post_norm, NULL, n, lm->cfg.n_embd);
    return 0;
}

/* One transformer block over n tokens (residual stream in ctx->x): every token's K and V go to
 * the cache, and the rows t0..t1-1 of ctx->x move on (the others are left as they were: the
 * last layer of a step whose logits need only those rows, as llama.cpp's graph skips them). */
static int layer_forward(llm_context *ctx, int il, int n, int t0, int t1, int pos0, int seq_len, slmc_err *err) {
    const llm_model *lm = ctx->lm;
    const llm_layer *L = &lm->layers[il];
    const int64_t E = lm->cfg.n_embd;
    const int m = t1 - t0;
    const size_t mE = (size_t)m * (size_t)E;
    float *x = ctx->x + (size_t)t0 * (size_t)E;
    const llm_hooks *h = &ctx->hooks;

    norm_rows(ctx, ctx->xb, ctx->x, L->attn_norm, L->attn_norm_b, n, E);
    if (attention_block(ctx, il, n, t0, t1, pos0, seq_len, err)) return -1;
    if (m == 0) return 0;
    if (lm->arch->parallel_block) {
        /* phi2: x + (attn(n) + ffn(n)), both from the attention norm's output */
        if (ffn_block(ctx, il, m, ctx->xb + (size_t)t0 * (size_t)E, ctx->xb3, err)) return -1;
        for (size_t i = 0; i < mE; ++i) x[i] = (ctx->xb2[i] + ctx->xb3[i]) + x[i];
    } else {
        for (size_t i = 0; i < mE; ++i) x[i] += ctx->xb2[i];
        norm_rows(ctx, ctx->xb, x, L->ffn_norm, L->ffn_norm_b, m, E);
        if (ffn_block(ctx, il, m, ctx->xb, ctx->xb2, err)) return -1;
        for (size_t i = 0; i < mE; ++i) x[i] += ctx->xb2[i];
    }
    if (h->layer_out && h->layer_out(h->ud, il, x, m, E) != 0)
        return slmc_fail(err, NULL, "layer %d: the layer_out hook failed", il);
    return 0;
}

/* true when a callback watches the forward pass: then every layer runs every token. */
static bool hooks_set(const llm_hooks *h) { return h->matmul_input || h->attn_heads || h->ffn_act || h->layer_out; }

/* One step of at most n_batch tokens, placed as tok_pos says; the logits of its tokens
 * out_first..out_end-1. */
static int eval_step(llm_context *ctx, const int32_t *tokens, int n, int pos0, int seq_len, int out_first,
                     int out_end, float *logits, slmc_err *err) {
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
    if (lm->arch->embd_scale) { /* gemma: ggml_scale by sqrtf(n_embd) */
        const float sc = sqrtf((float)E);
        for (size_t i = 0; i < (size_t)n * (size_t)E; ++i) ctx->x[i] *= sc;
    }
    /* the last layer takes only the rows whose logits are wanted on to its output (all of them
     * for the hooks); every layer still caches every token's K and V */
    const bool trim = !hooks_set(&ctx->hooks);
    for (int il = 0; il < lm->cfg.n_layer; ++il) {
        const bool last = il == lm->cfg.n_layer - 1;
        const int t0 = last && trim ? out_first : 0, t1 = last && trim ? out_end : n;
        if (layer_forward(ctx, il, n, t0, t1, pos0, seq_len, err) != 0) return -1;
    }
    if (out_first >= out_end) return 0;
    const int n_out = out_end - out_first;
    norm_rows(ctx, ctx->xb, ctx->x + (size_t)out_first * E, lm->output_norm, lm->output_norm_b, n_out, E);
    if (matmul(ctx, &lm->output, -1, ctx->xb, n_out, logits, err)) return -1;
    add_bias(logits, lm->output_b, n_out, lm->cfg.n_vocab);
    if (lm->arch->final_softcap && lm->cfg.final_softcap > 0)
        kern_softcap(logits, (int64_t)n_out * lm->cfg.n_vocab, lm->cfg.final_softcap);
    return 0;
}

static int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

int llm_eval_rows(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, int out_first, int out_end,
                  float *logits, slmc_err *err) {
    if (n_tokens < 0 || pos0 < 0 || out_first < 0 || out_end < out_first || out_end > n_tokens)
        return slmc_fail(err, NULL, "bad eval request: %d tokens at %d, logits of %d..%d", n_tokens, pos0, out_first,
                         out_end - 1);
    if ((int64_t)pos0 + n_tokens > ctx->n_ctx)
        return slmc_fail(err, NULL, "positions %d..%d exceed the context of %d", pos0, pos0 + n_tokens - 1, ctx->n_ctx);
    if (out_first < out_end && !logits) return slmc_fail(err, NULL, "no logits buffer");
    /* split into steps of n_batch: causal attention makes this equivalent to one big batch */
    for (int s = 0; s < n_tokens; s += ctx->n_batch) {
        const int n = n_tokens - s < ctx->n_batch ? n_tokens - s : ctx->n_batch;
        const int first = clamp_int(out_first - s, 0, n), end = clamp_int(out_end - s, 0, n);
        const size_t row = (size_t)ctx->lm->cfg.n_vocab;
        float *out = first < end ? logits + (size_t)(s + first - out_first) * row : NULL;
        if (eval_step(ctx, tokens + s, n, pos0 + s, 0, first, end, out, err) != 0) return -1;
    }
    return 0;
}

int llm_eval_out(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, int out_first, float *logits,
                 slmc_err *err) {
    if (out_first < 0 || out_first > n_tokens)
        return slmc_fail(err, NULL, "bad eval request: %d tokens at %d, logits from %d", n_tokens, pos0, out_first);
    return llm_eval_rows(ctx, tokens, n_tokens, pos0, out_first, n_tokens, logits, err);
}

int llm_eval(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, float *logits, slmc_err *err) {
    return llm_eval_out(ctx, tokens, n_tokens, pos0, 0, logits, err);
}

int llm_eval_seqs(llm_context *ctx, const int32_t *tokens, int n_seq, int seq_len, float *logits, slmc_err *err) {
    if (n_seq <= 0 || seq_len <= 0 || n_seq > ctx->n_seq || seq_len > ctx->n_ctx)
        return slmc_fail(err, NULL, "bad eval request: %d sequences of %d tokens in a context of %d of %d", n_seq, seq_len,
                         ctx->n_seq, ctx->n_ctx);
    if (!logits) return slmc_fail(err, NULL, "no logits buffer");
    const int n = n_seq * seq_len;
    if (n > ctx->n_batch) /* a context made by llm_context_init_seqs takes them in one step */
        return slmc_fail(err, NULL, "%d sequences of %d tokens exceed the batch of %d", n_seq, seq_len, ctx->n_batch);
    return eval_step(ctx, tokens, n, 0, seq_len, 0, n, logits, err);
}
