/* ops.h - forward and backward passes of every op of the Llama graph, and of the other
 * families' (LayerNorm, GELU/GeGLU, soft-cap, windowed and soft-capped attention), for
 * training (F32).
 *
 * In the style of llm.c's train_gpt2.c: one function per op, op_forward and op_backward side
 * by side. Shapes are written [N][C] for row-major arrays; N = B*T token rows (batch B,
 * sequence length T), C channels. Weight matrices use GGUF's layout: W[OC][C], one output
 * channel per row, so out = inp · Wᵀ.
 *
 * Backward functions ACCUMULATE (+=) into their gradient outputs (dinp, dweight, ...), so
 * gradients of a value used twice (the residual stream, a tied embedding) simply add up; the
 * caller zeroes the buffers first.
 *
 * Every op runs its parallel loops on n_threads OpenMP threads (its last argument; the matrix
 * products take a gemm_ctx, which holds the thread count and the GEMM kernel): the caller owns
 * these settings, nothing is global. Every op is deterministic whatever the thread count: each
 * output element is computed by one thread in a fixed order (no cross-thread reductions),
 * which is what makes a resumed run bitwise identical to an uninterrupted one.
 */
#ifndef SLMC_DISTILL_OPS_H
#define SLMC_DISTILL_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "distill/gemm.h"

/* ---- embedding: out[n] = wte[tokens[n]] -------------------------------------------------- */
void embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int C, int n_threads);
void embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int C, int n_threads);

/* ---- RMSNorm: out = inp / sqrt(mean(inp²) + eps) * weight; rstd[N] is saved for backward -- */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps,
                     int n_threads);
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C, int n_threads);

/* ---- LayerNorm: out = (inp − mean) · rstd · weight + bias over C channels; mean[N], rstd[N] saved;
 *      bias may be NULL (then dbias is ignored; dbias may also be NULL) ------------------------------ */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps, int n_threads);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C, int n_threads);

/* ---- matmul: out[N][OC] = inp[N][C] · weight[OC][C]ᵀ (+ bias[OC], may be NULL) ------------ */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC,
                    const gemm_ctx *ctx);
/* dinp, dweight, dbias may each be NULL (not wanted). */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, const gemm_ctx *ctx);

/* ---- RoPE, in place on x[N][n_head*head_dim]; row n is at position n % T ------------------
 * cos_t/sin_t: [T][n_rot/2] (kern_rope_table). neox: pairs (i, i+n_rot/2) as qwen2 rotates;
 * otherwise adjacent pairs (2i, 2i+1), llama's layout in GGUF. Backward rotates the gradient
 * by the opposite angle (the transpose of a rotation). */
void rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                  int n_rot, bool neox, int n_threads);
void rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                   int n_rot, bool neox, int n_threads);

/* ---- causal grouped-query attention -------------------------------------------------------
 * q[B*T][NH*hd], k, v [B*T][NKV*hd]; query head h reads kv head h / (NH/NKV).
 * att[B][NH][T][T]: softmax probabilities (row t uses t2 <= t; the rest is left 0).
 * out[B*T][NH*hd]. */
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                       int NH, int NKV, int hd, int n_threads);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                        const float *k, const float *v, int B, int T, int NH, int NKV, int hd, int n_threads);

/* ---- attention with options (the families beyond Llama) -----------------------------------
 * attention_forward/backward above are these with {1/sqrt(hd), 0, 0}. att keeps the
 * probabilities; masked entries are 0. */
typedef struct attn_opts {
    float scale;    /* multiplies q·k before anything else (1/sqrt(hd) for Llama) */
    int window;     /* > 0: query t sees key t2 only when t - t2 < window (llama.cpp's sliding-window
                       mask, gemma2/gemma3/phi3 local layers); 0: every t2 <= t */
    float softcap;  /* > 0: each scaled score s becomes softcap * tanh(s / softcap) before the mask and
                       softmax (gemma2); 0: none */
} attn_opts;
void attention_forward_ex(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                          int NH, int NKV, int hd, const attn_opts *o, int n_threads);
void attention_backward_ex(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                           const float *k, const float *v, int B, int T, int NH, int NKV, int hd,
                           const attn_opts *o, int n_threads);

/* ---- SwiGLU: out = silu(gate) * up, all [N][F] (as N*F values) ------------------------------ */
void swiglu_forward(float *out, const float *gate, const float *up, int64_t n, int n_threads);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n,
                     int n_threads);

/* ---- GeGLU: out = gelu(gate) * up (Gemma's FFN); gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) -- */
void geglu_forward(float *out, const float *gate, const float *up, int64_t n, int n_threads);
void geglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n,
                    int n_threads);

/* ---- GELU (tanh approximation as above), elementwise (Phi-2's FFN) ---------------------------------- */
void gelu_forward(float *out, const float *inp, int64_t n, int n_threads);
void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n, int n_threads);

/* ---- residual: out = a + b; backward adds dout to both -------------------------------------- */
void residual_forward(float *out, const float *a, const float *b, int64_t n, int n_threads);
void residual_backward(float *da, float *db, const float *dout, int64_t n, int n_threads);

/* ---- soft-cap: out = cap · tanh(inp / cap), elementwise (Gemma 2's final logits); in place allowed
 *      (out == inp); the backward reads the forward's OUTPUT: dinp += dout · (1 − (out/cap)²) -------- */
void softcap_forward(float *out, const float *inp, int64_t n, float cap, int n_threads);
void softcap_backward(float *dinp, const float *dout, const float *out, int64_t n, float cap, int n_threads);

/* ---- losses over logits[N][V] ---------------------------------------------------------------
 * Each stores every row's loss in row_loss[N] (scratch the caller provides), returns their
 * sum (added in row order, so the value never depends on threads) and, with dlogits non-NULL,
 * ACCUMULATES scale × d(per-row loss)/dlogits into dlogits (scale is usually 1/(rows in the
 * batch), so that the loss is a mean). */

/* Cross-entropy of the target ids: -log softmax(logits)[target]. Rows with target < 0 are
 * skipped. work: NULL (the reference: the softmax's exps computed again for the gradient) or
 * LOSS_WORK_DOUBLES(V, n_threads) doubles where each thread keeps a row's exps. */
double crossentropy_forward_backward(float *dlogits, double *row_loss, const float *logits, const int32_t *targets,
                                     int N, int V, float scale, double *work, int n_threads);

/* Distillation loss over the first V_shared ids of both vocabularies (a teacher with a larger
 * vocabulary is compared on the ids the student has): with p = softmax(teacher/τ) and
 * q = softmax(student/τ) over those ids,
 *   forward (reverse = false): τ² · KL(p ‖ q) = τ² Σ p (log p − log q)
 *   reverse:                   τ² · KL(q ‖ p) = τ² Σ q (log q − log p)
 * The τ² factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
 * student: [N][Vs], teacher: [N][Vt]; V_shared ≤ min(Vs, Vt). Student logits past V_shared
 * get no gradient from this loss. */
double kl_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs, const float *teacher,
                           int Vt, int V_shared, int N, float temperature, bool reverse, float scale, double *work,
                           int n_threads);
/* work for the losses: NULL, the reference (each exp computed where the formula has it: five
 * per id for the KL, two for the cross-entropy), or LOSS_WORK_DOUBLES(V, n_threads) doubles
 * (V: the row length, V_shared for the KL) where each thread keeps a row's exps (two per id for
 * the KL, one for the cross-entropy: the softmax's own exps over their sums). The same loss and
 * gradient to rounding (tests/test_distill_ops.c compares them). */
#define LOSS_WORK_DOUBLES(V, n_threads) ((size_t)(n_threads) * 2 * (size_t)(V))

/* The divergences `slmc distill --loss` offers, between the teacher's p and the student's q
 * (both softmax(logits / τ) over the shared ids), each scaled by τ²:
 *   DISTILL_KL          KL(p ‖ q) = Σ p log(p/q)                     (Hinton et al.; DistillKit's default)
 *   DISTILL_REVERSE_KL  KL(q ‖ p) = Σ q log(q/p)                     (mode-seeking; MiniLLM)
 *   DISTILL_JSD         β KL(p ‖ m) + (1 − β) KL(q ‖ m), m = β p + (1 − β) q   (TRL's GKD, β in (0, 1))
 *   DISTILL_TVD         ½ Σ |p − q|                                   (total variation)
 * The gradient through the softmax: with g = dL/dq, dL/dz_i = τ · q_i (g_i − Σ_j q_j g_j) for
 * student logits z (τ² from the scale, 1/τ from z/τ). */
typedef enum distill_kind { DISTILL_KL, DISTILL_REVERSE_KL, DISTILL_JSD, DISTILL_TVD } distill_kind;
typedef struct distill_loss {
    distill_kind kind;
    float temperature;  /* τ > 0 */
    float beta;         /* DISTILL_JSD: the teacher's weight in the mixture m, 0 < β < 1 (0.5: the JSD) */
} distill_loss;

/* The loss l between dense teacher logits and the student's, as kl_forward_backward (which it
 * calls for the two KLs, with work). */
double distill_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs, const float *teacher,
                                int Vt, int V_shared, int N, const distill_loss *l, float scale, double *work,
                                int n_threads);

/* The teacher kept as its k most likely ids per row (a teacher cache): log-probabilities at
 * the loss's τ over the shared ids, and the log of the mass of all other ids (-inf when the k
 * ids hold it all). The divergence is taken between the k + 1 "buckets" (each kept id, and
 * the rest as one), the student's rest bucket being Σ q over the ids not kept; its gradient
 * spreads over the rest in proportion to q. With k = V_shared this is the dense loss. */
typedef struct teacher_topk {
    int k;
    const int32_t *ids;      /* [N][k] distinct ids < V_shared */
    const float *logp;       /* [N][k] */
    const float *logp_rest;  /* [N] */
} teacher_topk;
double distill_topk_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs,
                                     const teacher_topk *t, int V_shared, int N, const distill_loss *l, float scale,
                                     int n_threads);

#endif
