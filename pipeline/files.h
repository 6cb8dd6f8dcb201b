/* files.h - the file operations the pipeline needs around its cache: folders, atomic writes,
 * publishing a cache file under a readable name, sizes. (The cache's locks, entries and
 * temporaries are cache.h's.)
 *
 * Every output appears complete or not at all (temporary name + rename), so several pipelines
 * sharing one output folder never see each other's partial files.
 */
#ifndef SLMC_PIPELINE_FILES_H
#define SLMC_PIPELINE_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

/* Create a folder (its parent must exist); fine when it is already a folder. */
int pl_make_dir(const char *path, slmc_err *err);

/* true when path is an existing regular file. */
bool pl_is_file(const char *path);

/* Remove a file or a folder with everything in it; errors are ignored (best effort). */
void pl_remove_tree(const char *path);

/* Write a whole buffer to `path` atomically (temporary file + rename). */
int pl_write_atomic(const char *path, const void *data, size_t n, slmc_err *err);

/* Make the cache file `cached` visible as DIR/NAME: a hard link renamed into place (so the
 * name always points at a complete file), or an atomic copy when linking is not possible.
 * Nothing happens when DIR/NAME already is that file. `seq` makes the temporary name unique
 * among the calls of one process. */
int pl_publish(const char *cached, const char *dir, const char *name, unsigned seq, slmc_err *err);

/* Bytes of a file, or of every non-hidden file under a folder; 0 when it cannot be read. */
uint64_t pl_path_size(const char *path);

/* s (malloc'd, e.g. a JSON dump, which ends without one) with "\n" appended; frees s.
 * NULL when s is NULL or out of memory. */
char *pl_end_line(char *s);

#endif
