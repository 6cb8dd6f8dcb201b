/* cmd_generate.c - `slmc generate MODEL -p TEXT`: stream a continuation to stdout. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/generate.h"

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

static int parse(int argc, char **argv, cli_common *c, generate_opts *o) {
    memset(c, 0, sizeof *c);
    *o = (generate_opts){.n_predict = 128, .top_k = 40, .temp = 0.8f, .top_p = 0.95f, .seed = 1};
    static const struct option opts[] = {
        {"prompt", required_argument, 0, 'p'}, {"n-predict", required_argument, 0, 'n'},
        {"temp", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'K'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 'S'},
        {"ctx", required_argument, 0, 'c'}, {"tokenizer", required_argument, 0, 'k'},
        CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "p:n:c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'p': o->prompt = optarg; break;
        case 'n': rc = cli_opt_int("generate", "-n/--n-predict", optarg, 0, INT_MAX, &o->n_predict); break;
        case 'T': rc = cli_opt_f32("generate", "--temp", optarg, 0, 100, false, &o->temp); break;
        case 'K': rc = cli_opt_int("generate", "--top-k", optarg, 0, INT_MAX, &o->top_k); break;
        case 'P': rc = cli_opt_f32("generate", "--top-p", optarg, 0, 1, true, &o->top_p); break;
        case 'S': rc = cli_opt_u64("generate", "--seed", optarg, &o->seed); break;
        case 'c': rc = cli_opt_int("generate", "-c/--ctx", optarg, 2, 1 << 20, &o->n_ctx); break;
        case 'k': o->tokenizer = optarg; break;
        default: rc = cli_common_option("generate", USAGE, ch, argv, c); break;
        }
        if (rc) return rc;
    }
    if (argc - optind != 1) return cli_usage_error("generate", "expected one MODEL");
    if (!o->prompt) return cli_usage_error("generate", "-p TEXT is required");
    o->model = argv[optind];
    o->n_threads = c->threads;
    return 0;
}

/* Where the continuation goes: streamed to stdout, or (--json) collected. */
typedef struct output {
    bool json;
    const char *prompt;
    char *text;      /* --json: the continuation so far (NUL-terminated) */
    size_t len;
} output;

static int on_start(void *ud, int n_prompt_tokens) {
    const output *out = ud;
    (void)n_prompt_tokens;
    if (!out->json) {
        fputs(out->prompt, stdout);
        fflush(stdout);
    }
    return 0;
}

static int on_piece(void *ud, const char *bytes, size_t len) {
    output *out = ud;
    if (!out->json) {
        fwrite(bytes, 1, len, stdout);
        fflush(stdout);
        return 0;
    }
    char *grown = realloc(out->text, out->len + len + 1);
    if (!grown) return -1;
    out->text = grown;
    memcpy(out->text + out->len, bytes, len);
    out->len += len;
    out->text[out->len] = 0;
    return 0;
}

static void print_json(output *out, const generate_result *r) {
    json_t *j = json_object();
    json_object_set_new(j, "prompt", json_string(out->prompt));
    json_t *jt = json_stringn(out->text ? out->text : "", out->len);
    if (!jt) { /* the model stopped inside a UTF-8 sequence: JSON cannot hold those bytes */
        for (size_t i = 0; i < out->len; i++)
            if ((unsigned char)out->text[i] >= 0x80) out->text[i] = '?';
        jt = json_stringn(out->text ? out->text : "", out->len);
    }
    json_object_set_new(j, "text", jt);
    json_object_set_new(j, "tokens", json_integer(r->n_generated));
    json_object_set_new(j, "prompt_tokens", json_integer(r->n_prompt));
    json_object_set_new(j, "seconds", json_real(r->seconds));
    json_object_set_new(j, "tokens_per_second", json_real(r->seconds > 0 ? r->n_generated / r->seconds : 0));
    char *js = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (js) puts(js);
    free(js);
    json_decref(j);
}

int cmd_generate(int argc, char **argv) {
    cli_common c;
    generate_opts o;
    int prc = parse(argc, argv, &c, &o);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&c);
    output out = {.json = c.json, .prompt = o.prompt};
    const generate_hooks hooks = {.ud = &out, .start = on_start, .piece = on_piece};
    generate_result r;
    slmc_err err = {{0}};
    if (generate_run(&o, &hooks, &r, &err) != 0) {
        free(out.text);
        return cli_error(&err);
    }
    if (c.json) print_json(&out, &r);
    else putchar('\n');
    if (!c.quiet && !c.json)
        fprintf(stderr, "slmc: %d tokens in %.2fs (%.1f tokens/s)\n", r.n_generated, r.seconds,
                r.seconds > 0 ? r.n_generated / r.seconds : 0);
    free(out.text);
    return EXIT_OK;
}
