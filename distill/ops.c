/* ops.c - forward and backward of the training ops (Llama's and the other families'); see ops.h. */
#include "distill/ops.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * embedding
 * ------------------------------------------------------------------------------------- */

void embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int C, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, sizeof(float) * (size_t)C);
}

void embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int C, int n_threads) {
    /* Rows may repeat a token, so threads split the channels, not the rows: every element of
     * dwte is summed by one thread in row order. */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) dwte[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}

/* ---------------------------------------------------------------------------------------
 * RMSNorm
 * ------------------------------------------------------------------------------------- */

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps,
                     int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0; /* sum of squares in double: C is small, precision is cheap */
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float s = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
        rstd[n] = s;
    }
}

void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int N, int C, int n_threads) {
    /* y = x·s·w with s = (mean(x²)+eps)^-1/2, ds/dx_j = -s³ x_j / C:
     * dx_j = s·w_j·dy_j − s³/C · x_j · Σ_i dy_i w_i x_i */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float s = rstd[n];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)dy[c] * weight[c] * x[c];
        float k = (float)(dot * s * s * s / C);
        for (int c = 0; c < C; c++) dx[c] += s * weight[c] * dy[c] - k * x[c];
    }
    /* the weight gradient sums over rows: split channels across threads */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int c = 0; c < C; c++) {
        float acc = 0;
        for (int n = 0; n < N; n++) acc += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * rstd[n];
        dweight[c] += acc;
    }
}

/* ---------------------------------------------------------------------------------------
 * LayerNorm
 * ------------------------------------------------------------------------------------- */

/* inp[N][C] -> out[N][C]; mean[N], rstd[N] saved for backward. weight[C], bias[C] (or NULL). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C, float eps, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double sum = 0, ss = 0; /* in double, as RMSNorm */
        for (int c = 0; c < C; c++) sum += x[c];
        const double mu = sum / C;
        for (int c = 0; c < C; c++) ss += (x[c] - mu) * (x[c] - mu);
        const float m = (float)mu, s = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * weight[c] + (bias ? bias[c] : 0.0f);
        mean[n] = m;
        rstd[n] = s;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C, int n_threads) {
    /* with x̂ = (x − mean)·s and g = dy·w:  dx_j = s · (g_j − mean(g) − x̂_j · mean(g·x̂)) */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        const float m = mean[n], s = rstd[n];
        double gsum = 0, gxsum = 0;
        for (int c = 0; c < C; c++) {
            double g = (double)dy[c] * weight[c];
            gsum += g;
            gxsum += g * ((x[c] - m) * s);
        }
        const float gmean = (float)(gsum / C), gxmean = (float)(gxsum / C);
        for (int c = 0; c < C; c++) dx[c] += s * (dy[c] * weight[c] - gmean - (x[c] - m) * s * gxmean);
    }
    /* the weight and bias gradients sum over rows: split channels across threads */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int c = 0; c < C; c++) {
        float dw = 0, db = 0;
        for (int n = 0; n < N; n++) {
            float dy = dout[(size_t)n * C + c];
            dw += dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
            db += dy;
        }
        dweight[c] += dw;
        if (dbias) dbias[c] += db;
    }
}

/* ---------------------------------------------------------------------------------------
 * matmul
 * ------------------------------------------------------------------------------------- */

static inline float dot_f32(const float *a, const float *b, int n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy_f32(float *y, float a, const float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* All three products are one blocked GEMM (distill/gemm.c) with the operands described by
 * strides, so nothing is transposed in memory:
 *   out   = inp · Wᵀ      A = inp [N][C],        B(k=c, j=o) = W[o][c]
 *   dinp += dout · W      A = dout [N][OC],      B = W [OC][C]
 *   dW   += doutᵀ · inp   A(i=o, k=n) = dout[n][o], B = inp [N][C]
 * gemm_f32 splits the output across threads and sums every element over k in a fixed order,
 * so the results do not depend on the thread count. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC,
                    const gemm_ctx *ctx) {
    const int n_threads = ctx->n_threads;
    if (bias) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, sizeof(float) * (size_t)OC);
    }
    gemm_f32(ctx, N, OC, C, (gemm_mat){inp, C, 1}, (gemm_mat){weight, 1, C}, out, OC, bias != NULL);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, const gemm_ctx *ctx) {
    const int n_threads = ctx->n_threads;
    if (dinp) gemm_f32(ctx, N, C, OC, (gemm_mat){dout, OC, 1}, (gemm_mat){weight, C, 1}, dinp, C, true);
    if (dweight) gemm_f32(ctx, OC, C, N, (gemm_mat){dout, 1, OC}, (gemm_mat){inp, C, 1}, dweight, C, true);
    /* dbias[o] += Σ_n dout[n][o]: one thread per output channel, rows in order */
    if (dbias) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int o = 0; o < OC; o++) {
            float db = 0;
            for (int n = 0; n < N; n++) db += dout[(size_t)n * OC + o];
            dbias[o] += db;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * RoPE
 * ------------------------------------------------------------------------------------- */

/* Rotate every head of every row by angle sign·θ. */
static void rope_rotate(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                        int n_rot, bool neox, float sign, int n_threads) {
    const int half = n_rot / 2;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *cs = cos_t + (size_t)(n % T) * half, *sn = sin_t + (size_t)(n % T) * half;
        for (int h = 0; h < n_head; h++) {
            float *v = x + (size_t)n * n_head * head_dim + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                float x0 = v[a], x1 = v[b], s = sign * sn[i];
                v[a] = x0 * cs[i] - x1 * s;
                v[b] = x0 * s + x1 * cs[i];
            }
        }
    }
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                  int n_rot, bool neox, int n_threads) {
    rope_rotate(x, cos_t, sin_t, N, T, n_head, head_dim, n_rot, neox, 1.0f, n_threads);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                   int n_rot, bool neox, int n_threads) {
    rope_rotate(dx, cos_t, sin_t, N, T, n_head, head_dim, n_rot, neox, -1.0f, n_threads);
}

/* ---------------------------------------------------------------------------------------
 * causal grouped-query attention
 * ------------------------------------------------------------------------------------- */

/* First key row t sees: t - window + 1 with a window, else 0. The last is always t. */
static inline int attn_first(int t, int window) { return window > 0 && t >= window ? t - window + 1 : 0; }

/* q[B*T][NH*hd], k, v [B*T][NKV*hd] -> out[B*T][NH*hd], att[B][NH][T][T] (probabilities,
 * 0 outside t0..t). Score s = (q·k)·scale, then softcap·tanh(s/softcap) with a soft-cap. */
void attention_forward_ex(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                          int NH, int NKV, int hd, const attn_opts *o, int n_threads) {
    const int qdim = NH * hd, kvdim = NKV * hd, group = NH / NKV;
    const float scale = o->scale, cap = o->softcap;
    const int window = o->window;
#pragma omp parallel for num_threads(n_threads) schedule(static) collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const int kh = h / group, t0 = attn_first(t, window);
                const float *qt = q + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float mx = -INFINITY;
                for (int t2 = t0; t2 <= t; t2++) {
                    a[t2] = dot_f32(qt, k + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd) * scale;
                    if (cap > 0) a[t2] = cap * tanhf(a[t2] / cap);
                    if (a[t2] > mx) mx = a[t2];
                }
                float sum = 0;
                for (int t2 = t0; t2 <= t; t2++) {
                    a[t2] = expf(a[t2] - mx);
                    sum += a[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = t0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = 0; t2 < t0; t2++) a[t2] = 0;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0;
                float *ot = out + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                memset(ot, 0, sizeof(float) * (size_t)hd);
                for (int t2 = t0; t2 <= t; t2++)
                    axpy_f32(ot, a[t2], v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd);
            }
}

/* Gradients into dq[B*T][NH*hd], dk, dv [B*T][NKV*hd] from dout[B*T][NH*hd] and the forward's
 * att. The soft-cap's derivative 1 − tanh²(s/softcap) needs the score, recomputed from q·k. */
void attention_backward_ex(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                           const float *k, const float *v, int B, int T, int NH, int NKV, int hd,
                           const attn_opts *o, int n_threads) {
    const int qdim = NH * hd, kvdim = NKV * hd, group = NH / NKV;
    const float scale = o->scale, cap = o->softcap;
    const int window = o->window;
    /* dk and dv of a kv head collect from every query head of its group: one thread per
     * (batch, kv head) so those sums never race. */
#pragma omp parallel for num_threads(n_threads) schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++)
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const int t0 = attn_first(t, window);
                    const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                    const float *go = dout + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    const float *qt = q + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    float *gq = dq + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    /* softmax backward: dscore = a · (da − Σ a·da), with da[t2] = dout · v[t2] */
                    float adot = 0;
                    for (int t2 = t0; t2 <= t; t2++)
                        adot += a[t2] * dot_f32(go, v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd);
                    for (int t2 = t0; t2 <= t; t2++) {
                        const float *vt = v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd;
                        const float *kt = k + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd;
                        float da = dot_f32(go, vt, hd);
                        float ds = a[t2] * (da - adot);
                        if (cap > 0) {
                            float th = tanhf(dot_f32(qt, kt, hd) * scale / cap);
                            ds *= 1.0f - th * th;
                        }
                        ds *= scale;
                        axpy_f32(dv + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, a[t2], go, hd);
                        axpy_f32(gq, ds, kt, hd);
                        axpy_f32(dk + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, ds, qt, hd);
                    }
                }
}

/* Llama's attention: scale 1/sqrt(hd), no window, no soft-cap. */
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                       int NH, int NKV, int hd, int n_threads) {
    const attn_opts o = {.scale = 1.0f / sqrtf((float)hd), .window = 0, .softcap = 0};
    attention_forward_ex(out, att, q, k, v, B, T, NH, NKV, hd, &o, n_threads);
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                        const float *k, const float *v, int B, int T, int NH, int NKV, int hd, int n_threads) {
    const attn_opts o = {.scale = 1.0f / sqrtf((float)hd), .window = 0, .softcap = 0};
    attention_backward_ex(dq, dk, dv, dout, att, q, k, v, B, T, NH, NKV, hd, &o, n_threads);
}

/* ---------------------------------------------------------------------------------------
 * SwiGLU
 * ------------------------------------------------------------------------------------- */

void swiglu_forward(float *out, const float *gate, const float *up, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n,
                     int n_threads) {
    /* silu(g) = g·σ(g), silu'(g) = σ(g)·(1 + g·(1 − σ(g))) */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] += dout[i] * g * sg;
    }
}

/* ---------------------------------------------------------------------------------------
 * GELU and GeGLU
 * ------------------------------------------------------------------------------------- */

#define GELU_K 0.7978845608f /* √(2/π) */
#define GELU_A 0.044715f

/* gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³) */
static inline float gelu_f(float x) { return 0.5f * x * (1.0f + tanhf(GELU_K * (x + GELU_A * x * x * x))); }

/* gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²) */
static inline float gelu_grad_f(float x) {
    float th = tanhf(GELU_K * (x + GELU_A * x * x * x));
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_A * x * x);
}

/* out[n] = gelu(inp[n]) */
void gelu_forward(float *out, const float *inp, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = gelu_f(inp[i]);
}

void gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * gelu_grad_f(inp[i]);
}

/* out[n] = gelu(gate[n]) · up[n] */
void geglu_forward(float *out, const float *gate, const float *up, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = gelu_f(gate[i]) * up[i];
}

void geglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n,
                    int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        dgate[i] += dout[i] * up[i] * gelu_grad_f(gate[i]);
        dup[i] += dout[i] * gelu_f(gate[i]);
    }
}

/* ---------------------------------------------------------------------------------------
 * residual
 * ------------------------------------------------------------------------------------- */

void residual_forward(float *out, const float *a, const float *b, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/* ---------------------------------------------------------------------------------------
 * soft-cap
 * ------------------------------------------------------------------------------------- */

/* out[n] = cap · tanh(inp[n] / cap); out may be inp */
void softcap_forward(float *out, const float *inp, int64_t n, float cap, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = cap * tanhf(inp[i] / cap);
}

/* from the forward's output: tanh = out/cap, so the derivative is 1 − (out/cap)² */
void softcap_backward(float *dinp, const float *dout, const float *out, int64_t n, float cap, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float th = out[i] / cap;
        dinp[i] += dout[i] * (1.0f - th * th);
    }
}

/* ---------------------------------------------------------------------------------------
 * losses
 * ------------------------------------------------------------------------------------- */

/* e^x for x < 709 to about 1 ulp of double, written with plain arithmetic (no libm call, no
 * branch) so that loops over it vectorize: the losses take ~3 exponentials per logit, 1024 ×
 * 32000 logits a step, and libm's exp made them a fifth of the step. Range reduction
 * x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts, Cody & Waite), e^r by its Taylor series to
 * r¹³ (next term < 1e-17 relative), then the exponent n written into the bits of 2ⁿ.
 * Below −708 (where 2ⁿ would be subnormal) it returns 0. */
/* GCC will not turn the selects below into vector blends while comparisons may raise FP
 * exceptions (-ftrapping-math, the default): these functions are compiled without that (no
 * result changes; nothing here reads the exception flags). Clang vectorizes them as they are. */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTOR_MATH __attribute__((optimize("no-trapping-math")))
#else
#define VECTOR_MATH
#endif
VECTOR_MATH static inline double exp_vec(double x) {
    const double magic = 6755399441055744.0; /* 1.5·2⁵²: adding it rounds to an integer */
    const double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -708.0 ? -708.0 : x;
    double t = xc * log2e + magic, n = t - magic;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* t's low mantissa bits hold n as a two's-complement integer: the bits of t minus the bits
     * of magic are n, and (n + 1023) << 52 are the bits of 2ⁿ */
    union { double d; int64_t i; } tb = {t}, mb = {magic}, scale;
    scale.i = (tb.i - mb.i + 1023) << 52;
    double e = p * scale.d;
    return x < -708.0 ? 0.0 : e;
}

/* max of x[i] over i < n (n ≥ 1) */
VECTOR_MATH static float max_f32(const float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

/* log Σ exp(x[i]·k) over i < n, stable (k > 0). */
VECTOR_MATH static double logsumexp_scaled(const float *x, int n, double k) {
    const double mx = max_f32(x, n) * k;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += exp_vec(x[i] * k - mx);
    return mx + log(s);
}

/* e[i] = exp(x[i]·k − max) for i < n (k > 0); *sum = Σ e; returns log Σ exp(x[i]·k), as
 * logsumexp_scaled, keeping the exps: e[i] / *sum is the softmax. */
VECTOR_MATH static double exps_scaled(const float *x, int n, double k, double *e, double *sum) {
    const double mx = max_f32(x, n) * k;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) {
        e[i] = exp_vec(x[i] * k - mx);
        s += e[i];
    }
    *sum = s;
    return mx + log(s);
}

/* Rows are summed in order after the parallel loop: an OpenMP reduction would add the
 * per-thread partial sums in whatever order threads finish, and the loss would vary in its
 * last bits from run to run. */
static double sum_rows(const double *row_loss, int N) {
    double total = 0;
    for (int n = 0; n < N; n++) total += row_loss[n];
    return total;
}

VECTOR_MATH double crossentropy_forward_backward(float *dlogits, double *row_loss, const float *logits,
                                                 const int32_t *targets, int N, int V, float scale, double *work,
                                                 int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        row_loss[n] = 0;
        if (targets[n] < 0) continue;
        const float *z = logits + (size_t)n * V;
        double *e = work ? work + (size_t)omp_get_thread_num() * 2 * (size_t)V : NULL, sum;
        const double lse = e ? exps_scaled(z, V, 1.0, e, &sum) : logsumexp_scaled(z, V, 1.0);
        row_loss[n] = lse - z[targets[n]];
        if (!dlogits) continue;
        float *d = dlogits + (size_t)n * V;
        if (e) { /* the softmax: the kept exps over their sum */
            const double inv = 1.0 / sum;
#pragma omp simd
            for (int i = 0; i < V; i++) d[i] += scale * (float)(e[i] * inv);
        } else {
#pragma omp simd
            for (int i = 0; i < V; i++) d[i] += scale * (float)exp_vec(z[i] - lse);
        }
        d[targets[n]] -= scale;
    }
    return sum_rows(row_loss, N);
}

/* kl_forward_backward with each thread's row exps in work: p and q from two exps per id. */
VECTOR_MATH static double kl_kept_exps(float *dlogits, double *row_loss, const float *student, int Vs,
                                       const float *teacher, int Vt, int V_shared, int N, float temperature,
                                       bool reverse, float scale, double *work, int n_threads) {
    const double inv_t = 1.0 / temperature, t2 = (double)temperature * temperature, c = scale * temperature;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * Vs, *t = teacher + (size_t)n * Vt;
        double *es = work + (size_t)omp_get_thread_num() * 2 * (size_t)V_shared, *et = es + V_shared, sum_s, sum_t;
        const double lse_s = exps_scaled(s, V_shared, inv_t, es, &sum_s), lse_t = exps_scaled(t, V_shared, inv_t, et, &sum_t);
        const double inv_s = 1.0 / sum_s, inv_p = 1.0 / sum_t;
        double kl = 0;
#pragma omp simd reduction(+ : kl)
        for (int i = 0; i < V_shared; i++) {
            const double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t;
            kl += reverse ? es[i] * inv_s * (lq - lp) : et[i] * inv_p * (lp - lq);
        }
        row_loss[n] = t2 * kl;
        if (!dlogits) continue;
        /* forward: q − p; reverse: q (log q − log p − KL) */
        float *d = dlogits + (size_t)n * Vs;
#pragma omp simd
        for (int i = 0; i < V_shared; i++) {
            const double q = es[i] * inv_s;
            const double g = reverse ? q * (s[i] * inv_t - lse_s - (t[i] * inv_t - lse_t) - kl) : q - et[i] * inv_p;
            d[i] += (float)(c * g);
        }
    }
    return sum_rows(row_loss, N);
}

VECTOR_MATH double kl_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs,
                                       const float *teacher, int Vt, int V_shared, int N, float temperature,
                                       bool reverse, float scale, double *work, int n_threads) {
    if (work)
        return kl_kept_exps(dlogits, row_loss, student, Vs, teacher, Vt, V_shared, N, temperature, reverse, scale, work,
                            n_threads);
    const double inv_t = 1.0 / temperature, t2 = (double)temperature * temperature;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * Vs, *t = teacher + (size_t)n * Vt;
        double lse_s = logsumexp_scaled(s, V_shared, inv_t), lse_t = logsumexp_scaled(t, V_shared, inv_t);
        double kl = 0;
#pragma omp simd reduction(+ : kl)
        for (int i = 0; i < V_shared; i++) {
            double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t;
            kl += reverse ? exp_vec(lq) * (lq - lp) : exp_vec(lp) * (lp - lq);
        }
        row_loss[n] = t2 * kl;
        if (!dlogits) continue;
        /* d/dz of τ²·KL with z = s/τ gives τ·(...):
         *   forward: q − p          reverse: q·(log q − log p − KL(q‖p)) */
        float *d = dlogits + (size_t)n * Vs;
#pragma omp simd
        for (int i = 0; i < V_shared; i++) {
            double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t, q = exp_vec(lq);
            double g = reverse ? q * (lq - lp - kl) : q - exp_vec(lp);
            d[i] += (float)(scale * temperature * g);
        }
    }
    return sum_rows(row_loss, N);
}

/* One bucket's share of a divergence between bucketed distributions: teacher mass P, student
 * mass Q and their logs (floored, so an empty bucket costs nothing and never divides by zero).
 * Returns the term of the loss (before τ²) and sets *g = dL/dQ of this bucket. */
static double bucket_term(const distill_loss *l, double P, double lP, double Q, double lQ, double *g) {
    switch (l->kind) {
    case DISTILL_KL:
        *g = Q > 0 ? -P / Q : 0;
        return P > 0 ? P * (lP - lQ) : 0;
    case DISTILL_REVERSE_KL:
        *g = lQ - lP + 1;
        return Q > 0 ? Q * (lQ - lP) : 0;
    case DISTILL_JSD: {
        const double beta = l->beta, M = beta * P + (1 - beta) * Q, lM = M > 0 ? log(M) : -1e4;
        *g = (1 - beta) * (lQ - lM); /* the mixture's own terms cancel */
        return (P > 0 ? beta * P * (lP - lM) : 0) + (Q > 0 ? (1 - beta) * Q * (lQ - lM) : 0);
    }
    case DISTILL_TVD:
    default:
        *g = Q > P ? 0.5 : Q < P ? -0.5 : 0;
        return 0.5 * fabs(P - Q);
    }
}

static double floor_log(double x) { return x > 0 ? log(x) : -1e4; }

double distill_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs, const float *teacher,
                                int Vt, int V_shared, int N, const distill_loss *l, float scale, double *work,
                                int n_threads) {
    if (l->kind == DISTILL_KL || l->kind == DISTILL_REVERSE_KL)
        return kl_forward_backward(dlogits, row_loss, student, Vs, teacher, Vt, V_shared, N, l->temperature,
                                   l->kind == DISTILL_REVERSE_KL, scale, work, n_threads);
    const double inv_t = 1.0 / l->temperature, t2 = (double)l->temperature * l->temperature;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * Vs, *t = teacher + (size_t)n * Vt;
        const double lse_s = logsumexp_scaled(s, V_shared, inv_t), lse_t = logsumexp_scaled(t, V_shared, inv_t);
        /* pass 1: the loss and Σ q g; pass 2 recomputes each id's p, q, g for its gradient */
        double loss = 0, gbar = 0, g;
        for (int i = 0; i < V_shared; i++) {
            const double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t, q = exp(lq);
            loss += bucket_term(l, exp(lp), lp, q, lq, &g);
            gbar += q * g;
        }
        row_loss[n] = t2 * loss;
        if (!dlogits) continue;
        float *d = dlogits + (size_t)n * Vs;
        for (int i = 0; i < V_shared; i++) {
            const double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t, q = exp(lq);
            bucket_term(l, exp(lp), lp, q, lq, &g);
            d[i] += (float)(scale * l->temperature * q * (g - gbar));
        }
    }
    return sum_rows(row_loss, N);
}

double distill_topk_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs,
                                     const teacher_topk *t, int V_shared, int N, const distill_loss *l, float scale,
                                     int n_threads) {
    const double inv_t = 1.0 / l->temperature, t2 = (double)l->temperature * l->temperature;
    const int k = t->k;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * Vs;
        const int32_t *ids = t->ids + (size_t)n * k;
        const float *logp = t->logp + (size_t)n * k;
        const double lse_s = logsumexp_scaled(s, V_shared, inv_t);
        /* the kept buckets, then the rest (every id not kept) as one */
        double loss = 0, gbar = 0, kept = 0, g;
        for (int b = 0; b < k; b++) {
            const double lq = s[ids[b]] * inv_t - lse_s, q = exp(lq);
            loss += bucket_term(l, exp(logp[b]), logp[b], q, lq, &g);
            gbar += q * g;
            kept += q;
        }
        /* no rest bucket when the k ids are every shared id (1 - kept would only be rounding) */
        const double q_rest = k < V_shared && kept < 1 ? 1 - kept : 0, lr = k < V_shared ? t->logp_rest[n] : -INFINITY;
        const double p_rest = isfinite(lr) ? exp(lr) : 0, lp_rest = isfinite(lr) ? lr : -1e4;
        double g_rest;
        loss += bucket_term(l, p_rest, lp_rest, q_rest, floor_log(q_rest), &g_rest);
        gbar += q_rest * g_rest;
        row_loss[n] = t2 * loss;
        if (!dlogits) continue;
        /* every id as part of the rest, then each kept id moved to its own bucket */
        float *d = dlogits + (size_t)n * Vs;
        const double c = scale * l->temperature;
        for (int i = 0; i < V_shared; i++) d[i] += (float)(c * exp(s[i] * inv_t - lse_s) * (g_rest - gbar));
        for (int b = 0; b < k; b++) {
            const double lq = s[ids[b]] * inv_t - lse_s, q = exp(lq);
            bucket_term(l, exp(logp[b]), logp[b], q, lq, &g);
            d[ids[b]] += (float)(c * q * (g - g_rest));
        }
    }
    return sum_rows(row_loss, N);
}
