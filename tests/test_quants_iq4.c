/* test_quants_iq4.c - IQ4_NL and IQ4_XS with llama.cpp's importance matrix, against llama.cpp.
 *
 * tests/data/iquant/W.TYPE are llama-quantize's blocks of two books-22m tensors made with its
 * imatrix and --pure (scripts/make_iq_refs.sh), W.TYPE.dequant.sha256 the SHA-256 of the F32
 * values llama.cpp decodes them to. The source values and the imatrix are in ../shared: those
 * checks skip without it; the decoding of llama.cpp's blocks does not need it.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/quants.h"
#include "codec/types.h"
#include "pipeline/sha256.h"
#include "quant/imatrix.h"
#include "testutil.h"

static const struct {
    const char *name;
    int64_t ne0;
} TENSORS[] = {{"blk.0.attn_q.weight", 256}, {"blk.1.ffn_down.weight", 768}};
static const int TYPES[] = {GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS};

/* tests/data/iquant/<name>.<type><suffix> (malloc'd); fails the test when missing. */
static uint8_t *load_data(const char *name, int type, const char *suffix, size_t *len) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/iquant/%s.%s%s", name, type_name(type), suffix);
    uint8_t *d = slurp(path, len);
    ck_assert_msg(d != NULL, "%s not found (run from the project root)", path);
    return d;
}

/* Our quantization of llama.cpp's source values with llama.cpp's imatrix: its bytes exactly. */
START_TEST(test_iq4_weighted_equals_llama) {
    char *src = SHARED_OR_SKIP("reference/books-22m-imatrix.dat");
    imatrix im;
    slmc_err err = {0};
    ck_assert_msg(imatrix_load(&im, src, &err) == 0, "%s", err.msg);
    free(src);
    for (size_t t = 0; t < sizeof TENSORS / sizeof *TENSORS; ++t) {
        char rel[128];
        snprintf(rel, sizeof rel, "reference/quant/%s.f32", TENSORS[t].name);
        char *fp = shared_path(rel);
        ck_assert_ptr_nonnull(fp);
        size_t flen;
        float *x = (float *)slurp(fp, &flen);
        free(fp);
        ck_assert_ptr_nonnull(x);
        const int64_t ne0 = TENSORS[t].ne0, rows = (int64_t)(flen / 4) / ne0;
        int64_t n_imp = 0;
        const float *imp = imatrix_importance(&im, TENSORS[t].name, &n_imp);
        ck_assert_ptr_nonnull(imp);
        ck_assert_int_eq(n_imp, ne0);
        for (size_t k = 0; k < sizeof TYPES / sizeof *TYPES; ++k) {
            const int type = TYPES[k];
            const quant_kernels *q = quant_get(type);
            const size_t rb = type_nbytes(type, ne0);
            size_t want_len;
            uint8_t *want = load_data(TENSORS[t].name, type, "", &want_len);
            ck_assert_uint_eq(want_len, rb * (size_t)rows);
            uint8_t *got = malloc(want_len), *got_ref = malloc(want_len);
            ck_assert(got && got_ref);
            for (int64_t r = 0; r < rows; ++r) {
                q->quantize_weighted(x + r * ne0, got + r * rb, ne0, imp);
                q->quantize_weighted_ref(x + r * ne0, got_ref + r * rb, ne0, imp);
            }
            const size_t bb = (size_t)type_get(type)->type_size;
            int differ = 0;
            for (size_t b = 0; b < want_len / bb; ++b) differ += memcmp(got + b * bb, want + b * bb, bb) != 0;
            ck_assert_msg(differ == 0, "%s %s: %d of %zu blocks differ from llama-quantize's", TENSORS[t].name,
                          type_name(type), differ, want_len / bb);
            ck_assert_msg(memcmp(got_ref, got, want_len) == 0, "%s %s: reference search differs", TENSORS[t].name,
                          type_name(type));
            free(got); free(got_ref); free(want);
        }
        free(x);
    }
    imatrix_free(&im);
}
END_TEST

/* Decoding llama.cpp's blocks gives the values llama.cpp decodes them to (their SHA-256). */
START_TEST(test_iq4_dequantize_llama_blocks) {
    for (size_t t = 0; t < sizeof TENSORS / sizeof *TENSORS; ++t)
        for (size_t k = 0; k < sizeof TYPES / sizeof *TYPES; ++k) {
            const int type = TYPES[k];
            size_t qlen, hlen;
            uint8_t *blocks = load_data(TENSORS[t].name, type, "", &qlen);
            char *hex = (char *)load_data(TENSORS[t].name, type, ".dequant.sha256", &hlen);
            ck_assert_uint_ge(hlen, 64);
            const int64_t n = (int64_t)(qlen / type_get(type)->type_size) * type_get(type)->blck_size;
            float *y = malloc(sizeof(float) * (size_t)n);
            ck_assert_ptr_nonnull(y);
            ck_assert_int_eq(quant_dequantize(type, blocks, y, n), 0);
            char got[65];
            sha256_buf_hex(y, sizeof(float) * (size_t)n, got);
            ck_assert_msg(memcmp(got, hex, 64) == 0, "%s %s: dequantized values differ from llama.cpp's",
                          TENSORS[t].name, type_name(type));
            free(y); free(hex); free(blocks);
        }
}
END_TEST

int main(void) {
    Suite *s = suite_create("quants_iq4");
    TCase *tc = tcase_create("llama");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_iq4_weighted_equals_llama);
    tcase_add_test(tc, test_iq4_dequantize_llama_blocks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
