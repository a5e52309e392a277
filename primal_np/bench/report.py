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


def _interleaved(results, impl):
    return _find(results, layer="primal", impl=impl, group="interleaved", dtype="float32")


def summarize(results: list[dict]) -> list[tuple[str, str, str]]:
    """The targets (issues 9 and 12) as (what, measured, verdict) rows, from one run's
    records. Ratios against torch and between primal_np's implementations come from the
    interleaved comparison (``ratio_to``), the others from the subprocess measurements."""
    rows = []

    def add(what, value, ok, fmt="{:.2f}"):
        if value is None:
            rows.append((what, "not measured", "—"))
        else:
            rows.append((what, fmt.format(value), "met" if ok(value) else "NOT met"))

    def primal(n, key):
        r = _find(results, layer="primal", impl="fast", N=n, B=1, dtype="float32", group="scaling")
        return None if r is None else r[key]

    t4, t64 = primal(4096, "fwd_bwd_s"), primal(65536, "fwd_bwd_s")
    m4, m64 = primal(4096, "peak_bytes"), primal(65536, "peak_bytes")
    add(
        "fast time linear: [t(65536)/t(4096)]/16 ≤ 1.25",
        t64 / t4 / 16 if t4 and t64 else None,
        lambda v: v <= 1.25,
    )
    add(
        "fast peak linear: [m(65536)/m(4096)]/16 ≤ 1.25",
        m64 / m4 / 16 if m4 and m64 else None,
        lambda v: v <= 1.25,
    )
    fast, ref = _interleaved(results, "fast"), _interleaved(results, "reference")
    shape = f" B={fast['B']}, N={fast['N']}" if fast else ""
    ratios = fast.get("ratio_to", {}) if fast else {}
    for other, bound in (("torch", 0.65), ("torch_compile", 0.6)):
        add(
            f"interleaved{shape}: fast / {other} ≤ {bound}",
            ratios.get(other),
            lambda v, b=bound: v <= b,
        )
    add(
        f"interleaved{shape}: fast, fraction of np.matmul GFLOP/s ≥ 0.8",
        fast.get("matmul_fraction") if fast else None,
        lambda v: v >= 0.8,
    )
    add(
        f"interleaved{shape}: reference / fast ≤ 3",
        ref.get("ratio_to", {}).get("fast") if ref else None,
        lambda v: v <= 3,
    )
    cmp = [r for r in results if r.get("group") == "compare" and r.get("fwd_bwd_s") is not None]

    def pick(layer, impl, dtype):
        return next(
            (r for r in cmp if (r["layer"], r["impl"], r["dtype"]) == (layer, impl, dtype)), None
        )

    for layer, impl, dtype, bound in (
        ("primal", "fast", "float64", 1.0),
        ("canonical", "primal_np", "float32", 1.5),
        ("canonical", "primal_np", "float64", 1.5),
    ):
        a, b = pick(layer, impl, dtype), pick(layer, "torch", dtype)
        shape = f" B={a['B']}, N={a['N']}" if a else ""
        add(
            f"{layer} {dtype}{shape}: {impl} / torch time ≤ {bound}",
            a["fwd_bwd_s"] / b["fwd_bwd_s"] if a and b else None,
            lambda v, bound=bound: v <= bound,
        )
    for dtype in ("float32", "float64"):
        big = _find(results, layer="primal", impl="fast", N=LARGE_N, dtype=dtype)
        add(
            f"fast N={LARGE_N} {dtype}: peak memory < 24 GiB (GiB)",
            None if big is None else big["peak_bytes"] / 2**30,
            lambda v: v < 24,
        )
    return rows


def format_interleaved(results: list[dict]) -> str:
    """The interleaved comparison: medians, GFLOP/s, and the median per-round ratios."""
    recs = [r for r in results if r.get("group") == "interleaved"]
    if not recs:
        return "(no interleaved comparison)"
    names = [r["impl"] for r in recs if r.get("fwd_bwd_s") is not None]
    r0 = recs[0]
    loads = [v for r in recs for v in r.get("loadavg_rounds", []) if v is not None]
    mm = next((r["matmul_gflops"] for r in recs if r.get("matmul_gflops")), math.nan)
    lines = [
        f"interleaved: {r0['layer']} layer, B={r0['B']} N={r0['N']} D={r0['D']} H={r0['H']} "
        f"s={r0['s']} rank_multi={r0['rank_multi']} {r0['dtype']}, {r0['threads']} thread(s), "
        f"{r0.get('repeats', '?')} rounds; np.matmul {mm:.1f} GFLOP/s (median of rounds); "
        + (f"loadavg {min(loads):.2f}–{max(loads):.2f}" if loads else "loadavg unknown"),
    ]
    head = f"{'impl':<15}{'fwd+bwd s':>11}{'fwd s':>9}{'bwd s':>9}{'GFLOP/s':>9}{'÷matmul':>8}"
    head += "".join(f"{'÷' + n:>15}" for n in names)
    lines += [head, "-" * len(head)]
    for r in recs:
        if r.get("fwd_bwd_s") is None:
            lines.append(f"{r['impl']:<15}  skipped: {r.get('skipped')}")
            continue
        row = (
            f"{r['impl']:<15}{r['fwd_bwd_s']:>11.4f}{r['fwd_s']:>9.4f}{r['bwd_s']:>9.4f}"
            f"{r['gflops']:>9.1f}{r['matmul_fraction']:>8.2f}"
        )
        row += "".join(f"{r['ratio_to'].get(n, 1.0):>15.3f}" for n in names)
        lines.append(row)
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    head = f"{'group':<9}{'layer':<10}{'impl':<15}{'dtype':<8}{'B':>3}{'N':>8}{'fwd+bwd s':>11}{'fwd s':>9}{'bwd s':>9}{'peak MiB':>10}{'GFLOP/s':>9}{'÷matmul':>8}{'load':>6}"
    lines = [head, "-" * len(head)]
    for r in results:
        lead = (
            f"{r['group']:<9}{r['layer']:<10}{r['impl']:<15}{r['dtype']:<8}{r['B']:>3}{r['N']:>8}"
        )
        if r.get("fwd_bwd_s") is None:
            lines.append(f"{lead}  skipped: {r.get('skipped')}")
            continue
        peak = r.get("peak_bytes")
        lines.append(
            f"{lead}{r['fwd_bwd_s']:>11.4f}{r['fwd_s']:>9.4f}{r['bwd_s']:>9.4f}"
            f"{peak / 2**20 if peak is not None else math.nan:>10.1f}{r['gflops']:>9.1f}"
            f"{r.get('matmul_fraction', math.nan):>8.2f}{r.get('loadavg_1min') or math.nan:>6.1f}"
        )
    return "\n".join(lines)
