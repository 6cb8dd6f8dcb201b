/* prune_run.h - `slmc prune` as one library call: from an input path and the command's options
 * to the smaller model written (and/or the importance scores saved) and the summary's numbers.
 *
 *   open the input ─> scores: read (from_scores), or computed (importance.h: activation over
 *                     the calibration text's first chunks * n_ctx tokens, magnitude, random)
 *                  ─> [write the scores; stop here when there is no output]
 *                  ─> request (counts, fractions, dropped layers, or a parameter target)
 *                  ─> prune_select ─> prune_reconstruct (reconstruct / refit) ─> prune_apply
 *                  ─> GGUF (output ending in .gguf) or Hugging Face folder
 *
 * Nothing here prints: progress goes to the hooks, and the caller prints from the result. Every
 * parallel loop and forward pass of the run uses n_threads threads.
 *
 * Under mpirun (opts.comm with several ranks) every rank opens the input and tokenizes the
 * calibration text; the activation scores and the reconstruction's Gram matrices are sums over
 * the chunks, each rank evaluating its share and the chunks joined by comm_sum's tree
 * (importance.h, reconstruct.h): the scores, the plan and the refit weights are the bits one
 * process computes. Rank 0 alone writes the scores and the model; on the other ranks the
 * result holds the method and the calibration PPL but no written figures. Errors come back
 * agreed: every rank returns the same message.
 */
#ifndef SLMC_PRUNE_RUN_H
#define SLMC_PRUNE_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"
#include "prune/importance.h"
#include "prune/prune.h"
#include "prune/reconstruct.h"

#define PRUNE_RUN_CHUNKS 32     /* calibration chunks by default */
#define PRUNE_RUN_CTX 512       /* tokens per chunk by default (at most the model's context) */
#define PRUNE_RUN_SEED 42       /* the random method's seed by default */

/* How much of an axis to keep: a count, or a share of the input's count. */
typedef struct prune_amount {
    bool set;      /* the axis is pruned at all */
    double frac;   /* > 0: keep this share of the input's count (rounded to the nearest) */
    uint64_t n;    /* else keep this many */
} prune_amount;

/* "512", "0.75", "11M", "1.5B", "800K" (K, M, B or G only with allow_suffix): integers and
 * suffixed numbers are counts, a number with a point and no suffix, at most 1, is a fraction.
 * false (a untouched) when s is none of these, not above 0 or above 1e15. */
bool prune_amount_parse(const char *s, bool allow_suffix, prune_amount *a);

typedef struct prune_run_opts {
    const char *in;              /* input: Hugging Face folder, GGUF file or llama2.c checkpoint */
    const char *tokenizer;       /* llama2.c input: tokenizer.bin or tokenizer.model, else NULL */
    const char *out;             /* output: GGUF when it ends in .gguf, else a Hugging Face folder;
                                  * NULL: only compute and save the scores (scores_out) */
    int outtype;                 /* ggml_type for the written matrices (F32, F16, BF16), -1 the input's */
    /* importance */
    prune_method method;         /* how units are ranked (activation needs calib) */
    const char *calib;           /* calibration text: activation scores, reconstruct / refit */
    int n_ctx;                   /* tokens per calibration chunk; 0: PRUNE_RUN_CTX, at most the model's context */
    int chunks;                  /* calibration chunks (at most) */
    bool layer_ppl;              /* activation: also measure the PPL without each layer (ranks layers) */
    uint64_t seed;               /* random method's seed */
    const char *scores_out;      /* save the scores here (HDF5), or NULL */
    const char *from_scores;     /* rank with scores saved earlier instead of computing them, or NULL */
    /* what to keep: axes ... */
    prune_amount ffn;            /* FFN channels per layer */
    prune_amount heads;          /* query heads per layer (a count) */
    bool head_groups;            /* remove whole KV groups even when the count allows either */
    prune_amount layers;         /* layers, by importance (a count) */
    const int64_t *drop_layers;  /* [n_drop_layers] or these blocks removed (not with layers) */
    int n_drop_layers;
    prune_amount hidden;         /* hidden width */
    /* ... or a parameter budget that chooses them (not with the axes) */
    prune_amount target;         /* at most this many parameters (or this share of the input's) */
    bool target_blocks;          /* the target counts only the blocks' parameters */
    /* reconstruction (needs calib and out) */
    bool reconstruct;            /* re-select heads and channels by OBS cost, and refit the projections */
    bool refit;                  /* keep the ranking's choice, only refit */
    double damp;                 /* refit damping; 0: PRUNE_RECON_DAMP */
    int n_threads;               /* threads; 0: omp_get_max_threads() (the caller's count is restored) */
    const comm *comm;            /* the ranks sharing the calibration chunks (mpirun); rank 0 writes;
                                    NULL: one process (comm_solo) */
} prune_run_opts;

/* The defaults: activation ranking with the layer PPL, PRUNE_RUN_CHUNKS chunks, the seed
 * PRUNE_RUN_SEED, the input's tensor types; nothing pruned. */
void prune_run_opts_default(prune_run_opts *o);

typedef struct prune_result {
    prune_method method;         /* how the ranking's scores were made */
    double calib_ppl;            /* calibration PPL of the input (NaN when not measured) */
    bool written;                /* a model was written (else only the scores were computed) */
    /* a written model: */
    model_config shape_in;       /* n_layer, n_head, n_head_kv, n_ff, n_embd of the input ... */
    model_config shape_out;      /* ... and of the output */
    prune_plan plan;             /* what was kept (keep_layer, heads per layer, ...) */
    int64_t *dropped;            /* [n_dropped] the input's layers that went, ascending */
    int64_t n_dropped;
    uint64_t params_in, params_out;             /* parameters of all tensors */
    uint64_t block_params_in, block_params_out; /* of the blocks (blk.*) */
    double params_removed_frac;                 /* 1 - params_out / params_in */
    double block_params_removed_frac;           /* 1 - block_params_out / block_params_in */
    prune_recon_info recon;      /* reconstruct / refit: passes, chunks, output errors before / after */
    double seconds;              /* wall time of the whole run */
} prune_result;

/* How the run reports while it works; every member may be NULL (a NULL hooks too). */
typedef struct prune_hooks {
    void *ud;                                       /* passed to stage */
    /* a long step starts ("calibrate", "reconstruct", "refit", "write"), or ends (NULL) */
    void (*stage)(void *ud, const char *name);
    /* progress within the step: chunks run of the total (what NULL), or bytes written with the
     * tensor's name ("write") */
    slmc_progress progress;
} prune_hooks;

/* The option checks that need no model: a usage error in words (as the command line would say
 * it, "--refit needs --calib FILE ..."), or 0. prune_run checks them first. */
int prune_run_check(const prune_run_opts *o, slmc_err *err);

/* Run it. On failure err names the file and cause, nothing is left at the output path and r
 * holds nothing to free; on success free r with prune_result_free. */
int prune_run(const prune_run_opts *o, const prune_hooks *hooks, prune_result *r, slmc_err *err);
void prune_result_free(prune_result *r);

#endif
