"""The comparison policy: is a candidate implementation's result close enough to primal_np's?

``compare(candidate, reference, precision=...)`` compares named arrays (float64
references, for example a golden case's ``output.*`` and ``grad.*``) and returns a
``CompareReport``: per array the max absolute, max relative and mean absolute error,
the worst index with both values, the bound used and pass/fail. Missing arrays,
wrong shapes, non-floating dtypes and NaN/inf in the candidate are failing rows
that name the problem, never exceptions. ``str(report)`` is a table;
``report.to_json()`` / ``report.as_dict()`` the machine-readable form.

Errors are measured relative to the size of the reference array, not entry by entry
(an entry-wise ratio explodes at entries that are zero in exact arithmetic)::

    err   = max_i |c_i − r_i|        rel = err / max_i |r_i|

**float64 candidates**: pass iff ``err ≤ rtol · A + atol`` with ``rtol = 1e-10``,
``atol = 1e-12``. **float32 / float16 / bfloat16 candidates** (the flash-attention
rule): pass iff

    err(candidate) ≤ k · err(primal_np in that precision) + floor_eps · eps · A + atol

with both errors measured against the same float64 reference, ``k = 2`` and
``floor_eps = 2`` by default, eps the machine epsilon of the precision (2⁻²³, 2⁻¹⁰,
2⁻⁷), and A the array's scale: max|r|, or max(max|r|, operand magnitude) when the op
gives one (``scales=``; below). The first term is what primal_np itself achieves in
that precision on the same rounded inputs, so it scales with how ill-conditioned the
case is; the floor keeps the bound from collapsing where primal_np happens to be
nearly exact. Two correct float64 evaluations differ by rounding (u = 2⁻⁵³ per
operation): 1e-10 is 10⁶ ulps, and still catches an error of 1e-8.

**The operand magnitude** (``OperandScale(size, logit, length, sensitivity)`` from
``primal_np.magnitudes``; docs/validation.md derives it):

    A = size · (1 + (eps_acc / eps) · √n) + L · W    (low precisions),   A = size  (float64)

- *size* = max Z, the root-sum-square size of the terms the array is formed from (≥
  max|r|). An array that is zero in exact arithmetic — the key-bias gradient of any
  softmax attention layer, Σ_j dK_j = scale · Σ_i (Σ_j dS_ij) Q_i with Σ_j dS_ij = 0 —
  is computed by every correct kernel as rounding noise of the size of its terms; with
  A = max|r| ≈ 1e-16 its bound collapses and correct float32 layers fail.
- *L*, the logit magnitude: exp turns an absolute logit error e into a relative
  probability error (P̃_ij = P_ij (1 + e_ij − Σ_l P_il e_il)), and a logit computed in
  precision u carries abs(e_ij) ≲ u · abs(scale) · Σ_l abs(Q_il K_jl) ≤ u · L. The forward
  error of a correct low-precision kernel therefore grows like max|S| · u: at max|S| ~ 300 a
  correct float32 SDPA reached 2.86× a bound without L (k = 2), and k × primal_np's own
  error, one random sample of that conditioning, was too noisy a scale (1 seed in 20
  failed even at k = 10). *W*, the sensitivity, is the array's first-order change per
  unit of logit error: the sizes propagated with ∂P_ij/∂S_ij = P_ij (1 − P_ij) in place
  of P, small where the softmax saturates.
- *n*, the longest sum on the array's path: accumulated rounding grows like √n · u
  (probabilistically; n · u at worst). The modelled kernel accumulates in float32
  (eps_acc = 2⁻²³), so for bfloat16 and float16 the term is tiny: a bfloat16
  accumulator is not forgiven.

primal_np's low-precision result comes from ``emulate_precision``: the floating
inputs are rounded to the precision, the computation runs in float32, and the
outputs are rounded to the precision. For float32 this is plain float32
arithmetic. NumPy has neither float16 BLAS nor bfloat16: float16 inputs and outputs
are rounded to float16 and the arithmetic is float32 (as primal_np's ops do for
float16 inputs); bfloat16 is emulated by rounding float32 values to bfloat16
(round-to-nearest-even on the upper 16 bits of the float32 bit pattern) before and
after a float32 computation. This models a kernel that stores inputs and outputs in
the low precision and accumulates in float32; a kernel that also rounds
intermediates (for example P before P·V) may need a larger k.

Worked example (case dual_attention_masked, float32, array grad.q; NumPy 2.4 with
OpenBLAS, PyTorch 2.13 CPU): max|r| = 1.3813, operand scale size 3.8035, L = 2.6597,
n = 6, W = 0.88393, so A = 3.8035 · (1 + √6) + 2.6597 · 0.88393 = 15.471; primal_np's
own float32 error is 1.7525e-07, so the bound is

    2 · 1.7525e-07 + 2 · 2⁻²³ · 15.471 + 1e-12 = 3.5049e-07 + 3.6886e-06 = 4.0391e-06

(2.9e-06 relative). PyTorch's float32 ``scaled_dot_product_attention`` gradient is
off by 2.5906e-07 and passes (0.064 of the bound); a gradient off by 1e-4 relative
(1.4e-04) fails by a factor of 34.

Calibration (``benchmarks/validation_sweep.py``, 20 seeds of every default grid):
every correct implementation tried — independent NumPy statements, PyTorch SDPA in
float64/32/16 and bfloat16, ``torch.nn.MultiheadAttention``,
``jax.nn.dot_product_attention`` (float32, bfloat16), the PyTorch statement of the
authors' layers and loss — stays below 0.74 of its bound (attention kernels: 0.24,
``nn.MultiheadAttention``: 0.40); every planted bug fails where it shows, by ≥ 3× its
bound but for one (docs/validation.md lists them). The bounds are first-order estimates with worst-case
constants: a correct kernel lands at 0.01–0.3 of them, at logits of ~300 at 0.002–0.05. ``atol`` adds an absolute slack for arrays of your own that are zero
in exact arithmetic and have no operand magnitude.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = [
    "rel_error",
    "rel_residual",
    "RTOL_FLOAT64",
    "ATOL",
    "DEFAULT_K",
    "FLOOR_EPS",
    "PRECISIONS",
    "OperandScale",
    "operand_magnitude",
    "ArrayResult",
    "CompareReport",
    "compare",
    "round_to_precision",
    "emulate_precision",
]

RTOL_FLOAT64 = 1e-10
ATOL = 1e-12
DEFAULT_K = 2.0
FLOOR_EPS = 2.0

# name -> (machine epsilon, significand bits including the implicit one)
PRECISIONS: dict[str, tuple[float, int]] = {
    "float64": (2.0**-52, 53),
    "float32": (2.0**-23, 24),
    "float16": (2.0**-10, 11),
    "bfloat16": (2.0**-7, 8),
}
_STORAGE_BITS = {np.dtype(np.float64): 53, np.dtype(np.float32): 24, np.dtype(np.float16): 11}


class OperandScale(NamedTuple):
    """What an op says about the rounding-error scale of one of its arrays
    (``primal_np.magnitudes`` derives it):

    - size: max Z, the largest root-sum-square size of the terms the array is formed
      from (≥ max|r|; larger where sums cancel, as in arrays zero in exact arithmetic);
    - logit: L, the logit magnitude of a softmax upstream of the array (0 if none);
    - length: n, the longest sum on the array's path (the accumulation length);
    - sensitivity: max W, the array's first-order change per unit of logit error (the
      probabilities' ∂P_ij/∂S_ij = P_ij (1 − P_ij) propagated); None: size stands in.
    """

    size: float
    logit: float = 0.0
    length: int = 1
    sensitivity: float | None = None


# the accumulator's precision in the modelled kernel: float32 for the 16-bit formats
_ACCUMULATE = {"float64": "float64", "float32": "float32", "float16": "float32",
               "bfloat16": "float32"}  # fmt: skip


def operand_magnitude(scale: OperandScale | float, precision: str) -> float:
    """The operand magnitude A of an array checked in ``precision`` (module doc):

        A = size · (1 + (eps_acc / eps) · √n) + L · W   (float32, float16, bfloat16)
        A = size                                        (float64)

    with eps the precision's machine epsilon, eps_acc the accumulator's (float32 for
    float16 and bfloat16, float32 for float32) and W the sensitivity (size if None). The float64 rule's 1e-10 is 10⁶ ulps: the
    conditioning factors, ≲ 10² on realistic cases, need not enter it, the size (for
    arrays zero in exact arithmetic) does. A plain number is A itself.
    """
    if not isinstance(scale, OperandScale):
        return float(scale)
    if _check_precision(precision) == "float64":
        return scale.size
    eps = PRECISIONS[precision][0]
    eps_acc = PRECISIONS[_ACCUMULATE[precision]][0]
    w = scale.size if scale.sensitivity is None else scale.sensitivity
    return scale.size * (1.0 + eps_acc / eps * float(np.sqrt(scale.length))) + scale.logit * w


def rel_error(actual: object, reference: object) -> float:
    """The relative error of primal_np, used everywhere (verify, tests, derivations, notebooks)::

        rel_error(a, r) = max_i |a_i − r_i| / max_i |r_i|

    measured against the size of the whole reference array, not entry by entry (an
    entry-wise ratio explodes at entries that are zero in exact arithmetic). Edge cases:
    0.0 when a and r are both exactly zero; inf when r is all zero but a is not, when the
    shapes differ, or when either holds NaN or infinity. ``compare`` applies its bounds to
    the same two quantities (``max |a − r|`` and ``max |r|``).
    """
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(r))):
        return float("inf")
    diff = float(np.max(np.abs(a - r), initial=0.0))
    scale = float(np.max(np.abs(r), initial=0.0))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def rel_residual(lhs: object, rhs: object) -> float:
    """Relative residual of an equation lhs = rhs: ‖lhs − rhs‖_F / (‖lhs‖_F + ‖rhs‖_F).

    For identities that hold at a numerically computed point (an SVD, the KKT conditions),
    where neither side is "the reference". 0.0 when both sides vanish; inf on NaN/inf or
    mismatched shapes.
    """
    a = np.asarray(lhs, dtype=np.float64)
    b = np.asarray(rhs, dtype=np.float64)
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    den = float(np.linalg.norm(a) + np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / den if den > 0 else 0.0


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def round_to_precision(x: np.ndarray, precision: str) -> np.ndarray:
    """Round floating ``x`` to the nearest value representable in ``precision``.

    Returns float64 for "float64", float32 for "float32", float16 for "float16" and
    float32 holding bfloat16 values for "bfloat16" (NumPy has no bfloat16 dtype).
    bfloat16 rounding first rounds to float32 (exact for float32 input), then
    rounds to nearest, ties to even, on the upper 16 bits of the float32 bit
    pattern; NaN stays NaN, values beyond the bfloat16 range become ±inf.
    """
    _check_precision(precision)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be a floating-point array, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # overflow to ±inf is the documented rounding
        if precision in ("float64", "float32", "float16"):
            return x.astype(precision)
        f = np.array(x, dtype=np.float32).reshape(-1)  # a 1-d work array, also for 0-d x
    nan = np.isnan(f)
    bits = np.where(nan, np.float32(0), f).view(np.uint32)
    bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = (bits & np.uint32(0xFFFF0000)).view(np.float32)
    out[nan] = np.nan
    return out.reshape(x.shape)


def emulate_precision(
    run: Callable[[dict[str, np.ndarray], np.dtype], Mapping[str, np.ndarray]],
    inputs: Mapping[str, np.ndarray],
    precision: str,
) -> dict[str, np.ndarray]:
    """primal_np's own result in ``precision``: round inputs, compute, round outputs.

    ``run(arrays, dtype)`` computes the outputs (for example ``GoldenCase.recompute``).
    Floating ``inputs`` are rounded to ``precision``; other arrays (boolean masks)
    pass unchanged. For "float64" the computation runs in float64, otherwise in
    float32 (see the module docstring). Returns the outputs, rounded to the
    precision, as float64 arrays.
    """
    _check_precision(precision)
    compute = np.dtype(np.float64 if precision == "float64" else np.float32)
    arrays = {
        n: round_to_precision(a, precision).astype(compute)
        if np.asarray(a).dtype.kind == "f"
        else a
        for n, a in inputs.items()
    }
    outs = run(arrays, compute)
    return {
        n: round_to_precision(np.asarray(o), precision).astype(np.float64) for n, o in outs.items()
    }


@dataclass
class ArrayResult:
    """Verdict on one array. ``problem`` names a failure other than a too-large error."""

    name: str
    passed: bool
    problem: str | None = None
    shape: tuple[int, ...] | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    mean_abs_err: float | None = None
    worst_index: tuple[int, ...] | None = None
    candidate_value: float | None = None
    reference_value: float | None = None
    bound: float | None = None
    own_err: float | None = None  # primal_np's own error in the precision (low precision only)
    ref_scale: float | None = None  # max |reference|
    operand_scale: float | None = None  # the operand magnitude A of the array, when given


@dataclass
class CompareReport:
    """Result of ``compare``; ``ok`` is True iff every array passed."""

    precision: str
    rule: str
    rows: list[ArrayResult] = field(default_factory=list)
    title: str = ""
    ignored: list[str] = field(default_factory=list)  # candidate arrays with no reference

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[ArrayResult]:
        return [r for r in self.rows if not r.passed]

    def assert_ok(self) -> CompareReport:
        if not self.ok:
            raise AssertionError("comparison failed\n" + str(self))
        return self

    def summary(self) -> str:
        """One line: PASS, or FAIL with each failing array and its problem."""
        if self.ok:
            return f"PASS ({len(self.rows)} arrays)"
        parts = [f"{r.name}: {r.problem or 'outside bound'}" for r in self.failures]
        return f"FAIL ({len(parts)} of {len(self.rows)} arrays): " + "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "title": self.title,
            "ok": self.ok,
            "precision": self.precision,
            "rule": self.rule,
            "ignored": list(self.ignored),
            "arrays": [asdict(r) for r in self.rows],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.as_dict(), **({"indent": 2} | kwargs))

    def __str__(self) -> str:
        cols = ["array", "max abs err", "max rel err", "mean abs err", "bound"]
        low = self.precision != "float64"
        cols += ["primal_np err"] * low + ["result", "worst index: candidate vs reference"]
        table = [cols]
        for r in self.rows:
            if r.problem is not None and r.max_abs_err is None:
                table.append([r.name, *["-"] * (len(cols) - 3), "FAIL", r.problem])
                continue
            nums = [r.max_abs_err, r.max_rel_err, r.mean_abs_err, r.bound]
            nums += [r.own_err] * low
            worst = "-"
            if r.candidate_value is not None:
                worst = f"{r.worst_index}: {r.candidate_value:.10g} vs {r.reference_value:.10g}"
            if r.problem:
                worst = f"{r.problem}; {worst}"
            table.append(
                [r.name, *(f"{x:.4e}" for x in nums), "pass" if r.passed else "FAIL", worst]
            )
        widths = [max(len(row[i]) for row in table) for i in range(len(cols) - 1)]
        lines = [self.title] if self.title else []
        lines.append(f"precision {self.precision}; pass iff {self.rule}")
        for j, row in enumerate(table):
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)
            ]
            lines.append("  ".join([*cells, row[-1]]))
            if j == 0:
                lines.append("-" * (sum(widths) + 2 * len(widths) + len(row[-1])))
        if self.ignored:
            lines.append("ignored (no reference array): " + ", ".join(self.ignored))
        lines.append(self.summary())
        return "\n".join(lines)


def _rule(
    precision: str, k: float, rtol: float, atol: float, floor_eps: float, operands: bool
) -> str:
    a = "A" if operands else "max|r|"
    tail = ", A = max(max|r|, operand magnitude)" if operands else ""
    if precision == "float64":
        return f"max|c-r| <= {rtol:g}*{a} + {atol:g}{tail}"
    return (
        f"max|c-r| <= {k:g}*max|p-r| + {floor_eps:g}*eps*{a} + {atol:g}, "
        f"p = primal_np in {precision}, eps = {PRECISIONS[precision][0]:g}{tail}"
    )


def _check_candidate(name: str, c: object, ref: np.ndarray, precision: str) -> str | None:
    """The problem with a candidate array that prevents measuring its error, or None."""
    c = np.asarray(c)
    if c.dtype.kind != "f":
        return f"dtype {c.dtype} is not floating"
    bits = _STORAGE_BITS.get(c.dtype)
    if bits is None:
        return f"dtype {c.dtype} is not float16, float32 or float64"
    if bits < PRECISIONS[precision][1]:
        return f"stored as {c.dtype}, less precise than the claimed precision {precision}"
    if c.shape != ref.shape:
        return f"shape {c.shape}, expected {ref.shape}"
    bad = ~np.isfinite(c)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        n_nan, n_inf = int(np.isnan(c).sum()), int(np.isinf(c).sum())
        return f"{n_nan} NaN and {n_inf} inf of {c.size} values (first at {first}: {c[first]})"
    return None


def compare(
    candidate: Mapping[str, object],
    reference: Mapping[str, np.ndarray],
    *,
    precision: str = "float64",
    own: Mapping[str, np.ndarray] | None = None,
    k: float = DEFAULT_K,
    rtol: float = RTOL_FLOAT64,
    atol: float = ATOL,
    floor_eps: float = FLOOR_EPS,
    scales: Mapping[str, OperandScale | float] | None = None,
    names: Iterable[str] | None = None,
    title: str = "",
) -> CompareReport:
    """Compare ``candidate`` arrays with float64 ``reference`` arrays under the policy above.

    Args:
        candidate: name → array computed by the implementation under test.
        reference: name → finite float64 reference array (any shape).
        precision: the precision the candidate computed in: "float64", "float32",
            "float16" or "bfloat16".
        own: name → primal_np's own result in ``precision`` (``emulate_precision``);
            required, with the reference's shapes, unless precision is "float64".
        k, floor_eps: the low-precision rule's factor and rounding floor.
        rtol: the float64 relative bound; atol: absolute slack in both rules.
        scales: name → the array's ``OperandScale`` (``primal_np.magnitudes``), or the
            operand magnitude A itself as a number: the rounding part of the bound is
            then measured against max(max|r|, A) instead of max|r|, which collapses on
            arrays that are zero in exact arithmetic and ignores the conditioning of
            large logits and long sums (module doc). Arrays without an entry use max|r|.
        names: the reference arrays to compare (default: all of them).
        title: first line of the printed table.

    Returns a ``CompareReport``; problems with the candidate are failing rows. Raises
    ``ValueError`` / ``TypeError`` only for bad reference, ``own`` or arguments.
    """
    _check_precision(precision)
    for arg, val in (("k", k), ("rtol", rtol), ("atol", atol), ("floor_eps", floor_eps)):
        if not (isinstance(val, (int, float)) and np.isfinite(val) and val >= 0):
            raise ValueError(f"{arg} must be a finite number >= 0, got {val!r}")
    magnitude = {n: operand_magnitude(v, precision) for n, v in (scales or {}).items()}
    for name, val in magnitude.items():
        if not (np.isfinite(val) and val >= 0):
            raise ValueError(f"scales[{name!r}] must give a finite magnitude >= 0, got {val!r}")
    names = list(reference) if names is None else list(names)
    if precision != "float64" and own is None:
        raise ValueError(
            f"precision {precision!r} needs own= (primal_np's result in that precision, "
            "from emulate_precision) to derive the bound"
        )
    eps = PRECISIONS[precision][0]
    operands = any(n in magnitude for n in names)
    rule = _rule(precision, k, rtol, atol, floor_eps, operands)
    report = CompareReport(precision, rule, title=title)
    report.ignored = sorted(set(candidate) - set(names))
    for name in names:
        if name not in reference:
            raise ValueError(f"names lists {name!r}, which is not among the reference arrays")
        ref = np.asarray(reference[name])
        if ref.dtype.kind not in "fiub" or not np.all(np.isfinite(ref)):
            raise ValueError(f"reference array {name!r} must be finite and numeric ({ref.dtype})")
        ref = ref.astype(np.float64)
        if name not in candidate:
            report.rows.append(ArrayResult(name, False, "missing from the candidate"))
            continue
        problem = _check_candidate(name, candidate[name], ref, precision)
        if problem is not None:
            report.rows.append(
                ArrayResult(name, False, problem, np.shape(np.asarray(candidate[name])))
            )
            continue
        c = np.asarray(candidate[name], dtype=np.float64)
        diff = np.abs(c - ref)
        scale = float(np.abs(ref).max(initial=0.0))
        operand = magnitude.get(name)
        size = scale if operand is None else max(scale, operand)  # A
        err = float(diff.max(initial=0.0))
        own_err = None
        if precision == "float64":
            bound = rtol * size + atol
        else:
            p = np.asarray(own.get(name) if own is not None else None)
            if p.shape != ref.shape or p.dtype.kind != "f" or not np.all(np.isfinite(p)):
                raise ValueError(
                    f"own[{name!r}] (primal_np in {precision}) must be a finite float array of "
                    f"shape {ref.shape}, got {p.dtype} {p.shape}"
                )
            own_err = float(np.abs(p.astype(np.float64) - ref).max(initial=0.0))
            bound = k * own_err + floor_eps * eps * size + atol
        flat = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
        worst = tuple(int(i) for i in flat)
        row = ArrayResult(
            name,
            bool(err <= bound),
            None,
            ref.shape,
            err,
            err / scale if scale > 0 else err,
            float(diff.mean()) if diff.size else 0.0,
            worst,
            float(c[worst]) if diff.size else None,
            float(ref[worst]) if diff.size else None,
            bound,
            own_err,
            scale,
            operand,
        )
        report.rows.append(row)
    return report
