/* fuzz_recipe.c - libFuzzer harness for the pipeline's recipe parser (pipeline/recipe.h).
 *
 * Link it with pipeline/recipe.c, formats/error.c, formats/fileio.c and libyaml (pkg-config
 * yaml-0.1, in run.sh's PKGS).
 * Any input must parse or fail with a "FILE:LINE: ..." message, never crash or leak; a parsed
 * recipe is walked through every query the pipeline makes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pipeline/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    recipe r;
    slmc_err err = {{0}};
    if (recipe_parse(&r, "fuzz/r.yaml", (const char *)data, size, &err) != 0) {
        /* every failure carries a message naming the file */
        if (strncmp(err.msg, "fuzz/r.yaml", 11) != 0) __builtin_trap();
        return 0;
    }
    for (int i = 0; i < r.n_variants; i++) {
        const recipe_variant *v = &r.variants[i];
        const recipe_opt *types = recipe_variant_types(v);
        for (int t = 0; types && t < types->n_values; t++)
            if (!recipe_gates_for(v, types->values[t])) __builtin_trap();
        const recipe_step *ev = recipe_variant_eval(&r, v);
        if (ev && !recipe_step_value(ev, "text")) __builtin_trap(); /* eval always has its text */
        for (int s = 0; s < v->n_steps; s++)
            for (int o = 0; o < v->steps[s].n_opts; o++)
                if (v->steps[s].opts[o].n_values < 1) __builtin_trap();
    }
    recipe_free(&r);
    return 0;
}
