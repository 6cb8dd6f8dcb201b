/* recipe.c - parse and check `slmc pipeline` recipes (see recipe.h, docs/pipeline.md).
 *
 * libyaml's document API loads the whole file into a node tree carrying line numbers; the
 * functions below walk it following the recipe's schema (so anchors and aliases, even cyclic
 * ones, cannot make the walk recurse without end) and copy what they accept into a `recipe`
 * that owns all its strings. Nothing is run or opened here except the recipe file itself.
 */
#include "pipeline/recipe.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "formats/fileio.h"
#include "quant/plan.h"

#define RECIPE_MAX_BYTES (1u << 20) /* a recipe is written by hand: 1 MiB is plenty */
#define RECIPE_MAX_TYPES 32

/* ---- option tables -------------------------------------------------------------------
 * One table per step kind: the YAML key, the slmc flag it becomes, its type, and for
 * strings with a fixed set of values, those values ("a|b|c"). Sorted as they should appear
 * on command lines; the parser stores options in this order, so two recipes that list the
 * same options in another order give the same cache keys. */

typedef struct opt_row {
    recipe_opt_spec spec;
    const char *choices; /* "f32|f16|bf16" or NULL */
    bool required;
} opt_row;

static const opt_row CONVERT_OPTS[] = {
    {{"outtype", "--outtype", RO_STRING}, "f32|f16|bf16", false},
};

static const opt_row IMATRIX_OPTS[] = {
    {{"text", "--text", RO_PATH}, NULL, true},
    {{"ctx", "-c", RO_INT}, NULL, false},
    {{"chunks", "--chunks", RO_INT}, NULL, false},
    {{"process_output", "--process-output", RO_BOOL}, NULL, false},
};

static const opt_row PRUNE_OPTS[] = {
    {{"method", "--method", RO_STRING}, "activation|magnitude|random", false},
    {{"calib", "--calib", RO_PATH}, NULL, false},
    {{"ctx", "-c", RO_INT}, NULL, false},
    {{"chunks", "--chunks", RO_INT}, NULL, false},
    {{"no_layer_ppl", "--no-layer-ppl", RO_BOOL}, NULL, false},
    {{"seed", "--seed", RO_INT}, NULL, false},
    {{"ffn", "--ffn", RO_AMOUNT}, NULL, false},
    {{"heads", "--heads", RO_INT}, NULL, false},
    {{"head_groups", "--head-groups", RO_BOOL}, NULL, false},
    {{"layers", "--layers", RO_INT}, NULL, false},
    {{"drop_layers", "--drop-layers", RO_STRING}, NULL, false},
    {{"hidden", "--hidden", RO_AMOUNT}, NULL, false},
    {{"target_params", "--target-params", RO_AMOUNT}, NULL, false},
    {{"target_scope", "--target-scope", RO_STRING}, "all|blocks", false},
    {{"reconstruct", "--reconstruct", RO_BOOL}, NULL, false},
    {{"refit", "--refit", RO_BOOL}, NULL, false},
    {{"damp", "--damp", RO_FLOAT}, NULL, false},
    {{"outtype", "--outtype", RO_STRING}, "f32|f16|bf16", false},
};

static const opt_row DISTILL_OPTS[] = {
    {{"data", "--data", RO_PATH}, NULL, true},
    {{"steps", "--steps", RO_INT}, NULL, false},
    {{"seq_len", "--seq-len", RO_INT}, NULL, false},
    {{"batch", "--batch", RO_INT}, NULL, false},
    {{"grad_accum", "--grad-accum", RO_INT}, NULL, false},
    {{"lr", "--lr", RO_FLOAT}, NULL, false},
    {{"min_lr", "--min-lr", RO_FLOAT}, NULL, false},
    {{"warmup", "--warmup", RO_INT}, NULL, false},
    {{"weight_decay", "--weight-decay", RO_FLOAT}, NULL, false},
    {{"clip", "--clip", RO_FLOAT}, NULL, false},
    {{"seed", "--seed", RO_INT}, NULL, false},
    {{"temperature", "--temperature", RO_FLOAT}, NULL, false},
    {{"alpha", "--alpha", RO_FLOAT}, NULL, false},
    {{"reverse_kl", "--reverse-kl", RO_BOOL}, NULL, false},
    {{"loss", "--loss", RO_STRING}, "kl|reverse-kl|jsd|tvd", false},
    {{"jsd_beta", "--jsd-beta", RO_FLOAT}, NULL, false},
    {{"valid_frac", "--valid-frac", RO_FLOAT}, NULL, false},
    {{"eval_every", "--eval-every", RO_INT}, NULL, false},
    {{"eval_seqs", "--eval-seqs", RO_INT}, NULL, false},
    {{"max_tokens", "--max-tokens", RO_INT}, NULL, false},
    {{"outtype", "--outtype", RO_STRING}, "f32|f16|bf16", false},
};

static const opt_row QUANTIZE_OPTS[] = {
    {{"types", NULL, RO_TYPES}, NULL, true},
    {{"imatrix", NULL, RO_BOOL}, NULL, false}, /* use the variant's imatrix step (default true) */
    {{"pure", "--pure", RO_BOOL}, NULL, false},
    {{"leave_output_tensor", "--leave-output-tensor", RO_BOOL}, NULL, false},
    {{"output_tensor_type", "--output-tensor-type", RO_STRING}, NULL, false},
    {{"token_embedding_type", "--token-embedding-type", RO_STRING}, NULL, false},
    {{"tensor_type", "--tensor-type", RO_LIST}, NULL, false},
    {{"method", "--method", RO_STRING}, "plain|gptq", false},
    {{"calib", "--calib", RO_PATH}, NULL, false},
    {{"ctx", "-c", RO_INT}, NULL, false},
    {{"chunks", "--chunks", RO_INT}, NULL, false},
    {{"damp", "--damp", RO_FLOAT}, NULL, false},
};

static const opt_row EVAL_OPTS[] = {
    {{"text", "--text", RO_PATH}, NULL, true},
    {{"ctx", "-c", RO_INT}, NULL, false},
    {{"chunks", "--chunks", RO_INT}, NULL, false},
};

typedef struct kind_row {
    const char *name;
    const opt_row *opts;
    int n_opts;
} kind_row;

#define ROWS(t) t, (int)(sizeof t / sizeof *t)
static const kind_row KINDS[RS_N_KINDS] = {
    [RS_CONVERT] = {"convert", ROWS(CONVERT_OPTS)},   [RS_IMATRIX] = {"imatrix", ROWS(IMATRIX_OPTS)},
    [RS_PRUNE] = {"prune", ROWS(PRUNE_OPTS)},         [RS_DISTILL] = {"distill", ROWS(DISTILL_OPTS)},
    [RS_QUANTIZE] = {"quantize", ROWS(QUANTIZE_OPTS)}, [RS_EVAL] = {"eval", ROWS(EVAL_OPTS)},
};

const char *recipe_kind_name(recipe_step_kind kind) {
    return kind < RS_N_KINDS ? KINDS[kind].name : "?";
}

/* ---- small helpers --------------------------------------------------------------------- */

/* Parser state: the document being walked and where errors go. */
typedef struct parser {
    const char *path;    /* recipe file name for messages */
    char *dir;           /* its folder ("" when none): relative paths are joined to it */
    yaml_document_t *doc;
    slmc_err *err;
} parser;

/* "FILE:LINE: message" and -1. */
static int vfail_line(parser *p, int line, const char *fmt, va_list ap) {
    char msg[SLMC_ERR_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return slmc_fail(p->err, NULL, "%s:%d: %s", p->path, line, msg);
}

__attribute__((format(printf, 3, 4))) static int fail_line(parser *p, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_line(p, line, fmt, ap);
    va_end(ap);
    return rc;
}

/* The same at a node's first line. */
__attribute__((format(printf, 3, 4))) static int fail_at(parser *p, const yaml_node_t *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_line(p, n ? (int)n->start_mark.line + 1 : 1, fmt, ap);
    va_end(ap);
    return rc;
}

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static yaml_node_t *node(parser *p, int id) { return yaml_document_get_node(p->doc, id); }

/* A scalar's text, or NULL when the node is not a scalar. */
static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain empty, "~" or "null" scalar: YAML's null. */
static bool is_null(const yaml_node_t *n) {
    const char *s = scalar(n);
    if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* A non-empty scalar without NUL bytes, or an error naming `what`. */
static int text_of(parser *p, const yaml_node_t *n, const char *what, const char **out) {
    const char *s = scalar(n);
    if (!s) return fail_at(p, n, "%s must be a single value, not a %s", what, n->type == YAML_MAPPING_NODE ? "mapping" : "list");
    if (strlen(s) != n->data.scalar.length) return fail_at(p, n, "%s contains a NUL byte", what);
    if (!*s || is_null(n)) return fail_at(p, n, "%s is empty", what);
    *out = s;
    return 0;
}

static char *dup_or_fail(parser *p, const yaml_node_t *n, const char *s) {
    char *d = strdup(s);
    if (!d) fail_at(p, n, "out of memory");
    return d;
}

/* Relative paths are taken from the recipe's folder. */
static char *resolve_path(parser *p, const yaml_node_t *n, const char *s) {
    if (s[0] == '/' || !p->dir[0]) return dup_or_fail(p, n, s);
    char *j = path_join(p->dir, s);
    if (!j) fail_at(p, n, "out of memory");
    return j;
}

/* Iterate a mapping's pairs checking keys are unique scalars. Returns the pair count or -1. */
static int check_mapping(parser *p, const yaml_node_t *n, const char *what) {
    if (!n || n->type != YAML_MAPPING_NODE) return fail_at(p, n, "%s must be a mapping (key: value lines)", what);
    yaml_node_pair_t *a = n->data.mapping.pairs.start;
    int count = (int)(n->data.mapping.pairs.top - a);
    for (int i = 0; i < count; i++) {
        const yaml_node_t *k = node(p, a[i].key);
        const char *ks = scalar(k);
        if (!ks) return fail_at(p, k, "%s: keys must be plain names", what);
        for (int j = 0; j < i; j++)
            if (strcmp(ks, scalar(node(p, a[j].key))) == 0) return fail_at(p, k, "%s: duplicate key '%s'", what, ks);
    }
    return count;
}

static const char *pair_key(parser *p, const yaml_node_t *map, int i) {
    return scalar(node(p, map->data.mapping.pairs.start[i].key));
}
static yaml_node_t *pair_key_node(parser *p, const yaml_node_t *map, int i) {
    return node(p, map->data.mapping.pairs.start[i].key);
}
static yaml_node_t *pair_value(parser *p, const yaml_node_t *map, int i) {
    return node(p, map->data.mapping.pairs.start[i].value);
}

/* Parse a whole decimal integer >= 0. */
static bool parse_uint(const char *s, long long *out) {
    if (!isdigit((unsigned char)s[0])) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno) return false;
    *out = v;
    return true;
}

/* Parse a whole finite number. */
static bool parse_double(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* A number with an optional trailing '%' (percent). */
static bool parse_percent(const char *s, double *out, bool *had_percent) {
    size_t n = strlen(s);
    *had_percent = n > 0 && s[n - 1] == '%';
    if (!*had_percent) return parse_double(s, out);
    char buf[64];
    if (n - 1 >= sizeof buf) return false;
    memcpy(buf, s, n - 1);
    buf[n - 1] = '\0';
    return parse_double(buf, out);
}

bool recipe_parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v)) return false;
    static const struct { const char *suffix; double mul; } units[] = {
        {"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6}, {"G", 1e9}, {"GB", 1e9},
        {"T", 1e12}, {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
    };
    while (*end == ' ') end++;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (strcasecmp(end, units[i].suffix) == 0) {
            v *= units[i].mul;
            if (v >= 1.8e19) return false;
            *out = (uint64_t)v;
            return true;
        }
    return false;
}

/* 512, 0.75, 11M, 1.5B: what `slmc prune` takes for counts or fractions. */
static bool parse_amount(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !isfinite(v)) return false;
    if (*end && strchr("KkMmBbGg", *end)) end++;
    return *end == '\0';
}

static bool parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = true; return true; }
        if (strcasecmp(s, no[i]) == 0) { *out = false; return true; }
    }
    return false;
}

/* Canonical type name for `s` (case-insensitive, aliases resolved), or NULL. */
/* A quantize type's canonical name (llama.cpp's mixes, quant/plan.h: "q4_k" -> "Q4_K_M"), or
 * NULL when `slmc quantize` does not know it. */
static const char *canonical_type(const char *s) {
    return quant_mix_name(quant_mix_from_name(s));
}

static bool in_choices(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, s, n) == 0) return true;
        if (!bar) break;
        c = bar + 1;
    }
    return false;
}

static bool valid_name(const char *s) {
    if (!*s || strlen(s) > 100 || s[0] == '.') return false;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-", *c)) return false;
    return true;
}

/* ---- freeing ---------------------------------------------------------------------------- */

static void free_step(recipe_step *s) {
    for (int i = 0; i < s->n_opts; i++) {
        for (int j = 0; j < s->opts[i].n_values; j++) free(s->opts[i].values[j]);
        free(s->opts[i].values);
    }
    free(s->opts);
    s->opts = NULL;
    s->n_opts = 0;
}

void recipe_free(recipe *r) {
    if (!r) return;
    free(r->path);
    free(r->name);
    free(r->source);
    free(r->source_text);
    free(r->tokenizer);
    free_step(&r->eval);
    for (int i = 0; i < r->n_variants; i++) {
        recipe_variant *v = &r->variants[i];
        free(v->name);
        for (int j = 0; j < v->n_steps; j++) free_step(&v->steps[j]);
        free(v->steps);
        for (int j = 0; j < v->n_type_gates; j++) free(v->type_gates[j].type);
        free(v->type_gates);
    }
    free(r->variants);
    memset(r, 0, sizeof *r);
}

/* ---- options ---------------------------------------------------------------------------- */

/* Append a value to an option. */
static int opt_push(parser *p, const yaml_node_t *n, recipe_opt *o, char *value) {
    if (!value) return -1;
    char **v = realloc(o->values, (size_t)(o->n_values + 1) * sizeof *v);
    if (!v) { free(value); return fail_at(p, n, "out of memory"); }
    o->values = v;
    o->values[o->n_values++] = value;
    return 0;
}

/* quantize `types`: a list, or one scalar which may be comma-separated. */
static int parse_types(parser *p, const yaml_node_t *n, recipe_opt *o) {
    const yaml_node_t *items[RECIPE_MAX_TYPES + 1];
    int n_items = 0;
    char list[512];
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            if (n_items > RECIPE_MAX_TYPES) return fail_at(p, n, "quantize: more than %d types", RECIPE_MAX_TYPES);
            items[n_items++] = node(p, *it);
        }
        if (!n_items) return fail_at(p, n, "quantize: types is an empty list");
    } else {
        items[n_items++] = n;
    }
    for (int i = 0; i < n_items; i++) {
        const char *s;
        if (text_of(p, items[i], "quantize: a type", &s)) return -1;
        if (strlen(s) >= sizeof list) return fail_at(p, items[i], "quantize: types value is too long");
        strcpy(list, s);
        for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            const char *c = canonical_type(t);
            if (!c) return fail_at(p, items[i], "quantize: unknown type '%s' (the mixes of slmc quantize --help)", t);
            for (int j = 0; j < o->n_values; j++)
                if (strcmp(o->values[j], c) == 0) return fail_at(p, items[i], "quantize: type %s is listed twice", c);
            if (o->n_values >= RECIPE_MAX_TYPES) return fail_at(p, items[i], "quantize: more than %d types", RECIPE_MAX_TYPES);
            if (opt_push(p, items[i], o, dup_or_fail(p, items[i], c))) return -1;
        }
    }
    if (!o->n_values) return fail_at(p, n, "quantize: types is empty");
    return 0;
}

/* One option value by its type into o->values. */
static int parse_opt_value(parser *p, const char *kind, const opt_row *row, const yaml_node_t *n, recipe_opt *o) {
    const recipe_opt_spec *sp = &row->spec;
    char what[96];
    snprintf(what, sizeof what, "%s: %s", kind, sp->key);
    if (sp->type == RO_TYPES) return parse_types(p, n, o);
    if (sp->type == RO_LIST) {
        if (n->type != YAML_SEQUENCE_NODE) {
            const char *s;
            if (text_of(p, n, what, &s)) return -1;
            return opt_push(p, n, o, dup_or_fail(p, n, s));
        }
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            const yaml_node_t *item = node(p, *it);
            const char *s;
            if (text_of(p, item, what, &s) || opt_push(p, item, o, dup_or_fail(p, item, s))) return -1;
        }
        if (!o->n_values) return fail_at(p, n, "%s is an empty list", what);
        return 0;
    }
    const char *s;
    if (text_of(p, n, what, &s)) return -1;
    long long iv;
    double dv;
    bool bv;
    switch (sp->type) {
    case RO_INT:
        if (!parse_uint(s, &iv)) return fail_at(p, n, "%s must be a whole number >= 0, not '%s'", what, s);
        break;
    case RO_FLOAT:
        if (!parse_double(s, &dv)) return fail_at(p, n, "%s must be a number, not '%s'", what, s);
        break;
    case RO_AMOUNT:
        if (!parse_amount(s)) return fail_at(p, n, "%s must be a count (512, 11M) or a fraction (0.75), not '%s'", what, s);
        break;
    case RO_BOOL:
        if (!parse_bool(s, &bv)) return fail_at(p, n, "%s must be true or false, not '%s'", what, s);
        return opt_push(p, n, o, dup_or_fail(p, n, bv ? "true" : "false"));
    case RO_PATH: return opt_push(p, n, o, resolve_path(p, n, s));
    default: break;
    }
    if (row->choices && !in_choices(row->choices, s))
        return fail_at(p, n, "%s must be one of %s, not '%s'", what, row->choices, s);
    return opt_push(p, n, o, dup_or_fail(p, n, s));
}

/* The options mapping of a step (or NULL / null for none) into s->opts, in table order.
 * `where` is the node missing options are reported at. */
static int parse_step_opts(parser *p, recipe_step *s, const yaml_node_t *n, const yaml_node_t *where) {
    const kind_row *k = &KINDS[s->kind];
    s->opts = calloc((size_t)k->n_opts, sizeof *s->opts);
    if (!s->opts) return fail_at(p, n, "out of memory");
    int count = 0;
    const yaml_node_t *vals[32] = {0}; /* per table row: its value node */
    const yaml_node_t *keys[32] = {0};
    if (n && !is_null(n)) {
        char what[64];
        snprintf(what, sizeof what, "%s options", k->name);
        if ((count = check_mapping(p, n, what)) < 0) return -1;
    }
    for (int i = 0; i < count; i++) {
        const char *key = pair_key(p, n, i);
        int row = -1;
        for (int j = 0; j < k->n_opts; j++)
            if (strcmp(key, k->opts[j].spec.key) == 0) row = j;
        if (row < 0) {
            char known[512] = "";
            for (int j = 0; j < k->n_opts; j++) {
                if (j) strncat(known, ", ", sizeof known - strlen(known) - 1);
                strncat(known, k->opts[j].spec.key, sizeof known - strlen(known) - 1);
            }
            return fail_at(p, pair_key_node(p, n, i), "%s: unknown option '%s' (options: %s)", k->name, key, known);
        }
        vals[row] = pair_value(p, n, i);
        keys[row] = pair_key_node(p, n, i);
    }
    for (int j = 0; j < k->n_opts; j++) {
        if (!vals[j]) {
            if (k->opts[j].required)
                return fail_at(p, where, "%s needs the option '%s'", k->name, k->opts[j].spec.key);
            continue;
        }
        recipe_opt *o = &s->opts[s->n_opts++];
        o->spec = &k->opts[j].spec;
        o->line = line_of(keys[j]);
        if (parse_opt_value(p, k->name, &k->opts[j], vals[j], o)) return -1;
    }
    return 0;
}

/* A step: "- quantize: {types: [...]}" or "- convert" alone. */
static int parse_step(parser *p, recipe_step *s, const yaml_node_t *n) {
    const char *kind_name;
    const yaml_node_t *opts = NULL;
    if (n->type == YAML_SCALAR_NODE) {
        if (text_of(p, n, "a step", &kind_name)) return -1;
    } else if (n->type == YAML_MAPPING_NODE) {
        int count = check_mapping(p, n, "a step");
        if (count < 0) return -1;
        if (count != 1)
            return fail_at(p, n, "a step is one 'kind: options' pair, e.g. '- quantize: {types: [Q4_K_M]}' (found %d keys)", count);
        kind_name = pair_key(p, n, 0);
        opts = pair_value(p, n, 0);
    } else {
        return fail_at(p, n, "a step must be 'kind: options', not a list");
    }
    s->line = line_of(n);
    int kind = -1;
    for (int k = 0; k < RS_N_KINDS; k++)
        if (strcmp(kind_name, KINDS[k].name) == 0) kind = k;
    if (kind < 0)
        return fail_at(p, n, "unknown step '%s' (steps: convert, imatrix, prune, distill, quantize, eval)", kind_name);
    s->kind = (recipe_step_kind)kind;
    return parse_step_opts(p, s, opts, n);
}

/* ---- gates ------------------------------------------------------------------------------ */

recipe_gates recipe_gates_none(void) {
    recipe_gates g = {.max_ppl_increase = NAN, .max_kld = NAN, .min_same_top = NAN, .max_size = 0, .has_max_size = false};
    return g;
}

bool recipe_gates_any(const recipe_gates *g) {
    return !isnan(g->max_ppl_increase) || !isnan(g->max_kld) || !isnan(g->min_same_top) || g->has_max_size;
}

static bool is_gate_key(const char *k) {
    return strcmp(k, "max_ppl_increase") == 0 || strcmp(k, "max_kld") == 0 || strcmp(k, "min_same_top") == 0 ||
           strcmp(k, "max_size") == 0;
}

/* One gate key into g; returns 1 when `key` is not a gate name. */
static int parse_gate(parser *p, const char *key, const yaml_node_t *vn, recipe_gates *g) {
    const char *s;
    double v;
    bool pct;
    if (strcmp(key, "max_ppl_increase") == 0) {
        if (text_of(p, vn, "gates: max_ppl_increase", &s)) return -1;
        if (!parse_percent(s, &v, &pct) || v < 0)
            return fail_at(p, vn, "gates: max_ppl_increase must be a percentage >= 0 (5 or 5%%), not '%s'", s);
        g->max_ppl_increase = v;
    } else if (strcmp(key, "max_kld") == 0) {
        if (text_of(p, vn, "gates: max_kld", &s)) return -1;
        if (!parse_double(s, &v) || v < 0) return fail_at(p, vn, "gates: max_kld must be a number >= 0, not '%s'", s);
        g->max_kld = v;
    } else if (strcmp(key, "min_same_top") == 0) {
        if (text_of(p, vn, "gates: min_same_top", &s)) return -1;
        if (!parse_percent(s, &v, &pct)) return fail_at(p, vn, "gates: min_same_top must be a share (0.9 or 90%%), not '%s'", s);
        if (pct) v /= 100.0;
        if (v < 0 || v > 1) return fail_at(p, vn, "gates: min_same_top must be between 0 and 1 (or 0%% and 100%%), not '%s'", s);
        g->min_same_top = v;
    } else if (strcmp(key, "max_size") == 0) {
        if (text_of(p, vn, "gates: max_size", &s)) return -1;
        if (!recipe_parse_size(s, &g->max_size) || g->max_size == 0)
            return fail_at(p, vn, "gates: max_size must be a size (4MB, 1.5GiB, bytes), not '%s'", s);
        g->has_max_size = true;
    } else {
        return 1;
    }
    return 0;
}

/* Overlay the gates set in `over` onto `base`. */
static recipe_gates merge_gates(recipe_gates base, const recipe_gates *over) {
    if (!isnan(over->max_ppl_increase)) base.max_ppl_increase = over->max_ppl_increase;
    if (!isnan(over->max_kld)) base.max_kld = over->max_kld;
    if (!isnan(over->min_same_top)) base.min_same_top = over->min_same_top;
    if (over->has_max_size) { base.max_size = over->max_size; base.has_max_size = true; }
    return base;
}

#define GATE_KEYS "max_ppl_increase, max_kld, min_same_top, max_size"

/* Recipe-level gates: gate keys only. */
static int parse_top_gates(parser *p, const yaml_node_t *n, recipe_gates *g) {
    int count = check_mapping(p, n, "gates");
    if (count < 0) return -1;
    for (int i = 0; i < count; i++) {
        int rc = parse_gate(p, pair_key(p, n, i), pair_value(p, n, i), g);
        if (rc < 0) return -1;
        if (rc > 0)
            return fail_at(p, pair_key_node(p, n, i), "gates: unknown gate '%s' (gates: " GATE_KEYS "; per-type gates go in a variant)",
                           pair_key(p, n, i));
    }
    return 0;
}

/* Variant gates: gate keys, and TYPE: {gates} for one of its quantize types. */
static int parse_variant_gates(parser *p, const yaml_node_t *n, recipe_variant *v, const recipe_opt *types) {
    int count = check_mapping(p, n, "gates");
    if (count < 0) return -1;
    recipe_gates own = recipe_gates_none();
    for (int i = 0; i < count; i++) {
        int rc = parse_gate(p, pair_key(p, n, i), pair_value(p, n, i), &own);
        if (rc < 0) return -1;
        if (rc == 0) continue;
        const char *key = pair_key(p, n, i);
        const yaml_node_t *kn = pair_key_node(p, n, i);
        const char *type = canonical_type(key);
        if (!type) return fail_at(p, kn, "gates: unknown gate '%s' (gates: " GATE_KEYS ", or a quantize type)", key);
        bool listed = false;
        for (int j = 0; types && j < types->n_values; j++) listed |= strcmp(types->values[j], type) == 0;
        if (!listed) return fail_at(p, kn, "gates: variant '%s' does not quantize to %s", v->name, type);
        for (int j = 0; j < v->n_type_gates; j++)
            if (strcmp(v->type_gates[j].type, type) == 0) return fail_at(p, kn, "gates: %s is given twice", type);
    }
    v->gates = merge_gates(v->gates, &own);
    /* Second pass for the per-type mappings, now that the variant's own gates are known. */
    for (int i = 0; i < count; i++) {
        const char *type = canonical_type(pair_key(p, n, i));
        if (!type || is_gate_key(pair_key(p, n, i))) continue;
        const yaml_node_t *tn = pair_value(p, n, i);
        char what[64];
        snprintf(what, sizeof what, "gates: %s", type);
        int tc = check_mapping(p, tn, what);
        if (tc < 0) return -1;
        recipe_gates tg = recipe_gates_none();
        for (int j = 0; j < tc; j++) {
            int rc = parse_gate(p, pair_key(p, tn, j), pair_value(p, tn, j), &tg);
            if (rc < 0) return -1;
            if (rc > 0) return fail_at(p, pair_key_node(p, tn, j), "gates: %s: unknown gate '%s' (gates: " GATE_KEYS ")", type, pair_key(p, tn, j));
        }
        recipe_type_gates *a = realloc(v->type_gates, (size_t)(v->n_type_gates + 1) * sizeof *a);
        if (!a) return fail_at(p, tn, "out of memory");
        v->type_gates = a;
        recipe_type_gates *t = &v->type_gates[v->n_type_gates];
        t->type = dup_or_fail(p, tn, type);
        if (!t->type) return -1;
        t->gates = merge_gates(v->gates, &tg);
        t->line = line_of(tn);
        v->n_type_gates++;
    }
    return 0;
}

/* ---- variants --------------------------------------------------------------------------- */

/* Order rules inside a variant, checked once its steps are parsed. */
static int check_variant_steps(parser *p, const recipe_variant *v) {
    int quantize_at = -1, eval_at = -1, imatrix_at = -1;
    for (int i = 0; i < v->n_steps; i++) {
        const recipe_step *s = &v->steps[i];
        if (eval_at >= 0) return fail_line(p, s->line, "variant '%s': eval must be the last step", v->name);
        if (quantize_at >= 0 && s->kind != RS_EVAL)
            return fail_line(p, s->line, "variant '%s': %s after quantize (quantize is the last step, before an optional eval)",
                           v->name, KINDS[s->kind].name);
        switch (s->kind) {
        case RS_EVAL: eval_at = i; break;
        case RS_QUANTIZE: quantize_at = i; break;
        case RS_IMATRIX:
            if (imatrix_at >= 0) return fail_line(p, s->line, "variant '%s': a second imatrix step", v->name);
            imatrix_at = i;
            break;
        case RS_PRUNE:
        case RS_DISTILL:
            if (imatrix_at >= 0)
                return fail_line(p, s->line, "variant '%s': %s changes the model after the imatrix at line %d; put imatrix after it",
                               v->name, KINDS[s->kind].name, v->steps[imatrix_at].line);
            break;
        default: break;
        }
    }
    if (imatrix_at >= 0 && quantize_at < 0) {
        return fail_line(p, v->steps[imatrix_at].line, "variant '%s': imatrix without a quantize step to use it", v->name);
    }
    return 0;
}

static int parse_steps(parser *p, recipe_variant *v, const yaml_node_t *n) {
    if (n->type != YAML_SEQUENCE_NODE) return fail_at(p, n, "steps must be a list ('- quantize: {...}' lines)");
    int count = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > 64) return fail_at(p, n, "more than 64 steps");
    v->steps = calloc((size_t)(count ? count : 1), sizeof *v->steps);
    if (!v->steps) return fail_at(p, n, "out of memory");
    for (int i = 0; i < count; i++) {
        const yaml_node_t *sn = node(p, n->data.sequence.items.start[i]);
        v->n_steps = i + 1; /* so recipe_free frees a half-parsed step */
        if (parse_step(p, &v->steps[i], sn)) return -1;
    }
    return check_variant_steps(p, v);
}

/* A variant mapping: name, steps, gates. */
static int parse_variant(parser *p, recipe *r, recipe_variant *v, const yaml_node_t *n, const recipe_gates *top) {
    int count = check_mapping(p, n, "a variant");
    if (count < 0) return -1;
    const yaml_node_t *name = NULL, *steps = NULL, *gates = NULL;
    for (int i = 0; i < count; i++) {
        const char *k = pair_key(p, n, i);
        const yaml_node_t *val = pair_value(p, n, i);
        if (strcmp(k, "name") == 0) name = val;
        else if (strcmp(k, "steps") == 0) steps = val;
        else if (strcmp(k, "gates") == 0) gates = val;
        else return fail_at(p, pair_key_node(p, n, i), "variant: unknown key '%s' (keys: name, steps, gates)", k);
    }
    v->line = line_of(n);
    v->gates = *top;
    if (!name) return fail_at(p, n, "a variant needs a name");
    const char *s;
    if (text_of(p, name, "variant name", &s)) return -1;
    if (!valid_name(s)) return fail_at(p, name, "variant name '%s' may use only letters, digits, '.', '_' and '-' (not first '.')", s);
    for (int i = 0; i < r->n_variants - 1; i++)
        if (strcmp(r->variants[i].name, s) == 0) return fail_at(p, name, "a second variant named '%s'", s);
    if (!(v->name = dup_or_fail(p, name, s))) return -1;
    if (steps && !is_null(steps) && parse_steps(p, v, steps)) return -1;
    if (gates && !is_null(gates) && parse_variant_gates(p, gates, v, recipe_variant_types(v))) return -1;
    bool gated = recipe_gates_any(&v->gates);
    for (int i = 0; i < v->n_type_gates; i++) gated |= recipe_gates_any(&v->type_gates[i].gates);
    if (gated && !recipe_variant_eval(r, v))
        return fail_at(p, gates ? gates : n, "variant '%s' has gates but no eval settings (add an 'eval:' section)", v->name);
    return 0;
}

/* Output names (variant, or variant-TYPE) must be unique across the recipe. */
static int check_output_names(parser *p, const recipe *r) {
    for (int i = 0; i < r->n_variants; i++) {
        const recipe_opt *ti = recipe_variant_types(&r->variants[i]);
        for (int a = 0; a < (ti ? ti->n_values : 1); a++) {
            char ni[160];
            snprintf(ni, sizeof ni, ti ? "%s-%s" : "%s", r->variants[i].name, ti ? ti->values[a] : "");
            for (int j = 0; j < r->n_variants; j++) {
                if (j == i) continue;
                const recipe_opt *tj = recipe_variant_types(&r->variants[j]);
                for (int b = 0; b < (tj ? tj->n_values : 1); b++) {
                    char nj[160];
                    snprintf(nj, sizeof nj, tj ? "%s-%s" : "%s", r->variants[j].name, tj ? tj->values[b] : "");
                    if (strcmp(ni, nj) == 0) {
                        return fail_line(p, r->variants[j].line, "variants '%s' and '%s' both write %s.gguf", r->variants[i].name,
                                       r->variants[j].name, ni);
                    }
                }
            }
        }
    }
    return 0;
}

/* The name of a recipe file without folder and extension, with unusual characters as '_'. */
static char *name_from_path(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *s = strdup(*base && *base != '.' ? base : "recipe");
    if (!s) return NULL;
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = '\0';
    for (char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-", *c)) *c = '_';
    return s;
}

/* The root mapping. */
static int parse_root(parser *p, recipe *r, const yaml_node_t *root) {
    int count = check_mapping(p, root, "a recipe");
    if (count < 0) return -1;
    static const char *const keys[] = {"name", "source", "tokenizer", "threads", "eval", "gates", "steps", "variants"};
    enum { K_NAME, K_SOURCE, K_TOKENIZER, K_THREADS, K_EVAL, K_GATES, K_STEPS, K_VARIANTS, K_N };
    const yaml_node_t *val[K_N] = {0};
    for (int i = 0; i < count; i++) {
        const char *k = pair_key(p, root, i);
        int found = -1;
        for (int j = 0; j < K_N; j++)
            if (strcmp(k, keys[j]) == 0) found = j;
        if (found < 0)
            return fail_at(p, pair_key_node(p, root, i),
                           "unknown key '%s' (keys: name, source, tokenizer, threads, eval, gates, steps, variants)", k);
        val[found] = pair_value(p, root, i);
    }
    const char *s;
    if (val[K_NAME]) {
        if (text_of(p, val[K_NAME], "name", &s)) return -1;
        if (!valid_name(s)) return fail_at(p, val[K_NAME], "name '%s' may use only letters, digits, '.', '_' and '-'", s);
        if (!(r->name = dup_or_fail(p, val[K_NAME], s))) return -1;
    } else if (!(r->name = name_from_path(p->path))) {
        return fail_at(p, root, "out of memory");
    }
    if (!val[K_SOURCE]) return fail_at(p, root, "a recipe needs 'source:' (the model to compress)");
    if (text_of(p, val[K_SOURCE], "source", &s)) return -1;
    if (!(r->source_text = dup_or_fail(p, val[K_SOURCE], s)) || !(r->source = resolve_path(p, val[K_SOURCE], s))) return -1;
    if (val[K_TOKENIZER]) {
        if (text_of(p, val[K_TOKENIZER], "tokenizer", &s)) return -1;
        if (!(r->tokenizer = resolve_path(p, val[K_TOKENIZER], s))) return -1;
    }
    if (val[K_THREADS]) {
        long long t;
        if (text_of(p, val[K_THREADS], "threads", &s)) return -1;
        if (!parse_uint(s, &t) || t < 1 || t > 4096) return fail_at(p, val[K_THREADS], "threads must be 1..4096, not '%s'", s);
        r->threads = (int)t;
    }
    r->eval.kind = RS_EVAL;
    if (val[K_EVAL]) {
        if (check_mapping(p, val[K_EVAL], "eval") < 0) return -1;
        r->eval.line = line_of(val[K_EVAL]);
        if (parse_step_opts(p, &r->eval, val[K_EVAL], val[K_EVAL])) return -1;
        r->has_eval = true;
    }
    recipe_gates top = recipe_gates_none();
    if (val[K_GATES] && !is_null(val[K_GATES]) && parse_top_gates(p, val[K_GATES], &top)) return -1;
    if (val[K_STEPS] && val[K_VARIANTS]) return fail_at(p, val[K_VARIANTS], "give 'steps:' (one variant) or 'variants:', not both");
    if (!val[K_STEPS] && !val[K_VARIANTS]) return fail_at(p, root, "a recipe needs 'steps:' or 'variants:'");
    if (val[K_STEPS]) { /* one variant named after the recipe */
        r->variants = calloc(1, sizeof *r->variants);
        if (!r->variants) return fail_at(p, root, "out of memory");
        r->n_variants = 1;
        recipe_variant *v = &r->variants[0];
        v->line = line_of(val[K_STEPS]);
        v->gates = top;
        if (!(v->name = dup_or_fail(p, root, r->name))) return -1;
        if (parse_steps(p, v, val[K_STEPS])) return -1;
        if (recipe_gates_any(&v->gates) && !recipe_variant_eval(r, v))
            return fail_at(p, val[K_GATES], "gates need eval settings (add an 'eval:' section)");
    } else {
        const yaml_node_t *vs = val[K_VARIANTS];
        if (vs->type != YAML_SEQUENCE_NODE) return fail_at(p, vs, "variants must be a list ('- name: ...' entries)");
        int n = (int)(vs->data.sequence.items.top - vs->data.sequence.items.start);
        if (n == 0) return fail_at(p, vs, "variants is an empty list");
        if (n > 256) return fail_at(p, vs, "more than 256 variants");
        r->variants = calloc((size_t)n, sizeof *r->variants);
        if (!r->variants) return fail_at(p, vs, "out of memory");
        for (int i = 0; i < n; i++) {
            r->n_variants = i + 1;
            if (parse_variant(p, r, &r->variants[i], node(p, vs->data.sequence.items.start[i]), &top)) return -1;
        }
    }
    return check_output_names(p, r);
}

/* ---- entry points ----------------------------------------------------------------------- */

int recipe_parse(recipe *r, const char *path, const char *text, size_t len, slmc_err *err) {
    memset(r, 0, sizeof *r);
    parser p = {.path = path, .err = err};
    yaml_parser_t yp;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&yp)) return slmc_fail(err, path, "cannot start the YAML parser (out of memory)");
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &doc)) {
        int rc = slmc_fail(err, NULL, "%s:%lu: %s%s%s", path, (unsigned long)yp.problem_mark.line + 1,
                           yp.problem ? yp.problem : "YAML error", yp.context ? " " : "", yp.context ? yp.context : "");
        yaml_parser_delete(&yp);
        return rc;
    }
    int rc = -1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    p.doc = &doc;
    const char *slash = strrchr(path, '/');
    p.dir = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup("");
    if (!p.dir) {
        slmc_fail(err, path, "out of memory");
    } else if (!root) {
        slmc_fail(err, NULL, "%s:1: the recipe is empty", path);
    } else {
        /* Only one YAML document per recipe: a second one is most likely a mistake. */
        yaml_document_t next;
        if (!yaml_parser_load(&yp, &next)) {
            slmc_fail(err, NULL, "%s:%lu: %s", path, (unsigned long)yp.problem_mark.line + 1, yp.problem ? yp.problem : "YAML error");
        } else {
            bool more = yaml_document_get_root_node(&next) != NULL;
            unsigned long more_line = more ? (unsigned long)yaml_document_get_root_node(&next)->start_mark.line + 1 : 0;
            yaml_document_delete(&next);
            if (more) slmc_fail(err, NULL, "%s:%lu: a recipe is one YAML document ('---' starts a second)", path, more_line);
            else if ((r->path = strdup(path)) == NULL) slmc_fail(err, path, "out of memory");
            else rc = parse_root(&p, r, root);
        }
    }
    free(p.dir);
    yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    if (rc) recipe_free(r);
    return rc;
}

int recipe_load(recipe *r, const char *path, slmc_err *err) {
    memset(r, 0, sizeof *r);
    char *text;
    size_t len;
    if (read_small_file(path, RECIPE_MAX_BYTES, &text, &len, err)) return -1;
    int rc = recipe_parse(r, path, text, len, err);
    free(text);
    return rc;
}

/* ---- queries ---------------------------------------------------------------------------- */

const recipe_opt *recipe_step_opt(const recipe_step *s, const char *key) {
    for (int i = 0; i < s->n_opts; i++)
        if (strcmp(s->opts[i].spec->key, key) == 0) return &s->opts[i];
    return NULL;
}

const char *recipe_step_value(const recipe_step *s, const char *key) {
    const recipe_opt *o = recipe_step_opt(s, key);
    return o && o->n_values ? o->values[0] : NULL;
}

const recipe_opt *recipe_variant_types(const recipe_variant *v) {
    for (int i = 0; i < v->n_steps; i++)
        if (v->steps[i].kind == RS_QUANTIZE) return recipe_step_opt(&v->steps[i], "types");
    return NULL;
}

const recipe_gates *recipe_gates_for(const recipe_variant *v, const char *type) {
    for (int i = 0; type && i < v->n_type_gates; i++)
        if (strcmp(v->type_gates[i].type, type) == 0) return &v->type_gates[i].gates;
    return &v->gates;
}

const recipe_step *recipe_variant_eval(const recipe *r, const recipe_variant *v) {
    if (v->n_steps && v->steps[v->n_steps - 1].kind == RS_EVAL) return &v->steps[v->n_steps - 1];
    return r->has_eval ? &r->eval : NULL;
}
