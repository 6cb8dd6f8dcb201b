/* hf_tokenizer.h - Hugging Face tokenizer files <-> the tokenizer.ggml.* keys of a meta.
 *
 * Reading (HF -> GGUF), as llama.cpp's convert_hf_to_gguf.py does:
 *   tokenizer.json, model BPE + ByteLevel pre-tokenizer (Llama 3, Qwen2/3, GPT-2, Phi-2, SmolLM,
 *   StableLM 2, Phi-4-mini)
 *       -> tokenizer.ggml.model "gpt2", pre from the pre-tokenizer (and the model family), tokens,
 *          token_type, merges
 *   tokenizer.json, model BPE + byte_fallback (Llama-2 "fast" tokenizer)
 *       -> tokenizer.ggml.model "llama", pre "default", tokens, scores, token_type
 *   tokenizer.model (SentencePiece protobuf, read by our own small decoder; Llama 2, Phi-3,
 *   Gemma 1/2/3) + added_tokens.json
 *       -> tokenizer.ggml.model "llama", pre "default", tokens, scores, token_type
 *   tokenizer_config.json -> add_bos_token / add_eos_token, special token ids, chat_template,
 *                            added_tokens_decoder (tokenizer.model vocabularies)
 *   config.json           -> bos/eos/... ids when tokenizer_config.json did not name them, and
 *                            the family ("architectures"), whose converter class adds its own
 *                            keys (Gemma: add_space_prefix false; Phi-2 and 49152-token Llama
 *                            models such as SmolLM: add_bos_token false; ...)
 *
 * Writing (GGUF -> HF): "llama" -> tokenizer.model, "gpt2" -> tokenizer.json; both plus
 * tokenizer_config.json and special_tokens_map.json. See docs/formats-tokenizer.md.
 */
#ifndef SLMC_HF_TOKENIZER_H
#define SLMC_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "meta.h"

/* llama.cpp's token types (tokenizer.ggml.token_type), numbered as SentencePiece numbers its
 * piece types, so an SPM type maps to the same number. */
enum {
    TOKTYPE_NORMAL = 1,
    TOKTYPE_UNKNOWN = 2,
    TOKTYPE_CONTROL = 3,
    TOKTYPE_USER_DEFINED = 4,
    TOKTYPE_UNUSED = 5,
    TOKTYPE_BYTE = 6,
};

/* Largest tokenizer file read (tokenizer.json of a 150k vocabulary is ~11 MB). */
#define HF_TOKENIZER_MAX_FILE (512u * 1024 * 1024)

/* Read the tokenizer files of a HF folder into tokenizer.ggml.* keys of kv:
 * tokenizer.model (SentencePiece protobuf) when present and valid, else tokenizer.json — the
 * order of llama.cpp's LlamaModel.set_vocab, which keeps the real SentencePiece scores;
 * plus added_tokens.json, tokenizer_config.json (add_bos_token, add_eos_token, bos/eos/unk/...
 * tokens, chat_template), chat_template.jinja when tokenizer_config.json has no template, and
 * dir/config.json's bos/eos/unk/sep/pad/mask ids as fallback (read from the folder). The model
 * family is config.json's first "architectures" class, else kv's general.architecture when the
 * caller set it; the family's converter-class rules of llama.cpp are applied on top.
 * A folder with no tokenizer files is not an error (returns 0, sets nothing). n_vocab: the
 * model's vocab_size (token arrays are padded with "[PAD{i}]" UNUSED tokens up to it, as
 * llama.cpp's converter does; <= 0 means no padding). Errors name the offending file. */
int hf_tokenizer_load(meta *kv, const char *dir, int64_t n_vocab, slmc_err *err);

/* Parse tokenizer.json text into kv (model, pre, tokens, token_type, scores or merges).
 * `name` is used in messages. */
int hf_tokenizer_parse_json(meta *kv, const char *json, size_t len, const char *name, slmc_err *err);

/* Parse a SentencePiece tokenizer.model (protobuf) into kv (model "llama", pre "default",
 * tokens, scores, token_type). */
int hf_tokenizer_parse_spm(meta *kv, const uint8_t *buf, size_t len, const char *name, slmc_err *err);

/* Parse tokenizer_config.json text into kv (add_bos/add_eos, special ids resolved against the
 * tokens already in kv, chat_template). */
int hf_tokenizer_parse_config_json(meta *kv, const char *json, size_t len, const char *name, slmc_err *err);

/* Parse config.json text: set bos/eos/unk/sep/pad/mask ids that kv does not have yet from its
 * "<type>_token_id" fields (as llama.cpp's SpecialVocab falls back to config.json). */
int hf_tokenizer_parse_model_config(meta *kv, const char *json, size_t len, const char *name, slmc_err *err);

/* Pad the token arrays of kv up to n_vocab with "[PAD{i}]" UNUSED tokens (score -10000 when
 * kv has scores). Nothing happens when kv has n_vocab tokens or more. 0 or -1. */
int hf_tokenizer_pad_vocab(meta *kv, int64_t n_vocab, slmc_err *err);

/* Write tokenizer files for the tokenizer.ggml.* keys of kv into dir: for tokenizer.ggml.model
 * == "llama" a SentencePiece tokenizer.model (protobuf), for "gpt2" a tokenizer.json (byte-level
 * BPE with vocab, merges, added_tokens, pre-tokenizer and decoder as HF writes them); plus
 * tokenizer_config.json and special_tokens_map.json. No tokenizer keys: writes nothing,
 * returns 0. Each file is written atomically. */
int hf_tokenizer_write(const meta *kv, const char *dir, slmc_err *err);

/* Serialize the "llama" vocabulary of kv as a tokenizer.model protobuf into a malloc'd buffer
 * (used by hf_tokenizer_write; exposed for tests). */
int hf_tokenizer_build_spm(const meta *kv, uint8_t **out, size_t *out_len, slmc_err *err);

#endif
