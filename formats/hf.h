/* hf.h - Hugging Face checkpoints (config.json + safetensors + tokenizer) <-> the model view.
 *
 * Covers every family of formats/arch.h (llama with Mistral and SmolLM, qwen2, qwen3, gemma,
 * gemma2, gemma3, phi2, phi3, stablelm), as llama.cpp's convert_hf_to_gguf.py converts them:
 * config.json maps to the <arch>.* keys llama.cpp reads, tensor names map through the family's
 * table (model.layers.N.self_attn.q_proj.weight <-> blk.N.attn_q.weight, ...), llama's
 * q_proj/k_proj rows get llama.cpp's permutation, Gemma's norms are stored as 1 + w, and the
 * tensors llama.cpp's converter computes (Llama 3's rope_freqs, Phi-3's longrope factors) are
 * made from config.json. tokenizer.json (BPE or SentencePiece-style) or tokenizer.model maps to
 * tokenizer.ggml.*. See docs/formats-hf.md.
 */
#ifndef SLMC_HF_H
#define SLMC_HF_H

#include <stdbool.h>
#include <stdint.h>

#include "arch.h"
#include "error.h"
#include "meta.h"
#include "model.h"

#define HF_DEFAULT_SHARD_SIZE (5ull * 1000 * 1000 * 1000) /* 5 GB, as transformers' default */

/* Open a folder (config.json + model.safetensors[.index.json] + tokenizer files) or a single
 * .safetensors file (a config.json beside it is read when present). Fills m (kv, cfg, tensors). */
int hf_open(model *m, const char *path, slmc_err *err);

/* Write m as a Hugging Face folder at `dir` (atomic): config.json, generation_config.json,
 * model.safetensors (sharded past shard_size, with index), tokenizer files.
 * outtype: -1 = the model's dominant float type for all tensors (F32 when m has quantized
 * tensors); else F32/F16/BF16. Quantized tensors are written as their dequantized values,
 * decoded by the codec (quant_dequantize, through model_rows_to_f32 in model.h); a tensor it
 * cannot decode is an error naming the file, tensor and type, before anything is written. */
int hf_write(const model *m, const char *dir, int outtype, uint64_t shard_size,
             const slmc_progress *progress, slmc_err *err);

/* Name mapping through family a's tables: HF -> GGUF name, and back (NULL when unknown or when
 * the tensor has no counterpart, e.g. the generated rope_freqs.weight; malloc'd). */
char *hf_to_gguf_name(const arch_desc *a, const char *hf_name);
char *gguf_to_hf_name(const arch_desc *a, const char *gguf_name);

/* What a config.json says, validated for its family (every field llama.cpp's converter and
 * transformers' config class use). Read by hf_open, written by hf_write, and synth's shapes. */
typedef struct hf_config {
    const arch_desc *arch;  /* the family (architectures[0]) */
    int64_t n_embd;         /* hidden_size */
    int64_t n_ff;           /* intermediate_size */
    int64_t n_layer;        /* num_hidden_layers */
    int64_t n_head;         /* num_attention_heads */
    int64_t n_head_kv;      /* num_key_value_heads (default num_attention_heads) */
    int64_t head_dim;       /* head_dim (default hidden_size / num_attention_heads) */
    int64_t n_rot;          /* rotary dimensions: head_dim, or partial_rotary_factor's share as
                             * llama.cpp's converter computes it (phi2, phi3, stablelm) */
    int64_t n_vocab;        /* vocab_size */
    int64_t n_ctx;          /* max_position_embeddings */
    double rope_theta;      /* rope_theta (the family's default when absent) */
    double norm_eps;        /* rms_norm_eps or layer_norm_eps, by the family's norm */
    bool tied;              /* tie_word_embeddings (default: the family's) */
    bool qkv_bias;          /* the q/k/v projections have biases */
    char rope_type[16];     /* rope_scaling: "" (none), "linear", "yarn", "llama3", "longrope" */
    double rope_factor;     /* rope_scaling.factor (linear, yarn, llama3) */
    double rope_low, rope_high; /* llama3: low_freq_factor, high_freq_factor */
    int64_t rope_orig_ctx;  /* yarn: rope_scaling.original_max_position_embeddings; llama3: the
                             * original context llama.cpp uses (8192 unless config.json says);
                             * phi3: original_max_position_embeddings */
    float *long_factor, *short_factor; /* longrope: [n_rot / 2] each (owned) */
    double attn_factor;     /* phi3 longrope: llama.cpp's rope.scaling.attn_factor, else 1 */
    int64_t n_swa;          /* sliding_window (gemma2, gemma3, phi3; 0 none) */
    double attn_softcap, final_softcap; /* gemma2's soft-caps */
    double rope_local_base; /* gemma3: rope_local_base_freq (10000) */
    char name[256];         /* _name_or_path, "" if absent */
} hf_config;

/* Parse and validate config.json text (cfg_path names the file in messages): one line naming
 * config.json and the field on error. hf_config_free releases the arrays. */
int hf_config_parse(const char *text, size_t len, const char *cfg_path, hf_config *c, slmc_err *err);
void hf_config_free(hf_config *c);
/* The size a dimension name of the family tables stands for (0 for DIM_NONE). */
int64_t hf_config_dim(const hf_config *c, arch_dim d);
/* Whether tensor t of the family's tables is in a Hugging Face checkpoint of this config
 * (false for generated tensors, biases the model lacks, lm_head when tied). */
bool hf_config_has_tensor(const hf_config *c, const arch_tensor *t);
/* The config of a model view, as hf_write writes it: from m->cfg, m->kv and the tensors (which
 * q/k/v biases exist; Llama 3 rope factors and Phi-3's longrope factors read back from the
 * generated tensors). */
int hf_config_from_model(const model *m, hf_config *c, slmc_err *err);

/* Write config.json for c; kv gives _name_or_path (general.name) and the bos/eos ids. */
int hf_write_config_json(const char *path, const hf_config *c, const meta *kv, int torch_dtype_type,
                         slmc_err *err);

/* Llama 3's rope factors as llama.cpp's converter computes them (rope_scaling "llama3"), in f32
 * arithmetic as torch does: out[dim / 2]. */
void hf_llama3_rope_factors(float *out, int64_t dim, float base, double factor, double low_freq_factor,
                            double high_freq_factor, double original_ctx);

/* GGUF keys of a family that llama.cpp's converter writes beyond arch.h's flags (model.c's writer
 * follows them too): rope.freq_base only when not 10000 (gemma, gemma2, phi2 and stablelm's
 * converters never write it), attention.key_length/value_length always (qwen3, gemma*). */
bool hf_writes_freq_base(const arch_desc *a, double rope_theta);
bool hf_writes_head_dim(const arch_desc *a, int64_t head_dim, int64_t n_embd, int64_t n_head);

#endif
