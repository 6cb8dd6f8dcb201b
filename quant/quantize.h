/* quantize.h - stream a model into one or more quantized GGUF files in a single read.
 *
 * For each tensor (in canonical GGUF order) rows are read in chunks, converted to F32 once,
 * and every target quantizes the chunk to its planned type (OpenMP over rows) and appends
 * it to its own streaming GGUF writer. Peak memory is a few row chunks per target,
 * independent of the model size; output bytes do not depend on the thread count.
 */
#ifndef SLMC_QUANTIZE_H
#define SLMC_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"
#include "codec/types.h"

typedef struct quant_target {
    const char *path;       /* output GGUF path (written atomically) */
    const int *types;       /* [m->n_tensors] the type each tensor is written with (see plan.h) */
    int64_t file_type;      /* general.file_type to record (llama.cpp's ftype of the mix), -1 keep */
} quant_target;

typedef struct quant_stats {
    uint64_t n_by_type[GGML_TYPE_COUNT];     /* tensors written per type */
    uint64_t bytes_by_type[GGML_TYPE_COUNT]; /* their bytes */
    uint64_t bytes;                          /* all tensor bytes */
    uint64_t params;                         /* all elements */
    double seconds;                          /* wall time of the whole run */
} quant_stats;

/* A caller-supplied quantizer for whole tensors (GPTQ, quant/gptq.h): tensors it wants are
 * read whole as F32 (one tensor in memory instead of a row chunk) and handed to it once per
 * target whose type differs from the source type; the bytes it fills are checked (finite
 * when dequantized) and written through the same streaming writer. */
typedef struct quant_tensor_hook {
    void *ud;               /* passed back to both callbacks */
    /* true when `quantize` should handle tensor ti */
    bool (*wants)(void *ud, uint64_t ti);
    /* Quantize w [rows][ne0] (tensor ti) to type into out (type_nbytes(type, ne0) * rows bytes). */
    int (*quantize)(void *ud, uint64_t ti, int type, const float *w, int64_t rows, int64_t ne0, uint8_t *out,
                    slmc_err *err);
    /* Optional (may be NULL): called for every tensor, wanted or not, after rows [r0, r0+nr)
     * were written to target `target` as `type` bytes (rows in order, llama.cpp's row order).
     * Sequential GPTQ uses it to run later layers' calibration through the written bytes. */
    int (*written)(void *ud, int target, uint64_t ti, int type, int64_t r0, int64_t nr, const uint8_t *bytes,
                   slmc_err *err);
} quant_tensor_hook;

typedef struct quantize_opts {
    bool allow_requantize;  /* accept quantized inputs (dequantized first: error compounds) */
    const float *const *importance; /* [n_tensors] per-column weights (imatrix) or NULL entries; may be NULL */
    const quant_tensor_hook *tensor_hook; /* whole-tensor quantizer for the tensors it wants, or NULL */
} quantize_opts;

/* Plan size without writing: bytes of tensor data for a type plan. */
uint64_t quant_plan_bytes(const model *m, const int *types);

/* Write every target. stats may be NULL, else [n_targets]. On failure nothing is left at any
 * target path. */
int quantize_model(const model *m, const quant_target *targets, int n_targets, const quantize_opts *o,
                   quant_stats *stats, const slmc_progress *progress, slmc_err *err);

#endif
