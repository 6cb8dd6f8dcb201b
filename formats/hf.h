/* hf.h - Hugging Face checkpoints (config.json + safetensors + tokenizer) <-> the model view.
 *
 * Covers the Llama family: LlamaForCausalLM, MistralForCausalLM (llama arch in GGUF),
 * Qwen2ForCausalLM (qwen2 arch, q/k/v biases), tied embeddings. config.json maps to the
 * <arch>.* keys llama.cpp reads; tensor names map model.layers.N.self_attn.q_proj.weight <->
 * blk.N.attn_q.weight and so on; llama's q_proj/k_proj rows get llama.cpp's permutation.
 * tokenizer.json (BPE or SentencePiece-style) or tokenizer.model maps to tokenizer.ggml.*.
 */
#ifndef SLMC_HF_H
#define SLMC_HF_H

#include <stdint.h>

#include "error.h"
#include "model.h"

#define HF_DEFAULT_SHARD_SIZE (5ull * 1000 * 1000 * 1000) /* 5 GB, as transformers' default */

/* Open a folder (config.json + model.safetensors[.index.json] + tokenizer files) or a single
 * .safetensors file (a config.json beside it is read when present). Fills m (kv, cfg, tensors). */
int hf_open(model *m, const char *path, slmc_err *err);

/* Write m as a Hugging Face folder at `dir` (atomic): config.json, generation_config.json,
 * model.safetensors (sharded past shard_size, with index), tokenizer files.
 * outtype: -1 = the model's dominant float type for all tensors (F32 when m has quantized
 * tensors); else F32/F16/BF16. Quantized tensors are written as their dequantized values,
 * decoded by m->dequantize (model.h); a tensor it cannot decode is an error naming the file,
 * tensor and type, before anything is written. */
int hf_write(const model *m, const char *dir, int outtype, uint64_t shard_size,
             const slmc_progress *progress, slmc_err *err);

/* Name mapping, exposed for tests: HF -> GGUF name (NULL when unknown; malloc'd). */
char *hf_to_gguf_name(const char *hf_name);
char *gguf_to_hf_name(const char *gguf_name);

/* Write config.json for a model config plus metadata (used by hf_write and synth). */
int hf_write_config_json(const char *path, const model *m, int torch_dtype_type, slmc_err *err);

#endif
