/* test_model.c - the model view: Q/K permutation, row reads, output types, and the GGUF
 * written from each input format compared with llama.cpp's own conversions in ../shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "formats/types.h"
#include "testutil.h"

START_TEST(qk_permutation_is_a_bijection_and_inverse) {
    for (int64_t heads = 1; heads <= 8; heads *= 2) {
        for (int64_t hd = 2; hd <= 16; hd += 2) {
            int64_t rows = heads * hd;
            char *seen = calloc((size_t)rows, 1);
            for (int64_t r = 0; r < rows; r++) {
                int64_t h = qk_row_hf_of_gguf(r, rows, heads);
                ck_assert_int_ge(h, 0);
                ck_assert_int_lt(h, rows);
                ck_assert_int_eq(seen[h], 0);
                seen[h] = 1;
                ck_assert_int_eq(qk_row_gguf_of_hf(h, rows, heads), r);
            }
            free(seen);
        }
    }
    /* one head of 8 rows: HF halves [0 1 2 3 | 4 5 6 7] become interleaved pairs */
    int64_t want[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int r = 0; r < 8; r++) ck_assert_int_eq(qk_row_hf_of_gguf(r, 8, 1), want[r]);
}
END_TEST

START_TEST(out_type_rules) {
    model_tensor norm = {.name = "blk.0.attn_norm.weight", .type = GGML_TYPE_BF16, .n_dims = 1, .ne = {64, 1, 1, 1}};
    model_tensor mat = {.name = "blk.0.attn_q.weight", .type = GGML_TYPE_BF16, .n_dims = 2, .ne = {64, 64, 1, 1}};
    model_tensor q = {.name = "blk.0.attn_q.weight", .type = GGML_TYPE_Q4_K, .n_dims = 2, .ne = {256, 4, 1, 1}};
    ck_assert_int_eq(model_out_type(&norm, -1), GGML_TYPE_F32); /* llama.cpp keeps 1-D in F32 */
    ck_assert_int_eq(model_out_type(&norm, GGML_TYPE_F16), GGML_TYPE_F32);
    ck_assert_int_eq(model_out_type(&mat, -1), GGML_TYPE_BF16);
    ck_assert_int_eq(model_out_type(&mat, GGML_TYPE_F16), GGML_TYPE_F16);
    ck_assert_int_eq(model_out_type(&q, GGML_TYPE_F16), GGML_TYPE_Q4_K);
}
END_TEST

/* Compare every tensor of our model view with a llama.cpp GGUF: names, shapes and values
 * (compared as F32, since the reference stores norms in F32 where the source has BF16). */
static void assert_same_tensors(const model *m, const gguf_file *ref, const char *skip) {
    uint64_t matched = 0;
    for (uint64_t i = 0; i < ref->n_tensors; i++) {
        const gguf_tensor_info *rt = &ref->tensors[i];
        if (skip && strcmp(rt->name, skip) == 0) continue;
        int64_t ti = model_find(m, rt->name);
        ck_assert_msg(ti >= 0, "tensor %s missing from our view", rt->name);
        const model_tensor *t = &m->tensors[ti];
        ck_assert_int_eq(t->n_dims, rt->n_dims);
        for (int d = 0; d < 4; d++) ck_assert_int_eq(t->ne[d], rt->ne[d]);
        int64_t rows = model_tensor_rows(t), n = t->ne[0] * rows;
        float *ours = malloc((size_t)n * 4), *theirs = malloc((size_t)n * 4);
        slmc_err err = {{0}};
        ck_assert_msg(model_read_rows_f32(m, (uint64_t)ti, 0, rows, ours, &err) == 0, "%s", err.msg);
        row_to_f32(rt->type, gguf_tensor_data(ref, i), theirs, n);
        ck_assert_msg(memcmp(ours, theirs, (size_t)n * 4) == 0, "tensor %s values differ", rt->name);
        free(ours);
        free(theirs);
        matched++;
    }
    ck_assert_uint_eq(matched + (skip ? 1 : 0), ref->n_tensors);
}

/* Every key of the reference under arch. and tokenizer.ggml. has the same value in ours,
 * except `except` (a converter quirk). */
static void assert_same_meta(const meta *ours, const meta *ref, const char *except) {
    for (size_t i = 0; i < ref->n; i++) {
        const meta_kv *r = &ref->kv[i];
        if (strncmp(r->key, "llama.", 6) != 0 && strncmp(r->key, "tokenizer.ggml.", 15) != 0) continue;
        if (except && strcmp(r->key, except) == 0) continue;
        /* llama.cpp writes unset separator / padding ids as 0xFFFFFFFF; absence means the same */
        const meta_kv *o = meta_find(ours, r->key);
        if (!o && r->type == GGUF_U32 && *(const uint32_t *)r->v.raw == UINT32_MAX) continue;
        ck_assert_msg(o != NULL, "key %s missing", r->key);
        ck_assert_msg(o->type == r->type, "key %s type %d vs %d", r->key, o->type, r->type);
        if (r->type == GGUF_ARR) {
            ck_assert_int_eq(o->elem, r->elem);
            ck_assert_uint_eq(o->n, r->n);
            if (r->elem == GGUF_STR) {
                const meta_str *a = o->v.arr, *b = r->v.arr;
                for (uint64_t k = 0; k < r->n; k++)
                    ck_assert_msg(a[k].len == b[k].len && memcmp(a[k].s, b[k].s, a[k].len) == 0,
                                  "%s[%llu] differs", r->key, (unsigned long long)k);
            } else {
                ck_assert_msg(memcmp(o->v.arr, r->v.arr, r->n * gguf_vtype_size(r->elem)) == 0, "%s differs", r->key);
            }
        } else if (r->type == GGUF_STR) {
            ck_assert_str_eq(o->v.str.s, r->v.str.s);
        } else {
            ck_assert_msg(memcmp(o->v.raw, r->v.raw, gguf_vtype_size(r->type)) == 0, "%s differs", r->key);
        }
    }
}

START_TEST(hf_checkpoint_matches_llama_cpp_conversion) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *refp = SHARED_OR_SKIP("reference/books-22m-BF16.gguf");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, hf, NULL, &err) == 0, "%s", err.msg);
    gguf_file ref;
    ck_assert_msg(gguf_open(&ref, refp, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, ref.n_tensors);
    assert_same_tensors(&m, &ref, NULL); /* includes attn_q / attn_k: the Q/K permutation */
    /* Quirk: the reference was written with llama.context_length 128; the checkpoint says 256
     * (max_position_embeddings) and we follow the checkpoint. */
    uint64_t ctx = 0;
    ck_assert(meta_get_u64(&ref.kv, "llama.context_length", &ctx) && ctx == 128);
    ck_assert_int_eq(m.cfg.n_ctx_train, 256);
    assert_same_meta(&m.kv, &ref.kv, "llama.context_length");

    /* and the GGUF we write carries the same tensors and values */
    char *dir = tmpdir_make();
    char out[512];
    snprintf(out, sizeof out, "%s/books.gguf", dir);
    ck_assert_msg(model_write_gguf(&m, out, -1, NULL, &err) == 0, "%s", err.msg);
    model w;
    ck_assert_msg(model_open(&w, out, NULL, &err) == 0, "%s", err.msg);
    for (uint64_t i = 0; i < ref.n_tensors; i++) {
        int64_t ti = model_find(&w, ref.tensors[i].name);
        ck_assert(ti >= 0);
        ck_assert_int_eq(w.tensors[ti].type, ref.tensors[i].type); /* BF16 matrices, F32 norms */
    }
    assert_same_tensors(&w, &ref, NULL);
    assert_same_meta(&w.kv, &ref.kv, "llama.context_length");
    model_close(&w);
    gguf_close(&ref);
    model_close(&m);
    tmpdir_remove(dir);
    free(hf);
    free(refp);
}
END_TEST

START_TEST(llama2c_checkpoint_matches_llama_cpp_conversion) {
    char *bin = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tok = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    char *refp = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    model m;
    slmc_err err = {{0}};
    model_open_opts opts = {.tokenizer = tok};
    ck_assert_msg(model_open(&m, bin, &opts, &err) == 0, "%s", err.msg);
    gguf_file ref;
    ck_assert_msg(gguf_open(&ref, refp, &err) == 0, "%s", err.msg);
    /* Quirk: llama.cpp's converter stores a copy of token_embd as output.weight for a shared
     * classifier; the checkpoint has none, so neither do we (the model is tied). */
    ck_assert(m.cfg.tied_output);
    ck_assert_int_lt(model_find(&m, "output.weight"), 0);
    int64_t out_i = gguf_find_tensor(&ref, "output.weight"), emb_i = gguf_find_tensor(&ref, "token_embd.weight");
    ck_assert(out_i >= 0 && emb_i >= 0);
    ck_assert(memcmp(gguf_tensor_data(&ref, (uint64_t)out_i), gguf_tensor_data(&ref, (uint64_t)emb_i),
                     ref.tensors[emb_i].nbytes) == 0);
    assert_same_tensors(&m, &ref, "output.weight");
    /* Quirk: the converter writes context_length 128 whatever the checkpoint's seq_len (512). */
    ck_assert_int_eq(m.cfg.n_ctx_train, 512);
    assert_same_meta(&m.kv, &ref.kv, "llama.context_length");
    gguf_close(&ref);
    model_close(&m);
    free(bin);
    free(tok);
    free(refp);
}
END_TEST

START_TEST(gguf_rewrite_of_a_gguf_keeps_everything) {
    char *p = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    model m, w;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, p, NULL, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    char out[512];
    snprintf(out, sizeof out, "%s/copy.gguf", dir);
    ck_assert_msg(model_write_gguf(&m, out, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&w, out, NULL, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(w.n_tensors, m.n_tensors);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        int64_t j = model_find(&w, m.tensors[i].name);
        ck_assert(j >= 0);
        ck_assert_int_eq(w.tensors[j].type, m.tensors[i].type);
        ck_assert_uint_eq(w.tensors[j].nbytes, m.tensors[i].nbytes);
        ck_assert(memcmp(w.tensors[j].data, m.tensors[i].data, m.tensors[i].nbytes) == 0);
    }
    /* every key survives, with the same value */
    assert_same_meta(&w.kv, &m.kv, NULL);
    ck_assert_uint_eq(w.kv.n >= m.kv.n, 1);
    /* re-typing a quantized tensor is refused with a message naming it */
    char out2[512];
    snprintf(out2, sizeof out2, "%s/f16.gguf", dir);
    ck_assert_int_ne(model_write_gguf(&m, out2, GGML_TYPE_F16, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "Q"));
    model_close(&w);
    model_close(&m);
    tmpdir_remove(dir);
    free(p);
}
END_TEST

static Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, qk_permutation_is_a_bijection_and_inverse);
    tcase_add_test(tc, out_type_rules);
    tcase_add_test(tc, hf_checkpoint_matches_llama_cpp_conversion);
    tcase_add_test(tc, llama2c_checkpoint_matches_llama_cpp_conversion);
    tcase_add_test(tc, gguf_rewrite_of_a_gguf_keeps_everything);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(model_suite()); }
