/* cmd_generate.c - `slmc generate MODEL -p TEXT`: stream a continuation to stdout. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/llm.h"
#include "eval/sample.h"
#include "eval/tokenizer.h"

static const char *USAGE =
    "Usage: slmc generate MODEL -p TEXT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]\n"
    "\n"
    "Continue TEXT with MODEL, streaming tokens to stdout as they are chosen. Sampling keeps\n"
    "the top K tokens, then the smallest set reaching probability P, then draws at\n"
    "temperature T from a generator seeded with S (the same seed gives the same text);\n"
    "--temp 0 picks the most likely token every time.\n"
    "\n"
    "Options:\n"
    "  -p, --prompt TEXT    the prompt (BOS is added as the vocabulary asks)\n"
    "  -n, --n-predict N    tokens to generate (default 128; stops early at end of text)\n"
    "  --temp T             temperature (default 0.8; 0 = greedy)\n"
    "  --top-k K            default 40 (0 = off)\n"
    "  --top-p P            default 0.95 (1 = off)\n"
    "  --seed S             default 1\n"
    "  -c, --ctx N          context length (default: the model's, at most 4096)\n"
    "  --tokenizer FILE     llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --json               no streaming: one JSON object on stdout with prompt, text,\n"
    "                       tokens (generated), prompt_tokens, seconds, tokens_per_second\n"
    "  -t, --threads N      threads\n"
    "  -q, --quiet          no timing note on stderr\n"
    "  -h, --help           this help\n";

int cmd_generate(int argc, char **argv) {
    cli_common c = {0};
    const char *prompt = NULL, *tokenizer_path = NULL;
    int n_predict = 128, top_k = 40, n_ctx = 0;
    float temp = 0.8f, top_p = 0.95f;
    uint64_t seed = 1;
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'K'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"ctx", required_argument, 0, 'c'}, {"tokenizer", required_argument, 0, 'k'},
        CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, prc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "p:n:c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        prc = 0;
        switch (ch) {
        case 'p': prompt = optarg; break;
        case 'n': prc = cli_opt_int("generate", "-n/--n-predict", optarg, 0, INT_MAX, &n_predict); break;
        case 'T': prc = cli_opt_f32("generate", "--temp", optarg, 0, 100, false, &temp); break;
        case 'K': prc = cli_opt_int("generate", "--top-k", optarg, 0, INT_MAX, &top_k); break;
        case 'P': prc = cli_opt_f32("generate", "--top-p", optarg, 0, 1, true, &top_p); break;
        case 'S': prc = cli_opt_u64("generate", "--seed", optarg, &seed); break;
        case 'c': prc = cli_opt_int("generate", "-c/--ctx", optarg, 2, 1 << 20, &n_ctx); break;
        case 'k': tokenizer_path = optarg; break;
        default: prc = cli_common_option("generate", USAGE, ch, argv, &c); break;
        }
        if (prc == CLI_HELP) return EXIT_OK;
        if (prc) return prc;
    }
    if (argc - optind != 1) return cli_usage_error("generate", "expected one MODEL");
    if (!prompt) return cli_usage_error("generate", "-p TEXT is required");
    const char *path = argv[optind];
    cli_apply_threads(&c);
    slmc_err err = {{0}};
    model m;
    if (cli_open_model(&m, path, tokenizer_path, &err) != 0) return cli_error(&err);
    int rc = EXIT_ERROR;
    tokenizer *tok = NULL;
    llm_model lm;
    llm_context ctx;
    bool have_lm = false, have_ctx = false, have_sampler = false;
    sampler smp;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    char *piece = NULL;
    char *text = NULL; /* --json: the continuation, collected instead of streamed */
    size_t text_len = 0;
    if (!meta_get_str(&m.kv, "tokenizer.ggml.model")) { slmc_fail(&err, path, "has no tokenizer"); cli_error(&err); goto done; }
    if (tokenizer_create(&tok, &m.kv, &err) != 0) { slmc_fail_prefix(&err, path); cli_error(&err); goto done; }
    if (tokenizer_encode(tok, prompt, strlen(prompt), true, false, &ids, &n_ids, &err) != 0) { cli_error(&err); goto done; }
    if (llm_model_init(&lm, &m, &err) != 0) { slmc_fail_prefix(&err, path); cli_error(&err); goto done; }
    have_lm = true;
    if (n_ctx == 0) n_ctx = m.cfg.n_ctx_train > 0 && m.cfg.n_ctx_train < 4096 ? (int)m.cfg.n_ctx_train : 4096;
    if ((int64_t)n_ids + 1 > n_ctx) {
        slmc_fail(&err, path, "the prompt has %zu tokens, more than the context of %d", n_ids, n_ctx);
        cli_error(&err);
        goto done;
    }
    if (llm_context_init(&ctx, &lm, n_ctx, (int)n_ids, &err) != 0) { cli_error(&err); goto done; }
    have_ctx = true;
    if (sampler_init(&smp, lm.n_vocab, temp, top_k, top_p, seed) != 0) { slmc_fail(&err, path, "out of memory"); cli_error(&err); goto done; }
    have_sampler = true;
    logits = malloc(sizeof(float) * (size_t)lm.n_vocab);
    size_t cap = tokenizer_max_piece(tok) + 1;
    piece = malloc(cap);
    if (!logits || !piece) { slmc_fail(&err, path, "out of memory"); cli_error(&err); goto done; }

    if (!c.json) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    double t0 = cli_now();
    /* the whole prompt in one batch; keep the last position's logits */
    if (llm_eval_out(&ctx, ids, (int)n_ids, 0, (int)n_ids - 1, logits, &err) != 0) { cli_error(&err); goto done; }
    int pos = (int)n_ids, produced = 0;
    const int32_t eos = tokenizer_eos(tok);
    while (produced < n_predict && pos < n_ctx) {
        int32_t t = sampler_next(&smp, logits);
        if (t == eos) break;
        int len = tokenizer_piece(tok, t, piece, cap);
        if (len > 0 && c.json) {
            char *grown = realloc(text, text_len + (size_t)len + 1);
            if (!grown) { slmc_fail(&err, path, "out of memory"); cli_error(&err); goto done; }
            text = grown;
            memcpy(text + text_len, piece, (size_t)len);
            text_len += (size_t)len;
            text[text_len] = 0;
        } else if (len > 0) {
            fwrite(piece, 1, (size_t)len, stdout);
            fflush(stdout);
        }
        produced++;
        if (llm_eval_out(&ctx, &t, 1, pos, 0, logits, &err) != 0) { cli_error(&err); goto done; }
        pos++;
    }
    double secs = cli_now() - t0;
    if (c.json) {
        json_t *j = json_object();
        json_object_set_new(j, "prompt", json_string(prompt));
        json_t *jt = json_stringn(text ? text : "", text_len);
        if (!jt) { /* the model stopped inside a UTF-8 sequence: JSON cannot hold those bytes */
            for (size_t i = 0; i < text_len; i++)
                if ((unsigned char)text[i] >= 0x80) text[i] = '?';
            jt = json_stringn(text ? text : "", text_len);
        }
        json_object_set_new(j, "text", jt);
        json_object_set_new(j, "tokens", json_integer(produced));
        json_object_set_new(j, "prompt_tokens", json_integer((json_int_t)n_ids));
        json_object_set_new(j, "seconds", json_real(secs));
        json_object_set_new(j, "tokens_per_second", json_real(secs > 0 ? produced / secs : 0));
        char *js = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        if (js) puts(js);
        free(js);
        json_decref(j);
    } else {
        putchar('\n');
    }
    if (!c.quiet && !c.json) fprintf(stderr, "slmc: %d tokens in %.2fs (%.1f tokens/s)\n", produced, secs, secs > 0 ? produced / secs : 0);
    rc = EXIT_OK;
done:
    free(logits);
    free(piece);
    free(text);
    free(ids);
    if (have_sampler) sampler_free(&smp);
    if (have_ctx) llm_context_free(&ctx);
    if (have_lm) llm_model_free(&lm);
    if (tok) tokenizer_free(tok);
    model_close(&m);
    return rc;
}
