/* trainer.c - the training loop, its schedule and its checkpoints; see trainer.h. */
#include "distill/trainer.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill/h5io.h"
#include "distill/ops.h"

void trainer_opts_default(trainer_opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = 1000;
    o->seq_len = 256;
    o->batch = 4;
    o->grad_accum = 1;
    o->lr = 3e-4f;
    o->min_lr = 3e-5f;
    o->warmup = 100;
    o->weight_decay = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->adam_eps = 1e-8f;
    o->clip = 1.0f;
    o->temperature = 2.0f;
    o->alpha = 0.5f;
    o->loss = DISTILL_KL;
    o->jsd_beta = 0.5f;
    o->align_weight = 1.0f;
}

/* The teacher's hook: its residual stream after layer il (the micro-batch's B*T tokens, as
 * llm_eval_seqs runs them), kept where a pair asks for it. */
static int keep_teacher_state(void *ud, int il, const float *x, int n, int64_t E) {
    trainer *tr = ud;
    for (int p = 0; p < tr->o.n_align; p++)
        if (tr->o.align_t[p] == il + 1) memcpy(tr->align_t[p], x, sizeof(float) * (size_t)n * E);
    return 0;
}

int trainer_init(trainer *tr, const trainer_opts *o, train_model *tm, train_data *data, const llm_model *teacher,
                 slmc_err *err) {
    memset(tr, 0, sizeof *tr);
    tr->o = *o;
    tr->tm = tm;
    tr->data = data;
    tr->teacher = teacher;
    const int B = o->batch, T = o->seq_len;
    if (B < 1 || T < 2 || o->grad_accum < 1 || o->steps < 1)
        return slmc_fail(err, NULL, "batch, sequence length, accumulation and steps must be positive");
    if (data->T != T) return slmc_fail(err, NULL, "the data is packed for T=%d, training uses %d", data->T, T);
    /* hidden-state alignment: its projections are parameters of the run, added before planning */
    for (int p = 0; p < o->n_align; p++) tr->align_proj[p] = -1;
    if (o->n_align > 0) {
        const int64_t Ls = tm->cfg.hp.n_layer, Cs = tm->cfg.hp.n_embd;
        if (!teacher) return slmc_fail(err, NULL, "hidden-state alignment needs a live teacher (not a teacher cache)");
        if (o->n_align > TRAINER_MAX_ALIGN) return slmc_fail(err, NULL, "at most %d aligned layer pairs", TRAINER_MAX_ALIGN);
        const int64_t Lt = teacher->cfg.n_layer, Ct = teacher->cfg.n_embd;
        for (int p = 0; p < o->n_align; p++) {
            if (o->align_s[p] < 1 || o->align_s[p] > Ls || o->align_t[p] < 1 || o->align_t[p] > Lt)
                return slmc_fail(err, NULL, "aligned layers %d:%d: the student has %lld layers, the teacher %lld (count from 1)",
                                 o->align_s[p], o->align_t[p], (long long)Ls, (long long)Lt);
            if (Cs != Ct) {
                char name[64];
                snprintf(name, sizeof name, "align.%d.%d.proj", o->align_s[p], o->align_t[p]);
                if ((tr->align_proj[p] = tm_add_matrix(tm, name, Ct, Cs, (uint64_t)(p + 1), err)) < 0) return -1;
            }
        }
    }
    /* one micro-batch of B sequences at a time: each is a unit of the step's sum (trainer.h) */
    if (tm_plan(tm, B, T, err) != 0) return -1;
    const comm *c = o->comm ? o->comm : &comm_solo;
    const int64_t K = o->grad_accum;
    if (comm_sum_init(&tr->grad_sum, c, COMM_F32, tm->n_params - tm_first_trainable(tm), K, err) != 0 ||
        comm_sum_init(&tr->loss_sum, c, COMM_F64, 3, K, err) != 0)
        return -1;
    tr->sums_open = true;
    if (o->loss == DISTILL_JSD && !(o->jsd_beta > 0 && o->jsd_beta < 1))
        return slmc_fail(err, NULL, "the JSD's beta must lie strictly between 0 and 1 (it is %g)", o->jsd_beta);
    tr->inputs = malloc(sizeof(int32_t) * (size_t)B * T);
    tr->targets = malloc(sizeof(int32_t) * (size_t)B * T);
    tr->seqs = malloc(sizeof(int64_t) * (size_t)B * o->grad_accum);
    if (!tr->inputs || !tr->targets || !tr->seqs) return slmc_fail(err, NULL, "out of memory");
    if (teacher) {
        /* the micro-batch's B sequences side by side: one pass over the teacher's weights */
        if (llm_context_init_seqs(&tr->tctx, teacher, B, T, err) != 0) return -1;
        tr->tctx_open = true;
        /* the teacher runs on the student's threads */
        if (llm_context_set_threads(&tr->tctx, tm->exec.n_threads, err) != 0) return -1;
        tr->tlogits = malloc(sizeof(float) * (size_t)B * T * (size_t)teacher->cfg.n_vocab);
        if (!tr->tlogits) return slmc_fail(err, NULL, "out of memory for the teacher's logits");
        if (o->n_align > 0) {
            const size_t N = (size_t)B * T, Cs = (size_t)tm->cfg.hp.n_embd, Ct = (size_t)teacher->cfg.n_embd;
            tr->dres_add = calloc((size_t)tm->cfg.hp.n_layer + 1, sizeof(float *));
            tr->align_y = malloc(sizeof(float) * N * Ct);
            if (!tr->dres_add || !tr->align_y) return slmc_fail(err, NULL, "out of memory");
            for (int p = 0; p < o->n_align; p++) {
                tr->align_t[p] = malloc(sizeof(float) * N * Ct);
                if (!tr->dres_add[o->align_s[p]] && !(tr->dres_add[o->align_s[p]] = calloc(N * Cs, sizeof(float))))
                    return slmc_fail(err, NULL, "out of memory");
                tr->dres_buf[p] = tr->dres_add[o->align_s[p]]; /* pairs on one student layer share it */
                if (!tr->align_t[p]) return slmc_fail(err, NULL, "out of memory");
            }
            const llm_hooks hk = {.ud = tr, .layer_out = keep_teacher_state};
            llm_set_hooks(&tr->tctx, &hk);
            tm->dres_add = tr->dres_add;
        }
    }
    return 0;
}

void trainer_free(trainer *tr) {
    if (tr->sums_open) {
        comm_sum_free(&tr->grad_sum);
        comm_sum_free(&tr->loss_sum);
    }
    if (tr->tctx_open) llm_context_free(&tr->tctx);
    free(tr->tlogits);
    free(tr->loss_work);
    free(tr->inputs);
    free(tr->targets);
    free(tr->seqs);
    for (int p = 0; p < TRAINER_MAX_ALIGN; p++) free(tr->align_t[p]);
    if (tr->dres_add) {
        for (int l = 0; l <= tr->tm->cfg.hp.n_layer; l++) free(tr->dres_add[l]);
        tr->tm->dres_add = NULL;
    }
    free(tr->dres_add);
    free(tr->align_y);
    free(tr->topk_ids);
    free(tr->topk_logp);
    free(tr->topk_rest);
    memset(tr, 0, sizeof *tr);
}

int trainer_set_cache(trainer *tr, teacher_cache *cache, slmc_err *err) {
    const teacher_cache_info *in = tcache_info(cache);
    const train_data *d = tr->data;
    const int Vs = (int)tr->tm->cfg.hp.n_vocab, N = tr->o.batch * tr->o.seq_len;
    if (tr->teacher) return slmc_fail(err, NULL, "a run distils from a live teacher or from a teacher cache, not both");
    if (in->data_hash != d->hash || in->n_tokens != (int64_t)d->n_tokens || in->n_seq != d->n_train || in->T != d->T)
        return slmc_fail(err, NULL, "the teacher cache was made for another text or split (%lld tokens, %lld sequences of "
                                    "%d); use the same --data, --seq-len and --valid-frac",
                         (long long)in->n_tokens, (long long)in->n_seq, in->T);
    if (in->tau != tr->o.temperature)
        return slmc_fail(err, NULL, "the teacher cache holds log-probabilities at temperature %g, not %g: pass "
                                    "--temperature %g", in->tau, tr->o.temperature, in->tau);
    if (in->V_shared > Vs)
        return slmc_fail(err, NULL, "the teacher cache compares %d ids, more than the student's vocabulary of %d",
                         in->V_shared, Vs);
    tr->topk_ids = malloc(sizeof(int32_t) * (size_t)N * in->k);
    tr->topk_logp = malloc(sizeof(float) * (size_t)N * in->k);
    tr->topk_rest = malloc(sizeof(float) * (size_t)N);
    if (!tr->topk_ids || !tr->topk_logp || !tr->topk_rest) return slmc_fail(err, NULL, "out of memory for the cache's rows");
    tr->cache = cache;
    return 0;
}

void trainer_set_save(trainer *tr, teacher_cache *save) { tr->save = save; }

double trainer_lr(const trainer_opts *o, int64_t s) {
    int64_t warmup = o->warmup;
    if (warmup > o->steps / 10 && o->steps >= 10) warmup = o->steps / 10; /* never most of a short run */
    if (s < warmup) return o->lr * (double)(s + 1) / (double)warmup;
    int64_t span = o->steps - warmup;
    double progress = span > 1 ? (double)(s - warmup) / (double)(span - 1) : 1.0;
    if (progress > 1) progress = 1;
    return o->min_lr + 0.5 * ((double)o->lr - o->min_lr) * (1.0 + cos(M_PI * progress));
}

/* The hidden-state loss of one micro-batch (N = B·T tokens), w · Σ_pairs mean over tokens and
 * channels of (P h_s − h_t)²; its gradient goes into the projections' grads and into
 * tr->dres_add (which tm_backward adds to the residual stream), scaled for K micro-batches. */
static double align_loss(trainer *tr, int N, int K) {
    train_model *tm = tr->tm;
    const int Cs = (int)tm->cfg.hp.n_embd, Ct = (int)tr->teacher->cfg.n_embd;
    const float w = tr->o.align_weight;
    for (int p = 0; p < tr->o.n_align; p++) memset(tr->dres_buf[p], 0, sizeof(float) * (size_t)N * Cs);
    double total = 0;
    for (int p = 0; p < tr->o.n_align; p++) {
        const float *hs = tm->a.res + (size_t)tr->o.align_s[p] * N * Cs, *ht = tr->align_t[p];
        const int pi = tr->align_proj[p];
        const float *P = pi >= 0 ? tm->params + tm->tensors[pi].offset : NULL;
        float *y = tr->align_y;
        if (P) matmul_forward(y, hs, P, NULL, N, Cs, Ct, &tm->exec);
        else memcpy(y, hs, sizeof(float) * (size_t)N * Ct);
        /* y becomes the gradient of the loss with respect to y */
        const double norm = (double)N * Ct;
        double sq = 0;
        for (size_t i = 0; i < (size_t)N * Ct; i++) {
            const double d = (double)y[i] - ht[i];
            sq += d * d;
            y[i] = (float)(2.0 * w * d / (norm * K));
        }
        total += w * sq / norm;
        if (P) matmul_backward(tr->dres_buf[p], tm->grads + tm->tensors[pi].offset, NULL, y, hs, P, N, Cs, Ct, &tm->exec);
        else
            for (size_t i = 0; i < (size_t)N * Cs; i++) tr->dres_buf[p][i] += y[i];
    }
    return total;
}

/* Each thread's row of exps for the losses (distill/ops.h), grown when the thread count grew. */
static int loss_work(trainer *tr, slmc_err *err) {
    const size_t need = LOSS_WORK_DOUBLES(tr->tm->cfg.hp.n_vocab, tr->tm->exec.n_threads);
    if (tr->loss_work_doubles >= need) return 0;
    double *w = realloc(tr->loss_work, sizeof(double) * need);
    if (!w) return slmc_fail(err, NULL, "out of memory for the losses' rows of %lld doubles", (long long)need);
    tr->loss_work = w;
    tr->loss_work_doubles = need;
    return 0;
}

/* One micro-batch's part of the step: sequences seqs[0..B), forward, losses, backward into
 * tm->grads (zeroed first). losses[0..2] = its summed cross-entropy, τ²·D and alignment, each as
 * the step's mean counts it (cross-entropy and divergence summed over the B·T tokens; alignment
 * a mean already). K = the step's micro-batches. */
static int microbatch_gradient(trainer *tr, const int64_t *seqs, int64_t K, double losses[3], slmc_err *err) {
    train_model *tm = tr->tm;
    const int B = tr->o.batch, T = tr->o.seq_len, N = B * T, Vs = tm->cfg.hp.n_vocab;
    const bool distil = tr->teacher || tr->cache;
    const float alpha = distil ? tr->o.alpha : 1.0f;
    const distill_loss dl = {tr->o.loss, tr->o.temperature, tr->o.jsd_beta};
    for (int b = 0; b < B; b++) data_train_seq(tr->data, seqs[b], tr->inputs + (size_t)b * T, tr->targets + (size_t)b * T);
    for (int i = 0; i < N; i++)
        if (tr->inputs[i] < 0 || tr->inputs[i] >= Vs || tr->targets[i] >= Vs)
            return slmc_fail(err, NULL, "token id %d is outside the student's vocabulary of %d",
                             tr->inputs[i] < 0 || tr->inputs[i] >= Vs ? tr->inputs[i] : tr->targets[i], Vs);
    if (loss_work(tr, err) != 0) return -1;
    tm_zero_grad(tm);
    tm_forward(tm, tr->inputs);
    memset(tm->a.dlogits, 0, sizeof(float) * (size_t)N * Vs);
    /* the step's loss is the mean over all its K·B·T tokens */
    const float scale = 1.0f / ((float)N * (float)K);
    losses[0] = crossentropy_forward_backward(alpha != 0 ? tm->a.dlogits : NULL, tm->a.row_loss, tm->a.logits,
                                              tr->targets, N, Vs, alpha * scale, tr->loss_work, tm->exec.n_threads);
    losses[1] = losses[2] = 0;
    if (tr->teacher) {
        const int Vt = (int)tr->teacher->cfg.n_vocab;
        if (llm_eval_seqs(&tr->tctx, tr->inputs, B, T, tr->tlogits, err) != 0) return -1;
        for (int b = 0; b < B && tr->save; b++)
            if (tcache_put(tr->save, seqs[b], tr->tlogits + (size_t)b * T * Vt, err) != 0) return -1;
        losses[1] = distill_forward_backward(tm->a.dlogits, tm->a.row_loss, tm->a.logits, Vs, tr->tlogits, Vt,
                                             Vs < Vt ? Vs : Vt, N, &dl, scale, tr->loss_work, tm->exec.n_threads);
        if (tr->o.n_align > 0) losses[2] = align_loss(tr, N, (int)K);
    } else if (tr->cache) {
        const teacher_cache_info *in = tcache_info(tr->cache);
        for (int b = 0; b < B; b++)
            if (tcache_get(tr->cache, seqs[b], tr->topk_ids + (size_t)b * T * in->k, tr->topk_logp + (size_t)b * T * in->k,
                           tr->topk_rest + (size_t)b * T, err) != 0)
                return -1;
        const teacher_topk tk = {in->k, tr->topk_ids, tr->topk_logp, tr->topk_rest};
        losses[1] = distill_topk_forward_backward(tm->a.dlogits, tm->a.row_loss, tm->a.logits, Vs, &tk, in->V_shared,
                                                  N, &dl, scale, tm->exec.n_threads);
    }
    tm_backward(tm, tr->inputs);
    return 0;
}

int trainer_step(trainer *tr, train_report *rep, slmc_err *err) {
    train_model *tm = tr->tm;
    const comm *c = tr->o.comm ? tr->o.comm : &comm_solo;
    const int T = tr->o.seq_len;
    const int B = tr->o.batch;
    const int64_t K = tr->o.grad_accum; /* the step's micro-batches */
    const bool distil = tr->teacher || tr->cache;
    const float alpha = distil ? tr->o.alpha : 1.0f;
    const size_t first = tm_first_trainable(tm), n_train = tm->n_params - first;
    memset(rep, 0, sizeof *rep);
    /* every rank draws the whole step's sequences (the same cursor everywhere) and computes
     * its share of the micro-batches; gradients and losses are then summed over the
     * micro-batches in a fixed tree */
    data_draw(tr->data, K * B, tr->seqs);
    comm_sum *grads = &tr->grad_sum, *losses = &tr->loss_sum;
    if (grads->len != n_train) return slmc_fail(err, NULL, "the model's trainable parameters changed after trainer_init");
    comm_sum_set_threads(grads, tm->exec.n_threads);
    int st = comm_sum_reset(grads, K, err);
    if (st == 0) st = comm_sum_reset(losses, K, err);
    for (int64_t u = grads->lo; st == 0 && u < grads->hi; u++) {
        double l[3];
        st = microbatch_gradient(tr, tr->seqs + u * B, K, l, err);
        if (st == 0) st = comm_sum_add(grads, tm->grads + first, err);
        if (st == 0) st = comm_sum_add(losses, l, err);
    }
    double total[3] = {0, 0, 0};
    if (comm_agree(c, st, err) != 0 || comm_sum_finish(grads, tm->grads + first, err) != 0 ||
        comm_sum_finish(losses, total, err) != 0)
        return -1;
    rep->ce = total[0] / ((double)T * B * K);
    rep->kl = total[1] / ((double)T * B * K);
    rep->align = total[2] / K;
    rep->loss = rep->kl + alpha * rep->ce + rep->align;
    rep->grad_norm = tm_grad_norm(tm);
    float gscale = tr->o.clip > 0 && rep->grad_norm > tr->o.clip ? (float)(tr->o.clip / rep->grad_norm) : 1.0f;
    rep->lr = trainer_lr(&tr->o, tr->step);
    tm_adamw(tm, tr->step + 1, (float)rep->lr, tr->o.beta1, tr->o.beta2, tr->o.adam_eps, tr->o.weight_decay, gscale);
    tr->step++;
    rep->step = tr->step;
    rep->tokens = (int64_t)T * B * K;
    return 0;
}

int trainer_eval(trainer *tr, int64_t n_seqs, double *mean_ce, slmc_err *err) {
    train_model *tm = tr->tm;
    const comm *c = tr->o.comm ? tr->o.comm : &comm_solo;
    const int T = tr->o.seq_len, Vs = tm->cfg.hp.n_vocab;
    int64_t n = tr->data->n_valid;
    if (n_seqs > 0 && n_seqs < n) n = n_seqs;
    if (n < 1) return slmc_fail(err, NULL, "there is no held-out text to evaluate on");
    /* each held-out sequence's summed cross-entropy, summed over the sequences in the tree, in
     * order. The model stays planned for the micro-batch: B sequences per forward (a row's
     * logits do not depend on the rows beside it: gemm.c sums every element over K in the same
     * blocks whatever the batch), a short last batch padded with copies of its first sequence
     * whose rows are not scored; each sequence's rows summed on their own, as with one per
     * forward. (Re-planning for one sequence and back freed and refilled every activation
     * buffer twice per evaluation.) */
    const int B = tr->o.batch;
    if (tm_plan(tm, B, T, err) != 0) return -1; /* as trainer_init left it: nothing to do */
    comm_sum sum;
    int st = comm_sum_init(&sum, c, COMM_F64, 1, n, err);
    for (int64_t s0 = sum.lo; st == 0 && s0 < sum.hi; s0 += B) {
        const int nb = sum.hi - s0 < B ? (int)(sum.hi - s0) : B;
        for (int b = 0; b < B; b++) {
            int32_t *in = tr->inputs + (size_t)b * T, *tg = tr->targets + (size_t)b * T;
            data_valid_seq(tr->data, s0 + (b < nb ? b : 0), in, tg);
            for (int i = 0; i < T && b < nb; i++)
                if (in[i] >= Vs || tg[i] >= Vs) {
                    st = slmc_fail(err, NULL, "token id outside the student's vocabulary of %d", Vs);
                    break;
                }
        }
        if (st != 0) break;
        tm_forward(tm, tr->inputs);
        for (int b = 0; st == 0 && b < nb; b++) {
            const size_t row = (size_t)b * T;
            double ce = crossentropy_forward_backward(NULL, tm->a.row_loss + row, tm->a.logits + row * (size_t)Vs,
                                                      tr->targets + row, T, Vs, 1, NULL, tm->exec.n_threads);
            st = comm_sum_add(&sum, &ce, err);
        }
    }
    double total = 0;
    if (comm_agree(c, st, err) != 0 || comm_sum_finish(&sum, &total, err) != 0) {
        comm_sum_free(&sum);
        return -1;
    }
    comm_sum_free(&sum);
    *mean_ce = total / ((double)n * T);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * checkpoints
 *
 * One HDF5 file, 1-D datasets:
 *   params, adam_m, adam_v  float32 [n_params]   weights and AdamW moments
 *   perm                    int64 [n_train]      this epoch's sequence order
 *   state                   int64 [8]            step, data pos, epoch, n_params, n_tokens, T,
 *                                                n_train, n_layer
 *   rng, data_hash          uint64 [1]           shuffle RNG state, FNV-1a of the tokens
 * ------------------------------------------------------------------------------------- */

enum { ST_STEP, ST_POS, ST_EPOCH, ST_NPARAMS, ST_NTOKENS, ST_T, ST_NTRAIN, ST_NLAYER, ST_COUNT };

int trainer_save(const trainer *tr, const char *path, slmc_err *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* HDF5 errors come back as values, unprinted */
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp) return slmc_fail(err, path, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    const train_model *tm = tr->tm;
    const train_data *d = tr->data;
    int64_t st[ST_COUNT] = {0};
    st[ST_STEP] = tr->step;
    st[ST_POS] = d->pos;
    st[ST_EPOCH] = d->epoch;
    st[ST_NPARAMS] = (int64_t)tm->n_params;
    st[ST_NTOKENS] = (int64_t)d->n_tokens;
    st[ST_T] = d->T;
    st[ST_NTRAIN] = d->n_train;
    st[ST_NLAYER] = tm->cfg.hp.n_layer;
    hid_t f = h5_create_file(tmp);
    if (f < 0) { free(tmp); return slmc_fail(err, path, "cannot create the checkpoint file %s.tmp", path); }
    int rc = h5_write_1d(f, "params", H5T_NATIVE_FLOAT, tm->n_params, tm->params) == 0 &&
                     h5_write_1d(f, "adam_m", H5T_NATIVE_FLOAT, tm->n_params, tm->adam_m) == 0 &&
                     h5_write_1d(f, "adam_v", H5T_NATIVE_FLOAT, tm->n_params, tm->adam_v) == 0 &&
                     h5_write_1d(f, "perm", H5T_NATIVE_INT64, (hsize_t)d->n_train, d->perm) == 0 &&
                     h5_write_1d(f, "state", H5T_NATIVE_INT64, ST_COUNT, st) == 0 &&
                     h5_write_1d(f, "rng", H5T_NATIVE_UINT64, 1, &d->rng) == 0 &&
                     h5_write_1d(f, "data_hash", H5T_NATIVE_UINT64, 1, &d->hash) == 0
                 ? 0 : -1;
    if (H5Fclose(f) < 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) {
        remove(tmp);
        slmc_fail(err, path, "cannot write the checkpoint (disk full?)");
    }
    free(tmp);
    return rc;
}

int trainer_load(trainer *tr, const char *path, slmc_err *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    train_model *tm = tr->tm;
    train_data *d = tr->data;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return slmc_fail(err, path, "cannot open as HDF5");
    int64_t st[ST_COUNT];
    uint64_t rng = 0, hash = 0;
    int rc = -1;
    if (h5_read_1d(f, "state", H5T_NATIVE_INT64, ST_COUNT, st, path, "a slmc training checkpoint", err) != 0) goto done;
    if (st[ST_NPARAMS] != (int64_t)tm->n_params || st[ST_NLAYER] != tm->cfg.hp.n_layer) {
        slmc_fail(err, path, "holds a model of %lld parameters in %lld layers; this one has %zu in %lld",
                  (long long)st[ST_NPARAMS], (long long)st[ST_NLAYER], tm->n_params, (long long)tm->cfg.hp.n_layer);
        goto done;
    }
    if (h5_read_1d(f, "data_hash", H5T_NATIVE_UINT64, 1, &hash, path, "a slmc training checkpoint", err) != 0) goto done;
    if (st[ST_NTOKENS] != (int64_t)d->n_tokens || hash != d->hash || st[ST_T] != d->T || st[ST_NTRAIN] != d->n_train) {
        slmc_fail(err, path, "was trained on another text or split (%lld tokens, T=%lld); resume with the same --data, "
                  "--seq-len and split", (long long)st[ST_NTOKENS], (long long)st[ST_T]);
        goto done;
    }
    if (h5_read_1d(f, "params", H5T_NATIVE_FLOAT, tm->n_params, tm->params, path, "a slmc training checkpoint", err) != 0 ||
        h5_read_1d(f, "adam_m", H5T_NATIVE_FLOAT, tm->n_params, tm->adam_m, path, "a slmc training checkpoint", err) != 0 ||
        h5_read_1d(f, "adam_v", H5T_NATIVE_FLOAT, tm->n_params, tm->adam_v, path, "a slmc training checkpoint", err) != 0 ||
        h5_read_1d(f, "perm", H5T_NATIVE_INT64, (hsize_t)d->n_train, d->perm, path, "a slmc training checkpoint", err) != 0 ||
        h5_read_1d(f, "rng", H5T_NATIVE_UINT64, 1, &rng, path, "a slmc training checkpoint", err) != 0)
        goto done;
    tr->step = st[ST_STEP];
    d->pos = st[ST_POS];
    d->epoch = st[ST_EPOCH];
    d->rng = rng;
    rc = 0;
done:
    H5Fclose(f);
    return rc;
}
