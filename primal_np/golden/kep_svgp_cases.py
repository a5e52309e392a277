"""Golden cases of KEP-SVGP attention: the authors' vision module (``CIFAR/``, ``IMDB/``),
parameters under their state-dict names and layouts, the standard-normal draw as an input."""

from __future__ import annotations

import numpy as np

from ..kep_svgp import (
    KEPSVGPConfig,
    draw_noise,
    init_kep_svgp_params,
    kep_from_state_dict,
    kep_svgp_objective,
    kep_to_state_dict,
)
from . import GoldenCase, register_case


def _run(arrays, dtype, cfg: KEPSVGPConfig, eta: float, eta_kl: float):
    state = {
        k[len("param.") :]: v.astype(dtype) for k, v in arrays.items() if k.startswith("param.")
    }
    r = kep_svgp_objective(
        arrays["input.x"].astype(dtype),
        kep_from_state_dict(state, cfg),
        cfg,
        noise=arrays["input.noise"].astype(dtype),
        cotangent=arrays["cotangent.out"].astype(dtype),
        eta=eta,
        eta_kl=eta_kl,
    )
    out = {
        "output.out": r.out,
        "output.escore": r.escore,
        "output.rscore": r.rscore,
        "output.kl": np.asarray(r.kl, dtype=dtype),
        "output.ksvd_loss": np.asarray(r.ksvd_loss, dtype=dtype),
        "grad.x": r.dx,
    }
    out.update({f"grad.{k}": v for k, v in kep_to_state_dict(r.grads, cfg).items()})
    return out


def _case(name: str, seed: int, cfg: KEPSVGPConfig, *, B: int, N: int) -> GoldenCase:
    eta, eta_kl = 0.1, 1.0  # their argument parser's defaults (--eta-ksvd, --eta-kl)
    rng = np.random.default_rng(seed)
    params = init_kep_svgp_params(cfg, seed=seed)
    arrays = {"input.x": rng.standard_normal((B, N, cfg.dim))}
    arrays["input.noise"] = draw_noise(rng, cfg, B, N)
    arrays.update({f"param.{k}": v for k, v in kep_to_state_dict(params, cfg).items()})
    arrays["cotangent.out"] = rng.standard_normal((B, N, cfg.dim))
    arrays.update(_run(arrays, np.dtype(np.float64), cfg, eta, eta_kl))
    rows = 2 * N if cfg.concate else N
    config = {
        "variant": "vision (their CIFAR/ and IMDB/ KEP_SVGPAttention)",
        "eta": eta,
        "eta_kl": eta_kl,
        "concate": cfg.concate,
        "dim": cfg.dim,
        "num_heads": cfg.num_heads,
        "head_dim": cfg.head_dim,
        "low_rank": cfg.low_rank,
        "rank_multi": cfg.rank_multi,
        "embed_len": cfg.embed_len,
        "num_samples": cfg.num_samples,
        "qk_bias": cfg.qk_bias,
        "sampled_rows": "torch.linspace(0, N-1, low_rank*rank_multi, dtype=int64) (embed_len > s·m)",
        "feature_map": "x / max(‖x‖₂, 1e-12) (F.normalize) on q and k",
        "noise": f"input.noise (B, H, {'2N' if cfg.concate else 'N'}, s, 1) = {(B, cfg.num_heads, rows, cfg.low_rank, 1)}: "
        "the torch.randn draw of their forward",
        "proj": "created but not applied (as their forward): grad.proj.* are zero (None in PyTorch)",
        "kl": "their forward's kl: ½Σ(exp(2ℓ_a) L[h,a,r,c])² + ½Σ exp(4ℓ_a) m_u[h,a,c]² − Σ log_ssqrt − 2sΣℓ − ½s²H",
        "ksvd_loss": "(mean_{b,h,i} ½‖exp(ℓ_h)⊙e‖² + mean_{b,h,i} ½‖exp(ℓ_h)⊙r‖² − (1/H)Σ_h Tr(we_hᵀ wr_h))²",
        "linear_init": "PyTorch default",
    }
    objective = (
        f"sum(cotangent.out * output.out) + {eta_kl} * output.kl + {eta} * output.ksvd_loss; "
        "grads w.r.t. input.x and every param.* (input.noise held fixed)"
    )
    return GoldenCase(
        name,
        "kep_svgp_attention",
        config,
        objective,
        arrays,
        recompute=lambda a, dt: _run(a, dt, cfg, eta, eta_kl),
        seed=seed,
    )


@register_case("kep_svgp_attention")
def kep_svgp_case() -> GoldenCase:
    cfg = KEPSVGPConfig(dim=8, num_heads=2, low_rank=2, rank_multi=2, embed_len=7)
    return _case("kep_svgp_attention", 20, cfg, B=2, N=7)


@register_case("kep_svgp_attention_concate")
def kep_svgp_concate_case() -> GoldenCase:
    cfg = KEPSVGPConfig(dim=8, num_heads=2, low_rank=2, rank_multi=2, embed_len=7, concate=True)
    return _case("kep_svgp_attention_concate", 21, cfg, B=2, N=7)
