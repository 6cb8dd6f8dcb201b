/* llm.h - the forward pass of every family in formats/arch.h, in the style of llama2.c.
 *
 *   tokens ─> token_embd rows (× sqrt(n_embd): gemma) ─> n_layer × block ─> norm ─> output
 *             (or token_embd when tied) (+ bias: phi2) (soft-capped: gemma2) ─> logits
 *
 *   block:  x ─> norm ─> Q,K,V (+bias; one fused matrix: phi3) ─> q/k head norms (qwen3, gemma3)
 *             ─> RoPE (rope factors: Llama 3, phi3; partial: phi2, phi3, stablelm) ─> KV cache
 *             ─> causal attention (GQA; sliding window on some layers; soft-capped scores)
 *             ─> attn_output (+bias) (─> post-norm: gemma2/3) ─> + x
 *             ─> norm ─> FFN (SwiGLU, GeGLU or GELU) (─> post-norm) ─> + residual
 *           phi2 runs attention and FFN side by side from one norm: x + attn(n) + ffn(n).
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
 * before their products with them, as ggml's F16 matmul does. Every op is applied in the
 * order llama.cpp's graph for the family applies it (the Q scale before or after the K
 * product, the order of residual adds), since float rounding depends on it.
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
    float *attn_norm, *attn_norm_b; /* [n_embd]; the bias only with LayerNorm (phi2, stablelm) */
    llm_weight wq, wk, wv;  /* attn_q [n_head*head_dim][n_embd], attn_k / attn_v [n_head_kv*head_dim][n_embd];
                               unbound (n_out 0) when the family fuses them into wqkv */
    llm_weight wqkv;        /* attn_qkv [(n_head + 2 n_head_kv)*head_dim][n_embd]: Q, K, V rows (phi3) */
    float *bq, *bk, *bv;    /* [n_head*head_dim], [n_head_kv*head_dim] (bk, bv): biases or NULL */
    float *q_norm, *k_norm; /* [head_dim]: RMSNorm of each head (qwen3, gemma3) or NULL */
    llm_weight wo;          /* attn_output [n_embd][n_head*head_dim] */
    float *bo;              /* [n_embd] attn_output bias (phi2) or NULL */
    float *attn_post_norm;  /* [n_embd] norm of the attention output (gemma2/3) or NULL */
    float *ffn_norm, *ffn_norm_b; /* [n_embd], NULL in a parallel block (phi2) */
    llm_weight w_gate;      /* ffn_gate [n_ff][n_embd]; unbound for GELU (phi2) and fused gate_up (phi3) */
    llm_weight w_up;        /* ffn_up [n_ff][n_embd], or [2 n_ff][n_embd] gate rows then up rows (phi3) */
    float *b_up;            /* [n_ff] ffn_up bias (phi2) or NULL */
    llm_weight w_down;      /* ffn_down [n_embd][n_ff] */
    float *b_down;          /* [n_embd] ffn_down bias (phi2) or NULL */
    float *ffn_post_norm;   /* [n_embd] norm of the FFN output (gemma2/3) or NULL */
    bool slides;            /* attends within cfg.n_swa positions (arch_layer_slides) */
} llm_layer;

typedef struct llm_model {
    const model *src;       /* the model view the weights live in (must outlive this) */
    const arch_desc *arch;  /* the family: which ops the forward pass runs (formats/arch.h) */
    model_config cfg;       /* src->cfg resolved: n_head_kv, head_dim, n_rot, rope_freq_base defaulted as in
                               model_config; n_vocab = token_embd rows; tied_output = no output.weight */
    float freq_scale;       /* 1 / <arch>.rope.scaling.factor for linear scaling, 1 when unscaled */
    float attn_scale;       /* the factor of Q.K: 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) for the
                               gemma2/gemma3 27B shapes as llama.cpp chooses */
    bool rope_neox;         /* arch->rope == ROPE_NEOX: NEOX halves, else adjacent pairs (llama) */
    float *rope_freqs;      /* [n_rot/2] rope_freqs (Llama 3) or NULL */
    float *rope_long, *rope_short; /* [n_rot/2] rope_factors_long / _short (phi3 longrope) or NULL */
    llm_weight tok_embd;    /* [n_vocab][n_embd] */
    llm_layer *layers;      /* [n_layer] */
    float *output_norm, *output_norm_b; /* [n_embd]; the bias only with LayerNorm */
    llm_weight output;      /* [n_vocab][n_embd]: output.weight, or token_embd when tied */
    float *output_b;        /* [n_vocab] output bias (phi2) or NULL */
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
    int n_ctx;              /* positions of one sequence the KV cache holds */
    int n_seq;              /* sequences it holds side by side (llm_context_init_seqs), else 1 */
    int n_batch;            /* most tokens one internal step processes (longer inputs are split) */
    int64_t kv_dim;         /* n_head_kv*head_dim */
    float *k_cache;         /* [n_layer][n_seq*n_ctx][kv_dim], values rounded to F16 */
    float *v_cache;         /* [n_layer][n_seq*n_ctx][kv_dim], values rounded to F16 */
    float *rope_cos;        /* [n_ctx][n_rot/2] (global layers) */
    float *rope_sin;        /* [n_ctx][n_rot/2] */
    float *rope_cos_swa;    /* [n_ctx][n_rot/2] sliding layers with their own base (gemma3), else NULL */
    float *rope_sin_swa;    /* [n_ctx][n_rot/2] */
    /* scratch for n_batch tokens */
    float *x;               /* [n_batch][n_embd] residual stream */
    float *xb;              /* [n_batch][n_embd] normed input of a block */
    float *xb2;             /* [n_batch][n_embd] block output */
    float *q;               /* [n_batch][n_head*head_dim] */
    float *k, *v;           /* [n_batch][kv_dim] */
    float *att;             /* [n_batch][n_head*head_dim] attention output */
    float *qkv;             /* [n_batch][(n_head + 2 n_head_kv)*head_dim] fused products (phi3), else NULL */
    float *hb, *hb2;        /* [n_batch][n_ff]; hb is [n_batch][2 n_ff] for a fused gate_up (phi3) */
    float *xb3;             /* [n_batch][n_embd] the FFN output of a parallel block (phi2), else NULL */
    int n_threads;          /* OpenMP threads every parallel loop of this context runs on */
    kern_impl impl;         /* the matmul's inner loops: KERN_AUTO (set by llm_context_init: AVX2
                               when the CPU has it), or KERN_SCALAR / KERN_AVX2 (tests) */
    kern_impl attn_impl;    /* the attention's loops: KERN_AUTO (set by llm_context_init) as impl;
                               KERN_SCALAR the reference loops, KERN_AVX2 eval/attn_avx2.c (when the
                               CPU has AVX2): the same numbers bit for bit (tests compare them) */
    float *scores;          /* [n_threads][n_ctx] attention scores, one row per thread */
    kern_scratch matmul_scratch; /* the matmuls' buffers, kept from one to the next */
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
/* A context for n_seq independent sequences of up to n_ctx positions each, evaluated together
 * by llm_eval_seqs (one step of n_seq*n_ctx tokens: every weight row is read once for all of
 * them). Rope tables and the Phi-3 factor choice are those of an n_ctx context. */
int llm_context_init_seqs(llm_context *ctx, const llm_model *lm, int n_seq, int n_ctx, slmc_err *err);
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
/* The same with the logits of tokens out_first..out_end-1 only ([out_end - out_first][n_vocab]). */
int llm_eval_rows(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, int out_first, int out_end,
                  float *logits, slmc_err *err);
/* All logits: [n_tokens][n_vocab]. */
int llm_eval(llm_context *ctx, const int32_t *tokens, int n_tokens, int pos0, float *logits, slmc_err *err);
/* n_seq sequences of seq_len tokens each (tokens[s*seq_len + i]: position i of sequence s),
 * each from an empty cache, in one step: the logits ([n_seq*seq_len][n_vocab]) are bit for bit
 * those of n_seq llm_eval calls from position 0 (every output row and attention row is computed
 * alone), and hooks see the n_seq*seq_len tokens in that order. Needs n_seq <= ctx->n_seq and
 * seq_len <= ctx->n_ctx. */
int llm_eval_seqs(llm_context *ctx, const int32_t *tokens, int n_seq, int seq_len, float *logits, slmc_err *err);

#endif
