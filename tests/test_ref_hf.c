/* test_ref_hf.c - the double-precision Hugging Face reference forward pass (tests/ref_hf.c):
 * against slmc's engine on the families slmc converts (llama, qwen2: synthetic checkpoints, and
 * the shared books-22m), against a hand computation (1 layer, 1 head, hidden 4), and on tiny
 * Hugging Face folders written here for every family it knows, properties that follow from the
 * transformers definitions: causality, sliding windows, softcapping, RoPE variants reducing to
 * plain RoPE, Gemma's (1 + w) norms and scaled embeddings vs an equivalent Llama, Phi-3's fused
 * projections vs an equivalent Llama, and BF16/F16 storage read exactly. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec/types.h"
#include "eval/llm.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "ref_hf.h"
#include "testutil.h"

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* ===================================================================== tiny HF folders */

typedef enum kind { K_MAT, K_EMB, K_NORM, K_GNORM, K_BIAS, K_ZERO } kind;

typedef struct tt {
    char name[128];
    int64_t d0, d1;   /* d1 < 0: 1-D */
    double *v;
} tt;

typedef struct tmodel {
    tt t[256];
    int n;
} tmodel;

static uint64_t hash_name(const char *s, uint64_t seed) {
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static double urand(uint64_t *st) { /* [-1, 1) */
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*st >> 11) / 4503599627370496.0 - 1.0;
}

static double *tm_add(tmodel *m, const char *name, int64_t d0, int64_t d1, kind k) {
    ck_assert_int_lt(m->n, 256);
    tt *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->d0 = d0;
    t->d1 = d1;
    const int64_t n = d0 * (d1 < 0 ? 1 : d1);
    t->v = malloc(sizeof(double) * (size_t)n);
    uint64_t st = hash_name(name, 7);
    for (int64_t i = 0; i < n; i++) {
        double u = urand(&st);
        switch (k) {
        case K_MAT: t->v[i] = 1.5 * u / sqrt((double)d1); break;
        case K_EMB: t->v[i] = u; break;
        case K_NORM: t->v[i] = 1 + 0.2 * u; break;
        case K_GNORM: case K_BIAS: t->v[i] = 0.2 * u; break;
        case K_ZERO: t->v[i] = 0; break;
        }
    }
    return t->v;
}

static tt *tm_find(tmodel *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name)) return &m->t[i];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

static void tm_free(tmodel *m) {
    for (int i = 0; i < m->n; i++) free(m->t[i].v);
    m->n = 0;
}

/* config.json (text) and model.safetensors with every tensor stored as `type` */
static void tm_write(const tmodel *m, const char *dir, const char *config, int type) {
    char *cp = join(dir, "config.json");
    ck_assert_int_eq(write_bytes(cp, config, strlen(config)), 0);
    free(cp);
    json_error_t je;
    json_t *chk = json_loads(config, 0, &je);
    ck_assert_msg(chk != NULL, "bad test config: %s", je.text);
    json_decref(chk);
    st_out_tensor *outs = calloc((size_t)m->n, sizeof *outs);
    for (int i = 0; i < m->n; i++) {
        outs[i].name = m->t[i].name;
        outs[i].type = type;
        outs[i].n_dims = m->t[i].d1 < 0 ? 1 : 2;
        outs[i].shape[0] = m->t[i].d0;
        outs[i].shape[1] = m->t[i].d1;
    }
    st_writer w;
    slmc_err err = {{0}};
    ck_assert_msg(st_writer_open(&w, dir, outs, (uint64_t)m->n, 0, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    for (int i = 0; i < m->n; i++) {
        const int64_t n = m->t[i].d0 * (m->t[i].d1 < 0 ? 1 : m->t[i].d1);
        const size_t esz = type == GGML_TYPE_F32 ? 4 : 2;
        uint8_t *buf = malloc(esz * (size_t)n);
        for (int64_t k = 0; k < n; k++) {
            const float f = (float)m->t[i].v[k];
            if (type == GGML_TYPE_F32) memcpy(buf + 4 * k, &f, 4);
            else {
                uint16_t h = type == GGML_TYPE_F16 ? f32_to_fp16(f) : f32_to_bf16(f);
                memcpy(buf + 2 * k, &h, 2);
            }
        }
        ck_assert_msg(st_writer_write(&w, buf, esz * (size_t)n, &err) == 0, "%s", err.msg);
        free(buf);
    }
    ck_assert_msg(st_writer_finish(&w, &err) == 0, "%s", err.msg);
    free(outs);
}

/* Shapes of the property tests: hidden 32, 4 heads (2 KV), head_dim 8, ffn 48, vocab 64. */
enum { E_ = 32, H_ = 4, KV_ = 2, D_ = 8, F_ = 48, V_ = 64 };

/* The Hugging Face tensors of family `cls` (names and shapes from the modeling files). */
static void add_family(tmodel *m, const char *cls, int L, int H, int KV, int D, bool tied) {
    const bool phi2 = !strcmp(cls, "PhiForCausalLM"), phi3 = !strcmp(cls, "Phi3ForCausalLM");
    const bool slm = !strcmp(cls, "StableLmForCausalLM"), qwen2 = !strcmp(cls, "Qwen2ForCausalLM");
    const bool gemma = !strncmp(cls, "Gemma", 5), g23 = !strcmp(cls, "Gemma2ForCausalLM") || !strcmp(cls, "Gemma3ForCausalLM");
    const bool qkn = !strcmp(cls, "Qwen3ForCausalLM") || !strcmp(cls, "Gemma3ForCausalLM");
    const bool ln = phi2 || slm;
    const kind nk = gemma ? K_GNORM : K_NORM;
    const int64_t E = E_, F = F_, V = V_, Q = (int64_t)H * D, KVD = (int64_t)KV * D;
    char nm[160];
#define A(d0, d1, k, ...) (snprintf(nm, sizeof nm, __VA_ARGS__), tm_add(m, nm, d0, d1, k))
    A(V, E, K_EMB, "model.embed_tokens.weight");
    for (int l = 0; l < L; l++) {
        A(E, -1, nk, "model.layers.%d.input_layernorm.weight", l);
        if (ln) A(E, -1, K_BIAS, "model.layers.%d.input_layernorm.bias", l);
        if (!phi2) {
            A(E, -1, nk, "model.layers.%d.post_attention_layernorm.weight", l);
            if (ln) A(E, -1, K_BIAS, "model.layers.%d.post_attention_layernorm.bias", l);
        }
        if (g23) {
            A(E, -1, nk, "model.layers.%d.pre_feedforward_layernorm.weight", l);
            A(E, -1, nk, "model.layers.%d.post_feedforward_layernorm.weight", l);
        }
        if (phi3) {
            A(Q + 2 * KVD, E, K_MAT, "model.layers.%d.self_attn.qkv_proj.weight", l);
            A(E, Q, K_MAT, "model.layers.%d.self_attn.o_proj.weight", l);
            A(2 * F, E, K_MAT, "model.layers.%d.mlp.gate_up_proj.weight", l);
            A(E, F, K_MAT, "model.layers.%d.mlp.down_proj.weight", l);
            continue;
        }
        A(Q, E, K_MAT, "model.layers.%d.self_attn.q_proj.weight", l);
        A(KVD, E, K_MAT, "model.layers.%d.self_attn.k_proj.weight", l);
        A(KVD, E, K_MAT, "model.layers.%d.self_attn.v_proj.weight", l);
        if (qwen2 || phi2 || slm) {
            A(Q, -1, K_BIAS, "model.layers.%d.self_attn.q_proj.bias", l);
            A(KVD, -1, K_BIAS, "model.layers.%d.self_attn.k_proj.bias", l);
            A(KVD, -1, K_BIAS, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        if (qkn) {
            A(D, -1, nk, "model.layers.%d.self_attn.q_norm.weight", l);
            A(D, -1, nk, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        if (phi2) {
            A(E, Q, K_MAT, "model.layers.%d.self_attn.dense.weight", l);
            A(E, -1, K_BIAS, "model.layers.%d.self_attn.dense.bias", l);
            A(F, E, K_MAT, "model.layers.%d.mlp.fc1.weight", l);
            A(F, -1, K_BIAS, "model.layers.%d.mlp.fc1.bias", l);
            A(E, F, K_MAT, "model.layers.%d.mlp.fc2.weight", l);
            A(E, -1, K_BIAS, "model.layers.%d.mlp.fc2.bias", l);
        } else {
            A(E, Q, K_MAT, "model.layers.%d.self_attn.o_proj.weight", l);
            A(F, E, K_MAT, "model.layers.%d.mlp.gate_proj.weight", l);
            A(F, E, K_MAT, "model.layers.%d.mlp.up_proj.weight", l);
            A(E, F, K_MAT, "model.layers.%d.mlp.down_proj.weight", l);
        }
    }
    if (phi2) {
        A(E, -1, nk, "model.final_layernorm.weight");
        A(E, -1, K_BIAS, "model.final_layernorm.bias");
    } else {
        A(E, -1, nk, "model.norm.weight");
        if (slm) A(E, -1, K_BIAS, "model.norm.bias");
    }
    if (!tied) {
        A(V, E, K_MAT, "lm_head.weight");
        if (phi2) A(V, -1, K_BIAS, "lm_head.bias");
    }
#undef A
}

/* A config.json for family cls with the shapes above; `extra` (may be "": JSON members without the
 * braces) adds or overrides keys. Written without duplicate keys (slmc's reader refuses them). */
static void make_config(char *out, size_t n, const char *cls, int L, int H, int KV, int D, bool tied, const char *extra) {
    const bool ln = !strcmp(cls, "PhiForCausalLM") || !strcmp(cls, "StableLmForCausalLM");
    const char *fam_keys = "";
    if (!strcmp(cls, "PhiForCausalLM")) fam_keys = "\"partial_rotary_factor\": 0.5, \"hidden_act\": \"gelu_new\"";
    else if (!strcmp(cls, "StableLmForCausalLM")) fam_keys = "\"partial_rotary_factor\": 0.25, \"use_qkv_bias\": true";
    else if (!strcmp(cls, "Gemma2ForCausalLM"))
        fam_keys = "\"query_pre_attn_scalar\": 8, \"sliding_window\": 4, \"attn_logit_softcapping\": 50.0, "
                   "\"final_logit_softcapping\": 30.0, \"hidden_activation\": \"gelu_pytorch_tanh\"";
    else if (!strcmp(cls, "Gemma3ForCausalLM"))
        fam_keys = "\"query_pre_attn_scalar\": 8, \"sliding_window\": 4, \"sliding_window_pattern\": 6, "
                   "\"rope_theta\": 1000000.0, \"rope_local_base_freq\": 10000.0, "
                   "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8.0}, "
                   "\"hidden_activation\": \"gelu_pytorch_tanh\"";
    else if (!strcmp(cls, "GemmaForCausalLM")) fam_keys = "\"hidden_activation\": \"gelu_pytorch_tanh\"";
    else if (!strcmp(cls, "Phi3ForCausalLM")) fam_keys = "\"original_max_position_embeddings\": 64";
    char base[1024], text[2048];
    snprintf(base, sizeof base,
             "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
             "\"max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"%s\": 1e-5, \"tie_word_embeddings\": %s, "
             "\"torch_dtype\": \"float32\"}",
             cls, E_, F_, L, H, KV, D, V_, ln ? "layer_norm_eps" : "rms_norm_eps", tied ? "true" : "false");
    json_error_t je;
    json_t *root = json_loads(base, 0, &je);
    ck_assert_msg(root != NULL, "base config: %s", je.text);
    const char *layers[2] = {fam_keys, extra};
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof text, "{%s}", layers[i]);
        json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
        ck_assert_msg(o != NULL, "bad test config keys %s: %s", text, je.text);
        ck_assert_int_eq(json_object_update(root, o), 0);
        json_decref(o);
    }
    char *dump = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    ck_assert_uint_lt(strlen(dump), n);
    snprintf(out, n, "%s", dump);
    free(dump);
    json_decref(root);
}

static const char *FAMILIES[] = {
    "LlamaForCausalLM",  "Qwen2ForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM",    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM", "PhiForCausalLM",   "Phi3ForCausalLM",  "StableLmForCausalLM", "MistralForCausalLM",
};
#define N_FAMILIES (int)(sizeof FAMILIES / sizeof *FAMILIES)

/* Write family cls (L layers) into a new folder under tmp; returns the folder. */
static char *make_family(const char *tmp, const char *sub, const char *cls, int L, bool tied, const char *extra) {
    char *dir = join(tmp, sub);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    const bool mha = !strcmp(cls, "PhiForCausalLM");
    tmodel m = {.n = 0};
    add_family(&m, cls, L, H_, mha ? H_ : KV_, D_, tied);
    char cfg[4096];
    make_config(cfg, sizeof cfg, cls, L, H_, mha ? H_ : KV_, D_, tied, extra);
    tm_write(&m, dir, cfg, GGML_TYPE_F32);
    tm_free(&m);
    return dir;
}

static double *run_ref(const char *dir, const int32_t *tok, int n) {
    char eb[512];
    double *lg = malloc(sizeof(double) * (size_t)(n * V_));
    ck_assert_msg(ref_hf_logits(dir, tok, n, lg, eb, sizeof eb) == 0, "%s: %s", dir, eb);
    for (int i = 0; i < n * V_; i++) ck_assert_msg(isfinite(lg[i]), "%s: logit %d not finite", dir, i);
    return lg;
}

static double max_rel_diff(const double *a, const double *b, int64_t n) {
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(a[i]));
        md = fmax(md, fabs(a[i] - b[i]));
    }
    return mx > 0 ? md / mx : md;
}

static bool rows_equal(const double *a, const double *b, int row) {
    return memcmp(a + (int64_t)row * V_, b + (int64_t)row * V_, sizeof(double) * V_) == 0;
}

/* ===================================================================== vs slmc's engine */

/* HF folder -> F32 GGUF (what `slmc convert DIR out.gguf --outtype f32` writes) -> llm_eval with
 * F32 attention: the engine's logits [n][vocab] (malloc'd), or NULL with the reason in `why`
 * when slmc cannot take the folder (a family it does not convert yet), if may_skip. */
static float *engine_logits(const char *hf_dir, const char *tmp, const int32_t *tok, int n, bool may_skip, char *why,
                            size_t whylen) {
    slmc_err err = {{0}};
    model mh, mg;
    char *gguf = join(tmp, "ref-check.gguf");
    llm_model lm;
    llm_context ctx;
    int stage = 0;
    if (model_open(&mh, hf_dir, NULL, &err) == 0) {
        stage = 1;
        if (model_write_gguf(&mh, gguf, GGML_TYPE_F32, NULL, &err) == 0) stage = 2;
        model_close(&mh);
    }
    if (stage == 2 && model_open(&mg, gguf, NULL, &err) == 0) {
        stage = 3;
        if (llm_model_init(&lm, &mg, &err) == 0) {
            stage = 4;
            if (llm_context_init(&ctx, &lm, n, n, &err) == 0) stage = 5;
            else llm_model_free(&lm);
        }
        if (stage < 5) model_close(&mg);
    }
    free(gguf);
    if (stage < 5) {
        ck_assert_msg(may_skip, "slmc cannot take %s (stage %d): %s", hf_dir, stage, err.msg);
        snprintf(why, whylen, "%s", err.msg);
        return NULL;
    }
    ctx.f16_attention = false;
    const int64_t V = lm.cfg.n_vocab;
    char eb[512];
    ck_assert_int_eq(ref_hf_vocab_size(hf_dir, eb, sizeof eb), V);
    float *got = malloc(sizeof(float) * (size_t)(n * V));
    ck_assert_msg(llm_eval(&ctx, tok, n, 0, got, &err) == 0, "%s", err.msg);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    model_close(&mg);
    return got;
}

/* max |ref - engine| / max |ref|, printed */
static double compare(const char *label, const char *hf_dir, const ref_hf_opts *opts, const float *got,
                      const int32_t *tok, int n) {
    char eb[512];
    const int64_t V = ref_hf_vocab_size(hf_dir, eb, sizeof eb);
    double *want = malloc(sizeof(double) * (size_t)(n * V));
    ck_assert_msg(ref_hf_logits_ex(hf_dir, opts, tok, n, want, eb, sizeof eb) == 0, "%s", eb);
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n * V; i++) {
        mx = fmax(mx, fabs(want[i]));
        md = fmax(md, fabs(want[i] - (double)got[i]));
    }
    fprintf(stderr, "ref_hf vs slmc engine, %s: max |diff| %.3g of max |logit| %.3g (relative %.3g)\n", label, md, mx,
            md / mx);
    ck_assert_double_gt(mx, 0.1);
    free(want);
    return md / mx;
}

static double engine_vs_ref(const char *label, const char *hf_dir, const char *tmp, const int32_t *tok, int n) {
    char why[SLMC_ERR_MAX];
    float *got = engine_logits(hf_dir, tmp, tok, n, false, why, sizeof why);
    double rel = compare(label, hf_dir, NULL, got, tok, n);
    free(got);
    return rel;
}

static const int32_t TOK16[16] = {1, 17, 299, 42, 42, 0, 150, 7, 8, 9, 288, 3, 255, 100, 31, 64};
static const int32_t TOK8_[8] = {3, 17, 5, 60, 22, 9, 41, 8}; /* within the property tests' vocab 64 */

START_TEST(test_llama_vs_slmc) {
    char *tmp = tmpdir_make();
    char *dir = join(tmp, "tiny");
    synth_opts o;
    synth_opts_init(&o);
    o.shape = "tiny";
    o.dtype = GGML_TYPE_F32;
    slmc_err err = {{0}};
    ck_assert_msg(synth_write(&o, dir, NULL, &err) == 0, "%s", err.msg);
    double rel = engine_vs_ref("synthetic tiny llama", dir, tmp, TOK16, 16);
    ck_assert_msg(rel < 1e-4, "llama: relative difference %g", rel);
    free(dir);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_qwen2_vs_slmc) {
    char *tmp = tmpdir_make();
    char *cfg = join(tmp, "qwen2-config.json");
    const char *text = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 64, "
                       "\"intermediate_size\": 160, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                       "\"num_key_value_heads\": 2, \"vocab_size\": 300, \"max_position_embeddings\": 128, "
                       "\"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true}";
    ck_assert_int_eq(write_bytes(cfg, text, strlen(text)), 0);
    char *dir = join(tmp, "qwen2");
    synth_opts o;
    synth_opts_init(&o);
    o.config = cfg;
    o.dtype = GGML_TYPE_F32;
    slmc_err err = {{0}};
    ck_assert_msg(synth_write(&o, dir, NULL, &err) == 0, "%s", err.msg);
    double rel = engine_vs_ref("synthetic tiny qwen2", dir, tmp, TOK16, 16);
    ck_assert_msg(rel < 1e-4, "qwen2: relative difference %g", rel);
    free(cfg); free(dir);
    tmpdir_remove(tmp);
}
END_TEST

/* The shared trained checkpoint (BF16 safetensors, Llama-2 style). */
START_TEST(test_books22m_vs_slmc) {
    char *hf = SHARED_OR_SKIP("models/books-22m/hf-bf16");
    char *tmp = tmpdir_make();
    double rel = engine_vs_ref("books-22m (BF16)", hf, tmp, TOK16, 8);
    ck_assert_msg(rel < 1e-4, "books-22m: relative difference %g", rel);
    tmpdir_remove(tmp);
    free(hf);
}
END_TEST

/* Every family's tiny folder (the property tests' shapes, 2 layers) through slmc, where slmc
 * converts the family; a skip for the families it does not take yet. */
START_TEST(test_family_vs_slmc) {
    const char *cls = FAMILIES[_i];
    char *tmp = tmpdir_make();
    const bool tied = !strncmp(cls, "Gemma", 5);
    /* Gemma 3: layers 0-4 slide (local RoPE base), layer 5 is global (rope_theta, linear scaling) */
    char *dir = make_family(tmp, "m", cls, !strcmp(cls, "Gemma3ForCausalLM") ? 6 : 2, tied, "");
    char why[SLMC_ERR_MAX];
    float *got = engine_logits(dir, tmp, TOK8_, 8, true, why, sizeof why);
    if (!got) {
        free(dir);
        tmpdir_remove(tmp);
        SKIP_TEST("%s: slmc does not take it yet (%s)", cls, why);
    }
    double rel = compare(cls, dir, NULL, got, TOK8_, 8);
    if (tied || !strcmp(cls, "PhiForCausalLM")) {
        /* GELU families: the engine computes GELU through ggml's F16 table (input and output
         * rounded to F16), a few 1e-4 away from Hugging Face's; with the same rounding the
         * reference must agree as closely as for the other families */
        ck_assert_msg(rel < 2e-3, "%s: relative difference %g", cls, rel);
        ref_hf_opts o;
        ref_hf_opts_init(&o);
        o.gelu_f16 = 1;
        char label[96];
        snprintf(label, sizeof label, "%s, GELU rounded as ggml's F16 table", cls);
        rel = compare(label, dir, &o, got, TOK8_, 8);
    }
    ck_assert_msg(rel < 1e-4, "%s: relative difference %g", cls, rel);
    free(got);
    free(dir);
    tmpdir_remove(tmp);
}
END_TEST

/* The RoPE variants through slmc: Llama 3's rope_type llama3 (every band of the scaling used
 * with head_dim 8 and theta 500000), linear scaling, and Phi-3's longrope on a sequence within
 * the original context (short factors, attention factor sqrt(1 + ln 8 / ln 4)). */
typedef struct rope_case {
    const char *name, *cls, *extra;
    int n;
} rope_case;

static const rope_case ROPE_CASES[] = {
    {"llama3", "LlamaForCausalLM",
     "\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
     "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}", 8},
    {"linear", "Qwen2ForCausalLM", "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 4.0}", 8},
    {"longrope (short)", "Phi3ForCausalLM",
     "\"original_max_position_embeddings\": 4, \"max_position_embeddings\": 32, \"rope_scaling\": {\"type\": "
     "\"longrope\", \"short_factor\": [1.0, 1.5, 2.0, 2.5], \"long_factor\": [3.0, 4.0, 5.0, 6.0]}", 4},
};
#define N_ROPE_CASES (int)(sizeof ROPE_CASES / sizeof *ROPE_CASES)

START_TEST(test_rope_vs_slmc) {
    const rope_case *c = &ROPE_CASES[_i];
    char *tmp = tmpdir_make();
    char *dir = make_family(tmp, "m", c->cls, 2, false, c->extra);
    char why[SLMC_ERR_MAX], label[96];
    float *got = engine_logits(dir, tmp, TOK8_, c->n, true, why, sizeof why);
    if (!got) {
        free(dir);
        tmpdir_remove(tmp);
        SKIP_TEST("%s: slmc does not take it yet (%s)", c->cls, why);
    }
    snprintf(label, sizeof label, "%s, rope %s", c->cls, c->name);
    double rel = compare(label, dir, NULL, got, TOK8_, c->n);
    ck_assert_msg(rel < 1e-4, "%s: relative difference %g", label, rel);
    free(got);
    free(dir);
    tmpdir_remove(tmp);
}
END_TEST

/* ===================================================================== by hand */

/* Llama, hidden 4, 1 head of 4, ffn 1, vocab 4, identity embeddings, projections and head;
 * gate reads dim 0, up dim 2, down writes dim 3. Tokens {0, 2}: position 0 attends only to
 * itself; at position 1 the query and key of token 2 (= c*e2) are rotated by 1 radian in the
 * pair (0, 2) (rotate_half: dims i and i + 2) and by 1/100 in the pair (1, 3). */
START_TEST(test_llama_by_hand) {
    char *tmp = tmpdir_make();
    tmodel m = {.n = 0};
    const char *ident[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                           "model.layers.0.self_attn.o_proj.weight", "lm_head.weight"};
    for (size_t i = 0; i < 6; i++) {
        double *v = tm_add(&m, ident[i], 4, 4, K_ZERO);
        for (int k = 0; k < 4; k++) v[k * 4 + k] = 1;
    }
    const char *ones[] = {"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                          "model.norm.weight"};
    for (size_t i = 0; i < 3; i++) {
        double *v = tm_add(&m, ones[i], 4, -1, K_ZERO);
        for (int k = 0; k < 4; k++) v[k] = 1;
    }
    tm_add(&m, "model.layers.0.mlp.gate_proj.weight", 1, 4, K_ZERO)[0] = 1;
    tm_add(&m, "model.layers.0.mlp.up_proj.weight", 1, 4, K_ZERO)[2] = 1;
    tm_add(&m, "model.layers.0.mlp.down_proj.weight", 4, 1, K_ZERO)[3] = 1;
    const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4, \"intermediate_size\": 1, "
                      "\"num_hidden_layers\": 1, \"num_attention_heads\": 1, \"num_key_value_heads\": 1, "
                      "\"vocab_size\": 4, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
    tm_write(&m, tmp, cfg, GGML_TYPE_F32);
    tm_free(&m);

    const int32_t tok[2] = {0, 2};
    double got[8];
    char eb[256];
    ck_assert_msg(ref_hf_logits(tmp, tok, 2, got, eb, sizeof eb) == 0, "%s", eb);

    const double eps = 1e-6, c = 1 / sqrt(0.25 + eps); /* RMSNorm of a one-hot vector of 4 */
    double want[8] = {0};
    /* position 0: x = e0 + v0 = (1 + c) e0; the FFN's up input (dim 2) is 0 */
    want[0] = (1 + c) / sqrt((1 + c) * (1 + c) / 4 + eps);
    /* position 1: scores (q.k) / sqrt(4) with k0 = c e0, k1 = q1 = c (-sin 1, 0, cos 1, 0) */
    const double s0 = -c * c * sin(1.0) / 2, s1 = c * c / 2;
    const double a0 = exp(s0) / (exp(s0) + exp(s1)), a1 = 1 - a0;
    double x[4] = {c * a0, 0, 1 + c * a1, 0};
    const double r = 1 / sqrt((x[0] * x[0] + x[2] * x[2]) / 4 + eps);
    const double g = x[0] * r, u = x[2] * r;
    x[3] += g / (1 + exp(-g)) * u;
    const double r2 = 1 / sqrt((x[0] * x[0] + x[2] * x[2] + x[3] * x[3]) / 4 + eps);
    for (int i = 0; i < 4; i++) want[4 + i] = x[i] * r2;
    for (int i = 0; i < 8; i++)
        ck_assert_msg(fabs(got[i] - want[i]) < 1e-12, "logit %d: got %.15g, by hand %.15g", i, got[i], want[i]);
    tmpdir_remove(tmp);
}
END_TEST

/* ===================================================================== properties, every family */

static const int32_t TOK8[8] = {3, 17, 5, 60, 22, 9, 41, 8};

/* Logits at t depend on tokens 0..t only: change token 5, rows 0..4 stay bit for bit, row 5 moves. */
START_TEST(test_causal) {
    const char *cls = FAMILIES[_i];
    char *tmp = tmpdir_make();
    const bool tied = !strncmp(cls, "Gemma", 5);
    char *dir = make_family(tmp, "m", cls, 2, tied, !strcmp(cls, "MistralForCausalLM") ? "\"sliding_window\": 3" : "");
    char eb[256];
    ck_assert_int_eq(ref_hf_vocab_size(dir, eb, sizeof eb), V_);
    int32_t tok2[8];
    memcpy(tok2, TOK8, sizeof tok2);
    tok2[5] = 33;
    double *a = run_ref(dir, TOK8, 8), *b = run_ref(dir, tok2, 8);
    for (int t = 0; t < 5; t++) ck_assert_msg(rows_equal(a, b, t), "%s: row %d changed with token 5", cls, t);
    ck_assert_msg(!rows_equal(a, b, 5), "%s: row 5 did not change with its own token", cls);
    double mx = 0;
    for (int i = 0; i < 8 * V_; i++) mx = fmax(mx, fabs(a[i]));
    ck_assert_msg(mx > 0.05, "%s: degenerate logits (max %g)", cls, mx);
    free(a); free(b); free(dir);
    tmpdir_remove(tmp);
}
END_TEST

/* One local layer with window 3 (Gemma 2 layer 0, Gemma 3 layer 0 of a 1-layer model): position t
 * sees tokens t-2..t only. Changing token 2 moves rows 2..4 and leaves rows 0, 1 and 5..7. With a
 * second (global) Gemma 2 layer, row 7 sees token 2 again. */
START_TEST(test_sliding_window) {
    const char *classes[2] = {"Gemma2ForCausalLM", "Gemma3ForCausalLM"};
    char *tmp = tmpdir_make();
    int32_t tok2[8];
    memcpy(tok2, TOK8, sizeof tok2);
    tok2[2] = 50;
    for (int k = 0; k < 2; k++) {
        char sub[16];
        snprintf(sub, sizeof sub, "w%d", k);
        char *dir = make_family(tmp, sub, classes[k], 1, true, "\"sliding_window\": 3, \"sliding_window_pattern\": 6");
        double *a = run_ref(dir, TOK8, 8), *b = run_ref(dir, tok2, 8);
        for (int t = 0; t < 8; t++) {
            const bool sees = t >= 2 && t - 2 < 3;
            ck_assert_msg(rows_equal(a, b, t) == !sees, "%s: row %d %s", classes[k], t, sees ? "unchanged" : "changed");
        }
        free(a); free(b); free(dir);
    }
    char *dir = make_family(tmp, "g2", "Gemma2ForCausalLM", 2, true, "\"sliding_window\": 3");
    double *a = run_ref(dir, TOK8, 8), *b = run_ref(dir, tok2, 8);
    ck_assert_msg(!rows_equal(a, b, 7), "gemma2 layer 1 is global: row 7 must see token 2");
    ck_assert(rows_equal(a, b, 1));
    free(a); free(b); free(dir);
    tmpdir_remove(tmp);
}
END_TEST

/* Gemma 2's final softcap: cap * tanh(logit / cap) of the uncapped logits, |logit| < cap. */
START_TEST(test_softcap) {
    char *tmp = tmpdir_make();
    char *capped = make_family(tmp, "c", "Gemma2ForCausalLM", 2, true, "\"final_logit_softcapping\": 0.5");
    char *open = make_family(tmp, "o", "Gemma2ForCausalLM", 2, true, "\"final_logit_softcapping\": null");
    double *a = run_ref(capped, TOK8, 8), *b = run_ref(open, TOK8, 8);
    double mx = 0, mb = 0;
    for (int i = 0; i < 8 * V_; i++) {
        ck_assert(fabs(a[i]) <= 0.5); /* tanh rounds to 1 in double past |x| ~ 19 */
        mx = fmax(mx, fabs(a[i]));
        mb = fmax(mb, fabs(b[i]));
        ck_assert(fabs(a[i] - 0.5 * tanh(b[i] / 0.5)) < 1e-12);
    }
    ck_assert_msg(mb > 1 && mx > 0.4, "the cap is not exercised (uncapped max %g)", mb);
    /* an attention softcap far above every score changes nothing measurable */
    char *big = make_family(tmp, "b", "Gemma2ForCausalLM", 2, true, "\"attn_logit_softcapping\": 1e9");
    char *none = make_family(tmp, "n", "Gemma2ForCausalLM", 2, true, "\"attn_logit_softcapping\": null");
    double *c = run_ref(big, TOK8, 8), *d = run_ref(none, TOK8, 8);
    ck_assert(max_rel_diff(c, d, 8 * V_) < 1e-12);
    free(a); free(b); free(c); free(d);
    free(capped); free(open); free(big); free(none);
    tmpdir_remove(tmp);
}
END_TEST

/* rope_type llama3: factor 1 is plain RoPE; with factor 8 (low 1, high 4, original 8192) short
 * wavelengths stay, long ones are divided by 8, the band between interpolates continuously. */
START_TEST(test_rope_llama3) {
    char *tmp = tmpdir_make();
    char *plain = make_family(tmp, "p", "LlamaForCausalLM", 2, false, "");
    char *l3 = make_family(tmp, "l3", "LlamaForCausalLM", 2, false,
                           "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 1.0, \"low_freq_factor\": 1.0, "
                           "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}");
    double *a = run_ref(plain, TOK8, 8), *b = run_ref(l3, TOK8, 8);
    ck_assert_msg(max_rel_diff(a, b, 8 * V_) < 1e-12, "llama3 factor 1 differs from plain RoPE");
    double ia[D_ / 2], ib[D_ / 2], fa, fb;
    int ra, rb;
    char eb[256];
    ck_assert_msg(ref_hf_rope(plain, 0, 8, ia, &ra, &fa, eb, sizeof eb) == 0, "%s", eb);
    ck_assert_msg(ref_hf_rope(l3, 1, 8, ib, &rb, &fb, eb, sizeof eb) == 0, "%s", eb);
    ck_assert_int_eq(ra, D_);
    ck_assert_int_eq(rb, D_);
    for (int i = 0; i < D_ / 2; i++) {
        ck_assert(fabs(ia[i] - pow(10000.0, -2.0 * i / D_)) < 1e-15);
        ck_assert(fabs(ia[i] - ib[i]) <= 1e-15 * ia[i]);
    }
    /* the three bands, head_dim 64, theta 500000 */
    double inv[32], base[32];
    for (int i = 0; i < 32; i++) base[i] = inv[i] = pow(500000.0, -2.0 * i / 64);
    ref_hf_llama3_scale(inv, 32, 8, 1, 4, 8192);
    int kept = 0, divided = 0, between = 0;
    for (int i = 0; i < 32; i++) {
        const double wl = 2 * M_PI / base[i];
        if (wl < 8192 / 4.0) { ck_assert(inv[i] == base[i]); kept++; }
        else if (wl > 8192) { ck_assert(fabs(inv[i] - base[i] / 8) <= 1e-15 * base[i]); divided++; }
        else {
            ck_assert(inv[i] < base[i] && inv[i] > base[i] / 8);
            between++;
        }
    }
    ck_assert(kept > 0 && divided > 0 && between > 0);
    /* continuity at both band edges */
    double edge[2] = {2 * M_PI / (8192 / 4.0), 2 * M_PI / 8192.0};
    double e2[2] = {edge[0], edge[1]};
    ref_hf_llama3_scale(e2, 2, 8, 1, 4, 8192);
    ck_assert(fabs(e2[0] - edge[0]) < 1e-15);
    ck_assert(fabs(e2[1] - edge[1] / 8) < 1e-15);
    free(a); free(b); free(plain); free(l3);
    tmpdir_remove(tmp);
}
END_TEST

/* Phi-3 longrope: short factors up to original_max_position_embeddings tokens, long ones past it,
 * cos and sin times sqrt(1 + ln(factor) / ln(original)), factor = max_position / original. With
 * short factors 1 and attention_factor 1 a short sequence is plain RoPE. */
START_TEST(test_rope_longrope) {
    char *tmp = tmpdir_make();
    const char *sc = "\"original_max_position_embeddings\": 4, \"max_position_embeddings\": 32, "
                     "\"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1.0, 1.5, 2.0, 2.5], "
                     "\"long_factor\": [3.0, 4.0, 5.0, 6.0]}";
    char *lr = make_family(tmp, "lr", "Phi3ForCausalLM", 2, false, sc);
    double inv[D_ / 2], af;
    int nr;
    char eb[256];
    const double want_af = sqrt(1 + log(8.0) / log(4.0));
    const double sf[4] = {1.0, 1.5, 2.0, 2.5}, lf[4] = {3.0, 4.0, 5.0, 6.0};
    ck_assert_msg(ref_hf_rope(lr, 0, 4, inv, &nr, &af, eb, sizeof eb) == 0, "%s", eb);
    ck_assert(fabs(af - want_af) < 1e-15);
    for (int i = 0; i < 4; i++) ck_assert(fabs(inv[i] - 1 / (sf[i] * pow(10000.0, 2.0 * i / 8))) < 1e-15);
    ck_assert(ref_hf_rope(lr, 1, 5, inv, &nr, &af, eb, sizeof eb) == 0);
    ck_assert(fabs(af - want_af) < 1e-15);
    for (int i = 0; i < 4; i++) ck_assert(fabs(inv[i] - 1 / (lf[i] * pow(10000.0, 2.0 * i / 8))) < 1e-15);
    /* model level */
    char *plain = make_family(tmp, "p", "Phi3ForCausalLM", 2, false, "");
    char *unit = make_family(tmp, "u", "Phi3ForCausalLM", 2, false,
                             "\"original_max_position_embeddings\": 8, \"max_position_embeddings\": 64, "
                             "\"rope_scaling\": {\"type\": \"longrope\", \"short_factor\": [1, 1, 1, 1], "
                             "\"long_factor\": [2, 2, 2, 2], \"attention_factor\": 1.0}");
    double *a = run_ref(plain, TOK8, 8), *b = run_ref(unit, TOK8, 8);
    ck_assert_msg(max_rel_diff(a, b, 8 * V_) < 1e-12, "longrope with unit short factors differs from plain RoPE");
    free(a); free(b);
    /* 5 tokens with original 4: long factors and the attention factor change even row 0 */
    int32_t t5[5] = {3, 17, 5, 60, 22};
    a = run_ref(lr, t5, 4);
    b = run_ref(lr, t5, 5);
    ck_assert(rows_equal(a, b, 0)); /* position 0 attends to itself alone: no RoPE effect */
    ck_assert(!rows_equal(a, b, 1));
    free(a); free(b); free(lr); free(plain); free(unit);
    tmpdir_remove(tmp);
}
END_TEST

/* Gemma = Llama with norm weights 1 + w, embeddings times sqrt(hidden) (rounded to the dtype)
 * and a tied head, when both use the same activation. Also checks the normalizer's rounding. */
static void gemma_vs_llama(const char *dtype, double scale, bool round) {
    char *tmp = tmpdir_make();
    char *gd = join(tmp, "gemma"), *ld = join(tmp, "llama");
    ck_assert_int_eq(mkdir(gd, 0755), 0);
    ck_assert_int_eq(mkdir(ld, 0755), 0);
    tmodel g = {.n = 0}, l = {.n = 0};
    add_family(&g, "GemmaForCausalLM", 2, H_, KV_, D_, true);
    add_family(&l, "LlamaForCausalLM", 2, H_, KV_, D_, false); /* its head: Gemma's unscaled embeddings */
    ck_assert_int_eq(g.n + 1, l.n);
    memcpy(tm_find(&l, "lm_head.weight")->v, tm_find(&g, "model.embed_tokens.weight")->v, sizeof(double) * V_ * E_);
    for (int i = 0; i < g.n; i++) {
        tt *lt = tm_find(&l, g.t[i].name);
        const int64_t n = g.t[i].d0 * (g.t[i].d1 < 0 ? 1 : g.t[i].d1);
        for (int64_t k = 0; k < n; k++) {
            double v = g.t[i].v[k];
            if (strstr(g.t[i].name, "norm")) v = 1 + v;
            else if (strstr(g.t[i].name, "embed_tokens")) v = v * scale;
            lt->v[k] = v;
        }
    }
    char cg[4096], cl[4096], x[128];
    snprintf(x, sizeof x, "\"hidden_activation\": \"silu\", \"torch_dtype\": \"%s\"", dtype);
    make_config(cg, sizeof cg, "GemmaForCausalLM", 2, H_, KV_, D_, true, x);
    make_config(cl, sizeof cl, "LlamaForCausalLM", 2, H_, KV_, D_, false, "");
    tm_write(&g, gd, cg, GGML_TYPE_F32);
    tm_write(&l, ld, cl, GGML_TYPE_F32);
    tm_free(&g);
    tm_free(&l);
    double *a = malloc(sizeof(double) * 8 * V_), *b = run_ref(ld, TOK8, 8);
    ref_hf_opts o;
    ref_hf_opts_init(&o);
    o.round_embed_scale = round;
    char eb[256];
    ck_assert_msg(ref_hf_logits_ex(gd, &o, TOK8, 8, a, eb, sizeof eb) == 0, "%s", eb);
    /* the scaled embeddings were stored as F32: 1e-7 relative */
    const double rel = max_rel_diff(b, a, 8 * V_);
    ck_assert_msg(rel < 1e-6, "gemma vs llama (%s, scale %.9g): %g", dtype, scale, rel);
    free(a); free(b); free(gd); free(ld);
    tmpdir_remove(tmp);
}

START_TEST(test_gemma_vs_llama) {
    const double exact = sqrt((double)E_); /* 5.656854... */
    gemma_vs_llama("float32", exact, false);
    gemma_vs_llama("bfloat16", 5.65625, true); /* sqrt(32) in bf16: 8 significant bits */
    gemma_vs_llama("float16", 5.65625, true);  /* 11 bits: 5.65625 */
    gemma_vs_llama("bfloat16", exact, false);
}
END_TEST

/* Phi-3 = Llama with q, k, v stacked in qkv_proj and gate, up in gate_up_proj. */
START_TEST(test_phi3_vs_llama) {
    char *tmp = tmpdir_make();
    char *pd = join(tmp, "phi3"), *ld = join(tmp, "llama");
    ck_assert_int_eq(mkdir(pd, 0755), 0);
    ck_assert_int_eq(mkdir(ld, 0755), 0);
    tmodel p = {.n = 0}, l = {.n = 0};
    add_family(&p, "Phi3ForCausalLM", 2, H_, KV_, D_, false);
    add_family(&l, "LlamaForCausalLM", 2, H_, KV_, D_, false);
    const int64_t Q = H_ * D_, KVD = KV_ * D_;
    for (int i = 0; i < p.n; i++) {
        const tt *pt = &p.t[i];
        const int64_t n = pt->d0 * (pt->d1 < 0 ? 1 : pt->d1);
        char nm[160];
        const char *s;
        if ((s = strstr(pt->name, "qkv_proj"))) {
            const char *parts[3] = {"q_proj", "k_proj", "v_proj"};
            const int64_t r0[3] = {0, Q, Q + KVD}, rn[3] = {Q, KVD, KVD};
            for (int k = 0; k < 3; k++) {
                snprintf(nm, sizeof nm, "%.*s%s.weight", (int)(s - pt->name), pt->name, parts[k]);
                memcpy(tm_find(&l, nm)->v, pt->v + r0[k] * E_, sizeof(double) * (size_t)(rn[k] * E_));
            }
        } else if ((s = strstr(pt->name, "gate_up_proj"))) {
            snprintf(nm, sizeof nm, "%.*sgate_proj.weight", (int)(s - pt->name), pt->name);
            memcpy(tm_find(&l, nm)->v, pt->v, sizeof(double) * F_ * E_);
            snprintf(nm, sizeof nm, "%.*sup_proj.weight", (int)(s - pt->name), pt->name);
            memcpy(tm_find(&l, nm)->v, pt->v + F_ * E_, sizeof(double) * F_ * E_);
        } else {
            memcpy(tm_find(&l, pt->name)->v, pt->v, sizeof(double) * (size_t)n);
        }
    }
    char cp[4096], cl[4096];
    make_config(cp, sizeof cp, "Phi3ForCausalLM", 2, H_, KV_, D_, false, "");
    make_config(cl, sizeof cl, "LlamaForCausalLM", 2, H_, KV_, D_, false, "");
    tm_write(&p, pd, cp, GGML_TYPE_F32);
    tm_write(&l, ld, cl, GGML_TYPE_F32);
    tm_free(&p);
    tm_free(&l);
    double *a = run_ref(pd, TOK8, 8), *b = run_ref(ld, TOK8, 8);
    ck_assert_msg(max_rel_diff(b, a, 8 * V_) < 1e-13, "phi3 vs llama: %g", max_rel_diff(b, a, 8 * V_));
    free(a); free(b); free(pd); free(ld);
    tmpdir_remove(tmp);
}
END_TEST

/* BF16 and F16 storage: the same values written as F32 give the same logits, bit for bit. */
START_TEST(test_dtypes) {
    const int types[2] = {GGML_TYPE_BF16, GGML_TYPE_F16};
    for (int k = 0; k < 2; k++) {
        char *tmp = tmpdir_make();
        char *hd = join(tmp, "half"), *fd = join(tmp, "f32");
        ck_assert_int_eq(mkdir(hd, 0755), 0);
        ck_assert_int_eq(mkdir(fd, 0755), 0);
        tmodel m = {.n = 0};
        add_family(&m, "Qwen2ForCausalLM", 2, H_, KV_, D_, false);
        for (int i = 0; i < m.n; i++) {
            const int64_t n = m.t[i].d0 * (m.t[i].d1 < 0 ? 1 : m.t[i].d1);
            for (int64_t j = 0; j < n; j++) { /* onto the half grid */
                const float f = (float)m.t[i].v[j];
                m.t[i].v[j] = types[k] == GGML_TYPE_BF16 ? bf16_to_f32(f32_to_bf16(f)) : fp16_to_f32(f32_to_fp16(f));
            }
        }
        char cfg[4096];
        make_config(cfg, sizeof cfg, "Qwen2ForCausalLM", 2, H_, KV_, D_, false, "");
        tm_write(&m, hd, cfg, types[k]);
        tm_write(&m, fd, cfg, GGML_TYPE_F32);
        tm_free(&m);
        double *a = run_ref(hd, TOK8, 8), *b = run_ref(fd, TOK8, 8);
        ck_assert_msg(memcmp(a, b, sizeof(double) * 8 * V_) == 0, "%s storage differs", k ? "F16" : "BF16");
        free(a); free(b); free(hd); free(fd);
        tmpdir_remove(tmp);
    }
}
END_TEST

/* The RoPE of the real configs in ../shared/configs. */
START_TEST(test_shared_configs) {
    char *l32 = SHARED_OR_SKIP("configs/Llama-3.2-1B");
    char *phi2 = SHARED_OR_SKIP("configs/phi-2");
    double inv[64], af;
    int nr;
    char eb[256];
    ck_assert_msg(ref_hf_rope(l32, 0, 16, inv, &nr, &af, eb, sizeof eb) == 0, "%s", eb);
    ck_assert_int_eq(nr, 64);
    ck_assert(inv[0] == 1.0 && af == 1.0);                                   /* wavelength 2 pi: kept */
    ck_assert(fabs(inv[31] - pow(500000.0, -62.0 / 64) / 32) < 1e-18);        /* longest: divided by 32 */
    ck_assert_msg(ref_hf_rope(phi2, 0, 16, inv, &nr, &af, eb, sizeof eb) == 0, "%s", eb);
    ck_assert_int_eq(nr, 32); /* head_dim 80 x partial_rotary_factor 0.4 */
    ck_assert(fabs(inv[1] - pow(10000.0, -2.0 / 32)) < 1e-15);
    ck_assert_int_eq(ref_hf_vocab_size(phi2, eb, sizeof eb), 51200);
    free(l32); free(phi2);
}
END_TEST

START_TEST(test_errors) {
    char *tmp = tmpdir_make();
    char eb[256];
    double lg[V_ * 2];
    const int32_t tok[2] = {1, 2};
    ck_assert_int_eq(ref_hf_logits(tmp, tok, 2, lg, eb, sizeof eb), -1); /* no config.json */
    ck_assert(strstr(eb, "config.json") != NULL);
    char *dir = make_family(tmp, "y", "LlamaForCausalLM", 1, false,
                            "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    ck_assert_int_eq(ref_hf_logits(dir, tok, 2, lg, eb, sizeof eb), -1);
    ck_assert(strstr(eb, "yarn") != NULL);
    free(dir);
    /* a Llama folder described as a Qwen2 lacks the q/k/v biases */
    dir = make_family(tmp, "q", "LlamaForCausalLM", 1, false, "");
    char cfg[4096];
    make_config(cfg, sizeof cfg, "Qwen2ForCausalLM", 1, H_, KV_, D_, false, "");
    char *cp = join(dir, "config.json");
    ck_assert_int_eq(write_bytes(cp, cfg, strlen(cfg)), 0);
    ck_assert_int_eq(ref_hf_logits(dir, tok, 2, lg, eb, sizeof eb), -1);
    ck_assert_msg(strstr(eb, "model.layers.0.self_attn.q_proj.bias") != NULL, "%s", eb);
    free(cp); free(dir);
    dir = make_family(tmp, "v", "LlamaForCausalLM", 1, false, "");
    const int32_t bad[2] = {1, V_};
    ck_assert_int_eq(ref_hf_logits(dir, bad, 2, lg, eb, sizeof eb), -1);
    ck_assert(strstr(eb, "vocabulary") != NULL);
    free(dir);
    tmpdir_remove(tmp);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("ref_hf");
    TCase *tc = tcase_create("ref_hf");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_llama_by_hand);
    tcase_add_test(tc, test_llama_vs_slmc);
    tcase_add_test(tc, test_qwen2_vs_slmc);
    tcase_add_loop_test(tc, test_family_vs_slmc, 0, N_FAMILIES);
    tcase_add_loop_test(tc, test_rope_vs_slmc, 0, N_ROPE_CASES);
    tcase_add_loop_test(tc, test_causal, 0, N_FAMILIES);
    tcase_add_test(tc, test_sliding_window);
    tcase_add_test(tc, test_softcap);
    tcase_add_test(tc, test_rope_llama3);
    tcase_add_test(tc, test_rope_longrope);
    tcase_add_test(tc, test_gemma_vs_llama);
    tcase_add_test(tc, test_phi3_vs_llama);
    tcase_add_test(tc, test_dtypes);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    TCase *sh = tcase_create("shared"); /* the real files in ../shared */
    tcase_set_timeout(sh, 60);
    tcase_add_test(sh, test_books22m_vs_slmc);
    tcase_add_test(sh, test_shared_configs);
    suite_add_tcase(s, sh);
    return s;
}

int main(void) { return run_suite(suite()); }
