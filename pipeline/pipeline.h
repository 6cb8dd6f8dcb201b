/* pipeline.h - run a compression recipe: one source model in, a family of variants out, each
 * measured against the source and held to quality gates, with reports (docs/pipeline.md).
 *
 *   pipeline_opts o = {.recipe = "r.yaml", .out_dir = "out", .exe = "/usr/bin/slmc", .jobs = 2};
 *   pipeline_result res;
 *   if (pipeline_run(&o, NULL, &res, &err)) ... err.msg ...
 *   fputs(res.text, stdout);          (the Markdown report, or the plan for a dry run)
 *   ... res.pass ...
 *   pipeline_result_free(&res);
 *
 * What happens (plan.h, run.h, report.h hold the parts):
 *   1. the recipe (recipe.h) becomes a graph of `slmc` commands, each keyed by the SHA-256 of
 *      the slmc binary, its options and its inputs' contents;
 *   2. the commands whose outputs are not in OUT/cache yet, and that some output needs, run as
 *      child processes of opts->exe, up to opts->jobs at once;
 *   3. each output model is published as OUT/NAME.gguf, gated, and the reports are written:
 *      OUT/RECIPE.report.json, .report.md and .report.svg.
 * Nothing is printed: progress notes go to hooks->note, the report comes back in the result.
 */
#ifndef SLMC_PIPELINE_PIPELINE_H
#define SLMC_PIPELINE_PIPELINE_H

#include <signal.h>
#include <stdbool.h>

#include "formats/error.h"

typedef struct pipeline_opts {
    const char *recipe;   /* the recipe file (YAML) */
    const char *out_dir;  /* output folder; created if missing (not for a dry run) */
    const char *exe;      /* the slmc binary every step runs; its content is part of every key */
    int jobs;             /* steps at once (>= 1); at most the thread budget */
    int threads;          /* thread budget shared by the jobs; 0: the recipe's `threads`, else
                             every core. Each child gets budget / jobs (at least 1). */
    bool dry_run;         /* plan only: nothing is run or written; the result holds the plan */
    /* NULL, or a flag that a signal handler sets non-zero to ask for a stop: the running
     * children are stopped, their temporary folders removed, and pipeline_run fails with
     * "RECIPE: interrupted". The caller owns the handler (and the flag, its one global). */
    volatile sig_atomic_t *stop;
} pipeline_opts;

typedef struct pipeline_hooks {
    void *ud;  /* passed back to note */
    /* A progress note, one line without newline: "pipeline: [2/5] quantize Q8_0 [m] ...",
     * "pipeline: done quantize Q8_0 [m] (1.2s)". May be NULL. */
    void (*note)(void *ud, const char *msg);
} pipeline_hooks;

typedef struct pipeline_result {
    char *name;  /* the recipe's name (report files are OUT/NAME.report.*) */
    /* The report as Markdown (the content of NAME.report.md) and as JSON (NAME.report.json);
     * for a dry run, the plan as a listing and as JSON. Both end with a newline. */
    char *text;
    char *json;
    bool pass;   /* every gate holds (true when there are none, and for a dry run) */
} pipeline_result;

/* Load the recipe, plan, run what is not cached, publish, gate and write the reports.
 * A failing gate is not an error (see out->pass). On failure out is left empty. */
int pipeline_run(const pipeline_opts *opts, const pipeline_hooks *hooks, pipeline_result *out, slmc_err *err);
void pipeline_result_free(pipeline_result *r);

#endif
