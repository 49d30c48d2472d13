"""PyTorch peer of `distill bench-train`: the same KD training step in plain PyTorch, so anyone
with a GPU (or 2 CPU cores) can reproduce BENCHMARKS.md's ours-vs-PyTorch table.

Same model (HF Llama: RMSNorm, RoPE, GQA, SwiGLU, tied embeddings), same loss
(alpha * CE + (1 - alpha) * tau^2 * KL(teacher || student), mean over tokens, in f32), same
optimizer as distill's defaults (AdamW betas 0.9/0.95, eps 1e-8, weight decay 0.01 on the
matrices only, global grad-norm clip 1.0), same data shape (batch x seq tokens, all real).

Precision (--precision):
  bf16-mixed  f32 master weights and AdamW state, bf16 autocast compute (= distill run.precision = "bf16")
  bf16-pure   weights, grads and AdamW state in bf16 (what ../shared/perf/torch_gpu_kd.py measures)
  f32         everything f32 (TF32 off; = distill's default precision)
The teacher runs in --teacher-dtype (bf16 on GPU by default, f32 on CPU).

Shapes: --shapes p1 (GPU: 100M student <- 1.1B teacher, V 32000, 16 x 1024) or p4 (CPU-small:
d256 4L <- d384 6L, V 4096, 8 x 256), as ../shared/perf/*.toml. Prints one JSON line.

  python3 scripts/torch_kd_peer.py --shapes p1 --precision bf16-mixed
  taskset -c 2,3 python3 scripts/torch_kd_peer.py --shapes p4 --device cpu --threads 2
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    # student (d, layers, heads, kv, ff), teacher (d, layers, heads, kv, ff), vocab, batch, seq
    "p1": dict(student=(768, 12, 12, 4, 2048), teacher=(2048, 22, 32, 4, 5632), V=32000, B=16, T=1024,
               teacher_tied=False),
    "p4": dict(student=(256, 4, 4, 2, 704), teacher=(384, 6, 6, 2, 1024), V=4096, B=8, T=256, teacher_tied=True),
}


def llama(shape, V, T, tied):
    d, layers, heads, kv, ff = shape
    return LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=T,
                       attn_implementation="sdpa", tie_word_embeddings=tied, rms_norm_eps=1e-5)


def kd_loss(s_logits, t_logits, labels, V, alpha, tau):
    s = s_logits.float().reshape(-1, V)
    t = t_logits.float().reshape(-1, V)
    ce = F.cross_entropy(s, labels.reshape(-1))
    kl = F.kl_div(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1), log_target=True, reduction="batchmean")
    return alpha * ce + (1 - alpha) * tau * tau * kl


def param_groups(model, wd):
    # distill's groups: matrices decayed; norms, biases and the embedding (tied head) not.
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "embed" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="p1")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--precision", choices=["bf16-mixed", "bf16-pure", "f32"], default="bf16-mixed")
    ap.add_argument("--teacher-dtype", choices=["bf16", "f32"], default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the student")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=2.0)
    ap.add_argument("--profile", action="store_true",
                    help="synchronize at phase boundaries and print mean ms per phase (as DISTILL_PROFILE=1)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    s = SHAPES[a.shapes]
    V, B, T = s["V"], s["B"], s["T"]
    dev = a.device
    tdt = {"bf16": torch.bfloat16, "f32": torch.float32}[a.teacher_dtype or ("bf16" if dev == "cuda" else "f32")]
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(llama(s["teacher"], V, T, s["teacher_tied"])).to(dev, tdt).eval().requires_grad_(False)
    torch.manual_seed(1)
    student = LlamaForCausalLM(llama(s["student"], V, T, True))
    student = student.to(dev, torch.bfloat16 if a.precision == "bf16-pure" else torch.float32)
    opt = torch.optim.AdamW(param_groups(student, 0.01), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            fused=(dev == "cuda"))
    fwd = torch.compile(student) if a.compile else student
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=(a.precision == "bf16-mixed"))
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator(device="cpu").manual_seed(2)
    t_start = time.time()
    first = None
    phases = {}
    last = [time.time()]

    def mark(name, i):
        if not a.profile:
            return
        sync(dev)
        now = time.time()
        if i >= 2:
            phases[name] = phases.get(name, 0.0) + now - last[0]
        last[0] = now

    for i in range(a.steps):
        if i == a.warm:
            sync(dev)
            t0 = time.time()
        last[0] = time.time()
        ids = torch.randint(0, V, (B, T + 1), generator=g).to(dev)
        x, y = ids[:, :-1], ids[:, 1:]
        mark("data", i)
        with torch.no_grad():
            tl = teacher(x).logits
        mark("teacher", i)
        with autocast:
            sl = fwd(x).logits
        mark("student forward", i)
        loss = kd_loss(sl, tl, y, V, a.alpha, a.tau)
        mark("loss", i)
        loss.backward()
        mark("backward (+ loss)", i)
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark("optimizer", i)
        if i == 0:
            sync(dev)
            first = time.time() - t_start
    sync(dev)
    dt = time.time() - t0
    timed = a.steps - a.warm
    out = {
        "peer": "pytorch", "shapes": a.shapes, "device": dev, "precision": a.precision,
        "teacher_dtype": str(tdt).replace("torch.", ""), "compile": a.compile, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "B": B, "T": T, "V": V,
        "student_params_M": round(sum(p.numel() for p in student.parameters()) / 1e6, 2),
        "teacher_params_M": round(sum(p.numel() for p in teacher.parameters()) / 1e6, 2),
        "tokens_per_s": round(timed * B * T / dt), "step_ms": round(1000 * dt / timed, 1),
        "first_step_s": round(first, 2), "loss": round(float(loss.detach()), 4),
    }
    if phases:
        n = a.steps - 2
        out["profile_ms"] = {k: round(1000 * v / n, 1) for k, v in phases.items()}
    if dev == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        # Teacher forward alone, the reference for the top-k cache build.
        with torch.no_grad():
            for _ in range(2):
                teacher(x)
            sync(dev)
            t1 = time.time()
            for _ in range(5):
                teacher(x).logits
            sync(dev)
        out["teacher_fwd_tokens_per_s"] = round(5 * B * T / (time.time() - t1))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
