"""(scripts/ copy of ../shared/perf/torch_gpu_kd_l.py, extended: P1L_T row length, P1L_CKPT=1 for
transformers' gradient checkpointing, reserved memory beside allocated.)
PyTorch peer for P1-L (the realistic size): a Llama-3.2-1B-shaped student distilled from a
Llama-3.1-8B-shaped random teacher, vocab 128,256, batch 8 x 2,048, bf16 autocast with f32 master
weights and fused AdamW (= distill run.precision = "bf16"), SDPA, loss a*CE + (1-a)*t^2*KL in f32.
Prints one JSON line per mode: tokens/s, step ms, peak memory."""
import json, sys, time
import torch, torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

import os
dev, V = "cuda", 128256
T, B = int(os.environ.get("P1L_T", "2048")), int(os.environ.get("P1L_B", "8"))
ckpt = os.environ.get("P1L_CKPT") == "1"
steps, warm = int(sys.argv[1]) if len(sys.argv) > 1 else 10, 3
modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["eager"]
modes = [m for m in modes if m != "none"]  # "none": the teacher's forward alone
def cfg(d, L, h, kv, ff, tied):
    return LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=ff, num_hidden_layers=L, num_attention_heads=h,
                       num_key_value_heads=kv, max_position_embeddings=T, rope_theta=500000.0,
                       attn_implementation="sdpa", tie_word_embeddings=tied, rms_norm_eps=1e-5)
torch.manual_seed(0)
with torch.device(dev):
    teacher = LlamaForCausalLM(cfg(4096, 32, 32, 8, 14336, False)).to(torch.bfloat16).eval().requires_grad_(False)
def kd(s, t, y, a=0.5, tau=2.0):
    s = s.float().reshape(-1, V); t = t.float().reshape(-1, V)
    ce = F.cross_entropy(s, y.reshape(-1))
    kl = F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True, reduction="batchmean")
    return a * ce + (1 - a) * tau * tau * kl
for mode in modes:
    torch.manual_seed(1)
    with torch.device(dev):
        student = LlamaForCausalLM(cfg(2048, 16, 32, 8, 8192, True))
    if ckpt:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    fwd = torch.compile(student) if mode == "compile" else student
    torch.cuda.reset_peak_memory_stats(); t_first = time.time()
    for i in range(steps + warm):
        if i == 1: first = time.time() - t_first
        if i == warm: torch.cuda.synchronize(); t0 = time.time()
        ids = torch.randint(0, V, (B, T + 1), device=dev); x, y = ids[:, :-1], ids[:, 1:]
        with torch.no_grad(): tl = teacher(x).logits
        with torch.autocast("cuda", torch.bfloat16):
            sl = fwd(x).logits
        loss = kd(sl, tl, y); del tl, sl
        loss.backward(); torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); dt = time.time() - t0
    print(json.dumps({"mode": mode, "batch": B, "seq": T, "checkpointing": ckpt, "tok_s": round(steps * B * T / dt), "step_ms": round(1000 * dt / steps, 1),
                      "first_step_s": round(first, 1), "loss": round(loss.item(), 4),
                      "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      "reserved_GiB": round(torch.cuda.max_memory_reserved() / 2**30, 2),
                      "student_M": sum(p.numel() for p in student.parameters()) / 1e6}), flush=True)
    del student, opt, fwd; torch.cuda.empty_cache()
# teacher forward alone (the cache build's peer)
if os.environ.get("P1L_TEACHER", "1") != "1": sys.exit(0)
x = torch.randint(0, V, (B, T), device=dev)
for i in range(6):
    if i == 2: torch.cuda.synchronize(); t0 = time.time()
    with torch.no_grad(): teacher(x).logits
torch.cuda.synchronize(); print(json.dumps({"mode": "teacher_forward", "tok_s": round(4 * B * T / (time.time() - t0))}))
