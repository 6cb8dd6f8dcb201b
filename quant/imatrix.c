/* imatrix.c - importance matrices: collection, legacy .dat and GGUF files, HDF5 export
 * (see imatrix.h for the semantics and the file layouts). */
#include "imatrix.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/gguf.h"
#include "formats/meta.h"
#include "codec/types.h"

#define MAX_NAME_LEN 4096   /* longer tensor names in a .dat mean a corrupt file */
#define SUFFIX_SUM2 ".in_sum2"
#define SUFFIX_COUNTS ".counts"

/* ===================================================================== the in-memory matrix */

void imatrix_init(imatrix *im, int32_t chunk_size) {
    memset(im, 0, sizeof *im);
    im->chunk_size = chunk_size;
}

static void entry_free(imatrix_entry *e) {
    free(e->name);
    free(e->sum2);
    free(e->counts);
    free(e->importance);
}

void imatrix_free(imatrix *im) {
    for (size_t i = 0; i < im->n; i++) entry_free(&im->e[i]);
    free(im->e);
    for (size_t i = 0; i < im->n_datasets; i++) free(im->datasets[i]);
    free(im->datasets);
    free(im->path);
    memset(im, 0, sizeof *im);
}

int64_t imatrix_find(const imatrix *im, const char *name) {
    for (size_t i = 0; i < im->n; i++)
        if (strcmp(im->e[i].name, name) == 0) return (int64_t)i;
    return -1;
}

imatrix_entry *imatrix_entry_get(imatrix *im, const char *name, int64_t n_in, int64_t n_mat, const char *path,
                                 slmc_err *err) {
    int64_t i = imatrix_find(im, name);
    if (i >= 0) {
        imatrix_entry *e = &im->e[i];
        if (e->n_in != n_in || e->n_mat != n_mat) {
            slmc_fail(err, path, "%s has %lld x %lld values here but %lld x %lld before: not the same model", name,
                      (long long)n_mat, (long long)n_in, (long long)e->n_mat, (long long)e->n_in);
            return NULL;
        }
        return e;
    }
    if (n_in <= 0 || n_mat <= 0 || n_in > INT32_MAX / n_mat) {
        slmc_fail(err, path, "%s: bad shape %lld x %lld", name, (long long)n_mat, (long long)n_in);
        return NULL;
    }
    if (im->n == im->cap) {
        size_t cap = im->cap ? 2 * im->cap : 64;
        imatrix_entry *ne = realloc(im->e, cap * sizeof *ne);
        if (!ne) { slmc_fail(err, path, "out of memory"); return NULL; }
        im->e = ne;
        im->cap = cap;
    }
    imatrix_entry e = {0};
    e.name = strdup(name);
    e.n_in = n_in;
    e.n_mat = n_mat;
    e.sum2 = calloc((size_t)(n_in * n_mat), sizeof(float));
    e.counts = calloc((size_t)n_mat, sizeof(int64_t));
    if (!e.name || !e.sum2 || !e.counts) {
        entry_free(&e);
        slmc_fail(err, path, "out of memory for %s", name);
        return NULL;
    }
    im->e[im->n] = e;
    return &im->e[im->n++];
}

int imatrix_accumulate(imatrix *im, const char *name, const float *x, int n_tokens, int64_t n_in, slmc_err *err) {
    imatrix_entry *e = imatrix_entry_get(im, name, n_in, 1, NULL, err);
    if (!e) return -1;
    /* Column by column, tokens in order: each sum sees the same float additions as llama.cpp's
     * loop (which runs tokens outer, columns inner; the order per column is the same). */
    int bad = 0;
#pragma omp parallel for schedule(static) if ((int64_t)n_tokens * n_in >= 65536) reduction(| : bad)
    for (int64_t j = 0; j < n_in; j++) {
        float s = e->sum2[j];
        for (int t = 0; t < n_tokens; t++) {
            const float v = x[(size_t)t * (size_t)n_in + (size_t)j];
            s += v * v;
        }
        e->sum2[j] = s;
        if (!isfinite(s)) bad = 1;
    }
    if (bad) {
        for (int64_t j = 0; j < n_in; j++)
            if (!isfinite(e->sum2[j]))
                return slmc_fail(err, NULL, "%s: the sum of squares of column %lld became %f", name, (long long)j,
                                 (double)e->sum2[j]);
    }
    e->counts[0] += n_tokens;
    return 0;
}

/* The matmul_input hook's state during imatrix_eval_chunk. */
typedef struct collector {
    imatrix *im;
    bool process_output;   /* also output.weight */
    llm_hooks saved;       /* the context's own hooks, called through and restored */
    bool failed;           /* err holds why the hook failed */
    slmc_err err;
} collector;

static int collect_matmul_input(void *ud, const char *weight, int64_t tensor, int layer, const float *x, int n_tokens,
                                int64_t n_in) {
    collector *c = ud;
    if (c->saved.matmul_input && c->saved.matmul_input(c->saved.ud, weight, tensor, layer, x, n_tokens, n_in) != 0)
        return -1;
    /* llama-imatrix's filter: small products are skipped, and only block weights (and the
     * output head on request) are of interest. A tied head is named token_embd.weight and is
     * never collected, as in llama.cpp. */
    if (n_tokens < IMATRIX_MIN_TOKENS) return 0;
    if (strncmp(weight, "blk.", 4) != 0 && !(c->process_output && strcmp(weight, "output.weight") == 0)) return 0;
    if (imatrix_accumulate(c->im, weight, x, n_tokens, n_in, &c->err) != 0) {
        c->failed = true;
        return -1;
    }
    return 0;
}

/* The context's other hooks keep working while the collector is installed. */
static int pass_attn_heads(void *ud, int layer, const float *x, int n_tokens, int64_t n_head, int64_t head_dim) {
    const llm_hooks *h = &((collector *)ud)->saved;
    return h->attn_heads(h->ud, layer, x, n_tokens, n_head, head_dim);
}
static int pass_ffn_act(void *ud, int layer, const float *x, int n_tokens, int64_t n_ff) {
    const llm_hooks *h = &((collector *)ud)->saved;
    return h->ffn_act(h->ud, layer, x, n_tokens, n_ff);
}
static int pass_layer_out(void *ud, int layer, const float *x, int n_tokens, int64_t n_embd) {
    const llm_hooks *h = &((collector *)ud)->saved;
    return h->layer_out(h->ud, layer, x, n_tokens, n_embd);
}

int imatrix_eval_chunk(imatrix *im, llm_context *ctx, const int32_t *chunk, int n_ctx, int32_t bos,
                       bool process_output, float *logits, slmc_err *err) {
    if (n_ctx < 1 || n_ctx > ctx->n_ctx || n_ctx > ctx->n_batch)
        return slmc_fail(err, NULL, "an imatrix chunk of %d tokens needs a context and batch of %d (have %d and %d)",
                         n_ctx, n_ctx, ctx->n_ctx, ctx->n_batch);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_ctx);
    float *own = NULL;
    if (process_output && !logits) logits = own = malloc(sizeof(float) * (size_t)n_ctx * (size_t)ctx->lm->cfg.n_vocab);
    if (!tok || (process_output && !logits)) {
        free(tok);
        free(own);
        return slmc_fail(err, NULL, "out of memory for a chunk of %d tokens", n_ctx);
    }
    memcpy(tok, chunk, sizeof(int32_t) * (size_t)n_ctx);
    if (bos >= 0) tok[0] = bos; /* every chunk starts with BOS, as in llama-imatrix */

    collector c = {.im = im, .process_output = process_output, .saved = ctx->hooks};
    llm_hooks h = {.ud = &c, .matmul_input = collect_matmul_input};
    if (c.saved.attn_heads) h.attn_heads = pass_attn_heads;
    if (c.saved.ffn_act) h.ffn_act = pass_ffn_act;
    if (c.saved.layer_out) h.layer_out = pass_layer_out;
    llm_set_hooks(ctx, &h);
    int rc = llm_eval_out(ctx, tok, n_ctx, 0, process_output ? 0 : n_ctx, process_output ? logits : NULL, err);
    llm_set_hooks(ctx, &c.saved);
    if (rc != 0 && c.failed) *err = c.err; /* the collector's own message says more */
    free(tok);
    free(own);
    return rc;
}

int imatrix_add_dataset(imatrix *im, const char *dataset, slmc_err *err) {
    char **nd = realloc(im->datasets, (im->n_datasets + 1) * sizeof *nd);
    if (!nd) return slmc_fail(err, NULL, "out of memory");
    im->datasets = nd;
    if (!(nd[im->n_datasets] = strdup(dataset))) return slmc_fail(err, NULL, "out of memory");
    im->n_datasets++;
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const imatrix_entry *)a)->name, ((const imatrix_entry *)b)->name);
}

void imatrix_sort(imatrix *im) {
    if (im->n > 1) qsort(im->e, im->n, sizeof *im->e, cmp_entry);
}

static int32_t chunk_size_or_default(const imatrix *im) {
    return im->chunk_size > 0 ? im->chunk_size : IMATRIX_DEFAULT_CHUNK_SIZE;
}

static int64_t max_count(const imatrix_entry *e) {
    int64_t m = 0;
    for (int64_t k = 0; k < e->n_mat; k++)
        if (e->counts[k] > m) m = e->counts[k];
    return m;
}

int imatrix_finish(imatrix *im, slmc_err *err) {
    if (im->chunk_size <= 0) im->chunk_size = IMATRIX_DEFAULT_CHUNK_SIZE;
    int64_t most = 0;
    for (size_t i = 0; i < im->n; i++) {
        imatrix_entry *e = &im->e[i];
        int64_t m = max_count(e);
        if (m > most) most = m;
        if (!e->importance) {
            e->importance = malloc(sizeof(float) * (size_t)(e->n_in * e->n_mat));
            if (!e->importance) return slmc_fail(err, im->path, "out of memory for %s", e->name);
        }
        for (int64_t k = 0; k < e->n_mat; k++) {
            const float *s = e->sum2 + k * e->n_in;
            float *d = e->importance + k * e->n_in;
            const int64_t c = e->counts[k];
            /* In double, rounded once: for a .dat read with a power-of-two chunk size this is
             * exactly llama-quantize's float value / ncall. A matrix no token reached gets 1,
             * as llama.cpp's .dat writer stores it. */
            for (int64_t j = 0; j < e->n_in; j++) d[j] = c > 0 ? (float)((double)s[j] / (double)c) : 1.0f;
        }
    }
    int64_t chunks = most / im->chunk_size;
    im->chunk_count = chunks > INT32_MAX ? INT32_MAX : (int32_t)chunks;
    return 0;
}

const float *imatrix_importance(const imatrix *im, const char *name, int64_t *n) {
    int64_t i = imatrix_find(im, name);
    if (i < 0 || !im->e[i].importance) {
        if (n) *n = 0;
        return NULL;
    }
    if (n) *n = im->e[i].n_in * im->e[i].n_mat;
    return im->e[i].importance;
}

int imatrix_importance_table(const imatrix *im, const model *m, const float ***table, uint64_t *n_found,
                             slmc_err *err) {
    *table = NULL;
    const float **t = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *t);
    if (!t) return slmc_fail(err, im->path, "out of memory");
    uint64_t found = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *mt = &m->tensors[i];
        int64_t k = imatrix_find(im, mt->name);
        if (k < 0) continue;
        const imatrix_entry *e = &im->e[k];
        if (!e->importance) { free(t); return slmc_fail(err, im->path, "imatrix_finish was not called"); }
        /* a .dat cannot tell experts apart: it stores one row of n_mat * n_in values */
        const int64_t n_mat = mt->ne[2] * mt->ne[3];
        if (e->n_in * e->n_mat != mt->ne[0] * n_mat || (e->n_in != mt->ne[0] && e->n_mat != 1)) {
            free(t);
            return slmc_fail(err, im->path,
                             "%s has %lld x %lld values but the tensor in %s has rows of %lld (%lld matrices): "
                             "the imatrix was made for another model",
                             e->name, (long long)e->n_mat, (long long)e->n_in, m->path, (long long)mt->ne[0],
                             (long long)(mt->ne[2] * mt->ne[3]));
        }
        t[i] = e->importance;
        found++;
    }
    *table = t;
    if (n_found) *n_found = found;
    return 0;
}

/* ===================================================================== legacy .dat */

/* A bounds-checked cursor over a mapped file. */
typedef struct reader {
    const uint8_t *p;   /* file bytes */
    uint64_t size, off; /* total and current offset */
    const char *path;   /* for messages */
} reader;

static int rd_i32(reader *r, int32_t *v, const char *what, slmc_err *err) {
    if (r->size - r->off < 4)
        return slmc_fail(err, r->path, "truncated: %s at offset %llu needs 4 bytes, %llu left", what,
                         (unsigned long long)r->off, (unsigned long long)(r->size - r->off));
    memcpy(v, r->p + r->off, 4);
    r->off += 4;
    return 0;
}

static int rd_bytes(reader *r, uint64_t n, const uint8_t **out, const char *what, slmc_err *err) {
    if (r->size - r->off < n)
        return slmc_fail(err, r->path, "truncated: %s at offset %llu needs %llu bytes, %llu left", what,
                         (unsigned long long)r->off, (unsigned long long)n, (unsigned long long)(r->size - r->off));
    *out = r->p + r->off;
    r->off += n;
    return 0;
}

/* One .dat entry: name, ncall, nval, values -> sums and counts (sum2 = value * chunk_size,
 * count = ncall * chunk_size, as llama.cpp converts them). */
static int read_dat_entry(imatrix *im, reader *r, int32_t idx, int32_t cs, slmc_err *err) {
    int32_t len = 0, ncall = 0, nval = 0;
    const uint8_t *name_bytes = NULL, *vals = NULL;
    uint64_t at = r->off;
    if (rd_i32(r, &len, "entry name length", err) != 0) return -1;
    if (len <= 0 || len > MAX_NAME_LEN)
        return slmc_fail(err, r->path, "entry %d at offset %llu: bad name length %d", idx, (unsigned long long)at, len);
    if (rd_bytes(r, (uint64_t)len, &name_bytes, "entry name", err) != 0) return -1;
    char name[MAX_NAME_LEN + 1];
    memcpy(name, name_bytes, (size_t)len);
    name[len] = 0;
    if (strlen(name) != (size_t)len)
        return slmc_fail(err, r->path, "entry %d at offset %llu: the name contains a NUL byte", idx, (unsigned long long)at);
    at = r->off;
    if (rd_i32(r, &ncall, "ncall", err) != 0 || rd_i32(r, &nval, "nval", err) != 0) return -1;
    if (ncall <= 0)
        return slmc_fail(err, r->path, "entry %s at offset %llu: ncall is %d, it must be positive", name,
                         (unsigned long long)at, ncall);
    if (nval <= 0)
        return slmc_fail(err, r->path, "entry %s at offset %llu: nval is %d, it must be positive", name,
                         (unsigned long long)(at + 4), nval);
    if (rd_bytes(r, 4 * (uint64_t)nval, &vals, "values", err) != 0) return -1;
    imatrix_entry *e = imatrix_entry_get(im, name, nval, 1, r->path, err);
    if (!e) return -1;
    for (int32_t j = 0; j < nval; j++) {
        float v;
        memcpy(&v, vals + 4 * (size_t)j, 4);
        if (!isfinite(v) || v < 0)
            return slmc_fail(err, r->path, "entry %s value %d at offset %llu is %g: sums of squares are finite and >= 0",
                             name, j, (unsigned long long)(vals - r->p) + 4 * (unsigned long long)j, (double)v);
        e->sum2[j] += v * (float)cs;
    }
    e->counts[0] += (int64_t)ncall * cs;
    return 0;
}

static int read_dat(imatrix *im, const mapped_file *mf, const char *path, slmc_err *err) {
    reader r = {mf->data, mf->size, 0, path};
    int32_t n_entries = 0;
    if (rd_i32(&r, &n_entries, "the entry count", err) != 0) return -1;
    if (n_entries < 1) return slmc_fail(err, path, "entry count is %d: no data", n_entries);
    /* each entry takes at least 4 + 1 + 4 + 4 + 4 bytes */
    if ((uint64_t)n_entries > (r.size - r.off) / 17)
        return slmc_fail(err, path, "entry count %d does not fit in %llu bytes", n_entries, (unsigned long long)r.size);
    if (im->chunk_size <= 0) im->chunk_size = IMATRIX_DEFAULT_CHUNK_SIZE;
    for (int32_t i = 0; i < n_entries; i++)
        if (read_dat_entry(im, &r, i, im->chunk_size, err) != 0) return -1;
    /* Trailer: the chunk count, then the dataset name. Old files end before it. */
    if (r.off == r.size) return 0;
    int32_t last_chunk = 0, len = 0;
    const uint8_t *ds = NULL;
    if (rd_i32(&r, &last_chunk, "the chunk count after the entries", err) != 0) return -1;
    if (last_chunk < 0)
        return slmc_fail(err, path, "chunk count %d at offset %llu is negative", last_chunk,
                         (unsigned long long)(r.off - 4));
    if (r.off == r.size) return 0;
    if (rd_i32(&r, &len, "the dataset name length", err) != 0) return -1;
    if (len < 0)
        return slmc_fail(err, path, "dataset name length %d at offset %llu is negative", len, (unsigned long long)(r.off - 4));
    if (rd_bytes(&r, (uint64_t)len, &ds, "the dataset name", err) != 0) return -1;
    if (r.off != r.size)
        return slmc_fail(err, path, "%llu unexpected bytes after the dataset name at offset %llu",
                         (unsigned long long)(r.size - r.off), (unsigned long long)r.off);
    char *name = malloc((size_t)len + 1);
    if (!name) return slmc_fail(err, path, "out of memory");
    memcpy(name, ds, (size_t)len);
    name[len] = 0;
    int rc = imatrix_add_dataset(im, name, err);
    free(name);
    return rc;
}

static int write_i32(atomic_file *af, int32_t v, slmc_err *err) { return af_write(af, &v, 4, err); }

int imatrix_write_dat(const imatrix *im, const char *path, slmc_err *err) {
    if (im->n == 0) return slmc_fail(err, path, "the importance matrix is empty: nothing to write");
    if (im->n > INT32_MAX) return slmc_fail(err, path, "too many entries for a .dat file");
    const int32_t cs = chunk_size_or_default(im);
    size_t cap = 0;
    for (size_t i = 0; i < im->n; i++)
        if ((size_t)(im->e[i].n_in * im->e[i].n_mat) > cap) cap = (size_t)(im->e[i].n_in * im->e[i].n_mat);
    float *tmp = malloc(sizeof(float) * (cap ? cap : 1));
    if (!tmp) return slmc_fail(err, path, "out of memory");
    atomic_file af;
    if (af_open(&af, path, err) != 0) { free(tmp); return -1; }
    int64_t most = 0;
    if (write_i32(&af, (int32_t)im->n, err) != 0) goto fail;
    for (size_t i = 0; i < im->n; i++) {
        const imatrix_entry *e = &im->e[i];
        const size_t len = strlen(e->name);
        const int64_t mc = max_count(e);
        if (mc > most) most = mc;
        /* ncall: chunks seen, rounded up so a value is never multiplied by 0 (llama.cpp) */
        const int64_t ncall64 = (mc + cs - 1) / cs;
        if (len > INT32_MAX || ncall64 > INT32_MAX) { slmc_fail(err, path, "%s does not fit a .dat file", e->name); goto fail; }
        const int32_t ncall = (int32_t)ncall64;
        for (int64_t k = 0; k < e->n_mat; k++)
            for (int64_t j = 0; j < e->n_in; j++) {
                const int64_t c = e->counts[k];
                const double s = c > 0 ? (double)e->sum2[k * e->n_in + j] : 1.0;
                /* in double, rounded once, so sums read from a .dat go back to the same floats */
                tmp[k * e->n_in + j] = (float)(s / (double)(c > 0 ? c : 1) * (double)ncall);
            }
        if (write_i32(&af, (int32_t)len, err) != 0 || af_write(&af, e->name, len, err) != 0 ||
            write_i32(&af, ncall, err) != 0 || write_i32(&af, (int32_t)(e->n_in * e->n_mat), err) != 0 ||
            af_write(&af, tmp, sizeof(float) * (size_t)(e->n_in * e->n_mat), err) != 0)
            goto fail;
    }
    {
        const int64_t chunks = most / cs;
        const char *ds = im->n_datasets ? im->datasets[im->n_datasets - 1] : "";
        const size_t len = strlen(ds);
        if (write_i32(&af, chunks > INT32_MAX ? INT32_MAX : (int32_t)chunks, err) != 0 ||
            write_i32(&af, (int32_t)len, err) != 0 || af_write(&af, ds, len, err) != 0 || af_commit(&af, err) != 0)
            goto fail;
    }
    free(tmp);
    return 0;
fail:
    af_abort(&af);
    free(tmp);
    return -1;
}

/* ===================================================================== GGUF */

static bool strip_suffix(const char *name, const char *suffix, char *out, size_t cap) {
    size_t n = strlen(name), s = strlen(suffix);
    if (n <= s || strcmp(name + n - s, suffix) != 0 || n - s >= cap) return false;
    memcpy(out, name, n - s);
    out[n - s] = 0;
    return true;
}

static uint64_t tensor_nelements(const gguf_tensor_info *t) {
    return (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
}

/* Merge one "<name>.in_sum2" / "<name>.counts" pair. */
static int read_gguf_pair(imatrix *im, const gguf_file *g, const char *name, int64_t si, int64_t ci, slmc_err *err) {
    const gguf_tensor_info *s = &g->tensors[si], *c = &g->tensors[ci];
    if (s->type != GGML_TYPE_F32 || c->type != GGML_TYPE_F32)
        return slmc_fail(err, g->path, "%s: sums and counts must be F32, not %s and %s", name, type_name(s->type),
                         type_name(c->type));
    const uint64_t n_mat = tensor_nelements(c), nval = tensor_nelements(s);
    if (n_mat == 0 || nval == 0 || nval % n_mat != 0 || (uint64_t)s->ne[0] * n_mat != nval)
        return slmc_fail(err, g->path, "%s: %llu sums (rows of %lld) do not match %llu counts", name,
                         (unsigned long long)nval, (long long)s->ne[0], (unsigned long long)n_mat);
    const float *sv = (const float *)gguf_tensor_data(g, (uint64_t)si);
    const float *cv = (const float *)gguf_tensor_data(g, (uint64_t)ci);
    for (uint64_t k = 0; k < n_mat; k++) {
        float cnt;
        memcpy(&cnt, cv + k, 4);
        if (!isfinite(cnt) || cnt < 0 || cnt > 9e18f)
            return slmc_fail(err, g->path, "%s: count %llu is %g", name, (unsigned long long)k, (double)cnt);
    }
    for (uint64_t j = 0; j < nval; j++) {
        float v;
        memcpy(&v, sv + j, 4);
        if (!isfinite(v) || v < 0)
            return slmc_fail(err, g->path, "%s: sum %llu is %g: sums of squares are finite and >= 0", name,
                             (unsigned long long)j, (double)v);
    }
    imatrix_entry *e = imatrix_entry_get(im, name, s->ne[0], (int64_t)n_mat, g->path, err);
    if (!e) return -1;
    for (uint64_t j = 0; j < nval; j++) {
        float v;
        memcpy(&v, sv + j, 4);
        e->sum2[j] += v;
    }
    for (uint64_t k = 0; k < n_mat; k++) {
        float cnt;
        memcpy(&cnt, cv + k, 4);
        e->counts[k] += llroundf(cnt);
    }
    return 0;
}

static int read_gguf(imatrix *im, const char *path, slmc_err *err) {
    gguf_file g;
    if (gguf_open(&g, path, err) != 0) return -1;
    int rc = -1;
    const char *type = meta_get_str(&g.kv, "general.type");
    if (type && strcmp(type, "imatrix") != 0) {
        slmc_fail(err, path, "general.type is \"%s\", not \"imatrix\"", type);
        goto done;
    }
    uint64_t u;
    if (im->chunk_size <= 0 && meta_get_u64(&g.kv, "imatrix.chunk_size", &u) && u > 0 && u <= INT32_MAX)
        im->chunk_size = (int32_t)u;
    uint64_t n_ds = 0;
    const meta_str *ds = meta_get_arr(&g.kv, "imatrix.datasets", GGUF_STR, &n_ds);
    for (uint64_t i = 0; ds && i < n_ds; i++)
        if (imatrix_add_dataset(im, ds[i].s, err) != 0) goto done;
    uint64_t pairs = 0;
    char name[1024], other[1100];
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const char *tn = g.tensors[i].name;
        if (strip_suffix(tn, SUFFIX_SUM2, name, sizeof name)) {
            snprintf(other, sizeof other, "%s" SUFFIX_COUNTS, name);
            int64_t ci = gguf_find_tensor(&g, other);
            if (ci < 0) { slmc_fail(err, path, "%s has sums but no %s", name, other); goto done; }
            if (read_gguf_pair(im, &g, name, (int64_t)i, ci, err) != 0) goto done;
            pairs++;
        } else if (strip_suffix(tn, SUFFIX_COUNTS, name, sizeof name)) {
            snprintf(other, sizeof other, "%s" SUFFIX_SUM2, name);
            if (gguf_find_tensor(&g, other) < 0) { slmc_fail(err, path, "%s has counts but no %s", name, other); goto done; }
        }
        /* other tensors (".in_sum", the plain sums of newer llama.cpp) are not needed */
    }
    if (pairs == 0) { slmc_fail(err, path, "holds no imatrix tensors (<name>.in_sum2 with <name>.counts)"); goto done; }
    rc = 0;
done:
    gguf_close(&g);
    return rc;
}

int imatrix_write_gguf(const imatrix *im, const char *path, slmc_err *err) {
    if (im->n == 0) return slmc_fail(err, path, "the importance matrix is empty: nothing to write");
    const int32_t cs = chunk_size_or_default(im);
    meta kv;
    meta_init(&kv);
    gguf_tensor_info *infos = calloc(2 * im->n, sizeof *infos);
    char **names = calloc(2 * im->n, sizeof *names);
    float *cnt = NULL;
    int64_t most = 0;
    int rc = -1;
    gguf_writer w;
    bool open = false;
    if (!infos || !names) { slmc_fail(err, path, "out of memory"); goto done; }
    for (size_t i = 0; i < im->n; i++) {
        const imatrix_entry *e = &im->e[i];
        if (max_count(e) > most) most = max_count(e);
        size_t len = strlen(e->name) + sizeof SUFFIX_SUM2;
        names[2 * i] = malloc(len);
        names[2 * i + 1] = malloc(len);
        if (!names[2 * i] || !names[2 * i + 1]) { slmc_fail(err, path, "out of memory"); goto done; }
        snprintf(names[2 * i], len, "%s" SUFFIX_SUM2, e->name);
        snprintf(names[2 * i + 1], len, "%s" SUFFIX_COUNTS, e->name);
        /* ggml drops trailing dimensions of 1: a dense entry is 1-D, as llama.cpp writes it */
        gguf_tensor_info *s = &infos[2 * i], *c = &infos[2 * i + 1];
        s->name = names[2 * i];
        s->type = GGML_TYPE_F32;
        s->n_dims = e->n_mat > 1 ? 2 : 1;
        s->ne[0] = e->n_in; s->ne[1] = e->n_mat; s->ne[2] = s->ne[3] = 1;
        c->name = names[2 * i + 1];
        c->type = GGML_TYPE_F32;
        c->n_dims = e->n_mat > 1 ? 2 : 1;
        c->ne[0] = 1; c->ne[1] = e->n_mat; c->ne[2] = c->ne[3] = 1;
    }
    const char **ds = (const char **)im->datasets;
    const int64_t chunks = most / cs;
    if (meta_set_str(&kv, "general.type", "imatrix") != 0 ||
        meta_set_arr_str(&kv, "imatrix.datasets", im->n_datasets, ds, NULL) != 0 ||
        meta_set_u32(&kv, "imatrix.chunk_count", chunks > UINT32_MAX ? UINT32_MAX : (uint32_t)chunks) != 0 ||
        meta_set_u32(&kv, "imatrix.chunk_size", (uint32_t)cs) != 0) {
        slmc_fail(err, path, "out of memory");
        goto done;
    }
    if (gguf_writer_open(&w, path, &kv, infos, 2 * im->n, err) != 0) goto done;
    open = true;
    for (size_t i = 0; i < im->n; i++) {
        const imatrix_entry *e = &im->e[i];
        float *nc = realloc(cnt, sizeof(float) * (size_t)e->n_mat);
        if (!nc) { slmc_fail(err, path, "out of memory"); goto done; }
        cnt = nc;
        for (int64_t k = 0; k < e->n_mat; k++) cnt[k] = (float)e->counts[k];
        if (gguf_writer_write(&w, e->sum2, sizeof(float) * (size_t)(e->n_in * e->n_mat), err) != 0 ||
            gguf_writer_write(&w, cnt, sizeof(float) * (size_t)e->n_mat, err) != 0)
            goto done;
    }
    if (gguf_writer_finish(&w, err) != 0) goto done;
    open = false;
    rc = 0;
done:
    if (open) gguf_writer_abort(&w);
    for (size_t i = 0; names && i < 2 * im->n; i++) free(names[i]);
    free(names);
    free(infos);
    free(cnt);
    meta_free(&kv);
    return rc;
}

/* ===================================================================== reading either format */

int imatrix_read(imatrix *im, const char *path, slmc_err *err) {
    mapped_file mf;
    if (map_file(&mf, path, err) != 0) return -1;
    char *p = strdup(path);
    if (!p) { unmap_file(&mf); return slmc_fail(err, path, "out of memory"); }
    free(im->path);
    im->path = p;
    bool is_gguf = false;
    if (mf.size >= 4) {
        uint32_t magic;
        memcpy(&magic, mf.data, 4);
        is_gguf = magic == GGUF_MAGIC;
    }
    int rc;
    if (is_gguf) {
        unmap_file(&mf); /* gguf_open maps it again, validating */
        rc = read_gguf(im, path, err);
    } else {
        rc = read_dat(im, &mf, path, err);
        unmap_file(&mf);
    }
    return rc;
}

int imatrix_load(imatrix *im, const char *path, slmc_err *err) {
    imatrix_init(im, 0);
    if (imatrix_read(im, path, err) != 0 || imatrix_finish(im, err) != 0) {
        imatrix_free(im);
        return -1;
    }
    return 0;
}

/* ===================================================================== HDF5 export */

static int h5_attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    H5Tset_size(t, strlen(s) > 0 ? strlen(s) : 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp >= 0 ? H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int rc = a >= 0 && H5Awrite(a, t, strlen(s) > 0 ? s : "") >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static int h5_attr_i64(hid_t obj, const char *name, const int64_t *v, hsize_t n, bool scalar) {
    hid_t sp = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

/* Object creation properties without modification times: the same matrix gives the same file
 * bytes (one process or mpirun, today or tomorrow), so exports compare with cmp. */
static hid_t h5_untimed(hid_t cls) {
    hid_t pl = H5Pcreate(cls);
    if (pl >= 0) H5Pset_obj_track_times(pl, 0);
    return pl;
}

static int h5_entry(hid_t f, const imatrix_entry *e) {
    hsize_t dims[2] = {(hsize_t)e->n_mat, (hsize_t)e->n_in};
    const int rank = e->n_mat > 1 ? 2 : 1;
    hid_t sp = rank == 2 ? H5Screate_simple(2, dims, NULL) : H5Screate_simple(1, dims + 1, NULL);
    if (sp < 0) return -1;
    /* names contain dots, never slashes: one dataset at the root per weight */
    hid_t dcpl = h5_untimed(H5P_DATASET_CREATE);
    hid_t d = H5Dcreate2(f, e->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    int rc = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, e->importance) >= 0 &&
                     h5_attr_i64(d, "counts", e->counts, (hsize_t)e->n_mat, false) == 0
                 ? 0
                 : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

int imatrix_write_hdf5(const imatrix *im, const char *path, const char *model_path, slmc_err *err) {
    for (size_t i = 0; i < im->n; i++)
        if (!im->e[i].importance) return slmc_fail(err, path, "imatrix_finish was not called");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* HDF5 errors come back as values, unprinted */
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    size_t tlen = 1;
    for (size_t i = 0; i < im->n_datasets; i++) tlen += strlen(im->datasets[i]) + 1;
    char *text = malloc(tlen);
    if (!tmp || !text) { free(tmp); free(text); return slmc_fail(err, path, "out of memory"); }
    text[0] = 0;
    for (size_t i = 0; i < im->n_datasets; i++) {
        if (i) strcat(text, ";");
        strcat(text, im->datasets[i]);
    }
    snprintf(tmp, n, "%s.tmp%d", path, (int)getpid());
    int rc = -1;
    hid_t fcpl = h5_untimed(H5P_FILE_CREATE); /* the root group's times too */
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (f < 0) { slmc_fail(err, path, "cannot create the HDF5 file %s", tmp); goto done; }
    const int64_t n_ctx = chunk_size_or_default(im), chunks = im->chunk_count;
    if (h5_attr_str(f, "format", "slmc-imatrix") != 0 || h5_attr_str(f, "model", model_path ? model_path : "") != 0 ||
        h5_attr_str(f, "text", text) != 0 || h5_attr_i64(f, "n_ctx", &n_ctx, 1, true) != 0 ||
        h5_attr_i64(f, "chunks", &chunks, 1, true) != 0) {
        slmc_fail(err, path, "cannot write the HDF5 attributes");
        goto done;
    }
    for (size_t i = 0; i < im->n; i++)
        if (h5_entry(f, &im->e[i]) != 0) { slmc_fail(err, path, "cannot write the HDF5 dataset %s", im->e[i].name); goto done; }
    herr_t cl = H5Fclose(f);
    f = -1;
    if (cl < 0) { slmc_fail(err, path, "cannot close the HDF5 file"); goto done; }
    if (rename(tmp, path) != 0) { slmc_fail(err, path, "cannot rename %s into place", tmp); goto done; }
    rc = 0;
done:
    if (f >= 0) H5Fclose(f);
    if (rc != 0) unlink(tmp);
    free(tmp);
    free(text);
    return rc;
}
