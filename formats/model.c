/* model.c - the model view: opening any input format, reading rows, writing GGUF.
 * See model.h for the picture. */
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include "fileio.h"
#include "gguf.h"
#include "hf.h"
#include "llama2c.h"
#include "codec/quants.h"
#include "codec/types.h"

/* ---------------------------------------------------------------------------------------
 * Opening
 * ------------------------------------------------------------------------------------- */

static void free_gguf_src(void *src) {
    gguf_close(src);
    free(src);
}

/* GGUF input: the view points straight into the mapped file. */
static int open_gguf(model *m, const char *path, slmc_err *err) {
    gguf_file *g = calloc(1, sizeof *g);
    m->path = strdup(path);
    if (!g || !m->path) { free(g); return slmc_fail(err, path, "out of memory"); }
    if (gguf_open(g, path, err) != 0) { free(g); return -1; }
    m->src = g;
    m->free_src = free_gguf_src;
    m->format = MODEL_GGUF;
    if (meta_copy(&m->kv, &g->kv) != 0) return slmc_fail(err, path, "out of memory");
    m->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *m->tensors);
    if (!m->tensors) return slmc_fail(err, path, "out of memory");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_info *ti = &g->tensors[i];
        model_tensor *t = &m->tensors[i];
        t->name = strdup(ti->name);
        if (!t->name) return slmc_fail(err, path, "out of memory");
        t->type = ti->type;
        t->n_dims = ti->n_dims;
        for (int d = 0; d < MODEL_MAX_DIMS; d++) t->ne[d] = ti->ne[d];
        t->nbytes = ti->nbytes;
        t->data = gguf_tensor_data(g, i);
        m->n_tensors++;
    }
    return model_config_from_meta(m, err);
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Read the first four bytes of a file (0 when shorter or unreadable). */
static uint32_t file_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t b[4] = {0};
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    if (n != 4) return 0;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

int model_open(model *m, const char *path, const model_open_opts *opts, slmc_err *err) {
    memset(m, 0, sizeof *m);
    meta_init(&m->kv);
    int rc; /* each format's opener sets m->path */
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        rc = slmc_fail(err, path, "cannot open: %s", strerror(errno));
    } else {
        fclose(probe);
        if (is_dir(path) || has_suffix(path, ".safetensors") || has_suffix(path, ".json")) {
            rc = hf_open(m, path, err);
        } else if (file_magic(path) == GGUF_MAGIC) {
            rc = open_gguf(m, path, err);
        } else if (llama2c_probe(path)) {
            if (!opts || !opts->tokenizer)
                rc = slmc_fail(err, path, "looks like a llama2.c checkpoint: give its tokenizer with --tokenizer tokenizer.bin");
            else
                rc = llama2c_open(m, path, opts->tokenizer, err);
        } else {
            rc = slmc_fail(err, path, "not a GGUF file, a safetensors file or folder, or a llama2.c checkpoint");
        }
    }
    if (rc != 0) model_close(m);
    return rc;
}

void model_close(model *m) {
    if (!m) return;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        free(m->tensors[i].name);
        free(m->tensors[i].owned);
    }
    free(m->tensors);
    if (m->src && m->free_src) m->free_src(m->src);
    meta_free(&m->kv);
    free(m->path);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------------------------------
 * Config from metadata
 * ------------------------------------------------------------------------------------- */

static int64_t arch_int(const model *m, const char *suffix, int64_t dflt) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->cfg.arch, suffix);
    int64_t v;
    return meta_get_i64(&m->kv, key, &v) ? v : dflt;
}

static double arch_float(const model *m, const char *suffix, double dflt) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->cfg.arch, suffix);
    double v;
    return meta_get_f64(&m->kv, key, &v) ? v : dflt;
}

/* Lenient by design: inspect lists any GGUF (vocab-only files, other architectures), so
 * missing keys leave zeros; model_check_llama() is the strict check for commands that run
 * or reshape a model. */
int model_config_from_meta(model *m, slmc_err *err) {
    model_config *c = &m->cfg;
    memset(c, 0, sizeof *c);
    const char *arch = meta_get_str(&m->kv, "general.architecture");
    if (!arch) {
        if (m->n_tensors == 0) return 0; /* a vocabulary-only file */
        return slmc_fail(err, m->path, "metadata has no general.architecture");
    }
    if (strlen(arch) >= sizeof c->arch)
        return slmc_fail(err, m->path, "general.architecture is too long");
    strcpy(c->arch, arch);
    c->n_ctx_train = arch_int(m, "context_length", 0);
    c->n_embd = arch_int(m, "embedding_length", 0);
    c->n_ff = arch_int(m, "feed_forward_length", 0);
    c->n_layer = arch_int(m, "block_count", 0);
    c->n_head = arch_int(m, "attention.head_count", 0);
    c->n_head_kv = arch_int(m, "attention.head_count_kv", c->n_head);
    c->head_dim = arch_int(m, "attention.key_length", c->n_head > 0 ? c->n_embd / c->n_head : 0);
    c->n_rot = arch_int(m, "rope.dimension_count", c->head_dim);
    c->rope_freq_base = (float)arch_float(m, "rope.freq_base", 10000.0);
    const arch_desc *family = arch_by_name(c->arch);
    c->norm_eps = (float)arch_float(m, family && family->norm == NORM_LAYER ? "attention.layer_norm_epsilon"
                                                                          : "attention.layer_norm_rms_epsilon", 1e-5);
    c->rope_attn_factor = (float)arch_float(m, "rope.scaling.attn_factor", 1.0);
    c->n_swa = arch_int(m, "attention.sliding_window", 0);
    if (family && family->swa == SWA_EVEN && c->n_swa == 0) c->n_swa = 4096; /* llama.cpp's gemma2 default */
    /* gemma3's local layers: llama.cpp uses base 10000 without scaling (a key when one is written) */
    c->rope_freq_base_swa = (float)arch_float(m, "rope.freq_base_swa", family && family->swa == SWA_5_TO_1 ? 10000.0 : 0.0);
    if (family && family->attn_softcap) c->attn_softcap = (float)arch_float(m, "attn_logit_softcapping", 50.0);
    if (family && family->final_softcap) c->final_softcap = (float)arch_float(m, "final_logit_softcapping", 30.0);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    const char *scaling = meta_get_str(&m->kv, key);
    if (scaling && strcmp(scaling, "none") != 0) {
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "%s", scaling);
        c->rope_scaling_factor = (float)arch_float(m, "rope.scaling.factor", 1.0);
    }
    /* also without a scaling type: Phi-3's longrope files carry it to choose their factors */
    c->rope_scaling_orig_ctx = arch_int(m, "rope.scaling.original_context_length", 0);
    int64_t emb = model_find(m, "token_embd.weight");
    uint64_t n_tokens = 0;
    if (emb >= 0) c->n_vocab = m->tensors[emb].ne[1];
    else if (meta_get_arr(&m->kv, "tokenizer.ggml.tokens", GGUF_STR, &n_tokens)) c->n_vocab = (int64_t)n_tokens;
    else c->n_vocab = arch_int(m, "vocab_size", 0);
    c->tied_output = emb >= 0 && model_find(m, "output.weight") < 0;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Tensors and rows
 * ------------------------------------------------------------------------------------- */

int64_t model_find(const model *m, const char *name) {
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return (int64_t)i;
    return -1;
}

int64_t model_tensor_rows(const model_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

uint64_t model_tensor_row_bytes(const model_tensor *t) { return type_nbytes(t->type, t->ne[0]); }

uint64_t model_param_count(const model *m) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        n += (uint64_t)(m->tensors[i].ne[0] * model_tensor_rows(&m->tensors[i]));
    return n;
}

/* llama.cpp's converter reshapes each head's rows as (2, head_rows/2) and swaps the two
 * axes: the two halves of a head (HF's rotate_half layout) become interleaved pairs. */
int64_t qk_row_hf_of_gguf(int64_t r, int64_t rows, int64_t heads) {
    int64_t hd = rows / heads, half = hd / 2;
    int64_t h = r / hd, k = r % hd;
    return h * hd + (k % 2) * half + k / 2;
}

int64_t qk_row_gguf_of_hf(int64_t r, int64_t rows, int64_t heads) {
    int64_t hd = rows / heads, half = hd / 2;
    int64_t h = r / hd, k = r % hd;
    return h * hd + (k % half) * 2 + k / half;
}

static int check_rows(const model *m, uint64_t ti, int64_t row0, int64_t nrows, slmc_err *err) {
    if (ti >= m->n_tensors) return slmc_fail(err, m->path, "tensor index %llu out of range", (unsigned long long)ti);
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t);
    if (row0 < 0 || nrows < 0 || row0 + nrows > rows)
        return slmc_fail(err, m->path, "%s: rows %lld..%lld out of range (%lld rows)", t->name,
                         (long long)row0, (long long)(row0 + nrows), (long long)rows);
    return 0;
}

/* The stored bytes of row g (in llama.cpp's row order) of tensor t. */
static const uint8_t *stored_row(const model_tensor *t, int64_t g) {
    int64_t src = g;
    if (t->qk_heads > 0) {
        int64_t mat_rows = t->ne[1]; /* the permutation acts within each 2-D matrix */
        src = g - g % mat_rows + qk_row_hf_of_gguf(g % mat_rows, mat_rows, t->qk_heads);
    }
    return t->data + (uint64_t)src * model_tensor_row_bytes(t);
}

int model_read_rows(const model *m, uint64_t ti, int64_t row0, int64_t nrows, void *dst, slmc_err *err) {
    if (check_rows(m, ti, row0, nrows, err) != 0) return -1;
    const model_tensor *t = &m->tensors[ti];
    uint64_t rb = model_tensor_row_bytes(t);
    uint8_t *out = dst;
    if (t->qk_heads <= 0) {
        memcpy(out, t->data + (uint64_t)row0 * rb, (size_t)(rb * (uint64_t)nrows));
        return 0;
    }
    for (int64_t r = 0; r < nrows; r++) memcpy(out + (uint64_t)r * rb, stored_row(t, row0 + r), (size_t)rb);
    return 0;
}

/* n values of `type` at src to F32: float types widen here, quantized types go through the
 * codec's decoder (quant_dequantize). 0, or -1 when the type cannot be converted
 * (model_check_f32 says why). */
static int values_to_f32(int type, const void *src, float *dst, int64_t n) {
    if (type_is_float(type)) {
        row_to_f32(type, src, dst, n);
        return 0;
    }
    const type_info *info = type_get(type);
    if (!info || !info->quantized) return -1;
    return quant_dequantize(type, src, dst, n);
}

int model_check_f32(const model *m, const model_tensor *t, slmc_err *err) {
    if (type_is_float(t->type)) return 0;
    const type_info *info = type_get(t->type);
    if (!info || !info->quantized)
        return slmc_fail(err, m->path, "tensor %s is %s: only float and quantized tensors convert to F32/F16/BF16",
                         t->name, type_name(t->type));
    if (quant_dequantize(t->type, NULL, NULL, 0) != 0)
        return slmc_fail(err, m->path, "tensor %s is %s, a type slmc cannot dequantize yet", t->name,
                         type_name(t->type));
    return 0;
}

int model_rows_to_f32(const model *m, const model_tensor *t, const void *src, float *dst, int64_t nrows,
                      slmc_err *err) {
    if (model_check_f32(m, t, err) != 0) return -1;
    if (values_to_f32(t->type, src, dst, t->ne[0] * nrows) != 0)
        return slmc_fail(err, m->path, "tensor %s: cannot convert %s rows to F32", t->name, type_name(t->type));
    return 0;
}

bool model_has_quantized(const model *m) {
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const type_info *info = type_get(m->tensors[i].type);
        if (info && info->quantized) return true;
    }
    return false;
}

int model_read_rows_f32(const model *m, uint64_t ti, int64_t row0, int64_t nrows, float *dst, slmc_err *err) {
    if (check_rows(m, ti, row0, nrows, err) != 0) return -1;
    const model_tensor *t = &m->tensors[ti];
    if (model_check_f32(m, t, err) != 0) return -1;
    if (t->type == GGML_TYPE_F32) return model_read_rows(m, ti, row0, nrows, dst, err);
    int64_t ne0 = t->ne[0];
    if (!type_is_float(t->type)) {
        /* quantized: decode each row straight from the input, no copy */
        for (int64_t r = 0; r < nrows; r++)
            if (values_to_f32(t->type, stored_row(t, row0 + r), dst + r * ne0, ne0) != 0)
                return slmc_fail(err, m->path, "tensor %s: cannot dequantize %s rows", t->name, type_name(t->type));
        return 0;
    }
    int64_t n = ne0 * nrows;
    if (t->qk_heads <= 0) { /* rows in stored order: widen straight from the input */
        row_to_f32(t->type, t->data + (uint64_t)row0 * model_tensor_row_bytes(t), dst, n);
        return 0;
    }
    /* Permuted rows: read the 16-bit rows into the tail of dst, then widen front to back: the
     * write position never overtakes the unread input. */
    uint16_t *half = (uint16_t *)(dst + n) - n;
    if (model_read_rows(m, ti, row0, nrows, half, err) != 0) return -1;
    row_to_f32(t->type, half, dst, n);
    return 0;
}

int model_out_type(const model_tensor *t, int outtype) {
    const type_info *info = type_get(t->type);
    bool quantized = info && info->quantized;
    /* integer types, and quantized tensors when no type is asked for: kept as they are */
    if (!type_is_float(t->type) && !(quantized && outtype >= 0)) return t->type;
    bool vector = t->n_dims == 1 || model_tensor_rows(t) == 1;
    if (vector) return GGML_TYPE_F32;
    return outtype < 0 ? t->type : outtype;
}

/* ---------------------------------------------------------------------------------------
 * Writing GGUF
 *
 * The writer puts metadata and tensors in one canonical order whatever the input format,
 * so that the same model reached by different routes (llama2.c -> GGUF, or
 * llama2.c -> GGUF -> HF -> GGUF) gives byte-identical files.
 * ------------------------------------------------------------------------------------- */

int model_dominant_type(const model *m) {
    uint64_t count[GGML_TYPE_COUNT] = {0};
    int best = GGML_TYPE_F32;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        if (t->n_dims < 2 || t->type < 0 || t->type >= GGML_TYPE_COUNT) continue;
        count[t->type] += (uint64_t)(t->ne[0] * model_tensor_rows(t));
        if (count[t->type] > count[best]) best = t->type;
    }
    return best;
}

/* The input's <arch>.<suffix> key, or NULL. */
static const meta_kv *arch_key(const model *m, const char *suffix) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", m->cfg.arch, suffix);
    return meta_find(&m->kv, k);
}

/* Architecture keys in the order they are written; values come from cfg (the few keys cfg does
 * not hold are copied from the input). Which keys a family gets follows its llama.cpp converter
 * (formats/arch.h's kv_* flags, hf_writes_freq_base, hf_writes_head_dim); an optional key the
 * input has is kept. slmc has always written vocab_size and rope.dimension_count for llama and
 * qwen2 (and an architecture it does not know), and still does, so those files do not change. */
static int put_arch_keys(meta *out, const model *m) {
    const model_config *c = &m->cfg;
    const arch_desc *a = arch_by_name(c->arch);
    const bool legacy = !a || strcmp(a->name, "llama") == 0 || strcmp(a->name, "qwen2") == 0;
    char k[128];
    int rc = 0;
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", c->arch, suffix), k)
    if (c->n_ctx_train > 0) rc |= meta_set_u32(out, KEY("context_length"), (uint32_t)c->n_ctx_train);
    rc |= meta_set_u32(out, KEY("embedding_length"), (uint32_t)c->n_embd);
    rc |= meta_set_u32(out, KEY("block_count"), (uint32_t)c->n_layer);
    rc |= meta_set_u32(out, KEY("feed_forward_length"), (uint32_t)c->n_ff);
    if (legacy || a->kv_rope_dims || c->n_rot != c->head_dim || arch_key(m, "rope.dimension_count"))
        rc |= meta_set_u32(out, KEY("rope.dimension_count"), (uint32_t)c->n_rot);
    rc |= meta_set_u32(out, KEY("attention.head_count"), (uint32_t)c->n_head);
    rc |= meta_set_u32(out, KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv);
    if (c->n_head > 0 && hf_writes_head_dim(a, c->head_dim, c->n_embd, c->n_head)) {
        rc |= meta_set_u32(out, KEY("attention.key_length"), (uint32_t)c->head_dim);
        rc |= meta_set_u32(out, KEY("attention.value_length"), (uint32_t)c->head_dim);
    }
    rc |= meta_set_f32(out, KEY(a && a->norm == NORM_LAYER ? "attention.layer_norm_epsilon"
                                                           : "attention.layer_norm_rms_epsilon"), c->norm_eps);
    if (!a || hf_writes_freq_base(a, c->rope_freq_base) || arch_key(m, "rope.freq_base"))
        rc |= meta_set_f32(out, KEY("rope.freq_base"), c->rope_freq_base);
    const meta_kv *orig = arch_key(m, "rope.scaling.original_context_length");
    if (c->rope_scaling[0]) {
        rc |= meta_set_str(out, KEY("rope.scaling.type"), c->rope_scaling);
        rc |= meta_set_f32(out, KEY("rope.scaling.factor"), c->rope_scaling_factor);
        if (c->rope_scaling_orig_ctx > 0)
            rc |= meta_set_u32(out, KEY("rope.scaling.original_context_length"), (uint32_t)c->rope_scaling_orig_ctx);
    } else if (orig) {
        /* Phi-3 has it without a scaling type */
        rc |= meta_set_u32(out, KEY("rope.scaling.original_context_length"),
                           (uint32_t)(c->rope_scaling_orig_ctx > 0 ? c->rope_scaling_orig_ctx : meta_kv_i64(orig)));
    }
    if (c->n_vocab > 0 && (legacy || a->kv_vocab_size || arch_key(m, "vocab_size")))
        rc |= meta_set_u32(out, KEY("vocab_size"), (uint32_t)c->n_vocab);
    /* the families' own keys */
    if (arch_key(m, "rope.scaling.attn_factor") || c->rope_attn_factor != 1.0f)
        rc |= meta_set_f32(out, KEY("rope.scaling.attn_factor"), c->rope_attn_factor);
    float swa_base_default = a && a->swa == SWA_5_TO_1 ? 10000.0f : 0.0f;
    if (arch_key(m, "rope.freq_base_swa") || c->rope_freq_base_swa != swa_base_default)
        rc |= meta_set_f32(out, KEY("rope.freq_base_swa"), c->rope_freq_base_swa);
    int64_t swa_default = a && a->swa == SWA_EVEN ? 4096 : 0;
    if (arch_key(m, "attention.sliding_window") || c->n_swa != swa_default)
        rc |= meta_set_u32(out, KEY("attention.sliding_window"), (uint32_t)c->n_swa);
    if (a && a->attn_softcap && (arch_key(m, "attn_logit_softcapping") || c->attn_softcap != 50.0f))
        rc |= meta_set_f32(out, KEY("attn_logit_softcapping"), c->attn_softcap);
    if (a && a->final_softcap && (arch_key(m, "final_logit_softcapping") || c->final_softcap != 30.0f))
        rc |= meta_set_f32(out, KEY("final_logit_softcapping"), c->final_softcap);
    const meta_kv *par = arch_key(m, "use_parallel_residual");
    if (par) rc |= meta_set_kv(out, par);
#undef KEY
    return rc;
}

static int copy_key(meta *out, const meta *in, const char *key) {
    const meta_kv *kv = meta_find(in, key);
    return kv ? meta_set_kv(out, kv) : 0;
}

static const char *const TOKENIZER_KEYS[] = {
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
    "tokenizer.chat_template",
    /* keys the later families' tokenizers add (mask id, Gemma's <end_of_turn>, SentencePiece's
     * prefix flag): a fixed place too, whatever order a reader set them in */
    "tokenizer.ggml.mask_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.add_space_prefix",
};

/* general.* first, the architecture keys from cfg, general.file_type, the tokenizer keys,
 * then every other key of the input in its original order. */
int model_gguf_meta(meta *out, const model *m, int64_t file_type) {
    meta_init(out);
    int rc = 0;
    const bool llama_like = m->cfg.arch[0] && m->cfg.n_embd > 0;
    rc |= copy_key(out, &m->kv, "general.architecture");
    rc |= copy_key(out, &m->kv, "general.name");
    if (llama_like) rc |= put_arch_keys(out, m);
    /* general.file_type: the one asked for, else the input's, else what the tensors are
     * (llama.cpp's ids: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32) */
    uint64_t ft;
    if (file_type < 0 && meta_get_u64(&m->kv, "general.file_type", &ft)) file_type = (int64_t)ft;
    if (file_type < 0) {
        int dom = model_dominant_type(m);
        file_type = dom == GGML_TYPE_F16 ? 1 : dom == GGML_TYPE_BF16 ? 32 : 0;
    }
    rc |= meta_set_u32(out, "general.file_type", (uint32_t)file_type);
    rc |= meta_set_u32(out, "general.quantization_version", 2); /* as llama.cpp's writers do */
    for (size_t i = 0; i < sizeof TOKENIZER_KEYS / sizeof *TOKENIZER_KEYS; i++) {
        /* an id of 0xFFFFFFFF means "not set", the same as no key: normalise to no key */
        uint64_t id;
        if (strstr(TOKENIZER_KEYS[i], "_token_id") && meta_get_u64(&m->kv, TOKENIZER_KEYS[i], &id) && id == UINT32_MAX)
            continue;
        rc |= copy_key(out, &m->kv, TOKENIZER_KEYS[i]);
    }
    size_t arch_len = strlen(m->cfg.arch);
    for (size_t i = 0; i < m->kv.n; i++) {
        const meta_kv *kv = &m->kv.kv[i];
        if (meta_find(out, kv->key)) continue;
        uint64_t id;
        if (strstr(kv->key, "tokenizer.ggml.") == kv->key && strstr(kv->key, "_token_id") &&
            meta_get_u64(&m->kv, kv->key, &id) && id == UINT32_MAX)
            continue;
        /* the architecture keys we know were rewritten from cfg above; unknown ones pass */
        if (llama_like && strncmp(kv->key, m->cfg.arch, arch_len) == 0 && kv->key[arch_len] == '.') {
            char probe[160];
            snprintf(probe, sizeof probe, "%s", kv->key + arch_len + 1);
            static const char *const known[] = {"context_length", "embedding_length", "block_count",
                "feed_forward_length", "rope.dimension_count", "attention.head_count",
                "attention.head_count_kv", "attention.key_length", "attention.value_length",
                "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.scaling.type",
                "rope.scaling.factor", "rope.scaling.original_context_length", "vocab_size",
                "attention.layer_norm_epsilon", "rope.scaling.attn_factor", "rope.freq_base_swa",
                "attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
                "use_parallel_residual"};
            bool is_known = false;
            for (size_t k = 0; k < sizeof known / sizeof *known; k++)
                if (strcmp(probe, known[k]) == 0) is_known = true;
            if (is_known) continue;
        }
        rc |= meta_set_kv(out, kv);
    }
    return rc ? -1 : 0;
}

/* Sort key of a tensor name, by the family's tables (formats/arch.h): token_embd (globals[0]),
 * the blocks in order (each block's tensors in table order, names the table lacks at the end of
 * their block), the other globals in table order; unknown names after, in input order. An
 * architecture slmc does not know gets llama's order. */
static const char *const BLOCK_ORDER[] = {
    "attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias",
    "attn_v.weight", "attn_v.bias", "attn_output.weight", "attn_output.bias", "ffn_norm.weight",
    "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
};

static int64_t tensor_rank(const arch_desc *a, const char *name, uint64_t index) {
    const int64_t unknown = (int64_t)1 << 40, after_blocks = unknown - 1024;
    if (a) {
        const arch_tensor *g = arch_global(a, name);
        if (g) return g == a->globals ? 0 : after_blocks + (g - a->globals);
    } else {
        if (strcmp(name, "token_embd.weight") == 0) return 0;
        if (strcmp(name, "output_norm.weight") == 0) return after_blocks + 1;
        if (strcmp(name, "output.weight") == 0) return after_blocks + 2;
    }
    int blk, off = 0;
    if (sscanf(name, "blk.%d.%n", &blk, &off) == 1 && off > 0 && blk >= 0 && blk < 1000000) {
        int64_t base = 1 + (int64_t)blk * 64;
        if (a) {
            const arch_tensor *t = arch_layer_tensor(a, name + off);
            if (t) return base + (t - a->layer);
        } else {
            for (size_t k = 0; k < sizeof BLOCK_ORDER / sizeof *BLOCK_ORDER; k++)
                if (strcmp(name + off, BLOCK_ORDER[k]) == 0) return base + (int64_t)k;
        }
        return base + 63;
    }
    return unknown + (int64_t)index;
}

/* Tensor indices of m in canonical write order (malloc'd). Stable: equal ranks keep order. */
uint64_t *model_gguf_order(const model *m) {
    uint64_t n = m->n_tensors;
    uint64_t *order = malloc((n ? n : 1) * sizeof *order);
    int64_t *rank = malloc((n ? n : 1) * sizeof *rank);
    if (!order || !rank) { free(order); free(rank); return NULL; }
    const arch_desc *a = arch_by_name(m->cfg.arch);
    for (uint64_t i = 0; i < n; i++) { order[i] = i; rank[i] = tensor_rank(a, m->tensors[i].name, i); }
    for (uint64_t i = 1; i < n; i++) { /* insertion sort: a model has a few hundred tensors */
        uint64_t v = order[i];
        uint64_t j = i;
        while (j > 0 && rank[order[j - 1]] > rank[v]) { order[j] = order[j - 1]; j--; }
        order[j] = v;
    }
    free(rank);
    return order;
}

/* Drop a tensor's source pages from this process's resident set once written: the pages
 * stay in the page cache, but peak RSS no longer grows with the size of the input. */
static void release_range(const uint8_t *begin_p, uint64_t n) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t begin = (uintptr_t)begin_p & ~(uintptr_t)(page - 1);
    uintptr_t end = (uintptr_t)begin_p + n;
    if (begin_p && end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

/* Only a view opened from files (m->src set by its reader) points into read-only file
 * mappings; a view built in memory may point at heap buffers, which MADV_DONTNEED would zero. */
void model_release_source(const model *m, const model_tensor *t) {
    if (m->src && !t->owned) release_range(t->data, t->nbytes);
}

void model_release_rows(const model *m, const model_tensor *t, int64_t row0, int64_t nrows) {
    if (!m->src || t->owned) return;
    uint64_t rb = model_tensor_row_bytes(t);
    release_range(t->data + (uint64_t)row0 * rb, (uint64_t)nrows * rb);
}

#define WRITE_CHUNK_BYTES (16u << 20) /* rows are read and converted in chunks of about this size */

/* Stream one tensor through the writer in row chunks, converting as needed (float types
 * widened or narrowed, quantized types decoded by the codec; model_write_gguf checked
 * beforehand that every tensor to convert can be). */
static int write_tensor_rows(const model *m, uint64_t ti, int out_type, gguf_writer *w,
                             uint8_t *buf, float *fbuf, int64_t chunk_rows, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    uint64_t out_row = type_nbytes(out_type, ne0), in_row = model_tensor_row_bytes(t);
    for (int64_t r = 0; r < rows; r += chunk_rows) {
        int64_t nr = rows - r < chunk_rows ? rows - r : chunk_rows;
        if (out_type == t->type) {
            if (model_read_rows(m, ti, r, nr, buf, err) != 0) return -1;
        } else {
            /* source rows into fbuf's bytes, then each row widened and narrowed in parallel */
            uint8_t *raw = (uint8_t *)fbuf;
            if (model_read_rows(m, ti, r, nr, raw, err) != 0) return -1;
            bool oom = false, bad = false;
#pragma omp parallel
            {
                float *tmp = malloc((size_t)ne0 * sizeof *tmp);
                if (!tmp) {
#pragma omp atomic write
                    oom = true;
                }
#pragma omp for schedule(static)
                for (int64_t k = 0; k < nr; k++) {
                    if (!tmp) continue;
                    if (values_to_f32(t->type, raw + (uint64_t)k * in_row, tmp, ne0) != 0) {
#pragma omp atomic write
                        bad = true;
                        continue;
                    }
                    row_from_f32(out_type, tmp, buf + (uint64_t)k * out_row, ne0);
                }
                free(tmp);
            }
            if (oom) return slmc_fail(err, m->path, "out of memory");
            if (bad) return slmc_fail(err, m->path, "tensor %s: cannot convert %s rows", t->name, type_name(t->type));
        }
        if (gguf_writer_write(w, buf, (size_t)(out_row * (uint64_t)nr), err) != 0) return -1;
        if (t->qk_heads == 0) model_release_rows(m, t, r, nr);
    }
    return 0;
}

int model_write_gguf(const model *m, const char *path, int outtype, const slmc_progress *progress,
                     slmc_err *err) {
    if (outtype >= 0 && !type_is_float(outtype))
        return slmc_fail(err, path, "convert writes F32, F16 or BF16, not %s (use quantize)", type_name(outtype));
    meta kv;
    /* llama.cpp's file type ids: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32 */
    int64_t file_type = outtype < 0 ? -1 : outtype == GGML_TYPE_F16 ? 1 : outtype == GGML_TYPE_BF16 ? 32 : 0;
    if (model_gguf_meta(&kv, m, file_type) != 0) { meta_free(&kv); return slmc_fail(err, path, "out of memory"); }
    uint64_t n = m->n_tensors;
    uint64_t *order = model_gguf_order(m);
    gguf_tensor_info *infos = calloc(n ? n : 1, sizeof *infos);
    int *out_types = calloc(n ? n : 1, sizeof *out_types);
    uint8_t *buf = NULL;
    float *fbuf = NULL;
    int rc = -1;
    gguf_writer w;
    memset(&w, 0, sizeof w);
    bool opened = false;
    if (!order || !infos || !out_types) { slmc_fail(err, path, "out of memory"); goto done; }

    uint64_t max_row_f32 = 0, total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const model_tensor *t = &m->tensors[order[i]];
        out_types[i] = model_out_type(t, outtype);
        /* a tensor that changes type must be readable as F32 (a quantized one: decodable) */
        if (out_types[i] != t->type && model_check_f32(m, t, err) != 0) goto done;
        infos[i].name = t->name;
        infos[i].type = out_types[i];
        infos[i].n_dims = t->n_dims;
        for (int d = 0; d < MODEL_MAX_DIMS; d++) infos[i].ne[d] = t->ne[d];
        uint64_t rb = (uint64_t)t->ne[0] * 4;
        if (rb > max_row_f32) max_row_f32 = rb;
        if (model_tensor_row_bytes(t) > max_row_f32) max_row_f32 = model_tensor_row_bytes(t);
        total += type_nbytes(out_types[i], t->ne[0] * model_tensor_rows(t));
    }
    /* one chunk: at least one row, otherwise about WRITE_CHUNK_BYTES */
    uint64_t chunk_bytes = max_row_f32 > WRITE_CHUNK_BYTES ? max_row_f32 : WRITE_CHUNK_BYTES;
    buf = malloc(chunk_bytes);
    fbuf = malloc(chunk_bytes);
    if (!buf || !fbuf) { slmc_fail(err, path, "out of memory"); goto done; }

    if (gguf_writer_open(&w, path, &kv, infos, n, err) != 0) goto done;
    opened = true;
    uint64_t done_bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        const model_tensor *t = &m->tensors[order[i]];
        uint64_t row_f32 = (uint64_t)t->ne[0] * 4;
        uint64_t widest = row_f32 > model_tensor_row_bytes(t) ? row_f32 : model_tensor_row_bytes(t);
        int64_t chunk_rows = (int64_t)(chunk_bytes / (widest ? widest : 1));
        if (chunk_rows < 1) chunk_rows = 1;
        if (progress && progress->fn) progress->fn(progress->ud, done_bytes, total, t->name);
        if (write_tensor_rows(m, order[i], out_types[i], &w, buf, fbuf, chunk_rows, err) != 0) goto done;
        model_release_source(m, t);
        done_bytes += type_nbytes(out_types[i], t->ne[0] * model_tensor_rows(t));
    }
    if (gguf_writer_finish(&w, err) != 0) goto done;
    if (progress && progress->fn) progress->fn(progress->ud, total, total, NULL);
    rc = 0;
done:
    if (rc != 0 && opened) gguf_writer_abort(&w);
    meta_free(&kv);
    free(order);
    free(infos);
    free(out_types);
    free(buf);
    free(fbuf);
    return rc;
}
