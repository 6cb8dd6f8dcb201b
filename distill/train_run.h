/* train_run.h - the whole of `slmc train` and `slmc distill` as one library call.
 *
 *   open the student (and the teacher) ─> tokenize and split the text ─> resume? ─>
 *   steps [report, metrics line, evaluate every N, checkpoint every N, stop when asked] ─>
 *   evaluate, checkpoint, export the student
 *
 * The caller parses options and prints: train_run reports through hooks (a note now and then,
 * one call per step, one per evaluation) and returns what happened in a train_result. It never
 * prints and keeps no global state; the only file it writes besides the model and the
 * checkpoint is the metrics file, when asked for one.
 *
 * Stopping: the caller may pass a flag (o->stop) that a signal handler sets; train_run polls
 * it between steps, then writes the checkpoint, skips the export and returns 0 with
 * r->stopped set, so `--resume` with that checkpoint continues bitwise identically.
 */
#ifndef SLMC_DISTILL_TRAIN_RUN_H
#define SLMC_DISTILL_TRAIN_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "distill/trainer.h"
#include "formats/error.h"

typedef struct train_run_opts {
    const char *student;        /* the model to train: any path model_open reads (GGUF of any type,
                                 * Hugging Face folder, llama2.c .bin with tokenizer) */
    const char *teacher;        /* distillation: the teacher (any model eval/llm.h runs); NULL trains
                                 * with cross-entropy only (or from teacher_cache) */
    const char *teacher_cache;  /* distillation from a teacher cache (teacher_cache.h) instead of a
                                 * teacher, or NULL */
    const char *save_teacher;   /* with a teacher: also write its top-k of every sequence drawn to this
                                 * cache file, or NULL */
    int top_k;                  /* ids per position in save_teacher (default 64) */
    int lora_rank;              /* > 0: train LoRA adapters of this rank on the frozen student
                                 * (tm_add_lora) and export the merged model; 0 trains every weight */
    float lora_alpha;           /* the adapters' scale is alpha / rank; 0 means alpha = rank */
    const char *tokenizer;      /* tokenizer.bin / tokenizer.model for a llama2.c student or teacher,
                                 * or NULL */
    const char *data;           /* the text: .txt or .jsonl (field "text"), optionally .gz or .zst */
    const char *output;         /* the exported student: a .gguf file, else a Hugging Face folder */
    const char *checkpoint;     /* checkpoint file (HDF5), or NULL for OUTPUT.ckpt.h5 */
    const char *resume;         /* checkpoint to continue from (same model, data and options), or NULL */
    const char *metrics;        /* file to append one JSON line per step and per evaluation to, or NULL */
    trainer_opts train;         /* steps, batch shape, schedule, optimizer and loss */
    uint64_t seed;              /* order of the training sequences */
    double valid_frac;          /* share of the sequences held out for evaluation, in [0, 1) */
    int64_t eval_every;         /* evaluate every N steps as well as at the end; 0 = only at the end */
    int64_t eval_seqs;          /* held-out sequences per evaluation; 0 = all */
    int64_t checkpoint_every;   /* checkpoint every N steps as well; 0 = only at the end or on a stop */
    size_t max_tokens;          /* read only about this many tokens of the text; 0 = all */
    int outtype;                /* type of the exported matrices: GGML_TYPE_F32, F16 or BF16 */
    int threads;                /* OpenMP threads of every loop (student, teacher, tokenizer); 0 = as
                                 * many as omp_get_max_threads() says now */
    volatile sig_atomic_t *stop;/* when non-NULL and set (by a signal handler), checkpoint and stop
                                 * after the current step */
    const comm *comm;           /* the mpirun job whose ranks share each step's sequences, or NULL
                                 * for one process. Every rank calls train_run with the same options;
                                 * rank 0 alone calls the hooks and writes the model, the checkpoint
                                 * and the metrics, which are the same bytes for any number of ranks.
                                 * --save-teacher is refused with more than one rank. */
} train_run_opts;

/* Defaults: trainer_opts_default, seed 1, valid_frac 0.02, eval_every 100, eval_seqs 32, no
 * periodic checkpoints, every token, F32 export, the default thread count, top_k 64; no paths. */
void train_run_opts_default(train_run_opts *o);

/* Where the run stands after a step. */
typedef struct train_progress {
    train_report report;        /* what the step did: step count, loss, lr, gradient norm, tokens */
    int64_t steps;              /* steps of the whole run */
    int64_t first_step;         /* the step this run started at (0, or the checkpoint's on resume) */
    double seconds;             /* since this run's first step began */
    double tokens_per_s;        /* tokens of this run per second */
    double eta_seconds;         /* estimated time for the remaining steps */
} train_progress;

/* Calls back into the caller; each may be NULL. They run on the calling thread. */
typedef struct train_hooks {
    void *user;                 /* passed to every hook */
    /* A remark worth showing ("resumed from F at step N", the token count, ...): one line,
     * no trailing newline. */
    void (*note)(void *user, const char *text);
    /* After every optimizer step. */
    void (*step)(void *user, const train_progress *p);
    /* After every evaluation: mean cross-entropy of the student on the held-out text after
     * `step` steps (exp() of it is the perplexity). */
    void (*eval)(void *user, int64_t step, double eval_loss);
} train_hooks;

/* What the run did. Free with train_result_free whatever train_run returned. */
typedef struct train_result {
    char *checkpoint;           /* the checkpoint path used (owned) */
    size_t n_params;            /* parameters of the student */
    int64_t step;               /* steps completed (counting those before a resume) */
    int64_t tokens;             /* tokens this run trained on */
    double loss;                /* loss of the last step this run took; NAN when it took none */
    double eval_loss;           /* the last evaluation's mean cross-entropy; NAN when there was none */
    double seconds;             /* from this run's first step to the end */
    bool stopped;               /* *o->stop was set: the checkpoint is written, nothing exported */
} train_result;

/* Run the whole training; hooks may be NULL. 0 on success (r->stopped tells whether it was
 * asked to stop), or -1 with err naming the file and the cause. */
int train_run(const train_run_opts *o, const train_hooks *hooks, train_result *r, slmc_err *err);
void train_result_free(train_result *r);

#endif
