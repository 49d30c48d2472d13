#!/usr/bin/env python3
"""Write a random Llama-layout Hugging Face folder of a chosen size in bf16 (standard library
only; no torch): for memory and speed measurements of teacher loading, not for parity (the
parity fixtures come from transformers, scripts/make_hf_fixtures.py). Weights are a small block
of random finite bf16 values tiled; the tokenizer is copied from the llama-gqa fixture.

usage: python3 scripts/make_synthetic_hf.py out_dir [hidden 1024] [layers 16] [intermediate 2816]
"""
import json
import os
import random
import shutil
import struct
import sys

out = sys.argv[1]
hidden = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 16
inter = int(sys.argv[4]) if len(sys.argv) > 4 else 2816
heads, kv, vocab = hidden // 64, max(1, hidden // 256), 1024
here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, "..", "tests", "fixtures", "hf", "llama-gqa")
os.makedirs(out, exist_ok=True)
shutil.copy(os.path.join(fixture, "tokenizer.json"), out)
cfg = json.load(open(os.path.join(fixture, "config.json")))
cfg.update(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter, num_attention_heads=heads,
           num_key_value_heads=kv, head_dim=64, dtype="bfloat16", max_position_embeddings=2048)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)

shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden], "lm_head.weight": [vocab, hidden]}
for i in range(layers):
    p = f"model.layers.{i}"
    shapes.update({f"{p}.input_layernorm.weight": [hidden], f"{p}.post_attention_layernorm.weight": [hidden],
                   f"{p}.self_attn.q_proj.weight": [heads * 64, hidden], f"{p}.self_attn.k_proj.weight": [kv * 64, hidden],
                   f"{p}.self_attn.v_proj.weight": [kv * 64, hidden], f"{p}.self_attn.o_proj.weight": [hidden, heads * 64],
                   f"{p}.mlp.gate_proj.weight": [inter, hidden], f"{p}.mlp.up_proj.weight": [inter, hidden],
                   f"{p}.mlp.down_proj.weight": [hidden, inter]})
rng = random.Random(0)
# bf16 = the top 16 bits of an f32; values ~N(0, 0.02), finite by construction.
block = b"".join(struct.pack("<f", rng.gauss(0, 0.02))[2:] for _ in range(4099))
header, off = {}, 0
for name, shape in shapes.items():
    n = 1
    for d in shape:
        n *= d
    header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}
    off += 2 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for name, shape in shapes.items():
        left = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
        while left > 0:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
print(f"{out}: {off / 1e6:.1f} MB of bf16 weights, {off // 2:,} parameters")
