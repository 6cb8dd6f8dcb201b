/* run.h - run a plan's needed nodes as child `slmc` processes, sharing the step cache with
 * any other pipeline that uses it (cache.h).
 *
 * At most `jobs` children at a time, each started with an argument vector (no shell) and
 * `-t threads_each`, stdin from /dev/null, stdout to a file (the eval JSON) or /dev/null and
 * stderr to a log; on Linux a child is stopped (SIGTERM) when the pipeline dies, even by
 * kill -9. Before a node runs, its key's lock is taken and the cache looked at again:
 *   - lock taken, entry complete (another process finished it meanwhile): reused;
 *   - lock taken, no entry: the child runs in CACHE/.tmp-<key>-<host>-<pid>-XXXXXX; when it
 *     succeeds its outputs are renamed into the cache (an eval's JSON is kept without the
 *     fields that change between runs) and the metadata file commits the entry; when it fails
 *     its log is kept as CACHE/<key>.failed.log. The lock is released after the temporary
 *     folder is removed;
 *   - lock busy (another process computes it): the node waits, tried again with growing
 *     sleeps (50 ms to 1 s) while other nodes run; it does not take a job slot.
 * Notes say which process computed what. The first failure stops launching; the running
 * children are waited for.
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
    /* Progress notes ("pipeline: [2/5] quantize Q8_0 [m] ...", "pipeline: computed ...",
     * "pipeline: reused ...", "pipeline: waiting for ..."), or NULL. */
    void (*note)(void *ud, const char *msg);
    void *ud;
} pl_run_opts;

/* Run every needed node of pl (after pl_plan_cache_state) whose inputs are ready, until all are
 * done or one fails. */
int pl_run(pl_plan *pl, const pl_run_opts *o, slmc_err *err);

#endif
