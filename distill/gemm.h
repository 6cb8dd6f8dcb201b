/* gemm.h - single-precision matrix product C += A·B for the training ops (distill/ops.c).
 *
 * A cache-blocked, register-tiled GEMM in the classic Goto/BLIS arrangement:
 *   - K is cut into blocks of GEMM_KC; for each block, a GEMM_MC × GEMM_KC slab of A and a
 *     GEMM_KC × NC slab of B are copied ("packed") into contiguous panels, so the inner loop
 *     reads memory strictly in order whatever the layout of the operands;
 *   - a micro-kernel computes a GEMM_MR × GEMM_NR tile of C from one A panel and one B panel,
 *     holding the whole tile in registers (AVX-512 or AVX2+FMA when the CPU has it, chosen at
 *     run time and capped by the caller's gemm_ctx; a portable scalar kernel otherwise, also
 *     kept as the reference).
 *
 * Operands are described by strides, so one routine serves out = X·Wᵀ, dX = dY·W and
 * dW = dYᵀ·X without transposing anything: element (r, c) of a gemm_mat is p[r*rs + c*cs].
 *
 * Determinism: threads split the OUTPUT into tiles (no atomics, no shared sums), and every
 * element of C is summed over k in the same order whatever the thread count or tiling: within
 * a K block the kernel adds products k = k0, k0+1, ... into a zeroed register, then adds that
 * block sum to C, block after block. So results are bitwise identical for 1, 2 or N threads
 * (the AVX2 and AVX-512 kernels agree bitwise too; the scalar one, without fused multiply-add,
 * rounds differently).
 */
#ifndef SLMC_DISTILL_GEMM_H
#define SLMC_DISTILL_GEMM_H

#include <stdbool.h>
#include <stddef.h>

/* A read-only strided matrix: element (r, c) is p[r * rs + c * cs]. */
typedef struct {
    const float *p; /* element (0, 0) */
    ptrdiff_t rs;   /* distance between rows, in floats */
    ptrdiff_t cs;   /* distance between columns, in floats */
} gemm_mat;

/* Micro-kernels, narrowest first. What the CPU supports is checked at run time with
 * __builtin_cpu_supports; nothing is compiled for the build machine only. */
typedef enum {
    GEMM_SCALAR, /* portable C, the reference */
    GEMM_AVX2,   /* AVX2 + FMA, 6 × 16 register tiles */
    GEMM_AVX512  /* AVX-512F, 6 × 32 register tiles; bitwise equal to AVX2 (same FMAs, same order) */
} gemm_kernel_level;

/* The widest kernel this CPU runs. */
gemm_kernel_level gemm_best_kernel(void);
/* The kernel a product asked for `level` runs on this CPU (the widest one it has, up to level):
 * "avx512", "avx2" or "scalar". */
const char *gemm_kernel_name(gemm_kernel_level level);

/* How a product runs. The caller owns these settings (the trainer's model keeps one in
 * train_model.exec); nothing is global. */
typedef struct gemm_ctx {
    gemm_kernel_level kernel; /* the widest kernel to use: gemm_best_kernel(), or narrower for tests */
    int n_threads;            /* OpenMP threads when called outside a parallel region (>= 1) */
} gemm_ctx;

/* C[M][N] (row stride ldc) = A[M][K] · B[K][N], or C += A·B when accumulate is true.
 * With K == 0, C is zeroed (or left as is when accumulating).
 * Runs on ctx->n_threads threads when called outside a parallel region, and on the calling
 * thread alone inside one (so a parallel loop may call it per item). Never fails: if the
 * packing buffers cannot be allocated it falls back to a plain, slower loop. */
void gemm_f32(const gemm_ctx *ctx, int M, int N, int K, gemm_mat A, gemm_mat B, float *C, ptrdiff_t ldc,
              bool accumulate);

#endif
