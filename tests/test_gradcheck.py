"""The gradient checker itself: it must pass correct gradients and catch wrong ones."""

import numpy as np
import pytest

from primal_np import check_vjp, gradcheck, taylor_test
from primal_np.primitives import softmax, softmax_backward


def _quartic(x, w):
    return float(np.sum((x @ w) ** 2) ** 2 / 4)


def _quartic_grads(x, w):
    y = x @ w
    s = np.sum(y**2)
    return {"x": s * (2 * y) @ w.T / 2, "w": s * x.T @ (2 * y) / 2}


def test_correct_gradient_passes_in_both_modes(rng):
    x, w = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    g = _quartic_grads(x, w)
    for mode in ("elementwise", "directional"):
        rep = gradcheck(_quartic, {"x": x, "w": w}, g, mode=mode)
        assert rep.ok, rep
        assert rep.max_rel_err < 1e-7


def test_elementwise_report_names_the_wrong_entry(rng):
    x, w = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    g = _quartic_grads(x, w)
    g["w"] = g["w"].copy()
    g["w"][1, 2] += 1e-3 * (1 + abs(g["w"][1, 2]))
    rep = gradcheck(_quartic, {"x": x, "w": w}, g)
    assert not rep.ok
    row = {r.name: r for r in rep.rows}
    assert row["x"].passed and not row["w"].passed
    assert row["w"].worst_index == (1, 2)
    assert row["w"].analytic == pytest.approx(g["w"][1, 2])
    assert "FAIL" in str(rep) and "(1, 2)" in str(rep)
    with pytest.raises(AssertionError, match="gradient check failed"):
        rep.assert_ok()


def test_directional_mode_catches_a_wrong_gradient(rng):
    x, w = rng.standard_normal((3, 2)), rng.standard_normal((2, 4))
    g = _quartic_grads(x, w)
    g["x"] = 1.001 * g["x"]
    assert not gradcheck(_quartic, {"x": x, "w": w}, g, mode="directional").ok


def test_softmax_backward_without_row_sum_term_is_caught(rng):
    # The classic bug: ds = p * dp, forgetting − rowsum(dp ∘ p). Random cotangents expose it.
    s = rng.standard_normal((3, 5))
    rep = check_vjp(lambda s: softmax(s), lambda dp, c: c.p * dp, {"s": s}, ["s"])
    assert not rep.ok
    assert check_vjp(lambda s: softmax(s), softmax_backward, {"s": s}, ["s"]).ok


def test_taylor_test_exact_for_linear_loss(rng):
    a = rng.standard_normal(5)
    rep = taylor_test(lambda x: float(a @ x), {"x": rng.standard_normal(5)}, {"x": a})
    assert rep.passed and rep.exact


def test_bad_arguments(rng):
    x = rng.standard_normal(3)
    with pytest.raises(
        ValueError, match=r"grads\['x'\] has shape \(2,\), expected the input's shape \(3,\)"
    ):
        gradcheck(lambda x: float(x.sum()), {"x": x}, {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="not among the inputs"):
        gradcheck(lambda x: float(x.sum()), {"x": x}, {"y": np.zeros(3)})
    with pytest.raises(ValueError, match="mode must be"):
        gradcheck(lambda x: float(x.sum()), {"x": x}, {"x": np.ones(3)}, mode="bogus")
    with pytest.raises(ValueError, match="the loss must return a scalar"):
        gradcheck(lambda x: x, {"x": x}, {"x": np.ones(3)})
