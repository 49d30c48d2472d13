#!/usr/bin/env python3
"""A half-precision teacher (`teacher.dtype`, `distill logits --dtype`) against transformers.

For the bf16 and f16 fixtures in tests/fixtures/hf, runs `distill logits --dtype <stored dtype>`
on the given backend and compares with the logits transformers computed in that dtype and in
f32 (reference.safetensors, made by scripts/make_hf_fixtures.py). Exit 1 if the difference to
transformers in the same dtype exceeds 2e-2.

usage: python3 scripts/half_parity.py <distill binary> [--backend cuda]
"""
import subprocess
import sys
import tempfile

from safetensors.torch import load_file

CASES = [("llama-mqa-rope3", "bf16"), ("qwen2-tied", "f16")]


def main():
    bin_ = sys.argv[1]
    backend = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "cpu"
    bad = False
    for name, dtype in CASES:
        d = f"tests/fixtures/hf/{name}"
        ref = load_file(f"{d}/reference.safetensors")
        ids = ",".join(str(int(i)) for i in ref["ids"].flatten().tolist())
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            subprocess.run([bin_, "logits", "--model", d, "--ids", ids, "--backend", backend, "--dtype", dtype, "--out", f.name],
                           check=True, stdout=subprocess.DEVNULL)
            got = load_file(f.name)["logits"].float()
        native = ref["logits_native"].float().reshape(got.shape)
        f32 = ref["logits_f32"].float().reshape(got.shape)
        e_native = (got - native).abs().max().item()
        e_f32 = (got - f32).abs().max().item()
        ok = e_native < 2e-2
        bad |= not ok
        print(f"{name} on {backend} in {dtype}: max abs diff {e_native:.3e} vs transformers in {dtype}, "
              f"{e_f32:.3e} vs transformers in f32 (logit scale {f32.abs().max().item():.2f}) {'ok' if ok else 'FAIL'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
