/* test_synth.c - synthetic checkpoints: they open as Hugging Face folders with the asked
 * shape, are byte-identical run to run and thread count to thread count, and their values
 * have the promised statistics. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/hf.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "codec/types.h"
#include "testutil.h"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *dir, const char *name) {
    char *p = join(dir, name);
    struct stat st;
    int ok = stat(p, &st) == 0;
    free(p);
    return ok;
}

/* Write a synthetic model into tmp/sub; returns the folder (malloc'd). */
static char *write_synth(const char *tmp, const char *sub, const synth_opts *o) {
    char *out = join(tmp, sub);
    slmc_err err = {{0}};
    ck_assert_msg(synth_write(o, out, NULL, &err) == 0, "%s", err.msg);
    return out;
}

/* Byte equality of one file in two folders. */
static int same_file_bytes(const char *a, const char *b, const char *name) {
    char *pa = join(a, name), *pb = join(b, name);
    size_t la = 0, lb = 0;
    uint8_t *da = slurp(pa, &la), *db = slurp(pb, &lb);
    ck_assert_msg(da && db, "missing %s", name);
    int same = la == lb && memcmp(da, db, la) == 0;
    free(da); free(db); free(pa); free(pb);
    return same;
}

START_TEST(test_tiny_opens) {
    char *tmp = tmpdir_make();
    synth_opts o;
    synth_opts_init(&o);
    ck_assert_int_eq(o.dtype, GGML_TYPE_F16);
    ck_assert_uint_eq(o.seed, SYNTH_DEFAULT_SEED);
    o.shape = "tiny";
    char *out = write_synth(tmp, "tiny", &o);
    ck_assert(exists(out, "config.json"));
    ck_assert(exists(out, "model.safetensors"));
    ck_assert(exists(out, "tokenizer.model"));
    ck_assert(!exists(out, "model.safetensors.index.json"));

    model m;
    slmc_err err = {{0}};
    ck_assert_msg(hf_open(&m, out, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(m.cfg.arch, "llama");
    ck_assert_int_eq(m.cfg.n_embd, 128);
    ck_assert_int_eq(m.cfg.n_ff, 384);
    ck_assert_int_eq(m.cfg.n_layer, 2);
    ck_assert_int_eq(m.cfg.n_head, 4);
    ck_assert_int_eq(m.cfg.n_head_kv, 2);
    ck_assert_int_eq(m.cfg.head_dim, 32);
    ck_assert_int_eq(m.cfg.n_vocab, 512);
    ck_assert_int_eq(m.cfg.n_ctx_train, 256);
    ck_assert_float_eq(m.cfg.rope_freq_base, 10000.0f);
    ck_assert_float_eq(m.cfg.norm_eps, 1e-5f);
    ck_assert(!m.cfg.tied_output);
    /* token_embd, output_norm, output + 9 per layer */
    ck_assert_uint_eq(m.n_tensors, 3 + 2 * 9);
    int64_t q = model_find(&m, "blk.1.attn_q.weight");
    ck_assert(q >= 0);
    ck_assert_int_eq(m.tensors[q].type, GGML_TYPE_F16);
    ck_assert_int_eq(m.tensors[q].ne[0], 128);
    ck_assert_int_eq(m.tensors[q].ne[1], 128);
    int64_t k = model_find(&m, "blk.0.attn_k.weight");
    ck_assert_int_eq(m.tensors[k].ne[1], 64); /* 2 KV heads of 32 */
    int64_t down = model_find(&m, "blk.0.ffn_down.weight");
    ck_assert_int_eq(m.tensors[down].ne[0], 384);
    ck_assert(model_find(&m, "output.weight") >= 0);

    /* The vocabulary: specials, bytes, then made-up pieces with decreasing scores. */
    uint64_t n = 0;
    const meta_str *toks = meta_get_arr(&m.kv, "tokenizer.ggml.tokens", GGUF_STR, &n);
    ck_assert_ptr_nonnull(toks);
    ck_assert_uint_eq(n, 512);
    ck_assert_str_eq(toks[0].s, "<unk>");
    ck_assert_str_eq(toks[2].s, "</s>");
    ck_assert_str_eq(toks[3].s, "<0x00>");
    ck_assert_str_eq(toks[258].s, "<0xFF>");
    ck_assert_str_eq(toks[259].s, "\xe2\x96\x81the");
    const int32_t *types = meta_get_arr(&m.kv, "tokenizer.ggml.token_type", GGUF_I32, &n);
    ck_assert_int_eq(types[0], 2);
    ck_assert_int_eq(types[1], 3);
    ck_assert_int_eq(types[100], 6);
    ck_assert_int_eq(types[300], 1);
    const float *scores = meta_get_arr(&m.kv, "tokenizer.ggml.scores", GGUF_F32, &n);
    ck_assert_float_eq(scores[259], 0.0f);
    ck_assert_float_eq(scores[511], -252.0f);
    uint64_t bos = 0;
    ck_assert(meta_get_u64(&m.kv, "tokenizer.ggml.bos_token_id", &bos));
    ck_assert_uint_eq(bos, 1);
    model_close(&m);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_deterministic) {
    char *tmp = tmpdir_make();
    synth_opts o;
    synth_opts_init(&o);
    o.shape = "tiny";
    omp_set_num_threads(1);
    char *a = write_synth(tmp, "a", &o);
    omp_set_num_threads(4);
    char *b = write_synth(tmp, "b", &o);
    o.seed = 7;
    char *c = write_synth(tmp, "c", &o);
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.model",
                                        "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        ck_assert_msg(same_file_bytes(a, b, files[i]), "%s differs between runs", files[i]);
    ck_assert(!same_file_bytes(a, c, "model.safetensors"));
    ck_assert(same_file_bytes(a, c, "config.json"));
    free(a); free(b); free(c);
    tmpdir_remove(tmp);
}
END_TEST

/* Column RMS of a rows x cols F32 matrix. */
static void column_rms(const float *w, int64_t rows, int64_t cols, double *rms) {
    for (int64_t c = 0; c < cols; c++) {
        double s = 0;
        for (int64_t r = 0; r < rows; r++) s += (double)w[r * cols + c] * w[r * cols + c];
        rms[c] = sqrt(s / (double)rows);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_statistics) {
    char *tmp = tmpdir_make();
    synth_opts o;
    synth_opts_init(&o);
    o.shape = "tiny";
    o.dtype = GGML_TYPE_F32;
    char *f32 = write_synth(tmp, "f32", &o);
    o.dtype = GGML_TYPE_BF16;
    char *bf16 = write_synth(tmp, "bf16", &o);
    st_model st, sb;
    slmc_err err = {{0}};
    ck_assert_msg(st_open(&st, f32, &err) == 0, "%s", err.msg);
    ck_assert_msg(st_open(&sb, bf16, &err) == 0, "%s", err.msg);

    /* A matrix: per-column scale ~ factor/sqrt(fan_in) with factor in [0.5, 1.5), and a few
     * outlier columns 8..20 times larger. gate_proj is 384 x 128. */
    int64_t g = st_find(&st, "model.layers.0.mlp.gate_proj.weight");
    ck_assert(g >= 0);
    ck_assert_int_eq(st.tensors[g].shape[0], 384);
    ck_assert_int_eq(st.tensors[g].shape[1], 128);
    const float *w = (const float *)st.tensors[g].data;
    double rms[128], sorted[128];
    column_rms(w, 384, 128, rms);
    memcpy(sorted, rms, sizeof rms);
    qsort(sorted, 128, sizeof *sorted, cmp_double);
    double median = sorted[64];
    ck_assert_msg(median * sqrt(128.0) > 0.45 && median * sqrt(128.0) < 1.6, "median column rms %g", median);
    ck_assert_msg(sorted[127] / median > 6.0, "largest column only %g x the median", sorted[127] / median);
    ck_assert_msg(sorted[125] / median < 2.0, "more than 1 outlier column in 128: %g", sorted[125] / median);
    double mean = 0;
    for (int64_t i = 0; i < 384 * 128; i++) mean += w[i];
    mean /= 384 * 128;
    ck_assert_msg(fabs(mean) < 0.1 * median, "mean %g", mean);

    /* Element values are the counter-based draws: element (r, c) is
     * scale * col_mul[c] * synth_normal(seed, key, r*cols + c) for some per-tensor constant;
     * for two elements of the same non-outlier column the ratio is the ratio of draws. */
    uint64_t key = 0xcbf29ce484222325ull; /* FNV-1a of the name, as synth.c keys tensors */
    for (const char *p = "model.layers.0.mlp.gate_proj.weight"; *p; p++) key = (key ^ (uint8_t)*p) * 0x100000001b3ull;
    int c0 = 0;
    while (rms[c0] > 2 * median) c0++;
    float d0 = synth_normal(SYNTH_DEFAULT_SEED, key, (uint64_t)c0), d1 = synth_normal(SYNTH_DEFAULT_SEED, key, 128 + c0);
    ck_assert_float_eq_tol(w[c0] / d0, w[128 + c0] / d1, 1e-4f * fabsf(w[c0] / d0));

    /* Norms near 1 with small noise. */
    int64_t nrm = st_find(&st, "model.layers.1.input_layernorm.weight");
    ck_assert(nrm >= 0);
    const float *nv = (const float *)st.tensors[nrm].data;
    double nm = 0;
    for (int i = 0; i < 128; i++) {
        ck_assert_msg(nv[i] > 0.8f && nv[i] < 1.2f, "norm %d = %g", i, nv[i]);
        nm += nv[i];
    }
    ck_assert(fabs(nm / 128 - 1.0) < 0.01);

    /* The BF16 file holds the F32 values rounded to BF16. */
    for (uint64_t i = 0; i < st.n_tensors; i++) {
        int64_t j = st_find(&sb, st.tensors[i].name);
        ck_assert(j >= 0);
        ck_assert_int_eq(sb.tensors[j].type, GGML_TYPE_BF16);
        ck_assert_uint_eq(sb.tensors[j].nbytes * 2, st.tensors[i].nbytes);
        const float *src = (const float *)st.tensors[i].data;
        const uint8_t *h = sb.tensors[j].data;
        for (uint64_t e = 0; e < st.tensors[i].nbytes / 4; e += 97)
            CK_ASSERT_QUIET((h[2 * e] | h[2 * e + 1] << 8) == f32_to_bf16(src[e]), "%s: value %llu is not its BF16",
                            st.tensors[i].name, (unsigned long long)e);
    }
    st_close(&st);
    st_close(&sb);
    free(f32); free(bf16);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_config_path) {
    char *tmp = tmpdir_make();
    char *cfg = join(tmp, "config.json");
    const char *text =
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 160,\n"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
        " \"vocab_size\": 300, \"max_position_embeddings\": 1024, \"rope_theta\": 1000000.0,\n"
        " \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true}\n";
    ck_assert_int_eq(write_bytes(cfg, text, strlen(text)), 0);
    synth_opts o;
    synth_opts_init(&o);
    o.config = cfg;
    char *out = write_synth(tmp, "qwen", &o);
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(hf_open(&m, out, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(m.cfg.arch, "qwen2");
    ck_assert_int_eq(m.cfg.n_embd, 64);
    ck_assert_int_eq(m.cfg.n_ff, 160);
    ck_assert_int_eq(m.cfg.n_layer, 2);
    ck_assert_int_eq(m.cfg.n_head_kv, 2);
    ck_assert_int_eq(m.cfg.n_vocab, 300);
    ck_assert_int_eq(m.cfg.n_ctx_train, 1024);
    ck_assert_float_eq(m.cfg.rope_freq_base, 1e6f);
    ck_assert_float_eq(m.cfg.norm_eps, 1e-6f);
    ck_assert(m.cfg.tied_output);
    /* token_embd, output_norm + 12 per layer (9 + q/k/v biases), no output.weight */
    ck_assert_uint_eq(m.n_tensors, 2 + 2 * 12);
    ck_assert(model_find(&m, "blk.1.attn_k.bias") >= 0);
    ck_assert_int_eq(model_find(&m, "output.weight"), -1);
    model_close(&m);

    /* Small shards: several files and an index, the same tensors. */
    o.shard_size = 40000;
    char *sharded = write_synth(tmp, "sharded", &o);
    ck_assert(exists(sharded, "model.safetensors.index.json"));
    ck_assert(!exists(sharded, "model.safetensors"));
    ck_assert_msg(hf_open(&m, sharded, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(m.n_tensors, 2 + 2 * 12);
    model_close(&m);
    free(sharded);
    free(out);
    free(cfg);
    tmpdir_remove(tmp);
}
END_TEST

/* A full Qwen2-size vocabulary: every token text distinct. */
static int cmp_str(const void *a, const void *b) {
    const meta_str *x = a, *y = b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

START_TEST(test_large_vocab_unique) {
    char *tmp = tmpdir_make();
    char *cfg = join(tmp, "config.json");
    const char *text =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16,\n"
        " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 151936}\n";
    ck_assert_int_eq(write_bytes(cfg, text, strlen(text)), 0);
    synth_opts o;
    synth_opts_init(&o);
    o.config = cfg;
    char *out = write_synth(tmp, "big", &o);
    model m;
    slmc_err err = {{0}};
    ck_assert_msg(hf_open(&m, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.cfg.n_head_kv, 2); /* defaults to num_attention_heads */
    uint64_t n = 0;
    const meta_str *toks = meta_get_arr(&m.kv, "tokenizer.ggml.tokens", GGUF_STR, &n);
    ck_assert_uint_eq(n, 151936);
    meta_str *copy = malloc(n * sizeof *copy);
    memcpy(copy, toks, n * sizeof *copy);
    qsort(copy, n, sizeof *copy, cmp_str);
    for (uint64_t i = 1; i < n; i++)
        CK_ASSERT_QUIET(cmp_str(&copy[i - 1], &copy[i]) != 0, "duplicate token '%s'", copy[i].s);
    free(copy);
    model_close(&m);
    free(out);
    free(cfg);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_bad_options) {
    char *tmp = tmpdir_make();
    char *out = join(tmp, "out");
    synth_opts o;
    synth_opts_init(&o);
    slmc_err err = {{0}};
    o.shape = "gpt-5";
    ck_assert_int_eq(synth_write(&o, out, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "unknown shape \"gpt-5\"") && strstr(err.msg, "tinyllama-1.1b"), "%s", err.msg);
    o.shape = NULL;
    ck_assert_int_eq(synth_write(&o, out, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "exactly one"), "%s", err.msg);
    o.shape = "tiny";
    o.dtype = GGML_TYPE_Q4_0;
    ck_assert_int_eq(synth_write(&o, out, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "Q4_0"), "%s", err.msg);

    static const struct { const char *json; const char *needle; } bad[] = {
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}", "missing field \"intermediate_size\""},
        {"{\"architectures\": [\"GPT2LMHeadModel\"]}", "GPT2LMHeadModel is not supported"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 100}", "vocab_size 100 is below 259"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"vocab_size\": 300}",
         "\"num_key_value_heads\" (3) does not divide"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\"}", "\"hidden_size\" is not an integer"},
        /* the family's own checks, as hf_open makes them */
        {"{\"architectures\": [\"Gemma2ForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "
         "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"head_dim\": 32, \"vocab_size\": 300, "
         "\"rms_norm_eps\": 1e-6, \"sliding_window\": 32, \"query_pre_attn_scalar\": 32}",
         "missing field \"attn_logit_softcapping\""},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 300, "
         "\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}}", "\"rope_scaling.rope_type\" is \"dynamic\""},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 1, \"hidden_size\": 2}", "bad JSON"},
    };
    char *cfg = join(tmp, "config.json");
    o.dtype = GGML_TYPE_F16;
    o.shape = NULL;
    o.config = cfg;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(write_bytes(cfg, bad[i].json, strlen(bad[i].json)), 0);
        ck_assert_int_eq(synth_write(&o, out, NULL, &err), -1);
        ck_assert_msg(strstr(err.msg, bad[i].needle) && strstr(err.msg, cfg), "case %zu: %s", i, err.msg);
    }
    struct stat st;
    ck_assert_int_ne(stat(out, &st), 0); /* nothing was created */
    free(cfg);
    free(out);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(test_shape_names) {
    synth_shape s;
    slmc_err err = {{0}};
    ck_assert_str_eq(synth_shape_name(0), "tiny");
    int n = 0;
    while (synth_shape_name(n)) {
        /* every built-in shape parses */
        ck_assert_msg(synth_shape_get(synth_shape_name(n), &s, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(s.name, synth_shape_name(n));
        synth_shape_free(&s);
        n++;
    }
    ck_assert_int_eq(n, 8);
    ck_assert_int_eq(synth_shape_get("qwen2-0.5b", &s, &err), 0);
    ck_assert_str_eq(s.cfg.arch->name, "qwen2");
    ck_assert_int_eq(s.cfg.n_embd, 896);
    ck_assert_int_eq(s.cfg.n_vocab, 151936);
    ck_assert(s.cfg.tied && s.cfg.qkv_bias);
    synth_shape_free(&s);
    ck_assert_int_eq(synth_shape_get("llama-2-7b", &s, &err), 0);
    ck_assert_int_eq(s.cfg.n_ff, 11008);
    ck_assert_int_eq(s.cfg.n_head_kv, 32);
    synth_shape_free(&s);
    ck_assert_int_eq(synth_shape_get("tinyllama-1.1b", &s, &err), 0);
    ck_assert_int_eq(s.cfg.n_layer, 22);
    ck_assert_int_eq(s.cfg.n_head_kv, 4);
    synth_shape_free(&s);
    /* the full-size benchmark shapes of the newer families */
    ck_assert_int_eq(synth_shape_get("llama-3.2-1b", &s, &err), 0);
    ck_assert_str_eq(s.cfg.rope_type, "llama3");
    ck_assert(s.cfg.rope_factor == 32.0 && s.cfg.rope_orig_ctx == 8192 && s.cfg.tied);
    ck_assert_int_eq(s.cfg.n_vocab, 128256);
    synth_shape_free(&s);
    ck_assert_int_eq(synth_shape_get("qwen3-0.6b", &s, &err), 0);
    ck_assert_str_eq(s.cfg.arch->name, "qwen3");
    ck_assert_int_eq(s.cfg.head_dim, 128); /* 16 heads of 128 in a 1024-wide model */
    ck_assert(s.cfg.tied && !s.cfg.qkv_bias);
    synth_shape_free(&s);
    ck_assert_int_eq(synth_shape_get("gemma-3-1b", &s, &err), 0);
    ck_assert_str_eq(s.cfg.arch->name, "gemma3");
    ck_assert_int_eq(s.cfg.n_swa, 512);
    ck_assert_int_eq(s.cfg.head_dim, 256);
    ck_assert_int_eq(s.cfg.n_vocab, 262144);
    synth_shape_free(&s);
}
END_TEST

/* The test configs of every family (tests/data/configs/<family>/config.json): the folder opens
 * with the family's tensors, norms near their neutral value, biases small, and Gemma's norm
 * values exact under + 1 in BF16 and F16. */
static const char *const FAMILY_DIRS[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "stablelm"};

static bool name_ends(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

START_TEST(test_families) {
    char cfg[128];
    snprintf(cfg, sizeof cfg, "tests/data/configs/%s/config.json", FAMILY_DIRS[_i]);
    struct stat sb;
    if (stat(cfg, &sb) != 0) SKIP_TEST("%s not found (run from the project root)", cfg);
    char *tmp = tmpdir_make();
    synth_opts o;
    synth_opts_init(&o);
    o.config = cfg;
    for (int pass = 0; pass < 2; pass++) {
        o.dtype = pass == 0 ? GGML_TYPE_BF16 : GGML_TYPE_F16;
        char *out = write_synth(tmp, pass == 0 ? "bf16" : "f16", &o);
        model m;
        slmc_err err = {{0}};
        ck_assert_msg(hf_open(&m, out, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(m.cfg.arch, FAMILY_DIRS[_i]);
        const arch_desc *a = arch_by_name(m.cfg.arch);
        st_model st;
        ck_assert_msg(st_open(&st, out, &err) == 0, "%s", err.msg);
        for (uint64_t i = 0; i < st.n_tensors; i++) {
            const st_tensor *t = &st.tensors[i];
            ck_assert_int_eq(t->type, o.dtype);
            if (t->n_dims != 1) continue;
            char *g = hf_to_gguf_name(a, t->name);
            CK_ASSERT_QUIET(g != NULL, "%s", t->name);
            int64_t vi = model_find(&m, g);
            CK_ASSERT_QUIET(vi >= 0, "%s", g);
            const char *rest = strncmp(g, "blk.", 4) == 0 ? strchr(g + 4, '.') + 1 : g;
            const arch_tensor *rule = rest == g ? arch_global(a, g) : arch_layer_tensor(a, rest);
            ck_assert_ptr_nonnull(rule);
            int64_t n = t->shape[0];
            float *hf = malloc((size_t)n * sizeof *hf), *view = malloc((size_t)n * sizeof *view);
            row_to_f32(t->type, t->data, hf, n);
            CK_ASSERT_QUIET(model_read_rows_f32(&m, (uint64_t)vi, 0, 1, view, &err) == 0, "%s", err.msg);
            for (int64_t k = 0; k < n; k++) {
                if (rule->plus_one) {
                    /* w is a small multiple of 1/128; the view holds 1 + w, exact */
                    CK_ASSERT_QUIET(fabsf(hf[k]) < 0.25f && hf[k] * 128.0f == rintf(hf[k] * 128.0f), "%s %g", t->name, hf[k]);
                    CK_ASSERT_QUIET(view[k] == 1.0f + hf[k], "%s: %g vs 1 + %g", g, view[k], hf[k]);
                    CK_ASSERT_QUIET(hf[k] != 0.0f || !signbit(hf[k]), "%s: -0", g); /* no -0: 1 + w - 1 gives +0 */
                } else if (name_ends(t->name, ".bias")) {
                    CK_ASSERT_QUIET(fabsf(hf[k]) < 0.2f, "%s %g", t->name, hf[k]);
                    if (!(a->permute_qk && (strstr(g, "attn_q.") || strstr(g, "attn_k."))))
                        CK_ASSERT_QUIET(view[k] == hf[k], "%s: %g vs %g", g, view[k], hf[k]);
                } else {
                    CK_ASSERT_QUIET(hf[k] > 0.8f && hf[k] < 1.2f, "%s %g", t->name, hf[k]);
                    CK_ASSERT_QUIET(view[k] == hf[k], "%s: %g vs %g", g, view[k], hf[k]);
                }
            }
            free(hf);
            free(view);
            free(g);
        }
        st_close(&st);
        model_close(&m);
        free(out);
    }
    tmpdir_remove(tmp);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("synth");
    TCase *tc = tcase_create("synth");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_tiny_opens);
    tcase_add_test(tc, test_deterministic);
    tcase_add_test(tc, test_statistics);
    tcase_add_test(tc, test_config_path);
    tcase_add_test(tc, test_large_vocab_unique);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_shape_names);
    tcase_add_loop_test(tc, test_families, 0, (int)(sizeof FAMILY_DIRS / sizeof FAMILY_DIRS[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()); }
