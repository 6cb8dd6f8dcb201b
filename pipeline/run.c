/* run.c - the scheduler: children, their temporary folders, the cache (see run.h). */
#include "pipeline/run.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "pipeline/files.h"

extern char **environ;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__attribute__((format(printf, 2, 3))) static void note(const pl_run_opts *o, const char *fmt, ...) {
    if (!o->note) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->note(o->ud, msg);
}

static bool stop_requested(const pl_run_opts *o) { return o->stop && *o->stop; }

/* ---- eval results ------------------------------------------------------------------------ */

/* Keep the measurements of eval's JSON and drop what changes between runs (timings, paths). */
static int normalize_eval(const char *from, const char *to, slmc_err *err) {
    char *buf;
    size_t len;
    if (read_small_file(from, 1 << 20, &buf, &len, err)) return -1;
    json_error_t je;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!json_is_object(o)) {
        json_decref(o);
        return slmc_fail(err, from, "eval printed no JSON object (%s at %d)", je.text, je.position);
    }
    static const char *const drop[] = {"model", "text", "base", "seconds", "tokens_per_second"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++) json_object_del(o, drop[i]);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(o);
    if (!s) return slmc_fail(err, to, "out of memory");
    size_t n = strlen(s);
    s[n] = '\n'; /* over the NUL: the file ends with a newline */
    int rc = pl_write_atomic(to, s, n + 1, err);
    free(s);
    return rc;
}

/* ---- one child ----------------------------------------------------------------------------- */

/* Start a node's child: argv from its args (temp names resolved), -t, stdout/stderr to files. */
static int spawn_node(pl_plan *pl, pl_node *n, int threads, slmc_err *err) {
    char tmpl[64];
    snprintf(tmpl, sizeof tmpl, ".tmp-%ld-XXXXXX", (long)getpid());
    char *dir = path_join(pl->cache_dir, tmpl);
    if (!dir) return slmc_fail(err, NULL, "out of memory");
    if (!mkdtemp(dir)) {
        slmc_fail(err, dir, "cannot create a temporary folder: %s", strerror(errno));
        free(dir);
        return -1;
    }
    n->tmpdir = dir;
    pl_strv av = {0};
    char tnum[16];
    snprintf(tnum, sizeof tnum, "%d", threads);
    int rc = pl_strv_push(&av, pl->exe);
    for (int i = 0; !rc && i < n->args.n; i++) {
        const char *a = n->args.v[i];
        if (a[0] == PL_TMP_MARK) {
            char *p = path_join(dir, a + 1);
            rc = !p || pl_strv_push(&av, p);
            free(p);
        } else {
            rc = pl_strv_push(&av, a);
        }
    }
    rc = rc || pl_strv_push(&av, "-t") || pl_strv_push(&av, tnum);
    char *out = path_join(dir, "stdout"), *log = path_join(dir, "log");
    posix_spawn_file_actions_t fa;
    bool fa_ok = false;
    if (!rc && out && log && posix_spawn_file_actions_init(&fa) == 0) {
        fa_ok = true;
        rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0) ||
             posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, n->capture_stdout ? out : "/dev/null",
                                              O_WRONLY | O_CREAT | O_TRUNC, 0644) ||
             posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    } else {
        rc = 1;
    }
    int e = rc ? ENOMEM : posix_spawn(&n->pid, pl->exe, &fa, NULL, av.v, environ);
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    free(out);
    free(log);
    pl_strv_free(&av);
    if (e) {
        pl_remove_tree(dir);
        return slmc_fail(err, pl->exe, "cannot start %s: %s", n->label, strerror(e));
    }
    n->state = PL_RUNNING;
    n->t_start = now_seconds();
    return 0;
}

/* The child's error message: the last line of its log that starts "slmc: " (without that
 * prefix), else its last non-empty line. */
static void last_line(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    bool have_slmc = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        bool is_slmc = strncmp(line, "slmc: ", 6) == 0;
        if (!line[0] || (have_slmc && !is_slmc)) continue;
        have_slmc |= is_slmc;
        const char *s = is_slmc ? line + 6 : line;
        size_t k = strlen(s);
        if (k >= size) k = size - 1; /* keep the start of a long line */
        memcpy(buf, s, k);
        buf[k] = '\0';
    }
    fclose(f);
}

/* A child ended: move its outputs into the cache, or report its failure. */
static int finish_node(pl_plan *pl, pl_node *n, int status, slmc_err *err) {
    int rc = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = path_join(n->tmpdir, "log"), msg[600];
        if (log) last_line(log, msg, sizeof msg);
        else msg[0] = '\0';
        char keep[128];
        snprintf(keep, sizeof keep, "%s.failed.log", n->key);
        char *kept = path_join(pl->cache_dir, keep);
        if (log && kept) rename(log, kept);
        if (WIFEXITED(status))
            rc = slmc_fail(err, pl->r->path, "%s failed (exit %d): %s [log: %s]", n->label, WEXITSTATUS(status),
                           msg[0] ? msg : "no message", kept ? kept : "?");
        else
            rc = slmc_fail(err, pl->r->path, "%s killed by signal %d", n->label, WTERMSIG(status));
        free(log);
        free(kept);
        n->state = PL_FAILED;
    } else {
        for (int i = 0; !rc && i < n->n_out; i++) {
            char *src = path_join(n->tmpdir, n->out[i].tmp_name), *dst = pl_cache_path(pl, n, i);
            if (!src || !dst) rc = slmc_fail(err, NULL, "out of memory");
            else if (n->capture_stdout && i == 0) rc = normalize_eval(src, dst, err);
            else if (rename(src, dst)) rc = slmc_fail(err, dst, "cannot move into the cache: %s", strerror(errno));
            free(src);
            free(dst);
        }
        n->state = rc ? PL_FAILED : PL_DONE;
    }
    pl_remove_tree(n->tmpdir);
    free(n->tmpdir);
    n->tmpdir = NULL;
    n->pid = -1;
    return rc;
}

/* ---- the scheduler ----------------------------------------------------------------------- */

static bool ready(const pl_plan *pl, const pl_node *n) {
    if (n->state != PL_PENDING || !n->needed) return false;
    for (int i = 0; i < n->n_deps; i++) {
        pl_node_state s = pl->nodes[n->deps[i]].state;
        if (s != PL_CACHED && s != PL_DONE) return false;
    }
    return true;
}

/* Stop every running child and remove its temporary folder. */
static void stop_all(pl_plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) {
        pl_node *n = &pl->nodes[i];
        if (n->state != PL_RUNNING) continue;
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        pl_remove_tree(n->tmpdir);
        free(n->tmpdir);
        n->tmpdir = NULL;
        n->state = PL_FAILED;
    }
}

int pl_run(pl_plan *pl, const pl_run_opts *o, slmc_err *err) {
    int running = 0, rc = 0, total = 0, done = 0;
    for (int i = 0; i < pl->n_nodes; i++) total += pl->nodes[i].needed;
    for (;;) {
        while (!rc && !stop_requested(o) && running < o->jobs) {
            int pick = -1;
            for (int i = 0; i < pl->n_nodes && pick < 0; i++)
                if (ready(pl, &pl->nodes[i])) pick = i;
            if (pick < 0) break;
            if (spawn_node(pl, &pl->nodes[pick], o->threads_each, err)) { rc = -1; break; }
            note(o, "pipeline: [%d/%d] %s ...", done + running + 1, total, pl->nodes[pick].label);
            running++;
        }
        if (running == 0) break;
        if (stop_requested(o)) { stop_all(pl); return slmc_fail(err, pl->r->path, "interrupted"); }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0 || (pid < 0 && errno == EINTR)) {
            struct timespec ts = {0, 20 * 1000 * 1000}; /* poll at 50 Hz: a signal also ends the sleep */
            nanosleep(&ts, NULL);
            continue;
        }
        if (pid < 0) { stop_all(pl); return slmc_fail(err, NULL, "waitpid: %s", strerror(errno)); }
        for (int i = 0; i < pl->n_nodes; i++) {
            pl_node *n = &pl->nodes[i];
            if (n->state != PL_RUNNING || n->pid != pid) continue;
            running--;
            done++;
            double secs = now_seconds() - n->t_start;
            slmc_err e2 = {{0}};
            if (finish_node(pl, n, status, rc ? &e2 : err)) rc = -1;
            else note(o, "pipeline: done %s (%.1fs)", n->label, secs);
        }
    }
    return rc;
}
