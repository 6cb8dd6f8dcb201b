/* model.c - the trainable graph of every family: parameters, forward, backward, AdamW, export. */
#include "distill/model.h"

#include <math.h>
#include <stddef.h>
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

/* The family of the config (hp.arch), or NULL. */
static const arch_desc *family_of(const tm_config *c) { return arch_by_name(c->hp.arch); }

/* Where each GGUF tensor of a block, and each whole-model tensor, lives in tm_layer / tm_weights. */
static const struct { const char *gguf; size_t at; } LAYER_SLOTS[] = {
    {"attn_norm.weight", offsetof(tm_layer, attn_norm)},       {"attn_norm.bias", offsetof(tm_layer, attn_norm_b)},
    {"attn_q.weight", offsetof(tm_layer, wq)},                 {"attn_k.weight", offsetof(tm_layer, wk)},
    {"attn_v.weight", offsetof(tm_layer, wv)},                 {"attn_qkv.weight", offsetof(tm_layer, wqkv)},
    {"attn_q.bias", offsetof(tm_layer, bq)},                   {"attn_k.bias", offsetof(tm_layer, bk)},
    {"attn_v.bias", offsetof(tm_layer, bv)},                   {"attn_q_norm.weight", offsetof(tm_layer, q_norm)},
    {"attn_k_norm.weight", offsetof(tm_layer, k_norm)},        {"attn_output.weight", offsetof(tm_layer, wo)},
    {"attn_output.bias", offsetof(tm_layer, bo)},              {"post_attention_norm.weight", offsetof(tm_layer, attn_post_norm)},
    {"ffn_norm.weight", offsetof(tm_layer, ffn_norm)},         {"ffn_norm.bias", offsetof(tm_layer, ffn_norm_b)},
    {"ffn_gate.weight", offsetof(tm_layer, w_gate)},           {"ffn_up.weight", offsetof(tm_layer, w_up)},
    {"ffn_up.bias", offsetof(tm_layer, b_up)},                 {"ffn_down.weight", offsetof(tm_layer, w_down)},
    {"ffn_down.bias", offsetof(tm_layer, b_down)},             {"post_ffw_norm.weight", offsetof(tm_layer, ffn_post_norm)},
};
static const struct { const char *gguf; size_t at; } GLOBAL_SLOTS[] = {
    {"token_embd.weight", offsetof(tm_weights, tok_embd)},     {"output_norm.weight", offsetof(tm_weights, output_norm)},
    {"output_norm.bias", offsetof(tm_weights, output_norm_b)}, {"output.weight", offsetof(tm_weights, output)},
    {"output.bias", offsetof(tm_weights, output_b)},
};
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The tensors of the family the model has: conditional ones by the config, rope factors aside. */
static bool tensor_present(const tm_config *c, const arch_tensor *t) {
    switch (t->when) {
    case WHEN_ALWAYS: return true;
    case WHEN_QKV_BIAS: return c->qkv_bias;
    case WHEN_UNTIED: return !c->hp.tied_output;
    case WHEN_ROPE_FACTORS: default: return false;
    }
}

/* One dimension of a table shape for layer l (0 for DIM_NONE). */
static int64_t dim_size(const tm_config *c, arch_dim d, int l) {
    const model_config *hp = &c->hp;
    const int64_t F = l >= 0 ? c->n_ff[l] : hp->n_ff;
    switch (d) {
    case DIM_VOCAB: return hp->n_vocab;
    case DIM_EMBD: return hp->n_embd;
    case DIM_HEAD: return hp->head_dim;
    case DIM_Q: return hp->n_head * hp->head_dim;
    case DIM_KV: return hp->n_head_kv * hp->head_dim;
    case DIM_QKV: return (hp->n_head + 2 * hp->n_head_kv) * hp->head_dim;
    case DIM_FF: return F;
    case DIM_FF2: return 2 * F;
    case DIM_ROT2: return hp->n_rot / 2;
    case DIM_NONE: default: return 0;
    }
}

/* Append one tensor of the table to the parameters (GGUF write order), counting its elements;
 * matrices decay, vectors (norms, biases) do not. */
static void add_param(train_model *tm, const char *name, const arch_tensor *t, int l) {
    tm_param *p = &tm->tensors[tm->n_tensors++];
    snprintf(p->name, sizeof p->name, "%s", name);
    const bool matrix = t->d1 != DIM_NONE;
    p->n_dims = matrix ? 2 : 1;
    p->ne[0] = matrix ? dim_size(&tm->cfg, t->d1, l) : dim_size(&tm->cfg, t->d0, l); /* GGUF: HF's last dim first */
    p->ne[1] = matrix ? dim_size(&tm->cfg, t->d0, l) : 1;
    p->offset = tm->n_params;
    p->n = (size_t)(p->ne[0] * p->ne[1]);
    p->decay = matrix;
    tm->n_params += p->n;
}

/* Point a tm_weights at the tensors inside one flat vector. */
static void bind_weights(const train_model *tm, float *base, tm_weights *w) {
    tm_layer *layers = w->layers;
    memset(w, 0, sizeof *w);
    memset(layers, 0, sizeof(tm_layer) * (size_t)tm->cfg.hp.n_layer);
    w->layers = layers;
    for (int i = 0; i < tm->n_tensors; i++) {
        const tm_param *p = &tm->tensors[i];
        int l, off = 0;
        if (sscanf(p->name, "blk.%d.%n", &l, &off) == 1 && off > 0) {
            for (size_t s = 0; s < N_OF(LAYER_SLOTS); s++)
                if (strcmp(p->name + off, LAYER_SLOTS[s].gguf) == 0)
                    *(float **)((char *)&layers[l] + LAYER_SLOTS[s].at) = base + p->offset;
        } else {
            for (size_t s = 0; s < N_OF(GLOBAL_SLOTS); s++)
                if (strcmp(p->name, GLOBAL_SLOTS[s].gguf) == 0) *(float **)((char *)w + GLOBAL_SLOTS[s].at) = base + p->offset;
        }
    }
    if (tm->cfg.hp.tied_output) w->output = w->tok_embd;
}

/* Build the tensor table for tm->cfg from its family's tables and allocate the four flat
 * vectors (zeroed). */
static int tm_alloc(train_model *tm, slmc_err *err) {
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const arch_desc *a = family_of(c);
    if (!a) return slmc_fail(err, NULL, "architecture '%s' is not one slmc knows", hp->arch);
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
        hp->n_head % hp->n_head_kv != 0 || hp->head_dim < 1 || hp->n_rot < 0 || hp->n_rot > hp->head_dim ||
        hp->n_rot % 2 != 0 || hp->n_vocab < 2)
        return slmc_fail(err, NULL,
                         "unsupported model shape: %lld layers, width %lld, %lld heads, %lld kv heads, head size %lld",
                         (long long)hp->n_layer, (long long)hp->n_embd, (long long)hp->n_head,
                         (long long)hp->n_head_kv, (long long)hp->head_dim);
    for (int l = 0; l < hp->n_layer; l++)
        if (c->n_ff[l] < 1) return slmc_fail(err, NULL, "layer %d has an empty feed-forward block", l);
    tm->tensors = calloc((size_t)(a->n_globals + a->n_layer_tensors * hp->n_layer), sizeof *tm->tensors);
    tm->w.layers = calloc((size_t)hp->n_layer, sizeof(tm_layer));
    tm->g.layers = calloc((size_t)hp->n_layer, sizeof(tm_layer));
    if (!tm->tensors || !tm->w.layers || !tm->g.layers) return slmc_fail(err, NULL, "out of memory");
    /* GGUF write order: globals[0] (token_embd), the blocks, the other globals */
    char name[TM_NAME_MAX];
    add_param(tm, a->globals[0].gguf, &a->globals[0], -1);
    for (int l = 0; l < hp->n_layer; l++)
        for (int i = 0; i < a->n_layer_tensors; i++) {
            const arch_tensor *t = &a->layer[i];
            if (!tensor_present(c, t)) continue;
            snprintf(name, sizeof name, "blk.%d.%s", l, t->gguf);
            add_param(tm, name, t, l);
        }
    for (int i = 1; i < a->n_globals; i++)
        if (tensor_present(c, &a->globals[i])) add_param(tm, a->globals[i].gguf, &a->globals[i], -1);
    size_t bytes = sizeof(float) * tm->n_params;
    tm->params = calloc(1, bytes);
    tm->grads = calloc(1, bytes);
    tm->adam_m = calloc(1, bytes);
    tm->adam_v = calloc(1, bytes);
    if (!tm->params || !tm->grads || !tm->adam_m || !tm->adam_v)
        return slmc_fail(err, NULL, "out of memory for %zu parameters", tm->n_params);
    bind_weights(tm, tm->params, &tm->w);
    bind_weights(tm, tm->grads, &tm->g);
    tm->n_base = tm->n_tensors;
    return 0;
}

static void consts_free(tm_config *c) {
    for (int i = 0; i < c->n_consts; i++) free(c->consts[i].data);
    c->n_consts = 0;
}

/* Deep copy of the config (n_ff and the constants are owned). */
static int copy_config(tm_config *dst, const tm_config *src, slmc_err *err) {
    *dst = *src;
    dst->n_consts = 0;
    dst->n_ff = malloc(sizeof(int) * (size_t)(src->hp.n_layer > 0 ? src->hp.n_layer : 1));
    if (!dst->n_ff) return slmc_fail(err, NULL, "out of memory");
    if (src->hp.n_layer > 0) memcpy(dst->n_ff, src->n_ff, sizeof(int) * (size_t)src->hp.n_layer);
    for (int i = 0; i < src->n_consts; i++) {
        tm_const *d = &dst->consts[i];
        *d = src->consts[i];
        d->data = malloc(sizeof(float) * (size_t)(d->n > 0 ? d->n : 1));
        if (!d->data) return slmc_fail(err, NULL, "out of memory");
        memcpy(d->data, src->consts[i].data, sizeof(float) * (size_t)d->n);
        dst->n_consts = i + 1;
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
    if (!family) return slmc_fail(err, m->path, "architecture '%s' cannot be trained (slmc does not know it)", mc->arch);
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
    c->qkv_bias = model_find(m, "blk.0.attn_q.bias") >= 0;
    c->n_ff = malloc(sizeof(int) * (size_t)(hp->n_layer > 0 ? hp->n_layer : 1));
    if (!c->n_ff) return slmc_fail(err, m->path, "out of memory");
    /* the FFN width of each layer comes from its tensors: a pruned model may vary it */
    for (int l = 0; l < hp->n_layer; l++) {
        char name[TM_NAME_MAX];
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        int64_t ti = model_find(m, name);
        if (ti < 0) return slmc_fail(err, m->path, "has no tensor %s", name);
        c->n_ff[l] = (int)m->tensors[ti].ne[0];
    }
    /* the rope factor tensors the file has: constants of the rope */
    for (int i = 0; i < family->n_globals; i++) {
        const arch_tensor *t = &family->globals[i];
        const int64_t ti = t->when == WHEN_ROPE_FACTORS ? model_find(m, t->gguf) : -1;
        if (ti < 0 || c->n_consts == TM_MAX_CONSTS) continue;
        tm_const *k = &c->consts[c->n_consts];
        snprintf(k->name, sizeof k->name, "%s", t->gguf);
        k->n = hp->n_rot / 2;
        k->data = malloc(sizeof(float) * (size_t)(k->n > 0 ? k->n : 1));
        if (!k->data) return slmc_fail(err, m->path, "out of memory");
        c->n_consts++;
        if (read_tensor_f32(m, ti, k->data, (size_t)k->n, err) != 0) return -1;
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
        bool bias = strstr(p->name, ".bias") != NULL, norm = !bias && strstr(p->name, "norm") != NULL;
        for (size_t j = 0; j < p->n; j++) x[j] = norm ? 1.0f : bias ? 0.0f : 0.02f * rng_normal(&s);
    }
    return 0;
}

/* Append one 2-D tensor after the model's (rows x cols), zero in all four vectors; the vectors
 * move, so the weight views are bound again. Returns its index, or -1. */
static int append_matrix(train_model *tm, const char *name, int64_t rows, int64_t cols, slmc_err *err) {
    tm_param *t = realloc(tm->tensors, sizeof *t * (size_t)(tm->n_tensors + 1));
    if (!t) return slmc_fail(err, NULL, "out of memory");
    tm->tensors = t;
    tm_param *p = &tm->tensors[tm->n_tensors];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n_dims = 2;
    p->ne[0] = cols;
    p->ne[1] = rows;
    p->offset = tm->n_params;
    p->n = (size_t)(rows * cols);
    p->decay = false;
    const size_t old = tm->n_params;
    float **vec[] = {&tm->params, &tm->grads, &tm->adam_m, &tm->adam_v};
    for (int v = 0; v < 4; v++) {
        float *g = realloc(*vec[v], sizeof(float) * (old + p->n));
        if (!g) return slmc_fail(err, NULL, "out of memory for %s", name);
        memset(g + old, 0, sizeof(float) * p->n);
        *vec[v] = g;
    }
    tm->n_params += p->n;
    bind_weights(tm, tm->params, &tm->w);
    bind_weights(tm, tm->grads, &tm->g);
    return tm->n_tensors++;
}

int tm_add_lora(train_model *tm, int rank, float alpha, uint64_t seed, slmc_err *err) {
    if (rank < 1 || !(alpha > 0)) return slmc_fail(err, NULL, "LoRA needs a rank >= 1 and alpha > 0");
    if (tm->lora_rank) return slmc_fail(err, NULL, "the model has adapters already");
    if (tm->B) return slmc_fail(err, NULL, "add LoRA adapters before planning the batch");
    if (tm->n_tensors != tm->n_base) return slmc_fail(err, NULL, "add LoRA adapters before any other matrix");
    /* the block matrices: 2-D tensors inside blk.N */
    int n = 0;
    for (int i = 0; i < tm->n_base; i++) n += tm->tensors[i].n_dims == 2 && strncmp(tm->tensors[i].name, "blk.", 4) == 0;
    tm->lora = calloc((size_t)(n > 0 ? n : 1), sizeof *tm->lora);
    if (!tm->lora) return slmc_fail(err, NULL, "out of memory");
    for (int i = 0; i < tm->n_base; i++) {
        const tm_param w = tm->tensors[i];
        if (w.n_dims != 2 || strncmp(w.name, "blk.", 4) != 0) continue;
        tm_lora *l = &tm->lora[tm->n_lora++];
        l->base = i;
        /* A [rank][in], B [out][rank], named after W ("blk.0.attn_q.weight" -> "blk.0.attn_q.lora_a") */
        char name[TM_NAME_MAX];
        const int stem = (int)(strlen(w.name) > 7 ? strlen(w.name) - 7 : strlen(w.name)); /* without ".weight" */
        snprintf(name, sizeof name, "%.*s.lora_a", stem, w.name);
        if ((l->a = append_matrix(tm, name, rank, w.ne[0], err)) < 0) return -1;
        snprintf(name, sizeof name, "%.*s.lora_b", stem, w.name);
        if ((l->b = append_matrix(tm, name, w.ne[1], rank, err)) < 0) return -1;
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
    for (int i = 0; i < tm->n_lora; i++) { /* A ~ N(0, 1/in), B = 0 */
        const tm_param *a = &tm->tensors[tm->lora[i].a];
        const float sd = 1.0f / sqrtf((float)a->ne[0]);
        for (size_t j = 0; j < a->n; j++) tm->params[a->offset + j] = sd * rng_normal(&s);
    }
    tm->lora_rank = rank;
    tm->lora_scale = alpha / (float)rank;
    return 0;
}

int tm_add_matrix(train_model *tm, const char *name, int64_t rows, int64_t cols, uint64_t seed, slmc_err *err) {
    if (tm->B) return slmc_fail(err, NULL, "add %s before planning the batch", name);
    if (rows < 1 || cols < 1) return slmc_fail(err, NULL, "%s: empty shape", name);
    const int i = append_matrix(tm, name, rows, cols, err);
    if (i < 0) return -1;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 11;
    const tm_param *p = &tm->tensors[i];
    const float sd = 1.0f / sqrtf((float)cols);
    for (size_t j = 0; j < p->n; j++) tm->params[p->offset + j] = sd * rng_normal(&s);
    return i;
}

/* The adapter on the matrix at `w` (a pointer into params), or NULL. */
static const tm_lora *lora_of(const train_model *tm, const float *w) {
    for (int i = 0; i < tm->n_lora; i++)
        if (tm->params + tm->tensors[tm->lora[i].base].offset == w) return &tm->lora[i];
    return NULL;
}

static void acts_free(tm_acts *a) {
    float **f[] = {&a->res, &a->ln1, &a->mean1, &a->rstd1, &a->q_raw, &a->k_raw, &a->rstd_q, &a->rstd_k, &a->q,
                   &a->k, &a->v, &a->att, &a->atty, &a->ao, &a->rstd_ao, &a->res_mid, &a->ln2, &a->mean2, &a->rstd2,
                   &a->gate, &a->up, &a->h, &a->fo, &a->rstd_fo, &a->lnf, &a->meanf, &a->rstdf, &a->logits,
                   &a->dlogits, &a->wide, &a->dres, &a->dln, &a->dq, &a->dk, &a->dv, &a->dq_raw, &a->dk_raw,
                   &a->datty, &a->dgate, &a->dup, &a->dh, &a->tmp, &a->dtmp};
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
    free(tm->rope_cos_swa);
    free(tm->rope_sin_swa);
    free(tm->params);
    free(tm->grads);
    free(tm->adam_m);
    free(tm->adam_v);
    free(tm->tensors);
    free(tm->w.layers);
    free(tm->g.layers);
    free(tm->cfg.n_ff);
    consts_free(&tm->cfg);
    free(tm->lora);
    free(tm->lora_h);
    free(tm->lora_dh);
    free(tm->lora_y);
    memset(tm, 0, sizeof *tm);
}

/* ---------------------------------------------------------------------------------------
 * activations
 * ------------------------------------------------------------------------------------- */

/* The rope factor constant named `name`, or NULL. */
static const float *const_named(const tm_config *c, const char *name) {
    for (int i = 0; i < c->n_consts; i++)
        if (strcmp(c->consts[i].name, name) == 0) return c->consts[i].data;
    return NULL;
}

int tm_plan(train_model *tm, int B, int T, slmc_err *err) {
    if (tm->B == B && tm->T == T) return 0;
    acts_free(&tm->a);
    free(tm->rope_cos);
    free(tm->rope_sin);
    free(tm->rope_cos_swa);
    free(tm->rope_sin_swa);
    tm->rope_cos_swa = tm->rope_sin_swa = NULL;
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const arch_desc *fam = family_of(c);
    const tm_layer *w0 = &tm->w.layers[0];
    const size_t N = (size_t)B * T, L = (size_t)hp->n_layer, C = (size_t)hp->n_embd, F = (size_t)max_ff(c);
    const size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t V = (size_t)hp->n_vocab, half = (size_t)(hp->n_rot / 2 > 0 ? hp->n_rot / 2 : 1);
    const size_t wide = qd + 2 * kvd > 2 * F ? qd + 2 * kvd : 2 * F;
    /* which optional buffers the family needs (0 leaves them NULL) */
    const size_t layer_norm = fam->norm == NORM_LAYER, qkn = w0->q_norm != NULL, seq = !fam->parallel_block;
    const size_t apost = w0->attn_post_norm != NULL, fpost = w0->ffn_post_norm != NULL;
    const size_t gated = fam->ffn != FFN_GELU;
    tm_acts *a = &tm->a;
    struct { float **p; size_t n; } plan[] = {
        {&a->res, (L + 1) * N * C}, {&a->ln1, L * N * C}, {&a->mean1, layer_norm * L * N}, {&a->rstd1, L * N},
        {&a->q_raw, qkn * L * N * qd}, {&a->k_raw, qkn * L * N * kvd}, {&a->rstd_q, qkn * L * N * hp->n_head},
        {&a->rstd_k, qkn * L * N * hp->n_head_kv}, {&a->q, L * N * qd}, {&a->k, L * N * kvd}, {&a->v, L * N * kvd},
        {&a->att, L * (size_t)B * hp->n_head * T * T}, {&a->atty, L * N * qd}, {&a->ao, apost * L * N * C},
        {&a->rstd_ao, apost * L * N}, {&a->res_mid, seq * L * N * C}, {&a->ln2, seq * L * N * C},
        {&a->mean2, seq * layer_norm * L * N}, {&a->rstd2, seq * L * N}, {&a->gate, gated * L * N * F},
        {&a->up, L * N * F}, {&a->h, L * N * F}, {&a->fo, fpost * L * N * C}, {&a->rstd_fo, fpost * L * N},
        {&a->lnf, N * C}, {&a->meanf, layer_norm * N}, {&a->rstdf, N}, {&a->logits, N * V}, {&a->dlogits, N * V},
        {&a->wide, N * wide}, {&a->dres, N * C}, {&a->dln, N * C}, {&a->dq, N * qd}, {&a->dk, N * kvd},
        {&a->dv, N * kvd}, {&a->dq_raw, qkn * N * qd}, {&a->dk_raw, qkn * N * kvd}, {&a->datty, N * qd},
        {&a->dgate, gated * N * F}, {&a->dup, N * F}, {&a->dh, N * F}, {&a->tmp, N * C}, {&a->dtmp, N * C},
        {&tm->rope_cos, (size_t)T * half}, {&tm->rope_sin, (size_t)T * half},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        if (plan[i].n == 0) continue;
        *plan[i].p = calloc(plan[i].n, sizeof(float));
        total += plan[i].n;
        if (!*plan[i].p) {
            tm->B = tm->T = 0;
            return slmc_fail(err, NULL, "out of memory for activations (%zu MB so far) of batch %d x %d",
                             total * 4 >> 20, B, T);
        }
    }
    a->row_loss = calloc(N, sizeof(double));
    if (!a->row_loss) return slmc_fail(err, NULL, "out of memory");
    free(tm->lora_h), free(tm->lora_dh), free(tm->lora_y);
    tm->lora_h = tm->lora_dh = tm->lora_y = NULL;
    if (tm->lora_rank) {
        size_t widest = 0;
        for (int i = 0; i < tm->n_lora; i++) {
            const tm_param *w = &tm->tensors[tm->lora[i].base];
            if ((size_t)w->ne[1] > widest) widest = (size_t)w->ne[1];
        }
        tm->lora_h = calloc(N * (size_t)tm->lora_rank, sizeof(float));
        tm->lora_dh = calloc(N * (size_t)tm->lora_rank, sizeof(float));
        tm->lora_y = calloc(N * widest, sizeof(float));
        if (!tm->lora_h || !tm->lora_dh || !tm->lora_y) return slmc_fail(err, NULL, "out of memory for the adapters");
    }
    /* rope tables: the factors as the engine picks them (Llama 3's one set; Phi-3's short set up to
     * the original context, the long one beyond), the attention factor; gemma3's sliding layers
     * with their own base and no scaling */
    const float *factors = const_named(c, "rope_freqs.weight");
    if (!factors && const_named(c, "rope_factors_long.weight")) {
        const int64_t orig = hp->rope_scaling_orig_ctx > 0 ? hp->rope_scaling_orig_ctx : hp->n_ctx_train;
        factors = const_named(c, T > orig ? "rope_factors_long.weight" : "rope_factors_short.weight");
    }
    const bool own_swa = hp->rope_freq_base_swa > 0 && hp->n_swa > 0;
    if (own_swa) {
        tm->rope_cos_swa = calloc((size_t)T * half, sizeof(float));
        tm->rope_sin_swa = calloc((size_t)T * half, sizeof(float));
        if (!tm->rope_cos_swa || !tm->rope_sin_swa) return slmc_fail(err, NULL, "out of memory");
    }
    const float attn_factor = hp->rope_attn_factor > 0 ? hp->rope_attn_factor : 1.0f;
    for (int p = 0; p < T && hp->n_rot > 0; p++) {
        kern_rope_table_ext(tm->rope_cos + (size_t)p * half, tm->rope_sin + (size_t)p * half, p, hp->n_rot,
                            hp->rope_freq_base, c->freq_scale, factors, attn_factor);
        if (own_swa)
            kern_rope_table(tm->rope_cos_swa + (size_t)p * half, tm->rope_sin_swa + (size_t)p * half, p, hp->n_rot,
                            hp->rope_freq_base_swa, 1.f);
    }
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
    const tm_lora *l = tm->lora_rank ? lora_of(tm, w) : NULL;
    if (l) { /* out += scale · (inp·Aᵀ)·Bᵀ */
        const int r = tm->lora_rank;
        matmul_forward(tm->lora_h, inp, tm->params + tm->tensors[l->a].offset, NULL, N, C, r, &tm->exec);
        matmul_forward(tm->lora_y, tm->lora_h, tm->params + tm->tensors[l->b].offset, NULL, N, r, OC, &tm->exec);
        const size_t n = (size_t)N * OC;
        for (size_t i = 0; i < n; i++) out[i] += tm->lora_scale * tm->lora_y[i];
    }
    tm->sec_matmul += omp_get_wtime() - t;
}
/* With adapters the model's own weights and biases are frozen: only dinp flows through W, and the
 * adapter takes dA, dB (h = inp·Aᵀ recomputed). */
static void mm_bwd(train_model *tm, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                   const float *w, int N, int C, int OC) {
    double t = omp_get_wtime();
    const bool frozen = tm->lora_rank > 0;
    matmul_backward(dinp, frozen ? NULL : dw, frozen ? NULL : db, dout, inp, w, N, C, OC, &tm->exec);
    const tm_lora *l = frozen ? lora_of(tm, w) : NULL;
    if (l) {
        const int r = tm->lora_rank;
        const float *A = tm->params + tm->tensors[l->a].offset, *Bm = tm->params + tm->tensors[l->b].offset;
        float *dA = tm->grads + tm->tensors[l->a].offset, *dB = tm->grads + tm->tensors[l->b].offset;
        const size_t n = (size_t)N * OC;
        for (size_t i = 0; i < n; i++) tm->lora_y[i] = tm->lora_scale * dout[i];
        matmul_forward(tm->lora_h, inp, A, NULL, N, C, r, &tm->exec);
        memset(tm->lora_dh, 0, sizeof(float) * (size_t)N * r);
        matmul_backward(tm->lora_dh, dB, NULL, tm->lora_y, tm->lora_h, Bm, N, r, OC, &tm->exec);
        matmul_backward(dinp, dA, NULL, tm->lora_dh, inp, A, N, C, r, &tm->exec);
    }
    tm->sec_matmul += omp_get_wtime() - t;
}

/* A family's norm (RMSNorm, or LayerNorm with its bias): mean is NULL for RMSNorm. */
static void norm_fwd(const arch_desc *f, float *out, float *mean, float *rstd, const float *inp, const float *w,
                     const float *b, int N, int C, float eps, int nt) {
    if (f->norm == NORM_LAYER) layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps, nt);
    else rmsnorm_forward(out, rstd, inp, w, N, C, eps, nt);
}
static void norm_bwd(const arch_desc *f, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, const float *mean, const float *rstd, int N, int C, int nt) {
    if (f->norm == NORM_LAYER) layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C, nt);
    else rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C, nt);
}

/* Everything one layer's forward and backward share: its shapes, settings and buffers. */
typedef struct layer_view {
    const arch_desc *fam;
    int l, B, T, N, C, NH, NKV, hd, qd, kvd, F, n_rot, nt;
    float eps;
    bool neox;
    const float *cos_t, *sin_t; /* this layer's rope tables */
    attn_opts attn;
    float *res, *res_next, *ln1, *mean1, *rstd1, *q_raw, *k_raw, *rstd_q, *rstd_k, *q, *k, *v, *att, *atty;
    float *ao, *rstd_ao, *res_mid, *ln2, *mean2, *rstd2, *gate, *up, *h, *fo, *rstd_fo;
} layer_view;

static layer_view view_layer(const train_model *tm, int l) {
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const tm_acts *a = &tm->a;
    layer_view v;
    v.fam = family_of(c);
    v.l = l, v.B = tm->B, v.T = tm->T, v.N = tm->B * tm->T, v.C = (int)hp->n_embd;
    v.NH = (int)hp->n_head, v.NKV = (int)hp->n_head_kv, v.hd = (int)hp->head_dim;
    v.qd = v.NH * v.hd, v.kvd = v.NKV * v.hd, v.F = c->n_ff[l], v.n_rot = (int)hp->n_rot;
    v.nt = tm->exec.n_threads, v.eps = hp->norm_eps, v.neox = v.fam->rope == ROPE_NEOX;
    const bool slides = hp->n_swa > 0 && arch_layer_slides(v.fam, l);
    const bool own = slides && tm->rope_cos_swa;
    v.cos_t = own ? tm->rope_cos_swa : tm->rope_cos;
    v.sin_t = own ? tm->rope_sin_swa : tm->rope_sin;
    v.attn.scale = 1.0f / sqrtf((float)arch_query_scalar(v.fam, hp->n_layer, hp->n_embd, hp->n_head, hp->head_dim));
    v.attn.window = slides ? (int)hp->n_swa : 0;
    v.attn.softcap = v.fam->attn_softcap ? hp->attn_softcap : 0.f;
    const size_t N = (size_t)v.N, NC = N * v.C, Fm = (size_t)max_ff(c), L = (size_t)l;
#define AT(p, per) ((p) ? (p) + L * (per) : NULL)
    v.res = a->res + L * NC, v.res_next = a->res + (L + 1) * NC;
    v.ln1 = AT(a->ln1, NC), v.mean1 = AT(a->mean1, N), v.rstd1 = AT(a->rstd1, N);
    v.q_raw = AT(a->q_raw, N * v.qd), v.k_raw = AT(a->k_raw, N * v.kvd);
    v.rstd_q = AT(a->rstd_q, N * v.NH), v.rstd_k = AT(a->rstd_k, N * v.NKV);
    v.q = AT(a->q, N * v.qd), v.k = AT(a->k, N * v.kvd), v.v = AT(a->v, N * v.kvd);
    v.att = AT(a->att, (size_t)v.B * v.NH * v.T * v.T), v.atty = AT(a->atty, N * v.qd);
    v.ao = AT(a->ao, NC), v.rstd_ao = AT(a->rstd_ao, N), v.res_mid = AT(a->res_mid, NC), v.ln2 = AT(a->ln2, NC);
    v.mean2 = AT(a->mean2, N), v.rstd2 = AT(a->rstd2, N);
    v.gate = AT(a->gate, N * Fm), v.up = AT(a->up, N * Fm), v.h = AT(a->h, N * Fm);
    v.fo = AT(a->fo, NC), v.rstd_fo = AT(a->rstd_fo, N);
#undef AT
    return v;
}

/* Copy columns [c0, c0 + n) of each row of a [N][width] array to a [N][n] one, or back (add). */
static void take_cols(float *dst, const float *src, int N, int width, int c0, int n) {
    for (int r = 0; r < N; r++) memcpy(dst + (size_t)r * n, src + (size_t)r * width + c0, sizeof(float) * (size_t)n);
}
static void put_cols(float *dst, const float *src, int N, int width, int c0, int n) {
    for (int r = 0; r < N; r++) memcpy(dst + (size_t)r * width + c0, src + (size_t)r * n, sizeof(float) * (size_t)n);
}

/* The attention block from ln1: its output (before the residual add) in `out`. */
static void attention_block_fwd(train_model *tm, const tm_layer *w, const layer_view *v, float *out) {
    const int N = v->N, C = v->C, nt = v->nt;
    float *wide = tm->a.wide;
    float *q = v->q_raw ? v->q_raw : v->q, *k = v->k_raw ? v->k_raw : v->k;
    if (w->wqkv) { /* rows Q | K | V */
        const int width = v->qd + 2 * v->kvd;
        mm_fwd(tm, wide, v->ln1, w->wqkv, NULL, N, C, width);
        take_cols(q, wide, N, width, 0, v->qd);
        take_cols(k, wide, N, width, v->qd, v->kvd);
        take_cols(v->v, wide, N, width, v->qd + v->kvd, v->kvd);
    } else {
        mm_fwd(tm, q, v->ln1, w->wq, w->bq, N, C, v->qd);
        mm_fwd(tm, k, v->ln1, w->wk, w->bk, N, C, v->kvd);
        mm_fwd(tm, v->v, v->ln1, w->wv, w->bv, N, C, v->kvd);
    }
    if (v->q_raw) { /* each head's q and k normalized over its head_dim values (qwen3, gemma3) */
        rmsnorm_forward(v->q, v->rstd_q, v->q_raw, w->q_norm, N * v->NH, v->hd, v->eps, nt);
        rmsnorm_forward(v->k, v->rstd_k, v->k_raw, w->k_norm, N * v->NKV, v->hd, v->eps, nt);
    }
    rope_forward(v->q, v->cos_t, v->sin_t, N, v->T, v->NH, v->hd, v->n_rot, v->neox, nt);
    rope_forward(v->k, v->cos_t, v->sin_t, N, v->T, v->NKV, v->hd, v->n_rot, v->neox, nt);
    attention_forward_ex(v->atty, v->att, v->q, v->k, v->v, v->B, v->T, v->NH, v->NKV, v->hd, &v->attn, nt);
    if (w->attn_post_norm) {
        mm_fwd(tm, v->ao, v->atty, w->wo, w->bo, N, v->qd, C);
        rmsnorm_forward(out, v->rstd_ao, v->ao, w->attn_post_norm, N, C, v->eps, nt);
    } else {
        mm_fwd(tm, out, v->atty, w->wo, w->bo, N, v->qd, C);
    }
}

/* Backward of the attention block: dout is the gradient of its output; ACCUMULATES the gradient
 * of ln1 into tm->a.dln. */
static void attention_block_bwd(train_model *tm, const tm_layer *w, tm_layer *g, const layer_view *v, float *dout) {
    tm_acts *a = &tm->a;
    const int N = v->N, C = v->C, nt = v->nt;
    float *dao = dout;
    if (w->attn_post_norm) {
        memset(a->dtmp, 0, sizeof(float) * (size_t)N * C);
        rmsnorm_backward(a->dtmp, g->attn_post_norm, dout, v->ao, w->attn_post_norm, v->rstd_ao, N, C, nt);
        dao = a->dtmp;
    }
    memset(a->datty, 0, sizeof(float) * (size_t)N * v->qd);
    memset(a->dq, 0, sizeof(float) * (size_t)N * v->qd);
    memset(a->dk, 0, sizeof(float) * (size_t)N * v->kvd);
    memset(a->dv, 0, sizeof(float) * (size_t)N * v->kvd);
    mm_bwd(tm, a->datty, g->wo, g->bo, dao, v->atty, w->wo, N, v->qd, C);
    attention_backward_ex(a->dq, a->dk, a->dv, a->datty, v->att, v->q, v->k, v->v, v->B, v->T, v->NH, v->NKV, v->hd,
                          &v->attn, nt);
    rope_backward(a->dq, v->cos_t, v->sin_t, N, v->T, v->NH, v->hd, v->n_rot, v->neox, nt);
    rope_backward(a->dk, v->cos_t, v->sin_t, N, v->T, v->NKV, v->hd, v->n_rot, v->neox, nt);
    float *dq = a->dq, *dk = a->dk; /* the gradients of the projections */
    if (v->q_raw) {
        memset(a->dq_raw, 0, sizeof(float) * (size_t)N * v->qd);
        memset(a->dk_raw, 0, sizeof(float) * (size_t)N * v->kvd);
        rmsnorm_backward(a->dq_raw, g->q_norm, a->dq, v->q_raw, w->q_norm, v->rstd_q, N * v->NH, v->hd, nt);
        rmsnorm_backward(a->dk_raw, g->k_norm, a->dk, v->k_raw, w->k_norm, v->rstd_k, N * v->NKV, v->hd, nt);
        dq = a->dq_raw, dk = a->dk_raw;
    }
    if (w->wqkv) {
        const int width = v->qd + 2 * v->kvd;
        put_cols(a->wide, dq, N, width, 0, v->qd);
        put_cols(a->wide, dk, N, width, v->qd, v->kvd);
        put_cols(a->wide, a->dv, N, width, v->qd + v->kvd, v->kvd);
        mm_bwd(tm, a->dln, g->wqkv, NULL, a->wide, v->ln1, w->wqkv, N, C, width);
    } else {
        mm_bwd(tm, a->dln, g->wq, g->bq, dq, v->ln1, w->wq, N, C, v->qd);
        mm_bwd(tm, a->dln, g->wk, g->bk, dk, v->ln1, w->wk, N, C, v->kvd);
        mm_bwd(tm, a->dln, g->wv, g->bv, a->dv, v->ln1, w->wv, N, C, v->kvd);
    }
}

/* The FFN block from `in` (ln2, or ln1 in a parallel block): its output in `out`. */
static void ffn_block_fwd(train_model *tm, const tm_layer *w, const layer_view *v, const float *in, float *out) {
    const int N = v->N, C = v->C, F = v->F, nt = v->nt;
    const int64_t NF = (int64_t)N * F;
    switch (v->fam->ffn) {
    case FFN_GELU: /* down(gelu(up x + b)) + b */
        mm_fwd(tm, v->up, in, w->w_up, w->b_up, N, C, F);
        gelu_forward(v->h, v->up, NF, nt);
        break;
    case FFN_GEGLU:
    case FFN_SWIGLU:
    default:
        if (w->w_gate) {
            mm_fwd(tm, v->gate, in, w->w_gate, NULL, N, C, F);
            mm_fwd(tm, v->up, in, w->w_up, NULL, N, C, F);
        } else { /* phi3's fused gate_up: rows of 2F, the gate half first */
            mm_fwd(tm, tm->a.wide, in, w->w_up, NULL, N, C, 2 * F);
            take_cols(v->gate, tm->a.wide, N, 2 * F, 0, F);
            take_cols(v->up, tm->a.wide, N, 2 * F, F, F);
        }
        if (v->fam->ffn == FFN_GEGLU) geglu_forward(v->h, v->gate, v->up, NF, nt);
        else swiglu_forward(v->h, v->gate, v->up, NF, nt);
        break;
    }
    if (w->ffn_post_norm) {
        mm_fwd(tm, v->fo, v->h, w->w_down, w->b_down, N, F, C);
        rmsnorm_forward(out, v->rstd_fo, v->fo, w->ffn_post_norm, N, C, v->eps, nt);
    } else {
        mm_fwd(tm, out, v->h, w->w_down, w->b_down, N, F, C);
    }
}

/* Backward of the FFN block: dout is the gradient of its output; ACCUMULATES the gradient of
 * its input `in` into tm->a.dln. */
static void ffn_block_bwd(train_model *tm, const tm_layer *w, tm_layer *g, const layer_view *v, const float *in,
                          float *dout) {
    tm_acts *a = &tm->a;
    const int N = v->N, C = v->C, F = v->F, nt = v->nt;
    const size_t NF = (size_t)N * F;
    float *dfo = dout;
    if (w->ffn_post_norm) {
        memset(a->dtmp, 0, sizeof(float) * (size_t)N * C);
        rmsnorm_backward(a->dtmp, g->ffn_post_norm, dout, v->fo, w->ffn_post_norm, v->rstd_fo, N, C, nt);
        dfo = a->dtmp;
    }
    memset(a->dh, 0, sizeof(float) * NF);
    memset(a->dup, 0, sizeof(float) * NF);
    mm_bwd(tm, a->dh, g->w_down, g->b_down, dfo, v->h, w->w_down, N, F, C);
    if (v->fam->ffn == FFN_GELU) {
        gelu_backward(a->dup, a->dh, v->up, (int64_t)NF, nt);
        mm_bwd(tm, a->dln, g->w_up, g->b_up, a->dup, in, w->w_up, N, C, F);
        return;
    }
    memset(a->dgate, 0, sizeof(float) * NF);
    if (v->fam->ffn == FFN_GEGLU) geglu_backward(a->dgate, a->dup, a->dh, v->gate, v->up, (int64_t)NF, nt);
    else swiglu_backward(a->dgate, a->dup, a->dh, v->gate, v->up, (int64_t)NF, nt);
    if (w->w_gate) {
        mm_bwd(tm, a->dln, g->w_gate, NULL, a->dgate, in, w->w_gate, N, C, F);
        mm_bwd(tm, a->dln, g->w_up, NULL, a->dup, in, w->w_up, N, C, F);
    } else {
        put_cols(a->wide, a->dgate, N, 2 * F, 0, F);
        put_cols(a->wide, a->dup, N, 2 * F, F, F);
        mm_bwd(tm, a->dln, g->w_up, NULL, a->wide, in, w->w_up, N, C, 2 * F);
    }
}

void tm_forward(train_model *tm, const int32_t *tokens) {
    const double t_start = omp_get_wtime();
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const arch_desc *fam = family_of(c);
    tm_acts *a = &tm->a;
    const int N = tm->B * tm->T, C = (int)hp->n_embd, L = (int)hp->n_layer, V = (int)hp->n_vocab;
    const size_t NC = (size_t)N * C;
    const int nt = tm->exec.n_threads;
    embedding_forward(a->res, tokens, tm->w.tok_embd, N, C, nt);
    if (fam->embd_scale) { /* gemma: embeddings × √n_embd */
        const float sc = sqrtf((float)C);
        for (size_t i = 0; i < NC; i++) a->res[i] *= sc;
    }
    for (int l = 0; l < L; l++) {
        const tm_layer *w = &tm->w.layers[l];
        const layer_view v = view_layer(tm, l);
        norm_fwd(fam, v.ln1, v.mean1, v.rstd1, v.res, w->attn_norm, w->attn_norm_b, N, C, v.eps, nt);
        attention_block_fwd(tm, w, &v, a->tmp);
        if (fam->parallel_block) { /* phi2: res + attn(ln1) + ffn(ln1) */
            ffn_block_fwd(tm, w, &v, v.ln1, a->dtmp);
            for (size_t i = 0; i < NC; i++) v.res_next[i] = (a->tmp[i] + a->dtmp[i]) + v.res[i];
            continue;
        }
        residual_forward(v.res_mid, v.res, a->tmp, NC, nt);
        norm_fwd(fam, v.ln2, v.mean2, v.rstd2, v.res_mid, w->ffn_norm, w->ffn_norm_b, N, C, v.eps, nt);
        ffn_block_fwd(tm, w, &v, v.ln2, a->tmp);
        residual_forward(v.res_next, v.res_mid, a->tmp, NC, nt);
    }
    norm_fwd(fam, a->lnf, a->meanf, a->rstdf, a->res + L * NC, tm->w.output_norm, tm->w.output_norm_b, N, C,
             hp->norm_eps, nt);
    mm_fwd(tm, a->logits, a->lnf, tm->w.output, tm->w.output_b, N, C, V);
    if (fam->final_softcap && hp->final_softcap > 0)
        softcap_forward(a->logits, a->logits, (int64_t)N * V, hp->final_softcap, nt);
    tm->sec_graph += omp_get_wtime() - t_start;
}

void tm_backward(train_model *tm, const int32_t *tokens) {
    const double t_start = omp_get_wtime();
    const tm_config *c = &tm->cfg;
    const model_config *hp = &c->hp;
    const arch_desc *fam = family_of(c);
    tm_acts *a = &tm->a;
    const int N = tm->B * tm->T, C = (int)hp->n_embd, L = (int)hp->n_layer, V = (int)hp->n_vocab;
    const size_t NC = (size_t)N * C;
    const int nt = tm->exec.n_threads;

    /* output head and final norm: dres becomes the gradient of res[L] */
    if (fam->final_softcap && hp->final_softcap > 0) { /* in place: the gradient before the cap, d(c·tanh(x/c)) */
        const float cap = hp->final_softcap;
        const int64_t n = (int64_t)N * V;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const float y = a->logits[i] / cap;
            a->dlogits[i] *= 1.0f - y * y;
        }
    }
    memset(a->dln, 0, sizeof(float) * NC);
    memset(a->dres, 0, sizeof(float) * NC);
    mm_bwd(tm, a->dln, tm->g.output, tm->g.output_b, a->dlogits, a->lnf, tm->w.output, N, C, V);
    norm_bwd(fam, a->dres, tm->g.output_norm, tm->g.output_norm_b, a->dln, a->res + L * NC, tm->w.output_norm,
             a->meanf, a->rstdf, N, C, nt);

    for (int l = L - 1; l >= 0; l--) {
        const tm_layer *w = &tm->w.layers[l];
        tm_layer *g = &tm->g.layers[l];
        const layer_view v = view_layer(tm, l);
        if (tm->dres_add && tm->dres_add[l + 1]) /* a hidden-state loss on the state after layer l */
            for (size_t i = 0; i < NC; i++) a->dres[i] += tm->dres_add[l + 1][i];
        memset(a->dln, 0, sizeof(float) * NC);
        if (fam->parallel_block) {
            /* res' = res + attn(ln1) + ffn(ln1): dres reaches res, both blocks, and through ln1 the norm */
            memcpy(a->tmp, a->dres, sizeof(float) * NC);
            ffn_block_bwd(tm, w, g, &v, v.ln1, a->tmp);
            memcpy(a->tmp, a->dres, sizeof(float) * NC);
            attention_block_bwd(tm, w, g, &v, a->tmp);
        } else {
            /* res' = res_mid + ffn(ln2): dres flows to res_mid unchanged and into the FFN */
            memcpy(a->tmp, a->dres, sizeof(float) * NC);
            ffn_block_bwd(tm, w, g, &v, v.ln2, a->tmp);
            norm_bwd(fam, a->dres, g->ffn_norm, g->ffn_norm_b, a->dln, v.res_mid, w->ffn_norm, v.mean2, v.rstd2, N, C,
                     nt);
            /* res_mid = res + attn(ln1): dres flows to res unchanged and into attention */
            memset(a->dln, 0, sizeof(float) * NC);
            memcpy(a->tmp, a->dres, sizeof(float) * NC);
            attention_block_bwd(tm, w, g, &v, a->tmp);
        }
        norm_bwd(fam, a->dres, g->attn_norm, g->attn_norm_b, a->dln, v.res, w->attn_norm, v.mean1, v.rstd1, N, C, nt);
    }
    if (fam->embd_scale) {
        const float sc = sqrtf((float)C);
        for (size_t i = 0; i < NC; i++) a->dres[i] *= sc;
    }
    embedding_backward(tm->g.tok_embd, a->dres, tokens, N, C, nt);
    tm->sec_graph += omp_get_wtime() - t_start;
}

void tm_zero_grad(train_model *tm) { memset(tm->grads, 0, sizeof(float) * tm->n_params); }

/* ---------------------------------------------------------------------------------------
 * optimizer
 * ------------------------------------------------------------------------------------- */

#define NORM_CHUNK 65536 /* partial sums over fixed chunks, added in order: thread-independent */

/* The first element that trains: the adapters' when there are adapters (they follow the model). */
size_t tm_first_trainable(const train_model *tm) {
    return tm->lora_rank && tm->n_tensors > tm->n_base ? tm->tensors[tm->n_base].offset : 0;
}

double tm_grad_norm(const train_model *tm) {
    const float *grads = tm->grads + tm_first_trainable(tm);
    const size_t n = tm->n_params - tm_first_trainable(tm), n_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
    double *part = malloc(sizeof(double) * (n_chunks ? n_chunks : 1));
    double total = 0;
    if (part) {
#pragma omp parallel for num_threads(tm->exec.n_threads) schedule(static)
        for (size_t ch = 0; ch < n_chunks; ch++) {
            size_t i0 = ch * NORM_CHUNK, i1 = i0 + NORM_CHUNK < n ? i0 + NORM_CHUNK : n;
            double s = 0;
            for (size_t i = i0; i < i1; i++) s += (double)grads[i] * grads[i];
            part[ch] = s;
        }
        for (size_t ch = 0; ch < n_chunks; ch++) total += part[ch];
        free(part);
    } else {
        for (size_t i = 0; i < n; i++) total += (double)grads[i] * grads[i];
    }
    return sqrt(total);
}

void tm_adamw(train_model *tm, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay,
              float grad_scale) {
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    for (int ti = tm->lora_rank ? tm->n_base : 0; ti < tm->n_tensors; ti++) { /* with adapters, only they train */
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
    /* the model's tensors (adapters merged into their matrices), then the rope factor constants
     * as read (not trained) */
    const int nb = tm->n_base, n_out = nb + tm->cfg.n_consts;
    gguf_tensor_info *infos = calloc((size_t)n_out, sizeof *infos);
    void *row = NULL;
    float *merged = NULL;
    int rc = -1;
    gguf_writer w;
    memset(&w, 0, sizeof w);
    bool opened = false;
    if (!infos) { slmc_fail(err, path, "out of memory"); goto done; }
    int64_t max_row = 1;
    for (int i = 0; i < nb; i++) {
        const tm_param *p = &tm->tensors[i];
        infos[i].name = (char *)p->name;
        infos[i].n_dims = p->n_dims;
        infos[i].ne[0] = p->ne[0];
        infos[i].ne[1] = p->ne[1];
        infos[i].ne[2] = infos[i].ne[3] = 1;
        infos[i].type = p->n_dims == 2 ? outtype : GGML_TYPE_F32;
        if (p->ne[0] > max_row) max_row = p->ne[0];
    }
    for (int i = 0; i < tm->cfg.n_consts; i++) {
        gguf_tensor_info *f = &infos[nb + i];
        f->name = (char *)tm->cfg.consts[i].name;
        f->n_dims = 1;
        f->ne[0] = tm->cfg.consts[i].n;
        f->ne[1] = f->ne[2] = f->ne[3] = 1;
        f->type = GGML_TYPE_F32;
    }
    row = malloc((size_t)max_row * sizeof(float));
    merged = malloc((size_t)max_row * sizeof(float));
    if (!row || !merged) { slmc_fail(err, path, "out of memory"); goto done; }
    if (gguf_writer_open(&w, path, &kv, infos, (uint64_t)n_out, err) != 0) goto done;
    opened = true;
    for (int i = 0; i < nb; i++) {
        const tm_param *p = &tm->tensors[i];
        const tm_lora *l = NULL;
        for (int k = 0; k < tm->n_lora; k++)
            if (tm->lora[k].base == i) l = &tm->lora[k];
        for (int64_t r = 0; r < p->ne[1]; r++) {
            const float *x = tm->params + p->offset + (size_t)(r * p->ne[0]);
            if (l) { /* row r of W + scale·B·A */
                const float *A = tm->params + tm->tensors[l->a].offset, *Bm = tm->params + tm->tensors[l->b].offset;
                for (int64_t c = 0; c < p->ne[0]; c++) {
                    double acc = 0;
                    for (int k = 0; k < tm->lora_rank; k++) acc += (double)Bm[r * tm->lora_rank + k] * A[k * p->ne[0] + c];
                    merged[c] = x[c] + (float)(tm->lora_scale * acc);
                }
                x = merged;
            }
            row_from_f32(infos[i].type, x, row, p->ne[0]);
            if (gguf_writer_write(&w, row, (size_t)type_nbytes(infos[i].type, p->ne[0]), err) != 0) goto done;
        }
    }
    for (int i = 0; i < tm->cfg.n_consts; i++)
        if (gguf_writer_write(&w, tm->cfg.consts[i].data, sizeof(float) * (size_t)tm->cfg.consts[i].n, err) != 0)
            goto done;
    if (gguf_writer_finish(&w, err) != 0) goto done;
    rc = 0;
done:
    if (rc != 0 && opened) gguf_writer_abort(&w);
    meta_free(&kv);
    free(infos);
    free(row);
    free(merged);
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
