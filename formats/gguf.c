/* gguf.c - GGUF reader and writer (see gguf.h and docs/formats-gguf.md).
 *
 * The reader trusts nothing: every count, length and offset is checked against the file size
 * before it is used or allocated for, and the first problem found is reported as
 * "FILE: what is wrong at offset N". Every string must be valid UTF-8, as the spec says ("FILE:
 * offset N: ... is not valid UTF-8" gives the first bad byte); keys and tensor names also
 * without control characters, string values may hold any character.
 *
 * The writer streams: header first, then each tensor's bytes followed by zero padding to the
 * alignment, exactly as llama.cpp lays files out, so a file read and written back unchanged
 * is byte-identical.
 */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "codec/types.h"
#include "utf8.h"

/* Smallest encodings, used to reject counts that cannot fit in the file before allocating:
 * a key-value is at least a key length (8), a type (4) and a one-byte value; a tensor info is
 * at least a name length (8), n_dims (4), one ne (8), a type (4) and an offset (8). */
#define MIN_KV_BYTES (8 + 4 + 1)
#define MIN_TENSOR_INFO_BYTES (8 + 4 + 8 + 4 + 8)
#define HEADER_BYTES 24 /* magic, version, n_tensors, n_kv */

typedef unsigned long long ull; /* for printf */

static uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

/* ---- reading: a bounds-checked cursor ------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p; /* file bytes [size] */
    uint64_t size;
    uint64_t pos;     /* next byte to read */
    const char *name; /* file name for messages */
    slmc_err *err;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

/* Fail unless n more bytes are available; `what` names the field for the message. */
static int need(cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return slmc_fail(c->err, c->name, "truncated: %s at offset %llu needs %llu bytes, %llu left",
                         what, (ull)c->pos, (ull)n, (ull)left(c));
    return 0;
}

static uint64_t load_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int rd_u32(cursor *c, uint32_t *out, const char *what) {
    if (need(c, 4, what) != 0) return -1;
    *out = (uint32_t)load_le(c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int rd_u64(cursor *c, uint64_t *out, const char *what) {
    if (need(c, 8, what) != 0) return -1;
    *out = load_le(c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* A GGUF string: u64 length then bytes. Returns a pointer into the file (not terminated). */
static int rd_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
    uint64_t at = c->pos;
    if (rd_u64(c, len, what) != 0) return -1;
    if (*len > left(c))
        return slmc_fail(c->err, c->name, "%s at offset %llu: length %llu runs past the end of the file (%llu bytes left)",
                         what, (ull)at, (ull)*len, (ull)left(c));
    *s = c->p + c->pos;
    c->pos += *len;
    return 0;
}

/* The GGUF spec defines every string as UTF-8. True (and the file offset of the first bad
 * byte in *bad_at) when s[0..len), which lies inside the file, is not valid UTF-8. */
static bool bad_utf8(const cursor *c, const uint8_t *s, uint64_t len, uint64_t *bad_at) {
    size_t ok = utf8_valid_prefix(s, (size_t)len);
    if (ok == len) return false;
    *bad_at = (uint64_t)(s - c->p) + ok;
    return true;
}

/* An owned NUL-terminated copy of a name (metadata key or tensor name). Names are valid UTF-8
 * without control characters (00..1F and 7F, NUL included): they are used as C strings and
 * printed in messages, which must stay on one line. */
static int rd_name(cursor *c, char **out, const char *what) {
    const uint8_t *s;
    uint64_t len, bad;
    if (rd_str(c, &s, &len, what) != 0) return -1;
    if (bad_utf8(c, s, len, &bad))
        return slmc_fail(c->err, c->name, "offset %llu: %s is not valid UTF-8", (ull)bad, what);
    for (uint64_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7F)
            return slmc_fail(c->err, c->name, "offset %llu: %s contains the control character 0x%02x%s",
                             (ull)(s + i - c->p), what, s[i], s[i] == 0 ? " (NUL)" : "");
    *out = malloc((size_t)len + 1);
    if (!*out) return slmc_fail(c->err, c->name, "out of memory");
    memcpy(*out, s, (size_t)len);
    (*out)[len] = '\0';
    return 0;
}

/* ---- reading: key-values -------------------------------------------------------------- */

/* Read a value of type t into kv (whose key is set). kv->type is set before anything is
 * allocated, and kv->n only once the array exists, so meta_free can release a partial kv.
 * Strings must be valid UTF-8; a zero byte (U+0000) is allowed, as they are kept with their
 * length. */
static int rd_value(cursor *c, meta_kv *kv, gguf_vtype t) {
    uint64_t at = c->pos, bad;
    kv->type = t;
    if (t == GGUF_STR) {
        const uint8_t *s;
        uint64_t len;
        if (rd_str(c, &s, &len, "string value") != 0) return -1;
        if (bad_utf8(c, s, len, &bad))
            return slmc_fail(c->err, c->name, "offset %llu: string value of key '%s' is not valid UTF-8",
                             (ull)bad, kv->key);
        kv->v.str.s = malloc((size_t)len + 1);
        if (!kv->v.str.s) return slmc_fail(c->err, c->name, "out of memory");
        memcpy(kv->v.str.s, s, (size_t)len);
        kv->v.str.s[len] = '\0';
        kv->v.str.len = len;
        return 0;
    }
    if (t != GGUF_ARR) {
        size_t sz = gguf_vtype_size(t);
        if (need(c, sz, "scalar value") != 0) return -1;
        memcpy(kv->v.raw, c->p + c->pos, sz);
        c->pos += sz;
        return 0;
    }
    uint32_t elem;
    uint64_t n;
    if (rd_u32(c, &elem, "array element type") != 0) return -1;
    if (elem >= GGUF_VTYPE_COUNT)
        return slmc_fail(c->err, c->name, "key '%s': unknown array element type %u at offset %llu",
                         kv->key, elem, (ull)at);
    if (elem == GGUF_ARR)
        return slmc_fail(c->err, c->name, "key '%s': nested arrays are not supported (offset %llu)",
                         kv->key, (ull)at);
    kv->elem = (gguf_vtype)elem;
    if (rd_u64(c, &n, "array length") != 0) return -1;
    /* every element takes at least `min` bytes: reject counts the file cannot hold */
    uint64_t min = elem == GGUF_STR ? 8 : gguf_vtype_size((gguf_vtype)elem);
    if (n > left(c) / min)
        return slmc_fail(c->err, c->name, "key '%s': array of %llu %s at offset %llu does not fit in the file",
                         kv->key, (ull)n, gguf_vtype_name((gguf_vtype)elem), (ull)at);
    if (elem != GGUF_STR) {
        size_t bytes = (size_t)(n * min);
        kv->v.arr = malloc(bytes ? bytes : 1);
        if (!kv->v.arr) return slmc_fail(c->err, c->name, "out of memory");
        memcpy(kv->v.arr, c->p + c->pos, bytes);
        c->pos += bytes;
        kv->n = n;
        return 0;
    }
    meta_str *strs = calloc(n ? (size_t)n : 1, sizeof *strs);
    if (!strs) return slmc_fail(c->err, c->name, "out of memory");
    kv->v.arr = strs;
    kv->n = n;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *s;
        uint64_t len;
        if (rd_str(c, &s, &len, "array string") != 0) return -1;
        if (bad_utf8(c, s, len, &bad))
            return slmc_fail(c->err, c->name, "offset %llu: element %llu of '%s' is not valid UTF-8",
                             (ull)bad, (ull)i, kv->key);
        strs[i].s = malloc((size_t)len + 1);
        if (!strs[i].s) return slmc_fail(c->err, c->name, "out of memory");
        memcpy(strs[i].s, s, (size_t)len);
        strs[i].s[len] = '\0';
        strs[i].len = len;
    }
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Find a repeated name among n names in O(n log n) (sorts `names`); returns it or NULL. */
static const char *find_duplicate(const char **names, size_t n) {
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static int rd_kvs(cursor *c, meta *m, uint64_t n_kv) {
    if (n_kv == 0) return 0;
    m->kv = calloc((size_t)n_kv, sizeof *m->kv); /* n_kv was checked against the file size */
    if (!m->kv) return slmc_fail(c->err, c->name, "out of memory");
    m->cap = (size_t)n_kv;
    for (uint64_t i = 0; i < n_kv; i++) {
        meta_kv *kv = &m->kv[i];
        if (rd_name(c, &kv->key, "metadata key") != 0) return -1;
        m->n++; /* from here meta_free owns it */
        uint64_t at = c->pos;
        uint32_t t;
        if (rd_u32(c, &t, "value type") != 0) return -1;
        if (t >= GGUF_VTYPE_COUNT)
            return slmc_fail(c->err, c->name, "key '%s': unknown value type %u at offset %llu", kv->key, t, (ull)at);
        if (rd_value(c, kv, (gguf_vtype)t) != 0) return -1;
    }
    const char **names = malloc((size_t)n_kv * sizeof *names);
    if (!names) return slmc_fail(c->err, c->name, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) names[i] = m->kv[i].key;
    const char *dup = find_duplicate(names, (size_t)n_kv);
    int rc = dup ? slmc_fail(c->err, c->name, "duplicate key '%s'", dup) : 0;
    free(names);
    return rc;
}

/* general.alignment: a nonzero power of two stored as u32, or absent (32). */
static int get_alignment(const meta *m, uint64_t *align, const char *name, slmc_err *err) {
    const meta_kv *kv = meta_find(m, "general.alignment");
    *align = GGUF_DEFAULT_ALIGNMENT;
    if (!kv) return 0;
    if (kv->type != GGUF_U32)
        return slmc_fail(err, name, "general.alignment has type %s, expected u32", gguf_vtype_name(kv->type));
    uint64_t a = load_le(kv->v.raw, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return slmc_fail(err, name, "general.alignment %llu is not a nonzero power of two", (ull)a);
    *align = a;
    return 0;
}

/* ---- reading: tensor infos ------------------------------------------------------------ */

/* Check a tensor's shape and type and compute its byte size. Shared by reader and writer. */
static int tensor_size(gguf_tensor_info *t, const char *name, slmc_err *err) {
    const type_info *ti = type_get(t->type);
    if (!ti) return slmc_fail(err, name, "tensor '%s': unknown tensor type %d", t->name, t->type);
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return slmc_fail(err, name, "tensor '%s': n_dims %d is not in 1..%d", t->name, t->n_dims, GGUF_MAX_DIMS);
    int64_t count = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] < 0)
            return slmc_fail(err, name, "tensor '%s': ne[%d] = %lld is negative", t->name, d, (long long)t->ne[d]);
        if (__builtin_mul_overflow(count, t->ne[d], &count))
            return slmc_fail(err, name, "tensor '%s': element count overflows 64 bits", t->name);
    }
    if (t->ne[0] % ti->blck_size != 0)
        return slmc_fail(err, name, "tensor '%s': row length %lld is not a multiple of the %s block size %lld",
                         t->name, (long long)t->ne[0], ti->name, (long long)ti->blck_size);
    uint64_t blocks = (uint64_t)(count / ti->blck_size);
    if (blocks != 0 && ti->type_size > UINT64_MAX / blocks)
        return slmc_fail(err, name, "tensor '%s': byte size overflows 64 bits", t->name);
    t->nbytes = blocks * ti->type_size;
    return 0;
}

static int rd_tensor_info(cursor *c, gguf_tensor_info *t, uint64_t align) {
    if (rd_name(c, &t->name, "tensor name") != 0) return -1;
    uint64_t at = c->pos;
    uint32_t n_dims, type;
    if (rd_u32(c, &n_dims, "n_dims") != 0) return -1;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return slmc_fail(c->err, c->name, "tensor '%s': n_dims %u at offset %llu is not in 1..%d",
                         t->name, n_dims, (ull)at, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        at = c->pos;
        if (rd_u64(c, &ne, "tensor dimension") != 0) return -1;
        if (ne > (uint64_t)INT64_MAX)
            return slmc_fail(c->err, c->name, "tensor '%s': ne[%u] = %llu at offset %llu is out of range",
                             t->name, d, (ull)ne, (ull)at);
        t->ne[d] = (int64_t)ne;
    }
    at = c->pos;
    if (rd_u32(c, &type, "tensor type") != 0) return -1;
    if (type > INT32_MAX || !type_get((int)type))
        return slmc_fail(c->err, c->name, "tensor '%s': unknown tensor type %u at offset %llu", t->name, type, (ull)at);
    t->type = (int)type;
    at = c->pos;
    if (rd_u64(c, &t->offset, "tensor offset") != 0) return -1;
    if (t->offset % align != 0)
        return slmc_fail(c->err, c->name, "tensor '%s': data offset %llu (at offset %llu) is not a multiple of the alignment %llu",
                         t->name, (ull)t->offset, (ull)at, (ull)align);
    return tensor_size(t, c->name, c->err);
}

/* Tensors sorted by data offset, to check they do not overlap. */
typedef struct span {
    uint64_t start, end; /* data-section byte range [start, end) */
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* Every tensor's bytes inside the file, no two overlapping, no two with the same name. */
static int check_layout(gguf_file *f, slmc_err *err) {
    uint64_t n = f->n_tensors;
    if (n == 0) return 0;
    if (f->data_offset > f->size)
        return slmc_fail(err, f->path, "data section starts at offset %llu, past the end of the file (%llu bytes)",
                         (ull)f->data_offset, (ull)f->size);
    uint64_t avail = f->size - f->data_offset;
    span *s = malloc((size_t)n * sizeof *s);
    const char **names = malloc((size_t)n * sizeof *names);
    if (!s || !names) {
        free(s);
        free(names);
        return slmc_fail(err, f->path, "out of memory");
    }
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        const gguf_tensor_info *t = &f->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset)
            rc = slmc_fail(err, f->path, "tensor '%s': %llu bytes at file offset %llu run past the end of the file (%llu bytes)",
                           t->name, (ull)t->nbytes, (ull)(f->data_offset + t->offset), (ull)f->size);
        s[i] = (span){t->offset, t->offset + t->nbytes, t->name};
        names[i] = t->name;
    }
    if (rc == 0) {
        qsort(s, (size_t)n, sizeof *s, cmp_span);
        for (uint64_t i = 1; i < n && rc == 0; i++)
            if (s[i].start < s[i - 1].end)
                rc = slmc_fail(err, f->path, "tensor '%s' (data offset %llu) overlaps tensor '%s' (%llu..%llu)",
                               s[i].name, (ull)s[i].start, s[i - 1].name, (ull)s[i - 1].start, (ull)s[i - 1].end);
    }
    if (rc == 0) {
        const char *dup = find_duplicate(names, (size_t)n);
        if (dup) rc = slmc_fail(err, f->path, "duplicate tensor name '%s'", dup);
    }
    free(s);
    free(names);
    return rc;
}

/* ---- reading: the file ---------------------------------------------------------------- */

int gguf_parse_buffer(gguf_file *f, const uint8_t *buf, uint64_t size, const char *name, slmc_err *err) {
    memset(f, 0, sizeof *f);
    meta_init(&f->kv);
    f->path = strdup(name ? name : "");
    if (!f->path) return slmc_fail(err, name, "out of memory");
    f->base = buf;
    f->size = size;
    cursor c = {buf, size, 0, f->path, err};

    uint32_t magic, version;
    uint64_t n_tensors, n_kv;
    if (rd_u32(&c, &magic, "magic") != 0) goto fail;
    if (magic != GGUF_MAGIC) {
        slmc_fail(err, f->path, "not a GGUF file: bad magic %02x %02x %02x %02x at offset 0",
                  buf[0], buf[1], buf[2], buf[3]);
        goto fail;
    }
    if (rd_u32(&c, &version, "version") != 0) goto fail;
    /* v2 has v3's layout (64-bit counts); v1 used 32-bit counts and is not supported */
    if (version != 2 && version != 3) {
        slmc_fail(err, f->path, "unsupported GGUF version %u at offset 4 (supported: 2, 3)", version);
        goto fail;
    }
    f->version = version;
    if (rd_u64(&c, &n_tensors, "tensor count") != 0 || rd_u64(&c, &n_kv, "key-value count") != 0) goto fail;
    /* both counts must fit in what is left before anything is allocated for them */
    if (n_kv > left(&c) / MIN_KV_BYTES) {
        slmc_fail(err, f->path, "key-value count %llu at offset 16 cannot fit in a %llu-byte file", (ull)n_kv, (ull)size);
        goto fail;
    }
    if (n_tensors > left(&c) / MIN_TENSOR_INFO_BYTES ||
        n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > left(&c)) {
        slmc_fail(err, f->path, "tensor count %llu at offset 8 cannot fit in a %llu-byte file", (ull)n_tensors, (ull)size);
        goto fail;
    }
    if (rd_kvs(&c, &f->kv, n_kv) != 0) goto fail;
    if (get_alignment(&f->kv, &f->alignment, f->path, err) != 0) goto fail;

    if (n_tensors > 0) {
        f->tensors = calloc((size_t)n_tensors, sizeof *f->tensors);
        if (!f->tensors) { slmc_fail(err, f->path, "out of memory"); goto fail; }
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors++; /* count it first so gguf_close frees a partly read name */
        if (rd_tensor_info(&c, &f->tensors[i], f->alignment) != 0) goto fail;
    }
    f->data_offset = pad_to(c.pos, f->alignment);
    if (check_layout(f, err) != 0) goto fail;
    return 0;
fail:
    gguf_close(f);
    return -1;
}

int gguf_open(gguf_file *f, const char *path, slmc_err *err) {
    mapped_file map;
    if (map_file(&map, path, err) != 0) {
        memset(f, 0, sizeof *f);
        return -1;
    }
    if (gguf_parse_buffer(f, map.data, map.size, path, err) != 0) {
        unmap_file(&map);
        return -1;
    }
    f->map = map;
    return 0;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    meta_free(&f->kv);
    unmap_file(&f->map);
    free(f->path);
    memset(f, 0, sizeof *f);
}

int64_t gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return (int64_t)i;
    return -1;
}

const uint8_t *gguf_tensor_data(const gguf_file *f, uint64_t i) {
    if (i >= f->n_tensors) return NULL;
    return f->base + f->data_offset + f->tensors[i].offset;
}

/* ---- writing -------------------------------------------------------------------------- */

static int wr_u32(atomic_file *af, uint32_t v, slmc_err *err) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    return af_write(af, b, 4, err);
}

static int wr_u64(atomic_file *af, uint64_t v, slmc_err *err) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return af_write(af, b, 8, err);
}

static int wr_str(atomic_file *af, const void *s, uint64_t len, slmc_err *err) {
    if (wr_u64(af, len, err) != 0) return -1;
    return af_write(af, s, (size_t)len, err);
}

static int wr_kv(atomic_file *af, const meta_kv *kv, slmc_err *err) {
    if (wr_str(af, kv->key, strlen(kv->key), err) != 0 || wr_u32(af, kv->type, err) != 0) return -1;
    if (kv->type == GGUF_STR) return wr_str(af, kv->v.str.s, kv->v.str.len, err);
    if ((unsigned)kv->type >= GGUF_VTYPE_COUNT)
        return slmc_fail(err, af->path, "key '%s': unknown value type %d", kv->key, (int)kv->type);
    if (kv->type != GGUF_ARR) return af_write(af, kv->v.raw, gguf_vtype_size(kv->type), err);
    if (kv->elem == GGUF_ARR || (unsigned)kv->elem >= GGUF_VTYPE_COUNT)
        return slmc_fail(err, af->path, "key '%s': unsupported array element type %d", kv->key, (int)kv->elem);
    if (wr_u32(af, kv->elem, err) != 0 || wr_u64(af, kv->n, err) != 0) return -1;
    if (kv->elem != GGUF_STR) return af_write(af, kv->v.arr, (size_t)(kv->n * gguf_vtype_size(kv->elem)), err);
    const meta_str *s = kv->v.arr;
    for (uint64_t i = 0; i < kv->n; i++)
        if (wr_str(af, s[i].s, s[i].len, err) != 0) return -1;
    return 0;
}

static int wr_tensor_info(atomic_file *af, const gguf_tensor_info *t, slmc_err *err) {
    if (wr_str(af, t->name, strlen(t->name), err) != 0 || wr_u32(af, (uint32_t)t->n_dims, err) != 0) return -1;
    for (int d = 0; d < t->n_dims; d++)
        if (wr_u64(af, (uint64_t)t->ne[d], err) != 0) return -1;
    if (wr_u32(af, (uint32_t)t->type, err) != 0) return -1;
    return wr_u64(af, t->offset, err);
}

/* Zero bytes up to the next multiple of the alignment. */
static int wr_padding(gguf_writer *w, slmc_err *err) {
    uint64_t pos = w->out.written;
    return af_pad(&w->out, (size_t)(pad_to(pos, w->alignment) - pos), err);
}

/* Pad after each complete tensor and skip past empty ones, so w->cur always names a tensor
 * that still expects bytes (or equals n_tensors when all are done). */
static int advance(gguf_writer *w, slmc_err *err) {
    while (w->cur < w->n_tensors && w->cur_written == w->tensors[w->cur].nbytes) {
        if (wr_padding(w, err) != 0) return -1;
        w->cur++;
        w->cur_written = 0;
    }
    return 0;
}

static void free_tensors(gguf_writer *w) {
    if (w->tensors)
        for (uint64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    w->tensors = NULL;
    w->n_tensors = 0;
}

/* Copy the tensor infos, check them, and lay their data out in order. */
static int plan_tensors(gguf_writer *w, const char *path, const gguf_tensor_info *infos, uint64_t n, slmc_err *err) {
    if (n == 0) return 0;
    if (n > SIZE_MAX / sizeof *w->tensors) return slmc_fail(err, path, "too many tensors");
    w->tensors = calloc((size_t)n, sizeof *w->tensors);
    const char **names = malloc((size_t)n * sizeof *names);
    if (!w->tensors || !names) { free(names); return slmc_fail(err, path, "out of memory"); }
    w->n_tensors = n;
    uint64_t off = 0;
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        gguf_tensor_info *t = &w->tensors[i];
        *t = infos[i];
        t->name = strdup(infos[i].name);
        if (!t->name) { rc = slmc_fail(err, path, "out of memory"); break; }
        if (t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS) /* unused dims are 1 */
            for (int d = t->n_dims; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        if (tensor_size(t, path, err) != 0) { rc = -1; break; }
        t->offset = off;
        if (t->nbytes > UINT64_MAX - off - w->alignment) { rc = slmc_fail(err, path, "tensor data too large"); break; }
        off = pad_to(off + t->nbytes, w->alignment);
        names[i] = t->name;
    }
    if (rc == 0) {
        const char *dup = find_duplicate(names, (size_t)n);
        if (dup) rc = slmc_fail(err, path, "duplicate tensor name '%s'", dup);
    }
    free(names);
    return rc;
}

/* The strings the reader validates must be valid when written too: a file slmc writes is
 * one slmc (and llama.cpp) can read. */
static int check_strings(const meta *kv, const gguf_tensor_info *infos, uint64_t n, const char *path, slmc_err *err) {
    for (size_t i = 0; i < kv->n; i++) {
        const meta_kv *e = &kv->kv[i];
        if (!utf8_valid(e->key, strlen(e->key)))
            return slmc_fail(err, path, "cannot write metadata key %zu: not valid UTF-8", i);
        if (e->type == GGUF_STR && !utf8_valid(e->v.str.s, e->v.str.len))
            return slmc_fail(err, path, "cannot write the value of '%s': not valid UTF-8", e->key);
        if (e->type == GGUF_ARR && e->elem == GGUF_STR) {
            const meta_str *a = e->v.arr;
            for (uint64_t j = 0; j < e->n; j++)
                if (!utf8_valid(a[j].s, a[j].len))
                    return slmc_fail(err, path, "cannot write element %llu of '%s': not valid UTF-8",
                                     (unsigned long long)j, e->key);
        }
    }
    for (uint64_t i = 0; i < n; i++)
        if (!utf8_valid(infos[i].name, strlen(infos[i].name)))
            return slmc_fail(err, path, "cannot write tensor name %llu: not valid UTF-8", (unsigned long long)i);
    return 0;
}

int gguf_writer_open(gguf_writer *w, const char *path, const meta *kv,
                     const gguf_tensor_info *infos, uint64_t n_tensors, slmc_err *err) {
    memset(w, 0, sizeof *w);
    w->out.fd = -1;
    if (check_strings(kv, infos, n_tensors, path, err) != 0) return -1;
    if (get_alignment(kv, &w->alignment, path, err) != 0) return -1;
    if (plan_tensors(w, path, infos, n_tensors, err) != 0) { free_tensors(w); return -1; }
    if (af_open(&w->out, path, err) != 0) { free_tensors(w); return -1; }
    int rc = wr_u32(&w->out, GGUF_MAGIC, err);
    if (rc == 0) rc = wr_u32(&w->out, GGUF_VERSION, err);
    if (rc == 0) rc = wr_u64(&w->out, w->n_tensors, err);
    if (rc == 0) rc = wr_u64(&w->out, kv->n, err);
    for (size_t i = 0; i < kv->n && rc == 0; i++) rc = wr_kv(&w->out, &kv->kv[i], err);
    for (uint64_t i = 0; i < w->n_tensors && rc == 0; i++) rc = wr_tensor_info(&w->out, &w->tensors[i], err);
    if (rc == 0) rc = wr_padding(w, err); /* the data section starts aligned */
    if (rc == 0) rc = advance(w, err);
    if (rc != 0) { gguf_writer_abort(w); return -1; }
    return 0;
}

int gguf_writer_write(gguf_writer *w, const void *data, size_t n, slmc_err *err) {
    if (n == 0) return 0;
    if (w->cur >= w->n_tensors)
        return slmc_fail(err, w->out.path, "%zu bytes written after the last tensor", n);
    const gguf_tensor_info *t = &w->tensors[w->cur];
    uint64_t rest = t->nbytes - w->cur_written;
    if (n > rest)
        return slmc_fail(err, w->out.path, "a %zu-byte chunk crosses the end of tensor '%s' (%llu bytes left)",
                         n, t->name, (ull)rest);
    if (af_write(&w->out, data, n, err) != 0) return -1;
    w->cur_written += n;
    return advance(w, err);
}

int gguf_writer_finish(gguf_writer *w, slmc_err *err) {
    if (w->cur < w->n_tensors) {
        const gguf_tensor_info *t = &w->tensors[w->cur];
        slmc_fail(err, w->out.path, "tensor '%s' incomplete: %llu of %llu bytes written",
                  t->name, (ull)w->cur_written, (ull)t->nbytes);
        gguf_writer_abort(w);
        return -1;
    }
    int rc = af_commit(&w->out, err); /* on failure it removes the temporary file itself */
    gguf_writer_abort(w);            /* frees what is left */
    return rc;
}

void gguf_writer_abort(gguf_writer *w) {
    af_abort(&w->out);
    free_tensors(w);
}
