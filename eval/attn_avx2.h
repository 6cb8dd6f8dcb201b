/* attn_avx2.h - the attention of one token over one KV head with AVX2, bit for bit the scalar
 * loops of llm.c's reference attention.
 *
 * llm.c's attention() (the reference, kept for ctx->impl == KERN_SCALAR) computes each query
 * head on its own: q rounded to F16, one kern_dot_f32_scalar per key, kern_softmax,
 * probabilities rounded to F16, out[d] += p[j] * v[j][d] for j in order. attn_group_avx2 does
 * the same arithmetic, every output with the same float operations in the same order, only
 * several outputs at a time in SIMD lanes:
 *   - scores: 8 keys at once. Each key keeps the 8 partial sums of kern_dot_f32_scalar in one
 *     register (multiply, then add: no FMA); an 8x8 transpose puts key j in lane j, where the
 *     partial sums are added 0..7 as the scalar loop adds them; the tail (head_dim % 8) after.
 *   - softmax: the max over lanes (the same value: a maximum does not depend on the order);
 *     exp(x - max) computed as glibc's expf (the FMA variant that glibc picks on a CPU with
 *     AVX2 and FMA, whose double-precision steps are reproduced exactly) 8 values at a time,
 *     each value beyond its fast range (|x| >= 88, NaN) taken from expf itself; the sum in double
 *     in index order; the scale by 1/sum and the F16 rounding 8 at a time.
 *   - V: lanes over head dimensions (and the query heads sharing the KV head), keys in order.
 * The exp is used only after a check at first use that it matches the C library's expf on a
 * spread of inputs (attn_fast_exp_ok); otherwise expf is called for every value.
 * Only when kern_have_avx2() (AVX2, FMA and F16C). */
#ifndef SLMC_ATTN_AVX2_H
#define SLMC_ATTN_AVX2_H

#include <stdbool.h>
#include <stdint.h>

/* One token against one KV head: `group` of the query heads that read it (consecutive). */
typedef struct attn_job {
    const float *q;      /* [group][hd] the query heads (unrounded; not changed) */
    const float *k, *v;  /* the key and value rows of the first visible position, this KV head */
    int64_t stride;      /* floats from one position's row to the next (kv_dim) */
    int n_keys;          /* visible positions, at least 1 */
    int64_t hd;          /* head size */
    int group;           /* query heads in this job */
    float scale;         /* the scores' factor */
    float cap;           /* soft-cap c of c*tanh(s/c) before the scale, 0 for none */
    bool f16;            /* round q and the probabilities to F16 (llm_context.f16_attention) */
    float *scratch;      /* [group][n_keys] work space */
    float *out;          /* [group][hd] the heads' outputs */
} attn_job;

void attn_group_avx2(const attn_job *job);

/* true when this build's vector exp reproduces the C library's expf here (checked once). */
bool attn_fast_exp_ok(void);
/* out[i] = expf(x[i]) through the vector exp (whether or not attn_fast_exp_ok()): 16 lanes
 * with AVX-512 (the table read by permutations), else 8 (a gather); attn_exp_lanes picks 8 or
 * 16 (16 only with AVX-512), for tests of each. */
void attn_exp_avx2(const float *x, float *out, int64_t n);
void attn_exp_lanes(const float *x, float *out, int64_t n, int lanes);
/* kern_swiglu's fast path: its operations 8 lanes at a time, the exps through the vector exp.
 * The caller checks kern_have_avx2() and attn_fast_exp_ok() first. */
void attn_swiglu_avx2(float *x, const float *up, int64_t n);
/* kern_rope's fast path: kern_rope_ref's operations, 8 lanes at a time, the same bits. The
 * caller checks kern_have_avx2() first. */
void attn_rope_avx2(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox);
/* For log-softmax (perplexity.c): out[i] = expf(x[i] - sub), and the max of x[0..n) (n >= 1).
 * The caller checks kern_cpu_has_avx2() and attn_fast_exp_ok() first. */
void attn_sub_exp_avx2(const float *x, float sub, float *out, int64_t n);
float attn_max_avx2(const float *x, int64_t n);

#endif
