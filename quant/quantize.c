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

/* Rows [r0, r0+nr) of tensor ti as F32 into f (raw holds the source bytes when needed). */
static int read_chunk_f32(const model *m, uint64_t ti, int64_t r0, int64_t nr, float *f, uint8_t *raw, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    if (type_is_float(t->type)) return model_read_rows_f32(m, ti, r0, nr, f, err);
    if (model_read_rows(m, ti, r0, nr, raw, err) != 0) return -1;
    const quant_kernels *k = quant_get(t->type);
    uint64_t rb = model_tensor_row_bytes(t);
    for (int64_t r = 0; r < nr; r++) k->dequantize(raw + (uint64_t)r * rb, f + r * t->ne[0], t->ne[0]);
    return 0;
}

/* Rows of out (nr rows of type, n values each) that dequantize to a non-finite value: the first
 * such row, or -1. */
static int64_t first_bad_row(int type, const uint8_t *out, int64_t n, int64_t nr) {
    const quant_kernels *k = quant_get(type);
    uint64_t rb = type_nbytes(type, n);
    int64_t bad = -1;
#pragma omp parallel
    {
        float *check = malloc((size_t)n * sizeof *check);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nr; r++) {
            bool ok = check != NULL;
            if (ok) {
                k->dequantize(out + (uint64_t)r * rb, check, n);
                for (int64_t i = 0; i < n; i++)
                    if (!isfinite(check[i])) { ok = false; break; }
            }
            if (!ok) {
#pragma omp critical
                if (bad < 0 || r < bad) bad = r;
            }
        }
        free(check);
    }
    return bad;
}

/* Quantize nr rows of n values into out, in parallel over rows; check the result is finite.
 * Returns the first bad row, or -1 when all rows are fine. */
static int64_t quantize_chunk(int type, const float *f, int64_t n, int64_t nr, uint8_t *out, const float *imp) {
    const quant_kernels *k = quant_get(type);
    uint64_t rb = type_nbytes(type, n);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nr; r++) {
        uint8_t *dst = out + (uint64_t)r * rb;
        if (imp) k->quantize_weighted(f + r * n, dst, n, imp);
        else k->quantize(f + r * n, dst, n);
    }
    /* validate: the dequantized rows must be finite (catches NaN/Inf data or scales) */
    return first_bad_row(type, out, n, nr);
}

/* A tensor the whole-tensor hook wants: read it whole as F32, let the hook quantize it for every
 * target that changes its type (copy it as is for the others), check and write. */
static int write_whole_tensor(const model *m, uint64_t ti, const quant_target *targets, int n_targets,
                              const quant_tensor_hook *hook, gguf_writer *w, slmc_err *err) {
    const model_tensor *t = &m->tensors[ti];
    int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
    size_t nval = (size_t)rows * (size_t)ne0;
    float *f = malloc(nval * sizeof *f);
    uint8_t *raw = malloc(nval * 4); /* source bytes (at most 4 per element) or one target's bytes */
    int rc = -1;
    if (!f || !raw) { slmc_fail(err, m->path, "tensor %s: out of memory", t->name); goto done; }
    if (read_chunk_f32(m, ti, 0, rows, f, raw, err) != 0) goto done;
    for (size_t i = 0; i < nval; i++)
        if (!isfinite(f[i])) {
            slmc_fail(err, m->path, "tensor %s row %lld has NaN or Inf values", t->name, (long long)(i / (size_t)ne0));
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
    uint64_t *order = model_gguf_order(m);
    gguf_writer *w = calloc((size_t)n_targets, sizeof *w);
    bool *opened = calloc((size_t)n_targets, sizeof *opened);
    uint8_t **qbuf = calloc((size_t)n_targets, sizeof *qbuf);
    gguf_tensor_info *infos = calloc(n ? n : 1, sizeof *infos);
    float *f = NULL;
    uint8_t *raw = NULL;
    int rc = -1;
    if (!order || !w || !opened || !qbuf || !infos) { slmc_fail(err, m->path, "out of memory"); goto done; }
    if (stats) memset(stats, 0, sizeof *stats * (size_t)n_targets);

    /* chunk size: at least one row of the widest tensor */
    int64_t max_ne0 = 1;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (m->tensors[i].ne[0] > max_ne0) max_ne0 = m->tensors[i].ne[0];
        total += m->tensors[i].nbytes;
    }
    uint64_t chunk_bytes = (uint64_t)max_ne0 * 4 > CHUNK_F32_BYTES ? (uint64_t)max_ne0 * 4 : CHUNK_F32_BYTES;
    f = malloc(chunk_bytes);
    raw = malloc(chunk_bytes); /* any source row is at most 4 bytes per element */
    if (!f || !raw) { slmc_fail(err, m->path, "out of memory"); goto done; }
    for (int g = 0; g < n_targets; g++) {
        qbuf[g] = malloc(chunk_bytes);
        if (!qbuf[g]) { slmc_fail(err, m->path, "out of memory"); goto done; }
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
        int orc = gguf_writer_open(&w[g], targets[g].path, &kv, infos, n, err);
        meta_free(&kv);
        if (orc != 0) goto done;
        opened[g] = true;
    }

    uint64_t done_bytes = 0;
    for (uint64_t oi = 0; oi < n; oi++) {
        uint64_t ti = order[oi];
        const model_tensor *t = &m->tensors[ti];
        if (progress && progress->fn) progress->fn(progress->ud, done_bytes, total, t->name);
        int64_t rows = model_tensor_rows(t), ne0 = t->ne[0];
        int64_t chunk_rows = (int64_t)(chunk_bytes / ((uint64_t)ne0 * 4));
        if (chunk_rows < 1) chunk_rows = 1;
        bool need_f32 = false;
        for (int g = 0; g < n_targets; g++) need_f32 |= targets[g].types[ti] != t->type;
        const float *imp = o && o->importance ? o->importance[ti] : NULL;
        const quant_tensor_hook *hook = o ? o->tensor_hook : NULL;
        bool whole = need_f32 && hook && hook->wants(hook->ud, ti);
        if (whole && write_whole_tensor(m, ti, targets, n_targets, hook, w, err) != 0) goto done;
        /* the chunked path (skipped when the whole tensor went through the hook) */
        for (int64_t r0 = whole ? rows : 0; r0 < rows; r0 += chunk_rows) {
            int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
            if (need_f32) {
                if (read_chunk_f32(m, ti, r0, nr, f, raw, err) != 0) goto done;
                for (int64_t i = 0; i < ne0 * nr; i++)
                    if (!isfinite(f[i])) {
                        slmc_fail(err, m->path, "tensor %s row %lld has NaN or Inf values", t->name,
                                  (long long)(r0 + i / ne0));
                        goto done;
                    }
            }
            for (int g = 0; g < n_targets; g++) {
                int ty = targets[g].types[ti];
                const uint8_t *bytes;
                uint64_t nbytes = type_nbytes(ty, ne0) * (uint64_t)nr;
                if (ty == t->type) { /* copy as is */
                    if (model_read_rows(m, ti, r0, nr, qbuf[g], err) != 0) goto done;
                    bytes = qbuf[g];
                } else {
                    int64_t bad = quantize_chunk(ty, f, ne0, nr, qbuf[g], imp);
                    if (bad >= 0) {
                        slmc_fail(err, targets[g].path, "tensor %s row %lld: %s quantization gave NaN or Inf",
                                  t->name, (long long)(r0 + bad), type_name(ty));
                        goto done;
                    }
                    bytes = qbuf[g];
                }
                if (gguf_writer_write(&w[g], bytes, (size_t)nbytes, err) != 0) goto done;
                if (hook && hook->written && hook->written(hook->ud, g, ti, ty, r0, nr, bytes, err) != 0) goto done;
            }
            if (t->qk_heads == 0) model_release_rows(m, t, r0, nr);
        }
        model_release_source(m, t);
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
    for (int g = 0; g < n_targets; g++) {
        if (gguf_writer_finish(&w[g], err) != 0) goto done;
        opened[g] = false;
    }
    if (progress && progress->fn) progress->fn(progress->ud, total, total, NULL);
    if (stats)
        for (int g = 0; g < n_targets; g++) stats[g].seconds = now_seconds() - t0;
    rc = 0;
done:
    for (int g = 0; g < n_targets; g++) {
        if (opened && opened[g]) gguf_writer_abort(&w[g]);
        if (qbuf) free(qbuf[g]);
    }
    free(order);
    free(w);
    free(opened);
    free(qbuf);
    free(infos);
    free(f);
    free(raw);
    return rc;
}
