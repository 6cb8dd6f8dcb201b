/* comm.c - the job's processes (comm.h): MPI when built with it and started by mpirun, else
 * the job of one. The tree sum's logic is the same code either way; only moving the pieces to
 * rank 0 and the result back needs MPI. */
#include "comm/comm.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SLMC_MPI
#include <mpi.h>
#endif

const comm comm_solo = {0, 1, false};

bool comm_built_with_mpi(void) {
#ifdef SLMC_MPI
    return true;
#else
    return false;
#endif
}

/* The size a launcher announces in the environment (Open MPI, PMIx, MPICH's hydra), or 0. */
static int launcher_size(void) {
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

int comm_init(comm *c, int *argc, char ***argv, slmc_err *err) {
    *c = comm_solo;
    int announced = launcher_size();
    if (announced == 0) return 0; /* not under mpirun: no MPI_Init (a singleton start is slow) */
#ifdef SLMC_MPI
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return slmc_fail(err, NULL, "MPI_Init failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->mpi = true;
    return 0;
#else
    (void)argc;
    (void)argv;
    if (announced > 1)
        return slmc_fail(err, NULL,
                         "started by mpirun with %d ranks, but this slmc was built without MPI (install "
                         "libopenmpi-dev and rebuild; see docs/mpi.md)",
                         announced);
    return 0;
#endif
}

void comm_finalize(comm *c) {
#ifdef SLMC_MPI
    if (c->mpi) MPI_Finalize();
#endif
    c->mpi = false;
}

void comm_abort(const comm *c, int status) {
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1) MPI_Abort(MPI_COMM_WORLD, status);
#endif
    (void)c;
    (void)status;
}

void comm_share(const comm *c, int64_t n, int r, int64_t *lo, int64_t *hi) {
    int64_t q = n / c->size, extra = n % c->size;
    *lo = r * q + (r < extra ? r : extra);
    *hi = *lo + q + (r < extra ? 1 : 0);
}

#ifdef SLMC_MPI
static int mpi_fail(slmc_err *err, const char *what, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, text, &n) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", code);
    return slmc_fail(err, NULL, "MPI: %s failed: %s", what, text);
}

/* MPI counts are ints: big buffers go in pieces of 1 GiB. */
#define PIECE ((size_t)1 << 30)

static int bcast_bytes(void *buf, size_t bytes, int root, slmc_err *err) {
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Bcast", rc);
    }
    return 0;
}

static int send_bytes(const void *buf, size_t bytes, int to, slmc_err *err) {
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Send((const char *)buf + off, (int)n, MPI_BYTE, to, 7001, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Send", rc);
    }
    return 0;
}

static int recv_bytes(void *buf, size_t bytes, int from, slmc_err *err) {
    for (size_t off = 0; off < bytes; off += PIECE) {
        size_t n = bytes - off < PIECE ? bytes - off : PIECE;
        int rc = MPI_Recv((char *)buf + off, (int)n, MPI_BYTE, from, 7001, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Recv", rc);
    }
    return 0;
}
#endif

int comm_barrier(const comm *c, slmc_err *err) {
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1) {
        int rc = MPI_Barrier(MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Barrier", rc);
    }
#endif
    (void)c;
    (void)err;
    return 0;
}

int comm_bcast(const comm *c, void *buf, size_t bytes, int root, slmc_err *err) {
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1) return bcast_bytes(buf, bytes, root, err);
#endif
    (void)c;
    (void)buf;
    (void)bytes;
    (void)root;
    (void)err;
    return 0;
}

int comm_agree(const comm *c, int status, slmc_err *err) {
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1) {
        /* the lowest failing rank, or size when none failed */
        int mine = status != 0 ? c->rank : c->size, first = c->size;
        int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Allreduce", rc);
        if (first == c->size) return 0;
        slmc_err msg = {{0}};
        if (c->rank == first) snprintf(msg.msg, sizeof msg.msg, "rank %d: %.1000s", first, err ? err->msg : "failed");
        if (bcast_bytes(msg.msg, sizeof msg.msg, first, err) != 0) return -1;
        msg.msg[sizeof msg.msg - 1] = 0;
        if (err) *err = msg;
        return -1;
    }
#endif
    (void)c;
    (void)err;
    return status != 0 ? -1 : 0;
}

int comm_any(const comm *c, int flag, int *any, slmc_err *err) {
    *any = flag != 0;
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1) {
        int mine = flag != 0;
        int rc = MPI_Allreduce(&mine, any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Allreduce", rc);
    }
#endif
    (void)c;
    (void)err;
    return 0;
}

int comm_allgather(const comm *c, const void *mine, size_t bytes, void **all, size_t *n_all, slmc_err *err) {
    *all = NULL;
    *n_all = 0;
    if (!c->mpi || c->size == 1) {
        if (c->size > 1) return slmc_fail(err, NULL, "a job of %d ranks needs MPI", c->size);
        if (!(*all = malloc(bytes ? bytes : 1))) return slmc_fail(err, NULL, "out of memory for %zu bytes", bytes);
        if (bytes) memcpy(*all, mine, bytes);
        *n_all = bytes;
        return 0;
    }
#ifdef SLMC_MPI
    /* every rank's size, then each rank's bytes broadcast from it in turn (in pieces: MPI
     * counts are int) */
    uint64_t *sizes = calloc((size_t)c->size, sizeof *sizes);
    if (!sizes) return slmc_fail(err, NULL, "out of memory");
    uint64_t my = bytes;
    int rc = MPI_Allgather(&my, 1, MPI_UINT64_T, sizes, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(sizes);
        return mpi_fail(err, "MPI_Allgather", rc);
    }
    size_t total = 0;
    for (int r = 0; r < c->size; r++) total += sizes[r];
    char *out = malloc(total ? total : 1);
    if (!out) {
        free(sizes);
        return slmc_fail(err, NULL, "out of memory for %zu bytes", total);
    }
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank && bytes) memcpy(out + off, mine, bytes);
        if (bcast_bytes(out + off, sizes[r], r, err) != 0) {
            free(sizes);
            free(out);
            return -1;
        }
        off += sizes[r];
    }
    free(sizes);
    *all = out;
    *n_all = total;
    return 0;
#else
    (void)mine;
    return slmc_fail(err, NULL, "a job of %d ranks needs MPI", c->size);
#endif
}

int comm_allgather_i32(const comm *c, const int32_t *mine, size_t n, int32_t **all, size_t *n_all, slmc_err *err) {
    void *bytes = NULL;
    size_t n_bytes = 0;
    if (comm_allgather(c, mine, n * sizeof *mine, &bytes, &n_bytes, err) != 0) return -1;
    *all = bytes;
    *n_all = n_bytes / sizeof *mine;
    return 0;
}

int comm_bcast_alloc(const comm *c, void **buf, size_t *bytes, int root, slmc_err *err) {
    if (!c->mpi || c->size == 1) return 0;
    uint64_t n = c->rank == root ? (uint64_t)*bytes : 0;
    if (comm_bcast(c, &n, sizeof n, root, err) != 0) return -1;
    if (c->rank != root) {
        *buf = malloc(n ? (size_t)n : 1);
        *bytes = (size_t)n;
        if (!*buf) return slmc_fail(err, NULL, "out of memory for %llu bytes from rank %d", (unsigned long long)n, root);
    }
    return comm_bcast(c, *buf, (size_t)n, root, err);
}

/* ---------------------------------------------------------------------------------------
 * The tree sum
 * ------------------------------------------------------------------------------------- */

static size_t elem_size(comm_type t) { return t == COMM_F64 ? sizeof(double) : sizeof(float); }

static void *take_vector(comm_sum *s) {
    if (s->n_spare > 0) return s->spare[--s->n_spare];
    return malloc(elem_size(s->type) * (s->len ? s->len : 1));
}

static void give_back(comm_sum *s, void *v) {
    if (s->n_spare < (int)(sizeof s->spare / sizeof *s->spare)) s->spare[s->n_spare++] = v;
    else free(v);
}

/* a[i] = a[i] + b[i], on nt threads (each element is one addition whatever the split) */
static void add_into(comm_type t, void *a, const void *b, size_t len, int nt) {
    if (t == COMM_F64) {
        double *x = a;
        const double *y = b;
#pragma omp parallel for num_threads(nt) schedule(static) if (len > 65536)
        for (size_t i = 0; i < len; i++) x[i] += y[i];
    } else {
        float *x = a;
        const float *y = b;
#pragma omp parallel for num_threads(nt) schedule(static) if (len > 65536)
        for (size_t i = 0; i < len; i++) x[i] += y[i];
    }
}

static void copy_vector(void *dst, const void *src, size_t bytes, int nt) {
    const size_t piece = (bytes + (size_t)nt - 1) / (size_t)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (bytes > (1 << 20))
    for (int t = 0; t < nt; t++) {
        size_t off = (size_t)t * piece;
        if (off < bytes) memcpy((char *)dst + off, (const char *)src + off, bytes - off < piece ? bytes - off : piece);
    }
}

/* Put the subtree (level, start, v) right of the stack's last one, then join every pair of
 * siblings that is complete: the left one starts at a multiple of 2^(level+1). */
static void push_node(comm_sum *s, int level, int64_t start, void *v) {
    while (s->depth > 0) {
        comm_sum_node *top = &s->stack[s->depth - 1];
        int64_t width = (int64_t)1 << level;
        if (top->level != level || top->start + width != start || (top->start & (2 * width - 1)) != 0) break;
        add_into(s->type, top->v, v, s->len, s->n_threads);
        give_back(s, v);
        v = top->v;
        start = top->start;
        level++;
        s->depth--;
    }
    s->stack[s->depth++] = (comm_sum_node){level, start, v};
}

int comm_sum_init(comm_sum *s, const comm *c, comm_type type, size_t len, int64_t n_units, slmc_err *err) {
    memset(s, 0, sizeof *s);
    if (n_units < 0) return slmc_fail(err, NULL, "a sum over %lld units", (long long)n_units);
    s->c = c;
    s->type = type;
    s->len = len;
    s->n = n_units;
    comm_share(c, n_units, c->rank, &s->lo, &s->hi);
    s->next = s->lo;
    s->n_threads = 1;
    return 0;
}

int comm_sum_reset(comm_sum *s, int64_t n_units, slmc_err *err) {
    if (n_units < 0) return slmc_fail(err, NULL, "a sum over %lld units", (long long)n_units);
    for (int i = 0; i < s->depth; i++) give_back(s, s->stack[i].v);
    s->depth = 0;
    s->n = n_units;
    comm_share(s->c, n_units, s->c->rank, &s->lo, &s->hi);
    s->next = s->lo;
    return 0;
}

void comm_sum_set_threads(comm_sum *s, int n_threads) { s->n_threads = n_threads > 0 ? n_threads : 1; }

int comm_sum_add(comm_sum *s, const void *v, slmc_err *err) {
    if (s->next >= s->hi)
        return slmc_fail(err, NULL, "rank %d adds unit %lld, past its share [%lld, %lld)", s->c->rank,
                         (long long)s->next, (long long)s->lo, (long long)s->hi);
    const int64_t u = s->next++;
    /* a right child joins its left sibling at once: add v in place, no copy of it */
    if ((u & 1) && s->depth > 0 && s->stack[s->depth - 1].level == 0 && s->stack[s->depth - 1].start == u - 1) {
        comm_sum_node top = s->stack[--s->depth];
        add_into(s->type, top.v, v, s->len, s->n_threads);
        push_node(s, 1, top.start, top.v);
        return 0;
    }
    void *copy = take_vector(s);
    if (!copy) return slmc_fail(err, NULL, "out of memory for a sum of %zu values", s->len);
    copy_vector(copy, v, elem_size(s->type) * s->len, s->n_threads);
    push_node(s, 0, u, copy);
    return 0;
}

#ifdef SLMC_MPI
/* Ranks 1.. send their subtrees to rank 0, which joins them in rank order. */
static int gather_nodes(comm_sum *s, slmc_err *err) {
    const comm *c = s->c;
    size_t bytes = elem_size(s->type) * s->len;
    if (c->rank != 0) {
        int64_t depth = s->depth;
        if (send_bytes(&depth, sizeof depth, 0, err) != 0) return -1;
        for (int i = 0; i < s->depth; i++) {
            int64_t head[2] = {s->stack[i].level, s->stack[i].start};
            if (send_bytes(head, sizeof head, 0, err) != 0 || send_bytes(s->stack[i].v, bytes, 0, err) != 0)
                return -1;
            give_back(s, s->stack[i].v);
        }
        s->depth = 0;
        return 0;
    }
    for (int r = 1; r < c->size; r++) {
        int64_t depth = 0;
        if (recv_bytes(&depth, sizeof depth, r, err) != 0) return -1;
        for (int64_t i = 0; i < depth; i++) {
            int64_t head[2];
            void *v = take_vector(s);
            if (!v) return slmc_fail(err, NULL, "out of memory for a sum of %zu values", s->len);
            if (recv_bytes(head, sizeof head, r, err) != 0 || recv_bytes(v, bytes, r, err) != 0) {
                free(v);
                return -1;
            }
            push_node(s, (int)head[0], head[1], v);
        }
    }
    return 0;
}
#endif

int comm_sum_finish(comm_sum *s, void *out, slmc_err *err) {
    const comm *c = s->c;
    size_t bytes = elem_size(s->type) * s->len;
    if (s->next != s->hi)
        return slmc_fail(err, NULL, "rank %d finished a sum after %lld of its %lld units", c->rank,
                         (long long)(s->next - s->lo), (long long)(s->hi - s->lo));
#ifdef SLMC_MPI
    if (c->mpi && c->size > 1 && gather_nodes(s, err) != 0) return -1;
#endif
    if (c->rank == 0) {
        /* the stack is now n's binary decomposition, largest block first: the perfect tree
         * with the missing leaves left out is the fold from the right */
        if (s->depth == 0) memset(out, 0, bytes);
        else {
            for (int i = s->depth - 2; i >= 0; i--)
                add_into(s->type, s->stack[i].v, s->stack[i + 1].v, s->len, s->n_threads);
            copy_vector(out, s->stack[0].v, bytes, s->n_threads);
        }
    }
    for (int i = 0; i < s->depth; i++) give_back(s, s->stack[i].v);
    s->depth = 0;
    return comm_bcast(c, out, bytes, 0, err);
}

void comm_sum_take(comm_sum *root, comm_sum *other) {
    for (int i = 0; i < other->depth; i++) push_node(root, other->stack[i].level, other->stack[i].start, other->stack[i].v);
    other->depth = 0;
}

void comm_sum_free(comm_sum *s) {
    for (int i = 0; i < s->depth; i++) free(s->stack[i].v);
    for (int i = 0; i < s->n_spare; i++) free(s->spare[i]);
    s->depth = s->n_spare = 0;
}
