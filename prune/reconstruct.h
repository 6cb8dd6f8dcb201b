/* reconstruct.h - structured pruning with least-squares reconstruction (structured OBS).
 *
 * Removing FFN channel c makes the layer's output lose ffn_down[:, c] h_c on every token;
 * removing a head loses attn_output[:, head] o_head. The kept columns of the output projection
 * can absorb much of that: over calibration tokens, with G = sum_t x_t x_t^T the Gram matrix
 * of the projection's input x (the FFN activation h, or the concatenated head outputs o), the
 * refit W' of the kept columns K minimising sum_t ||W x_t - W' x_{K,t}||^2 is
 *     W' = W G[:, K] G[K, K]^-1.
 * Optimal Brain Surgeon gives it one unit at a time. With Ginv = (G + lambda I)^-1 and a unit
 * being a block B of columns (one FFN channel, one query head, or a KV group's query heads),
 *     cost of removing B   s_B = sum over output rows e of  W[e,B] (Ginv[B,B])^-1 W[e,B]^T
 *     refit                W   -= W[:,B] (Ginv[B,B])^-1 Ginv[B,:]
 *     inverse without B    Ginv -= Ginv[:,B] (Ginv[B,B])^-1 Ginv[B,:]
 * and the greedy order (remove the unit of least cost, update, repeat) picks the units too:
 * "--reconstruct" both re-selects, within each layer, the channels and heads to remove (the
 * same counts the plan asks for, the same grouped-query constraints) and stores the refit
 * ffn_down / attn_output, which prune_apply then writes instead of the input's columns.
 * The layer and hidden-width choices of the plan are left as they are.
 *
 * Calibration: the chunks run through the unpruned model (llama-perplexity's chunking, as the
 * activation scores), the ffn_act and attn_heads hooks accumulate G per layer in double: each
 * chunk's G on its own (packed upper triangles), the chunks joined by comm_sum's tree over
 * the chunk index, so one process and any number of ranks (prune_recon_opts.comm, every rank
 * its share of the chunks; collective, errors agreed) refit the same weights. The Gram
 * matrices of a group of layers that fits PRUNE_RECON_MEMORY (with the tree's partial sums)
 * are collected per pass; the pass is cut short after the group's last layer.
 * Cost per layer: G's inverse (n^3/3) and per removed unit O((n_out + n) * n) for the updates.
 *
 * Every family: x is what the forward pass feeds the projection (llm.h's hooks): the FFN
 * activation silu(gate)*up, gelu(gate)*up (gemma*), gelu(up x + b) (phi2) or that of phi3's
 * fused gate_up, and the concatenated head outputs. The biases of attn_output / ffn_down (phi2)
 * are not columns and stay; gemma2/3's post norms come after the projection, so the refit
 * matches the projection's output before them.
 */
#ifndef SLMC_PRUNE_RECONSTRUCT_H
#define SLMC_PRUNE_RECONSTRUCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "formats/error.h"
#include "formats/model.h"
#include "prune/prune.h"

#define PRUNE_RECON_DAMP 0.01                  /* lambda = damp * mean(diag G) */
#define PRUNE_RECON_MEMORY (1024u * 1024 * 1024) /* bytes of Gram matrices per calibration pass */

typedef struct prune_recon_opts {
    int n_ctx;               /* tokens per chunk */
    int max_chunks;          /* at most this many chunks (-1: all the text gives) */
    int32_t bos;             /* BOS id replacing each chunk's first token, -1 for none */
    double damp;             /* <= 0: PRUNE_RECON_DAMP */
    bool reselect;           /* choose the removed units by OBS cost (else only refit the plan's choice) */
    /* progress after each chunk of each pass (done of total; under mpirun this rank's chunks);
     * may be NULL */
    void (*progress)(void *ud, int done, int total);
    void *progress_ud;
    const comm *comm;        /* the ranks sharing the chunks (mpirun); NULL: one process */
} prune_recon_opts;

/* What the reconstruction did, for the summary. */
typedef struct prune_recon_info {
    int passes;              /* calibration passes (groups of layers) */
    int chunks;              /* chunks per pass */
    /* output error per calibration token of the FFN / attention cuts, summed over layers:
     * tr(dW G' dW^T) / tokens (see prune_obs_remove), the removed units dropped as they were
     * (before) and after the refit */
    double ffn_err_before, ffn_err_after;
    double att_err_before, att_err_after;
} prune_recon_info;

/* For every kept layer whose heads or FFN channels the plan cuts: collect G on the tokens,
 * re-select the removed units (o->reselect) and fill p->ffn_down_new / p->attn_output_new
 * with the refit columns. p must come from prune_select / prune_plan_identity for m. */
int prune_reconstruct(prune_plan *p, const model *m, const int32_t *tokens, size_t n_tokens,
                      const prune_recon_opts *o, prune_recon_info *info, slmc_err *err);

/* One projection, exposed for the tests: w [n_out][n] (rows are outputs) with Gram matrix g
 * [n][n] (symmetric, sum x x^T; not modified). Columns come in n / b units of b columns; the
 * unit u belongs to quota group u / (n_units / n_groups) and n_remove / n_groups units leave
 * every group (n_groups = 1: no constraint). With reselect the removed units are chosen by
 * the OBS cost, else removed[] (n_remove unit indices) is given. On return w holds the refit
 * weights (removed columns zero), removed[] the removed units, and *err_before / *err_after
 * the output error tr(dW G' dW^T) of dropping the units without / with the refit, G' the
 * damped matrix (G with 1 on zero diagonal entries, plus lambda I). */
int prune_obs_remove(double *w, int64_t n_out, const double *g, int64_t n, int64_t b, int64_t n_groups,
                     int64_t n_remove, bool reselect, double damp, int64_t *removed, double *err_before,
                     double *err_after, slmc_err *err);

#endif
