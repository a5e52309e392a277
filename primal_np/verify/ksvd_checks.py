"""verify rows for the KSVD core: feature maps, primal–dual equivalence, KKT, J = 0."""

from __future__ import annotations

import numpy as np

from ..compare import rel_error
from ..equivalence import scores_from_x, scores_from_x_backward, stationary_point
from ..feature_maps import FEATURE_MAPS, check_feature_map
from ..gradcheck import gradcheck
from ..ksvd import (
    kkt_residuals,
    kkt_weights,
    ksvd,
    ksvd_objective,
    ksvd_objective_grad,
    ksvd_objective_terms,
    shifted_eigen_residual,
)
from . import register_check, result
from .dual_checks import FD_RTOL


@register_check("feature maps")
def feature_map_vjps():
    errs = {name: check_feature_map(name, d=3, n=4, seed=1).max_rel_err for name in FEATURE_MAPS}
    worst = max(errs, key=errs.get)
    return result(
        f"feature maps: VJP vs finite differences ({len(errs)} maps; worst {worst})",
        errs[worst],
        FD_RTOL,
    )


def _problem(seed: int, n: int = 10, d: int = 4, s: int = 3, feature_map: str = "cosine"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    W_q, W_k = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    return rng, x, W_q, W_k, stationary_point(x, W_q, W_k, s, feature_map=feature_map)


@register_check("ksvd")
def primal_dual_equivalence():
    val_err, grad_err = 0.0, 0.0
    for seed, (n, d, s, fmap) in enumerate(
        [(10, 4, 1, "cosine"), (10, 4, 4, "cosine"), (8, 2, 3, "poly2")]
    ):
        rng, x, W_q, W_k, sp = _problem(seed, n, d, s, fmap)
        (Ep, Rp), cp = scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="primal", feature_map=fmap)
        (Ed, Rd), cd = scores_from_x(x, W_q, W_k, sp.H_e, sp.H_r, form="dual", feature_map=fmap)
        val_err = max(
            val_err, rel_error(Ep, Ed), rel_error(Rp, Rd), rel_error(Ep, sp.H_e * sp.sigma)
        )
        cot = (rng.standard_normal(Ep.shape), rng.standard_normal(Rp.shape))
        for gp, gd in zip(
            scores_from_x_backward(cot, cp), scores_from_x_backward(cot, cd), strict=True
        ):
            grad_err = max(grad_err, rel_error(gp, gd))
    return [
        result("primal = dual scores at the KKT point (E, R; s = 1, s = p)", val_err, 1e-10),
        result("primal = dual gradients w.r.t. X, W_q, W_k at the KKT point", grad_err, 1e-10),
    ]


@register_check("ksvd")
def kkt_at_svd_solution():
    _, x, W_q, W_k, sp = _problem(3)
    res = kkt_residuals(sp.phi_q, sp.phi_k, sp.W_e, sp.W_r, sp.lam, sp.H_e, sp.H_r)
    eig = shifted_eigen_residual(sp.K, sp.H_e, sp.H_r, sp.sigma)
    # (3), (4) amplify rounding by σ_1/σ_s (λ = 1/σ); this problem's condition number is modest.
    cond = float(sp.sigma[0] / sp.sigma[-1])
    return [
        result(
            "KKT residuals (1)–(6) at the SVD solution (max)",
            res.max,
            50 * 2.2e-16 * max(cond, 1.0),
        ),
        result("shifted eigenvalue problem K H_r = H_e Σ, Kᵀ H_e = H_r Σ", eig, 1e-13),
    ]


@register_check("ksvd")
def zero_value_objective():
    worst = 0.0
    rng = np.random.default_rng(4)
    for seed, s in enumerate((1, 2, 4)):
        _, _, _, _, sp = _problem(10 + seed, n=9, d=4, s=s)
        c = rng.uniform(0.3, 3.0, s) * rng.choice([-1.0, 1.0], s)  # any common rescaling per pair
        W_e, W_r, lam = kkt_weights(sp.phi_q, sp.phi_k, sp.H_e * c, sp.H_r * c, sp.sigma)
        t = ksvd_objective_terms(sp.phi_q, sp.phi_k, W_e, W_r, lam)
        worst = max(worst, abs(t.J) / t.scale)
    _, _, _, _, sp = _problem(20)
    zero = np.zeros_like(sp.W_e)
    j0 = ksvd_objective(sp.phi_q, sp.phi_k, zero, zero, sp.lam)
    r0 = kkt_residuals(sp.phi_q, sp.phi_k, zero, zero, sp.lam, sp.H_e, sp.H_r)
    return [
        result(
            "J = 0 at stationary points (|J| / size of its terms; s = 1, 2, 4, rescaled)",
            worst,
            1e-12,
        ),
        result(
            "caveat: W = 0 gives J = 0 too, yet KKT residual (1) = 1 (|J| + |1 − res|)",
            abs(j0) + abs(1.0 - r0.w_r),
            1e-12,
            "J = 0 is necessary, not sufficient",
        ),
    ]


@register_check("ksvd")
def objective_gradient():
    rng = np.random.default_rng(5)
    inputs = {
        "phi_q": rng.standard_normal((6, 3)),
        "phi_k": rng.standard_normal((5, 3)),
        "W_e": rng.standard_normal((3, 2)),
        "W_r": rng.standard_normal((3, 2)),
        "lam": rng.uniform(0.1, 2.0, 2),
    }
    dJ = float(rng.standard_normal())
    g = ksvd_objective_grad(**inputs, dJ=dJ)._asdict()
    rep = gradcheck(lambda **kw: dJ * ksvd_objective(**kw), inputs, g, rtol=FD_RTOL)
    return result(
        "ksvd_objective: gradient w.r.t. Φ_q, Φ_k, W_e, W_r, λ vs finite differences",
        rep.max_rel_err,
        FD_RTOL,
    )


@register_check("ksvd")
def ksvd_methods_agree():
    rng = np.random.default_rng(6)
    u, _ = np.linalg.qr(rng.standard_normal((600, 40)))
    v, _ = np.linalg.qr(rng.standard_normal((520, 40)))
    sv = np.geomspace(5.0, 0.05, 40)
    K = (u * sv) @ v.T
    err = max(rel_error(ksvd(K, 4, method=m)[2], sv[:4]) for m in ("dense", "truncated"))
    return result("ksvd: dense and truncated SVD give the known σ (600×520, s = 4)", err, 1e-10)
