"""KSVD: the dual solution, KKT weights and residuals, the objective J and its lemma."""

import numpy as np
import pytest

from primal_np.equivalence import stationary_point
from primal_np.gradcheck import gradcheck
from primal_np.kernels import asymmetry, kernel_matrix, kernel_matrix_backward, softmax_kernel
from primal_np.ksvd import (
    kkt_residuals,
    kkt_weights,
    ksvd,
    ksvd_objective,
    ksvd_objective_grad,
    ksvd_objective_terms,
    primal_weights,
    primal_weights_backward,
    shifted_eigen_residual,
)


def _problem(rng, n, p, s, m=None):
    phi_q = rng.standard_normal((n, p))
    phi_k = rng.standard_normal((m or n, p))
    return (
        phi_q,
        phi_k,
        rng.standard_normal((p, s)),
        rng.standard_normal((p, s)),
        rng.uniform(0.2, 2, s),
    )


def test_objective_matches_the_sums_written_out(rng):
    phi_q, phi_k, W_e, W_r, lam = _problem(rng, 5, 3, 2, m=4)
    J = 0.0
    for i in range(5):
        e = W_e.T @ phi_q[i]
        J += 0.5 * e @ np.diag(lam) @ e
    for j in range(4):
        r = W_r.T @ phi_k[j]
        J += 0.5 * r @ np.diag(lam) @ r
    J -= np.trace(W_e.T @ W_r)
    assert ksvd_objective(phi_q, phi_k, W_e, W_r, lam) == pytest.approx(J, rel=1e-13)


def test_objective_gradient_every_argument(rng):
    phi_q, phi_k, W_e, W_r, lam = _problem(rng, 5, 3, 2, m=4)
    dJ = 0.83  # a random-ish upstream scalar, not 1
    inputs = {"phi_q": phi_q, "phi_k": phi_k, "W_e": W_e, "W_r": W_r, "lam": lam}
    g = ksvd_objective_grad(**inputs, dJ=dJ)
    gradcheck(lambda **kw: dJ * ksvd_objective(**kw), inputs, g._asdict()).assert_ok()


def test_ksvd_solves_the_shifted_eigenvalue_problem(rng):
    K = rng.standard_normal((7, 5))
    H_e, H_r, sigma = ksvd(K, 3)
    np.testing.assert_allclose(K @ H_r, H_e * sigma, atol=1e-13)
    np.testing.assert_allclose(K.T @ H_e, H_r * sigma, atol=1e-13)
    np.testing.assert_allclose(H_e.T @ H_e, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(H_r.T @ H_r, np.eye(3), atol=1e-14)
    # σ are the square roots of the top eigenvalues of KᵀK (an independent route)
    np.testing.assert_allclose(sigma, np.sqrt(np.linalg.eigvalsh(K.T @ K)[::-1][:3]), rtol=1e-12)
    # the documented sign convention
    assert np.all(H_e[np.argmax(np.abs(H_e), axis=0), range(3)] > 0)
    assert shifted_eigen_residual(K, H_e, H_r, sigma) < 1e-15


def test_dense_and_truncated_agree_on_invariants():
    rng = np.random.default_rng(5)
    u, _ = np.linalg.qr(rng.standard_normal((600, 600)))
    v, _ = np.linalg.qr(rng.standard_normal((550, 550)))
    sv = np.geomspace(10, 0.01, 550)  # distinct singular values
    K = (u[:, :550] * sv) @ v.T
    dense = ksvd(K, 5, method="dense")
    trunc = ksvd(K, 5, method="truncated")
    auto = ksvd(K, 5)  # min(N, M) = 550 > 512: truncated
    np.testing.assert_allclose(dense[2], sv[:5], rtol=1e-12)
    np.testing.assert_allclose(trunc[2], sv[:5], rtol=1e-10)
    # with distinct σ and the sign convention, the vectors themselves agree
    np.testing.assert_allclose(trunc[0], dense[0], atol=1e-9)
    np.testing.assert_allclose(trunc[1], dense[1], atol=1e-9)
    np.testing.assert_array_equal(auto[2], trunc[2])
    again = ksvd(K, 5, method="truncated")
    np.testing.assert_array_equal(again[0], trunc[0])  # deterministic


def test_repeated_singular_values_only_invariants_are_fixed():
    rng = np.random.default_rng(6)
    u, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    v, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    sv = np.array([3.0, 3.0, 1.0, 0.5, 0.2])
    K = (u[:, :5] * sv) @ v.T
    H_e, H_r, sigma = ksvd(K, 2)
    # Any rotation inside the σ = 3 subspace is a solution: compare projectors and
    # residuals, never the vectors.
    np.testing.assert_allclose(sigma, [3.0, 3.0], rtol=1e-13)
    np.testing.assert_allclose(H_e @ H_e.T, u[:, :2] @ u[:, :2].T, atol=1e-13)
    np.testing.assert_allclose(H_r @ H_r.T, v[:, :2] @ v[:, :2].T, atol=1e-13)
    assert shifted_eigen_residual(K, H_e, H_r, sigma) < 1e-14


@pytest.mark.parametrize("feature_map", ["cosine", "identity", "poly2"])
@pytest.mark.parametrize("n,d,s", [(6, 3, 1), (6, 3, 3), (9, 4, 2), (5, 5, 5), (12, 2, 2)])
def test_zero_value_lemma_at_every_stationary_point(rng, feature_map, n, d, s):
    x = rng.standard_normal((n, d))
    W_q, W_k = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    sp = stationary_point(x, W_q, W_k, s, feature_map=feature_map)
    s = sp.sigma.shape[0]
    for trial in range(3):
        # any common rescaling (sign included) of each column pair of H_e, H_r
        c = rng.uniform(0.3, 3.0, s) * rng.choice([-1.0, 1.0], s) if trial else np.ones(s)
        H_e, H_r = sp.H_e * c, sp.H_r * c
        W_e, W_r, lam = kkt_weights(sp.phi_q, sp.phi_k, H_e, H_r, sp.sigma)
        terms = ksvd_objective_terms(sp.phi_q, sp.phi_k, W_e, W_r, lam)
        assert abs(terms.J) <= 1e-12 * terms.scale, terms
        # (3), (4) multiply E = Φ_q W_e (rounding ~ε·σ_1 per entry) by λ = 1/σ, so their
        # relative residual is ~ε·σ_1/σ_s: bound it by that condition number, with margin.
        cond = sp.sigma[0] / sp.sigma[-1]
        assert kkt_residuals(sp.phi_q, sp.phi_k, W_e, W_r, lam, H_e, H_r).max < 50 * 2.2e-16 * cond
        # J is stationary in W there: ∂J/∂W_e = Φ_qᵀEΛ − W_r = Φ_qᵀH_e − W_r = 0 (KKT 1)
        g = ksvd_objective_grad(sp.phi_q, sp.phi_k, W_e, W_r, lam)
        # (same λ = 1/σ amplification of rounding as above)
        assert np.abs(g.W_e).max() <= 50 * 2.2e-16 * cond * np.abs(W_r).max()
        assert np.abs(g.W_r).max() <= 50 * 2.2e-16 * cond * np.abs(W_e).max()


def test_lemma_needs_a_common_scale_per_column_pair(rng):
    sp = stationary_point(rng.standard_normal((8, 3)), np.eye(3), rng.standard_normal((3, 3)), 2)
    W_e, W_r, lam = kkt_weights(sp.phi_q, sp.phi_k, sp.H_e * [2.0, 1.0], sp.H_r, sp.sigma)
    terms = ksvd_objective_terms(sp.phi_q, sp.phi_k, W_e, W_r, lam)
    assert abs(terms.J) > 0.05 * terms.scale  # not a solution any more: J ≠ 0


def test_caveat_zero_weights_give_zero_objective_but_not_the_ksvd_solution(rng):
    """J = 0 is necessary, not sufficient.

    W_e = W_r = 0 gives J = 0 (and even ∂J/∂W = 0: the trivial point is stationary for J),
    yet measured against the dual solution H of K the KKT residuals are far from zero.
    """
    sp = stationary_point(
        rng.standard_normal((8, 3)), rng.standard_normal((3, 3)), rng.standard_normal((3, 3)), 2
    )
    zero = np.zeros_like(sp.W_e)
    assert ksvd_objective(sp.phi_q, sp.phi_k, zero, zero, sp.lam) == 0.0
    res = kkt_residuals(sp.phi_q, sp.phi_k, zero, zero, sp.lam, sp.H_e, sp.H_r)
    assert res.w_r == pytest.approx(1.0) and res.w_e == pytest.approx(1.0)
    assert res.e == pytest.approx(1.0) and res.r == pytest.approx(1.0)


def test_primal_weights_and_kernel_backward(rng):
    from primal_np.gradcheck import check_vjp

    inputs = {
        "phi_q": rng.standard_normal((5, 3)),
        "phi_k": rng.standard_normal((4, 3)),
        "H_e": rng.standard_normal((5, 2)),
        "H_r": rng.standard_normal((4, 2)),
    }
    check_vjp(primal_weights, primal_weights_backward, inputs, list(inputs)).assert_ok()
    check_vjp(
        kernel_matrix,
        kernel_matrix_backward,
        {k: inputs[k] for k in ("phi_q", "phi_k")},
        ["phi_q", "phi_k"],
    ).assert_ok()


def test_softmax_kernel_is_asymmetric_and_stochastic(rng):
    q, k = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    P = softmax_kernel(q, k)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-14)
    assert 0.05 < asymmetry(P) < 1.0
    S = rng.standard_normal((4, 4))
    assert asymmetry(S + S.T) == 0.0
    assert asymmetry(S - S.T) == pytest.approx(1.0)


def test_bad_input(rng):
    K = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"s must be >= 1, got 0"):
        ksvd(K, 0)
    with pytest.raises(
        ValueError, match=r"1 <= s <= min\(N, M\) = 3 for K of shape \(4, 3\), got s = 4"
    ):
        ksvd(K, 4)
    K2 = K.copy()
    K2[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"K must be finite, got nan at index \(1, 1\)"):
        ksvd(K2, 1)
    with pytest.raises(ValueError, match="method must be"):
        ksvd(K, 1, method="lanczos")
    with pytest.raises(ValueError, match=r"method='truncated' needs s < min\(N, M\) = 3"):
        ksvd(K, 3, method="truncated")
    with pytest.raises(ValueError, match="every singular value must be > 0"):
        kkt_weights(
            np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), np.array([1.0, 0.0])
        )
    with pytest.raises(ValueError, match=r"lam \(the diagonal of Λ\) must have shape \(2,\)"):
        ksvd_objective(
            np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 2)), np.ones((2, 2)), np.ones(3)
        )
    with pytest.raises(ValueError, match="square"):
        asymmetry(K)
