#!/usr/bin/env bash
# Checks that need PyTorch/transformers (and a GPU where present). CI has neither; run this by
# hand on a machine that has them, with a distill binary and a finished run directory:
#   scripts/gpu-check.sh target/release/distill runs/quickstart
# With TCH_BIN=<a --features tch binary> (and TCH_TESTS=<its unit-test binary>) it also runs
# the LibTorch route's tests and scripts/gpu-bench.sh.
set -euo pipefail
bin=${1:?distill binary}
run=${2:?run directory}
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/hf_parity.py" "$bin" "$run"
# Regenerates the SSD fixture (compare with the committed one: `git diff --stat tests/fixtures`).
PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/ssd_reference.py" "${SSD_OUT:-/tmp/ssd_reference.safetensors}"
# Attention kernel seam vs PyTorch SDPA (enable_gqa=True). BACKENDS lists the backends the
# binary was built with, e.g. BACKENDS="cpu cuda" for a `--features cuda` build.
for b in ${BACKENDS:-cpu}; do
  for dt in f32 bf16; do
    PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/attention_parity.py" "$bin" --backend "$b" --dtype "$dt" || status=1
  done
done
# Half-precision teacher (teacher.dtype = bf16 / f16) vs transformers in that dtype.
for b in ${BACKENDS:-cpu}; do
  PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/half_parity.py" "$bin" --backend "$b" || status=1
done
# The LibTorch route (a `--features tch` build): its unit tests (the GPU attention kernels, the
# AdamW update and the gradient norm as PyTorch kernels against their reference paths; built
# with `cargo test --release --features tch --lib --no-run`) and the training benchmark.
if [ -n "${TCH_TESTS:-}" ]; then
  "$TCH_TESTS" --test-threads 8 2>&1 | grep -E "kernels::torch|adamw|fused|test result|FAILED|panicked" || status=1
fi
if [ -n "${TCH_BIN:-}" ]; then
  # The training attention op (cuDNN's and FlashAttention-2's kernels) against SDPA on each.
  PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/attention_peer.py" "$TCH_BIN" --rounds 2 || status=1
  "$(dirname "$0")/bf16-agreement.sh" "$TCH_BIN" || status=1
  "$(dirname "$0")/gpu-bench.sh" "$TCH_BIN" || status=1
fi
exit ${status:-0}
