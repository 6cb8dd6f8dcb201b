/* cmd_prune.c - `slmc prune IN OUT ...`: structured pruning of heads, FFN channels, layers and
 * hidden width, ranked by calibration activations (or weight magnitude, or at random). The work
 * is prune_run (prune/prune_run.h); this file parses, calls it and prints. */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "prune/prune_run.h"

#define MAX_DROP 1024 /* --drop-layers entries */

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

typedef struct prune_args {
    cli_common c;
    prune_run_opts o;           /* what prune_run is given; o.drop_layers points below */
    int64_t drop[MAX_DROP];
} prune_args;

/* --drop-layers "0,3,5": block numbers (prune_run checks them against the model). */
static int parse_drop(char *list, prune_args *a) {
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (a->o.n_drop_layers == MAX_DROP) return cli_usage_error("prune", "--drop-layers: at most %d blocks", MAX_DROP);
        int rc = cli_opt_i64("prune", "--drop-layers", tok, 0, INT_MAX, &a->drop[a->o.n_drop_layers++]);
        if (rc) return rc;
    }
    return 0;
}

static int parse(int argc, char **argv, prune_args *a) {
    memset(a, 0, sizeof *a);
    prune_run_opts *o = &a->o;
    prune_run_opts_default(o);
    o->drop_layers = a->drop;
    static const struct option opts[] = {
        {"method", required_argument, 0, 'M'}, {"calib", required_argument, 0, 'C'}, {"ctx", required_argument, 0, 'c'},
        {"chunks", required_argument, 0, 'n'}, {"no-layer-ppl", no_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"scores", required_argument, 0, 'W'}, {"from-scores", required_argument, 0, 'R'}, {"ffn", required_argument, 0, 'F'},
        {"heads", required_argument, 0, 'H'}, {"head-groups", no_argument, 0, 'G'}, {"layers", required_argument, 0, 'L'},
        {"drop-layers", required_argument, 0, 'D'}, {"hidden", required_argument, 0, 'E'},
        {"target-params", required_argument, 0, 'X'}, {"target-scope", required_argument, 0, 'Y'},
        {"outtype", required_argument, 0, 'o'}, {"tokenizer", required_argument, 0, 'k'}, {"reconstruct", no_argument, 0, 'Z'},
        {"refit", no_argument, 0, 'z'}, {"damp", required_argument, 0, 'd'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'M': {
            int method = prune_method_from_name(optarg);
            if (method < 0) return cli_usage_error("prune", "--method is activation, magnitude or random, not '%s'", optarg);
            o->method = (prune_method)method;
            break;
        }
        case 'C': o->calib = optarg; break;
        case 'c': rc = cli_opt_int("prune", "-c/--ctx", optarg, 8, 1 << 20, &o->n_ctx); break;
        case 'n': rc = cli_opt_int("prune", "--chunks", optarg, 1, INT_MAX, &o->chunks); break;
        case 'P': o->layer_ppl = false; break;
        case 'S': rc = cli_opt_u64("prune", "--seed", optarg, &o->seed); break;
        case 'W': o->scores_out = optarg; break;
        case 'R': o->from_scores = optarg; break;
        case 'F': if (!prune_amount_parse(optarg, false, &o->ffn)) return cli_usage_error("prune", "bad --ffn '%s'", optarg); break;
        case 'H': if (!prune_amount_parse(optarg, false, &o->heads) || o->heads.frac > 0) return cli_usage_error("prune", "--heads takes a count, not '%s'", optarg); break;
        case 'G': o->head_groups = true; break;
        case 'L': if (!prune_amount_parse(optarg, false, &o->layers) || o->layers.frac > 0) return cli_usage_error("prune", "--layers takes a count, not '%s'", optarg); break;
        case 'D': rc = parse_drop(optarg, a); break;
        case 'E': if (!prune_amount_parse(optarg, false, &o->hidden)) return cli_usage_error("prune", "bad --hidden '%s'", optarg); break;
        case 'X': if (!prune_amount_parse(optarg, true, &o->target)) return cli_usage_error("prune", "bad --target-params '%s' (11M, 0.5, 2000000)", optarg); break;
        case 'Y':
            if (strcmp(optarg, "all") != 0 && strcmp(optarg, "blocks") != 0)
                return cli_usage_error("prune", "--target-scope is all or blocks, not '%s'", optarg);
            o->target_blocks = strcmp(optarg, "blocks") == 0;
            break;
        case 'o':
            if ((o->outtype = cli_parse_float_type(optarg)) < 0)
                return cli_usage_error("prune", "--outtype must be f32, f16 or bf16, not '%s'", optarg);
            break;
        case 'k': o->tokenizer = optarg; break;
        case 'Z': o->reconstruct = true; break;
        case 'z': o->refit = true; break;
        case 'd': rc = cli_opt_float("prune", "--damp", optarg, 0, 1e6, true, &o->damp); break;
        default: rc = cli_common_option("prune", USAGE, ch, argv, &a->c); break;
        }
        if (rc) return rc;
    }
    if (argc - optind < 1 || argc - optind > 2) return cli_usage_error("prune", "expected IN and OUT");
    o->in = argv[optind];
    o->out = argc - optind == 2 ? argv[optind + 1] : NULL;
    slmc_err err = {{0}};
    return prune_run_check(o, &err) != 0 ? cli_usage_error("prune", "%s", err.msg) : 0;
}

/* ---- the summary ------------------------------------------------------------------------ */

static json_t *shape_json(const model_config *c) {
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "n_layer", (json_int_t)c->n_layer, "n_head", (json_int_t)c->n_head,
                     "n_head_kv", (json_int_t)c->n_head_kv, "n_ff", (json_int_t)c->n_ff, "n_embd", (json_int_t)c->n_embd);
}

static void print_json(const prune_run_opts *a, const prune_result *r) {
    const prune_plan *p = &r->plan;
    const int64_t n_layer = r->shape_in.n_layer;
    json_t *o = json_pack("{s:s, s:s, s:s}", "input", a->in, "output", a->out, "method", prune_method_name(r->method));
    if (a->from_scores) json_object_set_new(o, "from_scores", json_string(a->from_scores));
    json_object_set_new(o, "shape_in", shape_json(&r->shape_in));
    json_object_set_new(o, "shape_out", shape_json(&r->shape_out));
    json_object_set_new(o, "dropped_layers", cli_json_int_array(r->dropped, r->n_dropped));
    json_t *heads = json_array();
    for (int64_t l = 0; l < n_layer; l++) json_array_append_new(heads, cli_json_int_array(p->heads + l * p->n_head, p->n_head));
    json_object_set_new(o, "kept_heads", heads);
    json_object_set_new(o, "params_in", json_integer((json_int_t)r->params_in));
    json_object_set_new(o, "params_out", json_integer((json_int_t)r->params_out));
    json_object_set_new(o, "block_params_in", json_integer((json_int_t)r->block_params_in));
    json_object_set_new(o, "block_params_out", json_integer((json_int_t)r->block_params_out));
    json_object_set_new(o, "params_removed_frac", json_real(r->params_removed_frac));
    json_object_set_new(o, "block_params_removed_frac", json_real(r->block_params_removed_frac));
    if (!isnan(r->calib_ppl)) json_object_set_new(o, "calib_ppl", json_real(r->calib_ppl));
    const prune_recon_info *rec = &r->recon;
    if (a->reconstruct || a->refit)
        json_object_set_new(o, "reconstruction",
                            json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f}", "mode", a->reconstruct ? "reconstruct" : "refit",
                                      "passes", rec->passes, "chunks", rec->chunks, "ffn_err_before", rec->ffn_err_before,
                                      "ffn_err_after", rec->ffn_err_after, "attn_err_before", rec->att_err_before,
                                      "attn_err_after", rec->att_err_after));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    cli_print_json(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
}

/* Shape before and after, what went, parameter counts, the refit's output errors. */
static void print_text(const prune_run_opts *a, const prune_result *r) {
    const model_config *c = &r->shape_in, *out = &r->shape_out;
    const prune_recon_info *rec = &r->recon;
    char b1[32], b2[32];
    printf("%s -> %s (%s ranking%s%s)\n", a->in, a->out, prune_method_name(r->method), a->from_scores ? " from " : "",
           a->from_scores ? a->from_scores : "");
    printf("  layers  %lld -> %lld", (long long)c->n_layer, (long long)out->n_layer);
    if (r->n_dropped) {
        printf(" (dropped");
        for (int64_t i = 0; i < r->n_dropped; i++) printf(" %lld", (long long)r->dropped[i]);
        printf(")");
    }
    printf("\n  heads   %lld -> %lld per layer, KV heads %lld -> %lld\n", (long long)c->n_head, (long long)out->n_head,
           (long long)c->n_head_kv, (long long)out->n_head_kv);
    printf("  ffn     %lld -> %lld channels per layer\n", (long long)c->n_ff, (long long)out->n_ff);
    printf("  hidden  %lld -> %lld\n", (long long)c->n_embd, (long long)out->n_embd);
    printf("  params  %s -> %s (%.1f%% removed)", cli_human_count(r->params_in, b1, sizeof b1),
           cli_human_count(r->params_out, b2, sizeof b2), 100.0 * r->params_removed_frac);
    printf("; in the blocks %s -> %s (%.1f%% removed)\n", cli_human_count(r->block_params_in, b1, sizeof b1),
           cli_human_count(r->block_params_out, b2, sizeof b2), 100.0 * r->block_params_removed_frac);
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
    printf("%.2fs\n", r->seconds);
}

int cmd_prune(int argc, char **argv) {
    prune_args a;
    int rc = parse(argc, argv, &a);
    if (rc == CLI_HELP) return EXIT_OK;
    if (rc) return rc;
    cli_apply_threads(&a.c); /* under mpirun: this rank's part of the cores */
    a.o.n_threads = a.c.threads;
    a.o.comm = cli_job(); /* under mpirun the ranks share the calibration chunks; rank 0 writes */
    cli_stages ui = {.c = &a.c}; /* progress: chunks while calibrating and refitting, bytes while writing */
    prune_hooks hooks = {.ud = &ui, .stage = cli_stages_stage, .progress = {.fn = cli_stages_progress, .ud = &ui}};
    prune_result r;
    slmc_err err = {{0}};
    if (prune_run(&a.o, &hooks, &r, &err) != 0) return cli_error(&err);
    if (!r.written) {
        if (!a.c.json) printf("%s: %s scores -> %s\n", a.o.in, prune_method_name(r.method), a.o.scores_out);
    } else if (a.c.json) {
        print_json(&a.o, &r);
    } else {
        print_text(&a.o, &r); /* also with -q, which only silences the progress */
    }
    prune_result_free(&r);
    return EXIT_OK;
}
