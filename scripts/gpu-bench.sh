#!/usr/bin/env bash
# The GPU training benchmark of BENCHMARKS.md ("GPU training at the P1 shapes"), ours and
# PyTorch back to back on one machine. Needs a `--features tch` distill binary, PyTorch and
# transformers, and a CUDA GPU:
#   scripts/gpu-bench.sh <distill binary> [out dir] [p1,p1l,p1l-mem,p1l-batch,p1l-peer,p1l-cache] (default: all)
# P1 prints our bench-train (the default chunking and chunk 4096, with a DISTILL_PROFILE breakdown),
# the PyTorch peer eager (with --profile) and torch.compile, and the teacher-cache build rate.
set -uo pipefail
bin=${1:?distill binary built with --features tch}
out=${2:-/tmp/gpu-bench}
here=$(dirname "$0")
sections=${3:-p1,p1l,p1l-batch,p1l-peer,p1l-cache}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
want() { [[ ",$sections," == *",$1,"* ]]; }
if want p1; then
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
fi

# P1-L (issue 37): a Llama-3.2-1B-shaped student taught by a random Llama-3.1-8B-shaped teacher,
# vocabulary 128,256. Ours with and without activation checkpointing, the largest batch of
# 2,048-token rows each trains, and 8,192-token rows; then the PyTorch peer.
if want p1l || want p1l-batch || want p1l-peer || want p1l-cache; then
  [ -f /tmp/t8b/model.safetensors ] ||
    python3 "$here/make_random_hf_teacher.py" /tmp/t8b "$here/../tests/fixtures/hf/llama-gqa" 4096 32 14336 32 8 128256 8192
fi
if want p1l; then
  L="$bin bench-train $here/../recipes/bench/p1l-gpu.toml --warm 2"
  ac() { echo "--set run.activation_checkpointing=\"$1\""; }
  for a in none layers; do
    echo "== distill P1-L, 8 x 2048, activation_checkpointing = $a"
    $L --steps 6 $(ac $a) --jsonl "$out/ours-p1l.jsonl" 2>&1 | grep -A9 "^bench-train\|rror"
  done
  echo "== distill P1-L, 8192-token rows"
  for a in none layers; do
    $L --steps 4 $(ac $a) --set data.seq_len=8192 --set student.model.max_seq_len=8192 --set optim.batch_size=2 --set run.name=p1l8k \
      --jsonl "$out/ours-p1l-8k.jsonl" 2>&1 | grep -A9 "^bench-train\|rror"
  done
fi
if want p1l-mem; then
  # Peak GPU memory, ours against PyTorch eager at the same shapes, each read the same way: the
  # device's memory.used sampled by nvidia-smi every 0.25 s while the process runs, less what
  # was in use before it started (PyTorch's own max_memory_reserved is in its JSON line too).
  sampled() {
    local base f=$(mktemp)
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$f" &
    local smi=$!
    "$@"
    kill $smi; wait $smi 2>/dev/null
    echo "   sampled device peak: $(( $(sort -n "$f" | tail -1) - base )) MiB above the $base MiB in use before"
  }
  # Seconds since the start on each line: where the setup goes.
  stamped() { python3 -uc 'import sys, time
t = time.time()
for l in sys.stdin: print(f"{time.time() - t:7.1f} {l}", end="")'; }
  L="$bin bench-train $here/../recipes/bench/p1l-gpu.toml --warm 2"
  for b in ${P1L_MEM_BATCHES:-8 2}; do
    for a in none layers; do
      echo "== distill P1-L, $b x 2048, activation_checkpointing = $a"
      sampled $L --steps 5 --set run.activation_checkpointing=\"$a\" --set optim.batch_size=$b \
        --jsonl "$out/ours-p1l-mem.jsonl" 2>&1 | stamped | grep -v "^ *[0-9.]* *$" | tail -40
    done
    echo "== PyTorch eager P1-L, $b x 2048"
    sampled env P1L_B=$b P1L_TEACHER=0 python3 "$here/torch_kd_peer_l.py" 5 eager 2>&1 | tail -3 | tee -a "$out/peer-p1l-mem.jsonl"
  done
fi
if want p1l-batch; then
  # The issue asks for an 80 GB card: on a larger one (an H200), a second process holds the
  # memory beyond an H100's 81,559 MiB for the length of the search (its own CUDA context,
  # ~0.5 GiB, comes off the H100's figure too: the search errs on the small side).
  python3 - <<'PY' &
import torch, time
free, total = torch.cuda.mem_get_info()
extra = total - 81559 * 2**20
if extra > 0:
    x = torch.empty(extra, dtype=torch.uint8, device="cuda")
    print(f"holding {extra / 2**30:.1f} GiB of {total / 2**30:.1f} GiB: an 80 GB card's memory is left", flush=True)
time.sleep(3600)
PY
  ballast=$!
  sleep 15
  L="$bin bench-train $here/../recipes/bench/p1l-gpu.toml --warm 1"
  ac() { echo "--set run.activation_checkpointing=\"$1\""; }
  echo "== distill P1-L, largest batch of 2048-token rows (none, then layers)"
  for a in none layers; do
    for b in ${P1L_BATCHES:-12 16 24 32 48}; do
      $L --steps 3 $(ac $a) --set optim.batch_size=$b --jsonl "$out/ours-p1l-batch.jsonl" >"$out/p1l-$a-$b.log" 2>&1 &&
        echo "$a: batch $b trains ($(grep "GPU memory" "$out/p1l-$a-$b.log" | tr -s ' '))" ||
        { echo "$a: batch $b fails: $(grep -m1 -i "out of memory\|error" "$out/p1l-$a-$b.log" | cut -c1-200)"; break; }
    done
  done
  kill $ballast
fi
if want p1l-peer; then
  echo "== PyTorch peer P1-L, 8 x 2048: eager, torch.compile"
  P1L_TEACHER=0 python3 "$here/torch_kd_peer_l.py" 6 eager | tee -a "$out/peer-p1l.jsonl"
  P1L_CKPT=1 P1L_TEACHER=0 python3 "$here/torch_kd_peer_l.py" 6 eager | tee -a "$out/peer-p1l.jsonl"
  P1L_T=8192 P1L_B=2 P1L_TEACHER=0 python3 "$here/torch_kd_peer_l.py" 4 eager | tee -a "$out/peer-p1l.jsonl"
  timeout 300 python3 "$here/torch_kd_peer_l.py" 6 compile | tee -a "$out/peer-p1l.jsonl"
fi
if want p1l-cache; then
  # The teacher cache at vocabulary 128k (top-32, q8, two temperatures as at P1), against the
  # 8B teacher's forward alone in PyTorch, back to back.
  rm -rf runs/p1l-cache-bench
  DISTILL_PROFILE=1 timeout 400 "$bin" cache-teacher "$here/../recipes/bench/p1l-gpu.toml" --set teacher.logits=cache \
    --set run.name=p1l-cache-bench --set data.synthetic_docs=3000 --quiet 2>&1 |
    grep -A8 "teacher cache:\|teacher cache profile\|rror" | grep -v "^\s*$"
  rm -rf runs/p1l-cache-bench
  echo "== PyTorch: the 8B teacher's forward alone, 8 x 2048"
  python3 "$here/torch_kd_peer_l.py" 0 none | tee -a "$out/peer-p1l.jsonl"
fi
