/* tokenizer.h - the tokenizer of the built-in inference engine, built from GGUF metadata.
 *
 * Give it the tokenizer.ggml.* keys of a model (a GGUF file's metadata, or the keys the HF and
 * llama.cpp readers build) and it turns text into the same token ids llama.cpp's llama_tokenize
 * produces:
 *   tokenizer.ggml.model "llama" -> SentencePiece-style BPE over scores (llm_tokenizer_spm)
 *   tokenizer.ggml.model "gpt2"  -> byte-level BPE over merges, with the pre-tokenizer regexes
 *                                   tokenizer.ggml.pre selects (llm_tokenizer_bpe)
 * Special tokens are cut out of the text first, as llama.cpp does. See docs/tokenizer.md.
 *
 * A tokenizer is immutable once created: encode and piece may run from several threads.
 */
#ifndef SLMC_TOKENIZER_H
#define SLMC_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/error.h"
#include "formats/meta.h"

typedef struct tokenizer tokenizer; /* opaque */

/* Build a tokenizer from the tokenizer.ggml.* keys of kv (tokenizer.ggml.model, pre, tokens,
 * scores, token_type, merges, bos/eos/unknown ids, add_bos_token, add_eos_token,
 * add_space_prefix) and general.name. Errors name the offending key. */
int tokenizer_create(tokenizer **out, const meta *kv, slmc_err *err);
void tokenizer_free(tokenizer *t);

/* Tokenize len bytes of text into a malloc'd array *ids of *n_ids ids (the caller frees it;
 * *ids may be NULL when *n_ids is 0).
 * add_special: prepend BOS when the vocabulary adds it (tokenizer_add_bos) and append EOS when
 *   it adds that (tokenizer.ggml.add_eos_token), as llama_tokenize(add_special) does.
 * parse_special: control and unknown token texts in the input ("<s>", "<|eot_id|>") become
 *   their ids; otherwise they are tokenized as plain text. User-defined tokens are always cut
 *   out, as llama.cpp does. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special, bool parse_special,
                     int32_t **ids, size_t *n_ids, slmc_err *err);

/* SPM only: whether to merge word by word (true, the default when the vocabulary allows it:
 * the same tokens, faster; see tokenizer.c) or in one queue over the whole text as llama.cpp
 * does (false). For tests and benchmarks; returns the setting in force (false when the
 * vocabulary does not allow word by word). */
bool tokenizer_set_word_split(tokenizer *t, bool on);

/* The bytes of token id as llama.cpp's llama_token_to_piece(special = true) renders them:
 * SPM "▁" -> space and "<0xXX>" -> that byte; BPE byte-level characters -> their bytes;
 * control/user-defined/unknown tokens -> their text; unused tokens -> nothing.
 * Writes at most cap bytes (no NUL) and returns the length, or -1 when id is out of range or
 * the piece does not fit (tokenizer_max_piece bytes always fit). */
int tokenizer_piece(const tokenizer *t, int32_t id, char *buf, size_t cap);
/* The longest piece of the vocabulary, in bytes. */
size_t tokenizer_max_piece(const tokenizer *t);

/* Special ids (-1 when the vocabulary has none) and sizes. */
int32_t tokenizer_bos(const tokenizer *t);
int32_t tokenizer_eos(const tokenizer *t);
int64_t tokenizer_n_vocab(const tokenizer *t);
/* true when encoding with add_special prepends BOS. */
bool tokenizer_add_bos(const tokenizer *t);
/* true when id ends generation, as llama_vocab_is_eog decides: eos, tokenizer.ggml.eot_token_id and
 * eom_token_id, the FIM pad/repo/file-separator tokens, and the end-of-turn texts llama.cpp
 * knows ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", ...). */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);

#endif
