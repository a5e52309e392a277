"""Sampled tokens of the data-dependent projection weights: their positions, and the rows F.

``sampled_rows(x, idx, num_heads)`` gathers F_h = X[idx, h·p:(h+1)·p] for every head (the
rows of the layer input at the sampled positions, head h's own block of channels), and
``sampled_rows_backward`` scatter-adds dF back into dX (repeated positions summed).

The positions (docs/conformance.md, "index formula"):

The authors call ``torch.linspace(0, N − 1, n, dtype=int)``. PyTorch evaluates it in
double with a two-sided formula and truncates toward zero:

    step = (N − 1) / (n − 1)
    idx_i = trunc(i · step)                       for i < n // 2
    idx_i = trunc((N − 1) − step · (n − 1 − i))   otherwise

``np.linspace(0, N − 1, n).astype(int)`` uses i·step throughout and can differ by one
where i·step rounds just below an integer; this module matches PyTorch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import check_finite, float_array, positive_int, upstream

__all__ = [
    "torch_linspace_indices",
    "lra_indices",
    "vision_indices",
    "check_indices",
    "SampledRowsCache",
    "SampledRowsGrads",
    "sampled_rows",
    "sampled_rows_backward",
]


def torch_linspace_indices(num_tokens: int, n: int) -> np.ndarray:
    """PyTorch's ``linspace(0, num_tokens − 1, n, dtype=int64)``, exactly. Shape (n,), sorted.

    Indices repeat when n > num_tokens.
    """
    num_tokens = positive_int(num_tokens, "num_tokens")
    n = positive_int(n, "n")
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    end = float(num_tokens - 1)
    step = end / (n - 1)
    i = np.arange(n, dtype=np.float64)
    vals = np.where(i < n // 2, i * step, end - step * (n - 1 - i))
    return np.trunc(vals).astype(np.int64)


def lra_indices(num_tokens: int, low_rank: int, rank_multi: int) -> np.ndarray:
    """LRA layer: always n = s·m positions (repeating when N < n)."""
    return torch_linspace_indices(num_tokens, low_rank * rank_multi)


def vision_indices(num_tokens: int, low_rank: int, rank_multi: int) -> np.ndarray:
    """Vision layer: n = min(N, s·m); all N tokens in order when N ≤ s·m, else evenly spaced."""
    n = low_rank * rank_multi
    if num_tokens <= n:
        return np.arange(num_tokens, dtype=np.int64)
    return torch_linspace_indices(num_tokens, n)


def check_indices(idx: object, num_tokens: int, name: str = "idx") -> np.ndarray:
    """``idx`` as a non-empty 1-D integer array of positions in [0, num_tokens), else a named error."""
    arr = np.asarray(idx)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be a 1-D integer array of token positions, got dtype {arr.dtype}, "
            f"shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one position, got an empty array")
    bad = (arr < 0) | (arr >= num_tokens)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} must lie in [0, {num_tokens}) for N = {num_tokens} tokens, got {int(arr[i])} "
            f"at index {i}"
        )
    return arr.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- the rows F
class SampledRowsCache(NamedTuple):
    idx: np.ndarray  # (n,) positions
    shape: tuple[int, ...]  # x's shape (..., N, D)
    dtype: np.dtype


class SampledRowsGrads(NamedTuple):
    x: np.ndarray  # (..., N, D); idx is not differentiable


def sampled_rows(
    x: np.ndarray, idx: np.ndarray, num_heads: int
) -> tuple[np.ndarray, SampledRowsCache]:
    """F: the rows of x at the sampled positions, split by heads.

        F_h = X[idx, h·p : (h+1)·p]        (n × p, head h's own block of channels)

    Shapes: x (..., N, D) with D = H·p, idx integer (n,) in [0, N) (positions may repeat)
    → F (..., H, n, p), a new array.
    """
    x = float_array(x, "x", min_ndim=2)
    check_finite(x, "x")
    num_heads = positive_int(num_heads, "num_heads")
    *lead, n_tok, d = x.shape
    if d % num_heads:
        raise ValueError(
            f"the last axis of x (shape {x.shape}) is not divisible by num_heads={num_heads}"
        )
    idx = check_indices(idx, n_tok)
    rows = x[..., idx, :]  # (..., n, D), a copy (fancy indexing)
    F = np.swapaxes(rows.reshape(*lead, idx.size, num_heads, d // num_heads), -3, -2)
    return F, SampledRowsCache(idx, x.shape, x.dtype)


def sampled_rows_backward(dF: np.ndarray, cache: SampledRowsCache) -> SampledRowsGrads:
    """VJP of ``sampled_rows``: forward was F_h = X[idx, h-block], so dX is zero except at the
    sampled rows, where dF (heads merged back into channels) is scatter-added; a position
    sampled twice receives the sum of both rows' gradients.
    """
    idx, shape, dt = cache
    *lead, n_tok, d = shape
    dF = np.asarray(dF)
    h = dF.shape[-3] if dF.ndim >= 3 else 1
    dF = upstream(dF, "dF", (*lead, h, idx.size, d // h), dt)
    d_rows = np.swapaxes(dF, -3, -2).reshape(*lead, idx.size, d)
    dx = np.zeros(shape, dtype=dt)
    # Σ over repeats of a position: sort the positions (stably, so repeats keep their
    # order), sum each run of equal positions, then write each sum into its row once.
    order = np.argsort(idx, kind="stable")
    pos = idx[order]
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    dx[..., pos[starts], :] = np.add.reduceat(d_rows[..., order, :], starts, axis=-2)
    return SampledRowsGrads(dx)
