"""The Primal-Attention layer, the reference: one public forward/backward pair per equation.

Per head h (head dim p, s = low_rank), for a batch X ∈ R^{B×N×D}, in the paper's order
(docs/theory.md §4; the authors' conventions: docs/conformance.md):

    (1) Q = X W_qᵀ + b_q,  K = X W_kᵀ + b_k        ``linear`` (vision: W_q, W_k are the two
                                                     halves of the fused ``qk`` weight)
    (2) causal: q̃_i = (1/i) Σ_{t≤i} q_t, same for k  ``running_mean``
    (3) Q_h, K_h ∈ R^{N×p}, head h's channels          ``split_heads``
    (4) Φ_q = φ(Q_h),  Φ_k = φ(K_h)                     the feature map (``config.feature_map``)
    (5) F_h = X[idx, h·p:(h+1)·p] ∈ R^{n×p}            ``sampled_rows`` (``config.sampler``)
        W_{e|X} = F_hᵀ W_e,  W_{r|X} = F_hᵀ W_r        ``data_dependent_weights``
        (data-independent weights: W_{e|X} = W_e, W_{r|X} = W_r ∈ R^{p_φ×s})
    (6) E = Φ_q W_{e|X},  R = Φ_k W_{r|X}              ``primal_scores``  (escore, rscore)
    (7) O_h = [E, R] W_cᵀ + b_c                         ``head_output`` (one 2s → p map, all heads;
                                                     ``rscores=False``: O_h = E W_cᵀ + b_c)
    (8) lra with a padding mask: padded rows of O_h = 0 ``mask_rows``
    (9) O = [O_1 … O_H] ∈ R^{N×D}                       ``merge_heads``
   (10) Y = O W_oᵀ + b_o                               ``linear``

``primal_attention_backward`` walks the same steps in reverse, each undone by its own
backward. Time O(B·N·D²) for the projections plus O(B·H·N·p_φ·s) for the scores; no N×N
array is formed. This module is the text to read next to the paper; ``primal_np.fast``
holds a tuned implementation of the same layer, validated against this one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import bool_mask, cache_of, check_finite, float_array, result_dtype
from .feature_maps import get_feature_map
from .head import HeadOutputCache, head_output, head_output_backward
from .ksvd_loss import KSVDGrads, check_ksvd_grads
from .params import PrimalAttentionConfig, check_params
from .primitives import (
    LinearCache,
    LinearGrads,
    MaskRowsCache,
    RunningMeanCache,
    SplitHeadsCache,
    linear,
    linear_backward,
    mask_rows,
    mask_rows_backward,
    merge_heads,
    merge_heads_backward,
    running_mean,
    running_mean_backward,
    split_heads,
    split_heads_backward,
)
from .sampling import (
    SampledRowsCache,
    check_indices,
    lra_indices,
    sampled_rows,
    sampled_rows_backward,
    vision_indices,
)
from .scores import PrimalScoresCache, primal_scores, primal_scores_backward
from .weights import DataWeightsCache, data_dependent_weights, data_dependent_weights_backward

__all__ = [
    "PrimalCache",
    "PrimalAttentionGrads",
    "primal_attention",
    "primal_attention_backward",
    "sample_indices",
    "check_layer_input",
]


def sample_indices(config: PrimalAttentionConfig, num_tokens: int) -> np.ndarray | None:
    """Positions of the rows of F for N = ``num_tokens`` (None for data-independent weights).

    "linspace": the authors' ``torch.linspace(0, N − 1, n, dtype=int)`` — lra: n = s·m
    always (repeating when N < n); vision: n = min(N, s·m), all tokens when N ≤ s·m.
    "all": 0, 1, …, N − 1. A function: its result, checked to be n positions in [0, N).
    """
    if not config.data_dependent:
        return None
    if config.sampler == "linspace":
        if config.variant == "vision":
            return vision_indices(num_tokens, config.low_rank, config.rank_multi)
        return lra_indices(num_tokens, config.low_rank, config.rank_multi)
    if config.sampler == "all":
        return np.arange(num_tokens, dtype=np.int64)
    assert callable(config.sampler)
    return check_indices(config.sampler(num_tokens), num_tokens, f"sampler({num_tokens})")


class PrimalCache(NamedTuple):
    """The step caches of ``primal_attention``, in the order of the steps.

    ``escore`` and ``rscore`` are E, R (B, H, N, s), the outputs of step (6) that the KSVD
    loss reads. Other intermediates through the properties: ``phi_q`` and ``phi_k`` (Φ_q,
    Φ_k, (B, H, N, p_φ)), ``we_x`` and ``wr_x`` (W_{e|X}, W_{r|X}, (B, H, p, s); None for
    data-independent weights), ``F``, ``idx``.
    """

    config: PrimalAttentionConfig
    params: dict  # the parameters, in the computation dtype
    q_proj: LinearCache  # (1)
    k_proj: LinearCache
    q_mean: RunningMeanCache | None  # (2), causal only
    k_mean: RunningMeanCache | None
    q_heads: SplitHeadsCache  # (3)
    k_heads: SplitHeadsCache
    phi_q_cache: Any  # (4), the feature map's caches
    phi_k_cache: Any
    rows: SampledRowsCache | None  # (5), data-dependent weights only
    we_x_cache: DataWeightsCache | None
    wr_x_cache: DataWeightsCache | None
    scores: PrimalScoresCache  # (6)
    escore: np.ndarray  # E, (B, H, N, s)
    rscore: np.ndarray  # R
    head: HeadOutputCache  # (7)
    mask: MaskRowsCache | None  # (8)
    merge: SplitHeadsCache  # (9)
    out_proj: LinearCache  # (10)

    @property
    def phi_q(self) -> np.ndarray:
        return self.scores.phi_q

    @property
    def phi_k(self) -> np.ndarray:
        return self.scores.phi_k

    @property
    def we_x(self) -> np.ndarray | None:
        return self.scores.W_e if self.rows is not None else None

    @property
    def wr_x(self) -> np.ndarray | None:
        return self.scores.W_r if self.rows is not None else None

    @property
    def F(self) -> np.ndarray | None:
        """The sampled rows F (B, H, n, p); None for data-independent weights."""
        return None if self.we_x_cache is None else self.we_x_cache.F

    @property
    def idx(self) -> np.ndarray | None:
        return None if self.rows is None else self.rows.idx


class PrimalAttentionGrads(NamedTuple):
    """Gradients of ``primal_attention``: the input x (B, N, D) and every parameter, keyed
    by the internal names of ``primal_np.params`` (``to_state_dict`` gives the authors')."""

    x: np.ndarray
    params: dict[str, np.ndarray]


def check_layer_input(
    x: object, mask: object, config: PrimalAttentionConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """x as a finite (B, N, D) floating array and the mask as None or boolean (B, N)."""
    if not isinstance(config, PrimalAttentionConfig):
        raise TypeError(f"config must be a PrimalAttentionConfig, got {type(config).__name__}")
    x = float_array(x, "x", ndim=3)
    if x.shape[-1] != config.dim:
        raise ValueError(f"x has shape {x.shape}; expected (B, N, D) with D = dim = {config.dim}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x has shape {x.shape}; expected at least one sequence and one token")
    check_finite(x, "x")
    if mask is not None:
        if config.variant != "lra":
            raise ValueError(
                f"a padding mask applies to the lra variant only (variant {config.variant!r})"
            )
        mask = bool_mask(mask, "mask", "True = real token")
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"mask has shape {mask.shape}, expected (B, N) = {x.shape[:2]} (True = real token)"
            )
    return x, mask


def _qk_weights(P: dict, config: PrimalAttentionConfig) -> tuple:
    """(W_q, b_q, W_k, b_k); the vision layer's fused ``qk`` weight is [W_q; W_k]."""
    if config.variant != "vision":
        return P["wq"], P["bq"], P["wk"], P["bk"]
    D, b = config.dim, P.get("bqk")
    return P["wqk"][:D], None if b is None else b[:D], P["wqk"][D:], None if b is None else b[D:]


def primal_attention(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: PrimalAttentionConfig,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, PrimalCache]:
    """Primal-Attention layer forward, steps (1)–(10) of the module docstring.

    Args:
        x: (B, N, D) layer input (in pre-LN blocks, the normalised residual stream).
        params: internal names of ``primal_np.params`` (``init_primal_attention_params``,
            ``from_state_dict``).
        config: ``PrimalAttentionConfig`` (variant, feature map, sampler, shapes).
        mask: lra only, boolean (B, N), True = real token. Output rows of padded tokens are
            zero; padded tokens still enter F and the scores (as in the authors' code).

    Returns (y (B, N, D), cache); ``cache.escore``, ``cache.rscore`` are E, R (B, H, N, s).
    Computes in the promoted dtype of x and the parameters (float32 stays float32).

    The cache holds references to (not copies of) x and the parameters: modifying them in
    place between this forward and its backward changes the gradient the backward returns.
    Copy first (``x.copy()``, ``{k: v.copy() for k, v in params.items()}``) if you edit them.
    """
    x, mask = check_layer_input(x, mask, config)
    params = check_params(params, config)
    dt = result_dtype(x, *params.values())
    x = x.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in params.items()}
    H = config.num_heads
    fm = get_feature_map(config.feature_map)
    w_q, b_q, w_k, b_k = _qk_weights(P, config)

    q, q_proj = linear(x, w_q, b_q)  # (1) Q = X W_qᵀ + b_q
    k, k_proj = linear(x, w_k, b_k)  #     K = X W_kᵀ + b_k
    q_mean = k_mean = None
    if config.variant == "causal":  # (2) q̃_i = (1/i) Σ_{t≤i} q_t
        q, q_mean = running_mean(q, axis=-2)
        k, k_mean = running_mean(k, axis=-2)
    q, q_heads = split_heads(q, H)  # (3) (B, H, N, p)
    k, k_heads = split_heads(k, H)
    phi_q, phi_q_cache = fm.forward(q, **config.feature_params())  # (4) Φ_q = φ(Q_h)
    phi_k, phi_k_cache = fm.forward(k, **config.feature_params())  #     Φ_k = φ(K_h)
    idx = sample_indices(config, x.shape[1])
    rows = we_x_cache = wr_x_cache = None
    if idx is None:
        we_x, wr_x = P["we"], P["wr"]  # (5) data-independent: W_{e|X} = W_e
    else:
        if idx.shape[0] != P["we"].shape[1]:
            raise ValueError(
                f"{x.shape[1]} tokens give n = {idx.shape[0]} sampled rows but we has shape "
                f"{P['we'].shape} (built for num_tokens = {config.num_tokens})"
            )
        F, rows = sampled_rows(x, idx, H)  # (5) F_h = X[idx, h-block]: (B, H, n, p)
        we_x, we_x_cache = data_dependent_weights(F, P["we"])  # W_{e|X} = Fᵀ W_e
        wr_x, wr_x_cache = data_dependent_weights(F, P["wr"])  # W_{r|X} = Fᵀ W_r
    (E, R), scores = primal_scores(phi_q, phi_k, we_x, wr_x)  # (6) E = Φ_q W_{e|X}, R = Φ_k W_{r|X}
    o, head = head_output((E, R) if config.rscores else (E,), P["wc"], P["bc"])  # (7) O_h
    mask_cache = None
    if mask is not None:  # (8) padded rows of O_h → 0
        o, mask_cache = mask_rows(o, mask[:, None, :])
    merged, merge = merge_heads(o)  # (9) (B, N, D)
    y, out_proj = linear(merged, P["wo"], P["bo"])  # (10) Y = O W_oᵀ + b_o
    cache = PrimalCache(
        config, P, q_proj, k_proj, q_mean, k_mean, q_heads, k_heads, phi_q_cache, phi_k_cache,
        rows, we_x_cache, wr_x_cache, scores, E, R, head, mask_cache, merge, out_proj,
    )  # fmt: skip
    return y, cache


def primal_attention_backward(
    dy: np.ndarray, cache: PrimalCache, *, ksvd_grads: KSVDGrads | None = None
) -> PrimalAttentionGrads:
    """VJP of ``primal_attention``: steps (10) → (1), each undone by its own backward.

    ``ksvd_grads``: this layer's entry of ``ksvd_loss_backward(eta, …).layers`` (the
    KSVD loss's gradients with respect to E, R, λ, W_e, W_r and, with the trace on the
    data-dependent weights, W_{e|X}, W_{r|X}). They join the chain where their
    intermediates are formed, so the result is the complete gradient of
    Σ⟨dy, y⟩ + η·KSVD: nothing is left to add by hand.

    Returns ``PrimalAttentionGrads(x, params)``, in the dtype of the forward.
    """
    cache_of(cache, PrimalCache, "primal_attention")
    cfg, P = cache.config, cache.params
    kg = check_ksvd_grads(ksvd_grads, cache)
    fm = get_feature_map(cfg.feature_map)
    g: dict[str, np.ndarray] = {}

    g_out = linear_backward(dy, cache.out_proj)  # (10) Y = O W_oᵀ + b_o
    g["wo"], g["bo"] = g_out.weight, _bias(g_out.bias)
    d_o = merge_heads_backward(g_out.x, cache.merge).x  # (9) O = [O_1 … O_H]
    if cache.mask is not None:
        d_o = mask_rows_backward(d_o, cache.mask).x  # (8) padded rows were set to 0
    g_head = head_output_backward(d_o, cache.head)  # (7) O_h = [E, R] W_cᵀ + b_c
    g["wc"], g["bc"] = g_head.weight, _bias(g_head.bias)
    dE = g_head.scores[0]
    dR = g_head.scores[1] if cfg.rscores else np.zeros_like(cache.rscore)
    if kg is not None:  # the KSVD loss reads E and R too
        dE, dR = dE + kg.escore, dR + kg.rscore
    g_s = primal_scores_backward((dE, dR), cache.scores)  # (6) E = Φ_q W_{e|X}, R = Φ_k W_{r|X}
    dx_rows = None
    if cache.rows is None:
        g["we"], g["wr"] = g_s.W_e, g_s.W_r  # (5) data-independent: W_{e|X} = W_e
    else:
        d_we_x, d_wr_x = g_s.W_e, g_s.W_r
        if kg is not None and kg.we_x is not None and kg.wr_x is not None:  # trace on W_{·|X}
            d_we_x, d_wr_x = d_we_x + kg.we_x, d_wr_x + kg.wr_x
        assert cache.we_x_cache is not None and cache.wr_x_cache is not None
        g_we = data_dependent_weights_backward(d_we_x, cache.we_x_cache)  # (5) W_{e|X} = Fᵀ W_e
        g_wr = data_dependent_weights_backward(d_wr_x, cache.wr_x_cache)  #     W_{r|X} = Fᵀ W_r
        g["we"], g["wr"] = g_we.W, g_wr.W
        dx_rows = sampled_rows_backward(g_we.F + g_wr.F, cache.rows).x  # F = X[idx, h-block]
    dq = fm.backward(g_s.phi_q, cache.phi_q_cache).x  # (4) Φ_q = φ(Q_h)
    dk = fm.backward(g_s.phi_k, cache.phi_k_cache).x  #     Φ_k = φ(K_h)
    dq = split_heads_backward(dq, cache.q_heads).x  # (3) heads
    dk = split_heads_backward(dk, cache.k_heads).x
    if cache.q_mean is not None and cache.k_mean is not None:  # (2) running means
        dq = running_mean_backward(dq, cache.q_mean).x
        dk = running_mean_backward(dk, cache.k_mean).x
    g_q = linear_backward(dq, cache.q_proj)  # (1) Q = X W_qᵀ + b_q
    g_k = linear_backward(dk, cache.k_proj)  #     K = X W_kᵀ + b_k
    dx = g_q.x + g_k.x
    if dx_rows is not None:
        dx += dx_rows
    g.update(_qk_grads(g_q, g_k, cfg))
    g["lam"] = np.zeros_like(P["lam"])  # Λ enters the KSVD loss only
    if kg is not None:
        g["lam"] += kg.lam
        g["we"] = g["we"] + kg.we
        g["wr"] = g["wr"] + kg.wr
    return PrimalAttentionGrads(dx, {k: g[k] for k in P})


def _bias(b: np.ndarray | None) -> np.ndarray:
    assert b is not None  # the layer's linear maps have biases
    return b


def _qk_grads(
    g_q: LinearGrads, g_k: LinearGrads, cfg: PrimalAttentionConfig
) -> dict[str, np.ndarray]:
    """Step (1)'s parameter gradients under the variant's names (vision: stacked into qk)."""
    if cfg.variant != "vision":
        return {"wq": g_q.weight, "bq": _bias(g_q.bias), "wk": g_k.weight, "bk": _bias(g_k.bias)}
    out = {"wqk": np.concatenate([g_q.weight, g_k.weight])}
    if cfg.qk_bias:
        out["bqk"] = np.concatenate([_bias(g_q.bias), _bias(g_k.bias)])
    return out
