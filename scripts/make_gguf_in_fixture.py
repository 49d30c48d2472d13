#!/usr/bin/env python3
"""GGUF files written by llama.cpp's own Python package (gguf-py), not by us, from the tiny
transformers fixtures: what `distill` must load as the model transformers computes.

    python3 scripts/make_gguf_in_fixture.py

For tests/fixtures/hf/llama-gqa and tests/fixtures/hf/qwen2-tied writes, into tests/fixtures/gguf:
- <name>.gguf: laid out as llama.cpp's `convert_hf_to_gguf.py` lays it out: gguf-py's
  `GGUFWriter`, the converter's metadata keys (`LlamaModel` adds `vocab_size` and
  `rope.dimension_count`, `Qwen2Model` does not; `key_length` / `value_length` when config.json
  has `head_dim`), the q/k rows of `llama` permuted (`LlamaModel.permute`), its tensor names,
  its BPE vocabulary (`get_vocab_base`: tokens, token types; `gguf.SpecialVocab`: merges and the
  BOS/EOS ids it finds, here config.json's). 1-D tensors F32; the 2-D ones in the fixture's own
  precision, without loss: F32 for llama-gqa (f32), F16 for qwen2-tied (f16 weights), as the
  converter's default `--outtype f16` would also write them, at half the file size.
- <name>-q.gguf: the same with every 2-D tensor in one of the types gguf-py quantizes
  (`gguf.quants.quantize`) and our loader dequantizes: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16, F16,
  each on several tensors (q/k included). The K-quants need rows of 256 values: these models'
  rows are 64 or 128 long.
- <name>-q.reference.safetensors: `ids` (the fixture's reference ids, i64) and `logits_f32`, a
  float64 numpy forward (scripts/numpy_llama_ref.py) of the -q file read back with gguf-py's
  `GGUFReader` and `gguf.quants.dequantize` (scripts/gguf_to_hf.py), rounded to f32: a reference
  for the quantized file that owes nothing to our reader.

Checks before writing: the float files read back (gguf_to_hf.py) hold the fixture's tensors
exactly and numpy's logits on them are transformers' (within 1e-5); the quantized files'
logits differ from transformers' (the quantization is there to see).
"""
import json
import os
import shutil
import sys
import tempfile

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import MODEL_TENSOR as T
from safetensors.numpy import save_file
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_to_hf  # noqa: E402
import numpy_llama_ref as ref  # noqa: E402

ROOT = os.path.join(HERE, "..", "tests", "fixtures")
FIXTURES = [("llama-gqa", "llama"), ("qwen2-tied", "qwen2")]
# Each layer's 2-D tensors take these types in turn, shifted by one per layer, so that every
# type lands on several tensors and the q/k rows (un-permuted after dequantizing) on quantized
# ones. Every row here is 64 or 128 values: a multiple of the 32 of these blocks.
QUANT_CYCLE = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.F16, Q.BF16]
QUANT_TOP = {"token_embd": Q.Q8_0, "output": Q.Q5_1}
# Qwen2's pre-tokenizer regex (its tokenizer.json's Split), for `tokenizer.ggml.pre = "qwen2"`.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")


def pre_tokenizer(tj, what):
    """`tokenizer.ggml.pre` for a tokenizer.json's split (the converter matches a hash of its
    output instead; these tiny vocabularies match no hash it knows)."""
    p = tj["pre_tokenizer"]
    if p["type"] == "ByteLevel" and p.get("use_regex", True):
        return "gpt-2"
    if p["type"] == "Sequence":
        splits = [s["pattern"].get("Regex") for s in p["pretokenizers"] if s["type"] == "Split"]
        if splits == [QWEN2_SPLIT]:
            return "qwen2"
    sys.exit(f"{what}: pre-tokenizer {json.dumps(p)[:200]} is neither GPT-2's nor Qwen2's")


def vocab(src, n_vocab):
    """convert_hf_to_gguf.py's `get_vocab_base`: tokens by id ([PADi] for holes), added
    special tokens CONTROL, other added ones USER_DEFINED, the rest NORMAL."""
    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    reverse = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = tok.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def write(name, arch, path, quantized):
    src = os.path.join(ROOT, "hf", name)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(src, "tokenizer.json")) as f:
        tj = json.load(f)
    w = ref.load_weights(src)
    n_head, n_kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or d // n_head
    float_type = {np.dtype(np.float32): Q.F32, np.dtype(np.float16): Q.F16}[w["model.embed_tokens.weight"].dtype]

    wr = gguf.GGUFWriter(path, arch)
    wr.add_type(gguf.GGUFType.MODEL)
    wr.add_name(name)
    # TextModel.set_gguf_parameters
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(d)
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if "head_dim" in cfg:
        wr.add_key_length(head_dim)
        wr.add_value_length(head_dim)
    file_type = gguf.LlamaFileType.MOSTLY_Q4_1 if quantized else {
        Q.F32: gguf.LlamaFileType.ALL_F32, Q.F16: gguf.LlamaFileType.MOSTLY_F16}[float_type]
    wr.add_file_type(file_type)
    if arch == "llama":  # LlamaModel.set_gguf_parameters
        wr.add_vocab_size(cfg["vocab_size"])
        wr.add_rope_dimension_count(head_dim)
    if quantized:
        wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # _set_vocab_gpt2
    tokens, types = vocab(src, cfg["vocab_size"])
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre(pre_tokenizer(tj, src))
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    gguf.SpecialVocab(src, load_merges=True, n_vocab=len(tokens)).add_to_gguf(wr, quiet=True)

    def put(kind, bid, hf, ty, heads=None, suffix="weight"):
        x = w[hf].astype(np.float32)
        if heads and arch == "llama":
            x = gguf_to_hf.permute(x, heads)
        tname = gguf.TENSOR_NAMES[kind].format(bid=bid) + "." + suffix
        if x.ndim == 1 or ty == Q.F32:
            wr.add_tensor(tname, x)
        elif ty == Q.F16:
            wr.add_tensor(tname, x.astype(np.float16))
        else:
            wr.add_tensor(tname, gguf.quants.quantize(x, ty), raw_dtype=ty)

    top = lambda short: QUANT_TOP[short] if quantized else float_type  # noqa: E731
    put(T.TOKEN_EMBD, None, "model.embed_tokens.weight", top("token_embd"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        mats = [(T.ATTN_Q, "self_attn.q_proj", n_head), (T.ATTN_K, "self_attn.k_proj", n_kv),
                (T.ATTN_V, "self_attn.v_proj", None), (T.ATTN_OUT, "self_attn.o_proj", None),
                (T.FFN_GATE, "mlp.gate_proj", None), (T.FFN_UP, "mlp.up_proj", None),
                (T.FFN_DOWN, "mlp.down_proj", None)]
        put(T.ATTN_NORM, i, f"{p}.input_layernorm.weight", Q.F32)
        for j, (kind, hf, heads) in enumerate(mats):
            ty = QUANT_CYCLE[(i + j) % len(QUANT_CYCLE)] if quantized else float_type
            put(kind, i, f"{p}.{hf}.weight", ty, heads)
            if f"{p}.{hf}.bias" in w:
                put(kind, i, f"{p}.{hf}.bias", Q.F32, heads, "bias")
        put(T.FFN_NORM, i, f"{p}.post_attention_layernorm.weight", Q.F32)
    put(T.OUTPUT_NORM, None, "model.norm.weight", Q.F32)
    if "lm_head.weight" in w:
        put(T.OUTPUT, None, "lm_head.weight", top("output"))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def numpy_logits(path, ids, tmp):
    """numpy's float64 logits of a GGUF file as gguf-py reads and dequantizes it."""
    out = os.path.join(tmp, "hf-" + os.path.basename(path))
    gguf_to_hf.convert(path, out)
    return ref.forward(out, ids), ref.load_weights(out)


def main():
    out_dir = os.path.join(ROOT, "gguf")
    os.makedirs(out_dir, exist_ok=True)
    for name, arch in FIXTURES:
        src = os.path.join(ROOT, "hf", name)
        r = ref.read_safetensors(os.path.join(src, "reference.safetensors"))
        ids = [int(i) for i in r["ids"]]
        want = r["logits_f32"].astype(np.float64)
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for quantized in (False, True):
                path = os.path.join(tmp, f"{name}{'-q' if quantized else ''}.gguf")
                write(name, arch, path, quantized)
                logits, tensors = numpy_logits(path, ids, tmp)
                err = float(np.abs(logits - want.reshape(logits.shape)).max())
                if not quantized:
                    source = ref.load_weights(src)
                    assert set(tensors) == set(source), f"{name}: {sorted(set(tensors) ^ set(source))}"
                    for k, v in source.items():
                        assert np.array_equal(v.astype(np.float32), tensors[k]), f"{name}: {k} is not the fixture's"
                    assert err < 1e-5, f"{name}: numpy on the GGUF file vs transformers: {err}"
                else:
                    # A quantized file within the float one's tolerance would test nothing new.
                    assert err > 1e-3, f"{name}: the quantized file computes transformers' logits ({err})"
                    reference = os.path.join(tmp, f"{name}-q.reference.safetensors")
                    save_file({"ids": np.asarray(ids, dtype=np.int64),
                               "logits_f32": np.ascontiguousarray(logits.astype(np.float32))},
                              reference, metadata={"source": f"numpy_llama_ref.forward, float64, of {name}-q.gguf "
                                                             "dequantized by gguf-py"})
                    files[reference] = None
                kinds = sorted({t.tensor_type.name for t in gguf.GGUFReader(path).tensors})
                print(f"{os.path.basename(path)}: {os.path.getsize(path):,} bytes, {'/'.join(kinds)}, "
                      f"max |numpy on it - transformers f32| = {err:.2e}")
                files[path] = None
            for f in files:
                shutil.copyfile(f, os.path.join(out_dir, os.path.basename(f)))


if __name__ == "__main__":
    main()
