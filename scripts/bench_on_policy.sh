#!/usr/bin/env bash
# BENCHMARKS.md "On-policy distillation against off-policy and sequence-level KD": SmolLM2-135M-
# Instruct (GGUF) teaches a depth-pruned student (12 of its 30 layers) on data/chat.jsonl,
# four ways at about equal wall-clock: off-policy KD (forward KL on the dataset's answers),
# sequence-level KD (cross-entropy on answers the teacher wrote with `distill synth` to
# prompts disjoint from the held-out ones; the synth time counted in its budget), and
# on-policy reverse KL at fraction 0.5 and 1. Each arm's steps come from its own seconds per
# step over 3 calibration steps. Evaluation on one held-out split (the off-policy run's):
# assistant-token loss, and the student's greedy text graded by the teacher.
#   bash scripts/fetch_smollm2.sh && scripts/bench_on_policy.sh [distill binary] [seconds per arm]
set -euo pipefail
bin=${1:-target/debug/distill}
budget=${2:-300}
out=${OUT_DIR:-runs}
recipe=recipes/smollm2-chat.toml
student="--set student.model.d_model=576 --set student.model.n_heads=9 --set student.model.n_kv_heads=3 --set student.model.d_ff=1536 --set student.model.n_layers=12"
common="$student --set data.packing=doc_per_row --set run.out_dir=$out --set optim.warmup_steps=2"
on="--set distill.on_policy.max_new_tokens=96 --set distill.on_policy.temperature=1"
secs_per_step() { python3 -c "import json,sys; r=[json.loads(l) for l in open('$1/metrics.jsonl') if '\"student\"' in l]; print((r[-1]['elapsed_s']-r[0]['elapsed_s'])/(len(r)-1))"; }
arm() { # name, extra flags, seconds available
  local name=$1 extra=$2 avail=$3
  rm -rf "$out/$name-cal" "$out/$name"
  $bin run $recipe $common $extra --set run.name=$name-cal --set optim.steps=4 --set checkpoint.every_steps=4 --set eval.every_steps=4 --quiet >/dev/null
  local sps; sps=$(secs_per_step "$out/$name-cal")
  local steps; steps=$(python3 -c "print(max(3, int($avail / $sps)))")
  echo "$name: $sps s/step -> $steps steps in $avail s"
  $bin run $recipe $common $extra --set run.name=$name --set optim.steps=$steps --set checkpoint.every_steps=$steps --set eval.every_steps=$steps --quiet | tail -4
}
arm op-offpolicy "--set distill.alpha=0" "$budget"
arm op-half "$on --set distill.on_policy.fraction=0.5" "$budget"
arm op-full "$on --set distill.on_policy.fraction=1" "$budget"
# Sequence-level KD: the teacher answers 360 synthetic dialogues' first user turns (another
# seed than data/chat.jsonl's), then the student trains on those answers.
rm -rf "$out/op-synth"
t0=$(date +%s.%N)
$bin synth $recipe $common --set run.name=op-synth --set run.seed=7 --set data.source=synthetic \
  --set data.synthetic_format=chat --set data.synthetic_docs=360 --set synth.max_new_tokens=128 \
  --set synth.temperature=0 --set synth.batch_size=24 | tail -2
synth_s=$(python3 -c "import time; print(time.time() - $t0)")
left=$(python3 -c "print(max(30.0, $budget - $synth_s))")
echo "op-seqkd: synth took $synth_s s, $left s left to train"
arm op-seqkd "--set distill.alpha=1 --set data.paths=[\"$out/op-synth/synth/shard-*.jsonl\"] --set data.valid_fraction=0.05" "$left"
# One held-out split for all: each student evaluated in a copy of the off-policy run.
for name in op-offpolicy op-half op-full op-seqkd; do
  rm -rf "$out/eval-$name"; cp -r "$out/op-offpolicy" "$out/eval-$name"
  rm -rf "$out/eval-$name/student/final"; cp -r "$out/$name/student/final" "$out/eval-$name/student/final"
  echo "== $name: $(tail -1 $out/$name/metrics.jsonl | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("steps", r["step"], "elapsed", round(r["elapsed_s"],1), "s")')"
  python3 - "$out/$name/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"student"' in l and '"step"' in l]
gen = sum(r.get("rollout_s", 0) or 0 for r in rows)
print(f"   generation {gen:.1f} s of {rows[-1]['elapsed_s']:.1f} s training wall-clock; on-policy batches {sum(r.get('on_policy', 0) or 0 for r in rows)} of {len(rows)}")
PY
  $bin eval "$out/eval-$name" --policy 40 --policy-tokens 64 --json
done
