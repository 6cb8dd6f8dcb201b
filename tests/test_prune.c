/* test_prune.c - prune/: removing heads, FFN channels and layers gives exactly the model with
 * them masked to zero; hidden-width cuts select the right values; selection follows the
 * scores; pruned models round-trip through GGUF and Hugging Face; scores through HDF5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/llm.h"
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

/* All logits [N_TOK][n_vocab] of a model, evaluated in exact F32 attention. */
static float *logits_of(const model *m) {
    llm_model lm;
    llm_context ctx;
    slmc_err err = {{0}};
    ck_assert_msg(llm_model_init(&lm, m, &err) == 0, "%s", err.msg);
    ck_assert_msg(llm_context_init(&ctx, &lm, N_TOK, N_TOK, &err) == 0, "%s", err.msg);
    ctx.f16_attention = false;
    float *out = malloc(sizeof(float) * N_TOK * (size_t)lm.cfg.n_vocab);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(llm_eval(&ctx, TOKENS, N_TOK, 0, out, &err) == 0, "%s", err.msg);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    return out;
}

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
    for (size_t i = 0; i < (size_t)N_TOK * 512; i++) ck_assert(isfinite(l[i]));
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
            ck_assert_msg(prune_reconstruct(&p, &src, toks, N_TOK, &o, &info, &err) == 0, "%s", err.msg);
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
    return s;
}

int main(void) { return run_suite(suite()); }
