/* ranks.h - a calibration or evaluation text's chunks shared among the ranks of a job
 * (comm/comm.h), for the commands that run data-parallel under mpirun: eval, imatrix, GPTQ's
 * calibration (quantize --method gptq) and pruning's calibration (prune).
 *
 * Every one of them follows the same pattern, which keeps the output independent of the
 * number of ranks and keeps a failing rank from leaving the others waiting:
 *
 *   1. every rank opens the model and tokenizes the text itself (the same ids everywhere),
 *      then comm_agree: a bad path fails on every rank, with one message;
 *   2. the chunks are the units: rank r evaluates its contiguous share [lo, hi) (comm_share),
 *      in chunk order, and keeps each chunk's statistics apart from the others';
 *   3. comm_agree on the chunk loop, then the chunks are combined in chunk order: sums over
 *      chunks by comm_sum's fixed tree (the same bits for any number of ranks, and for the
 *      plain process, which runs the same code as a job of one), row values that a
 *      llama.cpp-compatible statistic folds one after the other by comm_allgather;
 *   4. rank 0 alone writes the outputs, then a last comm_agree hands every rank the outcome.
 *
 * The rule for errors: a function that makes collective calls reports an error only after a
 * comm_agree, so every rank returns it together, and once an agreement has failed no rank
 * makes another collective call (an agreed message is never agreed again). In a job of one,
 * comm_agree returns the status and leaves the message as it is: the one-process messages do
 * not change.
 */
#ifndef SLMC_RANKS_H
#define SLMC_RANKS_H

#include <stdbool.h>
#include <stddef.h>

#include "comm/comm.h"
#include "formats/error.h"

/* The job an options struct names: c, or the job of one (comm_solo) when c is NULL. */
const comm *ranks_job(const comm *c);

#endif
