/* prune.c - plans (what to keep), selecting them from scores, and building the pruned model.
 * See prune.h for what each axis removes. */
#include "prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>

#include "codec/quants.h"
#include "codec/types.h"

/* ===================================================================== plans */

void prune_plan_free(prune_plan *p) {
    for (int64_t l = 0; l < p->n_layer_in; l++) {
        if (p->ffn_down_new) free(p->ffn_down_new[l]);
        if (p->attn_output_new) free(p->attn_output_new[l]);
    }
    free(p->ffn_down_new);
    free(p->attn_output_new);
    free(p->keep_layer);
    free(p->heads);
    free(p->kv_heads);
    free(p->ffn);
    free(p->hidden);
    memset(p, 0, sizeof *p);
}

/* Checks shared by every entry point: a model of a known family (formats/arch.h; an input
 * without a known architecture is read with llama's names) with a uniform shape. */
static int check_model(const model *m, slmc_err *err) {
    const model_config *c = &m->cfg;
    if (c->n_layer <= 0 || c->n_embd <= 0 || c->n_ff <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 || c->head_dim <= 0)
        return slmc_fail(err, m->path, "not a transformer with layers, heads and an FFN (architecture '%s')", c->arch);
    if (c->n_head % c->n_head_kv != 0)
        return slmc_fail(err, m->path, "head_count %lld is not a multiple of head_count_kv %lld", (long long)c->n_head,
                         (long long)c->n_head_kv);
    return 0;
}

static int64_t *iota_new(int64_t n) {
    int64_t *v = malloc(sizeof *v * (size_t)(n > 0 ? n : 1));
    if (v)
        for (int64_t i = 0; i < n; i++) v[i] = i;
    return v;
}

int prune_plan_identity(prune_plan *p, const model *m, slmc_err *err) {
    memset(p, 0, sizeof *p);
    if (check_model(m, err) != 0) return -1;
    const model_config *c = &m->cfg;
    const int64_t L = c->n_layer;
    p->n_layer_in = p->n_layer = L;
    p->n_head_in = p->n_head = c->n_head;
    p->n_head_kv_in = p->n_head_kv = c->n_head_kv;
    p->n_ff_in = p->n_ff = c->n_ff;
    p->n_embd_in = p->n_embd = c->n_embd;
    p->keep_layer = malloc(sizeof *p->keep_layer * (size_t)L);
    p->heads = malloc(sizeof *p->heads * (size_t)(L * c->n_head));
    p->kv_heads = malloc(sizeof *p->kv_heads * (size_t)(L * c->n_head_kv));
    p->ffn = malloc(sizeof *p->ffn * (size_t)(L * c->n_ff));
    p->hidden = iota_new(c->n_embd);
    if (!p->keep_layer || !p->heads || !p->kv_heads || !p->ffn || !p->hidden) {
        prune_plan_free(p);
        return slmc_fail(err, m->path, "out of memory for a pruning plan");
    }
    for (int64_t l = 0; l < L; l++) {
        p->keep_layer[l] = true;
        for (int64_t h = 0; h < c->n_head; h++) p->heads[l * c->n_head + h] = h;
        for (int64_t h = 0; h < c->n_head_kv; h++) p->kv_heads[l * c->n_head_kv + h] = h;
        for (int64_t f = 0; f < c->n_ff; f++) p->ffn[l * c->n_ff + f] = f;
    }
    return 0;
}

/* ===================================================================== ranking */

typedef struct ranked {
    float score;
    int64_t index;
} ranked;

/* Descending score; ties keep the lower index first, so rankings are deterministic. */
static int by_score_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int by_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The k highest of scores[idx[0..n)] (or of scores[0..n) when idx is NULL), written to out in
 * ascending index order. NaN scores rank last. Returns -1 when out of memory. */
static int top_k(const float *scores, const int64_t *idx, int64_t n, int64_t k, int64_t *out) {
    ranked *r = malloc(sizeof *r * (size_t)(n > 0 ? n : 1));
    if (!r) return -1;
    for (int64_t i = 0; i < n; i++) {
        r[i].index = idx ? idx[i] : i;
        float s = scores[r[i].index];
        r[i].score = isnan(s) ? -INFINITY : s;
    }
    qsort(r, (size_t)n, sizeof *r, by_score_desc);
    for (int64_t i = 0; i < k; i++) out[i] = r[i].index;
    qsort(out, (size_t)k, sizeof *out, by_i64);
    free(r);
    return 0;
}

/* Heads of one layer: keep n_keep query heads of the layer's scores hs[n_head]. */
static int select_heads(const float *hs, int64_t n_head, int64_t n_kv, int64_t n_keep, prune_head_mode mode,
                        int64_t *heads, int64_t *kv_heads, int64_t *n_kv_out) {
    const int64_t group = n_head / n_kv;
    if (mode == PRUNE_HEADS_AUTO) mode = n_keep % n_kv == 0 ? PRUNE_HEADS_PER_GROUP : PRUNE_HEADS_GROUPS;
    if (mode == PRUNE_HEADS_PER_GROUP) {
        /* the best n_keep / n_kv query heads of every group; every KV head stays */
        const int64_t per = n_keep / n_kv;
        int64_t idx[group > 0 ? group : 1];
        for (int64_t g = 0; g < n_kv; g++) {
            for (int64_t j = 0; j < group; j++) idx[j] = g * group + j;
            if (top_k(hs, idx, group, per, heads + g * per) != 0) return -1;
            kv_heads[g] = g;
        }
        *n_kv_out = n_kv;
        return 0;
    }
    /* whole groups, ranked by the sum of their query heads' scores */
    const int64_t n_groups = n_keep / group;
    float gs[n_kv > 0 ? n_kv : 1];
    for (int64_t g = 0; g < n_kv; g++) {
        gs[g] = 0;
        for (int64_t j = 0; j < group; j++) gs[g] += hs[g * group + j];
    }
    if (top_k(gs, NULL, n_kv, n_groups, kv_heads) != 0) return -1;
    for (int64_t i = 0; i < n_groups; i++)
        for (int64_t j = 0; j < group; j++) heads[i * group + j] = kv_heads[i] * group + j;
    *n_kv_out = n_groups;
    return 0;
}

/* Whether keeping n_keep of n_head query heads fits the KV groups in the given mode. */
static bool heads_fit(int64_t n_head, int64_t n_kv, int64_t n_keep, prune_head_mode mode) {
    const int64_t group = n_head / n_kv;
    bool per_group = n_keep % n_kv == 0, groups = n_keep % group == 0;
    if (n_keep <= 0 || n_keep > n_head) return false;
    return mode == PRUNE_HEADS_PER_GROUP ? per_group : mode == PRUNE_HEADS_GROUPS ? groups : per_group || groups;
}

/* ===================================================================== layer patterns */

/* gemma2 and gemma3 alternate sliding-window and global layers by index (arch_layer_slides),
 * and llama.cpp decides a layer's kind by its index in the file: a plan that drops layers
 * must leave every kept layer at an index of its own kind. */
static bool has_layer_pattern(const arch_desc *a) { return a && (a->swa == SWA_EVEN || a->swa == SWA_5_TO_1); }

static const char *pattern_text(const arch_desc *a) {
    return a->swa == SWA_EVEN ? "layers 0, 2, 4, ... slide, the odd ones attend globally"
                              : "layers 5, 11, 17, ... attend globally, the others slide";
}

/* llama.cpp (b4747) builds gemma2 only at the layer counts of the released models: its graph
 * picks the Q scale by the model size it recognises from block_count (26: 2B, 42: 9B, 46: 27B)
 * and aborts on any other. A plan may change the count only from one of these to another; an
 * input of another count does not load there anyway, and is left alone. */
static const int64_t GEMMA2_LAYER_COUNTS[] = {26, 42, 46};

static bool is_gemma2(const arch_desc *a) { return a && strcmp(a->name, "gemma2") == 0; }

static bool layer_count_loads(const arch_desc *a, int64_t n_in, int64_t n) {
    if (!is_gemma2(a) || n == n_in) return true;
    bool in_known = false, known = false;
    for (size_t i = 0; i < sizeof GEMMA2_LAYER_COUNTS / sizeof GEMMA2_LAYER_COUNTS[0]; i++) {
        in_known |= n_in == GEMMA2_LAYER_COUNTS[i];
        known |= n == GEMMA2_LAYER_COUNTS[i];
    }
    return !in_known || known;
}

static int layer_count_refusal(const model *m, int64_t n_in, int64_t n, slmc_err *err) {
    return slmc_fail(err, m->path,
                     "gemma2: llama.cpp (b4747) builds gemma2 only with 26, 42 or 46 layers (it picks the attention "
                     "scale by the model size it recognises and aborts on any other count), so %lld layers cannot "
                     "become %lld: keep %s",
                     (long long)n_in, (long long)n, n_in > 26 && n_in != 46 ? "26 layers, or all of them" : "every layer");
}

static const char *kind_name(const arch_desc *a, int64_t il) {
    return arch_layer_slides(a, il) ? "sliding-window" : "global";
}

/* The first kept layer whose kind differs from its new index's (its new index in *at), or -1. */
static int64_t pattern_break(const arch_desc *a, const bool *keep, int64_t n, int64_t *at) {
    int64_t j = 0;
    for (int64_t l = 0; l < n; l++) {
        if (!keep[l]) continue;
        if (arch_layer_slides(a, l) != arch_layer_slides(a, j)) {
            *at = j;
            return l;
        }
        j++;
    }
    return -1;
}

/* A finite stand-in for a score (NaN ranks last, as in top_k). */
static double finite_score(float v) {
    return isnan(v) ? -1e30 : v > 1e30f ? 1e30 : v < -1e30f ? -1e30 : (double)v;
}

/* Choose k of the n layers (only allowed ones when allowed is non-NULL) so that every chosen
 * layer keeps its kind at its new index, maximising the sum of score[] (NULL: all 0; ties take
 * the earlier layer). keep[n] receives the choice. Returns 0, 1 when no choice fits the
 * pattern, -1 when out of memory. Dynamic programme over (layer, new index). */
static int pattern_choose(const arch_desc *a, const double *score, const bool *allowed, int64_t n, int64_t k, bool *keep) {
    if (k < 0 || k > n) return 1;
    const int64_t w = k + 1;
    double *f = malloc(sizeof *f * (size_t)((n + 1) * w)); /* f[i][j]: best filling new indices j.. from layers i.. */
    if (!f) return -1;
    for (int64_t j = 0; j <= k; j++) f[n * w + j] = j == k ? 0 : -INFINITY;
#define CAN_TAKE(i, j) ((j) < k && (!allowed || allowed[i]) && arch_layer_slides(a, i) == arch_layer_slides(a, j) && \
                        f[((i) + 1) * w + (j) + 1] > -INFINITY)
#define TAKE(i, j) (f[((i) + 1) * w + (j) + 1] + (score ? score[i] : 0))
    for (int64_t i = n - 1; i >= 0; i--)
        for (int64_t j = 0; j <= k; j++) {
            double best = f[(i + 1) * w + j];
            if (CAN_TAKE(i, j) && TAKE(i, j) >= best) best = TAKE(i, j);
            f[i * w + j] = best;
        }
    int rc = f[0] > -INFINITY ? 0 : 1;
    for (int64_t i = 0, j = 0; i < n; i++) {
        keep[i] = rc == 0 && CAN_TAKE(i, j) && TAKE(i, j) >= f[(i + 1) * w + j];
        j += keep[i];
    }
#undef CAN_TAKE
#undef TAKE
    free(f);
    return rc;
}

/* "1,2,5" of the layers not kept, into buf (cut short with "..." when long). */
static void dropped_list(const bool *keep, int64_t n, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (int64_t l = 0; l < n && len + 24 < cap; l++)
        if (!keep[l]) len += (size_t)snprintf(buf + len, cap - len, "%s%lld", len ? "," : "", (long long)l);
    if (len + 24 >= cap) snprintf(buf + len, cap - len, ",...");
}

/* The refusal of a layer plan that breaks the pattern, with two plans that keep it: the
 * fewest more layers dropped, and as many layers dropped with the most of the plan's kept. */
static int pattern_refusal(const model *m, const arch_desc *a, const bool *keep, int64_t n, slmc_err *err) {
    int64_t at = 0, l = pattern_break(a, keep, n, &at), n_kept = 0;
    for (int64_t i = 0; i < n; i++) n_kept += keep[i];
    bool *alt = malloc(sizeof *alt * (size_t)n);
    double *overlap = malloc(sizeof *overlap * (size_t)n);
    if (!alt || !overlap) {
        free(alt);
        free(overlap);
        return slmc_fail(err, m->path, "out of memory");
    }
    char more[256] = "", same[256] = "";
    for (int64_t k = n_kept - 1; k >= 1; k--)
        if (layer_count_loads(a, n, k) && pattern_choose(a, NULL, keep, n, k, alt) == 0) {
            dropped_list(alt, n, more, sizeof more);
            break;
        }
    for (int64_t i = 0; i < n; i++) overlap[i] = keep[i];
    if (pattern_choose(a, overlap, NULL, n, n_kept, alt) == 0) dropped_list(alt, n, same, sizeof same);
    free(alt);
    free(overlap);
    char hint[600] = "";
    if (more[0] && same[0] && strcmp(more, same) != 0)
        snprintf(hint, sizeof hint, ", e.g. --drop-layers %s, or --drop-layers %s to remove as many layers", more, same);
    else if (more[0] || same[0])
        snprintf(hint, sizeof hint, ", e.g. --drop-layers %s", more[0] ? more : same);
    return slmc_fail(err, m->path,
                     "%s: dropping these layers moves layer %lld (%s) to index %lld, where %s has a %s layer "
                     "(llama.cpp decides by the index: %s); drop layers that keep every kept layer's kind%s",
                     a->name, (long long)l, kind_name(a, l), (long long)at, a->name, kind_name(a, at), pattern_text(a),
                     hint);
}

int prune_select(prune_plan *p, const model *m, const prune_scores *s, const prune_request *r, slmc_err *err) {
    if (prune_plan_identity(p, m, err) != 0) return -1;
    const int64_t L = p->n_layer_in, H = p->n_head_in, HKV = p->n_head_kv_in, F = p->n_ff_in, E = p->n_embd_in;
    if (s->n_layer != L || s->n_head != H || s->n_ff != F || s->n_embd != E) {
        prune_plan_free(p);
        return slmc_fail(err, m->path, "the scores were made for another shape of model");
    }
    if (r->keep_ffn && (r->keep_ffn < 1 || r->keep_ffn > F)) {
        prune_plan_free(p);
        return slmc_fail(err, m->path, "cannot keep %lld of %lld FFN channels", (long long)r->keep_ffn, (long long)F);
    }
    if (r->keep_hidden && (r->keep_hidden < 1 || r->keep_hidden > E)) {
        prune_plan_free(p);
        return slmc_fail(err, m->path, "cannot keep %lld of %lld hidden channels", (long long)r->keep_hidden, (long long)E);
    }
    if (r->keep_layers && (r->keep_layers < 1 || r->keep_layers > L)) {
        prune_plan_free(p);
        return slmc_fail(err, m->path, "cannot keep %lld of %lld layers", (long long)r->keep_layers, (long long)L);
    }
    if (r->keep_heads && !heads_fit(H, HKV, r->keep_heads, r->head_mode)) {
        const char *how = r->head_mode == PRUNE_HEADS_PER_GROUP ? "a multiple of head_count_kv"
                          : r->head_mode == PRUNE_HEADS_GROUPS  ? "a multiple of the group size"
                                                                : "a multiple of head_count_kv or of the group size";
        prune_plan_free(p);
        return slmc_fail(err, m->path, "cannot keep %lld of %lld heads with %lld KV heads: the count must be %s (%lld or %lld)",
                         (long long)r->keep_heads, (long long)H, (long long)HKV, how, (long long)HKV, (long long)(H / HKV));
    }
    const arch_desc *family = arch_by_name(m->cfg.arch);
    const int64_t kept_heads = r->keep_heads ? r->keep_heads : H, kept_width = r->keep_hidden ? r->keep_hidden : E;
    /* gemma*: the token embeddings are scaled by sqrt(n_embd) in the forward pass, and the
     * output is tied to them; a narrower width would weigh the embeddings differently against
     * every layer's output */
    if (family && family->embd_scale && kept_width != E) {
        prune_plan_free(p);
        return slmc_fail(err, m->path,
                         "%s: cannot prune the hidden width: %s multiplies the token embeddings by sqrt(embedding_length) "
                         "(and ties the output to them), so a narrower model would not compute the same function; "
                         "prune heads, FFN channels or layers instead (--heads, --ffn, --layers)",
                         m->cfg.arch, family->name);
    }
    /* llama.cpp sizes these families' attn_q (phi3: attn_qkv's Q rows) as n_embd x n_embd: keep
     * head_count x head size at the embedding width, or the file would not load there */
    if (family && family->q_width_embd && kept_heads * m->cfg.head_dim != kept_width) {
        prune_plan_free(p);
        return slmc_fail(err, m->path,
                         "%s: llama.cpp needs head_count x head size = embedding_length, and %lld x %lld != %lld: "
                         "prune heads and the hidden width together, or only FFN channels and layers",
                         m->cfg.arch, (long long)kept_heads, (long long)m->cfg.head_dim, (long long)kept_width);
    }
    int rc = 0;
    if (r->keep_ffn) {
        p->n_ff = r->keep_ffn;
        for (int64_t l = 0; l < L && rc == 0; l++) rc = top_k(s->ffn + l * F, NULL, F, p->n_ff, p->ffn + l * p->n_ff);
    }
    if (r->keep_heads && rc == 0) {
        p->n_head = r->keep_heads;
        for (int64_t l = 0; l < L && rc == 0; l++)
            rc = select_heads(s->head + l * H, H, HKV, p->n_head, r->head_mode, p->heads + l * p->n_head,
                              p->kv_heads + l * HKV, &p->n_head_kv);
        /* kv_heads was laid out with stride HKV while filling; pack it to stride n_head_kv */
        for (int64_t l = 0; l < L && rc == 0; l++)
            memmove(p->kv_heads + l * p->n_head_kv, p->kv_heads + l * HKV, sizeof *p->kv_heads * (size_t)p->n_head_kv);
    }
    if (r->drop_layers) {
        p->n_layer = 0;
        for (int64_t l = 0; l < L; l++) p->n_layer += (p->keep_layer[l] = !r->drop_layers[l]);
        if (p->n_layer == 0) {
            prune_plan_free(p);
            return slmc_fail(err, m->path, "every layer would be dropped");
        }
        int64_t at;
        if (!layer_count_loads(family, L, p->n_layer)) {
            layer_count_refusal(m, L, p->n_layer, err);
            prune_plan_free(p);
            return -1;
        }
        if (has_layer_pattern(family) && pattern_break(family, p->keep_layer, L, &at) >= 0) {
            pattern_refusal(m, family, p->keep_layer, L, err);
            prune_plan_free(p);
            return -1;
        }
    } else if (r->keep_layers && rc == 0 && !layer_count_loads(family, L, r->keep_layers)) {
        layer_count_refusal(m, L, r->keep_layers, err);
        prune_plan_free(p);
        return -1;
    } else if (r->keep_layers && rc == 0 && has_layer_pattern(family)) {
        /* the most important layers among those that keep the sliding / global pattern */
        double sc[L];
        for (int64_t l = 0; l < L; l++) sc[l] = finite_score(s->layer[l]);
        int pc = pattern_choose(family, sc, NULL, L, r->keep_layers, p->keep_layer);
        if (pc > 0) {
            prune_plan_free(p);
            return slmc_fail(err, m->path,
                             "%s: no %lld of the %lld layers keep their kind (sliding-window or global) at their new "
                             "indices (%s); choose another --layers count, or --drop-layers",
                             m->cfg.arch, (long long)r->keep_layers, (long long)L, pattern_text(family));
        }
        rc = pc;
        p->n_layer = r->keep_layers;
    } else if (r->keep_layers && rc == 0) {
        int64_t keep[L];
        rc = top_k(s->layer, NULL, L, r->keep_layers, keep);
        for (int64_t l = 0; l < L; l++) p->keep_layer[l] = false;
        for (int64_t i = 0; i < r->keep_layers && rc == 0; i++) p->keep_layer[keep[i]] = true;
        p->n_layer = r->keep_layers;
    }
    /* gemma2 / gemma3 27B: llama.cpp recognises the shape by its layer count and then scales
     * Q.K by 1/sqrt(n_embd / n_head) instead of 1/sqrt(head size); the pruned model must get the
     * scale the input has */
    if (family && rc == 0) {
        const int64_t hd = m->cfg.head_dim;
        const int64_t before = arch_query_scalar(family, L, E, H, hd);
        const int64_t after = arch_query_scalar(family, p->n_layer, kept_width, kept_heads, hd);
        if (before != after) {
            const bool wide_in = family->wide_q_layers > 0 && L == family->wide_q_layers;
            prune_plan_free(p);
            return slmc_fail(err, m->path,
                             "%s: llama.cpp scales Q.K by 1/sqrt(embedding_length / head_count) in a %lld-layer model "
                             "and by 1/sqrt(head size) otherwise, so this plan would change the attention scale from "
                             "1/sqrt(%lld) to 1/sqrt(%lld); %s",
                             m->cfg.arch, (long long)family->wide_q_layers, (long long)before, (long long)after,
                             wide_in ? "keep every layer and every head (prune FFN channels)"
                                     : "keep another number of layers");
        }
    }
    if (r->keep_hidden && rc == 0) {
        p->n_embd = r->keep_hidden;
        rc = top_k(s->hidden_total, NULL, E, p->n_embd, p->hidden);
    }
    if (rc != 0) { /* top_k and select_heads fail only when out of memory */
        slmc_fail(err, m->path, "out of memory");
        prune_plan_free(p);
        return -1;
    }
    return 0;
}

/* ===================================================================== tensor shapes */

/* The role of a tensor, from its GGUF name (and the family, for phi3's fused gate_up). */
typedef enum role {
    R_OTHER, R_TOKEN_EMBD, R_OUTPUT,
    R_NORM,       /* [n_embd] vectors: the norms (weights and LayerNorm biases, gemma2/3's post norms) and the
                   * biases of the matrices writing the residual stream (attn_output, ffn_down: phi2) */
    R_Q, R_Q_BIAS, R_KV, R_KV_BIAS,
    R_QKV, R_QKV_BIAS, /* fused Q | K | V rows (phi3) */
    R_ATTN_OUT,
    R_FFN_IN,     /* ffn_gate, ffn_up: [n_ff][n_embd] */
    R_FFN_FUSED,  /* phi3's ffn_up: [2 n_ff][n_embd], gate rows then up rows */
    R_FFN_BIAS,   /* ffn_up.bias [n_ff] (phi2) */
    R_FFN_DOWN,
    R_PER_HEAD,   /* [head_dim] shared by every head: qwen3's / gemma3's attn_q_norm / attn_k_norm; Llama 3's
                   * rope_freqs and phi3's rope_factors_long / _short ([head_dim / 2]) likewise: no axis of the
                   * plan cuts them */
    R_VOCAB,      /* output.bias [n_vocab] (phi2): unchanged */
} role;

static bool is_any(const char *s, const char *const *names) {
    for (; *names; names++)
        if (strcmp(s, *names) == 0) return true;
    return false;
}

static role tensor_role(const arch_desc *a, const char *name, int *layer) {
    *layer = -1;
    static const char *const global_vecs[] = {"output_norm.weight", "output_norm.bias", NULL};
    static const char *const global_per_head[] = {"rope_freqs.weight", "rope_factors_long.weight",
                                                  "rope_factors_short.weight", NULL};
    static const char *const layer_vecs[] = {"attn_norm.weight", "attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias",
                                             "post_attention_norm.weight", "post_ffw_norm.weight",
                                             "attn_output.bias", "ffn_down.bias", NULL};
    if (strcmp(name, "token_embd.weight") == 0) return R_TOKEN_EMBD;
    if (strcmp(name, "output.weight") == 0) return R_OUTPUT;
    if (strcmp(name, "output.bias") == 0) return R_VOCAB;
    if (is_any(name, global_vecs)) return R_NORM;
    if (is_any(name, global_per_head)) return R_PER_HEAD;
    int blk, off = 0;
    if (sscanf(name, "blk.%d.%n", &blk, &off) != 1 || off == 0) return R_OTHER;
    *layer = blk;
    const char *s = name + off;
    if (is_any(s, layer_vecs)) return R_NORM;
    if (!strcmp(s, "attn_q.weight")) return R_Q;
    if (!strcmp(s, "attn_q.bias")) return R_Q_BIAS;
    if (!strcmp(s, "attn_k.weight") || !strcmp(s, "attn_v.weight")) return R_KV;
    if (!strcmp(s, "attn_k.bias") || !strcmp(s, "attn_v.bias")) return R_KV_BIAS;
    if (!strcmp(s, "attn_qkv.weight")) return R_QKV;
    if (!strcmp(s, "attn_qkv.bias")) return R_QKV_BIAS;
    if (!strcmp(s, "attn_output.weight")) return R_ATTN_OUT;
    if (!strcmp(s, "ffn_up.weight")) {
        const arch_tensor *t = arch_layer_tensor(a, "ffn_up.weight");
        return t && t->d0 == DIM_FF2 ? R_FFN_FUSED : R_FFN_IN;
    }
    if (!strcmp(s, "ffn_gate.weight")) return R_FFN_IN;
    if (!strcmp(s, "ffn_up.bias") || !strcmp(s, "ffn_gate.bias")) return R_FFN_BIAS;
    if (!strcmp(s, "ffn_down.weight")) return R_FFN_DOWN;
    if (!strcmp(s, "attn_q_norm.weight") || !strcmp(s, "attn_k_norm.weight")) return R_PER_HEAD;
    return R_OTHER;
}

/* What one tensor becomes: kept rows and columns (NULL = all), and its new block number. */
typedef struct selection {
    bool skip;               /* its layer is dropped */
    int new_layer;           /* renumbered block (-1 outside blocks) */
    int64_t n_rows, n_cols;  /* output shape: rows (ne[1]) and row length (ne[0]) */
    const int64_t *rows;     /* [n_rows] source rows, or NULL for all */
    const int64_t *cols;     /* [n_cols] source columns, or NULL for all */
    int64_t *owned;          /* expanded head rows/columns, freed by selection_free */
} selection;

static void selection_free(selection *s) { free(s->owned); }

/* Head indices -> the row (or column) indices of their head_dim-sized blocks. */
static int64_t *expand_heads(const int64_t *heads, int64_t n, int64_t hd) {
    int64_t *v = malloc(sizeof *v * (size_t)(n * hd > 0 ? n * hd : 1));
    if (v)
        for (int64_t i = 0; i < n; i++)
            for (int64_t d = 0; d < hd; d++) v[i * hd + d] = heads[i] * hd + d;
    return v;
}

/* Work out the selection for tensor t. With lists false only the counts are filled (for
 * counting parameters). Returns -1 when out of memory or the tensor cannot be pruned. */
static int tensor_selection(const prune_plan *p, const model *m, const model_tensor *t, bool lists, selection *s,
                            slmc_err *err) {
    memset(s, 0, sizeof *s);
    const int64_t hd = m->cfg.head_dim;
    int layer;
    role r = tensor_role(arch_by_name(m->cfg.arch), t->name, &layer);
    s->new_layer = -1;
    if (layer >= 0) {
        if (layer >= p->n_layer_in) return slmc_fail(err, m->path, "%s: block %d beyond block_count", t->name, layer);
        if (!p->keep_layer[layer]) { s->skip = true; return 0; }
        s->new_layer = 0;
        for (int l = 0; l < layer; l++) s->new_layer += p->keep_layer[l];
    }
    const bool two_d = t->n_dims >= 2 && t->ne[2] == 1 && t->ne[3] == 1;
    const bool hidden_cut = p->n_embd != p->n_embd_in;
    const int64_t *hidden = hidden_cut ? p->hidden : NULL;
    s->n_rows = model_tensor_rows(t);
    s->n_cols = t->ne[0];
    /* rows_of / cols_of: kept units of this tensor's row and column dimensions */
#define COLS(list, n) (s->cols = (list), s->n_cols = (n))
#define ROWS(list, n) (s->rows = (list), s->n_rows = (n))
    const int64_t *heads = layer >= 0 ? p->heads + (int64_t)layer * p->n_head : NULL;
    const int64_t *kvh = layer >= 0 ? p->kv_heads + (int64_t)layer * p->n_head_kv : NULL;
    const int64_t *ffn = layer >= 0 ? p->ffn + (int64_t)layer * p->n_ff : NULL;
    const bool head_cut = p->n_head != p->n_head_in, kv_cut = p->n_head_kv != p->n_head_kv_in, ffn_cut = p->n_ff != p->n_ff_in;
    switch (r) {
    case R_TOKEN_EMBD: case R_OUTPUT:
        if (!two_d || t->ne[0] != p->n_embd_in) goto bad;
        if (hidden_cut) COLS(hidden, p->n_embd);
        break;
    case R_NORM:
        if (t->ne[0] != p->n_embd_in || s->n_rows != 1) goto bad;
        if (hidden_cut) COLS(hidden, p->n_embd);
        break;
    case R_Q: case R_Q_BIAS: case R_KV: case R_KV_BIAS: {
        const bool q = r == R_Q || r == R_Q_BIAS, bias = r == R_Q_BIAS || r == R_KV_BIAS;
        const int64_t n_in = q ? p->n_head_in : p->n_head_kv_in, n_out = q ? p->n_head : p->n_head_kv;
        const bool cut = q ? head_cut : kv_cut;
        if ((bias ? t->ne[0] : s->n_rows) != n_in * hd || (bias ? s->n_rows != 1 : !two_d || t->ne[0] != p->n_embd_in))
            goto bad;
        int64_t *units = NULL;
        if (cut && lists && !(units = s->owned = expand_heads(q ? heads : kvh, n_out, hd))) goto oom;
        if (bias) {
            if (cut) COLS(units, n_out * hd);
        } else {
            if (cut) ROWS(units, n_out * hd);
            if (hidden_cut) COLS(hidden, p->n_embd);
        }
        break;
    }
    case R_QKV: case R_QKV_BIAS: {
        /* rows Q (query heads) | K (KV heads) | V (KV heads), each head head_dim rows */
        const bool bias = r == R_QKV_BIAS;
        const int64_t qd = p->n_head_in * hd, kvd = p->n_head_kv_in * hd, n_in = qd + 2 * kvd;
        const int64_t n_out = (p->n_head + 2 * p->n_head_kv) * hd;
        if ((bias ? t->ne[0] : s->n_rows) != n_in || (bias ? s->n_rows != 1 : !two_d || t->ne[0] != p->n_embd_in))
            goto bad;
        if ((head_cut || kv_cut) && lists) {
            int64_t *v = s->owned = malloc(sizeof *v * (size_t)(n_out > 0 ? n_out : 1));
            if (!v) goto oom;
            int64_t k = 0;
            for (int64_t i = 0; i < p->n_head; i++)
                for (int64_t d = 0; d < hd; d++) v[k++] = heads[i] * hd + d;
            for (int part = 0; part < 2; part++)
                for (int64_t i = 0; i < p->n_head_kv; i++)
                    for (int64_t d = 0; d < hd; d++) v[k++] = qd + part * kvd + kvh[i] * hd + d;
        }
        if (head_cut || kv_cut) {
            if (bias) COLS(s->owned, n_out);
            else ROWS(s->owned, n_out);
        }
        if (!bias && hidden_cut) COLS(hidden, p->n_embd);
        break;
    }
    case R_ATTN_OUT:
        if (!two_d || t->ne[0] != p->n_head_in * hd || s->n_rows != p->n_embd_in) goto bad;
        if (head_cut) {
            if (lists && !(s->owned = expand_heads(heads, p->n_head, hd))) goto oom;
            COLS(s->owned, p->n_head * hd);
        }
        if (hidden_cut) ROWS(hidden, p->n_embd);
        break;
    case R_FFN_IN:
        if (!two_d || t->ne[0] != p->n_embd_in || s->n_rows != p->n_ff_in) goto bad;
        if (ffn_cut) ROWS(ffn, p->n_ff);
        if (hidden_cut) COLS(hidden, p->n_embd);
        break;
    case R_FFN_FUSED: /* channel c is rows c (gate) and n_ff + c (up) */
        if (!two_d || t->ne[0] != p->n_embd_in || s->n_rows != 2 * p->n_ff_in) goto bad;
        if (ffn_cut && lists) {
            int64_t *v = s->owned = malloc(sizeof *v * (size_t)(2 * p->n_ff));
            if (!v) goto oom;
            for (int64_t i = 0; i < p->n_ff; i++) {
                v[i] = ffn[i];
                v[p->n_ff + i] = p->n_ff_in + ffn[i];
            }
        }
        if (ffn_cut) ROWS(s->owned, 2 * p->n_ff);
        if (hidden_cut) COLS(hidden, p->n_embd);
        break;
    case R_FFN_BIAS:
        if (t->ne[0] != p->n_ff_in || s->n_rows != 1) goto bad;
        if (ffn_cut) COLS(ffn, p->n_ff);
        break;
    case R_FFN_DOWN:
        if (!two_d || t->ne[0] != p->n_ff_in || s->n_rows != p->n_embd_in) goto bad;
        if (ffn_cut) COLS(ffn, p->n_ff);
        if (hidden_cut) ROWS(hidden, p->n_embd);
        break;
    case R_PER_HEAD: case R_VOCAB:
        break;
    case R_OTHER:
        /* unknown tensors pass unchanged, unless they might span the hidden width */
        if (hidden_cut && (t->ne[0] == p->n_embd_in || s->n_rows == p->n_embd_in))
            return slmc_fail(err, m->path, "%s: do not know how to cut its hidden dimension", t->name);
        break;
    }
#undef COLS
#undef ROWS
    return 0;
bad:
    return slmc_fail(err, m->path, "%s: shape [%lld, %lld] does not match the model's configuration", t->name,
                     (long long)t->ne[0], (long long)model_tensor_rows(t));
oom:
    return slmc_fail(err, m->path, "%s: out of memory", t->name);
}

uint64_t prune_plan_params(const prune_plan *p, const model *m) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        selection s;
        if (tensor_selection(p, m, &m->tensors[i], false, &s, NULL) != 0) return 0;
        if (!s.skip) n += (uint64_t)(s.n_rows * s.n_cols);
    }
    return n;
}

uint64_t prune_block_params(const prune_plan *p, const model *m) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        selection s;
        if (tensor_selection(p, m, &m->tensors[i], false, &s, NULL) != 0) return 0;
        if (!s.skip && s.new_layer >= 0) n += (uint64_t)(s.n_rows * s.n_cols);
    }
    return n;
}

/* ===================================================================== --target-params */

/* Share of an axis's importance the k best of n units leave out: 1 - (sum of the k largest)
 * / (sum of all), negative scores counted as 0. */
static double removed_share(const float *scores, int64_t n, int64_t k) {
    float v[n > 0 ? n : 1];
    double total = 0, kept = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i] = scores[i] > 0 && !isnan(scores[i]) ? scores[i] : 0;
        total += v[i];
    }
    if (total <= 0) return (double)(n - k) / (double)n;
    for (int64_t i = 0; i < k; i++) { /* partial selection sort: n is at most a few thousand */
        int64_t best = i;
        for (int64_t j = i + 1; j < n; j++)
            if (v[j] > v[best]) best = j;
        float t = v[i]; v[i] = v[best]; v[best] = t;
        kept += v[i];
    }
    return 1.0 - kept / total;
}

int prune_search_target(prune_request *r, const model *m, const prune_scores *s, uint64_t target, bool blocks_only,
                        slmc_err *err) {
    prune_plan p;
    if (prune_plan_identity(&p, m, err) != 0) return -1;
    const int64_t L = p.n_layer_in, H = p.n_head_in, HKV = p.n_head_kv_in, F = p.n_ff_in, E = p.n_embd_in, G = H / HKV;
    /* candidate counts per axis, with each one's removed importance share */
    int64_t ffn_opts[64], hid_opts[64], head_opts[64], head_kv[64];
    double ffn_cost[64], hid_cost[64], head_cost[64];
    int n_ffn = 0, n_hid = 0, n_head = 0;
    for (int j = 32; j >= 4 && n_ffn < 64; j--) { /* 32nds of the FFN width down to 1/8, multiples of 32 when possible */
        int64_t k = F * j / 32;
        if (F % 1024 == 0) k = k / 32 * 32;
        if (k < 1 || (n_ffn && ffn_opts[n_ffn - 1] == k)) continue;
        double c = 0;
        for (int64_t l = 0; l < L; l++) c += removed_share(s->ffn + l * F, F, k);
        ffn_opts[n_ffn] = k;
        ffn_cost[n_ffn++] = c / (double)L;
    }
    const arch_desc *family = arch_by_name(m->cfg.arch);
    const int hid_min = family && family->embd_scale ? 16 : 8; /* gemma*: the width stays (prune_select) */
    for (int j = 16; j >= hid_min && n_hid < 64; j--) { /* 16ths of the hidden width down to a half */
        int64_t k = E * j / 16;
        if (E % 512 == 0) k = k / 32 * 32;
        if (k < 1 || (n_hid && hid_opts[n_hid - 1] == k)) continue;
        hid_opts[n_hid] = k;
        hid_cost[n_hid++] = removed_share(s->hidden_total, E, k);
    }
    for (int64_t k = H; k >= 1 && n_head < 64; k--) { /* every head count the groups allow */
        if (!heads_fit(H, HKV, k, PRUNE_HEADS_AUTO)) continue;
        double c = 0;
        int64_t heads[H], kvh[HKV], nkv = 0;
        for (int64_t l = 0; l < L; l++) {
            if (select_heads(s->head + l * H, H, HKV, k, PRUNE_HEADS_AUTO, heads, kvh, &nkv) != 0) {
                prune_plan_free(&p);
                return slmc_fail(err, m->path, "out of memory");
            }
            float kept_scores[H];
            for (int64_t i = 0; i < H; i++) kept_scores[i] = 0;
            for (int64_t i = 0; i < k; i++) kept_scores[heads[i]] = s->head[l * H + heads[i]] > 0 ? s->head[l * H + heads[i]] : 0;
            double tot = 0, kept = 0;
            for (int64_t i = 0; i < H; i++) {
                tot += s->head[l * H + i] > 0 ? s->head[l * H + i] : 0;
                kept += kept_scores[i];
            }
            c += tot > 0 ? 1 - kept / tot : (double)(H - k) / (double)H;
        }
        head_opts[n_head] = k;
        head_kv[n_head] = nkv;
        head_cost[n_head++] = c / (double)L;
    }
    (void)G;
    double best_cost = INFINITY;
    uint64_t best_params = 0;
    bool found = false;
    const bool q_width_embd = family && family->q_width_embd;
    const int64_t hd = m->cfg.head_dim, scalar_in = family ? arch_query_scalar(family, L, E, H, hd) : hd;
    bool *chosen = malloc(sizeof *chosen * (size_t)L);
    double *lsc = malloc(sizeof *lsc * (size_t)L);
    if (!chosen || !lsc) {
        free(chosen);
        free(lsc);
        prune_plan_free(&p);
        return slmc_fail(err, m->path, "out of memory");
    }
    for (int64_t l = 0; l < L; l++) lsc[l] = finite_score(s->layer[l]);
    for (int64_t kl = L; kl >= (L + 1) / 2; kl--) {
        if (!layer_count_loads(family, L, kl)) continue; /* gemma2 in llama.cpp b4747 (prune_select) */
        double lcost = removed_share(s->layer, L, kl);
        if (has_layer_pattern(family)) { /* only the layers prune_select would keep: those keeping the pattern */
            int pc = pattern_choose(family, lsc, NULL, L, kl, chosen);
            if (pc < 0) {
                free(chosen);
                free(lsc);
                prune_plan_free(&p);
                return slmc_fail(err, m->path, "out of memory");
            }
            if (pc > 0) continue;
            double tot = 0, kept = 0;
            for (int64_t l = 0; l < L; l++) {
                double v = lsc[l] > 0 ? lsc[l] : 0;
                tot += v;
                kept += chosen[l] ? v : 0;
            }
            lcost = tot > 0 ? 1.0 - kept / tot : (double)(L - kl) / (double)L;
        }
        for (int a = 0; a < n_head; a++)
            for (int b = 0; b < n_ffn; b++)
                for (int c = 0; c < n_hid; c++) {
                    if (q_width_embd && head_opts[a] * hd != hid_opts[c]) continue; /* prune_select */
                    if (family && arch_query_scalar(family, kl, hid_opts[c], head_opts[a], hd) != scalar_in)
                        continue; /* the attention scale would change (gemma2/3 27B; prune_select) */
                    /* parameters of this shape: a plan with the counts set (lists are not read) */
                    p.n_head = head_opts[a];
                    p.n_head_kv = head_kv[a];
                    p.n_ff = ffn_opts[b];
                    p.n_embd = hid_opts[c];
                    for (int64_t l = 0; l < L; l++) p.keep_layer[l] = l < kl;
                    uint64_t n = blocks_only ? prune_block_params(&p, m) : prune_plan_params(&p, m);
                    if (n == 0 || n > target) continue;
                    double cost = lcost + head_cost[a] + ffn_cost[b] + hid_cost[c];
                    if (cost < best_cost - 1e-12 || (fabs(cost - best_cost) <= 1e-12 && n > best_params)) {
                        best_cost = cost;
                        best_params = n;
                        found = true;
                        memset(r, 0, sizeof *r);
                        r->keep_layers = kl < L ? kl : 0;
                        r->keep_heads = head_opts[a] < H ? head_opts[a] : 0;
                        r->head_mode = PRUNE_HEADS_AUTO;
                        r->keep_ffn = ffn_opts[b] < F ? ffn_opts[b] : 0;
                        r->keep_hidden = hid_opts[c] < E ? hid_opts[c] : 0;
                    }
                }
    }
    prune_plan_free(&p);
    free(chosen);
    free(lsc);
    if (!found)
        return slmc_fail(err, m->path, "no shape down to half the layers and hidden width, an eighth of the FFN and "
                                       "one head group has at most %llu parameters", (unsigned long long)target);
    return 0;
}

/* ===================================================================== building the model */

/* Memory of the pruned tensors: shared anonymous mappings, one per tensor. Shared, not
 * private, because the writers drop tensors' pages after writing them (model_release_source,
 * MADV_DONTNEED), which would zero private memory but keeps shared memory's contents. */
typedef struct pruned_src {
    void **maps;   /* [n] mappings */
    size_t *sizes; /* [n] their lengths */
    size_t n, cap;
} pruned_src;

static void pruned_src_free(void *v) {
    pruned_src *ps = v;
    for (size_t i = 0; i < ps->n; i++) munmap(ps->maps[i], ps->sizes[i]);
    free(ps->maps);
    free(ps->sizes);
    free(ps);
}

static void *pruned_alloc(pruned_src *ps, size_t n) {
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 64;
        void **maps = realloc(ps->maps, cap * sizeof *maps);
        if (!maps) return NULL;
        ps->maps = maps;
        size_t *sizes = realloc(ps->sizes, cap * sizeof *sizes);
        if (!sizes) return NULL;
        ps->sizes = sizes;
        ps->cap = cap;
    }
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    ps->maps[ps->n] = p;
    ps->sizes[ps->n++] = n ? n : 1;
    return p;
}

/* A refit projection: the selected rows of refit ([source rows][s->n_cols] F32), in the
 * input's float type or F32. */
static int build_refit(const model *m, uint64_t ti, const selection *s, const float *refit, pruned_src *ps,
                       model_tensor *out, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    out->type = type_is_float(t->type) ? t->type : GGML_TYPE_F32;
    out->ne[0] = s->n_cols;
    out->ne[1] = s->n_rows;
    out->qk_heads = 0;
    const uint64_t out_row = type_nbytes(out->type, s->n_cols);
    out->nbytes = out_row * (uint64_t)s->n_rows;
    uint8_t *dst = pruned_alloc(ps, out->nbytes);
    if (!dst) return slmc_fail(err, m->path, "%s: out of memory", t->name);
    for (int64_t r = 0; r < s->n_rows; r++) {
        const int64_t src = s->rows ? s->rows[r] : r;
        row_from_f32(out->type, refit + (size_t)src * (size_t)s->n_cols, dst + (uint64_t)r * out_row, s->n_cols);
    }
    out->data = dst;
    return 0;
}

/* Fill out (name set by the caller) with the selected rows and columns of tensor ti, or with
 * the plan's refit values when it has them (refit non-NULL). */
static int build_tensor(const model *m, uint64_t ti, const selection *s, const float *refit, pruned_src *ps,
                        model_tensor *out, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    if (refit) {
        out->n_dims = t->n_dims;
        for (int d = 0; d < MODEL_MAX_DIMS; d++) out->ne[d] = t->ne[d];
        return build_refit(m, ti, s, refit, ps, out, err);
    }
    out->n_dims = t->n_dims;
    for (int d = 0; d < MODEL_MAX_DIMS; d++) out->ne[d] = t->ne[d];
    if (!s->rows && !s->cols) { /* untouched: point at the source, in its row order */
        out->type = t->type;
        out->nbytes = t->nbytes;
        out->data = t->data;
        out->qk_heads = t->qk_heads;
        if (t->owned) {
            /* the input made it on the heap (Gemma's 1 + w norms, rope factors, permuted biases):
             * the writers drop the pages of what they wrote (MADV_DONTNEED), which would zero
             * the heap around it, so the pruned model gets its own copy in a shared mapping */
            uint8_t *copy = pruned_alloc(ps, t->nbytes);
            if (!copy) return slmc_fail(err, m->path, "%s: out of memory", t->name);
            memcpy(copy, t->data, t->nbytes);
            out->data = copy;
        }
        return 0;
    }
    const bool is_float = type_is_float(t->type);
    const quant_kernels *qk = is_float ? NULL : quant_get(t->type);
    if (s->cols && !is_float && !(qk && qk->dequantize))
        return slmc_fail(err, m->path, "%s: type %s cannot be dequantized to cut columns", t->name, type_name(t->type));
    out->type = s->cols && !is_float ? GGML_TYPE_F32 : t->type;
    out->ne[0] = s->n_cols;
    if (t->n_dims >= 2) out->ne[1] = s->n_rows;
    out->qk_heads = 0; /* rows are read in llama.cpp's order below */
    const uint64_t in_row = model_tensor_row_bytes(t), out_row = type_nbytes(out->type, s->n_cols);
    if (out_row == 0) return slmc_fail(err, m->path, "%s: %lld columns do not fill whole %s blocks", t->name,
                                       (long long)s->n_cols, type_name(out->type));
    out->nbytes = out_row * (uint64_t)s->n_rows;
    uint8_t *dst = pruned_alloc(ps, out->nbytes);
    uint8_t *row = malloc(in_row);
    float *f = !is_float && s->cols ? malloc(sizeof(float) * (size_t)t->ne[0]) : NULL;
    if (!dst || !row || (!is_float && s->cols && !f)) {
        free(row);
        free(f);
        return slmc_fail(err, m->path, "%s: out of memory", t->name);
    }
    const size_t es = is_float ? type_get(t->type)->type_size : sizeof(float);
    for (int64_t r = 0; r < s->n_rows; r++) {
        const int64_t src = s->rows ? s->rows[r] : r;
        if (model_read_rows(m, ti, src, 1, row, err) != 0) { free(row); free(f); return -1; }
        uint8_t *o = dst + (uint64_t)r * out_row;
        if (!s->cols) { memcpy(o, row, in_row); continue; }
        const uint8_t *from = row;
        if (!is_float) { qk->dequantize(row, f, t->ne[0]); from = (const uint8_t *)f; }
        for (int64_t c = 0; c < s->n_cols; c++) memcpy(o + (size_t)c * es, from + (size_t)s->cols[c] * es, es);
    }
    out->data = dst;
    free(row);
    free(f);
    return 0;
}

/* The metadata of the pruned model: the input's, with the architecture keys of the new shape. */
static int pruned_meta(model *out, const model *m, const prune_plan *p, slmc_err *err) {
    if (meta_copy(&out->kv, &m->kv) != 0) return slmc_fail(err, m->path, "out of memory");
    const char *a = m->cfg.arch;
    const int64_t hd = m->cfg.head_dim;
    char k[160];
    int rc = 0;
#define SET(suffix, v) (snprintf(k, sizeof k, "%s.%s", a, suffix), rc |= meta_set_u32(&out->kv, k, (uint32_t)(v)))
    SET("block_count", p->n_layer);
    SET("embedding_length", p->n_embd);
    SET("feed_forward_length", p->n_ff);
    SET("attention.head_count", p->n_head);
    SET("attention.head_count_kv", p->n_head_kv);
    /* the head size no longer follows from embedding_length / head_count: state it */
    if (p->n_embd % p->n_head != 0 || p->n_embd / p->n_head != hd) {
        SET("attention.key_length", hd);
        SET("attention.value_length", hd);
    }
    /* llama.cpp's default rotary width is the head size, which pruning keeps; state it as the
     * converter does (the families with kv_rope_dims, or a partial rotation), so that the pruned
     * GGUF equals the pruned Hugging Face folder converted */
    const arch_desc *family = arch_by_name(a);
    snprintf(k, sizeof k, "%s.rope.dimension_count", a);
    if (!meta_find(&out->kv, k) && (!family || family->kv_rope_dims || m->cfg.n_rot != hd))
        SET("rope.dimension_count", m->cfg.n_rot);
    /* phi3 without attention.sliding_window: llama.cpp (b4747) infers the window of the released
     * checkpoints from block_count and context_length, and refuses any other shape; the pruned
     * model has another block_count, so state the window it had */
    snprintf(k, sizeof k, "%s.attention.sliding_window", a);
    if (strcmp(a, "phi3") == 0 && !meta_find(&out->kv, k)) {
        const int64_t L = m->cfg.n_layer, ctx = m->cfg.n_ctx_train;
        const int64_t swa = (L == 32 || L == 40) && ctx == 4096              ? 2047
                            : L == 32 && m->cfg.n_head_kv == 32 && ctx == 131072 ? 262144
                            : L == 40 && ctx == 131072                         ? 131072
                                                                               : m->cfg.n_swa;
        if (swa > 0) SET("attention.sliding_window", swa);
    }
#undef SET
    if (rc) return slmc_fail(err, m->path, "out of memory");
    return 0;
}

int prune_apply(model *out, const model *m, const prune_plan *p, slmc_err *err) {
    memset(out, 0, sizeof *out);
    meta_init(&out->kv);
    if (check_model(m, err) != 0) return -1;
    if (p->n_layer_in != m->cfg.n_layer || p->n_embd_in != m->cfg.n_embd || p->n_ff_in != m->cfg.n_ff ||
        p->n_head_in != m->cfg.n_head || p->n_head_kv_in != m->cfg.n_head_kv)
        return slmc_fail(err, m->path, "the pruning plan was made for another shape of model");
    pruned_src *ps = calloc(1, sizeof *ps);
    out->path = strdup(m->path);
    out->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *out->tensors);
    if (!ps || !out->path || !out->tensors) {
        free(ps);
        model_close(out);
        return slmc_fail(err, m->path, "out of memory");
    }
    out->src = ps;
    out->free_src = pruned_src_free;
    out->format = m->format;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        selection s;
        if (tensor_selection(p, m, t, true, &s, err) != 0) { model_close(out); return -1; }
        if (s.skip) { selection_free(&s); continue; }
        model_tensor *o = &out->tensors[out->n_tensors];
        int layer, off = 0;
        if (s.new_layer >= 0 && sscanf(t->name, "blk.%d.%n", &layer, &off) == 1 && off > 0) {
            size_t n = strlen(t->name) + 24;
            if ((o->name = malloc(n))) snprintf(o->name, n, "blk.%d.%s", s.new_layer, t->name + off);
        } else {
            o->name = strdup(t->name);
        }
        out->n_tensors++; /* counted now so model_close frees the name whatever happens next */
        int rl;
        const role r = tensor_role(arch_by_name(m->cfg.arch), t->name, &rl);
        const float *refit = r == R_FFN_DOWN && p->ffn_down_new && s.cols ? p->ffn_down_new[rl]
                             : r == R_ATTN_OUT && p->attn_output_new && s.cols ? p->attn_output_new[rl]
                                                                               : NULL;
        int rc = o->name ? build_tensor(m, i, &s, refit, ps, o, err) : slmc_fail(err, m->path, "out of memory");
        selection_free(&s);
        if (rc != 0) { model_close(out); return -1; }
    }
    if (pruned_meta(out, m, p, err) != 0 || model_config_from_meta(out, err) != 0) {
        model_close(out);
        return -1;
    }
    return 0;
}
