"""Finite-difference gradient checking, in float64.

Three checks, each stronger or cheaper than the others:

* ``gradcheck(..., mode="elementwise")`` — a central difference for every entry
  of every checked input; the report names the worst index with both values and
  the absolute and relative error. Cost: 2 evaluations per entry.
* ``gradcheck(..., mode="directional")`` — a few random directions u over all
  checked inputs jointly; compares (L(x+hu) − L(x−hu))/2h with ⟨∇L, u⟩.
  Cost: 2 evaluations per direction, so it scales to large inputs.
* ``taylor_test`` — the remainder |L(x+hu) − L(x) − h⟨∇L, u⟩| must shrink as h²
  (log-log slope ≈ 2); a wrong gradient leaves an O(h) remainder (slope ≈ 1).

``check_vjp`` wraps a forward/backward pair: it draws random (standard normal,
never all-ones) cotangents, forms L = Σ ⟨cotangent, output⟩ and checks the
backward's result as the gradient of L.

Step: central differences use h_i = ε^{1/3} · max(1, |x_i|) with ε the float64
machine epsilon (≈ 6e-6 · scale), which balances the O(h²) truncation error
against the O(ε/h) rounding error of the difference quotient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import (
    callable_arg,
    check_finite,
    choice,
    float_array,
    mapping,
    positive_int,
    real_number,
)
from ._checks import seed as _seed

__all__ = [
    "GradcheckRow",
    "GradcheckReport",
    "gradcheck",
    "check_vjp",
    "TaylorReport",
    "taylor_test",
]

_EPS = float(np.finfo(np.float64).eps)
_STEP = _EPS ** (1.0 / 3.0)


@dataclass
class GradcheckRow:
    """One compared quantity: an input (elementwise mode) or a direction."""

    name: str
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...] | None
    analytic: float
    numeric: float
    passed: bool


@dataclass
class GradcheckReport:
    """Result of ``gradcheck``; ``str(report)`` is a readable table."""

    mode: str
    rtol: float
    atol: float
    rows: list[GradcheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def max_rel_err(self) -> float:
        return max((r.max_rel_err for r in self.rows), default=0.0)

    @property
    def max_abs_err(self) -> float:
        return max((r.max_abs_err for r in self.rows), default=0.0)

    def assert_ok(self) -> GradcheckReport:
        if not self.ok:
            raise AssertionError("gradient check failed\n" + str(self))
        return self

    def __str__(self) -> str:
        head = (
            f"gradcheck ({self.mode}; pass iff |a-n| <= {self.atol:g} + {self.rtol:g}*max(|a|,|n|))"
        )
        cols = ("input", "max abs err", "max rel err", "worst index", "analytic", "numeric", "ok")
        lines = [head, "  ".join(f"{c:>14}" for c in cols)]
        for r in self.rows:
            idx = "-" if r.worst_index is None else str(r.worst_index)
            vals = (
                r.name,
                f"{r.max_abs_err:.3e}",
                f"{r.max_rel_err:.3e}",
                idx,
                f"{r.analytic:.10g}",
                f"{r.numeric:.10g}",
                "pass" if r.passed else "FAIL",
            )
            lines.append("  ".join(f"{v:>14}" for v in vals))
        return "\n".join(lines)


def _as64(inputs: Mapping[str, object], names: Sequence[str], source: str) -> dict[str, Any]:
    """The inputs, those named in ``names`` (by the argument ``source``: "grads" or "wrt")
    copied to float64 after checking that they exist, are floating and finite."""
    mapping(inputs, "inputs", "input name → value")
    out: dict[str, Any] = dict(inputs)
    for n in names:
        if n not in inputs:
            raise ValueError(
                f"{source} names {n!r}, which is not among the inputs {sorted(map(str, inputs))}"
            )
        a = np.asarray(inputs[n])
        if a.dtype.kind != "f":
            raise TypeError(f"inputs[{n!r}] must be floating to be differentiated, got {a.dtype}")
        check_finite(a, f"inputs[{n!r}]")
        # C order, so that reshape(-1) below is a view that perturbs the array in place
        out[n] = np.array(a, dtype=np.float64, order="C", copy=True)
    return out


def _check_grads(grads: Mapping[str, object], x: Mapping[str, Any]) -> None:
    """Each analytic gradient: a finite floating array of its input's shape."""
    for n in grads:
        g = float_array(grads[n], f"grads[{n!r}]")
        if g.shape != np.shape(x[n]):
            raise ValueError(
                f"grads[{n!r}] has shape {g.shape}, expected the input's shape {np.shape(x[n])}"
            )
        check_finite(g, f"grads[{n!r}]")


def _check_options(mode: object, rtol: object, atol: object, n_directions: object, seed: object):
    choice(mode, "mode", ("elementwise", "directional"))
    real_number(rtol, "rtol", minimum=0.0, exclusive=True)
    real_number(atol, "atol", minimum=0.0)
    positive_int(n_directions, "n_directions")
    _seed(seed, "seed")


def _scalar(value: object) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"the loss must return a scalar, got an array of shape {arr.shape}")
    return float(arr.reshape(()))


def _row(name, a, n, rtol, atol) -> GradcheckRow:
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    err = np.abs(a - n)
    mag = np.maximum(np.abs(a), np.abs(n))
    tol = atol + rtol * mag
    ratio = err / tol
    worst = int(np.argmax(ratio)) if ratio.size else 0
    # Relative error with the floor atol/rtol, below which entries are judged absolutely
    # (an exactly-zero gradient has no meaningful relative error).
    rel = err / np.maximum(mag, atol / rtol)
    idx = tuple(int(i) for i in np.unravel_index(worst, a.shape)) if a.ndim else ()
    finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(n)))
    return GradcheckRow(
        name=name,
        max_abs_err=float(err.max()) if err.size else 0.0,
        max_rel_err=float(rel.max()) if rel.size else 0.0,
        worst_index=idx,
        analytic=float(a.reshape(-1)[worst]) if a.size else 0.0,
        numeric=float(n.reshape(-1)[worst]) if n.size else 0.0,
        passed=finite and bool(np.all(err <= tol)),
    )


def gradcheck(
    loss: Callable[..., object],
    inputs: Mapping[str, object],
    grads: Mapping[str, np.ndarray],
    *,
    mode: str = "elementwise",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    n_directions: int = 3,
    seed: int = 0,
) -> GradcheckReport:
    """Compare analytic gradients with float64 central differences.

    Args:
        loss: called as ``loss(**inputs)``; must return a scalar.
        inputs: keyword arguments of ``loss``. Those named in ``grads`` are
            differentiated (copied to float64); the others (masks, flags) pass unchanged.
        grads: analytic gradients of the loss, by input name, each shaped like its input.
        mode: "elementwise" (every entry, names the worst index) or "directional"
            (``n_directions`` random joint directions).
        rtol, atol: an entry passes iff ``|analytic − numeric| ≤ atol + rtol·max(|a|, |n|)``.
            The reported relative error is ``|a − n| / max(|a|, |n|, atol/rtol)``.
            The defaults suit O(1) losses in float64, where the central difference
            itself is accurate to about 1e-10 relative.
        seed: seeds the random directions.

    Returns a ``GradcheckReport``; ``report.ok``, ``report.assert_ok()``, ``str(report)``.
    """
    callable_arg(loss, "loss")
    mapping(grads, "grads", "input name → gradient")
    _check_options(mode, rtol, atol, n_directions, seed)
    names = list(grads)
    x = _as64(inputs, names, "grads")
    _check_grads(grads, x)
    report = GradcheckReport(mode=mode, rtol=rtol, atol=atol)
    if mode == "elementwise":
        for n in names:
            arr = x[n]
            assert isinstance(arr, np.ndarray)
            num = np.zeros_like(arr)
            flat, nflat = arr.reshape(-1), num.reshape(-1)
            for i in range(flat.size):
                orig = flat[i]
                h = _STEP * max(1.0, abs(orig))
                flat[i] = orig + h
                lp = _scalar(loss(**x))
                flat[i] = orig - h
                lm = _scalar(loss(**x))
                flat[i] = orig
                nflat[i] = (lp - lm) / (2.0 * h)
            report.rows.append(_row(n, grads[n], num, rtol, atol))
    else:  # "directional"
        rng = np.random.default_rng(seed)
        for t in range(n_directions):
            dirs = {n: rng.standard_normal(np.shape(x[n])) for n in names}
            scale = max(1.0, max(float(np.max(np.abs(x[n]), initial=0.0)) for n in names))
            h = _STEP * scale
            plus = dict(x)
            minus = dict(x)
            for n in names:
                plus[n] = x[n] + h * dirs[n]
                minus[n] = x[n] - h * dirs[n]
            numeric = (_scalar(loss(**plus)) - _scalar(loss(**minus))) / (2.0 * h)
            analytic = float(sum(np.sum(np.asarray(grads[n], np.float64) * dirs[n]) for n in names))
            report.rows.append(_row(f"direction {t}", analytic, numeric, rtol, atol))
    return report


def _random_like(rng: np.random.Generator, out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(_random_like(rng, o) for o in out)
    arr = np.asarray(out)
    return rng.standard_normal(arr.shape) if arr.ndim else float(rng.standard_normal())


def _inner(cot: Any, out: Any) -> float:
    if isinstance(out, tuple):
        return sum((_inner(c, o) for c, o in zip(cot, out, strict=True)), 0.0)
    return float(np.sum(np.asarray(cot) * np.asarray(out, dtype=np.float64)))


def check_vjp(
    forward: Callable[..., tuple[Any, Any]],
    backward: Callable[..., Any],
    inputs: Mapping[str, object],
    wrt: Sequence[str],
    *,
    mode: str = "elementwise",
    seed: int = 0,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    n_directions: int = 3,
) -> GradcheckReport:
    """Check a forward/backward pair with random upstream gradients.

    ``forward(**inputs)`` returns ``(out, cache)`` with ``out`` an array or a tuple
    of arrays; ``backward(cotangent, cache)`` returns the gradients of the inputs
    named in ``wrt``: a NamedTuple of the package's convention (read by field name), a
    dict, or a tuple in the order of ``wrt``. The cotangent (one
    standard-normal array per output, shaped like it) is seeded. The scalar checked
    is L = Σ ⟨cotangent, output⟩, whose gradient is exactly the VJP.
    """
    callable_arg(forward, "forward")
    callable_arg(backward, "backward")
    if isinstance(wrt, str) or not isinstance(wrt, Sequence):
        raise TypeError(f"wrt must be a list of input names, got {type(wrt).__name__} {wrt!r}")
    if not wrt:
        raise ValueError(f"wrt must name at least one input, got {wrt!r}")
    _check_options(mode, rtol, atol, n_directions, seed)
    rng = np.random.default_rng(seed)
    x = _as64(inputs, wrt, "wrt")
    out, cache = forward(**x)
    cot = _random_like(rng, out)
    res = backward(cot, cache)
    if isinstance(res, Mapping):
        grads = {n: res[n] for n in wrt}
    elif hasattr(res, "_fields") and set(wrt) <= set(res._fields):
        grads = {n: getattr(res, n) for n in wrt}
    else:
        res = tuple(res) if isinstance(res, (tuple, list)) else (res,)
        if len(res) != len(wrt):
            raise ValueError(f"backward returned {len(res)} gradients for wrt={list(wrt)}")
        grads = dict(zip(wrt, res, strict=True))

    def loss(**kw: object) -> float:
        return _inner(cot, forward(**kw)[0])

    return gradcheck(
        loss, x, grads, mode=mode, rtol=rtol, atol=atol, n_directions=n_directions, seed=seed + 1
    )


def _check_steps(steps: object) -> np.ndarray:
    """The Taylor test's step sizes: None (the default ladder) or ≥ 2 finite sizes > 0."""
    if steps is None:
        return np.geomspace(1e-1, 1e-6, 11)
    if isinstance(steps, str) or not isinstance(steps, (Sequence, np.ndarray)):
        raise TypeError(
            f"steps must be a sequence of step sizes or None, got {type(steps).__name__}"
        )
    try:
        hs = float_array(np.asarray(steps, dtype=float), "steps", ndim=1)
    except (TypeError, ValueError):
        raise TypeError(f"steps must be a sequence of step sizes or None, got {steps!r}") from None
    if hs.size < 2:
        raise ValueError(f"steps must hold at least 2 step sizes, got {hs.size}")
    if not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"steps must be finite and > 0, got {list(steps)}")
    return hs


def _check_slope_range(slope_range: object) -> tuple[float, float]:
    if not isinstance(slope_range, (tuple, list)) or len(slope_range) != 2:
        raise TypeError(
            f"slope_range must be a pair (low, high), got {type(slope_range).__name__} "
            f"{slope_range!r}"
        )
    lo = real_number(slope_range[0], "slope_range[0]")
    hi = real_number(slope_range[1], "slope_range[1]")
    if not lo < hi:
        raise ValueError(
            f"slope_range must be a pair (low, high) with low < high, got {tuple(slope_range)}"
        )
    return lo, hi


@dataclass
class TaylorReport:
    """Remainders r(h) = |L(x+hu) − L(x) − h⟨∇L,u⟩| and their log-log slope."""

    steps: np.ndarray
    remainders: np.ndarray
    slope: float
    exact: bool  # every remainder at rounding level: L is linear along u
    passed: bool

    def __str__(self) -> str:
        rows = "\n".join(
            f"  h={h:.2e}  r={r:.3e}" for h, r in zip(self.steps, self.remainders, strict=True)
        )
        verdict = "exact to rounding" if self.exact else f"slope {self.slope:.3f} (expect 2)"
        return f"Taylor remainder test: {verdict} — {'pass' if self.passed else 'FAIL'}\n{rows}"


def taylor_test(
    loss: Callable[..., object],
    inputs: Mapping[str, object],
    grads: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    steps: Sequence[float] | None = None,
    slope_range: tuple[float, float] = (1.8, 2.2),
) -> TaylorReport:
    """Taylor-remainder test of a gradient along one random direction.

    For a correct gradient ``r(h) = |L(x+hu) − L(x) − h⟨∇L,u⟩| = O(h²)``, so the slope of
    log r against log h is ≈ 2; any error in ∇L leaves an O(h) term (slope ≈ 1).
    Steps run from 1e-1 to 1e-6 (times max(1, max|x|)); the slope is fitted on the three
    smallest steps whose remainder is above rounding level (``1e3·ε·|L|``). If at most one
    is, L is linear along u and the test passes as "exact".
    """
    callable_arg(loss, "loss")
    mapping(grads, "grads", "input name → gradient")
    _seed(seed, "seed")
    hs0 = _check_steps(steps)
    lo, hi = _check_slope_range(slope_range)
    names = list(grads)
    x = _as64(inputs, names, "grads")
    _check_grads(grads, x)
    rng = np.random.default_rng(seed)
    dirs = {n: rng.standard_normal(np.shape(x[n])) for n in names}
    scale = max(1.0, max(float(np.max(np.abs(x[n]), initial=0.0)) for n in names))
    hs = hs0 * scale
    l0 = _scalar(loss(**x))
    slope_dir = float(sum(np.sum(np.asarray(grads[n], np.float64) * dirs[n]) for n in names))
    rem = []
    for h in hs:
        xh = dict(x)
        for n in names:
            xh[n] = x[n] + h * dirs[n]
        rem.append(abs(_scalar(loss(**xh)) - l0 - h * slope_dir))
    rem_arr = np.asarray(rem)
    floor = 1e3 * _EPS * max(1.0, abs(l0), abs(slope_dir) * float(hs.max()))
    keep = rem_arr > floor
    if keep.sum() < 2:  # nothing (or a single point) to fit above rounding: L is linear along u
        return TaylorReport(hs, rem_arr, math.nan, True, True)
    # The asymptotic rate: fit the three smallest steps above rounding. (At large h the
    # O(h²) term can hide a small gradient error whose O(h) term wins only as h → 0.)
    idx = np.flatnonzero(keep)[-3:]
    slope = float(np.polyfit(np.log(hs[idx]), np.log(rem_arr[idx]), 1)[0])
    return TaylorReport(hs, rem_arr, slope, False, lo <= slope <= hi)
