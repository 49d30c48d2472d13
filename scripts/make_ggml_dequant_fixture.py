#!/usr/bin/env python3
"""Blocks of every ggml type we dequantize and what the `gguf` package's numpy dequantizers
(gguf-py `quants.py`) make of them, for src/quant/ggml_dequant.rs's bit-exactness test.

usage: /tmp/venv/bin/python scripts/make_ggml_dequant_fixture.py tests/fixtures/ggml/dequant.bin
(pip install gguf numpy)

Where gguf-py quantizes a type (BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), adversarial f32 blocks are
quantized with it (zeros, |max| ties, outliers, halfway cases, scales that are f16 subnormal or
below, large values, NaN/inf for BF16), and random-byte blocks with chosen scales are added so
that every code occurs. The K-quants, which gguf-py only dequantizes, are random bytes (seeded)
with the f16 `d`/`dmin` fields set to chosen finite values (0, -0, negative, subnormal, the
largest f16, typical) and the packed scale bytes at their extremes (all 0x00, all 0xFF, 0x80/0x7F)
or random. F32 and F16 are bit patterns: specials (±0, subnormals, ±inf, quiet and signalling
NaNs) and random ones.

Layout (little-endian): u32 n_sections; then per section: u32 ggml type id, u32 values per block,
u32 bytes per block (both from gguf's GGML_QUANT_SIZES), u32 n_blocks, n_blocks * bytes-per-block
block bytes, n_blocks * values-per-block f32 dequantized values."""
import struct, sys
import numpy as np
from gguf import quants, GGML_QUANT_SIZES, GGMLQuantizationType as T

rng = np.random.default_rng(20261207)
f16 = lambda v: np.array([v], dtype=np.float16).view(np.uint8)
# Chosen f16 scale values: zero both signs, negative, smallest subnormal, a subnormal, the
# smallest normal, the largest finite, typical weight scales.
SCALES = [0.0, -0.0, -0.0123, 2.0**-24, 3.0e-5, 2.0**-14, 65504.0, -65504.0, 1.5e-3, 0.02, 1.0, -7.25]


def adversarial(n: int) -> np.ndarray:
    """Blocks of `n` f32 in the spirit of make_ggml_fixture.py."""
    out = []
    add = lambda v: out.append(np.resize(np.asarray(v, dtype=np.float32), n))
    add(np.zeros(n))                                           # all zero: d = 0
    add([3.0, -3.0] + [1.0] * (n - 2))                         # |max| tie, positive first
    add([-3.0, 3.0] + [1.0] * (n - 2))                         # |max| tie, negative first
    add([1e-3] * (n - 1) + [100.0])                            # one large outlier
    add([-100.0] + list(rng.normal(0, 1, n - 1)))              # negative outlier first
    add([127.0, 0.5, 1.5, -2.5, -0.5, 126.5, -126.5] + [0.0] * (n - 7))  # halfway cases
    add([-8.0, -0.5, 0.5, 7.5, -7.5, 3.5, -3.5, 8.0] + [0.0] * (n - 8))
    add([-16.0, 15.5, -15.5, 0.5, 16.0] + [1.0] * (n - 5))
    add([2.0] * n)                                             # all equal: max - min = 0
    add([-5.0] * n)
    add([0.0] * 17 + [-0.25] + [0.0] * (n - 18))               # single non-zero
    add(rng.normal(0, 1e-8, n))                                # d below f16's smallest subnormal
    add(rng.normal(0, 1e-5, n))                                # d an f16 subnormal
    add(rng.normal(0, 1e4, n))                                 # large, still finite in f16
    add(rng.normal(1e4, 1.0, n))                               # large offset, small spread
    for _ in range(8):
        add(rng.normal(0, rng.choice([0.02, 0.1, 1.0]), n))    # weight-like blocks
    return np.stack(out)


def with_scales(blocks: np.ndarray, at: list[int]) -> np.ndarray:
    """`blocks` with the f16 fields at byte offsets `at` set from SCALES, cycling."""
    for i, b in enumerate(blocks):
        for k, o in enumerate(at):
            b[o:o + 2] = f16(SCALES[(i + 5 * k) % len(SCALES)])
    return blocks


def random_blocks(qtype: T, n: int, at: list[int]) -> np.ndarray:
    size = GGML_QUANT_SIZES[qtype][1]
    return with_scales(rng.integers(0, 256, (n, size), dtype=np.uint8), at)


def k_quant(qtype: T, at: list[int], scales: slice) -> np.ndarray:
    """12 blocks: random quants, `d`/`dmin` at `at` from SCALES, scale bytes at `scales` random
    or at their extremes."""
    b = random_blocks(qtype, 12, at)
    b[1, scales] = 0x00
    b[2, scales] = 0xFF
    b[3, scales] = np.resize(np.array([0x80, 0x7F], dtype=np.uint8), b[3, scales].shape)
    b[4, :] = np.where(np.arange(b.shape[1]) % 2 == 0, 0x00, 0xFF)  # quants and scales alternating
    b[4] = with_scales(b[4:5], at)[0]
    return b


def legacy(qtype: T, at: list[int]) -> np.ndarray:
    """Quantized adversarial blocks, then random bytes with chosen scales."""
    q = quants.quantize(adversarial(32), qtype)
    return np.concatenate([q, random_blocks(qtype, 12, at)])


def bits(dtype, specials: list[int], n_random: int) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    r = rng.integers(0, 1 << (8 * width), n_random, dtype=np.uint64)
    return np.concatenate([np.array(specials, dtype=np.uint64), r]).astype(dtype).view(np.uint8).reshape(-1, width)


sections = [
    (T.F32, bits(np.uint32, [0, 1 << 31, 1, 0x007FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                             0xFFFFFFFF, 0x7F7FFFFF], 54)),
    (T.F16, bits(np.uint16, [0, 0x8000, 1, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFD55,
                             0xFFFF], 116)),
    # BF16: f32 inputs whose low half is exactly halfway (ties to even both ways), just above and
    # below, NaN (made quiet), inf, subnormals, the largest finite f32 (rounds to inf), and random.
    (T.BF16, quants.quantize(np.concatenate([
        np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F800001, 0xFFC00001, 0x7F800000,
                  0x00000001, 0x80008000, 0x7F7FFFFF, 0, 1 << 31], dtype=np.uint32).view(np.float32),
        rng.normal(0, 1, 52).astype(np.float32)]).reshape(-1, 1), T.BF16)),
    (T.Q8_0, legacy(T.Q8_0, [0])),
    (T.Q4_0, legacy(T.Q4_0, [0])),
    (T.Q4_1, legacy(T.Q4_1, [0, 2])),
    (T.Q5_0, legacy(T.Q5_0, [0])),
    (T.Q5_1, legacy(T.Q5_1, [0, 2])),
    # K-quant layouts (quants.py): Q2_K scales[16] qs[64] d dmin; Q3_K hmask[32] qs[64] scales[12] d;
    # Q4_K d dmin scales[12] qs[128]; Q5_K d dmin scales[12] qh[32] qs[128]; Q6_K ql[128] qh[64]
    # scales[16] (int8) d.
    (T.Q2_K, k_quant(T.Q2_K, [80, 82], slice(0, 16))),
    (T.Q3_K, k_quant(T.Q3_K, [108], slice(96, 108))),
    (T.Q4_K, k_quant(T.Q4_K, [0, 2], slice(4, 16))),
    (T.Q5_K, k_quant(T.Q5_K, [0, 2], slice(4, 16))),
    (T.Q6_K, k_quant(T.Q6_K, [208], slice(192, 208))),
]

with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<I", len(sections)))
    for qtype, blocks in sections:
        per, size = GGML_QUANT_SIZES[qtype]
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        assert blocks.ndim == 2 and blocks.shape[1] == size, (qtype.name, blocks.shape)
        with np.errstate(invalid="ignore", over="ignore"):
            values = quants.dequantize(blocks, qtype)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(len(blocks), per)
        f.write(struct.pack("<4I", qtype.value, per, size, len(blocks)))
        f.write(blocks.tobytes())
        f.write(values.tobytes())
        print(f"{qtype.name}: {len(blocks)} blocks of {per} values in {size} bytes")
    print(f"{sys.argv[1]}: {f.tell()} bytes")
