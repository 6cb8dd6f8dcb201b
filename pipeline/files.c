/* files.c - the pipeline's file operations (see files.h). */
#include "pipeline/files.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"

int pl_make_dir(const char *path, slmc_err *err) {
    if (mkdir(path, 0777) && errno != EEXIST) return slmc_fail(err, path, "cannot create the folder: %s", strerror(errno));
    if (!is_dir(path)) return slmc_fail(err, path, "exists and is not a folder");
    return 0;
}

bool pl_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void pl_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int pl_write_atomic(const char *path, const void *data, size_t n, slmc_err *err) {
    atomic_file af;
    if (af_open(&af, path, err)) return -1;
    if (af_write(&af, data, n, err) || af_commit(&af, err)) { af_abort(&af); return -1; }
    return 0;
}

/* Copy a file atomically (when a hard link is not possible). */
static int copy_atomic(const char *from, const char *to, slmc_err *err) {
    mapped_file mf;
    if (map_file(&mf, from, err)) return -1;
    int rc = pl_write_atomic(to, mf.data, mf.size, err);
    unmap_file(&mf);
    return rc;
}

int pl_publish(const char *cached, const char *dir, const char *name, unsigned seq, slmc_err *err) {
    char *dst = path_join(dir, name);
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, ".%s.tmp-%ld-%u", name, (long)getpid(), seq);
    char *tmp = path_join(dir, tmpname);
    int rc = 0;
    if (!dst || !tmp) rc = slmc_fail(err, NULL, "out of memory");
    else if (same_file(cached, dst)) {
        /* already published (a rerun) */
    } else if (link(cached, tmp) == 0) {
        if (rename(tmp, dst)) rc = slmc_fail(err, dst, "cannot rename into place: %s", strerror(errno));
        /* rename() leaves both names when they are links to one file (another pipeline
         * published the same file meanwhile): the temporary name must go in any case */
        unlink(tmp);
    } else {
        rc = copy_atomic(cached, dst, err);
    }
    free(dst);
    free(tmp);
    return rc;
}

uint64_t pl_path_size(const char *path) {
    struct stat st;
    if (stat(path, &st)) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    uint64_t total = 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            char *p = path_join(path, e->d_name);
            if (p) total += pl_path_size(p);
            free(p);
        }
    closedir(d);
    return total;
}

char *pl_end_line(char *s) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) { free(s); return NULL; }
    strcpy(t + n, "\n");
    return t;
}
