"""Training loop for the small encoder classifiers: AdamW, schedules, clipping, checkpoints.

Data: ``primal_np.tasks.make_task`` with three disjoint seeds derived from ``seed``
(train 3·seed, validation 3·seed + 1, test 3·seed + 2). Progress reports the
validation accuracy; the held-out ``accuracy`` of the result is measured once, at the
end, on the test set (defaults were tuned on validation only).

Checkpoints: ``DIR/checkpoint.npz`` (``param/<name>``, ``opt/<key>``; read with
``allow_pickle=False``) and ``DIR/checkpoint.json`` (model and training configs, step,
metrics). A non-finite loss stops training with the step number and the first layer
whose output went non-finite, and the last good checkpoint is kept (written from the
last finite parameters if checkpointing is on).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..nn.losses import accuracy, token_accuracy
from ..optim import adam_init, adam_step, clip_grad_norm, warmup_cosine, warmup_linear
from ..tasks import TASKS, TaskData, make_task
from .config import MODELS, ModelConfig
from .encoder import init_model_params, loss_and_grads, model_forward, task_loss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "train",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "MODEL_FIELDS",
]

# TrainConfig fields passed through to ModelConfig
MODEL_FIELDS = (
    "dim", "depth", "num_heads", "mlp_hidden", "low_rank", "rank_multi", "data_dependent",
    "positions", "pooling", "eta", "ksvd_convention", "trace_no_x", "feature_map", "rscores",
)  # fmt: skip


_MODEL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ModelConfig)}


@dataclass
class TrainConfig:
    """Everything a run needs; the defaults are the CLI's defaults."""

    model: str = "primalformer"
    task: str = "listops"
    task_params: dict = field(default_factory=dict)
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup: int = 100
    clip: float = 1.0
    seed: int = 0
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 2000
    eval_every: int = 100
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # 0: only at the end
    # model (defaults: ModelConfig's)
    dim: int = _MODEL_DEFAULTS["dim"]
    depth: int = _MODEL_DEFAULTS["depth"]
    num_heads: int = _MODEL_DEFAULTS["num_heads"]
    mlp_hidden: int = _MODEL_DEFAULTS["mlp_hidden"]
    low_rank: int = _MODEL_DEFAULTS["low_rank"]
    rank_multi: int = _MODEL_DEFAULTS["rank_multi"]
    data_dependent: bool = _MODEL_DEFAULTS["data_dependent"]
    positions: str = _MODEL_DEFAULTS["positions"]
    pooling: str = _MODEL_DEFAULTS["pooling"]
    eta: float = _MODEL_DEFAULTS["eta"]
    ksvd_convention: str | None = None  # None: "lra" (classifier), "per_sample" (decoder)
    trace_no_x: bool = _MODEL_DEFAULTS["trace_no_x"]
    feature_map: str = _MODEL_DEFAULTS["feature_map"]
    rscores: bool = _MODEL_DEFAULTS["rscores"]

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        for name in ("steps", "batch_size", "n_train", "n_val", "n_test", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(
                f"schedule must be 'cosine', 'linear' or 'constant', got {self.schedule!r}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.clip < 0:
            raise ValueError(f"clip must be >= 0 (0 disables clipping), got {self.clip}")

    def model_config(self, data: TaskData) -> ModelConfig:
        kw = {f: getattr(self, f) for f in MODEL_FIELDS}
        causal = data.kind == "next_token"
        if kw["ksvd_convention"] is None:  # the authors' choice for the variant
            kw["ksvd_convention"] = "per_sample" if causal else "lra"
        return ModelConfig(
            vocab_size=data.vocab_size,
            num_classes=data.num_classes,
            max_len=data.ids.shape[1],
            model=self.model,
            causal=causal,
            **kw,
        )


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the step and the layer."""


@dataclass
class TrainResult:
    accuracy: float  # held-out test accuracy at the end
    chance_accuracy: float  # the majority class's share of the test set
    test_task_loss: float
    train_task_loss: float  # mean over the last eval window
    val_accuracy: float
    ksvd_loss_per_layer: dict  # "layer <i>" → L_l at the last step (primal layers)
    j_per_layer: dict  # "layer <i>" → the mean KSVD term inside the square, at each eval
    history: list  # one dict per evaluation
    steps: int
    seconds: float
    tokens_per_second: float  # (batch_size · max_len) positions per step, padding included
    model_config: dict
    train_config: dict
    params: dict = field(default_factory=dict, repr=False)  # the trained parameters

    def as_dict(self) -> dict:
        """Everything but the parameter arrays (JSON-serialisable)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    while True:
        perm = rng.permutation(n)
        for s in range(0, n - batch_size + 1, batch_size):
            yield perm[s : s + batch_size]


def evaluate(
    params, data: TaskData, cfg: ModelConfig, batch_size: int = 256
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model on ``data``: per example for a
    classifier, per scored position for a decoder."""
    correct, total_loss, total = 0.0, 0.0, 0
    n = data.labels.shape[0]
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        logits, _ = model_forward(params, data.ids[sl], data.mask[sl], cfg)
        labels = data.labels[sl]
        m = int((labels >= 0).sum()) if cfg.causal else logits.shape[0]
        acc = token_accuracy(logits, labels) if cfg.causal else accuracy(logits, labels)
        correct += acc * m
        total_loss += float(task_loss(logits, labels, cfg)[0]) * m
        total += m
    return correct / total, total_loss / total


def chance_accuracy(data: TaskData) -> float:
    """The accuracy of always predicting the most frequent label (class or next token)."""
    labels = data.labels[data.labels >= 0]
    counts = np.bincount(labels, minlength=data.num_classes)
    return float(counts.max() / counts.sum())


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    sched = warmup_cosine if cfg.schedule == "cosine" else warmup_linear
    return sched(step, cfg.steps, min(cfg.warmup, cfg.steps), cfg.lr)


def save_checkpoint(
    directory,
    params,
    opt_state,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    step: int,
    metrics: dict | None = None,
) -> None:
    """Write ``checkpoint.npz`` (arrays only) and ``checkpoint.json`` (configs, step, metrics)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    tmp = d / "checkpoint.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(d / "checkpoint.npz")
    meta = {
        "step": step,
        "model_config": model_cfg.to_dict(),
        "train_config": asdict(train_cfg),
        "metrics": metrics or {},
    }
    (d / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_checkpoint(directory) -> tuple[dict, dict, ModelConfig, TrainConfig, int]:
    """(params, optimizer state, model config, train config, step) from ``save_checkpoint``."""
    d = Path(directory)
    meta = json.loads((d / "checkpoint.json").read_text())
    with np.load(d / "checkpoint.npz", allow_pickle=False) as data:
        params = {k[6:]: data[k] for k in data.files if k.startswith("param/")}
        opt = {k[4:]: data[k] for k in data.files if k.startswith("opt/")}
    opt["step"] = int(opt["step"])
    tc = TrainConfig(
        **{
            f.name: meta["train_config"][f.name]
            for f in fields(TrainConfig)
            if f.name in meta["train_config"]
        }
    )
    return params, opt, ModelConfig.from_dict(meta["model_config"]), tc, int(meta["step"])


def _first_bad_layer(res) -> str:
    for i, out in enumerate(res.cache.outputs):
        if not np.all(np.isfinite(out)):
            return f"layers.{i} ({res.cache.cfg.attention[i]} attention): non-finite output"
    for i, v in res.ksvd_per_layer.items():
        if not math.isfinite(v):
            return f"layers.{i} (primal attention): non-finite KSVD loss"
    if not np.all(np.isfinite(res.logits)):
        return "the classifier head: non-finite logits"
    bad = [k for k, g in res.grads.items() if not np.all(np.isfinite(g))]
    return f"non-finite gradients in {bad[:3]}" if bad else "the loss"


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def step(self, info: str | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if info:
                self.bar.set_postfix_str(info)
        elif self.enabled and info:
            print(info, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _record(
    step: int, losses: list, params, val_data: TaskData, mcfg: ModelConfig, res, t0: float
) -> dict:
    """One history entry; ``res`` is the last step's LossAndGrads (its J and KSVD loss are
    those of that step's batch, before its update)."""
    val_acc, val_loss = evaluate(params, val_data, mcfg)
    return {
        "step": step,
        "train_task_loss": float(np.mean(losses)),
        "val_accuracy": val_acc,
        "val_task_loss": val_loss,
        "ksvd_loss": {f"layer {i}": v for i, v in res.ksvd_per_layer.items()},
        "J": {f"layer {i}": v for i, v in res.j_per_layer.items()},
        "seconds": time.perf_counter() - t0,
    }


def train(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    resume: str | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.task`` and return the held-out result."""
    cfg.validate()
    train_data = make_task(cfg.task, n=cfg.n_train, seed=3 * cfg.seed, **cfg.task_params)
    val_data = make_task(cfg.task, n=cfg.n_val, seed=3 * cfg.seed + 1, **cfg.task_params)
    test_data = make_task(cfg.task, n=cfg.n_test, seed=3 * cfg.seed + 2, **cfg.task_params)
    mcfg = cfg.model_config(train_data)  # validates the architecture before any training
    if cfg.batch_size > cfg.n_train:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds n_train {cfg.n_train}")
    start = 0
    if resume:
        params, opt, mcfg_saved, _, start = load_checkpoint(resume)
        if mcfg_saved != mcfg:
            raise ValueError(
                f"checkpoint {resume} was trained with a different model config: {mcfg_saved}"
            )
        if start >= cfg.steps:
            raise ValueError(
                f"checkpoint {resume} is at step {start}; ask for more than {start} steps"
            )
    else:
        params = init_model_params(mcfg, seed=cfg.seed)
        opt = adam_init(params)
    rng = np.random.default_rng([cfg.seed, start])
    batches = _batches(cfg.n_train, cfg.batch_size, rng)
    bar = _Progress(cfg.steps - start, progress)
    history: list[dict] = []
    window: list[float] = []
    last = None
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        idx = next(batches)
        # Overflow here is detected just below and reported with its step and layer.
        with np.errstate(over="ignore", invalid="ignore"):
            res = loss_and_grads(
                params, train_data.ids[idx], train_data.mask[idx], train_data.labels[idx], mcfg
            )
        if not math.isfinite(res.loss) or not all(
            np.all(np.isfinite(g)) for g in res.grads.values()
        ):
            if cfg.checkpoint_dir:
                save_checkpoint(
                    cfg.checkpoint_dir, params, opt, mcfg, cfg, step, {"diverged_at": step}
                )
            bar.close()
            where = _first_bad_layer(res)
            kept = (
                f"; last good checkpoint (step {step}) kept in {cfg.checkpoint_dir}"
                if cfg.checkpoint_dir
                else ""
            )
            raise TrainingDiverged(f"non-finite loss at step {step + 1}: {where}{kept}")
        if step == start:  # the state before any update: accuracy at init, J at init
            history.append(_record(step, [res.task_loss], params, val_data, mcfg, res, t0))
        grads = res.grads
        if cfg.clip:
            grads, _ = clip_grad_norm(grads, cfg.clip)
        params, opt = adam_step(
            params,
            grads,
            opt,
            lr=_lr_at(cfg, step),
            weight_decay=cfg.weight_decay,
            decoupled=cfg.optimizer == "adamw",
        )
        window.append(res.task_loss)
        last = res
        info = None
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            rec = _record(done, window, params, val_data, mcfg, res, t0)
            history.append(rec)
            window = []
            info = f"step {done}/{cfg.steps}  loss {rec['train_task_loss']:.3f}  val acc {rec['val_accuracy']:.3f}"
            if res.j_per_layer:
                info += "  J " + " ".join(f"{v:+.3f}" for v in res.j_per_layer.values())
            if on_eval:
                on_eval(rec)
            if cfg.checkpoint_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save_checkpoint(cfg.checkpoint_dir, params, opt, mcfg, cfg, done, rec)
        bar.step(info)
    bar.close()
    seconds = time.perf_counter() - t0
    test_acc, test_loss = evaluate(params, test_data, mcfg)
    if cfg.checkpoint_dir:
        save_checkpoint(
            cfg.checkpoint_dir, params, opt, mcfg, cfg, cfg.steps, {"accuracy": test_acc}
        )
    j_hist: dict[str, list] = {}
    for rec in history:
        for k, v in rec["J"].items():
            j_hist.setdefault(k, []).append(v)
    steps_run = cfg.steps - start
    return TrainResult(
        accuracy=test_acc,
        chance_accuracy=chance_accuracy(test_data),
        test_task_loss=test_loss,
        train_task_loss=history[-1]["train_task_loss"],
        val_accuracy=history[-1]["val_accuracy"],
        ksvd_loss_per_layer={
            f"layer {i}": v for i, v in (last.ksvd_per_layer if last else {}).items()
        },
        j_per_layer=j_hist,
        history=history,
        steps=steps_run,
        seconds=seconds,
        tokens_per_second=steps_run * cfg.batch_size * train_data.ids.shape[1] / seconds
        if seconds > 0
        else 0.0,
        model_config=mcfg.to_dict(),
        train_config=asdict(cfg),
        params=params,
    )
