/* test_gguf.c - GGUF reader and writer, and the atomic outputs they rely on.
 *
 *   roundtrip  every value type and several tensor types written, read back and compared;
 *              the writer's bytes equal an image encoded independently by hand in this file
 *   shared     every GGUF in ../shared parses, with facts checked against llama.cpp's files
 *   identity   reading then re-writing llama.cpp's files gives the same bytes
 *   bad        a corpus of broken images: each fails with a message naming the file
 *   utf8       the UTF-8 validator on a table and on every code point; keys, string values,
 *              string-array elements and tensor names that are not UTF-8 are refused
 *   writer     incomplete writes leave nothing behind; atomic_file / atomic_dir behaviour
 *
 * With SLMC_FUZZ_SEEDS=DIR set, the small valid image and its broken variants are also saved
 * to DIR/gguf/ as seeds for fuzz/fuzz_gguf.c.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/gguf.h"
#include "codec/types.h"
#include "formats/utf8.h"
#include "testutil.h"

/* ---- helpers -------------------------------------------------------------------------- */

/* Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
static void fill_random(uint8_t *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* Number of entries in a folder, not counting . and .. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Write a GGUF with the writer, feeding each tensor in chunks of `chunk` bytes. */
static void write_gguf(const char *path, const meta *m, const gguf_tensor_info *infos, uint64_t n,
                       uint8_t *const *data, size_t chunk) {
    gguf_writer w;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_writer_open(&w, path, m, infos, n, &err) == 0, "%s", err.msg);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t nb = w.tensors[i].nbytes;
        for (uint64_t off = 0; off < nb; off += chunk) {
            size_t k = nb - off < chunk ? (size_t)(nb - off) : chunk;
            ck_assert_msg(gguf_writer_write(&w, data[i] + off, k, &err) == 0, "%s", err.msg);
        }
    }
    ck_assert_msg(gguf_writer_finish(&w, &err) == 0, "%s", err.msg);
}

/* Same value in two metas: type, element type, count and bytes. */
static void assert_kv_equal(const meta_kv *a, const meta_kv *b) {
    ck_assert_str_eq(a->key, b->key);
    ck_assert_int_eq(a->type, b->type);
    if (a->type == GGUF_STR) {
        ck_assert_uint_eq(a->v.str.len, b->v.str.len);
        ck_assert_int_eq(memcmp(a->v.str.s, b->v.str.s, a->v.str.len + 1), 0);
    } else if (a->type == GGUF_ARR) {
        ck_assert_int_eq(a->elem, b->elem);
        ck_assert_uint_eq(a->n, b->n);
        if (a->elem == GGUF_STR) {
            const meta_str *x = a->v.arr, *y = b->v.arr;
            for (uint64_t i = 0; i < a->n; i++) {
                ck_assert_uint_eq(x[i].len, y[i].len);
                ck_assert_int_eq(memcmp(x[i].s, y[i].s, x[i].len + 1), 0);
            }
        } else {
            ck_assert_int_eq(memcmp(a->v.arr, b->v.arr, a->n * gguf_vtype_size(a->elem)), 0);
        }
    } else {
        ck_assert_int_eq(memcmp(a->v.raw, b->v.raw, gguf_vtype_size(a->type)), 0);
    }
}

/* ---- (1) round trip ------------------------------------------------------------------- */

/* A meta holding every value type, scalar and array. */
static void build_all_types_meta(meta *m) {
    meta_init(m);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = -1234567890123ll;
    double f64 = 3.14159265358979;
    ck_assert_int_eq(meta_set_str(m, "general.architecture", "llama"), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.u8", GGUF_U8, &u8), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.i8", GGUF_I8, &i8), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.u16", GGUF_U16, &u16), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.i16", GGUF_I16, &i16), 0);
    ck_assert_int_eq(meta_set_u32(m, "t.u32", 4000000000u), 0);
    ck_assert_int_eq(meta_set_i32(m, "t.i32", -2000000000), 0);
    ck_assert_int_eq(meta_set_f32(m, "t.f32", 1e-6f), 0);
    ck_assert_int_eq(meta_set_bool(m, "t.bool", true), 0);
    ck_assert_int_eq(meta_set_strn(m, "t.str", "bytes \xc3\xbf\x00 inside", 16), 0); /* "ÿ", U+0000 */
    ck_assert_int_eq(meta_set_u64(m, "t.u64", 0xfedcba9876543210ull), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.i64", GGUF_I64, &i64), 0);
    ck_assert_int_eq(meta_set_scalar(m, "t.f64", GGUF_F64, &f64), 0);
    /* arrays of every scalar type, then of strings */
    for (int t = 0; t < GGUF_VTYPE_COUNT; t++) {
        if (t == GGUF_STR || t == GGUF_ARR) continue;
        uint8_t data[5 * 8];
        fill_random(data, sizeof data, (uint64_t)t);
        if (t == GGUF_BOOL)
            for (int i = 0; i < 5; i++) data[i] &= 1;
        char key[32];
        snprintf(key, sizeof key, "arr.%s", gguf_vtype_name((gguf_vtype)t));
        ck_assert_int_eq(meta_set_arr(m, key, (gguf_vtype)t, 5, data), 0);
    }
    const char *strs[4] = {"<unk>", "", "\xe2\x96\x81the", "\xf0\x9f\x98\x80 four bytes"};
    ck_assert_int_eq(meta_set_arr_str(m, "arr.str", 4, strs, NULL), 0);
    ck_assert_int_eq(meta_set_arr(m, "arr.empty", GGUF_F32, 0, NULL), 0);
}

START_TEST(test_roundtrip) {
    char *dir = tmpdir_make();
    ck_assert_ptr_nonnull(dir);
    meta m;
    build_all_types_meta(&m);
    gguf_tensor_info infos[5] = {
        {.name = "w.f32", .type = GGML_TYPE_F32, .n_dims = 2, .ne = {33, 3}},      /* 396 bytes: padded */
        {.name = "w.f16", .type = GGML_TYPE_F16, .n_dims = 3, .ne = {32, 2, 2}},
        {.name = "w.q4_k", .type = GGML_TYPE_Q4_K, .n_dims = 2, .ne = {512, 3}},
        {.name = "w.q8_0", .type = GGML_TYPE_Q8_0, .n_dims = 4, .ne = {64, 1, 3, 2}},
        {.name = "w.bf16", .type = GGML_TYPE_BF16, .n_dims = 1, .ne = {7}},
    };
    const uint64_t expect_nbytes[5] = {396, 256, 6 * 144, 12 * 34, 14};
    uint8_t *data[5];
    for (int i = 0; i < 5; i++) {
        data[i] = malloc(expect_nbytes[i]);
        fill_random(data[i], expect_nbytes[i], 100 + (uint64_t)i);
    }
    char *p1 = path_join(dir, "a.gguf"), *p2 = path_join(dir, "b.gguf");
    write_gguf(p1, &m, infos, 5, data, 1000);
    write_gguf(p2, &m, infos, 5, data, 7); /* odd chunk size: same bytes */

    gguf_file f;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&f, p1, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.version, 3);
    ck_assert_uint_eq(f.alignment, 32);
    ck_assert_uint_eq(f.data_offset % 32, 0);
    ck_assert_uint_eq(f.kv.n, m.n);
    for (size_t i = 0; i < m.n; i++) assert_kv_equal(&f.kv.kv[i], &m.kv[i]);
    ck_assert_uint_eq(f.n_tensors, 5);
    uint64_t expect_off = 0;
    for (int i = 0; i < 5; i++) {
        const gguf_tensor_info *t = &f.tensors[i];
        ck_assert_str_eq(t->name, infos[i].name);
        ck_assert_int_eq(t->type, infos[i].type);
        ck_assert_int_eq(t->n_dims, infos[i].n_dims);
        for (int d = 0; d < 4; d++)
            ck_assert_int_eq(t->ne[d], d < infos[i].n_dims ? infos[i].ne[d] : 1);
        ck_assert_uint_eq(t->nbytes, expect_nbytes[i]);
        ck_assert_uint_eq(t->offset, expect_off); /* offsets assigned in order, 32-aligned */
        ck_assert_uint_eq(t->offset % 32, 0);
        expect_off = (expect_off + t->nbytes + 31) / 32 * 32;
        ck_assert_int_eq(memcmp(gguf_tensor_data(&f, (uint64_t)i), data[i], t->nbytes), 0);
        ck_assert_int_eq(gguf_find_tensor(&f, infos[i].name), i);
    }
    ck_assert_int_eq(gguf_find_tensor(&f, "nope"), -1);
    /* the last tensor is padded too, and padding is zeros */
    ck_assert_uint_eq(f.size, f.data_offset + expect_off);
    for (uint64_t b = f.data_offset + f.tensors[4].offset + 14; b < f.size; b++) ck_assert_uint_eq(f.base[b], 0);
    /* determinism: the second write has the same bytes */
    size_t n1, n2;
    uint8_t *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_int_eq(memcmp(b1, b2, n1), 0);
    /* the file is mode 0644 (mkstemp made it 0600), and no temporary file is left */
    struct stat st;
    ck_assert_int_eq(stat(p1, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0644);
    ck_assert_int_eq(count_entries(dir), 2);

    /* re-writing what was read gives the same bytes again */
    char *p3 = path_join(dir, "c.gguf");
    uint8_t *src[5];
    for (int i = 0; i < 5; i++) src[i] = (uint8_t *)gguf_tensor_data(&f, (uint64_t)i);
    write_gguf(p3, &f.kv, f.tensors, f.n_tensors, src, 1 << 20);
    size_t n3;
    uint8_t *b3 = slurp(p3, &n3);
    ck_assert_uint_eq(n3, n1);
    ck_assert_int_eq(memcmp(b1, b3, n1), 0);

    gguf_close(&f);
    for (int i = 0; i < 5; i++) free(data[i]);
    free(b1), free(b2), free(b3), free(p1), free(p2), free(p3);
    meta_free(&m);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_alignment_key) {
    /* general.alignment = 64 moves every offset to a multiple of 64 */
    char *dir = tmpdir_make();
    meta m;
    meta_init(&m);
    meta_set_u32(&m, "general.alignment", 64);
    gguf_tensor_info infos[2] = {
        {.name = "a", .type = GGML_TYPE_F32, .n_dims = 1, .ne = {3}},
        {.name = "b", .type = GGML_TYPE_F32, .n_dims = 1, .ne = {5}},
    };
    uint8_t a[12], b[20];
    fill_random(a, 12, 1);
    fill_random(b, 20, 2);
    uint8_t *data[2] = {a, b};
    char *p = path_join(dir, "x.gguf");
    write_gguf(p, &m, infos, 2, data, 64);
    gguf_file f;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&f, p, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.alignment, 64);
    ck_assert_uint_eq(f.data_offset % 64, 0);
    ck_assert_uint_eq(f.tensors[1].offset, 64);
    ck_assert_uint_eq(f.size, f.data_offset + 128);
    gguf_close(&f);
    /* a non-u32 or non-power-of-two alignment is refused by the writer */
    gguf_writer w;
    meta_set_u32(&m, "general.alignment", 48);
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "power of two"));
    meta_set_u64(&m, "general.alignment", 32);
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "u32"));
    /* strings that are not UTF-8 are refused by the writer too, before the file exists */
    meta_set_u32(&m, "general.alignment", 64);
    unlink(p);
    meta_set_str(&m, "general.name", "caf\xe9");
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'general.name': not valid UTF-8"));
    ck_assert_int_ne(access(p, F_OK), 0);
    meta_set_str(&m, "general.name", "caf\xc3\xa9");
    const char *toks[2] = {"ok", "\xed\xa0\x80"};
    meta_set_arr_str(&m, "tokenizer.ggml.tokens", 2, toks, NULL);
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "element 1 of 'tokenizer.ggml.tokens'"));
    meta_free(&m);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

/* ---- (2) the files in ../shared ------------------------------------------------------- */

static void open_shared(gguf_file *f, const char *path) {
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(f, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f->version, 3);
    ck_assert_uint_eq(f->alignment, 32);
}

static const gguf_tensor_info *tensor(const gguf_file *f, const char *name) {
    int64_t i = gguf_find_tensor(f, name);
    ck_assert_msg(i >= 0, "tensor %s missing", name);
    return &f->tensors[i];
}

START_TEST(test_shared_books_bf16) {
    char *p = SHARED_OR_SKIP("reference/books-22m-BF16.gguf");
    gguf_file f;
    open_shared(&f, p);
    ck_assert_uint_eq(f.n_tensors, 57);
    ck_assert_uint_eq(f.kv.n, 21);
    ck_assert_uint_eq(f.data_offset, 727200);
    const gguf_tensor_info *t = tensor(&f, "blk.0.attn_k.weight");
    ck_assert_int_eq(t->type, GGML_TYPE_BF16);
    ck_assert_int_eq(t->n_dims, 2);
    ck_assert_int_eq(t->ne[0], 256);
    ck_assert_int_eq(t->ne[1], 128);
    ck_assert_uint_eq(t->nbytes, 256 * 128 * 2);
    t = tensor(&f, "output_norm.weight");
    ck_assert_int_eq(t->type, GGML_TYPE_F32); /* norms stay F32 */
    ck_assert_int_eq(t->n_dims, 1);
    t = tensor(&f, "token_embd.weight");
    ck_assert_int_eq(t->ne[1], 32000);
    ck_assert_str_eq(meta_get_str(&f.kv, "general.architecture"), "llama");
    uint64_t n, v;
    const meta_str *toks = meta_get_arr(&f.kv, "tokenizer.ggml.tokens", GGUF_STR, &n);
    ck_assert_ptr_nonnull(toks);
    ck_assert_uint_eq(n, 32000);
    ck_assert_str_eq(toks[0].s, "<unk>");
    ck_assert_str_eq(toks[1].s, "<s>");
    ck_assert_ptr_nonnull(meta_get_arr(&f.kv, "tokenizer.ggml.scores", GGUF_F32, &n));
    ck_assert_uint_eq(n, 32000);
    ck_assert(meta_get_u64(&f.kv, "llama.block_count", &v) && v == 6);
    ck_assert(meta_get_u64(&f.kv, "llama.embedding_length", &v) && v == 256);
    ck_assert(meta_get_u64(&f.kv, "llama.attention.head_count_kv", &v) && v == 4);
    gguf_close(&f);
    free(p);
}
END_TEST

START_TEST(test_shared_books_quant) {
    char *p = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    gguf_file f;
    open_shared(&f, p);
    ck_assert_uint_eq(f.n_tensors, 57);
    ck_assert_int_eq(tensor(&f, "output.weight")->type, GGML_TYPE_Q6_K);
    ck_assert_int_eq(tensor(&f, "token_embd.weight")->type, GGML_TYPE_Q4_K);
    ck_assert_uint_eq(tensor(&f, "token_embd.weight")->nbytes, 32000 * 144);
    gguf_close(&f);
    free(p);
    p = SHARED_OR_SKIP("reference/books-22m-Q2_K.gguf");
    open_shared(&f, p);
    ck_assert_uint_eq(f.n_tensors, 57);
    ck_assert_int_eq(tensor(&f, "blk.0.attn_k.weight")->type, GGML_TYPE_Q2_K);
    ck_assert_uint_eq(tensor(&f, "blk.0.attn_k.weight")->nbytes, 128 * 84);
    gguf_close(&f);
    free(p);
}
END_TEST

START_TEST(test_shared_stories_and_tiny) {
    char *p = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    gguf_file f;
    open_shared(&f, p);
    ck_assert_uint_eq(f.n_tensors, 48);
    ck_assert_uint_eq(f.kv.n, 19);
    const gguf_tensor_info *t = tensor(&f, "token_embd.weight");
    ck_assert_int_eq(t->type, GGML_TYPE_F32);
    ck_assert_int_eq(t->ne[0], 64);
    ck_assert_int_eq(t->ne[1], 512);
    uint64_t v;
    ck_assert(meta_get_u64(&f.kv, "llama.context_length", &v) && v == 128); /* converter quirk */
    /* output.weight is a copy of token_embd.weight for the shared classifier */
    ck_assert_int_eq(memcmp(gguf_tensor_data(&f, (uint64_t)gguf_find_tensor(&f, "output.weight")),
                            gguf_tensor_data(&f, (uint64_t)gguf_find_tensor(&f, "token_embd.weight")), 64 * 512 * 4), 0);
    gguf_close(&f);
    free(p);

    p = SHARED_OR_SKIP("models/tiny-random/llama-2-tiny-random.gguf");
    open_shared(&f, p);
    ck_assert_uint_eq(f.n_tensors, 12);
    ck_assert_uint_eq(f.kv.n, 18);
    t = tensor(&f, "token_embd.weight");
    ck_assert_int_eq(t->type, GGML_TYPE_F16);
    ck_assert_int_eq(t->ne[0], 8);
    ck_assert_int_eq(t->ne[1], 32000);
    uint64_t n;
    ck_assert_ptr_nonnull(meta_get_arr(&f.kv, "tokenizer.ggml.tokens", GGUF_STR, &n));
    ck_assert_uint_eq(n, 32000);
    gguf_close(&f);
    free(p);
}
END_TEST

START_TEST(test_shared_vocab) {
    /* vocabulary-only files: no tensors, and (written by gguf-py) no padding after the header */
    const char *files[3] = {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-phi-3.gguf",
                            "vocab/ggml-vocab-gpt-2.gguf"};
    const uint64_t vocab[3] = {32000, 32064, 50257};
    for (int i = 0; i < 3; i++) {
        char *p = SHARED_OR_SKIP(files[i]);
        gguf_file f;
        open_shared(&f, p);
        ck_assert_uint_eq(f.n_tensors, 0);
        uint64_t n;
        ck_assert_msg(meta_get_arr(&f.kv, "tokenizer.ggml.tokens", GGUF_STR, &n), "%s", files[i]);
        ck_assert_msg(n == vocab[i], "%s: %llu tokens", files[i], (unsigned long long)n);
        ck_assert_ptr_nonnull(meta_get_str(&f.kv, "tokenizer.ggml.model"));
        gguf_close(&f);
        free(p);
    }
}
END_TEST

/* ---- (3) read-write identity ---------------------------------------------------------- */

/* Re-write `rel` through the writer; return the output bytes (and compare to the input). */
static void rewrite_identity(const char *p, bool expect_identical) {
    char *dir = tmpdir_make();
    char *out = path_join(dir, "rewrite.gguf");
    gguf_file f;
    open_shared(&f, p);
    uint8_t **data = malloc((f.n_tensors ? f.n_tensors : 1) * sizeof *data);
    for (uint64_t i = 0; i < f.n_tensors; i++) data[i] = (uint8_t *)gguf_tensor_data(&f, i);
    write_gguf(out, &f.kv, f.tensors, f.n_tensors, data, 1 << 16);
    size_t n;
    uint8_t *b = slurp(out, &n);
    ck_assert_ptr_nonnull(b);
    if (expect_identical) {
        ck_assert_msg(n == f.size, "%s: %zu bytes written, %llu read", p, n, (unsigned long long)f.size);
        ck_assert_msg(memcmp(b, f.base, n) == 0, "%s: bytes differ", p);
    } else {
        /* header-only files: ours adds zero padding to the alignment, the rest is equal */
        ck_assert_uint_eq(n, (f.size + 31) / 32 * 32);
        ck_assert_int_eq(memcmp(b, f.base, f.size), 0);
        for (size_t i = f.size; i < n; i++) ck_assert_uint_eq(b[i], 0);
    }
    free(b);
    free(data);
    gguf_close(&f);
    free(out);
    tmpdir_remove(dir);
}

START_TEST(test_identity_stories) {
    char *p = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    rewrite_identity(p, true);
    free(p);
}
END_TEST

START_TEST(test_identity_tiny_random) {
    char *p = SHARED_OR_SKIP("models/tiny-random/llama-2-tiny-random.gguf");
    rewrite_identity(p, true);
    free(p);
}
END_TEST

START_TEST(test_identity_quantized) {
    char *p = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf"); /* written by llama-quantize */
    rewrite_identity(p, true);
    free(p);
}
END_TEST

START_TEST(test_identity_vocab_padding) {
    char *p = SHARED_OR_SKIP("vocab/ggml-vocab-llama-spm.gguf");
    rewrite_identity(p, false);
    free(p);
}
END_TEST

/* ---- (4) broken inputs ---------------------------------------------------------------- */

/* A growable byte buffer for encoding a GGUF by hand. */
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(bytes *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put_u64(bytes *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(bytes *b, const char *s, size_t len) {
    put_u64(b, len);
    put(b, s, len);
}
static void patch_u32(uint8_t *p, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void patch_u64(uint8_t *p, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

#define SMALL_KV 6
#define SMALL_T 3

/* Where each field of the hand-made image starts. */
typedef struct layout {
    size_t kv_key[SMALL_KV], kv_type[SMALL_KV], kv_value[SMALL_KV];
    size_t tok_str[3]; /* the three strings of tok.list */
    size_t t_name[SMALL_T], t_ndims[SMALL_T], t_ne[SMALL_T][2], t_type[SMALL_T], t_offset[SMALL_T];
    size_t header_end, data_offset;
} layout;

/* The small valid image: 6 key-values, 3 tensors whose data ends exactly at the end of the
 * file (so that every truncation is an error). Encoded by hand, independent of the writer. */
static bytes small_image(layout *L) {
    bytes b = {0};
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 3);
    put_u64(&b, SMALL_T);
    put_u64(&b, SMALL_KV);
    int k = 0;
#define KEY(s) (L->kv_key[k] = b.n, put_str(&b, s, strlen(s)), L->kv_type[k] = b.n)
    KEY("general.architecture");
    put_u32(&b, GGUF_STR);
    L->kv_value[k++] = b.n;
    put_str(&b, "llama", 5);
    KEY("general.alignment");
    put_u32(&b, GGUF_U32);
    L->kv_value[k++] = b.n;
    put_u32(&b, 32);
    KEY("k.a1");
    put_u32(&b, GGUF_U32);
    L->kv_value[k++] = b.n;
    put_u32(&b, 7);
    KEY("k.a2");
    put_u32(&b, GGUF_I64);
    L->kv_value[k++] = b.n;
    put_u64(&b, (uint64_t)-5);
    KEY("tok.list"); /* the third string is "é", two bytes of UTF-8 */
    put_u32(&b, GGUF_ARR);
    L->kv_value[k++] = b.n;
    put_u32(&b, GGUF_STR);
    put_u64(&b, 3);
    L->tok_str[0] = b.n;
    put_str(&b, "<s>", 3);
    L->tok_str[1] = b.n;
    put_str(&b, "hi", 2);
    L->tok_str[2] = b.n;
    put_str(&b, "\xc3\xa9", 2);
    KEY("num.list");
    put_u32(&b, GGUF_ARR);
    L->kv_value[k++] = b.n;
    put_u32(&b, GGUF_U32);
    put_u64(&b, 3);
    put_u32(&b, 1), put_u32(&b, 2), put_u32(&b, 3);
#undef KEY
    const char *names[SMALL_T] = {"t.a", "t.b", "t.c"};
    const uint32_t types[SMALL_T] = {GGML_TYPE_F32, GGML_TYPE_Q8_0, GGML_TYPE_F16};
    const uint64_t ne[SMALL_T][2] = {{8, 2}, {32, 1}, {16, 2}};
    const uint64_t offs[SMALL_T] = {0, 64, 128}; /* nbytes 64, 34 (+30 padding), 64 */
    for (int t = 0; t < SMALL_T; t++) {
        L->t_name[t] = b.n;
        put_str(&b, names[t], 3);
        L->t_ndims[t] = b.n;
        put_u32(&b, t == 1 ? 1 : 2);
        L->t_ne[t][0] = b.n;
        put_u64(&b, ne[t][0]);
        L->t_ne[t][1] = b.n;
        if (t != 1) put_u64(&b, ne[t][1]);
        L->t_type[t] = b.n;
        put_u32(&b, types[t]);
        L->t_offset[t] = b.n;
        put_u64(&b, offs[t]);
    }
    L->header_end = b.n;
    L->data_offset = (b.n + 31) / 32 * 32;
    uint8_t zero[32] = {0}, data[192];
    put(&b, zero, L->data_offset - b.n);
    fill_random(data, sizeof data, 7);
    memset(data + 64 + 34, 0, 30); /* padding after t.b */
    put(&b, data, sizeof data);
    return b;
}

/* Parse a copy of exactly `n` bytes (so ASan catches any read past the end). */
static int parse_copy(const uint8_t *img, size_t n, const char *name, slmc_err *err) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, img, n);
    gguf_file f;
    err->msg[0] = '\0';
    int rc = gguf_parse_buffer(&f, n ? copy : NULL, n, name, err);
    if (rc == 0) gguf_close(&f);
    free(copy);
    return rc;
}

/* Save a fuzzing seed when SLMC_FUZZ_SEEDS is set. */
static void save_seed(const char *name, const uint8_t *p, size_t n) {
    const char *root = getenv("SLMC_FUZZ_SEEDS");
    if (!root || !*root) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/gguf", root);
    mkdir(root, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/gguf/%s", root, name);
    write_bytes(path, p, n);
}

/* A mutation must fail with a message that names the file and, when given, contains `want`. */
static void expect_bad(const char *name, const uint8_t *img, size_t n, const char *want) {
    slmc_err err;
    char file[128];
    snprintf(file, sizeof file, "bad-%s.gguf", name);
    int rc = parse_copy(img, n, file, &err);
    ck_assert_msg(rc == -1, "%s: accepted", file);
    ck_assert_msg(strstr(err.msg, file) == err.msg && strlen(err.msg) > strlen(file) + 2,
                  "%s: message '%s'", file, err.msg);
    if (want) ck_assert_msg(strstr(err.msg, want) != NULL, "%s: '%s' lacks '%s'", file, err.msg, want);
    save_seed(file, img, n);
}

START_TEST(test_small_image_valid) {
    layout L;
    bytes b = small_image(&L);
    slmc_err err;
    ck_assert_msg(parse_copy(b.p, b.n, "small.gguf", &err) == 0, "%s", err.msg);
    save_seed("small.gguf", b.p, b.n);
    gguf_file f;
    ck_assert_int_eq(gguf_parse_buffer(&f, b.p, b.n, "small.gguf", &err), 0);
    ck_assert_uint_eq(f.data_offset, L.data_offset);
    ck_assert_uint_eq(f.tensors[1].nbytes, 34);
    const meta_str *s = meta_get_arr(&f.kv, "tok.list", GGUF_STR, NULL);
    ck_assert_int_eq(memcmp(s[2].s, "\xc3\xa9", 3), 0);
    /* the writer, given what was read, produces exactly the hand-made bytes */
    char *dir = tmpdir_make();
    char *p = path_join(dir, "small.gguf");
    uint8_t *data[SMALL_T];
    for (int i = 0; i < SMALL_T; i++) data[i] = (uint8_t *)gguf_tensor_data(&f, (uint64_t)i);
    write_gguf(p, &f.kv, f.tensors, f.n_tensors, data, 5);
    size_t n;
    uint8_t *w = slurp(p, &n);
    ck_assert_uint_eq(n, b.n);
    ck_assert_int_eq(memcmp(w, b.p, n), 0);
    free(w);
    free(p);
    tmpdir_remove(dir);
    gguf_close(&f);
    free(b.p);
}
END_TEST

START_TEST(test_truncations) {
    layout L;
    bytes b = small_image(&L);
    /* every prefix is invalid, since the last tensor ends at the end of the file */
    for (size_t n = 0; n < b.n; n++) {
        char name[32];
        snprintf(name, sizeof name, "trunc-%zu", n);
        expect_bad(name, b.p, n, NULL);
    }
    /* at the header boundaries the message says what was cut */
    expect_bad("trunc-magic", b.p, 2, "magic");
    expect_bad("trunc-version", b.p, 4, "version");
    expect_bad("trunc-counts", b.p, 12, "count");
    /* a short file cannot hold 3 tensor infos, so the counts are refused first */
    expect_bad("trunc-kv-counted", b.p, L.kv_type[2], "tensor count 3 at offset 8 cannot fit");
    /* with no tensors announced, cuts inside the key-values are seen where they happen */
    patch_u64(b.p, 8, 0);
    expect_bad("trunc-key", b.p, L.kv_key[2] + 3, "key");
    expect_bad("trunc-type", b.p, L.kv_type[2], "value type");
    expect_bad("trunc-value", b.p, L.kv_value[2] + 1, "value");
    expect_bad("trunc-arr", b.p, L.kv_value[4] + 6, "array length");
    expect_bad("trunc-arrstr", b.p, L.kv_value[4] + 12 + 28, "array string"); /* in the 3rd */
    patch_u64(b.p, 8, SMALL_T);
    expect_bad("trunc-tname", b.p, L.t_name[0] + 4, "tensor name");
    expect_bad("trunc-ndims", b.p, L.t_ndims[0] + 2, "n_dims");
    expect_bad("trunc-ne", b.p, L.t_ne[0][1], "dimension");
    expect_bad("trunc-ttype", b.p, L.t_type[2], "tensor type");
    expect_bad("trunc-offset", b.p, L.t_offset[2] + 7, "tensor offset");
    expect_bad("trunc-data", b.p, L.data_offset + 100, "past the end");
    free(b.p);
}
END_TEST

/* Apply one mutation to a fresh copy of the small image and expect a failure. */
#define MUTATE(name, want, code)                                                             \
    do {                                                                                     \
        layout L;                                                                            \
        bytes b = small_image(&L);                                                           \
        uint8_t *p = b.p;                                                                    \
        (void)p;                                                                             \
        code;                                                                                \
        expect_bad(name, b.p, b.n, want);                                                    \
        free(b.p);                                                                           \
    } while (0)

START_TEST(test_mutations) {
    MUTATE("magic", "magic", p[0] ^= 0x20);
    MUTATE("version1", "version 1", patch_u32(p, 4, 1));
    MUTATE("version4", "version 4", patch_u32(p, 4, 4));
    MUTATE("huge-ntensors", "tensor count", patch_u64(p, 8, 1ull << 62));
    MUTATE("huge-nkv", "key-value count", patch_u64(p, 16, 1ull << 62));
    MUTATE("huge-nkv-2", "key-value count", patch_u64(p, 16, UINT64_MAX));
    MUTATE("more-kv", NULL, patch_u64(p, 16, SMALL_KV + 1));
    MUTATE("more-tensors", NULL, patch_u64(p, 8, SMALL_T + 1));
    MUTATE("huge-keylen", "length", patch_u64(p, L.kv_key[0], 1ull << 62));
    MUTATE("huge-strlen", "length", patch_u64(p, L.kv_value[0], 1ull << 62));
    MUTATE("huge-strlen-2", "length", patch_u64(p, L.kv_value[0], UINT64_MAX));
    MUTATE("huge-arr-str", "does not fit", patch_u64(p, L.kv_value[4] + 4, 1ull << 62));
    MUTATE("huge-arr-u32", "does not fit", patch_u64(p, L.kv_value[5] + 4, 1ull << 62));
    MUTATE("huge-arr-u32-2", "does not fit", patch_u64(p, L.kv_value[5] + 4, UINT64_MAX / 2 + 2));
    MUTATE("vtype-13", "unknown value type 13", patch_u32(p, L.kv_type[2], 13));
    MUTATE("vtype-huge", "unknown value type", patch_u32(p, L.kv_type[2], 0xffffffffu));
    MUTATE("elem-unknown", "unknown array element type", patch_u32(p, L.kv_value[5], 40));
    MUTATE("nested-array", "nested", patch_u32(p, L.kv_value[5], GGUF_ARR));
    MUTATE("key-nul", "NUL", p[L.kv_key[2] + 8 + 1] = 0);
    MUTATE("ndims-0", "n_dims 0", patch_u32(p, L.t_ndims[0], 0));
    MUTATE("ndims-5", "n_dims 5", patch_u32(p, L.t_ndims[0], 5));
    MUTATE("ne-overflow", "overflow", (patch_u64(p, L.t_ne[0][0], 1ull << 40), patch_u64(p, L.t_ne[0][1], 1ull << 40)));
    MUTATE("ne-negative", "out of range", patch_u64(p, L.t_ne[0][1], 1ull << 63));
    MUTATE("ne-huge-bytes", NULL, patch_u64(p, L.t_ne[0][1], 1ull << 61)); /* 2^64 bytes */
    MUTATE("ttype-31", "unknown tensor type 31", patch_u32(p, L.t_type[0], 31));
    MUTATE("ttype-4", "unknown tensor type 4", patch_u32(p, L.t_type[0], 4));
    MUTATE("ttype-40", "unknown tensor type 40", patch_u32(p, L.t_type[0], 40));
    MUTATE("ttype-huge", "unknown tensor type", patch_u32(p, L.t_type[0], 0x80000001u));
    MUTATE("block-size", "block size", patch_u32(p, L.t_type[0], GGML_TYPE_Q4_K)); /* ne0 = 8 */
    MUTATE("offset-misaligned", "not a multiple of the alignment", patch_u64(p, L.t_offset[1], 65));
    MUTATE("offset-past-end", "past the end", patch_u64(p, L.t_offset[2], 1ull << 40));
    MUTATE("offset-huge", "past the end", patch_u64(p, L.t_offset[2], UINT64_MAX - 31));
    MUTATE("offset-tail", "past the end", patch_u64(p, L.t_offset[2], 160));
    MUTATE("overlap", "overlaps", patch_u64(p, L.t_offset[1], 32));
    MUTATE("overlap-same", "overlaps", patch_u64(p, L.t_offset[2], 0));
    MUTATE("dup-name", "duplicate tensor name 't.a'", p[L.t_name[2] + 8 + 2] = 'a');
    MUTATE("dup-key", "duplicate key 'k.a1'", p[L.kv_key[3] + 8 + 3] = '1');
    MUTATE("align-0", "alignment 0", patch_u32(p, L.kv_value[1], 0));
    MUTATE("align-3", "alignment 3", patch_u32(p, L.kv_value[1], 3));
    MUTATE("align-type", "general.alignment has type", patch_u32(p, L.kv_type[1], GGUF_I32));
    /* a larger power-of-two alignment makes the existing offsets misaligned */
    MUTATE("align-4096", "alignment", patch_u32(p, L.kv_value[1], 4096));
}
END_TEST

START_TEST(test_open_errors) {
    char *dir = tmpdir_make();
    slmc_err err;
    gguf_file f;
    char *p = path_join(dir, "empty.gguf");
    ck_assert_int_eq(write_bytes(p, "", 0), 0);
    ck_assert_int_eq(gguf_open(&f, p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    ck_assert_ptr_nonnull(strstr(err.msg, "magic"));
    free(p);
    p = path_join(dir, "missing.gguf");
    ck_assert_int_eq(gguf_open(&f, p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "No such file"));
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    free(p);
    ck_assert_int_eq(gguf_open(&f, dir, &err), -1); /* a folder */
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
    tmpdir_remove(dir);
}
END_TEST

/* ---- (5) UTF-8 ------------------------------------------------------------------------ */

/* Bytes and the length of their longest valid UTF-8 prefix (len when all valid). The
 * literals are split ("\xc3" "a") where a letter would otherwise extend the hex escape. */
typedef struct utf8_case {
    const char *s;
    size_t len, valid;
} utf8_case;

#define U8_OK(lit) {lit, sizeof lit - 1, sizeof lit - 1}
#define U8_BAD(lit, valid) {lit, sizeof lit - 1, valid}

START_TEST(test_utf8_table) {
    static const utf8_case cases[] = {
        U8_OK(""), U8_OK("a"), U8_OK("\x00"), U8_OK("\x7f"),
        U8_OK("\xc2\x80"), U8_OK("\xdf\xbf"),                                       /* U+0080, U+07FF */
        U8_OK("\xe0\xa0\x80"), U8_OK("\xe2\x82\xac"), U8_OK("\xed\x9f\xbf"),         /* U+0800, €, U+D7FF */
        U8_OK("\xee\x80\x80"), U8_OK("\xef\xbf\xbf"),                               /* U+E000, U+FFFF */
        U8_OK("\xf0\x90\x80\x80"), U8_OK("\xf0\x9f\x98\x80"), U8_OK("\xf4\x8f\xbf\xbf"), /* ..U+10FFFF */
        U8_OK("plain ASCII, longer than eight bytes: \xe2\x96\x81the \xf0\x9f\x98\x80!"),
        U8_BAD("\xc0\xaf", 0), U8_BAD("\xc1\xbf", 0),                   /* overlong 2-byte forms */
        U8_BAD("\xe0\x80\xaf", 0), U8_BAD("\xe0\x9f\xbf", 0),           /* overlong 3-byte forms */
        U8_BAD("\xf0\x80\x80\xaf", 0), U8_BAD("\xf0\x8f\xbf\xbf", 0),   /* overlong 4-byte forms */
        U8_BAD("\xed\xa0\x80", 0), U8_BAD("\xed\xbf\xbf", 0),           /* surrogates D800, DFFF */
        U8_BAD("\xf4\x90\x80\x80", 0), U8_BAD("\xf5\x80\x80\x80", 0),   /* above U+10FFFF */
        U8_BAD("\xfe", 0), U8_BAD("\xff", 0),
        U8_BAD("\xe2\x82", 0), U8_BAD("\xf0\x9f\x98", 0), U8_BAD("\xc3", 0), /* cut by the end */
        U8_BAD("\xe2\x82" "a", 0), U8_BAD("\xc3" "a", 0),              /* cut by an ASCII byte */
        U8_BAD("\x80", 0), U8_BAD("\xbf", 0), U8_BAD("a\xc3\xa9\xa9", 3), /* lone continuation */
        /* the first bad byte after the 8-bytes-at-once fast path */
        U8_BAD("abcdefgh\x80", 8), U8_BAD("abcdefghijklmnop\xe2\x82", 16),
        U8_BAD("ab\xed\xa0\x80" "cdefghijkl", 2), U8_BAD("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc0\xaf", 8),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const utf8_case *c = &cases[i];
        size_t got = utf8_valid_prefix(c->s, c->len);
        ck_assert_msg(got == c->valid, "case %zu: valid prefix %zu, expected %zu", i, got, c->valid);
        ck_assert_msg(utf8_valid(c->s, c->len) == (c->valid == c->len), "case %zu", i);
    }
    ck_assert(utf8_valid(NULL, 0));
}
END_TEST

/* cp encoded in exactly n bytes; n longer than needed gives an overlong form. */
static void utf8_encode(uint32_t cp, int n, uint8_t *out) {
    static const uint8_t lead[5] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    for (int k = n - 1; k > 0; k--) {
        out[k] = (uint8_t)(0x80 | (cp & 0x3F));
        cp >>= 6;
    }
    out[0] = (uint8_t)(lead[n] | cp);
}

START_TEST(test_utf8_every_code_point) {
    /* Every value a 4-byte sequence can carry: scalar values are valid, surrogates and values
     * above U+10FFFF are not, and neither are overlong forms or cut sequences. Failures are
     * counted (an assert per case would be slow in Check) and the first one is reported. */
    long bad = 0;
    uint32_t first = 0;
    uint8_t b[4];
    for (uint32_t cp = 0; cp <= 0x1FFFFF; cp++) {
        int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        bool scalar = cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        bool ok = true;
        utf8_encode(cp, n, b);
        ok &= utf8_valid(b, (size_t)n) == scalar;
        if (n > 1) ok &= utf8_valid_prefix(b, (size_t)n - 1) == 0;
        for (int m = n + 1; m <= 4; m++) {
            utf8_encode(cp, m, b);
            ok &= utf8_valid_prefix(b, (size_t)m) == 0;
        }
        if (!ok && bad++ == 0) first = cp;
    }
    ck_assert_msg(bad == 0, "%ld code points wrong, the first U+%04X", bad, (unsigned)first);
}
END_TEST

/* A mutated small image that must fail on UTF-8: through gguf_parse_buffer (which also saves
 * it as a fuzzing seed) and through gguf_open on a file, whose path starts the message. */
static void expect_not_utf8(const char *name, const uint8_t *img, size_t n, const char *want) {
    expect_bad(name, img, n, want);
    char *dir = tmpdir_make();
    char file[128];
    snprintf(file, sizeof file, "%s.gguf", name);
    char *p = path_join(dir, file);
    ck_assert_int_eq(write_bytes(p, img, n), 0);
    gguf_file f;
    slmc_err err;
    ck_assert_int_eq(gguf_open(&f, p, &err), -1);
    ck_assert_msg(strstr(err.msg, p) == err.msg, "%s: message '%s'", name, err.msg);
    ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "UTF-8"), "%s: '%s' lacks '%s'", name, err.msg, want);
    ck_assert_ptr_null(strchr(err.msg, '\n'));
    free(p);
    tmpdir_remove(dir);
}

/* Mutate a fresh small image with `code` (p is its bytes, L its layout), then expect_not_utf8
 * with the message "offset <bad>: <what>". */
#define NOT_UTF8(name, bad, what, code)                                                      \
    do {                                                                                     \
        layout L;                                                                            \
        bytes b = small_image(&L);                                                           \
        uint8_t *p = b.p;                                                                    \
        code;                                                                                \
        char want_[160];                                                                     \
        snprintf(want_, sizeof want_, "offset %zu: %s", (size_t)(bad), what);                \
        expect_not_utf8(name, b.p, b.n, want_);                                              \
        free(b.p);                                                                           \
    } while (0)

START_TEST(test_utf8_rejected) {
    /* metadata keys: "k.a1" -> "k\xC0a1" (overlong lead), "general..." -> a surrogate */
    NOT_UTF8("utf8-key", L.kv_key[2] + 8 + 1, "metadata key is not valid UTF-8", p[L.kv_key[2] + 8 + 1] = 0xC0);
    NOT_UTF8("utf8-key-surrogate", L.kv_key[0] + 8, "metadata key is not valid UTF-8",
             memcpy(p + L.kv_key[0] + 8, "\xed\xa0\x80", 3));
    /* a string value: "llama" -> "llam\xE2", a sequence cut by the end of the string */
    NOT_UTF8("utf8-value", L.kv_value[0] + 8 + 4,
             "string value of key 'general.architecture' is not valid UTF-8", p[L.kv_value[0] + 8 + 4] = 0xE2);
    /* string-array elements: "<s>" -> "<\x80>", "é" -> "\xC3x" */
    NOT_UTF8("utf8-elem-0", L.tok_str[0] + 8 + 1, "element 0 of 'tok.list' is not valid UTF-8",
             p[L.tok_str[0] + 8 + 1] = 0x80);
    NOT_UTF8("utf8-elem-2", L.tok_str[2] + 8, "element 2 of 'tok.list' is not valid UTF-8",
             p[L.tok_str[2] + 8 + 1] = 'x');
    /* a tensor name: "t.b" -> "t.\xFF" */
    NOT_UTF8("utf8-tensor-name", L.t_name[1] + 8 + 2, "tensor name is not valid UTF-8",
             p[L.t_name[1] + 8 + 2] = 0xFF);
    /* names are C strings printed in messages: control characters are refused */
    {
        layout at; /* the same layout MUTATE sees, for the expected offsets */
        bytes b = small_image(&at);
        free(b.p);
        char want[128];
        snprintf(want, sizeof want, "offset %zu: tensor name contains the control character 0x00 (NUL)",
                 at.t_name[1] + 8 + 1);
        MUTATE("tensor-name-nul", want, p[L.t_name[1] + 8 + 1] = 0);
        snprintf(want, sizeof want, "offset %zu: metadata key contains the control character 0x0a",
                 at.kv_key[2] + 8 + 3);
        MUTATE("key-newline", want, p[L.kv_key[2] + 8 + 3] = '\n');
        MUTATE("key-del", "control character 0x7f", p[L.kv_key[2] + 8 + 3] = 0x7F);
    }
}
END_TEST

START_TEST(test_utf8_accepted) {
    /* non-ASCII UTF-8 in a key and a tensor name, and U+0000 inside a string value */
    layout L;
    bytes b = small_image(&L);
    memcpy(b.p + L.kv_key[2] + 8 + 1, "\xc3\xa9", 2);       /* "k.a1" -> "ké1" */
    memcpy(b.p + L.t_name[0] + 8 + 1, "\xc2\xb7", 2);       /* "t.a" -> "t·" */
    b.p[L.kv_value[0] + 8 + 2] = 0;                         /* "llama" -> "ll\0ma" */
    gguf_file f;
    slmc_err err;
    ck_assert_msg(gguf_parse_buffer(&f, b.p, b.n, "ok.gguf", &err) == 0, "%s", err.msg);
    ck_assert_ptr_nonnull(meta_find(&f.kv, "k\xc3\xa9" "1"));
    ck_assert_int_eq(gguf_find_tensor(&f, "t\xc2\xb7"), 0);
    const meta_kv *arch = meta_find(&f.kv, "general.architecture");
    ck_assert_uint_eq(arch->v.str.len, 5);
    ck_assert_int_eq(memcmp(arch->v.str.s, "ll\0ma", 6), 0);
    gguf_close(&f);
    free(b.p);
}
END_TEST

/* A 262144-token vocabulary (Gemma's size) of 1- to 4-byte characters parses; the same with
 * its last token cut in the middle of a character is refused, naming that element. (Not saved
 * as a fuzzing seed: 4 MB would slow the fuzzer down.) */
START_TEST(test_utf8_large_vocab) {
    const uint64_t n = 262144;
    bytes b = {0};
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_str(&b, "tokenizer.ggml.tokens", 21);
    put_u32(&b, GGUF_ARR);
    put_u32(&b, GGUF_STR);
    put_u64(&b, n);
    static const char *pieces[4] = {"\xe2\x96\x81", "the", "\xc3\xa9", "\xf0\x9f\x98\x80"};
    for (uint64_t i = 0; i < n; i++) {
        char tok[64];
        int len = snprintf(tok, sizeof tok, "%s%llu%s", pieces[i % 4], (unsigned long long)i, pieces[(i / 4) % 4]);
        put_str(&b, tok, (size_t)len);
    }
    slmc_err err;
    ck_assert_msg(parse_copy(b.p, b.n, "vocab.gguf", &err) == 0, "%s", err.msg);
    /* the last token ends in "\xf0\x9f\x98\x80": replace its last byte */
    b.p[b.n - 1] = 'x';
    ck_assert_int_eq(parse_copy(b.p, b.n, "vocab.gguf", &err), -1);
    char want[128];
    snprintf(want, sizeof want, "vocab.gguf: offset %zu: element 262143 of 'tokenizer.ggml.tokens' is not valid UTF-8",
             b.n - 4);
    ck_assert_str_eq(err.msg, want);
    free(b.p);
}
END_TEST

/* ---- (6) writer failures and atomic outputs ------------------------------------------- */

START_TEST(test_writer_incomplete) {
    char *dir = tmpdir_make();
    char *p = path_join(dir, "out.gguf");
    meta m;
    meta_init(&m);
    meta_set_str(&m, "general.architecture", "llama");
    gguf_tensor_info infos[2] = {
        {.name = "a", .type = GGML_TYPE_F32, .n_dims = 1, .ne = {4}},
        {.name = "b", .type = GGML_TYPE_F32, .n_dims = 1, .ne = {4}},
    };
    uint8_t data[32] = {1, 2, 3};
    slmc_err err;
    gguf_writer w;
    /* tensor b is never written */
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), 0);
    ck_assert_int_eq(count_entries(dir), 1); /* the temporary file */
    ck_assert_int_eq(gguf_writer_write(&w, data, 16, &err), 0);
    ck_assert_int_eq(gguf_writer_finish(&w, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'b'"));
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    gguf_writer_abort(&w); /* safe after a failed finish */
    ck_assert(!file_exists(p));
    ck_assert_int_eq(count_entries(dir), 0);

    /* a chunk may not cross the end of a tensor; abort removes the temporary file */
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, infos, 2, &err), 0);
    ck_assert_int_eq(gguf_writer_write(&w, data, 20, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "crosses the end of tensor 'a'"));
    ck_assert_int_eq(gguf_writer_write(&w, data, 16, &err), 0);
    ck_assert_int_eq(gguf_writer_write(&w, data, 16, &err), 0);
    ck_assert_int_eq(gguf_writer_write(&w, data, 1, &err), -1); /* nothing left to write */
    ck_assert_ptr_nonnull(strstr(err.msg, "after the last tensor"));
    gguf_writer_abort(&w);
    gguf_writer_abort(&w); /* twice is fine */
    ck_assert_int_eq(count_entries(dir), 0);

    /* bad tensor descriptions are refused before anything is created */
    gguf_tensor_info bad[2] = {infos[0], infos[0]};
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, bad, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "duplicate tensor name 'a'"));
    bad[1] = (gguf_tensor_info){.name = "q", .type = GGML_TYPE_Q4_K, .n_dims = 1, .ne = {100}};
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, bad, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "block size"));
    bad[1] = (gguf_tensor_info){.name = "q", .type = 31, .n_dims = 1, .ne = {32}};
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, bad, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown tensor type 31"));
    ck_assert_int_eq(count_entries(dir), 0);

    /* zero tensors: header only, padded to 32 */
    ck_assert_int_eq(gguf_writer_open(&w, p, &m, NULL, 0, &err), 0);
    ck_assert_int_eq(gguf_writer_finish(&w, &err), 0);
    gguf_file f;
    ck_assert_msg(gguf_open(&f, p, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(f.n_tensors, 0);
    ck_assert_uint_eq(f.size % 32, 0);
    ck_assert_str_eq(meta_get_str(&f.kv, "general.architecture"), "llama");
    gguf_close(&f);
    meta_free(&m);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_atomic_file) {
    char *dir = tmpdir_make();
    char *p = path_join(dir, "f.bin");
    slmc_err err;
    atomic_file af;
    /* commit: nothing at the path until then, then exactly the bytes written */
    ck_assert_int_eq(af_open(&af, p, &err), 0);
    ck_assert_ptr_nonnull(strstr(af.tmp_path, "/.f.bin.tmp-"));
    size_t big = (9u << 20) + 123; /* larger than the buffer, in uneven pieces */
    uint8_t *src = malloc(big);
    fill_random(src, big, 3);
    ck_assert_int_eq(af_write(&af, src, 10, &err), 0);
    ck_assert_int_eq(af_pad(&af, 5, &err), 0);
    ck_assert_int_eq(af_write(&af, src + 15, big - 15, &err), 0);
    ck_assert_uint_eq(af.written, big);
    ck_assert(!file_exists(p));
    ck_assert(file_exists(af.tmp_path));
    ck_assert_int_eq(af_commit(&af, &err), 0);
    af_abort(&af); /* safe after commit: must not remove the result */
    size_t n;
    uint8_t *got = slurp(p, &n);
    ck_assert_uint_eq(n, big);
    for (int i = 10; i < 15; i++) src[i] = 0;
    ck_assert_int_eq(memcmp(got, src, big), 0);
    free(got);
    ck_assert_int_eq(count_entries(dir), 1);
    /* abort: the old file stays as it was, no temporary is left */
    ck_assert_int_eq(af_open(&af, p, &err), 0);
    ck_assert_int_eq(af_write(&af, "xyz", 3, &err), 0);
    af_abort(&af);
    ck_assert_int_eq(count_entries(dir), 1);
    got = slurp(p, &n);
    ck_assert_uint_eq(n, big);
    free(got);
    /* overwrite by commit */
    ck_assert_int_eq(af_open(&af, p, &err), 0);
    ck_assert_int_eq(af_write(&af, "xyz", 3, &err), 0);
    ck_assert_int_eq(af_commit(&af, &err), 0);
    got = slurp(p, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(memcmp(got, "xyz", 3), 0);
    free(got);
    /* a folder that does not exist */
    char *q = path_join(dir, "no/such/f.bin");
    ck_assert_int_eq(af_open(&af, q, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, q));
    ck_assert_ptr_nonnull(strstr(err.msg, "No such file"));
    af_abort(&af); /* safe after a failed open */
    free(q);
    free(src);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_atomic_file_write_error) {
    /* a file size limit makes write fail with EFBIG: the message names the file and the cause */
    char *dir = tmpdir_make();
    char *p = path_join(dir, "limited.bin");
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 20;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    slmc_err err;
    atomic_file af;
    ck_assert_int_eq(af_open(&af, p, &err), 0);
    size_t n = 6u << 20;
    uint8_t *zeros = calloc(1, n);
    int rc = af_write(&af, zeros, n, &err);
    if (rc == 0) rc = af_commit(&af, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err.msg, p) == err.msg, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, strerror(EFBIG)) != NULL, "%s", err.msg);
    af_abort(&af);
    ck_assert(!file_exists(p));
    ck_assert_int_eq(count_entries(dir), 0);
    free(zeros);
    free(p);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_atomic_dir_and_helpers) {
    char *dir = tmpdir_make();
    char *target = path_join(dir, "out");
    slmc_err err;
    atomic_dir ad;
    /* target missing: the temporary folder is renamed into place */
    ck_assert_int_eq(ad_open(&ad, target, &err), 0);
    ck_assert(is_dir(ad.tmp_path));
    ck_assert_ptr_nonnull(strstr(ad.tmp_path, "/.out.tmp-"));
    char *f1 = ad_file(&ad, "config.json");
    ck_assert_int_eq(write_bytes(f1, "{}", 2), 0);
    free(f1);
    ck_assert(!file_exists(target));
    ck_assert_int_eq(ad_commit(&ad, &err), 0);
    ck_assert(is_dir(target));
    char *c = path_join(target, "config.json");
    ck_assert(file_exists(c));
    ck_assert_int_eq(count_entries(dir), 1);
    /* target exists with other files: ours are moved in, theirs stay, ours replace same names */
    char *keep = path_join(target, "keep.txt");
    ck_assert_int_eq(write_bytes(keep, "k", 1), 0);
    ck_assert_int_eq(ad_open(&ad, target, &err), 0);
    f1 = ad_file(&ad, "config.json");
    ck_assert_int_eq(write_bytes(f1, "{\"a\":1}", 7), 0);
    free(f1);
    f1 = ad_file(&ad, "model.safetensors");
    ck_assert_int_eq(write_bytes(f1, "data", 4), 0);
    free(f1);
    ck_assert_int_eq(ad_commit(&ad, &err), 0);
    ck_assert_int_eq(count_entries(target), 3);
    ck_assert_int_eq(count_entries(dir), 1);
    size_t n;
    uint8_t *got = slurp(c, &n);
    ck_assert_uint_eq(n, 7);
    free(got);
    /* abort removes the temporary folder and everything in it */
    ck_assert_int_eq(ad_open(&ad, target, &err), 0);
    f1 = ad_file(&ad, "junk");
    ck_assert_int_eq(write_bytes(f1, "j", 1), 0);
    free(f1);
    ad_abort(&ad);
    ad_abort(&ad);
    ck_assert_int_eq(count_entries(dir), 1);
    ck_assert_int_eq(count_entries(target), 3);
    /* an empty existing folder is replaced */
    char *empty = path_join(dir, "empty");
    ck_assert_int_eq(mkdir(empty, 0755), 0);
    ck_assert_int_eq(ad_open(&ad, empty, &err), 0);
    f1 = ad_file(&ad, "x");
    write_bytes(f1, "x", 1);
    free(f1);
    ck_assert_int_eq(ad_commit(&ad, &err), 0);
    ck_assert_int_eq(count_entries(empty), 1);
    /* same_file, map_file of an empty file, read_small_file limits */
    ck_assert(same_file(c, c));
    ck_assert(!same_file(c, keep));
    ck_assert(!same_file(c, "/nonexistent/x"));
    char *e = path_join(dir, "zero");
    write_bytes(e, "", 0);
    mapped_file mf;
    ck_assert_int_eq(map_file(&mf, e, &err), 0);
    ck_assert_ptr_null(mf.data);
    ck_assert_uint_eq(mf.size, 0);
    unmap_file(&mf);
    ck_assert_int_eq(map_file(&mf, keep, &err), 0);
    ck_assert_uint_eq(mf.size, 1);
    ck_assert_uint_eq(mf.data[0], 'k');
    unmap_file(&mf);
    char *s;
    size_t len;
    ck_assert_int_eq(read_small_file(c, 100, &s, &len, &err), 0);
    ck_assert_uint_eq(len, 7);
    ck_assert_str_eq(s, "{\"a\":1}");
    free(s);
    ck_assert_int_eq(read_small_file(c, 6, &s, &len, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, c));
    char *j = path_join("a/", "b");
    ck_assert_str_eq(j, "a/b");
    free(j);
    j = path_join("a", "b");
    ck_assert_str_eq(j, "a/b");
    free(j);
    free(e), free(empty), free(keep), free(c), free(target);
    tmpdir_remove(dir);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_alignment_key);
    suite_add_tcase(s, tc);
    tc = tcase_create("shared");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_shared_books_bf16);
    tcase_add_test(tc, test_shared_books_quant);
    tcase_add_test(tc, test_shared_stories_and_tiny);
    tcase_add_test(tc, test_shared_vocab);
    tcase_add_test(tc, test_identity_stories);
    tcase_add_test(tc, test_identity_tiny_random);
    tcase_add_test(tc, test_identity_quantized);
    tcase_add_test(tc, test_identity_vocab_padding);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_small_image_valid);
    tcase_add_test(tc, test_truncations);
    tcase_add_test(tc, test_mutations);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("utf8");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_utf8_table);
    tcase_add_test(tc, test_utf8_every_code_point);
    tcase_add_test(tc, test_utf8_rejected);
    tcase_add_test(tc, test_utf8_accepted);
    tcase_add_test(tc, test_utf8_large_vocab);
    suite_add_tcase(s, tc);
    tc = tcase_create("writer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_writer_incomplete);
    tcase_add_test(tc, test_atomic_file);
    tcase_add_test(tc, test_atomic_file_write_error);
    tcase_add_test(tc, test_atomic_dir_and_helpers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
