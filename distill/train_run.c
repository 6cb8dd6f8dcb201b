/* train_run.c - `slmc train` / `slmc distill` from the opened files to the exported model;
 * see train_run.h. */
#include "distill/train_run.h"

#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/types.h"
#include "comm/comm.h"
#include "distill/data.h"
#include "distill/model.h"
#include "eval/llm.h"
#include "eval/tokenizer.h"
#include "formats/model.h"

void train_run_opts_default(train_run_opts *o) {
    memset(o, 0, sizeof *o);
    trainer_opts_default(&o->train);
    o->seed = 1;
    o->valid_frac = 0.02;
    o->eval_every = 100;
    o->eval_seqs = 32;
    o->outtype = GGML_TYPE_F32;
    o->top_k = 64;
}

void train_result_free(train_result *r) {
    free(r->checkpoint);
    r->checkpoint = NULL;
}

/* ---------------------------------------------------------------------------------------
 * reporting
 * ------------------------------------------------------------------------------------- */

static void note(const train_hooks *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const train_hooks *h, const char *fmt, ...) {
    if (!h || !h->note) return;
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    h->note(h->user, text);
}

/* Append one compact JSON line to the metrics file (when there is one) and free o. Reals get
 * 17 significant digits, so two runs can be compared bit for bit. */
static void metrics_line(FILE *f, json_t *o) {
    if (f) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (s) {
            fprintf(f, "%s\n", s);
            fflush(f);
            free(s);
        }
    }
    json_decref(o);
}

static void metrics_step(FILE *f, const train_progress *p, bool distill, const train_model *tm) {
    const train_report *r = &p->report;
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer(r->step));
    json_object_set_new(o, "loss", json_real(r->loss));
    json_object_set_new(o, "ce", json_real(r->ce));
    if (distill) json_object_set_new(o, "kl", json_real(r->kl));
    if (r->align != 0) json_object_set_new(o, "align", json_real(r->align));
    json_object_set_new(o, "lr", json_real(r->lr));
    json_object_set_new(o, "grad_norm", json_real(r->grad_norm));
    json_object_set_new(o, "tokens_per_s", json_real(p->tokens_per_s));
    json_object_set_new(o, "seconds", json_real(p->seconds));
    /* share of the student's forward + backward spent in matrix products */
    json_object_set_new(o, "matmul_share", json_real(tm->sec_graph > 0 ? tm->sec_matmul / tm->sec_graph : 0));
    metrics_line(f, o);
}

/* Evaluate on the held-out text: r->eval_loss, the eval hook, a metrics line. */
static int evaluate(trainer *tr, const train_run_opts *o, const train_hooks *h, FILE *mf, train_result *r,
                    slmc_err *err) {
    double ce;
    if (trainer_eval(tr, o->eval_seqs, &ce, err) != 0) return -1;
    r->eval_loss = ce;
    if (h && h->eval) h->eval(h->user, tr->step, ce);
    json_t *m = json_object();
    json_object_set_new(m, "step", json_integer(tr->step));
    json_object_set_new(m, "eval_loss", json_real(ce));
    json_object_set_new(m, "eval_ppl", json_real(exp(ce)));
    metrics_line(mf, m);
    return 0;
}

static bool stop_requested(const train_run_opts *o) { return o->stop && *o->stop; }

/* ---------------------------------------------------------------------------------------
 * the run
 * ------------------------------------------------------------------------------------- */

/* Open a model (quantized weights read as F32 through the codec, formats/model.h). */
static int open_model(model *m, const char *path, const char *tokenizer, slmc_err *err) {
    model_open_opts mo = {.tokenizer = tokenizer};
    return model_open(m, path, &mo, err);
}

/* Under mpirun every rank runs train_run: each failure point below passes through SYNC, where
 * every rank learns whether any failed (comm_agree), so all leave together with the failing
 * rank's message instead of some waiting in a collective for ranks that have left. */
#define SYNC(status)                                                                             \
    do {                                                                                         \
        if (comm_agree(c, (status), err) != 0) goto done;                                        \
    } while (0)

int train_run(const train_run_opts *o, const train_hooks *hooks, train_result *r, slmc_err *err) {
    memset(r, 0, sizeof *r);
    r->loss = r->eval_loss = NAN;
    if (o->threads < 0) return slmc_fail(err, NULL, "thread count %d must be positive (or 0 for the default)", o->threads);
    const comm *c = o->comm ? o->comm : &comm_solo;
    const bool root = c->rank == 0;           /* rank 0 alone reports and writes files */
    const train_hooks *h = root ? hooks : NULL;
    const int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    trainer_opts topts = o->train;
    topts.comm = c;
    const trainer_opts *to = &topts;
    int rc = -1, st;
    model sm, tmv;
    bool sm_open = false, tmv_open = false, lm_open = false, tm_open = false, tr_open = false;
    llm_model tlm;
    train_model tm;
    train_data data;
    memset(&data, 0, sizeof data);
    trainer tr;
    tokenizer *tok = NULL;
    FILE *mf = NULL;
    teacher_cache *cache = NULL, *save = NULL;

    if (o->save_teacher && c->size > 1)
        SYNC(slmc_fail(err, o->save_teacher, "a teacher cache is written by one process: run --save-teacher without "
                                             "mpirun (the cache then serves every rank of later runs)"));
    /* the student, trained in F32 whatever its type */
    SYNC(open_model(&sm, o->student, o->tokenizer, err));
    sm_open = true;
    SYNC(tm_init_from_model(&tm, &sm, err));
    tm_open = true;
    tm.exec.n_threads = threads;
    if (o->lora_rank > 0) {
        st = tm_add_lora(&tm, o->lora_rank, o->lora_alpha > 0 ? o->lora_alpha : (float)o->lora_rank, o->seed, err);
        if (st != 0) slmc_fail_prefix(err, o->student);
        SYNC(st);
        note(h, "LoRA rank %d on %d matrices: %zu trainable parameters, the rest frozen", o->lora_rank, tm.n_lora,
             tm.n_params - tm.tensors[tm.n_base].offset);
    }
    r->n_params = tm.n_params;
    if (sm.cfg.n_ctx_train > 0 && to->seq_len > sm.cfg.n_ctx_train)
        note(h, "note: --seq-len %d is past the model's context of %lld", to->seq_len, (long long)sm.cfg.n_ctx_train);

    /* the teacher, in the inference engine (every rank has its own) */
    if (o->teacher) {
        SYNC(open_model(&tmv, o->teacher, o->tokenizer, err));
        tmv_open = true;
        st = llm_model_init(&tlm, &tmv, err);
        if (st != 0) slmc_fail_prefix(err, o->teacher);
        SYNC(st);
        lm_open = true;
        const int64_t Vt = tlm.cfg.n_vocab, Vs = tm.cfg.hp.n_vocab;
        if (Vt != Vs)
            note(h, "teacher vocabulary %lld, student %lld: comparing the first %lld ids", (long long)Vt, (long long)Vs,
                 (long long)(Vt < Vs ? Vt : Vs));
    }

    /* the text, with the student's tokenizer; each rank tokenizes its share */
    if (!meta_get_str(&sm.kv, "tokenizer.ggml.model"))
        SYNC(slmc_fail(err, o->student, "has no tokenizer; training needs one to read the text"));
    st = tokenizer_create(&tok, &sm.kv, err);
    if (st != 0) slmc_fail_prefix(err, o->student);
    SYNC(st);
    const double t_tok = omp_get_wtime();
    if (data_load_shared(&data, o->data, tok, o->max_tokens, threads, c, err) != 0) goto done; /* agreed, names the file */
    st = data_split(&data, to->seq_len, o->valid_frac, o->seed, err);
    if (st != 0) slmc_fail_prefix(err, o->data);
    SYNC(st);
    note(h, "%zu tokens in %.1fs: %lld training and %lld held-out sequences of %d", data.n_tokens,
         omp_get_wtime() - t_tok, (long long)data.n_train, (long long)data.n_valid, to->seq_len);

    /* the trainer, perhaps where a checkpoint left off */
    st = trainer_init(&tr, to, &tm, &data, o->teacher ? &tlm : NULL, err);
    if (st != 0) slmc_fail_prefix(err, o->student);
    tr_open = st == 0;
    SYNC(st);
    if (o->teacher_cache) {
        if (o->teacher) SYNC(slmc_fail(err, o->teacher_cache, "give a teacher or a teacher cache, not both"));
        SYNC(tcache_open(&cache, o->teacher_cache, err));
        st = trainer_set_cache(&tr, cache, err);
        if (st != 0) slmc_fail_prefix(err, o->teacher_cache);
        SYNC(st);
        note(h, "teacher: the top %d ids per position from %s", tcache_info(cache)->k, o->teacher_cache);
    }
    if (o->save_teacher) {
        if (!o->teacher) SYNC(slmc_fail(err, o->save_teacher, "saving a teacher cache needs a --teacher"));
        const int64_t Vt = tlm.cfg.n_vocab, Vs = tm.cfg.hp.n_vocab;
        const teacher_cache_info in = {.k = o->top_k, .T = to->seq_len, .V_shared = (int)(Vt < Vs ? Vt : Vs),
                                       .n_seq = data.n_train, .n_tokens = (int64_t)data.n_tokens,
                                       .n_vocab_teacher = Vt, .tau = to->temperature, .data_hash = data.hash};
        SYNC(tcache_create(&save, o->save_teacher, &in, err));
        trainer_set_save(&tr, save);
    }
    if (o->resume) {
        SYNC(trainer_load(&tr, o->resume, err)); /* every rank reads it: a checkpoint resumes on any N */
        note(h, "resumed from %s at step %lld", o->resume, (long long)tr.step);
    }
    if (o->checkpoint) {
        r->checkpoint = strdup(o->checkpoint);
    } else if ((r->checkpoint = malloc(strlen(o->output) + 16))) {
        snprintf(r->checkpoint, strlen(o->output) + 16, "%s.ckpt.h5", o->output);
    }
    if (!r->checkpoint) SYNC(slmc_fail(err, NULL, "out of memory"));
    if (root && o->metrics && !(mf = fopen(o->metrics, "a")))
        SYNC(slmc_fail(err, o->metrics, "cannot open for appending"));
    SYNC(0);

    /* the steps */
    note(h, "%zu parameters, %lld steps of %d x %d x %d tokens%s", tm.n_params, (long long)to->steps, to->grad_accum,
         to->batch, to->seq_len, c->size > 1 ? ", the sequences shared by the ranks" : "");
    if (c->size > 1) note(h, "%d ranks, %d threads each", c->size, threads);
    const double t0 = omp_get_wtime();
    const int64_t first = tr.step;
    int stop = 0;
    /* a stop asked for on any rank (its own signal) stops every rank after the same step */
    SYNC(comm_any(c, stop_requested(o), &stop, err));
    while (tr.step < to->steps && !stop) {
        train_progress p = {.steps = to->steps, .first_step = first};
        if (trainer_step(&tr, &p.report, err) != 0) goto done; /* agreed */
        r->tokens += p.report.tokens;
        r->loss = p.report.loss;
        p.seconds = omp_get_wtime() - t0;
        p.tokens_per_s = r->tokens / (p.seconds > 0 ? p.seconds : 1e-9);
        p.eta_seconds = p.seconds / (double)(tr.step - first) * (double)(to->steps - tr.step);
        if (h && h->step) h->step(h->user, &p);
        metrics_step(mf, &p, o->teacher != NULL || o->teacher_cache != NULL, &tm);
        const bool last = tr.step == to->steps;
        if (o->eval_every > 0 && tr.step % o->eval_every == 0 && !last && data.n_valid > 0 &&
            evaluate(&tr, o, h, mf, r, err) != 0)
            goto done; /* agreed */
        if (o->checkpoint_every > 0 && tr.step % o->checkpoint_every == 0 && !last)
            SYNC(root ? trainer_save(&tr, r->checkpoint, err) : 0);
        SYNC(comm_any(c, stop_requested(o), &stop, err));
    }
    r->step = tr.step;

    /* the teacher cache holds what the run drew, stopped or not */
    if (save) {
        teacher_cache *tc = save;
        save = NULL;
        SYNC(tcache_finish(tc, err));
    }
    /* asked to stop: keep the state to resume from, export nothing */
    if (stop) {
        SYNC(root ? trainer_save(&tr, r->checkpoint, err) : 0);
        r->stopped = true;
        r->seconds = omp_get_wtime() - t0;
        rc = 0;
        goto done;
    }

    /* the end: a last evaluation, the checkpoint, the model (rank 0 writes) */
    if (data.n_valid > 0 && evaluate(&tr, o, h, mf, r, err) != 0) goto done; /* agreed */
    SYNC(root ? trainer_save(&tr, r->checkpoint, err) : 0);
    SYNC(root ? tm_export(&tm, &sm, o->output, o->outtype, err) : 0);
    r->seconds = omp_get_wtime() - t0;
    rc = 0;
done:
    if (mf) fclose(mf);
    tcache_close(save); /* unfinished: removed */
    tcache_close(cache);
    if (tr_open) trainer_free(&tr);
    data_free(&data);
    tokenizer_free(tok);
    if (tm_open) tm_free(&tm);
    if (lm_open) llm_model_free(&tlm);
    if (tmv_open) model_close(&tmv);
    if (sm_open) model_close(&sm);
    return rc;
}
