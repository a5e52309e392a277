"""Adapter spec of canonical (softmax) attention, the dual form: ``check_dual_attention``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..compare import ATOL, DEFAULT_K, OperandScale
from ..dual import dual_attention, dual_attention_backward
from ..magnitudes import attention_magnitudes
from .core import OPS, AdapterReport, Arrays, OpSpec, check_callable, register_op

__all__ = [
    "AttentionPoint",
    "DUAL_ATTENTION_GRID",
    "LARGE_LOGIT_POINTS",
    "LONG_SUM_POINTS",
    "check_dual_attention",
]


@dataclass(frozen=True)
class AttentionPoint:
    """One dual-attention grid point: q ``(*batch, n, d)``, k ``(*batch, m, d)``, v ``(*batch, m, dv)``.

    mask: None; "random" (shape ``(*batch, n, m)``, every row sees a key); "empty-row"
    (same, one query row of the first batch element sees no key); "broadcast" (shape
    (n, m), shared by all batch elements and heads, with a fully masked row).
    q, k are standard normal; v is standard normal plus ``v_mean`` (values with a common
    offset, as post-activation features have: their weighted sums over keys do not
    cancel, so the accumulation precision shows).
    """

    batch: tuple[int, ...] = (2, 3)
    n: int = 5
    m: int = 7
    d: int = 4
    dv: int = 3
    mask: str | None = None
    causal: bool = False
    scale: float | None = None
    v_mean: float = 0.0

    def __str__(self) -> str:
        s = f"batch={self.batch} N={self.n} M={self.m} d={self.d} dv={self.dv}"
        s += f" mask={self.mask}" if self.mask else ""
        s += " causal" if self.causal else ""
        s += f" scale={self.scale:g}" if self.scale is not None else ""
        return s + (f" v_mean={self.v_mean:g}" if self.v_mean else "")


# No point has M = 1 or causal with N = 1: there dq (and dk) vanish in exact arithmetic
# and a purely relative bound has no scale to be relative to (docs/validation.md).
DUAL_ATTENTION_GRID = (
    AttentionPoint(),
    AttentionPoint(n=6, m=6, causal=True),
    AttentionPoint(n=4, m=7, causal=True),  # N < M, top-left aligned
    AttentionPoint(n=7, m=3, causal=True),  # N > M
    AttentionPoint(n=1, m=6),
    AttentionPoint(d=1),
    AttentionPoint(mask="random", scale=0.37),
    AttentionPoint(mask="empty-row"),
    AttentionPoint(n=6, m=6, mask="broadcast", causal=True),
    AttentionPoint(batch=(), n=8, m=8, d=8, dv=8),
    AttentionPoint(batch=(3,), n=16, m=12, d=8, dv=5, mask="empty-row"),
    # large logits, |S| up to a few hundred: exp overflows float32 without the max-shift
    # (above 88.7), and a correct kernel's error grows like max|S|·eps (the bound's L)
    AttentionPoint(scale=40.0),
    AttentionPoint(n=6, m=6, causal=True, scale=40.0),
    AttentionPoint(mask="empty-row", scale=25.0),
    # long sums (M ≥ 512) at near-uniform attention over values with an offset: the
    # weighted sums do not cancel, so a bfloat16 accumulator shows (float32 ones pass)
    AttentionPoint(batch=(), n=64, m=1024, d=16, dv=8, scale=0.05, v_mean=1.0),
    AttentionPoint(batch=(), n=512, m=512, d=16, dv=8, scale=0.05, v_mean=1.0),
)
LARGE_LOGIT_POINTS = DUAL_ATTENTION_GRID[11:14]
LONG_SUM_POINTS = DUAL_ATTENTION_GRID[14:16]


def _draw_attention(p: AttentionPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    tensors = {
        "q": rng.standard_normal((*p.batch, p.n, p.d)),
        "k": rng.standard_normal((*p.batch, p.m, p.d)),
        "v": rng.standard_normal((*p.batch, p.m, p.dv)) + p.v_mean,
    }
    mask = None
    if p.mask is not None:
        if p.mask not in ("random", "empty-row", "broadcast"):
            raise ValueError(f"AttentionPoint.mask must be None, 'random', 'empty-row' or "
                             f"'broadcast', got {p.mask!r}")  # fmt: skip
        shape = (p.n, p.m) if p.mask == "broadcast" else (*p.batch, p.n, p.m)
        mask = rng.random(shape) > 0.35
        mask[..., 0] |= ~mask.any(-1)  # every row sees a key ...
        if p.mask != "random":  # ... except one query row (the last) of the first batch element
            mask[(0,) * (mask.ndim - 2) + (p.n - 1,)] = False
    return tensors, {"mask": mask, "causal": p.causal, "scale": p.scale}


def _attention_reference(t: Arrays, o: dict) -> tuple[Arrays, Callable[[Arrays], Arrays]]:
    out, cache = dual_attention(t["q"], t["k"], t["v"], **o)

    def vjp(cot: Arrays) -> Arrays:
        dq, dk, dv = dual_attention_backward(cot["out"], cache)
        return {"q": dq, "k": dk, "v": dv}

    return {"out": out}, vjp


def _attention_magnitudes(t: Arrays, o: dict, cot: Arrays) -> dict[str, OperandScale]:
    return attention_magnitudes(t["q"], t["k"], t["v"], cot["out"], **o)


def _call_attention(fn: Callable, t: Arrays, o: dict) -> Arrays:
    return {"out": fn(t["q"], t["k"], t["v"], o["mask"], o["causal"], o["scale"])}


def _call_attention_backward(bwd: Callable, t: Arrays, o: dict, cot: Arrays) -> Arrays:
    dq, dk, dv = bwd(t["q"], t["k"], t["v"], o["mask"], o["causal"], o["scale"], cot["out"])
    return {"q": dq, "k": dk, "v": dv}


register_op(
    OpSpec(
        "dual_attention",
        DUAL_ATTENTION_GRID,
        _draw_attention,
        _call_attention,
        _call_attention_backward,
        _attention_reference,
        magnitudes=_attention_magnitudes,
    )
)


def check_dual_attention(
    fn: Callable,
    *,
    backward: Callable | None = None,
    grid: Sequence[AttentionPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
    atol: float = ATOL,
) -> AdapterReport:
    """Check a canonical (softmax) attention implementation against ``dual_attention``.

    ``fn(q, k, v, mask, causal, scale) -> out`` with q (..., N, d), k (..., M, d),
    v (..., M, dv) → out (..., N, dv); mask None or boolean broadcastable to
    (..., N, M), True = may attend; causal: key j visible to query i iff j ≤ i
    (top-left aligned), combined with the mask by AND; scale None means 1/sqrt(d).
    A query row with no visible key must give 0 (and zero gradients).
    ``backward(q, k, v, mask, causal, scale, dout) -> (dq, dk, dv)`` is optional.
    Default grid: ``DUAL_ATTENTION_GRID`` (batch/heads, N ≠ M, N = 1, d = 1, masks with
    a fully masked row, causal). See ``check_callable`` for the other arguments.
    """
    return check_callable(
        OPS["dual_attention"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k, seed=seed,
        atol=atol,
    )  # fmt: skip
