/* cmd_eval.c - `slmc eval MODEL --text FILE`: perplexity as llama-perplexity computes it, and
 * KL divergence / top-token agreement against a base model (run side by side, or saved). */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/eval_run.h"

static const char *USAGE =
    "Usage: slmc eval MODEL --text FILE [-c N] [--chunks N] [options]\n"
    "\n"
    "Perplexity of MODEL on FILE, computed as llama-perplexity does: the whole text tokenized\n"
    "with BOS, non-overlapping chunks of N tokens (each evaluated in one batch from an empty\n"
    "cache, its first token replaced by BOS), the second half of each chunk scored. Prints\n"
    "PPL +/- its standard error. With a base model it also prints the KL divergence of MODEL\n"
    "from the base, its percentiles, top-token agreement, delta-p and the PPL ratio.\n"
    "\n"
    "Options:\n"
    "  --text FILE          evaluation text (UTF-8)\n"
    "  -c, --ctx N          context (chunk) length, default 512\n"
    "  --chunks N           evaluate at most N chunks (default: all)\n"
    "  --kl-base BASE       compare with BASE (any model slmc reads), both models run\n"
    "  --save-logits F      store this model's scored log-probabilities in F (HDF5) to serve\n"
    "                       as the base of later runs\n"
    "  --kl-logits F        compare with the base log-probabilities saved in F\n"
    "  --tokenizer FILE     llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --json               one JSON object on stdout: ppl, ppl_stderr, n_ctx, chunks, tokens,\n"
    "                       seconds (and kld_mean, kld_stderr, same_top_p, ... with a base)\n"
    "  -t, --threads N      threads\n"
    "  -q, --quiet          no progress\n"
    "  -h, --help           this help\n";

typedef struct eval_args {
    cli_common c;
    eval_opts o; /* what to run: parsed straight into the library's options */
} eval_args;

static int parse(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    a->o.max_chunks = -1; /* n_ctx 0: 512, or the --kl-logits file's */
    static const struct option opts[] = {
        {"text", required_argument, 0, 'T'}, {"ctx", required_argument, 0, 'c'},
        {"chunks", required_argument, 0, 'n'}, {"kl-base", required_argument, 0, 'B'},
        {"save-logits", required_argument, 0, 'S'}, {"kl-logits", required_argument, 0, 'L'},
        {"tokenizer", required_argument, 0, 'k'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        switch (ch) {
        case 'T': a->o.text = optarg; break;
        case 'c':
            if ((rc = cli_opt_int("eval", "-c/--ctx", optarg, 8, 1 << 20, &a->o.n_ctx))) return rc;
            break;
        case 'n':
            if ((rc = cli_opt_int("eval", "--chunks", optarg, 1, INT_MAX, &a->o.max_chunks))) return rc;
            break;
        case 'B': a->o.kl_base = optarg; break;
        case 'S': a->o.save_logits = optarg; break;
        case 'L': a->o.kl_logits = optarg; break;
        case 'k': a->o.tokenizer = optarg; break;
        default:
            if ((rc = cli_common_option("eval", USAGE, ch, argv, &a->c))) return rc;
        }
    }
    if (argc - optind != 1) return cli_usage_error("eval", "expected one MODEL");
    a->o.model = argv[optind];
    if (!a->o.text) return cli_usage_error("eval", "--text FILE is required");
    if (a->o.kl_base && a->o.kl_logits) return cli_usage_error("eval", "give --kl-base or --kl-logits, not both");
    a->o.n_threads = a->c.threads;
    return 0;
}

/* The progress line after each chunk: chunk, running PPL, time, ETA. */
static int on_chunk(void *ud, int done, int n_chunk, double ppl, double el) {
    cli_progress *p = ud;
    if (p->enabled) {
        fprintf(stderr, "\r\033[Keval [%d/%d] PPL %.4f, %.1fs, ETA %.0fs", done, n_chunk, ppl, el,
                el / done * (n_chunk - done));
        p->drawn = true;
    }
    return 0;
}

static json_t *kld_json(const kld_summary *k) {
    json_t *o = json_object();
    json_object_set_new(o, "kld_mean", json_real(k->kld_mean));
    json_object_set_new(o, "kld_stderr", json_real(k->kld_unc));
    static const char *const kp[11] = {"max", "99.9", "99", "95", "90", "median", "10", "5", "1", "0.1", "min"};
    json_t *pct = json_object();
    for (int i = 0; i < 11; i++) json_object_set_new(pct, kp[i], json_real(k->kld_pct[i]));
    json_object_set_new(o, "kld_percentiles", pct);
    json_object_set_new(o, "same_top_p", json_real(k->same_top));
    json_object_set_new(o, "same_top_p_stderr", json_real(k->same_top_unc));
    json_object_set_new(o, "delta_p_mean", json_real(k->p_diff_mean));
    json_object_set_new(o, "delta_p_rms", json_real(k->p_diff_rms));
    json_object_set_new(o, "ppl_base", json_real(k->ppl_base));
    json_object_set_new(o, "ppl_ratio", json_real(k->ppl_ratio));
    json_object_set_new(o, "ppl_ratio_stderr", json_real(k->ppl_ratio_unc));
    return o;
}

static void print_json(const eval_opts *a, const eval_result *r) {
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(a->model));
    json_object_set_new(o, "text", json_string(a->text));
    json_object_set_new(o, "ppl", json_real(r->ppl));
    json_object_set_new(o, "ppl_stderr", json_real(r->ppl_stderr));
    json_object_set_new(o, "n_ctx", json_integer(r->n_ctx));
    json_object_set_new(o, "chunks", json_integer(r->n_chunk));
    json_object_set_new(o, "tokens", json_integer((json_int_t)r->n_tokens));
    json_object_set_new(o, "scored", json_integer(r->stats.count));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "tokens_per_second", json_real(r->tokens_per_second));
    if (r->have_kld) {
        json_object_set_new(o, "base", json_string(a->kl_base ? a->kl_base : a->kl_logits));
        json_t *k = kld_json(&r->kld);
        json_object_update(o, k);
        json_decref(k);
    }
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (s) puts(s);
    free(s);
    json_decref(o);
}

static void print_text(const eval_opts *a, const eval_result *r) {
    printf("%s on %s: %zu tokens, %d chunks of %d, %lld scored\n", a->model, a->text, r->n_tokens, r->n_chunk,
           r->n_ctx, (long long)r->stats.count);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", r->ppl, r->ppl_stderr);
    if (r->have_kld) {
        char buf[8192];
        if (kld_report(&r->kld, buf, sizeof buf) > 0) fputs(buf, stdout);
    }
    printf("%.2fs, %.1f tokens/s\n", r->seconds, r->tokens_per_second);
}

int cmd_eval(int argc, char **argv) {
    eval_args a;
    int prc = parse(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    a.o.n_threads = a.c.threads;
    a.o.comm = cli_job(); /* under mpirun the ranks share the chunks */
    cli_progress prog;
    cli_progress_init(&prog, &a.c, "eval");
    const eval_hooks hooks = {.ud = &prog, .chunk_done = on_chunk};
    eval_result r;
    slmc_err err = {{0}};
    const int rc = eval_run(&a.o, &hooks, &r, &err);
    cli_progress_done(&prog);
    if (rc != 0) return cli_error(&err);
    if (a.c.json) print_json(&a.o, &r);
    else print_text(&a.o, &r);
    return EXIT_OK;
}
