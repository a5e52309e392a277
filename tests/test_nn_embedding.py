"""Token and position embeddings: definitions, gradients, edge cases and bad input."""

import math

import numpy as np
import pytest
from helpers import readonly

from primal_np import check_vjp
from primal_np.nn import (
    embedding,
    embedding_backward,
    learned_positional,
    learned_positional_backward,
    sinusoidal_positions,
)


@pytest.mark.parametrize(
    "shape,v,d", [((2, 5), 4, 3), ((1, 1), 3, 1), ((3,), 6, 2), ((2, 7), 1, 4)]
)
def test_embedding_vjp(rng, shape, v, d):
    ids = rng.integers(0, v, size=shape)  # small V: ids repeat, so rows accumulate
    inputs = {"table": rng.standard_normal((v, d)), "ids": ids}
    check_vjp(
        lambda table, ids: embedding(ids, table), embedding_backward, inputs, ["table"]
    ).assert_ok()


def test_embedding_matches_loops(rng):
    v, d = 5, 3
    table = rng.standard_normal((v, d))
    ids = np.array([[0, 4, 4, 2], [2, 2, 2, 1]])
    out, cache = embedding(*readonly(ids, table))
    for b in range(2):
        for n in range(4):
            np.testing.assert_array_equal(out[b, n], table[ids[b, n]])
    de = rng.standard_normal(out.shape)
    expect = np.zeros((v, d))
    for b in range(2):
        for n in range(4):
            expect[ids[b, n]] += de[b, n]
    np.testing.assert_allclose(embedding_backward(de, cache).table, expect, rtol=1e-14, atol=1e-15)
    assert not embedding_backward(de, cache).table[3].any()  # id 3 never occurs


def test_embedding_output_is_not_a_view(rng):
    table = readonly(rng.standard_normal((4, 2)))
    out, _ = embedding(np.array([1, 2]), table)
    out[...] = 0.0  # must not reach the (read-only) table
    assert table.any()


def test_embedding_float32_and_unsigned_ids(rng):
    table = rng.standard_normal((6, 3)).astype(np.float32)
    ids = np.array([[5, 0, 5]], dtype=np.uint8)
    out, cache = embedding(ids, table)
    assert out.dtype == np.float32
    dt = embedding_backward(
        np.ones((1, 3, 3), np.float32) * np.arange(3, dtype=np.float32), cache
    ).table
    assert dt.dtype == np.float32
    np.testing.assert_array_equal(dt[5], 2 * np.arange(3))


def test_embedding_bad_input(rng):
    table = rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\), got 7 at index \(1, 2\)"):
        embedding(np.array([[0, 1, 2], [3, 4, 7]]), table)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\), got -1 at index \(0,\)"):
        embedding(np.array([-1, 0]), table)
    with pytest.raises(TypeError, match="ids must be an integer array, got dtype float64"):
        embedding(np.array([0.0, 1.0]), table)
    with pytest.raises(TypeError, match="ids must be an integer array, got dtype bool"):
        embedding(np.array([True]), table)
    with pytest.raises(ValueError, match=r"table must have 2 dimensions, got shape \(5,\)"):
        embedding(np.array([0]), np.zeros(5))


@pytest.mark.parametrize(
    "x_shape,n_max", [((2, 3, 4), 5), ((1, 1, 1), 1), ((4, 2), 4), ((2, 2, 3, 2), 3)]
)
def test_learned_positional_vjp(rng, x_shape, n_max):
    inputs = {"x": rng.standard_normal(x_shape), "table": rng.standard_normal((n_max, x_shape[-1]))}
    check_vjp(learned_positional, learned_positional_backward, inputs, ["x", "table"]).assert_ok()


def test_learned_positional_definition_and_unused_rows(rng):
    x, table = rng.standard_normal((2, 3, 4)), rng.standard_normal((6, 4))
    y, cache = learned_positional(*readonly(x, table))
    for b in range(2):
        for n in range(3):
            np.testing.assert_array_equal(y[b, n], x[b, n] + table[n])
    _, dtable = learned_positional_backward(rng.standard_normal(y.shape), cache)
    assert dtable.shape == (6, 4) and not dtable[3:].any()


def test_learned_positional_float32(rng):
    x, table = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4), (5, 4)))
    y, cache = learned_positional(x, table)
    dx, dtable = learned_positional_backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    assert y.dtype == dx.dtype == dtable.dtype == np.float32


def test_learned_positional_bad_input(rng):
    with pytest.raises(ValueError, match=r"table has shape \(2, 4\), expected \(N_max ≥ 3, 4\)"):
        learned_positional(rng.standard_normal((1, 3, 4)), rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match=r"table has shape \(5, 3\), expected \(N_max ≥ 3, 4\)"):
        learned_positional(rng.standard_normal((1, 3, 4)), rng.standard_normal((5, 3)))


@pytest.mark.parametrize("n,d", [(7, 6), (5, 5), (1, 1), (3, 2)])
def test_sinusoidal_closed_form(n, d):
    pe = sinusoidal_positions(n, d)
    assert pe.shape == (n, d) and pe.dtype == np.float64
    for pos in range(n):
        for c in range(d):
            i = c // 2
            angle = pos / 10000 ** (2 * i / d)
            expect = math.sin(angle) if c % 2 == 0 else math.cos(angle)
            assert abs(pe[pos, c] - expect) <= 1e-15 * max(1.0, pos), (pos, c)


def test_sinusoidal_options_and_bad_input():
    np.testing.assert_array_equal(sinusoidal_positions(4, 2)[:, 0], np.sin(np.arange(4.0)))
    assert sinusoidal_positions(3, 4, dtype=np.float32).dtype == np.float32
    assert abs(sinusoidal_positions(3, 4, base=100.0)[2, 2] - math.sin(2 / 100**0.5)) < 1e-15
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        sinusoidal_positions(3, 0)
    with pytest.raises(ValueError, match="base must be > 1, got 1"):
        sinusoidal_positions(3, 2, base=1)
