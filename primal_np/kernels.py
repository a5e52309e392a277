"""Asymmetric kernel matrices (docs/theory.md §1).

* ``kernel_matrix``: K = Φ_q Φ_kᵀ from any pair of feature maps (forward + backward).
* ``softmax_kernel``: the kernel of canonical attention, K_ij = softmax_j(q_iᵀk_j·scale).
* ``random_feature_softmax_kernel``: its positive-random-feature approximation,
  row-normalised φ(q̃) φ(k̃)ᵀ with q̃ = q·√scale, k̃ = k·√scale.
* ``asymmetry``: ‖(K − Kᵀ)/2‖_F / ‖K‖_F — 0 for a symmetric, 1 for a skew-symmetric K.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._checks import (
    broadcast_batch,
    cache_of,
    check_finite,
    float_array,
    real_number,
    result_dtype,
    sum_to_shape,
    upstream,
)
from .dual import attention_weights
from .feature_maps import positive_random_features

__all__ = [
    "KernelCache",
    "KernelMatrixGrads",
    "kernel_matrix",
    "kernel_matrix_backward",
    "softmax_kernel",
    "random_feature_softmax_kernel",
    "asymmetry",
]


class KernelCache(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    dtype: np.dtype
    shape: tuple[int, ...]  # K's shape


class KernelMatrixGrads(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray


def kernel_matrix(phi_q: np.ndarray, phi_k: np.ndarray) -> tuple[np.ndarray, KernelCache]:
    """K = Φ_q Φ_kᵀ, K_ij = ⟨φ_q(x_i), φ_k(x_j)⟩.

    Shapes: phi_q (..., N, p), phi_k (..., M, p) → K (..., N, M). Leading axes broadcast.
    """
    phi_q = float_array(phi_q, "phi_q", min_ndim=2)
    phi_k = float_array(phi_k, "phi_k", min_ndim=2)
    if phi_q.shape[-1] != phi_k.shape[-1]:
        raise ValueError(
            f"phi_q and phi_k must share the feature dimension p: phi_q {phi_q.shape}, "
            f"phi_k {phi_k.shape}"
        )
    broadcast_batch([phi_q.shape[:-2], phi_k.shape[:-2]], ["phi_q", "phi_k"])
    check_finite(phi_q, "phi_q")
    check_finite(phi_k, "phi_k")
    dt = result_dtype(phi_q, phi_k)
    K = np.matmul(phi_q, np.swapaxes(phi_k, -1, -2), dtype=dt)
    return K, KernelCache(phi_q, phi_k, dt, K.shape)


def kernel_matrix_backward(dK: np.ndarray, cache: KernelCache) -> KernelMatrixGrads:
    """VJP of ``kernel_matrix``: forward was K = Φ_q Φ_kᵀ, so dΦ_q = dK Φ_k, dΦ_k = dKᵀ Φ_q.

    Returns ``KernelMatrixGrads(phi_q, phi_k)``; broadcast leading axes are summed back.
    """
    cache_of(cache, KernelCache, "kernel_matrix")
    phi_q, phi_k, dt, shape = cache
    dK = upstream(dK, "dK", shape, dt)
    d_q = np.matmul(dK, phi_k, dtype=dt)
    d_k = np.matmul(np.swapaxes(dK, -1, -2), phi_q, dtype=dt)
    return KernelMatrixGrads(sum_to_shape(d_q, phi_q.shape), sum_to_shape(d_k, phi_k.shape))


def softmax_kernel(
    q: np.ndarray,
    k: np.ndarray,
    *,
    scale: float | None = None,
    mask: np.ndarray | None = None,
    causal: bool = False,
) -> np.ndarray:
    """The asymmetric kernel of canonical attention: K = softmax(scale · Q Kᵀ) row-wise.

    Identical to the attention matrix P of ``dual_attention`` (same conventions).
    Shapes: q (..., N, d), k (..., M, d) → (..., N, M).
    """
    return attention_weights(q, k, mask=mask, causal=causal, scale=scale)[0]


def random_feature_softmax_kernel(
    q: np.ndarray, k: np.ndarray, w: np.ndarray, *, scale: float | None = None
) -> np.ndarray:
    """Primal (finite-feature) approximation of the softmax kernel.

    With q̃ = √scale·q, k̃ = √scale·k and the positive random features g (``w`` of shape
    (m, d)), exp(scale·qᵀk) = exp(q̃ᵀk̃) ≈ ⟨g(q̃), g(k̃)⟩, and

        K̂_ij = ⟨g(q̃_i), g(k̃_j)⟩ / Σ_j' ⟨g(q̃_i), g(k̃_j')⟩  →  softmax_j(scale·q_iᵀk_j)

    as m → ∞. Every term is positive, so the row sums never vanish.
    Shapes: q (..., N, d), k (..., M, d), w (m, d) → (..., N, M).
    """
    q = float_array(q, "q", min_ndim=2)
    k = float_array(k, "k", min_ndim=2)
    w = float_array(w, "w", ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the feature dimension d: q {q.shape}, k {k.shape}")
    if w.shape[1] != q.shape[-1]:
        raise ValueError(f"w has shape {w.shape} (m, d) but q and k have d = {q.shape[-1]}")
    broadcast_batch([q.shape[:-2], k.shape[:-2]], ["q", "k"])
    for arr, name in ((q, "q"), (k, "k"), (w, "w")):
        check_finite(arr, name)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = real_number(scale, "scale", minimum=0.0, exclusive=True)
    r = math.sqrt(scale)
    gq, _ = positive_random_features(r * q, w)
    gk, _ = positive_random_features(r * k, w)
    kern = gq @ np.swapaxes(gk, -1, -2)
    return kern / kern.sum(axis=-1, keepdims=True)


def asymmetry(K: np.ndarray) -> float:
    """‖A‖_F / ‖K‖_F with A = (K − Kᵀ)/2 the skew part: 0 symmetric … 1 skew-symmetric.

    Since ‖K‖² = ‖S‖² + ‖A‖² for the symmetric part S, the ratio lies in [0, 1].
    K must be square (N×N); returns 0 for the zero matrix.
    """
    K = float_array(K, "K", ndim=2)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square (N, N), got shape {K.shape}")
    check_finite(K, "K")
    total = np.linalg.norm(K)
    return float(np.linalg.norm(0.5 * (K - K.T)) / total) if total > 0 else 0.0
