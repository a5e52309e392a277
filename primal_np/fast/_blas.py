"""GEMM through ``scipy.linalg.blas`` for C-ordered NumPy arrays: BLAS's own transposes
(no copies) and accumulation into a preallocated output (C ← A B + β C).

NumPy's ``matmul`` always calls GEMM with β = 0, which makes BLAS clear the output first,
and it cannot add into an existing array. Here a bias is written into the output first
and the product added to it (β = 1): the bias add costs no pass of its own. The same
serves d[Q | K] = −c·[Q | K] + G Wᵀ in the fast layer's backward.

Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ; a C-contiguous array is the transpose of an
F-contiguous one, so every operand that is C- or F-contiguous (a ``.T`` of a contiguous
array included) goes to BLAS as it is, with the matching transpose flag.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas as _scipy_blas

_GEMM = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}
_MAX_DIM = 2**31 - 1  # scipy's BLAS takes 32-bit dimensions


def _operand(m: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(array as passed to BLAS, transpose flag) with op(array) = mᵀ; None if m would be copied."""
    if m.flags.c_contiguous:
        return m.T, 0
    if m.flags.f_contiguous:
        return m, 1
    return None


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, *, beta: float = 0.0):
    """``out = a @ b + beta·out`` for 2-D float32/float64 arrays of one dtype; returns out.

    ``out`` (C-contiguous, shape (a.shape[0], b.shape[1])) is written in place; without it
    a new array is returned (``beta`` must then be 0). Layouts BLAS cannot take without a
    copy fall back to ``np.matmul`` (same result up to rounding).
    """
    gemm_fn = _GEMM.get(a.dtype)
    fa, fb = _operand(a), _operand(b)
    fits = max(a.shape + b.shape) <= _MAX_DIM and min(a.shape + b.shape) > 0
    ok_out = out is None or (out.flags.c_contiguous and out.dtype == a.dtype)
    if gemm_fn is None or b.dtype != a.dtype or fa is None or fb is None or not fits or not ok_out:
        prod = np.matmul(a, b)
        if out is None:
            return prod
        if beta == 0.0:
            out[...] = prod
        else:
            out *= beta
            out += prod
        return out
    (ma, ta), (mb, tb) = fa, fb
    if out is None:
        return gemm_fn(1.0, mb, ma, trans_a=tb, trans_b=ta).T
    res = gemm_fn(1.0, mb, ma, beta=beta, c=out.T, trans_a=tb, trans_b=ta, overwrite_c=1)
    if not np.shares_memory(res, out):  # f2py made a copy after all: keep the contract
        out[...] = res.T
    return out
