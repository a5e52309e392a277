"""Plain-text summaries of claim records (the command's default output)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["text_summary", "fmt_interval"]


def fmt_interval(iv: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'m [lo, hi]' of an Interval dict, scaled (accuracy fractions → points by default)."""
    m = f"{iv['mean'] * scale:.{digits}f}"
    if iv.get("lo") is None:
        return m
    return f"{m} [{iv['lo'] * scale:.{digits}f}, {iv['hi'] * scale:.{digits}f}]"


def _accuracy_lines(acc: dict) -> list[str]:
    lines = []
    for task, models in acc.items():
        cells = "  ".join(f"{m} {fmt_interval(iv)}" for m, iv in models.items())
        lines.append(f"  {task}: {cells}")
    return lines


def text_summary(record: dict, path: Path | None = None) -> str:
    """A few lines: the claim, the main numbers (mean [95 % interval] over seeds), the verdict."""
    head = f"claim {record['number']} ({record['claim']}): {record['title']}"
    if record.get("quick"):
        head += "  [--quick: tiny settings, not evidence]"
    lines = [head, f"  paper ({record['paper']['source']}): {record['paper']['quote']}"]
    s = record.get("summary", {})
    if record["claim"] == "accuracy":
        lines.append("  test accuracy, % (mean [95% interval] over seeds):")
        lines += ["  " + ln for ln in _accuracy_lines(s["accuracy"])]
    elif record["claim"] in ("rscores", "ksvd"):
        lines.append("  test accuracy, % (mean [95% interval] over seeds):")
        for variant, tasks in s["accuracy"].items():
            cells = "  ".join(f"{t} {fmt_interval(iv)}" for t, iv in tasks.items())
            lines.append(f"    {variant}: {cells}")
    elif record["claim"] == "efficiency":
        for m, per_n in s.get("time", {}).items():
            cells = "  ".join(f"N={n}: {iv['mean'] * 1e3:.0f} ms" for n, iv in per_n.items())
            lines.append(f"  {m}: {cells}")
    lines.append(f"  verdict: {record['verdict'].upper()} — {record['reason']}")
    secs, cpu = record.get("seconds", 0.0), record.get("cpu_seconds", 0.0)
    load = record.get("loadavg", {}).get("start")
    lines.append(f"  {secs:.0f} s wall, {cpu:.0f} s CPU, load average at start {load}")
    if path is not None:
        lines.append(
            f"  wrote {path}" + (f" and {record['figure']}" if record.get("figure") else "")
        )
    return "\n".join(lines)
