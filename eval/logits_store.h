/* logits_store.h - the base model's scored log-probabilities on disk, for KL divergence
 * without running the base model again (`slmc eval --save-logits F`, then `--kl-logits F`).
 *
 * An HDF5 file (readable with h5py), written atomically:
 *   /tokens    int32  [n_chunk * n_ctx]            the evaluated chunks' tokens
 *   /logprobs  uint16 [n_chunk * n_scored][n_u16]  llama.cpp's compressed rows (perplexity.h),
 *              chunked one eval chunk at a time, byte-shuffled and deflated
 *   attributes on /: format "slmc-kld-base", version 1, n_ctx, n_vocab, n_chunk, n_scored
 */
#ifndef SLMC_LOGITS_STORE_H
#define SLMC_LOGITS_STORE_H

#include <stdint.h>

#include "formats/error.h"

typedef struct logits_store {
    char *path;          /* final path (owned) */
    char *tmp_path;      /* writer: temporary file beside it (owned), NULL for a reader */
    int64_t file;        /* hid_t of the open file */
    int64_t d_tokens;    /* hid_t of /tokens */
    int64_t d_rows;      /* hid_t of /logprobs */
    int n_ctx, n_chunk, n_scored;
    int64_t n_vocab;
    int64_t n_u16;       /* uint16 per row */
} logits_store;

/* Writer: n_chunk chunks of n_ctx tokens, n_scored rows each. */
int logits_store_create(logits_store *s, const char *path, int n_ctx, int64_t n_vocab, int n_chunk, int n_scored,
                        slmc_err *err);
/* Chunk c: its n_ctx tokens and its n_scored packed rows ([n_scored][n_u16]). */
int logits_store_put(logits_store *s, int c, const int32_t *tokens, const uint16_t *rows, slmc_err *err);
/* Close and rename into place. */
int logits_store_finish(logits_store *s, slmc_err *err);

/* Reader. */
int logits_store_open(logits_store *s, const char *path, slmc_err *err);
int logits_store_get(logits_store *s, int c, int32_t *tokens, uint16_t *rows, slmc_err *err);

/* Close without committing (a writer's temporary file is removed). */
void logits_store_close(logits_store *s);

#endif
