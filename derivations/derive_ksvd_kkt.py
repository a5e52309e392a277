"""KSVD (docs/theory.md §2.2–§2.5): the Lagrangian, its six KKT conditions, and the shifted eigenvalue problem.

primal_np.ksvd: kkt_residuals, kkt_weights, ksvd, shifted_eigen_residual.
Run: python derivations/derive_ksvd_kkt.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import (
    N_POINTS,
    Derivation,
    Lambdified,
    flat,
    grad,
    symmat,
    symvec,
)

from primal_np.compare import rel_residual
from primal_np.ksvd import kkt_residuals, kkt_weights, ksvd, shifted_eigen_residual

D = Derivation(
    "ksvd_kkt",
    "KSVD: Lagrangian, KKT conditions, shifted eigenvalue problem",
    r"""
    One head, one sequence, N = 3 tokens, p = 3 features, s = 2 directions, every entry
    an independent real symbol: $\Phi_q, \Phi_k \in \mathbb R^{3\times 3}$,
    $W_e, W_r \in \mathbb R^{3\times 2}$, $\Lambda = \mathrm{diag}(\lambda_1, \lambda_2)$ with
    $\lambda_l > 0$, score rows $e_i, r_j \in \mathbb R^2$ (stacked: $E, R$) and multiplier rows
    $h_{e_i}, h_{r_j}$ (stacked: $H_e, H_r$). The scores are free variables tied to the
    weights only by the constraints, exactly as in the paper's Lagrangian.
    """,
)
N, p, s = 3, 3, 2


def _problem():
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p)
    We, Wr = symmat("W^{e}", p, s), symmat("W^{r}", p, s)
    E, R = symmat("e", N, s), symmat("r", N, s)
    He, Hr = symmat("h^{e}", N, s), symmat("h^{r}", N, s)
    lam = symvec(r"\lambda", s, positive=True)
    return Pq, Pk, We, Wr, E, R, He, Hr, lam


def _lagrangian(Pq, Pk, We, Wr, E, R, He, Hr, lam):
    Lam = sp.diag(*lam)
    half = sp.Rational(1, 2)
    J = (
        half * sum((E[i, :] * Lam * E[i, :].T)[0] for i in range(N))
        + half * sum((R[i, :] * Lam * R[i, :].T)[0] for i in range(N))
        - (We.T * Wr).trace()
    )
    cons_e = sum((He[i, :] * (E[i, :].T - We.T * Pq[i, :].T))[0] for i in range(N))
    cons_r = sum((Hr[i, :] * (R[i, :].T - Wr.T * Pk[i, :].T))[0] for i in range(N))
    return J, J - cons_e - cons_r


@D.step("The six KKT conditions from the Lagrangian")
def kkt_conditions(st):
    Pq, Pk, We, Wr, E, R, He, Hr, lam = _problem()
    J, L = _lagrangian(Pq, Pk, We, Wr, E, R, He, Hr, lam)
    Lam = sp.diag(*lam)
    st.math(
        r"J = \tfrac12\sum_i e_i^\top\Lambda e_i + \tfrac12\sum_j r_j^\top\Lambda r_j - \mathrm{Tr}(W_e^\top W_r)"
    )
    st.math(
        r"\mathcal L = J - \sum_i h_{e_i}^\top(e_i - W_e^\top\varphi_q(x_i)) - \sum_j h_{r_j}^\top(r_j - W_r^\top\varphi_k(x_j))"
    )
    st.text(
        "SymPy differentiates $\\mathcal L$ with respect to every entry of every variable; for instance"
    )
    st.eq(r"\frac{\partial\mathcal L}{\partial (W_e)_{11}}", sp.diff(L, We[0, 0]))
    st.eq(r"\frac{\partial\mathcal L}{\partial e_{11}}", sp.diff(L, E[0, 0]))
    st.text("Each block of the gradient, proved equal to the matrix form of its KKT condition:")
    st.exact(
        r"(1) $\partial\mathcal L/\partial W_e = \Phi_q^\top H_e - W_r$, i.e. $W_r = \Phi_q^\top H_e$",
        grad(L, We),
        Pq.T * He - Wr,
    )
    st.exact(
        r"(2) $\partial\mathcal L/\partial W_r = \Phi_k^\top H_r - W_e$, i.e. $W_e = \Phi_k^\top H_r$",
        grad(L, Wr),
        Pk.T * Hr - We,
    )
    st.exact(
        r"(3) $\partial\mathcal L/\partial E = E\Lambda - H_e$, i.e. $\Lambda e_i = h_{e_i}$",
        grad(L, E),
        E * Lam - He,
    )
    st.exact(
        r"(4) $\partial\mathcal L/\partial R = R\Lambda - H_r$, i.e. $\Lambda r_j = h_{r_j}$",
        grad(L, R),
        R * Lam - Hr,
    )
    st.exact(
        r"(5) $\partial\mathcal L/\partial H_e = \Phi_q W_e - E$, i.e. $e_i = W_e^\top\varphi_q(x_i)$",
        grad(L, He),
        Pq * We - E,
    )
    st.exact(
        r"(6) $\partial\mathcal L/\partial H_r = \Phi_k W_r - R$, i.e. $r_j = W_r^\top\varphi_k(x_j)$",
        grad(L, Hr),
        Pk * Wr - R,
    )
    st.rejects(
        r"(1) with $\Phi_k$ in place of $\Phi_q$: $W_r = \Phi_k^\top H_e$",
        grad(L, We),
        Pk.T * He - Wr,
    )
    st.rejects(
        r"(3) with $\Lambda^{-1}$: $E\Lambda^{-1} = H_e$", grad(L, E), E * Lam.inv() - He, "cancel"
    )

    st.text(
        r"""
        Numerically, `kkt_residuals` reports for each condition lhs = rhs the relative
        residual $\lVert \mathrm{lhs} - \mathrm{rhs}\rVert_F / (\lVert\mathrm{lhs}\rVert_F + \lVert\mathrm{rhs}\rVert_F)$.
        At random, non-stationary points (with $E, R$ passed explicitly, so (5), (6) are
        violated too) its six values are compared with the Frobenius norms of SymPy's
        gradient blocks divided by the same denominators:
        """
    )
    blocks = [grad(L, M) for M in (We, Wr, E, R, He, Hr)]
    f = Lambdified([Pq, Pk, We, Wr, E, R, He, Hr, lam], blocks)
    rng = np.random.default_rng(701)
    pairs, wrong = [], []
    for _ in range(N_POINTS):
        pq, pk, he, hr = (rng.standard_normal(sh) for sh in ((N, p), (N, p), (N, s), (N, s)))
        we, wr, e, r = (rng.standard_normal(sh) for sh in ((p, s), (p, s), (N, s), (N, s)))
        lv = rng.uniform(0.2, 2.0, s)
        g = f(pq, pk, we, wr, e, r, he, hr, lv)
        sides = [
            (wr, pq.T @ he),
            (we, pk.T @ hr),
            (e * lv, he),
            (r * lv, hr),
            (e, pq @ we),
            (r, pk @ wr),
        ]
        want = np.array(
            [
                np.linalg.norm(gk) / (np.linalg.norm(a) + np.linalg.norm(b))
                for gk, (a, b) in zip(g, sides, strict=True)
            ]
        )
        got = np.array(kkt_residuals(pq, pk, we, wr, lv, he, hr, E=e, R=r))
        pairs.append((got, want))
        wrong.append((got[[1, 0, 2, 3, 4, 5]], want))
    st.close("the six values of `kkt_residuals` against ‖∂𝓛/∂·‖ from SymPy", pairs)
    st.far("the residuals (1) and (2) swapped", wrong)


@D.step("Elimination: the shifted eigenvalue problem K H_r = H_e Σ, Kᵀ H_e = H_r Σ")
def elimination(st):
    Pq, Pk, We, Wr, E, R, He, Hr, lam = _problem()
    _, L = _lagrangian(Pq, Pk, We, Wr, E, R, He, Hr, lam)
    unknowns = [We, Wr, E, R]
    eqs = flat(*(grad(L, M) for M in unknowns))
    sols = sp.linsolve(eqs, flat(*unknowns))
    assert len(sols) == 1, "conditions (1)–(4) must have a unique solution"
    (sol,) = sols
    assert not (set().union(*(sp.sympify(v).free_symbols for v in sol)) & set(flat(*unknowns))), (
        "solution is not unique"
    )
    sub = dict(zip(flat(*unknowns), sol, strict=True))
    sol_m = [M.xreplace(sub) for M in unknowns]
    Sig = sp.diag(*[1 / x for x in lam])
    st.text(
        r"""
        `sympy.linsolve` solves the stationarity conditions (1)–(4) — linear in $W_e, W_r,
        E, R$ — for those 24 unknowns: the solution set has exactly one element and no free
        parameter, and it is
        """
    )
    st.exact(
        r"$W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$",
        sol_m[0].row_join(sol_m[1]),
        (Pk.T * Hr).row_join(Pq.T * He),
    )
    st.exact(
        r"$E = H_e \Sigma$, $R = H_r\Sigma$ with $\Sigma = \Lambda^{-1}$",
        sol_m[2].row_join(sol_m[3]),
        (He * Sig).row_join(Hr * Sig),
        "cancel",
    )
    K = Pq * Pk.T
    c5 = grad(L, He).xreplace(sub)
    c6 = grad(L, Hr).xreplace(sub)
    st.text(
        r"""
        Substituted into the constraints (5), (6), what remains is exactly the shifted
        eigenvalue problem in $K = \Phi_q\Phi_k^\top$:
        """
    )
    st.exact(r"(5) becomes $K H_r - H_e\Sigma = 0$", c5, K * Hr - He * Sig, "cancel")
    st.exact(r"(6) becomes $K^\top H_e - H_r\Sigma = 0$", c6, K.T * He - Hr * Sig, "cancel")
    block = sp.zeros(N, N).row_join(K).col_join(K.T.row_join(sp.zeros(N, N)))
    st.exact(
        r"block form $\begin{bmatrix}0 & K\\ K^\top & 0\end{bmatrix}\begin{bmatrix}H_e\\ H_r\end{bmatrix} - \begin{bmatrix}H_e\\ H_r\end{bmatrix}\Sigma$ = the stacked residuals of (5), (6)",
        block * He.col_join(Hr) - He.col_join(Hr) * Sig,
        c5.col_join(c6),
        "cancel",
    )
    st.rejects(r"(5) becomes $K^\top H_r - H_e\Sigma$", c5, K.T * Hr - He * Sig, "cancel")
    st.text(
        r"""
        Read backwards, the same identities say: if $(H_e, H_r, \Sigma)$ solves the shifted
        eigenvalue problem (s singular triplets of $K$, $\Sigma = \Lambda^{-1}$), then
        $W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$, $E = H_e\Sigma$, $R = H_r\Sigma$ satisfy all
        six KKT conditions.

        Numerically: `ksvd` (top-s singular triplets) and `kkt_weights` (W, $\lambda = 1/\sigma$)
        at random $\Phi_q, \Phi_k$; the lambdified SymPy expressions of conditions (1)–(6)
        (with $E = \Phi_q W_e$, $R = \Phi_k W_r$) and of the two eigen-equations must hold, as
        must `kkt_residuals` and `shifted_eigen_residual`.
        """
    )
    sides = Lambdified(
        [Pq, Pk, We, Wr, He, Hr, lam],
        [Pq * We, Pk * Wr, K * Hr, He * Sig, K.T * He, Hr * Sig, sol_m[0], sol_m[1]],
    )
    rng = np.random.default_rng(702)
    res, eig, wrong = [], [], []
    for _ in range(N_POINTS):
        pq, pk = rng.standard_normal((N, p)), rng.standard_normal((N, p))
        he, hr, sig = ksvd(pq @ pk.T, s)
        we, wr, lv = kkt_weights(pq, pk, he, hr, sig)
        e_, r_, khr, hes, kthe, hrs, we_sol, wr_sol = sides(pq, pk, we, wr, he, hr, lv)
        res += [rel_residual(khr, hes), rel_residual(kthe, hrs)]
        res += [rel_residual(e_ * lv, he), rel_residual(r_ * lv, hr)]  # (3), (4) at E = ΦW
        res += [rel_residual(we, we_sol), rel_residual(wr, wr_sol)]  # (1), (2): the linsolve W
        res.append(kkt_residuals(pq, pk, we, wr, lv, he, hr).max)
        eig.append(shifted_eigen_residual(pq @ pk.T, he, hr, sig))
        flipped = hr * np.array([1.0, -1.0])  # a sign flip in one column breaks the pairing
        wrong.append(rel_residual(*sides(pq, pk, we, wr, he, flipped, lv)[2:4]))
    st.small(
        "`ksvd` + `kkt_weights` satisfy the SymPy-derived eigen-equations and KKT (1)–(6); so does `kkt_residuals`",
        res,
    )
    st.small("`shifted_eigen_residual` at the same points", eig)
    st.not_small("$K H_r = H_e\\Sigma$ with one column of $H_r$ sign-flipped", wrong)


def test_kkt_conditions():
    kkt_conditions()


def test_elimination():
    elimination()


if __name__ == "__main__":
    raise SystemExit(D.main())
