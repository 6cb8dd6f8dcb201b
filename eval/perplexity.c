/* perplexity.c - llama-perplexity's method (see perplexity.h). */
#include "perplexity.h"

#include "codec/dots.h"
#include "eval/attn_avx2.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===================================================================== perplexity */

int ppl_chunk_count(int64_t n_tokens, int n_ctx, int max_chunks) {
    if (n_ctx <= 0 || n_tokens <= 0) return 0;
    const int64_t n = n_tokens / n_ctx;
    return (int)(max_chunks >= 0 && max_chunks < n ? max_chunks : n);
}

int ppl_first(int n_ctx) { return n_ctx / 2; }
int ppl_scored(int n_ctx) { return n_ctx - 1 - n_ctx / 2; }

int ppl_eval_chunk(llm_context *ctx, const int32_t *chunk, int n_ctx, int32_t bos, float *logits, slmc_err *err) {
    if (n_ctx < 2 || n_ctx > ctx->n_ctx)
        return slmc_fail(err, NULL, "perplexity chunk of %d tokens does not fit a context of %d", n_ctx, ctx->n_ctx);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_ctx);
    if (!tok) return slmc_fail(err, NULL, "out of memory for a chunk of %d tokens", n_ctx);
    memcpy(tok, chunk, sizeof(int32_t) * (size_t)n_ctx);
    if (bos >= 0) tok[0] = bos; /* llama-perplexity starts every chunk with BOS */
    /* every token runs, as llama-perplexity runs them (and hooks see them all); the scored
     * positions first..n_ctx-2 write their logits straight into the caller's rows (the last
     * position's are not wanted: for a 128K vocabulary, no 64 MB block per chunk) */
    const int first = ppl_first(n_ctx);
    const int rc = llm_eval_rows(ctx, tok, n_ctx, 0, first, first + ppl_scored(n_ctx), logits, err);
    free(tok);
    return rc;
}

/* The reference: max, then the exps summed in double in index order. */
double ppl_nll_ref(const float *logits, int64_t n_vocab, int32_t tok) {
    float max = logits[0];
    for (int64_t i = 1; i < n_vocab; ++i) max = fmaxf(max, logits[i]);
    double sum_exp = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum_exp += expf(logits[i] - max);
    return -((double)(logits[tok] - max) - log(sum_exp));
}

/* The same numbers: the max and the exps 8 at a time (the vector exp equals expf here, checked
 * once), the double sum still in index order, a block of exps at a time. */
static double ppl_nll_avx2(const float *logits, int64_t n_vocab, int32_t tok) {
    enum { BLOCK = 1024 };
    float e[BLOCK];
    const float max = attn_max_avx2(logits, n_vocab);
    double sum_exp = 0;
    for (int64_t i0 = 0; i0 < n_vocab; i0 += BLOCK) {
        const int64_t nb = n_vocab - i0 < BLOCK ? n_vocab - i0 : BLOCK;
        attn_sub_exp_avx2(logits + i0, max, e, nb);
        for (int64_t i = 0; i < nb; ++i) sum_exp += e[i];
    }
    return -((double)(logits[tok] - max) - log(sum_exp));
}

double ppl_nll(const float *logits, int64_t n_vocab, int32_t tok) {
    if (n_vocab >= 1 && kern_cpu_has_avx2() && attn_fast_exp_ok()) return ppl_nll_avx2(logits, n_vocab, tok);
    return ppl_nll_ref(logits, n_vocab, tok);
}

void ppl_chunk_nll(const float *logits, int64_t n_vocab, const int32_t *chunk, int n_ctx, double *v) {
    const int first = ppl_first(n_ctx), n = ppl_scored(n_ctx);
    /* rows in parallel, summed in order afterwards so the result never depends on threads */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) v[i] = ppl_nll(logits + (size_t)i * (size_t)n_vocab, n_vocab, chunk[first + i + 1]);
}

void ppl_add_nll(ppl_stats *s, const double *v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double x = v[i];
        s->nll += x;
        s->nll2 += x * x;
        s->count++;
    }
}

void ppl_accumulate(ppl_stats *s, const float *logits, int64_t n_vocab, const int32_t *chunk, int n_ctx) {
    const int first = ppl_first(n_ctx), n = ppl_scored(n_ctx);
    double *v = malloc(sizeof(double) * (size_t)n);
    if (v) {
        ppl_chunk_nll(logits, n_vocab, chunk, n_ctx, v);
        ppl_add_nll(s, v, n);
        free(v);
        return;
    }
    for (int i = 0; i < n; ++i) { /* out of memory for the row values: the same sums, serially */
        const double x = ppl_nll(logits + (size_t)i * (size_t)n_vocab, n_vocab, chunk[first + i + 1]);
        ppl_add_nll(s, &x, 1);
    }
}

double ppl_value(const ppl_stats *s) { return s->count ? exp(s->nll / (double)s->count) : 0; }

double ppl_stderr(const ppl_stats *s) {
    if (s->count < 2) return 0;
    const double mean = s->nll / (double)s->count;
    const double var = s->nll2 / (double)s->count - mean * mean;
    return var > 0 ? sqrt(var / (double)(s->count - 1)) * exp(mean) : 0;
}

/* ===================================================================== KL divergence */

size_t kld_row_u16(int64_t n_vocab) { return (size_t)(2 * ((n_vocab + 1) / 2) + 4); }

/* llama.cpp's nearest_int: round to nearest through the float mantissa trick (ties to even). */
static inline int nearest_int(float f) { return (int)lrintf(f); }

double kld_pack_logprobs(const float *logits, int64_t n_vocab, int32_t tok, uint16_t *out) {
    float max = logits[0], min = logits[0];
    for (int64_t i = 1; i < n_vocab; ++i) {
        max = fmaxf(max, logits[i]);
        min = fminf(min, logits[i]);
    }
    min = fmaxf(min, max - 16); /* log-probs more than 16 below the top are clamped */
    double sum_exp = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum_exp += expf(logits[i] - max);
    const float log_sum_exp = (float)log(sum_exp);
    const float min_log_prob = min - max - log_sum_exp;
    const float scale = (max - min) / 65535.f;
    memcpy(out, &scale, 4);
    memcpy(out + 2, &min_log_prob, 4);
    uint16_t *q = out + 4;
    if (scale != 0) {
        const float inv = 1 / scale;
        for (int64_t i = 0; i < n_vocab; ++i) q[i] = logits[i] > min ? (uint16_t)nearest_int(inv * (logits[i] - min)) : 0;
    } else {
        memset(q, 0, sizeof(uint16_t) * (size_t)n_vocab);
    }
    if (kld_row_u16(n_vocab) > (size_t)n_vocab + 4) q[n_vocab] = 0; /* padding slot of an odd vocabulary */
    return (double)max + log_sum_exp - logits[tok];
}

/* What one row contributes (llama.cpp's log_softmax with base log-probs). */
static kld_row kld_one(const float *logits, int64_t n_vocab, const uint16_t *base, int32_t tok) {
    kld_row r;
    float max = logits[0];
    int64_t imax = 0;
    for (int64_t i = 1; i < n_vocab; ++i)
        if (logits[i] > max) { max = logits[i]; imax = i; }
    double sum_exp = 0;
    for (int64_t i = 0; i < n_vocab; ++i) sum_exp += expf(logits[i] - max);
    const float log_sum_exp = (float)log(sum_exp);
    float scale, min_log_prob;
    memcpy(&scale, base, 4);
    memcpy(&min_log_prob, base + 2, 4);
    const uint16_t *bq = base + 4;
    r.nll = max + log_sum_exp - logits[tok];
    r.nll_base = -(scale * bq[tok] + min_log_prob);
    const float max_plus = max + log_sum_exp;
    double sum = 0;
    int64_t imax_base = -1;
    float p_log_base_max = 0;
    for (int64_t i = 0; i < n_vocab; ++i) {
        const float p_log_base = scale * bq[i] + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if (p_log_base > -16.f) { /* KL(base || Q) = sum p_base (log p_base - log p_Q) */
            const float p_base = expf(p_log_base);
            sum += p_base * (p_log_base - logits[i] + max_plus);
        }
    }
    r.kld = sum;
    r.same_top = imax == imax_base;
    r.p_diff = expf(-r.nll) - expf(-r.nll_base);
    return r;
}

void kld_rows(const float *logits, const uint16_t *base, int n_rows, int64_t n_vocab, const int32_t *next,
              kld_row *rows) {
    const size_t nv = kld_row_u16(n_vocab);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_rows; ++i)
        rows[i] = kld_one(logits + (size_t)i * (size_t)n_vocab, n_vocab, base + (size_t)i * nv, next[i]);
}

int kld_add_rows(kld_stats *s, const kld_row *rows, int64_t n_rows, slmc_err *err) {
    if (s->count + n_rows > (int64_t)s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while ((int64_t)cap < s->count + n_rows) cap *= 2;
        float *k = realloc(s->kld_values, cap * sizeof(float));
        if (k) s->kld_values = k;
        float *p = k ? realloc(s->p_diff_values, cap * sizeof(float)) : NULL;
        if (!k || !p) return slmc_fail(err, NULL, "out of memory for %zu KL-divergence values", cap);
        s->p_diff_values = p;
        s->cap = cap;
    }
    for (int64_t i = 0; i < n_rows; ++i) { /* in order, in llama.cpp's precisions */
        const kld_row *r = &rows[i];
        s->sum_nll += r->nll;
        s->sum_nll2 += r->nll * r->nll;
        s->sum_nll_base += r->nll_base;
        s->sum_nll_base2 += r->nll_base * r->nll_base;
        s->sum_nll_nll_base += r->nll * r->nll_base;
        s->sum_kld += r->kld;
        s->sum_kld2 += r->kld * r->kld;
        s->sum_p_diff += r->p_diff;
        const double p2 = r->p_diff * r->p_diff;
        s->sum_p_diff2 += p2;
        s->sum_p_diff4 += p2 * p2;
        s->max_p_diff = fmaxf(s->max_p_diff, fabsf(r->p_diff));
        s->n_same_top += r->same_top;
        s->kld_values[s->count] = (float)r->kld;
        s->p_diff_values[s->count] = r->p_diff;
        s->count++;
    }
    return 0;
}

int kld_accumulate(kld_stats *s, const float *logits, const uint16_t *base, int n_rows, int64_t n_vocab,
                   const int32_t *next, slmc_err *err) {
    kld_row *rows = malloc(sizeof(kld_row) * (size_t)(n_rows > 0 ? n_rows : 1));
    if (!rows) return slmc_fail(err, NULL, "out of memory");
    kld_rows(logits, base, n_rows, n_vocab, next, rows);
    const int rc = kld_add_rows(s, rows, n_rows, err);
    free(rows);
    return rc;
}

int kld_compare_rows(const float *logits, const float *base_logits, int n_rows, int64_t n_vocab, const int32_t *next,
                     kld_row *rows, slmc_err *err) {
    const size_t nv = kld_row_u16(n_vocab);
    uint16_t *base = malloc(sizeof(uint16_t) * nv * (size_t)(n_rows > 0 ? n_rows : 1));
    if (!base) return slmc_fail(err, NULL, "out of memory for %d compressed rows", n_rows);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_rows; ++i)
        kld_pack_logprobs(base_logits + (size_t)i * (size_t)n_vocab, n_vocab, next[i], base + (size_t)i * nv);
    kld_rows(logits, base, n_rows, n_vocab, next, rows);
    free(base);
    return 0;
}

int kld_compare(kld_stats *s, const float *logits, const float *base_logits, int n_rows, int64_t n_vocab,
                const int32_t *next, slmc_err *err) {
    kld_row *rows = malloc(sizeof(kld_row) * (size_t)(n_rows > 0 ? n_rows : 1));
    if (!rows) return slmc_fail(err, NULL, "out of memory");
    int rc = kld_compare_rows(logits, base_logits, n_rows, n_vocab, next, rows, err);
    if (rc == 0) rc = kld_add_rows(s, rows, n_rows, err);
    free(rows);
    return rc;
}

void kld_stats_free(kld_stats *s) {
    free(s->kld_values);
    free(s->p_diff_values);
    memset(s, 0, sizeof *s);
}

/* mean and its uncertainty, as llama.cpp's mean_and_uncertainty */
static void mean_unc(double sum, double sum2, int64_t count, double *mean, double *unc) {
    if (count < 1) { *mean = *unc = 0; return; }
    const double f = sum / (double)count;
    double df = sum2 / (double)count - f * f;
    df = df > 0 && count > 10 ? sqrt(df / (double)(count - 1)) : 0.;
    *mean = f;
    *unc = df;
}

static double covariance(double suma, double sumb, double sumab, int64_t count) {
    if (count < 10) return 0.0;
    double var = sumab / (double)count - (suma / (double)count) * (sumb / (double)count);
    return var / (double)(count - 1);
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* llama.cpp's percentile: linear interpolation between sorted neighbours (float arithmetic). */
static float percentile(const float *v, size_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    const size_t ip = (size_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

static float median(const float *v, size_t n) { return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2]; }

int kld_summarize(const kld_stats *s, kld_summary *k, slmc_err *err) {
    memset(k, 0, sizeof *k);
    if (s->count < 2) return slmc_fail(err, NULL, "KL divergence needs at least 2 scored tokens, have %lld", (long long)s->count);
    const size_t n = (size_t)s->count;
    float *kv = malloc(n * sizeof(float)), *pv = malloc(n * sizeof(float));
    if (!kv || !pv) {
        free(kv); free(pv);
        return slmc_fail(err, NULL, "out of memory");
    }
    memcpy(kv, s->kld_values, n * sizeof(float));
    memcpy(pv, s->p_diff_values, n * sizeof(float));
    qsort(kv, n, sizeof(float), cmp_float);
    qsort(pv, n, sizeof(float), cmp_float);
    k->count = s->count;

    double lp, lp_unc, lpb, lpb_unc;
    mean_unc(s->sum_nll, s->sum_nll2, s->count, &lp, &lp_unc);
    mean_unc(s->sum_nll_base, s->sum_nll_base2, s->count, &lpb, &lpb_unc);
    k->ppl = exp(lp);
    k->ppl_unc = k->ppl * lp_unc;
    k->ppl_base = exp(lpb);
    k->ppl_base_unc = k->ppl_base * lpb_unc;
    const double cov = covariance(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, s->count);
    k->log_ppl_cor = lp_unc > 0 && lpb_unc > 0 ? cov / (lp_unc * lpb_unc) : 0;
    k->log_ppl_ratio = lp - lpb;
    const double r2 = lp_unc * lp_unc + lpb_unc * lpb_unc - 2.0 * cov;
    k->log_ppl_ratio_unc = r2 > 0 ? sqrt(r2) : 0;
    k->ppl_ratio = exp(k->log_ppl_ratio);
    k->ppl_ratio_unc = k->ppl_ratio * k->log_ppl_ratio_unc;
    const double ppl_cov = k->ppl * k->ppl_base * cov;
    k->ppl_diff = k->ppl - k->ppl_base;
    const double d2 = k->ppl_unc * k->ppl_unc + k->ppl_base_unc * k->ppl_base_unc - 2.0 * ppl_cov;
    k->ppl_diff_unc = d2 > 0 ? sqrt(d2) : 0;

    mean_unc(s->sum_kld, s->sum_kld2, s->count, &k->kld_mean, &k->kld_unc);
    const float kf[11] = {1.f, 0.999f, 0.990f, 0.950f, 0.900f, -1, 0.100f, 0.050f, 0.010f, 0.001f, 0.f};
    for (int i = 0; i < 11; ++i) k->kld_pct[i] = kf[i] < 0 ? median(kv, n) : percentile(kv, n, kf[i]);

    mean_unc(s->sum_p_diff, s->sum_p_diff2, s->count, &k->p_diff_mean, &k->p_diff_unc);
    const float pf[13] = {1.f, 0.999f, 0.990f, 0.950f, 0.900f, 0.750f, -1, 0.250f, 0.100f, 0.050f, 0.010f, 0.001f, 0.f};
    for (int i = 0; i < 13; ++i) k->p_diff_pct[i] = pf[i] < 0 ? median(pv, n) : percentile(pv, n, pf[i]);

    double mse, mse_unc;
    mean_unc(s->sum_p_diff2, s->sum_p_diff4, s->count, &mse, &mse_unc);
    k->p_diff_rms = sqrt(mse);
    k->p_diff_rms_unc = k->p_diff_rms > 0 ? 0.5 / k->p_diff_rms * mse_unc : 0;
    k->same_top = (double)s->n_same_top / (double)s->count;
    k->same_top_unc = sqrt(k->same_top * (1.0 - k->same_top) / (double)(s->count - 1));
    free(kv);
    free(pv);
    return 0;
}

/* Append to buf at *len; -1 once it no longer fits. */
__attribute__((format(printf, 4, 5))) static int put(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int w = vsnprintf(buf + *len, cap > *len ? cap - *len : 0, fmt, ap);
    va_end(ap);
    if (w < 0 || *len + (size_t)w >= cap) return -1;
    *len += (size_t)w;
    return 0;
}

int kld_report(const kld_summary *k, char *buf, size_t cap) {
    size_t len = 0;
    int bad = 0;
    static const char *kname[11] = {"Maximum KLD", "99.9%   KLD", "99.0%   KLD", "95.0%   KLD", "90.0%   KLD",
                                    "Median  KLD", "10.0%   KLD", " 5.0%   KLD", " 1.0%   KLD", " 0.1%   KLD",
                                    "Minimum KLD"};
    static const char *pname[13] = {"Maximum Δp", "99.9%   Δp", "99.0%   Δp", "95.0%   Δp", "90.0%   Δp",
                                    "75.0%   Δp", "Median  Δp", "25.0%   Δp", "10.0%   Δp", " 5.0%   Δp",
                                    " 1.0%   Δp", " 0.1%   Δp", "Minimum Δp"};
    bad |= put(buf, cap, &len, "====== Perplexity statistics ======\n");
    bad |= put(buf, cap, &len, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", k->ppl, k->ppl_unc);
    bad |= put(buf, cap, &len, "Mean PPL(base)                : %10.6f ± %10.6f\n", k->ppl_base, k->ppl_base_unc);
    bad |= put(buf, cap, &len, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * k->log_ppl_cor);
    bad |= put(buf, cap, &len, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", k->log_ppl_ratio, k->log_ppl_ratio_unc);
    bad |= put(buf, cap, &len, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", k->ppl_ratio, k->ppl_ratio_unc);
    bad |= put(buf, cap, &len, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", k->ppl_diff, k->ppl_diff_unc);
    bad |= put(buf, cap, &len, "\n====== KL divergence statistics ======\n");
    bad |= put(buf, cap, &len, "Mean    KLD: %10.6f ± %10.6f\n", k->kld_mean, k->kld_unc);
    for (int i = 0; i < 11; ++i) bad |= put(buf, cap, &len, "%s: %10.6f\n", kname[i], k->kld_pct[i]);
    bad |= put(buf, cap, &len, "\n====== Token probability statistics ======\n");
    bad |= put(buf, cap, &len, "Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * k->p_diff_mean, 100.0 * k->p_diff_unc);
    for (int i = 0; i < 13; ++i) bad |= put(buf, cap, &len, "%s: %6.3f%%\n", pname[i], 100.0 * k->p_diff_pct[i]);
    bad |= put(buf, cap, &len, "RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * k->p_diff_rms, 100.0 * k->p_diff_rms_unc);
    bad |= put(buf, cap, &len, "Same top p: %6.3f ± %5.3f %%\n", 100.0 * k->same_top, 100.0 * k->same_top_unc);
    return bad ? -1 : (int)len;
}
