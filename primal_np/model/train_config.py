"""The configuration of a training run, validated field by field before any work starts."""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..feature_maps import FEATURE_MAPS
from ..ksvd_loss import CONVENTIONS
from ..nn.metrics import MC_AVERAGES
from ..params import PrimalAttentionConfig
from ..tasks import MAX_TASK_TOKENS, TASKS, TaskData, make_task, task_length
from .config import KEP_CAUSAL, KEP_LAYERS, MODELS, ModelConfig, layer_kinds
from .predict import DEFAULT_MC_SAMPLES

__all__ = ["TrainConfig", "TrainConfigError", "MODEL_FIELDS"]

# TrainConfig fields passed through to ModelConfig
MODEL_FIELDS = (
    "dim", "depth", "num_heads", "mlp_hidden", "low_rank", "rank_multi", "data_dependent",
    "positions", "pooling", "eta", "ksvd_convention", "trace_no_x", "feature_map", "rscores",
    "kep_layers", "eta_kl",
)  # fmt: skip

_MODEL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ModelConfig)}


class TrainConfigError(ValueError):
    """A bad ``TrainConfig`` field.

    ``field`` is its name and ``message`` the rest of the sentence, in which other fields
    appear as ``{name}`` placeholders: ``str(exc)`` writes field names, ``render(names)``
    any other spelling (the command line writes its flags).
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(self.render())

    def render(self, names: Mapping[str, str] | None = None) -> str:
        names = names or {}
        known = {f.name for f in fields(TrainConfig)}

        def name(m: re.Match) -> str:
            return names.get(m[1], m[1]) if m[1] in known else m[0]

        return f"{names.get(self.field, self.field)} " + re.sub(r"\{(\w+)\}", name, self.message)


class TrainConfigTypeError(TrainConfigError, TypeError):
    """A ``TrainConfig`` field of the wrong type (a string where a number or a boolean
    belongs, ...)."""


@dataclass
class TrainConfig:
    """Everything a run needs; the defaults are the CLI's defaults.

    ``checkpoint_every`` N ≥ 1 saves every N steps (needs ``checkpoint_dir``); 0 saves at
    the end only. ``mc_samples`` K and ``mc_average`` set how a model with KEP-SVGP layers
    predicts in every evaluation (``primal_np.model.predict``): K passes averaged ("probs":
    the softmax probabilities, "logits": the logits, as the authors), K = 0 the posterior
    mean; the authors' K = 10 is the default. ``validate()`` checks every field (type and range, and the combinations:
    batch_size ≤ n_train, dim divisible by num_heads, the task parameters, the sizes of the
    generated sets) and raises ``TrainConfigError`` naming the field.
    """

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
    kep_layers: str = _MODEL_DEFAULTS["kep_layers"]
    eta_kl: float = _MODEL_DEFAULTS["eta_kl"]
    # prediction of models with KEP-SVGP layers
    mc_samples: int = DEFAULT_MC_SAMPLES
    mc_average: str = "probs"

    @classmethod
    def from_dict(cls, d: object) -> TrainConfig:
        """A config from ``asdict(config)`` (a checkpoint's JSON), validated."""
        if not isinstance(d, dict):
            raise TypeError(f"a train config must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown train config field(s) {unknown}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> ModelConfig:
        """Check every field; return the model configuration the run will build."""
        _check_scalars(self)
        if self.batch_size > self.n_train:
            raise TrainConfigError("batch_size", f"must be <= {{n_train}} = {self.n_train}, "
                                   f"got {self.batch_size}")  # fmt: skip
        if self.dim % self.num_heads:
            raise TrainConfigError(
                "num_heads", f"must divide {{dim}} = {self.dim}, got {self.num_heads}"
            )
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise TrainConfigError(
                "checkpoint_every", f"is {self.checkpoint_every} but no {{checkpoint_dir}} is set"
            )
        if self.model != "kep-svgp" and self.kep_layers != "last":
            raise TrainConfigError(
                "kep_layers", f"is {self.kep_layers!r}, but it applies to {{model}} kep-svgp only"
            )
        probe = _probe_task(self)
        if probe.kind == "next_token" and "kep" in layer_kinds(self.model, self.depth):
            raise TrainConfigError(
                "model", f"{self.model} cannot learn the next-token task {self.task!r}: "
                + KEP_CAUSAL,
            )  # fmt: skip
        _check_primal_widths(self, probe.kind == "next_token")
        return self.model_config(probe)

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


def _int(cfg: TrainConfig, name: str, minimum: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TrainConfigTypeError(name, f"must be an integer, got {v!r}")
    if v < minimum:
        raise TrainConfigError(name, f"must be >= {minimum}, got {v}")


def _real(cfg: TrainConfig, name: str, minimum: float, exclusive: bool = False) -> None:
    v = getattr(cfg, name)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TrainConfigTypeError(name, f"must be a real number, got {v!r}")
    if not math.isfinite(v):
        raise TrainConfigError(name, f"must be finite, got {v}")
    if v < minimum or (exclusive and v == minimum):
        raise TrainConfigError(name, f"must be {'>' if exclusive else '>='} {minimum}, got {v}")


def _choice(cfg: TrainConfig, name: str, choices: Any, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if optional and v is None:
        return
    if not isinstance(v, str) or v not in choices:
        raise TrainConfigError(name, f"must be one of {', '.join(choices)}; got {v!r}")


def _check_scalars(cfg: TrainConfig) -> None:
    """Type and range of every field on its own."""
    _choice(cfg, "model", MODELS)
    _choice(cfg, "task", TASKS)
    for name in ("steps", "batch_size", "n_train", "n_val", "n_test", "eval_every"):
        _int(cfg, name, 1)
    for name in ("dim", "depth", "num_heads", "mlp_hidden", "low_rank", "rank_multi"):
        _int(cfg, name, 1)
    for name in ("warmup", "seed", "checkpoint_every", "mc_samples"):
        _int(cfg, name, 0)
    _real(cfg, "lr", 0.0, exclusive=True)
    for name in ("weight_decay", "clip", "eta", "eta_kl"):
        _real(cfg, name, 0.0)
    _choice(cfg, "optimizer", ("adam", "adamw"))
    _choice(cfg, "schedule", ("cosine", "linear", "constant"))
    _choice(cfg, "positions", ("learned", "sinusoidal"))
    _choice(cfg, "pooling", ("mean", "cls"))
    _choice(cfg, "ksvd_convention", CONVENTIONS, optional=True)
    _choice(cfg, "feature_map", FEATURE_MAPS)
    _choice(cfg, "kep_layers", KEP_LAYERS)
    _choice(cfg, "mc_average", MC_AVERAGES)
    for name in ("data_dependent", "trace_no_x", "rscores"):
        if not isinstance(getattr(cfg, name), (bool, np.bool_)):
            raise TrainConfigTypeError(name, f"must be True or False, got {getattr(cfg, name)!r}")
    d = cfg.checkpoint_dir
    if d is not None and not (isinstance(d, (str, os.PathLike)) and str(d)):
        raise TrainConfigTypeError("checkpoint_dir", f"must be a directory path, got {d!r}")
    if not isinstance(cfg.task_params, dict) or not all(
        isinstance(k, str) for k in cfg.task_params
    ):
        raise TrainConfigTypeError(
            "task_params", f"must be a dict of parameter names, got {cfg.task_params!r}"
        )


def _probe_task(cfg: TrainConfig) -> TaskData:
    """Check the task parameters and the sizes of the three sets from the sequence length
    alone, then generate one example (the vocabulary and the kind); nothing else is
    generated before training starts."""
    valid = [p for p in inspect.signature(TASKS[cfg.task]).parameters if p not in ("n", "seed")]
    unknown = sorted(set(cfg.task_params) - set(valid))
    if unknown:
        raise TrainConfigError(
            "task_params", f"has no key(s) {unknown} for task {cfg.task!r}; valid: {valid}"
        )
    try:
        length = task_length(cfg.task, **cfg.task_params)
    except (ValueError, TypeError) as exc:
        raise TrainConfigError("task_params", f"for task {cfg.task!r}: {exc}") from None
    for name in ("n_train", "n_val", "n_test"):
        n = getattr(cfg, name)
        if n * length > MAX_TASK_TOKENS:
            raise TrainConfigError(
                name, f"· L = {n} · {length} tokens exceeds the limit MAX_TASK_TOKENS = "
                f"{MAX_TASK_TOKENS} (primal_np.tasks), L being the sequence length that "
                "{task_params} sets",
            )  # fmt: skip
    try:
        return make_task(cfg.task, n=1, seed=0, **cfg.task_params)
    except (ValueError, TypeError) as exc:
        raise TrainConfigError("task_params", f"for task {cfg.task!r}: {exc}") from None


def _check_primal_widths(cfg: TrainConfig, causal: bool) -> None:
    """The primal layers' feature width against the head dim (data-dependent weights) or
    against low_rank (data-independent weights)."""
    if "primal" not in layer_kinds(cfg.model, cfg.depth):
        return
    data_dependent = cfg.data_dependent and not causal
    base = PrimalAttentionConfig(
        cfg.dim, cfg.num_heads, 1, variant="causal" if causal else "lra", data_dependent=False,
        feature_map=cfg.feature_map,
    )  # fmt: skip
    p, p_phi = base.head_dim, base.feature_dim
    if data_dependent and p_phi != p:
        raise TrainConfigError(
            "feature_map",
            f"{cfg.feature_map!r} maps the head dim p = {p} to {p_phi} features, but "
            "data-dependent weights W_(e|X) = Fᵀ W_e are p × s; use data_dependent=False "
            "(train: --data-independent) or a width-preserving map (cosine, identity)",
        )
    if not data_dependent and cfg.low_rank > p_phi:
        raise TrainConfigError(
            "low_rank",
            f"must be <= the feature width p_φ = {p_phi} (data-independent weights "
            f"W_e ∈ R^(p_φ×s)), got {cfg.low_rank}",
        )
