/* logits_store.c - HDF5 storage of base log-probabilities (see logits_store.h). */
#include "logits_store.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/perplexity.h"
#include "formats/fileio.h"

#define STORE_FORMAT "slmc-kld-base"
#define STORE_VERSION 1

static void silence_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); } /* errors come back as values */

static int put_attr_i64(hid_t obj, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int get_attr_i64(hid_t obj, const char *name, int64_t *v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Aread(a, H5T_NATIVE_INT64, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int put_attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s));
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, s) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static hid_t make_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *chunk) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, rank, chunk);
    H5Pset_shuffle(pl); /* byte shuffle: the high bytes of the uint16 rows compress well */
    H5Pset_deflate(pl, 4);
    H5Pset_obj_track_times(pl, 0); /* no timestamps: the same run gives the same bytes */
    hid_t d = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return d;
}

void logits_store_close(logits_store *s) {
    if (s->d_tokens > 0) H5Dclose((hid_t)s->d_tokens);
    if (s->d_rows > 0) H5Dclose((hid_t)s->d_rows);
    if (s->file > 0) H5Fclose((hid_t)s->file);
    if (s->tmp_path) unlink(s->tmp_path);
    free(s->tmp_path);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int logits_store_create(logits_store *s, const char *path, int n_ctx, int64_t n_vocab, int n_chunk, int n_scored,
                        slmc_err *err) {
    memset(s, 0, sizeof *s);
    silence_hdf5();
    s->n_ctx = n_ctx;
    s->n_vocab = n_vocab;
    s->n_chunk = n_chunk;
    s->n_scored = n_scored;
    s->n_u16 = (int64_t)kld_row_u16(n_vocab);
    s->path = strdup(path);
    size_t n = strlen(path) + 16;
    s->tmp_path = malloc(n);
    if (!s->path || !s->tmp_path) { logits_store_close(s); return slmc_fail(err, path, "out of memory"); }
    snprintf(s->tmp_path, n, "%s.tmp%d", path, (int)getpid());
    hid_t f = H5Fcreate(s->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) { logits_store_close(s); return slmc_fail(err, path, "cannot create the HDF5 file"); }
    s->file = f;
    hsize_t tdims[1] = {(hsize_t)n_chunk * (hsize_t)n_ctx}, tchunk[1] = {(hsize_t)n_ctx};
    hsize_t rdims[2] = {(hsize_t)n_chunk * (hsize_t)n_scored, (hsize_t)s->n_u16};
    hsize_t rchunk[2] = {(hsize_t)n_scored, (hsize_t)s->n_u16};
    s->d_tokens = make_dataset(f, "tokens", H5T_STD_I32LE, 1, tdims, tchunk);
    s->d_rows = make_dataset(f, "logprobs", H5T_STD_U16LE, 2, rdims, rchunk);
    if (s->d_tokens < 0 || s->d_rows < 0 || put_attr_str(f, "format", STORE_FORMAT) || put_attr_i64(f, "version", STORE_VERSION) ||
        put_attr_i64(f, "n_ctx", n_ctx) || put_attr_i64(f, "n_vocab", n_vocab) || put_attr_i64(f, "n_chunk", n_chunk) ||
        put_attr_i64(f, "n_scored", n_scored)) {
        logits_store_close(s);
        return slmc_fail(err, path, "cannot write the HDF5 datasets");
    }
    return 0;
}

/* Select rows [r0, r0+nr) of a dataset of `rank` 1 or 2; returns the file space. */
static hid_t select_rows(hid_t d, int rank, hsize_t r0, hsize_t nr, hsize_t width) {
    hid_t sp = H5Dget_space(d);
    hsize_t start[2] = {r0, 0}, count[2] = {nr, width};
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
    (void)rank;
    return sp;
}

static int io_rows(logits_store *s, int c, int32_t *tokens, uint16_t *rows, bool write, slmc_err *err) {
    if (c < 0 || c >= s->n_chunk) return slmc_fail(err, s->path, "chunk %d out of range (%d chunks)", c, s->n_chunk);
    hsize_t tcount[1] = {(hsize_t)s->n_ctx}, rcount[2] = {(hsize_t)s->n_scored, (hsize_t)s->n_u16};
    hid_t tmem = H5Screate_simple(1, tcount, NULL), rmem = H5Screate_simple(2, rcount, NULL);
    hid_t tsp = select_rows((hid_t)s->d_tokens, 1, (hsize_t)c * (hsize_t)s->n_ctx, (hsize_t)s->n_ctx, 1);
    hid_t rsp = select_rows((hid_t)s->d_rows, 2, (hsize_t)c * (hsize_t)s->n_scored, (hsize_t)s->n_scored, (hsize_t)s->n_u16);
    herr_t a, b;
    if (write) {
        a = H5Dwrite((hid_t)s->d_tokens, H5T_NATIVE_INT32, tmem, tsp, H5P_DEFAULT, tokens);
        b = H5Dwrite((hid_t)s->d_rows, H5T_NATIVE_UINT16, rmem, rsp, H5P_DEFAULT, rows);
    } else {
        a = H5Dread((hid_t)s->d_tokens, H5T_NATIVE_INT32, tmem, tsp, H5P_DEFAULT, tokens);
        b = H5Dread((hid_t)s->d_rows, H5T_NATIVE_UINT16, rmem, rsp, H5P_DEFAULT, rows);
    }
    H5Sclose(tmem); H5Sclose(rmem); H5Sclose(tsp); H5Sclose(rsp);
    if (a < 0 || b < 0) return slmc_fail(err, s->path, "HDF5 %s of chunk %d failed", write ? "write" : "read", c);
    return 0;
}

int logits_store_put(logits_store *s, int c, const int32_t *tokens, const uint16_t *rows, slmc_err *err) {
    return io_rows(s, c, (int32_t *)tokens, (uint16_t *)rows, true, err);
}

int logits_store_get(logits_store *s, int c, int32_t *tokens, uint16_t *rows, slmc_err *err) {
    return io_rows(s, c, tokens, rows, false, err);
}

int logits_store_finish(logits_store *s, slmc_err *err) {
    H5Dclose((hid_t)s->d_tokens);
    H5Dclose((hid_t)s->d_rows);
    s->d_tokens = s->d_rows = 0;
    herr_t rc = H5Fclose((hid_t)s->file);
    s->file = 0;
    if (rc < 0) { logits_store_close(s); return slmc_fail(err, s->path, "closing the HDF5 file failed"); }
    if (rename(s->tmp_path, s->path) != 0) {
        int r = slmc_fail(err, s->path, "cannot rename the temporary file into place");
        logits_store_close(s);
        return r;
    }
    free(s->tmp_path);
    s->tmp_path = NULL;
    logits_store_close(s);
    return 0;
}

int logits_store_open(logits_store *s, const char *path, slmc_err *err) {
    memset(s, 0, sizeof *s);
    silence_hdf5();
    s->path = strdup(path);
    if (!s->path) return slmc_fail(err, path, "out of memory");
    if (H5Fis_hdf5(path) <= 0) {
        logits_store_close(s);
        return slmc_fail(err, path, "not an HDF5 file (expected one written by slmc eval --save-logits)");
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) { logits_store_close(s); return slmc_fail(err, path, "cannot open the HDF5 file"); }
    s->file = f;
    int64_t version, n_ctx, n_vocab, n_chunk, n_scored;
    if (get_attr_i64(f, "version", &version) || version != STORE_VERSION || get_attr_i64(f, "n_ctx", &n_ctx) ||
        get_attr_i64(f, "n_vocab", &n_vocab) || get_attr_i64(f, "n_chunk", &n_chunk) ||
        get_attr_i64(f, "n_scored", &n_scored) || n_ctx <= 0 || n_ctx > (1 << 24) || n_vocab <= 0 ||
        n_chunk <= 0 || n_scored != ppl_scored((int)n_ctx)) {
        logits_store_close(s);
        return slmc_fail(err, path, "missing or bad attributes: not a slmc logits file");
    }
    s->n_ctx = (int)n_ctx;
    s->n_vocab = n_vocab;
    s->n_chunk = (int)n_chunk;
    s->n_scored = (int)n_scored;
    s->n_u16 = (int64_t)kld_row_u16(n_vocab);
    s->d_tokens = H5Dopen2(f, "tokens", H5P_DEFAULT);
    s->d_rows = H5Dopen2(f, "logprobs", H5P_DEFAULT);
    if (s->d_tokens < 0 || s->d_rows < 0) {
        logits_store_close(s);
        return slmc_fail(err, path, "missing datasets /tokens or /logprobs");
    }
    /* the datasets must have the shapes the attributes promise */
    hsize_t td[1], rd[2];
    hid_t sp = H5Dget_space((hid_t)s->d_tokens);
    int ok = H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, td, NULL) == 1 &&
             td[0] == (hsize_t)n_chunk * (hsize_t)n_ctx;
    H5Sclose(sp);
    sp = H5Dget_space((hid_t)s->d_rows);
    ok = ok && H5Sget_simple_extent_ndims(sp) == 2 && H5Sget_simple_extent_dims(sp, rd, NULL) == 2 &&
         rd[0] == (hsize_t)n_chunk * (hsize_t)n_scored && rd[1] == (hsize_t)s->n_u16;
    H5Sclose(sp);
    if (!ok) {
        logits_store_close(s);
        return slmc_fail(err, path, "dataset shapes do not match its attributes");
    }
    return 0;
}
