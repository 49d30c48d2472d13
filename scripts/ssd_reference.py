#!/usr/bin/env python3
"""PyTorch reference for distill's Mamba-2 SSM core, saved as a test fixture.

Writes tests/fixtures/ssd_reference.safetensors with seeded inputs and two PyTorch outputs of
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,   y_t = C_t h_t
- y_naive / state_naive: the sequential recurrence in float64,
- y_chunked: the chunked SSD algorithm (Mamba-2 paper, listing 1) in float32,
for a length that is not a multiple of the chunk size. `cargo test` compares distill's
ssd_chunked and ssd_step against them.

usage: python3 scripts/ssd_reference.py [out.safetensors]   (runs on CUDA when available)
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

B, T, H, P, G, N, CHUNK = 2, 45, 4, 8, 2, 16, 16


def naive(x, dt, a, bm, cm):
    b, t, h, p = x.shape
    g = bm.shape[2]
    bh = bm.repeat_interleave(h // g, dim=2)
    ch = cm.repeat_interleave(h // g, dim=2)
    state = torch.zeros(b, h, p, bm.shape[3], dtype=x.dtype, device=x.device)
    ys = []
    for i in range(t):
        da = torch.exp(dt[:, i] * a)  # (b, h)
        state = state * da[:, :, None, None] + (dt[:, i, :, None] * x[:, i])[..., None] * bh[:, i, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, ch[:, i]))
    return torch.stack(ys, 1), state


def segsum(x):
    t = x.size(-1)
    x = x[..., None].expand(*x.shape, t)
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~mask, 0)
    s = torch.cumsum(x, dim=-2)
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=0)
    return s.masked_fill(~mask, -torch.inf)


def chunked(x, dt, a, bm, cm, chunk):
    b, t, h, p = x.shape
    g = bm.shape[2]
    pad = (-t) % chunk
    xd = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))
    ad = F.pad(dt * a, (0, 0, 0, pad))
    bh = F.pad(bm.repeat_interleave(h // g, dim=2), (0, 0, 0, 0, 0, pad))
    ch = F.pad(cm.repeat_interleave(h // g, dim=2), (0, 0, 0, 0, 0, pad))
    c = (t + pad) // chunk
    X, A, Bc, C = [v.reshape(b, c, chunk, *v.shape[2:]) for v in (xd, ad, bh, ch)]
    A = A.permute(0, 3, 1, 2)  # b h c l
    acum = torch.cumsum(A, dim=-1)
    L = torch.exp(segsum(A))
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, Bc, L, X)
    decay_states = torch.exp(acum[..., -1:] - acum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, X)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(acum[..., -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(acum))
    return (y_diag + y_off).reshape(b, c * chunk, h, p)[:, :t], final


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/ssd_reference.safetensors"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, T, H, P, generator=g) * 2 - 1
    dt = torch.rand(B, T, H, generator=g) * 0.29 + 0.01
    a = -(torch.rand(H, generator=g) * 1.8 + 0.2)
    bm = torch.rand(B, T, G, N, generator=g) * 2 - 1
    cm = torch.rand(B, T, G, N, generator=g) * 2 - 1
    y64, s64 = naive(*(v.double().to(dev) for v in (x, dt, a, bm, cm)))
    y32, _ = chunked(*(v.to(dev) for v in (x, dt, a, bm, cm)), CHUNK)
    err = (y32.double() - y64).abs().max().item()
    print(f"{dev}: torch chunked vs torch naive max abs error {err:.2e}")
    assert err < 1e-4
    tensors = {"x": x, "dt": dt, "a": a, "b": bm, "c": cm,
               "y_naive": y64.float().cpu(), "state_naive": s64.float().cpu(), "y_chunked": y32.cpu()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, out,
              metadata={"chunk": str(CHUNK), "device": dev, "torch": torch.__version__})
    print("wrote", out)


if __name__ == "__main__":
    main()
