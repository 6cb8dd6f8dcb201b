/* cmd_prune.c - `slmc prune IN OUT ...`: structured pruning of heads, FFN channels, layers and
 * hidden width, ranked by calibration activations (or weight magnitude, or at random). */
#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/tokenizer.h"
#include "formats/fileio.h"
#include "formats/hf.h"
#include "formats/types.h"
#include "prune/importance.h"
#include "prune/prune.h"
#include "prune/reconstruct.h"

int cmd_prune(int argc, char **argv);

static const char *USAGE =
    "Usage: slmc prune IN [OUT] [--calib FILE] [--method M] [axes] [options]\n"
    "\n"
    "Structured pruning: removes attention heads, FFN channels, whole layers and hidden channels,\n"
    "the least important first, with the same shape in every layer, and writes a smaller model\n"
    "(GGUF when OUT ends in .gguf, else a Hugging Face folder) with updated metadata and the\n"
    "tokenizer carried over. Importance comes from a calibration pass (--method activation:\n"
    "head output norms, mean |silu(gate)*up|, RMSNorm output magnitudes, Block Influence and the\n"
    "PPL without each layer), from weight norms (magnitude) or from a seeded draw (random).\n"
    "Counts keep that many; a fraction (0.75) keeps that share of the input's.\n"
    "\n"
    "Importance:\n"
    "  --method M           activation (default), magnitude or random\n"
    "  --calib FILE         calibration text (activation)\n"
    "  -c, --ctx N          tokens per calibration chunk (default 512, at most the model's context)\n"
    "  --chunks N           calibration chunks (default 32)\n"
    "  --no-layer-ppl       do not measure the PPL with each layer removed (layers are then\n"
    "                       ranked by Block Influence)\n"
    "  --seed N             random method's seed (default 42)\n"
    "  --scores F           save the scores to F (HDF5)\n"
    "  --from-scores F      rank with scores saved earlier instead of computing them\n"
    "Axes (any combination):\n"
    "  --ffn N|FRAC         FFN channels kept per layer\n"
    "  --heads N            query heads kept per layer; with grouped-query attention N must be a\n"
    "                       multiple of head_count_kv (the same number of query heads leaves each\n"
    "                       group) or of the group size (whole KV groups go)\n"
    "  --head-groups        remove whole KV groups even when N allows either\n"
    "  --layers K           layers kept, by importance\n"
    "  --drop-layers LIST   or these layers removed (comma-separated block numbers)\n"
    "  --hidden N|FRAC      hidden width kept\n"
    "  --target-params N|FRAC  instead of the axes: the shape of at most N parameters (11M, 0.5)\n"
    "                       that removes the least importance\n"
    "  --target-scope S     what --target-params counts: all (default) or blocks (the layers'\n"
    "                       parameters, without embeddings and classifier)\n"
    "Reconstruction (needs --calib; see docs/prune.md):\n"
    "  --reconstruct        within each layer, choose the heads and FFN channels to remove by the\n"
    "                       output error left after a least-squares refit of attn_output /\n"
    "                       ffn_down on the calibration activations (structured OBS), and write\n"
    "                       the refit weights; counts, layers and width are chosen as without it\n"
    "  --refit              keep the ranking's choice of heads and channels, only refit\n"
    "  --damp X             refit damping: lambda = X * mean(diag G) (default 0.01)\n"
    "Options:\n"
    "  --outtype T          f32, f16 or bf16 for the matrices (default: keep the input's)\n"
    "  --tokenizer FILE     llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --json               the summary as one JSON object on stdout\n"
    "  -t, --threads N      threads\n"
    "  -q, --quiet          no progress\n"
    "  -h, --help           this help\n";

/* A count or a fraction of the input's count, as given on the command line. */
typedef struct amount {
    bool set;
    double frac;   /* > 0: a fraction */
    uint64_t n;    /* else a count */
} amount;

typedef struct prune_args {
    cli_common c;
    const char *in, *out, *calib, *scores, *from_scores, *tokenizer, *drop_layers;
    int method, n_ctx, chunks, outtype;
    bool ctx_given, layer_ppl, head_groups, scope_blocks;
    bool reconstruct, refit; /* --reconstruct (re-select + refit), --refit (refit only) */
    double damp;             /* --damp */
    uint64_t seed;
    amount ffn, heads, layers, hidden, target;
} prune_args;

/* "512", "0.75", "11M", "1.5B", "800K". Suffixes and integers are counts; a number with a
 * point and no suffix, below or equal to 1, is a fraction. */
static bool parse_amount(const char *s, amount *a, bool allow_suffix) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || !(v < 1e15)) return false; /* also refuses nan and inf */
    double mul = 1;
    if (*end && allow_suffix) {
        char u = (char)toupper((unsigned char)*end);
        mul = u == 'K' ? 1e3 : u == 'M' ? 1e6 : u == 'B' || u == 'G' ? 1e9 : 0;
        if (mul == 0 || end[1]) return false;
    } else if (*end) {
        return false;
    }
    if (v * mul > 1e15) return false;
    a->set = true;
    if (mul == 1 && strchr(s, '.') && v <= 1) {
        a->frac = v;
    } else {
        a->frac = 0;
        a->n = (uint64_t)llround(v * mul);
    }
    return true;
}

static int64_t resolve(const amount *a, int64_t of) {
    if (!a->set) return 0;
    return a->frac > 0 ? (int64_t)llround(a->frac * (double)of) : (int64_t)a->n;
}

static int parse(int argc, char **argv, prune_args *a) {
    memset(a, 0, sizeof *a);
    a->method = PRUNE_ACTIVATION;
    a->n_ctx = 512;
    a->chunks = 32;
    a->seed = 42;
    a->outtype = -1;
    a->layer_ppl = true;
    static const struct option opts[] = {
        {"method", required_argument, 0, 'M'}, {"calib", required_argument, 0, 'C'},
        {"ctx", required_argument, 0, 'c'}, {"chunks", required_argument, 0, 'n'},
        {"no-layer-ppl", no_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"scores", required_argument, 0, 'W'}, {"from-scores", required_argument, 0, 'R'},
        {"ffn", required_argument, 0, 'F'}, {"heads", required_argument, 0, 'H'},
        {"head-groups", no_argument, 0, 'G'}, {"layers", required_argument, 0, 'L'},
        {"drop-layers", required_argument, 0, 'D'}, {"hidden", required_argument, 0, 'E'},
        {"target-params", required_argument, 0, 'X'}, {"target-scope", required_argument, 0, 'Y'},
        {"outtype", required_argument, 0, 'o'}, {"tokenizer", required_argument, 0, 'k'},
        {"reconstruct", no_argument, 0, 'Z'}, {"refit", no_argument, 0, 'z'},
        {"damp", required_argument, 0, 'd'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        switch (ch) {
        case 'M':
            a->method = prune_method_from_name(optarg);
            if (a->method < 0) return cli_usage_error("prune", "--method is activation, magnitude or random, not '%s'", optarg);
            break;
        case 'C': a->calib = optarg; break;
        case 'c':
            if ((rc = cli_opt_int("prune", "-c/--ctx", optarg, 8, 1 << 20, &a->n_ctx))) return rc;
            a->ctx_given = true;
            break;
        case 'n':
            if ((rc = cli_opt_int("prune", "--chunks", optarg, 1, INT_MAX, &a->chunks))) return rc;
            break;
        case 'P': a->layer_ppl = false; break;
        case 'S':
            if ((rc = cli_opt_u64("prune", "--seed", optarg, &a->seed))) return rc;
            break;
        case 'W': a->scores = optarg; break;
        case 'R': a->from_scores = optarg; break;
        case 'F': if (!parse_amount(optarg, &a->ffn, false)) return cli_usage_error("prune", "bad --ffn '%s'", optarg); break;
        case 'H': if (!parse_amount(optarg, &a->heads, false) || a->heads.frac > 0) return cli_usage_error("prune", "--heads takes a count, not '%s'", optarg); break;
        case 'G': a->head_groups = true; break;
        case 'L': if (!parse_amount(optarg, &a->layers, false) || a->layers.frac > 0) return cli_usage_error("prune", "--layers takes a count, not '%s'", optarg); break;
        case 'D': a->drop_layers = optarg; break;
        case 'E': if (!parse_amount(optarg, &a->hidden, false)) return cli_usage_error("prune", "bad --hidden '%s'", optarg); break;
        case 'X': if (!parse_amount(optarg, &a->target, true)) return cli_usage_error("prune", "bad --target-params '%s' (11M, 0.5, 2000000)", optarg); break;
        case 'Y':
            if (strcmp(optarg, "all") != 0 && strcmp(optarg, "blocks") != 0)
                return cli_usage_error("prune", "--target-scope is all or blocks, not '%s'", optarg);
            a->scope_blocks = strcmp(optarg, "blocks") == 0;
            break;
        case 'o':
            a->outtype = cli_parse_float_type(optarg);
            if (a->outtype < 0) return cli_usage_error("prune", "--outtype must be f32, f16 or bf16, not '%s'", optarg);
            break;
        case 'k': a->tokenizer = optarg; break;
        case 'Z': a->reconstruct = true; break;
        case 'z': a->refit = true; break;
        case 'd':
            if ((rc = cli_opt_float("prune", "--damp", optarg, 0, 1e6, true, &a->damp))) return rc;
            break;
        default:
            if ((rc = cli_common_option("prune", USAGE, ch, argv, &a->c))) return rc;
        }
    }
    if (argc - optind < 1 || argc - optind > 2) return cli_usage_error("prune", "expected IN and OUT");
    a->in = argv[optind];
    a->out = argc - optind == 2 ? argv[optind + 1] : NULL;
    if (!a->out && !a->scores) return cli_usage_error("prune", "give OUT (or --scores F to only compute the scores)");
    bool axes = a->ffn.set || a->heads.set || a->layers.set || a->drop_layers || a->hidden.set;
    if (a->out && !axes && !a->target.set) return cli_usage_error("prune", "nothing to prune: give --ffn, --heads, --layers, --drop-layers, --hidden or --target-params");
    if (axes && a->target.set) return cli_usage_error("prune", "--target-params chooses the axes itself; give it alone");
    if (a->layers.set && a->drop_layers) return cli_usage_error("prune", "give --layers or --drop-layers, not both");
    if (!a->from_scores && a->method == PRUNE_ACTIVATION && !a->calib)
        return cli_usage_error("prune", "--method activation needs --calib FILE (or use --from-scores F)");
    if (a->reconstruct && a->refit) return cli_usage_error("prune", "give --reconstruct or --refit, not both");
    if ((a->reconstruct || a->refit) && !a->calib)
        return cli_usage_error("prune", "--%s needs --calib FILE (the activations it refits on)",
                               a->reconstruct ? "reconstruct" : "refit");
    if ((a->reconstruct || a->refit) && !a->out) return cli_usage_error("prune", "--reconstruct / --refit need OUT");
    return 0;
}

static void progress_fn(void *ud, int done, int total) {
    cli_progress *p = ud;
    if (!p->enabled) return;
    double el = cli_now() - p->t_start;
    fprintf(stderr, "\r\033[K%s [%d/%d] %.1fs, ETA %.0fs", p->label, done, total, el, el / done * (total - done));
}

/* Tokenize enough of the calibration text for the chunks wanted (the whole of a long text
 * would take long): a prefix of ~16 bytes per token, cut at a line end, grown if short. */
static int calib_tokens(const model *m, const prune_args *a, int n_ctx, int32_t **tokens, size_t *n_tokens,
                        int32_t *bos, slmc_err *err) {
    if (!meta_get_str(&m->kv, "tokenizer.ggml.model"))
        return slmc_fail(err, a->in, "has no tokenizer; the calibration pass needs one to read the text");
    tokenizer *tok;
    if (tokenizer_create(&tok, &m->kv, err) != 0) return slmc_fail_prefix(err, a->in);
    mapped_file text = {0};
    int rc = map_file(&text, a->calib, err);
    const size_t want = (size_t)a->chunks * (size_t)n_ctx;
    for (size_t len = want * 16; rc == 0; len *= 2) {
        size_t n = len < text.size ? len : text.size;
        while (n < text.size && n > 0 && text.data[n - 1] != '\n') n--;
        if (n == 0) n = len < text.size ? len : text.size;
        free(*tokens);
        *tokens = NULL;
        rc = tokenizer_encode(tok, (const char *)text.data, n, true, false, tokens, n_tokens, err);
        if (rc != 0) { slmc_fail_prefix(err, a->calib); break; }
        if (*n_tokens >= want || n == text.size) break;
    }
    *bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1;
    if (rc == 0 && *n_tokens < (size_t)n_ctx)
        rc = slmc_fail(err, a->calib, "has %zu tokens, fewer than one chunk of %d", *n_tokens, n_ctx);
    unmap_file(&text);
    tokenizer_free(tok);
    return rc;
}

/* The calibration chunks, tokenized once for the scores and the reconstruction. */
typedef struct calib_text {
    bool loaded;
    int n_ctx;          /* tokens per chunk: -c, at most the model's context unless -c was given */
    int32_t *tokens;    /* [n_tokens] */
    size_t n_tokens;
    int32_t bos;        /* BOS id each chunk starts with, -1 for none */
} calib_text;

static int calib_get(calib_text *ct, const model *m, const prune_args *a, slmc_err *err) {
    if (ct->loaded) return 0;
    ct->n_ctx = a->n_ctx;
    if (!a->ctx_given && m->cfg.n_ctx_train > 0 && m->cfg.n_ctx_train < ct->n_ctx) ct->n_ctx = (int)m->cfg.n_ctx_train;
    ct->bos = -1;
    if (calib_tokens(m, a, ct->n_ctx, &ct->tokens, &ct->n_tokens, &ct->bos, err) != 0) return -1;
    ct->loaded = true;
    return 0;
}

/* Compute (or read) the scores the run ranks by. */
static int get_scores(prune_scores *s, const model *m, const prune_args *a, calib_text *ct, slmc_err *err) {
    if (a->from_scores) {
        if (prune_scores_read(s, a->from_scores, err) != 0) return -1;
        if (prune_scores_check(s, m, a->from_scores, err) != 0) { prune_scores_free(s); return -1; }
        return 0;
    }
    if (prune_scores_init(s, m, (prune_method)a->method, err) != 0) return -1;
    int rc;
    if (a->method == PRUNE_MAGNITUDE) {
        rc = prune_score_magnitude(s, m, err);
    } else if (a->method == PRUNE_RANDOM) {
        rc = prune_score_random(s, m, a->seed, err);
    } else {
        rc = calib_get(ct, m, a, err);
        if (rc == 0) {
            cli_progress prog;
            cli_progress_init(&prog, &a->c, "calibrate");
            prune_calib_opts o = {.n_ctx = ct->n_ctx, .max_chunks = a->chunks, .bos = ct->bos,
                                  .layer_ppl = a->layer_ppl, .progress = progress_fn, .progress_ud = &prog};
            rc = prune_score_activation(s, m, ct->tokens, ct->n_tokens, &o, err);
            cli_progress_done(&prog);
            if (rc != 0) slmc_fail_prefix(err, a->in);
            snprintf(s->calib, sizeof s->calib, "%s", a->calib);
        }
    }
    if (rc != 0) { prune_scores_free(s); return -1; }
    return 0;
}

/* --drop-layers "0,3,5" into drop[n_layer]. */
static int parse_drop(const char *list, bool *drop, int64_t n_layer, slmc_err *err) {
    const char *p = list;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= n_layer)
            return slmc_fail(err, NULL, "--drop-layers: '%s' is not a list of block numbers 0..%lld", list, (long long)n_layer - 1);
        drop[v] = true;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return slmc_fail(err, NULL, "--drop-layers: '%s' is not a comma-separated list", list);
    }
    return 0;
}

static json_t *int_list(const int64_t *v, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* The summary: shape before and after, what went, parameter counts. */
static void report(const prune_args *a, const model *m, const model *out, const prune_plan *p, const prune_scores *s,
                   const prune_recon_info *rec, uint64_t params_in, uint64_t blocks_in, double secs) {
    const uint64_t params_out = model_param_count(out);
    uint64_t blocks_out = prune_block_params(p, m);
    const model_config *c = &m->cfg;
    if (a->c.json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(a->in));
        json_object_set_new(o, "output", json_string(a->out));
        json_object_set_new(o, "method", json_string(prune_method_name(s->method)));
        if (a->from_scores) json_object_set_new(o, "from_scores", json_string(a->from_scores));
        json_t *before = json_object(), *after = json_object();
        json_object_set_new(before, "n_layer", json_integer(c->n_layer));
        json_object_set_new(before, "n_head", json_integer(c->n_head));
        json_object_set_new(before, "n_head_kv", json_integer(c->n_head_kv));
        json_object_set_new(before, "n_ff", json_integer(c->n_ff));
        json_object_set_new(before, "n_embd", json_integer(c->n_embd));
        json_object_set_new(after, "n_layer", json_integer(out->cfg.n_layer));
        json_object_set_new(after, "n_head", json_integer(out->cfg.n_head));
        json_object_set_new(after, "n_head_kv", json_integer(out->cfg.n_head_kv));
        json_object_set_new(after, "n_ff", json_integer(out->cfg.n_ff));
        json_object_set_new(after, "n_embd", json_integer(out->cfg.n_embd));
        json_object_set_new(o, "shape_in", before);
        json_object_set_new(o, "shape_out", after);
        int64_t dropped[c->n_layer > 0 ? c->n_layer : 1], nd = 0;
        for (int64_t l = 0; l < c->n_layer; l++)
            if (!p->keep_layer[l]) dropped[nd++] = l;
        json_object_set_new(o, "dropped_layers", int_list(dropped, nd));
        json_t *heads = json_array();
        for (int64_t l = 0; l < c->n_layer; l++) json_array_append_new(heads, int_list(p->heads + l * p->n_head, p->n_head));
        json_object_set_new(o, "kept_heads", heads);
        json_object_set_new(o, "params_in", json_integer((json_int_t)params_in));
        json_object_set_new(o, "params_out", json_integer((json_int_t)params_out));
        json_object_set_new(o, "block_params_in", json_integer((json_int_t)blocks_in));
        json_object_set_new(o, "block_params_out", json_integer((json_int_t)blocks_out));
        json_object_set_new(o, "params_removed_frac", json_real(1.0 - (double)params_out / (double)params_in));
        json_object_set_new(o, "block_params_removed_frac", json_real(1.0 - (double)blocks_out / (double)blocks_in));
        if (!isnan(s->base_ppl)) json_object_set_new(o, "calib_ppl", json_real(s->base_ppl));
        if (a->reconstruct || a->refit) {
            json_t *r = json_object();
            json_object_set_new(r, "mode", json_string(a->reconstruct ? "reconstruct" : "refit"));
            json_object_set_new(r, "passes", json_integer(rec->passes));
            json_object_set_new(r, "chunks", json_integer(rec->chunks));
            json_object_set_new(r, "ffn_err_before", json_real(rec->ffn_err_before));
            json_object_set_new(r, "ffn_err_after", json_real(rec->ffn_err_after));
            json_object_set_new(r, "attn_err_before", json_real(rec->att_err_before));
            json_object_set_new(r, "attn_err_after", json_real(rec->att_err_after));
            json_object_set_new(o, "reconstruction", r);
        }
        json_object_set_new(o, "seconds", json_real(secs));
        char *str = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
        if (str) puts(str);
        free(str);
        json_decref(o);
        return;
    }
    char b1[32], b2[32];
    printf("%s -> %s (%s ranking%s%s)\n", a->in, a->out, prune_method_name(s->method), a->from_scores ? " from " : "",
           a->from_scores ? a->from_scores : "");
    printf("  layers  %lld -> %lld", (long long)c->n_layer, (long long)out->cfg.n_layer);
    if (out->cfg.n_layer < c->n_layer) {
        printf(" (dropped");
        for (int64_t l = 0; l < c->n_layer; l++)
            if (!p->keep_layer[l]) printf(" %lld", (long long)l);
        printf(")");
    }
    printf("\n  heads   %lld -> %lld per layer, KV heads %lld -> %lld\n", (long long)c->n_head, (long long)out->cfg.n_head,
           (long long)c->n_head_kv, (long long)out->cfg.n_head_kv);
    printf("  ffn     %lld -> %lld channels per layer\n", (long long)c->n_ff, (long long)out->cfg.n_ff);
    printf("  hidden  %lld -> %lld\n", (long long)c->n_embd, (long long)out->cfg.n_embd);
    printf("  params  %s -> %s (%.1f%% removed)", cli_human_count(params_in, b1, sizeof b1),
           cli_human_count(params_out, b2, sizeof b2), 100.0 * (1.0 - (double)params_out / (double)params_in));
    printf("; in the blocks %s -> %s (%.1f%% removed)\n", cli_human_count(blocks_in, b1, sizeof b1),
           cli_human_count(blocks_out, b2, sizeof b2), 100.0 * (1.0 - (double)blocks_out / (double)blocks_in));
    if (a->reconstruct || a->refit) {
        printf("  %s: layer output error per token, summed over layers (the removed units as they were -> after)\n",
               a->reconstruct ? "reconstruct" : "refit");
        if (rec->ffn_err_before > 0)
            printf("          ffn_down    %.4g -> %.4g (%.1f%%)\n", rec->ffn_err_before, rec->ffn_err_after,
                   100.0 * rec->ffn_err_after / rec->ffn_err_before);
        if (rec->att_err_before > 0)
            printf("          attn_output %.4g -> %.4g (%.1f%%)\n", rec->att_err_before, rec->att_err_after,
                   100.0 * rec->att_err_after / rec->att_err_before);
    }
    printf("%.2fs\n", secs);
}

/* --reconstruct / --refit: prune_reconstruct on the plan, over the calibration chunks. */
static int reconstruct(prune_plan *p, const model *m, const prune_args *a, calib_text *ct, prune_recon_info *info,
                       slmc_err *err) {
    if (calib_get(ct, m, a, err) != 0) return -1;
    cli_progress prog;
    cli_progress_init(&prog, &a->c, a->reconstruct ? "reconstruct" : "refit");
    prune_recon_opts o = {.n_ctx = ct->n_ctx, .max_chunks = a->chunks, .bos = ct->bos, .damp = a->damp,
                          .reselect = a->reconstruct, .progress = progress_fn, .progress_ud = &prog};
    int rc = prune_reconstruct(p, m, ct->tokens, ct->n_tokens, &o, info, err);
    cli_progress_done(&prog);
    if (rc != 0) slmc_fail_prefix(err, a->in);
    return rc;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int cmd_prune(int argc, char **argv) {
    prune_args a;
    int prc = parse(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    slmc_err err = {{0}};
    double t0 = cli_now();
    model m, out;
    memset(&out, 0, sizeof out);
    prune_scores s;
    memset(&s, 0, sizeof s);
    prune_plan p;
    memset(&p, 0, sizeof p);
    bool *drop = NULL;
    calib_text ct = {0}; /* tokenized on first use */
    int rc = EXIT_ERROR;
    if (cli_open_model(&m, a.in, a.tokenizer, &err) != 0) return cli_error(&err);
    if (get_scores(&s, &m, &a, &ct, &err) != 0) goto fail;
    if (a.scores && prune_scores_write(&s, a.scores, &err) != 0) goto fail;
    if (!a.out) {
        if (!a.c.json) printf("%s: %s scores -> %s\n", a.in, prune_method_name(s.method), a.scores);
        rc = EXIT_OK;
        goto done;
    }

    prune_request r;
    memset(&r, 0, sizeof r);
    const model_config *c = &m.cfg;
    if (a.target.set) {
        prune_plan id;
        if (prune_plan_identity(&id, &m, &err) != 0) goto fail;
        uint64_t total = a.scope_blocks ? prune_block_params(&id, &m) : model_param_count(&m);
        prune_plan_free(&id);
        uint64_t target = a.target.frac > 0 ? (uint64_t)llround(a.target.frac * (double)total) : a.target.n;
        if (prune_search_target(&r, &m, &s, target, a.scope_blocks, &err) != 0) goto fail;
    } else {
        r.keep_ffn = resolve(&a.ffn, c->n_ff);
        r.keep_heads = resolve(&a.heads, c->n_head);
        r.head_mode = a.head_groups ? PRUNE_HEADS_GROUPS : PRUNE_HEADS_AUTO;
        r.keep_layers = resolve(&a.layers, c->n_layer);
        r.keep_hidden = resolve(&a.hidden, c->n_embd);
        if (a.drop_layers) {
            if (!(drop = calloc((size_t)c->n_layer, sizeof *drop))) { slmc_fail(&err, NULL, "out of memory"); goto fail; }
            if (parse_drop(a.drop_layers, drop, c->n_layer, &err) != 0) {
                rc = cli_usage_error("prune", "%s", err.msg);
                goto done;
            }
            r.drop_layers = drop;
        }
    }
    if (prune_select(&p, &m, &s, &r, &err) != 0) goto fail;
    prune_recon_info recon = {0};
    if ((a.reconstruct || a.refit) && reconstruct(&p, &m, &a, &ct, &recon, &err) != 0) goto fail;
    if (prune_apply(&out, &m, &p, &err) != 0) goto fail;
    prune_plan id;
    if (prune_plan_identity(&id, &m, &err) != 0) goto fail;
    const uint64_t params_in = model_param_count(&m), blocks_in = prune_block_params(&id, &m);
    prune_plan_free(&id);

    cli_progress prog;
    cli_progress_init(&prog, &a.c, "write");
    slmc_progress hook = cli_progress_hook(&prog);
    int wrc = ends_with(a.out, ".gguf") ? model_write_gguf(&out, a.out, a.outtype, &hook, &err)
                                        : hf_write(&out, a.out, a.outtype, HF_DEFAULT_SHARD_SIZE, &hook, &err);
    cli_progress_done(&prog);
    if (wrc != 0) goto fail;
    report(&a, &m, &out, &p, &s, &recon, params_in, blocks_in, cli_now() - t0);
    rc = EXIT_OK;
    goto done;
fail:
    rc = cli_error(&err);
done:
    free(drop);
    free(ct.tokens);
    prune_plan_free(&p);
    prune_scores_free(&s);
    model_close(&out);
    model_close(&m);
    return rc;
}
