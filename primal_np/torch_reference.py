"""An independent PyTorch statement of the authors' Primal-Attention layers and KSVD
losses, written from docs/conformance.md, for cross-checks only (the parity tests and the
``verify`` parity rows). It takes the authors' state-dict names and layouts, uses torch
autograd for gradients and shares no code with the NumPy implementation.

Importing this module requires torch; nothing else in primal_np imports it at module
level, so primal_np itself depends on NumPy and SciPy only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linspace_idx(n_tokens: int, n: int) -> torch.Tensor:
    return torch.linspace(0, n_tokens - 1, n, dtype=torch.int64)


def _heads(t, H):
    B, N, D = t.shape
    return t.reshape(B, N, H, D // H).permute(0, 2, 1, 3)


def _core(x, q, k, We, Wr, cw, cb, H, idx):
    """Shared part: cosine map, data-dependent weights (if idx is not None), scores, head output."""
    phi_q = F.normalize(q, p=2, dim=-1)
    phi_k = F.normalize(k, p=2, dim=-1)
    if idx is not None:
        Fx = _heads(x[:, idx, :], H)  # (B, H, n, p)
        we_x = torch.einsum("bhnp,hns->bhps", Fx, We)
        wr_x = torch.einsum("bhnp,hns->bhps", Fx, Wr)
        E = torch.einsum("bhNp,bhps->bhNs", phi_q, we_x)
        R = torch.einsum("bhNp,bhps->bhNs", phi_k, wr_x)
    else:
        we_x = wr_x = None
        E = torch.einsum("bhNp,hps->bhNs", phi_q, We)
        R = torch.einsum("bhNp,hps->bhNs", phi_k, Wr)
    out = F.linear(torch.cat([E, R], dim=-1), cw, cb)  # (B, H, N, p)
    return out, E, R, we_x, wr_x


def lra_layer(sd, x, H, s, m, mask=None):
    B, N, D = x.shape
    q = _heads(F.linear(x, sd["W_q.weight"], sd["W_q.bias"]), H)
    k = _heads(F.linear(x, sd["W_k.weight"], sd["W_k.bias"]), H)
    idx = linspace_idx(N, s * m)
    out, E, R, we_x, wr_x = _core(
        x,
        q,
        k,
        sd["We"],
        sd["Wr"],
        sd["attn.concate_weight.weight"],
        sd["attn.concate_weight.bias"],
        H,
        idx,
    )
    if mask is not None:
        out = out * mask[:, None, :, None].to(out.dtype)
    out = out.permute(0, 2, 1, 3).reshape(B, N, D)
    y = F.linear(out, sd["ff.weight"], sd["ff.bias"])
    return y, E, R, we_x, wr_x, sd["attn.Lambda"], sd["We"], sd["Wr"]


def vision_layer(sd, x, H, s, m):
    B, N, D = x.shape
    qk = F.linear(x, sd["qk.weight"], sd.get("qk.bias"))
    qk = qk.reshape(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4)
    q, k = qk[0], qk[1]
    idx = torch.arange(N) if N <= s * m else linspace_idx(N, s * m)
    out, E, R, we_x, wr_x = _core(
        x, q, k, sd["we"], sd["wr"], sd["concate_weight.weight"], sd["concate_weight.bias"], H, idx
    )
    out = out.permute(0, 2, 1, 3).reshape(B, N, D)
    y = F.linear(out, sd["proj.weight"], sd["proj.bias"])
    return y, E, R, we_x, wr_x, sd["Lambda"], sd["we"], sd["wr"]


def causal_layer(sd, x, H, s):
    B, N, D = x.shape
    steps = torch.arange(1, N + 1, dtype=x.dtype)[None, None, :, None]
    q = _heads(F.linear(x, sd["query_projection.weight"], sd["query_projection.bias"]), H)
    k = _heads(F.linear(x, sd["key_projection.weight"], sd["key_projection.bias"]), H)
    q = torch.cumsum(q, dim=2) / steps
    k = torch.cumsum(k, dim=2) / steps
    out, E, R, _, _ = _core(
        x, q, k, sd["We"], sd["Wr"], sd["concate_weight.weight"], sd["concate_weight.bias"], H, None
    )
    out = out.permute(0, 2, 1, 3).reshape(B, N, D)
    y = F.linear(out, sd["out_projection.weight"], sd["out_projection.bias"])
    return y, E, R, None, None, sd["Lambda"], sd["We"], sd["Wr"]


def ksvd_loss_batch_mean(layers, trace_no_x: bool):
    """LRA / vision: (1/L) Σ_l (mean_{b,h,n} a + mean_{b,h,n} c − T*)²."""
    total = 0.0
    for E, R, we_x, wr_x, lam, We, Wr in layers:
        a = 0.5 * (E * lam[None, :, None, :]).pow(2).sum(-1)  # (B, H, N)
        c = 0.5 * (R * lam[None, :, None, :]).pow(2).sum(-1)
        if trace_no_x:
            T = torch.einsum("hns,hns->h", We, Wr).mean()
        else:
            T = torch.einsum("bhps,bhps->bh", we_x, wr_x).mean()
        total = total + (a.mean() + c.mean() - T) ** 2
    return total / len(layers)


def ksvd_loss_per_sample(layers):
    """Time series / RL / LM: mean_b (1/L) Σ_l (mean_{h,n} a + mean_{h,n} c − T)²."""
    total = 0.0
    for E, R, _, _, lam, We, Wr in layers:
        a = 0.5 * (E * lam[None, :, None, :]).pow(2).sum(-1).mean(dim=(1, 2))  # (B,)
        c = 0.5 * (R * lam[None, :, None, :]).pow(2).sum(-1).mean(dim=(1, 2))
        T = torch.einsum("hns,hns->h", We, Wr).mean()
        total = total + ((a + c - T) ** 2).mean()
    return total / len(layers)


def layer_objective(cfg, state_dict, x, cotangent, eta, *, mask=None, trace_no_x=True):
    """Σ⟨cotangent, y⟩ + η·KSVD for one layer of ``cfg.variant`` (float64 NumPy in and out).

    The LRA and vision layers use the batch-mean loss with ``trace_no_x``; the causal
    layer the per-sample loss. Returns out, escore, rscore, loss, dx and the gradients
    keyed by the state-dict names.
    """
    import numpy as np

    t_sd = {
        k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
        for k, v in state_dict.items()
    }
    tx = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    H, s, m = cfg.num_heads, cfg.low_rank, cfg.rank_multi
    if cfg.variant == "lra":
        tm = None if mask is None else torch.tensor(np.asarray(mask, dtype=np.float64))
        y, *terms = lra_layer(t_sd, tx, H, s, m, tm)
        loss = ksvd_loss_batch_mean([terms], trace_no_x)
    elif cfg.variant == "vision":
        y, *terms = vision_layer(t_sd, tx, H, s, m)
        loss = ksvd_loss_batch_mean([terms], trace_no_x)
    else:
        y, *terms = causal_layer(t_sd, tx, H, s)
        loss = ksvd_loss_per_sample([terms])
    (torch.sum(y * torch.tensor(np.asarray(cotangent, dtype=np.float64))) + eta * loss).backward()
    return {
        "out": y.detach().numpy(),
        "escore": terms[0].detach().numpy(),
        "rscore": terms[1].detach().numpy(),
        "loss": float(loss.detach()),
        "dx": tx.grad.numpy(),
        "grads": {k: v.grad.numpy() for k, v in t_sd.items()},
    }
