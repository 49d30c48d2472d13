#!/usr/bin/env bash
# Where a student starts, measured: SmolLM2-135M-Instruct (GGUF) teaches a student of about half
# its parameters on Python's documentation, from a random init, from depth pruning (12 of 30
# layers kept by block influence) and from width pruning (d_model 384, 6/2 heads, FFN 1024),
# each with and without the hidden-state loss (cosine, uniform layer pairs), all with the same
# token budget, optimizer and seed. Prints a markdown table of held-out losses (BENCHMARKS.md).
#
#   bash scripts/fetch_smollm2.sh && python3 scripts/python_docs_corpus.py runs/corpora/python-docs.jsonl
#   bash scripts/bench_smollm2_starts.sh [distill binary] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/distill}
STEPS=${2:-24}
RECIPE=recipes/smollm2-prune.toml
COMMON=(--set data.seq_len=128 --set data.valid_fraction=0.05 --set optim.batch_size=8 --set "optim.steps=$STEPS"
  --set optim.warmup_steps=2 --set "checkpoint.every_steps=$STEPS" --set "eval.every_steps=$STEPS"
  --set 'export.formats=[]' --quiet)
WIDTH=()
DEPTH=(--set student.model.d_model=576 --set student.model.n_heads=9 --set student.model.n_kv_heads=3
  --set student.model.d_ff=1536 --set student.model.n_layers=12)
RANDOM_INIT=(--set student.init=random --set student.model.tie_embeddings=true --set student.model.max_seq_len=8192
  --set student.model.rope_theta=100000)
HIDDEN=(--set distill.hidden.weight=1.0 --set distill.hidden.loss=cosine)
run() {
  local name=$1; shift
  [ -f "runs/bench-starts-$name/summary.json" ] || "$BIN" run "$RECIPE" --set "run.name=bench-starts-$name" "${COMMON[@]}" "$@" >"runs/bench-starts-$name.log" 2>&1
  python3 - "$name" <<'PY'
import json, sys
n = sys.argv[1]
s = json.load(open(f"runs/bench-starts-{n}/summary.json"))
rows = [json.loads(l) for l in open(f"runs/bench-starts-{n}/metrics.jsonl") if '"student"' in l]
first = rows[0].get("eval_loss") if rows and "eval_loss" in rows[0] else None
print(f"| {n} | {s['student_params']:,} | {rows[-1]['tokens']:,} | {s['student']['loss']:.4f} | {s['student']['ppl']:.2f} | {s['teacher']['loss']:.4f} |")
PY
}
echo "| start | student matmul params | training tokens | held-out loss | ppl | teacher loss |"
echo "|---|---|---|---|---|---|"
run random "${WIDTH[@]}" "${RANDOM_INIT[@]}"
run random-hidden "${WIDTH[@]}" "${RANDOM_INIT[@]}" "${HIDDEN[@]}"
run depth "${DEPTH[@]}"
run depth-hidden "${DEPTH[@]}" "${HIDDEN[@]}"
run width "${WIDTH[@]}"
run width-hidden "${WIDTH[@]}" "${HIDDEN[@]}"
