/* quantize_run.h - `slmc quantize` as one library call: from an input path and the command's
 * options to the written GGUF files (or, for a dry run, only the plans) and the numbers of the
 * size table.
 *
 *   open the input ─> importance matrix (imatrix, include / exclude)
 *                  ─> one type plan per output (plan.h: the mix's rules, overrides, pure, ...;
 *                     a size target chooses the types for its budget, fit.h)
 *                  ─> refuse, as llama-quantize, a plan with a 1- or 2-bit i-quant (or Q2_K_S's
 *                     Q2_K) for a tensor without importance data (plan_check_imatrix)
 *                  ─> [dry run: stop here, with each plan's sizes]
 *                  ─> GPTQ calibration (method gptq, gptq.h) ─> quantize_model (quantize.h)
 *
 * Nothing here prints: remarks go to hooks->note, progress to hooks->progress, and the caller
 * prints from the result. Every parallel loop and forward pass of the run uses n_threads
 * threads; the output bytes do not depend on the count.
 *
 * Under mpirun (opts.comm with several ranks) every rank opens the input and makes the plans;
 * rank 0 alone quantizes and writes the outputs (atomically, as in one process). With GPTQ
 * the other ranks evaluate their share of the calibration chunks for each layer rank 0 asks
 * for (gptq.h, "under mpirun"): the files are the bytes one process writes. Without GPTQ the
 * other ranks wait for rank 0. Errors come back agreed: every rank returns the same message.
 * On ranks other than 0 the result holds the plans but no written figures.
 */
#ifndef SLMC_QUANTIZE_RUN_H
#define SLMC_QUANTIZE_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"
#include "quant/fit.h"
#include "quant/gptq.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#define QUANTIZE_MAX_OUTPUTS 32
#define QUANTIZE_FIT "FIT" /* the type name of a size target's fitted plan (in types and labels) */

/* Where GPTQ's Hessians come from (gptq.h explains the three). */
typedef enum quantize_gptq_mode {
    QUANTIZE_GPTQ_DEFAULT,    /* not chosen: the fp target, which measured best (docs/gptq-and-fit.md) */
    QUANTIZE_GPTQ_FP_TARGET,  /* sequential inputs, fitted to the unquantized model's products */
    QUANTIZE_GPTQ_SEQUENTIAL, /* sequential inputs, fitted to the layer's own products (classic GPTQ) */
    QUANTIZE_GPTQ_PARALLEL,   /* every Hessian from the unquantized model: one calibration for all types */
} quantize_gptq_mode;

/* "fp-target", "sequential" or "parallel" (the default is "fp-target"). */
const char *quantize_gptq_mode_name(quantize_gptq_mode mode);

typedef struct quantize_run_opts {
    const char *in;                 /* input: Hugging Face folder, GGUF file or llama2.c checkpoint */
    const char *tokenizer;          /* llama2.c input: tokenizer.bin or tokenizer.model, else NULL */
    const char *const *types;       /* [n_types] mix names ("Q4_K_M"), or the one QUANTIZE_FIT with a size target */
    int n_types;                    /* 1 .. QUANTIZE_MAX_OUTPUTS */
    const char *out_pattern;        /* output path, "{type}" replaced by each mix's name; NULL only in a dry run */
    const plan_override *overrides; /* [n_overrides] --tensor-type REGEX=TYPE, first match wins */
    int n_overrides;
    int output_type;                /* ggml_type of output.weight, -1 the mix's */
    int token_embd_type;            /* ggml_type of token_embd.weight, -1 the mix's */
    bool pure;                      /* no per-tensor bumps: every quantized matrix gets the base type */
    bool leave_output;              /* output.weight keeps its input type */
    bool allow_requantize;          /* accept quantized input (dequantized first; a note warns) */
    bool dry_run;                   /* make the plans and their sizes, write nothing */
    const char *imatrix;            /* importance matrix file (.dat or GGUF), or NULL */
    const char *const *include;     /* [n_include] the only tensors (exact names) that use the imatrix */
    int n_include;
    const char *const *exclude;     /* [n_exclude] tensors that do not use it (not with include) */
    int n_exclude;
    double target_bpw;              /* size target in bits per weight over all tensor data, 0 none */
    uint64_t target_size;           /* or in bytes of tensor data, 0 none (not both) */
    bool gptq;                      /* --method gptq: error feedback from calibration Hessians */
    const char *calib;              /* gptq: calibration text file */
    int calib_ctx;                  /* gptq: tokens per chunk, 0 = the model's context, at most 512 */
    int calib_chunks;               /* gptq: chunks of the text, 0 = 50 */
    double damp;                    /* gptq: lambda = damp * mean(diag H), 0 = GPTQ_DEFAULT_DAMP */
    quantize_gptq_mode gptq_mode;   /* gptq: where the Hessians come from */
    double ridge;                   /* gptq fp target: ridge of the fit, 0 = GPTQ_DEFAULT_RIDGE */
    int n_threads;                  /* threads; 0: omp_get_max_threads() (the caller's count is restored) */
    const comm *comm;               /* the job's ranks (mpirun): rank 0 writes, the others calibrate
                                       GPTQ with it; NULL: one process (comm_solo) */
} quantize_run_opts;

/* No outputs or types yet; output_type and token_embd_type -1 (the mix's), everything else off. */
void quantize_run_opts_default(quantize_run_opts *o);

/* One output: a mix (or the fitted plan) and the file it goes to. */
typedef struct quantize_output {
    const char *label;      /* the mix's name ("Q4_K_M" also for "Q4_K"), or QUANTIZE_FIT */
    char *path;             /* the pattern with {type} replaced; NULL in a dry run without a pattern */
    int *types;             /* [n_tensors of the input] the ggml_type each tensor is written with */
    int64_t file_type;      /* general.file_type recorded (llama.cpp's ftype) */
    quant_stats stats;      /* tensors and bytes per type, parameters; seconds of the write (0 in a dry run) */
} quantize_output;

typedef struct quantize_result {
    model m;                        /* the input view, open until quantize_result_free (names, shapes) */
    int n_outputs;                  /* = opts n_types */
    quantize_output outputs[QUANTIZE_MAX_OUTPUTS];
    uint64_t imatrix_tensors;       /* tensors the importance matrix has entries for */
    /* a size target (the QUANTIZE_FIT output): */
    bool fitted;
    uint64_t fit_budget;            /* bytes of tensor data the types were chosen for */
    fit_table fit;                  /* every quantized tensor's candidate types, bytes and error estimates */
    int *fit_choice;                /* [fit.n] the candidate chosen for each */
    fit_result fit_res;             /* bytes, bits per weight and estimated error of the choice */
    double fit_budget_bpw;          /* the budget in bits per weight over fit.params */
    bool fit_unfilled;              /* the choice is below 99% of the budget: even the largest types
                                     * (fit_max_bytes) cannot fill it */
    /* written outputs: */
    double seconds;                 /* wall time of the writing (one run for all outputs, or the sum of
                                     * one run per output when sequential GPTQ calibrates per type) */
    bool gptq;                      /* GPTQ ran ... */
    quantize_gptq_mode gptq_mode;   /* ... in this mode (never QUANTIZE_GPTQ_DEFAULT) */
    gptq_calib_info gptq_info;      /* chunks, tokens, passes and seconds of its calibration */
} quantize_result;

/* Bytes of tensor t's data in type (what a plan writes for it). */
uint64_t quantize_tensor_bytes(const model_tensor *t, int type);
/* Bits per weight of an output: 8 * bytes / parameters of its stats (0 without parameters). */
double quantize_output_bpw(const quantize_output *out);

/* How the run reports while it works; every member may be NULL (a NULL hooks too). */
typedef struct quantize_hooks {
    void *ud;                                                 /* passed back to the callbacks */
    void (*note)(void *ud, const char *msg);                  /* a remark: the imatrix's coverage, a warning */
    void (*planned)(void *ud, const quantize_result *r);  /* the plans are made (outputs, fit), nothing written */
    slmc_progress progress;                                   /* bytes quantized of the total, tensor name */
} quantize_hooks;

/* The option checks that need no model: a usage error in words (as the command line would
 * say it, "--method gptq needs --calib FILE"), or 0. quantize_run checks them first. */
int quantize_run_check(const quantize_run_opts *o, slmc_err *err);

/* Run it. On success r holds the open input, the plans and the figures (free it with
 * quantize_result_free); on failure err names the file and cause, nothing is left at any
 * output path and r holds nothing to free. */
int quantize_run(const quantize_run_opts *o, const quantize_hooks *hooks, quantize_result *r, slmc_err *err);
void quantize_result_free(quantize_result *r);

#endif
