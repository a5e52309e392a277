"""The Primal-Attention layer end to end, from its definitions: the output and every gradient
(x and each parameter) with the KSVD loss of each preset, for the lra, vision and causal
variants.

primal_np.layer: primal_attention, primal_attention_backward;
primal_np.ksvd_loss: ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache (preset names).
The statement (positions, shapes, steps, presets) is in layer_statement.py.
Run: python derivations/derive_primal_layer.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from derivlib import (
    N_POINTS,
    Derivation,
    Graph,
    Lambdified,
    flat,
    inner,
    symtensor,
    symvec,
)
from layer_statement import (
    LAYER_MEAN,
    PRESETS,
    Case,
    config,
    ksvd_presets,
    layer,
    linspace_positions,
    mask_array,
    numpy_positions,
    random_point,
)

from primal_np.ksvd_loss import (
    KSVDConvention,
    ksvd_loss,
    ksvd_loss_backward,
    ksvd_terms_from_cache,
)
from primal_np.layer import primal_attention, primal_attention_backward

D = Derivation(
    "primal_layer",
    "Primal-Attention layer end to end, from its definitions",
    r"""
    The layer is stated from its definitions (docs/theory.md §4.1, docs/conformance.md),
    never read from primal_np: Q, K projections (vision: one fused `qk` weight), the causal
    running mean, the cosine map $\phi(a) = a/\sqrt{\sum_c a_c^2}$ (the clamp
    $\max(\lVert a\rVert, 10^{-12})$ is inactive at generic points), $F$ at positions computed
    here from the documented `torch.linspace` formula, $W_{e|X} = F^\top W_e$, the scores
    $E = \Phi_q W_{e|X}$, $R = \Phi_k W_{r|X}$, $[E, R]\,W_c^\top + b_c$ shared by the heads,
    the padding mask, the merge and the output projection; the KSVD loss in each preset
    is spelled out from its definition (`layer_statement.py`). SymPy differentiates the
    scalar objective

    $$\mathcal J = \sum_b\langle\bar Y_b, Y_b\rangle + \eta\,\nu\,L_\ell$$

    ($\nu$ the layer reduction: two layers, mean or sum) with respect to $x$ and every
    parameter. The composition is written as a `Graph` of scalar definitions, one per
    entry of each intermediate; SymPy differentiates each definition and the chain rule
    (reverse accumulation) composes them, which is shown equal to `diff` of the composed
    expression on a tiny layer (differentiating and lambdifying the 2-sequence, 3-token
    lra layer below as one expression took about a minute). primal_np is then called as a user calls it — `primal_attention`,
    `ksvd_loss(..., preset name)`, `ksvd_loss_backward`, `primal_attention_backward(dy,
    cache, ksvd_grads=...)` — and every output is compared with SymPy's.
    """,
)
ETA = 0.7  # the KSVD-loss weight η


def objective(g: Graph, case: Case, presets: tuple[str, ...] = PRESETS) -> dict:
    """𝒥 = Σ_b ⟨Ȳ_b, Y_b⟩ + Σ_k w_k L_ℓ^(k) on the case's symbols (w_k = η·ν for the preset
    that is on, 0 for the others): J, Y (B, N, D), L (one per preset), the blocks x and
    parameters (``names``), and the inputs (those, Ȳ and w)."""
    x, P = case.symbols()
    st = layer(g, case, x, P)
    L = ksvd_presets(g, case, st, P)
    dy, w = symtensor(r"\bar{y}", (case.B, case.N, case.D)), symvec("w", len(presets))
    Y = np.array([[list(Yb.row(i)) for i in range(case.N)] for Yb in st["Y"]], dtype=object)
    J = inner(dy, Y) + sum(wk * L[k] for wk, k in zip(w, presets, strict=True))
    blocks = [x, *P.values()]
    return dict(
        J=J, Y=Y, L=[L[k] for k in presets], names=list(P), blocks=blocks, inputs=[*blocks, dy, w]
    )


class Reference:
    """SymPy's Y, L_ℓ (every preset) and ∂𝒥/∂(x, parameters) for one case, lambdified."""

    def __init__(self, case: Case):
        g = Graph()
        o = objective(g, case)
        grads = g.gradient(o["J"], o["blocks"])
        self.names = o["names"]
        self._f = Lambdified(o["inputs"], [o["Y"], o["L"], *grads], defs=g.defs)

    def __call__(self, x, params, dy, w) -> dict:
        Y, L, dx, *rest = self._f(x, *(params[k] for k in self.names), dy, w)
        return {"y": Y, "L": L, "x": dx, "params": dict(zip(self.names, rest, strict=True))}


def primal_np_run(case, cfg, points, dys, convention, eta) -> tuple[list, float | None]:
    """Two layers through primal_np as a user runs them: (y, grads) per layer, and the loss."""
    fwd = [primal_attention(x, P, cfg, mask=mask_array(case)) for x, P in points]
    if convention is None:
        return [
            (y, primal_attention_backward(dy, c)) for (y, c), dy in zip(fwd, dys, strict=True)
        ], None
    loss, lc = ksvd_loss([ksvd_terms_from_cache(c) for _, c in fwd], convention)
    kg = ksvd_loss_backward(eta, lc).layers
    out = [
        (y, primal_attention_backward(dy, c, ksvd_grads=k))
        for (y, c), dy, k in zip(fwd, dys, kg, strict=True)
    ]
    return out, loss


def _arrays(y, dx, params: dict) -> list[np.ndarray]:
    return [y, dx, *(params[k] for k in sorted(params))]


def end_to_end(st, case: Case, seed: int, wrong: dict | None = None) -> None:
    """No KSVD loss and each preset by name, at N_POINTS random pairs of layers.

    ``wrong``: label → (sampler, KSVD convention) that primal_np runs in place of the
    documented ones; each must be rejected against SymPy's "lra" preset at every point."""
    ref, cfg = Reference(case), config(case)
    rng = np.random.default_rng(seed)
    pairs, values, bad = [], [], {label: [] for label in wrong or {}}
    for _ in range(N_POINTS):
        points = [random_point(case, rng) for _ in range(2)]
        dys = [rng.standard_normal((case.B, case.N, case.D)) for _ in range(2)]
        for k, name in enumerate([None, *PRESETS]):
            nu = 0.0 if name is None else (0.5 if LAYER_MEAN[name] else 1.0)
            w = np.array([ETA * nu if j == k - 1 else 0.0 for j in range(len(PRESETS))])
            refs = [ref(x, P, dy, w) for (x, P), dy in zip(points, dys, strict=True)]
            want = [a for r in refs for a in _arrays(r["y"], r["x"], r["params"])]
            run, loss = primal_np_run(case, cfg, points, dys, name, ETA)
            pairs += zip([a for y, g in run for a in _arrays(y, g.x, g.params)], want, strict=True)
            if name is not None:
                values.append((np.array(loss), nu * (refs[0]["L"][k - 1] + refs[1]["L"][k - 1])))
            if name != "lra":
                continue
            for label, (sampler, conv) in (wrong or {}).items():
                run, _ = primal_np_run(case, config(case, sampler), points, dys, conv, ETA)
                got = [a for y, g in run for a in _arrays(y, g.x, g.params)]
                bad[label].append((_cat(got), _cat(want)))
    names = "`, d`".join(case.shapes())
    st.close(
        f"{case.name}: y of `primal_attention`, and dx, d`{names}` of `primal_attention_backward` "
        f"— two layers, without the KSVD loss and with each preset by name ({', '.join(PRESETS)})",
        pairs,
    )
    st.close(f"{case.name}: `ksvd_loss` of the two layers in each preset = ν(L₁ + L₂)", values)
    for label, got in bad.items():
        st.far(f"{case.name}: {label} (all outputs and gradients together)", got)


def _cat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


# --------------------------------------------------------------------------- the cases
LRA = Case("lra", "lra", B=2, N=3, H=2, p=2, s=1, m=99, mask=((1, 1, 1), (1, 1, 0)))
VISION = Case("vision, no qk bias, N ≤ s·m", "vision", B=2, N=3, H=2, p=2, s=2, m=2)
VISION_B = Case("vision, qk bias, N > s·m", "vision", B=1, N=4, H=2, p=2, s=1, m=3, qk_bias=True)
CAUSAL = Case("causal", "causal", B=2, N=3, H=2, p=2, s=2)
TINY = Case("tiny lra", "lra", B=1, N=2, H=1, p=2, s=1, m=3, mask=((1, 0),))
CASES = (LRA, VISION, VISION_B, CAUSAL)


@D.step("Token positions of F, from the documented formula")
def positions(st):
    st.text(
        r"""
        `torch.linspace(0, N − 1, n, dtype=int)` as docs/conformance.md states it, restated
        in `layer_statement.linspace_positions` (primal_np's sampler is not called): in
        double, $\delta = (N-1)/(n-1)$; $\mathrm{idx}_i = \lfloor i\delta\rfloor$ for $i < \lfloor n/2\rfloor$,
        else $\lfloor (N-1) - \delta\,(n-1-i)\rfloor$ (truncation; the values are $\ge 0$). LRA
        takes $n = s\cdot m$ rows always; vision $n = \min(N, s\cdot m)$, all tokens in order when
        $N \le s\cdot m$. The cases below:
        """
    )
    rows = ["| case | N | s·m | positions |", "|---|---|---|---|"]
    for case in CASES:
        pos = case.positions()
        shown = "— (data-independent weights)" if pos is None else _runs(pos)
        rows.append(f"| {case.name} | {case.N} | {case.s * case.m} | {shown} |")
    st.text("\n".join(rows))
    st.text(
        r"""
        `np.linspace(0, N − 1, n).astype(int)` multiplies $i\delta$ throughout and can land one
        below an integer that the two-sided formula reaches: computed here, no $n < 1000$
        makes the two rules differ for N = 2, and for N = 3 the first is n = 99, at
        $i = 49$: $49\delta$ = 0.9999999999999999 gives 0, $2 - 49\delta$ = 1.0 gives 1. The
        lra case uses N = 3, s = 1, m = 99: $N < n$, so positions repeat, *and* the two
        rules differ.
        """
    )
    differ = [n for n in range(2, 1000) for N in (2, 3) if _differ(N, n)]
    assert differ[0] == 99 and not any(_differ(2, n) for n in differ), differ[:3]
    st.rejects(
        "`np.linspace(0, 2, 99).astype(int)` as the positions for N = 3, n = 99",
        linspace_positions(3, 99),
        numpy_positions(3, 99),
    )


def _differ(N: int, n: int) -> bool:
    return linspace_positions(N, n) != numpy_positions(N, n)


def _runs(pos: list[int]) -> str:
    """0, 0, 1 → "0 ×2, 1" (runs of repeats)."""
    out, i = [], 0
    while i < len(pos):
        j = i
        while j < len(pos) and pos[j] == pos[i]:
            j += 1
        out.append(f"{pos[i]} ×{j - i}" if j - i > 1 else str(pos[i]))
        i = j
    return ", ".join(out)


@D.step("The chain rule over the definitions is SymPy's derivative of the composed layer")
def chain_rule(st):
    st.text(
        r"""
        On a tiny lra layer (B = 1, N = 2, H = 1, p = 2, s = 1, m = 3: positions (0, 0, 1),
        second token padded), the same statement is built twice: as a `Graph` of
        definitions, differentiated by reverse accumulation, and inlined into one
        expression of the inputs, differentiated by `sympy.diff` entry by entry. The
        objective carries $\langle\bar Y, Y\rangle$ and the presets "lra", "lra_trace_x",
        "paper" with weights $w_k$. The inlined gradient is evaluated by exact substitution
        of the random values (`xreplace`, SymPy Floats), the graph's by its generated code.
        """
    )
    presets = ("lra", "lra_trace_x", "paper")
    g = Graph()
    o = objective(g, TINY, presets)
    fast = Lambdified(o["inputs"], g.gradient(o["J"], o["blocks"]), defs=g.defs)
    gi = Graph(inline=True)
    oi = objective(gi, TINY, presets)
    slow = gi.gradient(oi["J"], oi["blocks"])
    rng = np.random.default_rng(1100)
    pairs = []
    for _ in range(2):
        vals = [rng.standard_normal(np.shape(b)) for b in o["inputs"]]
        flat_vals = np.concatenate([v.ravel() for v in vals]).tolist()
        sub = dict(zip(flat(*oi["inputs"]), flat_vals, strict=True))
        want = [
            np.array([float(sp.sympify(e).xreplace(sub)) for e in flat(d)]).reshape(np.shape(d))
            for d in slow
        ]
        pairs += zip(fast(*vals), want, strict=True)
    st.close(
        f"the graph's gradient (x and {len(o['names'])} parameter arrays) against `diff` of the inlined objective",
        pairs,
        points=2,
    )


def _shifted(n: int):
    return lambda N: np.minimum(np.array(linspace_positions(N, n)) + 1, N - 1)


@D.step("lra: data-dependent weights, padding mask, N < n (repeated positions)")
def lra(st):
    n = LRA.s * LRA.m
    st.text(
        rf"""
        B = {LRA.B}, N = {LRA.N}, H = {LRA.H}, p = {LRA.p}, s = {LRA.s}, m = {LRA.m}: n = {n}
        rows of $F$ from 3 tokens, and the second sequence's last token padded (its output
        row is zeroed; it still enters $F$ and the loss). Each of the {N_POINTS} random points
        draws two independent layers (inputs, parameters, $\bar Y$); $\eta = {ETA}$. Then the
        comparison is shown to catch a wrong sampler and a wrong preset: primal_np run with
        it must be far from SymPy's "lra" at every point.
        """
    )
    wrong = {
        "sampler `np.linspace(0, N − 1, n).astype(int)` (one row differs)": (
            lambda N: np.array(numpy_positions(N, n)),
            "lra",
        ),
        "sampler off by one (every position + 1, capped at N − 1)": (_shifted(n), "lra"),
        "preset with λ in place of λ² (`KSVDConvention(quadratic='Lambda')`)": (
            "linspace",
            KSVDConvention(quadratic="Lambda"),
        ),
        "preset with the layer sum in place of the mean (`KSVDConvention(layers='sum')`)": (
            "linspace",
            KSVDConvention(layers="sum"),
        ),
    }
    end_to_end(st, LRA, 1101, wrong)


@D.step("vision: fused qk weight, with and without its bias, all tokens when N ≤ s·m")
def vision(st):
    st.text(
        r"""
        One `qk` linear $D \to 2D$ split into $Q$ (first $D$ outputs) and $K$, then the lra
        steps without a mask. Without the qk bias: N = 3 ≤ s·m = 4, so $F$ holds all three
        tokens in order and $W_e \in \mathbb R^{3\times s}$; with it: N = 4 > s·m = 3, the
        positions (0, 1, 3) of the formula.
        """
    )
    end_to_end(st, VISION, 1102)
    end_to_end(st, VISION_B, 1103)


@D.step("causal: running means, data-independent weights")
def causal(st):
    st.text(
        r"""
        $\tilde q_i = \frac1i\sum_{t\le i} q_t$ and $\tilde k_i$ before the cosine map; $W_e, W_r \in
        \mathbb R^{p\times s}$ used directly ($W_{e|X} = W_e$, so the two traces coincide).
        B = 2, N = 3, H = 2, p = 2, s = 2.
        """
    )
    end_to_end(st, CAUSAL, 1104)


def test_positions():
    positions()


def test_chain_rule():
    chain_rule()


def test_lra():
    lra()


def test_vision():
    vision()


def test_causal():
    causal()


if __name__ == "__main__":
    raise SystemExit(D.main())
