/* ref_hf.h - an independent double-precision reference forward pass for testing, written from
 * the Hugging Face transformers model definitions (modeling_llama.py, modeling_mistral.py,
 * modeling_qwen2.py, modeling_qwen3.py, modeling_gemma.py, modeling_gemma2.py,
 * modeling_gemma3.py's Gemma3ForCausalLM, modeling_phi.py, modeling_phi3.py,
 * modeling_stablelm.py).
 *
 * It reads a Hugging Face folder directly: config.json (jansson) and the *.safetensors files
 * (formats/safetensors.h gives the raw bytes, dtype and shape; BF16/F16/F32 are widened to double
 * here), with Hugging Face tensor names and Hugging Face semantics. It shares nothing with slmc's
 * converter, model view or engine, which is what it checks: no Q/K permutation (HF's rotate_half
 * RoPE on the two halves of the rotary dims), fused Phi-3 projections split here, and so on.
 *
 * Everything is double, the whole sequence at once, causal attention, no KV cache: n tokens in,
 * logits [n][vocab] out, for positions 0..n-1.
 */
#ifndef SLMC_REF_HF_H
#define SLMC_REF_HF_H

#include <stddef.h>
#include <stdint.h>

typedef struct ref_hf_opts {
    /* Gemma family: Hugging Face multiplies the embeddings by sqrt(hidden_size) cast to the
     * model's dtype first (bf16 turns sqrt(3072) = 55.4256 into 55.5). 1 (the default, as
     * ref_hf_logits does) rounds it to the checkpoint's torch_dtype (config "torch_dtype" or
     * "dtype", else the embedding tensor's stored type); 0 keeps the exact double. */
    int round_embed_scale;
    /* Not Hugging Face: 1 computes the tanh GELU as ggml's CPU backend does, through a table
     * of F16 values (input and output rounded to F16 for -10 < x < 10; 0 below, x above), to
     * tell that rounding (a few 1e-4 of the logits) from real differences. Default 0. */
    int gelu_f16;
} ref_hf_opts;

/* Defaults: round_embed_scale = 1, gelu_f16 = 0. */
void ref_hf_opts_init(ref_hf_opts *o);

/* Logits of the output head (config vocab_size columns) for every position, double:
 * logits[t * vocab + v]. Returns 0, or -1 with a message in errbuf. */
int ref_hf_logits(const char *hf_dir, const int32_t *tokens, int n_tokens, double *logits, char *errbuf,
                  size_t errlen);
int ref_hf_logits_ex(const char *hf_dir, const ref_hf_opts *opts, const int32_t *tokens, int n_tokens,
                     double *logits, char *errbuf, size_t errlen);

/* config.json's vocab_size (the logits' row length), or -1 with a message. */
int64_t ref_hf_vocab_size(const char *hf_dir, char *errbuf, size_t errlen);

/* The rotary embedding layer `layer` uses for a sequence of n_tokens tokens, as Hugging Face
 * computes it: inv_freq[0 .. *n_rot/2) (n_rot = rotary dims of a head, a partial rotary factor
 * applied), and the factor cos and sin are multiplied by (longrope's attention factor; 1
 * otherwise). inv_freq must hold head_dim/2 values. For tests of the RoPE variants. */
int ref_hf_rope(const char *hf_dir, int layer, int n_tokens, double *inv_freq, int *n_rot, double *attn_factor,
                char *errbuf, size_t errlen);

/* Llama 3's inv_freq scaling (modeling_rope_utils' "llama3" rope_type) applied in place to
 * inv_freq[0..n): exposed for tests. */
void ref_hf_llama3_scale(double *inv_freq, int n, double factor, double low_freq_factor, double high_freq_factor,
                         double original_max_position_embeddings);

#endif
