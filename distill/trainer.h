/* trainer.h - the training loop behind `slmc train` and `slmc distill`.
 *
 * One optimizer step:
 *   the next grad_accum micro-batches of B sequences, each in one pass:
 *       [ student forward ─> loss ─> dlogits ─> student backward ─> its gradient ]
 *   ─> the grad_accum gradients summed in a fixed tree over the micro-batch index (comm.h)
 *   ─> global gradient norm, clipped ─> AdamW at the scheduled learning rate
 * The micro-batches are the units of the sum so that under mpirun each rank can take a share of
 * them and the sum still has the same bits for any number of ranks (docs/mpi.md): the written
 * model, the checkpoints and the logged losses do not depend on N. Ranks beyond grad_accum have
 * nothing to do: use --grad-accum N or more to keep N ranks busy. (Units of one sequence would
 * split finer, but 256-row products and a gradient vector per sequence cost a third of the
 * speed of one process.)
 * The loss is α·CE on the text when there is no teacher (α forced to 1), or
 *   τ²·D(teacher, student) + α·CE
 * with D one of ops.h's divergences (KL both ways, JSD, TVD), the teacher's logits from the
 * evaluator's engine (any model llm.h runs, quantized or not) compared over the ids both
 * vocabularies share (the first min(Vs, Vt)), or the teacher's top-k log-probabilities read
 * from a teacher cache (teacher_cache.h), which a run with a live teacher can also write.
 * With a live teacher, hidden-state alignment adds w · Σ_pairs mean((P h_s − h_t)²) between the
 * student's residual stream after s layers and the teacher's after t (Minitron's distillation of
 * intermediate states), P a learned [C_t][C_s] projection when the widths differ.
 *
 * Schedule: linear warmup to lr over `warmup` steps, then cosine decay to min_lr at `steps`.
 * A checkpoint (HDF5) holds the weights, both AdamW moments, the step, the data cursor and its
 * RNG state, so trainer_load + the same options continue bitwise identically.
 */
#ifndef SLMC_DISTILL_TRAINER_H
#define SLMC_DISTILL_TRAINER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "comm/comm.h"
#include "distill/data.h"
#include "distill/model.h"
#include "distill/ops.h"
#include "distill/teacher_cache.h"
#include "eval/llm.h"
#include "formats/error.h"

typedef struct trainer_opts {
    int64_t steps;        /* optimizer steps in the whole run (the schedule's length) */
    int seq_len;          /* T */
    int batch;            /* B sequences per micro-batch */
    int grad_accum;       /* micro-batches per optimizer step */
    float lr, min_lr;     /* peak and final learning rate */
    int64_t warmup;       /* warmup steps */
    float weight_decay;   /* AdamW decoupled decay (matrices only) */
    float beta1, beta2, adam_eps;
    float clip;           /* global gradient-norm clip, 0 = off */
    float temperature;    /* τ of the distillation loss */
    float alpha;          /* weight of the cross-entropy term (1 without a teacher) */
    distill_kind loss;    /* the divergence (DISTILL_KL: KL(teacher ‖ student)) */
    float jsd_beta;       /* DISTILL_JSD: the teacher's weight in the mixture (0.5) */
    int n_align;          /* hidden-state pairs (live teacher only), at most TRAINER_MAX_ALIGN */
    int align_s[8], align_t[8]; /* student / teacher layers counted from 1: the state after that many */
    float align_weight;   /* w (default 1) */
    const comm *comm;     /* the job whose ranks share each step's micro-batches (comm.h); NULL: one
                             process. The results are the same bits for any number of ranks. */
} trainer_opts;
#define TRAINER_MAX_ALIGN 8

/* Defaults: lr 3e-4 → 3e-5, warmup 100 (capped at steps/10), wd 0.1, betas 0.9/0.95, eps 1e-8,
 * clip 1, τ 2, α 0.5, forward KL (JSD β 0.5), B 4, T 256, grad_accum 1. */
void trainer_opts_default(trainer_opts *o);

typedef struct trainer {
    trainer_opts o;
    train_model *tm;          /* the student (not owned) */
    train_data *data;         /* the text, split (not owned) */
    const llm_model *teacher; /* NULL for plain training (not owned) */
    llm_context tctx;         /* the teacher's context, B sequences of T positions */
    bool tctx_open;
    float *tlogits;           /* [B*T][Vt] teacher logits of the micro-batch */
    double *loss_work;        /* the losses' rows of exps (LOSS_WORK_DOUBLES), loss_work_doubles of them */
    size_t loss_work_doubles;
    teacher_cache *cache;     /* instead of the teacher: its saved top-k (not owned; trainer_set_cache) */
    teacher_cache *save;      /* with the teacher: where to keep each drawn sequence's top-k (not owned) */
    int32_t *topk_ids;        /* [B*T][k] the cache's rows of the micro-batch */
    float *topk_logp;         /* [B*T][k] */
    float *topk_rest;         /* [B*T] */
    int32_t *inputs, *targets;/* [B*T] */
    int64_t *seqs;            /* [B*grad_accum] the step's training sequence indices */
    /* hidden-state alignment */
    float *align_t[8];        /* [B*T][C_t] the teacher's states of each pair (filled by its hook) */
    int align_proj[8];        /* tensor index of each pair's projection, or -1 (same width) */
    float *dres_buf[8];       /* [B*T][C_s] the gradient each pair adds to the student's stream */
    float **dres_add;         /* [n_layer + 1] what tm_backward adds (tm->dres_add) */
    float *align_y;           /* [B*T][C_t] scratch */
    int64_t step;             /* optimizer steps completed */
    comm_sum grad_sum;        /* the step's gradient, a sum over its micro-batches (kept: its vectors
                                 are reused every step) */
    comm_sum loss_sum;        /* the step's summed losses [ce, τ²·D, alignment] */
    bool sums_open;
} trainer;

/* What one step did. */
typedef struct train_report {
    int64_t step;             /* steps completed after this one */
    double loss;              /* total loss, mean over tokens (and micro-batches) */
    double ce;                /* its cross-entropy part (unweighted) */
    double kl;                /* its τ²·D part (0 without a teacher) */
    double align;             /* its hidden-state part (0 without alignment) */
    double lr;                /* learning rate used */
    double grad_norm;         /* before clipping */
    int64_t tokens;           /* tokens processed in the step */
} train_report;

/* The model must be planned for nothing in particular: trainer_init plans it for 1 x T. */
int trainer_init(trainer *tr, const trainer_opts *o, train_model *tm, train_data *data, const llm_model *teacher,
                 slmc_err *err);
void trainer_free(trainer *tr);

/* Distil from a teacher cache instead of a live teacher (trainer_init without one): checks the
 * cache was made for this text, split, sequence length, temperature and vocabulary. Or, with a
 * live teacher, keep every sequence the run draws in `save` (created for this run). */
int trainer_set_cache(trainer *tr, teacher_cache *cache, slmc_err *err);
void trainer_set_save(trainer *tr, teacher_cache *save);

/* The learning rate of step index s (0-based). */
double trainer_lr(const trainer_opts *o, int64_t s);

int trainer_step(trainer *tr, train_report *rep, slmc_err *err);
/* Mean cross-entropy of the student over the first n_seqs held-out sequences (all when
 * n_seqs <= 0 or larger); exp() of it is the evaluation perplexity. */
int trainer_eval(trainer *tr, int64_t n_seqs, double *mean_ce, slmc_err *err);

/* Checkpoints (HDF5, written to PATH.tmp then renamed). */
int trainer_save(const trainer *tr, const char *path, slmc_err *err);
/* Restores weights, moments, step and data cursor; the model shape, parameter count and text
 * must match the checkpoint's. */
int trainer_load(trainer *tr, const char *path, slmc_err *err);

#endif
