/* eval_run.c - `slmc eval` as a library call (see eval_run.h). */
#include "eval_run.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/logits_store.h"
#include "eval/ranks.h"
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
    const comm *job;             /* the ranks sharing the chunks (a job of one without mpirun) */
    int64_t lo, hi;              /* this rank's chunks [lo, hi) */
    /* this rank's scored rows, chunk after chunk: [(hi - lo) * n_scored]. The statistics are
     * folded from every rank's rows in chunk order, after the loop (so one process and N ranks
     * add the same values in the same order) */
    double *nll;                 /* each row's -log p(next token) */
    kld_row *kld_rows;           /* with a base: each row's KL-divergence terms */
    kld_stats kld;               /* the comparison with the base, folded from all ranks' rows */
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
    free(s->nll);
    free(s->kld_rows);
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

/* Chunk c (one of this rank's): evaluate it, score its rows, compare them with the base's,
 * store them. The rows' values go to s->nll / s->kld_rows at the chunk's place. */
static int eval_chunk(eval_state *s, int c, slmc_err *err) {
    const eval_opts *o = s->o;
    const int32_t *chunk = s->text.ids + (size_t)c * (size_t)s->n_ctx;
    const size_t at = (size_t)(c - s->lo) * (size_t)s->n_scored;
    if (ppl_eval_chunk(&s->run.ctx, chunk, s->n_ctx, s->text.bos, s->logits, err) != 0)
        return slmc_fail_prefix(err, o->model);
    ppl_chunk_nll(s->logits, s->n_vocab, chunk, s->n_ctx, s->nll + at);
    for (int i = 0; i < s->n_scored; i++) s->next[i] = chunk[s->first + i + 1];

    if (o->kl_base) { /* the base model on the same chunk, side by side */
        if (ppl_eval_chunk(&s->base.ctx, chunk, s->n_ctx, s->text.bos, s->base_logits, err) != 0 ||
            kld_compare_rows(s->logits, s->base_logits, s->n_scored, s->n_vocab, s->next, s->kld_rows + at, err) != 0)
            return -1;
    }
    if (o->kl_logits) { /* the base's rows saved earlier, for the same tokens */
        if (logits_store_get(&s->saved, c, s->file_tokens, s->rows, err) != 0) return -1;
        if (memcmp(s->file_tokens, chunk, sizeof(int32_t) * (size_t)s->n_ctx) != 0)
            return slmc_fail(err, o->kl_logits, "chunk %d holds other tokens than this text gives: same text and tokenizer?", c);
        kld_rows(s->logits, s->rows, s->n_scored, s->n_vocab, s->next, s->kld_rows + at);
    }
    if (o->save_logits) {
        const size_t w = kld_row_u16(s->n_vocab);
        for (int i = 0; i < s->n_scored; i++)
            kld_pack_logprobs(s->logits + (size_t)i * (size_t)s->n_vocab, s->n_vocab, s->next[i], s->rows + (size_t)i * w);
        if (logits_store_put(&s->save, c, chunk, s->rows, err) != 0) return -1;
    }
    return 0;
}

/* This rank's chunks, in order; the progress hook sees the running PPL of its own chunks. */
static int eval_chunks(eval_state *s, const eval_hooks *h, double t_eval, slmc_err *err) {
    const eval_opts *o = s->o;
    comm_share(s->job, s->n_chunk, s->job->rank, &s->lo, &s->hi);
    const size_t n_rows = (size_t)(s->hi - s->lo) * (size_t)s->n_scored;
    s->nll = malloc(sizeof(double) * (n_rows ? n_rows : 1));
    if (o->kl_base || o->kl_logits) s->kld_rows = malloc(sizeof(kld_row) * (n_rows ? n_rows : 1));
    if (!s->nll || ((o->kl_base || o->kl_logits) && !s->kld_rows))
        return slmc_fail(err, o->model, "out of memory for the values of %zu scored rows", n_rows);
    ppl_stats mine = {0};
    const int n_mine = (int)(s->hi - s->lo);
    for (int c = (int)s->lo; c < (int)s->hi; c++) {
        if (eval_chunk(s, c, err) != 0) return -1;
        ppl_add_nll(&mine, s->nll + (size_t)(c - s->lo) * (size_t)s->n_scored, s->n_scored);
        const int done = c - (int)s->lo + 1;
        if (h && h->chunk_done && h->chunk_done(h->ud, done, n_mine, ppl_value(&mine), now_seconds() - t_eval) != 0)
            return slmc_fail(err, o->model, "evaluation stopped after chunk %d", c + 1);
    }
    if (o->save_logits && logits_store_finish(&s->save, err) != 0) return -1;
    return 0;
}

/* Every rank's rows, in chunk order, folded into the statistics (on every rank). */
static int fold_rows(eval_state *s, eval_result *r, slmc_err *err) {
    const eval_opts *o = s->o;
    const size_t n_mine = (size_t)(s->hi - s->lo) * (size_t)s->n_scored;
    const size_t n_all = (size_t)s->n_chunk * (size_t)s->n_scored;
    void *all = NULL;
    size_t bytes = 0;
    if (comm_allgather(s->job, s->nll, n_mine * sizeof(double), &all, &bytes, err) != 0) return -1;
    if (bytes != n_all * sizeof(double)) {
        free(all);
        return slmc_fail(err, o->model, "the ranks returned %zu row values, not %zu", bytes / sizeof(double), n_all);
    }
    ppl_add_nll(&r->stats, all, (int64_t)n_all);
    free(all);
    if (!s->kld_rows) return 0;
    if (comm_allgather(s->job, s->kld_rows, n_mine * sizeof(kld_row), &all, &bytes, err) != 0) return -1;
    int rc = bytes == n_all * sizeof(kld_row)
                 ? kld_add_rows(&s->kld, all, (int64_t)n_all, err)
                 : slmc_fail(err, o->model, "the ranks returned %zu KL-divergence rows, not %zu", bytes / sizeof(kld_row), n_all);
    free(all);
    return rc;
}

int eval_run(const eval_opts *o, const eval_hooks *h, eval_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    eval_state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.job = ranks_job(o->comm);
    /* the saved rows are the whole base output, written as the chunks come: one process's job */
    int rc = s.job->size > 1 && o->save_logits
                 ? slmc_fail(err, o->save_logits,
                             "saving logits does not run under mpirun (%d ranks): save them with one process; "
                             "--kl-logits then reads them on every rank",
                             s.job->size)
                 : eval_open(&s, err);
    /* every rank has opened the models and tokenized the text (or one could not) */
    rc = comm_agree(s.job, rc, err);
    const double t_eval = now_seconds();
    if (rc == 0) rc = comm_agree(s.job, eval_chunks(&s, h, t_eval, err), err);
    if (rc == 0) rc = fold_rows(&s, r, err);
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
