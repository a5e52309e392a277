"""JAX candidates for ``check_dual_attention``, NumPy in, NumPy out (docs/validation.md, "JAX").

Import only inside tests that use the ``jax`` fixture (it enables float64 first).

- ``dot_product_attention``: ``jax.nn.dot_product_attention`` behind the glue it needs:
  layout (B, N, H, d) instead of primal_np's (..., H, N, d); a value head dim equal to
  d (V, or Q and K, zero-padded, the scale passed explicitly); the mask as (B, H, N, M)
  with causality folded in; zeros on a query row with no visible key (JAX averages V
  there: it masks with a large negative number, not −inf). JAX computes this softmax in
  float32 whatever the input dtype, so it is a float32 kernel.
- ``einsum_attention``: the same in plain jax.numpy, computing in the input dtype (float64
  with x64 enabled).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def to_bnhd(a: np.ndarray) -> np.ndarray:
    """primal_np's (..., H, N, d) → JAX's (B, N, H, d), B = the other leading axes flattened."""
    a = a.reshape((-1, *a.shape[-3:])) if a.ndim > 3 else a.reshape((1,) * (4 - a.ndim) + a.shape)
    return np.swapaxes(a, 1, 2)


def from_bnhd(a, shape: tuple[int, ...]) -> np.ndarray:
    """JAX's (B, N, H, d) → primal_np's ``shape`` (..., H, N, d)."""
    return np.swapaxes(np.asarray(a), 1, 2).reshape(shape)


def _visible(mask, causal, lead, n, m) -> np.ndarray:
    """(B, H, N, M) boolean visibility: the mask AND (j ≤ i if causal), leading axes as to_bnhd."""
    vis = np.ones((n, m), bool) if mask is None else np.asarray(mask, bool)
    if causal:
        vis = vis & np.tri(n, m, dtype=bool)
    vis = np.broadcast_to(vis, (*lead, n, m))
    return (
        vis.reshape((-1, *vis.shape[-3:]))
        if vis.ndim > 3
        else vis.reshape((1,) * (4 - vis.ndim) + vis.shape)
    )


def _xla(qj, kj, vj, vis, scale):
    return jax.nn.dot_product_attention(qj, kj, vj, mask=vis, scale=scale)


def _einsum(qj, kj, vj, vis, scale):
    s = jnp.einsum("bnhd,bmhd->bhnm", qj, kj) * scale
    p = jax.nn.softmax(jnp.where(vis, s, -jnp.inf), axis=-1, where=vis)
    return jnp.einsum("bhnm,bmhd->bnhd", jnp.where(vis, p, 0.0), vj)


_ATTEND = {"xla": _xla, "einsum": _einsum}


def _attention(qj, kj, vj, vis, kind, scale):
    """(B, N, H, dv) output: q, k, v zero-padded to one head dim, dead rows zeroed."""
    d, dv = qj.shape[-1], vj.shape[-1]
    width = max(d, dv)  # jax.nn.dot_product_attention wants one head dim for q, k and v
    pad = [(0, 0)] * 3
    qj, kj = (jnp.pad(a, [*pad, (0, width - d)]) for a in (qj, kj))
    o = _ATTEND[kind](qj, kj, jnp.pad(vj, [*pad, (0, width - dv)]), vis, scale)
    seen = jnp.swapaxes(vis.any(-1), 1, 2)[..., None]  # (B, N, H, 1): rows that see a key
    return (o * seen)[..., :dv]


# compiled once per shape, dtype and (kind, scale): the grid's seeds reuse them
_forward = jax.jit(_attention, static_argnames=("kind", "scale"))


@functools.partial(jax.jit, static_argnames=("kind", "scale"))
def _backward(qj, kj, vj, vis, dout, kind, scale):
    _, vjp = jax.vjp(lambda q, k, v: _attention(q, k, v, vis, kind, scale), qj, kj, vj)
    return vjp(dout)


def _run(kind, q, k, v, mask, causal, scale, dout, precision):
    dt = jnp.bfloat16 if precision == "bfloat16" else q.dtype  # bfloat16 arrives as float32
    lead, (n, d), (m, dv) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    vis = jnp.asarray(_visible(mask, causal, lead, n, m))
    args = [jnp.asarray(to_bnhd(a), dt) for a in (q, k, v)]
    host = (lambda a: np.asarray(a.astype(jnp.float32))) if dt == jnp.bfloat16 else np.asarray
    if dout is None:
        return from_bnhd(host(_forward(*args, vis, kind, scale)), (*lead, n, dv))
    grads = _backward(*args, vis, jnp.asarray(to_bnhd(dout), dt), kind, scale)
    return tuple(from_bnhd(host(g), a.shape) for g, a in zip(grads, (q, k, v), strict=True))


def dot_product_attention(q, k, v, mask, causal, scale, dout=None, *, precision):
    """fn (and, with dout, backward) of check_dual_attention around jax.nn.dot_product_attention."""
    return _run("xla", q, k, v, mask, causal, scale, dout, precision)


def einsum_attention(q, k, v, mask, causal, scale, dout=None, *, precision):
    """The same glue around a jax.numpy softmax attention computing in the input dtype."""
    return _run("einsum", q, k, v, mask, causal, scale, dout, precision)
