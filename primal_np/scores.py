"""Projection scores in the primal and the dual representation (docs/theory.md §2.6).

    primal:  E = Φ_q W_e,   R = Φ_k W_r                      (cost O(N p s), no N×N array)
    dual:    E = K H_r,     R = Kᵀ H_e,    K = Φ_q Φ_kᵀ      (cost O(N M s))

At a KSVD solution (W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e) the two agree exactly, and so do
their gradients with respect to anything upstream of Φ_q, Φ_k.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import (
    broadcast_batch,
    cache_of,
    check_finite,
    float_array,
    result_dtype,
    sum_to_shape,
    upstream,
)

__all__ = [
    "PrimalScoresCache",
    "PrimalScoresGrads",
    "primal_scores",
    "primal_scores_backward",
    "DualScoresCache",
    "DualScoresGrads",
    "dual_scores",
    "dual_scores_backward",
]


class PrimalScoresCache(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    W_e: np.ndarray
    W_r: np.ndarray
    dtype: np.dtype
    e_shape: tuple[int, ...]
    r_shape: tuple[int, ...]


class PrimalScoresGrads(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    W_e: np.ndarray
    W_r: np.ndarray


def primal_scores(
    phi_q: np.ndarray, phi_k: np.ndarray, W_e: np.ndarray, W_r: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], PrimalScoresCache]:
    """Primal projection scores E = Φ_q W_e, R = Φ_k W_r (rows e_i = W_eᵀ φ_q(x_i)).

    Shapes: phi_q (..., N, p), phi_k (..., M, p), W_e, W_r (..., p, s) → E (..., N, s),
    R (..., M, s). Leading axes broadcast (e.g. per-head weights (H, p, s) against
    features (B, H, N, p)).
    """
    phi_q = float_array(phi_q, "phi_q", min_ndim=2)
    phi_k = float_array(phi_k, "phi_k", min_ndim=2)
    W_e = float_array(W_e, "W_e", min_ndim=2)
    W_r = float_array(W_r, "W_r", min_ndim=2)
    p = phi_q.shape[-1]
    if (
        phi_k.shape[-1] != p
        or W_e.shape[-2] != p
        or W_r.shape[-2] != p
        or W_e.shape[-1] != W_r.shape[-1]
    ):
        raise ValueError(
            "primal_scores needs phi_q (..., N, p), phi_k (..., M, p), W_e and W_r (..., p, s); got "
            f"phi_q {phi_q.shape}, phi_k {phi_k.shape}, W_e {W_e.shape}, W_r {W_r.shape}"
        )
    broadcast_batch(
        [phi_q.shape[:-2], phi_k.shape[:-2], W_e.shape[:-2], W_r.shape[:-2]],
        ["phi_q", "phi_k", "W_e", "W_r"],
    )
    for arr, name in ((phi_q, "phi_q"), (phi_k, "phi_k"), (W_e, "W_e"), (W_r, "W_r")):
        check_finite(arr, name)
    dt = result_dtype(phi_q, phi_k, W_e, W_r)
    E = np.matmul(phi_q, W_e, dtype=dt)
    R = np.matmul(phi_k, W_r, dtype=dt)
    return (E, R), PrimalScoresCache(phi_q, phi_k, W_e, W_r, dt, E.shape, R.shape)


def primal_scores_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: PrimalScoresCache
) -> PrimalScoresGrads:
    """VJP of ``primal_scores``: returns ``PrimalScoresGrads(phi_q, phi_k, W_e, W_r)``.

    E = Φ_q W_e ⇒ dΦ_q = dE W_eᵀ, dW_e = Φ_qᵀ dE; likewise for R. Gradients of broadcast
    leading axes are summed back.
    """
    cache_of(cache, PrimalScoresCache, "primal_scores")
    phi_q, phi_k, W_e, W_r, dt, e_shape, r_shape = cache
    dE, dR = _pair(dscores, "dscores")
    dE = upstream(dE, "dscores[0] (dE)", e_shape, dt)
    dR = upstream(dR, "dscores[1] (dR)", r_shape, dt)
    d_phi_q = np.matmul(dE, np.swapaxes(W_e, -1, -2), dtype=dt)
    d_phi_k = np.matmul(dR, np.swapaxes(W_r, -1, -2), dtype=dt)
    dW_e = np.matmul(np.swapaxes(phi_q, -1, -2), dE, dtype=dt)
    dW_r = np.matmul(np.swapaxes(phi_k, -1, -2), dR, dtype=dt)
    return PrimalScoresGrads(
        sum_to_shape(d_phi_q, phi_q.shape),
        sum_to_shape(d_phi_k, phi_k.shape),
        sum_to_shape(dW_e, W_e.shape),
        sum_to_shape(dW_r, W_r.shape),
    )


def _pair(dscores: object, name: str) -> tuple[object, object]:
    """The (dE, dR) pair of a scores backward, else a named error."""
    if not isinstance(dscores, (tuple, list)) or len(dscores) != 2:
        raise TypeError(f"{name} must be a pair (dE, dR), got {type(dscores).__name__}")
    return dscores[0], dscores[1]


class DualScoresCache(NamedTuple):
    K: np.ndarray
    H_e: np.ndarray
    H_r: np.ndarray
    dtype: np.dtype
    e_shape: tuple[int, ...]
    r_shape: tuple[int, ...]


class DualScoresGrads(NamedTuple):
    K: np.ndarray
    H_e: np.ndarray
    H_r: np.ndarray


def dual_scores(
    K: np.ndarray, H_e: np.ndarray, H_r: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], DualScoresCache]:
    """Dual projection scores E = K H_r, R = Kᵀ H_e (e(x_i) = Σ_j κ(x_i, x_j) h_{r_j}).

    Shapes: K (..., N, M), H_e (..., N, s), H_r (..., M, s) → E (..., N, s), R (..., M, s).
    """
    K = float_array(K, "K", min_ndim=2)
    H_e = float_array(H_e, "H_e", min_ndim=2)
    H_r = float_array(H_r, "H_r", min_ndim=2)
    n, m = K.shape[-2:]
    if H_e.shape[-2] != n or H_r.shape[-2] != m or H_e.shape[-1] != H_r.shape[-1]:
        raise ValueError(
            f"dual_scores needs K (..., N, M), H_e (..., N, s), H_r (..., M, s); got K {K.shape}, "
            f"H_e {H_e.shape}, H_r {H_r.shape}"
        )
    broadcast_batch([K.shape[:-2], H_e.shape[:-2], H_r.shape[:-2]], ["K", "H_e", "H_r"])
    for arr, name in ((K, "K"), (H_e, "H_e"), (H_r, "H_r")):
        check_finite(arr, name)
    dt = result_dtype(K, H_e, H_r)
    E = np.matmul(K, H_r, dtype=dt)
    R = np.matmul(np.swapaxes(K, -1, -2), H_e, dtype=dt)
    return (E, R), DualScoresCache(K, H_e, H_r, dt, E.shape, R.shape)


def dual_scores_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: DualScoresCache
) -> DualScoresGrads:
    """VJP of ``dual_scores``: returns ``DualScoresGrads(K, H_e, H_r)``.

    E = K H_r, R = Kᵀ H_e ⇒ dK = dE H_rᵀ + H_e dRᵀ, dH_r = Kᵀ dE, dH_e = K dR.
    """
    cache_of(cache, DualScoresCache, "dual_scores")
    K, H_e, H_r, dt, e_shape, r_shape = cache
    dE, dR = _pair(dscores, "dscores")
    dE = upstream(dE, "dscores[0] (dE)", e_shape, dt)
    dR = upstream(dR, "dscores[1] (dR)", r_shape, dt)
    dK = np.matmul(dE, np.swapaxes(H_r, -1, -2), dtype=dt)
    dK += np.matmul(H_e, np.swapaxes(dR, -1, -2), dtype=dt)
    dH_r = np.matmul(np.swapaxes(K, -1, -2), dE, dtype=dt)
    dH_e = np.matmul(K, dR, dtype=dt)
    return DualScoresGrads(
        sum_to_shape(dK, K.shape), sum_to_shape(dH_e, H_e.shape), sum_to_shape(dH_r, H_r.shape)
    )
