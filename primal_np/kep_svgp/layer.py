"""KEP-SVGP attention (Chen, Tao, Tonin, Suykens, ICML 2024), the reference: one public
forward/backward pair per equation, in the order of the authors' ``KEP_SVGPAttention``.

Per head h (head dim p, s = low_rank), for a batch X ∈ R^{B×N×D}:

    (1) [Q, K] = X [W_q; W_k]ᵀ (+ b)                  ``linear`` (the fused ``qk`` weight)
    (2) cola: padded rows of Q, K set to 0            ``mask_rows``
    (3) Q_h, K_h ∈ R^{N×p}                             ``split_heads``
    (4) Φ_q = φ(Q_h), Φ_k = φ(K_h), φ(x) = x/‖x‖       ``cosine_normalize``
    (5) F_h = X[idx, h-block]; W_{e|X} = F_hᵀ W_e      ``sampled_rows``, ``data_dependent_weights``
    (6) E = Φ_q W_{e|X},  R = Φ_k W_{r|X}             ``primal_scores``
    (7) V₁ = (E + R) Λ  or  [E; R] Λ,  Λ = diag(exp(2ℓ))  ``eigen_features``
    (8) M = V₁ M_u                                     ``posterior_mean``
    (9) L = diag(exp(log s)) + tril(T, −1)             ``cholesky_factor``
   (10) Y = M + factor-applied noise ε                 ``posterior_sample``
   (11) O_h = Y W_fᵀ + b_f  (s → p)                     ``head_output`` (``final_weight``)
   (12) concate: O_h ← W_t O_h + b_t (2N → N tokens)    ``token_map`` (``embed_len_weight``)
   (13) O = [O_1 … O_H] ∈ R^{N×D}                       ``merge_heads``
   (14) apply_proj: Y = O W_oᵀ + b_o                    ``linear`` (their code leaves it out)

The noise is an input (``noise=`` or a seeded ``rng``), so forward and backward are
deterministic. The KL term and the KSVD loss are separate pairs (``kep_svgp_losses``); their
gradients join the backward through ``loss_grads``. docs/conformance.md lists where this
code departs from the paper and the option for each side.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import bool_mask, cache_of, check_finite, float_array, result_dtype
from ..feature_maps import cosine_normalize, cosine_normalize_backward
from ..head import HeadOutputCache, head_output, head_output_backward
from ..primitives import (
    LinearCache,
    MaskRowsCache,
    SplitHeadsCache,
    linear,
    linear_backward,
    mask_rows,
    mask_rows_backward,
    merge_heads,
    merge_heads_backward,
    split_heads,
    split_heads_backward,
)
from ..sampling import SampledRowsCache, sampled_rows, sampled_rows_backward
from ..scores import PrimalScoresCache, primal_scores, primal_scores_backward
from ..weights import DataWeightsCache, data_dependent_weights, data_dependent_weights_backward
from .loss import KEPSVGPLossGrads
from .ops import (
    CholeskyFactorCache,
    EigenFeaturesCache,
    PosteriorMeanCache,
    PosteriorSampleCache,
    TokenMapCache,
    cholesky_factor,
    cholesky_factor_backward,
    eigen_features,
    eigen_features_backward,
    posterior_mean,
    posterior_mean_backward,
    posterior_sample,
    posterior_sample_backward,
    token_map,
    token_map_backward,
)
from .params import KEPSVGPConfig, check_kep_params, draw_noise, generator, kep_sample_indices

__all__ = [
    "KEPSVGPCache",
    "KEPSVGPGrads",
    "kep_svgp_attention",
    "kep_svgp_attention_backward",
    "authors_squeeze_problem",
]


class KEPSVGPCache(NamedTuple):
    """The step caches of ``kep_svgp_attention``, in the order of the steps.

    Read the intermediates through the properties: ``escore``, ``rscore`` (E, R (B, H, N,
    s)), ``v1`` (V₁), ``mean`` (M), ``samples`` (Y) (B, H, N', s), ``noise``, ``idx``.
    """

    config: KEPSVGPConfig
    params: dict  # the parameters, in the computation dtype
    q_proj: LinearCache  # (1)
    k_proj: LinearCache
    q_mask: MaskRowsCache | None  # (2), cola with a mask
    k_mask: MaskRowsCache | None
    q_heads: SplitHeadsCache  # (3)
    k_heads: SplitHeadsCache
    phi_q_cache: Any  # (4)
    phi_k_cache: Any
    rows: SampledRowsCache  # (5)
    we_x_cache: DataWeightsCache
    wr_x_cache: DataWeightsCache
    scores: PrimalScoresCache  # (6)
    features: EigenFeaturesCache  # (7)
    mean_cache: PosteriorMeanCache  # (8)
    factor_cache: CholeskyFactorCache  # (9)
    sample: PosteriorSampleCache  # (10)
    head: HeadOutputCache  # (11)
    tokens: TokenMapCache | None  # (12), concate
    merge: SplitHeadsCache  # (13)
    out_proj: LinearCache | None  # (14), apply_proj

    @property
    def escore(self) -> np.ndarray:
        return self.features.escore

    @property
    def rscore(self) -> np.ndarray:
        return self.features.rscore

    @property
    def v1(self) -> np.ndarray:
        return self.mean_cache.v1

    @property
    def mean(self) -> np.ndarray:
        """M = V₁ M_u, recomputed (the sample cache keeps V₁ and the noise, not M)."""
        return posterior_mean(self.v1, self.params["m_u"])[0]

    @property
    def samples(self) -> np.ndarray:
        return self.head.lin.x

    @property
    def noise(self) -> np.ndarray:
        return self.sample.noise

    @property
    def idx(self) -> np.ndarray:
        return self.rows.idx


class KEPSVGPGrads(NamedTuple):
    """Gradients of ``kep_svgp_attention``: the input x (B, N, D) and every parameter,
    keyed by the authors' state-dict names."""

    x: np.ndarray
    params: dict[str, np.ndarray]


def authors_squeeze_problem(batch: int, num_heads: int, rows: int, low_rank: int) -> str | None:
    """Why their ``(… @ randn(B, H, N', s, 1)).squeeze()`` breaks for these sizes, or None.

    ``squeeze`` drops every size-1 axis of (B, H, N', s, 1); adding the result to the mean
    (B, H, N', s) broadcasts from the right, which restores the shape only when the dropped
    axes are all leading (e.g. B = 1). Otherwise their forward enlarges the shape and the
    final reshape to (B, N, C) (or the s → p linear) raises.
    """
    sizes = {"B": batch, "H": num_heads, "N'": rows, "s": low_rank}
    seen_big = None
    for name, n in sizes.items():
        if n > 1:
            seen_big = name
        elif seen_big is not None:
            return (
                f"their .squeeze() drops the axis {name} = 1 after {seen_big} = "
                f"{sizes[seen_big]} > 1, so mean + noise term has the wrong shape and their "
                f"forward raises (sizes B, H, N', s = {tuple(sizes.values())})"
            )
    return None


def _check_input(x: object, mask: object, config: KEPSVGPConfig) -> tuple[np.ndarray, Any]:
    if not isinstance(config, KEPSVGPConfig):
        raise TypeError(f"config must be a KEPSVGPConfig, got {type(config).__name__}")
    x = float_array(x, "x", ndim=3)
    B, N, D = x.shape
    if D != config.dim or B == 0 or N == 0:
        raise ValueError(
            f"x has shape {x.shape}; expected (B, N, D) with B, N ≥ 1, D = {config.dim}"
        )
    check_finite(x, "x")
    if config.concate and N != config.embed_len:
        raise ValueError(
            f"concate needs N = embed_len = {config.embed_len} tokens (the 2N → N map is built "
            f"for it), got N = {N}"
        )
    if config.variant == "vision" and config.embed_len is not None:
        if config.embed_len <= config.low_rank * config.rank_multi and N != config.embed_len:
            raise ValueError(
                f"with embed_len = {config.embed_len} ≤ s·rank_multi every token is a row of F, "
                f"so we, wr (H, {config.embed_len}, s) need N = {config.embed_len}, got N = {N}"
            )
    if mask is not None:
        if config.variant != "cola":
            raise ValueError("a padding mask applies to the cola variant only")
        mask = bool_mask(mask, "mask", "True = real token")
        if mask.shape != (B, N):
            raise ValueError(f"mask has shape {mask.shape}, expected (B, N) = {(B, N)}")
    if config.authors_squeeze:
        problem = authors_squeeze_problem(
            B, config.num_heads, 2 * N if config.concate else N, config.low_rank
        )
        if problem:
            raise ValueError(problem + "; authors_squeeze=False computes it")
    return x, mask


def kep_svgp_attention(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: KEPSVGPConfig,
    *,
    noise: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, KEPSVGPCache]:
    """KEP-SVGP attention forward, steps (1)–(14) of the module docstring.

    Args:
        x: (B, N, D) layer input (the LayerNorm'd residual stream in their pre-LN blocks).
        params: the authors' state-dict names (``init_kep_svgp_params``, ``kep_from_state_dict``).
        config: ``KEPSVGPConfig``.
        noise: the standard-normal draw, ``noise_shape(config, B, N)`` — (B, H, N', s, 1) in
            the authors' layout, N' = 2N with concate — or with a token axis of 1 (one joint
            draw for the sequence). Zeros give the posterior mean. Cast to the computation dtype.
        rng: instead of ``noise``, a Generator or seed to draw it (``draw_noise``).
        mask: cola only, boolean (B, N), True = real token: q and k rows of padded tokens are
            zeroed before the cosine map (padded tokens still enter F; their output rows are
            the bias b_f, as in the authors' code).

    Returns (y (B, N, D), cache). Computes in the promoted dtype of x and the parameters.
    """
    x, mask = _check_input(x, mask, config)
    params = check_kep_params(params, config)
    dt = result_dtype(x, *params.values())
    x = x.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in params.items()}
    B, N, D = x.shape
    H = config.num_heads
    if rng is not None:
        rng = generator(rng)
    if (noise is None) == (rng is None):
        raise ValueError("give exactly one of noise= (an array) and rng= (a Generator or seed)")
    if noise is None:
        assert rng is not None
        noise = draw_noise(rng, config, B, N, dtype=dt)
    b = P.get("qk.bias")
    wqk = P["qk.weight"]
    q, q_proj = linear(x, wqk[:D], None if b is None else b[:D])  # (1) Q = X W_qᵀ (+ b_q)
    k, k_proj = linear(x, wqk[D:], None if b is None else b[D:])  #     K = X W_kᵀ (+ b_k)
    q_mask = k_mask = None
    if mask is not None:  # (2) cola: padded rows of Q, K → 0
        q, q_mask = mask_rows(q, mask)
        k, k_mask = mask_rows(k, mask)
    q, q_heads = split_heads(q, H)  # (3) (B, H, N, p)
    k, k_heads = split_heads(k, H)
    phi_q, phi_q_cache = cosine_normalize(q)  # (4) Φ_q = φ(Q_h)
    phi_k, phi_k_cache = cosine_normalize(k)  #     Φ_k = φ(K_h)
    F, rows = sampled_rows(x, kep_sample_indices(config, N), H)  # (5) F_h = X[idx, h-block]
    we_x, we_x_cache = data_dependent_weights(F, P["we"])  #     W_{e|X} = Fᵀ W_e
    wr_x, wr_x_cache = data_dependent_weights(F, P["wr"])  #     W_{r|X} = Fᵀ W_r
    (E, R), scores = primal_scores(phi_q, phi_k, we_x, wr_x)  # (6) E = Φ_q W_{e|X}, R = Φ_k W_{r|X}
    ell = P["log_lambda_sqrt_inv_diag"]
    v1, features = eigen_features(E, R, ell, concate=config.concate)  # (7) V₁ = (E + R) Λ
    m, mean_cache = posterior_mean(v1, P["m_u"])  # (8) M = V₁ M_u
    L, factor_cache = cholesky_factor(P["log_ssqrt"], P["s_sqrt_low_triangle"])  # (9)
    y_s, sample = posterior_sample(m, v1, L, noise, layout=config.factor_layout)  # (10)
    o, head = head_output((y_s,), P["final_weight.weight"], P["final_weight.bias"])  # (11)
    tokens = None
    if config.concate:  # (12) 2N → N rows
        o, tokens = token_map(o, P["embed_len_weight.weight"], P["embed_len_weight.bias"])
    y, merge = merge_heads(o)  # (13) (B, N, D)
    out_proj = None
    if config.apply_proj:  # (14) Y = O W_oᵀ + b_o
        y, out_proj = linear(y, P["proj.weight"], P["proj.bias"])
    cache = KEPSVGPCache(
        config, P, q_proj, k_proj, q_mask, k_mask, q_heads, k_heads, phi_q_cache, phi_k_cache,
        rows, we_x_cache, wr_x_cache, scores, features, mean_cache, factor_cache, sample, head,
        tokens, merge, out_proj,
    )  # fmt: skip
    return y, cache


def _check_loss_grads(lg: object, cache: KEPSVGPCache) -> KEPSVGPLossGrads | None:
    if lg is None:
        return None
    if not isinstance(lg, KEPSVGPLossGrads):
        raise TypeError(
            "loss_grads must be a KEPSVGPLossGrads (kep_svgp_losses_backward(...)), got "
            f"{type(lg).__name__}"
        )
    if not isinstance(lg.params, dict) or set(lg.params) != set(cache.params):
        keys = sorted(lg.params) if isinstance(lg.params, dict) else type(lg.params).__name__
        raise KeyError(f"loss_grads.params has keys {keys}, expected {sorted(cache.params)}")
    arrays = [("escore", lg.escore, cache.escore.shape), ("rscore", lg.rscore, cache.rscore.shape)]
    arrays += [(f"params[{k!r}]", v, cache.params[k].shape) for k, v in lg.params.items()]
    for name, got, shape in arrays:
        got = float_array(got, f"loss_grads.{name}")
        if got.shape != shape:
            raise ValueError(f"loss_grads.{name} has shape {got.shape}, expected {shape}")
        check_finite(got, f"loss_grads.{name}")
    return lg


def kep_svgp_attention_backward(
    dy: np.ndarray, cache: KEPSVGPCache, *, loss_grads: KEPSVGPLossGrads | None = None
) -> KEPSVGPGrads:
    """VJP of ``kep_svgp_attention``: steps (14) → (1), each undone by its own backward.

    ``loss_grads``: ``kep_svgp_losses_backward((η_kl, η), lcache)`` of this layer. Its
    gradients on E, R join step (6) and its parameter gradients are added, so the result is
    the complete gradient of Σ⟨dy, y⟩ + η_kl·kl + η·ksvd. Without it the parameters read only
    by the losses get their share of Σ⟨dy, y⟩ alone. The noise is held fixed.

    Returns ``KEPSVGPGrads(x, params)`` (authors' names; ``proj.*`` are zero unless
    ``apply_proj``), in the dtype of the forward.
    """
    cache_of(cache, KEPSVGPCache, "kep_svgp_attention")
    cfg, P = cache.config, cache.params
    lg = _check_loss_grads(loss_grads, cache)
    g: dict[str, Any] = {k: np.zeros_like(v) for k, v in P.items()}
    d = dy
    if cache.out_proj is not None:  # (14) Y = O W_oᵀ + b_o
        g_o = linear_backward(d, cache.out_proj)
        g["proj.weight"], g["proj.bias"] = g_o.weight, g_o.bias
        d = g_o.x
    d_o = merge_heads_backward(d, cache.merge).x  # (13) O = [O_1 … O_H]
    if cache.tokens is not None:  # (12) O_h ← W_t O_h + b_t
        g_t = token_map_backward(d_o, cache.tokens)
        g["embed_len_weight.weight"], g["embed_len_weight.bias"] = g_t.weight, g_t.bias
        d_o = g_t.x
    g_h = head_output_backward(d_o, cache.head)  # (11) O_h = Y W_fᵀ + b_f
    g["final_weight.weight"], g["final_weight.bias"] = g_h.weight, g_h.bias
    (d_ys,) = g_h.scores
    g_smp = posterior_sample_backward(d_ys, cache.sample)  # (10) Y = M + Σ V₁ L ε
    g_f = cholesky_factor_backward(g_smp.factor, cache.factor_cache)  # (9) L = diag + tril
    g["log_ssqrt"], g["s_sqrt_low_triangle"] = g_f.log_ssqrt, g_f.s_sqrt_low_triangle
    g_m = posterior_mean_backward(g_smp.mean, cache.mean_cache)  # (8) M = V₁ M_u
    g["m_u"] = g_m.m_u
    g_v = eigen_features_backward(g_smp.v1 + g_m.v1, cache.features)  # (7) V₁ = (E + R) Λ
    g["log_lambda_sqrt_inv_diag"] = g_v.log_lambda
    dE, dR = g_v.escore, g_v.rscore
    if lg is not None:  # the KSVD loss reads E and R too
        dE, dR = dE + lg.escore, dR + lg.rscore
    g_s = primal_scores_backward((dE, dR), cache.scores)  # (6) E = Φ_q W_{e|X}, R = Φ_k W_{r|X}
    g_we = data_dependent_weights_backward(g_s.W_e, cache.we_x_cache)  # (5) W_{e|X} = Fᵀ W_e
    g_wr = data_dependent_weights_backward(g_s.W_r, cache.wr_x_cache)
    g["we"], g["wr"] = g_we.W, g_wr.W
    dx = sampled_rows_backward(g_we.F + g_wr.F, cache.rows).x  # F = X[idx, h-block]
    dq = cosine_normalize_backward(g_s.phi_q, cache.phi_q_cache).x  # (4) Φ = φ(Q_h)
    dk = cosine_normalize_backward(g_s.phi_k, cache.phi_k_cache).x
    dq = split_heads_backward(dq, cache.q_heads).x  # (3)
    dk = split_heads_backward(dk, cache.k_heads).x
    if cache.q_mask is not None and cache.k_mask is not None:  # (2) padded rows set to 0
        dq = mask_rows_backward(dq, cache.q_mask).x
        dk = mask_rows_backward(dk, cache.k_mask).x
    g_q = linear_backward(dq, cache.q_proj)  # (1) [Q, K] = X [W_q; W_k]ᵀ (+ b)
    g_k = linear_backward(dk, cache.k_proj)
    dx += g_q.x + g_k.x
    g["qk.weight"] = np.concatenate([g_q.weight, g_k.weight])
    if cfg.qk_bias:
        g["qk.bias"] = np.concatenate([g_q.bias, g_k.bias])
    if lg is not None:
        for k, v in lg.params.items():
            g[k] = g[k] + np.asarray(v, dtype=g[k].dtype)
    return KEPSVGPGrads(dx, {k: g[k] for k in P})
