"""Primitive ops as pure forward/backward pairs.

Convention used throughout primal_np::

    out, cache = op(...)           # forward; cache is a small NamedTuple
    grads = op_backward(dout, cache)

Nothing is stored on objects and no input is ever written to.

Ops here: ``linear`` (PyTorch layout, y = x Wᵀ + b), ``softmax`` (numerically
stable, optionally masked), ``logsumexp``, ``split_heads`` / ``merge_heads``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import bool_mask, check_finite, float_array, result_dtype

__all__ = [
    "LinearCache",
    "linear",
    "linear_backward",
    "SoftmaxCache",
    "softmax",
    "softmax_backward",
    "logsumexp",
    "SplitHeadsCache",
    "split_heads",
    "split_heads_backward",
    "merge_heads",
    "merge_heads_backward",
    "RunningMeanCache",
    "running_mean",
    "running_mean_backward",
]


# --------------------------------------------------------------------------- linear
class LinearCache(NamedTuple):
    x: np.ndarray  # (..., in)
    weight: np.ndarray  # (out, in)
    has_bias: bool


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
    dt = result_dtype(x, weight, *([] if bias is None else [np.asarray(bias)]))
    y = np.matmul(x, weight.T, dtype=dt)
    if bias is not None:
        bias = float_array(bias, "bias", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias has shape {bias.shape}, expected ({weight.shape[0]},) to match weight "
                f"shape {weight.shape}"
            )
        y += bias
    return y, LinearCache(x, weight, bias is not None)


def linear_backward(
    dy: np.ndarray, cache: LinearCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """VJP of ``linear``: forward was y = x Wᵀ + b, so

    dx = dy W,   dW = Σ_rows dyᵀ x,   db = Σ_rows dy.

    Returns (dx, dweight, dbias); dbias is None when the forward had no bias.
    """
    x, w, has_bias = cache
    dx = dy @ w
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    dw = dy2.T @ x2
    db = dy2.sum(axis=0) if has_bias else None
    return dx, dw, db


# --------------------------------------------------------------------------- softmax
class SoftmaxCache(NamedTuple):
    p: np.ndarray  # the softmax output (zeros where masked)


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
    s = float_array(s, "s", min_ndim=1)
    check_finite(s, "s")
    visible = None
    if mask is not None:
        visible = bool_mask(mask, "mask")
        try:
            np.broadcast_shapes(visible.shape, s.shape)
        except ValueError:
            raise ValueError(
                f"mask of shape {visible.shape} does not broadcast to s of shape {s.shape}"
            ) from None
        if np.broadcast_shapes(visible.shape, s.shape) != s.shape:
            raise ValueError(
                f"mask of shape {visible.shape} would enlarge s of shape {s.shape}; it must "
                "broadcast to s.shape"
            )
    work = s.astype(result_dtype(s), copy=True)
    p, _ = _softmax_lse_inplace(work, visible)
    return p, SoftmaxCache(p)


def softmax_backward(dp: np.ndarray, cache: SoftmaxCache) -> np.ndarray:
    """VJP of ``softmax``: forward was p = softmax(s), so

    ds = p ∘ (dp − rowsum(dp ∘ p)).

    Masked entries and fully masked rows (p = 0) get ds = 0.
    """
    p = cache.p
    return p * (dp - np.sum(dp * p, axis=-1, keepdims=True))


def logsumexp(s: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Natural-log ``log Σ_{j visible} exp(s_ij)`` along the last axis; -inf on empty rows."""
    s = float_array(s, "s", min_ndim=1)
    check_finite(s, "s")
    visible = None if mask is None else bool_mask(mask, "mask")
    work = s.astype(result_dtype(s), copy=True)
    _, lse = _softmax_lse_inplace(work, visible)
    return lse


# --------------------------------------------------------------------------- heads
class SplitHeadsCache(NamedTuple):
    num_heads: int


def split_heads(x: np.ndarray, num_heads: int) -> tuple[np.ndarray, SplitHeadsCache]:
    """(..., N, H·p) → (..., H, N, p): head h takes channels [h·p, (h+1)·p)."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., N, H*p), got shape {x.shape}")
    d = x.shape[-1]
    if num_heads < 1 or d % num_heads:
        raise ValueError(
            f"the last axis of x ({d}, shape {x.shape}) is not divisible by num_heads={num_heads}"
        )
    p = d // num_heads
    y = x.reshape(*x.shape[:-1], num_heads, p)
    return np.swapaxes(y, -3, -2), SplitHeadsCache(num_heads)


def split_heads_backward(dy: np.ndarray, cache: SplitHeadsCache) -> np.ndarray:
    """VJP of ``split_heads`` is ``merge_heads``."""
    return merge_heads(dy)[0]


def merge_heads(x: np.ndarray) -> tuple[np.ndarray, SplitHeadsCache]:
    """(..., H, N, p) → (..., N, H·p), the inverse of ``split_heads``."""
    x = np.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"x must have shape (..., H, N, p), got shape {x.shape}")
    h, n, p = x.shape[-3:]
    y = np.swapaxes(x, -3, -2).reshape(*x.shape[:-3], n, h * p)
    return y, SplitHeadsCache(h)


def merge_heads_backward(dy: np.ndarray, cache: SplitHeadsCache) -> np.ndarray:
    """VJP of ``merge_heads`` is ``split_heads``."""
    return split_heads(dy, cache.num_heads)[0]


# --------------------------------------------------------------------------- running mean
class RunningMeanCache(NamedTuple):
    axis: int
    counts: np.ndarray  # 1, 2, …, N shaped to broadcast along ``axis``


def running_mean(x: np.ndarray, axis: int = -2) -> tuple[np.ndarray, RunningMeanCache]:
    """Causal running mean along ``axis``: x̃_i = (1/i) Σ_{t≤i} x_t (1-indexed).

    Shapes: x (..., N, d) with the default axis=-2 → same shape.
    """
    x = float_array(x, "x", min_ndim=1)
    axis = axis % x.ndim
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    counts = np.arange(1, n + 1, dtype=result_dtype(x)).reshape(shape)
    y = np.cumsum(x, axis=axis, dtype=result_dtype(x))
    y /= counts
    return y, RunningMeanCache(axis, counts)


def running_mean_backward(dy: np.ndarray, cache: RunningMeanCache) -> np.ndarray:
    """VJP of ``running_mean``: dx_t = Σ_{i≥t} dy_i / i (a reverse cumulative sum)."""
    axis, counts = cache
    scaled = dy / counts
    rev = np.flip(scaled, axis=axis)
    return np.flip(np.cumsum(rev, axis=axis), axis=axis)
