"""The fast path's output stage: from the scores [E | R] to the layer output Y.

    O_h = [E_h, R_h] W_cᵀ + b_c                 (the shared 2s → p map, every head h)
    (lra mask: O rows of padded tokens = 0, i.e. diag(m) O_h)
    Y = [O_1 … O_H] W_oᵀ + b_o = Σ_h O_h W_{o,h}ᵀ + b_o     (W_{o,h}: columns h·p…(h+1)·p of W_o)

Two ways to compute it, the same function:

* **unfused**: O = [E, R] W_cᵀ + b_c as one (B·N·H, 2s) × (2s, p) GEMM, whose output is
  already the merged (B·N, D) array, then the output projection.
* **fused**: the two maps composed first. With [E | R] read as (B·N, H·2s) rows,

      Y = diag(m) ([E | R] A + 1 c_ᵀ) + 1 b_oᵀ,  A_h = W_cᵀ W_{o,h}ᵀ  (2s × D),  c = Σ_h W_{o,h} b_c

  one (B·N, H·2s) × (H·2s, D) GEMM replaces the W_c GEMM and the output projection; in the
  backward, S = (diag(m) dY)ᵀ [E | R] (D × H·2s) and d[E | R] = diag(m) dY Aᵀ replace four
  GEMMs, and every parameter gradient follows from S by small products:

      dW_{o,h} = S_h W_cᵀ + (Σ_rows diag(m) dY) b_cᵀ,   dW_c = Σ_h W_{o,h}ᵀ S_h,
      db_c = Σ_h W_{o,h}ᵀ Σ_rows diag(m) dY,   db_o = Σ_rows dY.

  It does 4BN·D·2Hs FLOPs in the forward and backward where the unfused form does
  2BN·D² + 4BN·D·s (forward) and twice that (backward): fused is chosen when
  2Hs ≤ D + 2s, i.e. when it does not do more arithmetic (at D = 256, H = 4, s = 32 it
  does less, and skips the (B·N, D) array O and the small-K GEMMs of the W_c map).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["OutputCache", "use_fused", "output_stage", "output_stage_backward"]


class OutputCache(NamedTuple):
    ER2: np.ndarray  # [E | R] as (B·N, H·2s) rows
    mask: np.ndarray | None  # (B·N, 1) in the computation dtype, or None
    merged: np.ndarray | None  # unfused: O merged (B·N, D); fused: None
    A: np.ndarray | None  # fused: (H·2s, D); unfused: None
    wo: np.ndarray
    wc: np.ndarray
    bc: np.ndarray


def use_fused(D: int, H: int, s: int) -> bool:
    """Whether the fused form does at most the unfused form's arithmetic (2Hs ≤ D + 2s)."""
    return 2 * H * s <= D + 2 * s


def _fused_map(wo: np.ndarray, wc: np.ndarray, H: int) -> np.ndarray:
    """A (H·2s, D): block h = W_cᵀ W_{o,h}ᵀ."""
    D, (p, s2) = wo.shape[0], wc.shape
    return np.einsum("dhp,pk->hkd", wo.reshape(D, H, p), wc).reshape(H * s2, D)


def output_stage(
    ER: np.ndarray, P: dict, mask: np.ndarray | None
) -> tuple[np.ndarray, OutputCache]:
    """Y (B·N, D) from [E | R] (B, N, H, 2s) and the parameters wc, bc, wo, bo."""
    B, N, H, s2 = ER.shape
    wo, wc, bc, bo = P["wo"], P["wc"], P["bc"], P["bo"]
    D, dt = wo.shape[0], ER.dtype
    m = None if mask is None else mask.reshape(-1, 1).astype(dt)
    if not use_fused(D, H, s2 // 2):
        merged = ER.reshape(-1, s2) @ wc.T  # O_h, one row per (b, t, h)
        merged += bc
        merged = merged.reshape(B * N, D)
        if m is not None:
            merged *= m
        y = merged @ wo.T
        y += bo
        return y, OutputCache(ER.reshape(B * N, H * s2), m, merged, None, wo, wc, bc)
    A = _fused_map(wo, wc, H)
    ER2 = ER.reshape(B * N, H * s2)
    y = ER2 @ A
    y += wo @ np.tile(bc, H) + bo  # c + b_o,  c = Σ_h W_{o,h} b_c
    if mask is not None:
        y[~mask.reshape(-1)] = bo  # padded rows: diag(m) (…) + b_o = b_o
    return y, OutputCache(ER2, m, None, A, wo, wc, bc)


def output_stage_backward(dy2: np.ndarray, oc: OutputCache) -> tuple[dict, Callable]:
    """({wo, bo, wc, bc}, d_er) from dY (B·N, D). ``d_er(a, z, out)`` writes rows a…z−1
    of d[E | R] (B·N, H·2s) into ``out`` (z − a, H·2s) and returns it: the caller takes
    d[E | R] a block of rows at a time, so it never exists in full."""
    ER2, m, wo, wc = oc.ER2, oc.mask, oc.wo, oc.wc
    D, (p, s2) = wo.shape[0], wc.shape
    H = ER2.shape[1] // s2
    g = {"bo": dy2.sum(axis=0)}
    dym = dy2 if m is None else dy2 * m
    if oc.A is None:  # unfused: dW_o = dYᵀ O, dO = dY W_o, then the W_c map's backward
        assert oc.merged is not None
        g["wo"] = dy2.T @ oc.merged
        dO = dym @ wo  # (B·N, D): H rows of p per token
        g["wc"] = dO.reshape(-1, p).T @ ER2.reshape(-1, s2)
        g["bc"] = dO.reshape(-1, p).sum(axis=0)

        def d_er_unfused(a: int, z: int, out: np.ndarray) -> np.ndarray:
            np.matmul(dO[a:z].reshape(-1, p), wc, out=out.reshape(-1, s2))  # dO W_c
            return out

        return g, d_er_unfused
    S = (dym.T @ ER2).reshape(D, H, s2)  # S_h = (diag(m) dY)ᵀ [E_h | R_h]
    col = dym.sum(axis=0)
    woh = wo.reshape(D, H, p)
    g["wo"] = (S @ wc.T).reshape(D, D) + np.outer(col, np.tile(oc.bc, H))
    g["wc"] = np.einsum("dhp,dhk->pk", woh, S)  # Σ_h W_{o,h}ᵀ S_h
    g["bc"] = np.einsum("dhp,d->p", woh, col)
    At = oc.A.T

    def d_er_fused(a: int, z: int, out: np.ndarray) -> np.ndarray:
        return np.matmul(dym[a:z], At, out=out)  # diag(m) dY Aᵀ

    return g, d_er_fused
