/* model.h - a trainable transformer of every family slmc knows: F32 parameters, gradients,
 * AdamW moments, activations.
 *
 *   tokens ─> tok_embd (× √n_embd: gemma) ─> n_layer × block ─> norm ─> output (+bias) (─> soft-cap) ─> logits
 *   block:  res ─> norm1 ─> Q,K,V (fused qkv: phi3; +biases) (─> q/k head RMSNorm) ─> RoPE (local base,
 *           factors) ─> causal GQA (sliding window, score soft-cap) ─> wo (+bias) (─> post-norm) ─┐
 *           sequential: res + attn ─> norm2 ─> FFN (─> post-norm) ─> + ─> res'                     │
 *           parallel (phi2): res + attn + FFN(norm1's output) ─> res'  <───────────────────────────┘
 *   FFN:    SwiGLU (gate, up; phi3's gate_up fused) | GeGLU (gemma*) | up (+b) ─> GELU ─> down (+b) (phi2)
 *   norms:  RMSNorm, or LayerNorm with bias (phi2, stablelm)
 *
 * The family's description (formats/arch.h) chooses every op and names every tensor: the
 * parameters are the tensors of its tables, in GGUF write order, so a family is trained by the
 * graph below without code of its own. Weights use the model view's layout (GGUF names and row
 * order, so llama's Q/K rows are in llama.cpp's order and RoPE rotates adjacent pairs; the NEOX
 * families rotate halves; Gemma's norms are the stored 1 + w). Rope factor tensors (Llama 3's
 * rope_freqs, Phi-3's long/short factors) are constants: read with the model and written back
 * unchanged. Every parameter lives in one F32 block `params` (and grads, adam_m, adam_v
 * alongside, same layout), so the optimizer, clipping and checkpoints see one flat vector.
 * Activations for a batch of B sequences of T tokens are allocated once (tm_plan) and reused.
 */
#ifndef SLMC_DISTILL_MODEL_H
#define SLMC_DISTILL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "distill/gemm.h"
#include "formats/arch.h"
#include "formats/error.h"
#include "formats/model.h"

#define TM_NAME_MAX 64
#define TM_MAX_CONSTS 2

/* A constant tensor of the model (a rope factor vector), kept as read and exported unchanged. */
typedef struct tm_const {
    char name[TM_NAME_MAX]; /* "rope_freqs.weight", "rope_factors_long.weight", ... */
    float *data;            /* [n] (owned) */
    int64_t n;              /* n_rot / 2 */
} tm_const;

typedef struct tm_config {
    model_config hp;    /* the shared hyperparameters (formats/model.h) with norm_eps and rope_freq_base defaulted
                           and tied_output = no output.weight; hp.arch names the family (arch_by_name); hp.n_ff
                           is <arch>.feed_forward_length as read, the graph uses n_ff[] below */
    int *n_ff;          /* [n_layer] FFN width of each layer, blk.N.ffn_down columns (a pruned model may differ
                           per layer; owned) */
    float freq_scale;   /* 1 / <arch>.rope.scaling.factor for linear scaling, 1 when unscaled */
    bool qkv_bias;      /* the family's q/k/v biases of WHEN_QKV_BIAS are present (qwen2; stablelm when the
                           config says so) */
    tm_const consts[TM_MAX_CONSTS]; /* rope factor tensors (Llama 3: rope_freqs; Phi-3: long, short) */
    int n_consts;
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

/* Pointers into one of the flat vectors (params or grads), per tensor; NULL where the family has
 * no such tensor. Matrices are [rows][row length], as GGUF stores them; shapes name the fields
 * of cfg.hp, F is the layer's n_ff[l], QKV = n_head*head_dim + 2*n_head_kv*head_dim. */
typedef struct tm_layer {
    float *attn_norm, *attn_norm_b;   /* [n_embd] (the bias: LayerNorm families) */
    float *wq, *wk, *wv;              /* [n_head*head_dim][n_embd], [n_head_kv*head_dim][n_embd] (wk, wv) */
    float *wqkv;                      /* [QKV][n_embd]: rows Q | K | V (phi3, instead of wq, wk, wv) */
    float *bq, *bk, *bv;              /* [n_head*head_dim], [n_head_kv*head_dim] (bk, bv) */
    float *q_norm, *k_norm;           /* [head_dim] each, shared by every head (qwen3, gemma3) */
    float *wo, *bo;                   /* [n_embd][n_head*head_dim], [n_embd] */
    float *attn_post_norm;            /* [n_embd] RMSNorm of the attention output (gemma2/3) */
    float *ffn_norm, *ffn_norm_b;     /* [n_embd] (absent for phi2's parallel block) */
    float *w_gate;                    /* [F][n_embd] (SwiGLU, GeGLU) */
    float *w_up, *b_up;               /* [F][n_embd], or [2F][n_embd] gate rows first (phi3); [F] (phi2) */
    float *w_down, *b_down;           /* [n_embd][F], [n_embd] */
    float *ffn_post_norm;             /* [n_embd] RMSNorm of the FFN output (gemma2/3) */
} tm_layer;

typedef struct tm_weights {
    float *tok_embd;                  /* [n_vocab][n_embd] */
    tm_layer *layers;                 /* [n_layer] (owned) */
    float *output_norm, *output_norm_b; /* [n_embd] */
    float *output, *output_b;         /* [n_vocab][n_embd] (== tok_embd when tied), [n_vocab] (phi2) */
} tm_weights;

/* Activations of one forward pass, kept for the backward pass. B and T are train_model's planned
 * batch, N = B*T its tokens, Fmax the largest n_ff[l]; "per layer" arrays hold [n_layer] blocks.
 * Buffers of ops a family does not use are not allocated (NULL). */
typedef struct tm_acts {
    float *res;       /* [n_layer+1][N][n_embd] residual stream entering each layer (the last: final) */
    float *ln1;       /* per layer [N][n_embd] first norm's output */
    float *mean1, *rstd1; /* per layer [N] (mean1: LayerNorm) */
    float *q_raw, *k_raw; /* per layer [N][n_head*head_dim], [N][n_head_kv*head_dim] before the head norms */
    float *rstd_q, *rstd_k; /* per layer [N*n_head], [N*n_head_kv] */
    float *q, *k, *v; /* per layer [N][n_head*head_dim], [N][n_head_kv*head_dim] (q, k after RoPE) */
    float *att;       /* per layer [B][n_head][T][T] attention probabilities */
    float *atty;      /* per layer [N][n_head*head_dim] attention output before wo */
    float *ao;        /* per layer [N][n_embd] wo's output (+bias) before the post-norm */
    float *rstd_ao;   /* per layer [N] */
    float *res_mid;   /* per layer [N][n_embd] residual after the attention block (sequential blocks) */
    float *ln2;       /* per layer [N][n_embd] second norm's output */
    float *mean2, *rstd2; /* per layer [N] */
    float *gate, *up; /* per layer [N][Fmax] (rows of layer l use n_ff[l]; GELU FFN: up is up(x) + b) */
    float *h;         /* per layer [N][Fmax] the FFN activation, input of ffn_down */
    float *fo;        /* per layer [N][n_embd] ffn_down's output (+bias) before the post-norm */
    float *rstd_fo;   /* per layer [N] */
    float *lnf;       /* [N][n_embd] final norm's output */
    float *meanf, *rstdf; /* [N] */
    float *logits;    /* [N][n_vocab] (after the final soft-cap) */
    float *dlogits;   /* [N][n_vocab] loss gradient, filled by the caller before tm_backward */
    double *row_loss; /* [N] per-row loss scratch for the loss functions */
    /* scratch shared by all layers (forward: fused products; backward: gradients) */
    float *wide;      /* [N][max(QKV, 2 Fmax)] a fused product's output, or its gradient */
    float *dres;      /* [N][n_embd] gradient of the residual stream */
    float *dln;       /* [N][n_embd] */
    float *dq, *dk, *dv; /* [N][n_head*head_dim], [N][n_head_kv*head_dim] */
    float *dq_raw, *dk_raw; /* the same before the head norms */
    float *datty;     /* [N][n_head*head_dim] */
    float *dgate, *dup, *dh; /* [N][Fmax] */
    float *tmp, *dtmp; /* [N][n_embd] a block's output before the residual add, its gradient */
} tm_acts;

/* A low-rank adapter on one frozen matrix W [out][in]: the layer computes x·(W + scale·B·A)ᵀ
 * (Hu et al., LoRA), A [rank][in] and B [out][rank] trained, W left as it is. */
typedef struct tm_lora {
    int base;               /* tensor index of W */
    int a, b;               /* tensor indices of A and B (after every base tensor) */
} tm_lora;

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
    float *rope_cos, *rope_sin; /* [T][n_rot/2] global layers (with the rope factors and attention factor) */
    float *rope_cos_swa, *rope_sin_swa; /* [T][n_rot/2] gemma3's sliding layers (their own base), or NULL */
    gemm_ctx exec;          /* threads of every parallel loop and the GEMM kernel (tm_init_*: OpenMP's
                             * current thread count and the CPU's best kernel; change before a step) */
    double sec_graph;       /* seconds spent in tm_forward + tm_backward so far */
    double sec_matmul;      /* of which in matrix products */
    /* LoRA (tm_add_lora): every tensor before tensors[n_base] is frozen; the adapters follow */
    int lora_rank;          /* 0: every parameter trains */
    float lora_scale;       /* alpha / rank */
    tm_lora *lora;          /* [n_lora] one per block matrix */
    int n_lora;
    int n_base;             /* tensors of the model itself (n_tensors without adapters) */
    float *lora_h, *lora_dh;  /* [N][rank] scratch: x·Aᵀ and its gradient */
    float *lora_y;          /* [N][widest matrix] scratch: (x·Aᵀ)·Bᵀ, or the scaled gradient */
    /* hidden-state alignment: gradients tm_backward adds to the residual stream (not owned) */
    float **dres_add;       /* NULL, or [n_layer + 1] of NULL / [N][n_embd]: added to the gradient of
                             * res[i] (the state after i layers) as the backward pass reaches it */
} train_model;

/* The shape of a model view (any family of formats/arch.h), parameters allocated and filled
 * with its weights, dequantized from any type quant/ can read. */
int tm_init_from_model(train_model *tm, const model *m, slmc_err *err);
/* A model of the given shape (cfg->hp.arch names the family) with random weights (N(0, 0.02),
 * norm weights 1, biases 0) from seed: tests and training from scratch. cfg->n_ff and the
 * constants are copied. */
int tm_init_random(train_model *tm, const tm_config *cfg, uint64_t seed, slmc_err *err);
void tm_free(train_model *tm);

/* Train low-rank adapters instead of the model (before tm_plan): rank r on every block matrix
 * (attention and FFN projections, fused ones included), scale alpha / r, A drawn N(0, 1/in)
 * from seed and B zero (so the model starts unchanged); every other parameter freezes. The
 * optimizer, the gradient norm and checkpoints then see the adapters; tm_export writes the
 * merged W + scale·B·A in the model's own tensors. */
int tm_add_lora(train_model *tm, int rank, float alpha, uint64_t seed, slmc_err *err);

/* Append a trainable matrix of the run that is not part of the model (a hidden-state
 * projection): rows x cols, N(0, 1/cols) from seed; returns its tensor index, or -1. It trains
 * (with or without LoRA), is checkpointed, and is never exported. Before tm_plan. */
int tm_add_matrix(train_model *tm, const char *name, int64_t rows, int64_t cols, uint64_t seed, slmc_err *err);

/* Allocate activations for B sequences of T tokens (once; again only if the shape changes). */
int tm_plan(train_model *tm, int B, int T, slmc_err *err);

/* Forward: tokens [B*T] -> tm->a.logits [B*T][V]. */
void tm_forward(train_model *tm, const int32_t *tokens);
/* Backward from tm->a.dlogits; ACCUMULATES into tm->grads (zero them with tm_zero_grad). */
void tm_backward(train_model *tm, const int32_t *tokens);
void tm_zero_grad(train_model *tm);

/* The first element of params / grads that trains: the adapters' with LoRA, else 0. */
size_t tm_first_trainable(const train_model *tm);
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
