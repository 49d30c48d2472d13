#!/usr/bin/env python3
"""Adversarial blocks of 32 f32 and what the `gguf` package's reference quantizers (gguf-py
`quants.py`, bit-exact with ggml-quants.c) make of them, for src/quant/ggml.rs's tests.

usage: python3 scripts/make_ggml_fixture.py tests/fixtures/ggml/blocks.bin   (pip install gguf numpy)

Layout (little-endian): u32 n; n*32 f32 inputs; n*34 bytes Q8_0 blocks; n*18 bytes Q4_0 blocks;
n*32 f32 Q8_0 dequantized; n*32 f32 Q4_0 dequantized."""
import struct, sys
import numpy as np
from gguf import quants, GGMLQuantizationType as T

rng = np.random.default_rng(20261202)
blocks = []
add = lambda v: blocks.append(np.asarray(v, dtype=np.float32))
add(np.zeros(32))                                           # all zero: d = 0, id = 0
add([3.0, -3.0] + [1.0] * 30)                               # |max| tie, positive first
add([-3.0, 3.0] + [1.0] * 30)                               # |max| tie, negative first (Q4_0 keeps the first)
add([1e-3] * 31 + [100.0])                                  # one large outlier
add([-100.0] + list(rng.normal(0, 1, 31)))                  # negative outlier first
add([127.0, 0.5, 1.5, -2.5, -0.5, 126.5, -126.5] + [0.0] * 25)  # Q8_0 halfway cases (d = 1)
add([-8.0, -0.5, 0.5, 7.5, -7.5, 3.5, -3.5, 8.0] + [0.0] * 24)   # Q4_0 halfway cases (d = 1)
add([2.0] * 32)                                             # all equal
add([0.0] * 17 + [-0.25] + [0.0] * 14)                      # single non-zero
add(rng.normal(0, 1e-8, 32))                                # d below f16's smallest subnormal
add(rng.normal(0, 1e-5, 32))                                # d an f16 subnormal
add(rng.normal(0, 1e4, 32))                                 # large, still finite in f16
for _ in range(24):
    add(rng.normal(0, rng.choice([0.02, 0.1, 1.0]), 32))    # weight-like blocks
x = np.stack(blocks)
q8 = quants.quantize(x, T.Q8_0)
q4 = quants.quantize(x, T.Q4_0)
d8 = quants.dequantize(q8, T.Q8_0).astype(np.float32)
d4 = quants.dequantize(q4, T.Q4_0).astype(np.float32)
assert q8.shape == (len(x), 34) and q4.shape == (len(x), 18)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<I", len(x)))
    for a in (x, q8, q4, d8, d4):
        f.write(np.ascontiguousarray(a).tobytes())
print(f"{sys.argv[1]}: {len(x)} blocks")
