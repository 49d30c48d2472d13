#!/usr/bin/env python3
"""transformers' `generate` at the shapes of `distill bench-generate`: the same model folder,
batch, prompt length and output length, greedy (or sampled), every row running to the limit
(min_new_tokens = max_new_tokens), bf16 on the GPU, SDPA attention, the default dynamic cache
(`--static` for the static cache, `--compile` to also torch.compile the forward). Best of
--repeat after one warm-up, one JSON line out.

  python3 scripts/generate_peer.py MODEL_DIR --batch 32 --prompt-len 128 --new-tokens 256
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--static", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa").cuda().eval()
    if a.compile:
        m.forward = torch.compile(m.forward, mode="reduce-overhead", fullgraph=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.config.vocab_size, (a.batch, a.prompt_len), generator=g).cuda()
    mask = torch.ones_like(ids)
    kw = dict(
        max_new_tokens=a.new_tokens,
        min_new_tokens=a.new_tokens,
        do_sample=a.temperature > 0,
        use_cache=True,
        pad_token_id=0,
    )
    if a.temperature > 0:
        kw.update(temperature=a.temperature, top_k=0, top_p=1.0)
    if a.static:
        kw["cache_implementation"] = "static"
    best = None
    with torch.inference_mode():
        for rep in range(a.repeat + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = m.generate(ids, attention_mask=mask, **kw)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            assert out.shape == (a.batch, a.prompt_len + a.new_tokens), out.shape
            if rep > 0 and (best is None or wall < best):
                best = wall
    print(json.dumps({
        "bench": "generate-peer", "peer": "transformers " + __import__("transformers").__version__,
        "cache": "static" if a.static else "dynamic", "compile": a.compile,
        "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
        "temperature": a.temperature, "wall_s": best, "tok_per_s": a.batch * a.new_tokens / best,
        "gpu": torch.cuda.get_device_name(),
    }))


if __name__ == "__main__":
    main()
