"""Scaled dot-product attention (dual form): the pieces of its VJP, and the composition numerically.

primal_np.dual: dual_attention, dual_attention_backward.
Run: python derivations/derive_dual_attention.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat

from primal_np.dual import dual_attention, dual_attention_backward

D = Derivation(
    "dual_attention",
    "Scaled dot-product attention: the VJP pieces",
    r"""
    Forward (one head): $S = c\,Q K^\top$, $P = \mathrm{softmax}_{\text{row}}(S)$ over the
    visible keys, $O = P V$; $c$ is the scale (default $1/\sqrt d$). The backward of
    `dual_attention_backward` is proved piece by piece; the composition of the pieces is
    the chain rule, and is checked numerically against SymPy's derivative of the
    composed forward.
    """,
)


def _softmax_rows(S: sp.Matrix, vis=None) -> sp.Matrix:
    rows, cols = S.shape
    P = sp.zeros(rows, cols)
    for i in range(rows):
        js = [j for j in range(cols) if vis is None or vis[i][j]]
        den = sp.Add(*[sp.exp(S[i, j]) for j in js])
        for j in js:
            P[i, j] = sp.exp(S[i, j]) / den
    return P


@D.step("O = P V: the value and probability gradients")
def values_piece(st):
    P, V, Obar = symmat("p", 2, 3), symmat("v", 3, 2), symmat(r"\bar{o}", 2, 2)
    L = inner(Obar, P * V)
    st.text(
        r"""
        $P$ (2×3) and $V$ (3×2) independent symbols, upstream $\bar O$ (primal_np's `dout`),
        $\mathcal L = \sum_{ic} \bar o_{ic} (PV)_{ic}$:
        """
    )
    st.eq(r"\frac{\partial\mathcal L}{\partial V}", grad(L, V))
    st.exact(r"$\bar V = P^\top \bar O$", grad(L, V), P.T * Obar)
    st.exact(r"$\bar P = \bar O V^\top$", grad(L, P), Obar * V.T)
    st.rejects(r"$\bar V = P^\top \bar O^\top$ (upstream transposed)", grad(L, V), P.T * Obar.T)
    rowsum_p = sp.Matrix([sum((Obar * V.T)[i, j] * P[i, j] for j in range(3)) for i in range(2)])
    rowsum_o = sp.Matrix([sum(Obar[i, c] * (P * V)[i, c] for c in range(2)) for i in range(2)])
    st.text(
        r"""
        The identity that lets primal_np form the softmax correction from $O$ in
        $O(N d_v)$ instead of $O(NM)$ work:
        """
    )
    st.exact(
        r"$\mathrm{rowsum}(\bar P \circ P) = \mathrm{rowsum}(\bar O \circ O)$ with $\bar P = \bar O V^\top$, $O = PV$",
        rowsum_p,
        rowsum_o,
    )


@D.step("Softmax in the middle: dS = P ∘ (dP − rowsum(dO ∘ O))")
def softmax_piece(st):
    S, V, Obar = symmat("s", 2, 3), symmat("v", 3, 2), symmat(r"\bar{o}", 2, 2)
    P = _softmax_rows(S)
    O = P * V
    L = inner(Obar, O)
    Sbar = grad(L, S)
    Pbar = Obar * V.T
    delta = [sum(Obar[i, c] * O[i, c] for c in range(2)) for i in range(2)]
    closed = sp.Matrix(2, 3, lambda i, j: P[i, j] * (Pbar[i, j] - delta[i]))
    st.text(
        r"""
        Logits $S$ (2×3) symbols, $P = \mathrm{softmax}(S)$, $O = PV$,
        $\mathcal L = \sum \bar o_{ic} o_{ic}$. SymPy differentiates through the softmax;
        primal_np's form is $\bar S = P \circ (\bar O V^\top - \mathrm{rowsum}(\bar O \circ O))$.
        """
    )
    st.exact(
        r"$\partial\mathcal L/\partial S = P \circ (\bar P - \mathrm{rowsum}(\bar O \circ O))$",
        Sbar,
        closed,
        "cancel",
    )
    wrong = sp.Matrix(2, 3, lambda i, j: P[i, j] * Pbar[i, j])
    st.rejects(r"$\bar S = P \circ \bar P$ (softmax correction dropped)", Sbar, wrong, "cancel")


@D.step("Scaled logits: dQ = c·dS K, dK = c·dSᵀ Q")
def logits_piece(st):
    Q, K, Sbar = symmat("q", 2, 2), symmat("k", 3, 2), symmat(r"\bar{s}", 2, 3)
    c = sp.Symbol("c", real=True)
    L = inner(Sbar, c * Q * K.T)
    st.text(r"$S = c\,QK^\top$ with $Q$ 2×2, $K$ 3×2, a symbolic scale $c$ and upstream $\bar S$:")
    st.eq(r"\frac{\partial\mathcal L}{\partial Q}", grad(L, Q))
    st.exact(r"$\bar Q = c\,\bar S K$", grad(L, Q), c * Sbar * K)
    st.exact(r"$\bar K = c\,\bar S^\top Q$", grad(L, K), c * Sbar.T * Q)
    st.rejects(r"$\bar K = \bar S^\top Q$ (scale omitted)", grad(L, K), Sbar.T * Q)


def _composed(n, m, d, dv, vis, batch):
    """Σ_b ⟨Ō_b, softmax(c Q_b Kᵀ) V⟩ on symbols, and its gradients wrt Q_b, K, V."""
    Qs = [symmat(f"q^{{({b + 1})}}", n, d) for b in range(batch)]
    Obars = [symmat(rf"\bar{{o}}^{{({b + 1})}}", n, dv) for b in range(batch)]
    K, V = symmat("k", m, d), symmat("v", m, dv)
    c = sp.Symbol("c", real=True)
    L = sp.Add(
        *[inner(Ob, _softmax_rows(c * Qb * K.T, vis) * V) for Qb, Ob in zip(Qs, Obars, strict=True)]
    )
    outs = [grad(L, Qb) for Qb in Qs] + [grad(L, K), grad(L, V)]
    return Lambdified([*Qs, K, V, *Obars, c], outs)


@D.step("The composition, numerically: dual_attention_backward against SymPy")
def composition(st):
    st.text(
        r"""
        SymPy differentiates the composed scalar $\sum_b \langle \bar O_b,
        \mathrm{softmax}(c\,Q_b K^\top) V\rangle$ entry-wise (no closed form asserted), and the
        result is evaluated at random points and compared with `dual_attention_backward`.
        Two configurations: (a) two query blocks sharing $K, V$ (a broadcast leading axis,
        so $\bar K, \bar V$ are summed over it), N = 2, M = 3, d = dv = 2, default scale
        1/√2; (b) `causal=True` combined with an explicit mask that leaves row 2 with no
        visible key, N = M = 3, scale 0.7 (primal_np must return exact zeros for that row's
        output and query gradient, and no NaN).
        """
    )
    rng = np.random.default_rng(201)
    mask = [[1, 1, 1], [0, 0, 0], [1, 0, 1]]
    both = [[int(mask[i][j] and j <= i) for j in range(3)] for i in range(3)]
    configs = [
        ("(a)", 2, 3, None, 2, {}, 1 / np.sqrt(2)),
        (
            "(b)",
            3,
            3,
            both,
            1,
            {"causal": True, "scale": 0.7, "mask": np.array(mask, dtype=bool)},
            0.7,
        ),
    ]
    for name, n, m, vis, batch, kw, c in configs:
        f = _composed(n, m, 2, 2, vis, batch)
        pairs, wrong = [], []
        for _ in range(N_POINTS):
            q = rng.standard_normal((batch, n, 2)) if batch > 1 else rng.standard_normal((n, 2))
            k, v = rng.standard_normal((m, 2)), rng.standard_normal((m, 2))
            dout = rng.standard_normal((*q.shape[:-1], 2))
            qs = list(q) if batch > 1 else [q]
            ds = list(dout) if batch > 1 else [dout]
            *dq_ref, dk_ref, dv_ref = f(*qs, k, v, *ds, c)
            out, cache = dual_attention(q, k, v, **kw)
            assert np.isfinite(out).all()
            dq, dk, dv = dual_attention_backward(dout, cache)
            dq_ref = np.stack(dq_ref) if batch > 1 else dq_ref[0]
            pairs += [(dq, dq_ref), (dk, dk_ref), (dv, dv_ref)]
            wrong.append((dk / c, dk_ref))
            if name == "(b)":
                assert not out[1].any() and not dq[1].any(), (
                    "fully masked row must give exact zeros"
                )
        st.close(f"{name} `dual_attention_backward` (dQ, dK, dV) against SymPy's gradient", pairs)
        if name == "(b)":
            st.far("(b) dK without the scale factor", wrong)


def test_values_piece():
    values_piece()


def test_softmax_piece():
    softmax_piece()


def test_logits_piece():
    logits_piece()


def test_composition():
    composition()


if __name__ == "__main__":
    raise SystemExit(D.main())
