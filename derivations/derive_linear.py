"""The linear layer y = x Wᵀ + b and the head split/merge reshapes: their VJPs.

primal_np.primitives: linear, linear_backward, split_heads(_backward), merge_heads(_backward).
Run: python derivations/derive_linear.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat, symtensor

from primal_np.primitives import (
    linear,
    linear_backward,
    merge_heads,
    merge_heads_backward,
    split_heads,
    split_heads_backward,
)

D = Derivation(
    "linear",
    "Linear layer and head reshapes",
    r"""
    PyTorch layout: $y = x W^\top + b$ with $W$ of shape (out, in). Every row of $x$ is one
    token (primal_np flattens the leading axes), so 4 rows stand for a (2, 2, in) input.
    """,
)


@D.step("Linear layer VJP")
def linear_vjp(st):
    X, W, Ybar = symmat("x", 4, 3), symmat("w", 2, 3), symmat(r"\bar{y}", 4, 2)
    b = sp.Matrix(1, 2, list(sp.symbols("b_1:3", real=True)))
    Y = X * W.T + sp.ones(4, 1) * b
    L = inner(Ybar, Y)
    st.text(
        r"$x$ 4×3, $W$ 2×3, $b$ 1×2, upstream $\bar y$ 4×2, $\mathcal L = \sum \bar y_{ij} y_{ij}$:"
    )
    st.eq(r"\frac{\partial\mathcal L}{\partial W}", grad(L, W))
    st.exact(r"$\bar x = \bar y W$", grad(L, X), Ybar * W)
    st.exact(r"$\bar W = \bar y^\top x$", grad(L, W), Ybar.T * X)
    st.exact(r"$\bar b = \sum_{\text{rows}} \bar y$", grad(L, b), sp.ones(1, 4) * Ybar)
    st.rejects(
        r"$\bar b = \mathrm{mean}_{\text{rows}}\, \bar y$", grad(L, b), sp.ones(1, 4) * Ybar / 4
    )

    f = Lambdified([X, W, b, Ybar], [Y, grad(L, X), grad(L, W), grad(L, b)])
    rng = np.random.default_rng(401)
    pairs, wrong = [], []
    for _ in range(N_POINTS):
        x, w, bv, yb = (rng.standard_normal(sh) for sh in ((2, 2, 3), (2, 3), (2,), (2, 2, 2)))
        y_ref, dx_ref, dw_ref, db_ref = f(x, w, bv, yb)
        y, cache = linear(x, w, bv)
        dx, dw, db = linear_backward(yb, cache)
        pairs += [
            (y.reshape(4, 2), y_ref),
            (dx.reshape(4, 3), dx_ref),
            (dw, dw_ref),
            (db, db_ref[0]),
        ]
        wrong.append((dw[::-1], dw_ref))
        y0, c0 = linear(x, w)
        assert linear_backward(yb, c0)[2] is None
    st.close("`linear`, `linear_backward` on a (2, 2, 3) input against SymPy", pairs)
    st.far("$\\bar W$ with its rows swapped", wrong)


@D.step("Head split and merge: adjoint reshapes")
def heads(st):
    H, N, p = 2, 3, 2
    X = symmat("x", N, H * p)
    Ybar = symtensor(r"\bar{y}", (H, N, p))
    split = np.empty((H, N, p), dtype=object)
    for h in range(H):
        for n in range(N):
            for c in range(p):
                split[h, n, c] = X[n, h * p + c]  # head h takes channels [h·p, (h+1)·p)
    Xbar = grad(inner(Ybar, split), X)
    st.text(
        r"""
        `split_heads`: (N, H·p) → (H, N, p), head $h$ takes channels $[hp, (h+1)p)$
        (N = 3, H = 2, p = 2). The gradient of $\sum \bar y_{hnc}\,\mathrm{split}(x)_{hnc}$
        with respect to $x$ is the merge of $\bar y$:
        """
    )
    st.eq(r"\frac{\partial\mathcal L}{\partial x}", Xbar)
    f = Lambdified([X, Ybar], [Xbar])
    rng = np.random.default_rng(402)
    pairs = []
    for _ in range(N_POINTS):
        x, yb = rng.standard_normal((N, H * p)), rng.standard_normal((H, N, p))
        (dx_ref,) = f(x, yb)
        s, c = split_heads(x, H)
        m, cm = merge_heads(yb)
        pairs += [
            (split_heads_backward(yb, c).x, dx_ref),
            (m, dx_ref),
            (merge_heads_backward(dx_ref, cm).x, yb),
        ]
    st.close(
        "`split_heads_backward` and `merge_heads` against the SymPy gradient; `merge_heads_backward` inverts it",
        pairs,
    )


def test_linear_vjp():
    linear_vjp()


def test_heads():
    heads()


if __name__ == "__main__":
    raise SystemExit(D.main())
