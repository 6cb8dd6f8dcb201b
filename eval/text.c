/* text.c - see text.h */
#include "text.h"

#include <stdlib.h>
#include <string.h>

#include "eval/tokenizer.h"
#include "formats/fileio.h"
#include "formats/meta.h"

/* Bytes of text to tokenize first for `want` tokens (see text.h). */
#define TEXT_BYTES_PER_TOKEN 16

/* The end of a prefix of at most len bytes: at a line end when there is one. */
static size_t prefix_end(const mapped_file *text, size_t len) {
    if (len >= text->size) return text->size;
    size_t n = len;
    while (n > 0 && text->data[n - 1] != '\n') n--;
    return n > 0 ? n : len;
}

int text_tokenize(const model *m, const char *path, size_t want, const char *purpose, text_tokens *out,
                  slmc_err *err) {
    memset(out, 0, sizeof *out);
    out->bos = -1;
    if (!meta_get_str(&m->kv, "tokenizer.ggml.model"))
        return slmc_fail(err, m->path, "has no tokenizer; %s needs one to read the text", purpose);
    tokenizer *tok;
    if (tokenizer_create(&tok, &m->kv, err) != 0) return slmc_fail_prefix(err, m->path);
    mapped_file text = {0};
    int rc = map_file(&text, path, err);
    size_t len = want == 0 || want > SIZE_MAX / (2 * TEXT_BYTES_PER_TOKEN) ? text.size : want * TEXT_BYTES_PER_TOKEN;
    while (rc == 0) {
        size_t n = prefix_end(&text, len);
        free(out->ids);
        out->ids = NULL;
        rc = tokenizer_encode(tok, (const char *)text.data, n, true, false, &out->ids, &out->n, err);
        if (rc != 0) { slmc_fail_prefix(err, path); break; }
        if (n == text.size || out->n >= want) break;
        len *= 2;
    }
    out->bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1;
    unmap_file(&text);
    tokenizer_free(tok);
    if (rc != 0) text_tokens_free(out);
    return rc;
}

void text_tokens_free(text_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = 0;
}
