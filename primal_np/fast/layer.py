"""The Primal-Attention layer, tuned: the fast path (``primal_np.layer`` is the reference).

The same function as ``primal_np.primal_attention`` — validated against it through
``primal_np.adapters.check_primal_attention``, the call a user makes to validate their own
implementation — written for speed rather than for reading. It supports exactly what it
was written for: the cosine feature map, the authors' integer-linspace sampler, the lra,
vision and causal variants, data-dependent and data-independent weights, the padding
mask. Anything else is refused with ``NotImplementedError`` naming the option
(``unsupported_reason(config)`` says it without raising); use the reference there.

Per head h (head dim p, s = low_rank), for a batch X ∈ R^{B×N×D}:

    Q = X W_qᵀ + b_q,  K = X W_kᵀ + b_k               (vision: one fused qk projection)
    (causal variant: q̃_i = (1/i) Σ_{t≤i} q_t, likewise k̃)
    Φ_q = φ(Q_h),  Φ_k = φ(K_h),   φ(x) = x / max(‖x‖₂, 1e-12)
    W_{e|X} = F_hᵀ W_e,  W_{r|X} = F_hᵀ W_r            F_h = X[:, idx, h·p:(h+1)·p] ∈ R^{n×p}
        (data-independent variant: W_{e|X} = W_e ∈ R^{p×s})
    E = Φ_q W_{e|X},  R = Φ_k W_{r|X}                   (the escore and rscore, (B,H,N,s))
    O_h = [E, R] W_cᵀ + b_c                             (one 2s → p map shared by the heads)
    (LRA mask: rows of padded tokens of O_h set to 0)
    Y = merge_heads(O) W_oᵀ + b_o

Time O(B·H·N·p·s) + O(B·N·D²) for the projections; no N×N array is formed.

Layout. Arrays stay token-major, as the projections produce them: Q and K are the two
halves of one (B, N, 2, H, p) array [Q | K] = X [W_q; W_k]ᵀ (one GEMM; the vision layer's
``qk`` is this array already), and the (B, H, N, ·) head arrays of the equations are
strided views of it, which NumPy's matmul hands to BLAS without a copy. E and R are the
two halves of one (B, N, H, 2s) array [E | R], read by the output stage as (B·N, H·2s)
rows: there the W_c map and the output projection are one GEMM, or two when that is
cheaper (``primal_np.fast.output``).

The cosine map is never applied to a full-size array. φ scales each row of Q by
1/‖q_i‖, so E = Φ_q W_{e|X} = diag(1/‖q_i‖) (Q W_{e|X}): the score GEMMs read Q and their
(N, s) outputs are scaled instead. In the backward, the projection of φ's Jacobian
needs φ_iᵀ dΦ_i = φ_iᵀ W dE_iᵀ = e_i · dE_i, a dot of s-vectors; with G = diag(1/‖q_i‖) dE,

    dQ = G W_{e|X}ᵀ − diag(c) Q,   c_i = (e_i · dE_i)/‖q_i‖²  (0 where ‖q_i‖ ≤ eps),
    dW_{e|X} = Φ_qᵀ dE = Qᵀ G.

Every matrix product goes through ``np.matmul`` (NumPy's BLAS), never a second BLAS
library: two OpenBLAS thread pools in one process (NumPy's and SciPy's) compete for the
cores, because each pool's idle threads keep spinning for a while after a call; with two
cores that made the layer ~1.5× slower than with one pool.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import result_dtype, upstream
from ..feature_maps import NORMALIZE_EPS
from ..ksvd_loss import KSVDGrads, check_ksvd_grads
from ..layer import PrimalAttentionGrads, check_layer_input, sample_indices
from ..params import PrimalAttentionConfig, check_params
from ..primitives import RunningMeanCache, running_mean, running_mean_backward
from .output import OutputCache, output_stage, output_stage_backward

__all__ = [
    "FastPrimalCache",
    "fast_primal_attention",
    "fast_primal_attention_backward",
    "unsupported_reason",
]


def unsupported_reason(config: PrimalAttentionConfig) -> str | None:
    """Why the fast path cannot run ``config`` (None if it can)."""
    if config.feature_map != "cosine":
        return f"feature_map={config.feature_map!r} (the fast path has the cosine map only)"
    if config.data_dependent and config.sampler != "linspace":
        return f"sampler={config.sampler!r} (the fast path has the authors' linspace only)"
    return None


class FastPrimalCache(NamedTuple):
    """Forward intermediates. ``escore``, ``rscore`` (B,H,N,s) and ``we_x``, ``wr_x``
    (B,H,p,s; None for data-independent weights) are what the KSVD loss consumes.

    ``qk`` is [Q | K] (B, N, 2, H, p), after the running mean in the causal variant and
    before the feature map; ``inv_norm`` (B, N, 2, H) holds 1/max(‖q_i‖, eps) and
    ``clamped`` where ‖q_i‖ ≤ eps. Φ_q, Φ_k (``phi_q``, ``phi_k``) are formed on request.
    ``ER`` is [E | R] (B, N, H, 2s); ``escore`` and ``rscore`` are (B, H, N, s) views."""

    config: PrimalAttentionConfig
    params: dict
    x: np.ndarray  # (B, N, D)
    mask: np.ndarray | None  # (B, N) bool
    idx: np.ndarray | None  # (n,) sampled positions
    qk_mean: RunningMeanCache | None  # running-mean cache of [Q | K] (causal) or None
    qk: np.ndarray  # (B, N, 2, H, p)
    inv_norm: np.ndarray  # (B, N, 2, H)
    clamped: np.ndarray  # (B, N, 2, H) bool
    F: np.ndarray | None  # (B, H, n, p)
    we_x: np.ndarray | None
    wr_x: np.ndarray | None
    ER: np.ndarray  # (B, N, H, 2s)
    out: OutputCache  # of the output stage (``primal_np.fast.output``)
    w_qk: np.ndarray  # the fused projection [W_q; W_k] (2D, D) of the forward

    @property
    def escore(self) -> np.ndarray:
        return self.ER[..., : self.config.low_rank].transpose(0, 2, 1, 3)

    @property
    def rscore(self) -> np.ndarray:
        return self.ER[..., self.config.low_rank :].transpose(0, 2, 1, 3)

    @property
    def phi_q(self) -> np.ndarray:
        return _qk_halves(self.qk * self.inv_norm[..., None])[0]

    @property
    def phi_k(self) -> np.ndarray:
        return _qk_halves(self.qk * self.inv_norm[..., None])[1]


def _heads(t: np.ndarray, H: int) -> np.ndarray:
    """(B, N, H·p) → (B, H, N, p), a strided view (no copy)."""
    B, N, D = t.shape
    return t.reshape(B, N, H, D // H).transpose(0, 2, 1, 3)


def _merge(t: np.ndarray) -> np.ndarray:
    """(B, H, N, p) → (B, N, H·p) (a copy unless t is a view of that layout)."""
    B, H, N, p = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, N, H * p)


def _qk_halves(qk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, 2, H, p) joint array → its Q and K halves as (B, H, N, p) views."""
    return qk[:, :, 0].transpose(0, 2, 1, 3), qk[:, :, 1].transpose(0, 2, 1, 3)


def _er_halves(er: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, H, 2s) joint array → its E and R halves as (B, H, N, s) views."""
    return er[..., :s].transpose(0, 2, 1, 3), er[..., s:].transpose(0, 2, 1, 3)


def _qk_projection(P: dict, variant: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The fused query-key projection [W_q; W_k] (2D, D) and bias [b_q; b_k] (2D,)."""
    if variant == "vision":
        return P["wqk"], P.get("bqk")
    return np.concatenate([P["wq"], P["wk"]]), np.concatenate([P["bq"], P["bk"]])


def _inverse_norms(qk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1/max(‖row‖₂, eps) of the (…, p) rows of [Q | K] (B, N, 2, H, p), and where
    ‖row‖ ≤ eps; both (B, N, 2, H)."""
    eps = qk.dtype.type(NORMALIZE_EPS)
    norm = np.sqrt(np.einsum("...i,...i->...", qk, qk))
    clamped = norm <= eps
    return np.divide(1, np.maximum(norm, eps, out=norm), out=norm), clamped


def _scale_scores(ER: np.ndarray, inv: np.ndarray) -> None:
    """Row (b, t, h) of E (R) times 1/‖q‖ (1/‖k‖) of that token and head, in place."""
    B, N, H, s2 = ER.shape
    ER.reshape(B, N, H, 2, s2 // 2)[...] *= inv.transpose(0, 1, 3, 2)[..., None]


def fast_primal_attention(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: PrimalAttentionConfig,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, FastPrimalCache]:
    """Primal-Attention layer forward, tuned; same arguments and results as ``primal_attention``.

    Args:
        x: (B, N, D) layer input (in pre-LN blocks, the normalised residual stream).
        params: internal names of ``primal_np.params`` (``init_primal_attention_params``,
            ``from_state_dict``).
        config: ``PrimalAttentionConfig``.
        mask: LRA only, boolean (B, N), True = real token. Output rows of padded tokens are
            zero; padded tokens still enter F and the scores (as in the authors' code).

    Returns (y (B, N, D), cache); ``cache.escore``, ``cache.rscore`` are E, R (B, H, N, s).
    """
    x, mask = check_layer_input(x, mask, config)
    why = unsupported_reason(config)
    if why is not None:
        raise NotImplementedError(
            f"fast_primal_attention does not support {why}; use primal_attention"
        )
    check_params(params, config)
    dt = result_dtype(x, *params.values())
    x = x.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in params.items()}
    H, p, s = config.num_heads, config.head_dim, config.low_rank
    B, N, D = x.shape

    # [Q | K] = X [W_q; W_k]ᵀ + [b_q; b_k]: one (B·N, D) × (D, 2D) GEMM, viewed (B, N, 2, H, p).
    w_qk, b_qk = _qk_projection(P, config.variant)
    qk = x @ w_qk.T
    if b_qk is not None:
        qk += b_qk
    qk = qk.reshape(B, N, 2, H, p)
    qk_mean = None
    if config.variant == "causal":
        qk, qk_mean = running_mean(qk, axis=1)  # q̃_i = (1/i) Σ_{t≤i} q_t, likewise k̃
    inv, clamped = _inverse_norms(qk)  # φ(q_i) = q_i · inv_i
    idx = sample_indices(config, N)
    F = we_x = wr_x = None
    if idx is None:
        we_x_, wr_x_ = P["we"], P["wr"]  # (H, p, s), shared by the batch
    else:
        if idx.shape[0] != P["we"].shape[1]:
            raise ValueError(
                f"{N} tokens give n = {idx.shape[0]} sampled rows but we has shape "
                f"{P['we'].shape} (built for num_tokens = {config.num_tokens})"
            )
        F = _heads(x[:, idx, :], H)  # (B, H, n, p), a view of the gathered rows
        Ft = np.swapaxes(F, -1, -2)
        we_x = we_x_ = Ft @ P["we"]  # W_{e|X} = Fᵀ W_e: (B, H, p, s)
        wr_x = wr_x_ = Ft @ P["wr"]
    # [E | R] (B, N, H, 2s) = [Q W_{e|X} | K W_{r|X}], then each row scaled by its inv
    ER = np.empty((B, N, H, 2 * s), dtype=dt)
    _scores(ER, qk, we_x_, wr_x_)
    _scale_scores(ER, inv)  # E = Φ_q W_{e|X}, R = Φ_k W_{r|X}
    # O_h = [E, R] W_cᵀ + b_c, padded rows → 0, Y = merge(O) W_oᵀ + b_o (``output``)
    y, out = output_stage(ER, P, mask)
    cache = FastPrimalCache(
        config, P, x, mask, idx, qk_mean, qk, inv, clamped, F, we_x, wr_x, ER, out, w_qk
    )
    return y.reshape(B, N, D), cache


def _scores(ER: np.ndarray, qk: np.ndarray, we_x: np.ndarray, wr_x: np.ndarray) -> None:
    """[E | R] ← [Q W_{e|X} | K W_{r|X}] per (b, h), written into the halves of ER."""
    s = we_x.shape[-1]
    E, R = _er_halves(ER, s)
    q, k = _qk_halves(qk)
    np.matmul(q, we_x, out=E)
    np.matmul(k, wr_x, out=R)


def _scatter_add_rows(dx: np.ndarray, dF: np.ndarray, idx: np.ndarray) -> None:
    """dx[:, idx, :] += dF, the adjoint of the gather x[:, idx, :], repeated indices summed.

    idx is sorted (linspace), so repeats are contiguous and ``np.add.reduceat`` sums them;
    the remaining indices are distinct, so the fancy-indexed ``+=`` is exact.
    """
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    dx[:, idx[starts], :] += np.add.reduceat(dF, starts, axis=1)


def fast_primal_attention_backward(
    dy: np.ndarray, cache: FastPrimalCache, *, ksvd_grads: KSVDGrads | None = None
) -> PrimalAttentionGrads:
    """VJP of ``fast_primal_attention``; same arguments and results as
    ``primal_attention_backward``. Chain, in reverse:

        d[E, R] = dY W_o W_c (+ d_escore, d_rscore), and dW_o, dW_c   (``output``)
        G = diag(1/‖q_i‖) dE;  c_i = (e_i · dE_i)/‖q_i‖²       (module docstring)
        dQ = G W_{e|X}ᵀ − diag(c) Q;  dW_{e|X} = Qᵀ G (+ d_we_x)  (likewise K, R)
        dW_e = Σ_b F dW_{e|X},  dF = W_e dW_{e|X}ᵀ  → scatter-added into dX rows idx
        (causal: running-mean backward)  dX += d[Q | K] [W_q; W_k];  d[W_q; W_k] = d[Q | K]ᵀ X

    As in the forward, Q and K (and E and R) share one token-major array, so dX and
    d[W_q; W_k] are one GEMM each.
    """
    cfg, P, x, idx = cache.config, cache.params, cache.x, cache.idx
    dt = x.dtype
    H, s = cfg.num_heads, cfg.low_rank
    B, N, D = x.shape
    dy = upstream(dy, "dy", x.shape, dt)
    kg = check_ksvd_grads(ksvd_grads, cache)
    # d[E | R] and the gradients of W_c, b_c, W_o, b_o (``output``)
    dER, grads = output_stage_backward(dy.reshape(-1, D), cache.out)
    dER = dER.reshape(B, N, H, 2 * s)
    if kg is not None:
        dE, dR = _er_halves(dER, s)
        dE += kg.escore
        dR += kg.rscore
    dqk, dwe_x, dwr_x, work = _scores_backward(dER, cache)
    if kg is not None and dwe_x is not None:
        if kg.we_x is not None:
            dwe_x += kg.we_x
        if kg.wr_x is not None:
            dwr_x += kg.wr_x
    del dER
    if idx is not None:
        F = cache.F
        grads["we"] = (F @ dwe_x).sum(axis=0)  # Σ_b F dW_{e|X}: (H, n, s)
        grads["wr"] = (F @ dwr_x).sum(axis=0)
        dF = P["we"] @ np.swapaxes(dwe_x, -1, -2)  # W_e dW_{e|X}ᵀ: (B, H, n, p)
        dF += P["wr"] @ np.swapaxes(dwr_x, -1, -2)
        dF = _merge(dF)  # (B, n, D), scatter-added into dX below
    else:
        grads["we"], grads["wr"] = dwe_x.sum(axis=0), dwr_x.sum(axis=0)
    if cache.qk_mean is not None:  # causal
        dqk = running_mean_backward(dqk, cache.qk_mean).x
    # forward was [Q | K] = X [W_q; W_k]ᵀ + [b_q; b_k]: one GEMM each for dX and d[W_q; W_k]
    dqk2 = dqk.reshape(-1, 2 * D)
    dx = np.matmul(dqk2, cache.w_qk, out=work).reshape(B, N, D)  # dX = dQ W_q + dK W_k
    if idx is not None:
        _scatter_add_rows(dx, dF, idx)  # + the path through F = X[:, idx]
    dw_qk = dqk2.T @ x.reshape(-1, D)
    db_qk = dqk2.sum(axis=0)
    if cfg.variant == "vision":
        grads["wqk"] = dw_qk
        if "bqk" in P:
            grads["bqk"] = db_qk
    else:
        grads["wq"], grads["wk"] = dw_qk[:D], dw_qk[D:]
        grads["bq"], grads["bk"] = db_qk[:D], db_qk[D:]
    grads["lam"] = np.zeros_like(P["lam"])  # the layer's output does not depend on Λ
    if kg is not None:
        grads["lam"] += kg.lam
        grads["we"] = grads["we"] + kg.we
        grads["wr"] = grads["wr"] + kg.wr
    return PrimalAttentionGrads(dx, {k: grads[k] for k in P})


def _scores_backward(dER: np.ndarray, cache: FastPrimalCache):
    """(d[Q | K], dW_{e|X}, dW_{r|X}, scratch) from d[E | R] (B, N, H, 2s), which becomes
    G in place; scratch is a free (B·N, D) array.

    Data-independent weights: dW_{e|X}, dW_{r|X} are per batch (B, H, p, s), summed by
    the caller.
    """
    qk, ER, inv = cache.qk, cache.ER, cache.inv_norm
    B, N, H, s2 = dER.shape
    s, p = s2 // 2, qk.shape[-1]
    we_x = cache.we_x if cache.we_x is not None else cache.params["we"]
    wr_x = cache.wr_x if cache.wr_x is not None else cache.params["wr"]
    er, der = ER.reshape(B, N, H, 2, s), dER.reshape(B, N, H, 2, s)
    # c_i = (e_i · dE_i)/‖q_i‖² (0 where clamped); d[Q | K] starts as −diag(c) [Q | K]
    coef = np.einsum("...i,...i->...", er, der).transpose(0, 1, 3, 2) * inv  # (B, N, 2, H)
    coef *= -inv
    coef[cache.clamped] = 0
    dqk = np.multiply(qk, coef[..., None])
    der *= inv.transpose(0, 1, 3, 2)[..., None]  # G = diag(1/‖q_i‖) dE, in place
    G_e, G_r = _er_halves(dER, s)
    q, k = _qk_halves(qk)
    dq, dk = _qk_halves(dqk)
    work = np.empty((B, H, N, p), dtype=qk.dtype)
    dq += np.matmul(G_e, np.swapaxes(we_x, -1, -2), out=work)  # dQ = G W_{e|X}ᵀ − diag(c) Q
    dk += np.matmul(G_r, np.swapaxes(wr_x, -1, -2), out=work)
    dwe_x = np.swapaxes(q, -1, -2) @ G_e  # dW_{e|X} = Qᵀ G: (B, H, p, s)
    dwr_x = np.swapaxes(k, -1, -2) @ G_r
    return dqk, dwe_x, dwr_x, work.reshape(B * N, H * p)
