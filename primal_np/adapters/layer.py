"""Adapter spec of the authors' Primal-Attention layer with its KSVD loss: ``check_primal_attention``.

The candidate works on the authors' state dict (docs/conformance.md names and layouts, plain
NumPy arrays), so that the authors' own PyTorch modules can be wrapped as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..compare import ATOL, DEFAULT_K
from ..ksvd_loss import ksvd_loss, ksvd_terms_from_cache
from ..layer import primal_attention
from ..objective import layer_objective
from ..params import (
    PrimalAttentionConfig,
    from_state_dict,
    init_primal_attention_params,
    to_state_dict,
)
from .core import OPS, AdapterReport, Arrays, OpSpec, check_callable, register_op
from .loss import KSVD_FLOOR_EPS, well_conditioned_lambda

__all__ = ["LayerPoint", "PRIMAL_ATTENTION_GRID", "check_primal_attention"]

_CONVENTION = {"lra": "lra", "vision": "vision", "causal": "per_sample"}


@dataclass(frozen=True)
class LayerPoint:
    """One grid point: x (batch, tokens, dim) and a layer of ``variant``.

    Parameters: ``init_primal_attention_params(..., linear_init="torch")`` (PyTorch's
    default linears for every variant, so every gradient is O(1)) under the authors'
    names, with Λ scaled up per head where needed so that the KSVD loss is well
    conditioned (``adapters.loss.well_conditioned_lambda``). ``mask`` (lra only): the
    last sequence's final max(1, N // 3) tokens are padding. ``eta`` weighs the KSVD
    loss in the backward's objective. ``feature_map`` (any registered name) and
    ``data_dependent`` (None: the variant's default) configure the layer like
    ``PrimalAttentionConfig``.
    """

    variant: str
    tokens: int
    batch: int = 2
    dim: int = 8
    heads: int = 2
    rank: int = 2
    rank_multi: int = 3
    trace_no_x: bool = True
    mask: bool = False
    qk_bias: bool = False
    eta: float = 0.5
    feature_map: str = "cosine"
    data_dependent: bool | None = None

    def config(self) -> PrimalAttentionConfig:
        return PrimalAttentionConfig(
            dim=self.dim,
            num_heads=self.heads,
            low_rank=self.rank,
            rank_multi=self.rank_multi,
            variant=self.variant,
            qk_bias=self.qk_bias,
            num_tokens=self.tokens if self.variant == "vision" else None,
            feature_map=self.feature_map,
            data_dependent=self.data_dependent,
        )

    def __str__(self) -> str:
        cfg = self.config()
        s = f"{self.variant} B={self.batch} N={self.tokens} D={self.dim} H={self.heads} s={self.rank}"
        if cfg.data_dependent:
            s += f" n={cfg.num_samples}" + (" qk_bias" if self.qk_bias else "")
            s += " trace_no_x" if self.trace_no_x else " trace_x"
        elif self.variant != "causal":
            s += " data-independent"
        if self.feature_map != "cosine":
            s += f" φ={self.feature_map}"
        return s + (" mask" if self.mask else "")


PRIMAL_ATTENTION_GRID = (
    LayerPoint("lra", 11, mask=True),  # n = 6 < N
    LayerPoint("lra", 11, mask=True, trace_no_x=False),
    LayerPoint("lra", 5, mask=True),  # N < n = 6: indices repeat
    LayerPoint("lra", 5, batch=3, trace_no_x=False),
    # N = 31, n = 27: torch's two-sided linspace gives index 15 at i = 13,
    # np.linspace(0, 30, 27).astype(int) gives 14 (docs/conformance.md, discrepancy 5)
    LayerPoint("lra", 31, rank=3, rank_multi=9, mask=True),
    LayerPoint("vision", 7, rank_multi=4),  # N ≤ s·m: all tokens, in order
    LayerPoint("vision", 6, qk_bias=True, trace_no_x=False),
    LayerPoint("vision", 13, rank_multi=2),  # N > s·m = 4: evenly spaced tokens
    LayerPoint("causal", 9),
    LayerPoint("causal", 6, batch=3, dim=12, heads=3, rank=4),  # s = p
)


def config_dict(cfg: PrimalAttentionConfig, trace_no_x: bool) -> dict:
    """What the candidate is told about the layer (the keys of a golden layer case's config)."""
    return {
        "variant": cfg.variant,
        "dim": cfg.dim,
        "num_heads": cfg.num_heads,
        "head_dim": cfg.head_dim,
        "low_rank": cfg.low_rank,
        "rank_multi": cfg.rank_multi,
        "num_samples": cfg.num_samples,
        "data_dependent": cfg.data_dependent,
        "qk_bias": cfg.qk_bias,
        "trace_no_x": trace_no_x,
        "feature_map": cfg.feature_map,
        "feature_seed": cfg.feature_seed,
    }


def _draw_layer(pt: LayerPoint, rng: np.random.Generator) -> tuple[Arrays, dict]:
    cfg = pt.config()
    params = init_primal_attention_params(cfg, seed=int(rng.integers(2**31)), linear_init="torch")
    x = rng.standard_normal((pt.batch, pt.tokens, pt.dim))
    mask = None
    if pt.mask:
        mask = np.ones((pt.batch, pt.tokens), dtype=bool)
        mask[-1, pt.tokens - max(1, pt.tokens // 3) :] = False
    _, cache = primal_attention(x, params, cfg, mask=mask)
    conv = _CONVENTION[cfg.variant] if pt.trace_no_x else "lra_trace_x"
    params["lam"] = well_conditioned_lambda(ksvd_terms_from_cache(cache), conv)
    tensors = {"x": x} | to_state_dict(params, cfg)
    options = {
        "cfg": cfg,
        "config": config_dict(cfg, pt.trace_no_x),
        "mask": mask,
        "eta": pt.eta,
        "trace_no_x": pt.trace_no_x,
    }
    return tensors, options


def _layer_reference(t: Arrays, o: dict) -> tuple[Arrays, Callable[[Arrays], Arrays]]:
    cfg, mask = o["cfg"], o["mask"]
    conv, trace_no_x = _CONVENTION[cfg.variant], o["trace_no_x"]
    params = from_state_dict({n: a for n, a in t.items() if n != "x"}, cfg)
    y, cache = primal_attention(t["x"], params, cfg, mask=mask)
    loss, _ = ksvd_loss([ksvd_terms_from_cache(cache)], conv, trace_no_x=trace_no_x)
    outs = {"out": y, "escore": cache.escore, "rscore": cache.rscore}
    outs["ksvd_loss"] = np.asarray(loss, dtype=y.dtype)

    def vjp(cot: Arrays) -> Arrays:
        r = layer_objective(
            t["x"], params, cfg, cotangent=cot["out"], eta=o["eta"], convention=conv,
            trace_no_x=trace_no_x, mask=mask,
        )  # fmt: skip
        return {"x": r.dx} | to_state_dict(r.grads, cfg)

    return outs, vjp


def _state_dict(t: Arrays) -> dict[str, np.ndarray]:
    return {n: a for n, a in t.items() if n != "x"}


def _call_layer(fn: Callable, t: Arrays, o: dict) -> Arrays:
    outs = fn(t["x"], _state_dict(t), o["mask"], dict(o["config"]))
    if not isinstance(outs, Mapping):
        raise TypeError(
            f"fn must return a dict with 'out', 'escore', 'rscore'; got {type(outs).__name__}"
        )
    return dict(outs)


def _call_layer_backward(bwd: Callable, t: Arrays, o: dict, cot: Arrays) -> Arrays:
    grads = bwd(t["x"], _state_dict(t), o["mask"], dict(o["config"]), cot["out"], o["eta"])
    if not isinstance(grads, Mapping):
        raise TypeError(
            f"backward must return a dict keyed by 'x' and the state-dict names; got {type(grads).__name__}"
        )
    return dict(grads)


register_op(
    OpSpec(
        "primal_attention",
        PRIMAL_ATTENTION_GRID,
        _draw_layer,
        _call_layer,
        _call_layer_backward,
        _layer_reference,
        cotangents=("out",),
        optional=("ksvd_loss",),
        floor_eps=KSVD_FLOOR_EPS,  # the loss's single rounding sample (adapters.loss)
    )
)


def check_primal_attention(
    fn: Callable,
    *,
    backward: Callable | None = None,
    grid: Sequence[LayerPoint] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    k: float = DEFAULT_K,
    seed: int = 0,
    atol: float = ATOL,
) -> AdapterReport:
    """Check a Primal-Attention layer, with its KSVD loss, against ``primal_np`` (docs/conformance.md).

    ``fn(x, state_dict, mask, config) -> dict``:

    - ``x`` (B, N, D) layer input;
    - ``state_dict``: the authors' names and layouts (docs/conformance.md; LRA ``W_q.weight``,
      ..., ``We``, ``attn.Lambda``, ``ff.bias``; vision ``qk.weight``, ``we``, ``Lambda``,
      ``proj.weight``, ...; causal ``query_projection.weight``, ..., ``out_projection.bias``),
      NumPy arrays in the checked precision: load them into the authors' module;
    - ``mask``: None, or (lra only) boolean (B, N), True = real token (the authors' code
      takes it as float 1/0);
    - ``config``: a dict with ``variant`` ("lra", "vision", "causal"), ``dim``,
      ``num_heads``, ``head_dim``, ``low_rank``, ``rank_multi``, ``num_samples`` (n),
      ``data_dependent``, ``qk_bias`` and ``trace_no_x`` — the keys of a golden layer
      case's config, so one candidate serves both ways of checking.

    The dict holds ``"out"`` (B, N, D), ``"escore"`` and ``"rscore"`` (B, H, N, s); a
    ``"ksvd_loss"`` entry, if present, is checked too; other entries are ignored.

    ``backward(x, state_dict, mask, config, dout, eta) -> dict``, optional: the gradients
    of Σ⟨dout, out⟩ + η·ksvd_loss with respect to ``x`` (key ``"x"``) and every
    state-dict entry (its own name), where ksvd_loss is this layer's loss as the
    authors' code computes it: the batch-mean loss for lra and vision, with the trace on
    the parameters if ``config["trace_no_x"]`` and on the data-dependent weights
    otherwise (``primal_np.ksvd_loss`` conventions "lra" / "lra_trace_x"), and the
    per-sample loss for causal ("per_sample"); one layer, so L = 1. Arrays are reported
    as ``output.out``, ``grad.x``, ``grad.attn.Lambda``, ...

    Default grid: ``PRIMAL_ATTENTION_GRID`` (lra with both traces, a padding mask,
    N < n with repeated indices, and an (N, n) where ``np.linspace(...).astype(int)``
    differs from torch's index formula; vision with fused qk, all tokens or sampled,
    qk bias on and off; causal with the per-sample loss, s < p and s = p). See
    ``check_callable`` for the other arguments.
    """
    return check_callable(
        OPS["primal_attention"], fn, backward=backward, grid=grid, dtypes=dtypes, k=k, seed=seed,
        atol=atol,
    )  # fmt: skip
