"""The pieces of one training step, each checked for non-finite values: the batch order,
the learning-rate schedule, the forward/backward pass, the update and the evaluations.

Everything runs under ``np.errstate(over="raise", invalid="raise", divide="raise")``; a
non-finite value or an overflow becomes ``NonFinite``, which says where it appeared (the
model part named by ``encoder.raised_in``, ``logits``, ``the gradient of <name>``,
``parameter <name> after the update``, …) and whether the training loss of the state the
step started from was finite (then that state is the last good one).
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.metrics import CalibrationMetrics, ExampleScores, example_scores, summarize_scores
from ..optim import adam_step, clip_grad_norm, warmup_cosine, warmup_linear
from ..tasks import TaskData
from .config import ModelConfig
from .encoder import LossAndGrads, loss_and_grads, raised_in
from .predict import DEFAULT_MC_SAMPLES, predict_log_probs
from .train_config import TrainConfig

__all__ = ["evaluate", "chance_accuracy", "batch_indices"]

_MC_STREAM = 3  # the evaluation noise of a seed (1: batch order, 2: training noise)


def evaluate(
    params,
    data: TaskData,
    cfg: ModelConfig,
    batch_size: int = 256,
    *,
    mc_samples: int = DEFAULT_MC_SAMPLES,
    mc_average: str = "probs",
    seed: int = 0,
) -> CalibrationMetrics:
    """``CalibrationMetrics(accuracy, nll, ece, brier)`` of the model's predictive
    distribution on ``data`` (``primal_np.nn.metrics``; ECE with 15 bins): per example for
    a classifier, per scored position for a decoder. For the NLL of a deterministic
    model, the mean cross-entropy.

    KEP-SVGP layers: ``predict_log_probs`` with ``mc_samples`` and ``mc_average``, the
    noise drawn in order from ``default_rng([seed, 3])``, so an evaluation is a function
    of (params, data, seed)."""
    rng = np.random.default_rng([seed, _MC_STREAM])
    parts: list[ExampleScores] = []
    n = data.labels.shape[0]
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        lp = predict_log_probs(params, data.ids[sl], data.mask[sl], cfg,
                               mc_samples=mc_samples, average=mc_average, rng=rng)  # fmt: skip
        labels = data.labels[sl]
        scored = labels >= 0
        parts.append(example_scores(lp[scored], labels[scored]))
    return summarize_scores(ExampleScores(*(np.concatenate(a) for a in zip(*parts, strict=True))))


def chance_accuracy(data: TaskData) -> float:
    """The accuracy of always predicting the most frequent label (class or next token)."""
    labels = data.labels[data.labels >= 0]
    counts = np.bincount(labels, minlength=data.num_classes)
    return float(counts.max() / counts.sum())


def lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    sched = warmup_cosine if cfg.schedule == "cosine" else warmup_linear
    return sched(step, cfg.steps, min(cfg.warmup, cfg.steps), cfg.lr)


_BATCH_STREAM = 1  # separates the batch-order seeds from the other uses of ``seed``


class BatchStream:
    """Step t → the indices of its batch: epoch e = t // (n // batch_size) is the
    permutation of range(n) drawn from (seed, e); step t takes its (t mod …)-th slice of
    batch_size indices (an incomplete last slice is never used). Caches one epoch."""

    def __init__(self, seed: int, n: int, batch_size: int):
        self.seed, self.n, self.batch_size = seed, n, batch_size
        self.per_epoch = n // batch_size
        self.epoch, self.perm = -1, np.empty(0, np.int64)

    def __call__(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            rng = np.random.default_rng([self.seed, _BATCH_STREAM, epoch])
            self.epoch, self.perm = epoch, rng.permutation(self.n)
        return self.perm[k * self.batch_size : (k + 1) * self.batch_size]


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """The training-set indices of the batch of step ``step`` (0-based) of a run with
    ``seed``, ``n_train = n`` and ``batch_size``: a pure function of its arguments."""
    return BatchStream(seed, n, batch_size)(step)


# --------------------------------------------------------------------------- checks
class NonFinite(Exception):
    """Internal: where a non-finite value appeared, and whether the training loss of the
    current state was finite (then that state is the last good one)."""

    def __init__(self, where: str, detail: str, loss_finite: bool):
        super().__init__(where)
        self.where, self.detail, self.loss_finite = where, detail, loss_finite


def _raising() -> np.errstate:
    return np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def checked_loss_and_grads(params, ids, mask, labels, mcfg: ModelConfig, fresh: bool,
                           noise: dict | None = None):  # fmt: skip
    """``loss_and_grads`` with every non-finite value turned into ``NonFinite``. On the
    first step of a fresh run a ValueError is a configuration error and propagates."""
    try:
        with _raising():
            res = loss_and_grads(params, ids, mask, labels, mcfg, noise=noise)
    except (ValueError, ArithmeticError) as exc:
        if fresh and not isinstance(exc, ArithmeticError):
            raise
        part = raised_in(exc) or "the forward or backward pass"
        raise NonFinite(part, _first_line(exc), part.startswith("the backward")) from exc
    where = _first_non_finite(res)
    if where is not None:
        raise NonFinite(where, "", where.startswith("the gradient"))
    return res


def _first_non_finite(res: LossAndGrads) -> str | None:
    """Where the first non-finite value of a step is, in the order of the computation."""
    if math.isfinite(res.loss) and all(np.all(np.isfinite(g)) for g in res.grads.values()):
        return None
    for i, out in enumerate(res.cache.outputs):
        if not np.all(np.isfinite(out)):
            return f"layers.{i} ({res.cache.cfg.attention[i]} attention)"
    if not np.all(np.isfinite(res.logits)):
        return "logits"
    for i, v in res.ksvd_per_layer.items():
        if not math.isfinite(v):
            return f"the KSVD loss of layers.{i}"
    for i, v in res.kl_per_layer.items():
        if not math.isfinite(v):
            return f"the KL term of layers.{i}"
    if not math.isfinite(res.task_loss):
        return "the task loss"
    if not math.isfinite(res.loss):
        return (
            "the loss (task + η·KSVD + η_kl·KL)" if res.kl_per_layer else "the loss (task + η·KSVD)"
        )
    bad = next(k for k, g in res.grads.items() if not np.all(np.isfinite(g)))
    return f"the gradient of {bad}"


def checked_update(params, grads, opt, cfg: TrainConfig, step: int) -> tuple[dict, dict]:
    """Clipping and the AdamW step; the new parameters and moments must be finite."""
    if cfg.clip:
        try:
            with _raising():
                grads, _ = clip_grad_norm(grads, cfg.clip)
        except (ValueError, ArithmeticError) as exc:
            raise NonFinite("the gradient norm", _first_line(exc), True) from exc
    with np.errstate(all="ignore"):  # overflow is looked for in the result, by name
        params, opt = adam_step(params, grads, opt, lr=lr_at(cfg, step),
                                weight_decay=cfg.weight_decay,
                                decoupled=cfg.optimizer == "adamw")  # fmt: skip
    for k, p in params.items():
        if not np.all(np.isfinite(p)):
            raise NonFinite(f"parameter {k} after the update", "the update overflowed it", True)
    for k, v in opt.items():
        if k != "step" and not np.all(np.isfinite(v)):
            raise NonFinite(f"optimizer state {k} after the update", "it overflowed", True)
    return params, opt


def checked_evaluate(params, data: TaskData, mcfg: ModelConfig, what: str,
                     cfg: TrainConfig) -> CalibrationMetrics:  # fmt: skip
    """``evaluate`` with the run's Monte-Carlo settings; a non-finite value → ``NonFinite``."""
    try:
        with _raising():
            m = evaluate(params, data, mcfg, mc_samples=cfg.mc_samples,
                         mc_average=cfg.mc_average, seed=cfg.seed)  # fmt: skip
    except (ValueError, ArithmeticError) as exc:
        where = f"{what} ({raised_in(exc) or 'forward pass'})"
        raise NonFinite(where, _first_line(exc), True) from exc
    if not all(math.isfinite(v) for v in m):
        raise NonFinite(what, "", True)
    return m
