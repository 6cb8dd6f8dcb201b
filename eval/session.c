/* session.c - see session.h */
#include "session.h"

#include <string.h>

int llm_session_open(llm_session *s, const char *path, const char *tokenizer, slmc_err *err) {
    memset(s, 0, sizeof *s);
    const model_open_opts opts = {.tokenizer = tokenizer};
    if (model_open(&s->m, path, &opts, err) != 0) return -1;
    s->open_m = true;
    if (llm_model_init(&s->lm, &s->m, err) != 0) { /* its messages name the path already */
        llm_session_close(s);
        return -1;
    }
    s->open_lm = true;
    return 0;
}

int llm_session_context(llm_session *s, int n_ctx, int n_batch, int n_threads, slmc_err *err) {
    if (llm_context_init(&s->ctx, &s->lm, n_ctx, n_batch, err) != 0) return slmc_fail_prefix(err, s->m.path);
    s->open_ctx = true;
    if (n_threads > 0 && llm_context_set_threads(&s->ctx, n_threads, err) != 0) return slmc_fail_prefix(err, s->m.path);
    return 0;
}

void llm_session_close(llm_session *s) {
    if (s->open_ctx) llm_context_free(&s->ctx);
    if (s->open_lm) llm_model_free(&s->lm);
    if (s->open_m) model_close(&s->m);
    memset(s, 0, sizeof *s);
}
