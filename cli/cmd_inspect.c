/* cmd_inspect.c - `slmc inspect FILE|DIR [--json]`: architecture, tokenizer, tensors.
 * Reads headers only (the tensor data stays unmapped-in), so it is instant on any size. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/meta.h"
#include "pipeline/sha256.h"
#include "codec/types.h"

static const char *USAGE =
    "Usage: slmc inspect MODEL [--json] [--tokenizer FILE] [--no-tensors] [--hash]\n"
    "\n"
    "Show a model's architecture and hyperparameters, tokenizer summary, tensor table (name,\n"
    "type, shape, bytes), parameter count and bits per weight. MODEL is a GGUF file, a Hugging\n"
    "Face folder or .safetensors file, or a llama2.c checkpoint (with --tokenizer).\n"
    "\n"
    "Options:\n"
    "  --json            print one JSON object on stdout\n"
    "  --tokenizer FILE  llama2.c tokenizer.bin or tokenizer.model (llama2.c input)\n"
    "  --no-tensors      leave out the tensor table\n"
    "  --hash            add the SHA-256 of each tensor's bytes as stored (reads the data), to\n"
    "                    compare two files tensor for tensor whatever their metadata\n"
    "  -t, --threads N   accepted as by every command (inspect reads headers only)\n"
    "  -q, --quiet       no notes on stderr\n"
    "  -h, --help        this help\n";

static const char *format_name(model_format f) {
    switch (f) {
    case MODEL_GGUF: return "gguf";
    case MODEL_HF: return "safetensors";
    case MODEL_LLAMA2C: return "llama2c";
    }
    return "?";
}

/* Total bytes of the tensors as stored. */
static uint64_t model_bytes(const model *m) {
    uint64_t n = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) n += m->tensors[i].nbytes;
    return n;
}

static void shape_str(const model_tensor *t, char *buf, size_t size) {
    int off = 0;
    for (int d = 0; d < t->n_dims; d++)
        off += snprintf(buf + off, size - (size_t)off, "%s%" PRId64, d ? " x " : "", t->ne[d]);
}

/* A metadata value as JSON (arrays as {type, n} plus the first few elements). */
static json_t *kv_json(const meta_kv *kv) {
    switch (kv->type) {
    case GGUF_STR: return json_stringn(kv->v.str.s, kv->v.str.len);
    case GGUF_BOOL: return json_boolean(kv->v.raw[0]);
    case GGUF_F32:
    case GGUF_F64: return json_real(meta_kv_f64(kv));
    case GGUF_ARR: {
        json_t *o = json_object();
        json_object_set_new(o, "array", json_string(gguf_vtype_name(kv->elem)));
        json_object_set_new(o, "n", json_integer((json_int_t)kv->n));
        return o;
    }
    default: return json_integer(meta_kv_i64(kv));
    }
}

static void kv_print(const meta_kv *kv) {
    printf("  %-44s ", kv->key);
    switch (kv->type) {
    case GGUF_STR:
        if (kv->v.str.len > 60) printf("\"%.57s...\" (%" PRIu64 " bytes)\n", kv->v.str.s, kv->v.str.len);
        else printf("\"%s\"\n", kv->v.str.s);
        break;
    case GGUF_BOOL: printf("%s\n", kv->v.raw[0] ? "true" : "false"); break;
    case GGUF_F32:
    case GGUF_F64: printf("%g\n", meta_kv_f64(kv)); break;
    case GGUF_ARR: printf("[%s x %" PRIu64 "]\n", gguf_vtype_name(kv->elem), kv->n); break;
    default: printf("%" PRId64 "\n", meta_kv_i64(kv)); break;
    }
}

/* The SHA-256 of tensor t's bytes as stored, as hex; the pages are released afterwards. */
static void tensor_hash(const model *m, const model_tensor *t, char hex[65]) {
    sha256_buf_hex(t->data, (size_t)t->nbytes, hex);
    model_release_source(m, t);
}

static json_t *inspect_json(const model *m, bool tensors, bool hash) {
    const model_config *c = &m->cfg;
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(m->path));
    json_object_set_new(o, "format", json_string(format_name(m->format)));
    json_t *a = json_object();
    json_object_set_new(a, "architecture", json_string(c->arch));
    json_object_set_new(a, "n_vocab", json_integer(c->n_vocab));
    json_object_set_new(a, "n_ctx_train", json_integer(c->n_ctx_train));
    json_object_set_new(a, "n_embd", json_integer(c->n_embd));
    json_object_set_new(a, "n_ff", json_integer(c->n_ff));
    json_object_set_new(a, "n_layer", json_integer(c->n_layer));
    json_object_set_new(a, "n_head", json_integer(c->n_head));
    json_object_set_new(a, "n_head_kv", json_integer(c->n_head_kv));
    json_object_set_new(a, "head_dim", json_integer(c->head_dim));
    json_object_set_new(a, "n_rot", json_integer(c->n_rot));
    json_object_set_new(a, "rope_freq_base", json_real(c->rope_freq_base));
    json_object_set_new(a, "norm_eps", json_real(c->norm_eps));
    json_object_set_new(a, "rope_scaling", c->rope_scaling[0] ? json_string(c->rope_scaling) : json_null());
    json_object_set_new(a, "rope_scaling_factor", json_real(c->rope_scaling_factor));
    json_object_set_new(a, "tied_output", json_boolean(c->tied_output));
    json_object_set_new(o, "config", a);

    json_t *md = json_object();
    for (size_t i = 0; i < m->kv.n; i++) json_object_set_new(md, m->kv.kv[i].key, kv_json(&m->kv.kv[i]));
    json_object_set_new(o, "metadata", md);

    uint64_t params = model_param_count(m), bytes = model_bytes(m);
    json_object_set_new(o, "n_tensors", json_integer((json_int_t)m->n_tensors));
    json_object_set_new(o, "n_params", json_integer((json_int_t)params));
    json_object_set_new(o, "n_bytes", json_integer((json_int_t)bytes));
    json_object_set_new(o, "bits_per_weight", json_real(params ? 8.0 * (double)bytes / (double)params : 0.0));
    if (tensors) {
        json_t *arr = json_array();
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            const model_tensor *t = &m->tensors[i];
            json_t *jt = json_object();
            json_object_set_new(jt, "name", json_string(t->name));
            json_object_set_new(jt, "type", json_string(type_name(t->type)));
            json_t *shape = json_array();
            for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->ne[d]));
            json_object_set_new(jt, "shape", shape);
            json_object_set_new(jt, "bytes", json_integer((json_int_t)t->nbytes));
            if (hash) {
                char hex[65];
                tensor_hash(m, t, hex);
                json_object_set_new(jt, "sha256", json_string(hex));
            }
            json_array_append_new(arr, jt);
        }
        json_object_set_new(o, "tensors", arr);
    }
    return o;
}

static void tokenizer_summary(const model *m) {
    const char *kind = meta_get_str(&m->kv, "tokenizer.ggml.model");
    if (!kind) { printf("tokenizer:    none\n"); return; }
    uint64_t n_tok = 0, n_merges = 0;
    meta_get_arr(&m->kv, "tokenizer.ggml.tokens", GGUF_STR, &n_tok);
    meta_get_arr(&m->kv, "tokenizer.ggml.merges", GGUF_STR, &n_merges);
    const char *pre = meta_get_str(&m->kv, "tokenizer.ggml.pre");
    printf("tokenizer:    %s%s%s, %" PRIu64 " tokens", kind, pre ? " / " : "", pre ? pre : "", n_tok);
    if (n_merges) printf(", %" PRIu64 " merges", n_merges);
    static const char *const ids[][2] = {{"bos", "tokenizer.ggml.bos_token_id"},
                                         {"eos", "tokenizer.ggml.eos_token_id"},
                                         {"unk", "tokenizer.ggml.unknown_token_id"},
                                         {"pad", "tokenizer.ggml.padding_token_id"}};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        uint64_t v;
        if (meta_get_u64(&m->kv, ids[i][1], &v) && v != UINT32_MAX) printf(", %s %" PRIu64, ids[i][0], v);
    }
    bool b;
    if (meta_get_bool(&m->kv, "tokenizer.ggml.add_bos_token", &b)) printf(", add_bos %s", b ? "yes" : "no");
    printf("\n");
}

static void inspect_text(const model *m, bool tensors, bool hash) {
    const model_config *c = &m->cfg;
    char b1[32], b2[32];
    printf("file:         %s\n", m->path);
    printf("format:       %s\n", format_name(m->format));
    if (c->arch[0]) {
        printf("architecture: %s\n", c->arch);
        printf("  vocab %" PRId64 ", context %" PRId64 ", embd %" PRId64 ", ffn %" PRId64 ", layers %" PRId64
               ", heads %" PRId64 " (kv %" PRId64 "), head_dim %" PRId64 "\n",
               c->n_vocab, c->n_ctx_train, c->n_embd, c->n_ff, c->n_layer, c->n_head, c->n_head_kv, c->head_dim);
        printf("  rope base %g, rope dims %" PRId64 "%s%s, rms eps %g, %s output\n", c->rope_freq_base, c->n_rot,
               c->rope_scaling[0] ? ", scaling " : "", c->rope_scaling, c->norm_eps,
               c->tied_output ? "tied" : "separate");
    }
    tokenizer_summary(m);
    printf("metadata:     %zu keys\n", m->kv.n);
    for (size_t i = 0; i < m->kv.n; i++) kv_print(&m->kv.kv[i]);
    uint64_t params = model_param_count(m), bytes = model_bytes(m);
    if (tensors && m->n_tensors) {
        printf("tensors:      %" PRIu64 "\n", m->n_tensors);
        printf("  %-36s %-8s %-20s %14s%s\n", "name", "type", "shape", "bytes", hash ? "  sha256" : "");
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            const model_tensor *t = &m->tensors[i];
            char shape[96];
            shape_str(t, shape, sizeof shape);
            char hex[65] = "";
            if (hash) tensor_hash(m, t, hex);
            printf("  %-36s %-8s %-20s %14" PRIu64 "%s%s\n", t->name, type_name(t->type), shape, t->nbytes,
                   hash ? "  " : "", hex);
        }
    }
    printf("parameters:   %s (%" PRIu64 ")\n", cli_human_count(params, b1, sizeof b1), params);
    printf("size:         %s, %.2f bits per weight\n", cli_human_bytes(bytes, b2, sizeof b2),
           params ? 8.0 * (double)bytes / (double)params : 0.0);
}

int cmd_inspect(int argc, char **argv) {
    cli_common c = {0};
    const char *tokenizer = NULL;
    bool tensors = true, hash = false;
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 'k'}, {"no-tensors", no_argument, 0, 'n'}, {"hash", no_argument, 0, 'H'},
        CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORT, opts, NULL)) != -1) {
        switch (ch) {
        case 'k': tokenizer = optarg; break;
        case 'n': tensors = false; break;
        case 'H': hash = true; break;
        default:
            if ((rc = cli_common_option("inspect", USAGE, ch, argv, &c))) return rc == CLI_HELP ? EXIT_OK : rc;
        }
    }
    if (argc - optind != 1) return cli_usage_error("inspect", "expected one MODEL argument");
    model m;
    slmc_err err = {{0}};
    if (cli_open_model(&m, argv[optind], tokenizer, &err) != 0) return cli_error(&err);
    if (c.json) {
        json_t *o = inspect_json(&m, tensors, hash);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        inspect_text(&m, tensors, hash);
    }
    model_close(&m);
    return EXIT_OK;
}
