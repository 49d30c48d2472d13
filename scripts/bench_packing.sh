#!/usr/bin/env bash
# Packed documents with boundaries vs one document per row, at the same budget (steps x batch x
# seq_len), on the chat quickstart (synthetic dialogues, SmolLM2's template, assistant-only
# loss). Prints, per packing: the mean input and loss tokens per step, and the students'
# held-out assistant-token loss, both evaluated on the same layout (one document per row).
#
#   bash scripts/bench_packing.sh [extra --set overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DISTILL:-target/debug/distill}
mkdir -p runs
for p in documents doc_per_row; do
  name="bench-packing-$p"
  rm -rf "runs/$name"
  /usr/bin/time -f "$p: %e s wall" "$bin" run recipes/quickstart-chat.toml --quiet \
    --set run.name="$name" --set data.packing="$p" "$@" > "runs/$name.log" 2>&1 || { cat "runs/$name.log"; exit 1; }
  tail -1 "runs/$name.log"
done
for p in documents doc_per_row; do
  name="bench-packing-$p"
  python3 - "runs/$name/metrics.jsonl" "$p" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"phase":"student"' in l.replace(" ", "")]
steps = len(rows)
tokens = rows[-1]["tokens"] / steps
loss = sum(r["loss_tokens"] for r in rows) / steps
print(f"{sys.argv[2]}: {steps} steps, {tokens:.0f} input tokens/step, {loss:.0f} loss tokens/step")
PY
  "$bin" eval "runs/$name" --packing doc_per_row | sed "s/^/$p (held out, one document per row): /"
done
