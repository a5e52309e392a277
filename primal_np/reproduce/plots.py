"""Figures of the claim records (matplotlib, optional: without it no PNG is written).

``draw(record)`` returns a ``matplotlib.figure.Figure`` (no pyplot, no global backend:
safe in scripts and notebooks); ``plot_record(record, path)`` saves it as PNG. Every
figure reads only the record, so the notebook draws the committed results without
re-running anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw", "plot_record"]

COLORS = {"primalformer": "C0", "primal+trans": "C2", "transformer": "C3"}
NAMES = {
    "primalformer": "PrimalFormer",
    "primal+trans": "Primal.+Trans.",
    "transformer": "Transformer",
}


def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _err(iv: dict, scale: float = 100.0) -> tuple[float, list[list[float]]]:
    m = iv["mean"] * scale
    if iv.get("lo") is None:
        return m, [[0.0], [0.0]]
    return m, [[m - iv["lo"] * scale], [iv["hi"] * scale - m]]


def _bars(ax, groups: dict[str, dict[str, dict]], colors: dict, labels: dict, chance=None) -> None:
    """groups: x label → {series: Interval dict with 'values'}; bars with 95 % intervals and
    every seed as a dot."""
    series = list(next(iter(groups.values())))
    width = 0.8 / len(series)
    for j, sname in enumerate(series):
        for i, (_, cells) in enumerate(groups.items()):
            iv = cells[sname]
            x = i + (j - (len(series) - 1) / 2) * width
            m, err = _err(iv)
            ax.bar(x, m, width * 0.9, color=colors.get(sname, f"C{j}"), alpha=0.75,
                   label=labels.get(sname, sname) if i == 0 else None)  # fmt: skip
            ax.errorbar(x, m, yerr=err, color="k", capsize=3, lw=1)
            vals = [v * 100 for v in iv.get("values", {}).values()]
            ax.plot([x] * len(vals), vals, "k.", ms=3, alpha=0.6)
    ax.set_xticks(range(len(groups)), list(groups))
    if chance:
        for i, c in enumerate(chance):
            ax.hlines(c * 100, i - 0.45, i + 0.45, colors="k", linestyles=":", lw=1,
                      label="majority class" if i == 0 else None)  # fmt: skip
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def _accuracy(rec: dict):
    s = rec["summary"]
    fig, (ax,) = _figure(6.5, 3.8)
    _bars(ax, s["accuracy"], COLORS, NAMES, chance=list(s["chance"].values()))
    ax.set_title(
        "Claim 1: test accuracy, mean and 95 % interval over seeds (dots: seeds)", fontsize=9
    )
    return fig


def _rscores(rec: dict):
    s = rec["summary"]
    fig, axes = _figure(9, 3.6, ncols=2, sharey=True)
    for ax, m in zip(axes, ("primalformer", "primal+trans"), strict=True):
        groups = {t: {"with r-scores": s["accuracy"][m][t], "without": s["accuracy"][m + "-no-r"][t]}
                  for t in s["accuracy"][m]}  # fmt: skip
        _bars(ax, groups, {"with r-scores": COLORS[m], "without": "0.6"}, {})
        ax.set_title(f"{NAMES[m]}", fontsize=9)
    fig.suptitle("Claim 3: with and without the r-scores (95 % intervals over seeds)", fontsize=9)
    return fig


def _ksvd(rec: dict):
    s = rec["summary"]
    tasks = list(s["accuracy"]["base"])
    groups = {t: {v: s["accuracy"][v][t] for v in s["accuracy"]} for t in tasks}
    fig, (ax,) = _figure(6.5, 3.8)
    labels = {
        "base": "η = 0.1, data-dependent",
        "eta0": "η = 0",
        "data-independent": "data-independent W",
    }
    _bars(ax, groups, {"base": "C0", "eta0": "C1", "data-independent": "C4"}, labels)
    ax.set_title("Claim 4: PrimalFormer variants (95 % intervals over seeds)", fontsize=9)
    return fig


def _efficiency(rec: dict):
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    s = rec["summary"]
    fig, axes = _figure(13, 3.9, ncols=3)
    for m, per_n in s["time"].items():
        ns = sorted(int(n) for n in per_n)
        axes[0].loglog(ns, [per_n[str(n)]["mean"] for n in ns], "o-", color=COLORS[m],
                       label=f"{NAMES[m]}, wall clock")  # fmt: skip
        cpu = s["cpu_time"][m]
        axes[0].loglog(ns, [cpu[str(n)]["mean"] for n in ns], ".--", color=COLORS[m], lw=0.8,
                       label=f"{NAMES[m]}, CPU time")  # fmt: skip
        mem = s["memory_bytes"][m]
        axes[1].loglog(ns, [mem[str(n)] / 2**20 for n in ns], "o-", color=COLORS[m], label=NAMES[m])
    for m in ("primalformer", "primal+trans"):
        ratios = s["speed_ratio"].get(m, {})
        ns = sorted(int(n) for n in ratios)
        if not ns:
            continue
        axes[2].semilogx(ns, [ratios[str(n)]["mean"] for n in ns], "o-", color=COLORS[m],
                         label=f"{NAMES[m]}: time")  # fmt: skip
        mr = s["memory_ratio"][m]
        axes[2].semilogx(
            ns, [mr[str(n)] for n in ns], "s--", color=COLORS[m], label=f"{NAMES[m]}: memory"
        )
        paper = rec["paper"]["values"][m]
        axes[2].axhline(paper["speed"], color=COLORS[m], lw=0.8, ls=":",
                        label=f"paper {NAMES[m]}: time {paper['speed']}×")  # fmt: skip
        axes[2].axhline(paper["memory"], color=COLORS[m], lw=0.8, ls="-.",
                        label=f"paper {NAMES[m]}: memory {paper['memory']}×")  # fmt: skip
    axes[2].axhline(1, color="k", lw=0.8)
    axes[2].set_yscale("log")
    axes[2].yaxis.set_major_formatter(ScalarFormatter())
    if ns:
        axes[2].set_xticks(ns, [str(n) for n in ns])
        axes[2].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set(xlabel="sequence length N", ylabel="seconds per training step",
                title="time per step (mean over rounds)")  # fmt: skip
    axes[1].set(xlabel="sequence length N", ylabel="MiB", title="peak memory of one step")
    axes[2].set(xlabel="sequence length N", ylabel="Transformer ÷ model (wall clock, memory)",
                title="ratios to the Transformer")  # fmt: skip
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle("Claim 2: one training step (forward + backward + AdamW), B = 1, float64, "
                 "one BLAS thread", fontsize=9)  # fmt: skip
    return fig


def _spectrum(rec: dict):
    s = rec["summary"]
    curves = s["curves"]  # variant → layer → matrix → {mean, std, n}
    layers = sorted({int(layer) for layer in curves["transformer"]})
    fig, axes = _figure(4.2 * (len(layers) + 1), 3.9, ncols=len(layers) + 1)
    for ax, layer in zip(axes, layers, strict=False):
        for entry in s["plotted"]:
            c = curves[entry["variant"]].get(str(layer), {}).get(entry["matrix"])
            if c is None:
                continue
            mean, std = np.asarray(c["mean"]), np.asarray(c["std"])
            k = np.arange(1, mean.size + 1)
            ax.plot(k, mean, entry["style"], color=entry["color"], label=entry["label"])
            if entry.get("band"):
                ax.fill_between(k, mean - std, mean + std, color=entry["color"], alpha=0.12)
        ax.axhline(0.9, color="k", lw=0.6, ls=":")
        ax.set(xlabel="number of singular values k", title=f"layer {layer}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cumsum(σ) / sum(σ)")
    axes[len(layers) - 1].legend(fontsize=6, loc="lower right")
    ax = axes[-1]
    for i, row in enumerate(s["investigation"]):
        m, err = _err(row["auc"], 1.0)
        color = "C3" if row["matrix"] == "canonical" else "C0"
        ax.errorbar(m, i, xerr=err, fmt="o", color=color, capsize=3)
        ax.plot(row["auc_init"], i, "|", color="0.5", ms=10)
    ax.set_yticks(
        range(len(s["investigation"])),
        [f"{r['variant']} (layer {r['layer']})" for r in s["investigation"]],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set(xlabel="AUC of c(k), last layer (grey tick: at init)",
           title="what changes the decay: η, length, depth")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.suptitle("Claim 5: normalised cumulative singular values, mean ± std over the held-out "
                 "batch × heads × seeds", fontsize=9)  # fmt: skip
    return fig


def _selection(rec: dict):
    s = rec["summary"]["validation_accuracy"]
    tasks = list(s)
    fig, axes = _figure(4.5 * len(tasks), 3.5, ncols=len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for m, per_lr in s[task].items():
            lrs = sorted(per_lr, key=float)
            ax.semilogx([float(x) for x in lrs], [per_lr[x]["mean"] * 100 for x in lrs], "o-",
                        color=COLORS[m], label=NAMES[m])  # fmt: skip
            ax.set_xticks([float(x) for x in lrs], lrs)
            ax.minorticks_off()
        ax.set(xlabel="learning rate", ylabel="validation accuracy (%)", title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Selection on validation data (mean over the selection seeds)", fontsize=9)
    return fig


DRAW = {"accuracy": _accuracy, "rscores": _rscores, "ksvd": _ksvd, "efficiency": _efficiency,
        "spectrum": _spectrum, "selection": _selection}  # fmt: skip


def draw(record: dict):
    """The figure of a claim record (a ``matplotlib.figure.Figure``)."""
    return DRAW[record["claim"]](record)


def plot_record(record: dict, path: Path) -> str | None:
    """Save ``draw(record)`` to ``path`` (PNG); the file name, or None without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    fig = draw(record)
    fig.savefig(path, dpi=110)
    return Path(path).name
