"""Golden case ``ksvd_stationary``: explicit features, K, its SVD, the KKT weights and J."""

from __future__ import annotations

import numpy as np

from ..feature_maps import poly2_features
from ..kernels import kernel_matrix
from ..ksvd import kkt_weights, ksvd, ksvd_objective, ksvd_objective_grad
from ..scores import primal_scores, primal_scores_backward
from . import GoldenCase, register_case

_OBJECTIVE = (
    "cotangent.J * output.J + sum(cotangent.escore * output.escore) + "
    "sum(cotangent.rscore * output.rscore), as a function of input.phi_q, input.phi_k and "
    "param.W_e, param.W_r, param.lam (the KKT weights held as parameters); grads are its gradients"
)


def _run(arrays: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    phi_q, phi_k = (arrays[f"input.{n}"].astype(dtype) for n in ("phi_q", "phi_k"))
    W_e, W_r, lam = (arrays[f"param.{n}"].astype(dtype) for n in ("W_e", "W_r", "lam"))
    s = W_e.shape[1]
    K, _ = kernel_matrix(phi_q, phi_k)
    H_e, H_r, sigma = ksvd(K, s, method="dense")
    (E, R), cache = primal_scores(phi_q, phi_k, W_e, W_r)
    cJ = float(arrays["cotangent.J"])
    dq, dk, dWe, dWr = primal_scores_backward(
        (arrays["cotangent.escore"].astype(dtype), arrays["cotangent.rscore"].astype(dtype)), cache
    )
    g = ksvd_objective_grad(phi_q, phi_k, W_e, W_r, lam, dJ=cJ)
    J = ksvd_objective(phi_q, phi_k, W_e, W_r, lam)
    return {
        "output.K": K,
        "output.H_e": H_e,
        "output.H_r": H_r,
        "output.sigma": sigma,
        "output.J": np.asarray(J, dtype=dtype),
        "output.escore": E,
        "output.rscore": R,
        "grad.phi_q": dq + g.phi_q,
        "grad.phi_k": dk + g.phi_k,
        "grad.W_e": dWe + g.W_e,
        "grad.W_r": dWr + g.W_r,
        "grad.lam": g.lam,
    }


@register_case("ksvd_stationary")
def ksvd_stationary_case() -> GoldenCase:
    seed = 7
    rng = np.random.default_rng(seed)
    n, d, s = 8, 2, 3
    # explicit degree-2 features of two different linear views of the same points: an
    # asymmetric K = Φ_q Φ_kᵀ of rank ≤ p = 6, whose top singular values are distinct.
    x = rng.standard_normal((n, d))
    phi_q, _ = poly2_features(x @ rng.standard_normal((d, d)).T)
    phi_k, _ = poly2_features(x @ rng.standard_normal((d, d)).T)
    K, _ = kernel_matrix(phi_q, phi_k)
    H_e, H_r, sigma = ksvd(K, s, method="dense")
    W_e, W_r, lam = kkt_weights(phi_q, phi_k, H_e, H_r, sigma)
    arrays = {
        "input.phi_q": phi_q,
        "input.phi_k": phi_k,
        "param.W_e": W_e,
        "param.W_r": W_r,
        "param.lam": lam,
        "cotangent.J": np.asarray(rng.standard_normal()),
        "cotangent.escore": rng.standard_normal((n, s)),
        "cotangent.rscore": rng.standard_normal((n, s)),
    }
    arrays.update(_run(arrays, np.dtype(np.float64)))
    config = {
        "s": s,
        "feature_map": "poly2 (c = 1) of x W_qᵀ and x W_kᵀ: <φ(a), φ(b)> = (aᵀb + 1)²",
        "svd": "top-s singular triplets of K = Φ_q Φ_kᵀ, σ descending; the largest-|entry| of each H_e column is positive",
        "kkt_weights": "param.W_e = Φ_kᵀ H_r, param.W_r = Φ_qᵀ H_e, param.lam = 1/σ (Λ = Σ⁻¹)",
        "objective_J": "½ Σ_i e_iᵀΛe_i + ½ Σ_j r_jᵀΛr_j − Tr(W_eᵀW_r); output.J ≈ 0 (the zero-value lemma)",
        "expected_identities": "output.escore = H_e Σ = K H_r; output.rscore = H_r Σ = Kᵀ H_e; grad.W_e, grad.W_r carry no J part (∂J/∂W = 0 at stationarity)",
        "compare": "output.J against 0 with an absolute bound; H_e, H_r only up to the documented sign convention",
    }
    return GoldenCase(
        "ksvd_stationary", "ksvd", config, _OBJECTIVE, arrays, recompute=_run, seed=seed
    )
