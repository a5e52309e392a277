"""A small pre-LN Transformer with canonical or primal attention per layer: an encoder
classifier, or (``cfg.causal``) a decoder for next-token prediction.

    x⁰ = E[ids] + P                                   (learned or sinusoidal positions)
    xˡ = xˡ⁻¹ + Attnˡ(LN₁ˡ(xˡ⁻¹));  xˡ ← xˡ + MLPˡ(LN₂ˡ(xˡ))
    classifier:  logits = pool(LN_f(x^L)) W_hᵀ + b_h            (B, C)
    decoder:     logits_t = LN_f(x^L)_t W_hᵀ + b_h               (B, N, V), causal attention
    loss = CE(logits, labels) + η · KSVD(primal layers)          (decoder: mean CE over the
                                                                   scored positions)

Everything is a forward/backward pair built from primal_np's ops; ``loss_and_grads``
returns the loss, its parts and the gradient of every parameter. Parameters are a
flat dict with dotted names: ``embed``, ``pos``, ``layers.<i>.ln1.weight``,
``layers.<i>.attn.<name>``, ``layers.<i>.mlp.fc1.weight``, …, ``ln_f.*``, ``head.*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from .._checks import float_dtype
from ..fast import primal_attention_impl
from ..ksvd_loss import KSVDGrads, ksvd_loss, ksvd_loss_backward, ksvd_terms_from_cache
from ..mha import init_mha_params, mha_attention, mha_attention_backward
from ..nn.embedding import (
    embedding,
    embedding_backward,
    learned_positional,
    learned_positional_backward,
    sinusoidal_positions,
)
from ..nn.losses import (
    cross_entropy,
    cross_entropy_backward,
    token_cross_entropy,
    token_cross_entropy_backward,
)
from ..nn.mlp import init_mlp_params, mlp, mlp_backward
from ..nn.norm import layer_norm, layer_norm_backward
from ..nn.pooling import cls_pool, cls_pool_backward, mean_pool, mean_pool_backward
from ..params import init_primal_attention_params
from ..primitives import linear, linear_backward
from .config import ModelConfig

__all__ = [
    "init_model_params",
    "ModelCache",
    "model_forward",
    "model_backward",
    "ModelGrads",
    "model_loss",
    "LossAndGrads",
    "loss_and_grads",
    "raised_in",
]


@contextmanager
def _located(part: str) -> Iterator[None]:
    """Record in which part of the model a ValueError or FloatingPointError arose (an
    overflow under ``np.errstate(over="raise")``, or an op refusing a non-finite
    intermediate): the innermost part wins, read back by ``raised_in``, and a note
    names it in the traceback."""
    try:
        yield
    except (ValueError, ArithmeticError) as exc:
        if raised_in(exc) is None:
            setattr(exc, "primal_np_model_part", part)  # noqa: B010
            exc.add_note(f"raised in {part}")
        raise


def raised_in(exc: BaseException) -> str | None:
    """The model part (``"layers.1 (primal attention)"``, ``"logits"``, …) whose forward or
    backward raised ``exc``, if it came from ``model_forward``, ``model_backward`` or
    ``loss_and_grads``; else None."""
    return getattr(exc, "primal_np_model_part", None)


def init_model_params(
    cfg: ModelConfig, *, seed: int = 0, dtype=np.float64
) -> dict[str, np.ndarray]:
    """Seeded parameters. Token and learned position embeddings N(0, 1) (PyTorch's
    ``nn.Embedding`` default, as the LRA code's); LayerNorm (1, 0); attention and MLP as
    their own initialisers; head PyTorch-default."""
    dtype = float_dtype(dtype, "dtype")
    rng = np.random.default_rng(seed)
    D = cfg.dim
    p: dict[str, np.ndarray] = {"embed": rng.standard_normal((cfg.vocab_size, D)).astype(dtype)}
    if cfg.positions == "learned":
        p["pos"] = rng.standard_normal((cfg.max_len, D)).astype(dtype)
    for i, kind in enumerate(cfg.attention):
        sub = int(rng.integers(2**31))
        for ln in ("ln1", "ln2"):
            p[f"layers.{i}.{ln}.weight"] = np.ones(D, dtype)
            p[f"layers.{i}.{ln}.bias"] = np.zeros(D, dtype)
        attn = (
            init_primal_attention_params(cfg.primal_config(), seed=sub, dtype=dtype)
            if kind == "primal"
            else init_mha_params(D, seed=sub, dtype=dtype)
        )
        p.update({f"layers.{i}.attn.{k}": v for k, v in attn.items()})
        p.update(
            {
                f"layers.{i}.mlp.{k}": v
                for k, v in init_mlp_params(D, cfg.mlp_hidden, seed=sub + 1, dtype=dtype).items()
            }
        )
    p["ln_f.weight"], p["ln_f.bias"] = np.ones(D, dtype), np.zeros(D, dtype)
    bound = 1.0 / np.sqrt(D)
    p["head.weight"] = rng.uniform(-bound, bound, (cfg.num_classes, D)).astype(dtype)
    p["head.bias"] = rng.uniform(-bound, bound, cfg.num_classes).astype(dtype)
    return p


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


class _LayerCache(NamedTuple):
    kind: str
    ln1: Any
    attn: Any
    ln2: Any
    mlp: Any
    attn_backward: Any  # the backward matching the attention forward that ran


class ModelGrads(NamedTuple):
    params: dict[str, np.ndarray]  # keyed like the model's parameters


class ModelCache(NamedTuple):
    cfg: ModelConfig
    emb: Any
    pos: Any
    layers: list
    ln_f: Any
    pool: Any
    head: Any
    outputs: list  # per layer: the residual stream after the layer (for diagnostics)


def model_forward(
    params: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, cfg: ModelConfig
) -> tuple[np.ndarray, ModelCache]:
    """Logits for token ids (B, N) with padding mask (B, N), True = real: (B, num_classes)
    for a classifier, (B, N, num_classes) for a decoder (``cfg.causal``)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] > cfg.max_len:
        raise ValueError(
            f"ids must be (B, N) with N <= max_len = {cfg.max_len}, got shape {ids.shape}"
        )
    x, emb = embedding(ids, params["embed"])
    pos = None
    if cfg.positions == "learned":
        x, pos = learned_positional(x, params["pos"])
    else:
        x = x + sinusoidal_positions(ids.shape[1], cfg.dim, dtype=x.dtype)
    layers, outputs = [], []
    for i, kind in enumerate(cfg.attention):
        with _located(f"layers.{i} ({kind} attention)"):
            x, lc = _layer_forward(params, x, mask, cfg, i, kind)
        layers.append(lc)
        outputs.append(x)
    with _located("logits"):  # final LayerNorm, pooling and head
        h, ln_f = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
        pool: Any = None
        if not cfg.causal:
            h, pool = mean_pool(h, mask) if cfg.pooling == "mean" else cls_pool(h)
        logits, head = linear(h, params["head.weight"], params["head.bias"])
    return logits, ModelCache(cfg, emb, pos, layers, ln_f, pool, head, outputs)


def _layer_forward(
    params: dict, x: np.ndarray, mask: np.ndarray, cfg: ModelConfig, i: int, kind: str
) -> tuple[np.ndarray, _LayerCache]:
    """x ← x + Attn(LN₁(x)); x ← x + MLP(LN₂(x)) for layer i."""
    pre = f"layers.{i}."
    h, ln1 = layer_norm(x, params[pre + "ln1.weight"], params[pre + "ln1.bias"])
    ap = _sub(params, pre + "attn.")
    if kind == "primal":  # the causal variant takes no padding mask: its rows are causal
        fwd, bwd, _ = primal_attention_impl(cfg.primal_config())
        a, ac = fwd(h, ap, cfg.primal_config(), mask=None if cfg.causal else mask)
    else:
        a, ac = mha_attention(h, ap, num_heads=cfg.num_heads, padding_mask=mask, causal=cfg.causal)
        bwd = mha_attention_backward
    x = x + a
    h, ln2 = layer_norm(x, params[pre + "ln2.weight"], params[pre + "ln2.bias"])
    m, mc = mlp(h, _sub(params, pre + "mlp."))
    return x + m, _LayerCache(kind, ln1, ac, ln2, mc, bwd)


def model_backward(
    dlogits: np.ndarray, cache: ModelCache, ksvd_grads: dict[int, KSVDGrads] | None = None
) -> ModelGrads:
    """Gradients of every parameter, the forward's steps in reverse. ``ksvd_grads`` maps a
    primal layer's index to its ``KSVDGrads`` (from ``ksvd_loss_backward``), which that
    layer's backward adds where the KSVD loss enters."""
    cfg = cache.cfg
    ksvd_grads = ksvd_grads or {}
    g: dict[str, np.ndarray] = {}
    with _located("the backward pass of the logits"):
        gh = linear_backward(dlogits, cache.head)  # logits = pooled W_hᵀ + b_h
        assert gh.bias is not None
        g["head.weight"], g["head.bias"] = gh.weight, gh.bias
        dh = gh.x
        if not cfg.causal:
            pool_bwd = mean_pool_backward if cfg.pooling == "mean" else cls_pool_backward
            dh = pool_bwd(dh, cache.pool).x
        gl = layer_norm_backward(dh, cache.ln_f)
        g["ln_f.weight"], g["ln_f.bias"] = gl.weight, gl.bias
    dx = gl.x
    for i in reversed(range(len(cache.layers))):
        lc = cache.layers[i]
        with _located(f"the backward pass of layers.{i} ({lc.kind} attention)"):
            dx = _layer_backward(dx, lc, f"layers.{i}.", ksvd_grads.get(i), g)
    if cfg.positions == "learned":
        gp = learned_positional_backward(dx, cache.pos)
        dx, g["pos"] = gp.x, gp.table
    g["embed"] = embedding_backward(dx, cache.emb).table
    return ModelGrads(g)


def _layer_backward(
    dx: np.ndarray, lc: _LayerCache, pre: str, kg: KSVDGrads | None, g: dict
) -> np.ndarray:
    """One layer's backward: its parameters' gradients into ``g``; returns d(input)."""
    gm = mlp_backward(dx, lc.mlp)  # x ← x + MLP(LN₂(x))
    g.update({pre + "mlp." + k: v for k, v in gm.params.items()})
    gl = layer_norm_backward(gm.x, lc.ln2)
    g[pre + "ln2.weight"], g[pre + "ln2.bias"] = gl.weight, gl.bias
    dx = dx + gl.x
    if lc.kind == "primal":  # x ← x + Attn(LN₁(x))
        ga = lc.attn_backward(dx, lc.attn, ksvd_grads=kg)
    else:
        ga = lc.attn_backward(dx, lc.attn)
    g.update({pre + "attn." + k: v for k, v in ga.params.items()})
    gl = layer_norm_backward(ga.x, lc.ln1)
    g[pre + "ln1.weight"], g[pre + "ln1.bias"] = gl.weight, gl.bias
    return dx + gl.x


class LossAndGrads(NamedTuple):
    loss: float  # task + η·KSVD
    task_loss: float
    ksvd_loss: float  # 0 when the model has no primal layer
    ksvd_per_layer: dict  # primal layer index → its L_l (the square)
    j_per_layer: dict  # primal layer index → the quantity inside the square (batch/head mean of j)
    logits: np.ndarray
    grads: dict
    cache: ModelCache


def task_loss(logits: np.ndarray, labels: np.ndarray, cfg: ModelConfig) -> tuple:
    """The task's cross-entropy and its cache: over the batch (classifier) or over the
    scored positions (decoder: labels (B, N), −1 where nothing is scored)."""
    return token_cross_entropy(logits, labels) if cfg.causal else cross_entropy(logits, labels)


def model_loss(params, ids, mask, labels, cfg: ModelConfig) -> float:
    """The training loss (cross-entropy + η·KSVD) without the backward pass."""
    logits, cache = model_forward(params, ids, mask, cfg)
    task = float(task_loss(logits, labels, cfg)[0])
    terms = [ksvd_terms_from_cache(lc.attn) for lc in cache.layers if lc.kind == "primal"]
    if not terms or not cfg.eta:
        return task
    return task + cfg.eta * ksvd_loss(terms, cfg.ksvd_convention, trace_no_x=cfg.trace_no_x)[0]


def loss_and_grads(
    params: dict[str, np.ndarray],
    ids: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    cfg: ModelConfig,
) -> LossAndGrads:
    """Cross-entropy + η·KSVD over the primal layers, and the gradient of every parameter.

    If the forward goes non-finite (logits or a KSVD loss), no backward is run: the result
    has a non-finite ``loss`` and empty ``grads``, for the caller to report. An error
    raised on the way (e.g. an overflow under ``np.errstate(over="raise")``) names the
    part of the model where it arose: ``raised_in(exc)``."""
    logits, cache = model_forward(params, ids, mask, cfg)
    nan = float("nan")
    if not np.all(np.isfinite(logits)):
        return LossAndGrads(nan, nan, nan, {}, {}, logits, {}, cache)
    with _located("the task loss"):
        task, ce = task_loss(logits, labels, cfg)
    primal_idx = [i for i, k in enumerate(cfg.attention) if k == "primal"]
    kl, per_layer, j_layer, kgrads = 0.0, {}, {}, {}
    if primal_idx:
        with _located("the KSVD loss"), np.errstate(over="ignore", invalid="ignore"):
            # an overflowing term is found just below, by layer, and returned as non-finite
            terms = [ksvd_terms_from_cache(cache.layers[i].attn) for i in primal_idx]
            kl, lcache = ksvd_loss(terms, cfg.ksvd_convention, trace_no_x=cfg.trace_no_x)
        per_layer = {i: float(v) for i, v in zip(primal_idx, lcache.per_layer, strict=True)}
        j_layer = {i: float(lc.j.mean()) for i, lc in zip(primal_idx, lcache.layers, strict=True)}
        if not np.isfinite(kl):
            return LossAndGrads(nan, float(task), kl, per_layer, j_layer, logits, {}, cache)
        if cfg.eta:
            with _located("the backward pass of the KSVD loss"):
                kg = ksvd_loss_backward(cfg.eta, lcache).layers
            kgrads = dict(zip(primal_idx, kg, strict=True))
    with _located("the backward pass of the task loss"):
        dlogits = (token_cross_entropy_backward if cfg.causal else cross_entropy_backward)(1.0, ce)
    grads = model_backward(dlogits.logits, cache, kgrads).params
    total = float(task) + cfg.eta * kl
    return LossAndGrads(total, float(task), kl, per_layer, j_layer, logits, grads, cache)
