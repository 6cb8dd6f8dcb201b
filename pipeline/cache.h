/* cache.h - the step cache, shared safely by every pipeline that points at the same folder:
 * several processes on one machine, or jobs on many machines mounting one network folder.
 *
 * An entry is the output files of one step, CACHE/<key><ext>, plus its metadata file
 * CACHE/<key>.meta.json (who computed it, when, how long it took, each file's size). The
 * metadata file is written last, by rename: it is the entry's commit mark. An entry without it,
 * or whose files do not have the sizes it lists, is not an entry (pl_entry_complete).
 *
 * Writers take the key's lock, CACHE/<key>.lock, with flock(); the kernel (or the NFS server)
 * releases it when the process dies, however it dies, so:
 *   - one process computes a step; another that wants it waits for the lock (polling with
 *     sleeps, never spinning), then finds the entry complete and reuses it;
 *   - when the writer died (kill -9, a lost machine), the waiter gets the lock, finds no
 *     complete entry and computes the step itself.
 * Everything a writer creates in the cache has a temporary name holding the key
 * (".tmp-<key>-<host>-<pid>-XXXXXX" folders, ".<key>.<ext>.tmp-XXXXXX" files) and is created
 * and removed only while holding the key's lock: a temporary whose key's lock is free belongs
 * to nobody alive and is removed (pl_remove_stale_temps), on any machine.
 *
 * Lock files stay in the cache (removing a lock file while a process holds it would let a
 * second process lock a new file of the same name); they are empty but for the line
 * "pid PID host HOST" of the last holder, which is only used in messages.
 */
#ifndef SLMC_PIPELINE_CACHE_H
#define SLMC_PIPELINE_CACHE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "formats/error.h"

#define PL_HOST_MAX 64
#define PL_ENTRY_MAX_FILES 4

/* A pipeline process: who computed an entry, or holds a lock. */
typedef struct pl_owner {
    long pid;                /* process id on its host; 0 when unknown */
    char host[PL_HOST_MAX];  /* host name (characters outside [A-Za-z0-9._-] as '_'); "" when unknown */
} pl_owner;

/* This process: getpid() and gethostname(). */
void pl_owner_self(pl_owner *o);
/* "pid 1234 on host h" (or "an unknown process") into buf; returns buf. */
const char *pl_owner_str(const pl_owner *o, char *buf, size_t size);

/* ---- locks ------------------------------------------------------------------------------ */

/* A key's lock, held by this process while fd >= 0. */
typedef struct pl_lock {
    int fd;  /* the open lock file (close-on-exec: children never inherit it), -1 when not held */
} pl_lock;

/* Try to take the lock of `key` without blocking. Returns 0 when taken (the lock file now names
 * this process), 1 when another process holds it (*holder, when not NULL, gets what the lock
 * file says about it), -1 on an error (a filesystem without locks says so). */
int pl_lock_try(const char *cache_dir, const char *key, pl_lock *lk, pl_owner *holder, slmc_err *err);
/* Take the lock, polling with sleeps (10 ms, growing to 0.5 s) while another process holds it.
 * stop (NULL, or a flag a signal handler sets) ends the wait with "interrupted". */
int pl_lock_wait(const char *cache_dir, const char *key, pl_lock *lk, volatile sig_atomic_t *stop, slmc_err *err);
/* Release a held lock (no-op when not held). */
void pl_lock_release(pl_lock *lk);

/* ---- entries ---------------------------------------------------------------------------- */

/* What an entry's metadata file says. */
typedef struct pl_entry_info {
    pl_owner by;       /* the process that computed it */
    char step[200];    /* the step, as the pipeline that computed it called it */
    double seconds;    /* how long the step took */
} pl_entry_info;

/* true when entry `key` is complete: CACHE/<key>.meta.json parses, names this key, and lists
 * each CACHE/<key><ext> of exts[0..n) with the size the file has. *info (when not NULL) gets
 * the metadata. */
bool pl_entry_complete(const char *cache_dir, const char *key, const char *const *exts, int n, pl_entry_info *info);

/* Commit entry `key` whose files CACHE/<key><ext> are in place: write its metadata file
 * (temporary name + rename) naming this process. Call while holding the key's lock. */
int pl_entry_commit(const char *cache_dir, const char *key, const char *const *exts, int n, const char *step,
                    double seconds, slmc_err *err);

/* ---- temporaries ------------------------------------------------------------------------- */

/* Create the working folder of a step: CACHE/.tmp-<key>-<host>-<pid>-XXXXXX (malloc'd path).
 * Call while holding the key's lock, and remove it before releasing the lock. */
char *pl_temp_dir(const char *cache_dir, const char *key, slmc_err *err);

/* The key a temporary cache entry belongs to: true, with key[65] filled, for
 * ".tmp-<key>-..." and ".<key>....tmp-XXXXXX"; false for anything else. */
bool pl_temp_key(const char *name, char key[65]);

/* Remove every temporary of `key` (left by a process that died while computing it). Call
 * while holding the key's lock. Errors are ignored. */
void pl_remove_key_temps(const char *cache_dir, const char *key);

/* Remove every temporary in the cache whose key's lock is free: nobody alive (on any machine
 * sharing the folder) is writing it. Errors are ignored. */
void pl_remove_stale_temps(const char *cache_dir);

#endif
