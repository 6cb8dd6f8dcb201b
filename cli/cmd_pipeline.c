/* cmd_pipeline.c - `slmc pipeline RECIPE`: run a recipe's steps as child `slmc` processes,
 * caching every step's output under a hash of its inputs, then gate and report.
 *
 * How it works, top to bottom:
 *   1. plan: the recipe becomes a graph of nodes, one per command to run (convert, imatrix,
 *      prune, distill, one quantize per type, an eval of the source that saves its
 *      log-probabilities, one eval per output). A node's key is the SHA-256 of the slmc
 *      binary, its command line with every input replaced by the input's identity (the
 *      content hash of a file or folder, or the key of the node that makes it), so equal work
 *      has equal keys and is done once.
 *   2. cache: a node's outputs live in DIR/cache/<key>.<ext>; a node whose outputs are all
 *      there is a hit. Only the misses that some wanted output needs are run.
 *   3. run: at most --jobs children at a time (each with -t budget/jobs), each writing into
 *      its own temporary folder DIR/cache/.tmp-<pid>-XXXXXX; finished outputs are renamed into
 *      the cache (atomic), so concurrent pipelines sharing DIR never see partial files.
 *   4. publish each output model as DIR/<name>.gguf, gate, and write DIR/<recipe>.report.json,
 *      .report.md and .report.svg. Exit 0 when all gates pass, 3 when one fails, 1 on error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "formats/fileio.h"
#include "pipeline_report.h"
#include "pipeline_sha256.h"
#include "recipe.h"

extern char **environ;

int cmd_pipeline(int argc, char **argv);

static const char *USAGE =
    "Usage: slmc pipeline RECIPE [--out DIR] [--jobs N] [--dry-run] [--json]\n"
    "\n"
    "Run a compression recipe (YAML, see docs/pipeline.md): a source model, variants made of\n"
    "steps (convert, imatrix, prune, distill, quantize to a list of types, eval) and quality\n"
    "gates per variant (max PPL increase over the source, max mean KLD, min top-token agreement,\n"
    "max file size). Every step runs as a child slmc process; its output is cached in\n"
    "DIR/cache under a SHA-256 of the slmc binary, the step's options and its inputs' contents,\n"
    "so a rerun only does what changed and gives byte-identical files. Each output model is\n"
    "published as DIR/NAME.gguf; reports go to DIR/RECIPE.report.json, .report.md (a table for\n"
    "CI job summaries, also printed on stdout) and .report.svg (size against PPL and KLD).\n"
    "Exit status: 0 every gate passes, 3 a gate fails, 1 an error, 2 a usage error.\n"
    "\n"
    "Options:\n"
    "  -o, --out DIR    output folder (default: pipeline-out)\n"
    "  -j, --jobs N     run up to N steps at once, sharing the thread budget (default 1)\n"
    "  --dry-run        print the plan (each step, cache hit or to run) and run nothing\n"
    "  --json           print the report (or the plan) as JSON on stdout instead of Markdown\n"
    "  -t, --threads N  thread budget for all jobs (default: the recipe's threads, else all cores)\n"
    "  -q, --quiet      no progress notes\n"
    "  -h, --help       this help\n";

/* ---- string vectors ---------------------------------------------------------------------- */

typedef struct strv {
    char **v;  /* [n] malloc'd strings, NULL-terminated when n < cap */
    int n, cap;
} strv;

static int strv_push(strv *s, const char *x) {
    if (s->n + 2 > s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->v[++s->n] = NULL;
    return 0;
}

static void strv_free(strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ---- nodes ------------------------------------------------------------------------------- */

/* Arguments naming a file in the node's temporary folder start with this byte. */
#define TMP_MARK '\x01'
#define MAX_OUTPUTS 2
#define MAX_DEPS 4

typedef enum node_state {
    NS_PENDING,  /* not run yet */
    NS_CACHED,   /* every output was already in the cache */
    NS_RUNNING,  /* a child is running it */
    NS_DONE,     /* ran and its outputs are in the cache */
    NS_FAILED,   /* the child failed */
} node_state;

/* One output file of a node: its name in the temporary folder and its cache extension. */
typedef struct node_output {
    const char *tmp_name;  /* "out.gguf"; "stdout" for a captured eval JSON */
    const char *ext;       /* ".gguf", ".imatrix.dat", ".eval.json", ".logits.h5" */
} node_output;

typedef struct node {
    recipe_step_kind kind;
    char label[200];         /* what the plan and messages call it: "quantize Q4_K_M [q4]" */
    char key[65];            /* SHA-256 hex of the node's identity */
    int deps[MAX_DEPS];      /* nodes whose outputs it reads */
    int n_deps;
    strv args;               /* command line after the binary; TMP_MARK-prefixed = temp file */
    strv key_args;           /* the same with inputs replaced by their identities */
    node_output out[MAX_OUTPUTS];
    int n_out;
    bool capture_stdout;     /* eval: stdout is the JSON result, stored normalized */
    node_state state;
    bool needed;             /* some wanted output depends on running it */
    pid_t pid;               /* while running */
    char *tmpdir;            /* while running */
    double t_start;          /* while running (for notes) */
} node;

/* A model or file a node reads: an external file (source, texts) or a node's output. */
typedef struct input_ref {
    int node;               /* producing node, or -1 for an external path */
    int out;                /* which of its outputs */
    const char *path;       /* external path */
} input_ref;

/* One output of the pipeline (a variant, or one quantize type of it). */
typedef struct leaf {
    const recipe_variant *v;
    const char *type;       /* quantize type or NULL */
    input_ref model;        /* its model */
    int eval;               /* eval node, or -1 */
    int base_eval;          /* the source's eval node with the same settings, or -1 */
    const recipe_step *eval_settings;
} leaf;

/* A memo of content hashes of external files and folders. */
typedef struct file_hash {
    char *path;
    char hex[65];
} file_hash;

typedef struct plan {
    const recipe *r;
    char *out_dir;          /* --out */
    char *cache_dir;        /* out_dir/cache */
    char exe[4096];         /* this binary (/proc/self/exe resolved) */
    char exe_hash[65];      /* its SHA-256: a new build invalidates the cache */
    node *nodes;
    int n_nodes, cap_nodes;
    leaf *leaves;
    int n_leaves;
    file_hash *hashes;
    int n_hashes;
} plan;

/* ---- content hashing --------------------------------------------------------------------- */

static int hash_path_into(sha256_ctx *c, const char *path, const char *rel, int depth, slmc_err *err);

static int hash_file_into(sha256_ctx *c, const char *path, slmc_err *err) {
    mapped_file mf;
    if (map_file(&mf, path, err)) return -1;
    uint64_t n = mf.size;
    sha256_update(c, &n, sizeof n);
    if (mf.size) sha256_update(c, mf.data, mf.size);
    unmap_file(&mf);
    return 0;
}

static int skip_hidden(const struct dirent *d) { return d->d_name[0] != '.'; }

/* A folder: each entry (sorted, hidden ones skipped) as its name and content, recursively. */
static int hash_dir_into(sha256_ctx *c, const char *path, const char *rel, int depth, slmc_err *err) {
    if (depth > 8) return slmc_fail(err, path, "folders nested too deep to hash");
    struct dirent **list;
    int n = scandir(path, &list, skip_hidden, alphasort);
    if (n < 0) return slmc_fail(err, path, "cannot list the folder: %s", strerror(errno));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc) {
            char *sub = path_join(path, list[i]->d_name);
            char *subrel = path_join(rel, list[i]->d_name);
            if (!sub || !subrel) rc = slmc_fail(err, path, "out of memory");
            else rc = hash_path_into(c, sub, subrel, depth + 1, err);
            free(sub);
            free(subrel);
        }
        free(list[i]);
    }
    free(list);
    return rc;
}

static int hash_path_into(sha256_ctx *c, const char *path, const char *rel, int depth, slmc_err *err) {
    struct stat st;
    if (stat(path, &st)) return slmc_fail(err, path, "%s", strerror(errno));
    sha256_update(c, S_ISDIR(st.st_mode) ? "d" : "f", 1);
    sha256_update(c, rel, strlen(rel) + 1);
    if (S_ISDIR(st.st_mode)) return hash_dir_into(c, path, rel, depth, err);
    return hash_file_into(c, path, err);
}

/* Content hash of a file or folder, memoized per path. */
static const char *content_hash(plan *pl, const char *path, slmc_err *err) {
    for (int i = 0; i < pl->n_hashes; i++)
        if (strcmp(pl->hashes[i].path, path) == 0) return pl->hashes[i].hex;
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    if (hash_path_into(&c, path, "", 0, err)) return NULL;
    sha256_final(&c, d);
    file_hash *h = realloc(pl->hashes, (size_t)(pl->n_hashes + 1) * sizeof *h);
    if (!h) { slmc_fail(err, path, "out of memory"); return NULL; }
    pl->hashes = h;
    h = &pl->hashes[pl->n_hashes];
    if (!(h->path = strdup(path))) { slmc_fail(err, path, "out of memory"); return NULL; }
    sha256_hex(d, h->hex);
    pl->n_hashes++;
    return h->hex;
}

/* ---- building the plan ------------------------------------------------------------------- */

/* Cache path of a node's output (malloc'd). */
static char *cache_path(const plan *pl, const node *n, int out) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", n->key, n->out[out].ext);
    return path_join(pl->cache_dir, name);
}

/* A literal argument: the same on the command line and in the key. */
static int arg(node *n, const char *s) { return strv_push(&n->args, s) || strv_push(&n->key_args, s) ? -1 : 0; }

/* An input: its path on the command line, its identity in the key. */
static int arg_input(plan *pl, node *n, input_ref in, slmc_err *err) {
    char id[128];
    if (in.node < 0) {
        const char *h = content_hash(pl, in.path, err);
        if (!h) return -1;
        snprintf(id, sizeof id, "file:%s", h);
        if (strv_push(&n->args, in.path) || strv_push(&n->key_args, id)) return slmc_fail(err, NULL, "out of memory");
        return 0;
    }
    const node *d = &pl->nodes[in.node];
    snprintf(id, sizeof id, "node:%s%s", d->key, d->out[in.out].ext);
    char *p = cache_path(pl, d, in.out);
    int rc = !p || strv_push(&n->args, p) || strv_push(&n->key_args, id);
    free(p);
    if (rc) return slmc_fail(err, NULL, "out of memory");
    bool have = false;
    for (int i = 0; i < n->n_deps; i++) have |= n->deps[i] == in.node;
    if (!have) n->deps[n->n_deps++] = in.node;
    return 0;
}

/* A file the child writes into its temporary folder. */
static int arg_tmp(node *n, const char *name) {
    char s[128];
    snprintf(s, sizeof s, "%c%s", TMP_MARK, name);
    return arg(n, s);
}

/* A step's recipe options as flags. Paths are inputs; the pipeline's own keys are skipped. */
static int arg_options(plan *pl, node *n, const recipe_step *s, slmc_err *err) {
    for (int i = 0; i < s->n_opts; i++) {
        const recipe_opt *o = &s->opts[i];
        if (!o->spec->flag) continue;
        for (int j = 0; j < o->n_values; j++) {
            if (o->spec->type == RO_BOOL) {
                if (strcmp(o->values[j], "true") == 0 && arg(n, o->spec->flag)) return slmc_fail(err, NULL, "out of memory");
                continue;
            }
            if (arg(n, o->spec->flag)) return slmc_fail(err, NULL, "out of memory");
            if (o->spec->type == RO_PATH) {
                input_ref in = {.node = -1, .path = o->values[j]};
                if (arg_input(pl, n, in, err)) return -1;
            } else if (arg(n, o->values[j])) {
                return slmc_fail(err, NULL, "out of memory");
            }
        }
    }
    return 0;
}

/* A new empty node (its index), or -1. */
static int node_new(plan *pl, recipe_step_kind kind, slmc_err *err) {
    if (pl->n_nodes == pl->cap_nodes) {
        int cap = pl->cap_nodes ? pl->cap_nodes * 2 : 16;
        node *v = realloc(pl->nodes, (size_t)cap * sizeof *v);
        if (!v) return slmc_fail(err, NULL, "out of memory");
        pl->nodes = v;
        pl->cap_nodes = cap;
    }
    node *n = &pl->nodes[pl->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->pid = -1;
    return pl->n_nodes++;
}

static void node_free(node *n) {
    strv_free(&n->args);
    strv_free(&n->key_args);
    free(n->tmpdir);
}

/* Seal the last node: compute its key; when an equal node exists already, drop this one and
 * return the existing index (the same work is done once). */
static int node_seal(plan *pl, int idx) {
    node *n = &pl->nodes[idx];
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    sha256_update(&c, "slmc-pipeline/1", 16);
    sha256_update(&c, pl->exe_hash, 65);
    for (int i = 0; i < n->key_args.n; i++) {
        uint32_t len = (uint32_t)strlen(n->key_args.v[i]);
        sha256_update(&c, &len, sizeof len); /* length-prefixed: ["ab","c"] differs from ["a","bc"] */
        sha256_update(&c, n->key_args.v[i], len);
    }
    sha256_final(&c, d);
    sha256_hex(d, n->key);
    for (int i = 0; i < idx; i++)
        if (strcmp(pl->nodes[i].key, n->key) == 0) {
            node_free(n);
            pl->n_nodes--;
            return i;
        }
    return idx;
}

/* The common tail of every command: quiet children (their stderr goes to a log anyway). */
static int arg_tail(node *n) { return arg(n, "-q"); }

/* The model input of a step (+ --tokenizer for a llama2.c source). */
static int arg_model(plan *pl, node *n, input_ref in, slmc_err *err) {
    if (arg_input(pl, n, in, err)) return -1;
    if (in.node < 0 && pl->r->tokenizer) {
        input_ref tok = {.node = -1, .path = pl->r->tokenizer};
        if (arg(n, "--tokenizer") || arg_input(pl, n, tok, err)) return -1;
    }
    return 0;
}

/* A model-producing step (convert, prune, distill) on `in`; the node index or -1. */
static int plan_model_step(plan *pl, const recipe_variant *v, const recipe_step *s, input_ref in, slmc_err *err) {
    int idx = node_new(pl, s->kind, err);
    if (idx < 0) return -1;
    node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "%s [%s]", recipe_kind_name(s->kind), v->name);
    n->out[n->n_out++] = (node_output){"out.gguf", ".gguf"};
    int rc;
    switch (s->kind) {
    case RS_CONVERT:
        rc = arg(n, "convert") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf") || arg(n, "--to") || arg(n, "gguf");
        break;
    case RS_PRUNE:
        rc = arg(n, "prune") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf");
        break;
    default: { /* distill: the variant's model learns from the source */
        input_ref teacher = {.node = -1, .path = pl->r->source};
        rc = arg(n, "distill") || arg(n, "--teacher") || arg_input(pl, n, teacher, err) || arg(n, "--student") ||
             arg_input(pl, n, in, err) || arg(n, "-o") || arg_tmp(n, "out.gguf");
        if (!rc && pl->r->tokenizer) {
            input_ref tok = {.node = -1, .path = pl->r->tokenizer};
            rc = arg(n, "--tokenizer") || arg_input(pl, n, tok, err);
        }
        break;
    }
    }
    if (rc || arg_options(pl, n, s, err) || arg_tail(n)) return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* imatrix on `in`. */
static int plan_imatrix(plan *pl, const recipe_variant *v, const recipe_step *s, input_ref in, slmc_err *err) {
    int idx = node_new(pl, RS_IMATRIX, err);
    if (idx < 0) return -1;
    node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "imatrix [%s]", v->name);
    n->out[n->n_out++] = (node_output){"out.dat", ".imatrix.dat"};
    if (arg(n, "imatrix") || arg_model(pl, n, in, err) || arg(n, "-o") || arg_tmp(n, "out.dat") ||
        arg_options(pl, n, s, err) || arg_tail(n))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* quantize `in` to one type (with the variant's imatrix when it has one). */
static int plan_quantize(plan *pl, const recipe_variant *v, const recipe_step *s, const char *type, input_ref in,
                         int imatrix_node, slmc_err *err) {
    int idx = node_new(pl, RS_QUANTIZE, err);
    if (idx < 0) return -1;
    node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "quantize %s [%s]", type, v->name);
    n->out[n->n_out++] = (node_output){"out.gguf", ".gguf"};
    if (arg(n, "quantize") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf") || arg(n, type))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    const char *use = recipe_step_value(s, "imatrix");
    if (imatrix_node >= 0 && !(use && strcmp(use, "false") == 0)) {
        input_ref im = {.node = imatrix_node, .out = 0};
        if (arg(n, "--imatrix") || arg_input(pl, n, im, err)) return -1;
    }
    if (arg_options(pl, n, s, err) || arg_tail(n)) return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* eval of `in` with `settings`; against the saved log-probabilities of base_node, or (base_node
 * < 0) the source's own eval, which saves them. */
static int plan_eval(plan *pl, const char *what, const recipe_step *settings, input_ref in, int base_node, slmc_err *err) {
    int idx = node_new(pl, RS_EVAL, err);
    if (idx < 0) return -1;
    node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "eval [%s]", what);
    n->capture_stdout = true;
    n->out[n->n_out++] = (node_output){"stdout", ".eval.json"};
    if (arg(n, "eval") || arg_model(pl, n, in, err) || arg_options(pl, n, settings, err))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    if (base_node < 0) {
        n->out[n->n_out++] = (node_output){"logits.h5", ".logits.h5"};
        if (arg(n, "--save-logits") || arg_tmp(n, "logits.h5")) return slmc_fail(err, NULL, "out of memory");
    } else {
        input_ref base = {.node = base_node, .out = 1};
        if (arg(n, "--kl-logits") || arg_input(pl, n, base, err)) return -1;
    }
    if (arg(n, "--json") || arg_tail(n)) return slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

static int add_leaf(plan *pl, const recipe_variant *v, const char *type, input_ref model, slmc_err *err) {
    leaf *l = realloc(pl->leaves, (size_t)(pl->n_leaves + 1) * sizeof *l);
    if (!l) return slmc_fail(err, NULL, "out of memory");
    pl->leaves = l;
    l = &pl->leaves[pl->n_leaves];
    memset(l, 0, sizeof *l);
    l->v = v;
    l->type = type;
    l->model = model;
    l->eval = l->base_eval = -1;
    l->eval_settings = recipe_variant_eval(pl->r, v);
    if (l->eval_settings) {
        char what[160];
        input_ref src = {.node = -1, .path = pl->r->source};
        l->base_eval = plan_eval(pl, "source", l->eval_settings, src, -1, err);
        if (l->base_eval < 0) return -1;
        snprintf(what, sizeof what, "%s%s%s", v->name, type ? "-" : "", type ? type : "");
        l->eval = plan_eval(pl, what, l->eval_settings, model, l->base_eval, err);
        if (l->eval < 0) return -1;
    }
    pl->n_leaves++;
    return 0;
}

/* One variant: its steps in order, then one leaf per quantize type (or one for the model). */
static int plan_variant(plan *pl, const recipe_variant *v, slmc_err *err) {
    input_ref cur = {.node = -1, .path = pl->r->source};
    int imatrix_node = -1;
    for (int i = 0; i < v->n_steps; i++) {
        const recipe_step *s = &v->steps[i];
        int idx;
        switch (s->kind) {
        case RS_CONVERT:
        case RS_PRUNE:
        case RS_DISTILL:
            if ((idx = plan_model_step(pl, v, s, cur, err)) < 0) return -1;
            cur = (input_ref){.node = idx, .out = 0};
            break;
        case RS_IMATRIX:
            if ((imatrix_node = plan_imatrix(pl, v, s, cur, err)) < 0) return -1;
            break;
        case RS_QUANTIZE: {
            const recipe_opt *types = recipe_step_opt(s, "types");
            for (int t = 0; t < types->n_values; t++) {
                if ((idx = plan_quantize(pl, v, s, types->values[t], cur, imatrix_node, err)) < 0) return -1;
                if (add_leaf(pl, v, types->values[t], (input_ref){.node = idx, .out = 0}, err)) return -1;
            }
            return 0;
        }
        default: break; /* eval: settings, read by add_leaf */
        }
    }
    return add_leaf(pl, v, NULL, cur, err);
}

static void plan_free(plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) node_free(&pl->nodes[i]);
    free(pl->nodes);
    free(pl->leaves);
    for (int i = 0; i < pl->n_hashes; i++) free(pl->hashes[i].path);
    free(pl->hashes);
    free(pl->out_dir);
    free(pl->cache_dir);
    memset(pl, 0, sizeof *pl);
}

static int plan_build(plan *pl, const recipe *r, const char *out_dir, slmc_err *err) {
    memset(pl, 0, sizeof *pl);
    pl->r = r;
    ssize_t n = readlink("/proc/self/exe", pl->exe, sizeof pl->exe - 1);
    if (n <= 0) return slmc_fail(err, "/proc/self/exe", "cannot find this program: %s", strerror(errno));
    pl->exe[n] = '\0';
    if (!(pl->out_dir = strdup(out_dir)) || !(pl->cache_dir = path_join(out_dir, "cache")))
        return slmc_fail(err, NULL, "out of memory");
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    if (hash_file_into(&c, pl->exe, err)) return -1;
    sha256_final(&c, d);
    sha256_hex(d, pl->exe_hash);
    struct stat st;
    if (stat(r->source, &st)) return slmc_fail(err, r->source, "source model: %s", strerror(errno));
    for (int i = 0; i < r->n_variants; i++)
        if (plan_variant(pl, &r->variants[i], err)) return -1;
    return 0;
}

/* ---- cache state ------------------------------------------------------------------------- */

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool node_cached(const plan *pl, const node *n) {
    for (int i = 0; i < n->n_out; i++) {
        char *p = cache_path(pl, n, i);
        bool ok = p && is_file(p);
        free(p);
        if (!ok) return false;
    }
    return true;
}

/* Mark what has to run: wanted nodes (leaf models, evals) that miss, and recursively the
 * missing inputs of what runs. A hit never needs its inputs. */
static void mark_needed(plan *pl, int idx) {
    node *n = &pl->nodes[idx];
    if (n->state == NS_CACHED || n->needed) return;
    n->needed = true;
    for (int i = 0; i < n->n_deps; i++) mark_needed(pl, n->deps[i]);
}

static void plan_cache_state(plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) pl->nodes[i].state = node_cached(pl, &pl->nodes[i]) ? NS_CACHED : NS_PENDING;
    for (int i = 0; i < pl->n_leaves; i++) {
        const leaf *l = &pl->leaves[i];
        if (l->model.node >= 0) mark_needed(pl, l->model.node);
        if (l->eval >= 0) mark_needed(pl, l->eval);
        if (l->base_eval >= 0) mark_needed(pl, l->base_eval);
    }
}

/* ---- file helpers ------------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int make_dir(const char *path, slmc_err *err) {
    if (mkdir(path, 0777) && errno != EEXIST) return slmc_fail(err, path, "cannot create the folder: %s", strerror(errno));
    if (!is_dir(path)) return slmc_fail(err, path, "exists and is not a folder");
    return 0;
}

/* Remove temporary folders left in the cache by pipelines that died (kill -9): their names
 * carry the pid, and a pid that no longer exists cannot be writing. */
static void remove_stale_temps(const char *cache_dir) {
    DIR *d = opendir(cache_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid;
        if (sscanf(e->d_name, ".tmp-%ld-", &pid) != 1 || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char *p = path_join(cache_dir, e->d_name);
        if (p) rm_rf(p);
        free(p);
    }
    closedir(d);
}

/* Write a whole buffer to `path` atomically (temporary file + rename). */
static int write_atomic(const char *path, const char *data, size_t n, slmc_err *err) {
    atomic_file af;
    if (af_open(&af, path, err)) return -1;
    if (af_write(&af, data, n, err) || af_commit(&af, err)) { af_abort(&af); return -1; }
    return 0;
}

/* Copy a file atomically (when a hard link is not possible). */
static int copy_atomic(const char *from, const char *to, slmc_err *err) {
    mapped_file mf;
    if (map_file(&mf, from, err)) return -1;
    int rc = write_atomic(to, (const char *)mf.data, mf.size, err);
    unmap_file(&mf);
    return rc;
}

/* Publish a cache file under a readable name: a hard link renamed into place, so the name
 * always points at a complete file, or a copy when linking is not possible. */
static int publish(const char *cached, const char *dir, const char *name, slmc_err *err) {
    char *dst = path_join(dir, name);
    char tmpname[300];
    static unsigned counter;
    snprintf(tmpname, sizeof tmpname, ".%s.tmp-%ld-%u", name, (long)getpid(), counter++);
    char *tmp = path_join(dir, tmpname);
    int rc = 0;
    if (!dst || !tmp) rc = slmc_fail(err, NULL, "out of memory");
    else if (same_file(cached, dst)) {
        /* already published (a rerun) */
    } else if (link(cached, tmp) == 0) {
        if (rename(tmp, dst)) rc = slmc_fail(err, dst, "cannot rename into place: %s", strerror(errno));
        /* rename() leaves both names when they are links to one file (another pipeline
         * published the same file meanwhile): the temporary name must go in any case */
        unlink(tmp);
    } else {
        rc = copy_atomic(cached, dst, err);
    }
    free(dst);
    free(tmp);
    return rc;
}

/* ---- eval results ------------------------------------------------------------------------ */

/* Keep the measurements of eval's JSON and drop what changes between runs (timings, paths). */
static int normalize_eval(const char *from, const char *to, slmc_err *err) {
    char *buf;
    size_t len;
    if (read_small_file(from, 1 << 20, &buf, &len, err)) return -1;
    json_error_t je;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!json_is_object(o)) {
        json_decref(o);
        return slmc_fail(err, from, "eval printed no JSON object (%s at %d)", je.text, je.position);
    }
    static const char *const drop[] = {"model", "text", "base", "seconds", "tokens_per_second"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++) json_object_del(o, drop[i]);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!s) return slmc_fail(err, to, "out of memory");
    size_t n = strlen(s);
    s[n] = '\n'; /* over the NUL: the file ends with a newline */
    int rc = write_atomic(to, s, n + 1, err);
    free(s);
    return rc;
}

/* ---- running ----------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop; /* the signal that asked us to stop, or 0 */
static void on_stop(int sig) { g_stop = sig; }

/* Start a node's child: argv from its args (temp names resolved), -t, stdout/stderr to files. */
static int spawn_node(plan *pl, node *n, int threads, slmc_err *err) {
    char tmpl[64];
    snprintf(tmpl, sizeof tmpl, ".tmp-%ld-XXXXXX", (long)getpid());
    char *dir = path_join(pl->cache_dir, tmpl);
    if (!dir) return slmc_fail(err, NULL, "out of memory");
    if (!mkdtemp(dir)) {
        slmc_fail(err, dir, "cannot create a temporary folder: %s", strerror(errno));
        free(dir);
        return -1;
    }
    n->tmpdir = dir;
    strv av = {0};
    char tnum[16];
    snprintf(tnum, sizeof tnum, "%d", threads);
    int rc = strv_push(&av, pl->exe);
    for (int i = 0; !rc && i < n->args.n; i++) {
        const char *a = n->args.v[i];
        if (a[0] == TMP_MARK) {
            char *p = path_join(dir, a + 1);
            rc = !p || strv_push(&av, p);
            free(p);
        } else {
            rc = strv_push(&av, a);
        }
    }
    rc = rc || strv_push(&av, "-t") || strv_push(&av, tnum);
    char *out = path_join(dir, "stdout"), *log = path_join(dir, "log");
    posix_spawn_file_actions_t fa;
    bool fa_ok = false;
    if (!rc && out && log && posix_spawn_file_actions_init(&fa) == 0) {
        fa_ok = true;
        rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0) ||
             posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, n->capture_stdout ? out : "/dev/null",
                                              O_WRONLY | O_CREAT | O_TRUNC, 0644) ||
             posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    } else {
        rc = 1;
    }
    int e = rc ? ENOMEM : posix_spawn(&n->pid, pl->exe, &fa, NULL, av.v, environ);
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    free(out);
    free(log);
    strv_free(&av);
    if (e) {
        rm_rf(dir);
        return slmc_fail(err, pl->exe, "cannot start %s: %s", n->label, strerror(e));
    }
    n->state = NS_RUNNING;
    n->t_start = cli_now();
    return 0;
}

/* The child's error message: the last line of its log that starts "slmc: " (without that
 * prefix), else its last non-empty line. */
static void last_line(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    bool have_slmc = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        bool is_slmc = strncmp(line, "slmc: ", 6) == 0;
        if (!line[0] || (have_slmc && !is_slmc)) continue;
        have_slmc |= is_slmc;
        const char *s = is_slmc ? line + 6 : line;
        size_t k = strlen(s);
        if (k >= size) k = size - 1; /* keep the start of a long line */
        memcpy(buf, s, k);
        buf[k] = '\0';
    }
    fclose(f);
}

/* A child ended: move its outputs into the cache, or report its failure. */
static int finish_node(plan *pl, node *n, int status, slmc_err *err) {
    int rc = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = path_join(n->tmpdir, "log"), msg[600];
        if (log) last_line(log, msg, sizeof msg);
        else msg[0] = '\0';
        char keep[128];
        snprintf(keep, sizeof keep, "%s.failed.log", n->key);
        char *kept = path_join(pl->cache_dir, keep);
        if (log && kept) rename(log, kept);
        if (WIFEXITED(status))
            rc = slmc_fail(err, pl->r->path, "%s failed (exit %d): %s [log: %s]", n->label, WEXITSTATUS(status),
                           msg[0] ? msg : "no message", kept ? kept : "?");
        else
            rc = slmc_fail(err, pl->r->path, "%s killed by signal %d", n->label, WTERMSIG(status));
        free(log);
        free(kept);
        n->state = NS_FAILED;
    } else {
        for (int i = 0; !rc && i < n->n_out; i++) {
            char *src = path_join(n->tmpdir, n->out[i].tmp_name), *dst = cache_path(pl, n, i);
            if (!src || !dst) rc = slmc_fail(err, NULL, "out of memory");
            else if (n->capture_stdout && i == 0) rc = normalize_eval(src, dst, err);
            else if (rename(src, dst)) rc = slmc_fail(err, dst, "cannot move into the cache: %s", strerror(errno));
            free(src);
            free(dst);
        }
        n->state = rc ? NS_FAILED : NS_DONE;
    }
    rm_rf(n->tmpdir);
    free(n->tmpdir);
    n->tmpdir = NULL;
    n->pid = -1;
    return rc;
}

static bool ready(const plan *pl, const node *n) {
    if (n->state != NS_PENDING || !n->needed) return false;
    for (int i = 0; i < n->n_deps; i++) {
        node_state s = pl->nodes[n->deps[i]].state;
        if (s != NS_CACHED && s != NS_DONE) return false;
    }
    return true;
}

/* Stop every running child and remove its temporary folder. */
static void stop_all(plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) {
        node *n = &pl->nodes[i];
        if (n->state != NS_RUNNING) continue;
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        rm_rf(n->tmpdir);
        free(n->tmpdir);
        n->tmpdir = NULL;
        n->state = NS_FAILED;
    }
}

/* Run the needed nodes, at most `jobs` at once. Stops launching at the first failure. */
static int run_plan(plan *pl, const cli_common *c, int jobs, int threads_each, slmc_err *err) {
    int running = 0, rc = 0, total = 0, done = 0;
    for (int i = 0; i < pl->n_nodes; i++) total += pl->nodes[i].needed;
    for (;;) {
        while (!rc && !g_stop && running < jobs) {
            int pick = -1;
            for (int i = 0; i < pl->n_nodes && pick < 0; i++)
                if (ready(pl, &pl->nodes[i])) pick = i;
            if (pick < 0) break;
            if (spawn_node(pl, &pl->nodes[pick], threads_each, err)) { rc = -1; break; }
            cli_note(c, "pipeline: [%d/%d] %s ...", done + running + 1, total, pl->nodes[pick].label);
            running++;
        }
        if (running == 0) break;
        if (g_stop) { stop_all(pl); return slmc_fail(err, pl->r->path, "interrupted"); }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0 || (pid < 0 && errno == EINTR)) {
            struct timespec ts = {0, 20 * 1000 * 1000}; /* poll at 50 Hz: a signal also ends the sleep */
            nanosleep(&ts, NULL);
            continue;
        }
        if (pid < 0) { stop_all(pl); return slmc_fail(err, NULL, "waitpid: %s", strerror(errno)); }
        for (int i = 0; i < pl->n_nodes; i++) {
            node *n = &pl->nodes[i];
            if (n->state != NS_RUNNING || n->pid != pid) continue;
            running--;
            done++;
            double secs = cli_now() - n->t_start;
            slmc_err e2 = {{0}};
            if (finish_node(pl, n, status, rc ? &e2 : err)) rc = -1;
            else cli_note(c, "pipeline: done %s (%.1fs)", n->label, secs);
        }
    }
    return rc;
}

/* ---- results and reports ----------------------------------------------------------------- */

static uint64_t path_size(const char *path) {
    struct stat st;
    if (stat(path, &st)) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    uint64_t total = 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            char *p = path_join(path, e->d_name);
            if (p) total += path_size(p);
            free(p);
        }
    closedir(d);
    return total;
}

static int param_count(const char *path, const char *tokenizer, uint64_t *n, slmc_err *err) {
    model m;
    if (cli_open_model(&m, path, tokenizer, err)) return -1;
    *n = model_param_count(&m);
    model_close(&m);
    return 0;
}

/* Read a normalized eval JSON. */
static int read_eval(const char *path, json_t **out, slmc_err *err) {
    char *buf;
    size_t len;
    if (read_small_file(path, 1 << 20, &buf, &len, err)) return -1;
    json_error_t je;
    *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!json_is_object(*out)) {
        json_decref(*out);
        return slmc_fail(err, path, "%s at byte %d", je.text, je.position);
    }
    return 0;
}

static double jnum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Gather one leaf's measurements into x, publishing its model as DIR/NAME.gguf. */
static int collect_leaf(plan *pl, const leaf *l, pl_result *x, pl_report *rep, slmc_err *err) {
    const recipe *r = pl->r;
    snprintf(x->name, sizeof x->name, "%s%s%s", l->v->name, l->type ? "-" : "", l->type ? l->type : "");
    x->variant = l->v->name;
    x->type = l->type;
    x->gates = *recipe_gates_for(l->v, l->type);
    char *model_path;
    if (l->model.node >= 0) {
        const node *n = &pl->nodes[l->model.node];
        snprintf(x->key, sizeof x->key, "%s", n->key);
        model_path = cache_path(pl, n, l->model.out);
        snprintf(x->file, sizeof x->file, "%s.gguf", x->name);
        if (!model_path) return slmc_fail(err, NULL, "out of memory");
        if (publish(model_path, pl->out_dir, x->file, err)) { free(model_path); return -1; }
    } else { /* the variant is the source itself */
        const char *h = content_hash(pl, r->source, err);
        if (!h) return -1;
        snprintf(x->key, sizeof x->key, "%s", h);
        if (!(model_path = strdup(r->source))) return slmc_fail(err, NULL, "out of memory");
    }
    x->size = path_size(model_path);
    int rc = param_count(model_path, l->model.node >= 0 ? NULL : r->tokenizer, &x->n_params, err);
    free(model_path);
    if (rc) return -1;
    x->bpw = x->n_params ? 8.0 * (double)x->size / (double)x->n_params : NAN;
    if (l->eval < 0) return 0;
    json_t *ev = NULL, *base = NULL;
    char *p = cache_path(pl, &pl->nodes[l->eval], 0), *pb = cache_path(pl, &pl->nodes[l->base_eval], 0);
    rc = !p || !pb ? slmc_fail(err, NULL, "out of memory") : read_eval(p, &ev, err) || read_eval(pb, &base, err);
    free(p);
    free(pb);
    if (rc) { json_decref(ev); return -1; }
    x->has_eval = true;
    x->ppl = jnum(ev, "ppl");
    x->ppl_stderr = jnum(ev, "ppl_stderr");
    x->kld = jnum(ev, "kld_mean");
    x->kld_stderr = jnum(ev, "kld_stderr");
    x->same_top = jnum(ev, "same_top_p");
    double src_ppl = jnum(base, "ppl");
    x->ppl_increase = 100.0 * (x->ppl / src_ppl - 1.0);
    if (!rep->has_eval && l->eval_settings == &r->eval) { /* the report's source line: the recipe's eval */
        rep->has_eval = true;
        rep->source_ppl = src_ppl;
        rep->source_ppl_stderr = jnum(base, "ppl_stderr");
    }
    json_decref(ev);
    json_decref(base);
    return 0;
}

/* A recipe integer (the recipe parser checked it is a whole number >= 0), clamped to int. */
static int recipe_int(const char *s) {
    long long v = s ? strtoll(s, NULL, 10) : 0;
    return v > INT_MAX ? INT_MAX : (int)v;
}

static int build_report(plan *pl, pl_report *rep, slmc_err *err) {
    const recipe *r = pl->r;
    memset(rep, 0, sizeof *rep);
    rep->name = r->name;
    rep->source = r->source_text;
    rep->source_size = path_size(r->source);
    rep->source_ppl = rep->source_ppl_stderr = NAN;
    if (param_count(r->source, r->tokenizer, &rep->source_params, err)) return -1;
    if (r->has_eval) {
        const char *t = recipe_step_value(&r->eval, "text"), *slash = strrchr(t, '/');
        snprintf(rep->eval_text, sizeof rep->eval_text, "%s", slash ? slash + 1 : t);
        const char *ctx = recipe_step_value(&r->eval, "ctx"), *chunks = recipe_step_value(&r->eval, "chunks");
        rep->eval_ctx = recipe_int(ctx);
        rep->eval_chunks = recipe_int(chunks);
    }
    if (!(rep->results = calloc((size_t)(pl->n_leaves ? pl->n_leaves : 1), sizeof *rep->results)))
        return slmc_fail(err, NULL, "out of memory");
    for (int i = 0; i < pl->n_leaves; i++) {
        if (collect_leaf(pl, &pl->leaves[i], &rep->results[i], rep, err)) return -1;
        rep->n_results++;
    }
    pl_report_gate(rep);
    return 0;
}

/* DIR/<recipe>.report.{json,md,svg}. */
static int write_reports(const plan *pl, const pl_report *rep, char **md_out, char **json_out, slmc_err *err) {
    json_t *j = pl_report_json(rep);
    char *js = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(j);
    char *md = pl_report_markdown(rep), *svg = pl_report_svg(rep);
    int rc = 0;
    if (!js || !md || !svg) rc = slmc_fail(err, NULL, "out of memory");
    const char *ext[3] = {".report.json", ".report.md", ".report.svg"};
    for (int i = 0; !rc && i < 3; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s%s", pl->r->name, ext[i]);
        char *path = path_join(pl->out_dir, name);
        if (!path) { rc = slmc_fail(err, NULL, "out of memory"); break; }
        const char *body = i == 0 ? js : i == 1 ? md : svg;
        size_t n = strlen(body);
        if (i == 0) { /* end the JSON file with a newline, like the others */
            char *t = realloc(js, n + 2);
            if (!t) { free(path); rc = slmc_fail(err, NULL, "out of memory"); break; }
            js = t;
            strcpy(js + n, "\n");
            body = js;
            n++;
        }
        rc = write_atomic(path, body, n, err);
        free(path);
    }
    free(svg);
    if (rc) { free(js); free(md); return -1; }
    *md_out = md;
    *json_out = js;
    return 0;
}

/* ---- dry run ----------------------------------------------------------------------------- */

static const char *node_status(const node *n) {
    return n->state == NS_CACHED ? "hit" : n->needed ? "run" : "skip";
}

static void print_plan(const plan *pl, bool json, int jobs, int threads_each) {
    int hits = 0, runs = 0;
    for (int i = 0; i < pl->n_nodes; i++) {
        hits += pl->nodes[i].state == NS_CACHED;
        runs += pl->nodes[i].needed;
    }
    if (json) {
        json_t *o = json_object(), *a = json_array();
        if (!o || !a) { json_decref(o); json_decref(a); return; }
        for (int i = 0; i < pl->n_nodes; i++) {
            const node *n = &pl->nodes[i];
            json_t *s = json_object(), *cmd = json_array();
            if (!s || !cmd) { json_decref(s); json_decref(cmd); continue; }
            for (int k = 0; k < n->args.n; k++) json_array_append_new(cmd, json_string(n->args.v[k] + (n->args.v[k][0] == TMP_MARK)));
            json_object_set_new(s, "step", json_string(n->label));
            json_object_set_new(s, "key", json_string(n->key));
            json_object_set_new(s, "status", json_string(node_status(n)));
            json_object_set_new(s, "command", cmd);
            json_array_append_new(a, s);
        }
        json_object_set_new(o, "recipe", json_string(pl->r->name));
        json_object_set_new(o, "jobs", json_integer(jobs));
        json_object_set_new(o, "threads_per_job", json_integer(threads_each));
        json_object_set_new(o, "steps", a);
        json_object_set_new(o, "hits", json_integer(hits));
        json_object_set_new(o, "to_run", json_integer(runs));
        char *s = json_dumps(o, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(o);
        return;
    }
    printf("plan for %s: %d steps, %d cached, %d to run (cache %s, %d job%s x %d thread%s)\n", pl->r->name, pl->n_nodes,
           hits, runs, pl->cache_dir, jobs, jobs == 1 ? "" : "s", threads_each, threads_each == 1 ? "" : "s");
    for (int i = 0; i < pl->n_nodes; i++) {
        const node *n = &pl->nodes[i];
        printf("  %-4s %.12s  %s\n        slmc", node_status(n), n->key, n->label);
        for (int k = 0; k < n->args.n; k++) {
            const char *a = n->args.v[k];
            printf(" %s%s", a[0] == TMP_MARK ? "TMP/" : "", a + (a[0] == TMP_MARK));
        }
        printf("\n");
    }
}

/* ---- the command ------------------------------------------------------------------------- */

typedef struct pipeline_args {
    cli_common c;
    const char *recipe;  /* RECIPE */
    const char *out;     /* --out */
    int jobs;            /* --jobs */
    bool dry_run;        /* --dry-run */
} pipeline_args;

static int parse_args(int argc, char **argv, pipeline_args *a) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"jobs", required_argument, 0, 'j'},
        {"dry-run", no_argument, 0, 'D'},   CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->out = "pipeline-out";
    a->jobs = 1;
    optind = 1;
    opterr = 0;
    int ch, rc;
    while ((ch = getopt_long(argc, argv, "o:j:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'o': a->out = optarg; break;
        case 'j': rc = cli_opt_int("pipeline", "-j/--jobs", optarg, 1, 256, &a->jobs); break;
        case 'D': a->dry_run = true; break;
        default: rc = cli_common_option("pipeline", USAGE, ch, argv, &a->c); break;
        }
        if (rc) return rc;
    }
    if (argc - optind != 1) return cli_usage_error("pipeline", "expected one RECIPE file");
    a->recipe = argv[optind];
    return 0;
}

/* Stop requests end the scheduler loop (which stops the children) instead of killing us. */
static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int cmd_pipeline(int argc, char **argv) {
    pipeline_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    slmc_err err = {{0}};
    recipe r;
    if (recipe_load(&r, a.recipe, &err)) return cli_error(&err);
    int budget = a.c.threads ? a.c.threads : r.threads ? r.threads : omp_get_num_procs();
    int jobs = a.jobs < budget ? a.jobs : budget;
    int threads_each = budget / jobs > 0 ? budget / jobs : 1;
    plan pl;
    int status = EXIT_ERROR;
    char *md = NULL, *js = NULL;
    pl_report rep = {0};
    if (!a.dry_run && make_dir(a.out, &err)) goto done;
    if (plan_build(&pl, &r, a.out, &err)) goto done_plan;
    if (!a.dry_run && make_dir(pl.cache_dir, &err)) goto done_plan;
    plan_cache_state(&pl);
    if (a.dry_run) {
        print_plan(&pl, a.c.json, jobs, threads_each);
        status = EXIT_OK;
        goto done_plan;
    }
    remove_stale_temps(pl.cache_dir);
    catch_signals();
    if (run_plan(&pl, &a.c, jobs, threads_each, &err)) {
        if (g_stop) { /* die of the signal, as the other commands do */
            cli_error(&err);
            plan_free(&pl);
            recipe_free(&r);
            signal(g_stop, SIG_DFL);
            raise(g_stop);
        }
        goto done_plan;
    }
    if (build_report(&pl, &rep, &err) || write_reports(&pl, &rep, &md, &js, &err)) goto done_plan;
    fputs(a.c.json ? js : md, stdout);
    status = rep.pass ? EXIT_OK : EXIT_GATE;
    if (!rep.pass) cli_note(&a.c, "pipeline: a gate failed (see %s/%s.report.md)", a.out, r.name);
done_plan:
    plan_free(&pl);
done:
    free(rep.results);
    free(md);
    free(js);
    recipe_free(&r);
    if (status == EXIT_ERROR) return cli_error(&err);
    return status;
}
