"""Feature maps: exact kernel identities, gradients, registry, bad input."""

import numpy as np
import pytest
from helpers import readonly

from primal_np.feature_maps import (
    FEATURE_MAPS,
    check_feature_map,
    cosine_normalize,
    cosine_normalize_backward,
    draw_random_features,
    get_feature_map,
    poly2_dim,
    poly2_features,
    positive_random_features,
    register_feature_map,
)


@pytest.mark.parametrize("name", ["cosine", "identity", "poly2", "positive_random"])
@pytest.mark.parametrize("d,n", [(1, 1), (3, 4), (5, 2)])
def test_registered_maps_pass_gradcheck(name, d, n):
    check_feature_map(name, d=d, n=n, seed=d + n).assert_ok()


def test_cosine_is_x_over_norm_and_handles_zero_rows(rng):
    x = rng.standard_normal((4, 3))
    x[2] = 0.0
    y, cache = cosine_normalize(readonly(x))
    for i in (0, 1, 3):
        np.testing.assert_allclose(y[i], x[i] / np.sqrt(np.sum(x[i] ** 2)), rtol=1e-15)
    assert np.all(y[2] == 0.0)
    dy = rng.standard_normal((4, 3))
    dx = cosine_normalize_backward(dy, cache).x
    np.testing.assert_allclose(dx[2], dy[2] / 1e-12)  # forward was x / eps there
    # the gradient is orthogonal to y on unclamped rows (normalisation is scale invariant)
    np.testing.assert_allclose(np.sum(dx[[0, 1, 3]] * x[[0, 1, 3]], axis=1), 0.0, atol=1e-14)


@pytest.mark.torch
def test_cosine_matches_torch_normalize(torch, rng):
    x = rng.standard_normal((5, 4))
    x[1] = 1e-14  # clamped row
    dy = rng.standard_normal((5, 4))
    y, cache = cosine_normalize(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.normalize(tx, dim=-1, eps=1e-12)
    (ty * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14, atol=0)
    np.testing.assert_allclose(cosine_normalize_backward(dy, cache).x, tx.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("c", [0.0, 1.0, 2.5])
def test_poly2_kernel_identity(rng, d, c):
    x, z = rng.standard_normal((6, d)), rng.standard_normal((7, d))
    fx, _ = poly2_features(x, c)
    fz, _ = poly2_features(z, c)
    assert fx.shape == (6, poly2_dim(d)) == (6, 1 + d + d * (d + 1) // 2)
    np.testing.assert_allclose(fx @ fz.T, (x @ z.T + c) ** 2, rtol=1e-13, atol=1e-13)


def test_positive_random_features_are_unbiased_for_exp_kernel():
    # Monte Carlo: the mean of m i.i.d. products estimates exp(xᵀz); allow 5 standard errors.
    rng = np.random.default_rng(11)
    x = 0.4 * rng.standard_normal((3, 4))
    z = 0.4 * rng.standard_normal((3, 4))
    m = 200_000
    w = draw_random_features(4, m, seed=3)
    gx, _ = positive_random_features(x, w)
    gz, _ = positive_random_features(z, w)
    assert np.all(gx > 0)
    est = gx @ gz.T  # = (1/m) Σ_l exp(w_lᵀ(x+z) − ‖x‖²/2 − ‖z‖²/2)
    per_sample = m * gx[:, None, :] * gz[None, :, :]
    stderr = per_sample.std(axis=-1) / np.sqrt(m)
    assert np.all(np.abs(est - np.exp(x @ z.T)) < 5 * stderr)


def test_random_features_overflow_is_a_clear_error():
    with pytest.raises(ValueError, match="overflows; rescale x"):
        positive_random_features(np.full((1, 2), 30.0), np.full((4, 2), 100.0))


def test_registry_add_check_and_errors(rng):
    def cube(x):
        return x**3, x

    def cube_backward(dy, x):
        return 3 * x**2 * dy

    name = "cube-test-map"
    try:
        register_feature_map(name, cube, cube_backward, description="x³ elementwise")
        assert check_feature_map(name).ok
        with pytest.raises(ValueError, match="already registered"):
            register_feature_map(name, cube, cube_backward)
        # a wrong backward is caught by the registry's check
        register_feature_map(name, cube, lambda dy, x: 2 * x**2 * dy, overwrite=True)
        assert not check_feature_map(name).ok
    finally:
        FEATURE_MAPS.pop(name, None)
    with pytest.raises(
        ValueError,
        match=r"name must be one of the registered feature maps \(cosine, .*\), got 'nope'",
    ):
        get_feature_map("nope")


def test_bad_input():
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        cosine_normalize(np.ones((2, 2), dtype=int))
    with pytest.raises(ValueError, match="c must be >= 0.0"):
        poly2_features(np.ones((2, 2)), -1.0)
    with pytest.raises(ValueError, match=r"w has shape \(4, 3\) \(m, d\) but x has d = 2"):
        positive_random_features(np.ones((2, 2)), np.ones((4, 3)))


def test_float32_stays_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for name in ("cosine", "identity", "poly2"):
        assert get_feature_map(name).forward(x)[0].dtype == np.float32
    assert (
        positive_random_features(x, draw_random_features(4, 8, dtype=np.float32))[0].dtype
        == np.float32
    )
