"""The canonical multi-head self-attention layer: the "Transformer" baseline.

    Q = X W_qᵀ + b_q,  K = X W_kᵀ + b_k,  V = X W_vᵀ + b_v        (D → D, PyTorch layout)
    O_h = softmax(Q_h K_hᵀ / sqrt(p)) V_h                         per head h, p = D / H
    Y = merge_heads(O) W_oᵀ + b_o

This is the dual form of docs/theory.md §1.1 with learned projections; the Primal-Attention
layer (``primal_np.layer``) is compared against it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import (
    bool_mask,
    boolean,
    broadcasts_to,
    cache_of,
    check_finite,
    float_array,
    float_dtype,
    param_dict,
    positive_int,
)
from ._checks import seed as _seed
from .dual import DualCache, _dual_attention_backward, dual_attention
from .init import torch_linear_init
from .primitives import LinearCache, linear, linear_backward, merge_heads, split_heads

__all__ = [
    "MHA_PARAM_NAMES",
    "MHACache",
    "MHAGrads",
    "init_mha_params",
    "mha_attention",
    "mha_attention_backward",
]

MHA_PARAM_NAMES = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")


class MHACache(NamedTuple):
    num_heads: int
    lin_qkv: LinearCache  # the fused projection X [W_q; W_k; W_v]ᵀ + [b_q; b_k; b_v]
    attn: DualCache
    lin_o: LinearCache


class MHAGrads(NamedTuple):
    x: np.ndarray
    params: dict[str, np.ndarray]  # keyed like the params: W_q, b_q, ..., W_o, b_o


def init_mha_params(
    dim: int, *, seed: int = 0, dtype: np.dtype | type = np.float64
) -> dict[str, np.ndarray]:
    """PyTorch-default initialisation (uniform ±1/sqrt(fan_in)) of the four D→D linears."""
    dim = positive_int(dim, "dim")
    dtype = float_dtype(dtype, "dtype")
    rng = np.random.default_rng(_seed(seed, "seed"))
    params: dict[str, np.ndarray] = {}
    for t in "qkvo":
        w, b = torch_linear_init(rng, dim, dim, dtype=dtype)
        assert b is not None
        params[f"W_{t}"], params[f"b_{t}"] = w, b
    return params


def _check_params(params: object, dim: int) -> dict[str, np.ndarray]:
    """The eight parameters: weights (D, D), biases (D,), floating and finite (KeyError for
    missing or unexpected names)."""
    shapes = {n: (dim, dim) if n.startswith("W") else (dim,) for n in MHA_PARAM_NAMES}
    return param_dict(params, shapes, "MHA layer")


def mha_attention(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    *,
    num_heads: int,
    padding_mask: np.ndarray | None = None,
    attn_mask: np.ndarray | None = None,
    causal: bool = False,
) -> tuple[np.ndarray, MHACache]:
    """Canonical multi-head self-attention, forward.

    Args:
        x: (..., N, D) layer input.
        params: ``W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o`` — weights (D, D) in (out, in)
            layout, biases (D,).
        num_heads: H; must divide D.
        padding_mask: optional boolean (..., N), True = real token. Padded tokens are
            hidden as keys (PyTorch's ``key_padding_mask`` with the opposite polarity);
            their own output rows are still computed.
        attn_mask: optional boolean broadcastable to (..., H, N, N), True = may attend.
        causal: key j visible to query i iff j ≤ i.

    Returns (y (..., N, D), cache).

    The cache holds references to (not copies of) x and the parameters: modifying them in
    place between this forward and its backward changes the gradient the backward returns.
    Copy first (``x.copy()``, ``{k: v.copy() for k, v in params.items()}``) if you edit them.
    """
    x = float_array(x, "x", min_ndim=2)
    check_finite(x, "x")
    num_heads = positive_int(num_heads, "num_heads")
    boolean(causal, "causal")
    n, d = x.shape[-2:]
    if d % num_heads:
        raise ValueError(f"dim {d} (x shape {x.shape}) is not divisible by num_heads={num_heads}")
    params = _check_params(params, d)
    mask = None
    if attn_mask is not None:
        mask = bool_mask(attn_mask, "attn_mask")
        target = (*x.shape[:-2], num_heads, n, n)
        if not broadcasts_to(mask.shape, target):
            raise ValueError(
                f"attn_mask has shape {mask.shape}; it must broadcast to (..., H, N, N) = {target}"
            )
    if padding_mask is not None:
        pm = bool_mask(padding_mask, "padding_mask", "True = real token")
        if pm.shape != x.shape[:-1]:
            raise ValueError(
                f"padding_mask has shape {pm.shape}, expected (..., N) = {x.shape[:-1]} "
                f"for x of shape {x.shape}"
            )
        key_vis = pm[..., None, None, :]  # (..., 1, 1, N): hides padded keys
        mask = key_vis if mask is None else (mask & key_vis)
    # [Q | K | V] = X [W_q; W_k; W_v]ᵀ + [b_q; b_k; b_v]: one GEMM; the heads are views of it.
    w_qkv, b_qkv = _qkv_projection(params)
    qkv, lin_qkv = linear(x, w_qkv, b_qkv)
    qh, kh, vh = (split_heads(t, num_heads)[0] for t in np.split(qkv, 3, axis=-1))
    o, attn = dual_attention(qh, kh, vh, mask=mask, causal=causal)
    y, lin_o = linear(merge_heads(o)[0], params["W_o"], params["b_o"])
    return y, MHACache(num_heads, lin_qkv, attn, lin_o)


def mha_attention_backward(dy: np.ndarray, cache: MHACache) -> MHAGrads:
    """VJP of ``mha_attention``: returns ``MHAGrads(x, params)``, params keyed like the params.

    Reverse of the forward: output projection → merge heads → attention → the fused
    [Q | K | V] projection.
    """
    cache_of(cache, MHACache, "mha_attention")
    h = cache.num_heads
    g_o = linear_backward(dy, cache.lin_o)
    # dQ, dK, dV are written straight into the heads of one d[Q | K | V] (..., N, 3, H, p)
    *lead, n, d = cache.lin_qkv.x.shape
    dqkv = np.empty((*lead, n, 3, h, d // h), dtype=cache.attn.lse.dtype)
    heads = tuple(np.swapaxes(dqkv[..., i, :, :], -3, -2) for i in range(3))  # (..., H, N, p)
    _dual_attention_backward(split_heads(g_o.x, h)[0], cache.attn, out=heads)
    # forward was [Q | K | V] = X [W_q; W_k; W_v]ᵀ + b: one linear backward gives dX and the
    # stacked (3D, D) [dW_q; dW_k; dW_v], (3D,) [db_q; db_k; db_v]
    g = linear_backward(dqkv.reshape(*lead, n, 3 * d), cache.lin_qkv)
    assert g.bias is not None and g_o.bias is not None
    grads = {"W_o": g_o.weight, "b_o": g_o.bias}
    for i, t in enumerate("qkv"):
        grads[f"W_{t}"] = g.weight[i * d : (i + 1) * d].copy()
        grads[f"b_{t}"] = g.bias[i * d : (i + 1) * d].copy()
    return MHAGrads(g.x, {k: grads[k] for k in MHA_PARAM_NAMES})


def _qkv_projection(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The fused projection [W_q; W_k; W_v] (3D, D) and its bias [b_q; b_k; b_v] (3D,)."""
    w = np.concatenate([params["W_q"], params["W_k"], params["W_v"]])
    return w, np.concatenate([params["b_q"], params["b_k"], params["b_v"]])
