"""Golden cases of the Primal-Attention layer, parameters under the authors' names and layouts."""

from __future__ import annotations

import numpy as np

from ..objective import layer_objective
from ..params import (
    PrimalAttentionConfig,
    from_state_dict,
    init_primal_attention_params,
    to_state_dict,
)
from . import GoldenCase, register_case

_CONVENTION = {"lra": "lra", "vision": "vision", "causal": "per_sample"}
_LOSS_TEXT = {
    "lra": "(mean_{b,h,n} ½‖λ_h⊙e‖² + mean_{b,h,n} ½‖λ_h⊙r‖² − T)², batch mean inside the square",
    "vision": "(mean_{b,h,n} ½‖λ_h⊙e‖² + mean_{b,h,n} ½‖λ_h⊙r‖² − T)², batch mean inside the square",
    "causal": "mean_b (mean_{h,n} ½‖λ_h⊙e‖² + mean_{h,n} ½‖λ_h⊙r‖² − T)², per-sample squares",
}


def _run(arrays, dtype, cfg: PrimalAttentionConfig, eta: float, trace_no_x: bool):
    state = {
        k[len("param.") :]: v.astype(dtype) for k, v in arrays.items() if k.startswith("param.")
    }
    params = from_state_dict(state, cfg)
    r = layer_objective(
        arrays["input.x"].astype(dtype),
        params,
        cfg,
        cotangent=arrays["cotangent.out"].astype(dtype),
        eta=eta,
        convention=_CONVENTION[cfg.variant],
        trace_no_x=trace_no_x,
        mask=arrays.get("input.mask"),
    )
    out = {
        "output.out": r.out,
        "output.escore": r.escore,
        "output.rscore": r.rscore,
        "output.ksvd_loss": np.asarray(r.ksvd_loss, dtype=dtype),
        "grad.x": r.dx,
    }
    out.update({f"grad.{k}": v for k, v in to_state_dict(r.grads, cfg).items()})
    return out


def _layer_case(
    name: str,
    seed: int,
    cfg: PrimalAttentionConfig,
    *,
    B: int,
    N: int,
    eta: float,
    trace_no_x: bool,
    masked: bool,
) -> GoldenCase:
    rng = np.random.default_rng(seed)
    params = init_primal_attention_params(cfg, seed=seed, linear_init="torch")
    arrays = {"input.x": rng.standard_normal((B, N, cfg.dim))}
    if masked:
        mask = np.ones((B, N), bool)
        mask[1, N - 3 :] = False  # the second sequence has 3 padded tokens
        arrays["input.mask"] = mask
    arrays.update({f"param.{k}": v for k, v in to_state_dict(params, cfg).items()})
    arrays["cotangent.out"] = rng.standard_normal((B, N, cfg.dim))
    arrays.update(_run(arrays, np.dtype(np.float64), cfg, eta, trace_no_x))
    n_idx = cfg.num_samples
    config = {
        "variant": cfg.variant,
        "eta": eta,
        "trace_no_x": trace_no_x,
        "dim": cfg.dim,
        "num_heads": cfg.num_heads,
        "head_dim": cfg.head_dim,
        "low_rank": cfg.low_rank,
        "rank_multi": cfg.rank_multi,
        "num_samples": n_idx,
        "data_dependent": cfg.data_dependent,
        "qk_bias": cfg.qk_bias,
        "feature_map": "x / max(‖x‖₂, 1e-12) (F.normalize)",
        "sampled_rows": "torch.linspace(0, N-1, n, dtype=int64)"
        if cfg.variant == "lra"
        else ("all N tokens in order (N ≤ s·rank_multi)" if cfg.variant == "vision" else None),
        "mask": "input.mask (B, N), True = real token; output rows of padded tokens are 0 before the output projection; the authors' code takes it as float 1/0"
        if masked
        else None,
        "ksvd_loss": _LOSS_TEXT[cfg.variant]
        + (
            "; T = (1/H) Σ_h Tr(We_hᵀ Wr_h) on the parameters"
            if trace_no_x
            else "; T = mean_{b,h} Tr(W_{e|X}ᵀ W_{r|X}) on the data-dependent weights"
        ),
        "linear_init": "PyTorch default",
    }
    objective = f"sum(cotangent.out * output.out) + {eta} * output.ksvd_loss; grads w.r.t. input.x and every param.*"
    return GoldenCase(
        name,
        f"primal_attention_{cfg.variant}",
        config,
        objective,
        arrays,
        recompute=lambda a, dt: _run(a, dt, cfg, eta, trace_no_x),
        seed=seed,
    )


@register_case("primal_attention_lra")
def lra_case() -> GoldenCase:
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3, variant="lra")
    return _layer_case(
        "primal_attention_lra", 10, cfg, B=2, N=11, eta=0.5, trace_no_x=True, masked=True
    )


@register_case("primal_attention_lra_trace_x")
def lra_trace_x_case() -> GoldenCase:
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, rank_multi=3, variant="lra")
    return _layer_case(
        "primal_attention_lra_trace_x", 11, cfg, B=2, N=11, eta=0.5, trace_no_x=False, masked=True
    )


@register_case("primal_attention_vision")
def vision_case() -> GoldenCase:
    cfg = PrimalAttentionConfig(
        dim=8, num_heads=2, low_rank=2, rank_multi=4, variant="vision", num_tokens=7
    )
    return _layer_case(
        "primal_attention_vision", 12, cfg, B=2, N=7, eta=0.5, trace_no_x=True, masked=False
    )


@register_case("primal_attention_causal")
def causal_case() -> GoldenCase:
    cfg = PrimalAttentionConfig(dim=8, num_heads=2, low_rank=2, variant="causal")
    return _layer_case(
        "primal_attention_causal", 13, cfg, B=2, N=9, eta=0.5, trace_no_x=True, masked=False
    )
