/* fuzz_json.c - libFuzzer harness for the tokenizer readers (formats/hf_tokenizer.c).
 *
 * The same input is fed to the three parsers: as a tokenizer.json, as a SentencePiece
 * tokenizer.model (protobuf) and as a tokenizer_config.json / config.json (resolved against the
 * tokens the first two produced, when any). A failure must say why; a SentencePiece model that
 * parses must serialize back (hf_tokenizer_build_spm) to bytes that parse to the same tokens,
 * scores and types. Seeds: any tokenizer.model, tokenizer.json or tokenizer_config.json. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/hf_tokenizer.h"
#include "formats/meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failing call must leave a message. */
static void check_failure(int rc, const slmc_err *err) {
    if (rc != 0 && err->msg[0] == '\0') __builtin_trap();
}

/* Two values of the same key hold the same bytes. */
static void check_same(const meta *a, const meta *b, const char *key) {
    const meta_kv *x = meta_find(a, key), *y = meta_find(b, key);
    if (!x || !y || x->type != GGUF_ARR || y->type != GGUF_ARR || x->elem != y->elem || x->n != y->n)
        __builtin_trap();
    if (x->elem == GGUF_STR) {
        const meta_str *p = x->v.arr, *q = y->v.arr;
        for (uint64_t i = 0; i < x->n; i++)
            if (p[i].len != q[i].len || memcmp(p[i].s, q[i].s, p[i].len) != 0) __builtin_trap();
    } else if (memcmp(x->v.arr, y->v.arr, x->n * gguf_vtype_size(x->elem)) != 0) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    slmc_err err = {{0}};
    meta kv;
    meta_init(&kv);

    /* tokenizer.json */
    check_failure(hf_tokenizer_parse_json(&kv, (const char *)data, size, "fuzz/tokenizer.json", &err), &err);

    /* tokenizer.model, in its own meta, serialized back and read again */
    meta spm;
    meta_init(&spm);
    err.msg[0] = '\0';
    int rc = hf_tokenizer_parse_spm(&spm, data, size, "fuzz/tokenizer.model", &err);
    check_failure(rc, &err);
    if (rc == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (hf_tokenizer_build_spm(&spm, &buf, &len, &err) != 0) __builtin_trap();
        meta back;
        meta_init(&back);
        if (hf_tokenizer_parse_spm(&back, buf, len, "fuzz/rebuilt.model", &err) != 0) __builtin_trap();
        check_same(&spm, &back, "tokenizer.ggml.tokens");
        check_same(&spm, &back, "tokenizer.ggml.scores");
        check_same(&spm, &back, "tokenizer.ggml.token_type");
        meta_free(&back);
        free(buf);
        if (kv.n == 0) { /* give the config parsers tokens to resolve names against */
            meta_free(&kv);
            kv = spm;
            meta_init(&spm);
        }
    }
    meta_free(&spm);

    /* tokenizer_config.json and config.json */
    err.msg[0] = '\0';
    check_failure(hf_tokenizer_parse_config_json(&kv, (const char *)data, size, "fuzz/tokenizer_config.json", &err), &err);
    err.msg[0] = '\0';
    check_failure(hf_tokenizer_parse_model_config(&kv, (const char *)data, size, "fuzz/config.json", &err), &err);
    meta_free(&kv);
    return 0;
}
