/* prune_run.c - `slmc prune` after the argument parsing (see prune_run.h). */
#include "prune_run.h"

#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/ranks.h"
#include "eval/text.h"
#include "formats/hf.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void prune_run_opts_default(prune_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->outtype = -1;
    o->method = PRUNE_ACTIVATION;
    o->chunks = PRUNE_RUN_CHUNKS;
    o->layer_ppl = true;
    o->seed = PRUNE_RUN_SEED;
}

bool prune_amount_parse(const char *s, bool allow_suffix, prune_amount *a) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !(v < 1e15)) return false; /* also refuses nan and inf */
    double mul = 1;
    if (*end && allow_suffix) {
        char u = (char)toupper((unsigned char)*end);
        mul = u == 'K' ? 1e3 : u == 'M' ? 1e6 : u == 'B' || u == 'G' ? 1e9 : 0;
        if (mul == 0 || end[1]) return false;
    } else if (*end) {
        return false;
    }
    if (v * mul > 1e15) return false;
    a->set = true;
    if (mul == 1 && strchr(s, '.') && v <= 1) {
        a->frac = v;
    } else {
        a->frac = 0;
        a->n = (uint64_t)llround(v * mul);
    }
    return true;
}

int prune_run_check(const prune_run_opts *o, slmc_err *err) {
    bool axes = o->ffn.set || o->heads.set || o->layers.set || o->n_drop_layers || o->hidden.set;
    bool rec = o->reconstruct || o->refit;
    if (!o->out && !o->scores_out) return slmc_fail(err, NULL, "give OUT (or --scores F to only compute the scores)");
    if (o->out && !axes && !o->target.set)
        return slmc_fail(err, NULL, "nothing to prune: give --ffn, --heads, --layers, --drop-layers, --hidden or --target-params");
    if (axes && o->target.set) return slmc_fail(err, NULL, "--target-params chooses the axes itself; give it alone");
    if (o->layers.set && o->n_drop_layers) return slmc_fail(err, NULL, "give --layers or --drop-layers, not both");
    if (!o->from_scores && o->method == PRUNE_ACTIVATION && !o->calib)
        return slmc_fail(err, NULL, "--method activation needs --calib FILE (or use --from-scores F)");
    if (o->reconstruct && o->refit) return slmc_fail(err, NULL, "give --reconstruct or --refit, not both");
    if (rec && !o->calib)
        return slmc_fail(err, NULL, "--%s needs --calib FILE (the activations it refits on)", o->reconstruct ? "reconstruct" : "refit");
    if (rec && !o->out) return slmc_fail(err, NULL, "--reconstruct / --refit need OUT");
    if (o->chunks < 1) return slmc_fail(err, NULL, "--chunks must be at least 1, not %d", o->chunks);
    return 0;
}

/* ---- calibration ------------------------------------------------------------------------ */

/* The calibration chunks, tokenized on first use and shared by the scores and the refit. */
typedef struct calib_text {
    bool loaded;
    int n_ctx;          /* tokens per chunk */
    text_tokens t;      /* at least the text's first chunks * n_ctx tokens (all of a shorter text) */
} calib_text;

static int calib_get(calib_text *ct, const prune_run_opts *o, const model *m, slmc_err *err) {
    if (ct->loaded) return 0;
    ct->n_ctx = o->n_ctx > 0 ? o->n_ctx : PRUNE_RUN_CTX;
    if (o->n_ctx <= 0 && m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train < ct->n_ctx) ct->n_ctx = (int)m->cfg.n_ctx_train;
    size_t want = (size_t)o->chunks * (size_t)ct->n_ctx;
    if (text_tokenize(m, o->calib, want, "the calibration pass", &ct->t, err) != 0) return -1;
    if (ct->t.n < (size_t)ct->n_ctx) {
        slmc_fail(err, o->calib, "has %zu tokens, fewer than one chunk of %d", ct->t.n, ct->n_ctx);
        text_tokens_free(&ct->t);
        return -1;
    }
    ct->loaded = true;
    return 0;
}

/* The hooks' progress for a pass over chunks (importance.h and reconstruct.h count in ints). */
static void chunk_progress(void *ud, int done, int total) {
    const prune_hooks *h = ud;
    if (h->progress.fn) h->progress.fn(h->progress.ud, (uint64_t)done, (uint64_t)total, NULL);
}

static void stage(const prune_hooks *h, const char *name) {
    if (h && h->stage) h->stage(h->ud, name);
}

/* Read the scores, or compute them with the chosen method (every rank; the outcome agreed). */
static int get_scores(prune_scores *s, const prune_run_opts *o, const prune_hooks *h, const model *m,
                      calib_text *ct, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    int rc;
    if (o->from_scores) {
        rc = prune_scores_read(s, o->from_scores, err);
        if (rc == 0 && (rc = prune_scores_check(s, m, o->from_scores, err)) != 0) prune_scores_free(s);
        return comm_agree(job, rc, err);
    }
    if (comm_agree(job, prune_scores_init(s, m, o->method, err), err) != 0) {
        prune_scores_free(s);
        return -1;
    }
    if (o->method == PRUNE_MAGNITUDE) {
        rc = comm_agree(job, prune_score_magnitude(s, m, err), err);
    } else if (o->method == PRUNE_RANDOM) {
        rc = comm_agree(job, prune_score_random(s, m, o->seed, err), err);
    } else {
        rc = comm_agree(job, calib_get(ct, o, m, err), err);
        if (rc == 0) {
            stage(h, "calibrate");
            /* every rank evaluates its share of the chunks (collective; errors come back agreed) */
            prune_calib_opts co = {.n_ctx = ct->n_ctx, .max_chunks = o->chunks, .bos = ct->t.bos, .layer_ppl = o->layer_ppl,
                                   .progress = h ? chunk_progress : NULL, .progress_ud = (void *)h, .comm = job};
            rc = prune_score_activation(s, m, ct->t.ids, ct->t.n, &co, err);
            stage(h, NULL);
            if (rc != 0 && job->size == 1) slmc_fail_prefix(err, o->in);
            snprintf(s->calib, sizeof s->calib, "%s", o->calib);
        }
    }
    if (rc != 0) prune_scores_free(s);
    return rc;
}

/* ---- what to keep ----------------------------------------------------------------------- */

static int64_t resolve(const prune_amount *a, int64_t of) {
    if (!a->set) return 0;
    return a->frac > 0 ? (int64_t)llround(a->frac * (double)of) : (int64_t)a->n;
}

/* The request for prune_select: the axes' counts (drop[n_layer] receives the dropped layers),
 * or the shape the parameter target finds. */
static int make_request(prune_request *req, bool *drop, const prune_run_opts *o, const model *m, const prune_scores *s,
                        slmc_err *err) {
    memset(req, 0, sizeof *req);
    const model_config *c = &m->cfg;
    if (o->target.set) {
        prune_plan id;
        if (prune_plan_identity(&id, m, err) != 0) return -1;
        uint64_t total = o->target_blocks ? prune_block_params(&id, m) : model_param_count(m);
        prune_plan_free(&id);
        uint64_t target = o->target.frac > 0 ? (uint64_t)llround(o->target.frac * (double)total) : o->target.n;
        return prune_search_target(req, m, s, target, o->target_blocks, err);
    }
    req->keep_ffn = resolve(&o->ffn, c->n_ff);
    req->keep_heads = resolve(&o->heads, c->n_head);
    req->head_mode = o->head_groups ? PRUNE_HEADS_GROUPS : PRUNE_HEADS_AUTO;
    req->keep_layers = resolve(&o->layers, c->n_layer);
    req->keep_hidden = resolve(&o->hidden, c->n_embd);
    for (int i = 0; i < o->n_drop_layers; i++) drop[o->drop_layers[i]] = true; /* checked by check_drop_layers */
    if (o->n_drop_layers) req->drop_layers = drop;
    return 0;
}

/* The dropped layers must be blocks of the model (checked before any long pass). */
static int check_drop_layers(const prune_run_opts *o, const model *m, slmc_err *err) {
    for (int i = 0; i < o->n_drop_layers; i++)
        if (o->drop_layers[i] < 0 || o->drop_layers[i] >= m->cfg.n_layer)
            return slmc_fail(err, m->path, "--drop-layers: block %lld is not one of the model's blocks 0..%lld",
                             (long long)o->drop_layers[i], (long long)m->cfg.n_layer - 1);
    return 0;
}

/* ---- the run ---------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* reconstruct / refit: prune_reconstruct on r's plan, over the calibration chunks (every rank
 * its share; the outcome agreed). */
static int refit(const prune_run_opts *o, const prune_hooks *h, const model *m, calib_text *ct, prune_result *r,
                 slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    if (comm_agree(job, calib_get(ct, o, m, err), err) != 0) return -1;
    stage(h, o->reconstruct ? "reconstruct" : "refit");
    prune_recon_opts ro = {.n_ctx = ct->n_ctx, .max_chunks = o->chunks, .bos = ct->t.bos, .damp = o->damp,
                           .reselect = o->reconstruct, .progress = h ? chunk_progress : NULL, .progress_ud = (void *)h,
                           .comm = job};
    int rc = prune_reconstruct(&r->plan, m, ct->t.ids, ct->t.n, &ro, &r->recon, err);
    stage(h, NULL);
    /* an agreed message ("rank R: ...") stays as every rank received it */
    return rc != 0 ? (job->size == 1 ? slmc_fail_prefix(err, o->in) : -1) : 0;
}

/* The summary's figures: shapes, parameters before and after, the dropped layers. */
static int summarize(prune_result *r, const model *m, const model *out, slmc_err *err) {
    prune_plan id;
    if (prune_plan_identity(&id, m, err) != 0) return -1;
    r->params_in = model_param_count(m);
    r->block_params_in = prune_block_params(&id, m);
    prune_plan_free(&id);
    r->params_out = model_param_count(out);
    r->block_params_out = prune_block_params(&r->plan, m);
    r->params_removed_frac = 1.0 - (double)r->params_out / (double)r->params_in;
    r->block_params_removed_frac = 1.0 - (double)r->block_params_out / (double)r->block_params_in;
    r->shape_in = m->cfg;
    r->shape_out = out->cfg;
    const int64_t n_layer = r->plan.n_layer_in;
    if (!(r->dropped = malloc((size_t)(n_layer > 0 ? n_layer : 1) * sizeof *r->dropped)))
        return slmc_fail(err, m->path, "out of memory");
    for (int64_t l = 0; l < n_layer; l++)
        if (!r->plan.keep_layer[l]) r->dropped[r->n_dropped++] = l;
    return 0;
}

/* Plan, refit, build and write the pruned model; the figures go to r. Every rank plans (and
 * refits, sharing the chunks); rank 0 alone builds and writes the model; the outcome is agreed. */
static int prune_and_write(const prune_run_opts *o, const prune_hooks *h, const model *m, const prune_scores *s,
                           calib_text *ct, prune_result *r, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    model out;
    memset(&out, 0, sizeof out);
    prune_request req;
    bool *drop = calloc(m->cfg.n_layer > 0 ? (size_t)m->cfg.n_layer : 1, sizeof *drop);
    int rc = -1, st = drop ? 0 : slmc_fail(err, m->path, "out of memory");
    if (st == 0 && make_request(&req, drop, o, m, s, err) != 0) st = -1;
    if (st == 0 && prune_select(&r->plan, m, s, &req, err) != 0) st = -1;
    if (comm_agree(job, st, err) != 0) goto done;
    if ((o->reconstruct || o->refit) && refit(o, h, m, ct, r, err) != 0) goto done;
    if (job->rank == 0) {
        st = prune_apply(&out, m, &r->plan, err);
        if (st == 0) st = summarize(r, m, &out, err);
        if (st == 0) {
            stage(h, "write");
            const slmc_progress *progress = h ? &h->progress : NULL;
            st = ends_with(o->out, ".gguf") ? model_write_gguf(&out, o->out, o->outtype, progress, err)
                                            : hf_write(&out, o->out, o->outtype, HF_DEFAULT_SHARD_SIZE, progress, err);
            stage(h, NULL);
        }
    }
    rc = comm_agree(job, st, err);
done:
    free(drop);
    model_close(&out);
    return rc;
}

/* The run on the threads prune_run chose. */
static int run(const prune_run_opts *o, const prune_hooks *h, prune_result *r, slmc_err *err) {
    const comm *job = ranks_job(o->comm);
    const double t0 = now_seconds();
    model m;
    model_open_opts mo = {.tokenizer = o->tokenizer};
    /* every rank opens the input; each step after is agreed among the ranks */
    const int opened = model_open(&m, o->in, &mo, err);
    if (comm_agree(job, opened, err) != 0) {
        if (opened == 0) model_close(&m); /* another rank failed */
        return -1;
    }
    prune_scores s;
    memset(&s, 0, sizeof s);
    calib_text ct = {0};
    int rc = comm_agree(job, check_drop_layers(o, &m, err), err);
    if (rc == 0) rc = get_scores(&s, o, h, &m, &ct, err);
    if (rc == 0) {
        r->method = s.method;
        r->calib_ppl = s.base_ppl;
    }
    if (rc == 0 && o->scores_out) /* rank 0 writes the scores */
        rc = comm_agree(job, job->rank == 0 ? prune_scores_write(&s, o->scores_out, err) : 0, err);
    if (rc == 0 && o->out) {
        rc = prune_and_write(o, h, &m, &s, &ct, r, err);
        r->written = rc == 0;
    }
    r->seconds = now_seconds() - t0;
    text_tokens_free(&ct.t);
    prune_scores_free(&s);
    model_close(&m);
    if (rc != 0) prune_result_free(r);
    return rc;
}

int prune_run(const prune_run_opts *o, const prune_hooks *h, prune_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    r->calib_ppl = NAN;
    if (prune_run_check(o, err) != 0) return comm_agree(ranks_job(o->comm), -1, err);
    const int caller_threads = omp_get_max_threads();
    if (o->n_threads > 0) omp_set_num_threads(o->n_threads);
    int rc = run(o, h, r, err);
    omp_set_num_threads(caller_threads);
    return rc;
}

void prune_result_free(prune_result *r) {
    prune_plan_free(&r->plan);
    free(r->dropped);
    memset(r, 0, sizeof *r);
    r->calib_ppl = NAN;
}
