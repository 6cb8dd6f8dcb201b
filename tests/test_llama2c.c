/* test_llama2c.c - the llama2.c reader against llama.cpp's own conversion of stories260K,
 * its refusal of damaged inputs, and a SentencePiece tokenizer.model instead of tokenizer.bin
 * (against the Hugging Face reader of the same file). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/tokenizer.h"
#include "formats/gguf.h"
#include "formats/hf_tokenizer.h"
#include "formats/llama2c.h"
#include "formats/model.h"
#include "codec/types.h"
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
                CK_ASSERT_QUIET(sa[i].len == sb[i].len && memcmp(sa[i].s, sb[i].s, sa[i].len) == 0,
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
    ck_assert_float_eq_tol(m.cfg.norm_eps, 1e-5f, 1e-12f);

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
            SKIP_TEST("../shared/models/stories260K not found");                              \
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
    /* a token that is not UTF-8 (GGUF strings must be): the first byte of token 300's text */
    memcpy(more, g_tok, g_tok_len);
    size_t pos = 4;
    for (int i = 0; i < 300; i++) {
        int32_t len;
        memcpy(&len, more + pos + 4, 4);
        pos += 8 + (size_t)len;
    }
    more[pos + 8] = 0xff;
    expect_failure(g_model, g_model_len, more, g_tok_len, 0, "token 300 at offset");
    expect_failure(g_model, g_model_len, more, g_tok_len, 0, "is not valid UTF-8");
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


/* ---- a SentencePiece tokenizer.model instead of tokenizer.bin ---------------------------- */

#define BOOKS_DIR "models/books-22m/hf-bf16"
#define BOOKS_SPM "models/books-22m/hf-bf16/tokenizer.model"
#define SPM_MARK "\xe2\x96\x81" /* U+2581, SentencePiece's word mark */

/* A synthetic llama2.c checkpoint with the given vocab_size (negative: separate classifier):
 * dim 8, hidden_dim 16, 1 layer, 2 heads, 1 KV head, seq_len 4, weights a fixed pattern.
 * Written to dir/name; returns the malloc'd path. */
static char *write_checkpoint(const char *dir, const char *name, int32_t vocab_size) {
    const int32_t dim = 8, hidden = 16, layers = 1, heads = 2, kv_heads = 1, seq_len = 4;
    const int64_t V = vocab_size > 0 ? vocab_size : -(int64_t)vocab_size;
    const int64_t kv_dim = dim * kv_heads / heads, head_size = dim / heads;
    int64_t n_floats = V * dim                                    /* token_embedding_table */
                       + layers * (2 * dim                        /* rms_att, rms_ffn */
                                   + 2 * dim * dim                /* wq, wo */
                                   + 2 * kv_dim * dim             /* wk, wv */
                                   + 3 * hidden * dim)            /* w1, w2, w3 */
                       + dim                                      /* rms_final */
                       + seq_len * head_size                      /* freq_cis_real + imag */
                       + (vocab_size < 0 ? V * dim : 0);          /* wcls */
    size_t len = 28 + 4 * (size_t)n_floats;
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    const int32_t header[7] = {dim, hidden, layers, heads, kv_heads, vocab_size, seq_len};
    memcpy(buf, header, sizeof header);
    for (int64_t i = 0; i < n_floats; i++) {
        float f = (float)(i % 17) * 0.01f - 0.08f;
        memcpy(buf + 28 + 4 * i, &f, 4);
    }
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    ck_assert_int_eq(write_bytes(path, buf, len), 0);
    free(buf);
    ck_assert(llama2c_probe(path));
    return path;
}

/* A made-up SentencePiece-style vocabulary of n tokens (n >= 259 + 27): "<unk>", "<s>", "</s>",
 * the 256 byte tokens "<0x00>".."<0xFF>", then "▁", the letters "a".."z", and "▁a", "▁b", ...
 * with scores -1, -2, ... (0 for the rest): the layout of Llama-2's and llama2.c's own
 * vocabularies, with the types SentencePiece gives them. */
typedef struct made_up {
    uint64_t n;
    char **text;   /* [n] malloc'd */
    float *score;  /* [n] */
    int32_t *type; /* [n] TOKTYPE_* */
} made_up;

static void made_up_set(made_up *v, uint64_t id, const char *text, int32_t type) {
    free(v->text[id]);
    v->text[id] = strdup(text);
    v->type[id] = type;
}

static made_up made_up_new(uint64_t n) {
    ck_assert_uint_ge(n, 259 + 27);
    made_up v = {n, calloc(n, sizeof(char *)), calloc(n, sizeof(float)), calloc(n, sizeof(int32_t))};
    ck_assert(v.text && v.score && v.type);
    made_up_set(&v, 0, "<unk>", TOKTYPE_UNKNOWN);
    made_up_set(&v, 1, "<s>", TOKTYPE_CONTROL);
    made_up_set(&v, 2, "</s>", TOKTYPE_CONTROL);
    for (unsigned b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        made_up_set(&v, 3 + b, piece, TOKTYPE_BYTE);
    }
    for (uint64_t i = 259; i < n; i++) {
        uint64_t k = i - 259; /* 0: "▁", 1..26: letters, 27..52: "▁" + letter, then "▁aa", "▁ab", ... */
        char piece[32];
        if (k == 0) snprintf(piece, sizeof piece, SPM_MARK);
        else if (k <= 26) snprintf(piece, sizeof piece, "%c", (char)('a' + k - 1));
        else if (k <= 52) snprintf(piece, sizeof piece, SPM_MARK "%c", (char)('a' + k - 27));
        else snprintf(piece, sizeof piece, SPM_MARK "%c%c", (char)('a' + (k - 53) / 26 % 26), (char)('a' + (k - 53) % 26));
        made_up_set(&v, i, piece, TOKTYPE_NORMAL);
        v.score[i] = -(float)(i - 258);
    }
    return v;
}

/* The vocabulary as tokenizer.ggml.* keys of a new meta kv, and freed. */
static void made_up_store(made_up *v, meta *kv) {
    meta_init(kv);
    ck_assert_int_eq(meta_set_arr_str(kv, "tokenizer.ggml.tokens", v->n, (const char *const *)v->text, NULL), 0);
    ck_assert_int_eq(meta_set_arr(kv, "tokenizer.ggml.scores", GGUF_F32, v->n, v->score), 0);
    ck_assert_int_eq(meta_set_arr(kv, "tokenizer.ggml.token_type", GGUF_I32, v->n, v->type), 0);
    ck_assert_int_eq(meta_set_str(kv, "tokenizer.ggml.model", "llama"), 0);
    for (uint64_t i = 0; i < v->n; i++) free(v->text[i]);
    free(v->text);
    free(v->score);
    free(v->type);
    memset(v, 0, sizeof *v);
}

static void made_up_vocab(meta *kv, uint64_t n) {
    made_up v = made_up_new(n);
    made_up_store(&v, kv);
}

/* The vocabulary of kv serialized as a tokenizer.model (hf_tokenizer_build_spm), in dir/name. */
static char *write_spm(const char *dir, const char *name, const meta *kv, uint8_t **bytes, size_t *len) {
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_build_spm(kv, bytes, len, &err) == 0, "%s", err.msg);
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    ck_assert_int_eq(write_bytes(path, *bytes, *len), 0);
    return path;
}

/* The same vocabulary as a llama2.c tokenizer.bin (spaces where the pieces have "▁", "<s>" and
 * "</s>" as tok512.bin stores them), with the given max_token_length, in dir/name. */
static char *write_tokenizer_bin(const char *dir, const char *name, const meta *kv, int32_t max_token_length) {
    uint64_t n = 0;
    const meta_str *tok = meta_get_arr(kv, "tokenizer.ggml.tokens", GGUF_STR, &n);
    const float *score = meta_get_arr(kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert(tok && score);
    size_t cap = 4 + n * (8 + 64), len = 0;
    uint8_t *buf = malloc(cap);
    memcpy(buf, &max_token_length, 4);
    len = 4;
    for (uint64_t i = 0; i < n; i++) {
        char text[64];
        size_t tl = 0;
        if (i == 1) tl = (size_t)snprintf(text, sizeof text, "\n<s>\n");
        else if (i == 2) tl = (size_t)snprintf(text, sizeof text, "\n</s>\n");
        else
            for (size_t j = 0; j < tok[i].len; j++) {
                if (j + 3 <= tok[i].len && memcmp(tok[i].s + j, SPM_MARK, 3) == 0) { text[tl++] = ' '; j += 2; }
                else text[tl++] = tok[i].s[j];
            }
        int32_t l32 = (int32_t)tl;
        memcpy(buf + len, &score[i], 4);
        memcpy(buf + len + 4, &l32, 4);
        memcpy(buf + len + 8, text, tl);
        len += 8 + tl;
    }
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    ck_assert_int_eq(write_bytes(path, buf, len), 0);
    free(buf);
    return path;
}

/* Open must fail with a one-line message that starts with `bad` and contains `needle`, and
 * leave the model empty. */
static void expect_open_failure(const char *model_path, const char *tok_path, const char *bad, const char *needle) {
    model m;
    slmc_err err = {{0}};
    ck_assert_int_eq(llama2c_open(&m, model_path, tok_path, &err), -1);
    ck_assert_msg(strncmp(err.msg, bad, strlen(bad)) == 0, "message does not start with %s: %s", bad, err.msg);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message lacks '%s': %s", needle, err.msg);
    ck_assert_msg(strchr(err.msg, '\n') == NULL, "message is not one line: %s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 0);
    ck_assert_ptr_null(m.tensors);
    ck_assert_uint_eq(m.kv.n, 0);
}

static uint64_t u64_key(const meta *kv, const char *key) {
    uint64_t v = 0;
    ck_assert_msg(meta_get_u64(kv, key, &v), "no %s", key);
    return v;
}

/* Token ids of text through the engine's tokenizer built from kv (BOS added, specials not parsed). */
static int32_t *encode(const meta *kv, const char *text, size_t *n) {
    tokenizer *t = NULL;
    slmc_err err = {{0}};
    ck_assert_msg(tokenizer_create(&t, kv, &err) == 0, "%s", err.msg);
    int32_t *ids = NULL;
    ck_assert_msg(tokenizer_encode(t, text, strlen(text), true, false, &ids, n, &err) == 0, "%s", err.msg);
    tokenizer_free(t);
    return ids;
}

/* Without ../shared: one made-up vocabulary written both as tokenizer.bin and as tokenizer.model
 * gives the same model metadata, key for key in the same order, and the same token ids; the
 * GGUF written from the tokenizer.model route says tokenizer.ggml.model "llama". */
START_TEST(test_spm_same_as_tokenizer_bin) {
    char *dir = tmpdir_make();
    meta vocab;
    made_up_vocab(&vocab, 300);
    uint8_t *spm_bytes;
    size_t spm_len;
    char *ckpt = write_checkpoint(dir, "model.bin", 300);
    char *spm = write_spm(dir, "tokenizer.model", &vocab, &spm_bytes, &spm_len);
    char *bin = write_tokenizer_bin(dir, "tokenizer.bin", &vocab, 7);
    model a, b;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&a, ckpt, bin, &err) == 0, "%s", err.msg);
    ck_assert_msg(llama2c_open(&b, ckpt, spm, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.kv.n, b.kv.n);
    for (size_t i = 0; i < a.kv.n; i++) {
        ck_assert_str_eq(a.kv.kv[i].key, b.kv.kv[i].key);
        assert_same_kv(&a.kv.kv[i], &b.kv.kv[i]);
    }
    /* ... and it is the made-up vocabulary itself, with llama.cpp's special ids. */
    static const char *const arrays[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (size_t k = 0; k < 3; k++) assert_same_kv(meta_find(&vocab, arrays[k]), meta_find(&b.kv, arrays[k]));
    ck_assert_str_eq(meta_get_str(&b.kv, "tokenizer.ggml.model"), "llama");
    ck_assert_uint_eq(u64_key(&b.kv, "tokenizer.ggml.unknown_token_id"), 0);
    ck_assert_uint_eq(u64_key(&b.kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64_key(&b.kv, "tokenizer.ggml.eos_token_id"), 2);
    ck_assert_int_eq(b.cfg.n_vocab, 300);
    ck_assert_uint_eq(b.n_tensors, 2 + 9);

    const char *text = "a cab fed\nbad";
    size_t na, nb;
    int32_t *ia = encode(&a.kv, text, &na), *ib = encode(&b.kv, text, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_mem_eq(ia, ib, na * sizeof *ia);
    /* BOS, "▁a", "▁c" "a" "b", "▁f" "e" "d", the byte token <0x0A>, "b" "a" "d". The vocabulary's
     * ids: "▁" 259, "a".."z" 260..285, "▁a".."▁n" 286..299, byte b at 3 + b. */
    static const int32_t want[] = {1, 286, 288, 260, 261, 291, 264, 263, 3 + '\n', 261, 260, 263};
    ck_assert_uint_eq(nb, sizeof want / sizeof *want);
    ck_assert_mem_eq(ib, want, sizeof want);
    free(ia);
    free(ib);

    char out[4096];
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    ck_assert_msg(model_write_gguf(&b, out, -1, NULL, &err) == 0, "%s", err.msg);
    gguf_file g;
    ck_assert_msg(gguf_open(&g, out, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&g.kv, "tokenizer.ggml.model"), "llama");
    assert_same_kv(meta_find(&vocab, "tokenizer.ggml.tokens"), meta_find(&g.kv, "tokenizer.ggml.tokens"));
    gguf_close(&g);

    model_close(&a);
    model_close(&b);
    meta_free(&vocab);
    free(spm_bytes);
    free(ckpt);
    free(spm);
    free(bin);
    tmpdir_remove(dir);
}
END_TEST


/* The special ids are where the vocabulary has "<unk>", "<s>", "</s>" (as SentencePiece and the
 * HF reader find them), llama.cpp's 0, 1, 2 where it has none. */
START_TEST(test_spm_special_ids) {
    char *dir = tmpdir_make();
    char *ckpt = write_checkpoint(dir, "model.bin", 300);
    /* The specials moved: "<pad>" (CONTROL) first, then "<unk>", "<s>", "</s>" (over <0x00>). */
    made_up v = made_up_new(300);
    made_up_set(&v, 0, "<pad>", TOKTYPE_CONTROL);
    made_up_set(&v, 1, "<unk>", TOKTYPE_UNKNOWN);
    made_up_set(&v, 2, "<s>", TOKTYPE_CONTROL);
    made_up_set(&v, 3, "</s>", TOKTYPE_CONTROL);
    meta vocab;
    made_up_store(&v, &vocab);
    uint8_t *bytes;
    size_t len;
    char *spm = write_spm(dir, "moved.model", &vocab, &bytes, &len);
    free(bytes);
    meta_free(&vocab);
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, ckpt, spm, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.unknown_token_id"), 1);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.bos_token_id"), 2);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.eos_token_id"), 3);
    model_close(&m);
    free(spm);

    /* No "<s>" / "</s>" pieces (the unknown piece at 5): unk 5, bos and eos llama.cpp's 1 and 2. */
    v = made_up_new(300);
    made_up_set(&v, 0, "<0x00>", TOKTYPE_BYTE);
    made_up_set(&v, 1, "<x>", TOKTYPE_CONTROL);
    made_up_set(&v, 2, "</x>", TOKTYPE_CONTROL);
    made_up_set(&v, 3, "<s>", TOKTYPE_NORMAL); /* not CONTROL: not SentencePiece's bos */
    made_up_set(&v, 5, "<unk>", TOKTYPE_UNKNOWN);
    made_up_store(&v, &vocab);
    spm = write_spm(dir, "nobos.model", &vocab, &bytes, &len);
    free(bytes);
    ck_assert_msg(llama2c_open(&m, ckpt, spm, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.unknown_token_id"), 5);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.eos_token_id"), 2);
    model_close(&m);
    free(spm);
    meta_free(&vocab);
    free(ckpt);
    tmpdir_remove(dir);
}
END_TEST

/* Without ../shared: a tokenizer.model of another size than the checkpoint's vocabulary, and
 * damaged ones, are refused with one line naming the tokenizer file. */
START_TEST(test_spm_refused) {
    char *dir = tmpdir_make();
    meta vocab;
    made_up_vocab(&vocab, 300);
    uint8_t *bytes;
    size_t len;
    char *spm = write_spm(dir, "tokenizer.model", &vocab, &bytes, &len);
    char *ckpt301 = write_checkpoint(dir, "v301.bin", 301);
    char *ckpt_sep = write_checkpoint(dir, "sep299.bin", -299);
    expect_open_failure(ckpt301, spm, spm, "SentencePiece tokenizer.model holds 300 pieces but the model's vocab_size is 301");
    expect_open_failure(ckpt_sep, spm, spm, "holds 300 pieces but the model's vocab_size is 299");

    char *ckpt = write_checkpoint(dir, "model.bin", 300);
    char *cut = malloc(strlen(dir) + 16);
    sprintf(cut, "%s/cut.model", dir);
    /* Cuts inside a piece, inside the first piece, inside the normalizer spec at the end. */
    const size_t cuts[] = {len / 2 + 3, 20, 3, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        ck_assert_int_eq(write_bytes(cut, bytes, cuts[i]), 0);
        expect_open_failure(ckpt, cut, cut, "read as a SentencePiece tokenizer.model");
        expect_open_failure(ckpt, cut, cut, "runs past the end of its message");
    }
    /* Too short to start like one: read as a tokenizer.bin, and refused as that. */
    ck_assert_int_eq(write_bytes(cut, bytes, 2), 0);
    expect_open_failure(ckpt, cut, cut, "too short for a llama2.c tokenizer");
    /* A piece type SentencePiece does not have. */
    uint8_t *bad = malloc(len);
    memcpy(bad, bytes, len);
    ck_assert_int_eq(bad[14], 0x18); /* first piece: 0a 0e 0a 05 "<unk>" 15 <f32> 18 02 */
    bad[15] = 9;
    ck_assert_int_eq(write_bytes(cut, bad, len), 0);
    expect_open_failure(ckpt, cut, cut, "piece 0 has invalid type 9");
    free(bad);

    /* The checkpoint is still fine with the whole file. */
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, ckpt, spm, &err) == 0, "%s", err.msg);
    model_close(&m);

    free(cut);
    free(ckpt);
    free(ckpt_sep);
    free(ckpt301);
    free(spm);
    free(bytes);
    meta_free(&vocab);
    tmpdir_remove(dir);
}
END_TEST

/* A tokenizer.bin whose first byte is 0x0A, as a protobuf's is (max_token_length 10, or
 * 0x8A0A), is still read as a tokenizer.bin. */
START_TEST(test_tokenizer_bin_starting_like_protobuf) {
    char *dir = tmpdir_make();
    char *ckpt = write_checkpoint(dir, "model.bin", 300);
    meta vocab;
    made_up_vocab(&vocab, 300);
    char *plain = write_tokenizer_bin(dir, "plain.bin", &vocab, 7);
    char *ten = write_tokenizer_bin(dir, "ten.bin", &vocab, 10);
    char *high = write_tokenizer_bin(dir, "high.bin", &vocab, 0x8A0A);
    model a, b, c;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&a, ckpt, plain, &err) == 0, "%s", err.msg);
    ck_assert_msg(llama2c_open(&b, ckpt, ten, &err) == 0, "%s", err.msg);
    ck_assert_msg(llama2c_open(&c, ckpt, high, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.kv.n, b.kv.n);
    ck_assert_uint_eq(a.kv.n, c.kv.n);
    for (size_t i = 0; i < a.kv.n; i++) {
        assert_same_kv(&a.kv.kv[i], &b.kv.kv[i]);
        assert_same_kv(&a.kv.kv[i], &c.kv.kv[i]);
    }
    model_close(&a);
    model_close(&b);
    model_close(&c);
    free(plain);
    free(ten);
    free(high);
    free(ckpt);
    meta_free(&vocab);
    tmpdir_remove(dir);
}
END_TEST

/* The real Llama-2 tokenizer.model of books-22m with a 32000-token checkpoint: the same
 * vocabulary and special ids as the Hugging Face reader gives for that folder, the converted
 * GGUF says "llama", and the engine's tokenizer gives the same ids through both routes. */
START_TEST(test_books22m_tokenizer_model) {
    char *spm = SHARED_OR_SKIP(BOOKS_SPM);
    char *books = SHARED_OR_SKIP(BOOKS_DIR);
    char *dir = tmpdir_make();
    char *ckpt = write_checkpoint(dir, "model.bin", 32000);
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, ckpt, spm, &err) == 0, "%s", err.msg);
    meta hf;
    meta_init(&hf);
    ck_assert_msg(hf_tokenizer_load(&hf, books, 32000, &err) == 0, "%s", err.msg);

    static const char *const same[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                                       "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                                       "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                                       "tokenizer.ggml.eos_token_id"};
    for (size_t k = 0; k < sizeof same / sizeof *same; k++) {
        const meta_kv *ours = meta_find(&m.kv, same[k]), *theirs = meta_find(&hf, same[k]);
        ck_assert_msg(ours && theirs, "%s missing", same[k]);
        assert_same_kv(ours, theirs);
    }
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.unknown_token_id"), 0);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64_key(&m.kv, "tokenizer.ggml.eos_token_id"), 2);
    uint64_t n = 0;
    const meta_str *tok = meta_get_arr(&m.kv, "tokenizer.ggml.tokens", GGUF_STR, &n);
    ck_assert_uint_eq(n, 32000);
    ck_assert_str_eq(tok[1].s, "<s>");
    ck_assert_str_eq(tok[29871].s, SPM_MARK);

    /* Converted to GGUF and read back. */
    char out[4096];
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    ck_assert_msg(model_write_gguf(&m, out, -1, NULL, &err) == 0, "%s", err.msg);
    gguf_file g;
    ck_assert_msg(gguf_open(&g, out, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&g.kv, "tokenizer.ggml.model"), "llama");
    assert_same_kv(meta_find(&hf, "tokenizer.ggml.tokens"), meta_find(&g.kv, "tokenizer.ggml.tokens"));

    const char *text = "It is a truth universally acknowledged, that a single man in possession of a good "
                       "fortune, must be in want of a wife.\n\n  \"My dear Mr. Bennet,\" -- 1813, caf\xc3\xa9 \xe2\x9c\x93";
    size_t n_gguf, n_hf;
    int32_t *ids_gguf = encode(&g.kv, text, &n_gguf), *ids_hf = encode(&hf, text, &n_hf);
    ck_assert_uint_eq(n_gguf, n_hf);
    ck_assert_mem_eq(ids_gguf, ids_hf, n_hf * sizeof *ids_hf);
    ck_assert_uint_gt(n_hf, 20);
    ck_assert_int_eq(ids_hf[0], 1);
    /* Llama-2's ids for the start: ▁It ▁is ▁a ▁truth */
    static const int32_t start[] = {1, 739, 338, 263, 8760};
    ck_assert_mem_eq(ids_hf, start, sizeof start);
    free(ids_gguf);
    free(ids_hf);
    gguf_close(&g);
    model_close(&m);

    /* And through model_open, as the commands open it. */
    model_open_opts opts = {.tokenizer = spm};
    ck_assert_msg(model_open(&m, ckpt, &opts, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.format, MODEL_LLAMA2C);
    ck_assert_int_eq(m.cfg.n_vocab, 32000);
    model_close(&m);

    meta_free(&hf);
    free(ckpt);
    tmpdir_remove(dir);
    free(books);
    free(spm);
}
END_TEST

/* The real tokenizer.model refused for a checkpoint of another vocabulary size, and when cut. */
START_TEST(test_books22m_tokenizer_model_refused) {
    char *spm = SHARED_OR_SKIP(BOOKS_SPM);
    char *dir = tmpdir_make();
    char *ckpt512 = write_checkpoint(dir, "v512.bin", 512);
    expect_open_failure(ckpt512, spm, spm, "holds 32000 pieces but the model's vocab_size is 512");

    char *ckpt = write_checkpoint(dir, "model.bin", 32000);
    size_t len;
    uint8_t *bytes = slurp(spm, &len);
    ck_assert_ptr_nonnull(bytes);
    char *cut = malloc(strlen(dir) + 32);
    sprintf(cut, "%s/tokenizer.model", dir);
    const size_t cuts[] = {len - 1, len - 200, len / 2 + 1, 4000, 10};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        ck_assert_int_eq(write_bytes(cut, bytes, cuts[i]), 0);
        expect_open_failure(ckpt, cut, cut, "read as a SentencePiece tokenizer.model (it starts like one): ");
    }
    free(cut);
    free(bytes);
    free(ckpt);
    free(ckpt512);
    tmpdir_remove(dir);
    free(spm);
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
    TCase *spm = tcase_create("tokenizer.model");
    tcase_set_timeout(spm, 60);
    tcase_add_test(spm, test_spm_same_as_tokenizer_bin);
    tcase_add_test(spm, test_spm_special_ids);
    tcase_add_test(spm, test_spm_refused);
    tcase_add_test(spm, test_tokenizer_bin_starting_like_protobuf);
    tcase_add_test(spm, test_books22m_tokenizer_model);
    tcase_add_test(spm, test_books22m_tokenizer_model_refused);
    suite_add_tcase(s, spm);
    return s;
}

int main(void) { return run_suite(suite()); }
