"""Softmax: the VJP, the max-shift and LSE forms, and the masked softmax with a fully masked row.

primal_np.primitives: softmax, softmax_backward, logsumexp.
Run: python derivations/derive_softmax.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat

from primal_np.primitives import logsumexp, softmax, softmax_backward

D = Derivation(
    "softmax",
    "Softmax and masked softmax",
    r"""
    Row-wise softmax $p_{ij} = e^{s_{ij}} / \sum_k e^{s_{ik}}$ on an explicit matrix of
    logits, the exponentials kept as `exp(s_ij)` (cancel/together treat them as
    independent generators, so the proofs are exact rational-function identities).
    """,
)


def _softmax_sym(S: sp.Matrix, visible=None) -> sp.Matrix:
    """p_ij = v_ij e^{s_ij} / Σ_k v_ik e^{s_ik}; an all-invisible row is 0 (empty sum)."""
    rows, cols = S.shape
    P = sp.zeros(rows, cols)
    for i in range(rows):
        vis = [visible is None or bool(visible[i][j]) for j in range(cols)]
        den = sp.Add(*[sp.exp(S[i, j]) for j in range(cols) if vis[j]])
        for j in range(cols):
            if vis[j]:
                P[i, j] = sp.exp(S[i, j]) / den
    return P


def _closed_form(P: sp.Matrix, Pbar: sp.Matrix) -> sp.Matrix:
    """primal_np's ds = p ∘ (dp − rowsum(dp ∘ p)), stated on symbols."""
    rows, cols = P.shape
    delta = [sum(Pbar[i, k] * P[i, k] for k in range(cols)) for i in range(rows)]
    return sp.Matrix(rows, cols, lambda i, j: P[i, j] * (Pbar[i, j] - delta[i]))


@D.step("Softmax VJP")
def softmax_vjp(st):
    S, Pbar = symmat("s", 2, 3), symmat(r"\bar{p}", 2, 3)
    P = _softmax_sym(S)
    L = inner(Pbar, P)
    Sbar = grad(L, S)
    st.text(
        r"""
        Forward on a 2×3 matrix of symbols, with an upstream gradient $\bar P$ (primal_np's
        `dp`) of independent symbols; the scalar whose gradient is the VJP is
        $\mathcal L = \sum_{ij} \bar p_{ij} p_{ij}$:
        """
    )
    st.eq(r"p_{11}", P[0, 0])
    st.text("SymPy's entry-wise derivative, e.g. the (1, 1) entry:")
    st.eq(r"\frac{\partial \mathcal L}{\partial s_{11}}", Sbar[0, 0])
    st.text(
        r"primal_np (`softmax_backward`): $\bar S = P \circ (\bar P - \operatorname{rowsum}(\bar P \circ P))$."
    )
    st.exact(
        r"$\partial\mathcal L/\partial S = P \circ (\bar P - \mathrm{rowsum}(\bar P \circ P))$",
        Sbar,
        _closed_form(P, Pbar),
        "cancel",
    )
    st.rejects(
        r"$\bar S = P \circ \bar P$ (rowsum term dropped)",
        Sbar,
        P.multiply_elementwise(Pbar),
        "cancel",
    )
    no_p = sp.Matrix(2, 3, lambda i, j: P[i, j] * (Pbar[i, j] - sum(Pbar[i, :])))
    st.rejects(r"$\bar S = P \circ (\bar P - \mathrm{rowsum}(\bar P))$", Sbar, no_p, "cancel")

    f = Lambdified([S, Pbar], [P, Sbar])
    rng = np.random.default_rng(101)
    fwd, bwd, wrong = [], [], []
    for _ in range(N_POINTS):
        s, pbar = 2.0 * rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
        p_ref, ds_ref = f(s, pbar)
        p, cache = softmax(s)
        ds = softmax_backward(pbar, cache).s
        fwd.append((p, p_ref))
        bwd.append((ds, ds_ref))
        wrong.append((p * pbar, ds_ref))
    st.close("`softmax` against the symbolic $P$", fwd)
    st.close("`softmax_backward` against $\\partial\\mathcal L/\\partial S$", bwd)
    st.far(r"$P \circ \bar P$ against $\partial\mathcal L/\partial S$", wrong)


@D.step("Shift by the row maximum; natural-log LSE")
def shift_and_lse(st):
    S = symmat("s", 1, 4)
    m = sp.Symbol("m", real=True)
    P = _softmax_sym(S)
    shifted = _softmax_sym(S.applyfunc(lambda x: x - m))
    st.text(
        r"""
        primal_np evaluates $e^{s_j - m}/\sum_k e^{s_k - m}$ with $m$ the row maximum, and
        reports $\mathrm{lse} = \log \sum_k e^{s_k}$ (natural log), $p_j = e^{s_j - \mathrm{lse}}$.
        For a symbol $m$ (any real shift):
        """
    )
    st.eq(r"\frac{e^{s_{11} - m}}{\sum_k e^{s_{1k} - m}}", shifted[0, 0])
    st.exact(
        r"$\mathrm{softmax}(s - m) = \mathrm{softmax}(s)$ for every real $m$", shifted, P, "cancel"
    )
    lse = sp.log(sp.Add(*[sp.exp(x) for x in S]))
    via_lse = S.applyfunc(lambda x: sp.exp(sp.expand(x - lse)))
    st.exact(r"$e^{s_j - \mathrm{lse}} = p_j$", via_lse, P, "cancel")
    st.text(
        r"""
        (SymPy already rewrites $e^{s - \log Z}$ as $e^{s}/Z$ when the expression is built, so the
        second identity is immediate; it is listed because primal_np documents $P_{ij} = e^{S_{ij} - \mathrm{lse}_i}$.)
        """
    )

    st.text(
        """
        Large logits: at s = (800, 799.5, 790, −5), where `exp` overflows in float64,
        primal_np's `softmax` and `logsumexp` are compared with SymPy evaluating the same
        symbolic expressions to 30 significant digits (`evalf`).
        """
    )
    big = [sp.Integer(800), sp.Rational(1599, 2), sp.Integer(790), sp.Integer(-5)]
    sub = dict(zip(list(S), big, strict=True))
    p_ref = np.array([float(x.subs(sub).evalf(30)) for x in P], dtype=np.float64)
    lse_ref = float(lse.subs(sub).evalf(30))
    s_num = np.array([[float(b) for b in big]])
    p, _ = softmax(s_num)
    st.close("`softmax` at logits near 800 against SymPy `evalf(30)`", [(p[0], p_ref)], points=1)
    st.close(
        "`logsumexp` at logits near 800 against SymPy `evalf(30)`",
        [(logsumexp(s_num)[0], lse_ref)],
        points=1,
    )


@D.step("Masked softmax with a fully masked row")
def masked_softmax(st):
    S, Pbar = symmat("s", 3, 4), symmat(r"\bar{p}", 3, 4)
    vis = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
    P = _softmax_sym(S, vis)
    Sbar = grad(inner(Pbar, P), S)
    st.text(
        r"""
        Visibility $v$ (True = may attend) with a full row, a partial row and a fully
        masked row:
        """
    )
    st.eq("v", sp.Matrix(vis))
    st.text(
        r"""
        Forward: $p_{ij} = v_{ij} e^{s_{ij}} / \sum_k v_{ik} e^{s_{ik}}$, and $p_{i\cdot} = 0$ when
        no key is visible (the empty sum; primal_np's convention). Symbolically:
        """
    )
    st.eq("P", P)
    st.text(
        r"""
        The derivative of $\mathcal L = \sum \bar p_{ij} p_{ij}$ with respect to masked logits and
        to the whole third row is 0. primal_np uses the *unmasked* formula on the masked $P$:
        """
    )
    st.exact(
        r"masked $\bar S = P \circ (\bar P - \mathrm{rowsum}(\bar P \circ P))$, including masked entries and the empty row",
        Sbar,
        _closed_form(P, Pbar),
        "cancel",
    )
    hidden = sp.Matrix([Sbar[i, j] for i in range(3) for j in range(4) if not vis[i][j]])
    st.exact(r"$\bar S_{ij} = 0$ wherever $v_{ij} = 0$", hidden, sp.zeros(*hidden.shape))

    f = Lambdified([S, Pbar], [P, Sbar])
    mask = np.array(vis, dtype=bool)
    rng = np.random.default_rng(102)
    fwd, bwd, wrong = [], [], []
    for _ in range(N_POINTS):
        s, pbar = 2.0 * rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        p_ref, ds_ref = f(s, pbar)
        p, cache = softmax(s, mask)
        ds = softmax_backward(pbar, cache).s
        assert np.isfinite(p).all() and np.isfinite(ds).all()
        assert not p[2].any() and not ds[2].any(), "fully masked row must be exactly 0"
        fwd.append((p, p_ref))
        bwd.append((ds, ds_ref))
        p_unmasked, c_unmasked = softmax(s)
        wrong.append((softmax_backward(pbar, c_unmasked).s, ds_ref))
    st.close(
        "`softmax(s, mask)` against the symbolic masked $P$ (fully masked row exactly 0, no NaN)",
        fwd,
    )
    st.close(
        "`softmax_backward` of the masked softmax against $\\partial\\mathcal L/\\partial S$", bwd
    )
    st.far("the unmasked softmax's VJP against the masked derivative", wrong)


def test_softmax_vjp():
    softmax_vjp()


def test_shift_and_lse():
    shift_and_lse()


def test_masked_softmax():
    masked_softmax()


if __name__ == "__main__":
    raise SystemExit(D.main())
