"""The standing bad-input suite of the library API (issue 13).

``CASES`` holds, for every public callable of ``primal_np.__all__`` (functions and the
configuration dataclasses) and for each of its parameters, bad values with the exception
they must raise (``ValueError`` or ``TypeError``; ``KeyError`` only where the API documents
it for a missing key of a dict of parameters) and a regex that the message must match: it
names the argument, what it got and what was expected. A row whose exception is ``None``
must work (read-only arrays: inputs are never written to).

A row is ``(function, parameter, bad value, exception, regex)``. The bad value is either a
value or a ``T``, a transformation of the parameter's good value (the same array as int64,
with a NaN, read-only, with an extra axis, …). Every row calls the function with the good
arguments of ``GOOD[function]`` except for its parameter, so that it fails because of that
one value. ``arrays(function, *parameters)`` writes the rows every floating array argument
gets (int, bool, complex, object and string dtypes; NaN; inf; read-only); the other rows
are written out, grouped by module.

``test_every_parameter_has_a_row`` makes the suite standing: a public callable cannot land
without rows for each of its parameters (or an entry, with its reason, in ``EXEMPT``).
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

import primal_np as pn
from primal_np.feature_maps import FEATURE_MAPS
from primal_np.primitives import LinearCache


# --------------------------------------------------------------------------- machinery
class T:
    """A bad value derived from the parameter's good value."""

    def __init__(self, fn: Callable[[Any], Any], label: str):
        self.fn, self.label = fn, label

    def __call__(self, good: Any) -> Any:
        return self.fn(good)

    def __repr__(self) -> str:
        return self.label


def _poke(a, value):
    a = np.array(a, dtype=float, copy=True)
    a.reshape(-1)[a.size // 2] = value
    return a


def _readonly(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


INT = T(lambda a: np.round(np.asarray(a) * 3).astype(np.int64), "int64")
BOOL = T(lambda a: np.asarray(a) > 0, "bool")
COMPLEX = T(lambda a: np.asarray(a) + 1j, "complex")
OBJECT = T(lambda a: np.asarray(a).astype(object), "object")
STR = T(lambda a: np.asarray(a).astype(str), "str")
NAN = T(lambda a: _poke(a, np.nan), "NaN")
INF = T(lambda a: _poke(a, -np.inf), "-inf")
READONLY = T(_readonly, "read-only")
UP = T(lambda a: np.asarray(a)[..., None], "extra trailing axis")
FLAT = T(lambda a: np.asarray(a).reshape(-1), "flattened to 1-d")
SCALAR = T(lambda a: np.asarray(a).reshape(-1)[0], "a 0-d scalar")
FLOAT = T(lambda a: np.asarray(a, dtype=float), "float64")
BATCH3 = T(lambda a: np.stack([np.asarray(a)[0]] * 3), "leading axis 3 instead of 2")
HALF = T(lambda a: np.asarray(a)[..., : max(1, np.shape(a)[-1] // 2)], "last axis halved")
NOT_A_CACHE = ("not", "a", "cache")


def entry(key, t):
    """The dict (or NamedTuple field, or pair element) ``key`` transformed by ``t``."""

    def f(good):
        if isinstance(good, tuple) and hasattr(good, "_replace"):
            return good._replace(**{key: t(getattr(good, key))})
        if isinstance(good, (tuple, list)) and isinstance(key, int):
            return type(good)(t(v) if i == key else v for i, v in enumerate(good))
        return {**good, key: t(good[key])}

    return T(f, f"{key}: {t}")


def first(t):
    """The first element of a list transformed by ``t`` (the layers of ``ksvd_loss``)."""
    return T(lambda good: [t(good[0]), *good[1:]], f"[0]: {t}")


def without(key):
    return T(lambda d: {k: v for k, v in d.items() if k != key}, f"without {key!r}")


def foreign_cache(good):
    """Another op's cache: a LinearCache, or a SoftmaxCache for linear_backward."""
    if isinstance(good, LinearCache):
        return pn.softmax(np.zeros((1, 2)))[1]
    return pn.linear(np.zeros((1, 2)), np.zeros((3, 2)))[1]


FOREIGN = T(foreign_cache, "another op's cache")


class Row(NamedTuple):
    fn: str
    arg: str
    bad: Any
    exc: type[Exception] | None  # None: the call must work
    match: str = ""


def _dtype_rows(fn, arg, name):
    n = re.escape(name)
    head = rf"^{n} must be a floating-point array \(float16, float32 or float64\), got dtype"
    kinds = [(INT, "int64"), (BOOL, "bool"), (COMPLEX, "complex128"), (OBJECT, "object"),
             (STR, r"<U\d+")]  # fmt: skip
    return [Row(fn, arg, t, TypeError, rf"{head} {d}$") for t, d in kinds]


def arrays(fn, *args, names=None, finite=True, wrap=None):
    """The rows every floating array argument gets: the five non-floating dtypes, NaN,
    -inf (both named, with the index), and a read-only copy (must work). ``names`` maps a
    parameter to the name its message uses; ``wrap(arg, t)`` turns an array
    transformation into one of the parameter (an entry of a dict or pair)."""
    rows = []
    for arg in args:
        name = (names or {}).get(arg, arg)
        n = re.escape(name)
        sub = [*_dtype_rows(fn, arg, name), Row(fn, arg, READONLY, None)]
        if finite:
            sub += [Row(fn, arg, NAN, ValueError, rf"^{n} must be finite, got nan at index"),
                    Row(fn, arg, INF, ValueError, rf"^{n} must be finite, got -inf at index")]  # fmt: skip
        if wrap is not None:
            sub = [r._replace(arg=wrap[0], bad=wrap[1](arg, r.bad)) for r in sub]
        rows += sub
    return rows


def masks(fn, arg, meaning="True = may attend"):
    m = re.escape(f"{arg} must be a boolean array ({meaning}), got dtype")
    return [
        Row(fn, arg, INT, TypeError, rf"^{m} int64$"),
        Row(fn, arg, FLOAT, TypeError, rf"^{m} float64$"),
        Row(fn, arg, STR, TypeError, rf"^{m} <U\d+$"),
        Row(fn, arg, OBJECT, TypeError, rf"^{m} object$"),
        Row(fn, arg, READONLY, None),
    ]


def flag(fn, arg):
    return [
        Row(fn, arg, "yes", TypeError, rf"^{arg} must be True or False, got 'yes'$"),
        Row(fn, arg, 1, TypeError, rf"^{arg} must be True or False, got 1$"),
        Row(fn, arg, None, TypeError, rf"^{arg} must be True or False, got None$"),
    ]


def integer(fn, arg, minimum=1):
    return [
        Row(fn, arg, True, TypeError, rf"^{arg} must be an integer, got bool True$"),
        Row(fn, arg, 2.0, TypeError, rf"^{arg} must be an integer, got float 2.0$"),
        Row(fn, arg, "2", TypeError, rf"^{arg} must be an integer, got str '2'$"),
        Row(fn, arg, minimum - 1, ValueError, rf"^{arg} must be >= {minimum}, got {minimum - 1}$"),
    ]


def real(fn, arg, minimum=None, exclusive=False):
    rows = [
        Row(fn, arg, "0.5", TypeError, rf"^{arg} must be a real number, got str '0.5'$"),
        Row(fn, arg, True, TypeError, rf"^{arg} must be a real number, got bool True$"),
        Row(fn, arg, float("nan"), ValueError, rf"^{arg} must be finite, got nan$"),
        Row(fn, arg, float("inf"), ValueError, rf"^{arg} must be finite, got inf$"),
    ]
    if minimum is not None:
        op = ">" if exclusive else ">="
        bad = minimum if exclusive else minimum - 1.0
        rows.append(Row(fn, arg, bad, ValueError, rf"^{arg} must be {op} {minimum}, got {bad}$"))
    return rows


def option(fn, arg, good="", numeric_bad=3, name=None):
    """A string option: a number is a TypeError, an unknown name a ValueError; both list the
    options (``good`` is one of them, looked for in the message)."""
    g, n = re.escape(repr(good)), re.escape(name or arg)
    return [
        Row(fn, arg, numeric_bad, TypeError,
            rf"^{n} must be one of \(.*{g}.*\), got {type(numeric_bad).__name__} {numeric_bad!r}$"),
        Row(fn, arg, "nope", ValueError, rf"^{n} must be one of \(.*{g}.*\), got 'nope'$"),
    ]  # fmt: skip


def seed(fn, arg="seed"):
    return integer(fn, arg, minimum=0)


def dtype(fn, arg="dtype"):
    return [
        Row(fn, arg, np.int64, TypeError, rf"^{arg} must be a floating dtype .*got int64$"),
        Row(
            fn, arg, "complex128", TypeError, rf"^{arg} must be a floating dtype .*got complex128$"
        ),
        Row(fn, arg, "nope", TypeError, rf"^{arg} must be a floating dtype, got 'nope'$"),
    ]


def caches(fn, expected, op):
    head = rf"^cache must be the {expected} returned by {re.escape(op)}, got"
    return [
        Row(fn, "cache", FOREIGN, TypeError, rf"{head} (Linear|Softmax)Cache$"),
        Row(fn, "cache", NOT_A_CACHE, TypeError, rf"{head} tuple$"),
    ]


def upstream(fn, arg, shape, name=None, wrap=None):
    """An upstream gradient: the array rows and a wrong shape (never broadcast)."""
    name = name or arg
    shape_row = Row(fn, arg, UP, ValueError,
                    rf"^{re.escape(name)} has shape \(.*\), expected the output shape "
                    rf"{re.escape(str(shape))}$")  # fmt: skip
    if wrap is not None:
        shape_row = shape_row._replace(arg=wrap[0], bad=wrap[1](arg, UP))
    return [*arrays(fn, arg, names={arg: name}, wrap=wrap), shape_row]


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- good calls
MASK = np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=bool)  # (3, 5)
PAD = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)  # (B, N) = (2, 5)
CFG = pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, rank_multi=2)
KCFG = pn.KEPSVGPConfig(dim=4, num_heads=2, low_rank=2, rank_multi=2, variant="cola")
PROBE = "_bad_input_probe"  # the name register_feature_map's rows would register


def _dual(**kw):
    return dict(q=rnd(2, 3, 4, seed=1), k=rnd(2, 5, 4, seed=2), v=rnd(2, 5, 3, seed=3),
                mask=MASK, causal=False, scale=None) | kw  # fmt: skip


def _bwd(forward, kw, dname, *, seed=9):
    out, cache = forward(**kw)
    if isinstance(out, tuple):
        return {dname: tuple(rnd(*o.shape, seed=seed + i) for i, o in enumerate(out)),
                "cache": cache}  # fmt: skip
    return {dname: rnd(*np.shape(out), seed=seed), "cache": cache}


def _x_w():  # x (N, d) = (6, 4), W_q, W_k (3, 4): one head, p = 3
    return dict(x=rnd(6, 4, seed=1), W_q=rnd(3, 4, seed=2), W_k=rnd(3, 4, seed=3))


def _dual_sol():  # KSVD shapes: N = 5, M = 4, p = 3, s = 2
    return dict(phi_q=rnd(5, 3, seed=1), phi_k=rnd(4, 3, seed=2), H_e=rnd(5, 2, seed=3),
                H_r=rnd(4, 2, seed=4))  # fmt: skip


def _primal_sol():
    return dict(phi_q=rnd(5, 3, seed=1), phi_k=rnd(4, 3, seed=2), W_e=rnd(3, 2, seed=3),
                W_r=rnd(3, 2, seed=4), lam=np.array([0.7, 1.3]))  # fmt: skip


def _layer(**kw):
    return dict(x=rnd(2, 5, 4, seed=1), params=pn.init_primal_attention_params(CFG, seed=0),
                config=CFG, mask=PAD) | kw  # fmt: skip


def _layer_bwd():
    y, cache = pn.primal_attention(**_layer())
    _, lc = pn.ksvd_loss([pn.ksvd_terms_from_cache(cache)])
    (kg,) = pn.ksvd_loss_backward(0.5, lc).layers
    return dict(dy=rnd(*y.shape, seed=7), cache=cache, ksvd_grads=kg)


def _kep(**kw):
    x = rnd(2, 5, 4, seed=1)
    return dict(x=x, params=pn.init_kep_svgp_params(KCFG, seed=0), config=KCFG,
                noise=rnd(*pn.kep_svgp.noise_shape(KCFG, 2, 5), seed=2), rng=None,
                mask=PAD) | kw  # fmt: skip


def _kep_bwd():
    y, cache = pn.kep_svgp_attention(**_kep())
    _, lc = pn.kep_svgp_losses(cache)
    lg = pn.kep_svgp_losses_backward((0.3, 0.5), lc)
    return dict(dy=rnd(*y.shape, seed=7), cache=cache, loss_grads=lg)


def _mha():
    return dict(x=rnd(2, 5, 4, seed=1), params=pn.init_mha_params(4, seed=0), num_heads=2,
                padding_mask=PAD, attn_mask=np.tri(5, dtype=bool) | MASK[2], causal=False)  # fmt: skip


def _cube(x):
    return float(np.sum(x**3))


def _gradcheck():
    x = rnd(2, 3)
    return dict(loss=_cube, inputs={"x": x}, grads={"x": 3 * x**2})


GOOD: dict[str, Callable[[Any], dict]] = {
    # primitives
    "linear": lambda tmp: dict(x=rnd(2, 3, 4), weight=rnd(5, 4, seed=1), bias=rnd(5, seed=2)),
    "linear_backward": lambda tmp: _bwd(pn.linear, GOOD["linear"](tmp), "dy"),
    "softmax": lambda tmp: dict(s=rnd(3, 5), mask=MASK),
    "softmax_backward": lambda tmp: _bwd(pn.softmax, GOOD["softmax"](tmp), "dp"),
    "logsumexp": lambda tmp: dict(s=rnd(3, 5), mask=MASK),
    "split_heads": lambda tmp: dict(x=rnd(2, 3, 4), num_heads=2),
    "merge_heads": lambda tmp: dict(x=rnd(2, 2, 3, 2)),
    # dual
    "attention_weights": lambda tmp: {k: v for k, v in _dual().items() if k != "v"},
    "dual_attention": lambda tmp: _dual(block_size=2),
    "dual_attention_backward": lambda tmp: _bwd(pn.dual_attention, _dual(), "dout"),
    # equivalence
    "stationary_point": lambda tmp: _x_w() | dict(s=2, feature_map="cosine", map_params=None),
    "scores_from_x": lambda tmp: _x_w() | dict(H_e=rnd(6, 2, seed=4), H_r=rnd(6, 2, seed=5),
                                               form="primal", feature_map="cosine",
                                               map_params=None),  # fmt: skip
    "scores_from_x_backward": lambda tmp: _bwd(pn.scores_from_x, GOOD["scores_from_x"](tmp),
                                               "dscores"),  # fmt: skip
    # feature maps
    "check_feature_map": lambda tmp: dict(name_or_map="identity", d=3, n=4, seed=0,
                                          mode="elementwise"),  # fmt: skip
    "cosine_normalize": lambda tmp: dict(x=rnd(3, 4), eps=1e-12),
    "cosine_normalize_backward": lambda tmp: _bwd(pn.cosine_normalize, dict(x=rnd(3, 4)), "dy"),
    "identity_features": lambda tmp: dict(x=rnd(3, 4)),
    "identity_features_backward": lambda tmp: _bwd(pn.identity_features, dict(x=rnd(3, 4)), "dy"),
    "poly2_features": lambda tmp: dict(x=rnd(3, 4), c=1.0),
    "poly2_features_backward": lambda tmp: _bwd(pn.poly2_features, dict(x=rnd(3, 4)), "dphi"),
    "draw_random_features": lambda tmp: dict(d=4, m=6, seed=0, dtype=np.float64),
    "positive_random_features": lambda tmp: dict(x=0.5 * rnd(3, 4), w=rnd(6, 4, seed=1)),
    "positive_random_features_backward": lambda tmp: _bwd(
        pn.positive_random_features, GOOD["positive_random_features"](tmp), "dphi"),
    "register_feature_map": lambda tmp: dict(
        name=PROBE, forward=pn.identity_features, backward=pn.identity_features_backward,
        make_params=None, description="", overwrite=False),
    "get_feature_map": lambda tmp: dict(name="cosine"),
    # kernels
    "kernel_matrix": lambda tmp: dict(phi_q=rnd(2, 3, 4, seed=1), phi_k=rnd(2, 5, 4, seed=2)),
    "kernel_matrix_backward": lambda tmp: _bwd(pn.kernel_matrix, GOOD["kernel_matrix"](tmp),
                                               "dK"),  # fmt: skip
    "softmax_kernel": lambda tmp: {k: v for k, v in _dual().items() if k != "v"},
    "random_feature_softmax_kernel": lambda tmp: dict(
        q=0.5 * rnd(2, 3, 4, seed=1), k=0.5 * rnd(2, 5, 4, seed=2), w=rnd(6, 4, seed=3),
        scale=None),
    "asymmetry": lambda tmp: dict(K=rnd(4, 4)),
    # ksvd
    "ksvd": lambda tmp: dict(K=rnd(5, 4), s=2, method="auto"),
    "primal_weights": lambda tmp: _dual_sol(),
    "primal_weights_backward": lambda tmp: _bwd(pn.primal_weights, _dual_sol(), "dW"),
    "kkt_weights": lambda tmp: _dual_sol() | dict(sigma=np.array([2.0, 1.0])),
    "kkt_residuals": lambda tmp: _primal_sol() | _dual_sol() | dict(E=rnd(5, 2, seed=5),
                                                                    R=rnd(4, 2, seed=6)),  # fmt: skip
    "shifted_eigen_residual": lambda tmp: dict(K=rnd(5, 4), H_e=rnd(5, 2, seed=1),
                                               H_r=rnd(4, 2, seed=2), sigma=np.array([2.0, 1.0])),  # fmt: skip
    "ksvd_objective": lambda tmp: _primal_sol(),
    "ksvd_objective_terms": lambda tmp: _primal_sol(),
    "ksvd_objective_grad": lambda tmp: _primal_sol() | dict(dJ=1.0),
    # scores
    "primal_scores": lambda tmp: dict(phi_q=rnd(2, 5, 3, seed=1), phi_k=rnd(2, 4, 3, seed=2),
                                      W_e=rnd(3, 2, seed=3), W_r=rnd(3, 2, seed=4)),  # fmt: skip
    "primal_scores_backward": lambda tmp: _bwd(pn.primal_scores, GOOD["primal_scores"](tmp),
                                               "dscores"),  # fmt: skip
    "dual_scores": lambda tmp: dict(K=rnd(2, 5, 4, seed=1), H_e=rnd(2, 5, 2, seed=2),
                                    H_r=rnd(2, 4, 2, seed=3)),  # fmt: skip
    "dual_scores_backward": lambda tmp: _bwd(pn.dual_scores, GOOD["dual_scores"](tmp),
                                             "dscores"),  # fmt: skip
    # gradcheck
    "gradcheck": lambda tmp: _gradcheck() | dict(mode="elementwise", rtol=1e-6, atol=1e-9,
                                                 n_directions=3, seed=0),  # fmt: skip
    "taylor_test": lambda tmp: _gradcheck() | dict(seed=0, steps=None, slope_range=(1.8, 2.2)),
    "check_vjp": lambda tmp: dict(forward=pn.identity_features,
                                  backward=pn.identity_features_backward,
                                  inputs={"x": rnd(2, 3)}, wrt=["x"], mode="elementwise", seed=0,
                                  rtol=1e-6, atol=1e-9, n_directions=3),  # fmt: skip
    # ksvd loss
    "KSVDConvention": lambda tmp: dict(quadratic="lambda_sq", tokens="mean", trace="params",
                                       square="batch", outer="mean", layers="mean"),  # fmt: skip
    "ksvd_loss": lambda tmp: dict(
        layers=[pn.ksvd_terms_from_cache(pn.primal_attention(**_layer())[1])],
        convention="lra", trace_no_x=None),
    "ksvd_loss_backward": lambda tmp: dict(dloss=0.5, cache=pn.ksvd_loss(
        **GOOD["ksvd_loss"](tmp))[1]),
    "ksvd_terms_from_cache": lambda tmp: dict(cache=pn.primal_attention(**_layer())[1]),
    # layer
    "primal_attention": lambda tmp: _layer(),
    "primal_attention_backward": lambda tmp: _layer_bwd(),
    "layer_objective": lambda tmp: _layer(cotangent=rnd(2, 5, 4, seed=3), eta=0.5,
                                          convention="lra", trace_no_x=None),  # fmt: skip
    # params
    "PrimalAttentionConfig": lambda tmp: dict(
        dim=4, num_heads=2, low_rank=1, rank_multi=2, variant="lra", data_dependent=None,
        qk_bias=False, num_tokens=None, feature_map="cosine", feature_seed=0,
        sampler="linspace", rscores=True),
    "init_primal_attention_params": lambda tmp: dict(config=CFG, seed=0, dtype=np.float64,
                                                     linear_init=None),  # fmt: skip
    "to_state_dict": lambda tmp: dict(params=pn.init_primal_attention_params(CFG), config=CFG,
                                      prefix="attn."),  # fmt: skip
    "from_state_dict": lambda tmp: dict(state=pn.to_state_dict(
        pn.init_primal_attention_params(CFG), CFG, "attn."), config=CFG, prefix="attn."),
    "save_state_dict": lambda tmp: dict(path=tmp / "sd.npz", params=pn.init_primal_attention_params(
        CFG), config=CFG, prefix=""),
    "load_state_dict": lambda tmp: dict(path=_saved(tmp), config=CFG, prefix=""),
    # kep_svgp
    "KEPSVGPConfig": lambda tmp: dict(
        dim=4, num_heads=2, low_rank=2, rank_multi=2, embed_len=5, variant="vision",
        concate=False, qk_bias=False, apply_proj=False, factor_layout="authors",
        authors_squeeze=False),
    "init_kep_svgp_params": lambda tmp: dict(config=KCFG, seed=0, dtype=np.float64),
    "kep_to_state_dict": lambda tmp: dict(params=pn.init_kep_svgp_params(KCFG), config=KCFG,
                                          prefix="attn."),  # fmt: skip
    "kep_from_state_dict": lambda tmp: dict(state=pn.kep_to_state_dict(
        pn.init_kep_svgp_params(KCFG), KCFG, "attn."), config=KCFG, prefix="attn."),
    "kep_svgp_attention": lambda tmp: _kep(),
    "kep_svgp_attention_backward": lambda tmp: _kep_bwd(),
    "kep_svgp_losses": lambda tmp: dict(cache=pn.kep_svgp_attention(**_kep())[1]),
    "kep_svgp_losses_backward": lambda tmp: dict(
        dlosses=(0.3, 0.5), cache=pn.kep_svgp_losses(pn.kep_svgp_attention(**_kep())[1])[1]),
    "kep_svgp_objective": lambda tmp: {k: v for k, v in _kep().items() if k != "rng"} | dict(
        cotangent=rnd(2, 5, 4, seed=3), eta=0.5, eta_kl=0.1),
    # mha
    "init_mha_params": lambda tmp: dict(dim=4, seed=0, dtype=np.float64),
    "mha_attention": lambda tmp: _mha(),
    "mha_attention_backward": lambda tmp: _bwd(pn.mha_attention, _mha(), "dy"),
}  # fmt: skip


def _saved(tmp):
    path = tmp / "sd.npz"
    pn.save_state_dict(path, pn.init_primal_attention_params(CFG), CFG)
    return path


def _text_file(tmp):
    path = tmp / "not.npz"
    path.write_text("not an npz")
    return path


def _pickled_npz(tmp):
    path = tmp / "pickled.npz"
    np.savez(path, **{"W_q.weight": np.array([{"a": 1}], dtype=object)})
    return path


# --------------------------------------------------------------------------- the table
V, TE, KE = ValueError, TypeError, KeyError
LAYER_PARAMS = tuple(pn.init_primal_attention_params(CFG))  # every entry of the layer's dict
MHA_PARAMS = ("W_q", "b_q", "W_o", "b_o")

CASES: list[Row] = [Row(*r) if not isinstance(r, Row) else r for r in [
    # ---------------------------------------------------------------- primitives
    *arrays("linear", "x", "weight", "bias"),
    ("linear", "x", SCALAR, V, r"^x must have at least 1 dimensions, got shape \(\)$"),
    ("linear", "x", HALF, V, r"^x has 2 input features \(shape \(2, 3, 2\)\) but weight expects 4"),
    ("linear", "weight", UP, V, r"^weight must have 2 dimensions, got shape \(5, 4, 1\)$"),
    ("linear", "bias", UP, V, r"^bias must have 1 dimensions, got shape \(5, 1\)$"),
    ("linear", "bias", HALF, V, r"^bias has shape \(2,\), expected \(5,\) to match weight"),
    *upstream("linear_backward", "dy", (2, 3, 5)),
    *caches("linear_backward", "LinearCache", "linear"),
    *arrays("softmax", "s"),
    ("softmax", "s", SCALAR, V, r"^s must have at least 1 dimensions, got shape \(\)$"),
    *masks("softmax", "mask"),
    ("softmax", "mask", UP, V, r"^mask of shape \(3, 5, 1\) does not broadcast to s of shape"),
    ("softmax", "mask", T(lambda m: np.stack([m, m]), "(2, 3, 5)"), V,
     r"^mask of shape \(2, 3, 5\) would enlarge s of shape \(3, 5\)"),
    *upstream("softmax_backward", "dp", (3, 5)),
    *caches("softmax_backward", "SoftmaxCache", "softmax"),
    *arrays("logsumexp", "s"),
    ("logsumexp", "s", SCALAR, V, r"^s must have at least 1 dimensions, got shape \(\)$"),
    *masks("logsumexp", "mask"),
    ("logsumexp", "mask", UP, V, r"^mask of shape \(3, 5, 1\) does not broadcast to s of shape"),
    *arrays("split_heads", "x", finite=False),
    ("split_heads", "x", FLAT, V, r"^x must have shape \(\.\.\., N, H\*p\), got shape \(24,\)$"),
    *integer("split_heads", "num_heads"),
    ("split_heads", "num_heads", 3, V, r"^num_heads = 3 does not divide the last axis of x \(4"),
    *arrays("merge_heads", "x", finite=False),
    ("merge_heads", "x", T(lambda a: a[0, 0], "2-d"), V,
     r"^x must have shape \(\.\.\., H, N, p\), got shape \(3, 2\)$"),
    # ---------------------------------------------------------------- dual
    *arrays("dual_attention", "q", "k", "v"),
    ("dual_attention", "q", FLAT, V, r"^q must have at least 2 dimensions, got shape \(24,\)$"),
    ("dual_attention", "k", HALF, V, r"^q and k must share the feature dimension d: q has shape"),
    ("dual_attention", "v", T(lambda a: a[:, :4], "M = 4"), V,
     r"^k and v must have the same number of keys M: k has shape \(2, 5, 4\) .* v has shape"),
    ("dual_attention", "k", BATCH3, V,
     r"^leading \(batch/head\) axes do not broadcast: q \(2,\), k \(3,\), v \(2,\)$"),
    *masks("dual_attention", "mask"),
    ("dual_attention", "mask", UP, V, r"^mask has shape \(3, 5, 1\); it must broadcast to"),
    *flag("dual_attention", "causal"),
    *real("dual_attention", "scale"),
    *integer("dual_attention", "block_size"),
    *arrays("attention_weights", "q", "k"),
    ("attention_weights", "k", BATCH3, V, r"^leading \(batch/head\) axes do not broadcast"),
    ("attention_weights", "q", FLAT, V, r"^q must have at least 2 dimensions"),
    *masks("attention_weights", "mask"),
    *flag("attention_weights", "causal"),
    ("attention_weights", "mask", UP, V, r"^mask has shape \(3, 5, 1\); it must broadcast to"),
    *real("attention_weights", "scale"),
    *upstream("dual_attention_backward", "dout", (2, 3, 3)),
    *caches("dual_attention_backward", "DualCache", "dual_attention"),
    # ---------------------------------------------------------------- equivalence
    *arrays("stationary_point", "x", "W_q", "W_k"),
    ("stationary_point", "x", UP, V, r"^x must have 2 dimensions, got shape \(6, 4, 1\)$"),
    ("stationary_point", "W_q", HALF, V, r"^W_q has shape \(3, 2\) \(d', d\) but x has d = 4"),
    ("stationary_point", "W_k", UP, V, r"^W_k must have 2 dimensions"),
    *integer("stationary_point", "s"),
    ("stationary_point", "s", 4, V, r"^s = 4 exceeds min\(N, p_φ\) = min\(6, 3\)"),
    ("stationary_point", "feature_map", 3, TE, r"^feature_map must be one of the registered feature maps \(cosine, .*\), got int 3$"),
    ("stationary_point", "feature_map", "nope", V, r"^feature_map must be one of the registered feature maps \(cosine, .*\), got 'nope'$"),
    ("stationary_point", "map_params", "w", TE, r"^map_params must be a mapping of .*, got str$"),
    ("stationary_point", "map_params", {"w": 1}, TE,
     r"^map_params \['w'\] do not fit the feature map 'cosine'"),
    *arrays("scores_from_x", "x", "W_q", "W_k", "H_e", "H_r"),
    ("scores_from_x", "H_e", HALF, V, r"^H_e must be \(N, s\) and H_r \(M, s\)"),
    ("scores_from_x", "H_r", UP, V, r"^H_r must have 2 dimensions"),
    ("scores_from_x", "x", UP, V, r"^x must have 2 dimensions, got shape \(6, 4, 1\)$"),
    ("scores_from_x", "W_q", HALF, V, r"^W_q has shape \(3, 2\) \(d', d\) but x has d = 4"),
    ("scores_from_x", "W_k", UP, V, r"^W_k must have 2 dimensions"),
    *option("scores_from_x", "form", good="primal", numeric_bad=1),
    ("scores_from_x", "feature_map", 3, TE, r"^feature_map must be one of the registered feature maps \(cosine, .*\), got int 3$"),
    ("scores_from_x", "map_params", [1], TE, r"^map_params must be a mapping of .*, got list$"),
    *upstream("scores_from_x_backward", "dscores", (6, 2), name="dscores[0] (dE)",
              wrap=("dscores", lambda a, t: entry(0, t))),
    ("scores_from_x_backward", "dscores", T(lambda p: p[0], "dE alone"), TE,
     r"^dscores must be a pair \(dE, dR\), got ndarray$"),
    *caches("scores_from_x_backward", "ScoresFromXCache", "scores_from_x"),
    # ---------------------------------------------------------------- feature maps
    *arrays("cosine_normalize", "x"),
    ("cosine_normalize", "x", SCALAR, V, r"^x must have at least 1 dimensions, got shape \(\)$"),
    *real("cosine_normalize", "eps", minimum=0.0, exclusive=True),
    *upstream("cosine_normalize_backward", "dy", (3, 4)),
    *caches("cosine_normalize_backward", "CosineCache", "cosine_normalize"),
    *arrays("identity_features", "x"),
    ("identity_features", "x", SCALAR, V, r"^x must have at least 1 dimensions"),
    *upstream("identity_features_backward", "dy", (3, 4)),
    *caches("identity_features_backward", "IdentityCache", "identity_features"),
    *arrays("poly2_features", "x"),
    ("poly2_features", "x", SCALAR, V, r"^x must have at least 1 dimensions"),
    *real("poly2_features", "c", minimum=0.0),
    *upstream("poly2_features_backward", "dphi", (3, 15)),
    *caches("poly2_features_backward", "Poly2Cache", "poly2_features"),
    *integer("draw_random_features", "d"),
    *integer("draw_random_features", "m"),
    *seed("draw_random_features"),
    *dtype("draw_random_features"),
    *arrays("positive_random_features", "x", "w"),
    ("positive_random_features", "w", HALF, V, r"^w has shape \(6, 2\) \(m, d\) but x has d = 4"),
    ("positive_random_features", "w", UP, V, r"^w must have 2 dimensions"),
    ("positive_random_features", "x", SCALAR, V, r"^x must have at least 1 dimensions"),
    ("positive_random_features", "x", HALF, V, r"^w has shape \(6, 4\) \(m, d\) but x has d = 2"),
    ("positive_random_features", "w", T(lambda a: 1e3 * a, "w · 1000"), V,
     r"^positive_random_features: exponent w·x − ‖x‖²/2 overflows; rescale x"),
    *upstream("positive_random_features_backward", "dphi", (3, 6)),
    *caches("positive_random_features_backward", "RandomFeatureCache", "positive_random_features"),
    ("register_feature_map", "name", 3, TE, r"^name must be a non-empty string, got int 3$"),
    ("register_feature_map", "name", "", V, r"^name must be a non-empty string, got ''$"),
    ("register_feature_map", "name", "cosine", V,
     r"^feature map 'cosine' is already registered \(pass overwrite=True\)$"),
    ("register_feature_map", "forward", 3, TE, r"^forward must be a callable, got int 3$"),
    ("register_feature_map", "backward", None, TE, r"^backward must be a callable, got NoneType"),
    ("register_feature_map", "make_params", "w", TE,
     r"^make_params must be a callable or None, got str 'w'$"),
    ("register_feature_map", "description", 3, TE, r"^description must be a string, got int 3$"),
    *flag("register_feature_map", "overwrite"),
    ("get_feature_map", "name", 3, TE, r"^name must be one of the registered feature maps \(cosine, .*\), got int 3$"),
    ("get_feature_map", "name", "nope", V, r"^name must be one of the registered feature maps \(cosine, .*\), got 'nope'$"),
    ("check_feature_map", "name_or_map", 3, TE,
     r"^name_or_map must be a registered name or a FeatureMap, got int 3$"),
    ("check_feature_map", "name_or_map", "nope", V, r"^name_or_map must be one of the registered feature maps \(cosine, .*\), got 'nope'$"),
    *integer("check_feature_map", "d"),
    *integer("check_feature_map", "n"),
    *seed("check_feature_map"),
    *option("check_feature_map", "mode", good="elementwise"),
    # ---------------------------------------------------------------- kernels
    *arrays("kernel_matrix", "phi_q", "phi_k"),
    ("kernel_matrix", "phi_k", HALF, V, r"^phi_q and phi_k must share the feature dimension p"),
    ("kernel_matrix", "phi_k", BATCH3, V,
     r"^leading \(batch/head\) axes do not broadcast: phi_q \(2,\), phi_k \(3,\)$"),
    ("kernel_matrix", "phi_q", FLAT, V, r"^phi_q must have at least 2 dimensions"),
    *upstream("kernel_matrix_backward", "dK", (2, 3, 5)),
    *caches("kernel_matrix_backward", "KernelCache", "kernel_matrix"),
    *arrays("softmax_kernel", "q", "k"),
    ("softmax_kernel", "k", BATCH3, V, r"^leading \(batch/head\) axes do not broadcast"),
    ("softmax_kernel", "q", FLAT, V, r"^q must have at least 2 dimensions, got shape \(24,\)$"),
    ("softmax_kernel", "mask", UP, V, r"^mask has shape \(3, 5, 1\); it must broadcast to"),
    *masks("softmax_kernel", "mask"),
    *flag("softmax_kernel", "causal"),
    *real("softmax_kernel", "scale"),
    *arrays("random_feature_softmax_kernel", "q", "k", "w"),
    ("random_feature_softmax_kernel", "k", BATCH3, V,
     r"^leading \(batch/head\) axes do not broadcast: q \(2,\), k \(3,\)$"),
    ("random_feature_softmax_kernel", "k", HALF, V, r"^q and k must share the feature dimension"),
    ("random_feature_softmax_kernel", "w", HALF, V, r"^w has shape \(6, 2\) \(m, d\) but q"),
    ("random_feature_softmax_kernel", "q", FLAT, V, r"^q must have at least 2 dimensions"),
    *real("random_feature_softmax_kernel", "scale", minimum=0.0, exclusive=True),
    *arrays("asymmetry", "K"),
    ("asymmetry", "K", T(lambda a: a[:3], "3×4"), V, r"^K must be square \(N, N\), got shape"),
    ("asymmetry", "K", UP, V, r"^K must have 2 dimensions, got shape \(4, 4, 1\)$"),
    # ---------------------------------------------------------------- ksvd
    *arrays("ksvd", "K"),
    ("ksvd", "K", UP, V, r"^K must have 2 dimensions, got shape \(5, 4, 1\)$"),
    *integer("ksvd", "s"),
    ("ksvd", "s", 5, V, r"^s must satisfy 1 <= s <= min\(N, M\) = 4 for K of shape \(5, 4\)"),
    *option("ksvd", "method", good="dense", numeric_bad=1),
    *arrays("primal_weights", "phi_q", "phi_k", "H_e", "H_r"),
    ("primal_weights", "phi_k", HALF, V, r"^phi_q \(5, 3\) and phi_k \(4, 1\) must share p"),
    ("primal_weights", "H_e", FLAT, V, r"^H_e must have 2 dimensions"),
    ("primal_weights", "H_r", HALF, V, r"^H_e must be \(N, s\) and H_r \(M, s\)"),
    ("primal_weights", "phi_q", UP, V, r"^phi_q must have 2 dimensions"),
    *upstream("primal_weights_backward", "dW", (3, 2), name="dW[0] (dW_e)",
              wrap=("dW", lambda a, t: entry(0, t))),
    ("primal_weights_backward", "dW", T(lambda p: p[0], "dW_e alone"), TE,
     r"^dW must be a pair \(dW_e, dW_r\), got ndarray$"),
    *caches("primal_weights_backward", "PrimalWeightsCache", "primal_weights"),
    *arrays("kkt_weights", "phi_q", "phi_k", "H_e", "H_r", "sigma"),
    ("kkt_weights", "sigma", UP, V, r"^sigma must have 1 dimensions"),
    ("kkt_weights", "phi_q", UP, V, r"^phi_q must have 2 dimensions"),
    ("kkt_weights", "phi_k", HALF, V, r"^phi_q \(5, 3\) and phi_k \(4, 1\) must share p"),
    ("kkt_weights", "H_e", HALF, V, r"^H_e must be \(N, s\) and H_r \(M, s\)"),
    ("kkt_weights", "H_r", FLAT, V, r"^H_r must have 2 dimensions"),
    ("kkt_weights", "sigma", T(lambda a: a[:1], "(1,)"), V, r"^sigma has shape \(1,\), expected"),
    ("kkt_weights", "sigma", T(lambda a: -a, "negative"), V,
     r"^every singular value must be > 0 to form Λ = Σ⁻¹, got sigma"),
    *arrays("kkt_residuals", "phi_q", "phi_k", "W_e", "W_r", "lam", "H_e", "H_r", "E", "R"),
    ("kkt_residuals", "W_e", HALF, V, r"^W_e and W_r must both be \(p, s\) with p = 3"),
    ("kkt_residuals", "phi_q", FLAT, V, r"^phi_q must have 2 dimensions"),
    ("kkt_residuals", "phi_k", HALF, V, r"^phi_q \(5, 3\) and phi_k \(4, 1\) must share p"),
    ("kkt_residuals", "W_r", UP, V, r"^W_r must have 2 dimensions"),
    ("kkt_residuals", "H_e", HALF, V, r"^H_e must be \(N, s\) and H_r \(M, s\)"),
    ("kkt_residuals", "lam", UP, V, r"^lam must have 1 dimensions"),
    ("kkt_residuals", "H_r", HALF, V, r"^H_e must be \(N, s\) and H_r \(M, s\)"),
    ("kkt_residuals", "E", HALF, V, r"^E must have shape \(N, s\) = \(5, 2\), got \(5, 1\)$"),
    ("kkt_residuals", "R", UP, V, r"^R must have shape \(M, s\) = \(4, 2\), got \(4, 2, 1\)$"),
    *arrays("shifted_eigen_residual", "K", "H_e", "H_r", "sigma"),
    ("shifted_eigen_residual", "K", UP, V, r"^K must have 2 dimensions"),
    ("shifted_eigen_residual", "H_e", HALF, V,
     r"^H_e must be \(N, s\) and H_r \(M, s\) for K \(N, M\) = \(5, 4\); got H_e \(5, 1\)"),
    ("shifted_eigen_residual", "H_r", UP, V, r"^H_r must have 2 dimensions"),
    ("shifted_eigen_residual", "sigma", T(lambda a: a[:1], "(1,)"), V,
     r"^sigma has shape \(1,\), expected \(2,\)"),
    *[row for fn in ("ksvd_objective", "ksvd_objective_terms", "ksvd_objective_grad") for row in [
        *arrays(fn, "phi_q", "phi_k", "W_e", "W_r", "lam"),
        Row(fn, "phi_q", UP, V, r"^phi_q must have 2 dimensions"),
        Row(fn, "phi_k", HALF, V, r"^phi_q \(5, 3\) and phi_k \(4, 1\) must share p"),
        Row(fn, "W_e", HALF, V, r"^W_e and W_r must both be \(p, s\) with p = 3"),
        Row(fn, "W_r", UP, V, r"^W_r must have 2 dimensions"),
        Row(fn, "lam", T(lambda a: a[:1], "(1,)"), V, r"^lam \(the diagonal of Λ\) must have shape"),
    ]],  # fmt: skip
    *real("ksvd_objective_grad", "dJ"),
    # ---------------------------------------------------------------- scores
    *arrays("primal_scores", "phi_q", "phi_k", "W_e", "W_r"),
    ("primal_scores", "W_e", HALF, V, r"^primal_scores needs phi_q \(\.\.\., N, p\)"),
    ("primal_scores", "phi_k", BATCH3, V,
     r"^leading \(batch/head\) axes do not broadcast: phi_q \(2,\), phi_k \(3,\), W_e \(\), W_r \(\)$"),
    ("primal_scores", "W_r", FLAT, V, r"^W_r must have at least 2 dimensions"),
    ("primal_scores", "phi_q", FLAT, V, r"^phi_q must have at least 2 dimensions"),
    *upstream("primal_scores_backward", "dscores", (2, 4, 2), name="dscores[1] (dR)",
              wrap=("dscores", lambda a, t: entry(1, t))),
    ("primal_scores_backward", "dscores", T(list, "a list of 2"), None),
    ("primal_scores_backward", "dscores", T(lambda p: (*p, p[0]), "a triple"), TE,
     r"^dscores must be a pair \(dE, dR\), got tuple$"),
    *caches("primal_scores_backward", "PrimalScoresCache", "primal_scores"),
    *arrays("dual_scores", "K", "H_e", "H_r"),
    ("dual_scores", "H_e", BATCH3, V,
     r"^leading \(batch/head\) axes do not broadcast: K \(2,\), H_e \(3,\), H_r \(2,\)$"),
    ("dual_scores", "H_r", HALF, V, r"^dual_scores needs K \(\.\.\., N, M\)"),
    ("dual_scores", "K", FLAT, V, r"^K must have at least 2 dimensions"),
    *upstream("dual_scores_backward", "dscores", (2, 5, 2), name="dscores[0] (dE)",
              wrap=("dscores", lambda a, t: entry(0, t))),
    ("dual_scores_backward", "dscores", 3.0, TE, r"^dscores must be a pair \(dE, dR\), got float"),
    *caches("dual_scores_backward", "DualScoresCache", "dual_scores"),
    # ---------------------------------------------------------------- gradcheck
    ("gradcheck", "loss", "sum", TE, r"^loss must be a callable, got str 'sum'$"),
    ("gradcheck", "loss", T(lambda f: lambda x: x, "returns an array"), V,
     r"^the loss must return a scalar, got an array of shape \(2, 3\)$"),
    ("gradcheck", "inputs", [1.0], TE, r"^inputs must be a mapping of .*, got list$"),
    ("gradcheck", "inputs", entry("x", INT), TE, r"^inputs\['x'\] must be floating to be differentiated, got int64$"),
    ("gradcheck", "inputs", entry("x", READONLY), None),
    ("gradcheck", "grads", {"y": np.zeros((2, 3))}, V,
     r"^grads names 'y', which is not among the inputs \['x'\]$"),
    ("gradcheck", "grads", entry("x", HALF), V,
     r"^grads\['x'\] has shape \(2, 1\), expected the input's shape \(2, 3\)$"),
    ("gradcheck", "grads", entry("x", NAN), V, r"^grads\['x'\] must be finite, got nan"),
    ("gradcheck", "grads", entry("x", INT), TE, r"^grads\['x'\] must be a floating-point array"),
    ("gradcheck", "grads", "x", TE, r"^grads must be a mapping of .*, got str$"),
    *option("gradcheck", "mode", good="directional"),
    *real("gradcheck", "rtol", minimum=0.0, exclusive=True),
    *real("gradcheck", "atol", minimum=0.0),
    *integer("gradcheck", "n_directions"),
    *seed("gradcheck"),
    ("taylor_test", "loss", None, TE, r"^loss must be a callable, got NoneType None$"),
    ("taylor_test", "inputs", [1.0], TE, r"^inputs must be a mapping of .*, got list$"),
    ("taylor_test", "grads", {"y": np.zeros((2, 3))}, V, r"^grads names 'y', which is not"),
    ("taylor_test", "grads", entry("x", UP), V, r"^grads\['x'\] has shape \(2, 3, 1\)"),
    *seed("taylor_test"),
    ("taylor_test", "steps", [1e-3], V, r"^steps must hold at least 2 step sizes, got 1$"),
    ("taylor_test", "steps", [1e-3, -1e-4], V, r"^steps must be finite and > 0, got \[0.001, -0.0001\]$"),
    ("taylor_test", "steps", "small", TE, r"^steps must be a sequence of step sizes or None, got str$"),
    ("taylor_test", "slope_range", (2.2, 1.8), V,
     r"^slope_range must be a pair \(low, high\) with low < high, got \(2.2, 1.8\)$"),
    ("taylor_test", "slope_range", 2.0, TE, r"^slope_range must be a pair \(low, high\), got float"),
    ("check_vjp", "forward", 3, TE, r"^forward must be a callable, got int 3$"),
    ("check_vjp", "backward", "b", TE, r"^backward must be a callable, got str 'b'$"),
    ("check_vjp", "inputs", [1.0], TE, r"^inputs must be a mapping of .*, got list$"),
    ("check_vjp", "inputs", entry("x", BOOL), TE, r"^inputs\['x'\] must be floating to be differentiated, got bool$"),
    ("check_vjp", "wrt", ["y"], V, r"^wrt names 'y', which is not among the inputs \['x'\]$"),
    ("check_vjp", "wrt", "x", TE, r"^wrt must be a list of input names, got str 'x'$"),
    ("check_vjp", "wrt", [], V, r"^wrt must name at least one input, got \[\]$"),
    *option("check_vjp", "mode", good="elementwise"),
    *seed("check_vjp"),
    *real("check_vjp", "rtol", minimum=0.0, exclusive=True),
    *real("check_vjp", "atol", minimum=0.0),
    *integer("check_vjp", "n_directions"),
    # ---------------------------------------------------------------- ksvd loss
    *[row for f in ("quadratic", "tokens", "trace", "square", "outer", "layers")
      for row in option("KSVDConvention", f, good=GOOD["KSVDConvention"](None)[f],
                        name=f"KSVDConvention.{f}")],
    ("ksvd_loss", "layers", T(lambda ls: ls[0], "one KSVDTerms, not a list"), TE,
     r"^layers must be a list of KSVDTerms, one per primal layer, e.g. \[terms\]; got KSVDTerms$"),
    ("ksvd_loss", "layers", [], V, r"^layers must hold at least one layer's terms, got \[\]$"),
    ("ksvd_loss", "layers", [3], TE, r"^layers\[0\] must be a KSVDTerms .*got int$"),
    *arrays("ksvd_loss", "escore", "rscore", "lam", "we", "wr",
            names={f: f"layers[0].{f}" for f in ("escore", "rscore", "lam", "we", "wr")},
            wrap=("layers", lambda f, t: first(entry(f, t)))),
    ("ksvd_loss", "layers", first(entry("lam", UP)), V, r"^layers\[0\]\.lam must be \(H, s\)"),
    ("ksvd_loss", "layers", first(entry("escore", UP)), V,
     r"^layers\[0\]: escore and rscore must both be \(B, H, N, s\)"),
    ("ksvd_loss", "layers", first(entry("wr", FLAT)), V, r"^layers\[0\]: we, wr must both be"),
    ("ksvd_loss", "convention", 3, TE,
     r"^convention must be a preset name or a KSVDConvention, got int$"),
    ("ksvd_loss", "convention", "nope", V, r"^unknown KSVD convention 'nope'; presets: lra"),
    ("ksvd_loss", "trace_no_x", "yes", TE, r"^trace_no_x must be True, False or None, got 'yes'$"),
    ("ksvd_loss", "trace_no_x", 0, TE, r"^trace_no_x must be True, False or None, got 0$"),
    *real("ksvd_loss_backward", "dloss"),
    *caches("ksvd_loss_backward", "KSVDLossCache", "ksvd_loss"),
    *caches("ksvd_terms_from_cache", "PrimalCache or FastPrimalCache",
            "primal_attention or fast_primal_attention"),
    # ---------------------------------------------------------------- layer
    *arrays("primal_attention", "x"),
    ("primal_attention", "x", FLAT, V, r"^x must have 3 dimensions, got shape \(40,\)$"),
    ("primal_attention", "x", HALF, V, r"^x has shape \(2, 5, 2\); expected \(B, N, D\) with D = dim = 4"),
    ("primal_attention", "x", T(lambda a: a[:, :0], "N = 0"), V, r"^x has shape \(2, 0, 4\); expected at least one"),
    *arrays("primal_attention", *LAYER_PARAMS, names={k: f"parameter {k!r}" for k in LAYER_PARAMS},
            wrap=("params", entry)),
    ("primal_attention", "params", without("bo"), KE, r"^parameters do not fit the lra layer: missing \['bo'\], unexpected \[\]$"),
    ("primal_attention", "params", entry("wc", HALF), V, r"^parameter 'wc' has shape \(2, 1\), expected \(2, 2\)"),
    ("primal_attention", "params", [1, 2], TE, r"^params must be a mapping of name → array, got list$"),
    ("primal_attention", "config", {"dim": 4}, TE, r"^config must be a PrimalAttentionConfig, got dict$"),
    ("primal_attention", "config", pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=2, rank_multi=2), V,
     r"^parameter 'we' has shape \(2, 2, 1\), expected \(2, 4, 2\)"),
    *masks("primal_attention", "mask", meaning="True = real token"),
    ("primal_attention", "mask", T(lambda m: m[:, :4], "(2, 4)"), V,
     r"^mask has shape \(2, 4\), expected \(B, N\) = \(2, 5\) \(True = real token\)$"),
    *upstream("primal_attention_backward", "dy", (2, 5, 4)),
    *caches("primal_attention_backward", "PrimalCache", "primal_attention"),
    ("primal_attention_backward", "ksvd_grads", 3, TE, r"^ksvd_grads must be one layer's KSVDGrads .*got int$"),
    *arrays("primal_attention_backward", "escore", "lam", "we",
            names={f: f"ksvd_grads.{f}" for f in ("escore", "lam", "we")},
            wrap=("ksvd_grads", lambda f, t: entry(f, t))),
    ("primal_attention_backward", "ksvd_grads", entry("rscore", FLAT), V,
     r"^ksvd_grads.rscore has shape \(20,\), expected \(2, 2, 5, 1\) \(the layer's rscore\)$"),
    ("primal_attention_backward", "ksvd_grads", entry("wr", UP), V, r"^ksvd_grads.wr has shape \(2, 2, 1, 1\), expected \(2, 2, 1\)"),
    ("primal_attention_backward", "ksvd_grads", T(lambda g: g._replace(lam=None), "lam None"), V,
     r"^ksvd_grads.lam is None; expected an array of shape \(2, 1\)$"),
    *arrays("layer_objective", "x", "cotangent"),
    ("layer_objective", "cotangent", UP, V, r"^cotangent has shape \(2, 5, 4, 1\), expected the output shape \(2, 5, 4\)$"),
    ("layer_objective", "x", FLAT, V, r"^x must have 3 dimensions, got shape \(40,\)$"),
    ("layer_objective", "mask", T(lambda m: m[:, :4], "(2, 4)"), V, r"^mask has shape \(2, 4\), expected \(B, N\) = \(2, 5\)"),
    ("layer_objective", "params", without("lam"), KE, r"missing \['lam'\]"),
    ("layer_objective", "params", entry("lam", NAN), V, r"^parameter 'lam' must be finite, got nan"),
    ("layer_objective", "config", "lra", TE, r"^config must be a PrimalAttentionConfig, got str$"),
    *real("layer_objective", "eta", minimum=0.0),
    ("layer_objective", "convention", 3, TE, r"^convention must be a preset name or a KSVDConvention"),
    ("layer_objective", "convention", "nope", V, r"^unknown KSVD convention 'nope'"),
    ("layer_objective", "trace_no_x", "no", TE, r"^trace_no_x must be True, False or None, got 'no'$"),
    *masks("layer_objective", "mask", meaning="True = real token"),
    # ---------------------------------------------------------------- params
    *integer("PrimalAttentionConfig", "dim"),
    *integer("PrimalAttentionConfig", "num_heads"),
    ("PrimalAttentionConfig", "num_heads", 3, V, r"^dim 4 is not divisible by num_heads 3$"),
    *integer("PrimalAttentionConfig", "low_rank"),
    *integer("PrimalAttentionConfig", "rank_multi"),
    *option("PrimalAttentionConfig", "variant", good="lra"),
    ("PrimalAttentionConfig", "data_dependent", "false", TE,
     r"^data_dependent must be True, False or None, got 'false'$"),
    ("PrimalAttentionConfig", "data_dependent", 0, TE, r"^data_dependent must be True, False or None, got 0$"),
    *flag("PrimalAttentionConfig", "qk_bias"),
    ("PrimalAttentionConfig", "qk_bias", True, V, r"^qk_bias applies to the vision variant only$"),
    *integer("PrimalAttentionConfig", "num_tokens"),
    ("PrimalAttentionConfig", "feature_map", 3, TE, r"^feature_map must be one of the registered feature maps \(cosine, .*\), got int 3$"),
    ("PrimalAttentionConfig", "feature_map", "nope", V, r"^feature_map must be one of the registered feature maps \(cosine, .*\), got 'nope'$"),
    ("PrimalAttentionConfig", "feature_map", "poly2", V,
     r"^feature map 'poly2' maps the head dim p = 2 to 6 features, but data-dependent weights"),
    *seed("PrimalAttentionConfig", "feature_seed"),
    ("PrimalAttentionConfig", "sampler", 3, TE,
     r"^sampler must be one of \('linspace', 'all'\) or a function of N, got int 3$"),
    ("PrimalAttentionConfig", "sampler", "random", V,
     r"^sampler must be one of \('linspace', 'all'\) or a function of N, got 'random'$"),
    ("PrimalAttentionConfig", "sampler", lambda n: np.arange(n), V,
     r"^sampler <function .*> with data-dependent weights needs num_tokens \(N\)"),
    *flag("PrimalAttentionConfig", "rscores"),
    ("init_primal_attention_params", "config", {"dim": 4}, TE,
     r"^config must be a PrimalAttentionConfig, got dict$"),
    *seed("init_primal_attention_params"),
    *dtype("init_primal_attention_params"),
    *option("init_primal_attention_params", "linear_init", good="torch"),
    ("to_state_dict", "params", without("wq"), KE, r"missing \['wq'\]"),
    ("to_state_dict", "params", entry("wq", INT), TE, r"^parameter 'wq' must be a floating-point array"),
    ("to_state_dict", "params", entry("wq", READONLY), None),
    ("to_state_dict", "params", entry("wq", HALF), V, r"^parameter 'wq' has shape \(4, 2\), expected \(4, 4\)"),
    ("to_state_dict", "config", None, TE, r"^config must be a PrimalAttentionConfig, got NoneType$"),
    ("to_state_dict", "prefix", 3, TE, r"^prefix must be a string, got int 3$"),
    ("from_state_dict", "state", without("attn.ff.bias"), KE,
     r"^state dict is missing \['attn.ff.bias'\] for the lra layer$"),
    ("from_state_dict", "state", T(lambda d: {**d, "attn.extra": np.zeros(1)}, "an extra entry"), KE,
     r"^state dict has unexpected entries \['attn.extra'\] for the lra layer$"),
    *arrays("from_state_dict", "attn.ff.bias", names={"attn.ff.bias": "state dict entry 'attn.ff.bias'"},
            wrap=("state", entry)),
    ("from_state_dict", "state", entry("attn.ff.bias", UP), V,
     r"^state dict entry 'attn.ff.bias' has shape \(4, 1\), expected \(4,\)$"),
    ("from_state_dict", "state", [("a", 1)], TE, r"^state must be a mapping of name → array, got list$"),
    ("from_state_dict", "config", "lra", TE, r"^config must be a PrimalAttentionConfig, got str$"),
    ("from_state_dict", "prefix", None, TE, r"^prefix must be a string, got NoneType None$"),
    ("save_state_dict", "path", 3, TE, r"^path must be a file path \(str or os.PathLike\) or a binary file object, got int 3$"),
    ("save_state_dict", "params", entry("bo", NAN), V, r"^parameter 'bo' must be finite"),
    ("save_state_dict", "params", without("bo"), KE, r"missing \['bo'\]"),
    ("save_state_dict", "config", 3, TE, r"^config must be a PrimalAttentionConfig, got int$"),
    ("save_state_dict", "prefix", b"attn", TE, r"^prefix must be a string, got bytes b'attn'$"),
    ("load_state_dict", "path", 3, TE, r"^path must be a file path \(str or os.PathLike\) or a binary file object, got int 3$"),
    ("load_state_dict", "path", T(lambda p: p.parent / "missing.npz", "a missing file"), FileNotFoundError,
     r"missing.npz"),
    ("load_state_dict", "path", T(lambda p: _text_file(p.parent), "a text file"), V,
     r"^path .*not.npz: not a readable .npz file"),
    ("load_state_dict", "path", T(lambda p: _pickled_npz(p.parent), "pickled"), V,
     r"^path .*pickled.npz: .*pickle"),
    ("load_state_dict", "config", None, TE, r"^config must be a PrimalAttentionConfig, got NoneType$"),
    ("load_state_dict", "config", pn.PrimalAttentionConfig(dim=4, num_heads=2, low_rank=1, variant="causal"), KE,
     r"^state dict is missing \["),
    ("load_state_dict", "prefix", 1, TE, r"^prefix must be a string, got int 1$"),
    # ---------------------------------------------------------------- kep_svgp
    *integer("KEPSVGPConfig", "dim"),
    *integer("KEPSVGPConfig", "num_heads"),
    *integer("KEPSVGPConfig", "low_rank"),
    *integer("KEPSVGPConfig", "rank_multi"),
    *integer("KEPSVGPConfig", "embed_len"),
    ("KEPSVGPConfig", "embed_len", None, V, r"^the vision variant needs embed_len \(N\)"),
    *option("KEPSVGPConfig", "variant", good="vision"),
    *flag("KEPSVGPConfig", "concate"),
    *flag("KEPSVGPConfig", "qk_bias"),
    *flag("KEPSVGPConfig", "apply_proj"),
    *option("KEPSVGPConfig", "factor_layout", good="authors"),
    *flag("KEPSVGPConfig", "authors_squeeze"),
    ("init_kep_svgp_params", "config", CFG, TE, r"^config must be a KEPSVGPConfig, got PrimalAttentionConfig$"),
    *seed("init_kep_svgp_params"),
    *dtype("init_kep_svgp_params"),
    ("kep_to_state_dict", "params", without("m_u"), KE, r"missing \['m_u'\]"),
    ("kep_to_state_dict", "params", entry("m_u", COMPLEX), TE, r"^parameter 'm_u' must be a floating-point array"),
    ("kep_to_state_dict", "params", entry("m_u", NAN), V, r"^parameter 'm_u' must be finite, got nan"),
    ("kep_to_state_dict", "config", CFG, TE, r"^config must be a KEPSVGPConfig, got PrimalAttentionConfig$"),
    ("kep_to_state_dict", "prefix", 3, TE, r"^prefix must be a string, got int 3$"),
    ("kep_from_state_dict", "state", without("attn.m_u"), KE, r"^state dict is missing \['attn.m_u'\]$"),
    ("kep_from_state_dict", "state", entry("attn.we", UP), V, r"^parameter 'we' has shape \(2, 4, 2, 1\)"),
    ("kep_from_state_dict", "state", entry("attn.we", STR), TE, r"^parameter 'we' must be a floating-point array"),
    ("kep_from_state_dict", "state", "sd", TE, r"^state must be a mapping of name → array, got str$"),
    ("kep_from_state_dict", "config", None, TE, r"^config must be a KEPSVGPConfig, got NoneType$"),
    ("kep_from_state_dict", "prefix", 0, TE, r"^prefix must be a string, got int 0$"),
    *arrays("kep_svgp_attention", "x", "noise"),
    ("kep_svgp_attention", "x", HALF, V, r"^x has shape \(2, 5, 2\); expected \(B, N, D\)"),
    ("kep_svgp_attention", "noise", FLAT, V, r"^noise must have 5 dimensions, got shape \(40,\)$"),
    ("kep_svgp_attention", "noise", T(lambda a: a[:, :1], "H = 1"), V,
     r"^noise has shape \(2, 1, 5, 2, 1\); expected \(B, H, N', s, 1\) = \(2, 2, 5, 2, 1\)"),
    ("kep_svgp_attention", "params", entry("m_u", INT), TE, r"^parameter 'm_u' must be a floating-point array"),
    ("kep_svgp_attention", "params", entry("m_u", INF), V, r"^parameter 'm_u' must be finite, got -inf"),
    ("kep_svgp_attention", "params", without("we"), KE, r"missing \['we'\]"),
    ("kep_svgp_attention", "params", entry("we", UP), V, r"^parameter 'we' has shape \(2, 4, 2, 1\), expected \(2, 4, 2\)$"),
    ("kep_svgp_attention", "params", (1, 2), TE, r"^params must be a mapping of name → array, got tuple$"),
    ("kep_svgp_attention", "config", CFG, TE, r"^config must be a KEPSVGPConfig, got PrimalAttentionConfig$"),
    ("kep_svgp_attention", "rng", 0, V, r"^give exactly one of noise= \(an array\) and rng="),
    ("kep_svgp_attention", "rng", "0", TE, r"^rng must be a numpy Generator or an int seed, got str '0'$"),
    ("kep_svgp_attention", "rng", True, TE, r"^rng must be a numpy Generator or an int seed, got bool True$"),
    ("kep_svgp_attention", "rng", -1, V, r"^rng must be >= 0, got -1$"),
    *masks("kep_svgp_attention", "mask", meaning="True = real token"),
    ("kep_svgp_attention", "mask", T(lambda m: m[:1], "(1, 5)"), V, r"^mask has shape \(1, 5\), expected \(B, N\) = \(2, 5\)"),
    *upstream("kep_svgp_attention_backward", "dy", (2, 5, 4)),
    *caches("kep_svgp_attention_backward", "KEPSVGPCache", "kep_svgp_attention"),
    ("kep_svgp_attention_backward", "loss_grads", 3, TE, r"^loss_grads must be a KEPSVGPLossGrads .*got int$"),
    ("kep_svgp_attention_backward", "loss_grads", entry("escore", NAN), V, r"^loss_grads.escore must be finite, got nan"),
    ("kep_svgp_attention_backward", "loss_grads", entry("escore", INT), TE,
     r"^loss_grads.escore must be a floating-point array .*got dtype int64$"),
    ("kep_svgp_attention_backward", "loss_grads", T(lambda g: g._replace(params={**g.params, "m_u": g.params["m_u"].astype(int)}), "int m_u"), TE,
     r"^loss_grads.params\['m_u'\] must be a floating-point array .*got dtype int64$"),
    ("kep_svgp_attention_backward", "loss_grads", T(lambda g: g._replace(params={**g.params, "m_u": _poke(g.params["m_u"], np.nan)}), "NaN m_u"), V,
     r"^loss_grads.params\['m_u'\] must be finite, got nan"),
    *caches("kep_svgp_losses", "KEPSVGPCache", "kep_svgp_attention"),
    ("kep_svgp_losses_backward", "dlosses", 0.3, TE, r"^dlosses must be a pair \(d_kl, d_ksvd\), got float 0.3$"),
    ("kep_svgp_losses_backward", "dlosses", (0.3, "1"), TE, r"^dlosses\[1\] \(d_ksvd\) must be a real number, got str '1'$"),
    ("kep_svgp_losses_backward", "dlosses", (float("nan"), 1.0), V, r"^dlosses\[0\] \(d_kl\) must be finite, got nan$"),
    *caches("kep_svgp_losses_backward", "KEPSVGPLossCache", "kep_svgp_losses"),
    *arrays("kep_svgp_objective", "x", "noise", "cotangent"),
    ("kep_svgp_objective", "cotangent", UP, V, r"^cotangent has shape \(2, 5, 4, 1\), expected the output shape \(2, 5, 4\)$"),
    ("kep_svgp_objective", "x", HALF, V, r"^x has shape \(2, 5, 2\); expected \(B, N, D\)"),
    ("kep_svgp_objective", "noise", FLAT, V, r"^noise must have 5 dimensions, got shape \(40,\)$"),
    ("kep_svgp_objective", "mask", T(lambda m: m[:1], "(1, 5)"), V, r"^mask has shape \(1, 5\), expected \(B, N\) = \(2, 5\)"),
    ("kep_svgp_objective", "params", entry("we", BOOL), TE, r"^parameter 'we' must be a floating-point array"),
    ("kep_svgp_objective", "config", None, TE, r"^config must be a KEPSVGPConfig, got NoneType$"),
    *real("kep_svgp_objective", "eta", minimum=0.0),
    *real("kep_svgp_objective", "eta_kl", minimum=0.0),
    *masks("kep_svgp_objective", "mask", meaning="True = real token"),
    # ---------------------------------------------------------------- mha
    *integer("init_mha_params", "dim"),
    *seed("init_mha_params"),
    *dtype("init_mha_params"),
    *arrays("mha_attention", "x"),
    ("mha_attention", "x", FLAT, V, r"^x must have at least 2 dimensions, got shape \(40,\)$"),
    *arrays("mha_attention", *MHA_PARAMS, names={k: f"parameter {k!r}" for k in MHA_PARAMS},
            wrap=("params", entry)),
    ("mha_attention", "params", without("b_v"), KE, r"^parameters do not fit the MHA layer: missing \['b_v'\], unexpected \[\]$"),
    ("mha_attention", "params", entry("W_k", HALF), V, r"^parameter 'W_k' has shape \(4, 2\), expected \(4, 4\)$"),
    ("mha_attention", "params", None, TE, r"^params must be a mapping of name → array, got NoneType$"),
    *integer("mha_attention", "num_heads"),
    ("mha_attention", "num_heads", 3, V, r"^dim 4 \(x shape \(2, 5, 4\)\) is not divisible by num_heads=3$"),
    *masks("mha_attention", "padding_mask", meaning="True = real token"),
    ("mha_attention", "padding_mask", T(lambda m: m[0], "(5,)"), V, r"^padding_mask has shape \(5,\), expected \(\.\.\., N\) = \(2, 5\)"),
    *masks("mha_attention", "attn_mask"),
    ("mha_attention", "attn_mask", T(lambda m: m[:4], "(4, 5)"), V, r"^attn_mask has shape \(4, 5\); it must broadcast to"),
    *flag("mha_attention", "causal"),
    *upstream("mha_attention_backward", "dy", (2, 5, 4)),
    *caches("mha_attention_backward", "MHACache", "mha_attention"),
]]  # fmt: skip

# Parameters with no row, and why: (function, parameter) → the reason it cannot be bad.
# Empty so far: every parameter has a value of a wrong type at least (a seed that accepts
# any int >= 0 still has its negative, bool, float and str rows).
EXEMPT: dict[tuple[str, str], str] = {}

# Array arguments that have no shape to get wrong, and why.
SHAPE_FREE = {
    ("gradcheck", "inputs"): "the loss defines what it accepts; grads must match the inputs",
}

# Public names of primal_np.__all__ that are not callables to test.
NOT_CALLABLES = {
    "__version__": "a string",
    "kep_svgp": "a module (its callables in primal_np.__all__ are listed there by name)",
    "FEATURE_MAPS": "a registry (dict); register_feature_map and get_feature_map have rows",
    "CONVENTIONS": "a registry of KSVDConvention presets; ksvd_loss's convention has rows",
    "DualCache": "a NamedTuple (a cache type); the backwards' cache rows use them",
    "KSVDTerms": "a NamedTuple; its fields are checked by ksvd_loss (rows on its layers)",
}


# --------------------------------------------------------------------------- the tests
def _message(exc: BaseException) -> str:
    """The message: KeyError's str() adds quotes, so read its argument."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _row_id(row: Row) -> str:
    bad = row.bad if isinstance(row.bad, T) else repr(row.bad)
    return f"{row.fn}-{row.arg}-{bad}"[:90]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture
def no_probe_left():
    yield
    FEATURE_MAPS.pop(PROBE, None)


@pytest.mark.parametrize("row", CASES, ids=[_row_id(r) for r in CASES])
def test_bad_input(row, tmp_dir, no_probe_left):
    fn = getattr(pn, row.fn)
    kwargs = GOOD[row.fn](tmp_dir)
    assert row.arg in kwargs, f"GOOD[{row.fn!r}] lacks {row.arg!r}"
    kwargs[row.arg] = row.bad(kwargs[row.arg]) if isinstance(row.bad, T) else row.bad
    if row.exc is None:
        fn(**kwargs)  # must work
        return
    with pytest.raises(Exception) as info:
        fn(**kwargs)
    assert type(info.value) is row.exc or (
        row.exc is not Exception
        and isinstance(info.value, row.exc)
        and type(info.value).__module__.startswith("primal_np")  # e.g. GoldenFormatError
    ), f"{type(info.value).__name__}: {info.value}"
    assert re.search(row.match, _message(info.value)), _message(info.value)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_good_calls_work(name, tmp_dir, no_probe_left):
    """Every row fails because of its own value: the call without it works."""
    getattr(pn, name)(**GOOD[name](tmp_dir))


def _public_callables() -> dict[str, object]:
    out = {}
    for name in pn.__all__:
        obj = getattr(pn, name)
        if name in NOT_CALLABLES:
            assert not callable(obj) or isinstance(obj, type), name
            continue
        out[name] = obj
    return out


def test_every_parameter_has_a_row():
    """A new public callable cannot land without its rows: every parameter of every
    callable in primal_np.__all__ (the fields of the configuration dataclasses) has at
    least one row, or an entry with its reason in EXEMPT."""
    covered = {(r.fn, r.arg) for r in CASES}
    missing = []
    for name, obj in _public_callables().items():
        assert callable(obj), f"{name} is neither callable nor listed in NOT_CALLABLES"
        for param in inspect.signature(obj).parameters:
            if (name, param) not in covered and (name, param) not in EXEMPT:
                missing.append(f"{name}({param})")
    assert not missing, "parameters without a bad-input row: " + ", ".join(missing)


def test_every_array_argument_has_a_shape_row():
    """An argument with dtype rows (an array, or a dict or pair of arrays) also has a row
    with a wrong shape or a wrong number of dimensions."""
    arrays = {(r.fn, r.arg) for r in CASES if repr(r.bad).endswith("int64")}
    shaped = {(r.fn, r.arg) for r in CASES if r.exc is ValueError
              and not repr(r.bad).endswith(("NaN", "-inf"))}  # fmt: skip
    missing = sorted(arrays - shaped - set(SHAPE_FREE))
    assert not missing, f"array arguments without a shape row: {missing}"


def test_the_table_names_real_parameters():
    callables = _public_callables()
    for r in CASES:
        assert r.fn in callables, r
        assert r.arg in inspect.signature(callables[r.fn]).parameters, r
        assert r.exc in (None, ValueError, TypeError, KeyError, FileNotFoundError), r
    for fn, param in EXEMPT:
        assert param in inspect.signature(callables[fn]).parameters, (fn, param)
    assert isinstance(pn.kep_svgp, types.ModuleType)


# --------------------------------------------------------------------------- cache references
@pytest.mark.parametrize("name", ["dual_attention", "primal_attention", "mha_attention"])
def test_the_cache_holds_references_as_documented(name):
    """Issue 13, class 2: editing an input in place between forward and backward changes the
    gradient. Documented (the docstrings and the README's conventions) rather than paid for
    with a copy of every input on every call; a copy taken before the edit is unaffected."""
    fn, backward = getattr(pn, name), getattr(pn, name + "_backward")
    assert "holds references to (not copies of)" in " ".join(fn.__doc__.split())
    kw = GOOD[name](None)
    first = "q" if name == "dual_attention" else "x"
    kw.pop("rng", None)
    original = kw[first].copy()
    out, cache = fn(**kw)
    dout = rnd(*out.shape, seed=5)
    before = _grad_leaves(backward(dout, cache))
    kw[first] *= 2.0  # in place: the cache sees it
    assert not np.allclose(before, _grad_leaves(backward(dout, cache)))
    kw[first] = original
    _, cache = fn(**(kw | {first: original.copy()}))  # copy first
    original *= 2.0
    assert np.array_equal(before, _grad_leaves(backward(dout, cache)))


def _grad_leaves(g) -> np.ndarray:
    parts = [g.params[k] for k in sorted(g.params)] if hasattr(g, "params") else list(g)
    return np.concatenate([np.ravel(a) for a in ([g.x] if hasattr(g, "x") else []) + parts])
