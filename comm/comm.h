/* comm.h - the processes of one job: a single process, or N ranks started by mpirun.
 *
 * slmc runs data-parallel under MPI (docs/mpi.md): every rank runs the same command, takes its
 * share of the work units (training sequences, calibration chunks), and the ranks combine what
 * they computed. The one rule that makes the output independent of the number of ranks:
 *
 *   a sum over units 0..n-1 is always the same binary tree over the unit index,
 *
 *        ((u0 + u1) + (u2 + u3)) + ((u4 + u5) + u6)          (n = 7)
 *
 * the perfect tree over the next power of two with the missing leaves left out. Each rank owns
 * a contiguous range of units, sums the whole subtrees inside its range itself, and rank 0
 * joins the pieces into the nodes that straddle ranks. Every addition is the one the tree
 * prescribes, so the bits of the result do not depend on how the units were split: N = 1, 2, 3
 * give the same sums, the same model, the same statistics.
 *
 * Built without MPI (pkg-config finds no ompi-c), or started without mpirun, the job is one
 * rank and the calls below are plain local code; the sum is the same tree.
 *
 * Errors are return values (formats/error.h). A rank that fails does not hang the others as
 * long as every rank reaches the next comm_agree, which hands the failing rank's message to
 * all; a rank that dies (a signal, kill -9) is mpirun's to notice: it ends the whole job with
 * a non-zero status.
 */
#ifndef SLMC_COMM_COMM_H
#define SLMC_COMM_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

typedef struct comm {
    int rank;   /* this process, 0 .. size-1; rank 0 alone writes files */
    int size;   /* processes in the job (1 without mpirun) */
    bool mpi;   /* MPI_Init was called (so comm_finalize must be) */
} comm;

/* The job of one process: what a caller passes when it is not under mpirun. */
extern const comm comm_solo;

/* True when slmc was built with MPI. */
bool comm_built_with_mpi(void);
/* Join the job when started by mpirun (the launcher's environment says so), else become the
 * job of one. Fails when started by mpirun with more than one rank but built without MPI
 * (every rank would do the whole work and write the same files). */
int comm_init(comm *c, int *argc, char ***argv, slmc_err *err);
void comm_finalize(comm *c);
/* End every rank of the job now with this exit status (cli/ only: after a rank's error has been
 * printed, so ranks waiting in a collective do not hang). */
void comm_abort(const comm *c, int status);

/* The contiguous share [lo, hi) of n units that rank r owns: the first n % size ranks one more. */
void comm_share(const comm *c, int64_t n, int r, int64_t *lo, int64_t *hi);

/* Collectives: every rank must make the same calls in the same order. */
int comm_barrier(const comm *c, slmc_err *err);
/* `bytes` bytes of buf from root to every rank. */
int comm_bcast(const comm *c, void *buf, size_t bytes, int root, slmc_err *err);
/* Every rank passes its status (0 or -1, with its message in *err). Returns 0 when all are 0;
 * else -1 on every rank, *err holding the lowest failing rank's message ("rank R: ..."). */
int comm_agree(const comm *c, int status, slmc_err *err);
/* *any = whether `flag` is non-zero on some rank (a stop asked for on one rank stops all). */
int comm_any(const comm *c, int flag, int *any, slmc_err *err);
/* Concatenate every rank's `bytes` bytes of mine in rank order (ranks may pass different
 * sizes); *all (malloc'd, *n_all bytes; free it) on every rank. */
int comm_allgather(const comm *c, const void *mine, size_t bytes, void **all, size_t *n_all, slmc_err *err);
/* The same for `n` int32 values: *all holds *n_all values. */
int comm_allgather_i32(const comm *c, const int32_t *mine, size_t n, int32_t **all, size_t *n_all, slmc_err *err);
/* A buffer whose size only root knows, from root to every rank: on root *buf / *bytes are the
 * input (left as they are); on the others they receive a malloc'd copy (free it). */
int comm_bcast_alloc(const comm *c, void **buf, size_t *bytes, int root, slmc_err *err);

/* ---------------------------------------------------------------------------------------
 * The sum over units in a fixed tree (see the top of this file)
 *
 *   comm_sum s;
 *   comm_sum_init(&s, c, COMM_F32, len, n_units, err);      every rank, the same len and n
 *   for (u = lo; u < hi; u++) { ... comm_sum_add(&s, v, err); }   this rank's share, in order
 *   comm_sum_finish(&s, total, err);                          total[len] on every rank
 *   comm_sum_free(&s);
 *
 * Memory: at most 2·log2(n) + 2 vectors of len on each rank. A sum repeated with the same len
 * (a gradient every step) keeps its vectors with comm_sum_reset instead of init + free; the
 * additions and copies run on n_threads threads (comm_sum_set_threads; element by element, so
 * the bits do not depend on it).
 * ------------------------------------------------------------------------------------- */
typedef enum { COMM_F32, COMM_F64 } comm_type;

typedef struct comm_sum_node {
    int level;      /* the node covers 2^level units ... */
    int64_t start;  /* ... from this one (a multiple of 2^level) */
    void *v;        /* [len] their sum */
} comm_sum_node;

typedef struct comm_sum {
    const comm *c;
    comm_type type;
    size_t len;             /* values per unit */
    int64_t n;              /* units in the whole sum */
    int64_t lo, hi, next;   /* this rank's share, and the unit the next add is */
    comm_sum_node stack[130];/* the finished subtrees, left to right: levels rise from the rank's
                               first unit to the largest aligned block, then fall */
    int depth;
    void *spare[130];       /* freed vectors, reused */
    int n_spare;
    int n_threads;          /* of the vector additions and copies (1 unless set) */
} comm_sum;

int comm_sum_init(comm_sum *s, const comm *c, comm_type type, size_t len, int64_t n_units, slmc_err *err);
/* This rank's next unit (v is read, not kept). */
int comm_sum_add(comm_sum *s, const void *v, slmc_err *err);
/* Start another sum of n_units with the same comm, type and len, keeping the vectors. */
int comm_sum_reset(comm_sum *s, int64_t n_units, slmc_err *err);
void comm_sum_set_threads(comm_sum *s, int n_threads);
/* Collective: out[len] = the sum of all n units, on every rank. n = 0 gives zeros. */
int comm_sum_finish(comm_sum *s, void *out, slmc_err *err);
void comm_sum_free(comm_sum *s);
/* What rank 0 does with each other rank's subtrees, in rank order: join other's into root
 * (other is left empty). For tests that play several ranks in one process (comm with mpi false). */
void comm_sum_take(comm_sum *root, comm_sum *other);

#endif
