/* test_meta.c - the ordered key-value list: setters, getters, copies, removal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/meta.h"
#include "testutil.h"

START_TEST(test_vtype_table) {
    ck_assert_uint_eq(gguf_vtype_size(GGUF_U8), 1);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_I16), 2);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_F32), 4);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_BOOL), 1);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_F64), 8);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_STR), 0);
    ck_assert_uint_eq(gguf_vtype_size(GGUF_ARR), 0);
    ck_assert_uint_eq(gguf_vtype_size((gguf_vtype)13), 0);
    ck_assert_str_eq(gguf_vtype_name(GGUF_U64), "u64");
    ck_assert_str_eq(gguf_vtype_name((gguf_vtype)99), "?");
}
END_TEST

START_TEST(test_set_get_scalars) {
    meta m;
    meta_init(&m);
    ck_assert_int_eq(meta_set_u32(&m, "a.u32", 4000000000u), 0);
    ck_assert_int_eq(meta_set_i32(&m, "a.i32", -7), 0);
    ck_assert_int_eq(meta_set_u64(&m, "a.u64", 0xffffffffffffffffull), 0);
    ck_assert_int_eq(meta_set_f32(&m, "a.f32", 1e-5f), 0);
    ck_assert_int_eq(meta_set_bool(&m, "a.bool", true), 0);
    ck_assert_int_eq(meta_set_str(&m, "a.str", "llama"), 0);
    ck_assert_uint_eq(m.n, 6);

    uint64_t u;
    int64_t i;
    double d;
    bool b;
    ck_assert(meta_get_u64(&m, "a.u32", &u));
    ck_assert_uint_eq(u, 4000000000u);
    ck_assert(meta_get_i64(&m, "a.u32", &i));
    ck_assert_int_eq(i, 4000000000ll);
    ck_assert(meta_get_i64(&m, "a.i32", &i));
    ck_assert_int_eq(i, -7);
    ck_assert(!meta_get_u64(&m, "a.i32", &u)); /* negative does not fit a u64 */
    ck_assert(meta_get_u64(&m, "a.u64", &u));
    ck_assert(u == 0xffffffffffffffffull);
    ck_assert(!meta_get_i64(&m, "a.u64", &i)); /* too large for an i64 */
    ck_assert(meta_get_f64(&m, "a.f32", &d));
    ck_assert(d == (double)1e-5f);
    ck_assert(meta_get_f64(&m, "a.i32", &d));
    ck_assert(d == -7.0);
    ck_assert(!meta_get_u64(&m, "a.f32", &u)); /* floats are not integers */
    ck_assert(meta_get_bool(&m, "a.bool", &b) && b);
    ck_assert(!meta_get_bool(&m, "a.u32", &b));
    ck_assert_str_eq(meta_get_str(&m, "a.str"), "llama");
    ck_assert_ptr_null(meta_get_str(&m, "a.u32"));
    ck_assert(!meta_get_u64(&m, "missing", &u));

    /* raw storage is little-endian */
    const meta_kv *kv = meta_find(&m, "a.i32");
    ck_assert_int_eq(kv->type, GGUF_I32);
    ck_assert_uint_eq(kv->v.raw[0], 0xf9);
    ck_assert_uint_eq(kv->v.raw[3], 0xff);
    ck_assert_int_eq(meta_kv_i64(kv), -7);
    ck_assert(meta_kv_f64(meta_find(&m, "a.bool")) == 1.0);

    /* generic scalar setter, signed 8-bit sign extension */
    int8_t neg = -100;
    ck_assert_int_eq(meta_set_scalar(&m, "a.i8", GGUF_I8, &neg), 0);
    ck_assert(meta_get_i64(&m, "a.i8", &i));
    ck_assert_int_eq(i, -100);
    ck_assert_int_eq(meta_set_scalar(&m, "bad", GGUF_STR, "x"), -1);
    meta_free(&m);
    ck_assert_uint_eq(m.n, 0);
}
END_TEST

START_TEST(test_replace_in_place_and_remove) {
    meta m;
    meta_init(&m);
    meta_set_str(&m, "k0", "zero");
    meta_set_u32(&m, "k1", 1);
    meta_set_str(&m, "k2", "two");
    /* replacing keeps the position, even with a different type */
    ck_assert_int_eq(meta_set_str(&m, "k1", "one"), 0);
    ck_assert_uint_eq(m.n, 3);
    ck_assert_str_eq(m.kv[1].key, "k1");
    ck_assert_str_eq(meta_get_str(&m, "k1"), "one");
    ck_assert_int_eq(meta_set_u32(&m, "k0", 9), 0);
    ck_assert_str_eq(m.kv[0].key, "k0");
    ck_assert_int_eq(m.kv[0].type, GGUF_U32);
    meta_remove(&m, "k1");
    ck_assert_uint_eq(m.n, 2);
    ck_assert_str_eq(m.kv[0].key, "k0");
    ck_assert_str_eq(m.kv[1].key, "k2");
    meta_remove(&m, "absent");
    ck_assert_uint_eq(m.n, 2);
    /* many appends force growth */
    for (int i = 0; i < 100; i++) {
        char k[32];
        snprintf(k, sizeof k, "grow.%d", i);
        ck_assert_int_eq(meta_set_i32(&m, k, i), 0);
    }
    ck_assert_uint_eq(m.n, 102);
    int64_t v;
    ck_assert(meta_get_i64(&m, "grow.77", &v) && v == 77);
    meta_free(&m);
}
END_TEST

START_TEST(test_arrays_and_deep_copy) {
    meta m;
    meta_init(&m);
    float scores[3] = {-1.5f, 0.0f, 2.25f};
    ck_assert_int_eq(meta_set_arr(&m, "scores", GGUF_F32, 3, scores), 0);
    const char *toks[3] = {"<s>", "a\0b", ""};
    uint64_t lens[3] = {3, 3, 0};
    ck_assert_int_eq(meta_set_arr_str(&m, "tokens", 3, toks, lens), 0);
    const char *plain[2] = {"x", "yz"};
    ck_assert_int_eq(meta_set_arr_str(&m, "plain", 2, plain, NULL), 0);
    ck_assert_int_eq(meta_set_strn(&m, "bin", "a\0c", 3), 0);
    ck_assert_int_eq(meta_set_arr(&m, "empty", GGUF_I32, 0, NULL), 0);
    ck_assert_int_eq(meta_set_arr(&m, "nested", GGUF_ARR, 1, scores), -1);

    uint64_t n;
    const float *f = meta_get_arr(&m, "scores", GGUF_F32, &n);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(n, 3);
    ck_assert(f[2] == 2.25f);
    ck_assert_ptr_null(meta_get_arr(&m, "scores", GGUF_I32, &n)); /* wrong element type */
    const meta_str *s = meta_get_arr(&m, "tokens", GGUF_STR, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(s[1].len, 3);
    ck_assert_int_eq(memcmp(s[1].s, "a\0b", 4), 0); /* embedded NUL kept, terminated */
    ck_assert_uint_eq(s[2].len, 0);
    ck_assert_str_eq(s[2].s, "");
    s = meta_get_arr(&m, "plain", GGUF_STR, &n);
    ck_assert_uint_eq(s[1].len, 2);
    ck_assert_str_eq(s[1].s, "yz");
    ck_assert_uint_eq(meta_find(&m, "bin")->v.str.len, 3);
    ck_assert_ptr_nonnull(meta_get_arr(&m, "empty", GGUF_I32, &n));
    ck_assert_uint_eq(n, 0);

    /* deep copy: independent of the original */
    meta c;
    ck_assert_int_eq(meta_copy(&c, &m), 0);
    ck_assert_uint_eq(c.n, m.n);
    for (size_t i = 0; i < m.n; i++) {
        ck_assert_str_eq(c.kv[i].key, m.kv[i].key);
        ck_assert_ptr_ne(c.kv[i].key, m.kv[i].key);
    }
    const meta_str *cs = meta_get_arr(&c, "tokens", GGUF_STR, &n);
    ck_assert_ptr_ne(cs, s);
    ck_assert_str_eq(cs[0].s, "<s>");
    meta_set_str(&m, "bin", "changed");
    ck_assert_int_eq(memcmp(meta_find(&c, "bin")->v.str.s, "a\0c", 4), 0);

    /* meta_set_kv copies one entry from another meta, replacing */
    meta d;
    meta_init(&d);
    meta_set_u32(&d, "tokens", 5);
    ck_assert_int_eq(meta_set_kv(&d, meta_find(&c, "tokens")), 0);
    ck_assert_int_eq(meta_set_kv(&d, meta_find(&c, "scores")), 0);
    ck_assert_uint_eq(d.n, 2);
    const meta_str *ds = meta_get_arr(&d, "tokens", GGUF_STR, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(ds[0].s, "<s>");
    f = meta_get_arr(&d, "scores", GGUF_F32, &n);
    ck_assert(f[0] == -1.5f);
    meta_free(&d);
    meta_free(&c);
    meta_free(&m);

    meta e;
    meta_init(&e);
    ck_assert_int_eq(meta_copy(&c, &e), 0); /* empty copy */
    ck_assert_uint_eq(c.n, 0);
    meta_free(&c);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("meta");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_vtype_table);
    tcase_add_test(tc, test_set_get_scalars);
    tcase_add_test(tc, test_replace_in_place_and_remove);
    tcase_add_test(tc, test_arrays_and_deep_copy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
