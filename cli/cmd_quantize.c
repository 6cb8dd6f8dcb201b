/* cmd_quantize.c - `slmc quantize IN OUT TYPE` and `slmc quantize IN --type A,B -o 'x-{type}.gguf'`:
 * llama.cpp's mixes, streamed and parallel, many variants from one read of the source. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/fileio.h"
#include "formats/types.h"
#include "quant/plan.h"
#include "quant/quantize.h"

#define MAX_TARGETS 32
#define MAX_PATTERNS 64

static const char *USAGE =
    "Usage: slmc quantize IN OUT TYPE [options]\n"
    "       slmc quantize IN --type TYPE[,TYPE...] -o 'OUT-{type}.gguf' [options]\n"
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
    "  --include-weights REGEX      as llama-quantize: use the importance matrix only for\n"
    "  --exclude-weights REGEX      matching / not for matching tensors (needs --imatrix)\n"
    "  --dry-run                    print the per-tensor plan and final sizes; write nothing\n"
    "  --tokenizer FILE             llama2.c tokenizer.bin (llama2.c input only)\n"
    "  --json                       print the summary (or plan) as JSON on stdout\n"
    "  -t, --threads N              threads\n"
    "  -q, --quiet                  no progress or notes\n"
    "  -h, --help                   this help\n";

typedef struct quantize_args {
    cli_common c;
    const char *in, *tokenizer, *out_pattern;
    const char *type_names[MAX_TARGETS];
    int n_types;
    plan_override overrides[MAX_PATTERNS];
    int n_overrides;
    const char *include[MAX_PATTERNS], *exclude[MAX_PATTERNS];
    int n_include, n_exclude;
    int output_type, token_embd_type;
    bool pure, leave_output, allow_requantize, dry_run;
} quantize_args;

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
    static const struct option opts[] = {
        {"type", required_argument, 0, 'T'}, {"output", required_argument, 0, 'o'},
        {"tensor-type", required_argument, 0, 'X'}, {"output-tensor-type", required_argument, 0, 'O'},
        {"token-embedding-type", required_argument, 0, 'E'}, {"pure", no_argument, 0, 'p'},
        {"leave-output-tensor", no_argument, 0, 'L'}, {"allow-requantize", no_argument, 0, 'R'},
        {"include-weights", required_argument, 0, 'I'}, {"exclude-weights", required_argument, 0, 'x'},
        {"dry-run", no_argument, 0, 'n'}, {"tokenizer", required_argument, 0, 'k'},
        {"json", no_argument, 0, 'j'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:t:qh", opts, NULL)) != -1) {
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
        case 'j': a->c.json = true; break;
        case 't': a->c.threads = atoi(optarg); break;
        case 'q': a->c.quiet = true; break;
        case 'h': fputs(USAGE, stdout); exit(EXIT_OK);
        default: return cli_usage_error("quantize", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    int rest = argc - optind;
    if (rest < 1) return cli_usage_error("quantize", "expected IN");
    a->in = argv[optind];
    if (a->n_types == 0) { /* IN OUT TYPE */
        if (rest != 3 || a->out_pattern) return cli_usage_error("quantize", "expected IN OUT TYPE, or IN --type LIST -o PATTERN");
        a->out_pattern = argv[optind + 1];
        a->type_names[a->n_types++] = argv[optind + 2];
    } else {
        if (rest != 1) return cli_usage_error("quantize", "with --type give only IN (and -o PATTERN)");
        if (!a->out_pattern && !a->dry_run) return cli_usage_error("quantize", "--type needs -o PATTERN");
        if (a->n_types > 1 && a->out_pattern && !strstr(a->out_pattern, "{type}"))
            return cli_usage_error("quantize", "-o needs a {type} placeholder for several types");
    }
    if (a->n_include || a->n_exclude)
        return cli_usage_error("quantize", "--include-weights / --exclude-weights choose which tensors use the importance "
                                           "matrix, as in llama-quantize; this build has no --imatrix yet");
    for (int i = 0; i < a->n_types; i++)
        if (quant_mix_from_name(a->type_names[i]) < 0)
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

int cmd_quantize(int argc, char **argv) {
    quantize_args a;
    int rc = parse_args(argc, argv, &a);
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
    rc = EXIT_ERROR;
    for (int g = 0; g < n; g++) {
        plan_opts po;
        plan_opts_init(&po, quant_mix_from_name(a.type_names[g]));
        po.output_type = a.output_type;
        po.token_embd_type = a.token_embd_type;
        po.pure = a.pure;
        po.leave_output = a.leave_output;
        po.overrides = a.overrides;
        po.n_overrides = a.n_overrides;
        types[g] = malloc((m.n_tensors ? m.n_tensors : 1) * sizeof *types[g]);
        if (!types[g]) { slmc_fail(&err, a.in, "out of memory"); cli_error(&err); goto done; }
        if (quant_plan(&m, &po, types[g], &err) != 0) { cli_error(&err); goto done; }
        const char *mix = quant_mix_name(po.mix);
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
        targets[g].file_type = po.mix;
    }
    for (uint64_t i = 0; i < m.n_tensors && a.allow_requantize; i++)
        if (!type_is_float(m.tensors[i].type)) {
            cli_note(&a.c, "warning: %s is already quantized; requantizing compounds the error", a.in);
            break;
        }

    if (a.dry_run) {
        json_t *arr = a.c.json ? json_array() : NULL;
        for (int g = 0; g < n; g++) {
            const char *mix = quant_mix_name(targets[g].file_type);
            plan_stats(&m, types[g], &stats[g]);
            if (arr) {
                json_t *o = stats_json(mix, paths[g], &stats[g]);
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

    quantize_opts qo = {.allow_requantize = a.allow_requantize};
    cli_progress prog;
    cli_progress_init(&prog, &a.c, "quantize");
    slmc_progress hook = cli_progress_hook(&prog);
    int qrc = quantize_model(&m, targets, n, &qo, stats, &hook, &err);
    cli_progress_done(&prog);
    if (qrc != 0) { cli_error(&err); goto done; }
    if (a.c.json) {
        json_t *arr = json_array();
        for (int g = 0; g < n; g++) json_array_append_new(arr, stats_json(quant_mix_name(targets[g].file_type), paths[g], &stats[g]));
        char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(arr);
    } else if (!a.c.quiet) {
        for (int g = 0; g < n; g++) print_table(quant_mix_name(targets[g].file_type), paths[g], &stats[g]);
        if (n) printf("%.2fs\n", stats[0].seconds);
    }
    rc = EXIT_OK;
done:
    for (int g = 0; g < n; g++) { free(types[g]); free(paths[g]); }
    model_close(&m);
    return rc;
}
