"""Primal–dual equivalence, end to end from the input X (THEORY.md §2).

One head without biases:  Q = X W_qᵀ,  K_ = X W_kᵀ,  Φ_q = φ(Q),  Φ_k = φ(K_).

* ``stationary_point`` builds K = Φ_q Φ_kᵀ, takes its top-s singular triplets (the dual
  solution H_e, H_r, Σ) and the KKT primal weights W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e, Λ = Σ⁻¹.
* ``scores_from_x(..., form="primal")`` computes E = Φ_q W_e, R = Φ_k W_r with
  W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e; ``form="dual"`` computes E = K H_r, R = Kᵀ H_e.
  Both hold H_e, H_r fixed, so they are the same function of (X, W_q, W_k) and their
  backward passes (``scores_from_x_backward``) must give the same gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .feature_maps import get_feature_map
from .kernels import kernel_matrix, kernel_matrix_backward
from .ksvd import kkt_weights, ksvd, primal_weights, primal_weights_backward
from .primitives import linear, linear_backward
from .scores import dual_scores, dual_scores_backward, primal_scores, primal_scores_backward

__all__ = ["StationaryPoint", "stationary_point", "scores_from_x", "scores_from_x_backward"]


class StationaryPoint(NamedTuple):
    phi_q: np.ndarray  # (N, p)
    phi_k: np.ndarray  # (N, p)
    K: np.ndarray  # (N, N)
    H_e: np.ndarray  # (N, s)
    H_r: np.ndarray  # (N, s)
    sigma: np.ndarray  # (s,)
    W_e: np.ndarray  # (p, s)
    W_r: np.ndarray  # (p, s)
    lam: np.ndarray  # (s,) diagonal of Λ = Σ⁻¹


def _features(x, W_q, W_k, feature_map: str, map_params: dict):
    fm = get_feature_map(feature_map)
    q, lin_q = linear(x, W_q)
    k, lin_k = linear(x, W_k)
    phi_q, c_q = fm.forward(q, **map_params)
    phi_k, c_k = fm.forward(k, **map_params)
    return phi_q, phi_k, (fm, lin_q, lin_k, c_q, c_k)


def stationary_point(
    x: np.ndarray,
    W_q: np.ndarray,
    W_k: np.ndarray,
    s: int,
    *,
    feature_map: str = "cosine",
    map_params: dict | None = None,
) -> StationaryPoint:
    """The KSVD solution for one sequence: features, K, (H_e, H_r, σ) and the KKT weights.

    Shapes: x (N, d), W_q and W_k (d', d) in (out, in) layout; s ≤ min(N, p).
    """
    phi_q, phi_k, _ = _features(x, W_q, W_k, feature_map, map_params or {})
    K, _ = kernel_matrix(phi_q, phi_k)
    H_e, H_r, sigma = ksvd(K, s)
    W_e, W_r, lam = kkt_weights(phi_q, phi_k, H_e, H_r, sigma)
    return StationaryPoint(phi_q, phi_k, K, H_e, H_r, sigma, W_e, W_r, lam)


class ScoresFromXCache(NamedTuple):
    form: str
    feature: Any
    inner: Any  # (weights cache, primal scores cache) or (kernel cache, dual scores cache)


def scores_from_x(
    x: np.ndarray,
    W_q: np.ndarray,
    W_k: np.ndarray,
    H_e: np.ndarray,
    H_r: np.ndarray,
    *,
    form: str,
    feature_map: str = "cosine",
    map_params: dict | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], ScoresFromXCache]:
    """(E, R) as a function of X, W_q, W_k with H_e, H_r held fixed, in either form."""
    phi_q, phi_k, feat = _features(x, W_q, W_k, feature_map, map_params or {})
    if form == "primal":
        (W_e, W_r), c_w = primal_weights(phi_q, phi_k, H_e, H_r)
        scores, c_s = primal_scores(phi_q, phi_k, W_e, W_r)
    elif form == "dual":
        K, c_w = kernel_matrix(phi_q, phi_k)
        scores, c_s = dual_scores(K, H_e, H_r)
    else:
        raise ValueError(f"form must be 'primal' or 'dual', got {form!r}")
    return scores, ScoresFromXCache(form, feat, (c_w, c_s))


def scores_from_x_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: ScoresFromXCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VJP of ``scores_from_x`` with respect to (X, W_q, W_k)."""
    fm, lin_q, lin_k, c_q, c_k = cache.feature
    c_w, c_s = cache.inner
    if cache.form == "primal":
        d_phi_q, d_phi_k, dW_e, dW_r = primal_scores_backward(dscores, c_s)
        dq2, dk2, _, _ = primal_weights_backward((dW_e, dW_r), c_w)
        d_phi_q, d_phi_k = d_phi_q + dq2, d_phi_k + dk2
    else:
        dK, _, _ = dual_scores_backward(dscores, c_s)
        d_phi_q, d_phi_k = kernel_matrix_backward(dK, c_w)
    dq = fm.backward(d_phi_q, c_q)
    dk = fm.backward(d_phi_k, c_k)
    dx_q, dW_q, _ = linear_backward(dq, lin_q)
    dx_k, dW_k, _ = linear_backward(dk, lin_k)
    return dx_q + dx_k, dW_q, dW_k
