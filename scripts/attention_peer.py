#!/usr/bin/env python3
"""Training attention (forward+backward) in TFLOP/s: ours against PyTorch's
scaled_dot_product_attention, back to back on the same GPU.

    python3 scripts/attention_peer.py <distill built with --features tch> [--rounds 2]

Ours is `distill bench-attention --backend libtorch --dtype bf16` (one process per round and
kernel, all shapes): with its default kernel (cuDNN's for causal attention) and with
DISTILL_GPU_ATTENTION=flash (FlashAttention-2); the peer is SDPA pinned to each of its fused
kernels (cudnn: cuDNN's fused attention; flash: FlashAttention-2) in this process, and each of
ours is compared with the same kernel's SDPA. Both time the
same thing at the same shapes, FlashAttention's benchmark ones (16,384 tokens a batch,
d_model 2,048, heads = 2048 / head_dim, causal): `warm` unmeasured steps, then `reps` steps of
y = attention(q, k, v); grads of y * g w.r.t. q, k, v seeded with ones (what burn's backward
does; the same kernels on both sides); the clock stops after a read-back of one element of
the last dQ. FLOPs: 3.5 * 4 * batch * heads * head_dim * pairs, pairs =
t (t + 1) / 2 (the same count `distill` prints). Rounds alternate ours and the peer.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def flops(b, h, t, hd, window=None):
    w = min(window or t, t)
    pairs = w * (w + 1) / 2 + (t - w) * w
    return 3.5 * 4 * b * h * hd * pairs


def time_peer(kernel, b, h, kv, t, hd, warm, reps, dtype):
    dev = "cuda"
    q = torch.randn(b, h, t, hd, device=dev).to(dtype).requires_grad_()
    k = torch.randn(b, kv, t, hd, device=dev).to(dtype).requires_grad_()
    v = torch.randn(b, kv, t, hd, device=dev).to(dtype).requires_grad_()
    g = torch.randn(b, h, t, hd, device=dev).to(dtype)

    def step():
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h)
        # As burn seeds a backward: ones of the output's shape, then the product's backward.
        z = y * g
        dq, _, _ = torch.autograd.grad(z, (q, k, v), grad_outputs=torch.ones_like(z))
        return dq

    with sdpa_kernel(KERNELS[kernel]):
        for _ in range(max(warm, 1)):
            dq = step()
        float(dq[0, 0, 0, 0])
        t0 = time.perf_counter()
        for _ in range(max(reps, 1)):
            dq = step()
        float(dq[0, 0, 0, 0])
        return (time.perf_counter() - t0) * 1e3 / max(reps, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("distill", help="a distill binary built with --features tch")
    ap.add_argument("--seq", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--head-dim", default="64,128")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--group", type=int, default=1, help="query heads per KV head")
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kernels", default="cudnn,flash", help="cudnn, flash (each run by both)")
    ap.add_argument("--jsonl", help="append every measurement here")
    a = ap.parse_args()
    seqs = [int(x) for x in a.seq.split(",")]
    hds = [int(x) for x in a.head_dim.split(",")]
    kernels = a.kernels.split(",")
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(0), flush=True)
    ours, peer = {}, {}
    for rnd in range(a.rounds):
        for kern in kernels:
            env = dict(os.environ, DISTILL_GPU_ATTENTION=kern)
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "ours.jsonl")
                cmd = [a.distill, "bench-attention", "--backend", "libtorch", "--dtype", "bf16", "--seq", a.seq,
                       "--head-dim", a.head_dim, "--tokens", str(a.tokens), "--d-model", str(a.d_model),
                       "--group", str(a.group), "--warm", str(a.warm), "--reps", str(a.reps), "--jsonl", out]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                print(r.stdout, r.stderr, sep="", flush=True)
                if r.returncode != 0:
                    sys.exit(f"distill bench-attention failed ({r.returncode})")
                for line in open(out):
                    j = json.loads(line)
                    ours.setdefault((kern, j["head_dim"], j["seq"]), []).append(j["tflops"])
                    if a.jsonl:
                        with open(a.jsonl, "a") as f:
                            f.write(json.dumps(dict(j, round=rnd, env=f"DISTILL_GPU_ATTENTION={kern}")) + "\n")
        for hd in hds:
            for t in seqs:
                h = a.d_model // hd
                b = max(a.tokens // t, 1)
                for kern in kernels:
                    try:
                        ms = time_peer(kern, b, h, h // a.group, t, hd, a.warm, a.reps, torch.bfloat16)
                    except RuntimeError as e:
                        print(f"{kern} hd {hd} t {t}: {str(e).splitlines()[0]}", flush=True)
                        continue
                    tf = flops(b, h, t, hd) / (ms * 1e-3) / 1e12
                    peer.setdefault((kern, hd, t), []).append(tf)
                    print(f"round {rnd} {kern:>9} hd {hd:>3} seq {t:>6} batch {b:>3} heads {h:>3}: "
                          f"{ms:8.3f} ms {tf:7.1f} TFLOP/s", flush=True)
                    if a.jsonl:
                        with open(a.jsonl, "a") as f:
                            f.write(json.dumps({"impl": f"torch-{kern}", "head_dim": hd, "seq": t, "batch": b,
                                                "heads": h, "ms": ms, "tflops": tf, "round": rnd}) + "\n")
                torch.cuda.empty_cache()
    mean = lambda xs: sum(xs) / len(xs)
    print(f"\nforward+backward TFLOP/s, bf16, causal, {a.tokens} tokens a batch, d_model {a.d_model}, "
          f"group {a.group}; each cell: the rounds' values (ratio: of the means, ours / SDPA's, same kernel)")
    print(f"{'hd':>4} {'seq':>6}" + "".join(f" {'distill ' + k:>15} {'SDPA ' + k:>15} {'ratio':>6}" for k in kernels))
    worst = {}
    for hd in hds:
        for t in seqs:
            row = f"{hd:>4} {t:>6}"
            for k in kernels:
                o, p = ours.get((k, hd, t), []), peer.get((k, hd, t), [])
                ratio = mean(o) / mean(p) if o and p else float("nan")
                worst[k] = min(worst.get(k, float("inf")), ratio)
                cell = lambda xs: "/".join(f"{x:.0f}" for x in xs)
                row += f" {cell(o):>15} {cell(p):>15} {ratio:6.2f}"
            print(row)
    for k, w in worst.items():
        print(f"lowest ratio, {k}: {w:.2f}")


if __name__ == "__main__":
    main()
