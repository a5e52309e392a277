"""The ksvd_stationary golden case, checked against independent statements."""

import numpy as np

from primal_np.golden import build_case
from primal_np.gradcheck import gradcheck


def test_ksvd_stationary_case_is_what_it_says():
    a = build_case("ksvd_stationary").arrays
    phi_q, phi_k = a["input.phi_q"], a["input.phi_k"]
    W_e, W_r, lam = a["param.W_e"], a["param.W_r"], a["param.lam"]
    K = phi_q @ phi_k.T
    np.testing.assert_allclose(a["output.K"], K, rtol=1e-14)
    sv = np.linalg.svd(K, compute_uv=False)
    np.testing.assert_allclose(a["output.sigma"], sv[:3], rtol=1e-12)
    assert sv[0] > sv[1] * 1.01 and sv[1] > sv[2] * 1.01  # distinct: vectors fixed up to sign
    H_e, H_r, sig = a["output.H_e"], a["output.H_r"], a["output.sigma"]
    np.testing.assert_allclose(K @ H_r, H_e * sig, atol=1e-12)
    np.testing.assert_allclose(W_e, phi_k.T @ H_r, rtol=1e-13)
    np.testing.assert_allclose(W_r, phi_q.T @ H_e, rtol=1e-13)
    np.testing.assert_allclose(lam, 1 / sig, rtol=1e-15)
    E, R = phi_q @ W_e, phi_k @ W_r
    np.testing.assert_allclose(a["output.escore"], E, rtol=1e-13)
    np.testing.assert_allclose(E, H_e * sig, atol=1e-12)
    J = 0.5 * np.sum(E**2 * lam) + 0.5 * np.sum(R**2 * lam) - np.trace(W_e.T @ W_r)
    assert abs(a["output.J"]) < 1e-12 * np.trace(W_e.T @ W_r) and abs(J) < 1e-12 * np.trace(
        W_e.T @ W_r
    )

    # the stored gradients are those of the stated objective (finite differences)
    cJ, ce, cr = a["cotangent.J"], a["cotangent.escore"], a["cotangent.rscore"]

    def objective(phi_q, phi_k, W_e, W_r, lam):
        E, R = phi_q @ W_e, phi_k @ W_r
        J = 0.5 * np.sum(E**2 * lam) + 0.5 * np.sum(R**2 * lam) - np.sum(W_e * W_r)
        return float(cJ * J + np.sum(ce * E) + np.sum(cr * R))

    inputs = {"phi_q": phi_q, "phi_k": phi_k, "W_e": W_e, "W_r": W_r, "lam": lam}
    grads = {n: a[f"grad.{n}"] for n in inputs}
    gradcheck(objective, inputs, grads, atol=1e-8).assert_ok()
