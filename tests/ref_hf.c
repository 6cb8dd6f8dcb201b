/* ref_hf.c - see ref_hf.h. A double-precision forward pass written from the Hugging Face
 * transformers model files, for tests. Deliberately plain: one function per op, whole
 * sequence at a time, one layer's weights in memory at a time. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ref_hf.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/types.h"
#include "formats/safetensors.h"

/* ===================================================================== configuration */

typedef enum fam {
    FAM_LLAMA,    /* LlamaForCausalLM, MistralForCausalLM */
    FAM_QWEN2,
    FAM_QWEN3,
    FAM_GEMMA,
    FAM_GEMMA2,
    FAM_GEMMA3,
    FAM_PHI2,     /* PhiForCausalLM */
    FAM_PHI3,
    FAM_STABLELM,
} fam;

typedef enum norm_kind { NORM_RMS, NORM_RMS_1P, NORM_LAYER } norm_kind;       /* w*x̂, (1+w)*x̂, LayerNorm */
typedef enum act_kind { ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF, ACT_RELU } act_kind;
typedef enum rope_kind { ROPE_DEFAULT, ROPE_LINEAR, ROPE_LLAMA3, ROPE_LONGROPE, ROPE_DYNAMIC } rope_kind;

typedef struct rope_p {
    rope_kind kind;
    double theta;
    double factor;                 /* linear, llama3, dynamic */
    double low_freq, high_freq;    /* llama3 */
    double orig_ctx;               /* llama3: original_max_position_embeddings; longrope: the short/long threshold */
    double *short_f, *long_f;      /* longrope [n_rot/2] (owned) */
    double attn_factor;            /* longrope: multiplies cos and sin */
} rope_p;

typedef struct hf_cfg {
    fam family;
    int64_t n_embd, n_ff, n_layer, n_head, n_kv, head_dim, n_vocab, max_pos;
    int n_rot;                     /* rotary dims of a head (partial rotary factor applied) */
    double eps;
    norm_kind norm;
    act_kind act;
    bool tied;
    bool qkv_bias, o_bias, mlp_bias;
    bool qk_rmsnorm;               /* qwen3, gemma3: q_norm / k_norm over head_dim */
    bool qk_layernorm;             /* phi (one LayerNorm with bias shared by heads), stablelm (one per head, no bias) */
    bool parallel;                 /* attn and mlp both read the same normed input (phi, stablelm option) */
    bool sandwich;                 /* gemma2/3: post-attention, pre- and post-feedforward norms */
    double attn_scale, attn_softcap, final_softcap; /* softcaps 0 = none */
    double embed_scale;            /* 0 = none */
    rope_p rope_global, rope_local;
    int64_t *window;               /* [n_layer] sliding window (0 = full causal) */
    bool *local;                   /* [n_layer] layer uses rope_local (gemma3 sliding layers) */
    char dtype[16];                /* torch_dtype of config.json, "" when absent */
    bool gelu_f16;                 /* ref_hf_opts.gelu_f16 */
} hf_cfg;

typedef struct ctx {
    char *err;
    size_t errlen;
} ctx;

static int fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx *c, const char *fmt, ...) {
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void cfg_free(hf_cfg *c) {
    free(c->rope_global.short_f); free(c->rope_global.long_f);
    free(c->rope_local.short_f); free(c->rope_local.long_f);
    free(c->window); free(c->local);
    memset(c, 0, sizeof *c);
}

static bool jhas(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && !json_is_null(v);
}
static double jnum(json_t *o, const char *k, double dflt) {
    json_t *v = json_object_get(o, k);
    return v && json_is_number(v) ? json_number_value(v) : dflt;
}
static bool jbool(json_t *o, const char *k, bool dflt) {
    json_t *v = json_object_get(o, k);
    return v && json_is_boolean(v) ? json_is_true(v) : dflt;
}
static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}
static int jint(ctx *cx, json_t *o, const char *k, int64_t dflt, int64_t *out) {
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) {
        if (dflt < 0) return fail(cx, "config.json has no \"%s\"", k);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0) return fail(cx, "config.json: \"%s\" is not a positive integer", k);
    *out = json_integer_value(v);
    return 0;
}

static int parse_act(ctx *cx, const char *name, act_kind *out) {
    if (!strcmp(name, "silu") || !strcmp(name, "swish")) *out = ACT_SILU;
    else if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_new") || !strcmp(name, "gelu_fast") ||
             !strcmp(name, "gelu_python_tanh"))
        *out = ACT_GELU_TANH;
    else if (!strcmp(name, "gelu")) *out = ACT_GELU_ERF;
    else if (!strcmp(name, "relu")) *out = ACT_RELU;
    else return fail(cx, "config.json: activation \"%s\" is not supported", name);
    return 0;
}

static int read_factors(ctx *cx, json_t *sc, const char *key, int n, double **out) {
    json_t *a = json_object_get(sc, key);
    if (!json_is_array(a)) return fail(cx, "rope_scaling: longrope needs a \"%s\" list", key);
    if ((int)json_array_size(a) != n)
        return fail(cx, "rope_scaling: %s has %zu values, the rotary dims need %d", key, json_array_size(a), n);
    *out = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v)) return fail(cx, "rope_scaling: %s[%d] is not a number", key, i);
        (*out)[i] = json_number_value(v);
    }
    return 0;
}

/* One rotary embedding from a rope_scaling / rope_parameters object (NULL: default) and theta.
 * root is the (text) config for longrope's top-level original_max_position_embeddings. */
static int parse_rope(ctx *cx, json_t *sc, double theta, const hf_cfg *c, json_t *root, rope_p *r) {
    memset(r, 0, sizeof *r);
    r->theta = theta;
    r->kind = ROPE_DEFAULT;
    r->factor = 1;
    r->attn_factor = 1;
    if (!sc || json_is_null(sc)) return 0;
    if (!json_is_object(sc)) return fail(cx, "config.json: rope_scaling is not an object");
    if (jhas(sc, "rope_theta")) r->theta = jnum(sc, "rope_theta", theta);
    const char *type = jstr(sc, "rope_type");
    if (!type) type = jstr(sc, "type"); /* older name of the key */
    if (!type || !strcmp(type, "default")) return 0;
    r->factor = jnum(sc, "factor", 1.0);
    if (!strcmp(type, "linear")) {
        r->kind = ROPE_LINEAR;
    } else if (!strcmp(type, "dynamic")) {
        r->kind = ROPE_DYNAMIC;
    } else if (!strcmp(type, "llama3")) {
        r->kind = ROPE_LLAMA3;
        if (!jhas(sc, "factor") || !jhas(sc, "low_freq_factor") || !jhas(sc, "high_freq_factor") ||
            !jhas(sc, "original_max_position_embeddings"))
            return fail(cx, "rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and "
                            "original_max_position_embeddings");
        r->low_freq = jnum(sc, "low_freq_factor", 1);
        r->high_freq = jnum(sc, "high_freq_factor", 4);
        r->orig_ctx = jnum(sc, "original_max_position_embeddings", 8192);
    } else if (!strcmp(type, "longrope") || !strcmp(type, "su")) {
        r->kind = ROPE_LONGROPE;
        int n = c->n_rot / 2;
        if (read_factors(cx, sc, "short_factor", n, &r->short_f) || read_factors(cx, sc, "long_factor", n, &r->long_f))
            return -1;
        /* Phi-3 keeps the pretrained context outside rope_scaling (Phi3Config defaults it to 4096)
         * and the factor is max_position_embeddings over it; otherwise rope_scaling's factor. */
        double orig, factor;
        bool top = jhas(root, "original_max_position_embeddings") || c->family == FAM_PHI3;
        if (top) {
            orig = jnum(root, "original_max_position_embeddings", 4096);
            factor = (double)c->max_pos / orig;
        } else {
            orig = jnum(sc, "original_max_position_embeddings", (double)c->max_pos);
            factor = jnum(sc, "factor", 1.0);
        }
        r->orig_ctx = orig;
        r->factor = factor;
        if (jhas(sc, "attention_factor")) r->attn_factor = jnum(sc, "attention_factor", 1);
        else r->attn_factor = factor <= 1.0 ? 1.0 : sqrt(1 + log(factor) / log(orig));
    } else {
        return fail(cx, "rope_scaling type \"%s\" is not supported by the reference", type);
    }
    return 0;
}

static json_t *load_json(ctx *cx, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) fail(cx, "%s: %s (line %d)", path, je.text, je.line);
    else if (!json_is_object(root)) { fail(cx, "%s: not a JSON object", path); json_decref(root); root = NULL; }
    return root;
}

static int parse_cfg(ctx *cx, json_t *root, hf_cfg *c) {
    memset(c, 0, sizeof *c);
    const char *cls = NULL;
    json_t *archs = json_object_get(root, "architectures");
    if (json_is_array(archs) && json_array_size(archs) > 0) cls = json_string_value(json_array_get(archs, 0));
    const char *mt = jstr(root, "model_type");
    static const struct { const char *cls, *mt; fam f; } F[] = {
        {"LlamaForCausalLM", "llama", FAM_LLAMA},       {"MistralForCausalLM", "mistral", FAM_LLAMA},
        {"Qwen2ForCausalLM", "qwen2", FAM_QWEN2},       {"Qwen3ForCausalLM", "qwen3", FAM_QWEN3},
        {"GemmaForCausalLM", "gemma", FAM_GEMMA},       {"Gemma2ForCausalLM", "gemma2", FAM_GEMMA2},
        {"Gemma3ForCausalLM", "gemma3_text", FAM_GEMMA3}, {"Gemma3ForConditionalGeneration", "gemma3", FAM_GEMMA3},
        {"PhiForCausalLM", "phi", FAM_PHI2},            {"Phi3ForCausalLM", "phi3", FAM_PHI3},
        {"StableLmForCausalLM", "stablelm", FAM_STABLELM},
    };
    int found = -1;
    for (size_t i = 0; i < sizeof F / sizeof *F && found < 0; i++)
        if ((cls && !strcmp(cls, F[i].cls)) || (!cls && mt && !strcmp(mt, F[i].mt))) found = (int)i;
    if (found < 0) return fail(cx, "config.json: architecture %s is not one the reference knows", cls ? cls : mt ? mt : "(none)");
    c->family = F[found].f;
    bool mistral = !strcmp(F[found].cls, "MistralForCausalLM") || (mt && !strcmp(mt, "mistral"));
    /* a multimodal Gemma 3 keeps the text model's settings in text_config */
    json_t *t = root;
    if (json_is_object(json_object_get(root, "text_config"))) t = json_object_get(root, "text_config");
    const fam f = c->family;
    const bool gemma = f == FAM_GEMMA || f == FAM_GEMMA2 || f == FAM_GEMMA3;

    if (jint(cx, t, "hidden_size", -1, &c->n_embd) || jint(cx, t, "intermediate_size", -1, &c->n_ff) ||
        jint(cx, t, "num_hidden_layers", -1, &c->n_layer) || jint(cx, t, "num_attention_heads", -1, &c->n_head) ||
        jint(cx, t, "vocab_size", -1, &c->n_vocab) || jint(cx, t, "num_key_value_heads", c->n_head, &c->n_kv) ||
        jint(cx, t, "max_position_embeddings", 2048, &c->max_pos))
        return -1;
    int64_t hd_default = gemma ? 256 : f == FAM_QWEN3 ? 128 : c->n_embd / c->n_head;
    if (f == FAM_PHI2 || f == FAM_STABLELM || f == FAM_PHI3) hd_default = c->n_embd / c->n_head; /* no head_dim key */
    if (jint(cx, t, "head_dim", hd_default, &c->head_dim)) return -1;
    if (f == FAM_PHI2 || f == FAM_STABLELM) c->head_dim = c->n_embd / c->n_head; /* these classes ignore the key */
    if (c->n_head % c->n_kv) return fail(cx, "num_key_value_heads %lld does not divide num_attention_heads %lld",
                                         (long long)c->n_kv, (long long)c->n_head);

    /* rotary dims */
    double partial = jnum(t, "partial_rotary_factor", f == FAM_PHI2 ? 0.5 : f == FAM_STABLELM ? 0.25 : 1.0);
    c->n_rot = (int)((double)c->head_dim * partial);
    if (f == FAM_PHI2 && !jhas(t, "partial_rotary_factor") && jhas(t, "rotary_dim")) c->n_rot = (int)jnum(t, "rotary_dim", 0);
    if (c->n_rot <= 0 || c->n_rot > c->head_dim || c->n_rot % 2) return fail(cx, "rotary dims %d do not fit head_dim %lld", c->n_rot, (long long)c->head_dim);

    /* norms, activation, biases */
    const bool ln = f == FAM_PHI2 || f == FAM_STABLELM;
    c->norm = ln ? NORM_LAYER : gemma ? NORM_RMS_1P : NORM_RMS;
    c->eps = ln ? jnum(t, "layer_norm_eps", 1e-5) : jnum(t, "rms_norm_eps", f == FAM_PHI3 ? 1e-5 : 1e-6);
    const char *act = NULL;
    /* Gemma's MLP reads hidden_activation, gelu_pytorch_tanh when unset (GemmaMLP ignores the
     * "hidden_act": "gelu" of the original configs) */
    if (gemma) act = jstr(t, "hidden_activation") ? jstr(t, "hidden_activation") : "gelu_pytorch_tanh";
    else act = jstr(t, "hidden_act") ? jstr(t, "hidden_act") : f == FAM_PHI2 ? "gelu_new" : "silu";
    if (parse_act(cx, act, &c->act)) return -1;
    c->tied = jbool(root, "tie_word_embeddings", jbool(t, "tie_word_embeddings", gemma));
    switch (f) {
    case FAM_LLAMA: c->qkv_bias = c->o_bias = jbool(t, "attention_bias", false); c->mlp_bias = jbool(t, "mlp_bias", false); break;
    case FAM_QWEN2: c->qkv_bias = true; break;
    case FAM_QWEN3: case FAM_GEMMA: case FAM_GEMMA2: case FAM_GEMMA3: c->qkv_bias = c->o_bias = jbool(t, "attention_bias", false); break;
    case FAM_PHI2: c->qkv_bias = c->o_bias = c->mlp_bias = true; break;
    case FAM_PHI3: break;
    case FAM_STABLELM: c->qkv_bias = jbool(t, "use_qkv_bias", false); break;
    }
    c->qk_rmsnorm = f == FAM_QWEN3 || f == FAM_GEMMA3;
    c->qk_layernorm = (f == FAM_PHI2 || f == FAM_STABLELM) && jbool(t, "qk_layernorm", false);
    c->parallel = f == FAM_PHI2 || (f == FAM_STABLELM && jbool(t, "use_parallel_residual", false));
    c->sandwich = f == FAM_GEMMA2 || f == FAM_GEMMA3;

    /* attention scale and softcaps */
    c->attn_scale = 1.0 / sqrt((double)c->head_dim);
    if (f == FAM_GEMMA2 || f == FAM_GEMMA3) c->attn_scale = pow(jnum(t, "query_pre_attn_scalar", 256), -0.5);
    if (f == FAM_GEMMA2) {
        json_t *v = json_object_get(t, "attn_logit_softcapping");
        c->attn_softcap = v ? (json_is_number(v) ? json_number_value(v) : 0) : 50.0;
        v = json_object_get(t, "final_logit_softcapping");
        c->final_softcap = v ? (json_is_number(v) ? json_number_value(v) : 0) : 30.0;
    }
    /* Gemma3Attention never passes attn_logit_softcapping to the attention function */
    if (f == FAM_GEMMA3) c->final_softcap = jnum(t, "final_logit_softcapping", 0);
    if (gemma) c->embed_scale = sqrt((double)c->n_embd);
    const char *dt = jstr(root, "torch_dtype") ? jstr(root, "torch_dtype") : jstr(root, "dtype");
    if (!dt) dt = jstr(t, "torch_dtype") ? jstr(t, "torch_dtype") : jstr(t, "dtype");
    snprintf(c->dtype, sizeof c->dtype, "%s", dt ? dt : "");

    /* per-layer attention type: sliding window and (gemma3) which rotary embedding */
    c->window = calloc((size_t)c->n_layer, sizeof *c->window);
    c->local = calloc((size_t)c->n_layer, sizeof *c->local);
    int64_t win = 0;
    if (jhas(t, "sliding_window")) {
        json_t *v = json_object_get(t, "sliding_window");
        if (!json_is_integer(v) || json_integer_value(v) <= 0) return fail(cx, "config.json: sliding_window is not a positive integer");
        win = json_integer_value(v);
    } else if (f == FAM_GEMMA2 || f == FAM_GEMMA3) {
        win = 4096;
    }
    json_t *types = json_object_get(t, "layer_types");
    for (int64_t l = 0; l < c->n_layer; l++) {
        bool sliding = false;
        if (json_is_array(types) && (int64_t)json_array_size(types) == c->n_layer) {
            const char *s = json_string_value(json_array_get(types, (size_t)l));
            sliding = s && !strcmp(s, "sliding_attention");
        } else if (f == FAM_GEMMA2) {
            sliding = l % 2 == 0;
        } else if (f == FAM_GEMMA3) {
            int64_t pattern = (int64_t)jnum(t, "sliding_window_pattern", jnum(t, "_sliding_window_pattern", 6));
            sliding = pattern > 0 && (l + 1) % pattern != 0;
        } else if (f == FAM_QWEN2 || f == FAM_QWEN3) {
            sliding = jbool(t, "use_sliding_window", false) && l >= (int64_t)jnum(t, "max_window_layers", 28);
        } else if (f == FAM_PHI3 || (f == FAM_LLAMA && mistral)) {
            sliding = win > 0;
        }
        if (sliding && win <= 0) return fail(cx, "config.json: layer %lld slides but sliding_window is not set", (long long)l);
        c->window[l] = sliding ? win : 0;
        c->local[l] = f == FAM_GEMMA3 && sliding;
    }

    /* rotary embeddings: rope_scaling + rope_theta (transformers 4.x) or rope_parameters (5.x) */
    double theta = jnum(t, "rope_theta", f == FAM_GEMMA3 ? 1e6 : 10000.0);
    json_t *rp = json_object_get(t, "rope_parameters");
    if (json_is_object(rp) && json_is_object(json_object_get(rp, "full_attention"))) {
        if (parse_rope(cx, json_object_get(rp, "full_attention"), theta, c, t, &c->rope_global) ||
            parse_rope(cx, json_object_get(rp, "sliding_attention"), jnum(t, "rope_local_base_freq", 10000.0), c, t,
                       &c->rope_local))
            return -1;
    } else {
        json_t *sc = json_is_object(rp) ? rp : json_object_get(t, "rope_scaling");
        if (parse_rope(cx, sc, theta, c, t, &c->rope_global)) return -1;
        /* Gemma 3's local layers: rope_local_base_freq, no scaling */
        if (parse_rope(cx, NULL, jnum(t, "rope_local_base_freq", 10000.0), c, t, &c->rope_local)) return -1;
    }
    return 0;
}

/* inv_freq[0..n_rot/2) and the cos/sin factor of one rotary embedding for a sequence of
 * seq_len tokens (modeling_rope_utils: default, linear, llama3, longrope, dynamic). */
void ref_hf_llama3_scale(double *inv, int n, double factor, double low, double high, double orig) {
    const double low_wl = orig / low, high_wl = orig / high;
    for (int i = 0; i < n; i++) {
        const double wl = 2 * M_PI / inv[i];
        double v = wl > low_wl ? inv[i] / factor : inv[i];
        if (!(wl < high_wl) && !(wl > low_wl)) { /* between the two: interpolate */
            const double s = (orig / wl - low) / (high - low);
            v = (1 - s) * v / factor + s * v;
        }
        inv[i] = v;
    }
}

static int rope_freqs(ctx *cx, const hf_cfg *c, const rope_p *r, int seq_len, double *inv, double *attn_factor) {
    const int n = c->n_rot / 2;
    double base = r->theta;
    if (r->kind == ROPE_DYNAMIC && seq_len > c->max_pos) /* dynamic NTK only changes past max_position_embeddings */
        base = base * pow(r->factor * seq_len / (double)c->max_pos - (r->factor - 1), (double)c->n_rot / (c->n_rot - 2));
    for (int i = 0; i < n; i++) inv[i] = 1.0 / pow(base, (double)(2 * i) / c->n_rot);
    *attn_factor = 1;
    switch (r->kind) {
    case ROPE_DEFAULT: case ROPE_DYNAMIC: break;
    case ROPE_LINEAR: for (int i = 0; i < n; i++) inv[i] /= r->factor; break;
    case ROPE_LLAMA3: ref_hf_llama3_scale(inv, n, r->factor, r->low_freq, r->high_freq, r->orig_ctx); break;
    case ROPE_LONGROPE: {
        const double *ext = seq_len > r->orig_ctx ? r->long_f : r->short_f;
        for (int i = 0; i < n; i++) inv[i] = 1.0 / (ext[i] * pow(r->theta, (double)(2 * i) / c->n_rot));
        *attn_factor = r->attn_factor;
        break;
    }
    }
    (void)cx;
    return 0;
}

/* ===================================================================== weights */

typedef struct wts {
    st_model st;
    char prefix[128];     /* of "embed_tokens.weight": "model.", "language_model.model.", ... */
    char head[160];       /* name of lm_head.weight, "" when there is none */
    int embed_type;       /* stored type of the embeddings */
} wts;

static double half_to_double(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double bf16_to_double(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Rows rows[0..nrows) (all rows when rows is NULL) of tensor `name` as doubles, checked against
 * shape [d0] (d1 < 0) or [d0][d1] (PyTorch order: out x in for a Linear). NULL with a message
 * when missing (unless optional) or mis-shaped. */
static double *get_rows(ctx *cx, const wts *w, const char *name, int64_t d0, int64_t d1, bool optional,
                        const int32_t *rows, int nrows) {
    int64_t i = st_find(&w->st, name);
    if (i < 0) {
        if (!optional) fail(cx, "tensor %s is missing", name);
        return NULL;
    }
    const st_tensor *t = &w->st.tensors[i];
    const int nd = d1 < 0 ? 1 : 2;
    if (t->n_dims != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        fail(cx, "tensor %s has shape [%lld%s%lld], the config says [%lld%s%lld]", name, (long long)t->shape[0],
             t->n_dims > 1 ? ", " : "", t->n_dims > 1 ? (long long)t->shape[1] : 0LL, (long long)d0, nd > 1 ? ", " : "",
             nd > 1 ? (long long)d1 : 0LL);
        return NULL;
    }
    const size_t n = (size_t)d0 * (size_t)(nd == 2 ? d1 : 1);
    const size_t esz = t->type == GGML_TYPE_F32 ? 4 : 2;
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16) {
        fail(cx, "tensor %s: type %d is not F32, F16 or BF16", name, t->type);
        return NULL;
    }
    if (t->nbytes != n * esz) {
        fail(cx, "tensor %s holds %llu bytes, expected %zu", name, (unsigned long long)t->nbytes, n * esz);
        return NULL;
    }
    const size_t rl = nd == 2 ? (size_t)d1 : n; /* row length */
    const size_t nr = rows ? (size_t)nrows : n / rl;
    double *out = malloc(sizeof(double) * (nr * rl > 0 ? nr * rl : 1));
    for (size_t r = 0; r < nr; r++) {
        const uint8_t *src = t->data + esz * rl * (rows ? (size_t)rows[r] : r);
        double *dst = out + r * rl;
        for (size_t k = 0; k < rl; k++) {
            if (t->type == GGML_TYPE_F32) {
                float f;
                memcpy(&f, src + 4 * k, 4);
                dst[k] = f;
            } else {
                uint16_t h;
                memcpy(&h, src + 2 * k, 2);
                dst[k] = t->type == GGML_TYPE_F16 ? half_to_double(h) : bf16_to_double(h);
            }
        }
    }
    return out;
}

static double *get(ctx *cx, const wts *w, const char *name, int64_t d0, int64_t d1, bool optional) {
    return get_rows(cx, w, name, d0, d1, optional, NULL, 0);
}

static int open_weights(ctx *cx, const char *dir, wts *w) {
    memset(w, 0, sizeof *w);
    slmc_err e = {{0}};
    if (st_open(&w->st, dir, &e) != 0) return fail(cx, "%s", e.msg);
    const char *suffix = "embed_tokens.weight";
    const size_t sl = strlen(suffix);
    int64_t emb = -1, head = -1;
    for (uint64_t i = 0; i < w->st.n_tensors; i++) {
        const char *nm = w->st.tensors[i].name;
        const size_t l = strlen(nm);
        if (l >= sl && !strcmp(nm + l - sl, suffix) && strstr(nm, "vision") == NULL) {
            if (emb >= 0) { st_close(&w->st); return fail(cx, "%s: two embedding tensors (%s, %s)", dir, w->st.tensors[emb].name, nm); }
            emb = (int64_t)i;
        }
        if (l >= 14 && !strcmp(nm + l - 14, "lm_head.weight")) head = (int64_t)i;
    }
    if (emb < 0) { st_close(&w->st); return fail(cx, "%s: no *embed_tokens.weight tensor", dir); }
    const char *en = w->st.tensors[emb].name;
    snprintf(w->prefix, sizeof w->prefix, "%.*s", (int)(strlen(en) - sl), en);
    if (head >= 0) snprintf(w->head, sizeof w->head, "%s", w->st.tensors[head].name);
    w->embed_type = w->st.tensors[emb].type;
    return 0;
}

/* ===================================================================== ops */

/* y[t][o] = sum_i x[t][i] * W[o][i] (+ b[o]) */
static void linear(double *y, const double *x, const double *W, const double *b, int n, int64_t in, int64_t out) {
    for (int t = 0; t < n; t++)
        for (int64_t o = 0; o < out; o++) {
            const double *wr = W + o * in, *xr = x + (int64_t)t * in;
            double s = 0;
            for (int64_t i = 0; i < in; i++) s += xr[i] * wr[i];
            y[(int64_t)t * out + o] = s + (b ? b[o] : 0);
        }
}

/* One vector: RMSNorm x * rsqrt(mean(x^2) + eps) * w (or * (1 + w), Gemma), or LayerNorm
 * (x - mean) * rsqrt(var + eps) * w + b (biased variance). w NULL: weight 1 (LayerNorm without
 * affine parameters does not occur here). */
static void norm1(double *y, const double *x, int64_t n, const double *w, const double *b, norm_kind k, double eps) {
    if (k == NORM_LAYER) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++) mean += x[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= (double)n;
        const double r = 1.0 / sqrt(var + eps);
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * r * (w ? w[i] : 1) + (b ? b[i] : 0);
        return;
    }
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    const double r = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * (k == NORM_RMS_1P ? 1.0 + w[i] : w[i]);
}

static double gelu_tanh(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

/* x rounded to the nearest F16 value (no overflow handling: |x| < 65504 here) */
static double f16_round(double x) {
    if (fabs(x) < ldexp(1, -14)) return ldexp(nearbyint(ldexp(x, 24)), -24); /* subnormal spacing 2^-24 */
    int e;
    const double m = frexp(x, &e);
    return ldexp(nearbyint(ldexp(m, 11)), e - 11);
}

/* ref_hf_opts.gelu_f16: ggml_vec_gelu_f32 with its F16 table */
static double gelu_ggml(double x) {
    if (x <= -10) return 0;
    if (x >= 10) return x;
    return f16_round(gelu_tanh(f16_round(x)));
}

static double act(act_kind k, double x, bool gelu_f16) {
    switch (k) {
    case ACT_SILU: return x / (1 + exp(-x));
    case ACT_GELU_TANH: return gelu_f16 ? gelu_ggml(x) : gelu_tanh(x);
    case ACT_GELU_ERF: return 0.5 * x * (1 + erf(x / M_SQRT2));
    case ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

/* rotate_half RoPE on the first n_rot dims of one head vector at position pos: pairs (i, i + n_rot/2) */
static void rope1(double *v, int n_rot, const double *inv, double af, int pos) {
    const int h = n_rot / 2;
    for (int i = 0; i < h; i++) {
        const double a = pos * inv[i], cs = cos(a) * af, sn = sin(a) * af;
        const double x1 = v[i], x2 = v[i + h];
        v[i] = x1 * cs - x2 * sn;
        v[i + h] = x2 * cs + x1 * sn;
    }
}

/* Round x to the checkpoint dtype's precision ("bfloat16": 8 significant bits, "float16": 11,
 * "float32": 24), to nearest even. */
static double round_to(double x, const char *dtype) {
    int bits = !strcmp(dtype, "bfloat16") ? 8 : !strcmp(dtype, "float16") ? 11 : !strcmp(dtype, "float32") ? 24 : 0;
    if (!bits || x == 0 || !isfinite(x)) return x;
    int e;
    double m = frexp(x, &e); /* x = m * 2^e, 0.5 <= |m| < 1 */
    return ldexp(nearbyint(ldexp(m, bits)), e - bits);
}

static const char *type_dtype(int type) {
    return type == GGML_TYPE_BF16 ? "bfloat16" : type == GGML_TYPE_F16 ? "float16" : "float32";
}

/* ===================================================================== forward */

typedef struct layer_w {
    double *ln1_w, *ln1_b, *ln2_w, *ln2_b, *ln3_w, *ln4_w; /* input, post_attention, (gemma2/3) pre_ff, post_ff */
    double *wq, *wk, *wv, *bq, *bk, *bv, *wo, *bo;
    double *qn_w, *qn_b, *kn_w, *kn_b;                   /* q/k norms */
    double *wg, *wu, *wd, *bg, *bu, *bd;                 /* gated MLP, or fc1 (wu, bu) / fc2 (wd, bd) */
} layer_w;

static void layer_free(layer_w *L) {
    double **p = (double **)L;
    for (size_t i = 0; i < sizeof *L / sizeof(double *); i++) free(p[i]);
    memset(L, 0, sizeof *L);
}

static int load_layer(ctx *cx, const wts *w, const hf_cfg *c, int64_t l, layer_w *L) {
    memset(L, 0, sizeof *L);
    char p[256], nm[384];
    snprintf(p, sizeof p, "%slayers.%lld.", w->prefix, (long long)l);
    const int64_t E = c->n_embd, D = c->head_dim, Q = c->n_head * D, KV = c->n_kv * D, F = c->n_ff;
    const bool ln = c->norm == NORM_LAYER;
#define G(dst, suffix, d0, d1, opt)                                                                \
    do {                                                                                         \
        snprintf(nm, sizeof nm, "%s%s", p, suffix);                                              \
        L->dst = get(cx, w, nm, d0, d1, opt);                                                    \
        if (!L->dst && !(opt)) return -1;                                                        \
    } while (0)
    G(ln1_w, "input_layernorm.weight", E, -1, false);
    if (ln) G(ln1_b, "input_layernorm.bias", E, -1, false);
    if (!c->parallel) {
        G(ln2_w, "post_attention_layernorm.weight", E, -1, false);
        if (ln) G(ln2_b, "post_attention_layernorm.bias", E, -1, false);
    }
    if (c->sandwich) {
        G(ln3_w, "pre_feedforward_layernorm.weight", E, -1, false);
        G(ln4_w, "post_feedforward_layernorm.weight", E, -1, false);
    }
    if (c->family == FAM_PHI3) {
        snprintf(nm, sizeof nm, "%sself_attn.qkv_proj.weight", p);
        double *qkv = get(cx, w, nm, Q + 2 * KV, E, false);
        if (!qkv) return -1;
        /* rows: query, then key, then value (Phi3Attention slices the output that way) */
        L->wq = malloc(sizeof(double) * (size_t)(Q * E));
        L->wk = malloc(sizeof(double) * (size_t)(KV * E));
        L->wv = malloc(sizeof(double) * (size_t)(KV * E));
        memcpy(L->wq, qkv, sizeof(double) * (size_t)(Q * E));
        memcpy(L->wk, qkv + Q * E, sizeof(double) * (size_t)(KV * E));
        memcpy(L->wv, qkv + (Q + KV) * E, sizeof(double) * (size_t)(KV * E));
        free(qkv);
        snprintf(nm, sizeof nm, "%smlp.gate_up_proj.weight", p);
        double *gu = get(cx, w, nm, 2 * F, E, false);
        if (!gu) return -1;
        /* gate, up = chunk(2): the first F rows are the gate */
        L->wg = malloc(sizeof(double) * (size_t)(F * E));
        L->wu = malloc(sizeof(double) * (size_t)(F * E));
        memcpy(L->wg, gu, sizeof(double) * (size_t)(F * E));
        memcpy(L->wu, gu + F * E, sizeof(double) * (size_t)(F * E));
        free(gu);
        G(wo, "self_attn.o_proj.weight", E, Q, false);
        G(wd, "mlp.down_proj.weight", E, F, false);
        return 0;
    }
    G(wq, "self_attn.q_proj.weight", Q, E, false);
    G(wk, "self_attn.k_proj.weight", KV, E, false);
    G(wv, "self_attn.v_proj.weight", KV, E, false);
    if (c->qkv_bias) {
        G(bq, "self_attn.q_proj.bias", Q, -1, false);
        G(bk, "self_attn.k_proj.bias", KV, -1, false);
        G(bv, "self_attn.v_proj.bias", KV, -1, false);
    }
    if (c->family == FAM_PHI2) {
        G(wo, "self_attn.dense.weight", E, Q, false);
        G(bo, "self_attn.dense.bias", E, -1, false);
    } else {
        G(wo, "self_attn.o_proj.weight", E, Q, false);
        if (c->o_bias) G(bo, "self_attn.o_proj.bias", E, -1, false);
    }
    if (c->qk_rmsnorm) {
        G(qn_w, "self_attn.q_norm.weight", D, -1, false);
        G(kn_w, "self_attn.k_norm.weight", D, -1, false);
    }
    if (c->qk_layernorm && c->family == FAM_PHI2) {
        G(qn_w, "self_attn.q_layernorm.weight", D, -1, false);
        G(qn_b, "self_attn.q_layernorm.bias", D, -1, false);
        G(kn_w, "self_attn.k_layernorm.weight", D, -1, false);
        G(kn_b, "self_attn.k_layernorm.bias", D, -1, false);
    }
    if (c->qk_layernorm && c->family == FAM_STABLELM) { /* one LayerNorm (no bias) per head, stacked here */
        L->qn_w = malloc(sizeof(double) * (size_t)(c->n_head * D));
        L->kn_w = malloc(sizeof(double) * (size_t)(c->n_kv * D));
        for (int64_t h = 0; h < c->n_head; h++) {
            snprintf(nm, sizeof nm, "%sself_attn.q_layernorm.norms.%lld.weight", p, (long long)h);
            double *v = get(cx, w, nm, D, -1, false);
            if (!v) return -1;
            memcpy(L->qn_w + h * D, v, sizeof(double) * (size_t)D);
            free(v);
        }
        for (int64_t h = 0; h < c->n_kv; h++) {
            snprintf(nm, sizeof nm, "%sself_attn.k_layernorm.norms.%lld.weight", p, (long long)h);
            double *v = get(cx, w, nm, D, -1, false);
            if (!v) return -1;
            memcpy(L->kn_w + h * D, v, sizeof(double) * (size_t)D);
            free(v);
        }
    }
    if (c->family == FAM_PHI2) {
        G(wu, "mlp.fc1.weight", F, E, false);
        G(bu, "mlp.fc1.bias", F, -1, false);
        G(wd, "mlp.fc2.weight", E, F, false);
        G(bd, "mlp.fc2.bias", E, -1, false);
    } else {
        G(wg, "mlp.gate_proj.weight", F, E, false);
        G(wu, "mlp.up_proj.weight", F, E, false);
        G(wd, "mlp.down_proj.weight", E, F, false);
        if (c->mlp_bias) {
            G(bg, "mlp.gate_proj.bias", F, -1, false);
            G(bu, "mlp.up_proj.bias", F, -1, false);
            G(bd, "mlp.down_proj.bias", E, -1, false);
        }
    }
#undef G
    return 0;
}

static void norm_rows(double *y, const double *x, int n, int64_t dim, const double *w, const double *b, const hf_cfg *c) {
    for (int t = 0; t < n; t++) norm1(y + (int64_t)t * dim, x + (int64_t)t * dim, dim, w, b, c->norm, c->eps);
}

/* The MLP of one layer on h [n][E] into out [n][E]. */
static void mlp(double *out, const double *h, const layer_w *L, const hf_cfg *c, int n) {
    const int64_t E = c->n_embd, F = c->n_ff;
    double *a = malloc(sizeof(double) * (size_t)(n * F)), *b = malloc(sizeof(double) * (size_t)(n * F));
    if (c->family == FAM_PHI2) { /* fc1 -> act -> fc2 */
        linear(a, h, L->wu, L->bu, n, E, F);
        for (int64_t i = 0; i < n * F; i++) a[i] = act(c->act, a[i], c->gelu_f16);
    } else { /* down(act(gate(h)) * up(h)) */
        linear(a, h, L->wg, L->bg, n, E, F);
        linear(b, h, L->wu, L->bu, n, E, F);
        for (int64_t i = 0; i < n * F; i++) a[i] = act(c->act, a[i], c->gelu_f16) * b[i];
    }
    linear(out, a, L->wd, L->bd, n, F, E);
    free(a); free(b);
}

/* Attention of one layer on h [n][E] into out [n][E] (before any post-attention norm). */
static int attention(ctx *cx, double *out, const double *h, const layer_w *L, const hf_cfg *c, int64_t l, int n) {
    const int64_t E = c->n_embd, D = c->head_dim, H = c->n_head, KVH = c->n_kv, Q = H * D, KV = KVH * D;
    double *q = malloc(sizeof(double) * (size_t)(n * Q)), *k = malloc(sizeof(double) * (size_t)(n * KV));
    double *v = malloc(sizeof(double) * (size_t)(n * KV)), *o = malloc(sizeof(double) * (size_t)(n * Q));
    double *s = malloc(sizeof(double) * (size_t)n), *tmp = malloc(sizeof(double) * (size_t)D);
    double *inv = malloc(sizeof(double) * (size_t)(c->n_rot / 2 + 1)), af = 1;
    linear(q, h, L->wq, L->bq, n, E, Q);
    linear(k, h, L->wk, L->bk, n, E, KV);
    linear(v, h, L->wv, L->bv, n, E, KV);
    /* q/k norms over each head vector, before RoPE */
    if (L->qn_w) {
        const bool per_head = c->family == FAM_STABLELM;
        const norm_kind nk = c->qk_rmsnorm ? (c->norm == NORM_RMS_1P ? NORM_RMS_1P : NORM_RMS) : NORM_LAYER;
        for (int t = 0; t < n; t++) {
            for (int64_t hh = 0; hh < H; hh++) {
                double *x = q + (int64_t)t * Q + hh * D;
                memcpy(tmp, x, sizeof(double) * (size_t)D);
                norm1(x, tmp, D, L->qn_w + (per_head ? hh * D : 0), L->qn_b, nk, c->eps);
            }
            for (int64_t hh = 0; hh < KVH; hh++) {
                double *x = k + (int64_t)t * KV + hh * D;
                memcpy(tmp, x, sizeof(double) * (size_t)D);
                norm1(x, tmp, D, L->kn_w + (per_head ? hh * D : 0), L->kn_b, nk, c->eps);
            }
        }
    }
    if (rope_freqs(cx, c, c->local[l] ? &c->rope_local : &c->rope_global, n, inv, &af) != 0) return -1;
    for (int t = 0; t < n; t++) {
        for (int64_t hh = 0; hh < H; hh++) rope1(q + (int64_t)t * Q + hh * D, c->n_rot, inv, af, t);
        for (int64_t hh = 0; hh < KVH; hh++) rope1(k + (int64_t)t * KV + hh * D, c->n_rot, inv, af, t);
    }
    const int64_t win = c->window[l];
    for (int t = 0; t < n; t++)
        for (int64_t hh = 0; hh < H; hh++) {
            const int64_t kh = hh / (H / KVH); /* repeat_kv: query head hh reads kv head hh / groups */
            const double *qv = q + (int64_t)t * Q + hh * D;
            const int j0 = win > 0 && t - win + 1 > 0 ? (int)(t - win + 1) : 0; /* keys j with t - win < j <= t */
            double mx = -INFINITY;
            for (int j = j0; j <= t; j++) {
                const double *kv = k + (int64_t)j * KV + kh * D;
                double d = 0;
                for (int64_t i = 0; i < D; i++) d += qv[i] * kv[i];
                d *= c->attn_scale;
                if (c->attn_softcap > 0) d = c->attn_softcap * tanh(d / c->attn_softcap);
                s[j] = d;
                if (d > mx) mx = d;
            }
            double sum = 0;
            for (int j = j0; j <= t; j++) sum += (s[j] = exp(s[j] - mx));
            double *ov = o + (int64_t)t * Q + hh * D;
            for (int64_t i = 0; i < D; i++) ov[i] = 0;
            for (int j = j0; j <= t; j++) {
                const double p = s[j] / sum, *vv = v + (int64_t)j * KV + kh * D;
                for (int64_t i = 0; i < D; i++) ov[i] += p * vv[i];
            }
        }
    linear(out, o, L->wo, L->bo, n, Q, E);
    free(q); free(k); free(v); free(o); free(s); free(tmp); free(inv);
    return 0;
}

static int forward(ctx *cx, const char *dir, const ref_hf_opts *opts, const int32_t *tokens, int n, double *logits) {
    json_t *root = load_json(cx, dir);
    if (!root) return -1;
    hf_cfg c;
    int rc = parse_cfg(cx, root, &c);
    json_decref(root);
    if (rc) { cfg_free(&c); return -1; }
    c.gelu_f16 = opts->gelu_f16 != 0;
    wts w;
    if (open_weights(cx, dir, &w)) { cfg_free(&c); return -1; }
    const int64_t E = c.n_embd, V = c.n_vocab;
    double *x = NULL, *hbuf = NULL, *a = NULL, *m = NULL, *emb = NULL, *head = NULL, *hb = NULL, *nw = NULL, *nb = NULL;
    layer_w L;
    memset(&L, 0, sizeof L);
    rc = -1;
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= V) { fail(cx, "token %d at %d is outside the vocabulary (%lld)", tokens[t], t, (long long)V); goto done; }
    char nm[384];
    snprintf(nm, sizeof nm, "%sembed_tokens.weight", w.prefix);
    /* the rows of the input tokens; the whole matrix when it is also the head */
    if (!(emb = get_rows(cx, &w, nm, V, E, false, c.tied ? NULL : tokens, n))) goto done;
    x = malloc(sizeof(double) * (size_t)(n * E));
    hbuf = malloc(sizeof(double) * (size_t)(n * E));
    a = malloc(sizeof(double) * (size_t)(n * E));
    m = malloc(sizeof(double) * (size_t)(n * E));
    double scale = 1;
    if (c.embed_scale > 0) {
        scale = c.embed_scale;
        if (opts->round_embed_scale) {
            const char *dt = c.dtype[0] ? c.dtype : type_dtype(w.embed_type);
            if (c.family == FAM_GEMMA3) scale = (float)scale; /* a float32 buffer first, then .to(weight dtype) */
            scale = round_to(scale, dt);
        }
    }
    for (int t = 0; t < n; t++)
        for (int64_t i = 0; i < E; i++) x[(int64_t)t * E + i] = emb[(int64_t)(c.tied ? tokens[t] : t) * E + i] * scale;
    for (int64_t l = 0; l < c.n_layer; l++) {
        if (load_layer(cx, &w, &c, l, &L)) goto done;
        norm_rows(hbuf, x, n, E, L.ln1_w, L.ln1_b, &c);
        if (attention(cx, a, hbuf, &L, &c, l, n)) goto done;
        if (c.sandwich) { memcpy(m, a, sizeof(double) * (size_t)(n * E)); norm_rows(a, m, n, E, L.ln2_w, NULL, &c); }
        if (c.parallel) {
            mlp(m, hbuf, &L, &c, n);
            for (int64_t i = 0; i < n * E; i++) x[i] += a[i] + m[i];
        } else {
            for (int64_t i = 0; i < n * E; i++) x[i] += a[i];
            if (c.sandwich) norm_rows(hbuf, x, n, E, L.ln3_w, NULL, &c);
            else norm_rows(hbuf, x, n, E, L.ln2_w, L.ln2_b, &c);
            mlp(m, hbuf, &L, &c, n);
            if (c.sandwich) { memcpy(a, m, sizeof(double) * (size_t)(n * E)); norm_rows(m, a, n, E, L.ln4_w, NULL, &c); }
            for (int64_t i = 0; i < n * E; i++) x[i] += m[i];
        }
        layer_free(&L);
    }
    /* final norm and head */
    const bool ln = c.norm == NORM_LAYER;
    snprintf(nm, sizeof nm, "%s%s.weight", w.prefix, c.family == FAM_PHI2 ? "final_layernorm" : "norm");
    if (!(nw = get(cx, &w, nm, E, -1, false))) goto done;
    if (ln) {
        snprintf(nm, sizeof nm, "%s%s.bias", w.prefix, c.family == FAM_PHI2 ? "final_layernorm" : "norm");
        if (!(nb = get(cx, &w, nm, E, -1, false))) goto done;
    }
    norm_rows(hbuf, x, n, E, nw, nb, &c);
    const double *hw = emb;
    if (!c.tied) {
        if (!w.head[0]) { fail(cx, "no lm_head.weight and tie_word_embeddings is false"); goto done; }
        if (!(head = get(cx, &w, w.head, V, E, false))) goto done;
        hw = head;
        if (c.family == FAM_PHI2) {
            snprintf(nm, sizeof nm, "%.*sbias", (int)strlen(w.head) - 6, w.head);
            if (!(hb = get(cx, &w, nm, V, -1, false))) goto done;
        }
    }
    linear(logits, hbuf, hw, hb, n, E, V);
    if (c.final_softcap > 0)
        for (int64_t i = 0; i < n * V; i++) logits[i] = c.final_softcap * tanh(logits[i] / c.final_softcap);
    rc = 0;
done:
    layer_free(&L);
    free(x); free(hbuf); free(a); free(m); free(emb); free(head); free(hb); free(nw); free(nb);
    st_close(&w.st);
    cfg_free(&c);
    return rc;
}

/* ===================================================================== API */

void ref_hf_opts_init(ref_hf_opts *o) {
    memset(o, 0, sizeof *o);
    o->round_embed_scale = 1;
}

int ref_hf_logits_ex(const char *hf_dir, const ref_hf_opts *opts, const int32_t *tokens, int n_tokens, double *logits,
                     char *errbuf, size_t errlen) {
    ctx cx = {errbuf, errlen};
    if (errbuf && errlen) errbuf[0] = 0;
    ref_hf_opts d;
    if (!opts) { ref_hf_opts_init(&d); opts = &d; }
    if (n_tokens <= 0) return fail(&cx, "no tokens");
    return forward(&cx, hf_dir, opts, tokens, n_tokens, logits);
}

int ref_hf_logits(const char *hf_dir, const int32_t *tokens, int n_tokens, double *logits, char *errbuf, size_t errlen) {
    return ref_hf_logits_ex(hf_dir, NULL, tokens, n_tokens, logits, errbuf, errlen);
}

int64_t ref_hf_vocab_size(const char *hf_dir, char *errbuf, size_t errlen) {
    ctx cx = {errbuf, errlen};
    json_t *root = load_json(&cx, hf_dir);
    if (!root) return -1;
    hf_cfg c;
    int rc = parse_cfg(&cx, root, &c);
    json_decref(root);
    int64_t v = rc ? -1 : c.n_vocab;
    cfg_free(&c);
    return v;
}

int ref_hf_rope(const char *hf_dir, int layer, int n_tokens, double *inv_freq, int *n_rot, double *attn_factor,
                char *errbuf, size_t errlen) {
    ctx cx = {errbuf, errlen};
    json_t *root = load_json(&cx, hf_dir);
    if (!root) return -1;
    hf_cfg c;
    int rc = parse_cfg(&cx, root, &c);
    json_decref(root);
    if (rc == 0 && (layer < 0 || layer >= c.n_layer)) rc = fail(&cx, "layer %d out of range", layer);
    if (rc == 0) {
        *n_rot = c.n_rot;
        rc = rope_freqs(&cx, &c, c.local[layer] ? &c.rope_local : &c.rope_global, n_tokens, inv_freq, attn_factor);
    }
    cfg_free(&c);
    return rc;
}
