"""Primitive ops as pure forward/backward pairs.

Convention used throughout primal_np::

    out, cache = op(...)           # forward; cache is a small NamedTuple
    grads = op_backward(dout, cache)

``grads`` is a NamedTuple with one field per differentiable input of ``op``, named
like that input and in the same order (``linear_backward(dy, cache)`` returns
``LinearGrads(x, weight, bias)``), so it unpacks like a tuple and reads by name. The
upstream gradient is validated (floating, exactly the output's shape, finite) and the
gradients come back in the dtype the forward computed in. Nothing is stored on
objects, no input is ever written to, and no returned array shares memory with a cache.

Ops here: ``linear`` (PyTorch layout, y = x Wᵀ + b), ``softmax`` (numerically
stable, optionally masked), ``logsumexp``, ``split_heads`` / ``merge_heads``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import (
    bool_mask,
    broadcasts_to,
    cache_of,
    check_finite,
    float_array,
    positive_int,
    result_dtype,
    upstream,
)

__all__ = [
    "LinearCache",
    "LinearGrads",
    "linear",
    "linear_backward",
    "SoftmaxCache",
    "SoftmaxGrads",
    "softmax",
    "softmax_backward",
    "logsumexp",
    "SplitHeadsCache",
    "HeadsGrads",
    "split_heads",
    "split_heads_backward",
    "merge_heads",
    "merge_heads_backward",
    "MaskRowsCache",
    "MaskRowsGrads",
    "mask_rows",
    "mask_rows_backward",
    "RunningMeanCache",
    "RunningMeanGrads",
    "running_mean",
    "running_mean_backward",
]


# --------------------------------------------------------------------------- linear
class LinearCache(NamedTuple):
    x: np.ndarray  # (..., in)
    weight: np.ndarray  # (out, in)
    has_bias: bool
    dtype: np.dtype  # the computation dtype (of y)


class LinearGrads(NamedTuple):
    x: np.ndarray  # (..., in)
    weight: np.ndarray  # (out, in)
    bias: np.ndarray | None  # (out,), None when the forward had no bias


def linear(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, LinearCache]:
    """Affine map in PyTorch layout: ``y = x Wᵀ + b``.

    Shapes: x (..., in), weight (out, in), bias (out,) or None → y (..., out).
    """
    x = float_array(x, "x", min_ndim=1)
    weight = float_array(weight, "weight", ndim=2)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1]} input features (shape {x.shape}) but weight expects "
            f"{weight.shape[1]} (weight shape {weight.shape}, layout (out, in))"
        )
    if bias is not None:
        bias = float_array(bias, "bias", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias has shape {bias.shape}, expected ({weight.shape[0]},) to match weight "
                f"shape {weight.shape}"
            )
    for arr, name in ((x, "x"), (weight, "weight"), (bias, "bias")):
        if arr is not None:
            check_finite(arr, name)
    dt = result_dtype(x, weight, *([] if bias is None else [bias]))
    y = np.matmul(x, weight.T, dtype=dt)
    if bias is not None:
        y += bias
    return y, LinearCache(x, weight, bias is not None, dt)


def linear_backward(dy: np.ndarray, cache: LinearCache) -> LinearGrads:
    """VJP of ``linear``: forward was y = x Wᵀ + b, so

    dx = dy W,   dW = Σ_rows dyᵀ x,   db = Σ_rows dy.

    Returns ``LinearGrads(x, weight, bias)``; ``bias`` is None when the forward had none.
    """
    cache_of(cache, LinearCache, "linear")
    x, w, has_bias, dt = cache
    dy = upstream(dy, "dy", (*x.shape[:-1], w.shape[0]), dt)
    dx = np.matmul(dy, w, dtype=dt)
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    dw = np.matmul(dy2.T, x2, dtype=dt)
    db = dy2.sum(axis=0) if has_bias else None
    return LinearGrads(dx, dw, db)


# --------------------------------------------------------------------------- softmax
class SoftmaxCache(NamedTuple):
    p: np.ndarray  # the softmax output (zeros where masked), a copy of the returned array


class SoftmaxGrads(NamedTuple):
    s: np.ndarray


def _softmax_lse_inplace(
    s: np.ndarray, visible: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Masked softmax and natural-log LSE along the last axis, overwriting ``s``.

    ``s`` must be a work array owned by the caller. Rows with no visible entry
    give p = 0 and lse = -inf (the log of an empty sum), never NaN.
    """
    if visible is not None:
        np.copyto(s, -np.inf, where=~visible)
    m = s.max(axis=-1, keepdims=True)
    if np.any(m == np.inf):
        raise ValueError("softmax logits overflowed to +inf; rescale the inputs")
    empty = m == -np.inf
    has_empty = bool(empty.any())
    if has_empty:
        m[empty] = 0.0
    s -= m
    np.exp(s, out=s)  # masked entries: exp(-inf) = 0
    l = s.sum(axis=-1, keepdims=True)  # >= 1 on rows with a visible entry
    if has_empty:
        np.divide(s, l, out=s, where=~empty)  # empty rows are already all 0
        lse = np.full_like(l, -np.inf)
        np.log(l, out=lse, where=~empty)
        lse += m
    else:
        s /= l
        lse = np.log(l) + m
    return s, lse[..., 0]


def softmax(s: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, SoftmaxCache]:
    """Numerically stable softmax along the last axis, with an optional mask.

        p_ij = exp(s_ij − m_i) / Σ_{j visible} exp(s_ij − m_i),  m_i = max_{j visible} s_ij

    Shapes: s (..., M); mask boolean broadcastable to s.shape, True = visible.
    Masked entries get p = 0; a row with no visible entry gives all zeros (not NaN).
    """
    s, visible = _logits_and_mask(s, mask)
    work = s.astype(result_dtype(s), copy=True)
    p, _ = _softmax_lse_inplace(work, visible)
    return p, SoftmaxCache(p.copy())


def _logits_and_mask(s: object, mask: object) -> tuple[np.ndarray, np.ndarray | None]:
    """The logits of ``softmax`` / ``logsumexp`` (floating, at least 1-d, finite) and their
    mask (None, or boolean broadcasting to s.shape without enlarging it)."""
    s = float_array(s, "s", min_ndim=1)
    check_finite(s, "s")
    if mask is None:
        return s, None
    visible = bool_mask(mask, "mask")
    try:
        full = np.broadcast_shapes(visible.shape, s.shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {visible.shape} does not broadcast to s of shape {s.shape}"
        ) from None
    if full != s.shape:
        raise ValueError(
            f"mask of shape {visible.shape} would enlarge s of shape {s.shape}; it must "
            "broadcast to s.shape"
        )
    return s, visible


def softmax_backward(dp: np.ndarray, cache: SoftmaxCache) -> SoftmaxGrads:
    """VJP of ``softmax``: forward was p = softmax(s), so

    ds = p ∘ (dp − rowsum(dp ∘ p)).

    Masked entries and fully masked rows (p = 0) get ds = 0. Returns ``SoftmaxGrads(s)``.
    """
    cache_of(cache, SoftmaxCache, "softmax")
    p = cache.p
    dp = upstream(dp, "dp", p.shape, p.dtype)
    return SoftmaxGrads(p * (dp - np.sum(dp * p, axis=-1, keepdims=True)))


def logsumexp(s: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Natural-log ``log Σ_{j visible} exp(s_ij)`` along the last axis; -inf on empty rows."""
    s, visible = _logits_and_mask(s, mask)
    work = s.astype(result_dtype(s), copy=True)
    _, lse = _softmax_lse_inplace(work, visible)
    return lse


# --------------------------------------------------------------------------- heads
class SplitHeadsCache(NamedTuple):
    num_heads: int
    shape: tuple[int, ...]  # the forward input's shape
    dtype: np.dtype


class HeadsGrads(NamedTuple):
    """Gradient of ``split_heads`` or ``merge_heads`` with respect to their input x."""

    x: np.ndarray


def split_heads(x: np.ndarray, num_heads: int) -> tuple[np.ndarray, SplitHeadsCache]:
    """(..., N, H·p) → (..., H, N, p): head h takes channels [h·p, (h+1)·p)."""
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., N, H*p), got shape {x.shape}")
    num_heads = positive_int(num_heads, "num_heads")
    d = x.shape[-1]
    if d % num_heads:
        raise ValueError(
            f"num_heads = {num_heads} does not divide the last axis of x ({d}, shape {x.shape})"
        )
    p = d // num_heads
    y = x.reshape(*x.shape[:-1], num_heads, p)
    return np.swapaxes(y, -3, -2), SplitHeadsCache(num_heads, x.shape, x.dtype)


def split_heads_backward(dy: np.ndarray, cache: SplitHeadsCache) -> HeadsGrads:
    """VJP of ``split_heads`` is ``merge_heads``: dx = merge_heads(dy)."""
    cache_of(cache, SplitHeadsCache, "split_heads")
    *lead, n, d = cache.shape
    h = cache.num_heads
    dy = upstream(dy, "dy", (*lead, h, n, d // h), cache.dtype)
    return HeadsGrads(np.swapaxes(dy, -3, -2).reshape(cache.shape))


def merge_heads(x: np.ndarray) -> tuple[np.ndarray, SplitHeadsCache]:
    """(..., H, N, p) → (..., N, H·p), the inverse of ``split_heads``."""
    x = float_array(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must have shape (..., H, N, p), got shape {x.shape}")
    h, n, p = x.shape[-3:]
    y = np.swapaxes(x, -3, -2).reshape(*x.shape[:-3], n, h * p)
    return y, SplitHeadsCache(h, x.shape, x.dtype)


def merge_heads_backward(dy: np.ndarray, cache: SplitHeadsCache) -> HeadsGrads:
    """VJP of ``merge_heads`` is ``split_heads``: dx = split_heads(dy)."""
    cache_of(cache, SplitHeadsCache, "merge_heads")
    *lead, h, n, p = cache.shape
    dy = upstream(dy, "dy", (*lead, n, h * p), cache.dtype)
    return HeadsGrads(np.swapaxes(dy.reshape(*lead, n, h, p), -3, -2))


# --------------------------------------------------------------------------- row mask
class MaskRowsCache(NamedTuple):
    keep: np.ndarray  # (..., N, 1) in the computation dtype: 1 = real token, 0 = padding
    shape: tuple[int, ...]


class MaskRowsGrads(NamedTuple):
    x: np.ndarray  # mask is not differentiable


def mask_rows(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, MaskRowsCache]:
    """Zero the rows of padded tokens: y_n = m_n x_n (the LRA padding mask).

    Shapes: x (..., N, d); mask boolean (..., N) broadcastable against x's leading axes
    (e.g. (B, 1, N) for x (B, H, N, p)), True = real token → y (..., N, d).
    """
    x = float_array(x, "x", min_ndim=2)
    mask = bool_mask(mask, "mask", "True = real token")
    if not broadcasts_to(mask.shape, x.shape[:-1]):
        raise ValueError(
            f"mask has shape {mask.shape}; it must broadcast to x's (..., N) = {x.shape[:-1]} "
            "(True = real token)"
        )
    dt = result_dtype(x)
    keep = mask[..., None].astype(dt)
    return x * keep, MaskRowsCache(keep, x.shape)


def mask_rows_backward(dy: np.ndarray, cache: MaskRowsCache) -> MaskRowsGrads:
    """VJP of ``mask_rows``: forward was y_n = m_n x_n, so dx_n = m_n dy_n."""
    cache_of(cache, MaskRowsCache, "mask_rows")
    dy = upstream(dy, "dy", cache.shape, cache.keep.dtype)
    return MaskRowsGrads(dy * cache.keep)


# --------------------------------------------------------------------------- running mean
class RunningMeanCache(NamedTuple):
    axis: int
    counts: np.ndarray  # 1, 2, …, N shaped to broadcast along ``axis``
    shape: tuple[int, ...] = ()  # the input's shape


class RunningMeanGrads(NamedTuple):
    x: np.ndarray


def running_mean(x: np.ndarray, axis: int = -2) -> tuple[np.ndarray, RunningMeanCache]:
    """Causal running mean along ``axis``: x̃_i = (1/i) Σ_{t≤i} x_t (1-indexed).

    Shapes: x (..., N, d) with the default axis=-2 → same shape.
    """
    x = float_array(x, "x", min_ndim=1)
    check_finite(x, "x")
    axis = axis % x.ndim
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    counts = np.arange(1, n + 1, dtype=result_dtype(x)).reshape(shape)
    y = np.cumsum(x, axis=axis, dtype=result_dtype(x))
    y /= counts
    return y, RunningMeanCache(axis, counts, x.shape)


def running_mean_backward(dy: np.ndarray, cache: RunningMeanCache) -> RunningMeanGrads:
    """VJP of ``running_mean``: forward was x̃_i = (1/i) Σ_{t≤i} x_t, so

    dx_t = Σ_{i≥t} dx̃_i / i      (a reverse cumulative sum).
    """
    cache_of(cache, RunningMeanCache, "running_mean")
    axis, counts, shape = cache
    dy = upstream(dy, "dy", shape, counts.dtype)
    scaled = dy / counts
    rev = np.flip(scaled, axis=axis)
    return RunningMeanGrads(np.flip(np.cumsum(rev, axis=axis), axis=axis))
