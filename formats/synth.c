/* synth.c - deterministic synthetic Hugging Face checkpoints (see synth.h, docs/synth.md).
 *
 * The pieces, top to bottom:
 *   shapes      the built-in hyperparameters and the config.json reader
 *   values      a counter-based generator: value = f(seed, tensor name, element index)
 *   tensors     the list of Hugging Face tensors a shape has, with how each is filled
 *   vocabulary  a made-up SentencePiece-style vocabulary of any size
 *   writing     config.json, the safetensors shards in row chunks, the tokenizer files
 */
#include "synth.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "fileio.h"
#include "hf.h"
#include "hf_tokenizer.h"
#include "meta.h"
#include "safetensors.h"
#include "codec/types.h"

#define SYNTH_CHUNK_BYTES (8u << 20) /* rows are generated and written about this much at a time */
#define SYNTH_MAX_DIM (1 << 24)      /* any one hyperparameter; keeps every product in 64 bits */
#define SYNTH_MIN_VOCAB 259          /* <unk> <s> </s> and the 256 byte tokens */

/* ---------------------------------------------------------------------------------------
 * Shapes
 * ------------------------------------------------------------------------------------- */

/* The built-in shapes: the config.json of each model (the real hyperparameters), read by the
 * same parser as any config.json. */
static const struct { const char *name, *config; } SHAPES[] = {
    {"tiny", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 128, \"intermediate_size\": 384, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 512, "
             "\"max_position_embeddings\": 256, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05}"},
    {"small", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 256, \"intermediate_size\": 768, "
              "\"num_hidden_layers\": 4, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"vocab_size\": 1024, "
              "\"max_position_embeddings\": 512, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05}"},
    {"tinyllama-1.1b", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 2048, \"intermediate_size\": 5632, "
                       "\"num_hidden_layers\": 22, \"num_attention_heads\": 32, \"num_key_value_heads\": 4, "
                       "\"vocab_size\": 32000, \"max_position_embeddings\": 2048, \"rope_theta\": 10000.0, "
                       "\"rms_norm_eps\": 1e-05}"},
    {"llama-2-7b", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": 11008, "
                   "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 32, "
                   "\"vocab_size\": 32000, \"max_position_embeddings\": 4096, \"rope_theta\": 10000.0, "
                   "\"rms_norm_eps\": 1e-05}"},
    {"qwen2-0.5b", "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 896, \"intermediate_size\": 4864, "
                   "\"num_hidden_layers\": 24, \"num_attention_heads\": 14, \"num_key_value_heads\": 2, "
                   "\"vocab_size\": 151936, \"max_position_embeddings\": 32768, \"rope_theta\": 1000000.0, "
                   "\"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true}"},
    {"llama-3.2-1b", "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 2048, "
                     "\"intermediate_size\": 8192, \"num_hidden_layers\": 16, \"num_attention_heads\": 32, "
                     "\"num_key_value_heads\": 8, \"head_dim\": 64, \"vocab_size\": 128256, "
                     "\"max_position_embeddings\": 131072, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
                     "\"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
                     "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, "
                     "\"tie_word_embeddings\": true}"},
    {"qwen3-0.6b", "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"hidden_size\": 1024, "
                   "\"intermediate_size\": 3072, \"num_hidden_layers\": 28, \"num_attention_heads\": 16, "
                   "\"num_key_value_heads\": 8, \"head_dim\": 128, \"vocab_size\": 151936, "
                   "\"max_position_embeddings\": 40960, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000, "
                   "\"attention_bias\": false, \"tie_word_embeddings\": true}"},
    {"gemma-3-1b", "{\"architectures\": [\"Gemma3ForCausalLM\"], \"model_type\": \"gemma3_text\", "
                   "\"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 1152, \"intermediate_size\": 6912, "
                   "\"num_hidden_layers\": 26, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, "
                   "\"head_dim\": 256, \"vocab_size\": 262144, \"max_position_embeddings\": 32768, "
                   "\"query_pre_attn_scalar\": 256, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000, "
                   "\"rope_local_base_freq\": 10000, \"rope_scaling\": null, \"sliding_window\": 512, "
                   "\"sliding_window_pattern\": 6, \"attn_logit_softcapping\": null, "
                   "\"final_logit_softcapping\": null}"},
};
#define N_SHAPES (int)(sizeof SHAPES / sizeof *SHAPES)

void synth_opts_init(synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = GGML_TYPE_F16;
    o->seed = SYNTH_DEFAULT_SEED;
    o->shard_size = HF_DEFAULT_SHARD_SIZE;
}

const char *synth_shape_name(int i) { return i >= 0 && i < N_SHAPES ? SHAPES[i].name : NULL; }

void synth_shape_free(synth_shape *s) {
    if (s) hf_config_free(&s->cfg);
}

int synth_shape_get(const char *name, synth_shape *out, slmc_err *err) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < N_SHAPES; i++)
        if (strcmp(SHAPES[i].name, name) == 0) {
            snprintf(out->name, sizeof out->name, "%s", name);
            char where[96];
            snprintf(where, sizeof where, "shape %s", name);
            return hf_config_parse(SHAPES[i].config, strlen(SHAPES[i].config), where, &out->cfg, err);
        }
    char list[512] = "";
    for (int i = 0; i < N_SHAPES; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, SHAPES[i].name, sizeof list - strlen(list) - 1);
    }
    return slmc_fail(err, NULL, "unknown shape \"%s\" (shapes: %s)", name, list);
}

/* Checks every shape passes before anything is written (hf_config_parse checked the rest). */
static int check_shape(const hf_config *c, const char *path, slmc_err *err) {
    const struct { const char *name; int64_t v; } dims[] = {
        {"hidden_size", c->n_embd}, {"intermediate_size", c->n_ff}, {"num_hidden_layers", c->n_layer},
        {"num_attention_heads", c->n_head}, {"num_key_value_heads", c->n_head_kv}, {"head_dim", c->head_dim},
        {"vocab_size", c->n_vocab}, {"max_position_embeddings", c->n_ctx},
    };
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++)
        if (dims[i].v <= 0 || dims[i].v > SYNTH_MAX_DIM)
            return slmc_fail(err, path, "%s must be in 1..%d, got %lld", dims[i].name, SYNTH_MAX_DIM, (long long)dims[i].v);
    if (c->n_vocab < SYNTH_MIN_VOCAB)
        return slmc_fail(err, path, "vocab_size %lld is below %d (3 special and 256 byte tokens)",
                         (long long)c->n_vocab, SYNTH_MIN_VOCAB);
    return 0;
}

int synth_shape_from_config(const char *path, synth_shape *out, slmc_err *err) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "synthetic");
    char *text;
    size_t len;
    if (read_small_file(path, 1u << 20, &text, &len, err) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return slmc_fail(err, path, "bad JSON at byte %d: %s", jerr.position, jerr.text);
    /* synth's one default beyond transformers' own: a context of 2048 */
    if (json_is_object(root) && !json_object_get(root, "max_position_embeddings") && !json_object_get(root, "n_positions"))
        json_object_set_new(root, "max_position_embeddings", json_integer(2048));
    char *norm = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(root);
    if (!norm) return slmc_fail(err, path, "out of memory");
    int rc = hf_config_parse(norm, strlen(norm), path, &out->cfg, err);
    free(norm);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Values
 *
 * A counter-based generator: every value is computed from (seed, tensor key, element
 * index) alone, through splitmix64's mixing function. No state is carried from one
 * element to the next, so rows can be generated in any order, by any number of threads,
 * with the same result.
 * ------------------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* FNV-1a of a tensor name: the tensor's key, so that a tensor's values do not depend on
 * which other tensors the model has. */
static uint64_t name_key(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

/* The stream of one tensor; `purpose` separates the draws for values, outliers, and so on. */
static uint64_t stream_of(uint64_t seed, uint64_t key, uint64_t purpose) {
    return mix64(mix64(seed ^ mix64(key)) ^ purpose);
}

/* Uniform in [0, 1) from the top 24 bits (exact in float). */
static float uniform24(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

/* A standard-normal-like draw: the sum of three 16-bit uniforms (Irwin-Hall, bell-shaped,
 * unit variance), and in 1 draw of 128 a tail event that triples the value, so the
 * distribution has the heavier tails trained weights have. Integer arithmetic and one
 * exact scaling: the same bits on every machine. */
static float normal_from_hash(uint64_t h) {
    int64_t s = (int64_t)(h & 0xffff) + (int64_t)((h >> 16) & 0xffff) + (int64_t)((h >> 32) & 0xffff);
    float g = (float)(2 * s - 3 * 65535) * (1.0f / 65536.0f); /* mean 0, variance ~1 */
    if (((h >> 48) & 0x7f) == 0) g *= 3.0f;
    return g;
}

float synth_normal(uint64_t seed, uint64_t tensor_key, uint64_t index) {
    return normal_from_hash(mix64(stream_of(seed, tensor_key, 0) + index));
}

/* ---------------------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------------------- */

typedef enum synth_kind {
    KIND_MATRIX, /* weight matrix: normal * scale / sqrt(fan_in), a few outlier input columns */
    KIND_NORM,   /* norm weight: 1 + 0.02 * normal */
    KIND_BIAS,   /* bias (projections, LayerNorms): 0.02 * normal */
    KIND_NORM_W, /* Gemma's norm weight w (the model computes x * (1 + w)): 0.02 * normal rounded to
                  * a multiple of 1/128, so 1 + w is exact in BF16 and F16 (GGUF stores 1 + w) */
} synth_kind;

typedef struct synth_tensor {
    char name[96];    /* Hugging Face name */
    synth_kind kind;
    int64_t rows;     /* 1 for vectors */
    int64_t cols;     /* row length (fan_in for matrices) */
    int n_dims;       /* 1 or 2 */
} synth_tensor;

/* How a tensor of the family's tables is filled. */
static synth_kind kind_of(const arch_tensor *r) {
    if (r->d1 != DIM_NONE) return KIND_MATRIX;
    size_t n = strlen(r->gguf);
    if (n >= 5 && strcmp(r->gguf + n - 5, ".bias") == 0) return KIND_BIAS;
    return r->plus_one ? KIND_NORM_W : KIND_NORM;
}

/* The tensors of a shape, in the order they are written: the family's tables (formats/arch.h)
 * in their order, the tensors a Hugging Face checkpoint of this config has. Returns the count
 * (fills t when not NULL): call once to count, once to fill. */
static uint64_t list_tensors(const hf_config *c, synth_tensor *t) {
    uint64_t n = 0;
    const arch_desc *a = c->arch;
#define ADD(r_, ...)                                                                    \
    do {                                                                                \
        if (t) {                                                                        \
            snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                          \
            t[n].kind = kind_of(r_);                                                    \
            t[n].n_dims = (r_)->d1 == DIM_NONE ? 1 : 2;                                 \
            t[n].rows = (r_)->d1 == DIM_NONE ? 1 : hf_config_dim(c, (r_)->d0);           \
            t[n].cols = hf_config_dim(c, (r_)->d1 == DIM_NONE ? (r_)->d0 : (r_)->d1);    \
        }                                                                               \
        n++;                                                                            \
    } while (0)
    if (hf_config_has_tensor(c, &a->globals[0])) ADD(&a->globals[0], "%s", a->globals[0].hf);
    for (int64_t l = 0; l < c->n_layer; l++)
        for (int r = 0; r < a->n_layer_tensors; r++)
            if (hf_config_has_tensor(c, &a->layer[r]))
                ADD(&a->layer[r], "model.layers.%lld.%s", (long long)l, a->layer[r].hf);
    for (int g = 1; g < a->n_globals; g++)
        if (hf_config_has_tensor(c, &a->globals[g])) ADD(&a->globals[g], "%s", a->globals[g].hf);
#undef ADD
    return n;
}

/* How one tensor is filled: its stream, its scale and the per-column multipliers. */
typedef struct synth_fill {
    const synth_tensor *t;
    uint64_t stream;  /* stream_of(seed, key, 0): element i draws mix64(stream + i) */
    float scale;      /* matrices: factor / sqrt(fan_in) */
    float *col_mul;   /* [cols] 1 or the outlier multiplier (matrices only, else NULL) */
    int type;         /* output type */
} synth_fill;

/* Per-matrix factor in [0.5, 1.5) and about 0.5% of the input columns (at least one)
 * scaled by 8..20: the outlier channels that make activation-aware quantization matter. */
static int fill_init(synth_fill *f, const synth_tensor *t, uint64_t seed, int type) {
    memset(f, 0, sizeof *f);
    f->t = t;
    f->type = type;
    uint64_t key = name_key(t->name);
    f->stream = stream_of(seed, key, 0);
    if (t->kind != KIND_MATRIX) return 0;
    float factor = 0.5f + uniform24(stream_of(seed, key, 1));
    f->scale = (float)(factor / sqrt((double)t->cols));
    f->col_mul = malloc((size_t)t->cols * sizeof *f->col_mul);
    if (!f->col_mul) return -1;
    for (int64_t c = 0; c < t->cols; c++) f->col_mul[c] = 1.0f;
    int64_t n_out = t->cols / 200 > 0 ? t->cols / 200 : 1;
    uint64_t os = stream_of(seed, key, 2);
    for (int64_t j = 0; j < n_out; j++) {
        uint64_t h = mix64(os + (uint64_t)j);
        int64_t c = (int64_t)(h % (uint64_t)t->cols);
        f->col_mul[c] = 8.0f + 12.0f * uniform24(mix64(h));
    }
    return 0;
}

static void store_value(int type, float v, uint8_t *dst) {
    uint32_t bits;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(&bits, &v, 4);
        dst[0] = (uint8_t)bits; dst[1] = (uint8_t)(bits >> 8); dst[2] = (uint8_t)(bits >> 16); dst[3] = (uint8_t)(bits >> 24);
        break;
    default: {
        uint16_t h = type == GGML_TYPE_F16 ? f32_to_fp16(v) : f32_to_bf16(v);
        dst[0] = (uint8_t)h; dst[1] = (uint8_t)(h >> 8);
        break;
    }
    }
}

/* Row r of the tensor, in the output type, at dst. */
static void fill_row(const synth_fill *f, int64_t r, uint8_t *dst) {
    const synth_tensor *t = f->t;
    const size_t esize = type_nbytes(f->type, 1);
    const uint64_t base = (uint64_t)r * (uint64_t)t->cols;
    for (int64_t c = 0; c < t->cols; c++) {
        float g = normal_from_hash(mix64(f->stream + base + (uint64_t)c));
        float v;
        switch (t->kind) {
        case KIND_MATRIX: v = g * f->scale * f->col_mul[c]; break;
        case KIND_NORM: v = 1.0f + 0.02f * g; break;
        case KIND_NORM_W: v = rintf(2.56f * g) * (1.0f / 128.0f) + 0.0f; break; /* no -0: 1 + w - 1 is +0 */
        default: v = 0.02f * g; break;
        }
        store_value(f->type, v, dst + (size_t)c * esize);
    }
}

/* ---------------------------------------------------------------------------------------
 * Vocabulary
 *
 * <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, then normal pieces: common English
 * words and word pieces, single characters, then made-up syllable pieces ("▁ka", "tomi",
 * ...) for as many as are needed, skipping any text already used. Scores: 0 for the
 * special and byte tokens, then 0, -1, -2, ... as in llama2.c's vocabularies.
 * ------------------------------------------------------------------------------------- */

#define SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's word-start mark */

static const char *const COMMON[] = {
    SPACE "the", SPACE "a", SPACE "and", SPACE "to", SPACE "of", "ing", "ed", SPACE "in", SPACE "is",
    SPACE "it", "er", SPACE "that", SPACE "was", SPACE "he", SPACE "for", "on", SPACE "with", "es",
    SPACE "as", SPACE "his", "ly", SPACE "on", SPACE "be", SPACE "at", SPACE "by", SPACE "I", SPACE "you",
    SPACE "had", SPACE "not", SPACE "her", "tion", SPACE "are", SPACE "but", SPACE "from", SPACE "or",
    SPACE "have", SPACE "an", SPACE "they", SPACE "which", SPACE "one", SPACE "we", SPACE "she", SPACE "all",
    SPACE "were", SPACE "there", SPACE "their", "ment", SPACE "been", SPACE "has", SPACE "when", SPACE "who",
    SPACE "will", SPACE "more", SPACE "no", SPACE "if", SPACE "out", "ness", SPACE "so", SPACE "said",
    SPACE "what", SPACE "up", SPACE "its", SPACE "about", SPACE "into", SPACE "than", SPACE "them", SPACE "can",
    SPACE "only", SPACE "other", SPACE "new", SPACE "some", SPACE "could", SPACE "time", SPACE "these",
    SPACE "two", SPACE "may", SPACE "then", SPACE "do", SPACE "first", SPACE "any", SPACE "my", SPACE "now",
    SPACE "The", SPACE "He", SPACE "She", SPACE "It", SPACE "They", SPACE "Once", SPACE "upon", SPACE "day",
    "s", "'s", ".", ",", SPACE, "\n",
};

static const char CONSONANTS[] = "bdfghklmnprstvwz";
static const char VOWELS[] = "aeiou";
#define N_SYLLABLES ((int)(sizeof CONSONANTS - 1) * (int)(sizeof VOWELS - 1))

/* Made-up piece k (k >= 0): k/2 + 1 written in bijective base N_SYLLABLES with consonant-vowel
 * syllables; odd k get the word-start mark. Distinct k give distinct texts. */
static void syllable_piece(uint64_t k, char *out, size_t cap) {
    char tmp[64];
    size_t n = 0;
    uint64_t v = k / 2 + 1;
    while (v > 0 && n + 2 < sizeof tmp) {
        uint64_t d = (v - 1) % N_SYLLABLES;
        tmp[n++] = VOWELS[d % (sizeof VOWELS - 1)];
        tmp[n++] = CONSONANTS[d / (sizeof VOWELS - 1)];
        v = (v - 1) / N_SYLLABLES;
    }
    size_t o = 0;
    if (k % 2 == 1) { memcpy(out, SPACE, 3); o = 3; }
    while (n > 0 && o + 1 < cap) out[o++] = tmp[--n];
    out[o] = '\0';
}

/* A set of strings (open addressing), to skip a candidate piece already in the vocabulary. */
typedef struct str_set {
    const char **slot; /* [cap], NULL when empty; the strings are owned by the caller */
    uint64_t cap;      /* a power of two, at least twice the number of entries */
} str_set;

static bool set_insert(str_set *s, const char *str) {
    uint64_t i = name_key(str) & (s->cap - 1);
    while (s->slot[i]) {
        if (strcmp(s->slot[i], str) == 0) return false;
        i = (i + 1) & (s->cap - 1);
    }
    s->slot[i] = str;
    return true;
}

/* The next candidate text of the normal-piece stream; `*state` counts candidates. */
static void next_candidate(uint64_t *state, char *out, size_t cap) {
    const uint64_t n_common = sizeof COMMON / sizeof *COMMON;
    const uint64_t n_chars = 94; /* printable ASCII '!'..'~' */
    uint64_t k = (*state)++;
    if (k < n_common) { snprintf(out, cap, "%s", COMMON[k]); return; }
    k -= n_common;
    if (k < n_chars) { out[0] = (char)('!' + k); out[1] = '\0'; return; }
    k -= n_chars;
    syllable_piece(k, out, cap);
}

/* Build the tokenizer.ggml.* keys for a vocabulary of n tokens. */
static int build_vocab(meta *kv, int64_t n, slmc_err *err) {
    char **texts = calloc((size_t)n, sizeof *texts);
    float *scores = calloc((size_t)n, sizeof *scores);
    int32_t *types = calloc((size_t)n, sizeof *types);
    str_set set = {NULL, 1};
    while (set.cap < 2 * (uint64_t)n) set.cap *= 2;
    set.slot = calloc(set.cap, sizeof *set.slot);
    int rc = -1;
    if (!texts || !scores || !types || !set.slot) { slmc_fail(err, NULL, "out of memory"); goto done; }
    static const char *const specials[3] = {"<unk>", "<s>", "</s>"};
    for (int64_t i = 0; i < n; i++) {
        char buf[64];
        if (i < 3) {
            snprintf(buf, sizeof buf, "%s", specials[i]);
            types[i] = i == 0 ? TOKTYPE_UNKNOWN : TOKTYPE_CONTROL;
        } else if (i < SYNTH_MIN_VOCAB) {
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(i - 3));
            types[i] = TOKTYPE_BYTE;
        } else {
            types[i] = TOKTYPE_NORMAL;
            scores[i] = -(float)(i - SYNTH_MIN_VOCAB);
            buf[0] = '\0'; /* filled below */
        }
        if (buf[0]) {
            texts[i] = strdup(buf);
            if (!texts[i] || !set_insert(&set, texts[i])) { slmc_fail(err, NULL, "out of memory"); goto done; }
        }
    }
    uint64_t state = 0;
    for (int64_t i = SYNTH_MIN_VOCAB; i < n; i++) {
        char buf[64];
        do {
            next_candidate(&state, buf, sizeof buf);
            free(texts[i]);
            texts[i] = strdup(buf);
            if (!texts[i]) { slmc_fail(err, NULL, "out of memory"); goto done; }
        } while (!set_insert(&set, texts[i]));
    }
    if (meta_set_str(kv, "tokenizer.ggml.model", "llama") ||
        meta_set_str(kv, "tokenizer.ggml.pre", "default") ||
        meta_set_arr_str(kv, "tokenizer.ggml.tokens", (uint64_t)n, (const char *const *)texts, NULL) ||
        meta_set_arr(kv, "tokenizer.ggml.scores", GGUF_F32, (uint64_t)n, scores) ||
        meta_set_arr(kv, "tokenizer.ggml.token_type", GGUF_I32, (uint64_t)n, types) ||
        meta_set_u32(kv, "tokenizer.ggml.bos_token_id", 1) || meta_set_u32(kv, "tokenizer.ggml.eos_token_id", 2) ||
        meta_set_u32(kv, "tokenizer.ggml.unknown_token_id", 0) ||
        meta_set_bool(kv, "tokenizer.ggml.add_bos_token", true) ||
        meta_set_bool(kv, "tokenizer.ggml.add_eos_token", false)) {
        slmc_fail(err, NULL, "out of memory");
        goto done;
    }
    rc = 0;
done:
    if (texts)
        for (int64_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(scores);
    free(types);
    free(set.slot);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------------------- */

/* The metadata hf_write_config_json and hf_tokenizer_write take: the name and the vocabulary. */
static int build_kv(meta *kv, const synth_shape *s, slmc_err *err) {
    if (meta_set_str(kv, "general.architecture", s->cfg.arch->name) || meta_set_str(kv, "general.name", s->name))
        return slmc_fail(err, NULL, "out of memory");
    return build_vocab(kv, s->cfg.n_vocab, err);
}

/* Generate and write every tensor, in row chunks. */
static int write_tensors(st_writer *w, const synth_tensor *ts, uint64_t n, const synth_opts *o,
                         const slmc_progress *progress, slmc_err *err) {
    uint64_t total = 0, done = 0;
    for (uint64_t i = 0; i < n; i++) total += type_nbytes(o->dtype, ts[i].rows * ts[i].cols);
    size_t esize = type_nbytes(o->dtype, 1);
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = -1;
    for (uint64_t i = 0; i < n; i++) {
        const synth_tensor *t = &ts[i];
        size_t row_bytes = (size_t)t->cols * esize;
        int64_t chunk_rows = (int64_t)(SYNTH_CHUNK_BYTES / row_bytes);
        if (chunk_rows < 1) chunk_rows = 1;
        if (chunk_rows > t->rows) chunk_rows = t->rows;
        if ((size_t)chunk_rows * row_bytes > buf_cap) {
            free(buf);
            buf_cap = (size_t)chunk_rows * row_bytes;
            buf = malloc(buf_cap);
            if (!buf) { slmc_fail(err, NULL, "out of memory"); goto done; }
        }
        synth_fill f;
        if (fill_init(&f, t, o->seed, o->dtype) != 0) { slmc_fail(err, NULL, "out of memory"); goto done; }
        if (progress && progress->fn) progress->fn(progress->ud, done, total, t->name);
        for (int64_t r0 = 0; r0 < t->rows; r0 += chunk_rows) {
            int64_t nr = t->rows - r0 < chunk_rows ? t->rows - r0 : chunk_rows;
            /* each row depends only on its index: any thread may make it */
#pragma omp parallel for schedule(static)
            for (int64_t r = 0; r < nr; r++) fill_row(&f, r0 + r, buf + (size_t)r * row_bytes);
            if (st_writer_write(w, buf, (size_t)nr * row_bytes, err) != 0) { free(f.col_mul); goto done; }
        }
        free(f.col_mul);
        done += (uint64_t)t->rows * row_bytes;
    }
    if (progress && progress->fn) progress->fn(progress->ud, total, total, NULL);
    rc = 0;
done:
    free(buf);
    return rc;
}

/* The safetensors shards: plan, then stream every tensor. */
static int write_weights(const char *folder, const synth_shape *s, const synth_opts *o,
                         const slmc_progress *progress, slmc_err *err) {
    uint64_t n = list_tensors(&s->cfg, NULL);
    synth_tensor *ts = calloc(n, sizeof *ts);
    st_out_tensor *outs = calloc(n, sizeof *outs);
    if (!ts || !outs) { free(ts); free(outs); return slmc_fail(err, NULL, "out of memory"); }
    list_tensors(&s->cfg, ts);
    for (uint64_t i = 0; i < n; i++) {
        outs[i].name = ts[i].name;
        outs[i].type = o->dtype;
        outs[i].n_dims = ts[i].n_dims;
        if (ts[i].n_dims == 2) { outs[i].shape[0] = ts[i].rows; outs[i].shape[1] = ts[i].cols; }
        else outs[i].shape[0] = ts[i].cols;
    }
    static const char *const meta_keys[] = {"format"}, *const meta_values[] = {"pt"};
    st_writer w;
    int rc = -1;
    if (st_writer_open(&w, folder, outs, n, o->shard_size ? o->shard_size : HF_DEFAULT_SHARD_SIZE,
                       meta_keys, meta_values, 1, err) != 0)
        goto done;
    if (write_tensors(&w, ts, n, o, progress, err) != 0 || st_writer_finish(&w, err) != 0) {
        st_writer_abort(&w);
        goto done;
    }
    rc = 0;
done:
    free(ts);
    free(outs);
    return rc;
}

int synth_write(const synth_opts *o, const char *dir, const slmc_progress *progress, slmc_err *err) {
    if ((o->shape != NULL) == (o->config != NULL))
        return slmc_fail(err, dir, "synth needs exactly one of a shape name and a config.json");
    if (!type_is_float(o->dtype))
        return slmc_fail(err, dir, "synth writes F16, BF16 or F32, not %s", type_name(o->dtype));
    synth_shape s;
    if (o->shape ? synth_shape_get(o->shape, &s, err) : synth_shape_from_config(o->config, &s, err)) return -1;
    if (check_shape(&s.cfg, o->config, err) != 0) { synth_shape_free(&s); return -1; }

    meta kv;
    meta_init(&kv);
    atomic_dir ad;
    char *config = NULL;
    int rc = -1;
    if (build_kv(&kv, &s, err) != 0) goto done;
    if (ad_open(&ad, dir, err) != 0) goto done;
    config = ad_file(&ad, "config.json");
    if (!config) { slmc_fail(err, dir, "out of memory"); goto fail; }
    if (hf_write_config_json(config, &s.cfg, &kv, o->dtype, err) != 0) goto fail;
    if (write_weights(ad.tmp_path, &s, o, progress, err) != 0) goto fail;
    if (hf_tokenizer_write(&kv, ad.tmp_path, err) != 0) goto fail;
    if (ad_commit(&ad, err) != 0) goto done; /* ad_commit cleans up after itself */
    rc = 0;
    goto done;
fail:
    ad_abort(&ad);
done:
    free(config);
    meta_free(&kv);
    synth_shape_free(&s);
    return rc;
}
