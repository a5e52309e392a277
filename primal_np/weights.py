"""Data-dependent projection weights of the Primal-Attention layer (docs/theory.md, §4).

The paper's f(X): instead of fixed W_e, W_r ∈ R^{p×s}, each sequence gets

    W_{e|X} = Fᵀ W_e,   W_{r|X} = Fᵀ W_r          F ∈ R^{n×p}: sampled rows of the input

with parameters W_e, W_r ∈ R^{n×s} (one pair per head), so the KSVD problem of a sequence
is posed on the kernel Φ_q Fᵀ F Φ_kᵀ rather than Φ_q Φ_kᵀ. ``sampled_rows`` builds F.
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
    "DataWeightsCache",
    "DataWeightsGrads",
    "data_dependent_weights",
    "data_dependent_weights_backward",
]


class DataWeightsCache(NamedTuple):
    F: np.ndarray  # (..., n, p)
    W: np.ndarray  # (..., n, s)
    dtype: np.dtype
    shape: tuple[int, ...]  # W_X's shape (..., p, s)


class DataWeightsGrads(NamedTuple):
    F: np.ndarray
    W: np.ndarray


def data_dependent_weights(F: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, DataWeightsCache]:
    """W_X = Fᵀ W, the data-dependent weights of one sequence and head.

    Shapes: F (..., n, p), W (..., n, s) with broadcasting leading axes (typically F
    (B, H, n, p) and the per-head parameters W (H, n, s)) → W_X (..., p, s).
    """
    F = float_array(F, "F", min_ndim=2)
    W = float_array(W, "W", min_ndim=2)
    if F.shape[-2] != W.shape[-2]:
        raise ValueError(
            f"F (..., n, p) and W (..., n, s) must share n: F has shape {F.shape}, W {W.shape}"
        )
    broadcast_batch([F.shape[:-2], W.shape[:-2]], ["F", "W"])
    check_finite(F, "F")
    check_finite(W, "W")
    dt = result_dtype(F, W)
    W_X = np.matmul(np.swapaxes(F, -1, -2), W, dtype=dt)
    return W_X, DataWeightsCache(F, W, dt, W_X.shape)


def data_dependent_weights_backward(dW_X: np.ndarray, cache: DataWeightsCache) -> DataWeightsGrads:
    """VJP of ``data_dependent_weights``: forward was W_X = Fᵀ W, so

    dF = W dW_Xᵀ,   dW = F dW_X      (summed over the leading axes W was broadcast along,
                                       e.g. the batch: dW_e = Σ_b F_b dW_{e|X_b}).
    """
    cache_of(cache, DataWeightsCache, "data_dependent_weights")
    F, W, dt, shape = cache
    dW_X = upstream(dW_X, "dW_X", shape, dt)
    dF = np.matmul(W, np.swapaxes(dW_X, -1, -2), dtype=dt)
    dW = np.matmul(F, dW_X, dtype=dt)
    return DataWeightsGrads(sum_to_shape(dF, F.shape), sum_to_shape(dW, W.shape))
