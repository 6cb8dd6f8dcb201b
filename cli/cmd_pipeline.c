/* cmd_pipeline.c - `slmc pipeline RECIPE`: parse the options, run the recipe with
 * pipeline_run (pipeline/pipeline.h: plan, cached steps as child slmc processes, gates,
 * reports; or the CI job matrix, one variant, the report of recorded results), print the
 * report, plan or matrix, and turn the result into the exit status:
 * 0 every gate passes, 3 a gate fails, 1 an error, 2 a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "pipeline/pipeline.h"

static const char *USAGE =
    "Usage: slmc pipeline RECIPE [--out DIR] [--cache DIR] [--jobs N] [--dry-run] [--json]\n"
    "       slmc pipeline RECIPE --matrix\n"
    "       slmc pipeline RECIPE --only VARIANT [--out DIR] [--cache DIR] [--jobs N] [--dry-run]\n"
    "       slmc pipeline RECIPE --report [--out DIR] [--cache DIR] [--json]\n"
    "\n"
    "Run a compression recipe (YAML, see docs/pipeline.md): a source model, variants made of\n"
    "steps (convert, imatrix, prune, distill, quantize to a list of types, eval) and quality\n"
    "gates per variant (max PPL increase over the source, max mean KLD, min top-token agreement,\n"
    "max file size). Every step runs as a child slmc process; its output is cached (DIR/cache,\n"
    "or --cache) under a SHA-256 of the slmc binary, the step's options and its inputs' contents,\n"
    "so a rerun only does what changed and gives byte-identical files. Each output model is\n"
    "published as DIR/NAME.gguf; reports go to DIR/RECIPE.report.json, .report.md (a table for\n"
    "CI job summaries, also printed on stdout) and .report.svg (size against PPL and KLD).\n"
    "\n"
    "Over a CI job matrix (docs/ci-matrix.md): --matrix lists the variants as a job matrix,\n"
    "each job runs --only VARIANT with one shared --cache, and a last job runs --report. The\n"
    "cache is safe to share between processes and machines: a lock per step (flock) makes one\n"
    "process compute a step while the others wait and reuse it, and a process that dies leaves\n"
    "nothing that looks finished; its step is taken over by a waiting one.\n"
    "Exit status: 0 every gate passes, 3 a gate fails, 1 an error, 2 a usage error.\n"
    "\n"
    "Options:\n"
    "  -o, --out DIR     output folder (default: pipeline-out)\n"
    "  --cache DIR       the step cache (default: DIR/cache); may be a folder every job mounts\n"
    "                    (NFSv4, or any filesystem with working flock() locks)\n"
    "  --matrix          print the variants as one line of JSON for a CI matrix\n"
    "                    ({\"include\":[{\"variant\":...,\"recipe\":...,\"files\":[...]}]}); runs nothing\n"
    "  --only VARIANT    run only that variant's steps (and those they need), publish it and\n"
    "                    record its results in the cache; its gates decide the exit status\n"
    "  --report          run nothing: the reports from every variant's recorded results (a\n"
    "                    variant not run yet is an error naming it)\n"
    "  -j, --jobs N      run up to N steps at once, sharing the thread budget (default 1)\n"
    "  --dry-run         print the plan (each step, cache hit or to run) and run nothing\n"
    "  --json            print the report (or the plan) as JSON on stdout instead of Markdown\n"
    "  -t, --threads N   thread budget for all jobs (default: the recipe's threads, else all cores)\n"
    "  -q, --quiet       no progress notes\n"
    "  -h, --help        this help\n";

typedef struct pipeline_args {
    cli_common c;
    const char *recipe;  /* RECIPE */
    const char *out;     /* --out */
    const char *cache;   /* --cache, or NULL */
    const char *only;    /* --only, or NULL */
    int jobs;            /* --jobs */
    bool dry_run;        /* --dry-run */
    bool matrix;         /* --matrix */
    bool report;         /* --report */
} pipeline_args;

/* Long options without a short form: codes no character uses. */
enum { OPT_DRY_RUN = 0x100, OPT_CACHE, OPT_ONLY, OPT_MATRIX, OPT_REPORT };

static int parse_args(int argc, char **argv, pipeline_args *a) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},   {"jobs", required_argument, 0, 'j'},
        {"dry-run", no_argument, 0, OPT_DRY_RUN}, {"cache", required_argument, 0, OPT_CACHE},
        {"only", required_argument, 0, OPT_ONLY}, {"matrix", no_argument, 0, OPT_MATRIX},
        {"report", no_argument, 0, OPT_REPORT}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
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
        case OPT_DRY_RUN: a->dry_run = true; break;
        case OPT_CACHE: a->cache = optarg; break;
        case OPT_ONLY: a->only = optarg; break;
        case OPT_MATRIX: a->matrix = true; break;
        case OPT_REPORT: a->report = true; break;
        default: rc = cli_common_option("pipeline", USAGE, ch, argv, &a->c); break;
        }
        if (rc) return rc;
    }
    if (!a->out[0]) return cli_usage_error("pipeline", "-o/--out: the folder name is empty");
    if (a->cache && !a->cache[0]) return cli_usage_error("pipeline", "--cache: the folder name is empty");
    if (a->only && !a->only[0]) return cli_usage_error("pipeline", "--only: the variant name is empty");
    if (a->matrix && (a->only || a->report || a->dry_run))
        return cli_usage_error("pipeline", "--matrix runs nothing: it takes no %s",
                               a->only ? "--only" : a->report ? "--report" : "--dry-run");
    if (a->report && (a->only || a->dry_run))
        return cli_usage_error("pipeline", "--report covers every variant and runs nothing: it takes no %s",
                               a->only ? "--only" : "--dry-run");
    if (argc - optind != 1) return cli_usage_error("pipeline", "expected one RECIPE file");
    a->recipe = argv[optind];
    return 0;
}

/* The signal that asked us to stop, or 0. The one global: a signal handler can only reach the
 * pipeline through it (pipeline_opts.stop points here). */
static volatile sig_atomic_t g_stop;
static void on_stop(int sig) { g_stop = sig; }

/* SIGINT / SIGTERM / SIGHUP end the pipeline's scheduler (which stops the children and removes
 * their temporary folders) instead of killing us at once. */
static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void print_note(void *ud, const char *msg) { cli_note(ud, "%s", msg); }

int cmd_pipeline(int argc, char **argv) {
    pipeline_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    slmc_err err = {{0}};
    char exe[PATH_MAX]; /* every step runs this very binary */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        slmc_fail(&err, "/proc/self/exe", "cannot find this program: %s", strerror(errno));
        return cli_error(&err);
    }
    exe[n] = '\0';
    pipeline_mode mode = a.matrix ? PIPELINE_MATRIX : a.report ? PIPELINE_REPORT
                       : a.dry_run ? PIPELINE_DRY_RUN : PIPELINE_RUN;
    pipeline_opts o = {.recipe = a.recipe, .out_dir = a.out, .cache_dir = a.cache, .exe = exe, .mode = mode,
                       .only = a.only, .jobs = a.jobs, .threads = a.c.threads, .stop = &g_stop};
    pipeline_hooks hooks = {.ud = &a.c, .note = print_note};
    if (mode == PIPELINE_RUN) catch_signals();
    pipeline_result res;
    if (pipeline_run(&o, &hooks, &res, &err)) {
        cli_error(&err);
        if (g_stop) { /* die of the signal, as the other commands do */
            signal(g_stop, SIG_DFL);
            raise(g_stop);
        }
        return EXIT_ERROR;
    }
    fputs(a.c.json ? res.json : res.text, stdout);
    int status = res.pass ? EXIT_OK : EXIT_GATE;
    if (!res.pass && a.only) cli_note(&a.c, "pipeline: a gate of variant %s failed", a.only);
    else if (!res.pass) cli_note(&a.c, "pipeline: a gate failed (see %s/%s.report.md)", a.out, res.name);
    pipeline_result_free(&res);
    return status;
}
