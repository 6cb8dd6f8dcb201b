/* cache.c - the shared step cache: owners, key locks, entry metadata, temporaries (see cache.h).
 *
 * Top to bottom: who we are, the lock of a key, an entry's metadata file (the commit mark),
 * and the temporary names the writers use.
 */
#include "pipeline/cache.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "pipeline/files.h"

/* ---- owners ----------------------------------------------------------------------------- */

void pl_owner_self(pl_owner *o) {
    memset(o, 0, sizeof *o);
    o->pid = (long)getpid();
    char host[256] = "";
    if (gethostname(host, sizeof host - 1)) host[0] = '\0';
    host[sizeof host - 1] = '\0';
    size_t n = 0;
    /* Host names go into file names and log lines: keep them to a safe alphabet. */
    for (const char *s = host; *s && n + 1 < sizeof o->host; s++, n++)
        o->host[n] = isalnum((unsigned char)*s) || *s == '.' || *s == '-' || *s == '_' ? *s : '_';
    o->host[n] = '\0';
    if (!o->host[0]) snprintf(o->host, sizeof o->host, "unknown");
}

const char *pl_owner_str(const pl_owner *o, char *buf, size_t size) {
    if (o->pid > 0) snprintf(buf, size, "pid %ld on host %s", o->pid, o->host[0] ? o->host : "?");
    else snprintf(buf, size, "an unknown process");
    return buf;
}

/* ---- locks ------------------------------------------------------------------------------ */

static char *key_path(const char *cache_dir, const char *key, const char *ext) {
    char name[128];
    snprintf(name, sizeof name, "%s%s", key, ext);
    return path_join(cache_dir, name);
}

/* The lock file's line "pid PID host HOST", for messages only: a torn read is harmless. */
static void write_holder(int fd) {
    pl_owner self;
    pl_owner_self(&self);
    char line[128];
    int n = snprintf(line, sizeof line, "pid %ld host %s\n", self.pid, self.host);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)n, 0) != n) { /* informational: ignored */ }
}

static void read_holder(int fd, pl_owner *o) {
    memset(o, 0, sizeof *o);
    char line[128];
    ssize_t n = pread(fd, line, sizeof line - 1, 0);
    if (n <= 0) return;
    line[n] = '\0';
    if (sscanf(line, "pid %ld host %63s", &o->pid, o->host) != 2) memset(o, 0, sizeof *o);
}

int pl_lock_try(const char *cache_dir, const char *key, pl_lock *lk, pl_owner *holder, slmc_err *err) {
    lk->fd = -1;
    char *path = key_path(cache_dir, key, ".lock");
    if (!path) return slmc_fail(err, NULL, "out of memory");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        slmc_fail(err, path, "cannot open the lock file: %s", strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        free(path);
        write_holder(fd);
        lk->fd = fd;
        return 0;
    }
    int e = errno;
    if (e != EWOULDBLOCK && e != EINTR) {
        close(fd);
        slmc_fail(err, path, "cannot lock: %s%s", strerror(e),
                  e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS ? " (the cache's filesystem has no flock() locks; "
                                                                  "see docs/pipeline.md)" : "");
        free(path);
        return -1;
    }
    free(path);
    if (holder) read_holder(fd, holder);
    close(fd); /* it holds no lock: closing it releases nothing */
    return 1;
}

int pl_lock_wait(const char *cache_dir, const char *key, pl_lock *lk, volatile sig_atomic_t *stop, slmc_err *err) {
    long ms = 10;
    for (;;) {
        int rc = pl_lock_try(cache_dir, key, lk, NULL, err);
        if (rc <= 0) return rc;
        if (stop && *stop) return slmc_fail(err, cache_dir, "interrupted");
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (ms < 500) ms *= 2;
    }
}

void pl_lock_release(pl_lock *lk) {
    if (lk->fd >= 0) close(lk->fd); /* closing the only descriptor releases the flock */
    lk->fd = -1;
}

/* ---- entries ---------------------------------------------------------------------------- */

bool pl_entry_complete(const char *cache_dir, const char *key, const char *const *exts, int n, pl_entry_info *info) {
    char *path = key_path(cache_dir, key, ".meta.json");
    char *buf = NULL;
    size_t len;
    bool ok = path && read_small_file(path, 1 << 16, &buf, &len, NULL) == 0;
    free(path);
    json_t *m = ok ? json_loadb(buf, len, 0, NULL) : NULL;
    free(buf);
    const char *k = json_string_value(json_object_get(m, "key"));
    const json_t *files = json_object_get(m, "files");
    ok = k && strcmp(k, key) == 0 && json_is_object(files);
    for (int i = 0; ok && i < n; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", key, exts[i]);
        const json_t *size = json_object_get(files, name);
        char *p = path_join(cache_dir, name);
        struct stat st;
        ok = json_is_integer(size) && p && stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
             (json_int_t)st.st_size == json_integer_value(size);
        free(p);
    }
    if (ok && info) {
        memset(info, 0, sizeof *info);
        json_int_t pid = json_integer_value(json_object_get(m, "pid"));
        const char *host = json_string_value(json_object_get(m, "host"));
        const char *step = json_string_value(json_object_get(m, "step"));
        info->by.pid = (long)pid;
        snprintf(info->by.host, sizeof info->by.host, "%s", host ? host : "");
        snprintf(info->step, sizeof info->step, "%s", step ? step : "");
        info->seconds = json_number_value(json_object_get(m, "seconds"));
    }
    json_decref(m);
    return ok;
}

int pl_entry_commit(const char *cache_dir, const char *key, const char *const *exts, int n, const char *step,
                    double seconds, slmc_err *err) {
    pl_owner self;
    pl_owner_self(&self);
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    json_t *m = json_object(), *files = json_object();
    int rc = !m || !files;
    for (int i = 0; !rc && i < n; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", key, exts[i]);
        char *p = path_join(cache_dir, name);
        struct stat st;
        if (!p) rc = slmc_fail(err, NULL, "out of memory");
        else if (stat(p, &st)) rc = slmc_fail(err, p, "cache entry file: %s", strerror(errno));
        else json_object_set_new(files, name, json_integer((json_int_t)st.st_size));
        free(p);
    }
    char *text = NULL;
    if (!rc) {
        json_object_set_new(m, "format", json_string("slmc-cache-entry/1"));
        json_object_set_new(m, "key", json_string(key));
        json_object_set_new(m, "step", json_string(step));
        json_object_set_new(m, "pid", json_integer(self.pid));
        json_object_set_new(m, "host", json_string(self.host));
        json_object_set_new(m, "finished", json_string(when));
        json_object_set_new(m, "seconds", json_real(seconds));
        json_object_set_new(m, "files", files);
        files = NULL;
        text = pl_end_line(json_dumps(m, JSON_INDENT(2)));
        if (!text) rc = slmc_fail(err, NULL, "out of memory");
    }
    json_decref(files);
    json_decref(m);
    if (rc) return -1;
    char *path = key_path(cache_dir, key, ".meta.json");
    rc = path ? pl_write_atomic(path, text, strlen(text), err) : slmc_fail(err, NULL, "out of memory");
    free(path);
    free(text);
    return rc;
}

/* ---- temporaries ------------------------------------------------------------------------- */

char *pl_temp_dir(const char *cache_dir, const char *key, slmc_err *err) {
    pl_owner self;
    pl_owner_self(&self);
    char name[256];
    snprintf(name, sizeof name, ".tmp-%s-%s-%ld-XXXXXX", key, self.host, self.pid);
    char *dir = path_join(cache_dir, name);
    if (!dir) { slmc_fail(err, NULL, "out of memory"); return NULL; }
    if (!mkdtemp(dir)) {
        slmc_fail(err, dir, "cannot create a temporary folder: %s", strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}

static bool is_key(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

bool pl_temp_key(const char *name, char key[65]) {
    const char *k;
    if (strncmp(name, ".tmp-", 5) == 0) k = name + 5;             /* a step's working folder */
    else if (name[0] == '.' && strstr(name, ".tmp-")) k = name + 1; /* an atomic file being written */
    else return false;
    if (strlen(k) < 65 || !is_key(k) || (k[64] != '-' && k[64] != '.')) return false;
    memcpy(key, k, 64);
    key[64] = '\0';
    return true;
}

/* The temporaries in the cache (names, malloc'd) with their keys; *n of them. */
static char **list_temps(const char *cache_dir, char (**keys)[65], int *n) {
    *n = 0;
    *keys = NULL;
    DIR *d = opendir(cache_dir);
    if (!d) return NULL;
    char **names = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char key[65];
        if (!pl_temp_key(e->d_name, key)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(names, (size_t)cap * sizeof *nv);
            char(*kv)[65] = realloc(*keys, (size_t)cap * sizeof *kv);
            if (nv) names = nv;
            if (kv) *keys = kv;
            if (!nv || !kv) break;
        }
        if (!(names[*n] = strdup(e->d_name))) break;
        memcpy((*keys)[*n], key, 65);
        (*n)++;
    }
    closedir(d);
    return names;
}

void pl_remove_key_temps(const char *cache_dir, const char *key) {
    char(*keys)[65];
    int n;
    char **names = list_temps(cache_dir, &keys, &n);
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], key) == 0) {
            char *p = path_join(cache_dir, names[i]);
            if (p) pl_remove_tree(p);
            free(p);
        }
        free(names[i]);
    }
    free(names);
    free(keys);
}

void pl_remove_stale_temps(const char *cache_dir) {
    char(*keys)[65];
    int n;
    char **names = list_temps(cache_dir, &keys, &n);
    for (int i = 0; i < n; i++) {
        pl_lock lk;
        if (pl_lock_try(cache_dir, keys[i], &lk, NULL, NULL) == 0) { /* nobody alive writes it */
            char *p = path_join(cache_dir, names[i]);
            if (p) pl_remove_tree(p);
            free(p);
            pl_lock_release(&lk);
        }
        free(names[i]);
    }
    free(names);
    free(keys);
}
