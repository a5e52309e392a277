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
two halves of one (B, N, H, 2s) array [E | R], so the W_c map of all heads and tokens is a
single (B·N·H, 2s) × (2s, p) GEMM whose output is already ``merged`` (B, N, H·p).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import cache_of, result_dtype, upstream
from ..feature_maps import CosineCache, _cosine_normalize, _cosine_normalize_backward
from ..ksvd_loss import KSVDGrads, check_ksvd_grads
from ..layer import PrimalAttentionGrads, check_layer_input, sample_indices
from ..params import PrimalAttentionConfig, check_params
from ..primitives import running_mean, running_mean_backward

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
    if not config.rscores:
        return "rscores=False (the fast path has the [E, R] head output only)"
    if config.data_dependent and config.sampler != "linspace":
        return f"sampler={config.sampler!r} (the fast path has the authors' linspace only)"
    return None


class FastPrimalCache(NamedTuple):
    """Forward intermediates. ``escore``, ``rscore`` (B,H,N,s) and ``we_x``, ``wr_x``
    (B,H,p,s; None for data-independent weights) are what the KSVD loss consumes.

    Head arrays are (B, H, N, ·) views of token-major arrays (module docstring): ``escore``
    and ``rscore`` of one (B, N, H, 2s) array, ``cos_q`` and ``cos_k`` of ``cos_qk``."""

    config: PrimalAttentionConfig
    params: dict
    x: np.ndarray  # (B, N, D)
    mask: np.ndarray | None  # (B, N) bool
    idx: np.ndarray | None  # (n,) sampled positions
    q_rm: Any  # running-mean cache of the joint [Q | K] (causal) or None; k_rm is q_rm
    k_rm: Any
    cos_q: Any  # cosine caches; their .y is Φ_q, Φ_k (B,H,N,p)
    cos_k: Any
    F: np.ndarray | None  # (B, H, n, p)
    we_x: np.ndarray | None
    wr_x: np.ndarray | None
    escore: np.ndarray
    rscore: np.ndarray
    merged: np.ndarray  # (B, N, D) heads merged, input of the output projection
    cos_qk: Any = None  # cosine cache of the joint [Q | K] (B, N, 2, H, p); .y is Φ
    w_qk: np.ndarray | None = None  # the fused projection [W_q; W_k] (2D, D) of the forward

    @property
    def phi_q(self) -> np.ndarray:
        return self.cos_q.y  # type: ignore[attr-defined]

    @property
    def phi_k(self) -> np.ndarray:
        return self.cos_k.y  # type: ignore[attr-defined]


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


def _rows(t: np.ndarray) -> np.ndarray:
    """(B, H, N, k) head view of a token-major array → its (B·N·H, k) rows (a view)."""
    return t.transpose(0, 2, 1, 3).reshape(-1, t.shape[-1])


def _qk_projection(P: dict, variant: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The fused query-key projection [W_q; W_k] (2D, D) and bias [b_q; b_k] (2D,)."""
    if variant == "vision":
        return P["wqk"], P.get("bqk")
    return np.concatenate([P["wq"], P["wk"]]), np.concatenate([P["bq"], P["bk"]])


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
    q_rm = k_rm = None
    if config.variant == "causal":
        qk, q_rm = running_mean(qk, axis=1)  # q̃_i = (1/i) Σ_{t≤i} q_t, likewise k̃
        k_rm = q_rm  # one cache for the joint [Q | K] array (running mean along axis 1)
    # Φ = φ([Q | K]) row by row, in place on our own [Q | K] array (Q, K are not needed
    # afterwards); cos_q, cos_k are its halves, as (B, H, N, ·) views.
    phi, cos_qk = _cosine_normalize(qk, out=qk)
    halves = [_qk_halves(a) for a in cos_qk]  # (y, denom, clamped), each split in Q, K
    cos_q = CosineCache(*(h[0] for h in halves))
    cos_k = CosineCache(*(h[1] for h in halves))
    phi_q, phi_k = _qk_halves(phi)

    idx = sample_indices(config, N)
    F = we_x = wr_x = None
    # [E | R] (B, N, H, 2s); E, R are (B, H, N, s) views that the score GEMMs write into.
    ER = np.empty((B, N, H, 2 * s), dtype=dt)
    E = ER[..., :s].transpose(0, 2, 1, 3)
    R = ER[..., s:].transpose(0, 2, 1, 3)
    if idx is not None:
        if idx.shape[0] != P["we"].shape[1]:
            raise ValueError(
                f"{N} tokens give n = {idx.shape[0]} sampled rows but we has shape "
                f"{P['we'].shape} (built for num_tokens = {config.num_tokens})"
            )
        F = _heads(x[:, idx, :], H)  # (B, H, n, p), a view of the gathered rows
        Ft = np.swapaxes(F, -1, -2)
        we_x = Ft @ P["we"]  # W_{e|X} = Fᵀ W_e: (B, H, p, s)
        wr_x = Ft @ P["wr"]
        np.matmul(phi_q, we_x, out=E)  # E = Φ_q W_{e|X}
        np.matmul(phi_k, wr_x, out=R)  # R = Φ_k W_{r|X}
    else:
        np.matmul(phi_q, P["we"], out=E)  # (B,H,N,p) @ (H,p,s)
        np.matmul(phi_k, P["wr"], out=R)
    # O_h = [E, R] W_cᵀ + b_c for every (b, t, h) row at once; the result is merged (B, N, D).
    merged = (ER.reshape(-1, 2 * s) @ P["wc"].T).reshape(B, N, H, p)
    merged += P["bc"]
    if mask is not None:
        merged *= mask[:, :, None, None]  # rows of padded tokens → 0
    merged = merged.reshape(B, N, D)
    y = merged @ P["wo"].T
    y += P["bo"]
    cache = FastPrimalCache(
        config, P, x, mask, idx, q_rm, k_rm, cos_q, cos_k, F, we_x, wr_x, E, R, merged, cos_qk, w_qk
    )
    return y, cache


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

        dO = dY W_o;  dW_o = dYᵀ·merged;  (mask: dO rows of padded tokens = 0)
        dE = dO W_c[:, :s] (+ d_escore),  dR = dO W_c[:, s:] (+ d_rscore)
        dΦ_q = dE W_{e|X}ᵀ,  dW_{e|X} = Φ_qᵀ dE (+ d_we_x)
        dW_e = Σ_b F dW_{e|X},  dF = W_e dW_{e|X}ᵀ  → scatter-added into dX rows idx
        dQ = cosine backward (then running-mean backward), dX += dQ W_q + dK W_k

    As in the forward, Q and K (and E and R) share one token-major array, so dX and
    d[W_q; W_k] are one GEMM each, and dW_c, d[E, R] one GEMM over all (b, t, h) rows.
    """
    cache_of(cache, FastPrimalCache, "fast_primal_attention")
    cfg, P, x, mask, idx = cache.config, cache.params, cache.x, cache.mask, cache.idx
    dt = x.dtype
    H, p, s = cfg.num_heads, cfg.head_dim, cfg.low_rank
    B, N, D = x.shape
    dy = upstream(dy, "dy", x.shape, dt)
    kg = check_ksvd_grads(ksvd_grads, cache)
    d_escore = d_rscore = d_we_x = d_wr_x = None
    if kg is not None:
        d_escore, d_rscore, d_we_x, d_wr_x = kg.escore, kg.rscore, kg.we_x, kg.wr_x
    grads: dict[str, np.ndarray] = {}
    dy2 = dy.reshape(-1, D)
    grads["wo"] = dy2.T @ cache.merged.reshape(-1, D)
    grads["bo"] = dy2.sum(axis=0)
    dhead = dy @ P["wo"]  # dO, merged layout (B, N, H·p)
    if mask is not None:
        dhead *= mask[:, :, None]
    dh2 = dhead.reshape(-1, p)  # one row per (b, t, h)
    # forward was O = [E, R] W_cᵀ + b_c over the (b, t, h) rows, so dW_c = dOᵀ [E, R]
    # and d[E, R] = dO W_c; E and R are (b, t, h)-row views of the [E | R] array.
    E, R = cache.escore, cache.rscore
    grads["wc"] = np.empty_like(P["wc"])
    np.matmul(dh2.T, _rows(E), out=grads["wc"][:, :s])
    np.matmul(dh2.T, _rows(R), out=grads["wc"][:, s:])
    grads["bc"] = dh2.sum(axis=0)
    dER = (dh2 @ P["wc"]).reshape(B, N, H, 2 * s)
    dE = dER[..., :s].transpose(0, 2, 1, 3)  # (B, H, N, s) views
    dR = dER[..., s:].transpose(0, 2, 1, 3)
    if d_escore is not None:
        dE += d_escore
    if d_rscore is not None:
        dR += d_rscore
    phi_q, phi_k = cache.cos_q.y, cache.cos_k.y

    # d[Q | K] in the layout of the forward's joint array; dΦ_q, dΦ_k are written into it.
    dqk = np.empty((B, N, 2, H, p), dtype=dt)
    d_phi_q, d_phi_k = _qk_halves(dqk)
    if idx is not None:
        we_x, wr_x, F = cache.we_x, cache.wr_x, cache.F
        np.matmul(dE, np.swapaxes(we_x, -1, -2), out=d_phi_q)  # dΦ_q = dE W_{e|X}ᵀ
        np.matmul(dR, np.swapaxes(wr_x, -1, -2), out=d_phi_k)
        dwe_x = np.swapaxes(phi_q, -1, -2) @ dE  # dW_{e|X} = Φ_qᵀ dE: (B, H, p, s)
        dwr_x = np.swapaxes(phi_k, -1, -2) @ dR
        if d_we_x is not None:
            dwe_x += d_we_x
        if d_wr_x is not None:
            dwr_x += d_wr_x
        grads["we"] = (F @ dwe_x).sum(axis=0)  # Σ_b F dW_{e|X}: (H, n, s)
        grads["wr"] = (F @ dwr_x).sum(axis=0)
        dF = P["we"] @ np.swapaxes(dwe_x, -1, -2)  # W_e dW_{e|X}ᵀ: (B, H, n, p)
        dF += P["wr"] @ np.swapaxes(dwr_x, -1, -2)
        dF = _merge(dF)  # (B, n, D), scatter-added into dX below
    else:
        np.matmul(dE, np.swapaxes(P["we"], -1, -2), out=d_phi_q)
        np.matmul(dR, np.swapaxes(P["wr"], -1, -2), out=d_phi_k)
        grads["we"] = (np.swapaxes(phi_q, -1, -2) @ dE).sum(axis=0)
        grads["wr"] = (np.swapaxes(phi_k, -1, -2) @ dR).sum(axis=0)
    del dhead, dh2, dER, dE, dR  # free before the cosine backward's temporary
    # cosine backward on both halves at once, in place on our own buffer:
    # d[Q | K] = (dΦ − Φ (Φᵀ dΦ)) / ‖[Q | K]‖ row by row
    _cosine_normalize_backward(dqk, cache.cos_qk, out=dqk)
    if cfg.variant == "causal":
        dqk = running_mean_backward(dqk, cache.q_rm).x
    # forward was [Q | K] = X [W_q; W_k]ᵀ + [b_q; b_k]: one GEMM each for dX and d[W_q; W_k]
    dqk2 = dqk.reshape(-1, 2 * D)
    dx = (dqk2 @ cache.w_qk).reshape(B, N, D)  # dX = dQ W_q + dK W_k
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
