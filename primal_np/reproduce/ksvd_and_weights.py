"""Claim 4: the KSVD loss (η > 0 against η = 0) and data-dependent against
data-independent projection weights, on PrimalFormer."""

from __future__ import annotations

from typing import Any

from .accuracy import by_cell, diverged_note, diverged_rows, mean_gain_over_tasks, row_id
from .common import t_interval
from .runner import RowSpec
from .setups import ETA, TASKS, base_config
from .verdicts import combine, direction

NAME, NUMBER = "ksvd", 4
TITLE = "The KSVD loss and data-dependent weights"
PAPER = {
    "source": "the paper's ablations of η and of the projection weights",
    "quote": "η > 0 (with the KSVD loss) is better than η = 0 on most datasets; data-dependent "
    "projection weights W_{e|X} = Fᵀ W_e are better than data-independent W_e on UEA and LRA",
}
MODEL = "primalformer"
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},  # η = ETA, data-dependent: claim 1's PrimalFormer rows
    "eta0": {"eta": 0.0},
    "data-independent": {"data_dependent": False},
}


def specs(seeds: list[int], quick: bool) -> list[RowSpec]:
    return [
        RowSpec(row_id(NAME, task, v, s), "train", base_config(task, MODEL, s, quick, **kw))
        for task in TASKS
        for v, kw in VARIANTS.items()
        for s in seeds
    ]


def setup() -> dict:
    return {
        "model": MODEL,
        "tasks": TASKS,
        "variants": {
            "base": f"η = {ETA}, data-dependent weights",
            "eta0": "η = 0",
            "data-independent": f"η = {ETA}, W_e, W_r ∈ R^(p×s) directly",
        },  # fmt: skip
        "comparison": "base − variant, test accuracy averaged over the tasks, paired by seed",
        "criterion": "verdicts.direction (the paper gives no effect size here); both parts "
        "must be reproduced for the claim",
    }


def analyse(rows: list[dict]) -> dict:
    acc = by_cell(rows)
    J = by_cell(rows, "J_final")
    summary: dict = {"accuracy": {}, "gain": {}, "J_final": {}}
    verdicts, reasons = [], []
    for v in VARIANTS:
        summary["accuracy"][v] = {
            t: {**t_interval(list(acc[(t, v)].values())).as_dict(), "values": acc[(t, v)]}
            for t in TASKS
        }
        summary["J_final"][v] = {t: J[(t, v)] for t in TASKS}
    for v, what in (
        ("eta0", "η > 0 − η = 0"),
        ("data-independent", "data-dependent − independent"),
    ):
        means, per_task = mean_gain_over_tasks(acc, "base", v, TASKS)
        iv = t_interval(means)
        verdict, why = direction(iv)
        verdicts.append(verdict)
        summary["gain"][v] = {
            "mean_over_tasks": {**iv.as_dict(), "verdict": verdict, "reason": why},
            **{t: t_interval(per_task[t]).as_dict() for t in TASKS},
        }
        reasons.append(f"{what}: {why} ({verdict})")
    summary["diverged"] = diverged_rows(rows)
    reason = "; ".join(reasons) + diverged_note(rows)
    return {"summary": summary, "verdict": combine(verdicts), "reason": reason}
