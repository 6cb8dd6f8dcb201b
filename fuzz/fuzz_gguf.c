/* fuzz_gguf.c - libFuzzer harness for the GGUF reader.
 *
 * Any byte string must either parse or fail with a message; never crash, leak or read outside
 * the buffer. Built by fuzz/run.sh with -fsanitize=fuzzer,address,undefined.
 */
#include <stddef.h>
#include <stdint.h>

#include "formats/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file f;
    slmc_err err;
    if (gguf_parse_buffer(&f, data, size, "fuzz.gguf", &err) == 0) {
        /* touch every tensor's bytes so a bad range would be caught by ASan */
        volatile uint8_t sink = 0;
        for (uint64_t i = 0; i < f.n_tensors; i++) {
            const uint8_t *p = gguf_tensor_data(&f, i);
            if (f.tensors[i].nbytes) sink ^= p[0] ^ p[f.tensors[i].nbytes - 1];
        }
        (void)sink;
        gguf_close(&f);
    }
    return 0;
}
