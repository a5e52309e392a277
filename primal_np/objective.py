"""One Primal-Attention layer and its KSVD loss as a single objective, with its gradient.

    objective = Σ ⟨cotangent, y⟩ + η · ksvd_loss([layer terms], convention)

This is the quantity the golden layer cases store gradients of, and a compact way to
run the layer's forward and complete backward (every parameter, and the input) at once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import real_number, upstream
from .ksvd_loss import KSVDConvention, ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache
from .layer import primal_attention, primal_attention_backward
from .params import PrimalAttentionConfig

__all__ = ["LayerObjective", "layer_objective"]


class LayerObjective(NamedTuple):
    out: np.ndarray  # (B, N, D)
    escore: np.ndarray  # (B, H, N, s)
    rscore: np.ndarray
    ksvd_loss: float
    value: float  # Σ⟨cotangent, out⟩ + η·ksvd_loss
    dx: np.ndarray
    grads: dict  # by internal parameter name


def layer_objective(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: PrimalAttentionConfig,
    *,
    cotangent: np.ndarray,
    eta: float,
    convention: str | KSVDConvention = "lra",
    trace_no_x: bool | None = None,
    mask: np.ndarray | None = None,
) -> LayerObjective:
    """Forward and complete backward of Σ⟨cotangent, y⟩ + η·KSVD for one layer.

    The KSVD loss's gradients join the layer's backward through ``ksvd_grads`` (the one
    place where the two are combined).
    """
    eta = real_number(eta, "eta", minimum=0.0)
    y, cache = primal_attention(x, params, config, mask=mask)
    cot = upstream(cotangent, "cotangent", y.shape, y.dtype)
    loss, lcache = ksvd_loss([ksvd_terms_from_cache(cache)], convention, trace_no_x=trace_no_x)
    (kg,) = ksvd_loss_backward(eta, lcache).layers
    g = primal_attention_backward(cot, cache, ksvd_grads=kg)
    value = float(np.sum(np.asarray(cotangent) * y)) + eta * loss
    return LayerObjective(y, cache.escore.copy(), cache.rscore.copy(), loss, value, g.x, g.params)
