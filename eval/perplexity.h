/* perplexity.h - llama-perplexity's perplexity and KL-divergence statistics.
 *
 * Perplexity (llama.cpp tools/perplexity, the default mode):
 *   - the caller tokenizes the whole text with BOS (add_special) and passes the ids;
 *   - n_chunk = min(max_chunks, n_tokens / n_ctx) chunks of n_ctx consecutive tokens;
 *   - each chunk is evaluated from an empty cache in one batch, its first token replaced by
 *     BOS when the vocabulary adds BOS (bos >= 0 here);
 *   - positions j = n_ctx/2 .. n_ctx-2 are scored: nll = -log softmax(logits_j)[token j+1]
 *     (n_ctx - 1 - n_ctx/2 per chunk), accumulated as sums of nll and nll^2 in double;
 *   - PPL = exp(mean nll), stderr = PPL * sqrt((mean nll^2 - mean^2) / (count - 1)).
 *
 * KL divergence (--kl-divergence-base / --kl-divergence): the base model's scored rows are
 * kept as llama.cpp stores them, log-probabilities compressed to uint16 per vocabulary entry
 * (a float scale and minimum, then n_vocab uint16; entries below max-16 are clamped), and the
 * quantized model's logits are compared with those. Comparing two models side by side goes
 * through the same compression, so figures match llama.cpp's two-run procedure.
 *
 * These are the pieces; eval_run.h puts them together into the whole `slmc eval` run.
 */
#ifndef SLMC_PERPLEXITY_H
#define SLMC_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "eval/llm.h"
#include "formats/error.h"

/* ------------------------------------------------------------ perplexity */

typedef struct ppl_stats {
    double nll;       /* sum of -log p(next token) */
    double nll2;      /* sum of its squares */
    int64_t count;    /* scored tokens */
} ppl_stats;

/* Chunks llama-perplexity evaluates: min(max_chunks, n_tokens / n_ctx) (all when max_chunks < 0). */
int ppl_chunk_count(int64_t n_tokens, int n_ctx, int max_chunks);
/* First scored position (n_ctx/2) and rows scored per chunk (n_ctx - 1 - n_ctx/2). */
int ppl_first(int n_ctx);
int ppl_scored(int n_ctx);

/* Evaluate one chunk of n_ctx tokens from an empty cache (chunk[0] replaced by bos when
 * bos >= 0; chunk itself is not modified) and write the logits of the scored positions
 * n_ctx/2 .. n_ctx-2 to logits: [ppl_scored(n_ctx)][n_vocab]. ctx must hold n_ctx positions. */
int ppl_eval_chunk(llm_context *ctx, const int32_t *chunk, int n_ctx, int32_t bos, float *logits, slmc_err *err);

/* -log softmax(logits)[tok], computed as llama.cpp's log_softmax (max-subtracted, expf terms
 * summed in double). */
double ppl_nll(const float *logits, int64_t n_vocab, int32_t tok);
/* The same, always with the plain scalar loops (the reference the vector path is tested
 * against; both give the same bits). */
double ppl_nll_ref(const float *logits, int64_t n_vocab, int32_t tok);
/* Add the scored rows of one chunk (logits from ppl_eval_chunk) to s. */
void ppl_accumulate(ppl_stats *s, const float *logits, int64_t n_vocab, const int32_t *chunk, int n_ctx);
/* The two halves of ppl_accumulate, for a job whose ranks evaluate different chunks (eval/ranks.h):
 * the nll of each scored row of one chunk into v[ppl_scored(n_ctx)], and the fold of n row
 * values into s in order. Folding every chunk's values in chunk order gives the same bits as
 * ppl_accumulate chunk after chunk. */
void ppl_chunk_nll(const float *logits, int64_t n_vocab, const int32_t *chunk, int n_ctx, double *v);
void ppl_add_nll(ppl_stats *s, const double *v, int64_t n);
double ppl_value(const ppl_stats *s);
double ppl_stderr(const ppl_stats *s); /* 0 when undefined */

/* ------------------------------------------------------------ KL divergence */

/* uint16 slots per compressed row: 2*((n_vocab+1)/2) + 4 (the first 4 hold two floats). */
size_t kld_row_u16(int64_t n_vocab);
/* Compress a row of logits to llama.cpp's base log-prob form; returns the row's nll for tok. */
double kld_pack_logprobs(const float *logits, int64_t n_vocab, int32_t tok, uint16_t *out);

typedef struct kld_stats {
    double sum_nll, sum_nll2;             /* the compared model */
    double sum_nll_base, sum_nll_base2;   /* the base model (from its compressed rows) */
    double sum_nll_nll_base;
    double sum_kld, sum_kld2;
    double sum_p_diff, sum_p_diff2, sum_p_diff4; /* p = probability of the correct token */
    float max_p_diff;
    int64_t n_same_top;                   /* rows whose argmax agrees */
    int64_t count;                        /* rows */
    float *kld_values;                    /* [count] per-row KLD (for percentiles) */
    float *p_diff_values;                 /* [count] per-row p - p_base */
    size_t cap;                           /* allocated entries of the two arrays */
} kld_stats;

/* Compare n_rows rows of logits [n_rows][n_vocab] with the base's compressed rows
 * [n_rows][kld_row_u16(n_vocab)]; next[i] is the correct token of row i. */
int kld_accumulate(kld_stats *s, const float *logits, const uint16_t *base, int n_rows, int64_t n_vocab,
                   const int32_t *next, slmc_err *err);
/* Side by side: compress base_logits (same shape as logits) then kld_accumulate. */
int kld_compare(kld_stats *s, const float *logits, const float *base_logits, int n_rows, int64_t n_vocab,
                const int32_t *next, slmc_err *err);

/* What one row contributes to kld_stats (llama.cpp's precisions). kld_accumulate is kld_rows
 * then kld_add_rows; a job whose ranks evaluate different chunks computes the rows of its own
 * chunks, gathers them and folds them all in chunk order (eval/ranks.h): the same bits. */
typedef struct kld_row {
    float nll, nll_base;
    double kld;
    float p_diff;
    int32_t same_top;
} kld_row;

/* rows[i] for each of n_rows rows (arguments as kld_accumulate). */
void kld_rows(const float *logits, const uint16_t *base, int n_rows, int64_t n_vocab, const int32_t *next,
              kld_row *rows);
/* Compress base_logits, then kld_rows (arguments as kld_compare). */
int kld_compare_rows(const float *logits, const float *base_logits, int n_rows, int64_t n_vocab, const int32_t *next,
                     kld_row *rows, slmc_err *err);
/* Fold n_rows rows into s, in order. */
int kld_add_rows(kld_stats *s, const kld_row *rows, int64_t n_rows, slmc_err *err);
void kld_stats_free(kld_stats *s);

/* Every figure llama-perplexity --kl-divergence prints (values, not percentages, except
 * where noted by the report). */
typedef struct kld_summary {
    int64_t count;
    double ppl, ppl_unc;                  /* Mean PPL(Q) */
    double ppl_base, ppl_base_unc;        /* Mean PPL(base) */
    double log_ppl_cor;                   /* Cor(ln(PPL(Q)), ln(PPL(base))) */
    double log_ppl_ratio, log_ppl_ratio_unc; /* Mean ln(PPL(Q)/PPL(base)) */
    double ppl_ratio, ppl_ratio_unc;      /* Mean PPL(Q)/PPL(base) */
    double ppl_diff, ppl_diff_unc;        /* Mean PPL(Q)-PPL(base) */
    double kld_mean, kld_unc;
    /* KLD: max, 99.9%, 99%, 95%, 90%, median, 10%, 5%, 1%, 0.1%, min */
    double kld_pct[11];
    double p_diff_mean, p_diff_unc;
    /* delta p: max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1, min */
    double p_diff_pct[13];
    double p_diff_rms, p_diff_rms_unc;
    double same_top, same_top_unc;        /* fraction of rows with the same top token */
} kld_summary;

/* Statistics of s (needs at least 2 rows; llama.cpp prints them from 100 rows on). */
int kld_summarize(const kld_stats *s, kld_summary *out, slmc_err *err);
/* The summary as llama-perplexity prints it (its three "======" sections) into buf;
 * returns the length, or -1 when cap is too small. */
int kld_report(const kld_summary *k, char *buf, size_t cap);

#endif
