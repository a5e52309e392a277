"""Plot ``python -m primal_np bench --json`` output: time and peak memory against N.

    python -m primal_np bench --json > benchmarks/results.jsonl
    python benchmarks/plot_bench.py benchmarks/results.jsonl -o docs/performance.png

Reads the JSON lines (skipped measurements, with ``fwd_bwd_s`` null, are left out). Left
and middle: the "scaling" group (B = 1, float32), forward + backward time and peak memory
against N on log-log axes, one line per (layer, implementation), with an O(N) guide.
Right, when the run has one: the interleaved comparison (one process, run by run) as bars
of median forward + backward time, with the time np.matmul would need for the layer's
FLOPs at its GFLOP/s of the same run (the physical floor).
Needs matplotlib (``pip install matplotlib``); primal_np itself never imports it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def series(records: list[dict], key: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    out: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        if r.get("group", "scaling") != "scaling" or r.get(key) is None:
            continue
        out[(r["layer"], r["impl"])].append((r["N"], r[key]))
    return {k: sorted(v) for k, v in out.items()}


STYLE = {
    ("primal", "fast"): dict(color="C0", marker="o", ls="-"),
    ("primal", "reference"): dict(color="C2", marker="^", ls="-"),
    ("primal", "torch"): dict(color="C0", marker="s", ls="--"),
    ("canonical", "primal_np"): dict(color="C3", marker="o", ls="-"),
    ("canonical", "torch"): dict(color="C3", marker="s", ls="--"),
}
BAR_COLORS = {"reference": "C2", "fast": "C0", "torch": "C7", "torch_compile": "C8"}


def interleaved(records: list[dict]) -> list[dict]:
    """The measured records of the interleaved comparison, in run order."""
    return [
        r for r in records if r.get("group") == "interleaved" and r.get("fwd_bwd_s") is not None
    ]


def plot_interleaved(ax, recs: list[dict]) -> None:
    names = [r["impl"] for r in recs]
    times = [r["fwd_bwd_s"] * 1e3 for r in recs]
    ax.bar(names, times, color=[BAR_COLORS.get(n, "C9") for n in names])
    for i, (t, r) in enumerate(zip(times, recs, strict=True)):
        ax.text(
            i, t, f"{t:.0f} ms\n{r['matmul_fraction']:.0%}", ha="center", va="bottom", fontsize=8
        )
    floor = recs[0]["gflop"] / recs[0]["matmul_gflops"] * 1e3
    ax.axhline(floor, color="grey", ls=":", lw=1, label=f"np.matmul floor {floor:.0f} ms")
    loads = [v for r in recs for v in r.get("loadavg_rounds", []) if v is not None]
    r0 = recs[0]
    ax.set_title(
        f"interleaved, B={r0['B']} N={r0['N']} {r0['dtype']}, {r0.get('repeats')} rounds"
        + (f", load {min(loads):.1f}–{max(loads):.1f}" if loads else ""),
        fontsize=9,
    )
    ax.set_ylabel("forward + backward (ms, median); % of np.matmul")
    ax.set_ylim(0, max(times) * 1.25)
    ax.legend(fontsize=8, loc="upper right")
    ax.tick_params(axis="x", labelsize=8)


def plot(records: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inter = interleaved(records)
    fig, axes = plt.subplots(1, 3 if inter else 2, figsize=(16 if inter else 11, 4.4))
    for ax, key, scale, label in (
        (axes[0], "fwd_bwd_s", 1.0, "forward + backward time (s, median)"),
        (axes[1], "peak_bytes", 2**-20, "peak memory above the inputs (MiB)"),
    ):
        for (layer, impl), pts in series(records, key).items():
            ns = [n for n, _ in pts]
            ys = [v * scale for _, v in pts]
            ax.plot(ns, ys, label=f"{layer} · {impl}", **STYLE.get((layer, impl), {}))
        prim = series(records, key).get(("primal", "fast"))
        if prim:
            n0, v0 = prim[0]
            ns = [n for n, _ in prim]
            ax.plot(
                ns, [v0 * scale * n / n0 for n in ns], color="grey", lw=0.8, ls=":", label="∝ N"
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", lw=0.3)
    axes[0].legend(fontsize=8)
    if inter:
        plot_interleaved(axes[2], inter)
    r0 = next((r for r in records if r.get("group") == "scaling"), {})
    fig.suptitle(
        f"B={r0.get('B', 1)}, D={r0.get('D')}, H={r0.get('H')}, s={r0.get('s')}, "
        f"rank_multi={r0.get('rank_multi')}, {r0.get('dtype')}, {r0.get('threads')} thread(s)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="JSON lines from `python -m primal_np bench --json`")
    parser.add_argument("-o", "--output", default="benchmark.png", help="PNG to write")
    args = parser.parse_args(argv)
    plot(load(args.results), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
