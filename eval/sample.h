/* sample.h - choosing the next token from logits: greedy, or top-k, then top-p (nucleus),
 * then temperature, then a draw from a seeded generator (the order of llama.cpp's default
 * sampler chain). The same seed gives the same tokens. */
#ifndef SLMC_SAMPLE_H
#define SLMC_SAMPLE_H

#include <stdint.h>

typedef struct sample_cand {
    int32_t id;      /* token id */
    float logit;     /* its logit, then its probability after softmax */
} sample_cand;

typedef struct sampler {
    float temp;          /* <= 0: greedy (argmax) */
    int top_k;           /* keep the k most likely (<= 0: all) */
    float top_p;         /* keep the smallest set whose probability reaches p (>= 1: all) */
    uint64_t rng;        /* generator state (splitmix64) */
    int64_t n_vocab;
    sample_cand *cand;   /* [n_vocab] scratch */
} sampler;

int sampler_init(sampler *s, int64_t n_vocab, float temp, int top_k, float top_p, uint64_t seed);
void sampler_free(sampler *s);
/* The next token for one row of logits [n_vocab]. */
int32_t sampler_next(sampler *s, const float *logits);

#endif
