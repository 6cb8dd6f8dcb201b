/* ops.c - forward and backward of the Llama ops for training; see ops.h. */
#include "distill/ops.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * embedding
 * ------------------------------------------------------------------------------------- */

void embedding_forward(float *out, const int32_t *tokens, const float *wte, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, wte + (size_t)tokens[n] * C, sizeof(float) * (size_t)C);
}

void embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int N, int C) {
    /* Rows may repeat a token, so threads split the channels, not the rows: every element of
     * dwte is summed by one thread in row order. */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) dwte[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}

/* ---------------------------------------------------------------------------------------
 * RMSNorm
 * ------------------------------------------------------------------------------------- */

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
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
                      const float *rstd, int N, int C) {
    /* y = x·s·w with s = (mean(x²)+eps)^-1/2, ds/dx_j = -s³ x_j / C:
     * dx_j = s·w_j·dy_j − s³/C · x_j · Σ_i dy_i w_i x_i */
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float acc = 0;
        for (int n = 0; n < N; n++) acc += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * rstd[n];
        dweight[c] += acc;
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

/* Rows of the output are tiled by 4 input rows × 1 weight row so each weight row is loaded
 * once per 4 tokens: the products are memory-bound otherwise. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    const int TILE = 4;
    int n_tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) collapse(2)
    for (int tile = 0; tile < n_tiles; tile++) {
        for (int o = 0; o < OC; o++) {
            const float *w = weight + (size_t)o * C;
            float b = bias ? bias[o] : 0.0f;
            int n0 = tile * TILE, n1 = n0 + TILE < N ? n0 + TILE : N;
            for (int n = n0; n < n1; n++) out[(size_t)n * OC + o] = dot_f32(inp + (size_t)n * C, w, C) + b;
        }
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    /* dinp[n] += Σ_o dout[n][o] · weight[o]: one thread per row n */
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *dx = dinp + (size_t)n * C;
            const float *dy = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                float g = dy[o];
                if (g != 0.0f) axpy_f32(dx, g, weight + (size_t)o * C, C);
            }
        }
    }
    /* dweight[o] += Σ_n dout[n][o] · inp[n]: one thread per output channel o */
    if (dweight || dbias) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            float *dw = dweight ? dweight + (size_t)o * C : NULL;
            float db = 0;
            for (int n = 0; n < N; n++) {
                float g = dout[(size_t)n * OC + o];
                db += g;
                if (dw && g != 0.0f) axpy_f32(dw, g, inp + (size_t)n * C, C);
            }
            if (dbias) dbias[o] += db;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * RoPE
 * ------------------------------------------------------------------------------------- */

/* Rotate every head of every row by angle sign·θ. */
static void rope_rotate(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                        int n_rot, bool neox, float sign) {
    const int half = n_rot / 2;
#pragma omp parallel for schedule(static)
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
                  int n_rot, bool neox) {
    rope_rotate(x, cos_t, sin_t, N, T, n_head, head_dim, n_rot, neox, 1.0f);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_head, int head_dim,
                   int n_rot, bool neox) {
    rope_rotate(dx, cos_t, sin_t, N, T, n_head, head_dim, n_rot, neox, -1.0f);
}

/* ---------------------------------------------------------------------------------------
 * causal grouped-query attention
 * ------------------------------------------------------------------------------------- */

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                       int NH, int NKV, int hd) {
    const int qdim = NH * hd, kvdim = NKV * hd, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const int kh = h / group;
                const float *qt = q + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = dot_f32(qt, k + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd) * scale;
                    if (a[t2] > mx) mx = a[t2];
                }
                float sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = expf(a[t2] - mx);
                    sum += a[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0;
                float *o = out + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                memset(o, 0, sizeof(float) * (size_t)hd);
                for (int t2 = 0; t2 <= t; t2++) axpy_f32(o, a[t2], v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd);
            }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *att, const float *q,
                        const float *k, const float *v, int B, int T, int NH, int NKV, int hd) {
    const int qdim = NH * hd, kvdim = NKV * hd, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)hd);
    /* dk and dv of a kv head collect from every query head of its group: one thread per
     * (batch, kv head) so those sums never race. */
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < NKV; kh++)
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                    const float *go = dout + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    const float *qt = q + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    float *gq = dq + ((size_t)b * T + t) * qdim + (size_t)h * hd;
                    /* softmax backward: dscore = a · (da − Σ a·da), with da[t2] = dout · v[t2] */
                    float adot = 0;
                    for (int t2 = 0; t2 <= t; t2++)
                        adot += a[t2] * dot_f32(go, v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, hd);
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *vt = v + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd;
                        const float *kt = k + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd;
                        float da = dot_f32(go, vt, hd);
                        float ds = a[t2] * (da - adot) * scale;
                        axpy_f32(dv + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, a[t2], go, hd);
                        axpy_f32(gq, ds, kt, hd);
                        axpy_f32(dk + ((size_t)b * T + t2) * kvdim + (size_t)kh * hd, ds, qt, hd);
                    }
                }
}

/* ---------------------------------------------------------------------------------------
 * SwiGLU and residual
 * ------------------------------------------------------------------------------------- */

void swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n) {
    /* silu(g) = g·σ(g), silu'(g) = σ(g)·(1 + g·(1 − σ(g))) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] += dout[i] * g * sg;
    }
}

void residual_forward(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/* ---------------------------------------------------------------------------------------
 * losses
 * ------------------------------------------------------------------------------------- */

/* log Σ exp(x[i]·k) over i < n, stable. */
static double logsumexp_scaled(const float *x, int n, double k) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] * k > mx) mx = x[i] * k;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(x[i] * k - mx);
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

double crossentropy_forward_backward(float *dlogits, double *row_loss, const float *logits, const int32_t *targets,
                                     int N, int V, float scale) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        row_loss[n] = 0;
        if (targets[n] < 0) continue;
        const float *z = logits + (size_t)n * V;
        double lse = logsumexp_scaled(z, V, 1.0);
        row_loss[n] = lse - z[targets[n]];
        if (dlogits) {
            float *d = dlogits + (size_t)n * V;
            for (int i = 0; i < V; i++) d[i] += scale * (float)exp(z[i] - lse);
            d[targets[n]] -= scale;
        }
    }
    return sum_rows(row_loss, N);
}

double kl_forward_backward(float *dlogits, double *row_loss, const float *student, int Vs, const float *teacher,
                           int Vt, int V_shared, int N, float temperature, bool reverse, float scale) {
    const double inv_t = 1.0 / temperature, t2 = (double)temperature * temperature;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * Vs, *t = teacher + (size_t)n * Vt;
        double lse_s = logsumexp_scaled(s, V_shared, inv_t), lse_t = logsumexp_scaled(t, V_shared, inv_t);
        double kl = 0;
        for (int i = 0; i < V_shared; i++) {
            double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t;
            kl += reverse ? exp(lq) * (lq - lp) : exp(lp) * (lp - lq);
        }
        row_loss[n] = t2 * kl;
        if (!dlogits) continue;
        /* d/dz of τ²·KL with z = s/τ gives τ·(...):
         *   forward: q − p          reverse: q·(log q − log p − KL(q‖p)) */
        float *d = dlogits + (size_t)n * Vs;
        for (int i = 0; i < V_shared; i++) {
            double lq = s[i] * inv_t - lse_s, lp = t[i] * inv_t - lse_t, q = exp(lq);
            double g = reverse ? q * (lq - lp - kl) : q - exp(lp);
            d[i] += (float)(scale * temperature * g);
        }
    }
    return sum_rows(row_loss, N);
}
