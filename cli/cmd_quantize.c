/* cmd_quantize.c - `slmc quantize IN OUT TYPE` and `slmc quantize IN --type A,B -o 'x-{type}.gguf'`:
 * llama.cpp's mixes, streamed and parallel, many variants from one read of the source. */
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/fileio.h"
#include "formats/types.h"
#include "quant/fit.h"
#include "quant/gptq.h"
#include "quant/imatrix.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#define MAX_TARGETS 32
#define MAX_PATTERNS 64

static const char *USAGE =
    "Usage: slmc quantize IN OUT TYPE [options]\n"
    "       slmc quantize IN --type TYPE[,TYPE...] -o 'OUT-{type}.gguf' [options]\n"
    "       slmc quantize IN OUT --target-bpw X | --target-size SIZE [options]\n"
    "\n"
    "Quantize a model (Hugging Face folder, GGUF or llama2.c checkpoint) to GGUF with\n"
    "llama.cpp's per-tensor rules for each mix. Several types are written from one read of the\n"
    "source. Rows are streamed in chunks and quantized in parallel: peak memory does not grow\n"
    "with the model, and the output bytes do not depend on the thread count.\n"
    "\n"
    "TYPE: Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q4_K_S Q4_K_M Q5_0 Q5_1 Q5_K_S Q5_K_M Q6_K\n"
    "      Q8_0 F16 BF16 F32 (Q3_K, Q4_K, Q5_K mean Q3_K_M, Q4_K_M, Q5_K_M)\n"
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
    const char *in, *tokenizer, *out_pattern;
    const char *imatrix;          /* --imatrix FILE, or NULL */
    const char *type_names[MAX_TARGETS];
    int n_types;
    plan_override overrides[MAX_PATTERNS];
    int n_overrides;
    const char *include[MAX_PATTERNS], *exclude[MAX_PATTERNS];
    int n_include, n_exclude;
    int output_type, token_embd_type;
    bool pure, leave_output, allow_requantize, dry_run;
    bool gptq;                  /* --method gptq */
    const char *calib;          /* --calib FILE */
    int calib_ctx, calib_chunks;/* -c, --chunks (0: defaults) */
    double damp;                /* --damp */
    int gptq_mode;              /* GPTQ_PARALLEL / _SEQUENTIAL / _FP_TARGET, -1 unset (the default) */
    double ridge;               /* --gptq-ridge */
    double target_bpw;          /* --target-bpw, 0 none */
    uint64_t target_size;       /* --target-size in bytes, 0 none */
} quantize_args;

/* How GPTQ collects its Hessians (quant/gptq.h). Without a flag: the fp target, which measured
 * best on books-22m (docs/gptq-and-fit.md). */
enum { GPTQ_PARALLEL, GPTQ_SEQUENTIAL, GPTQ_FP_TARGET, GPTQ_MODE_DEFAULT = GPTQ_FP_TARGET };

#define FIT_NAME "FIT" /* the type name a fitted plan is reported under */

/* Split "Q2_K,Q4_K_M" into args->type_names (pointers into s, which is modified). */
static int split_types(char *s, quantize_args *a) {
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (a->n_types == MAX_TARGETS) return cli_usage_error("quantize", "at most %d types", MAX_TARGETS);
        a->type_names[a->n_types++] = tok;
    }
    return 0;
}

static int parse_tensor_type(const char *opt, int *out) {
    *out = type_from_name(opt);
    return *out < 0 ? cli_usage_error("quantize", "unknown tensor type '%s'", opt) : 0;
}

/* Replace {type} in pattern with name (malloc'd). */
static char *expand_output(const char *pattern, const char *name) {
    const char *at = strstr(pattern, "{type}");
    size_t n = strlen(pattern) + strlen(name) + 1;
    char *s = malloc(n);
    if (!s) return NULL;
    if (!at) { snprintf(s, n, "%s", pattern); return s; }
    snprintf(s, n, "%.*s%s%s", (int)(at - pattern), pattern, name, at + 6);
    return s;
}

static int parse_args(int argc, char **argv, quantize_args *a) {
    memset(a, 0, sizeof *a);
    a->output_type = a->token_embd_type = -1;
    a->gptq_mode = -1;
    static const struct option opts[] = {
        {"type", required_argument, 0, 'T'}, {"output", required_argument, 0, 'o'},
        {"tensor-type", required_argument, 0, 'X'}, {"output-tensor-type", required_argument, 0, 'O'},
        {"token-embedding-type", required_argument, 0, 'E'}, {"pure", no_argument, 0, 'p'},
        {"leave-output-tensor", no_argument, 0, 'L'}, {"allow-requantize", no_argument, 0, 'R'},
        {"imatrix", required_argument, 0, 'W'}, {"include-weights", required_argument, 0, 'I'}, {"exclude-weights", required_argument, 0, 'x'},
        {"dry-run", no_argument, 0, 'n'}, {"tokenizer", required_argument, 0, 'k'},
        CLI_COMMON_OPTIONS, {"method", required_argument, 0, 'M'}, {"calib", required_argument, 0, 'C'},
        {"ctx", required_argument, 0, 'c'}, {"chunks", required_argument, 0, 'N'},
        {"damp", required_argument, 0, 'D'}, {"target-bpw", required_argument, 0, 'B'},
        {"target-size", required_argument, 0, 'S'}, {"gptq-sequential", no_argument, 0, 'Q'},
        {"gptq-parallel", no_argument, 0, 'P'}, {"gptq-fp-target", no_argument, 0, 'F'},
        {"gptq-ridge", required_argument, 0, 'G'}, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:c:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'T': if (split_types(optarg, a)) return EXIT_USAGE; break;
        case 'o': a->out_pattern = optarg; break;
        case 'X': {
            char *eq = strrchr(optarg, '=');
            if (!eq || eq == optarg) return cli_usage_error("quantize", "--tensor-type takes REGEX=TYPE, not '%s'", optarg);
            if (a->n_overrides == MAX_PATTERNS) return cli_usage_error("quantize", "too many --tensor-type");
            *eq = 0;
            if (parse_tensor_type(eq + 1, &a->overrides[a->n_overrides].type)) return EXIT_USAGE;
            a->overrides[a->n_overrides++].pattern = optarg;
            break;
        }
        case 'O': if (parse_tensor_type(optarg, &a->output_type)) return EXIT_USAGE; break;
        case 'E': if (parse_tensor_type(optarg, &a->token_embd_type)) return EXIT_USAGE; break;
        case 'p': a->pure = true; break;
        case 'L': a->leave_output = true; break;
        case 'R': a->allow_requantize = true; break;
        case 'I':
            if (a->n_include == MAX_PATTERNS) return cli_usage_error("quantize", "too many --include-weights");
            a->include[a->n_include++] = optarg;
            break;
        case 'x':
            if (a->n_exclude == MAX_PATTERNS) return cli_usage_error("quantize", "too many --exclude-weights");
            a->exclude[a->n_exclude++] = optarg;
            break;
        case 'n': a->dry_run = true; break;
        case 'k': a->tokenizer = optarg; break;
        case 'W': a->imatrix = optarg; break;
        case 'M':
            if (strcmp(optarg, "gptq") == 0) a->gptq = true;
            else if (strcmp(optarg, "plain") == 0) a->gptq = false;
            else return cli_usage_error("quantize", "--method takes plain or gptq, not '%s'", optarg);
            break;
        case 'C': a->calib = optarg; break;
        case 'G': rc = cli_opt_float("quantize", "--gptq-ridge", optarg, 0, 1e12, true, &a->ridge); break;
        case 'Q':
        case 'P':
        case 'F': {
            int mode = ch == 'P' ? GPTQ_PARALLEL : ch == 'Q' ? GPTQ_SEQUENTIAL : GPTQ_FP_TARGET;
            if (a->gptq_mode >= 0 && a->gptq_mode != mode)
                return cli_usage_error("quantize", "give one of --gptq-parallel, --gptq-sequential, --gptq-fp-target");
            a->gptq_mode = mode;
            break;
        }
        case 'c': rc = cli_opt_int("quantize", "-c/--ctx", optarg, 2, 1 << 20, &a->calib_ctx); break;
        case 'N': rc = cli_opt_int("quantize", "--chunks", optarg, 1, INT_MAX, &a->calib_chunks); break;
        case 'D': rc = cli_opt_float("quantize", "--damp", optarg, 0, 1e6, true, &a->damp); break;
        case 'B': rc = cli_opt_float("quantize", "--target-bpw", optarg, 0, 32, true, &a->target_bpw); break;
        case 'S': rc = cli_opt_size("quantize", "--target-size", optarg, 1, &a->target_size); break;
        default: rc = cli_common_option("quantize", USAGE, ch, argv, &a->c); break;
        }
        if (rc) return rc;
    }
    int rest = argc - optind;
    if (rest < 1) return cli_usage_error("quantize", "expected IN");
    a->in = argv[optind];
    if (a->gptq && !a->calib) return cli_usage_error("quantize", "--method gptq needs --calib FILE");
    if (!a->gptq && (a->calib || a->calib_ctx || a->calib_chunks || a->damp > 0 || a->gptq_mode >= 0 || a->ridge > 0))
        return cli_usage_error("quantize", "--calib, -c, --chunks, --damp, --gptq-* go with --method gptq");
    if (a->gptq_mode < 0) a->gptq_mode = GPTQ_MODE_DEFAULT;
    if (a->ridge > 0 && a->gptq_mode != GPTQ_FP_TARGET)
        return cli_usage_error("quantize", "--gptq-ridge goes with the fp target (the default, --gptq-fp-target)");
    if (a->target_bpw > 0 && a->target_size > 0) return cli_usage_error("quantize", "give --target-bpw or --target-size, not both");
    if (a->target_bpw > 0 || a->target_size > 0) { /* IN OUT, IN -o OUT, or IN --dry-run */
        if (a->n_types) return cli_usage_error("quantize", "a size target chooses the types: give no TYPE or --type");
        if (rest == 3) return cli_usage_error("quantize", "a size target chooses the types: give IN OUT, no TYPE");
        if (rest == 2 && !a->out_pattern) a->out_pattern = argv[optind + 1];
        else if (rest != 1) return cli_usage_error("quantize", "expected IN OUT with a size target");
        if (!a->out_pattern && !a->dry_run) return cli_usage_error("quantize", "expected IN OUT (or --dry-run) with a size target");
        a->type_names[a->n_types++] = FIT_NAME;
    } else if (a->n_types == 0) { /* IN OUT TYPE */
        if (rest != 3 || a->out_pattern) return cli_usage_error("quantize", "expected IN OUT TYPE, or IN --type LIST -o PATTERN");
        a->out_pattern = argv[optind + 1];
        a->type_names[a->n_types++] = argv[optind + 2];
    } else {
        if (rest != 1) return cli_usage_error("quantize", "with --type give only IN (and -o PATTERN)");
        if (!a->out_pattern && !a->dry_run) return cli_usage_error("quantize", "--type needs -o PATTERN");
        if (a->n_types > 1 && a->out_pattern && !strstr(a->out_pattern, "{type}"))
            return cli_usage_error("quantize", "-o needs a {type} placeholder for several types");
    }
    if ((a->n_include || a->n_exclude) && !a->imatrix)
        return cli_usage_error("quantize", "--include-weights / --exclude-weights choose which tensors use the importance "
                                           "matrix, as in llama-quantize: give --imatrix");
    if (a->n_include && a->n_exclude)
        return cli_usage_error("quantize", "give --include-weights or --exclude-weights, not both (as llama-quantize)");
    for (int i = 0; i < a->n_types; i++)
        if (strcmp(a->type_names[i], FIT_NAME) != 0 && quant_mix_from_name(a->type_names[i]) < 0)
            return cli_usage_error("quantize", "unknown type '%s'", a->type_names[i]);
    return 0;
}

static void print_plan(const model *m, const char *mix, const int *types) {
    printf("plan for %s:\n  %-36s %-20s %-6s -> %-6s %12s\n", mix, "tensor", "shape", "from", "to", "bytes");
    uint64_t *order = model_gguf_order(m);
    for (uint64_t k = 0; k < m->n_tensors; k++) {
        uint64_t i = order ? order[k] : k;
        const model_tensor *t = &m->tensors[i];
        char shape[64];
        int off = 0;
        for (int d = 0; d < t->n_dims; d++) off += snprintf(shape + off, sizeof shape - (size_t)off, "%s%" PRId64, d ? "x" : "", t->ne[d]);
        printf("  %-36s %-20s %-6s -> %-6s %12" PRIu64 "\n", t->name, shape, type_name(t->type), type_name(types[i]),
               type_nbytes(types[i], t->ne[0] * model_tensor_rows(t)));
    }
    free(order);
}

/* Count tensors and bytes per type for a plan (dry-run summary). */
static void plan_stats(const model *m, const int *types, quant_stats *s) {
    memset(s, 0, sizeof *s);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        uint64_t n = (uint64_t)(t->ne[0] * model_tensor_rows(t)), b = type_nbytes(types[i], (int64_t)n);
        s->n_by_type[types[i]]++;
        s->bytes_by_type[types[i]] += b;
        s->bytes += b;
        s->params += n;
    }
}

static void print_table(const char *mix, const char *path, const quant_stats *s) {
    char hb[32];
    printf("%-8s %-40s %10s %6.2f bpw ", mix, path ? path : "(dry run)", cli_human_bytes(s->bytes, hb, sizeof hb),
           s->params ? 8.0 * (double)s->bytes / (double)s->params : 0.0);
    bool first = true;
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (s->n_by_type[t]) { printf("%s%s:%" PRIu64, first ? "" : " ", type_name(t), s->n_by_type[t]); first = false; }
    printf("\n");
}

static json_t *stats_json(const char *mix, const char *path, const quant_stats *s) {
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(mix));
    json_object_set_new(o, "output", path ? json_string(path) : json_null());
    json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
    json_object_set_new(o, "params", json_integer((json_int_t)s->params));
    json_object_set_new(o, "bpw", json_real(s->params ? 8.0 * (double)s->bytes / (double)s->params : 0.0));
    json_t *per = json_object();
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (s->n_by_type[t]) json_object_set_new(per, type_name(t), json_integer((json_int_t)s->n_by_type[t]));
    json_object_set_new(o, "tensors_per_type", per);
    json_object_set_new(o, "seconds", json_real(s->seconds));
    return o;
}

/* --target-bpw / --target-size: estimate every candidate's error, choose the types for the budget
 * and fill types (which holds the base plan on entry). Prints the chosen plan unless quiet or
 * --json; *fit_json receives the same as JSON when --json. */
static int fit_to_target(const model *m, const quantize_args *a, int *types, const float *const *importance,
                         json_t **fit_json, slmc_err *err) {
    fit_table tab;
    if (fit_table_build(&tab, m, types, importance, 0, err) != 0) return -1;
    uint64_t budget = a->target_size ? a->target_size : (uint64_t)(a->target_bpw * (double)tab.params / 8.0);
    int *choice = malloc((tab.n ? tab.n : 1) * sizeof *choice);
    fit_result res;
    int rc = -1;
    if (!choice) { slmc_fail(err, a->in, "out of memory"); goto done; }
    if (fit_allocate(&tab, budget, choice, &res, err) != 0) { slmc_fail_prefix(err, a->in); goto done; }
    fit_apply(&tab, choice, types);
    char hb[32], hr[32];
    if (a->c.json) {
        json_t *o = json_object(), *per = json_object();
        json_object_set_new(o, "budget_bytes", json_integer((json_int_t)budget));
        json_object_set_new(o, "bytes", json_integer((json_int_t)res.bytes));
        json_object_set_new(o, "bpw", json_real(res.bpw));
        json_object_set_new(o, "est_error", json_real(res.err));
        for (size_t k = 0; k < tab.n; k++) {
            const fit_tensor *ft = &tab.t[k];
            json_t *t = json_object();
            json_object_set_new(t, "type", json_string(type_name(ft->types[choice[k]])));
            json_object_set_new(t, "bytes", json_integer((json_int_t)ft->bytes[choice[k]]));
            json_object_set_new(t, "est_error", json_real(ft->err[choice[k]]));
            json_object_set_new(per, m->tensors[ft->ti].name, t);
        }
        json_object_set_new(o, "tensors", per);
        *fit_json = o;
    } else if (!a->c.quiet) {
        printf("fit to %s of tensor data (%.4f bpw over %" PRIu64 " parameters):\n", cli_human_bytes(budget, hb, sizeof hb),
               8.0 * (double)budget / (double)tab.params, tab.params);
        printf("  %-36s %-6s %12s %12s\n", "tensor", "type", "bytes", "est. error");
        for (size_t k = 0; k < tab.n; k++) {
            const fit_tensor *ft = &tab.t[k];
            printf("  %-36s %-6s %12" PRIu64 " %12.4g\n", m->tensors[ft->ti].name, type_name(ft->types[choice[k]]),
                   ft->bytes[choice[k]], ft->err[choice[k]]);
        }
        printf("  fixed (not chosen) tensors: %" PRIu64 " bytes\n", tab.fixed_bytes);
        printf("  achieved: %s (%" PRIu64 " bytes, %.2f%% of the budget), %.4f bpw, est. error %.6g\n",
               cli_human_bytes(res.bytes, hr, sizeof hr), res.bytes, 100.0 * (double)res.bytes / (double)budget, res.bpw, res.err);
        if ((double)res.bytes < 0.99 * (double)budget)
            printf("  note: the largest types give only %" PRIu64 " bytes; the budget cannot be filled\n", fit_max_bytes(&tab));
    }
    rc = 0;
done:
    free(choice);
    fit_table_free(&tab);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    quantize_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == CLI_HELP) return EXIT_OK;
    if (rc) return rc;
    cli_apply_threads(&a.c);
    slmc_err err = {{0}};
    model m;
    if (cli_open_model(&m, a.in, a.tokenizer, &err) != 0) return cli_error(&err);

    int n = a.n_types;
    int *types[MAX_TARGETS] = {0};
    char *paths[MAX_TARGETS] = {0};
    quant_target targets[MAX_TARGETS];
    quant_stats stats[MAX_TARGETS];
    const char *labels[MAX_TARGETS];   /* the mix name, or FIT for a size target */
    json_t *fit_json = NULL;           /* --json: the fitted plan */
    gptq_calib *calib = NULL;
    imatrix im;
    bool have_im = false;
    const float **importance = NULL; /* [n_tensors] from --imatrix, NULL entries for unused tensors */
    rc = EXIT_ERROR;
    if (a.imatrix) {
        uint64_t n_found = 0;
        if (imatrix_load(&im, a.imatrix, &err) != 0) { cli_error(&err); goto done; }
        have_im = true;
        if (imatrix_importance_table(&im, &m, &importance, &n_found, &err) != 0) { cli_error(&err); goto done; }
        /* --include-weights / --exclude-weights: exact tensor names, as llama-quantize takes them */
        for (uint64_t i = 0; i < m.n_tensors; i++) {
            bool listed = false;
            for (int k = 0; k < a.n_include; k++) listed |= strcmp(m.tensors[i].name, a.include[k]) == 0;
            for (int k = 0; k < a.n_exclude; k++) listed |= strcmp(m.tensors[i].name, a.exclude[k]) == 0;
            if ((a.n_include && !listed) || (a.n_exclude && listed)) importance[i] = NULL;
        }
        cli_note(&a.c, "importance matrix %s: entries for %llu tensors", a.imatrix, (unsigned long long)n_found);
    }
    for (int g = 0; g < n; g++) {
        bool fit = strcmp(a.type_names[g], FIT_NAME) == 0;
        plan_opts po;
        /* a size target starts from the Q8_0 plan: it says which tensors are quantized at all */
        plan_opts_init(&po, fit ? MIX_Q8_0 : quant_mix_from_name(a.type_names[g]));
        po.output_type = a.output_type;
        po.token_embd_type = a.token_embd_type;
        po.pure = a.pure;
        po.leave_output = a.leave_output;
        po.overrides = a.overrides;
        po.n_overrides = a.n_overrides;
        po.has_imatrix = importance != NULL;
        types[g] = malloc((m.n_tensors ? m.n_tensors : 1) * sizeof *types[g]);
        if (!types[g]) { slmc_fail(&err, a.in, "out of memory"); cli_error(&err); goto done; }
        if (quant_plan(&m, &po, types[g], &err) != 0) { cli_error(&err); goto done; }
        if (fit && fit_to_target(&m, &a, types[g], importance, &fit_json, &err) != 0) { cli_error(&err); goto done; }
        const char *mix = fit ? FIT_NAME : quant_mix_name(po.mix);
        labels[g] = mix;
        if (a.out_pattern) {
            paths[g] = expand_output(a.out_pattern, mix);
            if (!paths[g]) { slmc_fail(&err, a.in, "out of memory"); cli_error(&err); goto done; }
            if (same_file(a.in, paths[g])) {
                slmc_fail(&err, paths[g], "output path is the input; choose another output");
                cli_error(&err);
                goto done;
            }
            for (int h = 0; h < g; h++)
                if (strcmp(paths[h], paths[g]) == 0) {
                    slmc_fail(&err, paths[g], "two types write the same output path");
                    cli_error(&err);
                    goto done;
                }
        }
        targets[g].path = paths[g];
        targets[g].types = types[g];
        targets[g].file_type = fit ? fit_file_type(&m, types[g]) : po.mix;
    }
    for (uint64_t i = 0; i < m.n_tensors && a.allow_requantize; i++)
        if (!type_is_float(m.tensors[i].type)) {
            cli_note(&a.c, "warning: %s is already quantized; requantizing compounds the error", a.in);
            break;
        }

    if (a.dry_run) {
        json_t *arr = a.c.json ? json_array() : NULL;
        for (int g = 0; g < n; g++) {
            const char *mix = labels[g];
            plan_stats(&m, types[g], &stats[g]);
            if (arr) {
                json_t *o = stats_json(mix, paths[g], &stats[g]);
                if (fit_json && strcmp(mix, FIT_NAME) == 0) json_object_set(o, "fit", fit_json);
                json_t *plan = json_object();
                for (uint64_t i = 0; i < m.n_tensors; i++)
                    json_object_set_new(plan, m.tensors[i].name, json_string(type_name(types[g][i])));
                json_object_set_new(o, "plan", plan);
                json_array_append_new(arr, o);
            } else {
                print_plan(&m, mix, types[g]);
                print_table(mix, NULL, &stats[g]);
            }
        }
        if (arr) {
            char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (s) puts(s);
            free(s);
            json_decref(arr);
        }
        rc = EXIT_OK;
        goto done;
    }

    quantize_opts qo = {.allow_requantize = a.allow_requantize, .importance = importance};
    quant_tensor_hook gptq_hook;
    if (a.gptq) {
        gptq_calib_opts co = {.text = a.calib, .n_ctx = a.calib_ctx, .chunks = a.calib_chunks ? a.calib_chunks : 50,
                              .damp = a.damp, .sequential = a.gptq_mode != GPTQ_PARALLEL,
                              .fp_target = a.gptq_mode == GPTQ_FP_TARGET, .ridge = a.ridge};
        if (!co.n_ctx) co.n_ctx = m.cfg.n_ctx_train > 0 && m.cfg.n_ctx_train < 512 ? (int)m.cfg.n_ctx_train : 512;
        if (gptq_calib_open(&calib, &m, &co, &err) != 0) { cli_error(&err); goto done; }
        gptq_hook = gptq_calib_hook(calib);
        qo.tensor_hook = &gptq_hook;
    }
    cli_progress prog;
    cli_progress_init(&prog, &a.c, "quantize");
    slmc_progress hook = cli_progress_hook(&prog);
    int qrc;
    if (calib && a.gptq_mode != GPTQ_PARALLEL) { /* the Hessians depend on the output type: one run per type */
        qrc = 0;
        for (int g = 0; g < n && qrc == 0; g++) {
            if (g) gptq_calib_reset(calib);
            qrc = quantize_model(&m, &targets[g], 1, &qo, &stats[g], &hook, &err);
        }
    } else {
        qrc = quantize_model(&m, targets, n, &qo, stats, &hook, &err);
    }
    cli_progress_done(&prog);
    if (qrc != 0) { cli_error(&err); goto done; }
    if (a.c.json) {
        json_t *arr = json_array();
        for (int g = 0; g < n; g++) {
            json_t *o = stats_json(labels[g], paths[g], &stats[g]);
            if (fit_json && strcmp(labels[g], FIT_NAME) == 0) json_object_set(o, "fit", fit_json);
            if (calib) {
                json_object_set_new(o, "method", json_string("gptq"));
                json_object_set_new(o, "gptq_mode", json_string(a.gptq_mode == GPTQ_PARALLEL     ? "parallel"
                                                                : a.gptq_mode == GPTQ_SEQUENTIAL ? "sequential"
                                                                                                 : "fp-target"));
            }
            json_array_append_new(arr, o);
        }
        char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(arr);
    } else if (!a.c.quiet) {
        for (int g = 0; g < n; g++) print_table(labels[g], paths[g], &stats[g]);
        double seconds = n ? stats[0].seconds : 0; /* one run for all targets ... */
        if (calib && a.gptq_mode != GPTQ_PARALLEL) /* ... or one run per target */
            for (int g = 1; g < n; g++) seconds += stats[g].seconds;
        if (n) printf("%.2fs\n", seconds);
        if (calib) {
            gptq_calib_info gi;
            gptq_calib_get_info(calib, &gi);
            printf("gptq: %d chunks of %d tokens, %d forward passes; %.2fs collecting Hessians, %.2fs quantizing\n",
                   gi.chunks, gi.n_ctx, gi.passes, gi.collect_seconds, gi.quant_seconds);
        }
    }
    rc = EXIT_OK;
done:
    for (int g = 0; g < n; g++) { free(types[g]); free(paths[g]); }
    gptq_calib_close(calib);
    json_decref(fit_json);
    free(importance);
    if (have_im) imatrix_free(&im);
    model_close(&m);
    return rc;
}
