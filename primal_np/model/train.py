"""Training loop for the small encoder classifiers: AdamW, schedules, clipping, checkpoints.

Data: ``primal_np.tasks.make_task`` with three disjoint seeds derived from ``seed``
(train 3·seed, validation 3·seed + 1, test 3·seed + 2). Progress reports the
validation accuracy; the held-out ``accuracy`` of the result is measured once, at the
end, on the test set (defaults were tuned on validation only), with the uncertainty
metrics of the predictive distribution: ``nll``, ``ece`` (15 bins), ``brier``
(``primal_np.nn.metrics``). The batch of step t (counted from 0) is a pure function of
(seed, t): ``batch_indices``; so is the noise of the KEP-SVGP layers (``training_noise``),
and their Monte-Carlo predictions (``mc_samples``) draw from a fixed stream of the seed.

Divergence. Every step runs under ``np.errstate(over="raise", invalid="raise",
divide="raise")`` and checks the loss, each layer's output, the logits, the KSVD loss,
every gradient, the gradient norm, and the parameters and optimiser state after the
update (a finite step can overflow them), and the validation and test evaluations. The
first non-finite value stops training with ``TrainingDiverged``, which names the step
(1-based: step k is the k-th update) and where the value appeared: ``layers.<i> (<kind>
attention)``, ``logits``, ``the KSVD loss``, ``the gradient of <name>``, ``parameter
<name> after the update``, …. With ``checkpoint_dir`` set, the directory then holds the
last state whose parameters and training loss were both finite — never the state whose
loss was already non-finite — so a resumed run (say with a lower learning rate) starts
from a working model.

Checkpoints (``primal_np.model.checkpoint``): written atomically every
``checkpoint_every`` steps and at the end; ``resume`` validates the directory and
continues. A resumed run with the same configuration reproduces the uninterrupted run
bit for bit: parameters, optimiser state, batch order and history, all but the
wall-clock ``seconds`` entries.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..optim import adam_init
from ..tasks import TaskData, make_task
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    check_writable_dir,
    config_differences,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .config import ModelConfig
from .encoder import LossAndGrads, init_model_params
from .predict import training_noise
from .steps import (
    BatchStream,
    NonFinite,
    batch_indices,
    chance_accuracy,
    checked_evaluate,
    checked_loss_and_grads,
    checked_update,
    evaluate,
)
from .train_config import MODEL_FIELDS, TrainConfig, TrainConfigError

__all__ = [
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "TrainingDiverged",
    "train",
    "evaluate",
    "batch_indices",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "MODEL_FIELDS",
]


class TrainingDiverged(RuntimeError):
    """A non-finite value during training (module docstring). Attributes: ``step``
    (1-based), ``where`` (the part of the model or of the update), ``detail`` (the
    floating-point error or the check that caught it), ``kept_step`` (the step of the
    checkpoint left in ``checkpoint_dir``, or None when nothing was kept)."""

    def __init__(self, message: str, *, step: int, where: str, detail: str,
                 kept_step: int | None, checkpoint_dir: str | None):  # fmt: skip
        super().__init__(message)
        self.step, self.where, self.detail = step, where, detail
        self.kept_step, self.checkpoint_dir = kept_step, checkpoint_dir


@dataclass
class TrainResult:
    accuracy: float  # held-out test accuracy at the end
    chance_accuracy: float  # the majority class's share of the test set
    test_task_loss: float  # the test NLL (the mean cross-entropy of the prediction)
    nll: float  # test negative log-likelihood (= test_task_loss)
    ece: float  # test expected calibration error, 15 bins
    brier: float  # test Brier score
    train_task_loss: float  # mean over the last eval window
    val_accuracy: float
    ksvd_loss_per_layer: dict  # "layer <i>" → L_l at the last step (primal, KEP-SVGP layers)
    kl_per_layer: dict  # "layer <i>" → the KL term at the last step (KEP-SVGP layers)
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


# --------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class _State:
    """Everything a checkpoint holds: the state after ``step`` updates."""

    step: int
    params: dict
    opt: dict
    history: tuple = ()  # evaluation records
    window: tuple = ()  # training task losses since the last evaluation
    seconds: float = 0.0  # training seconds before this run


class _Run:
    def __init__(self, cfg: TrainConfig, mcfg: ModelConfig, data: tuple, start: _State,
                 fresh: bool, on_eval: Callable[[dict], None] | None):  # fmt: skip
        self.cfg, self.mcfg, self.on_eval, self.fresh = cfg, mcfg, on_eval, fresh
        self.train_data, self.val_data, self.test_data = data
        self.batches = BatchStream(cfg.seed, cfg.n_train, cfg.batch_size)
        self.state = start  # the state the current step starts from
        self.good: _State | None = None  # the last state with finite parameters and loss
        self.failing_step = start.step + 1
        self.t0, self.seconds0 = time.perf_counter(), start.seconds
        self.start_step = start.step
        self.last: LossAndGrads | None = None

    def seconds(self) -> float:
        return self.seconds0 + time.perf_counter() - self.t0

    def loop(self, bar: _Progress) -> _State:
        cfg, s = self.cfg, self.state
        while s.step < cfg.steps:
            self.state, self.failing_step = s, s.step + 1
            s = self.step(s)
            done, info, rec = s.step, None, None
            if done % cfg.eval_every == 0 or done == cfg.steps:
                rec = self.record(done, s.window, s.params)
                s = replace(s, history=s.history + (rec,), window=())
                info = f"step {done}/{cfg.steps}  loss {rec['train_task_loss']:.3f}  val acc {rec['val_accuracy']:.3f}"
                if self.last is not None and self.last.j_per_layer:
                    info += "  J " + " ".join(f"{v:+.3f}" for v in self.last.j_per_layer.values())
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                self.save(s, rec or {})  # the evaluation record when there is one
            if rec is not None and self.on_eval:
                self.on_eval(rec)
            bar.step(info)
        self.state, self.failing_step = s, cfg.steps
        return s

    def step(self, s: _State) -> _State:
        """One update from ``s``; its loss confirms ``s`` as good."""
        idx, d = self.batches(s.step), self.train_data
        noise = training_noise(self.mcfg, self.cfg.seed, s.step, len(idx), d.ids.shape[1])
        res = checked_loss_and_grads(s.params, d.ids[idx], d.mask[idx], d.labels[idx],
                                      self.mcfg, self.fresh and s.step == 0, noise)  # fmt: skip
        self.last = res
        if not s.history:  # the state before any update: accuracy at init, J at init
            s = replace(s, history=(self.record(s.step, (res.task_loss,), s.params),))
        self.state = self.good = s
        params, opt = checked_update(s.params, res.grads, s.opt, self.cfg, s.step)
        return replace(s, step=s.step + 1, params=params, opt=opt,
                       window=s.window + (res.task_loss,))  # fmt: skip

    def record(self, step: int, window: tuple, params: dict) -> dict:
        """One history entry; J and the KSVD loss are those of the last step's batch,
        before its update."""
        val = checked_evaluate(params, self.val_data, self.mcfg, "the validation set", self.cfg)
        res = self.last
        assert res is not None
        rec = {
            "step": step,
            "train_task_loss": float(np.mean(window)),
            "val_accuracy": val.accuracy,
            "val_task_loss": val.nll,
            "ksvd_loss": {f"layer {i}": v for i, v in res.ksvd_per_layer.items()},
            "J": {f"layer {i}": v for i, v in res.j_per_layer.items()},
            "seconds": self.seconds(),
        }
        if res.kl_per_layer:
            rec["kl"] = {f"layer {i}": v for i, v in res.kl_per_layer.items()}
        return rec

    def save(self, s: _State, metrics: dict) -> None:
        assert self.cfg.checkpoint_dir is not None
        save_checkpoint(self.cfg.checkpoint_dir, s.params, s.opt, self.mcfg, self.cfg, s.step,
                        metrics, history=list(s.history), window=list(s.window),
                        seconds=self.seconds())  # fmt: skip

    def diverged(self, nf: NonFinite) -> TrainingDiverged:
        good = self.state if nf.loss_finite else self.good
        d, step = self.cfg.checkpoint_dir, self.failing_step
        detail = f" ({nf.detail})" if nf.detail else ""
        if d is None:
            kept = "no checkpoint directory was given"
        elif good is None:
            kept = f"nothing written to {d}: the starting parameters already give it"
        else:
            self.save(good, {"diverged_at": step, "where": nf.where})
            kept = (f"kept the checkpoint of step {good.step} in {d}, the last state whose "
                    "parameters and training loss were finite")  # fmt: skip
        msg = f"training diverged at step {step}: non-finite value in {nf.where}{detail}; {kept}"
        return TrainingDiverged(msg, step=step, where=nf.where, detail=nf.detail,
                                kept_step=None if d is None or good is None else good.step,
                                checkpoint_dir=d)  # fmt: skip

    def finish(self, s: _State) -> TrainResult:
        cfg, seconds = self.cfg, time.perf_counter() - self.t0
        test = checked_evaluate(s.params, self.test_data, self.mcfg, "the test set", cfg)
        if cfg.checkpoint_dir:
            self.save(s, {"accuracy": test.accuracy, "test_task_loss": test.nll, "nll": test.nll,
                          "ece": test.ece, "brier": test.brier})  # fmt: skip
        j_hist: dict[str, list] = {}
        for rec in s.history:
            for k, v in rec["J"].items():
                j_hist.setdefault(k, []).append(v)
        steps_run = cfg.steps - self.start_step
        last = self.last
        return TrainResult(
            accuracy=test.accuracy,
            chance_accuracy=chance_accuracy(self.test_data),
            test_task_loss=test.nll,
            nll=test.nll,
            ece=test.ece,
            brier=test.brier,
            train_task_loss=s.history[-1]["train_task_loss"],
            val_accuracy=s.history[-1]["val_accuracy"],
            ksvd_loss_per_layer={
                f"layer {i}": v for i, v in (last.ksvd_per_layer if last else {}).items()
            },
            kl_per_layer={f"layer {i}": v for i, v in (last.kl_per_layer if last else {}).items()},
            j_per_layer=j_hist,
            history=list(s.history),
            steps=steps_run,
            seconds=seconds,
            tokens_per_second=steps_run * cfg.batch_size * self.train_data.ids.shape[1] / seconds
            if seconds > 0
            else 0.0,
            model_config=self.mcfg.to_dict(),
            train_config=asdict(cfg),
            params=s.params,
        )


def _make_data(cfg: TrainConfig) -> tuple[TaskData, TaskData, TaskData]:
    try:
        return tuple(  # type: ignore[return-value]
            make_task(cfg.task, n=n, seed=3 * cfg.seed + k, **cfg.task_params)
            for k, n in enumerate((cfg.n_train, cfg.n_val, cfg.n_test))
        )
    except (ValueError, TypeError) as exc:
        raise TrainConfigError("task_params", f"for task {cfg.task!r}: {exc}") from None


def _resume_state(resume: str, mcfg: ModelConfig, cfg: TrainConfig) -> _State:
    ck = read_checkpoint(resume)
    diff = config_differences(ck.model_config, mcfg)
    if diff:
        raise CheckpointError(
            resume, "was trained with a different model config: " + "; ".join(diff)
        )
    if ck.step >= cfg.steps:
        raise CheckpointError(resume, f"is at step {ck.step}; ask for more than {ck.step} steps")
    return _State(ck.step, ck.params, ck.opt, tuple(ck.history), tuple(ck.window), ck.seconds)


def train(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    resume: str | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.task`` and return the held-out result.

    Before any work: the configuration is validated (``TrainConfigError``), the
    checkpoint directory created and proved writable, and the ``resume`` checkpoint read
    and checked against this run (``CheckpointError``). Then the data are generated and
    the steps run; a non-finite value raises ``TrainingDiverged`` (module docstring).
    ``on_eval`` receives each history record as it is made.
    """
    mcfg = cfg.validate()
    if cfg.checkpoint_dir is not None:
        check_writable_dir(cfg.checkpoint_dir)
    start = _resume_state(resume, mcfg, cfg) if resume is not None else None
    data = _make_data(cfg)
    if start is None:
        params = init_model_params(mcfg, seed=cfg.seed)
        start = _State(0, params, adam_init(params))
    run = _Run(cfg, mcfg, data, start, resume is None, on_eval)
    bar = _Progress(cfg.steps - start.step, progress)
    try:
        return run.finish(run.loop(bar))
    except NonFinite as nf:
        raise run.diverged(nf) from nf.__cause__
    finally:
        bar.close()
