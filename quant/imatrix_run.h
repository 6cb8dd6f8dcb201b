/* imatrix_run.h - `slmc imatrix` as one library call: merge existing importance matrices,
 * collect a new one over a calibration text as llama-imatrix does, and write the result.
 *
 *   1. read every in_files entry into one matrix (sums and counts add, datasets append);
 *   2. with a model and a text: tokenize the whole text with BOS (eval/text.h), cut it into
 *      min(max_chunks, tokens / n_ctx) chunks of n_ctx tokens and evaluate each from an empty
 *      cache, its first token replaced by BOS, collecting the input of every block product
 *      (imatrix_eval_chunk); a matrix collected from scratch is sorted by name;
 *   3. compute the importance (imatrix_finish) and write out (.dat or GGUF) and hdf5.
 *
 * How the chunks' statistics add up: each chunk's sums are collected on their own (x² token
 * after token within the chunk, in float, as llama.cpp adds them), then the chunks are joined
 * by comm_sum's fixed binary tree over the chunk index (comm/comm.h), the same additions for
 * one process as for any number of ranks. Token counts are integers and add exactly. With
 * process_output, the chunks' PPL sums (double) are joined the same way.
 *
 * Under mpirun (opts.comm with several ranks, eval/ranks.h) every rank reads the in_files,
 * opens the model and tokenizes the text, evaluates its share of the chunks, and the sums are
 * combined over the chunks; rank 0 alone writes out and hdf5: the files are the bytes one
 * process writes.
 *
 * Nothing is printed: progress goes to hooks->chunk_done, figures to the result. See
 * docs/imatrix.md and imatrix.h.
 */
#ifndef SLMC_IMATRIX_RUN_H
#define SLMC_IMATRIX_RUN_H

#include <stdbool.h>
#include <stddef.h>

#include "comm/comm.h"
#include "eval/perplexity.h"
#include "formats/error.h"

typedef struct imatrix_opts {
    const char *model;             /* the model to run, or NULL to merge / convert in_files only */
    const char *text;              /* the calibration text (UTF-8); given exactly when model is */
    const char *tokenizer;         /* llama2.c input: its tokenizer.bin or tokenizer.model; else NULL */
    const char *const *in_files;   /* [n_in_files] matrices to merge first (.dat or GGUF) */
    int n_in_files;
    int n_ctx;                     /* tokens per chunk, also the chunk size assumed for .dat inputs;
                                      0: with a text 512, else the first GGUF input's, else 512 */
    int max_chunks;                /* collect at most this many chunks; < 0: all the text holds */
    bool process_output;           /* also collect output.weight (and score the chunks' PPL) */
    const char *out;               /* the matrix file to write, or NULL */
    bool out_gguf;                 /* out as a GGUF imatrix (else llama.cpp's legacy .dat) */
    const char *hdf5;              /* also export the mean x² per column here (HDF5), or NULL */
    int n_threads;                 /* threads of the forward passes; 0: omp_get_max_threads() */
    const comm *comm;              /* the job whose ranks share the chunks (mpirun); NULL: one
                                      process (comm_solo). Every rank calls imatrix_run alike */
} imatrix_opts;

typedef struct imatrix_hooks {
    void *ud; /* passed back to the callback */
    /* After each chunk: chunks done (1..n_chunk), of n_chunk, and the seconds since the first
     * chunk started. Under mpirun each rank counts the chunks of its own share (n_chunk is the
     * share's size). Non-zero stops the run with an error. May be NULL. */
    int (*chunk_done)(void *ud, int done, int n_chunk, double seconds);
} imatrix_hooks;

typedef struct imatrix_result {
    size_t n_entries;       /* weights in the matrix written */
    int chunk_size;         /* its chunk size (tokens per chunk) */
    int chunk_count;        /* its chunk count (all inputs together) */
    int n_ctx;              /* the chunk length of this run's collection (0 without a text) */
    int n_chunk;            /* chunks collected from the text */
    size_t n_tokens;        /* tokens of the whole text */
    ppl_stats ppl;          /* process_output: the chunks' perplexity sums (ppl.count scored) */
    double seconds;         /* the whole run */
    double eval_seconds;    /* the forward passes */
} imatrix_result;

/* Run it all. Returns 0, or -1 with err naming the file at fault and the cause (each output
 * is written atomically: a failed one leaves nothing behind). h may be NULL. */
int imatrix_run(const imatrix_opts *o, const imatrix_hooks *h, imatrix_result *r, slmc_err *err);

#endif
