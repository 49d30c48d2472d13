#!/usr/bin/env python3
"""A naive float64 numpy forward of a Hugging Face Llama / Qwen2 (/ Mistral) folder, written from
transformers' modeling code and nothing of ours: the logits of every position, as JSON.

    python3 scripts/numpy_llama_ref.py <hf_dir> --ids 1,2,3 [--out ref.json]
    python3 scripts/numpy_llama_ref.py tests/fixtures/hf/llama-gqa --reference

Embedding; per layer RMSNorm (x / sqrt(mean(x^2) + eps) * w), q/k/v projections (+ biases:
Qwen2 on q/k/v, Llama's attention_bias on q/k/v/o), rotate_half RoPE with rope_theta (and
Llama-3 scaling), grouped-query causal attention (Qwen2 / Mistral sliding windows as
transformers marks them), o_proj, residual, RMSNorm, SwiGLU (down(silu(gate x) * up x)),
residual; final RMSNorm; lm_head or the tied embedding.
Reads model.safetensors or the shards of model.safetensors.index.json, in F32, F16 or BF16.
--ggml: emulate llama.cpp's CPU rounding (8-bit blocks for the inputs of quantized matmuls by
the weight's type in ggml_types.json, f16 KV cache and attention probabilities), to tell that
rounding apart from other differences when setting a GGUF model against llama.cpp.
Output: {"ids": [...], "logits": [[vocab floats] per position]} to --out, or stdout.
--reference [FILE]: take the ids from a fixture's reference.safetensors (default
<hf_dir>/reference.safetensors: `ids`, transformers' `logits_f32`) and print the max absolute
difference from transformers' logits (exit 1 above --tol, default 1e-5).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """name -> float64 array (BF16 widened by hand: numpy has no bfloat16)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        dt = info["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[dt]).newbyteorder("<"))
        else:
            sys.exit(f"{path}: tensor {name} has dtype {dt}: supported F32, F16, BF16")
        out[name] = arr.reshape(info["shape"])
    return out


def load_weights(d):
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    w = {}
    for f in files:
        w.update(read_safetensors(os.path.join(d, f)))
    return w


def inv_freqs(cfg, head_dim):
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "llama3":
        # transformers' _compute_llama3_parameters
        factor, lo, hi = rope["factor"], rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
        old = rope["original_max_position_embeddings"]
        lo_wavelen, hi_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > lo_wavelen, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < hi_wavelen) & ~(wavelen > lo_wavelen)
        inv = np.where(medium, smoothed, scaled)
    elif kind != "default":
        sys.exit(f"rope type {kind!r} is not implemented here")
    return inv


def sliding_layers(cfg, n):
    """The window of each layer (None: full attention), as transformers decides it."""
    mt, win = cfg["model_type"], cfg.get("sliding_window")
    if mt == "mistral":
        return [win] * n
    if mt == "qwen2" and win and cfg.get("use_sliding_window"):
        types = cfg.get("layer_types") or [
            "sliding_attention" if i >= cfg.get("max_window_layers", 28) else "full_attention" for i in range(n)
        ]
        return [win if t == "sliding_attention" else None for t in types]
    return [None] * n


# --ggml: the rounding llama.cpp's CPU backend applies to the input of a matmul, by the
# weight's ggml type (ggml-cpu's `vec_dot_type`): 8-bit blocks of 32 with an f16 scale for
# Q4_0/Q5_0/Q8_0/IQ4_NL (Q8_0) and Q4_1/Q5_1 (Q8_1: the same values), 8-bit blocks of 256 with
# an f32 scale for the K- and IQ-quants (Q8_K), f16 / bf16 for F16 / BF16 weights, none for F32.
Q8_0_INPUT = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "IQ4_NL"}


def f16(x):
    return x.astype(np.float16).astype(np.float64)


def bf16(x):
    b = x.astype(np.float32).view(np.uint32)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16).astype(np.uint32)  # round to nearest even
    return b.view(np.float32).astype(np.float64)


def ggml_input(x, wtype):
    """x (..., k) as ggml-cpu rounds it before its dot products with a `wtype` weight."""
    if wtype is None or wtype == "F32":
        return x
    if wtype == "F16":
        return f16(x)
    if wtype == "BF16":
        return bf16(x)
    x32 = x.astype(np.float32)
    if wtype in Q8_0_INPUT:  # quantize_row_q8_0 / q8_1 (x86: round half to even)
        b = x32.reshape(*x.shape[:-1], -1, 32)
        amax = np.abs(b).max(axis=-1, keepdims=True)
        d = amax / np.float32(127)
        q = np.round(b * np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0))
        return (q * f16(d)).reshape(x.shape)
    # quantize_row_q8_K: the scale from the signed value of largest magnitude, f32
    b = x32.reshape(*x.shape[:-1], -1, 256)
    i = np.abs(b).argmax(axis=-1)[..., None]
    mx = np.take_along_axis(b, i, axis=-1)
    iscale = np.where(mx != 0, np.float32(-127) / np.where(mx != 0, mx, 1), 0).astype(np.float32)
    q = np.minimum(127, np.round(iscale * b))
    d = np.where(iscale != 0, 1 / np.where(iscale != 0, iscale, 1), 0).astype(np.float32)
    return (q * d.astype(np.float64)).reshape(x.shape)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(d, ids, ggml=False):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    types = {}
    if ggml:
        tp = os.path.join(d, "ggml_types.json")
        if not os.path.isfile(tp):
            sys.exit(f"--ggml needs {tp} (written by scripts/gguf_to_hf.py)")
        with open(tp) as f:
            types = json.load(f)
    act = lambda x, name: ggml_input(x, types.get(name)) if ggml else x  # noqa: E731
    mt = cfg["model_type"]
    if mt not in ("llama", "qwen2", "mistral"):
        sys.exit(f"model_type {mt!r}: supported llama, qwen2, mistral")
    if cfg.get("hidden_act", "silu") != "silu" or cfg.get("mlp_bias"):
        sys.exit("only silu MLPs without bias")
    W = load_weights(d)
    g = lambda n: W[n].astype(np.float64)  # noqa: E731
    opt = lambda n: g(n) if n in W else None  # noqa: E731
    D, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    T = len(ids)

    inv = inv_freqs(cfg, hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=-1)  # (T, hd)
    cos, sin = np.cos(ang), np.sin(ang)
    windows = sliding_layers(cfg, L)

    x = g("model.embed_tokens.weight")[np.asarray(ids)]  # (T, D)
    qi, kj = np.arange(T)[:, None], np.arange(T)[None, :]
    for i in range(L):
        p = f"model.layers.{i}."
        h = rms_norm(x, g(p + "input_layernorm.weight"), eps)

        def proj(name, inp):
            y = act(inp, p + name + ".weight") @ g(p + name + ".weight").T
            b = opt(p + name + ".bias")
            return y if b is None else y + b

        q = proj("self_attn.q_proj", h).reshape(T, H, hd).transpose(1, 0, 2)  # (H, T, hd)
        k = proj("self_attn.k_proj", h).reshape(T, KV, hd).transpose(1, 0, 2)
        v = proj("self_attn.v_proj", h).reshape(T, KV, hd).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if ggml:  # the f16 KV cache; q rounded to f16 for its dot products with k
            q, k, v = f16(q), f16(k), f16(v)
        rep = H // KV
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)  # head h uses kv head h // rep
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # (H, T, T)
        allowed = kj <= qi
        if windows[i]:
            allowed &= kj > qi - windows[i]
        s = np.where(allowed, s, -np.inf)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s = s / s.sum(axis=-1, keepdims=True)
        a = (f16(s) if ggml else s) @ v  # (H, T, hd); ggml: the probabilities rounded to f16
        x = x + proj("self_attn.o_proj", a.transpose(1, 0, 2).reshape(T, H * hd))

        h = rms_norm(x, g(p + "post_attention_layernorm.weight"), eps)
        gate = act(h, p + "mlp.gate_proj.weight") @ g(p + "mlp.gate_proj.weight").T
        up = act(h, p + "mlp.up_proj.weight") @ g(p + "mlp.up_proj.weight").T
        m = gate / (1 + np.exp(-gate)) * up
        x = x + act(m, p + "mlp.down_proj.weight") @ g(p + "mlp.down_proj.weight").T

    x = rms_norm(x, g("model.norm.weight"), eps)
    head = "lm_head.weight" if "lm_head.weight" in W else "model.embed_tokens.weight"
    if head != "lm_head.weight" and cfg.get("tie_word_embeddings") is False:
        sys.exit("no lm_head.weight but tie_word_embeddings is false")
    return act(x, head) @ g(head).T  # (T, vocab)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("--ids", help="comma-separated token ids")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--reference", nargs="?", const="", metavar="FILE",
                    help="ids and transformers' logits from a fixture's reference.safetensors")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--ggml", action="store_true",
                    help="round as llama.cpp's CPU backend does (8-bit matmul inputs by weight type, f16 KV cache); "
                         "needs ggml_types.json from gguf_to_hf.py")
    a = ap.parse_args()
    ref = None
    if a.reference is not None:
        ref = read_safetensors(a.reference or os.path.join(a.hf_dir, "reference.safetensors"))
        ids = [int(i) for i in ref["ids"]]
    elif a.ids:
        ids = [int(t) for t in a.ids.split(",")]
    else:
        ap.error("--ids or --reference")
    logits = forward(a.hf_dir, ids, a.ggml)
    if ref is not None:
        want = ref["logits_f32"].astype(np.float64).reshape(logits.shape)
        err = float(np.abs(logits - want).max())
        ok = err <= a.tol
        print(f"{a.hf_dir}: {len(ids)} ids, max |numpy - transformers f32| = {err:.3e} "
              f"(max |logit| {np.abs(want).max():.3f}): {'ok' if ok else 'FAIL'} (tol {a.tol:g})", file=sys.stderr)
        if not ok:
            sys.exit(1)
        if a.out is None:
            return
    text = json.dumps({"ids": ids, "logits": logits.tolist()})
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
