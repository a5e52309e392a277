"""Plot ``python -m primal_np bench --json`` output: time and peak memory against N.

    python -m primal_np bench --json > benchmarks/results.jsonl
    python benchmarks/plot_bench.py benchmarks/results.jsonl -o docs/performance.png

Reads the JSON lines (skipped measurements, with ``fwd_bwd_s`` null, are left out), keeps
the "scaling" group (B = 1, float32), and draws forward + backward time and peak memory
against N on log-log axes, one line per (layer, implementation), with an O(N) guide.
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
    ("primal", "primal_np"): dict(color="C0", marker="o", ls="-"),
    ("primal", "torch"): dict(color="C0", marker="s", ls="--"),
    ("canonical", "primal_np"): dict(color="C3", marker="o", ls="-"),
    ("canonical", "torch"): dict(color="C3", marker="s", ls="--"),
}


def plot(records: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, scale, label in (
        (axes[0], "fwd_bwd_s", 1.0, "forward + backward time (s, median)"),
        (axes[1], "peak_bytes", 2**-20, "peak memory above the inputs (MiB)"),
    ):
        for (layer, impl), pts in series(records, key).items():
            ns = [n for n, _ in pts]
            ys = [v * scale for _, v in pts]
            ax.plot(ns, ys, label=f"{layer} · {impl}", **STYLE.get((layer, impl), {}))
        prim = series(records, key).get(("primal", "primal_np"))
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
