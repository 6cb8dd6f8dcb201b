/* cli.h - what the commands share: option conventions, messages, progress, exit codes.
 *
 * Only cli/ prints to the terminal or exits. Conventions for every command:
 *   errors   "slmc: PATH: what is wrong" on stderr, exit 1 (2 for usage errors)
 *   --json   machine-readable output on stdout
 *   -t N     threads (OpenMP), --quiet no progress or notes
 *   progress on stderr, only when stderr is a terminal
 */
#ifndef SLMC_CLI_H
#define SLMC_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "comm/comm.h"
#include "formats/error.h"
#include "formats/model.h"

#define SLMC_VERSION "0.1.0"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_GATE = 3 };

/* Options every command accepts. */
typedef struct cli_common {
    bool json;    /* --json */
    bool quiet;   /* -q / --quiet */
    int threads;  /* -t / --threads, 0 = OpenMP default */
} cli_common;

typedef struct cli_command {
    const char *name;
    const char *summary;                  /* one line for `slmc help` */
    int (*run)(int argc, char **argv);    /* argv[0] is the command name */
} cli_command;

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_imatrix(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_pipeline(int argc, char **argv);
int cmd_distill(int argc, char **argv);
int cmd_generate(int argc, char **argv);

/* ---- options -------------------------------------------------------------------------
 * Every command has -t/--threads, -q/--quiet, --json and -h/--help. Put CLI_COMMON_OPTIONS in
 * the getopt_long table and CLI_COMMON_SHORT in the short-option string, handle the command's
 * own options in the switch, and pass anything else (default:) to cli_common_option. */
#define CLI_COMMON_SHORT "t:qh"
#define CLI_COMMON_OPTIONS                                                                       \
    {"json", no_argument, 0, CLI_OPT_JSON}, {"threads", required_argument, 0, 't'},              \
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}
#define CLI_OPT_JSON 0x4a53 /* --json has no short form: a code no character uses */
#define CLI_MAX_THREADS 4096
/* Returned by cli_common_option after it printed --help: the command returns EXIT_OK. */
#define CLI_HELP (-100)

/* Handle one common option (ch as getopt_long returned it, optarg its value): 0 when handled,
 * CLI_HELP after printing usage on stdout, EXIT_USAGE after printing the error for a bad
 * value or an unknown/incomplete option (argv is the command's, for the option's name). */
int cli_common_option(const char *cmd, const char *usage, int ch, char **argv, cli_common *c);

/* Numeric option values. The whole string must be the number (no trailing text, no
 * whitespace) and lie in the range; otherwise one line "slmc: CMD: FLAG: 'VALUE' is not ..."
 * goes to stderr and the result is EXIT_USAGE; 0 on success. */
int cli_opt_int(const char *cmd, const char *flag, const char *s, long long lo, long long hi, int *out);
int cli_opt_i64(const char *cmd, const char *flag, const char *s, long long lo, long long hi, int64_t *out);
/* An unsigned 64-bit number (seeds, token counts): 0 .. 2^64-1, no sign. */
int cli_opt_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
/* A finite number in [lo, hi] (lo excluded when lo_open); nan and inf are refused. */
int cli_opt_float(const char *cmd, const char *flag, const char *s, double lo, double hi, bool lo_open,
                  double *out);
/* The same for a float setting: the value is rounded to float once (strtof), not via double. */
int cli_opt_f32(const char *cmd, const char *flag, const char *s, double lo, double hi, bool lo_open, float *out);
/* A byte size: "5GB", "500MB", "123", "2GiB" (see cli_parse_size); at least min_bytes. */
int cli_opt_size(const char *cmd, const char *flag, const char *s, uint64_t min_bytes, uint64_t *out);

/* Print "slmc: <msg>" to stderr; returns EXIT_ERROR. Under mpirun an error all ranks agreed on
 * (comm_agree) is printed by rank 0 alone; any other ends the whole job (comm_abort) after
 * printing "slmc: rank R: <msg>". */
int cli_error(const slmc_err *err);

/* The job this process belongs to: one process, or a rank under mpirun (docs/mpi.md). Only rank
 * 0 prints results and notes (main sends the other ranks' stdout to /dev/null). */
comm *cli_job(void);
bool cli_is_root(void);
/* Print one line "slmc: <cmd>: <formatted> (see 'slmc <cmd> --help')"; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Note on stderr unless quiet. */
void cli_note(const cli_common *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Apply -t (OpenMP thread count). Without -t under mpirun, the ranks on one machine share its
 * cores: each gets cores / ranks (at least 1), and c->threads says so. */
void cli_apply_threads(cli_common *c);

/* Progress on stderr when it is a terminal and not quiet: percentage, rate, ETA, item. */
typedef struct cli_progress {
    const char *label;  /* "convert", "quantize", ... */
    bool enabled;
    double t_start;     /* seconds (monotonic) */
    double t_last;      /* last redraw */
    bool drawn;
} cli_progress;

void cli_progress_init(cli_progress *p, const cli_common *c, const char *label);
/* An slmc_progress that reports into p. */
slmc_progress cli_progress_hook(cli_progress *p);
void cli_progress_done(cli_progress *p);
/* A pass over chunks: "LABEL [done/total] 1.2s, ETA 3s" (time since cli_progress_init). */
void cli_progress_chunks(cli_progress *p, uint64_t done, uint64_t total);

/* Progress of a run in stages (a *_run's stage hook): each stage draws its own line, labelled
 * with the stage's name, in bytes for "write" and in chunks for the others. Give the hooks
 * cli_stages_stage and cli_stages_progress with a cli_stages {.c = ...} as their ud. */
typedef struct cli_stages {
    const cli_common *c;
    cli_progress prog;  /* the stage under way */
    bool bytes;         /* it counts bytes ("write"), else chunks */
} cli_stages;
void cli_stages_stage(void *stages, const char *name); /* a stage starts (name) or ends (NULL) */
void cli_stages_progress(void *stages, uint64_t done, uint64_t total, const char *what);

double cli_now(void);
/* "1.23 GB" style (decimal units) into buf. */
const char *cli_human_bytes(uint64_t n, char *buf, int size);
const char *cli_human_count(uint64_t n, char *buf, int size);
/* A tensor's shape, ne[0] first, the dims joined by sep ("256x32000"), into buf. */
const char *cli_shape_str(const model_tensor *t, const char *sep, char *buf, size_t size);
/* Parse "5GB", "500MB", "123", "2GiB" into bytes; false when malformed. */
bool cli_parse_size(const char *s, uint64_t *out);
/* Parse a float type name for --outtype: f32, f16, bf16 (case-insensitive); -1 if not. */
int cli_parse_float_type(const char *s);

/* ---- JSON ---------------------------------------------------------------------------- */
/* Print j on stdout (jansson's dump flags, then a newline) and release it. */
void cli_print_json(json_t *j, size_t flags);
/* A JSON array of the integers v[0..n). */
json_t *cli_json_int_array(const int64_t *v, int64_t n);

/* Open a model with the common error handling (the message already names the path); the view
 * reads quantized tensors as F32 through the codec (formats/model.h). */
int cli_open_model(model *m, const char *path, const char *tokenizer, slmc_err *err);

#endif
