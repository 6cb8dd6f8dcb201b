/* run.c - the scheduler: claiming steps through their locks, children, their temporary
 * folders, committing entries to the cache (see run.h).
 *
 * Top to bottom: notes, eval results, starting and finishing one child, claiming a node
 * (lock, cache check, wait), and the scheduler loop.
 */
#include "pipeline/run.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "formats/fileio.h"
#include "pipeline/cache.h"
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

/* fork + exec of one step. Between the two the child makes only async-signal-safe calls. */
static pid_t start_child(const char *exe, char *const *argv, int in, int out, int log) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid; /* the pipeline: the child's pid, or -1 */
    struct sigaction dfl = {0}; /* the pipeline's handlers only set its stop flag: not for the child */
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGHUP, &dfl, NULL);
#ifdef __linux__
    /* Stop when the pipeline dies, even of kill -9: its lock is gone, another process may take
     * the step over. SIGTERM lets the child remove its own temporary outputs. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127); /* it died before prctl */
#else
    (void)parent;
#endif
    if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0) _exit(127);
    execve(exe, argv, environ);
    static const char msg[] = "slmc pipeline: cannot start the step's program\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) _exit(127);
    _exit(127);
}

/* Start a node's child (its key's lock is held): a temporary folder, argv from its args (temp
 * names resolved) and -t, stdin from /dev/null, stdout and stderr to files. */
static int spawn_node(pl_plan *pl, pl_node *n, int threads, slmc_err *err) {
    char *dir = pl_temp_dir(pl->cache_dir, n->key, err);
    if (!dir) return -1;
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
    int fd_in = -1, fd_out = -1, fd_log = -1, e = ENOMEM;
    if (!rc && out && log) {
        fd_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fd_out = open(n->capture_stdout ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        fd_log = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        e = fd_in < 0 || fd_out < 0 || fd_log < 0 ? errno : 0;
    }
    if (!e && (n->pid = start_child(pl->exe, av.v, fd_in, fd_out, fd_log)) < 0) e = errno;
    if (fd_in >= 0) close(fd_in);
    if (fd_out >= 0) close(fd_out);
    if (fd_log >= 0) close(fd_log);
    free(out);
    free(log);
    pl_strv_free(&av);
    if (e) {
        pl_remove_tree(dir);
        free(dir);
        n->tmpdir = NULL;
        n->pid = -1;
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

/* Move a finished child's outputs into the cache and commit the entry (its metadata file, last). */
static int commit_outputs(pl_plan *pl, pl_node *n, double secs, slmc_err *err) {
    const char *exts[PL_MAX_OUTPUTS];
    int rc = 0;
    for (int i = 0; !rc && i < n->n_out; i++) {
        exts[i] = n->out[i].ext;
        char *src = path_join(n->tmpdir, n->out[i].tmp_name), *dst = pl_cache_path(pl, n, i);
        if (!src || !dst) rc = slmc_fail(err, NULL, "out of memory");
        else if (n->capture_stdout && i == 0) rc = normalize_eval(src, dst, err);
        else if (rename(src, dst)) rc = slmc_fail(err, dst, "cannot move into the cache: %s", strerror(errno));
        free(src);
        free(dst);
    }
    return rc ? -1 : pl_entry_commit(pl->cache_dir, n->key, exts, n->n_out, n->label, secs, err);
}

/* A child ended: commit its outputs, or report its failure; then remove its temporary folder
 * and release the key's lock (in this order: a free lock means no live temporary). */
static int finish_node(pl_plan *pl, pl_node *n, int status, const pl_run_opts *o, slmc_err *err) {
    double secs = now_seconds() - n->t_start;
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
        rc = commit_outputs(pl, n, secs, err);
        n->state = rc ? PL_FAILED : PL_DONE;
        if (!rc) {
            pl_owner self;
            char who[PL_HOST_MAX + 48];
            pl_owner_self(&self);
            note(o, "pipeline: computed %s key %.12s in %.1fs (%s)", n->label, n->key, secs,
                 pl_owner_str(&self, who, sizeof who));
        }
    }
    pl_remove_tree(n->tmpdir);
    free(n->tmpdir);
    n->tmpdir = NULL;
    n->pid = -1;
    pl_lock_release(&n->lock);
    return rc;
}

/* ---- claiming a node ----------------------------------------------------------------------- */

typedef enum claim_outcome {
    CLAIM_RUN,     /* the lock is ours and the entry missing: run it */
    CLAIM_REUSED,  /* another process finished it meanwhile */
    CLAIM_BUSY,    /* another process holds the lock: try again at n->next_try */
} claim_outcome;

/* Take a ready node's lock and look into the cache again (the entry may have appeared since
 * the plan). A busy lock makes the node wait, with growing intervals between tries. */
static int claim(pl_plan *pl, pl_node *n, const pl_run_opts *o, claim_outcome *out, slmc_err *err) {
    char who[PL_HOST_MAX + 48];
    pl_owner holder;
    int rc = pl_lock_try(pl->cache_dir, n->key, &n->lock, &holder, err);
    if (rc < 0) return -1;
    if (rc == 1) {
        if (!n->waiting)
            note(o, "pipeline: waiting for %s key %.12s: %s is computing it", n->label, n->key,
                 pl_owner_str(&holder, who, sizeof who));
        n->retry = !n->waiting ? 0.05 : n->retry < 0.5 ? 2 * n->retry : 1.0;
        n->waiting = true;
        n->holder = holder;
        n->next_try = now_seconds() + n->retry;
        *out = CLAIM_BUSY;
        return 0;
    }
    if (pl_node_cached(pl, n)) {
        pl_lock_release(&n->lock);
        n->state = PL_DONE;
        if (n->waiting)
            note(o, "pipeline: waited for %s: reused %s key %.12s", pl_owner_str(&n->entry.by, who, sizeof who),
                 n->label, n->key);
        else
            note(o, "pipeline: reused %s key %.12s from the cache (computed by %s)", n->label, n->key,
                 pl_owner_str(&n->entry.by, who, sizeof who));
        *out = CLAIM_REUSED;
        return 0;
    }
    pl_remove_key_temps(pl->cache_dir, n->key); /* what a process that died computing it left */
    if (n->waiting)
        note(o, "pipeline: took over %s key %.12s: %s stopped without finishing it", n->label, n->key,
             pl_owner_str(&n->holder, who, sizeof who));
    *out = CLAIM_RUN;
    return 0;
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

/* The first ready node not waiting for a lock it tried a moment ago, or -1. */
static int next_ready(const pl_plan *pl, double now) {
    for (int i = 0; i < pl->n_nodes; i++)
        if (ready(pl, &pl->nodes[i]) && pl->nodes[i].next_try <= now) return i;
    return -1;
}

/* Some needed node waits for another process's lock. */
static bool any_waiting(const pl_plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++)
        if (pl->nodes[i].state == PL_PENDING && pl->nodes[i].waiting) return true;
    return false;
}

/* Stop every running child, remove its temporary folder and release its lock. */
static void stop_all(pl_plan *pl) {
    for (int i = 0; i < pl->n_nodes; i++) {
        pl_node *n = &pl->nodes[i];
        if (n->state != PL_RUNNING) continue;
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        pl_remove_tree(n->tmpdir);
        free(n->tmpdir);
        n->tmpdir = NULL;
        pl_lock_release(&n->lock);
        n->state = PL_FAILED;
    }
}

/* The plan's hits that wanted outputs read, and who computed them. */
static void note_hits(const pl_plan *pl, const pl_run_opts *o) {
    char who[PL_HOST_MAX + 48];
    for (int i = 0; i < pl->n_nodes; i++) {
        const pl_node *n = &pl->nodes[i];
        if (n->state == PL_CACHED && n->used)
            note(o, "pipeline: reused %s key %.12s from the cache (computed by %s)", n->label, n->key,
                 pl_owner_str(&n->entry.by, who, sizeof who));
    }
}

int pl_run(pl_plan *pl, const pl_run_opts *o, slmc_err *err) {
    int running = 0, rc = 0, total = 0, done = 0;
    for (int i = 0; i < pl->n_nodes; i++) total += pl->nodes[i].needed;
    note_hits(pl, o);
    for (;;) {
        double now = now_seconds();
        while (!rc && !stop_requested(o) && running < o->jobs) {
            int pick = next_ready(pl, now);
            if (pick < 0) break;
            pl_node *n = &pl->nodes[pick];
            claim_outcome c;
            if (claim(pl, n, o, &c, err)) { rc = -1; break; }
            if (c == CLAIM_BUSY) continue;
            if (c == CLAIM_REUSED) { done++; continue; }
            if (spawn_node(pl, n, o->threads_each, err)) { pl_lock_release(&n->lock); rc = -1; break; }
            note(o, "pipeline: [%d/%d] %s ...", done + running + 1, total, n->label);
            running++;
        }
        if (stop_requested(o)) { stop_all(pl); return slmc_fail(err, pl->r->path, "interrupted"); }
        if (running == 0 && (rc || !any_waiting(pl))) break;
        int status;
        pid_t pid = running ? waitpid(-1, &status, WNOHANG) : 0;
        if (pid == 0 || (pid < 0 && errno == EINTR)) {
            /* poll at 50 Hz (children, and the locks of waiting nodes at their own pace); a
             * signal also ends the sleep */
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (pid < 0) { stop_all(pl); return slmc_fail(err, NULL, "waitpid: %s", strerror(errno)); }
        for (int i = 0; i < pl->n_nodes; i++) {
            pl_node *n = &pl->nodes[i];
            if (n->state != PL_RUNNING || n->pid != pid) continue;
            running--;
            done++;
            slmc_err e2 = {{0}};
            if (finish_node(pl, n, status, o, rc ? &e2 : err)) rc = -1;
        }
    }
    return rc;
}
