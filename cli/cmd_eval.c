/* cmd_eval.c - `slmc eval MODEL --text FILE`: perplexity as llama-perplexity computes it, and
 * KL divergence / top-token agreement against a base model (run side by side, or saved). */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/llm.h"
#include "eval/logits_store.h"
#include "eval/perplexity.h"
#include "eval/tokenizer.h"
#include "formats/fileio.h"

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
    const char *model, *text, *kl_base, *save_logits, *kl_logits, *tokenizer;
    int n_ctx, chunks;
    bool ctx_given;
} eval_args;

static int parse(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    a->n_ctx = 512;
    a->chunks = -1;
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
        case 'T': a->text = optarg; break;
        case 'c':
            if ((rc = cli_opt_int("eval", "-c/--ctx", optarg, 8, 1 << 20, &a->n_ctx))) return rc;
            a->ctx_given = true;
            break;
        case 'n':
            if ((rc = cli_opt_int("eval", "--chunks", optarg, 1, INT_MAX, &a->chunks))) return rc;
            break;
        case 'B': a->kl_base = optarg; break;
        case 'S': a->save_logits = optarg; break;
        case 'L': a->kl_logits = optarg; break;
        case 'k': a->tokenizer = optarg; break;
        default:
            if ((rc = cli_common_option("eval", USAGE, ch, argv, &a->c))) return rc;
        }
    }
    if (argc - optind != 1) return cli_usage_error("eval", "expected one MODEL");
    a->model = argv[optind];
    if (!a->text) return cli_usage_error("eval", "--text FILE is required");
    if (!!a->kl_base + !!a->kl_logits > 1) return cli_usage_error("eval", "give --kl-base or --kl-logits, not both");
    return 0;
}

/* One model ready to evaluate: the view, the engine and a context. */
typedef struct runner {
    model m;
    llm_model lm;
    llm_context ctx;
    bool open_m, open_lm, open_ctx;
} runner;

static int runner_open(runner *r, const char *path, const char *tokenizer, int n_ctx, slmc_err *err) {
    memset(r, 0, sizeof *r);
    if (cli_open_model(&r->m, path, tokenizer, err) != 0) return -1;
    r->open_m = true;
    if (llm_model_init(&r->lm, &r->m, err) != 0) return slmc_fail_prefix(err, path);
    r->open_lm = true;
    if (llm_context_init(&r->ctx, &r->lm, n_ctx, n_ctx, err) != 0) return -1;
    r->open_ctx = true;
    return 0;
}

static void runner_close(runner *r) {
    if (r->open_ctx) llm_context_free(&r->ctx);
    if (r->open_lm) llm_model_free(&r->lm);
    if (r->open_m) model_close(&r->m);
}

static void progress_line(const cli_progress *p, int c, int n, double ppl) {
    if (!p->enabled) return;
    double el = cli_now() - p->t_start;
    fprintf(stderr, "\r\033[Keval [%d/%d] PPL %.4f, %.1fs, ETA %.0fs", c, n, ppl, el, el / c * (n - c));
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

int cmd_eval(int argc, char **argv) {
    eval_args a;
    int prc = parse(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    slmc_err err = {{0}};
    int rc = EXIT_ERROR;
    runner run, base;
    memset(&base, 0, sizeof base);
    tokenizer *tok = NULL;
    mapped_file text = {0};
    int32_t *tokens = NULL, *next = NULL, *ftoks = NULL;
    float *logits = NULL, *base_logits = NULL;
    uint16_t *rows = NULL;
    logits_store store;
    memset(&store, 0, sizeof store);
    kld_stats ks;
    memset(&ks, 0, sizeof ks);
    size_t n_tokens = 0;

    /* with saved base logits, the context comes from the file unless -c says otherwise */
    if (a.kl_logits) {
        if (logits_store_open(&store, a.kl_logits, &err) != 0) return cli_error(&err);
        if (!a.ctx_given) a.n_ctx = store.n_ctx;
        if (store.n_ctx != a.n_ctx) {
            slmc_fail(&err, a.kl_logits, "was saved with -c %d, not %d", store.n_ctx, a.n_ctx);
            logits_store_close(&store);
            return cli_error(&err);
        }
    }
    if (runner_open(&run, a.model, a.tokenizer, a.n_ctx, &err) != 0) { cli_error(&err); goto done; }
    if (!meta_get_str(&run.m.kv, "tokenizer.ggml.model")) {
        slmc_fail(&err, a.model, "has no tokenizer; eval needs one to read the text");
        cli_error(&err);
        goto done;
    }
    if (tokenizer_create(&tok, &run.m.kv, &err) != 0) { slmc_fail_prefix(&err, a.model); cli_error(&err); goto done; }
    if (map_file(&text, a.text, &err) != 0) { cli_error(&err); goto done; }
    double t0 = cli_now();
    if (tokenizer_encode(tok, (const char *)text.data, text.size, true, false, &tokens, &n_tokens, &err) != 0) {
        slmc_fail_prefix(&err, a.text);
        cli_error(&err);
        goto done;
    }
    const int n_ctx = a.n_ctx;
    if ((int64_t)n_tokens < 2 * (int64_t)n_ctx) {
        slmc_fail(&err, a.text, "has %zu tokens; perplexity with -c %d needs at least %d", n_tokens, n_ctx, 2 * n_ctx);
        cli_error(&err);
        goto done;
    }
    int n_chunk = ppl_chunk_count((int64_t)n_tokens, n_ctx, a.chunks);
    const int64_t n_vocab = run.lm.n_vocab;
    const int n_scored = ppl_scored(n_ctx), first = ppl_first(n_ctx);
    const int32_t bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1;

    if (a.kl_base) {
        if (runner_open(&base, a.kl_base, a.tokenizer, n_ctx, &err) != 0) { cli_error(&err); goto done; }
        if (base.lm.n_vocab != n_vocab) {
            slmc_fail(&err, a.kl_base, "has %lld tokens in its vocabulary, the model %lld", (long long)base.lm.n_vocab,
                      (long long)n_vocab);
            cli_error(&err);
            goto done;
        }
    }
    if (a.kl_logits) {
        if (store.n_vocab != n_vocab) {
            slmc_fail(&err, a.kl_logits, "holds a vocabulary of %lld, the model has %lld", (long long)store.n_vocab,
                      (long long)n_vocab);
            cli_error(&err);
            goto done;
        }
        if (store.n_chunk < n_chunk) n_chunk = store.n_chunk;
    }
    if (a.save_logits && logits_store_create(&store, a.save_logits, n_ctx, n_vocab, n_chunk, n_scored, &err) != 0) {
        cli_error(&err);
        goto done;
    }
    logits = malloc(sizeof(float) * (size_t)n_scored * (size_t)n_vocab);
    next = malloc(sizeof(int32_t) * (size_t)n_scored);
    if (a.kl_base) base_logits = malloc(sizeof(float) * (size_t)n_scored * (size_t)n_vocab);
    if (a.save_logits || a.kl_logits) {
        rows = malloc(sizeof(uint16_t) * (size_t)n_scored * kld_row_u16(n_vocab));
        ftoks = malloc(sizeof(int32_t) * (size_t)n_ctx);
    }
    if (!logits || !next || (a.kl_base && !base_logits) || ((a.save_logits || a.kl_logits) && (!rows || !ftoks))) {
        slmc_fail(&err, a.model, "out of memory for %d rows of %lld logits", n_scored, (long long)n_vocab);
        cli_error(&err);
        goto done;
    }

    cli_progress prog;
    cli_progress_init(&prog, &a.c, "eval");
    ppl_stats st = {0};
    double t_eval = cli_now();
    for (int c = 0; c < n_chunk; c++) {
        const int32_t *chunk = tokens + (size_t)c * (size_t)n_ctx;
        if (ppl_eval_chunk(&run.ctx, chunk, n_ctx, bos, logits, &err) != 0) { cli_progress_done(&prog); slmc_fail_prefix(&err, a.model); cli_error(&err); goto done; }
        ppl_accumulate(&st, logits, n_vocab, chunk, n_ctx);
        for (int i = 0; i < n_scored; i++) next[i] = chunk[first + i + 1];
        if (a.kl_base) {
            if (ppl_eval_chunk(&base.ctx, chunk, n_ctx, bos, base_logits, &err) != 0 ||
                kld_compare(&ks, logits, base_logits, n_scored, n_vocab, next, &err) != 0) {
                cli_progress_done(&prog);
                cli_error(&err);
                goto done;
            }
        }
        if (a.kl_logits) {
            if (logits_store_get(&store, c, ftoks, rows, &err) != 0) { cli_progress_done(&prog); cli_error(&err); goto done; }
            if (memcmp(ftoks, chunk, sizeof(int32_t) * (size_t)n_ctx) != 0) {
                cli_progress_done(&prog);
                slmc_fail(&err, a.kl_logits, "chunk %d holds other tokens than this text gives: same text and tokenizer?", c);
                cli_error(&err);
                goto done;
            }
            if (kld_accumulate(&ks, logits, rows, n_scored, n_vocab, next, &err) != 0) { cli_progress_done(&prog); cli_error(&err); goto done; }
        }
        if (a.save_logits) {
            size_t w = kld_row_u16(n_vocab);
            for (int i = 0; i < n_scored; i++) kld_pack_logprobs(logits + (size_t)i * (size_t)n_vocab, n_vocab, next[i], rows + (size_t)i * w);
            if (logits_store_put(&store, c, chunk, rows, &err) != 0) { cli_progress_done(&prog); cli_error(&err); goto done; }
        }
        progress_line(&prog, c + 1, n_chunk, ppl_value(&st));
    }
    cli_progress_done(&prog);
    if (a.save_logits && logits_store_finish(&store, &err) != 0) { cli_error(&err); goto done; }
    double secs = cli_now() - t0, eval_secs = cli_now() - t_eval;
    double tps = eval_secs > 0 ? (double)n_chunk * n_ctx * (a.kl_base ? 2 : 1) / eval_secs : 0;
    kld_summary ksum;
    bool have_kld = (a.kl_base || a.kl_logits);
    if (have_kld && kld_summarize(&ks, &ksum, &err) != 0) { cli_error(&err); goto done; }

    if (a.c.json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(a.model));
        json_object_set_new(o, "text", json_string(a.text));
        json_object_set_new(o, "ppl", json_real(ppl_value(&st)));
        json_object_set_new(o, "ppl_stderr", json_real(ppl_stderr(&st)));
        json_object_set_new(o, "n_ctx", json_integer(n_ctx));
        json_object_set_new(o, "chunks", json_integer(n_chunk));
        json_object_set_new(o, "tokens", json_integer((json_int_t)n_tokens));
        json_object_set_new(o, "scored", json_integer(st.count));
        json_object_set_new(o, "seconds", json_real(secs));
        json_object_set_new(o, "tokens_per_second", json_real(tps));
        if (have_kld) {
            json_object_set_new(o, "base", json_string(a.kl_base ? a.kl_base : a.kl_logits));
            json_t *k = kld_json(&ksum);
            json_object_update(o, k);
            json_decref(k);
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s on %s: %zu tokens, %d chunks of %d, %lld scored\n", a.model, a.text, n_tokens, n_chunk, n_ctx,
               (long long)st.count);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl_value(&st), ppl_stderr(&st));
        if (have_kld) {
            char buf[8192];
            if (kld_report(&ksum, buf, sizeof buf) > 0) fputs(buf, stdout);
        }
        printf("%.2fs, %.1f tokens/s\n", secs, tps);
    }
    rc = EXIT_OK;
done:
    if (store.path) logits_store_close(&store);
    kld_stats_free(&ks);
    free(logits); free(base_logits); free(next); free(rows); free(ftoks); free(tokens);
    if (tok) tokenizer_free(tok);
    unmap_file(&text);
    if (base.open_m) runner_close(&base);
    runner_close(&run);
    return rc;
}
