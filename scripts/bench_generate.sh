#!/usr/bin/env bash
# The generation benchmark of BENCHMARKS.md ("Batched generation against transformers"), ours
# and transformers' `generate` back to back on one GPU, at SmolLM2-135M's shape (random bf16
# weights: every row runs to the limit, so the weights do not change the work):
#   scripts/bench_generate.sh <distill binary built with --features tch> [out dir]
set -uo pipefail
bin=${1:?distill binary built with --features tch}
out=${2:-/tmp/gen-bench}
here=$(dirname "$0")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
model=/tmp/smollm2-shape
[ -f $model/model.safetensors ] || python3 - "$model" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
c = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
LlamaForCausalLM(c).to(torch.bfloat16).save_pretrained(sys.argv[1])
PY
# Our loader reads the folder's tokenizer.json (the model's vocabulary is what matters here).
[ -f $model/tokenizer.json ] || cp "$here/../tests/fixtures/hf/llama-gqa/tokenizer.json" $model/
for shape in "1 128 256" "8 128 256" "32 128 256" "64 256 256"; do
  set -- $shape
  echo "== batch $1, prompt $2, new $3"
  "$bin" bench-generate --model $model --backend libtorch --dtype bf16 --batch $1 --prompt-len $2 --new-tokens $3 | tee -a "$out/ours.jsonl"
  python3 "$here/generate_peer.py" $model --batch $1 --prompt-len $2 --new-tokens $3 | tee -a "$out/peer.jsonl"
done
echo "== sampled (temperature 1), batch 32"
"$bin" bench-generate --model $model --backend libtorch --dtype bf16 --batch 32 --prompt-len 128 --new-tokens 256 --temperature 1 | tee -a "$out/ours.jsonl"
python3 "$here/generate_peer.py" $model --batch 32 --prompt-len 128 --new-tokens 256 --temperature 1 | tee -a "$out/peer.jsonl"
echo "== transformers with the static cache and torch.compile, batch 32"
timeout 300 python3 "$here/generate_peer.py" $model --batch 32 --prompt-len 128 --new-tokens 256 --static --compile | tee -a "$out/peer.jsonl"
