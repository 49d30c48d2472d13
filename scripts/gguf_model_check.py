#!/usr/bin/env python3
"""A real llama.cpp GGUF model (llama or qwen2, any ggml types gguf-py dequantizes) read by `distill`
as an *input*, checked against readers that share none of its code. (scripts/llama_cpp_check.py
is the other direction: llama.cpp reading our exports.)

    python3 scripts/gguf_model_check.py <distill binary> <file.gguf> [--keep DIR] [--tokens 16]
    # e.g. scripts/fetch_smollm2.sh && cargo build &&
    #      python3 scripts/gguf_model_check.py target/debug/distill models/SmolLM2-135M-Instruct.Q4_1.gguf

(a) scripts/gguf_to_hf.py turns the file into a Hugging Face folder with gguf-py (its
    dequantizers; q/k rows un-permuted for llama) and `distill tokenizer`, and writes a copy of
    the GGUF file with every tensor dequantized to F32 (kept in DIR with --keep).
(b) Readers, on each prompt's ids + llama.cpp's greedy continuation and on fixed ids spread
    over the vocabulary:
    - `distill logits --model <file.gguf>` against `distill logits --model <hf_dir>`: the same
      weights dequantized by two readers, within 1e-4 on every logit;
    - against scripts/numpy_llama_ref.py's float64 forward of the HF folder: within 1e-3;
    - our tokenizer.json (`distill tokenizer`) gives llama.cpp's prompt ids.
(c) llama.cpp (scripts/llama-cpp/generate.mjs: node-llama-cpp's prebuilt CPU build) on the
    file itself and on its F32 copy: its five most likely next tokens after the prompt with
    log-probabilities, and a greedy continuation of --tokens tokens. Ours come from `distill
    logits --model <file.gguf>` on the prompt + that continuation (teacher-forced: our greedy
    path is llama.cpp's up to the first position where our argmax on its prefix differs).
    - The file as is: llama.cpp's CPU matmuls with quantized weights round their inputs to
      8 bits (Q8_0/Q8_1/Q8_K blocks), so the max |log p| deviation over its top-5 is measured
      and loosely bounded (--lp-tol, 0.3); beside it, the shift that such rounding causes in
      numpy_llama_ref.py (--ggml against exact) on the same prompt, for scale.
    - The F32 copy: the same weight values, no 8-bit activations (only llama.cpp's f16 KV
      cache and f16 attention arithmetic, which shift log-probs by a few 1e-3 in
      numpy_llama_ref.py's emulation): within --f32-tol (1e-2).
    For both: the argmax next token must be llama.cpp's unless our log-prob gap between the
    two is within that bound; where the greedy paths part, our gap between the two tokens must
    be within it (a near tie); an EOS stop of llama.cpp must be our argmax or such a tie.
Prints two tables; exit 1 on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "In 1969, Neil Armstrong became the first person to",
]
HF_TOL = 1e-4
NUMPY_TOL = 1e-3


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"`{' '.join(map(str, args))[:300]}` failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr.strip()}")
    return r.stdout


def distill_logits(binary, model, ids):
    out = json.loads(run(binary, "logits", "--model", model, "--ids", ",".join(map(str, ids))))
    return np.asarray(out["logits"], dtype=np.float64)


def numpy_logits(hf_dir, ids, ggml=False):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run(sys.executable, os.path.join(HERE, "numpy_llama_ref.py"), hf_dir, "--ids", ",".join(map(str, ids)),
            "--out", f.name, *(["--ggml"] if ggml else []))
        with open(f.name) as g:
            return np.asarray(json.load(g)["logits"], dtype=np.float64)


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("gguf")
    ap.add_argument("--keep", metavar="DIR", help="write the HF folder (DIR/hf) and the F32 copy (DIR/f32.gguf) here")
    ap.add_argument("--tokens", type=int, default=16, help="greedy continuation length")
    ap.add_argument("--lp-tol", type=float, default=0.3,
                    help="bound on the log-prob deviation from llama.cpp on the file as is (8-bit activations)")
    ap.add_argument("--f32-tol", type=float, default=1e-2,
                    help="bound on the log-prob deviation from llama.cpp on the F32 copy (f16 KV cache)")
    a = ap.parse_args()
    node_dir = os.path.join(HERE, "llama-cpp")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "node-llama-cpp")):
        sys.exit(f"run `npm install` in {node_dir} first (node-llama-cpp)")
    binary, gguf_path = os.path.abspath(a.binary), os.path.abspath(a.gguf)

    tmp = tempfile.mkdtemp()
    try:
        work = os.path.abspath(a.keep) if a.keep else tmp
        os.makedirs(work, exist_ok=True)
        hf_dir, f32_path = os.path.join(work, "hf"), os.path.join(work, "f32.gguf")
        r = subprocess.run([sys.executable, os.path.join(HERE, "gguf_to_hf.py"), gguf_path, hf_dir,
                            "--distill", binary, "--f32-gguf", f32_path], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"gguf_to_hf.py failed:\n{r.stdout}{r.stderr}")
        print(r.stderr.strip().splitlines()[-1])
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
        with open(os.path.join(hf_dir, "config.json")) as f:
            cfg = json.load(f)
        vocab, eos, bos = cfg["vocab_size"], cfg.get("eos_token_id"), cfg.get("bos_token_id")

        ok = True
        readers, cpp, notes = [], [], []
        worst = {"hf": 0.0, "np": 0.0, "as is": 0.0, "f32": 0.0, "emu": 0.0}
        cache = {}

        def ours_on(ids):
            """Our logits from the GGUF file, checked against the HF folder and numpy once per ids."""
            key = tuple(ids)
            if key not in cache:
                ours = distill_logits(binary, gguf_path, ids)
                hf = distill_logits(binary, hf_dir, ids)
                ref = numpy_logits(hf_dir, ids)
                assert ours.shape == hf.shape == ref.shape == (len(ids), vocab), (ours.shape, hf.shape, ref.shape)
                d_hf, d_np = float(np.abs(ours - hf).max()), float(np.abs(ours - ref).max())
                worst["hf"], worst["np"] = max(worst["hf"], d_hf), max(worst["np"], d_np)
                cache[key] = (log_softmax(ours), d_hf, d_np)
            return cache[key]

        fixed = sorted({0, 1, 2, 3, 17, 255, 1000, vocab // 3, vocab // 2, vocab - 2, vocab - 1})
        _, d_hf, d_np = ours_on(fixed)
        good = d_hf <= HF_TOL and d_np <= NUMPY_TOL
        ok &= good
        readers.append(("fixed ids", len(fixed), d_hf, d_np, "-", "ok" if good else "FAIL"))

        for prompt in PROMPTS:
            for variant, path, tol in (("as is", gguf_path, a.lp_tol), ("f32", f32_path, a.f32_tol)):
                theirs = json.loads(run("node", os.path.join(node_dir, "generate.mjs"), path, prompt, str(a.tokens)))
                p, h = theirs["prompt"], theirs["generated"]
                first_variant = variant == "as is"
                if first_variant:
                    # Our tokenizer.json against llama.cpp's ids (generate.mjs prepends BOS
                    # when the file says so; encode without special tokens does not).
                    plain = p[1:] if len(p) > 1 and p[0] == bos else p
                    mine = tok.encode(prompt, add_special_tokens=False).ids
                    tok_ok = mine in (plain, p)
                    if not tok_ok:
                        notes.append(f"{prompt!r}: tokenizer.json gives {mine}, llama.cpp {p}")
                lp, d_hf, d_np = ours_on(p + h)
                if first_variant:
                    good = d_hf <= HF_TOL and d_np <= NUMPY_TOL and tok_ok
                    ok &= good
                    readers.append((repr(prompt), len(p + h), d_hf, d_np, "equal" if tok_ok else "DIFFER",
                                    "ok" if good else "FAIL"))
                    # The scale of 8-bit activation rounding: numpy with and without it.
                    emu = log_softmax(numpy_logits(hf_dir, p, ggml=True))[-1]
                    exact = log_softmax(numpy_logits(hf_dir, p))[-1]
                    shift = max(abs(emu[t] - exact[t]) for t, _ in theirs["top"])
                    worst["emu"] = max(worst["emu"], shift)
                status = []
                row = lp[len(p) - 1]
                dev = max(abs(row[t] - q) for t, q in theirs["top"])
                worst[variant] = max(worst[variant], dev)
                if dev > tol:
                    status.append("LOGP")
                ours_next, their_next = int(row.argmax()), int(theirs["top"][0][0])
                if ours_next == their_next:
                    nxt = f"same ({their_next})"
                else:
                    gap = row[ours_next] - row[their_next]
                    nxt = f"{ours_next}/{their_next} gap {gap:.3f}"
                    if gap > tol:
                        status.append("ARGMAX")
                am = lp.argmax(axis=-1)
                part = next((i for i, t in enumerate(h) if am[len(p) - 1 + i] != t), None)
                if part is None:
                    greedy = f"{len(h)}/{len(h)}"
                    if len(h) < a.tokens:  # llama.cpp stopped at EOS
                        if am[-1] == eos:
                            greedy += " +EOS"
                        else:
                            g = lp[-1][am[-1]] - lp[-1][eos] if eos is not None else float("inf")
                            greedy += f" EOS? gap {g:.3f}"
                            if g > tol:
                                status.append("EOS")
                else:
                    at = lp[len(p) - 1 + part]
                    mine_t = int(am[len(p) - 1 + part])
                    g = at[mine_t] - at[h[part]]
                    greedy = f"{part}/{len(h)} gap {g:.3f}"
                    notes.append(f"{prompt!r} ({variant}): greedy paths part at continuation token {part}: ours {mine_t} "
                                 f"{json.dumps(tok.decode([mine_t]))} (log p {at[mine_t]:.4f}), llama.cpp {h[part]} "
                                 f"{json.dumps(tok.decode([h[part]]))} (log p {at[h[part]]:.4f})")
                    if g > tol:
                        status.append("GREEDY")
                if first_variant:
                    notes.append(f"{prompt!r}: llama.cpp continues {json.dumps(tok.decode(h))}")
                good = not status
                ok &= good
                cpp.append((repr(prompt) if first_variant else "", variant, dev, tol,
                            f"{shift:.3f}" if first_variant else "-", nxt, greedy, "ok" if good else ",".join(status)))

        fmt = "{:<56} {:>4}  {:>10}  {:>13}  {:<9} {}"
        print("\nReaders: distill on the GGUF file vs distill on the HF folder vs numpy f64 on the HF folder")
        print(fmt.format("input", "ids", "|gguf-hf|", "|ours-numpy|", "tokens", ""))
        for r_ in readers:
            print(fmt.format(r_[0][:56], r_[1], f"{r_[2]:.2e}", f"{r_[3]:.2e}", r_[4], r_[5]))
        fmt = "{:<56} {:<6} {:>13} {:>7}  {:>9}  {:<22} {:<16} {}"
        print(f"\nllama.cpp next-token log-probs (its top 5) and greedy continuations of {a.tokens} tokens vs distill "
              "on the GGUF file\n(8-bit shift: numpy with llama.cpp-style 8-bit matmul inputs vs exact, same tokens)")
        print(fmt.format("prompt", "file", "|dlog p|", "bound", "8-bit shift", "next token", "greedy equal", ""))
        for r_ in cpp:
            print(fmt.format(r_[0][:56], r_[1], f"{r_[2]:.2e}", f"{r_[3]:g}", r_[4], r_[5], r_[6], r_[7]))
        for n in notes:
            print("  " + n)
        print(f"max |distill gguf - distill hf| {worst['hf']:.2e} (tol {HF_TOL:g}); "
              f"max |distill - numpy f64| {worst['np']:.2e} (tol {NUMPY_TOL:g})")
        print(f"max |log p ours - llama.cpp| over its top-5 next tokens: file as is {worst['as is']:.3e} "
              f"(bound {a.lp_tol:g}; numpy's own 8-bit shift up to {worst['emu']:.3f}), "
              f"F32 copy {worst['f32']:.3e} (bound {a.f32_tol:g})")
        print("PASS" if ok else "FAIL")
        sys.exit(0 if ok else 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
