"""Write the GGUF files our exporter must reproduce byte for byte, with the `gguf` package.

    python scripts/make_gguf_fixture.py tests/fixtures/hf/llama-gqa tests/fixtures/gguf/llama-gqa.json

Independent of our code: the weights are read from a Hugging Face folder with safetensors, the
q/k rows are permuted with llama.cpp's `convert_hf_to_gguf.py` formula, the tokenizer comes out
of tokenizer.json the converter's way, f16 is numpy's, Q8_0/Q4_0 are the package's reference
quantizers (`gguf.quants`), key and tensor names are the package's constants, and the file is
`GGUFWriter`'s. The key order and the choice of tensor types (block linears in the format; the
embedding table and LM head in it only when asked, else F32, or F16 for f16) are ours, since the
converter picks them per model. Records each file's SHA-256 (and size) in the JSON.
"""

import hashlib
import json
import os
import sys
import tempfile

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import MODEL_TENSOR as T
from safetensors.numpy import load_file
from tokenizers import Tokenizer

EOS_CANDIDATES = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"]


def permute(w, n_head):
    # convert_hf_to_gguf.py, LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocab(src, n_vocab):
    tj = json.load(open(f"{src}/tokenizer.json"))
    tok = Tokenizer.from_file(f"{src}/tokenizer.json")
    reverse = {i: t for t, i in tj["model"]["vocab"].items()}
    types = {}
    for a in tj["added_tokens"]:
        reverse[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED
    tokens, toktypes = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(reverse[i])
            toktypes.append(types.get(i, gguf.TokenType.NORMAL))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    eos = next(tok.token_to_id(t) for t in EOS_CANDIDATES if tok.token_to_id(t) is not None)
    w, wo = tok.encode("a", add_special_tokens=True).ids, tok.encode("a", add_special_tokens=False).ids
    bos = w[0] if len(w) > len(wo) and w[1 : 1 + len(wo)] == wo else None
    return tokens, toktypes, merges, eos, bos


def write(src, path, quant, embeddings, lm_head):
    cfg = json.load(open(f"{src}/config.json"))
    w = load_file(f"{src}/model.safetensors")
    n_head, n_kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd = cfg.get("head_dim") or d // n_head
    theta = cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]
    qtype = {"f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[quant]
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]
    tied = "lm_head.weight" not in w
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_type("model")
    wr.add_name("distill student")
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(d)
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_rope_freq_base(theta)
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_key_length(hd)
    wr.add_value_length(hd)
    wr.add_vocab_size(cfg["vocab_size"])
    wr.add_rope_dimension_count(hd)
    wr.add_file_type(ftype)
    wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("gpt-2")
    tokens, toktypes, merges, eos, bos = vocab(src, cfg["vocab_size"])
    wr.add_token_list(tokens)
    wr.add_token_types(toktypes)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(eos if bos is None else bos)
    wr.add_eos_token_id(eos)
    wr.add_add_bos_token(bos is not None)

    def put(kind, bid, hf_name, ty, heads=None, suffix="weight"):
        x = w[hf_name].astype(np.float32)
        if heads:
            x = permute(x, heads)
        name = gguf.TENSOR_NAMES[kind].format(bid=bid) + "." + suffix
        if x.ndim == 1 or ty == Q.F32:
            wr.add_tensor(name, x)
        elif ty == Q.F16:
            wr.add_tensor(name, x.astype(np.float16))
        else:
            wr.add_tensor(name, gguf.quants.quantize(x, ty), raw_dtype=ty)

    table = lambda asked: qtype if asked or quant == "f16" else Q.F32
    put(T.TOKEN_EMBD, None, "model.embed_tokens.weight", table(embeddings or (tied and lm_head)))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        put(T.ATTN_NORM, i, f"{p}.input_layernorm.weight", qtype)
        for kind, hf, heads in [(T.ATTN_Q, "q_proj", n_head), (T.ATTN_K, "k_proj", n_kv),
                                (T.ATTN_V, "v_proj", None), (T.ATTN_OUT, "o_proj", None)]:
            put(kind, i, f"{p}.self_attn.{hf}.weight", qtype, heads)
            if f"{p}.self_attn.{hf}.bias" in w:
                put(kind, i, f"{p}.self_attn.{hf}.bias", qtype, heads, "bias")
        put(T.FFN_NORM, i, f"{p}.post_attention_layernorm.weight", qtype)
        for kind, hf in [(T.FFN_GATE, "gate_proj"), (T.FFN_UP, "up_proj"), (T.FFN_DOWN, "down_proj")]:
            put(kind, i, f"{p}.mlp.{hf}.weight", qtype)
    put(T.OUTPUT_NORM, None, "model.norm.weight", qtype)
    if not tied:
        put(T.OUTPUT, None, "lm_head.weight", table(lm_head))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


# (format, quantize the embedding table, quantize the LM head): each type choice once.
CASES = [("f16", False, False), ("q8_0", False, False), ("q4_0", True, True), ("q4_0", False, True)]

if __name__ == "__main__":
    src, out = sys.argv[1], sys.argv[2]
    record = []
    for quant, emb, head in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.gguf")
            write(src, path, quant, emb, head)
            b = open(path, "rb").read()
        record.append({"format": quant, "embeddings": emb, "lm_head": head,
                       "sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)})
        print(record[-1])
    json.dump(record, open(out, "w"), indent=1)
