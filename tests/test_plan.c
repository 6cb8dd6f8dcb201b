/* test_plan.c - the per-tensor quantization plan (quant/plan.h) against llama.cpp.
 *
 * Reference: ../shared/reference/plans/books-22m-MIX.json, the type llama-quantize (b4747)
 * chose for every tensor of books-22m for 14 mixes, and the BF16 / Q4_K_M / Q2_K GGUF files
 * llama.cpp wrote. books-22m has 6 layers, GQA 2 and rows that are multiples of 256, so the
 * rules it cannot reach (position patterns over many layers, GQA >= 4, fallbacks for odd row
 * lengths, tied embeddings, MoE, 70B, falcon) are checked on model views built here.
 */
#include "formats/gguf.h"
#include "formats/meta.h"
#include "formats/model.h"
#include "codec/types.h"
#include "quant/plan.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const REF_MIXES[] = {"Q2_K",   "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0",   "Q4_1",   "Q4_K_S",
                                        "Q4_K_M", "Q5_0",   "Q5_1",   "Q5_K_S", "Q5_K_M", "Q6_K",   "Q8_0"};

/* ---------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------- */

/* Plan m with o; the test fails with the error message if planning fails. */
static int *plan_or_fail(const model *m, const plan_opts *o) {
    int *types = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *types);
    ck_assert_ptr_nonnull(types);
    slmc_err err = {{0}};
    ck_assert_msg(quant_plan(m, o, types, &err) == 0, "quant_plan: %s", err.msg);
    return types;
}

/* Type planned for the tensor called name. */
static int type_of(const model *m, const int *types, const char *name) {
    int64_t i = model_find(m, name);
    ck_assert_msg(i >= 0, "no tensor %s", name);
    return types[i];
}

#define ASSERT_TYPE(m, types, name, want)                                                              \
    do {                                                                                               \
        int got_ = type_of(m, types, name);                                                            \
        ck_assert_msg(got_ == (want), "%s: got %s, want %s", name, type_name(got_), type_name(want));  \
    } while (0)

/* A llama-shaped model view with no data: what quant_plan needs (names, shapes, types, cfg). */
typedef struct fake_spec {
    int n_layer;
    int64_t n_embd, n_ff, n_vocab;
    int n_head, n_head_kv;
    bool tied;       /* no output.weight */
    bool reversed;   /* list the tensors in reverse order (the plan must not depend on it) */
    int type;        /* type of the matrices (norms are F32) */
    const char *arch;
} fake_spec;

static void add_tensor(model *m, const char *name, int type, int n_dims, int64_t ne0, int64_t ne1) {
    model_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    ck_assert_ptr_nonnull(t->name);
    t->type = n_dims == 1 ? GGML_TYPE_F32 : type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims == 1 ? 1 : ne1;
    t->ne[2] = t->ne[3] = 1;
}

static void fake_model(model *m, const fake_spec *s) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    m->path = strdup("fake");
    size_t cap = 3 + 9 * (size_t)s->n_layer;
    m->tensors = calloc(cap, sizeof *m->tensors);
    ck_assert_ptr_nonnull(m->tensors);
    model_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "%s", s->arch ? s->arch : "llama");
    c->n_layer = s->n_layer;
    c->n_embd = s->n_embd;
    c->n_ff = s->n_ff;
    c->n_vocab = s->n_vocab;
    c->n_head = s->n_head;
    c->n_head_kv = s->n_head_kv;
    c->tied_output = s->tied;
    int64_t kv_dim = s->n_embd / s->n_head * s->n_head_kv;
    char name[64];
    add_tensor(m, "token_embd.weight", s->type, 2, s->n_embd, s->n_vocab);
    for (int l = 0; l < s->n_layer; l++) {
#define T(suffix, nd, a, b) (snprintf(name, sizeof name, "blk.%d.%s", l, suffix), add_tensor(m, name, s->type, nd, a, b))
        T("attn_norm.weight", 1, s->n_embd, 1);
        T("attn_q.weight", 2, s->n_embd, s->n_embd);
        T("attn_k.weight", 2, s->n_embd, kv_dim);
        T("attn_v.weight", 2, s->n_embd, kv_dim);
        T("attn_output.weight", 2, s->n_embd, s->n_embd);
        T("ffn_norm.weight", 1, s->n_embd, 1);
        T("ffn_gate.weight", 2, s->n_embd, s->n_ff);
        T("ffn_up.weight", 2, s->n_embd, s->n_ff);
        T("ffn_down.weight", 2, s->n_ff, s->n_embd);
#undef T
    }
    add_tensor(m, "output_norm.weight", s->type, 1, s->n_embd, 1);
    if (!s->tied) add_tensor(m, "output.weight", s->type, 2, s->n_embd, s->n_vocab);
    if (s->reversed) {
        for (uint64_t i = 0, j = m->n_tensors - 1; i < j; i++, j--) {
            model_tensor tmp = m->tensors[i];
            m->tensors[i] = m->tensors[j];
            m->tensors[j] = tmp;
        }
    }
}

static void fake_free(model *m) {
    for (uint64_t i = 0; i < m->n_tensors; i++) free(m->tensors[i].name);
    free(m->tensors);
    free(m->path);
    meta_free(&m->kv);
}

/* A 6-layer model like books-22m but with a chosen row length and GQA. */
static fake_spec small_spec(int64_t n_embd, int n_head, int n_head_kv) {
    return (fake_spec){.n_layer = 6, .n_embd = n_embd, .n_ff = 3 * n_embd, .n_vocab = 512, .n_head = n_head,
                       .n_head_kv = n_head_kv, .type = GGML_TYPE_BF16};
}

static void layer_name(char *buf, size_t n, int l, const char *suffix) { snprintf(buf, n, "blk.%d.%s", l, suffix); }

/* ---------------------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------------------- */

START_TEST(mix_names) {
    ck_assert_int_eq(quant_mix_from_name("Q4_K_M"), MIX_Q4_K_M);
    ck_assert_int_eq(quant_mix_from_name("q4_k_m"), 15);
    ck_assert_int_eq(quant_mix_from_name("Q4_K"), MIX_Q4_K_M); /* llama-quantize's aliases */
    ck_assert_int_eq(quant_mix_from_name("Q3_K"), MIX_Q3_K_M);
    ck_assert_int_eq(quant_mix_from_name("Q5_K"), MIX_Q5_K_M);
    ck_assert_int_eq(quant_mix_from_name("bf16"), 32);
    ck_assert_int_eq(quant_mix_from_name("F32"), 0);
    ck_assert_int_eq(quant_mix_from_name("7"), MIX_Q8_0);
    ck_assert_int_eq(quant_mix_from_name("4"), -1); /* removed Q4_1_F16 */
    ck_assert_int_eq(quant_mix_from_name("Q4_K_X"), -1);
    ck_assert_int_eq(quant_mix_from_name(""), -1);
    ck_assert_int_eq(quant_mix_from_name(NULL), -1);
    for (int i = 0; i < COUNT(REF_MIXES); i++) {
        int mix = quant_mix_from_name(REF_MIXES[i]);
        ck_assert_int_ge(mix, 0);
        ck_assert_str_eq(quant_mix_name(mix), REF_MIXES[i]);
    }
    ck_assert_ptr_null(quant_mix_name(4));
    ck_assert_int_eq(quant_mix_base_type(MIX_Q3_K_L), GGML_TYPE_Q3_K);
    ck_assert_int_eq(quant_mix_base_type(MIX_BF16), GGML_TYPE_BF16);
    ck_assert_int_eq(quant_mix_base_type(99), -1);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * books-22m against llama-quantize
 * ------------------------------------------------------------------------------------- */

static json_t *load_json(const char *path) {
    size_t len;
    uint8_t *buf = slurp(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_msg(j != NULL, "%s: %s at %d", path, jerr.text, jerr.position);
    free(buf);
    return j;
}

START_TEST(books22m_every_mix_matches_llama_quantize) {
    char *plans = SHARED_OR_SKIP("reference/plans/books-22m-Q4_K_M.json");
    free(plans);
    char *dir = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, dir, NULL, &err) == 0, "%s", err.msg);
    int compared = 0;
    for (int k = 0; k < COUNT(REF_MIXES); k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "reference/plans/books-22m-%s.json", REF_MIXES[k]);
        char *path = shared_path(rel);
        ck_assert_msg(path != NULL, "missing %s", rel);
        json_t *ref = load_json(path);
        ck_assert(json_is_object(ref));
        ck_assert_uint_eq(json_object_size(ref), m.n_tensors);

        plan_opts o;
        plan_opts_init(&o, quant_mix_from_name(REF_MIXES[k]));
        int *types = plan_or_fail(&m, &o);
        for (uint64_t i = 0; i < m.n_tensors; i++) {
            const char *name = m.tensors[i].name;
            const char *want = json_string_value(json_object_get(ref, name));
            ck_assert_msg(want != NULL, "%s: no %s in the reference", REF_MIXES[k], name);
            ck_assert_msg(strcmp(type_name(types[i]), want) == 0, "%s %s: ours %s, llama.cpp %s", REF_MIXES[k], name,
                          type_name(types[i]), want);
            compared++;
        }
        free(types);
        json_decref(ref);
        free(path);
    }
    ck_assert_int_eq(compared, 14 * 57);
    model_close(&m);
    free(dir);
}
END_TEST

/* Our plan against the tensor types in a GGUF llama.cpp wrote for that mix. */
static void assert_plan_matches_gguf(const model *m, int mix, const char *rel) {
    char *path = shared_path(rel);
    if (!path) {
        test_skip(__func__, "../shared/%s not found (this part of the test)", rel);
        return;
    }
    gguf_file g;
    slmc_err err = {{0}};
    ck_assert_msg(gguf_open(&g, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(g.n_tensors, m->n_tensors);
    plan_opts o;
    plan_opts_init(&o, mix);
    int *types = plan_or_fail(m, &o);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        int got = type_of(m, types, g.tensors[i].name);
        ck_assert_msg(got == g.tensors[i].type, "%s %s: ours %s, file %s", rel, g.tensors[i].name, type_name(got),
                      type_name(g.tensors[i].type));
    }
    free(types);
    gguf_close(&g);
    free(path);
}

START_TEST(books22m_float_mixes_and_llama_files) {
    char *dir = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, dir, NULL, &err) == 0, "%s", err.msg);
    /* the files llama.cpp wrote */
    assert_plan_matches_gguf(&m, MIX_BF16, "reference/books-22m-BF16.gguf");
    assert_plan_matches_gguf(&m, MIX_Q4_K_M, "reference/books-22m-Q4_K_M.gguf");
    assert_plan_matches_gguf(&m, MIX_Q2_K, "reference/books-22m-Q2_K.gguf");
    /* float mixes: every matrix takes the type, every norm is F32 */
    const int mixes[] = {MIX_F16, MIX_BF16, MIX_F32};
    const int want[] = {GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_F32};
    for (int k = 0; k < 3; k++) {
        plan_opts o;
        plan_opts_init(&o, mixes[k]);
        int *types = plan_or_fail(&m, &o);
        int n_matrix = 0, n_norm = 0;
        for (uint64_t i = 0; i < m.n_tensors; i++) {
            bool norm = strstr(m.tensors[i].name, "_norm.weight") != NULL;
            ck_assert_int_eq(types[i], norm ? GGML_TYPE_F32 : want[k]);
            norm ? n_norm++ : n_matrix++;
        }
        ck_assert_int_eq(n_matrix, 44); /* 6 layers x 7 + token_embd + output */
        ck_assert_int_eq(n_norm, 13);
        free(types);
    }
    model_close(&m);
    free(dir);
}
END_TEST

/* stories260K (dim 64, ffn 172): rows too short for 256-blocks, and 172 fits no block. */
START_TEST(stories260k_fallbacks) {
    char *path = SHARED_OR_SKIP("reference/stories260K-F32.gguf");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, path, NULL, &err) == 0, "%s", err.msg);
    plan_opts o;
    plan_opts_init(&o, MIX_Q4_K_M);
    int *types = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, types, "blk.0.attn_q.weight", GGML_TYPE_Q5_0);   /* Q4_K -> Q5_0 */
    /* 5 layers: use_more_bits holds for 2 and 4 (5/8 = 0, 7*5/8 = 4) */
    ASSERT_TYPE(&m, types, "blk.0.attn_v.weight", GGML_TYPE_Q5_0);   /* Q4_K -> Q5_0 */
    ASSERT_TYPE(&m, types, "blk.2.attn_v.weight", GGML_TYPE_Q8_0);   /* Q6_K -> Q8_0 */
    ASSERT_TYPE(&m, types, "blk.4.attn_v.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, types, "blk.0.ffn_down.weight", GGML_TYPE_F16);  /* 172 values: F16 */
    ASSERT_TYPE(&m, types, "blk.0.ffn_up.weight", GGML_TYPE_Q5_0);
    ASSERT_TYPE(&m, types, "output.weight", GGML_TYPE_Q8_0);         /* 64 % 256: Q8_0 */
    ASSERT_TYPE(&m, types, "token_embd.weight", GGML_TYPE_Q5_0);
    ASSERT_TYPE(&m, types, "blk.0.attn_norm.weight", GGML_TYPE_F32);
    free(types);
    model_close(&m);
    free(path);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Rules books-22m does not reach
 * ------------------------------------------------------------------------------------- */

/* llama.cpp's use_more_bits over 32 layers: 0-3, 28-31, and 6, 9, ..., 27. */
static bool more_bits_32(int l) { return l < 4 || l >= 28 || (l >= 4 && (l - 4) % 3 == 2); }

START_TEST(position_rules_over_32_layers) {
    /* listed in reverse: positions follow layer numbers, not the file's order (and not the
     * string order, where blk.10 sorts before blk.2) */
    fake_spec s = {.n_layer = 32, .n_embd = 256, .n_ff = 768, .n_vocab = 1024, .n_head = 8, .n_head_kv = 8,
                   .type = GGML_TYPE_F16, .reversed = true};
    model m;
    fake_model(&m, &s);
    char n[64];
    plan_opts o;

    plan_opts_init(&o, MIX_Q4_K_M);
    int *t = plan_or_fail(&m, &o);
    int n_q6 = 0;
    for (int l = 0; l < 32; l++) {
        int want = more_bits_32(l) ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K;
        n_q6 += more_bits_32(l);
        layer_name(n, sizeof n, l, "attn_v.weight");
        ASSERT_TYPE(&m, t, n, want);
        layer_name(n, sizeof n, l, "ffn_down.weight");
        ASSERT_TYPE(&m, t, n, want);
        layer_name(n, sizeof n, l, "attn_q.weight");
        ASSERT_TYPE(&m, t, n, GGML_TYPE_Q4_K);
        layer_name(n, sizeof n, l, "attn_output.weight");
        ASSERT_TYPE(&m, t, n, GGML_TYPE_Q4_K);
    }
    ck_assert_int_eq(n_q6, 16);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q6_K);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q4_K);
    free(t);

    plan_opts_init(&o, MIX_Q5_K_M);
    t = plan_or_fail(&m, &o);
    for (int l = 0; l < 32; l++) {
        layer_name(n, sizeof n, l, "ffn_down.weight");
        ASSERT_TYPE(&m, t, n, more_bits_32(l) ? GGML_TYPE_Q6_K : GGML_TYPE_Q5_K);
    }
    free(t);

    /* Q3_K_M: attn_v Q5_K for the first two, ffn_down Q5_K for the first 32/16 = 2 */
    plan_opts_init(&o, MIX_Q3_K_M);
    t = plan_or_fail(&m, &o);
    for (int l = 0; l < 32; l++) {
        layer_name(n, sizeof n, l, "attn_v.weight");
        ASSERT_TYPE(&m, t, n, l < 2 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K);
        layer_name(n, sizeof n, l, "ffn_down.weight");
        ASSERT_TYPE(&m, t, n, l < 2 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K);
        layer_name(n, sizeof n, l, "attn_output.weight");
        ASSERT_TYPE(&m, t, n, GGML_TYPE_Q4_K);
    }
    free(t);

    /* Q4_K_S: attn_v Q5_K for the first four, ffn_down Q5_K for the first eighth */
    plan_opts_init(&o, MIX_Q4_K_S);
    t = plan_or_fail(&m, &o);
    for (int l = 0; l < 32; l++) {
        layer_name(n, sizeof n, l, "attn_v.weight");
        ASSERT_TYPE(&m, t, n, l < 4 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K);
        layer_name(n, sizeof n, l, "ffn_down.weight");
        ASSERT_TYPE(&m, t, n, l < 4 ? GGML_TYPE_Q5_K : GGML_TYPE_Q4_K);
    }
    free(t);

    /* Q4_0 with an imatrix: ffn_down of the first eighth goes to Q4_1; without, nothing */
    plan_opts_init(&o, MIX_Q4_0);
    o.has_imatrix = true;
    t = plan_or_fail(&m, &o);
    for (int l = 0; l < 32; l++) {
        layer_name(n, sizeof n, l, "ffn_down.weight");
        ASSERT_TYPE(&m, t, n, l < 4 ? GGML_TYPE_Q4_1 : GGML_TYPE_Q4_0);
    }
    free(t);
    o.has_imatrix = false;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.0.ffn_down.weight", GGML_TYPE_Q4_0);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(gqa_bumps_attn_v) {
    const struct {
        int n_head, n_head_kv, mix, want_v;
    } cases[] = {
        {32, 4, MIX_Q2_K, GGML_TYPE_Q4_K},   /* GQA 8 */
        {16, 4, MIX_Q2_K, GGML_TYPE_Q4_K},   /* GQA 4 */
        {8, 4, MIX_Q2_K, GGML_TYPE_Q3_K},    /* GQA 2, as books-22m */
        {32, 4, MIX_Q3_K_S, GGML_TYPE_Q3_K}, /* Q3_K_S has no attn_v rule */
        {32, 4, MIX_Q3_K_L, GGML_TYPE_Q5_K},
    };
    for (int k = 0; k < COUNT(cases); k++) {
        fake_spec s = small_spec(512, cases[k].n_head, cases[k].n_head_kv);
        model m;
        fake_model(&m, &s);
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        int *t = plan_or_fail(&m, &o);
        for (int l = 0; l < 6; l++) {
            char n[64];
            layer_name(n, sizeof n, l, "attn_v.weight");
            ASSERT_TYPE(&m, t, n, cases[k].want_v);
            layer_name(n, sizeof n, l, "attn_k.weight");
            ASSERT_TYPE(&m, t, n, quant_mix_base_type(cases[k].mix));
        }
        free(t);
        fake_free(&m);
    }
}
END_TEST

START_TEST(fallbacks_for_short_rows) {
    /* rows of 96: 256-blocks do not fit, 32-blocks do */
    fake_spec s = small_spec(96, 3, 1);
    s.n_ff = 256; /* ffn_down rows of 256 still fit */
    model m;
    fake_model(&m, &s);
    const struct {
        int mix, attn_q, attn_v, ffn_down, output;
    } cases[] = {
        {MIX_Q4_K_M, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q8_0},
        {MIX_Q2_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_NL, GGML_TYPE_Q3_K, GGML_TYPE_Q8_0},
        {MIX_Q3_K_L, GGML_TYPE_IQ4_NL, GGML_TYPE_Q5_1, GGML_TYPE_Q5_K, GGML_TYPE_Q8_0},
        {MIX_Q5_K_S, GGML_TYPE_Q5_1, GGML_TYPE_Q5_1, GGML_TYPE_Q5_K, GGML_TYPE_Q8_0},
        {MIX_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0},
        {MIX_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0}, /* Q6_K -> Q8_0 */
    };
    for (int k = 0; k < COUNT(cases); k++) {
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        int *t = plan_or_fail(&m, &o);
        /* blk.2: use_more_bits(2, 6) holds, so Q4_K_M wants Q6_K for its attn_v and ffn_down */
        ASSERT_TYPE(&m, t, "blk.2.attn_q.weight", cases[k].attn_q);
        ASSERT_TYPE(&m, t, "blk.2.attn_v.weight", cases[k].attn_v);
        ASSERT_TYPE(&m, t, "blk.0.ffn_down.weight", cases[k].ffn_down);
        ASSERT_TYPE(&m, t, "output.weight", cases[k].output);
        free(t);
    }
    /* with --pure too: Q4_K everywhere, fallen back to Q5_0 */
    plan_opts o;
    plan_opts_init(&o, MIX_Q4_K_M);
    o.pure = true;
    int *t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q5_0);
    ASSERT_TYPE(&m, t, "blk.0.ffn_down.weight", GGML_TYPE_Q4_K);
    free(t);
    fake_free(&m);

    /* rows of 100 fit no block: F16, whatever the mix */
    s = small_spec(100, 2, 1);
    s.n_ff = 100;
    fake_model(&m, &s);
    const int mixes[] = {MIX_Q4_K_M, MIX_Q2_K, MIX_Q4_0, MIX_Q8_0, MIX_Q6_K};
    for (int k = 0; k < COUNT(mixes); k++) {
        plan_opts_init(&o, mixes[k]);
        t = plan_or_fail(&m, &o);
        for (uint64_t i = 0; i < m.n_tensors; i++)
            ck_assert_int_eq(t[i], m.tensors[i].n_dims == 1 ? GGML_TYPE_F32 : GGML_TYPE_F16);
        free(t);
    }
    /* a user type with no fallback (Q8_K) that does not fit is an error naming the tensor */
    plan_opts_init(&o, MIX_Q4_K_M);
    o.output_type = GGML_TYPE_Q8_K;
    int types[64];
    slmc_err err = {{0}};
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "output.weight"));
    ck_assert_ptr_nonnull(strstr(err.msg, "Q8_K"));
    fake_free(&m);
}
END_TEST

START_TEST(tied_embeddings_follow_the_output_rules) {
    fake_spec s = small_spec(256, 8, 8);
    s.tied = true;
    model m;
    fake_model(&m, &s);
    ck_assert_int_lt(model_find(&m, "output.weight"), 0);
    plan_opts o;
    const struct {
        int mix, want;
    } cases[] = {{MIX_Q4_K_M, GGML_TYPE_Q6_K}, {MIX_Q2_K, GGML_TYPE_Q6_K}, {MIX_Q4_0, GGML_TYPE_Q6_K},
                 {MIX_Q8_0, GGML_TYPE_Q8_0},   {MIX_Q6_K, GGML_TYPE_Q6_K}, {MIX_F16, GGML_TYPE_F16}};
    for (int k = 0; k < COUNT(cases); k++) {
        plan_opts_init(&o, cases[k].mix);
        int *t = plan_or_fail(&m, &o);
        ASSERT_TYPE(&m, t, "token_embd.weight", cases[k].want);
        free(t);
    }
    /* --output-tensor-type reaches the tied embedding; --token-embedding-type beats it */
    plan_opts_init(&o, MIX_Q4_K_M);
    o.output_type = GGML_TYPE_Q5_K;
    int *t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q5_K);
    free(t);
    o.token_embd_type = GGML_TYPE_Q8_0;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q8_0);
    free(t);
    /* --pure: the base type */
    plan_opts_init(&o, MIX_Q4_K_M);
    o.pure = true;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q4_K);
    free(t);
    fake_free(&m);

    /* untied: token_embd is an ordinary matrix */
    s.tied = false;
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_Q4_K_M);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q6_K);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(overrides_pure_leave_output_include_exclude) {
    fake_spec s = small_spec(256, 8, 4);
    model m;
    fake_model(&m, &s);
    plan_opts o;
    int *t;

    /* --tensor-type: first match wins, over the mix rules and --pure */
    plan_override ovr[] = {{"attn_v", GGML_TYPE_Q8_0}, {"blk\\.0\\.", GGML_TYPE_Q2_K}, {"^output\\.", GGML_TYPE_Q4_0}};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.overrides = ovr;
    o.n_overrides = 3;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.0.attn_v.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.3.attn_v.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.0.attn_q.weight", GGML_TYPE_Q2_K);
    ASSERT_TYPE(&m, t, "blk.0.ffn_down.weight", GGML_TYPE_Q2_K);
    ASSERT_TYPE(&m, t, "blk.2.ffn_down.weight", GGML_TYPE_Q6_K); /* untouched: mix rule */
    ASSERT_TYPE(&m, t, "blk.5.ffn_down.weight", GGML_TYPE_Q6_K); /* positions still count overridden ones */
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q4_0);
    ASSERT_TYPE(&m, t, "blk.0.attn_norm.weight", GGML_TYPE_F32); /* not quantized: no override */
    ASSERT_TYPE(&m, t, "output_norm.weight", GGML_TYPE_F32);
    free(t);
    /* --output-tensor-type beats an override */
    o.output_type = GGML_TYPE_Q8_0;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q8_0);
    free(t);
    o.pure = true;
    o.output_type = -1;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.1.attn_v.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.2.ffn_down.weight", GGML_TYPE_Q4_K);
    free(t);

    /* --pure alone: the base type for every quantized tensor */
    plan_opts_init(&o, MIX_Q2_K);
    o.pure = true;
    t = plan_or_fail(&m, &o);
    for (uint64_t i = 0; i < m.n_tensors; i++)
        ck_assert_int_eq(t[i], m.tensors[i].n_dims == 1 ? GGML_TYPE_F32 : GGML_TYPE_Q2_K);
    free(t);
    /* --pure with --token-embedding-type / --output-tensor-type */
    o.token_embd_type = GGML_TYPE_Q8_0;
    o.output_type = GGML_TYPE_F16;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_F16);
    free(t);

    /* --leave-output-tensor: output.weight keeps its source type, --output-tensor-type or not */
    plan_opts_init(&o, MIX_Q4_K_M);
    o.leave_output = true;
    o.output_type = GGML_TYPE_Q8_0;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "blk.2.attn_v.weight", GGML_TYPE_Q6_K);
    free(t);

    /* --exclude-weights: matching tensors keep their type */
    const char *excl[] = {"ffn_(up|gate)", "^token_embd"};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.exclude = excl;
    o.n_exclude = 2;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.1.ffn_up.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "blk.1.ffn_gate.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "token_embd.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "blk.1.ffn_down.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "blk.2.ffn_down.weight", GGML_TYPE_Q6_K);
    free(t);
    /* --include-weights: only matching tensors are quantized */
    const char *incl[] = {"attn_[qk]\\.weight$"};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.include = incl;
    o.n_include = 1;
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.1.attn_q.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "blk.1.attn_k.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "blk.2.attn_v.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_BF16);
    ASSERT_TYPE(&m, t, "blk.1.attn_norm.weight", GGML_TYPE_F32);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(moe_70b_and_falcon_rules) {
    /* 8 experts (expert_count from the metadata): attn_v and attn_k Q8_0, attn_output Q5_K */
    fake_spec s = small_spec(256, 8, 8);
    model m;
    fake_model(&m, &s);
    ck_assert_int_eq(meta_set_u32(&m.kv, "llama.expert_count", 8), 0);
    plan_opts o;
    plan_opts_init(&o, MIX_Q4_K_M);
    int *t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.0.attn_v.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.1.attn_k.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.1.attn_output.weight", GGML_TYPE_Q5_K);
    ASSERT_TYPE(&m, t, "blk.2.ffn_down.weight", GGML_TYPE_Q6_K); /* layer from the name: 2 */
    ASSERT_TYPE(&m, t, "blk.1.ffn_down.weight", GGML_TYPE_Q4_K);
    free(t);
    plan_opts_init(&o, MIX_Q3_K_L); /* not in the MoE attn_output list: base type */
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.1.attn_output.weight", GGML_TYPE_Q3_K);
    free(t);
    fake_free(&m);

    /* a 70B llama (80 layers, GQA): attn_v Q3_K / Q4_K become Q5_K */
    s = (fake_spec){.n_layer = 80, .n_embd = 256, .n_ff = 256, .n_vocab = 256, .n_head = 8, .n_head_kv = 1,
                    .type = GGML_TYPE_F16};
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_Q3_K_S);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.40.attn_v.weight", GGML_TYPE_Q5_K);
    ASSERT_TYPE(&m, t, "blk.40.attn_q.weight", GGML_TYPE_Q3_K);
    free(t);
    plan_opts_init(&o, MIX_Q4_K_M);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.11.attn_v.weight", GGML_TYPE_Q5_K); /* not a more-bits layer: Q4_K -> Q5_K */
    ASSERT_TYPE(&m, t, "blk.12.attn_v.weight", GGML_TYPE_Q6_K); /* (12 - 10) % 3 == 2 */
    free(t);
    fake_free(&m);

    /* falcon: output always Q8_0; Q3_K_L ffn_down / attn_output Q4_K */
    s = small_spec(256, 8, 8);
    s.arch = "falcon";
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_Q3_K_L);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", GGML_TYPE_Q8_0);
    ASSERT_TYPE(&m, t, "blk.0.ffn_down.weight", GGML_TYPE_Q4_K);
    ASSERT_TYPE(&m, t, "blk.0.attn_output.weight", GGML_TYPE_Q4_K);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(bad_options_are_errors) {
    fake_spec s = small_spec(256, 8, 8);
    model m;
    fake_model(&m, &s);
    int types[64];
    slmc_err err = {{0}};
    plan_opts o;
    plan_opts_init(&o, 5); /* not a mix */
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "mix"));

    plan_override bad_re[] = {{"attn_(v", GGML_TYPE_Q8_0}};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.overrides = bad_re;
    o.n_overrides = 1;
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_msg(strstr(err.msg, "attn_(v") && strstr(err.msg, "--tensor-type"), "%s", err.msg);

    plan_override bad_type[] = {{"attn_v", 4}}; /* removed ggml type */
    o.overrides = bad_type;
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "type"));

    const char *bad_excl[] = {"[unclosed"};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.exclude = bad_excl;
    o.n_exclude = 1;
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "--exclude-weights"));
    fake_free(&m);
}
END_TEST

static Suite *plan_suite(void) {
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mix_names);
    tcase_add_test(tc, books22m_every_mix_matches_llama_quantize);
    tcase_add_test(tc, books22m_float_mixes_and_llama_files);
    tcase_add_test(tc, stories260k_fallbacks);
    tcase_add_test(tc, position_rules_over_32_layers);
    tcase_add_test(tc, gqa_bumps_attn_v);
    tcase_add_test(tc, fallbacks_for_short_rows);
    tcase_add_test(tc, tied_embeddings_follow_the_output_rules);
    tcase_add_test(tc, overrides_pure_leave_output_include_exclude);
    tcase_add_test(tc, moe_70b_and_falcon_rules);
    tcase_add_test(tc, bad_options_are_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(plan_suite()); }
