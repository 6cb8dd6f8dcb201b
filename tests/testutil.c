/* testutil.c - see testutil.h */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *shared_path(const char *rel) {
    const char *root = getenv("SLMC_SHARED");
    if (!root || !*root) root = "../shared";
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", root, rel);
    struct stat st;
    if (stat(p, &st) != 0) { free(p); return NULL; }
    return p;
}

void test_skip(const char *where, const char *fmt, ...) {
    /* each test runs in a forked child, which starts with this false */
    static bool said = false;
    if (said) return;
    said = true;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "SKIP %s: ", where);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

char *tmpdir_make(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    snprintf(p, n, "%s/slmc-test-XXXXXX", base);
    if (!mkdtemp(p)) { free(p); return NULL; }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

void tmpdir_remove(char *dir) {
    if (!dir) return;
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n > 0 ? n : 0] = 0; /* a NUL after the data: text files can go to strstr */
    fclose(f);
    if (buf && len) *len = (size_t)n;
    return buf;
}

int write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    /* Check forks a process per test unless CK_FORK=no (for a debugger); test_skip's
     * once-per-test line relies on the fork, and tests/run_tests.sh sets CK_FORK=yes */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
