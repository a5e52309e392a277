import numpy as np
import pytest
from helpers import readonly
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from primal_np import check_vjp
from primal_np.primitives import (
    linear,
    linear_backward,
    logsumexp,
    merge_heads,
    merge_heads_backward,
    softmax,
    softmax_backward,
    split_heads,
    split_heads_backward,
)

finite = st.floats(-30, 30, allow_nan=False, width=64)


@pytest.mark.parametrize("shape_x", [(4,), (1, 4), (2, 3, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_vjp(rng, shape_x, bias):
    inputs = {"x": rng.standard_normal(shape_x), "w": rng.standard_normal((3, 4))}
    if bias:
        inputs["b"] = rng.standard_normal(3)
    wrt = list(inputs)

    def fwd(x, w, b=None):
        return linear(x, w, b)

    def bwd(dy, cache):
        dx, dw, db = linear_backward(dy, cache)
        return (dx, dw, db) if bias else (dx, dw)

    check_vjp(fwd, bwd, inputs, wrt).assert_ok()


def test_linear_matches_definition(rng):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    y, _ = linear(*readonly(x, w, b))
    expect = np.array(
        [[sum(x[i, j] * w[o, j] for j in range(3)) + b[o] for o in range(2)] for i in range(5)]
    )
    np.testing.assert_allclose(y, expect, rtol=1e-14)


@pytest.mark.parametrize("masked", [False, True])
def test_softmax_vjp(rng, masked):
    s = rng.standard_normal((2, 3, 5))
    mask = None
    if masked:
        mask = rng.random((2, 3, 5)) > 0.4
        mask[0, 1] = False  # a fully masked row
    check_vjp(lambda s: softmax(s, mask), softmax_backward, {"s": s}, ["s"]).assert_ok()


def test_softmax_fully_masked_row_is_zero_and_finite(rng):
    s = rng.standard_normal((3, 4))
    mask = np.ones((3, 4), bool)
    mask[2] = False
    p, cache = softmax(s, mask)
    assert np.all(p[2] == 0.0)
    np.testing.assert_allclose(p[:2].sum(-1), 1.0, rtol=1e-15)
    ds = softmax_backward(rng.standard_normal((3, 4)), cache).s
    assert np.all(ds[2] == 0.0) and np.all(np.isfinite(ds))
    lse = logsumexp(s, mask)
    assert lse[2] == -np.inf and np.all(np.isfinite(lse[:2]))


@settings(max_examples=60, deadline=None)
@given(
    s=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=finite),
    shift=st.floats(-500, 500, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_softmax_properties(s, shift, seed):
    mask = np.random.default_rng(seed).random(s.shape) > 0.3
    p, _ = softmax(s, mask)
    visible_rows = mask.any(-1)
    # rows with a visible entry sum to 1; others are all zero; masked entries are zero
    np.testing.assert_allclose(p.sum(-1)[visible_rows], 1.0, rtol=1e-12)
    assert np.all(p[~visible_rows] == 0.0)
    assert np.all(p[~mask] == 0.0)
    assert np.all(p >= 0.0)
    # invariant to a per-row shift of the logits
    p2, _ = softmax(s + shift, mask)
    np.testing.assert_allclose(p2, p, atol=1e-12)


def test_logsumexp_closed_form():
    s = np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]])
    np.testing.assert_allclose(logsumexp(s), [1000.0 + np.log(2.0), np.log(4.0)], rtol=1e-15)


def test_split_merge_heads_roundtrip_and_vjp(rng):
    x = rng.standard_normal((2, 5, 6))
    y, cache = split_heads(x, 3)
    assert y.shape == (2, 3, 5, 2)
    np.testing.assert_array_equal(y[:, 1], x[:, :, 2:4])  # head h = channels [h·p, (h+1)·p)
    np.testing.assert_array_equal(merge_heads(y)[0], x)
    check_vjp(lambda x: split_heads(x, 3), split_heads_backward, {"x": x}, ["x"]).assert_ok()
    check_vjp(merge_heads, merge_heads_backward, {"x": y}, ["x"]).assert_ok()


def test_float32_stays_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((2, 4)).astype(np.float32)
    assert linear(x, w, np.zeros(2, np.float32))[0].dtype == np.float32
    assert softmax(x)[0].dtype == np.float32


def test_bad_input_messages(rng):
    with pytest.raises(ValueError, match=r"x has 4 input features .* weight expects 3"):
        linear(rng.standard_normal((2, 4)), rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        linear(rng.standard_normal((2, 3)), rng.standard_normal((5, 3)), np.zeros(4))
    with pytest.raises(TypeError, match=r"x must be a floating-point array .* int64"):
        linear(np.ones((2, 3), dtype=np.int64), rng.standard_normal((5, 3)))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        softmax(rng.standard_normal((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"mask of shape \(4,\) does not broadcast"):
        softmax(rng.standard_normal((2, 3)), np.ones(4, bool))
    with pytest.raises(ValueError, match="s must be finite, got nan"):
        softmax(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="num_heads = 4 does not divide the last axis of x"):
        split_heads(rng.standard_normal((2, 6)), 4)


def test_running_mean_values_and_vjp(rng):
    from primal_np.primitives import running_mean, running_mean_backward

    x = rng.standard_normal((2, 5, 3))
    y, _ = running_mean(readonly(x))
    for i in range(5):
        np.testing.assert_allclose(y[:, i], x[:, : i + 1].mean(axis=1), rtol=1e-14)
    check_vjp(running_mean, running_mean_backward, {"x": x}, ["x"]).assert_ok()
    check_vjp(
        lambda x: running_mean(x, axis=0), running_mean_backward, {"x": x[0]}, ["x"]
    ).assert_ok()


@pytest.mark.parametrize("idx", [[0, 2, 2, 5], [5, 0, 2, 0, 5, 5], [3], [4, 3, 2, 1, 0]], ids=str)
def test_sampled_rows_backward_scatter_adds_repeats_in_any_order(rng, idx):
    """dX at a position = Σ of the dF rows sampled there (a loop over the samples), and
    sampled_rows passes a finite-difference VJP check with repeated, unsorted positions."""
    from primal_np.sampling import sampled_rows, sampled_rows_backward

    x = rng.standard_normal((2, 6, 4))
    idx = np.array(idx)
    F, cache = sampled_rows(x, idx, 2)
    dF = rng.standard_normal(F.shape)
    expect = np.zeros_like(x)
    rows = np.swapaxes(dF, -3, -2).reshape(2, idx.size, 4)
    for j, t in enumerate(idx):
        expect[:, t, :] += rows[:, j, :]
    dx = sampled_rows_backward(dF, cache).x
    np.testing.assert_allclose(dx, expect, rtol=1e-15, atol=1e-15)
    check_vjp(lambda x: sampled_rows(x, idx, 2), sampled_rows_backward, {"x": x}, ["x"]).assert_ok()
