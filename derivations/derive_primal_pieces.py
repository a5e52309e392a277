"""Primal-Attention layer pieces only the layer has, through primal_attention_backward itself:
the gather/scatter of W_{e|X} = Fᵀ W_e with repeated positions, and the shared 2s → p map.

primal_np.layer: primal_attention, primal_attention_backward (through ``ksvd_grads`` as an
entry point for upstream gradients on the intermediates).
Run: python derivations/derive_primal_pieces.py
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, inner, symmat
from layer_statement import Case, config, forward_values, random_point

from primal_np.ksvd_loss import KSVDGrads, ksvd_terms_from_cache
from primal_np.layer import primal_attention, primal_attention_backward

D = Derivation(
    "primal_pieces",
    "Primal-Attention layer pieces: gather/scatter of F and the 2s → p map",
    r"""
    Two steps only the layer has, proved on symbols and then checked numerically on
    `primal_attention_backward`, isolated by choosing which upstream gradients are
    non-zero: the data-dependent weights $W_{e|X} = F^\top W_e$ with $F$ gathered from the
    layer input at sampled positions that may repeat, and the head output
    $[E, R]\,W_c^\top + b_c$ shared by all heads. The positions and the intermediates
    ($\Phi$, $E$, $R$) come from the definitions (`layer_statement.py`), never from
    primal_np's cache; the whole layer is checked end to end in
    [`derive_primal_layer.py`](derive_primal_layer.py).
    """,
)
Bt, H, p, s = 2, 2, 2, 1  # batch, heads, head dim, low rank


def _upstream(cache, **given) -> KSVDGrads:
    """Upstream gradients on the layer's intermediates (zero where not given), passed in
    through the ``ksvd_grads`` entry point the KSVD loss uses."""
    t = ksvd_terms_from_cache(cache)
    return KSVDGrads(**{f: given.get(f, np.zeros_like(getattr(t, f))) for f in KSVDGrads._fields})


def _gather_case(num_tokens: int) -> Case:
    return Case("gather", "lra", B=Bt, N=num_tokens, H=H, p=p, s=s, m=5)


def _gather_problem(num_tokens: int, idx: list[int], scores: bool):
    n = len(idx)
    X = [symmat(f"x^{{({b + 1})}}", num_tokens, H * p) for b in range(Bt)]
    We = [symmat(f"W^{{e({h + 1})}}", n, s) for h in range(H)]
    Wr = [symmat(f"W^{{r({h + 1})}}", n, s) for h in range(H)]
    Pq = [
        [symmat(rf"\Phi^{{q({b + 1}{h + 1})}}", num_tokens, p) for h in range(H)] for b in range(Bt)
    ]
    Pk = [
        [symmat(rf"\Phi^{{k({b + 1}{h + 1})}}", num_tokens, p) for h in range(H)] for b in range(Bt)
    ]
    Eb = [
        [symmat(rf"\bar{{E}}^{{({b + 1}{h + 1})}}", num_tokens, s) for h in range(H)]
        for b in range(Bt)
    ]
    Rb = [
        [symmat(rf"\bar{{R}}^{{({b + 1}{h + 1})}}", num_tokens, s) for h in range(H)]
        for b in range(Bt)
    ]
    G = [[symmat(rf"\bar{{W}}^{{eX({b + 1}{h + 1})}}", p, s) for h in range(H)] for b in range(Bt)]
    Gr = [[symmat(rf"\bar{{W}}^{{rX({b + 1}{h + 1})}}", p, s) for h in range(H)] for b in range(Bt)]
    F = [
        [sp.Matrix(n, p, lambda k, c, b=b, h=h: X[b][int(idx[k]), h * p + c]) for h in range(H)]
        for b in range(Bt)
    ]
    L = 0
    for b, h in itertools.product(range(Bt), range(H)):
        we_x, wr_x = F[b][h].T * We[h], F[b][h].T * Wr[h]
        L += inner(G[b][h], we_x) + inner(Gr[b][h], wr_x)
        if scores:
            L += inner(Eb[b][h], Pq[b][h] * we_x) + inner(Rb[b][h], Pk[b][h] * wr_x)
    L = sp.expand(L)  # a polynomial; expanded once so that the entry-wise diffs below are cheap
    return dict(X=X, We=We, Wr=Wr, Pq=Pq, Pk=Pk, Eb=Eb, Rb=Rb, G=G, Gr=Gr, F=F, L=L)


@D.step("Gather F, W_{e|X} = Fᵀ W_e, and the scatter-add backward (repeated indices)")
def gather_scatter(st):
    st.text(
        r"""
        LRA layer, H = 2 heads of p = 2 channels, s = 1, m = 5: n = 5 sampled positions. For
        N = 3 tokens the formula gives (0, 0, 1, 1, 2) — repeated, as the authors' code
        does when N < n; for N = 7 it gives (0, 1, 3, 4, 6). Head $h$'s $F^{(bh)}$ holds rows
        idx of channels $[hp, (h+1)p)$ of $x^{(b)}$, B = 2. With upstream gradients
        $\bar W_{e|X}, \bar W_{r|X}$ on the data-dependent weights and $\bar E, \bar R$ on the
        scores $E = \Phi_q W_{e|X}$ ($\Phi$ held as free symbols here; this score path is
        included for N = 3),
        """
    )
    st.math(
        r"\mathcal L = \sum_{bh}\langle\bar W_{e|X}^{(bh)}, F^{(bh)\top}W_e^{(h)}\rangle + \langle\bar E^{(bh)}, \Phi_q^{(bh)}F^{(bh)\top}W_e^{(h)}\rangle + (\text{the same for } r)."
    )
    st.text(
        r"primal_np: $\bar W_{e|X} \mathrel{+}= \Phi_q^\top\bar E$; $\bar W_e = \sum_b F\,\bar W_{e|X}$; $\bar F = W_e\bar W_{e|X}^\top + W_r\bar W_{r|X}^\top$ scatter-added into the rows idx of $\bar x$ (repeats summed)."
    )
    rng = np.random.default_rng(1101)
    for num_tokens in (3, 7):
        case = _gather_case(num_tokens)
        cfg, idx = config(case), case.positions()
        phi = forward_values(case, ("Phi_q", "Phi_k"))
        scores = num_tokens == 3  # the Ē, R̄ path once; N = 7 checks the gather alone
        P = _gather_problem(num_tokens, idx, scores)
        X, We, Wr, F, L = P["X"], P["We"], P["Wr"], P["F"], P["L"]
        gX, gWe, gWr = [grad(L, x) for x in X], [grad(L, w) for w in We], [grad(L, w) for w in Wr]
        dwe = [
            [P["G"][b][h] + int(scores) * P["Pq"][b][h].T * P["Eb"][b][h] for h in range(H)]
            for b in range(Bt)
        ]
        dwr = [
            [P["Gr"][b][h] + int(scores) * P["Pk"][b][h].T * P["Rb"][b][h] for h in range(H)]
            for b in range(Bt)
        ]
        for h in range(H):
            st.exact(
                f"N = {num_tokens}, head {h + 1}: $\\bar W_e = \\sum_b F\\,\\bar W_{{e|X}}$, $\\bar W_r = \\sum_b F\\,\\bar W_{{r|X}}$",
                gWe[h].row_join(gWr[h]),
                sum((F[b][h] * dwe[b][h] for b in range(Bt)), sp.zeros(len(idx), s)).row_join(
                    sum((F[b][h] * dwr[b][h] for b in range(Bt)), sp.zeros(len(idx), s))
                ),
            )
        scatter = [sp.zeros(num_tokens, H * p) for _ in range(Bt)]
        last = [sp.zeros(num_tokens, H * p) for _ in range(Bt)]
        for b, h in itertools.product(range(Bt), range(H)):
            dF = We[h] * dwe[b][h].T + Wr[h] * dwr[b][h].T
            for k, c in itertools.product(range(len(idx)), range(p)):
                scatter[b][int(idx[k]), h * p + c] += dF[k, c]
                last[b][int(idx[k]), h * p + c] = dF[k, c]  # assignment: the last repeat wins
        for b in range(Bt):
            st.exact(
                f"N = {num_tokens}, sequence {b + 1}: $\\partial\\mathcal L/\\partial x$ (through $F$) = scatter-add of $\\bar F$",
                gX[b],
                scatter[b],
            )
        if len(set(idx)) < len(idx):
            st.rejects(
                f"N = {num_tokens}: scatter by assignment (repeated rows overwritten, not summed)",
                gX[0],
                last[0],
            )

        ins = [
            *X,
            *We,
            *Wr,
            *(m for row in P["Pq"] for m in row),
            *(m for row in P["Pk"] for m in row),
        ]
        ups = [
            *(m for row in P["Eb"] for m in row),
            *(m for row in P["Rb"] for m in row),
            *(m for row in P["G"] for m in row),
            *(m for row in P["Gr"] for m in row),
        ]
        f = Lambdified([*ins, *ups], [*gX, *gWe, *gWr])
        fwd = Lambdified([*X, *We], [F[b][h].T * We[h] for b in range(Bt) for h in range(H)])
        pairs, both = [], []
        for _ in range(N_POINTS):
            x, params = random_point(case, rng)
            y, cache = primal_attention(x, params, cfg)
            we_l, wr_l = list(params["we"]), list(params["wr"])
            phi_q, phi_k = phi(x, *params.values())  # from the definitions, not the cache
            phq = [phi_q[b, h] for b in range(Bt) for h in range(H)]
            phk = [phi_k[b, h] for b in range(Bt) for h in range(H)]
            g, gr = rng.standard_normal((Bt, H, p, s)), rng.standard_normal((Bt, H, p, s))
            pairs += list(
                zip(
                    [cache.we_x[b, h] for b in range(Bt) for h in range(H)],
                    fwd(*x, *we_l),
                    strict=True,
                )
            )
            # run 1: only Wbar_{e|X}, Wbar_{r|X} upstream (dy = 0, dE = dR = 0): dx is the scatter alone
            zero_s = np.zeros((Bt, H, num_tokens, s))
            ref = f(
                *x,
                *we_l,
                *wr_l,
                *phq,
                *phk,
                *zero_s.reshape(-1, num_tokens, s),
                *zero_s.reshape(-1, num_tokens, s),
                *g.reshape(-1, p, s),
                *gr.reshape(-1, p, s),
            )
            dx, grads = primal_attention_backward(
                np.zeros_like(y), cache, ksvd_grads=_upstream(cache, we_x=g, wr_x=gr)
            )
            pairs += [
                (dx, np.stack(ref[:Bt])),
                (grads["we"], np.stack(ref[Bt : Bt + H])),
                (grads["wr"], np.stack(ref[Bt + H :])),
            ]
            if not scores:
                continue
            # run 2: scores upstream as well: the W-gradients carry Φᵀ Ebar (dx now includes the projection path)
            eb, rb = (
                rng.standard_normal((Bt, H, num_tokens, s)),
                rng.standard_normal((Bt, H, num_tokens, s)),
            )
            ref = f(
                *x,
                *we_l,
                *wr_l,
                *phq,
                *phk,
                *eb.reshape(-1, num_tokens, s),
                *rb.reshape(-1, num_tokens, s),
                *g.reshape(-1, p, s),
                *gr.reshape(-1, p, s),
            )
            _, grads = primal_attention_backward(
                np.zeros_like(y),
                cache,
                ksvd_grads=_upstream(cache, escore=eb, rscore=rb, we_x=g, wr_x=gr),
            )
            both += [
                (grads["we"], np.stack(ref[Bt : Bt + H])),
                (grads["wr"], np.stack(ref[Bt + H :])),
            ]
        st.close(
            f"N = {num_tokens}: `primal_attention`'s `we_x`, and `primal_attention_backward`'s dx, d`we`, d`wr` with only $\\bar W_{{e|X}}, \\bar W_{{r|X}}$ upstream",
            pairs,
        )
        if scores:
            st.close(
                f"N = {num_tokens}: d`we`, d`wr` with $\\bar E, \\bar R$ upstream too ($\\Phi$ from the definitions)",
                both,
            )


@D.step("Head output [E, R] W_cᵀ + b_c (shared by the heads), padding mask, output projection")
def concat_map(st):
    N, Dm = 2, H * p
    E = [symmat(f"E^{{({h + 1})}}", N, s) for h in range(H)]
    R = [symmat(f"R^{{({h + 1})}}", N, s) for h in range(H)]
    Wc, Wo, Yb = symmat("W^{c}", p, 2 * s), symmat("W^{o}", Dm, Dm), symmat(r"\bar{Y}", N, Dm)
    bc = sp.Matrix(1, p, list(sp.symbols(f"b^c_1:{p + 1}", real=True)))
    bo = sp.Matrix(1, Dm, list(sp.symbols(f"b^o_1:{Dm + 1}", real=True)))
    mask = sp.diag(1, 0)  # token 2 is padding: its output rows are zeroed
    ones = sp.ones(N, 1)
    heads = [mask * (E[h].row_join(R[h]) * Wc.T + ones * bc) for h in range(H)]
    merged = sp.Matrix.hstack(*heads)
    Y = merged * Wo.T + ones * bo
    L = inner(Yb, Y)
    st.text(
        r"""
        One sequence of N = 2 tokens, H = 2 heads, s = 1, p = 2: $O_h = \mathrm{diag}(m)([E_h, R_h]W_c^\top + \mathbf 1 b_c^\top)$
        with the LRA padding mask $m = (1, 0)$, heads concatenated, $Y = [O_1, O_2]W_o^\top + \mathbf 1 b_o^\top$,
        $\mathcal L = \langle\bar Y, Y\rangle$. primal_np's backward: $\bar O = \bar Y W_o$ split into heads
        with padded rows zeroed, then
        """
    )
    dO = Yb * Wo
    dOh = [mask * dO[:, h * p : (h + 1) * p] for h in range(H)]
    dWc = sum(((dOh[h].T * E[h]).row_join(dOh[h].T * R[h]) for h in range(H)), sp.zeros(p, 2 * s))
    st.exact(
        r"$\bar W_c = \sum_{h,n}\bar O_{hn}\,[E_{hn}, R_{hn}]$ (one map for all heads)",
        grad(L, Wc),
        dWc,
    )
    st.exact(
        r"$\bar b_c = \sum_{h,n}\bar O_{hn}$",
        grad(L, bc),
        sum((sp.ones(1, N) * dOh[h] for h in range(H)), sp.zeros(1, p)),
    )
    st.exact(
        r"$\bar E_h = \bar O_h W_{c,:,1:s}$, $\bar R_h = \bar O_h W_{c,:,s+1:2s}$",
        sp.Matrix.hstack(*(grad(L, E[h]).row_join(grad(L, R[h])) for h in range(H))),
        sp.Matrix.hstack(*((dOh[h] * Wc[:, :s]).row_join(dOh[h] * Wc[:, s:]) for h in range(H))),
    )
    st.exact(
        r"$\bar W_o = \bar Y^\top[O_1, O_2]$, $\bar b_o = \sum_n\bar Y_n$",
        grad(L, Wo).col_join(grad(L, bo)),
        (Yb.T * merged).col_join(sp.ones(1, N) * Yb),
    )
    st.rejects(
        r"$\bar b_c$ without the mask (padded rows counted)",
        grad(L, bc),
        sum((sp.ones(1, N) * dO[:, h * p : (h + 1) * p] for h in range(H)), sp.zeros(1, p)),
    )

    st.text(
        r"""
        Numerically, on `primal_attention_backward` with data-independent weights (so
        $\bar W_e = \Phi_q^\top\bar E$ per head, B = 1) and N = p = 2 tokens, where $\Phi_q$ is square
        and (generically) invertible, so comparing $\bar W_e$ with $\Phi_q^\top\bar E_{\text{SymPy}}$ checks $\bar E$
        completely; $E, R, \Phi_q, \Phi_k$ are evaluated from the definitions (`layer_statement`).
        """
    )
    case = Case("concat", "lra", B=1, N=N, H=H, p=p, s=s, mask=((1, 0),), weights="param")
    cfg = config(case)
    inter = forward_values(case, ("E", "R", "Phi_q", "Phi_k"))
    f = Lambdified(
        [*E, *R, Wc, bc, Wo, bo, Yb],
        [
            Y,
            grad(L, Wc),
            grad(L, bc),
            grad(L, Wo),
            grad(L, bo),
            *(grad(L, e) for e in E),
            *(grad(L, r) for r in R),
        ],
    )
    rng = np.random.default_rng(1102)
    pairs = []
    m = np.array([[True, False]])
    for _ in range(N_POINTS):
        x, params = random_point(case, rng)
        dy = rng.standard_normal((1, N, Dm))
        y, cache = primal_attention(x, params, cfg, mask=m)
        dx, grads = primal_attention_backward(dy, cache)
        e_, r_, phq, phk = (a[0] for a in inter(x, *params.values()))
        es, rs = list(e_), list(r_)
        y_ref, dwc, dbc, dwo, dbo, *dER = f(
            *es, *rs, params["wc"], params["bc"], params["wo"], params["bo"], dy[0]
        )
        pairs += [
            (y[0], y_ref),
            (grads["wc"], dwc),
            (grads["bc"], dbc[0]),
            (grads["wo"], dwo),
            (grads["bo"], dbo[0]),
        ]
        pairs += [(grads["we"][h], phq[h].T @ dER[h]) for h in range(H)]
        pairs += [(grads["wr"][h], phk[h].T @ dER[H + h]) for h in range(H)]
    st.close(
        "`primal_attention` output and `primal_attention_backward`'s d`wc`, d`bc`, d`wo`, d`bo`, and $\\bar E, \\bar R$ via d`we` = $\\Phi_q^\\top\\bar E$, d`wr` = $\\Phi_k^\\top\\bar R$",
        pairs,
    )


def test_gather_scatter():
    gather_scatter()


def test_concat_map():
    concat_map()


if __name__ == "__main__":
    raise SystemExit(D.main())
