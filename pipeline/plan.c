/* plan.c - a recipe as a graph of commands with cache keys (see plan.h).
 *
 * Top to bottom: string lists, content hashing of input files, node construction (each
 * argument goes both to the command line and, as an identity, to the key), one function per
 * step kind, the recipe walk, the cache state, and the --dry-run description.
 */
#include "pipeline/plan.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/fileio.h"
#include "pipeline/files.h"
#include "pipeline/sha256.h"

/* ---- string lists ------------------------------------------------------------------------ */

int pl_strv_push(pl_strv *s, const char *x) {
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

void pl_strv_free(pl_strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

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

const char *pl_content_hash(pl_plan *pl, const char *path, slmc_err *err) {
    for (int i = 0; i < pl->n_hashes; i++)
        if (strcmp(pl->hashes[i].path, path) == 0) return pl->hashes[i].hex;
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    if (hash_path_into(&c, path, "", 0, err)) return NULL;
    sha256_final(&c, d);
    pl_file_hash *h = realloc(pl->hashes, (size_t)(pl->n_hashes + 1) * sizeof *h);
    if (!h) { slmc_fail(err, path, "out of memory"); return NULL; }
    pl->hashes = h;
    h = &pl->hashes[pl->n_hashes];
    if (!(h->path = strdup(path))) { slmc_fail(err, path, "out of memory"); return NULL; }
    sha256_hex(d, h->hex);
    pl->n_hashes++;
    return h->hex;
}

/* ---- building nodes ---------------------------------------------------------------------- */

char *pl_cache_path(const pl_plan *pl, const pl_node *n, int out) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", n->key, n->out[out].ext);
    return path_join(pl->cache_dir, name);
}

/* A literal argument: the same on the command line and in the key. */
static int arg(pl_node *n, const char *s) {
    return pl_strv_push(&n->args, s) || pl_strv_push(&n->key_args, s) ? -1 : 0;
}

/* An input: its path on the command line, its identity in the key. */
static int arg_input(pl_plan *pl, pl_node *n, pl_input in, slmc_err *err) {
    char id[128];
    if (in.node < 0) {
        const char *h = pl_content_hash(pl, in.path, err);
        if (!h) return -1;
        snprintf(id, sizeof id, "file:%s", h);
        if (pl_strv_push(&n->args, in.path) || pl_strv_push(&n->key_args, id)) return slmc_fail(err, NULL, "out of memory");
        return 0;
    }
    const pl_node *d = &pl->nodes[in.node];
    snprintf(id, sizeof id, "node:%s%s", d->key, d->out[in.out].ext);
    char *p = pl_cache_path(pl, d, in.out);
    int rc = !p || pl_strv_push(&n->args, p) || pl_strv_push(&n->key_args, id);
    free(p);
    if (rc) return slmc_fail(err, NULL, "out of memory");
    bool have = false;
    for (int i = 0; i < n->n_deps; i++) have |= n->deps[i] == in.node;
    if (!have) n->deps[n->n_deps++] = in.node;
    return 0;
}

/* A file the child writes into its temporary folder. */
static int arg_tmp(pl_node *n, const char *name) {
    char s[128];
    snprintf(s, sizeof s, "%c%s", PL_TMP_MARK, name);
    return arg(n, s);
}

/* A step's recipe options as flags. Paths are inputs; the pipeline's own keys are skipped. */
static int arg_options(pl_plan *pl, pl_node *n, const recipe_step *s, slmc_err *err) {
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
                pl_input in = {.node = -1, .path = o->values[j]};
                if (arg_input(pl, n, in, err)) return -1;
            } else if (arg(n, o->values[j])) {
                return slmc_fail(err, NULL, "out of memory");
            }
        }
    }
    return 0;
}

/* The common tail of every command: quiet children (their stderr goes to a log anyway). */
static int arg_tail(pl_node *n) { return arg(n, "-q"); }

/* The model input of a step (+ --tokenizer for a llama2.c source). */
static int arg_model(pl_plan *pl, pl_node *n, pl_input in, slmc_err *err) {
    if (arg_input(pl, n, in, err)) return -1;
    if (in.node < 0 && pl->r->tokenizer) {
        pl_input tok = {.node = -1, .path = pl->r->tokenizer};
        if (arg(n, "--tokenizer") || arg_input(pl, n, tok, err)) return -1;
    }
    return 0;
}

/* A new empty node (its index), or -1. */
static int node_new(pl_plan *pl, recipe_step_kind kind, slmc_err *err) {
    if (pl->n_nodes == pl->cap_nodes) {
        int cap = pl->cap_nodes ? pl->cap_nodes * 2 : 16;
        pl_node *v = realloc(pl->nodes, (size_t)cap * sizeof *v);
        if (!v) return slmc_fail(err, NULL, "out of memory");
        pl->nodes = v;
        pl->cap_nodes = cap;
    }
    pl_node *n = &pl->nodes[pl->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->pid = -1;
    n->lock.fd = -1;
    return pl->n_nodes++;
}

static void node_free(pl_node *n) {
    pl_strv_free(&n->args);
    pl_strv_free(&n->key_args);
    free(n->tmpdir);
    pl_lock_release(&n->lock);
}

/* Seal the last node: compute its key; when an equal node exists already, drop this one and
 * return the existing index (the same work is done once). */
static int node_seal(pl_plan *pl, int idx) {
    pl_node *n = &pl->nodes[idx];
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

/* ---- one function per step kind --------------------------------------------------------- */

/* A model-producing step (convert, prune, distill) on `in`; the node index or -1. */
static int plan_model_step(pl_plan *pl, const recipe_variant *v, const recipe_step *s, pl_input in, slmc_err *err) {
    int idx = node_new(pl, s->kind, err);
    if (idx < 0) return -1;
    pl_node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "%s [%s]", recipe_kind_name(s->kind), v->name);
    n->out[n->n_out++] = (pl_node_output){"out.gguf", ".gguf"};
    int rc;
    switch (s->kind) {
    case RS_CONVERT:
        rc = arg(n, "convert") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf") || arg(n, "--to") || arg(n, "gguf");
        break;
    case RS_PRUNE:
        rc = arg(n, "prune") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf");
        break;
    default: { /* distill: the variant's model learns from the source */
        pl_input teacher = {.node = -1, .path = pl->r->source};
        rc = arg(n, "distill") || arg(n, "--teacher") || arg_input(pl, n, teacher, err) || arg(n, "--student") ||
             arg_input(pl, n, in, err) || arg(n, "-o") || arg_tmp(n, "out.gguf");
        if (!rc && pl->r->tokenizer) {
            pl_input tok = {.node = -1, .path = pl->r->tokenizer};
            rc = arg(n, "--tokenizer") || arg_input(pl, n, tok, err);
        }
        break;
    }
    }
    if (rc || arg_options(pl, n, s, err) || arg_tail(n)) return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* imatrix on `in`. */
static int plan_imatrix(pl_plan *pl, const recipe_variant *v, const recipe_step *s, pl_input in, slmc_err *err) {
    int idx = node_new(pl, RS_IMATRIX, err);
    if (idx < 0) return -1;
    pl_node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "imatrix [%s]", v->name);
    n->out[n->n_out++] = (pl_node_output){"out.dat", ".imatrix.dat"};
    if (arg(n, "imatrix") || arg_model(pl, n, in, err) || arg(n, "-o") || arg_tmp(n, "out.dat") ||
        arg_options(pl, n, s, err) || arg_tail(n))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* quantize `in` to one type (with the variant's imatrix when it has one). */
static int plan_quantize(pl_plan *pl, const recipe_variant *v, const recipe_step *s, const char *type, pl_input in,
                         int imatrix_node, slmc_err *err) {
    int idx = node_new(pl, RS_QUANTIZE, err);
    if (idx < 0) return -1;
    pl_node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "quantize %s [%s]", type, v->name);
    n->out[n->n_out++] = (pl_node_output){"out.gguf", ".gguf"};
    if (arg(n, "quantize") || arg_model(pl, n, in, err) || arg_tmp(n, "out.gguf") || arg(n, type))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    const char *use = recipe_step_value(s, "imatrix");
    if (imatrix_node >= 0 && !(use && strcmp(use, "false") == 0)) {
        pl_input im = {.node = imatrix_node, .out = 0};
        if (arg(n, "--imatrix") || arg_input(pl, n, im, err)) return -1;
    }
    if (arg_options(pl, n, s, err) || arg_tail(n)) return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* eval of `in` with `settings`; against the saved log-probabilities of base_node, or (base_node
 * < 0) the source's own eval, which saves them. */
static int plan_eval(pl_plan *pl, const char *what, const recipe_step *settings, pl_input in, int base_node,
                     slmc_err *err) {
    int idx = node_new(pl, RS_EVAL, err);
    if (idx < 0) return -1;
    pl_node *n = &pl->nodes[idx];
    snprintf(n->label, sizeof n->label, "eval [%s]", what);
    n->capture_stdout = true;
    n->out[n->n_out++] = (pl_node_output){"stdout", ".eval.json"};
    if (arg(n, "eval") || arg_model(pl, n, in, err) || arg_options(pl, n, settings, err))
        return err->msg[0] ? -1 : slmc_fail(err, NULL, "out of memory");
    if (base_node < 0) {
        n->out[n->n_out++] = (pl_node_output){"logits.h5", ".logits.h5"};
        if (arg(n, "--save-logits") || arg_tmp(n, "logits.h5")) return slmc_fail(err, NULL, "out of memory");
    } else {
        pl_input base = {.node = base_node, .out = 1};
        if (arg(n, "--kl-logits") || arg_input(pl, n, base, err)) return -1;
    }
    if (arg(n, "--json") || arg_tail(n)) return slmc_fail(err, NULL, "out of memory");
    return node_seal(pl, idx);
}

/* ---- the recipe walk --------------------------------------------------------------------- */

static int add_leaf(pl_plan *pl, const recipe_variant *v, const char *type, pl_input model, slmc_err *err) {
    pl_leaf *l = realloc(pl->leaves, (size_t)(pl->n_leaves + 1) * sizeof *l);
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
        pl_input src = {.node = -1, .path = pl->r->source};
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
static int plan_variant(pl_plan *pl, const recipe_variant *v, slmc_err *err) {
    pl_input cur = {.node = -1, .path = pl->r->source};
    int imatrix_node = -1;
    for (int i = 0; i < v->n_steps; i++) {
        const recipe_step *s = &v->steps[i];
        int idx;
        switch (s->kind) {
        case RS_CONVERT:
        case RS_PRUNE:
        case RS_DISTILL:
            if ((idx = plan_model_step(pl, v, s, cur, err)) < 0) return -1;
            cur = (pl_input){.node = idx, .out = 0};
            break;
        case RS_IMATRIX:
            if ((imatrix_node = plan_imatrix(pl, v, s, cur, err)) < 0) return -1;
            break;
        case RS_QUANTIZE: {
            const recipe_opt *types = recipe_step_opt(s, "types");
            for (int t = 0; t < types->n_values; t++) {
                if ((idx = plan_quantize(pl, v, s, types->values[t], cur, imatrix_node, err)) < 0) return -1;
                if (add_leaf(pl, v, types->values[t], (pl_input){.node = idx, .out = 0}, err)) return -1;
            }
            return 0;
        }
        default: break; /* eval: settings, read by add_leaf */
        }
    }
    return add_leaf(pl, v, NULL, cur, err);
}

void pl_plan_free(pl_plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) node_free(&pl->nodes[i]);
    free(pl->nodes);
    free(pl->leaves);
    for (int i = 0; i < pl->n_hashes; i++) free(pl->hashes[i].path);
    free(pl->hashes);
    free(pl->out_dir);
    free(pl->cache_dir);
    free(pl->exe);
    memset(pl, 0, sizeof *pl);
}

int pl_plan_build(pl_plan *pl, const recipe *r, const char *exe, const char *out_dir, const char *cache_dir,
                  slmc_err *err) {
    memset(pl, 0, sizeof *pl);
    pl->r = r;
    pl->cache_dir = cache_dir ? strdup(cache_dir) : path_join(out_dir, "cache");
    if (!(pl->exe = strdup(exe)) || !(pl->out_dir = strdup(out_dir)) || !pl->cache_dir)
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

bool pl_node_cached(const pl_plan *pl, pl_node *n) {
    const char *exts[PL_MAX_OUTPUTS];
    for (int i = 0; i < n->n_out; i++) exts[i] = n->out[i].ext;
    return pl_entry_complete(pl->cache_dir, n->key, exts, n->n_out, &n->entry);
}

/* Mark what has to run: wanted nodes (leaf models, evals) that miss, and recursively the
 * missing inputs of what runs. A hit never needs its inputs; it is marked used. */
static void mark_needed(pl_plan *pl, int idx) {
    pl_node *n = &pl->nodes[idx];
    if (n->state == PL_CACHED) n->used = true;
    if (n->state == PL_CACHED || n->needed) return;
    n->needed = true;
    for (int i = 0; i < n->n_deps; i++) mark_needed(pl, n->deps[i]);
}

void pl_plan_cache_state(pl_plan *pl, const recipe_variant *only) {
    for (int i = 0; i < pl->n_nodes; i++) {
        pl_node *n = &pl->nodes[i];
        n->state = pl_node_cached(pl, n) ? PL_CACHED : PL_PENDING;
        n->needed = n->used = false;
    }
    for (int i = 0; i < pl->n_leaves; i++) {
        const pl_leaf *l = &pl->leaves[i];
        if (only && l->v != only) continue;
        if (l->model.node >= 0) mark_needed(pl, l->model.node);
        if (l->eval >= 0) mark_needed(pl, l->eval);
        if (l->base_eval >= 0) mark_needed(pl, l->base_eval);
    }
}

int pl_leaf_model_id(pl_plan *pl, const pl_leaf *l, char *buf, size_t size, slmc_err *err) {
    if (l->model.node >= 0) {
        const pl_node *n = &pl->nodes[l->model.node];
        snprintf(buf, size, "node:%s%s", n->key, n->out[l->model.out].ext);
        return 0;
    }
    const char *h = pl_content_hash(pl, pl->r->source, err);
    if (!h) return -1;
    snprintf(buf, size, "file:%s", h);
    return 0;
}

/* ---- the dry run's description ----------------------------------------------------------- */

static const char *node_status(const pl_node *n) {
    return n->state == PL_CACHED ? "hit" : n->needed ? "run" : "skip";
}

static char *describe_text(const pl_plan *pl, int hits, int runs, int jobs, int threads_each) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fprintf(f, "plan for %s: %d steps, %d cached, %d to run (cache %s, %d job%s x %d thread%s)\n", pl->r->name,
            pl->n_nodes, hits, runs, pl->cache_dir, jobs, jobs == 1 ? "" : "s", threads_each,
            threads_each == 1 ? "" : "s");
    for (int i = 0; i < pl->n_nodes; i++) {
        const pl_node *n = &pl->nodes[i];
        fprintf(f, "  %-4s %.12s  %s\n        slmc", node_status(n), n->key, n->label);
        for (int k = 0; k < n->args.n; k++) {
            const char *a = n->args.v[k];
            fprintf(f, " %s%s", a[0] == PL_TMP_MARK ? "TMP/" : "", a + (a[0] == PL_TMP_MARK));
        }
        fprintf(f, "\n");
    }
    bool failed = ferror(f);
    if (fclose(f) || failed) { free(buf); return NULL; }
    return buf;
}

static char *describe_json(const pl_plan *pl, int hits, int runs, int jobs, int threads_each) {
    json_t *o = json_object(), *a = json_array();
    if (!o || !a) { json_decref(o); json_decref(a); return NULL; }
    for (int i = 0; i < pl->n_nodes; i++) {
        const pl_node *n = &pl->nodes[i];
        json_t *s = json_object(), *cmd = json_array();
        if (!s || !cmd) { json_decref(s); json_decref(cmd); continue; }
        for (int k = 0; k < n->args.n; k++)
            json_array_append_new(cmd, json_string(n->args.v[k] + (n->args.v[k][0] == PL_TMP_MARK)));
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
    json_decref(o);
    return pl_end_line(s);
}

int pl_plan_describe(const pl_plan *pl, int jobs, int threads_each, char **text, char **json, slmc_err *err) {
    int hits = 0, runs = 0;
    for (int i = 0; i < pl->n_nodes; i++) {
        hits += pl->nodes[i].state == PL_CACHED;
        runs += pl->nodes[i].needed;
    }
    *text = describe_text(pl, hits, runs, jobs, threads_each);
    *json = describe_json(pl, hits, runs, jobs, threads_each);
    if (*text && *json) return 0;
    free(*text);
    free(*json);
    *text = *json = NULL;
    return slmc_fail(err, NULL, "out of memory");
}
