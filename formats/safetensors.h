/* safetensors.h - Hugging Face safetensors: reader (one file, or an index plus shards) and
 * a streaming, sharding writer.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value"}}, then the data; offsets are relative to the end of
 * the header. Shapes are outermost-first (PyTorch order), the reverse of GGUF's ne[].
 */
#ifndef SLMC_SAFETENSORS_H
#define SLMC_SAFETENSORS_H

#include <stdint.h>

#include "error.h"
#include "fileio.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u * 1024 * 1024) /* refuse JSON headers over 100 MB */
/* shard_size 0 given to st_writer_open means this: transformers' default max_shard_size "5GB". */
#define ST_DEFAULT_SHARD_SIZE 5000000000ull

typedef struct st_tensor {
    char *name;                /* owned */
    int type;                  /* ggml_type: GGML_TYPE_F32, F16 or BF16 */
    int n_dims;                /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];/* outermost first, as PyTorch */
    const uint8_t *data;       /* inside its shard's mapping */
    uint64_t nbytes;
    int shard;                 /* index into st_model.shards */
} st_tensor;

typedef struct st_shard {
    char *path;                /* owned */
    mapped_file map;
} st_shard;

typedef struct st_model {
    char *path;                /* what was opened: a file, an index.json or a folder */
    st_shard *shards;          /* [n_shards] */
    int n_shards;
    st_tensor *tensors;        /* [n_tensors], in shard order then header order */
    uint64_t n_tensors;
    char **meta_keys, **meta_values; /* __metadata__ of the first shard [n_meta] */
    uint64_t n_meta;
} st_model;

/* Open a .safetensors file, a model.safetensors.index.json, or a folder holding either. */
int st_open(st_model *m, const char *path, slmc_err *err);
/* Validate a single safetensors image in memory (fuzzing, tests); the buffer must outlive m. */
int st_parse_buffer(st_model *m, const uint8_t *buf, uint64_t size, const char *name, slmc_err *err);
void st_close(st_model *m);
int64_t st_find(const st_model *m, const char *name);

/* Streaming writer. Tensors are assigned to shards in the order given, a new shard starting
 * when the current one would pass shard_size bytes; one shard is written as
 * "model.safetensors", several as "model-0000K-of-0000N.safetensors" plus
 * "model.safetensors.index.json". Files go into `dir` (an existing folder, normally an
 * atomic_dir's temporary folder). */
typedef struct st_out_tensor {
    const char *name;
    int type;                  /* GGML_TYPE_F32, F16 or BF16 */
    int n_dims;
    int64_t shape[ST_MAX_DIMS];/* outermost first */
} st_out_tensor;

typedef struct st_writer {
    char *dir;
    st_out_tensor *tensors;    /* owned copy (names owned) [n_tensors] */
    uint64_t n_tensors;
    int *shard_of;             /* [n_tensors] */
    int n_shards;
    uint64_t cur, cur_written; /* tensor being written, bytes of it so far */
    int cur_shard;             /* shard whose file is open, -1 before the first */
    void *file;                /* FILE* of the open shard */
    uint64_t total_size;
    char **meta_keys, **meta_values; uint64_t n_meta; /* __metadata__ (owned) */
} st_writer;

int st_writer_open(st_writer *w, const char *dir, const st_out_tensor *tensors, uint64_t n,
                   uint64_t shard_size, const char *const *meta_keys, const char *const *meta_values,
                   uint64_t n_meta, slmc_err *err);
int st_writer_write(st_writer *w, const void *data, size_t n, slmc_err *err);
/* Close the last shard and write the index when sharded. */
int st_writer_finish(st_writer *w, slmc_err *err);
void st_writer_abort(st_writer *w);

#endif
