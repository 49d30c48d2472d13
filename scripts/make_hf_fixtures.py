#!/usr/bin/env python3
"""Tiny random Hugging Face teachers and their transformers logits, as test fixtures.

For each variant below: build a randomly initialized transformers model, save it with
save_pretrained (safetensors; sharded where asked), put the tokenizer.json beside it, and
save transformers' logits for fixed token ids in reference.safetensors. Also records how
transformers' fast tokenizer encodes a set of strings (tokenizer.json parity).

usage: python3 scripts/make_hf_fixtures.py <tokenizer.json> <out dir>
"""
import json, os, shutil, sys

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


def main():
    tok_path, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)
    vocab = len(tok)
    enc = {s: tok(s, add_special_tokens=False)["input_ids"] for s in STRINGS}
    os.makedirs(out, exist_ok=True)
    json.dump([{"text": s, "ids": ids} for s, ids in enc.items()], open(os.path.join(out, "tokenizer_parity.json"), "w"),
              ensure_ascii=False, indent=1)
    ids = torch.randint(0, vocab, (1, 40), generator=torch.Generator().manual_seed(1))
    for name, (cls, cfg, dtype, shard) in variants(vocab).items():
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
                  os.path.join(d, "reference.safetensors"), metadata={"dtype": str(dtype)})
        files = sorted(os.listdir(d))
        print(name, dtype, files, "max |f32 - native|", (f32 - low).abs().max().item())


if __name__ == "__main__":
    main()
