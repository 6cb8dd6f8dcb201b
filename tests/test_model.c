/* test_model.c - the model view: Q/K permutation, row reads, output types, the GGUF
 * written from each input format compared with llama.cpp's own conversions in ../shared, and
 * dequantizing convert (quantized GGUF -> F32/F16/BF16 GGUF) against quant's kernels and
 * llama.cpp's own dequantized values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "codec/types.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "codec/quants.h"
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
    model_tensor qvec = {.name = "blk.0.attn_norm.weight", .type = GGML_TYPE_Q8_0, .n_dims = 1, .ne = {256, 1, 1, 1}};
    model_tensor ints = {.name = "positions", .type = GGML_TYPE_I32, .n_dims = 2, .ne = {8, 8, 1, 1}};
    ck_assert_int_eq(model_out_type(&norm, -1), GGML_TYPE_F32); /* llama.cpp keeps 1-D in F32 */
    ck_assert_int_eq(model_out_type(&norm, GGML_TYPE_F16), GGML_TYPE_F32);
    ck_assert_int_eq(model_out_type(&mat, -1), GGML_TYPE_BF16);
    ck_assert_int_eq(model_out_type(&mat, GGML_TYPE_F16), GGML_TYPE_F16);
    /* quantized: copied without an outtype, dequantized to it with one (1-D to F32) */
    ck_assert_int_eq(model_out_type(&q, -1), GGML_TYPE_Q4_K);
    ck_assert_int_eq(model_out_type(&q, GGML_TYPE_F16), GGML_TYPE_F16);
    ck_assert_int_eq(model_out_type(&q, GGML_TYPE_F32), GGML_TYPE_F32);
    ck_assert_int_eq(model_out_type(&qvec, -1), GGML_TYPE_Q8_0);
    ck_assert_int_eq(model_out_type(&qvec, GGML_TYPE_BF16), GGML_TYPE_F32);
    /* integer tensors are never converted */
    ck_assert_int_eq(model_out_type(&ints, GGML_TYPE_F16), GGML_TYPE_I32);
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
                    CK_ASSERT_QUIET(a[k].len == b[k].len && memcmp(a[k].s, b[k].s, a[k].len) == 0,
                                  "%s[%llu] differs", r->key, (unsigned long long)k);
            } else {
                CK_ASSERT_QUIET(memcmp(o->v.arr, r->v.arr, r->n * gguf_vtype_size(r->elem)) == 0, "%s differs", r->key);
            }
        } else if (r->type == GGUF_STR) {
            ck_assert_str_eq(o->v.str.s, r->v.str.s);
        } else {
            CK_ASSERT_QUIET(memcmp(o->v.raw, r->v.raw, gguf_vtype_size(r->type)) == 0, "%s differs", r->key);
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
    model_close(&w);
    model_close(&m);
    tmpdir_remove(dir);
    free(p);
}
END_TEST

/* ---- dequantizing convert ---------------------------------------------------------------- */

/* Every value of tensor i of g as F32, decoded straight from the file's bytes: the kernel
 * called once on the whole tensor (not row by row as convert does), or widened. malloc'd. */
static float *expected_f32(const gguf_file *g, uint64_t i) {
    const gguf_tensor_info *t = &g->tensors[i];
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    if (type_is_float(t->type)) {
        row_to_f32(t->type, gguf_tensor_data(g, i), v, n);
    } else {
        const quant_kernels *k = quant_get(t->type);
        ck_assert_msg(k && k->dequantize, "%s: no kernel for %s", t->name, type_name(t->type));
        k->dequantize(gguf_tensor_data(g, i), v, n);
    }
    return v;
}

/* `out` is `src` converted with --outtype `outtype`: same tensors in the canonical order, each
 * quantized or float matrix now `outtype` holding the decoded values (rounded to nearest even
 * for F16/BF16, bit for bit), 1-D tensors F32, and general.file_type set for the type. */
static void assert_dequantized(const char *src_path, const char *out_path, int outtype) {
    gguf_file src, out;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&src, src_path, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&out, out_path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(out.n_tensors, src.n_tensors);
    uint64_t ft = 99;
    ck_assert(meta_get_u64(&out.kv, "general.file_type", &ft));
    ck_assert_uint_eq(ft, outtype == GGML_TYPE_F32 ? 0 : outtype == GGML_TYPE_F16 ? 1 : 32);
    for (uint64_t i = 0; i < src.n_tensors; i++) {
        const gguf_tensor_info *st = &src.tensors[i];
        int64_t j = gguf_find_tensor(&out, st->name);
        ck_assert_msg(j >= 0, "%s missing", st->name);
        const gguf_tensor_info *ot = &out.tensors[j];
        int want_type = st->n_dims == 1 ? GGML_TYPE_F32 : outtype;
        ck_assert_msg(ot->type == want_type, "%s is %s, want %s", st->name, type_name(ot->type), type_name(want_type));
        for (int d = 0; d < 4; d++) ck_assert_int_eq(ot->ne[d], st->ne[d]);
        int64_t n = st->ne[0] * st->ne[1] * st->ne[2] * st->ne[3];
        float *want = expected_f32(&src, i);
        uint8_t *want_bytes = malloc((size_t)n * 4);
        ck_assert_ptr_nonnull(want_bytes);
        row_from_f32(ot->type, want, want_bytes, n);
        ck_assert_uint_eq(ot->nbytes, type_nbytes(ot->type, n));
        ck_assert_msg(memcmp(gguf_tensor_data(&out, (uint64_t)j), want_bytes, ot->nbytes) == 0,
                      "%s: %s values differ from the dequantized source", st->name, type_name(ot->type));
        free(want_bytes);
        free(want);
    }
    gguf_close(&out);
    gguf_close(&src);
}

/* llama.cpp's own dequantization (reference/quant/W.TYPE.dequant.f32) of W's blocks equals
 * tensor W of our F32 output, given the source file holds exactly those blocks. */
static void assert_llama_cpp_dequant(const char *src_path, const char *f32_path, const char *name) {
    gguf_file src, out;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&src, src_path, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&out, f32_path, &err) == 0, "%s", err.msg);
    int64_t i = gguf_find_tensor(&src, name), j = gguf_find_tensor(&out, name);
    ck_assert(i >= 0 && j >= 0);
    char rel[256];
    snprintf(rel, sizeof rel, "reference/quant/%s.%s", name, type_name(src.tensors[i].type));
    char *blocks_path = shared_path(rel);
    snprintf(rel, sizeof rel, "reference/quant/%s.%s.dequant.f32", name, type_name(src.tensors[i].type));
    char *deq_path = shared_path(rel);
    ck_assert_msg(blocks_path && deq_path, "%s: no llama.cpp reference", rel);
    size_t nb = 0, nd = 0;
    uint8_t *blocks = slurp(blocks_path, &nb), *deq = slurp(deq_path, &nd);
    ck_assert(blocks && deq);
    /* the file's tensor is the same llama-quantize output as the reference blocks... */
    ck_assert_uint_eq(nb, src.tensors[i].nbytes);
    ck_assert_msg(memcmp(blocks, gguf_tensor_data(&src, (uint64_t)i), nb) == 0, "%s: blocks differ from %s", name, blocks_path);
    /* ...so our dequantized tensor is llama.cpp's, bit for bit */
    ck_assert_uint_eq(nd, out.tensors[j].nbytes);
    ck_assert_msg(memcmp(deq, gguf_tensor_data(&out, (uint64_t)j), nd) == 0, "%s: differs from llama.cpp's dequantization", name);
    free(blocks);
    free(deq);
    free(blocks_path);
    free(deq_path);
    gguf_close(&out);
    gguf_close(&src);
}

/* Convert a quantized GGUF to F32, F16 and BF16 and check each; the view's row reads agree. */
static void check_dequantizing_convert(const char *src_path) {
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, src_path, NULL, &err) == 0, "%s", err.msg);
    ck_assert(model_has_quantized(&m));
    char *dir = tmpdir_make();
    const int types[3] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16};
    for (int k = 0; k < 3; k++) {
        char out[512];
        snprintf(out, sizeof out, "%s/%s.gguf", dir, type_name(types[k]));
        ck_assert_msg(model_write_gguf(&m, out, types[k], NULL, &err) == 0, "%s", err.msg);
        assert_dequantized(src_path, out, types[k]);
        if (types[k] == GGML_TYPE_F32) {
            assert_llama_cpp_dequant(src_path, out, "blk.0.attn_q.weight");
            assert_llama_cpp_dequant(src_path, out, "blk.1.ffn_down.weight");
            /* model_read_rows_f32 on the quantized view gives the same values, from any row */
            model w;
            CK_ASSERT_QUIET(model_open(&w, out, NULL, &err) == 0, "%s", err.msg);
            for (uint64_t i = 0; i < m.n_tensors; i++) {
                const model_tensor *t = &m.tensors[i];
                int64_t rows = model_tensor_rows(t), r0 = rows > 3 ? 3 : 0, nr = rows - r0 < 5 ? rows - r0 : 5;
                float *a = malloc((size_t)(t->ne[0] * nr) * 4), *b = malloc((size_t)(t->ne[0] * nr) * 4);
                CK_ASSERT_QUIET(model_read_rows_f32(&m, i, r0, nr, a, &err) == 0, "%s", err.msg);
                CK_ASSERT_QUIET(model_read_rows_f32(&w, (uint64_t)model_find(&w, t->name), r0, nr, b, &err) == 0, "%s", err.msg);
                CK_ASSERT_QUIET(memcmp(a, b, (size_t)(t->ne[0] * nr) * 4) == 0, "%s: row reads differ", t->name);
                free(a);
                free(b);
            }
            model_close(&w);
        }
    }
    /* no --outtype: quantized tensors are copied as they are */
    char copy[512];
    snprintf(copy, sizeof copy, "%s/copy.gguf", dir);
    ck_assert_msg(model_write_gguf(&m, copy, -1, NULL, &err) == 0, "%s", err.msg);
    gguf_file c;
    ck_assert_msg(gguf_open(&c, copy, &err) == 0, "%s", err.msg);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        int64_t j = gguf_find_tensor(&c, m.tensors[i].name);
        ck_assert(j >= 0);
        ck_assert_int_eq(c.tensors[j].type, m.tensors[i].type);
        ck_assert(memcmp(gguf_tensor_data(&c, (uint64_t)j), m.tensors[i].data, m.tensors[i].nbytes) == 0);
    }
    gguf_close(&c);
    model_close(&m);
    tmpdir_remove(dir);
}

START_TEST(q4_k_m_dequantizes_to_float_gguf) {
    char *p = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *deq = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.Q4_K.dequant.f32");
    check_dequantizing_convert(p);
    free(deq);
    free(p);
}
END_TEST

START_TEST(q2_k_dequantizes_to_float_gguf) {
    char *p = SHARED_OR_SKIP("reference/books-22m-Q2_K.gguf");
    char *deq = SHARED_OR_SKIP("reference/quant/blk.0.attn_q.weight.Q2_K.dequant.f32");
    check_dequantizing_convert(p);
    free(deq);
    free(p);
}
END_TEST

/* No ../shared needed: a synthetic model quantized to Q8_0 here, then converted back to F32. */
START_TEST(synthetic_q8_0_dequantizes_to_f32) {
    char *dir = tmpdir_make();
    char hf[512], q8[512], f32[512];
    snprintf(hf, sizeof hf, "%s/tiny-hf", dir);
    snprintf(q8, sizeof q8, "%s/tiny-Q8_0.gguf", dir);
    snprintf(f32, sizeof f32, "%s/tiny-F32.gguf", dir);
    slmc_err err = {{0}};
    synth_opts so;
    synth_opts_init(&so);
    so.shape = "tiny";
    ck_assert_msg(synth_write(&so, hf, NULL, &err) == 0, "%s", err.msg);
    model src;
    ck_assert_msg(model_open(&src, hf, NULL, &err) == 0, "%s", err.msg);
    plan_opts po;
    plan_opts_init(&po, MIX_Q8_0);
    int *types = malloc(src.n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(&src, &po, types, &err) == 0, "%s", err.msg);
    quant_target tg = {.path = q8, .types = types, .file_type = MIX_Q8_0};
    ck_assert_msg(quantize_model(&src, &tg, 1, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    free(types);
    model_close(&src);

    model m;
    ck_assert_msg(model_open(&m, q8, NULL, &err) == 0, "%s", err.msg);
    ck_assert(model_has_quantized(&m));
    ck_assert_msg(model_write_gguf(&m, f32, GGML_TYPE_F32, NULL, &err) == 0, "%s", err.msg);
    assert_dequantized(q8, f32, GGML_TYPE_F32);
    model_close(&m);
    tmpdir_remove(dir);
}
END_TEST

/* A quantized type the codec has no decoder for (an i-quant not implemented yet) is a
 * one-line error naming the file, the tensor and the type, before anything is written; copying
 * it is still fine. (tests/test_hf.c checks the same for the Hugging Face writer.) */
START_TEST(type_without_decoder_is_named) {
    model m;
    memset(&m, 0, sizeof m);
    meta_init(&m.kv);
    m.path = strdup("in-memory.gguf");
    m.tensors = calloc(2, sizeof *m.tensors);
    model_tensor *t = &m.tensors[0];
    t->name = strdup("blk.0.ffn_down.weight");
    t->type = GGML_TYPE_MXFP4;
    t->n_dims = 2;
    t->ne[0] = 256;
    t->ne[1] = 2;
    t->ne[2] = t->ne[3] = 1;
    t->nbytes = type_nbytes(t->type, 512);
    ck_assert_uint_gt(t->nbytes, 0);
    uint8_t *bytes = calloc(1, t->nbytes);
    t->data = bytes;
    m.n_tensors = 1;

    char *dir = tmpdir_make();
    char out[512];
    snprintf(out, sizeof out, "%s/f32.gguf", dir);
    slmc_err err = {{0}};
    ck_assert_int_ne(model_write_gguf(&m, out, GGML_TYPE_F32, NULL, &err), 0);
    ck_assert_str_eq(err.msg, "in-memory.gguf: tensor blk.0.ffn_down.weight is MXFP4, a type slmc cannot dequantize yet");
    struct stat st;
    ck_assert_int_ne(stat(out, &st), 0);
    float row[256];
    ck_assert_int_ne(model_read_rows_f32(&m, 0, 0, 1, row, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.0.ffn_down.weight is MXFP4"));
    ck_assert_msg(model_write_gguf(&m, out, -1, NULL, &err) == 0, "%s", err.msg);
    model_close(&m);
    free(bytes);
    tmpdir_remove(dir);
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
    tcase_add_test(tc, q4_k_m_dequantizes_to_float_gguf);
    tcase_add_test(tc, q2_k_dequantizes_to_float_gguf);
    tcase_add_test(tc, synthetic_q8_0_dequantizes_to_f32);
    tcase_add_test(tc, type_without_decoder_is_named);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(model_suite()); }
