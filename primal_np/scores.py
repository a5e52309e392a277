"""Projection scores in the primal and the dual representation (THEORY.md §2).

    primal:  E = Φ_q W_e,   R = Φ_k W_r                      (cost O(N p s), no N×N array)
    dual:    E = K H_r,     R = Kᵀ H_e,    K = Φ_q Φ_kᵀ      (cost O(N M s))

At a KSVD solution (W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e) the two agree exactly, and so do
their gradients with respect to anything upstream of Φ_q, Φ_k.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import broadcast_batch, float_array, result_dtype, sum_to_shape

__all__ = [
    "PrimalScoresCache",
    "primal_scores",
    "primal_scores_backward",
    "DualScoresCache",
    "dual_scores",
    "dual_scores_backward",
]


class PrimalScoresCache(NamedTuple):
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
    broadcast_batch([phi_q.shape[:-2], W_e.shape[:-2]], ["phi_q", "W_e"])
    broadcast_batch([phi_k.shape[:-2], W_r.shape[:-2]], ["phi_k", "W_r"])
    dt = result_dtype(phi_q, phi_k, W_e, W_r)
    E = np.matmul(phi_q, W_e, dtype=dt)
    R = np.matmul(phi_k, W_r, dtype=dt)
    return (E, R), PrimalScoresCache(phi_q, phi_k, W_e, W_r)


def primal_scores_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: PrimalScoresCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """VJP of ``primal_scores``: returns (dΦ_q, dΦ_k, dW_e, dW_r).

    E = Φ_q W_e ⇒ dΦ_q = dE W_eᵀ, dW_e = Φ_qᵀ dE; likewise for R. Gradients of broadcast
    leading axes are summed back.
    """
    dE, dR = dscores
    phi_q, phi_k, W_e, W_r = cache
    d_phi_q = dE @ np.swapaxes(W_e, -1, -2)
    d_phi_k = dR @ np.swapaxes(W_r, -1, -2)
    dW_e = np.swapaxes(phi_q, -1, -2) @ dE
    dW_r = np.swapaxes(phi_k, -1, -2) @ dR
    return (
        sum_to_shape(d_phi_q, phi_q.shape),
        sum_to_shape(d_phi_k, phi_k.shape),
        sum_to_shape(dW_e, W_e.shape),
        sum_to_shape(dW_r, W_r.shape),
    )


class DualScoresCache(NamedTuple):
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
    dt = result_dtype(K, H_e, H_r)
    E = np.matmul(K, H_r, dtype=dt)
    R = np.matmul(np.swapaxes(K, -1, -2), H_e, dtype=dt)
    return (E, R), DualScoresCache(K, H_e, H_r)


def dual_scores_backward(
    dscores: tuple[np.ndarray, np.ndarray], cache: DualScoresCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VJP of ``dual_scores``: returns (dK, dH_e, dH_r).

    E = K H_r, R = Kᵀ H_e ⇒ dK = dE H_rᵀ + H_e dRᵀ, dH_r = Kᵀ dE, dH_e = K dR.
    """
    dE, dR = dscores
    K, H_e, H_r = cache
    dK = dE @ np.swapaxes(H_r, -1, -2) + H_e @ np.swapaxes(dR, -1, -2)
    dH_r = np.swapaxes(K, -1, -2) @ dE
    dH_e = K @ dR
    return sum_to_shape(dK, K.shape), sum_to_shape(dH_e, H_e.shape), sum_to_shape(dH_r, H_r.shape)
