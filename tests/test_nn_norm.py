"""LayerNorm: gradients, a loop-level reference, edge cases and bad input."""

import math

import numpy as np
import pytest
from helpers import readonly

from primal_np import check_vjp
from primal_np.nn import layer_norm, layer_norm_backward


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 1, 4), (3, 1), (6,), (2, 2, 2)])
def test_layer_norm_vjp(rng, shape):
    d = shape[-1]
    inputs = {
        "x": rng.standard_normal(shape) * 2.0 + 0.5,
        "weight": rng.standard_normal(d),
        "bias": rng.standard_normal(d),
    }
    check_vjp(layer_norm, layer_norm_backward, inputs, ["x", "weight", "bias"]).assert_ok()


def test_layer_norm_vjp_eps_comparable_to_variance(rng):
    # ε comparable to σ², so the ε inside the square root matters to the gradient. (A large
    # ε rather than a tiny σ: finite differences with step ~6e-6 need σ ≫ 6e-6 · 1e3.)
    d = 4
    inputs = {
        "x": 0.7 * rng.standard_normal((3, d)),
        "weight": rng.standard_normal(d),
        "bias": rng.standard_normal(d),
    }
    fwd = lambda x, weight, bias: layer_norm(x, weight, bias, eps=0.5)  # noqa: E731
    check_vjp(fwd, layer_norm_backward, inputs, ["x", "weight", "bias"]).assert_ok()


def test_layer_norm_matches_loops(rng):
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    y, _ = layer_norm(*readonly(x, w, b), eps=1e-3)
    for i in range(2):
        for j in range(3):
            row = list(x[i, j])
            mu = math.fsum(row) / 5
            var = math.fsum((r - mu) ** 2 for r in row) / 5  # biased
            for k in range(5):
                expect = (row[k] - mu) / math.sqrt(var + 1e-3) * w[k] + b[k]
                assert abs(y[i, j, k] - expect) <= 1e-14 * max(1.0, abs(expect))


def test_layer_norm_d1_gives_bias_and_zero_dx(rng):
    x, w, b = rng.standard_normal((4, 1)), rng.standard_normal(1), rng.standard_normal(1)
    y, cache = layer_norm(x, w, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b, (4, 1)))
    dx, dw, db = layer_norm_backward(rng.standard_normal((4, 1)), cache)
    assert not dx.any() and not dw.any()


def test_layer_norm_float32_and_readonly(rng):
    x = readonly(rng.standard_normal((3, 8)).astype(np.float32))
    w, b = readonly(np.ones(8, np.float32), np.zeros(8, np.float32))
    y, cache = layer_norm(x, w, b)
    assert y.dtype == np.float32
    grads = layer_norm_backward(np.ones((3, 8), np.float32), cache)
    assert all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-6)


def test_layer_norm_bad_input(rng):
    x = rng.standard_normal((2, 4))
    with pytest.raises(
        ValueError, match=r"weight has shape \(3,\), expected \(4,\) for x of shape \(2, 4\)"
    ):
        layer_norm(x, np.ones(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"bias has shape \(5,\), expected \(4,\)"):
        layer_norm(x, np.ones(4), np.zeros(5))
    with pytest.raises(TypeError, match="x must be a floating-point array .* int64"):
        layer_norm(np.ones((2, 4), dtype=np.int64), np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="eps must be > 0, got 0.0"):
        layer_norm(x, np.ones(4), np.zeros(4), eps=0.0)
