/* quantize_print.h - what `slmc quantize` prints (cli/cmd_quantize.c parses and calls
 * quantize_run; these print its result on stdout). */
#ifndef SLMC_QUANTIZE_PRINT_H
#define SLMC_QUANTIZE_PRINT_H

#include "cli.h"
#include "quant/quantize_run.h"

/* The size target's choice (per tensor: type, bytes, estimated error), then the totals. */
void quantize_print_fit(const quantize_result *r);
/* Per output: the plan (dry run), then mix, path, size, bits per weight, tensors per type; then
 * the seconds and GPTQ's calibration. */
void quantize_print_text(const quantize_run_opts *o, const quantize_result *r);
/* --json: an array with one object per output (type, output, bytes, params, bpw,
 * tensors_per_type, seconds; the fit; the plan of a dry run or GPTQ's mode). */
void quantize_print_json(const quantize_run_opts *o, const quantize_result *r);

#endif
