"""Canonical attention over key blocks: the online softmax, the reference of flash attention.

``dual_attention(q, k, v, ..., block_size=b)`` computes the same O = softmax(S) V as the
unblocked form without ever holding the N×M logits: the keys are visited in blocks
B = [j0, j1) of at most b keys, and per query row i a running maximum m_i, a running
sum ℓ_i and a running numerator A_i (1 × dv) are updated (Milakov & Gimelshein's online
softmax, the forward of FlashAttention):

    S_B   = scale · Q K_Bᵀ, −inf where key j is not visible        (N × |B|)   block_logits
    m'    = max(m, max_{j∈B} S_ij)                                              running_max
    α     = exp(m − m')                                                         rescaling
    P̃_B   = exp(S_B − m')                                                        unnormalised_weights
    ℓ'    = α ℓ + Σ_{j∈B} P̃_ij
    A'    = α A + P̃_B V_B

and at the end O = A / ℓ, lse = m + log ℓ (O = 0 and lse = −inf on a row that sees no
key: there m = −inf and ℓ = 0 throughout). The backward stores nothing of size N×M
either: with the LSE and O of the forward, each block of P is recomputed,

    P_B   = exp(S_B − lse)                                                      block_probabilities
    δ     = rowsum(dO ∘ O)                    (= rowsum(dP ∘ P), once for all blocks)
    dV_B  = P_Bᵀ dO
    dS_B  = P_B ∘ (dO V_Bᵀ − δ)
    dQ   += scale · dS_B K_B,    dK_B = scale · dS_Bᵀ Q

Memory: O(N·b) for the block arrays plus O((N + M)·(d + dv)) for inputs, outputs and
gradients; time as the unblocked form (the backward recomputes S_B once). Results agree
with the unblocked form to rounding (≤ 1e-13 relative in float64, tested).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._checks import sum_to_shape, upstream

__all__ = [
    "key_blocks",
    "block_visibility",
    "block_logits",
    "running_max",
    "rescaling",
    "unnormalised_weights",
    "block_probabilities",
    "blocked_forward",
    "blocked_backward",
]


def key_blocks(m: int, block_size: int) -> Iterator[tuple[int, int]]:
    """The key blocks [j0, j1) of at most ``block_size`` keys covering 0..M−1, in order."""
    for j0 in range(0, m, block_size):
        yield j0, min(j0 + block_size, m)


def block_visibility(
    mask: np.ndarray | None, causal: bool, n: int, j0: int, j1: int
) -> np.ndarray | None:
    """Visibility of keys j0..j1−1 to the N queries: mask[..., :, j0:j1] AND (j ≤ i if causal).

    A mask broadcast along the key axis (size 1 there) is used as is; a full (…, N, M)
    mask is sliced, never copied whole. None when every key of the block is visible.
    """
    vis = None
    if mask is not None:
        vis = mask if mask.shape[-1] == 1 else mask[..., j0:j1]
    if causal:
        tri = np.arange(j0, j1)[None, :] <= np.arange(n)[:, None]  # key j visible iff j ≤ i
        vis = tri if vis is None else (vis & tri)
    return vis


def block_logits(
    q_scaled: np.ndarray, k_block: np.ndarray, vis: np.ndarray | None, batch: tuple[int, ...]
) -> np.ndarray:
    """S_B = (scale·Q) K_Bᵀ with −inf on invisible keys: a new (*batch, N, |B|) work array."""
    s = np.matmul(q_scaled, np.swapaxes(k_block, -1, -2))
    if s.shape[:-2] != batch:
        s = np.broadcast_to(s, (*batch, *s.shape[-2:])).copy()
    if vis is not None:
        np.copyto(s, -np.inf, where=~vis)
    if np.any(s == np.inf):
        raise ValueError("softmax logits overflowed to +inf; rescale the inputs")
    return s


def running_max(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """m' = max(m, max_{j∈B} S_ij), shape (..., N, 1); −inf while a row has seen no key."""
    return np.maximum(m, s.max(axis=-1, keepdims=True))


def _finite(m: np.ndarray) -> np.ndarray:
    """The shift used in exp(· − m): m, or 0 on rows with no visible key yet (m = −inf),
    where every logit is −inf too, so that exp gives 0 instead of exp(−inf + inf) = NaN."""
    return np.where(m == -np.inf, 0.0, m).astype(m.dtype, copy=False)


def rescaling(m: np.ndarray, m_new: np.ndarray) -> np.ndarray:
    """α = exp(m − m'): the factor that moves sums taken under the old maximum to the new one."""
    return np.exp(m - _finite(m_new))


def unnormalised_weights(s: np.ndarray, m_new: np.ndarray) -> np.ndarray:
    """P̃_B = exp(S_B − m'), in place on the block's logits (0 on invisible keys)."""
    s -= _finite(m_new)
    return np.exp(s, out=s)


def block_probabilities(s: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """P_B = exp(S_B − lse), in place on the block's logits; lse has shape (..., N, 1)."""
    s -= _finite(lse)
    return np.exp(s, out=s)


def blocked_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    causal: bool,
    scale: float,
    block_size: int,
    batch: tuple[int, ...],
    dt: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """O (..., N, dv) and lse (..., N) by the online softmax over key blocks (module doc)."""
    n, m_keys, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    q_scaled = q.astype(dt, copy=False) * dt.type(scale)  # scale on the N×d factor, as unblocked
    k, v = k.astype(dt, copy=False), v.astype(dt, copy=False)
    m = np.full((*batch, n, 1), -np.inf, dtype=dt)
    ell = np.zeros((*batch, n, 1), dtype=dt)
    acc = np.zeros((*batch, n, dv), dtype=dt)
    for j0, j1 in key_blocks(m_keys, block_size):
        s = block_logits(
            q_scaled, k[..., j0:j1, :], block_visibility(mask, causal, n, j0, j1), batch
        )
        m_new = running_max(m, s)
        alpha = rescaling(m, m_new)
        p = unnormalised_weights(s, m_new)
        ell = alpha * ell + p.sum(axis=-1, keepdims=True)
        acc *= alpha
        acc += np.matmul(p, v[..., j0:j1, :])
        m = m_new
    seen = ell > 0
    out = np.divide(acc, ell, out=np.zeros_like(acc), where=seen)
    lse = np.full_like(ell, -np.inf)
    np.log(ell, out=lse, where=seen)
    lse += _finite(m)
    return out, lse[..., 0]


def blocked_backward(dout: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dQ, dK, dV) of the blocked forward, recomputing each block of P (module doc).

    ``cache`` is the ``DualCache`` of ``dual_attention(..., block_size=b)``: q, k, v,
    lse, out, scale, mask, causal, block_size (its ``attn`` is None).
    """
    q, k, v, lse, o, scale = cache.q, cache.k, cache.v, cache.lse, cache.out, cache.scale
    mask, causal, block_size = cache.mask, cache.causal, cache.block_size
    dt = o.dtype
    batch, n = o.shape[:-2], o.shape[-2]
    m_keys, d = k.shape[-2], q.shape[-1]
    dout = upstream(dout, "dout", o.shape, dt)
    qc, k, v = q.astype(dt, copy=False), k.astype(dt, copy=False), v.astype(dt, copy=False)
    q_scaled = qc * dt.type(scale)
    lse = lse[..., None]
    delta = np.einsum("...i,...i->...", dout, o)[..., None]  # δ = rowsum(dO ∘ O)
    dq = np.zeros((*batch, n, d), dtype=dt)
    dk = np.zeros((*batch, m_keys, d), dtype=dt)
    dv = np.zeros((*batch, m_keys, v.shape[-1]), dtype=dt)
    for j0, j1 in key_blocks(m_keys, block_size):
        s = block_logits(
            q_scaled, k[..., j0:j1, :], block_visibility(mask, causal, n, j0, j1), batch
        )
        p = block_probabilities(s, lse)
        dv[..., j0:j1, :] = np.matmul(np.swapaxes(p, -1, -2), dout)
        ds = np.matmul(dout, np.swapaxes(v[..., j0:j1, :], -1, -2))  # dP_B = dO V_Bᵀ
        ds -= delta
        ds *= p  # dS_B = P_B ∘ (dP_B − δ)
        dq += np.matmul(ds, k[..., j0:j1, :])
        dk[..., j0:j1, :] = np.matmul(np.swapaxes(ds, -1, -2), qc)
    sc = dt.type(scale)
    dq *= sc
    dk *= sc
    return sum_to_shape(dq, q.shape), sum_to_shape(dk, k.shape), sum_to_shape(dv, v.shape)
