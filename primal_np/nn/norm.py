"""Layer normalisation over the last axis, forward and backward (PyTorch semantics).

    μ = mean_d x_d,   σ² = mean_d (x_d − μ)²          (biased variance)
    x̂ = (x − μ) / sqrt(σ² + ε),   y = x̂ ∘ w + b        (ε = 1e-5 inside the sqrt)

as ``torch.nn.functional.layer_norm(x, (D,), w, b, eps=1e-5)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import cache_of, check_finite, float_array, result_dtype, upstream

__all__ = ["LayerNormCache", "LayerNormGrads", "layer_norm", "layer_norm_backward"]


class LayerNormCache(NamedTuple):
    xhat: np.ndarray  # (..., D) normalised input
    rstd: np.ndarray  # (..., 1) 1 / sqrt(σ² + ε)
    weight: np.ndarray  # (D,)


class LayerNormGrads(NamedTuple):
    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def layer_norm(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, eps: float = 1e-5
) -> tuple[np.ndarray, LayerNormCache]:
    """LayerNorm over the last axis with an elementwise affine map.

    Shapes: x (..., D), weight (D,), bias (D,) → y (..., D).

        y = (x − μ) / sqrt(σ² + ε) ∘ w + b,   μ, σ² the mean and biased variance over D.

    With D = 1, x − μ = 0 and y = b.
    """
    x = float_array(x, "x", min_ndim=1)
    weight = float_array(weight, "weight", ndim=1)
    bias = float_array(bias, "bias", ndim=1)
    d = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p.shape != (d,):
            raise ValueError(
                f"{name} has shape {p.shape}, expected ({d},) for x of shape {x.shape}"
            )
    for name, a in (("x", x), ("weight", weight), ("bias", bias)):
        check_finite(a, name)
    eps = float(eps)
    if not eps > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    dt = result_dtype(x, weight, bias)
    xc = x.astype(dt, copy=True)
    xc -= xc.mean(axis=-1, keepdims=True)
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    y = xhat * weight + bias
    return y, LayerNormCache(xhat, rstd, weight)


def layer_norm_backward(dy: np.ndarray, cache: LayerNormCache) -> LayerNormGrads:
    """VJP of ``layer_norm``. Forward was x̂ = (x − μ)·r, y = x̂ ∘ w + b, so with g = dy ∘ w:

        dx = r · (g − mean_d g − x̂ ∘ mean_d(g ∘ x̂))
        dw = Σ_{leading axes} dy ∘ x̂,   db = Σ_{leading axes} dy.

    Returns ``LayerNormGrads(x, weight, bias)``.
    """
    cache_of(cache, LayerNormCache, "layer_norm")
    xhat, rstd, w = cache
    dy = upstream(dy, "dy", xhat.shape, xhat.dtype)
    g = dy * w
    dx = rstd * (
        g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True)
    )
    d = xhat.shape[-1]
    dw = (dy * xhat).reshape(-1, d).sum(axis=0)
    db = dy.reshape(-1, d).sum(axis=0)
    return LayerNormGrads(dx.astype(xhat.dtype, copy=False), dw.astype(xhat.dtype, copy=False), db)
