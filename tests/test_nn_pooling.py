"""Mean and CLS pooling: gradients, loop references, empty sequences and bad input."""

import numpy as np
import pytest
from helpers import readonly

from primal_np import check_vjp
from primal_np.nn import cls_pool, cls_pool_backward, mean_pool, mean_pool_backward


@pytest.mark.parametrize("shape", [(3, 4, 2), (1, 1, 1), (2, 5, 1), (2, 2, 3, 2)])
@pytest.mark.parametrize("masked", [True, False])
def test_mean_pool_vjp(rng, shape, masked):
    mask = None
    if masked:
        mask = rng.random(shape[:-1]) > 0.4
        mask.reshape(-1, shape[-2])[0] = False  # one sequence with no real token
    check_vjp(
        lambda x: mean_pool(x, mask), mean_pool_backward, {"x": rng.standard_normal(shape)}, ["x"]
    ).assert_ok()


def test_mean_pool_matches_loops_and_empty_row_is_zero(rng):
    x = rng.standard_normal((3, 4, 2))
    mask = np.array([[True, False, True, True], [False] * 4, [False, False, False, True]])
    y, cache = mean_pool(*readonly(x, mask))
    for b in range(3):
        real = [x[b, n] for n in range(4) if mask[b, n]]
        expect = sum(real) / len(real) if real else np.zeros(2)
        np.testing.assert_allclose(y[b], expect, rtol=1e-15, atol=0)
    assert np.all(y[1] == 0.0)
    dx = mean_pool_backward(rng.standard_normal((3, 2)), cache).x
    assert np.all(np.isfinite(dx)) and not dx[1].any() and not dx[~mask].any()


def test_mean_pool_without_mask_is_the_mean(rng):
    x = rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(mean_pool(x)[0], x.mean(axis=1), rtol=1e-14)


def test_cls_pool_vjp_and_definition(rng):
    for shape in [(3, 4, 2), (1, 1, 1), (2, 2, 3, 2)]:
        check_vjp(cls_pool, cls_pool_backward, {"x": rng.standard_normal(shape)}, ["x"]).assert_ok()
    x = readonly(rng.standard_normal((2, 3, 4)))
    y, cache = cls_pool(x)
    np.testing.assert_array_equal(y, x[:, 0])
    y[...] = 0.0  # a copy: the read-only input is not reachable through it
    dy = rng.standard_normal((2, 4))
    dx = cls_pool_backward(dy, cache).x
    np.testing.assert_array_equal(dx[:, 0], dy)
    assert not dx[:, 1:].any()


def test_pooling_float32(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    mask = np.array([[True, True, False], [False, False, False]])
    for y, cache, bwd in [
        (*mean_pool(x, mask), mean_pool_backward),
        (*cls_pool(x), cls_pool_backward),
    ]:
        assert y.dtype == np.float32
        assert bwd(rng.standard_normal((2, 4)).astype(np.float32), cache).x.dtype == np.float32


def test_pooling_bad_input(rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(
        ValueError, match=r"mask has shape \(2, 4\), expected \(\.\.\., N\) = \(2, 3\)"
    ):
        mean_pool(x, np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        mean_pool(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions, got shape \(4,\)"):
        cls_pool(np.ones(4))
    with pytest.raises(ValueError, match=r"x must have at least one token, got shape \(2, 0, 4\)"):
        cls_pool(np.ones((2, 0, 4)))
