/* importance.h - how much each attention head, FFN channel, hidden channel and layer matters.
 *
 * Three ways to rank, compared on equal terms by bench/prune.sh:
 *   activation  a calibration pass over text through the forward pass (eval/llm.h hooks), as
 *               Minitron does:
 *                 head    mean over tokens of the L2 norm of the head's attention output o_h
 *                         (attn_heads hook, before attn_output: head_act), ranked by the mean
 *                         norm of what it adds to the residual stream, W_o[:, head] o_h
 *                 ffn     mean over tokens of |silu(gate) * up| per channel (ffn_act hook:
 *                         ffn_act), ranked by that times the norm of the channel's ffn_down
 *                         column (the mean norm of its contribution to the residual stream)
 *                 hidden  mean |x| per channel of the norm outputs, taken at the first matrix
 *                         reading each (matmul_input hook): attn_q (phi3: attn_qkv) after
 *                         attn_norm, ffn_gate (phi3, without a gate: its fused ffn_up) after
 *                         ffn_norm; phi2's parallel block has only the attention norm. Per
 *                         layer; ranked by the sum over layers
 *                 layer   Block Influence 1 - cos(input, output) of the residual stream, mean
 *                         over tokens (layer_out hook; layer 0's input is the token embedding),
 *                         and, optionally, the perplexity of the calibration chunks with the
 *                         layer removed (the later layers keeping the sliding-window kind and
 *                         attention scale they have in the whole model: gemma2/3): layers are
 *                         ranked by that PPL increase when measured, else by Block Influence
 *   magnitude   weight norms: a head by the L2 norm of its attn_q rows (phi3: its Q rows of
 *               attn_qkv) and attn_output columns, an FFN channel by those of its ffn_gate/ffn_up
 *               rows (phi3's fused gate_up: rows c and n_ff + c; phi2: ffn_up only) and ffn_down
 *               column, a hidden channel by those of every weight touching it (the readers seen
 *               through their norm's weight; phi2's FFN through the attention norm), a layer by
 *               the norm of what it writes to the residual stream (attn_output and ffn_down)
 *   random      uniform draws from a seeded generator
 * Larger is more important in every score.
 */
#ifndef SLMC_PRUNE_IMPORTANCE_H
#define SLMC_PRUNE_IMPORTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "formats/error.h"
#include "formats/model.h"

typedef enum prune_method { PRUNE_ACTIVATION, PRUNE_MAGNITUDE, PRUNE_RANDOM } prune_method;

/* "activation", "magnitude", "random"; -1 when unknown. */
int prune_method_from_name(const char *name);
const char *prune_method_name(prune_method m);

typedef struct prune_scores {
    prune_method method;     /* how they were computed */
    int64_t n_layer, n_head, n_head_kv, head_dim, n_ff, n_embd; /* the model's shape */
    float *head;             /* [n_layer][n_head] what heads are ranked by */
    float *head_act;         /* [n_layer][n_head] activation: mean L2 norm of the head output o_h */
    float *ffn;              /* [n_layer][n_ff] what FFN channels are ranked by */
    float *ffn_act;          /* [n_layer][n_ff] activation: mean |silu(gate)*up| */
    float *hidden;           /* [n_layer][n_embd] per-layer hidden channel scores */
    float *hidden_total;     /* [n_embd] what hidden channels are ranked by (sum over layers) */
    float *block_influence;  /* [n_layer] 1 - cos(in, out) (activation), else 0 */
    float *ppl_removed;      /* [n_layer] calibration PPL without the layer; NaN when not measured */
    float *layer;            /* [n_layer] what layers are ranked by */
    double base_ppl;         /* calibration PPL of the whole model (NaN when not measured) */
    /* the calibration, kept as attributes in the HDF5 file */
    char model[512];         /* model path */
    char calib[512];         /* calibration text path ("" for magnitude / random) */
    int n_ctx;               /* tokens per chunk */
    int chunks;              /* chunks evaluated */
    int64_t tokens;          /* tokens evaluated (chunks * n_ctx) */
    uint64_t seed;           /* random method's seed */
} prune_scores;

/* Allocate zeroed scores for m's shape (NaN in ppl_removed, base_ppl). */
int prune_scores_init(prune_scores *s, const model *m, prune_method method, slmc_err *err);
void prune_scores_free(prune_scores *s);

/* Options of the calibration pass. */
typedef struct prune_calib_opts {
    int n_ctx;               /* tokens per chunk */
    int max_chunks;          /* at most this many chunks (-1: all the text gives) */
    int32_t bos;             /* BOS id replacing each chunk's first token, -1 for none */
    bool layer_ppl;          /* also measure the PPL with each layer removed (n_layer more passes) */
    /* progress after each pass over a chunk (done of total; under mpirun this rank's passes of
     * its own share); may be NULL */
    void (*progress)(void *ud, int done, int total);
    void *progress_ud;
    const comm *comm;        /* the ranks sharing the chunks (mpirun); NULL: one process */
} prune_calib_opts;

/* The activation scores of m over tokens (the whole calibration text, tokenized with BOS):
 * chunks of n_ctx tokens evaluated as llama-perplexity does (ppl_eval_chunk). Each chunk's
 * sums (the norms, |activations|, Block Influence, its PPL's nll sums, and with layer_ppl its
 * nll sums without each layer) are collected on their own and the chunks joined by comm_sum's
 * tree over the chunk index: one process and any number of ranks (o->comm, every rank its
 * share of the chunks; collective, errors agreed) compute the same scores. */
int prune_score_activation(prune_scores *s, const model *m, const int32_t *tokens, size_t n_tokens,
                           const prune_calib_opts *o, slmc_err *err);
/* Weight-norm scores (no text needed). */
int prune_score_magnitude(prune_scores *s, const model *m, slmc_err *err);
/* Seeded uniform scores. */
int prune_score_random(prune_scores *s, const model *m, uint64_t seed, slmc_err *err);

/* Rows [r0, r0+n) of tensor ti as F32, whatever its type (quantized types dequantized). */
int prune_read_f32(const model *m, int64_t ti, int64_t r0, int64_t n, float *dst, slmc_err *err);

/* HDF5: root attributes format "slmc-prune-scores", version, method, model, calib, n_ctx,
 * chunks, tokens, seed, base_ppl and the shape; datasets blk.N/heads [n_head], blk.N/ffn
 * [n_ff] (the ranking scores), blk.N/heads_act, blk.N/ffn_act (the raw activation statistics,
 * zero for magnitude and random), blk.N/hidden [n_embd] per layer, hidden [n_embd] (the ranking sum),
 * layers/block_influence, layers/ppl_removed, layers/score [n_layer]. Written atomically. */
int prune_scores_write(const prune_scores *s, const char *path, slmc_err *err);
/* Read a file written by prune_scores_write; s is initialised by the call. */
int prune_scores_read(prune_scores *s, const char *path, slmc_err *err);
/* Check the scores were made for m's shape. */
int prune_scores_check(const prune_scores *s, const model *m, const char *path, slmc_err *err);

#endif
