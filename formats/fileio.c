/* fileio.c - mapped inputs and atomic outputs (see fileio.h).
 *
 * Outputs never appear half-written: bytes go to a temporary file in the target's folder
 * (same file system, so rename is atomic), which is fsync'd and renamed over the target on
 * commit, and the folder is fsync'd so the rename itself survives a crash.
 */
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <limits.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------
 * Temporary outputs in flight, so that an interrupted run (SIGINT, SIGTERM) can remove them:
 * fileio_remove_temps() only uses async-signal-safe calls. (A kill -9 cannot be caught; its
 * leftovers are hidden ".NAME.tmp-XXXXXX" entries, never a partial file at the output path.)
 * ------------------------------------------------------------------------------------- */

#define MAX_TEMPS 64

static struct {
    char path[PATH_MAX];          /* temporary file or folder */
    volatile sig_atomic_t state;  /* 0 free, 1 file, 2 folder */
} temps[MAX_TEMPS];

static void temp_register(const char *path, int state) {
    if (strlen(path) >= PATH_MAX) return;
    for (int i = 0; i < MAX_TEMPS; i++)
        if (temps[i].state == 0) {
            memcpy(temps[i].path, path, strlen(path) + 1);
            temps[i].state = state;
            return;
        }
}

static void temp_forget(const char *path) {
    if (!path) return;
    for (int i = 0; i < MAX_TEMPS; i++)
        if (temps[i].state && strcmp(temps[i].path, path) == 0) temps[i].state = 0;
}

void fileio_remove_temps(void) {
    for (int i = 0; i < MAX_TEMPS; i++) {
        if (temps[i].state == 1) {
            unlink(temps[i].path);
        } else if (temps[i].state == 2) {
            /* a folder with files in it: rm -rf in a child (fork and execve are signal-safe) */
            pid_t pid = fork();
            if (pid == 0) {
                char *const argv[] = {"rm", "-rf", "--", temps[i].path, NULL};
                char *const envp[] = {NULL};
                execve("/bin/rm", argv, envp);
                _exit(127);
            }
            if (pid > 0) waitpid(pid, NULL, 0);
        }
        temps[i].state = 0;
    }
}

#define AF_BUF_SIZE (4u << 20) /* 4 MiB write buffer: few syscalls, modest memory */

/* ---- paths ---------------------------------------------------------------------------- */

char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Split `path` into its folder ("." when none) and last component, ignoring trailing slashes.
 * Both malloc'd. */
static int split_path(const char *path, char **dir, char **base) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t slash = n;
    while (slash > 0 && path[slash - 1] != '/') slash--;
    /* slash is now the index where the last component starts */
    *base = strndup(path + slash, n - slash);
    if (slash == 0) *dir = strdup(".");
    else if (slash == 1) *dir = strdup("/");
    else *dir = strndup(path, slash - 1);
    if (!*dir || !*base) { free(*dir); free(*base); *dir = *base = NULL; return -1; }
    return 0;
}

/* "<dir>/.<base>.tmp-XXXXXX", the template for mkstemp / mkdtemp. */
static char *tmp_template(const char *dir, const char *base) {
    size_t n = strlen(dir) + strlen(base) + 16;
    char *t = malloc(n);
    if (t) snprintf(t, n, "%s/.%s.tmp-XXXXXX", dir, base);
    return t;
}

/* fsync a folder so a rename inside it is durable. */
static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* ---- inputs --------------------------------------------------------------------------- */

int map_file(mapped_file *mf, const char *path, slmc_err *err) {
    mf->data = NULL;
    mf->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return slmc_fail(err, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return slmc_fail(err, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return slmc_fail(err, path, "not a regular file");
    }
    if (st.st_size == 0) { close(fd); return 0; } /* mmap refuses length 0 */
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping stays valid without the descriptor */
    if (p == MAP_FAILED) return slmc_fail(err, path, "cannot map %lld bytes: %s", (long long)st.st_size, strerror(e));
    /* Pages read in through this mapping come in 2 MB folios where the file system allows it
     * (ext4 and XFS on Linux 6.x), which later faults map whole: a Llama-3.2-1B BF16 file took
     * 0.9 s to touch page by page in 4 KB folios, 0.03 s in 2 MB ones. Only a hint: pages
     * already cached keep their size, and a kernel without it refuses (ignored). */
    madvise(p, (size_t)st.st_size, MADV_HUGEPAGE);
    mf->data = p;
    mf->size = (size_t)st.st_size;
    return 0;
}

void unmap_file(mapped_file *mf) {
    if (mf->data) munmap((void *)mf->data, mf->size);
    mf->data = NULL;
    mf->size = 0;
}

int read_small_file(const char *path, size_t max_bytes, char **out, size_t *len, slmc_err *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return slmc_fail(err, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return slmc_fail(err, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return slmc_fail(err, path, "not a regular file");
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return slmc_fail(err, path, "file is %lld bytes, more than the %zu allowed", (long long)st.st_size, max_bytes);
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) { close(fd); return slmc_fail(err, path, "out of memory reading %zu bytes", cap); }
    size_t got = 0;
    while (got < cap) { /* read may return less than asked; stop early if the file shrank */
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return slmc_fail(err, path, "read failed at offset %zu: %s", got, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len) *len = got;
    return 0;
}

/* ---- atomic_file ---------------------------------------------------------------------- */

/* write() until all n bytes are out, retrying on EINTR and short writes. Sets errno on failure. */
static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) { errno = EIO; return -1; } /* should not happen for regular files */
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int af_open(atomic_file *af, const char *path, slmc_err *err) {
    memset(af, 0, sizeof *af);
    af->fd = -1; /* so af_abort is safe whatever happens below */
    char *dir, *base;
    if (split_path(path, &dir, &base) != 0) return slmc_fail(err, path, "out of memory");
    af->path = strdup(path);
    af->tmp_path = tmp_template(dir, base);
    af->buf = malloc(AF_BUF_SIZE);
    free(dir);
    free(base);
    if (!af->path || !af->tmp_path || !af->buf) {
        free(af->tmp_path);
        af->tmp_path = NULL; /* nothing was created yet: do not unlink the template */
        af_abort(af);
        return slmc_fail(err, path, "out of memory");
    }
    af->cap = AF_BUF_SIZE;
    af->fd = mkostemp(af->tmp_path, O_CLOEXEC);
    if (af->fd < 0) {
        int e = errno;
        free(af->tmp_path);
        af->tmp_path = NULL;
        af_abort(af);
        return slmc_fail(err, path, "cannot create a temporary file next to it: %s", strerror(e));
    }
    temp_register(af->tmp_path, 1);
    return 0;
}

/* Write the buffered bytes to the file. */
static int af_flush(atomic_file *af, slmc_err *err) {
    if (af->len == 0) return 0;
    if (write_all(af->fd, af->buf, af->len) != 0)
        return slmc_fail(err, af->path, "write failed: %s", strerror(errno));
    af->len = 0;
    return 0;
}

int af_write(atomic_file *af, const void *data, size_t n, slmc_err *err) {
    if (af->fd < 0) return slmc_fail(err, af->path, "write to a closed output");
    const uint8_t *p = data;
    if (af->len + n <= af->cap) { /* common case: fits in the buffer */
        if (n) memcpy(af->buf + af->len, p, n);
        af->len += n;
        af->written += n;
        return 0;
    }
    /* Fill the buffer up, flush it, then write large remainders directly. */
    size_t room = af->cap - af->len;
    memcpy(af->buf + af->len, p, room);
    af->len += room;
    if (af_flush(af, err) != 0) return -1;
    p += room;
    n -= room;
    af->written += room;
    if (n >= af->cap) {
        if (write_all(af->fd, p, n) != 0)
            return slmc_fail(err, af->path, "write failed: %s", strerror(errno));
    } else {
        memcpy(af->buf, p, n);
        af->len = n;
    }
    af->written += n;
    return 0;
}

int af_pad(atomic_file *af, size_t n, slmc_err *err) {
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (af_write(af, zeros, k, err) != 0) return -1;
        n -= k;
    }
    return 0;
}

int af_commit(atomic_file *af, slmc_err *err) {
    if (af->fd < 0) return slmc_fail(err, af->path, "commit of a closed output");
    if (af_flush(af, err) != 0) { af_abort(af); return -1; }
    const char *what = NULL;
    if (fsync(af->fd) != 0) what = "fsync";
    else if (fchmod(af->fd, 0644) != 0) what = "chmod"; /* mkstemp made it 0600 */
    if (what) {
        int e = errno;
        af_abort(af);
        return slmc_fail(err, af->path, "%s failed: %s", what, strerror(e));
    }
    int fd = af->fd;
    af->fd = -1;
    if (close(fd) != 0) {
        int e = errno;
        af_abort(af);
        return slmc_fail(err, af->path, "close failed: %s", strerror(e));
    }
    if (rename(af->tmp_path, af->path) != 0) {
        int e = errno;
        af_abort(af);
        return slmc_fail(err, af->path, "cannot rename the temporary file into place: %s", strerror(e));
    }
    temp_forget(af->tmp_path);
    free(af->tmp_path);
    af->tmp_path = NULL; /* renamed: af_abort must not unlink it now */
    char *dir, *base;
    int rc = 0;
    if (split_path(af->path, &dir, &base) == 0) {
        if (fsync_dir(dir) != 0) rc = slmc_fail(err, af->path, "fsync of its folder failed: %s", strerror(errno));
        free(dir);
        free(base);
    }
    af_abort(af); /* frees the rest */
    return rc;
}

void af_abort(atomic_file *af) {
    if (af->fd >= 0) close(af->fd);
    af->fd = -1;
    if (af->tmp_path) unlink(af->tmp_path);
    temp_forget(af->tmp_path);
    free(af->tmp_path);
    free(af->path);
    free(af->buf);
    af->tmp_path = af->path = NULL;
    af->buf = NULL;
    af->len = af->cap = 0;
}

/* ---- atomic_dir ----------------------------------------------------------------------- */

int ad_open(atomic_dir *ad, const char *path, slmc_err *err) {
    memset(ad, 0, sizeof *ad);
    char *dir, *base;
    if (split_path(path, &dir, &base) != 0) return slmc_fail(err, path, "out of memory");
    ad->path = strdup(path);
    ad->tmp_path = tmp_template(dir, base);
    free(dir);
    free(base);
    if (!ad->path || !ad->tmp_path) {
        free(ad->path);
        free(ad->tmp_path);
        memset(ad, 0, sizeof *ad);
        return slmc_fail(err, path, "out of memory");
    }
    if (!mkdtemp(ad->tmp_path)) {
        int e = errno;
        free(ad->path);
        free(ad->tmp_path);
        memset(ad, 0, sizeof *ad);
        return slmc_fail(err, path, "cannot create a temporary folder next to it: %s", strerror(e));
    }
    chmod(ad->tmp_path, 0755); /* mkdtemp makes it 0700; a model folder is readable like any other */
    temp_register(ad->tmp_path, 2);
    return 0;
}

char *ad_file(const atomic_dir *ad, const char *name) { return path_join(ad->tmp_path, name); }

/* true when `path` is a folder with no entries. */
static bool dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) { empty = false; break; }
    closedir(d);
    return empty;
}

/* fsync every regular file directly inside `dir` (their writers may not have). */
static int fsync_files(const char *dir, slmc_err *err, const char *report) {
    DIR *d = opendir(dir);
    if (!d) return slmc_fail(err, report, "cannot list %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue; /* a symlink or vanished entry: nothing to sync */
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = slmc_fail(err, report, "fsync of %s failed: %s", e->d_name, strerror(errno));
        close(fd);
    }
    closedir(d);
    return rc;
}

int ad_commit(atomic_dir *ad, slmc_err *err) {
    if (!ad->tmp_path) return slmc_fail(err, ad->path, "commit of a closed output folder");
    if (fsync_files(ad->tmp_path, err, ad->path) != 0) { ad_abort(ad); return -1; }
    if (fsync_dir(ad->tmp_path) != 0) {
        int e = errno;
        ad_abort(ad);
        return slmc_fail(err, ad->path, "fsync of the temporary folder failed: %s", strerror(e));
    }
    struct stat st;
    bool exists = lstat(ad->path, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) {
        ad_abort(ad);
        return slmc_fail(err, ad->path, "exists and is not a folder");
    }
    if (!exists || dir_is_empty(ad->path)) {
        /* rename(2) replaces an empty folder atomically */
        if (rename(ad->tmp_path, ad->path) != 0) {
            int e = errno;
            ad_abort(ad);
            return slmc_fail(err, ad->path, "cannot rename the temporary folder into place: %s", strerror(e));
        }
    } else {
        /* An existing folder with other files: move our files in one by one. */
        DIR *d = opendir(ad->tmp_path);
        if (!d) {
            int e = errno;
            ad_abort(ad);
            return slmc_fail(err, ad->path, "cannot list the temporary folder: %s", strerror(e));
        }
        int rc = 0;
        struct dirent *e;
        while (rc == 0 && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *from = path_join(ad->tmp_path, e->d_name);
            char *to = path_join(ad->path, e->d_name);
            if (!from || !to) rc = slmc_fail(err, ad->path, "out of memory");
            else if (rename(from, to) != 0)
                rc = slmc_fail(err, ad->path, "cannot move %s into place: %s", e->d_name, strerror(errno));
            free(from);
            free(to);
        }
        closedir(d);
        if (rc != 0) { ad_abort(ad); return -1; }
        rmdir(ad->tmp_path);
    }
    temp_forget(ad->tmp_path);
    free(ad->tmp_path);
    ad->tmp_path = NULL;
    /* make the renames durable: the target folder and its parent */
    int rc = 0;
    char *dir, *base;
    if (split_path(ad->path, &dir, &base) == 0) {
        if (fsync_dir(ad->path) != 0 || fsync_dir(dir) != 0)
            rc = slmc_fail(err, ad->path, "fsync of the folder failed: %s", strerror(errno));
        free(dir);
        free(base);
    }
    free(ad->path);
    ad->path = NULL;
    return rc;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0; /* keep going: remove as much as possible */
}

void ad_abort(atomic_dir *ad) {
    if (ad->tmp_path) nftw(ad->tmp_path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    temp_forget(ad->tmp_path);
    free(ad->tmp_path);
    free(ad->path);
    ad->tmp_path = ad->path = NULL;
}
