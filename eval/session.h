/* session.h - a model ready to run on the built-in engine: the model view, its weights bound
 * for the forward pass, and one context (KV cache and scratch). eval, imatrix and generate
 * each open one (eval two, with a base model) instead of repeating the three steps.
 *
 *   llm_session s;
 *   llm_session_open(&s, "model.gguf", NULL, &err);            view + weights
 *   llm_session_context(&s, n_ctx, n_batch, n_threads, &err);  then the context
 *   ... llm_eval_out(&s.ctx, ...) ...
 *   llm_session_close(&s);                                     whatever was opened
 */
#ifndef SLMC_SESSION_H
#define SLMC_SESSION_H

#include <stdbool.h>

#include "eval/llm.h"
#include "formats/error.h"
#include "formats/model.h"

typedef struct llm_session {
    model m;          /* the model view (any input slmc reads; quantized tensors readable as F32) */
    llm_model lm;     /* its weights, referenced in place */
    llm_context ctx;  /* valid after llm_session_context */
    bool open_m, open_lm, open_ctx; /* what llm_session_close has to free */
} llm_session;

/* Open the model at path (tokenizer: a llama2.c tokenizer file, or NULL) and bind its weights.
 * Errors name the path. On failure nothing stays open (llm_session_close is still safe). */
int llm_session_open(llm_session *s, const char *path, const char *tokenizer, slmc_err *err);

/* Create the context: n_ctx positions, up to n_batch tokens per step, n_threads threads
 * (0: omp_get_max_threads()). Errors name the model's path. */
int llm_session_context(llm_session *s, int n_ctx, int n_batch, int n_threads, slmc_err *err);

/* Free what was opened; s may be zeroed, half open or fully open. */
void llm_session_close(llm_session *s);

#endif
