"""An independent PyTorch statement of the authors' KEP-SVGP attention, its KL term and its
KSVD loss, with the standard-normal draw passed in, for cross-checks only (the parity tests).

Written from the equations and the conventions of docs/conformance.md (KEP-SVGP section),
in torch operations of its own; it takes the authors' state-dict names and layouts, uses
torch autograd for gradients and shares no code with ``primal_np.kep_svgp``. Importing it
requires torch; nothing in primal_np imports it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sampled_positions(n_tokens: int, s: int, m: int, variant: str, embed_len: int | None):
    """Rows of F: torch.linspace(0, N − 1, s·m) (cola always; vision when embed_len > s·m),
    else every token."""
    n = s * m
    if variant == "cola" or (embed_len is not None and embed_len > n):
        return torch.linspace(0, n_tokens - 1, n, dtype=torch.int64)
    return torch.arange(n_tokens)


def factor(sd) -> torch.Tensor:
    """(1, H, s, s, s): a lower triangle on the last two axes, diagonal exp(log_ssqrt)."""
    lower = torch.tril(sd["s_sqrt_low_triangle"], diagonal=-1)
    return lower + torch.diag_embed(torch.exp(sd["log_ssqrt"]))


def kep_svgp_layer(
    sd,
    x,
    noise,
    *,
    H,
    s,
    m,
    embed_len=None,
    variant="vision",
    concate=False,
    mask=None,
    apply_proj=False,
    squeeze=False,
):
    """Forward of their module with ``noise`` (B, H, N', s, 1) in place of ``torch.randn``.

    ``squeeze=True`` applies ``.squeeze()`` to the noise term as their code does (so the
    shapes where it drops a non-leading axis raise here too); False keeps (B, H, N', s).
    Returns (out, E, R).
    """
    B, N, D = x.shape
    p = D // H
    qk = F.linear(x, sd["qk.weight"], sd.get("qk.bias")).view(B, N, 2, H, p)
    q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)  # (B, H, N, p)
    if mask is not None:
        keep = mask.to(x.dtype)[:, None, :, None]
        q, k = q * keep, k * keep
    phi_q, phi_k = F.normalize(q, p=2.0, dim=-1), F.normalize(k, p=2.0, dim=-1)
    idx = sampled_positions(N, s, m, variant, embed_len)
    rows = x[:, idx].view(B, len(idx), H, p).transpose(1, 2)  # (B, H, n, p)
    E = phi_q @ torch.einsum("bhnp,hns->bhps", rows, sd["we"])
    R = phi_k @ torch.einsum("bhnp,hns->bhps", rows, sd["wr"])
    lam = torch.exp(sd["log_lambda_sqrt_inv_diag"]) ** 2  # (H, s)
    base = torch.cat([E, R], dim=2) if concate else E + R
    v1 = base * lam[:, None, :]
    mean = v1 @ sd["m_u"]
    # output c of head h: the s × s matrix factor[0, h, :, :, c] (rows a, columns r)
    g = torch.einsum("bhia,harc->bhicr", v1, factor(sd)[0])
    term = g @ noise  # (B, H, N', s, 1)
    term = term.squeeze() if squeeze else term.squeeze(-1)
    o = F.linear(mean + term, sd["final_weight.weight"], sd["final_weight.bias"])
    if concate:
        w_t, b_t = sd["embed_len_weight.weight"], sd["embed_len_weight.bias"]
        o = F.linear(o.transpose(-1, -2), w_t, b_t).transpose(-1, -2)
    out = o.transpose(1, 2).reshape(B, N, D)
    if apply_proj:
        out = F.linear(out, sd["proj.weight"], sd["proj.bias"])
    return out, E, R


def kep_svgp_kl(sd, H, s):
    """½Σ(Λ_{h,a} L[h,a,r,c])² + ½Σ Λ²_{h,a} m_u[h,a,c]² − Σ log_ssqrt − 2sΣℓ − ½s²H."""
    ell = sd["log_lambda_sqrt_inv_diag"]
    lam = torch.exp(ell) ** 2
    trace = 0.5 * ((lam[None, :, :, None, None] * factor(sd)) ** 2).sum()
    quad = 0.5 * ((lam[None, :, :, None] * sd["m_u"]) ** 2).sum()
    return trace + quad - sd["log_ssqrt"].sum() - 2 * s * ell.sum() - 0.5 * s * s * H


def kep_svgp_ksvd(E, R, ell, we, wr):
    """(mean ½‖e^ℓ ⊙ e‖² + mean ½‖e^ℓ ⊙ r‖² − mean_h Tr(W_eᵀ W_r))² for one layer."""
    w = torch.exp(ell)[None, :, None, :]
    a = 0.5 * ((E * w) ** 2).sum(-1).mean()
    c = 0.5 * ((R * w) ** 2).sum(-1).mean()
    return (a + c - torch.einsum("hns,hns->h", we, wr).mean()) ** 2


def layer_objective(
    cfg, state_dict, x, noise, cotangent, eta, eta_kl, *, mask=None, dtype=torch.float64
):
    """Σ⟨cotangent, y⟩ + η_kl·kl + η·ksvd for one layer (NumPy in and out, computed in ``dtype``).

    ``cfg`` is read for H, s, m, embed_len, variant, concate, apply_proj. Returns out,
    escore, rscore, kl, ksvd, dx and the gradients by state-dict name (None for parameters
    the objective does not reach, e.g. ``proj`` in their forward).
    """

    def tensor(a, grad=False):
        return torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, requires_grad=grad)

    t_sd = {k: tensor(v, True) for k, v in state_dict.items()}
    tx = tensor(x, True)
    H, s, m = cfg.num_heads, cfg.low_rank, cfg.rank_multi
    out, E, R = kep_svgp_layer(
        t_sd,
        tx,
        tensor(noise),
        H=H,
        s=s,
        m=m,
        embed_len=cfg.embed_len,
        variant=cfg.variant,
        concate=cfg.concate,
        mask=None if mask is None else torch.tensor(np.asarray(mask)),
        apply_proj=cfg.apply_proj,
    )
    kl = kep_svgp_kl(t_sd, H, s)
    ksvd = kep_svgp_ksvd(E, R, t_sd["log_lambda_sqrt_inv_diag"], t_sd["we"], t_sd["wr"])
    cot = tensor(cotangent)
    (torch.sum(out * cot) + eta_kl * kl + eta * ksvd).backward()
    return {
        "out": out.detach().numpy(),
        "escore": E.detach().numpy(),
        "rscore": R.detach().numpy(),
        "kl": float(kl.detach()),
        "ksvd": float(ksvd.detach()),
        "dx": tx.grad.numpy(),
        "grads": {k: None if v.grad is None else v.grad.numpy() for k, v in t_sd.items()},
    }
