/* plan.c - llama.cpp's per-tensor type choice for a quantization mix.
 *
 * How a type is chosen for one tensor (llama_model_quantize_impl + llama_tensor_get_type in
 * llama.cpp's src/llama-quant.cpp, build b4747 era), top to bottom:
 *
 *   1. Is it quantized at all? Only matrices (2+ dims) whose name ends in "weight" and that
 *      are not norms or one of a few small special tensors; --leave-output-tensor,
 *      --include-weights and --exclude-weights remove more. Others keep their type.
 *   2. --token-embedding-type / --output-tensor-type decide those two tensors outright.
 *   3. Else the first --tensor-type override whose regex matches decides.
 *   4. Else, for a quantized mix without --pure, the mix's rules (RULES below) may bump the
 *      base type: they look at the tensor's role (attn_v, ffn_down, ...), its position among
 *      the tensors of that role, and a few model facts (GQA, expert count, architecture).
 *      The very-low-bit mixes (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M: llama.cpp's first
 *      branch after the embeddings, LOW_BIT_MIXES below) have rules of their own for attn_v,
 *      attn_k, ffn_down and attn_output only, no falcon variants, no 70B / 8-expert attn_v
 *      bumps, and count ffn_down positions tensor by tensor even in MoE models.
 *   5. Finally a type whose block does not divide the row length falls back to one that does
 *      (FALLBACKS below), and to F16 when none does.
 *
 * The position counters follow llama.cpp's tensor order: by layer number ("blk.N."), then
 * by name, with the non-layer tensors first.
 *
 * The rules look at names, not at families, so every family gets them the same way; what
 * differs is which names a family has:
 *   - fused Q/K/V (phi3, old phi2 checkpoints): blk.N.attn_qkv.weight has its own rule and
 *     counts as the layer's V projection in n_attention_wv, but it does not advance the attn_v
 *     position (only attn_v tensors do);
 *   - fused gate+up (phi3's ffn_up of 2*n_ff rows) is an ffn_up: no rule in the mixes here;
 *   - no output.weight (gemma, gemma2/3, tied llama 3.2 / qwen3 / qwen2 small): token_embd is
 *     the classifier and takes the output rules (Q6_K, Q8_0 for a row the base block misfits);
 *   - norms of any rank (q/k norms of qwen3 and gemma3, stablelm's 2-D per-head q/k norms,
 *     gemma2's post norms), biases, rope_freqs and rope_factors_long/short stay as they are.
 * Only three facts are per architecture (the helpers after the roles): falcon's own variants,
 * llama.cpp's 70B model type (an attn_v bump) and whether the family's tensor table names an
 * output.weight at all. qwen3 and gemma3 came after b4747; they get the same name rules.
 */
#include "quant/plan.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "formats/meta.h"
#include "codec/types.h"

/* ---------------------------------------------------------------------------------------
 * Mixes
 * ------------------------------------------------------------------------------------- */

typedef struct mix_info {
    int mix;          /* quant_mix (llama_ftype number) */
    const char *name; /* llama-quantize's name for it */
    int base;         /* ggml_type most tensors get */
} mix_info;

static const mix_info MIXES[] = {
    {MIX_F32, "F32", GGML_TYPE_F32},          {MIX_F16, "F16", GGML_TYPE_F16},
    {MIX_BF16, "BF16", GGML_TYPE_BF16},       {MIX_Q4_0, "Q4_0", GGML_TYPE_Q4_0},
    {MIX_Q4_1, "Q4_1", GGML_TYPE_Q4_1},       {MIX_Q5_0, "Q5_0", GGML_TYPE_Q5_0},
    {MIX_Q5_1, "Q5_1", GGML_TYPE_Q5_1},       {MIX_Q8_0, "Q8_0", GGML_TYPE_Q8_0},
    {MIX_Q2_K, "Q2_K", GGML_TYPE_Q2_K},       {MIX_Q3_K_S, "Q3_K_S", GGML_TYPE_Q3_K},
    {MIX_Q3_K_M, "Q3_K_M", GGML_TYPE_Q3_K},   {MIX_Q3_K_L, "Q3_K_L", GGML_TYPE_Q3_K},
    {MIX_Q4_K_S, "Q4_K_S", GGML_TYPE_Q4_K},   {MIX_Q4_K_M, "Q4_K_M", GGML_TYPE_Q4_K},
    {MIX_Q5_K_S, "Q5_K_S", GGML_TYPE_Q5_K},   {MIX_Q5_K_M, "Q5_K_M", GGML_TYPE_Q5_K},
    {MIX_Q6_K, "Q6_K", GGML_TYPE_Q6_K},
    /* i-quant and ternary mixes (llama_model_quantize_impl's default_type): the IQ2_S mix is
     * mostly IQ2_XS, IQ2_M mostly IQ2_S, and IQ3_XS / IQ3_M are IQ3_S mixes */
    {MIX_Q2_K_S, "Q2_K_S", GGML_TYPE_Q2_K},   {MIX_IQ1_S, "IQ1_S", GGML_TYPE_IQ1_S},
    {MIX_IQ1_M, "IQ1_M", GGML_TYPE_IQ1_M},    {MIX_IQ2_XXS, "IQ2_XXS", GGML_TYPE_IQ2_XXS},
    {MIX_IQ2_XS, "IQ2_XS", GGML_TYPE_IQ2_XS}, {MIX_IQ2_S, "IQ2_S", GGML_TYPE_IQ2_XS},
    {MIX_IQ2_M, "IQ2_M", GGML_TYPE_IQ2_S},    {MIX_IQ3_XXS, "IQ3_XXS", GGML_TYPE_IQ3_XXS},
    {MIX_IQ3_XS, "IQ3_XS", GGML_TYPE_IQ3_S},  {MIX_IQ3_S, "IQ3_S", GGML_TYPE_IQ3_S},
    {MIX_IQ3_M, "IQ3_M", GGML_TYPE_IQ3_S},    {MIX_IQ4_NL, "IQ4_NL", GGML_TYPE_IQ4_NL},
    {MIX_IQ4_XS, "IQ4_XS", GGML_TYPE_IQ4_XS}, {MIX_TQ1_0, "TQ1_0", GGML_TYPE_TQ1_0},
    {MIX_TQ2_0, "TQ2_0", GGML_TYPE_TQ2_0},
};
#define N_MIXES (sizeof MIXES / sizeof MIXES[0])

/* llama-quantize accepts these shorter names for the medium k-quant mixes. */
static const struct {
    const char *alias;
    int mix;
} MIX_ALIASES[] = {{"Q3_K", MIX_Q3_K_M}, {"Q4_K", MIX_Q4_K_M}, {"Q5_K", MIX_Q5_K_M}};

static const mix_info *mix_get(int mix) {
    for (size_t i = 0; i < N_MIXES; i++)
        if (MIXES[i].mix == mix) return &MIXES[i];
    return NULL;
}

int quant_mix_from_name(const char *name) {
    if (!name || !*name) return -1;
    for (size_t i = 0; i < N_MIXES; i++)
        if (strcasecmp(name, MIXES[i].name) == 0) return MIXES[i].mix;
    for (size_t i = 0; i < sizeof MIX_ALIASES / sizeof MIX_ALIASES[0]; i++)
        if (strcasecmp(name, MIX_ALIASES[i].alias) == 0) return MIX_ALIASES[i].mix;
    /* a plain ftype number, as llama-quantize also accepts */
    size_t n = strlen(name);
    if (n > 3 || strspn(name, "0123456789") != n) return -1;
    int v = atoi(name);
    return mix_get(v) ? v : -1;
}

const char *quant_mix_name(int mix) {
    const mix_info *mi = mix_get(mix);
    return mi ? mi->name : NULL;
}

int quant_mix_base_type(int mix) {
    const mix_info *mi = mix_get(mix);
    return mi ? mi->base : -1;
}

int plan_override_parse(char *spec, plan_override *ov, slmc_err *err) {
    char *eq = strrchr(spec, '=');
    if (!eq || eq == spec) return slmc_fail(err, NULL, "--tensor-type takes REGEX=TYPE, not '%s'", spec);
    ov->type = type_from_name(eq + 1);
    if (ov->type < 0) return slmc_fail(err, NULL, "unknown tensor type '%s'", eq + 1);
    *eq = 0;
    ov->pattern = spec;
    return 0;
}

void plan_opts_init(plan_opts *o, int mix) {
    memset(o, 0, sizeof *o);
    o->mix = mix;
    o->output_type = -1;
    o->token_embd_type = -1;
}

/* ---------------------------------------------------------------------------------------
 * Which tensors are quantized at all
 * ------------------------------------------------------------------------------------- */

/* Name fragments of tensors llama.cpp never quantizes even though they are 2-D weights:
 * norms, MoE router, BERT position / token-type embeddings, Mamba's conv, RWKV's small
 * mixing matrices, T5's relative position bias. */
static const char *const NEVER_QUANTIZED_PARTS[] = {
    "_norm.weight",          "ffn_gate_inp.weight",        "ssm_conv1d.weight",
    "time_mix_first.weight", "time_mix_w1.weight",         "time_mix_w2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
};
static const char *const NEVER_QUANTIZED_NAMES[] = {"position_embd.weight", "token_types.weight"};

/* ggml's dimension count: trailing dims of size 1 do not count (a 1 x N matrix is 1-D). */
static int ggml_dims(const model_tensor *t) {
    int d = MODEL_MAX_DIMS;
    while (d > 1 && t->ne[d - 1] == 1) d--;
    return d;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* llama.cpp's own test, before any user option except --leave-output-tensor. */
static bool llama_quantizes(const model_tensor *t, bool leave_output) {
    if (!ends_with(t->name, "weight") || ggml_dims(t) < 2) return false;
    if (leave_output && strcmp(t->name, "output.weight") == 0) return false;
    for (size_t i = 0; i < sizeof NEVER_QUANTIZED_PARTS / sizeof NEVER_QUANTIZED_PARTS[0]; i++)
        if (strstr(t->name, NEVER_QUANTIZED_PARTS[i])) return false;
    for (size_t i = 0; i < sizeof NEVER_QUANTIZED_NAMES / sizeof NEVER_QUANTIZED_NAMES[0]; i++)
        if (strcmp(t->name, NEVER_QUANTIZED_NAMES[i]) == 0) return false;
    return true;
}

/* ---------------------------------------------------------------------------------------
 * Tensor roles and model facts the rules look at
 * ------------------------------------------------------------------------------------- */

typedef enum role {
    ROLE_OTHER,       /* no rule: the base type */
    ROLE_OUTPUT,      /* output.weight, or token_embd.weight when there is no output.weight */
    ROLE_TOKEN_EMBD,  /* token_embd.weight next to a separate output.weight */
    ROLE_ATTN_V,      /* blk.N.attn_v.weight */
    ROLE_ATTN_K,      /* blk.N.attn_k.weight */
    ROLE_ATTN_Q,      /* blk.N.attn_q.weight */
    ROLE_FFN_DOWN,    /* blk.N.ffn_down* (also the MoE ffn_down_exps / _shexp) */
    ROLE_ATTN_OUTPUT, /* blk.N.attn_output.weight */
    ROLE_ATTN_QKV,    /* blk.N.attn_qkv.weight (fused Q/K/V) */
    ROLE_FFN_GATE,    /* blk.N.ffn_gate* (also ffn_gate_exps / _shexp) */
    ROLE_FFN_UP,      /* blk.N.ffn_up* (also phi3's fused gate+up, ffn_up_exps / _shexp) */
} role;

/* ---------------------------------------------------------------------------------------
 * Per-family facts (keyed on general.architecture until formats/arch.h carries them)
 * ------------------------------------------------------------------------------------- */

static bool arch_is(const char *arch, const char *const *names) {
    for (; *names; names++)
        if (strcmp(arch, *names) == 0) return true;
    return false;
}

/* Does llama.cpp's tensor table for the family have LLM_TENSOR_OUTPUT? gemma and gemma2 have
 * none (b4747; gemma3 has one, later): there "output.weight" compares with "__missing__", so a
 * stray output.weight is an ordinary matrix and token_embd stays the classifier. */
static bool arch_names_output(const char *arch) {
    static const char *const NO_OUTPUT[] = {"gemma", "gemma2", NULL};
    return !arch_is(arch, NO_OUTPUT);
}

/* llama.cpp's model type LLM_TYPE_70B (llm_load_hparams): llama with 80 layers and GQA (80
 * layers without GQA is "65B"; 8 experts is "8x..."), and qwen2 / qwen2vl / deci / olmo with
 * 80 layers whatever their heads (Qwen2-72B, Qwen2.5-72B). */
static bool arch_is_70b(const model_config *c, int n_expert) {
    static const char *const BY_LAYERS[] = {"qwen2", "qwen2vl", "deci", "olmo", NULL};
    if (c->n_layer != 80) return false;
    if (strcmp(c->arch, "llama") == 0) return n_expert != 8 && c->n_head != c->n_head_kv;
    return arch_is(c->arch, BY_LAYERS);
}

/* Layers with attention, as llama-quantize's sanity check counts them: the layers with KV
 * heads (all of them, or none when head_count_kv is 0), three times over for an
 * encoder-decoder (T5: encoder self, decoder self and cross attention). */
static int attention_layers(const model_config *c) {
    static const char *const ENC_DEC[] = {"t5", "t5encoder", NULL};
    int n = c->n_head_kv > 0 ? (int)c->n_layer : 0;
    return arch_is(c->arch, ENC_DEC) ? 3 * n : n;
}

/* Facts about the whole model that some rules depend on. */
typedef struct model_facts {
    int n_layer;        /* cfg.n_layer: the "n" of the ffn_down position rules */
    int n_attention_wv; /* tensors named *attn_v / *attn_qkv / *attn_kv_b: the "n" of attn_v rules */
    int n_gqa;          /* n_head / n_head_kv (0 when n_head_kv is 0) */
    int n_expert;       /* <arch>.expert_count, 0 for dense models */
    bool falcon;        /* arch "falcon" has its own variants of some rules */
    bool is_70b;        /* llama.cpp's LLM_TYPE_70B (arch_is_70b): attn_v gets Q5_K */
    bool names_output;  /* the family's tensor table has output.weight (arch_names_output) */
    bool has_output;    /* ... and the model has it: a separate classifier (untied embeddings) */
    bool has_imatrix;   /* an importance matrix will be used */
} model_facts;

/* The role of a tensor, tested in llama.cpp's order (the names are matched as substrings,
 * so e.g. "ffn_down_exps" is an ffn_down and "ffn_gate_shexp" an ffn_gate; ffn_gate_inp is
 * never quantized). attn_q, ffn_gate and ffn_up (fused or not) have rules only in the IQ3_XS
 * and IQ3_XXS mixes. */
static role role_of(const char *name, const model_facts *f) {
    if (f->names_output && strcmp(name, "output.weight") == 0) return ROLE_OUTPUT;
    if (strcmp(name, "token_embd.weight") == 0) return f->has_output ? ROLE_TOKEN_EMBD : ROLE_OUTPUT;
    if (strstr(name, "attn_v.weight")) return ROLE_ATTN_V;
    if (strstr(name, "attn_k.weight")) return ROLE_ATTN_K;
    if (strstr(name, "attn_q.weight")) return ROLE_ATTN_Q;
    if (strstr(name, "ffn_down")) return ROLE_FFN_DOWN;
    if (strstr(name, "attn_output.weight")) return ROLE_ATTN_OUTPUT;
    if (strstr(name, "attn_qkv.weight")) return ROLE_ATTN_QKV;
    if (strstr(name, "ffn_gate")) return ROLE_FFN_GATE;
    if (strstr(name, "ffn_up")) return ROLE_FFN_UP;
    return ROLE_OTHER;
}

static void facts_of(const model *m, const plan_opts *o, model_facts *f) {
    memset(f, 0, sizeof *f);
    const model_config *c = &m->cfg;
    f->n_layer = (int)c->n_layer;
    f->n_gqa = c->n_head_kv > 0 ? (int)(c->n_head / c->n_head_kv) : 0;
    char key[64];
    snprintf(key, sizeof key, "%s.expert_count", c->arch);
    int64_t ne = 0;
    if (meta_get_i64(&m->kv, key, &ne) && ne > 0 && ne < INT32_MAX) f->n_expert = (int)ne;
    f->falcon = strcmp(c->arch, "falcon") == 0;
    f->is_70b = arch_is_70b(c, f->n_expert);
    f->names_output = arch_names_output(c->arch);
    f->has_imatrix = o->has_imatrix;
    /* llama-quantize counts over every tensor, quantized or not: one V projection per layer,
     * separate (attn_v), fused (attn_qkv) or compressed (deepseek2's attn_kv_b) */
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const char *name = m->tensors[i].name;
        if (strstr(name, "attn_v.weight") || strstr(name, "attn_qkv.weight") || strstr(name, "attn_kv_b.weight"))
            f->n_attention_wv++;
        else if (f->names_output && strcmp(name, "output.weight") == 0)
            f->has_output = true;
    }
}

/* Layer number of "blk.N.xxx", or -1 for tensors outside the blocks. */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0 || !isdigit((unsigned char)name[4])) return -1;
    long v = strtol(name + 4, NULL, 10);
    return v > INT32_MAX ? INT32_MAX : (int)v;
}

/* llama.cpp walks the tensors sorted by layer number, then by name (its weight map's
 * order); the attn_v and ffn_down counters advance in that order. */
typedef struct order_key {
    int layer;        /* layer_of(name) */
    const char *name; /* tensor name */
    uint64_t index;   /* tensor index in the model */
} order_key;

static int cmp_llama_order(const void *a, const void *b) {
    const order_key *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* ---------------------------------------------------------------------------------------
 * The mix rules
 * ------------------------------------------------------------------------------------- */

/* Where a tensor sits among the tensors of its role, as llama.cpp's counters see it. */
typedef struct position {
    int i;     /* what the rules compare: the attn_v counter (i_attention_wv) for attn_v; for
                * ffn_down / ffn_gate / ffn_up llama.cpp's layer_info: the layer number from the
                * name in a MoE model, else the role's counter */
    int count; /* the role's counter itself (i_ffn_down), also in a MoE model */
    int n;     /* n_attention_wv for attn_v, n_layer for the others */
} position;

/* When a rule applies, by where the tensor sits (i, count and n of its position) and whether
 * an importance matrix is used. */
typedef enum rule_when {
    ALWAYS,
    FIRST_N,        /* i < param */
    FIRST_EIGHTH,   /* i < n/8 */
    FIRST_16TH,     /* i < n/16 */
    MORE_BITS,      /* llama.cpp's use_more_bits: first eighth, last eighth, and every third between */
    MIDDLE,         /* n/8 <= i < 7n/8: neither the first nor the last eighth */
    COUNT_FIRST_EIGHTH, /* count < n/8: the first eighth of the tensors, not of the layers */
    GQA_4,          /* n_head / n_head_kv >= 4 (the V projection is shared by 4+ query heads) */
    GQA_4_OR_EXPERTS_4, /* GQA_4, or 4 or more experts */
    ROWS_MISFIT,    /* the base type's block does not divide the row length */
    WITH_IMATRIX_FIRST_EIGHTH, /* an imatrix is used and i < n/8 */
    WITHOUT_IMATRIX,           /* no imatrix is used */
    WITHOUT_IMATRIX_FIRST_EIGHTH, /* no imatrix is used and i < n/8 */
} rule_when;

/* Which models a rule is for (bits, all must hold). */
enum { FOR_ANY = 0, FOR_FALCON = 1, NOT_FALCON = 2, FOR_EXPERT8 = 4, NOT_EXPERT8 = 8 };

#define ANY_MIX (-1)

typedef struct rule {
    int mix;        /* quant_mix, or ANY_MIX (any quantized mix) */
    role role;      /* tensors it is for */
    int models;     /* FOR_* / NOT_* bits */
    rule_when when; /* position condition */
    int param;      /* N of FIRST_N */
    int type;       /* ggml_type the tensor gets */
} rule;

/* The mixes of llama.cpp's very-low-bit branch (see the header comment): their rules are the
 * first ones of each role below, and their attn_v gets no 70B / 8-expert bump. */
static const int LOW_BIT_MIXES[] = {MIX_IQ1_S, MIX_IQ1_M, MIX_IQ2_XXS, MIX_IQ2_XS, MIX_IQ2_S, MIX_IQ2_M};

static bool is_low_bit_mix(int mix) {
    for (size_t k = 0; k < sizeof LOW_BIT_MIXES / sizeof LOW_BIT_MIXES[0]; k++)
        if (LOW_BIT_MIXES[k] == mix) return true;
    return false;
}

/* For a tensor, the first rule matching (mix, role, model, position) decides; none matching
 * leaves the base type. Rules of one (mix, role) are listed most specific first. */
static const rule RULES[] = {
    /* output.weight (or the tied token_embd): Q6_K, unless the base is Q8_0 already, and Q5_K
     * for the 1- and 2-bit i-quant mixes and IQ3_XXS; Q8_0 when the base type's block does not
     * fit the rows, and always for falcon */
    {ANY_MIX, ROLE_OUTPUT, FOR_FALCON, ALWAYS, 0, GGML_TYPE_Q8_0},
    {ANY_MIX, ROLE_OUTPUT, FOR_ANY, ROWS_MISFIT, 0, GGML_TYPE_Q8_0},
    {MIX_IQ1_S, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ1_M, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_XXS, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_XS, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_S, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_M, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_XXS, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q8_0, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q8_0},
    {ANY_MIX, ROLE_OUTPUT, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q6_K},

    /* token_embd next to a separate output.weight: only the i-quant and ternary mixes
     * change it (a 2-bit base would be too coarse for a lookup table) */
    {MIX_IQ1_S, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ1_M, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XXS, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XS, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_S, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ2_M, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ3_XXS, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_TQ1_0, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_TQ2_0, ROLE_TOKEN_EMBD, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},

    /* attn_v: small (one row per KV head) and sensitive, so most mixes give it more bits */
    /* - very-low-bit branch: Q4_K with GQA >= 4 or 4+ experts, else Q2_K (IQ3_S for IQ2_S / IQ2_M) */
    {MIX_IQ1_S, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ1_S, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ1_M, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ1_M, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XXS, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_XXS, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XS, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_XS, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_S, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_S, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ2_M, ROLE_ATTN_V, FOR_ANY, GQA_4_OR_EXPERTS_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_M, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_S},
    /* - the others (then the 70B and 8-expert bumps of mix_rule_type) */
    {MIX_Q2_K, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q4_K},
    {MIX_Q2_K, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q3_K},
    {MIX_Q2_K_S, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_XXS, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_XXS, ROLE_ATTN_V, FOR_ANY, WITHOUT_IMATRIX, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ3_XS, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_S, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_M, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_M, ROLE_ATTN_V, FOR_ANY, FIRST_N, 2, GGML_TYPE_Q5_K},
    {MIX_Q3_K_M, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_ATTN_V, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ4_NL, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q5_K},
    {MIX_IQ4_XS, ROLE_ATTN_V, FOR_ANY, GQA_4, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_K_M, ROLE_ATTN_V, FOR_ANY, MORE_BITS, 0, GGML_TYPE_Q6_K},
    {MIX_Q5_K_M, ROLE_ATTN_V, FOR_ANY, MORE_BITS, 0, GGML_TYPE_Q6_K},
    {MIX_Q4_K_S, ROLE_ATTN_V, FOR_ANY, FIRST_N, 4, GGML_TYPE_Q5_K},

    /* attn_k: 8-expert models (Mixtral) bump it, to Q4_K in the very-low-bit branch and Q8_0
     * in the others; IQ3_XS and IQ3_XXS step it down */
    {MIX_IQ1_S, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ1_M, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_XXS, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_XS, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_S, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ2_M, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {ANY_MIX, ROLE_ATTN_K, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q8_0},
    {MIX_IQ3_XS, ROLE_ATTN_K, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_XXS},
    {MIX_IQ3_XXS, ROLE_ATTN_K, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ2_S},

    /* attn_q: the same step down, for any model */
    {MIX_IQ3_XS, ROLE_ATTN_Q, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ3_XXS},
    {MIX_IQ3_XXS, ROLE_ATTN_Q, FOR_ANY, ALWAYS, 0, GGML_TYPE_IQ2_S},

    /* ffn_down: the largest error source; first layers matter most */
    /* - very-low-bit branch: the first eighth of the ffn_down tensors (counted one by one, also
     *   in MoE models) Q2_K, IQ3_S for IQ2_S / IQ2_M */
    {MIX_IQ1_S, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_Q2_K},
    {MIX_IQ1_M, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XXS, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_XS, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_Q2_K},
    {MIX_IQ2_S, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ2_M, ROLE_FFN_DOWN, FOR_ANY, COUNT_FIRST_EIGHTH, 0, GGML_TYPE_IQ3_S},
    /* - the others */
    {MIX_Q2_K, ROLE_FFN_DOWN, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q3_K},
    {MIX_Q2_K_S, ROLE_FFN_DOWN, FOR_ANY, FIRST_EIGHTH, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_XXS, ROLE_FFN_DOWN, FOR_ANY, WITHOUT_IMATRIX_FIRST_EIGHTH, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_XXS, ROLE_FFN_DOWN, FOR_ANY, WITHOUT_IMATRIX, 0, GGML_TYPE_Q3_K},
    {MIX_Q3_K_M, ROLE_FFN_DOWN, FOR_ANY, FIRST_16TH, 0, GGML_TYPE_Q5_K},
    {MIX_Q3_K_M, ROLE_FFN_DOWN, NOT_FALCON, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_M, ROLE_FFN_DOWN, FOR_FALCON, MORE_BITS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_M, ROLE_FFN_DOWN, FOR_ANY, FIRST_EIGHTH, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_M, ROLE_FFN_DOWN, FOR_EXPERT8, MORE_BITS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_FFN_DOWN, FOR_FALCON, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_FFN_DOWN, NOT_FALCON, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_K_M, ROLE_FFN_DOWN, FOR_FALCON, FIRST_16TH, 0, GGML_TYPE_Q6_K},
    {MIX_Q4_K_M, ROLE_FFN_DOWN, FOR_FALCON, MORE_BITS, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_K_M, ROLE_FFN_DOWN, NOT_FALCON, MORE_BITS, 0, GGML_TYPE_Q6_K},
    {MIX_IQ4_NL, ROLE_FFN_DOWN, FOR_ANY, WITHOUT_IMATRIX_FIRST_EIGHTH, 0, GGML_TYPE_Q5_K},
    {MIX_IQ4_XS, ROLE_FFN_DOWN, FOR_ANY, WITHOUT_IMATRIX_FIRST_EIGHTH, 0, GGML_TYPE_Q5_K},
    {MIX_Q5_K_M, ROLE_FFN_DOWN, FOR_ANY, MORE_BITS, 0, GGML_TYPE_Q6_K},
    {MIX_Q4_K_S, ROLE_FFN_DOWN, NOT_FALCON, FIRST_EIGHTH, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_0, ROLE_FFN_DOWN, FOR_ANY, WITH_IMATRIX_FIRST_EIGHTH, 0, GGML_TYPE_Q4_1},
    {MIX_Q5_0, ROLE_FFN_DOWN, FOR_ANY, WITH_IMATRIX_FIRST_EIGHTH, 0, GGML_TYPE_Q5_1},

    /* attn_output */
    /* - very-low-bit branch (falcon included): Q5_K with 8 experts, else IQ2_XXS for the IQ1
     *   mixes and IQ3_S for IQ2_S / IQ2_M */
    {MIX_IQ1_S, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ1_M, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_XXS, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_XS, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_S, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ2_M, ROLE_ATTN_OUTPUT, FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ1_S, ROLE_ATTN_OUTPUT, NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_IQ2_XXS},
    {MIX_IQ1_M, ROLE_ATTN_OUTPUT, NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_IQ2_XXS},
    {MIX_IQ2_S, ROLE_ATTN_OUTPUT, NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_IQ2_M, ROLE_ATTN_OUTPUT, NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_IQ3_S},
    /* - the others: not for falcon; with 8 experts Q5_K for most mixes below Q5 */
    {MIX_Q2_K, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q3_K_S, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q3_K_M, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_K_S, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q4_K_M, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_XXS, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_XS, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_S, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_M, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ4_NL, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ4_XS, ROLE_ATTN_OUTPUT, NOT_FALCON | FOR_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q2_K, ROLE_ATTN_OUTPUT, NOT_FALCON | NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_Q3_K},
    {MIX_IQ3_XXS, ROLE_ATTN_OUTPUT, NOT_FALCON | NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_IQ3_S},
    {MIX_Q3_K_M, ROLE_ATTN_OUTPUT, NOT_FALCON | NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_ATTN_OUTPUT, NOT_FALCON | NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_IQ3_M, ROLE_ATTN_OUTPUT, NOT_FALCON | NOT_EXPERT8, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_ATTN_OUTPUT, FOR_FALCON, ALWAYS, 0, GGML_TYPE_Q4_K},

    /* attn_qkv (fused): one step up for the M/L mixes */
    {MIX_Q3_K_M, ROLE_ATTN_QKV, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q3_K_L, ROLE_ATTN_QKV, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_IQ3_M, ROLE_ATTN_QKV, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q4_K},
    {MIX_Q4_K_M, ROLE_ATTN_QKV, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q5_K},
    {MIX_Q5_K_M, ROLE_ATTN_QKV, FOR_ANY, ALWAYS, 0, GGML_TYPE_Q6_K},

    /* ffn_gate / ffn_up: IQ3_XS steps the middle layers down to IQ3_XXS (the first and last
     * eighth keep IQ3_S) */
    {MIX_IQ3_XS, ROLE_FFN_GATE, FOR_ANY, MIDDLE, 0, GGML_TYPE_IQ3_XXS},
    {MIX_IQ3_XS, ROLE_FFN_UP, FOR_ANY, MIDDLE, 0, GGML_TYPE_IQ3_XXS},
};
#define N_RULES (sizeof RULES / sizeof RULES[0])

/* llama.cpp's use_more_bits(i, n): the first and last eighth of the layers, and every third
 * layer in between. */
static bool use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static bool rule_fits_model(const rule *r, const model_facts *f) {
    bool expert8 = f->n_expert == 8;
    if ((r->models & FOR_FALCON) && !f->falcon) return false;
    if ((r->models & NOT_FALCON) && f->falcon) return false;
    if ((r->models & FOR_EXPERT8) && !expert8) return false;
    if ((r->models & NOT_EXPERT8) && expert8) return false;
    return true;
}

/* Does rule r's condition hold for a tensor at position p, row length ncols? */
static bool rule_when_holds(const rule *r, const position *p, int64_t ncols, int base, const model_facts *f) {
    int i = p->i, n = p->n;
    switch (r->when) {
    case ALWAYS: return true;
    case FIRST_N: return i < r->param;
    case FIRST_EIGHTH: return i < n / 8;
    case FIRST_16TH: return i < n / 16;
    case MORE_BITS: return use_more_bits(i, n);
    case MIDDLE: return i >= n / 8 && i < 7 * n / 8;
    case COUNT_FIRST_EIGHTH: return p->count < n / 8;
    case GQA_4: return f->n_gqa >= 4;
    case GQA_4_OR_EXPERTS_4: return f->n_gqa >= 4 || f->n_expert >= 4;
    case ROWS_MISFIT: return ncols % type_get(base)->blck_size != 0;
    case WITH_IMATRIX_FIRST_EIGHTH: return f->has_imatrix && i < n / 8;
    case WITHOUT_IMATRIX: return !f->has_imatrix;
    case WITHOUT_IMATRIX_FIRST_EIGHTH: return !f->has_imatrix && i < n / 8;
    }
    return false;
}

/* The type the mix's rules give a tensor of role `ro` at position p. */
static int mix_rule_type(int mix, int base, role ro, const position *p, int64_t ncols, const model_facts *f) {
    int type = base;
    for (size_t k = 0; k < N_RULES; k++) {
        const rule *r = &RULES[k];
        if (r->role != ro || (r->mix != ANY_MIX && r->mix != mix)) continue;
        if (!rule_fits_model(r, f) || !rule_when_holds(r, p, ncols, base, f)) continue;
        type = r->type;
        break;
    }
    if (ro == ROLE_ATTN_V && !is_low_bit_mix(mix)) {
        /* 70B llama: 8 query heads share each V head, so attn_v is 8x smaller than attn_q
         * and more bits for it cost almost nothing */
        if (f->is_70b && (type == GGML_TYPE_Q3_K || type == GGML_TYPE_Q4_K)) type = GGML_TYPE_Q5_K;
        /* 8-expert models: attn_v is tiny next to the experts */
        if (f->n_expert == 8) type = GGML_TYPE_Q8_0;
    }
    return type;
}

/* ---------------------------------------------------------------------------------------
 * Fallbacks for rows the block does not divide
 * ------------------------------------------------------------------------------------- */

/* The next type to try when `type`'s block does not divide the row length. llama.cpp b4747
 * sends the 256-blocks to 32-blocks of about the same size; for the 32-block types it has
 * no fallback (and refuses the model); here those go to F16 like a failed fallback does. */
static const struct {
    int from, to;
} FALLBACKS[] = {
    {GGML_TYPE_Q2_K, GGML_TYPE_IQ4_NL},    {GGML_TYPE_Q3_K, GGML_TYPE_IQ4_NL},
    {GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ4_NL}, {GGML_TYPE_IQ2_XS, GGML_TYPE_IQ4_NL},
    {GGML_TYPE_IQ2_S, GGML_TYPE_IQ4_NL},   {GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ4_NL},
    {GGML_TYPE_IQ3_S, GGML_TYPE_IQ4_NL},   {GGML_TYPE_IQ1_S, GGML_TYPE_IQ4_NL},
    {GGML_TYPE_IQ1_M, GGML_TYPE_IQ4_NL},   {GGML_TYPE_IQ4_XS, GGML_TYPE_IQ4_NL},
    {GGML_TYPE_TQ1_0, GGML_TYPE_Q4_0},     {GGML_TYPE_TQ2_0, GGML_TYPE_Q4_0},
    {GGML_TYPE_Q4_K, GGML_TYPE_Q5_0},      {GGML_TYPE_Q5_K, GGML_TYPE_Q5_1},
    {GGML_TYPE_Q6_K, GGML_TYPE_Q8_0},
    {GGML_TYPE_Q4_0, GGML_TYPE_F16},       {GGML_TYPE_Q4_1, GGML_TYPE_F16},
    {GGML_TYPE_Q5_0, GGML_TYPE_F16},       {GGML_TYPE_Q5_1, GGML_TYPE_F16},
    {GGML_TYPE_Q8_0, GGML_TYPE_F16},       {GGML_TYPE_IQ4_NL, GGML_TYPE_F16},
};

static bool block_fits(int type, int64_t ncols) {
    return ncols % type_get(type)->blck_size == 0;
}

/* A type whose block divides ncols: `type` itself, its fallback, or F16. -1 when `type`
 * does not fit and has no fallback (Q8_K, MXFP4, ...). */
static int fit_rows(int type, int64_t ncols) {
    if (block_fits(type, ncols)) return type;
    for (size_t k = 0; k < sizeof FALLBACKS / sizeof FALLBACKS[0]; k++) {
        if (FALLBACKS[k].from != type) continue;
        int to = FALLBACKS[k].to;
        return block_fits(to, ncols) ? to : GGML_TYPE_F16;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * Name patterns (--tensor-type, --include-weights, --exclude-weights)
 * ------------------------------------------------------------------------------------- */

typedef struct regex_list {
    pcre2_code **code;        /* [n] compiled patterns */
    int n;
    pcre2_match_data *md;     /* scratch for matching, shared */
} regex_list;

static void regex_list_free(regex_list *rl) {
    for (int i = 0; i < rl->n; i++) pcre2_code_free(rl->code[i]);
    free(rl->code);
    pcre2_match_data_free(rl->md);
    memset(rl, 0, sizeof *rl);
}

/* Compile n patterns; `what` names the option in error messages. */
static int regex_list_compile(regex_list *rl, const char *const *patterns, int n, const char *what,
                              slmc_err *err) {
    memset(rl, 0, sizeof *rl);
    if (n <= 0) return 0;
    rl->code = calloc((size_t)n, sizeof *rl->code);
    rl->md = pcre2_match_data_create(1, NULL);
    if (!rl->code || !rl->md) {
        regex_list_free(rl);
        return slmc_fail(err, NULL, "out of memory compiling %s patterns", what);
    }
    for (int i = 0; i < n; i++) {
        if (!patterns[i]) {
            regex_list_free(rl);
            return slmc_fail(err, NULL, "%s pattern %d is missing", what, i + 1);
        }
        int code;
        PCRE2_SIZE off;
        rl->code[i] = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (!rl->code[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            slmc_fail(err, NULL, "%s pattern \"%s\": %s at offset %llu", what, patterns[i], (const char *)msg,
                      (unsigned long long)off);
            regex_list_free(rl);
            return -1;
        }
        rl->n = i + 1;
    }
    return 0;
}

/* Index of the first pattern found anywhere in name, or -1. */
static int regex_list_first_match(const regex_list *rl, const char *name) {
    for (int i = 0; i < rl->n; i++)
        if (pcre2_match(rl->code[i], (PCRE2_SPTR)name, PCRE2_ZERO_TERMINATED, 0, 0, rl->md, NULL) >= 0) return i;
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * The plan
 * ------------------------------------------------------------------------------------- */

bool plan_needs_imatrix(int mix, const char *name, int type) {
    bool embd = strcmp(name, "token_embd.weight") == 0, out = strcmp(name, "output.weight") == 0;
    switch (type) {
    case GGML_TYPE_IQ2_XXS:
    case GGML_TYPE_IQ2_XS:
    case GGML_TYPE_IQ2_S:
    case GGML_TYPE_IQ1_S: return true;
    case GGML_TYPE_IQ1_M: return !embd && !out;
    case GGML_TYPE_Q2_K: return mix == MIX_Q2_K_S && !embd;
    default: return false;
    }
}

static int check_type(int type, const char *what, slmc_err *err) {
    if (type_get(type)) return 0;
    return slmc_fail(err, NULL, "%s: unknown tensor type %d", what, type);
}

static int check_opts(const plan_opts *o, slmc_err *err) {
    if (!mix_get(o->mix)) return slmc_fail(err, NULL, "unknown quantization mix %d", o->mix);
    if (o->output_type >= 0 && check_type(o->output_type, "output tensor type", err)) return -1;
    if (o->token_embd_type >= 0 && check_type(o->token_embd_type, "token embedding type", err)) return -1;
    if (o->n_overrides < 0 || o->n_include < 0 || o->n_exclude < 0 || (o->n_overrides > 0 && !o->overrides) ||
        (o->n_include > 0 && !o->include) || (o->n_exclude > 0 && !o->exclude))
        return slmc_fail(err, NULL, "bad plan options: pattern count without patterns");
    for (int i = 0; i < o->n_overrides; i++)
        if (check_type(o->overrides[i].type, "tensor type override", err)) return -1;
    return 0;
}

/* Tensor indices in llama.cpp's order (cmp_llama_order); malloc'd, NULL when out of memory. */
static uint64_t *llama_order(const model *m) {
    uint64_t n = m->n_tensors;
    order_key *keys = malloc((n ? n : 1) * sizeof *keys);
    uint64_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!keys || !idx) {
        free(keys);
        free(idx);
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++) keys[i] = (order_key){layer_of(m->tensors[i].name), m->tensors[i].name, i};
    qsort(keys, n, sizeof *keys, cmp_llama_order);
    for (uint64_t k = 0; k < n; k++) idx[k] = keys[k].index;
    free(keys);
    return idx;
}

/* Position of every tensor among those of its role (attn_v, ffn_down, ffn_gate, ffn_up) in
 * llama.cpp's order. Only tensors llama.cpp quantizes count, as its counters advance only for
 * them. For MoE models llama.cpp takes the ffn_* position from the layer number in the name
 * instead (and refuses a name without one); the very-low-bit ffn_down rule still uses the count. */
static int positions(const model *m, const plan_opts *o, const model_facts *f, position *pos, slmc_err *err) {
    uint64_t *order = llama_order(m);
    if (!order) return slmc_fail(err, m->path, "out of memory");
    int counter[ROLE_FFN_UP + 1] = {0}; /* llama.cpp's i_attention_wv, i_ffn_down, ... by role */
    for (uint64_t k = 0; k < m->n_tensors; k++) {
        uint64_t i = order[k];
        const model_tensor *t = &m->tensors[i];
        role ro = role_of(t->name, f);
        pos[i] = (position){0, 0, ro == ROLE_ATTN_V ? f->n_attention_wv : f->n_layer};
        if (!llama_quantizes(t, o->leave_output)) continue;
        if (ro != ROLE_ATTN_V && ro != ROLE_FFN_DOWN && ro != ROLE_FFN_GATE && ro != ROLE_FFN_UP) continue;
        pos[i].i = pos[i].count = counter[ro]++;
        if (ro != ROLE_ATTN_V && f->n_expert > 1) {
            pos[i].i = layer_of(t->name);
            if (pos[i].i < 0 || pos[i].i >= f->n_layer) {
                free(order);
                return slmc_fail(err, m->path, "tensor %s: no layer number in [0, %d)", t->name, f->n_layer);
            }
        }
    }
    free(order);
    return 0;
}

/* The type for tensor t, which llama.cpp would quantize and the user did not exclude. */
static int quantized_type(const model_tensor *t, const plan_opts *o, const model_facts *f, const position *pos,
                          const regex_list *overrides) {
    int base = quant_mix_base_type(o->mix);
    role ro = role_of(t->name, f);
    bool is_output = strcmp(t->name, "output.weight") == 0;
    bool is_embd = strcmp(t->name, "token_embd.weight") == 0;

    if (is_embd && o->token_embd_type >= 0) return o->token_embd_type;
    if (is_output && o->output_type >= 0) return o->output_type;
    int k = regex_list_first_match(overrides, t->name);
    if (k >= 0) return o->overrides[k].type;
    if (o->pure || !type_get(base)->quantized) return base;
    /* without output.weight, token_embd is the classifier and follows the output rules,
     * --output-tensor-type included */
    if (ro == ROLE_OUTPUT && o->output_type >= 0) return o->output_type;
    return mix_rule_type(o->mix, base, ro, pos, t->ne[0], f);
}

int quant_plan(const model *m, const plan_opts *o, int *types, slmc_err *err) {
    if (check_opts(o, err)) return -1;
    model_facts f;
    facts_of(m, o, &f);
    /* llama-quantize's sanity check (an assertion there): a model with attention has exactly
     * one V projection per attention layer, whatever the mix */
    int n_attn = attention_layers(&m->cfg);
    if (f.n_attention_wv != 0 && f.n_attention_wv != n_attn)
        return slmc_fail(err, m->path,
                         "%d attn_v/attn_qkv/attn_kv_b tensors for %d attention layers: llama-quantize expects one "
                         "per layer and refuses this model",
                         f.n_attention_wv, n_attn);

    regex_list ovr, inc, exc;
    const char **ovr_patterns = calloc((size_t)(o->n_overrides > 0 ? o->n_overrides : 1), sizeof *ovr_patterns);
    if (!ovr_patterns) return slmc_fail(err, m->path, "out of memory");
    for (int i = 0; i < o->n_overrides; i++) ovr_patterns[i] = o->overrides[i].pattern;
    int rc = regex_list_compile(&ovr, ovr_patterns, o->n_overrides, "--tensor-type", err);
    free(ovr_patterns);
    if (rc) return -1;
    if (regex_list_compile(&inc, o->include, o->n_include, "--include-weights", err)) {
        regex_list_free(&ovr);
        return -1;
    }
    if (regex_list_compile(&exc, o->exclude, o->n_exclude, "--exclude-weights", err)) {
        regex_list_free(&ovr);
        regex_list_free(&inc);
        return -1;
    }

    position *pos = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *pos);
    rc = -1;
    if (!pos) {
        slmc_fail(err, m->path, "out of memory");
        goto done;
    }
    if (positions(m, o, &f, pos, err)) goto done;

    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        bool quantize = llama_quantizes(t, o->leave_output);
        if (quantize && inc.n > 0) quantize = regex_list_first_match(&inc, t->name) >= 0;
        if (quantize && exc.n > 0) quantize = regex_list_first_match(&exc, t->name) < 0;
        if (!quantize) {
            types[i] = model_out_type(t, -1);
            continue;
        }
        int want = quantized_type(t, o, &f, &pos[i], &ovr);
        types[i] = fit_rows(want, t->ne[0]);
        if (types[i] < 0) {
            slmc_fail(err, m->path, "tensor %s: rows of %lld values do not fit %s blocks of %lld, and %s has no fallback",
                      t->name, (long long)t->ne[0], type_name(want), (long long)type_get(want)->blck_size,
                      type_name(want));
            goto done;
        }
    }
    rc = 0;
done:
    free(pos);
    regex_list_free(&ovr);
    regex_list_free(&inc);
    regex_list_free(&exc);
    return rc;
}

/* llama-quantize checks this as it reaches each tensor (after writing the ones before it);
 * here the whole plan is checked first, in its order, so the same tensor is named and nothing
 * is written. */
int plan_check_imatrix(const model *m, int mix, const int *types, const float *const *importance, slmc_err *err) {
    uint64_t *order = llama_order(m);
    if (!order) return slmc_fail(err, m->path, "out of memory");
    int rc = 0;
    for (uint64_t k = 0; k < m->n_tensors && rc == 0; k++) {
        uint64_t i = order[k];
        const model_tensor *t = &m->tensors[i];
        /* a tensor already in its planned type is copied, not quantized */
        if (types[i] == t->type || !plan_needs_imatrix(mix, t->name, types[i])) continue;
        if (importance && importance[i]) continue;
        const char *mix_name = quant_mix_name(mix);
        rc = slmc_fail(err, m->path,
                       "missing importance matrix for tensor %s in a very low-bit quantization (%s%s%s): "
                       "llama-quantize refuses it too; give --imatrix with an entry for this tensor",
                       t->name, type_name(types[i]), mix_name ? " in mix " : "", mix_name ? mix_name : "");
    }
    free(order);
    return rc;
}
