/* plan.h - a recipe as a graph of commands to run, each with a cache key.
 *
 * Every node is one `slmc` command line: convert, imatrix, prune, distill, one quantize per type,
 * an eval of the source that saves its log-probabilities, one eval per output. A node's key is
 * the SHA-256 of the slmc binary and of its command line with every input replaced by the
 * input's identity (the content hash of a file or folder, or the key of the node that makes
 * it), so equal work has equal keys and is planned once. Its outputs live in
 * CACHE/<key><ext> with a metadata file (cache.h); a node whose entry is complete is a hit.
 * Keys name no paths: pipelines with other output folders (or on other machines, with the
 * same binary and inputs) share one cache.
 *
 *   pl_plan pl;
 *   pl_plan_build(&pl, &recipe, exe, out_dir, NULL, &err);  the graph, keys (cache OUT/cache)
 *   pl_plan_cache_state(&pl, NULL);                         hits, and which misses must run
 *   ... pl_run (run.h) or pl_plan_describe ...
 *   pl_plan_free(&pl);
 */
#ifndef SLMC_PIPELINE_PLAN_H
#define SLMC_PIPELINE_PLAN_H

#include <stdbool.h>
#include <sys/types.h>

#include "formats/error.h"
#include "pipeline/cache.h"
#include "pipeline/recipe.h"

/* A growable list of malloc'd strings, NULL-terminated (an argv). */
typedef struct pl_strv {
    char **v;  /* [n + 1], v[n] == NULL once anything was pushed */
    int n, cap;
} pl_strv;

int pl_strv_push(pl_strv *s, const char *x);
void pl_strv_free(pl_strv *s);

/* An argument naming a file in the node's temporary folder starts with this byte; the rest is
 * the file name, resolved when the child starts. */
#define PL_TMP_MARK '\x01'
#define PL_MAX_OUTPUTS 2
#define PL_MAX_DEPS 4

typedef enum pl_node_state {
    PL_PENDING,  /* not run yet (maybe waiting for another process that holds its lock) */
    PL_CACHED,   /* its entry was already in the cache when planned */
    PL_RUNNING,  /* a child of this process is running it */
    PL_DONE,     /* its entry is in the cache now: computed here, or by another process meanwhile */
    PL_FAILED,   /* the child failed (or was stopped) */
} pl_node_state;

/* One output file of a node: its name in the temporary folder and its cache extension. */
typedef struct pl_node_output {
    const char *tmp_name;  /* "out.gguf"; "stdout" for a captured eval JSON */
    const char *ext;       /* ".gguf", ".imatrix.dat", ".eval.json", ".logits.h5" */
} pl_node_output;

typedef struct pl_node {
    recipe_step_kind kind;
    char label[200];         /* what the plan and notes call it: "quantize Q4_K_M [q4]" */
    char key[65];            /* SHA-256 hex of the node's identity */
    int deps[PL_MAX_DEPS];   /* nodes whose outputs it reads */
    int n_deps;
    pl_strv args;            /* command line after the binary; PL_TMP_MARK-prefixed = temp file */
    pl_strv key_args;        /* the same with inputs replaced by their identities */
    pl_node_output out[PL_MAX_OUTPUTS];
    int n_out;
    bool capture_stdout;     /* eval: stdout is the JSON result, stored normalized */
    pl_node_state state;
    bool needed;             /* some wanted output depends on running it */
    bool used;               /* a hit that some wanted output reads (noted as reused) */
    pl_entry_info entry;     /* a hit's metadata: who computed it */
    pl_lock lock;            /* its key's lock, held while this process computes it */
    bool waiting;            /* another process held the lock when this one wanted it */
    pl_owner holder;         /* that process, as the lock file named it */
    double next_try;         /* while waiting: when to try the lock again (monotonic seconds) */
    double retry;            /* while waiting: the current interval between tries (seconds) */
    pid_t pid;               /* while running */
    char *tmpdir;            /* while running */
    double t_start;          /* while running (for notes) */
} pl_node;

/* A model or file a node reads: an external file (source, texts) or a node's output. */
typedef struct pl_input {
    int node;               /* producing node, or -1 for an external path */
    int out;                /* which of its outputs */
    const char *path;       /* external path */
} pl_input;

/* One output of the pipeline (a variant, or one quantize type of it). */
typedef struct pl_leaf {
    const recipe_variant *v;
    const char *type;       /* quantize type or NULL */
    pl_input model;         /* its model */
    int eval;               /* eval node, or -1 */
    int base_eval;          /* the source's eval node with the same settings, or -1 */
    const recipe_step *eval_settings;
} pl_leaf;

/* A memo of content hashes of external files and folders. */
typedef struct pl_file_hash {
    char *path;
    char hex[65];
} pl_file_hash;

typedef struct pl_plan {
    const recipe *r;
    char *out_dir;          /* the output folder */
    char *cache_dir;        /* the step cache: out_dir/cache, or a folder of its own */
    char *exe;              /* the slmc binary the nodes run */
    char exe_hash[65];      /* its SHA-256: a new build invalidates the cache */
    pl_node *nodes;         /* [n_nodes] in dependency order (a node only reads earlier ones) */
    int n_nodes, cap_nodes;
    pl_leaf *leaves;        /* [n_leaves] in recipe order */
    int n_leaves;
    pl_file_hash *hashes;
    int n_hashes;
} pl_plan;

/* Build the graph of recipe r (which must outlive the plan): hashes the binary `exe`, the
 * source and every input file. cache_dir NULL means out_dir/cache. Nothing is written. On
 * failure the plan is still freeable. */
int pl_plan_build(pl_plan *pl, const recipe *r, const char *exe, const char *out_dir, const char *cache_dir,
                  slmc_err *err);
void pl_plan_free(pl_plan *pl);

/* Mark each node cached or pending, and `needed` on the pending nodes the leaves of variant
 * `only` (NULL: every variant) need for their models and evals (a hit never needs its inputs;
 * the hits they read are marked `used`). */
void pl_plan_cache_state(pl_plan *pl, const recipe_variant *only);

/* true when node n's entry is complete in the cache (n->entry gets its metadata). */
bool pl_node_cached(const pl_plan *pl, pl_node *n);

/* The identity of leaf l's model as keys name inputs: "node:<key><ext>", or "file:<hash>"
 * when the variant is the source itself. */
int pl_leaf_model_id(pl_plan *pl, const pl_leaf *l, char *buf, size_t size, slmc_err *err);

/* The cache path of output `out` of node n (malloc'd, NULL when out of memory). */
char *pl_cache_path(const pl_plan *pl, const pl_node *n, int out);

/* Content hash (hex) of a file or folder, memoized per path; NULL on failure. Folders are
 * hashed file by file, sorted, hidden entries skipped. */
const char *pl_content_hash(pl_plan *pl, const char *path, slmc_err *err);

/* The plan as --dry-run shows it (after pl_plan_cache_state): *text a listing (each node with
 * its status hit / run / skip, key and command line), *json the same as a JSON object; both
 * malloc'd and ending with a newline. jobs and threads_each are shown as given. */
int pl_plan_describe(const pl_plan *pl, int jobs, int threads_each, char **text, char **json, slmc_err *err);

#endif
