"""GELU and the Transformer's two-layer MLP block, forward and backward.

    GELU(x) = x Φ(x) = ½ x (1 + erf(x / √2))            (exact form, PyTorch's default)
    MLP(x)  = GELU(x W₁ᵀ + b₁) W₂ᵀ + b₂                  (D → hidden → D, PyTorch layout)

Parameters are a dict ``{"fc1.weight" (hidden, D), "fc1.bias" (hidden,),
"fc2.weight" (D, hidden), "fc2.bias" (D,)}``, the names of a PyTorch module with
attributes ``fc1``, ``fc2``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

from .._checks import (
    cache_of,
    check_finite,
    float_array,
    float_dtype,
    positive_int,
    result_dtype,
    upstream,
)
from ..init import torch_linear_init
from ..primitives import LinearCache, linear, linear_backward

__all__ = [
    "GeluCache",
    "GeluGrads",
    "gelu",
    "gelu_backward",
    "MLP_PARAM_NAMES",
    "MLPCache",
    "MLPGrads",
    "init_mlp_params",
    "mlp",
    "mlp_backward",
]

MLP_PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- GELU
class GeluCache(NamedTuple):
    x: np.ndarray  # the input, in the computation dtype
    cdf: np.ndarray  # Φ(x)


class GeluGrads(NamedTuple):
    x: np.ndarray


def gelu(x: np.ndarray) -> tuple[np.ndarray, GeluCache]:
    """Exact GELU, elementwise: ``y = x Φ(x)``, Φ(x) = ½(1 + erf(x/√2)).

    Shapes: x (...) → y (...), same dtype (float32 stays float32).
    """
    x = float_array(x, "x")
    check_finite(x, "x")
    x = x.astype(result_dtype(x), copy=False)
    cdf = 0.5 * (1.0 + erf(x * x.dtype.type(_INV_SQRT2)))
    return x * cdf, GeluCache(x, cdf)


def gelu_backward(dy: np.ndarray, cache: GeluCache) -> GeluGrads:
    """VJP of ``gelu``: forward was y = x Φ(x), so dx = dy ∘ (Φ(x) + x φ(x)),
    φ(x) = exp(−x²/2) / √(2π) the standard normal density. Returns ``GeluGrads(x)``."""
    cache_of(cache, GeluCache, "gelu")
    x, cdf = cache
    dy = upstream(dy, "dy", x.shape, x.dtype)
    pdf = np.exp(-0.5 * x * x) * x.dtype.type(_INV_SQRT_2PI)
    return GeluGrads(dy * (cdf + x * pdf))


# --------------------------------------------------------------------------- MLP block
class MLPCache(NamedTuple):
    fc1: LinearCache
    act: GeluCache
    fc2: LinearCache


class MLPGrads(NamedTuple):
    x: np.ndarray
    params: dict[str, np.ndarray]  # keyed like the params


def init_mlp_params(
    dim: int, hidden: int, *, seed: int = 0, dtype: np.dtype | type = np.float64
) -> dict[str, np.ndarray]:
    """PyTorch-default initialisation (uniform ±1/sqrt(fan_in)) of fc1 (D→hidden), fc2 (hidden→D)."""
    dim = positive_int(dim, "dim")
    hidden = positive_int(hidden, "hidden")
    dtype = float_dtype(dtype, "dtype")
    rng = np.random.default_rng(seed)
    w1, b1 = torch_linear_init(rng, dim, hidden, dtype=dtype)
    w2, b2 = torch_linear_init(rng, hidden, dim, dtype=dtype)
    assert b1 is not None and b2 is not None
    return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2}


def mlp(x: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, MLPCache]:
    """Two-layer MLP block: ``y = GELU(x W₁ᵀ + b₁) W₂ᵀ + b₂``.

    Shapes: x (..., D); params ``fc1.weight`` (H, D), ``fc1.bias`` (H,),
    ``fc2.weight`` (D_out, H), ``fc2.bias`` (D_out,) with D_out = D in a Transformer
    → y (..., D_out).
    """
    missing = [n for n in MLP_PARAM_NAMES if n not in params]
    if missing:
        raise KeyError(f"MLP parameters missing {missing}; expected {list(MLP_PARAM_NAMES)}")
    h, fc1 = linear(x, params["fc1.weight"], params["fc1.bias"])
    a, act = gelu(h)
    y, fc2 = linear(a, params["fc2.weight"], params["fc2.bias"])
    return y, MLPCache(fc1, act, fc2)


def mlp_backward(dy: np.ndarray, cache: MLPCache) -> MLPGrads:
    """VJP of ``mlp``: returns ``MLPGrads(x, params)`` with params keyed like the params.

    Forward was h = x W₁ᵀ + b₁, a = GELU(h), y = a W₂ᵀ + b₂; each step is undone by
    its own backward in reverse order.
    """
    cache_of(cache, MLPCache, "mlp")
    g2 = linear_backward(dy, cache.fc2)
    dh = gelu_backward(g2.x, cache.act).x
    g1 = linear_backward(dh, cache.fc1)
    assert g1.bias is not None and g2.bias is not None  # both linears have biases
    grads = {
        "fc1.weight": g1.weight,
        "fc1.bias": g1.bias,
        "fc2.weight": g2.weight,
        "fc2.bias": g2.bias,
    }
    return MLPGrads(g1.x, grads)
