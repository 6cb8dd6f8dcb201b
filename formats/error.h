/* error.h - errors as return values carrying a message.
 *
 * Every function below cli/ that can fail returns an int (0 on success, -1 on failure) and
 * takes a `slmc_err *` as its last argument. On failure the message reads
 * "PATH: what is wrong" (or "what is wrong" when there is no file involved), ready for
 * cli/ to print as "slmc: PATH: what is wrong". Nothing below cli/ prints or exits.
 */
#ifndef SLMC_ERROR_H
#define SLMC_ERROR_H

#include <stdarg.h>

#define SLMC_ERR_MAX 1024

typedef struct slmc_err {
    char msg[SLMC_ERR_MAX]; /* "PATH: cause", NUL-terminated; empty when no error */
} slmc_err;

/* Fill `err` with "path: <formatted message>" (just the message when path is NULL) and
 * return -1, so a failing function can end with `return slmc_fail(err, path, "...")`.
 * `err` may be NULL, in which case only -1 is returned. */
int slmc_fail(slmc_err *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with "path: " (used when a lower layer failed without
 * knowing the file name). Returns -1. */
int slmc_fail_prefix(slmc_err *err, const char *path);

#endif
