"""GELU and the MLP block: gradients, references, edge cases and bad input."""

import math

import numpy as np
import pytest
from helpers import readonly

from primal_np import check_vjp
from primal_np.nn import MLP_PARAM_NAMES, gelu, gelu_backward, init_mlp_params, mlp, mlp_backward


def test_gelu_vjp(rng):
    x = rng.standard_normal((3, 7)) * 3.0
    check_vjp(gelu, gelu_backward, {"x": x}, ["x"]).assert_ok()


def test_gelu_matches_math_erf(rng):
    x = np.concatenate([rng.standard_normal(20) * 4.0, [0.0, -40.0, 40.0]])
    y, _ = gelu(readonly(x))
    for xi, yi in zip(x, y, strict=True):
        expect = 0.5 * xi * (1.0 + math.erf(xi / math.sqrt(2.0)))
        assert abs(yi - expect) <= 1e-15 * max(1.0, abs(expect))


def test_gelu_tails_are_finite(rng):
    x = np.array([-1e4, -40.0, 40.0, 1e4])
    y, cache = gelu(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 40.0, 1e4])
    np.testing.assert_array_equal(gelu_backward(np.ones(4), cache).x, [0.0, 0.0, 1.0, 1.0])


def test_gelu_float32(rng):
    x = rng.standard_normal(5).astype(np.float32)
    y, cache = gelu(x)
    assert y.dtype == np.float32
    assert gelu_backward(np.ones(5, np.float32), cache).x.dtype == np.float32


def _mlp_inputs(rng, x_shape, hidden, d_out=None):
    d = x_shape[-1]
    d_out = d if d_out is None else d_out
    return {
        "x": rng.standard_normal(x_shape),
        "fc1.weight": rng.standard_normal((hidden, d)),
        "fc1.bias": rng.standard_normal(hidden),
        "fc2.weight": rng.standard_normal((d_out, hidden)),
        "fc2.bias": rng.standard_normal(d_out),
    }


def _fwd(**kw):
    x = kw.pop("x")
    return mlp(x, kw)


def _bwd(dy, cache):
    dx, grads = mlp_backward(dy, cache)
    return {"x": dx, **grads}


@pytest.mark.parametrize(
    "x_shape,hidden,d_out", [((2, 3, 4), 6, None), ((1, 1, 1), 1, None), ((3, 2), 5, 3)]
)
def test_mlp_vjp(rng, x_shape, hidden, d_out):
    inputs = _mlp_inputs(rng, x_shape, hidden, d_out)
    check_vjp(_fwd, _bwd, inputs, list(inputs)).assert_ok()


def test_mlp_matches_composition(rng):
    p = _mlp_inputs(rng, (2, 3), 4)
    x = p.pop("x")
    y, _ = mlp(readonly(x), {k: readonly(v) for k, v in p.items()})
    for i in range(2):
        h = [
            sum(p["fc1.weight"][o, j] * x[i, j] for j in range(3)) + p["fc1.bias"][o]
            for o in range(4)
        ]
        a = [hi * 0.5 * (1.0 + math.erf(hi / math.sqrt(2.0))) for hi in h]
        out = [
            sum(p["fc2.weight"][o, j] * a[j] for j in range(4)) + p["fc2.bias"][o] for o in range(3)
        ]
        np.testing.assert_allclose(y[i], out, rtol=1e-13)


def test_init_mlp_params():
    p = init_mlp_params(6, 10, seed=1, dtype=np.float32)
    assert tuple(p) == MLP_PARAM_NAMES
    assert p["fc1.weight"].shape == (10, 6) and p["fc2.weight"].shape == (6, 10)
    assert p["fc1.bias"].shape == (10,) and p["fc2.bias"].shape == (6,)
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.abs(p["fc1.weight"]).max() <= 1 / math.sqrt(6)
    assert np.abs(p["fc2.weight"]).max() <= 1 / math.sqrt(10)
    y, _ = mlp(np.ones((2, 6), np.float32), p)
    assert y.dtype == np.float32
    again, other = init_mlp_params(6, 10, seed=1), init_mlp_params(6, 10, seed=2)
    np.testing.assert_array_equal(again["fc2.weight"], init_mlp_params(6, 10, seed=1)["fc2.weight"])
    assert not np.array_equal(again["fc2.weight"], other["fc2.weight"])


def test_mlp_bad_input(rng):
    p = init_mlp_params(4, 8)
    with pytest.raises(KeyError, match=r"MLP parameters missing \['fc2.bias'\]"):
        mlp(np.ones((2, 4)), {k: v for k, v in p.items() if k != "fc2.bias"})
    with pytest.raises(ValueError, match="x has 3 input features .* weight expects 4"):
        mlp(np.ones((2, 3)), p)
