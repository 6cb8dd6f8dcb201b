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
    snprintf(tmp, sizeof tmp, "%s: %s", path, err->msg);
    memcpy(err->msg, tmp, sizeof tmp);
    return -1;
}
