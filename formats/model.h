/* model.h - the one model view every command reads, whatever the input format.
 *
 *   HF folder / .safetensors ─┐
 *   GGUF file ────────────────┼─> model (config + GGUF metadata + tensors in GGUF naming) ─> writers
 *   llama2.c .bin ────────────┘
 *
 * Tensors carry GGUF names ("token_embd.weight", "blk.N.attn_q.weight", ...), GGUF shape
 * order (ne[0] is the row length) and llama.cpp's row layout: the Q/K row permutation that
 * llama.cpp's converter applies to Hugging Face llama weights is applied on read, so callers
 * never see the difference. Data stays in the mapped input; rows are read on demand.
 *
 * Quantized tensors (Q4_K, ...) are read as they are stored; where F32 values are needed
 * (model_read_rows_f32, and the GGUF and Hugging Face writers when a quantized tensor must
 * become F32/F16/BF16) the view decodes them with the codec's decoder, quant_dequantize
 * (codec/quants.h). A quantized type the codec has no decoder for can be copied but not
 * converted: model_check_f32 names it.
 */
#ifndef SLMC_MODEL_H
#define SLMC_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "arch.h"
#include "error.h"
#include "meta.h"

#define MODEL_MAX_DIMS 4

typedef enum model_format { MODEL_GGUF, MODEL_HF, MODEL_LLAMA2C } model_format;

/* Hyperparameters, parsed from the GGUF keys in model.kv (the one source of truth). */
typedef struct model_config {
    char arch[32];           /* general.architecture: "llama", "qwen2", ... */
    int64_t n_vocab;         /* tokens in the embedding (token_embd rows) */
    int64_t n_ctx_train;     /* <arch>.context_length */
    int64_t n_embd;          /* <arch>.embedding_length */
    int64_t n_ff;            /* <arch>.feed_forward_length */
    int64_t n_layer;         /* <arch>.block_count */
    int64_t n_head;          /* <arch>.attention.head_count */
    int64_t n_head_kv;       /* <arch>.attention.head_count_kv (defaults to n_head) */
    int64_t head_dim;        /* <arch>.attention.key_length, default n_embd / n_head */
    int64_t n_rot;           /* <arch>.rope.dimension_count, default head_dim */
    float rope_freq_base;    /* <arch>.rope.freq_base, default 10000 */
    float norm_eps;          /* <arch>.attention.layer_norm_rms_epsilon (RMSNorm families) or
                                <arch>.attention.layer_norm_epsilon (LayerNorm families), default 1e-5 */
    char rope_scaling[16];   /* <arch>.rope.scaling.type: "" (none), "linear", "yarn", ... */
    float rope_scaling_factor;       /* <arch>.rope.scaling.factor, 0 when none */
    int64_t rope_scaling_orig_ctx;   /* <arch>.rope.scaling.original_context_length, 0 when none */
    float rope_attn_factor;  /* <arch>.rope.scaling.attn_factor: cos and sin of rope scaled by it
                                (Phi-3 longrope), default 1 */
    float rope_freq_base_swa;/* <arch>.rope.freq_base_swa: the rope base of sliding-window layers
                                (gemma3: 10000, unscaled), 0 for the others */
    int64_t n_swa;           /* <arch>.attention.sliding_window: positions a sliding layer sees
                                (0: none; gemma2 defaults to 4096 as llama.cpp does) */
    float attn_softcap;      /* <arch>.attn_logit_softcapping: scores -> c * tanh(scores / c), 0 none */
    float final_softcap;     /* <arch>.final_logit_softcapping: logits -> c * tanh(logits / c), 0 none */
    bool tied_output;        /* no output.weight: the classifier is token_embd */
} model_config;
/* The family's description is arch_by_name(cfg.arch) (formats/arch.h): NULL for an architecture
 * slmc reads and copies but does not know (no engine, no Hugging Face form). */

typedef struct model_tensor {
    char *name;              /* GGUF name (owned) */
    int type;                /* ggml_type of the bytes model_read_rows yields */
    int n_dims;              /* 1..4 */
    int64_t ne[MODEL_MAX_DIMS]; /* ne[0] = row length; unused dims 1 */
    uint64_t nbytes;         /* total bytes in `type` */
    const uint8_t *data;     /* source bytes (inside a mapping), rows in source order */
    int64_t qk_heads;        /* 0: rows as stored; >0: stored in HF order, permuted with this many
                                heads into llama.cpp's order on read */
    void *owned;             /* heap data of a transformed or generated tensor (Gemma's 1 + w norms,
                                permuted q/k biases, rope factors), which `data` points at; freed by
                                model_close */
} model_tensor;

typedef struct model {
    char *path;              /* input path (owned) */
    model_format format;
    meta kv;                 /* GGUF metadata: general.*, <arch>.*, tokenizer.ggml.* */
    model_config cfg;
    model_tensor *tensors;   /* [n_tensors], in llama.cpp's order for the format */
    uint64_t n_tensors;
    void *src;               /* the format reader that owns the mappings; NULL for a view built in
                                memory, whose tensor data may live on the heap */
    void (*free_src)(void *src);
} model;

typedef struct model_open_opts {
    const char *tokenizer;   /* llama2.c: path of tokenizer.bin (required for llama2.c input) */
} model_open_opts;

/* Progress reporting for long work (bytes done of total; `what` names the current tensor). */
typedef struct slmc_progress {
    void (*fn)(void *ud, uint64_t done, uint64_t total, const char *what);
    void *ud;
} slmc_progress;

/* Open a model: a folder (Hugging Face layout), a .safetensors or index.json, a GGUF file,
 * or a llama2.c checkpoint (recognised by elimination; needs opts->tokenizer). */
int model_open(model *m, const char *path, const model_open_opts *opts, slmc_err *err);
void model_close(model *m);

/* Fill m->cfg from m->kv; fails with a message naming the missing or bad key. */
int model_config_from_meta(model *m, slmc_err *err);

int64_t model_find(const model *m, const char *name);
int64_t model_tensor_rows(const model_tensor *t);     /* ne[1]*ne[2]*ne[3] */
uint64_t model_tensor_row_bytes(const model_tensor *t);
uint64_t model_param_count(const model *m);

/* Copy rows [row0, row0+nrows) of tensor ti, in its type and llama.cpp's row order, to dst. */
int model_read_rows(const model *m, uint64_t ti, int64_t row0, int64_t nrows, void *dst, slmc_err *err);
/* Same, converted to F32: float types widen, quantized types are decoded by the codec (an
 * error naming the file, tensor and type when it cannot decode them; see model_check_f32). */
int model_read_rows_f32(const model *m, uint64_t ti, int64_t row0, int64_t nrows, float *dst, slmc_err *err);
/* 0 when tensor t can be read as F32 (a float type, or a quantized type the codec decodes);
 * otherwise -1 with "PATH: tensor NAME is TYPE, ..." saying why (an integer type, or a
 * quantized type without a decoder, e.g. IQ2_XXS). */
int model_check_f32(const model *m, const model_tensor *t, slmc_err *err);
/* Convert nrows rows of tensor t, in its stored type as model_read_rows yields them (src), to
 * F32 (dst, nrows * ne[0] values); the same conversion as model_read_rows_f32. */
int model_rows_to_f32(const model *m, const model_tensor *t, const void *src, float *dst, int64_t nrows,
                      slmc_err *err);
/* true when some tensor of m has a block-quantized type (Q4_K, IQ4_XS, ...). */
bool model_has_quantized(const model *m);

/* The llama Q/K permutation of llama.cpp's HF converter, as a row map. For a matrix of
 * `rows` rows split into `heads` heads of rows/heads rows each:
 * gguf row r holds hf row qk_row_hf_of_gguf(r, rows, heads), and the inverse. */
int64_t qk_row_hf_of_gguf(int64_t r, int64_t rows, int64_t heads);
int64_t qk_row_gguf_of_hf(int64_t r, int64_t rows, int64_t heads);

/* The type a tensor is written with when converting to `outtype` (-1 = keep), as
 * llama-quantize --allow-requantize does for F32/F16/BF16: 1-D tensors stay (or become) F32 as
 * llama.cpp stores them, float and quantized matrices take outtype, quantized tensors are kept
 * as they are when outtype is -1, and integer types are always kept. */
int model_out_type(const model_tensor *t, int outtype);

/* The type holding most matrix elements (F32 when there are none). */
int model_dominant_type(const model *m);

/* The GGUF metadata m is written with, in canonical order: general.*, the architecture keys
 * (from cfg), general.file_type (file_type >= 0 sets it, -1 keeps the input's), tokenizer.ggml.*,
 * then any other input key. `out` is initialised by the call. */
int model_gguf_meta(meta *out, const model *m, int64_t file_type);
/* Tensor indices in canonical GGUF write order: token_embd, blocks in order (attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down), output_norm, output.
 * malloc'd [n_tensors]; NULL when out of memory. */
uint64_t *model_gguf_order(const model *m);
/* Drop a tensor's source pages from the resident set once it has been consumed (they stay
 * in the page cache): keeps peak RSS independent of the model size when streaming. Does
 * nothing for a view built in memory (m->src NULL): its tensors may point at heap buffers. */
void model_release_source(const model *m, const model_tensor *t);
/* The same for rows [row0, row0+nrows) in source order (streaming within a large tensor). */
void model_release_rows(const model *m, const model_tensor *t, int64_t row0, int64_t nrows);

/* Write the model as GGUF v3 (atomic), converting tensors per model_out_type: a quantized
 * tensor that must change type is dequantized by the codec (checked for every tensor
 * before anything is written). outtype -1 copies quantized tensors byte for byte. */
int model_write_gguf(const model *m, const char *path, int outtype, const slmc_progress *progress,
                     slmc_err *err);

#endif
