/* meta.c - the ordered key-value list (see meta.h).
 *
 * A meta is a plain growable array of meta_kv. Lookups are linear: real files hold a few dozen
 * keys, so a hash table would buy nothing. Every value is a deep copy: strings and arrays are
 * malloc'd here and freed by meta_free.
 */
#include "meta.h"

#include <stdlib.h>
#include <string.h>

/* ---- value types ---------------------------------------------------------------------- */

static const struct {
    const char *name; /* GGUF's spelling, lower case as gguf-py prints it */
    size_t size;      /* bytes of one scalar, 0 for STR and ARR */
} VTYPES[GGUF_VTYPE_COUNT] = {
    [GGUF_U8] = {"u8", 1},     [GGUF_I8] = {"i8", 1},     [GGUF_U16] = {"u16", 2},
    [GGUF_I16] = {"i16", 2},   [GGUF_U32] = {"u32", 4},   [GGUF_I32] = {"i32", 4},
    [GGUF_F32] = {"f32", 4},   [GGUF_BOOL] = {"bool", 1}, [GGUF_STR] = {"str", 0},
    [GGUF_ARR] = {"arr", 0},   [GGUF_U64] = {"u64", 8},   [GGUF_I64] = {"i64", 8},
    [GGUF_F64] = {"f64", 8},
};

size_t gguf_vtype_size(gguf_vtype t) {
    return (unsigned)t < GGUF_VTYPE_COUNT ? VTYPES[t].size : 0;
}

const char *gguf_vtype_name(gguf_vtype t) {
    return (unsigned)t < GGUF_VTYPE_COUNT ? VTYPES[t].name : "?";
}

/* true for the scalar types (everything except STR and ARR). */
static bool is_scalar(gguf_vtype t) { return gguf_vtype_size(t) != 0; }

/* ---- freeing and copying one value ---------------------------------------------------- */

/* Free the value of kv (not its key) and leave it as an empty u8. Tolerates a partly built
 * value: arr may be NULL, string elements may be NULL. */
static void value_free(meta_kv *kv) {
    if (kv->type == GGUF_STR) {
        free(kv->v.str.s);
    } else if (kv->type == GGUF_ARR) {
        if (kv->elem == GGUF_STR && kv->v.arr) {
            meta_str *s = kv->v.arr;
            for (uint64_t i = 0; i < kv->n; i++) free(s[i].s);
        }
        free(kv->v.arr);
    }
    memset(&kv->v, 0, sizeof kv->v);
    kv->type = GGUF_U8;
    kv->elem = GGUF_U8;
    kv->n = 0;
}

/* A NUL-terminated owned copy of len bytes (which may contain NULs). */
static char *bytes_dup(const char *s, uint64_t len) {
    if (len >= SIZE_MAX) return NULL;
    char *d = malloc((size_t)len + 1);
    if (!d) return NULL;
    if (len) memcpy(d, s, (size_t)len);
    d[len] = '\0';
    return d;
}

/* Build in `out` an owned array value of n elements: numbers copied from `data` (n * size
 * bytes), or strings from strs/lens. Exactly one of data / strs is used. */
static int value_make_arr(meta_kv *out, gguf_vtype elem, uint64_t n, const void *data,
                          const char *const *strs, const uint64_t *lens) {
    memset(out, 0, sizeof *out);
    out->type = GGUF_ARR;
    out->elem = elem;
    if (elem == GGUF_STR) {
        if (n > SIZE_MAX / sizeof(meta_str)) return -1;
        meta_str *arr = calloc(n ? (size_t)n : 1, sizeof *arr);
        if (!arr) return -1;
        out->v.arr = arr;
        out->n = n; /* set now so value_free can release a partial copy */
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len = lens ? lens[i] : strlen(strs[i]);
            arr[i].s = bytes_dup(strs[i], len);
            if (!arr[i].s) { value_free(out); return -1; }
            arr[i].len = len;
        }
        return 0;
    }
    size_t sz = gguf_vtype_size(elem);
    if (!sz || (n && n > SIZE_MAX / sz)) return -1; /* nested arrays are not supported */
    out->v.arr = malloc(n ? (size_t)(n * sz) : 1);
    if (!out->v.arr) return -1;
    if (n) memcpy(out->v.arr, data, (size_t)(n * sz));
    out->n = n;
    return 0;
}

/* Deep copy of src's value (not its key) into dst. */
static int value_copy(meta_kv *dst, const meta_kv *src) {
    memset(dst, 0, sizeof *dst);
    if (src->type == GGUF_STR) {
        dst->type = GGUF_STR;
        dst->v.str.s = bytes_dup(src->v.str.s, src->v.str.len);
        if (!dst->v.str.s) return -1;
        dst->v.str.len = src->v.str.len;
        return 0;
    }
    if (src->type == GGUF_ARR) {
        if (src->elem != GGUF_STR)
            return value_make_arr(dst, src->elem, src->n, src->v.arr, NULL, NULL);
        /* string array: copy element by element */
        const meta_str *s = src->v.arr;
        meta_kv tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.type = GGUF_ARR;
        tmp.elem = GGUF_STR;
        if (src->n > SIZE_MAX / sizeof(meta_str)) return -1;
        meta_str *arr = calloc(src->n ? (size_t)src->n : 1, sizeof *arr);
        if (!arr) return -1;
        tmp.v.arr = arr;
        tmp.n = src->n;
        for (uint64_t i = 0; i < src->n; i++) {
            arr[i].s = bytes_dup(s[i].s, s[i].len);
            if (!arr[i].s) { value_free(&tmp); return -1; }
            arr[i].len = s[i].len;
        }
        *dst = tmp;
        return 0;
    }
    if (!is_scalar(src->type)) return -1;
    dst->type = src->type;
    memcpy(dst->v.raw, src->v.raw, sizeof dst->v.raw);
    return 0;
}

/* ---- the list ------------------------------------------------------------------------- */

void meta_init(meta *m) { memset(m, 0, sizeof *m); }

void meta_free(meta *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        value_free(&m->kv[i]);
        free(m->kv[i].key);
    }
    free(m->kv);
    meta_init(m);
}

static int find_index(const meta *m, const char *key) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].key, key) == 0) return (int)i;
    return -1;
}

const meta_kv *meta_find(const meta *m, const char *key) {
    int i = find_index(m, key);
    return i < 0 ? NULL : &m->kv[i];
}

void meta_remove(meta *m, const char *key) {
    int i = find_index(m, key);
    if (i < 0) return;
    value_free(&m->kv[i]);
    free(m->kv[i].key);
    memmove(&m->kv[i], &m->kv[i + 1], (m->n - (size_t)i - 1) * sizeof *m->kv);
    m->n--;
}

/* Store `value` (already an owned value, key unused) under `key`: replace in place when the
 * key exists, else append. Takes ownership of value's contents on success; on failure the
 * caller still owns it. */
static int put(meta *m, const char *key, meta_kv *value) {
    int i = find_index(m, key);
    if (i >= 0) {
        meta_kv *kv = &m->kv[i];
        value_free(kv);
        char *k = kv->key;
        *kv = *value;
        kv->key = k;
        return 0;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        meta_kv *p = realloc(m->kv, cap * sizeof *p);
        if (!p) return -1;
        m->kv = p;
        m->cap = cap;
    }
    char *k = strdup(key);
    if (!k) return -1;
    m->kv[m->n] = *value;
    m->kv[m->n].key = k;
    m->n++;
    return 0;
}

/* put() that frees the value when it could not be stored. */
static int put_or_free(meta *m, const char *key, meta_kv *value) {
    if (put(m, key, value) == 0) return 0;
    value_free(value);
    return -1;
}

int meta_copy(meta *dst, const meta *src) {
    meta_init(dst);
    if (src->n == 0) return 0;
    dst->kv = calloc(src->n, sizeof *dst->kv);
    if (!dst->kv) return -1;
    dst->cap = src->n;
    for (size_t i = 0; i < src->n; i++) {
        meta_kv *d = &dst->kv[i];
        if (value_copy(d, &src->kv[i]) != 0) { meta_free(dst); return -1; }
        d->key = strdup(src->kv[i].key);
        dst->n++; /* count it now so meta_free releases the value even if strdup failed */
        if (!d->key) { meta_free(dst); return -1; }
    }
    return 0;
}

/* ---- setters -------------------------------------------------------------------------- */

int meta_set_scalar(meta *m, const char *key, gguf_vtype type, const void *value) {
    if (!is_scalar(type)) return -1;
    meta_kv v;
    memset(&v, 0, sizeof v);
    v.type = type;
    memcpy(v.v.raw, value, gguf_vtype_size(type));
    return put(m, key, &v);
}

/* The scalar setters store little-endian bytes; write them byte by byte so the file layout
 * does not depend on the host's byte order. */
static void le_store(uint8_t *dst, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)(v >> (8 * i));
}

static int set_le(meta *m, const char *key, gguf_vtype type, uint64_t bits) {
    uint8_t raw[8] = {0};
    le_store(raw, bits, gguf_vtype_size(type));
    return meta_set_scalar(m, key, type, raw);
}

int meta_set_u32(meta *m, const char *key, uint32_t v) { return set_le(m, key, GGUF_U32, v); }
int meta_set_i32(meta *m, const char *key, int32_t v) { return set_le(m, key, GGUF_I32, (uint32_t)v); }
int meta_set_u64(meta *m, const char *key, uint64_t v) { return set_le(m, key, GGUF_U64, v); }
int meta_set_bool(meta *m, const char *key, bool v) { return set_le(m, key, GGUF_BOOL, v ? 1 : 0); }

int meta_set_f32(meta *m, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_le(m, key, GGUF_F32, bits);
}

int meta_set_strn(meta *m, const char *key, const char *s, uint64_t len) {
    meta_kv v;
    memset(&v, 0, sizeof v);
    v.type = GGUF_STR;
    v.v.str.s = bytes_dup(s, len);
    if (!v.v.str.s) return -1;
    v.v.str.len = len;
    return put_or_free(m, key, &v);
}

int meta_set_str(meta *m, const char *key, const char *s) {
    return meta_set_strn(m, key, s, strlen(s));
}

int meta_set_arr(meta *m, const char *key, gguf_vtype elem, uint64_t n, const void *data) {
    if (!is_scalar(elem)) return -1;
    meta_kv v;
    if (value_make_arr(&v, elem, n, data, NULL, NULL) != 0) return -1;
    return put_or_free(m, key, &v);
}

int meta_set_arr_str(meta *m, const char *key, uint64_t n, const char *const *strs, const uint64_t *lens) {
    meta_kv v;
    if (value_make_arr(&v, GGUF_STR, n, NULL, strs, lens) != 0) return -1;
    return put_or_free(m, key, &v);
}

int meta_set_kv(meta *m, const meta_kv *kv) {
    meta_kv v;
    if (value_copy(&v, kv) != 0) return -1;
    return put_or_free(m, kv->key, &v);
}

/* ---- getters -------------------------------------------------------------------------- */

static uint64_t le_load(const uint8_t *src, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)src[i] << (8 * i);
    return v;
}

static bool is_int(gguf_vtype t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64;
}

static bool is_signed(gguf_vtype t) {
    return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
}

/* An integer value split into "negative?" and magnitude-as-u64, so both getters can check
 * whether it fits without overflow. */
static void int_value(const meta_kv *kv, bool *neg, uint64_t *u) {
    size_t sz = gguf_vtype_size(kv->type);
    uint64_t bits = le_load(kv->v.raw, sz);
    *neg = false;
    if (is_signed(kv->type) && sz < 8 && (bits >> (8 * sz - 1)) & 1)
        bits |= ~0ull << (8 * sz); /* sign-extend to 64 bits */
    if (is_signed(kv->type) && (int64_t)bits < 0) *neg = true;
    *u = bits; /* for negatives: two's-complement bits of the int64 value */
}

bool meta_get_u64(const meta *m, const char *key, uint64_t *out) {
    const meta_kv *kv = meta_find(m, key);
    if (!kv || !is_int(kv->type)) return false;
    bool neg;
    uint64_t u;
    int_value(kv, &neg, &u);
    if (neg) return false;
    *out = u;
    return true;
}

bool meta_get_i64(const meta *m, const char *key, int64_t *out) {
    const meta_kv *kv = meta_find(m, key);
    if (!kv || !is_int(kv->type)) return false;
    bool neg;
    uint64_t u;
    int_value(kv, &neg, &u);
    if (!neg && u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)u;
    return true;
}

double meta_kv_f64(const meta_kv *kv) {
    if (kv->type == GGUF_F32) {
        uint32_t b = (uint32_t)le_load(kv->v.raw, 4);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    if (kv->type == GGUF_F64) {
        uint64_t b = le_load(kv->v.raw, 8);
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
    if (kv->type == GGUF_BOOL) return kv->v.raw[0] ? 1.0 : 0.0;
    if (!is_int(kv->type)) return 0.0;
    bool neg;
    uint64_t u;
    int_value(kv, &neg, &u);
    return neg ? (double)(int64_t)u : (double)u;
}

int64_t meta_kv_i64(const meta_kv *kv) {
    if (kv->type == GGUF_F32 || kv->type == GGUF_F64) return (int64_t)meta_kv_f64(kv);
    if (kv->type == GGUF_BOOL) return kv->v.raw[0] ? 1 : 0;
    if (!is_int(kv->type)) return 0;
    bool neg;
    uint64_t u;
    int_value(kv, &neg, &u);
    return (int64_t)u; /* u64 values above INT64_MAX wrap, as printing them signed would */
}

bool meta_get_f64(const meta *m, const char *key, double *out) {
    const meta_kv *kv = meta_find(m, key);
    if (!kv || !(is_int(kv->type) || kv->type == GGUF_F32 || kv->type == GGUF_F64)) return false;
    *out = meta_kv_f64(kv);
    return true;
}

bool meta_get_bool(const meta *m, const char *key, bool *out) {
    const meta_kv *kv = meta_find(m, key);
    if (!kv || kv->type != GGUF_BOOL) return false;
    *out = kv->v.raw[0] != 0;
    return true;
}

const char *meta_get_str(const meta *m, const char *key) {
    const meta_kv *kv = meta_find(m, key);
    return kv && kv->type == GGUF_STR ? kv->v.str.s : NULL;
}

const void *meta_get_arr(const meta *m, const char *key, gguf_vtype elem, uint64_t *n) {
    const meta_kv *kv = meta_find(m, key);
    if (!kv || kv->type != GGUF_ARR || kv->elem != elem) return NULL;
    if (n) *n = kv->n;
    return kv->v.arr;
}
