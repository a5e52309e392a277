"""The comparison helpers of derivlib can fail: wrong forms are rejected, criteria are strict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from derivlib import Graph, Lambdified, Step, err, exact_difference, grad, symmat


def test_exact_difference_accepts_identities_and_rejects_wrong_forms():
    a, b = sp.symbols("a b", real=True)
    assert exact_difference((a + b) ** 2, a**2 + 2 * a * b + b**2) is None
    assert exact_difference((a + b) ** 2, a**2 + b**2) == 2 * a * b
    x = sp.exp(a) / (sp.exp(a) + sp.exp(b))
    assert exact_difference(x, 1 - sp.exp(b) / (sp.exp(a) + sp.exp(b)), "cancel") is None
    assert exact_difference(x, 1 - sp.exp(a) / (sp.exp(a) + sp.exp(b)), "cancel") is not None
    assert exact_difference(1 / a + 1 / b, (a + b) / (a * b), "numerator") is None
    assert exact_difference(1 / a + 1 / b, (a + b) / (2 * a * b), "numerator") is not None
    with pytest.raises(ValueError):
        exact_difference(symmat("m", 2, 2), symmat("m", 2, 3))


def test_step_asserts():
    st = Step("t")
    a = sp.Symbol("a", real=True)
    with pytest.raises(AssertionError):
        st.exact("wrong", a**2, a)
    with pytest.raises(AssertionError):
        st.rejects("right", a**2, a * a)
    with pytest.raises(AssertionError):
        st.close("off by 1e-9", [(np.array([1.0 + 1e-9]), np.array([1.0]))])
    with pytest.raises(AssertionError):
        st.far("equal", [(np.ones(2), np.ones(2))])
    with pytest.raises(AssertionError):
        st.small("big", [1e-6])
    with pytest.raises(AssertionError):
        st.not_small("tiny", [0.0])


def test_err_is_the_projects_rel_error_with_sympy_as_reference():
    assert err(np.zeros(3), np.zeros(3)) == 0.0
    assert math.isinf(err(np.array([1e-300, 0.0]), np.zeros(2)))  # an exact zero must be matched
    assert err(np.array([2.0, 1.0]), np.array([2.0, 1.0 + 2e-16])) < 1e-15
    assert err(np.array([2.0]), np.array([1.0])) == 1.0  # relative to the reference (2nd)
    assert err(np.array([1.0]), np.array([2.0])) == 0.5
    assert math.isinf(err(np.array([np.nan]), np.array([1.0])))
    with pytest.raises(ValueError, match="shapes differ"):  # a bug of the derivation, not "far"
        err(np.ones(2), np.ones(3))
    with pytest.raises(ValueError):
        Step("t").far("mis-shaped", [(np.ones(2), np.ones(3))])


def test_grad_and_lambdified():
    X = symmat(r"\Phi^{q}", 2, 2)
    f = sum(X[i, j] ** 2 * X[0, 0] for i in range(2) for j in range(2))
    g = grad(f, X)
    assert exact_difference(g, X.applyfunc(lambda x: sp.diff(f, x))) is None
    big = sp.Add(*[X[0, 0] ** k * X[1, 1] for k in range(80)])  # the term-by-term path
    assert exact_difference(grad(big, X), X.applyfunc(lambda x: sp.diff(big, x))) is None
    (val,) = Lambdified([X], [g])(np.arange(4.0).reshape(2, 2))
    x = np.arange(4.0).reshape(2, 2)
    want = 2 * x * x[0, 0]
    want[0, 0] += np.sum(x**2)
    assert err(val, want) == 0.0


def _graph_problem(g: Graph, root: bool = False):
    """A small composition with a shared intermediate, a quotient (and a square root)."""
    a, b, c = sp.symbols("a b c", real=True)
    X = symmat("x", 2, 2)
    u = g.define(X * sp.Matrix([a, b]))  # used twice below
    s = u[0] ** 2 + u[1] ** 2 + c**2
    n = g.define(sp.sqrt(s) if root else s + 1)
    v = g.define(sp.Matrix([u[0] / n, u[1] * u[0] / n]))
    f = v[0] * a + v[1] ** 2 + u[1] * c
    return f, [X, [a, b, c]]


def test_graph_gradient_is_diff_of_the_composition():
    g = Graph()
    f, wrt = _graph_problem(g)
    grads = g.gradient(f, wrt)
    gi = Graph(inline=True)
    fi, wrt_i = _graph_problem(gi)
    want = gi.gradient(fi, wrt_i)
    assert gi.defs == []
    assert exact_difference(want[0], grad(fi, wrt_i[0])) is None  # inline mode is plain diff
    sub: dict = {}
    for u, e in g.defs:  # substitute the definitions (and adjoints) back, oldest first
        sub[u] = e.xreplace(sub)
    for got, ref in zip(grads, want, strict=True):
        composed = [
            sp.sympify(e).xreplace(sub)
            for e in (list(got) if isinstance(got, sp.MatrixBase) else got)
        ]
        assert exact_difference(composed, list(ref), "numerator") is None
    # a deliberately wrong chain rule (one adjoint term dropped) is rejected
    wrong = [sp.sympify(e).xreplace(sub) for e in grads[1]]
    wrong[2] = wrong[2] - sp.diff(fi, wrt_i[1][2]) / 2
    assert exact_difference(wrong, list(want[1]), "numerator") is not None


def test_lambdified_with_definitions():
    g = Graph()
    f, wrt = _graph_problem(g, root=True)
    grads = g.gradient(f, wrt)
    fast = Lambdified(wrt, [grads[0], grads[1], [f]], defs=g.defs)
    gi = Graph(inline=True)
    fi, wrt_i = _graph_problem(gi, root=True)
    slow = Lambdified(wrt_i, [*gi.gradient(fi, wrt_i), [fi]])
    rng = np.random.default_rng(0)
    for _ in range(3):
        vals = [rng.standard_normal((2, 2)), rng.standard_normal(3)]
        for x, y in zip(fast(*vals), slow(*vals), strict=True):
            assert err(x, y) < 1e-14
