"""Claim 1: accuracy parity of PrimalFormer, Primal.+Trans. and the Transformer (Table 2)."""

from __future__ import annotations

from .common import paired_differences, t_interval
from .runner import RowSpec
from .setups import MODELS, TASKS, base_config
from .verdicts import PARITY_MARGIN, combine, parity

NAME, NUMBER = "accuracy", 1
TITLE = "Accuracy parity"
PAPER = {
    "source": "Table 2 (LRA, test accuracy %)",
    "quote": "ListOps: Transformer 37.1, Primal. 37.3, Primal.+Trans. 37.3; LRA average: "
    "Transformer 58.8, Primal. 57.5, Primal.+Trans. 60.4",
    "values": {
        "ListOps": {"transformer": 37.1, "primalformer": 37.3, "primal+trans": 37.3},
        "LRA average": {"transformer": 58.8, "primalformer": 57.5, "primal+trans": 60.4},
    },
}
LABELS = {
    "primalformer": "PrimalFormer",
    "primal+trans": "Primal.+Trans.",
    "transformer": "Transformer",
}


def row_id(claim: str, task: str, variant: str, seed: int) -> str:
    return f"{claim}/{task}/{variant}/seed{seed}"


def by_cell(rows: list[dict], field: str = "accuracy") -> dict[tuple[str, str], dict[int, float]]:
    """{(task, variant): {seed: result[field]}} from rows named ``claim/task/variant/seedN``."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if "diverged" in r["result"]:
            continue  # its seed drops out of the paired comparisons (diverged_rows)
        _, task, variant, seed = r["id"].split("/")
        out.setdefault((task, variant), {})[int(seed[4:])] = r["result"][field]
    return out


def diverged_rows(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows if "diverged" in r["result"]]


def mean_gain_over_tasks(acc: dict, a: str, b: str, tasks) -> tuple[list[float], dict]:
    """Per seed (those with both variants on every task): the mean over ``tasks`` of
    acc[a] − acc[b]; and the per-task paired differences."""
    per_task = {t: paired_differences(acc[(t, a)], acc[(t, b)]) for t in tasks}
    seeds = set.intersection(*(set(acc[(t, a)]) & set(acc[(t, b)]) for t in tasks))
    means = [
        sum(acc[(t, a)][s] - acc[(t, b)][s] for t in tasks) / len(tasks) for s in sorted(seeds)
    ]
    return means, per_task


def diverged_note(rows: list[dict]) -> str:
    bad = diverged_rows(rows)
    return f"; {len(bad)} run(s) diverged and were left out: {', '.join(bad)}" if bad else ""


def specs(seeds: list[int], quick: bool) -> list[RowSpec]:
    return [
        RowSpec(row_id(NAME, task, model, s), "train", base_config(task, model, s, quick))
        for task in TASKS
        for model in MODELS
        for s in seeds
    ]


def setup() -> dict:
    return {
        "models": list(MODELS),
        "tasks": TASKS,
        "comparison": "per task, primal model − Transformer test accuracy, paired by seed",
        "criterion": f"non-inferiority margin {PARITY_MARGIN * 100:.0f} points (verdicts.parity)",
    }


def analyse(rows: list[dict]) -> dict:
    acc = by_cell(rows)
    chance = by_cell(rows, "chance_accuracy")
    summary: dict = {"accuracy": {}, "chance": {}, "difference_vs_transformer": {}}
    verdicts, reasons = [], []
    for task in TASKS:
        summary["chance"][task] = sum(chance[(task, "transformer")].values()) / len(
            chance[(task, "transformer")]
        )
        summary["accuracy"][task] = {
            m: {**t_interval(list(acc[(task, m)].values())).as_dict(), "values": acc[(task, m)]}
            for m in MODELS
        }
        summary["difference_vs_transformer"][task] = {}
        for m in MODELS[:2]:
            iv = t_interval(paired_differences(acc[(task, m)], acc[(task, "transformer")]))
            v, why = parity(iv)
            summary["difference_vs_transformer"][task][m] = {
                **iv.as_dict(),
                "verdict": v,
                "reason": why,
            }
            verdicts.append(v)
            reasons.append(f"{task}, {LABELS[m]} − Transformer: {why} ({v})")
    summary["diverged"] = diverged_rows(rows)
    reason = "; ".join(reasons) + diverged_note(rows)
    return {"summary": summary, "verdict": combine(verdicts), "reason": reason}
