/* arch.h - one description per model family.
 *
 * Everything slmc knows about an architecture lives in its entry here: the readers (Hugging
 * Face config and tensor names <-> GGUF), the inference forward pass, the training model, the
 * pruner and the quantizer's mix rules all read it, so adding a family means adding an entry
 * (and the ops it needs), not editing each layer.
 *
 * Shapes are written as llama.cpp's converter sees them: a Hugging Face tensor [d0, d1]
 * (outermost first) is the GGUF tensor with ne[0] = d1, ne[1] = d0. The dimension names:
 *   VOCAB  vocab_size            EMBD  hidden_size (n_embd)
 *   Q      n_head * head_dim     KV    n_head_kv * head_dim      FF  intermediate_size
 */
#ifndef SLMC_ARCH_H
#define SLMC_ARCH_H

#include <stdbool.h>
#include <stdint.h>

/* A dimension of a tensor's shape, in terms of the hyperparameters. */
typedef enum arch_dim { DIM_NONE, DIM_VOCAB, DIM_EMBD, DIM_Q, DIM_KV, DIM_FF } arch_dim;

/* Which of llama.cpp's Q/K row permutations a tensor gets in a ROPE_NORM family. */
typedef enum arch_qk { ARCH_QK_NONE, ARCH_QK_Q, ARCH_QK_K } arch_qk;

/* One tensor of the family: its names, Hugging Face shape and role. */
typedef struct arch_tensor {
    const char *hf;    /* HF name; for layer tensors the part after "model.layers.N." */
    const char *gguf;  /* GGUF name; for layer tensors the part after "blk.N." */
    arch_dim d0, d1;   /* HF shape, outermost first; d1 == DIM_NONE for a vector */
    bool qkv_bias;     /* a q/k/v bias: present exactly when the family has qkv biases */
    arch_qk qk;        /* the Q/K permutation (families with permute_qk) */
} arch_tensor;

/* How the rotated dimensions of a head are paired (llama.cpp's rope types). */
typedef enum arch_rope {
    ROPE_NORM, /* adjacent pairs (x[2i], x[2i+1]): LLAMA_ROPE_TYPE_NORM */
    ROPE_NEOX, /* halves (x[i], x[i + n_rot/2]): LLAMA_ROPE_TYPE_NEOX */
} arch_rope;

typedef enum arch_norm { NORM_RMS } arch_norm;  /* RMSNorm with a weight, no bias */
typedef enum arch_ffn { FFN_SWIGLU } arch_ffn;  /* down(silu(gate(x)) * up(x)) */

typedef struct arch_desc {
    const char *name;          /* general.architecture, the GGUF key prefix ("llama") */
    const char *hf_classes[3]; /* config.json "architectures" read as this family; [0] is written */
    const char *hf_model_type; /* config.json "model_type" written */
    arch_norm norm;            /* the normalisation before attention, FFN and the output head */
    arch_ffn ffn;              /* the feed-forward block */
    arch_rope rope;            /* the pairing of rotated dimensions */
    bool permute_qk;           /* HF q_proj/k_proj rows are permuted for ROPE_NORM by llama.cpp's
                                * converter (and un-permuted when writing HF) */
    bool qkv_bias;             /* attn_q/k/v have biases (required in HF input) */
    bool kv_vocab_rope_dims;   /* the converter writes <arch>.vocab_size and rope.dimension_count */
    bool hf_head_dim_always;   /* transformers serialises head_dim in config.json even when it is
                                * hidden_size / heads */
    bool hf_mlp_bias;          /* config.json carries "mlp_bias": false (LlamaConfig) */
    bool hf_sliding_window;    /* config.json carries "use_sliding_window": false (Qwen2Config) */
} arch_desc;

/* Whole-model tensors, indexed by ARCH_EMBD, ARCH_NORM, ARCH_OUT. */
enum { ARCH_EMBD, ARCH_NORM, ARCH_OUT, ARCH_N_GLOBAL };
extern const arch_tensor ARCH_GLOBAL_TENSORS[ARCH_N_GLOBAL];
/* Per-layer tensors in the model view's order (a bias right after its weight). */
extern const arch_tensor ARCH_LAYER_TENSORS[];
extern const int ARCH_N_LAYER_TENSORS;

/* The family of a GGUF general.architecture ("mistral" is llama's), or NULL. */
const arch_desc *arch_by_name(const char *name);
/* The family of a config.json "architectures" entry ("LlamaForCausalLM"), or NULL. */
const arch_desc *arch_by_hf_class(const char *hf_class);
/* The names of the families, for messages: "llama, qwen2" (static). */
const char *arch_names(void);
/* The HF classes read, for messages: "LlamaForCausalLM, MistralForCausalLM, ..." (static). */
const char *arch_hf_class_names(void);
/* Whether family a has tensor t (q/k/v biases only where the family has them). */
bool arch_has_tensor(const arch_desc *a, const arch_tensor *t);

#endif
