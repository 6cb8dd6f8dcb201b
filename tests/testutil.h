/* testutil.h - helpers shared by the Check suites. */
#ifndef SLMC_TESTUTIL_H
#define SLMC_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* Path of a file under ../shared (relative to the project root, or $SLMC_SHARED), malloc'd,
 * or NULL when it does not exist. */
char *shared_path(const char *rel);

/* Say that the running test (or a part of it) does not run here, and why. Prints one line
 * "SKIP where: why" on stderr, once per test: Check runs every test in a process of its own
 * (tests/run_tests.sh sets CK_FORK=yes), and the runner counts those lines as skipped tests,
 * never as passed ones. The caller returns right after. */
void test_skip(const char *where, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Skip the rest of the test: SKIP_TEST("this CPU has no AVX2"); */
#define SKIP_TEST(...)                                                                       \
    do {                                                                                     \
        test_skip(__func__, __VA_ARGS__);                                                    \
        return;                                                                              \
    } while (0)

/* Skip the rest of a test when a ../shared file is missing:
 *   char *p = SHARED_OR_SKIP("models/stories260K/stories260K.bin"); */
#define SHARED_OR_SKIP(rel)                                                                  \
    ({                                                                                       \
        char *p_ = shared_path(rel);                                                         \
        if (!p_) SKIP_TEST("../shared/%s not found", rel);                                   \
        p_;                                                                                  \
    })

/* TEST_SANITIZED is defined in a sanitizer build (make check-asan), where a few long tests run
 * a smaller case and say what they left to the optimized build (test_skip). */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif

/* Assert `cond` for every integer i in [lo, hi) with ONE Check assertion, naming the first i
 * where it fails:   CK_ASSERT_RANGE(i, 0, n, isfinite(y[i]));
 * Check records every passing assertion with a write to its pipe, so a ck_assert per element of
 * a large array costs millions of system calls (minutes under the sanitizers). */
#define CK_ASSERT_RANGE(i, lo, hi, cond)                                                     \
    do {                                                                                     \
        long long bad_ = -1, hi_ = (long long)(hi);                                          \
        for (long long i = (long long)(lo); i < hi_; i++)                                    \
            if (!(cond)) {                                                                   \
                bad_ = i;                                                                    \
                break;                                                                       \
            }                                                                                \
        ck_assert_msg(bad_ < 0, "%s fails for %s = %lld", #cond, #i, bad_);                  \
    } while (0)

/* ck_assert_msg for the inside of a loop over many elements: Check hears of it only when it
 * fails (cond is evaluated once). */
#define CK_ASSERT_QUIET(cond, ...)                                                           \
    do {                                                                                     \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                              \
    } while (0)

/* A fresh temporary folder (malloc'd path) removed by tmpdir_remove. */
char *tmpdir_make(void);
void tmpdir_remove(char *dir);

/* Whole file into memory (malloc'd, with a NUL byte after the *len bytes, so a text file is
 * a C string); NULL on failure. */
uint8_t *slurp(const char *path, size_t *len);
int write_bytes(const char *path, const void *data, size_t len);

/* Run the suite and return the process exit status (0 when no failures). */
int run_suite(Suite *s);

#endif
