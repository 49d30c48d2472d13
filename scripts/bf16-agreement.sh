#!/usr/bin/env bash
# CPU (burn flex) vs GPU (LibTorch) under bf16 mixed precision: the same 20-step distillation
# run on both backends, per-step training loss compared (issue 19: "CPU-vs-GPU loss agreement
# within mixed-precision tolerance"). Needs a `--features tch` binary, a CUDA GPU and PyTorch:
#   scripts/bf16-agreement.sh <distill binary> [max relative difference, default 1e-3]
set -euo pipefail
bin=${1:?distill binary built with --features tch}
tol=${2:-1e-3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
# A random bf16 Llama teacher (d256, 4 layers, 4 heads / 2 KV) with the fixtures' tokenizer.
python3 "$here/make_random_hf_teacher.py" "$work/teacher" "$here/../tests/fixtures/hf/llama-gqa" 256 4 704 4 2 1024
cat >"$work/recipe.toml" <<TOML
[run]
name = "agree"
seed = 3
precision = "bf16"
[data]
source = "synthetic"
synthetic_docs = 400
seq_len = 128
[tokenizer]
kind = "teacher"
[teacher]
kind = "hf"
path = "$work/teacher"
dtype = "bf16"
[student.model]
d_model = 128
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ff = 352
max_seq_len = 128
[distill]
alpha = 0.5
temperature = 2.0
[optim]
lr = 1e-3
warmup_steps = 2
batch_size = 8
steps = 20
[checkpoint]
every_steps = 1000
[eval]
every_steps = 1000
batches = 1
[export]
formats = []
TOML
cd "$work"
for b in cpu libtorch; do
  "$bin" run recipe.toml --set run.backend=$b --set run.name=agree-$b --quiet >/dev/null
done
python3 - "$tol" <<'PY'
import glob, json, sys
tol = float(sys.argv[1])
# The distillation phase's rows (they carry the divergence term).
rows = lambda b: [r for f in glob.glob(f"runs/agree-{b}/**/metrics.jsonl", recursive=True)
                  for r in map(json.loads, open(f)) if "kl" in r]
cpu, gpu = rows("cpu"), rows("libtorch")
assert len(cpu) == len(gpu) == 20, (len(cpu), len(gpu))
worst = 0.0
for c, g in zip(cpu, gpu):
    rel = abs(c["loss"] - g["loss"]) / abs(c["loss"])
    worst = max(worst, rel)
    print(f"step {c['step']:3d}: cpu {c['loss']:.5f}  gpu {g['loss']:.5f}  rel {rel:.2e}")
print(f"steps {len(cpu)}, max relative loss difference {worst:.2e} (tolerance {tol:g}); "
      f"first {cpu[0]['loss']:.4f} -> last cpu {cpu[-1]['loss']:.4f} gpu {gpu[-1]['loss']:.4f}")
sys.exit(0 if worst <= tol else 1)
PY
