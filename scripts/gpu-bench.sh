#!/usr/bin/env bash
# The GPU training benchmark of BENCHMARKS.md ("GPU training at the P1 shapes"), ours and
# PyTorch back to back on one machine. Needs a `--features tch` distill binary, PyTorch and
# transformers, and a CUDA GPU:
#   scripts/gpu-bench.sh <distill binary> [out dir]
# Prints our bench-train (default chunking and chunk 4096, with a DISTILL_PROFILE breakdown),
# the PyTorch peer eager (with --profile) and torch.compile, and the teacher-cache build rate.
set -uo pipefail
bin=${1:?distill binary built with --features tch}
out=${2:-/tmp/gpu-bench}
here=$(dirname "$0")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
[ -f /tmp/t1b/model.safetensors ] ||
  python3 "$here/make_random_hf_teacher.py" /tmp/t1b "$here/../tests/fixtures/hf/llama-gqa" 2048 22 5632 32 4 32000
recipe="$here/../recipes/bench/p1-gpu.toml"
B="$bin bench-train $recipe --warm 4"
echo "== distill: phase profile (DISTILL_PROFILE=1, device synchronized per phase)"
DISTILL_PROFILE=1 $B --steps 8 2>&1 | grep -A9 "profile (" | grep -v "^\s*$"
for c in 1024 4096; do
  echo "== distill bench-train, distill.chunk_tokens = $c"
  $B --steps 14 --set distill.chunk_tokens=$c --jsonl "$out/ours.jsonl" 2>&1 | grep -A9 "^bench-train"
done
echo "== PyTorch peer (same model, loss, optimizer, bf16 autocast)"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 --profile | tee -a "$out/peer.jsonl"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 | tee -a "$out/peer.jsonl"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 --compile | tee -a "$out/peer.jsonl"
echo "== teacher cache build (top-k on the device)"
rm -rf runs/p1-cache-bench
timeout 300 "$bin" cache-teacher "$recipe" --set teacher.logits=cache --set run.name=p1-cache-bench --quiet 2>&1 |
  grep "teacher cache:"
