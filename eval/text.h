/* text.h - a text file as the model's tokens: the first step of every command that reads a
 * text (eval's perplexity, imatrix, GPTQ and pruning calibration).
 *
 * The whole text is tokenized with BOS first when the vocabulary adds one, as llama-perplexity
 * and llama-imatrix do. A caller that needs only the first `want` tokens (calibration on a
 * few chunks of a 13 MB text) gets them from a prefix instead: about 16 bytes per wanted token,
 * cut at a line end, doubled until it holds `want` tokens or is the whole text. The first
 * `want` tokens are the whole text's first `want` tokens whenever the cut lies beyond them,
 * which the 4-fold margin of 16 bytes per token (English text runs at about 4) ensures.
 */
#ifndef SLMC_TEXT_H
#define SLMC_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/model.h"

typedef struct text_tokens {
    int32_t *ids;  /* [n] token ids */
    size_t n;      /* tokens (the whole text's, or at least `want` of its first ones) */
    int32_t bos;   /* the BOS id a chunk starts with, -1 when the vocabulary adds none */
} text_tokens;

/* Tokenize the text file at `path` with model m's vocabulary. want == 0: the whole text;
 * want > 0: at least its first `want` tokens when it has them (fewer only when the whole text
 * is shorter). `purpose` completes the message for a model without a tokenizer ("eval" gives
 * "MODEL: has no tokenizer; eval needs one to read the text"). Returns 0, or -1 with err
 * naming the model or the text file. */
int text_tokenize(const model *m, const char *path, size_t want, const char *purpose, text_tokens *out,
                  slmc_err *err);
void text_tokens_free(text_tokens *t);

#endif
