/* ranks.c - chunks shared among the ranks of a job (see ranks.h). */
#include "ranks.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const comm *ranks_job(const comm *c) { return c ? c : &comm_solo; }

int ranks_gather(const comm *c, const void *mine, size_t bytes, void **all, size_t *n_all, slmc_err *err) {
    *all = NULL;
    *n_all = 0;
    if (bytes % sizeof(int32_t) != 0)
        return slmc_fail(err, NULL, "gathering %zu bytes: not a whole number of 4-byte words", bytes);
    /* comm offers no byte gather: the bytes travel as int32 words, the same bits */
    int32_t *words = NULL;
    size_t n_words = 0;
    if (comm_allgather_i32(c, (const int32_t *)mine, bytes / sizeof(int32_t), &words, &n_words, err) != 0) return -1;
    *all = words;
    *n_all = n_words * sizeof(int32_t);
    return 0;
}

int ranks_bcast_buffer(const comm *c, void **buf, size_t *bytes, slmc_err *err) {
    if (c->size == 1) return 0;
    uint64_t n = c->rank == 0 ? (uint64_t)*bytes : 0;
    if (comm_bcast(c, &n, sizeof n, 0, err) != 0) return -1;
    if (c->rank != 0) {
        *buf = malloc(n ? (size_t)n : 1);
        *bytes = (size_t)n;
        if (!*buf) return slmc_fail(err, NULL, "out of memory for %llu bytes from rank 0", (unsigned long long)n);
    }
    return comm_bcast(c, *buf, (size_t)n, 0, err);
}
