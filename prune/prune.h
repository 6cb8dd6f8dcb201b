/* prune.h - structured pruning of every family of formats/arch.h (llama with or without Llama 3's
 * rope_freqs, qwen2, qwen3, gemma, gemma2, gemma3, phi2, phi3, stablelm): which heads, FFN
 * channels, layers and hidden channels to keep (a plan), and the smaller model that results.
 *
 *   scores (importance.h) ─> prune_select ─> prune_plan ─> prune_apply ─> model (in memory)
 *                                                                       ─> model_write_gguf / hf_write
 *
 * Every layer keeps the same shape (n_head, n_head_kv, n_ff), so the result is an ordinary
 * checkpoint that llama.cpp and Hugging Face load. What each axis removes, in GGUF terms
 * (ne[0] is the row length, i.e. the input dimension):
 *   head h       rows h*hd..(h+1)*hd-1 of attn_q (and attn_q.bias), the same columns of
 *                attn_output; a KV head also its rows of attn_k / attn_v (and biases). In
 *                phi3's fused attn_qkv (rows Q | K | V) the same rows inside each part.
 *                llama.cpp's RoPE row interleaving stays inside a head, so whole heads are
 *                whole row blocks.
 *                The q/k head norms of qwen3 and gemma3 ([head_dim], shared by the heads),
 *                Llama 3's rope_freqs and phi3's rope_factors_long / _short stay as they are
 *                under every axis.
 *   FFN channel  row c of ffn_gate and ffn_up (phi3's fused gate_up of 2 n_ff rows: rows c and
 *                n_ff + c; phi2: element c of ffn_up.bias), column c of ffn_down.
 *   layer        every blk.N.* tensor; later blocks are renumbered.
 *   hidden       column c of every matrix reading the residual stream (token_embd, attn_q/k/v
 *                or attn_qkv, ffn_gate/up, output), row c of every matrix writing it
 *                (attn_output, ffn_down), element c of every norm (LayerNorm biases, gemma2/3's
 *                post norms) and of the biases of attn_output and ffn_down (phi2). phi2's
 *                output.bias ([n_vocab]) stays.
 * With grouped-query attention query head h reads KV head h / (n_head / n_head_kv): a plan
 * either removes whole KV groups with their query heads, or the same number of query heads
 * from every group, so the mapping stays h' / (n_head' / n_head_kv').
 *
 * What prune_select refuses, so that the result loads in llama.cpp (b4747) and computes what
 * the input does (prune_apply builds any plan; the refusals name the model):
 *   - q_width_embd families (qwen2, phi2, phi3, stablelm): head_count x head size must stay
 *     embedding_length (heads go together with the hidden width);
 *   - embd_scale families (gemma, gemma2, gemma3): the hidden width (the embeddings are scaled
 *     by sqrt(n_embd), the output tied to them);
 *   - gemma2 / gemma3: a layer plan that moves a kept layer to an index of the other kind
 *     (sliding window or global, arch_layer_slides); --layers K picks the most important
 *     layers among those that keep every kind;
 *   - gemma2: a layer count llama.cpp b4747 does not build (26, 42 and 46 only) when the input
 *     has one of those;
 *   - a plan that changes the Q.K scale llama.cpp chooses by layer count (arch_query_scalar:
 *     gemma2 46 layers, gemma3 62).
 * prune_search_target only proposes shapes prune_select accepts.
 */
#ifndef SLMC_PRUNE_H
#define SLMC_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"
#include "prune/importance.h"

/* What to keep. Index lists are ascending (the kept units keep their relative order). */
typedef struct prune_plan {
    int64_t n_layer_in;      /* layers of the input */
    bool *keep_layer;        /* [n_layer_in] */
    int64_t n_layer;         /* kept layers */
    int64_t n_head_in, n_head_kv_in, n_ff_in, n_embd_in; /* input shape */
    int64_t n_head;          /* query heads kept in every layer */
    int64_t n_head_kv;       /* KV heads kept in every layer */
    int64_t *heads;          /* [n_layer_in][n_head] kept query heads of each input layer */
    int64_t *kv_heads;       /* [n_layer_in][n_head_kv] kept KV heads of each input layer */
    int64_t n_ff;            /* FFN channels kept in every layer */
    int64_t *ffn;            /* [n_layer_in][n_ff] kept channels */
    int64_t n_embd;          /* hidden channels kept */
    int64_t *hidden;         /* [n_embd] kept hidden channels (one set for the whole model) */
    /* Refit output projections (prune_reconstruct), written instead of the input's columns;
     * NULL (or a NULL entry) keeps the input's values of the kept columns. */
    float **ffn_down_new;    /* NULL or [n_layer_in] -> [n_embd_in][n_ff] F32 over the kept channels */
    float **attn_output_new; /* NULL or [n_layer_in] -> [n_embd_in][n_head * head_dim] F32 over the kept heads */
} prune_plan;

/* The plan that keeps everything of m (then edit it, or fill it with prune_select). */
int prune_plan_identity(prune_plan *p, const model *m, slmc_err *err);
void prune_plan_free(prune_plan *p);

/* How heads are removed under grouped-query attention. */
typedef enum prune_head_mode {
    PRUNE_HEADS_AUTO,        /* per group when n_head_kv divides the kept count, else whole groups */
    PRUNE_HEADS_PER_GROUP,   /* the same number of query heads from every KV group */
    PRUNE_HEADS_GROUPS,      /* whole KV groups with all their query heads */
} prune_head_mode;

/* The shape asked for; 0 (or NULL) leaves an axis alone. */
typedef struct prune_request {
    int64_t keep_ffn;        /* FFN channels per layer */
    int64_t keep_heads;      /* query heads per layer */
    prune_head_mode head_mode;
    int64_t keep_layers;     /* layers, chosen by importance */
    const bool *drop_layers; /* or [n_layer] layers named by the user (overrides keep_layers) */
    int64_t keep_hidden;     /* hidden width */
} prune_request;

/* Fill p with the most important units of each axis, as many as r asks for (the others of
 * the identity plan). Fails when a count is out of range or heads do not fit the groups. */
int prune_select(prune_plan *p, const model *m, const prune_scores *s, const prune_request *r, slmc_err *err);

/* Parameters of the model the plan gives (every tensor of m, as prune_apply shapes it). */
uint64_t prune_plan_params(const prune_plan *p, const model *m);
/* Parameters inside the blocks (blk.*), input and pruned: the part pruning can cut apart from
 * the hidden width's share of the embeddings. */
uint64_t prune_block_params(const prune_plan *p, const model *m);

/* --target-params: search kept counts (layers, heads, FFN channels, hidden width) whose model
 * has at most `target` parameters (counted over all tensors, or only the blocks when
 * blocks_only), choosing the one that removes the least importance (scores s; each axis's
 * removed share of its importance, summed). Fills r (a request for prune_select). */
int prune_search_target(prune_request *r, const model *m, const prune_scores *s, uint64_t target, bool blocks_only,
                        slmc_err *err);

/* Build the pruned model in `out`: its own metadata (block_count, feed_forward_length,
 * head_count, head_count_kv, embedding_length, key_length when needed; tokenizer and
 * everything else copied), tensors in m's order. Tensors the plan leaves untouched point into
 * m's data, which must outlive out; changed ones live in memory owned by out (row removal
 * keeps the type; column removal keeps F32/F16/BF16 and turns quantized tensors into F32).
 * Refit projections of the plan (ffn_down_new, attn_output_new) are converted to the input
 * tensor's type when it is F32/F16/BF16, else written as F32.
 * Free with model_close. */
int prune_apply(model *out, const model *m, const prune_plan *p, slmc_err *err);

#endif
