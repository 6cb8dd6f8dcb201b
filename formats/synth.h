/* synth.h - deterministic synthetic Hugging Face checkpoints, for tests and benchmarks at
 * real model sizes without downloading real weights.
 *
 * synth_write makes a folder with config.json, model.safetensors (sharded like transformers'
 * save_pretrained) and a made-up SentencePiece-style vocabulary (tokenizer.model plus
 * tokenizer_config.json). Every weight is a pure function of (seed, tensor name, element
 * index), so the output is byte-identical for the same options whatever the thread count,
 * and tensors are generated and written in row chunks (bounded memory, even for 7B shapes).
 * See docs/synth.md for the shapes and the statistics of the values.
 */
#ifndef SLMC_SYNTH_H
#define SLMC_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "hf.h"
#include "model.h"

#define SYNTH_DEFAULT_SEED 42

/* The hyperparameters of a synthetic model (a built-in shape or a config.json): any family of
 * formats/arch.h, as config.json says it (formats/hf.h). */
typedef struct synth_shape {
    char name[64];        /* general.name: the shape name, or "synthetic" for a config.json */
    hf_config cfg;        /* the hyperparameters (its longrope factor arrays are owned: free them
                           * with synth_shape_free) */
} synth_shape;

typedef struct synth_opts {
    const char *shape;    /* built-in shape name ("tiny", "tinyllama-1.1b", ...), or NULL */
    const char *config;   /* or a config.json to take the hyperparameters from (exactly one of the two) */
    int dtype;            /* GGML_TYPE_F16 (default), GGML_TYPE_BF16 or GGML_TYPE_F32 */
    uint64_t seed;        /* SYNTH_DEFAULT_SEED by default */
    uint64_t shard_size;  /* bytes per safetensors shard; 0 means HF_DEFAULT_SHARD_SIZE (5 GB) */
} synth_opts;

/* Defaults: no shape, F16, SYNTH_DEFAULT_SEED, 5 GB shards. */
void synth_opts_init(synth_opts *o);

/* Name of built-in shape i (0, 1, ...), NULL past the last: for help texts. */
const char *synth_shape_name(int i);
/* A built-in shape by name; -1 with a message listing the shapes when unknown. */
int synth_shape_get(const char *name, synth_shape *out, slmc_err *err);
/* Hyperparameters from a Hugging Face config.json of any supported family (validated as
 * hf_open validates it; max_position_embeddings defaults to 2048). */
int synth_shape_from_config(const char *path, synth_shape *out, slmc_err *err);
void synth_shape_free(synth_shape *s);

/* Write the synthetic checkpoint folder `dir` (atomically: a partial run leaves nothing). */
int synth_write(const synth_opts *o, const char *dir, const slmc_progress *progress, slmc_err *err);

/* One weight value, exposed for tests: the standard-normal-like draw for element `index`
 * of the tensor whose name hashes to `tensor_key` (before any per-tensor scaling). */
float synth_normal(uint64_t seed, uint64_t tensor_key, uint64_t index);

#endif
