"""The zero-value lemma (docs/theory.md §3): J = 0 at every KSVD solution, and why J = 0 is not enough.

primal_np.ksvd: ksvd, kkt_weights, ksvd_objective, ksvd_objective_terms, kkt_residuals.
Run: python derivations/derive_ksvd_lemma.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, inner, symmat, symvec

from primal_np.compare import rel_error
from primal_np.ksvd import kkt_residuals, kkt_weights, ksvd, ksvd_objective, ksvd_objective_terms

D = Derivation(
    "ksvd_lemma",
    "KSVD: the zero-value lemma and the W = 0 counterexample",
    r"""
    Sizes N = 4, p = 3, s = 2. What is provable symbolically, and how:

    * **The lemma for all inputs at these sizes.** With the KKT weights
      $W_e = \Phi_k^\top H_r$, $W_r = \Phi_q^\top H_e$, $\Lambda = \Sigma^{-1}$ and the constraint
      scores $E = \Phi_q W_e$, $R = \Phi_k W_r$ (what `ksvd_objective` evaluates), $J$ is a
      rational function of 42 independent symbols ($\Phi_q, \Phi_k, H_e, H_r$ and
      $\sigma_1, \sigma_2 > 0$). It is written *exactly* as a combination of the residuals
      $A = KH_r - H_e\Sigma$, $B = K^\top H_e - H_r\Sigma$ of the shifted eigenvalue problem, so
      it vanishes wherever they do. This certificate is the symbolic form of the paper's
      proof. Imposing "$(H_e, H_r, \Sigma)$ are singular triplets of $K$" by substitution
      instead would need the roots of a quartic in $\sigma^2$ with symbolic coefficients —
      expressible in radicals in principle, far too large to substitute and expand.
    * **An explicit solution.** Exact rational singular triplets exist when $K$ is built
      from rational orthogonal matrices; the factorisation $K = \Phi_q\Phi_k^\top$ is then
      left symbolic (6 parameters) together with the free column scales $\gamma_l$ of the
      triplets, and every KKT condition and $J = 0$ hold as polynomial identities.
    * **Necessary, not sufficient.** $W = 0$ gives $J = 0$ identically while the KKT
      residuals against the dual solution are exactly 1.
    """,
)
N, p, s = 4, 3, 2
HALF = sp.Rational(1, 2)


def _expand(M: sp.Matrix) -> sp.Matrix:
    """Entry-wise expand (exact); keeps the expressions compared below small."""
    return M.applyfunc(sp.expand)


def _J(Pq, Pk, We, Wr, lam):
    E, R = _expand(Pq * We), _expand(Pk * Wr)
    e_term = HALF * sum(lam[l] * E[i, l] ** 2 for i in range(E.rows) for l in range(s))
    r_term = HALF * sum(lam[l] * R[j, l] ** 2 for j in range(R.rows) for l in range(s))
    return e_term, r_term, (We.T * Wr).trace()


@D.step("The lemma as an identity: J in terms of the eigen-residuals")
def certificate(st):
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p)
    He, Hr = symmat("h^{e}", N, s), symmat("h^{r}", N, s)
    sig = symvec(r"\sigma", s, positive=True)
    Sig, Lam = sp.diag(*sig), sp.diag(*[1 / x for x in sig])
    K = _expand(Pq * Pk.T)
    We, Wr = _expand(Pk.T * Hr), _expand(Pq.T * He)
    e_term, r_term, trace = (sp.expand(t) for t in _J(Pq, Pk, We, Wr, [1 / x for x in sig]))
    J = e_term + r_term - trace
    A, B = _expand(K * Hr - He * Sig), _expand(K.T * He - Hr * Sig)
    # the pieces of the certificate, each expanded once (exact)
    hA, hB = sp.expand(inner(He, A)), sp.expand(inner(Hr, B))
    qA, qB = sp.expand(HALF * inner(A * Lam, A)), sp.expand(HALF * inner(B * Lam, B))
    st.text(
        r"With $A = KH_r - H_e\Sigma$ and $B = K^\top H_e - H_r\Sigma$ (zero exactly at a solution), each line of the paper's proof becomes an exact identity:"
    )
    norms_e = sum(sig[l] * sum(He[i, l] ** 2 for i in range(N)) for l in range(s))
    norms_r = sum(sig[l] * sum(Hr[i, l] ** 2 for i in range(N)) for l in range(s))
    st.exact(
        r"$\tfrac12\sum_i e_i^\top\Lambda e_i = \tfrac12\sum_l\sigma_l\lVert h_{e,l}\rVert^2 + \langle A, H_e\rangle + \tfrac12\langle A\Lambda, A\rangle$",
        e_term,
        HALF * norms_e + hA + qA,
    )
    st.exact(
        r"$\tfrac12\sum_j r_j^\top\Lambda r_j = \tfrac12\sum_l\sigma_l\lVert h_{r,l}\rVert^2 + \langle B, H_r\rangle + \tfrac12\langle B\Lambda, B\rangle$",
        r_term,
        HALF * norms_r + hB + qB,
    )
    st.exact(
        r"$\mathrm{Tr}(W_e^\top W_r) = \sum_l\sigma_l\lVert h_{e,l}\rVert^2 + \langle H_e, A\rangle$",
        trace,
        norms_e + hA,
    )
    st.exact(
        r"$\mathrm{Tr}(W_e^\top W_r) = \sum_l\sigma_l\lVert h_{r,l}\rVert^2 + \langle H_r, B\rangle$",
        trace,
        norms_r + hB,
    )
    col = [
        sig[l] * (sum(Hr[i, l] ** 2 for i in range(N)) - sum(He[i, l] ** 2 for i in range(N)))
        for l in range(s)
    ]
    st.exact(
        r"$\sigma_l(\lVert h_{r,l}\rVert^2 - \lVert h_{e,l}\rVert^2) = h_{e,l}^\top a_l - h_{r,l}^\top b_l$ (columns: equal norms at a solution)",
        col,
        [(He[:, l].T * A[:, l] - Hr[:, l].T * B[:, l])[0] for l in range(s)],
    )
    cert = HALF * hA + HALF * hB + qA + qB
    st.text("Together:")
    st.math(
        r"J = \tfrac12\langle H_e, A\rangle + \tfrac12\langle H_r, B\rangle + \tfrac12\langle A\Lambda, A\rangle + \tfrac12\langle B\Lambda, B\rangle"
    )
    st.exact(r"the identity above for $J$, in all 42 symbols", J, cert)
    st.rejects(r"the identity without the term $\tfrac12\langle B\Lambda, B\rangle$", J, cert - qB)
    st.text(
        r"Hence $A = B = 0 \Rightarrow J = 0$: the lemma, for every $\Phi_q, \Phi_k$ and every solution, at N = 4, p = 3, s = 2."
    )


def _cayley(vals, n):
    """A rational orthogonal matrix (I − S)(I + S)⁻¹ from the strict upper part of a skew S."""
    S = sp.zeros(n, n)
    it = iter(vals)
    for i in range(n):
        for j in range(i + 1, n):
            S[i, j] = sp.Rational(next(it))
            S[j, i] = -S[i, j]
    return (sp.eye(n) - S) * (sp.eye(n) + S).inv()


def _instance():
    """Exact rational singular triplets of K = Φ_q Φ_kᵀ, symbolic factorisation and scales."""
    U = _cayley(["1", "2", "-1", "1/2", "3", "-2"], N)
    V = _cayley(["-1", "1", "2", "-3", "1/3", "1"], N)
    sig3 = [sp.Integer(5), sp.Integer(3), sp.Rational(1, 2)]
    a, b, c, d, e, f = sp.symbols("a b c d e f", real=True)
    Mt = sp.Matrix([[1, 0, 0], [a, 1, 0], [b, c, 1]]) * sp.Matrix([[1, d, e], [0, 1, f], [0, 0, 1]])
    Minv = Mt.inv()
    gam = symvec(r"\gamma", s)
    Pq = _expand(U[:, :p] * sp.diag(*sig3) * Mt)
    Pk = _expand(V[:, :p] * Minv.T)
    He, Hr = U[:, :s] * sp.diag(*gam), V[:, :s] * sp.diag(*gam)
    return U, V, sig3, Mt, (a, b, c, d, e, f), gam, Pq, Pk, He, Hr


@D.step("An exact solution: rational singular triplets, symbolic factorisation and scales")
def exact_instance(st):
    U, V, sig3, Mt, params, gam, Pq, Pk, He, Hr = _instance()
    st.text(
        r"""
        $U, V$ are rational orthogonal 4×4 matrices (Cayley transforms of rational skew
        matrices), $K = U_{:,1:3}\,\mathrm{diag}(5, 3, \tfrac12)\,V_{:,1:3}^\top$, factorised as
        $\Phi_q = U_{:,1:3}\,\mathrm{diag}(5, 3, \tfrac12)\,M$, $\Phi_k = V_{:,1:3}\,M^{-\top}$ with
        $M = LU$ unit triangular in six symbols (so $M^{-1}$ is polynomial). The dual
        solution is $H_e = U_{:,1:2}\,\mathrm{diag}(\gamma)$, $H_r = V_{:,1:2}\,\mathrm{diag}(\gamma)$,
        $\Sigma = \mathrm{diag}(5, 3)$ with symbolic column scales $\gamma_1, \gamma_2$.
        """
    )
    st.eq("U", U)
    st.eq("M", Mt)
    st.exact(
        r"$U^\top U = V^\top V = I$", (U.T * U).col_join(V.T * V), sp.eye(N).col_join(sp.eye(N))
    )
    Sig = sp.diag(*sig3[:s])
    Lam = Sig.inv()
    K = _expand(Pq * Pk.T)
    st.exact(
        r"$K = \Phi_q\Phi_k^\top = U_{:,1:3}\,\mathrm{diag}(5, 3, \tfrac12)\,V_{:,1:3}^\top$, free of $a..f$",
        K,
        U[:, :p] * sp.diag(*sig3) * V[:, :p].T,
    )
    st.exact(
        r"$K H_r = H_e\Sigma$ and $K^\top H_e = H_r\Sigma$ (polynomial in $a..f, \gamma$)",
        (K * Hr).col_join(K.T * He),
        (He * Sig).col_join(Hr * Sig),
    )
    We, Wr = _expand(Pk.T * Hr), _expand(Pq.T * He)
    E, R = _expand(Pq * We), _expand(Pk * Wr)
    kkt = [Wr - Pq.T * He, We - Pk.T * Hr, E * Lam - He, R * Lam - Hr]
    st.exact(
        r"KKT (1)–(4) with $W, \Lambda = \Sigma^{-1}$ and $E = \Phi_q W_e$, $R = \Phi_k W_r$ ((5), (6) by construction)",
        sp.Matrix.vstack(*kkt),
        sp.zeros(2 * p + 2 * N, s),
    )
    e_term, r_term, trace = _J(Pq, Pk, We, Wr, [Lam[0, 0], Lam[1, 1]])
    sg = sum(sig3[l] * gam[l] ** 2 for l in range(s))
    st.exact(
        r"the three terms: $\tfrac12\sum_l\sigma_l\gamma_l^2$, $\tfrac12\sum_l\sigma_l\gamma_l^2$, $\sum_l\sigma_l\gamma_l^2$",
        [e_term, r_term, trace],
        [HALF * sg, HALF * sg, sg],
    )
    st.exact(
        r"$J = 0$ identically in $a, b, c, d, e, f, \gamma_1, \gamma_2$", e_term + r_term - trace, 0
    )

    st.text(
        r"""
        Numerically, at random values of $a..f$ and $\gamma$: `ksvd` on the float $K$ finds
        $\sigma = (5, 3)$ and $H_e = \pm U_{:,1:2}$, $H_r = \pm V_{:,1:2}$ (sign fixed per column);
        `kkt_weights` + `ksvd_objective` give $J = 0$ and `kkt_residuals` vanish, judged
        relative to the objective's terms ($|J| / (|e| + |r| + |\mathrm{Tr}|)$).
        """
    )
    rng = np.random.default_rng(901)
    Un, Vn = np.array(U, dtype=float), np.array(V, dtype=float)
    pairs, res = [], []
    for _ in range(N_POINTS):
        vals = dict(zip(params, rng.uniform(-1, 1, 6), strict=True))
        pq = np.array(Pq.subs(vals), dtype=float)
        pk = np.array(Pk.subs(vals), dtype=float)
        he, hr, sig = ksvd(pq @ pk.T, s)
        sign = np.sign(np.sum(he * Un[:, :s], axis=0))
        pairs += [(sig, np.array([5.0, 3.0])), (he * sign, Un[:, :s]), (hr * sign, Vn[:, :s])]
        g = rng.uniform(0.5, 2.0, s)  # the column-scale freedom
        we, wr, lv = kkt_weights(pq, pk, he * g, hr * g, sig)
        t = ksvd_objective_terms(pq, pk, we, wr, lv)
        res += [
            abs(ksvd_objective(pq, pk, we, wr, lv)) / t.scale,
            kkt_residuals(pq, pk, we, wr, lv, he * g, hr * g).max,
        ]
    st.close("`ksvd` against the exact $\\sigma$, $U_{:,1:2}$, $V_{:,1:2}$", pairs)
    st.small(
        "$J = 0$ and all six `kkt_residuals` at the primal weights of `ksvd` + `kkt_weights`", res
    )
    rng = np.random.default_rng(902)
    res = []
    for _ in range(N_POINTS):
        pq, pk = rng.standard_normal((N, p)), rng.standard_normal((N, p))
        he, hr, sig = ksvd(pq @ pk.T, s)
        we, wr, lv = kkt_weights(pq, pk, he, hr, sig)
        res.append(
            abs(ksvd_objective(pq, pk, we, wr, lv)) / ksvd_objective_terms(pq, pk, we, wr, lv).scale
        )
    st.small(
        "$J = 0$ for generic random $\\Phi_q, \\Phi_k$ (4×3), relative to the terms' scale", res
    )


@D.step("J = 0 is necessary, not sufficient: the W = 0 counterexample")
def zero_weights(st):
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p)
    lam = symvec(r"\lambda", s)
    Z = sp.zeros(p, s)
    st.exact(
        r"$J(\Phi_q, \Phi_k, W_e = 0, W_r = 0, \Lambda) = 0$ for all symbolic $\Phi_q, \Phi_k, \Lambda$",
        sum(_J(Pq, Pk, Z, Z, lam)[:2]) - _J(Pq, Pk, Z, Z, lam)[2],
        0,
    )
    U, V, sig3, Mt, params, gam, Pq_, Pk_, He, Hr = _instance()
    st.text(
        r"""
        Against the dual solution of the exact instance, conditions (1), (2) read
        $0 = W_r = \Phi_q^\top H_e$ and $0 = W_e = \Phi_k^\top H_r$, but
        """
    )
    target = Mt.T * sp.diag(*sig3)[:, :s] * sp.diag(*gam)
    st.exact(
        r"$\Phi_q^\top H_e = M^\top\,\mathrm{diag}(5, 3, \tfrac12)_{:,1:2}\,\mathrm{diag}(\gamma)$",
        Pq_.T * He,
        target,
    )
    st.exact(
        r"$\Phi_k^\top H_r = M^{-1}[I_2; 0]\,\mathrm{diag}(\gamma)$",
        Pk_.T * Hr,
        Mt.inv() * sp.eye(p)[:, :s] * sp.diag(*gam),
    )
    st.exact(r"$\det M = 1$", Mt.det(), 1)
    st.text(
        r"""
        so $\Phi_q^\top H_e$ has rank 2 whenever $\gamma_1\gamma_2 \ne 0$, and the relative residual
        $\lVert 0 - \Phi_q^\top H_e\rVert / (0 + \lVert\Phi_q^\top H_e\rVert)$ of (1) is exactly 1; the
        same holds for (2), and for (3), (4) ($E\Lambda = 0$ against $H \ne 0$), while (5), (6)
        hold. Numerically, with the $H$ of `ksvd` and $\Lambda = \Sigma^{-1}$, $J$ must be exactly
        0.0 and the six residuals (1, 1, 1, 1, 0, 0):
        """
    )
    rng = np.random.default_rng(903)
    pairs = []
    for _ in range(N_POINTS):
        vals = dict(zip(params, rng.uniform(-1, 1, 6), strict=True))
        pq, pk = np.array(Pq_.subs(vals), dtype=float), np.array(Pk_.subs(vals), dtype=float)
        he, hr, sig = ksvd(pq @ pk.T, s)
        zero = np.zeros((p, s))
        lv = 1.0 / sig
        got = np.array(
            [ksvd_objective(pq, pk, zero, zero, lv), *kkt_residuals(pq, pk, zero, zero, lv, he, hr)]
        )
        pairs.append((got, np.array([0.0, 1, 1, 1, 1, 0, 0])))
    st.close(
        "(`ksvd_objective`, six `kkt_residuals`) at W = 0 against (0; 1, 1, 1, 1, 0, 0)", pairs
    )
    assert all(rel_error(g[:1], w[:1]) == 0.0 for g, w in pairs), "J(W = 0) must be exactly 0.0"


def test_certificate():
    certificate()


def test_exact_instance():
    exact_instance()


def test_zero_weights():
    zero_weights()


if __name__ == "__main__":
    raise SystemExit(D.main())
