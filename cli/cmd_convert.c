/* cmd_convert.c - `slmc convert IN OUT [--outtype f32|f16|bf16]`: between Hugging Face
 * safetensors folders, GGUF and llama2.c (input only), streaming tensor by tensor. A quantized
 * GGUF is dequantized when written as a Hugging Face folder or with --outtype (the model view
 * decodes it with the codec). */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/fileio.h"
#include "formats/hf.h"
#include "codec/types.h"

static const char *USAGE =
    "Usage: slmc convert IN OUT [--outtype f32|f16|bf16] [options]\n"
    "\n"
    "Convert a model between formats, streaming tensor by tensor (peak memory stays small\n"
    "whatever the model size). IN is a Hugging Face folder (or .safetensors / index.json), a\n"
    "GGUF file, or a llama2.c checkpoint (with --tokenizer). OUT ending in .gguf is written as\n"
    "GGUF v3; any other OUT is written as a Hugging Face folder (config.json, safetensors,\n"
    "tokenizer files). The output appears only when complete; OUT may not be an input.\n"
    "\n"
    "A quantized GGUF (Q4_K_M, ...) is dequantized: with --outtype every quantized tensor\n"
    "becomes T (as llama-quantize --allow-requantize IN OUT F32 does), and a Hugging Face\n"
    "folder always holds the dequantized values (F32 unless --outtype says otherwise). Without\n"
    "--outtype, GGUF -> GGUF copies quantized tensors as they are.\n"
    "\n"
    "Options:\n"
    "  --outtype T        f32, f16 or bf16 for the matrices, quantized ones included (default:\n"
    "                     keep the input's types; GGUF keeps 1-D tensors such as norms in F32,\n"
    "                     as llama.cpp does; HF from a quantized GGUF is F32)\n"
    "  --to gguf|hf       output format, overriding the .gguf rule\n"
    "  --tokenizer FILE   llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
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

/* The quantized types among m's tensors in type id order ("Q4_K, Q6_K") into buf, and as
 * names appended to names (a JSON array); false when there are none. */
static bool quantized_types(const model *m, char *buf, size_t size, json_t *names) {
    bool present[GGML_TYPE_COUNT] = {false};
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const type_info *info = type_get(m->tensors[i].type);
        if (info && info->quantized) present[m->tensors[i].type] = true;
    }
    size_t len = 0;
    buf[0] = 0;
    for (int ty = 0; ty < GGML_TYPE_COUNT; ty++) {
        if (!present[ty]) continue;
        if (len < size) len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "", type_name(ty));
        json_array_append_new(names, json_string(type_name(ty)));
    }
    return buf[0] != 0;
}

int cmd_convert(int argc, char **argv) {
    cli_common c = {0};
    const char *tokenizer = NULL, *to = NULL;
    int outtype = -1;
    uint64_t shard_size = HF_DEFAULT_SHARD_SIZE;
    static const struct option opts[] = {
        {"outtype", required_argument, 0, 'o'}, {"to", required_argument, 0, 'T'},
        {"tokenizer", required_argument, 0, 'k'}, {"shard-size", required_argument, 0, 's'},
        CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
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
            if ((rc = cli_opt_size("convert", "--shard-size", optarg, 1, &shard_size))) return rc;
            break;
        default:
            if ((rc = cli_common_option("convert", USAGE, ch, argv, &c))) return rc == CLI_HELP ? EXIT_OK : rc;
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
    rc = to_gguf ? model_write_gguf(&m, out, outtype, &hook, &err)
                     : hf_write(&m, out, outtype, shard_size, &hook, &err);
    cli_progress_done(&prog);
    if (rc != 0) {
        model_close(&m);
        return cli_error(&err);
    }
    double secs = cli_now() - t0;
    /* Quantized tensors were dequantized for a Hugging Face folder, and for GGUF with
     * --outtype (without it they were copied as they are). Say so: the values are the
     * quantized model's, not the original checkpoint's. */
    char qtypes[256];
    json_t *qnames = json_array();
    bool dequantized = quantized_types(&m, qtypes, sizeof qtypes, qnames) && (!to_gguf || outtype >= 0);
    if (dequantized)
        cli_note(&c, "note: %s has quantized tensors (%s); the %s weights are their dequantized values", in, qtypes,
                 to_gguf ? type_name(outtype) : "Hugging Face");
    if (c.json) {
        json_t *o = json_object();
        json_object_set_new(o, "input", json_string(in));
        json_object_set_new(o, "output", json_string(out));
        json_object_set_new(o, "format", json_string(to_gguf ? "gguf" : "hf"));
        json_object_set_new(o, "outtype", outtype >= 0 ? json_string(type_name(outtype)) : json_null());
        json_object_set_new(o, "n_tensors", json_integer((json_int_t)m.n_tensors));
        json_object_set_new(o, "n_params", json_integer((json_int_t)model_param_count(&m)));
        json_object_set_new(o, "dequantized", json_boolean(dequantized));
        json_object_set_new(o, "dequantized_types", dequantized ? json_incref(qnames) : json_array());
        json_object_set_new(o, "seconds", json_real(secs));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        cli_note(&c, "wrote %s (%s, %llu tensors) in %.2fs", out, to_gguf ? "GGUF" : "Hugging Face folder",
                 (unsigned long long)m.n_tensors, secs);
    }
    json_decref(qnames);
    model_close(&m);
    return EXIT_OK;
}
