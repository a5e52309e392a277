"""Canonical softmax attention: the *dual* form (docs/theory.md §1.1).

For one head, with Q ∈ R^{N×d}, K ∈ R^{M×d}, V ∈ R^{M×d_v}:

    S = scale · Q Kᵀ                       (N×M logits)
    P = softmax_j(S)  over visible keys    (the asymmetric kernel matrix, K_ij = κ(x_i, x_j))
    O = P V                                (values act as dual variables)

Time O(N·M·d), memory O(N·M): the N×M matrix P is formed and kept for the backward.
With ``block_size`` the keys are visited in blocks (the online softmax of
``primal_np.dual_blocked``): memory O(N·block_size), P never stored, the backward
recomputes it block by block from the LSE.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._checks import (
    bool_mask,
    boolean,
    broadcast_batch,
    broadcasts_to,
    cache_of,
    check_finite,
    float_array,
    positive_int,
    real_number,
    result_dtype,
    sum_to_shape,
    upstream,
)
from .dual_blocked import blocked_backward, blocked_forward
from .primitives import _softmax_lse_inplace

__all__ = [
    "DualCache",
    "DualGrads",
    "dual_attention",
    "dual_attention_backward",
    "attention_weights",
    "visibility",
]


class DualCache(NamedTuple):
    """What ``dual_attention`` keeps for its backward, and its public intermediates.

    attn: P, shape (..., N, M), rows sum to 1 over visible keys (all-zero rows where no key
    is visible); **None** when the forward ran with ``block_size`` (P is never stored:
    ``attention_weights(q, k, ...)`` forms it if you want it). lse: natural-log
    log-sum-exp of the scaled logits over visible keys, shape (..., N); -inf on rows with
    no visible key (the blocked backward recomputes P from it). mask, causal, block_size:
    the forward's options, kept for the blocked backward (mask None and causal False in
    an unblocked cache, whose backward does not need them).
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn: np.ndarray | None
    lse: np.ndarray
    out: np.ndarray  # O, a copy: the returned array is the caller's to modify
    scale: float
    mask: np.ndarray | None = None
    causal: bool = False
    block_size: int | None = None


class DualGrads(NamedTuple):
    """Gradients of ``dual_attention`` with respect to q, k, v (shaped like them)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray


def visibility(n_q: int, n_k: int, mask: np.ndarray | None, causal: bool) -> np.ndarray | None:
    """Boolean (…, N, M) visibility: ``mask`` AND (j ≤ i if causal); None if all visible.

    Causal is top-left aligned, as PyTorch's ``is_causal``: key j is visible to query i
    iff j ≤ i, also when N ≠ M.
    """
    vis = mask
    if causal:
        tri = np.tri(n_q, n_k, dtype=bool)  # tri[i, j] = j <= i
        vis = tri if vis is None else (vis & tri)
    return vis


def _check_scale(scale, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    return real_number(scale, "scale")


def _check_inputs(q, k, v, mask, causal):
    """Validate q, k (and v if given), the mask and causal; return them and the batch shape."""
    boolean(causal, "causal")
    q = float_array(q, "q", min_ndim=2)
    k = float_array(k, "k", min_ndim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the feature dimension d: q has shape {q.shape} (..., N, d), "
            f"k has shape {k.shape} (..., M, d)"
        )
    shapes, names = [q.shape[:-2], k.shape[:-2]], ["q", "k"]
    if v is not None:
        v = float_array(v, "v", min_ndim=2)
        if k.shape[-2] != v.shape[-2]:
            raise ValueError(
                f"k and v must have the same number of keys M: k has shape {k.shape} "
                f"(..., M, d), v has shape {v.shape} (..., M, dv)"
            )
        shapes.append(v.shape[:-2])
        names.append("v")
    batch = broadcast_batch(shapes, names)
    n, m = q.shape[-2], k.shape[-2]
    if mask is not None:
        mask = bool_mask(mask, "mask")
        target = (*batch, n, m)
        if not broadcasts_to(mask.shape, target):
            raise ValueError(
                f"mask has shape {mask.shape}; it must broadcast to (..., N, M) = {target} "
                f"(q {q.shape}, k {k.shape})"
            )
    for arr, name in ((q, "q"), (k, "k"), (v, "v")):
        if arr is not None:
            check_finite(arr, name)
    return q, k, v, mask, batch


def _probabilities(q, k, mask, causal, scale, batch, dt):
    """P and lse of the scaled logits S = scale · Q Kᵀ over the visible keys."""
    # S = (scale·Q) Kᵀ: the scale goes on the N×d factor, not on the N×M product
    s = np.matmul(q * dt.type(scale), np.swapaxes(k, -1, -2), dtype=dt)  # our own work array
    if s.shape[:-2] != batch:  # v (or the mask) carries leading axes q and k lack
        s = np.broadcast_to(s, (*batch, *s.shape[-2:])).copy()
    vis = visibility(q.shape[-2], k.shape[-2], mask, causal)
    return _softmax_lse_inplace(s, vis)


def attention_weights(
    q: np.ndarray,
    k: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The attention matrix P and the natural-log LSE of canonical attention.

    Shapes: q (..., N, d), k (..., M, d) → P (..., N, M), lse (..., N).
    P_ij = exp(S_ij − lse_i) on visible keys, 0 elsewhere; lse_i = log Σ_{j visible} exp(S_ij)
    with S = scale · Q Kᵀ; a row with no visible key has P = 0 and lse = -inf.
    Same arguments and conventions as ``dual_attention``.
    """
    q, k, _, mask, batch = _check_inputs(q, k, None, mask, causal)
    scale = _check_scale(scale, q.shape[-1])
    return _probabilities(q, k, mask, causal, scale, batch, result_dtype(q, k))


def dual_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    causal: bool = False,
    scale: float | None = None,
    block_size: int | None = None,
) -> tuple[np.ndarray, DualCache]:
    """Canonical scaled dot-product (softmax) attention, dual form O = P V.

    Args:
        q: (..., N, d) queries.
        k: (..., M, d) keys.
        v: (..., M, dv) values — the dual variables.
        mask: optional boolean array broadcastable to (..., N, M); True = query i may
            attend to key j. It may not enlarge the batch shape of q, k, v.
        causal: if True, key j is visible to query i iff j ≤ i (top-left aligned, as
            PyTorch's ``scaled_dot_product_attention(is_causal=True)``); combined with
            ``mask`` by logical AND.
        scale: logit scale, default 1/sqrt(d).
        block_size: None (default) forms P (..., N, M) and keeps it in the cache. A
            positive integer streams over blocks of at most that many keys with a running
            max and sum (the online softmax, ``primal_np.dual_blocked``): memory
            O(N·block_size), ``cache.attn`` is None and the backward recomputes P block
            by block. Same results up to rounding (≤ 1e-13 relative in float64).

    Leading axes (batch, heads) broadcast. Computes

        S = scale · Q Kᵀ,   P_ij = exp(S_ij − lse_i) (visible j),   O = P V.

    A query row with no visible key gets O_i = 0 (and lse_i = -inf) and contributes
    zero to every gradient; no NaN is produced. Logits are shifted by their row
    maximum, so logits far beyond 700 (where exp overflows in float64) are exact.

    Returns:
        out (..., N, dv) in the promoted floating dtype of q, k, v (float32 stays
        float32), and a ``DualCache`` whose ``attn`` (P) and ``lse`` fields are the
        intermediates.

    The cache holds references to (not copies of) q, k and v: modifying them in
    place between this forward and its backward changes the gradient the backward returns.
    Copy first (``q.copy()``) if you edit them.
    """
    q, k, v, mask, batch = _check_inputs(q, k, v, mask, causal)
    scale = _check_scale(scale, q.shape[-1])
    dt = result_dtype(q, k, v)
    if block_size is not None:
        block_size = positive_int(block_size, "block_size")
        causal = bool(causal)
        out, lse = blocked_forward(q, k, v, mask, causal, scale, block_size, batch, dt)
        cache = DualCache(q, k, v, None, lse, out.copy(), scale, mask, causal, block_size)
        return out, cache
    p, lse = _probabilities(q, k, mask, causal, scale, batch, dt)
    out = np.matmul(p, v, dtype=dt)
    return out, DualCache(q, k, v, p, lse, out.copy(), scale)


def dual_attention_backward(dout: np.ndarray, cache: DualCache) -> DualGrads:
    """VJP of ``dual_attention``: returns ``DualGrads(q, k, v)`` shaped like q, k, v.

    Forward was S = scale·Q Kᵀ, P = softmax(S), O = P V, so

        dV = Pᵀ dO
        dP = dO Vᵀ
        dS = P ∘ (dP − rowsum(dP ∘ P))       (= P ∘ (dP − rowsum(dO ∘ O)))
        dQ = scale · dS K,   dK = scale · dSᵀ Q

    Gradients of broadcast leading axes are summed back to each input's shape. A cache
    of the blocked forward (``block_size``; ``cache.attn`` is None) is differentiated
    block by block, recomputing P_B = exp(S_B − lse) (``primal_np.dual_blocked``).
    """
    cache_of(cache, DualCache, "dual_attention")
    if cache.attn is None:
        return DualGrads(*blocked_backward(dout, cache))
    return _dual_attention_backward(dout, cache)


def _dual_attention_backward(
    dout: np.ndarray, cache: DualCache, out: tuple[np.ndarray, ...] | None = None
) -> DualGrads:
    """``dual_attention_backward``; with ``out = (dq, dk, dv)`` (views the caller owns, of the
    full broadcast shapes) the three gradients are written there instead of new arrays."""
    q, k, v, p, o, scale = cache.q, cache.k, cache.v, cache.attn, cache.out, cache.scale
    if p is None:
        raise ValueError("a blocked cache (block_size) has no P; use dual_attention_backward")
    dt = p.dtype
    dout = upstream(dout, "dout", (*p.shape[:-1], v.shape[-1]), dt)
    dq, dk, dv = (None, None, None) if out is None else out
    dv = np.matmul(np.swapaxes(p, -1, -2), dout, out=dv)
    dp = np.matmul(dout, np.swapaxes(v, -1, -2))
    # rowsum(dP ∘ P) = rowsum(dO ∘ O) since O = P V: O(N·dv) work instead of O(N·M).
    delta = np.einsum("...i,...i->...", dout, o)[..., None]
    dp -= delta
    dp *= p  # dS, in place on our own work array
    ds = dp
    sc = dt.type(scale)
    dq = np.matmul(ds, k, dtype=dt, out=dq)
    dq *= sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q, dtype=dt, out=dk)
    dk *= sc
    if out is not None:
        return DualGrads(dq, dk, dv)
    return DualGrads(
        sum_to_shape(dq, q.shape), sum_to_shape(dk, k.shape), sum_to_shape(dv, v.shape)
    )
