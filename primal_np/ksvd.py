"""Asymmetric kernel SVD (KSVD): dual solution, KKT primal weights, residuals, objective J.

docs/theory.md §2–§3. For one head and one sequence, Φ_q ∈ R^{N×p}, Φ_k ∈ R^{M×p}, s ≤ p:

    J = ½ Σ_i e_iᵀ Λ e_i + ½ Σ_j r_jᵀ Λ r_j − Tr(W_eᵀ W_r),
        e_i = W_eᵀ φ_q(x_i),  r_j = W_rᵀ φ_k(x_j),  Λ = diag(λ_1..λ_s)

KKT conditions of its Lagrangian (multipliers H_e ∈ R^{N×s}, H_r ∈ R^{M×s}, as rows):

    (1) W_r = Φ_qᵀ H_e     (2) W_e = Φ_kᵀ H_r     (3) E Λ = H_e
    (4) R Λ = H_r          (5) E = Φ_q W_e        (6) R = Φ_k W_r

Eliminating W, E, R gives the shifted eigenvalue problem

    K H_r = H_e Σ,   Kᵀ H_e = H_r Σ,   Σ = Λ⁻¹,   K = Φ_q Φ_kᵀ,

solved by s singular triplets of K (``ksvd``). Lemma (§3): at any such solution J = 0.

Freedom in the solution (documented, and why tests compare invariants only): each
column pair (h_e,l, h_r,l) may be scaled by a common factor (and flipped in sign);
when singular values repeat, any rotation within their singular subspace is a
solution too. ``ksvd`` fixes the sign so that the largest-magnitude entry of each
column of H_e is positive; it cannot fix rotations within repeated singular values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse.linalg

from ._checks import (
    cache_of,
    check_finite,
    choice,
    float_array,
    positive_int,
    real_number,
    result_dtype,
    upstream,
)
from .compare import rel_residual

__all__ = [
    "ksvd",
    "PrimalWeightsCache",
    "primal_weights",
    "primal_weights_backward",
    "kkt_weights",
    "KKTResiduals",
    "kkt_residuals",
    "shifted_eigen_residual",
    "ObjectiveTerms",
    "ksvd_objective",
    "ksvd_objective_terms",
    "ObjectiveGrads",
    "ksvd_objective_grad",
]

DENSE_MAX = 512  # method="auto": dense SVD up to min(N, M) = 512, truncated above


def ksvd(
    K: np.ndarray, s: int, *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-s singular triplets of the asymmetric N×M kernel matrix K.

    Returns (H_e (N, s), H_r (M, s), sigma (s,)) with sigma descending and
    K H_r = H_e diag(σ), Kᵀ H_e = H_r diag(σ), unit-norm columns; the largest-magnitude
    entry of each column of H_e is made positive (the sign freedom is fixed, rotations
    within repeated singular values are not).

    method: "dense" (``np.linalg.svd``), "truncated" (SciPy ``svds``, ARPACK with a fixed
    start vector, so deterministic), or "auto" — dense when min(N, M) ≤ 512 or
    s ≥ min(N, M) − 1 (where ``svds`` cannot be used), truncated otherwise.
    """
    K = float_array(K, "K", ndim=2)
    check_finite(K, "K")
    n, m = K.shape
    s = positive_int(s, "s")
    if s > min(n, m):
        raise ValueError(
            f"s must satisfy 1 <= s <= min(N, M) = {min(n, m)} for K of shape {K.shape}, got s = {s}"
        )
    choice(method, "method", ("auto", "dense", "truncated"))
    if method == "auto":
        method = "dense" if (min(n, m) <= DENSE_MAX or s >= min(n, m) - 1) else "truncated"
    if method == "truncated":
        if s >= min(n, m):
            raise ValueError(f"method='truncated' needs s < min(N, M) = {min(n, m)}, got s = {s}")
        v0 = np.full(min(n, m), 1.0 / np.sqrt(min(n, m)))
        u, sig, vt = scipy.sparse.linalg.svds(K.astype(np.float64), k=s, v0=v0)
        order = np.argsort(sig)[::-1]
        u, sig, vt = u[:, order], sig[order], vt[order]
    else:
        u, sig, vt = np.linalg.svd(K, full_matrices=False)
        u, sig, vt = u[:, :s], sig[:s], vt[:s]
    h_e, h_r = u, vt.T
    pivot = np.argmax(np.abs(h_e), axis=0)
    sign = np.sign(h_e[pivot, np.arange(s)])
    sign[sign == 0] = 1.0
    dt = result_dtype(K)
    return (h_e * sign).astype(dt), (h_r * sign).astype(dt), sig.astype(dt)


# --------------------------------------------------------------------------- KKT weights
class PrimalWeightsCache(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    H_e: np.ndarray
    H_r: np.ndarray
    dtype: np.dtype


class PrimalWeightsGrads(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    H_e: np.ndarray
    H_r: np.ndarray


def primal_weights(
    phi_q: np.ndarray, phi_k: np.ndarray, H_e: np.ndarray, H_r: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], PrimalWeightsCache]:
    """KKT conditions (1), (2): W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e (as functions of Φ and H).

    Shapes: phi_q (N, p), phi_k (M, p), H_e (N, s), H_r (M, s) → W_e, W_r (p, s).
    """
    phi_q, phi_k, H_e, H_r = _check_dual(phi_q, phi_k, H_e, H_r)
    dt = result_dtype(phi_q, phi_k, H_e, H_r)
    W_e = np.matmul(phi_k.T, H_r, dtype=dt)
    W_r = np.matmul(phi_q.T, H_e, dtype=dt)
    return (W_e, W_r), PrimalWeightsCache(phi_q, phi_k, H_e, H_r, dt)


def primal_weights_backward(
    dW: tuple[np.ndarray, np.ndarray], cache: PrimalWeightsCache
) -> PrimalWeightsGrads:
    """VJP of ``primal_weights``: returns ``PrimalWeightsGrads(phi_q, phi_k, H_e, H_r)``.

    W_e = Φ_kᵀ H_r ⇒ dΦ_k = H_r dW_eᵀ, dH_r = Φ_k dW_e;
    W_r = Φ_qᵀ H_e ⇒ dΦ_q = H_e dW_rᵀ, dH_e = Φ_q dW_r.
    """
    cache_of(cache, PrimalWeightsCache, "primal_weights")
    phi_q, phi_k, H_e, H_r, dt = cache
    if not isinstance(dW, (tuple, list)) or len(dW) != 2:
        raise TypeError(f"dW must be a pair (dW_e, dW_r), got {type(dW).__name__}")
    shape = (phi_q.shape[1], H_e.shape[1])
    dW_e = upstream(dW[0], "dW[0] (dW_e)", shape, dt)
    dW_r = upstream(dW[1], "dW[1] (dW_r)", shape, dt)
    return PrimalWeightsGrads(
        np.matmul(H_e, dW_r.T, dtype=dt),
        np.matmul(H_r, dW_e.T, dtype=dt),
        np.matmul(phi_q, dW_r, dtype=dt),
        np.matmul(phi_k, dW_e, dtype=dt),
    )


def kkt_weights(
    phi_q: np.ndarray, phi_k: np.ndarray, H_e: np.ndarray, H_r: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primal weights from a dual solution: W_e = Φ_kᵀ H_r, W_r = Φ_qᵀ H_e, λ = 1/σ (Λ = Σ⁻¹).

    Returns (W_e (p, s), W_r (p, s), lam (s,)). Every σ must be > 0.
    """
    (W_e, W_r), _ = primal_weights(phi_q, phi_k, H_e, H_r)
    sigma = float_array(sigma, "sigma", ndim=1)
    check_finite(sigma, "sigma")
    if sigma.shape[0] != W_e.shape[1]:
        raise ValueError(
            f"sigma has shape {sigma.shape}, expected ({W_e.shape[1]},) to match H_e, H_r"
        )
    if np.any(sigma <= 0):
        raise ValueError(f"every singular value must be > 0 to form Λ = Σ⁻¹, got sigma = {sigma}")
    return W_e, W_r, 1.0 / sigma


def _check_dual(phi_q, phi_k, H_e, H_r):
    phi_q = float_array(phi_q, "phi_q", ndim=2)
    phi_k = float_array(phi_k, "phi_k", ndim=2)
    H_e = float_array(H_e, "H_e", ndim=2)
    H_r = float_array(H_r, "H_r", ndim=2)
    if phi_q.shape[1] != phi_k.shape[1]:
        raise ValueError(f"phi_q {phi_q.shape} and phi_k {phi_k.shape} must share p")
    if (
        H_e.shape[0] != phi_q.shape[0]
        or H_r.shape[0] != phi_k.shape[0]
        or H_e.shape[1] != H_r.shape[1]
    ):
        raise ValueError(
            f"H_e must be (N, s) and H_r (M, s) for phi_q (N, p) = {phi_q.shape} and phi_k "
            f"(M, p) = {phi_k.shape}; got H_e {H_e.shape}, H_r {H_r.shape}"
        )
    for arr, name in ((phi_q, "phi_q"), (phi_k, "phi_k"), (H_e, "H_e"), (H_r, "H_r")):
        check_finite(arr, name)
    return phi_q, phi_k, H_e, H_r


def _check_primal(phi_q, phi_k, W_e, W_r, lam):
    phi_q = float_array(phi_q, "phi_q", ndim=2)
    phi_k = float_array(phi_k, "phi_k", ndim=2)
    W_e = float_array(W_e, "W_e", ndim=2)
    W_r = float_array(W_r, "W_r", ndim=2)
    lam = float_array(lam, "lam", ndim=1)
    p = phi_q.shape[1]
    if phi_k.shape[1] != p:
        raise ValueError(f"phi_q {phi_q.shape} and phi_k {phi_k.shape} must share p")
    if W_e.shape != W_r.shape or W_e.shape[0] != p:
        raise ValueError(
            f"W_e and W_r must both be (p, s) with p = {p}; got W_e {W_e.shape}, W_r {W_r.shape}"
        )
    if lam.shape != (W_e.shape[1],):
        raise ValueError(
            f"lam (the diagonal of Λ) must have shape ({W_e.shape[1]},), got {lam.shape}"
        )
    for arr, name in ((phi_q, "phi_q"), (phi_k, "phi_k"), (W_e, "W_e"), (W_r, "W_r"), (lam, "lam")):
        check_finite(arr, name)
    return phi_q, phi_k, W_e, W_r, lam


# --------------------------------------------------------------------------- residuals
class KKTResiduals(NamedTuple):
    """Relative residuals ‖lhs − rhs‖_F / (‖lhs‖_F + ‖rhs‖_F) (0 when both sides vanish)."""

    w_r: float  # (1) W_r = Φ_qᵀ H_e
    w_e: float  # (2) W_e = Φ_kᵀ H_r
    e: float  # (3) E Λ = H_e
    r: float  # (4) R Λ = H_r
    e_constraint: float  # (5) E = Φ_q W_e
    r_constraint: float  # (6) R = Φ_k W_r

    @property
    def max(self) -> float:
        return max(self)


def kkt_residuals(
    phi_q: np.ndarray,
    phi_k: np.ndarray,
    W_e: np.ndarray,
    W_r: np.ndarray,
    lam: np.ndarray,
    H_e: np.ndarray,
    H_r: np.ndarray,
    E: np.ndarray | None = None,
    R: np.ndarray | None = None,
) -> KKTResiduals:
    """Residuals of the six KKT conditions at a primal–dual point.

    E and R default to Φ_q W_e and Φ_k W_r (then (5), (6) hold exactly). Note that the
    all-zero point (W, E, R, H all 0) satisfies the six conditions trivially; a KSVD
    solution needs non-trivial multipliers (unit singular vectors), so pass the H of
    the dual solution to measure how far primal weights are from it — e.g. W_e = W_r = 0
    against the H of ``ksvd`` gives residual 1 in (1) and (2) although J = 0.
    """
    phi_q, phi_k, W_e, W_r, lam = _check_primal(phi_q, phi_k, W_e, W_r, lam)
    _, _, H_e, H_r = _check_dual(phi_q, phi_k, H_e, H_r)
    if H_e.shape[1] != W_e.shape[1]:
        raise ValueError(
            f"H_e, H_r have s = {H_e.shape[1]} columns but W_e, W_r have s = {W_e.shape[1]}"
        )
    E = phi_q @ W_e if E is None else _scores(E, "E", (phi_q.shape[0], W_e.shape[1]), "(N, s)")
    R = phi_k @ W_r if R is None else _scores(R, "R", (phi_k.shape[0], W_r.shape[1]), "(M, s)")
    return KKTResiduals(
        w_r=rel_residual(W_r, phi_q.T @ H_e),
        w_e=rel_residual(W_e, phi_k.T @ H_r),
        e=rel_residual(E * lam, H_e),
        r=rel_residual(R * lam, H_r),
        e_constraint=rel_residual(E, phi_q @ W_e),
        r_constraint=rel_residual(R, phi_k @ W_r),
    )


def _scores(a: object, name: str, shape: tuple[int, int], what: str) -> np.ndarray:
    a = float_array(a, name)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {what} = {shape}, got {a.shape}")
    check_finite(a, name)
    return a


def shifted_eigen_residual(
    K: np.ndarray, H_e: np.ndarray, H_r: np.ndarray, sigma: np.ndarray
) -> float:
    """max of the relative residuals of K H_r = H_e Σ and Kᵀ H_e = H_r Σ.

    Shapes: K (N, M), H_e (N, s), H_r (M, s), sigma (s,).
    """
    K = float_array(K, "K", ndim=2)
    H_e = float_array(H_e, "H_e", ndim=2)
    H_r = float_array(H_r, "H_r", ndim=2)
    sig = float_array(sigma, "sigma", ndim=1)
    n, m = K.shape
    if H_e.shape[0] != n or H_r.shape[0] != m or H_e.shape[1] != H_r.shape[1]:
        raise ValueError(
            f"H_e must be (N, s) and H_r (M, s) for K (N, M) = {K.shape}; got H_e {H_e.shape}, "
            f"H_r {H_r.shape}"
        )
    if sig.shape != (H_e.shape[1],):
        raise ValueError(f"sigma has shape {sig.shape}, expected ({H_e.shape[1]},)")
    for arr, name in ((K, "K"), (H_e, "H_e"), (H_r, "H_r"), (sig, "sigma")):
        check_finite(arr, name)
    return max(rel_residual(K @ H_r, H_e * sig), rel_residual(K.T @ H_e, H_r * sig))


# --------------------------------------------------------------------------- objective J
class ObjectiveTerms(NamedTuple):
    """J = e_term + r_term − trace."""

    e_term: float  # ½ Σ_i e_iᵀ Λ e_i
    r_term: float  # ½ Σ_j r_jᵀ Λ r_j
    trace: float  # Tr(W_eᵀ W_r)

    @property
    def J(self) -> float:
        return self.e_term + self.r_term - self.trace

    @property
    def scale(self) -> float:
        """|e_term| + |r_term| + |trace|: the size J = 0 is judged against."""
        return abs(self.e_term) + abs(self.r_term) + abs(self.trace)


def ksvd_objective_terms(phi_q, phi_k, W_e, W_r, lam) -> ObjectiveTerms:
    """The three terms of J (see ``ksvd_objective``)."""
    phi_q, phi_k, W_e, W_r, lam = _check_primal(phi_q, phi_k, W_e, W_r, lam)
    E = phi_q @ W_e
    R = phi_k @ W_r
    return ObjectiveTerms(
        e_term=float(0.5 * np.sum((E * E) @ lam)),
        r_term=float(0.5 * np.sum((R * R) @ lam)),
        trace=float(np.sum(W_e * W_r)),
    )


def ksvd_objective(
    phi_q: np.ndarray, phi_k: np.ndarray, W_e: np.ndarray, W_r: np.ndarray, lam: np.ndarray
) -> float:
    """The paper's KSVD objective for one head and one sequence:

        J = ½ Σ_i e_iᵀ Λ e_i + ½ Σ_j r_jᵀ Λ r_j − Tr(W_eᵀ W_r),   E = Φ_q W_e,  R = Φ_k W_r.

    Shapes: phi_q (N, p), phi_k (M, p), W_e, W_r (p, s), lam (s,) — the diagonal of Λ.
    """
    return ksvd_objective_terms(phi_q, phi_k, W_e, W_r, lam).J


class ObjectiveGrads(NamedTuple):
    phi_q: np.ndarray
    phi_k: np.ndarray
    W_e: np.ndarray
    W_r: np.ndarray
    lam: np.ndarray


def ksvd_objective_grad(
    phi_q: np.ndarray,
    phi_k: np.ndarray,
    W_e: np.ndarray,
    W_r: np.ndarray,
    lam: np.ndarray,
    dJ: float = 1.0,
) -> ObjectiveGrads:
    """Gradient of dJ·J with respect to every argument of ``ksvd_objective``.

        ∂J/∂E = E Λ,   ∂J/∂R = R Λ
        ∂J/∂W_e = Φ_qᵀ E Λ − W_r,      ∂J/∂W_r = Φ_kᵀ R Λ − W_e
        ∂J/∂Φ_q = E Λ W_eᵀ,            ∂J/∂Φ_k = R Λ W_rᵀ
        ∂J/∂λ_l = ½ Σ_i E_il² + ½ Σ_j R_jl²

    At a KKT point (E Λ = H_e, W_r = Φ_qᵀ H_e, …) ∂J/∂W_e = ∂J/∂W_r = 0.
    """
    phi_q, phi_k, W_e, W_r, lam = _check_primal(phi_q, phi_k, W_e, W_r, lam)
    dJ = real_number(dJ, "dJ")
    E = phi_q @ W_e
    R = phi_k @ W_r
    dE = dJ * (E * lam)
    dR = dJ * (R * lam)
    return ObjectiveGrads(
        phi_q=dE @ W_e.T,
        phi_k=dR @ W_r.T,
        W_e=phi_q.T @ dE - dJ * W_r,
        W_r=phi_k.T @ dR - dJ * W_e,
        lam=0.5 * dJ * (np.sum(E * E, axis=0) + np.sum(R * R, axis=0)),
    )
