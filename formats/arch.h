/* arch.h - one description per model family.
 *
 * Everything slmc knows about an architecture lives in its entry here: the readers (Hugging
 * Face config and tensor names <-> GGUF), the inference forward pass, the training model, the
 * pruner and the quantizer's mix rules all read it, so adding a family means adding an entry
 * (and the ops it needs), not editing each layer.
 *
 * Shapes are written as llama.cpp's converter sees them: a Hugging Face tensor [d0, d1]
 * (outermost first) is the GGUF tensor with ne[0] = d1, ne[1] = d0. The dimension names:
 *   VOCAB  vocab_size            EMBD  hidden_size (n_embd)       HEAD  head_dim
 *   Q      n_head * head_dim     KV    n_head_kv * head_dim      QKV   Q + 2 KV (fused)
 *   FF     intermediate_size     FF2   2 * FF (fused gate and up) ROT2  n_rot / 2
 *
 * The families and what sets them apart (llama.cpp's graph for each is the reference):
 *   llama    RMSNorm, SwiGLU, rope NORM (Q/K rows permuted), Llama 3 rope factors; mistral, smollm
 *   qwen2    as llama with q/k/v biases and rope NEOX
 *   qwen3    as qwen2 without biases, RMSNorm of each q and k head before rope
 *   gemma    embeddings scaled by sqrt(n_embd), GeGLU, norms stored as 1 + w, tied output
 *   gemma2   gemma with post-attention / post-FFN norms, soft-capped attention and logits,
 *            sliding-window attention on even layers
 *   gemma3   gemma2 without soft-caps, with q/k norms and 5 sliding : 1 global layers, the local
 *            layers with their own rope base
 *   phi2     LayerNorm with bias, attention and FFN in parallel from one norm, GELU FFN, biases
 *            everywhere (output too), partial rotary
 *   phi3     fused qkv and gate_up, rope factors for long contexts (longrope), sliding window
 *   stablelm LayerNorm with bias, partial rotary, optional q/k/v biases
 */
#ifndef SLMC_ARCH_H
#define SLMC_ARCH_H

#include <stdbool.h>
#include <stdint.h>

/* A dimension of a tensor's shape, in terms of the hyperparameters (see the table above). */
typedef enum arch_dim {
    DIM_NONE, DIM_VOCAB, DIM_EMBD, DIM_HEAD, DIM_Q, DIM_KV, DIM_QKV, DIM_FF, DIM_FF2, DIM_ROT2
} arch_dim;

/* Which of llama.cpp's Q/K row permutations a tensor gets in a family with permute_qk. */
typedef enum arch_qk { ARCH_QK_NONE, ARCH_QK_Q, ARCH_QK_K } arch_qk;

/* When a tensor of a family's table is present. */
typedef enum arch_when {
    WHEN_ALWAYS,      /* required */
    WHEN_QKV_BIAS,    /* q/k/v biases: when the config says the model has them (arch_desc.qkv_bias
                       * is the family's default) */
    WHEN_UNTIED,      /* output.weight: absent when the output is tied to the embedding */
    WHEN_ROPE_FACTORS,/* made by the converter from config.json's rope_scaling (no HF tensor):
                       * Llama 3's rope_freqs, Phi-3's longrope factors */
} arch_when;

/* One tensor of a family: its names, Hugging Face shape and role. */
typedef struct arch_tensor {
    const char *hf;    /* HF name; for layer tensors the part after "model.layers.N."; NULL for a
                        * tensor the converter computes (WHEN_ROPE_FACTORS) */
    const char *gguf;  /* GGUF name; for layer tensors the part after "blk.N." */
    arch_dim d0, d1;   /* HF shape, outermost first; d1 == DIM_NONE for a vector */
    arch_when when;
    arch_qk qk;        /* the Q/K permutation (families with permute_qk) */
    bool plus_one;     /* stored as 1 + w in GGUF (Gemma's norms: HF computes x * (1 + w)) */
} arch_tensor;

/* How the rotated dimensions of a head are paired (llama.cpp's rope types). */
typedef enum arch_rope {
    ROPE_NORM, /* adjacent pairs (x[2i], x[2i+1]): LLAMA_ROPE_TYPE_NORM */
    ROPE_NEOX, /* halves (x[i], x[i + n_rot/2]): LLAMA_ROPE_TYPE_NEOX */
} arch_rope;

typedef enum arch_norm {
    NORM_RMS,    /* x / rms(x) * w; eps key attention.layer_norm_rms_epsilon */
    NORM_LAYER,  /* (x - mean) / std * w + b; eps key attention.layer_norm_epsilon */
} arch_norm;

typedef enum arch_ffn {
    FFN_SWIGLU,  /* down(silu(gate(x)) * up(x)); phi3 keeps gate and up in one ffn_up of 2 FF rows */
    FFN_GEGLU,   /* down(gelu(gate(x)) * up(x)), gelu with the tanh approximation */
    FFN_GELU,    /* down(gelu(up(x) + b) + b): no gate (phi2) */
} arch_ffn;

/* Which layers attend within a sliding window (model_config.n_swa positions). */
typedef enum arch_swa {
    SWA_NONE,    /* every layer sees the whole context */
    SWA_ALL,     /* every layer slides (phi3 with a window) */
    SWA_EVEN,    /* layers 0, 2, 4, ... slide, the odd ones are global (gemma2) */
    SWA_5_TO_1,  /* layer il slides unless (il + 1) % 6 == 0 (gemma3) */
} arch_swa;

typedef struct arch_desc {
    const char *name;          /* general.architecture, the GGUF key prefix ("llama") */
    const char *hf_classes[3]; /* config.json "architectures" read as this family; [0] is written */
    const char *hf_model_type; /* config.json "model_type" written */
    const arch_tensor *globals;/* whole-model tensors, in GGUF write order with the layers between
                                * globals[0] (token_embd) and the rest */
    int n_globals;
    const arch_tensor *layer;  /* the tensors of each block, in GGUF write order */
    int n_layer_tensors;

    /* the forward pass */
    arch_norm norm;            /* every norm of the model except q/k norms (always RMS) */
    arch_ffn ffn;
    arch_rope rope;
    bool qk_norm;              /* RMSNorm of each q and k head (attn_q_norm, attn_k_norm) before rope */
    bool post_norms;           /* RMSNorm of the attention and FFN outputs before their residual adds */
    bool parallel_block;       /* attention and FFN both read the attention norm's output; one residual */
    bool embd_scale;           /* embeddings multiplied by sqrt(n_embd) */
    bool q_prescale;           /* Q multiplied by the attention scale before the K product (llama.cpp
                                * does so for phi2, phi3 and gemma*; it changes the F16 rounding) */
    arch_swa swa;              /* the sliding-window layer pattern (when n_swa > 0) */
    int64_t wide_q_layers;     /* llama.cpp scales Q.K by 1/sqrt(n_embd / n_head) instead of
                                * 1/sqrt(head_dim) for a model of this many layers (the 27B shapes
                                * it recognises by layer count: gemma2 46, gemma3 62); 0 never */
    bool q_width_embd;         /* llama.cpp (b4747) builds attn_q (phi3: attn_qkv's Q rows) and
                                * attn_output with n_embd: head_count x head size must equal
                                * embedding_length (qwen2, phi2, phi3, stablelm), which constrains
                                * pruning */
    bool attn_softcap;         /* <arch>.attn_logit_softcapping applies (gemma2) */
    bool final_softcap;        /* <arch>.final_logit_softcapping applies (gemma2) */

    /* the converter */
    bool permute_qk;           /* HF q_proj/k_proj rows are permuted for ROPE_NORM by llama.cpp's
                                * converter (and un-permuted when writing HF) */
    bool qkv_bias;             /* default for WHEN_QKV_BIAS tensors (required for qwen2) */
    bool qkv_bias_config;      /* config.json says whether there are q/k/v biases (attention_bias,
                                * use_qkv_bias); otherwise they follow qkv_bias */
    bool tied_default;         /* tie_word_embeddings when config.json does not say (gemma: true) */
    bool kv_vocab_size;        /* the converter writes <arch>.vocab_size */
    bool kv_rope_dims;         /* the converter writes <arch>.rope.dimension_count */
    bool hf_head_dim_always;   /* transformers serialises head_dim in config.json even when it is
                                * hidden_size / heads */
    bool hf_mlp_bias;          /* config.json carries "mlp_bias": false (LlamaConfig) */
    bool hf_sliding_window;    /* config.json carries "use_sliding_window": false (Qwen2Config) */
} arch_desc;

/* The family of a GGUF general.architecture ("mistral" is llama's), or NULL. */
const arch_desc *arch_by_name(const char *name);
/* The family of a config.json "architectures" entry ("LlamaForCausalLM"), or NULL. */
const arch_desc *arch_by_hf_class(const char *hf_class);
/* The families, in table order (NULL past the end), for tests and listings. */
const arch_desc *arch_at(int i);
/* The names of the families, for messages: "llama, qwen2, ..." (static). */
const char *arch_names(void);
/* The HF classes read, for messages: "LlamaForCausalLM, MistralForCausalLM, ..." (static). */
const char *arch_hf_class_names(void);

/* The tensor of family a named `gguf` (global, or the part after "blk.N."), or NULL. */
const arch_tensor *arch_global(const arch_desc *a, const char *gguf);
const arch_tensor *arch_layer_tensor(const arch_desc *a, const char *gguf);


/* The head size Q.K is scaled by (1/sqrt of it), as llama.cpp's graph chooses it. */
int64_t arch_query_scalar(const arch_desc *a, int64_t n_layer, int64_t n_embd, int64_t n_head, int64_t head_dim);

/* Whether layer il of a model with n_layer layers attends within a sliding window. */
bool arch_layer_slides(const arch_desc *a, int64_t il);

#endif
