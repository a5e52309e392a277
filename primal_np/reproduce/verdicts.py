"""The verdict rules, fixed before any default run was made (docs/reproduction.md, "How
to read a verdict"). Every rule reads a 95 % t-interval over seeds of a difference
between paired runs (same seed = same data and initialisation)."""

from __future__ import annotations

from .common import Interval

__all__ = [
    "REPRODUCED",
    "NOT_REPRODUCED",
    "INCONCLUSIVE",
    "PARITY_MARGIN",
    "parity",
    "direction",
    "combine",
]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
PARITY_MARGIN = 0.03  # accuracy (fraction): "comparable" = not worse by more than 3 points


def _fmt(iv: Interval, scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
    f = f"+.{digits}f"
    if iv.lo is None or iv.hi is None:
        return f"{iv.mean * scale:{f}}{unit} (one seed: no interval)"
    return f"{iv.mean * scale:{f}}{unit} [{iv.lo * scale:{f}}, {iv.hi * scale:{f}}]"


def parity(iv: Interval, margin: float = PARITY_MARGIN) -> tuple[str, str]:
    """Non-inferiority of a difference d = primal − baseline (accuracy fractions):
    reproduced if the interval's lower end is ≥ −margin; not reproduced if its upper end is
    < −margin (worse by more than the margin); otherwise inconclusive."""
    txt = _fmt(iv)
    if iv.lo is not None and iv.lo >= -margin:
        return (
            REPRODUCED,
            f"{txt}: not worse than the baseline by more than {margin * 100:.0f} points",
        )
    if iv.hi is not None and iv.hi < -margin:
        return (
            NOT_REPRODUCED,
            f"{txt}: worse than the baseline by more than {margin * 100:.0f} points",
        )
    return (
        INCONCLUSIVE,
        f"{txt}: the interval reaches below −{margin * 100:.0f} points and above it",
    )


def direction(
    iv: Interval,
    paper_effect: float | None = None,
    *,
    scale: float = 100.0,
    unit: str = " points",
    digits: int = 1,
) -> tuple[str, str]:
    """A claimed positive effect d > 0: reproduced if the whole interval is above 0; not
    reproduced if it is below 0, or if it contains 0 but excludes the paper's effect size
    (``paper_effect``, same units as d, when the paper gives one); otherwise inconclusive."""
    txt = _fmt(iv, scale, unit, digits)
    side = iv.excludes(0.0)
    if side > 0:
        note = ""
        if paper_effect is not None and iv.hi is not None and iv.hi < paper_effect:
            note = f", smaller than the paper's {paper_effect * scale:+.1f}"
        return REPRODUCED, f"{txt}: above 0{note}"
    if side < 0:
        return NOT_REPRODUCED, f"{txt}: below 0 (the opposite of the claim)"
    if paper_effect is not None and iv.hi is not None and iv.hi < paper_effect:
        return NOT_REPRODUCED, (
            f"{txt}: contains 0 and excludes the paper's effect {paper_effect * scale:+.1f}"
        )
    return INCONCLUSIVE, f"{txt}: contains 0"


def combine(verdicts: list[str]) -> str:
    """All reproduced → reproduced; any not reproduced → not reproduced; else inconclusive."""
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE
