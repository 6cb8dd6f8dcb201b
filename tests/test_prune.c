/* test_prune.c - prune/: removing heads, FFN channels and layers gives exactly the model with
 * them masked to zero; hidden-width cuts select the right values; selection follows the
 * scores; pruned models round-trip through GGUF and Hugging Face; scores through HDF5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/llm.h"
#include "eval/perplexity.h"
#include "formats/hf.h"
#include "formats/synth.h"
#include "codec/types.h"
#include "prune/importance.h"
#include "prune/prune.h"
#include "prune/reconstruct.h"
#include "testutil.h"

/* ===================================================================== fixtures */

/* synth's "tiny" shape as F32: 128 wide, FFN 384, 2 layers, 4 heads of 32, 2 KV heads,
 * vocab 512, stored in HF order (so the Q/K row permutation is exercised). */
static char *dir;
static model src;

static void setup(void) {
    dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/tiny", dir);
    synth_opts o;
    synth_opts_init(&o);
    o.shape = "tiny";
    o.dtype = GGML_TYPE_F32;
    slmc_err err = {{0}};
    ck_assert_msg(synth_write(&o, path, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&src, path, NULL, &err) == 0, "%s", err.msg);
}

static void teardown(void) {
    model_close(&src);
    tmpdir_remove(dir);
}

#define N_TOK 24
static const int32_t TOKENS[N_TOK] = {1, 17, 300, 42, 511, 8, 99, 256, 3, 77, 140, 201,
                                      5, 6, 480, 33, 12, 64, 128, 255, 400, 2, 9, 310};

/* All logits [N_TOK][n_vocab] of a model on `tokens` (N_TOK of them), evaluated in exact F32
 * attention; its vocabulary size to *n_vocab when non-NULL. */
static float *logits_on(const model *m, const int32_t *tokens, int64_t *n_vocab) {
    llm_model lm;
    llm_context ctx;
    slmc_err err = {{0}};
    ck_assert_msg(llm_model_init(&lm, m, &err) == 0, "%s", err.msg);
    ck_assert_msg(llm_context_init(&ctx, &lm, N_TOK, N_TOK, &err) == 0, "%s", err.msg);
    ctx.f16_attention = false;
    float *out = malloc(sizeof(float) * N_TOK * (size_t)lm.cfg.n_vocab);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(llm_eval(&ctx, tokens, N_TOK, 0, out, &err) == 0, "%s", err.msg);
    if (n_vocab) *n_vocab = lm.cfg.n_vocab;
    llm_context_free(&ctx);
    llm_model_free(&lm);
    return out;
}
static float *logits_of(const model *m) { return logits_on(m, TOKENS, NULL); }

/* Largest |a - b| over n values, and the largest |a|, to compare relative to the logits' scale. */
static double max_diff(const float *a, const float *b, size_t n, double *scale) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)a[i]) > s) s = fabs((double)a[i]);
    }
    if (scale) *scale = s;
    return d;
}

/* A writable F32 copy of a model (rows in llama.cpp's order), to zero weights in. */
typedef struct copy_src {
    float **bufs;
    uint64_t n;
} copy_src;

static void copy_free(void *v) {
    copy_src *c = v;
    for (uint64_t i = 0; i < c->n; i++) free(c->bufs[i]);
    free(c->bufs);
    free(c);
}

static void masked_copy(model *dst, const model *m) {
    memset(dst, 0, sizeof *dst);
    slmc_err err = {{0}};
    ck_assert_int_eq(meta_copy(&dst->kv, &m->kv), 0);
    dst->cfg = m->cfg;
    dst->path = strdup("masked");
    dst->tensors = calloc(m->n_tensors, sizeof *dst->tensors);
    copy_src *c = calloc(1, sizeof *c);
    c->bufs = calloc(m->n_tensors, sizeof *c->bufs);
    dst->src = c;
    dst->free_src = copy_free;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        model_tensor *o = &dst->tensors[i];
        *o = *t;
        o->name = strdup(t->name);
        o->owned = NULL; /* the copy's data is in c->bufs */
        o->qk_heads = 0;
        o->type = GGML_TYPE_F32;
        o->nbytes = sizeof(float) * (uint64_t)(t->ne[0] * model_tensor_rows(t));
        c->bufs[i] = malloc(o->nbytes);
        ck_assert_msg(model_read_rows_f32(m, i, 0, model_tensor_rows(t), c->bufs[i], &err) == 0, "%s", err.msg);
        o->data = (const uint8_t *)c->bufs[i];
        c->n++;
        dst->n_tensors++;
    }
}

static float *tensor_f32(model *m, const char *name, int64_t *ne0, int64_t *rows) {
    int64_t ti = model_find(m, name);
    ck_assert_msg(ti >= 0, "%s missing", name);
    *ne0 = m->tensors[ti].ne[0];
    *rows = model_tensor_rows(&m->tensors[ti]);
    return (float *)m->tensors[ti].data; /* masked copies own F32 buffers */
}

/* Zero columns [c0, c0+n) of every row (cols) or rows [c0, c0+n) (rows) of a masked copy. */
static void zero_cols(model *m, const char *name, int64_t c0, int64_t n) {
    int64_t ne0, rows;
    float *w = tensor_f32(m, name, &ne0, &rows);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = c0; c < c0 + n; c++) w[r * ne0 + c] = 0;
}

static void zero_all(model *m, const char *name) {
    int64_t ne0, rows;
    float *w = tensor_f32(m, name, &ne0, &rows);
    memset(w, 0, sizeof(float) * (size_t)(ne0 * rows));
}

/* Pruned vs masked: equal up to float summation order (removed terms were exact zeros, but
 * shorter dot products add in another order). Also checks the mask changed the output, so
 * the comparison is not vacuous. */
static void expect_same(const model *pruned, const model *masked) {
    float *a = logits_of(pruned), *b = logits_of(masked), *c = logits_of(&src);
    const size_t n = (size_t)N_TOK * (size_t)src.cfg.n_vocab;
    double scale, d = max_diff(a, b, n, &scale), changed = max_diff(b, c, n, NULL);
    ck_assert_msg(d <= 2e-5 * scale, "pruned and masked logits differ by %g (scale %g)", d, scale);
    ck_assert_msg(changed > 1e-3 * scale, "masking changed the logits by only %g: the test would prove nothing", changed);
    free(a); free(b); free(c);
}

/* ===================================================================== exactness */

START_TEST(test_heads_per_group) {
    /* 4 heads, 2 KV groups {0,1} {2,3}: keep one query head per group */
    prune_plan p;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_plan_identity(&p, &src, &err), 0);
    p.n_head = 2;
    int64_t keep[2][2] = {{0, 3}, {1, 2}};
    for (int l = 0; l < 2; l++) memcpy(p.heads + l * 2, keep[l], sizeof keep[l]);
    model pruned, masked;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pruned.cfg.n_head, 2);
    ck_assert_int_eq(pruned.cfg.n_head_kv, 2);
    ck_assert_int_eq(pruned.cfg.head_dim, 32);
    ck_assert_int_eq(pruned.tensors[model_find(&pruned, "blk.0.attn_q.weight")].ne[1], 64);
    ck_assert_int_eq(pruned.tensors[model_find(&pruned, "blk.0.attn_k.weight")].ne[1], 64);
    ck_assert_int_eq(pruned.tensors[model_find(&pruned, "blk.0.attn_output.weight")].ne[0], 64);
    masked_copy(&masked, &src);
    zero_cols(&masked, "blk.0.attn_output.weight", 1 * 32, 32);
    zero_cols(&masked, "blk.0.attn_output.weight", 2 * 32, 32);
    zero_cols(&masked, "blk.1.attn_output.weight", 0 * 32, 32);
    zero_cols(&masked, "blk.1.attn_output.weight", 3 * 32, 32);
    expect_same(&pruned, &masked);
    model_close(&pruned);
    model_close(&masked);
    prune_plan_free(&p);
}
END_TEST

START_TEST(test_heads_whole_groups) {
    /* layer 0 loses KV group 0 (heads 0, 1), layer 1 group 1 (heads 2, 3) */
    prune_plan p;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_plan_identity(&p, &src, &err), 0);
    p.n_head = 2;
    p.n_head_kv = 1;
    int64_t heads[2][2] = {{2, 3}, {0, 1}}, kv[2] = {1, 0};
    for (int l = 0; l < 2; l++) {
        memcpy(p.heads + l * 2, heads[l], sizeof heads[l]);
        p.kv_heads[l] = kv[l];
    }
    model pruned, masked;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pruned.cfg.n_head_kv, 1);
    ck_assert_int_eq(pruned.tensors[model_find(&pruned, "blk.1.attn_v.weight")].ne[1], 32);
    masked_copy(&masked, &src);
    zero_cols(&masked, "blk.0.attn_output.weight", 0, 64);
    zero_cols(&masked, "blk.1.attn_output.weight", 64, 64);
    expect_same(&pruned, &masked);
    model_close(&pruned);
    model_close(&masked);
    prune_plan_free(&p);
}
END_TEST

START_TEST(test_ffn_channels) {
    prune_plan p;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_plan_identity(&p, &src, &err), 0);
    /* drop channels {5, 100, 383} of layer 0 and {0, 1, 200} of layer 1 */
    const int64_t drop[2][3] = {{5, 100, 383}, {0, 1, 200}};
    p.n_ff = 381;
    for (int l = 0; l < 2; l++) {
        int64_t k = 0;
        for (int64_t f = 0; f < 384; f++)
            if (f != drop[l][0] && f != drop[l][1] && f != drop[l][2]) p.ffn[l * 381 + k++] = f;
        ck_assert_int_eq(k, 381);
    }
    model pruned, masked;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pruned.cfg.n_ff, 381);
    masked_copy(&masked, &src);
    char name[64];
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
            zero_cols(&masked, name, drop[l][j], 1);
        }
    expect_same(&pruned, &masked);
    model_close(&pruned);
    model_close(&masked);
    prune_plan_free(&p);
}
END_TEST

START_TEST(test_drop_layer) {
    for (int drop = 0; drop < 2; drop++) {
        prune_plan p;
        slmc_err err = {{0}};
        ck_assert_int_eq(prune_plan_identity(&p, &src, &err), 0);
        p.keep_layer[drop] = false;
        p.n_layer = 1;
        model pruned, masked;
        ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(pruned.cfg.n_layer, 1);
        ck_assert_int_lt(model_find(&pruned, "blk.1.attn_q.weight"), 0);
        /* the kept layer is renumbered 0 and is the same tensor (no copy) */
        int64_t a = model_find(&pruned, "blk.0.ffn_up.weight");
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", 1 - drop);
        ck_assert_ptr_eq(pruned.tensors[a].data, src.tensors[model_find(&src, name)].data);
        /* skipping a layer == its residual contributions zeroed */
        masked_copy(&masked, &src);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", drop);
        zero_all(&masked, name);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", drop);
        zero_all(&masked, name);
        float *x = logits_of(&pruned), *y = logits_of(&masked);
        size_t n = (size_t)N_TOK * (size_t)src.cfg.n_vocab;
        ck_assert_msg(memcmp(x, y, n * sizeof(float)) == 0, "dropping layer %d differs from skipping it (%g)", drop,
                      max_diff(x, y, n, NULL));
        free(x); free(y);
        model_close(&pruned);
        model_close(&masked);
        prune_plan_free(&p);
    }
}
END_TEST

START_TEST(test_hidden_values) {
    prune_plan p;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_plan_identity(&p, &src, &err), 0);
    /* keep every channel but 7 and 64 */
    p.n_embd = 126;
    for (int64_t e = 0, k = 0; e < 128; e++)
        if (e != 7 && e != 64) p.hidden[k++] = e;
    model pruned;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(pruned.cfg.n_embd, 126);
    ck_assert_int_eq(pruned.cfg.head_dim, 32);
    uint64_t kl;
    ck_assert(meta_get_u64(&pruned.kv, "llama.attention.key_length", &kl) && kl == 32);
    const char *col_cut[] = {"token_embd.weight", "blk.1.attn_k.weight", "blk.0.ffn_up.weight", "output.weight",
                             "blk.1.attn_norm.weight"};
    const char *row_cut[] = {"blk.0.attn_output.weight", "blk.1.ffn_down.weight"};
    float in[512], out[512];
    for (size_t i = 0; i < 5; i++) {
        int64_t a = model_find(&src, col_cut[i]), b = model_find(&pruned, col_cut[i]);
        ck_assert_int_eq(pruned.tensors[b].ne[0], 126);
        int64_t r = model_tensor_rows(&src.tensors[a]) - 1; /* the last row */
        ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)a, r, 1, in, &err), 0);
        ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)b, r, 1, out, &err), 0);
        for (int64_t e = 0, k = 0; e < 128; e++)
            if (e != 7 && e != 64) ck_assert_float_eq(out[k++], in[e]);
    }
    for (size_t i = 0; i < 2; i++) {
        int64_t a = model_find(&src, row_cut[i]), b = model_find(&pruned, row_cut[i]);
        ck_assert_int_eq(model_tensor_rows(&pruned.tensors[b]), 126);
        ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)a, 65, 1, in, &err), 0);
        ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)b, 63, 1, out, &err), 0); /* row 65 is now 63 */
        ck_assert_int_eq(memcmp(in, out, sizeof(float) * (size_t)src.tensors[a].ne[0]), 0);
    }
    float *l = logits_of(&pruned);
    CK_ASSERT_RANGE(i, 0, N_TOK * 512, isfinite(l[i]));
    free(l);
    model_close(&pruned);
    prune_plan_free(&p);
}
END_TEST

/* ===================================================================== selection */

START_TEST(test_select) {
    prune_scores s;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_RANDOM, &err), 0);
    /* FFN: score = index in layer 0, reversed in layer 1; heads: layer 0 prefers 1 and 2 */
    for (int64_t f = 0; f < 384; f++) { s.ffn[f] = (float)f; s.ffn[384 + f] = (float)(384 - f); }
    const float hs[2][4] = {{0.1f, 0.9f, 0.8f, 0.2f}, {0.5f, 0.6f, 0.1f, 0.05f}};
    memcpy(s.head, hs, sizeof hs);
    s.layer[0] = 2; s.layer[1] = 1;
    for (int64_t e = 0; e < 128; e++) s.hidden_total[e] = (float)((e * 37) % 128);
    prune_plan p;
    prune_request r = {.keep_ffn = 100, .keep_heads = 2, .keep_layers = 1, .keep_hidden = 96};
    ck_assert_msg(prune_select(&p, &src, &s, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(p.ffn[0], 284);  /* layer 0 keeps 284..383 */
    ck_assert_int_eq(p.ffn[99], 383);
    ck_assert_int_eq(p.ffn[100], 0);  /* layer 1 keeps 0..99 */
    ck_assert_int_eq(p.ffn[199], 99);
    /* 2 of 4 with 2 KV heads: per group (the best head of each group) */
    ck_assert_int_eq(p.n_head_kv, 2);
    ck_assert_int_eq(p.heads[0], 1); ck_assert_int_eq(p.heads[1], 2);
    ck_assert_int_eq(p.heads[2], 1); ck_assert_int_eq(p.heads[3], 2);
    ck_assert(p.keep_layer[0] && !p.keep_layer[1]);
    for (int64_t i = 0; i < 96; i++) ck_assert_int_ge((p.hidden[i] * 37) % 128, 32);
    prune_plan_free(&p);
    /* whole groups: layer 0 keeps group 0 (1.0 vs 1.0: the lower index), layer 1 group 0 */
    prune_request g = {.keep_heads = 2, .head_mode = PRUNE_HEADS_GROUPS};
    ck_assert_msg(prune_select(&p, &src, &s, &g, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(p.n_head_kv, 1);
    ck_assert_int_eq(p.kv_heads[0], 0);
    ck_assert_int_eq(p.kv_heads[1], 0);
    ck_assert_int_eq(p.heads[2], 0); ck_assert_int_eq(p.heads[3], 1);
    prune_plan_free(&p);
    /* 3 of 4 heads fits neither 2 groups nor groups of 2 */
    prune_request bad = {.keep_heads = 3};
    ck_assert_int_eq(prune_select(&p, &src, &s, &bad, &err), -1);
    ck_assert_msg(strstr(err.msg, "cannot keep 3 of 4 heads") != NULL, "%s", err.msg);
    prune_scores_free(&s);
}
END_TEST

START_TEST(test_target_params) {
    prune_scores s;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_MAGNITUDE, &err), 0);
    ck_assert_msg(prune_score_magnitude(&s, &src, &err) == 0, "%s", err.msg);
    const uint64_t total = model_param_count(&src);
    prune_request r;
    ck_assert_msg(prune_search_target(&r, &src, &s, total * 7 / 10, false, &err) == 0, "%s", err.msg);
    prune_plan p;
    ck_assert_msg(prune_select(&p, &src, &s, &r, &err) == 0, "%s", err.msg);
    model pruned;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    const uint64_t n = model_param_count(&pruned);
    ck_assert_uint_eq(n, prune_plan_params(&p, &src));
    ck_assert_uint_le(n, total * 7 / 10);
    ck_assert_uint_ge(n, total * 6 / 10); /* the search uses the budget */
    model_close(&pruned);
    prune_plan_free(&p);
    /* blocks only */
    ck_assert_msg(prune_search_target(&r, &src, &s, 600000, true, &err) == 0, "%s", err.msg);
    ck_assert_msg(prune_select(&p, &src, &s, &r, &err) == 0, "%s", err.msg);
    ck_assert_uint_le(prune_block_params(&p, &src), 600000);
    prune_plan_free(&p);
    prune_scores_free(&s);
}
END_TEST

/* ===================================================================== scores */

START_TEST(test_magnitude_values) {
    prune_scores s;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_MAGNITUDE, &err), 0);
    ck_assert_msg(prune_score_magnitude(&s, &src, &err) == 0, "%s", err.msg);
    /* head 3 of layer 1: its attn_q rows (llama.cpp order) seen through attn_norm, and its
     * attn_output columns */
    float row[384], norm[128];
    double ss = 0;
    int64_t q = model_find(&src, "blk.1.attn_q.weight"), o = model_find(&src, "blk.1.attn_output.weight");
    ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)model_find(&src, "blk.1.attn_norm.weight"), 0, 1, norm, &err), 0);
    for (int64_t r = 96; r < 128; r++) {
        ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)q, r, 1, row, &err), 0);
        for (int i = 0; i < 128; i++) ss += (double)row[i] * norm[i] * row[i] * norm[i];
    }
    for (int64_t r = 0; r < 128; r++) {
        ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)o, r, 1, row, &err), 0);
        for (int i = 96; i < 128; i++) ss += (double)row[i] * row[i];
    }
    ck_assert_double_eq_tol(s.head[1 * 4 + 3], sqrt(ss), 1e-4 * sqrt(ss));
    prune_scores_free(&s);
}
END_TEST

/* The ffn_act mean |x| of channel c in layer l, accumulated independently by a test hook. */
typedef struct ffn_probe {
    int layer;
    double sum[384];
} ffn_probe;

static int probe_ffn(void *ud, int layer, const float *x, int n, int64_t n_ff) {
    ffn_probe *p = ud;
    if (layer == p->layer)
        for (int t = 0; t < n; t++)
            for (int64_t f = 0; f < n_ff; f++) p->sum[f] += fabsf(x[(size_t)t * (size_t)n_ff + f]);
    return 0;
}

START_TEST(test_activation_and_hdf5) {
    /* 3 chunks of 16 tokens of a deterministic sequence */
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (int32_t)((i * 131 + 7) % 509) + 3;
    prune_scores s, back;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_ACTIVATION, &err), 0);
    prune_calib_opts o = {.n_ctx = 16, .max_chunks = 3, .bos = 1, .layer_ppl = true};
    ck_assert_msg(prune_score_activation(&s, &src, toks, 64, &o, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s.chunks, 3);
    ck_assert_int_eq(s.tokens, 48);
    ck_assert(isfinite(s.base_ppl) && s.base_ppl > 1);
    for (int l = 0; l < 2; l++) {
        ck_assert(s.block_influence[l] > 0 && s.block_influence[l] < 2);
        ck_assert(isfinite(s.ppl_removed[l]));
        ck_assert_float_eq_tol(s.layer[l], s.ppl_removed[l] - (float)s.base_ppl, 1e-3f * (float)s.base_ppl);
    }
    /* FFN scores against an independent probe over the same chunks (first token -> BOS) */
    llm_model lm;
    llm_context ctx;
    ck_assert_int_eq(llm_model_init(&lm, &src, &err), 0);
    ck_assert_int_eq(llm_context_init(&ctx, &lm, 16, 16, &err), 0);
    ffn_probe probe = {.layer = 1};
    llm_hooks h = {.ud = &probe, .ffn_act = probe_ffn};
    llm_set_hooks(&ctx, &h);
    for (int c = 0; c < 3; c++) {
        int32_t chunk[16];
        memcpy(chunk, toks + c * 16, sizeof chunk);
        chunk[0] = 1;
        ck_assert_int_eq(llm_eval_out(&ctx, chunk, 16, 0, 16, NULL, &err), 0);
    }
    for (int f = 0; f < 384; f += 37) ck_assert_double_eq_tol(s.ffn_act[384 + f], probe.sum[f] / 48, 1e-5 * probe.sum[f] / 48 + 1e-9);
    /* the ranking score: times the norm of the channel's ffn_down column */
    double ss = 0;
    for (int64_t r = 0; r < 128; r++) {
        float row[384];
        ck_assert_int_eq(model_read_rows_f32(&src, (uint64_t)model_find(&src, "blk.1.ffn_down.weight"), r, 1, row, &err), 0);
        ss += (double)row[74] * row[74];
    }
    ck_assert_double_eq_tol(s.ffn[384 + 74], s.ffn_act[384 + 74] * sqrt(ss), 1e-5 * s.ffn[384 + 74]);
    for (int h = 0; h < 8; h++) ck_assert(s.head[h] > 0 && s.head_act[h] > 0);
    llm_context_free(&ctx);
    llm_model_free(&lm);

    /* HDF5 round trip: every value back exactly */
    char path[512];
    snprintf(path, sizeof path, "%s/scores.h5", dir);
    snprintf(s.calib, sizeof s.calib, "calib.txt");
    ck_assert_msg(prune_scores_write(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(prune_scores_read(&back, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(back.method, PRUNE_ACTIVATION);
    ck_assert_int_eq(back.n_ctx, 16);
    ck_assert_int_eq(back.chunks, 3);
    ck_assert_str_eq(back.calib, "calib.txt");
    ck_assert_double_eq(back.base_ppl, s.base_ppl);
    ck_assert_int_eq(memcmp(back.head, s.head, sizeof(float) * 8), 0);
    ck_assert_int_eq(memcmp(back.ffn, s.ffn, sizeof(float) * 768), 0);
    ck_assert_int_eq(memcmp(back.ffn_act, s.ffn_act, sizeof(float) * 768), 0);
    ck_assert_int_eq(memcmp(back.head_act, s.head_act, sizeof(float) * 8), 0);
    ck_assert_int_eq(memcmp(back.hidden, s.hidden, sizeof(float) * 256), 0);
    ck_assert_int_eq(memcmp(back.hidden_total, s.hidden_total, sizeof(float) * 128), 0);
    ck_assert_int_eq(memcmp(back.layer, s.layer, sizeof(float) * 2), 0);
    ck_assert_int_eq(memcmp(back.ppl_removed, s.ppl_removed, sizeof(float) * 2), 0);
    ck_assert_int_eq(prune_scores_check(&back, &src, path, &err), 0);
    prune_scores_free(&back);
    /* not a scores file */
    snprintf(path, sizeof path, "%s/tiny/config.json", dir);
    ck_assert_int_eq(prune_scores_read(&back, path, &err), -1);
    ck_assert_msg(strstr(err.msg, "config.json") != NULL, "%s", err.msg);
    prune_scores_free(&s);
}
END_TEST

/* ===================================================================== round trips */

START_TEST(test_roundtrip) {
    prune_scores s;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &src, 7, &err), 0);
    prune_request r = {.keep_ffn = 256, .keep_heads = 2, .head_mode = PRUNE_HEADS_GROUPS, .keep_layers = 1, .keep_hidden = 96};
    prune_plan p;
    ck_assert_msg(prune_select(&p, &src, &s, &r, &err) == 0, "%s", err.msg);
    model pruned;
    ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
    float *ref = logits_of(&pruned);
    const size_t n = (size_t)N_TOK * 512;
    char g1[512], hf[512], g2[512];
    snprintf(g1, sizeof g1, "%s/p.gguf", dir);
    snprintf(hf, sizeof hf, "%s/p-hf", dir);
    snprintf(g2, sizeof g2, "%s/p2.gguf", dir);
    ck_assert_msg(model_write_gguf(&pruned, g1, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(hf_write(&pruned, hf, -1, HF_DEFAULT_SHARD_SIZE, NULL, &err) == 0, "%s", err.msg);
    model_close(&pruned);
    /* GGUF: the metadata of the new shape, the same logits bit for bit */
    model a, b, c;
    ck_assert_msg(model_open(&a, g1, NULL, &err) == 0, "%s", err.msg);
    uint64_t v;
    ck_assert(meta_get_u64(&a.kv, "llama.block_count", &v) && v == 1);
    ck_assert(meta_get_u64(&a.kv, "llama.embedding_length", &v) && v == 96);
    ck_assert(meta_get_u64(&a.kv, "llama.feed_forward_length", &v) && v == 256);
    ck_assert(meta_get_u64(&a.kv, "llama.attention.head_count", &v) && v == 2);
    ck_assert(meta_get_u64(&a.kv, "llama.attention.head_count_kv", &v) && v == 1);
    ck_assert(meta_get_u64(&a.kv, "llama.attention.key_length", &v) && v == 32);
    uint64_t nt;
    ck_assert(meta_get_arr(&a.kv, "tokenizer.ggml.tokens", GGUF_STR, &nt) && nt == 512);
    float *x = logits_of(&a);
    ck_assert_int_eq(memcmp(x, ref, n * sizeof(float)), 0);
    /* HF folder (Q/K back in HF order, config.json with head_dim): same logits, and back to
     * GGUF byte for byte */
    ck_assert_msg(model_open(&b, hf, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(b.cfg.n_head, 2);
    ck_assert_int_eq(b.cfg.head_dim, 32);
    float *y = logits_of(&b);
    ck_assert_int_eq(memcmp(y, ref, n * sizeof(float)), 0);
    ck_assert_msg(model_write_gguf(&b, g2, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&c, g2, NULL, &err) == 0, "%s", err.msg);
    size_t l1, l2;
    uint8_t *f1 = slurp(g1, &l1), *f2 = slurp(g2, &l2);
    ck_assert_ptr_nonnull(f1);
    ck_assert_ptr_nonnull(f2);
    ck_assert_uint_eq(l1, l2);
    ck_assert_int_eq(memcmp(f1, f2, l1), 0);
    free(f1); free(f2); free(x); free(y); free(ref);
    model_close(&a); model_close(&b); model_close(&c);
    prune_plan_free(&p);
    prune_scores_free(&s);
}
END_TEST

/* ===================================================================== reconstruction */

/* Deterministic pseudo-random numbers in [-1, 1). */
static double urand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / (double)(1ULL << 52) - 1.0;
}

/* Inputs x [T][n] with correlated columns (mixtures of n/2 sources plus a little noise), their
 * Gram matrix g = x^T x, and weights w [n_out][n]. */
static void obs_problem(int64_t T, int64_t n, int64_t n_out, uint64_t seed, double *g, double *w) {
    uint64_t s = seed;
    const int64_t k = n / 2;
    double *mix = malloc(sizeof(double) * (size_t)(k * n)), *x = malloc(sizeof(double) * (size_t)(T * n));
    ck_assert(mix && x);
    for (int64_t i = 0; i < k * n; i++) mix[i] = urand(&s);
    for (int64_t t = 0; t < T; t++) {
        double z[k];
        for (int64_t i = 0; i < k; i++) z[i] = urand(&s);
        for (int64_t j = 0; j < n; j++) {
            double v = 0.05 * urand(&s);
            for (int64_t i = 0; i < k; i++) v += z[i] * mix[i * n + j];
            x[t * n + j] = v;
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double v = 0;
            for (int64_t t = 0; t < T; t++) v += x[t * n + i] * x[t * n + j];
            g[i * n + j] = v;
        }
    for (int64_t i = 0; i < n_out * n; i++) w[i] = urand(&s);
    free(mix);
    free(x);
}

/* The damped matrix prune_obs_remove inverts: G + lambda I, lambda = 0.01 mean(diag G). */
static void damped(const double *g, int64_t n, double *gd) {
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += g[i * n + i] / (double)n;
    memcpy(gd, g, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) gd[i * n + i] += 0.01 * mean;
}

/* tr(d gd d^T) for d [n_out][n]. */
static double quad_error(const double *d, int64_t n_out, int64_t n, const double *gd) {
    double s = 0;
    for (int64_t e = 0; e < n_out; e++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) s += d[e * n + i] * gd[i * n + j] * d[e * n + j];
    return s;
}

/* The least-squares refit over the kept columns K, solved directly: W' = W gd[:,K] gd[K,K]^-1
 * (Gauss-Jordan on the k x k system, independent of the OBS updates). Removed columns 0. */
static void ls_refit(const double *w, int64_t n_out, int64_t n, const double *gd, const bool *keep, double *out) {
    int64_t K[n], k = 0;
    for (int64_t j = 0; j < n; j++)
        if (keep[j]) K[k++] = j;
    double a[k][k + n_out];
    /* solve gd[K,K] Y = (W gd[:,K])^T for Y [k][n_out], then W'[:, K] = Y^T */
    for (int64_t i = 0; i < k; i++) {
        for (int64_t j = 0; j < k; j++) a[i][j] = gd[K[i] * n + K[j]];
        for (int64_t e = 0; e < n_out; e++) {
            double v = 0;
            for (int64_t c = 0; c < n; c++) v += w[e * n + c] * gd[c * n + K[i]];
            a[i][k + e] = v;
        }
    }
    for (int64_t c = 0; c < k; c++) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < k; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
        for (int64_t j = 0; j < k + n_out; j++) { double t = a[c][j]; a[c][j] = a[piv][j]; a[piv][j] = t; }
        for (int64_t r = 0; r < k; r++) {
            if (r == c) continue;
            double f = a[r][c] / a[c][c];
            for (int64_t j = 0; j < k + n_out; j++) a[r][j] -= f * a[c][j];
        }
    }
    memset(out, 0, sizeof(double) * (size_t)(n_out * n));
    for (int64_t i = 0; i < k; i++)
        for (int64_t e = 0; e < n_out; e++) out[e * n + K[i]] = a[i][k + e] / a[i][i];
}

START_TEST(test_obs_refit_is_least_squares) {
    enum { T = 300, N = 12, NO = 5, R = 3 };
    double g[N * N], gd[N * N], w[NO * N], w0[NO * N], ref[NO * N], d[NO * N];
    obs_problem(T, N, NO, 11, g, w);
    memcpy(w0, w, sizeof w);
    damped(g, N, gd);
    int64_t removed[R] = {7, 2, 9};
    double before, after;
    slmc_err err = {{0}};
    ck_assert_msg(prune_obs_remove(w, NO, g, N, 1, 1, R, false, 0.01, removed, &before, &after, &err) == 0, "%s", err.msg);
    bool keep[N];
    for (int j = 0; j < N; j++) keep[j] = j != 2 && j != 7 && j != 9;
    ls_refit(w0, NO, N, gd, keep, ref);
    for (int i = 0; i < NO * N; i++) ck_assert_double_eq_tol(w[i], ref[i], 1e-9 * (1 + fabs(ref[i])));
    /* the reported errors are the true ones: after = tr(dW gd dW^T) of the refit, before = of
     * the columns simply dropped; and the refit is better */
    for (int i = 0; i < NO * N; i++) d[i] = w0[i] - w[i];
    ck_assert_double_eq_tol(after, quad_error(d, NO, N, gd), 1e-9 * after);
    for (int i = 0; i < NO * N; i++) d[i] = keep[i % N] ? 0 : w0[i];
    ck_assert_double_eq_tol(before, quad_error(d, NO, N, gd), 1e-9 * before);
    ck_assert_msg(after < 0.5 * before, "refit error %g not well below %g", after, before);
}
END_TEST

START_TEST(test_obs_reselect_picks_least_error) {
    /* one removal: the unit OBS picks leaves the least refit error of all candidates */
    enum { T = 300, N = 10, NO = 4 };
    double g[N * N], gd[N * N], w0[NO * N], w[NO * N], ref[NO * N], d[NO * N];
    obs_problem(T, N, NO, 5, g, w0);
    damped(g, N, gd);
    double best = INFINITY;
    int64_t best_j = -1;
    for (int64_t j = 0; j < N; j++) {
        bool keep[N];
        for (int64_t c = 0; c < N; c++) keep[c] = c != j;
        ls_refit(w0, NO, N, gd, keep, ref);
        for (int i = 0; i < NO * N; i++) d[i] = w0[i] - ref[i];
        double e = quad_error(d, NO, N, gd);
        if (e < best) { best = e; best_j = j; }
    }
    memcpy(w, w0, sizeof w);
    int64_t removed[1];
    double before, after;
    slmc_err err = {{0}};
    ck_assert_msg(prune_obs_remove(w, NO, g, N, 1, 1, 1, true, 0.01, removed, &before, &after, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(removed[0], best_j);
    ck_assert_double_eq_tol(after, best, 1e-9 * best);

    /* blocks of 2 columns in 2 quota groups (units 0-2 and 3-5): removing 2 takes one from each,
     * and the error is still the refit's true error */
    enum { N2 = 12 };
    double g2[N2 * N2], gd2[N2 * N2], v0[NO * N2], v[NO * N2], d2[NO * N2];
    obs_problem(T, N2, NO, 9, g2, v0);
    damped(g2, N2, gd2);
    memcpy(v, v0, sizeof v);
    int64_t rm[2];
    ck_assert_msg(prune_obs_remove(v, NO, g2, N2, 2, 2, 2, true, 0.01, rm, &before, &after, &err) == 0, "%s", err.msg);
    ck_assert((rm[0] < 3) != (rm[1] < 3));
    for (int i = 0; i < NO * N2; i++) d2[i] = v0[i] - v[i];
    ck_assert_double_eq_tol(after, quad_error(d2, NO, N2, gd2), 1e-9 * after);
    for (int e = 0; e < NO; e++)
        for (int k = 0; k < 2; k++) ck_assert(v[e * N2 + rm[0] * 2 + k] == 0 && v[e * N2 + rm[1] * 2 + k] == 0);
    /* bad requests are errors, not crashes */
    ck_assert_int_eq(prune_obs_remove(v, NO, g2, N2, 5, 1, 1, true, 0.01, rm, NULL, NULL, &err), -1);
    ck_assert_int_eq(prune_obs_remove(v, NO, g2, N2, 2, 2, 1, true, 0.01, rm, NULL, NULL, &err), -1);
}
END_TEST

/* Mean squared difference of the logits of a and b on the test tokens. */
static double logits_mse(const model *a, const model *b) {
    float *x = logits_of(a), *y = logits_of(b);
    const size_t n = (size_t)N_TOK * (size_t)src.cfg.n_vocab;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    free(x);
    free(y);
    return s / (double)n;
}

START_TEST(test_reconstruct_model) {
    /* the calibration tokens are the test tokens; FFN 384 -> 256 and whole KV groups (4 -> 2
     * query heads), chosen at random, then: plain cut, refit of that choice, re-selection */
    int32_t toks[N_TOK];
    memcpy(toks, TOKENS, sizeof toks);
    prune_scores s;
    slmc_err err = {{0}};
    ck_assert_int_eq(prune_scores_init(&s, &src, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &src, 3, &err), 0);
    prune_request r = {.keep_ffn = 256, .keep_heads = 2, .head_mode = PRUNE_HEADS_GROUPS};
    double mse[3];
    for (int mode = 0; mode < 3; mode++) {
        prune_plan p;
        ck_assert_msg(prune_select(&p, &src, &s, &r, &err) == 0, "%s", err.msg);
        if (mode > 0) {
            /* bos -1: the chunk is evaluated exactly as logits_of does */
            prune_recon_opts o = {.n_ctx = N_TOK, .max_chunks = 1, .bos = -1, .reselect = mode == 2};
            prune_recon_info info;
            CK_ASSERT_QUIET(prune_reconstruct(&p, &src, toks, N_TOK, &o, &info, &err) == 0, "%s", err.msg);
            ck_assert_int_eq(info.passes, 1);
            ck_assert(info.ffn_err_after < info.ffn_err_before && info.att_err_after < info.att_err_before);
            ck_assert_ptr_nonnull(p.ffn_down_new);
            ck_assert_ptr_nonnull(p.attn_output_new);
            /* plan lists stay consistent: ascending, whole groups */
            for (int l = 0; l < 2; l++) {
                for (int i = 1; i < 256; i++) ck_assert(p.ffn[l * 256 + i] > p.ffn[l * 256 + i - 1]);
                ck_assert_int_eq(p.heads[l * 2 + 0], p.kv_heads[l] * 2);
                ck_assert_int_eq(p.heads[l * 2 + 1], p.kv_heads[l] * 2 + 1);
            }
        }
        model pruned;
        ck_assert_msg(prune_apply(&pruned, &src, &p, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(pruned.cfg.n_ff, 256);
        ck_assert_int_eq(pruned.cfg.n_head_kv, 1);
        mse[mode] = logits_mse(&pruned, &src);
        if (mode == 1) { /* the refit values are what is written */
            int64_t ti = model_find(&pruned, "blk.1.ffn_down.weight");
            float row[256];
            ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)ti, 5, 1, row, &err), 0);
            for (int c = 0; c < 256; c += 51) ck_assert_float_eq(row[c], p.ffn_down_new[1][5 * 256 + c]);
        }
        model_close(&pruned);
        prune_plan_free(&p);
    }
    ck_assert_msg(mse[1] < 0.8 * mse[0], "refit logits error %g not below the plain cut's %g", mse[1], mse[0]);
    ck_assert_msg(mse[2] < mse[0], "re-selected logits error %g not below the plain cut's %g", mse[2], mse[0]);

    /* the same number of query heads from every KV group: one of {0,1} and one of {2,3} stay */
    prune_request r2 = {.keep_heads = 2, .head_mode = PRUNE_HEADS_PER_GROUP};
    prune_plan p;
    ck_assert_msg(prune_select(&p, &src, &s, &r2, &err) == 0, "%s", err.msg);
    model plain, rec;
    ck_assert_msg(prune_apply(&plain, &src, &p, &err) == 0, "%s", err.msg);
    prune_recon_opts o = {.n_ctx = N_TOK, .max_chunks = 1, .bos = -1, .reselect = true};
    prune_recon_info info;
    ck_assert_msg(prune_reconstruct(&p, &src, toks, N_TOK, &o, &info, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(p.ffn_down_new);
    for (int l = 0; l < 2; l++) {
        ck_assert(p.heads[l * 2] < 2 && p.heads[l * 2 + 1] >= 2 && p.heads[l * 2 + 1] < 4);
        ck_assert(p.kv_heads[l * 2] == 0 && p.kv_heads[l * 2 + 1] == 1);
    }
    ck_assert_msg(prune_apply(&rec, &src, &p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rec.cfg.n_head, 2);
    ck_assert_int_eq(rec.cfg.n_head_kv, 2);
    ck_assert(logits_mse(&rec, &src) < logits_mse(&plain, &src));
    model_close(&plain);
    model_close(&rec);
    prune_plan_free(&p);
    prune_scores_free(&s);
}
END_TEST

/* ===================================================================== every family */

/* Family models written by synth from tests/data/configs/<family>/config.json (or a config
 * text given here) as F32 Hugging Face folders in their own temporary folder. */
typedef struct fam_model {
    char *dir;               /* temporary folder */
    char path[512];          /* the HF folder */
    model m;
    const arch_desc *a;
} fam_model;

/* false (after a skip) when the family's config is not there (tests run from the project root) */
static bool fam_open(fam_model *f, const char *family, const char *config_text) {
    memset(f, 0, sizeof *f);
    char cfg[512];
    f->dir = tmpdir_make();
    ck_assert_ptr_nonnull(f->dir);
    if (config_text) {
        snprintf(cfg, sizeof cfg, "%s/config.json", f->dir);
        ck_assert_int_eq(write_bytes(cfg, config_text, strlen(config_text)), 0);
    } else {
        snprintf(cfg, sizeof cfg, "tests/data/configs/%s/config.json", family);
        FILE *probe = fopen(cfg, "r");
        if (!probe) {
            tmpdir_remove(f->dir);
            f->dir = NULL;
            return false;
        }
        fclose(probe);
    }
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, family);
    synth_opts o;
    synth_opts_init(&o);
    o.config = cfg;
    o.dtype = GGML_TYPE_F32;
    slmc_err err = {{0}};
    ck_assert_msg(synth_write(&o, f->path, NULL, &err) == 0, "%s: %s", family, err.msg);
    ck_assert_msg(model_open(&f->m, f->path, NULL, &err) == 0, "%s: %s", family, err.msg);
    f->a = arch_by_name(f->m.cfg.arch);
    ck_assert_ptr_nonnull(f->a);
    return true;
}

static void fam_close(fam_model *f) {
    model_close(&f->m);
    tmpdir_remove(f->dir);
}

/* Test tokens inside every family's 320-token vocabulary. */
static void fam_tokens(int32_t *t, int n) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)(3 + (i * 37 + 11) % 317);
}

/* All logits [N_TOK][n_vocab] of a model on the family tokens, exact F32 attention. */
static float *fam_logits(const model *m, int64_t *n_vocab) {
    int32_t toks[N_TOK];
    fam_tokens(toks, N_TOK);
    return logits_on(m, toks, n_vocab);
}

static uint64_t meta_u(const model *m, const char *suffix) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", m->cfg.arch, suffix);
    uint64_t v = 0;
    ck_assert_msg(meta_get_u64(&m->kv, k, &v), "%s missing", k);
    return v;
}

static int64_t rows_of(const model *m, const char *name) {
    int64_t ti = model_find(m, name);
    ck_assert_msg(ti >= 0, "%s missing", name);
    return model_tensor_rows(&m->tensors[ti]);
}

static int64_t cols_of(const model *m, const char *name) {
    int64_t ti = model_find(m, name);
    ck_assert_msg(ti >= 0, "%s missing", name);
    return m->tensors[ti].ne[0];
}

/* Every family: scores (activation and magnitude) cover its tensors; heads (with the width
 * where llama.cpp needs head_count x head size = width), FFN channels, the hidden width where
 * allowed and layers (a pattern-keeping drop for gemma3) are pruned; the GGUF written has the
 * new shape in its tensors and metadata, reopens with the same logits bit for bit (finite),
 * and so does the Hugging Face folder written from it. */
START_TEST(test_families_prune) {
    static const char *const fams[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "stablelm"};
    for (size_t fi = 0; fi < sizeof fams / sizeof fams[0]; fi++) {
        fam_model f;
        if (!fam_open(&f, fams[fi], NULL)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        const model *m = &f.m;
        const model_config c = m->cfg;
        slmc_err err = {{0}};
        /* activation scores on 2 chunks of 16 tokens (the PPL without each layer for the small
         * models), and magnitude scores: finite and positive where they must be */
        int32_t toks[32];
        fam_tokens(toks, 32);
        prune_scores s, mag;
        ck_assert_int_eq(prune_scores_init(&s, m, PRUNE_ACTIVATION, &err), 0);
        prune_calib_opts co = {.n_ctx = 16, .max_chunks = 2, .bos = 1, .layer_ppl = c.n_layer <= 6};
        ck_assert_msg(prune_score_activation(&s, m, toks, 32, &co, &err) == 0, "%s: %s", fams[fi], err.msg);
        ck_assert_int_eq(prune_scores_init(&mag, m, PRUNE_MAGNITUDE, &err), 0);
        ck_assert_msg(prune_score_magnitude(&mag, m, &err) == 0, "%s: %s", fams[fi], err.msg);
        for (int64_t l = 0; l < c.n_layer; l++) {
            for (int64_t h = 0; h < c.n_head; h++)
                CK_ASSERT_QUIET(s.head[l * c.n_head + h] > 0 && mag.head[l * c.n_head + h] > 0, "%s: head score", fams[fi]);
            for (int64_t i = 0; i < c.n_ff; i += 7)
                CK_ASSERT_QUIET(isfinite(s.ffn[l * c.n_ff + i]) && mag.ffn[l * c.n_ff + i] > 0, "%s: ffn score", fams[fi]);
            for (int64_t e = 0; e < c.n_embd; e += 5)
                CK_ASSERT_QUIET(s.hidden[l * c.n_embd + e] > 0 && mag.hidden[l * c.n_embd + e] > 0, "%s: hidden score of layer %lld",
                              fams[fi], (long long)l);
            ck_assert(mag.layer[l] > 0);
            if (co.layer_ppl) ck_assert_msg(isfinite(s.ppl_removed[l]), "%s: PPL without layer %lld", fams[fi], (long long)l);
        }
        /* the request: what each family allows */
        prune_request r = {.keep_ffn = c.n_ff * 3 / 4, .keep_heads = c.n_head / 2};
        if (f.a->q_width_embd) r.keep_hidden = r.keep_heads * c.head_dim;
        else if (!f.a->embd_scale) r.keep_hidden = c.n_embd * 3 / 4;
        bool drop[6] = {false, false, true, false, false, true};
        if (strcmp(fams[fi], "gemma3") == 0) r.drop_layers = drop; /* 6 layers SSSSSG -> SSSS */
        else if (c.n_layer == 2) r.keep_layers = 1;
        prune_plan p;
        ck_assert_msg(prune_select(&p, m, &s, &r, &err) == 0, "%s: %s", fams[fi], err.msg);
        model pruned;
        ck_assert_msg(prune_apply(&pruned, m, &p, &err) == 0, "%s: %s", fams[fi], err.msg);
        const int64_t H = p.n_head, HKV = p.n_head_kv, F = p.n_ff, E = p.n_embd, hd = c.head_dim;
        ck_assert_int_eq(H, c.n_head / 2);
        ck_assert_int_eq(E, r.keep_hidden ? r.keep_hidden : c.n_embd);
        ck_assert_int_eq(p.n_layer, r.drop_layers ? 4 : r.keep_layers ? 1 : c.n_layer);
        if (f.a->embd_scale) ck_assert_int_eq(E, c.n_embd);
        /* tensor shapes */
        const int64_t last = p.n_layer - 1;
        char n1[64];
#define BLK(x) (snprintf(n1, sizeof n1, "blk.%lld." x, (long long)last), n1)
        ck_assert_int_eq(cols_of(&pruned, "token_embd.weight"), E);
        ck_assert_int_eq(cols_of(&pruned, "output_norm.weight"), E);
        ck_assert_int_eq(cols_of(&pruned, BLK("attn_norm.weight")), E);
        if (model_find(&pruned, BLK("attn_qkv.weight")) >= 0) {
            ck_assert_int_eq(rows_of(&pruned, n1), (H + 2 * HKV) * hd);
            ck_assert_int_eq(cols_of(&pruned, n1), E);
        } else {
            ck_assert_int_eq(rows_of(&pruned, BLK("attn_q.weight")), H * hd);
            ck_assert_int_eq(rows_of(&pruned, BLK("attn_k.weight")), HKV * hd);
            ck_assert_int_eq(cols_of(&pruned, BLK("attn_v.weight")), E);
        }
        ck_assert_int_eq(cols_of(&pruned, BLK("attn_output.weight")), H * hd);
        ck_assert_int_eq(rows_of(&pruned, BLK("attn_output.weight")), E);
        const bool fused_up = model_find(m, "blk.0.ffn_gate.weight") < 0 && f.a->ffn == FFN_SWIGLU;
        ck_assert_int_eq(rows_of(&pruned, BLK("ffn_up.weight")), fused_up ? 2 * F : F);
        ck_assert_int_eq(cols_of(&pruned, BLK("ffn_down.weight")), F);
        ck_assert_int_eq(rows_of(&pruned, BLK("ffn_down.weight")), E);
        static const char *const vecs[] = {"attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias", "post_attention_norm.weight",
                                           "post_ffw_norm.weight", "attn_output.bias", "ffn_down.bias"};
        for (size_t v = 0; v < sizeof vecs / sizeof vecs[0]; v++) {
            snprintf(n1, sizeof n1, "blk.%lld.%s", (long long)last, vecs[v]);
            if (model_find(&pruned, n1) >= 0) ck_assert_msg(cols_of(&pruned, n1) == E, "%s: %s", fams[fi], n1);
        }
        if (model_find(&pruned, BLK("ffn_up.bias")) >= 0) ck_assert_int_eq(cols_of(&pruned, n1), F);
        if (model_find(&pruned, BLK("attn_q_norm.weight")) >= 0) ck_assert_int_eq(cols_of(&pruned, n1), hd);
        if (model_find(&pruned, "output.bias") >= 0) ck_assert_int_eq(cols_of(&pruned, "output.bias"), c.n_vocab);
        if (model_find(&pruned, "rope_factors_long.weight") >= 0)
            ck_assert_int_eq(cols_of(&pruned, "rope_factors_long.weight"), c.n_rot / 2);
        snprintf(n1, sizeof n1, "blk.%lld.attn_norm.weight", (long long)p.n_layer);
        ck_assert_int_lt(model_find(&pruned, n1), 0);
#undef BLK
        int64_t V;
        float *ref = fam_logits(&pruned, &V);
        const size_t n = (size_t)N_TOK * (size_t)V;
        for (size_t i = 0; i < n; i++) CK_ASSERT_QUIET(isfinite(ref[i]), "%s: logit %zu is %g", fams[fi], i, ref[i]);
        /* GGUF: the metadata of the new shape, the same logits */
        char g1[600], hf[600];
        snprintf(g1, sizeof g1, "%s/p.gguf", f.dir);
        snprintf(hf, sizeof hf, "%s/p-hf", f.dir);
        ck_assert_msg(model_write_gguf(&pruned, g1, -1, NULL, &err) == 0, "%s: %s", fams[fi], err.msg);
        model_close(&pruned);
        model a, b;
        ck_assert_msg(model_open(&a, g1, NULL, &err) == 0, "%s: %s", fams[fi], err.msg);
        ck_assert_uint_eq(meta_u(&a, "block_count"), (uint64_t)p.n_layer);
        ck_assert_uint_eq(meta_u(&a, "embedding_length"), (uint64_t)E);
        ck_assert_uint_eq(meta_u(&a, "feed_forward_length"), (uint64_t)F);
        ck_assert_uint_eq(meta_u(&a, "attention.head_count"), (uint64_t)H);
        ck_assert_uint_eq(meta_u(&a, "attention.head_count_kv"), (uint64_t)HKV);
        ck_assert_int_eq(a.cfg.head_dim, hd);
        ck_assert_int_eq(a.cfg.n_rot, c.n_rot); /* partial rotary (phi2, phi3, stablelm) kept */
        ck_assert_int_eq(a.cfg.n_swa, c.n_swa);
        float *x = fam_logits(&a, NULL);
        ck_assert_msg(memcmp(x, ref, n * sizeof(float)) == 0, "%s: the GGUF's logits differ", fams[fi]);
        /* Hugging Face folder from the GGUF: config.json of the new shape, the same logits */
        ck_assert_msg(hf_write(&a, hf, -1, HF_DEFAULT_SHARD_SIZE, NULL, &err) == 0, "%s: %s", fams[fi], err.msg);
        ck_assert_msg(model_open(&b, hf, NULL, &err) == 0, "%s: %s", fams[fi], err.msg);
        ck_assert_int_eq(b.cfg.n_layer, p.n_layer);
        ck_assert_int_eq(b.cfg.n_embd, E);
        ck_assert_int_eq(b.cfg.n_ff, F);
        ck_assert_int_eq(b.cfg.n_head, H);
        ck_assert_int_eq(b.cfg.n_head_kv, HKV);
        ck_assert_int_eq(b.cfg.head_dim, hd);
        float *y = fam_logits(&b, NULL);
        ck_assert_msg(memcmp(y, ref, n * sizeof(float)) == 0, "%s: the HF folder's logits differ", fams[fi]);
        free(ref); free(x); free(y);
        model_close(&a);
        model_close(&b);
        prune_plan_free(&p);
        prune_scores_free(&s);
        prune_scores_free(&mag);
        fam_close(&f);
    }
}
END_TEST

/* Logits of a pruned model against a masked copy of its input (as expect_same, for any model).
 * The GELU families (gemma*, phi2) go through ggml's fp16 GELU table, where the last bit of a
 * reordered sum can move an input to the next fp16 value: a looser bound there. */
static void fam_expect_same(const char *what, const model *pruned, const model *masked, const model *orig) {
    int64_t V;
    float *a = fam_logits(pruned, &V), *b = fam_logits(masked, NULL), *c = fam_logits(orig, NULL);
    const size_t n = (size_t)N_TOK * (size_t)V;
    const double tol = arch_by_name(orig->cfg.arch)->ffn == FFN_SWIGLU ? 2e-5 : 3e-3;
    double scale, d = max_diff(a, b, n, &scale), changed = max_diff(b, c, n, NULL);
    ck_assert_msg(d <= tol * scale, "%s: pruned and masked logits differ by %g (scale %g)", what, d, scale);
    ck_assert_msg(changed > 1e-3 * scale, "%s: masking changed the logits by only %g", what, changed);
    free(a); free(b); free(c);
}

/* Removing heads (phi3: rows inside the fused attn_qkv) and FFN channels (phi3: rows c and
 * n_ff + c of the fused gate_up; phi2: ffn_up.bias too) gives the model with those heads'
 * attn_output columns and those channels' ffn_down columns zeroed; the hidden cut of the fused
 * matrices and of phi2's bias vectors takes exactly the kept source values. */
START_TEST(test_families_exact) {
    static const char *const fams[] = {"phi3", "phi2", "gemma2", "stablelm"};
    for (size_t fi = 0; fi < sizeof fams / sizeof fams[0]; fi++) {
        fam_model f;
        if (!fam_open(&f, fams[fi], NULL)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        const model *m = &f.m;
        const int64_t L = m->cfg.n_layer, H = m->cfg.n_head, F = m->cfg.n_ff, E = m->cfg.n_embd, hd = m->cfg.head_dim;
        slmc_err err = {{0}};
        prune_plan p;
        ck_assert_int_eq(prune_plan_identity(&p, m, &err), 0);
        /* one query head per KV group (or every other head without GQA), 3 channels out of every layer */
        const int64_t group = H / m->cfg.n_head_kv;
        if (group == 1) { /* MHA: KV heads go with their query heads */
            p.n_head = p.n_head_kv = H / 2;
            for (int64_t l = 0; l < L; l++)
                for (int64_t i = 0; i < H / 2; i++) {
                    p.heads[l * (H / 2) + i] = p.kv_heads[l * (H / 2) + i] = 2 * i + (l % 2);
                }
        } else {
            p.n_head = H - 1; /* gemma2: 4 heads on 1 KV head */
            for (int64_t l = 0; l < L; l++)
                for (int64_t i = 0, k = 0; i < H; i++)
                    if (i != l % H) p.heads[l * (H - 1) + k++] = i;
        }
        p.n_ff = F - 3;
        for (int64_t l = 0; l < L; l++)
            for (int64_t i = 0, k = 0; i < F; i++)
                if (i != 5 + l && i != F / 2 && i != F - 1 - l) p.ffn[l * (F - 3) + k++] = i;
        model pruned, masked;
        ck_assert_msg(prune_apply(&pruned, m, &p, &err) == 0, "%s: %s", fams[fi], err.msg);
        masked_copy(&masked, m);
        char name[64];
        for (int64_t l = 0; l < L; l++) {
            snprintf(name, sizeof name, "blk.%lld.attn_output.weight", (long long)l);
            for (int64_t h = 0; h < H; h++) {
                bool kept = false;
                for (int64_t i = 0; i < p.n_head; i++) kept |= p.heads[l * p.n_head + i] == h;
                if (!kept) zero_cols(&masked, name, h * hd, hd);
            }
            snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)l);
            zero_cols(&masked, name, 5 + l, 1);
            zero_cols(&masked, name, F / 2, 1);
            zero_cols(&masked, name, F - 1 - l, 1);
        }
        fam_expect_same(fams[fi], &pruned, &masked, m);
        model_close(&pruned);
        model_close(&masked);
        if (f.a->embd_scale) { prune_plan_free(&p); fam_close(&f); continue; }
        /* with the hidden width: every kept value where it belongs */
        p.n_embd = E - 2;
        for (int64_t e = 0, k = 0; e < E; e++)
            if (e != 3 && e != E - 7) p.hidden[k++] = e;
        ck_assert_msg(prune_apply(&pruned, m, &p, &err) == 0, "%s: %s", fams[fi], err.msg);
        float *src_row = malloc(sizeof(float) * (size_t)(E > F ? E : F) * 2), *out_row = malloc(sizeof(float) * (size_t)(E > F ? E : F) * 2);
        const int64_t l = 1;
        /* rows of the fused / separate input matrices: pruned row i <- source row of unit i */
        const bool qkv = model_find(m, "blk.1.attn_qkv.weight") >= 0;
        const char *rn = qkv ? "blk.1.attn_qkv.weight" : "blk.1.attn_k.weight";
        int64_t kv0 = qkv ? p.n_head * hd : 0, kv0_in = qkv ? H * hd : 0; /* where K starts */
        for (int64_t i = 0; i < p.n_head_kv * hd; i += 13) {
            const int64_t src = kv0_in + p.kv_heads[l * p.n_head_kv + i / hd] * hd + i % hd;
            ck_assert_int_eq(model_read_rows_f32(m, (uint64_t)model_find(m, rn), src, 1, src_row, &err), 0);
            ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)model_find(&pruned, rn), kv0 + i, 1, out_row, &err), 0);
            CK_ASSERT_RANGE(k, 0, E - 2, out_row[k] == src_row[p.hidden[k]]);
        }
        const bool fused = rows_of(m, "blk.1.ffn_up.weight") == 2 * F;
        for (int64_t i = 0; i < p.n_ff; i += 17)
            for (int half = 0; half < (fused ? 2 : 1); half++) {
                const int64_t src = half * F + p.ffn[l * p.n_ff + i], dst = half * p.n_ff + i;
                ck_assert_int_eq(model_read_rows_f32(m, (uint64_t)model_find(m, "blk.1.ffn_up.weight"), src, 1, src_row, &err), 0);
                ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)model_find(&pruned, "blk.1.ffn_up.weight"), dst, 1, out_row, &err), 0);
                CK_ASSERT_RANGE(k, 0, E - 2, out_row[k] == src_row[p.hidden[k]]);
            }
        /* vectors of the width and of the FFN */
        static const char *const wvecs[] = {"blk.1.attn_norm.bias", "blk.1.ffn_norm.bias", "blk.1.attn_output.bias",
                                            "blk.1.ffn_down.bias", "output_norm.bias", "blk.1.ffn_norm.weight"};
        for (size_t v = 0; v < sizeof wvecs / sizeof wvecs[0]; v++) {
            if (model_find(m, wvecs[v]) < 0) continue;
            ck_assert_int_eq(model_read_rows_f32(m, (uint64_t)model_find(m, wvecs[v]), 0, 1, src_row, &err), 0);
            ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)model_find(&pruned, wvecs[v]), 0, 1, out_row, &err), 0);
            CK_ASSERT_RANGE(k, 0, E - 2, out_row[k] == src_row[p.hidden[k]]);
        }
        if (model_find(m, "blk.1.ffn_up.bias") >= 0) {
            ck_assert_int_eq(model_read_rows_f32(m, (uint64_t)model_find(m, "blk.1.ffn_up.bias"), 0, 1, src_row, &err), 0);
            ck_assert_int_eq(model_read_rows_f32(&pruned, (uint64_t)model_find(&pruned, "blk.1.ffn_up.bias"), 0, 1, out_row, &err), 0);
            CK_ASSERT_RANGE(k, 0, p.n_ff, out_row[k] == src_row[p.ffn[l * p.n_ff + k]]);
        }
        free(src_row);
        free(out_row);
        model_close(&pruned);
        prune_plan_free(&p);
        fam_close(&f);
    }
}
END_TEST

/* A small gemma2 of `layers` layers (64 wide, head size hd, 2 heads on 1 KV head, FFN 128) and
 * a sliding window of 8 positions, so the window matters on the 24 test tokens. */
static void gemma2_config(char *buf, size_t cap, int layers, int hd, int scalar) {
    snprintf(buf, cap,
             "{\"architectures\": [\"Gemma2ForCausalLM\"], \"model_type\": \"gemma2\", \"hidden_activation\": "
             "\"gelu_pytorch_tanh\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": %d, \"query_pre_attn_scalar\": %d, "
             "\"vocab_size\": 320, \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, "
             "\"attn_logit_softcapping\": 50.0, \"final_logit_softcapping\": 30.0, \"sliding_window\": 8}",
             layers, hd, scalar);
}

static bool has_text(const slmc_err *err, const char *path, const char *text) {
    return strstr(err->msg, path) == err->msg && strstr(err->msg, text) != NULL;
}

/* The families' constraints: gemma* keep their width; gemma2 / gemma3 layer plans keep every
 * kept layer's sliding / global kind at its new index (and then are exactly the layers skipped),
 * gemma2 keeps a layer count llama.cpp b4747 builds and the 27B shape its Q scale; phi3 heads go
 * with the width. Refusals name the model. */
START_TEST(test_families_constraints) {
    fam_model g, g2, g3, p3, g42, g46;
    if (!fam_open(&g, "gemma", NULL)) SKIP_TEST("tests/data/configs not found (run from the project root)");
    slmc_err err = {{0}};
    prune_scores s;
    prune_plan p;
    /* gemma: the hidden width is refused, with a hint */
    ck_assert_int_eq(prune_scores_init(&s, &g.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &g.m, 1, &err), 0);
    prune_request rh = {.keep_hidden = 192};
    ck_assert_int_eq(prune_select(&p, &g.m, &s, &rh, &err), -1);
    ck_assert_msg(has_text(&err, g.path, "gemma: cannot prune the hidden width") && strstr(err.msg, "--heads"), "%s", err.msg);
    /* --target-params never proposes it */
    prune_request rt;
    ck_assert_msg(prune_search_target(&rt, &g.m, &s, model_param_count(&g.m) * 7 / 10, false, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rt.keep_hidden, 0);
    ck_assert_msg(prune_select(&p, &g.m, &s, &rt, &err) == 0, "%s", err.msg);
    prune_plan_free(&p);
    prune_scores_free(&s);
    fam_close(&g);

    /* gemma2 of 26 layers (the 2B's count): llama.cpp b4747 builds no other, so no layer goes */
    ck_assert(fam_open(&g2, "gemma2", NULL));
    ck_assert_int_eq(prune_scores_init(&s, &g2.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &g2.m, 1, &err), 0);
    bool drop26[26] = {false};
    drop26[1] = drop26[2] = true;
    prune_request rd = {.drop_layers = drop26};
    ck_assert_int_eq(prune_select(&p, &g2.m, &s, &rd, &err), -1);
    ck_assert_msg(has_text(&err, g2.path, "26 layers cannot become 24"), "%s", err.msg);
    prune_request rl = {.keep_layers = 20};
    ck_assert_int_eq(prune_select(&p, &g2.m, &s, &rl, &err), -1);
    ck_assert_msg(has_text(&err, g2.path, "26 layers cannot become 20"), "%s", err.msg);
    ck_assert_msg(prune_search_target(&rt, &g2.m, &s, model_param_count(&g2.m) * 6 / 10, false, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rt.keep_layers, 0);
    ck_assert_int_eq(rt.keep_hidden, 0);
    prune_scores_free(&s);
    fam_close(&g2);

    /* gemma3: dropping layer 2 moves the global layer 5 to the sliding index 4; 2 and 5 together keep the pattern */
    ck_assert(fam_open(&g3, "gemma3", NULL));
    ck_assert_int_eq(prune_scores_init(&s, &g3.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &g3.m, 1, &err), 0);
    bool drop6[6] = {false, false, true, false, false, false};
    prune_request r3 = {.drop_layers = drop6};
    ck_assert_int_eq(prune_select(&p, &g3.m, &s, &r3, &err), -1);
    ck_assert_msg(has_text(&err, g3.path, "moves layer 5 (global) to index 4") && strstr(err.msg, "--drop-layers 2,5"), "%s",
                  err.msg);
    /* --layers 5 can only drop the global layer; --target-params proposes pattern-keeping layers only */
    s.layer[5] = 100;
    prune_request r35 = {.keep_layers = 5};
    ck_assert_msg(prune_select(&p, &g3.m, &s, &r35, &err) == 0, "%s", err.msg);
    ck_assert(!p.keep_layer[5] && p.keep_layer[0] && p.keep_layer[4]);
    prune_plan_free(&p);
    for (int t = 5; t <= 9; t++) {
        ck_assert_msg(prune_search_target(&rt, &g3.m, &s, model_param_count(&g3.m) * (uint64_t)t / 10, false, &err) == 0,
                      "%s", err.msg);
        ck_assert_msg(prune_select(&p, &g3.m, &s, &rt, &err) == 0, "%s", err.msg);
        for (int64_t l = 0, j = 0; l < 6; l++)
            if (p.keep_layer[l]) ck_assert(arch_layer_slides(g3.a, l) == arch_layer_slides(g3.a, j++));
        prune_plan_free(&p);
    }
    prune_scores_free(&s);
    fam_close(&g3);

    /* phi3: heads alone are refused (attn_qkv's Q part is n_embd rows in llama.cpp) */
    ck_assert(fam_open(&p3, "phi3", NULL));
    ck_assert_int_eq(prune_scores_init(&s, &p3.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &p3.m, 1, &err), 0);
    prune_request rq = {.keep_heads = 2};
    ck_assert_int_eq(prune_select(&p, &p3.m, &s, &rq, &err), -1);
    ck_assert_msg(has_text(&err, p3.path, "head_count x head size = embedding_length"), "%s", err.msg);
    prune_scores_free(&s);
    fam_close(&p3);

    /* gemma2 of 42 layers (the 9B's count) may become 26 layers (the 2B's), in pairs */
    char cfg[1024];
    gemma2_config(cfg, sizeof cfg, 42, 32, 32);
    ck_assert(fam_open(&g42, "gemma2-42", cfg));
    ck_assert_int_eq(prune_scores_init(&s, &g42.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &g42.m, 5, &err), 0);
    bool drop42[42] = {false};
    for (int l = 1; l <= 16; l++) drop42[l] = true; /* 1..16: layer 17 (global) would land on 1 (global): fine */
    drop42[16] = false, drop42[17] = true;          /* 1..15 and 17: layer 16 (sliding) lands on 1 (global) */
    prune_request r42 = {.drop_layers = drop42};
    ck_assert_int_eq(prune_select(&p, &g42.m, &s, &r42, &err), -1);
    ck_assert_msg(has_text(&err, g42.path, "moves layer 16 (sliding-window) to index 1, where gemma2 has a global layer"),
                  "%s", err.msg);
    /* the suggested list (as many layers) is one that works */
    const char *sug = strstr(err.msg, "e.g. --drop-layers ");
    ck_assert_msg(sug != NULL, "%s", err.msg);
    bool drop_sug[42] = {false};
    int n_sug = 0;
    for (char *q = (char *)sug + strlen("e.g. --drop-layers "); *q >= '0' && *q <= '9';) {
        long v = strtol(q, &q, 10);
        ck_assert(v >= 0 && v < 42);
        drop_sug[v] = true;
        n_sug++;
        if (*q == ',') q++;
    }
    ck_assert_int_eq(n_sug, 16);
    prune_request rs = {.drop_layers = drop_sug};
    ck_assert_msg(prune_select(&p, &g42.m, &s, &rs, &err) == 0, "%s", err.msg);
    prune_plan_free(&p);
    prune_request rk = {.keep_layers = 26};
    ck_assert_msg(prune_select(&p, &g42.m, &s, &rk, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(p.n_layer, 26);
    for (int64_t l = 0, j = 0; l < 42; l++)
        if (p.keep_layer[l]) ck_assert(arch_layer_slides(g42.a, l) == arch_layer_slides(g42.a, j++));
    /* the pruned model is exactly the input with the dropped layers skipped (their residual
     * writes zeroed): every kept layer attends as before (24 tokens, a window of 8) */
    model pruned, masked, broken;
    ck_assert_msg(prune_apply(&pruned, &g42.m, &p, &err) == 0, "%s", err.msg);
    masked_copy(&masked, &g42.m);
    char name[64];
    for (int64_t l = 0; l < 42; l++) {
        if (p.keep_layer[l]) continue;
        snprintf(name, sizeof name, "blk.%lld.attn_output.weight", (long long)l);
        zero_all(&masked, name);
        snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)l);
        zero_all(&masked, name);
    }
    int64_t V;
    float *x = fam_logits(&pruned, &V), *y = fam_logits(&masked, NULL);
    const size_t n = (size_t)N_TOK * (size_t)V;
    ck_assert_msg(memcmp(x, y, n * sizeof(float)) == 0, "dropped layers differ from skipped ones (%g)", max_diff(x, y, n, NULL));
    /* (a plan that breaks the pattern, built directly, is not: the check is not vacuous) */
    prune_plan bad;
    ck_assert_int_eq(prune_plan_identity(&bad, &g42.m, &err), 0);
    for (int l = 1; l <= 15; l++) bad.keep_layer[l] = false;
    bad.keep_layer[17] = false;
    bad.n_layer = 26;
    ck_assert_msg(prune_apply(&broken, &g42.m, &bad, &err) == 0, "%s", err.msg);
    float *z = fam_logits(&broken, NULL);
    model_close(&masked);
    masked_copy(&masked, &g42.m);
    for (int64_t l = 0; l < 42; l++) {
        if (bad.keep_layer[l]) continue;
        snprintf(name, sizeof name, "blk.%lld.attn_output.weight", (long long)l);
        zero_all(&masked, name);
        snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)l);
        zero_all(&masked, name);
    }
    float *w = fam_logits(&masked, NULL);
    ck_assert_msg(max_diff(z, w, n, NULL) > 1e-4, "a pattern-breaking drop gave the skipped layers' logits");
    free(x); free(y); free(z); free(w);
    model_close(&pruned);
    model_close(&masked);
    model_close(&broken);
    prune_plan_free(&bad);
    prune_plan_free(&p);
    prune_request r30 = {.keep_layers = 30};
    ck_assert_int_eq(prune_select(&p, &g42.m, &s, &r30, &err), -1);
    ck_assert_msg(has_text(&err, g42.path, "42 layers cannot become 30: keep 26 layers"), "%s", err.msg);
    /* the calibration PPL without a layer is that of the layer skipped, even where the later
     * layers' new indices would make them change kind (layer 1: every later layer) */
    {
        int32_t toks[32];
        fam_tokens(toks, 32);
        prune_scores act;
        ck_assert_int_eq(prune_scores_init(&act, &g42.m, PRUNE_ACTIVATION, &err), 0);
        prune_calib_opts co = {.n_ctx = 16, .max_chunks = 2, .bos = 1, .layer_ppl = true};
        ck_assert_msg(prune_score_activation(&act, &g42.m, toks, 32, &co, &err) == 0, "%s", err.msg);
        model sk;
        masked_copy(&sk, &g42.m);
        zero_all(&sk, "blk.1.attn_output.weight");
        zero_all(&sk, "blk.1.ffn_down.weight");
        llm_model lm;
        llm_context ctx;
        ck_assert_int_eq(llm_model_init(&lm, &sk, &err), 0);
        ck_assert_int_eq(llm_context_init(&ctx, &lm, 16, 16, &err), 0);
        float *lg = malloc(sizeof(float) * (size_t)ppl_scored(16) * (size_t)lm.cfg.n_vocab);
        ppl_stats st = {0};
        for (int c = 0; c < 2; c++) {
            ck_assert_int_eq(ppl_eval_chunk(&ctx, toks + 16 * c, 16, 1, lg, &err), 0);
            ppl_accumulate(&st, lg, lm.cfg.n_vocab, toks + 16 * c, 16);
        }
        ck_assert_msg(act.ppl_removed[1] == (float)ppl_value(&st), "PPL without layer 1: %g, skipped: %g",
                      act.ppl_removed[1], ppl_value(&st));
        free(lg);
        llm_context_free(&ctx);
        llm_model_free(&lm);
        model_close(&sk);
        prune_scores_free(&act);
    }
    /* --target-params: 42 or 26 layers, never another count */
    for (int t = 4; t <= 9; t++) {
        ck_assert_msg(prune_search_target(&rt, &g42.m, &s, model_param_count(&g42.m) * (uint64_t)t / 10, false, &err) == 0,
                      "%s", err.msg);
        ck_assert(rt.keep_layers == 0 || rt.keep_layers == 26);
    }
    prune_scores_free(&s);
    fam_close(&g42);

    /* gemma2 of 46 layers (the 27B's count): llama.cpp scales Q.K by 1/sqrt(n_embd / n_head) = 1/sqrt(32),
     * not by the head size 16, so layers and heads stay */
    gemma2_config(cfg, sizeof cfg, 46, 16, 32);
    ck_assert(fam_open(&g46, "gemma2-46", cfg));
    ck_assert_int_eq(prune_scores_init(&s, &g46.m, PRUNE_RANDOM, &err), 0);
    ck_assert_int_eq(prune_score_random(&s, &g46.m, 5, &err), 0);
    prune_request r46h = {.keep_heads = 1}, r46l = {.keep_layers = 42}, r46f = {.keep_ffn = 64};
    ck_assert_int_eq(prune_select(&p, &g46.m, &s, &r46h, &err), -1);
    ck_assert_msg(has_text(&err, g46.path, "from 1/sqrt(32) to 1/sqrt(64)"), "%s", err.msg);
    ck_assert_int_eq(prune_select(&p, &g46.m, &s, &r46l, &err), -1);
    ck_assert_msg(has_text(&err, g46.path, "from 1/sqrt(32) to 1/sqrt(16)"), "%s", err.msg);
    ck_assert_msg(prune_select(&p, &g46.m, &s, &r46f, &err) == 0, "%s", err.msg);
    prune_plan_free(&p);
    ck_assert_msg(prune_search_target(&rt, &g46.m, &s, model_param_count(&g46.m) * 7 / 10, false, &err) == 0, "%s", err.msg);
    ck_assert(rt.keep_layers == 0 && rt.keep_heads == 0 && rt.keep_hidden == 0 && rt.keep_ffn > 0);
    prune_scores_free(&s);
    fam_close(&g46);
}
END_TEST

/* Reconstruction on the fused (phi3) and biased, parallel (phi2) blocks: the refit lowers the
 * output error of both cuts, and the refit model is closer to the input than the plain cut. */
START_TEST(test_families_reconstruct) {
    static const char *const fams[] = {"phi3", "phi2"};
    for (size_t fi = 0; fi < 2; fi++) {
        fam_model f;
        if (!fam_open(&f, fams[fi], NULL)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        const model *m = &f.m;
        slmc_err err = {{0}};
        int32_t toks[N_TOK];
        fam_tokens(toks, N_TOK);
        prune_scores s;
        ck_assert_int_eq(prune_scores_init(&s, m, PRUNE_RANDOM, &err), 0);
        ck_assert_int_eq(prune_score_random(&s, m, 3, &err), 0);
        prune_request r = {.keep_ffn = m->cfg.n_ff / 2, .keep_heads = 2, .keep_hidden = 2 * m->cfg.head_dim};
        double mse[2];
        for (int mode = 0; mode < 2; mode++) {
            prune_plan p;
            CK_ASSERT_QUIET(prune_select(&p, m, &s, &r, &err) == 0, "%s: %s", fams[fi], err.msg);
            if (mode == 1) {
                prune_recon_opts o = {.n_ctx = N_TOK, .max_chunks = 1, .bos = -1, .reselect = true};
                prune_recon_info info;
                CK_ASSERT_QUIET(prune_reconstruct(&p, m, toks, N_TOK, &o, &info, &err) == 0, "%s: %s", fams[fi], err.msg);
                ck_assert(info.ffn_err_after < info.ffn_err_before && info.att_err_after < info.att_err_before);
            }
            /* the width stays, so the cuts compare with the input's logits */
            p.n_embd = p.n_embd_in;
            for (int64_t e = 0; e < p.n_embd; e++) p.hidden[e] = e;
            model pruned;
            CK_ASSERT_QUIET(prune_apply(&pruned, m, &p, &err) == 0, "%s: %s", fams[fi], err.msg);
            int64_t V;
            float *x = fam_logits(&pruned, &V), *y = fam_logits(m, NULL);
            double sum = 0;
            for (size_t i = 0; i < (size_t)N_TOK * (size_t)V; i++) sum += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            mse[mode] = sum;
            free(x);
            free(y);
            model_close(&pruned);
            prune_plan_free(&p);
        }
        ck_assert_msg(mse[1] < mse[0], "%s: reconstructed logits error %g not below the plain cut's %g", fams[fi], mse[1], mse[0]);
        prune_scores_free(&s);
        fam_close(&f);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("prune");
    TCase *tc = tcase_create("prune");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_heads_per_group);
    tcase_add_test(tc, test_heads_whole_groups);
    tcase_add_test(tc, test_ffn_channels);
    tcase_add_test(tc, test_drop_layer);
    tcase_add_test(tc, test_hidden_values);
    tcase_add_test(tc, test_select);
    tcase_add_test(tc, test_target_params);
    tcase_add_test(tc, test_magnitude_values);
    tcase_add_test(tc, test_activation_and_hdf5);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_obs_refit_is_least_squares);
    tcase_add_test(tc, test_obs_reselect_picks_least_error);
    tcase_add_test(tc, test_reconstruct_model);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("families");
    tcase_set_timeout(tf, 240);
    tcase_add_test(tf, test_families_prune);
    tcase_add_test(tf, test_families_exact);
    tcase_add_test(tf, test_families_constraints);
    tcase_add_test(tf, test_families_reconstruct);
    suite_add_tcase(s, tf);
    return s;
}

int main(void) { return run_suite(suite()); }
