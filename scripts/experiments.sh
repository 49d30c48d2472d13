#!/usr/bin/env bash
# The objective / curriculum / filtering experiment of BENCHMARKS.md: the quickstart corpus and
# budget (300 steps x 16 x 128 tokens), one frozen teacher for every variant, held-out
# perplexity of the student per variant and seed. Variants run in parallel, one CPU thread each.
#
# usage: scripts/experiments.sh <distill binary> <teacher dir> <work dir> <seed> [variant...]
# e.g.   scripts/experiments.sh target/debug/distill runs/quickstart/teacher/final /tmp/exp 1
# Prints one JSON line per finished run: {"variant", "seed", "student_ppl", ...}.
#
# The cur_* variants (curriculum sweep) and fkl_cache train from one shared top-32 q8 teacher
# cache per seed ($WORK/cache-s<seed>): build it first with the variant `cache`, alone, e.g.
#   scripts/experiments.sh <bin> <teacher> /tmp/exp 1 cache && scripts/experiments.sh ... 1 fkl_cache cur_root_ce
# (their curriculum scores are then read from the cache too).
set -euo pipefail
BIN=$1; TEACHER=$2; WORK=$3; SEED=$4; shift 4
ALL="ce fkl rkl jsd sfkl srkl tv fkl_curriculum fkl_cache noise_nofilter noise_filter"
VARIANTS=${*:-$ALL}
mkdir -p "$WORK"
CACHED="--set teacher.logits=cache --set cache.k=32 --set cache.values=q8 --set cache.path=$WORK/cache-s$SEED"

overrides() {
  case $1 in
    ce) echo "--set distill.alpha=1.0" ;;
    fkl) echo "" ;;
    rkl) echo "--set distill.divergence=reverse_kl" ;;
    jsd) echo "--set distill.divergence=jsd" ;;
    sfkl) echo "--set distill.divergence=skew_forward_kl" ;;
    srkl) echo "--set distill.divergence=skew_reverse_kl" ;;
    tv) echo "--set distill.divergence=tv" ;;
    fkl_curriculum) echo "--set curriculum.schedule=root" ;;
    fkl_cache) echo "$CACHED" ;;
    cur_root_ce) echo "$CACHED --set curriculum.schedule=root" ;;
    cur_root_ce_soft) echo "$CACHED --set curriculum.schedule=root --set curriculum.min_weight=0.5" ;;
    cur_linear_entropy) echo "$CACHED --set curriculum.schedule=linear --set curriculum.score=teacher_entropy" ;;
    cur_step_length) echo "$CACHED --set curriculum.schedule=step --set curriculum.score=length" ;;
    cur_self_paced) echo "$CACHED --set curriculum.schedule=self_paced" ;;
    cur_order) echo "$CACHED --set curriculum.order=easy_to_hard" ;;
    cur_order_root) echo "$CACHED --set curriculum.order=easy_to_hard --set curriculum.schedule=root --set curriculum.min_weight=0.5" ;;
    noise_nofilter) echo "--set data.synthetic_noise=0.3 --set data.filter.enabled=false" ;;
    noise_filter) echo "--set data.synthetic_noise=0.3 --set data.filter.dedup=minhash --set data.filter.teacher_ppl_max=6" ;;
    # Student architectures (issue 39) at the quickstart student's active parameters: MoE of
    # 4 and 8 experts of half the FFN width, top-2; Linformer and Performer in both layers;
    # the Mamba-2 hybrid. Nothing of these exports yet: no formats.
    arch_gqa) echo "--set export.formats=[]" ;;
    arch_moe4) echo "--set export.formats=[] --set student.model.moe={experts=4,active=2,d_ff_expert=176}" ;;
    arch_moe8) echo "--set export.formats=[] --set student.model.moe={experts=8,active=2,d_ff_expert=176}" ;;
    arch_linformer) echo "--set export.formats=[] --set student.model.layer_pattern=\"LL\" --set student.model.linformer.chunk=32 --set student.model.linformer.rows=8" ;;
    arch_performer) echo "--set export.formats=[] --set student.model.layer_pattern=\"PP\" --set student.model.performer.chunk=32" ;;
    arch_hybrid) echo "--set export.formats=[] --set student.config=configs/student-hybrid.toml" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

run_one() {
  local v=$1 name="$1-s$SEED"
  if [ "$v" = cache ]; then
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=${THREADS:-1} "$BIN" cache-teacher recipes/quickstart.toml --quiet \
      --set run.name="cachebuild-s$SEED" --set run.out_dir="$WORK" --set run.seed="$SEED" \
      --set teacher.kind=checkpoint --set teacher.path="$TEACHER" --set tokenizer.kind=teacher \
      $CACHED > "$WORK/cachebuild-s$SEED.log" 2>&1 || { echo "{\"variant\":\"cache\",\"seed\":$SEED,\"failed\":true}"; return; }
    echo "{\"variant\":\"cache\",\"seed\":$SEED,\"built\":true}"
    return
  fi
  # shellcheck disable=SC2046
  RAYON_NUM_THREADS=${THREADS:-1} "$BIN" run recipes/quickstart.toml --quiet \
    --set run.name="$name" --set run.out_dir="$WORK" --set run.seed="$SEED" \
    --set teacher.kind=checkpoint --set teacher.path="$TEACHER" --set tokenizer.kind=teacher \
    $(overrides "$v") > "$WORK/$name.log" 2>&1 || { echo "{\"variant\":\"$v\",\"seed\":$SEED,\"failed\":true}"; return; }
  python3 - "$WORK/$name" "$v" "$SEED" <<'EOF'
import json, sys
d, v, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(f"{d}/summary.json"))
print(json.dumps({"variant": v, "seed": seed, "student_ppl": s["student"]["ppl"], "student_loss": s["student"]["loss"],
                  "teacher_ppl": s["teacher"]["ppl"], "int8_ppl": (s.get("student_int8") or {}).get("ppl"),
                  "held_out_tokens": s["student"]["tokens"], "wall_s": s["wall_s"], "student_tok_per_s": s["student_tok_per_s"]}))
EOF
}

for v in $VARIANTS; do run_one "$v" & done
wait
