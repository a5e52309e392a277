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

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .._checks import cache_of, result_dtype, upstream
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
    if not config.rscores:
        return "rscores=False (the fast path has the [E, R] head output only)"
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

    Below the output stage the chain runs one block of ``ROWS`` tokens of one sequence at
    a time (d[E | R], d[Q | K] and the scratch of G W_{e|X}ᵀ live in buffers reused from
    block to block, so none of them is ever allocated at full size); dX and d[W_q; W_k]
    are one GEMM per block each, as Q and K share one token-major array.
    """
    cache_of(cache, FastPrimalCache, "fast_primal_attention")
    cfg, P, x, idx = cache.config, cache.params, cache.x, cache.idx
    D = x.shape[2]
    dy = upstream(dy, "dy", x.shape, x.dtype)
    kg = check_ksvd_grads(ksvd_grads, cache)
    # the gradients of W_c, b_c, W_o, b_o, and d[E | R] by blocks of rows (``output``)
    grads, d_er = output_stage_backward(dy.reshape(-1, D), cache.out)
    dx, dw_qk, db_qk, dwe_x, dwr_x = _rows_backward(cache, kg, d_er)
    if idx is not None:
        if kg is not None and kg.we_x is not None:
            dwe_x += kg.we_x
            dwr_x += kg.wr_x
        F = cache.F
        grads["we"] = (F @ dwe_x).sum(axis=0)  # Σ_b F dW_{e|X}: (H, n, s)
        grads["wr"] = (F @ dwr_x).sum(axis=0)
        dF = P["we"] @ np.swapaxes(dwe_x, -1, -2)  # W_e dW_{e|X}ᵀ: (B, H, n, p)
        dF += P["wr"] @ np.swapaxes(dwr_x, -1, -2)
        _scatter_add_rows(dx, _merge(dF), idx)  # + the path through F = X[:, idx]
    else:
        grads["we"], grads["wr"] = dwe_x, dwr_x
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


ROWS = 4096  # tokens per block of the backward below the output stage (causal: a sequence)


def _rows_backward(cache: FastPrimalCache, kg: KSVDGrads | None, d_er: Callable):
    """dX (B, N, D), d[W_q; W_k], d[b_q; b_k] and dW_{e|X}, dW_{r|X} ((B, H, p, s); for
    data-independent weights dW_e, dW_r (H, p, s)), one block of tokens of one sequence at
    a time, in buffers reused from block to block."""
    x, qk = cache.x, cache.qk
    B, N, D = x.shape
    H, p = qk.shape[3], qk.shape[4]
    s = cache.ER.shape[-1] // 2
    dt = x.dtype
    per_seq = cache.we_x is not None
    dw = [np.zeros((B, H, p, s) if per_seq else (H, p, s), dtype=dt) for _ in range(2)]
    dx = np.empty((B, N, D), dtype=dt)
    dw_qk = np.zeros((2 * D, D), dtype=dt)
    db_qk = np.zeros(2 * D, dtype=dt)
    n = N if cache.qk_mean is not None else min(N, ROWS)
    buf = (np.empty((n, H, 2, s), dt), np.empty((n, 2, H, p), dt), np.empty((H, n, p), dt))
    for b in range(B):
        dw_b = [w[b] if per_seq else w for w in dw]
        for a in range(0, N, n):
            z = min(a + n, N)
            dqk2 = _block_backward(cache, kg, d_er, b, a, z, buf, dw_b).reshape(z - a, 2 * D)
            np.matmul(dqk2, cache.w_qk, out=dx[b, a:z])  # dX = dQ W_q + dK W_k
            dw_qk += dqk2.T @ x[b, a:z]  # d[W_q; W_k] = d[Q | K]ᵀ X
            db_qk += dqk2.sum(axis=0)
    return dx, dw_qk, db_qk, dw[0], dw[1]


def _block_backward(cache, kg, d_er, b, a, z, buf, dw) -> np.ndarray:
    """d[Q | K] (z − a, 2, H, p) of tokens a…z−1 of sequence b; adds this block's part of
    dW_{e|X}, dW_{r|X} (H, p, s) into ``dw``. Module docstring: c, G, dQ, dW_{e|X}."""
    H, s = cache.ER.shape[2], cache.ER.shape[3] // 2
    n, N = z - a, cache.x.shape[1]
    rows = slice(b * N + a, b * N + z)
    der = d_er(rows.start, rows.stop, buf[0][:n].reshape(n, 2 * H * s)).reshape(n, H, 2, s)
    if kg is not None:  # the KSVD loss reads E and R too
        der[:, :, 0] += kg.escore[b, :, a:z].transpose(1, 0, 2)
        der[:, :, 1] += kg.rscore[b, :, a:z].transpose(1, 0, 2)
    er = cache.ER.reshape(-1, H, 2, s)[rows]
    qk = cache.qk.reshape(-1, *cache.qk.shape[2:])[rows]  # (n, 2, H, p)
    inv = cache.inv_norm.reshape(-1, 2, H)[rows]
    # c_i = (e_i · dE_i)/‖q_i‖² (0 where clamped); d[Q | K] starts as −diag(c) [Q | K]
    coef = np.einsum("...i,...i->...", er, der).transpose(0, 2, 1) * inv  # (n, 2, H)
    coef *= -inv
    coef[cache.clamped.reshape(-1, 2, H)[rows]] = 0
    dqk = np.multiply(qk, coef[..., None], out=buf[1][:n])
    der *= inv.transpose(0, 2, 1)[..., None]  # G = diag(1/‖q_i‖) dE, in place
    for j, name in enumerate(("we", "wr")):
        w = cache.params[name] if cache.we_x is None else (cache.we_x, cache.wr_x)[j][b]
        G = der[:, :, j].transpose(1, 0, 2)  # (H, n, s)
        t = np.matmul(G, np.swapaxes(w, -1, -2), out=buf[2][:, :n])  # G W_{e|X}ᵀ: (H, n, p)
        dqk[:, j] += t.transpose(1, 0, 2)  # dQ = G W_{e|X}ᵀ − diag(c) Q
        dw[j] += qk[:, j].transpose(1, 2, 0) @ G  # dW_{e|X} += Qᵀ G
    if cache.qk_mean is not None:  # causal (a whole sequence): running-mean backward
        one = cache.qk_mean._replace(shape=(1, *dqk.shape))
        dqk = running_mean_backward(dqk[None], one).x[0]
    return dqk
