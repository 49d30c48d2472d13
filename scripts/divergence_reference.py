#!/usr/bin/env python3
"""PyTorch reference for distill's distillation losses, saved as a test fixture.

Writes tests/fixtures/divergences.safetensors: seeded student/teacher logits (8 x 40, two
padded rows), labels, and for each objective the loss and its gradient with respect to the
student logits, computed in float64 with torch.nn.functional (log_softmax, kl_div with
log_target, cross_entropy) and autograd. The formulas follow TRL's GKD `generalized_jsd_loss`
(beta = 0 forward KL, 1 reverse KL) and DistiLLM's skew KLs:

    loss = alpha * CE + (1 - alpha) * tau^2 * mean over real rows of D(p_t(tau), p_s(tau))

`cargo test` (kd_loss::tests::pytorch_reference) compares distill's kd_loss against it.

usage: python3 scripts/divergence_reference.py [out.safetensors]
"""
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N, V, TAU = 8, 40, 2.0


def kl(log_p, log_q):
    """KL(p || q) per row, as torch's kl_div(input=log q, target=log p, log_target=True)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def log_mix(log_p, w, log_q):
    """log(w p + (1 - w) q)."""
    return torch.logsumexp(torch.stack([log_p + math.log(w), log_q + math.log(1 - w)]), dim=0)


def divergence(name, lt, ls):
    if name == "forward_kl":
        return kl(lt, ls)
    if name == "reverse_kl":
        return kl(ls, lt)
    if name.startswith("jsd_"):
        beta = float(name[4:])
        m = log_mix(lt, beta, ls)
        return beta * kl(lt, m) + (1 - beta) * kl(ls, m)
    if name.startswith("skew_forward_"):
        lam = float(name[len("skew_forward_"):])
        return kl(lt, log_mix(lt, lam, ls))
    if name.startswith("skew_reverse_"):
        lam = float(name[len("skew_reverse_"):])
        return kl(ls, log_mix(ls, lam, lt))
    if name == "tv":
        return 0.5 * (lt.exp() - ls.exp()).abs().sum(-1)
    raise ValueError(name)


CASES = [
    ("forward_kl", 0.0), ("reverse_kl", 0.0), ("jsd_0.3", 0.0), ("jsd_0.7", 0.0),
    ("skew_forward_0.1", 0.0), ("skew_reverse_0.1", 0.0), ("tv", 0.0), ("forward_kl", 0.3),
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/divergences.safetensors"
    g = torch.Generator().manual_seed(2026)
    student = torch.randn(N, V, generator=g, dtype=torch.float64) * 2.0
    teacher = torch.randn(N, V, generator=g, dtype=torch.float64) * 3.0
    labels = torch.randint(0, V, (N,), generator=g)
    mask = torch.ones(N, dtype=torch.float64)
    mask[3] = 0.0
    mask[7] = 0.0
    tensors = {
        "student": student.float(), "teacher": teacher.float(),
        "labels": labels.float(), "mask": mask.float(),
    }
    # The reference is computed from the float32-rounded inputs distill will see.
    s32, t32 = student.float().double(), teacher.float().double()
    for name, alpha in CASES:
        s = s32.clone().requires_grad_(True)
        lt = F.log_softmax(t32 / TAU, dim=-1)
        ls = F.log_softmax(s / TAU, dim=-1)
        d = (divergence(name, lt, ls) * mask).sum() / mask.sum()
        ce = (F.cross_entropy(s, labels, reduction="none") * mask).sum() / mask.sum()
        loss = alpha * ce + (1 - alpha) * TAU * TAU * d
        loss.backward()
        key = f"{name}_a{alpha}"
        tensors[f"loss_{key}"] = loss.detach().reshape(1).float()
        tensors[f"grad_{key}"] = s.grad.float()
        print(f"{key:>22}: loss {loss.item():.6f}")
    save_file(tensors, out, metadata={"tau": str(TAU), "cases": ",".join(f"{n}_a{a}" for n, a in CASES),
                                       "torch": torch.__version__})
    print("wrote", out)


if __name__ == "__main__":
    main()
