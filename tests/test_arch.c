/* test_arch.c - the model families' descriptions (formats/arch.h): look-ups and the tables. */
#include <check.h>
#include <string.h>

#include "formats/arch.h"
#include "testutil.h"

START_TEST(test_lookups) {
    const arch_desc *llama = arch_by_name("llama"), *qwen2 = arch_by_name("qwen2");
    ck_assert_ptr_nonnull(llama);
    ck_assert_ptr_nonnull(qwen2);
    ck_assert_ptr_eq(arch_by_name("mistral"), llama); /* an alias older converters wrote */
    ck_assert_ptr_null(arch_by_name("gpt2"));
    ck_assert_ptr_null(arch_by_name(NULL));
    ck_assert_ptr_eq(arch_by_hf_class("LlamaForCausalLM"), llama);
    ck_assert_ptr_eq(arch_by_hf_class("MistralForCausalLM"), llama);
    ck_assert_ptr_eq(arch_by_hf_class("Qwen2ForCausalLM"), qwen2);
    ck_assert_ptr_null(arch_by_hf_class("GPT2LMHeadModel"));
    /* what llama.cpp does with each: NORM rope with permuted Q/K rows, or NEOX with biases */
    ck_assert(llama->rope == ROPE_NORM && llama->permute_qk && !llama->qkv_bias);
    ck_assert(qwen2->rope == ROPE_NEOX && !qwen2->permute_qk && qwen2->qkv_bias);
}
END_TEST

/* The names in the messages are every family's and every class's, and nothing else. */
START_TEST(test_names_listed) {
    const char *names = arch_names(), *classes = arch_hf_class_names();
    const char *fams[] = {"llama", "qwen2"};
    int n_classes = 0;
    for (int f = 0; f < 2; f++) {
        const arch_desc *a = arch_by_name(fams[f]);
        ck_assert_ptr_nonnull(strstr(names, a->name));
        for (int k = 0; k < 3 && a->hf_classes[k]; k++, n_classes++) {
            ck_assert_ptr_nonnull(strstr(classes, a->hf_classes[k]));
            ck_assert_ptr_eq(arch_by_hf_class(a->hf_classes[k]), a);
        }
    }
    int commas = 0;
    for (const char *p = classes; *p; p++) commas += *p == ',';
    ck_assert_int_eq(commas + 1, n_classes);
}
END_TEST

/* The tensor tables: vectors have one dimension, only matrices are permuted, biases are
 * vectors of the projection they follow, and GGUF names are unique. */
START_TEST(test_tensor_tables) {
    for (int g = 0; g < ARCH_N_GLOBAL; g++) ck_assert(!ARCH_GLOBAL_TENSORS[g].qkv_bias);
    int n_bias = 0;
    for (int r = 0; r < ARCH_N_LAYER_TENSORS; r++) {
        const arch_tensor *t = &ARCH_LAYER_TENSORS[r];
        if (t->qk != ARCH_QK_NONE) ck_assert(t->d1 != DIM_NONE);
        if (t->qkv_bias) {
            n_bias++;
            ck_assert(t->d1 == DIM_NONE);
            ck_assert(r > 0 && ARCH_LAYER_TENSORS[r - 1].d0 == t->d0); /* right after its weight */
        }
        for (int s = 0; s < r; s++) ck_assert_str_ne(ARCH_LAYER_TENSORS[s].gguf, t->gguf);
        ck_assert(arch_has_tensor(arch_by_name("qwen2"), t));
        ck_assert(arch_has_tensor(arch_by_name("llama"), t) == !t->qkv_bias);
    }
    ck_assert_int_eq(n_bias, 3);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("arch");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_lookups);
    tcase_add_test(tc, test_names_listed);
    tcase_add_test(tc, test_tensor_tables);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
