/* test_llama2c.c - the llama2.c reader against llama.cpp's own conversion of stories260K,
 * and its refusal of damaged inputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/llama2c.h"
#include "formats/model.h"
#include "formats/types.h"
#include "testutil.h"

#define STORIES "models/stories260K/stories260K.bin"
#define TOK512 "models/stories260K/tok512.bin"
#define REFERENCE "reference/stories260K-F32.gguf"
#define STORIES_SIZE 1056540u /* 28 + 264128 floats */

/* Same value in both metadata sets: type, and bytes (strings and string arrays compared
 * element by element). */
static void assert_same_kv(const meta_kv *a, const meta_kv *b) {
    ck_assert_msg(a->type == b->type, "%s: type %d vs %d", a->key, a->type, b->type);
    if (a->type == GGUF_STR) {
        ck_assert_uint_eq(a->v.str.len, b->v.str.len);
        ck_assert_mem_eq(a->v.str.s, b->v.str.s, a->v.str.len);
    } else if (a->type == GGUF_ARR) {
        ck_assert_msg(a->elem == b->elem, "%s: element type %d vs %d", a->key, a->elem, b->elem);
        ck_assert_uint_eq(a->n, b->n);
        if (a->elem == GGUF_STR) {
            const meta_str *sa = a->v.arr, *sb = b->v.arr;
            for (uint64_t i = 0; i < a->n; i++) {
                ck_assert_msg(sa[i].len == sb[i].len && memcmp(sa[i].s, sb[i].s, sa[i].len) == 0,
                              "%s[%llu]: '%s' vs '%s'", a->key, (unsigned long long)i, sa[i].s, sb[i].s);
            }
        } else {
            ck_assert_mem_eq(a->v.arr, b->v.arr, a->n * gguf_vtype_size(a->elem));
        }
    } else {
        ck_assert_mem_eq(a->v.raw, b->v.raw, gguf_vtype_size(a->type));
    }
}

START_TEST(test_stories_matches_reference) {
    char *bin = SHARED_OR_SKIP(STORIES);
    char *tok = SHARED_OR_SKIP(TOK512);
    char *ref_path = SHARED_OR_SKIP(REFERENCE);
    model m;
    gguf_file ref;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, bin, tok, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&ref, ref_path, &err) == 0, "%s", err.msg);

    /* Configuration: stories260K is dim 64, ffn 172, 5 layers, 8 heads, 4 KV heads, vocab 512,
     * seq_len 512, shared classifier. */
    ck_assert_int_eq(m.format, MODEL_LLAMA2C);
    ck_assert_str_eq(m.cfg.arch, "llama");
    ck_assert_int_eq(m.cfg.n_embd, 64);
    ck_assert_int_eq(m.cfg.n_ff, 172);
    ck_assert_int_eq(m.cfg.n_layer, 5);
    ck_assert_int_eq(m.cfg.n_head, 8);
    ck_assert_int_eq(m.cfg.n_head_kv, 4);
    ck_assert_int_eq(m.cfg.n_vocab, 512);
    ck_assert_int_eq(m.cfg.n_ctx_train, 512);
    ck_assert_int_eq(m.cfg.head_dim, 8);
    ck_assert_int_eq(m.cfg.n_rot, 8);
    ck_assert(m.cfg.tied_output);
    ck_assert_float_eq_tol(m.cfg.rms_eps, 1e-5f, 1e-12f);

    /* Tensors: the reference's, in its order, minus output.weight. The converter writes a
     * copy of token_embd.weight as output.weight for a shared classifier (a quirk of
     * convert-llama2c-to-ggml); we follow the checkpoint and keep the model tied. */
    ck_assert_uint_eq(ref.n_tensors, 48);
    ck_assert_uint_eq(m.n_tensors, 47);
    int64_t ref_emb = gguf_find_tensor(&ref, "token_embd.weight");
    int64_t ref_out = gguf_find_tensor(&ref, "output.weight");
    ck_assert(ref_emb >= 0 && ref_out >= 0);
    ck_assert_uint_eq(ref.tensors[ref_out].nbytes, ref.tensors[ref_emb].nbytes);
    ck_assert_mem_eq(gguf_tensor_data(&ref, (uint64_t)ref_out), gguf_tensor_data(&ref, (uint64_t)ref_emb),
                     ref.tensors[ref_emb].nbytes);
    ck_assert_int_eq(model_find(&m, "output.weight"), -1);

    uint64_t ours = 0;
    for (uint64_t i = 0; i < ref.n_tensors; i++) {
        const gguf_tensor_info *r = &ref.tensors[i];
        if (strcmp(r->name, "output.weight") == 0) continue;
        const model_tensor *t = &m.tensors[ours++];
        ck_assert_str_eq(t->name, r->name);
        ck_assert_int_eq(t->type, GGML_TYPE_F32);
        ck_assert_int_eq(t->type, r->type);
        ck_assert_int_eq(t->n_dims, r->n_dims);
        for (int d = 0; d < 4; d++) ck_assert_int_eq(t->ne[d], r->ne[d]);
        ck_assert_uint_eq(t->nbytes, r->nbytes);
        ck_assert_int_eq(t->qk_heads, 0);
        ck_assert_msg(memcmp(t->data, gguf_tensor_data(&ref, i), r->nbytes) == 0, "%s data differs", t->name);
    }
    ck_assert_uint_eq(ours, m.n_tensors);

    /* Rows read through the model view are the same bytes. */
    int64_t q = model_find(&m, "blk.3.attn_q.weight");
    ck_assert(q >= 0);
    float rows[2 * 64];
    ck_assert_msg(model_read_rows_f32(&m, (uint64_t)q, 10, 2, rows, &err) == 0, "%s", err.msg);
    const uint8_t *ref_q = gguf_tensor_data(&ref, (uint64_t)gguf_find_tensor(&ref, "blk.3.attn_q.weight"));
    ck_assert_mem_eq(rows, ref_q + 10 * 64 * 4, sizeof rows);

    /* Metadata: the same keys, in the same order, with the same values, except
     * llama.context_length: the converter writes 128 whatever the checkpoint says, we write
     * the checkpoint's seq_len, 512. One key more at the end: tokenizer.ggml.pre "default",
     * which llama.cpp's HF converter writes for SentencePiece vocabularies. */
    ck_assert_uint_eq(m.kv.n, ref.kv.n + 1);
    ck_assert_str_eq(m.kv.kv[ref.kv.n].key, "tokenizer.ggml.pre");
    ck_assert_str_eq(meta_get_str(&m.kv, "tokenizer.ggml.pre"), "default");
    for (size_t i = 0; i < ref.kv.n; i++) {
        const meta_kv *r = &ref.kv.kv[i];
        const meta_kv *o = &m.kv.kv[i];
        ck_assert_str_eq(o->key, r->key);
        if (strcmp(r->key, "llama.context_length") == 0) {
            ck_assert_int_eq(meta_kv_i64(r), 128);
            ck_assert_int_eq(meta_kv_i64(o), 512);
            ck_assert_int_eq(o->type, r->type);
            continue;
        }
        assert_same_kv(o, r);
    }
    /* A few values spelled out, so the comparison above cannot pass on two empty sets. */
    uint64_t n_tok = 0;
    const meta_str *toks = meta_get_arr(&m.kv, "tokenizer.ggml.tokens", GGUF_STR, &n_tok);
    ck_assert_uint_eq(n_tok, 512);
    ck_assert_str_eq(toks[1].s, "<s>");          /* tok512.bin stores "\n<s>\n" */
    ck_assert_str_eq(toks[3].s, "<0x00>");
    ck_assert_str_eq(toks[259].s, "\xe2\x96\x81t"); /* " t": the space becomes U+2581 */
    const int32_t *types = meta_get_arr(&m.kv, "tokenizer.ggml.token_type", GGUF_I32, &n_tok);
    ck_assert_int_eq(types[0], 2);
    ck_assert_int_eq(types[2], 3);
    ck_assert_int_eq(types[258], 6);
    ck_assert_int_eq(types[259], 1);
    const float *scores = meta_get_arr(&m.kv, "tokenizer.ggml.scores", GGUF_F32, &n_tok);
    ck_assert_float_eq(scores[260], -1.0f);
    ck_assert_float_eq(scores[511], -252.0f);

    gguf_close(&ref);
    model_close(&m);
    free(bin);
    free(tok);
    free(ref_path);
}
END_TEST

/* The view points into the file: token_embd starts right after the 28-byte header. */
START_TEST(test_tensors_point_into_file) {
    char *bin = SHARED_OR_SKIP(STORIES);
    char *tok = SHARED_OR_SKIP(TOK512);
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, bin, tok, &err) == 0, "%s", err.msg);
    size_t len = 0;
    uint8_t *file = slurp(bin, &len);
    ck_assert_ptr_nonnull(file);
    ck_assert_uint_eq(len, STORIES_SIZE);
    ck_assert_mem_eq(m.tensors[0].data, file + 28, 512 * 64 * 4);
    /* rms_final (output_norm) sits just before the freq_cis tables at the end. */
    const uint64_t rms_final_off = STORIES_SIZE - 512 * 8 * 4 - 64 * 4;
    ck_assert_str_eq(m.tensors[1].name, "output_norm.weight");
    ck_assert_ptr_eq(m.tensors[1].data, m.tensors[0].data - 28 + rms_final_off);
    ck_assert_mem_eq(m.tensors[1].data, file + rms_final_off, 64 * 4);
    free(file);
    model_close(&m);
    free(bin);
    free(tok);
}
END_TEST

START_TEST(test_probe) {
    char *bin = SHARED_OR_SKIP(STORIES);
    char *tok = SHARED_OR_SKIP(TOK512);
    char *ref = SHARED_OR_SKIP(REFERENCE);
    ck_assert(llama2c_probe(bin));
    ck_assert(!llama2c_probe(tok));
    ck_assert(!llama2c_probe(ref));
    ck_assert(!llama2c_probe("/nonexistent/model.bin"));
    free(bin);
    free(tok);
    free(ref);
}
END_TEST

/* model_open recognises a llama2.c checkpoint by elimination and needs its tokenizer. */
START_TEST(test_model_open) {
    char *bin = SHARED_OR_SKIP(STORIES);
    char *tok = SHARED_OR_SKIP(TOK512);
    model m;
    slmc_err err = {{0}};
    model_open_opts opts = {.tokenizer = tok};
    ck_assert_msg(model_open(&m, bin, &opts, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.format, MODEL_LLAMA2C);
    ck_assert_uint_eq(m.n_tensors, 47);
    ck_assert_str_eq(m.path, bin);
    ck_assert_uint_eq(model_param_count(&m), 512 * 64 + 64 + 5 * (64 * 64 * 2 + 2 * 32 * 64 + 3 * 172 * 64 + 2 * 64));
    model_close(&m);
    ck_assert_int_eq(model_open(&m, bin, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "tokenizer") != NULL, "%s", err.msg);
    free(bin);
    free(tok);
}
END_TEST

/* Through the GGUF writer: every tensor of the written file equals the reference's. */
START_TEST(test_write_gguf_matches_reference) {
    char *bin = SHARED_OR_SKIP(STORIES);
    char *tok = SHARED_OR_SKIP(TOK512);
    char *ref_path = SHARED_OR_SKIP(REFERENCE);
    char *dir = tmpdir_make();
    char out[4096];
    snprintf(out, sizeof out, "%s/stories260K.gguf", dir);
    model m;
    gguf_file ref, ours;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, bin, tok, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_write_gguf(&m, out, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&ours, out, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&ref, ref_path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(ours.n_tensors, 47);
    for (uint64_t i = 0; i < ours.n_tensors; i++) {
        int64_t j = gguf_find_tensor(&ref, ours.tensors[i].name);
        ck_assert_msg(j >= 0, "%s not in the reference", ours.tensors[i].name);
        ck_assert_int_eq(ours.tensors[i].type, ref.tensors[j].type);
        ck_assert_uint_eq(ours.tensors[i].nbytes, ref.tensors[j].nbytes);
        ck_assert_msg(memcmp(gguf_tensor_data(&ours, i), gguf_tensor_data(&ref, (uint64_t)j), ours.tensors[i].nbytes) == 0,
                      "%s differs", ours.tensors[i].name);
    }
    uint64_t ctx = 0;
    ck_assert(meta_get_u64(&ours.kv, "llama.context_length", &ctx));
    ck_assert_uint_eq(ctx, 512);
    gguf_close(&ours);
    gguf_close(&ref);
    model_close(&m);
    tmpdir_remove(dir);
    free(bin);
    free(tok);
    free(ref_path);
}
END_TEST

/* ---- damaged inputs: each is written to a temporary folder and must fail cleanly ---- */

static uint8_t *g_model;  /* stories260K.bin */
static size_t g_model_len;
static uint8_t *g_tok;    /* tok512.bin */
static size_t g_tok_len;
static char *g_dir;

static void load_inputs(void) {
    char *bin = shared_path(STORIES), *tok = shared_path(TOK512);
    g_model = bin ? slurp(bin, &g_model_len) : NULL;
    g_tok = tok ? slurp(tok, &g_tok_len) : NULL;
    g_dir = tmpdir_make();
    free(bin);
    free(tok);
}

static void free_inputs(void) {
    free(g_model);
    free(g_tok);
    tmpdir_remove(g_dir);
    g_model = g_tok = NULL;
    g_dir = NULL;
}

static char *tmp_file(const char *name, const void *data, size_t len) {
    size_t n = strlen(g_dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", g_dir, name);
    ck_assert_int_eq(write_bytes(p, data, len), 0);
    return p;
}

/* Open model bytes with tokenizer bytes; expect failure with the named file and `needle` in
 * the message, and a model left empty. */
static void expect_failure(const void *mdata, size_t mlen, const void *tdata, size_t tlen, int bad_is_model,
                           const char *needle) {
    char *mp = tmp_file("model.bin", mdata, mlen);
    char *tp = tmp_file("tok.bin", tdata, tlen);
    model m;
    slmc_err err = {{0}};
    ck_assert_int_eq(llama2c_open(&m, mp, tp, &err), -1);
    const char *bad = bad_is_model ? mp : tp;
    ck_assert_msg(strncmp(err.msg, bad, strlen(bad)) == 0, "message does not start with %s: %s", bad, err.msg);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message lacks '%s': %s", needle, err.msg);
    ck_assert_uint_eq(m.n_tensors, 0);
    ck_assert_ptr_null(m.tensors);
    ck_assert_uint_eq(m.kv.n, 0);
    free(mp);
    free(tp);
}

#define NEED_INPUTS()                                                                         \
    do {                                                                                      \
        if (!g_model || !g_tok) {                                                             \
            fprintf(stderr, "SKIP %s: ../shared/models/stories260K not found\n", __func__);   \
            return;                                                                           \
        }                                                                                     \
    } while (0)

/* A copy of the checkpoint with header field `field` (0..6) set to v. */
static uint8_t *with_header_field(int field, int32_t v) {
    uint8_t *copy = malloc(g_model_len);
    memcpy(copy, g_model, g_model_len);
    memcpy(copy + 4 * field, &v, 4);
    return copy;
}

START_TEST(test_truncated_model) {
    NEED_INPUTS();
    expect_failure(g_model, 1000, g_tok, g_tok_len, 1, "file is 1000 bytes but its llama2.c header");
    expect_failure(g_model, 1000, g_tok, g_tok_len, 1, "implies 1056540 bytes");
    expect_failure(g_model, 10, g_tok, g_tok_len, 1, "too short for a llama2.c header (10 bytes");
    expect_failure(g_model, 0, g_tok, g_tok_len, 1, "too short");
}
END_TEST

START_TEST(test_wrong_size) {
    NEED_INPUTS();
    uint8_t *bigger = malloc(g_model_len + 4);
    memcpy(bigger, g_model, g_model_len);
    memset(bigger + g_model_len, 0, 4);
    expect_failure(bigger, g_model_len + 4, g_tok, g_tok_len, 1, "file is 1056544 bytes");
    expect_failure(bigger, g_model_len + 4, g_tok, g_tok_len, 1, "implies 1056540 bytes (shared classifier)");
    free(bigger);
    /* A negative vocab_size announces a classifier the file does not have. */
    uint8_t *sep = with_header_field(5, -512);
    expect_failure(sep, g_model_len, g_tok, g_tok_len, 1, "implies 1187612 bytes (separate classifier)");
    free(sep);
}
END_TEST

START_TEST(test_bad_dims) {
    NEED_INPUTS();
    static const struct { int field; int32_t v; const char *needle; } cases[] = {
        {0, 0, "dim must be positive, got 0"},
        {1, -5, "hidden_dim must be positive, got -5"},
        {2, 0, "n_layers must be positive"},
        {3, -1, "n_heads must be positive"},
        {4, 0, "n_kv_heads must be positive"},
        {5, 0, "bad vocab_size 0"},
        {6, 0, "seq_len must be positive"},
        {3, 7, "n_heads 7 does not divide dim 64"},
        {4, 3, "n_kv_heads 3 does not divide n_heads 8"},
        {3, 64, "head size 1 (dim / n_heads) is odd"},
        {0, 0x7fffffff, "n_heads 8 does not divide dim 2147483647"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t *bad = with_header_field(cases[i].field, cases[i].v);
        expect_failure(bad, g_model_len, g_tok, g_tok_len, 1, cases[i].needle);
        free(bad);
    }
    /* Huge but consistent-looking dims must not overflow into a small expected size. */
    uint8_t *huge = with_header_field(0, 0x40000000);
    memcpy(huge + 4, &(int32_t){0x7fffffff}, 4);
    expect_failure(huge, g_model_len, g_tok, g_tok_len, 1, "overflow");
    free(huge);
    /* llama2.c's newer versioned exports start with "ak42". */
    uint8_t *v1 = with_header_field(0, 0x616b3432);
    expect_failure(v1, g_model_len, g_tok, g_tok_len, 1, "ak42");
    free(v1);
}
END_TEST

START_TEST(test_bad_tokenizer) {
    NEED_INPUTS();
    /* cut inside the record of the last token */
    expect_failure(g_model, g_model_len, g_tok, g_tok_len - 1, 0, "runs past the end of the file");
    /* cut inside a record's score/length */
    expect_failure(g_model, g_model_len, g_tok, 4 + 8 + 5 + 3, 0, "truncated: token 1 at offset 17");
    expect_failure(g_model, g_model_len, g_tok, 2, 0, "too short for a llama2.c tokenizer");
    /* cut at a token boundary: 511 tokens instead of 512 (the last one, U+200A, is 3 bytes) */
    expect_failure(g_model, g_model_len, g_tok, g_tok_len - 11, 0, "holds 511 tokens but the model's vocab_size is 512");
    /* one token too many */
    uint8_t *more = malloc(g_tok_len + 9);
    memcpy(more, g_tok, g_tok_len);
    memcpy(more + g_tok_len, "\0\0\0\0\1\0\0\0x", 9);
    expect_failure(g_model, g_model_len, more, g_tok_len + 9, 0, "holds 513 tokens");
    /* a negative length */
    memcpy(more, g_tok, g_tok_len);
    memcpy(more + 4 + 4, &(int32_t){-3}, 4);
    expect_failure(g_model, g_model_len, more, g_tok_len, 0, "token 0 at offset 4 has negative length -3");
    /* a length far past the end */
    memcpy(more + 4 + 4, &(int32_t){0x7fffffff}, 4);
    expect_failure(g_model, g_model_len, more, g_tok_len, 0, "length 2147483647 runs past the end");
    free(more);
}
END_TEST

START_TEST(test_missing_files) {
    NEED_INPUTS();
    char *mp = tmp_file("model.bin", g_model, g_model_len);
    model m;
    slmc_err err = {{0}};
    ck_assert_int_eq(llama2c_open(&m, mp, "/nonexistent/tok.bin", &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/tok.bin") != NULL, "%s", err.msg);
    ck_assert_int_eq(llama2c_open(&m, "/nonexistent/model.bin", mp, &err), -1);
    ck_assert_msg(strstr(err.msg, "/nonexistent/model.bin") != NULL, "%s", err.msg);
    ck_assert_int_eq(llama2c_open(&m, mp, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "tokenizer") != NULL, "%s", err.msg);
    free(mp);
}
END_TEST

/* A separate classifier: vocab_size -512 and wcls appended (here a copy of token_embedding
 * with every value negated, so it is distinguishable). */
START_TEST(test_separate_classifier) {
    NEED_INPUTS();
    const size_t emb = 512 * 64 * 4;
    uint8_t *sep = malloc(g_model_len + emb);
    memcpy(sep, g_model, g_model_len);
    memcpy(sep + 20, &(int32_t){-512}, 4);
    for (size_t i = 0; i < emb; i += 4) {
        float f;
        memcpy(&f, g_model + 28 + i, 4);
        f = -f;
        memcpy(sep + g_model_len + i, &f, 4);
    }
    char *mp = tmp_file("sep.bin", sep, g_model_len + emb);
    char *tp = tmp_file("tok.bin", g_tok, g_tok_len);
    ck_assert(llama2c_probe(mp));
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, mp, tp, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 48);
    ck_assert(!m.cfg.tied_output);
    ck_assert_int_eq(m.cfg.n_vocab, 512);
    ck_assert_str_eq(m.tensors[2].name, "output.weight");
    ck_assert_int_eq(m.tensors[2].ne[0], 64);
    ck_assert_int_eq(m.tensors[2].ne[1], 512);
    ck_assert_mem_eq(m.tensors[2].data, sep + g_model_len, emb);
    ck_assert_str_eq(m.tensors[3].name, "blk.0.attn_q.weight");
    model_close(&m);
    free(mp);
    free(tp);
    free(sep);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("llama2c");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_stories_matches_reference);
    tcase_add_test(tc, test_tensors_point_into_file);
    tcase_add_test(tc, test_probe);
    tcase_add_test(tc, test_model_open);
    tcase_add_test(tc, test_write_gguf_matches_reference);
    suite_add_tcase(s, tc);
    TCase *bad = tcase_create("bad input");
    tcase_set_timeout(bad, 60);
    tcase_add_checked_fixture(bad, load_inputs, free_inputs);
    tcase_add_test(bad, test_truncated_model);
    tcase_add_test(bad, test_wrong_size);
    tcase_add_test(bad, test_bad_dims);
    tcase_add_test(bad, test_bad_tokenizer);
    tcase_add_test(bad, test_missing_files);
    tcase_add_test(bad, test_separate_classifier);
    suite_add_tcase(s, bad);
    return s;
}

int main(void) { return run_suite(suite()); }
