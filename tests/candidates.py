"""Stand-alone attention implementations used as *candidates* by the validation tests.

Written independently of primal_np (einsum, its own softmax) so that a passing check
means two implementations agree, and with switches that plant the classic bugs:

- ``empty_row_guard=False``: the naive softmax exp(s − max s) / Σ on a row with no
  visible key computes (−inf) − (−inf) = NaN;
- ``rowsum_term=False``: the softmax backward dS = P ∘ dP, missing − rowsum(dP ∘ P).
"""

from __future__ import annotations

import math

import numpy as np


def _probs(q, k, mask, causal, scale, empty_row_guard):
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = np.einsum("...nd,...md->...nm", q, k) * q.dtype.type(scale)
    visible = np.ones((n, m), bool) if mask is None else np.asarray(mask, bool)
    if causal:
        visible = visible & (np.arange(m)[None, :] <= np.arange(n)[:, None])
    s = np.where(visible, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    if empty_row_guard:
        top = np.where(np.isfinite(top), top, 0)
    with np.errstate(invalid="ignore"):  # the naive variant makes NaN here on purpose
        e = np.exp(s - top)
        z = e.sum(axis=-1, keepdims=True)
        if empty_row_guard:
            return np.divide(e, z, out=np.zeros_like(e), where=z > 0), scale
        return e / z, scale


def attention(q, k, v, mask=None, causal=False, scale=None, *, empty_row_guard=True):
    """out = softmax(scale · q kᵀ over visible keys) v, computed in q's dtype."""
    p, _ = _probs(q, k, mask, causal, scale, empty_row_guard)
    return np.einsum("...nm,...me->...ne", p, v)


def attention_backward(
    q, k, v, mask, causal, scale, dout, *, empty_row_guard=True, rowsum_term=True
):
    """(dq, dk, dv) of Σ dout ∘ out, recomputing P."""
    p, scale = _probs(q, k, mask, causal, scale, empty_row_guard)
    dout = dout.astype(q.dtype)
    dv = np.einsum("...nm,...ne->...me", p, dout)
    dp = np.einsum("...ne,...me->...nm", dout, v)
    if rowsum_term:
        dp = dp - (dp * p).sum(axis=-1, keepdims=True)
    ds = p * dp
    dq = np.einsum("...nm,...md->...nd", ds, k) * q.dtype.type(scale)
    dk = np.einsum("...nm,...nd->...md", ds, q) * q.dtype.type(scale)
    return dq, dk, dv
