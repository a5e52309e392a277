"""The KSVD objective J as a function of (Φ_q, Φ_k, W_e, W_r, λ): its gradient, and J's
stationarity in W at KKT points.

primal_np.ksvd: ksvd_objective, ksvd_objective_terms, ksvd_objective_grad.
Run: python derivations/derive_ksvd_objective.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, symmat, symvec

from primal_np.ksvd import ksvd_objective, ksvd_objective_grad, ksvd_objective_terms

D = Derivation(
    "ksvd_objective",
    "KSVD objective J and its gradient",
    r"""
    With the constraints substituted, $E = \Phi_q W_e$, $R = \Phi_k W_r$,
    $J = \tfrac12\sum_{i,l}\lambda_l E_{il}^2 + \tfrac12\sum_{j,l}\lambda_l R_{jl}^2 - \mathrm{Tr}(W_e^\top W_r)$
    is what `ksvd_objective` evaluates and `ksvd_objective_grad` differentiates (scaled by
    an upstream $\bar J$). N = 3 queries, M = 2 keys, p = 3, s = 2, all entries symbols.
    """,
)
N, M, p, s = 3, 2, 3, 2


def _objective():
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", M, p)
    We, Wr = symmat("W^{e}", p, s), symmat("W^{r}", p, s)
    lam = symvec(r"\lambda", s)
    E, R = Pq * We, Pk * Wr
    half = sp.Rational(1, 2)
    e_term = half * sum(lam[l] * E[i, l] ** 2 for i in range(N) for l in range(s))
    r_term = half * sum(lam[l] * R[j, l] ** 2 for j in range(M) for l in range(s))
    trace = (We.T * Wr).trace()
    return (Pq, Pk, We, Wr, lam), (e_term, r_term, trace)


@D.step("Gradient of J")
def objective_grad(st):
    (Pq, Pk, We, Wr, lam), (e_term, r_term, trace) = _objective()
    J = e_term + r_term - trace
    Jbar = sp.Symbol(r"\bar{J}", real=True)
    Lam = sp.diag(*lam)
    E, R = Pq * We, Pk * Wr
    g = {
        name: grad(Jbar * J, X)
        for name, X in (("Pq", Pq), ("Pk", Pk), ("We", We), ("Wr", Wr), ("lam", lam))
    }
    Es, Rs = symmat("E", N, s), symmat("R", M, s)
    J_E = sp.Rational(1, 2) * sum(
        lam[l] * (sum(Es[i, l] ** 2 for i in range(N)) + sum(Rs[j, l] ** 2 for j in range(M)))
        for l in range(s)
    )
    st.text(
        r"In terms of the score entries (before substituting $E = \Phi_q W_e$, $R = \Phi_k W_r$) the quadratic part reads"
    )
    st.eq(r"J + \mathrm{Tr}(W_e^\top W_r)", J_E)
    st.text(
        r"""
        The proofs below differentiate the substituted $\bar J\cdot J$, a polynomial in
        30 symbols, entry by entry, and compare with primal_np's closed forms (`ksvd_objective_grad`):
        """
    )
    st.exact(
        r"$\partial J/\partial W_e = \Phi_q^\top E\Lambda - W_r$",
        g["We"],
        Jbar * (Pq.T * E * Lam - Wr),
    )
    st.exact(
        r"$\partial J/\partial W_r = \Phi_k^\top R\Lambda - W_e$",
        g["Wr"],
        Jbar * (Pk.T * R * Lam - We),
    )
    st.exact(r"$\partial J/\partial \Phi_q = E\Lambda W_e^\top$", g["Pq"], Jbar * E * Lam * We.T)
    st.exact(r"$\partial J/\partial \Phi_k = R\Lambda W_r^\top$", g["Pk"], Jbar * R * Lam * Wr.T)
    half = sp.Rational(1, 2)
    dlam = [
        Jbar * half * (sum(E[i, l] ** 2 for i in range(N)) + sum(R[j, l] ** 2 for j in range(M)))
        for l in range(s)
    ]
    st.exact(
        r"$\partial J/\partial\lambda_l = \tfrac12\sum_i E_{il}^2 + \tfrac12\sum_j R_{jl}^2$",
        g["lam"],
        dlam,
    )
    st.rejects(
        r"$\partial J/\partial W_e = \Phi_q^\top E\Lambda - W_e$",
        g["We"],
        Jbar * (Pq.T * E * Lam - We),
    )

    outs = [
        sp.Matrix([[e_term, r_term, trace, J]]),
        g["Pq"],
        g["Pk"],
        g["We"],
        g["Wr"],
        sp.Matrix(g["lam"]),
    ]
    f = Lambdified([Pq, Pk, We, Wr, lam, Jbar], outs)
    rng = np.random.default_rng(801)
    pairs, wrong = [], []
    for _ in range(N_POINTS):
        pq, pk, we, wr = (rng.standard_normal(sh) for sh in ((N, p), (M, p), (p, s), (p, s)))
        lv, jb = rng.uniform(-1.0, 1.0, s), rng.uniform(0.3, 2.0)
        vals, *g_ref = f(pq, pk, we, wr, lv, jb)
        t = ksvd_objective_terms(pq, pk, we, wr, lv)
        pairs.append(
            (np.array([t.e_term, t.r_term, t.trace, ksvd_objective(pq, pk, we, wr, lv)]), vals[0])
        )
        g = ksvd_objective_grad(pq, pk, we, wr, lv, dJ=jb)
        pairs += list(zip(g, [*g_ref[:4], g_ref[4][:, 0]], strict=True))
        wrong.append((ksvd_objective_grad(pq, pk, we, wr, lv).W_e, g_ref[2]))
    st.close(
        "`ksvd_objective(_terms)` and `ksvd_objective_grad` (upstream $\\bar J$ ≠ 1, λ of either sign) against SymPy",
        pairs,
    )
    st.far("`ksvd_objective_grad` without the upstream factor $\\bar J$", wrong)


@D.step("J is stationary in W at the KKT weights of a dual solution")
def stationary(st):
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p)
    He, Hr = symmat("h^{e}", N, s), symmat("h^{r}", N, s)
    sig = symvec(r"\sigma", s, positive=True)
    Sig, Lam = sp.diag(*sig), sp.diag(*[1 / x for x in sig])
    We, Wr = Pk.T * Hr, Pq.T * He
    K = Pq * Pk.T
    dWe = Pq.T * (Pq * We) * Lam - Wr
    dWr = Pk.T * (Pk * Wr) * Lam - We
    st.text(
        r"""
        With N = M = 3 and $W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$, $\Lambda = \Sigma^{-1}$
        (conditions (1), (2) and the multipliers $H$ free), the $W$-gradient of $J$ factors
        through the residuals of the shifted eigenvalue problem:
        """
    )
    st.exact(
        r"$\partial J/\partial W_e = \Phi_q^\top (K H_r - H_e\Sigma)\Lambda$",
        dWe,
        Pq.T * (K * Hr - He * Sig) * Lam,
    )
    st.exact(
        r"$\partial J/\partial W_r = \Phi_k^\top (K^\top H_e - H_r\Sigma)\Lambda$",
        dWr,
        Pk.T * (K.T * He - Hr * Sig) * Lam,
    )
    st.text(
        r"""
        so at any solution of $KH_r = H_e\Sigma$, $K^\top H_e = H_r\Sigma$ the primal weights are
        a stationary point of $J$ in $(W_e, W_r)$ — the sense in which the paper "maximises"
        the indefinite $J$.
        """
    )


def test_objective_grad():
    objective_grad()


def test_stationary():
    stationary()


if __name__ == "__main__":
    raise SystemExit(D.main())
