"""The head output of the Primal-Attention layer: the shared 2s → p map (docs/theory.md, §4).

    O_h = [E_h, R_h] W_cᵀ + b_c        E_h, R_h ∈ R^{N×s},  W_c ∈ R^{p×2s},  b_c ∈ R^p

One map, shared by all heads (the authors' ``concate_weight``). The scores are given as a
tuple, so a variant that keeps only the e-scores is ``head_output((E,), W_c, b_c)`` with
W_c ∈ R^{p×s}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._checks import cache_of, float_array
from .primitives import LinearCache, linear, linear_backward

__all__ = ["HeadOutputCache", "HeadOutputGrads", "head_output", "head_output_backward"]


class HeadOutputCache(NamedTuple):
    widths: tuple[int, ...]  # s of each score array
    lin: LinearCache  # of [E, R] W_cᵀ + b_c


class HeadOutputGrads(NamedTuple):
    scores: tuple[np.ndarray, ...]  # (dE, dR), shaped like the scores
    weight: np.ndarray  # (p, 2s)
    bias: np.ndarray | None  # (p,)


def head_output(
    scores: Sequence[np.ndarray], weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, HeadOutputCache]:
    """O = [E, R] W_cᵀ + b_c: the scores concatenated on their last axis, then one linear map.

    Shapes: scores (E, R), each (..., N, s) (typically (B, H, N, s)); weight (p, 2s) in
    (out, in) layout; bias (p,) → O (..., N, p).
    """
    if isinstance(scores, np.ndarray) or not isinstance(scores, Sequence) or not scores:
        raise TypeError("scores must be a non-empty tuple of arrays, e.g. (E, R)")
    arrs = [float_array(a, f"scores[{i}]", min_ndim=1) for i, a in enumerate(scores)]
    lead = arrs[0].shape[:-1]
    if any(a.shape[:-1] != lead for a in arrs):
        raise ValueError(
            f"the score arrays must share every axis but the last; got {[a.shape for a in arrs]}"
        )
    y, lin = linear(np.concatenate(arrs, axis=-1), weight, bias)
    return y, HeadOutputCache(tuple(a.shape[-1] for a in arrs), lin)


def head_output_backward(dO: np.ndarray, cache: HeadOutputCache) -> HeadOutputGrads:
    """VJP of ``head_output``: forward was O = [E, R] W_cᵀ + b_c, so

    d[E, R] = dO W_c (split back into dE, dR),   dW_c = Σ_rows dOᵀ [E, R],   db_c = Σ_rows dO.
    """
    cache_of(cache, HeadOutputCache, "head_output")
    g = linear_backward(dO, cache.lin)
    cuts = np.cumsum(cache.widths)[:-1]
    return HeadOutputGrads(tuple(np.split(g.x, cuts, axis=-1)), g.weight, g.bias)
