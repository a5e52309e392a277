"""Token and position embeddings as pure forward/backward pairs.

    E = T[ids]                     token lookup: T (V, D), ids (..., N) → E (..., N, D)
    Y = X + P[:N]                  learned positions: P (N_max, D), X (..., N, D)
    PE[pos, 2i]   = sin(pos / 10000^(2i/D))
    PE[pos, 2i+1] = cos(pos / 10000^(2i/D))      fixed sinusoidal positions (Vaswani et al.)

The token backward scatter-adds dE into a (V, D) table. It uses one
``np.bincount`` over the flattened (token, channel) index. Measured with NumPy 2.4
on 2 CPU cores (V from 20 to 30 000, B·N from 2k to 16k tokens, D = 64 or 128) it
was 2–7× faster than ``np.add.at``, as fast as or up to 2.6× faster than a sort +
``np.add.reduceat``, and faster than a one-hot (V, B·N) matmul except in the
smallest case (V = 20, 2k tokens: 0.27 vs 0.16 ms), without the one-hot's
O(V·B·N) memory.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._checks import cache_of, check_finite, float_array, index_array, positive_int, upstream

__all__ = [
    "EmbeddingCache",
    "EmbeddingGrads",
    "embedding",
    "embedding_backward",
    "PositionalCache",
    "PositionalGrads",
    "learned_positional",
    "learned_positional_backward",
    "sinusoidal_positions",
]


# --------------------------------------------------------------------------- tokens
class EmbeddingCache(NamedTuple):
    ids: np.ndarray  # (...,) integer ids, as given
    table_shape: tuple[int, int]  # (V, D)
    dtype: np.dtype  # the table's dtype (dT has it too)


class EmbeddingGrads(NamedTuple):
    table: np.ndarray  # (V, D); ids are not differentiable


def embedding(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
    """Token embedding lookup: ``E[..., n, :] = T[ids[..., n], :]``.

    Shapes: ids integer (..., N) (typically (B, N)), every id in [0, V);
    table (V, D) → E (..., N, D), a new array in the table's dtype.
    """
    table = float_array(table, "table", ndim=2)
    check_finite(table, "table")
    ids = index_array(ids, "ids", table.shape[0])
    return table[ids], EmbeddingCache(ids, table.shape, table.dtype)


def embedding_backward(de: np.ndarray, cache: EmbeddingCache) -> EmbeddingGrads:
    """VJP of ``embedding``: forward was E = T[ids], so dT[v] = Σ_{positions with id v} dE.

    Returns ``EmbeddingGrads(table)``, dT (V, D); rows of ids that never occur are zero.
    """
    cache_of(cache, EmbeddingCache, "embedding")
    v, d = cache.table_shape
    de = upstream(de, "de", (*cache.ids.shape, d), cache.dtype)
    flat_ids = cache.ids.reshape(-1).astype(np.intp, copy=False)
    de2 = de.reshape(flat_ids.size, d)
    # entry (t, c) of dE lands in bin ids[t]·D + c of the flattened table
    bins = (flat_ids[:, None] * d + np.arange(d)).reshape(-1)
    dt = np.bincount(bins, weights=de2.reshape(-1), minlength=v * d)
    return EmbeddingGrads(dt.reshape(v, d).astype(cache.dtype, copy=False))


# --------------------------------------------------------------------------- positions
class PositionalCache(NamedTuple):
    n_max: int  # rows of the position table
    shape: tuple[int, ...]  # the output's shape
    dtype: np.dtype


class PositionalGrads(NamedTuple):
    x: np.ndarray
    table: np.ndarray


def learned_positional(x: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, PositionalCache]:
    """Add learned position embeddings: ``Y[..., n, :] = X[..., n, :] + P[n, :]``.

    Shapes: x (..., N, D), table (N_max, D) with N ≤ N_max → Y (..., N, D).
    Only the first N rows of the table are used.
    """
    x = float_array(x, "x", min_ndim=2)
    table = float_array(table, "table", ndim=2)
    n, d = x.shape[-2:]
    if table.shape[1] != d or table.shape[0] < n:
        raise ValueError(
            f"table has shape {table.shape}, expected (N_max ≥ {n}, {d}) for x of shape {x.shape}"
        )
    check_finite(x, "x")
    check_finite(table, "table")
    y = x + table[:n]
    return y, PositionalCache(table.shape[0], y.shape, y.dtype)


def learned_positional_backward(dy: np.ndarray, cache: PositionalCache) -> PositionalGrads:
    """VJP of ``learned_positional``: forward was Y = X + P[:N], so

    dX = dY,   dP[:N] = Σ_{leading axes} dY,   dP[N:] = 0.

    Returns ``PositionalGrads(x, table)``.
    """
    cache_of(cache, PositionalCache, "learned_positional")
    dy = upstream(dy, "dy", cache.shape, cache.dtype)
    n, d = dy.shape[-2:]
    dtable = np.zeros((cache.n_max, d), dtype=dy.dtype)
    dtable[:n] = dy.reshape(-1, n, d).sum(axis=0)
    return PositionalGrads(dy.copy(), dtable)


def sinusoidal_positions(
    n: int, dim: int, *, base: float = 10000.0, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """Fixed sinusoidal position table (Vaswani et al., 2017), shape (n, dim).

        PE[pos, 2i]   = sin(pos / base^(2i/dim))
        PE[pos, 2i+1] = cos(pos / base^(2i/dim))

    for pos in [0, n) and column c = 2i or 2i+1 < dim. With an odd ``dim`` the last
    column is a sine (its cosine partner would be column ``dim``). No parameters,
    hence no backward: add the table to the token embeddings.
    """
    n = positive_int(n, "n")
    dim = positive_int(dim, "dim")
    if not float(base) > 1.0:
        raise ValueError(f"base must be > 1, got {base!r}")
    pos = np.arange(n, dtype=np.float64)[:, None]
    even = np.arange(dim, dtype=np.float64) // 2 * 2  # 2i for column 2i and 2i+1
    angle = pos * np.exp(-even * (math.log(base) / dim))
    pe = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
    return pe.astype(dtype, copy=False)
