"""The KSVD loss that trains Primal-Attention, in the paper's and in each code convention.

For layer l, batch element b and head h (one KSVD problem each), with scores
e_{b,h,n}, r_{b,h,n} ∈ R^s and λ_h ∈ R^s:

    j_{b,h} = red_n q(e_{b,h,n}) + red_n q(r_{b,h,n}) − T_{b,h}

* quadratic q: "lambda_sq" — ½‖λ_h ⊙ e‖² (the authors' code: λ plays Λ^{1/2});
  "Lambda" — ½ eᵀ diag(λ_h) e (the paper's ½ eᵀΛe).
* token reduction red_n: "mean" (code) or "sum" (paper).
* trace T: "params" — Tr(W_{e,h}ᵀ W_{r,h}) on the parameters (code flag ``trace_no_x``;
  the paper's); "data" — Tr(W_{e|X}ᵀ W_{r|X}) on the data-dependent weights of (b, h)
  (the LRA argument parser's default). With data-independent weights both are the same.
* where the square goes:
  "batch"   — L_l = (mean_{b,h} j_{b,h})²                (LRA, vision: mean inside the square)
  "sample"  — L_l = reduce_b (mean_h j_{b,h})²            (time series, RL, language model)
  "problem" — L_l = reduce_{b,h} j_{b,h}²                 (each sequence and head its own J)
  with ``outer`` = "mean" or "sum" for reduce.
* layers: L = mean_l L_l (code) or Σ_l L_l (paper).

Presets (``CONVENTIONS``): "lra" (= "vision"): lambda_sq, mean, params, batch, layer mean;
"lra_trace_x": the same with the trace on the data-dependent weights; "per_sample":
lambda_sq, mean, params, sample (mean over b), layer mean; "paper": Lambda, sum, params,
problem (sum over b, h), layer sum; "kep_svgp": as "vision" but summed over layers (KEP-SVGP
passes λ = exp(ℓ), see ``primal_np.kep_svgp.loss``). The total loss is task + η·L.

Equivalence (docs/theory.md §5; docs/conformance.md, discrepancies 1–2): mean_n ½‖λ⊙e_n‖² = ½ Σ_n e_nᵀ Λ' e_n with
Λ' = diag(λ²)/N, so the code's j equals the paper's J with Λ_paper = λ²/N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ._checks import cache_of, check_finite, choice, float_array, real_number

__all__ = [
    "KSVDConvention",
    "CONVENTIONS",
    "get_convention",
    "KSVDTerms",
    "KSVDGrads",
    "KSVDLossGrads",
    "check_ksvd_grads",
    "ksvd_terms_from_cache",
    "ksvd_loss",
    "ksvd_loss_backward",
]


@dataclass(frozen=True)
class KSVDConvention:
    quadratic: str = "lambda_sq"  # "lambda_sq" | "Lambda"
    tokens: str = "mean"  # "mean" | "sum"
    trace: str = "params"  # "params" | "data"
    square: str = "batch"  # "batch" | "sample" | "problem"
    outer: str = "mean"  # "mean" | "sum"   (over b for "sample", over (b, h) for "problem")
    layers: str = "mean"  # "mean" | "sum"

    def __post_init__(self) -> None:
        allowed = {
            "quadratic": ("lambda_sq", "Lambda"),
            "tokens": ("mean", "sum"),
            "trace": ("params", "data"),
            "square": ("batch", "sample", "problem"),
            "outer": ("mean", "sum"),
            "layers": ("mean", "sum"),
        }
        for field, options in allowed.items():
            choice(getattr(self, field), f"KSVDConvention.{field}", options)


CONVENTIONS = {
    "lra": KSVDConvention(),
    "vision": KSVDConvention(),
    "lra_trace_x": KSVDConvention(trace="data"),
    "per_sample": KSVDConvention(square="sample"),
    "paper": KSVDConvention(
        quadratic="Lambda", tokens="sum", square="problem", outer="sum", layers="sum"
    ),
    # KEP-SVGP's train.py: as "vision" with λ = exp(ℓ) (primal_np.kep_svgp), summed over layers
    "kep_svgp": KSVDConvention(layers="sum"),
}


def get_convention(
    convention: str | KSVDConvention, *, trace_no_x: bool | None = None
) -> KSVDConvention:
    """A preset by name (see ``CONVENTIONS``) or a ``KSVDConvention``; ``trace_no_x`` overrides the trace."""
    if isinstance(convention, str):
        if convention not in CONVENTIONS:
            raise ValueError(
                f"unknown KSVD convention {convention!r}; presets: {', '.join(CONVENTIONS)}"
            )
        convention = CONVENTIONS[convention]
    if not isinstance(convention, KSVDConvention):
        raise TypeError(
            f"convention must be a preset name or a KSVDConvention, got {type(convention).__name__}"
        )
    if trace_no_x is not None and not isinstance(trace_no_x, (bool, np.bool_)):
        raise TypeError(f"trace_no_x must be True, False or None, got {trace_no_x!r}")
    if trace_no_x is not None:
        convention = replace(convention, trace="params" if trace_no_x else "data")
    return convention


class KSVDTerms(NamedTuple):
    """What one layer contributes to the loss."""

    escore: np.ndarray  # (B, H, N, s)
    rscore: np.ndarray  # (B, H, N, s)
    lam: np.ndarray  # (H, s)
    we: np.ndarray  # (H, n, s) or (H, p, s) parameters
    wr: np.ndarray
    we_x: np.ndarray | None = None  # (B, H, p, s) data-dependent weights, if any
    wr_x: np.ndarray | None = None


class KSVDGrads(NamedTuple):
    """One layer's KSVD-loss gradients, named like the fields of ``KSVDTerms``."""

    escore: np.ndarray
    rscore: np.ndarray
    lam: np.ndarray
    we: np.ndarray
    wr: np.ndarray
    we_x: np.ndarray | None  # None when the trace is on the parameters
    wr_x: np.ndarray | None


class KSVDLossGrads(NamedTuple):
    """Gradients of ``ksvd_loss``: one ``KSVDGrads`` per entry of its ``layers`` argument.

    Pass ``layers[i]`` to ``primal_attention_backward(..., ksvd_grads=...)`` of layer i,
    which adds every part where it belongs.
    """

    layers: tuple[KSVDGrads, ...]


def ksvd_terms_from_cache(cache) -> KSVDTerms:
    """The KSVD inputs of a ``primal_attention`` forward (its ``PrimalCache``, or the fast
    path's ``FastPrimalCache``): E, R, λ, W_e, W_r and W_{e|X}, W_{r|X}."""
    from .fast.layer import FastPrimalCache
    from .layer import PrimalCache

    cache_of(cache, (PrimalCache, FastPrimalCache), "primal_attention or fast_primal_attention")
    P = cache.params
    return KSVDTerms(cache.escore, cache.rscore, P["lam"], P["we"], P["wr"], cache.we_x, cache.wr_x)


def check_ksvd_grads(kg: object, cache) -> KSVDGrads | None:
    """``kg`` (None or one layer's ``KSVDGrads``) checked against that layer's forward cache:
    every array present, floating, with the shape of what it is the gradient of, and finite."""
    if kg is None:
        return None
    if not isinstance(kg, KSVDGrads):
        raise TypeError(
            "ksvd_grads must be one layer's KSVDGrads (an entry of ksvd_loss_backward(...).layers), "
            f"got {type(kg).__name__}"
        )
    t = ksvd_terms_from_cache(cache)
    for name in KSVDGrads._fields:
        ref, got = getattr(t, name), getattr(kg, name)
        if got is None:
            if name in ("we_x", "wr_x"):
                continue
            raise ValueError(
                f"ksvd_grads.{name} is None; expected an array of shape {np.shape(ref)}"
            )
        if ref is None:
            raise ValueError(
                f"ksvd_grads.{name} is given but the layer has data-independent weights (no {name})"
            )
        got = float_array(got, f"ksvd_grads.{name}")
        if got.shape != np.shape(ref):
            raise ValueError(
                f"ksvd_grads.{name} has shape {got.shape}, expected {np.shape(ref)} (the layer's {name})"
            )
        check_finite(got, f"ksvd_grads.{name}")
    return kg


def _quad(scores: np.ndarray, lam: np.ndarray, conv: KSVDConvention) -> np.ndarray:
    """red_n q(score) per (b, h): (B, H)."""
    w = lam**2 if conv.quadratic == "lambda_sq" else lam  # (H, s)
    per_token = 0.5 * np.einsum("bhns,hs->bhn", scores * scores, w)
    return per_token.mean(axis=-1) if conv.tokens == "mean" else per_token.sum(axis=-1)


def _trace(t: KSVDTerms, conv: KSVDConvention, B: int) -> tuple[np.ndarray, bool]:
    """T_{b,h} (B, H) and whether it is taken on the data-dependent weights."""
    if conv.trace == "data" and t.we_x is not None and t.wr_x is not None:
        return np.einsum("bhps,bhps->bh", t.we_x, t.wr_x), True
    per_head = np.einsum("hns,hns->h", t.we, t.wr)
    return np.broadcast_to(per_head, (B, per_head.shape[0])), False


class _LayerCache(NamedTuple):
    terms: KSVDTerms
    j: np.ndarray  # (B, H)
    on_data: bool


class KSVDLossCache(NamedTuple):
    convention: KSVDConvention
    layers: list
    per_layer: np.ndarray  # L_l


def _check_terms(t: object, i: int) -> KSVDTerms:
    """Layer i's terms as floating, finite arrays of consistent shapes, else a named error."""
    if not isinstance(t, KSVDTerms):
        raise TypeError(
            f"layers[{i}] must be a KSVDTerms (e.g. ksvd_terms_from_cache(cache)), got {type(t).__name__}"
        )
    arrs: dict[str, np.ndarray | None] = {}
    for name in KSVDTerms._fields:
        v = getattr(t, name)
        if v is None and name in ("we_x", "wr_x"):
            arrs[name] = None
            continue
        v = float_array(v, f"layers[{i}].{name}")
        check_finite(v, f"layers[{i}].{name}")
        arrs[name] = v
    t = KSVDTerms(**arrs)  # type: ignore[arg-type]  # escore … wr are arrays, checked above
    if t.escore.ndim != 4 or t.escore.shape != t.rscore.shape:
        raise ValueError(
            f"layers[{i}]: escore and rscore must both be (B, H, N, s); got {t.escore.shape}, {t.rscore.shape}"
        )
    B, H, N, s = t.escore.shape
    if t.lam.shape != (H, s):
        raise ValueError(f"layers[{i}].lam must be (H, s) = {(H, s)}, got {t.lam.shape}")
    if t.we.ndim != 3 or t.we.shape != t.wr.shape or t.we.shape[0] != H or t.we.shape[2] != s:
        raise ValueError(
            f"layers[{i}]: we, wr must both be (H, n, s) with H = {H}, s = {s}; got {t.we.shape}, {t.wr.shape}"
        )
    if (t.we_x is None) != (t.wr_x is None):
        raise ValueError(f"layers[{i}]: we_x and wr_x must be given together (or both None)")
    if t.we_x is not None and t.wr_x is not None:
        p = t.we_x.shape[2] if t.we_x.ndim == 4 else None
        if t.we_x.shape != (B, H, p, s) or t.wr_x.shape != t.we_x.shape:
            raise ValueError(
                f"layers[{i}]: we_x, wr_x must both be (B, H, p, s) with B, H, s = {B}, {H}, {s}; "
                f"got {t.we_x.shape}, {t.wr_x.shape}"
            )
    return t


def ksvd_loss(
    layers: Sequence[KSVDTerms],
    convention: str | KSVDConvention = "lra",
    *,
    trace_no_x: bool | None = None,
) -> tuple[float, KSVDLossCache]:
    """The KSVD loss over the primal layers (multiply by η and add to the task loss).

    Returns (loss, cache); ``cache.per_layer`` holds each layer's L_l.
    """
    conv = get_convention(convention, trace_no_x=trace_no_x)
    if isinstance(layers, (KSVDTerms, str)) or not isinstance(layers, Sequence):
        raise TypeError(
            "layers must be a list of KSVDTerms, one per primal layer, e.g. [terms]; got "
            f"{type(layers).__name__}"
        )
    if len(layers) == 0:
        raise ValueError(f"layers must hold at least one layer's terms, got {layers!r}")
    caches, per_layer = [], []
    for i, t in enumerate(layers):
        t = _check_terms(t, i)
        B = t.escore.shape[0]
        T, on_data = _trace(t, conv, B)
        j = _quad(t.escore, t.lam, conv) + _quad(t.rscore, t.lam, conv) - T
        if conv.square == "batch":
            L = j.mean() ** 2
        elif conv.square == "sample":
            sq = j.mean(axis=1) ** 2
            L = sq.mean() if conv.outer == "mean" else sq.sum()
        else:
            sq = j**2
            L = sq.mean() if conv.outer == "mean" else sq.sum()
        caches.append(_LayerCache(t, j, on_data))
        per_layer.append(L)
    per = np.asarray(per_layer, dtype=np.float64)
    loss = per.mean() if conv.layers == "mean" else per.sum()
    return float(loss), KSVDLossCache(conv, caches, per)


def ksvd_loss_backward(dloss: float, cache: KSVDLossCache) -> KSVDLossGrads:
    """Gradients of dloss·L: ``KSVDLossGrads(layers)``, one ``KSVDGrads`` (escore, rscore,
    lam, we, wr, we_x, wr_x) per layer, in the dtype of that layer's scores.

    With g = ∂L/∂j_{b,h} (from the square and the reductions)::

        ∂/∂e_{b,h,n,l} = g·w_n·c_l·e_{b,h,n,l},   c = λ² ("lambda_sq") or λ ("Lambda"),
                                                   w_n = 1/N ("mean") or 1 ("sum")
        ∂/∂λ_{h,l} = Σ_b g·w·Σ_n (λ_l e² or ½e²) (+ the same for r)
        ∂/∂W_{e,h} = −(Σ_b g) W_{r,h}  (trace on params) or ∂/∂W_{e|X,b,h} = −g W_{r|X,b,h}

    we_x/wr_x entries are None when the trace is on the parameters.
    """
    cache_of(cache, KSVDLossCache, "ksvd_loss")
    conv = cache.convention
    dloss = real_number(dloss, "dloss")
    nl = len(cache.layers)
    dlayer = dloss / nl if conv.layers == "mean" else dloss
    out = []
    for lc in cache.layers:
        t, j = lc.terms, lc.j
        B, H, N, s = t.escore.shape
        if conv.square == "batch":
            g = np.full((B, H), 2.0 * j.mean() / (B * H))
        elif conv.square == "sample":
            scale = 1.0 / B if conv.outer == "mean" else 1.0
            g = np.broadcast_to((2.0 * j.mean(axis=1) * scale / H)[:, None], (B, H)).copy()
        else:
            scale = 1.0 / (B * H) if conv.outer == "mean" else 1.0
            g = 2.0 * j * scale
        g *= dlayer
        w = 1.0 / N if conv.tokens == "mean" else 1.0
        dt = t.escore.dtype
        coef = t.lam**2 if conv.quadratic == "lambda_sq" else t.lam  # (H, s)
        # the small (B, H, 1, s) factor g·w·c first, in the scores' dtype, so that no
        # full-size float64 temporary is formed for float32 scores
        fac = ((g * w)[:, :, None, None] * coef[None, :, None, :]).astype(dt)
        d_e = fac * t.escore
        d_r = fac * t.rscore
        sq = np.einsum("bhns->bhs", t.escore**2) + np.einsum("bhns->bhs", t.rscore**2)
        per_l = t.lam[None] * sq if conv.quadratic == "lambda_sq" else 0.5 * sq
        d_lam = np.einsum("bh,bhs->hs", g * w, per_l).astype(dt)
        if lc.on_data:
            neg_g = (-g).astype(dt)[:, :, None, None]
            d_we_x = neg_g * t.wr_x
            d_wr_x = neg_g * t.we_x
            d_we, d_wr = np.zeros_like(t.we), np.zeros_like(t.wr)
        else:
            gh = g.sum(axis=0).astype(dt)[:, None, None]  # (H, 1, 1)
            d_we, d_wr = -gh * t.wr, -gh * t.we
            d_we_x = d_wr_x = None
        out.append(KSVDGrads(d_e, d_r, d_lam, d_we.astype(dt), d_wr.astype(dt), d_we_x, d_wr_x))
    return KSVDLossGrads(tuple(out))
