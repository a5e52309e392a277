"""Adapter spec of the KSVD loss (paper and code conventions): ``check_ksvd_loss``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..compare import ATOL, DEFAULT_K
from ..ksvd_loss import KSVDTerms, get_convention, ksvd_loss, ksvd_loss_backward
from .core import OPS, AdapterReport, Arrays, OpSpec, check_callable, register_op

__all__ = [
    "KSVD_LOSS_LAYER_FIELDS",
    "KSVDLossPoint",
    "KSVD_LOSS_GRID",
    "check_ksvd_loss",
    "well_conditioned_lambda",
    "KSVD_FLOOR_EPS",
]

KSVD_LOSS_LAYER_FIELDS = KSVDTerms._fields  # escore, rscore, lam, we, wr, we_x, wr_x
_CONVENTIONS = ("lra", "lra_trace_x", "per_sample", "paper")

# The low-precision rounding floor, in eps · max|r|, of the ops whose arrays run through
# the KSVD loss (this one and the layer), instead of 2. The loss is one scalar, (mean of
# B·H·N terms − T)², and dλ, the trace part of dW_e, dW_r and the loss's share of every
# other gradient inherit its rounding error: one random sample, not the maximum over many
# entries that k·(primal_np's own error) relies on, so primal_np's own error can be small
# by luck. With well-conditioned draws (κ ≤ 2, ``well_conditioned_lambda``; without
# them err/bound reached 9.4), over 100 seeds of the layer grid and 200 of the loss grid
# a floor of 2 fails 0.1–0.4 % of correct float32 arrays (worst err/bound 2.2); with 16
# the worst is 0.60 (PyTorch statement of the authors' code, layer), 0.53 (independent
# NumPy einsum layer), 0.28 (loss, both). 16 eps is 1.9e-6 relative in float32: an
# error of 1e-4 still fails by a factor of 50.
KSVD_FLOOR_EPS = 16.0


@dataclass(frozen=True)
class KSVDLossPoint:
    """One grid point: ``num_layers`` layers sharing the batch B and the N tokens.

    Layer i has ``heads[i]`` heads and rank ``ranks[i]``: escore, rscore (B, H, N, s)
    standard normal, lam (H, s) uniform(0, 1) then scaled up per head where needed by
    ``well_conditioned_lambda``. With ``data_dependent`` the parameters We, Wr are
    (H, samples[i], s) (normal, variance 1/n) and the data-dependent weights we_x, wr_x
    (B, H, head_dim, s) standard normal are given; otherwise We, Wr are (H, head_dim, s)
    and we_x, wr_x are None.
    """

    convention: str
    num_layers: int = 1
    data_dependent: bool = True
    batch: int = 2
    tokens: int = 5
    heads: tuple[int, ...] = (2, 3)
    ranks: tuple[int, ...] = (2, 1)
    samples: tuple[int, ...] = (6, 4)
    head_dim: int = 3

    def __str__(self) -> str:
        layers = zip(self.heads[: self.num_layers], self.ranks, strict=False)
        shapes = ", ".join(f"H={h} s={s}" for h, s in layers)
        kind = "we_x given" if self.data_dependent else "no we_x"
        return f"{self.convention} B={self.batch} N={self.tokens} layers [{shapes}] {kind}"


KSVD_LOSS_GRID = tuple(
    KSVDLossPoint(conv, layers, dd)
    for conv, dd in (("lra", True), ("lra_trace_x", True), ("per_sample", False), ("paper", True))
    for layers in (1, 2)
) + (KSVDLossPoint("paper", 2, False),)


def well_conditioned_lambda(terms: KSVDTerms, convention: str, margin: float = 3.0) -> np.ndarray:
    """λ rescaled per head so that every KSVD problem's j = q_e + q_r − T is well conditioned.

    j → 0 at a KSVD stationary point, and there the loss and every gradient through it
    lose log2 κ bits in any precision, κ = (q_e + q_r + |T|) / |j|: a float32 candidate's
    error is then κ times its rounding error, and a single scalar's rounding error is one
    random sample, so the k·(primal_np's own error) rule has no reliable scale. The grids
    therefore stay away from it: head h's λ is scaled by c_h ≥ 1 until
    q_{b,h} ≥ margin · |T_{b,h}| for every b (q = red_n q(e) + red_n q(r) grows like c² for
    the code's λ², like c for the paper's Λ), which gives κ ≤ (margin + 1)/(margin − 1) = 2
    for every j, per problem, per sample or batch-averaged. The scores and weights are
    untouched; λ, unconstrained in the authors' code, only weighs the quadratic terms.
    """
    conv = get_convention(convention)
    E, R, lam, we, wr, we_x, wr_x = terms
    coef = lam**2 if conv.quadratic == "lambda_sq" else lam
    q = 0.5 * np.einsum("bhns,hs->bh", E * E + R * R, coef)  # the token reduction cancels
    if conv.tokens == "mean":
        q = q / E.shape[2]
    if conv.trace == "data" and we_x is not None and wr_x is not None:
        T = np.einsum("bhps,bhps->bh", we_x, wr_x)
    else:
        T = np.broadcast_to(np.einsum("hns,hns->h", we, wr), q.shape)
    need = np.max(margin * np.abs(T) / q, axis=0)  # (H,)
    c = np.maximum(1.0, need)
    c = np.sqrt(c) if conv.quadratic == "lambda_sq" else c
    return lam * c[:, None]


def _draw_loss(pt: KSVDLossPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    if pt.convention not in _CONVENTIONS:
        raise ValueError(
            f"KSVDLossPoint.convention must be one of {_CONVENTIONS}, got {pt.convention!r}"
        )
    if pt.convention == "lra_trace_x" and not pt.data_dependent:
        raise ValueError("the lra_trace_x convention needs data_dependent=True (we_x, wr_x)")
    B, N, p = pt.batch, pt.tokens, pt.head_dim
    t: Arrays = {}
    for i in range(pt.num_layers):
        H, s = pt.heads[i], pt.ranks[i]
        n = pt.samples[i] if pt.data_dependent else p
        t[f"layer{i}.escore"] = rng.standard_normal((B, H, N, s))
        t[f"layer{i}.rscore"] = rng.standard_normal((B, H, N, s))
        t[f"layer{i}.lam"] = rng.uniform(0.0, 1.0, (H, s))
        t[f"layer{i}.we"] = rng.standard_normal((H, n, s)) / np.sqrt(n)
        t[f"layer{i}.wr"] = rng.standard_normal((H, n, s)) / np.sqrt(n)
        if pt.data_dependent:
            t[f"layer{i}.we_x"] = rng.standard_normal((B, H, p, s))
            t[f"layer{i}.wr_x"] = rng.standard_normal((B, H, p, s))
        terms = KSVDTerms(*(t.get(f"layer{i}.{f}") for f in KSVD_LOSS_LAYER_FIELDS))  # type: ignore[arg-type]
        t[f"layer{i}.lam"] = well_conditioned_lambda(terms, pt.convention)
    return t, {"convention": pt.convention, "num_layers": pt.num_layers}


def _layers(t: Arrays, o: dict) -> list[KSVDTerms]:
    return [
        KSVDTerms(*(t.get(f"layer{i}.{f}") for f in KSVD_LOSS_LAYER_FIELDS))  # type: ignore[arg-type]
        for i in range(o["num_layers"])
    ]


def _grads(per_layer: Sequence[Sequence], layers: list[KSVDTerms]) -> Arrays:
    """Name the per-layer gradient tuples; None stands for zero (an unused input)."""
    if len(per_layer) != len(layers):
        raise ValueError(
            f"backward returned {len(per_layer)} layers' gradients, expected {len(layers)}"
        )
    out: Arrays = {}
    for i, (g, terms) in enumerate(zip(per_layer, layers, strict=True)):
        g = tuple(g)
        if len(g) != len(KSVD_LOSS_LAYER_FIELDS):
            raise ValueError(
                f"layer {i}: backward returned {len(g)} gradients, expected 7 {KSVD_LOSS_LAYER_FIELDS}"
            )
        for f, gi, a in zip(KSVD_LOSS_LAYER_FIELDS, g, terms, strict=True):
            if a is not None:
                out[f"layer{i}.{f}"] = np.zeros_like(a) if gi is None else np.asarray(gi)
    return out


def _loss_reference(t: Arrays, o: dict) -> tuple[Arrays, Callable[[Arrays], Arrays]]:
    layers = _layers(t, o)
    loss, cache = ksvd_loss(layers, o["convention"])
    dtype = layers[0].escore.dtype

    def vjp(cot: Arrays) -> Arrays:
        return _grads(ksvd_loss_backward(float(cot["ksvd_loss"]), cache).layers, layers)

    return {"ksvd_loss": np.asarray(loss, dtype=dtype)}, vjp


def _call_loss(fn: Callable, t: Arrays, o: dict) -> Arrays:
    return {"ksvd_loss": np.asarray(fn(_layers(t, o), o["convention"]))}


def _call_loss_backward(bwd: Callable, t: Arrays, o: dict, cot: Arrays) -> Arrays:
    layers = _layers(t, o)
    return _grads(bwd(layers, o["convention"], float(cot["ksvd_loss"])), layers)


register_op(
    OpSpec(
        "ksvd_loss",
        KSVD_LOSS_GRID,
        _draw_loss,
        _call_loss,
        _call_loss_backward,
        _loss_reference,
        floor_eps=KSVD_FLOOR_EPS,
    )
)


def check_ksvd_loss(
    fn: Callable,
    *,
    backward: Callable | None = None,
    conventions: Sequence[str] | None = None,
    grid: Sequence[KSVDLossPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
    atol: float = ATOL,
) -> AdapterReport:
    """Check a KSVD loss against ``primal_np.ksvd_loss`` (docs/theory.md §5; docs/conformance.md, discrepancies 1–4).

    ``fn(layers, convention) -> loss`` (a float or 0-d array). ``layers``: one
    ``primal_np.KSVDTerms`` per layer, a NamedTuple that unpacks as
    ``(escore, rscore, lam, We, Wr, we_x, wr_x)``: escore, rscore (B, H, N, s), lam
    (H, s), We, Wr (H, n, s) parameters, we_x, wr_x (B, H, p, s) data-dependent
    weights or None. With a_{b,h,n} = ½‖λ_h ⊙ e_{b,h,n}‖², c likewise for r,
    T = (1/H) Σ_h Tr(We_hᵀ Wr_h) and T_X = mean_{b,h} Tr(we_x_{b,h}ᵀ wr_x_{b,h}):

    - ``"lra"`` (LRA and vision code, flag ``trace_no_x``):
      (1/L) Σ_l (mean_{b,h,n} a + mean_{b,h,n} c − T)²;
    - ``"lra_trace_x"``: the same with T_X (the LRA argument parser's default);
    - ``"per_sample"`` (time series, RL, language model):
      mean_b (1/L) Σ_l (mean_{h,n} a + mean_{h,n} c − T)²;
    - ``"paper"``: Σ_l Σ_{b,h} (Σ_n ½ eᵀ diag(λ_h) e + Σ_n ½ rᵀ diag(λ_h) r − Tr(We_hᵀ Wr_h))²
      (Λ = diag(λ), sums, one J² per sequence and head).

    ``backward(layers, convention, dloss) -> [per-layer gradients]``, optional: for each
    layer a 7-tuple ``(d_escore, d_rscore, d_lam, d_We, d_Wr, d_we_x, d_wr_x)`` of
    dloss·∂loss (``primal_np.ksvd_loss_backward`` returns exactly this); ``None`` means
    zero (an input the loss does not use, as torch autograd leaves it). Arrays are
    reported as ``output.ksvd_loss`` and ``grad.layer<i>.<field>``.

    ``conventions`` restricts the default grid (``KSVD_LOSS_GRID``: each convention with
    1 and 2 layers of different H and s) to those conventions, for a candidate that
    implements only the authors' code. See ``check_callable`` for the other arguments.
    """
    if grid is None:
        grid = KSVD_LOSS_GRID
        if conventions is not None:
            unknown = sorted(set(conventions) - set(_CONVENTIONS))
            if unknown:
                raise ValueError(f"conventions must be among {_CONVENTIONS}, got {unknown}")
            grid = tuple(p for p in grid if p.convention in conventions)
    return check_callable(
        OPS["ksvd_loss"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k, seed=seed,
        atol=atol,
    )  # fmt: skip
