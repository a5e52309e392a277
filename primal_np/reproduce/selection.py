"""The validation-only choice of the learning rate of each (task, model) — run once,
before any default claim run; its record is docs/reproduction/selection.json and its
choices are ``setups.LR``.

Procedure: for every task and base model, train at each rate of ``setups.LR_GRID`` with
the default budget on the selection seeds (1000, 1001: data and initialisation disjoint
from the evaluation seeds 0…K−1), and keep the rate with the highest mean *validation*
accuracy (ties: the smaller rate). The test split of these runs has a single example
(``n_test=1``), so no test number of a selection run exists to be read. The first grid,
{1, 2, 4}·10⁻³, put the best rate at its upper edge in 5 of the 6 cells, so 8·10⁻³ was
added and the whole grid run again (still on validation data only).
"""

from __future__ import annotations

from .common import t_interval
from .runner import RowSpec
from .setups import LR_GRID, MODELS, TASKS, base_config

NAME, NUMBER = "selection", 0
TITLE = "Learning rates chosen on validation data"
PAPER = {"source": "none (a set-up choice, not a claim)", "quote": "—"}
SEEDS = (1000, 1001)


def specs(seeds: list[int], quick: bool) -> list[RowSpec]:
    """The grid; ``seeds`` is ignored (the selection seeds are fixed)."""
    return [
        RowSpec(
            f"{NAME}/{task}/{model}/lr{lr:g}/seed{s}",
            "train",
            base_config(task, model, s, quick, lr=lr, n_test=1),
        )
        for task in TASKS
        for model in MODELS
        for lr in LR_GRID
        for s in SEEDS
    ]


def setup() -> dict:
    return {"grid": list(LR_GRID), "seeds": list(SEEDS), "criterion": "mean validation accuracy",
            "tasks": TASKS, "models": list(MODELS)}  # fmt: skip


def analyse(rows: list[dict]) -> dict:
    val: dict = {}
    for r in rows:
        _, task, model, lr, _seed = r["id"].split("/")
        val.setdefault(task, {}).setdefault(model, {}).setdefault(lr[2:], []).append(
            r["result"]["val_accuracy"]
        )
    summary: dict = {"validation_accuracy": {}, "chosen": {}}
    for task, models in val.items():
        summary["validation_accuracy"][task] = {}
        for model, per_lr in models.items():
            ivs = {lr: {**t_interval(v).as_dict(), "values": v} for lr, v in per_lr.items()}
            summary["validation_accuracy"][task][model] = ivs
            best = max(sorted(per_lr, key=float), key=lambda lr: ivs[lr]["mean"])
            summary["chosen"].setdefault(task, {})[model] = float(best)
    reason = "; ".join(
        f"{t}: " + ", ".join(f"{m} {lr:g}" for m, lr in ms.items())
        for t, ms in summary["chosen"].items()
    )
    return {"summary": summary, "verdict": "n/a", "reason": f"chosen learning rates — {reason}"}
