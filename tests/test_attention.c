/* test_attention.c - the fast attention pieces against the scalar code they replace, bit for
 * bit: the F16C row conversions (codec/types.h) against fp16_to_f32 / f32_to_fp16 over all
 * 2^16 halves and a large spread of floats, the vector exp against the C library's expf, and
 * attn_group_avx2 (eval/attn_avx2.h) against llm.c's reference loops (kern_dot_f32_scalar,
 * kern_softcap, kern_softmax, kern_round_f16) on random heads of many shapes.
 * SLMC_EXHAUSTIVE=1 also runs every one of the 2^32 floats through the conversions and
 * every float of exp's range through the exp (a minute or so). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/dots.h"
#include "codec/types.h"
#include "eval/attn_avx2.h"
#include "eval/kernels.h"
#include "testutil.h"

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static bool exhaustive(void) {
    const char *e = getenv("SLMC_EXHAUSTIVE");
    return e && *e && strcmp(e, "0") != 0;
}

/* ===================================================================== F16C conversions */

START_TEST(test_f16c_halves_all) {
    if (!fp16_have_f16c()) SKIP_TEST("this CPU has no F16C");
    uint16_t *h = malloc(sizeof(uint16_t) * 65536 + 2);
    float *f = malloc(sizeof(float) * 65536);
    uint16_t *back = malloc(sizeof(uint16_t) * 65536);
    for (uint32_t i = 0; i < 65536; ++i) h[i] = (uint16_t)i;
    fp16_to_f32_row_f16c(h, f, 65536);
    CK_ASSERT_RANGE(i, 0, 65536, f_bits(f[i]) == f_bits(fp16_to_f32((uint16_t)i)));
    /* the 2 x 511 signalling NaN halves (exponent 31, quiet bit clear, payload not 0) stayed
     * signalling: sign and payload widened bit for bit, no quiet bit added (as this CPU's
     * VCVTPH2PS leaves them, and fp16_to_f32 too) */
    int snan = 0;
    for (uint32_t i = 0; i < 65536; ++i) {
        if ((i & 0x7e00) != 0x7c00 || (i & 0x1ff) == 0) continue;
        const uint32_t want = (i & 0x8000u) << 16 | 0x7f800000u | (i & 0x1ffu) << 13;
        CK_ASSERT_QUIET(f_bits(f[i]) == want, "half %04x: float %08x, want the signalling NaN %08x", i, f_bits(f[i]), want);
        ++snan;
    }
    ck_assert_int_eq(snan, 2 * 511);
    /* and back: every half's float converts to the same half (NaNs as the scalar code makes them) */
    f32_to_fp16_row_f16c(f, back, 65536);
    CK_ASSERT_RANGE(i, 0, 65536, back[i] == f32_to_fp16(f[i]));
    /* odd lengths and offsets: the scalar tail */
    for (int n = 0; n < 20; ++n) {
        float g[20];
        fp16_to_f32_row_f16c(h + 0x7bf0 + n, g, n);
        for (int k = 0; k < n; ++k) ck_assert_uint_eq(f_bits(g[k]), f_bits(fp16_to_f32(h[0x7bf0 + n + k])));
    }
    free(h); free(f); free(back);
}
END_TEST

/* n floats of bit patterns from u, step apart: F16C against scalar, both directions plus the round trip */
static void check_floats(uint64_t u, uint64_t step, int64_t n) {
    enum { B = 4096 };
    float x[B], r[B];
    uint16_t h[B];
    for (int64_t done = 0; done < n;) {
        const int m = n - done < B ? (int)(n - done) : B;
        for (int k = 0; k < m; ++k, u += step) x[k] = bits_f((uint32_t)u);
        f32_to_fp16_row_f16c(x, h, m);
        fp16_round_row_f16c(r, x, m);
        for (int k = 0; k < m; ++k) {
            const uint16_t want = f32_to_fp16(x[k]);
            if (h[k] != want || f_bits(r[k]) != f_bits(fp16_to_f32(want)))
                ck_abort_msg("float %08x: half %04x (scalar %04x), round %08x (scalar %08x)", f_bits(x[k]), h[k], want,
                             f_bits(r[k]), f_bits(fp16_to_f32(want)));
        }
        done += m;
    }
}

START_TEST(test_f16c_floats) {
    if (!fp16_have_f16c()) SKIP_TEST("this CPU has no F16C");
    /* every 251st bit pattern: both signs, every exponent (float subnormals, half subnormals,
     * the overflow edge, infinities, NaNs with many payloads) */
    check_floats(0, 251, (int64_t)(0x100000000ull / 251));
    /* every float within 4 ulps of each rounding boundary between two halves (the midpoints),
     * of each half itself, both signs */
    for (uint32_t s = 0; s < 2; ++s)
        for (uint32_t i = 0; i < 0x7c00; ++i) {
            const float a = fp16_to_f32((uint16_t)i), b = fp16_to_f32((uint16_t)(i + 1));
            const float mid = (float)(((double)a + (double)b) / 2); /* exact: 12 significant bits */
            const uint32_t sign = s << 31;
            check_floats((f_bits(mid) | sign) - 4, 1, 9);
            if (i > 0) check_floats((f_bits(a) | sign) - 4, 1, 9);
        }
    /* the largest finite halves and the edge to infinity */
    check_floats(f_bits(65504.0f) - 8, 1, 0x20000);
    check_floats(f_bits(-65504.0f) - 8, 1, 0x20000);
    if (exhaustive()) check_floats(0, 1, (int64_t)0x100000000ull);
}
END_TEST

/* ===================================================================== exp */

/* Both widths of the vector exp (16 lanes only where the CPU has AVX-512; else both are 8),
 * blocks of 4093 values so that every block ends in a part shorter than the lanes. */
static void check_exp(uint64_t u, uint64_t step, int64_t n) {
    enum { B = 4093 };
    float x[B], y[B];
    for (int64_t done = 0; done < n;) {
        const int m = n - done < B ? (int)(n - done) : B;
        for (int k = 0; k < m; ++k, u += step) x[k] = bits_f((uint32_t)u);
        for (int lanes = 8; lanes <= 16; lanes += 8) {
            attn_exp_lanes(x, y, m, lanes);
            for (int k = 0; k < m; ++k) {
                const float want = expf(x[k]);
                if (f_bits(y[k]) != f_bits(want))
                    ck_abort_msg("exp%d(%a = %08x): %08x, expf %08x", lanes, (double)x[k], f_bits(x[k]), f_bits(y[k]),
                                 f_bits(want));
            }
        }
        done += m;
    }
}

START_TEST(test_exp_vs_expf) {
    if (!kern_have_avx2()) SKIP_TEST("this CPU has no AVX2");
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    /* glibc 2.28+ on a CPU with AVX2 and FMA: its expf is the one the vector exp reproduces, so
     * a check that fails means the vector exp is wrong (it would be switched off silently) */
    ck_assert_msg(attn_fast_exp_ok(), "the vector exp differs from glibc's expf (checked at first use)");
#else
    if (!attn_fast_exp_ok())
        SKIP_TEST("the C library's expf is not glibc's FMA expf: attention calls expf itself (checked at first use)");
#endif
    /* every 97th bit pattern: all exponents, both signs, zeros, subnormals, the fall-backs */
    check_exp(0, 97, (int64_t)(0x100000000ull / 97));
    /* softmax's arguments x - max <= 0: floats in [-16, 0] at a step of 31 ulps, and all near 0 */
    check_exp(0x80000000u, 31, (int64_t)((f_bits(-16.0f) - 0x80000000u) / 31));
    check_exp(0, 1, 1 << 22);
    /* the edges of the fast range (|x| = 88) and of expf's own branches */
    check_exp(f_bits(88.0f) - 1000, 1, 2000);
    check_exp(f_bits(-88.0f) - 1000, 1, 2000);
    check_exp(f_bits(-103.28f) - 1000, 1, 200000);
    check_exp(f_bits(88.72f) - 1000, 1, 20000);
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-30f, -1e-30f, 87.99f, -87.99f};
    float y[10];
    attn_exp_avx2(special, y, 10);
    for (int k = 0; k < 10; ++k) ck_assert_uint_eq(f_bits(y[k]), f_bits(expf(special[k])));
    if (exhaustive()) check_exp(0, 1, (int64_t)0x100000000ull);
}
END_TEST

/* ===================================================================== one head group */

static uint64_t rng = 777;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* llm.c's attend_head, head by head */
static void reference(const attn_job *a) {
    const int64_t hd = a->hd;
    float *s = malloc(sizeof(float) * (size_t)a->n_keys);
    for (int g = 0; g < a->group; ++g) {
        float qh[hd];
        memcpy(qh, a->q + g * hd, sizeof qh);
        if (a->f16) kern_round_f16(qh, hd);
        for (int j = 0; j < a->n_keys; ++j) {
            float v = kern_dot_f32_scalar(hd, qh, a->k + (int64_t)j * a->stride);
            if (a->cap > 0) kern_softcap(&v, 1, a->cap);
            s[j] = v * a->scale;
        }
        kern_softmax(s, a->n_keys);
        if (a->f16) kern_round_f16(s, a->n_keys);
        float *out = a->out + g * hd;
        for (int64_t d = 0; d < hd; ++d) out[d] = 0;
        for (int j = 0; j < a->n_keys; ++j) {
            const float p = s[j];
            const float *vr = a->v + (int64_t)j * a->stride;
            for (int64_t d = 0; d < hd; ++d) out[d] += p * vr[d];
        }
    }
    free(s);
}

/* One case: `group` heads of hd over n keys in rows of stride (kv heads side by side),
 * q values of size qs (large: peaked softmax, exp's fall-back below -88). */
static void check_case(int64_t hd, int group, int n, float qs, float cap, bool f16) {
    const int64_t stride = hd * 3 + 1; /* other KV heads between the rows, odd: unaligned */
    float *q = malloc(sizeof(float) * (size_t)(group * hd));
    float *kv = malloc(sizeof(float) * (size_t)(2 * n * stride));
    float *want = malloc(sizeof(float) * (size_t)(group * hd)), *got = malloc(sizeof(float) * (size_t)(group * hd));
    float *scratch = malloc(sizeof(float) * (size_t)(group * n));
    for (int64_t i = 0; i < group * hd; ++i) q[i] = qs * frand();
    for (int64_t i = 0; i < 2 * n * stride; ++i) kv[i] = frand();
    /* K and V as the cache holds them: F16 values */
    if (f16) kern_round_f16(kv, 2 * n * stride);
    if (n > 3) { /* equal keys: ties in the max, and zeros (-0 and +0 scores) */
        memcpy(kv + 2 * stride, kv + 1 * stride, sizeof(float) * (size_t)hd);
        for (int64_t d = 0; d < hd; ++d) kv[3 * stride + d] = d % 2 ? -0.0f : 0.0f;
    }
    attn_job a = {.q = q, .k = kv, .v = kv + n * stride, .stride = stride, .n_keys = n, .hd = hd, .group = group,
                  .scale = 1.0f / sqrtf((float)hd), .cap = cap, .f16 = f16, .scratch = scratch, .out = want};
    reference(&a);
    a.out = got;
    attn_group_avx2(&a);
    for (int64_t i = 0; i < group * hd; ++i)
        if (f_bits(want[i]) != f_bits(got[i]))
            ck_abort_msg("hd %lld group %d keys %d q %g cap %g f16 %d: out[%lld] = %a, reference %a", (long long)hd, group, n,
                         (double)qs, (double)cap, f16, (long long)i, (double)got[i], (double)want[i]);
    free(q); free(kv); free(want); free(got); free(scratch);
}

START_TEST(test_group_vs_reference) {
    if (!kern_have_avx2()) SKIP_TEST("this CPU has no AVX2");
    const int64_t hds[] = {32, 64, 128, 16, 8, 40, 80, 96, 5, 13, 256};
    const int groups[] = {1, 2, 3, 4, 8};
    const int keys[] = {1, 2, 7, 8, 9, 16, 17, 31, 64, 100, 257};
    for (size_t a = 0; a < sizeof hds / sizeof hds[0]; ++a)
        for (size_t b = 0; b < sizeof groups / sizeof groups[0]; ++b)
            for (size_t c = 0; c < sizeof keys / sizeof keys[0]; ++c) {
                check_case(hds[a], groups[b], keys[c], 1.0f, 0, true);
                check_case(hds[a], groups[b], keys[c], 1.0f, 0, false);
            }
    /* peaked scores (exp's arguments far below -88), soft-capping (gemma2) */
    for (size_t a = 0; a < sizeof hds / sizeof hds[0]; ++a)
        for (size_t c = 0; c < sizeof keys / sizeof keys[0]; ++c) {
            check_case(hds[a], 2, keys[c], 200.0f, 0, true);
            check_case(hds[a], 2, keys[c], 200.0f, 0, false);
            check_case(hds[a], 2, keys[c], 8.0f, 50.0f, true);
            check_case(hds[a], 1, keys[c], 8.0f, 5.0f, false);
        }
    /* a long context */
    check_case(64, 4, 4096, 2.0f, 0, true);
}
END_TEST

/* kern_rope (attn_rope_avx2) against kern_rope_ref bit for bit: both styles, rotated lengths
 * around the 8-lane steps, a head longer than n_rot, random values with zeros of both signs,
 * infinities, a subnormal and NaNs among them (a NaN result need only be a NaN). */
START_TEST(test_rope_vs_reference) {
    if (!kern_have_avx2()) SKIP_TEST("this CPU has no AVX2");
    const int64_t rots[] = {2, 4, 6, 8, 10, 14, 16, 18, 24, 30, 32, 34, 64, 96, 128, 256};
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 0x1p-130f, -3.0e38f};
    enum { EXTRA = 6 };
    for (size_t r = 0; r < sizeof rots / sizeof rots[0]; ++r)
        for (int neox = 0; neox < 2; ++neox)
            for (int rep = 0; rep < 4; ++rep) {
                const int64_t n = rots[r], hd = n + EXTRA;
                float x[256 + EXTRA], want[256 + EXTRA], c[128], sn[128];
                for (int64_t i = 0; i < hd; ++i) x[i] = 4.0f * frand();
                for (int64_t i = 0; i < n / 2; ++i) c[i] = frand(), sn[i] = frand();
                if (rep == 3) /* a few special values in x and the tables */
                    for (int k = 0; k < 7; ++k) {
                        x[(k * 5 + 1) % hd] = special[k];
                        c[(k * 3) % (n / 2)] = special[(k + 2) % 7];
                    }
                memcpy(want, x, sizeof(float) * (size_t)hd);
                kern_rope_ref(want, n, c, sn, neox);
                kern_rope(KERN_AUTO, x, n, c, sn, neox);
                for (int64_t i = 0; i < hd; ++i) /* a NaN's sign and payload are the compiler's choice in C */
                    if (!(isnan(x[i]) && isnan(want[i])) && memcmp(&x[i], &want[i], sizeof(float)) != 0)
                        ck_abort_msg("n_rot %lld neox %d rep %d: x[%lld] = %a, reference %a", (long long)n, neox, rep,
                                     (long long)i, x[i], want[i]);
            }
}
END_TEST

int main(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_f16c_halves_all);
    tcase_add_test(tc, test_f16c_floats);
    tcase_add_test(tc, test_exp_vs_expf);
    tcase_add_test(tc, test_group_vs_reference);
    tcase_add_test(tc, test_rope_vs_reference);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
