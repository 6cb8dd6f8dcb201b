/* sample.c - token sampling (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>

int sampler_init(sampler *s, int64_t n_vocab, float temp, int top_k, float top_p, uint64_t seed) {
    s->temp = temp;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    return s->cand ? 0 : -1;
}

void sampler_free(sampler *s) {
    free(s->cand);
    s->cand = NULL;
}

/* splitmix64: a uniform float in [0, 1) */
static float next_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f;
}

static int by_logit_desc(const void *a, const void *b) {
    const sample_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id; /* ties: lower id first, so the order is deterministic */
}

int32_t sampler_next(sampler *s, const float *logits) {
    int64_t n = s->n_vocab;
    if (s->temp <= 0) {
        int64_t best = 0;
        for (int64_t i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        return (int32_t)best;
    }
    for (int64_t i = 0; i < n; i++) { s->cand[i].id = (int32_t)i; s->cand[i].logit = logits[i]; }
    qsort(s->cand, (size_t)n, sizeof *s->cand, by_logit_desc);
    if (s->top_k > 0 && s->top_k < n) n = s->top_k;
    /* probabilities of the kept candidates at temperature 1, for top-p */
    float max = s->cand[0].logit;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)(s->cand[i].logit - max));
    if (s->top_p < 1.0f) {
        double cum = 0;
        for (int64_t i = 0; i < n; i++) {
            cum += exp((double)(s->cand[i].logit - max)) / sum;
            if (cum >= s->top_p) { n = i + 1; break; }
        }
    }
    /* temperature, softmax over the survivors, one draw */
    sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float p = (float)exp((double)((s->cand[i].logit - max) / s->temp));
        s->cand[i].logit = p;
        sum += p;
    }
    double r = (double)next_uniform(&s->rng) * sum, acc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc += s->cand[i].logit;
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
