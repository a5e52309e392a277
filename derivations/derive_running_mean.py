"""The causal running mean q̃_i = (1/i) Σ_{t≤i} q_t and its VJP (a reverse cumulative sum).

primal_np.primitives: running_mean, running_mean_backward.
Run: python derivations/derive_running_mean.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat

from primal_np.primitives import running_mean, running_mean_backward

D = Derivation(
    "running_mean",
    "Causal running mean",
    r"""
    The causal Primal-Attention variant replaces $q$ and $k$ by their running means along
    time before the cosine map: $\tilde x_i = \frac1i \sum_{t \le i} x_t$ (1-indexed).
    """,
)

N, d = 4, 2


@D.step("Running mean VJP")
def running_mean_vjp(st):
    X, Ybar = symmat("x", N, d), symmat(r"\bar{y}", N, d)
    Y = sp.Matrix(N, d, lambda i, c: sp.Rational(1, i + 1) * sum(X[t, c] for t in range(i + 1)))
    Xbar = grad(inner(Ybar, Y), X)
    st.text(r"N = 4 tokens, d = 2 channels, $\mathcal L = \sum \bar y_{ic} \tilde x_{ic}$:")
    st.eq(r"\tilde x", Y)
    st.eq(r"\frac{\partial\mathcal L}{\partial x}", Xbar)
    closed = sp.Matrix(N, d, lambda t, c: sum(Ybar[i, c] / (i + 1) for i in range(t, N)))
    st.text(
        r"primal_np: $\bar x_t = \sum_{i \ge t} \bar y_i / i$, a reverse cumulative sum of $\bar y_i / i$."
    )
    st.exact(r"$\bar x_t = \sum_{i\ge t} \bar y_i / i$", Xbar, closed)
    forward_sum = sp.Matrix(N, d, lambda t, c: sum(Ybar[i, c] / (i + 1) for i in range(t + 1)))
    st.rejects(
        r"$\bar x_t = \sum_{i \le t} \bar y_i / i$ (forward instead of reverse cumsum)",
        Xbar,
        forward_sum,
    )

    f = Lambdified([X, Ybar], [Y, Xbar])
    rng = np.random.default_rng(501)
    pairs, wrong = [], []
    for _ in range(N_POINTS):
        x, yb = rng.standard_normal((3, N, d)), rng.standard_normal((3, N, d))  # batch of 3
        y, cache = running_mean(x, axis=-2)
        dx = running_mean_backward(yb, cache).x
        y0, c0 = running_mean(np.moveaxis(x, 1, 0), axis=0)  # the same along axis 0
        dx0 = np.moveaxis(running_mean_backward(np.moveaxis(yb, 1, 0), c0).x, 0, 1)
        for b in range(3):
            y_ref, dx_ref = f(x[b], yb[b])
            pairs += [
                (y[b], y_ref),
                (dx[b], dx_ref),
                (np.moveaxis(y0, 0, 1)[b], y_ref),
                (dx0[b], dx_ref),
            ]
            wrong.append((np.cumsum(yb[b] / np.arange(1, N + 1)[:, None], axis=0), dx_ref))
    st.close(
        "`running_mean`, `running_mean_backward` (axis = −2 with a batch axis, and axis = 0) against SymPy",
        pairs,
    )
    st.far("a forward cumulative sum of $\\bar y_i/i$", wrong)


def test_running_mean_vjp():
    running_mean_vjp()


if __name__ == "__main__":
    raise SystemExit(D.main())
