/* types.h - the one table of tensor types.
 *
 * The ids are ggml's (the numbers stored in GGUF tensor infos). For every type llama.cpp
 * defines today the table knows the block size (elements per block) and the type size
 * (bytes per block), so any tensor can be listed, sized and copied. Conversions to and from
 * F32 for the plain float types live here; the quantized kernels live beside it (codec/quants.h).
 */
#ifndef SLMC_TYPES_H
#define SLMC_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    /* 4, 5: Q4_2, Q4_3 (removed from ggml) */
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    /* 31..33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8 (removed) */
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    /* 36..38: IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8 (removed) */
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_COUNT = 40,
} ggml_type;

typedef struct type_info {
    const char *name;  /* "Q4_K", as llama.cpp spells it; NULL for a removed id */
    int64_t blck_size; /* elements per block (1 for scalar types) */
    size_t type_size;  /* bytes per block */
    bool quantized;    /* true for block types (Q*, IQ*, TQ*, MXFP4) */
} type_info;

/* The entry for a type id, or NULL when the id is unknown or removed. */
const type_info *type_get(int type);
/* Type id for a name ("q4_k", "BF16", ...; case-insensitive), or -1. */
int type_from_name(const char *name);
/* Name of a type id, or "?" */
const char *type_name(int type);

/* Bytes that n elements of `type` occupy. Returns 0 when the type is unknown or n is not a
 * multiple of the block size, or when the result would overflow. */
uint64_t type_nbytes(int type, int64_t n);

/* Scalar conversions, round-to-nearest-even as ggml and PyTorch do. */
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

/* The same conversions over rows with x86's F16C instructions (8 values at a time, round to
 * nearest even), bit for bit the scalar functions above for every input: subnormals, infinities
 * and NaNs included (F16C quiets a signalling NaN half, fp16_to_f32 keeps it: the F16C row
 * puts the scalar bits back). Call them only when fp16_have_f16c(); in a build without them
 * (not x86-64 GCC/clang) they are the scalar loops and fp16_have_f16c() is false. */
bool fp16_have_f16c(void);
void fp16_to_f32_row_f16c(const uint16_t *h, float *out, int64_t n);
void f32_to_fp16_row_f16c(const float *x, uint16_t *h, int64_t n);
/* dst[i] = fp16_to_f32(f32_to_fp16(src[i])): x rounded to fp16 precision, kept as float; dst
 * may be src. The _f16c one as the rows above (only when fp16_have_f16c()). */
void fp16_round_row(float *dst, const float *src, int64_t n);
void fp16_round_row_f16c(float *dst, const float *src, int64_t n);

/* true for F32, F16, BF16: the types this layer can convert rows between. */
bool type_is_float(int type);
/* Convert n elements of float type `type` at src (little-endian) to F32. */
void row_to_f32(int type, const void *src, float *dst, int64_t n);
/* Convert n F32 values to float type `type`. */
void row_from_f32(int type, const float *src, void *dst, int64_t n);

#endif
