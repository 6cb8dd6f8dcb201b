/* pipeline.c - a recipe from start to end (see pipeline.h): plan, run, then publish and
 * measure each output, keep each variant's result record, and assemble the gated reports from
 * the records (so a full run, and --report after --only runs, give the same bytes).
 *
 * Top to bottom: measurements, the job matrix, the variants' records, the reports, and the
 * entry point.
 */
#include "pipeline/pipeline.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"
#include "formats/model.h"
#include "pipeline/files.h"
#include "pipeline/plan.h"
#include "pipeline/recipe.h"
#include "pipeline/record.h"
#include "pipeline/report.h"
#include "pipeline/run.h"

/* ---- measurements ------------------------------------------------------------------------ */

static int param_count(const char *path, const char *tokenizer, uint64_t *n, slmc_err *err) {
    model m;
    model_open_opts opts = {.tokenizer = tokenizer}; /* only shapes are read */
    if (model_open(&m, path, &opts, err)) return -1;
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
        *out = NULL;
        return slmc_fail(err, path, "%s at byte %d", je.text, je.position);
    }
    return 0;
}

/* Leaf i's name, variant, type, published file name and gates: what the plan (the current
 * recipe) says about it, as opposed to what was measured. */
static void leaf_identity(const pl_plan *pl, int i, pl_result *x) {
    const pl_leaf *l = &pl->leaves[i];
    snprintf(x->name, sizeof x->name, "%s%s%s", l->v->name, l->type ? "-" : "", l->type ? l->type : "");
    x->variant = l->v->name;
    x->type = l->type;
    x->gates = *recipe_gates_for(l->v, l->type);
    if (l->model.node >= 0) snprintf(x->file, sizeof x->file, "%s.gguf", x->name);
    else x->file[0] = '\0'; /* the variant is the source itself */
}

/* Publish leaf i's model as OUT/NAME.gguf and measure it: size, parameters, and its eval
 * against the source's (x's identity is filled first). */
static int measure_leaf(pl_plan *pl, int i, pl_result *x, slmc_err *err) {
    const recipe *r = pl->r;
    const pl_leaf *l = &pl->leaves[i];
    leaf_identity(pl, i, x);
    char *model_path;
    if (l->model.node >= 0) {
        const pl_node *n = &pl->nodes[l->model.node];
        snprintf(x->key, sizeof x->key, "%s", n->key);
        if (!(model_path = pl_cache_path(pl, n, l->model.out))) return slmc_fail(err, NULL, "out of memory");
        if (pl_publish(model_path, pl->out_dir, x->file, (unsigned)i, err)) { free(model_path); return -1; }
    } else {
        const char *h = pl_content_hash(pl, r->source, err);
        if (!h) return -1;
        snprintf(x->key, sizeof x->key, "%s", h);
        if (!(model_path = strdup(r->source))) return slmc_fail(err, NULL, "out of memory");
    }
    x->size = pl_path_size(model_path);
    int rc = param_count(model_path, l->model.node >= 0 ? NULL : r->tokenizer, &x->n_params, err);
    free(model_path);
    if (rc) return -1;
    x->bpw = x->n_params ? 8.0 * (double)x->size / (double)x->n_params : NAN;
    pl_result_set_eval(x, NULL, NAN, NAN);
    if (l->eval < 0) return 0;
    json_t *ev = NULL, *base = NULL;
    char *p = pl_cache_path(pl, &pl->nodes[l->eval], 0), *pb = pl_cache_path(pl, &pl->nodes[l->base_eval], 0);
    rc = !p || !pb ? slmc_fail(err, NULL, "out of memory") : read_eval(p, &ev, err) || read_eval(pb, &base, err);
    free(p);
    free(pb);
    if (rc) { json_decref(ev); return -1; }
    pl_result_set_eval(x, ev, pl_json_num(base, "ppl"), pl_json_num(base, "ppl_stderr"));
    json_decref(ev);
    json_decref(base);
    return 0;
}

/* A recipe integer (the recipe parser checked it is a whole number >= 0), clamped to int. */
static int recipe_int(const char *s) {
    long long v = s ? strtoll(s, NULL, 10) : 0;
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* The variant called `name`, or an error listing the recipe's variants. */
static const recipe_variant *find_variant(const recipe *r, const char *name, slmc_err *err) {
    char known[600] = "";
    size_t len = 0;
    for (int i = 0; i < r->n_variants; i++) {
        if (strcmp(r->variants[i].name, name) == 0) return &r->variants[i];
        if (len + 1 < sizeof known)
            len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", r->variants[i].name);
    }
    if (len >= sizeof known) strcpy(known + sizeof known - 4, "...");
    slmc_fail(err, r->path, "--only %s: no such variant (the recipe has: %s)", name, known);
    return NULL;
}

/* The first of variant v's leaves (a variant's leaves are consecutive, in recipe order), and how
 * many there are. */
static int variant_leaves(const pl_plan *pl, const recipe_variant *v, int *first) {
    int n = 0;
    *first = 0;
    for (int i = 0; i < pl->n_leaves; i++)
        if (pl->leaves[i].v == v && n++ == 0) *first = i;
    return n;
}

/* ---- the job matrix ---------------------------------------------------------------------- */

/* Published file names of a variant (without running anything): VARIANT-TYPE.gguf per quantize
 * type, else VARIANT.gguf when a step makes a model, else none (the variant is the source). */
static json_t *variant_files(const recipe_variant *v) {
    json_t *a = json_array();
    const recipe_opt *types = recipe_variant_types(v);
    char name[300];
    for (int t = 0; a && types && t < types->n_values; t++) {
        snprintf(name, sizeof name, "%s-%s.gguf", v->name, types->values[t]);
        json_array_append_new(a, json_string(name));
    }
    bool makes_model = false;
    for (int i = 0; i < v->n_steps; i++)
        makes_model |= v->steps[i].kind == RS_CONVERT || v->steps[i].kind == RS_PRUNE || v->steps[i].kind == RS_DISTILL;
    if (a && !types && makes_model) {
        snprintf(name, sizeof name, "%s.gguf", v->name);
        json_array_append_new(a, json_string(name));
    }
    return a;
}

/* {"include":[{"variant":..., "recipe":..., "files":[...]}, ...]} on one line (what a CI
 * system's matrix takes; one line fits GitHub's $GITHUB_OUTPUT). */
static int matrix_json(const recipe *r, pipeline_result *out, slmc_err *err) {
    json_t *root = json_object(), *inc = json_array();
    if (!root || !inc) { json_decref(root); json_decref(inc); return slmc_fail(err, NULL, "out of memory"); }
    for (int i = 0; i < r->n_variants; i++) {
        json_t *o = json_object();
        if (!o) continue;
        json_object_set_new(o, "variant", json_string(r->variants[i].name));
        json_object_set_new(o, "recipe", json_string(r->name));
        json_object_set_new(o, "files", variant_files(&r->variants[i]));
        json_array_append_new(inc, o);
    }
    json_object_set_new(root, "include", inc);
    out->json = pl_end_line(json_dumps(root, JSON_COMPACT));
    json_decref(root);
    out->text = out->json ? strdup(out->json) : NULL;
    out->pass = true;
    return out->text ? 0 : slmc_fail(err, NULL, "out of memory");
}

/* ---- the variants' records --------------------------------------------------------------- */

/* After variant v's steps ran: publish and measure its outputs, and keep its result record. */
static int finish_variant(pl_plan *pl, const recipe_variant *v, const pipeline_opts *o, const pipeline_hooks *hooks,
                          slmc_err *err) {
    int first, n = variant_leaves(pl, v, &first);
    pl_result *res = calloc((size_t)(n ? n : 1), sizeof *res);
    if (!res) return slmc_fail(err, NULL, "out of memory");
    int rc = 0;
    for (int i = 0; !rc && i < n; i++) rc = measure_leaf(pl, first + i, &res[i], err);
    char key[65], label[300];
    snprintf(label, sizeof label, "result [%s]", v->name);
    if (!rc) rc = pl_record_key(pl, v, key, err) || pl_record_store(pl, key, label, res, n, o->stop, err);
    free(res);
    if (rc) return -1;
    if (hooks && hooks->note) {
        char msg[400];
        snprintf(msg, sizeof msg, "pipeline: recorded the results of variant %s key %.12s", v->name, key);
        hooks->note(hooks->ud, msg);
    }
    return 0;
}

/* The report of variant `only` (NULL: every variant) from the result records. A variant
 * without a record has not been run (or did not finish): an error naming every such variant.
 * rep->results is malloc'd (the caller frees it). */
static int report_from_records(pl_plan *pl, const recipe_variant *only, pl_report *rep, slmc_err *err) {
    const recipe *r = pl->r;
    memset(rep, 0, sizeof *rep);
    rep->name = r->name;
    rep->source = r->source_text;
    rep->source_size = pl_path_size(r->source);
    rep->source_ppl = rep->source_ppl_stderr = NAN;
    if (param_count(r->source, r->tokenizer, &rep->source_params, err)) return -1;
    if (r->has_eval) {
        const char *t = recipe_step_value(&r->eval, "text"), *slash = strrchr(t, '/');
        snprintf(rep->eval_text, sizeof rep->eval_text, "%s", slash ? slash + 1 : t);
        rep->eval_ctx = recipe_int(recipe_step_value(&r->eval, "ctx"));
        rep->eval_chunks = recipe_int(recipe_step_value(&r->eval, "chunks"));
    }
    if (!(rep->results = calloc((size_t)(pl->n_leaves ? pl->n_leaves : 1), sizeof *rep->results)))
        return slmc_fail(err, NULL, "out of memory");
    char missing[600] = "";     /* 'a', 'b' */
    const char *first_missing = NULL;
    size_t len = 0;
    int n_missing = 0;
    for (int vi = 0; vi < r->n_variants; vi++) {
        const recipe_variant *v = &r->variants[vi];
        if (only && v != only) continue;
        int first, n = variant_leaves(pl, v, &first);
        char key[65];
        if (pl_record_key(pl, v, key, err)) return -1;
        pl_result *res = &rep->results[rep->n_results];
        int rc = pl_record_load(pl, key, res, n, err);
        if (rc < 0) return -1;
        if (rc == 1) {
            if (len + 1 < sizeof missing)
                len += (size_t)snprintf(missing + len, sizeof missing - len, "%s'%s'", n_missing ? ", " : "", v->name);
            if (!n_missing++) first_missing = v->name;
            continue;
        }
        for (int j = 0; j < n; j++) {
            const pl_leaf *l = &pl->leaves[first + j];
            leaf_identity(pl, first + j, &res[j]);
            if (!rep->has_eval && res[j].has_eval && l->eval_settings == &r->eval) {
                rep->has_eval = true; /* the report's source line: the recipe's eval */
                rep->source_ppl = res[j].source_ppl;
                rep->source_ppl_stderr = res[j].source_ppl_stderr;
            }
        }
        rep->n_results += n;
    }
    if (len >= sizeof missing) strcpy(missing + sizeof missing - 4, "...");
    if (n_missing == 1)
        return slmc_fail(err, r->path, "variant %s has not been run yet: no result record in %s (run slmc pipeline "
                         "%s --only %s with this cache first)", missing, pl->cache_dir, r->path, first_missing);
    if (n_missing > 1)
        return slmc_fail(err, r->path, "variants %s have not been run yet: no result records in %s (run slmc "
                         "pipeline %s --only VARIANT for each, with this cache, first)", missing, pl->cache_dir, r->path);
    pl_report_gate(rep);
    return 0;
}

/* ---- reports ----------------------------------------------------------------------------- */

/* The report as JSON and Markdown text (malloc'd, each ending with a newline). */
static int render_report(const pl_report *rep, char **md_out, char **json_out, slmc_err *err) {
    json_t *j = pl_report_json(rep);
    char *js = pl_end_line(j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : NULL);
    json_decref(j);
    char *md = pl_report_markdown(rep);
    if (!js || !md) { free(js); free(md); return slmc_fail(err, NULL, "out of memory"); }
    *md_out = md;
    *json_out = js;
    return 0;
}

/* OUT/<recipe>.report.{json,md,svg}; the JSON and Markdown texts are handed back. */
static int write_reports(const pl_plan *pl, const pl_report *rep, char **md_out, char **json_out, slmc_err *err) {
    char *md, *js, *svg = pl_report_svg(rep);
    if (!svg) return slmc_fail(err, NULL, "out of memory");
    if (render_report(rep, &md, &js, err)) { free(svg); return -1; }
    const char *ext[3] = {".report.json", ".report.md", ".report.svg"};
    const char *body[3] = {js, md, svg};
    int rc = 0;
    for (int i = 0; !rc && i < 3; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s%s", pl->r->name, ext[i]);
        char *path = path_join(pl->out_dir, name);
        if (!path) { rc = slmc_fail(err, NULL, "out of memory"); break; }
        rc = pl_write_atomic(path, body[i], strlen(body[i]), err);
        free(path);
    }
    free(svg);
    if (rc) { free(js); free(md); return -1; }
    *md_out = md;
    *json_out = js;
    return 0;
}

/* ---- the entry point --------------------------------------------------------------------- */

/* Run the steps of variant `only` (NULL: all), publish and record each variant, and report:
 * all variants into the report files, one variant into the result only. */
static int run_and_report(pl_plan *pl, const recipe_variant *only, const pipeline_opts *o, const pipeline_hooks *hooks,
                          int jobs, int threads_each, pl_report *rep, pipeline_result *out, slmc_err *err) {
    const recipe *r = pl->r;
    if (pl_make_dir(pl->cache_dir, err)) return -1;
    pl_plan_cache_state(pl, only);
    pl_remove_stale_temps(pl->cache_dir);
    pl_run_opts ro = {.jobs = jobs, .threads_each = threads_each, .stop = o->stop,
                      .note = hooks ? hooks->note : NULL, .ud = hooks ? hooks->ud : NULL};
    if (o->stop && *o->stop) return slmc_fail(err, r->path, "interrupted"); /* while planning */
    if (pl_run(pl, &ro, err)) return -1;
    for (int i = 0; i < r->n_variants; i++)
        if ((!only || only == &r->variants[i]) && finish_variant(pl, &r->variants[i], o, hooks, err)) return -1;
    if (report_from_records(pl, only, rep, err)) return -1;
    if (only) return render_report(rep, &out->text, &out->json, err);
    return write_reports(pl, rep, &out->text, &out->json, err);
}

int pipeline_run(const pipeline_opts *o, const pipeline_hooks *hooks, pipeline_result *out, slmc_err *err) {
    memset(out, 0, sizeof *out);
    recipe r;
    if (recipe_load(&r, o->recipe, err)) return -1;
    pl_plan pl = {0};
    pl_report rep = {0};
    const recipe_variant *only = NULL;
    int rc = -1;
    if (!(out->name = strdup(r.name))) { slmc_fail(err, NULL, "out of memory"); goto done; }
    if (o->mode == PIPELINE_MATRIX) {
        rc = matrix_json(&r, out, err);
        goto done;
    }
    if (o->only && o->mode == PIPELINE_REPORT) {
        slmc_fail(err, r.path, "a report covers every variant: it takes no --only");
        goto done;
    }
    if (o->only && !(only = find_variant(&r, o->only, err))) goto done;
    int budget = o->threads > 0 ? o->threads : r.threads ? r.threads : omp_get_num_procs();
    int want = o->jobs > 0 ? o->jobs : 1;
    int jobs = want < budget ? want : budget;
    int threads_each = budget / jobs > 0 ? budget / jobs : 1;
    if (o->mode != PIPELINE_DRY_RUN && pl_make_dir(o->out_dir, err)) goto done;
    if (pl_plan_build(&pl, &r, o->exe, o->out_dir, o->cache_dir, err)) goto done;
    switch (o->mode) {
    case PIPELINE_DRY_RUN:
        pl_plan_cache_state(&pl, only);
        out->pass = true;
        rc = pl_plan_describe(&pl, jobs, threads_each, &out->text, &out->json, err);
        goto done;
    case PIPELINE_REPORT:
        if (report_from_records(&pl, NULL, &rep, err) || write_reports(&pl, &rep, &out->text, &out->json, err)) goto done;
        break;
    default:
        if (run_and_report(&pl, only, o, hooks, jobs, threads_each, &rep, out, err)) goto done;
        break;
    }
    out->pass = rep.pass;
    rc = 0;
done:
    pl_plan_free(&pl);
    free(rep.results);
    recipe_free(&r);
    if (rc) pipeline_result_free(out);
    return rc;
}

void pipeline_result_free(pipeline_result *r) {
    free(r->name);
    free(r->text);
    free(r->json);
    memset(r, 0, sizeof *r);
}
