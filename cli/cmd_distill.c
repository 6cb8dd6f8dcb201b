/* cmd_distill.c - `slmc distill` (teacher -> student) and, through distill_cli_run, `slmc train`.
 *
 * Both commands run the same loop (distill/trainer.h): open the student, read and tokenize the
 * text, optionally resume from a checkpoint, step, report, evaluate on the held-out split,
 * checkpoint every N steps and on SIGINT/SIGTERM, export the student at the end. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "distill/data.h"
#include "distill/model.h"
#include "distill/trainer.h"
#include "eval/llm.h"
#include "eval/tokenizer.h"
#include "formats/types.h"

int distill_cli_run(int argc, char **argv, bool with_teacher);

static const char *USAGE_DISTILL =
    "Usage: slmc distill --teacher T --student S --data FILE -o OUT [options]\n"
    "\n"
    "Train the student S to match the teacher T's next-token distributions on FILE:\n"
    "loss = tau^2 KL(teacher || student) at temperature tau, + alpha x cross-entropy on the text.\n"
    "The teacher runs in the inference engine (any model slmc evaluates, quantized GGUF too);\n"
    "when its vocabulary is larger, the ids the student has are compared.\n";
static const char *USAGE_TRAIN =
    "Usage: slmc train --model M --data FILE -o OUT [options]\n"
    "\n"
    "Train or fine-tune M with cross-entropy on FILE.\n";
static const char *USAGE_OPTIONS =
    "\n"
    "Data: FILE is .txt or .jsonl (field \"text\"), optionally .gz or .zst; tokenized with the\n"
    "student's tokenizer, packed into sequences of --seq-len, shuffled with --seed; the last\n"
    "--valid-frac of the sequences is held out for the evaluation perplexity.\n"
    "OUT: a .gguf file, or else a Hugging Face folder (config.json, safetensors, tokenizer).\n"
    "\n"
    "Options:\n"
    "  --steps N            optimizer steps (default 1000)\n"
    "  --seq-len T          tokens per sequence (default 256, at most the model's context)\n"
    "  --batch B            sequences per micro-batch (default 4)\n"
    "  --grad-accum K       micro-batches per step (default 1)\n"
    "  --lr X, --min-lr X   peak and final learning rate (default 3e-4, 3e-5)\n"
    "  --warmup N           linear warmup steps before the cosine decay (default 100, at most steps/10)\n"
    "  --weight-decay X     AdamW decoupled weight decay on matrices (default 0.1)\n"
    "  --clip X             global gradient-norm clip, 0 = off (default 1)\n"
    "  --seed S             data order (default 1)\n"
    "  --temperature X      distill: tau (default 2)\n"
    "  --alpha X            distill: weight of the cross-entropy term (default 0.5)\n"
    "  --reverse-kl         distill: KL(student || teacher) instead\n"
    "  --valid-frac X       held-out share of the sequences (default 0.02)\n"
    "  --eval-every N       evaluate every N steps and at the end (default 100, 0 = only at the end)\n"
    "  --eval-seqs N        held-out sequences per evaluation (default 32, 0 = all)\n"
    "  --max-tokens N       read only about N tokens of FILE\n"
    "  --checkpoint F       checkpoint file (HDF5; default OUT.ckpt.h5)\n"
    "  --checkpoint-every N also every N steps (default 0: only on SIGINT/SIGTERM and at the end)\n"
    "  --resume F           continue from checkpoint F (same model, data and options)\n"
    "  --metrics F          append one JSON line per step (and per evaluation) to F\n"
    "  --log-every N        progress line every N steps (default 10)\n"
    "  --outtype T          f32 (default), f16 or bf16 for the exported matrices\n"
    "  --tokenizer FILE     tokenizer.bin or tokenizer.model (llama2.c student or teacher)\n"
    "  -o, --output OUT     exported model\n"
    "  --json               a JSON summary on stdout at the end: output, checkpoint, steps,\n"
    "                       tokens, loss, eval_loss, eval_ppl, seconds\n"
    "  -t, --threads N      threads\n"
    "  -q, --quiet          no progress\n"
    "  -h, --help           this help\n";

typedef struct distill_args {
    cli_common c;
    bool with_teacher;
    const char *teacher, *student, *data, *out, *checkpoint, *resume, *metrics, *tokenizer;
    trainer_opts o;
    uint64_t seed;
    double valid_frac;
    int64_t eval_every, eval_seqs, checkpoint_every, log_every;
    size_t max_tokens;
    int outtype;
} distill_args;

static int parse(int argc, char **argv, distill_args *a, bool with_teacher) {
    const char *cmd = with_teacher ? "distill" : "train";
    memset(a, 0, sizeof *a);
    a->with_teacher = with_teacher;
    trainer_opts_default(&a->o);
    if (!with_teacher) a->o.alpha = 1.0f;
    a->seed = 1;
    a->valid_frac = 0.02;
    a->eval_every = 100;
    a->eval_seqs = 32;
    a->log_every = 10;
    a->outtype = GGML_TYPE_F32;
    enum { O_TEACHER = 256, O_STUDENT, O_DATA, O_STEPS, O_SEQ, O_BATCH, O_ACCUM, O_LR, O_MINLR, O_WARMUP, O_WD,
           O_CLIP, O_SEED, O_TEMP, O_ALPHA, O_REV, O_VALID, O_EVAL, O_EVALSEQS, O_MAXTOK, O_CKPT, O_CKPTEVERY,
           O_RESUME, O_METRICS, O_LOG, O_OUTTYPE, O_TOK };
    static const struct option opts[] = {
        {"teacher", required_argument, 0, O_TEACHER}, {"student", required_argument, 0, O_STUDENT},
        {"model", required_argument, 0, O_STUDENT}, {"data", required_argument, 0, O_DATA},
        {"steps", required_argument, 0, O_STEPS}, {"seq-len", required_argument, 0, O_SEQ},
        {"batch", required_argument, 0, O_BATCH}, {"grad-accum", required_argument, 0, O_ACCUM},
        {"lr", required_argument, 0, O_LR}, {"min-lr", required_argument, 0, O_MINLR},
        {"warmup", required_argument, 0, O_WARMUP}, {"weight-decay", required_argument, 0, O_WD},
        {"clip", required_argument, 0, O_CLIP}, {"seed", required_argument, 0, O_SEED},
        {"temperature", required_argument, 0, O_TEMP}, {"alpha", required_argument, 0, O_ALPHA},
        {"reverse-kl", no_argument, 0, O_REV}, {"valid-frac", required_argument, 0, O_VALID},
        {"eval-every", required_argument, 0, O_EVAL}, {"eval-seqs", required_argument, 0, O_EVALSEQS},
        {"max-tokens", required_argument, 0, O_MAXTOK}, {"checkpoint", required_argument, 0, O_CKPT},
        {"checkpoint-every", required_argument, 0, O_CKPTEVERY}, {"resume", required_argument, 0, O_RESUME},
        {"metrics", required_argument, 0, O_METRICS}, {"log-every", required_argument, 0, O_LOG},
        {"outtype", required_argument, 0, O_OUTTYPE}, {"tokenizer", required_argument, 0, O_TOK},
        {"output", required_argument, 0, 'o'}, CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    /* the command's own options accept at most these (a day's training is far below) */
    const long long MAX_STEPS = 1000000000000LL, MAX_TOKENS_PER_SEQ = 1 << 20;
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case O_TEACHER: a->teacher = optarg; break;
        case O_STUDENT: a->student = optarg; break;
        case O_DATA: a->data = optarg; break;
        case O_STEPS: rc = cli_opt_i64(cmd, "--steps", optarg, 1, MAX_STEPS, &a->o.steps); break;
        case O_SEQ: rc = cli_opt_int(cmd, "--seq-len", optarg, 2, MAX_TOKENS_PER_SEQ, &a->o.seq_len); break;
        case O_BATCH: rc = cli_opt_int(cmd, "--batch", optarg, 1, 1 << 20, &a->o.batch); break;
        case O_ACCUM: rc = cli_opt_int(cmd, "--grad-accum", optarg, 1, 1 << 20, &a->o.grad_accum); break;
        case O_LR: rc = cli_opt_f32(cmd, "--lr", optarg, 0, 10, true, &a->o.lr); break;
        case O_MINLR: rc = cli_opt_f32(cmd, "--min-lr", optarg, 0, 10, false, &a->o.min_lr); break;
        case O_WARMUP: rc = cli_opt_i64(cmd, "--warmup", optarg, 0, MAX_STEPS, &a->o.warmup); break;
        case O_WD: rc = cli_opt_f32(cmd, "--weight-decay", optarg, 0, 10, false, &a->o.weight_decay); break;
        case O_CLIP: rc = cli_opt_f32(cmd, "--clip", optarg, 0, 1e9, false, &a->o.clip); break;
        case O_SEED: rc = cli_opt_u64(cmd, "--seed", optarg, &a->seed); break;
        case O_TEMP: rc = cli_opt_f32(cmd, "--temperature", optarg, 0, 1000, true, &a->o.temperature); break;
        case O_ALPHA: rc = cli_opt_f32(cmd, "--alpha", optarg, 0, 1e6, false, &a->o.alpha); break;
        case O_REV: a->o.reverse_kl = true; break;
        case O_VALID: rc = cli_opt_float(cmd, "--valid-frac", optarg, 0, 0.99, false, &a->valid_frac); break;
        case O_EVAL: rc = cli_opt_i64(cmd, "--eval-every", optarg, 0, MAX_STEPS, &a->eval_every); break;
        case O_EVALSEQS: rc = cli_opt_i64(cmd, "--eval-seqs", optarg, 1, 1 << 30, &a->eval_seqs); break;
        case O_MAXTOK: {
            uint64_t v;
            if ((rc = cli_opt_u64(cmd, "--max-tokens", optarg, &v)) == 0) a->max_tokens = (size_t)v;
            break;
        }
        case O_CKPT: a->checkpoint = optarg; break;
        case O_CKPTEVERY: rc = cli_opt_i64(cmd, "--checkpoint-every", optarg, 0, MAX_STEPS, &a->checkpoint_every); break;
        case O_RESUME: a->resume = optarg; break;
        case O_METRICS: a->metrics = optarg; break;
        case O_LOG: rc = cli_opt_i64(cmd, "--log-every", optarg, 1, MAX_STEPS, &a->log_every); break;
        case O_OUTTYPE:
            a->outtype = cli_parse_float_type(optarg);
            if (a->outtype < 0) return cli_usage_error(cmd, "--outtype must be f32, f16 or bf16, not '%s'", optarg);
            break;
        case O_TOK: a->tokenizer = optarg; break;
        case 'o': a->out = optarg; break;
        default:
            rc = cli_common_option(cmd, with_teacher ? USAGE_DISTILL : USAGE_TRAIN, ch, argv, &a->c);
            if (rc == CLI_HELP) fputs(USAGE_OPTIONS, stdout);
            break;
        }
        if (rc) return rc;
    }

    if (optind != argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (with_teacher && !a->teacher) return cli_usage_error(cmd, "--teacher T is required");
    if (!with_teacher && a->teacher) return cli_usage_error(cmd, "train takes no teacher (use distill)");
    if (!a->student) return cli_usage_error(cmd, with_teacher ? "--student S is required" : "--model M is required");
    if (!a->data) return cli_usage_error(cmd, "--data FILE is required");
    if (!a->out) return cli_usage_error(cmd, "-o OUT is required");
    return 0;
}

/* SIGINT / SIGTERM ask the loop to checkpoint and stop after the current step. */
static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void metrics_line(FILE *f, json_t *o) {
    if (f) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (s) {
            fprintf(f, "%s\n", s);
            fflush(f);
            free(s);
        }
    }
    json_decref(o);
}

static int evaluate(trainer *tr, const distill_args *a, FILE *mf, double *eval_loss, slmc_err *err) {
    double ce;
    if (trainer_eval(tr, a->eval_seqs, &ce, err) != 0) return -1;
    *eval_loss = ce;
    if (!a->c.quiet) fprintf(stderr, "\n%s: step %lld eval loss %.4f ppl %.3f\n", a->with_teacher ? "distill" : "train",
                             (long long)tr->step, ce, exp(ce));
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer(tr->step));
    json_object_set_new(o, "eval_loss", json_real(ce));
    json_object_set_new(o, "eval_ppl", json_real(exp(ce)));
    metrics_line(mf, o);
    return 0;
}

int distill_cli_run(int argc, char **argv, bool with_teacher) {
    distill_args a;
    int prc = parse(argc, argv, &a, with_teacher);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    const char *cmd = with_teacher ? "distill" : "train";
    slmc_err err = {{0}};
    int rc = EXIT_ERROR;
    model sm, tmv;
    bool sm_open = false, tmv_open = false, lm_open = false, tm_open = false, tr_open = false;
    llm_model tlm;
    train_model tm;
    train_data data;
    memset(&data, 0, sizeof data);
    trainer tr;
    tokenizer *tok = NULL;
    FILE *mf = NULL;
    char *ckpt_default = NULL;

    if (cli_open_model(&sm, a.student, a.tokenizer, &err) != 0) { cli_error(&err); goto done; }
    sm_open = true;
    if (tm_init_from_model(&tm, &sm, &err) != 0) { cli_error(&err); goto done; }
    tm_open = true;
    if (sm.cfg.n_ctx_train > 0 && a.o.seq_len > sm.cfg.n_ctx_train)
        cli_note(&a.c, "%s: note: --seq-len %d is past the model's context of %lld", cmd, a.o.seq_len,
                 (long long)sm.cfg.n_ctx_train);
    if (a.teacher) {
        if (cli_open_model(&tmv, a.teacher, a.tokenizer, &err) != 0) { cli_error(&err); goto done; }
        tmv_open = true;
        if (llm_model_init(&tlm, &tmv, &err) != 0) { slmc_fail_prefix(&err, a.teacher); cli_error(&err); goto done; }
        lm_open = true;
        if (tlm.n_vocab != tm.cfg.n_vocab)
            cli_note(&a.c, "%s: teacher vocabulary %lld, student %d: comparing the first %lld ids", cmd,
                     (long long)tlm.n_vocab, tm.cfg.n_vocab,
                     (long long)(tlm.n_vocab < tm.cfg.n_vocab ? tlm.n_vocab : tm.cfg.n_vocab));
    }
    if (!meta_get_str(&sm.kv, "tokenizer.ggml.model")) {
        slmc_fail(&err, a.student, "has no tokenizer; training needs one to read the text");
        cli_error(&err);
        goto done;
    }
    if (tokenizer_create(&tok, &sm.kv, &err) != 0) { slmc_fail_prefix(&err, a.student); cli_error(&err); goto done; }
    double t_tok = cli_now();
    if (data_load(&data, a.data, tok, a.max_tokens, &err) != 0) { cli_error(&err); goto done; } /* names the file */
    if (data_split(&data, a.o.seq_len, a.valid_frac, a.seed, &err) != 0) {
        slmc_fail_prefix(&err, a.data);
        cli_error(&err);
        goto done;
    }
    cli_note(&a.c, "%s: %zu tokens in %.1fs: %lld training and %lld held-out sequences of %d", cmd, data.n_tokens,
             cli_now() - t_tok, (long long)data.n_train, (long long)data.n_valid, a.o.seq_len);
    if (trainer_init(&tr, &a.o, &tm, &data, a.teacher ? &tlm : NULL, &err) != 0) { cli_error(&err); goto done; }
    tr_open = true;
    if (a.resume) {
        if (trainer_load(&tr, a.resume, &err) != 0) { cli_error(&err); goto done; }
        cli_note(&a.c, "%s: resumed from %s at step %lld", cmd, a.resume, (long long)tr.step);
    }
    const char *ckpt = a.checkpoint;
    if (!ckpt) {
        size_t n = strlen(a.out) + 16;
        ckpt_default = malloc(n);
        if (!ckpt_default) { slmc_fail(&err, NULL, "out of memory"); cli_error(&err); goto done; }
        snprintf(ckpt_default, n, "%s.ckpt.h5", a.out);
        ckpt = ckpt_default;
    }
    if (a.metrics && !(mf = fopen(a.metrics, "a"))) {
        slmc_fail(&err, a.metrics, "cannot open for appending");
        cli_error(&err);
        goto done;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    cli_note(&a.c, "%s: %zu parameters, %lld steps of %d x %d x %d tokens", cmd, tm.n_params, (long long)a.o.steps,
             a.o.grad_accum, a.o.batch, a.o.seq_len);
    const bool tty = isatty(2);
    const double t0 = cli_now();
    const int64_t first = tr.step;
    int64_t tokens_done = 0;
    double last_loss = NAN, eval_loss = NAN; /* for --json */
    while (tr.step < a.o.steps && !stop_requested) {
        train_report r;
        if (trainer_step(&tr, &r, &err) != 0) { cli_error(&err); goto done; }
        tokens_done += r.tokens;
        last_loss = r.loss;
        double el = cli_now() - t0, tps = tokens_done / (el > 0 ? el : 1e-9);
        double eta = el / (double)(tr.step - first) * (double)(a.o.steps - tr.step);
        if (!a.c.quiet && (tr.step % a.log_every == 0 || tr.step == a.o.steps || tr.step == first + 1))
            fprintf(stderr, "%s%s: step %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %.0fs%s", tty ? "\r\033[K" : "", cmd,
                    (long long)tr.step, (long long)a.o.steps, r.loss, r.lr, tps, eta, tty ? "" : "\n");
        json_t *o = json_object();
        json_object_set_new(o, "step", json_integer(r.step));
        json_object_set_new(o, "loss", json_real(r.loss));
        json_object_set_new(o, "ce", json_real(r.ce));
        if (a.teacher) json_object_set_new(o, "kl", json_real(r.kl));
        json_object_set_new(o, "lr", json_real(r.lr));
        json_object_set_new(o, "grad_norm", json_real(r.grad_norm));
        json_object_set_new(o, "tokens_per_s", json_real(tps));
        json_object_set_new(o, "seconds", json_real(el));
        /* share of the student's forward + backward spent in matrix products */
        json_object_set_new(o, "matmul_share", json_real(tm.sec_graph > 0 ? tm.sec_matmul / tm.sec_graph : 0));
        metrics_line(mf, o);
        if (a.eval_every > 0 && tr.step % a.eval_every == 0 && tr.step < a.o.steps && data.n_valid > 0 &&
            evaluate(&tr, &a, mf, &eval_loss, &err) != 0) { cli_error(&err); goto done; }
        if (a.checkpoint_every > 0 && tr.step % a.checkpoint_every == 0 && tr.step < a.o.steps) {
            if (trainer_save(&tr, ckpt, &err) != 0) { cli_error(&err); goto done; }
        }
    }
    if (tty && !a.c.quiet) fputc('\n', stderr);
    if (stop_requested) {
        if (trainer_save(&tr, ckpt, &err) != 0) { cli_error(&err); goto done; }
        fprintf(stderr, "%s: interrupted at step %lld; checkpoint in %s (continue with --resume %s)\n", cmd,
                (long long)tr.step, ckpt, ckpt);
        rc = 130;
        goto done;
    }
    if (data.n_valid > 0 && evaluate(&tr, &a, mf, &eval_loss, &err) != 0) { cli_error(&err); goto done; }
    if (trainer_save(&tr, ckpt, &err) != 0) { cli_error(&err); goto done; }
    if (tm_export(&tm, &sm, a.out, a.outtype, &err) != 0) { cli_error(&err); goto done; }
    cli_note(&a.c, "%s: wrote %s (checkpoint %s)", cmd, a.out, ckpt);
    if (a.c.json) {
        json_t *o = json_object();
        json_object_set_new(o, "output", json_string(a.out));
        json_object_set_new(o, "checkpoint", json_string(ckpt));
        json_object_set_new(o, "steps", json_integer(tr.step));
        json_object_set_new(o, "tokens", json_integer(tokens_done));
        json_object_set_new(o, "loss", isfinite(last_loss) ? json_real(last_loss) : json_null());
        json_object_set_new(o, "eval_loss", isfinite(eval_loss) ? json_real(eval_loss) : json_null());
        json_object_set_new(o, "eval_ppl", isfinite(eval_loss) ? json_real(exp(eval_loss)) : json_null());
        json_object_set_new(o, "seconds", json_real(cli_now() - t0));
        char *js = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (js) puts(js);
        free(js);
        json_decref(o);
    }
    rc = EXIT_OK;
done:
    if (mf) fclose(mf);
    free(ckpt_default);
    if (tr_open) trainer_free(&tr);
    data_free(&data);
    tokenizer_free(tok);
    if (tm_open) tm_free(&tm);
    if (lm_open) llm_model_free(&tlm);
    if (tmv_open) model_close(&tmv);
    if (sm_open) model_close(&sm);
    return rc;
}

int cmd_distill(int argc, char **argv) { return distill_cli_run(argc, argv, true); }
