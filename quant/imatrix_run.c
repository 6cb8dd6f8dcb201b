/* imatrix_run.c - `slmc imatrix` as a library call (see imatrix_run.h). */
#include "imatrix_run.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/ranks.h"
#include "eval/session.h"
#include "eval/text.h"
#include "quant/imatrix.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- one chunk's statistics ---------------------------------------------------------------
 * A chunk's matrix is collected on its own and handed to two sums over the chunks (comm.h):
 *   sums    F32: every entry's sum2, entries in the order the chunk created them;
 *   counts  F64: every entry's token counts (integers: exact in double), then the chunk's PPL
 *                sums nll, nll2 and its scored rows (zeros without process_output).
 * The entries (the layout) are those the first chunk creates: every chunk runs the same
 * products, so every chunk, on every rank, creates the same ones. */

#define PPL_VALUES 3

typedef struct chunk_stats {
    imatrix one;             /* the chunk being collected (entries kept, zeroed between chunks) */
    ppl_stats ppl;           /* its PPL sums (process_output) */
    size_t n_sums, n_counts; /* the two vectors' lengths, once the layout is known */
    float *sums;             /* [n_sums] */
    double *counts;          /* [n_counts] */
} chunk_stats;

static void chunk_stats_free(chunk_stats *cs) {
    imatrix_free(&cs->one);
    free(cs->sums);
    free(cs->counts);
}

static void chunk_zero(chunk_stats *cs) {
    for (size_t i = 0; i < cs->one.n; i++) {
        imatrix_entry *e = &cs->one.e[i];
        memset(e->sum2, 0, sizeof(float) * (size_t)(e->n_in * e->n_mat));
        memset(e->counts, 0, sizeof(int64_t) * (size_t)e->n_mat);
    }
    memset(&cs->ppl, 0, sizeof cs->ppl);
}

/* The vectors' lengths from the entries, and their buffers. */
static int chunk_layout(chunk_stats *cs, slmc_err *err) {
    cs->n_sums = 0;
    cs->n_counts = PPL_VALUES;
    for (size_t i = 0; i < cs->one.n; i++) {
        cs->n_sums += (size_t)(cs->one.e[i].n_in * cs->one.e[i].n_mat);
        cs->n_counts += (size_t)cs->one.e[i].n_mat;
    }
    cs->sums = malloc(sizeof(float) * (cs->n_sums ? cs->n_sums : 1));
    cs->counts = malloc(sizeof(double) * cs->n_counts);
    if (!cs->sums || !cs->counts) return slmc_fail(err, NULL, "out of memory for %zu sums", cs->n_sums);
    return 0;
}

/* The chunk's matrix into the two vectors. */
static void chunk_pack(chunk_stats *cs) {
    size_t s = 0, c = 0;
    for (size_t i = 0; i < cs->one.n; i++) {
        const imatrix_entry *e = &cs->one.e[i];
        memcpy(cs->sums + s, e->sum2, sizeof(float) * (size_t)(e->n_in * e->n_mat));
        s += (size_t)(e->n_in * e->n_mat);
        for (int64_t k = 0; k < e->n_mat; k++) cs->counts[c++] = (double)e->counts[k];
    }
    cs->counts[c++] = cs->ppl.nll;
    cs->counts[c++] = cs->ppl.nll2;
    cs->counts[c] = (double)cs->ppl.count;
}

/* The layout as bytes: per entry int64 n_in, int64 n_mat, int64 name length, the name. */
static int layout_bytes(const imatrix *one, uint8_t **out, size_t *n, slmc_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < one->n; i++) total += 3 * sizeof(int64_t) + strlen(one->e[i].name);
    uint8_t *b = malloc(total ? total : 1);
    if (!b) return slmc_fail(err, NULL, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < one->n; i++) {
        const int64_t head[3] = {one->e[i].n_in, one->e[i].n_mat, (int64_t)strlen(one->e[i].name)};
        memcpy(b + at, head, sizeof head);
        memcpy(b + at + sizeof head, one->e[i].name, (size_t)head[2]);
        at += sizeof head + (size_t)head[2];
    }
    *out = b;
    *n = total;
    return 0;
}

/* The entries of rank 0's layout, created in one (a rank that evaluated no chunk). */
static int layout_adopt(imatrix *one, const uint8_t *b, size_t n, slmc_err *err) {
    char name[4096];
    for (size_t at = 0; at < n;) {
        int64_t head[3];
        if (n - at < sizeof head) return slmc_fail(err, NULL, "a malformed imatrix layout from rank 0");
        memcpy(head, b + at, sizeof head);
        at += sizeof head;
        if (head[2] < 1 || (size_t)head[2] >= sizeof name || (size_t)head[2] > n - at)
            return slmc_fail(err, NULL, "a malformed imatrix layout from rank 0");
        memcpy(name, b + at, (size_t)head[2]);
        name[head[2]] = 0;
        at += (size_t)head[2];
        if (!imatrix_entry_get(one, name, head[0], head[1], NULL, err)) return -1;
    }
    return 0;
}

/* Every rank takes rank 0's layout: a rank that evaluated chunks checks it made the same
 * entries (the same products: the same model and chunk length), one that evaluated none
 * creates them. Returns this rank's status, for the caller to agree on; *comm_failed when the
 * broadcast could not happen (the job then ends: the others would wait for it forever). */
static int layout_share(const comm *job, chunk_stats *cs, bool have_chunks, bool *comm_failed, slmc_err *err) {
    uint8_t *mine = NULL;
    size_t n_mine = 0;
    int rc = have_chunks || job->rank == 0 ? layout_bytes(&cs->one, &mine, &n_mine, err) : 0;
    if (rc != 0 && job->rank == 0) {
        *comm_failed = true;
        return -1;
    }
    void *buf = job->rank == 0 ? mine : NULL;
    size_t n = n_mine;
    if (comm_bcast_alloc(job, &buf, &n, 0, err) != 0) {
        free(mine);
        *comm_failed = true;
        return -1;
    }
    if (job->rank != 0) {
        if (rc == 0 && have_chunks && (n != n_mine || memcmp(mine, buf, n) != 0))
            rc = slmc_fail(err, NULL, "its chunks ran other products than rank 0's: not the same model?");
        else if (rc == 0 && !have_chunks)
            rc = layout_adopt(&cs->one, buf, n, err);
        free(buf);
    }
    free(mine);
    if (rc == 0 && !have_chunks) rc = chunk_layout(cs, err);
    return rc;
}

/* The joined sums into im (which may hold merged files): entries in the chunks' order, sums
 * and counts added; a sum that is no longer finite is refused, as llama.cpp stops there. */
static int merge_total(imatrix *im, const chunk_stats *cs, const float *sums, const double *counts, ppl_stats *ppl,
                       slmc_err *err) {
    size_t s = 0, c = 0;
    for (size_t i = 0; i < cs->one.n; i++) {
        const imatrix_entry *e = &cs->one.e[i];
        imatrix_entry *d = imatrix_entry_get(im, e->name, e->n_in, e->n_mat, NULL, err);
        if (!d) return -1;
        for (int64_t j = 0; j < e->n_in * e->n_mat; j++) {
            d->sum2[j] += sums[s + (size_t)j];
            if (!isfinite(d->sum2[j]))
                return slmc_fail(err, NULL, "%s: the sum of squares of column %lld became %f", e->name,
                                 (long long)(j % e->n_in), (double)d->sum2[j]);
        }
        s += (size_t)(e->n_in * e->n_mat);
        for (int64_t k = 0; k < e->n_mat; k++) d->counts[k] += llround(counts[c++]);
    }
    ppl->nll = counts[c];
    ppl->nll2 = counts[c + 1];
    ppl->count = llround(counts[c + 2]);
    return 0;
}

/* Session, context and the whole text's tokens; the chunk count; the logits buffer. */
static int open_text(llm_session *s, text_tokens *text, float **logits, const imatrix_opts *o, imatrix_result *r,
                     slmc_err *err) {
    const int n_ctx = r->n_ctx;
    if (llm_session_open(s, o->model, o->tokenizer, err) != 0) return -1;
    if (llm_session_context(s, n_ctx, n_ctx, o->n_threads, err) != 0) return -1;
    if (text_tokenize(&s->m, o->text, 0, "imatrix", text, err) != 0) return -1;
    r->n_tokens = text->n;
    if ((int64_t)text->n < 2 * (int64_t)n_ctx)
        return slmc_fail(err, o->text, "has %zu tokens; imatrix with -c %d needs at least %d", text->n, n_ctx, 2 * n_ctx);
    r->n_chunk = ppl_chunk_count((int64_t)text->n, n_ctx, o->max_chunks);
    const int64_t n_vocab = s->lm.cfg.n_vocab;
    if (o->process_output && !(*logits = malloc(sizeof(float) * (size_t)n_ctx * (size_t)n_vocab)))
        return slmc_fail(err, o->model, "out of memory for %d rows of %lld logits", n_ctx, (long long)n_vocab);
    return 0;
}

/* Run the model over this rank's chunks, each into its own matrix, and join all chunks'
 * matrices into im (every rank gets the total). Every failure is agreed among the ranks. */
static int collect(imatrix *im, const imatrix_opts *o, const imatrix_hooks *h, imatrix_result *r, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    const int n_ctx = r->n_ctx;
    llm_session s;
    memset(&s, 0, sizeof s);
    text_tokens text = {0};
    float *logits = NULL; /* process_output: [n_ctx][n_vocab], every position's */
    chunk_stats cs;
    memset(&cs, 0, sizeof cs);
    imatrix_init(&cs.one, n_ctx);
    comm_sum sums, counts;
    bool sums_open = false;
    float *tot_sums = NULL;
    double *tot_counts = NULL;
    int rc = comm_agree(job, open_text(&s, &text, &logits, o, r, err), err);
    if (rc != 0) goto done;

    int64_t lo, hi;
    comm_share(job, r->n_chunk, job->rank, &lo, &hi);
    const int64_t n_vocab = s.lm.cfg.n_vocab;
    const double t0 = now_seconds();
    int st = 0;
    for (int64_t c = lo; st == 0 && c < hi; c++) {
        const int32_t *chunk = text.ids + (size_t)c * (size_t)n_ctx;
        chunk_zero(&cs);
        if (imatrix_eval_chunk(&cs.one, &s.ctx, chunk, n_ctx, text.bos, o->process_output, logits, err) != 0) {
            st = slmc_fail_prefix(err, o->model);
            break;
        }
        /* the logits exist anyway: score the chunk's second half as llama-perplexity does */
        if (logits) ppl_accumulate(&cs.ppl, logits + (size_t)ppl_first(n_ctx) * (size_t)n_vocab, n_vocab, chunk, n_ctx);
        if (c == lo) { /* the first chunk made the entries: now the sums know their lengths */
            st = chunk_layout(&cs, err);
            if (st == 0) st = comm_sum_init(&sums, job, COMM_F32, cs.n_sums, r->n_chunk, err);
            if (st == 0) st = comm_sum_init(&counts, job, COMM_F64, cs.n_counts, r->n_chunk, err);
            if (st != 0) break;
            sums_open = true;
        }
        chunk_pack(&cs);
        if (comm_sum_add(&sums, cs.sums, err) != 0 || comm_sum_add(&counts, cs.counts, err) != 0) {
            st = -1;
            break;
        }
        const int done = (int)(c - lo + 1);
        if (h && h->chunk_done && h->chunk_done(h->ud, done, (int)(hi - lo), now_seconds() - t0) != 0)
            st = slmc_fail(err, o->model, "imatrix stopped after chunk %lld", (long long)c + 1);
    }
    rc = comm_agree(job, st, err);
    r->eval_seconds = now_seconds() - t0; /* until the last rank is done */
    if (rc != 0) goto done;

    /* every rank's sums have the lengths of rank 0's layout (rank 0 always has a chunk) */
    bool comm_failed = false;
    st = job->size > 1 ? layout_share(job, &cs, lo < hi, &comm_failed, err) : 0;
    if (comm_failed) { rc = -1; goto done; }
    if (st == 0 && !sums_open) {
        st = comm_sum_init(&sums, job, COMM_F32, cs.n_sums, r->n_chunk, err);
        if (st == 0) st = comm_sum_init(&counts, job, COMM_F64, cs.n_counts, r->n_chunk, err);
        if (st == 0) sums_open = true;
    }
    if (st == 0) {
        tot_sums = malloc(sizeof(float) * (cs.n_sums ? cs.n_sums : 1));
        tot_counts = malloc(sizeof(double) * cs.n_counts);
        if (!tot_sums || !tot_counts) st = slmc_fail(err, o->model, "out of memory for %zu sums", cs.n_sums);
    }
    if ((rc = comm_agree(job, st, err)) != 0) goto done;
    /* the chunks joined in the tree over the chunk index: the same bits for any number of ranks */
    if ((rc = comm_sum_finish(&sums, tot_sums, err)) != 0 || (rc = comm_sum_finish(&counts, tot_counts, err)) != 0)
        goto done;
    st = merge_total(im, &cs, tot_sums, tot_counts, &r->ppl, err);
    if (st == 0) st = imatrix_add_dataset(im, o->text, err);
    if (st != 0) slmc_fail_prefix(err, o->model);
    rc = comm_agree(job, st, err);
done:
    if (sums_open) {
        comm_sum_free(&sums);
        comm_sum_free(&counts);
    }
    free(tot_sums);
    free(tot_counts);
    chunk_stats_free(&cs);
    free(logits);
    text_tokens_free(&text);
    llm_session_close(&s);
    return rc;
}

int imatrix_run(const imatrix_opts *o, const imatrix_hooks *h, imatrix_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    const comm *job = ranks_job(o->comm);
    const double t0 = now_seconds();
    if (o->text) r->n_ctx = o->n_ctx > 0 ? o->n_ctx : IMATRIX_DEFAULT_CHUNK_SIZE;
    imatrix im;
    /* the chunk size: this run's, else the first GGUF input's, else llama.cpp's 512 */
    imatrix_init(&im, o->text ? r->n_ctx : o->n_ctx > 0 ? o->n_ctx : 0);
    int rc = 0;
    if (!o->model != !o->text) rc = slmc_fail(err, o->model ? o->model : o->text, "a model and a text go together");
    for (int i = 0; rc == 0 && i < o->n_in_files; i++) rc = imatrix_read(&im, o->in_files[i], err);
    /* every rank reads the inputs (so every rank holds the whole result); a failure on any is
     * every rank's before the collection starts */
    rc = comm_agree(job, rc, err);
    if (rc == 0 && o->text) {
        rc = collect(&im, o, h, r, err);
        /* a fresh matrix is written in name order (llama.cpp's GGUF order); merged files keep theirs */
        if (rc == 0 && o->n_in_files == 0) imatrix_sort(&im);
    }
    if (rc == 0) {
        int st = imatrix_finish(&im, err);
        /* rank 0 alone writes; the others learn how that went */
        if (st == 0 && job->rank == 0 && o->out)
            st = o->out_gguf ? imatrix_write_gguf(&im, o->out, err) : imatrix_write_dat(&im, o->out, err);
        if (st == 0 && job->rank == 0 && o->hdf5) st = imatrix_write_hdf5(&im, o->hdf5, o->model, err);
        rc = comm_agree(job, st, err);
    }
    r->n_entries = im.n;
    r->chunk_size = im.chunk_size;
    r->chunk_count = im.chunk_count;
    r->seconds = now_seconds() - t0;
    imatrix_free(&im);
    return rc;
}
