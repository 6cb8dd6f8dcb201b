/* imatrix.h - the importance matrix: per input column of every weight, the mean of x² over a
 * calibration text, as llama-imatrix collects it and llama-quantize consumes it.
 *
 * What is collected (llama-imatrix's semantics):
 *   - for every matrix product of a block weight (blk.*; output.weight only when asked) the
 *     input activations x [n_tokens][n_in] are seen just before the product;
 *   - per column j, sum2[j] += x[t][j]² token after token, in float, as llama.cpp does;
 *   - the number of tokens seen is kept per matrix (counts; one matrix for a dense weight);
 *   - weights that share an input (attn_q/attn_k/attn_v, ffn_gate/ffn_up) each get their own
 *     entry with identical values, because llama.cpp keys the statistics by weight name;
 *   - products over fewer than 16 tokens are ignored (llama.cpp's rule).
 * imatrix_run (imatrix_run.h) collects each chunk this way into a matrix of its own and joins
 * the chunks in a fixed tree over the chunk index, so that any number of mpirun ranks writes the
 * same file; imatrix_eval_chunk into one matrix keeps the running sum over every token.
 *
 * Files (both read and written, detected by their first four bytes):
 *   legacy .dat   int32 n_entries; per entry: int32 name length, name bytes, int32 ncall,
 *                 int32 nval, float values[nval]; then int32 last chunk, int32 length and the
 *                 dataset file name. values[j] = sum2[j] / count * ncall, where ncall is the
 *                 number of chunks (calls) the entry saw: llama-quantize divides by ncall again,
 *                 so what reaches the quantizer is sum2 / count = mean x².
 *   GGUF          general.type = "imatrix", imatrix.datasets (string array),
 *                 imatrix.chunk_count and imatrix.chunk_size (u32); per entry the F32 tensors
 *                 "<name>.in_sum2" [n_in, n_mat] (raw sums) and "<name>.counts" [1, n_mat].
 *   Converting .dat to sums needs a chunk size (not stored in a .dat): sum2 = value * chunk_size
 *   and count = ncall * chunk_size, as llama.cpp does. With a power-of-two chunk size the
 *   conversion is exact, so .dat -> GGUF -> .dat gives the same bytes.
 *
 * See docs/imatrix.md.
 */
#ifndef SLMC_IMATRIX_H
#define SLMC_IMATRIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eval/llm.h"
#include "formats/error.h"
#include "formats/model.h"

#define IMATRIX_MIN_TOKENS 16          /* llama.cpp ignores smaller products */
#define IMATRIX_DEFAULT_CHUNK_SIZE 512 /* llama-imatrix's default n_ctx: the .dat chunk size guess */

typedef struct imatrix_entry {
    char *name;         /* the weight's GGUF name, "blk.0.attn_q.weight" (owned) */
    int64_t n_in;       /* columns: the weight's row length, i.e. the input size of its product */
    int64_t n_mat;      /* matrices sharing the entry: 1 for a dense weight, experts for MoE */
    float *sum2;        /* [n_mat][n_in] sum of x² over every token seen (float, like llama.cpp) */
    int64_t *counts;    /* [n_mat] tokens accumulated into each matrix */
    float *importance;  /* [n_mat][n_in] sum2 / count (1 where count is 0): what the quantizer
                           weighs columns by; filled by imatrix_finish, NULL before */
} imatrix_entry;

typedef struct imatrix {
    imatrix_entry *e;   /* [n] entries, in file order (collected ones sorted by name) */
    size_t n, cap;
    char **datasets;    /* [n_datasets] calibration texts, oldest first (owned) */
    size_t n_datasets;
    int32_t chunk_size; /* tokens per chunk (n_ctx); 0 until known (a GGUF file sets it) */
    int32_t chunk_count;/* chunks accumulated: largest count / chunk_size (set by imatrix_finish) */
    char *path;         /* last file read, for messages about the importance (owned, may be NULL) */
} imatrix;

/* An empty matrix. chunk_size 0 means "take it from the first GGUF file read, else 512". */
void imatrix_init(imatrix *im, int32_t chunk_size);
void imatrix_free(imatrix *im);

/* Index of the entry for a weight name, or -1. */
int64_t imatrix_find(const imatrix *im, const char *name);

/* The entry for `name`, created zeroed when absent; fails when it exists with another shape.
 * `path` (may be NULL) names the file in the message. */
imatrix_entry *imatrix_entry_get(imatrix *im, const char *name, int64_t n_in, int64_t n_mat, const char *path,
                                 slmc_err *err);

/* Add one dense product's input x [n_tokens][n_in] to the entry of `name` (created on first
 * use): sum2[j] += x[t][j]² for t in order, counts[0] += n_tokens. Fails on a shape change or
 * when a sum stops being finite (llama.cpp aborts there too). */
int imatrix_accumulate(imatrix *im, const char *name, const float *x, int n_tokens, int64_t n_in, slmc_err *err);

/* Evaluate one chunk of n_ctx tokens from an empty cache (chunk[0] replaced by bos when
 * bos >= 0, as llama-imatrix does; chunk itself is not modified) and accumulate the inputs of
 * every blk.* product, and of output.weight when process_output. The output head runs only
 * with process_output (on every position, as llama-imatrix requests all logits); logits, when
 * not NULL, then receives [n_ctx][n_vocab]. ctx must hold n_ctx positions in one batch
 * (n_batch >= n_ctx) so every product sees the whole chunk; hooks set on ctx are kept. */
int imatrix_eval_chunk(imatrix *im, llm_context *ctx, const int32_t *chunk, int n_ctx, int32_t bos,
                       bool process_output, float *logits, slmc_err *err);

/* Record a calibration text (its path as given). */
int imatrix_add_dataset(imatrix *im, const char *dataset, slmc_err *err);

/* Sort the entries by name (llama.cpp's GGUF order; collected matrices are written this way). */
void imatrix_sort(imatrix *im);

/* Merge a file (.dat or GGUF, by its magic) into im: sums and counts add, datasets append.
 * Errors name the file and what is wrong (truncation, counts, non-finite values, shapes). */
int imatrix_read(imatrix *im, const char *path, slmc_err *err);

/* Compute chunk_count and every entry's importance (after accumulating or reading). */
int imatrix_finish(imatrix *im, slmc_err *err);

/* imatrix_init(im, 0) + imatrix_read + imatrix_finish: a file ready for quantization. */
int imatrix_load(imatrix *im, const char *path, slmc_err *err);

/* The per-column importance of a weight, [n_mat * n_in] floats (n receives the count), in the
 * form quant_kernels.quantize_weighted takes (row r of matrix k uses importance + k*n_in);
 * NULL when the matrix has no entry (or imatrix_finish was not called). */
const float *imatrix_importance(const imatrix *im, const char *name, int64_t *n);

/* The table quantize_opts.importance wants for model m: (*table)[i] is the importance of
 * tensor i or NULL. Fails when an entry's length differs from the tensor's row length (or its
 * matrix count from ne[2]*ne[3]): the imatrix was made for another model. *n_found (may be
 * NULL) receives the number of tensors with an entry. The caller frees *table (not the arrays,
 * which belong to im). */
int imatrix_importance_table(const imatrix *im, const model *m, const float ***table, uint64_t *n_found,
                             slmc_err *err);

/* Writers (atomic: nothing is left at path on failure). */
int imatrix_write_dat(const imatrix *im, const char *path, slmc_err *err);
int imatrix_write_gguf(const imatrix *im, const char *path, slmc_err *err);
/* HDF5 export for analysis: per entry a float32 dataset named after the weight holding the
 * mean x² per column ([n_in], or [n_mat][n_in] for experts) and an attribute "counts" (int64
 * [n_mat], tokens seen); the root carries attributes format = "slmc-imatrix",
 * model, text (datasets joined by ';'), n_ctx (chunk size) and chunks (chunk count).
 * model may be NULL. Needs imatrix_finish first. */
int imatrix_write_hdf5(const imatrix *im, const char *path, const char *model_path, slmc_err *err);

#endif
