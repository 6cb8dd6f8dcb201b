/* quantize_run.c - `slmc quantize` after the argument parsing (see quantize_run.h). */
#include "quantize_run.h"

#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/types.h"
#include "eval/ranks.h"
#include "formats/fileio.h"
#include "quant/imatrix.h"

#define DEFAULT_CALIB_CHUNKS 50
#define MAX_CALIB_CTX 512 /* GPTQ's default chunk: the model's context, at most this */

const char *quantize_gptq_mode_name(quantize_gptq_mode mode) {
    return mode == QUANTIZE_GPTQ_PARALLEL ? "parallel" : mode == QUANTIZE_GPTQ_SEQUENTIAL ? "sequential" : "fp-target";
}

void quantize_run_opts_default(quantize_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->output_type = o->token_embd_type = -1;
}

static bool is_fit(const char *type) { return strcmp(type, QUANTIZE_FIT) == 0; }

int quantize_run_check(const quantize_run_opts *o, slmc_err *err) {
    bool target = o->target_bpw > 0 || o->target_size > 0;
    if (o->n_types < 1 || o->n_types > QUANTIZE_MAX_OUTPUTS)
        return slmc_fail(err, NULL, "give 1 to %d types, not %d", QUANTIZE_MAX_OUTPUTS, o->n_types);
    if (o->gptq && !o->calib) return slmc_fail(err, NULL, "--method gptq needs --calib FILE");
    if (!o->gptq && (o->calib || o->calib_ctx || o->calib_chunks || o->damp > 0 || o->gptq_mode != QUANTIZE_GPTQ_DEFAULT ||
                     o->ridge > 0))
        return slmc_fail(err, NULL, "--calib, -c, --chunks, --damp, --gptq-* go with --method gptq");
    if (o->ridge > 0 && o->gptq_mode != QUANTIZE_GPTQ_DEFAULT && o->gptq_mode != QUANTIZE_GPTQ_FP_TARGET)
        return slmc_fail(err, NULL, "--gptq-ridge goes with the fp target (the default, --gptq-fp-target)");
    if (o->target_bpw > 0 && o->target_size > 0) return slmc_fail(err, NULL, "give --target-bpw or --target-size, not both");
    if (target && (o->n_types != 1 || !is_fit(o->types[0])))
        return slmc_fail(err, NULL, "a size target chooses the types: give no TYPE or --type");
    if (!o->out_pattern && !o->dry_run) return slmc_fail(err, NULL, "give OUT, -o PATTERN or --dry-run");
    if (o->n_types > 1 && o->out_pattern && !strstr(o->out_pattern, "{type}"))
        return slmc_fail(err, NULL, "-o needs a {type} placeholder for several types");
    if ((o->n_include || o->n_exclude) && !o->imatrix)
        return slmc_fail(err, NULL, "--include-weights / --exclude-weights choose which tensors use the importance "
                                    "matrix, as in llama-quantize: give --imatrix");
    if (o->n_include && o->n_exclude)
        return slmc_fail(err, NULL, "give --include-weights or --exclude-weights, not both (as llama-quantize)");
    for (int i = 0; i < o->n_types; i++) {
        if (is_fit(o->types[i]) && !target) return slmc_fail(err, NULL, "type %s needs --target-bpw or --target-size", QUANTIZE_FIT);
        if (!is_fit(o->types[i]) && quant_mix_from_name(o->types[i]) < 0)
            return slmc_fail(err, NULL, "unknown type '%s'", o->types[i]);
    }
    return 0;
}

static void note(const quantize_hooks *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const quantize_hooks *h, const char *fmt, ...) {
    if (!h || !h->note) return;
    char msg[SLMC_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->note(h->ud, msg);
}

/* The importance matrix as one entry per tensor (NULL for tensors that do not use it):
 * --include-weights / --exclude-weights name tensors exactly, as llama-quantize takes them. */
static int load_importance(const quantize_run_opts *o, const model *m, imatrix *im, const float ***importance,
                           uint64_t *n_found, slmc_err *err) {
    if (imatrix_load(im, o->imatrix, err) != 0) return -1;
    if (imatrix_importance_table(im, m, importance, n_found, err) != 0) { imatrix_free(im); return -1; }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        bool listed = false;
        for (int k = 0; k < o->n_include; k++) listed |= strcmp(m->tensors[i].name, o->include[k]) == 0;
        for (int k = 0; k < o->n_exclude; k++) listed |= strcmp(m->tensors[i].name, o->exclude[k]) == 0;
        if ((o->n_include && !listed) || (o->n_exclude && listed)) (*importance)[i] = NULL;
    }
    return 0;
}

/* Size target: estimate every candidate's error, choose the types for the budget and fill types
 * (which holds the base plan on entry); the choice stays in r for the report. */
static int fit_to_target(const quantize_run_opts *o, quantize_result *r, int *types,
                         const float *const *importance, slmc_err *err) {
    if (fit_table_build(&r->fit, &r->m, types, importance, 0, err) != 0) return -1;
    r->fitted = true;
    r->fit_budget = o->target_size ? o->target_size : (uint64_t)(o->target_bpw * (double)r->fit.params / 8.0);
    r->fit_choice = malloc((r->fit.n ? r->fit.n : 1) * sizeof *r->fit_choice);
    if (!r->fit_choice) return slmc_fail(err, o->in, "out of memory");
    if (fit_allocate(&r->fit, r->fit_budget, r->fit_choice, &r->fit_res, err) != 0) return slmc_fail_prefix(err, o->in);
    fit_apply(&r->fit, r->fit_choice, types);
    r->fit_budget_bpw = 8.0 * (double)r->fit_budget / (double)r->fit.params;
    r->fit_unfilled = (double)r->fit_res.bytes < 0.99 * (double)r->fit_budget;
    return 0;
}

/* Replace {type} in pattern with name (malloc'd; NULL when out of memory). */
static char *expand_output(const char *pattern, const char *name) {
    const char *at = strstr(pattern, "{type}");
    size_t n = strlen(pattern) + strlen(name) + 1;
    char *s = malloc(n);
    if (!s) return NULL;
    if (!at) snprintf(s, n, "%s", pattern);
    else snprintf(s, n, "%.*s%s%s", (int)(at - pattern), pattern, name, at + 6);
    return s;
}

/* Output g: its type plan (the mix's rules, or the fit to the size target), label and path. */
static int plan_output(const quantize_run_opts *o, quantize_result *r, int g, const float *const *importance,
                       slmc_err *err) {
    quantize_output *out = &r->outputs[g];
    const model *m = &r->m;
    bool fit = is_fit(o->types[g]);
    plan_opts po;
    /* a size target starts from the Q8_0 plan: it says which tensors are quantized at all */
    plan_opts_init(&po, fit ? MIX_Q8_0 : quant_mix_from_name(o->types[g]));
    po.output_type = o->output_type;
    po.token_embd_type = o->token_embd_type;
    po.pure = o->pure;
    po.leave_output = o->leave_output;
    po.overrides = o->overrides;
    po.n_overrides = o->n_overrides;
    /* llama-quantize's has_imatrix: importance data is left after --include / --exclude-weights */
    for (uint64_t i = 0; importance && i < m->n_tensors && !po.has_imatrix; i++) po.has_imatrix = importance[i] != NULL;
    out->types = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *out->types);
    if (!out->types) return slmc_fail(err, o->in, "out of memory");
    if (quant_plan(m, &po, out->types, err) != 0) return -1;
    if (fit && fit_to_target(o, r, out->types, importance, err) != 0) return -1;
    out->label = fit ? QUANTIZE_FIT : quant_mix_name(po.mix);
    out->file_type = fit ? fit_file_type(m, out->types) : po.mix;
    /* llama-quantize's refusal of 1- and 2-bit types without importance data, made here for
     * every output before anything is written (and in a dry run, which shows what would be) */
    if (plan_check_imatrix(m, (int)out->file_type, out->types, importance, err) != 0) return -1;
    if (!o->out_pattern) return 0;
    if (!(out->path = expand_output(o->out_pattern, out->label))) return slmc_fail(err, o->in, "out of memory");
    if (same_file(o->in, out->path)) return slmc_fail(err, out->path, "output path is the input; choose another output");
    for (int h = 0; h < g; h++)
        if (strcmp(r->outputs[h].path, out->path) == 0) return slmc_fail(err, out->path, "two types write the same output path");
    return 0;
}

uint64_t quantize_tensor_bytes(const model_tensor *t, int type) {
    return type_nbytes(type, t->ne[0] * model_tensor_rows(t));
}

double quantize_output_bpw(const quantize_output *out) {
    const quant_stats *s = &out->stats;
    return s->params ? 8.0 * (double)s->bytes / (double)s->params : 0.0;
}

/* A dry run's figures: tensors and bytes per type of a plan. */
static void plan_stats(const model *m, const int *types, quant_stats *s) {
    memset(s, 0, sizeof *s);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        uint64_t n = (uint64_t)(t->ne[0] * model_tensor_rows(t)), b = quantize_tensor_bytes(t, types[i]);
        s->n_by_type[types[i]]++;
        s->bytes_by_type[types[i]] += b;
        s->bytes += b;
        s->params += n;
    }
}

/* Quantize and write every output, with GPTQ when asked (rank 0; the calibration is shared). */
static int quantize_outputs(const quantize_hooks *h, quantize_result *r, const quantize_opts *qo, gptq_calib *calib,
                            slmc_err *err) {
    const model *m = &r->m;
    const int n = r->n_outputs;
    quant_target targets[QUANTIZE_MAX_OUTPUTS];
    quant_stats stats[QUANTIZE_MAX_OUTPUTS];
    for (int g = 0; g < n; g++)
        targets[g] = (quant_target){.path = r->outputs[g].path, .types = r->outputs[g].types, .file_type = r->outputs[g].file_type};
    const slmc_progress *progress = h ? &h->progress : NULL;
    /* sequential GPTQ's Hessians depend on the output type: one run per type, else one for all */
    const bool per_type = calib && r->gptq_mode != QUANTIZE_GPTQ_PARALLEL;
    int rc = 0;
    if (per_type) {
        for (int g = 0; g < n && rc == 0; g++) {
            if (g) gptq_calib_reset(calib);
            rc = quantize_model(m, &targets[g], 1, qo, &stats[g], progress, err);
        }
    } else {
        rc = quantize_model(m, targets, n, qo, stats, progress, err);
    }
    for (int g = 0; g < n && rc == 0; g++) {
        r->outputs[g].stats = stats[g];
        if (g == 0 || per_type) r->seconds += stats[g].seconds;
    }
    return rc;
}

/* Every output, with GPTQ when asked: rank 0 writes, the other ranks (mpirun) serve GPTQ's
 * calibration or wait; the outcome is agreed. */
static int write_outputs(const quantize_run_opts *o, const quantize_hooks *h, quantize_result *r,
                         const float *const *importance, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    const model *m = &r->m;
    quantize_opts qo = {.allow_requantize = o->allow_requantize, .importance = importance};
    gptq_calib *calib = NULL;
    quant_tensor_hook gptq_hook;
    r->gptq = o->gptq;
    r->gptq_mode = o->gptq_mode == QUANTIZE_GPTQ_DEFAULT ? QUANTIZE_GPTQ_FP_TARGET : o->gptq_mode;
    if (o->gptq) {
        int ctx_train = m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train < MAX_CALIB_CTX ? (int)m->cfg.n_ctx_train : MAX_CALIB_CTX;
        gptq_calib_opts co = {.text = o->calib, .n_ctx = o->calib_ctx ? o->calib_ctx : ctx_train,
                              .chunks = o->calib_chunks ? o->calib_chunks : DEFAULT_CALIB_CHUNKS, .damp = o->damp,
                              .sequential = r->gptq_mode != QUANTIZE_GPTQ_PARALLEL,
                              .fp_target = r->gptq_mode == QUANTIZE_GPTQ_FP_TARGET, .ridge = o->ridge, .comm = job};
        /* every rank tokenizes the text and binds the forward pass */
        if (comm_agree(job, gptq_calib_open(&calib, m, &co, err), err) != 0) {
            gptq_calib_close(calib);
            return -1;
        }
        gptq_hook = gptq_calib_hook(calib);
        qo.tensor_hook = &gptq_hook;
    }
    int rc;
    if (job->rank == 0) {
        rc = quantize_outputs(h, r, &qo, calib, err);
        rc = calib ? gptq_calib_release(calib, rc, err) : comm_agree(job, rc, err);
    } else {
        rc = calib ? gptq_calib_serve(calib, err) : comm_agree(job, 0, err);
    }
    if (calib) gptq_calib_get_info(calib, &r->gptq_info);
    gptq_calib_close(calib);
    return rc;
}

/* The run on the threads quantize_run chose. */
static int run(const quantize_run_opts *o, const quantize_hooks *h, quantize_result *r, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    model_open_opts mo = {.tokenizer = o->tokenizer};
    imatrix im;
    bool have_im = false;
    const float **importance = NULL; /* [n_tensors] from the imatrix, NULL entries for unused tensors */
    int rc = -1;
    /* every rank opens the input and makes the plans: they agree before anything is written */
    const int opened = model_open(&r->m, o->in, &mo, err);
    if (comm_agree(job, opened, err) != 0) {
        if (opened == 0) quantize_result_free(r); /* another rank failed */
        return -1;
    }
    if (o->imatrix) {
        if (load_importance(o, &r->m, &im, &importance, &r->imatrix_tensors, err) != 0) goto done;
        have_im = true;
        note(h, "importance matrix %s: entries for %llu tensors", o->imatrix, (unsigned long long)r->imatrix_tensors);
    }
    r->n_outputs = o->n_types;
    for (int g = 0; g < r->n_outputs; g++)
        if (plan_output(o, r, g, importance, err) != 0) goto done;
    for (uint64_t i = 0; i < r->m.n_tensors && o->allow_requantize; i++)
        if (!type_is_float(r->m.tensors[i].type)) {
            note(h, "warning: %s is already quantized; requantizing compounds the error", o->in);
            break;
        }
    rc = 0;
done:
    if (comm_agree(job, rc, err) != 0) {
        rc = -1;
        goto out;
    }
    if (h && h->planned) h->planned(h->ud, r);
    if (o->dry_run) {
        for (int g = 0; g < r->n_outputs; g++) plan_stats(&r->m, r->outputs[g].types, &r->outputs[g].stats);
        rc = 0;
    } else {
        rc = write_outputs(o, h, r, importance, err);
    }
out:
    free(importance);
    if (have_im) imatrix_free(&im);
    if (rc != 0) quantize_result_free(r);
    return rc;
}

int quantize_run(const quantize_run_opts *o, const quantize_hooks *h, quantize_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    if (quantize_run_check(o, err) != 0) return comm_agree(ranks_job(o->comm), -1, err);
    const int caller_threads = omp_get_max_threads();
    if (o->n_threads > 0) omp_set_num_threads(o->n_threads);
    int rc = run(o, h, r, err);
    omp_set_num_threads(caller_threads);
    return rc;
}

void quantize_result_free(quantize_result *r) {
    for (int g = 0; g < r->n_outputs; g++) {
        free(r->outputs[g].types);
        free(r->outputs[g].path);
    }
    if (r->fitted) fit_table_free(&r->fit);
    free(r->fit_choice);
    model_close(&r->m);
    memset(r, 0, sizeof *r);
}
