#!/usr/bin/env python3
"""Parity of distill's decoder and exports with Hugging Face transformers.

For the teacher and the student of a finished run: export the weights with `distill export`
(hf, int8, int4), load them into the transformers architecture their config.json names (Llama,
Qwen2 or Mistral; the hf export with from_pretrained, as a user would; int8 and int4
dequantized here, from the file), and compare its logits with `distill logits` on the same
tokens (for int4: `distill logits --model <the int4 export>`). An independent implementation of the same decoder (GQA, RoPE rotate-half, RMSNorm,
SwiGLU, tied embeddings) must agree to float32 rounding.

usage: hf_parity.py <distill binary> <run dir> [--device cuda|cpu] [--backend cpu|cuda|wgpu] [--who student]
  --device   where transformers runs (default: cuda when available)
  --backend  where distill runs (a cuda/wgpu build for the GPU backends); on a GPU backend
             only f32 is compared, with tolerance 2e-2 (its f32 kernels round like TF32)
"""
import argparse, json, os, subprocess, sys, tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def load_export(d, fmt):
    if fmt == "f32":
        # The transformers checkpoint, loaded as a user would.
        return AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    # The class config.json names, as a user's from_pretrained would pick it.
    cfg = AutoConfig.from_pretrained(d)
    model = AutoModelForCausalLM.from_config(cfg).float()
    raw = load_file(os.path.join(d, f"model.{fmt}.safetensors"))
    sd = {}
    for k, v in raw.items():
        if k.endswith("_scale"):
            continue
        if v.dtype == torch.int8:
            v = v.float() * raw[k + "_scale"].float()[:, None]
        if v.dtype == torch.uint8:
            # int4: ggml Q4_0 blocks of 32 along each row; in a block's 16 bytes value j is
            # the low nibble of byte j and value j + 16 the high nibble; w = (q - 8) * scale.
            rows = v.shape[0]
            b = v.reshape(rows, -1, 16).int()
            q = torch.cat([b & 15, b >> 4], dim=2).float() - 8
            v = (q * raw[k + "_scale"].float()[:, :, None]).reshape(rows, -1)
        sd[k] = v
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    assert not missing and not unexpected, (missing, unexpected)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("run")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="cpu")
    # A run whose teacher came from a file (a GGUF or HF teacher) has no teacher of its own to export.
    ap.add_argument("--who", default="teacher,student", help="comma-separated: teacher, student")
    args = ap.parse_args()
    binary, run, device = args.binary, args.run, args.device
    formats = ["f32", "int8", "int4"] if args.backend == "cpu" else ["f32"]
    # A GPU backend: burn-cuda f32 agreed to ~1e-2 on logits of scale ~18 (TF32-sized rounding).
    tol = 1e-4 if args.backend == "cpu" else 2e-2
    vocab = json.load(open(os.path.join(run, "student", "final", "model.json")))["config"]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (100,), generator=g).tolist()
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for who in args.who.split(","):
            for fmt in formats:
                out = os.path.join(tmp, f"{who}-{fmt}")
                sh(binary, "export", run, "--format", fmt, "--out", out, *(["--teacher"] if who == "teacher" else []))
                ref_model = load_export(out, fmt).to(device)
                with torch.no_grad():
                    ref = ref_model(torch.tensor([ids], device=device)).logits[0].float().cpu()
                lp = os.path.join(tmp, f"{who}-{fmt}-logits.safetensors")
                flags = (["--teacher"] if who == "teacher" else []) + (["--int8"] if fmt == "int8" else [])
                # int4: our reading of the same file (its exactness against the Q4_0 round
                # trip is a Rust test).
                model = out if fmt == "int4" else run
                flags = [] if fmt == "int4" else flags
                sh(binary, "logits", "--model", model, "--ids", ",".join(map(str, ids)), "--out", lp, "--backend", args.backend, *flags)
                ours = load_file(lp)["logits"]
                err = (ours - ref).abs().max().item()
                scale = ref.abs().max().item()
                worst[f"{who}/{fmt}"] = err
                print(f"{who:8s} {fmt:5s} max|distill ({args.backend}) - transformers ({device})| = {err:.3e} (logit scale {scale:.1f})")
    ok = all(v < tol for v in worst.values())
    print("PASS" if ok else "FAIL", json.dumps(worst))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
