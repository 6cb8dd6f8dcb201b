/* cmd_convert.c - `slmc convert IN OUT [--outtype f32|f16|bf16]`: between Hugging Face
 * safetensors folders, GGUF and llama2.c (input only), streaming tensor by tensor. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/fileio.h"
#include "formats/hf.h"
#include "formats/types.h"

static const char *USAGE =
    "Usage: slmc convert IN OUT [--outtype f32|f16|bf16] [options]\n"
    "\n"
    "Convert a model between formats, streaming tensor by tensor (peak memory stays small\n"
    "whatever the model size). IN is a Hugging Face folder (or .safetensors / index.json), a\n"
    "GGUF file, or a llama2.c checkpoint (with --tokenizer). OUT ending in .gguf is written as\n"
    "GGUF v3; any other OUT is written as a Hugging Face folder (config.json, safetensors,\n"
    "tokenizer files). The output appears only when complete; OUT may not be an input.\n"
    "\n"
    "Options:\n"
    "  --outtype T        f32, f16 or bf16 for the matrices (default: keep the input's types;\n"
    "                     GGUF keeps 1-D tensors such as norms in F32, as llama.cpp does)\n"
    "  --to gguf|hf       output format, overriding the .gguf rule\n"
    "  --tokenizer FILE   llama2.c tokenizer.bin (llama2.c input only)\n"
    "  --shard-size SIZE  HF output: start a new safetensors shard past SIZE (default 5GB)\n"
    "  --json             print a JSON summary on stdout\n"
    "  -t, --threads N    threads\n"
    "  -q, --quiet        no progress or notes\n"
    "  -h, --help         this help\n";

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Refuse an output that is (or is inside, or contains) the input. */
static bool output_clashes(const char *in, const char *out) {
    if (same_file(in, out)) return true;
    char rin[PATH_MAX], rout_parent[PATH_MAX];
    if (!realpath(in, rin)) return false;
    /* the output may not exist yet: resolve its parent folder */
    char *copy = strdup(out);
    if (!copy) return false;
    char *slash = strrchr(copy, '/');
    const char *parent = ".";
    const char *base = copy;
    if (slash) { *slash = 0; parent = *copy ? copy : "/"; base = slash + 1; }
    bool clash = false;
    if (realpath(parent, rout_parent)) {
        char full[PATH_MAX * 2];
        snprintf(full, sizeof full, "%s/%s", rout_parent, base);
        size_t n = strlen(rin);
        /* out == in, or out inside in (writing into an input folder) */
        if (strcmp(full, rin) == 0 || (strncmp(full, rin, n) == 0 && full[n] == '/' && is_dir(rin))) clash = true;
    }
    free(copy);
    return clash;
}

int cmd_convert(int argc, char **argv) {
    cli_common c = {0};
    const char *tokenizer = NULL, *to = NULL;
    int outtype = -1;
    uint64_t shard_size = HF_DEFAULT_SHARD_SIZE;
    static const struct option opts[] = {
        {"outtype", required_argument, 0, 'o'}, {"to", required_argument, 0, 'T'},
        {"tokenizer", required_argument, 0, 'k'}, {"shard-size", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "t:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o':
            outtype = cli_parse_float_type(optarg);
            if (outtype < 0) return cli_usage_error("convert", "--outtype must be f32, f16 or bf16, not '%s'", optarg);
            break;
        case 'T':
            if (strcmp(optarg, "gguf") != 0 && strcmp(optarg, "hf") != 0)
                return cli_usage_error("convert", "--to must be gguf or hf, not '%s'", optarg);
            to = optarg;
            break;
        case 'k': tokenizer = optarg; break;
        case 's':
            if (!cli_parse_size(optarg, &shard_size) || shard_size == 0)
                return cli_usage_error("convert", "--shard-size: cannot read '%s' as a size", optarg);
            break;
        case 'j': c.json = true; break;
        case 't': c.threads = atoi(optarg); break;
        case 'q': c.quiet = true; break;
        case 'h': fputs(USAGE, stdout); return EXIT_OK;
        default: return cli_usage_error("convert", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2) return cli_usage_error("convert", "expected IN and OUT");
    const char *in = argv[optind], *out = argv[optind + 1];
    bool to_gguf = to ? strcmp(to, "gguf") == 0 : ends_with(out, ".gguf");
    cli_apply_threads(&c);
    slmc_err err = {{0}};
    if (output_clashes(in, out) || (tokenizer && output_clashes(tokenizer, out))) {
        slmc_fail(&err, out, "output path is an input; choose another output");
        return cli_error(&err);
    }
    model m;
    if (cli_open_model(&m, in, tokenizer, &err) != 0) return cli_error(&err);
    /* the input may be a folder of shards: refuse writing over any of them */
    cli_progress prog;
    cli_progress_init(&prog, &c, "convert");
    slmc_progress hook = cli_progress_hook(&prog);
    double t0 = cli_now();
    int rc = to_gguf ? model_write_gguf(&m, out, outtype, &hook, &err)
                     : hf_write(&m, out, outtype, shard_size, &hook, &err);
    cli_progress_done(&prog);
    if (rc != 0) {
        model_close(&m);
        return cli_error(&err);
    }
    double secs = cli_now() - t0;
    if (c.json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "format", json_string(to_gguf ? "gguf" : "hf"));
        json_object_set_new(o, "outtype", outtype >= 0 ? json_string(type_name(outtype)) : json_null());
        json_object_set_new(o, "n_tensors", json_integer((json_int_t)m.n_tensors));
        json_object_set_new(o, "n_params", json_integer((json_int_t)model_param_count(&m)));
        json_object_set_new(o, "seconds", json_real(secs));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        cli_note(&c, "wrote %s (%s, %llu tensors) in %.2fs", out, to_gguf ? "GGUF" : "Hugging Face folder",
                 (unsigned long long)m.n_tensors, secs);
    }
    model_close(&m);
    return EXIT_OK;
}
