/* cmd_distill.c - `slmc distill` (teacher -> student) and, through distill_cli_run, `slmc train`.
 *
 * Both commands are one library call, train_run (distill/train_run.h), which does the whole run.
 * Here: the options, the SIGINT/SIGTERM handlers, the progress line and the summary. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "distill/train_run.h"

int distill_cli_run(int argc, char **argv, bool with_teacher);

static const char *USAGE_DISTILL =
    "Usage: slmc distill (--teacher T | --teacher-cache F) --student S --data FILE -o OUT [options]\n"
    "\n"
    "Train the student S to match the teacher T's next-token distributions on FILE:\n"
    "loss = tau^2 D(teacher, student) at temperature tau, + alpha x cross-entropy on the text,\n"
    "D = KL(teacher || student) by default (--loss). The teacher runs in the inference engine\n"
    "(any model slmc evaluates, quantized GGUF too); when its vocabulary is larger, the ids the\n"
    "student has are compared. --save-teacher F keeps its top --top-k log-probabilities of every\n"
    "sequence drawn, so later runs (same --data, --seq-len, --seed, --temperature) can distil\n"
    "from F with --teacher-cache F and no teacher. Under 'mpirun -np N' (docs/mpi.md) the\n"
    "ranks share each step's --grad-accum micro-batches and write the same bytes as one process.\n";
static const char *USAGE_TRAIN =
    "Usage: slmc train --model M --data FILE -o OUT [options]\n"
    "\n"
    "Train or fine-tune M with cross-entropy on FILE. Under 'mpirun -np N' (docs/mpi.md) the\n"
    "ranks share each step's --grad-accum micro-batches and write the same bytes as one process.\n";
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
    "  --grad-accum K       micro-batches per step (default 1); a step has B x K sequences, its\n"
    "                       K micro-batches shared by the ranks under mpirun (the same result for\n"
    "                       any count; K >= ranks keeps every rank busy)\n"
    "  --lr X, --min-lr X   peak and final learning rate (default 3e-4, 3e-5)\n"
    "  --warmup N           linear warmup steps before the cosine decay (default 100, at most steps/10)\n"
    "  --weight-decay X     AdamW decoupled weight decay on matrices (default 0.1)\n"
    "  --clip X             global gradient-norm clip, 0 = off (default 1)\n"
    "  --seed S             data order (default 1)\n"
    "  --temperature X      distill: tau (default 2)\n"
    "  --alpha X            distill: weight of the cross-entropy term (default 0.5)\n"
    "  --loss D             distill: kl (default), reverse-kl, jsd or tvd\n"
    "  --jsd-beta B         distill: the teacher's weight in the JSD's mixture, 0 < B < 1 (default 0.5)\n"
    "  --reverse-kl         distill: the same as --loss reverse-kl\n"
    "  --save-teacher F     distill: also write the teacher's top-k per position to F (HDF5)\n"
    "  --top-k K            distill: ids per position in --save-teacher (default 64)\n"
    "  --teacher-cache F    distill: from a --save-teacher file instead of --teacher\n"
    "  --align-layers LIST  distill: also match hidden states, pairs S:T (comma-separated) of the\n"
    "                       student's residual stream after S layers and the teacher's after T, by\n"
    "                       mean squared error (through a learned projection when the widths differ)\n"
    "  --align-weight W     distill: weight of the hidden-state term (default 1)\n"
    "  --lora-rank R        train rank-R LoRA adapters on every block matrix, the model frozen,\n"
    "                       and export the merged model (default 0: train every weight)\n"
    "  --lora-alpha A       the adapters' scale is A / R (default A = R)\n"
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
    "  -t, --threads N      threads (under mpirun: of each rank; default: the cores / ranks)\n"
    "  -q, --quiet          no progress\n"
    "  -h, --help           this help\n";

typedef struct distill_args {
    cli_common c;
    const char *cmd;     /* "distill" or "train" */
    train_run_opts o;    /* everything train_run needs */
    int64_t log_every;   /* progress line every N steps */
    bool tty;            /* stderr is a terminal: the progress line redraws in place */
} distill_args;

static int parse(int argc, char **argv, distill_args *a, bool with_teacher) {
    const char *cmd = with_teacher ? "distill" : "train";
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    train_run_opts_default(&a->o);
    if (!with_teacher) a->o.train.alpha = 1.0f;
    a->log_every = 10;
    trainer_opts *t = &a->o.train;
    enum { O_TEACHER = 256, O_STUDENT, O_DATA, O_STEPS, O_SEQ, O_BATCH, O_ACCUM, O_LR, O_MINLR, O_WARMUP, O_WD,
           O_CLIP, O_SEED, O_TEMP, O_ALPHA, O_REV, O_VALID, O_EVAL, O_EVALSEQS, O_MAXTOK, O_CKPT, O_CKPTEVERY,
           O_RESUME, O_METRICS, O_LOG, O_OUTTYPE, O_TOK, O_LOSS, O_BETA, O_SAVE_T, O_TOPK, O_TCACHE, O_LORA_R,
           O_LORA_A, O_ALIGN, O_ALIGN_W };
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
        {"loss", required_argument, 0, O_LOSS}, {"jsd-beta", required_argument, 0, O_BETA},
        {"save-teacher", required_argument, 0, O_SAVE_T}, {"top-k", required_argument, 0, O_TOPK},
        {"teacher-cache", required_argument, 0, O_TCACHE}, {"lora-rank", required_argument, 0, O_LORA_R},
        {"lora-alpha", required_argument, 0, O_LORA_A}, {"align-layers", required_argument, 0, O_ALIGN},
        {"align-weight", required_argument, 0, O_ALIGN_W},
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
        case O_TEACHER: a->o.teacher = optarg; break;
        case O_STUDENT: a->o.student = optarg; break;
        case O_DATA: a->o.data = optarg; break;
        case O_STEPS: rc = cli_opt_i64(cmd, "--steps", optarg, 1, MAX_STEPS, &t->steps); break;
        case O_SEQ: rc = cli_opt_int(cmd, "--seq-len", optarg, 2, MAX_TOKENS_PER_SEQ, &t->seq_len); break;
        case O_BATCH: rc = cli_opt_int(cmd, "--batch", optarg, 1, 1 << 20, &t->batch); break;
        case O_ACCUM: rc = cli_opt_int(cmd, "--grad-accum", optarg, 1, 1 << 20, &t->grad_accum); break;
        case O_LR: rc = cli_opt_f32(cmd, "--lr", optarg, 0, 10, true, &t->lr); break;
        case O_MINLR: rc = cli_opt_f32(cmd, "--min-lr", optarg, 0, 10, false, &t->min_lr); break;
        case O_WARMUP: rc = cli_opt_i64(cmd, "--warmup", optarg, 0, MAX_STEPS, &t->warmup); break;
        case O_WD: rc = cli_opt_f32(cmd, "--weight-decay", optarg, 0, 10, false, &t->weight_decay); break;
        case O_CLIP: rc = cli_opt_f32(cmd, "--clip", optarg, 0, 1e9, false, &t->clip); break;
        case O_SEED: rc = cli_opt_u64(cmd, "--seed", optarg, &a->o.seed); break;
        case O_TEMP: rc = cli_opt_f32(cmd, "--temperature", optarg, 0, 1000, true, &t->temperature); break;
        case O_ALPHA: rc = cli_opt_f32(cmd, "--alpha", optarg, 0, 1e6, false, &t->alpha); break;
        case O_REV: t->loss = DISTILL_REVERSE_KL; break;
        case O_LOSS: {
            static const char *const names[] = {"kl", "reverse-kl", "jsd", "tvd"};
            int k = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, names[i]) == 0) k = i;
            if (k < 0) return cli_usage_error(cmd, "--loss must be kl, reverse-kl, jsd or tvd, not '%s'", optarg);
            t->loss = (distill_kind)k;
            break;
        }
        case O_BETA: rc = cli_opt_f32(cmd, "--jsd-beta", optarg, 0, 1, true, &t->jsd_beta); break;
        case O_SAVE_T: a->o.save_teacher = optarg; break;
        case O_TOPK: rc = cli_opt_int(cmd, "--top-k", optarg, 1, 1 << 20, &a->o.top_k); break;
        case O_TCACHE: a->o.teacher_cache = optarg; break;
        case O_LORA_R: rc = cli_opt_int(cmd, "--lora-rank", optarg, 0, 1 << 16, &a->o.lora_rank); break;
        case O_LORA_A: rc = cli_opt_f32(cmd, "--lora-alpha", optarg, 0, 1e6, true, &a->o.lora_alpha); break;
        case O_ALIGN: { /* S:T[,S:T...] */
            const char *p = optarg;
            t->n_align = 0;
            while (*p) {
                char *end;
                long s_l = strtol(p, &end, 10);
                if (end == p || *end != ':') return cli_usage_error(cmd, "--align-layers wants S:T pairs, not '%s'", optarg);
                p = end + 1;
                long t_l = strtol(p, &end, 10);
                if (end == p || (*end && *end != ',') || s_l < 1 || t_l < 1 || s_l > 1 << 20 || t_l > 1 << 20)
                    return cli_usage_error(cmd, "--align-layers wants S:T pairs of layer counts >= 1, not '%s'", optarg);
                if (t->n_align == TRAINER_MAX_ALIGN)
                    return cli_usage_error(cmd, "--align-layers takes at most %d pairs", TRAINER_MAX_ALIGN);
                t->align_s[t->n_align] = (int)s_l, t->align_t[t->n_align] = (int)t_l, t->n_align++;
                p = *end ? end + 1 : end;
            }
            break;
        }
        case O_ALIGN_W: rc = cli_opt_f32(cmd, "--align-weight", optarg, 0, 1e6, false, &t->align_weight); break;
        case O_VALID: rc = cli_opt_float(cmd, "--valid-frac", optarg, 0, 0.99, false, &a->o.valid_frac); break;
        case O_EVAL: rc = cli_opt_i64(cmd, "--eval-every", optarg, 0, MAX_STEPS, &a->o.eval_every); break;
        case O_EVALSEQS: rc = cli_opt_i64(cmd, "--eval-seqs", optarg, 1, 1 << 30, &a->o.eval_seqs); break;
        case O_MAXTOK: {
            uint64_t v;
            if ((rc = cli_opt_u64(cmd, "--max-tokens", optarg, &v)) == 0) a->o.max_tokens = (size_t)v;
            break;
        }
        case O_CKPT: a->o.checkpoint = optarg; break;
        case O_CKPTEVERY: rc = cli_opt_i64(cmd, "--checkpoint-every", optarg, 0, MAX_STEPS, &a->o.checkpoint_every); break;
        case O_RESUME: a->o.resume = optarg; break;
        case O_METRICS: a->o.metrics = optarg; break;
        case O_LOG: rc = cli_opt_i64(cmd, "--log-every", optarg, 1, MAX_STEPS, &a->log_every); break;
        case O_OUTTYPE:
            a->o.outtype = cli_parse_float_type(optarg);
            if (a->o.outtype < 0) return cli_usage_error(cmd, "--outtype must be f32, f16 or bf16, not '%s'", optarg);
            break;
        case O_TOK: a->o.tokenizer = optarg; break;
        case 'o': a->o.output = optarg; break;
        default:
            rc = cli_common_option(cmd, with_teacher ? USAGE_DISTILL : USAGE_TRAIN, ch, argv, &a->c);
            if (rc == CLI_HELP) fputs(USAGE_OPTIONS, stdout);
            break;
        }
        if (rc) return rc;
    }

    if (optind != argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (with_teacher && !a->o.teacher && !a->o.teacher_cache)
        return cli_usage_error(cmd, "--teacher T (or --teacher-cache F) is required");
    if (a->o.teacher && a->o.teacher_cache) return cli_usage_error(cmd, "--teacher and --teacher-cache exclude each other");
    if (a->o.save_teacher && !a->o.teacher) return cli_usage_error(cmd, "--save-teacher needs --teacher");
    if (t->n_align > 0 && !a->o.teacher) return cli_usage_error(cmd, "--align-layers needs a live --teacher");
    if (!with_teacher && (a->o.teacher || a->o.teacher_cache || a->o.save_teacher))
        return cli_usage_error(cmd, "train takes no teacher (use distill)");
    if (t->loss == DISTILL_JSD && !(t->jsd_beta > 0 && t->jsd_beta < 1))
        return cli_usage_error(cmd, "--jsd-beta must lie strictly between 0 and 1");
    if (!a->o.student) return cli_usage_error(cmd, with_teacher ? "--student S is required" : "--model M is required");
    if (!a->o.data) return cli_usage_error(cmd, "--data FILE is required");
    if (!a->o.output) return cli_usage_error(cmd, "-o OUT is required");
    return 0;
}

/* SIGINT / SIGTERM ask the run to checkpoint and stop after the current step (train_run polls
 * the flag); a second one ends the process at once, as it would have without the handler. */
static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
    if (stop_requested) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    stop_requested = 1;
}

/* ---- what train_run reports ---- */

static void on_note(void *user, const char *text) {
    const distill_args *a = user;
    cli_note(&a->c, "%s: %s", a->cmd, text);
}

/* The progress line: on the first step of the run, every --log-every steps and on the last. */
static void on_step(void *user, const train_progress *p) {
    const distill_args *a = user;
    const train_report *r = &p->report;
    if (a->c.quiet || !(r->step % a->log_every == 0 || r->step == p->steps || r->step == p->first_step + 1)) return;
    fprintf(stderr, "%s%s: step %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %.0fs%s", a->tty ? "\r\033[K" : "", a->cmd,
            (long long)r->step, (long long)p->steps, r->loss, r->lr, p->tokens_per_s, p->eta_seconds,
            a->tty ? "" : "\n");
    if (a->tty && r->step == p->steps) fputc('\n', stderr); /* the last line stays */
}

static void on_eval(void *user, int64_t step, double eval_loss) {
    const distill_args *a = user;
    if (!a->c.quiet)
        fprintf(stderr, "\n%s: step %lld eval loss %.4f ppl %.3f\n", a->cmd, (long long)step, eval_loss, exp(eval_loss));
}

static void print_json(const distill_args *a, const train_result *r) {
    json_t *o = json_object();
    json_object_set_new(o, "output", json_string(a->o.output));
    json_object_set_new(o, "checkpoint", json_string(r->checkpoint));
    json_object_set_new(o, "steps", json_integer(r->step));
    json_object_set_new(o, "tokens", json_integer(r->tokens));
    json_object_set_new(o, "loss", isfinite(r->loss) ? json_real(r->loss) : json_null());
    json_object_set_new(o, "eval_loss", isfinite(r->eval_loss) ? json_real(r->eval_loss) : json_null());
    json_object_set_new(o, "eval_ppl", isfinite(r->eval_loss) ? json_real(exp(r->eval_loss)) : json_null());
    json_object_set_new(o, "seconds", json_real(r->seconds));
    char *js = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (js) puts(js);
    free(js);
    json_decref(o);
}

int distill_cli_run(int argc, char **argv, bool with_teacher) {
    distill_args a;
    int prc = parse(argc, argv, &a, with_teacher);
    if (prc == CLI_HELP) return EXIT_OK;
    if (prc) return prc;
    cli_apply_threads(&a.c);
    a.o.threads = a.c.threads;
    a.o.stop = &stop_requested;
    a.o.comm = cli_job();
    a.tty = isatty(2);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    /* Under mpirun, SIGTERM is how mpirun ends the job when a rank died: the ranks left wait in
     * a collective that never completes, so it keeps main's handler (remove temporary files,
     * die); SIGINT to every rank still stops after a step with a checkpoint. */
    if (cli_job()->size == 1) sigaction(SIGTERM, &sa, NULL);

    const train_hooks hooks = {.user = &a, .note = on_note, .step = on_step, .eval = on_eval};
    train_result r;
    slmc_err err = {{0}};
    int rc = EXIT_OK;
    if (train_run(&a.o, &hooks, &r, &err) != 0) {
        rc = cli_error(&err);
    } else if (r.stopped) {
        if (a.tty && !a.c.quiet && cli_is_root()) fputc('\n', stderr);
        if (cli_is_root())
            fprintf(stderr, "%s: interrupted at step %lld; checkpoint in %s (continue with --resume %s)\n", a.cmd,
                    (long long)r.step, r.checkpoint, r.checkpoint);
        rc = 130;
    } else {
        cli_note(&a.c, "%s: wrote %s (checkpoint %s)", a.cmd, a.o.output, r.checkpoint);
        if (a.c.json) print_json(&a, &r);
    }
    train_result_free(&r);
    return rc;
}

int cmd_distill(int argc, char **argv) { return distill_cli_run(argc, argv, true); }
