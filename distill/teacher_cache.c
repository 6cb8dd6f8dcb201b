/* teacher_cache.c - the teacher's top-k log-probabilities in HDF5; see teacher_cache.h. */
#include "distill/teacher_cache.h"

#include "distill/h5io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct teacher_cache {
    teacher_cache_info info;
    char *path;        /* the final name */
    char *tmp;         /* path.tmp while writing; NULL when reading */
    hid_t file;
    hid_t ids, logp, rest; /* the datasets */
    uint8_t *have;     /* [n_seq] */
    int32_t *row_ids;  /* [T][k] scratch of one sequence */
    float *row_logp;   /* [T][k] */
    float *row_rest;   /* [T] */
};

enum { M_K, M_T, M_VSHARED, M_NSEQ, M_NTOKENS, M_VT, M_COUNT };

void tcache_topk_row(const float *logits, int V, int k, float tau, int32_t *ids, float *logp, float *logp_rest) {
    const double inv_t = 1.0 / tau;
    double mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = fmax(mx, logits[i] * inv_t);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp(logits[i] * inv_t - mx);
    const double lse = mx + log(sum);
    /* a sorted list of the k best so far (insertion: k is small) */
    int n = 0;
    for (int i = 0; i < V; i++) {
        const float v = logits[i];
        if (n == k && v <= logits[ids[k - 1]]) continue;
        int at = n < k ? n++ : k - 1;
        while (at > 0 && logits[ids[at - 1]] < v) {
            ids[at] = ids[at - 1];
            at--;
        }
        ids[at] = i;
    }
    for (int b = 0; b < k; b++) logp[b] = (float)(logits[ids[b]] * inv_t - lse);
    /* the rest's mass summed directly (1 - kept would lose it to rounding) */
    double rest = 0;
    if (k < V) {
        for (int i = 0; i < V; i++) rest += exp(logits[i] * inv_t - lse);
        for (int b = 0; b < k; b++) rest -= exp(logits[ids[b]] * inv_t - lse);
    }
    *logp_rest = k < V && rest > 0 ? (float)log(rest) : -INFINITY;
}

static void cache_free(teacher_cache *c) {
    if (!c) return;
    if (c->ids >= 0) H5Dclose(c->ids);
    if (c->logp >= 0) H5Dclose(c->logp);
    if (c->rest >= 0) H5Dclose(c->rest);
    if (c->file >= 0) H5Fclose(c->file);
    free(c->path);
    free(c->tmp);
    free(c->have);
    free(c->row_ids);
    free(c->row_logp);
    free(c->row_rest);
    free(c);
}

static teacher_cache *cache_new(const char *path, const teacher_cache_info *info) {
    teacher_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->file = c->ids = c->logp = c->rest = -1;
    if (info) c->info = *info;
    c->path = strdup(path);
    if (!c->path) { cache_free(c); return NULL; }
    return c;
}

static int alloc_rows(teacher_cache *c) {
    const size_t T = (size_t)c->info.T, k = (size_t)c->info.k;
    c->have = calloc((size_t)(c->info.n_seq > 0 ? c->info.n_seq : 1), 1);
    c->row_ids = malloc(sizeof(int32_t) * T * k);
    c->row_logp = malloc(sizeof(float) * T * k);
    c->row_rest = malloc(sizeof(float) * T);
    return c->have && c->row_ids && c->row_logp && c->row_rest ? 0 : -1;
}

/* A dataset of n_seq chunks of one sequence each, deflate-compressed. */
static hid_t create_seq_dataset(hid_t f, const char *name, hid_t type, int64_t n_seq, hsize_t per_seq_a,
                                hsize_t per_seq_b) {
    const int rank = per_seq_b ? 3 : 2;
    hsize_t dims[3] = {(hsize_t)n_seq, per_seq_a, per_seq_b}, chunk[3] = {1, per_seq_a, per_seq_b};
    hid_t sp = H5Screate_simple(rank, dims, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;
    if (sp >= 0 && pl >= 0 && H5Pset_chunk(pl, rank, chunk) >= 0 && H5Pset_shuffle(pl) >= 0 && H5Pset_deflate(pl, 4) >= 0 &&
        H5Pset_obj_track_times(pl, 0) >= 0) /* no modification times: the same cache is the same bytes */
        d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    if (pl >= 0) H5Pclose(pl);
    if (sp >= 0) H5Sclose(sp);
    return d;
}

int tcache_create(teacher_cache **out, const char *path, const teacher_cache_info *info, slmc_err *err) {
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* HDF5 errors come back as values, unprinted */
    if (info->k < 1 || info->k > info->V_shared || info->T < 1 || info->n_seq < 1)
        return slmc_fail(err, path, "a teacher cache needs 1 <= k <= %d ids (k = %d), positions and sequences",
                         info->V_shared, info->k);
    teacher_cache *c = cache_new(path, info);
    if (!c || alloc_rows(c) != 0) { cache_free(c); return slmc_fail(err, path, "out of memory"); }
    size_t n = strlen(path) + 8;
    c->tmp = malloc(n);
    if (!c->tmp) { cache_free(c); return slmc_fail(err, path, "out of memory"); }
    snprintf(c->tmp, n, "%s.tmp", path);
    c->file = h5_create_file(c->tmp);
    if (c->file < 0) {
        int rc = slmc_fail(err, path, "cannot create the teacher cache %s", c->tmp);
        cache_free(c);
        return rc;
    }
    c->ids = create_seq_dataset(c->file, "ids", H5T_NATIVE_INT32, info->n_seq, (hsize_t)info->T, (hsize_t)info->k);
    c->logp = create_seq_dataset(c->file, "logp", H5T_NATIVE_FLOAT, info->n_seq, (hsize_t)info->T, (hsize_t)info->k);
    c->rest = create_seq_dataset(c->file, "logp_rest", H5T_NATIVE_FLOAT, info->n_seq, (hsize_t)info->T, 0);
    if (c->ids < 0 || c->logp < 0 || c->rest < 0) {
        remove(c->tmp);
        cache_free(c);
        return slmc_fail(err, path, "cannot create the teacher cache's datasets (HDF5 without deflate?)");
    }
    *out = c;
    return 0;
}

/* Select sequence seq of a [n_seq][a][b] (or [n_seq][a]) dataset and move one sequence. */
static int seq_io(hid_t d, hid_t type, int64_t seq, hsize_t a, hsize_t b, void *buf, bool write) {
    const int rank = b ? 3 : 2;
    hsize_t start[3] = {(hsize_t)seq, 0, 0}, count[3] = {1, a, b};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    int rc = -1;
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
        rc = (write ? H5Dwrite(d, type, ms, fs, H5P_DEFAULT, buf) : H5Dread(d, type, ms, fs, H5P_DEFAULT, buf)) >= 0 ? 0 : -1;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

int tcache_put(teacher_cache *c, int64_t seq, const float *logits, slmc_err *err) {
    const teacher_cache_info *in = &c->info;
    if (!c->tmp) return slmc_fail(err, c->path, "the teacher cache is open for reading");
    if (seq < 0 || seq >= in->n_seq) return slmc_fail(err, c->path, "sequence %lld is outside the cache's %lld", (long long)seq, (long long)in->n_seq);
    if (c->have[seq]) return 0;
    for (int t = 0; t < in->T; t++)
        tcache_topk_row(logits + (size_t)t * (size_t)in->n_vocab_teacher, in->V_shared, in->k, in->tau,
                        c->row_ids + (size_t)t * in->k, c->row_logp + (size_t)t * in->k, c->row_rest + t);
    if (seq_io(c->ids, H5T_NATIVE_INT32, seq, (hsize_t)in->T, (hsize_t)in->k, c->row_ids, true) != 0 ||
        seq_io(c->logp, H5T_NATIVE_FLOAT, seq, (hsize_t)in->T, (hsize_t)in->k, c->row_logp, true) != 0 ||
        seq_io(c->rest, H5T_NATIVE_FLOAT, seq, (hsize_t)in->T, 0, c->row_rest, true) != 0)
        return slmc_fail(err, c->path, "cannot write sequence %lld to the teacher cache (disk full?)", (long long)seq);
    c->have[seq] = 1;
    return 0;
}

int tcache_finish(teacher_cache *c, slmc_err *err) {
    const teacher_cache_info *in = &c->info;
    const int64_t meta[M_COUNT] = {in->k, in->T, in->V_shared, in->n_seq, in->n_tokens, in->n_vocab_teacher};
    int rc = h5_write_1d(c->file, "have", H5T_NATIVE_UINT8, (hsize_t)in->n_seq, c->have) == 0 &&
                     h5_write_1d(c->file, "meta", H5T_NATIVE_INT64, M_COUNT, meta) == 0 &&
                     h5_write_1d(c->file, "tau", H5T_NATIVE_FLOAT, 1, &in->tau) == 0 &&
                     h5_write_1d(c->file, "data_hash", H5T_NATIVE_UINT64, 1, &in->data_hash) == 0
                 ? 0 : -1;
    H5Dclose(c->ids), H5Dclose(c->logp), H5Dclose(c->rest);
    c->ids = c->logp = c->rest = -1;
    if (H5Fclose(c->file) < 0) rc = -1;
    c->file = -1;
    if (rc == 0 && rename(c->tmp, c->path) != 0) rc = -1;
    if (rc != 0) {
        remove(c->tmp);
        slmc_fail(err, c->path, "cannot write the teacher cache (disk full?)");
    }
    cache_free(c);
    return rc;
}

/* The [n_seq][a][b] dataset `name` exists with exactly that shape. */
static hid_t open_seq_dataset(hid_t f, const char *name, int64_t n_seq, hsize_t a, hsize_t b, const char *path,
                              slmc_err *err) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) { slmc_fail(err, path, "has no dataset '%s': not a slmc teacher cache", name); return -1; }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[3] = {0, 0, 0};
    const int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank >= 1 && rank <= 3) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (rank != (b ? 3 : 2) || dims[0] != (hsize_t)n_seq || dims[1] != a || (b && dims[2] != b)) {
        H5Dclose(d);
        slmc_fail(err, path, "dataset '%s' does not have the shape its meta says", name);
        return -1;
    }
    return d;
}

int tcache_open(teacher_cache **out, const char *path, slmc_err *err) {
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    teacher_cache *c = cache_new(path, NULL);
    if (!c) return slmc_fail(err, path, "out of memory");
    c->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (c->file < 0) { cache_free(c); return slmc_fail(err, path, "cannot open as HDF5"); }
    int64_t meta[M_COUNT];
    teacher_cache_info *in = &c->info;
    if (h5_read_1d(c->file, "meta", H5T_NATIVE_INT64, M_COUNT, meta, path, "a slmc teacher cache", err) != 0 ||
        h5_read_1d(c->file, "tau", H5T_NATIVE_FLOAT, 1, &in->tau, path, "a slmc teacher cache", err) != 0 ||
        h5_read_1d(c->file, "data_hash", H5T_NATIVE_UINT64, 1, &in->data_hash, path, "a slmc teacher cache", err) != 0) {
        cache_free(c);
        return -1;
    }
    in->k = (int)meta[M_K], in->T = (int)meta[M_T], in->V_shared = (int)meta[M_VSHARED];
    in->n_seq = meta[M_NSEQ], in->n_tokens = meta[M_NTOKENS], in->n_vocab_teacher = meta[M_VT];
    if (in->k < 1 || in->k > in->V_shared || in->T < 1 || in->n_seq < 1 || in->n_seq > ((int64_t)1 << 40) ||
        meta[M_K] > (1 << 20) || meta[M_T] > (1 << 24) || !(in->tau > 0)) {
        cache_free(c);
        return slmc_fail(err, path, "teacher cache meta out of range (k %lld, T %lld, %lld sequences)", (long long)meta[M_K],
                         (long long)meta[M_T], (long long)meta[M_NSEQ]);
    }
    if (alloc_rows(c) != 0) { cache_free(c); return slmc_fail(err, path, "out of memory"); }
    if (h5_read_1d(c->file, "have", H5T_NATIVE_UINT8, (hsize_t)in->n_seq, c->have, path, "a slmc teacher cache", err) != 0 ||
        (c->ids = open_seq_dataset(c->file, "ids", in->n_seq, (hsize_t)in->T, (hsize_t)in->k, path, err)) < 0 ||
        (c->logp = open_seq_dataset(c->file, "logp", in->n_seq, (hsize_t)in->T, (hsize_t)in->k, path, err)) < 0 ||
        (c->rest = open_seq_dataset(c->file, "logp_rest", in->n_seq, (hsize_t)in->T, 0, path, err)) < 0) {
        cache_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

const teacher_cache_info *tcache_info(const teacher_cache *c) { return &c->info; }

int tcache_get(teacher_cache *c, int64_t seq, int32_t *ids, float *logp, float *logp_rest, slmc_err *err) {
    const teacher_cache_info *in = &c->info;
    if (seq < 0 || seq >= in->n_seq || !c->have[seq])
        return slmc_fail(err, c->path, "holds no teacher output for training sequence %lld (the saving run never drew "
                                       "it: train with the same --data, --seq-len, --seed and no more steps)",
                         (long long)seq);
    if (seq_io(c->ids, H5T_NATIVE_INT32, seq, (hsize_t)in->T, (hsize_t)in->k, ids, false) != 0 ||
        seq_io(c->logp, H5T_NATIVE_FLOAT, seq, (hsize_t)in->T, (hsize_t)in->k, logp, false) != 0 ||
        seq_io(c->rest, H5T_NATIVE_FLOAT, seq, (hsize_t)in->T, 0, logp_rest, false) != 0)
        return slmc_fail(err, c->path, "cannot read training sequence %lld", (long long)seq);
    const size_t n = (size_t)in->T * in->k;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= in->V_shared || !(logp[i] <= 0))
            return slmc_fail(err, c->path, "sequence %lld holds an id or log-probability out of range", (long long)seq);
    return 0;
}

void tcache_close(teacher_cache *c) {
    if (c && c->tmp) {
        if (c->ids >= 0) H5Dclose(c->ids), c->ids = -1;
        if (c->logp >= 0) H5Dclose(c->logp), c->logp = -1;
        if (c->rest >= 0) H5Dclose(c->rest), c->rest = -1;
        if (c->file >= 0) H5Fclose(c->file), c->file = -1;
        remove(c->tmp);
    }
    cache_free(c);
}
