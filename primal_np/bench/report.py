"""The targets table of ``python -m primal_np bench``: ratios within one run."""

from __future__ import annotations

import math

from .measure import LARGE_N


# --------------------------------------------------------------------------- report
def _find(results, **kw):
    for r in results:
        if all(r.get(k) == v for k, v in kw.items()) and r.get("fwd_bwd_s") is not None:
            return r
    return None


def summarize(results: list[dict]) -> list[tuple[str, str, str]]:
    """The targets of issue 9 as (what, measured, verdict) rows, from one run's records."""
    rows = []

    def add(what, value, ok, fmt="{:.2f}"):
        if value is None:
            rows.append((what, "not measured", "—"))
        else:
            rows.append((what, fmt.format(value), "met" if ok(value) else "NOT met"))

    def primal(n, key):
        r = _find(
            results, layer="primal", impl="primal_np", N=n, B=1, dtype="float32", group="scaling"
        )
        return None if r is None else r[key]

    t4, t64 = primal(4096, "fwd_bwd_s"), primal(65536, "fwd_bwd_s")
    m4, m64 = primal(4096, "peak_bytes"), primal(65536, "peak_bytes")
    add(
        "primal time linear: [t(65536)/t(4096)]/16 ≤ 1.25",
        t64 / t4 / 16 if t4 and t64 else None,
        lambda v: v <= 1.25,
    )
    add(
        "primal peak linear: [m(65536)/m(4096)]/16 ≤ 1.25",
        m64 / m4 / 16 if m4 and m64 else None,
        lambda v: v <= 1.25,
    )
    cmp = [r for r in results if r.get("group") == "compare" and r.get("fwd_bwd_s") is not None]
    for dtype in ("float32", "float64"):
        for layer, bound in (("primal", 1.0), ("canonical", 1.5)):
            a = next(
                (
                    r
                    for r in cmp
                    if (r["layer"], r["impl"], r["dtype"]) == (layer, "primal_np", dtype)
                ),
                None,
            )
            b = next(
                (r for r in cmp if (r["layer"], r["impl"], r["dtype"]) == (layer, "torch", dtype)),
                None,
            )
            shape = f" B={a['B']}, N={a['N']}" if a else ""
            add(
                f"{layer} {dtype}{shape}: primal_np / torch time ≤ {bound}",
                a["fwd_bwd_s"] / b["fwd_bwd_s"] if a and b else None,
                lambda v, bound=bound: v <= bound,
            )
            if layer == "primal" and dtype == "float32" and a is not None:
                add(
                    f"primal float32{shape}: fraction of np.matmul GFLOP/s ≥ 0.5",
                    a.get("matmul_fraction"),
                    lambda v: v >= 0.5,
                )
    for dtype in ("float32", "float64"):
        big = _find(results, layer="primal", impl="primal_np", N=LARGE_N, dtype=dtype)
        add(
            f"primal N={LARGE_N} {dtype}: peak memory < 24 GiB (GiB)",
            None if big is None else big["peak_bytes"] / 2**30,
            lambda v: v < 24,
        )
    return rows


def format_table(results: list[dict]) -> str:
    head = f"{'layer':<10}{'impl':<10}{'dtype':<8}{'B':>3}{'N':>8}{'fwd+bwd s':>11}{'fwd s':>9}{'bwd s':>9}{'peak MiB':>10}{'GFLOP/s':>9}{'÷matmul':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.get("fwd_bwd_s") is None:
            lines.append(
                f"{r['layer']:<10}{r['impl']:<10}{r['dtype']:<8}{r['B']:>3}{r['N']:>8}  skipped: {r.get('skipped')}"
            )
            continue
        lines.append(
            f"{r['layer']:<10}{r['impl']:<10}{r['dtype']:<8}{r['B']:>3}{r['N']:>8}"
            f"{r['fwd_bwd_s']:>11.4f}{r['fwd_s']:>9.4f}{r['bwd_s']:>9.4f}"
            f"{r['peak_bytes'] / 2**20:>10.1f}{r['gflops']:>9.1f}{r.get('matmul_fraction', math.nan):>8.2f}"
        )
    return "\n".join(lines)
