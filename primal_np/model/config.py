"""Configuration of the small encoder classifiers: PrimalFormer, Primal.+Trans., Transformer,
and the KEP-SVGP model (KEP-SVGP attention in the last layer, or in every layer)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from .._checks import positive_int, real_number
from ..kep_svgp import KEPSVGPConfig
from ..ksvd_loss import get_convention
from ..params import PrimalAttentionConfig

__all__ = ["MODELS", "KEP_LAYERS", "LAYER_KINDS", "ModelConfig", "layer_kinds"]

# name → which attention each of `depth` layers uses
MODELS = {
    "primalformer": "primal attention in every layer",
    "primal+trans": "canonical attention, except primal attention in the last layer",
    "transformer": "canonical (softmax) attention in every layer",
    "kep-svgp": "canonical attention, except KEP-SVGP attention in the last layer "
    "(--kep-layers all: in every layer)",
}
LAYER_KINDS = ("canonical", "primal", "kep")
KEP_LAYERS = ("last", "all")  # which layers of the kep-svgp model use KEP-SVGP attention


def layer_kinds(model: str, depth: int, kep_layers: str = "last") -> tuple[str, ...]:
    """Per-layer attention kinds ("primal" / "canonical" / "kep") of a named model.

    ``kep_layers`` (model "kep-svgp" only): "last" — KEP-SVGP attention in the last layer,
    canonical attention before it (the authors' ViTs with ``ksvd_layers = 1``); "all" —
    in every layer.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if kep_layers not in KEP_LAYERS:
        raise ValueError(f"kep_layers must be one of {', '.join(KEP_LAYERS)}, got {kep_layers!r}")
    if model == "primalformer":
        return ("primal",) * depth
    if model == "primal+trans":
        return ("canonical",) * (depth - 1) + ("primal",)
    if model == "kep-svgp":
        return ("kep",) * depth if kep_layers == "all" else ("canonical",) * (depth - 1) + ("kep",)
    return ("canonical",) * depth


KEP_CAUSAL = (
    "KEP-SVGP attention has no causal variant: the data-dependent weights W_(e|X) = Fᵀ W_e "
    "of every position read tokens F sampled from the whole sequence, so a next-token "
    "prediction would see the future"
)


@dataclass(frozen=True)
class ModelConfig:
    """A pre-LN encoder classifier.

    tokens → embedding + positions → depth × [x + Attn(LN(x)); x + MLP(LN(x))] → LN →
    pooling (mean over real tokens, or the CLS token) → linear head (num_classes).

    attention: per-layer kinds; default from ``model`` (see ``MODELS``).
    causal: False — an encoder classifier (pooling + head); True — a decoder for next-token
    prediction: canonical layers attend causally, primal layers are the causal variant
    (running means, data-independent weights), and the head maps every position to
    ``num_classes`` (= the vocabulary) logits.
    Primal layers are otherwise the authors' LRA layer (``variant="lra"``, padding mask),
    with data-dependent weights (n = low_rank·rank_multi sampled rows) unless
    ``data_dependent=False``, and the feature map ``feature_map`` (any registered name).
    ``rscores=False`` drops the r-scores from the primal layers' head output (the paper's
    ablation). The KSVD loss over the primal layers, weighted by ``eta``, uses ``ksvd_convention``
    (a preset of ``primal_np.ksvd_loss.CONVENTIONS``) with ``trace_no_x``.

    KEP-SVGP layers ("kep", ``kep_layers``) are the authors' CoLA module
    (``KEPSVGPConfig(variant="cola")``: padding mask on q and k, n = low_rank·rank_multi
    sampled tokens, cosine feature map, their factor layout); their KSVD loss (their form,
    summed over the KEP-SVGP layers) is weighted by ``eta`` and their KL term by ``eta_kl``:
    loss = task + η (KSVD_primal + Σ ksvd_kep) + η_kl Σ kl. They have no causal variant: the
    sampled tokens F = X[idx] of every position's weights W_{e|X} = Fᵀ W_e come from the
    whole sequence, so a decoder (``causal``) with KEP-SVGP layers is refused.
    """

    vocab_size: int
    num_classes: int
    max_len: int
    model: str = "primalformer"
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_hidden: int = 128
    low_rank: int = 8
    rank_multi: int = 4
    data_dependent: bool = True
    positions: str = "learned"
    pooling: str = "mean"
    eta: float = 0.1
    ksvd_convention: str = "lra"
    trace_no_x: bool = True
    attention: tuple[str, ...] = field(default=())
    causal: bool = False
    feature_map: str = "cosine"
    rscores: bool = True
    kep_layers: str = "last"
    eta_kl: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "num_classes",
            "max_len",
            "dim",
            "depth",
            "num_heads",
            "mlp_hidden",
        ):
            positive_int(getattr(self, name), name)
        for name in (
            "model",
            "positions",
            "pooling",
            "ksvd_convention",
            "feature_map",
            "kep_layers",
        ):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.attention, (tuple, list)):
            raise TypeError(f"attention must be a sequence of layer kinds, got {self.attention!r}")
        if self.kep_layers not in KEP_LAYERS:
            raise ValueError(
                f"kep_layers must be one of {', '.join(KEP_LAYERS)}, got {self.kep_layers!r}"
            )
        if not self.attention:
            kinds = layer_kinds(self.model, self.depth, self.kep_layers)
            object.__setattr__(self, "attention", kinds)
        else:
            object.__setattr__(self, "attention", tuple(self.attention))
        if len(self.attention) != self.depth or any(a not in LAYER_KINDS for a in self.attention):
            raise ValueError(
                f"attention must list one of {', '.join(LAYER_KINDS)} for each of "
                f"depth={self.depth} layers, got {self.attention}"
            )
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {self.positions!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        for name in ("causal", "data_dependent", "trace_no_x", "rscores"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        real_number(self.eta, "eta", minimum=0.0)
        real_number(self.eta_kl, "eta_kl", minimum=0.0)
        get_convention(self.ksvd_convention)
        if self.has_primal:
            self.primal_config()  # validates low_rank, rank_multi against the head dim
        if self.has_kep:
            if self.causal:
                raise ValueError(KEP_CAUSAL)
            self.kep_config()

    @property
    def has_primal(self) -> bool:
        return "primal" in self.attention

    @property
    def has_kep(self) -> bool:
        return "kep" in self.attention

    def kep_config(self) -> KEPSVGPConfig:
        """The KEP-SVGP layers' configuration: the authors' CoLA module."""
        try:
            return KEPSVGPConfig(
                dim=self.dim,
                num_heads=self.num_heads,
                low_rank=self.low_rank,
                rank_multi=self.rank_multi,
                variant="cola",
            )
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"KEP-SVGP attention layers: {exc}") from None

    def primal_config(self) -> PrimalAttentionConfig:
        try:
            return PrimalAttentionConfig(
                dim=self.dim,
                num_heads=self.num_heads,
                low_rank=self.low_rank,
                rank_multi=self.rank_multi,
                variant="causal" if self.causal else "lra",
                data_dependent=False if self.causal else self.data_dependent,
                feature_map=self.feature_map,
                rscores=self.rscores,
            )
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"primal attention layers: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attention"] = list(self.attention)
        return d

    @classmethod
    def from_dict(cls, d: object) -> ModelConfig:
        """The inverse of ``to_dict`` (e.g. a checkpoint's JSON): every field validated as
        in the constructor (no string is taken for a boolean or a number); unknown or
        missing fields are named."""
        if not isinstance(d, dict):
            raise TypeError(f"a model config must be a dict (JSON object), got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown, missing = sorted(set(d) - names), sorted(required - set(d))
        if unknown or missing:
            raise ValueError(f"model config: unknown field(s) {unknown}, missing {missing}")
        d = dict(d)
        if isinstance(d.get("attention"), list):
            d["attention"] = tuple(d["attention"])
        return cls(**d)
