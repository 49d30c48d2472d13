#!/usr/bin/env python3
"""A Hugging Face Llama / Qwen2 folder made from a llama.cpp GGUF file, independently of our Rust
code: gguf-py's `GGUFReader` reads the file and `gguf.quants.dequantize` every tensor (F32, F16,
BF16, Q4_0, Q4_1, Q8_0, K-quants, ...), so that `distill logits --model <out_dir>` (our Hugging
Face reader) can be set against `distill logits --model <file.gguf>` (our GGUF reader).

    python3 scripts/gguf_to_hf.py <file.gguf> <out_dir> [--distill BIN]
    python3 scripts/gguf_to_hf.py --self-test

Writes into out_dir:
- model.safetensors, f32, Hugging Face names (token_embd -> model.embed_tokens,
  blk.N.attn_q -> model.layers.N.self_attn.q_proj, ..., output -> lm_head); for the `llama`
  architecture the q/k rows are un-permuted: llama.cpp's converter (convert_hf_to_gguf.py's
  `LlamaModel.permute`) reorders each head's rows from rotate_half's (i, i + d/2) pairing to
  adjacent pairs (2i, 2i + 1); `qwen2` files are not permuted;
- config.json (LlamaForCausalLM / Qwen2ForCausalLM) from the metadata;
- ggml_types.json: each tensor's ggml type in the file (for numpy_llama_ref.py --ggml);
- tokenizer.json, only with --distill BIN: `BIN tokenizer <file.gguf> --out <out_dir>/tokenizer.json`
  (our GGUF tokenizer rebuild; gguf-py has none).
With --f32-gguf PATH, also a copy of the GGUF file with every tensor dequantized to F32 (same
metadata, llama.cpp's layout), which llama.cpp runs without rounding its matmul inputs to 8 bits.
--self-test checks the inverse permutation, and round-trips tests/fixtures/hf's llama-gqa,
llama-bias and qwen2-tied through GGUF files in llama.cpp's layout (tensors equal, numpy logits
those of transformers), and exits.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def permute(w, n_head):
    """llama.cpp's converter's `permute` (convert_hf_to_gguf.py, LlamaModel.permute), rows of
    a q/k weight (rows, cols) or bias (rows,)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    """The inverse of `permute`: within each head, the row of pair i's element j (of 2) at
    2i + j goes back to j * d/2 + i."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def self_test():
    rng = np.random.default_rng(0)
    for n_head, head_dim, cols in [(1, 2, 3), (4, 8, 5), (9, 64, 7), (3, 64, 1)]:
        rows = n_head * head_dim
        w = rng.standard_normal((rows, cols))
        assert np.array_equal(unpermute(permute(w, n_head), n_head), w)
        assert np.array_equal(permute(unpermute(w, n_head), n_head), w)
        b = rng.standard_normal(rows)
        assert np.array_equal(unpermute(permute(b, n_head), n_head), b)
        # What the permutation is for: HF's rotate_half rotates rows (i, i + d/2) of each head
        # together; after `permute` they are the adjacent rows (2i, 2i + 1) (llama.cpp's
        # "normal" RoPE), in the same order.
        idx = np.arange(rows)
        p = permute(idx, n_head)
        for h in range(n_head):
            for i in range(head_dim // 2):
                base = h * head_dim
                assert p[base + 2 * i] == base + i and p[base + 2 * i + 1] == base + i + head_dim // 2
        assert np.array_equal(unpermute(p, n_head), idx)
    print("permute / unpermute: ok")


def write_gguf(src, path, arch):
    """A GGUF file of a Hugging Face folder the way llama.cpp's converter lays it out (q/k rows
    permuted for llama), F32 tensors: for the round trip of --self-test."""
    import gguf
    from gguf import MODEL_TENSOR as T

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from numpy_llama_ref import load_weights

    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    w = load_weights(src)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    wr = gguf.GGUFWriter(path, arch)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])

    def put(kind, bid, hf, heads=None, suffix="weight"):
        x = w[hf].astype(np.float32)
        if heads and arch == "llama":
            x = permute(x, heads)
        wr.add_tensor(gguf.TENSOR_NAMES[kind].format(bid=bid) + "." + suffix, x)

    put(T.TOKEN_EMBD, None, "model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        put(T.ATTN_NORM, i, f"{p}.input_layernorm.weight")
        for kind, hf, heads in [(T.ATTN_Q, "q_proj", n_head), (T.ATTN_K, "k_proj", n_kv),
                                (T.ATTN_V, "v_proj", None), (T.ATTN_OUT, "o_proj", None)]:
            put(kind, i, f"{p}.self_attn.{hf}.weight", heads)
            if f"{p}.self_attn.{hf}.bias" in w:
                put(kind, i, f"{p}.self_attn.{hf}.bias", heads, "bias")
        put(T.FFN_NORM, i, f"{p}.post_attention_layernorm.weight")
        for kind, hf in [(T.FFN_GATE, "gate_proj"), (T.FFN_UP, "up_proj"), (T.FFN_DOWN, "down_proj")]:
            put(kind, i, f"{p}.mlp.{hf}.weight")
    put(T.OUTPUT_NORM, None, "model.norm.weight")
    if "lm_head.weight" in w:
        put(T.OUTPUT, None, "lm_head.weight")
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def fixture_round_trips():
    """tests/fixtures/hf's Llama (GQA, biases) and Qwen2 (biases, tied) folders -> GGUF in
    llama.cpp's layout -> this converter: the same tensors, and numpy_llama_ref.py's logits on
    the result are transformers' (the fixture's reference.safetensors)."""
    import shutil
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy_llama_ref as ref

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
    for name, arch in [("llama-gqa", "llama"), ("llama-bias", "llama"), ("qwen2-tied", "qwen2")]:
        src = os.path.join(root, name)
        with tempfile.TemporaryDirectory() as tmp:
            g, out = os.path.join(tmp, "m.gguf"), os.path.join(tmp, "hf")
            write_gguf(src, g, arch)
            cfg = convert(g, out)
            a, b = ref.load_weights(src), ref.load_weights(out)
            assert set(a) == set(b), f"{name}: tensor names differ: {sorted(set(a) ^ set(b))}"
            for k in a:
                assert np.array_equal(a[k].astype(np.float32), b[k]), f"{name}: {k} differs"
            with open(os.path.join(src, "config.json")) as f:
                want = json.load(f)
            for k in ("model_type", "hidden_size", "num_key_value_heads", "tie_word_embeddings"):
                assert cfg[k] == want[k], f"{name}: config {k} {cfg[k]} != {want[k]}"
            r = ref.read_safetensors(os.path.join(src, "reference.safetensors"))
            got = ref.forward(out, [int(i) for i in r["ids"]])
            err = float(np.abs(got - r["logits_f32"].reshape(got.shape)).max())
            assert err < 1e-5, f"{name}: numpy on the round trip vs transformers: {err}"
            print(f"{name}: {arch} GGUF round trip: tensors equal, logits within {err:.1e} of transformers")


def f32_value(x):
    """An f32 metadata value as its shortest decimal (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(x)))


def metadata(reader):
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # noqa: BLE001 - a field gguf-py cannot decode is not one we read
            pass
    return out


def hf_name(name):
    base, _, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{kind}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}.{kind}"
    return None


def write_f32_gguf(reader, arch, tensors_f32, dst):
    """A copy of the file with every tensor dequantized to F32 (llama.cpp's layout: q/k rows
    still permuted) and general.file_type ALL_F32: llama.cpp computes with it without
    rounding the activations of its matmuls to 8 bits."""
    import gguf

    w = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = field.contents()
        if field.name == "general.file_type":
            val = int(gguf.LlamaFileType.ALL_F32)
        w.add_key_value(field.name, val, vtype, sub_type=sub)
    for name, arr in tensors_f32:
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def convert(path, out_dir, distill=None, f32_gguf=None):
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(path)
    meta = metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        sys.exit(f"{path}: architecture {arch!r}: supported {', '.join(ARCHS)}")

    def key(k, default=None, required=True):
        full = f"{arch}.{k}"
        if full in meta:
            return meta[full]
        if required and default is None:
            sys.exit(f"{path}: no `{full}`")
        return default

    d_model = int(key("embedding_length"))
    n_layers = int(key("block_count"))
    n_head = int(key("attention.head_count"))
    n_kv = int(key("attention.head_count_kv", n_head))
    head_dim = d_model // n_head
    if head_dim * n_head != d_model:
        sys.exit(f"{path}: embedding_length {d_model} is not a multiple of head_count {n_head}")
    for k in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        v = key(k, required=False)
        if v is not None and int(v) != head_dim:
            sys.exit(f"{path}: `{arch}.{k}` = {v} is not the head size {head_dim}: not supported")
    scaling = key("rope.scaling.type", required=False)
    if scaling not in (None, "none"):
        sys.exit(f"{path}: RoPE scaling {scaling!r} is not supported")

    tensors, types, raw = {}, {}, []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            if t.name == "rope_freqs.weight" and "distill.rope_scaling.factor" in meta:
                continue  # our exports' Llama-3 scaling: written to config.json below
            sys.exit(f"{path}: tensor {t.name} ({t.tensor_type.name}) has no Hugging Face name here")
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if not np.isfinite(w).all():
            sys.exit(f"{path}: tensor {t.name} holds non-finite values")
        if f32_gguf:
            raw.append((t.name, w))
        if arch == "llama" and t.name.split(".")[-2] in ("attn_q", "attn_k"):
            w = unpermute(w, n_head if ".attn_q." in t.name else n_kv)
        tensors[name] = np.ascontiguousarray(w)
        types[name] = t.tensor_type.name

    embed = tensors.get("model.embed_tokens.weight")
    if embed is None:
        sys.exit(f"{path}: no token_embd.weight")
    vocab = int(key("vocab_size", embed.shape[0], required=False))
    has = lambda n: n in tensors  # noqa: E731
    tied = not has("lm_head.weight")
    n_ff = int(key("feed_forward_length"))
    bias_q = has("model.layers.0.self_attn.q_proj.bias")
    bias_o = has("model.layers.0.self_attn.o_proj.bias")
    config = {
        "architectures": [ARCHS[arch]],
        "model_type": arch,
        "hidden_act": "silu",
        "hidden_size": d_model,
        "intermediate_size": n_ff,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "rms_norm_eps": f32_value(key("attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_value(key("rope.freq_base", 10000.0, required=False)),
        "max_position_embeddings": int(key("context_length")),
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }
    if arch == "llama":
        if bias_q != bias_o:
            sys.exit(f"{path}: llama with a bias on q but not o (or the reverse): HF's attention_bias puts one on both")
        config["attention_bias"] = bias_q
        config["mlp_bias"] = False
    else:
        if not bias_q or bias_o:
            sys.exit(f"{path}: qwen2 without q/k/v biases or with an o_proj bias: not Qwen2's layout")
        config["use_sliding_window"] = False
    if "distill.rope_scaling.factor" in meta:
        r = lambda k: f32_value(meta[f"distill.rope_scaling.{k}"])  # noqa: E731
        config["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": r("factor"),
            "low_freq_factor": r("low_freq_factor"),
            "high_freq_factor": r("high_freq_factor"),
            "original_max_position_embeddings": int(meta["distill.rope_scaling.original_max_position_embeddings"]),
        }
    for k, hk in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
        v = meta.get(f"tokenizer.ggml.{k}_token_id")
        if v is not None:
            config[hk] = int(v)

    # Every tensor the config implies is there, and nothing else.
    want = {"model.embed_tokens.weight", "model.norm.weight"} | ({"lm_head.weight"} if not tied else set())
    for i in range(n_layers):
        p = f"model.layers.{i}."
        want |= {p + v + ".weight" for v in LAYER_NAMES.values()}
        if bias_q:
            want |= {p + f"self_attn.{x}_proj.bias" for x in "qkv"}
        if bias_o:
            want.add(p + "self_attn.o_proj.bias")
    if set(tensors) != want:
        missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
        sys.exit(f"{path}: tensors do not match the metadata: missing {missing[:5]}, unexpected {extra[:5]}")

    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    # Each tensor's ggml type in the file, for numpy_llama_ref.py --ggml (llama.cpp's CPU
    # rounding of matmul inputs depends on the weight's type); not read by distill.
    with open(os.path.join(out_dir, "ggml_types.json"), "w") as f:
        json.dump(types, f, indent=1)
        f.write("\n")
    if f32_gguf:
        write_f32_gguf(reader, arch, raw, f32_gguf)
    if distill:
        tok = os.path.join(out_dir, "tokenizer.json")
        r = subprocess.run([distill, "tokenizer", path, "--out", tok], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"`{distill} tokenizer` failed ({r.returncode}): {r.stderr.strip()}")
    n_params = sum(w.size for w in tensors.values())
    kinds = sorted({t.tensor_type.name for t in reader.tensors})
    print(f"{out_dir}: {arch}, {n_layers} layers, d_model {d_model}, heads {n_head}/{n_kv}, ffn {n_ff}, vocab {vocab}, "
          f"{'tied' if tied else 'untied'} head, {len(tensors)} tensors ({n_params:,} values) from {'/'.join(kinds)}",
          file=sys.stderr)
    return config


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", nargs="?")
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--distill", metavar="BIN", help="our binary: write tokenizer.json with `BIN tokenizer`")
    ap.add_argument("--f32-gguf", metavar="PATH",
                    help="also write the file with every tensor dequantized to F32 (for llama.cpp without 8-bit activations)")
    ap.add_argument("--self-test", action="store_true", help="check the inverse permutation and the fixture round trips, and exit")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        fixture_round_trips()
        return
    if not a.gguf or not a.out_dir:
        ap.error("<file.gguf> and <out_dir> are required")
    self_test()
    convert(a.gguf, a.out_dir, a.distill, a.f32_gguf)


if __name__ == "__main__":
    main()
