/* record.h - a variant's result record: what the reports need of a finished variant (each
 * output's model key, size, parameters and measurements), kept in the step cache so that
 * `slmc pipeline --report` assembles the reports of variants other processes ran (`--only`,
 * possibly on other machines) without running anything or opening a model.
 *
 * A record is a cache entry like a step's (cache.h): CACHE/<key>.result.json plus its metadata
 * file, written under the key's lock. Its key is the SHA-256 of the slmc binary and of the
 * identities of the variant's outputs (their models' keys, their evals' and the source evals'
 * keys), so a record belongs to exactly this work: one made from other inputs, options or
 * another slmc binary is never found. It holds no names (equal work in two recipes shares it)
 * and no timings: the same work gives the same bytes. Numbers are written with 17 significant
 * digits, so a loaded record gives back the very doubles that were stored.
 */
#ifndef SLMC_PIPELINE_RECORD_H
#define SLMC_PIPELINE_RECORD_H

#include <signal.h>

#include "formats/error.h"
#include "pipeline/plan.h"
#include "pipeline/report.h"

/* The record key of variant v (hex, 64 characters). */
int pl_record_key(pl_plan *pl, const recipe_variant *v, char key[65], slmc_err *err);

/* Store res[0..n) (a variant's outputs, in plan order) as record `key`, unless a complete one
 * is there already; `label` names it in the metadata file ("result [k]"). Waits for the key's
 * lock (stop: see pl_lock_wait). */
int pl_record_store(const pl_plan *pl, const char *key, const char *label, const pl_result *res, int n,
                    volatile sig_atomic_t *stop, slmc_err *err);

/* Load record `key` into res[0..n): key, size, n_params, bpw, the measurements and the source's
 * PPL (names, files and gates are the plan's to fill). Returns 1 when there is no complete
 * record, 0 when loaded, -1 on an error (a record that does not fit: n outputs expected). */
int pl_record_load(const pl_plan *pl, const char *key, pl_result *res, int n, slmc_err *err);

#endif
