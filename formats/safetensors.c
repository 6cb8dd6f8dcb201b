/* safetensors.c - see safetensors.h
 *
 * Reading. Every shard is mapped read-only. Its first 8 bytes are the little-endian length N
 * of a JSON header; the tensor data follows the header, and each tensor's "data_offsets"
 * [begin, end) are relative to the end of the header. Every entry is checked against the
 * file (dtype, shape, size, bounds, no overlap) before a pointer into the mapping is handed
 * out, so [t->data, t->data + t->nbytes) always lies inside the shard.
 *
 * Writing. st_writer_open only plans: it validates the tensor list and decides which shard
 * each tensor goes to. st_writer_write creates a shard file (and writes its header) when the
 * first byte of that shard's data arrives, and closes the previous one. st_writer_finish
 * checks that every byte arrived and writes the index when there is more than one shard.
 */
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/types.h"
#include "utf8.h"

/* Index files are small (one line per tensor); refuse anything absurd. */
#define ST_MAX_INDEX (64u * 1024 * 1024)

typedef unsigned long long ull; /* for printf's %llu */

/* ---------------------------------------------------------------------------------------- */
/* Small helpers shared by the reader and the writer                                        */
/* ---------------------------------------------------------------------------------------- */

/* safetensors dtype string -> ggml type, for the three types slmc handles; -1 otherwise. */
static int dtype_to_type(const char *s) {
    if (strcmp(s, "F32") == 0) return GGML_TYPE_F32;
    if (strcmp(s, "F16") == 0) return GGML_TYPE_F16;
    if (strcmp(s, "BF16") == 0) return GGML_TYPE_BF16;
    return -1;
}

/* ggml type -> safetensors dtype string, or NULL for a type safetensors output can't hold. */
static const char *type_to_dtype(int type) {
    switch (type) {
    case GGML_TYPE_F32: return "F32";
    case GGML_TYPE_F16: return "F16";
    case GGML_TYPE_BF16: return "BF16";
    default: return NULL;
    }
}

/* Bytes of a tensor of a float type and shape. false when a dimension is negative or the
 * element count (kept within int64, as ggml counts) or the byte count overflows. */
static bool shape_nbytes(int type, int n_dims, const int64_t *shape, uint64_t *out) {
    const type_info *ti = type_get(type);
    if (!ti || ti->blck_size != 1) return false;
    uint64_t elems = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return false;
        uint64_t dim = (uint64_t)shape[d];
        if (dim != 0 && elems > (uint64_t)INT64_MAX / dim) return false;
        elems *= dim;
    }
    if (elems > UINT64_MAX / ti->type_size) return false;
    *out = elems * ti->type_size;
    return true;
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---------------------------------------------------------------------------------------- */
/* Reader: one shard                                                                        */
/* ---------------------------------------------------------------------------------------- */

/* Free the strings of the first n tensors of an array, then the array. */
static void free_tensors(st_tensor *t, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}

/* What to put before jansson's text for a JSON parse error: its text for invalid UTF-8
 * ("unable to decode byte 0xc0") does not say UTF-8, so say it. jansson's parser (without
 * JSON_ALLOW_NUL) refuses every string that is not valid UTF-8 (overlongs, surrogates, above
 * U+10FFFF, cut sequences, "\uD800" escapes) and "\u0000", so tensor names and __metadata__
 * keys and values need no second check. */
static const char *json_error_prefix(const json_error_t *e) {
    return json_error_code(e) == json_error_invalid_utf8 ? "not valid UTF-8: " : "";
}

/* "__metadata__": an object of string -> string. Stored in m when `store` (first shard),
 * only validated otherwise. */
static int parse_metadata(st_model *m, json_t *obj, bool store, const char *file, slmc_err *err) {
    if (!json_is_object(obj)) return slmc_fail(err, file, "__metadata__ is not a JSON object");
    size_t n = json_object_size(obj);
    if (store && n > 0) {
        m->meta_keys = calloc(n, sizeof *m->meta_keys);
        m->meta_values = calloc(n, sizeof *m->meta_values);
        if (!m->meta_keys || !m->meta_values) return slmc_fail(err, file, "out of memory");
    }
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_string(val))
            return slmc_fail(err, file, "__metadata__ value of \"%s\" is not a string", key);
        if (!store) continue;
        char *k = strdup(key), *v = strdup(json_string_value(val));
        if (!k || !v) {
            free(k);
            free(v);
            return slmc_fail(err, file, "out of memory");
        }
        m->meta_keys[m->n_meta] = k;
        m->meta_values[m->n_meta] = v;
        m->n_meta++;
    }
    return 0;
}

/* A JSON integer in [0, INT64_MAX] (jansson refuses larger numbers while parsing). */
static bool get_nonneg_int(json_t *v, int64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* One tensor entry {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} checked
 * against the shard's data area [data, data + data_size). Fills t (t->name is set by the
 * caller). */
static int parse_entry(st_tensor *t, const char *name, json_t *entry, const uint8_t *data,
                       uint64_t data_size, const char *file, slmc_err *err) {
    if (!json_is_object(entry)) return slmc_fail(err, file, "tensor %s: entry is not a JSON object", name);

    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype)) return slmc_fail(err, file, "tensor %s: \"dtype\" missing or not a string", name);
    t->type = dtype_to_type(json_string_value(dtype));
    if (t->type < 0)
        return slmc_fail(err, file, "tensor %s has dtype %s, which slmc does not support (F32, F16, BF16)",
                         name, json_string_value(dtype));

    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape)) return slmc_fail(err, file, "tensor %s: \"shape\" missing or not an array", name);
    size_t nd = json_array_size(shape);
    if (nd > ST_MAX_DIMS)
        return slmc_fail(err, file, "tensor %s has %zu dimensions, more than the %d slmc supports", name, nd,
                         ST_MAX_DIMS);
    t->n_dims = (int)nd;
    for (size_t d = 0; d < nd; d++)
        if (!get_nonneg_int(json_array_get(shape, d), &t->shape[d]))
            return slmc_fail(err, file, "tensor %s: shape[%zu] is not a non-negative integer", name, d);
    uint64_t need;
    if (!shape_nbytes(t->type, t->n_dims, t->shape, &need))
        return slmc_fail(err, file, "tensor %s: the size of its shape overflows", name);

    json_t *offs = json_object_get(entry, "data_offsets");
    int64_t begin, end;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !get_nonneg_int(json_array_get(offs, 0), &begin) ||
        !get_nonneg_int(json_array_get(offs, 1), &end))
        return slmc_fail(err, file, "tensor %s: \"data_offsets\" missing or not two non-negative integers", name);
    if (begin > end)
        return slmc_fail(err, file, "tensor %s: data_offsets [%lld, %lld] begin after they end", name,
                         (long long)begin, (long long)end);
    if ((uint64_t)end > data_size)
        return slmc_fail(err, file, "tensor %s: data_offsets [%lld, %lld] run past the end of the data (%llu bytes)",
                         name, (long long)begin, (long long)end, (ull)data_size);
    uint64_t have = (uint64_t)(end - begin);
    if (have != need)
        return slmc_fail(err, file, "tensor %s holds %llu bytes but its dtype and shape need %llu", name, (ull)have,
                         (ull)need);
    t->data = data + begin;
    t->nbytes = have;
    return 0;
}

/* Order of tensors within a shard: by position in the data, as HF writes them. */
static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Parse one shard image buf[size] named `file` and append its tensors (as shard number
 * `shard`) to m. The metadata of shard 0 is stored in m. */
static int parse_shard(st_model *m, int shard, const uint8_t *buf, uint64_t size, const char *file,
                       slmc_err *err) {
    if (size < 8)
        return slmc_fail(err, file, "file is %llu bytes, too short for the 8-byte header length", (ull)size);
    uint64_t n = read_le64(buf);
    if (n > ST_MAX_HEADER)
        return slmc_fail(err, file, "header length %llu is over the limit of %llu bytes", (ull)n,
                         (ull)ST_MAX_HEADER);
    if (n > size - 8)
        return slmc_fail(err, file, "header length %llu runs past the end of the file (8 + %llu > %llu bytes)",
                         (ull)n, (ull)n, (ull)size);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return slmc_fail(err, file, "invalid JSON header at offset %llu: %s%s", (ull)(8 + (uint64_t)jerr.position),
                         json_error_prefix(&jerr), jerr.text);
    const uint8_t *data = buf + 8 + n; /* data_offsets count from here */
    uint64_t data_size = size - 8 - n;

    int rc = -1;
    st_tensor *ts = NULL;
    uint64_t nt = 0;
    if (!json_is_object(root)) {
        slmc_fail(err, file, "JSON header is not an object");
        goto done;
    }
    ts = calloc(json_object_size(root) + 1, sizeof *ts);
    if (!ts) {
        slmc_fail(err, file, "out of memory");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(m, val, shard == 0, file, err)) goto done;
            continue;
        }
        st_tensor *t = &ts[nt];
        memset(t, 0, sizeof *t);
        t->name = strdup(key);
        if (!t->name) {
            slmc_fail(err, file, "out of memory");
            goto done;
        }
        nt++;
        t->shard = shard;
        if (parse_entry(t, key, val, data, data_size, file, err)) goto done;
    }

    /* Sorted by offset, two ranges overlap exactly when one starts before its predecessor
     * ends (an empty tensor sitting at the boundary is fine). */
    qsort(ts, nt, sizeof *ts, cmp_by_offset);
    for (uint64_t i = 1; i < nt; i++) {
        const st_tensor *a = &ts[i - 1], *b = &ts[i];
        if (b->data < a->data + a->nbytes) {
            slmc_fail(err, file, "tensors %s [%llu, %llu) and %s [%llu, %llu) overlap", a->name,
                      (ull)(a->data - data), (ull)(a->data - data + a->nbytes), b->name, (ull)(b->data - data),
                      (ull)(b->data - data + b->nbytes));
            goto done;
        }
    }

    st_tensor *all = realloc(m->tensors, (m->n_tensors + nt + 1) * sizeof *all);
    if (!all) {
        slmc_fail(err, file, "out of memory");
        goto done;
    }
    m->tensors = all;
    memcpy(all + m->n_tensors, ts, nt * sizeof *ts);
    m->n_tensors += nt;
    free(ts); /* the names now belong to m */
    ts = NULL;
    nt = 0;
    rc = 0;
done:
    free_tensors(ts, nt);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Reader: files, folders and indexes                                                       */
/* ---------------------------------------------------------------------------------------- */

void st_close(st_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_shards; i++) {
        /* A model from st_parse_buffer has no path: its one "shard" is the caller's buffer. */
        if (m->path && m->shards[i].map.data) unmap_file(&m->shards[i].map);
        free(m->shards[i].path);
    }
    free(m->shards);
    free_tensors(m->tensors, m->n_tensors);
    for (uint64_t i = 0; i < m->n_meta; i++) {
        free(m->meta_keys[i]);
        free(m->meta_values[i]);
    }
    free(m->meta_keys);
    free(m->meta_values);
    free(m->path);
    memset(m, 0, sizeof *m);
}

/* Append an (unmapped) shard named path to m; returns its index or -1. */
static int new_shard(st_model *m, const char *path, slmc_err *err) {
    st_shard *s = realloc(m->shards, (size_t)(m->n_shards + 1) * sizeof *s);
    if (!s) return slmc_fail(err, path, "out of memory");
    m->shards = s;
    memset(&s[m->n_shards], 0, sizeof *s);
    s[m->n_shards].path = strdup(path);
    if (!s[m->n_shards].path) return slmc_fail(err, path, "out of memory");
    return m->n_shards++;
}

/* Map the shard file at path and append its tensors. */
static int add_shard_file(st_model *m, const char *path, slmc_err *err) {
    int k = new_shard(m, path, err);
    if (k < 0) return -1;
    st_shard *s = &m->shards[k];
    if (map_file(&s->map, path, err)) return -1;
    return parse_shard(m, k, s->map.data, s->map.size, path, err);
}

int st_parse_buffer(st_model *m, const uint8_t *buf, uint64_t size, const char *name, slmc_err *err) {
    memset(m, 0, sizeof *m);
    if (!name) name = "(buffer)";
    int k = new_shard(m, name, err);
    if (k < 0) {
        st_close(m);
        return -1;
    }
    /* The "mapping" is the caller's buffer; m->path stays NULL so st_close won't unmap it. */
    m->shards[k].map.data = buf;
    m->shards[k].map.size = size;
    if (parse_shard(m, k, buf, size, name, err)) {
        st_close(m);
        return -1;
    }
    return 0;
}

/* Order of the names pointed to (for qsort/bsearch over arrays of const char*). */
static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Order of tensors pointed to, by name. */
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* The weight_map of an index and the tensors found in its shards must agree one to one:
 * every listed tensor is in the shard named for it, and every tensor is listed.
 * shard_files[k] is the weight_map spelling of shard k's file. */
static int check_weight_map(const st_model *m, json_t *wm, const char *const *shard_files, const char *index,
                            slmc_err *err) {
    const st_tensor **by_name = malloc((m->n_tensors + 1) * sizeof *by_name);
    if (!by_name) return slmc_fail(err, index, "out of memory");
    for (uint64_t i = 0; i < m->n_tensors; i++) by_name[i] = &m->tensors[i];
    qsort(by_name, m->n_tensors, sizeof *by_name, cmp_tensor_name);

    int rc = -1;
    for (uint64_t i = 1; i < m->n_tensors; i++) {
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0) {
            slmc_fail(err, index, "tensor %s is in both %s and %s", by_name[i]->name,
                      shard_files[by_name[i - 1]->shard], shard_files[by_name[i]->shard]);
            goto done;
        }
    }
    const char *name;
    json_t *file;
    json_object_foreach(wm, name, file) {
        st_tensor key = {.name = (char *)name};
        const st_tensor *kp = &key;
        const st_tensor **hit = bsearch(&kp, by_name, m->n_tensors, sizeof *by_name, cmp_tensor_name);
        if (!hit) {
            slmc_fail(err, index, "weight_map puts tensor %s in %s, but that file has no such tensor", name,
                      json_string_value(file));
            goto done;
        }
        if (strcmp(shard_files[(*hit)->shard], json_string_value(file)) != 0) {
            slmc_fail(err, index, "weight_map puts tensor %s in %s, but it is in %s", name,
                      json_string_value(file), shard_files[(*hit)->shard]);
            goto done;
        }
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        if (!json_object_get(wm, m->tensors[i].name)) {
            slmc_fail(err, index, "tensor %s of %s is missing from weight_map", m->tensors[i].name,
                      shard_files[m->tensors[i].shard]);
            goto done;
        }
    }
    rc = 0;
done:
    free(by_name);
    return rc;
}

/* Folder part of a path ("." when there is none), malloc'd. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}}.
 * Each distinct shard is opened once, in file-name order (model-00001-of-N first). */
static int open_index(st_model *m, const char *index, slmc_err *err) {
    char *text = NULL, *folder = NULL;
    size_t len = 0;
    const char **files = NULL;
    json_t *root = NULL;
    int rc = -1;
    if (read_small_file(index, ST_MAX_INDEX, &text, &len, err)) return -1;
    json_error_t jerr;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        slmc_fail(err, index, "invalid JSON at offset %d: %s%s", jerr.position, json_error_prefix(&jerr), jerr.text);
        goto done;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        slmc_fail(err, index, "no \"weight_map\" object");
        goto done;
    }

    /* Distinct shard file names, sorted. */
    size_t n = 0;
    files = malloc((json_object_size(wm) + 1) * sizeof *files);
    folder = dir_of(index);
    if (!files || !folder) {
        slmc_fail(err, index, "out of memory");
        goto done;
    }
    const char *name;
    json_t *file;
    json_object_foreach(wm, name, file) {
        const char *f = json_string_value(file);
        if (!f || !*f || f[0] == '/') {
            slmc_fail(err, index, "weight_map entry for %s is not a relative file name", name);
            goto done;
        }
        files[n++] = f;
    }
    qsort(files, n, sizeof *files, cmp_str_ptr);
    size_t nd = 0;
    for (size_t i = 0; i < n; i++)
        if (nd == 0 || strcmp(files[nd - 1], files[i]) != 0) files[nd++] = files[i];

    for (size_t i = 0; i < nd; i++) {
        char *p = path_join(folder, files[i]);
        if (!p) {
            slmc_fail(err, index, "out of memory");
            goto done;
        }
        int k = new_shard(m, p, err);
        if (k >= 0 && map_file(&m->shards[k].map, p, err)) {
            slmc_fail_prefix(err, index); /* say which index sent us to that file */
            k = -1;
        }
        int bad = k < 0 || parse_shard(m, k, m->shards[k].map.data, m->shards[k].map.size, p, err);
        free(p);
        if (bad) goto done;
    }
    rc = check_weight_map(m, wm, files, index, err);
done:
    free(files);
    free(folder);
    json_decref(root);
    free(text);
    return rc;
}

/* A folder: its index if there is one, else model.safetensors, else its only *.safetensors. */
static int open_folder(st_model *m, const char *dir, slmc_err *err) {
    char *p = path_join(dir, "model.safetensors.index.json");
    if (!p) return slmc_fail(err, dir, "out of memory");
    if (is_regular_file(p)) {
        int rc = open_index(m, p, err);
        free(p);
        return rc;
    }
    free(p);
    p = path_join(dir, "model.safetensors");
    if (!p) return slmc_fail(err, dir, "out of memory");
    if (is_regular_file(p)) {
        int rc = add_shard_file(m, p, err);
        free(p);
        return rc;
    }
    free(p);

    DIR *d = opendir(dir);
    if (!d) return slmc_fail(err, dir, "cannot list folder: %s", strerror(errno));
    char *only = NULL;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".safetensors")) continue;
        if (++count == 1) only = strdup(e->d_name);
    }
    closedir(d);
    if (count != 1 || !only) {
        free(only);
        if (count == 1) return slmc_fail(err, dir, "out of memory");
        return slmc_fail(err, dir,
                         "no model.safetensors.index.json or model.safetensors, and %d other *.safetensors files "
                         "(need exactly one)",
                         count);
    }
    p = path_join(dir, only);
    free(only);
    if (!p) return slmc_fail(err, dir, "out of memory");
    int rc = add_shard_file(m, p, err);
    free(p);
    return rc;
}

int st_open(st_model *m, const char *path, slmc_err *err) {
    memset(m, 0, sizeof *m);
    m->path = strdup(path);
    if (!m->path) return slmc_fail(err, path, "out of memory");
    int rc;
    if (is_dir(path))
        rc = open_folder(m, path, err);
    else if (ends_with(path, ".json"))
        rc = open_index(m, path, err);
    else
        rc = add_shard_file(m, path, err);
    if (rc) st_close(m);
    return rc;
}

int64_t st_find(const st_model *m, const char *name) {
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return (int64_t)i;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Writer                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* Bytes of output tensor i (validated by st_writer_open, so this cannot fail afterwards). */
static uint64_t out_nbytes(const st_writer *w, uint64_t i) {
    uint64_t nb = 0;
    shape_nbytes(w->tensors[i].type, w->tensors[i].n_dims, w->tensors[i].shape, &nb);
    return nb;
}

/* Path of shard k, malloc'd: model.safetensors alone, else model-0000K-of-0000N. */
static char *shard_path(const st_writer *w, int k) {
    char name[64];
    if (w->n_shards == 1)
        snprintf(name, sizeof name, "model.safetensors");
    else
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, w->n_shards);
    return path_join(w->dir, name);
}

/* File name part of a path. */
static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Release everything the writer owns without touching the files. */
static void writer_free(st_writer *w) {
    for (uint64_t i = 0; i < w->n_tensors; i++) free((char *)w->tensors[i].name);
    free(w->tensors);
    free(w->shard_of);
    for (uint64_t i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w->dir);
    memset(w, 0, sizeof *w);
    w->cur_shard = -1;
}

/* Copy and check the tensor list: float type, sane shape, unique valid names. */
static int copy_tensors(st_writer *w, const st_out_tensor *tensors, uint64_t n, slmc_err *err) {
    w->tensors = calloc(n + 1, sizeof *w->tensors);
    w->shard_of = calloc(n + 1, sizeof *w->shard_of);
    if (!w->tensors || !w->shard_of) return slmc_fail(err, w->dir, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        const st_out_tensor *t = &tensors[i];
        if (!t->name || !utf8_valid(t->name, strlen(t->name)) || strcmp(t->name, "__metadata__") == 0)
            return slmc_fail(err, w->dir, "tensor %llu has no usable name (NULL, not UTF-8, or __metadata__)",
                             (ull)i);
        if (!type_to_dtype(t->type))
            return slmc_fail(err, w->dir, "tensor %s has type %s; safetensors output supports F32, F16, BF16",
                             t->name, type_name(t->type));
        uint64_t nb;
        if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS || !shape_nbytes(t->type, t->n_dims, t->shape, &nb))
            return slmc_fail(err, w->dir, "tensor %s has an invalid shape", t->name);
        if (nb > (uint64_t)INT64_MAX - w->total_size)
            return slmc_fail(err, w->dir, "total size overflows at tensor %s", t->name);
        w->total_size += nb;
        w->tensors[i] = *t;
        w->tensors[i].name = strdup(t->name);
        if (!w->tensors[i].name) return slmc_fail(err, w->dir, "out of memory");
        w->n_tensors++;
    }

    /* A JSON object can't hold a name twice. */
    const char **names = malloc((n + 1) * sizeof *names);
    if (!names) return slmc_fail(err, w->dir, "out of memory");
    for (uint64_t i = 0; i < n; i++) names[i] = w->tensors[i].name;
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (uint64_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            slmc_fail(err, w->dir, "tensor name %s appears twice", names[i]);
            free(names);
            return -1;
        }
    }
    free(names);
    return 0;
}

/* Copy the metadata; "format" is set to "pt" first unless the caller gives it. */
static int copy_meta(st_writer *w, const char *const *keys, const char *const *values, uint64_t n,
                     slmc_err *err) {
    w->meta_keys = calloc(n + 1, sizeof *w->meta_keys);
    w->meta_values = calloc(n + 1, sizeof *w->meta_values);
    if (!w->meta_keys || !w->meta_values) return slmc_fail(err, w->dir, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        if (!keys[i] || !values[i] || !utf8_valid(keys[i], strlen(keys[i])) ||
            !utf8_valid(values[i], strlen(values[i])))
            return slmc_fail(err, w->dir, "metadata entry %llu is NULL or not UTF-8", (ull)i);
        w->meta_keys[i] = strdup(keys[i]);
        w->meta_values[i] = strdup(values[i]);
        w->n_meta++;
        if (!w->meta_keys[i] || !w->meta_values[i]) return slmc_fail(err, w->dir, "out of memory");
    }
    return 0;
}

/* Shard assignment: a new shard starts when the next tensor would take the current one past
 * shard_size bytes of data; a tensor bigger than shard_size thus sits alone. */
static void plan_shards(st_writer *w, uint64_t shard_size) {
    int shard = 0;
    uint64_t used = 0, count = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        uint64_t nb = out_nbytes(w, i);
        if (count > 0 && nb > shard_size - (used < shard_size ? used : shard_size)) {
            shard++;
            used = 0;
            count = 0;
        }
        w->shard_of[i] = shard;
        used += nb;
        count++;
    }
    w->n_shards = shard + 1;
}

int st_writer_open(st_writer *w, const char *dir, const st_out_tensor *tensors, uint64_t n,
                   uint64_t shard_size, const char *const *meta_keys, const char *const *meta_values,
                   uint64_t n_meta, slmc_err *err) {
    memset(w, 0, sizeof *w);
    w->cur_shard = -1;
    if (shard_size == 0) shard_size = ST_DEFAULT_SHARD_SIZE;
    w->dir = strdup(dir);
    if (!w->dir) return slmc_fail(err, dir, "out of memory");
    if (copy_tensors(w, tensors, n, err) || copy_meta(w, meta_keys, meta_values, n_meta, err)) {
        writer_free(w);
        return -1;
    }
    plan_shards(w, shard_size);
    return 0;
}

/* The JSON header of shard k: "__metadata__" first, then its tensors in the given order
 * with consecutive data offsets. NULL when out of memory. */
static json_t *shard_header(const st_writer *w, int k) {
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta || json_object_set_new(root, "__metadata__", meta)) {
        json_decref(root);
        return NULL;
    }
    bool ok = json_object_set_new(meta, "format", json_string("pt")) == 0;
    for (uint64_t i = 0; ok && i < w->n_meta; i++)
        ok = json_object_set_new(meta, w->meta_keys[i], json_string(w->meta_values[i])) == 0;
    uint64_t offset = 0;
    for (uint64_t i = 0; ok && i < w->n_tensors; i++) {
        if (w->shard_of[i] != k) continue;
        const st_out_tensor *t = &w->tensors[i];
        uint64_t nb = out_nbytes(w, i);
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        ok = e && shape && offs;
        for (int d = 0; ok && d < t->n_dims; d++) ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)offset)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)(offset + nb))) == 0;
        ok = ok && json_object_set_new(e, "dtype", json_string(type_to_dtype(t->type))) == 0;
        ok = ok && json_object_set(e, "shape", shape) == 0 && json_object_set(e, "data_offsets", offs) == 0;
        ok = ok && json_object_set(root, t->name, e) == 0;
        json_decref(shape);
        json_decref(offs);
        json_decref(e);
        offset += nb;
    }
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* fwrite that reports the file and errno. */
static int write_all(FILE *f, const void *data, size_t n, const char *path, slmc_err *err) {
    if (n && fwrite(data, 1, n, f) != n) return slmc_fail(err, path, "write failed: %s", strerror(errno));
    return 0;
}

/* Flush, sync and close, so a full disk is reported here and not lost. */
static int close_file(FILE *f, const char *path, slmc_err *err) {
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) bad = 1, e = errno;
    if (bad) return slmc_fail(err, path, "write failed: %s", strerror(e));
    return 0;
}

/* Create shard k and write its header: u64 length, compact JSON, spaces up to a multiple
 * of 8 bytes (as the safetensors library pads, so the data starts 8-aligned). */
static int open_shard(st_writer *w, int k, slmc_err *err) {
    char *path = shard_path(w, k);
    if (!path) return slmc_fail(err, w->dir, "out of memory");
    json_t *hdr = shard_header(w, k);
    char *text = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    int rc = -1;
    if (!text) {
        slmc_fail(err, path, "out of memory building the header");
        goto done;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        slmc_fail(err, path, "cannot create: %s", strerror(errno));
        goto done;
    }
    w->file = f;
    w->cur_shard = k;
    size_t len = strlen(text), pad = (8 - len % 8) % 8;
    uint8_t lenbuf[8];
    write_le64(lenbuf, len + pad);
    static const char spaces[8] = "        ";
    rc = write_all(f, lenbuf, 8, path, err) || write_all(f, text, len, path, err) ||
                 write_all(f, spaces, pad, path, err)
             ? -1
             : 0;
done:
    free(text);
    free(path);
    return rc;
}

/* Close the open shard, if any. */
static int close_shard(st_writer *w, slmc_err *err) {
    if (!w->file) return 0;
    char *path = shard_path(w, w->cur_shard);
    int rc = close_file(w->file, path ? path : w->dir, err);
    w->file = NULL;
    free(path);
    return rc;
}

/* Make shard k the open one, creating every shard up to it (a shard of empty tensors only
 * gets just its header). */
static int advance_to_shard(st_writer *w, int k, slmc_err *err) {
    while (w->cur_shard < k) {
        if (close_shard(w, err) || open_shard(w, w->cur_shard + 1, err)) return -1;
    }
    return 0;
}

/* Step past tensors that are complete (including empty ones). */
static void skip_done(st_writer *w) {
    while (w->cur < w->n_tensors && w->cur_written == out_nbytes(w, w->cur)) {
        w->cur++;
        w->cur_written = 0;
    }
}

int st_writer_write(st_writer *w, const void *data, size_t n, slmc_err *err) {
    skip_done(w);
    if (n == 0) return 0;
    if (w->cur >= w->n_tensors)
        return slmc_fail(err, w->dir, "%zu bytes written after the last tensor", n);
    uint64_t left = out_nbytes(w, w->cur) - w->cur_written;
    if (n > left)
        return slmc_fail(err, w->dir, "a write of %zu bytes crosses the end of tensor %s (%llu bytes left)", n,
                         w->tensors[w->cur].name, (ull)left);
    if (advance_to_shard(w, w->shard_of[w->cur], err)) return -1;
    if (fwrite(data, 1, n, w->file) != n) {
        int e = errno;
        char *path = shard_path(w, w->cur_shard);
        slmc_fail(err, path ? path : w->dir, "write failed: %s", strerror(e));
        free(path);
        return -1;
    }
    w->cur_written += n;
    return 0;
}

/* model.safetensors.index.json as transformers writes it: sorted keys, indent 2, ASCII. */
static int write_index(const st_writer *w, const char *path, slmc_err *err) {
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    bool ok = root && meta && wm && json_object_set(root, "metadata", meta) == 0 &&
              json_object_set(root, "weight_map", wm) == 0 &&
              json_object_set_new(meta, "total_size", json_integer((json_int_t)w->total_size)) == 0;
    for (uint64_t i = 0; ok && i < w->n_tensors; i++) {
        char *sp = shard_path(w, w->shard_of[i]);
        ok = sp && json_object_set_new(wm, w->tensors[i].name, json_string(base_name(sp))) == 0;
        free(sp);
    }
    char *text = ok ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII) : NULL;
    json_decref(meta);
    json_decref(wm);
    json_decref(root);
    if (!text) return slmc_fail(err, path, "out of memory building the index");
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(text);
        return slmc_fail(err, path, "cannot create: %s", strerror(errno));
    }
    int rc = write_all(f, text, strlen(text), path, err) || write_all(f, "\n", 1, path, err) ? -1 : 0;
    free(text);
    if (close_file(f, path, rc ? NULL : err)) rc = -1;
    return rc;
}

int st_writer_finish(st_writer *w, slmc_err *err) {
    skip_done(w);
    if (w->cur < w->n_tensors) {
        slmc_fail(err, w->dir, "finished early: tensor %s has %llu of its %llu bytes", w->tensors[w->cur].name,
                  (ull)w->cur_written, (ull)out_nbytes(w, w->cur));
        st_writer_abort(w);
        return -1;
    }
    if (advance_to_shard(w, w->n_shards - 1, err) || close_shard(w, err)) {
        st_writer_abort(w);
        return -1;
    }
    if (w->n_shards > 1) {
        char *path = path_join(w->dir, "model.safetensors.index.json");
        if (!path || write_index(w, path, err)) {
            if (path) unlink(path);
            else slmc_fail(err, w->dir, "out of memory");
            free(path);
            st_writer_abort(w);
            return -1;
        }
        free(path);
    }
    writer_free(w);
    return 0;
}

void st_writer_abort(st_writer *w) {
    if (!w || !w->dir) return; /* never opened, or already finished */
    if (w->file) fclose(w->file);
    w->file = NULL;
    for (int k = 0; k <= w->cur_shard; k++) {
        char *p = shard_path(w, k);
        if (p) unlink(p);
        free(p);
    }
    writer_free(w);
}
