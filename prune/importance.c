/* importance.c - activation, magnitude and random importance scores, and their HDF5 file.
 * See importance.h for what each score measures. */
#include "importance.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/llm.h"
#include "eval/perplexity.h"
#include "eval/ranks.h"
#include "codec/types.h"
#include "prune/prune.h"
#include "codec/quants.h"

#define SCORES_FORMAT "slmc-prune-scores"
#define SCORES_VERSION 1

static const char *const METHOD_NAMES[] = {"activation", "magnitude", "random"};

int prune_method_from_name(const char *name) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, METHOD_NAMES[i]) == 0) return i;
    return -1;
}

const char *prune_method_name(prune_method m) { return (unsigned)m < 3 ? METHOD_NAMES[m] : "?"; }

/* ===================================================================== the scores */

void prune_scores_free(prune_scores *s) {
    free(s->head); free(s->head_act); free(s->ffn); free(s->ffn_act); free(s->hidden); free(s->hidden_total);
    free(s->block_influence); free(s->ppl_removed); free(s->layer);
    memset(s, 0, sizeof *s);
}

/* Allocate for a shape (shared by init and read). */
static int scores_alloc(prune_scores *s) {
    const size_t L = (size_t)s->n_layer;
    s->head = calloc(L * (size_t)s->n_head, sizeof(float));
    s->ffn = calloc(L * (size_t)s->n_ff, sizeof(float));
    s->head_act = calloc(L * (size_t)s->n_head, sizeof(float));
    s->ffn_act = calloc(L * (size_t)s->n_ff, sizeof(float));
    s->hidden = calloc(L * (size_t)s->n_embd, sizeof(float));
    s->hidden_total = calloc((size_t)s->n_embd, sizeof(float));
    s->block_influence = calloc(L, sizeof(float));
    s->ppl_removed = calloc(L, sizeof(float));
    s->layer = calloc(L, sizeof(float));
    if (!s->head || !s->ffn || !s->head_act || !s->ffn_act || !s->hidden || !s->hidden_total || !s->block_influence || !s->ppl_removed || !s->layer)
        return -1;
    for (size_t l = 0; l < L; l++) s->ppl_removed[l] = NAN;
    s->base_ppl = NAN;
    return 0;
}

int prune_scores_init(prune_scores *s, const model *m, prune_method method, slmc_err *err) {
    memset(s, 0, sizeof *s);
    const model_config *c = &m->cfg;
    if (c->n_layer <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 || c->n_ff <= 0 || c->n_embd <= 0 || c->head_dim <= 0)
        return slmc_fail(err, m->path, "not a transformer with layers, heads and an FFN");
    s->method = method;
    s->n_layer = c->n_layer;
    s->n_head = c->n_head;
    s->n_head_kv = c->n_head_kv;
    s->head_dim = c->head_dim;
    s->n_ff = c->n_ff;
    s->n_embd = c->n_embd;
    snprintf(s->model, sizeof s->model, "%s", m->path);
    if (scores_alloc(s) != 0) {
        prune_scores_free(s);
        return slmc_fail(err, m->path, "out of memory for importance scores");
    }
    return 0;
}

int prune_scores_check(const prune_scores *s, const model *m, const char *path, slmc_err *err) {
    const model_config *c = &m->cfg;
    if (s->n_layer != c->n_layer || s->n_head != c->n_head || s->n_head_kv != c->n_head_kv || s->n_ff != c->n_ff ||
        s->n_embd != c->n_embd)
        return slmc_fail(err, path,
                         "scores for %lld layers, %lld heads (%lld KV), FFN %lld, width %lld; %s has %lld, %lld (%lld), "
                         "%lld, %lld",
                         (long long)s->n_layer, (long long)s->n_head, (long long)s->n_head_kv, (long long)s->n_ff,
                         (long long)s->n_embd, m->path, (long long)c->n_layer, (long long)c->n_head,
                         (long long)c->n_head_kv, (long long)c->n_ff, (long long)c->n_embd);
    return 0;
}

/* hidden_total: the sum over layers of the per-layer hidden scores. */
static void sum_hidden(prune_scores *s) {
    for (int64_t e = 0; e < s->n_embd; e++) {
        double t = 0;
        for (int64_t l = 0; l < s->n_layer; l++) t += s->hidden[l * s->n_embd + e];
        s->hidden_total[e] = (float)t;
    }
}

/* ===================================================================== activation */

static int tensor_sq(const model *m, const char *name, const float *colscale, double *rows, double *cols, slmc_err *err);

/* What the hooks accumulate during the calibration pass. */
typedef struct calib {
    prune_scores *s;
    double *head;      /* [L][H] sums of per-token norms of each head's contribution W_o,h o_h */
    double *head_raw;  /* [L][H] sums of per-token norms of the head outputs o_h themselves */
    float *wo;         /* [L][E][H*hd] attn_output of every layer as F32 (to project the heads) */
    int64_t n_embd;    /* E */
    double *ffn;       /* [L][F] sums of |silu(gate)*up| */
    double *hidden;    /* [L][E] sums of |normed input| over the inputs of attn_reader and ffn_reader */
    const char *attn_reader; /* ".attn_q.weight" or ".attn_qkv.weight" (phi3): reads the attention norm's output */
    const char *ffn_reader;  /* ".ffn_gate.weight", ".ffn_up.weight" (no gate: phi3's fused gate_up), or NULL
                              * when the FFN reads the attention norm's output too (phi2's parallel block) */
    double *bi;        /* [L] sums of 1 - cos(in, out) */
    float *prev;       /* [n_ctx][E] residual stream entering the current layer */
    double *norms;     /* [n_ctx][2 H] scratch: each token's two norms per head, before they are summed */
} calib;

/* A head's output o_h reaches the residual stream as W_o[:, h] o_h (its columns of
 * attn_output): score the norm of that contribution, and keep the norm of o_h as well. */
static int hook_heads(void *ud, int layer, const float *x, int n, int64_t n_head, int64_t hd) {
    calib *c = ud;
    const int64_t E = c->n_embd, qd = n_head * hd;
    const float *wo = c->wo + (size_t)layer * (size_t)E * (size_t)qd;
    double *acc = c->head + (int64_t)layer * n_head, *raw = c->head_raw + (int64_t)layer * n_head;
    /* the tokens' norms in parallel, then summed in token order: the sums do not depend on the
     * thread count (each rank of an mpirun job may run another count than one process) */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++)
        for (int64_t h = 0; h < n_head; h++) {
            const float *v = x + (size_t)t * (size_t)qd + h * hd;
            double ss = 0, ps = 0;
            for (int64_t d = 0; d < hd; d++) ss += (double)v[d] * v[d];
            for (int64_t e = 0; e < E; e++) {
                const float *w = wo + (size_t)e * (size_t)qd + h * hd;
                float y = 0;
                for (int64_t d = 0; d < hd; d++) y += w[d] * v[d];
                ps += (double)y * y;
            }
            c->norms[(size_t)t * (size_t)(2 * n_head) + (size_t)h] = sqrt(ss);
            c->norms[(size_t)t * (size_t)(2 * n_head) + (size_t)(n_head + h)] = sqrt(ps);
        }
    for (int t = 0; t < n; t++)
        for (int64_t h = 0; h < n_head; h++) {
            raw[h] += c->norms[(size_t)t * (size_t)(2 * n_head) + (size_t)h];
            acc[h] += c->norms[(size_t)t * (size_t)(2 * n_head) + (size_t)(n_head + h)];
        }
    return 0;
}

static int hook_ffn(void *ud, int layer, const float *x, int n, int64_t n_ff) {
    calib *c = ud;
    double *acc = c->ffn + (int64_t)layer * n_ff;
    for (int t = 0; t < n; t++)
        for (int64_t f = 0; f < n_ff; f++) acc[f] += fabsf(x[(size_t)t * (size_t)n_ff + f]);
    return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The norm outputs: the input of the first matrix reading each norm (attn_q or attn_qkv after
 * attn_norm; ffn_gate, or ffn_up without a gate, after ffn_norm). */
static int hook_matmul(void *ud, const char *weight, int64_t tensor, int layer, const float *x, int n, int64_t n_in) {
    (void)tensor;
    calib *c = ud;
    if (layer < 0 || !(ends_with(weight, c->attn_reader) || (c->ffn_reader && ends_with(weight, c->ffn_reader))))
        return 0;
    double *acc = c->hidden + (int64_t)layer * n_in;
    for (int t = 0; t < n; t++)
        for (int64_t e = 0; e < n_in; e++) acc[e] += fabsf(x[(size_t)t * (size_t)n_in + e]);
    return 0;
}

/* Block Influence: 1 - cos(layer input, layer output) per token. */
static int hook_layer(void *ud, int layer, const float *x, int n, int64_t E) {
    calib *c = ud;
    double acc = 0;
    for (int t = 0; t < n; t++) {
        const float *a = c->prev + (size_t)t * (size_t)E, *b = x + (size_t)t * (size_t)E;
        double ab = 0, aa = 0, bb = 0;
        for (int64_t e = 0; e < E; e++) {
            ab += (double)a[e] * b[e];
            aa += (double)a[e] * a[e];
            bb += (double)b[e] * b[e];
        }
        acc += aa > 0 && bb > 0 ? 1.0 - ab / sqrt(aa * bb) : 0.0;
    }
    c->bi[layer] += acc;
    memcpy(c->prev, x, sizeof(float) * (size_t)n * (size_t)E);
    return 0;
}

/* Rows [r0, r0+n) of a tensor as F32, whatever its type. */
int prune_read_f32(const model *m, int64_t ti, int64_t r0, int64_t n, float *dst, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    if (type_is_float(t->type)) return model_read_rows_f32(m, (uint64_t)ti, r0, n, dst, err);
    const quant_kernels *qk = quant_get(t->type);
    if (!qk || !qk->dequantize) return slmc_fail(err, m->path, "%s: type %s cannot be dequantized", t->name, type_name(t->type));
    uint64_t rb = model_tensor_row_bytes(t);
    uint8_t *row = malloc(rb);
    if (!row) return slmc_fail(err, m->path, "out of memory");
    for (int64_t r = 0; r < n; r++) {
        if (model_read_rows(m, (uint64_t)ti, r0 + r, 1, row, err) != 0) { free(row); return -1; }
        qk->dequantize(row, dst + (size_t)r * (size_t)t->ne[0], t->ne[0]);
    }
    free(row);
    return 0;
}

/* The token embeddings of a chunk (first token replaced by bos) into out [n][E]. */
static int embed_chunk(const model *m, const int32_t *chunk, int n, int32_t bos, float *out, slmc_err *err) {
    int64_t te = model_find(m, "token_embd.weight");
    if (te < 0) return slmc_fail(err, m->path, "tensor token_embd.weight is missing");
    for (int t = 0; t < n; t++) {
        int32_t id = t == 0 && bos >= 0 ? bos : chunk[t];
        if (prune_read_f32(m, te, id, 1, out + (size_t)t * (size_t)m->cfg.n_embd, err) != 0) return -1;
    }
    return 0;
}

/* The nll sums of this rank's chunks [lo, hi) on m, for the layer-removal measurement:
 * nll[(c - lo) * stride] for chunk c. m is `full` with layer `skipped` removed: its layers keep
 * the sliding-window kind (gemma2/3) and the attention scale (gemma2/3 27B) they have in
 * `full`, so the measure is that of the layer skipped, not of a model whose later layers
 * changed kind. */
static int chunks_nll(const model *m, const model *full, int64_t skipped, const int32_t *tokens, int64_t lo, int64_t hi,
                      const prune_calib_opts *o, double *nll, int64_t stride, int *done, int total, slmc_err *err) {
    llm_model lm;
    llm_context ctx;
    if (llm_model_init(&lm, m, err) != 0) return -1;
    const model_config *fc = &full->cfg;
    for (int64_t il = 0; il < lm.cfg.n_layer; il++)
        lm.layers[il].slides = lm.cfg.n_swa > 0 && arch_layer_slides(lm.arch, il < skipped ? il : il + 1);
    lm.attn_scale = 1.0f / sqrtf((float)arch_query_scalar(lm.arch, fc->n_layer, fc->n_embd, fc->n_head, fc->head_dim));
    if (llm_context_init(&ctx, &lm, o->n_ctx, o->n_ctx, err) != 0) { llm_model_free(&lm); return -1; }
    float *logits = malloc(sizeof(float) * (size_t)ppl_scored(o->n_ctx) * (size_t)lm.cfg.n_vocab);
    int rc = logits ? 0 : slmc_fail(err, m->path, "out of memory for logits");
    for (int64_t c = lo; c < hi && rc == 0; c++) {
        const int32_t *chunk = tokens + (size_t)c * (size_t)o->n_ctx;
        ppl_stats st = {0};
        rc = ppl_eval_chunk(&ctx, chunk, o->n_ctx, o->bos, logits, err);
        if (rc == 0) ppl_accumulate(&st, logits, lm.cfg.n_vocab, chunk, o->n_ctx);
        nll[(c - lo) * stride] = st.nll;
        if (o->progress) o->progress(o->progress_ud, ++*done, total);
    }
    free(logits);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    return rc;
}

/* For each layer: the model without it, the nll sums of this rank's chunks on it
 * (nll[(c - lo) * n_layer + l]). */
static int measure_layer_removal(prune_scores *s, const model *m, const int32_t *tokens, int64_t lo, int64_t hi,
                                 const prune_calib_opts *o, double *nll, int *done, int total, slmc_err *err) {
    if (lo == hi) return 0; /* a rank without chunks (more ranks than chunks) */
    for (int64_t l = 0; l < s->n_layer; l++) {
        prune_plan p;
        model dropped;
        if (prune_plan_identity(&p, m, err) != 0) return -1;
        p.keep_layer[l] = false;
        p.n_layer--;
        int rc = prune_apply(&dropped, m, &p, err);
        prune_plan_free(&p);
        if (rc != 0) return -1;
        rc = chunks_nll(&dropped, m, l, tokens, lo, hi, o, nll + l, s->n_layer, done, total, err);
        model_close(&dropped);
        if (rc != 0) return -1;
    }
    return 0;
}

/* One chunk's activation statistics, the unit of the sum over chunks: the calib sums
 * (head, head_raw, ffn, hidden, bi) and the chunk's nll sums (nll, nll2) side by side. */
typedef struct chunk_vec {
    double *v;
    size_t len;
    size_t at_nll;      /* nll, then nll2 */
} chunk_vec;

/* Point the calib sums into v (a chunk's vector, or the total). */
static void calib_point(calib *c, double *v, int64_t L, int64_t H, int64_t F, int64_t E) {
    c->head = v;
    c->head_raw = v + L * H;
    c->ffn = v + 2 * L * H;
    c->hidden = v + 2 * L * H + L * F;
    c->bi = v + 2 * L * H + L * F + L * E;
}

int prune_score_activation(prune_scores *s, const model *m, const int32_t *tokens, size_t n_tokens,
                           const prune_calib_opts *o, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    const int64_t L = s->n_layer, H = s->n_head, F = s->n_ff, E = s->n_embd;
    const int n_chunk = ppl_chunk_count((int64_t)n_tokens, o->n_ctx, o->max_chunks);
    calib c = {.s = s, .n_embd = E};
    /* the matrices whose inputs are the norm outputs (llm.h's block) */
    const arch_desc *family = arch_by_name(m->cfg.arch);
    c.attn_reader = model_find(m, "blk.0.attn_qkv.weight") >= 0 ? ".attn_qkv.weight" : ".attn_q.weight";
    c.ffn_reader = family && family->parallel_block                ? NULL
                   : model_find(m, "blk.0.ffn_gate.weight") >= 0 ? ".ffn_gate.weight"
                                                                 : ".ffn_up.weight";
    const double norm_inputs = c.ffn_reader ? 2 : 1;
    const int64_t qd = H * s->head_dim;
    /* the unit vector: the calib sums, then nll and nll2 */
    chunk_vec cv = {.len = (size_t)(2 * L * H + L * F + L * E + L) + 2};
    cv.at_nll = cv.len - 2;
    cv.v = malloc(sizeof(double) * cv.len);
    double *total = malloc(sizeof(double) * cv.len);
    double *rem = NULL, *rem_total = NULL; /* layer removal: this rank's chunks' nll per layer, and the sums */
    c.wo = malloc(sizeof(float) * (size_t)(L * E * qd));
    double *down_cols = calloc((size_t)F, sizeof(double));
    c.prev = malloc(sizeof(float) * (size_t)(o->n_ctx > 0 ? o->n_ctx : 1) * (size_t)E);
    c.norms = malloc(sizeof(double) * (size_t)(o->n_ctx > 0 ? o->n_ctx : 1) * (size_t)(2 * H));
    llm_model lm;
    llm_context ctx;
    bool open_lm = false, open_ctx = false, open_sum = false, open_rem = false;
    comm_sum sum, sum_rem;
    float *logits = NULL;
    int rc = -1, st = 0;
    int64_t lo = 0, hi = 0;
    if (n_chunk < 1)
        st = slmc_fail(err, NULL, "the calibration text has %zu tokens, less than one chunk of %d", n_tokens, o->n_ctx);
    else if (!cv.v || !total || !c.wo || !down_cols || !c.prev || !c.norms)
        st = slmc_fail(err, m->path, "out of memory");
    for (int64_t l = 0; l < L && st == 0; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.attn_output.weight", (long long)l);
        int64_t ti = model_find(m, name);
        if (ti < 0) st = slmc_fail(err, m->path, "tensor %s is missing", name);
        else st = prune_read_f32(m, ti, 0, E, c.wo + (size_t)(l * E * qd), err);
    }
    if (st == 0 && (st = llm_model_init(&lm, m, err)) == 0) open_lm = true;
    /* one batch per chunk, so the layer_out hook sees each chunk whole after embed_chunk */
    if (st == 0 && (st = llm_context_init(&ctx, &lm, o->n_ctx, o->n_ctx, err)) == 0) open_ctx = true;
    if (st == 0 && !(logits = malloc(sizeof(float) * (size_t)ppl_scored(o->n_ctx) * (size_t)lm.cfg.n_vocab)))
        st = slmc_fail(err, m->path, "out of memory for logits");
    if (st == 0 && (st = comm_sum_init(&sum, job, COMM_F64, cv.len, n_chunk, err)) == 0) open_sum = true;
    /* every rank is ready (or one is not, and every rank returns its message) */
    if (comm_agree(job, st, err) != 0) goto done;

    /* this rank's chunks, each chunk's sums on their own, joined over the chunks in comm_sum's
     * tree: the same scores for one process and any number of ranks */
    comm_share(job, n_chunk, job->rank, &lo, &hi);
    const int n_mine = (int)(hi - lo);
    const int total_passes = n_mine * (o->layer_ppl ? 1 + (int)L : 1);
    int done_passes = 0;
    llm_hooks hooks = {.ud = &c, .matmul_input = hook_matmul, .attn_heads = hook_heads, .ffn_act = hook_ffn,
                       .layer_out = hook_layer};
    llm_set_hooks(&ctx, &hooks);
    calib_point(&c, cv.v, L, H, F, E);
    for (int64_t ch = lo; ch < hi && st == 0; ch++) {
        const int32_t *chunk = tokens + (size_t)ch * (size_t)o->n_ctx;
        ppl_stats pst = {0};
        memset(cv.v, 0, sizeof(double) * cv.len);
        if ((st = embed_chunk(m, chunk, o->n_ctx, o->bos, c.prev, err)) != 0) break;
        if ((st = ppl_eval_chunk(&ctx, chunk, o->n_ctx, o->bos, logits, err)) != 0) break;
        ppl_accumulate(&pst, logits, lm.cfg.n_vocab, chunk, o->n_ctx);
        cv.v[cv.at_nll] = pst.nll;
        cv.v[cv.at_nll + 1] = pst.nll2;
        st = comm_sum_add(&sum, cv.v, err);
        if (o->progress) o->progress(o->progress_ud, ++done_passes, total_passes);
    }
    llm_set_hooks(&ctx, NULL);
    if (comm_agree(job, st, err) != 0) goto done;
    if ((rc = comm_sum_finish(&sum, total, err)) != 0) goto done;
    rc = -1;

    /* the scores from the sums over every chunk (every rank the same) */
    calib_point(&c, total, L, H, F, E);
    const double tokens_seen = (double)n_chunk * o->n_ctx;
    const int64_t scored = (int64_t)n_chunk * ppl_scored(o->n_ctx);
    for (int64_t i = 0; i < L * H; i++) {
        s->head[i] = (float)(c.head[i] / tokens_seen);
        s->head_act[i] = (float)(c.head_raw[i] / tokens_seen);
    }
    /* a channel's activation a_c reaches the residual stream as a_c * ffn_down[:, c]: rank by
     * mean |a_c| times that column's norm (the mean norm of its contribution) */
    for (int64_t l = 0; l < L && st == 0; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)l);
        memset(down_cols, 0, sizeof(double) * (size_t)F);
        if ((st = tensor_sq(m, name, NULL, NULL, down_cols, err)) != 0) break;
        for (int64_t f = 0; f < F; f++) {
            s->ffn_act[l * F + f] = (float)(c.ffn[l * F + f] / tokens_seen);
            s->ffn[l * F + f] = (float)(c.ffn[l * F + f] / tokens_seen * sqrt(down_cols[f]));
        }
    }
    for (int64_t i = 0; i < L * E; i++) s->hidden[i] = (float)(c.hidden[i] / (norm_inputs * tokens_seen));
    for (int64_t l = 0; l < L; l++) s->layer[l] = s->block_influence[l] = (float)(c.bi[l] / tokens_seen);
    sum_hidden(s);
    const ppl_stats base = {.nll = total[cv.at_nll], .nll2 = total[cv.at_nll + 1], .count = scored};
    s->base_ppl = ppl_value(&base);
    s->n_ctx = o->n_ctx;
    s->chunks = n_chunk;
    s->tokens = (int64_t)n_chunk * o->n_ctx;
    if (o->layer_ppl) {
        /* each rank measures its chunks on each model without a layer; the chunks' nll sums
         * are joined per layer in the same tree */
        rem = calloc((size_t)(n_mine > 0 ? n_mine : 1) * (size_t)L, sizeof(double));
        rem_total = malloc(sizeof(double) * (size_t)L);
        if (st == 0 && (!rem || !rem_total)) st = slmc_fail(err, m->path, "out of memory");
        if (st == 0) st = measure_layer_removal(s, m, tokens, lo, hi, o, rem, &done_passes, total_passes, err);
        if (st == 0 && (st = comm_sum_init(&sum_rem, job, COMM_F64, (size_t)L, n_chunk, err)) == 0) open_rem = true;
        for (int64_t ch = lo; ch < hi && st == 0; ch++) st = comm_sum_add(&sum_rem, rem + (ch - lo) * L, err);
        if (comm_agree(job, st, err) != 0) goto done;
        if (comm_sum_finish(&sum_rem, rem_total, err) != 0) goto done;
        for (int64_t l = 0; l < L; l++) {
            const ppl_stats without = {.nll = rem_total[l], .count = scored};
            s->ppl_removed[l] = (float)ppl_value(&without);
            /* rank layers by how much removing them hurts (the direct measure) */
            s->layer[l] = (float)(s->ppl_removed[l] - s->base_ppl);
        }
    } else if (comm_agree(job, st, err) != 0) {
        goto done;
    }
    rc = 0;
done:
    if (open_sum) comm_sum_free(&sum);
    if (open_rem) comm_sum_free(&sum_rem);
    free(logits);
    if (open_ctx) llm_context_free(&ctx);
    if (open_lm) llm_model_free(&lm);
    free(cv.v); free(total); free(rem); free(rem_total);
    free(c.wo); free(down_cols); free(c.prev); free(c.norms);
    return rc;
}

/* ===================================================================== magnitude */

/* Sums of squares of a whole tensor (as F32): per row into rows[] and per column into cols[]
 * (either may be NULL); a column scaled by colscale[] (a norm weight) when given. */
static int tensor_sq(const model *m, const char *name, const float *colscale, double *rows, double *cols, slmc_err *err) {
    int64_t ti = model_find(m, name);
    if (ti < 0) return slmc_fail(err, m->path, "tensor %s is missing", name);
    const model_tensor *t = &m->tensors[ti];
    const int64_t n_in = t->ne[0], n_out = model_tensor_rows(t);
    float *buf = malloc(sizeof(float) * (size_t)n_in);
    if (!buf) return slmc_fail(err, m->path, "out of memory");
    for (int64_t r = 0; r < n_out; r++) {
        if (prune_read_f32(m, ti, r, 1, buf, err) != 0) { free(buf); return -1; }
        for (int64_t i = 0; i < n_in; i++) {
            double v = colscale ? (double)buf[i] * colscale[i] : buf[i];
            if (rows) rows[r] += v * v;
            if (cols) cols[i] += v * v;
        }
    }
    free(buf);
    return 0;
}

static int read_vector(const model *m, const char *name, float *out, slmc_err *err) {
    int64_t ti = model_find(m, name);
    if (ti < 0) return slmc_fail(err, m->path, "tensor %s is missing", name);
    return prune_read_f32(m, ti, 0, 1, out, err);
}

/* tensor_sq of a tensor that may be absent (optional biases aside, the family decides which of
 * attn_q / attn_qkv, ffn_gate, ffn_norm a model has): 0 and nothing added when it is. */
static int tensor_sq_opt(const model *m, const char *name, const float *colscale, double *rows, double *cols,
                         slmc_err *err) {
    return model_find(m, name) < 0 ? 0 : tensor_sq(m, name, colscale, rows, cols, err);
}

int prune_score_magnitude(prune_scores *s, const model *m, slmc_err *err) {
    const int64_t L = s->n_layer, H = s->n_head, HKV = s->n_head_kv, hd = s->head_dim, F = s->n_ff, E = s->n_embd;
    const int64_t qd = H * hd, kvd = HKV * hd;
    /* q_rows holds attn_q's rows, or all of a fused attn_qkv's (the first qd are Q's); ffn2 the
     * rows of a fused gate_up (channel c: rows c and F + c), folded into ffn */
    double *q_rows = malloc(sizeof(double) * (size_t)(qd + 2 * kvd)), *o_cols = malloc(sizeof(double) * (size_t)qd);
    double *ffn = malloc(sizeof(double) * (size_t)F), *ffn2 = malloc(sizeof(double) * (size_t)(2 * F));
    double *hid = malloc(sizeof(double) * (size_t)E);
    double *glob = calloc((size_t)E, sizeof(double)), *o_rows = malloc(sizeof(double) * (size_t)E);
    double *d_rows = malloc(sizeof(double) * (size_t)E);
    float *attn_norm = malloc(sizeof(float) * (size_t)E), *ffn_norm = malloc(sizeof(float) * (size_t)E);
    int rc = -1;
    if (!q_rows || !o_cols || !ffn || !ffn2 || !hid || !glob || !o_rows || !d_rows || !attn_norm || !ffn_norm) {
        slmc_fail(err, m->path, "out of memory");
        goto done;
    }
    char n1[96];
#define NAME(l, s) (snprintf(n1, sizeof n1, "blk.%lld." s, (long long)(l)), n1)
    for (int64_t l = 0; l < L; l++) {
        memset(q_rows, 0, sizeof(double) * (size_t)(qd + 2 * kvd));
        memset(o_cols, 0, sizeof(double) * (size_t)qd);
        memset(ffn, 0, sizeof(double) * (size_t)F);
        memset(ffn2, 0, sizeof(double) * (size_t)(2 * F));
        memset(hid, 0, sizeof(double) * (size_t)E);
        memset(o_rows, 0, sizeof(double) * (size_t)E);
        memset(d_rows, 0, sizeof(double) * (size_t)E);
        /* the matrices reading the hidden state see it through the norm weight: fold it in (the
         * FFN of a parallel block, phi2, reads the attention norm's output) */
        if (read_vector(m, NAME(l, "attn_norm.weight"), attn_norm, err)) goto done;
        if (model_find(m, NAME(l, "ffn_norm.weight")) >= 0) {
            if (read_vector(m, n1, ffn_norm, err)) goto done;
        } else {
            memcpy(ffn_norm, attn_norm, sizeof(float) * (size_t)E);
        }
        const bool fused_qkv = model_find(m, NAME(l, "attn_qkv.weight")) >= 0;
        const bool fused_ffn = model_find(m, NAME(l, "ffn_gate.weight")) < 0 &&
                               model_find(m, NAME(l, "ffn_up.weight")) >= 0 &&
                               model_tensor_rows(&m->tensors[model_find(m, n1)]) == 2 * F;
        if ((fused_qkv ? tensor_sq(m, NAME(l, "attn_qkv.weight"), attn_norm, q_rows, hid, err)
                       : tensor_sq(m, NAME(l, "attn_q.weight"), attn_norm, q_rows, hid, err) ||
                             tensor_sq(m, NAME(l, "attn_k.weight"), attn_norm, NULL, hid, err) ||
                             tensor_sq(m, NAME(l, "attn_v.weight"), attn_norm, NULL, hid, err)) ||
            tensor_sq(m, NAME(l, "attn_output.weight"), NULL, o_rows, o_cols, err) ||
            tensor_sq_opt(m, NAME(l, "ffn_gate.weight"), ffn_norm, ffn, hid, err) ||
            tensor_sq(m, NAME(l, "ffn_up.weight"), ffn_norm, fused_ffn ? ffn2 : ffn, hid, err) ||
            tensor_sq(m, NAME(l, "ffn_down.weight"), NULL, d_rows, ffn, err))
            goto done;
        if (fused_ffn)
            for (int64_t f = 0; f < F; f++) ffn[f] += ffn2[f] + ffn2[F + f];
        double layer_sq = 0;
        for (int64_t e = 0; e < E; e++) {
            hid[e] += o_rows[e] + d_rows[e];
            s->hidden[l * E + e] = (float)sqrt(hid[e]);
            glob[e] += hid[e];
            layer_sq += o_rows[e] + d_rows[e];
        }
        for (int64_t h = 0; h < H; h++) {
            double sq = 0;
            for (int64_t d = 0; d < hd; d++) sq += q_rows[h * hd + d] + o_cols[h * hd + d];
            s->head[l * H + h] = (float)sqrt(sq);
        }
        for (int64_t f = 0; f < F; f++) s->ffn[l * F + f] = (float)sqrt(ffn[f]);
        s->layer[l] = (float)sqrt(layer_sq);
    }
#undef NAME
    /* the hidden ranking also counts the embedding and the classifier */
    memset(hid, 0, sizeof(double) * (size_t)E);
    if (tensor_sq(m, "token_embd.weight", NULL, NULL, hid, err) != 0) goto done;
    if (model_find(m, "output.weight") >= 0) {
        if (read_vector(m, "output_norm.weight", attn_norm, err) || tensor_sq(m, "output.weight", attn_norm, NULL, hid, err))
            goto done;
    }
    for (int64_t e = 0; e < E; e++) s->hidden_total[e] = (float)sqrt(glob[e] + hid[e]);
    rc = 0;
done:
    free(q_rows); free(o_cols); free(ffn); free(ffn2); free(hid); free(glob); free(o_rows); free(d_rows);
    free(attn_norm); free(ffn_norm);
    return rc;
}

/* ===================================================================== random */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_uniform(float *v, int64_t n, uint64_t *state) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)((double)(splitmix64(state) >> 11) / 9007199254740992.0);
}

int prune_score_random(prune_scores *s, const model *m, uint64_t seed, slmc_err *err) {
    (void)m; (void)err;
    uint64_t st = seed;
    s->seed = seed;
    fill_uniform(s->head, s->n_layer * s->n_head, &st);
    fill_uniform(s->ffn, s->n_layer * s->n_ff, &st);
    fill_uniform(s->hidden, s->n_layer * s->n_embd, &st);
    fill_uniform(s->layer, s->n_layer, &st);
    sum_hidden(s);
    return 0;
}

/* ===================================================================== HDF5 */

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); } /* errors come back as values */

static int attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) > 0 ? strlen(s) : 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, strlen(s) > 0 ? s : "") >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static int attr_num(hid_t obj, const char *name, hid_t type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, type, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t v) { return attr_num(obj, name, H5T_NATIVE_INT64, &v); }

/* Object creation properties without modification times: the same scores give the same file
 * bytes (one process or mpirun, today or tomorrow), so files compare with cmp. */
static hid_t untimed(hid_t cls) {
    hid_t pl = H5Pcreate(cls);
    if (pl >= 0) H5Pset_obj_track_times(pl, 0);
    return pl;
}

static int put_vector(hid_t loc, const char *name, const float *v, int64_t n) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t dcpl = untimed(H5P_DATASET_CREATE);
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    int rc = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0 ? 0 : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

static int write_contents(hid_t f, const prune_scores *s) {
    const char *what[] = {"per head: mean over tokens of the L2 norm of the head's contribution W_o,h o_h "
                          "(heads_act: of o_h itself); per FFN channel: mean |silu(gate)*up| times the norm of "
                          "its ffn_down column (ffn_act: mean |silu(gate)*up|)",
                          "per head: L2 norm of its attn_q rows and attn_output columns", "uniform random"};
    int rc = attr_str(f, "format", SCORES_FORMAT) | attr_i64(f, "version", SCORES_VERSION) |
             attr_str(f, "method", prune_method_name(s->method)) | attr_str(f, "model", s->model) |
             attr_str(f, "calib", s->calib) | attr_i64(f, "n_ctx", s->n_ctx) | attr_i64(f, "chunks", s->chunks) |
             attr_i64(f, "tokens", s->tokens) | attr_num(f, "seed", H5T_NATIVE_UINT64, &s->seed) |
             attr_num(f, "base_ppl", H5T_NATIVE_DOUBLE, &s->base_ppl) | attr_i64(f, "n_layer", s->n_layer) |
             attr_i64(f, "n_head", s->n_head) | attr_i64(f, "n_head_kv", s->n_head_kv) |
             attr_i64(f, "head_dim", s->head_dim) | attr_i64(f, "n_ff", s->n_ff) | attr_i64(f, "n_embd", s->n_embd) |
             attr_str(f, "heads_score", what[s->method]);
    for (int64_t l = 0; l < s->n_layer && rc == 0; l++) {
        char g[32];
        snprintf(g, sizeof g, "blk.%lld", (long long)l);
        hid_t gcpl = untimed(H5P_GROUP_CREATE);
        hid_t grp = H5Gcreate2(f, g, H5P_DEFAULT, gcpl, H5P_DEFAULT);
        if (gcpl >= 0) H5Pclose(gcpl);
        if (grp < 0) return -1;
        rc = put_vector(grp, "heads", s->head + l * s->n_head, s->n_head) | put_vector(grp, "ffn", s->ffn + l * s->n_ff, s->n_ff) |
             put_vector(grp, "heads_act", s->head_act + l * s->n_head, s->n_head) |
             put_vector(grp, "ffn_act", s->ffn_act + l * s->n_ff, s->n_ff) |
             put_vector(grp, "hidden", s->hidden + l * s->n_embd, s->n_embd);
        H5Gclose(grp);
    }
    if (rc != 0) return -1;
    hid_t gcpl = untimed(H5P_GROUP_CREATE);
    hid_t grp = H5Gcreate2(f, "layers", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0) H5Pclose(gcpl);
    if (grp < 0) return -1;
    rc = put_vector(grp, "block_influence", s->block_influence, s->n_layer) |
         put_vector(grp, "ppl_removed", s->ppl_removed, s->n_layer) | put_vector(grp, "score", s->layer, s->n_layer);
    H5Gclose(grp);
    return rc | put_vector(f, "hidden", s->hidden_total, s->n_embd);
}

int prune_scores_write(const prune_scores *s, const char *path, slmc_err *err) {
    silence_hdf5();
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return slmc_fail(err, path, "out of memory");
    snprintf(tmp, n, "%s.tmp%d", path, (int)getpid());
    hid_t fcpl = untimed(H5P_FILE_CREATE); /* the root group's times too */
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (f < 0) { free(tmp); return slmc_fail(err, path, "cannot create the HDF5 file"); }
    int rc = write_contents(f, s);
    if (H5Fclose(f) < 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) {
        unlink(tmp);
        free(tmp);
        return slmc_fail(err, path, "cannot write the scores");
    }
    free(tmp);
    return 0;
}

static int get_i64(hid_t obj, const char *name, int64_t *v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Aread(a, H5T_NATIVE_INT64, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int get_num(hid_t obj, const char *name, hid_t type, void *v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Aread(a, type, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* A fixed-length string attribute into buf (truncated to cap - 1). */
static int get_str(hid_t obj, const char *name, char *buf, size_t cap) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    size_t n = ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) ? H5Tget_size(ft) : 0;
    char *tmp = n ? malloc(n + 1) : NULL;
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, n ? n : 1);
    int rc = tmp && H5Aread(a, mt, tmp) >= 0 ? 0 : -1;
    if (rc == 0) {
        tmp[n] = 0;
        snprintf(buf, cap, "%s", tmp);
    }
    free(tmp);
    H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* A 1-D float dataset of exactly n values. */
static int get_vector(hid_t f, const char *name, float *v, int64_t n, const char *path, slmc_err *err) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return slmc_fail(err, path, "dataset %s is missing", name);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[1] = {0};
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank == 1) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    int rc = 0;
    if (rank != 1 || dims[0] != (hsize_t)n)
        rc = slmc_fail(err, path, "dataset %s holds %llu values, expected %lld", name, (unsigned long long)dims[0], (long long)n);
    else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
        rc = slmc_fail(err, path, "cannot read dataset %s", name);
    H5Dclose(d);
    return rc;
}

int prune_scores_read(prune_scores *s, const char *path, slmc_err *err) {
    memset(s, 0, sizeof *s);
    silence_hdf5();
    if (access(path, R_OK) != 0) return slmc_fail(err, path, "cannot open the scores file");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return slmc_fail(err, path, "not an HDF5 file");
    char fmt[64] = "", method[32] = "";
    int64_t version = 0, n_ctx = 0, chunks = 0;
    int rc = -1;
    if (get_str(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, SCORES_FORMAT) != 0) {
        slmc_fail(err, path, "not a pruning scores file (attribute format is not \"%s\")", SCORES_FORMAT);
        goto done;
    }
    if (get_i64(f, "version", &version) != 0 || version != SCORES_VERSION) {
        slmc_fail(err, path, "scores file version %lld, this build reads %d", (long long)version, SCORES_VERSION);
        goto done;
    }
    if (get_str(f, "method", method, sizeof method) != 0 || prune_method_from_name(method) < 0 ||
        get_i64(f, "n_layer", &s->n_layer) || get_i64(f, "n_head", &s->n_head) || get_i64(f, "n_head_kv", &s->n_head_kv) ||
        get_i64(f, "head_dim", &s->head_dim) || get_i64(f, "n_ff", &s->n_ff) || get_i64(f, "n_embd", &s->n_embd) ||
        get_i64(f, "n_ctx", &n_ctx) || get_i64(f, "chunks", &chunks) || get_i64(f, "tokens", &s->tokens) ||
        get_num(f, "seed", H5T_NATIVE_UINT64, &s->seed) || get_num(f, "base_ppl", H5T_NATIVE_DOUBLE, &s->base_ppl)) {
        slmc_fail(err, path, "a root attribute (method, shape or calibration) is missing or malformed");
        goto done;
    }
    get_str(f, "model", s->model, sizeof s->model);
    get_str(f, "calib", s->calib, sizeof s->calib);
    s->method = (prune_method)prune_method_from_name(method);
    s->n_ctx = (int)n_ctx;
    s->chunks = (int)chunks;
    if (s->n_layer <= 0 || s->n_head <= 0 || s->n_ff <= 0 || s->n_embd <= 0 || s->n_layer > 100000 ||
        s->n_head > 100000 || s->n_ff > 10000000 || s->n_embd > 1000000) {
        slmc_fail(err, path, "implausible model shape in the attributes");
        goto done;
    }
    double base = s->base_ppl;
    if (scores_alloc(s) != 0) { slmc_fail(err, path, "out of memory"); goto done; }
    s->base_ppl = base;
    for (int64_t l = 0; l < s->n_layer; l++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%lld/heads", (long long)l);
        if (get_vector(f, n, s->head + l * s->n_head, s->n_head, path, err)) goto done;
        snprintf(n, sizeof n, "blk.%lld/ffn", (long long)l);
        if (get_vector(f, n, s->ffn + l * s->n_ff, s->n_ff, path, err)) goto done;
        snprintf(n, sizeof n, "blk.%lld/heads_act", (long long)l);
        if (get_vector(f, n, s->head_act + l * s->n_head, s->n_head, path, err)) goto done;
        snprintf(n, sizeof n, "blk.%lld/ffn_act", (long long)l);
        if (get_vector(f, n, s->ffn_act + l * s->n_ff, s->n_ff, path, err)) goto done;
        snprintf(n, sizeof n, "blk.%lld/hidden", (long long)l);
        if (get_vector(f, n, s->hidden + l * s->n_embd, s->n_embd, path, err)) goto done;
    }
    if (get_vector(f, "layers/block_influence", s->block_influence, s->n_layer, path, err) ||
        get_vector(f, "layers/ppl_removed", s->ppl_removed, s->n_layer, path, err) ||
        get_vector(f, "layers/score", s->layer, s->n_layer, path, err) ||
        get_vector(f, "hidden", s->hidden_total, s->n_embd, path, err))
        goto done;
    rc = 0;
done:
    H5Fclose(f);
    if (rc != 0) prune_scores_free(s);
    return rc;
}
