"""Seeded initialisers matching the distributions the authors' PyTorch code uses.

The random *streams* differ from PyTorch's (NumPy's ``Generator`` is not torch's
RNG); the *distributions* and the layouts are the same. Use
``primal_np.params.load_state_dict`` to reproduce a torch-initialised module exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["torch_linear_init", "orthogonal", "uniform_lambda", "trunc_normal"]


def torch_linear_init(
    rng: np.random.Generator,
    fan_in: int,
    fan_out: int,
    *,
    bias: bool = True,
    dtype: np.dtype | type = np.float64,
) -> tuple[np.ndarray, np.ndarray | None]:
    """PyTorch's default ``nn.Linear`` init: weight (out, in) and bias both U(±1/sqrt(fan_in)).

    (``kaiming_uniform_(a=sqrt(5))`` gives the bound gain·sqrt(3/fan_in) = 1/sqrt(fan_in).)
    """
    bound = 1.0 / math.sqrt(fan_in)
    w = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(dtype)
    b = rng.uniform(-bound, bound, size=(fan_out,)).astype(dtype) if bias else None
    return w, b


def orthogonal(
    rng: np.random.Generator, shape: tuple[int, ...], *, gain: float = 1.0, dtype=np.float64
) -> np.ndarray:
    """PyTorch ``nn.init.orthogonal_`` semantics on a tensor of ``shape``.

    The tensor is flattened to rows = shape[0], cols = prod(shape[1:]); a Gaussian
    matrix of the taller orientation is QR-factorised, Q's columns are sign-fixed by
    sign(diag R), and the result is transposed back if rows < cols. For the
    projection weights (H, n, s) this gives an H × (n·s) matrix with orthonormal
    *rows*: each head's (n, s) block has unit Frobenius norm, and the blocks of
    different heads are orthogonal — the columns within a head are not orthonormal.
    """
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dtype)


def uniform_lambda(
    rng: np.random.Generator, shape: tuple[int, ...], *, dtype=np.float64
) -> np.ndarray:
    """The authors' Λ parameter init: U(0, 1), no positivity constraint afterwards."""
    return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


def trunc_normal(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    *,
    std: float = 0.02,
    a: float = -2.0,
    b: float = 2.0,
    dtype=np.float64,
) -> np.ndarray:
    """N(0, std²) truncated to [a, b] — absolute bounds, as timm's ``trunc_normal_``.

    With std = 0.02 and the default bounds ±2 the truncation is at ±100σ, so this is
    in effect a plain normal; kept for fidelity with the vision code.
    """
    out = rng.normal(0.0, std, size=shape)
    bad = (out < a) | (out > b)
    while bad.any():
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = (out < a) | (out > b)
    return out.astype(dtype)
