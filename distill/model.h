/* model.h - a trainable Llama graph: F32 parameters, gradients, AdamW moments, activations.
 *
 *   tokens ─> tok_embd ─> n_layer × [ RMSNorm ─> Q,K,V (+bias) (─> q/k head RMSNorm) ─> RoPE ─> causal GQA
 *             ─> wo ─> +res ─> RMSNorm ─> gate, up ─> SwiGLU ─> down ─> +res ] ─> RMSNorm ─> output ─> logits
 *
 * The families of arch_llama_shaped: llama (Llama 3's rope_freqs included), qwen2 (Q/K/V
 * biases), qwen3 (q/k head norms). Weights use the model view's layout (GGUF names and row
 * order, so llama's Q/K rows are in llama.cpp's order and RoPE rotates adjacent pairs; qwen2
 * and qwen3 rotate NEOX halves). Every
 * parameter lives in one F32 block `params` (and grads, adam_m, adam_v alongside, same
 * layout), so the optimizer, clipping and checkpoints see one flat vector. Activations for a
 * batch of B sequences of T tokens are allocated once (tm_plan) and reused every step.
 */
#ifndef SLMC_DISTILL_MODEL_H
#define SLMC_DISTILL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "distill/gemm.h"
#include "formats/error.h"
#include "formats/model.h"

#define TM_NAME_MAX 64

typedef struct tm_config {
    model_config hp;    /* the shared hyperparameters (formats/model.h) with norm_eps and rope_freq_base defaulted
                           and tied_output = no output.weight; hp.n_ff is <arch>.feed_forward_length as read,
                           the graph uses n_ff[] below */
    int *n_ff;          /* [n_layer] FFN width of each layer, blk.N.ffn_gate rows (a pruned model may differ
                           per layer; owned) */
    float freq_scale;   /* 1 / <arch>.rope.scaling.factor for linear scaling, 1 when unscaled */
    bool neox;          /* arch_by_name(hp.arch)->rope == ROPE_NEOX: NEOX halves (qwen2), else adjacent pairs */
    bool qkv_bias;      /* blk.N.attn_q/k/v.bias are present (qwen2) */
    bool qk_norm;       /* blk.N.attn_q_norm / attn_k_norm: RMSNorm of each q and k head before RoPE (qwen3) */
    float *rope_freqs;  /* [n_rot/2] Llama 3's per-frequency divisors (rope_freqs.weight: a constant, written
                           back unchanged on export), or NULL; owned */
} tm_config;

/* One parameter tensor inside the flat vectors. */
typedef struct tm_param {
    char name[TM_NAME_MAX]; /* GGUF name: "blk.3.attn_q.weight" */
    int n_dims;             /* 1 or 2 */
    int64_t ne[2];          /* GGUF order: ne[0] = row length, ne[1] = rows */
    size_t offset;          /* first element in params / grads / adam_m / adam_v */
    size_t n;               /* elements */
    bool decay;             /* AdamW weight decay applies (matrices; not norms or biases) */
} tm_param;

/* Pointers into one of the flat vectors (params or grads), per tensor. Matrices are [rows][row length],
 * as GGUF stores them; shapes name the fields of cfg.hp, and F is the layer's n_ff[l]. */
typedef struct tm_layer {
    float *attn_norm;        /* [n_embd] */
    float *wq, *wk, *wv;     /* [n_head*head_dim][n_embd], [n_head_kv*head_dim][n_embd] (wk, wv) */
    float *bq, *bk, *bv;     /* [n_head*head_dim], [n_head_kv*head_dim] (bk, bv); NULL without biases */
    float *q_norm, *k_norm;  /* [head_dim] each, shared by every head; NULL without qk_norm */
    float *wo;               /* [n_embd][n_head*head_dim] */
    float *ffn_norm;         /* [n_embd] */
    float *w_gate, *w_up;    /* [F][n_embd] */
    float *w_down;           /* [n_embd][F] */
} tm_layer;

typedef struct tm_weights {
    float *tok_embd;         /* [n_vocab][n_embd] */
    tm_layer *layers;        /* [n_layer] (owned) */
    float *output_norm;      /* [n_embd] */
    float *output;           /* [n_vocab][n_embd]; == tok_embd when tied */
} tm_weights;

/* Activations of one forward pass, kept for the backward pass. B and T are train_model's planned
 * batch, N = B*T its tokens, Fmax the largest n_ff[l]. */
typedef struct tm_acts {
    float *res;       /* [n_layer+1][N][n_embd] residual stream entering each layer (the last: final) */
    float *ln1;       /* [n_layer][N][n_embd] attention RMSNorm output */
    float *rstd1;     /* [n_layer][N] */
    float *q;         /* [n_layer][N][n_head*head_dim] after RoPE */
    float *k, *v;     /* [n_layer][N][n_head_kv*head_dim] (k after RoPE) */
    float *q_raw, *k_raw; /* qk_norm: [n_layer][N][n_head*head_dim], [n_layer][N][n_head_kv*head_dim] the
                             projections before the head norms (else empty) */
    float *rstd_q, *rstd_k; /* qk_norm: [n_layer][N*n_head], [n_layer][N*n_head_kv] */
    float *att;       /* [n_layer][B][n_head][T][T] attention probabilities */
    float *atty;      /* [n_layer][N][n_head*head_dim] attention output before wo */
    float *res_mid;   /* [n_layer][N][n_embd] residual after the attention block */
    float *ln2;       /* [n_layer][N][n_embd] FFN RMSNorm output */
    float *rstd2;     /* [n_layer][N] */
    float *gate, *up; /* [n_layer][N][Fmax] (rows of layer l use n_ff[l] channels) */
    float *h;         /* [n_layer][N][Fmax] silu(gate) * up */
    float *lnf;       /* [N][n_embd] final RMSNorm output */
    float *rstdf;     /* [N] */
    float *logits;    /* [N][n_vocab] */
    float *dlogits;   /* [N][n_vocab] loss gradient, filled by the caller before tm_backward */
    double *row_loss; /* [N] per-row loss scratch for the loss functions */
    /* backward scratch, shared by all layers */
    float *dres;      /* [N][n_embd] gradient of the residual stream */
    float *dln;       /* [N][n_embd] */
    float *dq;        /* [N][n_head*head_dim] */
    float *dk, *dv;   /* [N][n_head_kv*head_dim] */
    float *dq_raw, *dk_raw; /* qk_norm: [N][n_head*head_dim], [N][n_head_kv*head_dim] before the head norms */
    float *datty;     /* [N][n_head*head_dim] */
    float *dgate, *dup, *dh; /* [N][Fmax] */
    float *tmp;       /* [N][n_embd] block output before the residual add */
} tm_acts;

typedef struct train_model {
    tm_config cfg;
    tm_param *tensors;      /* [n_tensors] in GGUF write order */
    int n_tensors;
    size_t n_params;        /* elements in each flat vector */
    float *params;          /* [n_params] master weights */
    float *grads;           /* [n_params] */
    float *adam_m, *adam_v; /* [n_params] AdamW first and second moments */
    tm_weights w;           /* views into params */
    tm_weights g;           /* views into grads */
    int B, T;               /* planned batch (0 before tm_plan) */
    tm_acts a;
    float *rope_cos, *rope_sin; /* [T][n_rot/2] */
    gemm_ctx exec;          /* threads of every parallel loop and the GEMM kernel (tm_init_*: OpenMP's
                             * current thread count and the CPU's best kernel; change before a step) */
    double sec_graph;       /* seconds spent in tm_forward + tm_backward so far */
    double sec_matmul;      /* of which in matrix products */
} train_model;

/* The shape of a model view (a family of arch_llama_shaped), parameters allocated and
 * filled with its weights, dequantized from any type quant/ can read. */
int tm_init_from_model(train_model *tm, const model *m, slmc_err *err);
/* A model of the given shape with random weights (N(0, 0.02), norms 1) from seed: tests and
 * training from scratch. cfg->n_ff is copied. */
int tm_init_random(train_model *tm, const tm_config *cfg, uint64_t seed, slmc_err *err);
void tm_free(train_model *tm);

/* Allocate activations for B sequences of T tokens (once; again only if the shape changes). */
int tm_plan(train_model *tm, int B, int T, slmc_err *err);

/* Forward: tokens [B*T] -> tm->a.logits [B*T][V]. */
void tm_forward(train_model *tm, const int32_t *tokens);
/* Backward from tm->a.dlogits; ACCUMULATES into tm->grads (zero them with tm_zero_grad). */
void tm_backward(train_model *tm, const int32_t *tokens);
void tm_zero_grad(train_model *tm);

/* sqrt(Σ grad²), summed in a fixed order (double). */
double tm_grad_norm(const train_model *tm);

/* One AdamW step over every parameter (t = 1-based step count for bias correction): decoupled
 * weight decay on matrices, grads multiplied by grad_scale first (clipping). */
void tm_adamw(train_model *tm, int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay,
              float grad_scale);

/* Export the weights as a model of the same shape as `src` (its metadata and tokenizer):
 * GGUF when path ends in .gguf, else a Hugging Face folder. outtype: F32, F16 or BF16
 * (codec/types.h ids) for the matrices; norms stay F32. */
int tm_export(const train_model *tm, const model *src, const char *path, int outtype, slmc_err *err);

#endif
