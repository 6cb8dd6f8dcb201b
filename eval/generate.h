/* generate.h - `slmc generate` as one library call: continue a prompt with the built-in engine.
 *
 * The prompt (with BOS as the vocabulary asks) is evaluated in one batch; then one token at
 * a time with the KV cache: sample the next token from the last logits (sample.h: top-k, then
 * top-p, then temperature, from a generator seeded with `seed`), hand its text to the piece
 * callback, evaluate it. Generation stops after n_predict tokens, at an end-of-generation token (eos or an
 * end-of-turn token such as <|eot_id|>, <|im_end|>, <end_of_turn>: tokenizer_is_eog), or
 * when the context is full. The same options give the same text. See docs/generate.md.
 */
#ifndef SLMC_GENERATE_H
#define SLMC_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"

typedef struct generate_opts {
    const char *model;     /* any input slmc reads */
    const char *tokenizer; /* llama2.c input: its tokenizer.bin or tokenizer.model; else NULL */
    const char *prompt;    /* the text to continue (UTF-8) */
    int n_predict;         /* at most this many new tokens */
    int n_ctx;             /* context length; 0: the model's training context, at most 4096 */
    float temp;            /* temperature; 0: always the most likely token (greedy) */
    int top_k;             /* keep the k most likely tokens; 0: all */
    float top_p;           /* keep the smallest set whose probability reaches p; 1: all */
    uint64_t seed;         /* the sampler's generator seed */
    int n_threads;         /* threads of the forward passes; 0: omp_get_max_threads() */
} generate_opts;

typedef struct generate_hooks {
    void *ud; /* passed back to the callbacks */
    /* Once, when the model is ready and the prompt tokenized, before any forward pass (a
     * terminal front end echoes the prompt here). May be NULL. */
    int (*start)(void *ud, int n_prompt_tokens);
    /* The bytes of each new token, in order, as soon as it is chosen (tokens that render as
     * nothing are not reported). A piece may end inside a UTF-8 sequence that the next one
     * completes. May be NULL. */
    int (*piece)(void *ud, const char *bytes, size_t len);
    /* A non-zero return from either stops the run with an error. */
} generate_hooks;

typedef struct generate_result {
    int n_prompt;    /* prompt tokens, BOS included */
    int n_generated; /* new tokens chosen (the end-of-text token is not counted) */
    double seconds;  /* from the prompt's forward pass to the last token's */
} generate_result;

/* Returns 0, or -1 with err naming the model (or the prompt) and the cause. h may be NULL. */
int generate_run(const generate_opts *o, const generate_hooks *h, generate_result *r, slmc_err *err);

#endif
