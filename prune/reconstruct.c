/* reconstruct.c - structured OBS: re-selection of the removed heads / FFN channels and the
 * least-squares refit of attn_output / ffn_down. See reconstruct.h for the algebra. */
#include "reconstruct.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/llm.h"
#include "eval/perplexity.h"
#include "eval/ranks.h"
#include "prune/importance.h"
#include "quant/gptq.h"

/* ===================================================================== one projection */

/* (G + lambda I)^-1 into ginv, lambda = damp * mean(diag G); never-active inputs (G_ii = 0)
 * get 1 on the diagonal so they stay decoupled. Damping is raised tenfold up to three times;
 * *used is the lambda that worked. */
static int damped_inverse(const double *g, int64_t n, double damp, double *ginv, double *used) {
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += g[i * n + i];
    mean /= (double)n;
    double lambda = damp * (mean > 0 ? mean : 1);
    for (int attempt = 0; attempt < 4; attempt++, lambda *= 10) {
        memcpy(ginv, g, sizeof(double) * (size_t)(n * n));
        for (int64_t i = 0; i < n; i++) {
            if (ginv[i * n + i] == 0) ginv[i * n + i] = 1;
            ginv[i * n + i] += lambda;
        }
        if (gptq_spd_inverse(ginv, n) == 0) { *used = lambda; return 0; }
    }
    return -1;
}

/* m = (ginv[B,B])^-1 for the unit's columns B = [c0, c0+b). */
static int block_inverse(const double *ginv, int64_t n, int64_t c0, int64_t b, double *m) {
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < b; j++) m[i * b + j] = ginv[(c0 + i) * n + c0 + j];
    if (b == 1) {
        if (!(m[0] > 0)) return -1;
        m[0] = 1 / m[0];
        return 0;
    }
    return gptq_spd_inverse(m, b);
}

/* OBS cost of removing columns [c0, c0+b): sum_e w[e,B] m w[e,B]^T. */
static double unit_cost(const double *w, int64_t n_out, int64_t n, int64_t c0, int64_t b, const double *m) {
    double s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (int64_t e = 0; e < n_out; e++) {
        const double *we = w + e * n + c0;
        for (int64_t i = 0; i < b; i++) {
            double t = 0;
            for (int64_t j = 0; j < b; j++) t += m[i * b + j] * we[j];
            s += we[i] * t;
        }
    }
    return s;
}

/* x[r, j] -= x[r, B] rows_b[:, j] for every row r (live_rows NULL: all rows) and live column
 * j, where B = [c0, c0+b): the one update both the weights and the inverse get. */
static void downdate_rows(double *x, int64_t n_rows, int64_t n, const bool *live_rows, const bool *live, int64_t c0,
                          int64_t b, const double *rows_b) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n_rows; r++) {
        if (live_rows && !live_rows[r]) continue;
        double *xr = x + r * n;
        double a[b];
        for (int64_t k = 0; k < b; k++) a[k] = xr[c0 + k];
        for (int64_t j = 0; j < n; j++) {
            if (!live[j]) continue;
            double t = 0;
            for (int64_t k = 0; k < b; k++) t += a[k] * rows_b[k * n + j];
            xr[j] -= t;
        }
    }
}

/* Remove unit [c0, c0+b) (m its block inverse; live already excludes it): refit w and
 * downdate ginv over the live columns, then zero the unit's columns of w. */
static void remove_unit(double *w, int64_t n_out, double *ginv, int64_t n, const bool *live, int64_t c0, int64_t b,
                        const double *m, double *rows_b) {
    /* rows_b [b][n] = m ginv[B, :], taken before the downdate */
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < n; j++) {
            double t = 0;
            for (int64_t k = 0; k < b; k++) t += m[i * b + k] * ginv[(c0 + k) * n + j];
            rows_b[i * n + j] = t;
        }
    downdate_rows(w, n_out, n, NULL, live, c0, b, rows_b);    /* w -= w[:,B] m ginv[B,:] */
    downdate_rows(ginv, n, n, live, live, c0, b, rows_b);     /* ginv -= ginv[:,B] m ginv[B,:] */
    for (int64_t e = 0; e < n_out; e++)
        for (int64_t k = 0; k < b; k++) w[e * n + c0 + k] = 0;
}

/* tr(d G' d^T) over the columns listed in cols (the only non-zero columns of d), with G' the
 * damped matrix that was inverted: G, 1 on a zero diagonal, plus lambda on the diagonal. */
static double output_error(const double *d, int64_t n_out, int64_t n, const double *g, double lambda,
                           const int64_t *cols, int64_t n_cols) {
    double s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (int64_t e = 0; e < n_out; e++) {
        const double *de = d + e * n;
        for (int64_t i = 0; i < n_cols; i++) {
            double t = 0;
            for (int64_t j = 0; j < n_cols; j++) t += g[cols[i] * n + cols[j]] * de[cols[j]];
            const double gii = g[cols[i] * n + cols[i]];
            t += ((gii == 0 ? 1 : 0) + lambda) * de[cols[i]];
            s += de[cols[i]] * t;
        }
    }
    return s;
}

int prune_obs_remove(double *w, int64_t n_out, const double *g, int64_t n, int64_t b, int64_t n_groups,
                     int64_t n_remove, bool reselect, double damp, int64_t *removed, double *err_before,
                     double *err_after, slmc_err *err) {
    if (b < 1 || n % b != 0 || n_groups < 1 || (n / b) % n_groups != 0 || n_remove < 0 || n_remove % n_groups != 0 ||
        n_remove >= n / b)
        return slmc_fail(err, NULL, "reconstruction: %lld columns in units of %lld, %lld groups, %lld to remove do not fit",
                         (long long)n, (long long)b, (long long)n_groups, (long long)n_remove);
    const int64_t n_units = n / b, per_group = n_units / n_groups;
    double *ginv = malloc(sizeof(double) * (size_t)(n * n));
    double *w0 = malloc(sizeof(double) * (size_t)(n_out * n));
    double *rows_b = malloc(sizeof(double) * (size_t)(b * n));
    double *mb = malloc(sizeof(double) * (size_t)(b * b));
    double *cost = malloc(sizeof(double) * (size_t)n_units);
    bool *live = malloc(sizeof(bool) * (size_t)n);
    bool *gone = calloc((size_t)n_units, sizeof(bool));
    int64_t *left = malloc(sizeof(int64_t) * (size_t)n_groups);
    int64_t *cols = malloc(sizeof(int64_t) * (size_t)n);
    int rc = 0;
    if (!ginv || !w0 || !rows_b || !mb || !cost || !live || !gone || !left || !cols) {
        rc = slmc_fail(err, NULL, "reconstruction: out of memory for %lld x %lld", (long long)n, (long long)n);
        goto done;
    }
    memcpy(w0, w, sizeof(double) * (size_t)(n_out * n));
    double lambda = 0;
    if (damped_inverse(g, n, damp > 0 ? damp : PRUNE_RECON_DAMP, ginv, &lambda) != 0) {
        rc = slmc_fail(err, NULL, "reconstruction: the activations' Gram matrix is not positive definite even damped");
        goto done;
    }
    for (int64_t j = 0; j < n; j++) live[j] = true;
    for (int64_t q = 0; q < n_groups; q++) left[q] = n_remove / n_groups;
    double total_cost = 0;
    for (int64_t step = 0; step < n_remove; step++) {
        int64_t u = reselect ? -1 : removed[step];
        if (reselect) {
            /* every candidate's cost from the current refit weights and inverse */
            if (b == 1) {
#pragma omp parallel for schedule(static)
                for (int64_t v = 0; v < n_units; v++) {
                    double d = ginv[v * n + v], s = 0;
                    for (int64_t e = 0; e < n_out; e++) s += w[e * n + v] * w[e * n + v];
                    cost[v] = gone[v] || left[v / per_group] == 0 || !(d > 0) ? INFINITY : s / d;
                }
            } else {
                for (int64_t v = 0; v < n_units; v++) {
                    cost[v] = INFINITY;
                    if (gone[v] || left[v / per_group] == 0) continue;
                    if (block_inverse(ginv, n, v * b, b, mb) != 0) {
                        rc = slmc_fail(err, NULL, "reconstruction: lost positive definiteness");
                        goto done;
                    }
                    cost[v] = unit_cost(w, n_out, n, v * b, b, mb);
                }
            }
            for (int64_t v = 0; v < n_units; v++)
                if (!gone[v] && left[v / per_group] > 0 && (u < 0 || cost[v] < cost[u])) u = v;
        } else if (u < 0 || u >= n_units || gone[u] || left[u / per_group] == 0) {
            rc = slmc_fail(err, NULL, "reconstruction: unit %lld cannot be removed", (long long)u);
            goto done;
        }
        if (block_inverse(ginv, n, u * b, b, mb) != 0) {
            rc = slmc_fail(err, NULL, "reconstruction: lost positive definiteness");
            goto done;
        }
        total_cost += unit_cost(w, n_out, n, u * b, b, mb);
        for (int64_t k = 0; k < b; k++) live[u * b + k] = false;
        remove_unit(w, n_out, ginv, n, live, u * b, b, mb, rows_b);
        gone[u] = true;
        left[u / per_group]--;
        removed[step] = u;
    }
    /* the error of dropping the removed columns as they were (no refit) */
    int64_t nc = 0;
    for (int64_t j = 0; j < n; j++)
        if (!live[j]) cols[nc++] = j;
    for (int64_t i = 0; i < n_out * n; i++) w0[i] = live[i % n] ? 0 : w0[i];
    if (err_before) *err_before = output_error(w0, n_out, n, g, lambda, cols, nc);
    if (err_after) *err_after = total_cost;
done:
    free(ginv); free(w0); free(rows_b); free(mb); free(cost); free(live); free(gone); free(left); free(cols);
    return rc;
}

/* ===================================================================== calibration */

/* Gram matrices of the projections' inputs, for the layers [l0, l1) of one pass. A chunk's
 * matrices are collected on their own into one vector, the unit of the sum over chunks
 * (comm.h): per layer the packed upper triangle of sum h h^T (n_ff) and of sum o o^T
 * (n_head * head_dim) when collected, then two token counts per layer. */
#define NOT_COLLECTED SIZE_MAX

typedef struct grams {
    int64_t l0, l1;          /* the layers of this pass */
    int64_t F, Q;            /* n_ff and n_head * head_dim */
    size_t *at_ffn, *at_att; /* [l1 - l0] where a layer's matrices start in vec, or NOT_COLLECTED */
    size_t at_tok;           /* vec[at_tok + 2 (l - l0)]: layer l's FFN tokens, + 1 its attention's */
    double *vec;             /* the chunk being collected */
    bool stopped;            /* the pass was cut short on purpose after layer l1 - 1 */
    int64_t n_layer;         /* layers of the model */
} grams;

static int hook_ffn(void *ud, int layer, const float *x, int n, int64_t n_ff) {
    grams *g = ud;
    if (layer < g->l0 || layer >= g->l1 || g->at_ffn[layer - g->l0] == NOT_COLLECTED) return 0;
    if (n_ff != g->F) return -1;
    gptq_packed_add(g->vec + g->at_ffn[layer - g->l0], n_ff, x, n);
    g->vec[g->at_tok + 2 * (size_t)(layer - g->l0)] += n;
    return 0;
}

static int hook_heads(void *ud, int layer, const float *x, int n, int64_t n_head, int64_t hd) {
    grams *g = ud;
    if (layer < g->l0 || layer >= g->l1 || g->at_att[layer - g->l0] == NOT_COLLECTED) return 0;
    if (n_head * hd != g->Q) return -1;
    gptq_packed_add(g->vec + g->at_att[layer - g->l0], g->Q, x, n);
    g->vec[g->at_tok + 2 * (size_t)(layer - g->l0) + 1] += n;
    return 0;
}

/* Stop the pass once the last layer of the group is done (nothing later is needed). */
static int hook_layer(void *ud, int layer, const float *x, int n, int64_t E) {
    grams *g = ud;
    (void)x; (void)n; (void)E;
    if (layer == g->l1 - 1 && g->l1 < g->n_layer) { g->stopped = true; return 1; }
    return 0;
}

/* The full symmetric matrix from the upper triangle the collection fills. */
static void symmetrise(double *h, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) h[j * n + i] = h[i * n + j];
}

/* ===================================================================== one layer */

/* Tensor `blk.L.NAME.weight` as double [rows][cols]. */
static int read_weight(const model *m, int64_t layer, const char *what, int64_t rows, int64_t cols, double **out,
                       slmc_err *err) {
    char name[96];
    snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)layer, what);
    int64_t ti = model_find(m, name);
    if (ti < 0) return slmc_fail(err, m->path, "tensor %s is missing", name);
    if (m->tensors[ti].ne[0] != cols || model_tensor_rows(&m->tensors[ti]) != rows)
        return slmc_fail(err, m->path, "%s: shape does not match the model's configuration", name);
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    *out = malloc(sizeof(double) * (size_t)(rows * cols));
    if (!f || !*out) { free(f); free(*out); *out = NULL; return slmc_fail(err, m->path, "%s: out of memory", name); }
    if (prune_read_f32(m, ti, 0, rows, f, err) != 0) { free(f); free(*out); *out = NULL; return -1; }
    for (int64_t i = 0; i < rows * cols; i++) (*out)[i] = f[i];
    free(f);
    return 0;
}

/* The kept units (ascending) given the removed ones; and the F32 refit [rows][kept*b]. */
static int kept_units(const int64_t *removed, int64_t n_removed, int64_t n_units, int64_t *kept) {
    int64_t k = 0;
    for (int64_t u = 0; u < n_units; u++) {
        bool r = false;
        for (int64_t i = 0; i < n_removed && !r; i++) r = removed[i] == u;
        if (!r) kept[k++] = u;
    }
    return (int)k;
}

static float *refit_columns(const double *w, int64_t rows, int64_t n, const int64_t *kept, int64_t n_kept, int64_t b) {
    float *f = malloc(sizeof(float) * (size_t)(rows * n_kept * b) + 1);
    if (!f) return NULL;
    for (int64_t e = 0; e < rows; e++)
        for (int64_t i = 0; i < n_kept; i++)
            for (int64_t k = 0; k < b; k++) f[(e * n_kept + i) * b + k] = (float)w[e * n + kept[i] * b + k];
    return f;
}

/* FFN of layer l: re-select / refit ffn_down over the kept channels. */
static int layer_ffn(prune_plan *p, const model *m, int64_t l, gptq_hessian *hs, const prune_recon_opts *o,
                     prune_recon_info *info, slmc_err *err) {
    const int64_t E = p->n_embd_in, F = p->n_ff_in, R = F - p->n_ff;
    double *w = NULL;
    int64_t *removed = malloc(sizeof(int64_t) * (size_t)(R > 0 ? R : 1));
    if (!removed) return slmc_fail(err, m->path, "out of memory");
    int64_t *kept = p->ffn + l * p->n_ff;
    if (!o->reselect) { /* removed = the channels the plan does not keep */
        int64_t k = 0, r = 0;
        for (int64_t f = 0; f < F; f++) {
            if (k < p->n_ff && kept[k] == f) k++;
            else removed[r++] = f;
        }
    }
    double before = 0, after = 0;
    symmetrise(hs->h, F);
    int rc = read_weight(m, l, "ffn_down", E, F, &w, err);
    if (rc == 0 && prune_obs_remove(w, E, hs->h, F, 1, 1, R, o->reselect, o->damp, removed, &before, &after, err) != 0)
        rc = slmc_fail_prefix(err, m->path);
    if (rc == 0) {
        kept_units(removed, R, F, kept);
        if (!(p->ffn_down_new[l] = refit_columns(w, E, F, kept, p->n_ff, 1))) rc = slmc_fail(err, m->path, "out of memory");
        info->ffn_err_before += before / (double)hs->n_tokens;
        info->ffn_err_after += after / (double)hs->n_tokens;
    }
    free(w);
    free(removed);
    return rc;
}

/* Attention of layer l: whole KV groups (when the plan cuts KV heads) or the same number of
 * query heads from every group; re-select / refit attn_output over the kept heads. */
static int layer_heads(prune_plan *p, const model *m, int64_t l, gptq_hessian *hs, const prune_recon_opts *o,
                       prune_recon_info *info, slmc_err *err) {
    const int64_t E = p->n_embd_in, H = p->n_head_in, HKV = p->n_head_kv_in, hd = m->cfg.head_dim, Q = H * hd;
    const int64_t group = H / HKV;
    const bool whole_groups = p->n_head_kv != HKV;
    /* units: KV groups of `group` query heads, or single query heads with a quota per group */
    const int64_t b = whole_groups ? group * hd : hd, n_units = whole_groups ? HKV : H;
    const int64_t n_groups = whole_groups ? 1 : HKV;
    const int64_t R = whole_groups ? HKV - p->n_head_kv : H - p->n_head;
    int64_t *heads = p->heads + l * p->n_head, *kvh = p->kv_heads + l * p->n_head_kv;
    int64_t *removed = malloc(sizeof(int64_t) * (size_t)(R > 0 ? R : 1));
    int64_t *kept = malloc(sizeof(int64_t) * (size_t)n_units);
    double *w = NULL;
    if (!removed || !kept) { free(removed); free(kept); return slmc_fail(err, m->path, "out of memory"); }
    if (!o->reselect) {
        const int64_t *k_list = whole_groups ? kvh : heads, n_k = whole_groups ? p->n_head_kv : p->n_head;
        int64_t k = 0, r = 0;
        for (int64_t u = 0; u < n_units; u++) {
            if (k < n_k && k_list[k] == u) k++;
            else removed[r++] = u;
        }
        if (!whole_groups) { /* removal order must respect the per-group quota: any order does */ }
    }
    double before = 0, after = 0;
    symmetrise(hs->h, Q);
    int rc = read_weight(m, l, "attn_output", E, Q, &w, err);
    if (rc == 0 &&
        prune_obs_remove(w, E, hs->h, Q, b, n_groups, R, o->reselect, o->damp, removed, &before, &after, err) != 0)
        rc = slmc_fail_prefix(err, m->path);
    if (rc == 0) {
        int64_t n_kept = kept_units(removed, R, n_units, kept);
        if (whole_groups) {
            for (int64_t i = 0; i < n_kept; i++) {
                kvh[i] = kept[i];
                for (int64_t j = 0; j < group; j++) heads[i * group + j] = kept[i] * group + j;
            }
        } else {
            for (int64_t i = 0; i < n_kept; i++) heads[i] = kept[i];
        }
        if (!(p->attn_output_new[l] = refit_columns(w, E, Q, kept, n_kept, b))) rc = slmc_fail(err, m->path, "out of memory");
        info->att_err_before += before / (double)hs->n_tokens;
        info->att_err_after += after / (double)hs->n_tokens;
    }
    free(w);
    free(removed);
    free(kept);
    return rc;
}

/* ===================================================================== the whole model */

/* Where each layer's matrices go in a chunk's vector; returns its length. */
static size_t grams_layout(grams *g, const prune_plan *p, bool ffn_cut, bool head_cut) {
    size_t len = 0;
    for (int64_t l = g->l0; l < g->l1; l++) {
        g->at_ffn[l - g->l0] = g->at_att[l - g->l0] = NOT_COLLECTED;
        if (!p->keep_layer[l]) continue;
        if (ffn_cut) {
            g->at_ffn[l - g->l0] = len;
            len += gptq_packed_len(g->F);
        }
        if (head_cut) {
            g->at_att[l - g->l0] = len;
            len += gptq_packed_len(g->Q);
        }
    }
    g->at_tok = len;
    return len + 2 * (size_t)(g->l1 - g->l0);
}

/* A layer's matrix from the joined vector, as the layer functions take it. */
static int gram_unpack(gptq_hessian *hs, const double *total, size_t at, size_t at_tok, int64_t n, slmc_err *err) {
    if (gptq_hessian_init(hs, n, err) != 0) return -1;
    gptq_packed_unpack(total + at, n, hs->h);
    hs->n_tokens = llround(total[at_tok]);
    return 0;
}

/* This rank's chunks for one pass, each chunk's matrices added to sum. */
static int pass_chunks(grams *g, llm_context *ctx, float *logits, const int32_t *tokens, int64_t lo, int64_t hi,
                       size_t len, bool ffn_cut, bool head_cut, const prune_recon_opts *o, comm_sum *sum, int *done,
                       int total, slmc_err *err) {
    llm_hooks hooks = {.ud = g, .attn_heads = head_cut ? hook_heads : NULL, .ffn_act = ffn_cut ? hook_ffn : NULL,
                       .layer_out = hook_layer};
    llm_set_hooks(ctx, &hooks);
    int rc = 0;
    for (int64_t ch = lo; ch < hi && rc == 0; ch++) {
        g->stopped = false;
        memset(g->vec, 0, len * sizeof *g->vec);
        const int32_t *chunk = tokens + (size_t)ch * (size_t)o->n_ctx;
        if (ppl_eval_chunk(ctx, chunk, o->n_ctx, o->bos, logits, err) != 0 && !g->stopped) rc = -1;
        if (rc == 0) rc = comm_sum_add(sum, g->vec, err);
        if (o->progress) o->progress(o->progress_ud, ++*done, total);
    }
    llm_set_hooks(ctx, NULL);
    return rc;
}

/* Re-select / refit every kept layer of the pass from the joined matrices. */
static int pass_layers(prune_plan *p, const model *m, const grams *g, const double *total, bool ffn_cut, bool head_cut,
                       const prune_recon_opts *o, prune_recon_info *info, slmc_err *err) {
    int rc = 0;
    for (int64_t l = g->l0; l < g->l1 && rc == 0; l++) {
        if (!p->keep_layer[l]) continue;
        gptq_hessian hs;
        const size_t tok = g->at_tok + 2 * (size_t)(l - g->l0);
        if (ffn_cut && (rc = gram_unpack(&hs, total, g->at_ffn[l - g->l0], tok, g->F, err)) == 0) {
            rc = layer_ffn(p, m, l, &hs, o, info, err);
            gptq_hessian_free(&hs);
        }
        if (head_cut && rc == 0 && (rc = gram_unpack(&hs, total, g->at_att[l - g->l0], tok + 1, g->Q, err)) == 0) {
            rc = layer_heads(p, m, l, &hs, o, info, err);
            gptq_hessian_free(&hs);
        }
    }
    return rc;
}

int prune_reconstruct(prune_plan *p, const model *m, const int32_t *tokens, size_t n_tokens,
                      const prune_recon_opts *o, prune_recon_info *info, slmc_err *err) {
    memset(info, 0, sizeof *info);
    const comm *job = ranks_job(o->comm);
    const int64_t L = p->n_layer_in, F = p->n_ff_in, Q = p->n_head_in * m->cfg.head_dim;
    const bool ffn_cut = p->n_ff != p->n_ff_in, head_cut = p->n_head != p->n_head_in;
    int st = 0;
    if (L != m->cfg.n_layer || F != m->cfg.n_ff || p->n_head_in != m->cfg.n_head)
        st = slmc_fail(err, m->path, "the pruning plan was made for another shape of model");
    if (st == 0 && !ffn_cut && !head_cut) return 0; /* nothing in the projections' inputs is removed (every rank) */
    const int n_chunk = ppl_chunk_count((int64_t)n_tokens, o->n_ctx, o->max_chunks);
    if (st == 0 && n_chunk < 1)
        st = slmc_fail(err, NULL, "the calibration text has %zu tokens, less than one chunk of %d", n_tokens, o->n_ctx);
    if (st == 0 && ((ffn_cut && !p->ffn_down_new && !(p->ffn_down_new = calloc((size_t)L, sizeof(float *)))) ||
                    (head_cut && !p->attn_output_new && !(p->attn_output_new = calloc((size_t)L, sizeof(float *))))))
        st = slmc_fail(err, m->path, "out of memory");
    /* groups of layers whose matrices fit the memory budget, one pass each: a chunk's packed
     * matrices, the tree's partial sums (up to log2(chunks) + 2 vectors, comm.h) and the total */
    int levels = 4;
    for (int k = n_chunk; k > 1; k = (k + 1) / 2) levels++;
    const double per_layer = 8.0 * levels *
                             ((ffn_cut ? (double)gptq_packed_len(F) : 0) + (head_cut ? (double)gptq_packed_len(Q) : 0));
    int64_t per_pass = per_layer > 0 && (double)PRUNE_RECON_MEMORY / per_layer < (double)L
                           ? (int64_t)((double)PRUNE_RECON_MEMORY / per_layer)
                           : L;
    if (per_pass < 1) per_pass = 1;
    int64_t last_kept = -1;
    for (int64_t l = 0; l < L; l++)
        if (p->keep_layer[l]) last_kept = l;
    const int64_t n_pass = (last_kept + 1 + per_pass - 1) / per_pass;
    info->chunks = n_chunk;

    llm_model lm;
    llm_context ctx;
    bool open_lm = false, open_ctx = false;
    float *logits = NULL;
    grams g = {.n_layer = L, .F = F, .Q = Q};
    if (st == 0 && (st = llm_model_init(&lm, m, err)) == 0) open_lm = true;
    if (st == 0 && (st = llm_context_init(&ctx, &lm, o->n_ctx, o->n_ctx, err)) == 0) open_ctx = true;
    if (st == 0) {
        logits = malloc(sizeof(float) * (size_t)ppl_scored(o->n_ctx) * (size_t)lm.cfg.n_vocab);
        g.at_ffn = malloc(sizeof(size_t) * (size_t)per_pass);
        g.at_att = malloc(sizeof(size_t) * (size_t)per_pass);
        if (!logits || !g.at_ffn || !g.at_att) st = slmc_fail(err, m->path, "out of memory");
    }
    int rc = comm_agree(job, st, err);
    /* each pass: this rank's chunks, each chunk's matrices on their own, joined over the chunks
     * in comm_sum's tree (the same matrices for one process and any number of ranks) */
    int64_t lo, hi;
    comm_share(job, n_chunk, job->rank, &lo, &hi);
    int done = 0;
    const int total_chunks = (int)n_pass * (int)(hi - lo);
    for (int64_t l0 = 0; l0 <= last_kept && rc == 0; l0 += per_pass) {
        g.l0 = l0;
        g.l1 = l0 + per_pass < last_kept + 1 ? l0 + per_pass : last_kept + 1;
        const size_t len = grams_layout(&g, p, ffn_cut, head_cut);
        double *total = malloc(len * sizeof *total);
        comm_sum sum;
        g.vec = malloc(len * sizeof *g.vec);
        st = g.vec && total ? 0 : slmc_fail(err, m->path, "out of memory for %zu Gram matrix values", len);
        bool open_sum = false;
        if (st == 0 && (st = comm_sum_init(&sum, job, COMM_F64, len, n_chunk, err)) == 0) open_sum = true;
        if (st == 0) st = pass_chunks(&g, &ctx, logits, tokens, lo, hi, len, ffn_cut, head_cut, o, &sum, &done, total_chunks, err);
        info->passes++;
        if ((rc = comm_agree(job, st, err)) == 0 && (rc = comm_sum_finish(&sum, total, err)) == 0)
            rc = comm_agree(job, pass_layers(p, m, &g, total, ffn_cut, head_cut, o, info, err), err);
        if (open_sum) comm_sum_free(&sum);
        free(g.vec);
        g.vec = NULL;
        free(total);
    }
    free(g.at_ffn);
    free(g.at_att);
    free(logits);
    if (open_ctx) llm_context_free(&ctx);
    if (open_lm) llm_model_free(&lm);
    return rc;
}
