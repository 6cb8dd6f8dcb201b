/* test_safetensors.c - reader on the shared HF model, writer round trips (exact bytes),
 * and a corpus of broken files that must each fail with a message naming the file. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "codec/types.h"
#include "testutil.h"

#define BOOKS "models/books-22m/hf-bf16"

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors image: le64(header length) + header + data, malloc'd to its exact size so
 * ASan catches any read past the end. */
static uint8_t *image(const char *header, const void *data, size_t data_len, size_t *len) {
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    uint8_t *b = malloc(*len);
    ck_assert_ptr_nonnull(b);
    put_le64(b, n);
    memcpy(b + 8, header, n);
    if (data_len) memcpy(b + 8 + n, data, data_len);
    return b;
}

/* Byte j of test tensor i: a pattern that differs between tensors and positions. */
static uint8_t pattern(int i, uint64_t j) { return (uint8_t)(i * 31 + j * 7 + (j >> 8)); }

/* Both ways of reading a broken image must fail, leave the model empty, and say which file
 * and (when given) what. */
static void expect_bad(const uint8_t *buf, size_t len, const char *want, const char *label) {
    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    char *path = join(dir, "bad.safetensors");
    ck_assert_int_eq(write_bytes(path, buf, len), 0);

    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&m, path, &err) == -1, "%s: st_open accepted a broken file", label);
    ck_assert_msg(err.msg[0] != '\0', "%s: empty message", label);
    ck_assert_msg(strstr(err.msg, path), "%s: message lacks the file name: %s", label, err.msg);
    if (want) ck_assert_msg(strstr(err.msg, want), "%s: message lacks \"%s\": %s", label, want, err.msg);
    ck_assert_ptr_null(m.tensors);
    ck_assert_ptr_null(m.path);

    memset(&err, 0, sizeof err);
    ck_assert_int_eq(st_parse_buffer(&m, buf, len, "buf.safetensors", &err), -1);
    ck_assert_msg(strstr(err.msg, "buf.safetensors"), "%s: %s", label, err.msg);
    if (want) ck_assert_msg(strstr(err.msg, want), "%s: message lacks \"%s\": %s", label, want, err.msg);
    ck_assert_int_eq(m.n_tensors, 0);
    st_close(&m); /* harmless on an emptied model */

    free(path);
    tmpdir_remove(dir);
}

/* A header + data that is broken as a whole image. */
static void expect_bad_header(const char *header, size_t data_len, const char *want) {
    uint8_t *data = calloc(1, data_len + 1);
    size_t len;
    uint8_t *b = image(header, data, data_len, &len);
    expect_bad(b, len, want, header);
    free(b);
    free(data);
}

/* ---------------------------------------------------------------------------------------- */
/* reading the shared HF model                                                              */
/* ---------------------------------------------------------------------------------------- */

/* Number of entries in the shared index's weight_map, read independently with jansson. */
static size_t books_weight_map_size(const char *dir) {
    char *p = join(dir, "model.safetensors.index.json");
    json_error_t jerr;
    json_t *root = json_load_file(p, 0, &jerr);
    ck_assert_ptr_nonnull(root);
    size_t n = json_object_size(json_object_get(root, "weight_map"));
    json_decref(root);
    free(p);
    return n;
}

static void check_books(const st_model *m, const char *dir) {
    ck_assert_int_eq(m->n_shards, 2);
    ck_assert_int_eq(m->n_tensors, books_weight_map_size(dir));
    ck_assert_int_eq(m->n_tensors, 57);
    ck_assert_msg(strstr(m->shards[0].path, "model-00001-of-00002.safetensors"), "%s", m->shards[0].path);
    ck_assert_msg(strstr(m->shards[1].path, "model-00002-of-00002.safetensors"), "%s", m->shards[1].path);

    /* Offset order: the embedding opens shard 1, lm_head opens shard 2. */
    const st_tensor *e = &m->tensors[0];
    ck_assert_str_eq(e->name, "model.embed_tokens.weight");
    ck_assert_int_eq(e->type, GGML_TYPE_BF16);
    ck_assert_int_eq(e->n_dims, 2);
    ck_assert_int_eq(e->shape[0], 32000);
    ck_assert_int_eq(e->shape[1], 256);
    ck_assert_int_eq(e->nbytes, 32000 * 256 * 2);
    ck_assert_int_eq(e->shard, 0);
    /* The shard's header is 3200 bytes, so its data starts at file offset 3208. */
    ck_assert_ptr_eq(e->data, m->shards[0].map.data + 8 + 3200);
    static const uint8_t first[8] = {0xb2, 0x3c, 0xa1, 0xbc, 0x17, 0xbb, 0x35, 0xbc};
    ck_assert_mem_eq(e->data, first, 8);

    int64_t lm = st_find(m, "lm_head.weight");
    ck_assert_int_eq(lm, 29); /* shard 1 holds 29 tensors, shard 2 holds 28 */
    ck_assert_int_eq(m->tensors[lm].shard, 1);
    ck_assert_ptr_eq(m->tensors[lm].data, m->shards[1].map.data + 8 + 3056);

    int64_t norm = st_find(m, "model.norm.weight");
    ck_assert_int_ge(norm, 0);
    ck_assert_int_eq(m->tensors[norm].n_dims, 1);
    ck_assert_int_eq(m->tensors[norm].shape[0], 256);
    ck_assert_int_eq(st_find(m, "no.such.tensor"), -1);

    /* Data of the two shards: 21236736 + 20975104 = the index's total_size 42211840. */
    uint64_t sum[2] = {0, 0};
    for (uint64_t i = 0; i < m->n_tensors; i++) sum[m->tensors[i].shard] += m->tensors[i].nbytes;
    ck_assert_int_eq(sum[0], 21236736);
    ck_assert_int_eq(sum[1], 20975104);

    ck_assert_int_eq(m->n_meta, 1);
    ck_assert_str_eq(m->meta_keys[0], "format");
    ck_assert_str_eq(m->meta_values[0], "pt");
}

START_TEST(test_books_folder) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&m, dir, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(m.path, dir);
    check_books(&m, dir);
    st_close(&m);
    free(dir);
}
END_TEST

START_TEST(test_books_index) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    char *idx = join(dir, "model.safetensors.index.json");
    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&m, idx, &err) == 0, "%s", err.msg);
    check_books(&m, dir);
    st_close(&m);

    /* One shard on its own is a valid safetensors file too. */
    char *s2 = join(dir, "model-00002-of-00002.safetensors");
    ck_assert_msg(st_open(&m, s2, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.n_shards, 1);
    ck_assert_int_eq(m.n_tensors, 28);
    ck_assert_str_eq(m.tensors[0].name, "lm_head.weight");
    st_close(&m);
    free(s2);
    free(idx);
    free(dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* writer round trips                                                                       */
/* ---------------------------------------------------------------------------------------- */

/* Seven tensors with shard_size 40: [a b] [big] [c d e f] (big alone since 64 > 40). */
static const st_out_tensor small[] = {
    {"a", GGML_TYPE_F32, 2, {2, 3}},  /* 24 bytes */
    {"b", GGML_TYPE_F16, 1, {5}},     /* 10 */
    {"big", GGML_TYPE_F32, 1, {16}},  /* 64 */
    {"c", GGML_TYPE_BF16, 2, {4, 4}}, /* 32 */
    {"d", GGML_TYPE_BF16, 0, {0}},    /* 2, a scalar */
    {"e", GGML_TYPE_F16, 2, {0, 3}},  /* 0, empty */
    {"f", GGML_TYPE_F32, 1, {1}},     /* 4 */
};
static const uint64_t small_bytes[] = {24, 10, 64, 32, 2, 0, 4};
static const int small_shard[] = {0, 0, 1, 2, 2, 2, 2};
#define N_SMALL 7

/* The exact file a shard header JSON should produce: length, JSON, spaces to 8, data. */
static void check_shard_file(const char *dir, const char *name, const char *json, int first, int last) {
    char *p = join(dir, name);
    size_t len;
    uint8_t *got = slurp(p, &len);
    ck_assert_msg(got != NULL, "%s missing", p);
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    size_t want_len = 8 + padded;
    for (int i = first; i <= last; i++) want_len += small_bytes[i];
    ck_assert_int_eq(len, want_len);
    uint8_t le[8];
    put_le64(le, padded);
    ck_assert_mem_eq(got, le, 8);
    ck_assert_int_eq((8 + padded) % 8, 0);
    ck_assert_msg(memcmp(got + 8, json, n) == 0, "%s header: %.*s", name, (int)n, (const char *)got + 8);
    for (size_t i = n; i < padded; i++) ck_assert_int_eq(got[8 + i], ' ');
    size_t off = 8 + padded;
    for (int i = first; i <= last; i++)
        for (uint64_t j = 0; j < small_bytes[i]; j++) ck_assert_int_eq(got[off++], pattern(i, j));
    free(got);
    free(p);
}

static void write_small(const char *dir, uint64_t shard_size, size_t chunk) {
    static const char *keys[] = {"source"}, *vals[] = {"unit test"};
    st_writer w;
    slmc_err err = {{0}};
    ck_assert_msg(st_writer_open(&w, dir, small, N_SMALL, shard_size, keys, vals, 1, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(w.n_shards, shard_size == 40 ? 3 : 1);
    uint8_t buf[64];
    for (int i = 0; i < N_SMALL; i++) {
        for (uint64_t j = 0; j < small_bytes[i]; j++) buf[j] = pattern(i, j);
        for (uint64_t j = 0; j < small_bytes[i]; j += chunk) {
            size_t n = small_bytes[i] - j < chunk ? small_bytes[i] - j : chunk;
            ck_assert_msg(st_writer_write(&w, buf + j, n, &err) == 0, "%s", err.msg);
        }
    }
    ck_assert_msg(st_writer_finish(&w, &err) == 0, "%s", err.msg);
}

static void check_small_model(const st_model *m, int n_shards) {
    ck_assert_int_eq(m->n_shards, n_shards);
    ck_assert_int_eq(m->n_tensors, N_SMALL);
    for (int i = 0; i < N_SMALL; i++) {
        const st_tensor *t = &m->tensors[i];
        ck_assert_str_eq(t->name, small[i].name);
        ck_assert_int_eq(t->type, small[i].type);
        ck_assert_int_eq(t->n_dims, small[i].n_dims);
        for (int d = 0; d < t->n_dims; d++) ck_assert_int_eq(t->shape[d], small[i].shape[d]);
        ck_assert_int_eq(t->nbytes, small_bytes[i]);
        ck_assert_int_eq(t->shard, n_shards == 1 ? 0 : small_shard[i]);
        for (uint64_t j = 0; j < t->nbytes; j++) ck_assert_int_eq(t->data[j], pattern(i, j));
    }
    ck_assert_int_eq(m->n_meta, 2);
    ck_assert_str_eq(m->meta_keys[0], "format");
    ck_assert_str_eq(m->meta_values[0], "pt");
    ck_assert_str_eq(m->meta_keys[1], "source");
    ck_assert_str_eq(m->meta_values[1], "unit test");
}

START_TEST(test_write_small_sharded) {
    char *dir = tmpdir_make();
    write_small(dir, 40, 5);

    check_shard_file(dir, "model-00001-of-00003.safetensors",
                     "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"unit test\"},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                     "\"b\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[24,34]}}",
                     0, 1);
    check_shard_file(dir, "model-00002-of-00003.safetensors",
                     "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"unit test\"},"
                     "\"big\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}}",
                     2, 2);
    check_shard_file(dir, "model-00003-of-00003.safetensors",
                     "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"unit test\"},"
                     "\"c\":{\"dtype\":\"BF16\",\"shape\":[4,4],\"data_offsets\":[0,32]},"
                     "\"d\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[32,34]},"
                     "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[34,34]},"
                     "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[34,38]}}",
                     3, 6);

    char *idx = join(dir, "model.safetensors.index.json");
    size_t len;
    char *text = (char *)slurp(idx, &len);
    ck_assert_ptr_nonnull(text);
    static const char want[] = "{\n"
                               "  \"metadata\": {\n"
                               "    \"total_size\": 136\n"
                               "  },\n"
                               "  \"weight_map\": {\n"
                               "    \"a\": \"model-00001-of-00003.safetensors\",\n"
                               "    \"b\": \"model-00001-of-00003.safetensors\",\n"
                               "    \"big\": \"model-00002-of-00003.safetensors\",\n"
                               "    \"c\": \"model-00003-of-00003.safetensors\",\n"
                               "    \"d\": \"model-00003-of-00003.safetensors\",\n"
                               "    \"e\": \"model-00003-of-00003.safetensors\",\n"
                               "    \"f\": \"model-00003-of-00003.safetensors\"\n"
                               "  }\n"
                               "}\n";
    ck_assert_int_eq(len, strlen(want));
    ck_assert_mem_eq(text, want, len);
    free(text);

    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&m, dir, &err) == 0, "%s", err.msg);
    check_small_model(&m, 3);
    st_close(&m);
    ck_assert_msg(st_open(&m, idx, &err) == 0, "%s", err.msg);
    check_small_model(&m, 3);
    st_close(&m);
    free(idx);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_write_small_single) {
    char *dir = tmpdir_make();
    write_small(dir, 0, 64);
    char *p = join(dir, "model.safetensors");
    char *idx = join(dir, "model.safetensors.index.json");
    ck_assert_int_ne(access(idx, F_OK), 0); /* no index for one shard */
    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&m, p, &err) == 0, "%s", err.msg);
    check_small_model(&m, 1);
    st_close(&m);
    free(idx);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

/* Copy every tensor of `in` through a writer into dir, in 1 MB chunks. */
static void copy_model(const st_model *in, const char *dir, uint64_t shard_size, int want_shards) {
    st_out_tensor *ts = calloc(in->n_tensors, sizeof *ts);
    ck_assert_ptr_nonnull(ts);
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        ts[i].name = in->tensors[i].name;
        ts[i].type = in->tensors[i].type;
        ts[i].n_dims = in->tensors[i].n_dims;
        memcpy(ts[i].shape, in->tensors[i].shape, sizeof ts[i].shape);
    }
    st_writer w;
    slmc_err err = {{0}};
    ck_assert_msg(st_writer_open(&w, dir, ts, in->n_tensors, shard_size, NULL, NULL, 0, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(w.n_shards, want_shards);
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const st_tensor *t = &in->tensors[i];
        for (uint64_t j = 0; j < t->nbytes; j += 1 << 20) {
            size_t n = t->nbytes - j < (1u << 20) ? t->nbytes - j : (1u << 20);
            ck_assert_msg(st_writer_write(&w, t->data + j, n, &err) == 0, "%s", err.msg);
        }
    }
    ck_assert_msg(st_writer_finish(&w, &err) == 0, "%s", err.msg);
    free(ts);
}

static void check_same_tensors(const st_model *a, const st_model *b) {
    ck_assert_int_eq(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const st_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        ck_assert_str_eq(x->name, y->name);
        ck_assert_int_eq(x->type, y->type);
        ck_assert_int_eq(x->n_dims, y->n_dims);
        ck_assert_mem_eq(x->shape, y->shape, sizeof x->shape);
        ck_assert_int_eq(x->nbytes, y->nbytes);
        ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0, "data of %s differs", x->name);
    }
}

START_TEST(test_rewrite_books_default) {
    char *src = SHARED_OR_SKIP(BOOKS);
    st_model in, out;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&in, src, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    copy_model(&in, dir, 0, 1); /* 42 MB is far under the 5 GB default */
    ck_assert_msg(st_open(&out, dir, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(out.n_shards, 1);
    ck_assert_msg(strstr(out.shards[0].path, "/model.safetensors"), "%s", out.shards[0].path);
    check_same_tensors(&in, &out);
    st_close(&out);
    st_close(&in);
    tmpdir_remove(dir);
    free(src);
}
END_TEST

/* With shard_size = the first original shard's data size the writer reproduces the HF
 * shards byte for byte, and the index up to transformers' final newline. */
START_TEST(test_rewrite_books_same_shards) {
    char *src = SHARED_OR_SKIP(BOOKS);
    st_model in, out;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&in, src, &err) == 0, "%s", err.msg);
    char *dir = tmpdir_make();
    copy_model(&in, dir, 21236736, 2);
    static const char *names[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (int k = 0; k < 2; k++) {
        char *a = join(src, names[k]), *b = join(dir, names[k]);
        size_t la, lb;
        uint8_t *da = slurp(a, &la), *db = slurp(b, &lb);
        ck_assert_ptr_nonnull(da);
        ck_assert_ptr_nonnull(db);
        ck_assert_int_eq(la, lb);
        ck_assert_msg(memcmp(da, db, la) == 0, "%s differs from the original", b);
        free(da);
        free(db);
        free(a);
        free(b);
    }
    char *a = join(src, "model.safetensors.index.json"), *b = join(dir, "model.safetensors.index.json");
    size_t la, lb;
    uint8_t *da = slurp(a, &la), *db = slurp(b, &lb);
    ck_assert_int_eq(lb, la + 1);
    ck_assert_mem_eq(da, db, la);
    ck_assert_int_eq(db[la], '\n');
    free(da);
    free(db);
    free(a);
    free(b);

    ck_assert_msg(st_open(&out, dir, &err) == 0, "%s", err.msg);
    check_same_tensors(&in, &out);
    st_close(&out);
    st_close(&in);
    tmpdir_remove(dir);
    free(src);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* writer errors                                                                            */
/* ---------------------------------------------------------------------------------------- */

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

START_TEST(test_writer_misuse) {
    char *dir = tmpdir_make();
    st_writer w;
    slmc_err err = {{0}};
    uint8_t buf[64] = {0};

    st_out_tensor q = {"q", GGML_TYPE_Q4_K, 1, {256}};
    ck_assert_int_eq(st_writer_open(&w, dir, &q, 1, 0, NULL, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "Q4_K"), "%s", err.msg);
    st_writer_abort(&w); /* harmless after a failed open */

    st_out_tensor dup[2] = {{"x", GGML_TYPE_F32, 1, {2}}, {"x", GGML_TYPE_F16, 1, {2}}};
    ck_assert_int_eq(st_writer_open(&w, dir, dup, 2, 0, NULL, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "twice"), "%s", err.msg);

    st_out_tensor neg = {"n", GGML_TYPE_F32, 1, {-1}};
    ck_assert_int_eq(st_writer_open(&w, dir, &neg, 1, 0, NULL, NULL, 0, &err), -1);

    /* A chunk crossing a tensor end, too much data, then finishing early. */
    ck_assert_int_eq(st_writer_open(&w, dir, small, N_SMALL, 40, NULL, NULL, 0, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 25, &err), -1);
    ck_assert_msg(strstr(err.msg, "crosses the end of tensor a"), "%s", err.msg);
    ck_assert_int_eq(st_writer_write(&w, buf, 24, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 10, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 20, &err), 0); /* half of big: shard 2 is open */
    ck_assert_int_eq(count_files(dir), 2);
    ck_assert_int_eq(st_writer_finish(&w, &err), -1);
    ck_assert_msg(strstr(err.msg, "tensor big has 20 of its 64 bytes"), "%s", err.msg);
    ck_assert_int_eq(count_files(dir), 0); /* finish failed, so it removed what it wrote */
    st_writer_abort(&w);                   /* and abort after that is harmless */

    /* abort mid-way removes the files. */
    ck_assert_int_eq(st_writer_open(&w, dir, small, N_SMALL, 40, NULL, NULL, 0, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 24, &err), 0);
    ck_assert_int_eq(count_files(dir), 1);
    st_writer_abort(&w);
    ck_assert_int_eq(count_files(dir), 0);

    /* Everything written, then one byte more. */
    st_out_tensor one = {"one", GGML_TYPE_F16, 1, {2}};
    ck_assert_int_eq(st_writer_open(&w, dir, &one, 1, 0, NULL, NULL, 0, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 4, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, "after the last tensor"), "%s", err.msg);
    ck_assert_int_eq(st_writer_finish(&w, &err), 0);
    ck_assert_int_eq(count_files(dir), 1);

    /* A folder that does not exist: the message names the file. */
    char *missing = join(dir, "no/such/dir");
    ck_assert_int_eq(st_writer_open(&w, missing, &one, 1, 0, NULL, NULL, 0, &err), 0);
    ck_assert_int_eq(st_writer_write(&w, buf, 4, &err), -1);
    ck_assert_msg(strstr(err.msg, "no/such/dir/model.safetensors: cannot create: No such file"), "%s", err.msg);
    st_writer_abort(&w);
    free(missing);
    tmpdir_remove(dir);
}
END_TEST

/* A full disk, simulated with a file size limit (the write fails with EFBIG, as with
 * ENOSPC): the error names the shard and the cause, and abort removes the file. */
START_TEST(test_writer_disk_full) {
    char *dir = tmpdir_make();
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 10000;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);

    st_out_tensor t = {"w", GGML_TYPE_F32, 2, {64, 256}}; /* 65536 bytes */
    st_writer w;
    slmc_err err = {{0}};
    ck_assert_int_eq(st_writer_open(&w, dir, &t, 1, 0, NULL, NULL, 0, &err), 0);
    uint8_t buf[4096] = {0};
    int rc = 0;
    for (int i = 0; i < 16 && rc == 0; i++) rc = st_writer_write(&w, buf, sizeof buf, &err);
    if (rc == 0) rc = st_writer_finish(&w, &err);
    else st_writer_abort(&w);

    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_sig);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err.msg, "model.safetensors: write failed: ") && strstr(err.msg, strerror(EFBIG)), "%s",
                  err.msg);
    ck_assert_int_eq(count_files(dir), 0);
    tmpdir_remove(dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------- */
/* broken inputs                                                                            */
/* ---------------------------------------------------------------------------------------- */

static const char good_header[] = "{\"__metadata__\":{\"k\":\"v\"},"
                                  "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                                  "\"x\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}}";

START_TEST(test_good_buffer) {
    uint8_t data[22];
    for (int j = 0; j < 22; j++) data[j] = (uint8_t)j;
    size_t len;
    uint8_t *b = image(good_header, data, 22, &len);
    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_parse_buffer(&m, b, len, "good", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.n_tensors, 2);
    ck_assert_ptr_eq(m.tensors[0].data, b + 8 + strlen(good_header));
    ck_assert_ptr_eq(m.tensors[1].data, b + 8 + strlen(good_header) + 16);
    ck_assert_int_eq(m.tensors[1].nbytes, 6);
    ck_assert_str_eq(m.meta_values[0], "v");
    st_close(&m);
    free(b);
}
END_TEST

START_TEST(test_truncated) {
    uint8_t data[22] = {0};
    size_t len;
    uint8_t *b = image(good_header, data, 22, &len);
    size_t n = strlen(good_header);
    const size_t cuts[] = {0, 1, 4, 7, 8, 9, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 10, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        uint8_t *t = malloc(cuts[i] + 1); /* exact size (+1 so malloc(0) is not special) */
        memcpy(t, b, cuts[i]);
        char label[32];
        snprintf(label, sizeof label, "cut at %zu", cuts[i]);
        expect_bad(t, cuts[i], NULL, label);
        free(t);
    }
    expect_bad(b, 7, "too short", "7 bytes");
    expect_bad(b, 8 + n - 1, "runs past the end of the file", "cut in JSON");
    expect_bad(b, 8 + n + 10, "run past the end of the data (10 bytes)", "cut in data");
    free(b);
}
END_TEST

START_TEST(test_bad_lengths) {
    uint8_t b[64] = "12345678{}";
    put_le64(b, 1ull << 63);
    expect_bad(b, sizeof b, "header length 9223372036854775808 is over the limit of 104857600", "2^63");
    put_le64(b, ST_MAX_HEADER + 1ull);
    expect_bad(b, sizeof b, "over the limit", "max+1");
    put_le64(b, 57);
    expect_bad(b, sizeof b, "header length 57 runs past the end of the file (8 + 57 > 64 bytes)", "57");
    /* An empty header and an empty object are fine, "{}" followed by garbage is not. */
    put_le64(b, 2);
    st_model m;
    slmc_err err;
    ck_assert_int_eq(st_parse_buffer(&m, b, 10, "empty", &err), 0);
    ck_assert_int_eq(m.n_tensors, 0);
    st_close(&m);
    put_le64(b, 0);
    expect_bad(b, 10, "invalid JSON header", "zero length");
}
END_TEST

START_TEST(test_bad_json) {
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",", 0, "invalid JSON header at offset");
    expect_bad_header("{\"w\":{} garbage", 0, "invalid JSON header");
    expect_bad_header("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                      "invalid JSON header");
    expect_bad_header("{\"a\":{\"dtype\":\"F\xc3\":1}}", 0, "invalid JSON header");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "duplicate");
    expect_bad_header("[1,2]", 0, "not an object");
    expect_bad_header("{\"w\":5}", 0, "tensor w: entry is not a JSON object");
    expect_bad_header("{\"w\":[]}", 0, "entry is not a JSON object");
    expect_bad_header("{\"__metadata__\":[],\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "__metadata__ is not a JSON object");
    expect_bad_header("{\"__metadata__\":{\"n\":5}}", 0, "__metadata__ value of \"n\" is not a string");
}
END_TEST

START_TEST(test_bad_entries) {
    expect_bad_header("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor w: \"dtype\" missing");
    expect_bad_header("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" missing");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor w: \"shape\" missing");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor w: \"data_offsets\" missing");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, "data_offsets");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                      "tensor w: shape[0] is not a non-negative integer");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}",
                      4, "tensor w: the size of its shape overflows");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
                      "overflows");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                      "tensor w has 9 dimensions");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4,
                      "tensor w: data_offsets [0, 8] run past the end of the data (4 bytes)");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
                      "tensor w: data_offsets [4, 0] begin after they end");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
                      "tensor w holds 4 bytes but its dtype and shape need 8");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"v\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[6,10]}}",
                      10, "tensors w [0, 8) and v [6, 10) overlap");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      8, "overlap");
    expect_bad_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                      16, "overlap");
    expect_bad_header("{\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                      "tensor ids has dtype I64, which slmc does not support (F32, F16, BF16)");
    expect_bad_header("{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                      "tensor q has dtype F8_E4M3, which slmc does not support");
    expect_bad_header("{\"q\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "dtype F64");
    expect_bad_header("{\"q\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "dtype BOOL");
}
END_TEST

/* A folder with one small shard s1.safetensors holding tensors a and b, and an index. */
static char *index_case(const char *index_json, const char *want) {
    char *dir = tmpdir_make();
    size_t len;
    uint8_t data[12] = {0};
    uint8_t *b = image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[4,12]}}",
                       data, 12, &len);
    char *s1 = join(dir, "s1.safetensors"), *idx = join(dir, "model.safetensors.index.json");
    ck_assert_int_eq(write_bytes(s1, b, len), 0);
    ck_assert_int_eq(write_bytes(idx, index_json, strlen(index_json)), 0);
    st_model m;
    slmc_err err = {{0}};
    int rc = st_open(&m, dir, &err);
    if (!want) {
        ck_assert_msg(rc == 0, "%s", err.msg);
        ck_assert_int_eq(m.n_tensors, 2);
        ck_assert_int_eq(m.n_shards, 1);
        st_close(&m);
    } else {
        ck_assert_msg(rc == -1, "accepted %s", index_json);
        ck_assert_msg(strstr(err.msg, idx), "message lacks the index name: %s", err.msg);
        ck_assert_msg(strstr(err.msg, want), "message lacks \"%s\": %s", want, err.msg);
        ck_assert_ptr_null(m.tensors);
    }
    free(b);
    free(s1);
    free(idx);
    return dir;
}

START_TEST(test_bad_index) {
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}", NULL));
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
                             "s2.safetensors: cannot open"));
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                             "\"c\":\"s1.safetensors\"}}",
                             "weight_map puts tensor c in s1.safetensors, but that file has no such tensor"));
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\"}}",
                             "tensor b of s1.safetensors is missing from weight_map"));
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":5}}", "not a relative file name"));
    tmpdir_remove(index_case("{\"weight_map\":[]}", "no \"weight_map\" object"));
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",", "invalid JSON at offset"));
}
END_TEST

START_TEST(test_bad_folders) {
    char *dir = tmpdir_make();
    st_model m;
    slmc_err err = {{0}};
    ck_assert_int_eq(st_open(&m, dir, &err), -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "0 other *.safetensors"), "%s", err.msg);

    /* Exactly one *.safetensors is taken; two are ambiguous. */
    uint8_t data[4] = {1, 2, 3, 4};
    size_t len;
    uint8_t *b = image("{\"t\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", data, 4, &len);
    char *p1 = join(dir, "one.safetensors"), *p2 = join(dir, "two.safetensors");
    ck_assert_int_eq(write_bytes(p1, b, len), 0);
    ck_assert_msg(st_open(&m, dir, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.n_tensors, 1);
    ck_assert_int_eq(m.tensors[0].n_dims, 0);
    ck_assert_mem_eq(m.tensors[0].data, data, 4);
    st_close(&m);
    ck_assert_int_eq(write_bytes(p2, b, len), 0);
    ck_assert_int_eq(st_open(&m, dir, &err), -1);
    ck_assert_msg(strstr(err.msg, "2 other *.safetensors"), "%s", err.msg);

    char *nofile = join(dir, "nothing.safetensors");
    ck_assert_int_eq(st_open(&m, nofile, &err), -1);
    ck_assert_msg(strstr(err.msg, nofile), "%s", err.msg);
    free(nofile);
    free(b);
    free(p1);
    free(p2);
    tmpdir_remove(dir);
}
END_TEST

/* Tensor names and __metadata__ must be valid UTF-8: jansson's parser refuses anything else
 * (raw bytes and "\uD800"-style escapes), and the message says UTF-8 and gives the file offset
 * of the bad byte. The writer refuses such names before creating anything. */
START_TEST(test_utf8) {
    /* bad byte at header index 3, so file offset 8 + 3 */
    expect_bad_header("{\"w\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "invalid JSON header at offset 11: not valid UTF-8");
    expect_bad_header("{\"w\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "offset 11: not valid UTF-8");
    expect_bad_header("{\"w\xf4\x90\x80\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "offset 11: not valid UTF-8");
    expect_bad_header("{\"w\xe2\x82\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "offset 11: not valid UTF-8");
    expect_bad_header("{\"w\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "invalid Unicode '\\uD800'");
    expect_bad_header("{\"w\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "NUL byte");
    expect_bad_header("{\"__metadata__\":{\"k\x80\":\"v\"}}", 0, "offset 27: not valid UTF-8");
    expect_bad_header("{\"__metadata__\":{\"k\":\"v\xff\"}}", 0, "offset 31: not valid UTF-8");
    tmpdir_remove(index_case("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\xc0\xaf\":\"s1.safetensors\"}}",
                             "invalid JSON at offset 38: not valid UTF-8"));

    /* non-ASCII UTF-8 is a fine name */
    uint8_t data[4] = {0};
    size_t len;
    uint8_t *b = image("{\"w\xc3\xa9\xf0\x9f\x98\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4,
                       &len);
    st_model m;
    slmc_err err = {{0}};
    ck_assert_msg(st_parse_buffer(&m, b, len, "ok.safetensors", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(st_find(&m, "w\xc3\xa9\xf0\x9f\x98\x80"), 0);
    st_close(&m);
    free(b);

    char *dir = tmpdir_make();
    st_writer w;
    st_out_tensor bad = {"w\xc0\xaf", GGML_TYPE_F32, 1, {2}};
    ck_assert_int_eq(st_writer_open(&w, dir, &bad, 1, 0, NULL, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "not UTF-8"), "%s", err.msg);
    st_out_tensor good = {"w", GGML_TYPE_F32, 1, {2}};
    const char *keys[1] = {"k"}, *values[1] = {"v\xed\xa0\x80"};
    ck_assert_int_eq(st_writer_open(&w, dir, &good, 1, 0, keys, values, 1, &err), -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "not UTF-8"), "%s", err.msg);
    ck_assert_int_eq(count_files(dir), 0);
    tmpdir_remove(dir);
}
END_TEST

/* The fuzzing seeds are valid files (tests run from the project root). */
START_TEST(test_fuzz_seeds) {
    const char *dir = "fuzz/seeds/safetensors";
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s missing", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *p = join(dir, e->d_name);
        st_model m;
        slmc_err err = {{0}};
        ck_assert_msg(st_open(&m, p, &err) == 0, "%s", err.msg);
        ck_assert_int_ge(m.n_tensors, 1);
        st_close(&m);
        free(p);
        n++;
    }
    closedir(d);
    ck_assert_int_ge(n, 3);
}
END_TEST

int main(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_books_folder);
    tcase_add_test(tc, test_books_index);
    tcase_add_test(tc, test_write_small_sharded);
    tcase_add_test(tc, test_write_small_single);
    tcase_add_test(tc, test_rewrite_books_default);
    tcase_add_test(tc, test_rewrite_books_same_shards);
    tcase_add_test(tc, test_writer_misuse);
    tcase_add_test(tc, test_writer_disk_full);
    tcase_add_test(tc, test_good_buffer);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_bad_lengths);
    tcase_add_test(tc, test_bad_json);
    tcase_add_test(tc, test_bad_entries);
    tcase_add_test(tc, test_bad_index);
    tcase_add_test(tc, test_bad_folders);
    tcase_add_test(tc, test_fuzz_seeds);
    tcase_add_test(tc, test_utf8);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
