#!/usr/bin/env bash
# The GPU training benchmark of BENCHMARKS.md ("GPU training at the P1 shapes"), ours and
# PyTorch back to back on one machine. Needs a `--features tch` distill binary, PyTorch and
# transformers, and a CUDA GPU:
#   scripts/gpu-bench.sh <distill binary> [out dir]
# Prints our bench-train (the default chunking and chunk 4096, with a DISTILL_PROFILE breakdown),
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
echo "== distill bench-train, distill.chunk_tokens sized to the vocabulary (1,024 at 32k)"
$B --steps 14 --jsonl "$out/ours.jsonl" 2>&1 | grep -A9 "^bench-train"
echo "== distill bench-train, distill.chunk_tokens = 4096"
$B --steps 14 --set distill.chunk_tokens=4096 --jsonl "$out/ours.jsonl" 2>&1 | grep -A9 "^bench-train"
echo "== PyTorch peer (same model, loss, optimizer, bf16 autocast)"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 --profile | tee -a "$out/peer.jsonl"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 | tee -a "$out/peer.jsonl"
python3 "$here/torch_kd_peer.py" --precision bf16-mixed --steps 14 --warm 4 --compile | tee -a "$out/peer.jsonl"
echo "== teacher cache build (top-k on the device; DISTILL_PROFILE: ms per batch of 16,384 positions)"
rm -rf runs/p1-cache-bench
timeout 300 "$bin" cache-teacher "$recipe" --set teacher.logits=cache --set run.name=p1-cache-bench --quiet 2>&1 |
  grep "teacher cache:"
rm -rf runs/p1-cache-bench
DISTILL_PROFILE=1 timeout 300 "$bin" cache-teacher "$recipe" --set teacher.logits=cache --set run.name=p1-cache-bench --quiet 2>&1 |
  grep -A8 "teacher cache:\|teacher cache profile" | grep -v "^\s*$"
echo "== distillation-loss memory at vocab 128k on the GPU (bench-loss; each mode in a fresh process)"
# 256 tokens a chunk: our default at vocab 128k and what Liger's fused linear JSD picks at this shape.
"$bin" bench-loss --backend libtorch --vocab 128256 --tokens 8192 --hidden 4096 --chunk 256 2>&1 | tail -6
"$bin" bench-loss --backend libtorch --vocab 128256 --tokens 8192 --hidden 4096 --chunk 1024 2>&1 | tail -1
"$bin" bench-loss --backend libtorch --vocab 128256 --tokens 2048 --hidden 1024 --chunk 128 2>&1 | tail -5
