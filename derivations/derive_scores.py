"""Bilinear maps of the KSVD layer: primal scores, dual scores, the kernel matrix, KKT weights.

primal_np.scores: primal_scores(_backward), dual_scores(_backward);
primal_np.kernels: kernel_matrix(_backward); primal_np.ksvd: primal_weights(_backward).
Run: python derivations/derive_scores.py
"""

from __future__ import annotations

import numpy as np
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat

from primal_np.kernels import kernel_matrix, kernel_matrix_backward
from primal_np.ksvd import primal_weights, primal_weights_backward
from primal_np.scores import (
    dual_scores,
    dual_scores_backward,
    primal_scores,
    primal_scores_backward,
)

D = Derivation(
    "scores",
    "Primal and dual scores, kernel matrix, KKT weights",
    r"""
    docs/theory.md §2.6: primal scores $E = \Phi_q W_e$, $R = \Phi_k W_r$; dual scores $E = K H_r$,
    $R = K^\top H_e$ with $K = \Phi_q \Phi_k^\top$; KKT weights $W_e = \Phi_k^\top H_r$,
    $W_r = \Phi_q^\top H_e$. Sizes: N = 3 tokens, p = 2 features, s = 2 directions.
    """,
)
N, p, s = 3, 2, 2


@D.step("Primal scores VJP, with weights shared across a batch")
def primal(st):
    Pq = [symmat(rf"\Phi^{{q({b + 1})}}", N, p) for b in range(2)]
    Pk = [symmat(rf"\Phi^{{k({b + 1})}}", N, p) for b in range(2)]
    We, Wr = symmat("W^{e}", p, s), symmat("W^{r}", p, s)
    Eb = [symmat(rf"\bar{{E}}^{{({b + 1})}}", N, s) for b in range(2)]
    Rb = [symmat(rf"\bar{{R}}^{{({b + 1})}}", N, s) for b in range(2)]
    L = sum(inner(Eb[b], Pq[b] * We) + inner(Rb[b], Pk[b] * Wr) for b in range(2))
    st.text(
        r"""
        Two sequences $b = 1, 2$ with their own $\Phi_q^{(b)}, \Phi_k^{(b)}$ share $W_e, W_r$
        (primal_np broadcasts leading axes, e.g. per-head weights against a batch);
        $\mathcal L = \sum_b \langle \bar E^{(b)}, \Phi_q^{(b)} W_e\rangle + \langle \bar R^{(b)}, \Phi_k^{(b)} W_r\rangle$.
        """
    )
    st.exact(r"$\bar\Phi_q^{(b)} = \bar E^{(b)} W_e^\top$", grad(L, Pq[0]), Eb[0] * We.T)
    st.exact(r"$\bar\Phi_k^{(b)} = \bar R^{(b)} W_r^\top$", grad(L, Pk[1]), Rb[1] * Wr.T)
    st.exact(
        r"$\bar W_e = \sum_b \Phi_q^{(b)\top} \bar E^{(b)}$",
        grad(L, We),
        Pq[0].T * Eb[0] + Pq[1].T * Eb[1],
    )
    st.exact(
        r"$\bar W_r = \sum_b \Phi_k^{(b)\top} \bar R^{(b)}$",
        grad(L, Wr),
        Pk[0].T * Rb[0] + Pk[1].T * Rb[1],
    )
    st.rejects(
        r"$\bar W_e = \Phi_q^{(1)\top}\bar E^{(1)}$ (batch sum missing)",
        grad(L, We),
        Pq[0].T * Eb[0],
    )

    outs = [grad(L, m) for m in (*Pq, *Pk, We, Wr)]
    f = Lambdified([*Pq, *Pk, We, Wr, *Eb, *Rb], outs)
    rng = np.random.default_rng(601)
    pairs = []
    for _ in range(N_POINTS):
        pq, pk, eb, rb = (rng.standard_normal((2, N, k)) for k in (p, p, s, s))
        we, wr = rng.standard_normal((p, s)), rng.standard_normal((p, s))
        dq1, dq2, dk1, dk2, dwe, dwr = f(*pq, *pk, we, wr, *eb, *rb)
        _, cache = primal_scores(pq, pk, we, wr)
        got = primal_scores_backward((eb, rb), cache)
        pairs += list(zip(got, (np.stack([dq1, dq2]), np.stack([dk1, dk2]), dwe, dwr), strict=True))
    st.close("`primal_scores_backward` (batch of 2 against shared weights) against SymPy", pairs)


@D.step("Dual scores and kernel matrix VJPs")
def dual(st):
    K, He, Hr = symmat("K", N, N), symmat("H^{e}", N, s), symmat("H^{r}", N, s)
    Eb, Rb = symmat(r"\bar{E}", N, s), symmat(r"\bar{R}", N, s)
    L = inner(Eb, K * Hr) + inner(Rb, K.T * He)
    st.text(
        r"$\mathcal L = \langle \bar E, K H_r\rangle + \langle \bar R, K^\top H_e\rangle$ on a 3×3 symbolic $K$:"
    )
    st.exact(r"$\bar K = \bar E H_r^\top + H_e \bar R^\top$", grad(L, K), Eb * Hr.T + He * Rb.T)
    st.exact(r"$\bar H_r = K^\top \bar E$", grad(L, Hr), K.T * Eb)
    st.exact(r"$\bar H_e = K \bar R$", grad(L, He), K * Rb)
    st.rejects(
        r"$\bar K = \bar E H_r^\top + \bar R H_e^\top$ (transpose of the second term)",
        grad(L, K),
        Eb * Hr.T + Rb * He.T,
    )
    Pq, Pk, Kb = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p), symmat(r"\bar{K}", N, N)
    Lk = inner(Kb, Pq * Pk.T)
    st.text(
        r"Kernel matrix $K = \Phi_q\Phi_k^\top$, $\mathcal L = \langle\bar K, \Phi_q\Phi_k^\top\rangle$:"
    )
    st.exact(r"$\bar\Phi_q = \bar K \Phi_k$", grad(Lk, Pq), Kb * Pk)
    st.exact(r"$\bar\Phi_k = \bar K^\top \Phi_q$", grad(Lk, Pk), Kb.T * Pq)

    f = Lambdified([K, He, Hr, Eb, Rb], [grad(L, K), grad(L, He), grad(L, Hr)])
    g = Lambdified([Pq, Pk, Kb], [grad(Lk, Pq), grad(Lk, Pk)])
    rng = np.random.default_rng(602)
    pairs = []
    for _ in range(N_POINTS):
        k, he, hr, eb, rb = (
            rng.standard_normal(sh) for sh in ((N, N), (N, s), (N, s), (N, s), (N, s))
        )
        _, cache = dual_scores(k, he, hr)
        pairs += list(zip(dual_scores_backward((eb, rb), cache), f(k, he, hr, eb, rb), strict=True))
        pq, pk, kb = (
            rng.standard_normal((N, p)),
            rng.standard_normal((N, p)),
            rng.standard_normal((N, N)),
        )
        _, kc = kernel_matrix(pq, pk)
        pairs += list(zip(kernel_matrix_backward(kb, kc), g(pq, pk, kb), strict=True))
    st.close("`dual_scores_backward` and `kernel_matrix_backward` against SymPy", pairs)


@D.step("KKT weights W_e = Φ_kᵀH_r, W_r = Φ_qᵀH_e: VJP and primal–dual equality")
def weights(st):
    Pq, Pk = symmat(r"\Phi^{q}", N, p), symmat(r"\Phi^{k}", N, p)
    He, Hr = symmat("H^{e}", N, s), symmat("H^{r}", N, s)
    Web, Wrb = symmat(r"\bar{W}^{e}", p, s), symmat(r"\bar{W}^{r}", p, s)
    We, Wr = Pk.T * Hr, Pq.T * He
    L = inner(Web, We) + inner(Wrb, Wr)
    st.exact(r"$\bar\Phi_q = H_e \bar W_r^\top$", grad(L, Pq), He * Wrb.T)
    st.exact(r"$\bar\Phi_k = H_r \bar W_e^\top$", grad(L, Pk), Hr * Web.T)
    st.exact(r"$\bar H_e = \Phi_q \bar W_r$", grad(L, He), Pq * Wrb)
    st.exact(r"$\bar H_r = \Phi_k \bar W_e$", grad(L, Hr), Pk * Web)
    st.text(
        r"Primal–dual equality of the scores at the KKT weights, for any $\Phi$, $H$ (docs/theory.md §2.6):"
    )
    K = Pq * Pk.T
    st.exact(
        r"$\Phi_q (\Phi_k^\top H_r) = K H_r$ and $\Phi_k(\Phi_q^\top H_e) = K^\top H_e$",
        (Pq * We).col_join(Pk * Wr),
        (K * Hr).col_join(K.T * He),
    )
    st.rejects(r"$\Phi_q (\Phi_k^\top H_r) = K^\top H_r$", Pq * We, K.T * Hr)

    f = Lambdified(
        [Pq, Pk, He, Hr, Web, Wrb], [We, Wr, grad(L, Pq), grad(L, Pk), grad(L, He), grad(L, Hr)]
    )
    rng = np.random.default_rng(603)
    pairs = []
    for _ in range(N_POINTS):
        pq, pk, he, hr = (rng.standard_normal(sh) for sh in ((N, p), (N, p), (N, s), (N, s)))
        web, wrb = rng.standard_normal((p, s)), rng.standard_normal((p, s))
        we_ref, wr_ref, *g_ref = f(pq, pk, he, hr, web, wrb)
        (we, wr), cache = primal_weights(pq, pk, he, hr)
        pairs += [(we, we_ref), (wr, wr_ref)]
        pairs += list(zip(primal_weights_backward((web, wrb), cache), g_ref, strict=True))
    st.close("`primal_weights`, `primal_weights_backward` against SymPy", pairs)


def test_primal():
    primal()


def test_dual():
    dual()


def test_weights():
    weights()


if __name__ == "__main__":
    raise SystemExit(D.main())
