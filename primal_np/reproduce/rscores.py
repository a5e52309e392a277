"""Claim 3: the r-scores matter (the paper's ablation without them)."""

from __future__ import annotations

from .accuracy import LABELS, by_cell, diverged_note, diverged_rows, mean_gain_over_tasks, row_id
from .common import t_interval
from .runner import RowSpec
from .setups import TASKS, base_config
from .verdicts import direction

NAME, NUMBER = "rscores", 3
TITLE = "The r-scores matter"
PAPER = {
    "source": "the paper's ablation without r-scores (LRA average test accuracy %)",
    "quote": "without the r-scores the LRA average drops from 57.5 to 45.6 for Primal. and "
    "from 60.4 to 59.4 for Primal.+Trans.",
    "values": {"primalformer": [57.5, 45.6], "primal+trans": [60.4, 59.4]},
}
MODELS = ("primalformer", "primal+trans")
PAPER_DROP = {"primalformer": 0.119, "primal+trans": 0.010}  # accuracy fractions


def specs(seeds: list[int], quick: bool) -> list[RowSpec]:
    out = []
    for task in TASKS:
        for m in MODELS:
            for s in seeds:  # "with" rows are claim 1's rows (the same config: shared)
                out.append(
                    RowSpec(row_id(NAME, task, m, s), "train", base_config(task, m, s, quick))
                )
                out.append(
                    RowSpec(
                        row_id(NAME, task, m + "-no-r", s),
                        "train",
                        base_config(task, m, s, quick, rscores=False),
                    )
                )
    return out


def setup() -> dict:
    return {
        "models": list(MODELS),
        "tasks": TASKS,
        "ablation": "rscores=False: each head outputs E W_cᵀ + b_c (R reaches only the KSVD loss)",
        "comparison": "with − without r-scores, test accuracy averaged over the tasks, paired by seed",
        "criterion": "verdicts.direction with the paper's drop (11.9 / 1.0 points)",
        "overall": "the verdict for PrimalFormer (the paper's large effect); Primal.+Trans. "
        "reported with its own verdict",
    }


def analyse(rows: list[dict]) -> dict:
    acc = by_cell(rows)
    summary: dict = {"accuracy": {}, "drop": {}}
    verdicts: dict[str, str] = {}
    reasons = []
    for m in MODELS:
        mean_over_tasks, per_task = mean_gain_over_tasks(acc, m, m + "-no-r", TASKS)
        iv = t_interval(mean_over_tasks)
        v, why = direction(iv, PAPER_DROP[m])
        verdicts[m] = v
        summary["drop"][m] = {
            "mean_over_tasks": {**iv.as_dict(), "verdict": v, "reason": why},
            **{t: t_interval(per_task[t]).as_dict() for t in TASKS},
        }
        for variant in (m, m + "-no-r"):
            summary["accuracy"][variant] = {
                t: {
                    **t_interval(list(acc[(t, variant)].values())).as_dict(),
                    "values": acc[(t, variant)],
                }
                for t in TASKS
            }
        reasons.append(f"{LABELS[m]}, with − without r-scores: {why} ({v})")
    summary["diverged"] = diverged_rows(rows)
    reason = "; ".join(reasons) + diverged_note(rows)
    return {"summary": summary, "verdict": verdicts["primalformer"], "reason": reason}
