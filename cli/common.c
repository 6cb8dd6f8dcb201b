/* common.c - shared CLI plumbing: messages, progress, sizes (see cli.h). */
#include "cli.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "formats/types.h"

int cli_error(const slmc_err *err) {
    fprintf(stderr, "slmc: %s\n", err->msg[0] ? err->msg : "unknown error");
    return EXIT_ERROR;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "slmc: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'slmc %s --help'.\n", cmd);
    return EXIT_USAGE;
}

void cli_note(const cli_common *c, const char *fmt, ...) {
    if (c && c->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("slmc: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_apply_threads(const cli_common *c) {
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

int cli_parse_float_type(const char *s) {
    if (strcasecmp(s, "f32") == 0) return GGML_TYPE_F32;
    if (strcasecmp(s, "f16") == 0) return GGML_TYPE_F16;
    if (strcasecmp(s, "bf16") == 0) return GGML_TYPE_BF16;
    return -1;
}

int cli_open_model(model *m, const char *path, const char *tokenizer, slmc_err *err) {
    model_open_opts opts = {.tokenizer = tokenizer};
    return model_open(m, path, &opts, err);
}

/* ---- progress ---------------------------------------------------------------------- */

void cli_progress_init(cli_progress *p, const cli_common *c, const char *label) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->enabled = !c->quiet && isatty(STDERR_FILENO);
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
