"""Feature maps φ: R^d → R^p that factor an asymmetric kernel κ(x, z) = ⟨φ_q(x), φ_k(z)⟩.

docs/theory.md §1.2. Each map is a pure forward/backward pair acting on the last axis:

    phi, cache = feature_map(x, ...)        x (..., d) → phi (..., p)
    dx = feature_map_backward(dphi, cache)

``dx`` comes back as ``FeatureMapGrads(x)`` (the package's backward convention: one
named field per differentiable input).

Maps provided:

* ``cosine_normalize`` — φ(x) = x / max(‖x‖₂, 1e-12), p = d (PyTorch ``F.normalize``);
  the map of the paper's experiments (applied to q(x) and k(x)).
* ``identity_features`` — φ(x) = x, so κ is the bilinear form xᵀ W_qᵀ W_k z.
* ``poly2_features`` — explicit degree-2 map with ⟨φ(x), φ(z)⟩ = (xᵀz + c)², p = 1 + d + d(d+1)/2.
* ``positive_random_features`` — g(z) = exp(−‖z‖²/2)[exp(w_1ᵀz) … exp(w_mᵀz)]/√m,
  w_l ~ N(0, I): E[⟨g(x), g(z)⟩] = exp(xᵀz) (the exponential kernel; Performer-style).

``FEATURE_MAPS`` is a registry; ``register_feature_map`` adds a user's map and
``check_feature_map`` gradient-checks any registered map with ``gradcheck``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ._checks import (
    boolean,
    cache_of,
    callable_arg,
    check_finite,
    choice,
    float_array,
    float_dtype,
    positive_int,
    real_number,
    result_dtype,
    upstream,
)
from ._checks import seed as _seed
from .gradcheck import GradcheckReport, check_vjp

__all__ = [
    "NORMALIZE_EPS",
    "FeatureMapGrads",
    "cosine_normalize",
    "cosine_normalize_backward",
    "identity_features",
    "identity_features_backward",
    "poly2_features",
    "poly2_features_backward",
    "poly2_dim",
    "draw_random_features",
    "positive_random_features",
    "positive_random_features_backward",
    "FeatureMap",
    "FEATURE_MAPS",
    "register_feature_map",
    "get_feature_map",
    "check_feature_map",
]

NORMALIZE_EPS = 1e-12  # PyTorch F.normalize's default eps


class FeatureMapGrads(NamedTuple):
    """Gradient of a feature map with respect to its input x (shaped like x)."""

    x: np.ndarray


# --------------------------------------------------------------------------- cosine
class CosineCache(NamedTuple):
    y: np.ndarray  # (..., d) the normalised rows
    denom: np.ndarray  # (..., 1) max(‖x‖, eps)
    clamped: np.ndarray  # (..., 1) bool: ‖x‖ <= eps, where the denominator is the constant eps


def cosine_normalize(x: np.ndarray, eps: float = NORMALIZE_EPS) -> tuple[np.ndarray, CosineCache]:
    """φ(x) = x / max(‖x‖₂, eps) along the last axis (PyTorch ``F.normalize(x, dim=-1)``).

    Shapes: x (..., d) → φ (..., d). Rows of norm ≤ eps (zero rows included) are divided
    by eps instead, so no NaN arises.
    """
    x = float_array(x, "x", min_ndim=1)
    check_finite(x, "x")
    eps = real_number(eps, "eps", minimum=0.0, exclusive=True)
    y, cache = _cosine_normalize(x.astype(result_dtype(x), copy=False), eps)
    return y, cache._replace(y=y.copy())


def _cosine_normalize(
    x: np.ndarray, eps: float = NORMALIZE_EPS, out: np.ndarray | None = None
) -> tuple[np.ndarray, CosineCache]:
    """``cosine_normalize`` of a floating array, optionally writing φ into ``out`` (which may
    be ``x`` itself when the caller owns it and no longer needs it)."""
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    if not np.all(np.isfinite(norm)):
        norm = _rescaled_norm(x, norm)
    clamped = norm <= eps
    denom = np.maximum(norm, x.dtype.type(eps))
    y = np.divide(x, denom, out=out)
    return y, CosineCache(y, denom, clamped)


def _rescaled_norm(x: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """‖x‖₂ of the rows where Σx² overflowed although x is finite (entries near 1e154 in
    float64): computed as m·‖x/m‖₂ with m = max|x_i| of the row, which cannot overflow
    unless ‖x‖ itself exceeds the largest float (then a ``ValueError``)."""
    big = ~np.isfinite(norm[..., 0])
    rows = x[big]
    m = np.max(np.abs(rows), axis=-1, keepdims=True)
    scaled = rows / m
    with np.errstate(over="ignore"):
        fixed = m * np.sqrt(np.einsum("...i,...i->...", scaled, scaled))[..., None]
    if not np.all(np.isfinite(fixed)):
        raise ValueError(
            f"x has rows whose norm exceeds the largest {x.dtype} ({np.finfo(x.dtype).max:.3g}); "
            "rescale the input"
        )
    norm = norm.copy()
    norm[big] = fixed
    return norm


def cosine_normalize_backward(dy: np.ndarray, cache: CosineCache) -> FeatureMapGrads:
    """VJP of ``cosine_normalize``. Forward was y = x/‖x‖ (when ‖x‖ > eps), so

    dx = (dy − y (yᵀdy)) / ‖x‖;

    where ‖x‖ ≤ eps the forward was y = x/eps, so dx = dy/eps.
    """
    cache_of(cache, CosineCache, "cosine_normalize")
    dy = upstream(dy, "dy", cache.y.shape, cache.y.dtype)
    return FeatureMapGrads(_cosine_normalize_backward(dy, cache))


def _cosine_normalize_backward(
    dy: np.ndarray, cache: CosineCache, out: np.ndarray | None = None
) -> np.ndarray:
    """``cosine_normalize_backward``, optionally writing dx into ``out`` (which may be ``dy``
    itself when the caller owns it: every element is read before it is overwritten)."""
    y, denom, clamped = cache
    proj = np.einsum("...i,...i->...", y, dy)[..., None]  # yᵀdy per row, our own array
    proj[clamped] = 0  # clamped rows: y = x/eps, so dx = dy/eps
    t = y * proj  # the one full-size temporary
    if out is None:
        out = t
    np.subtract(dy, t, out=out)
    out /= denom
    return out.astype(y.dtype, copy=False)


# --------------------------------------------------------------------------- identity
class IdentityCache(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype


def identity_features(x: np.ndarray) -> tuple[np.ndarray, IdentityCache]:
    """φ(x) = x (a copy). Shapes: x (..., d) → φ (..., d)."""
    x = float_array(x, "x", min_ndim=1)
    check_finite(x, "x")
    dt = result_dtype(x)
    return x.astype(dt, copy=True), IdentityCache(x.shape, dt)


def identity_features_backward(dy: np.ndarray, cache: IdentityCache) -> FeatureMapGrads:
    """VJP of the identity map: dx = dy (a copy)."""
    cache_of(cache, IdentityCache, "identity_features")
    dy = upstream(dy, "dy", cache.shape, cache.dtype)
    return FeatureMapGrads(dy.copy())


# --------------------------------------------------------------------------- polynomial
class Poly2Cache(NamedTuple):
    x: np.ndarray
    c: float


def poly2_dim(d: int) -> int:
    """Feature dimension of ``poly2_features`` on inputs of dimension d."""
    return 1 + d + d * (d + 1) // 2


def poly2_features(x: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, Poly2Cache]:
    """Explicit degree-2 polynomial features, ⟨φ(x), φ(z)⟩ = (xᵀz + c)² exactly.

    φ(x) = [c, √(2c)·x_1 … √(2c)·x_d, (w_ij x_i x_j)_{i≤j}] with w_ii = 1, w_ij = √2 (i<j),
    pairs in ``np.triu_indices(d)`` order. Shapes: x (..., d) → φ (..., 1 + d + d(d+1)/2).
    Requires c ≥ 0.
    """
    x = float_array(x, "x", min_ndim=1)
    check_finite(x, "x")
    c = real_number(c, "c", minimum=0.0)
    dt = result_dtype(x)
    x = x.astype(dt, copy=False)
    d = x.shape[-1]
    iu, ju = np.triu_indices(d)
    w = np.where(iu == ju, 1.0, np.sqrt(2.0)).astype(dt)
    const = np.full((*x.shape[:-1], 1), c, dtype=dt)
    lin = dt.type(np.sqrt(2.0 * c)) * x
    quad = w * x[..., iu] * x[..., ju]
    return np.concatenate([const, lin, quad], axis=-1), Poly2Cache(x, float(c))


def poly2_features_backward(dphi: np.ndarray, cache: Poly2Cache) -> FeatureMapGrads:
    """VJP of ``poly2_features``.

    With G the d×d matrix holding w_ij·dφ_ij at (i, j), i ≤ j (zeros below the diagonal),
    ∂/∂x of Σ_{i≤j} dφ_ij w_ij x_i x_j is (G + Gᵀ) x; the linear block adds √(2c)·dφ_lin.
    """
    cache_of(cache, Poly2Cache, "poly2_features")
    x, c = cache
    d = x.shape[-1]
    dphi = upstream(dphi, "dphi", (*x.shape[:-1], poly2_dim(d)), x.dtype)
    iu, ju = np.triu_indices(d)
    w = np.where(iu == ju, 1.0, np.sqrt(2.0)).astype(x.dtype)
    g = np.zeros((*x.shape[:-1], d, d), dtype=x.dtype)
    g[..., iu, ju] = dphi[..., 1 + d :] * w
    sym = g + np.swapaxes(g, -1, -2)
    dx = np.matmul(sym, x[..., None])[..., 0]
    dx += x.dtype.type(np.sqrt(2.0 * c)) * dphi[..., 1 : 1 + d]
    return FeatureMapGrads(dx)


# --------------------------------------------------------------------------- random features
class RandomFeatureCache(NamedTuple):
    x: np.ndarray  # (..., d)
    w: np.ndarray  # (m, d)
    phi: np.ndarray  # (..., m)


def draw_random_features(d: int, m: int, seed: int = 0, *, dtype=np.float64) -> np.ndarray:
    """m i.i.d. projection vectors w_l ~ N(0, I_d), as an (m, d) array, seeded."""
    d = positive_int(d, "d")
    m = positive_int(m, "m")
    dt = float_dtype(dtype, "dtype")
    return np.random.default_rng(_seed(seed, "seed")).standard_normal((m, d)).astype(dt)


def positive_random_features(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, RandomFeatureCache]:
    """Positive random features for the exponential kernel (docs/theory.md §1.2).

        g(z)_l = exp(w_lᵀ z − ‖z‖²/2) / √m,    l = 1..m

    Since E_w[exp(wᵀ(x+z))] = exp(‖x+z‖²/2), E[⟨g(x), g(z)⟩] = exp(xᵀz) exactly, with
    every feature positive. Shapes: x (..., d), w (m, d) → φ (..., m).
    """
    x = float_array(x, "x", min_ndim=1)
    w = float_array(w, "w", ndim=2)
    check_finite(x, "x")
    check_finite(w, "w")
    if w.shape[1] != x.shape[-1]:
        raise ValueError(
            f"w has shape {w.shape} (m, d) but x has d = {x.shape[-1]} (x shape {x.shape})"
        )
    dt = result_dtype(x, w)
    expo = np.matmul(x, w.T, dtype=dt) - 0.5 * np.einsum("...i,...i->...", x, x)[..., None]
    if np.max(expo, initial=-np.inf) > np.log(np.finfo(dt).max) - np.log(w.shape[0]):
        raise ValueError(
            "positive_random_features: exponent w·x − ‖x‖²/2 overflows; rescale x "
            f"(max exponent {np.max(expo):.1f})"
        )
    phi = np.exp(expo) / dt.type(np.sqrt(w.shape[0]))
    return phi, RandomFeatureCache(x, w, phi.copy())


def positive_random_features_backward(
    dphi: np.ndarray, cache: RandomFeatureCache
) -> FeatureMapGrads:
    """VJP w.r.t. x (the projections w are held fixed): ∂g_l/∂z = g_l (w_l − z), so

    dz = (dφ∘φ) W − z Σ_l dφ_l φ_l.
    """
    cache_of(cache, RandomFeatureCache, "positive_random_features")
    x, w, phi = cache
    dphi = upstream(dphi, "dphi", phi.shape, phi.dtype)
    t = dphi * phi
    return FeatureMapGrads(np.matmul(t, w, dtype=phi.dtype) - x * t.sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- registry
class FeatureMap(NamedTuple):
    """A registered map: ``forward(x, **params) -> (phi, cache)`` acting on the last axis,
    ``backward(dphi, cache) -> FeatureMapGrads(x)``.

    ``make_params(d, seed)`` returns the keyword parameters the map needs for inputs of
    dimension d (e.g. the random projections); None if it needs none.
    """

    name: str
    forward: Callable[..., tuple[np.ndarray, Any]]
    backward: Callable[[np.ndarray, Any], FeatureMapGrads]
    make_params: Callable[[int, int], dict] | None = None
    description: str = ""


FEATURE_MAPS: dict[str, FeatureMap] = {}


def register_feature_map(
    name: str,
    forward: Callable[..., tuple[np.ndarray, Any]],
    backward: Callable[[np.ndarray, Any], Any],
    *,
    make_params: Callable[[int, int], dict] | None = None,
    description: str = "",
    overwrite: bool = False,
) -> FeatureMap:
    """Add a feature map to ``FEATURE_MAPS`` (then ``check_feature_map(name)`` checks it).

    ``forward(x, **params)`` maps x (..., d) to (phi (..., p_φ), cache) along the last axis;
    ``backward(dphi, cache)`` returns dx, either as ``FeatureMapGrads(x=dx)`` or as a bare
    array, which the registry wraps so that every registered backward follows the
    package's convention. A registered map works everywhere a map is named: the
    Primal-Attention layer (``PrimalAttentionConfig(feature_map=name)``), the KSVD loss
    and objective, the adapters, ``stationary_point`` and training (``train
    --feature-map name``).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a non-empty string, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError("name must be a non-empty string, got ''")
    callable_arg(forward, "forward")
    callable_arg(backward, "backward")
    callable_arg(make_params, "make_params", optional=True)
    if not isinstance(description, str):
        raise TypeError(
            f"description must be a string, got {type(description).__name__} {description!r}"
        )
    boolean(overwrite, "overwrite")
    if name in FEATURE_MAPS and not overwrite:
        raise ValueError(f"feature map {name!r} is already registered (pass overwrite=True)")
    fm = FeatureMap(name, forward, _conforming(backward), make_params, description)
    FEATURE_MAPS[name] = fm
    return fm


def _conforming(backward: Callable[[np.ndarray, Any], Any]) -> Callable[..., FeatureMapGrads]:
    """``backward`` returning ``FeatureMapGrads`` whether it returns that or a bare array."""

    def wrapped(dphi: np.ndarray, cache: Any) -> FeatureMapGrads:
        g = backward(dphi, cache)
        return g if isinstance(g, FeatureMapGrads) else FeatureMapGrads(np.asarray(g))

    wrapped.__name__ = getattr(backward, "__name__", "backward")
    wrapped.__doc__ = backward.__doc__
    wrapped.__wrapped__ = backward  # type: ignore[attr-defined]
    return wrapped


def get_feature_map(name: str) -> FeatureMap:
    """The registered map called ``name`` (a ``ValueError`` listing the registered ones
    if there is none)."""
    return feature_map_named(name, "name")


def feature_map_named(name: object, arg: str) -> FeatureMap:
    """``get_feature_map`` for the argument ``arg`` (named in the messages): a ``TypeError``
    for a non-string, a ``ValueError`` for a name that is not registered."""
    registered = ", ".join(FEATURE_MAPS)
    if not isinstance(name, str):
        raise TypeError(
            f"{arg} must be one of the registered feature maps ({registered}), got "
            f"{type(name).__name__} {name!r}"
        )
    if name not in FEATURE_MAPS:
        raise ValueError(
            f"{arg} must be one of the registered feature maps ({registered}), got {name!r}"
        )
    return FEATURE_MAPS[name]


def map_kwargs(fm: FeatureMap, map_params: object) -> dict:
    """``map_params`` checked to be a mapping of keyword arguments ``fm.forward`` accepts."""
    if map_params is None:
        return {}
    if not isinstance(map_params, Mapping):
        raise TypeError(
            f"map_params must be a mapping of keyword arguments of the feature map, got "
            f"{type(map_params).__name__}"
        )
    try:
        inspect.signature(fm.forward).bind(np.zeros((1, 1)), **map_params)
    except TypeError as exc:
        raise TypeError(
            f"map_params {sorted(map_params)} do not fit the feature map {fm.name!r}: {exc}"
        ) from None
    except ValueError:  # no signature to read (a builtin): the call itself will tell
        pass
    return dict(map_params)


def check_feature_map(
    name_or_map: str | FeatureMap,
    *,
    d: int = 3,
    n: int = 4,
    seed: int = 0,
    mode: str = "elementwise",
) -> GradcheckReport:
    """Finite-difference check of a registered map's backward on random (n, d) inputs."""
    if isinstance(name_or_map, str):
        fm = feature_map_named(name_or_map, "name_or_map")
    elif isinstance(name_or_map, FeatureMap):
        fm = name_or_map
    else:
        raise TypeError(
            "name_or_map must be a registered name or a FeatureMap, got "
            f"{type(name_or_map).__name__} {name_or_map!r}"
        )
    d, n = positive_int(d, "d"), positive_int(n, "n")
    seed = _seed(seed, "seed")
    choice(mode, "mode", ("elementwise", "directional"))
    rng = np.random.default_rng(seed)
    params = fm.make_params(d, seed) if fm.make_params else {}
    x = 0.5 * rng.standard_normal((n, d))
    phi, _ = fm.forward(x, **params)
    check_finite(np.asarray(phi), f"{fm.name}(x)")
    return check_vjp(
        lambda x: fm.forward(x, **params), fm.backward, {"x": x}, ["x"], mode=mode, seed=seed
    )


register_feature_map(
    "cosine", cosine_normalize, cosine_normalize_backward, description="x / max(‖x‖₂, 1e-12)"
)
register_feature_map(
    "identity", identity_features, identity_features_backward, description="x (bilinear kernel)"
)
register_feature_map(
    "poly2", poly2_features, poly2_features_backward, description="explicit map of (xᵀz + 1)²"
)
register_feature_map(
    "positive_random",
    positive_random_features,
    positive_random_features_backward,
    make_params=lambda d, seed: {"w": draw_random_features(d, 64, seed)},
    description="exp(w·x − ‖x‖²/2)/√m, m = 64 by default: E⟨φ(x), φ(z)⟩ = exp(xᵀz)",
)
