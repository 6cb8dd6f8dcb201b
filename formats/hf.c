/* hf.c - Hugging Face checkpoints <-> the model view (see hf.h and docs/formats-hf.md).
 *
 * Reading:  config.json  -> hf_config (validated per family, as llama.cpp's converter reads it)
 *                         -> GGUF keys (general.*, <arch>.*)
 *           safetensors  -> tensors renamed through the family's table, shapes reversed to ne[]
 *                            order; llama's q_proj/k_proj marked for llama.cpp's row permutation
 *                            (their biases permuted), Gemma's norms as 1 + w, and the tensors the
 *                            converter computes (rope_freqs, rope_factors_long/short) made here
 *           tokenizer    -> tokenizer.ggml.* (hf_tokenizer_load)
 * Writing:  the same three in reverse, streaming tensor data in bounded row chunks; the
 *           computed tensors go back into config.json's rope_scaling.
 */
#include "hf.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fileio.h"
#include "hf_tokenizer.h"
#include "safetensors.h"
#include "codec/types.h"

#define HF_CONFIG_MAX (16u << 20)       /* config.json larger than this is not a config */
#define HF_CHUNK_BYTES (16u << 20)      /* bound on each conversion buffer in hf_write */
#define HF_MAX_LAYERS 100000            /* sanity bound on num_hidden_layers */
#define HF_TRANSFORMERS_VERSION "4.46.3" /* written into config.json; informational only */

/* ------------------------------------------------------------------------------------------
 * Name mapping
 * ---------------------------------------------------------------------------------------- */

/* malloc'd printf. */
static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* If name is "<prefix><N>.<rest>" with N a canonical decimal (no sign, no leading zero),
 * store N and a pointer to rest and return true. */
static bool split_layer(const char *name, const char *prefix, long *layer, const char **rest) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) return false;
    const char *p = name + pl;
    size_t nd = 0;
    long v = 0;
    while (p[nd] >= '0' && p[nd] <= '9') {
        if (nd == 9) return false; /* more digits than any real model has layers */
        v = v * 10 + (p[nd] - '0');
        nd++;
    }
    if (nd == 0 || p[nd] != '.' || (nd > 1 && p[0] == '0')) return false;
    *layer = v;
    *rest = p + nd + 1;
    return true;
}

/* The entry of a's tables an HF name maps to, with *layer = N for block tensors and -1 for
 * globals; NULL when unknown. Generated tensors have no HF name and never match. */
static const arch_tensor *match_hf(const arch_desc *a, const char *name, long *layer) {
    for (int g = 0; g < a->n_globals; g++)
        if (a->globals[g].hf && strcmp(name, a->globals[g].hf) == 0) { *layer = -1; return &a->globals[g]; }
    const char *rest;
    if (!split_layer(name, "model.layers.", layer, &rest)) return NULL;
    for (int r = 0; r < a->n_layer_tensors; r++)
        if (a->layer[r].hf && strcmp(rest, a->layer[r].hf) == 0) return &a->layer[r];
    return NULL;
}

/* The same for a GGUF name. */
static const arch_tensor *match_gguf(const arch_desc *a, const char *name, long *layer) {
    const arch_tensor *t = arch_global(a, name);
    if (t) { *layer = -1; return t; }
    const char *rest;
    if (!split_layer(name, "blk.", layer, &rest)) return NULL;
    return arch_layer_tensor(a, rest);
}

char *hf_to_gguf_name(const arch_desc *a, const char *hf_name) {
    long layer;
    const arch_tensor *t = a && hf_name ? match_hf(a, hf_name, &layer) : NULL;
    if (!t) return NULL;
    return layer < 0 ? strdup(t->gguf) : str_printf("blk.%ld.%s", layer, t->gguf);
}

char *gguf_to_hf_name(const arch_desc *a, const char *gguf_name) {
    long layer;
    const arch_tensor *t = a && gguf_name ? match_gguf(a, gguf_name, &layer) : NULL;
    if (!t || !t->hf) return NULL;
    return layer < 0 ? strdup(t->hf) : str_printf("model.layers.%ld.%s", layer, t->hf);
}

/* The Q/K permutation a tensor of family a gets: the table's for the weights; a q/k bias gets
 * its weight's (the entry right before it), as llama.cpp's converter permutes q_proj.bias and
 * k_proj.bias too. */
static arch_qk entry_qk(const arch_desc *a, const arch_tensor *t) {
    if (!a->permute_qk) return ARCH_QK_NONE;
    if (t->qk != ARCH_QK_NONE) return t->qk;
    if (t->when == WHEN_QKV_BIAS && t > a->layer && t < a->layer + a->n_layer_tensors && t[-1].d0 == t->d0)
        return t[-1].qk;
    return ARCH_QK_NONE;
}

/* ------------------------------------------------------------------------------------------
 * The families' config.json conventions (transformers' config classes and llama.cpp's
 * converter classes)
 * ---------------------------------------------------------------------------------------- */

typedef enum partial_rule {
    PARTIAL_NONE,      /* no partial_rotary_factor: all of head_dim rotates */
    PARTIAL_EMBD,      /* int(f * hidden_size) // heads (Phi2Model, Phi3MiniModel) */
    PARTIAL_HEAD,      /* int(f * (hidden_size // heads)) (StableLMModel) */
} partial_rule;

typedef struct hf_family {
    const char *arch;
    const char *model_types[2];  /* accepted "model_type" values ([0] written: the family's) */
    const char *acts[3];         /* accepted activations ([0] written) */
    bool gemma_act;              /* "hidden_activation" (Gemma), else "hidden_act" */
    const char *eps_keys[2];     /* config keys of the norm's epsilon, first present wins; [0] written */
    bool eps_required;           /* the converter needs it (else transformers' default 1e-6) */
    bool theta_required;         /* the converter needs rope_theta */
    double theta_default;        /* rope_theta when absent */
    const char *bias_key;        /* config key saying whether q/k/v have biases (qkv_bias_config) */
    partial_rule partial;
    bool partial_required;
    const char *rope_types;      /* rope_scaling types accepted, for messages ("" none) */
} hf_family;

static const hf_family HF_FAMILIES[] = {
    {"llama", {"llama", "mistral"}, {"silu", "swish"}, false, {"rms_norm_eps"}, false, false, 10000.0,
     "attention_bias", PARTIAL_NONE, false, "linear, yarn, llama3"},
    {"qwen2", {"qwen2"}, {"silu", "swish"}, false, {"rms_norm_eps"}, false, false, 10000.0,
     NULL, PARTIAL_NONE, false, "linear, yarn"},
    {"qwen3", {"qwen3"}, {"silu", "swish"}, false, {"rms_norm_eps"}, false, false, 10000.0,
     "attention_bias", PARTIAL_NONE, false, "linear, yarn"},
    {"gemma", {"gemma"}, {"gelu_pytorch_tanh", "gelu", "gelu_new"}, true, {"rms_norm_eps"}, true, false, 10000.0,
     NULL, PARTIAL_NONE, false, ""},
    {"gemma2", {"gemma2"}, {"gelu_pytorch_tanh", "gelu", "gelu_new"}, true, {"rms_norm_eps"}, true, false, 10000.0,
     NULL, PARTIAL_NONE, false, ""},
    {"gemma3", {"gemma3_text"}, {"gelu_pytorch_tanh", "gelu", "gelu_new"}, true, {"rms_norm_eps"}, false, false,
     1000000.0, NULL, PARTIAL_NONE, false, "linear"},
    {"phi2", {"phi"}, {"gelu_new", "gelu_pytorch_tanh"}, false, {"layer_norm_eps", "layer_norm_epsilon"}, true, false,
     10000.0, NULL, PARTIAL_EMBD, true, ""},
    {"phi3", {"phi3"}, {"silu", "swish"}, false, {"rms_norm_eps"}, true, true, 10000.0,
     NULL, PARTIAL_EMBD, false, "longrope, su"},
    {"stablelm", {"stablelm"}, {"silu", "swish"}, false, {"layer_norm_eps", "norm_eps"}, true, false, 10000.0,
     "use_qkv_bias", PARTIAL_HEAD, true, ""},
};

static const hf_family *hf_family_of(const arch_desc *a) {
    for (size_t i = 0; a && i < sizeof HF_FAMILIES / sizeof HF_FAMILIES[0]; i++)
        if (strcmp(HF_FAMILIES[i].arch, a->name) == 0) return &HF_FAMILIES[i];
    return NULL;
}

static bool is_gemma(const arch_desc *a) { return strncmp(a->name, "gemma", 5) == 0; }

bool hf_writes_freq_base(const arch_desc *a, double rope_theta) {
    if (!a) return true;
    /* GemmaModel, Gemma2Model, Phi2Model and StableLMModel write no rope.freq_base: llama.cpp
     * assumes 10000. Another base is written, or the model would change. */
    if (strcmp(a->name, "gemma") == 0 || strcmp(a->name, "gemma2") == 0 || strcmp(a->name, "phi2") == 0 ||
        strcmp(a->name, "stablelm") == 0)
        return (float)rope_theta != 10000.0f;
    return true;
}

bool hf_writes_head_dim(const arch_desc *a, int64_t head_dim, int64_t n_embd, int64_t n_head) {
    /* the converters write key_length/value_length when config.json has head_dim, which
     * transformers' Qwen3 and Gemma configs always carry */
    if (a && (strcmp(a->name, "qwen3") == 0 || is_gemma(a))) return true;
    return n_head > 0 && (head_dim != n_embd / n_head || n_embd % n_head != 0);
}


/* n_rot from a partial rotary factor, exactly as the family's converter computes it. */
static int64_t partial_rot(partial_rule r, double f, int64_t n_embd, int64_t n_head) {
    if (r == PARTIAL_EMBD) return (int64_t)(f * (double)n_embd) / n_head;
    return (int64_t)(f * (double)(n_embd / n_head));
}

/* ------------------------------------------------------------------------------------------
 * config.json -> hf_config
 * ---------------------------------------------------------------------------------------- */

/* Read an integer field. Absent or null: *out = def when !required, else an error. */
static int cfg_int(const json_t *root, const char *key, bool required, int64_t def, int64_t *out,
                   const char *cfg_path, slmc_err *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return slmc_fail(err, cfg_path, "missing field \"%s\"", key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) return slmc_fail(err, cfg_path, "field \"%s\" is not an integer", key);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Read a number field (integer or real); absent or null: def, or an error when required. */
static int cfg_num_req(const json_t *root, const char *key, bool required, double def, double *out,
                       const char *cfg_path, slmc_err *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return slmc_fail(err, cfg_path, "missing field \"%s\"", key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) return slmc_fail(err, cfg_path, "field \"%s\" is not a number", key);
    *out = json_number_value(v);
    return 0;
}

static int cfg_num(const json_t *root, const char *key, double def, double *out, const char *cfg_path,
                   slmc_err *err) {
    return cfg_num_req(root, key, false, def, out, cfg_path, err);
}

/* Read a boolean field, def when absent or null. */
static int cfg_bool(const json_t *root, const char *key, bool def, bool *out, const char *cfg_path, slmc_err *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_boolean(v)) return slmc_fail(err, cfg_path, "field \"%s\" is not true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* A positive integer that also fits the u32 GGUF keys it becomes. */
static int cfg_check_positive(int64_t v, const char *key, const char *cfg_path, slmc_err *err) {
    if (v <= 0 || v > INT32_MAX)
        return slmc_fail(err, cfg_path, "field \"%s\" must be a positive integer (got %lld)", key,
                         (long long)v);
    return 0;
}

/* A field that must be false (a variant slmc and llama.cpp's graph for the family lack). */
static int cfg_must_be_false(const json_t *root, const char *key, const char *what, const char *cfg_path,
                             slmc_err *err) {
    bool v = false;
    if (cfg_bool(root, key, false, &v, cfg_path, err)) return -1;
    if (v) return slmc_fail(err, cfg_path, "field \"%s\" is true: %s", key, what);
    return 0;
}

static bool in_list(const char *s, const char *const *list, int n) {
    for (int i = 0; i < n && list[i]; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

static int cfg_arch(const json_t *root, hf_config *c, const char *cfg_path, slmc_err *err) {
    const json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
        return slmc_fail(err, cfg_path, "field \"architectures\" is missing or not a list of names");
    const char *a = json_string_value(json_array_get(archs, 0));
    c->arch = arch_by_hf_class(a);
    if (!c->arch || !hf_family_of(c->arch))
        return slmc_fail(err, cfg_path, "architecture %s is not supported (%s)", a, arch_hf_class_names());
    return 0;
}

/* model_type (when present) must be the family's, and the activation the family's. */
static int cfg_kind(const json_t *root, const hf_config *c, const hf_family *f, const char *cfg_path, slmc_err *err) {
    const json_t *mt = json_object_get(root, "model_type");
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt)) return slmc_fail(err, cfg_path, "field \"model_type\" is not a string");
        if (!in_list(json_string_value(mt), f->model_types, 2))
            return slmc_fail(err, cfg_path, "field \"model_type\" is \"%s\", not \"%s\" as %s has",
                             json_string_value(mt), f->model_types[0], c->arch->hf_classes[0]);
    }
    const char *key = "hidden_act";
    const json_t *act = json_object_get(root, key);
    if (f->gemma_act) {
        /* transformers' Gemma classes use hidden_activation; hidden_act only when it is null */
        const json_t *ha = json_object_get(root, "hidden_activation");
        if (ha && !json_is_null(ha)) { key = "hidden_activation"; act = ha; }
    }
    if (act && !json_is_null(act)) {
        if (!json_is_string(act)) return slmc_fail(err, cfg_path, "field \"%s\" is not a string", key);
        if (!in_list(json_string_value(act), f->acts, 3))
            return slmc_fail(err, cfg_path, "field \"%s\" is \"%s\": %s uses %s", key, json_string_value(act),
                             c->arch->name, f->acts[0]);
    }
    return 0;
}

/* A list of numbers of length n as f32 (malloc'd into *out). */
static int cfg_factors(const json_t *rs, const char *key, int64_t n, float **out, const char *cfg_path, slmc_err *err) {
    const json_t *v = json_object_get(rs, key);
    if (!json_is_array(v)) return slmc_fail(err, cfg_path, "field \"rope_scaling.%s\" is missing or not a list", key);
    if ((int64_t)json_array_size(v) != n)
        return slmc_fail(err, cfg_path, "field \"rope_scaling.%s\" has %zu values, expected %lld (rotary dimensions / 2)",
                         key, json_array_size(v), (long long)n);
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    if (!f) return slmc_fail(err, cfg_path, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_number(x)) { free(f); return slmc_fail(err, cfg_path, "field \"rope_scaling.%s\" holds a non-number", key); }
        f[i] = (float)json_number_value(x); /* torch.tensor(list, dtype=float32) */
    }
    *out = f;
    return 0;
}

/* rope_scaling: null / absent / {"rope_type" or "type": ..., ...}, per family. */
static int cfg_rope_scaling(const json_t *root, hf_config *c, const hf_family *f, const char *cfg_path, slmc_err *err) {
    const json_t *rs = json_object_get(root, "rope_scaling");
    c->rope_type[0] = 0;
    c->attn_factor = 1.0;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return slmc_fail(err, cfg_path, "field \"rope_scaling\" is not an object");
    const char *tkey = "rope_scaling.rope_type";
    const json_t *t = json_object_get(rs, "rope_type");
    if (!t) { t = json_object_get(rs, "type"); tkey = "rope_scaling.type"; }
    if (!json_is_string(t))
        return slmc_fail(err, cfg_path, "field \"rope_scaling\" has no \"rope_type\" or \"type\"");
    const char *type = json_string_value(t);
    if (strcmp(type, "default") == 0) return 0;
    bool known = strcmp(type, "linear") == 0 || strcmp(type, "yarn") == 0 || strcmp(type, "llama3") == 0 ||
                 strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0;
    bool allowed = false; /* type is one of the comma-separated names of f->rope_types */
    for (const char *p = f->rope_types; *p;) {
        size_t l = strcspn(p, ",");
        allowed |= strlen(type) == l && strncmp(p, type, l) == 0;
        p += l;
        while (*p == ',' || *p == ' ') p++;
    }
    if (!known || !allowed)
        return slmc_fail(err, cfg_path, "field \"%s\" is \"%s\": not supported for %s (%s)", tkey, type, c->arch->name,
                         f->rope_types[0] ? f->rope_types : "no rope scaling");
    if (strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0) {
        /* Phi3MiniModel: the factor tensors and the attention factor */
        snprintf(c->rope_type, sizeof c->rope_type, "longrope");
        double scale = (double)c->n_ctx / (double)c->rope_orig_ctx;
        c->attn_factor = scale > 1.0 ? sqrt(1.0 + log(scale) / log((double)c->rope_orig_ctx)) : 1.0;
        if (cfg_factors(rs, "long_factor", c->n_rot / 2, &c->long_factor, cfg_path, err) ||
            cfg_factors(rs, "short_factor", c->n_rot / 2, &c->short_factor, cfg_path, err))
            return -1;
        return 0;
    }
    snprintf(c->rope_type, sizeof c->rope_type, "%s", type);
    const json_t *fac = json_object_get(rs, "factor");
    if (strcmp(type, "llama3") == 0) {
        /* LlamaModel.generate_extra_tensors: defaults 8, 1, 4; the original context comes from
         * config.json's top level (8192 when absent), not from rope_scaling */
        c->rope_factor = 8.0;
        c->rope_low = 1.0;
        c->rope_high = 4.0;
        if (fac && !json_is_null(fac)) {
            if (!json_is_number(fac) || !(json_number_value(fac) > 0))
                return slmc_fail(err, cfg_path, "field \"rope_scaling.factor\" must be a positive number");
            c->rope_factor = json_number_value(fac);
        }
        if (cfg_num(rs, "low_freq_factor", 1.0, &c->rope_low, cfg_path, err) ||
            cfg_num(rs, "high_freq_factor", 4.0, &c->rope_high, cfg_path, err) ||
            cfg_int(root, "original_max_position_embeddings", false, 8192, &c->rope_orig_ctx, cfg_path, err) ||
            cfg_check_positive(c->rope_orig_ctx, "original_max_position_embeddings", cfg_path, err))
            return -1;
        if (!(c->rope_low > 0) || !(c->rope_high > 0) || c->rope_low == c->rope_high)
            return slmc_fail(err, cfg_path, "fields \"rope_scaling.low_freq_factor\" and \"high_freq_factor\" must "
                             "be positive and differ");
        int64_t inner;
        if (cfg_int(rs, "original_max_position_embeddings", false, c->rope_orig_ctx, &inner, cfg_path, err)) return -1;
        if (inner != c->rope_orig_ctx)
            return slmc_fail(err, cfg_path, "field \"rope_scaling.original_max_position_embeddings\" is %lld but "
                             "llama.cpp's converter uses %lld (the top-level original_max_position_embeddings, "
                             "default 8192)", (long long)inner, (long long)c->rope_orig_ctx);
        return 0;
    }
    if (!json_is_number(fac) || !(json_number_value(fac) > 0))
        return slmc_fail(err, cfg_path, "field \"rope_scaling.factor\" must be a positive number");
    c->rope_factor = json_number_value(fac);
    if (strcmp(type, "yarn") == 0) {
        const json_t *o = json_object_get(rs, "original_max_position_embeddings");
        if (!json_is_integer(o) || json_integer_value(o) <= 0 || json_integer_value(o) > INT32_MAX)
            return slmc_fail(err, cfg_path,
                             "field \"rope_scaling.original_max_position_embeddings\" must be a "
                             "positive integer for yarn");
        c->rope_orig_ctx = (int64_t)json_integer_value(o);
    }
    return 0;
}

/* The family's own fields: sliding windows, soft-caps, Gemma's query scale, and the variants
 * slmc refuses. */
static int cfg_family(const json_t *root, hf_config *c, const char *cfg_path, slmc_err *err) {
    const char *n = c->arch->name;
    if (strcmp(n, "llama") == 0)
        return cfg_must_be_false(root, "mlp_bias", "MLP biases are not supported", cfg_path, err);
    if (strcmp(n, "phi2") == 0) {
        if (c->tied) return slmc_fail(err, cfg_path, "field \"tie_word_embeddings\" is true: phi2's lm_head has a bias of its own");
        return cfg_must_be_false(root, "qk_layernorm", "q/k layer norms are not supported", cfg_path, err);
    }
    if (strcmp(n, "stablelm") == 0)
        return cfg_must_be_false(root, "use_parallel_residual", "parallel residual blocks are not supported", cfg_path, err) ||
               cfg_must_be_false(root, "qk_layernorm", "q/k layer norms are not supported", cfg_path, err) ? -1 : 0;
    if (strcmp(n, "phi3") == 0) {
        const json_t *sw = json_object_get(root, "sliding_window");
        c->n_swa = 0; /* null: no window (Phi-4), written as 0 as the converter does */
        if (sw && !json_is_null(sw)) {
            if (!json_is_integer(sw) || json_integer_value(sw) < 0 || json_integer_value(sw) > INT32_MAX)
                return slmc_fail(err, cfg_path, "field \"sliding_window\" must be null or a non-negative integer");
            c->n_swa = (int64_t)json_integer_value(sw);
        }
        return 0;
    }
    if (!is_gemma(c->arch)) return 0;
    if (!c->tied) return slmc_fail(err, cfg_path, "field \"tie_word_embeddings\" is false: %s ties its output to the embedding", n);
    if (strcmp(n, "gemma") == 0) return 0;
    /* gemma2, gemma3 */
    if (cfg_int(root, "sliding_window", true, 0, &c->n_swa, cfg_path, err) ||
        cfg_check_positive(c->n_swa, "sliding_window", cfg_path, err))
        return -1;
    double qs;
    bool g2 = strcmp(n, "gemma2") == 0;
    if (cfg_num_req(root, "query_pre_attn_scalar", g2, 256.0, &qs, cfg_path, err)) return -1;
    int64_t want = arch_query_scalar(c->arch, c->n_layer, c->n_embd, c->n_head, c->head_dim);
    if (qs != (double)want)
        return slmc_fail(err, cfg_path, "field \"query_pre_attn_scalar\" is %g: llama.cpp scales queries by "
                         "1/sqrt(%lld) for this shape", qs, (long long)want);
    if (g2) {
        if (cfg_num_req(root, "attn_logit_softcapping", true, 0, &c->attn_softcap, cfg_path, err) ||
            cfg_num_req(root, "final_logit_softcapping", true, 0, &c->final_softcap, cfg_path, err))
            return -1;
        if (!(c->attn_softcap > 0)) return slmc_fail(err, cfg_path, "field \"attn_logit_softcapping\" must be positive");
        if (!(c->final_softcap > 0)) return slmc_fail(err, cfg_path, "field \"final_logit_softcapping\" must be positive");
        return 0;
    }
    /* gemma3: no soft-caps; 5 sliding layers to 1 global; the local layers' own rope base */
    static const char *const no_caps[] = {"attn_logit_softcapping", "final_logit_softcapping"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, no_caps[i]);
        if (v && !json_is_null(v))
            return slmc_fail(err, cfg_path, "field \"%s\" is set: gemma3 has no soft-capping in llama.cpp", no_caps[i]);
    }
    int64_t pattern;
    if (cfg_int(root, "sliding_window_pattern", false, 6, &pattern, cfg_path, err)) return -1;
    if (pattern != 6)
        return slmc_fail(err, cfg_path, "field \"sliding_window_pattern\" is %lld: llama.cpp's gemma3 has 5 sliding "
                         "layers to 1 global (6)", (long long)pattern);
    const json_t *lt = json_object_get(root, "layer_types");
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt) || (int64_t)json_array_size(lt) != c->n_layer)
            return slmc_fail(err, cfg_path, "field \"layer_types\" must list num_hidden_layers layer types");
        for (int64_t i = 0; i < c->n_layer; i++) {
            const char *want_t = arch_layer_slides(c->arch, i) ? "sliding_attention" : "full_attention";
            const char *got = json_string_value(json_array_get(lt, (size_t)i));
            if (!got || strcmp(got, want_t) != 0)
                return slmc_fail(err, cfg_path, "field \"layer_types\" entry %lld is not \"%s\" (5 sliding layers "
                                 "to 1 global)", (long long)i, want_t);
        }
    }
    if (cfg_num(root, "rope_local_base_freq", 10000.0, &c->rope_local_base, cfg_path, err)) return -1;
    if (!(c->rope_local_base > 0)) return slmc_fail(err, cfg_path, "field \"rope_local_base_freq\" must be positive");
    return 0;
}

static int parse_root(const json_t *root, const char *cfg_path, hf_config *c, slmc_err *err) {
    if (!json_is_object(root)) return slmc_fail(err, cfg_path, "not a JSON object");
    if (cfg_arch(root, c, cfg_path, err)) return -1;
    const hf_family *f = hf_family_of(c->arch);
    if (cfg_kind(root, c, f, cfg_path, err)) return -1;
    /* the model's name travels through HF folders as _name_or_path (general.name in GGUF) */
    const json_t *jname = json_object_get(root, "_name_or_path");
    if (json_is_string(jname) && json_string_length(jname) < sizeof c->name)
        snprintf(c->name, sizeof c->name, "%s", json_string_value(jname));

    /* Phi2Model reads n_positions before max_position_embeddings */
    const char *ctx_key = "max_position_embeddings";
    if (strcmp(c->arch->name, "phi2") == 0 && json_object_get(root, "n_positions")) ctx_key = "n_positions";
    if (cfg_int(root, "hidden_size", true, 0, &c->n_embd, cfg_path, err) ||
        cfg_int(root, "intermediate_size", true, 0, &c->n_ff, cfg_path, err) ||
        cfg_int(root, "num_hidden_layers", true, 0, &c->n_layer, cfg_path, err) ||
        cfg_int(root, "num_attention_heads", true, 0, &c->n_head, cfg_path, err) ||
        cfg_int(root, "vocab_size", true, 0, &c->n_vocab, cfg_path, err) ||
        cfg_int(root, ctx_key, true, 0, &c->n_ctx, cfg_path, err) ||
        cfg_check_positive(c->n_embd, "hidden_size", cfg_path, err) ||
        cfg_check_positive(c->n_ff, "intermediate_size", cfg_path, err) ||
        cfg_check_positive(c->n_layer, "num_hidden_layers", cfg_path, err) ||
        cfg_check_positive(c->n_head, "num_attention_heads", cfg_path, err) ||
        cfg_check_positive(c->n_vocab, "vocab_size", cfg_path, err) ||
        cfg_check_positive(c->n_ctx, ctx_key, cfg_path, err))
        return -1;
    if (c->n_layer > HF_MAX_LAYERS)
        return slmc_fail(err, cfg_path, "field \"num_hidden_layers\" is %lld, more than %d",
                         (long long)c->n_layer, HF_MAX_LAYERS);
    if (cfg_int(root, "num_key_value_heads", false, c->n_head, &c->n_head_kv, cfg_path, err) ||
        cfg_check_positive(c->n_head_kv, "num_key_value_heads", cfg_path, err))
        return -1;
    if (c->n_head % c->n_head_kv != 0)
        return slmc_fail(err, cfg_path, "field \"num_key_value_heads\" (%lld) does not divide "
                         "\"num_attention_heads\" (%lld)", (long long)c->n_head_kv, (long long)c->n_head);
    /* head_dim: given (Mistral-NeMo, Qwen3, Gemma) or hidden_size / heads. */
    const json_t *hd = json_object_get(root, "head_dim");
    if (hd && !json_is_null(hd)) {
        if (cfg_int(root, "head_dim", true, 0, &c->head_dim, cfg_path, err) ||
            cfg_check_positive(c->head_dim, "head_dim", cfg_path, err))
            return -1;
    } else if (is_gemma(c->arch)) {
        return slmc_fail(err, cfg_path, "missing field \"head_dim\""); /* the Gemma converters read it */
    } else {
        if (c->n_embd % c->n_head != 0)
            return slmc_fail(err, cfg_path, "field \"num_attention_heads\" (%lld) does not divide "
                             "\"hidden_size\" (%lld) and there is no \"head_dim\"",
                             (long long)c->n_head, (long long)c->n_embd);
        c->head_dim = c->n_embd / c->n_head;
    }
    /* RoPE rotates pairs, and llama.cpp's permutation splits each head in two halves. */
    if (c->head_dim % 2 != 0)
        return slmc_fail(err, cfg_path, "head dimension %lld is odd (hidden_size / num_attention_heads "
                         "or head_dim must be even)", (long long)c->head_dim);
    if (f->partial != PARTIAL_NONE && c->head_dim * c->n_head != c->n_embd)
        return slmc_fail(err, cfg_path, "field \"head_dim\" (%lld) times heads must be hidden_size for %s",
                         (long long)c->head_dim, c->arch->name);

    /* Rotary dimensions: all of head_dim, or the family's partial_rotary_factor rule. */
    c->n_rot = c->head_dim;
    const char *pkey = "partial_rotary_factor";
    if (strcmp(c->arch->name, "stablelm") == 0 && !json_object_get(root, pkey) && json_object_get(root, "rope_pct"))
        pkey = "rope_pct"; /* StableLMModel: partial_rotary_factor, else rope_pct */
    double prf;
    if (cfg_num_req(root, pkey, f->partial_required, 1.0, &prf, cfg_path, err)) return -1;
    if (f->partial == PARTIAL_NONE) {
        if (prf != 1.0) return slmc_fail(err, cfg_path, "field \"%s\" is %g: %s has no partial rotary", pkey, prf, c->arch->name);
    } else {
        if (!(prf > 0 && prf <= 1.0)) return slmc_fail(err, cfg_path, "field \"%s\" must be in (0, 1]", pkey);
        c->n_rot = partial_rot(f->partial, prf, c->n_embd, c->n_head);
        if (c->n_rot <= 0 || c->n_rot % 2 != 0 || c->n_rot > c->head_dim)
            return slmc_fail(err, cfg_path, "field \"%s\" (%g) gives %lld rotary dimensions of %lld: not a positive "
                             "even number", pkey, prf, (long long)c->n_rot, (long long)c->head_dim);
    }

    if (cfg_num_req(root, "rope_theta", f->theta_required, f->theta_default, &c->rope_theta, cfg_path, err)) return -1;
    if (!(c->rope_theta > 0)) return slmc_fail(err, cfg_path, "field \"rope_theta\" must be positive");
    const char *eps_key = f->eps_keys[0];
    if (f->eps_keys[1] && !json_object_get(root, eps_key) && json_object_get(root, f->eps_keys[1])) eps_key = f->eps_keys[1];
    if (cfg_num_req(root, eps_key, f->eps_required, 1e-6, &c->norm_eps, cfg_path, err)) return -1;
    if (!(c->norm_eps > 0)) return slmc_fail(err, cfg_path, "field \"%s\" must be positive", eps_key);

    if (cfg_bool(root, "tie_word_embeddings", c->arch->tied_default, &c->tied, cfg_path, err)) return -1;
    c->qkv_bias = c->arch->qkv_bias;
    if (c->arch->qkv_bias_config && f->bias_key &&
        cfg_bool(root, f->bias_key, c->arch->qkv_bias, &c->qkv_bias, cfg_path, err))
        return -1;
    if (strcmp(c->arch->name, "phi3") == 0 &&
        (cfg_int(root, "original_max_position_embeddings", true, 0, &c->rope_orig_ctx, cfg_path, err) ||
         cfg_check_positive(c->rope_orig_ctx, "original_max_position_embeddings", cfg_path, err)))
        return -1;
    c->rope_local_base = 10000.0;
    if (cfg_rope_scaling(root, c, f, cfg_path, err)) return -1;
    return cfg_family(root, c, cfg_path, err);
}

int hf_config_parse(const char *text, size_t len, const char *cfg_path, hf_config *c, slmc_err *err) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return slmc_fail(err, cfg_path, "invalid JSON at offset %d: %s", jerr.position, jerr.text);
    int rc = parse_root(root, cfg_path, c, err);
    json_decref(root);
    if (rc) hf_config_free(c);
    return rc;
}

void hf_config_free(hf_config *c) {
    if (!c) return;
    free(c->long_factor);
    free(c->short_factor);
    c->long_factor = c->short_factor = NULL;
}

int64_t hf_config_dim(const hf_config *c, arch_dim d) {
    switch (d) {
    case DIM_VOCAB: return c->n_vocab;
    case DIM_EMBD: return c->n_embd;
    case DIM_HEAD: return c->head_dim;
    case DIM_Q: return c->n_head * c->head_dim;
    case DIM_KV: return c->n_head_kv * c->head_dim;
    case DIM_QKV: return (c->n_head + 2 * c->n_head_kv) * c->head_dim;
    case DIM_FF: return c->n_ff;
    case DIM_FF2: return 2 * c->n_ff;
    case DIM_ROT2: return c->n_rot / 2;
    default: return 0;
    }
}

bool hf_config_has_tensor(const hf_config *c, const arch_tensor *t) {
    switch (t->when) {
    case WHEN_ALWAYS: return t->hf != NULL;
    case WHEN_QKV_BIAS: return c->qkv_bias;
    case WHEN_UNTIED: return !c->tied;
    default: return false;
    }
}

/* Whether the converter generates tensor t (WHEN_ROPE_FACTORS) for this config. */
static bool generates(const hf_config *c, const arch_tensor *t) {
    if (t->when != WHEN_ROPE_FACTORS) return false;
    if (strcmp(t->gguf, "rope_freqs.weight") == 0) return strcmp(c->rope_type, "llama3") == 0;
    return strcmp(c->rope_type, "longrope") == 0; /* rope_factors_long / rope_factors_short */
}

/* ------------------------------------------------------------------------------------------
 * Generated tensors
 * ---------------------------------------------------------------------------------------- */

void hf_llama3_rope_factors(float *out, int64_t dim, float base, double factor, double low_freq_factor,
                            double high_freq_factor, double original_ctx) {
    /* LlamaModel.generate_extra_tensors, op by op in f32 as torch evaluates it: a Python
     * scalar meeting an f32 tensor is rounded to f32 first; `s / t` is t.reciprocal() * s. */
    const float two_pi = (float)(2.0 * M_PI);
    const float low_wl = (float)(original_ctx / low_freq_factor), high_wl = (float)(original_ctx / high_freq_factor);
    const float ctx = (float)original_ctx, low = (float)low_freq_factor, fac = (float)factor;
    const float span = (float)(high_freq_factor - low_freq_factor);
    for (int64_t i = 0; i < dim / 2; i++) {
        float expo = (float)(2 * i) / (float)dim;
        float freq = 1.0f / powf(base, expo);
        float wavelen = (1.0f / freq) * two_pi;
        if (wavelen < high_wl) {
            out[i] = 1.0f;
        } else if (wavelen > low_wl) {
            out[i] = fac;
        } else {
            float smooth = ((1.0f / wavelen) * ctx - low) / span;
            float d = (1.0f - smooth) / fac + smooth;
            out[i] = 1.0f / d;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * hf_config -> GGUF keys
 * ---------------------------------------------------------------------------------------- */

static int kv_u32(meta *kv, const char *arch, const char *suffix, int64_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return meta_set_u32(kv, key, (uint32_t)v);
}
static int kv_f32(meta *kv, const char *arch, const char *suffix, double v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return meta_set_f32(kv, key, (float)v);
}
static int kv_str(meta *kv, const char *arch, const char *suffix, const char *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return meta_set_str(kv, key, v);
}
static int kv_bool(meta *kv, const char *arch, const char *suffix, bool v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return meta_set_bool(kv, key, v);
}

/* The keys set_gguf_parameters() of llama.cpp's converter writes for the family, in the order
 * of its base class (TextModel's block/context/embedding/ffn/heads/rope base/eps/file type),
 * then the family's additions. general.file_type is a placeholder here, set once the tensors
 * are known. (The GGUF writer puts the architecture keys in one canonical order anyway:
 * model_gguf_meta.) */
static int build_kv(meta *kv, const hf_config *c, const char *name) {
    const arch_desc *ad = c->arch;
    const char *a = ad->name;
    bool layer_norm = ad->norm == NORM_LAYER;
    if (meta_set_str(kv, "general.architecture", a) || meta_set_str(kv, "general.name", name) ||
        kv_u32(kv, a, "block_count", c->n_layer) || kv_u32(kv, a, "context_length", c->n_ctx) ||
        kv_u32(kv, a, "embedding_length", c->n_embd) || kv_u32(kv, a, "feed_forward_length", c->n_ff) ||
        kv_u32(kv, a, "attention.head_count", c->n_head) ||
        kv_u32(kv, a, "attention.head_count_kv", c->n_head_kv))
        return -1;
    if (hf_writes_freq_base(ad, c->rope_theta) && kv_f32(kv, a, "rope.freq_base", c->rope_theta)) return -1;
    if (kv_f32(kv, a, layer_norm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon", c->norm_eps) ||
        meta_set_u32(kv, "general.file_type", 0))
        return -1;
    if (ad->kv_vocab_size && kv_u32(kv, a, "vocab_size", c->n_vocab)) return -1;
    if (ad->kv_rope_dims && kv_u32(kv, a, "rope.dimension_count", c->n_rot)) return -1;
    if (hf_writes_head_dim(ad, c->head_dim, c->n_embd, c->n_head) &&
        (kv_u32(kv, a, "attention.key_length", c->head_dim) || kv_u32(kv, a, "attention.value_length", c->head_dim)))
        return -1;
    if (strcmp(c->rope_type, "linear") == 0 || strcmp(c->rope_type, "yarn") == 0) {
        if (kv_str(kv, a, "rope.scaling.type", c->rope_type) || kv_f32(kv, a, "rope.scaling.factor", c->rope_factor))
            return -1;
        if (strcmp(c->rope_type, "yarn") == 0 &&
            kv_u32(kv, a, "rope.scaling.original_context_length", c->rope_orig_ctx))
            return -1;
    }
    /* (llama3: no rope.scaling.* keys; the factors are the rope_freqs tensor) */
    if (strcmp(a, "phi3") == 0) {
        if (kv_u32(kv, a, "rope.scaling.original_context_length", c->rope_orig_ctx) ||
            kv_u32(kv, a, "attention.sliding_window", c->n_swa))
            return -1;
        if (c->rope_type[0] && kv_f32(kv, a, "rope.scaling.attn_factor", c->attn_factor)) return -1;
    }
    if (strcmp(a, "gemma2") == 0 &&
        (kv_f32(kv, a, "attn_logit_softcapping", c->attn_softcap) ||
         kv_f32(kv, a, "final_logit_softcapping", c->final_softcap) ||
         kv_u32(kv, a, "attention.sliding_window", c->n_swa)))
        return -1;
    if (strcmp(a, "gemma3") == 0) {
        if (kv_u32(kv, a, "attention.sliding_window", c->n_swa)) return -1;
        /* llama.cpp hard-codes 10000 for the local layers; another base is written as
         * rope.freq_base_swa (the key newer llama.cpp reads) */
        if ((float)c->rope_local_base != 10000.0f && kv_f32(kv, a, "rope.freq_base_swa", c->rope_local_base)) return -1;
    }
    if (strcmp(a, "stablelm") == 0 && kv_bool(kv, a, "use_parallel_residual", false)) return -1;
    return 0;
}

/* llama.cpp's general.file_type for a float type (LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_BF16). */
static uint32_t file_type_of(int type) {
    return type == GGML_TYPE_BF16 ? 32 : type == GGML_TYPE_F16 ? 1 : 0;
}

/* The float type holding most matrix (2-D and up) elements, F32 when there are none. */
static int dominant_matrix_type(const model_tensor *t, uint64_t n) {
    uint64_t count[GGML_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < n; i++)
        if (t[i].n_dims >= 2 && t[i].type >= 0 && t[i].type < GGML_TYPE_COUNT)
            count[t[i].type] += (uint64_t)(t[i].ne[0] * model_tensor_rows(&t[i]));
    int best = GGML_TYPE_F32;
    const int floats[3] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16};
    for (int k = 0; k < 3; k++)
        if (count[floats[k]] > count[best]) best = floats[k];
    return best;
}

/* ------------------------------------------------------------------------------------------
 * safetensors tensors -> model tensors
 * ---------------------------------------------------------------------------------------- */

/* Check an st tensor's shape against its table entry; the message names the tensor and both
 * shapes. */
static int check_shape(const st_tensor *t, const arch_tensor *r, const hf_config *c, const char *path,
                       slmc_err *err) {
    int64_t want[2] = {hf_config_dim(c, r->d0), hf_config_dim(c, r->d1)};
    int want_dims = r->d1 == DIM_NONE ? 1 : 2;
    bool ok = t->n_dims == want_dims;
    for (int i = 0; ok && i < want_dims; i++) ok = t->shape[i] == want[i];
    if (ok) return 0;
    char got[128] = "[", exp[64];
    for (int i = 0; i < t->n_dims && strlen(got) < 100; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    snprintf(got + strlen(got), sizeof got - strlen(got), "]");
    if (want_dims == 1) snprintf(exp, sizeof exp, "[%lld]", (long long)want[0]);
    else snprintf(exp, sizeof exp, "[%lld, %lld]", (long long)want[0], (long long)want[1]);
    return slmc_fail(err, path, "tensor %s has shape %s, expected %s", t->name, got, exp);
}

/* 1 + w for n values of a float type, computed in that type as torch's `data_torch + 1` does
 * (the sum in f32, rounded once to the type): Gemma's norms. In place. */
static void plus_one_in_type(int type, void *data, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t *p = (uint8_t *)data + (size_t)i * type_nbytes(type, 1);
        float v;
        row_to_f32(type, p, &v, 1);
        v = v + 1.0f;
        row_from_f32(type, &v, p, 1);
    }
}

/* Append the model tensor for st tensor s (data in place), named gguf_name (ownership taken). */
static model_tensor *add_st_tensor(model *m, const st_tensor *s, char *gguf_name, int64_t qk_heads) {
    model_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = gguf_name;
    t->type = s->type;
    t->n_dims = s->n_dims;
    for (int i = 0; i < MODEL_MAX_DIMS; i++) t->ne[i] = 1;
    for (int i = 0; i < s->n_dims; i++) t->ne[i] = s->shape[s->n_dims - 1 - i]; /* reversed */
    t->nbytes = s->nbytes;
    t->data = s->data;
    t->qk_heads = qk_heads;
    return t;
}

/* Give t a heap copy of its data (freed by model_close), to transform. */
static int own_data(model_tensor *t) {
    void *copy = malloc(t->nbytes ? t->nbytes : 1);
    if (!copy) return -1;
    memcpy(copy, t->data, t->nbytes);
    t->owned = copy;
    t->data = copy;
    return 0;
}

/* A generated F32 vector (owned), named gguf_name (ownership taken). */
static model_tensor *add_f32_vector(model *m, char *gguf_name, const float *values, int64_t n) {
    float *data = malloc((size_t)(n ? n : 1) * sizeof *data);
    if (!data) return NULL;
    memcpy(data, values, (size_t)n * sizeof *data);
    model_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = gguf_name;
    t->type = GGML_TYPE_F32;
    t->n_dims = 1;
    t->ne[0] = n;
    t->ne[1] = t->ne[2] = t->ne[3] = 1;
    t->nbytes = (uint64_t)n * 4;
    t->data = (const uint8_t *)data;
    t->owned = data;
    return t;
}

/* The values of a generated tensor (malloc'd [hf_config_dim(ROT2)]). */
static float *generated_values(const hf_config *c, const arch_tensor *r) {
    int64_t n = c->n_rot / 2;
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    if (strcmp(r->gguf, "rope_freqs.weight") == 0)
        hf_llama3_rope_factors(v, c->head_dim, (float)c->rope_theta, c->rope_factor, c->rope_low, c->rope_high,
                               (double)c->rope_orig_ctx);
    else
        memcpy(v, strcmp(r->gguf, "rope_factors_long.weight") == 0 ? c->long_factor : c->short_factor,
               (size_t)n * sizeof *v);
    return v;
}

/* Map every st tensor to a slot (global or layer x entry), check names and shapes, then list
 * the slots in the table order: token_embd, the blocks, the other globals (generated ones
 * made here). */
static int map_tensors(model *m, const st_model *st, hf_config *c, const char *path, slmc_err *err) {
    const arch_desc *a = c->arch;
    const uint64_t G = (uint64_t)a->n_globals, L = (uint64_t)a->n_layer_tensors;
    uint64_t n_slots = G + (uint64_t)c->n_layer * L;
    int64_t *slot = malloc(n_slots * sizeof *slot); /* st index per slot, -1 when absent */
    if (!slot) return slmc_fail(err, path, "out of memory");
    for (uint64_t i = 0; i < n_slots; i++) slot[i] = -1;
    int rc = -1;
    int out_slot = -1; /* the WHEN_UNTIED global, if the family has one */
    for (int g = 0; g < a->n_globals; g++)
        if (a->globals[g].when == WHEN_UNTIED) out_slot = g;

    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const st_tensor *t = &st->tensors[i];
        long layer;
        const arch_tensor *rule = match_hf(a, t->name, &layer);
        if (!rule) {
            size_t nl = strlen(t->name), sl = strlen(".rotary_emb.inv_freq");
            if (nl >= sl && strcmp(t->name + nl - sl, ".rotary_emb.inv_freq") == 0) continue; /* recomputed */
            /* Gemma ties its output: llama.cpp's converter skips a stored lm_head copy */
            if (is_gemma(a) && strcmp(t->name, "lm_head.weight") == 0) continue;
            slmc_fail(err, path, "tensor %s has no GGUF name", t->name);
            goto done;
        }
        if (layer >= c->n_layer) {
            slmc_fail(err, path, "tensor %s is in layer %ld but num_hidden_layers is %lld", t->name, layer,
                      (long long)c->n_layer);
            goto done;
        }
        if (rule->when == WHEN_QKV_BIAS && !c->qkv_bias) {
            slmc_fail(err, path, "tensor %s: config.json says the q/k/v projections have no biases", t->name);
            goto done;
        }
        if (check_shape(t, rule, c, path, err)) goto done;
        uint64_t s = layer < 0 ? (uint64_t)(rule - a->globals) : G + (uint64_t)layer * L + (uint64_t)(rule - a->layer);
        slot[s] = (int64_t)i;
    }

    /* No lm_head means the classifier is the embedding; with tie_word_embeddings a stored
     * lm_head is a copy and is dropped, as transformers does on load. */
    if (out_slot >= 0) {
        bool tied = c->tied || slot[out_slot] < 0;
        if (tied) slot[out_slot] = -1;
        c->tied = tied;
    }

    /* Missing tensors: list the first few names. */
    char missing[512] = "";
    uint64_t n_missing = 0;
    for (uint64_t s = 0; s < n_slots; s++) {
        if (slot[s] >= 0 || (int64_t)s == out_slot) continue;
        const arch_tensor *rule = s < G ? &a->globals[s] : &a->layer[(s - G) % L];
        if (!hf_config_has_tensor(c, rule)) continue;
        if (n_missing++ < 4) {
            char name[160];
            if (s < G) snprintf(name, sizeof name, "%s", rule->hf);
            else snprintf(name, sizeof name, "model.layers.%llu.%s", (unsigned long long)((s - G) / L), rule->hf);
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", n_missing > 1 ? ", " : "", name);
        }
    }
    if (n_missing) {
        if (n_missing > 4)
            slmc_fail(err, path, "missing tensors: %s and %llu more", missing, (unsigned long long)(n_missing - 4));
        else
            slmc_fail(err, path, "missing tensor%s: %s", n_missing > 1 ? "s" : "", missing);
        goto done;
    }

    m->tensors = calloc(n_slots, sizeof *m->tensors);
    if (!m->tensors) { slmc_fail(err, path, "out of memory"); goto done; }
    m->n_tensors = 0;
    /* Order: token_embd (globals[0]), blocks 0..L-1 in table order, the other globals. */
    for (uint64_t k = 0; k < n_slots; k++) {
        uint64_t s = k == 0 ? 0 : k < 1 + n_slots - G ? G + (k - 1) : k - (n_slots - G);
        const arch_tensor *rule = s < G ? &a->globals[s] : &a->layer[(s - G) % L];
        long layer = s < G ? -1 : (long)((s - G) / L);
        bool gen = s < G && generates(c, rule);
        if (slot[s] < 0 && !gen) continue;
        char *gname = layer < 0 ? strdup(rule->gguf) : str_printf("blk.%ld.%s", layer, rule->gguf);
        if (!gname) { slmc_fail(err, path, "out of memory"); goto done; }
        if (gen) {
            float *v = generated_values(c, rule);
            model_tensor *t = v ? add_f32_vector(m, gname, v, c->n_rot / 2) : NULL;
            free(v);
            if (!t) { free(gname); slmc_fail(err, path, "out of memory"); goto done; }
            continue;
        }
        const st_tensor *src = &st->tensors[slot[s]];
        arch_qk qk = entry_qk(a, rule);
        int64_t heads = qk == ARCH_QK_Q ? c->n_head : qk == ARCH_QK_K ? c->n_head_kv : 0;
        bool vector = rule->d1 == DIM_NONE;
        /* llama.cpp permutes q/k weights with n_head / n_head_kv heads (done on read here) */
        model_tensor *t = add_st_tensor(m, src, gname, vector ? 0 : heads);
        if (vector && (heads > 0 || rule->plus_one)) {
            if (!type_is_float(t->type)) {
                slmc_fail(err, path, "tensor %s is %s: F32, F16 or BF16 expected", src->name, type_name(t->type));
                goto done;
            }
            if (own_data(t)) { slmc_fail(err, path, "out of memory"); goto done; }
            if (rule->plus_one) plus_one_in_type(t->type, t->owned, t->ne[0]);
            if (heads > 0) {
                /* a q/k bias: its elements get the rows' permutation */
                size_t es = type_nbytes(t->type, 1);
                int64_t n = t->ne[0];
                if (n % heads != 0 || (n / heads) % 2 != 0) {
                    slmc_fail(err, path, "tensor %s: %lld values do not split into %lld heads of even size", src->name,
                              (long long)n, (long long)heads);
                    goto done;
                }
                for (int64_t g = 0; g < n; g++)
                    memcpy((uint8_t *)t->owned + (size_t)g * es, src->data + (size_t)qk_row_hf_of_gguf(g, n, heads) * es, es);
            }
        }
    }
    rc = 0;
done:
    free(slot);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * hf_open
 * ---------------------------------------------------------------------------------------- */

static void free_st(void *src) {
    st_close(src);
    free(src);
}

/* The folder that holds `path` (path itself when it is a folder). malloc'd. */
static char *folder_of(const char *path) {
    if (is_dir(path)) return strdup(path);
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* general.name: the folder's name, as llama.cpp's converter defaults to. malloc'd. */
static char *model_name_of(const char *dir) {
    char *real = realpath(dir, NULL);
    const char *d = real ? real : dir;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && d[b - 1] != '/') b--;
    char *name = n > b ? strndup(d + b, n - b) : strdup("model");
    free(real);
    return name;
}

int hf_open(model *m, const char *path, slmc_err *err) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    char *dir = folder_of(path);
    char *cfg_path = dir ? path_join(dir, "config.json") : NULL;
    char *name = dir ? model_name_of(dir) : NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = -1;
    hf_config c;
    memset(&c, 0, sizeof c);
    if (!dir || !cfg_path || !name) { slmc_fail(err, path, "out of memory"); goto done; }

    if (read_small_file(cfg_path, HF_CONFIG_MAX, &text, &len, err)) goto done;
    if (hf_config_parse(text, len, cfg_path, &c, err)) goto done;

    m->path = strdup(path);
    m->format = MODEL_HF;
    st_model *st = calloc(1, sizeof *st);
    if (!m->path || !st) { free(st); slmc_fail(err, path, "out of memory"); goto done; }
    if (st_open(st, path, err)) { free(st); goto done; }
    m->src = st;
    m->free_src = free_st;

    if (build_kv(&m->kv, &c, c.name[0] ? c.name : name)) { slmc_fail(err, path, "out of memory"); goto done; }
    if (map_tensors(m, st, &c, path, err)) goto done;
    if (meta_set_u32(&m->kv, "general.file_type", file_type_of(dominant_matrix_type(m->tensors, m->n_tensors)))) {
        slmc_fail(err, path, "out of memory");
        goto done;
    }
    if (hf_tokenizer_load(&m->kv, dir, c.n_vocab, err)) goto done;
    if (meta_set_u32(&m->kv, "general.quantization_version", 2)) { slmc_fail(err, path, "out of memory"); goto done; }
    if (model_config_from_meta(m, err)) goto done;
    rc = 0;
done:
    if (rc) model_close(m);
    hf_config_free(&c);
    free(text);
    free(name);
    free(cfg_path);
    free(dir);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * model view -> hf_config
 * ---------------------------------------------------------------------------------------- */

/* The values of a 1-D tensor as F32 (malloc'd). */
static float *vector_f32(const model *m, int64_t ti, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    float *v = malloc((size_t)(t->ne[0] ? t->ne[0] : 1) * sizeof *v);
    if (!v) { slmc_fail(err, m->path, "out of memory"); return NULL; }
    if (model_read_rows_f32(m, (uint64_t)ti, 0, 1, v, err)) { free(v); return NULL; }
    return v;
}

/* Llama 3's rope_scaling from the rope_freqs tensor: llama.cpp's GGUF keeps only the factors,
 * so the parameters are found by recomputing the factors for the usual values (factor: the
 * lowest frequency's) until one set gives the same floats bit for bit. */
static int recover_llama3(const model *m, int64_t ti, hf_config *c, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t n = t->ne[0];
    if (t->n_dims != 1 || n != c->head_dim / 2)
        return slmc_fail(err, m->path, "tensor rope_freqs.weight has %lld values, expected head_dim / 2 = %lld",
                         (long long)n, (long long)(c->head_dim / 2));
    float *have = vector_f32(m, ti, err);
    if (!have) return -1;
    float *try = malloc((size_t)n * sizeof *try);
    if (!try) { free(have); return slmc_fail(err, m->path, "out of memory"); }
    static const double lows[] = {1, 2, 0.5, 4, 8}, highs[] = {4, 8, 2, 16, 32, 1};
    const double ctxs[] = {8192, 4096, 16384, 2048, 32768, 65536, 131072, 1024, (double)c->n_ctx};
    bool found = false;
    for (size_t ic = 0; !found && ic < sizeof ctxs / sizeof ctxs[0]; ic++)
        for (size_t il = 0; !found && il < sizeof lows / sizeof lows[0]; il++)
            for (size_t ih = 0; !found && ih < sizeof highs / sizeof highs[0]; ih++) {
                if (lows[il] == highs[ih]) continue;
                hf_llama3_rope_factors(try, c->head_dim, (float)c->rope_theta, (double)have[n - 1], lows[il], highs[ih],
                                       ctxs[ic]);
                if (memcmp(try, have, (size_t)n * sizeof *try) == 0) {
                    found = true;
                    c->rope_factor = (double)have[n - 1];
                    c->rope_low = lows[il];
                    c->rope_high = highs[ih];
                    c->rope_orig_ctx = (int64_t)ctxs[ic];
                }
            }
    free(try);
    free(have);
    if (!found)
        return slmc_fail(err, m->path, "tensor rope_freqs.weight: no Llama 3 rope_scaling (factor, low_freq_factor, "
                         "high_freq_factor, original_max_position_embeddings) slmc tries gives these factors");
    snprintf(c->rope_type, sizeof c->rope_type, "llama3");
    return 0;
}

static bool any_tensor_with_suffix(const model *m, const char *suffix) {
    size_t sl = strlen(suffix);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        size_t nl = strlen(m->tensors[i].name);
        if (nl >= sl && strcmp(m->tensors[i].name + nl - sl, suffix) == 0) return true;
    }
    return false;
}

int hf_config_from_model(const model *m, hf_config *c, slmc_err *err) {
    memset(c, 0, sizeof *c);
    const model_config *mc = &m->cfg;
    const arch_desc *a = arch_by_name(mc->arch);
    const hf_family *f = hf_family_of(a);
    if (!a || !f)
        return slmc_fail(err, m->path, "architecture %s has no Hugging Face form (%s)", mc->arch, arch_names());
    if (mc->n_head <= 0 || mc->n_head_kv <= 0 || mc->n_embd <= 0 || mc->n_layer <= 0)
        return slmc_fail(err, m->path, "hidden size, layer and head counts must be positive");
    c->arch = a;
    c->n_embd = mc->n_embd;
    c->n_ff = mc->n_ff;
    c->n_layer = mc->n_layer;
    c->n_head = mc->n_head;
    c->n_head_kv = mc->n_head_kv;
    c->head_dim = mc->head_dim;
    c->n_rot = mc->n_rot;
    c->n_vocab = mc->n_vocab;
    c->n_ctx = mc->n_ctx_train;
    c->rope_theta = mc->rope_freq_base;
    c->norm_eps = mc->norm_eps;
    c->tied = mc->tied_output;
    c->attn_factor = 1.0;
    c->rope_local_base = mc->rope_freq_base_swa > 0 ? mc->rope_freq_base_swa : 10000.0;
    c->n_swa = mc->n_swa;
    c->attn_softcap = mc->attn_softcap;
    c->final_softcap = mc->final_softcap;
    const char *gname = meta_get_str(&m->kv, "general.name");
    if (gname && strlen(gname) < sizeof c->name) snprintf(c->name, sizeof c->name, "%s", gname);

    /* rotary dimensions: all of the head, or a partial factor the family's converter maps back
     * to the same count (checked through the 9 digits config.json is written with) */
    if (f->partial == PARTIAL_NONE) {
        if (c->n_rot != c->head_dim)
            return slmc_fail(err, m->path, "rope dimension %lld differs from head dimension %lld: partial rotary "
                             "has no Hugging Face %s form", (long long)c->n_rot, (long long)c->head_dim, a->name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "%.9g", (double)c->n_rot / (double)c->head_dim);
        if (c->head_dim * c->n_head != c->n_embd || partial_rot(f->partial, strtod(buf, NULL), c->n_embd, c->n_head) != c->n_rot)
            return slmc_fail(err, m->path, "rope dimension %lld of head dimension %lld has no partial_rotary_factor "
                             "that gives it back", (long long)c->n_rot, (long long)c->head_dim);
    }
    /* q/k/v biases: as the tensors say */
    c->qkv_bias = any_tensor_with_suffix(m, ".attn_q.bias");
    if (a->qkv_bias && !a->qkv_bias_config && !c->qkv_bias && strcmp(a->name, "phi2") != 0)
        return slmc_fail(err, m->path, "%s without q/k/v biases has no Hugging Face form", a->name);
    if (is_gemma(a) && !c->tied)
        return slmc_fail(err, m->path, "%s with an output.weight of its own has no Hugging Face form (it ties the "
                         "output to the embedding)", a->name);
    if (strcmp(a->name, "phi2") == 0 && c->tied)
        return slmc_fail(err, m->path, "phi2 without output.weight has no Hugging Face form");

    /* rope scaling: the keys, or the generated tensors */
    int64_t freqs = model_find(m, "rope_freqs.weight"), flong = model_find(m, "rope_factors_long.weight"),
            fshort = model_find(m, "rope_factors_short.weight");
    if (strcmp(mc->rope_scaling, "linear") == 0 || strcmp(mc->rope_scaling, "yarn") == 0) {
        snprintf(c->rope_type, sizeof c->rope_type, "%s", mc->rope_scaling);
        c->rope_factor = mc->rope_scaling_factor;
        c->rope_orig_ctx = mc->rope_scaling_orig_ctx;
        if (!strstr(f->rope_types, mc->rope_scaling))
            return slmc_fail(err, m->path, "rope scaling \"%s\" has no Hugging Face %s form (%s)", mc->rope_scaling,
                             a->name, f->rope_types[0] ? f->rope_types : "none");
    } else if (mc->rope_scaling[0] && strcmp(mc->rope_scaling, "none") != 0) {
        return slmc_fail(err, m->path, "rope scaling \"%s\" has no Hugging Face form here (%s)", mc->rope_scaling,
                         f->rope_types[0] ? f->rope_types : "none");
    }
    if (freqs >= 0) {
        if (strcmp(a->name, "llama") != 0 || c->rope_type[0])
            return slmc_fail(err, m->path, "tensor rope_freqs.weight: Llama 3 rope factors are read for llama only, "
                             "without other rope scaling");
        if (recover_llama3(m, freqs, c, err)) return -1;
    }
    if (strcmp(a->name, "phi3") == 0) {
        char key[64];
        int64_t orig;
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", a->name);
        c->rope_orig_ctx = meta_get_i64(&m->kv, key, &orig) && orig > 0 ? orig : c->n_ctx;
    }
    if ((flong >= 0) != (fshort >= 0))
        return slmc_fail(err, m->path, "rope_factors_long.weight and rope_factors_short.weight come together");
    if (flong >= 0) {
        if (strcmp(a->name, "phi3") != 0 || c->rope_type[0])
            return slmc_fail(err, m->path, "tensor rope_factors_long.weight: longrope factors are read for phi3 only");
        if (m->tensors[flong].ne[0] != c->n_rot / 2 || m->tensors[fshort].ne[0] != c->n_rot / 2)
            return slmc_fail(err, m->path, "longrope factors must have rope dimensions / 2 = %lld values",
                             (long long)(c->n_rot / 2));
        c->long_factor = vector_f32(m, flong, err);
        c->short_factor = c->long_factor ? vector_f32(m, fshort, err) : NULL;
        if (!c->short_factor) { hf_config_free(c); return -1; }
        snprintf(c->rope_type, sizeof c->rope_type, "longrope");
        double scale = (double)c->n_ctx / (double)c->rope_orig_ctx;
        c->attn_factor = scale > 1.0 ? sqrt(1.0 + log(scale) / log((double)c->rope_orig_ctx)) : 1.0;
    }
    if ((strcmp(a->name, "gemma2") == 0 || strcmp(a->name, "gemma3") == 0) && c->n_swa <= 0)
        return slmc_fail(err, m->path, "%s needs a sliding window (attention.sliding_window)", a->name);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * config.json / generation_config.json writing
 * ---------------------------------------------------------------------------------------- */

/* The double whose shortest decimal reproduces f as f32 ("1e-05" for the f32 nearest 1e-5),
 * so config.json shows what a person wrote rather than the f32's exact binary value. */
static double f32_shortest(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

/* Add key = new value to obj; false when out of memory (json_object_set_new frees on error). */
static bool jset(json_t *obj, const char *key, json_t *v) {
    return v && json_object_set_new(obj, key, v) == 0;
}

static const char *torch_dtype_name(int type) {
    return type == GGML_TYPE_F32 ? "float32" : type == GGML_TYPE_F16 ? "float16"
         : type == GGML_TYPE_BF16 ? "bfloat16" : NULL;
}

/* Dump obj with 2-space indent to path, atomically. Reals use 9 significant digits: every
 * value written is an f32, which 9 digits always reproduce (f32_shortest picks fewer). */
static int write_json_file(const char *path, json_t *obj, slmc_err *err) {
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    if (!s) return slmc_fail(err, path, "out of memory");
    atomic_file af;
    int rc = -1;
    if (af_open(&af, path, err) == 0) {
        if (af_write(&af, s, strlen(s), err) == 0 && af_write(&af, "\n", 1, err) == 0 && af_commit(&af, err) == 0)
            rc = 0;
        else
            af_abort(&af);
    }
    free(s);
    return rc;
}

/* A JSON list of f32 values. */
static json_t *json_f32_list(const float *v, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(f32_shortest(v[i])))) { json_decref(a); return NULL; }
    return a;
}

/* rope_scaling's object for c (NULL when out of memory; json null when none). */
static json_t *rope_scaling_json(const hf_config *c) {
    if (!c->rope_type[0]) return json_null();
    json_t *rs = json_object();
    bool ok = rs != NULL;
    if (strcmp(c->rope_type, "llama3") == 0) {
        ok = ok && jset(rs, "factor", json_real(f32_shortest((float)c->rope_factor))) &&
             jset(rs, "high_freq_factor", json_real(f32_shortest((float)c->rope_high))) &&
             jset(rs, "low_freq_factor", json_real(f32_shortest((float)c->rope_low))) &&
             jset(rs, "original_max_position_embeddings", json_integer(c->rope_orig_ctx)) &&
             jset(rs, "rope_type", json_string("llama3"));
    } else if (strcmp(c->rope_type, "longrope") == 0) {
        ok = ok && jset(rs, "rope_type", json_string("longrope")) && jset(rs, "type", json_string("longrope")) &&
             jset(rs, "long_factor", json_f32_list(c->long_factor, c->n_rot / 2)) &&
             jset(rs, "short_factor", json_f32_list(c->short_factor, c->n_rot / 2));
    } else {
        ok = ok && jset(rs, "rope_type", json_string(c->rope_type)) && jset(rs, "type", json_string(c->rope_type)) &&
             jset(rs, "factor", json_real(f32_shortest((float)c->rope_factor)));
        if (ok && strcmp(c->rope_type, "yarn") == 0)
            ok = jset(rs, "original_max_position_embeddings", json_integer(c->rope_orig_ctx));
    }
    if (!ok) { json_decref(rs); return NULL; }
    return rs;
}

/* The family's own fields, after rope_scaling. */
static bool family_json(json_t *o, const hf_config *c) {
    const char *n = c->arch->name;
    bool ok = true;
    if (strcmp(n, "llama") == 0 && strcmp(c->rope_type, "llama3") == 0 && c->rope_orig_ctx != 8192)
        ok = jset(o, "original_max_position_embeddings", json_integer(c->rope_orig_ctx)); /* what llama.cpp reads */
    if (strcmp(n, "phi2") == 0)
        ok = jset(o, "qk_layernorm", json_false());
    if (strcmp(n, "phi3") == 0)
        ok = jset(o, "original_max_position_embeddings", json_integer(c->rope_orig_ctx)) &&
             jset(o, "sliding_window", c->n_swa > 0 ? json_integer(c->n_swa) : json_null());
    if (strcmp(n, "stablelm") == 0)
        ok = jset(o, "use_qkv_bias", json_boolean(c->qkv_bias)) && jset(o, "use_parallel_residual", json_false()) &&
             jset(o, "qk_layernorm", json_false());
    if (strcmp(n, "gemma2") == 0 || strcmp(n, "gemma3") == 0) {
        int64_t qs = arch_query_scalar(c->arch, c->n_layer, c->n_embd, c->n_head, c->head_dim);
        ok = jset(o, "query_pre_attn_scalar", json_integer(qs)) && jset(o, "sliding_window", json_integer(c->n_swa));
        if (ok && strcmp(n, "gemma2") == 0)
            ok = jset(o, "attn_logit_softcapping", json_real(f32_shortest((float)c->attn_softcap))) &&
                 jset(o, "final_logit_softcapping", json_real(f32_shortest((float)c->final_softcap)));
        if (ok && strcmp(n, "gemma3") == 0)
            ok = jset(o, "sliding_window_pattern", json_integer(6)) &&
                 jset(o, "rope_local_base_freq", json_real(f32_shortest((float)c->rope_local_base))) &&
                 jset(o, "attn_logit_softcapping", json_null()) && jset(o, "final_logit_softcapping", json_null());
    }
    return ok;
}

int hf_write_config_json(const char *path, const hf_config *c, const meta *kv, int torch_dtype_type, slmc_err *err) {
    const arch_desc *a = c->arch;
    const hf_family *f = hf_family_of(a);
    if (!a || !f) return slmc_fail(err, path, "no Hugging Face config for this architecture (%s)", arch_names());
    const char *dtype = torch_dtype_name(torch_dtype_type);
    if (!dtype) return slmc_fail(err, path, "torch_dtype for type %s: F32, F16 or BF16 only", type_name(torch_dtype_type));
    if (c->n_head <= 0 || c->n_head_kv <= 0) return slmc_fail(err, path, "head counts must be positive");

    json_t *o = json_object();
    if (!o) return slmc_fail(err, path, "out of memory");
    json_t *archs = json_array();
    bool ok = archs && json_array_append_new(archs, json_string(a->hf_classes[0])) == 0;
    if (!ok) json_decref(archs); /* NULL-safe */
    ok = ok && jset(o, "architectures", archs);
    const char *gname = kv ? meta_get_str(kv, "general.name") : NULL;
    if (!gname && c->name[0]) gname = c->name;
    if (ok && gname && *gname) ok = jset(o, "_name_or_path", json_string(gname));
    ok = ok && jset(o, "model_type", json_string(a->hf_model_type)) && jset(o, "hidden_act", json_string(f->acts[0]));
    if (ok && f->gemma_act) ok = jset(o, "hidden_activation", json_string(f->acts[0]));
    ok = ok && jset(o, "hidden_size", json_integer(c->n_embd)) && jset(o, "intermediate_size", json_integer(c->n_ff)) &&
         jset(o, "num_hidden_layers", json_integer(c->n_layer)) &&
         jset(o, "num_attention_heads", json_integer(c->n_head)) &&
         jset(o, "num_key_value_heads", json_integer(c->n_head_kv));
    /* transformers' Llama, Qwen3 and Gemma configs always serialise head_dim; the others only
     * need it when it is not hidden_size / heads (Phi and StableLM have none) */
    if (ok && f->partial == PARTIAL_NONE && (a->hf_head_dim_always || c->head_dim * c->n_head != c->n_embd))
        ok = jset(o, "head_dim", json_integer(c->head_dim));
    ok = ok && jset(o, "vocab_size", json_integer(c->n_vocab)) &&
         jset(o, "max_position_embeddings", json_integer(c->n_ctx)) &&
         jset(o, f->eps_keys[0], json_real(f32_shortest((float)c->norm_eps))) &&
         jset(o, "rope_theta", json_real(f32_shortest((float)c->rope_theta)));
    if (ok && f->partial != PARTIAL_NONE) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.9g", (double)c->n_rot / (double)c->head_dim);
        ok = jset(o, "partial_rotary_factor", json_real(strtod(buf, NULL)));
    }
    ok = ok && jset(o, "rope_scaling", rope_scaling_json(c)) && family_json(o, c);
    if (ok && (strcmp(a->name, "llama") == 0 || strcmp(a->name, "qwen3") == 0 || is_gemma(a)))
        ok = jset(o, "attention_bias", json_boolean(c->qkv_bias));
    else if (ok && strcmp(a->name, "qwen2") == 0)
        ok = jset(o, "attention_bias", json_boolean(a->qkv_bias));
    /* the families' own keys: transformers' LlamaConfig has mlp_bias, Qwen2Config sliding windows */
    if (ok && a->hf_mlp_bias) ok = jset(o, "mlp_bias", json_false());
    if (ok && a->hf_sliding_window) ok = jset(o, "use_sliding_window", json_false());
    ok = ok && jset(o, "tie_word_embeddings", json_boolean(c->tied)) && jset(o, "torch_dtype", json_string(dtype));
    uint64_t id;
    if (ok && kv && meta_get_u64(kv, "tokenizer.ggml.bos_token_id", &id) && id <= INT32_MAX)
        ok = jset(o, "bos_token_id", json_integer((json_int_t)id));
    if (ok && kv && meta_get_u64(kv, "tokenizer.ggml.eos_token_id", &id) && id <= INT32_MAX)
        ok = jset(o, "eos_token_id", json_integer((json_int_t)id));
    ok = ok && jset(o, "use_cache", json_true()) &&
         jset(o, "transformers_version", json_string(HF_TRANSFORMERS_VERSION));
    if (!ok) { json_decref(o); return slmc_fail(err, path, "out of memory"); }
    int rc = write_json_file(path, o, err);
    json_decref(o);
    return rc;
}

/* generation_config.json: the special token ids generate() starts and stops with. */
static int write_generation_config(const char *path, const model *m, slmc_err *err) {
    json_t *o = json_object();
    bool ok = o && jset(o, "_from_model_config", json_true());
    uint64_t id;
    if (ok && meta_get_u64(&m->kv, "tokenizer.ggml.bos_token_id", &id) && id <= INT32_MAX)
        ok = jset(o, "bos_token_id", json_integer((json_int_t)id));
    if (ok && meta_get_u64(&m->kv, "tokenizer.ggml.eos_token_id", &id) && id <= INT32_MAX)
        ok = jset(o, "eos_token_id", json_integer((json_int_t)id));
    ok = ok && jset(o, "transformers_version", json_string(HF_TRANSFORMERS_VERSION));
    if (!ok) { json_decref(o); return slmc_fail(err, path, "out of memory"); }
    int rc = write_json_file(path, o, err);
    json_decref(o);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * hf_write: tensors
 * ---------------------------------------------------------------------------------------- */

/* How tensor t goes back to its HF form. */
typedef struct hf_out {
    const arch_tensor *rule; /* its table entry */
    int64_t heads;           /* llama.cpp's q/k permutation to undo (0 none) */
    bool minus_one;          /* Gemma's norms: the GGUF holds 1 + w */
} hf_out;

static hf_out out_form(const model *m, const model_tensor *t) {
    hf_out o = {0};
    const arch_desc *a = arch_by_name(m->cfg.arch);
    long layer;
    o.rule = a ? match_gguf(a, t->name, &layer) : NULL;
    if (!o.rule) return o;
    arch_qk qk = entry_qk(a, o.rule);
    o.heads = qk == ARCH_QK_Q ? m->cfg.n_head : qk == ARCH_QK_K ? m->cfg.n_head_kv : 0;
    o.minus_one = o.rule->plus_one;
    return o;
}

/* The HF value of GGUF value v: w = v - 1 for Gemma's norms. */
static float hf_value(const hf_out *o, float v) { return o->minus_one ? v - 1.0f : v; }

/* Stream one tensor into the writer in chunks of whole rows (whole heads for q/k): read the
 * rows in llama.cpp's order as stored, put them back in HF order, undo 1 + w, convert to
 * out_type. A quantized row is a whole number of blocks, so the rows are reordered before
 * decoding exactly as float rows are, and then dequantized (model_rows_to_f32, which calls
 * the codec's quant_dequantize). A q/k bias (one row) has its elements put back in HF order. */
static int write_tensor(const model *m, uint64_t ti, int out_type, st_writer *w, uint64_t *done,
                        uint64_t total, const slmc_progress *progress, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    hf_out form = out_form(m, t);
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    uint64_t in_rb = model_tensor_row_bytes(t), out_rb = type_nbytes(out_type, ne0);
    bool vector = rows == 1 && t->n_dims == 1;
    int64_t heads = vector ? 0 : form.heads, vheads = vector ? form.heads : 0;
    int64_t head_rows = 1;
    if (heads > 0) {
        if (rows % heads != 0 || (rows / heads) % 2 != 0)
            return slmc_fail(err, m->path, "tensor %s: %lld rows do not split into %lld heads of even size",
                             t->name, (long long)rows, (long long)heads);
        head_rows = rows / heads;
    }
    if (vheads > 0 && (ne0 % vheads != 0 || (ne0 / vheads) % 2 != 0))
        return slmc_fail(err, m->path, "tensor %s: %lld values do not split into %lld heads of even size", t->name,
                         (long long)ne0, (long long)vheads);
    /* Rows per chunk: bounded by the F32 buffer size, a whole number of heads, at least one. */
    uint64_t f32_rb = (uint64_t)ne0 * 4;
    int64_t chunk = (int64_t)(HF_CHUNK_BYTES / (f32_rb ? f32_rb : 1));
    chunk -= chunk % head_rows;
    if (chunk < head_rows) chunk = head_rows;
    if (chunk > rows) chunk = rows;
    bool convert = t->type != out_type || form.minus_one;

    uint8_t *in = malloc((size_t)chunk * in_rb);
    uint8_t *perm = heads > 0 || vheads > 0 ? malloc((size_t)chunk * (in_rb > out_rb ? in_rb : out_rb)) : NULL;
    float *f32 = convert ? malloc((size_t)chunk * f32_rb) : NULL;
    uint8_t *out = convert ? malloc((size_t)chunk * out_rb) : NULL;
    int rc = -1;
    if (!in || ((heads > 0 || vheads > 0) && !perm) || (convert && (!f32 || !out))) {
        slmc_fail(err, m->path, "out of memory for tensor %s", t->name);
        goto done;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        if (model_read_rows(m, ti, r0, n, in, err)) goto done;
        const uint8_t *rows_hf = in;
        if (heads > 0) {
            /* HF row i is GGUF row qk_row_gguf_of_hf(i); both lie in the same head, so in
             * this chunk. */
            for (int64_t i = 0; i < n; i++) {
                int64_t g = qk_row_gguf_of_hf(r0 + i, rows, heads) - r0;
                if (g < 0 || g >= n) {
                    slmc_fail(err, m->path, "tensor %s: permutation leaves its head at row %lld", t->name,
                              (long long)(r0 + i));
                    goto done;
                }
                memcpy(perm + (size_t)i * in_rb, in + (size_t)g * in_rb, in_rb);
            }
            rows_hf = perm;
        }
        const uint8_t *data = rows_hf;
        if (convert) {
            if (model_rows_to_f32(m, t, rows_hf, f32, n, err)) goto done;
            if (form.minus_one)
                for (int64_t k = 0; k < n * ne0; k++) f32[k] = hf_value(&form, f32[k]);
            row_from_f32(out_type, f32, out, n * ne0);
            data = out;
        }
        if (vheads > 0) {
            /* a q/k bias vector: HF element i is GGUF element qk_row_gguf_of_hf(i) */
            size_t es = type_nbytes(out_type, 1);
            for (int64_t i = 0; i < ne0; i++)
                memcpy(perm + (size_t)i * es, data + (size_t)qk_row_gguf_of_hf(i, ne0, vheads) * es, es);
            data = perm;
        }
        if (st_writer_write(w, data, (size_t)n * out_rb, err)) goto done;
        *done += (uint64_t)n * out_rb;
        if (progress && progress->fn) progress->fn(progress->ud, *done, total, t->name);
    }
    rc = 0;
done:
    free(in);
    free(perm);
    free(f32);
    free(out);
    return rc;
}

/* v as stored in a 16-bit float type and read back. */
static float round_to(int type, float v) {
    return type == GGML_TYPE_F16 ? fp16_to_f32(f32_to_fp16(v)) : bf16_to_f32(f32_to_bf16(v));
}

/* The dtype a tensor is stored with. An explicit outtype applies to all. Otherwise the model's
 * dominant type, except for F32 vectors (norms, biases) whose values that type cannot hold
 * exactly: those stay F32, so GGUF -> HF -> GGUF loses nothing (a norm trained in F32 beside
 * F16 matrices), while norms that came from a BF16 checkpoint go back to BF16 byte for byte.
 * For Gemma's norms the value must survive the way back too: w = v - 1 held exactly, and
 * 1 + w computed in that type (as the reader does) giving v again. */
static int tensor_out_type(const model *m, uint64_t ti, int dominant, int outtype) {
    const model_tensor *t = &m->tensors[ti];
    if (outtype != -1 || t->type != GGML_TYPE_F32 || dominant == GGML_TYPE_F32) return dominant;
    if (model_tensor_rows(t) != 1) return dominant;
    hf_out form = out_form(m, t);
    const float *v = (const float *)t->data; /* a vector: one row, read in place */
    for (int64_t i = 0; i < t->ne[0]; i++) {
        float w = hf_value(&form, v[i]);
        float back = round_to(dominant, w);
        if (memcmp(&back, &w, sizeof back) != 0) return GGML_TYPE_F32;
        if (form.minus_one) {
            float again = round_to(dominant, back + 1.0f);
            if (memcmp(&again, &v[i], sizeof again) != 0) return GGML_TYPE_F32;
        }
    }
    return dominant;
}

int hf_write(const model *m, const char *dir, int outtype, uint64_t shard_size,
             const slmc_progress *progress, slmc_err *err) {
    const arch_desc *a = arch_by_name(m->cfg.arch);
    if (!a || !hf_family_of(a))
        return slmc_fail(err, m->path, "architecture %s cannot be written as a Hugging Face checkpoint "
                         "(%s)", m->cfg.arch, arch_names());
    if (outtype != -1 && !type_is_float(outtype))
        return slmc_fail(err, dir, "output type %s: Hugging Face output is F32, F16 or BF16", type_name(outtype));
    hf_config hc;
    if (hf_config_from_model(m, &hc, err)) return -1;
    /* Hugging Face checkpoints hold float tensors only: quantized ones are written as their
     * dequantized values, so each must be decodable (checked before anything is written). */
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (model_check_f32(m, &m->tensors[i], err)) { hf_config_free(&hc); return -1; }
    /* Default dtype: the dominant float type of the matrices; F32 when any tensor is quantized,
     * since a dequantized value is exact in F32 but F16/BF16 would round it again (and F32 is
     * what one fine-tunes from). */
    int out_type = outtype != -1 ? outtype
                 : model_has_quantized(m) ? GGML_TYPE_F32 : dominant_matrix_type(m->tensors, m->n_tensors);
    if (shard_size == 0) shard_size = HF_DEFAULT_SHARD_SIZE;

    /* The safetensors tensor list: HF names, shapes outermost first; the tensors llama.cpp's
     * converter generates go back into config.json instead. */
    st_out_tensor *outs = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *outs);
    char **names = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *names);
    uint64_t *which = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *which);
    if (!outs || !names || !which) {
        free(outs); free(names); free(which); hf_config_free(&hc);
        return slmc_fail(err, dir, "out of memory");
    }
    int rc = -1;
    uint64_t total = 0, n_out = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        long layer;
        const arch_tensor *rule = match_gguf(a, t->name, &layer);
        if (rule && rule->when == WHEN_ROPE_FACTORS) continue;
        names[n_out] = rule ? gguf_to_hf_name(a, t->name) : NULL;
        if (!names[n_out]) { slmc_fail(err, m->path, "tensor %s has no Hugging Face name", t->name); goto free_names; }
        which[n_out] = i;
        st_out_tensor *o = &outs[n_out++];
        o->name = names[n_out - 1];
        o->type = tensor_out_type(m, i, out_type, outtype);
        o->n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) o->shape[d] = t->ne[t->n_dims - 1 - d];
        total += type_nbytes(o->type, model_tensor_rows(t) * t->ne[0]);
    }

    atomic_dir ad;
    if (ad_open(&ad, dir, err)) goto free_names;
    st_writer w;
    /* (st_writer adds transformers' {"format": "pt"} metadata itself.) */
    if (st_writer_open(&w, ad.tmp_path, outs, n_out, shard_size, NULL, NULL, 0, err)) goto abort_dir;
    uint64_t done = 0;
    for (uint64_t k = 0; k < n_out; k++) {
        if (write_tensor(m, which[k], outs[k].type, &w, &done, total, progress, err)) { st_writer_abort(&w); goto abort_dir; }
        model_release_source(m, &m->tensors[which[k]]); /* keep peak RSS independent of model size */
    }
    if (st_writer_finish(&w, err)) { st_writer_abort(&w); goto abort_dir; }

    char *cfg = ad_file(&ad, "config.json"), *gen = ad_file(&ad, "generation_config.json");
    int jrc = !cfg || !gen ? slmc_fail(err, dir, "out of memory")
            : hf_write_config_json(cfg, &hc, &m->kv, out_type, err) || write_generation_config(gen, m, err) ? -1 : 0;
    free(cfg);
    free(gen);
    if (jrc) goto abort_dir;
    if (meta_find(&m->kv, "tokenizer.ggml.tokens") && hf_tokenizer_write(&m->kv, ad.tmp_path, err)) goto abort_dir;
    if (ad_commit(&ad, err)) goto abort_dir;
    rc = 0;
    goto free_names;
abort_dir:
    ad_abort(&ad);
free_names:
    for (uint64_t i = 0; i < n_out; i++) free(names[i]);
    free(names);
    free(outs);
    free(which);
    hf_config_free(&hc);
    return rc;
}
