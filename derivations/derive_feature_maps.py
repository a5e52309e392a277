"""Feature maps: the cosine map's VJP (both branches), the degree-2 map, positive random features.

primal_np.feature_maps: cosine_normalize(_backward), poly2_features(_backward),
positive_random_features(_backward).
Run: python derivations/derive_feature_maps.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat, symvec

from primal_np.feature_maps import (
    NORMALIZE_EPS,
    cosine_normalize,
    cosine_normalize_backward,
    identity_features,
    identity_features_backward,
    poly2_features,
    poly2_features_backward,
    positive_random_features,
    positive_random_features_backward,
)

D = Derivation(
    "feature_maps",
    "Feature maps φ",
    r"""
    The cosine map of the paper's experiments, $\varphi(x) = x / \max(\lVert x\rVert_2, \epsilon)$
    with $\epsilon = 10^{-12}$ (PyTorch `F.normalize`), and the two explicit maps primal_np
    uses for exact checks and for the exponential kernel. Norms stay as
    `sqrt(x_1^2 + …)`, treated by cancel/together as a generator.
    """,
)


@D.step("Cosine normalisation: VJP on both branches")
def cosine(st):
    X, Ybar = symmat("x", 2, 3), symmat(r"\bar{y}", 2, 3)
    eps = sp.Symbol(r"\epsilon", positive=True)
    norms = [sp.sqrt(sum(X[i, j] ** 2 for j in range(3))) for i in range(2)]
    Y = sp.Matrix(2, 3, lambda i, j: X[i, j] / norms[i])
    Xbar = grad(inner(Ybar, Y), X)
    st.text(
        r"""
        Two rows $x_i \in \mathbb R^3$, $y_i = x_i / \lVert x_i\rVert$ on the branch
        $\lVert x_i\rVert > \epsilon$, $\mathcal L = \sum \bar y_{ij} y_{ij}$. SymPy's (1, 1) entry:
        """
    )
    st.eq(r"\frac{\partial\mathcal L}{\partial x_{11}}", Xbar[0, 0])
    proj = [sum(Y[i, k] * Ybar[i, k] for k in range(3)) for i in range(2)]
    closed = sp.Matrix(2, 3, lambda i, j: (Ybar[i, j] - Y[i, j] * proj[i]) / norms[i])
    st.text(r"primal_np: $\bar x = (\bar y - y\,(y^\top \bar y)) / \lVert x\rVert$ row by row.")
    st.exact(r"$\bar x = (\bar y - y (y^\top\bar y))/\lVert x\rVert$", Xbar, closed, "cancel")
    st.rejects(
        r"$\bar x = \bar y / \lVert x\rVert$ (projection dropped)",
        Xbar,
        sp.Matrix(2, 3, lambda i, j: Ybar[i, j] / norms[i]),
        "cancel",
    )
    clamped = grad(inner(Ybar, X / eps), X)
    st.text(r"On the branch $\lVert x\rVert \le \epsilon$ the forward is $y = x/\epsilon$:")
    st.exact(r"$\bar x = \bar y / \epsilon$ (clamped branch)", clamped, Ybar / eps)

    f = Lambdified([X, Ybar], [Y, Xbar])
    rng = np.random.default_rng(301)
    fwd, bwd, wrong = [], [], []
    for _ in range(N_POINTS):
        x, ybar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
        y_ref, dx_ref = f(x, ybar)
        y, cache = cosine_normalize(x)
        fwd.append((y, y_ref))
        bwd.append((cosine_normalize_backward(ybar, cache).x, dx_ref))
        wrong.append((ybar / np.linalg.norm(x, axis=-1, keepdims=True), dx_ref))
    st.close("`cosine_normalize` against $x/\\lVert x\\rVert$", fwd)
    st.close(
        "`cosine_normalize_backward` against $\\partial\\mathcal L/\\partial x$ (norm > ε)", bwd
    )
    st.far("$\\bar y/\\lVert x\\rVert$ against $\\partial\\mathcal L/\\partial x$", wrong)

    g = Lambdified([X, Ybar, eps], [X / eps, clamped])
    fwd, bwd = [], []
    for _ in range(N_POINTS):
        x = rng.standard_normal((2, 3)) * np.array([[1e-13], [0.0]])  # a tiny row and a zero row
        ybar = rng.standard_normal((2, 3))
        y_ref, dx_ref = g(x, ybar, NORMALIZE_EPS)
        y, cache = cosine_normalize(x)
        fwd.append((y, y_ref))
        bwd.append((cosine_normalize_backward(ybar, cache).x, dx_ref))
    st.close(
        "`cosine_normalize(_backward)` on a row of norm 1e-13 and a zero row against $x/\\epsilon$, $\\bar y/\\epsilon$",
        fwd + bwd,
    )


@D.step("Identity map")
def identity(st):
    X, Ybar = symmat("x", 2, 3), symmat(r"\bar{y}", 2, 3)
    st.exact(r"$\varphi(x) = x$: $\bar x = \bar y$", grad(inner(Ybar, X), X), Ybar)
    f = Lambdified([X, Ybar], [grad(inner(Ybar, X), X)])
    rng = np.random.default_rng(304)
    pairs = []
    for _ in range(N_POINTS):
        x, yb = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
        y, cache = identity_features(x)
        pairs += [(y, x), (identity_features_backward(yb, cache).x, f(x, yb)[0])]
    st.close("`identity_features(_backward)` against SymPy", pairs)


def _sq(v: list) -> sp.Expr:
    return sum(t**2 for t in v)


def _poly2_sym(x: list, c) -> list:
    d = len(x)
    pairs = [(i, j) for i in range(d) for j in range(i, d)]  # np.triu_indices(d) order
    quad = [(1 if i == j else sp.sqrt(2)) * x[i] * x[j] for i, j in pairs]
    return [c] + [sp.sqrt(2 * c) * xi for xi in x] + quad


@D.step("Degree-2 polynomial features: kernel identity and VJP")
def poly2(st):
    x, z = symvec("x", 3), symvec("z", 3)
    c = sp.Symbol("c", positive=True)
    phx, phz = _poly2_sym(x, c), _poly2_sym(z, c)
    st.text(
        r"""
        $\varphi(x) = [c,\ \sqrt{2c}\,x_1..x_d,\ (w_{ij} x_i x_j)_{i \le j}]$, $w_{ii} = 1$,
        $w_{ij} = \sqrt 2$, pairs in `np.triu_indices(d)` order; d = 3 symbolic, c > 0 symbolic.
        """
    )
    k = sum(a * b for a, b in zip(phx, phz, strict=True))
    dot = sum(a * b for a, b in zip(x, z, strict=True))
    st.exact(r"$\langle\varphi(x), \varphi(z)\rangle = (x^\top z + c)^2$", k, (dot + c) ** 2)
    pbar = symvec(r"\bar{\varphi}", len(phx))
    xbar = grad(inner(pbar, phx), x)
    G = sp.zeros(3, 3)
    upper = [(a, b) for a in range(3) for b in range(a, 3)]
    for (i, j), pb in zip(upper, pbar[4:], strict=True):
        G[i, j] = (1 if i == j else sp.sqrt(2)) * pb
    closed = (G + G.T) * sp.Matrix(x) + sp.sqrt(2 * c) * sp.Matrix(pbar[1:4])
    st.text(
        r"VJP: with $G_{ij} = w_{ij}\bar\varphi_{ij}$ for $i \le j$ (0 below), primal_np uses $\bar x = (G + G^\top)x + \sqrt{2c}\,\bar\varphi_{\mathrm{lin}}$."
    )
    st.exact(
        r"$\bar x = (G + G^\top)x + \sqrt{2c}\,\bar\varphi_{\mathrm{lin}}$", sp.Matrix(xbar), closed
    )
    st.rejects(
        r"$\bar x = G x + \sqrt{2c}\,\bar\varphi_{\mathrm{lin}}$ (symmetrisation dropped)",
        sp.Matrix(xbar),
        G * sp.Matrix(x) + sp.sqrt(2 * c) * sp.Matrix(pbar[1:4]),
    )

    f = Lambdified([x, pbar, c], [sp.Matrix(phx), sp.Matrix(xbar)])
    rng = np.random.default_rng(302)
    pairs = []
    for _ in range(N_POINTS):
        xv, pb, cv = rng.standard_normal(3), rng.standard_normal(len(phx)), rng.uniform(0.2, 2.0)
        ph_ref, dx_ref = f(xv, pb, cv)
        ph, cache = poly2_features(xv[None], cv)
        pairs += [
            (ph[0], ph_ref[:, 0]),
            (poly2_features_backward(pb[None], cache).x[0], dx_ref[:, 0]),
        ]
    st.close("`poly2_features` and `poly2_features_backward` against SymPy", pairs)


@D.step("Positive random features: unbiasedness and VJP")
def random_features(st):
    w, u = sp.symbols("w u", real=True)
    expect = sp.integrate(sp.exp(w * u - w**2 / 2) / sp.sqrt(2 * sp.pi), (w, -sp.oo, sp.oo))
    st.text(
        r"""
        $g(z)_l = \exp(w_l^\top z - \lVert z\rVert^2/2)/\sqrt m$, $w_l \sim N(0, I)$. One
        coordinate of the Gaussian expectation, integrated by SymPy:
        """
    )
    st.eq(r"\mathbb E_{w \sim N(0,1)}\, e^{w u}", expect)
    st.exact(r"$\mathbb E\, e^{wu} = e^{u^2/2}$", expect, sp.exp(u**2 / 2))
    x, z = symvec("x", 2), symvec("z", 2)
    total = (
        sp.exp(-_sq(x) / 2)
        * sp.exp(-_sq(z) / 2)
        * sp.exp(_sq([a + b for a, b in zip(x, z, strict=True)]) / 2)
    )
    st.text(
        r"""
        Coordinates are independent, so $\mathbb E\, e^{w^\top(x+z)} = e^{\lVert x+z\rVert^2/2}$
        and, for d = 2 symbolic:
        """
    )
    st.exact(
        r"$e^{-\lVert x\rVert^2/2} e^{-\lVert z\rVert^2/2}\, \mathbb E\, e^{w^\top(x+z)} = e^{x^\top z}$",
        total,
        sp.exp(sum(a * b for a, b in zip(x, z, strict=True))),
        "cancel",
    )

    W = symmat("w", 3, 2)  # m = 3 features, d = 2
    gbar = symvec(r"\bar{g}", 3)
    g = [sp.exp(sum(W[l, j] * z[j] for j in range(2)) - _sq(z) / 2) / sp.sqrt(3) for l in range(3)]
    zbar = grad(inner(gbar, g), z)
    t = [gbar[l] * g[l] for l in range(3)]
    closed = [sum(t[l] * W[l, j] for l in range(3)) - z[j] * sum(t) for j in range(2)]
    st.text(
        r"VJP (m = 3, d = 2): primal_np uses $\bar z = (\bar g \circ g) W - z \sum_l \bar g_l g_l$."
    )
    st.exact(r"$\bar z = (\bar g\circ g)W - z\sum_l \bar g_l g_l$", zbar, closed, "cancel")
    st.rejects(
        r"$\bar z = (\bar g\circ g)W$ (the $-\lVert z\rVert^2/2$ term ignored)",
        zbar,
        [sum(t[l] * W[l, j] for l in range(3)) for j in range(2)],
        "cancel",
    )

    f = Lambdified([z, W, gbar], [sp.Matrix(g), sp.Matrix(zbar)])
    rng = np.random.default_rng(303)
    pairs = []
    for _ in range(N_POINTS):
        zv, wv, gb = (
            0.5 * rng.standard_normal(2),
            rng.standard_normal((3, 2)),
            rng.standard_normal(3),
        )
        g_ref, dz_ref = f(zv, wv, gb)
        phi, cache = positive_random_features(zv[None], wv)
        pairs += [
            (phi[0], g_ref[:, 0]),
            (positive_random_features_backward(gb[None], cache).x[0], dz_ref[:, 0]),
        ]
    st.close("`positive_random_features(_backward)` against SymPy", pairs)


def test_cosine():
    cosine()


def test_identity():
    identity()


def test_poly2():
    poly2()


def test_random_features():
    random_features()


if __name__ == "__main__":
    raise SystemExit(D.main())
