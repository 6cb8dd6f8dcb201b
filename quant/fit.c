/* fit.c - types chosen per tensor to fit a size budget (see fit.h). */
#include "fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec/types.h"
#include "quant/plan.h"
#include "codec/quants.h"

#define DP_CELLS (1u << 18) /* byte cells of the knapsack at the largest possible total */

/* Every type llama.cpp runs on plain matrices, from 1.56 to 8.5 bits per weight (TQ1_0 / TQ2_0 are
 * left out: they only suit models trained ternary). */
static const int CANDIDATES[] = {GGML_TYPE_IQ1_S,   GGML_TYPE_IQ1_M, GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS,
                                 GGML_TYPE_IQ2_S,   GGML_TYPE_Q2_K,  GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S,
                                 GGML_TYPE_Q3_K,    GGML_TYPE_IQ4_XS, GGML_TYPE_IQ4_NL, GGML_TYPE_Q4_0,
                                 GGML_TYPE_Q4_K,    GGML_TYPE_Q5_0,  GGML_TYPE_Q5_K,    GGML_TYPE_Q6_K,
                                 GGML_TYPE_Q8_0};
_Static_assert(sizeof CANDIDATES / sizeof *CANDIDATES <= FIT_MAX_TYPES, "FIT_MAX_TYPES too small");

/* Estimated relative error of a tensor in type ty over its sampled rows (f: [n_rows][ne0] F32
 * values): sum_c imp_c sum_r (w_rc - q_rc)^2 / sum_c imp_c sum_r w_rc^2, the share of the
 * matrix's output energy (over inputs with E[x_c^2] = imp_c) that quantization turns into error.
 * build_tensor counts it once per output unit (row). */
static double type_error(int ty, const float *f, int64_t n_rows, int64_t ne0, const float *imp, double *row_err) {
    const quant_kernels *k = quant_get(ty);
    uint64_t rb = type_nbytes(ty, ne0);
    bool oom = false;
#pragma omp parallel
    {
        uint8_t *q = malloc(rb);
        float *d = malloc((size_t)ne0 * sizeof *d);
        if (!q || !d) {
#pragma omp atomic write
            oom = true;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            if (!q || !d) continue;
            const float *w = f + r * ne0;
            if (imp) k->quantize_weighted(w, q, ne0, imp);
            else k->quantize(w, q, ne0);
            k->dequantize(q, d, ne0);
            double s = 0;
            for (int64_t c = 0; c < ne0; c++) {
                double e = (double)w[c] - d[c];
                s += (imp ? imp[c] : 1.0) * e * e;
            }
            row_err[r] = s;
        }
        free(q);
        free(d);
    }
    if (oom) return NAN;
    double s = 0, energy = 0; /* summed in row order: the same result for any thread count */
    for (int64_t r = 0; r < n_rows; r++) s += row_err[r];
    for (int64_t i = 0; i < n_rows * ne0; i++) energy += (imp ? imp[i % ne0] : 1.0) * (double)f[i] * f[i];
    return energy > 0 ? s / energy : s;
}

/* Candidates of one tensor, their bytes and estimated errors. */
static int build_tensor(fit_tensor *ft, const model *m, uint64_t ti, const float *imp, int sample_rows,
                        slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    int64_t n_s = rows < sample_rows ? rows : sample_rows;
    ft->ti = ti;
    ft->n_cand = 0;
    float *f = malloc((size_t)(n_s * ne0) * sizeof *f);
    double *row_err = malloc((size_t)n_s * sizeof *row_err);
    uint8_t *raw = malloc((size_t)ne0 * 4);
    int rc = -1;
    if (!f || !row_err || !raw) { slmc_fail(err, m->path, "tensor %s: out of memory", t->name); goto done; }
    /* rows spread evenly over the tensor */
    for (int64_t s = 0; s < n_s; s++) {
        int64_t r = (int64_t)((double)s * (double)rows / (double)n_s);
        if (type_is_float(t->type)) {
            if (model_read_rows_f32(m, ti, r, 1, f + s * ne0, err) != 0) goto done;
        } else {
            const quant_kernels *k = quant_get(t->type);
            if (!k) { slmc_fail(err, m->path, "tensor %s: cannot dequantize type %s", t->name, type_name(t->type)); goto done; }
            if (model_read_rows(m, ti, r, 1, raw, err) != 0) goto done;
            k->dequantize(raw, f + s * ne0, ne0);
        }
    }
    for (size_t c = 0; c < sizeof CANDIDATES / sizeof *CANDIDATES; c++) {
        int ty = CANDIDATES[c];
        if (type_nbytes(ty, ne0) == 0 || !quant_get(ty)) continue;
        /* the 1- and 2-bit i-quants only with an importance for this tensor, as llama-quantize */
        if (!imp && plan_needs_imatrix(MIX_Q8_0, t->name, ty)) continue;
        double e = type_error(ty, f, n_s, ne0, imp, row_err);
        if (!isfinite(e)) { slmc_fail(err, m->path, "tensor %s: error estimate for %s failed", t->name, type_name(ty)); goto done; }
        int k = ft->n_cand++;
        ft->types[k] = ty;
        ft->bytes[k] = type_nbytes(ty, ne0 * rows);
        ft->err[k] = e * (double)rows; /* summed over the output units (rows) */
    }
    if (ft->n_cand == 0) {
        slmc_fail(err, m->path, "tensor %s: row length %lld fits no candidate type's block", t->name, (long long)ne0);
        goto done;
    }
    /* sort by bytes (insertion sort; at most FIT_MAX_TYPES), errors break ties */
    for (int i = 1; i < ft->n_cand; i++)
        for (int j = i; j > 0 && (ft->bytes[j] < ft->bytes[j - 1] ||
                                  (ft->bytes[j] == ft->bytes[j - 1] && ft->err[j] < ft->err[j - 1])); j--) {
            int ty = ft->types[j]; ft->types[j] = ft->types[j - 1]; ft->types[j - 1] = ty;
            uint64_t b = ft->bytes[j]; ft->bytes[j] = ft->bytes[j - 1]; ft->bytes[j - 1] = b;
            double e = ft->err[j]; ft->err[j] = ft->err[j - 1]; ft->err[j - 1] = e;
        }
    rc = 0;
done:
    free(f);
    free(row_err);
    free(raw);
    return rc;
}

int fit_table_build(fit_table *tab, const model *m, const int *base_types, const float *const *importance,
                    int sample_rows, slmc_err *err) {
    memset(tab, 0, sizeof *tab);
    if (sample_rows <= 0) sample_rows = FIT_DEFAULT_SAMPLE_ROWS;
    uint64_t nt = m->n_tensors ? m->n_tensors : 1;
    tab->t = calloc(nt, sizeof *tab->t);
    tab->base_types = malloc(nt * sizeof *tab->base_types);
    if (!tab->t || !tab->base_types) { fit_table_free(tab); return slmc_fail(err, m->path, "out of memory"); }
    tab->n_tensors = m->n_tensors;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        uint64_t n = (uint64_t)(t->ne[0] * model_tensor_rows(t));
        tab->base_types[i] = base_types[i];
        tab->params += n;
        const type_info *info = type_get(base_types[i]);
        if (!info || !info->quantized || base_types[i] == t->type) { /* not quantized by the plan: fixed */
            tab->fixed_bytes += type_nbytes(base_types[i], (int64_t)n);
            continue;
        }
        const float *imp = importance ? importance[i] : NULL;
        if (build_tensor(&tab->t[tab->n], m, i, imp, sample_rows, err) != 0) { fit_table_free(tab); return -1; }
        model_release_source(m, &m->tensors[i]); /* the sampled pages: keep RSS flat on big models */
        tab->n++;
    }
    return 0;
}

void fit_table_free(fit_table *tab) {
    free(tab->t);
    free(tab->base_types);
    memset(tab, 0, sizeof *tab);
}

uint64_t fit_min_bytes(const fit_table *tab) {
    uint64_t b = tab->fixed_bytes;
    for (size_t k = 0; k < tab->n; k++) b += tab->t[k].bytes[0];
    return b;
}

uint64_t fit_max_bytes(const fit_table *tab) {
    uint64_t b = tab->fixed_bytes;
    for (size_t k = 0; k < tab->n; k++) b += tab->t[k].bytes[tab->t[k].n_cand - 1];
    return b;
}

int fit_allocate(const fit_table *tab, uint64_t budget, int *choice, fit_result *res, slmc_err *err) {
    uint64_t min = fit_min_bytes(tab), max = fit_max_bytes(tab);
    if (budget < min)
        return slmc_fail(err, NULL, "the budget of %llu bytes is below the smallest fit, %llu bytes (every tensor at its smallest type)",
                         (unsigned long long)budget, (unsigned long long)min);
    if (budget > max) budget = max;
    /* The knapsack counts each candidate's bytes above the tensor's smallest one, in cells (rounded
     * up, so a choice that fits in cells fits in bytes; the all-smallest choice always fits). The
     * cell comes from the largest total, not the budget: the same rounding for every budget. */
    uint64_t unit = (max - min + DP_CELLS - 1) / DP_CELLS;
    if (unit == 0) unit = 1;
    size_t cap = (size_t)((budget - min) / unit); /* capacity in cells, rounded down */
    size_t n = tab->n, width = cap + 1;
    double *dp = malloc(width * sizeof *dp), *next = malloc(width * sizeof *next);
    uint8_t *pick = malloc((n ? n : 1) * width);
    if (!dp || !next || !pick) {
        free(dp); free(next); free(pick);
        return slmc_fail(err, NULL, "out of memory for the size fit (%zu tensors x %zu cells)", n, width);
    }
    /* dp[c]: least error of the tensors so far within c cells (INFINITY: they do not fit) */
    for (size_t c = 0; c < width; c++) dp[c] = 0;
    for (size_t k = 0; k < n; k++) {
        const fit_tensor *ft = &tab->t[k];
        uint64_t cells[FIT_MAX_TYPES];
        for (int j = 0; j < ft->n_cand; j++) cells[j] = (ft->bytes[j] - ft->bytes[0] + unit - 1) / unit;
        uint8_t *pk = pick + k * width;
        for (size_t c = 0; c < width; c++) {
            double best = INFINITY;
            int bj = 0;
            for (int j = 0; j < ft->n_cand; j++) { /* ascending bytes: ties keep the smaller type */
                if (cells[j] > c) break;
                double e = dp[c - cells[j]] + ft->err[j];
                if (e < best) { best = e; bj = j; }
            }
            next[c] = best;
            pk[c] = (uint8_t)bj;
        }
        double *tmp = dp; dp = next; next = tmp;
    }
    {
        size_t c = cap; /* dp[cap] is finite: the smallest types cost no cells */
        res->err = 0;
        res->bytes = tab->fixed_bytes;
        for (size_t k = n; k-- > 0;) {
            const fit_tensor *ft = &tab->t[k];
            int j = pick[k * width + c];
            choice[k] = j;
            c -= (size_t)((ft->bytes[j] - ft->bytes[0] + unit - 1) / unit);
            res->err += ft->err[j];
            res->bytes += ft->bytes[j];
        }
        res->bpw = tab->params ? 8.0 * (double)res->bytes / (double)tab->params : 0;
    }
    free(dp); free(next); free(pick);
    return 0;
}

void fit_apply(const fit_table *tab, const int *choice, int *types) {
    for (uint64_t i = 0; i < tab->n_tensors; i++) types[i] = tab->base_types[i];
    for (size_t k = 0; k < tab->n; k++) types[tab->t[k].ti] = tab->t[k].types[choice[k]];
}

int64_t fit_file_type(const model *m, const int *types) {
    uint64_t by_type[GGML_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const type_info *info = type_get(types[i]);
        if (info && info->quantized)
            by_type[types[i]] += type_nbytes(types[i], m->tensors[i].ne[0] * model_tensor_rows(&m->tensors[i]));
    }
    int best = -1;
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (by_type[t] && (best < 0 || by_type[t] > by_type[best])) best = t;
    switch (best) {
    case GGML_TYPE_Q2_K: return MIX_Q2_K;
    case GGML_TYPE_Q3_K: return MIX_Q3_K_M;
    case GGML_TYPE_Q4_0: return MIX_Q4_0;
    case GGML_TYPE_IQ1_S: return MIX_IQ1_S;
    case GGML_TYPE_IQ1_M: return MIX_IQ1_M;
    case GGML_TYPE_IQ2_XXS: return MIX_IQ2_XXS;
    case GGML_TYPE_IQ2_XS: return MIX_IQ2_XS;
    case GGML_TYPE_IQ2_S: return MIX_IQ2_M; /* llama.cpp's IQ2_M mix is built on ggml's IQ2_S */
    case GGML_TYPE_IQ3_XXS: return MIX_IQ3_XXS;
    case GGML_TYPE_IQ3_S: return MIX_IQ3_S;
    case GGML_TYPE_IQ4_XS: return MIX_IQ4_XS;
    case GGML_TYPE_IQ4_NL: return MIX_IQ4_NL;
    case GGML_TYPE_Q4_K: return MIX_Q4_K_M;
    case GGML_TYPE_Q5_0: return MIX_Q5_0;
    case GGML_TYPE_Q5_K: return MIX_Q5_K_M;
    case GGML_TYPE_Q6_K: return MIX_Q6_K;
    case GGML_TYPE_Q8_0: return MIX_Q8_0;
    default: return -1;
    }
}
