/* llm.h - the Llama-family forward pass (llama, mistral, qwen2), in the style of llama2.c.
 *
 *   tokens ─> token_embd rows ─> n_layer × [ RMSNorm ─> Q,K,V (+bias) ─> RoPE ─> KV cache ─>
 *             causal attention (GQA) ─> attn_output ─> +residual ─> RMSNorm ─> SwiGLU FFN ─>
 *             +residual ] ─> RMSNorm ─> output (or token_embd when tied) ─> logits
 *
 * llm_model references the weights where the model view maps them (quantized or not; only
 * the 1-D norms and biases are copied, as F32). llm_context owns a KV cache for n_ctx
 * positions, the scratch buffers of one batch and its thread count (n_threads: every OpenMP
 * loop of its forward pass runs on that many threads). llm_eval runs a whole batch of tokens
 * through each layer together (matrix-matrix products, kernels.h), with causal attention
 * over everything cached so far.
 *
 * Numerics follow llama.cpp's CPU backend so perplexities match: activations are converted
 * to each weight type's vec_dot type before the matmul; K and V are stored rounded to F16
 * (llama.cpp's default cache type) and Q and the attention probabilities are rounded to F16
 * before their products with them, as ggml's F16 matmul does.
 *
 * Hooks (llm_hooks) let imatrix, pruning and distillation observe activations without
 * copying the forward pass.
 */
#ifndef SLMC_LLM_H
#define SLMC_LLM_H

#include <stdbool.h>
#include <stdint.h>

#include "eval/kernels.h"
#include "formats/error.h"
#include "formats/model.h"

/* One weight matrix of the model, referenced in place. */
typedef struct llm_weight {
    kern_weight w;          /* data, type, n_in, n_out, row bytes, optional row map */
    const char *name;       /* GGUF tensor name (owned by the model view) */
    int64_t tensor;         /* index in model.tensors */
} llm_weight;

/* Matrices are [rows][row length] as GGUF stores them (a product maps a row length of inputs to
 * rows of outputs); shapes name the fields of llm_model.cfg. */
typedef struct llm_layer {
    float *attn_norm;       /* [n_embd] */
    llm_weight wq, wk, wv;  /* attn_q [n_head*head_dim][n_embd], attn_k / attn_v [n_head_kv*head_dim][n_embd] */
    float *bq, *bk, *bv;    /* [n_head*head_dim], [n_head_kv*head_dim] (bk, bv): biases (qwen2) or NULL */
    llm_weight wo;          /* attn_output [n_embd][n_head*head_dim] */
    float *ffn_norm;        /* [n_embd] */
    llm_weight w_gate, w_up;/* ffn_gate / ffn_up [n_ff][n_embd] */
    llm_weight w_down;      /* ffn_down [n_embd][n_ff] */
} llm_layer;

typedef struct llm_model {
    const model *src;       /* the model view the weights live in (must outlive this) */
    model_config cfg;       /* src->cfg resolved: n_head_kv, head_dim, n_rot, rope_freq_base defaulted as in
                               model_config; n_vocab = token_embd rows; tied_output = no output.weight */
    float freq_scale;       /* 1 / <arch>.rope.scaling.factor for linear scaling, 1 when unscaled */
    bool rope_neox;         /* arch_by_name(cfg.arch)->rope == ROPE_NEOX: NEOX halves (qwen2), else adjacent pairs */
    llm_weight tok_embd;    /* [n_vocab][n_embd] */
    llm_layer *layers;      /* [n_layer] */
    float *output_norm;     /* [n_embd] */
    llm_weight output;      /* [n_vocab][n_embd]: output.weight, or token_embd when tied */
    int64_t **row_maps;     /* owned row maps (HF Q/K order), NULL-terminated list */
} llm_model;

/* Callbacks into the forward pass; any may be NULL. x is row-major [n_tokens][n]; it is
 * only valid during the call. A non-zero return aborts llm_eval with an error. */
typedef struct llm_hooks {
    void *ud;               /* passed back to every callback */
    /* The input of every matrix product, just before it: the weight's GGUF name and tensor
     * index, and layer (-1 for the output head). Inputs shared by several weights (attn_q,
     * attn_k, attn_v; ffn_gate, ffn_up) are reported once per weight, as in llama.cpp. */
    int (*matmul_input)(void *ud, const char *weight, int64_t tensor, int layer, const float *x, int n_tokens,
                        int64_t n_in);
    /* Per-head attention output before attn_output: [n_tokens][n_head*head_dim]. */
    int (*attn_heads)(void *ud, int layer, const float *x, int n_tokens, int64_t n_head, int64_t head_dim);
    /* FFN activation silu(gate) * up, before ffn_down: [n_tokens][n_ff]. */
    int (*ffn_act)(void *ud, int layer, const float *x, int n_tokens, int64_t n_ff);
    /* The residual stream after the layer: [n_tokens][n_embd]. */
    int (*layer_out)(void *ud, int layer, const float *x, int n_tokens, int64_t n_embd);
} llm_hooks;

typedef struct llm_context {
    const llm_model *lm;
    int n_ctx;              /* positions the KV cache holds */
    int n_batch;            /* most tokens one internal step processes (longer inputs are split) */
    int64_t kv_dim;         /* n_head_kv*head_dim */
    float *k_cache;         /* [n_layer][n_ctx][kv_dim], values rounded to F16 */
    float *v_cache;         /* [n_layer][n_ctx][kv_dim], values rounded to F16 */
    float *rope_cos;        /* [n_ctx][n_rot/2] */
    float *rope_sin;        /* [n_ctx][n_rot/2] */
    /* scratch for n_batch tokens */
    float *x;               /* [n_batch][n_embd] residual stream */
    float *xb;              /* [n_batch][n_embd] normed input of a block */
    float *xb2;             /* [n_batch][n_embd] block output */
    float *q;               /* [n_batch][n_head*head_dim] */
    float *k, *v;           /* [n_batch][kv_dim] */
    float *att;             /* [n_batch][n_head*head_dim] attention output */
    float *hb, *hb2;        /* [n_batch][n_ff] */
    int n_threads;          /* OpenMP threads every parallel loop of this context runs on */
    kern_impl impl;         /* the matmul's inner loops: KERN_AUTO (set by llm_context_init: AVX2
                               when the CPU has it), or KERN_SCALAR / KERN_AVX2 (tests) */
    float *scores;          /* [n_threads][n_ctx] attention scores, one row per thread */
    bool f16_attention;     /* true (set by llm_context_init): K, V, Q and the attention
                               probabilities rounded to F16 as llama.cpp's F16 cache path does;
                               false: all F32 (tests comparing with exact arithmetic) */
    llm_hooks hooks;
} llm_context;

/* Bind the model view's tensors; checks architecture, shapes and types. */
int llm_model_init(llm_model *lm, const model *m, slmc_err *err);
void llm_model_free(llm_model *lm);

/* A context with a KV cache for n_ctx positions, processing up to n_batch tokens per step.
 * It runs on omp_get_max_threads() threads as that is now (what -t set): the count is the
 * context's from then on, and a later omp_set_num_threads() does not change it. */
int llm_context_init(llm_context *ctx, const llm_model *lm, int n_ctx, int n_batch, slmc_err *err);
void llm_context_free(llm_context *ctx);
/* Run this context on n_threads threads from now on (0: omp_get_max_threads()), resizing its
 * per-thread scratch. Logits do not depend on the count. On failure (n_threads < 0, out of
 * memory) the context keeps its previous count and stays usable. */
int llm_context_set_threads(llm_context *ctx, int n_threads, slmc_err *err);
void llm_set_hooks(llm_context *ctx, const llm_hooks *hooks);

/* Evaluate tokens[0..n_tokens) at positions pos0..pos0+n_tokens-1 (the cache must hold
 * positions 0..pos0-1 from earlier calls; pos0 = 0 starts a new sequence). Writes the logits
 * of tokens out_first..n_tokens-1 to logits ([n_tokens - out_first][n_vocab]); logits may be
 * NULL when out_first == n_tokens (no output wanted). */
int llm_eval_out(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, int out_first, float *logits,
                 slmc_err *err);
/* All logits: [n_tokens][n_vocab]. */
int llm_eval(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, float *logits, slmc_err *err);

#endif
