/* test_imatrix.c - quant/imatrix: collection against llama-imatrix's .dat for books-22m, the
 * .dat and GGUF formats (round trips, merging), loading for quantization, bad files, HDF5;
 * quant/imatrix_run: the whole run against the chunk API. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/llm.h"
#include "eval/text.h"
#include "eval/tokenizer.h"
#include "formats/gguf.h"
#include "formats/model.h"
#include "codec/types.h"
#include "quant/imatrix.h"
#include "quant/imatrix_run.h"
#include "testutil.h"

#define REF_DAT "reference/books-22m-imatrix.dat"
#define REF_CHUNKS 100 /* llama-imatrix -c 256 -b 256 --chunks 100 */
#define REF_CTX 256
/* the .dat records the dataset path as llama-imatrix was given it */
#define REF_DATASET "/work/steering/shared/text/books-train.txt"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static double rel_err(double a, double b) {
    double d = fabs(a - b), m = fmax(fabs(a), fabs(b));
    return m > 0 ? d / m : 0;
}

/* ===================================================================== in-memory basics */

START_TEST(test_accumulate) {
    imatrix im;
    imatrix_init(&im, 4);
    slmc_err err = {{0}};
    const float x[3][2] = {{1, 2}, {3, -4}, {0.5f, 0}};
    ck_assert_int_eq(imatrix_accumulate(&im, "blk.0.ffn_up.weight", &x[0][0], 3, 2, &err), 0);
    ck_assert_int_eq(imatrix_accumulate(&im, "blk.0.ffn_up.weight", &x[0][0], 1, 2, &err), 0);
    ck_assert_uint_eq(im.n, 1);
    ck_assert(im.e[0].sum2[0] == 1 + 9 + 0.25f + 1);
    ck_assert(im.e[0].sum2[1] == 4 + 16 + 0 + 4);
    ck_assert_int_eq(im.e[0].counts[0], 4);
    /* another shape under the same name: refused */
    ck_assert_int_eq(imatrix_accumulate(&im, "blk.0.ffn_up.weight", &x[0][0], 2, 3, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.0.ffn_up.weight"));
    /* a sum that overflows: refused, as llama.cpp stops there */
    const float big[2] = {1e30f, 1};
    ck_assert_int_eq(imatrix_accumulate(&im, "blk.1.attn_q.weight", big, 1, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "blk.1.attn_q.weight"));
    ck_assert_int_eq(imatrix_finish(&im, &err), 0);
    int64_t n;
    const float *imp = imatrix_importance(&im, "blk.0.ffn_up.weight", &n);
    ck_assert_ptr_nonnull(imp);
    ck_assert_int_eq(n, 2);
    ck_assert(imp[0] == 11.25f / 4 && imp[1] == 6.0f);
    ck_assert_int_eq(im.chunk_count, 1); /* 4 tokens, chunks of 4 */
    ck_assert_ptr_null(imatrix_importance(&im, "blk.0.ffn_down.weight", &n));
    imatrix_free(&im);
}
END_TEST

/* ===================================================================== the formats */

/* A small matrix with exactly representable sums: entry k column j = (k+1) * (j+1) * 0.5. */
static void synth(imatrix *im, int32_t cs, int64_t count, const char *dataset, float scale) {
    slmc_err err;
    imatrix_init(im, cs);
    const char *names[3] = {"blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"};
    for (int k = 0; k < 3; k++) {
        imatrix_entry *e = imatrix_entry_get(im, names[k], 32 * (k + 1), 1, NULL, &err);
        ck_assert_ptr_nonnull(e);
        for (int64_t j = 0; j < e->n_in; j++) e->sum2[j] = scale * (float)((k + 1) * (j + 1)) * 0.5f;
        e->counts[0] = count;
    }
    ck_assert_int_eq(imatrix_add_dataset(im, dataset, &err), 0);
    ck_assert_int_eq(imatrix_finish(im, &err), 0);
}

START_TEST(test_merge) {
    char *dir = tmpdir_make();
    char *pa = join(dir, "a.dat"), *pb = join(dir, "b.gguf"), *pc = join(dir, "c.gguf");
    slmc_err err = {{0}};
    imatrix a, b, m;
    synth(&a, 256, 10 * 256, "a.txt", 1.0f);
    synth(&b, 256, 3 * 256, "b.txt", 4.0f);
    ck_assert_int_eq(imatrix_write_dat(&a, pa, &err), 0);
    ck_assert_int_eq(imatrix_write_gguf(&b, pb, &err), 0);
    /* mixed formats merge: sums add, counts add, datasets append in order */
    imatrix_init(&m, 256);
    ck_assert_msg(imatrix_read(&m, pa, &err) == 0, "%s", err.msg);
    ck_assert_msg(imatrix_read(&m, pb, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(imatrix_finish(&m, &err), 0);
    ck_assert_uint_eq(m.n, 3);
    for (size_t k = 0; k < 3; k++) {
        ck_assert_str_eq(m.e[k].name, a.e[k].name);
        ck_assert_int_eq(m.e[k].counts[0], 13 * 256);
        for (int64_t j = 0; j < m.e[k].n_in; j++) ck_assert(m.e[k].sum2[j] == a.e[k].sum2[j] + b.e[k].sum2[j]);
    }
    ck_assert_uint_eq(m.n_datasets, 2);
    ck_assert_str_eq(m.datasets[0], "a.txt");
    ck_assert_str_eq(m.datasets[1], "b.txt");
    ck_assert_int_eq(m.chunk_count, 13);
    /* what the quantizer gets is the merged mean */
    int64_t n;
    const float *imp = imatrix_importance(&m, "blk.0.ffn_down.weight", &n);
    ck_assert_int_eq(n, 64);
    ck_assert(imp[5] == (float)((2.0 * 6 * 0.5 + 4.0 * 2 * 6 * 0.5) / (13 * 256)));
    /* the GGUF of the merge carries the keys llama.cpp writes */
    ck_assert_int_eq(imatrix_write_gguf(&m, pc, &err), 0);
    gguf_file g;
    ck_assert_int_eq(gguf_open(&g, pc, &err), 0);
    ck_assert_str_eq(meta_get_str(&g.kv, "general.type"), "imatrix");
    uint64_t u;
    ck_assert(meta_get_u64(&g.kv, "imatrix.chunk_count", &u) && u == 13);
    ck_assert(meta_get_u64(&g.kv, "imatrix.chunk_size", &u) && u == 256);
    uint64_t nds;
    const meta_str *ds = meta_get_arr(&g.kv, "imatrix.datasets", GGUF_STR, &nds);
    ck_assert(ds && nds == 2 && strcmp(ds[1].s, "b.txt") == 0);
    ck_assert_uint_eq(g.n_tensors, 6);
    ck_assert_str_eq(g.tensors[0].name, "blk.0.attn_q.weight.in_sum2");
    ck_assert_str_eq(g.tensors[1].name, "blk.0.attn_q.weight.counts");
    ck_assert_int_eq(g.tensors[0].n_dims, 1);
    ck_assert_int_eq(g.tensors[0].ne[0], 32);
    float c;
    memcpy(&c, gguf_tensor_data(&g, 1), 4);
    ck_assert(c == 13 * 256);
    gguf_close(&g);
    /* a shape conflict names the file */
    imatrix bad;
    imatrix_init(&bad, 256);
    ck_assert_ptr_nonnull(imatrix_entry_get(&bad, "blk.0.attn_q.weight", 64, 1, NULL, &err));
    ck_assert_int_eq(imatrix_read(&bad, pa, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, pa));
    imatrix_free(&bad);
    imatrix_free(&a); imatrix_free(&b); imatrix_free(&m);
    free(pa); free(pb); free(pc);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_round_trips) {
    char *ref = SHARED_OR_SKIP(REF_DAT);
    char *dir = tmpdir_make();
    char *g1 = join(dir, "a.gguf"), *d1 = join(dir, "b.dat"), *g2 = join(dir, "c.gguf");
    slmc_err err = {{0}};
    /* .dat -> GGUF -> .dat: the same bytes */
    imatrix a, b, c;
    ck_assert_msg(imatrix_load(&a, ref, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(a.chunk_size, IMATRIX_DEFAULT_CHUNK_SIZE);
    ck_assert_int_eq(a.chunk_count, REF_CHUNKS);
    ck_assert_int_eq(imatrix_write_gguf(&a, g1, &err), 0);
    ck_assert_msg(imatrix_load(&b, g1, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(imatrix_write_dat(&b, d1, &err), 0);
    size_t n_ref, n_out;
    uint8_t *bref = slurp(ref, &n_ref), *bout = slurp(d1, &n_out);
    ck_assert_uint_eq(n_out, n_ref);
    ck_assert_int_eq(memcmp(bref, bout, n_ref), 0);
    /* GGUF -> .dat -> GGUF: the same sums and counts (and here the same bytes) */
    ck_assert_msg(imatrix_load(&c, d1, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(c.n, b.n);
    for (size_t i = 0; i < b.n; i++) {
        ck_assert_str_eq(c.e[i].name, b.e[i].name);
        ck_assert_int_eq(c.e[i].counts[0], b.e[i].counts[0]);
        ck_assert_int_eq(memcmp(c.e[i].sum2, b.e[i].sum2, sizeof(float) * (size_t)b.e[i].n_in), 0);
    }
    ck_assert_int_eq(imatrix_write_gguf(&c, g2, &err), 0);
    size_t n1, n2;
    uint8_t *b1 = slurp(g1, &n1), *b2 = slurp(g2, &n2);
    ck_assert(n1 == n2 && memcmp(b1, b2, n1) == 0);
    /* a chunk size that is not a power of two still keeps the means (not the bytes) */
    imatrix d;
    imatrix_init(&d, 300);
    ck_assert_int_eq(imatrix_read(&d, ref, &err), 0);
    ck_assert_int_eq(imatrix_finish(&d, &err), 0);
    for (size_t i = 0; i < d.n; i++)
        CK_ASSERT_RANGE(j, 0, d.e[i].n_in, rel_err(d.e[i].importance[j], a.e[i].importance[j]) < 1e-6);
    free(b1); free(b2); free(bref); free(bout);
    imatrix_free(&a); imatrix_free(&b); imatrix_free(&c); imatrix_free(&d);
    free(g1); free(d1); free(g2); free(ref);
    tmpdir_remove(dir);
}
END_TEST

/* ===================================================================== loading for quantization */

START_TEST(test_load_for_quantize) {
    char *ref = SHARED_OR_SKIP(REF_DAT);
    char *mp = SHARED_OR_SKIP("reference/books-22m-BF16.gguf");
    slmc_err err = {{0}};
    imatrix im;
    ck_assert_msg(imatrix_load(&im, ref, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(im.n, 42); /* 6 blocks x 7 matrices */
    ck_assert_uint_eq(im.n_datasets, 1);
    ck_assert_str_eq(im.datasets[0], REF_DATASET);
    model m;
    ck_assert_msg(model_open(&m, mp, NULL, &err) == 0, "%s", err.msg);
    /* every block matrix has an importance array of its row length; others have none */
    size_t n_ref;
    uint8_t *raw = slurp(ref, &n_ref);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        const model_tensor *t = &m.tensors[i];
        int64_t n;
        const float *imp = imatrix_importance(&im, t->name, &n);
        bool quantizable_block = strncmp(t->name, "blk.", 4) == 0 && t->n_dims == 2;
        ck_assert_msg(quantizable_block == (imp != NULL), "%s", t->name);
        if (!imp) continue;
        ck_assert_int_eq(n, t->ne[0]);
        /* llama-quantize's value: the stored float divided by ncall (100), in float */
        const uint8_t *p = memmem(raw, n_ref, t->name, strlen(t->name));
        ck_assert_ptr_nonnull(p);
        int32_t ncall, nval;
        memcpy(&ncall, p + strlen(t->name), 4);
        memcpy(&nval, p + strlen(t->name) + 4, 4);
        ck_assert_int_eq(ncall, REF_CHUNKS);
        ck_assert_int_eq(nval, n);
        for (int64_t j = 0; j < n; j++) {
            float v;
            memcpy(&v, p + strlen(t->name) + 8 + 4 * j, 4);
            CK_ASSERT_QUIET(imp[j] == v / (float)ncall, "%s[%lld]", t->name, (long long)j);
        }
    }
    const float **table;
    uint64_t found;
    ck_assert_int_eq(imatrix_importance_table(&im, &m, &table, &found, &err), 0);
    ck_assert_uint_eq(found, 42);
    ck_assert_ptr_null(table[model_find(&m, "token_embd.weight")]);
    ck_assert_ptr_nonnull(table[model_find(&m, "blk.3.ffn_down.weight")]);
    free(table);
    /* an entry of the wrong length: the imatrix is for another model */
    im.e[0].n_in = 128;
    ck_assert_int_eq(imatrix_importance_table(&im, &m, &table, &found, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "another model"));
    im.e[0].n_in = 256;
    free(raw);
    model_close(&m);
    imatrix_free(&im);
    free(ref); free(mp);
}
END_TEST

/* ===================================================================== bad files */

static void expect_bad(const char *dir, const char *name, const void *data, size_t len, const char *what) {
    char *p = join(dir, name);
    ck_assert_int_eq(write_bytes(p, data, len), 0);
    imatrix im;
    slmc_err err = {{0}};
    ck_assert_msg(imatrix_load(&im, p, &err) == -1, "%s loaded", name);
    ck_assert_msg(strstr(err.msg, p) != NULL, "%s: message does not name the file: %s", name, err.msg);
    ck_assert_msg(strstr(err.msg, what) != NULL, "%s: expected '%s' in: %s", name, what, err.msg);
    free(p);
}

START_TEST(test_bad_files) {
    char *ref = SHARED_OR_SKIP(REF_DAT);
    char *dir = tmpdir_make();
    size_t n;
    uint8_t *raw = slurp(ref, &n);
    uint8_t *buf = malloc(n + 16);
    /* truncations: in the count, a name, the values, the trailer */
    expect_bad(dir, "t0.dat", raw, 2, "truncated");
    expect_bad(dir, "t1.dat", raw, 10, "entry count 42 does not fit");
    memcpy(buf, raw, 140);
    int32_t one_entry = 1;
    memcpy(buf, &one_entry, 4); /* so the count fits, and the first entry's values are cut */
    expect_bad(dir, "t2.dat", buf, 140, "truncated: values");
    expect_bad(dir, "t3.dat", raw, n - 5, "truncated");
    expect_bad(dir, "empty.dat", raw, 0, "truncated");
    /* wrong counts */
    memcpy(buf, raw, n);
    int32_t v = 43;
    memcpy(buf, &v, 4);
    expect_bad(dir, "n43.dat", buf, n, "");
    v = 0;
    memcpy(buf, &v, 4);
    expect_bad(dir, "n0.dat", buf, n, "no data");
    memcpy(buf, raw, n);
    int32_t len0;
    memcpy(&len0, raw + 4, 4);
    v = 0;
    memcpy(buf + 8 + len0, &v, 4); /* ncall 0 */
    expect_bad(dir, "ncall0.dat", buf, n, "ncall");
    memcpy(buf, raw, n);
    v = 257;
    memcpy(buf + 12 + len0, &v, 4); /* nval one too many: the next entry is misread */
    expect_bad(dir, "nval.dat", buf, n, "");
    memcpy(buf, raw, n);
    memcpy(buf + n, "xx", 2); /* bytes after the trailer */
    expect_bad(dir, "tail.dat", buf, n + 2, "unexpected bytes");
    /* non-finite and negative sums */
    memcpy(buf, raw, n);
    float f = NAN;
    memcpy(buf + 16 + len0 + 4 * 7, &f, 4);
    expect_bad(dir, "nan.dat", buf, n, "value 7");
    f = -1;
    memcpy(buf + 16 + len0 + 4 * 7, &f, 4);
    expect_bad(dir, "neg.dat", buf, n, "value 7");
    /* GGUF: a NaN count, a missing counts tensor, a model file */
    slmc_err err;
    imatrix im;
    imatrix_init(&im, 256);
    imatrix_entry *e = imatrix_entry_get(&im, "blk.0.ffn_up.weight", 32, 1, NULL, &err);
    e->counts[0] = 512;
    e->sum2[3] = 2;
    ck_assert_int_eq(imatrix_finish(&im, &err), 0);
    char *gp = join(dir, "ok.gguf");
    ck_assert_int_eq(imatrix_write_gguf(&im, gp, &err), 0);
    size_t gn;
    uint8_t *g = slurp(gp, &gn);
    gguf_file gf;
    ck_assert_int_eq(gguf_open(&gf, gp, &err), 0);
    const uint64_t sum_at = gf.data_offset + gf.tensors[0].offset, cnt_at = gf.data_offset + gf.tensors[1].offset;
    gguf_close(&gf);
    memcpy(g + cnt_at, &f, 4); /* f is -1 here */
    expect_bad(dir, "negcount.gguf", g, gn, "count 0");
    f = NAN;
    memcpy(g + sum_at + 4 * 3, &f, 4);
    float one = 512;
    memcpy(g + cnt_at, &one, 4);
    expect_bad(dir, "nansum.gguf", g, gn, "sum 3");
    /* renaming ".counts" to ".countz" leaves sums without counts */
    uint8_t *hit = memmem(g, gn, "weight.counts", 13);
    ck_assert_ptr_nonnull(hit);
    hit[12] = 'z';
    expect_bad(dir, "nocounts.gguf", g, gn, "no blk.0.ffn_up.weight.counts");
    expect_bad(dir, "trunc.gguf", g, gn - 8, "");
    char *model_path = shared_path("reference/stories260K-F32.gguf");
    if (model_path) {
        size_t mn;
        uint8_t *mb = slurp(model_path, &mn);
        expect_bad(dir, "model.gguf", mb, mn, "no imatrix tensors");
        free(mb);
        free(model_path);
    }
    free(g); free(gp);
    imatrix_free(&im);
    free(buf); free(raw); free(ref);
    tmpdir_remove(dir);
}
END_TEST

/* ===================================================================== HDF5 export */

START_TEST(test_hdf5) {
    char *ref = SHARED_OR_SKIP(REF_DAT);
    char *dir = tmpdir_make();
    char *hp = join(dir, "im.h5");
    slmc_err err = {{0}};
    imatrix im;
    ck_assert_int_eq(imatrix_load(&im, ref, &err), 0);
    ck_assert_msg(imatrix_write_hdf5(&im, hp, "books-22m.gguf", &err) == 0, "%s", err.msg);
    hid_t f = H5Fopen(hp, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(f >= 0);
    int64_t v;
    hid_t a = H5Aopen(f, "chunks", H5P_DEFAULT);
    ck_assert(a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &v) >= 0);
    ck_assert_int_eq(v, REF_CHUNKS);
    H5Aclose(a);
    a = H5Aopen(f, "text", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    char s[256] = {0};
    ck_assert(H5Tget_size(t) < sizeof s && H5Aread(a, t, s) >= 0);
    ck_assert_str_eq(s, REF_DATASET);
    H5Tclose(t);
    H5Aclose(a);
    hid_t d = H5Dopen2(f, "blk.2.ffn_down.weight", H5P_DEFAULT);
    ck_assert(d >= 0);
    float vals[768];
    ck_assert(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) >= 0);
    const float *imp = imatrix_importance(&im, "blk.2.ffn_down.weight", NULL);
    ck_assert_int_eq(memcmp(vals, imp, sizeof vals), 0);
    a = H5Aopen(d, "counts", H5P_DEFAULT);
    ck_assert(a >= 0 && H5Aread(a, H5T_NATIVE_INT64, &v) >= 0);
    ck_assert_int_eq(v, REF_CHUNKS * IMATRIX_DEFAULT_CHUNK_SIZE);
    H5Aclose(a);
    H5Dclose(d);
    H5Fclose(f);
    imatrix_free(&im);
    free(hp); free(ref);
    tmpdir_remove(dir);
}
END_TEST

/* ===================================================================== collection vs llama.cpp */

/* Tokens of books-train.txt. Tokenizing all 13 MB takes seconds; a 400 KB prefix gives the
 * same first REF_CHUNKS * REF_CTX (25600) tokens with a wide margin (~100k tokens), since
 * cutting the text can only change the tokens next to the cut. */
static int32_t *train_tokens(const model *m, size_t *n_tok, int32_t *bos) {
    char *tp = shared_path("text/books-train.txt");
    ck_assert_ptr_nonnull(tp);
    size_t len;
    uint8_t *text = slurp(tp, &len);
    ck_assert_ptr_nonnull(text);
    if (len > 400000) len = 400000;
    tokenizer *tok;
    slmc_err err = {{0}};
    ck_assert_msg(tokenizer_create(&tok, &m->kv, &err) == 0, "%s", err.msg);
    int32_t *ids;
    ck_assert_int_eq(tokenizer_encode(tok, (const char *)text, len, true, false, &ids, n_tok, &err), 0);
    ck_assert(*n_tok > (size_t)REF_CHUNKS * REF_CTX + 1000);
    *bos = tokenizer_bos(tok);
    tokenizer_free(tok);
    free(text);
    free(tp);
    return ids;
}

/* blk.0's attention input needs no forward pass: RMSNorm(embedding) * attn_norm, which is
 * what llama.cpp's graph computes (sum of squares in double, as ggml's rms_norm). Per column
 * mean x² over the first n_chunk chunks, each starting with BOS. */
static void layer0_expect(const model *m, const int32_t *ids, int32_t bos, int n_chunk, double *out) {
    slmc_err err;
    const int64_t E = m->cfg.n_embd;
    float *row = malloc(sizeof(float) * (size_t)E), *g = malloc(sizeof(float) * (size_t)E);
    ck_assert_int_eq(model_read_rows_f32(m, (uint64_t)model_find(m, "blk.0.attn_norm.weight"), 0, 1, g, &err), 0);
    const uint64_t te = (uint64_t)model_find(m, "token_embd.weight");
    for (int64_t j = 0; j < E; j++) out[j] = 0;
    for (int c = 0; c < n_chunk; c++)
        for (int t = 0; t < REF_CTX; t++) {
            int32_t id = t == 0 ? bos : ids[(size_t)c * REF_CTX + t];
            CK_ASSERT_QUIET(model_read_rows_f32(m, te, id, 1, row, &err) == 0, "%s", err.msg);
            double ss = 0;
            for (int64_t j = 0; j < E; j++) ss += (double)row[j] * row[j];
            const float scale = 1.0f / sqrtf((float)(ss / (double)E) + m->cfg.norm_eps);
            for (int64_t j = 0; j < E; j++) {
                const double y = (double)(row[j] * scale) * g[j];
                out[j] += y * y;
            }
        }
    for (int64_t j = 0; j < E; j++) out[j] /= (double)n_chunk * REF_CTX;
    free(row);
    free(g);
}

/* Chunks collected through the engine: all 100 (about half a minute), except under the
 * sanitizers where a few are enough to check the hook wiring; SLMC_IMATRIX_CHUNKS=N overrides.
 * bench/imatrix.sh runs the full comparison through the CLI. */
static int engine_chunks(void) {
    const char *e = getenv("SLMC_IMATRIX_CHUNKS");
    if (e && atoi(e) > 0) return atoi(e) < REF_CHUNKS ? atoi(e) : REF_CHUNKS;
#ifdef TEST_SANITIZED
    return 3;
#else
    return REF_CHUNKS;
#endif
}

START_TEST(test_collect_vs_llama) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *ref = SHARED_OR_SKIP(REF_DAT);
    char *tp = SHARED_OR_SKIP("text/books-train.txt");
    free(tp);
    slmc_err err = {{0}};
    /* llama.cpp made the reference from the F32 conversion: convert the BF16 checkpoint to F32
     * (exact) so every product runs in F32 as there */
    char *dir = tmpdir_make();
    char *f32 = join(dir, "books-22m-F32.gguf");
    model src;
    ck_assert_msg(model_open(&src, hf, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_write_gguf(&src, f32, GGML_TYPE_F32, NULL, &err) == 0, "%s", err.msg);
    model_close(&src);
    model m;
    ck_assert_msg(model_open(&m, f32, NULL, &err) == 0, "%s", err.msg);
    size_t n_tok;
    int32_t bos;
    int32_t *ids = train_tokens(&m, &n_tok, &bos);
    imatrix refm;
    ck_assert_int_eq(imatrix_load(&refm, ref, &err), 0);

    /* 1. llama.cpp's chunking, BOS and averaging over all 100 chunks, on blk.0's inputs */
    const int64_t E = m.cfg.n_embd;
    double *exp100 = malloc(sizeof(double) * (size_t)E);
    layer0_expect(&m, ids, bos, REF_CHUNKS, exp100);
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        static const char *const qkv[3] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"};
        const float *r = imatrix_importance(&refm, qkv[k], NULL);
        for (int64_t j = 0; j < E; j++) worst = fmax(worst, rel_err(exp100[j], r[j]));
    }
    fprintf(stderr, "imatrix: blk.0 attention inputs over %d chunks vs llama.cpp: max rel err %.3g\n", REF_CHUNKS, worst);
    ck_assert(worst < 2e-4);

    /* 2. the engine's hook: every block matrix collected, shared inputs per weight */
    llm_model lm;
    llm_context ctx;
    ck_assert_int_eq(llm_model_init(&lm, &m, &err), 0);
    ck_assert_int_eq(llm_context_init(&ctx, &lm, REF_CTX, REF_CTX, &err), 0);
    const int nc = engine_chunks();
    imatrix im;
    imatrix_init(&im, REF_CTX);
    for (int c = 0; c < nc; c++)
        ck_assert_msg(imatrix_eval_chunk(&im, &ctx, ids + (size_t)c * REF_CTX, REF_CTX, bos, false, NULL, &err) == 0,
                      "%s", err.msg);
    imatrix_sort(&im);
    ck_assert_int_eq(imatrix_finish(&im, &err), 0);
    ck_assert_uint_eq(im.n, 42);
    ck_assert_int_eq(im.chunk_count, nc);
    for (size_t i = 0; i < im.n; i++) {
        ck_assert_int_eq(im.e[i].counts[0], (int64_t)nc * REF_CTX);
        ck_assert_int_eq(im.e[i].n_in, refm.e[imatrix_find(&refm, im.e[i].name)].n_in);
    }
    const float *q = imatrix_importance(&im, "blk.3.attn_q.weight", NULL), *v = imatrix_importance(&im, "blk.3.attn_v.weight", NULL);
    const float *gt = imatrix_importance(&im, "blk.3.ffn_gate.weight", NULL), *up = imatrix_importance(&im, "blk.3.ffn_up.weight", NULL);
    ck_assert_int_eq(memcmp(q, v, sizeof(float) * (size_t)E), 0);
    ck_assert_int_eq(memcmp(gt, up, sizeof(float) * (size_t)E), 0);
    double *expn = malloc(sizeof(double) * (size_t)E);
    layer0_expect(&m, ids, bos, nc, expn);
    const float *q0 = imatrix_importance(&im, "blk.0.attn_q.weight", NULL);
    for (int64_t j = 0; j < E; j++) ck_assert_msg(rel_err(q0[j], expn[j]) < 1e-4, "column %lld", (long long)j);

    /* 3. with all 100 chunks: every entry against llama.cpp's */
    if (nc == REF_CHUNKS) {
        double max_rel = 0;
        const char *where = "";
        for (size_t i = 0; i < im.n; i++) {
            const float *r = imatrix_importance(&refm, im.e[i].name, NULL);
            for (int64_t j = 0; j < im.e[i].n_in; j++) {
                double e = rel_err(im.e[i].importance[j], r[j]);
                if (e > max_rel) { max_rel = e; where = im.e[i].name; }
            }
        }
        fprintf(stderr, "imatrix: 100 chunks vs llama.cpp: max rel err %.3g (%s)\n", max_rel, where);
        ck_assert(max_rel < 1e-3);
    }
    free(expn);
    free(exp100);
    imatrix_free(&im);
    imatrix_free(&refm);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    free(ids);
    model_close(&m);
    free(f32); free(hf); free(ref);
    tmpdir_remove(dir);
}
END_TEST

/* ===================================================================== imatrix_run */

static int count_chunks(void *ud, int done, int n_chunk, double seconds) {
    (void)n_chunk, (void)seconds;
    *(int *)ud = done;
    return 0;
}

/* imatrix_run (the whole `slmc imatrix`) writes what the chunk API collects: stories260K on
 * tinystories_sample.txt, 3 chunks of 64 with the output head; then its file merged twice. */
START_TEST(test_run) {
    char *mp = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    char *tp = SHARED_OR_SKIP("text/tinystories_sample.txt");
    char *dir = tmpdir_make();
    char *dat = join(dir, "run.dat"), *direct = join(dir, "direct.dat"), *twice = join(dir, "twice.gguf");
    slmc_err err = {{0}};
    int seen = 0;
    const imatrix_opts o = {.model = mp, .text = tp, .n_ctx = 64, .max_chunks = 3, .process_output = true, .out = dat};
    const imatrix_hooks h = {.ud = &seen, .chunk_done = count_chunks};
    imatrix_result r;
    ck_assert_msg(imatrix_run(&o, &h, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(seen, 3);
    ck_assert_int_eq(r.n_chunk, 3);
    ck_assert_int_eq(r.n_ctx, 64);
    ck_assert_int_eq(r.chunk_size, 64);
    ck_assert_int_eq(r.chunk_count, 3);
    ck_assert(r.n_tokens > 3 * 64);
    ck_assert_int_eq(r.ppl.count, 3 * ppl_scored(64));

    /* the same chunks through imatrix_eval_chunk, written the same way: each chunk collected
     * on its own, then the chunks joined by the tree over the chunk index that imatrix_run's
     * sum uses for any number of ranks (comm.h), for 3 chunks (c0 + c1) + c2 */
    model m;
    llm_model lm;
    llm_context ctx;
    text_tokens t;
    ck_assert_msg(model_open(&m, mp, NULL, &err) == 0 && llm_model_init(&lm, &m, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(llm_context_init(&ctx, &lm, 64, 64, &err), 0);
    ck_assert_msg(text_tokenize(&m, tp, 0, "test", &t, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(t.n, r.n_tokens);
    imatrix chunks[3];
    for (int c = 0; c < 3; c++) {
        imatrix_init(&chunks[c], 64);
        ck_assert_msg(imatrix_eval_chunk(&chunks[c], &ctx, t.ids + c * 64, 64, t.bos, true, NULL, &err) == 0, "%s", err.msg);
        ck_assert_uint_eq(chunks[c].n, chunks[0].n);
    }
    imatrix im;
    imatrix_init(&im, 64);
    for (size_t i = 0; i < chunks[0].n; i++) {
        const imatrix_entry *e0 = &chunks[0].e[i], *e1 = &chunks[1].e[i], *e2 = &chunks[2].e[i];
        imatrix_entry *d = imatrix_entry_get(&im, e0->name, e0->n_in, e0->n_mat, NULL, &err);
        ck_assert_ptr_nonnull(d);
        for (int64_t j = 0; j < e0->n_in * e0->n_mat; j++) d->sum2[j] = (e0->sum2[j] + e1->sum2[j]) + e2->sum2[j];
        d->counts[0] = e0->counts[0] + e1->counts[0] + e2->counts[0];
    }
    /* the tree is not the running sum over all tokens: the test would see a wrong order */
    imatrix running;
    imatrix_init(&running, 64);
    for (int c = 0; c < 3; c++)
        ck_assert_msg(imatrix_eval_chunk(&running, &ctx, t.ids + c * 64, 64, t.bos, true, NULL, &err) == 0, "%s", err.msg);
    int differ = 0;
    for (size_t i = 0; i < im.n; i++)
        differ += memcmp(im.e[i].sum2, running.e[i].sum2, sizeof(float) * (size_t)im.e[i].n_in) != 0;
    ck_assert_int_gt(differ, 0);
    imatrix_free(&running);
    for (int c = 0; c < 3; c++) imatrix_free(&chunks[c]);
    ck_assert_int_eq(imatrix_add_dataset(&im, tp, &err), 0);
    imatrix_sort(&im);
    ck_assert_int_eq(imatrix_finish(&im, &err), 0);
    ck_assert_uint_eq(im.n, r.n_entries);
    ck_assert_int_ge(imatrix_find(&im, "output.weight"), 0);
    ck_assert_int_eq(imatrix_write_dat(&im, direct, &err), 0);
    size_t n1, n2;
    uint8_t *b1 = slurp(dat, &n1), *b2 = slurp(direct, &n2);
    ck_assert(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);

    /* merging only: sums and counts add */
    const char *ins[2] = {dat, dat};
    const imatrix_opts mo = {.in_files = ins, .n_in_files = 2, .n_ctx = 64, .out = twice, .out_gguf = true};
    ck_assert_msg(imatrix_run(&mo, NULL, &r, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(r.n_chunk, 0);
    ck_assert_uint_eq(r.n_entries, im.n);
    ck_assert_int_eq(r.chunk_count, 6);
    imatrix back;
    ck_assert_msg(imatrix_load(&back, twice, &err) == 0, "%s", err.msg);
    const int64_t i = imatrix_find(&back, "blk.0.attn_q.weight");
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(back.e[i].counts[0], 2 * 3 * 64);

    /* a model without a text is refused */
    const imatrix_opts bad = {.model = mp, .out = twice};
    ck_assert_int_eq(imatrix_run(&bad, NULL, &r, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, mp));

    imatrix_free(&back);
    imatrix_free(&im);
    free(b1);
    free(b2);
    text_tokens_free(&t);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    model_close(&m);
    tmpdir_remove(dir);
    free(dat); free(direct); free(twice); free(mp); free(tp);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("imatrix");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_accumulate);
    tcase_add_test(tc, test_merge);
    tcase_add_test(tc, test_round_trips);
    tcase_add_test(tc, test_load_for_quantize);
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_hdf5);
    tcase_add_test(tc, test_run);
    tcase_add_test(tc, test_collect_vs_llama);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
