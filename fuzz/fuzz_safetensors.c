/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader.
 *
 * Any input is parsed as one safetensors image. Whatever st_parse_buffer accepts must be
 * safe to use: every tensor's bytes are read (so ASan catches a range outside the input)
 * and every name is looked up again. Seeds: fuzz/seeds/safetensors/. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_model m;
    slmc_err err;
    if (st_parse_buffer(&m, data, size, "fuzz.safetensors", &err) == 0) {
        volatile uint8_t sink = 0;
        for (uint64_t i = 0; i < m.n_tensors; i++) {
            const st_tensor *t = &m.tensors[i];
            if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
            if (st_find(&m, t->name) < 0) __builtin_trap();
        }
        (void)sink;
    } else if (err.msg[0] == '\0') {
        __builtin_trap(); /* a failure must say why */
    }
    st_close(&m);
    return 0;
}
