/* model.h - a trainable Llama graph: F32 parameters, gradients, AdamW moments, activations.
 *
 *   tokens ─> tok_embd ─> n_layer × [ RMSNorm ─> Q,K,V (+bias) ─> RoPE ─> causal GQA ─> wo ─> +res ─>
 *             RMSNorm ─> gate, up ─> SwiGLU ─> down ─> +res ] ─> RMSNorm ─> output ─> logits
 *
 * Weights use the model view's layout (GGUF names and row order, so llama's Q/K rows are in
 * llama.cpp's order and RoPE rotates adjacent pairs; qwen2 rotates NEOX halves). Every
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
    char arch[32];      /* "llama" (adjacent-pair RoPE) or "qwen2" (NEOX RoPE, q/k/v biases) */
    int n_vocab;        /* rows of tok_embd */
    int n_embd;         /* C, the residual width */
    int n_layer;
    int n_head;         /* query heads */
    int n_head_kv;      /* key/value heads (GQA: n_head is a multiple) */
    int head_dim;       /* channels per head */
    int n_rot;          /* channels RoPE rotates per head (even, <= head_dim) */
    int *n_ff;          /* [n_layer] FFN width per layer (a pruned model may differ per layer; owned) */
    float rms_eps;      /* RMSNorm epsilon */
    float freq_base;    /* RoPE base */
    float freq_scale;   /* 1 / linear RoPE scaling factor */
    bool neox;          /* NEOX RoPE pairs (qwen2) */
    bool tied;          /* output head is tok_embd */
    bool qkv_bias;      /* attn_q/k/v have biases (qwen2) */
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

/* Pointers into one of the flat vectors (params or grads), per tensor. */
typedef struct tm_layer {
    float *attn_norm;        /* [C] */
    float *wq, *wk, *wv;     /* [NH*hd][C], [NKV*hd][C], [NKV*hd][C] */
    float *bq, *bk, *bv;     /* [NH*hd], [NKV*hd], [NKV*hd]; NULL without biases */
    float *wo;               /* [C][NH*hd] */
    float *ffn_norm;         /* [C] */
    float *w_gate, *w_up;    /* [F][C] */
    float *w_down;           /* [C][F] */
} tm_layer;

typedef struct tm_weights {
    float *tok_embd;         /* [V][C] */
    tm_layer *layers;        /* [n_layer] (owned) */
    float *output_norm;      /* [C] */
    float *output;           /* [V][C]; == tok_embd when tied */
} tm_weights;

/* Activations of one forward pass, kept for the backward pass. N = B*T. */
typedef struct tm_acts {
    float *res;       /* [L+1][N][C] residual stream entering each layer (res[L]: final) */
    float *ln1;       /* [L][N][C] attention RMSNorm output */
    float *rstd1;     /* [L][N] */
    float *q;         /* [L][N][NH*hd] after RoPE */
    float *k, *v;     /* [L][N][NKV*hd] (k after RoPE) */
    float *att;       /* [L][B][NH][T][T] attention probabilities */
    float *atty;      /* [L][N][NH*hd] attention output before wo */
    float *res_mid;   /* [L][N][C] residual after the attention block */
    float *ln2;       /* [L][N][C] FFN RMSNorm output */
    float *rstd2;     /* [L][N] */
    float *gate, *up; /* [L][N][Fmax] (rows of layer l use F_l channels) */
    float *h;         /* [L][N][Fmax] silu(gate) * up */
    float *lnf;       /* [N][C] final RMSNorm output */
    float *rstdf;     /* [N] */
    float *logits;    /* [N][V] */
    float *dlogits;   /* [N][V] loss gradient, filled by the caller before tm_backward */
    double *row_loss; /* [N] per-row loss scratch for the loss functions */
    /* backward scratch, shared by all layers */
    float *dres;      /* [N][C] gradient of the residual stream */
    float *dln;       /* [N][C] */
    float *dq;        /* [N][NH*hd] */
    float *dk, *dv;   /* [N][NKV*hd] */
    float *datty;     /* [N][NH*hd] */
    float *dgate, *dup, *dh; /* [N][Fmax] */
    float *tmp;       /* [N][C] block output before the residual add */
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

/* The shape of a model view (architecture llama/mistral or qwen2), parameters allocated and
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
