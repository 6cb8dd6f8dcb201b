/* record.c - variants' result records in the step cache (see record.h). */
#include "pipeline/record.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"
#include "pipeline/cache.h"
#include "pipeline/files.h"
#include "pipeline/sha256.h"

#define RECORD_FORMAT "slmc-pipeline-result/1"
#define RECORD_EXT ".result.json"

/* A length-prefixed string into the hash: ["ab","c"] differs from ["a","bc"]. */
static void hash_str(sha256_ctx *c, const char *s) {
    uint32_t len = (uint32_t)strlen(s);
    sha256_update(c, &len, sizeof len);
    sha256_update(c, s, len);
}

int pl_record_key(pl_plan *pl, const recipe_variant *v, char key[65], slmc_err *err) {
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    hash_str(&c, RECORD_FORMAT);
    hash_str(&c, pl->exe_hash);
    for (int i = 0; i < pl->n_leaves; i++) {
        const pl_leaf *l = &pl->leaves[i];
        if (l->v != v) continue;
        char id[160];
        if (pl_leaf_model_id(pl, l, id, sizeof id, err)) return -1;
        hash_str(&c, id);
        hash_str(&c, l->eval >= 0 ? pl->nodes[l->eval].key : "-");
        hash_str(&c, l->base_eval >= 0 ? pl->nodes[l->base_eval].key : "-");
    }
    sha256_final(&c, d);
    sha256_hex(d, key);
    return 0;
}

/* ---- storing ------------------------------------------------------------------------------ */

/* A measurement, or null when there is none (JSON has no NaN). */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static char *record_text(const pl_result *res, int n) {
    json_t *root = json_object(), *outs = json_array();
    if (!root || !outs) { json_decref(root); json_decref(outs); return NULL; }
    for (int i = 0; i < n; i++) {
        const pl_result *x = &res[i];
        json_t *o = json_object();
        if (!o) continue;
        json_object_set_new(o, "key", json_string(x->key));
        json_object_set_new(o, "size", json_integer((json_int_t)x->size));
        json_object_set_new(o, "n_params", json_integer((json_int_t)x->n_params));
        if (x->has_eval) {
            json_t *ev = json_object();
            json_object_set_new(ev, "ppl", num(x->ppl));
            json_object_set_new(ev, "ppl_stderr", num(x->ppl_stderr));
            json_object_set_new(ev, "kld_mean", num(x->kld));
            json_object_set_new(ev, "kld_stderr", num(x->kld_stderr));
            json_object_set_new(ev, "same_top_p", num(x->same_top));
            json_object_set_new(ev, "source_ppl", num(x->source_ppl));
            json_object_set_new(ev, "source_ppl_stderr", num(x->source_ppl_stderr));
            json_object_set_new(o, "eval", ev);
        }
        json_array_append_new(outs, o);
    }
    json_object_set_new(root, "format", json_string(RECORD_FORMAT));
    json_object_set_new(root, "outputs", outs);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    return pl_end_line(s);
}

int pl_record_store(const pl_plan *pl, const char *key, const char *label, const pl_result *res, int n,
                    volatile sig_atomic_t *stop, slmc_err *err) {
    const char *exts[1] = {RECORD_EXT};
    pl_lock lk;
    if (pl_lock_wait(pl->cache_dir, key, &lk, stop, err)) return -1;
    int rc = 0;
    if (!pl_entry_complete(pl->cache_dir, key, exts, 1, NULL)) {
        pl_remove_key_temps(pl->cache_dir, key);
        char name[128];
        snprintf(name, sizeof name, "%s%s", key, RECORD_EXT);
        char *path = path_join(pl->cache_dir, name), *text = record_text(res, n);
        if (!path || !text) rc = slmc_fail(err, NULL, "out of memory");
        else rc = pl_write_atomic(path, text, strlen(text), err) || pl_entry_commit(pl->cache_dir, key, exts, 1, label, 0, err);
        free(path);
        free(text);
    }
    pl_lock_release(&lk);
    return rc ? -1 : 0;
}

/* ---- loading ------------------------------------------------------------------------------ */

int pl_record_load(const pl_plan *pl, const char *key, pl_result *res, int n, slmc_err *err) {
    const char *exts[1] = {RECORD_EXT};
    if (!pl_entry_complete(pl->cache_dir, key, exts, 1, NULL)) return 1;
    char name[128];
    snprintf(name, sizeof name, "%s%s", key, RECORD_EXT);
    char *path = path_join(pl->cache_dir, name), *buf = NULL;
    size_t len;
    if (!path) return slmc_fail(err, NULL, "out of memory");
    if (read_small_file(path, 1 << 22, &buf, &len, err)) { free(path); return -1; }
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    const json_t *outs = json_object_get(root, "outputs");
    const char *format = json_string_value(json_object_get(root, "format"));
    int rc = 0;
    if (!format || strcmp(format, RECORD_FORMAT) != 0 || !json_is_array(outs) || (int)json_array_size(outs) != n)
        rc = slmc_fail(err, path, "not a result record of %d output%s", n, n == 1 ? "" : "s");
    for (int i = 0; !rc && i < n; i++) {
        const json_t *o = json_array_get(outs, (size_t)i), *ev = json_object_get(o, "eval");
        const char *k = json_string_value(json_object_get(o, "key"));
        const json_t *size = json_object_get(o, "size"), *params = json_object_get(o, "n_params");
        if (!k || strlen(k) >= sizeof res[i].key || !json_is_integer(size) || !json_is_integer(params)) {
            rc = slmc_fail(err, path, "output %d: key, size or n_params missing", i + 1);
            break;
        }
        pl_result *x = &res[i];
        snprintf(x->key, sizeof x->key, "%s", k);
        x->size = (uint64_t)json_integer_value(size);
        x->n_params = (uint64_t)json_integer_value(params);
        x->bpw = x->n_params ? 8.0 * (double)x->size / (double)x->n_params : NAN;
        if (!json_is_object(ev)) ev = NULL;
        pl_result_set_eval(x, ev, pl_json_num(ev, "source_ppl"), pl_json_num(ev, "source_ppl_stderr"));
    }
    json_decref(root);
    free(path);
    return rc ? -1 : 0;
}
