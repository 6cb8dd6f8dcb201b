/* test_hf.c - Hugging Face folder <-> model view: names, config, tensors, the llama Q/K
 * permutation (against llama.cpp's own conversion), round trips, quantized GGUF -> HF
 * (dequantized values, rows back in HF order) and bad inputs. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/fileio.h"
#include "formats/gguf.h"
#include "formats/hf.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "codec/types.h"
#include "quant/plan.h"
#include "quant/quantize.h"
#include "codec/quants.h"
#include "tests/testutil.h"

#define BOOKS "models/books-22m/hf-bf16"
#define BOOKS_REF "reference/books-22m-BF16.gguf"

/* ---- helpers ---------------------------------------------------------------------------- */

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* true when two meta entries hold the same type and value. */
static bool kv_equal(const meta_kv *a, const meta_kv *b) {
    if (a->type != b->type) return false;
    if (a->type == GGUF_STR) return a->v.str.len == b->v.str.len && memcmp(a->v.str.s, b->v.str.s, a->v.str.len) == 0;
    if (a->type != GGUF_ARR) return memcmp(a->v.raw, b->v.raw, gguf_vtype_size(a->type)) == 0;
    if (a->elem != b->elem || a->n != b->n) return false;
    if (a->elem == GGUF_STR) {
        const meta_str *x = a->v.arr, *y = b->v.arr;
        for (uint64_t i = 0; i < a->n; i++)
            if (x[i].len != y[i].len || memcmp(x[i].s, y[i].s, x[i].len) != 0) return false;
        return true;
    }
    return a->n == 0 || memcmp(a->v.arr, b->v.arr, a->n * gguf_vtype_size(a->elem)) == 0;
}

/* Every value of tensor ti of m as F32 (malloc'd). */
static float *model_f32(const model *m, uint64_t ti) {
    const model_tensor *t = &m->tensors[ti];
    int64_t n = t->ne[0] * model_tensor_rows(t);
    float *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    slmc_err err = {0};
    ck_assert_msg(model_read_rows_f32(m, ti, 0, model_tensor_rows(t), v, &err) == 0, "%s", err.msg);
    return v;
}

/* Write a config.json text into dir. */
static void put_file(const char *dir, const char *name, const char *text) {
    char *p = join(dir, name);
    ck_assert_int_eq(write_bytes(p, text, strlen(text)), 0);
    free(p);
}

/* A tiny tensor to write with st_writer: its values are base + element index (or, with
 * row_valued, base + row index, so each row is recognisable after a permutation). */
typedef struct tiny_tensor {
    const char *name;
    int n_dims;
    int64_t shape[2];
} tiny_tensor;

/* Write tensors as one model.safetensors in dir, values from tensor_value(). */
static float tensor_value(int ti, int64_t row, int64_t col) { return (float)(ti * 100 + row) + (float)col / 64.0f; }

/* v as stored in `type` (F16/BF16 round to nearest). */
static float as_type(int type, float v) {
    uint8_t b[4];
    float back;
    row_from_f32(type, &v, b, 1);
    row_to_f32(type, b, &back, 1);
    return back;
}

static void write_tiny_st(const char *dir, const tiny_tensor *tt, int n, int type) {
    st_out_tensor outs[32] = {0};
    ck_assert_int_le(n, 32);
    for (int i = 0; i < n; i++) {
        memset(&outs[i], 0, sizeof outs[i]);
        outs[i].name = tt[i].name;
        outs[i].type = type;
        outs[i].n_dims = tt[i].n_dims;
        outs[i].shape[0] = tt[i].shape[0];
        outs[i].shape[1] = tt[i].shape[1];
    }
    st_writer w;
    slmc_err err = {0};
    ck_assert_msg(st_writer_open(&w, dir, outs, (uint64_t)n, HF_DEFAULT_SHARD_SIZE, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        int64_t rows = tt[i].n_dims == 1 ? 1 : tt[i].shape[0];
        int64_t cols = tt[i].n_dims == 1 ? tt[i].shape[0] : tt[i].shape[1];
        float row[64];
        uint8_t bytes[256];
        ck_assert_int_le(cols, 64);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) row[c] = tensor_value(i, r, c);
            row_from_f32(type, row, bytes, cols);
            CK_ASSERT_QUIET(st_writer_write(&w, bytes, (size_t)type_nbytes(type, cols), &err) == 0, "%s", err.msg);
        }
    }
    ck_assert_msg(st_writer_finish(&w, &err) == 0, "%s", err.msg);
}

/* A tiny llama: hidden 8, 2 heads of 4 (so q has 8 rows), 1 KV head (k/v have 4 rows), ffn 12,
 * vocab 16, one layer. */
static const char *TINY_LLAMA_CONFIG =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8,"
    " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 1, \"vocab_size\": 16, \"max_position_embeddings\": 32,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 500000.0, \"tie_word_embeddings\": false,"
    " \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}";

static const tiny_tensor TINY_LLAMA[] = {
    {"lm_head.weight", 2, {16, 8}},
    {"model.embed_tokens.weight", 2, {16, 8}},
    {"model.layers.0.input_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.mlp.down_proj.weight", 2, {8, 12}},
    {"model.layers.0.mlp.gate_proj.weight", 2, {12, 8}},
    {"model.layers.0.mlp.up_proj.weight", 2, {12, 8}},
    {"model.layers.0.post_attention_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.self_attn.k_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.o_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.q_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.v_proj.weight", 2, {4, 8}},
    {"model.norm.weight", 1, {8, 0}},
    {"model.rotary_emb.inv_freq", 1, {2, 0}}, /* skipped, as llama.cpp does */
};
#define N_TINY_LLAMA ((int)(sizeof TINY_LLAMA / sizeof TINY_LLAMA[0]))

/* A tiny qwen2 with q/k/v biases and tied embeddings (no lm_head). */
static const char *TINY_QWEN2_CONFIG =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 8,"
    " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 1, \"vocab_size\": 16, \"max_position_embeddings\": 64,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true,"
    " \"rope_scaling\": null}";

static const tiny_tensor TINY_QWEN2[] = {
    {"model.embed_tokens.weight", 2, {16, 8}},
    {"model.layers.0.input_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.self_attn.q_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.q_proj.bias", 1, {8, 0}},
    {"model.layers.0.self_attn.k_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.k_proj.bias", 1, {4, 0}},
    {"model.layers.0.self_attn.v_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.v_proj.bias", 1, {4, 0}},
    {"model.layers.0.self_attn.o_proj.weight", 2, {8, 8}},
    {"model.layers.0.post_attention_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.mlp.gate_proj.weight", 2, {12, 8}},
    {"model.layers.0.mlp.up_proj.weight", 2, {12, 8}},
    {"model.layers.0.mlp.down_proj.weight", 2, {8, 12}},
    {"model.norm.weight", 1, {8, 0}},
};
#define N_TINY_QWEN2 ((int)(sizeof TINY_QWEN2 / sizeof TINY_QWEN2[0]))

/* hf_open on dir must fail with a message containing every string in want[] (NULL-ended). */
static void expect_open_error(const char *dir, const char *const *want) {
    model m;
    slmc_err err = {0};
    ck_assert_int_eq(hf_open(&m, dir, &err), -1);
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want[i]);
}

/* Compare every tensor of two safetensors sets: same names, dtype, shape and bytes. */
static void expect_same_safetensors(const char *a_path, const char *b_path) {
    st_model a, b;
    slmc_err err = {0};
    ck_assert_msg(st_open(&a, a_path, &err) == 0, "%s", err.msg);
    ck_assert_msg(st_open(&b, b_path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.n_tensors, b.n_tensors);
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        int64_t j = st_find(&b, a.tensors[i].name);
        ck_assert_msg(j >= 0, "%s missing from %s", a.tensors[i].name, b_path);
        const st_tensor *x = &a.tensors[i], *y = &b.tensors[j];
        ck_assert_msg(x->type == y->type, "%s: type %s vs %s", x->name, type_name(x->type), type_name(y->type));
        ck_assert_int_eq(x->n_dims, y->n_dims);
        for (int d = 0; d < x->n_dims; d++) ck_assert_int_eq(x->shape[d], y->shape[d]);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0, "%s: bytes differ", x->name);
    }
    st_close(&a);
    st_close(&b);
}

/* Identical metadata: the same keys in the same order with the same values. */
static void expect_same_kv(const meta *a, const meta *b) {
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_str_eq(a->kv[i].key, b->kv[i].key);
        ck_assert_msg(kv_equal(&a->kv[i], &b->kv[i]), "%s differs", a->kv[i].key);
    }
}

/* ---- name mapping ----------------------------------------------------------------------- */

START_TEST(test_names) {
    static const char *pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
        {"model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight"},
        {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"},
        {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
        {"model.layers.12.self_attn.o_proj.weight", "blk.12.attn_output.weight"},
        {"model.layers.7.self_attn.q_proj.bias", "blk.7.attn_q.bias"},
        {"model.layers.7.self_attn.k_proj.bias", "blk.7.attn_k.bias"},
        {"model.layers.7.self_attn.v_proj.bias", "blk.7.attn_v.bias"},
        {"model.layers.31.post_attention_layernorm.weight", "blk.31.ffn_norm.weight"},
        {"model.layers.5.mlp.gate_proj.weight", "blk.5.ffn_gate.weight"},
        {"model.layers.5.mlp.up_proj.weight", "blk.5.ffn_up.weight"},
        {"model.layers.5.mlp.down_proj.weight", "blk.5.ffn_down.weight"},
    };
    const arch_desc *llama = arch_by_name("llama");
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char *g = hf_to_gguf_name(llama, pairs[i][0]);
        char *h = gguf_to_hf_name(llama, pairs[i][1]);
        ck_assert_ptr_nonnull(g);
        ck_assert_ptr_nonnull(h);
        ck_assert_str_eq(g, pairs[i][1]);
        ck_assert_str_eq(h, pairs[i][0]);
        free(g);
        free(h);
    }
    static const char *unknown_hf[] = {
        "model.rotary_emb.inv_freq", "model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.layers.01.mlp.up_proj.weight", "model.layers.-1.mlp.up_proj.weight",
        "model.layers..mlp.up_proj.weight", "model.layers.0.mlp.up_proj", "blk.0.attn_q.weight",
        "model.embed_tokens.weight.x", "",
    };
    for (size_t i = 0; i < sizeof unknown_hf / sizeof unknown_hf[0]; i++)
        ck_assert_msg(hf_to_gguf_name(llama, unknown_hf[i]) == NULL, "%s mapped", unknown_hf[i]);
    static const char *unknown_gguf[] = {"rope_freqs.weight", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight",
                                         "model.norm.weight", "blk.0.attn_q"};
    for (size_t i = 0; i < sizeof unknown_gguf / sizeof unknown_gguf[0]; i++)
        ck_assert_msg(gguf_to_hf_name(llama, unknown_gguf[i]) == NULL, "%s mapped", unknown_gguf[i]);
    ck_assert_ptr_null(hf_to_gguf_name(NULL, "model.norm.weight"));

    /* the other families' own names, both ways */
    static const char *family_pairs[][3] = {
        {"qwen3", "model.layers.2.self_attn.q_norm.weight", "blk.2.attn_q_norm.weight"},
        {"qwen3", "model.layers.2.self_attn.k_norm.weight", "blk.2.attn_k_norm.weight"},
        {"gemma", "model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"},
        {"gemma2", "model.layers.4.post_attention_layernorm.weight", "blk.4.post_attention_norm.weight"},
        {"gemma2", "model.layers.4.pre_feedforward_layernorm.weight", "blk.4.ffn_norm.weight"},
        {"gemma2", "model.layers.4.post_feedforward_layernorm.weight", "blk.4.post_ffw_norm.weight"},
        {"gemma3", "model.layers.5.self_attn.k_norm.weight", "blk.5.attn_k_norm.weight"},
        {"phi2", "model.layers.1.self_attn.dense.weight", "blk.1.attn_output.weight"},
        {"phi2", "model.layers.1.self_attn.dense.bias", "blk.1.attn_output.bias"},
        {"phi2", "model.layers.1.mlp.fc1.weight", "blk.1.ffn_up.weight"},
        {"phi2", "model.layers.1.mlp.fc2.bias", "blk.1.ffn_down.bias"},
        {"phi2", "model.final_layernorm.bias", "output_norm.bias"},
        {"phi2", "lm_head.bias", "output.bias"},
        {"phi3", "model.layers.0.self_attn.qkv_proj.weight", "blk.0.attn_qkv.weight"},
        {"phi3", "model.layers.0.mlp.gate_up_proj.weight", "blk.0.ffn_up.weight"},
        {"stablelm", "model.layers.3.post_attention_layernorm.bias", "blk.3.ffn_norm.bias"},
        {"stablelm", "model.norm.bias", "output_norm.bias"},
    };
    for (size_t i = 0; i < sizeof family_pairs / sizeof family_pairs[0]; i++) {
        const arch_desc *a = arch_by_name(family_pairs[i][0]);
        char *g = hf_to_gguf_name(a, family_pairs[i][1]), *h = gguf_to_hf_name(a, family_pairs[i][2]);
        ck_assert_msg(g && strcmp(g, family_pairs[i][2]) == 0, "%s: %s -> %s", a->name, family_pairs[i][1], g ? g : "NULL");
        ck_assert_msg(h && strcmp(h, family_pairs[i][1]) == 0, "%s: %s -> %s", a->name, family_pairs[i][2], h ? h : "NULL");
        free(g);
        free(h);
    }
    /* tensors the converter generates have no HF name; names of another family do not map */
    ck_assert_ptr_null(gguf_to_hf_name(arch_by_name("phi3"), "rope_factors_long.weight"));
    ck_assert_ptr_null(gguf_to_hf_name(arch_by_name("gemma"), "output.weight"));
    ck_assert_ptr_null(hf_to_gguf_name(arch_by_name("phi2"), "model.norm.weight"));
    ck_assert_ptr_null(hf_to_gguf_name(arch_by_name("gemma2"), "model.layers.0.self_attn.q_norm.weight"));
    ck_assert_ptr_null(hf_to_gguf_name(llama, "model.layers.0.self_attn.qkv_proj.weight"));
    ck_assert_ptr_null(hf_to_gguf_name(llama, "model.layers.0.self_attn.q_norm.weight"));
}
END_TEST

/* ---- the shared books-22m checkpoint ------------------------------------------------------ */

START_TEST(test_open_books) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    model m;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, dir, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.format, MODEL_HF);
    ck_assert_str_eq(m.path, dir);
    ck_assert_str_eq(m.cfg.arch, "llama");
    ck_assert_int_eq(m.cfg.n_embd, 256);
    ck_assert_int_eq(m.cfg.n_layer, 6);
    ck_assert_int_eq(m.cfg.n_head, 8);
    ck_assert_int_eq(m.cfg.n_head_kv, 4);
    ck_assert_int_eq(m.cfg.n_ff, 768);
    ck_assert_int_eq(m.cfg.n_vocab, 32000);
    ck_assert_int_eq(m.cfg.n_ctx_train, 256);
    ck_assert_int_eq(m.cfg.head_dim, 32);
    ck_assert_int_eq(m.cfg.n_rot, 32);
    ck_assert(!m.cfg.tied_output);
    ck_assert(m.cfg.norm_eps == 1e-5f);
    ck_assert(m.cfg.rope_freq_base == 10000.0f);
    ck_assert_uint_eq(m.n_tensors, 57); /* 6 * 9 + embedding, final norm, classifier */

    /* llama.cpp's listing order: embedding, each block, then the final norm and output. */
    ck_assert_str_eq(m.tensors[0].name, "token_embd.weight");
    static const char *block[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                  "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = 0; l < 6; l++)
        for (int k = 0; k < 9; k++) {
            char want[64];
            snprintf(want, sizeof want, "blk.%d.%s.weight", l, block[k]);
            ck_assert_str_eq(m.tensors[1 + l * 9 + k].name, want);
        }
    ck_assert_str_eq(m.tensors[55].name, "output_norm.weight");
    ck_assert_str_eq(m.tensors[56].name, "output.weight");

    /* Shapes in ne order, BF16 throughout (the norms too: the view keeps the source type),
     * and the permutation heads on q (n_head) and k (n_head_kv) only. */
    int64_t q = model_find(&m, "blk.2.attn_q.weight"), k = model_find(&m, "blk.2.attn_k.weight");
    int64_t emb = model_find(&m, "token_embd.weight"), norm = model_find(&m, "blk.0.ffn_norm.weight");
    int64_t down = model_find(&m, "blk.0.ffn_down.weight");
    ck_assert_int_eq(m.tensors[q].ne[0], 256);
    ck_assert_int_eq(m.tensors[q].ne[1], 256);
    ck_assert_int_eq(m.tensors[k].ne[0], 256);
    ck_assert_int_eq(m.tensors[k].ne[1], 128);
    ck_assert_int_eq(m.tensors[emb].ne[1], 32000);
    ck_assert_int_eq(m.tensors[down].ne[0], 768);
    ck_assert_int_eq(m.tensors[down].ne[1], 256);
    ck_assert_int_eq(m.tensors[norm].n_dims, 1);
    ck_assert_int_eq(m.tensors[norm].ne[0], 256);
    ck_assert_int_eq(m.tensors[norm].ne[1], 1);
    ck_assert_int_eq(m.tensors[q].qk_heads, 8);
    ck_assert_int_eq(m.tensors[k].qk_heads, 4);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        ck_assert_int_eq(m.tensors[i].type, GGML_TYPE_BF16);
        if (strstr(m.tensors[i].name, "attn_q.") == NULL && strstr(m.tensors[i].name, "attn_k.") == NULL)
            ck_assert_int_eq(m.tensors[i].qk_heads, 0);
    }

    /* Metadata in the converter's order, with the checkpoint's own values. */
    static const char *order[] = {
        "general.architecture", "general.name", "llama.block_count", "llama.context_length",
        "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
        "general.file_type", "llama.vocab_size", "llama.rope.dimension_count",
    };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) ck_assert_str_eq(m.kv.kv[i].key, order[i]);
    ck_assert_str_eq(meta_get_str(&m.kv, "general.name"), "hf-bf16");
    uint64_t v;
    ck_assert(meta_get_u64(&m.kv, "general.file_type", &v) && v == 32); /* MOSTLY_BF16 */
    ck_assert(meta_get_u64(&m.kv, "llama.vocab_size", &v) && v == 32000);
    ck_assert(meta_find(&m.kv, "llama.attention.key_length") == NULL); /* head_dim is the default */
    ck_assert(meta_find(&m.kv, "llama.rope.scaling.type") == NULL);
    uint64_t n_tokens = 0;
    ck_assert_ptr_nonnull(meta_get_arr(&m.kv, "tokenizer.ggml.tokens", GGUF_STR, &n_tokens));
    ck_assert_uint_eq(n_tokens, 32000);
    model_close(&m);

    /* The index file and model_open give the same view. */
    char *index = join(dir, "model.safetensors.index.json");
    ck_assert_msg(hf_open(&m, index, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 57);
    model_close(&m);
    ck_assert_msg(model_open(&m, dir, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.format, MODEL_HF);
    ck_assert_uint_eq(m.n_tensors, 57);
    model_close(&m);
    free(index);
    free(dir);
}
END_TEST

/* Against llama.cpp's own conversion of the same weights: the same tensors, shapes and values
 * (exactly: BF16 -> F32 -> BF16 is lossless), attn_q/attn_k included, which proves the row
 * permutation; and the same architecture metadata. */
START_TEST(test_books_vs_llama_cpp) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    char *ref_path = SHARED_OR_SKIP(BOOKS_REF);
    model m;
    gguf_file ref;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, dir, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&ref, ref_path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, ref.n_tensors);
    for (uint64_t i = 0; i < ref.n_tensors; i++) {
        const gguf_tensor_info *r = &ref.tensors[i];
        int64_t j = model_find(&m, r->name);
        ck_assert_msg(j >= 0, "%s missing", r->name);
        const model_tensor *t = &m.tensors[j];
        ck_assert_int_eq(t->n_dims, r->n_dims);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) ck_assert_int_eq(t->ne[d], r->ne[d]);
        /* The reference keeps 1-D tensors in F32 (llama.cpp's rule); matrices are BF16 in both. */
        ck_assert_int_eq(r->type, r->n_dims == 1 ? GGML_TYPE_F32 : GGML_TYPE_BF16);
        int64_t n = r->ne[0] * r->ne[1] * r->ne[2] * r->ne[3];
        float *want = malloc((size_t)n * sizeof *want);
        ck_assert_ptr_nonnull(want);
        row_to_f32(r->type, gguf_tensor_data(&ref, i), want, n);
        float *got = model_f32(&m, (uint64_t)j);
        for (int64_t e = 0; e < n; e++)
            if (memcmp(&got[e], &want[e], sizeof(float)) != 0)
                ck_abort_msg("%s element %lld: %g vs llama.cpp %g", r->name, (long long)e, got[e], want[e]);
        free(want);
        free(got);
    }
    /* Every llama.* key both files have agrees, in value and type. */
    int compared = 0;
    for (size_t i = 0; i < ref.kv.n; i++) {
        const meta_kv *r = &ref.kv.kv[i];
        if (strncmp(r->key, "llama.", 6) != 0) continue;
        const meta_kv *o = meta_find(&m.kv, r->key);
        if (!o) continue;
        if (strcmp(r->key, "llama.context_length") == 0) {
            /* The reference says 128: a quirk of the converter that made it (see
             * ../shared/README.md). The checkpoint's config.json says 256, and that is the
             * value the model was trained with, so ours is 256. */
            ck_assert_int_eq(meta_kv_i64(r), 128);
            ck_assert_int_eq(meta_kv_i64(o), 256);
            compared++;
            continue;
        }
        ck_assert_msg(kv_equal(r, o), "%s differs from llama.cpp", r->key);
        compared++;
    }
    ck_assert_int_ge(compared, 8);
    gguf_close(&ref);
    model_close(&m);
    free(ref_path);
    free(dir);
}
END_TEST

/* Compare config.json files: every key of the source that the model view maps has the same
 * value in the written one. */
static void expect_equivalent_config(const char *src_path, const char *out_path) {
    json_error_t jerr;
    json_t *a = json_load_file(src_path, JSON_REJECT_DUPLICATES, &jerr);
    json_t *b = json_load_file(out_path, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_ptr_nonnull(a);
    ck_assert_msg(b != NULL, "%s: %s", out_path, jerr.text);
    static const char *mapped[] = {
        "architectures", "model_type", "hidden_act", "hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
        "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "attention_bias",
        "mlp_bias", "tie_word_embeddings", "torch_dtype", "bos_token_id", "eos_token_id",
    };
    int compared = 0;
    for (size_t i = 0; i < sizeof mapped / sizeof mapped[0]; i++) {
        json_t *x = json_object_get(a, mapped[i]);
        if (!x) continue;
        json_t *y = json_object_get(b, mapped[i]);
        ck_assert_msg(y != NULL, "%s missing from %s", mapped[i], out_path);
        ck_assert_msg(json_equal(x, y), "%s differs", mapped[i]);
        compared++;
    }
    ck_assert_int_ge(compared, 15);
    json_decref(a);
    json_decref(b);
}

/* books-22m -> model -> hf_write -> identical tensor bytes and an equivalent config.json;
 * reopening gives identical metadata. Then via F32 and back: still identical bytes. */
START_TEST(test_books_roundtrip) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    char *tmp = tmpdir_make();
    ck_assert_ptr_nonnull(tmp);
    /* Same folder name as the source, so general.name (the folder name) matches too. */
    char *out = join(tmp, "hf-bf16");
    model m, back;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, dir, &err) == 0, "%s", err.msg);
    ck_assert_msg(hf_write(&m, out, -1, 30000000, NULL, &err) == 0, "%s", err.msg);
    expect_same_safetensors(dir, out);
    char *src_cfg = join(dir, "config.json"), *out_cfg = join(out, "config.json");
    expect_equivalent_config(src_cfg, out_cfg);
    /* The written text shows eps as people write it, not as f32's binary value. */
    size_t len;
    char *text = (char *)slurp(out_cfg, &len);
    ck_assert_ptr_nonnull(text);
    text = realloc(text, len + 1);
    text[len] = 0;
    ck_assert_msg(strstr(text, "\"rms_norm_eps\": 1e-5") || strstr(text, "\"rms_norm_eps\": 1e-05"), "%s", text);
    free(text);
    /* 30 MB shards: embedding + blocks + norm (26.6 MB), then the 16.4 MB classifier: two
     * shards with an index, as the source has. */
    char *shard2 = join(out, "model-00002-of-00002.safetensors"), *index = join(out, "model.safetensors.index.json");
    struct stat st;
    ck_assert_int_eq(stat(shard2, &st), 0);
    ck_assert_int_eq(stat(index, &st), 0);
    char *gen = join(out, "generation_config.json");
    ck_assert_int_eq(stat(gen, &st), 0);

    ck_assert_msg(hf_open(&back, out, &err) == 0, "%s", err.msg);
    expect_same_kv(&m.kv, &back.kv);
    model_close(&back);

    /* BF16 -> F32 -> BF16 is exact: the F32 copy holds the same values, the BF16 copy of it
     * the same bytes as the source. */
    char *out32 = join(tmp, "f32"), *out16 = join(tmp, "again");
    ck_assert_msg(hf_write(&m, out32, GGML_TYPE_F32, 0, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(hf_open(&back, out32, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(back.tensors[0].type, GGML_TYPE_F32);
    uint64_t ft;
    ck_assert(meta_get_u64(&back.kv, "general.file_type", &ft) && ft == 0);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        float *a = model_f32(&m, i), *b = model_f32(&back, i);
        ck_assert_msg(memcmp(a, b, m.tensors[i].nbytes * 2) == 0, "%s", m.tensors[i].name);
        free(a);
        free(b);
    }
    ck_assert_msg(hf_write(&back, out16, GGML_TYPE_BF16, 0, NULL, &err) == 0, "%s", err.msg);
    expect_same_safetensors(dir, out16);
    model_close(&back);

    model_close(&m);
    free(gen);
    free(shard2);
    free(index);
    free(src_cfg);
    free(out_cfg);
    free(out32);
    free(out16);
    free(out);
    tmpdir_remove(tmp);
    free(dir);
}
END_TEST

/* llama.cpp's BF16 GGUF -> Hugging Face: the permutation undone and the F32 norms narrowed to
 * BF16 give back exactly the original checkpoint's bytes. */
START_TEST(test_gguf_to_hf) {
    char *dir = SHARED_OR_SKIP(BOOKS);
    char *ref_path = SHARED_OR_SKIP(BOOKS_REF);
    char *tmp = tmpdir_make();
    char *out = join(tmp, "from-gguf");
    model m;
    slmc_err err = {0};
    ck_assert_msg(model_open(&m, ref_path, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(hf_write(&m, out, -1, 0, NULL, &err) == 0, "%s", err.msg);
    expect_same_safetensors(dir, out);
    model_close(&m);
    free(out);
    tmpdir_remove(tmp);
    free(ref_path);
    free(dir);
}
END_TEST

/* A quantized type the codec cannot decode (MXFP4: no kernels here) is refused before
 * anything is written, with a message naming the file, the tensor and its type. The view of
 * llama.cpp's Q4_K_M has one tensor relabelled MXFP4 (its bytes are never read: the check
 * comes first). */
START_TEST(test_write_undecodable_refused) {
    char *ref_path = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *tmp = tmpdir_make();
    char *out = join(tmp, "q");
    model m;
    slmc_err err = {0};
    ck_assert_msg(model_open(&m, ref_path, NULL, &err) == 0, "%s", err.msg);
    int64_t ti = model_find(&m, "blk.1.ffn_down.weight");
    ck_assert(ti >= 0 && !type_is_float(m.tensors[ti].type));
    model_tensor *t = &m.tensors[ti];
    ck_assert_int_eq(t->ne[0] % 256, 0);
    t->type = GGML_TYPE_MXFP4;
    t->nbytes = type_nbytes(t->type, t->ne[0] * model_tensor_rows(t));
    ck_assert_int_eq(hf_write(&m, out, -1, 0, NULL, &err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor blk.1.ffn_down.weight is MXFP4, a type slmc cannot dequantize yet",
             ref_path);
    ck_assert_str_eq(err.msg, want);
    struct stat st;
    ck_assert_int_ne(stat(out, &st), 0); /* nothing left behind */
    model_close(&m);
    free(out);
    tmpdir_remove(tmp);
    free(ref_path);
}
END_TEST

/* config.json's torch_dtype in folder dir. */
static char *config_dtype(const char *dir) {
    char *cfg = join(dir, "config.json");
    json_error_t jerr;
    json_t *o = json_load_file(cfg, 0, &jerr);
    ck_assert_msg(o != NULL, "%s: %s", cfg, jerr.text);
    const char *d = json_string_value(json_object_get(o, "torch_dtype"));
    char *r = strdup(d ? d : "");
    json_decref(o);
    free(cfg);
    return r;
}

/* Every tensor of `hf` (a view of the written folder, rows in llama.cpp's order on read) holds
 * the values of the same tensor of the quantized view `q` dequantized, rounded to out_type. */
static void expect_dequantized_values(const model *q, const model *hf, int out_type) {
    ck_assert_uint_eq(hf->n_tensors, q->n_tensors);
    for (uint64_t i = 0; i < q->n_tensors; i++) {
        int64_t j = model_find(hf, q->tensors[i].name);
        ck_assert_msg(j >= 0, "%s missing", q->tensors[i].name);
        ck_assert_msg(hf->tensors[j].type == out_type, "%s is %s", q->tensors[i].name, type_name(hf->tensors[j].type));
        int64_t n = q->tensors[i].ne[0] * model_tensor_rows(&q->tensors[i]);
        float *a = model_f32(q, i), *b = model_f32(hf, (uint64_t)j);
        for (int64_t k = 0; k < n; k++) a[k] = as_type(out_type, a[k]);
        ck_assert_msg(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s: values differ", q->tensors[i].name);
        free(a);
        free(b);
    }
}

/* llama.cpp's Q4_K_M -> Hugging Face folder: F32 by default, every value the dequantized one,
 * attn_q/attn_k rows back in HF order; HF -> GGUF F32 then equals the direct F32 conversion. */
START_TEST(test_quantized_gguf_to_hf) {
    char *q4 = SHARED_OR_SKIP("reference/books-22m-Q4_K_M.gguf");
    char *tmp = tmpdir_make();
    char *out = join(tmp, "hf"), *direct = join(tmp, "direct.gguf"), *via = join(tmp, "via-hf.gguf");
    char *out16 = join(tmp, "hf-bf16");
    model q, hf;
    slmc_err err = {0};
    ck_assert_msg(model_open(&q, q4, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(hf_write(&q, out, -1, 0, NULL, &err) == 0, "%s", err.msg);
    char *dtype = config_dtype(out);
    ck_assert_str_eq(dtype, "float32");
    free(dtype);
    ck_assert_msg(hf_open(&hf, out, &err) == 0, "%s", err.msg);
    expect_dequantized_values(&q, &hf, GGML_TYPE_F32);

    /* The stored HF rows themselves: q_proj row i is GGUF row qk_row_gguf_of_hf(i). */
    const char *perm[2] = {"blk.2.attn_q.weight", "blk.2.attn_k.weight"};
    for (int k = 0; k < 2; k++) {
        int64_t qi = model_find(&q, perm[k]), hi = model_find(&hf, perm[k]);
        ck_assert(qi >= 0 && hi >= 0);
        const model_tensor *ht = &hf.tensors[hi];
        int64_t rows = ht->ne[1], ne0 = ht->ne[0];
        int64_t heads = k == 0 ? q.cfg.n_head : q.cfg.n_head_kv;
        ck_assert_int_gt(ht->qk_heads, 0); /* stored in HF order */
        float *g = model_f32(&q, (uint64_t)qi);
        const float *stored = (const float *)ht->data;
        for (int64_t r = 0; r < rows; r++)
            CK_ASSERT_QUIET(memcmp(stored + r * ne0, g + qk_row_gguf_of_hf(r, rows, heads) * ne0, (size_t)ne0 * 4) == 0,
                          "%s: HF row %lld", perm[k], (long long)r);
        free(g);
    }

    /* HF -> GGUF F32 gives what GGUF -> GGUF F32 gives */
    ck_assert_msg(model_write_gguf(&q, direct, GGML_TYPE_F32, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_write_gguf(&hf, via, GGML_TYPE_F32, NULL, &err) == 0, "%s", err.msg);
    gguf_file a, b;
    ck_assert_msg(gguf_open(&a, direct, &err) == 0, "%s", err.msg);
    ck_assert_msg(gguf_open(&b, via, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.n_tensors, b.n_tensors);
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        ck_assert_str_eq(a.tensors[i].name, b.tensors[i].name);
        ck_assert_int_eq(a.tensors[i].type, b.tensors[i].type);
        ck_assert_uint_eq(a.tensors[i].nbytes, b.tensors[i].nbytes);
        ck_assert_msg(memcmp(gguf_tensor_data(&a, i), gguf_tensor_data(&b, i), a.tensors[i].nbytes) == 0,
                      "%s differs", a.tensors[i].name);
    }
    gguf_close(&a);
    gguf_close(&b);
    model_close(&hf);

    /* an explicit dtype: the dequantized values rounded to it */
    ck_assert_msg(hf_write(&q, out16, GGML_TYPE_BF16, 0, NULL, &err) == 0, "%s", err.msg);
    dtype = config_dtype(out16);
    ck_assert_str_eq(dtype, "bfloat16");
    free(dtype);
    ck_assert_msg(hf_open(&hf, out16, &err) == 0, "%s", err.msg);
    expect_dequantized_values(&q, &hf, GGML_TYPE_BF16);
    model_close(&hf);

    model_close(&q);
    free(out);
    free(out16);
    free(direct);
    free(via);
    tmpdir_remove(tmp);
    free(q4);
}
END_TEST

/* No ../shared needed: a synthetic llama quantized to Q8_0 here, then written as a Hugging
 * Face folder: F32, the dequantized values, the Q/K permutation undone. */
START_TEST(test_synthetic_q8_0_to_hf) {
    char *tmp = tmpdir_make();
    char *src = join(tmp, "tiny-hf"), *q8 = join(tmp, "tiny-Q8_0.gguf"), *out = join(tmp, "back-hf");
    slmc_err err = {0};
    synth_opts so;
    synth_opts_init(&so);
    so.shape = "tiny";
    ck_assert_msg(synth_write(&so, src, NULL, &err) == 0, "%s", err.msg);
    model m, q, hf;
    ck_assert_msg(model_open(&m, src, NULL, &err) == 0, "%s", err.msg);
    plan_opts po;
    plan_opts_init(&po, MIX_Q8_0);
    int *types = malloc(m.n_tensors * sizeof *types);
    ck_assert_msg(quant_plan(&m, &po, types, &err) == 0, "%s", err.msg);
    quant_target tg = {.path = q8, .types = types, .file_type = MIX_Q8_0};
    ck_assert_msg(quantize_model(&m, &tg, 1, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    free(types);
    model_close(&m);

    ck_assert_msg(model_open(&q, q8, NULL, &err) == 0, "%s", err.msg);
    int64_t qi = model_find(&q, "blk.0.attn_q.weight");
    ck_assert(qi >= 0 && q.tensors[qi].type == GGML_TYPE_Q8_0);
    ck_assert_msg(hf_write(&q, out, -1, 0, NULL, &err) == 0, "%s", err.msg);
    char *dtype = config_dtype(out);
    ck_assert_str_eq(dtype, "float32");
    free(dtype);
    ck_assert_msg(hf_open(&hf, out, &err) == 0, "%s", err.msg);
    expect_dequantized_values(&q, &hf, GGML_TYPE_F32); /* through the reader's permutation */
    /* and the decoded values are quant's kernel applied to the stored blocks */
    const model_tensor *t = &q.tensors[qi];
    int64_t n = t->ne[0] * model_tensor_rows(t);
    float *want = malloc((size_t)n * sizeof *want), *got = model_f32(&q, (uint64_t)qi);
    quant_get(GGML_TYPE_Q8_0)->dequantize(t->data, want, n);
    ck_assert(memcmp(want, got, (size_t)n * sizeof *want) == 0);
    free(want);
    free(got);
    model_close(&hf);
    model_close(&q);
    free(src);
    free(q8);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

static int progress_calls;
static uint64_t progress_last, progress_total;
static void on_progress(void *ud, uint64_t done, uint64_t total, const char *what) {
    (void)ud;
    ck_assert_ptr_nonnull(what);
    ck_assert_uint_ge(done, progress_last);
    progress_last = done;
    progress_total = total;
    progress_calls++;
}

/* Tiny llama: the q/k rows come out in llama.cpp's order, rope scaling and theta map, and
 * hf_write restores the source bytes (F16 source). */
START_TEST(test_tiny_llama) {
    char *tmp = tmpdir_make();
    char *src = join(tmp, "tiny-llama"), *out = join(tmp, "out");
    ck_assert_int_eq(mkdir(src, 0755), 0);
    put_file(src, "config.json", TINY_LLAMA_CONFIG);
    write_tiny_st(src, TINY_LLAMA, N_TINY_LLAMA, GGML_TYPE_F16);
    model m;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, src, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 12); /* inv_freq skipped */
    ck_assert_int_eq(m.cfg.head_dim, 4);
    ck_assert_str_eq(m.cfg.rope_scaling, "linear");
    ck_assert(m.cfg.rope_scaling_factor == 2.0f);
    ck_assert(m.cfg.rope_freq_base == 500000.0f);
    ck_assert(m.cfg.norm_eps == 1e-6f);
    uint64_t v;
    ck_assert(meta_get_u64(&m.kv, "general.file_type", &v) && v == 1); /* MOSTLY_F16 */

    /* q: 2 heads of 4 rows. GGUF row r holds HF row (interleaving each head's halves):
     * head 0: 0,2,1,3; head 1: 4,6,5,7. Row values are tensor_value(ti, hf_row, col). */
    static const int64_t q_rows[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    static const int64_t k_rows[4] = {0, 2, 1, 3};
    int64_t q = model_find(&m, "blk.0.attn_q.weight"), k = model_find(&m, "blk.0.attn_k.weight");
    ck_assert_int_eq(m.tensors[q].qk_heads, 2);
    ck_assert_int_eq(m.tensors[k].qk_heads, 1);
    float *qv = model_f32(&m, (uint64_t)q), *kv = model_f32(&m, (uint64_t)k);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++) ck_assert(qv[r * 8 + c] == as_type(GGML_TYPE_F16, tensor_value(9, q_rows[r], c)));
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 8; c++) ck_assert(kv[r * 8 + c] == as_type(GGML_TYPE_F16, tensor_value(7, k_rows[r], c)));
    free(qv);
    free(kv);

    slmc_progress prog = {on_progress, NULL};
    progress_calls = 0;
    progress_last = 0;
    ck_assert_msg(hf_write(&m, out, -1, 0, &prog, &err) == 0, "%s", err.msg);
    ck_assert_int_ge(progress_calls, 12);
    ck_assert_uint_eq(progress_last, progress_total);
    /* The source has inv_freq, which is not written back: compare the written tensors. */
    char *single = join(out, "model.safetensors");
    st_model a;
    ck_assert_msg(st_open(&a, single, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.n_tensors, 12);
    st_model b;
    ck_assert_msg(st_open(&b, src, &err) == 0, "%s", err.msg);
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        int64_t j = st_find(&b, a.tensors[i].name);
        ck_assert_int_ge(j, 0);
        ck_assert_int_eq(a.tensors[i].type, GGML_TYPE_F16);
        ck_assert_uint_eq(a.tensors[i].nbytes, b.tensors[j].nbytes);
        ck_assert_msg(memcmp(a.tensors[i].data, b.tensors[j].data, a.tensors[i].nbytes) == 0, "%s", a.tensors[i].name);
    }
    st_close(&a);
    st_close(&b);
    /* The config round trip: kv identical after config.json -> kv -> config.json -> kv. */
    model back;
    ck_assert_msg(hf_open(&back, out, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(back.kv.n, m.kv.n);
    for (size_t i = 0; i < m.kv.n; i++) {
        if (strcmp(m.kv.kv[i].key, "general.name") == 0) continue; /* the folder names differ */
        ck_assert_str_eq(back.kv.kv[i].key, m.kv.kv[i].key);
        ck_assert_msg(kv_equal(&back.kv.kv[i], &m.kv.kv[i]), "%s", m.kv.kv[i].key);
    }
    model_close(&back);
    char *cfg = join(out, "config.json");
    json_error_t jerr;
    json_t *j = json_load_file(cfg, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "rope_scaling"), "type")), "linear");
    ck_assert(json_real_value(json_object_get(json_object_get(j, "rope_scaling"), "factor")) == 2.0);
    ck_assert(json_real_value(json_object_get(j, "rope_theta")) == 500000.0);
    ck_assert(json_real_value(json_object_get(j, "rms_norm_eps")) == 1e-6);
    ck_assert_str_eq(json_string_value(json_object_get(j, "torch_dtype")), "float16");
    json_decref(j);
    free(cfg);
    model_close(&m);
    free(single);
    free(src);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

/* Tiny qwen2: biases mapped, no permutation, tied output, attention_bias written. */
START_TEST(test_tiny_qwen2) {
    char *tmp = tmpdir_make();
    char *src = join(tmp, "tiny-qwen2"), *out = join(tmp, "out");
    ck_assert_int_eq(mkdir(src, 0755), 0);
    put_file(src, "config.json", TINY_QWEN2_CONFIG);
    write_tiny_st(src, TINY_QWEN2, N_TINY_QWEN2, GGML_TYPE_BF16);
    model m;
    slmc_err err = {0};
    char *file = join(src, "model.safetensors");
    ck_assert_msg(hf_open(&m, file, &err) == 0, "%s", err.msg); /* a .safetensors file, config beside it */
    ck_assert_str_eq(m.cfg.arch, "qwen2");
    ck_assert(m.cfg.tied_output);
    ck_assert_int_lt(model_find(&m, "output.weight"), 0);
    ck_assert_uint_eq(m.n_tensors, 14);
    static const char *order[] = {"token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                                  "blk.0.attn_q.bias", "blk.0.attn_k.weight", "blk.0.attn_k.bias",
                                  "blk.0.attn_v.weight", "blk.0.attn_v.bias", "blk.0.attn_output.weight",
                                  "blk.0.ffn_norm.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
                                  "blk.0.ffn_down.weight", "output_norm.weight"};
    for (int i = 0; i < 14; i++) {
        ck_assert_str_eq(m.tensors[i].name, order[i]);
        ck_assert_int_eq(m.tensors[i].qk_heads, 0);
    }
    ck_assert(meta_find(&m.kv, "qwen2.rope.dimension_count") == NULL); /* llama.cpp writes none for qwen2 */
    float *qv = model_f32(&m, 2);
    for (int r = 0; r < 8; r++) ck_assert(qv[r * 8] == as_type(GGML_TYPE_BF16, tensor_value(2, r, 0))); /* rows as stored */
    free(qv);
    ck_assert_msg(hf_write(&m, out, -1, 0, NULL, &err) == 0, "%s", err.msg);
    expect_same_safetensors(src, out);
    char *cfg = join(out, "config.json");
    json_error_t jerr;
    json_t *j = json_load_file(cfg, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "architectures"), 0)), "Qwen2ForCausalLM");
    ck_assert(json_is_true(json_object_get(j, "attention_bias")));
    ck_assert(json_is_true(json_object_get(j, "tie_word_embeddings")));
    ck_assert(json_is_null(json_object_get(j, "rope_scaling")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "max_position_embeddings")), 64);
    json_decref(j);
    free(cfg);
    model_close(&m);
    free(file);
    free(src);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

/* ---- bad inputs ---------------------------------------------------------------------------- */

START_TEST(test_missing_config) {
    char *tmp = tmpdir_make();
    write_tiny_st(tmp, TINY_LLAMA, N_TINY_LLAMA, GGML_TYPE_F32);
    expect_open_error(tmp, (const char *[]){"config.json", NULL});
    char *file = join(tmp, "model.safetensors");
    expect_open_error(file, (const char *[]){"config.json", NULL});
    free(file);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_unsupported_arch) {
    char *tmp = tmpdir_make();
    write_tiny_st(tmp, TINY_LLAMA, N_TINY_LLAMA, GGML_TYPE_F32);
    put_file(tmp, "config.json", "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 8}");
    char want[1024];
    snprintf(want, sizeof want, "config.json: architecture GPT2LMHeadModel is not supported (%s)", arch_hf_class_names());
    expect_open_error(tmp, (const char *[]){want, "Gemma3ForCausalLM", NULL});
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_invalid_json) {
    char *tmp = tmpdir_make();
    write_tiny_st(tmp, TINY_LLAMA, N_TINY_LLAMA, GGML_TYPE_F32);
    put_file(tmp, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8,,}");
    expect_open_error(tmp, (const char *[]){"config.json: invalid JSON at offset", NULL});
    /* Duplicate keys are refused too. */
    put_file(tmp, "config.json", "{\"hidden_size\": 8, \"hidden_size\": 16}");
    expect_open_error(tmp, (const char *[]){"config.json: invalid JSON", "hidden_size", NULL});
    tmpdir_remove(tmp);
}
END_TEST

/* Bad numbers: each message names config.json and the field. */
START_TEST(test_bad_numbers) {
    static const struct { const char *from, *to, *field; } cases[] = {
        {"\"hidden_size\": 8", "\"hidden_size\": 0", "hidden_size"},
        {"\"hidden_size\": 8", "\"hidden_size\": 7", "hidden_size"},        /* 2 heads do not divide 7 */
        {"\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3", "num_key_value_heads"},
        {"\"num_hidden_layers\": 1", "\"num_hidden_layers\": -2", "num_hidden_layers"},
        {"\"vocab_size\": 16", "\"vocab_size\": \"16\"", "vocab_size"},
        {"\"max_position_embeddings\": 32, ", "", "max_position_embeddings"},
        {"\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": -1.0", "rms_norm_eps"},
        {"\"factor\": 2.0", "\"factor\": 0", "rope_scaling.factor"},
        {"\"type\": \"linear\"", "\"type\": \"dynamic\"", "rope_scaling.type"},
        {"\"model_type\": \"llama\"", "\"model_type\": \"qwen2\"", "model_type"},
        {"\"hidden_size\": 8", "\"hidden_size\": 8, \"mlp_bias\": true", "mlp_bias"},
    };
    char *tmp = tmpdir_make();
    write_tiny_st(tmp, TINY_LLAMA, N_TINY_LLAMA, GGML_TYPE_F32);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cfg[1024];
        const char *at = strstr(TINY_LLAMA_CONFIG, cases[i].from);
        ck_assert_ptr_nonnull(at);
        snprintf(cfg, sizeof cfg, "%.*s%s%s", (int)(at - TINY_LLAMA_CONFIG), TINY_LLAMA_CONFIG, cases[i].to,
                 at + strlen(cases[i].from));
        put_file(tmp, "config.json", cfg);
        expect_open_error(tmp, (const char *[]){"config.json: ", cases[i].field, NULL});
    }
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_missing_tensor) {
    char *tmp = tmpdir_make();
    put_file(tmp, "config.json", TINY_LLAMA_CONFIG);
    tiny_tensor t[N_TINY_LLAMA];
    int n = 0;
    for (int i = 0; i < N_TINY_LLAMA; i++)
        if (strcmp(TINY_LLAMA[i].name, "model.layers.0.mlp.up_proj.weight") != 0) t[n++] = TINY_LLAMA[i];
    write_tiny_st(tmp, t, n, GGML_TYPE_F32);
    expect_open_error(tmp, (const char *[]){"missing tensor", "model.layers.0.mlp.up_proj.weight", NULL});
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_shape_mismatch) {
    char *tmp = tmpdir_make();
    put_file(tmp, "config.json", TINY_LLAMA_CONFIG);
    tiny_tensor t[N_TINY_LLAMA];
    memcpy(t, TINY_LLAMA, sizeof t);
    for (int i = 0; i < N_TINY_LLAMA; i++)
        if (strcmp(t[i].name, "model.layers.0.self_attn.q_proj.weight") == 0) t[i].shape[0] = 4;
    write_tiny_st(tmp, t, N_TINY_LLAMA, GGML_TYPE_F32);
    expect_open_error(tmp, (const char *[]){"tensor model.layers.0.self_attn.q_proj.weight has shape [4, 8], "
                                            "expected [8, 8]", NULL});
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_unknown_tensor) {
    char *tmp = tmpdir_make();
    put_file(tmp, "config.json", TINY_LLAMA_CONFIG);
    tiny_tensor t[N_TINY_LLAMA + 1];
    memcpy(t, TINY_LLAMA, sizeof TINY_LLAMA);
    t[N_TINY_LLAMA] = (tiny_tensor){"model.layers.0.mlp.extra.weight", 1, {8, 0}};
    write_tiny_st(tmp, t, N_TINY_LLAMA + 1, GGML_TYPE_F32);
    expect_open_error(tmp, (const char *[]){"tensor model.layers.0.mlp.extra.weight has no GGUF name", NULL});
    /* A layer past num_hidden_layers. */
    t[N_TINY_LLAMA] = (tiny_tensor){"model.layers.1.input_layernorm.weight", 1, {8, 0}};
    char *f = join(tmp, "model.safetensors");
    remove(f);
    free(f);
    write_tiny_st(tmp, t, N_TINY_LLAMA + 1, GGML_TYPE_F32);
    expect_open_error(tmp, (const char *[]){"model.layers.1.input_layernorm.weight", "num_hidden_layers", NULL});
    tmpdir_remove(tmp);
}
END_TEST

/* ---- the model families --------------------------------------------------------------------- */

static const char *const FAMILY_DIRS[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "stablelm"};
#define N_FAMILY_DIRS ((int)(sizeof FAMILY_DIRS / sizeof FAMILY_DIRS[0]))

/* tests/data/configs/<family>/config.json as text (malloc'd), or NULL when the test does not run
 * from the project root. */
static char *family_config(const char *family) {
    char path[128];
    snprintf(path, sizeof path, "tests/data/configs/%s/config.json", family);
    size_t len;
    return (char *)slurp(path, &len);
}

/* One edit of a family's test config and the message it must give (naming config.json). */
static const struct { const char *family, *from, *to, *needle; } CONFIG_ERRORS[] = {
    /* a field the converter needs */
    {"llama", "\"hidden_size\": 256,\n", "", "missing field \"hidden_size\""},
    {"qwen2", "\"vocab_size\": 320,\n", "", "missing field \"vocab_size\""},
    {"qwen3", "\"num_hidden_layers\": 2,\n", "", "missing field \"num_hidden_layers\""},
    {"gemma", "\"head_dim\": 64,\n", "", "missing field \"head_dim\""},
    {"gemma", "\"rms_norm_eps\": 1e-06,\n", "", "missing field \"rms_norm_eps\""},
    {"gemma2", "\"attn_logit_softcapping\": 50.0,\n", "", "missing field \"attn_logit_softcapping\""},
    {"gemma2", "\"sliding_window\": 32,\n", "", "missing field \"sliding_window\""},
    {"gemma2", "\"query_pre_attn_scalar\": 64,\n", "", "missing field \"query_pre_attn_scalar\""},
    {"gemma3", "\"sliding_window\": 32,\n", "", "missing field \"sliding_window\""},
    {"phi2", "\"partial_rotary_factor\": 0.5,\n", "", "missing field \"partial_rotary_factor\""},
    {"phi2", "\"layer_norm_eps\": 1e-05,\n", "", "missing field \"layer_norm_eps\""},
    {"phi3", "\"original_max_position_embeddings\": 64,\n", "", "missing field \"original_max_position_embeddings\""},
    {"phi3", "\"rms_norm_eps\": 1e-05,\n", "", "missing field \"rms_norm_eps\""},
    {"stablelm", "\"partial_rotary_factor\": 0.25,\n", "", "missing field \"partial_rotary_factor\""},
    {"stablelm", "\"layer_norm_eps\": 1e-05,\n", "", "missing field \"layer_norm_eps\""},
    /* a rope_scaling type the family's converter does not know */
    {"llama", "\"rope_type\": \"llama3\"", "\"rope_type\": \"dynamic\"", "\"rope_scaling.rope_type\" is \"dynamic\""},
    {"qwen2", "\"rope_theta\": 1000000.0,", "\"rope_theta\": 1000000.0, \"rope_scaling\": {\"rope_type\": \"llama3\"},",
     "\"rope_scaling.rope_type\" is \"llama3\": not supported for qwen2"},
    {"qwen3", "\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"longrope\"}", "not supported for qwen3"},
    {"gemma", "\"rope_theta\": 10000.0,", "\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2},",
     "not supported for gemma"},
    {"gemma3", "\"rope_type\": \"linear\"", "\"rope_type\": \"yarn\"", "\"rope_scaling.rope_type\" is \"yarn\""},
    {"phi2", "\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}", "not supported for phi2"},
    {"phi3", "\"type\": \"longrope\"", "\"type\": \"dynamic\"", "\"rope_scaling.type\" is \"dynamic\""},
    {"stablelm", "\"rope_theta\": 10000,", "\"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2},",
     "not supported for stablelm"},
    /* another family's model_type */
    {"llama", "\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"", "\"model_type\" is \"gpt2\""},
    {"qwen2", "\"model_type\": \"qwen2\"", "\"model_type\": \"qwen3\"", "\"model_type\" is \"qwen3\""},
    {"qwen3", "\"model_type\": \"qwen3\"", "\"model_type\": \"qwen2\"", "\"model_type\" is \"qwen2\""},
    {"gemma", "\"model_type\": \"gemma\"", "\"model_type\": \"gemma2\"", "\"model_type\" is \"gemma2\""},
    {"gemma2", "\"model_type\": \"gemma2\"", "\"model_type\": \"gemma\"", "\"model_type\" is \"gemma\""},
    {"gemma3", "\"model_type\": \"gemma3_text\"", "\"model_type\": \"gemma3\"", "\"model_type\" is \"gemma3\""},
    {"phi2", "\"model_type\": \"phi\"", "\"model_type\": \"phi3\"", "\"model_type\" is \"phi3\""},
    {"phi3", "\"model_type\": \"phi3\"", "\"model_type\": \"phi\"", "\"model_type\" is \"phi\""},
    {"stablelm", "\"model_type\": \"stablelm\"", "\"model_type\": \"stablelm_epoch\"", "\"model_type\" is \"stablelm_epoch\""},
    /* another activation */
    {"llama", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "\"hidden_act\" is \"gelu\""},
    {"qwen3", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu\"", "\"hidden_act\" is \"relu\""},
    {"gemma", "\"hidden_activation\": \"gelu_pytorch_tanh\"", "\"hidden_activation\": \"silu\"", "\"hidden_activation\" is \"silu\""},
    {"gemma3", "\"hidden_activation\": \"gelu_pytorch_tanh\"", "\"hidden_activation\": \"relu\"", "\"hidden_activation\" is \"relu\""},
    {"phi2", "\"hidden_act\": \"gelu_new\"", "\"hidden_act\": \"silu\"", "\"hidden_act\" is \"silu\""},
    {"phi3", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "\"hidden_act\" is \"gelu\""},
    {"stablelm", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "\"hidden_act\" is \"gelu\""},
    /* values llama.cpp's graph for the family cannot follow */
    {"llama", "\"original_max_position_embeddings\": 8192", "\"original_max_position_embeddings\": 4096",
     "\"rope_scaling.original_max_position_embeddings\" is 4096"},
    {"gemma", "\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": false", "tie_word_embeddings"},
    {"gemma2", "\"query_pre_attn_scalar\": 64", "\"query_pre_attn_scalar\": 256", "\"query_pre_attn_scalar\" is 256"},
    {"gemma3", "\"sliding_window_pattern\": 6", "\"sliding_window_pattern\": 4", "\"sliding_window_pattern\" is 4"},
    {"gemma3", "\"final_logit_softcapping\": null", "\"final_logit_softcapping\": 30.0", "final_logit_softcapping"},
    {"phi2", "\"qk_layernorm\": false", "\"qk_layernorm\": true", "\"qk_layernorm\" is true"},
    {"phi2", "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "tie_word_embeddings"},
    {"stablelm", "\"use_parallel_residual\": false", "\"use_parallel_residual\": true", "\"use_parallel_residual\" is true"},
    {"stablelm", "\"qk_layernorm\": false", "\"qk_layernorm\": true", "\"qk_layernorm\" is true"},
};

/* Each edit of a family config is refused by hf_open and by synth (nothing written), with one
 * message naming config.json and the field. */
START_TEST(test_family_config_errors) {
    char *text = family_config(CONFIG_ERRORS[_i].family);
    if (!text) SKIP_TEST("tests/data/configs not found (run from the project root)");
    const char *at = strstr(text, CONFIG_ERRORS[_i].from);
    ck_assert_msg(at != NULL, "%s config lacks %s", CONFIG_ERRORS[_i].family, CONFIG_ERRORS[_i].from);
    size_t len = strlen(text) + strlen(CONFIG_ERRORS[_i].to) + 1;
    char *cfg = malloc(len);
    snprintf(cfg, len, "%.*s%s%s", (int)(at - text), text, CONFIG_ERRORS[_i].to, at + strlen(CONFIG_ERRORS[_i].from));
    char *tmp = tmpdir_make();
    put_file(tmp, "config.json", cfg);
    expect_open_error(tmp, (const char *[]){"config.json: ", CONFIG_ERRORS[_i].needle, NULL});
    model m;
    slmc_err err = {0};
    ck_assert_int_eq(hf_open(&m, tmp, &err), -1);
    ck_assert_msg(strchr(err.msg, '\n') == NULL, "%s", err.msg);
    /* synth reads config.json the same way and writes nothing */
    char *cfg_path = join(tmp, "config.json"), *out = join(tmp, "out");
    synth_opts so;
    synth_opts_init(&so);
    so.config = cfg_path;
    ck_assert_int_eq(synth_write(&so, out, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, CONFIG_ERRORS[_i].needle), "synth: %s", err.msg);
    struct stat st;
    ck_assert_int_ne(stat(out, &st), 0);
    free(cfg_path);
    free(out);
    tmpdir_remove(tmp);
    free(cfg);
    free(text);
}
END_TEST

static double kv_num(const meta *kv, const char *key) {
    const meta_kv *e = meta_find(kv, key);
    ck_assert_msg(e != NULL, "%s missing", key);
    return e->type == GGUF_F32 ? (double)*(const float *)e->v.raw : (double)meta_kv_i64(e);
}

/* The keys and tensors llama.cpp's converter makes for each test config. */
static void expect_family_gguf(const char *family, const model *g) {
    const meta *kv = &g->kv;
    char key[128];
    const arch_desc *a = arch_by_name(family);
    snprintf(key, sizeof key, "%s.attention.layer_norm_%sepsilon", family, a->norm == NORM_LAYER ? "" : "rms_");
    ck_assert_msg(meta_find(kv, key), "%s missing", key);
    snprintf(key, sizeof key, "%s.attention.layer_norm_%sepsilon", family, a->norm == NORM_LAYER ? "rms_" : "");
    ck_assert_msg(!meta_find(kv, key), "%s present", key);
    for (uint64_t i = 0; i < g->n_tensors; i++) /* 1-D tensors are F32 in GGUF */
        if (g->tensors[i].n_dims == 1) ck_assert_int_eq(g->tensors[i].type, GGML_TYPE_F32);
    if (strcmp(family, "llama") == 0) {
        ck_assert(!meta_find(kv, "llama.rope.scaling.type")); /* llama3: the factors only */
        int64_t f = model_find(g, "rope_freqs.weight");
        ck_assert(f >= 0 && g->tensors[f].ne[0] == 32 && g->tensors[f].type == GGML_TYPE_F32);
        const float *v = (const float *)g->tensors[f].data;
        ck_assert(v[0] == 1.0f && v[31] == 8.0f);
        ck_assert(g->cfg.tied_output);
    } else if (strcmp(family, "qwen3") == 0) {
        ck_assert_int_eq((int64_t)kv_num(kv, "qwen3.attention.key_length"), 128);
        ck_assert(!meta_find(kv, "qwen3.rope.dimension_count"));
        ck_assert(model_find(g, "blk.1.attn_k_norm.weight") >= 0 && model_find(g, "blk.0.attn_q.bias") < 0);
    } else if (strcmp(family, "gemma") == 0) {
        ck_assert(!meta_find(kv, "gemma.rope.freq_base")); /* GemmaModel writes none: 10000 */
        ck_assert_int_eq((int64_t)kv_num(kv, "gemma.attention.key_length"), 64);
        ck_assert(model_find(g, "output.weight") < 0);
    } else if (strcmp(family, "gemma2") == 0) {
        ck_assert(kv_num(kv, "gemma2.attn_logit_softcapping") == 50.0);
        ck_assert(kv_num(kv, "gemma2.final_logit_softcapping") == 30.0);
        ck_assert(kv_num(kv, "gemma2.attention.sliding_window") == 32.0);
        ck_assert(model_find(g, "blk.25.post_ffw_norm.weight") >= 0);
        ck_assert(g->cfg.n_swa == 32 && g->cfg.attn_softcap == 50.0f && g->cfg.final_softcap == 30.0f);
    } else if (strcmp(family, "gemma3") == 0) {
        ck_assert(kv_num(kv, "gemma3.attention.sliding_window") == 32.0);
        ck_assert_str_eq(meta_get_str(kv, "gemma3.rope.scaling.type"), "linear");
        ck_assert(kv_num(kv, "gemma3.rope.scaling.factor") == 8.0);
        ck_assert(kv_num(kv, "gemma3.rope.freq_base") == 1e6);
        ck_assert(!meta_find(kv, "gemma3.rope.freq_base_swa")); /* 10000, llama.cpp's own value */
        ck_assert(g->cfg.rope_freq_base_swa == 10000.0f);
    } else if (strcmp(family, "phi2") == 0) {
        ck_assert_int_eq((int64_t)kv_num(kv, "phi2.rope.dimension_count"), 32); /* 0.5 of 64 */
        ck_assert(model_find(g, "output.bias") >= 0 && model_find(g, "blk.0.ffn_up.bias") >= 0);
        ck_assert(g->cfg.n_rot == 32);
    } else if (strcmp(family, "phi3") == 0) {
        ck_assert_int_eq((int64_t)kv_num(kv, "phi3.rope.scaling.original_context_length"), 64);
        ck_assert(kv_num(kv, "phi3.rope.scaling.attn_factor") == (double)(float)sqrt(1.0 + log(4.0) / log(64.0)));
        ck_assert(kv_num(kv, "phi3.attention.sliding_window") == 32.0);
        ck_assert(!meta_find(kv, "phi3.rope.scaling.type"));
        int64_t fl = model_find(g, "rope_factors_long.weight"), fs = model_find(g, "rope_factors_short.weight");
        ck_assert(fl >= 0 && fs >= 0 && g->tensors[fl].ne[0] == 32);
        for (int i = 0; i < 32; i++) {
            ck_assert(((const float *)g->tensors[fl].data)[i] == (float)(1.0 + 0.05 * i) ||
                      fabs(((const float *)g->tensors[fl].data)[i] - (1.0 + 0.05 * i)) < 1e-6);
            ck_assert(fabs(((const float *)g->tensors[fs].data)[i] - (1.0 + 0.01 * i)) < 1e-6);
        }
        ck_assert(g->cfg.rope_attn_factor == (float)sqrt(1.0 + log(4.0) / log(64.0)));
    } else if (strcmp(family, "stablelm") == 0) {
        ck_assert_int_eq((int64_t)kv_num(kv, "stablelm.rope.dimension_count"), 16); /* int(0.25 * 64) */
        bool par = true;
        ck_assert(meta_get_bool(kv, "stablelm.use_parallel_residual", &par) && !par);
        ck_assert(model_find(g, "blk.1.attn_v.bias") >= 0 && model_find(g, "blk.1.ffn_norm.bias") >= 0);
    }
}

/* Byte equality of two files. */
static bool same_bytes(const char *a, const char *b) {
    size_t la, lb;
    uint8_t *x = slurp(a, &la), *y = slurp(b, &lb);
    bool same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Every family: synth -> HF view -> GGUF -> HF (the same safetensors bytes) -> GGUF (the same
 * file), with the family's keys and tensors in the GGUF. */
START_TEST(test_family_roundtrip) {
    const char *family = FAMILY_DIRS[_i];
    char cfg_path[128];
    snprintf(cfg_path, sizeof cfg_path, "tests/data/configs/%s/config.json", family);
    struct stat st;
    if (stat(cfg_path, &st) != 0) SKIP_TEST("%s not found (run from the project root)", cfg_path);
    char *tmp = tmpdir_make();
    char *da = join(tmp, "a"), *db = join(tmp, "b");
    ck_assert_int_eq(mkdir(da, 0755), 0);
    ck_assert_int_eq(mkdir(db, 0755), 0);
    /* same folder names, so general.name agrees */
    char *src = join(da, "model"), *back = join(db, "model"), *g1 = join(tmp, "1.gguf"), *g2 = join(tmp, "2.gguf");
    slmc_err err = {0};
    synth_opts so;
    synth_opts_init(&so);
    so.config = cfg_path;
    so.dtype = _i % 2 ? GGML_TYPE_F16 : GGML_TYPE_BF16;
    ck_assert_msg(synth_write(&so, src, NULL, &err) == 0, "%s", err.msg);
    model m, g, b;
    ck_assert_msg(hf_open(&m, src, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(m.cfg.arch, family);
    ck_assert_msg(model_write_gguf(&m, g1, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&g, g1, NULL, &err) == 0, "%s", err.msg);
    expect_family_gguf(family, &g);
    /* the view from HF and from its GGUF agree on every tensor value */
    ck_assert_uint_eq(g.n_tensors, m.n_tensors);
    for (uint64_t i = 0; i < m.n_tensors; i++) {
        int64_t j = model_find(&g, m.tensors[i].name);
        ck_assert_msg(j >= 0, "%s", m.tensors[i].name);
        float *x = model_f32(&m, i), *y = model_f32(&g, (uint64_t)j);
        ck_assert_msg(memcmp(x, y, (size_t)(m.tensors[i].ne[0] * model_tensor_rows(&m.tensors[i])) * 4) == 0, "%s",
                      m.tensors[i].name);
        free(x);
        free(y);
    }
    ck_assert_msg(hf_write(&g, back, -1, 0, NULL, &err) == 0, "%s", err.msg);
    expect_same_safetensors(src, back);
    ck_assert_msg(hf_open(&b, back, &err) == 0, "%s", err.msg);
    /* the same metadata (the tokenizer reader may set its keys in another order from the files
     * hf_write made; the GGUF writer puts them in one order) */
    ck_assert_uint_eq(m.kv.n, b.kv.n);
    for (size_t i = 0; i < m.kv.n; i++) {
        const meta_kv *o = meta_find(&b.kv, m.kv.kv[i].key);
        ck_assert_msg(o && kv_equal(&m.kv.kv[i], o), "%s differs", m.kv.kv[i].key);
    }
    ck_assert_msg(model_write_gguf(&b, g2, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(same_bytes(g1, g2), "%s: GGUF -> HF -> GGUF changed the file", family);
    /* the written config.json reads back to the same model config */
    ck_assert(memcmp(&b.cfg, &m.cfg, sizeof b.cfg) == 0);
    model_close(&b);
    model_close(&g);
    model_close(&m);
    free(src); free(back); free(g1); free(g2); free(da); free(db);
    tmpdir_remove(tmp);
}
END_TEST

/* Llama 3's rope factors exactly as llama.cpp's converter computes them in f32 (Llama 3.2 1B:
 * head_dim 64, theta 500000, factor 32, 1, 4, 8192), emulated op by op in Python with each
 * result rounded to f32. */
START_TEST(test_llama3_factors) {
    static const uint32_t want[32] = {
        0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000,
        0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3fd35ec2,
        0x4052b46f, 0x411aaaee, 0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000,
        0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000, 0x42000000,
    };
    float got[32];
    hf_llama3_rope_factors(got, 64, 500000.0f, 32.0, 1.0, 4.0, 8192.0);
    for (int i = 0; i < 32; i++) {
        uint32_t bits;
        memcpy(&bits, &got[i], 4);
        ck_assert_msg(bits == want[i], "factor %d: %08x, llama.cpp %08x", i, bits, want[i]);
        /* and the smooth band is HF's formula: 1 / ((1 - s) / factor + s) */
        double freq = pow(500000.0, -(2.0 * i) / 64.0), wl = 2 * M_PI / freq;
        if (wl >= 2048 && wl <= 8192) {
            double sm = (8192 / wl - 1.0) / 3.0;
            ck_assert(fabs(got[i] - 1.0 / ((1 - sm) / 32 + sm)) < 1e-4 * got[i]);
        }
    }
}
END_TEST

/* Gemma's norms: HF stores w, GGUF 1 + w computed in the checkpoint's dtype (BF16 rounding, as
 * torch's data + 1 does), then F32; lm_head copies are skipped. */
static const char *TINY_GEMMA_CONFIG =
    "{\"architectures\": [\"GemmaForCausalLM\"], \"model_type\": \"gemma\", \"hidden_size\": 8,"
    " \"intermediate_size\": 12, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"num_key_value_heads\": 1, \"head_dim\": 4, \"vocab_size\": 16, \"max_position_embeddings\": 32,"
    " \"rms_norm_eps\": 1e-06}";

static const tiny_tensor TINY_GEMMA[] = {
    {"lm_head.weight", 2, {16, 8}}, /* skipped: Gemma ties its output */
    {"model.embed_tokens.weight", 2, {16, 8}},
    {"model.layers.0.input_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.mlp.down_proj.weight", 2, {8, 12}},
    {"model.layers.0.mlp.gate_proj.weight", 2, {12, 8}},
    {"model.layers.0.mlp.up_proj.weight", 2, {12, 8}},
    {"model.layers.0.post_attention_layernorm.weight", 1, {8, 0}},
    {"model.layers.0.self_attn.k_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.o_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.q_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.v_proj.weight", 2, {4, 8}},
    {"model.norm.weight", 1, {8, 0}},
};

START_TEST(test_gemma_plus_one) {
    char *tmp = tmpdir_make();
    char *src = join(tmp, "g"), *gg = join(tmp, "g.gguf");
    ck_assert_int_eq(mkdir(src, 0755), 0);
    put_file(src, "config.json", TINY_GEMMA_CONFIG);
    write_tiny_st(src, TINY_GEMMA, (int)(sizeof TINY_GEMMA / sizeof TINY_GEMMA[0]), GGML_TYPE_BF16);
    model m, g;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, src, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 11); /* 9 per layer, token_embd, output_norm: no output.weight */
    ck_assert(m.cfg.tied_output && model_find(&m, "output.weight") < 0);
    ck_assert_msg(model_write_gguf(&m, gg, -1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(&g, gg, NULL, &err) == 0, "%s", err.msg);
    static const struct { const char *gguf; int ti; } norms[] = {
        {"blk.0.attn_norm.weight", 2}, {"blk.0.ffn_norm.weight", 6}, {"output_norm.weight", 11}};
    for (int k = 0; k < 3; k++) {
        int64_t i = model_find(&m, norms[k].gguf), j = model_find(&g, norms[k].gguf);
        ck_assert(i >= 0 && j >= 0);
        ck_assert_int_eq(m.tensors[i].type, GGML_TYPE_BF16); /* the view keeps the dtype */
        ck_assert_int_eq(g.tensors[j].type, GGML_TYPE_F32);
        float *v = model_f32(&m, (uint64_t)i), *f = model_f32(&g, (uint64_t)j);
        for (int c = 0; c < 8; c++) {
            float w = as_type(GGML_TYPE_BF16, tensor_value(norms[k].ti, 0, c)); /* values 200..1100: 1 + w rounds */
            float want = as_type(GGML_TYPE_BF16, w + 1.0f);
            CK_ASSERT_QUIET(v[c] == want && f[c] == want, "%s[%d]: %g, %g, want bf16(1 + %g) = %g", norms[k].gguf, c, v[c],
                          f[c], w, want);
        }
        free(v);
        free(f);
    }
    /* other tensors are untouched */
    float *emb = model_f32(&m, (uint64_t)model_find(&m, "token_embd.weight"));
    ck_assert(emb[9] == as_type(GGML_TYPE_BF16, tensor_value(1, 1, 1)));
    free(emb);
    model_close(&g);
    model_close(&m);
    free(src);
    free(gg);
    tmpdir_remove(tmp);
}
END_TEST

/* A llama with q/k/v biases (attention_bias): llama.cpp's converter permutes q_proj.bias and
 * k_proj.bias like the rows of their weights; writing HF puts them back. */
START_TEST(test_llama_biases) {
    char *tmp = tmpdir_make();
    char *src = join(tmp, "b"), *out = join(tmp, "out");
    ck_assert_int_eq(mkdir(src, 0755), 0);
    char cfg[1024];
    const char *at = strstr(TINY_LLAMA_CONFIG, "\"tie_word_embeddings\"");
    snprintf(cfg, sizeof cfg, "%.*s\"attention_bias\": true, %s", (int)(at - TINY_LLAMA_CONFIG), TINY_LLAMA_CONFIG, at);
    put_file(src, "config.json", cfg);
    tiny_tensor t[N_TINY_LLAMA + 3];
    memcpy(t, TINY_LLAMA, sizeof TINY_LLAMA);
    t[N_TINY_LLAMA] = (tiny_tensor){"model.layers.0.self_attn.q_proj.bias", 1, {8, 0}};
    t[N_TINY_LLAMA + 1] = (tiny_tensor){"model.layers.0.self_attn.k_proj.bias", 1, {4, 0}};
    t[N_TINY_LLAMA + 2] = (tiny_tensor){"model.layers.0.self_attn.v_proj.bias", 1, {4, 0}};
    write_tiny_st(src, t, N_TINY_LLAMA + 3, GGML_TYPE_F16);
    model m;
    slmc_err err = {0};
    ck_assert_msg(hf_open(&m, src, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 15);
    static const int64_t q_rows[8] = {0, 2, 1, 3, 4, 6, 5, 7}, k_rows[4] = {0, 2, 1, 3};
    float *qb = model_f32(&m, (uint64_t)model_find(&m, "blk.0.attn_q.bias"));
    float *kb = model_f32(&m, (uint64_t)model_find(&m, "blk.0.attn_k.bias"));
    float *vb = model_f32(&m, (uint64_t)model_find(&m, "blk.0.attn_v.bias"));
    for (int e = 0; e < 8; e++) ck_assert(qb[e] == as_type(GGML_TYPE_F16, tensor_value(N_TINY_LLAMA, 0, q_rows[e])));
    for (int e = 0; e < 4; e++) {
        ck_assert(kb[e] == as_type(GGML_TYPE_F16, tensor_value(N_TINY_LLAMA + 1, 0, k_rows[e])));
        ck_assert(vb[e] == as_type(GGML_TYPE_F16, tensor_value(N_TINY_LLAMA + 2, 0, e))); /* v: as stored */
    }
    free(qb); free(kb); free(vb);
    ck_assert_msg(hf_write(&m, out, -1, 0, NULL, &err) == 0, "%s", err.msg);
    char *single = join(out, "model.safetensors");
    st_model a, b;
    ck_assert_msg(st_open(&a, single, &err) == 0, "%s", err.msg);
    ck_assert_msg(st_open(&b, src, &err) == 0, "%s", err.msg);
    for (uint64_t i = 0; i < a.n_tensors; i++) {
        int64_t j = st_find(&b, a.tensors[i].name);
        ck_assert(j >= 0 && a.tensors[i].nbytes == b.tensors[j].nbytes);
        ck_assert_msg(memcmp(a.tensors[i].data, b.tensors[j].data, a.tensors[i].nbytes) == 0, "%s", a.tensors[i].name);
    }
    st_close(&a);
    st_close(&b);
    char *cfg_out = join(out, "config.json");
    json_error_t jerr;
    json_t *j = json_load_file(cfg_out, 0, &jerr);
    ck_assert(json_is_true(json_object_get(j, "attention_bias")));
    json_decref(j);
    free(cfg_out);
    free(single);
    model_close(&m);
    free(src);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

/* The real upstream configs in ../shared parse as llama.cpp's converter reads them. */
START_TEST(test_shared_configs) {
    char *llama = SHARED_OR_SKIP("configs/Llama-3.2-1B/config.json");
    char *phi2 = SHARED_OR_SKIP("configs/phi-2/config.json");
    size_t len;
    char *text = (char *)slurp(llama, &len);
    hf_config c;
    slmc_err err = {0};
    ck_assert_msg(hf_config_parse(text, len, llama, &c, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.arch->name, "llama");
    ck_assert_str_eq(c.rope_type, "llama3");
    ck_assert(c.rope_factor == 32.0 && c.rope_low == 1.0 && c.rope_high == 4.0 && c.rope_orig_ctx == 8192);
    ck_assert(c.tied && !c.qkv_bias && c.n_rot == 64 && c.head_dim == 64 && c.n_ctx == 131072);
    hf_config_free(&c);
    free(text);
    text = (char *)slurp(phi2, &len);
    ck_assert_msg(hf_config_parse(text, len, phi2, &c, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(c.arch->name, "phi2");
    ck_assert_int_eq(c.n_rot, 32); /* int(0.4 * 2560) // 32 of head_dim 80 */
    ck_assert_int_eq(c.head_dim, 80);
    ck_assert(!c.tied && c.norm_eps == 1e-5 && c.n_ctx == 2048 && c.n_ff == 10240);
    hf_config_free(&c);
    free(text);
    free(llama);
    free(phi2);
}
END_TEST

static Suite *hf_suite(void) {
    Suite *s = suite_create("hf");
    TCase *tc = tcase_create("hf");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_open_books);
    tcase_add_test(tc, test_books_vs_llama_cpp);
    tcase_add_test(tc, test_books_roundtrip);
    tcase_add_test(tc, test_gguf_to_hf);
    tcase_add_test(tc, test_write_undecodable_refused);
    tcase_add_test(tc, test_quantized_gguf_to_hf);
    tcase_add_test(tc, test_synthetic_q8_0_to_hf);
    tcase_add_test(tc, test_tiny_llama);
    tcase_add_test(tc, test_tiny_qwen2);
    tcase_add_test(tc, test_missing_config);
    tcase_add_test(tc, test_unsupported_arch);
    tcase_add_test(tc, test_invalid_json);
    tcase_add_test(tc, test_bad_numbers);
    tcase_add_test(tc, test_missing_tensor);
    tcase_add_test(tc, test_shape_mismatch);
    tcase_add_test(tc, test_unknown_tensor);
    tcase_add_loop_test(tc, test_family_config_errors, 0, (int)(sizeof CONFIG_ERRORS / sizeof CONFIG_ERRORS[0]));
    tcase_add_loop_test(tc, test_family_roundtrip, 0, N_FAMILY_DIRS);
    tcase_add_test(tc, test_llama3_factors);
    tcase_add_test(tc, test_gemma_plus_one);
    tcase_add_test(tc, test_llama_biases);
    tcase_add_test(tc, test_shared_configs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(hf_suite()); }
