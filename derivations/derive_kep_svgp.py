"""KEP-SVGP attention: the KL term and its gradient, the posterior sample and its backward,
V₁ = (E + R)Λ, the mean and the KEP-SVGP KSVD loss.

primal_np.kep_svgp: kep_svgp_kl(_backward), cholesky_factor(_backward),
posterior_sample(_backward), eigen_features(_backward), posterior_mean(_backward),
kep_svgp_ksvd_loss(_backward).
Run: python derivations/derive_kep_svgp.py
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symtensor

from primal_np.kep_svgp import (
    cholesky_factor,
    cholesky_factor_backward,
    eigen_features,
    eigen_features_backward,
    kep_svgp_kl,
    kep_svgp_kl_backward,
    kep_svgp_ksvd_loss,
    kep_svgp_ksvd_loss_backward,
    posterior_mean,
    posterior_mean_backward,
    posterior_sample,
    posterior_sample_backward,
)

D = Derivation(
    "kep_svgp",
    "KEP-SVGP attention: KL term, posterior sample, V₁, mean and KSVD loss",
    r"""
    Per head $h$ the authors' parameters are $\ell_h \in \mathbb R^s$ (`log_lambda_sqrt_inv_diag`,
    $\Lambda_h = \mathrm{diag}(e^{2\ell_h})$), $m_u[h] \in \mathbb R^{s\times s}$ (rows: inducing
    index $a$, columns: output $c$) and the factor $L[h] \in \mathbb R^{s\times s\times s}$ built
    by `cholesky_factor`: $L[h,a,r,c] = e^{\log s[h,a,r]}$ for $r = c$, the free entry $T[h,a,r,c]$
    for $r > c$, 0 above. Their sample gives output $c$ the factor $M_c[a,r] = L[h,a,r,c]$.
    Sizes: H = 2, s = 2 for the KL term; one head, B = 2, N' = 2, s = 2 for the rest.
    """,
)
H, S = 2, 2
Bs, Ns = 2, 2  # sequences and rows of the one-head problems
RNG = np.random.default_rng(1717)
R2 = sp.Rational(1, 2)


def build(shape, f):
    """Object array of ``shape`` with entry f(*index)."""
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = f(*idx)
    return out


def ssum(f, *ranges):
    """Σ f(*index) over the product of the ranges (sizes)."""
    return sp.Add(*[f(*idx) for idx in itertools.product(*(range(n) for n in ranges))])


def _factor(log_s, low):
    """The symbolic (H, s, s, s) factor of ``cholesky_factor``."""
    return build(
        (H, S, S, S),
        lambda h, a, r, c: sp.exp(log_s[h, a, r]) if r == c else (low[h, a, r, c] if r > c else 0),
    )


def _kl_symbols():
    return (
        symtensor(r"\ell", (H, S)),
        symtensor("m", (H, S, S)),
        symtensor(r"\varsigma", (H, S, S)),
        symtensor("T", (H, S, S, S)),
    )


def _kl_expr(ell, m, L, log_s, layout):
    """Their kl; Λ weighs L[h,a,·,·] ("authors") or L[h,·,a,·] ("per_output")."""
    a_of = (lambda i, j: i) if layout == "authors" else (lambda i, j: j)
    trace = ssum(
        lambda h, i, j, k: (sp.exp(2 * ell[h, a_of(i, j)]) * L[h, i, j, k]) ** 2, H, S, S, S
    )
    quad = ssum(lambda h, a, c: sp.exp(4 * ell[h, a]) * m[h, a, c] ** 2, H, S, S)
    const = sp.Rational(S * S * H, 2)
    return R2 * trace + R2 * quad - sum(log_s.ravel()) - 2 * S * sum(ell.ravel()) - const


def _matrix(f):
    return sp.Matrix(S, S, f)


@D.step("The KL term: what it equals, and where it is not a KL")
def kl_meaning(st):
    st.text(
        r"""
        The Gaussian KL of $\mathcal N(m, GG^\top)$ against the prior $\mathcal N(0, \Lambda^{-2})$ is
        $\tfrac12[\mathrm{tr}(\Lambda^2GG^\top) + m^\top\Lambda^2m - s + \log|\Lambda^{-2}| - \log|GG^\top|]$.
        With `layout="per_output"` ($G = L[h,c]$, lower triangular over $(a, r)$) their formula is
        that KL summed over heads and outputs; in the authors' layout ($G = M_c$) the trace and
        mean terms match but $-\sum\log s$ is not $-\tfrac12\log|M_cM_c^\top|$: $M_c$ has zero
        columns $r < c$, so $|M_cM_c^\top| = 0$ for $c \ge 2$ (1-indexed).
        """
    )
    ell, m, log_s, low = _kl_symbols()
    L = _factor(log_s, low)
    exact, authors, dets = 0, 0, []
    for h, c in itertools.product(range(H), range(S)):
        Ki = sp.diag(*[sp.exp(4 * ell[h, a]) for a in range(S)])
        mc = sp.Matrix(m[h, :, c])
        head = R2 * ((mc.T * Ki * mc)[0, 0] - S) - 2 * sum(ell[h, :])  # ½(mᵀΛ²m − s + log|Λ⁻²|)
        G = _matrix(lambda a, r, h=h, c=c: L[h, c, a, r])
        logdet = 2 * sum(log_s[h, c, :])
        dets.append(((G * G.T).det(), sp.exp(logdet)))
        exact += head + R2 * ((Ki * G * G.T).trace() - logdet)
        Mc = _matrix(lambda a, r, h=h, c=c: L[h, a, r, c])
        authors += head + R2 * (Ki * Mc * Mc.T).trace()
    st.exact(
        r"`per_output`: $|L_cL_c^\top| = e^{2\sum_a\log s[h,c,a]}$ for every head and output",
        [d for d, _ in dets],
        [e for _, e in dets],
    )
    st.exact(
        r"`per_output`: kl $= \sum_{h,c}\mathrm{KL}(\mathcal N(m_c, L_cL_c^\top)\,\|\,\mathcal N(0, \Lambda^{-2}))$",
        _kl_expr(ell, m, L, log_s, "per_output"),
        exact,
    )
    st.exact(
        r"authors: kl $= \sum_{h,c}\tfrac12[\mathrm{tr}(\Lambda^2M_cM_c^\top) + m_c^\top\Lambda^2m_c - s + \log|\Lambda^{-2}|] - \sum\log s$",
        _kl_expr(ell, m, L, log_s, "authors"),
        authors - sum(log_s.ravel()),
    )
    for h in range(H):
        M2 = _matrix(lambda a, r, h=h: L[h, a, r, 1])
        st.exact(
            f"authors, head {h + 1}: $|M_2M_2^\\top| = 0$ (KL(q‖p) = +∞)", (M2 * M2.T).det(), 0
        )
    M1 = _matrix(lambda a, r: L[0, a, r, 0])
    st.rejects(
        r"authors: $|M_1M_1^\top| = e^{2\sum_a\log s[1,a,1]}$ (what $-\sum\log s$ would need)",
        (M1 * M1.T).det(),
        sp.exp(2 * (log_s[0, 0, 0] + log_s[0, 1, 0])),
    )


def _kl_closed_forms(ell, m, log_s, low, L, layout):
    """primal_np's gradient formulas, chained through the factor, on symbols."""

    def lam2(h, i, j):
        return sp.exp(4 * ell[h, i if layout == "authors" else j])

    def sq(h, a):
        if layout == "authors":
            return ssum(lambda r, c: L[h, a, r, c] ** 2, S, S)
        return ssum(lambda c, r: L[h, c, a, r] ** 2, S, S)

    d_ell = build(
        (H, S),
        lambda h, a: (
            2 * sp.exp(4 * ell[h, a]) * (sq(h, a) + ssum(lambda c, h=h, a=a: m[h, a, c] ** 2, S))
            - 2 * S
        ),
    )
    d_m = build((H, S, S), lambda h, a, c: sp.exp(4 * ell[h, a]) * m[h, a, c])
    d_logs = build(
        (H, S, S), lambda h, i, j: lam2(h, i, j) * L[h, i, j, j] * sp.exp(log_s[h, i, j]) - 1
    )
    d_low = build((H, S, S, S), lambda h, i, j, k: lam2(h, i, j) * low[h, i, j, k] if j > k else 0)
    return d_ell, d_m, d_logs, d_low


@D.step("Gradient of the KL term through the factor")
def kl_gradient(st):
    ell, m, log_s, low = _kl_symbols()
    L = _factor(log_s, low)
    for layout in ("authors", "per_output"):
        _kl_gradient(st, layout, ell, m, log_s, low, L)


def _kl_gradient(st, layout, ell, m, log_s, low, L):
    kl = _kl_expr(ell, m, L, log_s, layout)
    derived = [grad(kl, t) for t in (ell, m, log_s, low)]
    closed = _kl_closed_forms(ell, m, log_s, low, L, layout)
    labels = (
        r"$\partial\mathrm{kl}/\partial\ell = 2\Lambda^2(\sum L^2 + \sum m_u^2) - 2s$",
        r"$\partial\mathrm{kl}/\partial m_u = \Lambda^2 m_u$",
        r"$\partial\mathrm{kl}/\partial\log s = \Lambda^2 L_{rr}\,e^{\log s} - 1$ (the diagonal)",
        r"$\partial\mathrm{kl}/\partial T = \Lambda^2 T$ strictly below the diagonal, else 0",
    )
    for label, d, c in zip(labels, derived, closed, strict=True):
        st.exact(f"`{layout}`: {label}", d, c)
    if layout == "authors":

        def mean_part(h, a):
            return 2 * sp.exp(4 * ell[h, a]) * ssum(lambda c: m[h, a, c] ** 2, S) - 2 * S

        st.rejects(
            r"$\partial\mathrm{kl}/\partial\ell$ without the trace term's part",
            derived[0],
            build((H, S), mean_part),
        )
    f = Lambdified([ell, m, log_s, low], [kl, *derived])
    pairs = []
    for _ in range(N_POINTS):
        v = [RNG.uniform(-0.5, 0.5, (H, S))]
        v += [RNG.standard_normal(t.shape) for t in (m, log_s, low)]
        ref = f(*v)
        Lf, fc = cholesky_factor(v[2][None], v[3][None])
        val, kc = kep_svgp_kl(v[0], v[1][None], Lf, v[2][None], layout=layout)
        gk = kep_svgp_kl_backward(1.0, kc)
        gf = cholesky_factor_backward(gk.factor, fc)
        d_logs = gk.log_ssqrt[0] + gf.log_ssqrt[0]
        ours = [val, gk.log_lambda, gk.m_u[0], d_logs, gf.s_sqrt_low_triangle[0]]
        pairs += [(np.array(a), b) for a, b in zip(ours, ref, strict=True)]
    st.close(
        f"`{layout}`: `kep_svgp_kl`, its backward chained through `cholesky_factor_backward`",
        pairs,
    )


@D.step("Posterior sample Y = M + Σ V₁ L ε and its backward")
def sample(st):
    st.text(
        r"""
        One head, B = 2 sequences of N' = 2 rows, s = 2. Authors' layout:
        $Y[b,i,c] = M[b,i,c] + \sum_{a,r}V_1[b,i,a]\,L[a,r,c]\,\varepsilon[b,i,r]$; `per_output`:
        $Y[b,i,c] = M[b,i,c] + \sum_{a,r}V_1[b,i,a]\,L[c,a,r]\,\varepsilon[b,i,c,r]$;
        $\mathcal L = \langle\bar Y, Y\rangle$. The noise is an input, not differentiated.
        """
    )
    V, M, Yb = (symtensor(n, (Bs, Ns, S)) for n in ("V", "M", r"\bar{Y}"))
    L = symtensor("L", (S, S, S))
    for layout in ("authors", "per_output"):
        _sample(st, layout, V, M, Yb, L)


def _sample(st, layout, V, M, Yb, L):
    authors = layout == "authors"
    eps = symtensor(r"\varepsilon", (Bs, Ns, S) if authors else (Bs, Ns, S, S))

    def fac(a, r, c):  # the factor entry that multiplies V₁[·,a] ε[·,r] in output c
        return L[a, r, c] if authors else L[c, a, r]

    def noise(b, i, c, r):
        return eps[b, i, r] if authors else eps[b, i, c, r]

    def y(b, i, c):
        return M[b, i, c] + ssum(lambda a, r: V[b, i, a] * fac(a, r, c) * noise(b, i, c, r), S, S)

    def d_v(b, i, a):
        return ssum(lambda r, c: Yb[b, i, c] * fac(a, r, c) * noise(b, i, c, r), S, S)

    def d_l_arc(a, r, c):
        return ssum(lambda b, i: V[b, i, a] * noise(b, i, c, r) * Yb[b, i, c], Bs, Ns)

    Y = build((Bs, Ns, S), y)
    obj = sp.expand(inner(Yb, Y))
    dV = build((Bs, Ns, S), d_v)
    dL_arc = build((S, S, S), d_l_arc)
    dL = dL_arc if authors else build((S, S, S), lambda c, a, r: dL_arc[a, r, c])
    st.exact(f"`{layout}`: $\\bar M = \\bar Y$", grad(obj, M), Yb)
    st.exact(
        f"`{layout}`: $\\bar V_1$ (the forward's contraction with $\\bar Y$ in place of $V_1$)",
        grad(obj, V),
        dV,
    )
    st.exact(f"`{layout}`: $\\bar L$ summed over sequences and rows", grad(obj, L), dL)
    if authors:
        st.rejects(
            r"$\bar L[a,r,c]$ with the noise and output indices exchanged",
            grad(obj, L),
            build((S, S, S), lambda a, r, c: dL_arc[a, c, r]),
        )
        J = _matrix(lambda c, r: sp.diff(Y[0, 0, c], eps[0, 0, r]))
        v = sp.Matrix(V[0, 0, :])
        Mc = [_matrix(lambda a, r, c=c: L[a, r, c]) for c in range(S)]
        st.exact(
            r"authors: one row's output covariance $JJ^\top = [v_1^\top M_cM_{c'}^\top v_1]_{cc'}$"
            " (one noise vector for all outputs)",
            J * J.T,
            _matrix(lambda c, d: (v.T * Mc[c] * Mc[d].T * v)[0, 0]),
        )
    f = Lambdified([M, V, L, eps, Yb], [Y, grad(obj, M), grad(obj, V), grad(obj, L)])
    pairs = []
    for _ in range(N_POINTS):
        m_, v_, l_, e_, yb = (RNG.standard_normal(t.shape) for t in (M, V, L, eps, Yb))
        ref = f(m_, v_, l_, e_, yb)
        e5 = e_[:, None, ..., None] if authors else e_[:, None]
        out, cache = posterior_sample(m_[:, None], v_[:, None], l_[None, None], e5, layout=layout)
        g = posterior_sample_backward(yb[:, None], cache)
        ours = [out[:, 0], g.mean[:, 0], g.v1[:, 0], g.factor[0, 0]]
        pairs += list(zip(ours, ref, strict=True))
    st.close(f"`{layout}`: `posterior_sample` and `posterior_sample_backward`", pairs)


@D.step("V₁ = (E + R)Λ or [E; R]Λ, and the mean V₁ m_u")
def features_and_mean(st):
    st.text(
        r"""
        One head, B = 2, N = 2, s = 2: $V_1 = (E + R)\,\mathrm{diag}(e^{\ell})^2$ (or $[E; R]$ on
        2N rows), $M = V_1 m_u$, each with upstream $\bar V_1$, $\bar M$.
        """
    )
    E, R = symtensor("E", (Bs, Ns, S)), symtensor("R", (Bs, Ns, S))
    ell = symtensor(r"\ell", (S,))
    for concate in (False, True):
        _features(st, concate, E, R, ell)
    V, Mb, mu = (
        symtensor("V", (Bs, Ns, S)),
        symtensor(r"\bar{M}", (Bs, Ns, S)),
        symtensor("m", (S, S)),
    )
    Mm = build((Bs, Ns, S), lambda b, i, c: ssum(lambda a: V[b, i, a] * mu[a, c], S))
    obj = inner(Mb, Mm)
    st.exact(
        r"$M = V_1m_u$: $\bar V_1 = \bar M m_u^\top$",
        grad(obj, V),
        build(V.shape, lambda b, i, a: ssum(lambda c: Mb[b, i, c] * mu[a, c], S)),
    )
    st.exact(
        r"$\bar m_u = \sum_b V_1^\top\bar M$",
        grad(obj, mu),
        build(mu.shape, lambda a, c: ssum(lambda b, i: V[b, i, a] * Mb[b, i, c], Bs, Ns)),
    )
    f = Lambdified([V, mu, Mb], [Mm, grad(obj, V), grad(obj, mu)])
    pairs = []
    for _ in range(N_POINTS):
        v_, m_, mb = (RNG.standard_normal(t.shape) for t in (V, mu, Mb))
        ref = f(v_, m_, mb)
        out, c = posterior_mean(v_[:, None], m_[None, None])
        g = posterior_mean_backward(mb[:, None], c)
        pairs += list(zip([out[:, 0], g.v1[:, 0], g.m_u[0, 0]], ref, strict=True))
    st.close("`posterior_mean` and its backward", pairs)


def _features(st, concate, E, R, ell):
    lam = [sp.exp(ell[a]) ** 2 for a in range(S)]
    base = np.concatenate([E, R], axis=1) if concate else E + R
    shape = base.shape
    Vbar = symtensor(r"\bar{V}", shape)
    V1 = build(shape, lambda b, i, a: base[b, i, a] * lam[a])
    obj = inner(Vbar, V1)
    d_base = build(shape, lambda b, i, a: Vbar[b, i, a] * lam[a])
    dE, dR = (d_base[:, :Ns], d_base[:, Ns:]) if concate else (d_base, d_base)

    def d_ell(a):
        return 2 * lam[a] * ssum(lambda b, i: base[b, i, a] * Vbar[b, i, a], Bs, shape[1])

    d_ells = [d_ell(a) for a in range(S)]
    tag = "[E; R]" if concate else "E + R"
    st.exact(
        f"$V_1 = ({tag})\\Lambda$: $\\bar E$, $\\bar R$, "
        f"$\\bar\\ell = 2\\Lambda\\sum_{{b,i}}({tag})\\odot\\bar V_1$",
        [*grad(obj, E).ravel(), *grad(obj, R).ravel(), *grad(obj, ell)],
        [*dE.ravel(), *dR.ravel(), *d_ells],
    )
    if not concate:
        st.rejects(
            r"$\bar\ell$ with the factor 2 of $e^{2\ell}$ dropped",
            grad(obj, ell),
            [d / 2 for d in d_ells],
        )
    f = Lambdified([E, R, ell, Vbar], [V1, grad(obj, E), grad(obj, R), grad(obj, ell)])
    pairs = []
    for _ in range(N_POINTS):
        e_, r_, vb = (RNG.standard_normal(t.shape) for t in (E, R, Vbar))
        l_ = RNG.uniform(-1, 1, S)
        ref = f(e_, r_, l_, vb)
        v, c = eigen_features(e_[:, None], r_[:, None], l_[None], concate=concate)
        g = eigen_features_backward(vb[:, None], c)
        ours = [v[:, 0], g.escore[:, 0], g.rscore[:, 0], g.log_lambda[0]]
        pairs += list(zip(ours, ref, strict=True))
    st.close(f"`eigen_features` (concate={concate}) and its backward", pairs)


@D.step("The KEP-SVGP KSVD loss: λ = exp(ℓ) on the scores")
def ksvd(st):
    st.text(
        r"""
        One head, B = 2, N = 2, s = 2, $W_e, W_r \in \mathbb R^{1\times 2}$:
        $j = \mathrm{mean}_{b,i}\tfrac12\lVert e^{\ell}\odot e_{bi}\rVert^2 +
        \mathrm{mean}_{b,i}\tfrac12\lVert e^{\ell}\odot r_{bi}\rVert^2 - \mathrm{Tr}(W_e^\top W_r)$,
        loss $j^2$.
        """
    )
    E, R = symtensor("E", (Bs, Ns, S)), symtensor("R", (Bs, Ns, S))
    ell = symtensor(r"\ell", (S,))
    we, wr = symtensor("w^e", (1, S)), symtensor("w^r", (1, S))
    mean = sp.Rational(1, Bs * Ns)

    def quad(X):
        return mean * ssum(lambda b, i, a: R2 * (sp.exp(ell[a]) * X[b, i, a]) ** 2, Bs, Ns, S)

    j = quad(E) + quad(R) - ssum(lambda a: we[0, a] * wr[0, a], S)
    loss = j**2

    def d_ell(a):
        sq = ssum(lambda b, i: E[b, i, a] ** 2 + R[b, i, a] ** 2, Bs, Ns)
        return 2 * j * mean * sp.exp(2 * ell[a]) * sq

    d_ells = [d_ell(a) for a in range(S)]
    st.exact(
        r"$\partial/\partial\ell_a = 2j\cdot\tfrac1{BN}e^{2\ell_a}\sum_{b,i}(e_{bia}^2 + r_{bia}^2)$",
        grad(loss, ell),
        d_ells,
    )
    st.exact(
        r"$\partial/\partial W_e = -2j\,W_r$",
        grad(loss, we),
        build((1, S), lambda _, a: -2 * j * wr[0, a]),
    )
    st.rejects(
        r"$\partial/\partial\ell_a$ with $e^{4\ell_a}$ (scores scaled by Λ, as Primal-Attention's λ²)",
        grad(loss, ell),
        [d * sp.exp(2 * ell[a]) for a, d in enumerate(d_ells)],
    )
    ins = [E, R, ell, we, wr]
    f = Lambdified(ins, [loss, *(grad(loss, t) for t in ins)])
    pairs = []
    for _ in range(N_POINTS):
        v = [RNG.standard_normal(t.shape) for t in ins]
        ref = f(*v)
        val, c = kep_svgp_ksvd_loss(*(a[:, None] for a in v[:2]), *(a[None] for a in v[2:]))
        g = kep_svgp_ksvd_loss_backward(1.0, c)
        ours = [val, g.escore[:, 0], g.rscore[:, 0], g.log_lambda[0], g.we[0], g.wr[0]]
        pairs += [(np.array(a), b) for a, b in zip(ours, ref, strict=True)]
    st.close("`kep_svgp_ksvd_loss` and its backward (λ = exp(ℓ) through `ksvd_loss`)", pairs)


def test_kl_meaning():
    kl_meaning()


def test_kl_gradient():
    kl_gradient()


def test_sample():
    sample()


def test_features_and_mean():
    features_and_mean()


def test_ksvd():
    ksvd()


if __name__ == "__main__":
    raise SystemExit(D.main())
