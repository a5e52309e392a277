"""Softmax cross-entropy and accuracy: gradients, references, large logits, bad input."""

import math

import numpy as np
import pytest
from helpers import readonly

from primal_np import check_vjp
from primal_np.nn import accuracy, cross_entropy, cross_entropy_backward


def _reference_loss(z, y):
    """Mean over rows of log Σ exp(z) − z_y, one row at a time in Python floats."""
    total = []
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        top = max(row)
        lse = top + math.log(math.fsum(math.exp(r - top) for r in row))
        total.append(lse - row[label])
    return math.fsum(total) / len(total)


@pytest.mark.parametrize("b,c", [(4, 5), (1, 1), (1, 3), (6, 2)])
def test_cross_entropy_vjp(rng, b, c):
    labels = rng.integers(0, c, size=b)
    inputs = {"logits": rng.standard_normal((b, c)) * 2.0}
    check_vjp(
        lambda logits: cross_entropy(logits, labels), cross_entropy_backward, inputs, ["logits"]
    ).assert_ok()


def test_cross_entropy_matches_reference(rng):
    z, y = rng.standard_normal((7, 4)) * 3.0, rng.integers(0, 4, size=7)
    loss, _ = cross_entropy(*readonly(z, y))
    assert abs(float(loss) - _reference_loss(z, y)) <= 1e-14 * abs(_reference_loss(z, y))


def test_cross_entropy_large_logits_are_exact():
    z = np.array([[1000.0, 1000.0], [800.0, -800.0], [-750.0, 750.0]])
    loss, cache = cross_entropy(z, np.array([0, 1, 1]))
    # row 0: log 2; row 1: 1600 + log(1 + e^-1600) = 1600; row 2: log(1 + e^-1500) = 0
    assert abs(float(loss) - (math.log(2.0) + 1600.0) / 3) <= 1e-15 * 600
    dz = cross_entropy_backward(1.0, cache).logits
    np.testing.assert_allclose(dz * 3, [[-0.5, 0.5], [1.0, -1.0], [0.0, 0.0]], atol=1e-300)


def test_cross_entropy_backward_rows_and_scaling(rng):
    z, y = rng.standard_normal((5, 3)), rng.integers(0, 3, size=5)
    _, cache = cross_entropy(z, y)
    g1 = cross_entropy_backward(1.0, cache).logits
    np.testing.assert_allclose(g1.sum(axis=1), 0.0, atol=1e-16)  # Σ_c (p_c − onehot_c) = 0
    np.testing.assert_allclose(cross_entropy_backward(-2.5, cache).logits, -2.5 * g1, rtol=1e-15)
    assert np.all(g1[np.arange(5), y] < 0)


def test_cross_entropy_float32(rng):
    z = rng.standard_normal((3, 4)).astype(np.float32)
    loss, cache = cross_entropy(z, np.array([0, 3, 1]))
    assert loss.dtype == np.float32
    assert cross_entropy_backward(np.float32(1.0), cache).logits.dtype == np.float32


def test_accuracy():
    z = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 0.0], [0.3, 0.2]])
    assert accuracy(z, np.array([1, 0, 0, 1])) == 0.75  # the tie in row 2 picks class 0


def test_cross_entropy_bad_input(rng):
    z = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got 4 at index \(2,\)"):
        cross_entropy(z, np.array([0, 1, 4]))
    with pytest.raises(TypeError, match="labels must be an integer array, got dtype float64"):
        cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels has shape \(2,\), expected \(3,\)"):
        cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"logits must have 2 dimensions, got shape \(4,\)"):
        cross_entropy(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match=r"logits must be finite, got nan at index \(1, 0\)"):
        cross_entropy(np.array([[0.0, 1.0], [np.nan, 0.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got -1"):
        accuracy(np.zeros((1, 2)), np.array([-1]))
