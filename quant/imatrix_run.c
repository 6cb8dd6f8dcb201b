/* imatrix_run.c - `slmc imatrix` as a library call (see imatrix_run.h). */
#include "imatrix_run.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/session.h"
#include "eval/text.h"
#include "quant/imatrix.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Run the model over the text's chunks, accumulating every product's input into im. */
static int collect(imatrix *im, const imatrix_opts *o, const imatrix_hooks *h, imatrix_result *r, slmc_err *err) {
    const int n_ctx = r->n_ctx;
    llm_session s;
    text_tokens text = {0};
    float *logits = NULL; /* process_output: [n_ctx][n_vocab], every position's */
    int rc = -1;
    if (llm_session_open(&s, o->model, o->tokenizer, err) != 0) return -1;
    if (llm_session_context(&s, n_ctx, n_ctx, o->n_threads, err) != 0) goto done;
    if (text_tokenize(&s.m, o->text, 0, "imatrix", &text, err) != 0) goto done;
    r->n_tokens = text.n;
    if ((int64_t)text.n < 2 * (int64_t)n_ctx) {
        slmc_fail(err, o->text, "has %zu tokens; imatrix with -c %d needs at least %d", text.n, n_ctx, 2 * n_ctx);
        goto done;
    }
    r->n_chunk = ppl_chunk_count((int64_t)text.n, n_ctx, o->max_chunks);
    const int64_t n_vocab = s.lm.cfg.n_vocab;
    if (o->process_output && !(logits = malloc(sizeof(float) * (size_t)n_ctx * (size_t)n_vocab))) {
        slmc_fail(err, o->model, "out of memory for %d rows of %lld logits", n_ctx, (long long)n_vocab);
        goto done;
    }
    const double t0 = now_seconds();
    for (int c = 0; c < r->n_chunk; c++) {
        const int32_t *chunk = text.ids + (size_t)c * (size_t)n_ctx;
        if (imatrix_eval_chunk(im, &s.ctx, chunk, n_ctx, text.bos, o->process_output, logits, err) != 0) {
            slmc_fail_prefix(err, o->model);
            goto done;
        }
        /* the logits exist anyway: score the chunk's second half as llama-perplexity does */
        if (logits) ppl_accumulate(&r->ppl, logits + (size_t)ppl_first(n_ctx) * (size_t)n_vocab, n_vocab, chunk, n_ctx);
        if (h && h->chunk_done && h->chunk_done(h->ud, c + 1, r->n_chunk, now_seconds() - t0) != 0) {
            slmc_fail(err, o->model, "imatrix stopped after chunk %d", c + 1);
            goto done;
        }
    }
    r->eval_seconds = now_seconds() - t0;
    rc = imatrix_add_dataset(im, o->text, err);
done:
    free(logits);
    text_tokens_free(&text);
    llm_session_close(&s);
    return rc;
}

int imatrix_run(const imatrix_opts *o, const imatrix_hooks *h, imatrix_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    if (!o->model != !o->text) return slmc_fail(err, o->model ? o->model : o->text, "a model and a text go together");
    const double t0 = now_seconds();
    if (o->text) r->n_ctx = o->n_ctx > 0 ? o->n_ctx : IMATRIX_DEFAULT_CHUNK_SIZE;
    imatrix im;
    /* the chunk size: this run's, else the first GGUF input's, else llama.cpp's 512 */
    imatrix_init(&im, o->text ? r->n_ctx : o->n_ctx > 0 ? o->n_ctx : 0);
    int rc = 0;
    for (int i = 0; rc == 0 && i < o->n_in_files; i++) rc = imatrix_read(&im, o->in_files[i], err);
    if (rc == 0 && o->text) {
        rc = collect(&im, o, h, r, err);
        /* a fresh matrix is written in name order (llama.cpp's GGUF order); merged files keep theirs */
        if (rc == 0 && o->n_in_files == 0) imatrix_sort(&im);
    }
    if (rc == 0) rc = imatrix_finish(&im, err);
    if (rc == 0 && o->out) rc = o->out_gguf ? imatrix_write_gguf(&im, o->out, err) : imatrix_write_dat(&im, o->out, err);
    if (rc == 0 && o->hdf5) rc = imatrix_write_hdf5(&im, o->hdf5, o->model, err);
    r->n_entries = im.n;
    r->chunk_size = im.chunk_size;
    r->chunk_count = im.chunk_count;
    r->seconds = now_seconds() - t0;
    imatrix_free(&im);
    return rc;
}
