/* plan.h - which type each tensor gets when a model is quantized to a llama.cpp "mix".
 *
 * A mix (Q4_K_M, Q3_K_S, ...) is not one type: llama-quantize gives most matrices the mix's
 * base type and bumps a few sensitive ones (attn_v, ffn_down, attn_output, output.weight)
 * to more bits, depending on their position in the model. quant_plan reproduces those
 * decisions (llama.cpp src/llama-quant.cpp, build b4747 era) from names, shapes, types and
 * the config alone, so a plan can be made and checked without touching tensor data.
 * docs/quant-mixes.md lists the rules in plain words.
 */
#ifndef SLMC_PLAN_H
#define SLMC_PLAN_H

#include <stdbool.h>

#include "formats/error.h"
#include "formats/model.h"

/* llama.cpp's llama_ftype numbers; written as general.file_type. */
typedef enum quant_mix {
    MIX_F32 = 0,
    MIX_F16 = 1,
    MIX_Q4_0 = 2,
    MIX_Q4_1 = 3,
    MIX_Q8_0 = 7,
    MIX_Q5_0 = 8,
    MIX_Q5_1 = 9,
    MIX_Q2_K = 10,
    MIX_Q3_K_S = 11,
    MIX_Q3_K_M = 12,
    MIX_Q3_K_L = 13,
    MIX_Q4_K_S = 14,
    MIX_Q4_K_M = 15,
    MIX_Q5_K_S = 16,
    MIX_Q5_K_M = 17,
    MIX_Q6_K = 18,
    MIX_IQ2_XXS = 19, /* the i-quant and ternary mixes: names as llama-quantize's */
    MIX_IQ2_XS = 20,
    MIX_Q2_K_S = 21,
    MIX_IQ3_XS = 22,
    MIX_IQ3_XXS = 23,
    MIX_IQ1_S = 24,
    MIX_IQ4_NL = 25,
    MIX_IQ3_S = 26,
    MIX_IQ3_M = 27,
    MIX_IQ2_S = 28,
    MIX_IQ2_M = 29,
    MIX_IQ4_XS = 30,
    MIX_IQ1_M = 31,
    MIX_BF16 = 32,
    MIX_TQ1_0 = 36,
    MIX_TQ2_0 = 37,
} quant_mix;

/* "Q4_K_M" (case-insensitive; llama-quantize's aliases Q3_K, Q4_K, Q5_K and plain ftype
 * numbers like "15" too) -> mix, or -1 when unknown. */
int quant_mix_from_name(const char *name);
/* "Q4_K_M", or NULL for an unknown mix. */
const char *quant_mix_name(int mix);
/* The mix's base tensor type (ggml_type), or -1 for an unknown mix. */
int quant_mix_base_type(int mix);

/* --tensor-type PATTERN=TYPE: tensors whose name matches PATTERN (a PCRE2 regex, searched
 * anywhere in the name, like llama.cpp's std::regex_search) get TYPE. Checked in order; the
 * first match wins. */
typedef struct plan_override {
    char *pattern; /* regex over GGUF tensor names, e.g. "blk\\.[0-3]\\.attn_v" */
    int type;      /* ggml_type to use */
} plan_override;

/* Parse "REGEX=TYPE" (llama-quantize's --tensor-type), split at the last '=': spec is modified
 * and ov->pattern points into it. Fails on a missing pattern or an unknown type name. */
int plan_override_parse(char *spec, plan_override *ov, slmc_err *err);

typedef struct plan_opts {
    int mix;                        /* quant_mix */
    int output_type;                /* --output-tensor-type: ggml_type for output.weight, -1 none */
    int token_embd_type;            /* --token-embedding-type: ggml_type for token_embd.weight, -1 none */
    bool pure;                      /* --pure: no per-tensor bumps, every quantized tensor gets the base type */
    bool leave_output;              /* --leave-output-tensor: output.weight is not quantized */
    bool has_imatrix;               /* an importance matrix will be used (changes ffn_down of Q4_0, Q5_0,
                                     * IQ3_XXS, IQ4_NL, IQ4_XS and attn_v of IQ3_XXS) */
    const plan_override *overrides; /* [n_overrides], checked in order */
    int n_overrides;
    const char *const *include;     /* [n_include] regexes: when n_include > 0, only matching tensors are quantized */
    int n_include;
    const char *const *exclude;     /* [n_exclude] regexes: matching tensors are not quantized */
    int n_exclude;
} plan_opts;

/* Defaults: the given mix, no type overrides, nothing pure/left/included/excluded. */
void plan_opts_init(plan_opts *o, int mix);

/* Fill types[i] (m->n_tensors entries) with the ggml_type tensor i of m is written with.
 * Tensors that are not quantized keep their type, except that float vectors (norms, 1-D)
 * become F32, as llama.cpp stores them. Fails on an unknown mix or type, a bad regex, a
 * tensor whose row length fits no block size the rules allow, or a model llama-quantize
 * refuses (attention layers without exactly one attn_v / attn_qkv / attn_kv_b each). */
int quant_plan(const model *m, const plan_opts *o, int *types, slmc_err *err);

/* llama-quantize's refusal to write a very low-bit type blind: true when tensor `name` planned
 * as `type` under `mix` must have importance data (an imatrix entry of its own), i.e. IQ2_XXS,
 * IQ2_XS, IQ2_S and IQ1_S always, IQ1_M except for token_embd / output, and Q2_K in the Q2_K_S
 * mix (llama_ftype 21) except for token_embd. The quantizer should fail on such a tensor when
 * its importance is missing, naming it, as llama-quantize does. */
bool plan_needs_imatrix(int mix, const char *name, int type);

/* That refusal for a whole plan, before anything is written: fails, naming the first tensor in
 * llama-quantize's order (the one it would stop at) that changes type (types[i] differs from its
 * input type), needs importance data (plan_needs_imatrix) and has none (importance NULL, or its
 * entry NULL). mix is the plan's mix (general.file_type; another number for a plan that is no
 * mix). */
int plan_check_imatrix(const model *m, int mix, const int *types, const float *const *importance, slmc_err *err);

#endif
