/* run.h - run a plan's needed nodes as child `slmc` processes.
 *
 * At most `jobs` children at a time, each started with an argument vector (no shell) and
 * `-t threads_each`, stdin from /dev/null, stdout to a file (the eval JSON) or /dev/null and
 * stderr to a log. Each child writes into its own temporary folder CACHE/.tmp-<pid>-XXXXXX;
 * when it succeeds its outputs are renamed into the cache (an eval's JSON is kept without the
 * fields that change between runs), when it fails its log is kept as CACHE/<key>.failed.log.
 * The first failure stops launching; the running children are waited for.
 */
#ifndef SLMC_PIPELINE_RUN_H
#define SLMC_PIPELINE_RUN_H

#include <signal.h>

#include "formats/error.h"
#include "pipeline/plan.h"

typedef struct pl_run_opts {
    int jobs;                       /* children at once, >= 1 */
    int threads_each;               /* -t of every child */
    /* NULL, or a flag set (non-zero) from a signal handler: the running children get SIGTERM,
     * their temporary folders are removed, and pl_run fails with "RECIPE: interrupted". */
    volatile sig_atomic_t *stop;
    /* Progress notes ("pipeline: [2/5] quantize Q8_0 [m] ...", "pipeline: done ..."), or NULL. */
    void (*note)(void *ud, const char *msg);
    void *ud;
} pl_run_opts;

/* Run every needed node of pl (after pl_plan_cache_state) whose inputs are ready, until all are
 * done or one fails. */
int pl_run(pl_plan *pl, const pl_run_opts *o, slmc_err *err);

#endif
