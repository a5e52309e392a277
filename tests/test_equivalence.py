"""Primal–dual equivalence: equal scores and equal gradients w.r.t. X, W_q, W_k at the KKT point."""

import numpy as np
import pytest

from primal_np.compare import rel_error
from primal_np.equivalence import scores_from_x, scores_from_x_backward, stationary_point
from primal_np.feature_maps import draw_random_features
from primal_np.gradcheck import check_vjp
from primal_np.kernels import random_feature_softmax_kernel, softmax_kernel
from primal_np.scores import (
    dual_scores,
    dual_scores_backward,
    primal_scores,
    primal_scores_backward,
)

CASES = [  # (N, d, s) with p = d for the cosine map; s = 1 and s = p included
    (6, 3, 1),
    (6, 3, 3),
    (10, 4, 2),
    (5, 5, 5),
    (16, 6, 1),
]


@pytest.mark.parametrize("feature_map", ["cosine", "poly2"])
@pytest.mark.parametrize("n,d,s", CASES)
def test_primal_equals_dual_values_and_gradients(rng, feature_map, n, d, s):
    x = rng.standard_normal((n, d))
    W_q, W_k = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    sp = stationary_point(x, W_q, W_k, s, feature_map=feature_map)
    (E_p, R_p), c_p = scores_from_x(
        x, W_q, W_k, sp.H_e, sp.H_r, form="primal", feature_map=feature_map
    )
    (E_d, R_d), c_d = scores_from_x(
        x, W_q, W_k, sp.H_e, sp.H_r, form="dual", feature_map=feature_map
    )
    # both equal H Σ (the eigenvalue problem), an independent closed form
    assert rel_error(E_p, sp.H_e * sp.sigma) <= 1e-10
    assert rel_error(R_p, sp.H_r * sp.sigma) <= 1e-10
    assert rel_error(E_p, E_d) <= 1e-10 and rel_error(R_p, R_d) <= 1e-10
    dE, dR = rng.standard_normal(E_p.shape), rng.standard_normal(R_p.shape)
    for g_p, g_d in zip(
        scores_from_x_backward((dE, dR), c_p), scores_from_x_backward((dE, dR), c_d), strict=True
    ):
        assert rel_error(g_p, g_d) <= 1e-10


@pytest.mark.parametrize("form", ["primal", "dual"])
def test_each_form_passes_finite_differences(rng, form):
    x = rng.standard_normal((5, 3))
    W_q, W_k = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    sp = stationary_point(x, W_q, W_k, 2)
    check_vjp(
        lambda x, W_q, W_k: scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form=form),
        scores_from_x_backward,
        {"x": x, "W_q": W_q, "W_k": W_k},
        ["x", "W_q", "W_k"],
    ).assert_ok()


def test_score_ops_backward(rng):
    inputs = {
        "phi_q": rng.standard_normal((2, 5, 3)),
        "phi_k": rng.standard_normal((2, 4, 3)),
        "W_e": rng.standard_normal((3, 2)),  # broadcast over the leading axis
        "W_r": rng.standard_normal((3, 2)),
    }
    check_vjp(primal_scores, primal_scores_backward, inputs, list(inputs)).assert_ok()
    dual_in = {
        "K": rng.standard_normal((5, 4)),
        "H_e": rng.standard_normal((5, 2)),
        "H_r": rng.standard_normal((4, 2)),
    }
    check_vjp(dual_scores, dual_scores_backward, dual_in, list(dual_in)).assert_ok()


def test_primal_scores_bad_shapes():
    with pytest.raises(ValueError, match=r"primal_scores needs .* W_e \(3, 2\)"):
        primal_scores(np.ones((4, 2)), np.ones((4, 2)), np.ones((3, 2)), np.ones((3, 2)))


def test_random_feature_approximation_improves_with_more_features():
    """Positive random features give a primal approximation of softmax attention whose
    error shrinks like 1/sqrt(m) (a factor 4 per 16× more features). The estimator is
    heavy-tailed, so the error is the root-mean-square over 16 seeded draws, and the
    bounds are generous: a factor 2 per step, and 5 % relative error at m = 4096."""
    rng = np.random.default_rng(7)
    n, d = 12, 4
    q, k = 0.5 * rng.standard_normal((n, d)), 0.5 * rng.standard_normal((n, d))
    exact = softmax_kernel(q, k)
    rmse = {}
    for m in (16, 256, 4096):
        sq = [
            np.linalg.norm(
                random_feature_softmax_kernel(q, k, draw_random_features(d, m, seed)) - exact
            )
            ** 2
            for seed in range(16)
        ]
        rmse[m] = float(np.sqrt(np.mean(sq)) / np.linalg.norm(exact))
    assert rmse[256] < rmse[16] / 2 and rmse[4096] < rmse[256] / 2, rmse
    assert rmse[4096] < 0.05, rmse
