"""The miniature set-ups shared by the training claims (1, 3, 4, 5), and the learning
rates chosen on validation data (``selection.py``; record ``docs/reproduction/selection.json``).

Architecture: the authors' LRA ListOps model shrunk only where CPU time forces it — a
2-layer pre-LN encoder, D = 64, 2 heads (p = 32), MLP width 128, learned positions, mean
pooling; primal layers with s = 8, rank_multi = 4 (n = 32 sampled rows), the cosine
feature map, data-dependent weights and the LRA KSVD loss (trace on the parameters) with
η = 0.1 (the library's default). Training: AdamW (weight decay 0.01), warm-up then cosine
decay, gradient clipping at 1, batch 32, the same number of steps for every model.

Tasks (generated, ``primal_np.tasks``): ListOps with nesting depth ≤ 2 and ≤ 32 tokens
(10 classes), and fused associative recall over 4–8 key/value pairs (≤ 11 tokens,
10 classes; the answer can lie anywhere in the sequence).
"""

from __future__ import annotations

from .common import full_train_config

__all__ = ["TASKS", "MODELS", "ARCH", "TRAIN", "QUICK", "LR", "LR_GRID", "ETA", "base_config"]

TASKS = {
    "listops": {"max_len": 32, "max_depth": 2},
    "retrieval": {"n_pairs": 8},
}
MODELS = ("primalformer", "primal+trans", "transformer")
ETA = 0.1
ARCH = dict(
    dim=64, depth=2, num_heads=2, mlp_hidden=128, low_rank=8, rank_multi=4,
    pooling="mean", positions="learned", eta=ETA,
)  # fmt: skip
TRAIN = dict(
    steps=800, batch_size=32, warmup=80, weight_decay=0.01, clip=1.0, schedule="cosine",
    n_train=10000, n_val=500, n_test=2000, eval_every=100,
)  # fmt: skip
QUICK = dict(steps=40, warmup=5, n_train=640, n_val=100, n_test=200, eval_every=20)

# Chosen on validation accuracy only (selection.py, seeds 1000 and 1001, never the
# evaluation seeds): the best of LR_GRID per (task, model). The grid was {1, 2, 4}·10⁻³
# until the best rates sat at its upper edge; 8·10⁻³ was added (selection.py). Ablations (no r-scores, η = 0,
# data-independent weights) keep their base model's rate.
LR_GRID = (1e-3, 2e-3, 4e-3, 8e-3)
LR = {
    ("listops", "primalformer"): 8e-3,  # the grid's upper edge (docs/reproduction.md)
    ("listops", "primal+trans"): 4e-3,
    ("listops", "transformer"): 2e-3,
    ("retrieval", "primalformer"): 8e-3,  # the grid's upper edge
    ("retrieval", "primal+trans"): 4e-3,
    ("retrieval", "transformer"): 4e-3,
}


def base_config(task: str, model: str, seed: int, quick: bool, **overrides) -> dict:
    """The full ``TrainConfig`` (as a dict) of one run of the miniature set-up."""
    kw = {
        **ARCH,
        **TRAIN,
        **(QUICK if quick else {}),
        "task": task,
        "task_params": dict(TASKS[task]),
        "model": model,
        "lr": LR[(task, model)],
        "seed": seed,
    }
    kw.update(overrides)
    return full_train_config(**kw)
