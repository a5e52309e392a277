"""The comparison helpers of derivlib can fail: wrong forms are rejected, criteria are strict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from derivlib import Lambdified, Step, exact_difference, grad, rel_err, rel_residual, symmat


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


def test_rel_err_and_residual():
    assert rel_err(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_err(np.array([1e-300, 0.0]), np.zeros(2)) == 1.0  # an exact zero must be matched
    assert rel_err(np.array([2.0, 1.0]), np.array([2.0, 1.0 + 2e-16])) < 1e-15
    assert math.isinf(rel_err(np.array([np.nan]), np.array([1.0])))
    assert rel_residual(np.ones(2), np.ones(2)) == 0.0
    assert rel_residual(np.ones(2), -np.ones(2)) == 1.0


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
    assert rel_err(val, want) == 0.0
