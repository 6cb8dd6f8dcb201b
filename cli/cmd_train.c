/* cmd_train.c - `slmc train --model M --data FILE -o OUT`: the distillation loop with no
 * teacher, cross-entropy only (training from a model's weights, or fine-tuning). The options,
 * checkpoints and export are those of cmd_distill.c, which runs both. */
#include <stdbool.h>

#include "cli.h"

/* In cmd_distill.c: the shared command line and loop. */
int distill_cli_run(int argc, char **argv, bool with_teacher);

int cmd_train(int argc, char **argv) { return distill_cli_run(argc, argv, false); }
