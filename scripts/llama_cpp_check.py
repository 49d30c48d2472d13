#!/usr/bin/env python3
"""llama.cpp runs our GGUF exports as we do: the same tokens, the same next-token distribution,
and the same greedy continuation up to near-ties.

    python3 scripts/llama_cpp_check.py <distill binary> <run dir> [--tokens 48] [--schemes f16,q8_0,q4_0]

For each scheme: `distill export --format gguf-<scheme>`, then for each prompt
- llama.cpp (scripts/llama-cpp/generate.mjs: node-llama-cpp's prebuilt CPU build; `npm install`
  there once, with network) tokenizes the prompt, gives its five most likely next tokens with
  log-probabilities, and continues greedily;
- we do the same from the same file: `distill logits --model <file>.gguf` and `distill generate
  --temperature 0 --quant <scheme> --ids` (the weights the file holds, in our f32 arithmetic).
Checks: the prompt tokens are equal; the log-probabilities agree within 5e-3 for f16 (llama.cpp
rounds only the activations of its f16 matmuls to f16); for q8_0/q4_0 its CPU matmuls quantize the
activations to 8 bits, so their deviation is measured and printed, not bounded, and where the
greedy paths part, our gap between the two tokens must be within twice that scheme's measured
deviation (a tie that activation rounding can flip). Exit 1 otherwise.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = ["Once upon a time", "The little dog", "One day, Emma went to the", "Tom and his friend"]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def log_probs(binary, gguf, ids):
    """Our log-softmax rows for `ids`, computed from the GGUF file."""
    rows = json.loads(run(binary, "logits", "--model", gguf, "--ids", ",".join(map(str, ids))))["logits"]
    out = []
    for r in rows:
        m = max(r)
        z = m + math.log(sum(math.exp(x - m) for x in r))
        out.append([x - z for x in r])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("run")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--schemes", default="f16,q8_0,q4_0")
    a = ap.parse_args()
    node_dir = os.path.join(HERE, "llama-cpp")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "node-llama-cpp")):
        sys.exit(f"run `npm install` in {node_dir} first (node-llama-cpp)")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in a.schemes.split(","):
            out = os.path.join(tmp, scheme)
            run(a.binary, "export", a.run, "--format", f"gguf-{scheme}", "--out", out)
            gguf = os.path.join(out, f"model.{scheme}.gguf")
            print(f"{scheme}: {os.path.getsize(gguf)} bytes")
            results, dev = [], 0.0
            for prompt in PROMPTS:
                quant = [] if scheme == "f16" else ["--quant", scheme]
                ours = json.loads(run(a.binary, "generate", a.run, "--prompt", prompt, "--max-tokens",
                                      str(a.tokens), "--temperature", "0", *quant, "--ids"))
                theirs = json.loads(run("node", os.path.join(node_dir, "generate.mjs"), gguf, prompt, str(a.tokens)))
                if ours["prompt"] != theirs["prompt"]:
                    print(f"  {prompt!r}: PROMPT TOKENS DIFFER ours {ours['prompt']} llama.cpp {theirs['prompt']}")
                    ok = False
                    continue
                lp = log_probs(a.binary, gguf, ours["prompt"])
                d = max(abs(lp[-1][t] - q) for t, q in theirs["top"])
                dev = max(dev, d)
                results.append((prompt, ours, theirs, d))
            if scheme == "f16" and dev > 5e-3:
                ok = False
            print(f"  max |log p llama.cpp - log p ours| over the top-5 next tokens: {dev:.2e}")
            for prompt, ours, theirs, d in results:
                g, h = ours["generated"], theirs["generated"]
                same = next((i for i, (x, y) in enumerate(zip(g, h)) if x != y), min(len(g), len(h)))
                line = f"  {prompt!r}: {len(ours['prompt'])} prompt tokens equal, log p within {d:.1e}; greedy equal {same}/{max(len(g), len(h))}"
                if same < max(len(g), len(h)):
                    if same < min(len(g), len(h)):
                        row = log_probs(a.binary, gguf, ours["prompt"] + g[:same])[-1]
                        gap = abs(row[g[same]] - row[h[same]])
                        line += f"; then ours {g[same]}, llama.cpp {h[same]}: our gap {gap:.4f}"
                        ok &= gap <= 2 * dev
                    else:
                        line += "; one stopped at EOS"
                        ok = False
                print(line)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
