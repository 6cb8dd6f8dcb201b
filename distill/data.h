/* data.h - training text: read, tokenize, pack into sequences, shuffle, hold out.
 *
 *   FILE (.txt | .jsonl with field "text"; either optionally .gz or .zst, decompressed while
 *   streaming) ─> documents ─> student's tokenizer (BOS before each document) ─> one token
 *   stream ─> sequences of T+1 tokens at stride T (inputs t[0..T), targets t[1..T]) ─>
 *   the last valid_frac of them held out for evaluation, the rest shuffled with a seed,
 *   a new permutation each epoch.
 *
 * The cursor (epoch, position, permutation, RNG state) is plain data so a checkpoint can
 * store it and a resumed run draws exactly the batches the uninterrupted run would have.
 */
#ifndef SLMC_DISTILL_DATA_H
#define SLMC_DISTILL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "eval/tokenizer.h"
#include "formats/error.h"

typedef struct train_data {
    int32_t *tokens;      /* [n_tokens] the whole tokenized text */
    size_t n_tokens;
    uint64_t hash;        /* FNV-1a of the tokens: a checkpoint refuses another text */
    int T;                /* sequence length */
    int64_t n_train;      /* training sequences (the first ones) */
    int64_t n_valid;      /* held-out sequences (the last ones) */
    /* cursor */
    int64_t *perm;        /* [n_train] order of this epoch */
    int64_t pos;          /* next index into perm */
    int64_t epoch;        /* epochs completed */
    uint64_t rng;         /* xorshift64* state used for the next shuffle */
} train_data;

/* Read `path` whole into documents and tokenize them on n_threads OpenMP threads (>= 1; the
 * tokens do not depend on it). max_tokens > 0 stops after about that many tokens. */
int data_load(train_data *d, const char *path, const tokenizer *tok, size_t max_tokens, int n_threads,
              slmc_err *err);
/* The same in a job of several ranks (comm.h): each rank tokenizes its share of the pieces,
 * then every rank gets the whole stream (the ranks' tokens in rank order, which is the text's
 * order): the same tokens on every rank, and the same as one process. */
int data_load_shared(train_data *d, const char *path, const tokenizer *tok, size_t max_tokens, int n_threads,
                     const comm *c, slmc_err *err);
/* Pack into sequences of T tokens (+1 target), hold out valid_frac of them (at least one when
 * there are two or more), shuffle the rest with seed. */
int data_split(train_data *d, int T, double valid_frac, uint64_t seed, slmc_err *err);
void data_free(train_data *d);

/* The next B training sequences: inputs[B*T] and targets[B*T] (reshuffles at epoch end), and
 * when seqs is non-NULL their indices among the training sequences, seqs[B] (a teacher cache's
 * keys). */
void data_next_batch(train_data *d, int B, int32_t *inputs, int32_t *targets, int64_t *seqs);
/* The next n training sequences' indices (reshuffles at epoch end), without their tokens. */
void data_draw(train_data *d, int64_t n, int64_t *seqs);
/* Training sequence s's tokens (0 <= s < n_train). */
void data_train_seq(const train_data *d, int64_t s, int32_t *inputs, int32_t *targets);
/* Held-out sequence i (0 <= i < n_valid). */
void data_valid_seq(const train_data *d, int64_t i, int32_t *inputs, int32_t *targets);

/* Decompressed bytes of a file (.gz / .zst by name, else as is), malloc'd, NUL-terminated. */
int data_read_file(const char *path, char **out, size_t *len, slmc_err *err);

#endif
