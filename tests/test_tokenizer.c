/* test_tokenizer.c - the built-in tokenizer against llama.cpp's tokenizer test vectors.
 *
 * ../shared/vocab holds llama.cpp's tests/test-tokenizer-0 data: ggml-vocab-NAME.gguf.inp (texts
 * separated by "\n__ggml_vocab_test__\n") and .out (one line of expected ids per text). Like
 * test-tokenizer-0.cpp we tokenize each text with add_special = false, parse_special = false
 * and require the exact ids. llama-spm, phi-3 and gpt-2 use llama.cpp's vocabulary GGUF;
 * llama-bpe and qwen2 (whose GGUF is not shipped) are built from the Llama 3 and Qwen3
 * tokenizer.json through formats/hf_tokenizer. Every pair in the folder must be one of these.
 * The same vectors run again through Hugging Face folders of the families that use each
 * vocabulary (Llama, Phi-3, Phi-2, Llama 3, Qwen3, StableLM 2), read by hf_tokenizer_load.
 * Also: each pre-tokenizer's splits on a small made-up vocabulary, end-of-generation tokens,
 * round trips through the pieces, the stories260K llama2.c vocabulary, special tokens, bad
 * metadata and the speed on WikiText-2. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eval/tokenizer.h"
#include "formats/gguf.h"
#include "formats/hf_tokenizer.h"
#include "formats/llama2c.h"
#include "formats/meta.h"
#include "formats/model.h"
#include "testutil.h"

/* ---- helpers -------------------------------------------------------------------------- */

/* A tokenizer from a vocabulary GGUF. */
static tokenizer *tok_from_gguf(const char *path) {
    gguf_file f;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&f, path, &err) == 0, "%s", err.msg);
    tokenizer *t = NULL;
    ck_assert_msg(tokenizer_create(&t, &f.kv, &err) == 0, "%s", err.msg);
    gguf_close(&f);
    return t;
}

/* A tokenizer from a HF folder's tokenizer.json + tokenizer_config.json. */
static tokenizer *tok_from_hf(const char *json_path, const char *config_path) {
    slmc_err err = {{0}};
    meta kv;
    meta_init(&kv);
    size_t len = 0;
    uint8_t *json = slurp(json_path, &len);
    ck_assert_ptr_nonnull(json);
    ck_assert_msg(hf_tokenizer_parse_json(&kv, (const char *)json, len, json_path, &err) == 0, "%s", err.msg);
    free(json);
    json = slurp(config_path, &len);
    ck_assert_ptr_nonnull(json);
    ck_assert_msg(hf_tokenizer_parse_config_json(&kv, (const char *)json, len, config_path, &err) == 0, "%s", err.msg);
    free(json);
    tokenizer *t = NULL;
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    meta_free(&kv);
    return t;
}

/* Print ids with their pieces, for a mismatch report. */
static void print_ids(const tokenizer *t, const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        int l = tokenizer_piece(t, ids[i], buf, sizeof buf);
        fprintf(stderr, " %d'%.*s'", ids[i], l < 0 ? 0 : l, buf);
    }
    fprintf(stderr, "\n");
}

/* Run every vector of NAME.gguf.inp/.out through t; returns how many match, prints the first
 * mismatch (text, expected, got) and the totals. *n_total receives the vector count. */
static int run_vectors(const tokenizer *t, const char *name, const char *inp_path, const char *out_path, int *n_total) {
    size_t ni = 0, no = 0;
    char *inp = (char *)slurp(inp_path, &ni);
    char *out = (char *)slurp(out_path, &no);
    ck_assert_ptr_nonnull(inp);
    ck_assert_ptr_nonnull(out);

    static const char SEP[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof SEP - 1;
    int total = 0, pass = 0;
    bool reported = false;
    size_t pos = 0;     /* in inp */
    char *line = out;   /* current line of out */
    char *out_end = out + no;
    while (pos < ni) {
        /* the next text: up to the separator, or the rest of the file (test-tokenizer-0.cpp's split) */
        const char *next = memmem(inp + pos, ni - pos, SEP, sep_len);
        size_t tlen = next ? (size_t)(next - (inp + pos)) : ni - pos;
        const char *text = inp + pos;
        pos = next ? pos + tlen + sep_len : ni;

        /* its expected ids: one line of out */
        ck_assert_msg(line < out_end, "%s: fewer lines in .out than texts in .inp", name);
        char *eol = memchr(line, '\n', (size_t)(out_end - line));
        if (!eol) eol = out_end;
        int32_t want[4096];
        size_t n_want = 0;
        for (char *p = line; p < eol;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                p++;
                continue;
            }
            ck_assert(n_want < 4096);
            want[n_want++] = (int32_t)v;
            p = end;
        }
        line = eol < out_end ? eol + 1 : out_end;

        int32_t *got = NULL;
        size_t n_got = 0;
        slmc_err err = {{0}};
        ck_assert_msg(tokenizer_encode(t, text, tlen, false, false, &got, &n_got, &err) == 0, "%s", err.msg);
        bool same = n_got == n_want && (n_got == 0 || memcmp(got, want, n_got * sizeof *got) == 0);
        total++;
        if (same) pass++;
        else if (!reported) {
            reported = true;
            fprintf(stderr, "%s: first mismatch, vector %d, text \"%.*s\"\n", name, total, (int)tlen, text);
            print_ids(t, "expected", want, n_want);
            print_ids(t, "got     ", got, n_got);
        }
        free(got);
    }
    free(inp);
    free(out);
    fprintf(stderr, "%s: %d/%d vectors identical to llama.cpp\n", name, pass, total);
    *n_total = total;
    return pass;
}

static void check_vocab_gguf(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    char *gguf = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
    char *inp = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
    char *out = SHARED_OR_SKIP(rel);
    tokenizer *t = tok_from_gguf(gguf);
    int total = 0, pass = run_vectors(t, name, inp, out, &total);
    ck_assert_int_eq(total, 46);
    ck_assert_int_eq(pass, total);
    tokenizer_free(t);
    free(gguf);
    free(inp);
    free(out);
}

static void check_vocab_hf(const char *name, const char *hf_dir) {
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", hf_dir);
    char *json = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer_config.json", hf_dir);
    char *cfg = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
    char *inp = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
    char *out = SHARED_OR_SKIP(rel);
    tokenizer *t = tok_from_hf(json, cfg);
    int total = 0, pass = run_vectors(t, name, inp, out, &total);
    ck_assert_int_eq(total, 46);
    ck_assert_int_eq(pass, total);
    tokenizer_free(t);
    free(json);
    free(cfg);
    free(inp);
    free(out);
}

/* The vocabularies whose vectors this file checks. */
static const char *const CHECKED[] = {"llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2"};

static void put_file(const char *dir, const char *name, const char *text) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_int_eq(write_bytes(p, text, strlen(text)), 0);
}

/* dir/name as a symbolic link to a ../shared file (not copied). */
static void put_link(const char *dir, const char *name, const char *target) {
    char p[4096], abs[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_ptr_nonnull(realpath(target, abs));
    ck_assert_int_eq(symlink(abs, p), 0);
}

/* NAME's vectors through a Hugging Face folder of the family `cls` (its config.json class):
 * the GGUF vocabulary written out as HF files by hf_tokenizer_write, or links to the shared
 * tokenizer.json + tokenizer_config.json; read back by hf_tokenizer_load as `slmc convert`
 * reads a folder, which must name pre-tokenizer want_pre. */
static void check_vocab_family(const char *name, const char *hf_dir, const char *cls, int64_t n_vocab, const char *want_pre) {
    char rel[256];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
    char *inp = SHARED_OR_SKIP(rel);
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
    char *out = SHARED_OR_SKIP(rel);
    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    slmc_err err = {{0}};
    meta kv;
    meta_init(&kv);
    if (!hf_dir) {
        snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
        char *gguf = SHARED_OR_SKIP(rel);
        gguf_file g;
        ck_assert_msg(gguf_open(&g, gguf, &err) == 0, "%s", err.msg);
        ck_assert_msg(hf_tokenizer_write(&g.kv, dir, &err) == 0, "%s", err.msg);
        /* general.name as the GGUF has it (llama.cpp keys Phi-3's RSTRIP on it) */
        const char *gname = meta_get_str(&g.kv, "general.name");
        if (gname) ck_assert_int_eq(meta_set_str(&kv, "general.name", gname), 0);
        gguf_close(&g);
        free(gguf);
    } else {
        snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", hf_dir);
        char *json = SHARED_OR_SKIP(rel);
        snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer_config.json", hf_dir);
        char *cfg = SHARED_OR_SKIP(rel);
        put_link(dir, "tokenizer.json", json);
        put_link(dir, "tokenizer_config.json", cfg);
        free(json);
        free(cfg);
    }
    char config[256];
    snprintf(config, sizeof config, "{\"architectures\": [\"%s\"], \"vocab_size\": %lld}", cls, (long long)n_vocab);
    put_file(dir, "config.json", config);
    ck_assert_msg(hf_tokenizer_load(&kv, dir, n_vocab, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(meta_get_str(&kv, "tokenizer.ggml.pre"), want_pre);
    tokenizer *t = NULL;
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    char label[128];
    snprintf(label, sizeof label, "%s via a %s folder (pre %s)", name, cls, want_pre);
    int total = 0, pass = run_vectors(t, label, inp, out, &total);
    ck_assert_int_eq(total, 46);
    ck_assert_int_eq(pass, total);
    tokenizer_free(t);
    meta_free(&kv);
    tmpdir_remove(dir);
    free(inp);
    free(out);
}

/* The pieces (joined by '|') a "gpt2" vocabulary with pre-tokenizer `pre` makes of the ASCII
 * text. The vocabulary holds the printable ASCII characters, "Ġ" (space), "Ċ" (newline) and
 * the given words with every prefix, each word reached by merging left to right (earlier words
 * rank first): a pre-tokenizer piece that is one of the words comes out as one token, anything
 * else falls apart. So the result shows how `pre` splits the text. */
static void split_with(const char *pre, const char *const *words, size_t n_words, const char *text, char *res, size_t cap) {
    char *tok[1024], *mrg[1024];
    size_t nt = 0, nm = 0;
    char buf[256];
    for (int c = 0x21; c < 0x7f; c++) {
        buf[0] = (char)c;
        buf[1] = 0;
        tok[nt++] = strdup(buf);
    }
    tok[nt++] = strdup("\xc4\xa0");
    tok[nt++] = strdup("\xc4\x8a");
    for (size_t w = 0; w < n_words; w++) {
        char bl[128]; /* the word in byte-level characters */
        size_t k = 0;
        for (const char *p = words[w]; *p; p++) {
            if (*p == ' ') k += (size_t)snprintf(bl + k, sizeof bl - k, "\xc4\xa0");
            else if (*p == '\n') k += (size_t)snprintf(bl + k, sizeof bl - k, "\xc4\x8a");
            else bl[k++] = *p;
        }
        bl[k] = 0;
        size_t first = (unsigned char)bl[0] >= 0x80 ? 2 : 1;
        for (size_t end = first; end < k;) {
            size_t cl = (unsigned char)bl[end] >= 0x80 ? 2 : 1;
            snprintf(buf, sizeof buf, "%.*s %.*s", (int)end, bl, (int)cl, bl + end);
            ck_assert_uint_lt(nm, 1024);
            mrg[nm++] = strdup(buf);
            end += cl;
            snprintf(buf, sizeof buf, "%.*s", (int)end, bl);
            bool dup = false;
            for (size_t i = 0; i < nt && !dup; i++) dup = strcmp(tok[i], buf) == 0;
            ck_assert_uint_lt(nt, 1024);
            if (!dup) tok[nt++] = strdup(buf);
        }
    }
    const char *ts[1024], *ms[1024];
    uint64_t tl[1024], ml[1024];
    int32_t types[1024];
    for (size_t i = 0; i < nt; i++) ts[i] = tok[i], tl[i] = strlen(tok[i]), types[i] = 1;
    for (size_t i = 0; i < nm; i++) ms[i] = mrg[i], ml[i] = strlen(mrg[i]);
    meta kv;
    meta_init(&kv);
    ck_assert_int_eq(meta_set_str(&kv, "tokenizer.ggml.model", "gpt2"), 0);
    ck_assert_int_eq(meta_set_str(&kv, "tokenizer.ggml.pre", pre), 0);
    ck_assert_int_eq(meta_set_arr_str(&kv, "tokenizer.ggml.tokens", nt, ts, tl), 0);
    ck_assert_int_eq(meta_set_arr(&kv, "tokenizer.ggml.token_type", GGUF_I32, nt, types), 0);
    ck_assert_int_eq(meta_set_arr_str(&kv, "tokenizer.ggml.merges", nm, ms, ml), 0);
    tokenizer *t = NULL;
    slmc_err err = {{0}};
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s: %s", pre, err.msg);
    int32_t *ids = NULL;
    size_t n = 0, o = 0;
    ck_assert_msg(tokenizer_encode(t, text, strlen(text), false, false, &ids, &n, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        if (i) res[o++] = '|';
        int l = tokenizer_piece(t, ids[i], res + o, cap - o - 2);
        ck_assert_int_ge(l, 0);
        o += (size_t)l;
    }
    res[o] = 0;
    free(ids);
    tokenizer_free(t);
    meta_free(&kv);
    for (size_t i = 0; i < nt; i++) free(tok[i]);
    for (size_t i = 0; i < nm; i++) free(mrg[i]);
}

/* Concatenated pieces of ids (malloc'd, NUL-terminated); *len receives the length. */
static char *detokenize(const tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = n * tokenizer_max_piece(t) + 1, o = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < n; i++) {
        int l = tokenizer_piece(t, ids[i], s + o, cap - o);
        CK_ASSERT_QUIET(l >= 0, "token %d has no piece", ids[i]);
        o += (size_t)l;
    }
    s[o] = 0;
    *len = o;
    return s;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- llama.cpp test vectors ----------------------------------------------------------- */

START_TEST(test_vectors_llama_spm) { check_vocab_gguf("llama-spm"); }
END_TEST

START_TEST(test_vectors_phi3) { check_vocab_gguf("phi-3"); }
END_TEST

START_TEST(test_vectors_gpt2) { check_vocab_gguf("gpt-2"); }
END_TEST

START_TEST(test_vectors_llama_bpe) { check_vocab_hf("llama-bpe", "llama3-hf"); }
END_TEST

START_TEST(test_vectors_qwen2) { check_vocab_hf("qwen2", "qwen3-hf"); }
END_TEST

/* Every .inp/.out pair in ../shared/vocab is one of the vocabularies checked above. */
START_TEST(test_vectors_all_checked) {
    char *dir = SHARED_OR_SKIP("vocab");
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        static const char pre[] = "ggml-vocab-", suf[] = ".gguf.inp";
        if (l <= strlen(pre) + strlen(suf) || strncmp(e->d_name, pre, strlen(pre)) != 0 ||
            strcmp(e->d_name + l - strlen(suf), suf) != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(l - strlen(pre) - strlen(suf)), e->d_name + strlen(pre));
        bool checked = false;
        for (size_t i = 0; i < sizeof CHECKED / sizeof CHECKED[0]; i++) checked |= strcmp(name, CHECKED[i]) == 0;
        ck_assert_msg(checked, "../shared/vocab/%s has no check in test_tokenizer.c", e->d_name);
        char rel[512];
        snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
        char *out = shared_path(rel);
        ck_assert_msg(out != NULL, "../shared/%s is missing", rel);
        free(out);
        found++;
    }
    closedir(d);
    ck_assert_int_eq(found, (int)(sizeof CHECKED / sizeof CHECKED[0]));
    free(dir);
}
END_TEST

/* The same vectors through Hugging Face folders of the families that use each vocabulary. */
START_TEST(test_vectors_llama_spm_llama_folder) { check_vocab_family("llama-spm", NULL, "LlamaForCausalLM", 32000, "default"); }
END_TEST

START_TEST(test_vectors_phi3_phi3_folder) { check_vocab_family("phi-3", NULL, "Phi3ForCausalLM", 32064, "default"); }
END_TEST

/* Phi-2's tokenizer is GPT-2's vocabulary (plus whitespace-run tokens); llama.cpp names its
 * pre-tokenizer "phi-2", with GPT-2's regex. */
START_TEST(test_vectors_gpt2_phi2_folder) { check_vocab_family("gpt-2", NULL, "PhiForCausalLM", 50257, "phi-2"); }
END_TEST

START_TEST(test_vectors_llama_bpe_llama3_folder) {
    check_vocab_family("llama-bpe", "llama3-hf", "LlamaForCausalLM", 128256, "llama-bpe");
}
END_TEST

START_TEST(test_vectors_qwen2_qwen3_folder) { check_vocab_family("qwen2", "qwen3-hf", "Qwen3ForCausalLM", 151936, "qwen2"); }
END_TEST

/* StableLM 2's Arcade100k splits with Qwen2's regex; llama.cpp names it "stablelm2". The Qwen
 * vocabulary under that name must give the qwen2 vectors. */
START_TEST(test_vectors_qwen2_stablelm2_folder) {
    check_vocab_family("qwen2", "qwen3-hf", "StableLmForCausalLM", 151936, "stablelm2");
}
END_TEST

/* How each pre-tokenizer splits: digits one by one (smollm, qwen2, stablelm2), in runs of up
 * to three (llama-bpe, gpt-4o), or with the word (gpt-2, phi-2); o200k (gpt-4o) also splits
 * "HelloWorld" at the case change and keeps "'t" with its word. */
START_TEST(test_pre_splits) {
    static const char *const digit_words[] = {" 123", "123", "abc"};
    static const struct {
        const char *pre, *want;
    } digits[] = {
        {"gpt-2", "abc| 123|4|5"},     {"phi-2", "abc| 123|4|5"},     {"smollm", "abc| |1|2|3|4|5"},
        {"qwen2", "abc| |1|2|3|4|5"},  {"stablelm2", "abc| |1|2|3|4|5"}, {"llama-bpe", "abc| |123|4|5"},
        {"gpt-4o", "abc| |123|4|5"},
    };
    char res[512];
    for (size_t i = 0; i < sizeof digits / sizeof digits[0]; i++) {
        split_with(digits[i].pre, digit_words, 3, "abc 12345", res, sizeof res);
        ck_assert_msg(strcmp(res, digits[i].want) == 0, "%s: \"%s\", want \"%s\"", digits[i].pre, res, digits[i].want);
    }
    static const char *const case_words[] = {"HelloWorld", "Hello", "World", " don't", " don", "'t"};
    split_with("gpt-4o", case_words, 6, "HelloWorld don't", res, sizeof res);
    ck_assert_str_eq(res, "Hello|World| don't");
    split_with("llama-bpe", case_words, 6, "HelloWorld don't", res, sizeof res);
    ck_assert_str_eq(res, "HelloWorld| don|'t");
}
END_TEST

/* End of generation, as llama_vocab_is_eog: eos, the end-of-turn texts, FIM pad/repo/sep. */
START_TEST(test_eog) {
    char *spm = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    char *phi3 = SHARED_OR_SKIP("vocab/ggml-vocab-phi-3.gguf");
    char *gpt2 = SHARED_OR_SKIP("vocab/ggml-vocab-gpt-2.gguf");
    tokenizer *t = tok_from_gguf(spm);
    ck_assert(tokenizer_is_eog(t, 2)); /* </s> */
    ck_assert(!tokenizer_is_eog(t, 1));
    ck_assert(!tokenizer_is_eog(t, 0));
    ck_assert(!tokenizer_is_eog(t, -1));
    ck_assert(!tokenizer_is_eog(t, 31999));
    tokenizer_free(t);
    t = tok_from_gguf(phi3);
    ck_assert(tokenizer_is_eog(t, 32000)); /* <|endoftext|>, the eos */
    ck_assert(tokenizer_is_eog(t, 32007)); /* <|end|> */
    ck_assert(tokenizer_is_eog(t, 2));     /* </s> */
    ck_assert(!tokenizer_is_eog(t, 32001)); /* <|assistant|> */
    ck_assert(!tokenizer_is_eog(t, 32010)); /* <|user|> */
    tokenizer_free(t);
    t = tok_from_gguf(gpt2);
    ck_assert(tokenizer_is_eog(t, 50256));
    ck_assert(!tokenizer_is_eog(t, 50255));
    tokenizer_free(t);
    free(gpt2);
    free(phi3);
    free(spm);
}
END_TEST

/* ---- behaviour ------------------------------------------------------------------------ */

/* SPM: pieces of the ids give back " " + text (the prefix space llama.cpp adds). */
START_TEST(test_spm_round_trip) {
    char *gguf = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    tokenizer *t = tok_from_gguf(gguf);
    ck_assert_int_eq(tokenizer_n_vocab(t), 32000);
    ck_assert_int_eq(tokenizer_bos(t), 1);
    ck_assert_int_eq(tokenizer_eos(t), 2);
    ck_assert(tokenizer_add_bos(t));
    static const char *const texts[] = {
        "Hello world", "  leading spaces and trailing  ", "The quick brown fox jumps over the lazy dog.",
        "tabs\tand\nnewlines\r\n", "x=1; y = [2, 3]; print(x + y) # {braces} ~`!@$%^&*()_+", "a",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        slmc_err err = {{0}};
        int32_t *ids = NULL;
        size_t n = 0;
        ck_assert_msg(tokenizer_encode(t, texts[i], strlen(texts[i]), true, false, &ids, &n, &err) == 0, "%s", err.msg);
        ck_assert_uint_ge(n, 2);
        ck_assert_int_eq(ids[0], 1); /* BOS */
        size_t len = 0;
        char *back = detokenize(t, ids + 1, n - 1, &len);
        char want[256];
        snprintf(want, sizeof want, " %s", texts[i]);
        ck_assert_str_eq(back, want);
        free(back);
        free(ids);
    }
    /* known ids (llama-spm.gguf.out): "Hello world" -> 15043 3186 */
    int32_t *ids = NULL;
    size_t n = 0;
    slmc_err err = {{0}};
    ck_assert(tokenizer_encode(t, "Hello world", 11, false, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 15043);
    ck_assert_int_eq(ids[1], 3186);
    free(ids);
    /* pieces: "▁Hello" -> " Hello", <0x0A> -> "\n", control <s> -> "<s>" */
    char buf[64];
    ck_assert_int_eq(tokenizer_piece(t, 15043, buf, sizeof buf), 6);
    ck_assert(memcmp(buf, " Hello", 6) == 0);
    ck_assert_int_eq(tokenizer_piece(t, 13, buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], '\n');
    ck_assert_int_eq(tokenizer_piece(t, 1, buf, sizeof buf), 3);
    ck_assert(memcmp(buf, "<s>", 3) == 0);
    ck_assert_int_eq(tokenizer_piece(t, 32000, buf, sizeof buf), -1);
    ck_assert_int_eq(tokenizer_piece(t, 15043, buf, 3), -1); /* does not fit */
    /* empty text */
    ck_assert(tokenizer_encode(t, "", 0, false, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 0);
    free(ids);
    ck_assert(tokenizer_encode(t, "", 0, true, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    tokenizer_free(t);
    free(gguf);
}
END_TEST

/* parse_special: "<s>" and "</s>" become ids 1 and 2 only when asked; otherwise plain text. */
START_TEST(test_parse_special) {
    char *gguf = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    tokenizer *t = tok_from_gguf(gguf);
    const char *text = "<s>Hi</s>";
    int32_t *ids = NULL;
    size_t n = 0;
    slmc_err err = {{0}};
    ck_assert(tokenizer_encode(t, text, strlen(text), false, true, &ids, &n, &err) == 0);
    /* 1, " Hi" (prefix space after a special token), 2 */
    ck_assert_uint_ge(n, 3);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[n - 1], 2);
    size_t len = 0;
    char *mid = detokenize(t, ids + 1, n - 2, &len);
    ck_assert_str_eq(mid, " Hi");
    free(mid);
    free(ids);
    ck_assert(tokenizer_encode(t, text, strlen(text), false, false, &ids, &n, &err) == 0);
    for (size_t i = 0; i < n; i++) ck_assert(ids[i] != 1 && ids[i] != 2);
    char *all = detokenize(t, ids, n, &len);
    ck_assert_str_eq(all, " <s>Hi</s>");
    free(all);
    free(ids);
    tokenizer_free(t);
    free(gguf);

    /* Llama 3 (BPE): <|begin_of_text|> is 128000 with parse_special; add_special prepends it */
    char *json = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer.json");
    char *cfg = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer_config.json");
    t = tok_from_hf(json, cfg);
    ck_assert(tokenizer_add_bos(t));
    ck_assert_int_eq(tokenizer_bos(t), 128000);
    text = "<|begin_of_text|>Hello world";
    ck_assert(tokenizer_encode(t, text, strlen(text), false, true, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 128000);
    ck_assert_int_eq(ids[1], 9906); /* "Hello" */
    ck_assert_int_eq(ids[2], 1917); /* " world" */
    free(ids);
    ck_assert(tokenizer_encode(t, "Hello world", 11, true, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 128000);
    free(ids);
    tokenizer_free(t);
    free(json);
    free(cfg);
}
END_TEST

/* stories260K: the llama2.c tok512.bin vocabulary through formats/llama2c. */
START_TEST(test_stories260k) {
    char *bin = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tokp = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(llama2c_open(&m, bin, tokp, &err) == 0, "%s", err.msg);
    tokenizer *t = NULL;
    ck_assert_msg(tokenizer_create(&t, &m.kv, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tokenizer_n_vocab(t), 512);
    ck_assert(tokenizer_add_bos(t));
    const char *text = "Once upon a time";
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert_msg(tokenizer_encode(t, text, strlen(text), true, false, &ids, &n, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ids[0], tokenizer_bos(t));
    ck_assert_int_eq(ids[0], 1);
    /* merged into a few words' tokens, no byte fallback (ids 3..258 are <0x00>..<0xFF>) */
    ck_assert_uint_le(n, 8);
    for (size_t i = 1; i < n; i++) ck_assert(ids[i] > 258);
    size_t len = 0;
    char *back = detokenize(t, ids + 1, n - 1, &len);
    ck_assert_str_eq(back, " Once upon a time");
    fprintf(stderr, "stories260K \"Once upon a time\":");
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
    free(back);

    /* the same ids through llama.cpp's own conversion of that checkpoint */
    char *ref = shared_path("reference/stories260K-F32.gguf");
    if (ref) {
        tokenizer *r = tok_from_gguf(ref);
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        ck_assert(tokenizer_encode(r, text, strlen(text), true, false, &ids2, &n2, &err) == 0);
        ck_assert_uint_eq(n2, n);
        ck_assert(memcmp(ids, ids2, n * sizeof *ids) == 0);
        free(ids2);
        tokenizer_free(r);
        free(ref);
    }
    free(ids);
    tokenizer_free(t);
    model_close(&m);
    free(bin);
    free(tokp);
}
END_TEST

/* BPE details: byte-level pieces, user-defined tokens cut out even without parse_special
 * (llama.cpp follows HF there), control tokens only with it. */
START_TEST(test_bpe_special) {
    char *gguf = SHARED_OR_SKIP("vocab/ggml-vocab-gpt-2.gguf");
    tokenizer *t = tok_from_gguf(gguf);
    ck_assert(!tokenizer_add_bos(t));
    ck_assert_int_eq(tokenizer_bos(t), 50256);
    int32_t *ids = NULL;
    size_t n = 0;
    slmc_err err = {{0}};
    ck_assert(tokenizer_encode(t, " world", 6, true, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 1); /* no BOS for gpt-2 */
    char buf[64];
    ck_assert_int_eq(tokenizer_piece(t, ids[0], buf, sizeof buf), 6);
    ck_assert(memcmp(buf, " world", 6) == 0); /* stored as "Ġworld" */
    free(ids);
    tokenizer_free(t);
    free(gguf);

    char *json = SHARED_OR_SKIP("tokenizers/qwen3-hf/tokenizer.json");
    char *cfg = SHARED_OR_SKIP("tokenizers/qwen3-hf/tokenizer_config.json");
    t = tok_from_hf(json, cfg);
    const char *text = "<think>hi<|im_end|>";
    ck_assert(tokenizer_encode(t, text, strlen(text), false, false, &ids, &n, &err) == 0);
    ck_assert_uint_gt(n, 3);
    ck_assert_int_eq(ids[0], 151667); /* <think>: user-defined, always a token */
    for (size_t i = 1; i < n; i++) ck_assert(ids[i] != 151645);
    free(ids);
    ck_assert(tokenizer_encode(t, text, strlen(text), false, true, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 151667);
    ck_assert_int_eq(ids[2], 151645); /* <|im_end|>: control, only with parse_special */
    free(ids);
    tokenizer_free(t);
    free(json);
    free(cfg);
}
END_TEST

/* Random text: valid UTF-8 of any code point comes back exactly through the pieces (SPM with
 * its prefix space); arbitrary bytes (invalid UTF-8) are tokenized without failing. */
START_TEST(test_random_text) {
    char *spm = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    char *gpt2 = SHARED_OR_SKIP("vocab/ggml-vocab-gpt-2.gguf");
    enum { N = 20000 };
    char *utf8 = malloc(N + 4), *bytes = malloc(N);
    ck_assert(utf8 && bytes);
    uint32_t x = 12345;
    size_t nu = 0;
    while (nu < N) {
        x = x * 1103515245u + 12345u;
        uint32_t r = x >> 8, cp;
        if (r % 10 < 6) cp = r % 7 == 0 ? ' ' : 'a' + r % 26;  /* mostly words */
        else if (r % 10 < 8) cp = 0x80 + r % 0x780;             /* 2-byte */
        else if (r % 10 < 9) cp = 0x800 + r % 0xF800;           /* 3-byte */
        else cp = 0x10000 + r % 0x100000;                       /* 4-byte */
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;            /* surrogates are not text */
        if (cp == 0x2581) continue;                             /* "▁" itself renders as a space */
        if (cp < 0x80) utf8[nu++] = (char)cp;
        else if (cp < 0x800) utf8[nu++] = (char)(0xC0 | cp >> 6), utf8[nu++] = (char)(0x80 | (cp & 0x3F));
        else if (cp < 0x10000)
            utf8[nu++] = (char)(0xE0 | cp >> 12), utf8[nu++] = (char)(0x80 | ((cp >> 6) & 0x3F)),
            utf8[nu++] = (char)(0x80 | (cp & 0x3F));
        else
            utf8[nu++] = (char)(0xF0 | cp >> 18), utf8[nu++] = (char)(0x80 | ((cp >> 12) & 0x3F)),
            utf8[nu++] = (char)(0x80 | ((cp >> 6) & 0x3F)), utf8[nu++] = (char)(0x80 | (cp & 0x3F));
    }
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        bytes[i] = (char)(x >> 16);
    }
    for (int k = 0; k < 2; k++) {
        tokenizer *t = tok_from_gguf(k == 0 ? spm : gpt2);
        int32_t *ids = NULL;
        size_t n = 0, len = 0;
        slmc_err err = {{0}};
        ck_assert_msg(tokenizer_encode(t, utf8, nu, false, false, &ids, &n, &err) == 0, "%s", err.msg);
        char *back = detokenize(t, ids, n, &len);
        ck_assert_uint_eq(len, nu + (k == 0));
        ck_assert(memcmp(back + (k == 0), utf8, nu) == 0);
        free(back);
        free(ids);
        ck_assert_msg(tokenizer_encode(t, bytes, N, true, true, &ids, &n, &err) == 0, "%s", err.msg);
        ck_assert_uint_gt(n, N / 8);
        free(ids);
        if (k == 0) { /* SPM word by word == one queue over the whole text, on both inputs */
            ck_assert(tokenizer_set_word_split(t, true));
            for (int in = 0; in < 2; in++) {
                int32_t *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                const char *txt = in ? bytes : utf8;
                const size_t tl = in ? N : nu;
                tokenizer_set_word_split(t, true);
                ck_assert(tokenizer_encode(t, txt, tl, true, false, &a, &na, &err) == 0);
                tokenizer_set_word_split(t, false);
                ck_assert(tokenizer_encode(t, txt, tl, true, false, &b, &nb, &err) == 0);
                ck_assert_uint_eq(na, nb);
                ck_assert(memcmp(a, b, na * sizeof *a) == 0);
                free(a);
                free(b);
            }
        }
        tokenizer_free(t);
    }
    free(utf8);
    free(bytes);
    free(spm);
    free(gpt2);
}
END_TEST

/* A small hand-made vocabulary for the error cases. */
static void tiny_vocab(meta *kv, const char *model, uint64_t n_scores) {
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
    static const float scores[] = {0, 0, 0, -1, -2, -0.5f};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1};
    meta_init(kv);
    ck_assert(meta_set_str(kv, "tokenizer.ggml.model", model) == 0);
    ck_assert(meta_set_arr_str(kv, "tokenizer.ggml.tokens", 6, toks, NULL) == 0);
    ck_assert(meta_set_arr(kv, "tokenizer.ggml.scores", GGUF_F32, n_scores, scores) == 0);
    ck_assert(meta_set_arr(kv, "tokenizer.ggml.token_type", GGUF_I32, 6, types) == 0);
}

static void expect_error(const meta *kv, const char *needle) {
    tokenizer *t = (tokenizer *)1;
    slmc_err err = {{0}};
    ck_assert_int_eq(tokenizer_create(&t, kv, &err), -1);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message \"%s\" lacks \"%s\"", err.msg, needle);
}

START_TEST(test_bad_metadata) {
    meta kv;
    /* the tiny vocabulary works: "ab" is merged (score -0.5); "c" has no token and no <0x63>
     * byte token, which llama.cpp cannot tokenize either */
    tiny_vocab(&kv, "llama", 6);
    ck_assert(meta_set_bool(&kv, "tokenizer.ggml.add_space_prefix", false) == 0);
    tokenizer *t = NULL;
    slmc_err err = {{0}};
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    int32_t *ids = NULL;
    size_t n = 0;
    ck_assert(tokenizer_encode(t, "abab", 4, true, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 5);
    ck_assert_int_eq(ids[2], 5);
    free(ids);
    ck_assert_int_eq(tokenizer_encode(t, "abc", 3, false, false, &ids, &n, &err), -1);
    ck_assert_ptr_null(ids);
    ck_assert_msg(strstr(err.msg, "byte 0x63 has no token") != NULL, "%s", err.msg);
    tokenizer_free(t);

    meta_remove(&kv, "tokenizer.ggml.tokens");
    expect_error(&kv, "tokenizer.ggml.tokens is missing");
    meta_free(&kv);

    tiny_vocab(&kv, "llama", 5);
    expect_error(&kv, "tokenizer.ggml.scores has 5 entries but tokens has 6");
    meta_free(&kv);

    tiny_vocab(&kv, "llama", 6);
    static const int32_t four[] = {1, 1, 1, 1};
    ck_assert(meta_set_arr(&kv, "tokenizer.ggml.token_type", GGUF_I32, 4, four) == 0);
    expect_error(&kv, "tokenizer.ggml.token_type has 4 entries but tokens has 6");
    ck_assert(meta_set_arr(&kv, "tokenizer.ggml.tokens", GGUF_I32, 4, four) == 0);
    expect_error(&kv, "tokenizer.ggml.tokens must be a string array");
    meta_free(&kv);

    tiny_vocab(&kv, "bert", 6);
    expect_error(&kv, "tokenizer.ggml.model \"bert\" is not supported");
    meta_remove(&kv, "tokenizer.ggml.model");
    expect_error(&kv, "tokenizer.ggml.model is missing");
    meta_free(&kv);

    tiny_vocab(&kv, "gpt2", 6);
    ck_assert(meta_set_str(&kv, "tokenizer.ggml.pre", "gpt-2") == 0);
    expect_error(&kv, "tokenizer.ggml.merges is missing");
    static const char *const merges[] = {"a b"};
    ck_assert(meta_set_arr_str(&kv, "tokenizer.ggml.merges", 1, merges, NULL) == 0);
    ck_assert(meta_set_u32(&kv, "tokenizer.ggml.bos_token_id", 1) == 0);
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    ck_assert(!tokenizer_add_bos(t)); /* llama.cpp's default for gpt-2 */
    ck_assert(tokenizer_encode(t, "ab", 2, true, false, &ids, &n, &err) == 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(ids[0], 5);
    free(ids);
    tokenizer_free(t);
    ck_assert(meta_set_str(&kv, "tokenizer.ggml.pre", "no-such-pre") == 0);
    expect_error(&kv, "tokenizer.ggml.pre \"no-such-pre\" is not a supported pre-tokenizer");
    meta_free(&kv);

    tiny_vocab(&kv, "llama", 6);
    static const char *const dup[] = {"<unk>", "<s>", "</s>", "a", "b", "a"};
    ck_assert(meta_set_arr_str(&kv, "tokenizer.ggml.tokens", 6, dup, NULL) == 0);
    expect_error(&kv, "duplicate token \"a\" has ids 3 and 5");
    meta_free(&kv);

    tiny_vocab(&kv, "llama", 6);
    ck_assert(meta_set_bool(&kv, "tokenizer.ggml.add_eos_token", true) == 0);
    ck_assert(meta_set_u32(&kv, "tokenizer.ggml.eos_token_id", 99) == 0); /* out of range: default 2 stays */
    ck_assert_msg(tokenizer_create(&t, &kv, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tokenizer_eos(t), 2);
    tokenizer_free(t);
    meta_free(&kv);
}
END_TEST

/* Speed and losslessness on WikiText-2 (1.3 MB): Llama-2 SPM and Llama 3 BPE. */
START_TEST(test_wiki_speed) {
    char *wiki = SHARED_OR_SKIP("text/wiki.test.raw");
    char *spm = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    char *json = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer.json");
    char *cfg = SHARED_OR_SKIP("tokenizers/llama3-hf/tokenizer_config.json");
    size_t len = 0;
    char *text = (char *)slurp(wiki, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_gt(len, 1000000);
    for (int k = 0; k < 2; k++) {
        double t0 = now();
        tokenizer *t = k == 0 ? tok_from_gguf(spm) : tok_from_hf(json, cfg);
        double t1 = now();
        int32_t *ids = NULL;
        size_t n = 0;
        slmc_err err = {{0}};
        ck_assert_msg(tokenizer_encode(t, text, len, false, false, &ids, &n, &err) == 0, "%s", err.msg);
        double t2 = now();
        fprintf(stderr, "wiki.test.raw (%zu bytes), %s: %zu tokens, load %.2f s, tokenize %.2f s (%.1f MB/s)\n", len,
                k == 0 ? "llama-spm" : "llama3 bpe", n, t1 - t0, t2 - t1, len / 1e6 / (t2 - t1));
        ck_assert_uint_gt(n, len / 6);
        ck_assert_uint_lt(n, len / 2);
        /* lossless: the pieces give the text back (SPM with its prefix space) */
        size_t blen = 0;
        char *back = detokenize(t, ids, n, &blen);
        if (k == 0) {
            ck_assert_uint_eq(blen, len + 1);
            ck_assert(back[0] == ' ' && memcmp(back + 1, text, len) == 0);
        } else {
            ck_assert_uint_eq(blen, len);
            ck_assert(memcmp(back, text, len) == 0);
        }
        ck_assert_msg(t2 - t1 < 30, "tokenizing took %.1f s", t2 - t1);
        if (k == 0) { /* SPM word by word (the default) == llama.cpp's one queue over the text */
            int32_t *one = NULL;
            size_t n1 = 0;
            ck_assert(!tokenizer_set_word_split(t, false));
            double t3 = now();
            ck_assert_msg(tokenizer_encode(t, text, len, false, false, &one, &n1, &err) == 0, "%s", err.msg);
            fprintf(stderr, "  one queue over the whole text: %.2f s; word by word: %.2f s\n", now() - t3, t2 - t1);
            ck_assert_uint_eq(n1, n);
            ck_assert(memcmp(one, ids, n * sizeof *ids) == 0);
            free(one);
        }
        free(back);
        free(ids);
        tokenizer_free(t);
    }
    free(text);
    free(wiki);
    free(spm);
    free(json);
    free(cfg);
}
END_TEST

Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("vectors");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_vectors_llama_spm);
    tcase_add_test(tc, test_vectors_phi3);
    tcase_add_test(tc, test_vectors_gpt2);
    tcase_add_test(tc, test_vectors_llama_bpe);
    tcase_add_test(tc, test_vectors_qwen2);
    tcase_add_test(tc, test_vectors_all_checked);
    tcase_add_test(tc, test_vectors_llama_spm_llama_folder);
    tcase_add_test(tc, test_vectors_phi3_phi3_folder);
    tcase_add_test(tc, test_vectors_gpt2_phi2_folder);
    tcase_add_test(tc, test_vectors_llama_bpe_llama3_folder);
    tcase_add_test(tc, test_vectors_qwen2_qwen3_folder);
    tcase_add_test(tc, test_vectors_qwen2_stablelm2_folder);
    suite_add_tcase(s, tc);
    tc = tcase_create("behaviour");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_spm_round_trip);
    tcase_add_test(tc, test_parse_special);
    tcase_add_test(tc, test_stories260k);
    tcase_add_test(tc, test_bpe_special);
    tcase_add_test(tc, test_random_text);
    tcase_add_test(tc, test_bad_metadata);
    tcase_add_test(tc, test_pre_splits);
    tcase_add_test(tc, test_eog);
    tcase_add_test(tc, test_wiki_speed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(tokenizer_suite()); }
