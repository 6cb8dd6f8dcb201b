/* eval_run.h - `slmc eval` as one library call: the perplexity of a model on a text, computed
 * as llama-perplexity computes it, and with a base model the KL divergence from it.
 *
 *   1. open the model (and the base model, or the file of saved base log-probabilities);
 *   2. tokenize the whole text with BOS (eval/text.h);
 *   3. cut it into min(max_chunks, tokens / n_ctx) chunks of n_ctx tokens and evaluate each
 *      from an empty cache, its first token replaced by BOS (perplexity.h: ppl_eval_chunk);
 *   4. score positions n_ctx/2 .. n_ctx-2 of each chunk (ppl_accumulate) and, with a base,
 *      compare the same rows with the base's (kld_compare / kld_accumulate); with
 *      save_logits store this model's rows for later runs (logits_store.h);
 *   5. summarize: PPL and its standard error, the KL-divergence figures.
 *
 * Nothing is printed: progress goes to hooks->chunk_done, figures to the result. See
 * docs/eval.md.
 *
 * Under mpirun (opts.comm with several ranks, eval/ranks.h) every rank opens the models and
 * tokenizes the text, evaluates its share of the chunks, and the scored rows' values (each
 * row's nll, and with a base its KL-divergence row) are gathered and folded in chunk order on
 * every rank: the figures are the bits one process computes. save_logits is refused there
 * (the compressed rows are the base model's whole output: rank 0 alone would have to write
 * all of them); kl_logits is read by every rank, each its own chunks.
 */
#ifndef SLMC_EVAL_RUN_H
#define SLMC_EVAL_RUN_H

#include <stdbool.h>
#include <stddef.h>

#include "comm/comm.h"
#include "eval/perplexity.h"
#include "formats/error.h"

#define EVAL_DEFAULT_CTX 512 /* llama-perplexity's default chunk length */

typedef struct eval_opts {
    const char *model;       /* the model to evaluate (any input slmc reads) */
    const char *text;        /* the evaluation text (UTF-8), tokenized whole */
    const char *tokenizer;   /* llama2.c input: its tokenizer.bin or tokenizer.model; else NULL */
    int n_ctx;               /* chunk length; 0: the kl_logits file's, else EVAL_DEFAULT_CTX */
    int max_chunks;          /* evaluate at most this many chunks; < 0: all the text holds */
    const char *kl_base;     /* base model run side by side for the KL divergence, or NULL */
    const char *kl_logits;   /* base log-probabilities saved by an earlier run (save_logits), or
                                NULL; not together with kl_base */
    const char *save_logits; /* store this run's scored log-probabilities here (HDF5), or NULL */
    int n_threads;           /* threads of the forward passes; 0: omp_get_max_threads() */
    const comm *comm;        /* the job whose ranks share the chunks (mpirun); NULL: one process
                                (comm_solo). Every rank calls eval_run with the same options */
} eval_opts;

typedef struct eval_hooks {
    void *ud; /* passed back to the callbacks */
    /* After each chunk: chunks done (1..n_chunk), of n_chunk, the running PPL, and the seconds
     * since the first chunk started. Under mpirun each rank counts the chunks of its own share
     * (n_chunk is the share's size) and the PPL is that of its own chunks so far. Non-zero
     * stops the run with an error. May be NULL. */
    int (*chunk_done)(void *ud, int done, int n_chunk, double ppl, double seconds);
} eval_hooks;

typedef struct eval_result {
    int n_ctx;                /* the chunk length used */
    int n_chunk;              /* chunks evaluated */
    size_t n_tokens;          /* tokens of the whole text */
    ppl_stats stats;          /* the sums over the scored tokens (stats.count: how many) */
    double ppl, ppl_stderr;   /* ppl_value(&stats), ppl_stderr(&stats) */
    bool have_kld;            /* a base was given: kld holds the comparison */
    kld_summary kld;          /* llama-perplexity's --kl-divergence figures (kld_report prints them) */
    double seconds;           /* from tokenizing to the end */
    double tokens_per_second; /* chunk tokens through the forward passes (both models' with
                                 kl_base) per second of evaluation (all ranks' together) */
} eval_result;

/* Run the whole evaluation. Returns 0, or -1 with err naming the file at fault (the model,
 * the text, the base or a logits file) and the cause. h may be NULL. */
int eval_run(const eval_opts *o, const eval_hooks *h, eval_result *r, slmc_err *err);

#endif
