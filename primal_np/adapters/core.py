"""The generic machinery of ``primal_np.adapters``: op specs, the grid runner, reports.

An ``OpSpec`` says how to draw inputs for a grid point, how to call a candidate forward
and backward, and how primal_np computes the reference outputs and gradients;
``check_callable(spec, fn, backward=...)`` does the rest and judges each result with
``primal_np.compare`` (float64: a 1e-10 relative bound; float32/float16/bfloat16: at
most k× primal_np's own error in that precision, plus a rounding floor). The
candidate takes and returns NumPy arrays; wrapping a framework is the caller's job
(docs/validation.md has PyTorch examples).

For each grid point (inputs drawn once, float64, seeded by ``(seed, point index)``)
and each precision p:

1. inputs and standard-normal cotangents (never all-ones) are rounded to p:
   float64/float32/float16 arrays, and float32 arrays holding bfloat16 values for
   "bfloat16" (convert them to ``torch.bfloat16`` losslessly; return float32);
2. the candidate computes outputs (and gradients of Σ⟨cotangent, output⟩, plus
   whatever else the op's objective adds, when a backward is given) from the rounded
   arrays;
3. they are compared with primal_np's float64 result on the unrounded inputs; for
   low precisions the bound uses primal_np's own result in p (``emulate_precision``).

A candidate that raises, returns NaN or the wrong shape fails that grid point with
the problem named; it never aborts the run. The report keeps the exception's type and
message and the innermost frame of the caller's own code (``describe_exception``).

**The precision being checked.** While a candidate runs, ``current_precision()`` returns
the precision of the current check ("float64", "float32", "float16" or "bfloat16"), and a
candidate (forward or backward) whose signature has a parameter named ``precision``
receives it as the keyword ``precision=``. Use it where the arrays' dtype cannot say it:
bfloat16 arrives as float32 arrays holding bfloat16 values (NumPy has no bfloat16).

**Operand magnitudes.** A spec may give ``magnitudes(tensors, options, cotangents)``, the
operand magnitude A of each output and gradient (``primal_np.magnitudes``): the rounding
part of the bound is then floor_eps · eps · max(max|r|, A) instead of floor_eps · eps ·
max|r|, so that arrays that are zero in exact arithmetic and large logits raise no false
alarm.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import os
import sysconfig
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..compare import (
    ATOL,
    DEFAULT_K,
    FLOOR_EPS,
    PRECISIONS,
    ArrayResult,
    CompareReport,
    OperandScale,
    compare,
    emulate_precision,
    round_to_precision,
)

__all__ = [
    "Arrays",
    "OpSpec",
    "OPS",
    "register_op",
    "GridResult",
    "AdapterReport",
    "check_callable",
    "current_precision",
    "describe_exception",
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
        cotangents: the outputs that receive a random upstream gradient (default
            None: all of them). An op whose objective adds a term of its own (the
            layer's η·KSVD loss) lists only the outputs its backward takes one for.
        optional: outputs compared only when the candidate returns them (the layer's
            ``ksvd_loss``); the others are required.
        floor_eps: the rounding floor of the low-precision rule, in units of
            eps · max|r| (``primal_np.compare``; 2 unless the op says why not).
        magnitudes: ``magnitudes(tensors, options, cotangents) -> {array name: A}``,
            the operand magnitude of each ``output.*`` / ``grad.*`` array from the
            float64 inputs (``primal_np.magnitudes``); None: the rules use max|r|.
    """

    name: str
    grid: tuple[Any, ...]
    draw: Callable[[Any, np.random.Generator], tuple[Arrays, dict]]
    call: Callable[[Callable, Arrays, dict], Arrays]
    call_backward: Callable[[Callable, Arrays, dict, Arrays], Arrays]
    reference: Reference
    cotangents: tuple[str, ...] | None = None
    optional: tuple[str, ...] = ()
    floor_eps: float = FLOOR_EPS
    magnitudes: Callable[[Arrays, dict, Arrays], dict[str, OperandScale]] | None = None


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
            ratios = [
                (a.max_abs_err / a.bound, a.name)
                for a in r.report.rows
                if a.bound and a.max_abs_err is not None
            ]
            worst = max(ratios, default=None)
            ratio = "" if worst is None else f"worst err/bound {worst[0]:.3g} ({worst[1]})"
            verdict = "pass" if r.report.ok else "FAIL"
            lines.append(f"  {verdict}  {r.point:<{width}}  {r.precision:<8}  {ratio}")
        for r in self.failures:
            lines += ["", str(r.report)]
        return "\n".join(lines)


_PRECISION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "primal_np_adapter_precision", default=None
)


def current_precision() -> str | None:
    """The precision being checked while a ``check_*`` call runs the candidate, else None.

    "float64", "float32", "float16" or "bfloat16". For "bfloat16" the candidate receives
    float32 arrays holding bfloat16 values: convert them (``torch.from_numpy(a).to(
    torch.bfloat16)``, ``jnp.asarray(a, jnp.bfloat16)``) — exact — and return float32.
    """
    return _PRECISION.get()


@contextlib.contextmanager
def _checking(precision: str) -> Iterator[None]:
    token = _PRECISION.set(precision)
    try:
        yield
    finally:
        _PRECISION.reset(token)


def _takes_precision(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins, some C callables
        return False
    p = params.get("precision")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _with_precision(fn: Callable, precision: str) -> Callable:
    """``fn`` with ``precision=`` bound when its signature has that parameter."""
    if not _takes_precision(fn):
        return fn

    def call(*args, **kwargs):
        return fn(*args, precision=precision, **kwargs)

    return call


_LIBRARY_DIRS = tuple(
    os.path.normcase(os.path.realpath(p))
    for p in {
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # primal_np itself
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


def _is_user_frame(filename: str) -> bool:
    """Not primal_np, the standard library or an installed package (site-packages)."""
    if filename.startswith("<") and filename not in ("<stdin>", "<string>"):
        return False  # <frozen ...>, <__array_function__ internals>
    path = os.path.normcase(os.path.realpath(filename))
    return not any(path.startswith(d + os.sep) for d in _LIBRARY_DIRS) and (
        "site-packages" not in path and "dist-packages" not in path
    )


def describe_exception(exc: BaseException) -> str:
    """``Type: message (at file:line in function: source)`` for a candidate's exception.

    The message is ``str(exc)`` (its first 5 lines), not the last line of the formatted
    exception: JAX, for one, appends a note about removed frames there. The frame is the
    innermost one of the caller's own code (not primal_np, the standard library or an
    installed package), else the innermost frame of the traceback.
    """
    msg = str(exc).strip()
    lines = msg.splitlines()
    if len(lines) > 5:
        msg = "\n".join(lines[:5]) + " [...]"
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if _is_user_frame(f.filename)]
    frame = user[-1] if user else (frames[-1] if frames else None)
    if frame is not None:
        where = f"{frame.filename}:{frame.lineno} in {frame.name}"
        if frame.line:
            where += f": {frame.line.strip()}"
        text += f" (at {where})"
    return text


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
    floor_eps: float | None = None,
    atol: float = ATOL,
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
        floor_eps: the low-precision rounding floor (default: ``spec.floor_eps``).
        atol: the absolute slack of both rules (``primal_np.compare``; default 1e-12).

    While the candidate runs, ``current_precision()`` names the precision checked, and
    ``fn`` / ``backward`` receive it as ``precision=`` if their signature has it.

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
    floor = spec.floor_eps if floor_eps is None else floor_eps
    report = AdapterReport(spec.name)
    for i, point in enumerate(spec.grid if grid is None else grid):
        rng = np.random.default_rng([seed, i])
        tensors, options = spec.draw(point, rng)
        outs, vjp = spec.reference(tensors, options)
        cots = {
            n: rng.standard_normal(np.shape(o))
            for n, o in outs.items()
            if spec.cotangents is None or n in spec.cotangents
        }
        reference = _prefixed(outs, vjp(cots) if backward is not None else None)
        scales = None if spec.magnitudes is None else spec.magnitudes(tensors, options, cots)

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
                with _checking(dt):
                    outs_c = spec.call(_with_precision(fn, dt), t_dt, options)
                    cand = {f"output.{n}": np.asarray(a) for n, a in outs_c.items()}
                    if backward is not None:
                        bwd = _with_precision(backward, dt)
                        grads = spec.call_backward(bwd, t_dt, options, c_dt)
                        cand |= {f"grad.{n}": np.asarray(g) for n, g in grads.items()}
            except Exception as exc:  # a crashing candidate is a failing grid point
                why = "candidate raised " + describe_exception(exc)
                report.results.append(
                    GridResult(str(point), dt, _failed(list(reference), dt, title, why))
                )
                continue
            skip = {f"output.{n}" for n in spec.optional} - set(cand)
            names = [n for n in reference if n not in skip]
            own = None if dt == "float64" else emulate_precision(run, inputs, dt)
            rep = compare(
                cand, reference, precision=dt, own=own, k=k, floor_eps=floor, atol=atol,
                scales=scales, names=names, title=title,
            )  # fmt: skip
            report.results.append(GridResult(str(point), dt, rep))
    return report
