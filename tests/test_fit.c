/* test_fit.c - fit-to-size: the allocation is the exact optimum (brute force on small cases),
 * never exceeds the budget and lands within 1% below it, is monotone in the budget, and on the
 * shared trained model gives a GGUF file of the requested bits per weight. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "codec/types.h"
#include "quant/fit.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "testutil.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand01(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* A synthetic table: n tensors of random sizes, candidate bytes at the k-quants' bits per
 * weight, errors falling about 4x per extra bit with some noise (one dominated candidate). */
static void synthetic_table(fit_table *tab, size_t n) {
    static const double bpw[] = {2.625, 3.4375, 4.5, 5.5, 6.5625, 8.5};
    memset(tab, 0, sizeof *tab);
    tab->t = calloc(n, sizeof *tab->t);
    tab->n = n;
    tab->n_tensors = n + 1;
    tab->base_types = calloc(n + 1, sizeof *tab->base_types);
    tab->fixed_bytes = 4096;
    tab->params = 1024;
    for (size_t k = 0; k < n; k++) {
        fit_tensor *ft = &tab->t[k];
        uint64_t params = 256 * (uint64_t)(64 + urand01() * 4000);
        double sens = 0.1 + urand01() * 10;
        tab->params += params;
        ft->ti = k;
        ft->n_cand = 6;
        for (int j = 0; j < 6; j++) {
            ft->types[j] = GGML_TYPE_Q2_K + j;
            ft->bytes[j] = (uint64_t)(bpw[j] * (double)params / 8);
            ft->err[j] = sens * (double)params * pow(4.0, -bpw[j]) * (0.8 + 0.4 * urand01());
        }
        if (k % 7 == 3) ft->err[3] = ft->err[1] * 1.5; /* a dominated option: never worth its bytes */
    }
}

START_TEST(allocation_is_exact_on_small_cases) {
    for (int trial = 0; trial < 20; trial++) {
        fit_table tab;
        synthetic_table(&tab, 4);
        uint64_t lo = fit_min_bytes(&tab), hi = fit_max_bytes(&tab);
        uint64_t budget = lo + (uint64_t)(urand01() * (double)(hi - lo));
        int choice[4];
        fit_result res;
        slmc_err err = {{0}};
        ck_assert_msg(fit_allocate(&tab, budget, choice, &res, &err) == 0, "%s", err.msg);
        /* brute force over all 6^4 choices */
        double best = INFINITY;
        for (int c = 0; c < 6 * 6 * 6 * 6; c++) {
            uint64_t b = tab.fixed_bytes;
            double e = 0;
            for (int k = 0, cc = c; k < 4; k++, cc /= 6) {
                b += tab.t[k].bytes[cc % 6];
                e += tab.t[k].err[cc % 6];
            }
            if (b <= budget && e < best) best = e;
        }
        ck_assert_uint_le(res.bytes, budget);
        /* exact: these totals are far below 2^18 cells, so a cell is one byte */
        ck_assert_msg(fabs(res.err - best) <= best * 1e-12, "trial %d: %g vs optimum %g", trial, res.err, best);
        fit_table_free(&tab);
    }
}
END_TEST

START_TEST(allocation_hits_budget_and_is_monotone) {
    fit_table tab;
    synthetic_table(&tab, 56);
    uint64_t lo = fit_min_bytes(&tab), hi = fit_max_bytes(&tab);
    int *choice = malloc(tab.n * sizeof *choice);
    double prev_err = INFINITY;
    uint64_t prev_bytes = 0;
    slmc_err err = {{0}};
    for (int s = 0; s <= 40; s++) {
        uint64_t budget = lo + (uint64_t)((double)(hi - lo) * s / 40.0);
        fit_result res;
        ck_assert_msg(fit_allocate(&tab, budget, choice, &res, &err) == 0, "budget %llu: %s", (unsigned long long)budget, err.msg);
        ck_assert_uint_le(res.bytes, budget);
        if (budget >= lo + (hi - lo) / 50) /* away from the floor, where the smallest types are forced */
            ck_assert_msg((double)res.bytes >= 0.99 * (double)budget, "budget %llu, got %llu",
                          (unsigned long long)budget, (unsigned long long)res.bytes);
        ck_assert_msg(res.err <= prev_err, "budget %llu: error %g above the smaller budget's %g", (unsigned long long)budget,
                      res.err, prev_err);
        /* the dominated option is never chosen */
        for (size_t k = 3; k < tab.n; k += 7) ck_assert_int_ne(choice[k], 3);
        prev_err = res.err;
        prev_bytes = res.bytes;
    }
    ck_assert_msg((double)prev_bytes >= 0.999 * (double)hi, "%llu of %llu", (unsigned long long)prev_bytes,
                  (unsigned long long)hi); /* the top of the range reaches (nearly) the largest types */
    fit_result res;
    ck_assert_int_eq(fit_allocate(&tab, lo - 1, choice, &res, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "below the smallest fit"));
    free(choice);
    fit_table_free(&tab);
}
END_TEST

/* books-22m at 4.0 bits per weight: a file gguf_open reads, tensor data within 1% below the target. */
START_TEST(books_target_bpw) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    plan_opts po;
    plan_opts_init(&po, MIX_Q8_0);
    int *base = malloc(m.n_tensors * sizeof *base), *types = malloc(m.n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(&m, &po, base, &err) == 0, "%s", err.msg);
    fit_table tab;
    ck_assert_msg(fit_table_build(&tab, &m, base, NULL, 128, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(tab.n, 6 * 7 + 2); /* every layer matrix, token_embd and output */
    ck_assert_uint_eq(tab.params, model_param_count(&m));
    for (size_t k = 0; k < tab.n; k++) { /* more bits, less error: the estimate is sane */
        const fit_tensor *ft = &tab.t[k];
        double e2 = -1, e4 = -1, e6 = -1, e8 = -1;
        for (int j = 0; j < ft->n_cand; j++) {
            if (ft->types[j] == GGML_TYPE_Q2_K) e2 = ft->err[j];
            if (ft->types[j] == GGML_TYPE_Q4_K) e4 = ft->err[j];
            if (ft->types[j] == GGML_TYPE_Q6_K) e6 = ft->err[j];
            if (ft->types[j] == GGML_TYPE_Q8_0) e8 = ft->err[j];
        }
        ck_assert_msg(e2 > e4 && e4 > e6 && e6 > e8 && e8 > 0, "%s", m.tensors[ft->ti].name);
    }
    const double bpw = 4.0;
    uint64_t target = (uint64_t)(bpw * (double)tab.params / 8);
    int *choice = malloc(tab.n * sizeof *choice);
    fit_result res;
    ck_assert_msg(fit_allocate(&tab, target, choice, &res, &err) == 0, "%s", err.msg);
    ck_assert_uint_le(res.bytes, target);
    ck_assert_msg((double)res.bytes >= 0.99 * (double)target, "%llu of %llu", (unsigned long long)res.bytes,
                  (unsigned long long)target);
    fit_apply(&tab, choice, types);
    ck_assert_uint_eq(quant_plan_bytes(&m, types), res.bytes);
    char *dir = tmpdir_make();
    char path[512];
    snprintf(path, sizeof path, "%s/fit.gguf", dir);
    quant_target tg = {.path = path, .types = types, .file_type = fit_file_type(&m, types)};
    quant_stats st;
    ck_assert_msg(quantize_model(&m, &tg, 1, NULL, &st, NULL, &err) == 0, "%s", err.msg);
    gguf_file g;
    ck_assert_msg(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    uint64_t data = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) data += g.tensors[i].nbytes;
    ck_assert_uint_eq(data, res.bytes);
    double got_bpw = 8.0 * (double)data / (double)tab.params;
    fprintf(stderr, "books-22m fit to %.2f bpw: %.4f bpw, %llu bytes of tensor data\n", bpw, got_bpw,
            (unsigned long long)data);
    ck_assert(got_bpw <= bpw && got_bpw >= 0.99 * bpw);
    gguf_close(&g);
    tmpdir_remove(dir);
    free(choice); free(base); free(types);
    fit_table_free(&tab);
    model_close(&m);
    free(hf);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("fit");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, allocation_is_exact_on_small_cases);
    tcase_add_test(tc, allocation_hits_budget_and_is_monotone);
    tcase_add_test(tc, books_target_bpw);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
