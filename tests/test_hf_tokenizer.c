/* test_hf_tokenizer.c - HF tokenizer files <-> tokenizer.ggml.* keys: the real tokenizer.model
 * of books-22m against llama.cpp's vocabulary GGUF, the Llama 3 and Qwen3 tokenizer.json files,
 * GGUF -> HF -> GGUF round trips of both kinds, malformed inputs, and what llama.cpp's converter
 * does per model family (Phi-3 against llama.cpp's ggml-vocab-phi-3.gguf; Gemma 1/2/3, SmolLM,
 * Phi-2, StableLM 2, Phi-4-mini, Qwen3 and Llama 3 folders). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/tokenizer.h"
#include "formats/gguf.h"
#include "formats/hf_tokenizer.h"
#include "formats/meta.h"
#include "testutil.h"

/* ---- helpers -------------------------------------------------------------------------- */

/* true when two values are identical: type, element type, count and bytes. */
static bool kv_equal(const meta_kv *a, const meta_kv *b) {
    if (a->type != b->type) return false;
    if (a->type == GGUF_STR) return a->v.str.len == b->v.str.len && memcmp(a->v.str.s, b->v.str.s, a->v.str.len) == 0;
    if (a->type != GGUF_ARR) return memcmp(a->v.raw, b->v.raw, gguf_vtype_size(a->type)) == 0;
    if (a->elem != b->elem || a->n != b->n) return false;
    if (a->elem != GGUF_STR) return memcmp(a->v.arr, b->v.arr, a->n * gguf_vtype_size(a->elem)) == 0;
    const meta_str *x = a->v.arr, *y = b->v.arr;
    for (uint64_t i = 0; i < a->n; i++)
        if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0) return false;
    return true;
}

static bool is_tokenizer_key(const char *k) { return strncmp(k, "tokenizer.", 10) == 0; }

/* Every tokenizer.* key of `want` is in `got` with an identical value, and `got` has no other
 * tokenizer.* keys. Prints the first difference. */
static bool same_tokenizer_keys(const meta *want, const meta *got) {
    size_t n_want = 0, n_got = 0;
    for (size_t i = 0; i < want->n; i++) {
        const meta_kv *w = &want->kv[i];
        if (!is_tokenizer_key(w->key)) continue;
        n_want++;
        const meta_kv *g = meta_find(got, w->key);
        if (!g) {
            fprintf(stderr, "missing key %s\n", w->key);
            return false;
        }
        if (!kv_equal(w, g)) {
            fprintf(stderr, "key %s differs (types %d/%d elem %d/%d n %llu/%llu)\n", w->key, w->type, g->type,
                    w->elem, g->elem, (unsigned long long)w->n, (unsigned long long)g->n);
            return false;
        }
    }
    for (size_t i = 0; i < got->n; i++)
        if (is_tokenizer_key(got->kv[i].key)) n_got++;
    if (n_got != n_want) {
        for (size_t i = 0; i < got->n; i++)
            if (is_tokenizer_key(got->kv[i].key) && !meta_find(want, got->kv[i].key))
                fprintf(stderr, "extra key %s\n", got->kv[i].key);
        return false;
    }
    return true;
}

/* Copy only the tokenizer.* keys of src. */
static void copy_tokenizer_keys(meta *dst, const meta *src) {
    meta_init(dst);
    for (size_t i = 0; i < src->n; i++)
        if (is_tokenizer_key(src->kv[i].key)) ck_assert_int_eq(meta_set_kv(dst, &src->kv[i]), 0);
}

static const meta_str *tokens_of(const meta *kv, uint64_t *n) {
    const meta_str *t = meta_get_arr(kv, "tokenizer.ggml.tokens", GGUF_STR, n);
    CK_ASSERT_QUIET(t != NULL, "no tokenizer.ggml.tokens");
    return t;
}

static int32_t type_of(const meta *kv, uint64_t id) {
    uint64_t n;
    const int32_t *t = meta_get_arr(kv, "tokenizer.ggml.token_type", GGUF_I32, &n);
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_lt(id, n);
    return t[id];
}

static int64_t id_of(const meta *kv, const char *text) {
    uint64_t n;
    const meta_str *t = tokens_of(kv, &n);
    for (uint64_t i = 0; i < n; i++)
        if (t[i].len == strlen(text) && memcmp(t[i].s, text, t[i].len) == 0) return (int64_t)i;
    return -1;
}

static uint64_t u64_of(const meta *kv, const char *key) {
    uint64_t v = 0;
    ck_assert_msg(meta_get_u64(kv, key, &v), "no %s", key);
    return v;
}

static bool bool_of(const meta *kv, const char *key) {
    bool v = false;
    ck_assert_msg(meta_get_bool(kv, key, &v), "no %s", key);
    return v;
}

static bool has_file(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* Expect parse to fail with a message naming the file. */
#define EXPECT_FAIL(call, name)                                                              \
    do {                                                                                     \
        slmc_err e_ = {{0}};                                                                 \
        slmc_err *err = &e_;                                                                 \
        ck_assert_int_eq((call), -1);                                                        \
        ck_assert_msg(strstr(e_.msg, name) != NULL, "message \"%s\" does not name %s", e_.msg, name); \
    } while (0)

/* ---- SentencePiece tokenizer.model ---------------------------------------------------- */

START_TEST(test_spm_books22m_pieces) {
    char *path = SHARED_OR_SKIP("models/books-22m/hf-bf16/tokenizer.model");
    size_t len;
    uint8_t *buf = slurp(path, &len);
    ck_assert_ptr_nonnull(buf);
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_parse_spm(&kv, buf, len, path, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "llama");
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "default");
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 32000);
    ck_assert_str_eq(t[0].s, "<unk>");
    ck_assert_int_eq(type_of(&kv, 0), TOKTYPE_UNKNOWN);
    ck_assert_str_eq(t[1].s, "<s>");
    ck_assert_int_eq(type_of(&kv, 1), TOKTYPE_CONTROL);
    ck_assert_str_eq(t[2].s, "</s>");
    ck_assert_int_eq(type_of(&kv, 2), TOKTYPE_CONTROL);
    ck_assert_str_eq(t[3].s, "<0x00>");
    ck_assert_int_eq(type_of(&kv, 3), TOKTYPE_BYTE);
    ck_assert_str_eq(t[258].s, "<0xFF>");
    ck_assert_int_eq(type_of(&kv, 259), TOKTYPE_NORMAL);
    uint64_t ns;
    const float *scores = meta_get_arr(&kv, "tokenizer.ggml.scores", GGUF_F32, &ns);
    ck_assert_ptr_nonnull(scores);
    ck_assert_uint_eq(ns, 32000);
    ck_assert(scores[31999] == -31740.0f);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.merges"));
    meta_free(&kv);
    free(buf);
    free(path);
}
END_TEST

/* The shared tokenizer.model holds the same vocabulary as llama.cpp's ggml-vocab-llama-spm.gguf:
 * tokens, scores and token_type must be identical arrays of identical types. */
START_TEST(test_spm_matches_llama_cpp_vocab) {
    char *path = SHARED_OR_SKIP("models/books-22m/hf-bf16/tokenizer.model");
    char *gpath = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    size_t len;
    uint8_t *buf = slurp(path, &len);
    ck_assert_ptr_nonnull(buf);
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_parse_spm(&kv, buf, len, path, &err) == 0, "%s", err.msg);
    gguf_file g;
    ck_assert_msg(gguf_open(&g, gpath, &err) == 0, "%s", err.msg);
    static const char *const keys[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                                       "tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const meta_kv *want = meta_find(&g.kv, keys[i]), *got = meta_find(&kv, keys[i]);
        ck_assert_ptr_nonnull(want);
        ck_assert_ptr_nonnull(got);
        ck_assert_msg(kv_equal(want, got), "%s differs from llama.cpp's", keys[i]);
    }
    gguf_close(&g);
    meta_free(&kv);
    free(buf);
    free(gpath);
    free(path);
}
END_TEST

/* The whole folder: tokenizer.model + tokenizer_config.json + config.json give every tokenizer
 * key of llama.cpp's vocabulary GGUF, identical; and the value types of books-22m-BF16.gguf. */
START_TEST(test_load_books22m_folder) {
    char *dir = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *gpath = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    char *bpath = SHARED_OR_SKIP("reference/books-22m-BF16.gguf");
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&kv, dir, 32000, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 2);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.unknown_token_id"), 0);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.padding_token_id")); /* "pad_token": null */
    ck_assert(bool_of(&kv, "tokenizer.ggml.add_bos_token"));
    ck_assert(!bool_of(&kv, "tokenizer.ggml.add_eos_token"));

    gguf_file g;
    ck_assert_msg(gguf_open(&g, gpath, &err) == 0, "%s", err.msg);
    ck_assert(same_tokenizer_keys(&g.kv, &kv));
    gguf_close(&g);

    /* books-22m-BF16.gguf (another llama.cpp converter) agrees on every key both have. */
    ck_assert_msg(gguf_open(&g, bpath, &err) == 0, "%s", err.msg);
    size_t compared = 0;
    for (size_t i = 0; i < g.kv.n; i++) {
        const meta_kv *want = &g.kv.kv[i];
        const meta_kv *got = meta_find(&kv, want->key);
        if (!is_tokenizer_key(want->key) || !got) continue;
        if (want->type == GGUF_U32 && meta_kv_i64(want) == 0xffffffffll) continue;
        ck_assert_msg(kv_equal(want, got), "%s differs from books-22m-BF16.gguf", want->key);
        compared++;
    }
    ck_assert_uint_eq(compared, 7); /* model, tokens, scores, token_type, unk, bos, eos */
    gguf_close(&g);

    /* n_vocab above the pieces: llama.cpp's "[PAD{i}]" fill, UNUSED, score -10000. */
    meta_free(&kv);
    meta_init(&kv);
    ck_assert_msg(hf_tokenizer_load(&kv, dir, 32003, &err) == 0, "%s", err.msg);
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 32003);
    ck_assert_str_eq(t[32002].s, "[PAD32002]");
    ck_assert_int_eq(type_of(&kv, 32000), TOKTYPE_UNUSED);
    const float *scores = meta_get_arr(&kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert_uint_eq(n, 32003);
    ck_assert(scores[32001] == -10000.0f);
    meta_free(&kv);
    free(bpath);
    free(gpath);
    free(dir);
}
END_TEST

/* GGUF -> HF -> GGUF for a "llama" vocabulary is exact, and the tokenizer.model we write holds
 * the same pieces (text, score, type) as the original Llama-2 tokenizer.model. */
START_TEST(test_spm_round_trip) {
    char *gpath = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    char *orig = SHARED_OR_SKIP("models/books-22m/hf-bf16/tokenizer.model");
    slmc_err err = {{0}};
    gguf_file g;
    ck_assert_msg(gguf_open(&g, gpath, &err) == 0, "%s", err.msg);
    meta src;
    copy_tokenizer_keys(&src, &g.kv);
    gguf_close(&g);
    ck_assert_int_eq(meta_set_str(&src, "tokenizer.chat_template", "{{ bos_token }}{{ messages }}"), 0);

    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    ck_assert_msg(hf_tokenizer_write(&src, dir, &err) == 0, "%s", err.msg);
    ck_assert(has_file(dir, "tokenizer.model"));
    ck_assert(has_file(dir, "tokenizer_config.json"));
    ck_assert(has_file(dir, "special_tokens_map.json"));
    ck_assert(!has_file(dir, "tokenizer.json"));

    meta back;
    meta_init(&back);
    ck_assert_msg(hf_tokenizer_load(&back, dir, 32000, &err) == 0, "%s", err.msg);
    ck_assert(same_tokenizer_keys(&src, &back));

    /* Our protobuf and the original give the same pieces. */
    size_t la, lb;
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    uint8_t *a = slurp(p, &la), *b = slurp(orig, &lb);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    meta ma, mb;
    meta_init(&ma);
    meta_init(&mb);
    ck_assert_int_eq(hf_tokenizer_parse_spm(&ma, a, la, p, &err), 0);
    ck_assert_int_eq(hf_tokenizer_parse_spm(&mb, b, lb, orig, &err), 0);
    ck_assert(same_tokenizer_keys(&mb, &ma));
    /* Spot-check the serialization: first piece is {1:"<unk>", 2:0.0f, 3:2}. */
    static const uint8_t first[] = {0x0a, 0x0e, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x15, 0, 0, 0, 0, 0x18, 0x02};
    ck_assert_uint_ge(la, sizeof first);
    ck_assert_mem_eq(a, first, sizeof first);

    /* special_tokens_map.json names the tokens. */
    snprintf(p, sizeof p, "%s/special_tokens_map.json", dir);
    size_t lm;
    char *map = (char *)slurp(p, &lm);
    ck_assert_ptr_nonnull(map);
    map = realloc(map, lm + 1);
    map[lm] = '\0';
    ck_assert_ptr_nonnull(strstr(map, "\"bos_token\": \"<s>\""));
    ck_assert_ptr_nonnull(strstr(map, "\"unk_token\": \"<unk>\""));

    free(map);
    free(a);
    free(b);
    meta_free(&ma);
    meta_free(&mb);
    meta_free(&back);
    meta_free(&src);
    tmpdir_remove(dir);
    free(orig);
    free(gpath);
}
END_TEST

/* ---- tokenizer.json ------------------------------------------------------------------- */

START_TEST(test_llama3_json) {
    char *dir = SHARED_OR_SKIP("tokenizers/llama3-hf");
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&kv, dir, 128256, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "gpt2");
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "llama-bpe");
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 128256);
    ck_assert_str_eq(t[0].s, "!");
    ck_assert_int_eq(type_of(&kv, 0), TOKTYPE_NORMAL);
    ck_assert_str_eq(t[128000].s, "<|begin_of_text|>");
    ck_assert_int_eq(type_of(&kv, 128000), TOKTYPE_CONTROL);
    ck_assert_str_eq(t[128255].s, "<|reserved_special_token_250|>");
    ck_assert_int_eq(type_of(&kv, 128255), TOKTYPE_CONTROL);
    ck_assert_int_eq(id_of(&kv, "\xc4\xa0the"), 279); /* "Ġthe" */
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.scores"));
    const meta_str *m = meta_get_arr(&kv, "tokenizer.ggml.merges", GGUF_STR, &n);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(n, 280147);
    ck_assert_str_eq(m[0].s, "\xc4\xa0 \xc4\xa0");
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 128000);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 128001);
    const char *ct = meta_get_str(&kv, "tokenizer.chat_template");
    ck_assert_ptr_nonnull(ct);
    ck_assert_ptr_nonnull(strstr(ct, "<|start_header_id|>"));
    meta_free(&kv);
    free(dir);
}
END_TEST

START_TEST(test_qwen3_json) {
    char *dir = SHARED_OR_SKIP("tokenizers/qwen3-hf");
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&kv, dir, 151936, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "gpt2");
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "qwen2");
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 151936);
    ck_assert_str_eq(t[151643].s, "<|endoftext|>");
    ck_assert_int_eq(type_of(&kv, 151643), TOKTYPE_CONTROL);
    ck_assert_int_eq(id_of(&kv, "<|im_start|>"), 151644);
    ck_assert_int_eq(type_of(&kv, 151644), TOKTYPE_CONTROL);
    /* not special in tokenizer.json, but "<|...|>" looks special to llama.cpp */
    ck_assert_int_eq(id_of(&kv, "<|fim_prefix|>"), 151659);
    ck_assert_int_eq(type_of(&kv, 151659), TOKTYPE_CONTROL);
    ck_assert_int_eq(id_of(&kv, "<think>"), 151667);
    ck_assert_int_eq(type_of(&kv, 151667), TOKTYPE_USER_DEFINED);
    ck_assert_str_eq(t[151668].s, "</think>");
    ck_assert_str_eq(t[151669].s, "[PAD151669]");
    ck_assert_int_eq(type_of(&kv, 151669), TOKTYPE_UNUSED);
    ck_assert_str_eq(t[151935].s, "[PAD151935]");
    const meta_str *m = meta_get_arr(&kv, "tokenizer.ggml.merges", GGUF_STR, &n);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(n, 151387);
    ck_assert_str_eq(m[0].s, "\xc4\xa0 \xc4\xa0"); /* from the pair ["Ġ", "Ġ"] */
    ck_assert_str_eq(m[2].s, "i n");
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 151645);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.padding_token_id"), 151643);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.bos_token_id")); /* "bos_token": null */
    ck_assert(!bool_of(&kv, "tokenizer.ggml.add_bos_token"));
    meta_free(&kv);
    free(dir);
}
END_TEST

/* GGUF -> HF -> GGUF for "gpt2" vocabularies: identical tokens, types, merges, pre, ids. */
static void bpe_round_trip(const char *rel, int64_t n_vocab, const char *pre) {
    char *dir = shared_path(rel);
    if (!dir) {
        test_skip(__func__, "../shared/%s not found", rel);
        return;
    }
    meta src;
    meta_init(&src);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&src, dir, n_vocab, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&src, "tokenizer.ggml.pre"), pre);
    char *out = tmpdir_make();
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(hf_tokenizer_write(&src, out, &err) == 0, "%s", err.msg);
    ck_assert(has_file(out, "tokenizer.json"));
    ck_assert(!has_file(out, "tokenizer.model"));
    meta back;
    meta_init(&back);
    ck_assert_msg(hf_tokenizer_load(&back, out, n_vocab, &err) == 0, "%s", err.msg);
    ck_assert(same_tokenizer_keys(&src, &back));
    meta_free(&back);
    meta_free(&src);
    tmpdir_remove(out);
    free(dir);
}

START_TEST(test_llama3_round_trip) { bpe_round_trip("tokenizers/llama3-hf", 128256, "llama-bpe"); }
END_TEST

START_TEST(test_qwen3_round_trip) { bpe_round_trip("tokenizers/qwen3-hf", 151936, "qwen2"); }
END_TEST

/* A Llama-2 "fast" tokenizer.json (byte fallback) is a SentencePiece vocabulary, converted as
 * llama.cpp's LlamaHfVocab does: scores -1000, <0xXX> BYTE, special added tokens CONTROL. */
START_TEST(test_byte_fallback_json) {
    static const char js[] =
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
        " {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true},"
        " {\"id\": 6, \"content\": \"<extra>\", \"special\": false}],"
        " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\"},"
        " \"decoder\": {\"type\": \"Sequence\", \"decoders\": []},"
        " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true,"
        " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x00>\": 3, \"<0x0A>\": 4, \"\\u2581a\": 5},"
        " \"merges\": [\"\\u2581 a\"]}}";
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_parse_json(&kv, js, strlen(js), "fast.json", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "llama");
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "default");
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 7);
    ck_assert_str_eq(t[5].s, "\xe2\x96\x81" "a");
    static const int32_t types[] = {3, 3, 3, 6, 6, 1, 4};
    for (int i = 0; i < 7; i++) ck_assert_int_eq(type_of(&kv, (uint64_t)i), types[i]);
    const float *s = meta_get_arr(&kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < 7; i++) ck_assert(s[i] == -1000.0f);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.merges"));

    /* tokenizer_config.json: names resolve against these tokens; config.json fills the rest. */
    static const char cfg[] = "{\"add_bos_token\": true, \"add_eos_token\": false, \"bos_token\": {\"content\": \"<s>\"},"
                              " \"unk_token\": \"<unk>\", \"pad_token\": \"<nope>\", \"model_max_length\": 1000000000000000019884624838656,"
                              " \"chat_template\": [{\"name\": \"default\", \"template\": \"A\"}, {\"name\": \"tool_use\", \"template\": \"B\"}]}";
    ck_assert_msg(hf_tokenizer_parse_config_json(&kv, cfg, strlen(cfg), "tokenizer_config.json", &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.unknown_token_id"), 0);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.padding_token_id")); /* "<nope>" is no token */
    ck_assert(bool_of(&kv, "tokenizer.ggml.add_bos_token"));
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.chat_template"), "A");
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.chat_template.tool_use"), "B");
    static const char mcfg[] = "{\"bos_token_id\": 5, \"eos_token_id\": 2, \"pad_token_id\": 99, \"sep_token_id\": [1, 2]}";
    ck_assert_int_eq(hf_tokenizer_parse_model_config(&kv, mcfg, strlen(mcfg), "config.json", &err), 0);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 1); /* tokenizer_config.json wins */
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 2);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.padding_token_id"));  /* 99: out of range */
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.seperator_token_id")); /* a list */
    meta_free(&kv);
}
END_TEST

START_TEST(test_no_tokenizer_files) {
    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    ck_assert_int_eq(write_bytes(p, "{\"bos_token_id\": 1}", 19), 0);
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_int_eq(hf_tokenizer_load(&kv, dir, 32000, &err), 0);
    ck_assert_uint_eq(kv.n, 0);
    /* and writing a meta without tokenizer keys writes nothing */
    ck_assert_int_eq(meta_set_str(&kv, "general.architecture", "llama"), 0);
    char *out = tmpdir_make();
    ck_assert_int_eq(hf_tokenizer_write(&kv, out, &err), 0);
    ck_assert(!has_file(out, "tokenizer_config.json"));
    ck_assert(!has_file(out, "tokenizer.model"));
    /* an unsupported tokenizer model is refused */
    ck_assert_int_eq(meta_set_str(&kv, "tokenizer.ggml.model", "bert"), 0);
    EXPECT_FAIL(hf_tokenizer_write(&kv, out, err), out);
    meta_free(&kv);
    tmpdir_remove(out);
    tmpdir_remove(dir);
}
END_TEST

/* ---- malformed inputs ----------------------------------------------------------------- */

START_TEST(test_spm_malformed) {
    meta kv;
    meta_init(&kv);
    const char *name = "bad.model";
    /* a varint that never ends */
    static const uint8_t endless[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, endless, sizeof endless, name, err), name);
    /* a truncated varint */
    static const uint8_t trunc[] = {0x0a, 0x80};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, trunc, sizeof trunc, name, err), name);
    /* a length past the end */
    static const uint8_t past[] = {0x0a, 0x10, 0x0a, 0x01, 'a'};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, past, sizeof past, name, err), name);
    /* a nested length past its message */
    static const uint8_t nested[] = {0x0a, 0x03, 0x0a, 0x05, 'a', 'b', 'c', 'd', 'e'};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, nested, sizeof nested, name, err), name);
    /* a piece with an invalid type, one without text, a truncated score */
    static const uint8_t badtype[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x09};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, badtype, sizeof badtype, name, err), name);
    static const uint8_t notext[] = {0x0a, 0x02, 0x18, 0x01};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, notext, sizeof notext, name, err), name);
    static const uint8_t shortscore[] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x15, 0x00};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, shortscore, sizeof shortscore, name, err), name);
    /* field 1 with the wrong wire type, wire type 3 (groups), field number 0, no pieces */
    static const uint8_t wrongwire[] = {0x08, 0x01};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, wrongwire, sizeof wrongwire, name, err), name);
    static const uint8_t group[] = {0x23};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, group, sizeof group, name, err), name);
    static const uint8_t field0[] = {0x02, 0x00};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, field0, sizeof field0, name, err), name);
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, (const uint8_t *)"", 0, name, err), name);
    /* a WORD model (trainer_spec.model_type 3) */
    static const uint8_t word[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0x03};
    EXPECT_FAIL(hf_tokenizer_parse_spm(&kv, word, sizeof word, name, err), name);
    ck_assert_uint_eq(kv.n, 0); /* failures leave kv alone */

    /* A minimal valid model parses: one piece "a" score 0.5 type NORMAL, an unknown field. */
    static const uint8_t ok[] = {0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0x00, 0x00, 0x00, 0x3f, 0x62, 0x00};
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_parse_spm(&kv, ok, sizeof ok, name, &err) == 0, "%s", err.msg);
    uint64_t n;
    const float *s = meta_get_arr(&kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert(s[0] == 0.5f);
    meta_free(&kv);
}
END_TEST

/* Every prefix of the real tokenizer.model either parses (protobuf has no terminator, so a cut
 * between pieces is a shorter valid model) or fails naming the file; every single-byte
 * corruption of its first kilobyte likewise. Under ASan this checks no read leaves the buffer. */
START_TEST(test_spm_truncations_and_flips) {
    char *path = SHARED_OR_SKIP("models/books-22m/hf-bf16/tokenizer.model");
    size_t len;
    uint8_t *buf = slurp(path, &len);
    ck_assert_ptr_nonnull(buf);
    size_t failed = 0, tried = 0;
    for (size_t cut = 0; cut < len; cut += (cut < 4096 ? 1 : 997)) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, buf, cut);
        meta kv;
        meta_init(&kv);
        slmc_err err = {{0}};
        if (hf_tokenizer_parse_spm(&kv, copy, cut, "cut.model", &err) != 0) {
            CK_ASSERT_QUIET(strstr(err.msg, "cut.model") != NULL, "%s", err.msg);
            failed++;
        }
        tried++;
        meta_free(&kv);
        free(copy);
    }
    ck_assert_uint_gt(failed, tried / 4); /* most cuts land inside a piece */
    uint8_t *copy = malloc(len);
    for (size_t i = 0; i < 1024; i++) {
        memcpy(copy, buf, len);
        copy[i] ^= (uint8_t)(0x80 | (i * 37));
        meta kv;
        meta_init(&kv);
        slmc_err err = {{0}};
        if (hf_tokenizer_parse_spm(&kv, copy, len, "flip.model", &err) != 0)
            CK_ASSERT_QUIET(strstr(err.msg, "flip.model") != NULL, "%s", err.msg);
        meta_free(&kv);
    }
    free(copy);
    free(buf);
    free(path);
}
END_TEST

START_TEST(test_json_malformed) {
    meta kv;
    meta_init(&kv);
    const char *name = "bad/tokenizer.json";
#define JSON_FAIL(text) EXPECT_FAIL(hf_tokenizer_parse_json(&kv, text, strlen(text), name, err), name)
    JSON_FAIL("{\"model\": {\"type\": \"BPE\"");                       /* truncated */
    JSON_FAIL("[1, 2]");                                                /* not an object */
    JSON_FAIL("{\"model\": 5}");                                        /* no model.type */
    JSON_FAIL("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}"); /* unsupported model */
    /* byte-level BPE whose pre-tokenizer regex we do not know */
    JSON_FAIL("{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"x\"}},"
              " {\"type\": \"ByteLevel\", \"use_regex\": false}]}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    /* GPT-2-style (bare ByteLevel) documents with bad vocabularies */
#define GPT2(vocab, added, merges)                                                                                \
    "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": " added ", \"model\": {\"type\": \"BPE\", \"vocab\": " vocab \
    ", \"merges\": " merges "}}"
    JSON_FAIL(GPT2("{\"a\": 0, \"b\": 0}", "[]", "[]"));                          /* id used twice */
    JSON_FAIL(GPT2("{\"a\": 0, \"a\": 1}", "[]", "[]"));                          /* key twice */
    JSON_FAIL(GPT2("{\"a\": 0, \"b\": -1}", "[]", "[]"));                         /* negative id */
    JSON_FAIL(GPT2("{\"a\": 0, \"b\": 99999999}", "[]", "[]"));                   /* id far past the vocabulary */
    JSON_FAIL(GPT2("{\"a\": 0, \"b\": 1.5}", "[]", "[]"));                        /* not an integer */
    JSON_FAIL(GPT2("{\"a\": 0, \"b\": \"1\"}", "[]", "[]"));                      /* not a number */
    JSON_FAIL(GPT2("{\"a\": 0}", "[{\"id\": 0, \"content\": \"x\"}]", "[]"));     /* added token clashes */
    JSON_FAIL(GPT2("{\"a\": 0}", "[{\"id\": 1e12, \"content\": \"x\"}]", "[]"));  /* added id too large */
    JSON_FAIL(GPT2("{\"a\": 0}", "[{\"content\": \"x\"}]", "[]"));                /* added token without id */
    JSON_FAIL(GPT2("{\"a\": 0}", "{}", "[]"));                                    /* added_tokens not a list */
    JSON_FAIL(GPT2("{\"a\": 0}", "[]", "[[\"a\"]]"));                             /* bad merge */
    JSON_FAIL(GPT2("{\"a\": 0}", "[]", "{}"));                                    /* merges not a list */
    JSON_FAIL(GPT2("{}", "[]", "[]"));                                            /* empty vocabulary */
    ck_assert_uint_eq(kv.n, 0);

    /* A small valid one, with a hole (id 2) that becomes [PAD2], and a ["a b", "c"] pair. */
    const char *good = GPT2("{\"a\": 0, \"b\": 1, \"ab\": 3}", "[{\"id\": 4, \"content\": \"<|x|>\", \"special\": false}]",
                            "[[\"a\", \"b\"], [\"a b\", \"c\"]]");
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_parse_json(&kv, good, strlen(good), name, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "gpt-2");
    uint64_t n;
    const meta_str *t = tokens_of(&kv, &n);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(t[2].s, "[PAD2]");
    ck_assert_int_eq(type_of(&kv, 2), TOKTYPE_UNUSED);
    ck_assert_int_eq(type_of(&kv, 4), TOKTYPE_CONTROL);
    const meta_str *m = meta_get_arr(&kv, "tokenizer.ggml.merges", GGUF_STR, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(m[0].s, "a b");
    ck_assert_str_eq(m[1].s, "a\xc4\xa0" "b c");

    /* tokenizer_config.json errors name the file too */
    EXPECT_FAIL(hf_tokenizer_parse_config_json(&kv, "{\"bos_token\": ", 14, "tokenizer_config.json", err),
                "tokenizer_config.json");
    EXPECT_FAIL(hf_tokenizer_parse_model_config(&kv, "nope", 4, "config.json", err), "config.json");
    meta_free(&kv);
#undef GPT2
#undef JSON_FAIL
}
END_TEST

/* A folder whose tokenizer.model is damaged fails naming that file (no tokenizer.json to fall
 * back on); with a tokenizer.json beside it, tokenizer.json is used. */
START_TEST(test_load_bad_files) {
    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    ck_assert_int_eq(write_bytes(p, "\x0a\x7f", 2), 0);
    meta kv;
    meta_init(&kv);
    EXPECT_FAIL(hf_tokenizer_load(&kv, dir, 0, err), "tokenizer.model");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    static const char js[] = "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    ck_assert_int_eq(write_bytes(p, js, strlen(js)), 0);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&kv, dir, 0, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "gpt2");
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    ck_assert_int_eq(write_bytes(p, "{,}", 3), 0);
    EXPECT_FAIL(hf_tokenizer_load(&kv, dir, 0, err), "tokenizer_config.json");
    meta_free(&kv);
    tmpdir_remove(dir);
}
END_TEST

/* ---- model families (llama.cpp's convert_hf_to_gguf.py per converter class) --------- */

/* dir/name holding root as JSON (root is stolen). */
static void put_json(const char *dir, const char *name, json_t *root) {
    ck_assert_ptr_nonnull(root);
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_int_eq(json_dump_file(root, p, JSON_INDENT(1)), 0);
    json_decref(root);
}

static void put_text(const char *dir, const char *name, const char *text) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_int_eq(write_bytes(p, text, strlen(text)), 0);
}

/* dir/name as a symbolic link to target (a ../shared file, not copied). */
static void put_link(const char *dir, const char *name, const char *target) {
    char p[4096], abs[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_ptr_nonnull(realpath(target, abs));
    ck_assert_int_eq(symlink(abs, p), 0);
}

/* config.json with the class llama.cpp's converter goes by, and vocab_size when > 0. */
static void put_config(const char *dir, const char *cls, int64_t vocab) {
    json_t *c = json_pack("{s:[s]}", "architectures", cls);
    if (vocab > 0) json_object_set_new(c, "vocab_size", json_integer(vocab));
    put_json(dir, "config.json", c);
}

static meta load_dir(const char *dir, int64_t n_vocab) {
    meta kv;
    meta_init(&kv);
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_load(&kv, dir, n_vocab, &err) == 0, "%s", err.msg);
    return kv;
}

static const char *text_of(const meta *kv, uint64_t id) {
    uint64_t n;
    const meta_str *t = tokens_of(kv, &n);
    ck_assert_uint_lt(id, n);
    return t[id].s;
}

static float score_of(const meta *kv, uint64_t id) {
    uint64_t n;
    const float *s = meta_get_arr(kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_lt(id, n);
    return s[id];
}

/* Phi-3 mini: its files are the Llama-2 tokenizer.model (the one books-22m ships) plus
 * added_tokens.json, tokenizer_config.json and config.json as Microsoft publishes them. Read
 * through Phi3MiniModel's rules they give every tokenizer key of llama.cpp's
 * ggml-vocab-phi-3.gguf, identical, but one thing: that file was made by the converter of
 * April 2024, which typed the "[PAD{i}]" fill UNKNOWN; today's converter (b4747 and later)
 * types it UNUSED, as we do. */
START_TEST(test_phi3_folder_matches_llama_cpp) {
    char *model = SHARED_OR_SKIP("models/books-22m/hf-bf16/tokenizer.model");
    char *gpath = SHARED_OR_SKIP("vocab/ggml-vocab-phi-3.gguf");
    slmc_err err = {{0}};
    gguf_file g;
    ck_assert_msg(gguf_open(&g, gpath, &err) == 0, "%s", err.msg);
    meta want;
    copy_tokenizer_keys(&want, &g.kv);
    gguf_close(&g);

    char *dir = tmpdir_make();
    put_link(dir, "tokenizer.model", model);
    static const char *const added[] = {"<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
                                        "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>",
                                        "<|placeholder5|>", "<|placeholder6|>", "<|user|>"};
    json_t *aj = json_object(), *dec = json_object();
    static const char *const first[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) { /* </s> is not special in Phi-3's tokenizer_config.json */
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        json_object_set_new(dec, id, json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", first[i], "lstrip", 0,
                                               "normalized", 0, "rstrip", i == 2, "single_word", 0, "special", i < 2));
    }
    for (int i = 0; i < 11; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", 32000 + i);
        json_object_set_new(aj, added[i], json_integer(32000 + i));
        json_object_set_new(dec, id, json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", added[i], "lstrip", 0,
                                               "normalized", 0, "rstrip", 1, "single_word", 0, "special", 1));
    }
    put_json(dir, "added_tokens.json", aj);
    json_t *tc = json_pack("{s:b, s:b, s:o, s:s, s:s, s:s, s:b, s:s, s:s, s:s}", "add_bos_token", 1, "add_eos_token", 0,
                           "added_tokens_decoder", dec, "bos_token", "<s>", "eos_token", "<|endoftext|>", "pad_token",
                           "<|endoftext|>", "legacy", 0, "tokenizer_class", "LlamaTokenizer", "unk_token", "<unk>",
                           "chat_template", meta_get_str(&want, "tokenizer.chat_template"));
    put_json(dir, "tokenizer_config.json", tc);
    put_json(dir, "config.json",
             json_pack("{s:[s], s:i, s:i, s:i, s:i}", "architectures", "Phi3ForCausalLM", "vocab_size", 32064,
                       "bos_token_id", 1, "eos_token_id", 32000, "pad_token_id", 32000));

    meta got = load_dir(dir, 32064);
    /* the one difference, explained above */
    uint64_t n;
    const int32_t *wt = meta_get_arr(&want, "tokenizer.ggml.token_type", GGUF_I32, &n);
    ck_assert_uint_eq(n, 32064);
    int32_t *types = malloc(n * sizeof *types);
    memcpy(types, wt, n * sizeof *types);
    int pads = 0;
    for (uint64_t i = 0; i < n; i++)
        if (strncmp(text_of(&want, i), "[PAD", 4) == 0 && types[i] == TOKTYPE_UNKNOWN) {
            types[i] = TOKTYPE_UNUSED;
            pads++;
        }
    ck_assert_int_eq(pads, 32064 - 32011);
    ck_assert_int_eq(meta_set_arr(&want, "tokenizer.ggml.token_type", GGUF_I32, n, types), 0);
    free(types);
    ck_assert(same_tokenizer_keys(&want, &got));
    ck_assert_int_eq(type_of(&got, 2), TOKTYPE_USER_DEFINED);
    ck_assert(score_of(&got, 2) == -1000.0f);

    meta_free(&got);
    meta_free(&want);
    tmpdir_remove(dir);
    free(gpath);
    free(model);
}
END_TEST

/* A small Gemma-style SentencePiece model (built with our own writer): its special pieces
 * <pad> <eos> <bos> <unk>, then <mask>, [@BOS@], <unused0..99>, <start_of_turn>,
 * <end_of_turn>, "\n" and "▁▁" as user-defined pieces, the 256 byte pieces and a few words. */
#define GEMMA_WORDS 12
static int gemma_pieces(const char **text, float *score, int32_t *type) {
    static char unused[100][24];
    int n = 0;
    static const char *const head[] = {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]"};
    static const int32_t head_type[] = {3, 3, 3, 2, 4, 4};
    for (int i = 0; i < 6; i++, n++) text[n] = head[i], type[n] = head_type[i], score[n] = 0;
    for (int i = 0; i < 100; i++, n++) {
        snprintf(unused[i], sizeof unused[i], "<unused%d>", i);
        text[n] = unused[i], type[n] = 4, score[n] = 0;
    }
    static const char *const turn[] = {"<start_of_turn>", "<end_of_turn>", "\n", "\xe2\x96\x81\xe2\x96\x81"};
    for (int i = 0; i < 4; i++, n++) text[n] = turn[i], type[n] = 4, score[n] = 0; /* 106..109 */
    static char bytes[256][16];
    for (int b = 0; b < 256; b++, n++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        text[n] = bytes[b], type[n] = 6, score[n] = 0;
    }
    static const char *const words[GEMMA_WORDS] = {"user", "hi", "us", "er", "\xe2\x96\x81hi", "\xe2\x96\x81",
                                                   "u",    "s",  "e",  "r",  "h",               "i"};
    for (int i = 0; i < GEMMA_WORDS; i++, n++) text[n] = words[i], type[n] = 1, score[n] = -1.0f - (float)i;
    return n; /* 378 */
}

static void put_gemma_model(const char *dir) {
    const char *text[400];
    float score[400];
    int32_t type[400];
    int n = gemma_pieces(text, score, type);
    uint64_t lens[400];
    for (int i = 0; i < n; i++) lens[i] = strlen(text[i]);
    meta kv;
    meta_init(&kv);
    ck_assert_int_eq(meta_set_str(&kv, "tokenizer.ggml.model", "llama"), 0);
    ck_assert_int_eq(meta_set_arr_str(&kv, "tokenizer.ggml.tokens", (uint64_t)n, text, lens), 0);
    ck_assert_int_eq(meta_set_arr(&kv, "tokenizer.ggml.scores", GGUF_F32, (uint64_t)n, score), 0);
    ck_assert_int_eq(meta_set_arr(&kv, "tokenizer.ggml.token_type", GGUF_I32, (uint64_t)n, type), 0);
    ck_assert_int_eq(meta_set_bool(&kv, "tokenizer.ggml.add_space_prefix", false), 0);
    uint8_t *buf;
    size_t len;
    slmc_err err = {{0}};
    ck_assert_msg(hf_tokenizer_build_spm(&kv, &buf, &len, &err) == 0, "%s", err.msg);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    ck_assert_int_eq(write_bytes(p, buf, len), 0);
    free(buf);
    meta_free(&kv);
}

/* tokenizer_config.json as Gemma's: added_tokens_decoder lists the user-defined pieces too,
 * with special false for <mask>, [@BOS@], <unusedN> (llama.cpp's does_token_look_special makes
 * them CONTROL), "\n" and "▁▁" (USER_DEFINED, "▁" pre-normalized to a space). */
static void put_gemma_config(const char *dir, int extra_id) {
    json_t *dec = json_object();
    const char *text[400];
    float score[400];
    int32_t type[400];
    gemma_pieces(text, score, type);
    for (int i = 0; i < 110; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        bool special = i < 4 || i == 106 || i == 107;
        json_object_set_new(dec, id, json_pack("{s:s, s:b, s:b}", "content", text[i], "normalized", 0, "special", special));
    }
    if (extra_id > 0) {
        char id[16];
        snprintf(id, sizeof id, "%d", extra_id);
        json_object_set_new(dec, id, json_pack("{s:s, s:b}", "content", "<image_soft_token>", "special", 1));
    }
    put_json(dir, "tokenizer_config.json",
             json_pack("{s:b, s:b, s:o, s:s, s:s, s:s, s:s, s:s}", "add_bos_token", 1, "add_eos_token", 0,
                       "added_tokens_decoder", dec, "bos_token", "<bos>", "eos_token", "<eos>", "pad_token", "<pad>",
                       "unk_token", "<unk>", "tokenizer_class", "GemmaTokenizer"));
}

/* Gemma 1/2/3: SentencePiece, add_space_prefix false (GemmaModel / Gemma2Model / Gemma3Model
 * write it), eot_token_id 107 for Gemma 1 only; Gemma 3 adds <image_soft_token> past the
 * pieces (added_tokens.json, then added_tokens_decoder makes it CONTROL). The runtime
 * tokenizer then encodes a chat turn as llama.cpp does: no space prefix, control tokens and
 * user-defined "\n" cut out, <end_of_turn> ends generation. */
START_TEST(test_gemma_folders) {
    static const char *const classes[] = {"GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForConditionalGeneration"};
    for (int c = 0; c < 3; c++) {
        char *dir = tmpdir_make();
        put_gemma_model(dir);
        int n_pieces = 6 + 100 + 4 + 256 + GEMMA_WORDS, n_vocab = c == 2 ? n_pieces + 8 : n_pieces;
        put_gemma_config(dir, c == 2 ? n_pieces : 0);
        put_config(dir, classes[c], n_vocab);
        if (c == 2) put_json(dir, "added_tokens.json", json_pack("{s:i}", "<image_soft_token>", n_pieces));

        meta kv = load_dir(dir, n_vocab);
        ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "llama");
        ck_assert(!bool_of(&kv, "tokenizer.ggml.add_space_prefix"));
        ck_assert(bool_of(&kv, "tokenizer.ggml.add_bos_token"));
        ck_assert(!bool_of(&kv, "tokenizer.ggml.add_eos_token"));
        ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 2);
        ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 1);
        ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.padding_token_id"), 0);
        ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.unknown_token_id"), 3);
        if (c == 0) ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eot_token_id"), 107);
        else ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.eot_token_id"));
        ck_assert_int_eq(type_of(&kv, 3), TOKTYPE_CONTROL); /* listed special in the decoder */
        ck_assert_int_eq(type_of(&kv, 4), TOKTYPE_CONTROL); /* <mask> looks special */
        ck_assert_int_eq(type_of(&kv, 5), TOKTYPE_CONTROL); /* [@BOS@] */
        ck_assert_int_eq(type_of(&kv, 6), TOKTYPE_CONTROL); /* <unused0> */
        ck_assert_int_eq(type_of(&kv, 106), TOKTYPE_CONTROL);
        ck_assert_int_eq(type_of(&kv, 107), TOKTYPE_CONTROL);
        ck_assert_int_eq(type_of(&kv, 108), TOKTYPE_USER_DEFINED);
        ck_assert_int_eq(type_of(&kv, 109), TOKTYPE_USER_DEFINED);
        ck_assert_str_eq(text_of(&kv, 109), "  ");
        ck_assert(score_of(&kv, 109) == -1000.0f);
        ck_assert_int_eq(type_of(&kv, 110), TOKTYPE_BYTE);
        if (c == 2) {
            ck_assert_str_eq(text_of(&kv, (uint64_t)n_pieces), "<image_soft_token>");
            ck_assert_int_eq(type_of(&kv, (uint64_t)n_pieces), TOKTYPE_CONTROL);
            ck_assert_int_eq(type_of(&kv, (uint64_t)n_pieces + 1), TOKTYPE_UNUSED);
        }

        tokenizer *t = NULL;
        slmc_err err = {{0}};
        ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
        static const char chat[] = "<start_of_turn>user\nhi<end_of_turn>";
        int32_t *ids = NULL;
        size_t n_ids = 0;
        ck_assert_msg(tokenizer_encode(t, chat, strlen(chat), true, true, &ids, &n_ids, &err) == 0, "%s", err.msg);
        int32_t user = (int32_t)id_of(&kv, "user"), hi = (int32_t)id_of(&kv, "hi");
        const int32_t want[] = {2, 106, user, 108, hi, 107};
        ck_assert_uint_eq(n_ids, 6);
        ck_assert_mem_eq(ids, want, sizeof want);
        free(ids);
        /* "  " is a user-defined token: always cut out, even without parse_special */
        ck_assert_int_eq(tokenizer_encode(t, "hi  hi", 6, false, false, &ids, &n_ids, &err), 0);
        ck_assert_uint_eq(n_ids, 3);
        ck_assert_int_eq(ids[0], hi);
        ck_assert_int_eq(ids[1], 109);
        ck_assert_int_eq(ids[2], hi);
        free(ids);
        ck_assert(tokenizer_is_eog(t, 107));
        ck_assert(tokenizer_is_eog(t, 1));
        ck_assert(!tokenizer_is_eog(t, 106));
        ck_assert(!tokenizer_is_eog(t, 2));
        tokenizer_free(t);
        meta_free(&kv);
        tmpdir_remove(dir);
    }
}
END_TEST

/* A byte-level tokenizer.json with the given pre_tokenizer (JSON text), a few tokens, and
 * <|endoftext|> as special added token 8. */
static void put_bpe_json(const char *dir, const char *pre_tokenizer) {
    char js[4096];
    snprintf(js, sizeof js,
             "{\"added_tokens\": [{\"id\": 8, \"content\": \"<|endoftext|>\", \"special\": true}],"
             " \"normalizer\": null, \"pre_tokenizer\": %s,"
             " \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"1\": 3, \"2\": 4,"
             " \"\\u0120\": 5, \"ab\": 6, \"\\u0120a\": 7}, \"merges\": [\"a b\", \"\\u0120 a\"]}}",
             pre_tokenizer);
    put_text(dir, "tokenizer.json", js);
}

#define PRE_SPLIT(regex)                                                                                   \
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"" regex "\"}," \
    " \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false,"    \
    " \"trim_offsets\": true, \"use_regex\": false}]}"
#define RE_JSON_QWEN2 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"
/* o200k as Xenova/gpt-4o's tokenizer.json (llama.cpp's "gpt-4o" reference) writes it */
#define RE_JSON_O200K                                                                                          \
    "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
    "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"
#define PRE_BYTELEVEL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}"
#define PRE_DIGITS                                                                                     \
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}," \
    " " PRE_BYTELEVEL "]}"

/* The byte-level families, each from a small folder: the pre-tokenizer llama.cpp's hash would
 * name (recognized from the pre-tokenizer and the family) and the flags its converter class
 * writes; then GGUF -> HF -> GGUF keeps every key. */
START_TEST(test_bpe_families) {
    static const struct {
        const char *cls, *pre_tokenizer, *tokenizer_config, *pre;
        int64_t vocab;
        int add_bos;  /* -1: no key */
        bool prefix;  /* add_space_prefix key kept */
    } cases[] = {
        /* SmolLM 1/2: LlamaModel, vocab_size 49152 -> add_bos_token false */
        {"LlamaForCausalLM", PRE_DIGITS, "{\"add_prefix_space\": false, \"bos_token\": \"<|endoftext|>\"}", "smollm", 49152, 0, true},
        /* the same files without config.json: recognized by structure alone */
        {NULL, PRE_DIGITS, "{}", "smollm", 0, -1, false},
        /* Phi-2 (CodeGen tokenizer): bare ByteLevel -> "phi-2", Phi2Model writes add_bos false */
        {"PhiForCausalLM", PRE_BYTELEVEL, "{\"add_prefix_space\": false, \"bos_token\": \"<|endoftext|>\"}", "phi-2", 51200, 0, false},
        {NULL, PRE_BYTELEVEL, "{}", "gpt-2", 0, -1, false},
        /* StableLM 2 (Arcade100k): Qwen2's split -> "stablelm2" */
        {"StableLmForCausalLM", PRE_SPLIT(RE_JSON_QWEN2), "{\"add_prefix_space\": false}", "stablelm2", 100352, -1, false},
        /* Qwen3 (Qwen2Model): "qwen2", no add_space_prefix */
        {"Qwen3ForCausalLM", PRE_SPLIT(RE_JSON_QWEN2), "{\"add_bos_token\": false, \"add_prefix_space\": false}", "qwen2", 0, 0, false},
        /* Phi-4-mini: Phi3ForCausalLM with a GPT2Tokenizer -> byte-level BPE, o200k -> "gpt-4o" */
        {"Phi3ForCausalLM", PRE_SPLIT(RE_JSON_O200K), "{\"tokenizer_class\": \"GPT2Tokenizer\", \"add_bos_token\": false}", "gpt-4o", 200064, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tmpdir_make();
        put_bpe_json(dir, cases[i].pre_tokenizer);
        put_text(dir, "tokenizer_config.json", cases[i].tokenizer_config);
        if (cases[i].cls) put_config(dir, cases[i].cls, cases[i].vocab);
        /* Phi-4-mini: a tokenizer.model beside tokenizer.json is not read (GPT2Tokenizer) */
        if (strcmp(cases[i].pre, "gpt-4o") == 0) put_text(dir, "tokenizer.model", "not sentencepiece");
        meta kv = load_dir(dir, cases[i].vocab);
        ck_assert_msg(strcmp(meta_get_str(&kv, "tokenizer.ggml.pre"), cases[i].pre) == 0, "case %zu: pre %s", i,
                      meta_get_str(&kv, "tokenizer.ggml.pre"));
        ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.model"), "gpt2");
        bool b;
        if (cases[i].add_bos < 0) ck_assert_msg(!meta_get_bool(&kv, "tokenizer.ggml.add_bos_token", &b), "case %zu", i);
        else ck_assert_msg(bool_of(&kv, "tokenizer.ggml.add_bos_token") == (cases[i].add_bos == 1), "case %zu", i);
        ck_assert_msg(meta_get_bool(&kv, "tokenizer.ggml.add_space_prefix", &b) == cases[i].prefix, "case %zu", i);
        uint64_t n;
        tokens_of(&kv, &n);
        ck_assert_uint_eq(n, cases[i].vocab > 9 ? (uint64_t)cases[i].vocab : 9);
        ck_assert_int_eq(type_of(&kv, 8), TOKTYPE_CONTROL);
        /* the runtime tokenizer takes every one of these pre names */
        tokenizer *t = NULL;
        slmc_err err = {{0}};
        ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "case %zu: %s", i, err.msg);
        tokenizer_free(t);

        /* GGUF -> HF -> GGUF: the writer's pre-tokenizer reads back as the same pre */
        char *out = tmpdir_make();
        ck_assert_msg(hf_tokenizer_write(&kv, out, &err) == 0, "%s", err.msg);
        if (cases[i].cls) put_config(out, cases[i].cls, cases[i].vocab);
        meta back = load_dir(out, cases[i].vocab);
        ck_assert_msg(same_tokenizer_keys(&kv, &back), "case %zu", i);
        meta_free(&back);
        tmpdir_remove(out);
        meta_free(&kv);
        tmpdir_remove(dir);
    }
}
END_TEST

/* The shared Qwen3 and Llama 3 tokenizers in folders with their config.json: Qwen3's bos id
 * comes from config.json (tokenizer_config.json says null), as SpecialVocab does; no
 * add_space_prefix (only LlamaModel copies add_prefix_space); Llama 3.1's list of eos ids in
 * config.json is skipped, tokenizer_config.json's eos_token stands. The runtime tokenizer ends
 * generation on the end-of-turn tokens llama.cpp does. */
START_TEST(test_qwen3_llama3_folders) {
    char *qj = SHARED_OR_SKIP("tokenizers/qwen3-hf/tokenizer.json");
    char *qc = SHARED_OR_SKIP("tokenizers/qwen3-hf/tokenizer_config.json");
    char *lj = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer.json");
    char *lc = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer_config.json");
    char *dir = tmpdir_make();
    put_link(dir, "tokenizer.json", qj);
    put_link(dir, "tokenizer_config.json", qc);
    put_json(dir, "config.json",
             json_pack("{s:[s], s:i, s:i, s:i}", "architectures", "Qwen3ForCausalLM", "vocab_size", 151936,
                       "bos_token_id", 151643, "eos_token_id", 151645));
    meta kv = load_dir(dir, 151936);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "qwen2");
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 151643);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 151645);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.padding_token_id"), 151643);
    ck_assert(!bool_of(&kv, "tokenizer.ggml.add_bos_token"));
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.add_space_prefix"));
    tokenizer *t = NULL;
    slmc_err err = {{0}};
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    ck_assert(!tokenizer_add_bos(t));
    /* llama.cpp's EOG set for this vocabulary: <|endoftext|> <|im_end|> <|fim_pad|> <|repo_name|> <|file_sep|> */
    static const int32_t eog[] = {151643, 151645, 151662, 151663, 151664};
    for (size_t i = 0; i < 5; i++) ck_assert_msg(tokenizer_is_eog(t, eog[i]), "%d", eog[i]);
    ck_assert(!tokenizer_is_eog(t, 151644)); /* <|im_start|> */
    ck_assert(!tokenizer_is_eog(t, 151667)); /* <think> */
    ck_assert(!tokenizer_is_eog(t, 151669)); /* [PAD151669] */
    tokenizer_free(t);
    meta_free(&kv);
    tmpdir_remove(dir);

    dir = tmpdir_make();
    put_link(dir, "tokenizer.json", lj);
    put_link(dir, "tokenizer_config.json", lc);
    put_json(dir, "config.json",
             json_pack("{s:[s], s:i, s:i, s:[i,i,i]}", "architectures", "LlamaForCausalLM", "vocab_size", 128256,
                       "bos_token_id", 128000, "eos_token_id", 128001, 128008, 128009));
    kv = load_dir(dir, 128256);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), "llama-bpe");
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.bos_token_id"), 128000);
    ck_assert_uint_eq(u64_of(&kv, "tokenizer.ggml.eos_token_id"), 128001);
    ck_assert_ptr_null(meta_find(&kv, "tokenizer.ggml.add_bos_token"));
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    ck_assert(tokenizer_add_bos(t)); /* llama-bpe's default */
    ck_assert_int_eq(tokenizer_bos(t), 128000);
    ck_assert(tokenizer_is_eog(t, 128001)); /* <|end_of_text|> */
    ck_assert(!tokenizer_is_eog(t, 128008)); /* Llama 3.0's <|reserved_special_token_4|> (3.1: <|eom_id|>) */
    ck_assert(tokenizer_is_eog(t, 128009)); /* <|eot_id|> */
    ck_assert(!tokenizer_is_eog(t, 128000));
    ck_assert(!tokenizer_is_eog(t, 128006)); /* <|start_header_id|> */
    tokenizer_free(t);
    meta_free(&kv);
    tmpdir_remove(dir);
    free(lc);
    free(lj);
    free(qc);
    free(qj);
}
END_TEST

static Suite *hf_tokenizer_suite(void) {
    Suite *s = suite_create("hf_tokenizer");
    TCase *tc = tcase_create("spm");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_spm_books22m_pieces);
    tcase_add_test(tc, test_spm_matches_llama_cpp_vocab);
    tcase_add_test(tc, test_load_books22m_folder);
    tcase_add_test(tc, test_spm_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_llama3_json);
    tcase_add_test(tc, test_qwen3_json);
    tcase_add_test(tc, test_llama3_round_trip);
    tcase_add_test(tc, test_qwen3_round_trip);
    tcase_add_test(tc, test_byte_fallback_json);
    tcase_add_test(tc, test_no_tokenizer_files);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_spm_malformed);
    tcase_add_test(tc, test_spm_truncations_and_flips);
    tcase_add_test(tc, test_json_malformed);
    tcase_add_test(tc, test_load_bad_files);
    suite_add_tcase(s, tc);
    tc = tcase_create("families");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_phi3_folder_matches_llama_cpp);
    tcase_add_test(tc, test_gemma_folders);
    tcase_add_test(tc, test_bpe_families);
    tcase_add_test(tc, test_qwen3_llama3_folders);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(hf_tokenizer_suite()); }
