"""KEP-SVGP attention: configuration, the authors' parameter names and shapes, initialisation.

The parameters are kept under the names of the authors' ``KEP_SVGPAttention`` state dict
(the KEP-SVGP repository, ``CIFAR/model/kep_svgp.py``; the ``IMDB/`` module is the same,
``CoLA/`` differs as noted), in their layouts, so ``to_state_dict`` / ``from_state_dict``
only add or strip a prefix and check shapes. D = H·p, s = low_rank, n sampled tokens:

| name | shape | symbol | initialisation (theirs) |
|---|---|---|---|
| ``qk.weight`` | (2D, D) | [W_q; W_k] | PyTorch ``nn.Linear`` default, U(±1/√D) |
| ``qk.bias`` | (2D,) | [b_q; b_k] (only with ``qk_bias``) | U(±1/√D) |
| ``proj.weight``, ``proj.bias`` | (D, D), (D,) | W_o, b_o — created, **not applied** by their forward (vision only) | U(±1/√D) |
| ``we``, ``wr`` | (H, n, s) | W_e, W_r | ``orthogonal_`` on the 3-D tensor |
| ``log_lambda_sqrt_inv_diag`` | (H, s) | ℓ, with Λ^{1/2} = diag(exp(ℓ)) | U(0, 1) |
| ``m_u`` | (1, H, s, s) | M_u: rows = inducing index a, columns = output c | N(0, 1) |
| ``s_sqrt_low_triangle`` | (1, H, s, s, s) | strictly lower parts of the factors | N(0, 1) |
| ``log_ssqrt`` | (1, H, s, s) | logs of the factors' diagonals | N(0, 1) |
| ``final_weight.weight``, ``.bias`` | (p, s), (p,) | W_f, b_f: the s → p map | U(±1/√s) |
| ``embed_len_weight.weight``, ``.bias`` | (N, 2N), (N,) | the 2N → N token map (only with ``concate``) | U(±1/√(2N)) |

Λ here is the code's: Λ = diag(exp(2ℓ)) weighs the KSVD loss's quadratic terms (½ eᵀΛe, the
Λ of Primal-Attention's J) and its inverse Σ = Λ⁻¹ = diag(exp(−2ℓ)) holds the singular
values (the KEP-SVGP paper calls the singular-value matrix Λ; docs/conformance.md). Their
ViT applies no re-initialisation, so the linears keep PyTorch's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._checks import boolean, choice, float_dtype, mapping, param_dict, positive_int
from .._checks import seed as _seed
from ..init import orthogonal, torch_linear_init, uniform_lambda
from ..sampling import lra_indices, torch_linspace_indices

__all__ = [
    "KEP_VARIANTS",
    "FACTOR_LAYOUTS",
    "KEPSVGPConfig",
    "kep_param_shapes",
    "init_kep_svgp_params",
    "kep_to_state_dict",
    "kep_from_state_dict",
    "check_kep_params",
    "kep_sample_indices",
    "noise_shape",
    "draw_noise",
]

KEP_VARIANTS = ("vision", "cola")
FACTOR_LAYOUTS = ("authors", "per_output")


@dataclass(frozen=True)
class KEPSVGPConfig:
    """Shape and options of one KEP-SVGP attention layer.

    Attributes:
        dim: D = H·p.
        num_heads: H.
        low_rank: s.
        rank_multi: m (n = s·m sampled tokens).
        embed_len: the N the layer is built for (their ``embed_len``); required for the
            vision variant, where n = min(embed_len, s·m) — evenly spaced tokens when
            embed_len > s·m, else all tokens in order — and for ``concate`` (the 2N → N
            map is built for it).
        variant: "vision" (their ``CIFAR/`` and ``IMDB/`` module: fused ``qk``, ``proj``
            created) or "cola" (``CoLA/``: a padding mask multiplies q and k before the
            cosine map, n = s·m always with repeated positions when N < n, no ``proj``,
            no concate).
        concate: V₁ = [E; R] Λ on 2N rows and the 2N → N token map after the s → p map
            (their ``--concate``); default V₁ = (E + R) Λ.
        qk_bias: bias on the fused ``qk`` projection (theirs: False).
        apply_proj: False = their forward (``proj`` built, its application commented
            out); True applies Y = O W_oᵀ + b_o, the usual output projection. Vision only.
        factor_layout: "authors" — their covariance factor: output c of head h uses
            M_c[a, r] = L[h, a, r, c] (docs/conformance.md); "per_output" — L[h, c] is the
            lower-triangular Cholesky factor of S_c over the inducing index, the noise is
            drawn independently per output, and the KL term is the exact Gaussian KL.
        authors_squeeze: True reproduces their ``.squeeze()`` on the noise term: shapes
            where their forward raises (a size-1 axis among (B, H, N, s) after one of
            size > 1) raise here too; where it runs the result is unchanged.
    """

    dim: int
    num_heads: int
    low_rank: int = 10
    rank_multi: int = 10
    embed_len: int | None = None
    variant: str = "vision"
    concate: bool = False
    qk_bias: bool = False
    apply_proj: bool = False
    factor_layout: str = "authors"
    authors_squeeze: bool = False

    def __post_init__(self) -> None:
        positive_int(self.dim, "dim")
        positive_int(self.num_heads, "num_heads")
        positive_int(self.low_rank, "low_rank")
        positive_int(self.rank_multi, "rank_multi")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        choice(self.variant, "variant", KEP_VARIANTS)
        choice(self.factor_layout, "factor_layout", FACTOR_LAYOUTS)
        for flag in ("concate", "qk_bias", "apply_proj", "authors_squeeze"):
            boolean(getattr(self, flag), flag)
        if self.embed_len is not None:
            positive_int(self.embed_len, "embed_len")
        if self.variant == "vision" and self.embed_len is None:
            raise ValueError(
                "the vision variant needs embed_len (N): n = min(embed_len, s·rank_multi) fixes "
                "the shapes of we and wr"
            )
        if self.variant == "cola" and (self.concate or self.apply_proj):
            raise ValueError(
                "the CoLA module has neither the concatenated variant nor a proj layer; "
                "use variant='vision' for concate or apply_proj"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_samples(self) -> int:
        """n, the second axis of we and wr."""
        n = self.low_rank * self.rank_multi
        if self.variant == "vision":
            assert self.embed_len is not None
            return min(self.embed_len, n)
        return n


def kep_sample_indices(config: KEPSVGPConfig, num_tokens: int) -> np.ndarray:
    """Positions of the rows of F for N = ``num_tokens`` tokens, as their ``gen_weights``.

    vision: torch.linspace(0, N − 1, s·m, dtype=int) when embed_len > s·m (the test is on
    the constructor's embed_len, not on N), else all N tokens in order; cola: the linspace
    always (positions repeat when N < s·m).
    """
    num_tokens = positive_int(num_tokens, "num_tokens")
    n = config.low_rank * config.rank_multi
    if config.variant == "cola":
        return lra_indices(num_tokens, config.low_rank, config.rank_multi)
    assert config.embed_len is not None
    if config.embed_len > n:
        return torch_linspace_indices(num_tokens, n)
    return np.arange(num_tokens, dtype=np.int64)


def noise_shape(config: KEPSVGPConfig, batch: int, num_tokens: int) -> tuple[int, ...]:
    """Shape of the standard-normal draw: (B, H, N', s, 1) in the authors' layout (their
    ``torch.randn``; N' = 2N with concate, else N), (B, H, N', s, s) with "per_output"
    (one independent s-vector per output). A token axis of 1 is accepted too (one draw shared
    by all tokens: a joint sample of the sequence, see ``posterior_sample``)."""
    n_rows = 2 * num_tokens if config.concate else num_tokens
    last = 1 if config.factor_layout == "authors" else config.low_rank
    return (batch, config.num_heads, n_rows, config.low_rank, last)


def draw_noise(
    rng: np.random.Generator | int,
    config: KEPSVGPConfig,
    batch: int,
    num_tokens: int,
    *,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Standard-normal noise of ``noise_shape`` from a Generator (or a seed)."""
    return generator(rng).standard_normal(noise_shape(config, batch, num_tokens)).astype(dtype)


def generator(rng: object) -> np.random.Generator:
    """``rng`` as a Generator: a Generator, or an int seed >= 0 (a named error otherwise)."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(_seed(rng, "rng"))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy Generator or an int seed, got {type(rng).__name__} {rng!r}"
        )
    return rng


def kep_param_shapes(config: KEPSVGPConfig) -> dict[str, tuple[int, ...]]:
    """The authors' state-dict name → shape for this configuration."""
    D, H, p, s, n = (
        config.dim,
        config.num_heads,
        config.head_dim,
        config.low_rank,
        config.num_samples,
    )
    shapes: dict[str, tuple[int, ...]] = {"qk.weight": (2 * D, D)}
    if config.qk_bias:
        shapes["qk.bias"] = (2 * D,)
    if config.variant == "vision":
        shapes.update({"proj.weight": (D, D), "proj.bias": (D,)})
    shapes.update(
        {
            "we": (H, n, s),
            "wr": (H, n, s),
            "log_lambda_sqrt_inv_diag": (H, s),
            "m_u": (1, H, s, s),
            "s_sqrt_low_triangle": (1, H, s, s, s),
            "log_ssqrt": (1, H, s, s),
            "final_weight.weight": (p, s),
            "final_weight.bias": (p,),
        }
    )
    if config.concate:
        assert config.embed_len is not None
        N = config.embed_len
        shapes.update({"embed_len_weight.weight": (N, 2 * N), "embed_len_weight.bias": (N,)})
    return shapes


def init_kep_svgp_params(
    config: KEPSVGPConfig, *, seed: int = 0, dtype: np.dtype | type = np.float64
) -> dict[str, np.ndarray]:
    """Seeded initialisation with the authors' distributions (table in the module docstring).

    NumPy's stream is not torch's: the distributions and layouts match, the numbers do not
    (load a torch state dict with ``kep_from_state_dict`` for exact values).
    """
    _check_config(config)
    dtype = float_dtype(dtype, "dtype")
    rng = np.random.default_rng(_seed(seed, "seed"))
    shapes = kep_param_shapes(config)
    params: dict[str, np.ndarray] = {}

    def lin(name: str, bias: bool) -> None:
        out_f, in_f = shapes[f"{name}.weight"]
        w, b = torch_linear_init(rng, in_f, out_f, bias=bias, dtype=dtype)
        params[f"{name}.weight"] = w
        if b is not None:
            params[f"{name}.bias"] = b

    lin("qk", config.qk_bias)
    if config.variant == "vision":
        lin("proj", True)
    params["we"] = orthogonal(rng, shapes["we"], dtype=dtype)
    params["wr"] = orthogonal(rng, shapes["wr"], dtype=dtype)
    params["log_lambda_sqrt_inv_diag"] = uniform_lambda(rng, shapes["log_lambda_sqrt_inv_diag"])
    for name in ("m_u", "s_sqrt_low_triangle", "log_ssqrt"):
        params[name] = rng.standard_normal(shapes[name])
    lin("final_weight", True)
    if config.concate:
        lin("embed_len_weight", True)
    return {k: np.asarray(params[k]).astype(dtype, copy=False) for k in shapes}


def _check_config(config: object) -> None:
    if not isinstance(config, KEPSVGPConfig):
        raise TypeError(f"config must be a KEPSVGPConfig, got {type(config).__name__}")


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {type(prefix).__name__} {prefix!r}")


def check_kep_params(params: Mapping[str, object], config: KEPSVGPConfig) -> dict[str, np.ndarray]:
    """``params`` as arrays if they fit ``config``: a ``KeyError`` listing missing and
    unexpected names, a ``TypeError`` for a non-mapping or a non-floating parameter, a
    ``ValueError`` for a wrong shape or a non-finite value, each naming the parameter."""
    _check_config(config)
    return param_dict(params, kep_param_shapes(config), "KEP-SVGP layer")


def kep_to_state_dict(
    params: Mapping[str, np.ndarray], config: KEPSVGPConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """The parameters under the authors' state-dict names (with ``prefix``), as copies."""
    check_kep_params(params, config)
    _check_prefix(prefix)
    return {prefix + k: np.array(params[k]) for k in kep_param_shapes(config)}


def kep_from_state_dict(
    state: Mapping[str, object], config: KEPSVGPConfig, prefix: str = ""
) -> dict[str, np.ndarray]:
    """The authors' state dict (entries under ``prefix``) → parameters.

    Every expected key must be present with its exact shape and no other key under
    ``prefix`` may appear (a concate checkpoint read with ``concate=False`` is an error);
    both are ``KeyError`` listing the names.
    """
    mapping(state, "state", "name → array")
    _check_config(config)
    _check_prefix(prefix)
    shapes = kep_param_shapes(config)
    ours = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(set(shapes) - set(ours))
    extra = sorted(set(ours) - set(shapes))
    if missing:
        raise KeyError(f"state dict is missing {[prefix + k for k in missing]}")
    if extra:
        raise KeyError(f"state dict has unexpected entries {[prefix + k for k in extra]}")
    params = {k: np.asarray(ours[k]) for k in shapes}
    check_kep_params(params, config)
    return params
