"""The steps KEP-SVGP adds to Primal-Attention, one forward/backward pair per equation.

Per batch element b and head h, with scores E, R ∈ R^{N×s} (rows e_i, r_i), ℓ ∈ R^s,
Λ = diag(exp(ℓ))² = diag(exp(2ℓ)) (the code's ``lambda_sqrt_inv_diag ** 2``):

    V₁ = (E + R) Λ                    or, concatenated, [E; R] Λ ∈ R^{2N×s}   ``eigen_features``
    M = V₁ M_u                         the posterior mean, M_u ∈ R^{s×s}         ``posterior_mean``
    L_a = diag(exp(log s_a)) + tril(T_a, −1),  a = 1..s                      ``cholesky_factor``
    Y = M + (factor-applied noise)     the posterior sample                     ``posterior_sample``
    O ↦ W_t O + b_t on the token axis  the 2N → N map of the concate variant  ``token_map``

(a: inducing index, c: output index, r: noise index; docs/conformance.md explains which
index of L carries the triangle in the authors' layout). Leading axes are (B, H); the
per-head parameters keep the authors' leading 1 (``m_u`` (1, H, s, s), the factor
(1, H, s, s, s)) and broadcast over the batch, whose gradients are summed back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import (
    cache_of,
    check_finite,
    finite_array,
    float_array,
    result_dtype,
    sum_to_shape,
    upstream,
)
from ..primitives import LinearCache, linear, linear_backward

__all__ = [
    "EigenFeaturesCache",
    "EigenFeaturesGrads",
    "eigen_features",
    "eigen_features_backward",
    "PosteriorMeanCache",
    "PosteriorMeanGrads",
    "posterior_mean",
    "posterior_mean_backward",
    "CholeskyFactorCache",
    "CholeskyFactorGrads",
    "cholesky_factor",
    "cholesky_factor_backward",
    "PosteriorSampleCache",
    "PosteriorSampleGrads",
    "posterior_sample",
    "posterior_sample_backward",
    "TokenMapCache",
    "TokenMapGrads",
    "token_map",
    "token_map_backward",
]


# --------------------------------------------------------------------------- V₁
class EigenFeaturesCache(NamedTuple):
    escore: np.ndarray  # (B, H, N, s)
    rscore: np.ndarray
    lam: np.ndarray  # Λ = exp(ℓ)², (H, s)
    concate: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # V₁'s shape


class EigenFeaturesGrads(NamedTuple):
    escore: np.ndarray
    rscore: np.ndarray
    log_lambda: np.ndarray


def eigen_features(
    escore: np.ndarray, rscore: np.ndarray, log_lambda: np.ndarray, *, concate: bool = False
) -> tuple[np.ndarray, EigenFeaturesCache]:
    """V₁ = (E + R) Λ, or [E; R] Λ with ``concate``; Λ = diag(exp(ℓ))² (their ``v1``).

    Shapes: escore, rscore (B, H, N, s); log_lambda ℓ (H, s) (``log_lambda_sqrt_inv_diag``)
    → V₁ (B, H, N, s), or (B, H, 2N, s) with the e-rows first.
    """
    E = finite_array(escore, "escore", ndim=4)
    R = finite_array(rscore, "rscore", ndim=4)
    ell = finite_array(log_lambda, "log_lambda", ndim=2)
    if E.shape != R.shape or ell.shape != (E.shape[1], E.shape[3]):
        raise ValueError(
            "eigen_features needs escore and rscore (B, H, N, s) and log_lambda (H, s); got "
            f"{E.shape}, {R.shape}, {ell.shape}"
        )
    dt = result_dtype(E, R, ell)
    lam = np.exp(ell.astype(dt)) ** 2  # Λ = diag(exp(ℓ))²
    base = np.concatenate([E, R], axis=2) if concate else E + R
    v1 = (base * lam[:, None, :]).astype(dt, copy=False)
    return v1, EigenFeaturesCache(E, R, lam, bool(concate), dt, v1.shape)


def eigen_features_backward(dv1: np.ndarray, cache: EigenFeaturesCache) -> EigenFeaturesGrads:
    """VJP of ``eigen_features``: forward was V₁ = (E + R) Λ, Λ_l = exp(2ℓ_l), so

    dE = dR = dV₁ Λ (concate: the e-rows and the r-rows of dV₁ Λ),
    dℓ_l = 2 Λ_l Σ_{b,i} (E + R)_{il} dV₁_{il}   (concate: the sum runs over all 2N rows).
    """
    cache_of(cache, EigenFeaturesCache, "eigen_features")
    E, R, lam, concate, dt, shape = cache
    dv1 = upstream(dv1, "dv1", shape, dt)
    dbase = dv1 * lam[:, None, :]
    base = np.concatenate([E, R], axis=2) if concate else E + R
    d_ell = 2.0 * lam * np.einsum("bhis,bhis->hs", base, dv1)
    if concate:
        n = E.shape[2]
        return EigenFeaturesGrads(dbase[:, :, :n].copy(), dbase[:, :, n:].copy(), d_ell)
    return EigenFeaturesGrads(dbase, dbase.copy(), d_ell)


# --------------------------------------------------------------------------- mean
class PosteriorMeanCache(NamedTuple):
    v1: np.ndarray  # (B, H, N', s)
    m_u: np.ndarray  # (1, H, s, s)
    dtype: np.dtype


class PosteriorMeanGrads(NamedTuple):
    v1: np.ndarray
    m_u: np.ndarray


def posterior_mean(v1: np.ndarray, m_u: np.ndarray) -> tuple[np.ndarray, PosteriorMeanCache]:
    """M = V₁ M_u: mean[b,h,i,c] = Σ_a V₁[b,h,i,a] m_u[0,h,a,c] (their ``mean``).

    Shapes: v1 (B, H, N', s); m_u (1, H, s, s) (rows: inducing index, columns: output)
    → M (B, H, N', s).
    """
    v1 = finite_array(v1, "v1", ndim=4)
    m_u = finite_array(m_u, "m_u", ndim=4)
    s = v1.shape[3]
    if m_u.shape != (1, v1.shape[1], s, s):
        raise ValueError(f"m_u must be (1, H, s, s) = {(1, v1.shape[1], s, s)}, got {m_u.shape}")
    dt = result_dtype(v1, m_u)
    return np.matmul(v1, m_u, dtype=dt), PosteriorMeanCache(v1, m_u, dt)


def posterior_mean_backward(dmean: np.ndarray, cache: PosteriorMeanCache) -> PosteriorMeanGrads:
    """VJP of ``posterior_mean``: forward was M = V₁ M_u, so

    dV₁ = dM M_uᵀ,   dM_u = Σ_b V₁ᵀ dM.
    """
    cache_of(cache, PosteriorMeanCache, "posterior_mean")
    v1, m_u, dt = cache
    dmean = upstream(dmean, "dmean", v1.shape, dt)
    dv1 = np.matmul(dmean, np.swapaxes(m_u, -1, -2), dtype=dt)
    dm = np.matmul(np.swapaxes(v1, -1, -2), dmean, dtype=dt)
    return PosteriorMeanGrads(dv1, sum_to_shape(dm, m_u.shape))


# --------------------------------------------------------------------------- factor
class CholeskyFactorCache(NamedTuple):
    diag: np.ndarray  # exp(log_ssqrt), shaped like log_ssqrt
    shape: tuple[int, ...]  # the factor's shape (..., s, s)
    dtype: np.dtype


class CholeskyFactorGrads(NamedTuple):
    log_ssqrt: np.ndarray
    s_sqrt_low_triangle: np.ndarray


def cholesky_factor(
    log_ssqrt: np.ndarray, s_sqrt_low_triangle: np.ndarray
) -> tuple[np.ndarray, CholeskyFactorCache]:
    """L = diag(exp(log s)) + tril(T, −1) on the last two axes (their ``s_sqrt_local``).

    Shapes: log_ssqrt (..., s) — their (1, H, s, s); s_sqrt_low_triangle T (..., s, s) —
    their (1, H, s, s, s) → L (..., s, s): a lower-triangular matrix with positive diagonal
    for every leading index (L[..., r, r] = exp(log_ssqrt[..., r])).
    """
    log_s = float_array(log_ssqrt, "log_ssqrt", min_ndim=1)
    T = float_array(s_sqrt_low_triangle, "s_sqrt_low_triangle", min_ndim=2)
    check_finite(log_s, "log_ssqrt")
    check_finite(T, "s_sqrt_low_triangle")
    s = T.shape[-1]
    if T.shape[-2] != s or log_s.shape != T.shape[:-1]:
        raise ValueError(
            "cholesky_factor needs log_ssqrt (..., s) and s_sqrt_low_triangle (..., s, s) with "
            f"the same leading axes; got {log_s.shape}, {T.shape}"
        )
    dt = result_dtype(log_s, T)
    d = np.exp(log_s.astype(dt))
    L = np.tril(T.astype(dt), -1)
    idx = np.arange(s)
    L[..., idx, idx] = d
    return L, CholeskyFactorCache(d, L.shape, dt)


def cholesky_factor_backward(dL: np.ndarray, cache: CholeskyFactorCache) -> CholeskyFactorGrads:
    """VJP of ``cholesky_factor``: forward was L = diag(exp(log s)) + tril(T, −1), so

    d log s_r = dL_rr exp(log s_r),   dT = tril(dL, −1)   (the diagonal and upper part of T
    do not reach L: their gradient is zero).
    """
    cache_of(cache, CholeskyFactorCache, "cholesky_factor")
    d, shape, dt = cache
    dL = upstream(dL, "dL", shape, dt)
    diag = np.diagonal(dL, axis1=-2, axis2=-1)
    return CholeskyFactorGrads(diag * d, np.tril(dL, -1))


# --------------------------------------------------------------------------- samples
class PosteriorSampleCache(NamedTuple):
    v1: np.ndarray  # (B, H, N', s)
    factor: np.ndarray  # (H, s, s, s), the leading 1 dropped
    noise: np.ndarray  # broadcast to (B, H, N', s) ("authors") or (B, H, N', s, s)
    layout: str
    dtype: np.dtype


class PosteriorSampleGrads(NamedTuple):
    mean: np.ndarray
    v1: np.ndarray
    factor: np.ndarray


_SAMPLE = {  # Z = Σ_{a,r} V₁[i,a] · (factor) · ε
    "authors": "bhia,harc,bhir->bhic",  # factor of output c: M_c[a, r] = L[h, a, r, c]
    "per_output": "bhia,hcar,bhicr->bhic",  # factor of output c: L[h, c] (a, r), own noise
}


def _noise(noise: object, v1: np.ndarray, layout: str, dt: np.dtype) -> np.ndarray:
    B, H, n_rows, s = v1.shape
    eps = finite_array(noise, "noise", ndim=5)
    last = 1 if layout == "authors" else s
    ok = eps.shape[:2] == (B, H) and eps.shape[2] in (1, n_rows) and eps.shape[3:] == (s, last)
    if not ok:
        raise ValueError(
            f"noise has shape {eps.shape}; expected (B, H, N', s, {last}) = "
            f"{(B, H, n_rows, s, last)} (or a token axis of 1) for the {layout!r} layout"
        )
    full = np.broadcast_to(eps, (B, H, n_rows, s, last)).astype(dt, copy=False)
    return full[..., 0] if layout == "authors" else full


def posterior_sample(
    mean: np.ndarray,
    v1: np.ndarray,
    factor: np.ndarray,
    noise: np.ndarray,
    *,
    layout: str = "authors",
) -> tuple[np.ndarray, PosteriorSampleCache]:
    """Y = M + factor-applied noise, the reparameterised sample of the posterior.

    "authors" (their ``mean + (v2ᵀ-permuted @ randn).squeeze()``, v2 = V₁ ⋅ s_sqrt_local):
        Y[b,h,i,c] = M[b,h,i,c] + Σ_{a,r} V₁[b,h,i,a] L[h,a,r,c] ε[b,h,i,r]
    with noise ε (B, H, N', s, 1): one s-vector per token, shared by the s outputs.
    "per_output": Y[b,h,i,c] = M[b,h,i,c] + Σ_{a,r} V₁[b,h,i,a] L[h,c,a,r] ε[b,h,i,c,r] with
    noise (B, H, N', s, s): for each output c an exact draw of N(V₁ m_c, V₁ L_c L_cᵀ V₁ᵀ).

    Shapes: mean, v1 (B, H, N', s); factor (1, H, s, s, s) (``cholesky_factor`` of the
    authors' parameters). A noise token axis of 1 uses one draw for every token: then
    Y = V₁ (M_u + noise-applied factor) is a joint sample over the sequence; their code draws
    per token (independent marginals). ε = 0 gives the mean. The noise is not differentiated.
    """
    if layout not in _SAMPLE:
        raise ValueError(f"layout must be one of {tuple(_SAMPLE)}, got {layout!r}")
    mean = finite_array(mean, "mean", ndim=4)
    v1 = finite_array(v1, "v1", ndim=4)
    factor = finite_array(factor, "factor", ndim=5)
    B, H, n_rows, s = v1.shape
    if mean.shape != v1.shape or factor.shape != (1, H, s, s, s):
        raise ValueError(
            "posterior_sample needs mean and v1 (B, H, N', s) and factor (1, H, s, s, s); got "
            f"{mean.shape}, {v1.shape}, {factor.shape}"
        )
    dt = result_dtype(mean, v1, factor)
    eps = _noise(noise, v1, layout, dt)
    L = factor[0].astype(dt, copy=False)
    y = mean + np.einsum(_SAMPLE[layout], v1, L, eps, optimize=True)
    return y.astype(dt, copy=False), PosteriorSampleCache(v1, L, eps, layout, dt)


def posterior_sample_backward(dy: np.ndarray, cache: PosteriorSampleCache) -> PosteriorSampleGrads:
    """VJP of ``posterior_sample``: the forward is linear in M, in V₁ and in L, so

    dM = dY;
    "authors":    dV₁[i,a] = Σ_{r,c} dY[i,c] L[a,r,c] ε[i,r],   dL[a,r,c] = Σ_{b,i} V₁[i,a] ε[i,r] dY[i,c];
    "per_output": dV₁[i,a] = Σ_{c,r} dY[i,c] L[c,a,r] ε[i,c,r], dL[c,a,r] = Σ_{b,i} V₁[i,a] ε[i,c,r] dY[i,c].
    """
    cache_of(cache, PosteriorSampleCache, "posterior_sample")
    v1, L, eps, layout, dt = cache
    dy = upstream(dy, "dy", v1.shape, dt)
    if layout == "authors":
        dv1 = np.einsum("bhic,harc,bhir->bhia", dy, L, eps, optimize=True)
        dL = np.einsum("bhia,bhir,bhic->harc", v1, eps, dy, optimize=True)
    else:
        dv1 = np.einsum("bhic,hcar,bhicr->bhia", dy, L, eps, optimize=True)
        dL = np.einsum("bhia,bhicr,bhic->hcar", v1, eps, dy, optimize=True)
    return PosteriorSampleGrads(dy.copy(), dv1.astype(dt, copy=False), dL[None].astype(dt))


# --------------------------------------------------------------------------- token map
class TokenMapCache(NamedTuple):
    lin: LinearCache  # of the token-last view


class TokenMapGrads(NamedTuple):
    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None


def token_map(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, TokenMapCache]:
    """A linear map along the token axis: y[..., j, c] = Σ_m W[j, m] x[..., m, c] + b[j]
    (their ``embed_len_weight`` applied to the permuted head output: 2N → N rows).

    Shapes: x (..., M, p); weight (N, M), (out, in) layout; bias (N,) → y (..., N, p).
    """
    x = float_array(x, "x", min_ndim=2)
    y, lin = linear(np.swapaxes(x, -1, -2), weight, bias)
    return np.swapaxes(y, -1, -2).copy(), TokenMapCache(lin)


def token_map_backward(dy: np.ndarray, cache: TokenMapCache) -> TokenMapGrads:
    """VJP of ``token_map``: forward was yᵀ = xᵀ Wᵀ + b (per trailing column), so

    dx = Wᵀ dy,   dW = Σ dy xᵀ,   db = Σ_{…, c} dy[…, j, c].
    """
    cache_of(cache, TokenMapCache, "token_map")
    lin = cache.lin
    shape = (*lin.x.shape[:-2], lin.weight.shape[0], lin.x.shape[-2])  # y's (..., N, p)
    dy = upstream(dy, "dy", shape, lin.dtype)
    g = linear_backward(np.swapaxes(dy, -1, -2), lin)
    return TokenMapGrads(np.swapaxes(g.x, -1, -2).copy(), g.weight, g.bias)
