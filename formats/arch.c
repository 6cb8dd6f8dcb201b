/* arch.c - the model families (see arch.h). */
#include "arch.h"

#include <string.h>

/* ---- the families --------------------------------------------------------------------- */

static const arch_desc FAMILIES[] = {
    {
        .name = "llama",
        .hf_classes = {"LlamaForCausalLM", "MistralForCausalLM"},
        .hf_model_type = "llama",
        .norm = NORM_RMS,
        .ffn = FFN_SWIGLU,
        .rope = ROPE_NORM,
        .permute_qk = true,
        .qkv_bias = false,
        .kv_vocab_rope_dims = true,
        .hf_head_dim_always = true,
        .hf_mlp_bias = true,
        .hf_sliding_window = false,
    },
    {
        .name = "qwen2",
        .hf_classes = {"Qwen2ForCausalLM"},
        .hf_model_type = "qwen2",
        .norm = NORM_RMS,
        .ffn = FFN_SWIGLU,
        .rope = ROPE_NEOX,
        .permute_qk = false,
        .qkv_bias = true,
        .kv_vocab_rope_dims = false,
        .hf_head_dim_always = false,
        .hf_mlp_bias = false,
        .hf_sliding_window = true,
    },
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))

/* GGUF architecture names that are another family's: older converters wrote "mistral". */
static const struct { const char *alias, *family; } ALIASES[] = {{"mistral", "llama"}};

/* ---- the tensors ---------------------------------------------------------------------- */

const arch_tensor ARCH_GLOBAL_TENSORS[ARCH_N_GLOBAL] = {
    [ARCH_EMBD] = {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, false, ARCH_QK_NONE},
    [ARCH_NORM] = {"model.norm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, false, ARCH_QK_NONE},
    [ARCH_OUT] = {"lm_head.weight", "output.weight", DIM_VOCAB, DIM_EMBD, false, ARCH_QK_NONE},
};

const arch_tensor ARCH_LAYER_TENSORS[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, false, ARCH_QK_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, false, ARCH_QK_Q},
    {"self_attn.q_proj.bias", "attn_q.bias", DIM_Q, DIM_NONE, true, ARCH_QK_NONE},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, false, ARCH_QK_K},
    {"self_attn.k_proj.bias", "attn_k.bias", DIM_KV, DIM_NONE, true, ARCH_QK_NONE},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, false, ARCH_QK_NONE},
    {"self_attn.v_proj.bias", "attn_v.bias", DIM_KV, DIM_NONE, true, ARCH_QK_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, false, ARCH_QK_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, false, ARCH_QK_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, false, ARCH_QK_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, false, ARCH_QK_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, false, ARCH_QK_NONE},
};
const int ARCH_N_LAYER_TENSORS = (int)(sizeof ARCH_LAYER_TENSORS / sizeof ARCH_LAYER_TENSORS[0]);

/* ---- look-ups ------------------------------------------------------------------------- */

const arch_desc *arch_by_name(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (strcmp(name, ALIASES[i].alias) == 0) name = ALIASES[i].family;
    for (int f = 0; f < N_FAMILIES; f++)
        if (strcmp(name, FAMILIES[f].name) == 0) return &FAMILIES[f];
    return NULL;
}

const arch_desc *arch_by_hf_class(const char *hf_class) {
    if (!hf_class) return NULL;
    for (int f = 0; f < N_FAMILIES; f++)
        for (int k = 0; k < 3 && FAMILIES[f].hf_classes[k]; k++)
            if (strcmp(hf_class, FAMILIES[f].hf_classes[k]) == 0) return &FAMILIES[f];
    return NULL;
}

const char *arch_names(void) { return "llama, qwen2"; }

const char *arch_hf_class_names(void) { return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"; }

bool arch_has_tensor(const arch_desc *a, const arch_tensor *t) { return !t->qkv_bias || a->qkv_bias; }
