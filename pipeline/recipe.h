/* recipe.h - pipeline recipes: a YAML file naming a source model, variants made of steps
 * (convert, imatrix, prune, distill, quantize, eval) with their options, and quality gates.
 *
 * The parser (recipe.c, libyaml's document API) checks everything it can without touching the
 * models: known keys, option types, step order, gate values. Every error reads
 * "FILE:LINE: what is wrong". Paths in the recipe are relative to the recipe's folder and are
 * stored resolved. The format is documented in docs/pipeline.md.
 */
#ifndef SLMC_PIPELINE_RECIPE_H
#define SLMC_PIPELINE_RECIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

/* What a step does. RS_EVAL is both the recipe's `eval:` section and an optional last step. */
typedef enum recipe_step_kind {
    RS_CONVERT,   /* model -> GGUF (optionally another float type) */
    RS_IMATRIX,   /* model -> importance matrix used by the variant's quantize */
    RS_PRUNE,     /* model -> smaller model */
    RS_DISTILL,   /* student (the variant's model so far) trained on the source as teacher */
    RS_QUANTIZE,  /* model -> one GGUF per type: the variant's outputs */
    RS_EVAL,      /* PPL / KLD settings */
    RS_N_KINDS
} recipe_step_kind;

/* How an option's value is checked and passed on. */
typedef enum recipe_opt_type {
    RO_INT,     /* integer; passed as "FLAG VALUE" */
    RO_FLOAT,   /* finite number */
    RO_STRING,  /* any non-empty scalar */
    RO_PATH,    /* a file relative to the recipe; its content is part of the cache key */
    RO_BOOL,    /* true/false; "FLAG" alone when true */
    RO_AMOUNT,  /* a count or fraction as `slmc prune` takes: 512, 0.75, 11M */
    RO_TYPES,   /* quantize types: a list (or one scalar), canonical upper-case names */
    RO_LIST,    /* a list of strings, "FLAG VALUE" repeated */
} recipe_opt_type;

/* One option a step accepts. */
typedef struct recipe_opt_spec {
    const char *key;       /* YAML key, e.g. "seq_len" */
    const char *flag;      /* slmc flag, e.g. "--seq-len"; NULL when the pipeline handles it */
    recipe_opt_type type;
} recipe_opt_spec;

/* One option as given. */
typedef struct recipe_opt {
    const recipe_opt_spec *spec;  /* points into the kind's table */
    char **values;                /* [n_values] canonical text ("true"/"false" for booleans) */
    int n_values;
    int line;                     /* 1-based line in the recipe */
} recipe_opt;

typedef struct recipe_step {
    recipe_step_kind kind;
    int line;
    recipe_opt *opts;  /* [n_opts], in the order of the kind's table (canonical for hashing) */
    int n_opts;
} recipe_step;

/* Quality gates; a gate that is not set is NAN (or has_max_size false). */
typedef struct recipe_gates {
    double max_ppl_increase;  /* percent over the source's PPL */
    double max_kld;           /* mean KL divergence from the source */
    double min_same_top;      /* share of tokens whose top choice matches the source, 0..1 */
    uint64_t max_size;        /* bytes of the variant's file */
    bool has_max_size;
} recipe_gates;

/* Gates for one quantize type of a variant, overriding the variant's. */
typedef struct recipe_type_gates {
    char *type;          /* canonical type name */
    recipe_gates gates;  /* already merged over the variant's gates */
    int line;
} recipe_type_gates;

typedef struct recipe_variant {
    char *name;                     /* [A-Za-z0-9._-]+, unique in the recipe */
    int line;
    recipe_step *steps;             /* [n_steps] in order; RS_EVAL only last */
    int n_steps;
    recipe_gates gates;             /* recipe-level gates overridden by the variant's */
    recipe_type_gates *type_gates;  /* [n_type_gates] */
    int n_type_gates;
} recipe_variant;

typedef struct recipe {
    char *path;        /* the recipe file as given */
    char *name;        /* `name:`, or the file name without extension */
    char *source;      /* source model path (resolved against the recipe's folder) */
    char *source_text; /* the source as written in the recipe (for reports) */
    char *tokenizer;   /* llama2.c tokenizer.bin or tokenizer.model for the source, or NULL */
    int threads;       /* thread budget, 0 = not given */
    bool has_eval;     /* an `eval:` section was given */
    recipe_step eval;  /* its options (kind RS_EVAL) */
    recipe_variant *variants;
    int n_variants;
} recipe;

/* Parse recipe text. `path` names the file in messages and anchors relative paths.
 * On failure r is left empty (recipe_free is still safe). */
int recipe_parse(recipe *r, const char *path, const char *text, size_t len, slmc_err *err);
/* Read and parse a recipe file. */
int recipe_load(recipe *r, const char *path, slmc_err *err);
void recipe_free(recipe *r);

/* A step kind's name ("quantize"). */
const char *recipe_kind_name(recipe_step_kind kind);

/* The option `key` of a step, or NULL. */
const recipe_opt *recipe_step_opt(const recipe_step *s, const char *key);
/* Its first value, or NULL when absent. */
const char *recipe_step_value(const recipe_step *s, const char *key);
/* The quantize types of a variant (NULL when it has no quantize step). */
const recipe_opt *recipe_variant_types(const recipe_variant *v);
/* Gates that apply to a variant's output of `type` (NULL: the variant has no quantize). */
const recipe_gates *recipe_gates_for(const recipe_variant *v, const char *type);
/* Eval settings of a variant: its own last eval step, else the recipe's section, else NULL. */
const recipe_step *recipe_variant_eval(const recipe *r, const recipe_variant *v);
/* Gates with nothing set (every limit NAN, no size limit). */
recipe_gates recipe_gates_none(void);
/* true when at least one gate is set. */
bool recipe_gates_any(const recipe_gates *g);

/* "5GB", "500MB", "123", "2GiB" into bytes; false when malformed. */
bool recipe_parse_size(const char *s, uint64_t *out);

#endif
