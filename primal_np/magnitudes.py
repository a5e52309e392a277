"""Operand magnitudes: the scale of an array's rounding errors, derived from the op's operands.

``primal_np.compare`` bounds the rounding part of a candidate's error by
floor_eps · eps · A per array. With A = max|r| (the default) the bound collapses on an
array that is zero in exact arithmetic: the key-bias gradient of any softmax attention
layer is Σ_i dK_i = scale · Σ_i (Σ_j dS_ij) Q_i = 0 because every row of dS sums to zero,
yet every correct implementation computes it as rounding noise of the size of the dK_i
it sums. And A = max|r| ignores how the softmax amplifies the rounding of large logits.
This module computes, per output and gradient, the ``OperandScale(size, logit, length,
sensitivity)`` that ``primal_np.compare`` turns into the operand magnitude

    A = max Z · (1 + (eps_acc / eps) · √n) + L · max W

from the op's formulas, in float64, from the float64 inputs (n, the longest sum on the
array's path, is read off the shapes; docs/validation.md has the whole derivation):

**Sizes Z (cancellation).** Every array x of the forward and backward gets a size
Z_x ≥ |x| entry by entry: Z = |x| for an input, and for a computed array the larger of
its value and the root-sum-square of the terms it is computed from,

    c = Σ_k a_k b_k     ⇒   Z_c = max(|c|, sqrt(Σ_k Z_a,k² Z_b,k²))
    c = a − b           ⇒   Z_c = max(|c|, sqrt(Z_a² + Z_b²))

Where nothing cancels, Z ≈ |x| and the bound is the usual one (a sum of n random-sign
terms is ≈ √n times a term, and so is the root-sum-square); where a sum cancels
systematically (Σ_i dK_i), Z keeps the size of the terms, which is the size of the
rounding noise a correct implementation leaves. Root-sum-square rather than Σ|terms|
(Higham's worst-case |A||B|) because rounding errors of independent terms add like
random variables (Higham & Mary, SIAM J. Sci. Comput. 2019): the worst case overstates a
correct kernel's error by the square root of every sum length and would blunt the check.

**Logit magnitude L (conditioning of the softmax).** exp turns an absolute error of a
logit into a relative error of a probability: S̃_ij = S_ij + e_ij gives
P̃_ij = P_ij (1 + e_ij − Σ_l P_il e_il) to first order, and a logit computed in
precision u carries |e_ij| ≲ c·u·|scale|·Σ_l |Q_il||K_jl|, whatever the implementation
(the rounding of Q and K alone does it). So every array downstream of P carries an
error ≈ u·L times its size, with

    L = max over visible (i, j) of |scale| · Σ_l Z_Q,il Z_K,jl     (≥ max|S|)

and the rounding part of the bound gets a term L · W, where W is the array's first-order
change per unit of logit error: the same propagation as Z with ∂P_ij/∂S_ij =
P_ij (1 − P_ij) in place of P where the logits enter (W_O = sqrt((P(1−P))² Z_V²),
W_δ = sqrt(Σ_l (P_il(1−P_il) Z_dP,il)²), W_dS = sqrt((P(1−P) ∘ |dP − δ|)² + (P ∘ W_δ)²),
W_dQ = |scale| sqrt(W_dS² Z_K²), ...). A saturated softmax is insensitive to its logits
and W is then far below Z. A correct float32 kernel at logits of a few hundred is off by
~1e-5 relative; a bound that ignores L fails it.

Formulas (dual.py; δ = rowsum(dO ∘ O)), sizes of inputs Z_Q, Z_K, Z_V, Z_dO:

    O = P V                Z_O  = max(|O|,  sqrt(P² Z_V²))
    dV = Pᵀ dO             Z_dV = max(|dV|, sqrt((P²)ᵀ Z_dO²))
    dP = dO Vᵀ             Z_dP = max(|dP|, sqrt(Z_dO² (Z_V²)ᵀ))
    δ = Σ_c dO_c O_c       Z_δ  = max(|δ|,  sqrt(Σ_c Z_dO,c² Z_O,c²))
    dS = P ∘ (dP − δ)      Z_dS = max(|dS|, P ∘ sqrt(Z_dP² + Z_δ²))
    dQ = scale · dS K      Z_dQ = max(|dQ|, |scale| sqrt(Z_dS² Z_K²))
    dK = scale · dSᵀ Q     Z_dK = max(|dK|, |scale| sqrt((Z_dS²)ᵀ Z_Q²))

(P² etc. entry-wise squares, the products matrix products), and through a linear map
y = x Wᵀ + b: Z_y = max(|y|, sqrt(Z_x² (W²)ᵀ + b²)), Z_dx = max(|dx|, sqrt(Z_dy² W²)),
Z_dW = max(|dW|, sqrt((Z_dy²)ᵀ Z_x²)), Z_db = max(|db|, sqrt(Σ_rows Z_dy²))
(``mha_magnitudes``). Computed over blocks of keys (at most N × ``block_size`` at once),
so that long-sequence cases can use it too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import sum_to_shape
from .compare import OperandScale
from .dual import dual_attention, dual_attention_backward
from .dual_blocked import block_logits, block_probabilities, block_visibility, key_blocks
from .primitives import merge_heads, split_heads

__all__ = [
    "AttentionSizes",
    "attention_sizes",
    "attention_magnitudes",
    "mha_magnitudes",
]

_BLOCK = 512


class AttentionSizes(NamedTuple):
    """Sizes Z and logit sensitivities W of dual attention's output and gradients (module
    doc), and the logit magnitude L.

    out (..., N, dv); q, k, v shaped like the inputs (None without an upstream gradient);
    logit: L, the largest |scale| Σ_l Z_Q,il Z_K,jl over visible (i, j) (0 if none);
    w_out, w_q, w_k, w_v: W, the first-order change of each array per unit of logit error
    (P_ij (1 − P_ij) in place of P where the logits enter).
    """

    out: np.ndarray
    q: np.ndarray | None
    k: np.ndarray | None
    v: np.ndarray | None
    logit: float
    w_out: np.ndarray
    w_q: np.ndarray | None = None
    w_k: np.ndarray | None = None
    w_v: np.ndarray | None = None


def _rss(a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """sqrt of the matrix product of two arrays of squares: the root-sum-square of the terms."""
    return np.sqrt(np.matmul(a2, b2))


def _logit_magnitude(zq_scaled, zk, mask, causal, batch, n, block_size) -> float:
    """L = max over visible (i, j) of |scale| Σ_l Z_Q,il Z_K,jl."""
    top = 0.0
    for j0, j1 in key_blocks(zk.shape[-2], block_size):
        t = np.matmul(zq_scaled, np.swapaxes(zk[..., j0:j1, :], -1, -2))
        vis = block_visibility(mask, causal, n, j0, j1)
        if vis is not None:
            t = np.where(np.broadcast_to(vis, np.broadcast_shapes(vis.shape, t.shape)), t, 0.0)
        top = max(top, float(t.max(initial=0.0)))
    return top


def attention_sizes(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    dout: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    causal: bool = False,
    scale: float | None = None,
    sizes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    block_size: int = _BLOCK,
) -> AttentionSizes:
    """Sizes Z of ``dual_attention``'s output and (with ``dout``) gradients, and L.

    q, k, v, dout: the float64 values. ``sizes``: (Z_Q, Z_K, Z_V, Z_dO) when these are
    computed arrays inside a layer (default their absolute values). Leading axes
    broadcast as in ``dual_attention``; gradient sizes of broadcast inputs combine the
    broadcast copies by root-sum-square, like the sum that forms the gradient.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    zq, zk, zv, zdo_given = sizes if sizes is not None else (np.abs(q), np.abs(k), np.abs(v), None)
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    out, cache = dual_attention(q, k, v, mask=mask, causal=causal, scale=sc, block_size=block_size)
    batch, n, mask = out.shape[:-2], out.shape[-2], cache.mask
    logit = _logit_magnitude(zq * abs(sc), zk, mask, causal, batch, n, block_size)
    lse, q_scaled = cache.lse[..., None], q * sc

    def blocks():
        for j0, j1 in key_blocks(k.shape[-2], block_size):
            vis = block_visibility(mask, causal, n, j0, j1)
            yield (
                j0,
                j1,
                block_probabilities(block_logits(q_scaled, k[..., j0:j1, :], vis, batch), lse),
            )

    dout = None if dout is None else np.asarray(dout, dtype=np.float64)
    zdo = None if dout is None else (np.abs(dout) if zdo_given is None else zdo_given)
    rss_out, w_out = np.zeros_like(out), np.zeros_like(out)
    w_delta = np.zeros((*batch, n, 1))
    for j0, j1, p in blocks():
        zv_b2 = zv[..., j0:j1, :] ** 2
        wp = p * (1.0 - p)  # ∂P_ij/∂S_ij: a saturated softmax is insensitive to its logits
        rss_out += np.matmul(p * p, zv_b2)
        w_out += np.matmul(wp * wp, zv_b2)
        if dout is not None:  # W_δ,i = sqrt(Σ_l (W_P,il Z_dP,il)²): all keys before dS
            z_dp = _z_dp(dout, zdo, v[..., j0:j1, :], zv_b2)
            w_delta += np.sum((wp * z_dp) ** 2, axis=-1, keepdims=True)
    z_out, w_out = np.maximum(np.abs(out), np.sqrt(rss_out)), np.sqrt(w_out)
    if dout is None or zdo is None:
        return AttentionSizes(z_out, None, None, None, logit, w_out)
    delta = np.einsum("...i,...i->...", dout, out)[..., None]
    rss_delta = np.einsum("...i,...i->...", zdo**2, z_out**2)[..., None]
    z_delta, w_delta = np.maximum(np.abs(delta), np.sqrt(rss_delta)), np.sqrt(w_delta)
    d, m = q.shape[-1], k.shape[-2]
    rss_dq, w_dq, dq = (np.zeros((*batch, n, d)) for _ in range(3))
    z_dk, w_dk = np.zeros((*batch, m, d)), np.zeros((*batch, m, d))
    z_dv, w_dv = np.zeros((*batch, *v.shape[-2:])), np.zeros((*batch, *v.shape[-2:]))
    for j0, j1, p in blocks():
        kb, vb, zk_b2 = k[..., j0:j1, :], v[..., j0:j1, :], zk[..., j0:j1, :] ** 2
        wp = p * (1.0 - p)
        dv_b = np.matmul(np.swapaxes(p, -1, -2), dout)
        z_dv[..., j0:j1, :] = np.maximum(np.abs(dv_b), _rss(np.swapaxes(p * p, -1, -2), zdo**2))
        w_dv[..., j0:j1, :] = _rss(np.swapaxes(wp * wp, -1, -2), zdo**2)
        dp = np.matmul(dout, np.swapaxes(vb, -1, -2))
        z_dp = _z_dp(dout, zdo, vb, zv[..., j0:j1, :] ** 2)
        ds = p * (dp - delta)
        z_ds = np.maximum(np.abs(ds), p * np.sqrt(z_dp**2 + z_delta**2))
        # dS = P ∘ (dP − δ): through P itself and through δ = Σ_l P_il dP_il
        w_ds2 = (wp * np.abs(dp - delta)) ** 2 + (p * w_delta) ** 2
        dq += np.matmul(ds, kb)
        rss_dq += np.matmul(z_ds**2, zk_b2)
        w_dq += np.matmul(w_ds2, zk_b2)
        dk_b = np.matmul(np.swapaxes(ds, -1, -2), q)
        z_dk[..., j0:j1, :] = np.maximum(
            np.abs(dk_b) * abs(sc), abs(sc) * _rss(np.swapaxes(z_ds**2, -1, -2), zq**2)
        )
        w_dk[..., j0:j1, :] = abs(sc) * _rss(np.swapaxes(w_ds2, -1, -2), zq**2)
    z_dq = np.maximum(np.abs(dq) * abs(sc), abs(sc) * np.sqrt(rss_dq))
    return AttentionSizes(
        z_out,
        _sum_sizes(z_dq, q.shape),
        _sum_sizes(z_dk, k.shape),
        _sum_sizes(z_dv, v.shape),
        logit,
        w_out,
        _sum_sizes(abs(sc) * np.sqrt(w_dq), q.shape),
        _sum_sizes(w_dk, k.shape),
        _sum_sizes(w_dv, v.shape),
    )


def _z_dp(dout, zdo, v_block, zv_block2):
    """Z_dP of the block: max(|dO V_Bᵀ|, sqrt(Z_dO² (Z_V,B²)ᵀ))."""
    dp = np.matmul(dout, np.swapaxes(v_block, -1, -2))
    return np.maximum(np.abs(dp), _rss(zdo**2, np.swapaxes(zv_block2, -1, -2)))


def _sum_sizes(z: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The size of a gradient summed over broadcast axes: root-sum-square of the copies."""
    return np.sqrt(sum_to_shape(z * z, shape))


def attention_magnitudes(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    dout: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    causal: bool = False,
    scale: float | None = None,
    block_size: int = _BLOCK,
) -> dict[str, OperandScale]:
    """The ``OperandScale`` (max Z, L, n, max W) of dual attention's arrays, keyed like the adapters
    and golden cases: ``output.out`` and (with ``dout``) ``grad.q``, ``grad.k``,
    ``grad.v`` (module doc). n is the longest sum: max(M, d) for the output,
    max(N, M, d, dv) for the gradients."""
    z = attention_sizes(q, k, v, dout, mask=mask, causal=causal, scale=scale, block_size=block_size)
    (n, d), (m, dv) = np.shape(q)[-2:], np.shape(v)[-2:]
    out = {"output.out": OperandScale(_top(z.out), z.logit, max(m, d), _top(z.w_out))}
    length = max(n, m, d, dv)
    for name, a, w in (("grad.q", z.q, z.w_q), ("grad.k", z.k, z.w_k), ("grad.v", z.v, z.w_v)):
        if a is not None and w is not None:
            out[name] = OperandScale(_top(a), z.logit, length, _top(w))
    return out


def _top(a: np.ndarray) -> float:
    return float(np.max(a, initial=0.0))


def _linear_size(x, zx, w, b):
    """(y, Z_y) of y = x Wᵀ + b."""
    y = np.matmul(x, w.T) + (0.0 if b is None else b)
    rss = np.matmul(zx**2, (w**2).T) + (0.0 if b is None else b**2)
    return y, np.maximum(np.abs(y), np.sqrt(rss))


def _linear_backward_size(dy, zdy, x, zx, w):
    """Sizes (Z_dx, Z_dW, Z_db) of y = x Wᵀ + b's backward."""
    dx = np.matmul(dy, w)
    z_dx = np.maximum(np.abs(dx), np.sqrt(np.matmul(zdy**2, w**2)))
    dy2, zdy2 = dy.reshape(-1, dy.shape[-1]), zdy.reshape(-1, zdy.shape[-1])
    x2, zx2 = x.reshape(-1, x.shape[-1]), zx.reshape(-1, zx.shape[-1])
    z_dw = np.maximum(np.abs(dy2.T @ x2), np.sqrt((zdy2**2).T @ (zx2**2)))
    z_db = np.maximum(np.abs(dy2.sum(axis=0)), np.sqrt((zdy2**2).sum(axis=0)))
    return z_dx, z_dw, z_db


def mha_magnitudes(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    dy: np.ndarray,
    *,
    num_heads: int,
    padding_mask: np.ndarray | None = None,
    attn_mask: np.ndarray | None = None,
    causal: bool = False,
) -> dict[str, OperandScale]:
    """The ``OperandScale`` (max Z, L, n, max W) of ``primal_np.mha_attention``'s arrays.

    Arguments as ``mha_attention`` plus the upstream gradient ``dy``. Returns a dict keyed
    ``"out"``, ``"x"`` and by parameter (``W_q``, ``b_q``, ..., ``b_o``). n: max(D, N)
    for the output; for the gradients also the number of rows B·N the parameter
    gradients sum over.
    """
    x, dy = np.asarray(x, dtype=np.float64), np.asarray(dy, dtype=np.float64)
    p = {n: np.asarray(a, dtype=np.float64) for n, a in params.items()}
    h = num_heads
    mask = None if attn_mask is None else np.asarray(attn_mask, dtype=bool)
    if padding_mask is not None:
        key_vis = np.asarray(padding_mask, dtype=bool)[..., None, None, :]
        mask = key_vis if mask is None else (mask & key_vis)
    zx, zdy = np.abs(x), np.abs(dy)
    proj = {t: _linear_size(x, zx, p[f"W_{t}"], p[f"b_{t}"]) for t in "qkv"}
    heads = {t: tuple(split_heads(a, h)[0] for a in proj[t]) for t in "qkv"}
    do = np.matmul(dy, p["W_o"])  # upstream gradient of the merged heads
    z_do = np.maximum(np.abs(do), np.sqrt(np.matmul(zdy**2, p["W_o"] ** 2)))
    att = attention_sizes(
        heads["q"][0], heads["k"][0], heads["v"][0], split_heads(do, h)[0], mask=mask,
        causal=causal,
        sizes=(heads["q"][1], heads["k"][1], heads["v"][1], split_heads(z_do, h)[0]),
    )  # fmt: skip
    o, cache = dual_attention(heads["q"][0], heads["k"][0], heads["v"][0], mask=mask, causal=causal)
    grads = dual_attention_backward(split_heads(do, h)[0], cache)  # values of dQ, dK, dV
    o, z_o, w_o = merge_heads(o)[0], merge_heads(att.out)[0], merge_heads(att.w_out)[0]
    _, z_y = _linear_size(o, z_o, p["W_o"], p["b_o"])
    z, w = {"out": z_y}, {"out": np.sqrt(np.matmul(w_o**2, (p["W_o"] ** 2).T))}
    _, z["W_o"], z["b_o"] = _linear_backward_size(dy, zdy, o, z_o, p["W_o"])
    w["W_o"], w["b_o"] = _rows_rss(zdy, w_o), np.zeros(1)  # dW_o = dyᵀ O; db_o = Σ dy
    rss_dx, w_dx = np.zeros_like(x), np.zeros_like(x)
    dx = np.zeros_like(x)
    for t, g, zg, wg in zip("qkv", grads, (att.q, att.k, att.v), (att.w_q, att.w_k, att.w_v),
                            strict=True):  # fmt: skip
        assert zg is not None and wg is not None  # att was given an upstream gradient
        g, zg, wg = merge_heads(g)[0], merge_heads(zg)[0], merge_heads(wg)[0]
        z_dx, z[f"W_{t}"], z[f"b_{t}"] = _linear_backward_size(g, zg, x, zx, p[f"W_{t}"])
        w[f"W_{t}"] = _rows_rss(wg, zx)
        w[f"b_{t}"] = np.sqrt((wg.reshape(-1, wg.shape[-1]) ** 2).sum(axis=0))
        rss_dx += z_dx**2
        w_dx += np.matmul(wg**2, p[f"W_{t}"] ** 2)
        dx += np.matmul(g, p[f"W_{t}"])
    z["x"], w["x"] = np.maximum(np.abs(dx), np.sqrt(rss_dx)), np.sqrt(w_dx)
    n_tok, dim = x.shape[-2:]
    rows = x.size // dim
    return {
        name: OperandScale(
            _top(a),
            att.logit,
            max(dim, n_tok) if name == "out" else max(rows, dim, n_tok),
            _top(w[name]),
        )
        for name, a in z.items()
    }


def _rows_rss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sqrt(Σ_rows a² ⊗ b²): the root-sum-square size of Σ_rows aᵀ b (a weight gradient)."""
    a2, b2 = a.reshape(-1, a.shape[-1]) ** 2, b.reshape(-1, b.shape[-1]) ** 2
    return np.sqrt(a2.T @ b2)
