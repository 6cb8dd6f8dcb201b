/* gguf.h - GGUF v3: a validating reader over a mapping and a streaming writer.
 *
 * File layout (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * n_kv key-values (string key, u32 type, value), n_tensors tensor infos (string name,
 * u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), padding to `general.alignment`
 * (default 32), then the tensor data; each tensor's offset is relative to the data
 * section and aligned.
 */
#ifndef SLMC_GGUF_H
#define SLMC_GGUF_H

#include <stdint.h>

#include "error.h"
#include "fileio.h"
#include "meta.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_VERSION 3
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor_info {
    char *name;       /* owned */
    int type;         /* ggml_type */
    int n_dims;       /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* elements per dim, ne[0] innermost (row length); unused dims 1 */
    uint64_t offset;  /* from the start of the data section */
    uint64_t nbytes;  /* type_nbytes(type, ne0*ne1*ne2*ne3) */
} gguf_tensor_info;

typedef struct gguf_file {
    char *path;                 /* owned copy, for messages */
    mapped_file map;            /* whole file (unused by gguf_parse_buffer) */
    const uint8_t *base;        /* start of the file bytes [size] */
    uint64_t size;
    uint32_t version;
    meta kv;                    /* every key-value, in file order */
    gguf_tensor_info *tensors;  /* [n_tensors], in file order */
    uint64_t n_tensors;
    uint64_t alignment;         /* general.alignment or 32 */
    uint64_t data_offset;       /* file offset of the data section */
} gguf_file;

/* Map and validate `path`. On failure nothing is left open. */
int gguf_open(gguf_file *f, const char *path, slmc_err *err);
/* Validate a GGUF image already in memory (fuzzing, tests); `name` is used in messages.
 * The buffer must outlive f. */
int gguf_parse_buffer(gguf_file *f, const uint8_t *buf, uint64_t size, const char *name, slmc_err *err);
void gguf_close(gguf_file *f);

/* Index of a tensor by name, or -1. */
int64_t gguf_find_tensor(const gguf_file *f, const char *name);
/* Pointer to a tensor's bytes inside the mapping. */
const uint8_t *gguf_tensor_data(const gguf_file *f, uint64_t i);

/* Streaming writer: the header (metadata and every tensor's info) is written first, then
 * the tensors' bytes in the order given, in one or more gguf_writer_write calls each. */
typedef struct gguf_writer {
    atomic_file out;
    gguf_tensor_info *tensors; /* owned copy, offsets filled in */
    uint64_t n_tensors;
    uint64_t alignment;
    uint64_t cur;              /* tensor being written */
    uint64_t cur_written;      /* bytes of it written so far */
} gguf_writer;

/* Create the temporary output and write the header. `infos` need name, type, n_dims, ne;
 * offset and nbytes are computed. Alignment comes from kv's general.alignment (default 32). */
int gguf_writer_open(gguf_writer *w, const char *path, const meta *kv,
                     const gguf_tensor_info *infos, uint64_t n_tensors, slmc_err *err);
/* Append bytes of the current tensor (moving on to the next when one is complete). */
int gguf_writer_write(gguf_writer *w, const void *data, size_t n, slmc_err *err);
/* Check every tensor was written, fsync and rename into place. */
int gguf_writer_finish(gguf_writer *w, slmc_err *err);
/* Drop the temporary file. Safe after finish. */
void gguf_writer_abort(gguf_writer *w);

#endif
