/* kernels.c - the matmul driver and the row ops (see kernels.h). */
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "codec/dots.h"
#include "codec/types.h"
#include "eval/attn_avx2.h"

/* The block layouts, the activation conversion, the unpacked rows and their dot products are
 * the codec's (codec/dots.h); this file tiles them over rows, tokens and threads. */

bool kern_weight_supported(int type, int64_t n_in) {
    const kern_wdesc *w = kern_wdesc_get(type);
    return w && n_in > 0 && n_in % w->block == 0;
}

/* ===================================================================== matmul driver */

bool kern_have_avx2(void) { return kern_cpu_has_avx2(); }

kern_impl kern_impl_resolve(kern_impl impl) {
    if (impl == KERN_SCALAR || !kern_have_avx2()) return KERN_SCALAR;
    return KERN_AVX2;
}

#define ROW_TILE 16       /* weight rows unpacked together (a few KB: they stay in L1 while every token passes) */
#define FLOAT_ROW_TILE 128 /* float rows read in place (kern_dot_float_rows_avx512) */

/* The rows of a group's last TAIL_TILES * n_threads float tiles go out in quarter tiles: with
 * whole tiles to the end, one thread was often left with a tile while the other waited at the
 * barrier (Llama-3.2-1B BF16, 3 chunks: the matmuls' time outside the tiles 0.16-0.29 s before,
 * 0.12-0.16 s after, 3 x 2 runs in turn). */
#define TAIL_TILES 2
#define TAIL_CUT 4

/* How one product's rows are cut into the group's work units: tiles of `tile` rows, except
 * that the group's last product cuts its last `tail` rows into units of `sub` rows (unit k of
 * the product starts at row k * tile while k < head_tiles; units_of counts them). */
typedef struct unit_plan {
    int64_t first;      /* the product's first unit in the group */
    int64_t head_tiles; /* whole tiles before its tail */
    int64_t sub;        /* rows per unit in the tail */
} unit_plan;

static unit_plan plan_units(int64_t n_out, int64_t tile, int64_t tail, int64_t sub, int64_t first) {
    const int64_t head = n_out > tail ? (n_out - tail) / tile : 0;
    return (unit_plan){.first = first, .head_tiles = head, .sub = sub};
}
static int64_t units_of(const unit_plan *u, int64_t n_out, int64_t tile) {
    const int64_t rest = n_out - u->head_tiles * tile;
    return u->head_tiles + (rest + u->sub - 1) / u->sub;
}

int kern_matmul_group(const kern_ctx *ctx, const kern_product *prods, int n_prods, const float *x, int64_t n_tok,
                      slmc_err *err) {
    if (n_prods <= 0) return 0;
    const kern_weight *W = prods[0].w;
    /* products of another type or row length than the first: a group of their own */
    int same = 1;
    while (same < n_prods && prods[same].w->type == W->type && prods[same].w->n_in == W->n_in) ++same;
    if (same < n_prods) {
        if (kern_matmul_group(ctx, prods, same, x, n_tok, err) != 0) return -1;
        return kern_matmul_group(ctx, prods + same, n_prods - same, x, n_tok, err);
    }
    const int n_threads = ctx->n_threads > 0 ? ctx->n_threads : omp_get_max_threads();
    const kern_wdesc *wd = kern_wdesc_get(W->type);
    if (!wd) return slmc_fail(err, NULL, "matmul: weight type %s is not supported", type_name(W->type));
    const int64_t n = W->n_in;
    if (n % wd->block != 0)
        return slmc_fail(err, NULL, "matmul: row length %lld is not a multiple of %s's block of %d",
                         (long long)n, type_name(W->type), wd->block);
    if (n_tok <= 0) return 0;
    const bool avx2 = kern_impl_resolve(ctx->impl) == KERN_AVX2;
    const size_t ub = kern_unpacked_bytes(n);
    const size_t act_bytes = kern_act_row_bytes(W->type, n);

    /* F32/F16/BF16 rows are read in place where the AVX-512 kernel takes them: no unpacked copy,
     * tiles of 128 rows (the rest of a tile, < 4 rows, unpacked as usual); BF16 rows with
     * VDPBF16PS also want each token's values in the instruction's pair order */
    const bool in_place = avx2 && kern_float_rows_avx512_ok(W->type, n);
    const int row_tile = in_place ? FLOAT_ROW_TILE : ROW_TILE;
    const bool want_pairs = in_place && kern_float_rows_pairs(W->type, n);
    /* and when the pairs serve every product alone (no odd last 16 values, no rows left to the
     * unpacked tiles), each token goes straight to its pairs, with no unpacked row */
    bool pairs_only = want_pairs && n % 32 == 0;
    for (int i = 0; i < n_prods; ++i) pairs_only = pairs_only && prods[i].w->n_out % 4 == 0;

    /* All the call's memory in one block, each piece on 64-byte lines: the token rows, the
     * unpacked tokens, their pairs, and each thread's converted row, unpacked weight rows and
     * unreduced chains; ctx->scratch keeps it for the next call (a Llama-3.2-1B chunk took 7 K
     * page faults for blocks allocated and freed by every call). */
#define LINES(b) (((size_t)(b) + 63) / 64 * 64)
    const size_t act_all = LINES(ub * (size_t)n_tok), pair_all = want_pairs ? LINES(sizeof(uint16_t) * (size_t)n * (size_t)n_tok) : 0;
    const size_t per_thread = LINES(act_bytes) + LINES(ub * ROW_TILE) + (in_place ? LINES(sizeof(float) * KERN_FLOAT_SCRATCH) : 0);
    const size_t acts_all = LINES(sizeof(kern_arow) * (size_t)n_tok);
    const size_t plans_all = LINES(sizeof(unit_plan) * (size_t)n_prods);
    const size_t total = acts_all + plans_all + act_all + pair_all + per_thread * (size_t)n_threads;
    kern_scratch own = {0}, *sc = ctx->scratch ? ctx->scratch : &own;
    if (sc->bytes < total) {
        kern_scratch_free(sc);
        if (!(sc->mem = aligned_alloc(64, total)))
            return slmc_fail(err, NULL, "matmul: out of memory for %lld activation rows of %lld (%zu bytes)",
                             (long long)n_tok, (long long)n, total);
        sc->bytes = total;
    }
    kern_arow *const acts = sc->mem;
    unit_plan *const plans = (unit_plan *)((uint8_t *)sc->mem + acts_all);
    uint8_t *const mem = (uint8_t *)sc->mem + acts_all + plans_all;
    uint8_t *const act_mem = mem;
    uint16_t *const pairs = want_pairs ? (uint16_t *)(mem + act_all) : NULL;

    /* the work units: every product's tiles in turn, the last product's tail cut finer (in place) */
    int64_t n_units = 0;
    for (int i = 0; i < n_prods; ++i) {
        const bool last = i == n_prods - 1 && in_place;
        const int64_t n_out = prods[i].w->n_out;
        plans[i] = plan_units(n_out, row_tile, last ? (int64_t)TAIL_TILES * n_threads * row_tile : 0,
                              last ? row_tile / TAIL_CUT : row_tile, n_units);
        n_units += units_of(&plans[i], n_out, row_tile);
    }

    /* One parallel region, two loops: (1) each token converted to the vec_dot type (as ggml
     * does) and unpacked, once for every product; (2) after the barrier, the units of weight
     * rows, each row unpacked once and dotted with every token (kern_dot_block: register tiles
     * of rows x tokens), or read in place (kern_dot_float_rows_avx512). */
#pragma omp parallel num_threads(n_threads)
    {
        uint8_t *raw = mem + act_all + pair_all + per_thread * (size_t)omp_get_thread_num();
        uint8_t *wmem = raw + LINES(act_bytes);
        float *chains = in_place ? (float *)(wmem + LINES(ub * ROW_TILE)) : NULL; /* its unreduced sums */
        kern_wrow rows[ROW_TILE];
        for (int r = 0; r < ROW_TILE; ++r) kern_unpacked_carve(wmem + ub * (size_t)r, n, &rows[r], NULL);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tok; ++t) {
            kern_unpacked_carve(act_mem + ub * (size_t)t, n, NULL, &acts[t]);
            if (pairs) { /* from the token itself: the pairs round it as the unpacked row does */
                acts[t].h = pairs + (size_t)n * (size_t)t;
                kern_act_bf16_pairs(x + t * n, n, acts[t].h);
            }
            if (pairs_only) continue;
            if (!avx2 || !kern_act_unpack_avx2(wd, x + t * n, n, &acts[t])) {
                kern_act_convert(W->type, x + t * n, raw, n);
                kern_unpack_arow(wd->act_type, raw, n, &acts[t]);
            }
        }
        /* the barrier of the loop above: every token is ready */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < n_units; ++u) {
            int i = 0;
            while (i + 1 < n_prods && plans[i + 1].first <= u) ++i;
            const kern_weight *w = prods[i].w;
            const int64_t k = u - plans[i].first, head = plans[i].head_tiles;
            const int64_t r0 = k < head ? k * row_tile : head * row_tile + (k - head) * plans[i].sub;
            const int64_t len = k < head ? row_tile : plans[i].sub;
            const int nr = (int)(w->n_out - r0 < len ? w->n_out - r0 : len);
            float *y = prods[i].y;
            const void *src[FLOAT_ROW_TILE];
            for (int r = 0; r < nr; ++r)
                src[r] = w->data + w->row_bytes * (uint64_t)(w->row_map ? w->row_map[r0 + r] : r0 + r);
            const int done =
                in_place ? kern_dot_float_rows_avx512(w->type, n, src, nr, acts, (int)n_tok, y + r0, w->n_out, chains) : 0;
            for (int r = done; r < nr; ++r) /* in place: at most 3 left */
                if (!avx2 || !kern_unpack_wrow_avx2(wd, src[r], n, &rows[r - done]))
                    kern_unpack_wrow(wd, src[r], n, &rows[r - done]);
            if (done < nr) kern_dot_block(wd, avx2, n, rows, nr - done, acts, (int)n_tok, y + r0 + done, w->n_out);
        }
    }
#undef LINES
    kern_scratch_free(&own);
    return 0;
}

int kern_matmul(const kern_ctx *ctx, const kern_weight *W, const float *x, int64_t n_tok, float *y, slmc_err *err) {
    const kern_product p = {.w = W, .y = y};
    return kern_matmul_group(ctx, &p, 1, x, n_tok, err);
}

void kern_scratch_free(kern_scratch *s) {
    free(s->mem);
    s->mem = NULL;
    s->bytes = 0;
}

/* ===================================================================== row ops */

/* The second half of an RMSNorm, given the row's sum of squares. */
static void rms_apply(float *out, const float *x, const float *weight, int64_t n, float eps, double sum) {
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] * scale;
        out[i] = weight ? v * weight[i] : v;
    }
}

void kern_rmsnorm(float *out, const float *x, const float *weight, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += (double)(x[i] * x[i]);
    rms_apply(out, x, weight, n, eps, sum);
}

void kern_rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float *x0 = x + r * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four chains, each in index order */
        for (int64_t i = 0; i < n; ++i) {
            s0 += (double)(x0[i] * x0[i]);
            s1 += (double)(x1[i] * x1[i]);
            s2 += (double)(x2[i] * x2[i]);
            s3 += (double)(x3[i] * x3[i]);
        }
        const double sums[4] = {s0, s1, s2, s3};
        for (int k = 0; k < 4; ++k) rms_apply(out + (r + k) * n, x + (r + k) * n, weight, n, eps, sums[k]);
    }
    for (; r < rows; ++r) kern_rmsnorm(out + r * n, x + r * n, weight, n, eps);
}

void kern_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max = fmaxf(max, x[i]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void kern_rope_ref(float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox) {
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; ++i) {
        const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * cos_t[i] - x1 * sin_t[i];
        x[b] = x0 * sin_t[i] + x1 * cos_t[i];
    }
}

void kern_rope(kern_impl impl, float *x, int64_t n_rot, const float *cos_t, const float *sin_t, bool neox) {
    if (kern_impl_resolve(impl) == KERN_AVX2) attn_rope_avx2(x, n_rot, cos_t, sin_t, neox);
    else kern_rope_ref(x, n_rot, cos_t, sin_t, neox);
}

void kern_rope_table(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base, float freq_scale) {
    kern_rope_table_ext(cos_t, sin_t, pos, n_rot, freq_base, freq_scale, NULL, 1.0f);
}

void kern_rope_table_ext(float *cos_t, float *sin_t, int64_t pos, int64_t n_rot, float freq_base,
                         float freq_scale, const float *freq_factors, float mscale) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta_extrap = (float)pos;
    for (int64_t i = 0; i < n_rot / 2; ++i) {
        const float ff = freq_factors ? freq_factors[i] : 1.0f;
        const float theta = freq_scale * (theta_extrap / ff);
        cos_t[i] = cosf(theta) * mscale;
        sin_t[i] = sinf(theta) * mscale;
        theta_extrap *= theta_scale;
    }
}

void kern_layernorm(float *out, const float *x, const float *weight, const float *bias, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += (double)x[i];
    const float mean = (float)(sum / (double)n);
    double sum2 = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] - mean;
        out[i] = v;
        sum2 += (double)(v * v);
    }
    const float variance = (float)(sum2 / (double)n);
    const float scale = 1.0f / sqrtf(variance + eps);
    for (int64_t i = 0; i < n; ++i) {
        float v = out[i] * scale;
        if (weight) v *= weight[i];
        if (bias) v += bias[i];
        out[i] = v;
    }
}

void kern_swiglu_ref(float *x, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + expf(-x[i])) * up[i];
}

/* The same operations in vector lanes, the exps through attention's vector exp (which gives
 * expf's bits: attn_fast_exp_ok). */
void kern_swiglu(kern_impl impl, float *x, const float *up, int64_t n) {
    if (kern_impl_resolve(impl) == KERN_AVX2 && attn_fast_exp_ok()) attn_swiglu_avx2(x, up, n);
    else kern_swiglu_ref(x, up, n);
}

/* gelu with the tanh approximation, in float as ggml_gelu_f32 writes it */
static float gelu_tanh(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f, coef_a = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + coef_a * x * x)));
}

static float gelu_ggml(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    return fp16_to_f32(f32_to_fp16(gelu_tanh(fp16_to_f32(f32_to_fp16(x))))); /* ggml's fp16 table */
}

void kern_gelu(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = gelu_ggml(x[i]);
}

void kern_geglu(float *x, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = gelu_ggml(x[i]) * up[i];
}

void kern_softcap(float *x, int64_t n, float c) {
    const float inv = 1.0f / c;
    for (int64_t i = 0; i < n; ++i) x[i] = tanhf(x[i] * inv) * c;
}

void kern_round_f16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = fp16_to_f32(f32_to_fp16(x[i]));
}

void kern_round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
