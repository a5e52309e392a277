"""The two regularisers KEP-SVGP adds to the task loss, per layer: the KL term and the
KEP-SVGP form of the KSVD loss (their ``train.py``: total = CE + η Σ_layers ksvd + η_kl Σ_layers kl).

KL term, exactly as their forward computes it (per layer, summed over heads h, outputs c;
Λ_{h,a} = exp(2ℓ_{h,a}), L the ``cholesky_factor`` of (``log_ssqrt``, ``s_sqrt_low_triangle``)):

    kl = ½ Σ_{h,a,r,c} (Λ_{h,a} L[h,a,r,c])²          "Tr(Λ⁻² S_uu)" (paper's Λ; Λ² here)
       + ½ Σ_{h,a,c} Λ_{h,a}² m_u[h,a,c]²               "m_uᵀ Λ⁻² m_u"
       − Σ log_ssqrt − 2s Σ_{h,a} ℓ_{h,a}               "log(|Λ²| / |S_uu|)"
       − ½ s² H                                          the constant

With ``layout="per_output"`` the trace term weighs L[h,c,a,r] by Λ_{h,a} (the row index of
output c's factor) and kl is then exactly Σ_{h,c} KL(N(m_c, L_c L_cᵀ) ‖ N(0, Λ⁻²)).

KSVD loss of one layer (their ``compute_loss``): with λ = exp(ℓ) — the scores multiplied by
diag(exp(ℓ)), not by a raw λ as in Primal-Attention —

    ksvd = ( mean_{b,h,i} ½‖exp(ℓ_h) ⊙ e_{b,h,i}‖² + mean_{b,h,i} ½‖exp(ℓ_h) ⊙ r_{b,h,i}‖²
             − (1/H) Σ_h Tr(W_{e,h}ᵀ W_{r,h}) )²

on the parameters ``we``, ``wr``; the layers' values are summed (``ksvd_loss`` preset
"kep_svgp").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._checks import (
    cache_of,
    choice,
    finite_array,
    real_number,
    result_dtype,
)
from ..ksvd_loss import KSVDLossCache, KSVDTerms, ksvd_loss, ksvd_loss_backward
from .ops import CholeskyFactorCache, cholesky_factor, cholesky_factor_backward
from .params import FACTOR_LAYOUTS

__all__ = [
    "KLCache",
    "KLGrads",
    "kep_svgp_kl",
    "kep_svgp_kl_backward",
    "KEPKSVDCache",
    "KEPKSVDGrads",
    "kep_svgp_ksvd_loss",
    "kep_svgp_ksvd_loss_backward",
    "KEPSVGPLosses",
    "KEPSVGPLossCache",
    "KEPSVGPLossGrads",
    "kep_svgp_losses",
    "kep_svgp_losses_backward",
]


# --------------------------------------------------------------------------- KL
class KLCache(NamedTuple):
    lam2: np.ndarray  # Λ² = exp(ℓ)⁴, (H, s)
    m_u: np.ndarray  # (1, H, s, s)
    factor: np.ndarray  # (1, H, s, s, s)
    log_ssqrt_shape: tuple[int, ...]
    layout: str
    dtype: np.dtype


class KLGrads(NamedTuple):
    log_lambda: np.ndarray
    m_u: np.ndarray
    factor: np.ndarray
    log_ssqrt: np.ndarray


def _row_weight(lam2: np.ndarray, layout: str) -> np.ndarray:
    """Λ² shaped to weigh the factor's inducing index: axis 2 of (1, H, s, s, s) for
    "authors" (L[h, a, r, c]), axis 3 for "per_output" (L[h, c, a, r])."""
    return lam2[None, :, :, None, None] if layout == "authors" else lam2[None, :, None, :, None]


def kep_svgp_kl(
    log_lambda: np.ndarray,
    m_u: np.ndarray,
    factor: np.ndarray,
    log_ssqrt: np.ndarray,
    *,
    layout: str = "authors",
) -> tuple[float, KLCache]:
    """The KL term of one layer (module docstring), as their forward computes it.

    Shapes: log_lambda ℓ (H, s); m_u (1, H, s, s); factor L (1, H, s, s, s) from
    ``cholesky_factor``; log_ssqrt (1, H, s, s). Returns (kl, cache).
    """
    choice(layout, "layout", FACTOR_LAYOUTS)
    ell = finite_array(log_lambda, "log_lambda", ndim=2)
    m_u = finite_array(m_u, "m_u", ndim=4)
    L = finite_array(factor, "factor", ndim=5)
    log_s = finite_array(log_ssqrt, "log_ssqrt", ndim=4)
    H, s = ell.shape
    if m_u.shape != (1, H, s, s) or L.shape != (1, H, s, s, s) or log_s.shape != (1, H, s, s):
        raise ValueError(
            f"kep_svgp_kl needs log_lambda (H, s) = {(H, s)}, m_u (1, H, s, s), factor "
            f"(1, H, s, s, s) and log_ssqrt (1, H, s, s); got {m_u.shape}, {L.shape}, {log_s.shape}"
        )
    dt = result_dtype(ell, m_u, L, log_s)
    lam2 = np.exp(ell.astype(dt)) ** 4  # (Λ_code)² = diag(exp(ℓ))⁴
    trace = 0.5 * np.sum(_row_weight(lam2, layout) * L * L)
    quad = 0.5 * np.sum(lam2[None, :, :, None] * m_u * m_u)
    kl = trace + quad - np.sum(log_s) - 2.0 * s * np.sum(ell) - 0.5 * s * s * H
    return float(kl), KLCache(lam2, m_u, L, log_s.shape, layout, dt)


def kep_svgp_kl_backward(dkl: float, cache: KLCache) -> KLGrads:
    """Gradients of dkl·kl: with Λ²_{h,a} = exp(4ℓ_{h,a}),

    ∂kl/∂L[h,a,r,c] = Λ²_{h,a} L[h,a,r,c]   (per_output: Λ²_{h,a} L[h,c,a,r]),
    ∂kl/∂m_u[h,a,c] = Λ²_{h,a} m_u[h,a,c],   ∂kl/∂log_ssqrt = −1,
    ∂kl/∂ℓ_{h,a} = 2 Λ²_{h,a} (Σ_{r,c} L[h,a,r,c]² + Σ_c m_u[h,a,c]²) − 2s.
    """
    cache_of(cache, KLCache, "kep_svgp_kl")
    lam2, m_u, L, log_shape, layout, dt = cache
    g = real_number(dkl, "dkl")
    s = lam2.shape[1]
    w = _row_weight(lam2, layout)
    d_L = g * w * L
    d_m = g * lam2[None, :, :, None] * m_u
    sq_L = np.sum(L * L, axis=(3, 4) if layout == "authors" else (2, 4))[0]  # (H, s)
    sq_m = np.sum(m_u * m_u, axis=3)[0]
    d_ell = g * (2.0 * lam2 * (sq_L + sq_m) - 2.0 * s)
    d_log = np.full(log_shape, -g, dtype=dt)
    return KLGrads(d_ell.astype(dt), d_m.astype(dt), d_L.astype(dt), d_log)


# --------------------------------------------------------------------------- KSVD
class KEPKSVDCache(NamedTuple):
    lam: np.ndarray  # λ = exp(ℓ), (H, s)
    inner: KSVDLossCache


class KEPKSVDGrads(NamedTuple):
    escore: np.ndarray
    rscore: np.ndarray
    log_lambda: np.ndarray
    we: np.ndarray
    wr: np.ndarray


def kep_svgp_ksvd_loss(
    escore: np.ndarray,
    rscore: np.ndarray,
    log_lambda: np.ndarray,
    we: np.ndarray,
    wr: np.ndarray,
) -> tuple[float, KEPKSVDCache]:
    """One layer's KSVD loss in the KEP-SVGP form (module docstring): ``ksvd_loss`` with
    λ = exp(ℓ) on the scores, means over (b, h, i) inside one square, trace on the parameters.

    Shapes: escore, rscore (B, H, N, s); log_lambda (H, s); we, wr (H, n, s).
    """
    ell = finite_array(log_lambda, "log_lambda", ndim=2)
    lam = np.exp(ell)
    loss, inner = ksvd_loss([KSVDTerms(escore, rscore, lam, we, wr)], "kep_svgp")
    return loss, KEPKSVDCache(lam, inner)


def kep_svgp_ksvd_loss_backward(dloss: float, cache: KEPKSVDCache) -> KEPKSVDGrads:
    """Gradients of dloss·ksvd: ``ksvd_loss_backward`` for (E, R, λ, W_e, W_r), then
    λ = exp(ℓ) gives dℓ = dλ ⊙ exp(ℓ)."""
    cache_of(cache, KEPKSVDCache, "kep_svgp_ksvd_loss")
    (g,) = ksvd_loss_backward(dloss, cache.inner).layers
    return KEPKSVDGrads(g.escore, g.rscore, g.lam * cache.lam.astype(g.lam.dtype), g.we, g.wr)


# --------------------------------------------------------------------------- one layer
class KEPSVGPLosses(NamedTuple):
    kl: float
    ksvd_loss: float


class KEPSVGPLossCache(NamedTuple):
    factor: CholeskyFactorCache
    kl: KLCache
    ksvd: KEPKSVDCache
    shapes: dict  # parameter name → shape, for the gradients of the parameters not touched


class KEPSVGPLossGrads(NamedTuple):
    """Gradients of d_kl·kl + d_ksvd·ksvd for one layer: on its scores E, R (B, H, N, s) and
    on its parameters (every name of the layer; zeros for those the losses do not read).
    Pass to ``kep_svgp_attention_backward(..., loss_grads=...)``."""

    escore: np.ndarray
    rscore: np.ndarray
    params: dict


def kep_svgp_losses(cache) -> tuple[KEPSVGPLosses, KEPSVGPLossCache]:
    """The KL term and the KSVD loss of the layer whose forward left ``cache``
    (a ``KEPSVGPCache``): ``KEPSVGPLosses(kl, ksvd_loss)`` and the cache for the backward.

    Training sums them over the KEP-SVGP layers: task + η Σ ksvd_loss + η_kl Σ kl.
    """
    from .layer import KEPSVGPCache

    cache_of(cache, KEPSVGPCache, "kep_svgp_attention")
    P, cfg = cache.params, cache.config
    L, fcache = cholesky_factor(P["log_ssqrt"], P["s_sqrt_low_triangle"])
    kl, kcache = kep_svgp_kl(
        P["log_lambda_sqrt_inv_diag"], P["m_u"], L, P["log_ssqrt"], layout=cfg.factor_layout
    )
    ksvd, scache = kep_svgp_ksvd_loss(
        cache.escore, cache.rscore, P["log_lambda_sqrt_inv_diag"], P["we"], P["wr"]
    )
    shapes = {k: (np.shape(v), np.asarray(v).dtype) for k, v in P.items()}
    return KEPSVGPLosses(kl, ksvd), KEPSVGPLossCache(fcache, kcache, scache, shapes)


def kep_svgp_losses_backward(dlosses: Sequence[float], cache: KEPSVGPLossCache) -> KEPSVGPLossGrads:
    """Gradients of d_kl·kl + d_ksvd·ksvd, ``dlosses = (d_kl, d_ksvd)`` — in training
    (η_kl, η). The KL term reaches ``log_ssqrt`` and ``s_sqrt_low_triangle`` through the
    factor's backward; ℓ collects both losses' parts."""
    if not isinstance(dlosses, (tuple, list)) or len(dlosses) != 2:
        raise TypeError(
            f"dlosses must be a pair (d_kl, d_ksvd), got {type(dlosses).__name__} {dlosses!r}"
        )
    cache_of(cache, KEPSVGPLossCache, "kep_svgp_losses")
    d_kl = real_number(dlosses[0], "dlosses[0] (d_kl)")
    d_ksvd = real_number(dlosses[1], "dlosses[1] (d_ksvd)")
    gk = kep_svgp_kl_backward(d_kl, cache.kl)
    gf = cholesky_factor_backward(gk.factor, cache.factor)
    gs = kep_svgp_ksvd_loss_backward(d_ksvd, cache.ksvd)
    g = {k: np.zeros(shape, dtype) for k, (shape, dtype) in cache.shapes.items()}
    g["log_lambda_sqrt_inv_diag"] += gk.log_lambda + gs.log_lambda
    g["m_u"] += gk.m_u
    g["log_ssqrt"] += gk.log_ssqrt + gf.log_ssqrt
    g["s_sqrt_low_triangle"] += gf.s_sqrt_low_triangle
    g["we"] += gs.we
    g["wr"] += gs.wr
    return KEPSVGPLossGrads(gs.escore, gs.rscore, g)
