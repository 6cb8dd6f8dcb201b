/* quantize.c - the streaming, parallel quantizer (see quantize.h). */
#include "quantize.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/gguf.h"
#include "codec/quants.h"

#define CHUNK_F32_BYTES (16u << 20) /* rows per chunk: about this many bytes of F32 */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t quant_plan_bytes(const model *m, const int *types) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        n += type_nbytes(types[i], t->ne[0] * model_tensor_rows(t));
    }
    return n;
}

/* Every target's type must accept the tensor: a whole number of blocks per row and kernels. */
static int check_plan(const model *m, const quant_target *tg, const quantize_opts *o, slmc_err *err) {
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        int ty = tg->types[i];
        if (ty == t->type) continue; /* copied as is */
        if (!quant_get(ty))
            return slmc_fail(err, tg->path, "tensor %s: no quantizer for type %s", t->name, type_name(ty));
        if (type_nbytes(ty, t->ne[0]) == 0)
            return slmc_fail(err, tg->path, "tensor %s: row length %lld is not a multiple of %s's block of %lld",
                             t->name, (long long)t->ne[0], type_name(ty), (long long)type_get(ty)->blck_size);
        if (!type_is_float(t->type)) {
            if (!o || !o->allow_requantize)
                return slmc_fail(err, m->path,
                                 "tensor %s is already %s: requantizing compounds the error; pass --allow-requantize to do it anyway",
                                 t->name, type_name(t->type));
            if (!quant_get(t->type))
                return slmc_fail(err, m->path, "tensor %s: cannot dequantize type %s", t->name, type_name(t->type));
        }
    }
    return 0;
}

/* Index of the first value of x[0..n) that is NaN or Inf, or -1. Reads the exponent bits, so
 * the compiler can check many values at once. */
static int64_t first_nonfinite(const float *x, int64_t n) {
    const uint32_t *u = (const uint32_t *)x;
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t i1 = i0 + 256 < n ? i0 + 256 : n;
        uint32_t any = 0;
#pragma omp simd reduction(| : any)
        for (int64_t i = i0; i < i1; i++) any |= (u[i] & 0x7f800000u) == 0x7f800000u;
        if (any)
            for (int64_t i = i0; i < i1; i++)
                if (!isfinite(x[i])) return i;
    }
    return -1;
}

/* Rows of out (nr rows of type, n values each) that dequantize to a non-finite value: the first
 * such row, or -1. check holds one row of floats. */
static int64_t first_bad_row_serial(int type, const uint8_t *out, int64_t n, int64_t nr, float *check) {
    uint64_t rb = type_nbytes(type, n);
    for (int64_t r = 0; r < nr; r++)
        if (quant_row_finite(type, out + (uint64_t)r * rb, n, check) != 1) return r;
    return -1;
}

/* The same, in parallel over rows (for the whole-tensor path). */
static int64_t first_bad_row(int type, const uint8_t *out, int64_t n, int64_t nr) {
    int64_t bad = -1;
#pragma omp parallel
    {
        float *check = malloc((size_t)n * sizeof *check);
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t a = nr * me / nt, b = nr * (me + 1) / nt;
        int64_t r = check ? first_bad_row_serial(type, out + type_nbytes(type, n) * (uint64_t)a, n, b - a, check) : 0;
        if (r >= 0) {
#pragma omp critical
            if (bad < 0 || a + r < bad) bad = a + r;
        }
        free(check);
    }
    return bad;
}

/* ---- the streaming loop ---------------------------------------------------------------------
 * A tensor goes through in chunks of rows. Each chunk is read (as F32 when some target changes
 * its type, checked finite), quantized for every target and checked, in parallel over small
 * pieces of rows; while that runs, one thread writes the previous chunk, so the copy into the
 * page cache overlaps the arithmetic. Two sets of output buffers take turns. */

typedef struct stream {
    const model *m;
    const quant_target *targets;
    int n_targets;
    const quant_tensor_hook *hook;
    const float *const *importance; /* [n_tensors] imatrix columns or NULL entries; may be NULL */
    gguf_writer *w;
    float *f;          /* [chunk rows][ne0] F32 rows of the chunk being computed */
    uint8_t **buf[2];  /* [2][n_targets] output bytes: one set filled, the other written */
    float **check;     /* [threads][max ne0] one dequantized row per thread, for the check */
    bool overlap;      /* write while computing (not when the hook watches writes: GPTQ) */
} stream;

/* A chunk computed into buf[set] and not yet written. */
typedef struct pending {
    bool has;
    int set;
    uint64_t ti;
    int64_t r0, nr;
    bool last; /* the tensor's last chunk: release its source after the write */
} pending;

/* Write a pending chunk to every target, tell the hook, release its source rows. */
static int flush_chunk(stream *st, pending *p, slmc_err *err) {
    if (!p->has) return 0;
    p->has = false;
    const model_tensor *t = &st->m->tensors[p->ti];
    for (int g = 0; g < st->n_targets; g++) {
        int ty = st->targets[g].types[p->ti];
        uint64_t nbytes = type_nbytes(ty, t->ne[0]) * (uint64_t)p->nr;
        if (gguf_writer_write(&st->w[g], st->buf[p->set][g], (size_t)nbytes, err) != 0) return -1;
        if (st->hook && st->hook->written &&
            st->hook->written(st->hook->ud, g, p->ti, ty, p->r0, p->nr, st->buf[p->set][g], err) != 0)
            return -1;
    }
    if (t->qk_heads == 0) model_release_rows(st->m, t, p->r0, p->nr);
    if (p->last) model_release_source(st->m, t);
    return 0;
}

/* First failure of a chunk, by row (so the message is the one a serial loop would give). */
typedef struct chunk_fail {
    int64_t bad_in;         /* first row with NaN/Inf input, or -1 */
    int bad_g;              /* first target (then first row) quantized to NaN/Inf, or -1 */
    int64_t bad_out;
    bool read_failed;
    slmc_err read_err;
} chunk_fail;

/* Rows [a, b) of the chunk starting at r0 (pieces never overlap, so no locking but for failures). */
static void compute_piece(stream *st, uint64_t ti, int64_t r0, int64_t a, int64_t b, bool need_f32, int set,
                          const float *imp, float *check, chunk_fail *cf) {
    const model *m = st->m;
    const model_tensor *t = &m->tensors[ti];
    const int64_t ne0 = t->ne[0];
    float *f = st->f + a * ne0;
    slmc_err e = {0};
    if (need_f32) {
        if (model_read_rows_f32(m, ti, r0 + a, b - a, f, &e) != 0) {
#pragma omp critical(quant_fail)
            if (!cf->read_failed) { cf->read_failed = true; cf->read_err = e; }
            return;
        }
        int64_t i = first_nonfinite(f, (b - a) * ne0);
        if (i >= 0) {
#pragma omp critical(quant_fail)
            if (cf->bad_in < 0 || a + i / ne0 < cf->bad_in) cf->bad_in = a + i / ne0;
            return;
        }
    }
    for (int g = 0; g < st->n_targets; g++) {
        int ty = st->targets[g].types[ti];
        uint64_t rb = type_nbytes(ty, ne0);
        uint8_t *out = st->buf[set][g] + rb * (uint64_t)a;
        if (ty == t->type) { /* copy as is */
            if (model_read_rows(m, ti, r0 + a, b - a, out, &e) != 0) {
#pragma omp critical(quant_fail)
                if (!cf->read_failed) { cf->read_failed = true; cf->read_err = e; }
                return;
            }
            continue;
        }
        const quant_kernels *k = quant_get(ty);
        for (int64_t r = 0; r < b - a; r++) {
            if (imp) k->quantize_weighted(f + r * ne0, out + rb * (uint64_t)r, ne0, imp);
            else k->quantize(f + r * ne0, out + rb * (uint64_t)r, ne0);
        }
        /* the dequantized rows must be finite (catches NaN/Inf scales) */
        int64_t bad = first_bad_row_serial(ty, out, ne0, b - a, check);
        if (bad >= 0) {
#pragma omp critical(quant_fail)
            if (cf->bad_g < 0 || g < cf->bad_g || (g == cf->bad_g && a + bad < cf->bad_out)) {
                cf->bad_g = g;
                cf->bad_out = a + bad;
            }
        }
    }
}

/* Compute chunk [r0, r0+nr) of tensor ti into buf[set]; meanwhile write `prev` (when overlapping).
 * A failure of either is returned after both have stopped. */
static int compute_chunk(stream *st, uint64_t ti, int64_t r0, int64_t nr, int set, pending *prev, slmc_err *err) {
    const model *m = st->m;
    const model_tensor *t = &m->tensors[ti];
    const int64_t ne0 = t->ne[0];
    bool need_f32 = false;
    for (int g = 0; g < st->n_targets; g++) need_f32 |= st->targets[g].types[ti] != t->type;
    chunk_fail cf = {.bad_in = -1, .bad_g = -1, .bad_out = -1, .read_failed = false};
    int flush_rc = 0;
    slmc_err flush_err = {0};
    const int64_t piece = ne0 >= 32768 ? 1 : 32768 / ne0; /* rows per piece: about 32K values */
    const int64_t n_pieces = (nr + piece - 1) / piece;
    const float *importance = st->importance ? st->importance[ti] : NULL;
#pragma omp parallel
    {
        if (st->overlap) {
#pragma omp single nowait
            flush_rc = flush_chunk(st, prev, &flush_err);
        }
        float *check = st->check[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < n_pieces; p++) {
            int64_t a = p * piece, b = a + piece < nr ? a + piece : nr;
            compute_piece(st, ti, r0, a, b, need_f32, set, importance, check, &cf);
        }
    }
    if (!st->overlap) flush_rc = flush_chunk(st, prev, &flush_err);
    if (flush_rc != 0) { *err = flush_err; return -1; }
    if (cf.read_failed) { *err = cf.read_err; return -1; }
    if (cf.bad_in >= 0)
        return slmc_fail(err, m->path, "tensor %s row %lld has NaN or Inf values", t->name, (long long)(r0 + cf.bad_in));
    if (cf.bad_g >= 0)
        return slmc_fail(err, st->targets[cf.bad_g].path, "tensor %s row %lld: %s quantization gave NaN or Inf",
                         t->name, (long long)(r0 + cf.bad_out), type_name(st->targets[cf.bad_g].types[ti]));
    return 0;
}

/* A tensor the whole-tensor hook wants: read it whole as F32, let the hook quantize it for every
 * target that changes its type (copy it as is for the others), check and write. */
static int write_whole_tensor(const model *m, uint64_t ti, const quant_target *targets, int n_targets,
                              const quant_tensor_hook *hook, gguf_writer *w, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    size_t nval = (size_t)rows * (size_t)ne0;
    float *f = malloc(nval * sizeof *f);
    uint8_t *raw = malloc(nval * 4); /* one target's bytes (at most 4 per element) */
    int rc = -1;
    if (!f || !raw) { slmc_fail(err, m->path, "tensor %s: out of memory", t->name); goto done; }
    if (model_read_rows_f32(m, ti, 0, rows, f, err) != 0) goto done;
    int64_t bad_in = first_nonfinite(f, (int64_t)nval);
    if (bad_in >= 0) {
        slmc_fail(err, m->path, "tensor %s row %lld has NaN or Inf values", t->name, (long long)(bad_in / ne0));
        goto done;
    }
    for (int g = 0; g < n_targets; g++) {
        int ty = targets[g].types[ti];
        uint64_t nbytes = type_nbytes(ty, ne0) * (uint64_t)rows;
        if (ty == t->type) {
            if (model_read_rows(m, ti, 0, rows, raw, err) != 0) goto done;
        } else {
            if (hook->quantize(hook->ud, ti, ty, f, rows, ne0, raw, err) != 0) goto done;
            int64_t bad = first_bad_row(ty, raw, ne0, rows);
            if (bad >= 0) {
                slmc_fail(err, targets[g].path, "tensor %s row %lld: %s quantization gave NaN or Inf", t->name,
                          (long long)bad, type_name(ty));
                goto done;
            }
        }
        if (gguf_writer_write(&w[g], raw, (size_t)nbytes, err) != 0) goto done;
        if (hook->written && hook->written(hook->ud, g, ti, ty, 0, rows, raw, err) != 0) goto done;
    }
    rc = 0;
done:
    free(f);
    free(raw);
    return rc;
}

int quantize_model(const model *m, const quant_target *targets, int n_targets, const quantize_opts *o,
                   quant_stats *stats, const slmc_progress *progress, slmc_err *err) {
    double t0 = now_seconds();
    uint64_t n = m->n_tensors;
    for (int g = 0; g < n_targets; g++)
        if (check_plan(m, &targets[g], o, err) != 0) return -1;
    const int n_threads = omp_get_max_threads();
    const quant_tensor_hook *hook = o ? o->tensor_hook : NULL;
    stream st = {.m = m, .targets = targets, .n_targets = n_targets, .hook = hook,
                 .importance = o ? o->importance : NULL, .overlap = !(hook && hook->written)};
    uint64_t *order = model_gguf_order(m);
    bool *opened = calloc((size_t)n_targets, sizeof *opened);
    gguf_tensor_info *infos = calloc(n ? n : 1, sizeof *infos);
    st.w = calloc((size_t)n_targets, sizeof *st.w);
    st.buf[0] = calloc((size_t)n_targets, sizeof *st.buf[0]);
    st.buf[1] = calloc((size_t)n_targets, sizeof *st.buf[1]);
    st.check = calloc((size_t)n_threads, sizeof *st.check);
    pending prev = {.has = false};
    int rc = -1;
    if (!order || !opened || !infos || !st.w || !st.buf[0] || !st.buf[1] || !st.check) {
        slmc_fail(err, m->path, "out of memory");
        goto done;
    }
    if (stats) memset(stats, 0, sizeof *stats * (size_t)n_targets);

    /* chunk size: at least one row of the widest tensor */
    int64_t max_ne0 = 1;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (m->tensors[i].ne[0] > max_ne0) max_ne0 = m->tensors[i].ne[0];
        total += m->tensors[i].nbytes;
    }
    uint64_t chunk_bytes = (uint64_t)max_ne0 * 4 > CHUNK_F32_BYTES ? (uint64_t)max_ne0 * 4 : CHUNK_F32_BYTES;
    st.f = malloc(chunk_bytes);
    if (!st.f) { slmc_fail(err, m->path, "out of memory"); goto done; }
    for (int g = 0; g < n_targets; g++) /* any row is at most 4 bytes per value, as the F32 chunk */
        for (int set = 0; set < 2; set++)
            if (!(st.buf[set][g] = malloc(chunk_bytes))) { slmc_fail(err, m->path, "out of memory"); goto done; }
    for (int th = 0; th < n_threads; th++)
        if (!(st.check[th] = malloc((size_t)max_ne0 * sizeof(float)))) {
            slmc_fail(err, m->path, "out of memory");
            goto done;
        }

    /* open every writer: header with the planned types */
    for (int g = 0; g < n_targets; g++) {
        meta kv;
        if (model_gguf_meta(&kv, m, targets[g].file_type) != 0 ||
            meta_set_u32(&kv, "general.quantization_version", 2) != 0) {
            meta_free(&kv);
            slmc_fail(err, targets[g].path, "out of memory");
            goto done;
        }
        for (uint64_t i = 0; i < n; i++) {
            const model_tensor *t = &m->tensors[order[i]];
            infos[i].name = t->name;
            infos[i].type = targets[g].types[order[i]];
            infos[i].n_dims = t->n_dims;
            for (int d = 0; d < MODEL_MAX_DIMS; d++) infos[i].ne[d] = t->ne[d];
        }
        int orc = gguf_writer_open(&st.w[g], targets[g].path, &kv, infos, n, err);
        meta_free(&kv);
        if (orc != 0) goto done;
        opened[g] = true;
    }

    uint64_t done_bytes = 0;
    int set = 0;
    for (uint64_t oi = 0; oi < n; oi++) {
        uint64_t ti = order[oi];
        const model_tensor *t = &m->tensors[ti];
        if (progress && progress->fn) progress->fn(progress->ud, done_bytes, total, t->name);
        int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
        int64_t chunk_rows = (int64_t)(chunk_bytes / ((uint64_t)ne0 * 4));
        if (chunk_rows < 1) chunk_rows = 1;
        bool need_f32 = false;
        for (int g = 0; g < n_targets; g++) need_f32 |= targets[g].types[ti] != t->type;
        if (need_f32 && hook && hook->wants(hook->ud, ti)) {
            /* the whole tensor goes through the hook; earlier chunks are written first */
            if (flush_chunk(&st, &prev, err) != 0 || write_whole_tensor(m, ti, targets, n_targets, hook, st.w, err) != 0)
                goto done;
        } else {
            for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
                int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
                if (compute_chunk(&st, ti, r0, nr, set, &prev, err) != 0) goto done;
                prev = (pending){.has = true, .set = set, .ti = ti, .r0 = r0, .nr = nr, .last = r0 + nr >= rows};
                set ^= 1;
            }
        }
        done_bytes += t->nbytes;
        if (stats)
            for (int g = 0; g < n_targets; g++) {
                int ty = targets[g].types[ti];
                uint64_t b = type_nbytes(ty, ne0 * rows);
                stats[g].n_by_type[ty]++;
                stats[g].bytes_by_type[ty] += b;
                stats[g].bytes += b;
                stats[g].params += (uint64_t)(ne0 * rows);
            }
    }
    if (flush_chunk(&st, &prev, err) != 0) goto done;
    for (int g = 0; g < n_targets; g++) {
        if (gguf_writer_finish(&st.w[g], err) != 0) goto done;
        opened[g] = false;
    }
    if (progress && progress->fn) progress->fn(progress->ud, total, total, NULL);
    if (stats)
        for (int g = 0; g < n_targets; g++) stats[g].seconds = now_seconds() - t0;
    rc = 0;
done:
    for (int g = 0; g < n_targets; g++) {
        if (opened && opened[g]) gguf_writer_abort(&st.w[g]);
        for (int k = 0; k < 2; k++)
            if (st.buf[k]) free(st.buf[k][g]);
    }
    if (st.check)
        for (int th = 0; th < n_threads; th++) free(st.check[th]);
    free(order);
    free(opened);
    free(infos);
    free(st.w);
    free(st.buf[0]);
    free(st.buf[1]);
    free(st.check);
    free(st.f);
    return rc;
}
