/* error.c - see error.h */
#include "error.h"

#include <stdio.h>
#include <string.h>

int slmc_fail(slmc_err *err, const char *path, const char *fmt, ...) {
    if (!err) return -1;
    size_t off = 0;
    if (path && *path) {
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", path);
        off = n < 0 ? 0 : (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + off, sizeof err->msg - off, fmt, ap);
    va_end(ap);
    return -1;
}

int slmc_fail_prefix(slmc_err *err, const char *path) {
    if (!err || !path || !*path) return -1;
    char tmp[SLMC_ERR_MAX];
    memcpy(tmp, err->msg, sizeof tmp);
    size_t n = strlen(path);
    if (n > SLMC_ERR_MAX / 2) n = SLMC_ERR_MAX / 2; /* keep room for the cause */
    memcpy(err->msg, path, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = strnlen(tmp, SLMC_ERR_MAX - 1);
    if (rest > SLMC_ERR_MAX - n - 3) rest = SLMC_ERR_MAX - n - 3;
    memcpy(err->msg + n + 2, tmp, rest);
    err->msg[n + 2 + rest] = 0;
    return -1;
}
