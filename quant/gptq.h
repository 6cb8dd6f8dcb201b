/* gptq.h - GPTQ (Frantar et al. 2022) onto ggml's block types.
 *
 * A linear layer y = W x (W: rows x cols, one GGUF row per output) is quantized so that the
 * output error over calibration inputs, sum_t ||W x_t - Q x_t||^2 = tr((W-Q) H (W-Q)^T) with
 * H = sum_t x_t x_t^T, is small, not just the weight error. Columns are fixed from left to
 * right; the error of every fixed column is fed forward into the columns not yet quantized
 * through the upper Cholesky factor U of H^-1 (H^-1 = U^T U), the update that keeps the
 * remaining output error least-squares optimal.
 *
 * ggml blocks share their scales over G = 32 or 256 consecutive columns of a row, so a column
 * cannot be rounded on its own. The variant here ("block decision, column feedback"):
 *   for each block of G columns [g, g+G), in order:
 *     1. every row's G current (already error-updated) values are quantized together by the
 *        type's importance-weighted kernel (quant_kernels.quantize_weighted) with importance
 *        diag(H) of those columns; the bytes are the final bytes of that block;
 *     2. the block is dequantized to Q, and for i = g .. g+G-1 in turn:
 *          e_i = (w_i - q_i) / U_ii,   w_j -= e_i U_ij  for every j > i
 *        where w_i already holds the updates from columns < i (also those inside the block),
 *        so the columns after i absorb exactly the error the block's fixed values leave.
 *   Updates to columns beyond the current lazy batch (128 columns, rounded up to whole
 *   blocks) are applied once per batch as one matrix product, as GPTQ's lazy batch updates do.
 * Rows are independent given U, so rows are processed in parallel; the result does not depend
 * on the thread count. Damping: H + lambda I with lambda = damp * mean(diag H); columns whose
 * input was never non-zero get H_ii = 1 (their weights are kept, not zeroed).
 *
 * gptq_calib collects the Hessians from a calibration text through the forward pass's
 * matmul_input hook, one transformer layer at a time (the pass is aborted once the layer's
 * last product has been seen). Two modes:
 *   parallel (gptq_calib_opts.sequential false): every layer's H comes from the unquantized
 *     model; one collection serves several output types at once.
 *   sequential (true, classic GPTQ): the forward pass that collects layer L's H runs
 *     token_embd and layers 0..L-1 with the bytes already written for this output type
 *     (handed back through gptq_calib_use_rows / the hook's `written` callback), so layer L
 *     is quantized for the inputs it will really see and compensates earlier layers' errors.
 *     The Hessians then depend on the output type: one output type per run (quantize_model
 *     with one target, gptq_calib_reset between targets). Layer L's own matrices all get H
 *     from the layer's unquantized weights (one collection per layer, not per product).
 *   fp target (fp_target true; sequential inputs): the target is the unquantized model's
 *     product W xf on its own input xf, not W x on the quantized model's input x. Every chunk
 *     runs twice (source weights, saving xf; written bytes, accumulating H = sum x x^T and
 *     C = sum xf x^T) and the weights are first replaced by the ridge least-squares fit
 *     W* = W + W (C - H)(H + lambda' I)^-1, lambda' = ridge * mean(diag H), which GPTQ then
 *     quantizes with H (sum ||W xf - Q x||^2 = tr((W*-Q) H (W*-Q)^T) + const, unridged).
 * See docs/gptq-and-fit.md.
 */
#ifndef SLMC_GPTQ_H
#define SLMC_GPTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "comm/comm.h"
#include "formats/error.h"
#include "formats/model.h"
#include "quant/quantize.h"

#define GPTQ_DEFAULT_DAMP 0.01
#define GPTQ_DEFAULT_RIDGE 1.0 /* fp target: the correction's lambda = ridge * mean(diag H) */
#define GPTQ_BATCH_COLUMNS 128 /* lazy batch width, rounded up to whole blocks */

/* ---------------------------------------------------------------- linear algebra (double) */

/* In place Cholesky of the symmetric positive definite n x n row-major a: on return the lower
 * triangle holds L with a = L L^T and the strict upper triangle is zero. -1 when a is not
 * positive definite (a pivot <= 0 or not finite). */
int gptq_cholesky(double *a, int64_t n);
/* The same with the plain loops, one dot product at a time: the reference gptq_cholesky and
 * gptq_spd_inverse are tested against, bit for bit. */
int gptq_cholesky_ref(double *a, int64_t n);
/* In place inverse of the symmetric positive definite a (through its Cholesky factor L:
 * M = L^-1, a^-1 = M^T M). gptq_spd_inverse_ref is the plain loops, one dot product at a time
 * (after gptq_cholesky_ref); gptq_spd_inverse gives the same bits with the sums laid out for
 * the cache. */
int gptq_spd_inverse(double *a, int64_t n);
int gptq_spd_inverse_ref(double *a, int64_t n);

/* ---------------------------------------------------------------- Hessian of one input */

typedef struct gptq_hessian {
    int64_t n;          /* input size (columns of the weights that read this input) */
    double *h;          /* [n][n] sum over tokens of x x^T (upper triangle while accumulating) */
    int64_t n_tokens;   /* tokens accumulated */
} gptq_hessian;

int gptq_hessian_init(gptq_hessian *hs, int64_t n, slmc_err *err);
void gptq_hessian_free(gptq_hessian *hs);
/* h += x^T x for x [n_tokens][n] (rows of one product's input). */
void gptq_hessian_add(gptq_hessian *hs, const float *x, int n_tokens);

/* The upper triangle of an n x n Gram matrix packed row after row (row i: entries i..n-1), the
 * form in which a chunk's sum is handed to comm_sum: half the values of the full matrix. */
size_t gptq_packed_len(int64_t n);
/* p += x^T x (upper triangle) for x [n_tokens][n], with the same additions as gptq_hessian_add. */
void gptq_packed_add(double *p, int64_t n, const float *x, int n_tokens);
/* dst += a^T b for a, b [n_tokens][n] (floats), in double: entry (i, j) adds a[t][i] b[t][j]
 * for t in order, skipping the tokens whose a[t][i] is 0 (gptq_hessian_add's additions).
 * packed: dst is the packed upper triangle (j >= i); else the full [n][n]. fast = false runs
 * the plain loop (the reference); true, register tiles where the CPU has AVX-512 and every
 * value is finite, with the same bits (tests/test_gptq.c). dst's entries must not be -0.
 * Returns whether the tiles ran. */
bool gptq_gram_add(double *dst, int64_t n, const float *a, const float *b, int n_tokens, bool packed, bool fast);
/* h [n][n] = the packed upper triangle, zeros below the diagonal (as gptq_hessian_add leaves it). */
void gptq_packed_unpack(const double *p, int64_t n, double *h);

/* What quantization needs from a Hessian, computed once and shared by the weights reading the
 * same input (attn_q/k/v; ffn_gate/up) and by every output type. */
typedef struct gptq_factor {
    int64_t n;          /* columns */
    double *u;          /* [n][n] upper triangular U with (H + lambda I)^-1 = U^T U */
    float *diag;        /* [n] diag(H) / n_tokens (mean x^2; 1 for dead columns): block importance */
} gptq_factor;

/* Damp H (copied; hs is unchanged apart from being symmetrised) and factor its inverse. When
 * the damped matrix is still not positive definite the damping is raised tenfold (up to
 * three times) before failing. */
int gptq_factor_init(gptq_factor *f, gptq_hessian *hs, double damp, slmc_err *err);
void gptq_factor_free(gptq_factor *f);

/* Quantize w [rows][cols] (cols = f->n) to `type` into out (rows * type_nbytes(type, cols)
 * bytes) with the GPTQ variant above. w is not modified. Float types (block size 1) are
 * converted directly. Fails when cols is not a whole number of blocks or the type has no
 * kernels. */
int gptq_quantize(const gptq_factor *f, const float *w, int64_t rows, int64_t cols, int type, uint8_t *out,
                  slmc_err *err);

/* ---------------------------------------------------------------- calibration over a model */

typedef struct gptq_calib gptq_calib; /* opaque: model, forward pass, tokens, one layer's Hessians */

typedef struct gptq_calib_opts {
    const char *text;   /* calibration text file */
    int n_ctx;          /* tokens per chunk (-c), e.g. 256 */
    int chunks;         /* chunks of the text used (--chunks); <= 0: every whole chunk */
    double damp;        /* lambda = damp * mean(diag H); <= 0 means GPTQ_DEFAULT_DAMP */
    bool sequential;    /* collect layer L through the already quantized layers 0..L-1 (see above) */
    bool fp_target;     /* sequential, and fit the unquantized model's products (implies sequential) */
    double ridge;       /* fp target: correction ridge (see above); <= 0 means GPTQ_DEFAULT_RIDGE */
    const comm *comm;   /* the ranks sharing the chunks (mpirun; see "Under mpirun" below); NULL:
                           one process (comm_solo) */
} gptq_calib_opts;

/* Tokenize the start of the text with m's tokenizer and bind the forward pass to m (which must
 * outlive the calibration). Fails when m has no tokenizer, the text has fewer than one chunk,
 * or the architecture is not one the forward pass runs. */
int gptq_calib_open(gptq_calib **out, const model *m, const gptq_calib_opts *o, slmc_err *err);
void gptq_calib_close(gptq_calib *c);

/* true when tensor ti is a matrix GPTQ handles: blk.N.{attn_q,attn_k,attn_v,attn_output,
 * ffn_gate,ffn_up,ffn_down}.weight and output.weight (not token_embd, a lookup table). */
bool gptq_calib_handles(const gptq_calib *c, uint64_t ti);

/* Quantize tensor ti (its F32 values w [rows][cols]) with GPTQ; collects the Hessians of the
 * tensor's layer first when they are not the ones in memory (the previous layer's are freed). */
int gptq_calib_quantize(gptq_calib *c, uint64_t ti, int type, const float *w, int64_t rows, int64_t cols,
                        uint8_t *out, slmc_err *err);

/* Sequential mode: rows [r0, r0+nr) of tensor ti as written to the output, `type` bytes in
 * llama.cpp's row order. Once all rows of a matrix the forward pass uses (token_embd, a layer
 * matrix, output) have arrived, later collections run with them instead of the source weights
 * (natively when the evaluator runs the type, else dequantized to F32). Other tensors are
 * ignored; in parallel mode this does nothing. */
int gptq_calib_use_rows(gptq_calib *c, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes,
                        slmc_err *err);

/* Forget the Hessians in memory and every tensor handed to gptq_calib_use_rows (the forward
 * pass is back on the source weights): start of the next output type in sequential mode. */
void gptq_calib_reset(gptq_calib *c);

/* The Hessian of tensor ti's input (collecting its layer first when it is not in memory), as
 * gptq_calib_quantize would use it; valid until the next collection or reset. For tests. */
int gptq_calib_hessian(gptq_calib *c, uint64_t ti, const gptq_hessian **out, slmc_err *err);

/* Chunks and tokens used, forward passes run, seconds spent collecting (for reports). */
typedef struct gptq_calib_info {
    int chunks, n_ctx, passes;
    double collect_seconds, quant_seconds;
} gptq_calib_info;
void gptq_calib_get_info(const gptq_calib *c, gptq_calib_info *info);

/* The hook quantize_model calls for whole tensors (quantize_opts.tensor_hook); in sequential
 * mode its `written` callback feeds gptq_calib_use_rows (and fails for a second target). */
quant_tensor_hook gptq_calib_hook(gptq_calib *c);

/* ---------------------------------------------------------------- under mpirun
 * A layer's Hessians are sums over the calibration chunks, taken in at most 8 units (runs of
 * consecutive chunks, one chunk each up to 8): each unit's x x^T (and xf x^T) is collected
 * chunk after chunk on its own, and the units are joined by comm_sum's fixed tree over the
 * unit index (comm.h), for one process as for N ranks: the same Hessians, the same bytes.
 *
 * With several ranks (gptq_calib_opts.comm), every rank calls gptq_calib_open (each tokenizes
 * the text and evaluates only its share of the chunks). Rank 0 runs quantize_model with the
 * hook; every collection it needs, every set of written rows (sequential mode) and every
 * gptq_calib_reset is sent to the other ranks, which follow it in gptq_calib_serve until
 * rank 0 calls gptq_calib_release. Memory per rank while a layer is collected: up to 4 copies
 * of its statistics (the unit being collected and the tree's partial sums; docs/quantize.md,
 * "GPTQ's memory"). More than 8 ranks leave the others idle. */

/* Ranks > 0: follow rank 0's commands until it releases them. Returns 0, or -1 with the
 * agreed error (any rank's, "rank R: ...") on every rank. */
int gptq_calib_serve(gptq_calib *c, slmc_err *err);
/* Rank 0, after quantize_model returned `status` (its message in err): release the others and
 * agree on the outcome. Returns 0 or -1 (every rank the same); in a job of one, status. */
int gptq_calib_release(gptq_calib *c, int status, slmc_err *err);

#endif
