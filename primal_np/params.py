"""Primal-Attention layer configuration, initialisation and the authors' state-dict layouts.

Internal parameter names (generic across variants) and the authors' names (docs/conformance.md):

| internal | shape | LRA ``Attention`` | vision ``PrimalAttention`` | causal ``Primal_attention`` |
|---|---|---|---|---|
| wq, bq | (D, D), (D,) | W_q.weight, W_q.bias | — | query_projection.weight/.bias |
| wk, bk | (D, D), (D,) | W_k.weight, W_k.bias | — | key_projection.weight/.bias |
| wqk, bqk | (2D, D), (2D,) | — | qk.weight, qk.bias (only if qk_bias) | — |
| we, wr | (H, n, s) or (H, p, s) | We, Wr | we, wr | We, Wr |
| lam | (H, s) | attn.Lambda | Lambda | Lambda |
| wc, bc | (p, 2s), (p,) | attn.concate_weight.weight/.bias | concate_weight.weight/.bias | concate_weight.weight/.bias |
| wo, bo | (D, D), (D,) | ff.weight, ff.bias | proj.weight, proj.bias | out_projection.weight/.bias |

D = H·p. With data-dependent weights n = s·m (LRA) or min(N, s·m) (vision); with
data-independent weights the second axis of we, wr is p.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ._checks import (
    boolean,
    check_finite,
    choice,
    float_array,
    float_dtype,
    mapping,
    param_dict,
    path_arg,
    positive_int,
)
from ._checks import seed as _seed
from .feature_maps import feature_map_named, get_feature_map
from .init import orthogonal, torch_linear_init, trunc_normal, uniform_lambda
from .sampling import check_indices

__all__ = [
    "VARIANTS",
    "SAMPLERS",
    "PrimalAttentionConfig",
    "init_primal_attention_params",
    "param_shapes",
    "to_state_dict",
    "from_state_dict",
    "save_state_dict",
    "load_state_dict",
    "check_params",
]

VARIANTS = ("lra", "vision", "causal")

_AUTHOR_NAMES = {
    "lra": {
        "wq": "W_q.weight", "bq": "W_q.bias", "wk": "W_k.weight", "bk": "W_k.bias",
        "we": "We", "wr": "Wr", "lam": "attn.Lambda",
        "wc": "attn.concate_weight.weight", "bc": "attn.concate_weight.bias",
        "wo": "ff.weight", "bo": "ff.bias",
    },
    "vision": {
        "wqk": "qk.weight", "bqk": "qk.bias", "we": "we", "wr": "wr", "lam": "Lambda",
        "wc": "concate_weight.weight", "bc": "concate_weight.bias",
        "wo": "proj.weight", "bo": "proj.bias",
    },
    "causal": {
        "wq": "query_projection.weight", "bq": "query_projection.bias",
        "wk": "key_projection.weight", "bk": "key_projection.bias",
        "we": "We", "wr": "Wr", "lam": "Lambda",
        "wc": "concate_weight.weight", "bc": "concate_weight.bias",
        "wo": "out_projection.weight", "bo": "out_projection.bias",
    },
}  # fmt: skip


SAMPLERS = ("linspace", "all")


@dataclass(frozen=True)
class PrimalAttentionConfig:
    """Shape and variant of one Primal-Attention layer (docs/theory.md §4.4).

    Attributes:
        dim: D = H·p.
        num_heads: H.
        low_rank: s.
        rank_multi: m (n = s·m sampled tokens).
        variant: "lra" (separate biased Q, K projections, padding mask), "vision" (fused
            ``qk`` projection, n = min(N, s·m) with all tokens when N ≤ s·m), or "causal"
            (running means of q and k, data-independent weights).
        data_dependent: W_{e|X} = Fᵀ W_e (default for lra/vision); False uses
            W_e ∈ R^{p_φ×s} directly (the only choice for causal, where sampling F would
            see future tokens).
        qk_bias: vision only; the authors' default is False.
        num_tokens: the N the layer is built for. Needed when n depends on it: the vision
            variant with data-dependent weights (n = min(N, s·m)), and the samplers "all"
            (n = N) and user functions (n = len(sampler(N))).
        feature_map: the name of a map in the feature-map registry (``FEATURE_MAPS``;
            ``register_feature_map`` adds yours), applied to each head's q and k rows.
            Default "cosine", the authors' x / max(‖x‖₂, 1e-12). Its output width p_φ
            (``feature_dim``) is the first axis of data-independent W_e, W_r;
            data-dependent weights W_{e|X} = Fᵀ W_e ∈ R^{p×s} need p_φ = p (cosine,
            identity).
        feature_seed: seed of the map's own parameters (``make_params``, e.g. the random
            projections of "positive_random"); they are fixed, not trained.
        sampler: the token positions of F: "linspace" (the authors' integer linspace, see
            ``sample_indices``), "all" (every token, in order), or a function of N
            returning the positions (an integer array; it must return the same number n
            for every N the layer sees).
        rscores: True (the paper's layer): the head output is [E, R] W_cᵀ + b_c with
            W_c ∈ R^{p×2s}; False (the paper's ablation "without r-scores"): E W_cᵀ + b_c
            with W_c ∈ R^{p×s}. R is still computed (the KSVD loss reads it).
    """

    dim: int
    num_heads: int
    low_rank: int
    rank_multi: int = 10
    variant: str = "lra"
    data_dependent: bool | None = None
    qk_bias: bool = False
    num_tokens: int | None = None
    feature_map: str = "cosine"
    feature_seed: int = 0
    sampler: str | Callable[[int], np.ndarray] = "linspace"
    rscores: bool = True

    def __post_init__(self) -> None:
        positive_int(self.dim, "dim")
        positive_int(self.num_heads, "num_heads")
        positive_int(self.low_rank, "low_rank")
        positive_int(self.rank_multi, "rank_multi")
        _seed(self.feature_seed, "feature_seed")
        choice(self.variant, "variant", VARIANTS)
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.data_dependent is None:
            object.__setattr__(self, "data_dependent", self.variant != "causal")
        if not isinstance(self.data_dependent, (bool, np.bool_)):
            raise TypeError(
                f"data_dependent must be True, False or None, got {self.data_dependent!r}"
            )
        for flag in ("qk_bias", "rscores"):
            boolean(getattr(self, flag), flag)
        if self.num_tokens is not None:
            positive_int(self.num_tokens, "num_tokens")
        if not (callable(self.sampler) or self.sampler in SAMPLERS):
            kind = "" if isinstance(self.sampler, str) else f"{type(self.sampler).__name__} "
            raise (ValueError if isinstance(self.sampler, str) else TypeError)(
                f"sampler must be one of {SAMPLERS} or a function of N, got {kind}{self.sampler!r}"
            )
        if self.variant == "causal" and self.data_dependent:
            raise ValueError(
                "variant 'causal' needs data_dependent=False: F samples tokens from the whole "
                "sequence, so W_{e|X} = Fᵀ W_e would see future tokens"
            )
        if self.qk_bias and self.variant != "vision":
            raise ValueError("qk_bias applies to the vision variant only")
        feature_map_named(self.feature_map, "feature_map")  # else an error listing them
        p_phi = self.feature_dim
        if self.data_dependent and p_phi != self.head_dim:
            raise ValueError(
                f"feature map {self.feature_map!r} maps the head dim p = {self.head_dim} to "
                f"{p_phi} features, but data-dependent weights W_(e|X) = Fᵀ W_e are p × s (F holds "
                "p input channels); use data_dependent=False (train: --data-independent) or a "
                "width-preserving map (cosine, identity)"
            )
        if not self.data_dependent and self.low_rank > p_phi:
            raise ValueError(
                f"low_rank {self.low_rank} exceeds the feature width p_φ = {p_phi}: with "
                "data-independent weights W_e ∈ R^(p_φ×s) has rank at most p_φ"
            )
        if (
            self.data_dependent
            and self.num_tokens is None
            and (callable(self.sampler) or self.sampler == "all" or self.variant == "vision")
        ):
            what = "the vision variant" if self.variant == "vision" else f"sampler {self.sampler!r}"
            raise ValueError(
                f"{what} with data-dependent weights needs num_tokens (N), which fixes the "
                "number n of sampled rows and so the parameter shapes"
            )
        if self.data_dependent and callable(self.sampler):
            assert self.num_tokens is not None
            check_indices(self.sampler(self.num_tokens), self.num_tokens, "sampler(num_tokens)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def feature_params(self) -> dict:
        """Keyword parameters of the feature map for inputs of width p (fixed, seeded)."""
        fm = get_feature_map(self.feature_map)
        return fm.make_params(self.head_dim, self.feature_seed) if fm.make_params else {}

    @property
    def feature_dim(self) -> int:
        """p_φ, the width of φ(q) for q of width p (p for cosine and identity)."""
        fm = get_feature_map(self.feature_map)
        probe = np.full((1, self.head_dim), 1.0 / np.sqrt(self.head_dim))
        phi, _ = fm.forward(probe, **self.feature_params())
        shape = np.shape(phi)
        if len(shape) != 2 or shape[0] != 1:
            raise ValueError(
                f"feature map {self.feature_map!r} must act on the last axis: (1, {self.head_dim}) "
                f"gave shape {shape}"
            )
        return int(shape[1])

    @property
    def num_samples(self) -> int:
        """Second axis of we, wr: n (data-dependent) or p_φ (data-independent)."""
        if not self.data_dependent:
            return self.feature_dim
        n = self.low_rank * self.rank_multi
        if callable(self.sampler):
            assert self.num_tokens is not None
            return len(self.sampler(self.num_tokens))
        if self.sampler == "all":
            assert self.num_tokens is not None
            return self.num_tokens
        if self.variant == "vision":
            assert self.num_tokens is not None
            return min(self.num_tokens, n)
        return n


def param_shapes(config: PrimalAttentionConfig) -> dict[str, tuple[int, ...]]:
    """Internal parameter name → shape for this configuration."""
    D, H, p, s, n = (
        config.dim,
        config.num_heads,
        config.head_dim,
        config.low_rank,
        config.num_samples,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    if config.variant == "vision":
        shapes["wqk"] = (2 * D, D)
        if config.qk_bias:
            shapes["bqk"] = (2 * D,)
    else:
        shapes.update({"wq": (D, D), "bq": (D,), "wk": (D, D), "bk": (D,)})
    width = 2 * s if config.rscores else s  # [E, R] or E alone
    shapes.update({"we": (H, n, s), "wr": (H, n, s), "lam": (H, s), "wc": (p, width), "bc": (p,)})
    shapes.update({"wo": (D, D), "bo": (D,)})
    return shapes


def _check_config(config: object) -> None:
    if not isinstance(config, PrimalAttentionConfig):
        raise TypeError(f"config must be a PrimalAttentionConfig, got {type(config).__name__}")


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {type(prefix).__name__} {prefix!r}")


def init_primal_attention_params(
    config: PrimalAttentionConfig,
    *,
    seed: int = 0,
    dtype: np.dtype | type = np.float64,
    linear_init: str | None = None,
) -> dict[str, np.ndarray]:
    """Seeded initialisation with the authors' distributions.

    we, wr: ``orthogonal`` on (H, n, s), i.e. orthonormal rows of the H × (n·s) flattening.
    lam: U(0, 1). Linear layers: ``linear_init="torch"`` (PyTorch default, U(±1/sqrt(fan_in))
    for weights and biases) or ``"trunc_normal"`` (std 0.02, zero bias; the vision code's
    re-initialisation). Default: "trunc_normal" for vision, "torch" otherwise.
    """
    _check_config(config)
    dtype = float_dtype(dtype, "dtype")
    rng = np.random.default_rng(_seed(seed, "seed"))
    shapes = param_shapes(config)
    if linear_init is not None:
        choice(linear_init, "linear_init", ("torch", "trunc_normal"))
    mode = linear_init or ("trunc_normal" if config.variant == "vision" else "torch")

    def lin(w: str, b: str | None) -> None:
        out_f, in_f = shapes[w]
        if mode == "torch":
            params[w], bias = torch_linear_init(rng, in_f, out_f, bias=b is not None, dtype=dtype)
        else:
            params[w] = trunc_normal(rng, (out_f, in_f), std=0.02, dtype=dtype)
            bias = np.zeros(out_f, dtype=dtype)
        if b is not None:
            assert bias is not None
            params[b] = bias

    params: dict[str, np.ndarray] = {}
    if config.variant == "vision":
        lin("wqk", "bqk" if config.qk_bias else None)
    else:
        lin("wq", "bq")
        lin("wk", "bk")
    params["we"] = orthogonal(rng, shapes["we"], dtype=dtype)
    params["wr"] = orthogonal(rng, shapes["wr"], dtype=dtype)
    params["lam"] = uniform_lambda(rng, shapes["lam"], dtype=dtype)
    lin("wc", "bc")
    lin("wo", "bo")
    return {k: params[k] for k in shapes}


def to_state_dict(
    params: Mapping[str, np.ndarray], config: PrimalAttentionConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Internal names → the authors' state-dict names (plain arrays, their layouts)."""
    _check_config(config)
    _check_prefix(prefix)
    names = _AUTHOR_NAMES[config.variant]
    return {prefix + names[k]: v for k, v in check_params(params, config).items()}


def from_state_dict(
    state: Mapping[str, object], config: PrimalAttentionConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """The authors' state dict (arrays, or anything ``np.asarray`` accepts) → internal params.

    Every expected key must be present (else a ``KeyError`` listing the missing ones) with
    its exact shape, and no other key under ``prefix`` may appear (a ``KeyError`` listing
    them); errors name the key and both shapes. Each entry must be floating and finite.
    """
    mapping(state, "state", "name → array")
    _check_config(config)
    _check_prefix(prefix)
    names = _AUTHOR_NAMES[config.variant]
    shapes = param_shapes(config)
    expected = {prefix + names[k]: k for k in shapes}
    ours = {k for k in state if k.startswith(prefix)}
    missing = sorted(set(expected) - ours)
    extra = sorted(ours - set(expected))
    if missing:
        raise KeyError(f"state dict is missing {missing} for the {config.variant} layer")
    if extra:
        raise KeyError(f"state dict has unexpected entries {extra} for the {config.variant} layer")
    params = {}
    for key, internal in expected.items():
        arr = float_array(state[key], f"state dict entry {key!r}")
        if arr.shape != shapes[internal]:
            raise ValueError(
                f"state dict entry {key!r} has shape {arr.shape}, expected {shapes[internal]}"
            )
        check_finite(arr, f"state dict entry {key!r}")
        params[internal] = arr
    return params


def check_params(
    params: Mapping[str, np.ndarray], config: PrimalAttentionConfig
) -> dict[str, np.ndarray]:
    """``params`` as arrays if they fit ``config``: a ``KeyError`` listing missing and
    unexpected names, a ``TypeError`` for a non-mapping or a non-floating parameter, a
    ``ValueError`` for a wrong shape or a non-finite value, each naming the parameter."""
    return param_dict(
        params, param_shapes(config), f"{config.variant} layer", detail=f" for {config}"
    )


def save_state_dict(
    path, params: Mapping[str, np.ndarray], config: PrimalAttentionConfig, prefix: str = ""
) -> None:
    """Write the parameters under the authors' names to an ``.npz`` (no pickling).

    ``path``: a file path or a binary file object. A path whose directory does not exist
    or cannot be written raises the operating system's ``OSError``.
    """
    path_arg(path, "path", mode="w")
    np.savez(path, **to_state_dict(params, config, prefix))  # type: ignore[arg-type]  # stubs


def load_state_dict(path, config: PrimalAttentionConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """Read an ``.npz`` of the authors' names (e.g. saved from ``module.state_dict()`` as
    ``np.savez(path, **{k: v.numpy() for k, v in sd.items()})``) into internal params.
    Never unpickles; entries outside ``prefix`` are ignored.

    A missing file raises ``FileNotFoundError``; a file that is not a readable ``.npz`` of
    plain arrays (text, truncated, pickled objects) a ``ValueError`` naming it."""
    path_arg(path, "path", mode="r")
    _check_config(config)
    _check_prefix(prefix)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, expected an .npz of named arrays")
            state = {k: data[k] for k in data.files if k.startswith(prefix)}
    except FileNotFoundError:
        raise
    except ValueError as exc:  # "... pickled data ..." / "Object arrays cannot be loaded ..."
        raise ValueError(f"path {path}: not a readable .npz file of plain arrays ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"path {path}: not a readable .npz file ({exc})") from None
    return from_state_dict(state, config, prefix)
