/* eval_run.c - `slmc eval` as a library call (see eval_run.h). */
#include "eval_run.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/logits_store.h"
#include "eval/session.h"
#include "eval/text.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Everything one run holds; state_free releases it. */
typedef struct eval_state {
    const eval_opts *o;
    int n_ctx, n_chunk;          /* chunk length, chunks to evaluate */
    int first, n_scored;         /* first scored position, scored rows per chunk */
    int64_t n_vocab;
    double t_start;              /* when tokenizing began */
    llm_session run, base;       /* the model and, with kl_base, the base model */
    logits_store saved;          /* kl_logits: the base's rows, read */
    logits_store save;           /* save_logits: this model's rows, written */
    text_tokens text;            /* the whole text's tokens */
    float *logits, *base_logits; /* [n_scored][n_vocab]: one chunk's scored rows */
    int32_t *next;               /* [n_scored]: the token each scored row predicts */
    uint16_t *rows;              /* [n_scored][kld_row_u16(n_vocab)]: compressed rows */
    int32_t *file_tokens;        /* [n_ctx]: a chunk's tokens as the kl_logits file holds them */
    kld_stats kld;               /* the comparison with the base, row by row */
} eval_state;

static void state_free(eval_state *s) {
    logits_store_close(&s->saved);
    logits_store_close(&s->save);
    kld_stats_free(&s->kld);
    free(s->logits);
    free(s->base_logits);
    free(s->next);
    free(s->rows);
    free(s->file_tokens);
    text_tokens_free(&s->text);
    llm_session_close(&s->base);
    llm_session_close(&s->run);
}

/* Everything before the first chunk: files and models opened, the text tokenized, buffers. */
static int eval_open(eval_state *s, slmc_err *err) {
    const eval_opts *o = s->o;
    if (o->kl_base && o->kl_logits) return slmc_fail(err, o->kl_logits, "give a base model or saved logits, not both");
    s->n_ctx = o->n_ctx > 0 ? o->n_ctx : EVAL_DEFAULT_CTX;
    if (o->kl_logits) { /* with saved base logits the chunk length is the file's unless given */
        if (logits_store_open(&s->saved, o->kl_logits, err) != 0) return -1;
        if (o->n_ctx <= 0) s->n_ctx = s->saved.n_ctx;
        if (s->saved.n_ctx != s->n_ctx)
            return slmc_fail(err, o->kl_logits, "was saved with -c %d, not %d", s->saved.n_ctx, s->n_ctx);
    }
    if (llm_session_open(&s->run, o->model, o->tokenizer, err) != 0 ||
        llm_session_context(&s->run, s->n_ctx, s->n_ctx, o->n_threads, err) != 0)
        return -1;
    s->t_start = now_seconds();
    if (text_tokenize(&s->run.m, o->text, 0, "eval", &s->text, err) != 0) return -1;
    if ((int64_t)s->text.n < 2 * (int64_t)s->n_ctx)
        return slmc_fail(err, o->text, "has %zu tokens; perplexity with -c %d needs at least %d", s->text.n, s->n_ctx,
                         2 * s->n_ctx);
    s->n_chunk = ppl_chunk_count((int64_t)s->text.n, s->n_ctx, o->max_chunks);
    s->n_vocab = s->run.lm.cfg.n_vocab;
    s->first = ppl_first(s->n_ctx);
    s->n_scored = ppl_scored(s->n_ctx);

    if (o->kl_base) {
        if (llm_session_open(&s->base, o->kl_base, o->tokenizer, err) != 0 ||
            llm_session_context(&s->base, s->n_ctx, s->n_ctx, o->n_threads, err) != 0)
            return -1;
        if (s->base.lm.cfg.n_vocab != s->n_vocab)
            return slmc_fail(err, o->kl_base, "has %lld tokens in its vocabulary, the model %lld",
                             (long long)s->base.lm.cfg.n_vocab, (long long)s->n_vocab);
    }
    if (o->kl_logits) {
        if (s->saved.n_vocab != s->n_vocab)
            return slmc_fail(err, o->kl_logits, "holds a vocabulary of %lld, the model has %lld",
                             (long long)s->saved.n_vocab, (long long)s->n_vocab);
        if (s->saved.n_chunk < s->n_chunk) s->n_chunk = s->saved.n_chunk;
    }
    if (o->save_logits &&
        logits_store_create(&s->save, o->save_logits, s->n_ctx, s->n_vocab, s->n_chunk, s->n_scored, err) != 0)
        return -1;

    const size_t n_rows = (size_t)s->n_scored, n_vocab = (size_t)s->n_vocab;
    const bool packed = o->save_logits || o->kl_logits; /* compressed rows written or read */
    s->logits = malloc(sizeof(float) * n_rows * n_vocab);
    s->next = malloc(sizeof(int32_t) * n_rows);
    if (o->kl_base) s->base_logits = malloc(sizeof(float) * n_rows * n_vocab);
    if (packed) {
        s->rows = malloc(sizeof(uint16_t) * n_rows * kld_row_u16(s->n_vocab));
        s->file_tokens = malloc(sizeof(int32_t) * (size_t)s->n_ctx);
    }
    if (!s->logits || !s->next || (o->kl_base && !s->base_logits) || (packed && (!s->rows || !s->file_tokens)))
        return slmc_fail(err, o->model, "out of memory for %d rows of %lld logits", s->n_scored, (long long)s->n_vocab);
    return 0;
}

/* Chunk c: evaluate it, score it, compare it with the base, store its rows. */
static int eval_chunk(eval_state *s, int c, ppl_stats *st, slmc_err *err) {
    const eval_opts *o = s->o;
    const int32_t *chunk = s->text.ids + (size_t)c * (size_t)s->n_ctx;
    if (ppl_eval_chunk(&s->run.ctx, chunk, s->n_ctx, s->text.bos, s->logits, err) != 0)
        return slmc_fail_prefix(err, o->model);
    ppl_accumulate(st, s->logits, s->n_vocab, chunk, s->n_ctx);
    for (int i = 0; i < s->n_scored; i++) s->next[i] = chunk[s->first + i + 1];

    if (o->kl_base) { /* the base model on the same chunk, side by side */
        if (ppl_eval_chunk(&s->base.ctx, chunk, s->n_ctx, s->text.bos, s->base_logits, err) != 0 ||
            kld_compare(&s->kld, s->logits, s->base_logits, s->n_scored, s->n_vocab, s->next, err) != 0)
            return -1;
    }
    if (o->kl_logits) { /* the base's rows saved earlier, for the same tokens */
        if (logits_store_get(&s->saved, c, s->file_tokens, s->rows, err) != 0) return -1;
        if (memcmp(s->file_tokens, chunk, sizeof(int32_t) * (size_t)s->n_ctx) != 0)
            return slmc_fail(err, o->kl_logits, "chunk %d holds other tokens than this text gives: same text and tokenizer?", c);
        if (kld_accumulate(&s->kld, s->logits, s->rows, s->n_scored, s->n_vocab, s->next, err) != 0) return -1;
    }
    if (o->save_logits) {
        const size_t w = kld_row_u16(s->n_vocab);
        for (int i = 0; i < s->n_scored; i++)
            kld_pack_logprobs(s->logits + (size_t)i * (size_t)s->n_vocab, s->n_vocab, s->next[i], s->rows + (size_t)i * w);
        if (logits_store_put(&s->save, c, chunk, s->rows, err) != 0) return -1;
    }
    return 0;
}

int eval_run(const eval_opts *o, const eval_hooks *h, eval_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    eval_state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    int rc = eval_open(&s, err);
    const double t_eval = now_seconds();
    for (int c = 0; rc == 0 && c < s.n_chunk; c++) {
        rc = eval_chunk(&s, c, &r->stats, err);
        if (rc == 0 && h && h->chunk_done &&
            h->chunk_done(h->ud, c + 1, s.n_chunk, ppl_value(&r->stats), now_seconds() - t_eval) != 0)
            rc = slmc_fail(err, o->model, "evaluation stopped after chunk %d", c + 1);
    }
    if (rc == 0 && o->save_logits) rc = logits_store_finish(&s.save, err);
    if (rc == 0) {
        const double t_end = now_seconds(), eval_secs = t_end - t_eval;
        r->n_ctx = s.n_ctx;
        r->n_chunk = s.n_chunk;
        r->n_tokens = s.text.n;
        r->ppl = ppl_value(&r->stats);
        r->ppl_stderr = ppl_stderr(&r->stats);
        r->seconds = t_end - s.t_start;
        r->tokens_per_second = eval_secs > 0 ? (double)s.n_chunk * s.n_ctx * (o->kl_base ? 2 : 1) / eval_secs : 0;
        r->have_kld = o->kl_base || o->kl_logits;
        if (r->have_kld) rc = kld_summarize(&s.kld, &r->kld, err);
    }
    state_free(&s);
    return rc;
}
