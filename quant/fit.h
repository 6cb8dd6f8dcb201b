/* fit.h - choose each tensor's type so the model fits a size budget with the least error.
 *
 *   1. Candidates: every matrix the plan quantizes may take IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
 *      Q2_K, IQ3_XXS, IQ3_S, Q3_K, IQ4_XS, IQ4_NL, Q4_0, Q4_K, Q5_0, Q5_K, Q6_K or Q8_0, when its
 *      row length is a whole number of the type's blocks (rows not a multiple of 256 are left
 *      with the 32-blocks); IQ1_* and IQ2_* only for tensors with an importance (imatrix), the
 *      types llama-quantize refuses without one. Other tensors (norms, ...) keep the
 *      plan's type and count as fixed bytes.
 *   2. Error estimate per tensor and type: the relative importance-weighted squared
 *      quantization error sum_c imp_c sum_r (w_rc - q_rc)^2 / sum_c imp_c sum_r w_rc^2, with imp
 *      from an imatrix when given (else 1) and q what the writer would produce (the weighted
 *      kernel with an imatrix, else the plain one): the share of the matrix's output energy lost,
 *      the same units for every matrix, counted once per output unit (times the row count).
 *      Big tensors are estimated on an even subsample of rows.
 *   3. Allocation: minimise the summed error subject to the bytes fitting the budget. This is
 *      a multiple-choice knapsack, solved exactly by dynamic programming over byte "cells" (the
 *      bytes above each tensor's smallest candidate rounded up to cells of ceil((largest - smallest
 *      possible total) / 2^18) bytes, a cell that does
 *      not depend on the budget). Being an exact optimum over a feasible set that only grows with
 *      the budget, a larger budget never gives a larger estimated error; the rounding costs at
 *      most one cell per tensor of budget (0.03% for 56 tensors).
 * See docs/gptq-and-fit.md.
 */
#ifndef SLMC_FIT_H
#define SLMC_FIT_H

#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"

#define FIT_MAX_TYPES 17         /* candidate types per tensor */
#define FIT_DEFAULT_SAMPLE_ROWS 256

/* The options of one quantizable tensor. */
typedef struct fit_tensor {
    uint64_t ti;                    /* tensor index in the model */
    int n_cand;                     /* candidates, sorted by bytes (ascending) */
    int types[FIT_MAX_TYPES];       /* ggml_type of each candidate */
    uint64_t bytes[FIT_MAX_TYPES];  /* tensor bytes in that type */
    double err[FIT_MAX_TYPES];      /* estimated relative error (importance-weighted) x rows */
} fit_tensor;

typedef struct fit_table {
    fit_tensor *t;          /* [n] quantizable tensors, in model order */
    size_t n;
    int *base_types;        /* [n_tensors of the model] the plan's type for every tensor (fixed ones kept) */
    uint64_t n_tensors;
    uint64_t fixed_bytes;   /* bytes of the tensors that are not chosen here */
    uint64_t params;        /* elements of all tensors */
} fit_table;

/* Which tensors are quantized follows base_types (a quant_plan result: tensors whose planned type
 * is a block type are candidates). importance may be NULL (all 1) or [n_tensors] with NULL
 * entries; sample_rows <= 0 means FIT_DEFAULT_SAMPLE_ROWS. */
int fit_table_build(fit_table *tab, const model *m, const int *base_types, const float *const *importance,
                    int sample_rows, slmc_err *err);
void fit_table_free(fit_table *tab);

/* The least and largest total tensor bytes any choice gives. */
uint64_t fit_min_bytes(const fit_table *tab);
uint64_t fit_max_bytes(const fit_table *tab);

typedef struct fit_result {
    uint64_t bytes;         /* total tensor data bytes (fixed ones included) */
    double err;             /* summed estimated error of the choice */
    double bpw;             /* 8 * bytes / params */
} fit_result;

/* Choose for budget (total tensor data bytes): choice[k] is the candidate index of tab->t[k].
 * Fails when even the smallest types exceed the budget. A budget above fit_max_bytes gives
 * the largest types. */
int fit_allocate(const fit_table *tab, uint64_t budget, int *choice, fit_result *res, slmc_err *err);

/* The full type plan for a choice: base types with the chosen types filled in ([n_tensors]). */
void fit_apply(const fit_table *tab, const int *choice, int *types);

/* general.file_type for a fitted plan: llama.cpp's mix of the type holding most quantized
 * bytes (Q4_K -> Q4_K_M, Q3_K -> Q3_K_M, ...), or -1 when there is none. */
int64_t fit_file_type(const model *m, const int *types);

#endif
