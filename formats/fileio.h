/* fileio.h - mapped inputs and atomic outputs.
 *
 * Inputs are mapped read-only and never modified. Outputs are written to a temporary file
 * (or folder) next to the target and renamed over it only when complete, so an interrupted
 * run never leaves a partial file at the output path.
 */
#ifndef SLMC_FILEIO_H
#define SLMC_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef struct mapped_file {
    const uint8_t *data; /* [size] read-only mapping (NULL for an empty file) */
    size_t size;         /* bytes */
} mapped_file;

int map_file(mapped_file *mf, const char *path, slmc_err *err);
void unmap_file(mapped_file *mf);

/* Whole small file (JSON, tokenizer) read into a NUL-terminated malloc'd buffer.
 * Refuses files over max_bytes. */
int read_small_file(const char *path, size_t max_bytes, char **out, size_t *len, slmc_err *err);

/* An output file written through a buffer to "<dir>/.<name>.tmp-XXXXXX" and renamed on commit. */
typedef struct atomic_file {
    char *path;     /* final path */
    char *tmp_path; /* temporary path in the same folder */
    int fd;         /* -1 when closed */
    uint8_t *buf;   /* write buffer [cap] */
    size_t len, cap;
    uint64_t written; /* bytes accepted so far (including buffered) */
} atomic_file;

int af_open(atomic_file *af, const char *path, slmc_err *err);
int af_write(atomic_file *af, const void *data, size_t n, slmc_err *err);
/* Write n zero bytes (padding). */
int af_pad(atomic_file *af, size_t n, slmc_err *err);
/* Flush, fsync, close and rename to the final path. */
int af_commit(atomic_file *af, slmc_err *err);
/* Close and unlink the temporary file (safe to call after commit or on a closed file). */
void af_abort(atomic_file *af);

/* An output folder built as "<parent>/.<name>.tmp-XXXXXX" and moved into place on commit:
 * renamed over the target when the target does not exist (or is an empty folder), otherwise
 * each file is renamed into the existing folder. */
typedef struct atomic_dir {
    char *path;     /* final folder */
    char *tmp_path; /* temporary folder, files are written here */
} atomic_dir;

int ad_open(atomic_dir *ad, const char *path, slmc_err *err);
/* Path of a file inside the temporary folder (malloc'd), e.g. ad_file(ad, "config.json"). */
char *ad_file(const atomic_dir *ad, const char *name);
int ad_commit(atomic_dir *ad, slmc_err *err);
void ad_abort(atomic_dir *ad);

/* Remove every temporary output still in flight. Async-signal-safe: cli/ calls it from its
 * SIGINT / SIGTERM handler so an interrupted run leaves nothing behind. */
void fileio_remove_temps(void);

/* true when the two paths name the same existing file (same device and inode). */
bool same_file(const char *a, const char *b);
/* Path join (malloc'd). */
char *path_join(const char *dir, const char *name);
bool is_dir(const char *path);

#endif
