#!/usr/bin/env python3
"""transformers computes our Mixtral export as we do.

    python3 scripts/mixtral_parity.py <export folder> <ours.json>

<ours.json> is `distill logits --model <export folder> --ids ...` (its `ids` and `logits`).
Loads the folder with transformers' MixtralForCausalLM in f32 (eager attention) and compares
its logits for the same ids. Exit 1 when any logit differs by more than 1e-4.
"""
import json
import sys

import torch
from transformers import AutoConfig, MixtralForCausalLM

folder, ours_path = sys.argv[1], sys.argv[2]
ours = json.load(open(ours_path))
cfg = AutoConfig.from_pretrained(folder)
assert cfg.model_type == "mixtral", cfg.model_type
model = MixtralForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    logits = model(torch.tensor([ours["ids"]])).logits[0]
want = torch.tensor(ours["logits"])
err = (logits - want).abs().max().item()
same_top = (logits.argmax(-1) == want.argmax(-1)).float().mean().item()
print(json.dumps({"max_abs_logit_diff": err, "top1_equal": same_top, "experts": cfg.num_local_experts,
                  "per_token": cfg.num_experts_per_tok, "transformers": __import__("transformers").__version__}))
sys.exit(0 if err < 1e-4 else 1)
