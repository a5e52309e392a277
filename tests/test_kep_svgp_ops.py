"""KEP-SVGP's new pairs: finite differences with random upstream gradients, the closed forms
they state (built here with explicit loops), the covariance each sample layout really has,
and bad input."""

import itertools

import numpy as np
import pytest
from helpers import readonly

from primal_np.gradcheck import check_vjp, gradcheck
from primal_np.kep_svgp import (
    cholesky_factor,
    cholesky_factor_backward,
    eigen_features,
    eigen_features_backward,
    kep_svgp_kl,
    kep_svgp_kl_backward,
    kep_svgp_ksvd_loss,
    kep_svgp_ksvd_loss_backward,
    posterior_mean,
    posterior_mean_backward,
    posterior_sample,
    posterior_sample_backward,
    token_map,
    token_map_backward,
)

B, H, N, S = 2, 2, 3, 3


def _factor_inputs(rng):
    return rng.standard_normal((1, H, S, S)), rng.standard_normal((1, H, S, S, S))


# --------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("concate", [False, True])
def test_eigen_features_vjp(rng, concate):
    inputs = dict(
        escore=rng.standard_normal((B, H, N, S)),
        rscore=rng.standard_normal((B, H, N, S)),
        log_lambda=rng.uniform(-0.5, 0.5, (H, S)),
    )
    check_vjp(
        lambda **kw: eigen_features(**kw, concate=concate),
        eigen_features_backward,
        inputs,
        ["escore", "rscore", "log_lambda"],
    ).assert_ok()


def test_posterior_mean_vjp(rng):
    inputs = dict(v1=rng.standard_normal((B, H, N, S)), m_u=rng.standard_normal((1, H, S, S)))
    check_vjp(posterior_mean, posterior_mean_backward, inputs, ["v1", "m_u"]).assert_ok()


def test_cholesky_factor_vjp(rng):
    log_s, low = _factor_inputs(rng)
    inputs = dict(log_ssqrt=log_s, s_sqrt_low_triangle=low)
    check_vjp(
        cholesky_factor, cholesky_factor_backward, inputs, ["log_ssqrt", "s_sqrt_low_triangle"]
    ).assert_ok()


@pytest.mark.parametrize(
    "layout, tokens", [("authors", N), ("authors", 1), ("per_output", N), ("per_output", 1)]
)
def test_posterior_sample_vjp(rng, layout, tokens):
    last = 1 if layout == "authors" else S
    noise = rng.standard_normal((B, H, tokens, S, last))
    inputs = dict(
        mean=rng.standard_normal((B, H, N, S)),
        v1=rng.standard_normal((B, H, N, S)),
        factor=rng.standard_normal((1, H, S, S, S)),
    )
    check_vjp(
        lambda **kw: posterior_sample(**kw, noise=noise, layout=layout),
        posterior_sample_backward,
        inputs,
        ["mean", "v1", "factor"],
    ).assert_ok()


def test_token_map_vjp(rng):
    inputs = dict(
        x=rng.standard_normal((B, H, 2 * N, 4)),
        weight=rng.standard_normal((N, 2 * N)),
        bias=rng.standard_normal(N),
    )
    check_vjp(token_map, token_map_backward, inputs, ["x", "weight", "bias"]).assert_ok()


@pytest.mark.parametrize("layout", ["authors", "per_output"])
def test_kl_gradient(rng, layout):
    inputs = dict(
        log_lambda=rng.uniform(-0.5, 0.5, (H, S)),
        m_u=rng.standard_normal((1, H, S, S)),
        factor=rng.standard_normal((1, H, S, S, S)),
        log_ssqrt=rng.standard_normal((1, H, S, S)),
    )
    dkl = 0.7
    kl, cache = kep_svgp_kl(**inputs, layout=layout)
    g = kep_svgp_kl_backward(dkl, cache)
    gradcheck(
        lambda **kw: dkl * kep_svgp_kl(**kw, layout=layout)[0], inputs, g._asdict()
    ).assert_ok()


def test_ksvd_loss_gradient(rng):
    inputs = dict(
        escore=rng.standard_normal((B, H, N, S)),
        rscore=rng.standard_normal((B, H, N, S)),
        log_lambda=rng.uniform(-0.5, 0.5, (H, S)),
        we=rng.standard_normal((H, 4, S)),
        wr=rng.standard_normal((H, 4, S)),
    )
    _, cache = kep_svgp_ksvd_loss(**inputs)
    g = kep_svgp_ksvd_loss_backward(1.3, cache)
    gradcheck(lambda **kw: 1.3 * kep_svgp_ksvd_loss(**kw)[0], inputs, g._asdict()).assert_ok()


# --------------------------------------------------------------------------- closed forms
def test_eigen_features_is_their_diag_matrix_product(rng):
    E, R = rng.standard_normal((2, B, H, N, S))
    ell = rng.uniform(0, 1, (H, S))
    v_sum, _ = eigen_features(E, R, ell)
    v_cat, _ = eigen_features(E, R, ell, concate=True)
    for b, h in itertools.product(range(B), range(H)):
        lam = np.diag(np.exp(ell[h])) ** 2  # (their diag_embed(exp(ℓ)))**2, element-wise
        np.testing.assert_allclose(v_sum[b, h], (E[b, h] + R[b, h]) @ lam, rtol=1e-14)
        np.testing.assert_allclose(v_cat[b, h], np.vstack([E[b, h], R[b, h]]) @ lam, rtol=1e-14)


def test_cholesky_factor_structure(rng):
    log_s, low = _factor_inputs(rng)
    L, _ = cholesky_factor(log_s, low)
    for h, a in itertools.product(range(H), range(S)):
        for r, c in itertools.product(range(S), range(S)):
            want = np.exp(log_s[0, h, a, r]) if r == c else (low[0, h, a, r, c] if r > c else 0.0)
            assert L[0, h, a, r, c] == want


def _noise_jacobian(v1, L, layout):
    """J[b,h,i] (s outputs × noise entries): the sample's noise term at unit noise vectors."""
    last = 1 if layout == "authors" else S
    zero = np.zeros_like(v1)
    cols = []
    for r, c in itertools.product(range(S), range(last)):
        e = np.zeros((B, H, N, S, last))
        e[..., r, c] = 1.0
        cols.append(posterior_sample(zero, v1, L, e, layout=layout)[0])
    return np.stack(cols, axis=-1)  # (B, H, N, s_out, s·last)


def test_sample_covariance_in_the_authors_layout(rng):
    """Output c of head h has the factor M_c[a, r] = L[h, a, r, c]: Cov(y_c, y_c') =
    v₁ᵀ M_c M_c'ᵀ v₁, one noise vector shared by the outputs, and rank(M_c) = s − c."""
    v1 = rng.standard_normal((B, H, N, S))
    L, _ = cholesky_factor(*_factor_inputs(rng))
    J = _noise_jacobian(v1, L, "authors")
    for b, h, i in itertools.product(range(B), range(H), range(N)):
        M = [np.array([[L[0, h, a, r, c] for r in range(S)] for a in range(S)]) for c in range(S)]
        want = np.array(
            [[v1[b, h, i] @ M[c] @ M[d].T @ v1[b, h, i] for d in range(S)] for c in range(S)]
        )
        np.testing.assert_allclose(J[b, h, i] @ J[b, h, i].T, want, rtol=1e-12, atol=1e-12)
    for h, c in itertools.product(range(H), range(S)):
        M_c = L[0, h, :, :, c]  # rows a, columns r
        assert np.linalg.matrix_rank(M_c) == S - c  # singular S_c = M_c M_cᵀ for c ≥ 1


def test_sample_covariance_per_output(rng):
    """ "per_output": Cov(y_c, y_c') = δ_cc' v₁ᵀ L_c L_cᵀ v₁ with L_c = L[h, c] lower-triangular."""
    v1 = rng.standard_normal((B, H, N, S))
    L, _ = cholesky_factor(*_factor_inputs(rng))
    J = _noise_jacobian(v1, L, "per_output")
    for b, h, i in itertools.product(range(B), range(H), range(N)):
        S_c = [L[0, h, c] @ L[0, h, c].T for c in range(S)]
        want = np.diag([v1[b, h, i] @ S_c[c] @ v1[b, h, i] for c in range(S)])
        np.testing.assert_allclose(J[b, h, i] @ J[b, h, i].T, want, rtol=1e-12, atol=1e-12)


def test_zero_noise_gives_the_mean_and_a_shared_draw_is_a_joint_sample(rng):
    v1 = rng.standard_normal((B, H, N, S))
    m_u = rng.standard_normal((1, H, S, S))
    L, _ = cholesky_factor(*_factor_inputs(rng))
    mean, _ = posterior_mean(v1, m_u)
    y0, _ = posterior_sample(mean, v1, L, np.zeros((B, H, N, S, 1)))
    np.testing.assert_array_equal(y0, mean)
    eps = rng.standard_normal((B, H, 1, S, 1))
    y1, _ = posterior_sample(mean, v1, L, eps)
    u = m_u[0][None] + np.einsum("harc,bhr->bhac", L[0], eps[:, :, 0, :, 0])  # one u per (b, h)
    np.testing.assert_allclose(y1, np.einsum("bhia,bhac->bhic", v1, u), rtol=1e-12)
    y2, _ = posterior_sample(mean, v1, L, np.broadcast_to(eps, (B, H, N, S, 1)))
    np.testing.assert_allclose(y1, y2, rtol=1e-14)


def _gauss_kl(m, S_cov, K):
    """KL(N(m, S) ‖ N(0, K)) from slogdet and solve (closed form of two Gaussians)."""
    s = len(m)
    Ki = np.linalg.inv(K)
    return 0.5 * (
        np.trace(Ki @ S_cov)
        + m @ Ki @ m
        - s
        + np.linalg.slogdet(K)[1]
        - np.linalg.slogdet(S_cov)[1]
    )


def test_kl_per_output_is_the_exact_gaussian_kl(rng):
    ell = rng.uniform(0, 1, (H, S))
    m_u = rng.standard_normal((1, H, S, S))
    log_s, low = _factor_inputs(rng)
    L, _ = cholesky_factor(log_s, low)
    kl, _ = kep_svgp_kl(ell, m_u, L, log_s, layout="per_output")
    want = sum(
        _gauss_kl(m_u[0, h, :, c], L[0, h, c] @ L[0, h, c].T, np.diag(np.exp(-4 * ell[h])))
        for h, c in itertools.product(range(H), range(S))
    )
    assert abs(kl - want) <= 1e-12 * abs(want)


def test_kl_authors_terms(rng):
    """Their value: the trace and mean terms of KL(N(m_c, M_c M_cᵀ) ‖ N(0, Λ⁻²)) for the
    factor their sample uses, but −Σ log_ssqrt in place of −½ log|M_c M_cᵀ| (= +∞ for c ≥ 1)."""
    ell = rng.uniform(0, 1, (H, S))
    m_u = rng.standard_normal((1, H, S, S))
    log_s, low = _factor_inputs(rng)
    L, _ = cholesky_factor(log_s, low)
    kl, _ = kep_svgp_kl(ell, m_u, L, log_s)
    want = 0.0
    for h, c in itertools.product(range(H), range(S)):
        Ki = np.diag(np.exp(4 * ell[h]))
        M_c = L[0, h, :, :, c]
        m = m_u[0, h, :, c]
        want += 0.5 * (np.trace(Ki @ M_c @ M_c.T) + m @ Ki @ m - S - np.sum(4 * ell[h]))
    want -= np.sum(log_s)
    assert abs(kl - want) <= 1e-12 * abs(want)


def test_ksvd_loss_against_loops(rng):
    E, R = rng.standard_normal((2, B, H, N, S))
    ell = rng.uniform(0, 1, (H, S))
    we, wr = rng.standard_normal((2, H, 4, S))
    a = np.mean([0.5 * np.sum((np.exp(ell[h]) * E[b, h, i]) ** 2)
                 for b in range(B) for h in range(H) for i in range(N)])  # fmt: skip
    c = np.mean([0.5 * np.sum((np.exp(ell[h]) * R[b, h, i]) ** 2)
                 for b in range(B) for h in range(H) for i in range(N)])  # fmt: skip
    T = np.mean([np.trace(we[h].T @ wr[h]) for h in range(H)])
    loss, _ = kep_svgp_ksvd_loss(E, R, ell, we, wr)
    assert abs(loss - (a + c - T) ** 2) <= 1e-12 * (a + c - T) ** 2


def test_inputs_are_not_written(rng):
    v1, mean = readonly(rng.standard_normal((B, H, N, S)), rng.standard_normal((B, H, N, S)))
    L = readonly(rng.standard_normal((1, H, S, S, S)))
    eps = readonly(rng.standard_normal((B, H, N, S, 1)))
    y, cache = posterior_sample(mean, v1, L, eps)
    posterior_sample_backward(readonly(rng.standard_normal(y.shape)), cache)
    log_s, low = readonly(*_factor_inputs(rng))
    Lf, c2 = cholesky_factor(log_s, low)
    cholesky_factor_backward(readonly(rng.standard_normal(Lf.shape)), c2)


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_named(rng):
    v1 = rng.standard_normal((B, H, N, S))
    L = rng.standard_normal((1, H, S, S, S))
    with pytest.raises(ValueError, match="noise has shape"):
        posterior_sample(v1, v1, L, np.zeros((B, H, N, S, S)))  # per_output shape, authors layout
    with pytest.raises(ValueError, match="noise has shape"):
        posterior_sample(v1, v1, L, np.zeros((B, H, 2, S, 1)))
    with pytest.raises(ValueError, match="layout"):
        posterior_sample(v1, v1, L, np.zeros((B, H, N, S, 1)), layout="cholesky")
    with pytest.raises(ValueError, match="factor"):
        posterior_sample(v1, v1, L[:, :, :2], np.zeros((B, H, N, S, 1)))
    with pytest.raises(ValueError, match="noise must be finite"):
        posterior_sample(v1, v1, L, np.full((B, H, N, S, 1), np.nan))
    with pytest.raises(ValueError, match="m_u"):
        posterior_mean(v1, rng.standard_normal((H, S, S, 1)))
    with pytest.raises(ValueError, match="log_lambda"):
        eigen_features(v1, v1, np.zeros((S, H)))
    with pytest.raises(TypeError, match="escore"):
        eigen_features(v1.astype(int), v1, np.zeros((H, S)))
    with pytest.raises(ValueError, match="cholesky_factor needs"):
        cholesky_factor(np.zeros((1, H, S)), np.zeros((1, H, S, S, S)))
    with pytest.raises(ValueError, match="kep_svgp_kl needs"):
        kep_svgp_kl(np.zeros((H, S)), np.zeros((1, H, S, S)), L, np.zeros((1, H, S, 2)))
    _, cache = posterior_mean(v1, rng.standard_normal((1, H, S, S)))
    with pytest.raises(ValueError, match="dmean has shape"):
        posterior_mean_backward(np.zeros((B, H, N, 1)), cache)
