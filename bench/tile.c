/* bench/tile.c - the float tile beside its ceiling (run by bench/tile.sh; `make bench` builds it).
 *
 * 1. The ceiling: the register tile's own loop alone, on rows and tokens that stay in L1, on
 *    every thread at once. Per step 4 weight rows x 6 tokens: 4 weight loads (widened from F16
 *    by VCVTPH2PS, or BF16 paired by VPERMW), 6 token loads, 24 chains (FMA, or VDPBF16PS on
 *    pairs): the instruction mix of codec/dots_avx2.c's float_rows_step / bf16_pairs_slice.
 * 2. kern_matmul on the shapes of Llama-3.2-1B (each matrix cycled through enough copies that its
 *    rows come from memory, as in an evaluation), every thread, 256 tokens (128 for the output
 *    head).
 * 3. What these make of one -c 256 chunk of Llama-3.2-1B: its matmuls (17.2 G 16-lane FMAs,
 *    the last layer's and the head's for the 128 scored rows) at the measured speeds, and at the
 *    ceiling.
 * Times are "ns per 24 FMAs per core": 24 x 16 products, so a VDPBF16PS step (32 products per
 * lane pair) counts as two. Each figure is the median of RUNS runs. */
#include <immintrin.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/dots.h"
#include "codec/types.h"
#include "eval/kernels.h"
#include "formats/error.h"

#define TILE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma,f16c")))
#define UNROLL _Pragma("GCC unroll 24") /* every loop over the chains: they stay in registers */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------------------ 1. the loop alone */

enum { CEIL_N = 1024 }; /* values per row: 4 rows (8 KB) and 6 tokens (24 KB as F32, 12 KB as BF16) in L1 */

/* reps passes of the 4 x 6 tile over CEIL_N values of one thread's own rows and tokens. */
TILE_AVX512 static float ceiling_f16(const uint16_t *w, const float *tok, long reps) {
    __m512 acc[24];
    UNROLL
    for (int j = 0; j < 24; ++j) acc[j] = _mm512_setzero_ps();
    for (long r = 0; r < reps; ++r)
        for (int i = 0; i < CEIL_N; i += 16) {
            __m512 av[6];
            UNROLL
            for (int t = 0; t < 6; ++t) {
                av[t] = _mm512_loadu_ps(tok + (size_t)t * CEIL_N + i);
                __asm__("" : "+v"(av[t])); /* a register, as in the library's tile */
            }
            UNROLL
            for (int q = 0; q < 4; ++q) {
                const __m512 wv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + (size_t)q * CEIL_N + i)));
                UNROLL
                for (int t = 0; t < 6; ++t) acc[q * 6 + t] = _mm512_fmadd_ps(wv, av[t], acc[q * 6 + t]);
            }
        }
    __m512 s = acc[0];
    UNROLL
    for (int j = 1; j < 24; ++j) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}

TILE_AVX512 static float ceiling_bf16(const uint16_t *w, const uint16_t *tok, long reps) {
    const __m512i pair = _mm512_set_epi16(15, 31, 14, 30, 13, 29, 12, 28, 11, 27, 10, 26, 9, 25, 8, 24, 7, 23, 6, 22,
                                          5, 21, 4, 20, 3, 19, 2, 18, 1, 17, 0, 16);
    __m512 acc[24];
    UNROLL
    for (int j = 0; j < 24; ++j) acc[j] = _mm512_setzero_ps();
    for (long r = 0; r < reps; ++r)
        for (int i = 0; i < CEIL_N; i += 32) {
            __m512bh av[6];
            UNROLL
            for (int t = 0; t < 6; ++t) {
                av[t] = (__m512bh)_mm512_loadu_si512((const void *)(tok + (size_t)t * CEIL_N + i));
                __asm__("" : "+v"(av[t]));
            }
            UNROLL
            for (int q = 0; q < 4; ++q) {
                const __m512bh wv = (__m512bh)_mm512_permutexvar_epi16(
                    pair, _mm512_loadu_si512((const void *)(w + (size_t)q * CEIL_N + i)));
                UNROLL
                for (int t = 0; t < 6; ++t) acc[q * 6 + t] = _mm512_dpbf16_ps(acc[q * 6 + t], wv, av[t]);
            }
        }
    __m512 s = acc[0];
    UNROLL
    for (int j = 1; j < 24; ++j) s = _mm512_add_ps(s, acc[j]);
    return _mm512_reduce_add_ps(s);
}

/* ns per 24 FMAs per core of the loop alone, every thread at once (median of runs). */
static double ceiling_ns(int type, int threads, int runs) {
    const long reps = 40000;
    double t[64];
    float sink = 0;
    int failed = 0;
    for (int run = 0; run < runs; ++run) {
        double worst = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink, failed) reduction(max : worst)
        {
            uint16_t *w = aligned_alloc(64, sizeof(uint16_t) * 4 * CEIL_N);
            float *tok = aligned_alloc(64, sizeof(float) * 6 * CEIL_N);
            uint16_t *tok_h = aligned_alloc(64, sizeof(uint16_t) * 6 * CEIL_N);
            const bool ok = w && tok && tok_h;
            if (ok) {
                for (int i = 0; i < 4 * CEIL_N; ++i) w[i] = (uint16_t)(0x3000 + i % 512); /* small normal halves */
                for (int i = 0; i < 6 * CEIL_N; ++i) tok[i] = 1e-3f * (float)(i % 97), tok_h[i] = 0x3c00;
            }
#pragma omp barrier /* every thread starts together */
            if (ok) {
                const double t0 = now();
                sink += type == GGML_TYPE_F16 ? ceiling_f16(w, tok, reps) : ceiling_bf16(w, tok_h, reps);
                worst = now() - t0;
            } else {
                failed = 1;
            }
            free(w), free(tok), free(tok_h);
        }
        const double steps = (double)reps * (CEIL_N / 16); /* of 24 FMAs: a VDPBF16PS step of 32 values is two */
        t[run] = worst / steps * 1e9;
    }
    if (sink == 12345.f) printf(" "); /* keeps the sums */
    return failed ? -1 : median(t, runs);
}

/* ------------------------------------------------------------------ 2. kern_matmul */

typedef struct shape {
    const char *name;
    int64_t n_in, n_out;
    int tokens;
    double per_chunk; /* products of this shape in one chunk of Llama-3.2-1B */
} shape;

/* ns per 24 FMAs per core of kern_matmul on one shape, rows cycled through `copies` matrices. */
static double matmul_ns(int type, const shape *s, int copies, int threads, int runs, slmc_err *err) {
    const size_t mat = (size_t)s->n_in * (size_t)s->n_out;
    uint16_t *w = malloc(sizeof(uint16_t) * mat * (size_t)copies);
    float *x = malloc(sizeof(float) * (size_t)s->n_in * (size_t)s->tokens);
    float *y = malloc(sizeof(float) * (size_t)s->n_out * (size_t)s->tokens);
    double res = -1, t[64];
    if (!w || !x || !y) {
        slmc_fail(err, NULL, "bench/tile: out of memory for %s", s->name);
        goto done;
    }
    uint32_t state = 1;
    for (size_t i = 0; i < mat * (size_t)copies; ++i) {
        state = state * 1664525u + 1013904223u;
        const float v = ((float)(state >> 8) / 16777216.0f - 0.5f) * 0.1f;
        uint32_t bits;
        memcpy(&bits, &v, 4);
        w[i] = type == GGML_TYPE_F16 ? f32_to_fp16(v) : (uint16_t)(bits >> 16);
    }
    for (size_t i = 0; i < (size_t)s->n_in * (size_t)s->tokens; ++i) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    kern_scratch sc = {0};
    const kern_ctx ctx = {.n_threads = threads, .impl = KERN_AUTO, .scratch = &sc};
    const double steps = (double)mat * (double)s->tokens / 384.0; /* 24 FMAs of 16 lanes */
    for (int run = -1; run < runs; ++run) {                     /* run -1: first touch, warm-up */
        const double t0 = now();
        for (int c = 0; c < copies; ++c) {
            const kern_weight W = {.data = (const uint8_t *)(w + mat * (size_t)c),
                                   .type = type,
                                   .n_in = s->n_in,
                                   .n_out = s->n_out,
                                   .row_bytes = (uint64_t)s->n_in * 2};
            if (kern_matmul(&ctx, &W, x, s->tokens, y, err) != 0) goto done_sc;
        }
        if (run >= 0) t[run] = (now() - t0) / copies / steps * threads * 1e9;
    }
    res = median(t, runs);
done_sc:
    kern_scratch_free(&sc);
done:
    free(w), free(x), free(y);
    return res;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (threads < 1 || threads > 64 || runs < 1 || runs > 64) {
        fprintf(stderr, "usage: bench_tile [THREADS 1-64] [RUNS 1-64]\n");
        return 2;
    }
    if (!kern_cpu_has_avx512()) {
        printf("SKIP bench/tile: this CPU has no AVX-512, so the float rows are not read in place\n");
        return 0;
    }
    /* Llama-3.2-1B: 16 layers, n_embd 2048, 8 KV heads of 64, n_ff 8192, vocab 128256; a chunk is
     * 256 tokens through 15 layers, the last layer's Q/K/V for 256 and the rest of it for the 128
     * scored rows, and the head for those 128 */
    const double L = 15, T = 256, H = 128;
    const shape shapes[] = {
        {"attn_q/o 2048x2048", 2048, 2048, 256, (2 * L * T + T + H) * 2048 * 2048},
        {"attn_k/v 2048x512", 2048, 512, 256, 2 * (L + 1) * T * 2048 * 512},
        {"ffn_gate/up 2048x8192", 2048, 8192, 256, 2 * (L * T + H) * 2048 * 8192},
        {"ffn_down 8192x2048", 8192, 2048, 256, (L * T + H) * 8192 * 2048},
        {"output 2048x128256", 2048, 128256, 128, H * 2048 * 128256},
    };
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    printf("# bench/tile: the float tile beside its ceiling, %d threads, medians of %d runs; ns per 24 FMAs\n"
           "# (24 x 16 products) per core, so lower is faster and a VDPBF16PS step counts as two\n",
           threads, runs);
    const int types[2] = {GGML_TYPE_F16, GGML_TYPE_BF16};
    for (int k = 0; k < 2; ++k) {
        const int type = types[k];
        if (type == GGML_TYPE_BF16 && !kern_float_rows_pairs(type, 2048)) {
            printf("SKIP BF16: no AVX512-BF16 on this CPU\n");
            continue;
        }
        const double ceil = ceiling_ns(type, threads, runs);
        if (ceil < 0) {
            fprintf(stderr, "bench/tile: out of memory for the loop's rows and tokens\n");
            return 1;
        }
        printf("\n%s  the loop alone in L1: %.2f ns\n", type_name(type), ceil);
        printf("  %-24s %8s %10s %12s\n", "kern_matmul", "ns", "of ceiling", "s per chunk");
        double chunk = 0, chunk_ceil = 0;
        for (int i = 0; i < n_shapes; ++i) {
            const shape *s = &shapes[i];
            const size_t bytes = (size_t)s->n_in * (size_t)s->n_out * 2;
            const int copies = bytes >= ((size_t)256 << 20) ? 1 : (int)(((size_t)256 << 20) / bytes); /* >= 256 MB */
            slmc_err err = {0};
            const double ns = matmul_ns(type, s, copies, threads, runs, &err);
            if (ns < 0) {
                fprintf(stderr, "bench/tile: %s\n", err.msg);
                return 1;
            }
            const double sec = s->per_chunk / 384.0 * ns / threads * 1e-9;
            chunk += sec, chunk_ceil += s->per_chunk / 384.0 * ceil / threads * 1e-9;
            printf("  %-24s %8.2f %9.0f%% %12.3f\n", s->name, ns, 100 * ceil / ns, sec);
        }
        printf("  one chunk of Llama-3.2-1B (-c 256): %.3f s of matmuls at these speeds, %.3f s at the ceiling\n", chunk,
               chunk_ceil);
    }
    return 0;
}
