/* pipeline.h - run a compression recipe: one source model in, a family of variants out, each
 * measured against the source and held to quality gates, with reports (docs/pipeline.md).
 *
 *   pipeline_opts o = {.recipe = "r.yaml", .out_dir = "out", .exe = "/usr/bin/slmc", .jobs = 2};
 *   (.cache_dir = "/mnt/shared/cache", .only = "q4", .mode = PIPELINE_REPORT: see below)
 *   pipeline_result res;
 *   if (pipeline_run(&o, NULL, &res, &err)) ... err.msg ...
 *   fputs(res.text, stdout);          (the Markdown report, or the plan for a dry run)
 *   ... res.pass ...
 *   pipeline_result_free(&res);
 *
 * What happens (plan.h, run.h, cache.h, record.h, report.h hold the parts):
 *   1. the recipe (recipe.h) becomes a graph of `slmc` commands, each keyed by the SHA-256 of
 *      the slmc binary, its options and its inputs' contents;
 *   2. the commands whose outputs are not in the cache (OUT/cache, or opts->cache_dir, which
 *      other processes and machines may share) yet, and that some output needs, run as child
 *      processes of opts->exe, up to opts->jobs at once; a step another process is computing
 *      is waited for and reused (cache.h: a lock per step key);
 *   3. each output model is published as OUT/NAME.gguf and measured, and each variant's
 *      measurements are kept in the cache as its result record (record.h);
 *   4. the reports are assembled from the records, gated, and written: OUT/RECIPE.report.json,
 *      .report.md and .report.svg.
 * The modes split this for a CI job matrix: PIPELINE_MATRIX lists the variants (one job each),
 * opts->only runs 1-3 for one variant, PIPELINE_REPORT does only 4 (docs/ci-matrix.md).
 * Nothing is printed: progress notes go to hooks->note, the report comes back in the result.
 */
#ifndef SLMC_PIPELINE_PIPELINE_H
#define SLMC_PIPELINE_PIPELINE_H

#include <signal.h>
#include <stdbool.h>

#include "formats/error.h"

typedef enum pipeline_mode {
    PIPELINE_RUN,      /* run what is missing, publish, record, report (the default) */
    PIPELINE_DRY_RUN,  /* plan only: nothing is run or written; the result holds the plan */
    PIPELINE_MATRIX,   /* the variants as a CI job matrix, one line of JSON
                          {"include":[{"variant":..., "recipe":..., "files":[...]}, ...]};
                          only the recipe is read, nothing is written */
    PIPELINE_REPORT,   /* run nothing: the reports from every variant's result record in the
                          cache; a variant without one is an error naming it */
} pipeline_mode;

typedef struct pipeline_opts {
    const char *recipe;     /* the recipe file (YAML) */
    const char *out_dir;    /* output folder; created if missing (PIPELINE_RUN, _REPORT) */
    const char *cache_dir;  /* the step cache; NULL: out_dir/cache. Created if missing (its parent
                               must exist); may be shared by processes on many machines */
    const char *exe;        /* the slmc binary every step runs; its content is part of every key */
    pipeline_mode mode;
    /* NULL, or the one variant to run (PIPELINE_RUN, _DRY_RUN): only its steps and those they
     * need; its outputs are published and recorded, and the result holds its part of the
     * report (the report files are not written). An unknown name is an error listing the
     * recipe's variants. */
    const char *only;
    int jobs;               /* steps at once (>= 1); at most the thread budget */
    int threads;            /* thread budget shared by the jobs; 0: the recipe's `threads`, else
                               every core. Each child gets budget / jobs (at least 1). */
    /* NULL, or a flag that a signal handler sets non-zero to ask for a stop: the running
     * children are stopped, their temporary folders removed, and pipeline_run fails with
     * "RECIPE: interrupted". The caller owns the handler (and the flag, its one global). */
    volatile sig_atomic_t *stop;
} pipeline_opts;

typedef struct pipeline_hooks {
    void *ud;  /* passed back to note */
    /* A progress note, one line without newline, e.g. "pipeline: [2/5] quantize Q8_0 [m] ...",
     * "pipeline: computed quantize Q8_0 [m] key 3f2a9c1b0d4e in 1.2s (pid 1234 on host h)",
     * "pipeline: reused ... from the cache (computed by pid 1234 on host h)",
     * "pipeline: waiting for ...", "pipeline: waited for pid 1234 on host h: reused ...",
     * "pipeline: took over ...". May be NULL. */
    void (*note)(void *ud, const char *msg);
} pipeline_hooks;

typedef struct pipeline_result {
    char *name;  /* the recipe's name (report files are OUT/NAME.report.*) */
    /* The report as Markdown (the content of NAME.report.md) and as JSON (NAME.report.json);
     * with `only`, that variant's part of them; for a dry run, the plan as a listing and as
     * JSON; for PIPELINE_MATRIX, the matrix line in both. Both end with a newline. */
    char *text;
    char *json;
    bool pass;   /* every gate holds (true when there are none, for a dry run and a matrix) */
} pipeline_result;

/* Load the recipe and do what opts->mode says: by default plan, run what is not cached,
 * publish, record, gate and write the reports. A failing gate is not an error (see
 * out->pass). On failure out is left empty. */
int pipeline_run(const pipeline_opts *opts, const pipeline_hooks *hooks, pipeline_result *out, slmc_err *err);
void pipeline_result_free(pipeline_result *r);

#endif
