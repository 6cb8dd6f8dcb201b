#!/usr/bin/env python3
"""Write small valid safetensors files into fuzz/seeds/safetensors/ (seeds for
fuzz_safetensors.c). Written straight from the format description, independently of
slmc's writer: u64 little-endian header length, compact JSON header padded with spaces to a
multiple of 8, then the data. Run from the project root."""
import json
import os
import struct

OUT = "fuzz/seeds/safetensors"
SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def write(name, tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data is a byte pattern laid out in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for i, (tname, dtype, shape) in enumerate(tensors):
        n = SIZE[dtype]
        for d in shape:
            n *= d
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 31 + j * 7) & 0xFF for j in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    blob = struct.pack("<Q", len(text)) + text + data
    assert len(blob) < 4096
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


os.makedirs(OUT, exist_ok=True)
write("one_f32.safetensors", [("weight", "F32", [2, 2])], {"format": "pt"})
write("three_dtypes.safetensors",
      [("a", "F32", [2, 3]), ("b", "F16", [5]), ("c", "BF16", [4, 4]),
       ("scalar", "BF16", []), ("empty", "F16", [0, 3])],
      {"format": "pt", "source": "seed"})
write("llama_like.safetensors",
      [("model.embed_tokens.weight", "BF16", [16, 8]),
       ("model.layers.0.input_layernorm.weight", "F32", [8]),
       ("model.layers.0.self_attn.q_proj.weight", "BF16", [8, 8]),
       ("lm_head.weight", "F16", [16, 8])],
      {"format": "pt"})
write("no_metadata_unpadded.safetensors", [("x", "F16", [3, 1, 2])], None, pad=False)
