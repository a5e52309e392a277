"""The Primal-Attention layer (THEORY.md §4, CONFORMANCE.md), forward and manual backward.

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import bool_mask, check_finite, float_array, result_dtype
from .feature_maps import cosine_normalize, cosine_normalize_backward
from .params import PrimalAttentionConfig, check_params
from .primitives import running_mean, running_mean_backward
from .sampling import lra_indices, vision_indices

__all__ = ["PrimalCache", "primal_attention", "primal_attention_backward", "sample_indices"]


def sample_indices(config: PrimalAttentionConfig, num_tokens: int) -> np.ndarray | None:
    """Token positions of F for this config and sequence length (None if data-independent)."""
    if not config.data_dependent:
        return None
    if config.variant == "vision":
        return vision_indices(num_tokens, config.low_rank, config.rank_multi)
    return lra_indices(num_tokens, config.low_rank, config.rank_multi)


class PrimalCache(NamedTuple):
    """Forward intermediates. ``escore``, ``rscore`` (B,H,N,s) and ``we_x``, ``wr_x``
    (B,H,p,s; None for data-independent weights) are what the KSVD loss consumes."""

    config: PrimalAttentionConfig
    params: dict
    x: np.ndarray  # (B, N, D)
    mask: np.ndarray | None  # (B, N) bool
    idx: np.ndarray | None  # (n,) sampled positions
    q_rm: object  # running-mean caches (causal) or None
    k_rm: object
    cos_q: object  # cosine caches; their .y is Φ_q, Φ_k (B,H,N,p)
    cos_k: object
    F: np.ndarray | None  # (B, H, n, p)
    we_x: np.ndarray | None
    wr_x: np.ndarray | None
    escore: np.ndarray
    rscore: np.ndarray
    merged: np.ndarray  # (B, N, D) heads merged, input of the output projection


def _heads(t: np.ndarray, H: int) -> np.ndarray:
    """(B, N, H·p) → (B, H, N, p), contiguous."""
    B, N, D = t.shape
    return np.ascontiguousarray(t.reshape(B, N, H, D // H).transpose(0, 2, 1, 3))


def _merge(t: np.ndarray) -> np.ndarray:
    """(B, H, N, p) → (B, N, H·p)."""
    B, H, N, p = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, N, H * p)


def _check_x_mask(x, mask, config: PrimalAttentionConfig):
    x = float_array(x, "x", ndim=3)
    if x.shape[-1] != config.dim:
        raise ValueError(f"x has shape {x.shape}; expected (B, N, D) with D = dim = {config.dim}")
    check_finite(x, "x")
    if mask is not None:
        if config.variant != "lra":
            raise ValueError(f"a padding mask applies to the lra variant only (variant {config.variant!r})")
        mask = bool_mask(mask, "mask")
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask has shape {mask.shape}, expected (B, N) = {x.shape[:2]} (True = real token)")
    return x, mask


def primal_attention(
    x: np.ndarray,
    params: dict[str, np.ndarray],
    config: PrimalAttentionConfig,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, PrimalCache]:
    """Primal-Attention layer forward.

    Args:
        x: (B, N, D) layer input (in pre-LN blocks, the normalised residual stream).
        params: internal names of ``primal_np.params`` (``init_primal_attention_params``,
            ``from_state_dict``).
        config: ``PrimalAttentionConfig``.
        mask: LRA only, boolean (B, N), True = real token. Output rows of padded tokens are
            zero; padded tokens still enter F and the scores (as in the authors' code).

    Returns (y (B, N, D), cache); ``cache.escore``, ``cache.rscore`` are E, R (B, H, N, s).
    """
    x, mask = _check_x_mask(x, mask, config)
    check_params(params, config)
    dt = result_dtype(x, *params.values())
    x = x.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in params.items()}
    H, p, s = config.num_heads, config.head_dim, config.low_rank
    B, N, D = x.shape

    if config.variant == "vision":
        qk = x @ P["wqk"].T
        if "bqk" in P:
            qk += P["bqk"]
        qk = qk.reshape(B, N, 2, H, p)
        q = np.ascontiguousarray(qk[:, :, 0].transpose(0, 2, 1, 3))
        k = np.ascontiguousarray(qk[:, :, 1].transpose(0, 2, 1, 3))
    else:
        q = _heads(x @ P["wq"].T + P["bq"], H)
        k = _heads(x @ P["wk"].T + P["bk"], H)
    q_rm = k_rm = None
    if config.variant == "causal":
        q, q_rm = running_mean(q, axis=-2)
        k, k_rm = running_mean(k, axis=-2)
    phi_q, cos_q = cosine_normalize(q)
    phi_k, cos_k = cosine_normalize(k)

    idx = sample_indices(config, N)
    F = we_x = wr_x = None
    if idx is not None:
        if idx.shape[0] != P["we"].shape[1]:
            raise ValueError(
                f"{N} tokens give n = {idx.shape[0]} sampled rows but we has shape "
                f"{P['we'].shape} (built for num_tokens = {config.num_tokens})"
            )
        F = _heads(x[:, idx, :], H)  # (B, H, n, p)
        Ft = np.swapaxes(F, -1, -2)
        we_x = Ft @ P["we"]  # W_{e|X} = Fᵀ W_e: (B, H, p, s)
        wr_x = Ft @ P["wr"]
        E = phi_q @ we_x
        R = phi_k @ wr_x
    else:
        E = phi_q @ P["we"]  # (B,H,N,p) @ (H,p,s)
        R = phi_k @ P["wr"]
    wc = P["wc"]
    head = E @ wc[:, :s].T
    head += R @ wc[:, s:].T
    head += P["bc"]
    if mask is not None:
        head *= mask[:, None, :, None]
    merged = _merge(head)
    y = merged @ P["wo"].T
    y += P["bo"]
    cache = PrimalCache(config, P, x, mask, idx, q_rm, k_rm, cos_q, cos_k, F, we_x, wr_x, E, R, merged)
    return y, cache


def _scatter_rows(dF: np.ndarray, idx: np.ndarray, num_tokens: int) -> np.ndarray:
    """Adjoint of the gather x[:, idx, :]: (B, n, D) → (B, N, D), repeated indices summed.

    idx is sorted (linspace), so repeats are contiguous and ``np.add.reduceat`` sums them.
    """
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    out = np.zeros((dF.shape[0], num_tokens, dF.shape[2]), dtype=dF.dtype)
    out[:, idx[starts], :] = np.add.reduceat(dF, starts, axis=1)
    return out


def primal_attention_backward(
    dy: np.ndarray,
    cache: PrimalCache,
    *,
    d_escore: np.ndarray | None = None,
    d_rscore: np.ndarray | None = None,
    d_we_x: np.ndarray | None = None,
    d_wr_x: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """VJP of ``primal_attention``: returns (dx, grads by internal parameter name).

    ``d_escore``, ``d_rscore`` (B,H,N,s) and ``d_we_x``, ``d_wr_x`` (B,H,p,s) are extra
    upstream gradients on the intermediates, from the KSVD loss. Chain, in reverse:

        dO = dY W_o;  dW_o = dYᵀ·merged;  (mask: dO rows of padded tokens = 0)
        dE = dO W_c[:, :s] (+ d_escore),  dR = dO W_c[:, s:] (+ d_rscore)
        dΦ_q = dE W_{e|X}ᵀ,  dW_{e|X} = Φ_qᵀ dE (+ d_we_x)
        dW_e = Σ_b F dW_{e|X},  dF = W_e dW_{e|X}ᵀ  → scatter-added into dX rows idx
        dQ = cosine backward (then running-mean backward), dX += dQ W_q
    """
    cfg, P, x, mask, idx = cache.config, cache.params, cache.x, cache.mask, cache.idx
    dt = x.dtype
    H, p, s = cfg.num_heads, cfg.head_dim, cfg.low_rank
    B, N, D = x.shape
    dy = float_array(dy, "dy").astype(dt, copy=False)
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the output shape {x.shape}")
    grads: dict[str, np.ndarray] = {}
    dy2 = dy.reshape(-1, D)
    grads["wo"] = dy2.T @ cache.merged.reshape(-1, D)
    grads["bo"] = dy2.sum(axis=0)
    dhead = _heads(dy @ P["wo"], H)  # (B, H, N, p)
    if mask is not None:
        dhead *= mask[:, None, :, None]
    E, R = cache.escore, cache.rscore
    dh2 = dhead.reshape(-1, p)
    grads["wc"] = np.concatenate([dh2.T @ E.reshape(-1, s), dh2.T @ R.reshape(-1, s)], axis=1)
    grads["bc"] = dh2.sum(axis=0)
    dE = dhead @ P["wc"][:, :s]
    dR = dhead @ P["wc"][:, s:]
    if d_escore is not None:
        dE += d_escore
    if d_rscore is not None:
        dR += d_rscore
    phi_q, phi_k = cache.cos_q.y, cache.cos_k.y

    dx = np.zeros_like(x)
    if idx is not None:
        we_x, wr_x, F = cache.we_x, cache.wr_x, cache.F
        d_phi_q = dE @ np.swapaxes(we_x, -1, -2)
        d_phi_k = dR @ np.swapaxes(wr_x, -1, -2)
        dwe_x = np.swapaxes(phi_q, -1, -2) @ dE  # (B, H, p, s)
        dwr_x = np.swapaxes(phi_k, -1, -2) @ dR
        if d_we_x is not None:
            dwe_x += d_we_x
        if d_wr_x is not None:
            dwr_x += d_wr_x
        grads["we"] = (F @ dwe_x).sum(axis=0)  # Σ_b F dW_{e|X}: (H, n, s)
        grads["wr"] = (F @ dwr_x).sum(axis=0)
        dF = P["we"] @ np.swapaxes(dwe_x, -1, -2)  # W_e dW_{e|X}ᵀ: (B, H, n, p)
        dF += P["wr"] @ np.swapaxes(dwr_x, -1, -2)
        dx += _scatter_rows(_merge(dF), idx, N)
    else:
        d_phi_q = dE @ np.swapaxes(P["we"], -1, -2)
        d_phi_k = dR @ np.swapaxes(P["wr"], -1, -2)
        grads["we"] = (np.swapaxes(phi_q, -1, -2) @ dE).sum(axis=0)
        grads["wr"] = (np.swapaxes(phi_k, -1, -2) @ dR).sum(axis=0)
    dq = cosine_normalize_backward(d_phi_q, cache.cos_q)
    dk = cosine_normalize_backward(d_phi_k, cache.cos_k)
    if cfg.variant == "causal":
        dq = running_mean_backward(dq, cache.q_rm)
        dk = running_mean_backward(dk, cache.k_rm)
    x2 = x.reshape(-1, D)
    if cfg.variant == "vision":
        dqk = np.stack([dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3)], axis=2).reshape(B, N, 2 * D)
        dx += dqk @ P["wqk"]
        dqk2 = dqk.reshape(-1, 2 * D)
        grads["wqk"] = dqk2.T @ x2
        if "bqk" in P:
            grads["bqk"] = dqk2.sum(axis=0)
    else:
        for t, d in (("q", dq), ("k", dk)):
            dm = _merge(d)
            dx += dm @ P[f"w{t}"]
            dm2 = dm.reshape(-1, D)
            grads[f"w{t}"] = dm2.T @ x2
            grads[f"b{t}"] = dm2.sum(axis=0)
    grads["lam"] = np.zeros_like(P["lam"])  # the layer's output does not depend on Λ
    return dx, {k: grads[k] for k in P}
