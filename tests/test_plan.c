/* test_plan.c - the per-tensor quantization plan (quant/plan.h) against llama.cpp.
 *
 * Reference: ../shared/reference/plans/books-22m-MIX.json, the type llama-quantize (b4747)
 * chose for every tensor of books-22m for 14 mixes, and the BF16 / Q4_K_M / Q2_K GGUF files
 * llama.cpp wrote. books-22m has 6 layers, GQA 2 and rows that are multiples of 256, so the
 * rules it cannot reach (position patterns over many layers, GQA >= 4, fallbacks for odd row
 * lengths, tied embeddings, MoE, 70B, falcon) are checked on model views built here.
 *
 * The i-quant and ternary mixes (IQ1_S ... IQ4_XS, Q2_K_S, TQ1_0, TQ2_0) against
 * tests/data/plans/, made with the peer build of llama.cpp b4747:
 *   - books-22m-MIX.json: llama-quantize --imatrix ../shared/reference/books-22m-imatrix.dat
 *     ../shared/reference/books-22m-BF16.gguf OUT MIX 1, name -> type read from its log and
 *     checked against the GGUF it wrote (all 15 mixes); books-22m-MIX-noimatrix.json: the same
 *     without --imatrix, for the 7 mixes it then writes;
 *   - books-22m-imatrix-refusals.json: the tensor it refuses ("Missing importance matrix for
 *     tensor X in a very low-bit quantization") with no imatrix, or with the imatrix cut down by
 *     --include-weights / --exclude-weights (substrings), "mix" when it refuses the whole mix
 *     up front, null when it writes the file;
 *   - synth-NAME.json: models from `slmc synth --config` (tests/data/configs/llama or phi3 with
 *     32 layers and 8/2 heads, head_dim 32; 16 layers, 4/4 heads, tied; 8 layers of 384 with
 *     6/2 heads and n_ff 768; phi3 with 16 layers), `slmc convert --outtype f16`, then
 *     llama-quantize with and without an all-ones imatrix for every layer matrix: the tensors
 *     ([name, ne0, ne1, type]), and per mix the types in that order or {"refused": ...}.
 * MoE, falcon and 70B models, which synth does not make, are checked on views built here with
 * types read off llama_tensor_get_type.
 */
#include "formats/gguf.h"
#include "formats/meta.h"
#include "formats/model.h"
#include "codec/types.h"
#include "quant/imatrix.h"
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
    CK_ASSERT_QUIET(i >= 0, "no tensor %s", name);
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
    CK_ASSERT_QUIET(t->name != NULL, "out of memory");
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
            CK_ASSERT_QUIET(want != NULL, "%s: no %s in the reference", REF_MIXES[k], name);
            CK_ASSERT_QUIET(strcmp(type_name(types[i]), want) == 0, "%s %s: ours %s, llama.cpp %s", REF_MIXES[k], name,
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

/* ---------------------------------------------------------------------------------------
 * The families llama.cpp's converter writes, at their real sizes (a view holds no data)
 *
 * Expected types are read off llama_tensor_get_type and its fallback switch (b4747). The
 * position patterns, use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2:
 *   n = 16: 0 1 4 7 10 13 14 15                n = 18: 0 1 4 7 10 13 15 16 17
 *   n = 24: 0 1 2 5 8 11 14 17 20 21 22 23     n = 26: 0 1 2 5 8 11 14 17 20 22 23 24 25
 *   n = 28: 0 1 2 5 8 11 14 17 20 23 24 25 26 27
 *   n = 32: 0 1 2 3 6 9 12 15 18 21 24 27 28 29 30 31
 * ------------------------------------------------------------------------------------- */

/* A tensor of a family: its name (after "blk.N." for a layer tensor) and GGUF shape; ne1 == 0
 * is a vector. Vectors and norms are F32 (as the converter writes them), matrices F16. */
typedef struct fam_tensor {
    const char *name;
    int64_t ne0, ne1;
} fam_tensor;

typedef struct family {
    const char *arch;
    int n_layer, n_head, n_head_kv;
    const fam_tensor *globals; /* {NULL} terminated */
    const fam_tensor *layer;   /* {NULL} terminated */
} family;

static int fam_count(const fam_tensor *t) {
    int n = 0;
    while (t[n].name) n++;
    return n;
}

static void fam_add(model *m, const char *name, const fam_tensor *t) {
    bool vec = t->ne1 == 0, norm = strstr(name, "_norm.") != NULL;
    add_tensor(m, name, vec || norm ? GGML_TYPE_F32 : GGML_TYPE_F16, vec ? 1 : 2, t->ne0, t->ne1);
}

static void family_model(model *m, const family *f) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    m->path = strdup(f->arch);
    int ng = fam_count(f->globals), nl = fam_count(f->layer);
    m->tensors = calloc((size_t)(ng + f->n_layer * nl), sizeof *m->tensors);
    ck_assert_ptr_nonnull(m->tensors);
    model_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "%s", f->arch);
    c->n_layer = f->n_layer;
    c->n_head = f->n_head;
    c->n_head_kv = f->n_head_kv;
    c->n_embd = f->globals[0].ne0; /* token_embd first */
    c->n_vocab = f->globals[0].ne1;
    c->tied_output = true;
    for (int g = 0; g < ng; g++) {
        fam_add(m, f->globals[g].name, &f->globals[g]);
        if (strcmp(f->globals[g].name, "output.weight") == 0) c->tied_output = false;
    }
    char name[96];
    for (int l = 0; l < f->n_layer; l++)
        for (int k = 0; k < nl; k++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, f->layer[k].name);
            fam_add(m, name, &f->layer[k]);
        }
}

/* Layer lists, -1 terminated. */
static const int MB16[] = {0, 1, 4, 7, 10, 13, 14, 15, -1};
static const int MB18[] = {0, 1, 4, 7, 10, 13, 15, 16, 17, -1};
static const int MB24[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23, -1};
static const int MB26[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 22, 23, 24, 25, -1};
static const int MB28[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27, -1};
static const int MB32[] = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31, -1};
static const int FIRST1[] = {0, -1};
static const int FIRST2[] = {0, 1, -1};
static const int FIRST3[] = {0, 1, 2, -1};
static const int FIRST4[] = {0, 1, 2, 3, -1};
static const int NONE[] = {-1};

static bool in_list(const int *layers, int l) {
    for (; *layers >= 0; layers++)
        if (*layers == l) return true;
    return false;
}

/* blk.L.<suffix> is `yes` for the layers listed, `no` for the others. */
static void expect_layers(const model *m, const int *t, const char *suffix, const int *layers, int yes, int no) {
    char n[96];
    for (int l = 0; l < (int)m->cfg.n_layer; l++) {
        layer_name(n, sizeof n, l, suffix);
        ASSERT_TYPE(m, t, n, in_list(layers, l) ? yes : no);
    }
}
#define EXPECT_ALL(m, t, suffix, type) expect_layers(m, t, suffix, NONE, type, type)

/* Plan f with mix (an imatrix or not). Every vector and every norm, whatever its rank, keeps
 * its F32: llama.cpp quantizes neither. */
static int *plan_family(const model *m, int mix, bool imatrix) {
    plan_opts o;
    plan_opts_init(&o, mix);
    o.has_imatrix = imatrix;
    int *t = plan_or_fail(m, &o);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *mt = &m->tensors[i];
        if (mt->n_dims == 1 || strstr(mt->name, "_norm."))
            CK_ASSERT_QUIET(t[i] == GGML_TYPE_F32, "%s %s: %s", quant_mix_name(mix), mt->name, type_name(t[i]));
    }
    return t;
}

#define Q2K GGML_TYPE_Q2_K
#define Q3K GGML_TYPE_Q3_K
#define Q4K GGML_TYPE_Q4_K
#define Q5K GGML_TYPE_Q5_K
#define Q6K GGML_TYPE_Q6_K
#define Q40 GGML_TYPE_Q4_0
#define Q41 GGML_TYPE_Q4_1
#define Q50 GGML_TYPE_Q5_0
#define Q51 GGML_TYPE_Q5_1
#define Q80 GGML_TYPE_Q8_0
#define IQ4NL GGML_TYPE_IQ4_NL

/* Llama 3.2 1B: GQA 4 (32 / 8 heads), tied embeddings, rope_freqs. */
static const fam_tensor LLAMA32_G[] = {{"token_embd.weight", 2048, 128256}, {"rope_freqs.weight", 32, 0},
                                       {"output_norm.weight", 2048, 0}, {NULL, 0, 0}};
static const fam_tensor LLAMA32_L[] = {
    {"attn_norm.weight", 2048, 0},       {"attn_q.weight", 2048, 2048},   {"attn_k.weight", 2048, 512},
    {"attn_v.weight", 2048, 512},        {"attn_output.weight", 2048, 2048}, {"ffn_norm.weight", 2048, 0},
    {"ffn_gate.weight", 2048, 8192},     {"ffn_up.weight", 2048, 8192},   {"ffn_down.weight", 8192, 2048},
    {NULL, 0, 0}};

START_TEST(family_llama32_1b) {
    const family f = {"llama", 16, 32, 8, LLAMA32_G, LLAMA32_L};
    model m;
    family_model(&m, &f);
    /* Q4_K_M: attn_v / ffn_down Q6_K on the use_more_bits layers; the tied token_embd is the
     * classifier: Q6_K */
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    ASSERT_TYPE(&m, t, "rope_freqs.weight", GGML_TYPE_F32);
    expect_layers(&m, t, "attn_v.weight", MB16, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB16, Q6K, Q4K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_k.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_gate.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q4K);
    free(t);
    /* Q2_K: GQA >= 4 gives attn_v Q4_K; ffn_down and attn_output Q3_K */
    t = plan_family(&m, MIX_Q2_K, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    EXPECT_ALL(&m, t, "attn_v.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q2K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q2K);
    free(t);
    /* Q3_K_M: attn_v Q5_K for i_attention_wv < 2; ffn_down Q5_K for i < 16/16 */
    t = plan_family(&m, MIX_Q3_K_M, false);
    expect_layers(&m, t, "attn_v.weight", FIRST2, Q5K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST1, Q5K, Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q3K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    /* Q8_0: the classifier stays Q8_0 */
    t = plan_family(&m, MIX_Q8_0, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    EXPECT_ALL(&m, t, "attn_v.weight", Q80);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q80);
    free(t);
    fake_free(&m);
}
END_TEST

/* Qwen3-0.6B: head_dim 128 with 16 heads (attn_q 1024 -> 2048, attn_output rows of 2048),
 * GQA 2, per-head q/k norms, tied embeddings. (qwen3 came after b4747: the same name rules.) */
static const fam_tensor QWEN3_G[] = {{"token_embd.weight", 1024, 151936}, {"output_norm.weight", 1024, 0},
                                     {NULL, 0, 0}};
static const fam_tensor QWEN3_L[] = {
    {"attn_norm.weight", 1024, 0},    {"attn_q.weight", 1024, 2048},       {"attn_q_norm.weight", 128, 0},
    {"attn_k.weight", 1024, 1024},    {"attn_k_norm.weight", 128, 0},      {"attn_v.weight", 1024, 1024},
    {"attn_output.weight", 2048, 1024}, {"ffn_norm.weight", 1024, 0},      {"ffn_gate.weight", 1024, 3072},
    {"ffn_up.weight", 1024, 3072},    {"ffn_down.weight", 3072, 1024},     {NULL, 0, 0}};

START_TEST(family_qwen3_0_6b) {
    const family f = {"qwen3", 28, 16, 8, QWEN3_G, QWEN3_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    expect_layers(&m, t, "attn_v.weight", MB28, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB28, Q6K, Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q4K);
    free(t);
    /* Q5_K_M: the same positions, Q6_K over Q5_K */
    t = plan_family(&m, MIX_Q5_K_M, false);
    expect_layers(&m, t, "attn_v.weight", MB28, Q6K, Q5K);
    expect_layers(&m, t, "ffn_down.weight", MB28, Q6K, Q5K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    /* Q4_K_S: attn_v Q5_K for the first 4, ffn_down Q5_K for the first 28/8 = 3 */
    t = plan_family(&m, MIX_Q4_K_S, false);
    expect_layers(&m, t, "attn_v.weight", FIRST4, Q5K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST3, Q5K, Q4K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    /* Q4_0 with an imatrix: ffn_down Q4_1 for the first 3; the classifier Q6_K */
    t = plan_family(&m, MIX_Q4_0, true);
    expect_layers(&m, t, "ffn_down.weight", FIRST3, Q41, Q40);
    EXPECT_ALL(&m, t, "attn_v.weight", Q40);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    fake_free(&m);
}
END_TEST

/* Gemma 2B: one KV head (GQA 8), head_dim 256, n_ff 16384, no output.weight in the family. */
static const fam_tensor GEMMA_G[] = {{"token_embd.weight", 2048, 256000}, {"output_norm.weight", 2048, 0},
                                     {NULL, 0, 0}};
static const fam_tensor GEMMA_L[] = {
    {"attn_norm.weight", 2048, 0},    {"attn_q.weight", 2048, 2048},   {"attn_k.weight", 2048, 256},
    {"attn_v.weight", 2048, 256},     {"attn_output.weight", 2048, 2048}, {"ffn_norm.weight", 2048, 0},
    {"ffn_gate.weight", 2048, 16384}, {"ffn_up.weight", 2048, 16384}, {"ffn_down.weight", 16384, 2048},
    {NULL, 0, 0}};

START_TEST(family_gemma_2b) {
    const family f = {"gemma", 18, 8, 1, GEMMA_G, GEMMA_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q2_K, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    EXPECT_ALL(&m, t, "attn_v.weight", Q4K); /* GQA 8 */
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_gate.weight", Q2K);
    free(t);
    t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    expect_layers(&m, t, "attn_v.weight", MB18, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB18, Q6K, Q4K);
    free(t);
    t = plan_family(&m, MIX_Q3_K_L, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    EXPECT_ALL(&m, t, "attn_v.weight", Q5K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q5K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q5K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q3K);
    free(t);
    fake_free(&m);
}
END_TEST

/* Gemma 2 2B: GQA 2, n_embd 2304 (9 x 256), post-attention and post-FFN norms, tied. */
static const fam_tensor GEMMA2_G[] = {{"token_embd.weight", 2304, 256000}, {"output_norm.weight", 2304, 0},
                                      {NULL, 0, 0}};
static const fam_tensor GEMMA2_L[] = {
    {"attn_norm.weight", 2304, 0},        {"attn_q.weight", 2304, 2048},  {"attn_k.weight", 2304, 1024},
    {"attn_v.weight", 2304, 1024},        {"attn_output.weight", 2048, 2304}, {"post_attention_norm.weight", 2304, 0},
    {"ffn_norm.weight", 2304, 0},         {"ffn_gate.weight", 2304, 9216}, {"ffn_up.weight", 2304, 9216},
    {"ffn_down.weight", 9216, 2304},      {"post_ffw_norm.weight", 2304, 0}, {NULL, 0, 0}};

START_TEST(family_gemma2_2b) {
    const family f = {"gemma2", 26, 8, 4, GEMMA2_G, GEMMA2_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    expect_layers(&m, t, "attn_v.weight", MB26, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB26, Q6K, Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    free(t);
    t = plan_family(&m, MIX_Q2_K, false);
    EXPECT_ALL(&m, t, "attn_v.weight", Q3K); /* GQA 2 */
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    t = plan_family(&m, MIX_Q5_K_S, false);
    EXPECT_ALL(&m, t, "attn_v.weight", Q5K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q5K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    fake_free(&m);
}
END_TEST

/* Gemma 3 1B: n_embd 1152 = 4.5 x 256, so every matrix reading the hidden state (attn_q/k/v,
 * ffn_gate/up, token_embd) falls back to a 32-block type; attn_output (rows of 4 x 256 = 1024)
 * and ffn_down (6912 = 27 x 256) keep the k-quants. 4 heads / 1 KV head: GQA 4. */
static const fam_tensor GEMMA3_G[] = {{"token_embd.weight", 1152, 262144}, {"output_norm.weight", 1152, 0},
                                      {NULL, 0, 0}};
static const fam_tensor GEMMA3_L[] = {
    {"attn_norm.weight", 1152, 0},   {"attn_q.weight", 1152, 1024},          {"attn_q_norm.weight", 256, 0},
    {"attn_k.weight", 1152, 256},    {"attn_k_norm.weight", 256, 0},         {"attn_v.weight", 1152, 256},
    {"attn_output.weight", 1024, 1152}, {"post_attention_norm.weight", 1152, 0}, {"ffn_norm.weight", 1152, 0},
    {"ffn_gate.weight", 1152, 6912}, {"ffn_up.weight", 1152, 6912},          {"ffn_down.weight", 6912, 1152},
    {"post_ffw_norm.weight", 1152, 0}, {NULL, 0, 0}};

START_TEST(family_gemma3_1b_fallbacks) {
    const family f = {"gemma3", 26, 4, 1, GEMMA3_G, GEMMA3_L};
    model m;
    family_model(&m, &f);
    /* Q4_K_M: the classifier's rows misfit Q4_K's block, so Q8_0 (not Q6_K); Q4_K -> Q5_0,
     * Q6_K -> Q8_0 */
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    EXPECT_ALL(&m, t, "attn_q.weight", Q50);
    EXPECT_ALL(&m, t, "attn_k.weight", Q50);
    expect_layers(&m, t, "attn_v.weight", MB26, Q80, Q50);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_gate.weight", Q50);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q50);
    expect_layers(&m, t, "ffn_down.weight", MB26, Q6K, Q4K);
    free(t);
    /* Q2_K: Q2_K -> IQ4_NL; attn_v Q4_K (GQA 4) -> Q5_0 */
    t = plan_family(&m, MIX_Q2_K, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    EXPECT_ALL(&m, t, "attn_q.weight", IQ4NL);
    EXPECT_ALL(&m, t, "ffn_up.weight", IQ4NL);
    EXPECT_ALL(&m, t, "attn_v.weight", Q50);
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    free(t);
    /* Q3_K_M: attn_v Q5_K -> Q5_1 for the first 2, Q4_K -> Q5_0 after; ffn_down Q5_K for
     * i < 26/16 = 1 */
    t = plan_family(&m, MIX_Q3_K_M, false);
    expect_layers(&m, t, "attn_v.weight", FIRST2, Q51, Q50);
    EXPECT_ALL(&m, t, "attn_q.weight", IQ4NL);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST1, Q5K, Q4K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    free(t);
    /* Q4_0: Q4_0's block fits, so the classifier wants Q6_K, which misfits: Q8_0 */
    t = plan_family(&m, MIX_Q4_0, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    EXPECT_ALL(&m, t, "attn_q.weight", Q40);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q40);
    free(t);
    t = plan_family(&m, MIX_Q6_K, false);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    EXPECT_ALL(&m, t, "attn_q.weight", Q80);
    EXPECT_ALL(&m, t, "attn_output.weight", Q6K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q6K);
    free(t);
    t = plan_family(&m, MIX_Q8_0, false);
    for (uint64_t i = 0; i < m.n_tensors; i++)
        if (m.tensors[i].n_dims == 2) ck_assert_int_eq(t[i], Q80);
    free(t);
    fake_free(&m);
}
END_TEST

/* Phi-2 as the converter writes today's PhiForCausalLM: separate attn_q/k/v with biases,
 * biased attn_output, ffn_up/ffn_down (no gate), LayerNorm weights and biases, an output
 * head with a bias. 2560 = 10 x 256, n_ff 10240. */
static const fam_tensor PHI2_G[] = {{"token_embd.weight", 2560, 51200}, {"output_norm.weight", 2560, 0},
                                    {"output_norm.bias", 2560, 0},      {"output.weight", 2560, 51200},
                                    {"output.bias", 51200, 0},          {NULL, 0, 0}};
static const fam_tensor PHI2_L[] = {
    {"attn_norm.weight", 2560, 0},   {"attn_norm.bias", 2560, 0},       {"attn_q.weight", 2560, 2560},
    {"attn_q.bias", 2560, 0},        {"attn_k.weight", 2560, 2560},     {"attn_k.bias", 2560, 0},
    {"attn_v.weight", 2560, 2560},   {"attn_v.bias", 2560, 0},          {"attn_output.weight", 2560, 2560},
    {"attn_output.bias", 2560, 0},   {"ffn_up.weight", 2560, 10240},    {"ffn_up.bias", 10240, 0},
    {"ffn_down.weight", 10240, 2560}, {"ffn_down.bias", 2560, 0},       {NULL, 0, 0}};
/* Old microsoft/phi-2 checkpoints (mixer.Wqkv): one fused attn_qkv instead. */
static const fam_tensor PHI2_QKV_L[] = {
    {"attn_norm.weight", 2560, 0},    {"attn_norm.bias", 2560, 0},      {"attn_qkv.weight", 2560, 7680},
    {"attn_qkv.bias", 7680, 0},       {"attn_output.weight", 2560, 2560}, {"attn_output.bias", 2560, 0},
    {"ffn_up.weight", 2560, 10240},   {"ffn_up.bias", 10240, 0},        {"ffn_down.weight", 10240, 2560},
    {"ffn_down.bias", 2560, 0},       {NULL, 0, 0}};

START_TEST(family_phi2) {
    const family f = {"phi2", 32, 32, 32, PHI2_G, PHI2_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q4K);
    expect_layers(&m, t, "attn_v.weight", MB32, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB32, Q6K, Q4K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q4K);
    free(t);
    t = plan_family(&m, MIX_Q3_K_S, false); /* no Q3_K_S rule for these: all Q3_K but the head */
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q3K);
    EXPECT_ALL(&m, t, "attn_v.weight", Q3K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    free(t);
    t = plan_family(&m, MIX_Q2_K, false);
    EXPECT_ALL(&m, t, "attn_v.weight", Q3K); /* no GQA */
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q2K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q2K);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    free(t);
    fake_free(&m);

    /* fused Q/K/V: the attn_qkv rule, one step up in the M/L mixes */
    const family fq = {"phi2", 32, 32, 32, PHI2_G, PHI2_QKV_L};
    family_model(&m, &fq);
    const struct {
        int mix, qkv;
    } cases[] = {{MIX_Q2_K, Q2K},   {MIX_Q3_K_S, Q3K}, {MIX_Q3_K_M, Q4K}, {MIX_Q3_K_L, Q4K}, {MIX_Q4_K_S, Q4K},
                 {MIX_Q4_K_M, Q5K}, {MIX_Q5_K_S, Q5K}, {MIX_Q5_K_M, Q6K}, {MIX_Q6_K, Q6K},   {MIX_Q4_0, Q40},
                 {MIX_Q8_0, Q80}};
    for (int k = 0; k < COUNT(cases); k++) {
        t = plan_family(&m, cases[k].mix, false);
        EXPECT_ALL(&m, t, "attn_qkv.weight", cases[k].qkv);
        free(t);
    }
    fake_free(&m);
}
END_TEST

/* Phi-3 mini 128k: fused attn_qkv (3072 -> 9216), fused gate+up in ffn_up (3072 -> 2 x 8192),
 * rope_factors_long/short vectors, untied head. */
static const fam_tensor PHI3_G[] = {{"token_embd.weight", 3072, 32064}, {"rope_factors_long.weight", 48, 0},
                                    {"rope_factors_short.weight", 48, 0}, {"output_norm.weight", 3072, 0},
                                    {"output.weight", 3072, 32064},       {NULL, 0, 0}};
static const fam_tensor PHI3_L[] = {
    {"attn_norm.weight", 3072, 0}, {"attn_qkv.weight", 3072, 9216}, {"attn_output.weight", 3072, 3072},
    {"ffn_norm.weight", 3072, 0},  {"ffn_up.weight", 3072, 16384},  {"ffn_down.weight", 8192, 3072},
    {NULL, 0, 0}};

START_TEST(family_phi3_mini) {
    const family f = {"phi3", 32, 32, 32, PHI3_G, PHI3_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q4K);
    ASSERT_TYPE(&m, t, "rope_factors_long.weight", GGML_TYPE_F32);
    ASSERT_TYPE(&m, t, "rope_factors_short.weight", GGML_TYPE_F32);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q5K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB32, Q6K, Q4K);
    free(t);
    t = plan_family(&m, MIX_Q3_K_M, false);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    EXPECT_ALL(&m, t, "ffn_up.weight", Q3K);
    expect_layers(&m, t, "ffn_down.weight", FIRST2, Q5K, Q4K);
    free(t);
    t = plan_family(&m, MIX_Q3_K_L, false);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q5K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q5K);
    free(t);
    t = plan_family(&m, MIX_Q5_K_M, false);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q6K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q5K);
    expect_layers(&m, t, "ffn_down.weight", MB32, Q6K, Q5K);
    free(t);
    t = plan_family(&m, MIX_Q2_K, false);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q2K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q3K);
    EXPECT_ALL(&m, t, "ffn_down.weight", Q3K);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    free(t);
    t = plan_family(&m, MIX_Q4_K_S, false);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST4, Q5K, Q4K);
    free(t);
    fake_free(&m);
}
END_TEST

/* StableLM 2 1.6B: LayerNorm weights and biases, q/k/v biases, n_ff 5632 = 22 x 256; plus
 * the per-head q/k LayerNorms of StableLM 2 12B, which are 2-D ([head_dim, n_head]) and still
 * never quantized. */
static const fam_tensor STABLELM_G[] = {{"token_embd.weight", 2048, 100352}, {"output_norm.weight", 2048, 0},
                                        {"output_norm.bias", 2048, 0},       {"output.weight", 2048, 100352},
                                        {NULL, 0, 0}};
static const fam_tensor STABLELM_L[] = {
    {"attn_norm.weight", 2048, 0},  {"attn_norm.bias", 2048, 0},      {"attn_q.weight", 2048, 2048},
    {"attn_q.bias", 2048, 0},       {"attn_q_norm.weight", 64, 32},   {"attn_k.weight", 2048, 2048},
    {"attn_k.bias", 2048, 0},       {"attn_k_norm.weight", 64, 32},   {"attn_v.weight", 2048, 2048},
    {"attn_v.bias", 2048, 0},       {"attn_output.weight", 2048, 2048}, {"ffn_norm.weight", 2048, 0},
    {"ffn_norm.bias", 2048, 0},     {"ffn_gate.weight", 2048, 5632},  {"ffn_up.weight", 2048, 5632},
    {"ffn_down.weight", 5632, 2048}, {NULL, 0, 0}};

START_TEST(family_stablelm2) {
    const family f = {"stablelm", 24, 32, 32, STABLELM_G, STABLELM_L};
    model m;
    family_model(&m, &f);
    int *t = plan_family(&m, MIX_Q4_K_M, false);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q4K);
    ASSERT_TYPE(&m, t, "blk.3.attn_q_norm.weight", GGML_TYPE_F32);
    expect_layers(&m, t, "attn_v.weight", MB24, Q6K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", MB24, Q6K, Q4K);
    EXPECT_ALL(&m, t, "attn_q.weight", Q4K);
    free(t);
    t = plan_family(&m, MIX_Q4_K_S, false);
    expect_layers(&m, t, "attn_v.weight", FIRST4, Q5K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST3, Q5K, Q4K);
    free(t);
    t = plan_family(&m, MIX_Q3_K_M, false);
    expect_layers(&m, t, "attn_v.weight", FIRST2, Q5K, Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST1, Q5K, Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    free(t);
    t = plan_family(&m, MIX_Q5_0, true);
    expect_layers(&m, t, "ffn_down.weight", FIRST3, Q51, Q50);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(family_facts_70b_and_output_names) {
    /* llama.cpp's model type 70B: qwen2 with 80 layers whatever its heads; llama with 80
     * layers only with GQA (without, it is "65B") */
    fake_spec s = {.n_layer = 80, .n_embd = 256, .n_ff = 256, .n_vocab = 256, .n_head = 8, .n_head_kv = 8,
                   .type = GGML_TYPE_F16, .arch = "qwen2"};
    model m;
    fake_model(&m, &s);
    plan_opts o;
    plan_opts_init(&o, MIX_Q3_K_S);
    int *t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.7.attn_v.weight", Q5K);
    ASSERT_TYPE(&m, t, "blk.7.attn_q.weight", Q3K);
    free(t);
    fake_free(&m);
    s.arch = "llama";
    fake_model(&m, &s);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.7.attn_v.weight", Q3K);
    free(t);
    fake_free(&m);
    s.arch = "qwen2";
    s.n_layer = 64; /* Qwen2.5-32B: no bump */
    fake_model(&m, &s);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "blk.7.attn_v.weight", Q3K);
    free(t);
    fake_free(&m);

    /* gemma's and gemma2's tensor tables have no output: a stray output.weight is an ordinary
     * matrix to llama-quantize and token_embd stays the classifier; for llama it is the head */
    s = small_spec(256, 8, 8);
    s.arch = "gemma";
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_Q4_K_M);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", Q4K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q6K);
    free(t);
    o.output_type = GGML_TYPE_Q8_0; /* --output-tensor-type: both (token_embd as the head) */
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", Q80);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q80);
    free(t);
    fake_free(&m);
    s.arch = "gemma3";
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_Q4_K_M);
    t = plan_or_fail(&m, &o);
    ASSERT_TYPE(&m, t, "output.weight", Q6K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q4K);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(attention_layer_count_is_checked) {
    int types[512];
    slmc_err err = {{0}};
    plan_opts o;
    plan_opts_init(&o, MIX_Q4_K_M);
    /* a layer without attn_v: llama-quantize's "n_attention_wv is unexpected" */
    fake_spec s = small_spec(256, 8, 8);
    model m;
    fake_model(&m, &s);
    int64_t v = model_find(&m, "blk.3.attn_v.weight");
    ck_assert_int_ge(v, 0);
    free(m.tensors[v].name);
    m.tensors[v].name = strdup("blk.3.attn_x.weight");
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_msg(strstr(err.msg, "5 attn_v") && strstr(err.msg, "6 attention layers"), "%s", err.msg);
    /* whatever the mix: the check comes before any rule */
    plan_opts_init(&o, MIX_F16);
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    fake_free(&m);

    /* both a fused attn_qkv and an attn_v in each layer: 2 per layer */
    const family f = {"phi2", 4, 32, 32, PHI2_G, PHI2_L};
    family_model(&m, &f);
    ck_assert_msg(quant_plan(&m, &o, types, &err) == 0, "%s", err.msg); /* F16 mix: q/k/v fine */
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        char *p = strstr(m.tensors[i].name, ".attn_q.weight");
        if (!p) continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s.attn_qkv.weight", (int)(p - m.tensors[i].name), m.tensors[i].name);
        free(m.tensors[i].name);
        m.tensors[i].name = strdup(name);
    }
    plan_opts_init(&o, MIX_Q4_K_M);
    ck_assert_int_ne(quant_plan(&m, &o, types, &err), 0);
    ck_assert_msg(strstr(err.msg, "8 attn_v") && strstr(err.msg, "4 attention layers"), "%s", err.msg);
    fake_free(&m);

    /* no attention tensors at all: nothing to check */
    const fam_tensor ffn_only[] = {{"ffn_up.weight", 256, 512}, {"ffn_down.weight", 512, 256}, {NULL, 0, 0}};
    const fam_tensor glob[] = {{"token_embd.weight", 256, 512}, {NULL, 0, 0}};
    const family g = {"llama", 4, 8, 8, glob, ffn_only};
    family_model(&m, &g);
    ck_assert_msg(quant_plan(&m, &o, types, &err) == 0, "%s", err.msg);
    fake_free(&m);
}
END_TEST

START_TEST(imatrix_requirement) {
    /* llama-quantize's "Missing importance matrix for tensor ... in a very low-bit quantization" */
    ck_assert(plan_needs_imatrix(MIX_Q2_K, "blk.0.attn_q.weight", GGML_TYPE_IQ2_XXS));
    ck_assert(plan_needs_imatrix(MIX_Q4_K_M, "token_embd.weight", GGML_TYPE_IQ2_XS));
    ck_assert(plan_needs_imatrix(MIX_Q4_K_M, "output.weight", GGML_TYPE_IQ2_S));
    ck_assert(plan_needs_imatrix(MIX_Q4_K_M, "blk.0.ffn_up.weight", GGML_TYPE_IQ1_S));
    ck_assert(plan_needs_imatrix(MIX_Q4_K_M, "blk.0.ffn_up.weight", GGML_TYPE_IQ1_M));
    ck_assert(!plan_needs_imatrix(MIX_Q4_K_M, "token_embd.weight", GGML_TYPE_IQ1_M));
    ck_assert(!plan_needs_imatrix(MIX_Q4_K_M, "output.weight", GGML_TYPE_IQ1_M));
    /* Q2_K only in the Q2_K_S mix (llama_ftype 21), and not for token_embd */
    ck_assert(!plan_needs_imatrix(MIX_Q2_K, "blk.0.ffn_up.weight", GGML_TYPE_Q2_K));
    ck_assert(plan_needs_imatrix(21, "blk.0.ffn_up.weight", GGML_TYPE_Q2_K));
    ck_assert(plan_needs_imatrix(21, "output.weight", GGML_TYPE_Q2_K));
    ck_assert(!plan_needs_imatrix(21, "token_embd.weight", GGML_TYPE_Q2_K));
    /* nothing else */
    const int others[] = {GGML_TYPE_Q3_K, GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS,
                          GGML_TYPE_Q4_0, GGML_TYPE_F16};
    for (int k = 0; k < COUNT(others); k++) ck_assert(!plan_needs_imatrix(21, "blk.0.ffn_up.weight", others[k]));
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * The i-quant and ternary mixes (llama_ftype 19-31, 36, 37)
 *
 * References made with llama-quantize b4747 (tests/data/plans, see the header comment);
 * the expected types of the synthetic cases below are read off llama_tensor_get_type.
 * ------------------------------------------------------------------------------------- */

#define IQ1S GGML_TYPE_IQ1_S
#define IQ1M GGML_TYPE_IQ1_M
#define IQ2XXS GGML_TYPE_IQ2_XXS
#define IQ2XS GGML_TYPE_IQ2_XS
#define IQ2S GGML_TYPE_IQ2_S
#define IQ3XXS GGML_TYPE_IQ3_XXS
#define IQ3S GGML_TYPE_IQ3_S
#define IQ4XS GGML_TYPE_IQ4_XS
#define TQ10 GGML_TYPE_TQ1_0
#define TQ20 GGML_TYPE_TQ2_0

/* A project file under tests/data (run from the project root) as JSON; fails when missing. */
static json_t *load_data_json(const char *rel) {
    char path[256];
    snprintf(path, sizeof path, "tests/data/%s", rel);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s not found (run the test from the project root)", path);
    fclose(f);
    return load_json(path);
}

/* Compare m's plan under o with llama-quantize's (name -> type); returns the tensors compared. */
static int compare_plan(const model *m, const plan_opts *o, json_t *ref, const char *what) {
    ck_assert_msg(json_is_object(ref), "%s: not an object", what);
    ck_assert_uint_eq(json_object_size(ref), m->n_tensors);
    int *types = plan_or_fail(m, o);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const char *name = m->tensors[i].name;
        const char *want = json_string_value(json_object_get(ref, name));
        ck_assert_msg(want != NULL, "%s: no %s in the reference", what, name);
        ck_assert_msg(strcmp(type_name(types[i]), want) == 0, "%s %s: ours %s, llama.cpp %s", what, name,
                      type_name(types[i]), want);
    }
    free(types);
    return (int)m->n_tensors;
}

/* Plan m as o and run the imatrix check with importance (NULL: no imatrix); returns its rc. */
static int check_imatrix(const model *m, const plan_opts *o, const float *const *importance, slmc_err *err) {
    int *types = plan_or_fail(m, o);
    int rc = plan_check_imatrix(m, o->mix, types, importance, err);
    free(types);
    return rc;
}

/* The refusal names tensor `name` and the planned type, with llama.cpp's wording. */
static void assert_refused(int rc, const slmc_err *err, const char *name, int type) {
    ck_assert_msg(rc != 0, "%s was not refused", name);
    char want[160];
    snprintf(want, sizeof want, "missing importance matrix for tensor %s in a very low-bit quantization (%s", name,
             type_name(type));
    ck_assert_msg(strstr(err->msg, want) != NULL, "message: %s (want \"%s\")", err->msg, want);
    ck_assert_msg(strchr(err->msg, '\n') == NULL, "one line: %s", err->msg);
}

START_TEST(iq_mix_names) {
    const struct {
        const char *name;
        int mix, base;
    } mixes[] = {
        {"IQ2_XXS", 19, IQ2XXS}, {"IQ2_XS", 20, IQ2XS},  {"Q2_K_S", 21, Q2K},    {"IQ3_XS", 22, IQ3S},
        {"IQ3_XXS", 23, IQ3XXS}, {"IQ1_S", 24, IQ1S},    {"IQ4_NL", 25, IQ4NL},  {"IQ3_S", 26, IQ3S},
        {"IQ3_M", 27, IQ3S},     {"IQ2_S", 28, IQ2XS},   {"IQ2_M", 29, IQ2S},    {"IQ4_XS", 30, IQ4XS},
        {"IQ1_M", 31, IQ1M},     {"TQ1_0", 36, TQ10},    {"TQ2_0", 37, TQ20},
    };
    for (int k = 0; k < COUNT(mixes); k++) {
        ck_assert_int_eq(quant_mix_from_name(mixes[k].name), mixes[k].mix);
        ck_assert_str_eq(quant_mix_name(mixes[k].mix), mixes[k].name);
        ck_assert_int_eq(quant_mix_base_type(mixes[k].mix), mixes[k].base);
        char num[8];
        snprintf(num, sizeof num, "%d", mixes[k].mix);
        ck_assert_int_eq(quant_mix_from_name(num), mixes[k].mix);
    }
    ck_assert_int_eq(quant_mix_from_name("iq2_xxs"), MIX_IQ2_XXS);
    /* 33-35 were the removed Q4_0_4_4 / Q4_0_4_8 / Q4_0_8_8 */
    ck_assert_int_eq(quant_mix_from_name("33"), -1);
    ck_assert_int_eq(quant_mix_from_name("35"), -1);
    ck_assert_int_eq(quant_mix_from_name("38"), -1);
    ck_assert_int_eq(quant_mix_from_name("IQ4_K"), -1);
}
END_TEST

/* Mixes llama-quantize writes for books-22m with its imatrix, and those it writes without. */
static const char *const IQ_MIXES[] = {"IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                       "IQ3_M",   "IQ2_S",  "IQ2_M",  "IQ4_XS", "IQ1_M",   "TQ1_0", "TQ2_0"};
static const char *const IQ_MIXES_NO_IMATRIX[] = {"IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"};

START_TEST(books22m_iq_mixes_match_llama_quantize) {
    char *dir = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, dir, NULL, &err) == 0, "%s", err.msg);
    int compared = 0;
    for (int pass = 0; pass < 2; pass++) {
        bool imatrix = pass == 0;
        int n = imatrix ? COUNT(IQ_MIXES) : COUNT(IQ_MIXES_NO_IMATRIX);
        for (int k = 0; k < n; k++) {
            const char *mix = imatrix ? IQ_MIXES[k] : IQ_MIXES_NO_IMATRIX[k];
            char rel[128], what[64];
            snprintf(rel, sizeof rel, "plans/books-22m-%s%s.json", mix, imatrix ? "" : "-noimatrix");
            snprintf(what, sizeof what, "%s%s", mix, imatrix ? " (imatrix)" : " (no imatrix)");
            json_t *ref = load_data_json(rel);
            plan_opts o;
            plan_opts_init(&o, quant_mix_from_name(mix));
            o.has_imatrix = imatrix;
            compared += compare_plan(&m, &o, ref, what);
            json_decref(ref);
        }
    }
    ck_assert_int_eq(compared, (15 + 7) * 57);
    model_close(&m);
    free(dir);
}
END_TEST

/* llama-quantize on books-22m with its imatrix cut down by --include-weights / --exclude-weights
 * (substrings of names, as llama-quantize matches them), or with none: which tensor it refuses,
 * "mix" when it refuses the mix before any tensor (quantize.cpp's "Please do not use ..."). */
START_TEST(books22m_imatrix_refusals_match_llama_quantize) {
    char *dir = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *im_path = SHARED_OR_SKIP("reference/books-22m-imatrix.dat");
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(model_open(&m, dir, NULL, &err) == 0, "%s", err.msg);
    imatrix im;
    ck_assert_msg(imatrix_load(&im, im_path, &err) == 0, "%s", err.msg);
    const float **full = NULL;
    uint64_t n_found = 0;
    ck_assert_msg(imatrix_importance_table(&im, &m, &full, &n_found, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(n_found, 42); /* the layer matrices: no token_embd, no output */
    const float **imp = calloc(m.n_tensors, sizeof *imp);
    ck_assert_ptr_nonnull(imp);

    json_t *cases = load_data_json("plans/books-22m-imatrix-refusals.json");
    ck_assert(json_is_array(cases));
    int n_refused = 0, n_accepted = 0;
    size_t c;
    json_t *cs;
    json_array_foreach(cases, c, cs) {
        const char *mix_name = json_string_value(json_object_get(cs, "mix"));
        int mix = quant_mix_from_name(mix_name);
        ck_assert_int_ge(mix, 0);
        bool use = json_is_true(json_object_get(cs, "imatrix"));
        json_t *inc = json_object_get(cs, "include"), *exc = json_object_get(cs, "exclude");
        bool any = false;
        for (uint64_t i = 0; i < m.n_tensors; i++) {
            const char *name = m.tensors[i].name;
            bool keep = use && full[i];
            size_t k;
            json_t *pat;
            if (keep && inc) {
                bool hit = false;
                json_array_foreach(inc, k, pat) hit |= strstr(name, json_string_value(pat)) != NULL;
                keep = hit;
            }
            if (keep && exc) json_array_foreach(exc, k, pat) keep &= strstr(name, json_string_value(pat)) == NULL;
            imp[i] = keep ? full[i] : NULL;
            any |= keep;
        }
        plan_opts o;
        plan_opts_init(&o, mix);
        o.has_imatrix = any; /* llama-quantize: importance data left after the filters */
        json_t *refused = json_object_get(cs, "refused");
        int rc = check_imatrix(&m, &o, use ? imp : NULL, &err);
        if (json_is_null(refused)) {
            CK_ASSERT_QUIET(rc == 0, "case %zu (%s): refused: %s", c, mix_name, err.msg);
            n_accepted++;
            continue;
        }
        const char *name = json_string_value(refused);
        /* a refused mix: ours names its first tensor, the one an imatrix without it would stop at */
        if (strcmp(name, "mix") == 0) name = "blk.0.attn_k.weight";
        int *types = plan_or_fail(&m, &o);
        assert_refused(rc, &err, name, type_of(&m, types, name));
        free(types);
        n_refused++;
    }
    ck_assert_int_eq(n_refused, 21);
    ck_assert_int_eq(n_accepted, 18);
    json_decref(cases);
    free(imp);
    free(full);
    imatrix_free(&im);
    model_close(&m);
    free(im_path);
    free(dir);
}
END_TEST

/* A model view from a synthetic reference: [name, ne0, ne1, type] per tensor. */
static void ref_model(model *m, json_t *ref) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    m->path = strdup("synthetic");
    json_t *ts = json_object_get(ref, "tensors");
    m->tensors = calloc(json_array_size(ts), sizeof *m->tensors);
    ck_assert_ptr_nonnull(m->tensors);
    model_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "%s", json_string_value(json_object_get(ref, "arch")));
    c->n_layer = json_integer_value(json_object_get(ref, "n_layer"));
    c->n_head = json_integer_value(json_object_get(ref, "n_head"));
    c->n_head_kv = json_integer_value(json_object_get(ref, "n_head_kv"));
    c->tied_output = true;
    size_t k;
    json_t *t;
    json_array_foreach(ts, k, t) {
        const char *name = json_string_value(json_array_get(t, 0));
        int64_t ne0 = json_integer_value(json_array_get(t, 1)), ne1 = json_integer_value(json_array_get(t, 2));
        int type = type_from_name(json_string_value(json_array_get(t, 3)));
        ck_assert_int_ge(type, 0);
        add_tensor(m, name, type, ne1 > 1 ? 2 : 1, ne0, ne1);
        if (strcmp(name, "output.weight") == 0) c->tied_output = false;
    }
}

/* Models made by `slmc synth --config` (converted to F16 GGUF) that books-22m cannot stand in
 * for, through llama-quantize b4747 with and without an importance matrix (all ones, for every
 * layer matrix): 32 layers with GQA 4; 16 layers, no GQA, tied embeddings; rows of 384 (every
 * 256-block falls back); phi3's fused attn_qkv and gate+up over 16 layers. */
START_TEST(synthetic_models_match_llama_quantize) {
    const char *const models[] = {"llama32-gqa4", "llama16-tied", "llama8-rows384", "phi3-16"};
    int compared = 0, refused = 0;
    for (int mi = 0; mi < COUNT(models); mi++) {
        char rel[128];
        snprintf(rel, sizeof rel, "plans/synth-%s.json", models[mi]);
        json_t *ref = load_data_json(rel);
        model m;
        ref_model(&m, ref);
        /* the importance llama-quantize had: an entry for every tensor the imatrix names */
        const float **imp = calloc(m.n_tensors, sizeof *imp);
        ck_assert_ptr_nonnull(imp);
        static const float one = 1.0f;
        size_t k;
        json_t *nm;
        json_array_foreach(json_object_get(ref, "imatrix"), k, nm) {
            int64_t i = model_find(&m, json_string_value(nm));
            ck_assert_int_ge(i, 0);
            imp[i] = &one;
        }
        for (int pass = 0; pass < 2; pass++) {
            bool imatrix = pass == 0;
            json_t *plans = json_object_get(ref, imatrix ? "with_imatrix" : "without_imatrix");
            ck_assert_uint_eq(json_object_size(plans), 15);
            const char *mix_name;
            json_t *plan;
            json_object_foreach(plans, mix_name, plan) {
                char what[96];
                snprintf(what, sizeof what, "%s %s%s", models[mi], mix_name, imatrix ? "" : " (no imatrix)");
                plan_opts o;
                plan_opts_init(&o, quant_mix_from_name(mix_name));
                o.has_imatrix = imatrix;
                slmc_err err = {{0}};
                int rc = check_imatrix(&m, &o, imatrix ? imp : NULL, &err);
                json_t *r = json_is_object(plan) ? json_object_get(plan, "refused") : NULL;
                if (!r) {
                    CK_ASSERT_QUIET(rc == 0, "%s: refused: %s", what, err.msg);
                    /* llama-quantize's types in the order of "tensors" */
                    ck_assert_uint_eq(json_array_size(plan), m.n_tensors);
                    int *types = plan_or_fail(&m, &o);
                    for (uint64_t i = 0; i < m.n_tensors; i++) {
                        const char *want = json_string_value(json_array_get(plan, i));
                        CK_ASSERT_QUIET(want && strcmp(type_name(types[i]), want) == 0, "%s %s: ours %s, llama.cpp %s",
                                      what, m.tensors[i].name, type_name(types[i]), want);
                    }
                    free(types);
                    compared += (int)m.n_tensors;
                    continue;
                }
                CK_ASSERT_QUIET(rc != 0, "%s: llama-quantize refuses, we do not", what);
                const char *name = json_string_value(r);
                if (strcmp(name, "mix") != 0) {
                    int *types = plan_or_fail(&m, &o);
                    assert_refused(rc, &err, name, type_of(&m, types, name));
                    free(types);
                }
                refused++;
            }
        }
        free(imp);
        fake_free(&m);
        json_decref(ref);
    }
    ck_assert_int_gt(compared, 0);
    ck_assert_int_gt(refused, 0);
}
END_TEST

/* What each mix gives a 32-layer llama without GQA (n/8 = 4, 7n/8 = 28). */
START_TEST(iq_rules_over_32_layers) {
    fake_spec s = {.n_layer = 32, .n_embd = 256, .n_ff = 768, .n_vocab = 1024, .n_head = 8, .n_head_kv = 8,
                   .type = GGML_TYPE_F16, .reversed = true};
    model m;
    fake_model(&m, &s);
    const struct {
        int mix;
        bool imatrix;
        int base, embd, output;
        int v, kq;             /* attn_v; attn_k and attn_q */
        int down_first, down;  /* ffn_down of layers 0-3, of the others */
        int attn_out;
        int gate_up_mid;       /* ffn_gate / ffn_up of layers 4-27 (the others: base) */
    } cases[] = {
        {MIX_IQ2_XXS, true, IQ2XXS, Q2K, Q5K, Q2K, IQ2XXS, Q2K, IQ2XXS, IQ2XXS, IQ2XXS},
        {MIX_IQ2_XS, true, IQ2XS, Q2K, Q5K, Q2K, IQ2XS, Q2K, IQ2XS, IQ2XS, IQ2XS},
        {MIX_IQ1_S, true, IQ1S, Q2K, Q5K, Q2K, IQ1S, Q2K, IQ1S, IQ2XXS, IQ1S},
        {MIX_IQ1_M, true, IQ1M, Q2K, Q5K, Q2K, IQ1M, Q2K, IQ1M, IQ2XXS, IQ1M},
        {MIX_IQ2_S, true, IQ2XS, IQ3S, Q5K, IQ3S, IQ2XS, IQ3S, IQ2XS, IQ3S, IQ2XS},
        {MIX_IQ2_M, true, IQ2S, IQ3S, Q5K, IQ3S, IQ2S, IQ3S, IQ2S, IQ3S, IQ2S},
        {MIX_Q2_K_S, true, Q2K, Q2K, Q6K, Q2K, Q2K, Q4K, Q2K, Q2K, Q2K},
        {MIX_IQ3_XXS, true, IQ3XXS, IQ3S, Q5K, IQ3XXS, IQ2S, IQ3XXS, IQ3XXS, IQ3S, IQ3XXS},
        {MIX_IQ3_XXS, false, IQ3XXS, IQ3S, Q5K, IQ3S, IQ2S, Q4K, Q3K, IQ3S, IQ3XXS},
        {MIX_IQ3_XS, true, IQ3S, IQ3S, Q6K, IQ3S, IQ3XXS, IQ3S, IQ3S, IQ3S, IQ3XXS},
        {MIX_IQ3_S, true, IQ3S, IQ3S, Q6K, IQ3S, IQ3S, IQ3S, IQ3S, IQ3S, IQ3S},
        {MIX_IQ3_M, true, IQ3S, IQ3S, Q6K, Q4K, IQ3S, Q4K, IQ3S, Q4K, IQ3S},
        {MIX_IQ4_NL, true, IQ4NL, IQ4NL, Q6K, IQ4NL, IQ4NL, IQ4NL, IQ4NL, IQ4NL, IQ4NL},
        {MIX_IQ4_NL, false, IQ4NL, IQ4NL, Q6K, IQ4NL, IQ4NL, Q5K, IQ4NL, IQ4NL, IQ4NL},
        {MIX_IQ4_XS, false, IQ4XS, IQ4XS, Q6K, IQ4XS, IQ4XS, Q5K, IQ4XS, IQ4XS, IQ4XS},
        {MIX_TQ1_0, false, TQ10, Q4K, Q6K, TQ10, TQ10, TQ10, TQ10, TQ10, TQ10},
        {MIX_TQ2_0, true, TQ20, Q4K, Q6K, TQ20, TQ20, TQ20, TQ20, TQ20, TQ20},
    };
    static const int MIDDLE32[] = {4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, -1};
    for (int k = 0; k < COUNT(cases); k++) {
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        o.has_imatrix = cases[k].imatrix;
        int *t = plan_or_fail(&m, &o);
        ASSERT_TYPE(&m, t, "token_embd.weight", cases[k].embd);
        ASSERT_TYPE(&m, t, "output.weight", cases[k].output);
        EXPECT_ALL(&m, t, "attn_v.weight", cases[k].v);
        EXPECT_ALL(&m, t, "attn_k.weight", cases[k].kq);
        EXPECT_ALL(&m, t, "attn_q.weight", cases[k].kq);
        expect_layers(&m, t, "ffn_down.weight", FIRST4, cases[k].down_first, cases[k].down);
        EXPECT_ALL(&m, t, "attn_output.weight", cases[k].attn_out);
        expect_layers(&m, t, "ffn_gate.weight", MIDDLE32, cases[k].gate_up_mid, cases[k].base);
        expect_layers(&m, t, "ffn_up.weight", MIDDLE32, cases[k].gate_up_mid, cases[k].base);
        ASSERT_TYPE(&m, t, "blk.7.attn_norm.weight", GGML_TYPE_F32);
        free(t);
    }
    fake_free(&m);
}
END_TEST

START_TEST(iq_attn_v_by_gqa_and_experts) {
    const struct {
        int n_head, n_head_kv, n_expert, mix, want_v;
    } cases[] = {
        /* GQA 4 */
        {8, 2, 0, MIX_IQ2_XXS, Q4K}, {8, 2, 0, MIX_IQ1_S, Q4K},  {8, 2, 0, MIX_IQ2_S, Q4K},  {8, 2, 0, MIX_IQ2_M, Q4K},
        {8, 2, 0, MIX_Q2_K_S, Q4K},  {8, 2, 0, MIX_IQ3_XXS, Q4K}, {8, 2, 0, MIX_IQ3_XS, Q4K}, {8, 2, 0, MIX_IQ3_S, Q4K},
        {8, 2, 0, MIX_IQ3_M, Q4K},   {8, 2, 0, MIX_IQ4_NL, Q5K}, {8, 2, 0, MIX_IQ4_XS, Q5K}, {8, 2, 0, MIX_TQ1_0, TQ10},
        /* GQA 2 */
        {8, 4, 0, MIX_IQ2_XXS, Q2K}, {8, 4, 0, MIX_IQ2_S, IQ3S}, {8, 4, 0, MIX_Q2_K_S, Q2K}, {8, 4, 0, MIX_IQ3_XS, IQ3S},
        {8, 4, 0, MIX_IQ3_S, IQ3S},  {8, 4, 0, MIX_IQ3_M, Q4K},  {8, 4, 0, MIX_IQ4_NL, IQ4NL},
        /* 4 experts: the very-low-bit mixes take them as GQA 4; the others ignore them */
        {8, 8, 4, MIX_IQ2_XXS, Q4K}, {8, 8, 4, MIX_IQ1_M, Q4K},  {8, 8, 4, MIX_IQ3_S, IQ3S}, {8, 8, 4, MIX_Q2_K_S, Q2K},
        {8, 8, 2, MIX_IQ2_XXS, Q2K},
        /* 8 experts: Q8_0, but not in the very-low-bit mixes (their own rule, no bump after it) */
        {8, 8, 8, MIX_IQ2_XXS, Q4K}, {8, 8, 8, MIX_IQ2_M, Q4K},  {8, 8, 8, MIX_IQ3_S, Q80},  {8, 8, 8, MIX_Q2_K_S, Q80},
        {8, 8, 8, MIX_IQ4_XS, Q80},  {8, 8, 8, MIX_TQ1_0, Q80},  {8, 8, 8, MIX_IQ3_XXS, Q80},
    };
    for (int k = 0; k < COUNT(cases); k++) {
        fake_spec s = small_spec(512, cases[k].n_head, cases[k].n_head_kv);
        model m;
        fake_model(&m, &s);
        if (cases[k].n_expert) ck_assert_int_eq(meta_set_u32(&m.kv, "llama.expert_count", cases[k].n_expert), 0);
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        o.has_imatrix = true;
        int *t = plan_or_fail(&m, &o);
        for (int l = 0; l < 6; l++) {
            char n[64];
            layer_name(n, sizeof n, l, "attn_v.weight");
            int got = type_of(&m, t, n);
            CK_ASSERT_QUIET(got == cases[k].want_v, "case %d (%s, heads %d/%d, %d experts) %s: got %s, want %s", k,
                          quant_mix_name(cases[k].mix), cases[k].n_head, cases[k].n_head_kv, cases[k].n_expert, n,
                          type_name(got), type_name(cases[k].want_v));
        }
        free(t);
        fake_free(&m);
    }
}
END_TEST

/* A Qwen2-MoE-like block: 8 routed experts (stacked, shown 2-D here) and a shared expert. */
static const fam_tensor MOE_G[] = {{"token_embd.weight", 256, 1024}, {"output_norm.weight", 256, 0},
                                   {"output.weight", 256, 1024},     {NULL, 0, 0}};
static const fam_tensor MOE_L[] = {
    {"attn_norm.weight", 256, 0},      {"attn_q.weight", 256, 256},          {"attn_k.weight", 256, 64},
    {"attn_v.weight", 256, 64},        {"attn_output.weight", 256, 256},     {"ffn_norm.weight", 256, 0},
    {"ffn_gate_inp.weight", 256, 8},   {"ffn_gate_exps.weight", 256, 512},   {"ffn_up_exps.weight", 256, 512},
    {"ffn_down_exps.weight", 512, 256}, {"ffn_gate_shexp.weight", 256, 512}, {"ffn_up_shexp.weight", 256, 512},
    {"ffn_down_shexp.weight", 512, 256}, {NULL, 0, 0}};

START_TEST(iq_rules_for_moe) {
    /* 8 experts, 6 layers, no GQA */
    fake_spec s = small_spec(256, 8, 8);
    model m;
    fake_model(&m, &s);
    ck_assert_int_eq(meta_set_u32(&m.kv, "llama.expert_count", 8), 0);
    const struct {
        int mix, attn_k, attn_q, attn_out;
    } cases[] = {
        {MIX_IQ2_XXS, Q4K, IQ2XXS, Q5K}, {MIX_IQ1_S, Q4K, IQ1S, Q5K},    {MIX_IQ2_M, Q4K, IQ2S, Q5K},
        {MIX_IQ3_XS, Q80, IQ3XXS, Q5K},  {MIX_IQ3_XXS, Q80, IQ2S, Q5K},  {MIX_IQ3_S, Q80, IQ3S, Q5K},
        {MIX_IQ3_M, Q80, IQ3S, Q5K},     {MIX_IQ4_NL, Q80, IQ4NL, Q5K},  {MIX_IQ4_XS, Q80, IQ4XS, Q5K},
        {MIX_Q2_K_S, Q80, Q2K, Q2K}, /* not in llama.cpp's list of 8-expert attn_output mixes */
        {MIX_TQ1_0, Q80, TQ10, TQ10},
    };
    for (int k = 0; k < COUNT(cases); k++) {
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        o.has_imatrix = true;
        int *t = plan_or_fail(&m, &o);
        EXPECT_ALL(&m, t, "attn_k.weight", cases[k].attn_k);
        EXPECT_ALL(&m, t, "attn_q.weight", cases[k].attn_q);
        EXPECT_ALL(&m, t, "attn_output.weight", cases[k].attn_out);
        free(t);
    }
    fake_free(&m);

    /* 16 layers with routed and shared experts: two ffn_down tensors per layer */
    const family f = {"qwen2moe", 16, 8, 8, MOE_G, MOE_L};
    family_model(&m, &f);
    ck_assert_int_eq(meta_set_u32(&m.kv, "qwen2moe.expert_count", 8), 0);
    /* the very-low-bit branch counts ffn_down tensors, not layers: the first 16/8 = 2 tensors
     * are blk.0's ffn_down_exps and ffn_down_shexp */
    int *t = plan_family(&m, MIX_IQ2_XXS, true);
    expect_layers(&m, t, "ffn_down_exps.weight", FIRST1, Q2K, IQ2XXS);
    expect_layers(&m, t, "ffn_down_shexp.weight", FIRST1, Q2K, IQ2XXS);
    EXPECT_ALL(&m, t, "attn_v.weight", Q4K); /* 8 experts >= 4 */
    EXPECT_ALL(&m, t, "ffn_gate_inp.weight", GGML_TYPE_F16);
    free(t);
    t = plan_family(&m, MIX_IQ2_S, true);
    expect_layers(&m, t, "ffn_down_exps.weight", FIRST1, IQ3S, IQ2XS);
    free(t);
    /* the others take the layer from the name: layers 0 and 1 */
    t = plan_family(&m, MIX_Q2_K_S, true);
    expect_layers(&m, t, "ffn_down_exps.weight", FIRST2, Q4K, Q2K);
    expect_layers(&m, t, "ffn_down_shexp.weight", FIRST2, Q4K, Q2K);
    free(t);
    t = plan_family(&m, MIX_IQ3_XXS, false);
    expect_layers(&m, t, "ffn_down_exps.weight", FIRST2, Q4K, Q3K);
    free(t);
    /* IQ3_M with 8 experts: ffn_down Q4_K on use_more_bits layers too */
    t = plan_family(&m, MIX_IQ3_M, true);
    expect_layers(&m, t, "ffn_down_exps.weight", MB16, Q4K, IQ3S);
    expect_layers(&m, t, "ffn_down_shexp.weight", MB16, Q4K, IQ3S);
    free(t);
    /* IQ3_XS: gate / up of the middle layers (2-13) by layer, experts and shared */
    static const int MIDDLE16[] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, -1};
    t = plan_family(&m, MIX_IQ3_XS, true);
    expect_layers(&m, t, "ffn_gate_exps.weight", MIDDLE16, IQ3XXS, IQ3S);
    expect_layers(&m, t, "ffn_up_exps.weight", MIDDLE16, IQ3XXS, IQ3S);
    expect_layers(&m, t, "ffn_gate_shexp.weight", MIDDLE16, IQ3XXS, IQ3S);
    expect_layers(&m, t, "ffn_up_shexp.weight", MIDDLE16, IQ3XXS, IQ3S);
    EXPECT_ALL(&m, t, "ffn_down_exps.weight", IQ3S);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(iq_rules_for_falcon_70b_and_fused_qkv) {
    /* falcon: output Q8_0 in every mix; the very-low-bit branch has no falcon exception for
     * attn_output, the others do */
    fake_spec s = small_spec(256, 8, 8);
    s.arch = "falcon";
    model m;
    fake_model(&m, &s);
    const struct {
        int mix, attn_out;
    } falcon[] = {{MIX_IQ1_S, IQ2XXS}, {MIX_IQ1_M, IQ2XXS}, {MIX_IQ2_M, IQ3S}, {MIX_IQ2_XXS, IQ2XXS},
                  {MIX_IQ3_XXS, IQ3XXS}, {MIX_IQ3_M, IQ3S},  {MIX_TQ2_0, TQ20}};
    for (int k = 0; k < COUNT(falcon); k++) {
        plan_opts o;
        plan_opts_init(&o, falcon[k].mix);
        o.has_imatrix = true;
        int *t = plan_or_fail(&m, &o);
        ASSERT_TYPE(&m, t, "output.weight", Q80);
        EXPECT_ALL(&m, t, "attn_output.weight", falcon[k].attn_out);
        free(t);
    }
    fake_free(&m);

    /* a 70B llama (80 layers, GQA 8): attn_v Q3_K / Q4_K -> Q5_K, except in the very-low-bit
     * branch; ffn_down positions over 80 layers (n/8 = 10) */
    s = (fake_spec){.n_layer = 80, .n_embd = 256, .n_ff = 256, .n_vocab = 256, .n_head = 8, .n_head_kv = 1,
                    .type = GGML_TYPE_F16};
    fake_model(&m, &s);
    const struct {
        int mix, v, down_first, down;
    } big[] = {{MIX_IQ3_S, Q5K, IQ3S, IQ3S},     {MIX_IQ3_XS, Q5K, IQ3S, IQ3S},    {MIX_IQ3_M, Q5K, Q4K, IQ3S},
               {MIX_IQ3_XXS, Q5K, IQ3XXS, IQ3XXS}, {MIX_Q2_K_S, Q5K, Q4K, Q2K},    {MIX_IQ4_NL, Q5K, IQ4NL, IQ4NL},
               {MIX_IQ2_XXS, Q4K, Q2K, IQ2XXS},  {MIX_IQ2_M, Q4K, IQ3S, IQ2S},     {MIX_TQ1_0, TQ10, TQ10, TQ10}};
    static const int FIRST10[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1};
    for (int k = 0; k < COUNT(big); k++) {
        plan_opts o;
        plan_opts_init(&o, big[k].mix);
        o.has_imatrix = true;
        int *t = plan_or_fail(&m, &o);
        EXPECT_ALL(&m, t, "attn_v.weight", big[k].v);
        expect_layers(&m, t, "ffn_down.weight", FIRST10, big[k].down_first, big[k].down);
        free(t);
    }
    fake_free(&m);

    /* phi3 (fused attn_qkv, fused gate+up in ffn_up), 32 layers: IQ3_M's attn_qkv rule, IQ3_XS's
     * ffn_up rule on the fused gate+up */
    const family f = {"phi3", 32, 32, 32, PHI3_G, PHI3_L};
    family_model(&m, &f);
    static const int MIDDLE32[] = {4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, -1};
    int *t = plan_family(&m, MIX_IQ3_M, true);
    EXPECT_ALL(&m, t, "attn_qkv.weight", Q4K);
    EXPECT_ALL(&m, t, "attn_output.weight", Q4K);
    expect_layers(&m, t, "ffn_down.weight", FIRST4, Q4K, IQ3S);
    EXPECT_ALL(&m, t, "ffn_up.weight", IQ3S);
    free(t);
    t = plan_family(&m, MIX_IQ3_XS, true);
    EXPECT_ALL(&m, t, "attn_qkv.weight", IQ3S);
    expect_layers(&m, t, "ffn_up.weight", MIDDLE32, IQ3XXS, IQ3S);
    free(t);
    t = plan_family(&m, MIX_IQ3_XXS, true);
    EXPECT_ALL(&m, t, "attn_qkv.weight", IQ3XXS);
    EXPECT_ALL(&m, t, "attn_output.weight", IQ3S);
    free(t);
    t = plan_family(&m, MIX_IQ1_S, true);
    EXPECT_ALL(&m, t, "attn_qkv.weight", IQ1S);
    EXPECT_ALL(&m, t, "attn_output.weight", IQ2XXS);
    expect_layers(&m, t, "ffn_down.weight", FIRST4, Q2K, IQ1S);
    ASSERT_TYPE(&m, t, "output.weight", Q5K);
    ASSERT_TYPE(&m, t, "token_embd.weight", Q2K);
    free(t);
    fake_free(&m);
}
END_TEST

START_TEST(iq_fallbacks_and_tied_embeddings) {
    /* rows of 96 (GQA 3): 256-blocks fall back (i-quants and Q2_K / Q3_K to IQ4_NL, TQ to Q4_0,
     * Q4_K to Q5_0); ffn_down's rows of 256 fit */
    fake_spec s = small_spec(96, 3, 1);
    s.n_ff = 256;
    model m;
    fake_model(&m, &s);
    const struct {
        int mix, attn_q, attn_v, attn_out, ffn_down, embd, output;
    } cases[] = {
        {MIX_IQ2_XXS, IQ4NL, IQ4NL, IQ4NL, IQ2XXS, IQ4NL, Q80}, {MIX_IQ1_S, IQ4NL, IQ4NL, IQ4NL, IQ1S, IQ4NL, Q80},
        {MIX_IQ2_M, IQ4NL, IQ4NL, IQ4NL, IQ2S, IQ4NL, Q80},     {MIX_IQ3_XXS, IQ4NL, IQ4NL, IQ4NL, IQ3XXS, IQ4NL, Q80},
        {MIX_IQ3_M, IQ4NL, Q50, Q50, IQ3S, IQ4NL, Q80},         {MIX_IQ4_XS, IQ4NL, IQ4NL, IQ4NL, IQ4XS, IQ4NL, Q80},
        /* a 32-block base: output Q6_K (the base fits), which falls back to Q8_0 */
        {MIX_IQ4_NL, IQ4NL, IQ4NL, IQ4NL, IQ4NL, IQ4NL, Q80},
        {MIX_TQ1_0, Q40, Q40, Q40, TQ10, Q50, Q80},             {MIX_TQ2_0, Q40, Q40, Q40, TQ20, Q50, Q80},
        {MIX_Q2_K_S, IQ4NL, IQ4NL, IQ4NL, Q2K, IQ4NL, Q80},
    };
    for (int k = 0; k < COUNT(cases); k++) {
        plan_opts o;
        plan_opts_init(&o, cases[k].mix);
        o.has_imatrix = true;
        int *t = plan_or_fail(&m, &o);
        EXPECT_ALL(&m, t, "attn_q.weight", cases[k].attn_q);
        EXPECT_ALL(&m, t, "attn_v.weight", cases[k].attn_v);
        EXPECT_ALL(&m, t, "attn_output.weight", cases[k].attn_out);
        EXPECT_ALL(&m, t, "ffn_down.weight", cases[k].ffn_down);
        ASSERT_TYPE(&m, t, "token_embd.weight", cases[k].embd);
        ASSERT_TYPE(&m, t, "output.weight", cases[k].output);
        free(t);
    }
    /* without an imatrix, only the tensors left in a 1- or 2-bit type are refused: here the
     * first is blk.0.ffn_down (attn_k, attn_output, attn_q fell back to IQ4_NL) */
    plan_opts o;
    plan_opts_init(&o, MIX_IQ2_XXS);
    slmc_err err = {{0}};
    assert_refused(check_imatrix(&m, &o, NULL, &err), &err, "blk.0.ffn_down.weight", IQ2XXS);
    fake_free(&m);

    /* rows of 100 fit no block: F16 */
    s = small_spec(100, 2, 1);
    s.n_ff = 100;
    fake_model(&m, &s);
    for (int k = 0; k < COUNT(IQ_MIXES); k++) {
        plan_opts_init(&o, quant_mix_from_name(IQ_MIXES[k]));
        int *t = plan_or_fail(&m, &o);
        for (uint64_t i = 0; i < m.n_tensors; i++)
            ck_assert_int_eq(t[i], m.tensors[i].n_dims == 1 ? GGML_TYPE_F32 : GGML_TYPE_F16);
        free(t);
    }
    fake_free(&m);

    /* tied embeddings: token_embd takes the output rules (Q5_K for the 1-/2-bit mixes and
     * IQ3_XXS, Q6_K for the others), Q8_0 when the rows misfit */
    s = small_spec(256, 8, 8);
    s.tied = true;
    fake_model(&m, &s);
    const struct {
        int mix, want;
    } tied[] = {{MIX_IQ2_XXS, Q5K}, {MIX_IQ1_M, Q5K}, {MIX_IQ2_S, Q5K},  {MIX_IQ3_XXS, Q5K}, {MIX_IQ3_XS, Q6K},
                {MIX_IQ3_M, Q6K},   {MIX_IQ4_NL, Q6K}, {MIX_Q2_K_S, Q6K}, {MIX_TQ1_0, Q6K}};
    for (int k = 0; k < COUNT(tied); k++) {
        plan_opts_init(&o, tied[k].mix);
        int *t = plan_or_fail(&m, &o);
        ASSERT_TYPE(&m, t, "token_embd.weight", tied[k].want);
        free(t);
    }
    fake_free(&m);
}
END_TEST

START_TEST(imatrix_check_of_a_plan) {
    fake_spec s = small_spec(256, 8, 8);
    s.reversed = true; /* the first tensor refused is the first in llama.cpp's order, not the file's */
    model m;
    fake_model(&m, &s);
    slmc_err err = {{0}};
    plan_opts o;
    plan_opts_init(&o, MIX_IQ2_XXS);
    /* no imatrix: output Q5_K and token_embd Q2_K pass, blk.0.attn_k is the first IQ2_XXS */
    assert_refused(check_imatrix(&m, &o, NULL, &err), &err, "blk.0.attn_k.weight", IQ2XXS);
    ck_assert_msg(strstr(err.msg, "in mix IQ2_XXS") && strstr(err.msg, "--imatrix"), "%s", err.msg);
    /* an importance for every layer matrix but blk.3.ffn_gate */
    const float **imp = calloc(m.n_tensors, sizeof *imp);
    ck_assert_ptr_nonnull(imp);
    static const float one = 1.0f;
    for (uint64_t i = 0; i < m.n_tensors; i++)
        if (strncmp(m.tensors[i].name, "blk.", 4) == 0 && m.tensors[i].n_dims == 2) imp[i] = &one;
    ck_assert_int_eq(check_imatrix(&m, &o, imp, &err), 0);
    imp[model_find(&m, "blk.3.ffn_gate.weight")] = NULL;
    assert_refused(check_imatrix(&m, &o, imp, &err), &err, "blk.3.ffn_gate.weight", IQ2XXS);
    /* --pure: output.weight (first in the order) is IQ2_XXS and has no importance */
    o.pure = true;
    assert_refused(check_imatrix(&m, &o, imp, &err), &err, "output.weight", IQ2XXS);
    /* IQ1_M spares token_embd and output */
    imp[model_find(&m, "blk.3.ffn_gate.weight")] = &one;
    plan_opts_init(&o, MIX_IQ1_M);
    o.pure = true;
    ck_assert_int_eq(check_imatrix(&m, &o, imp, &err), 0);
    /* Q2_K needs it only in the Q2_K_S mix, and never for token_embd */
    plan_opts_init(&o, MIX_Q2_K_S);
    o.output_type = GGML_TYPE_Q2_K;
    assert_refused(check_imatrix(&m, &o, imp, &err), &err, "output.weight", Q2K);
    o.output_type = -1;
    ck_assert_int_eq(check_imatrix(&m, &o, imp, &err), 0); /* token_embd Q2_K, output Q6_K */
    plan_opts_init(&o, MIX_Q2_K);
    o.output_type = GGML_TYPE_Q2_K;
    ck_assert_int_eq(check_imatrix(&m, &o, NULL, &err), 0);
    /* not only the mixes: a --tensor-type override to IQ1_S is checked too */
    plan_override ovr[] = {{"ffn_up", GGML_TYPE_IQ1_S}};
    plan_opts_init(&o, MIX_Q4_K_M);
    o.overrides = ovr;
    o.n_overrides = 1;
    assert_refused(check_imatrix(&m, &o, NULL, &err), &err, "blk.0.ffn_up.weight", IQ1S);
    /* a plan that is no mix (a size target's): no mix in the message */
    int *t = plan_or_fail(&m, &o);
    ck_assert_int_ne(plan_check_imatrix(&m, -1, t, NULL, &err), 0);
    ck_assert_msg(strstr(err.msg, "in mix") == NULL, "%s", err.msg);
    free(t);
    free(imp);
    fake_free(&m);

    /* a tensor already in its planned type is copied, not quantized: nothing to refuse */
    s.type = GGML_TYPE_IQ2_XXS;
    fake_model(&m, &s);
    plan_opts_init(&o, MIX_IQ2_XXS);
    ck_assert_int_eq(check_imatrix(&m, &o, NULL, &err), 0);
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
    tcase_add_test(tc, family_llama32_1b);
    tcase_add_test(tc, family_qwen3_0_6b);
    tcase_add_test(tc, family_gemma_2b);
    tcase_add_test(tc, family_gemma2_2b);
    tcase_add_test(tc, family_gemma3_1b_fallbacks);
    tcase_add_test(tc, family_phi2);
    tcase_add_test(tc, family_phi3_mini);
    tcase_add_test(tc, family_stablelm2);
    tcase_add_test(tc, family_facts_70b_and_output_names);
    tcase_add_test(tc, attention_layer_count_is_checked);
    tcase_add_test(tc, imatrix_requirement);
    tcase_add_test(tc, iq_mix_names);
    tcase_add_test(tc, books22m_iq_mixes_match_llama_quantize);
    tcase_add_test(tc, books22m_imatrix_refusals_match_llama_quantize);
    tcase_add_test(tc, synthetic_models_match_llama_quantize);
    tcase_add_test(tc, iq_rules_over_32_layers);
    tcase_add_test(tc, iq_attn_v_by_gqa_and_experts);
    tcase_add_test(tc, iq_rules_for_moe);
    tcase_add_test(tc, iq_rules_for_falcon_70b_and_fused_qkv);
    tcase_add_test(tc, iq_fallbacks_and_tied_embeddings);
    tcase_add_test(tc, imatrix_check_of_a_plan);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(plan_suite()); }
