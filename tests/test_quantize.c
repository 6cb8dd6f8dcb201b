/* test_quantize.c - the streaming quantizer end to end: the shared trained model quantized
 * with llama.cpp's mixes gives llama.cpp's own files tensor for tensor, output bytes do not
 * depend on the thread count, several targets from one read equal separate runs, and bad
 * values are caught with the tensor named. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "codec/types.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "testutil.h"

/* Quantize m to `mix` at path. */
static void quantize_to(const model *m, int mix, const char *path) {
    plan_opts po;
    plan_opts_init(&po, mix);
    int *types = malloc(m->n_tensors * sizeof *types);
    slmc_err err = {{0}};
    ck_assert_msg(quant_plan(m, &po, types, &err) == 0, "%s", err.msg);
    quant_target tg = {.path = path, .types = types, .file_type = mix};
    quant_stats st;
    ck_assert_msg(quantize_model(m, &tg, 1, NULL, &st, NULL, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(st.params, model_param_count(m));
    free(types);
}

/* Every tensor of `ours` has the same type and bytes as the same-named tensor of `ref`. */
static void assert_same_file_tensors(const char *ours_path, const char *ref_path) {
    gguf_file a, b;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&a, ours_path, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&b, ref_path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.n_tensors, b.n_tensors);
    for (uint64_t i = 0; i < b.n_tensors; i++) {
        int64_t j = gguf_find_tensor(&a, b.tensors[i].name);
        ck_assert_msg(j >= 0, "%s missing", b.tensors[i].name);
        ck_assert_msg(a.tensors[j].type == b.tensors[i].type, "%s: %s vs llama.cpp's %s", b.tensors[i].name,
                      type_name(a.tensors[j].type), type_name(b.tensors[i].type));
        ck_assert_uint_eq(a.tensors[j].nbytes, b.tensors[i].nbytes);
        ck_assert_msg(memcmp(gguf_tensor_data(&a, (uint64_t)j), gguf_tensor_data(&b, i), b.tensors[i].nbytes) == 0,
                      "%s: bytes differ from llama.cpp's", b.tensors[i].name);
    }
    uint64_t ft = 0;
    ck_assert(meta_get_u64(&a.kv, "general.file_type", &ft));
    uint64_t ref_ft = 0;
    ck_assert(meta_get_u64(&b.kv, "general.file_type", &ref_ft));
    ck_assert_uint_eq(ft, ref_ft);
    gguf_close(&a);
    gguf_close(&b);
}

START_TEST(books_mixes_equal_llama_quantize) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *q4 = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *q2 = SHARED_OR_SKIP("reference/books-22m-Q2_K.gguf");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    char p4[512], p2[512];
    snprintf(p4, sizeof p4, "%s/q4km.gguf", dir);
    snprintf(p2, sizeof p2, "%s/q2k.gguf", dir);
    quantize_to(&m, MIX_Q4_K_M, p4);
    quantize_to(&m, MIX_Q2_K, p2);
    assert_same_file_tensors(p4, q4);
    assert_same_file_tensors(p2, q2);
    model_close(&m);
    tmpdir_remove(dir);
    free(hf); free(q4); free(q2);
}
END_TEST

START_TEST(threads_and_multi_target_give_identical_bytes) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    char a[512], b[512], c1[512], c2[512];
    snprintf(a, sizeof a, "%s/t1.gguf", dir);
    snprintf(b, sizeof b, "%s/t2.gguf", dir);
    omp_set_num_threads(1);
    quantize_to(&m, MIX_Q3_K_M, a);
    omp_set_num_threads(2);
    quantize_to(&m, MIX_Q3_K_M, b);
    size_t la, lb;
    uint8_t *da = slurp(a, &la), *db = slurp(b, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert(memcmp(da, db, la) == 0);
    /* two targets from one read = the separate runs */
    snprintf(c1, sizeof c1, "%s/m1.gguf", dir);
    snprintf(c2, sizeof c2, "%s/m2.gguf", dir);
    plan_opts p1, p2;
    plan_opts_init(&p1, MIX_Q3_K_M);
    plan_opts_init(&p2, MIX_Q8_0);
    int *t1 = malloc(m.n_tensors * sizeof *t1), *t2 = malloc(m.n_tensors * sizeof *t2);
    ck_assert(quant_plan(&m, &p1, t1, &err) == 0 && quant_plan(&m, &p2, t2, &err) == 0);
    quant_target tg[2] = {{.path = c1, .types = t1, .file_type = MIX_Q3_K_M}, {.path = c2, .types = t2, .file_type = MIX_Q8_0}};
    ck_assert_msg(quantize_model(&m, tg, 2, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    size_t lc;
    uint8_t *dc = slurp(c1, &lc);
    ck_assert_uint_eq(lc, la);
    ck_assert(memcmp(dc, da, la) == 0);
    free(da); free(db); free(dc); free(t1); free(t2);
    model_close(&m);
    tmpdir_remove(dir);
    free(hf);
}
END_TEST

/* A model made in memory: one F32 matrix whose values we control. */
typedef struct toy { model m; float *w; } toy;

static void toy_init(toy *t, int64_t cols, int64_t rows) {
    memset(t, 0, sizeof *t);
    meta_init(&t->m.kv);
    t->m.path = strdup("toy.gguf");
    t->w = malloc((size_t)(cols * rows) * sizeof(float));
    for (int64_t i = 0; i < cols * rows; i++) t->w[i] = sinf((float)i * 0.37f);
    t->m.tensors = calloc(1, sizeof *t->m.tensors);
    t->m.n_tensors = 1;
    model_tensor *x = &t->m.tensors[0];
    x->name = strdup("blk.0.ffn_up.weight");
    x->type = GGML_TYPE_F32;
    x->n_dims = 2;
    x->ne[0] = cols; x->ne[1] = rows; x->ne[2] = x->ne[3] = 1;
    x->nbytes = (uint64_t)(cols * rows) * 4;
    x->data = (const uint8_t *)t->w;
}

static void toy_free(toy *t) {
    free(t->m.tensors[0].name);
    free(t->m.tensors);
    free(t->m.path);
    meta_free(&t->m.kv);
    free(t->w);
}

START_TEST(nan_input_is_reported_with_the_tensor_and_no_file) {
    toy t;
    toy_init(&t, 256, 4);
    t.w[300] = NAN;
    char *dir = tmpdir_make();
    char p[512];
    snprintf(p, sizeof p, "%s/bad.gguf", dir);
    int types[1] = {GGML_TYPE_Q4_K};
    quant_target tg = {.path = p, .types = types, .file_type = MIX_Q4_K_M};
    slmc_err err = {{0}};
    ck_assert_int_ne(quantize_model(&t.m, &tg, 1, NULL, NULL, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.0.ffn_up.weight"));
    ck_assert_ptr_nonnull(strstr(err.msg, "row 1"));
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_null(f);
    /* a row length that is no multiple of the block: refused before writing */
    types[0] = GGML_TYPE_Q4_K;
    t.m.tensors[0].ne[0] = 128; t.m.tensors[0].ne[1] = 8;
    t.w[300] = 0;
    ck_assert_int_ne(quantize_model(&t.m, &tg, 1, NULL, NULL, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "multiple"));
    tmpdir_remove(dir);
    toy_free(&t);
}
END_TEST

START_TEST(requantize_needs_permission) {
    char *q4 = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, q4, NULL, &err) == 0, "%s", err.msg);
    plan_opts po;
    plan_opts_init(&po, MIX_Q8_0);
    int *types = malloc(m.n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(&m, &po, types, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    char p[512];
    snprintf(p, sizeof p, "%s/rq.gguf", dir);
    quant_target tg = {.path = p, .types = types, .file_type = MIX_Q8_0};
    ck_assert_int_ne(quantize_model(&m, &tg, 1, NULL, NULL, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "--allow-requantize"));
    quantize_opts o = {.allow_requantize = true};
    ck_assert_msg(quantize_model(&m, &tg, 1, &o, NULL, NULL, &err) == 0, "%s", err.msg);
    gguf_file g;
    ck_assert_msg(gguf_open(&g, p, &err) == 0, "%s", err.msg);
    int64_t i = gguf_find_tensor(&g, "blk.0.ffn_up.weight");
    ck_assert(i >= 0);
    ck_assert_int_eq(g.tensors[i].type, GGML_TYPE_Q8_0);
    gguf_close(&g);
    free(types);
    model_close(&m);
    tmpdir_remove(dir);
    free(q4);
}
END_TEST

static Suite *quantize_suite(void) {
    Suite *s = suite_create("quantize");
    TCase *tc = tcase_create("quantize");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, books_mixes_equal_llama_quantize);
    tcase_add_test(tc, threads_and_multi_target_give_identical_bytes);
    tcase_add_test(tc, nan_input_is_reported_with_the_tensor_and_no_file);
    tcase_add_test(tc, requantize_needs_permission);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(quantize_suite()); }
