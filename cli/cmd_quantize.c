/* cmd_quantize.c - `slmc quantize IN OUT TYPE` and `slmc quantize IN --type A,B -o 'x-{type}.gguf'`:
 * llama.cpp's mixes, streamed and parallel, many variants from one read of the source. The work
 * is quantize_run (quant/quantize_run.h); this file parses, calls it and prints (quantize_print.c). */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "codec/types.h"
#include "quant/quantize_run.h"
#include "quantize_print.h"

#define MAX_PATTERNS 64

static const char *USAGE =
    "Usage: slmc quantize IN OUT TYPE [options]\n"
    "       slmc quantize IN --type TYPE[,TYPE...] -o 'OUT-{type}.gguf' [options]\n"
    "       slmc quantize IN OUT --target-bpw X | --target-size SIZE [options]\n"
    "\n"
    "Quantize a model (Hugging Face folder, GGUF or llama2.c checkpoint) to GGUF with\n"
    "llama.cpp's per-tensor rules for each mix. Several types are written from one read of the\n"
    "source. Rows are streamed in chunks and quantized in parallel: peak memory does not grow\n"
    "with the model (--method gptq holds one layer's Hessians: 3.7 GB for Llama-3.2-1B, see\n"
    "docs/quantize.md), and the output bytes do not depend on the thread count.\n"
    "\n"
    "TYPE: Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K\n"
    "      Q8_0 F16 BF16 F32 (Q3_K, Q4_K, Q5_K mean Q3_K_M, Q4_K_M, Q5_K_M)\n"
    "      i-quants: IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ2_M Q2_K_S IQ3_XXS IQ3_XS IQ3_S IQ3_M\n"
    "      IQ4_NL IQ4_XS; ternary: TQ1_0 TQ2_0 (or llama.cpp's ftype number, e.g. 19)\n"
    "      The IQ1_*, IQ2_*, Q2_K_S and IQ3_XXS mixes need --imatrix: as llama-quantize, a tensor\n"
    "      planned as IQ1_S/IQ1_M/IQ2_XXS/IQ2_XS/IQ2_S (Q2_K in Q2_K_S) without an entry is refused\n"
    "\n"
    "Options:\n"
    "  --type LIST                  comma-separated types (with -o and a {type} placeholder)\n"
    "  -o, --output PATTERN         output path; {type} is replaced by each type's name\n"
    "  --tensor-type REGEX=TYPE     tensors whose name matches REGEX get TYPE (repeatable;\n"
    "                               first match wins; beats the mix)\n"
    "  --output-tensor-type TYPE    type of output.weight\n"
    "  --token-embedding-type TYPE  type of token_embd.weight\n"
    "  --pure                       no per-tensor bumps: every matrix gets the base type\n"
    "  --leave-output-tensor        keep output.weight as it is\n"
    "  --allow-requantize           accept already-quantized input (error compounds)\n"
    "  --imatrix FILE               importance matrix (slmc imatrix or llama-imatrix, .dat or\n"
    "                               GGUF): importance-weighted scale search in every type\n"
    "  --include-weights NAME       use the importance matrix only for this tensor (repeatable)\n"
    "  --exclude-weights NAME       do not use it for this tensor (repeatable)\n"
    "  --dry-run                    print the per-tensor plan and final sizes; write nothing\n"
    "  --method plain|gptq          plain (default): each row on its own; gptq: error feedback\n"
    "                               across columns from calibration Hessians (needs --calib)\n"
    "  --calib FILE                 calibration text for --method gptq\n"
    "  -c, --ctx N                  calibration tokens per chunk (default min(512, context))\n"
    "  --chunks N                   calibration chunks (default 50)\n"
    "  --damp X                     GPTQ damping: lambda = X * mean(diag H) (default 0.01)\n"
    "  --gptq-fp-target             (default) layer L is calibrated on the inputs of the model\n"
    "                               whose token_embd and layers 0..L-1 are already quantized to\n"
    "                               the output type, and fitted to the unquantized model's\n"
    "                               products: one calibration run per --type, two passes each\n"
    "  --gptq-ridge X               fp target: ridge of that fit, X * mean(diag H) (default 1)\n"
    "  --gptq-sequential            the same inputs, but fitted to the layer's own products\n"
    "                               (classic GPTQ): one calibration run per --type\n"
    "  --gptq-parallel              all Hessians from the unquantized model: one calibration\n"
    "                               run serves every --type (fastest)\n"
    "  --target-bpw X               choose each tensor's type to fit X bits per weight (all\n"
    "                               tensor data over all parameters) with the least estimated error\n"
    "  --target-size SIZE           the same for a total tensor data size (\"9MB\", \"12MiB\", bytes)\n"
    "  --tokenizer FILE             llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --json                       print the summary (or plan) as JSON on stdout\n"
    "  -t, --threads N              threads\n"
    "  -q, --quiet                  no progress or notes\n"
    "  -h, --help                   this help\n";

typedef struct quantize_args {
    cli_common c;
    quantize_run_opts o;                    /* what quantize_run is given; its lists point below */
    const char *types[QUANTIZE_MAX_OUTPUTS];
    plan_override overrides[MAX_PATTERNS];
    const char *include[MAX_PATTERNS], *exclude[MAX_PATTERNS];
} quantize_args;

static int parse_tensor_type(const char *name, int *out) {
    *out = type_from_name(name);
    return *out < 0 ? cli_usage_error("quantize", "unknown tensor type '%s'", name) : 0;
}

/* Append a repeatable option's value to list[*n] (of max). */
static int add_name(const char *flag, const char **list, int *n, int max, const char *value) {
    if (*n == max) return cli_usage_error("quantize", "too many %s (at most %d)", flag, max);
    list[(*n)++] = value;
    return 0;
}

/* --type "Q2_K,Q4_K_M" into a->types (pointers into s, which is modified). */
static int split_types(char *s, quantize_args *a) {
    int rc = 0;
    for (char *tok = strtok(s, ","); tok && !rc; tok = strtok(NULL, ","))
        rc = add_name("types", a->types, &a->o.n_types, QUANTIZE_MAX_OUTPUTS, tok);
    return rc;
}

/* --gptq-parallel / --gptq-sequential / --gptq-fp-target: one of them. */
static int set_gptq_mode(quantize_run_opts *o, quantize_gptq_mode mode) {
    if (o->gptq_mode != QUANTIZE_GPTQ_DEFAULT && o->gptq_mode != mode)
        return cli_usage_error("quantize", "give one of --gptq-parallel, --gptq-sequential, --gptq-fp-target");
    o->gptq_mode = mode;
    return 0;
}

static int parse_args(int argc, char **argv, quantize_args *a) {
    memset(a, 0, sizeof *a);
    quantize_run_opts *o = &a->o;
    quantize_run_opts_default(o);
    o->types = a->types;
    o->overrides = a->overrides;
    o->include = a->include;
    o->exclude = a->exclude;
    static const struct option opts[] = {
        {"type", required_argument, 0, 'T'}, {"output", required_argument, 0, 'o'}, {"tensor-type", required_argument, 0, 'X'},
        {"output-tensor-type", required_argument, 0, 'O'}, {"token-embedding-type", required_argument, 0, 'E'},
        {"pure", no_argument, 0, 'p'}, {"leave-output-tensor", no_argument, 0, 'L'}, {"allow-requantize", no_argument, 0, 'R'},
        {"imatrix", required_argument, 0, 'W'}, {"include-weights", required_argument, 0, 'I'}, {"exclude-weights", required_argument, 0, 'x'},
        {"dry-run", no_argument, 0, 'n'}, {"tokenizer", required_argument, 0, 'k'}, {"method", required_argument, 0, 'M'},
        {"calib", required_argument, 0, 'C'}, {"ctx", required_argument, 0, 'c'}, {"chunks", required_argument, 0, 'N'},
        {"damp", required_argument, 0, 'D'}, {"target-bpw", required_argument, 0, 'B'}, {"target-size", required_argument, 0, 'S'},
        {"gptq-sequential", no_argument, 0, 'Q'}, {"gptq-parallel", no_argument, 0, 'P'}, {"gptq-fp-target", no_argument, 0, 'F'},
        {"gptq-ridge", required_argument, 0, 'G'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    slmc_err err = {{0}};
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'T': rc = split_types(optarg, a); break;
        case 'o': o->out_pattern = optarg; break;
        case 'X':
            if (o->n_overrides == MAX_PATTERNS) return cli_usage_error("quantize", "too many --tensor-type");
            if (plan_override_parse(optarg, &a->overrides[o->n_overrides++], &err) != 0)
                return cli_usage_error("quantize", "%s", err.msg);
            break;
        case 'O': rc = parse_tensor_type(optarg, &o->output_type); break;
        case 'E': rc = parse_tensor_type(optarg, &o->token_embd_type); break;
        case 'p': o->pure = true; break;
        case 'L': o->leave_output = true; break;
        case 'R': o->allow_requantize = true; break;
        case 'I': rc = add_name("--include-weights", a->include, &o->n_include, MAX_PATTERNS, optarg); break;
        case 'x': rc = add_name("--exclude-weights", a->exclude, &o->n_exclude, MAX_PATTERNS, optarg); break;
        case 'n': o->dry_run = true; break;
        case 'k': o->tokenizer = optarg; break;
        case 'W': o->imatrix = optarg; break;
        case 'M':
            if (strcmp(optarg, "gptq") != 0 && strcmp(optarg, "plain") != 0)
                return cli_usage_error("quantize", "--method takes plain or gptq, not '%s'", optarg);
            o->gptq = strcmp(optarg, "gptq") == 0;
            break;
        case 'C': o->calib = optarg; break;
        case 'G': rc = cli_opt_float("quantize", "--gptq-ridge", optarg, 0, 1e12, true, &o->ridge); break;
        case 'Q': rc = set_gptq_mode(o, QUANTIZE_GPTQ_SEQUENTIAL); break;
        case 'P': rc = set_gptq_mode(o, QUANTIZE_GPTQ_PARALLEL); break;
        case 'F': rc = set_gptq_mode(o, QUANTIZE_GPTQ_FP_TARGET); break;
        case 'c': rc = cli_opt_int("quantize", "-c/--ctx", optarg, 2, 1 << 20, &o->calib_ctx); break;
        case 'N': rc = cli_opt_int("quantize", "--chunks", optarg, 1, INT_MAX, &o->calib_chunks); break;
        case 'D': rc = cli_opt_float("quantize", "--damp", optarg, 0, 1e6, true, &o->damp); break;
        case 'B': rc = cli_opt_float("quantize", "--target-bpw", optarg, 0, 32, true, &o->target_bpw); break;
        case 'S': rc = cli_opt_size("quantize", "--target-size", optarg, 1, &o->target_size); break;
        default: rc = cli_common_option("quantize", USAGE, ch, argv, &a->c); break;
        }
        if (rc) return rc;
    }
    /* the three forms: IN OUT TYPE; IN --type LIST -o PATTERN; IN OUT with a size target */
    int rest = argc - optind;
    if (rest < 1) return cli_usage_error("quantize", "expected IN");
    o->in = argv[optind];
    if (o->target_bpw > 0 || o->target_size > 0) { /* IN OUT, IN -o OUT, or IN --dry-run */
        if (o->n_types) return cli_usage_error("quantize", "a size target chooses the types: give no TYPE or --type");
        if (rest == 3) return cli_usage_error("quantize", "a size target chooses the types: give IN OUT, no TYPE");
        if (rest == 2 && !o->out_pattern) o->out_pattern = argv[optind + 1];
        else if (rest != 1) return cli_usage_error("quantize", "expected IN OUT with a size target");
        if (!o->out_pattern && !o->dry_run) return cli_usage_error("quantize", "expected IN OUT (or --dry-run) with a size target");
        a->types[o->n_types++] = QUANTIZE_FIT;
    } else if (o->n_types == 0) {
        if (rest != 3 || o->out_pattern) return cli_usage_error("quantize", "expected IN OUT TYPE, or IN --type LIST -o PATTERN");
        o->out_pattern = argv[optind + 1];
        a->types[o->n_types++] = argv[optind + 2];
    } else {
        if (rest != 1) return cli_usage_error("quantize", "with --type give only IN (and -o PATTERN)");
        if (!o->out_pattern && !o->dry_run) return cli_usage_error("quantize", "--type needs -o PATTERN");
    }
    /* the checks that need no model: {type}, the gptq and imatrix flags, type names, ... */
    return quantize_run_check(o, &err) != 0 ? cli_usage_error("quantize", "%s", err.msg) : 0;
}

/* What the hooks reach: the options and the progress line of the writing. */
typedef struct quantize_ui {
    const cli_common *c;
    cli_progress prog;
} quantize_ui;

/* The plans are made: print the size target's choice, and start the progress clock. */
static void planned(void *ud, const quantize_result *r) {
    quantize_ui *u = ud;
    cli_progress_init(&u->prog, u->c, "quantize");
    if (r->fitted && !u->c->json && !u->c->quiet) quantize_print_fit(r);
}

static void note(void *ud, const char *msg) { cli_note(((quantize_ui *)ud)->c, "%s", msg); }

int cmd_quantize(int argc, char **argv) {
    quantize_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == CLI_HELP) return EXIT_OK;
    if (rc) return rc;
    cli_apply_threads(&a.c); /* under mpirun: this rank's part of the cores */
    a.o.n_threads = a.c.threads;
    a.o.comm = cli_job(); /* under mpirun rank 0 writes; with GPTQ the ranks share the chunks */
    quantize_ui ui = {.c = &a.c}; /* ui.prog starts once the plans are made */
    quantize_hooks hooks = {.ud = &ui, .note = note, .planned = planned, .progress = cli_progress_hook(&ui.prog)};
    quantize_result r;
    slmc_err err = {{0}};
    rc = quantize_run(&a.o, &hooks, &r, &err);
    cli_progress_done(&ui.prog);
    if (rc != 0) return cli_error(&err);
    if (a.c.json) quantize_print_json(&a.o, &r);
    else if (!a.c.quiet) quantize_print_text(&a.o, &r);
    quantize_result_free(&r);
    return EXIT_OK;
}
