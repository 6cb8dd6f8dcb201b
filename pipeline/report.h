/* report.h - what `slmc pipeline` measured, and its reports: JSON for machines,
 * Markdown for CI job summaries, an SVG chart of size against PPL and KLD.
 *
 * Reports hold no timings and no absolute paths, so the same recipe and inputs give
 * byte-identical report files on every run.
 */
#ifndef SLMC_PIPELINE_REPORT_H
#define SLMC_PIPELINE_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "pipeline/recipe.h"

/* One output of the pipeline: a variant, or one quantize type of a variant. */
typedef struct pl_result {
    char name[160];            /* "q4-Q4_K_M": variant name, plus "-TYPE" after quantize */
    const char *variant;       /* recipe variant name */
    const char *type;          /* quantize type, or NULL */
    char file[200];            /* published file name inside --out ("" when none) */
    char key[65];              /* cache key of the model file */
    uint64_t size;             /* bytes of the model (file, or folder total) */
    uint64_t n_params;         /* parameters */
    double bpw;                /* 8 * size / n_params */
    bool has_eval;             /* PPL / KLD below are measured */
    double ppl, ppl_stderr;    /* perplexity on the eval text */
    double ppl_increase;       /* percent over the source's PPL (same eval settings) */
    double kld, kld_stderr;    /* mean KL divergence from the source */
    double same_top;           /* share of tokens with the source's top choice, 0..1 */
    double source_ppl;         /* the source's PPL and its stderr on the same eval settings */
    double source_ppl_stderr;  /*   (the report's source line; not in the per-variant rows) */
    recipe_gates gates;        /* gates that apply */
    bool gated;                /* at least one gate is set */
    bool pass;                 /* every gate holds (true when not gated) */
    char failed[512];          /* "KLD 0.586 > 0.5; size 4.2 MB > 4 MB" when a gate fails */
} pl_result;

typedef struct pl_report {
    const char *name;          /* recipe name */
    const char *source;        /* source as written in the recipe */
    uint64_t source_size;      /* bytes */
    uint64_t source_params;
    bool has_eval;             /* the source was evaluated (recipe eval section) */
    double source_ppl, source_ppl_stderr;
    char eval_text[256];       /* eval text file name (no folder) */
    int eval_ctx, eval_chunks; /* 0 = the command's default */
    pl_result *results;        /* [n_results] in recipe order */
    int n_results;
    bool pass;                 /* every gated result passes */
} pl_report;

/* Fill x's measurements from `eval` (an object with slmc eval --json's keys ppl, ppl_stderr,
 * kld_mean, kld_stderr, same_top_p; NULL: not evaluated, every figure NAN) and the source's PPL
 * on the same settings; ppl_increase follows from the two. Absent or null numbers are NAN. */
void pl_result_set_eval(pl_result *x, const json_t *eval, double source_ppl, double source_ppl_stderr);
/* The number under `key` in object o (NULL allowed), or NAN when absent or not a number. */
double pl_json_num(const json_t *o, const char *key);

/* Apply the gates to each result (fills pass, failed) and r->pass. */
void pl_report_gate(pl_report *r);
/* The report as JSON (new reference). */
json_t *pl_report_json(const pl_report *r);
/* Markdown (malloc'd): a heading, the source line, the variant table and a verdict. */
char *pl_report_markdown(const pl_report *r);
/* SVG (malloc'd): two panels, PPL and KLD against file size, one labelled point per result. */
char *pl_report_svg(const pl_report *r);

#endif
