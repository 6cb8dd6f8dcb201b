/* cmd_synth.c - `slmc synth (--shape NAME | --config config.json) -o DIR`: a deterministic
 * synthetic Llama checkpoint of a real shape, for benchmarks and tests at scale. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "formats/synth.h"
#include "codec/types.h"

static void usage(void) {
    printf("Usage: slmc synth (--shape NAME | --config config.json) -o DIR [options]\n"
           "\n"
           "Write a Hugging Face checkpoint folder (config.json, safetensors, a made-up\n"
           "SentencePiece vocabulary) with deterministic synthetic weights of realistic\n"
           "statistics: per-matrix scales, a few outlier input channels, norms near 1.\n"
           "The same options give byte-identical output for any thread count.\n"
           "\n"
           "Options:\n"
           "  --shape NAME       built-in shape:");
    for (int i = 0; synth_shape_name(i); i++) printf(" %s", synth_shape_name(i));
    printf("\n"
           "  --config FILE      take the shape from a Hugging Face config.json instead\n"
           "  -o, --output DIR   output folder (written atomically)\n"
           "  --dtype T          f16 (default), bf16 or f32\n"
           "  --seed N           random seed (default %d)\n"
           "  --shard-size SIZE  start a new safetensors shard past SIZE (default 5GB)\n"
           "  --json             print a JSON summary on stdout\n"
           "  -t, --threads N    threads\n"
           "  -q, --quiet        no progress or notes\n"
           "  -h, --help         this help\n",
           SYNTH_DEFAULT_SEED);
}

int cmd_synth(int argc, char **argv) {
    cli_common c = {0};
    synth_opts o;
    synth_opts_init(&o);
    const char *out = NULL;
    static const struct option opts[] = {
        {"shape", required_argument, 0, 'S'}, {"config", required_argument, 0, 'C'},
        {"output", required_argument, 0, 'o'}, {"dtype", required_argument, 0, 'd'},
        {"seed", required_argument, 0, 's'}, {"shard-size", required_argument, 0, 'z'},
        CLI_COMMON_OPTIONS, {0, 0, 0, 0},
    };
    int ch, rc;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "o:" CLI_COMMON_SHORT, opts, NULL)) != -1) {
        rc = 0;
        switch (ch) {
        case 'S': o.shape = optarg; break;
        case 'C': o.config = optarg; break;
        case 'o': out = optarg; break;
        case 'd':
            o.dtype = cli_parse_float_type(optarg);
            if (o.dtype < 0) return cli_usage_error("synth", "--dtype must be f16, bf16 or f32, not '%s'", optarg);
            break;
        case 's': rc = cli_opt_u64("synth", "--seed", optarg, &o.seed); break;
        case 'z': rc = cli_opt_size("synth", "--shard-size", optarg, 1, &o.shard_size); break;
        case 'h': usage(); return EXIT_OK;
        default: rc = cli_common_option("synth", "", ch, argv, &c); break;
        }
        if (rc) return rc;
    }
    if (optind != argc) return cli_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_usage_error("synth", "missing -o DIR");
    if (!o.shape == !o.config) return cli_usage_error("synth", "give exactly one of --shape and --config");
    cli_apply_threads(&c);
    slmc_err err = {{0}};
    cli_progress prog;
    cli_progress_init(&prog, &c, "synth");
    slmc_progress hook = cli_progress_hook(&prog);
    double t0 = cli_now();
    rc = synth_write(&o, out, &hook, &err);
    cli_progress_done(&prog);
    if (rc != 0) return cli_error(&err);
    double secs = cli_now() - t0;
    if (c.json) {
        json_t *j = json_object();
        json_object_set_new(j, "output", json_string(out));
        json_object_set_new(j, "shape", json_string(o.shape ? o.shape : o.config));
        json_object_set_new(j, "dtype", json_string(type_name(o.dtype)));
        json_object_set_new(j, "seed", json_integer((json_int_t)o.seed));
        json_object_set_new(j, "seconds", json_real(secs));
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(j);
    } else {
        cli_note(&c, "wrote %s in %.2fs", out, secs);
    }
    return EXIT_OK;
}
