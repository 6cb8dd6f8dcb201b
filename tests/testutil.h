/* testutil.h - helpers shared by the Check suites. */
#ifndef SLMC_TESTUTIL_H
#define SLMC_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* Path of a file under ../shared (relative to the project root, or $SLMC_SHARED), malloc'd,
 * or NULL when it does not exist. */
char *shared_path(const char *rel);

/* Skip the rest of a test (printing why) when a ../shared file is missing:
 *   char *p = SHARED_OR_SKIP("models/stories260K/stories260K.bin"); */
#define SHARED_OR_SKIP(rel)                                                                  \
    ({                                                                                       \
        char *p_ = shared_path(rel);                                                         \
        if (!p_) {                                                                           \
            fprintf(stderr, "SKIP %s: ../shared/%s not found\n", __func__, rel);             \
            return;                                                                          \
        }                                                                                    \
        p_;                                                                                  \
    })

/* A fresh temporary folder (malloc'd path) removed by tmpdir_remove. */
char *tmpdir_make(void);
void tmpdir_remove(char *dir);

/* Whole file into memory (malloc'd); NULL on failure. */
uint8_t *slurp(const char *path, size_t *len);
int write_bytes(const char *path, const void *data, size_t len);

/* Run the suite and return the process exit status (0 when no failures). */
int run_suite(Suite *s);

#endif
