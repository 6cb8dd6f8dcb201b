/* meta.h - an ordered list of typed key-values, GGUF's metadata model.
 *
 * The GGUF reader fills one, the HF and llama2.c readers build one (the keys llama.cpp reads:
 * general.*, <arch>.*, tokenizer.ggml.*), and the GGUF writer writes one out in order.
 * Every value is an owned copy, so a meta outlives the file it was read from.
 */
#ifndef SLMC_META_H
#define SLMC_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GGUF value types, with GGUF's numbering. */
typedef enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9, GGUF_U64 = 10, GGUF_I64 = 11,
    GGUF_F64 = 12, GGUF_VTYPE_COUNT = 13,
} gguf_vtype;

/* Size in bytes of a scalar value type (0 for STR and ARR). */
size_t gguf_vtype_size(gguf_vtype t);
const char *gguf_vtype_name(gguf_vtype t);

typedef struct meta_str {
    char *s;      /* owned, NUL-terminated (may contain NULs before len) */
    uint64_t len; /* bytes, excluding the terminating NUL */
} meta_str;

typedef struct meta_kv {
    char *key;         /* owned, NUL-terminated */
    gguf_vtype type;   /* scalar type, GGUF_STR, or GGUF_ARR */
    gguf_vtype elem;   /* element type when type == GGUF_ARR (never GGUF_ARR: nested arrays unsupported) */
    uint64_t n;        /* element count when type == GGUF_ARR */
    union {
        uint8_t raw[8]; /* scalar value, little-endian, gguf_vtype_size(type) bytes used */
        meta_str str;   /* type == GGUF_STR */
        void *arr;      /* type == GGUF_ARR: n * size bytes (numbers, little-endian) or meta_str[n] (strings) */
    } v;
} meta_kv;

typedef struct meta {
    meta_kv *kv;     /* [n] in insertion (file) order */
    size_t n, cap;
} meta;

void meta_init(meta *m);
void meta_free(meta *m);
/* Deep copy of src into dst (dst is initialised by this call). 0 or -1 (out of memory). */
int meta_copy(meta *dst, const meta *src);

const meta_kv *meta_find(const meta *m, const char *key);
/* Remove a key if present. */
void meta_remove(meta *m, const char *key);

/* Setters replace the value of an existing key in place (keeping its position) or append.
 * All return 0, or -1 when out of memory. */
int meta_set_scalar(meta *m, const char *key, gguf_vtype type, const void *value);
int meta_set_u32(meta *m, const char *key, uint32_t v);
int meta_set_i32(meta *m, const char *key, int32_t v);
int meta_set_u64(meta *m, const char *key, uint64_t v);
int meta_set_f32(meta *m, const char *key, float v);
int meta_set_bool(meta *m, const char *key, bool v);
int meta_set_str(meta *m, const char *key, const char *s);
int meta_set_strn(meta *m, const char *key, const char *s, uint64_t len);
/* Numeric array: n elements of `elem`, `data` little-endian. */
int meta_set_arr(meta *m, const char *key, gguf_vtype elem, uint64_t n, const void *data);
/* String array: lens may be NULL (then strlen is used). */
int meta_set_arr_str(meta *m, const char *key, uint64_t n, const char *const *strs, const uint64_t *lens);
/* Append a copy of kv (replacing a key of the same name). */
int meta_set_kv(meta *m, const meta_kv *kv);

/* Getters: return true and store the value when the key exists and converts. Integer getters
 * accept any integer type whose value fits; meta_get_f64 accepts any numeric type. */
bool meta_get_u64(const meta *m, const char *key, uint64_t *out);
bool meta_get_i64(const meta *m, const char *key, int64_t *out);
bool meta_get_f64(const meta *m, const char *key, double *out);
bool meta_get_bool(const meta *m, const char *key, bool *out);
const char *meta_get_str(const meta *m, const char *key); /* NULL unless GGUF_STR */
/* Array access: NULL unless the key holds an array of `elem`; *n receives its length. */
const void *meta_get_arr(const meta *m, const char *key, gguf_vtype elem, uint64_t *n);

/* Scalar value of kv (any numeric type) as double / int64, for printing. */
double meta_kv_f64(const meta_kv *kv);
int64_t meta_kv_i64(const meta_kv *kv);

#endif
