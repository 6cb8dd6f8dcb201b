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
#include "quant/imatrix.h"
#include "quant/imatrix_run.h"

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
    imatrix_opts o;                       /* what to run: the library's options */
    const char *in_files[MAX_IN_FILES];   /* o.in_files points here */
} imatrix_args;

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int parse(int argc, char **argv, imatrix_args *a) {
    memset(a, 0, sizeof *a);
    imatrix_opts *o = &a->o;
    o->max_chunks = -1; /* n_ctx 0: 512, or without a text the first GGUF input's */
    o->in_files = a->in_files;
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
        case 'T': o->text = optarg; break;
        case 'o': o->out = optarg; break;
        case 'F': format = optarg; break;
        case 'c':
            if ((rc = cli_opt_int("imatrix", "-c/--ctx", optarg, IMATRIX_MIN_TOKENS, 1 << 20, &o->n_ctx))) return rc;
            break;
        case 'n':
            if ((rc = cli_opt_int("imatrix", "--chunks", optarg, 1, INT_MAX, &o->max_chunks))) return rc;
            break;
        case 'P': o->process_output = true; break;
        case 'I':
            if (o->n_in_files == MAX_IN_FILES) return cli_usage_error("imatrix", "at most %d --in-file", MAX_IN_FILES);
            a->in_files[o->n_in_files++] = optarg;
            break;
        case 'H': o->hdf5 = optarg; break;
        case 'k': o->tokenizer = optarg; break;
        default:
            if ((rc = cli_common_option("imatrix", USAGE, ch, argv, &a->c))) return rc;
        }
    }
    if (argc - optind > 1) return cli_usage_error("imatrix", "expected at most one MODEL");
    if (argc - optind == 1) o->model = argv[optind];
    if (!!o->model != !!o->text) return cli_usage_error("imatrix", "MODEL and --text FILE go together");
    if (!o->text && o->n_in_files == 0) return cli_usage_error("imatrix", "give MODEL --text FILE, or --in-file F");
    if (!o->out && !o->hdf5) return cli_usage_error("imatrix", "give -o OUT (or --hdf5 F)");
    if (format) {
        if (strcmp(format, "gguf") == 0) o->out_gguf = true;
        else if (strcmp(format, "dat") != 0) return cli_usage_error("imatrix", "--format is dat or gguf, not '%s'", format);
    } else {
        o->out_gguf = o->out && ends_with(o->out, ".gguf");
    }
    o->n_threads = a->c.threads;
    return 0;
}

/* The progress line after each chunk: chunk, time, ETA. */
static int on_chunk(void *ud, int done, int n_chunk, double el) {
    cli_progress *p = ud;
    if (p->enabled) {
        fprintf(stderr, "\r\033[Kimatrix [%d/%d] %.1fs, ETA %.0fs", done, n_chunk, el, el / done * (n_chunk - done));
        p->drawn = true;
    }
    return 0;
}

static void print_json(const imatrix_opts *a, const imatrix_result *r, double tps) {
    json_t *o = json_object();
    if (a->model) json_object_set_new(o, "model", json_string(a->model));
    if (a->text) json_object_set_new(o, "text", json_string(a->text));
    json_t *ins = json_array();
    for (int i = 0; i < a->n_in_files; i++) json_array_append_new(ins, json_string(a->in_files[i]));
    json_object_set_new(o, "in_files", ins);
    if (a->out) {
        json_object_set_new(o, "output", json_string(a->out));
        json_object_set_new(o, "format", json_string(a->out_gguf ? "gguf" : "dat"));
    }
    if (a->hdf5) json_object_set_new(o, "hdf5", json_string(a->hdf5));
    json_object_set_new(o, "entries", json_integer((json_int_t)r->n_entries));
    json_object_set_new(o, "n_ctx", json_integer(r->chunk_size));
    json_object_set_new(o, "chunks", json_integer(r->n_chunk));
    json_object_set_new(o, "chunk_count", json_integer(r->chunk_count));
    json_object_set_new(o, "text_tokens", json_integer((json_int_t)r->n_tokens));
    if (a->process_output && r->ppl.count > 0) {
        json_object_set_new(o, "ppl", json_real(ppl_value(&r->ppl)));
        json_object_set_new(o, "ppl_stderr", json_real(ppl_stderr(&r->ppl)));
    }
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "eval_seconds", json_real(r->eval_seconds));
    json_object_set_new(o, "tokens_per_second", json_real(tps));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (s) puts(s);
    free(s);
    json_decref(o);
}

static void print_text(const imatrix_opts *a, const imatrix_result *r, double tps) {
    if (a->text)
        printf("%s on %s: %zu tokens, %d chunks of %d collected\n", a->model, a->text, r->n_tokens, r->n_chunk, r->n_ctx);
    if (a->n_in_files) printf("merged %d file%s\n", a->n_in_files, a->n_in_files > 1 ? "s" : "");
    if (a->process_output && r->ppl.count > 0)
        printf("PPL of the chunks = %.4f +/- %.5f\n", ppl_value(&r->ppl), ppl_stderr(&r->ppl));
    printf("%zu entries, %d chunks of %d", r->n_entries, r->chunk_count, r->chunk_size);
    if (a->out) printf(" -> %s (%s)", a->out, a->out_gguf ? "gguf" : "dat");
    if (a->hdf5) printf(" -> %s (hdf5)", a->hdf5);
    printf("\n%.2fs", r->seconds);
    if (tps > 0) printf(", %.1f tokens/s", tps);
    printf("\n");
}

int cmd_imatrix(int argc, char **argv) {
    imatrix_args a;
    int prc = parse(argc, argv, &a);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    a.o.n_threads = a.c.threads;
    a.o.comm = cli_job(); /* under mpirun the ranks share the chunks */
    cli_progress prog;
    cli_progress_init(&prog, &a.c, "imatrix");
    const imatrix_hooks hooks = {.ud = &prog, .chunk_done = on_chunk};
    imatrix_result r;
    slmc_err err = {{0}};
    const int rc = imatrix_run(&a.o, &hooks, &r, &err);
    cli_progress_done(&prog);
    if (rc != 0) return cli_error(&err);
    const double tps = r.eval_seconds > 0 ? (double)((int64_t)r.n_chunk * r.n_ctx) / r.eval_seconds : 0;
    if (a.c.json) print_json(&a.o, &r, tps);
    else print_text(&a.o, &r, tps);
    return EXIT_OK;
}
