"""The KSVD loss in the paper's and every code convention: gradients, and Λ_paper = λ²/N.

primal_np.ksvd_loss: ksvd_loss, ksvd_loss_backward, KSVDConvention and the preset names;
primal_np.ksvd: ksvd_objective.
Run: python derivations/derive_ksvd_loss.py
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from derivlib import N_POINTS, Derivation, Lambdified, grad, symtensor

from primal_np.ksvd import ksvd_objective
from primal_np.ksvd_loss import (
    KSVDConvention,
    KSVDTerms,
    ksvd_loss,
    ksvd_loss_backward,
)

D = Derivation(
    "ksvd_loss",
    "KSVD loss: every convention, and the reparametrisation Λ = λ²/N",
    r"""
    Per layer $\ell$, sequence $b$ and head $h$ (one KSVD problem each), with scores
    $e_{bhn}, r_{bhn} \in \mathbb R^s$ and $\lambda_h \in \mathbb R^s$:

    $$
    j_{bh} = \omega\sum_n q_h(e_{bhn}) + \omega\sum_n q_h(r_{bhn}) - T_{bh},\qquad
    q_h(e) = \tfrac12\sum_l(\alpha\lambda_{hl}^2 + \beta\lambda_{hl})\,e_l^2,
    $$

    $$
    T_{bh} = \tau_p\,\mathrm{Tr}(W_{e,h}^\top W_{r,h}) + \tau_d\,\mathrm{Tr}(W_{e|X,bh}^\top W_{r|X,bh}).
    $$

    The convention switches are symbols that the conventions fix to numbers:
    $(\alpha, \beta) = (1, 0)$ for `quadratic="lambda_sq"` (the code's $\lVert\lambda\odot e\rVert^2$),
    $(0, 1)$ for `"Lambda"` (the paper's $e^\top\Lambda e$); $\omega = 1/N$ (`tokens="mean"`) or 1
    (`"sum"`); $(\tau_p, \tau_d) = (1, 0)$ (`trace="params"`) or $(0, 1)$ (`"data"`). Per layer,

    * `square="batch"`: $L_\ell = \big(\tfrac1{BH}\sum_{bh} j_{bh}\big)^2$,
    * `square="sample"`: $L_\ell = \kappa\sum_b\big(\tfrac1H\sum_h j_{bh}\big)^2$, $\kappa = 1/B$ (`outer="mean"`) or 1,
    * `square="problem"`: $L_\ell = \kappa\sum_{bh} j_{bh}^2$, $\kappa = 1/(BH)$ or 1,

    and $L = \nu\sum_\ell L_\ell$, $\nu = 1/(\text{layers})$ (`layers="mean"`) or 1. Every
    identity below is proved with the switches as free symbols, so it holds for each
    specialisation. Sizes: 2 layers, B = 2, H = 2, N = 2 tokens, s = 2, and the weights
    $W_{e,h}, W_{r,h} \in \mathbb R^{1\times 2}$, $W_{e|X,bh}, W_{r|X,bh} \in \mathbb R^{1\times 2}$.
    """,
)
LAYERS, B, H, N, S, NW = 2, 2, 2, 2, 2, 1
SW = sp.symbols(r"\alpha \beta \omega \tau_p \tau_d \kappa \nu \bar{L}", real=True)
ALPHA, BETA, OMEGA, TAU_P, TAU_D, KAPPA, NU, LBAR = SW
FIELDS = ("escore", "rscore", "lam", "we", "wr", "we_x", "wr_x")


def _layer_symbols(i: int) -> dict:
    sup = f"^{{({i + 1})}}"
    shapes = {
        "escore": (B, H, N, S),
        "rscore": (B, H, N, S),
        "lam": (H, S),
        "we": (H, NW, S),
        "wr": (H, NW, S),
        "we_x": (B, H, NW, S),
        "wr_x": (B, H, NW, S),
    }
    names = {
        "escore": "e",
        "rscore": "r",
        "lam": r"\lambda",
        "we": "W^{e}",
        "wr": "W^{r}",
        "we_x": "W^{eX}",
        "wr_x": "W^{rX}",
    }
    return {f: symtensor(names[f] + sup, shapes[f]) for f in FIELDS}


def _j(t: dict) -> np.ndarray:
    """j_{bh} on symbols: (B, H) object array."""
    j = np.empty((B, H), dtype=object)
    for b, h in itertools.product(range(B), range(H)):
        c = [ALPHA * t["lam"][h, l] ** 2 + BETA * t["lam"][h, l] for l in range(S)]
        quad = sum(
            c[l] * (t["escore"][b, h, n, l] ** 2 + t["rscore"][b, h, n, l] ** 2)
            for n in range(N)
            for l in range(S)
        )
        tp = sum(t["we"][h, m, l] * t["wr"][h, m, l] for m in range(NW) for l in range(S))
        td = sum(t["we_x"][b, h, m, l] * t["wr_x"][b, h, m, l] for m in range(NW) for l in range(S))
        j[b, h] = OMEGA * sp.Rational(1, 2) * quad - TAU_P * tp - TAU_D * td
    return j


def _layer_loss(j: np.ndarray, square: str) -> sp.Expr:
    if square == "batch":
        return (sum(j.ravel()) / (B * H)) ** 2
    if square == "sample":
        return KAPPA * sum((sum(j[b]) / H) ** 2 for b in range(B))
    return KAPPA * sum(x**2 for x in j.ravel())


def _g(j: np.ndarray, square: str) -> np.ndarray:
    """∂L_ℓ/∂j_{bh} as primal_np states it (before the layer factor ν and upstream L̄)."""
    g = np.empty((B, H), dtype=object)
    for b, h in itertools.product(range(B), range(H)):
        if square == "batch":
            g[b, h] = 2 * (sum(j.ravel()) / (B * H)) / (B * H)
        elif square == "sample":
            g[b, h] = 2 * KAPPA * (sum(j[b]) / H) / H
        else:
            g[b, h] = 2 * KAPPA * j[b, h]
    return g


def _closed(t: dict, g: np.ndarray) -> dict:
    """ksvd_loss_backward's closed forms (its docstring), for one layer, times ν·L̄."""
    out = {f: np.empty(t[f].shape, dtype=object) for f in FIELDS}
    k = NU * LBAR
    for b, h, n, l in itertools.product(range(B), range(H), range(N), range(S)):
        c = ALPHA * t["lam"][h, l] ** 2 + BETA * t["lam"][h, l]
        out["escore"][b, h, n, l] = k * g[b, h] * OMEGA * c * t["escore"][b, h, n, l]
        out["rscore"][b, h, n, l] = k * g[b, h] * OMEGA * c * t["rscore"][b, h, n, l]
    for h, l in itertools.product(range(H), range(S)):
        dc = 2 * ALPHA * t["lam"][h, l] + BETA  # d/dλ of (αλ² + βλ)
        sq = [
            sum(t["escore"][b, h, n, l] ** 2 + t["rscore"][b, h, n, l] ** 2 for n in range(N))
            for b in range(B)
        ]
        out["lam"][h, l] = k * sum(
            g[b, h] * OMEGA * sp.Rational(1, 2) * dc * sq[b] for b in range(B)
        )
    for h, m, l in itertools.product(range(H), range(NW), range(S)):
        gh = sum(g[b, h] for b in range(B))
        out["we"][h, m, l] = -k * TAU_P * gh * t["wr"][h, m, l]
        out["wr"][h, m, l] = -k * TAU_P * gh * t["we"][h, m, l]
    for b, h, m, l in itertools.product(range(B), range(H), range(NW), range(S)):
        out["we_x"][b, h, m, l] = -k * TAU_D * g[b, h] * t["wr_x"][b, h, m, l]
        out["wr_x"][b, h, m, l] = -k * TAU_D * g[b, h] * t["we_x"][b, h, m, l]
    return out


def _switches(conv: KSVDConvention, n_layers: int) -> list[float]:
    """The numbers a convention gives (α, β, ω, τ_p, τ_d, κ, ν)."""
    alpha, beta = (1.0, 0.0) if conv.quadratic == "lambda_sq" else (0.0, 1.0)
    omega = 1.0 / N if conv.tokens == "mean" else 1.0
    tp, td = (1.0, 0.0) if conv.trace == "params" else (0.0, 1.0)
    kappa = 1.0
    if conv.outer == "mean":
        kappa = {"batch": 1.0, "sample": 1.0 / B, "problem": 1.0 / (B * H)}[conv.square]
    nu = 1.0 / n_layers if conv.layers == "mean" else 1.0
    return [alpha, beta, omega, tp, td, kappa, nu]


def _preset(name: str, n_layers: int) -> tuple[str, list[float]]:
    """A preset as docs/conformance.md defines it — never read from primal_np's table: the
    square and (α, β, ω, τ_p, τ_d, κ, ν)."""
    code = [1.0, 0.0, 1.0 / N]  # ½‖λ ⊙ e‖², mean over tokens (the authors' code)
    layer_mean = 1.0 / n_layers
    lra = ("batch", code + [1.0, 0.0, 1.0, layer_mean])  # (mean_bh j)², Tr(W_eᵀW_r), layer mean
    return {
        "lra": lra,
        "vision": lra,  # the same loss as lra
        "lra_trace_x": ("batch", code + [0.0, 1.0, 1.0, layer_mean]),  # Tr(W_{e|X}ᵀW_{r|X})
        "per_sample": ("sample", code + [1.0, 0.0, 1.0 / B, layer_mean]),  # mean_b (mean_h j)²
        "paper": ("problem", [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]),  # ½eᵀΛe summed, Σ_bh J², Σ_ℓ
    }[name]


PRESET_NAMES = ("lra", "vision", "lra_trace_x", "per_sample", "paper")


def _every_convention() -> list[KSVDConvention]:
    out = []
    for q, t, tr, sq, o, ly in itertools.product(
        ("lambda_sq", "Lambda"),
        ("mean", "sum"),
        ("params", "data"),
        ("batch", "sample", "problem"),
        ("mean", "sum"),
        ("mean", "sum"),
    ):
        if sq == "batch" and o == "sum":
            continue  # outer does not apply to the batch square
        out.append(KSVDConvention(q, t, tr, sq, o, ly))
    return out


@D.step("Exact pieces: ∂L/∂j per square, ∂j/∂(inputs), and the layer reduction")
def pieces(st):
    Js = symtensor("j", (B, H))
    st.text(
        r"""
        The loss depends on the inputs only through the $j_{bh}$, so its gradient is
        $\partial L/\partial x = \nu\bar L\sum_{bh} g_{bh}\,\partial j_{bh}/\partial x$ with
        $g_{bh} = \partial L_\ell/\partial j_{bh}$ — exactly how `ksvd_loss_backward` is organised.
        First $g$, on symbols $j_{bh}$ (B = H = 2):
        """
    )
    for square in ("batch", "sample", "problem"):
        st.exact(
            f"`square={square!r}`: $\\partial L_\\ell/\\partial j_{{bh}}$ = primal_np's $g_{{bh}}$",
            grad(_layer_loss(Js, square), Js),
            _g(Js, square),
        )
    st.rejects(
        r"`square='sample'` with $g_{bh} = 2\kappa\,\bar j_b$ (the $1/H$ of the head mean dropped)",
        grad(_layer_loss(Js, "sample"), Js),
        np.array([[2 * KAPPA * sum(Js[b]) / H for _ in range(H)] for b in range(B)], dtype=object),
    )
    J2 = [symtensor(f"j^{{({i + 1})}}", (B, H)) for i in range(LAYERS)]
    total = NU * sum(_layer_loss(J2[i], "batch") for i in range(LAYERS))
    st.exact(
        r"layers: $\partial(\nu\sum_\ell L_\ell)/\partial j^{(2)} = \nu\,\partial L_2/\partial j^{(2)}$",
        grad(total, J2[1]),
        NU * grad(_layer_loss(J2[1], "batch"), J2[1]),
    )

    t = _layer_symbols(0)
    j = _j(t)
    st.text(
        r"Then $\partial j_{bh}/\partial x$ for every input, as arrays over all $(b, h)$ (so that the zeros for other problems are proved too), contracted with symbolic $g$:"
    )
    G = symtensor("g", (B, H))
    jg = sum(G[b, h] * j[b, h] for b in range(B) for h in range(H))  # Σ g_bh j_bh
    derived = {f: grad(jg, t[f]) for f in FIELDS}
    closed = _closed(t, G)
    for f in FIELDS:
        st.exact(
            f"$\\sum_{{bh}} g_{{bh}}\\,\\partial j_{{bh}}/\\partial$`{f}` = `ksvd_loss_backward`'s form (divided by $\\nu\\bar L$)",
            derived[f],
            np.vectorize(lambda x: sp.expand(x / (NU * LBAR)))(closed[f]),
        )
    wrong = closed["lam"].copy()
    wrong[0, 0] = wrong[0, 0].subs(ALPHA, 2 * ALPHA)
    st.rejects(
        r"∂/∂λ with $4\alpha\lambda$ in place of $2\alpha\lambda$ (the square differentiated twice)",
        derived["lam"],
        np.vectorize(lambda x: x / (NU * LBAR))(wrong),
    )


def _layer_fn(square: str) -> Lambdified:
    """One layer: (L_ℓ, and the gradients of L̄·ν·L_ℓ) as functions of the inputs and switches."""
    t = _layer_symbols(0)
    L = _layer_loss(_j(t), square)
    outs = [L] + [grad(LBAR * NU * L, t[f]) for f in FIELDS]
    return Lambdified([*(t[f] for f in FIELDS), list(SW)], outs)


def _random_terms(rng) -> KSVDTerms:
    return KSVDTerms(
        escore=rng.standard_normal((B, H, N, S)),
        rscore=rng.standard_normal((B, H, N, S)),
        lam=rng.uniform(-1.0, 1.0, (H, S)),  # the code does not constrain λ's sign
        we=rng.standard_normal((H, NW, S)),
        wr=rng.standard_normal((H, NW, S)),
        we_x=rng.standard_normal((B, H, NW, S)),
        wr_x=rng.standard_normal((B, H, NW, S)),
    )


@D.step("The composition, numerically: every convention against SymPy's derivative")
def conventions(st):
    convs = _every_convention()
    st.text(
        f"""
        SymPy differentiates the composed loss of one layer (switches symbolic) entry-wise;
        for each of the {len(convs)} distinct conventions (`quadratic` × `tokens` × `trace` ×
        `square` × `outer` × `layers`; `outer` does not apply to `square="batch"`) and each
        preset, passed to primal_np **by name** with its numbers spelled out here from
        docs/conformance.md — "lra" = "vision": λ², token mean, trace on the parameters,
        $(\\mathrm{{mean}}_{{bh}}\\,j)^2$, layer mean; "lra_trace_x": the same with the trace on
        $W_{{e|X}}, W_{{r|X}}$; "per_sample": $\\mathrm{{mean}}_b(\\mathrm{{mean}}_h\\,j)^2$; "paper": Λ,
        token sums, $\\sum_{{bh}} J^2$, layer sum — at random inputs of **two** layers and a
        random upstream $\\bar L$, the switches are set to those numbers and the result is compared
        with `ksvd_loss` (value) and `ksvd_loss_backward` (all seven gradients per layer;
        with the trace on the parameters primal_np returns `we_x = wr_x = None`, compared
        as zero). The layers share no input, so layer $\\ell$'s gradient is SymPy's
        derivative of $\\bar L\\nu L_\\ell$ at layer $\\ell$'s inputs.
        """
    )
    fns = {sq: _layer_fn(sq) for sq in ("batch", "sample", "problem")}
    rng = np.random.default_rng(1001)
    pairs, wrong, square = [], [], []
    runs = [(c, c.square, _switches(c, LAYERS)) for c in convs]
    runs += [(name, *_preset(name, LAYERS)) for name in PRESET_NAMES]
    for conv, sq, switches in runs:
        for i in range(N_POINTS):
            layers = [_random_terms(rng) for _ in range(LAYERS)]
            lbar = rng.uniform(0.5, 2.0)
            sw = switches + [lbar]
            loss, cache = ksvd_loss(layers, conv)
            grads = ksvd_loss_backward(lbar, cache).layers
            value = 0.0
            for t, g in zip(layers, grads, strict=True):
                L_l, *ref = fns[sq](*(getattr(t, f) for f in FIELDS), sw)
                value += float(L_l)
                for f, r in zip(FIELDS, ref, strict=True):
                    got = getattr(g, f)
                    pairs.append((np.zeros_like(r) if got is None else got, r))
            pairs.append((np.array(loss), np.array(sw[6] * value)))
            last = [getattr(layers[-1], f) for f in FIELDS]
            if i == 0 and sw[2] != 1.0:  # token mean: SymPy with ω = 1 (token sum) must disagree
                wrong.append((grads[-1].escore, fns[sq](*last, sw[:2] + [1.0] + sw[3:])[1]))
            if conv == "per_sample":  # the preset against SymPy's lra (square of the batch mean)
                square.append((grads[-1].escore, fns["batch"](*last, sw)[1]))
    st.close(
        f"`ksvd_loss` and `ksvd_loss_backward`, {len(convs)} conventions + {len(PRESET_NAMES)} presets by name, two layers each",
        pairs,
    )
    st.far(
        '`tokens="mean"` gradients of `ksvd_loss_backward` against SymPy\'s token-sum derivative (every such convention and preset)',
        wrong,
    )
    st.far(
        '`ksvd_loss_backward` with the preset `"per_sample"` against SymPy\'s `"lra"` (square of the batch mean)',
        square,
    )


@D.step("Reparametrisation: the code's λ is the paper's Λ = λ²/N")
def reparametrisation(st):
    t = _layer_symbols(0)
    j = _j(t)
    code = {ALPHA: 1, BETA: 0, OMEGA: sp.Rational(1, N)}
    Lam = symtensor(r"\Lambda", (H, S))
    paper_t = dict(t, lam=Lam)
    paper = {ALPHA: 0, BETA: 1, OMEGA: 1}
    j_paper = _j(paper_t)
    sub = {Lam[h, l]: t["lam"][h, l] ** 2 / N for h in range(H) for l in range(S)}
    j_code = np.vectorize(lambda x: x.subs(code))(j)
    j_pap = np.vectorize(lambda x: x.subs(paper).xreplace(sub))(j_paper)
    st.text(
        r"""
        The code's token mean of $\tfrac12\lVert\lambda\odot e_n\rVert^2$ against the paper's token
        sum of $\tfrac12 e_n^\top\Lambda e_n$ (any trace switch):
        """
    )
    st.math(
        r"\frac1N\sum_n \tfrac12\lVert\lambda\odot e_n\rVert^2 = \tfrac12\sum_n e_n^\top\,\frac{\mathrm{diag}(\lambda^2)}{N}\,e_n"
    )
    st.exact(
        r"$j_{bh}$(code: λ², mean) $= j_{bh}$(paper: Λ, sum) at $\Lambda = \lambda^2/N$, every $(b, h)$",
        j_code,
        j_pap,
    )
    for square in ("batch", "sample", "problem"):
        st.exact(
            f"so $L_\\ell$ agrees for `square={square!r}`",
            _layer_loss(j_code, square),
            _layer_loss(j_pap, square),
        )
    st.rejects(
        r"$\Lambda = \lambda^2$ (the $1/N$ forgotten)",
        j_code,
        np.vectorize(lambda x: x.subs(paper).xreplace({k: v * N for k, v in sub.items()}))(j_paper),
    )
    Lp = _layer_loss(np.vectorize(lambda x: x.subs(paper))(j_paper), "problem")
    dcode = grad(_layer_loss(j_code, "problem"), t["lam"])
    dpap = np.vectorize(lambda x: x.xreplace(sub))(grad(Lp, Lam))
    st.exact(
        r"gradients: $\partial L/\partial\lambda = (2\lambda/N)\odot\partial L/\partial\Lambda\,|_{\Lambda = \lambda^2/N}$",
        dcode,
        np.array(
            [[2 * t["lam"][h, l] / N * dpap[h, l] for l in range(S)] for h in range(H)],
            dtype=object,
        ),
    )

    st.text(
        r"""
        Numerically, for every square and trace, `ksvd_loss` in the code's quadratic and token
        mean with $\lambda$ equals `ksvd_loss` in the paper's with $\lambda^2/N$, and the λ-gradients
        of `ksvd_loss_backward` satisfy the chain rule above; and one problem's $j$ (B = H = 1,
        `square="problem"`, so $L = j^2$) equals `ksvd_objective` (the $J$ of docs/theory.md §2.1) of
        $\Phi_q, \Phi_k$, $W_e, W_r$ with $\Lambda = \lambda^2/N$ and $E = \Phi_q W_e$, $R = \Phi_k W_r$.
        """
    )
    rng = np.random.default_rng(1002)
    pairs = []
    for square, trace in itertools.product(("batch", "sample", "problem"), ("params", "data")):
        for _ in range(N_POINTS):
            terms = _random_terms(rng)
            c = KSVDConvention("lambda_sq", "mean", trace, square)
            pc = KSVDConvention("Lambda", "sum", trace, square)
            lc, cc = ksvd_loss([terms], c)
            lp, cp = ksvd_loss([terms._replace(lam=terms.lam**2 / N)], pc)
            gc, gp = ksvd_loss_backward(1.0, cc).layers[0], ksvd_loss_backward(1.0, cp).layers[0]
            pairs += [(np.array(lc), np.array(lp)), (gc.lam, 2 * terms.lam / N * gp.lam)]
    for _ in range(N_POINTS):
        n_tok, p = 4, 3
        pq, pk = rng.standard_normal((n_tok, p)), rng.standard_normal((n_tok, p))
        we, wr, lam = (
            rng.standard_normal((p, S)),
            rng.standard_normal((p, S)),
            rng.uniform(-1, 1, S),
        )
        terms = KSVDTerms(
            (pq @ we)[None, None], (pk @ wr)[None, None], lam[None], we[None], wr[None]
        )
        loss, _ = ksvd_loss([terms], KSVDConvention(square="problem"))
        pairs.append(
            (np.array(loss), np.array(ksvd_objective(pq, pk, we, wr, lam**2 / n_tok) ** 2))
        )
    st.close(
        "code convention with λ against paper convention with λ²/N (values and λ-gradients), and against `ksvd_objective`",
        pairs,
    )


def test_pieces():
    pieces()


def test_conventions():
    conventions()


def test_reparametrisation():
    reparametrisation()


if __name__ == "__main__":
    raise SystemExit(D.main())
