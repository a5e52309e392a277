"""Check a Python implementation of an op (PyTorch, JAX, CUDA bindings, ...) against primal_np.

``check_dual_attention(fn, backward=...)`` runs the candidate over a grid of shapes,
masks and precisions and judges each result with ``primal_np.compare`` (float64: a
1e-10 relative bound; float32/float16/bfloat16: at most k× primal_np's own error in
that precision, plus a rounding floor). The candidate takes and returns NumPy arrays;
wrapping a framework is the caller's job (docs/validation.md has a PyTorch example).

Generic machinery: an ``OpSpec`` says how to draw inputs for a grid point, how to
call a candidate forward and backward, and how primal_np computes the reference
outputs and gradients; ``check_callable(spec, fn, backward=...)`` does the rest.
Dual attention is the first registered spec (``OPS["dual_attention"]``).

For each grid point (inputs drawn once, float64, seeded by ``(seed, point index)``)
and each precision p:

1. inputs and standard-normal cotangents (never all-ones) are rounded to p:
   float64/float32/float16 arrays, and float32 arrays holding bfloat16 values for
   "bfloat16" (convert them to ``torch.bfloat16`` losslessly; return float32);
2. the candidate computes outputs (and gradients of Σ⟨cotangent, output⟩ when a
   backward is given) from the rounded arrays;
3. they are compared with primal_np's float64 result on the unrounded inputs; for
   low precisions the bound uses primal_np's own result in p (``emulate_precision``).

A candidate that raises, returns NaN or the wrong shape fails that grid point with
the problem named; it never aborts the run.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compare import (
    DEFAULT_K,
    PRECISIONS,
    ArrayResult,
    CompareReport,
    compare,
    emulate_precision,
    round_to_precision,
)
from .dual import dual_attention, dual_attention_backward

__all__ = [
    "OpSpec",
    "OPS",
    "register_op",
    "GridResult",
    "AdapterReport",
    "check_callable",
    "AttentionPoint",
    "DUAL_ATTENTION_GRID",
    "check_dual_attention",
]

Arrays = dict[str, np.ndarray]
# primal_np's reference: (tensors, options) -> (outputs, vjp); vjp(cotangents) -> gradients
Reference = Callable[[Arrays, dict], tuple[Arrays, Callable[[Arrays], Arrays]]]


@dataclass(frozen=True)
class OpSpec:
    """How to check implementations of one op.

    Attributes:
        name: the op's name (the key in ``OPS``).
        grid: default grid points; ``str(point)`` labels a point in reports.
        draw: ``draw(point, rng) -> (tensors, options)``: float64 arrays the candidate
            receives in the checked precision (and is differentiated with respect to),
            and everything else (masks, flags, scalars), passed unchanged.
        call: ``call(fn, tensors, options) -> outputs``: run the candidate forward.
        call_backward: ``call_backward(backward, tensors, options, cotangents) -> grads``,
            one gradient per tensor, of Σ⟨cotangents[o], outputs[o]⟩.
        reference: ``reference(tensors, options) -> (outputs, vjp)`` with primal_np,
            computing in the dtype of ``tensors``; ``vjp(cotangents) -> grads``.
    """

    name: str
    grid: tuple[Any, ...]
    draw: Callable[[Any, np.random.Generator], tuple[Arrays, dict]]
    call: Callable[[Callable, Arrays, dict], Arrays]
    call_backward: Callable[[Callable, Arrays, dict, Arrays], Arrays]
    reference: Reference


OPS: dict[str, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Add ``spec`` to ``OPS`` under ``spec.name``."""
    OPS[spec.name] = spec
    return spec


@dataclass
class GridResult:
    """The verdict on one (grid point, precision)."""

    point: str
    precision: str
    report: CompareReport


@dataclass
class AdapterReport:
    """All verdicts of ``check_callable``; ``str(report)`` is a summary plus failing tables."""

    op: str
    results: list[GridResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.report.ok for r in self.results)

    @property
    def failures(self) -> list[GridResult]:
        return [r for r in self.results if not r.report.ok]

    def assert_ok(self) -> AdapterReport:
        if not self.ok:
            raise AssertionError(f"{self.op}: implementation check failed\n{self}")
        return self

    def as_dict(self) -> dict:
        return {
            "op": self.op,
            "ok": self.ok,
            "results": [
                {"point": r.point, "precision": r.precision, **r.report.as_dict()}
                for r in self.results
            ],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.as_dict(), **({"indent": 2} | kwargs))

    def __str__(self) -> str:
        lines = [f"{self.op}: {len(self.results) - len(self.failures)} of {len(self.results)} "
                 "(grid point, precision) pairs pass"]  # fmt: skip
        width = max([len(r.point) for r in self.results] + [5])
        for r in self.results:
            rows = [a for a in r.report.rows if a.bound]
            worst = max(rows, key=lambda a: a.max_abs_err / a.bound, default=None)
            ratio = (
                ""
                if worst is None
                else f"worst err/bound {worst.max_abs_err / worst.bound:.3g} ({worst.name})"
            )
            verdict = "pass" if r.report.ok else "FAIL"
            lines.append(f"  {verdict}  {r.point:<{width}}  {r.precision:<8}  {ratio}")
        for r in self.failures:
            lines += ["", str(r.report)]
        return "\n".join(lines)


def _failed(names: list[str], precision: str, title: str, why: str) -> CompareReport:
    rows = [ArrayResult(n, False, why) for n in names]
    return CompareReport(precision, "(not compared: the candidate raised)", rows, title)


def _prefixed(outs: Arrays, grads: Arrays | None) -> Arrays:
    arrays = {f"output.{n}": np.asarray(a) for n, a in outs.items()}
    arrays |= {f"grad.{n}": np.asarray(a) for n, a in (grads or {}).items()}
    return arrays


def check_callable(
    spec: OpSpec | str,
    fn: Callable,
    *,
    backward: Callable | None = None,
    grid: Sequence[Any] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
) -> AdapterReport:
    """Check ``fn`` (and ``backward``, if given) against primal_np over ``grid`` × ``dtypes``.

    Args:
        spec: an ``OpSpec`` or the name of a registered one.
        fn: the candidate forward, called as the spec says (NumPy in, NumPy out).
        backward: optional candidate backward; without it only outputs are checked.
        grid: grid points (default ``spec.grid``).
        dtypes: precisions among "float64", "float32", "float16", "bfloat16".
        k: the low-precision factor of the comparison rule.
        seed: inputs and cotangents of point i come from ``default_rng([seed, i])``.

    Returns an ``AdapterReport`` (``.ok``, ``str()``, ``.to_json()``, ``.assert_ok()``).
    """
    if isinstance(spec, str):
        if spec not in OPS:
            raise ValueError(f"spec {spec!r} is not a registered op; known: {list(OPS)}")
        spec = OPS[spec]
    if not callable(fn) or (backward is not None and not callable(backward)):
        raise TypeError("fn (and backward, if given) must be callable")
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    for dt in dtypes:
        if dt not in PRECISIONS:
            raise ValueError(f"dtypes must be among {list(PRECISIONS)}, got {dt!r}")
    report = AdapterReport(spec.name)
    for i, point in enumerate(spec.grid if grid is None else grid):
        rng = np.random.default_rng([seed, i])
        tensors, options = spec.draw(point, rng)
        outs, vjp = spec.reference(tensors, options)
        cots = {n: rng.standard_normal(np.shape(o)) for n, o in outs.items()}
        reference = _prefixed(outs, vjp(cots) if backward is not None else None)

        def run(arrays: Arrays, dtype: np.dtype, options: dict = options) -> Arrays:
            t = {n.split(".", 1)[1]: a for n, a in arrays.items() if n.startswith("input.")}
            c = {n.split(".", 1)[1]: a for n, a in arrays.items() if n.startswith("cotangent.")}
            o, back = spec.reference(t, options)
            return _prefixed(o, back(c) if backward is not None else None)

        inputs = {f"input.{n}": a for n, a in tensors.items()}
        inputs |= {f"cotangent.{n}": c for n, c in cots.items()}
        for dt in dtypes:
            title = f"{spec.name} at {point}, {dt}"
            t_dt = {n: round_to_precision(a, dt) for n, a in tensors.items()}
            c_dt = {n: round_to_precision(c, dt) for n, c in cots.items()}
            try:
                outs_c = spec.call(fn, t_dt, options)
                cand = {f"output.{n}": np.asarray(a) for n, a in outs_c.items()}
                if backward is not None:
                    grads = spec.call_backward(backward, t_dt, options, c_dt)
                    cand |= {f"grad.{n}": np.asarray(g) for n, g in grads.items()}
            except Exception as exc:  # a crashing candidate is a failing grid point
                why = "candidate raised " + traceback.format_exception_only(exc)[-1].strip()
                report.results.append(
                    GridResult(str(point), dt, _failed(list(reference), dt, title, why))
                )
                continue
            own = None if dt == "float64" else emulate_precision(run, inputs, dt)
            rep = compare(cand, reference, precision=dt, own=own, k=k, title=title)
            report.results.append(GridResult(str(point), dt, rep))
    return report


# --------------------------------------------------------------------------- dual attention
@dataclass(frozen=True)
class AttentionPoint:
    """One dual-attention grid point: q (*batch, n, d), k (*batch, m, d), v (*batch, m, dv).

    mask: None; "random" (shape (*batch, n, m), every row sees a key); "empty-row"
    (same, one query row of the first batch element sees no key); "broadcast" (shape
    (n, m), shared by all batch elements and heads, with a fully masked row).
    """

    batch: tuple[int, ...] = (2, 3)
    n: int = 5
    m: int = 7
    d: int = 4
    dv: int = 3
    mask: str | None = None
    causal: bool = False
    scale: float | None = None

    def __str__(self) -> str:
        s = f"batch={self.batch} N={self.n} M={self.m} d={self.d} dv={self.dv}"
        s += f" mask={self.mask}" if self.mask else ""
        s += " causal" if self.causal else ""
        return s + (f" scale={self.scale:g}" if self.scale is not None else "")


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
)


def _draw_attention(p: AttentionPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    tensors = {
        "q": rng.standard_normal((*p.batch, p.n, p.d)),
        "k": rng.standard_normal((*p.batch, p.m, p.d)),
        "v": rng.standard_normal((*p.batch, p.m, p.dv)),
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
        OPS["dual_attention"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k, seed=seed
    )
