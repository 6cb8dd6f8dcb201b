/* pipeline.c - a recipe from start to end (see pipeline.h): plan, run, then gather each
 * output's measurements, publish it, gate, and write the reports. */
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

static double jnum(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Gather leaf i's measurements into x, publishing its model as OUT/NAME.gguf. */
static int collect_leaf(pl_plan *pl, int i, pl_result *x, pl_report *rep, slmc_err *err) {
    const recipe *r = pl->r;
    const pl_leaf *l = &pl->leaves[i];
    snprintf(x->name, sizeof x->name, "%s%s%s", l->v->name, l->type ? "-" : "", l->type ? l->type : "");
    x->variant = l->v->name;
    x->type = l->type;
    x->gates = *recipe_gates_for(l->v, l->type);
    char *model_path;
    if (l->model.node >= 0) {
        const pl_node *n = &pl->nodes[l->model.node];
        snprintf(x->key, sizeof x->key, "%s", n->key);
        model_path = pl_cache_path(pl, n, l->model.out);
        snprintf(x->file, sizeof x->file, "%s.gguf", x->name);
        if (!model_path) return slmc_fail(err, NULL, "out of memory");
        if (pl_publish(model_path, pl->out_dir, x->file, (unsigned)i, err)) { free(model_path); return -1; }
    } else { /* the variant is the source itself */
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
    if (l->eval < 0) return 0;
    json_t *ev = NULL, *base = NULL;
    char *p = pl_cache_path(pl, &pl->nodes[l->eval], 0), *pb = pl_cache_path(pl, &pl->nodes[l->base_eval], 0);
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

/* Every leaf's measurements, gated. rep->results is malloc'd (the caller frees it). */
static int build_report(pl_plan *pl, pl_report *rep, slmc_err *err) {
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
        const char *ctx = recipe_step_value(&r->eval, "ctx"), *chunks = recipe_step_value(&r->eval, "chunks");
        rep->eval_ctx = recipe_int(ctx);
        rep->eval_chunks = recipe_int(chunks);
    }
    if (!(rep->results = calloc((size_t)(pl->n_leaves ? pl->n_leaves : 1), sizeof *rep->results)))
        return slmc_fail(err, NULL, "out of memory");
    for (int i = 0; i < pl->n_leaves; i++) {
        if (collect_leaf(pl, i, &rep->results[i], rep, err)) return -1;
        rep->n_results++;
    }
    pl_report_gate(rep);
    return 0;
}

/* ---- reports ----------------------------------------------------------------------------- */


/* OUT/<recipe>.report.{json,md,svg}; the JSON and Markdown texts are handed back. */
static int write_reports(const pl_plan *pl, const pl_report *rep, char **md_out, char **json_out, slmc_err *err) {
    json_t *j = pl_report_json(rep);
    char *js = pl_end_line(j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : NULL);
    json_decref(j);
    char *md = pl_report_markdown(rep), *svg = pl_report_svg(rep);
    int rc = 0;
    if (!js || !md || !svg) rc = slmc_fail(err, NULL, "out of memory");
    const char *ext[3] = {".report.json", ".report.md", ".report.svg"};
    const char *body[3] = {js, md, svg};
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

int pipeline_run(const pipeline_opts *o, const pipeline_hooks *hooks, pipeline_result *out, slmc_err *err) {
    memset(out, 0, sizeof *out);
    recipe r;
    if (recipe_load(&r, o->recipe, err)) return -1;
    int budget = o->threads > 0 ? o->threads : r.threads ? r.threads : omp_get_num_procs();
    int want = o->jobs > 0 ? o->jobs : 1;
    int jobs = want < budget ? want : budget;
    int threads_each = budget / jobs > 0 ? budget / jobs : 1;
    pl_plan pl = {0};
    pl_report rep = {0};
    int rc = -1;
    if (!(out->name = strdup(r.name))) { slmc_fail(err, NULL, "out of memory"); goto done; }
    if (!o->dry_run && pl_make_dir(o->out_dir, err)) goto done;
    if (pl_plan_build(&pl, &r, o->exe, o->out_dir, err)) goto done;
    if (!o->dry_run && pl_make_dir(pl.cache_dir, err)) goto done;
    pl_plan_cache_state(&pl);
    if (o->dry_run) {
        out->pass = true;
        rc = pl_plan_describe(&pl, jobs, threads_each, &out->text, &out->json, err);
        goto done;
    }
    pl_remove_stale_temps(pl.cache_dir);
    pl_run_opts ro = {.jobs = jobs, .threads_each = threads_each, .stop = o->stop,
                      .note = hooks ? hooks->note : NULL, .ud = hooks ? hooks->ud : NULL};
    if (o->stop && *o->stop) { slmc_fail(err, r.path, "interrupted"); goto done; } /* while planning */
    if (pl_run(&pl, &ro, err)) goto done;
    if (build_report(&pl, &rep, err) || write_reports(&pl, &rep, &out->text, &out->json, err)) goto done;
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
