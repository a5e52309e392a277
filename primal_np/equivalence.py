"""Primal–dual equivalence, end to end from the input X (docs/theory.md §2.6).

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

from ._checks import cache_of, check_finite, choice, float_array, positive_int
from .feature_maps import feature_map_named, map_kwargs
from .kernels import kernel_matrix, kernel_matrix_backward
from .ksvd import kkt_weights, ksvd, primal_weights, primal_weights_backward
from .primitives import linear, linear_backward
from .scores import dual_scores, dual_scores_backward, primal_scores, primal_scores_backward

__all__ = [
    "StationaryPoint",
    "stationary_point",
    "ScoresFromXGrads",
    "scores_from_x",
    "scores_from_x_backward",
]


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


def _features(x, W_q, W_k, feature_map: str, map_params: object):
    """Φ_q = φ(X W_qᵀ), Φ_k = φ(X W_kᵀ) after checking x (N, d), W_q and W_k (d', d)."""
    x = float_array(x, "x", ndim=2)
    check_finite(x, "x")
    for w, name in ((W_q, "W_q"), (W_k, "W_k")):
        w = float_array(w, name, ndim=2)
        if w.shape[1] != x.shape[1]:
            raise ValueError(
                f"{name} has shape {w.shape} (d', d) but x has d = {x.shape[1]} (x shape {x.shape})"
            )
        check_finite(w, name)
    fm = feature_map_named(feature_map, "feature_map")
    kw = map_kwargs(fm, map_params)
    q, lin_q = linear(x, W_q)
    k, lin_k = linear(x, W_k)
    phi_q, c_q = fm.forward(q, **kw)
    phi_k, c_k = fm.forward(k, **kw)
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

    Shapes: x (N, d), W_q and W_k (d', d) in (out, in) layout; s ≤ rank(K) ≤ min(N, p_φ).
    Λ = Σ⁻¹ needs s non-zero singular values, so s beyond the numerical rank of K (singular
    values ≤ N·ε·σ_1, as ``np.linalg.matrix_rank``) is refused with a ``ValueError``.
    """
    s = positive_int(s, "s")
    phi_q, phi_k, _ = _features(x, W_q, W_k, feature_map, map_params)
    K, _ = kernel_matrix(phi_q, phi_k)
    p_phi = phi_q.shape[-1]
    if s > min(K.shape[0], p_phi):
        raise ValueError(
            f"s = {s} exceeds min(N, p_φ) = min({K.shape[0]}, {p_phi}), the largest rank "
            "K = Φ_q Φ_kᵀ can have; Λ = Σ⁻¹ needs s non-zero singular values"
        )
    H_e, H_r, sigma = ksvd(K, s)
    tol = max(K.shape) * np.finfo(K.dtype).eps * float(sigma[0])
    rank = int(np.sum(sigma > tol))
    if rank < s:
        raise ValueError(
            f"s = {s} exceeds the numerical rank {rank} of K (σ_{rank + 1} = {sigma[rank]:.3g} "
            f"≤ {tol:.3g} = N·ε·σ_1): Λ = Σ⁻¹ would be ≈ 1/0; choose s ≤ {rank}"
        )
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
    """(E, R) as a function of X, W_q, W_k with H_e, H_r held fixed, in either form.

    Shapes: x (N, d), W_q and W_k (d', d), H_e and H_r (N, s); ``form`` "primal" or "dual".
    """
    choice(form, "form", ("primal", "dual"))
    phi_q, phi_k, feat = _features(x, W_q, W_k, feature_map, map_params)
    _check_multipliers(H_e, H_r, phi_q.shape[0])
    c_w: Any
    c_s: Any
    if form == "primal":
        (W_e, W_r), c_w = primal_weights(phi_q, phi_k, H_e, H_r)
        scores, c_s = primal_scores(phi_q, phi_k, W_e, W_r)
    else:
        K, c_w = kernel_matrix(phi_q, phi_k)
        scores, c_s = dual_scores(K, H_e, H_r)
    return scores, ScoresFromXCache(form, feat, (c_w, c_s))


def _check_multipliers(H_e: object, H_r: object, n: int) -> None:
    """H_e, H_r: finite floating (N, s) arrays for N = ``n`` tokens."""
    arrs = [float_array(h, name, ndim=2) for h, name in ((H_e, "H_e"), (H_r, "H_r"))]
    if arrs[0].shape[0] != n or arrs[1].shape != arrs[0].shape:
        raise ValueError(
            f"H_e must be (N, s) and H_r (M, s) with N = M = {n} tokens; got H_e "
            f"{arrs[0].shape}, H_r {arrs[1].shape}"
        )
    for h, name in zip(arrs, ("H_e", "H_r"), strict=True):
        check_finite(h, name)


class ScoresFromXGrads(NamedTuple):
    x: np.ndarray
    W_q: np.ndarray
    W_k: np.ndarray


def scores_from_x_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: ScoresFromXCache
) -> ScoresFromXGrads:
    """VJP of ``scores_from_x``: ``ScoresFromXGrads(x, W_q, W_k)`` (H_e, H_r held fixed).

    Reverse of the forward's steps: scores (primal: E = Φ_q W_e with W_e = Φ_kᵀ H_r, …;
    dual: E = K H_r, …) → feature map → the two linear maps.
    """
    cache_of(cache, ScoresFromXCache, "scores_from_x")
    fm, lin_q, lin_k, c_q, c_k = cache.feature
    c_w, c_s = cache.inner
    if cache.form == "primal":
        g_s = primal_scores_backward(dscores, c_s)
        g_w = primal_weights_backward((g_s.W_e, g_s.W_r), c_w)
        d_phi_q, d_phi_k = g_s.phi_q + g_w.phi_q, g_s.phi_k + g_w.phi_k
    else:
        g_k = kernel_matrix_backward(dual_scores_backward(dscores, c_s).K, c_w)
        d_phi_q, d_phi_k = g_k.phi_q, g_k.phi_k
    g_q = linear_backward(fm.backward(d_phi_q, c_q).x, lin_q)
    g_k_ = linear_backward(fm.backward(d_phi_k, c_k).x, lin_k)
    return ScoresFromXGrads(g_q.x + g_k_.x, g_q.weight, g_k_.weight)
