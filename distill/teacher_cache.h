/* teacher_cache.h - a teacher's top-k log-probabilities, saved once and read by later runs.
 *
 * `slmc distill --save-teacher F` writes, for every training sequence the run draws, the k
 * most likely ids of the teacher at each of its T positions with their log-probabilities at
 * the distillation temperature τ (over the ids the teacher and student share), and the log of
 * the mass of every other id. `--teacher-cache F` then trains students from the file without
 * the teacher: the loss is taken between the k + 1 buckets (ops.h: distill_topk_forward_backward).
 *
 * The file (HDF5, each dataset chunked per sequence and deflate-compressed):
 *   ids        int32   [n_seq][T][k]  the kept ids, most likely first
 *   logp       float   [n_seq][T][k]  their log-probabilities at τ
 *   logp_rest  float   [n_seq][T]     log of the other ids' mass (-inf when none)
 *   have       uint8   [n_seq]        1 for a sequence the saving run computed
 *   meta       int64   [6]            k, T, V_shared, n_seq, n_tokens, teacher vocabulary
 *   tau        float   [1]            τ
 *   data_hash  uint64  [1]            FNV-1a of the tokenized text (train_data.hash)
 * Sequences are the packed training sequences (train_data: index < n_train), so a run with
 * the same --data, --seq-len and split finds each drawn sequence by its index. It is written
 * to F.tmp and renamed when the saving run finishes (or is stopped).
 */
#ifndef SLMC_DISTILL_TEACHER_CACHE_H
#define SLMC_DISTILL_TEACHER_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"

typedef struct teacher_cache teacher_cache;

/* What a cache holds (checked against the run that reads it). */
typedef struct teacher_cache_info {
    int k;               /* ids kept per position */
    int T;               /* positions per sequence */
    int V_shared;        /* ids compared: min(teacher, student vocabulary) */
    int64_t n_seq;       /* training sequences of the text's split */
    int64_t n_tokens;    /* tokens of the text */
    int64_t n_vocab_teacher;
    float tau;           /* the temperature of the log-probabilities */
    uint64_t data_hash;  /* train_data.hash */
} teacher_cache_info;

/* Start writing `path` (as path.tmp) for the shape in info. */
int tcache_create(teacher_cache **c, const char *path, const teacher_cache_info *info, slmc_err *err);
/* Keep sequence `seq`: its T rows of teacher logits [T][Vt] (Vt = info.n_vocab_teacher). A
 * sequence already kept is left as it is. */
int tcache_put(teacher_cache *c, int64_t seq, const float *logits, slmc_err *err);
/* Write the shape and rename path.tmp to path; frees c. */
int tcache_finish(teacher_cache *c, slmc_err *err);

/* Open a finished cache for reading. */
int tcache_open(teacher_cache **c, const char *path, slmc_err *err);
const teacher_cache_info *tcache_info(const teacher_cache *c);
/* Sequence `seq`'s rows: ids[T][k], logp[T][k], logp_rest[T]; fails, naming the file, when
 * the saving run never drew it. */
int tcache_get(teacher_cache *c, int64_t seq, int32_t *ids, float *logp, float *logp_rest, slmc_err *err);

/* Close without finishing (a cache being written is removed). NULL is fine. */
void tcache_close(teacher_cache *c);

/* The top k of one row of logits over its first V ids at temperature tau: ids (most likely
 * first; ties to the lower id), their log-probabilities, and the log of the rest's mass. */
void tcache_topk_row(const float *logits, int V, int k, float tau, int32_t *ids, float *logp, float *logp_rest);

#endif
