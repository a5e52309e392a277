"""The fast path, validated the way a user validates their own implementation.

``check_fast_path()`` wraps ``fast_primal_attention`` (and its backward, with the KSVD loss
joined through ``ksvd_grads``) as a *candidate* and runs
``primal_np.adapters.check_primal_attention`` on it: the same grid, the same comparison
policy (float64 within 1e-10 relative; float32 within k × the reference's own float32
error plus a rounding floor), the same report. Nothing here knows it is ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..adapters.core import AdapterReport
from ..adapters.layer import LayerPoint, check_primal_attention
from ..compare import DEFAULT_K
from ..ksvd_loss import ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache
from ..params import PrimalAttentionConfig, from_state_dict, to_state_dict
from .layer import fast_primal_attention, fast_primal_attention_backward

__all__ = ["fast_candidate", "fast_candidate_backward", "check_fast_path"]


def _config(config: Mapping) -> PrimalAttentionConfig:
    """The layer described by the adapter's config dict."""
    n = (
        config["num_samples"]
        if config["variant"] == "vision" and config["data_dependent"]
        else None
    )
    return PrimalAttentionConfig(
        dim=config["dim"],
        num_heads=config["num_heads"],
        low_rank=config["low_rank"],
        rank_multi=config["rank_multi"],
        variant=config["variant"],
        data_dependent=config["data_dependent"],
        qk_bias=config["qk_bias"],
        num_tokens=n,
        feature_map=config.get("feature_map", "cosine"),
        feature_seed=config.get("feature_seed", 0),
    )


def _convention(config: Mapping) -> str:
    if config["variant"] == "causal":
        return "per_sample"
    return "lra" if config["trace_no_x"] else "lra_trace_x"


def fast_candidate(x, state_dict, mask, config) -> dict[str, np.ndarray]:
    """Candidate forward for ``check_primal_attention``: out, escore, rscore, ksvd_loss."""
    cfg = _config(config)
    y, cache = fast_primal_attention(x, from_state_dict(state_dict, cfg), cfg, mask=mask)
    loss, _ = ksvd_loss([ksvd_terms_from_cache(cache)], _convention(config))
    return {
        "out": y,
        "escore": cache.escore.copy(),
        "rscore": cache.rscore.copy(),
        "ksvd_loss": np.asarray(loss, dtype=y.dtype),
    }


def fast_candidate_backward(x, state_dict, mask, config, dout, eta) -> dict[str, np.ndarray]:
    """Candidate backward: gradients of Σ⟨dout, out⟩ + η·ksvd_loss, keyed like the state dict."""
    cfg = _config(config)
    _, cache = fast_primal_attention(x, from_state_dict(state_dict, cfg), cfg, mask=mask)
    _, lcache = ksvd_loss([ksvd_terms_from_cache(cache)], _convention(config))
    (kg,) = ksvd_loss_backward(eta, lcache).layers
    g = fast_primal_attention_backward(dout, cache, ksvd_grads=kg)
    return {"x": g.x} | to_state_dict(g.params, cfg)


def check_fast_path(
    *,
    grid: Sequence[LayerPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
) -> AdapterReport:
    """``check_primal_attention`` on the fast path (default grid: the adapter's)."""
    return check_primal_attention(
        fast_candidate, backward=fast_candidate_backward, grid=grid, dtypes=dtypes, k=k, seed=seed
    )
