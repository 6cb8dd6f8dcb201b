/* llama2c.h - llama2.c checkpoints (karpathy/llama2.c run.c format) as an input format.
 *
 * model.bin: a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; a negative vocab_size means a separate classifier), then F32 weights:
 * token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim], wk [L][kv_dim][dim],
 * wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim], w1 [L][hidden][dim],
 * w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim], freq_cis_real/imag
 * [seq_len][head_size/2] (skipped), wcls [vocab][dim] when not shared.
 * tokenizer.bin: int32 max_token_length, then per token: f32 score, int32 len, bytes.
 * Instead of tokenizer.bin, the tokenizer may be a SentencePiece tokenizer.model (protobuf),
 * recognised by its first bytes and read by hf_tokenizer_parse_spm.
 * The weights are in llama.cpp's (interleaved RoPE) row order already: no permutation.
 */
#ifndef SLMC_LLAMA2C_H
#define SLMC_LLAMA2C_H

#include "error.h"
#include "model.h"

/* Open a llama2.c checkpoint with its tokenizer (tokenizer.bin or a SentencePiece
 * tokenizer.model, whose vocabulary must have the checkpoint's vocab_size exactly). Context
 * length is the model's own seq_len. */
int llama2c_open(model *m, const char *path, const char *tokenizer_path, slmc_err *err);

/* true when the file starts like a llama2.c header (sane positive dims and size consistent). */
int llama2c_probe(const char *path);

#endif
