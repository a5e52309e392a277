"""The Primal-Attention layer and its KSVD loss, stated from their definitions.

Used by ``derive_primal_layer.py`` and ``derive_primal_pieces.py``. Everything here is
restated from docs/conformance.md and docs/theory.md §4–5 (the authors' conventions),
never read from primal_np: the token positions of F (``torch.linspace``'s two-sided
formula), the parameter shapes, the ten steps of the layer and the KSVD-loss presets. The
statement is written on a ``Graph``: one scalar definition per entry of each
intermediate, so that SymPy differentiates each equation and the chain rule composes
them (``derivlib.Graph``). The last section only runs a case: random values, the
``PrimalAttentionConfig`` that hands the case's choices to primal_np, and numeric values
of the definitions' intermediates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp
from derivlib import Graph, Lambdified, symtensor

from primal_np.params import PrimalAttentionConfig

HALF = sp.Rational(1, 2)


# --------------------------------------------------------------------------- positions
def linspace_positions(num_tokens: int, n: int) -> list[int]:
    """``torch.linspace(0, N − 1, n, dtype=int)`` as docs/conformance.md states it: in double,
    step = (N − 1)/(n − 1); idx_i = trunc(i·step) for i < n // 2, else
    trunc((N − 1) − step·(n − 1 − i)). (Every value is ≥ 0, so ``int`` truncates.)"""
    if n == 1:
        return [0]
    step = (num_tokens - 1) / (n - 1)
    return [
        int(i * step) if i < n // 2 else int((num_tokens - 1) - step * (n - 1 - i))
        for i in range(n)
    ]


def numpy_positions(num_tokens: int, n: int) -> list[int]:
    """The rule docs/conformance.md warns against, ``np.linspace(0, N − 1, n).astype(int)``."""
    return np.linspace(0, num_tokens - 1, n).astype(int).tolist()


# --------------------------------------------------------------------------- the case
@dataclass(frozen=True)
class Case:
    """One tiny layer: variant, sizes B, N, H, p, s, m, the vision qk bias, the lra mask."""

    name: str
    variant: str
    B: int
    N: int
    H: int
    p: int
    s: int
    m: int = 1
    qk_bias: bool = False
    mask: tuple[tuple[int, ...], ...] | None = None  # lra: (B, N), 1 = real token
    weights: str = "data"  # "data": W_{e|X} = Fᵀ W_e; "param": W_e ∈ R^{p×s} (causal always)

    @property
    def D(self) -> int:
        return self.H * self.p

    @property
    def data_dependent(self) -> bool:
        return self.variant != "causal" and self.weights == "data"

    def positions(self) -> list[int] | None:
        """Rows of F: lra n = s·m always; vision n = min(N, s·m), all tokens when N ≤ s·m."""
        if not self.data_dependent:
            return None
        n = self.s * self.m
        if self.variant == "vision" and self.N <= n:
            return list(range(self.N))
        return linspace_positions(self.N, n)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The parameters (primal_np's internal names; layouts of docs/conformance.md)."""
        D, H, p, s = self.D, self.H, self.p, self.s
        pos = self.positions()
        n = p if pos is None else len(pos)
        if self.variant == "vision":
            qk = {"wqk": (2 * D, D)} | ({"bqk": (2 * D,)} if self.qk_bias else {})
        else:
            qk = {"wq": (D, D), "bq": (D,), "wk": (D, D), "bk": (D,)}
        rest = {"we": (H, n, s), "wr": (H, n, s), "lam": (H, s), "wc": (p, 2 * s), "bc": (p,)}
        return qk | rest | {"wo": (D, D), "bo": (D,)}

    def symbols(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """x (B, N, D) and every parameter as object arrays of real symbols."""
        tex = {"lam": r"\lambda", "bqk": "b^{qk}", "wqk": "W^{qk}"}
        P = {
            k: symtensor(tex.get(k, f"{k[0]}^{{{k[1:]}}}"), shape)
            for k, shape in self.shapes().items()
        }
        return symtensor("x", (self.B, self.N, self.D)), P


# --------------------------------------------------------------------------- the layer
def _mat(a: np.ndarray) -> sp.Matrix:
    return sp.Matrix(a.tolist())


def _row(v: np.ndarray) -> sp.Matrix:
    return sp.Matrix(1, len(v), v.tolist())


def cosine(g: Graph, A: sp.Matrix) -> sp.Matrix:
    """φ(a) = a / max(‖a‖₂, 1e-12) row-wise; the clamp is inactive at generic points."""
    norm = g.define(sp.Matrix(A.rows, 1, lambda i, _: sp.sqrt(sum(v**2 for v in A.row(i)))))
    return g.define(sp.Matrix(A.rows, A.cols, lambda i, c: A[i, c] / norm[i]))


def layer(g: Graph, case: Case, x: np.ndarray, P: dict) -> dict:
    """Steps (1)–(10) of docs/theory.md §4.1 for every sequence b and head h.

    Returns Y (list over b of N×D), and per (b, h): Phi_q, Phi_k, WeX, WrX, E, R.
    """
    B, N, H, p, D = case.B, case.N, case.H, case.p, case.D
    ones, idx = sp.ones(N, 1), case.positions()
    Wc, bc, Wo, bo = _mat(P["wc"]), _row(P["bc"]), _mat(P["wo"]), _row(P["bo"])
    out: dict = {"Y": [], "Phi_q": {}, "Phi_k": {}, "WeX": {}, "WrX": {}, "E": {}, "R": {}}
    for b in range(B):
        X = _mat(x[b])
        if case.variant == "vision":  # (1) one fused qk linear D → 2D, split (2, H, p)
            bqk = _row(P["bqk"]) if "bqk" in P else sp.zeros(1, 2 * D)
            QK = X * _mat(P["wqk"]).T + ones * bqk
            Q, K = g.define(QK[:, :D]), g.define(QK[:, D:])
        else:  # (1) Q = X W_qᵀ + b_q, K = X W_kᵀ + b_k
            Q = g.define(X * _mat(P["wq"]).T + ones * _row(P["bq"]))
            K = g.define(X * _mat(P["wk"]).T + ones * _row(P["bk"]))
        if case.variant == "causal":  # (2) q̃_i = (1/i) Σ_{t≤i} q_t (1-indexed)
            Q, K = (
                g.define(sp.Matrix(N, D, lambda i, c, A=A: sum(A[: i + 1, c]) / (i + 1)))
                for A in (Q, K)
            )
        heads = []
        for h in range(H):
            cols = slice(h * p, (h + 1) * p)  # (3) head h's channels
            Pq, Pk = cosine(g, Q[:, cols]), cosine(g, K[:, cols])  # (4)
            We, Wr = _mat(P["we"][h]), _mat(P["wr"][h])
            if idx is None:  # (5) data-independent: W_{e|X} = W_e
                WeX, WrX = We, Wr
            else:  # (5) F = X[idx, head h's channels], W_{e|X} = Fᵀ W_e
                F = sp.Matrix(len(idx), p, lambda k, c, X=X, h=h: X[idx[k], h * p + c])
                WeX, WrX = g.define(F.T * We), g.define(F.T * Wr)
            E, R = g.define(Pq * WeX), g.define(Pk * WrX)  # (6)
            O = g.define(E.row_join(R) * Wc.T + ones * bc)  # (7) shared 2s → p map
            if case.mask is not None:  # (8) padded output rows → 0
                O = sp.diag(*case.mask[b]) * O
            heads.append(O)
            for key, v in zip(out, (None, Pq, Pk, WeX, WrX, E, R), strict=True):
                if v is not None:
                    out[key][b, h] = v
        out["Y"].append(g.define(sp.Matrix.hstack(*heads) * Wo.T + ones * bo))  # (9), (10)
    return out


# --------------------------------------------------------------------------- the loss
PRESETS = ("lra", "vision", "lra_trace_x", "per_sample", "paper")
# ν: the layer reduction — the code averages the per-layer losses, the paper sums them
LAYER_MEAN = {"lra": True, "vision": True, "lra_trace_x": True, "per_sample": True, "paper": False}


def ksvd_presets(g: Graph, case: Case, st: dict, P: dict) -> dict[str, sp.Expr]:
    """One layer's L_ℓ in each preset, from docs/conformance.md ("KSVD loss") and §5:

    a_{bhi} = ½‖λ_h ⊙ e_{bhi}‖², c_{bhi} = ½‖λ_h ⊙ r_{bhi}‖² (the code: λ squared);
    T = (1/H) Σ_h Tr(W_{e,h}ᵀ W_{r,h}) (parameters), T_X = mean_{b,h} Tr(W_{e|X}ᵀ W_{r|X});

    lra = vision:  (mean_{b,h,i} a + mean_{b,h,i} c − T)²      batch mean inside the square
    lra_trace_x:   (mean_{b,h,i} a + mean_{b,h,i} c − T_X)²
    per_sample:    mean_b (mean_{h,i} a + mean_{h,i} c − T)²    one square per sequence
    paper:         Σ_{b,h} J_bh²,  J_bh = ½ Σ_i e_iᵀ Λ_h e_i + ½ Σ_i r_iᵀ Λ_h r_i − Tr(W_{e,h}ᵀ W_{r,h}),
                   Λ_h = diag(λ_h): the paper's Λ, token sums, one J² per sequence and head.
    """
    B, H, N, s = case.B, case.H, case.N, case.s
    lam = P["lam"]
    E, R = st["E"], st["R"]
    bh = [(b, h) for b in range(B) for h in range(H)]

    def half_sq(M: sp.Matrix, h: int) -> sp.Matrix:  # ½‖λ_h ⊙ m_i‖² for every row m_i
        return g.define(
            sp.Matrix(
                [HALF * sum(lam[h, l] ** 2 * M[i, l] ** 2 for l in range(s)) for i in range(N)]
            )
        )

    a = {(b, h): half_sq(E[b, h], h) for b, h in bh}
    c = {(b, h): half_sq(R[b, h], h) for b, h in bh}
    tr = [g.define(sum(P["we"][h].ravel() * P["wr"][h].ravel())) for h in range(H)]  # Tr(AᵀB)
    T = g.define(sum(tr) / H)
    T_X = g.define(sum(sum(st["WeX"][k].multiply_elementwise(st["WrX"][k])) for k in bh) / (B * H))
    mean_all = g.define((sum(sum(a[k]) for k in bh) + sum(sum(c[k]) for k in bh)) / (B * H * N))
    per_b = [
        g.define((sum(sum(a[b, h]) + sum(c[b, h]) for h in range(H))) / (H * N) - T)
        for b in range(B)
    ]
    J = {
        (b, h): g.define(
            HALF
            * sum(
                lam[h, l] * (E[b, h][i, l] ** 2 + R[b, h][i, l] ** 2)
                for i in range(N)
                for l in range(s)
            )
            - tr[h]
        )
        for b, h in bh
    }
    lra = g.define((mean_all - T) ** 2)
    return {
        "lra": lra,
        "vision": lra,
        "lra_trace_x": g.define((mean_all - T_X) ** 2),
        "per_sample": g.define(sum(v**2 for v in per_b) / B),
        "paper": g.define(sum(v**2 for v in J.values())),
    }


# --------------------------------------------------------------------------- running a case
def mask_array(case: Case) -> np.ndarray | None:
    return None if case.mask is None else np.array(case.mask, dtype=bool)


def forward_values(case: Case, keys: tuple[str, ...]) -> Lambdified:
    """The definitions' intermediates (e.g. Phi_q, E) at numeric x, parameters: (B, H, ·, ·)."""
    g = Graph()
    x, P = case.symbols()
    st = layer(g, case, x, P)
    outs = []
    for key in keys:
        rows, cols = st[key][0, 0].shape
        full = np.empty((case.B, case.H, rows, cols), dtype=object)
        for (b, h), M in st[key].items():
            for i, j in np.ndindex(rows, cols):
                full[b, h, i, j] = M[i, j]
        outs.append(full)
    return Lambdified([x, *P.values()], outs, defs=g.defs)


def random_point(case: Case, rng) -> tuple[np.ndarray, dict]:
    """x ~ N(0, 1); weights N(0, 1/fan-in); biases N(0, 1/4); λ ~ U(0.2, 1) (generic points)."""
    params = {}
    for k, shape in case.shapes().items():
        if k == "lam":
            params[k] = rng.uniform(0.2, 1.0, shape)
        elif len(shape) == 1:
            params[k] = 0.5 * rng.standard_normal(shape)
        else:
            params[k] = rng.standard_normal(shape) / np.sqrt(shape[-2 if k in ("we", "wr") else -1])
    return rng.standard_normal((case.B, case.N, case.D)), params


def config(case: Case, sampler="linspace") -> PrimalAttentionConfig:
    fixed_n = case.data_dependent and (case.variant == "vision" or callable(sampler))
    return PrimalAttentionConfig(
        dim=case.D, num_heads=case.H, low_rank=case.s, rank_multi=case.m, variant=case.variant,
        data_dependent=case.data_dependent, qk_bias=case.qk_bias,
        num_tokens=case.N if fixed_n else None, sampler=sampler,
    )  # fmt: skip
