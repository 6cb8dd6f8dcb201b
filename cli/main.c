/* main.c - `slmc COMMAND ...`: dispatch to the commands. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/fileio.h"

/* SIGINT / SIGTERM / SIGHUP: remove temporary outputs, then die of the same signal. */
static void on_signal(int sig) {
    fileio_remove_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The commands that split their work over the ranks of an mpirun job (docs/mpi.md); any other
 * refuses to start with more than one rank, since every rank would write the same files. */
static const char *const PARALLEL[] = {"train", "distill", "imatrix", "eval", "quantize", "prune"};

static bool runs_parallel(const char *cmd) {
    for (size_t i = 0; i < sizeof PARALLEL / sizeof *PARALLEL; i++)
        if (strcmp(PARALLEL[i], cmd) == 0) return true;
    return false;
}

/* Join the mpirun job if there is one, run the command, leave the job. */
static int run_command(const cli_command *c, int argc, char **argv) {
    comm *job = cli_job();
    slmc_err err = {{0}};
    if (comm_init(job, &argc, &argv, &err) != 0) {
        fprintf(stderr, "slmc: %s\n", err.msg);
        return EXIT_ERROR;
    }
    int rc;
    if (job->size > 1 && !runs_parallel(c->name)) {
        if (job->rank == 0)
            fprintf(stderr, "slmc: %s does not run under mpirun with %d ranks (train, distill, imatrix, eval, "
                            "quantize and prune do); start it as one process\n",
                    c->name, job->size);
        rc = EXIT_USAGE;
    } else {
        /* results are printed once, by rank 0 */
        if (job->rank != 0 && !freopen("/dev/null", "w", stdout)) {
            fprintf(stderr, "slmc: rank %d: cannot silence its output\n", job->rank);
            rc = EXIT_ERROR;
        } else
            rc = c->run(argc, argv);
    }
    fflush(stdout);
    comm_finalize(job);
    return rc;
}

static const cli_command COMMANDS[] = {
    {"inspect", "show a model's architecture, tokenizer and tensors (headers only)", cmd_inspect},
    {"convert", "convert between Hugging Face safetensors, GGUF and llama2.c (input)", cmd_convert},
    {"quantize", "quantize to GGUF types and llama.cpp's mixes (Q2_K .. Q8_0), several at once", cmd_quantize},
    {"prune", "structured pruning of heads, FFN channels, layers and hidden width", cmd_prune},
    {"imatrix", "importance matrix as llama-imatrix (.dat / GGUF): collect, merge, convert", cmd_imatrix},
    {"eval", "perplexity, KL divergence and top-token agreement, as llama-perplexity", cmd_eval},
    {"generate", "continue a prompt, streaming tokens to stdout", cmd_generate},
    {"train", "train or fine-tune a model with cross-entropy (checkpoints, resume, GGUF/HF export)", cmd_train},
    {"distill", "teacher-student distillation: KL with temperature + alpha * cross-entropy", cmd_distill},
    {"pipeline", "run a compression recipe: cached steps, quality gates, reports", cmd_pipeline},
    {"synth", "write a deterministic synthetic Llama checkpoint of a real shape", cmd_synth},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof *COMMANDS)

static void print_help(FILE *out) {
    fprintf(out,
            "slmc %s - model compression for small language models\n\n"
            "Usage: slmc COMMAND [options]\n\nCommands:\n",
            SLMC_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(out, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out,
            "\nEvery command takes --help. Common options: --json (machine-readable output),\n"
            "-t/--threads N, -q/--quiet. Errors print 'slmc: PATH: what is wrong' and exit 1;\n"
            "usage errors exit 2.\n");
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2 && strcmp(cmd, "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(COMMANDS[i].name, argv[2]) == 0) {
                    char *sub[] = {argv[2], "--help", NULL};
                    return COMMANDS[i].run(2, sub);
                }
            fprintf(stderr, "slmc: unknown command '%s'\n", argv[2]);
            return EXIT_USAGE;
        }
        print_help(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("slmc %s (%s MPI)\n", SLMC_VERSION, comm_built_with_mpi() ? "with" : "without");
        return EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, cmd) == 0) return run_command(&COMMANDS[i], argc - 1, argv + 1);
    fprintf(stderr, "slmc: unknown command '%s'\nTry 'slmc help'.\n", cmd);
    return EXIT_USAGE;
}
