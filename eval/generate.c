/* generate.c - continue a prompt (see generate.h). */
#include "generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/sample.h"
#include "eval/session.h"
#include "eval/tokenizer.h"
#include "formats/meta.h"

#define GENERATE_MAX_DEFAULT_CTX 4096 /* the default context: the model's, at most this */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The token loop: logits hold the last prompt position's; pos is the next free position. */
static int generate_tokens(const generate_opts *o, const generate_hooks *h, llm_session *s, const tokenizer *tok,
                           sampler *smp, float *logits, int pos, int n_ctx, generate_result *r, slmc_err *err) {
    const size_t cap = tokenizer_max_piece(tok) + 1;
    char *piece = malloc(cap);
    if (!piece) return slmc_fail(err, o->model, "out of memory");
    int rc = 0;
    while (rc == 0 && r->n_generated < o->n_predict && pos < n_ctx) {
        int32_t t = sampler_next(smp, logits);
        if (tokenizer_is_eog(tok, t)) break; /* eos, or an end-of-turn token (llama.cpp's EOG set) */
        const int len = tokenizer_piece(tok, t, piece, cap);
        if (len > 0 && h && h->piece && h->piece(h->ud, piece, (size_t)len) != 0)
            rc = slmc_fail(err, o->model, "generation stopped after %d tokens", r->n_generated);
        if (rc != 0) break;
        r->n_generated++;
        rc = llm_eval_out(&s->ctx, &t, 1, pos, 0, logits, err);
        pos++;
    }
    free(piece);
    return rc;
}

int generate_run(const generate_opts *o, const generate_hooks *h, generate_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    llm_session s;
    tokenizer *tok = NULL;
    sampler smp;
    bool have_sampler = false;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    int rc = -1;

    if (llm_session_open(&s, o->model, o->tokenizer, err) != 0) return -1;
    if (!meta_get_str(&s.m.kv, "tokenizer.ggml.model")) { slmc_fail(err, o->model, "has no tokenizer"); goto done; }
    if (tokenizer_create(&tok, &s.m.kv, err) != 0) { slmc_fail_prefix(err, o->model); goto done; }
    if (tokenizer_encode(tok, o->prompt, strlen(o->prompt), true, false, &ids, &n_ids, err) != 0) goto done;
    int n_ctx = o->n_ctx;
    if (n_ctx <= 0) {
        const int64_t train = s.m.cfg.n_ctx_train;
        n_ctx = train > 0 && train < GENERATE_MAX_DEFAULT_CTX ? (int)train : GENERATE_MAX_DEFAULT_CTX;
    }
    if ((int64_t)n_ids + 1 > n_ctx) {
        slmc_fail(err, o->model, "the prompt has %zu tokens, more than the context of %d", n_ids, n_ctx);
        goto done;
    }
    if (llm_session_context(&s, n_ctx, (int)n_ids, o->n_threads, err) != 0) goto done;
    if (sampler_init(&smp, s.lm.cfg.n_vocab, o->temp, o->top_k, o->top_p, o->seed) != 0) {
        slmc_fail(err, o->model, "out of memory");
        goto done;
    }
    have_sampler = true;
    if (!(logits = malloc(sizeof(float) * (size_t)s.lm.cfg.n_vocab))) {
        slmc_fail(err, o->model, "out of memory");
        goto done;
    }
    r->n_prompt = (int)n_ids;
    if (h && h->start && h->start(h->ud, r->n_prompt) != 0) {
        slmc_fail(err, o->model, "generation stopped before the first token");
        goto done;
    }

    const double t0 = now_seconds();
    /* the whole prompt in one batch; keep the last position's logits */
    if (llm_eval_out(&s.ctx, ids, (int)n_ids, 0, (int)n_ids - 1, logits, err) != 0) goto done;
    rc = generate_tokens(o, h, &s, tok, &smp, logits, (int)n_ids, n_ctx, r, err);
    r->seconds = now_seconds() - t0;
done:
    free(logits);
    free(ids);
    if (have_sampler) sampler_free(&smp);
    if (tok) tokenizer_free(tok);
    llm_session_close(&s);
    return rc;
}
