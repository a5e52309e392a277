"""Sequence pooling: masked mean over tokens and CLS (first-token) pooling.

    mean:  y = Σ_n m_n x_n / max(1, Σ_n m_n)      m the padding mask, True = real token
    CLS:   y = x_0

A sequence with no real token pools to zeros (its count is clamped to 1), never NaN,
and passes zero gradient to every token.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import bool_mask, cache_of, check_finite, float_array, upstream

__all__ = [
    "MeanPoolCache",
    "PoolGrads",
    "mean_pool",
    "mean_pool_backward",
    "ClsPoolCache",
    "cls_pool",
    "cls_pool_backward",
]


class MeanPoolCache(NamedTuple):
    weights: np.ndarray  # (..., N): m_n / max(1, Σ m), in x's dtype
    dim: int  # D


class PoolGrads(NamedTuple):
    """Gradient of ``mean_pool`` or ``cls_pool`` with respect to x (..., N, D)."""

    x: np.ndarray


def mean_pool(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, MeanPoolCache]:
    """Mean of the real tokens: ``y = Σ_n m_n x_n / max(1, Σ_n m_n)``.

    Shapes: x (..., N, D), typically (B, N, D); mask boolean (..., N) (the same
    leading shape as x), True = real token; None = every token is real → y (..., D).
    A sequence whose mask is all False gives y = 0.
    """
    x = float_array(x, "x", min_ndim=2)
    check_finite(x, "x")
    if mask is None:
        m = np.ones(x.shape[:-1], dtype=x.dtype)
    else:
        mask = bool_mask(mask, "mask")
        if mask.shape != x.shape[:-1]:
            raise ValueError(
                f"mask has shape {mask.shape}, expected (..., N) = {x.shape[:-1]} for x of "
                f"shape {x.shape}"
            )
        m = mask.astype(x.dtype)
    w = m / np.maximum(m.sum(axis=-1, keepdims=True), 1.0)
    y = np.matmul(w[..., None, :], x)[..., 0, :]  # (..., 1, N) @ (..., N, D)
    return y, MeanPoolCache(w, x.shape[-1])


def mean_pool_backward(dy: np.ndarray, cache: MeanPoolCache) -> PoolGrads:
    """VJP of ``mean_pool``: forward was y = Σ_n w_n x_n, so dx_n = w_n dy.

    Padded tokens (w_n = 0) get zero gradient. Returns ``PoolGrads(x)``, x (..., N, D).
    """
    cache_of(cache, MeanPoolCache, "mean_pool")
    w = cache.weights
    dy = upstream(dy, "dy", (*w.shape[:-1], cache.dim), w.dtype)
    return PoolGrads(w[..., :, None] * dy[..., None, :])


class ClsPoolCache(NamedTuple):
    shape: tuple[int, ...]  # x.shape
    dtype: np.dtype


def cls_pool(x: np.ndarray) -> tuple[np.ndarray, ClsPoolCache]:
    """CLS pooling: the first token's features, ``y = x[..., 0, :]`` (a copy).

    Shapes: x (..., N, D) with N ≥ 1 → y (..., D). Put the CLS token at position 0.
    """
    x = float_array(x, "x", min_ndim=2)
    check_finite(x, "x")
    if x.shape[-2] < 1:
        raise ValueError(f"x must have at least one token, got shape {x.shape}")
    return x[..., 0, :].copy(), ClsPoolCache(x.shape, x.dtype)


def cls_pool_backward(dy: np.ndarray, cache: ClsPoolCache) -> PoolGrads:
    """VJP of ``cls_pool``: dx_0 = dy, dx_n = 0 for n ≥ 1. Returns ``PoolGrads(x)``."""
    cache_of(cache, ClsPoolCache, "cls_pool")
    *lead, _, d = cache.shape
    dy = upstream(dy, "dy", (*lead, d), cache.dtype)
    dx = np.zeros(cache.shape, dtype=cache.dtype)
    dx[..., 0, :] = dy
    return PoolGrads(dx)
