"""``python -m primal_np verify``: the library's identity and gradient checks.

Each check is a function returning one or more ``CheckResult`` rows (check name,
measured error, bound, pass/fail). Modules register their checks with
``@register_check(group)``; ``run_checks`` runs them all (or a filtered subset).
"""

from __future__ import annotations

import importlib
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

__all__ = ["CheckResult", "register_check", "run_checks", "format_table"]


@dataclass
class CheckResult:
    """One row of the verify table. ``passed`` is None when the check was skipped."""

    check: str
    error: float
    bound: float
    passed: bool | None
    note: str = ""
    group: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready: a NaN or infinite error (a crashed or skipped check) becomes None."""
        d = asdict(self)
        if not math.isfinite(d["error"]):
            d["error"] = None
        return d


CheckFn = Callable[[], "CheckResult | Iterable[CheckResult]"]
_REGISTRY: list[tuple[str, CheckFn]] = []

# Modules whose import registers checks, in the order their rows are printed.
_CHECK_MODULES = (
    "primal_np.verify.dual_checks",
    "primal_np.verify.ksvd_checks",
    "primal_np.verify.layer_checks",
)


def register_check(group: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        _REGISTRY.append((group, fn))
        return fn

    return deco


def result(check: str, error: float, bound: float, note: str = "") -> CheckResult:
    """A row that passes iff ``error <= bound`` (NaN never passes)."""
    error = float(error)
    return CheckResult(check, error, float(bound), bool(error <= bound), note)


def run_checks(only: str | None = None) -> list[CheckResult]:
    """Run the registered checks; with ``only``, keep the rows whose check text (as printed),
    group or function name contains it, ignoring case (``--only KKT`` finds "KKT residuals
    …"). The checks take a few seconds in all, so every check runs and rows are filtered."""
    for mod in _CHECK_MODULES:
        importlib.import_module(mod)
    rows: list[CheckResult] = []
    needle = (only or "").lower()
    for group, fn in _REGISTRY:
        t0 = time.perf_counter()
        try:
            out = fn()
            out_rows = [out] if isinstance(out, CheckResult) else list(out)
        except Exception as exc:  # a crashing check is a failing row, not a crash of verify
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            out_rows = [CheckResult(fn.__name__, float("nan"), 0.0, False, f"raised {tb}")]
        dt = (time.perf_counter() - t0) / max(1, len(out_rows))
        for r in out_rows:
            r.group, r.seconds = group, dt
        rows.extend(r for r in out_rows if needle in f"{r.check}\n{group}\n{fn.__name__}".lower())
    return rows


def format_table(rows: list[CheckResult]) -> str:
    w = max([len(r.check) for r in rows] + [5])
    lines = [f"{'check':<{w}}  {'error':>10}  {'bound':>9}  result", "-" * (w + 32)]
    for r in rows:
        status = "skip" if r.passed is None else ("pass" if r.passed else "FAIL")
        err = "-" if r.passed is None else f"{r.error:.3e}"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"{r.check:<{w}}  {err:>10}  {r.bound:>9.1e}  {status}{note}")
    n_fail = sum(r.passed is False for r in rows)
    n_skip = sum(r.passed is None for r in rows)
    lines.append("-" * (w + 32))
    lines.append(f"{len(rows) - n_fail - n_skip} passed, {n_fail} failed, {n_skip} skipped")
    return "\n".join(lines)
