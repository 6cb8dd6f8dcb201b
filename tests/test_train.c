/* test_train.c - the training loop: the forward agrees with the inference engine, loss goes
 * down, k steps + checkpoint + resume m steps is bitwise k+m steps, the thread count and the
 * GEMM kernel (AVX2, AVX-512) change no bit, data formats, export; train_run's whole run,
 * stopped through its flag and resumed, exports the same bytes as an uninterrupted one. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "distill/data.h"
#include "distill/model.h"
#include "distill/ops.h"
#include "distill/train_run.h"
#include "distill/teacher_cache.h"
#include "distill/trainer.h"
#include "eval/llm.h"
#include "eval/tokenizer.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "codec/types.h"
#include "testutil.h"

/* A tiny model: 2 layers, GQA 4/2, vocab 16, of the family tiny_families[tiny_family] (0: llama). */
static int tiny_ff[2] = {24, 24};
static float tiny_rope_freqs[2] = {1.0f, 4.0f};
static const char *const tiny_families[] = {"llama", "llama", "qwen2", "qwen3", "gemma", "gemma2",
                                            "gemma3", "phi2", "phi3", "stablelm"};
#define N_TINY_FAMILIES 10
static int tiny_family;
static tm_config tiny_config(void) {
    const arch_desc *fam = arch_by_name(tiny_families[tiny_family]);
    tm_config c = {.hp = {.n_vocab = 16, .n_embd = 16, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 4,
                          .n_rot = fam->norm == NORM_LAYER ? 2 : 4, .norm_eps = 1e-5f, .rope_freq_base = 10000.f,
                          .tied_output = fam->tied_default, .n_swa = fam->swa != SWA_NONE ? 5 : 0,
                          .attn_softcap = fam->attn_softcap ? 20.f : 0.f, .final_softcap = fam->final_softcap ? 15.f : 0.f,
                          .rope_freq_base_swa = fam->swa == SWA_5_TO_1 ? 1000.f : 0.f, .rope_attn_factor = 1.f,
                          .n_ctx_train = 64},
                   .n_ff = tiny_ff, .freq_scale = 1.f, .qkv_bias = fam->qkv_bias || tiny_family == 2};
    snprintf(c.hp.arch, sizeof c.hp.arch, "%s", fam->name);
    if (tiny_family == 1) { /* Llama 3's rope factors */
        snprintf(c.consts[0].name, sizeof c.consts[0].name, "rope_freqs.weight");
        c.consts[0].data = tiny_rope_freqs;
        c.consts[0].n = 2;
        c.n_consts = 1;
    }
    return c;
}

/* A token stream with structure to learn: a repeating pattern with some noise. */
static void tiny_data(train_data *d, int T) {
    memset(d, 0, sizeof *d);
    d->n_tokens = 4000;
    d->tokens = malloc(sizeof(int32_t) * d->n_tokens);
    ck_assert_ptr_nonnull(d->tokens);
    uint32_t s = 12345;
    for (size_t i = 0; i < d->n_tokens; i++) {
        s = s * 1664525u + 1013904223u;
        d->tokens[i] = (s >> 28) == 0 ? (int32_t)((s >> 20) % 16) : (int32_t)((i * 3) % 11);
    }
    slmc_err err = {{0}};
    ck_assert_msg(data_split(d, T, 0.05, 7, &err) == 0, "%s", err.msg);
}

static trainer_opts tiny_opts(void) {
    trainer_opts o;
    trainer_opts_default(&o);
    o.steps = 12;
    o.seq_len = 16;
    o.batch = 3;
    o.grad_accum = 2;
    o.lr = 1e-2f;
    o.min_lr = 1e-3f;
    o.warmup = 2;
    return o;
}

START_TEST(test_loss_decreases) {
    tm_config cfg = tiny_config();
    train_model tm;
    train_data d;
    trainer tr;
    slmc_err err = {{0}};
    trainer_opts o = tiny_opts();
    o.steps = 60;
    o.grad_accum = 1;
    ck_assert(tm_init_random(&tm, &cfg, 1, &err) == 0);
    tiny_data(&d, o.seq_len);
    ck_assert_msg(trainer_init(&tr, &o, &tm, &d, NULL, &err) == 0, "%s", err.msg);
    double before, after;
    ck_assert(trainer_eval(&tr, 0, &before, &err) == 0);
    ck_assert(fabs(before - log(16.0)) < 0.1); /* random init: about uniform */
    for (int i = 0; i < o.steps; i++) {
        train_report r;
        ck_assert_msg(trainer_step(&tr, &r, &err) == 0, "%s", err.msg);
        ck_assert(isfinite(r.loss) && r.grad_norm > 0);
    }
    ck_assert(trainer_eval(&tr, 0, &after, &err) == 0);
    ck_assert_msg(after < 0.6 * before, "held-out loss %.4f -> %.4f", before, after);
    trainer_free(&tr);
    data_free(&d);
    tm_free(&tm);
}
END_TEST

/* The held-out cross-entropy is the same, to the bit, whatever the micro-batch the model is
 * planned for: trainer_eval runs B sequences per forward (the last batch padded) and sums each
 * sequence's rows on its own, as one sequence per forward does. */
START_TEST(test_eval_same_for_any_batch) {
    tm_config cfg = tiny_config();
    train_model tm;
    train_data d;
    slmc_err err = {{0}};
    ck_assert(tm_init_random(&tm, &cfg, 1, &err) == 0);
    tiny_data(&d, 16);
    ck_assert_msg(d.n_valid >= 5, "only %lld held-out sequences", (long long)d.n_valid);
    const int64_t counts[] = {0, 5, 4, 1};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        double ce[3];
        const int batches[] = {1, 3, 4};
        for (int b = 0; b < 3; b++) {
            trainer_opts o = tiny_opts();
            o.batch = batches[b];
            trainer tr;
            ck_assert_msg(trainer_init(&tr, &o, &tm, &d, NULL, &err) == 0, "%s", err.msg);
            ck_assert_msg(trainer_eval(&tr, counts[k], &ce[b], &err) == 0, "%s", err.msg);
            trainer_free(&tr);
        }
        ck_assert(isfinite(ce[0]) && ce[0] > 0);
        ck_assert_msg(memcmp(&ce[0], &ce[1], sizeof(double)) == 0 && memcmp(&ce[0], &ce[2], sizeof(double)) == 0,
                      "%lld sequences: batch 1 %.17g, batch 3 %.17g, batch 4 %.17g", (long long)counts[k], ce[0], ce[1],
                      ce[2]);
    }
    data_free(&d);
    tm_free(&tm);
}
END_TEST

/* Run `steps` steps of a fresh trainer (optionally resumed from ckpt, optionally saving to
 * save_path at the end), recording losses from index `first`, with the model's settings exec
 * (NULL: the defaults). */
/* distill_cache: a teacher cache (run_cache) and the divergence (run_loss) the runs distil with,
 * or NULL for cross-entropy only */
static const char *run_cache;
static distill_kind run_loss;
static int run_lora; /* > 0: the runs train LoRA adapters of this rank */

static void run_with(const gemm_ctx *exec, int steps, const char *resume, const char *save_path, double *losses,
                     float **params_out, size_t *n_params) {
    tm_config cfg = tiny_config();
    train_model tm;
    train_data d;
    trainer tr;
    slmc_err err = {{0}};
    trainer_opts o = tiny_opts();
    o.loss = run_loss;
    ck_assert(tm_init_random(&tm, &cfg, 3, &err) == 0);
    if (run_lora) ck_assert_msg(tm_add_lora(&tm, run_lora, 2.0f * run_lora, 3, &err) == 0, "%s", err.msg);
    if (exec) tm.exec = *exec;
    tiny_data(&d, o.seq_len);
    ck_assert(trainer_init(&tr, &o, &tm, &d, NULL, &err) == 0);
    teacher_cache *cache = NULL;
    if (run_cache) {
        ck_assert_msg(tcache_open(&cache, run_cache, &err) == 0, "%s", err.msg);
        ck_assert_msg(trainer_set_cache(&tr, cache, &err) == 0, "%s", err.msg);
    }
    if (resume) ck_assert_msg(trainer_load(&tr, resume, &err) == 0, "%s", err.msg);
    for (int i = 0; i < steps; i++) {
        train_report r;
        int64_t at = tr.step;
        ck_assert(trainer_step(&tr, &r, &err) == 0);
        losses[at] = r.loss;
    }
    if (save_path) ck_assert_msg(trainer_save(&tr, save_path, &err) == 0, "%s", err.msg);
    if (params_out) {
        *params_out = malloc(sizeof(float) * tm.n_params);
        memcpy(*params_out, tm.params, sizeof(float) * tm.n_params);
        *n_params = tm.n_params;
    }
    trainer_free(&tr);
    tcache_close(cache);
    data_free(&d);
    tm_free(&tm);
}

static void run(int steps, const char *resume, const char *save_path, double *losses, float **params_out,
                size_t *n_params) {
    run_with(NULL, steps, resume, save_path, losses, params_out, n_params);
}

/* 4 + 8 steps across a checkpoint == 12 steps in one go; the data wraps into a new epoch. */
static void resume_case(void) {
    char *dir = tmpdir_make();
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.h5", dir);
    double full[12], split[12];
    float *p_full, *p_split;
    size_t n1, n2;
    run(12, NULL, NULL, full, &p_full, &n1);
    run(4, NULL, ckpt, split, NULL, NULL);
    run(8, ckpt, NULL, split, &p_split, &n2);
    ck_assert_uint_eq(n1, n2);
    for (int i = 0; i < 12; i++)
        ck_assert_msg(memcmp(&full[i], &split[i], sizeof(double)) == 0, "family %d: loss of step %d differs", tiny_family, i);
    ck_assert(memcmp(p_full, p_split, sizeof(float) * n1) == 0);
    ck_assert(full[11] != full[0]);
    free(p_full);
    free(p_split);
    tmpdir_remove(dir);
}

/* A teacher cache over every training sequence of tiny_data: a made-up teacher's top 6 of 16. */
static void write_tiny_cache(const char *path) {
    train_data d;
    trainer_opts o = tiny_opts();
    tiny_data(&d, o.seq_len);
    const teacher_cache_info in = {.k = 6, .T = o.seq_len, .V_shared = 16, .n_seq = d.n_train,
                                   .n_tokens = (int64_t)d.n_tokens, .n_vocab_teacher = 16, .tau = o.temperature,
                                   .data_hash = d.hash};
    teacher_cache *c;
    slmc_err err = {{0}};
    ck_assert_msg(tcache_create(&c, path, &in, &err) == 0, "%s", err.msg);
    float *logits = malloc(sizeof(float) * (size_t)o.seq_len * 16);
    for (int64_t s = 0; s < d.n_train; s++) {
        for (int i = 0; i < o.seq_len * 16; i++) logits[i] = (float)((s * 31 + i * 17) % 13) * 0.4f;
        ck_assert(tcache_put(c, s, logits, &err) == 0);
    }
    ck_assert_msg(tcache_finish(c, &err) == 0, "%s", err.msg);
    free(logits);
    data_free(&d);
}

START_TEST(test_resume_bitwise) {
    for (tiny_family = 0; tiny_family < N_TINY_FAMILIES; tiny_family++) resume_case(); /* every family */
    tiny_family = 0;
    /* and every divergence, distilling from a teacher cache */
    char *dir = tmpdir_make();
    char cache[512];
    snprintf(cache, sizeof cache, "%s/teacher.h5", dir);
    write_tiny_cache(cache);
    run_cache = cache;
    for (int k = DISTILL_KL; k <= DISTILL_TVD; k++) {
        run_loss = (distill_kind)k;
        resume_case();
    }
    run_cache = NULL;
    run_loss = DISTILL_KL;
    tmpdir_remove(dir);
    /* and LoRA adapters on a frozen qwen3 */
    tiny_family = 3;
    run_lora = 3;
    resume_case();
    run_lora = 0;
    tiny_family = 0;
}
END_TEST

/* A synthetic F32 model of tests/data/configs/FAMILY in a new folder DIR/hf (the caller removes
 * dir), opened as m; false when the configs are not there (not run from the project root). */
static bool synth_family(const char *family, char **dir, model *m) {
    char cfg_path[256], hf[512];
    snprintf(cfg_path, sizeof cfg_path, "tests/data/configs/%s/config.json", family);
    if (access(cfg_path, R_OK) != 0) return false;
    *dir = tmpdir_make();
    snprintf(hf, sizeof hf, "%s/hf", *dir);
    slmc_err err = {{0}};
    synth_opts so;
    synth_opts_init(&so);
    so.config = cfg_path;
    so.dtype = GGML_TYPE_F32;
    ck_assert_msg(synth_write(&so, hf, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_open(m, hf, NULL, &err) == 0, "%s", err.msg);
    return true;
}

/* LoRA on a synthetic llama (rope_freqs) and phi3 (fused matrices): adapters with random B,
 * the model exported merged (W + scale·B·A in the model's own tensors, no adapter tensors)
 * evaluates in the engine to the training graph's logits; the frozen weights did not move
 * during a step and the adapters did. */
START_TEST(test_lora_export_merged) {
    static const char *const fams[] = {"llama", "phi3"};
    for (int fi = 0; fi < 2; fi++) {
        char *dir, out[512];
        model m;
        if (!synth_family(fams[fi], &dir, &m)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        snprintf(out, sizeof out, "%s/merged.gguf", dir);
        slmc_err err = {{0}};
        train_model tm;
        ck_assert_msg(tm_init_from_model(&tm, &m, &err) == 0, "%s", err.msg);
        const size_t base_params = tm.n_params;
        ck_assert_msg(tm_add_lora(&tm, 4, 8.0f, 1, &err) == 0, "%s", err.msg);
        ck_assert(tm.n_lora > 0 && tm.n_params > base_params);
        uint64_t st = 77;
        for (int i = 0; i < tm.n_lora; i++) { /* B off zero, so the merge matters */
            const tm_param *b = &tm.tensors[tm.lora[i].b];
            for (size_t j = 0; j < b->n; j++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                tm.params[b->offset + j] = ((float)(st >> 40) / (float)(1 << 24) - 0.5f) * 0.05f;
            }
        }
        const int T = 16, V = (int)m.cfg.n_vocab;
        ck_assert(tm_plan(&tm, 1, T, &err) == 0);
        int32_t toks[16];
        for (int i = 0; i < T; i++) toks[i] = (int32_t)(3 + (i * 37) % (V - 3));
        tm_forward(&tm, toks);
        ck_assert_msg(tm_export(&tm, &m, out, GGML_TYPE_F32, &err) == 0, "%s", err.msg);
        model m2;
        ck_assert_msg(model_open(&m2, out, NULL, &err) == 0, "%s", err.msg);
        ck_assert_int_eq((int)m2.n_tensors, (int)(m.n_tensors));
        for (uint64_t i = 0; i < m2.n_tensors; i++) ck_assert(!strstr(m2.tensors[i].name, "lora"));
        llm_model lm;
        llm_context ctx;
        ck_assert_msg(llm_model_init(&lm, &m2, &err) == 0, "%s", err.msg);
        ck_assert(llm_context_init(&ctx, &lm, T, T, &err) == 0);
        ctx.f16_attention = false;
        float *ref = malloc(sizeof(float) * (size_t)T * V);
        ck_assert(llm_eval(&ctx, toks, T, 0, ref, &err) == 0);
        double worst = 0, scale = 0;
        for (int i = 0; i < T * V; i++) {
            worst = fmax(worst, fabs(ref[i] - tm.a.logits[i]));
            scale = fmax(scale, fabs(ref[i]));
        }
        ck_assert_msg(worst <= 1e-4 * scale, "%s: merged export %g of %g from the graph", fams[fi], worst, scale);
        /* one step: the model's own weights stay, the adapters move */
        float *before = malloc(sizeof(float) * tm.n_params);
        memcpy(before, tm.params, sizeof(float) * tm.n_params);
        memset(tm.a.dlogits, 0, sizeof(float) * (size_t)T * V);
        for (int i = 0; i < T * V; i++) tm.a.dlogits[i] = (float)((i % 7) - 3) * 1e-3f;
        tm_zero_grad(&tm);
        tm_backward(&tm, toks);
        tm_adamw(&tm, 1, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f);
        ck_assert(memcmp(before, tm.params, sizeof(float) * base_params) == 0);
        ck_assert(memcmp(before + base_params, tm.params + base_params, sizeof(float) * (tm.n_params - base_params)) != 0);
        free(before);
        free(ref);
        llm_context_free(&ctx);
        llm_model_free(&lm);
        model_close(&m2);
        tm_free(&tm);
        model_close(&m);
        tmpdir_remove(dir);
    }
}
END_TEST

/* 12 steps with settings a and with settings b: the same losses and weights, bit for bit. */
static void check_same_bits(const gemm_ctx *a, const gemm_ctx *b) {
    double la[12], lb[12];
    float *pa, *pb;
    size_t na, nb;
    run_with(a, 12, NULL, NULL, la, &pa, &na);
    run_with(b, 12, NULL, NULL, lb, &pb, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(la, lb, sizeof la) == 0);
    ck_assert(memcmp(pa, pb, sizeof(float) * na) == 0);
    free(pa);
    free(pb);
}

/* The model's threads are its own setting (not OpenMP's default), and change no bit. */
START_TEST(test_threads_bitwise) {
    const gemm_ctx one = {.kernel = gemm_best_kernel(), .n_threads = 1}, three = {.kernel = gemm_best_kernel(), .n_threads = 3};
    check_same_bits(&one, &three);
}
END_TEST

/* The AVX2 and AVX-512 GEMM kernels train to the same bits. */
START_TEST(test_kernels_bitwise) {
    if (gemm_best_kernel() != GEMM_AVX512) SKIP_TEST("this CPU has no AVX-512");
    const gemm_ctx avx2 = {.kernel = GEMM_AVX2, .n_threads = 2}, avx512 = {.kernel = GEMM_AVX512, .n_threads = 2};
    check_same_bits(&avx2, &avx512);
}
END_TEST

START_TEST(test_checkpoint_refuses_other_text) {
    char *dir = tmpdir_make();
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.h5", dir);
    double l[12];
    run(1, NULL, ckpt, l, NULL, NULL);
    tm_config cfg = tiny_config();
    train_model tm;
    train_data d;
    trainer tr;
    slmc_err err = {{0}};
    trainer_opts o = tiny_opts();
    ck_assert(tm_init_random(&tm, &cfg, 3, &err) == 0);
    tiny_data(&d, o.seq_len);
    d.tokens[5] ^= 1;
    d.hash ^= 1; /* as data_load would compute for other tokens */
    ck_assert(trainer_init(&tr, &o, &tm, &d, NULL, &err) == 0);
    ck_assert(trainer_load(&tr, ckpt, &err) != 0);
    ck_assert_msg(strstr(err.msg, "another text") != NULL, "%s", err.msg);
    trainer_free(&tr);
    data_free(&d);
    tm_free(&tm);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(test_schedule) {
    trainer_opts o;
    trainer_opts_default(&o);
    o.steps = 100;
    o.warmup = 10;
    o.lr = 1.0f;
    o.min_lr = 0.1f;
    ck_assert(fabs(trainer_lr(&o, 0) - 0.1) < 1e-9);
    ck_assert(fabs(trainer_lr(&o, 9) - 1.0) < 1e-9);
    ck_assert(fabs(trainer_lr(&o, 10) - 1.0) < 1e-9);
    ck_assert(fabs(trainer_lr(&o, 99) - 0.1) < 1e-6);
    ck_assert(trainer_lr(&o, 50) < trainer_lr(&o, 40));
}
END_TEST

/* The training forward of stories260K gives the evaluator's logits (F32 attention). */
START_TEST(test_forward_matches_engine) {
    char *bin = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tokp = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    model m;
    slmc_err err = {{0}};
    model_open_opts mo = {.tokenizer = tokp};
    ck_assert_msg(model_open(&m, bin, &mo, &err) == 0, "%s", err.msg);
    train_model tm;
    ck_assert_msg(tm_init_from_model(&tm, &m, &err) == 0, "%s", err.msg);
    const int T = 24;
    ck_assert(tm_plan(&tm, 1, T, &err) == 0);
    int32_t toks[24];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(1 + (i * 37) % 500);
    tm_forward(&tm, toks);
    llm_model lm;
    llm_context ctx;
    ck_assert(llm_model_init(&lm, &m, &err) == 0);
    ck_assert(llm_context_init(&ctx, &lm, T, T, &err) == 0);
    ctx.f16_attention = false;
    float *ref = malloc(sizeof(float) * T * 512);
    ck_assert(llm_eval(&ctx, toks, T, 0, ref, &err) == 0);
    double worst = 0;
    for (int i = 0; i < T * 512; i++) worst = fmax(worst, fabs(ref[i] - tm.a.logits[i]));
    ck_assert_msg(worst < 2e-3, "largest logit difference %g", worst);
    /* export, read back, same logits from the engine */
    char *dir = tmpdir_make();
    char out[512];
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    ck_assert_msg(tm_export(&tm, &m, out, 0, &err) == 0, "%s", err.msg);
    model m2;
    ck_assert_msg(model_open(&m2, out, NULL, &err) == 0, "%s", err.msg);
    llm_model lm2;
    llm_context ctx2;
    ck_assert(llm_model_init(&lm2, &m2, &err) == 0);
    ck_assert(llm_context_init(&ctx2, &lm2, T, T, &err) == 0);
    ctx2.f16_attention = false;
    float *ref2 = malloc(sizeof(float) * T * 512);
    ck_assert(llm_eval(&ctx2, toks, T, 0, ref2, &err) == 0);
    ck_assert(memcmp(ref, ref2, sizeof(float) * T * 512) == 0);
    free(ref2);
    llm_context_free(&ctx2);
    llm_model_free(&lm2);
    model_close(&m2);
    tmpdir_remove(dir);
    free(ref);
    llm_context_free(&ctx);
    llm_model_free(&lm);
    tm_free(&tm);
    model_close(&m);
    free(bin);
    free(tokp);
}
END_TEST

/* Every family (tests/data/configs: llama with Llama 3's rope_freqs, qwen2, qwen3, gemma,
 * gemma2, gemma3, phi2, phi3 with longrope factors, stablelm) written by synth: the training
 * graph's logits are the engine's (which the families test checks against Hugging Face's
 * reference), and the model exported to GGUF carries every tensor the engine needs (the rope
 * factor constants included). */
START_TEST(test_forward_matches_engine_families) {
    static const char *const fams[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "stablelm"};
    for (int fi = 0; fi < 9; fi++) {
        char *dir, out[512];
        model m;
        if (!synth_family(fams[fi], &dir, &m)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        snprintf(out, sizeof out, "%s/out.gguf", dir);
        slmc_err err = {{0}};
        train_model tm;
        ck_assert_msg(tm_init_from_model(&tm, &m, &err) == 0, "%s: %s", fams[fi], err.msg);
        ck_assert(tm.cfg.n_consts == (fi == 0 ? 1 : fi == 7 ? 2 : 0)); /* rope_freqs; phi3's long and short factors */
        const int T = 20, V = (int)m.cfg.n_vocab;
        ck_assert(tm_plan(&tm, 1, T, &err) == 0);
        int32_t toks[20];
        for (int i = 0; i < T; i++) toks[i] = (int32_t)(3 + (i * 37) % (V - 3));
        tm_forward(&tm, toks);
        float *ref = malloc(sizeof(float) * (size_t)T * V), *ref2 = malloc(sizeof(float) * (size_t)T * V);
        llm_model lm;
        llm_context ctx;
        ck_assert_msg(llm_model_init(&lm, &m, &err) == 0, "%s", err.msg);
        ck_assert(llm_context_init(&ctx, &lm, T, T, &err) == 0);
        ctx.f16_attention = false;
        ck_assert(llm_eval(&ctx, toks, T, 0, ref, &err) == 0);
        double worst = 0, scale = 0;
        for (int i = 0; i < T * V; i++) {
            worst = fmax(worst, fabs(ref[i] - tm.a.logits[i]));
            scale = fmax(scale, fabs(ref[i]));
        }
        /* the engine's GELU goes through ggml's fp16 table (gemma*, phi2): a looser bound there */
        const arch_desc *fam = arch_by_name(fams[fi]);
        const double tol = fam->ffn == FFN_SWIGLU ? 1e-4 : 3e-3;
        ck_assert_msg(worst <= tol * scale, "%s: largest logit difference %g of %g", fams[fi], worst, scale);
        /* exported and read back by the engine: the same logits as the graph's source */
        ck_assert_msg(tm_export(&tm, &m, out, GGML_TYPE_F32, &err) == 0, "%s", err.msg);
        model m2;
        ck_assert_msg(model_open(&m2, out, NULL, &err) == 0, "%s", err.msg);
        ck_assert((model_find(&m2, "rope_freqs.weight") >= 0) == (fi == 0));
        ck_assert((model_find(&m2, "rope_factors_short.weight") >= 0) == (fi == 7));
        llm_model lm2;
        llm_context ctx2;
        ck_assert_msg(llm_model_init(&lm2, &m2, &err) == 0, "%s", err.msg);
        ck_assert(llm_context_init(&ctx2, &lm2, T, T, &err) == 0);
        ctx2.f16_attention = false;
        ck_assert(llm_eval(&ctx2, toks, T, 0, ref2, &err) == 0);
        ck_assert_msg(memcmp(ref, ref2, sizeof(float) * (size_t)T * V) == 0, "%s: exported logits differ", fams[fi]);
        llm_context_free(&ctx2);
        llm_model_free(&lm2);
        model_close(&m2);
        llm_context_free(&ctx);
        llm_model_free(&lm);
        free(ref);
        free(ref2);
        tm_free(&tm);
        model_close(&m);
        tmpdir_remove(dir);
    }
}
END_TEST

/* The families the forward-pass tests below run, each a small synthetic model bound for the
 * engine (the sliding families with a window of 5, so their sliding layers cut inside a short
 * sequence); false when tests/data/configs is not found. */
static const char *const FAMILIES[] = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi2", "phi3", "stablelm"};
enum { N_FAMILIES = sizeof FAMILIES / sizeof FAMILIES[0] };
static bool family_bound(const char *fam, char **dir, model *m, llm_model *lm) {
    if (!synth_family(fam, dir, m)) return false;
    if (m->cfg.n_swa > 0) m->cfg.n_swa = 5;
    slmc_err err = {{0}};
    ck_assert_msg(llm_model_init(lm, m, &err) == 0, "%s: %s", fam, err.msg);
    return true;
}
static void family_close(char *dir, model *m, llm_model *lm) {
    llm_model_free(lm);
    model_close(m);
    tmpdir_remove(dir);
}

/* llm_eval_seqs (the teacher's micro-batch in one pass) gives, bit for bit, the logits of one
 * llm_eval per sequence, for every family; the sliding families with a window of 5, so their
 * sliding layers cut inside each sequence; fewer or shorter sequences than the context holds
 * work, more or longer are refused. */
START_TEST(test_eval_seqs_families) {
    const char *const *fams = FAMILIES;
    enum { NS = 3, T = 12 };
    for (int fi = 0; fi < N_FAMILIES; fi++) {
        char *dir;
        model m;
        llm_model lm;
        if (!family_bound(fams[fi], &dir, &m, &lm)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        slmc_err err = {{0}};
        const int V = (int)m.cfg.n_vocab;
        int32_t toks[NS * T];
        for (int i = 0; i < NS * T; i++) toks[i] = (int32_t)(3 + (i * 37 + i / T) % (V - 3));
        llm_context one, all;
        ck_assert(llm_context_init(&one, &lm, T, T, &err) == 0);
        ck_assert_msg(llm_context_init_seqs(&all, &lm, NS, T, &err) == 0, "%s", err.msg);
        float *want = malloc(sizeof(float) * (size_t)NS * T * V), *got = malloc(sizeof(float) * (size_t)NS * T * V);
        for (int sq = 0; sq < NS; sq++)
            ck_assert(llm_eval(&one, toks + sq * T, T, 0, want + (size_t)sq * T * V, &err) == 0);
        ck_assert_msg(llm_eval_seqs(&all, toks, NS, T, got, &err) == 0, "%s", err.msg);
        ck_assert_msg(memcmp(want, got, sizeof(float) * (size_t)NS * T * V) == 0, "%s: sequences together differ",
                      fams[fi]);
        /* two sequences of 7: each as its own llm_eval of 7 */
        ck_assert(llm_eval_seqs(&all, toks, 2, 7, got, &err) == 0);
        ck_assert(llm_eval(&one, toks + 7, 7, 0, want, &err) == 0);
        ck_assert_msg(memcmp(want, got + (size_t)7 * V, sizeof(float) * (size_t)7 * V) == 0, "%s: 2 x 7", fams[fi]);
        ck_assert_int_eq(llm_eval_seqs(&all, toks, NS + 1, T, got, &err), -1);
        ck_assert(strstr(err.msg, "sequences") != NULL);
        ck_assert_int_eq(llm_eval_seqs(&all, toks, 1, T + 1, got, &err), -1);
        llm_context_free(&one);
        llm_context_free(&all);
        free(want);
        free(got);
        family_close(dir, &m, &lm);
    }
    slmc_err err = {{0}};
    llm_context bad;
    ck_assert_int_eq(llm_context_init_seqs(&bad, NULL, 0, 4, &err), -1);
    ck_assert_int_eq(llm_context_init_seqs(&bad, NULL, 1 << 16, 1 << 16, &err), -1);
}
END_TEST

static int noop_layer_out(void *ud, int layer, const float *x, int n_tokens, int64_t n_embd) {
    (void)layer, (void)x, (void)n_embd;
    *(int *)ud += n_tokens;
    return 0;
}

/* A step that wants the logits of some rows only takes just those through the last layer (no
 * hooks set); the logits are those of the whole step, and the cache it leaves serves the next
 * step (all layers' K and V cached): for every family, sliding windows included. */
START_TEST(test_eval_rows_last_layer_trim) {
    const char *const *fams = FAMILIES;
    enum { T = 12 };
    for (int fi = 0; fi < N_FAMILIES; fi++) {
        char *dir;
        model m;
        llm_model lm;
        if (!family_bound(fams[fi], &dir, &m, &lm)) SKIP_TEST("tests/data/configs not found (run from the project root)");
        slmc_err err = {{0}};
        const int V = (int)m.cfg.n_vocab;
        int32_t toks[T];
        for (int i = 0; i < T; i++) toks[i] = (int32_t)(3 + (i * 41 + 7) % (V - 3));
        llm_context ctx;
        ck_assert(llm_context_init(&ctx, &lm, T, T, &err) == 0);
        float *want = malloc(sizeof(float) * (size_t)T * V), *got = malloc(sizeof(float) * (size_t)T * V);
        ck_assert(llm_eval(&ctx, toks, T, 0, want, &err) == 0); /* every row: nothing trimmed */
        /* rows 5..8 of the 12 */
        ck_assert(llm_eval_rows(&ctx, toks, T, 0, 5, 9, got, &err) == 0);
        ck_assert_msg(memcmp(want + (size_t)5 * V, got, sizeof(float) * 4 * (size_t)V) == 0, "%s: rows 5..8", fams[fi]);
        /* 8 tokens wanting the last row, then none, then 4 more at 8 wanting all: the same rows */
        ck_assert(llm_eval_rows(&ctx, toks, 8, 0, 7, 8, got, &err) == 0);
        ck_assert_msg(memcmp(want + (size_t)7 * V, got, sizeof(float) * (size_t)V) == 0, "%s: row 7", fams[fi]);
        ck_assert(llm_eval_rows(&ctx, toks, 8, 0, 3, 3, NULL, &err) == 0);
        ck_assert(llm_eval_rows(&ctx, toks + 8, 4, 8, 0, 4, got, &err) == 0);
        ck_assert_msg(memcmp(want + (size_t)8 * V, got, sizeof(float) * 4 * (size_t)V) == 0, "%s: continued", fams[fi]);
        /* with a hook watching, every row runs every layer: the hook sees all 12 in the last */
        int seen = 0;
        const llm_hooks hk = {.ud = &seen, .layer_out = noop_layer_out};
        llm_set_hooks(&ctx, &hk);
        ck_assert(llm_eval_rows(&ctx, toks, T, 0, 5, 9, got, &err) == 0);
        ck_assert_int_eq(seen, T * (int)m.cfg.n_layer);
        ck_assert(memcmp(want + (size_t)5 * V, got, sizeof(float) * 4 * (size_t)V) == 0);
        llm_context_free(&ctx);
        free(want);
        free(got);
        family_close(dir, &m, &lm);
    }
}
END_TEST

/* The teacher cache: the top-k of a row as a sort would give it (ties to the lower id) with the
 * rest's mass; written, finished, reopened: the same rows back; a sequence never written, a
 * file that is not a cache and a truncated one are refused naming the file; an unfinished
 * cache leaves no file. */
START_TEST(test_teacher_cache) {
    enum { V = 12, T = 3, K = 4, NSEQ = 5 };
    float logits[T * 14];
    for (int i = 0; i < T * 14; i++) logits[i] = (float)((i * 7919) % 23) * 0.25f - 2.0f;
    logits[5] = logits[9]; /* a tie */
    int32_t ids[K];
    float logp[K], rest;
    tcache_topk_row(logits, V, K, 2.0f, ids, logp, &rest);
    double lse = 0, mass = 0;
    for (int i = 0; i < V; i++) lse += exp(logits[i] / 2.0);
    lse = log(lse);
    for (int b = 0; b < K; b++) {
        for (int i = 0; i < V; i++) { /* nothing better left out, ties to the lower id */
            bool kept = false;
            for (int c = 0; c < K; c++) kept |= ids[c] == i;
            if (!kept) ck_assert(logits[i] < logits[ids[b]] || (logits[i] == logits[ids[b]] && i > ids[b]));
        }
        if (b > 0) ck_assert(logits[ids[b - 1]] >= logits[ids[b]]);
        ck_assert(fabs(logp[b] - (logits[ids[b]] / 2.0 - lse)) < 1e-6);
        mass += exp(logp[b]);
    }
    ck_assert(fabs(exp(rest) + mass - 1) < 1e-6);
    tcache_topk_row(logits, V, V, 2.0f, (int32_t[V]){0}, (float[V]){0}, &rest);
    ck_assert(isinf(rest) && rest < 0); /* every id kept: no rest */

    char *dir = tmpdir_make();
    char path[512], notcache[512];
    snprintf(path, sizeof path, "%s/cache.h5", dir);
    snprintf(notcache, sizeof notcache, "%s/plain.txt", dir);
    const teacher_cache_info info = {.k = K, .T = T, .V_shared = V, .n_seq = NSEQ, .n_tokens = 99, .n_vocab_teacher = 14,
                                     .tau = 2.0f, .data_hash = 0x1234};
    slmc_err err = {{0}};
    teacher_cache *c;
    /* unfinished: nothing left behind */
    ck_assert_msg(tcache_create(&c, path, &info, &err) == 0, "%s", err.msg);
    ck_assert(tcache_put(c, 1, logits, &err) == 0);
    tcache_close(c);
    ck_assert(access(path, F_OK) != 0);
    ck_assert(tcache_create(&c, path, &info, &err) == 0);
    ck_assert(tcache_put(c, 3, logits, &err) == 0);
    ck_assert(tcache_put(c, 3, logits, &err) == 0); /* again: kept as it was */
    ck_assert(tcache_put(c, NSEQ, logits, &err) != 0);
    ck_assert_msg(tcache_finish(c, &err) == 0, "%s", err.msg);
    ck_assert(tcache_open(&c, path, &err) == 0);
    const teacher_cache_info *in = tcache_info(c);
    ck_assert(in->k == K && in->T == T && in->V_shared == V && in->n_seq == NSEQ && in->tau == 2.0f &&
              in->data_hash == 0x1234 && in->n_tokens == 99 && in->n_vocab_teacher == 14);
    int32_t gids[T * K];
    float glogp[T * K], grest[T];
    ck_assert_msg(tcache_get(c, 3, gids, glogp, grest, &err) == 0, "%s", err.msg);
    for (int t = 0; t < T; t++) {
        tcache_topk_row(logits + t * 14, V, K, 2.0f, ids, logp, &rest);
        ck_assert(memcmp(gids + t * K, ids, sizeof ids) == 0 && memcmp(glogp + t * K, logp, sizeof logp) == 0);
        ck_assert(memcmp(&grest[t], &rest, sizeof rest) == 0);
    }
    ck_assert(tcache_get(c, 2, gids, glogp, grest, &err) != 0);
    ck_assert(strstr(err.msg, "cache.h5") && strstr(err.msg, "sequence 2"));
    tcache_close(c);
    FILE *f = fopen(notcache, "w");
    fputs("not HDF5\n", f);
    fclose(f);
    ck_assert(tcache_open(&c, notcache, &err) != 0 && strstr(err.msg, "plain.txt"));
    ck_assert(truncate(path, 200) == 0);
    ck_assert(tcache_open(&c, path, &err) != 0 && strstr(err.msg, "cache.h5"));
    tmpdir_remove(dir);
}
END_TEST

/* .txt, .gz, .zst and .jsonl of the same text give the same tokens. */
START_TEST(test_data_formats) {
    char *bin = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tokp = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    model m;
    slmc_err err = {{0}};
    model_open_opts mo = {.tokenizer = tokp};
    ck_assert(model_open(&m, bin, &mo, &err) == 0);
    tokenizer *tok;
    ck_assert(tokenizer_create(&tok, &m.kv, &err) == 0);
    const char *text = "Once upon a time there was a little girl.\nShe liked to play in the park.";
    size_t len = strlen(text);
    char *dir = tmpdir_make(), p[4][512];
    snprintf(p[0], 512, "%s/a.txt", dir);
    snprintf(p[1], 512, "%s/a.txt.gz", dir);
    snprintf(p[2], 512, "%s/a.txt.zst", dir);
    snprintf(p[3], 512, "%s/a.jsonl", dir);
    ck_assert(write_bytes(p[0], text, len) == 0);
    gzFile g = gzopen(p[1], "wb");
    ck_assert(gzwrite(g, text, (unsigned)len) == (int)len);
    gzclose(g);
    size_t cap = ZSTD_compressBound(len);
    char *z = malloc(cap);
    size_t zn = ZSTD_compress(z, cap, text, len, 3);
    ck_assert(!ZSTD_isError(zn));
    ck_assert(write_bytes(p[2], z, zn) == 0);
    const char *jl = "{\"text\": \"Once upon a time there was a little girl.\\nShe liked to play in the park.\"}\n"
                     "\n{\"text\": \"Once upon a time there was a little girl.\\nShe liked to play in the park.\"}\n";
    ck_assert(write_bytes(p[3], jl, strlen(jl)) == 0);
    train_data d[4];
    for (int i = 0; i < 4; i++) ck_assert_msg(data_load(&d[i], p[i], tok, 0, 2, &err) == 0, "%s", err.msg);
    ck_assert(d[0].n_tokens > 10 && d[0].tokens[0] == tokenizer_bos(tok));
    for (int i = 1; i < 3; i++) {
        ck_assert_uint_eq(d[i].n_tokens, d[0].n_tokens);
        ck_assert(memcmp(d[i].tokens, d[0].tokens, d[0].n_tokens * 4) == 0);
    }
    /* two documents: each starts with BOS */
    ck_assert_uint_eq(d[3].n_tokens, 2 * d[0].n_tokens);
    ck_assert(memcmp(d[3].tokens + d[0].n_tokens, d[0].tokens, d[0].n_tokens * 4) == 0);
    /* a bad JSON line names its line */
    ck_assert(write_bytes(p[3], "{\"text\": \"a\"}\n{\"txt\": 1}\n", 25) == 0);
    train_data bad;
    ck_assert(data_load(&bad, p[3], tok, 0, 2, &err) != 0);
    ck_assert_msg(strstr(err.msg, "line 2") != NULL, "%s", err.msg);
    /* truncated zstd is an error */
    ck_assert(write_bytes(p[2], z, zn - 3) == 0);
    ck_assert(data_load(&bad, p[2], tok, 0, 2, &err) != 0);
    for (int i = 0; i < 4; i++) data_free(&d[i]);
    free(z);
    tmpdir_remove(dir);
    tokenizer_free(tok);
    model_close(&m);
    free(bin);
    free(tokp);
}
END_TEST

/* ---- train_run: the whole command as a library call ---- */

/* What the hooks saw; the step hook raises the stop flag after step stop_at. */
typedef struct {
    int notes, steps, evals;
    int64_t stop_at;
    volatile sig_atomic_t stop;
} run_log;
static void log_note(void *user, const char *text) {
    run_log *l = user;
    ck_assert(text[0] && !strchr(text, '\n'));
    l->notes++;
}
static void log_step(void *user, const train_progress *p) {
    run_log *l = user;
    ck_assert(p->report.step > p->first_step && p->report.step <= p->steps && isfinite(p->report.loss));
    l->steps++;
    if (p->report.step == l->stop_at) l->stop = 1;
}
static void log_eval(void *user, int64_t step, double eval_loss) {
    run_log *l = user;
    ck_assert(step > 0 && isfinite(eval_loss));
    l->evals++;
}

/* stories260K on a slice of text: 6 steps in one go == 3 steps, stopped through the flag, then
 * --resume for the other 3; the exported files are byte-identical. */
START_TEST(test_train_run_stop_resume) {
    char *bin = SHARED_OR_SKIP("models/stories260K/stories260K.bin");
    char *tokp = SHARED_OR_SKIP("models/stories260K/tok512.bin");
    char *text = SHARED_OR_SKIP("text/tinyshakespeare.txt");
    char *dir = tmpdir_make(), full[512], part[512], ckpt[512], metrics[512];
    snprintf(full, sizeof full, "%s/full.gguf", dir);
    snprintf(part, sizeof part, "%s/part.gguf", dir);
    snprintf(ckpt, sizeof ckpt, "%s/part.h5", dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", dir);
    train_run_opts o;
    train_run_opts_default(&o);
    o.student = bin;
    o.tokenizer = tokp;
    o.data = text;
    o.max_tokens = 20000;
    o.train.steps = 6;
    o.train.seq_len = 32;
    o.train.batch = 2;
    o.train.warmup = 1;
    o.eval_every = 2;
    o.eval_seqs = 4;
    o.threads = 2;
    run_log log = {0};
    train_hooks hooks = {.user = &log, .note = log_note, .step = log_step, .eval = log_eval};
    train_result r;
    slmc_err err = {{0}};

    /* in one go, with a metrics file */
    o.output = full;
    o.metrics = metrics;
    ck_assert_msg(train_run(&o, &hooks, &r, &err) == 0, "%s", err.msg);
    ck_assert(!r.stopped && r.step == 6 && r.tokens == 6 * 2 * 32 && isfinite(r.loss) && isfinite(r.eval_loss));
    ck_assert(r.n_params > 0 && r.seconds >= 0);
    ck_assert_int_eq(log.steps, 6);
    ck_assert_int_eq(log.evals, 3); /* after steps 2 and 4, and at the end */
    ck_assert_int_eq(log.notes, 2); /* the token count, the parameter count */
    char want[600];
    snprintf(want, sizeof want, "%s.ckpt.h5", full);
    ck_assert_str_eq(r.checkpoint, want);
    train_result_free(&r);
    size_t n_metrics;
    char *m = (char *)slurp(metrics, &n_metrics);
    ck_assert_ptr_nonnull(m);
    int lines = 0;
    for (size_t i = 0; i < n_metrics; i++) lines += m[i] == '\n';
    ck_assert_int_eq(lines, 6 + 3);
    ck_assert(strstr(m, "\"eval_ppl\"") && strstr(m, "\"matmul_share\"") && !strstr(m, "\"kl\""));
    free(m);

    /* stopped after step 3 through the flag: a checkpoint, no export */
    memset(&log, 0, sizeof log);
    log.stop_at = 3;
    o.stop = &log.stop;
    o.output = part;
    o.metrics = NULL;
    o.checkpoint = ckpt;
    ck_assert_msg(train_run(&o, &hooks, &r, &err) == 0, "%s", err.msg);
    ck_assert(r.stopped && r.step == 3 && log.steps == 3);
    ck_assert_str_eq(r.checkpoint, ckpt);
    ck_assert(access(part, F_OK) != 0);
    train_result_free(&r);

    /* resumed: the other 3 steps, and the same bytes as in one go */
    memset(&log, 0, sizeof log);
    o.resume = ckpt;
    ck_assert_msg(train_run(&o, &hooks, &r, &err) == 0, "%s", err.msg);
    ck_assert(!r.stopped && r.step == 6 && r.tokens == 3 * 2 * 32 && log.steps == 3);
    train_result_free(&r);
    size_t n1, n2;
    uint8_t *b1 = slurp(full, &n1), *b2 = slurp(part, &n2);
    ck_assert(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);

    /* a missing text names itself; the result is still freed */
    o.resume = NULL;
    o.data = "/nonexistent/text.txt";
    ck_assert(train_run(&o, NULL, &r, &err) != 0);
    ck_assert_msg(strstr(err.msg, "/nonexistent/text.txt") != NULL, "%s", err.msg);
    train_result_free(&r);
    tmpdir_remove(dir);
    free(bin);
    free(tokp);
    free(text);
}
END_TEST

int main(void) {
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_schedule);
    tcase_add_test(tc, test_loss_decreases);
    tcase_add_test(tc, test_resume_bitwise);
    tcase_add_test(tc, test_threads_bitwise);
    tcase_add_test(tc, test_kernels_bitwise);
    tcase_add_test(tc, test_checkpoint_refuses_other_text);
    tcase_add_test(tc, test_forward_matches_engine);
    tcase_add_test(tc, test_forward_matches_engine_families);
    tcase_add_test(tc, test_eval_seqs_families);
    tcase_add_test(tc, test_eval_same_for_any_batch);
    tcase_add_test(tc, test_eval_rows_last_layer_trim);
    tcase_add_test(tc, test_teacher_cache);
    tcase_add_test(tc, test_lora_export_merged);
    tcase_add_test(tc, test_data_formats);
    tcase_add_test(tc, test_train_run_stop_resume);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
