/* cmd_imatrix.c - `slmc imatrix MODEL --text FILE -o OUT`: the importance matrix llama-imatrix
 * computes (mean x² per input column of every block weight over a calibration text), written
 * as llama.cpp's legacy .dat or GGUF imatrix; also merges and converts existing files. */
#include <getopt.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/llm.h"
#include "eval/perplexity.h"
#include "eval/tokenizer.h"
#include "formats/fileio.h"
#include "quant/imatrix.h"

int cmd_imatrix(int argc, char **argv);

static const char *USAGE =
    "Usage: slmc imatrix MODEL --text FILE -o OUT [options]\n"
    "       slmc imatrix --in-file F [--in-file F ...] -o OUT [options]\n"
    "\n"
    "Importance matrix as llama-imatrix computes it: the text is tokenized with BOS and cut into\n"
    "chunks of N tokens (the first of each replaced by BOS); each chunk is evaluated in one batch\n"
    "and, for every matrix product of the blocks, the squares of its input are summed per column.\n"
    "llama-quantize (and slmc quantize) weigh quantization errors by the resulting mean x².\n"
    "Existing files given with --in-file are merged first (sums and token counts add); without\n"
    "--text they are just merged or converted.\n"
    "\n"
    "Options:\n"
    "  --text FILE          calibration text (UTF-8)\n"
    "  -o, --output OUT     output file\n"
    "  --format dat|gguf    llama.cpp's legacy .dat or the GGUF imatrix (default: gguf when OUT\n"
    "                       ends in .gguf, else dat)\n"
    "  -c, --ctx N          tokens per chunk, default 512 (also the chunk size assumed when\n"
    "                       reading .dat files, which do not store it)\n"
    "  --chunks N           process at most N chunks (default: all)\n"
    "  --process-output     also collect output.weight\n"
    "  --in-file F          merge an existing imatrix (.dat or GGUF); repeatable\n"
    "  --hdf5 F             also export the mean x² per column and the counts to HDF5\n"
    "  --tokenizer FILE     llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --json               one JSON object on stdout\n"
    "  -t, --threads N      threads\n"
    "  -q, --quiet          no progress\n"
    "  -h, --help           this help\n";

#define MAX_IN_FILES 64

typedef struct imatrix_args {
    cli_common c;
    const char *model, *text, *out, *hdf5, *tokenizer;
    const char *in_files[MAX_IN_FILES];
    int n_in_files;
    int n_ctx, chunks;
    bool ctx_given, process_output, gguf;
} imatrix_args;

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int parse(int argc, char **argv, imatrix_args *a) {
    memset(a, 0, sizeof *a);
    a->n_ctx = 512;
    a->chunks = -1;
    const char *format = NULL;
    static const struct option opts[] = {
        {"text", required_argument, 0, 'T'}, {"output", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'F'}, {"ctx", required_argument, 0, 'c'},
        {"chunks", required_argument, 0, 'n'}, {"process-output", no_argument, 0, 'P'},
        {"in-file", required_argument, 0, 'I'}, {"hdf5", required_argument, 0, 'H'},
        {"tokenizer", required_argument, 0, 'k'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        switch (ch) {
        case 'T': a->text = optarg; break;
        case 'o': a->out = optarg; break;
        case 'F': format = optarg; break;
        case 'c':
            if ((rc = cli_opt_int("imatrix", "-c/--ctx", optarg, IMATRIX_MIN_TOKENS, 1 << 20, &a->n_ctx))) return rc;
            a->ctx_given = true;
            break;
        case 'n':
            if ((rc = cli_opt_int("imatrix", "--chunks", optarg, 1, INT_MAX, &a->chunks))) return rc;
            break;
        case 'P': a->process_output = true; break;
        case 'I':
            if (a->n_in_files == MAX_IN_FILES) return cli_usage_error("imatrix", "at most %d --in-file", MAX_IN_FILES);
            a->in_files[a->n_in_files++] = optarg;
            break;
        case 'H': a->hdf5 = optarg; break;
        case 'k': a->tokenizer = optarg; break;
        default:
            if ((rc = cli_common_option("imatrix", USAGE, ch, argv, &a->c))) return rc;
        }
    }
    if (argc - optind > 1) return cli_usage_error("imatrix", "expected at most one MODEL");
    if (argc - optind == 1) a->model = argv[optind];
    if (!!a->model != !!a->text) return cli_usage_error("imatrix", "MODEL and --text FILE go together");
    if (!a->text && a->n_in_files == 0) return cli_usage_error("imatrix", "give MODEL --text FILE, or --in-file F");
    if (!a->out && !a->hdf5) return cli_usage_error("imatrix", "give -o OUT (or --hdf5 F)");
    if (format) {
        if (strcmp(format, "gguf") == 0) a->gguf = true;
        else if (strcmp(format, "dat") != 0) return cli_usage_error("imatrix", "--format is dat or gguf, not '%s'", format);
    } else {
        a->gguf = a->out && ends_with(a->out, ".gguf");
    }
    return 0;
}

/* What a run collected, for the report. */
typedef struct run_stats {
    size_t n_tokens;   /* tokens in the text */
    int n_chunk;       /* chunks evaluated */
    ppl_stats ppl;     /* with --process-output: perplexity of the chunks (free, logits exist) */
    double eval_secs;  /* time in the forward passes */
} run_stats;

static void progress_line(const cli_progress *p, int c, int n) {
    if (!p->enabled) return;
    double el = cli_now() - p->t_start;
    fprintf(stderr, "\r\033[Kimatrix [%d/%d] %.1fs, ETA %.0fs", c, n, el, el / c * (n - c));
}

/* Tokenize the text and accumulate every chunk into im. */
static int collect(imatrix *im, const imatrix_args *a, run_stats *rs, slmc_err *err) {
    model m;
    llm_model lm;
    llm_context ctx;
    bool open_m = false, open_lm = false, open_ctx = false;
    tokenizer *tok = NULL;
    mapped_file text = {0};
    int32_t *tokens = NULL;
    float *logits = NULL;
    int rc = -1;

    if (cli_open_model(&m, a->model, a->tokenizer, err) != 0) goto done;
    open_m = true;
    if (llm_model_init(&lm, &m, err) != 0) { slmc_fail_prefix(err, a->model); goto done; }
    open_lm = true;
    if (llm_context_init(&ctx, &lm, a->n_ctx, a->n_ctx, err) != 0) { slmc_fail_prefix(err, a->model); goto done; }
    open_ctx = true;
    if (!meta_get_str(&m.kv, "tokenizer.ggml.model")) {
        slmc_fail(err, a->model, "has no tokenizer; imatrix needs one to read the text");
        goto done;
    }
    if (tokenizer_create(&tok, &m.kv, err) != 0) { slmc_fail_prefix(err, a->model); goto done; }
    if (map_file(&text, a->text, err) != 0) goto done;
    if (tokenizer_encode(tok, (const char *)text.data, text.size, true, false, &tokens, &rs->n_tokens, err) != 0) {
        slmc_fail_prefix(err, a->text);
        goto done;
    }
    const int n_ctx = a->n_ctx;
    if ((int64_t)rs->n_tokens < 2 * (int64_t)n_ctx) {
        slmc_fail(err, a->text, "has %zu tokens; imatrix with -c %d needs at least %d", rs->n_tokens, n_ctx, 2 * n_ctx);
        goto done;
    }
    rs->n_chunk = ppl_chunk_count((int64_t)rs->n_tokens, n_ctx, a->chunks);
    const int32_t bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1;
    if (a->process_output && !(logits = malloc(sizeof(float) * (size_t)n_ctx * (size_t)lm.n_vocab))) {
        slmc_fail(err, a->model, "out of memory for %d rows of %lld logits", n_ctx, (long long)lm.n_vocab);
        goto done;
    }
    cli_progress prog;
    cli_progress_init(&prog, &a->c, "imatrix");
    double t0 = cli_now();
    for (int c = 0; c < rs->n_chunk; c++) {
        const int32_t *chunk = tokens + (size_t)c * (size_t)n_ctx;
        if (imatrix_eval_chunk(im, &ctx, chunk, n_ctx, bos, a->process_output, logits, err) != 0) {
            cli_progress_done(&prog);
            slmc_fail_prefix(err, a->model);
            goto done;
        }
        if (logits) ppl_accumulate(&rs->ppl, logits + (size_t)ppl_first(n_ctx) * (size_t)lm.n_vocab, lm.n_vocab, chunk, n_ctx);
        progress_line(&prog, c + 1, rs->n_chunk);
    }
    cli_progress_done(&prog);
    rs->eval_secs = cli_now() - t0;
    if (imatrix_add_dataset(im, a->text, err) != 0) goto done;
    rc = 0;
done:
    free(logits);
    free(tokens);
    if (tok) tokenizer_free(tok);
    unmap_file(&text);
    if (open_ctx) llm_context_free(&ctx);
    if (open_lm) llm_model_free(&lm);
    if (open_m) model_close(&m);
    return rc;
}

int cmd_imatrix(int argc, char **argv) {
    imatrix_args a;
    int prc = parse(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    slmc_err err = {{0}};
    double t0 = cli_now();
    run_stats rs;
    memset(&rs, 0, sizeof rs);
    imatrix im;
    /* the chunk size: the run's -c, else the first GGUF input's, else llama.cpp's 512 */
    imatrix_init(&im, a.text || a.ctx_given ? a.n_ctx : 0);
    int rc = EXIT_ERROR;

    for (int i = 0; i < a.n_in_files; i++)
        if (imatrix_read(&im, a.in_files[i], &err) != 0) { cli_error(&err); goto done; }
    if (a.text) {
        if (collect(&im, &a, &rs, &err) != 0) { cli_error(&err); goto done; }
        /* a fresh matrix is written in name order (llama.cpp's GGUF order); merged files keep theirs */
        if (a.n_in_files == 0) imatrix_sort(&im);
    }
    if (imatrix_finish(&im, &err) != 0) { cli_error(&err); goto done; }
    if (a.out && (a.gguf ? imatrix_write_gguf(&im, a.out, &err) : imatrix_write_dat(&im, a.out, &err)) != 0) {
        cli_error(&err);
        goto done;
    }
    if (a.hdf5 && imatrix_write_hdf5(&im, a.hdf5, a.model, &err) != 0) { cli_error(&err); goto done; }

    double secs = cli_now() - t0;
    int64_t tokens = (int64_t)rs.n_chunk * a.n_ctx;
    double tps = rs.eval_secs > 0 ? (double)tokens / rs.eval_secs : 0;
    if (a.c.json) {
        json_t *o = json_object();
        if (a.model) json_object_set_new(o, "model", json_string(a.model));
        if (a.text) json_object_set_new(o, "text", json_string(a.text));
        json_t *ins = json_array();
        for (int i = 0; i < a.n_in_files; i++) json_array_append_new(ins, json_string(a.in_files[i]));
        json_object_set_new(o, "in_files", ins);
        if (a.out) {
            json_object_set_new(o, "output", json_string(a.out));
            json_object_set_new(o, "format", json_string(a.gguf ? "gguf" : "dat"));
        }
        if (a.hdf5) json_object_set_new(o, "hdf5", json_string(a.hdf5));
        json_object_set_new(o, "entries", json_integer((json_int_t)im.n));
        json_object_set_new(o, "n_ctx", json_integer(im.chunk_size));
        json_object_set_new(o, "chunks", json_integer(rs.n_chunk));
        json_object_set_new(o, "chunk_count", json_integer(im.chunk_count));
        json_object_set_new(o, "text_tokens", json_integer((json_int_t)rs.n_tokens));
        if (a.process_output && rs.ppl.count > 0) {
            json_object_set_new(o, "ppl", json_real(ppl_value(&rs.ppl)));
            json_object_set_new(o, "ppl_stderr", json_real(ppl_stderr(&rs.ppl)));
        }
        json_object_set_new(o, "seconds", json_real(secs));
        json_object_set_new(o, "eval_seconds", json_real(rs.eval_secs));
        json_object_set_new(o, "tokens_per_second", json_real(tps));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        if (a.text)
            printf("%s on %s: %zu tokens, %d chunks of %d collected\n", a.model, a.text, rs.n_tokens, rs.n_chunk, a.n_ctx);
        if (a.n_in_files) printf("merged %d file%s\n", a.n_in_files, a.n_in_files > 1 ? "s" : "");
        if (a.process_output && rs.ppl.count > 0)
            printf("PPL of the chunks = %.4f +/- %.5f\n", ppl_value(&rs.ppl), ppl_stderr(&rs.ppl));
        printf("%zu entries, %d chunks of %d", im.n, im.chunk_count, im.chunk_size);
        if (a.out) printf(" -> %s (%s)", a.out, a.gguf ? "gguf" : "dat");
        if (a.hdf5) printf(" -> %s (hdf5)", a.hdf5);
        printf("\n%.2fs", secs);
        if (tps > 0) printf(", %.1f tokens/s", tps);
        printf("\n");
    }
    rc = EXIT_OK;
done:
    imatrix_free(&im);
    return rc;
}
