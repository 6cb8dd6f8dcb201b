/* common.c - shared CLI plumbing: messages, progress, sizes (see cli.h). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "codec/types.h"

/* The job this process is a rank of (main sets it up once, before the command runs). */
static comm job = {0, 1, false};

comm *cli_job(void) { return &job; }
bool cli_is_root(void) { return job.rank == 0; }

int cli_error(const slmc_err *err) {
    const char *msg = err->msg[0] ? err->msg : "unknown error";
    if (job.size > 1) {
        /* an error every rank agreed on (comm_agree: "rank R: ...") is printed once; one that
         * only this rank has would leave the others waiting in a collective: end the job */
        if (strncmp(msg, "rank ", 5) == 0) {
            if (job.rank == 0) fprintf(stderr, "slmc: %s\n", msg);
            return EXIT_ERROR;
        }
        fprintf(stderr, "slmc: rank %d: %s\n", job.rank, msg);
        fflush(stderr);
        comm_abort(&job, EXIT_ERROR);
    }
    fprintf(stderr, "slmc: %s\n", msg);
    return EXIT_ERROR;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "slmc: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'slmc %s --help')\n", cmd);
    return EXIT_USAGE;
}

/* ---- options ----------------------------------------------------------------------- */

int cli_common_option(const char *cmd, const char *usage, int ch, char **argv, cli_common *c) {
    switch (ch) {
    case CLI_OPT_JSON: c->json = true; return 0;
    case 'q': c->quiet = true; return 0;
    case 't': return cli_opt_int(cmd, "-t/--threads", optarg, 1, CLI_MAX_THREADS, &c->threads);
    case 'h': fputs(usage, stdout); return CLI_HELP;
    case ':': /* only with a leading ':' in the short-option string; kept for completeness */
    default: {
        /* getopt_long leaves the offending word at argv[optind - 1] (an unknown option, or one
         * whose value is missing at the end of the line) */
        const char *word = optind > 0 ? argv[optind - 1] : "?";
        return cli_usage_error(cmd, "unknown option, or an option without its value: '%s'", word);
    }
    }
}

/* The common part of the integer parsers: a whole decimal number, optionally signed. */
static bool parse_ll(const char *s, long long *out) {
    if (!s || !*s || isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end) return false;
    *out = v;
    return true;
}

int cli_opt_i64(const char *cmd, const char *flag, const char *s, long long lo, long long hi, int64_t *out) {
    long long v;
    if (!parse_ll(s, &v) || v < lo || v > hi)
        return cli_usage_error(cmd, "%s: '%s' is not a whole number from %lld to %lld", flag, s ? s : "", lo, hi);
    *out = (int64_t)v;
    return 0;
}

int cli_opt_int(const char *cmd, const char *flag, const char *s, long long lo, long long hi, int *out) {
    if (lo < INT_MIN) lo = INT_MIN;
    if (hi > INT_MAX) hi = INT_MAX;
    int64_t v;
    int rc = cli_opt_i64(cmd, flag, s, lo, hi, &v);
    if (rc == 0) *out = (int)v;
    return rc;
}

int cli_opt_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    /* strtoull accepts "-1" (and wraps it): demand a digit first */
    unsigned long long v = s && isdigit((unsigned char)*s) ? strtoull(s, &end, 10) : 0;
    if (!s || !isdigit((unsigned char)*s) || errno != 0 || *end)
        return cli_usage_error(cmd, "%s: '%s' is not a whole number from 0 to %llu", flag, s ? s : "",
                               (unsigned long long)UINT64_MAX);
    *out = (uint64_t)v;
    return 0;
}

int cli_opt_float(const char *cmd, const char *flag, const char *s, double lo, double hi, bool lo_open,
                  double *out) {
    char *end = NULL;
    double v = 0;
    bool ok = s && *s && !isspace((unsigned char)*s);
    if (ok) {
        errno = 0;
        v = strtod(s, &end);
        ok = end != s && !*end && isfinite(v) && errno != ERANGE;
    }
    if (!ok) return cli_usage_error(cmd, "%s: '%s' is not a finite number", flag, s ? s : "");
    if (v < lo || v > hi || (lo_open && v == lo)) {
        if (isinf(hi)) return cli_usage_error(cmd, "%s: '%s' must be %s %g", flag, s, lo_open ? ">" : ">=", lo);
        return cli_usage_error(cmd, "%s: '%s' must be %s %g and <= %g", flag, s, lo_open ? ">" : ">=", lo, hi);
    }
    *out = v;
    return 0;
}

int cli_opt_f32(const char *cmd, const char *flag, const char *s, double lo, double hi, bool lo_open, float *out) {
    double v;
    int rc = cli_opt_float(cmd, flag, s, lo, hi, lo_open, &v);
    if (rc != 0) return rc;
    *out = strtof(s, NULL); /* rounded once, straight to float */
    if (lo_open && !(*out > lo)) return cli_usage_error(cmd, "%s: '%s' is too small for a float setting", flag, s);
    return 0;
}

int cli_opt_size(const char *cmd, const char *flag, const char *s, uint64_t min_bytes, uint64_t *out) {
    uint64_t v;
    if (!cli_parse_size(s, &v))
        return cli_usage_error(cmd, "%s: '%s' is not a size (e.g. 500MB, 2GiB, 123)", flag, s ? s : "");
    if (v < min_bytes) return cli_usage_error(cmd, "%s: '%s' is less than %llu bytes", flag, s, (unsigned long long)min_bytes);
    *out = v;
    return 0;
}

void cli_note(const cli_common *c, const char *fmt, ...) {
    if ((c && c->quiet) || job.rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("slmc: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_apply_threads(cli_common *c) {
    if (c->threads == 0 && job.size > 1) {
        /* ranks on one machine share its cores: by default each takes its part of them */
        const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        int ranks_here = local && atoi(local) > 0 ? atoi(local) : job.size;
        c->threads = omp_get_num_procs() / ranks_here;
        if (c->threads < 1) c->threads = 1;
    }
    if (c->threads > 0) omp_set_num_threads(c->threads);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_human_bytes(uint64_t n, char *buf, int size) {
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000.0 && u < 4) { v /= 1000.0; u++; }
    if (u == 0) snprintf(buf, (size_t)size, "%llu B", (unsigned long long)n);
    else snprintf(buf, (size_t)size, "%.2f %s", v, unit[u]);
    return buf;
}

const char *cli_human_count(uint64_t n, char *buf, int size) {
    if (n >= 1000000000ull) snprintf(buf, (size_t)size, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000ull) snprintf(buf, (size_t)size, "%.2f M", (double)n / 1e6);
    else if (n >= 1000ull) snprintf(buf, (size_t)size, "%.2f K", (double)n / 1e3);
    else snprintf(buf, (size_t)size, "%llu", (unsigned long long)n);
    return buf;
}

bool cli_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s || isspace((unsigned char)*s) || *s == '-') return false;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v)) return false;
    double mul = 1;
    if (*end) {
        static const struct { const char *suffix; double mul; } units[] = {
            {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6}, {"G", 1e9}, {"GB", 1e9},
            {"T", 1e12}, {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
        };
        bool found = false;
        for (size_t i = 0; i < sizeof units / sizeof *units; i++)
            if (strcasecmp(end, units[i].suffix) == 0) { mul = units[i].mul; found = true; }
        if (!found) return false;
    }
    v *= mul;
    if (v >= 1.8e19) return false;
    *out = (uint64_t)v;
    return true;
}

const char *cli_shape_str(const model_tensor *t, const char *sep, char *buf, size_t size) {
    int off = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->n_dims; d++) off += snprintf(buf + off, size - (size_t)off, "%s%" PRId64, d ? sep : "", t->ne[d]);
    return buf;
}

int cli_parse_float_type(const char *s) {
    if (strcasecmp(s, "f32") == 0) return GGML_TYPE_F32;
    if (strcasecmp(s, "f16") == 0) return GGML_TYPE_F16;
    if (strcasecmp(s, "bf16") == 0) return GGML_TYPE_BF16;
    return -1;
}

/* ---- JSON -------------------------------------------------------------------------- */

void cli_print_json(json_t *j, size_t flags) {
    char *str = json_dumps(j, flags);
    if (str) puts(str);
    free(str);
    json_decref(j);
}

json_t *cli_json_int_array(const int64_t *v, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Every command opens its models here (the view decodes quantized tensors with the codec
 * itself, model.h). */
int cli_open_model(model *m, const char *path, const char *tokenizer, slmc_err *err) {
    model_open_opts opts = {.tokenizer = tokenizer};
    return model_open(m, path, &opts, err);
}

/* ---- progress ---------------------------------------------------------------------- */

void cli_progress_init(cli_progress *p, const cli_common *c, const char *label) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->enabled = !c->quiet && job.rank == 0 && isatty(STDERR_FILENO);
    p->t_start = cli_now();
}

static void progress_fn(void *ud, uint64_t done, uint64_t total, const char *what) {
    cli_progress *p = ud;
    if (!p->enabled) return;
    double now = cli_now();
    if (now - p->t_last < 0.1 && done < total) return; /* redraw at most 10 times a second */
    p->t_last = now;
    double el = now - p->t_start;
    double frac = total ? (double)done / (double)total : 1.0;
    double rate = el > 0 ? (double)done / el / 1e6 : 0;
    char eta[32] = "--";
    if (frac > 0.001 && frac < 1.0) snprintf(eta, sizeof eta, "%.0fs", el / frac - el);
    fprintf(stderr, "\r\033[K%s [%3.0f%%] %.1f MB/s ETA %s %s", p->label, frac * 100.0, rate, eta,
            what ? what : "");
    p->drawn = true;
}

slmc_progress cli_progress_hook(cli_progress *p) {
    slmc_progress h = {.fn = progress_fn, .ud = p};
    return h;
}

void cli_progress_done(cli_progress *p) {
    if (p->enabled && p->drawn) fputs("\r\033[K", stderr);
    p->drawn = false;
}

void cli_progress_chunks(cli_progress *p, uint64_t done, uint64_t total) {
    if (!p->enabled) return;
    double el = cli_now() - p->t_start;
    fprintf(stderr, "\r\033[K%s [%d/%d] %.1fs, ETA %.0fs", p->label, (int)done, (int)total, el,
            el / (double)done * (double)(total - done));
    p->drawn = true;
}

void cli_stages_stage(void *stages, const char *name) {
    cli_stages *u = stages;
    cli_progress_done(&u->prog);
    if (name) cli_progress_init(&u->prog, u->c, name);
    u->bytes = name && strcmp(name, "write") == 0;
}

void cli_stages_progress(void *stages, uint64_t done, uint64_t total, const char *what) {
    cli_stages *u = stages;
    if (u->bytes) progress_fn(&u->prog, done, total, what);
    else cli_progress_chunks(&u->prog, done, total);
}
