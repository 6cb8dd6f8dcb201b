/* hf.c - Hugging Face checkpoints <-> the model view (see hf.h and docs/formats-hf.md).
 *
 * Reading:  config.json  -> GGUF keys (general.*, <arch>.*), in the order llama.cpp's
 *                            convert_hf_to_gguf.py writes them
 *           safetensors  -> tensors renamed to GGUF names, shapes reversed to ne[] order,
 *                            llama's q_proj/k_proj marked for llama.cpp's row permutation
 *           tokenizer    -> tokenizer.ggml.* (hf_tokenizer_load)
 * Writing:  the same three in reverse, streaming tensor data in bounded row chunks.
 */
#include "hf.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "arch.h"
#include "fileio.h"
#include "hf_tokenizer.h"
#include "meta.h"
#include "safetensors.h"
#include "codec/types.h"

#define HF_CONFIG_MAX (16u << 20)       /* config.json larger than this is not a config */
#define HF_CHUNK_BYTES (16u << 20)      /* bound on each conversion buffer in hf_write */
#define HF_MAX_LAYERS 100000            /* sanity bound on num_hidden_layers */
#define HF_TRANSFORMERS_VERSION "4.46.3" /* written into config.json; informational only */

/* ------------------------------------------------------------------------------------------
 * Name mapping
 * ---------------------------------------------------------------------------------------- */

/* The tensor tables are the families' (formats/arch.h); a rule is one of their entries. */
typedef arch_tensor name_rule;
#define GLOBAL_RULES ARCH_GLOBAL_TENSORS
#define LAYER_RULES ARCH_LAYER_TENSORS
#define N_LAYER_RULES ARCH_N_LAYER_TENSORS
enum { G_EMBD = ARCH_EMBD, G_NORM = ARCH_NORM, G_OUT = ARCH_OUT, G_COUNT = ARCH_N_GLOBAL };

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

/* Find the rule for an HF name: returns its index (layer rules) or the G_* index (globals),
 * with *layer = N for layer tensors and -1 for globals; -1 when unknown. */
static int match_hf(const char *name, long *layer) {
    for (int g = 0; g < G_COUNT; g++)
        if (strcmp(name, GLOBAL_RULES[g].hf) == 0) { *layer = -1; return g; }
    const char *rest;
    if (!split_layer(name, "model.layers.", layer, &rest)) return -1;
    for (int r = 0; r < N_LAYER_RULES; r++)
        if (strcmp(rest, LAYER_RULES[r].hf) == 0) return r;
    return -1;
}

/* The same for a GGUF name. */
static int match_gguf(const char *name, long *layer) {
    for (int g = 0; g < G_COUNT; g++)
        if (strcmp(name, GLOBAL_RULES[g].gguf) == 0) { *layer = -1; return g; }
    const char *rest;
    if (!split_layer(name, "blk.", layer, &rest)) return -1;
    for (int r = 0; r < N_LAYER_RULES; r++)
        if (strcmp(rest, LAYER_RULES[r].gguf) == 0) return r;
    return -1;
}

char *hf_to_gguf_name(const char *hf_name) {
    long layer;
    int r = match_hf(hf_name, &layer);
    if (r < 0) return NULL;
    if (layer < 0) return strdup(GLOBAL_RULES[r].gguf);
    return str_printf("blk.%ld.%s", layer, LAYER_RULES[r].gguf);
}

char *gguf_to_hf_name(const char *gguf_name) {
    long layer;
    int r = match_gguf(gguf_name, &layer);
    if (r < 0) return NULL;
    if (layer < 0) return strdup(GLOBAL_RULES[r].hf);
    return str_printf("model.layers.%ld.%s", layer, LAYER_RULES[r].hf);
}

/* ------------------------------------------------------------------------------------------
 * config.json -> hyperparameters
 * ---------------------------------------------------------------------------------------- */

/* What config.json says, validated. */
typedef struct hf_params {
    const arch_desc *arch;  /* the family (formats/arch.h) */
    int64_t n_embd;         /* hidden_size */
    int64_t n_ff;           /* intermediate_size */
    int64_t n_layer;        /* num_hidden_layers */
    int64_t n_head;         /* num_attention_heads */
    int64_t n_head_kv;      /* num_key_value_heads (default num_attention_heads) */
    int64_t head_dim;       /* head_dim (default hidden_size / num_attention_heads) */
    int64_t n_vocab;        /* vocab_size */
    int64_t n_ctx;          /* max_position_embeddings */
    double rope_theta;      /* rope_theta (default 10000) */
    double rms_eps;         /* rms_norm_eps (default 1e-6, transformers' default) */
    bool tied;              /* tie_word_embeddings (default false) */
    char rope_type[16];     /* "" / "linear" / "yarn" */
    double rope_factor;     /* rope_scaling.factor */
    int64_t rope_orig_ctx;  /* rope_scaling.original_max_position_embeddings (yarn) */
    char name[256];         /* _name_or_path (written by transformers and by hf_write), "" if absent */
} hf_params;

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

/* Read a number field (integer or real), default when absent or null. */
static int cfg_num(const json_t *root, const char *key, double def, double *out, const char *cfg_path,
                   slmc_err *err) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (!json_is_number(v)) return slmc_fail(err, cfg_path, "field \"%s\" is not a number", key);
    *out = json_number_value(v);
    return 0;
}

/* A positive integer that also fits the u32 GGUF keys it becomes. */
static int cfg_check_positive(int64_t v, const char *key, const char *cfg_path, slmc_err *err) {
    if (v <= 0 || v > INT32_MAX)
        return slmc_fail(err, cfg_path, "field \"%s\" must be a positive integer (got %lld)", key,
                         (long long)v);
    return 0;
}

static int cfg_arch(const json_t *root, hf_params *p, const char *cfg_path, slmc_err *err) {
    const json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
        return slmc_fail(err, cfg_path, "field \"architectures\" is missing or not a list of names");
    const char *a = json_string_value(json_array_get(archs, 0));
    p->arch = arch_by_hf_class(a);
    if (!p->arch) return slmc_fail(err, cfg_path, "architecture %s is not supported (%s)", a, arch_hf_class_names());
    return 0;
}

/* rope_scaling: null / absent / {"type" or "rope_type": "linear" | "yarn" | "default", ...}. */
static int cfg_rope_scaling(const json_t *root, hf_params *p, const char *cfg_path, slmc_err *err) {
    const json_t *rs = json_object_get(root, "rope_scaling");
    p->rope_type[0] = 0;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return slmc_fail(err, cfg_path, "field \"rope_scaling\" is not an object");
    const json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!json_is_string(t))
        return slmc_fail(err, cfg_path, "field \"rope_scaling\" has no \"rope_type\" or \"type\"");
    const char *type = json_string_value(t);
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "linear") != 0 && strcmp(type, "yarn") != 0)
        return slmc_fail(err, cfg_path, "rope_scaling type \"%s\" is not supported (linear, yarn)", type);
    const json_t *f = json_object_get(rs, "factor");
    if (!json_is_number(f) || !(json_number_value(f) > 0))
        return slmc_fail(err, cfg_path, "field \"rope_scaling.factor\" must be a positive number");
    snprintf(p->rope_type, sizeof p->rope_type, "%s", type);
    p->rope_factor = json_number_value(f);
    if (strcmp(type, "yarn") == 0) {
        const json_t *o = json_object_get(rs, "original_max_position_embeddings");
        if (!json_is_integer(o) || json_integer_value(o) <= 0 || json_integer_value(o) > INT32_MAX)
            return slmc_fail(err, cfg_path,
                             "field \"rope_scaling.original_max_position_embeddings\" must be a "
                             "positive integer for yarn");
        p->rope_orig_ctx = (int64_t)json_integer_value(o);
    }
    return 0;
}

/* Parse and validate config.json's text. */
static int parse_config(const char *text, size_t len, const char *cfg_path, hf_params *p, slmc_err *err) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return slmc_fail(err, cfg_path, "invalid JSON at offset %d: %s", jerr.position, jerr.text);
    int rc = -1;
    if (!json_is_object(root)) { slmc_fail(err, cfg_path, "not a JSON object"); goto done; }
    if (cfg_arch(root, p, cfg_path, err)) goto done;
    /* the model's name travels through HF folders as _name_or_path (general.name in GGUF) */
    const json_t *jname = json_object_get(root, "_name_or_path");
    if (json_is_string(jname) && json_string_length(jname) < sizeof p->name)
        snprintf(p->name, sizeof p->name, "%s", json_string_value(jname));

    if (cfg_int(root, "hidden_size", true, 0, &p->n_embd, cfg_path, err) ||
        cfg_int(root, "intermediate_size", true, 0, &p->n_ff, cfg_path, err) ||
        cfg_int(root, "num_hidden_layers", true, 0, &p->n_layer, cfg_path, err) ||
        cfg_int(root, "num_attention_heads", true, 0, &p->n_head, cfg_path, err) ||
        cfg_int(root, "vocab_size", true, 0, &p->n_vocab, cfg_path, err) ||
        cfg_int(root, "max_position_embeddings", true, 0, &p->n_ctx, cfg_path, err) ||
        cfg_check_positive(p->n_embd, "hidden_size", cfg_path, err) ||
        cfg_check_positive(p->n_ff, "intermediate_size", cfg_path, err) ||
        cfg_check_positive(p->n_layer, "num_hidden_layers", cfg_path, err) ||
        cfg_check_positive(p->n_head, "num_attention_heads", cfg_path, err) ||
        cfg_check_positive(p->n_vocab, "vocab_size", cfg_path, err) ||
        cfg_check_positive(p->n_ctx, "max_position_embeddings", cfg_path, err))
        goto done;
    if (p->n_layer > HF_MAX_LAYERS) {
        slmc_fail(err, cfg_path, "field \"num_hidden_layers\" is %lld, more than %d",
                  (long long)p->n_layer, HF_MAX_LAYERS);
        goto done;
    }
    if (cfg_int(root, "num_key_value_heads", false, p->n_head, &p->n_head_kv, cfg_path, err) ||
        cfg_check_positive(p->n_head_kv, "num_key_value_heads", cfg_path, err))
        goto done;
    if (p->n_head % p->n_head_kv != 0) {
        slmc_fail(err, cfg_path, "field \"num_key_value_heads\" (%lld) does not divide "
                  "\"num_attention_heads\" (%lld)", (long long)p->n_head_kv, (long long)p->n_head);
        goto done;
    }
    /* head_dim: given (Mistral-NeMo, Qwen3-style configs) or hidden_size / heads. */
    const json_t *hd = json_object_get(root, "head_dim");
    if (hd && !json_is_null(hd)) {
        if (cfg_int(root, "head_dim", true, 0, &p->head_dim, cfg_path, err) ||
            cfg_check_positive(p->head_dim, "head_dim", cfg_path, err))
            goto done;
    } else {
        if (p->n_embd % p->n_head != 0) {
            slmc_fail(err, cfg_path, "field \"num_attention_heads\" (%lld) does not divide "
                      "\"hidden_size\" (%lld) and there is no \"head_dim\"",
                      (long long)p->n_head, (long long)p->n_embd);
            goto done;
        }
        p->head_dim = p->n_embd / p->n_head;
    }
    /* RoPE rotates pairs, and llama.cpp's permutation splits each head in two halves. */
    if (p->head_dim % 2 != 0) {
        slmc_fail(err, cfg_path, "head dimension %lld is odd (hidden_size / num_attention_heads "
                  "or head_dim must be even)", (long long)p->head_dim);
        goto done;
    }
    if (p->n_head * p->head_dim > INT32_MAX) {
        slmc_fail(err, cfg_path, "num_attention_heads * head_dim is too large");
        goto done;
    }
    if (cfg_num(root, "rope_theta", 10000.0, &p->rope_theta, cfg_path, err) ||
        cfg_num(root, "rms_norm_eps", 1e-6, &p->rms_eps, cfg_path, err))
        goto done;
    if (!(p->rope_theta > 0)) { slmc_fail(err, cfg_path, "field \"rope_theta\" must be positive"); goto done; }
    if (!(p->rms_eps > 0)) { slmc_fail(err, cfg_path, "field \"rms_norm_eps\" must be positive"); goto done; }

    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie) && !json_is_boolean(tie)) {
        slmc_fail(err, cfg_path, "field \"tie_word_embeddings\" is not true or false");
        goto done;
    }
    p->tied = json_is_true(tie);
    if (cfg_rope_scaling(root, p, cfg_path, err)) goto done;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * hyperparameters -> GGUF keys
 * ---------------------------------------------------------------------------------------- */

/* Set "<arch>.<suffix>" as u32 / f32 / str. */
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

/* The keys set_gguf_parameters() of llama.cpp's converter writes, in its order:
 * TextModel's block/context/embedding/ffn/heads/rope base/eps/file type, then LlamaModel's
 * vocab size and rope dimension, then rope scaling. general.file_type is a placeholder here,
 * set once the tensors are known. */
static int build_kv(meta *kv, const hf_params *p, const char *name) {
    const char *a = p->arch->name;
    if (meta_set_str(kv, "general.architecture", a) || meta_set_str(kv, "general.name", name) ||
        kv_u32(kv, a, "block_count", p->n_layer) || kv_u32(kv, a, "context_length", p->n_ctx) ||
        kv_u32(kv, a, "embedding_length", p->n_embd) || kv_u32(kv, a, "feed_forward_length", p->n_ff) ||
        kv_u32(kv, a, "attention.head_count", p->n_head) ||
        kv_u32(kv, a, "attention.head_count_kv", p->n_head_kv) ||
        kv_f32(kv, a, "rope.freq_base", p->rope_theta) ||
        kv_f32(kv, a, "attention.layer_norm_rms_epsilon", p->rms_eps) ||
        meta_set_u32(kv, "general.file_type", 0))
        return -1;
    if (p->arch->kv_vocab_rope_dims &&
        (kv_u32(kv, a, "vocab_size", p->n_vocab) || kv_u32(kv, a, "rope.dimension_count", p->head_dim)))
        return -1;
    if (p->head_dim != p->n_embd / p->n_head || p->n_embd % p->n_head != 0) {
        if (kv_u32(kv, a, "attention.key_length", p->head_dim) ||
            kv_u32(kv, a, "attention.value_length", p->head_dim))
            return -1;
    }
    if (p->rope_type[0]) {
        if (kv_str(kv, a, "rope.scaling.type", p->rope_type) || kv_f32(kv, a, "rope.scaling.factor", p->rope_factor))
            return -1;
        if (strcmp(p->rope_type, "yarn") == 0 &&
            kv_u32(kv, a, "rope.scaling.original_context_length", p->rope_orig_ctx))
            return -1;
    }
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

static int64_t dim_value(arch_dim d, const hf_params *p) {
    switch (d) {
    case DIM_VOCAB: return p->n_vocab;
    case DIM_EMBD: return p->n_embd;
    case DIM_Q: return p->n_head * p->head_dim;
    case DIM_KV: return p->n_head_kv * p->head_dim;
    case DIM_FF: return p->n_ff;
    default: return 0;
    }
}

/* Check an st tensor's shape against its rule; the message names the tensor and both shapes. */
static int check_shape(const st_tensor *t, const name_rule *r, const hf_params *p, const char *path,
                       slmc_err *err) {
    int64_t want[2] = {dim_value(r->d0, p), dim_value(r->d1, p)};
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

/* Append the model tensor for st tensor `si`, named `gguf_name` (ownership taken). */
static int add_tensor(model *m, const st_model *st, uint64_t si, char *gguf_name, int64_t qk_heads) {
    const st_tensor *s = &st->tensors[si];
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
    return 0;
}

/* Map every st tensor to a slot (global or layer x rule), check names and shapes, then list
 * the slots in the model view's order. */
static int map_tensors(model *m, const st_model *st, const hf_params *p, const char *path, slmc_err *err) {
    const arch_desc *a = p->arch;
    uint64_t n_slots = G_COUNT + (uint64_t)p->n_layer * N_LAYER_RULES;
    int64_t *slot = malloc(n_slots * sizeof *slot); /* st index per slot, -1 when absent */
    if (!slot) return slmc_fail(err, path, "out of memory");
    for (uint64_t i = 0; i < n_slots; i++) slot[i] = -1;
    int rc = -1;

    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const st_tensor *t = &st->tensors[i];
        long layer;
        int r = match_hf(t->name, &layer);
        if (r < 0) {
            size_t nl = strlen(t->name), sl = strlen(".rotary_emb.inv_freq");
            if (nl >= sl && strcmp(t->name + nl - sl, ".rotary_emb.inv_freq") == 0) continue; /* recomputed */
            slmc_fail(err, path, "tensor %s has no GGUF name", t->name);
            goto done;
        }
        const name_rule *rule = layer < 0 ? &GLOBAL_RULES[r] : &LAYER_RULES[r];
        if (layer >= p->n_layer) {
            slmc_fail(err, path, "tensor %s is in layer %ld but num_hidden_layers is %lld", t->name, layer,
                      (long long)p->n_layer);
            goto done;
        }
        if (!arch_has_tensor(a, rule)) {
            slmc_fail(err, path, "tensor %s: q/k/v biases are not supported for %s", t->name, a->name);
            goto done;
        }
        if (check_shape(t, rule, p, path, err)) goto done;
        uint64_t s = layer < 0 ? (uint64_t)r : G_COUNT + (uint64_t)layer * N_LAYER_RULES + (uint64_t)r;
        slot[s] = (int64_t)i;
    }

    /* No lm_head means the classifier is the embedding; with tie_word_embeddings a stored
     * lm_head is a copy and is dropped, as transformers does on load. */
    bool tied = p->tied || slot[G_OUT] < 0;
    if (tied) slot[G_OUT] = -1;

    /* Missing tensors: list the first few names. */
    char missing[512] = "";
    uint64_t n_missing = 0;
    for (uint64_t s = 0; s < n_slots; s++) {
        if (slot[s] >= 0 || s == G_OUT) continue;
        const name_rule *rule = s < G_COUNT ? &GLOBAL_RULES[s] : &LAYER_RULES[(s - G_COUNT) % N_LAYER_RULES];
        if (!arch_has_tensor(a, rule)) continue;
        if (n_missing++ < 4) {
            char name[160];
            if (s < G_COUNT) snprintf(name, sizeof name, "%s", rule->hf);
            else snprintf(name, sizeof name, "model.layers.%llu.%s", (unsigned long long)((s - G_COUNT) / N_LAYER_RULES), rule->hf);
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
    /* Order: token_embd, blocks 0..L-1 in rule order, output_norm, output. */
    uint64_t order_len = 0;
    uint64_t *order = malloc(n_slots * sizeof *order);
    if (!order) { slmc_fail(err, path, "out of memory"); goto done; }
    order[order_len++] = G_EMBD;
    for (uint64_t s = G_COUNT; s < n_slots; s++) order[order_len++] = s;
    order[order_len++] = G_NORM;
    order[order_len++] = G_OUT;
    for (uint64_t k = 0; k < order_len; k++) {
        uint64_t s = order[k];
        if (slot[s] < 0) continue;
        long layer = s < G_COUNT ? -1 : (long)((s - G_COUNT) / N_LAYER_RULES);
        const name_rule *rule = s < G_COUNT ? &GLOBAL_RULES[s] : &LAYER_RULES[(s - G_COUNT) % N_LAYER_RULES];
        char *gname = layer < 0 ? strdup(rule->gguf) : str_printf("blk.%ld.%s", layer, rule->gguf);
        if (!gname) { free(order); slmc_fail(err, path, "out of memory"); goto done; }
        /* llama.cpp permutes llama's q_proj with n_head and k_proj with n_head_kv heads. */
        int64_t qk = !a->permute_qk ? 0 : rule->qk == ARCH_QK_Q ? p->n_head : rule->qk == ARCH_QK_K ? p->n_head_kv : 0;
        add_tensor(m, st, (uint64_t)slot[s], gname, qk);
    }
    free(order);
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

/* Undo a partial hf_open. */
static void hf_open_cleanup(model *m) {
    for (uint64_t i = 0; i < m->n_tensors; i++) free(m->tensors[i].name);
    free(m->tensors);
    meta_free(&m->kv);
    if (m->src && m->free_src) m->free_src(m->src);
    free(m->path);
    memset(m, 0, sizeof *m);
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
    if (!dir || !cfg_path || !name) { slmc_fail(err, path, "out of memory"); goto done; }

    if (read_small_file(cfg_path, HF_CONFIG_MAX, &text, &len, err)) goto done;
    hf_params p;
    memset(&p, 0, sizeof p);
    if (parse_config(text, len, cfg_path, &p, err)) goto done;

    m->path = strdup(path);
    m->format = MODEL_HF;
    st_model *st = calloc(1, sizeof *st);
    if (!m->path || !st) { free(st); slmc_fail(err, path, "out of memory"); goto done; }
    if (st_open(st, path, err)) { free(st); goto done; }
    m->src = st;
    m->free_src = free_st;

    if (build_kv(&m->kv, &p, p.name[0] ? p.name : name)) { slmc_fail(err, path, "out of memory"); goto done; }
    if (map_tensors(m, st, &p, path, err)) goto done;
    if (meta_set_u32(&m->kv, "general.file_type", file_type_of(dominant_matrix_type(m->tensors, m->n_tensors)))) {
        slmc_fail(err, path, "out of memory");
        goto done;
    }
    if (hf_tokenizer_load(&m->kv, dir, p.n_vocab, err)) goto done;
    if (meta_set_u32(&m->kv, "general.quantization_version", 2)) { slmc_fail(err, path, "out of memory"); goto done; }
    if (model_config_from_meta(m, err)) goto done;
    rc = 0;
done:
    if (rc) hf_open_cleanup(m);
    free(text);
    free(name);
    free(cfg_path);
    free(dir);
    return rc;
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

int hf_write_config_json(const char *path, const model *m, int torch_dtype_type, slmc_err *err) {
    const model_config *c = &m->cfg;
    const arch_desc *a = arch_by_name(c->arch);
    if (!a) return slmc_fail(err, path, "architecture %s has no Hugging Face config (%s)", c->arch, arch_names());
    const char *dtype = torch_dtype_name(torch_dtype_type);
    if (!dtype) return slmc_fail(err, path, "torch_dtype for type %s: F32, F16 or BF16 only", type_name(torch_dtype_type));
    if (c->n_head <= 0 || c->n_head_kv <= 0)
        return slmc_fail(err, path, "head counts must be positive");

    json_t *o = json_object();
    if (!o) return slmc_fail(err, path, "out of memory");
    json_t *archs = json_array();
    bool ok = archs && json_array_append_new(archs, json_string(a->hf_classes[0])) == 0;
    if (!ok) json_decref(archs); /* NULL-safe */
    ok = ok && jset(o, "architectures", archs);
    const char *gname = meta_get_str(&m->kv, "general.name");
    if (ok && gname && *gname) ok = jset(o, "_name_or_path", json_string(gname));
    ok = ok && jset(o, "model_type", json_string(a->hf_model_type)) && jset(o, "hidden_act", json_string("silu")) &&
         jset(o, "hidden_size", json_integer(c->n_embd)) && jset(o, "intermediate_size", json_integer(c->n_ff)) &&
         jset(o, "num_hidden_layers", json_integer(c->n_layer)) &&
         jset(o, "num_attention_heads", json_integer(c->n_head)) &&
         jset(o, "num_key_value_heads", json_integer(c->n_head_kv));
    /* transformers' LlamaConfig always serialises head_dim; Qwen2's only needs it when it is
     * not hidden_size / heads. */
    if (ok && (a->hf_head_dim_always || c->head_dim * c->n_head != c->n_embd))
        ok = jset(o, "head_dim", json_integer(c->head_dim));
    ok = ok && jset(o, "vocab_size", json_integer(c->n_vocab)) &&
         jset(o, "max_position_embeddings", json_integer(c->n_ctx_train)) &&
         jset(o, "rms_norm_eps", json_real(f32_shortest(c->rms_eps))) &&
         jset(o, "rope_theta", json_real(f32_shortest(c->rope_freq_base)));
    if (ok && (strcmp(c->rope_scaling, "linear") == 0 || strcmp(c->rope_scaling, "yarn") == 0)) {
        json_t *rs = json_object();
        ok = rs && jset(rs, "rope_type", json_string(c->rope_scaling)) &&
             jset(rs, "type", json_string(c->rope_scaling)) &&
             jset(rs, "factor", json_real(f32_shortest(c->rope_scaling_factor)));
        if (ok && strcmp(c->rope_scaling, "yarn") == 0)
            ok = jset(rs, "original_max_position_embeddings", json_integer(c->rope_scaling_orig_ctx));
        if (ok) ok = jset(o, "rope_scaling", rs);
        else json_decref(rs);
    } else if (ok && c->rope_scaling[0] && strcmp(c->rope_scaling, "none") != 0) {
        json_decref(o);
        return slmc_fail(err, path, "rope scaling \"%s\" has no Hugging Face form here (linear, yarn)", c->rope_scaling);
    } else if (ok) {
        ok = jset(o, "rope_scaling", json_null());
    }
    ok = ok && jset(o, "attention_bias", json_boolean(a->qkv_bias));
    /* the families' own keys: transformers' LlamaConfig has mlp_bias, Qwen2Config sliding windows */
    if (ok && a->hf_mlp_bias) ok = jset(o, "mlp_bias", json_false());
    if (ok && a->hf_sliding_window) ok = jset(o, "use_sliding_window", json_false());
    ok = ok && jset(o, "tie_word_embeddings", json_boolean(c->tied_output)) &&
         jset(o, "torch_dtype", json_string(dtype));
    uint64_t id;
    if (ok && meta_get_u64(&m->kv, "tokenizer.ggml.bos_token_id", &id) && id <= INT32_MAX)
        ok = jset(o, "bos_token_id", json_integer((json_int_t)id));
    if (ok && meta_get_u64(&m->kv, "tokenizer.ggml.eos_token_id", &id) && id <= INT32_MAX)
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

/* Heads of llama.cpp's permutation to undo for tensor t (0 when none). */
static int64_t unpermute_heads(const model *m, const model_tensor *t) {
    const arch_desc *a = arch_by_name(m->cfg.arch);
    if (!a || !a->permute_qk) return 0;
    long layer;
    int r = match_gguf(t->name, &layer);
    if (r < 0 || layer < 0) return 0;
    return LAYER_RULES[r].qk == ARCH_QK_Q ? m->cfg.n_head : LAYER_RULES[r].qk == ARCH_QK_K ? m->cfg.n_head_kv : 0;
}

/* Stream one tensor into the writer in chunks of whole rows (whole heads for q/k): read the
 * rows in llama.cpp's order as stored, put them back in HF order, convert to out_type. A
 * quantized row is a whole number of blocks, so the rows are reordered before decoding exactly
 * as float rows are, and then dequantized (model_rows_to_f32, through m->dequantize). */
static int write_tensor(const model *m, uint64_t ti, int out_type, st_writer *w, uint64_t *done,
                        uint64_t total, const slmc_progress *progress, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    uint64_t in_rb = model_tensor_row_bytes(t), out_rb = type_nbytes(out_type, ne0);
    int64_t heads = unpermute_heads(m, t);
    int64_t head_rows = 1;
    if (heads > 0) {
        if (rows % heads != 0 || (rows / heads) % 2 != 0)
            return slmc_fail(err, m->path, "tensor %s: %lld rows do not split into %lld heads of even size",
                             t->name, (long long)rows, (long long)heads);
        head_rows = rows / heads;
    }
    /* Rows per chunk: bounded by the F32 buffer size, a whole number of heads, at least one. */
    uint64_t f32_rb = (uint64_t)ne0 * 4;
    int64_t chunk = (int64_t)(HF_CHUNK_BYTES / (f32_rb ? f32_rb : 1));
    chunk -= chunk % head_rows;
    if (chunk < head_rows) chunk = head_rows;
    if (chunk > rows) chunk = rows;
    bool convert = t->type != out_type;

    uint8_t *in = malloc((size_t)chunk * in_rb);
    uint8_t *perm = heads > 0 ? malloc((size_t)chunk * in_rb) : NULL;
    float *f32 = convert ? malloc((size_t)chunk * f32_rb) : NULL;
    uint8_t *out = convert ? malloc((size_t)chunk * out_rb) : NULL;
    int rc = -1;
    if (!in || (heads > 0 && !perm) || (convert && (!f32 || !out))) {
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
        const void *data = rows_hf;
        if (convert) {
            if (model_rows_to_f32(m, t, rows_hf, f32, n, err)) goto done;
            row_from_f32(out_type, f32, out, n * ne0);
            data = out;
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

/* The dtype a tensor is stored with. An explicit outtype applies to all. Otherwise the model's
 * dominant type, except for F32 vectors (norms, biases) whose values that type cannot hold
 * exactly: those stay F32, so GGUF -> HF -> GGUF loses nothing (a norm trained in F32 beside
 * F16 matrices), while norms that came from a BF16 checkpoint go back to BF16 byte for byte. */
static int tensor_out_type(const model *m, uint64_t ti, int dominant, int outtype) {
    const model_tensor *t = &m->tensors[ti];
    if (outtype != -1 || t->type != GGML_TYPE_F32 || dominant == GGML_TYPE_F32) return dominant;
    if (model_tensor_rows(t) != 1) return dominant;
    const float *v = (const float *)t->data; /* a vector: one row, read in place */
    for (int64_t i = 0; i < t->ne[0]; i++) {
        float back;
        if (dominant == GGML_TYPE_F16) back = fp16_to_f32(f32_to_fp16(v[i]));
        else back = bf16_to_f32(f32_to_bf16(v[i]));
        if (memcmp(&back, &v[i], sizeof back) != 0) return GGML_TYPE_F32;
    }
    return dominant;
}

int hf_write(const model *m, const char *dir, int outtype, uint64_t shard_size,
             const slmc_progress *progress, slmc_err *err) {
    if (!arch_by_name(m->cfg.arch))
        return slmc_fail(err, m->path, "architecture %s cannot be written as a Hugging Face checkpoint "
                         "(%s)", m->cfg.arch, arch_names());
    if (outtype != -1 && !type_is_float(outtype))
        return slmc_fail(err, dir, "output type %s: Hugging Face output is F32, F16 or BF16", type_name(outtype));
    if (m->cfg.n_rot != m->cfg.head_dim)
        return slmc_fail(err, m->path, "rope dimension %lld differs from head dimension %lld: partial "
                         "rotary has no Hugging Face llama form", (long long)m->cfg.n_rot, (long long)m->cfg.head_dim);
    /* Hugging Face checkpoints hold float tensors only: quantized ones are written as their
     * dequantized values, so each must be decodable (checked before anything is written). */
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (model_check_f32(m, &m->tensors[i], err)) return -1;
    /* Default dtype: the dominant float type of the matrices; F32 when any tensor is quantized,
     * since a dequantized value is exact in F32 but F16/BF16 would round it again (and F32 is
     * what one fine-tunes from). */
    int out_type = outtype != -1 ? outtype
                 : model_has_quantized(m) ? GGML_TYPE_F32 : dominant_matrix_type(m->tensors, m->n_tensors);
    if (shard_size == 0) shard_size = HF_DEFAULT_SHARD_SIZE;

    /* The safetensors tensor list: HF names, shapes outermost first. */
    st_out_tensor *outs = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *outs);
    char **names = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *names);
    if (!outs || !names) { free(outs); free(names); return slmc_fail(err, dir, "out of memory"); }
    int rc = -1;
    uint64_t total = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        names[i] = gguf_to_hf_name(t->name);
        if (!names[i]) { slmc_fail(err, m->path, "tensor %s has no Hugging Face name", t->name); goto free_names; }
        outs[i].name = names[i];
        outs[i].type = tensor_out_type(m, i, out_type, outtype);
        outs[i].n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) outs[i].shape[d] = t->ne[t->n_dims - 1 - d];
        total += type_nbytes(outs[i].type, model_tensor_rows(t) * t->ne[0]);
    }

    atomic_dir ad;
    if (ad_open(&ad, dir, err)) goto free_names;
    st_writer w;
    /* (st_writer adds transformers' {"format": "pt"} metadata itself.) */
    if (st_writer_open(&w, ad.tmp_path, outs, m->n_tensors, shard_size, NULL, NULL, 0, err)) goto abort_dir;
    uint64_t done = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        if (write_tensor(m, i, outs[i].type, &w, &done, total, progress, err)) { st_writer_abort(&w); goto abort_dir; }
        model_release_source(m, &m->tensors[i]); /* keep peak RSS independent of model size */
    }
    if (st_writer_finish(&w, err)) { st_writer_abort(&w); goto abort_dir; }

    char *cfg = ad_file(&ad, "config.json"), *gen = ad_file(&ad, "generation_config.json");
    int jrc = !cfg || !gen ? slmc_fail(err, dir, "out of memory")
            : hf_write_config_json(cfg, m, out_type, err) || write_generation_config(gen, m, err) ? -1 : 0;
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
    for (uint64_t i = 0; i < m->n_tensors; i++) free(names[i]);
    free(names);
    free(outs);
    return rc;
}
