/* arch.c - the model families (see arch.h). */
#include "arch.h"

#include <string.h>

/* ---- the tensors ---------------------------------------------------------------------- */

#define N(t) ((int)(sizeof(t) / sizeof((t)[0])))
#define ROPE_FACTORS(gguf) {NULL, gguf, DIM_ROT2, DIM_NONE, WHEN_ROPE_FACTORS, ARCH_QK_NONE, false}

/* Llama and the families that share its names (mistral, smollm, qwen2). */
static const arch_tensor LLAMA_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.norm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"lm_head.weight", "output.weight", DIM_VOCAB, DIM_EMBD, WHEN_UNTIED, ARCH_QK_NONE, false},
    ROPE_FACTORS("rope_freqs.weight"), /* Llama 3's rope_scaling "llama3" */
};

static const arch_tensor LLAMA_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_Q, false},
    {"self_attn.q_proj.bias", "attn_q.bias", DIM_Q, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_K, false},
    {"self_attn.k_proj.bias", "attn_k.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.bias", "attn_v.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* Qwen3: llama's block with a norm of each q and k head. */
static const arch_tensor QWEN3_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.bias", "attn_q.bias", DIM_Q, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", DIM_HEAD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.bias", "attn_k.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", DIM_HEAD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.bias", "attn_v.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* Gemma: llama's names, every norm stored as 1 + w, the output always tied. */
static const arch_tensor GEMMA_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.norm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
};

static const arch_tensor GEMMA_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* Gemma 2: a norm before and after each of attention and FFN. In HF, post_attention_layernorm
 * is the norm of the attention output (not the FFN input, as in llama). */
static const arch_tensor GEMMA2_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "post_attention_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
};

/* Gemma 3: Gemma 2's block with q/k norms (also stored as 1 + w). */
static const arch_tensor GEMMA3_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", DIM_HEAD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", DIM_HEAD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "post_attention_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, true},
};

/* Phi-2: LayerNorms with biases, a bias on every linear map (the output head too). */
static const arch_tensor PHI2_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.final_layernorm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.final_layernorm.bias", "output_norm.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"lm_head.weight", "output.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"lm_head.bias", "output.bias", DIM_VOCAB, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

static const arch_tensor PHI2_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"input_layernorm.bias", "attn_norm.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.bias", "attn_q.bias", DIM_Q, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.bias", "attn_k.bias", DIM_KV, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.bias", "attn_v.bias", DIM_KV, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.dense.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.dense.bias", "attn_output.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.fc1.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.fc1.bias", "ffn_up.bias", DIM_FF, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.fc2.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.fc2.bias", "ffn_down.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* Phi-3: q, k and v in one matrix, gate and up in one (gate rows first). */
static const arch_tensor PHI3_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.norm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"lm_head.weight", "output.weight", DIM_VOCAB, DIM_EMBD, WHEN_UNTIED, ARCH_QK_NONE, false},
    ROPE_FACTORS("rope_factors_long.weight"),  /* longrope: contexts beyond the original */
    ROPE_FACTORS("rope_factors_short.weight"), /* longrope: up to the original context */
};

static const arch_tensor PHI3_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.qkv_proj.weight", "attn_qkv.weight", DIM_QKV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.gate_up_proj.weight", "ffn_up.weight", DIM_FF2, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* StableLM 2: LayerNorms with biases, llama's projections, optional q/k/v biases. */
static const arch_tensor STABLELM_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", DIM_VOCAB, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.norm.weight", "output_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"model.norm.bias", "output_norm.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"lm_head.weight", "output.weight", DIM_VOCAB, DIM_EMBD, WHEN_UNTIED, ARCH_QK_NONE, false},
};

static const arch_tensor STABLELM_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"input_layernorm.bias", "attn_norm.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.weight", "attn_q.weight", DIM_Q, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.q_proj.bias", "attn_q.bias", DIM_Q, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.weight", "attn_k.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.k_proj.bias", "attn_k.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.weight", "attn_v.weight", DIM_KV, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"self_attn.v_proj.bias", "attn_v.bias", DIM_KV, DIM_NONE, WHEN_QKV_BIAS, ARCH_QK_NONE, false},
    {"self_attn.o_proj.weight", "attn_output.weight", DIM_EMBD, DIM_Q, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"post_attention_layernorm.bias", "ffn_norm.bias", DIM_EMBD, DIM_NONE, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.gate_proj.weight", "ffn_gate.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.up_proj.weight", "ffn_up.weight", DIM_FF, DIM_EMBD, WHEN_ALWAYS, ARCH_QK_NONE, false},
    {"mlp.down_proj.weight", "ffn_down.weight", DIM_EMBD, DIM_FF, WHEN_ALWAYS, ARCH_QK_NONE, false},
};

/* ---- the families --------------------------------------------------------------------- */

#define TABLES(g, l) .globals = g, .n_globals = N(g), .layer = l, .n_layer_tensors = N(l)

static const arch_desc FAMILIES[] = {
    {
        .name = "llama",
        .hf_classes = {"LlamaForCausalLM", "MistralForCausalLM"},
        .hf_model_type = "llama",
        TABLES(LLAMA_GLOBALS, LLAMA_LAYER),
        .norm = NORM_RMS, .ffn = FFN_SWIGLU, .rope = ROPE_NORM,
        .permute_qk = true,
        .qkv_bias_config = true,
        .kv_vocab_size = true, .kv_rope_dims = true,
        .hf_head_dim_always = true, .hf_mlp_bias = true,
    },
    {
        .name = "qwen2",
        .hf_classes = {"Qwen2ForCausalLM"},
        .hf_model_type = "qwen2",
        TABLES(LLAMA_GLOBALS, LLAMA_LAYER),
        .norm = NORM_RMS, .ffn = FFN_SWIGLU, .rope = ROPE_NEOX,
        .qkv_bias = true, .q_width_embd = true,
        .hf_sliding_window = true,
    },
    {
        .name = "qwen3",
        .hf_classes = {"Qwen3ForCausalLM"},
        .hf_model_type = "qwen3",
        TABLES(LLAMA_GLOBALS, QWEN3_LAYER),
        .norm = NORM_RMS, .ffn = FFN_SWIGLU, .rope = ROPE_NEOX,
        .qk_norm = true,
        .qkv_bias_config = true,
        .hf_head_dim_always = true, .hf_sliding_window = true,
    },
    {
        .name = "gemma",
        .hf_classes = {"GemmaForCausalLM"},
        .hf_model_type = "gemma",
        TABLES(GEMMA_GLOBALS, GEMMA_LAYER),
        .norm = NORM_RMS, .ffn = FFN_GEGLU, .rope = ROPE_NEOX,
        .embd_scale = true, .q_prescale = true,
        .tied_default = true,
        .hf_head_dim_always = true,
    },
    {
        .name = "gemma2",
        .hf_classes = {"Gemma2ForCausalLM"},
        .hf_model_type = "gemma2",
        TABLES(GEMMA_GLOBALS, GEMMA2_LAYER),
        .norm = NORM_RMS, .ffn = FFN_GEGLU, .rope = ROPE_NEOX,
        .post_norms = true, .embd_scale = true, .q_prescale = true,
        .swa = SWA_EVEN, .wide_q_layers = 46, .attn_softcap = true, .final_softcap = true,
        .tied_default = true,
        .hf_head_dim_always = true,
    },
    {
        .name = "gemma3",
        .hf_classes = {"Gemma3ForCausalLM"},
        .hf_model_type = "gemma3_text",
        TABLES(GEMMA_GLOBALS, GEMMA3_LAYER),
        .norm = NORM_RMS, .ffn = FFN_GEGLU, .rope = ROPE_NEOX,
        .qk_norm = true, .post_norms = true, .embd_scale = true, .q_prescale = true,
        .swa = SWA_5_TO_1, .wide_q_layers = 62,
        .tied_default = true,
        .hf_head_dim_always = true,
    },
    {
        .name = "phi2",
        .hf_classes = {"PhiForCausalLM"},
        .hf_model_type = "phi",
        TABLES(PHI2_GLOBALS, PHI2_LAYER),
        .norm = NORM_LAYER, .ffn = FFN_GELU, .rope = ROPE_NEOX, .q_width_embd = true,
        .parallel_block = true, .q_prescale = true,
        .kv_rope_dims = true,
    },
    {
        .name = "phi3",
        .hf_classes = {"Phi3ForCausalLM"},
        .hf_model_type = "phi3",
        TABLES(PHI3_GLOBALS, PHI3_LAYER),
        .norm = NORM_RMS, .ffn = FFN_SWIGLU, .rope = ROPE_NEOX, .q_width_embd = true,
        .q_prescale = true,
        .swa = SWA_ALL,
        .kv_rope_dims = true,
    },
    {
        .name = "stablelm",
        .hf_classes = {"StableLmForCausalLM"},
        .hf_model_type = "stablelm",
        TABLES(STABLELM_GLOBALS, STABLELM_LAYER),
        .norm = NORM_LAYER, .ffn = FFN_SWIGLU, .rope = ROPE_NEOX, .q_width_embd = true,
        .qkv_bias_config = true,
        .kv_rope_dims = true,
    },
};
#define N_FAMILIES N(FAMILIES)

/* GGUF architecture names that are another family's: older converters wrote "mistral". */
static const struct { const char *alias, *family; } ALIASES[] = {{"mistral", "llama"}};

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

const arch_desc *arch_at(int i) { return i >= 0 && i < N_FAMILIES ? &FAMILIES[i] : NULL; }

const char *arch_names(void) { return "llama, qwen2, qwen3, gemma, gemma2, gemma3, phi2, phi3, stablelm"; }

const char *arch_hf_class_names(void) {
    return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM, "
           "Gemma2ForCausalLM, Gemma3ForCausalLM, PhiForCausalLM, Phi3ForCausalLM, StableLmForCausalLM";
}

const arch_tensor *arch_global(const arch_desc *a, const char *gguf) {
    for (int i = 0; a && gguf && i < a->n_globals; i++)
        if (strcmp(a->globals[i].gguf, gguf) == 0) return &a->globals[i];
    return NULL;
}

const arch_tensor *arch_layer_tensor(const arch_desc *a, const char *gguf) {
    for (int i = 0; a && gguf && i < a->n_layer_tensors; i++)
        if (strcmp(a->layer[i].gguf, gguf) == 0) return &a->layer[i];
    return NULL;
}

int64_t arch_query_scalar(const arch_desc *a, int64_t n_layer, int64_t n_embd, int64_t n_head, int64_t head_dim) {
    return a->wide_q_layers > 0 && n_layer == a->wide_q_layers && n_head > 0 ? n_embd / n_head : head_dim;
}

bool arch_layer_slides(const arch_desc *a, int64_t il) {
    switch (a->swa) {
    case SWA_ALL: return true;
    case SWA_EVEN: return il % 2 == 0;
    case SWA_5_TO_1: return (il + 1) % 6 != 0;
    default: return false;
    }
}
