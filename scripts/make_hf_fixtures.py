#!/usr/bin/env python3
"""Tiny random Hugging Face teachers and their transformers logits, as test fixtures.

For each variant below: build a randomly initialized transformers model, save it with
save_pretrained (safetensors; sharded where asked), put the tokenizer.json beside it, and
save transformers' logits for fixed token ids in reference.safetensors. Also records how
transformers' fast tokenizer encodes a set of strings (tokenizer.json parity).

The variants added later (extra_variants, llama-bos) each reseed torch from their name, so that they can be
made alone (--only) without changing the earlier fixtures, which a full run still reproduces.

usage: python3 scripts/make_hf_fixtures.py <tokenizer.json> <out dir> [--only name,name]
"""
import copy, json, os, shutil, sys, zlib

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

STRINGS = ["", " ", "Once upon a time, Mia had three apples.", "  two  spaces\tand a tab\n",
           "naïve café, Größe, 東京", "emoji 🦀🔥 and a joiner \u200d!", "\"Where is the red ball?\" asked Lily."]


def variants(vocab):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5)
    return {
        # GQA, untied, f32, one file, top-level rope_theta.
        "llama-gqa": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=2, rope_theta=10000.0,
                                                    tie_word_embeddings=False), torch.float32, None),
        # MQA, Llama-3 RoPE scaling, bf16 weights, sharded.
        "llama-mqa-rope3": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=1, rope_theta=500000.0,
                            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                            tie_word_embeddings=False), torch.bfloat16, "100KB"),
        # Qwen2: q/k/v bias, tied embeddings, f16 weights.
        "qwen2-tied": (Qwen2ForCausalLM, Qwen2Config(**common, num_key_value_heads=2, rope_theta=1000000.0,
                                                     tie_word_embeddings=True), torch.float16, None),
    }


BOS_TEXT = "Once upon a time, Mia had three apples. \"Where is the red ball?\" asked Lily."


def extra_variants(vocab):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5)
    return {
        # Llama attention_bias = True: q, k, v AND o_proj carry a bias.
        "llama-bias": (LlamaForCausalLM, LlamaConfig(**common, num_key_value_heads=2, rope_theta=10000.0,
                                                     attention_bias=True, tie_word_embeddings=False), torch.float32, None),
        # Qwen2 sliding window on layers >= max_window_layers only: layer 0 full, layers 1-2 a
        # 5-token window (the 40 ids make it matter).
        "qwen2-window": (Qwen2ForCausalLM, Qwen2Config(**{**common, "num_hidden_layers": 3}, num_key_value_heads=2,
                                                       rope_theta=10000.0, use_sliding_window=True, sliding_window=5,
                                                       max_window_layers=1, tie_word_embeddings=False), torch.float32, None),
    }


def bos_tokenizer(src, dst):
    """The fixture tokenizer plus a BOS special token "<s>" (a new vocabulary entry) that a
    TemplateProcessing post-processor prepends, as real Llama tokenizers do. Returns its id."""
    t = json.load(open(src, encoding="utf-8"))
    bos_id = max(list(t["model"]["vocab"].values()) + [a["id"] for a in t["added_tokens"]]) + 1
    t["added_tokens"].append({"id": bos_id, "content": "<s>", "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True})
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    t["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos_id], "tokens": ["<s>"]}},
    }
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False, indent=2)
    return bos_id


def build(name, cls, cfg, dtype, shard, out, tok_path, ids, metadata=None):
    model = cls(cfg).eval()
    with torch.no_grad():  # visible biases, so a dropped bias would show
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.normal_(0, 0.5)
    model = model.to(dtype)
    d = os.path.join(out, name)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, safe_serialization=True, **kw)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    with torch.no_grad():
        # Reference 1: the stored (rounded) weights, computed in float32.
        f32 = model.float()(ids).logits[0]
        # Reference 2: computed in the stored dtype, as a user running it would.
        low = model.to(dtype)(ids).logits[0].float() if dtype != torch.float32 else f32.clone()
    save_file({"ids": ids[0].to(torch.int64), "logits_f32": f32.contiguous(), "logits_native": low.contiguous()},
              os.path.join(d, "reference.safetensors"), metadata={"dtype": str(dtype), **(metadata or {})})
    files = sorted(os.listdir(d))
    print(name, dtype, files, "max |f32 - native|", (f32 - low).abs().max().item())
    return model, f32


def main():
    tok_path, out = sys.argv[1], sys.argv[2]
    only = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[3] == "--only" else None
    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)
    vocab = len(tok)
    enc = {s: tok(s, add_special_tokens=False)["input_ids"] for s in STRINGS}
    os.makedirs(out, exist_ok=True)
    if only is None:
        json.dump([{"text": s, "ids": ids} for s, ids in enc.items()], open(os.path.join(out, "tokenizer_parity.json"), "w"),
                  ensure_ascii=False, indent=1)
    ids = torch.randint(0, vocab, (1, 40), generator=torch.Generator().manual_seed(1))
    for name, (cls, cfg, dtype, shard) in variants(vocab).items():
        if only is None or name in only:
            build(name, cls, cfg, dtype, shard, out, tok_path, ids)
    for name, (cls, cfg, dtype, shard) in extra_variants(vocab).items():
        if only is not None and name not in only:
            continue
        torch.manual_seed(zlib.crc32(name.encode()))
        model, f32 = build(name, cls, cfg, dtype, shard, out, tok_path, ids)
        if name == "qwen2-window":
            # The window must change the logits, or the fixture would not test it.
            try:
                full_cfg = copy.deepcopy(cfg)
                full_cfg.use_sliding_window, full_cfg.sliding_window = False, None
                full_cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
                full = cls(full_cfg).eval()
                full.load_state_dict(model.state_dict())
                with torch.no_grad():
                    print(name, "layer_types", cfg.layer_types, "max |windowed - full attention|",
                          (full(ids).logits[0] - f32).abs().max().item())
            except Exception as e:  # a diagnostic only
                print(name, "window check failed:", repr(e))
    if only is None or "llama-bos" in only:
        # A Llama whose tokenizer prepends BOS: transformers' ids for BOS_TEXT (default
        # add_special_tokens=True) and the model's logits on them.
        name = "llama-bos"
        torch.manual_seed(zlib.crc32(name.encode()))
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        bos_path = os.path.join(out, "bos-tokenizer.json")
        bos_id = bos_tokenizer(tok_path, bos_path)
        btok = PreTrainedTokenizerFast(tokenizer_file=bos_path)
        bids = btok(BOS_TEXT)["input_ids"]
        plain = btok(BOS_TEXT, add_special_tokens=False)["input_ids"]
        assert bids == [bos_id] + plain, (bids, plain)
        from tokenizers import Tokenizer
        assert Tokenizer.from_file(bos_path).encode(BOS_TEXT).ids == bids
        cfg = LlamaConfig(vocab_size=len(btok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                          rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=bos_id, eos_token_id=0)
        build(name, LlamaForCausalLM, cfg, torch.float32, None, out, bos_path, torch.tensor([bids]),
              metadata={"text": BOS_TEXT, "bos_id": str(bos_id)})
        with open(os.path.join(d, "bos.json"), "w", encoding="utf-8") as f:
            json.dump({"text": BOS_TEXT, "bos_id": bos_id, "ids": bids, "ids_without_special_tokens": plain}, f,
                      ensure_ascii=False, indent=1)
        os.remove(bos_path)
        print(name, "vocab", len(btok), "ids", bids)


if __name__ == "__main__":
    main()
