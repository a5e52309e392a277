"""Input validation shared by every public function.

Every check raises a ``TypeError`` (wrong kind of object or dtype) or a
``ValueError`` (wrong shape or value) whose message names the argument, what it
got and what was expected, so that bad input never surfaces as a NumPy
broadcasting error deep inside an op or as a silent NaN.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "float_array",
    "result_dtype",
    "check_finite",
    "check_ndim",
    "bool_mask",
    "broadcast_batch",
    "positive_int",
    "index_array",
    "sum_to_shape",
    "upstream",
    "real_number",
    "float_dtype",
    "boolean",
    "choice",
    "seed",
    "cache_of",
    "callable_arg",
    "mapping",
    "param_dict",
    "path_arg",
]


def float_array(x: object, name: str, *, ndim: int | None = None, min_ndim: int = 0) -> np.ndarray:
    """Return ``x`` as a floating ndarray without copying or writing to it.

    Accepts NumPy arrays (and array-likes) of dtype float16/32/64; integers,
    booleans and complex numbers are rejected with a ``TypeError``: silently
    promoting them would hide a caller's mistake.
    """
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), "
            f"got dtype {arr.dtype}"
        )
    check_ndim(arr, name, ndim=ndim, min_ndim=min_ndim)
    return arr


def check_ndim(arr: np.ndarray, name: str, *, ndim: int | None = None, min_ndim: int = 0) -> None:
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {arr.shape}")


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or infinity, naming the first bad index."""
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite, got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )


def finite_array(x: object, name: str, *, ndim: int | None = None, min_ndim: int = 0) -> np.ndarray:
    """``float_array`` followed by ``check_finite``: a floating array with no NaN or inf."""
    arr = float_array(x, name, ndim=ndim, min_ndim=min_ndim)
    check_finite(arr, name)
    return arr


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without enlarging it."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype an op computes in: the promotion of its floating inputs.

    float32 inputs stay float32; any float64 input makes the result float64.
    float16 is computed in float32 (NumPy has no float16 BLAS) and documented so.
    """
    dt = np.result_type(*arrays)
    if dt == np.float16:
        return np.dtype(np.float32)
    return dt


def bool_mask(mask: object, name: str, meaning: str = "True = may attend") -> np.ndarray:
    """``mask`` as a boolean array, else a ``TypeError`` naming it and what True means
    (``meaning``: "True = may attend" for attention masks, "True = real token" for
    padding masks)."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array ({meaning}), got dtype {arr.dtype}")
    return arr


def broadcast_batch(shapes: Sequence[tuple[int, ...]], names: Sequence[str]) -> tuple[int, ...]:
    """Broadcast leading (batch/head) shapes, naming the arguments on failure."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"leading (batch/head) axes do not broadcast: {desc}") from None


def positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def sum_to_shape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``x`` over the axes along which ``shape`` was broadcast to ``x.shape``.

    The adjoint of broadcasting: used by every backward whose forward broadcast
    its inputs' leading axes.
    """
    if x.shape == tuple(shape):
        return x
    lead = x.ndim - len(shape)
    axes = list(range(lead))
    axes += [lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1]
    out = x.sum(axis=tuple(axes), keepdims=True) if axes else x
    return out.reshape(shape)


def index_array(x: object, name: str, upper: int) -> np.ndarray:
    """``x`` as an integer array with every entry in [0, upper), else a named error.

    Booleans and floats are rejected with a ``TypeError`` (a float id is a caller's
    bug, not something to round); an out-of-range entry raises a ``ValueError``
    that names the first offending value and its index.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size:
        bad = (arr < 0) | (arr >= upper)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} must lie in [0, {upper}), got {int(arr[where])} at index {where}"
            )
    return arr


def upstream(dout: object, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An upstream gradient, validated and in the forward's computation dtype.

    ``dout`` must be a floating array of exactly ``shape`` (never broadcast: a wrong shape
    is a caller's bug) and finite. It is returned cast to ``dtype``, so that gradients come
    back in the dtype the forward computed in, whatever the upstream gradient's dtype
    (a float64 ``dout`` on a float32 forward gives float32 gradients). No copy is made
    when nothing changes, and the caller's array is never written to.
    """
    arr = float_array(dout, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected the output shape {tuple(shape)}")
    check_finite(arr, name)
    return arr.astype(dtype, copy=False)


def real_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    exclusive: bool = False,
) -> float:
    """``value`` as a finite Python float, else a named error.

    Accepts Python and NumPy integers and floats and 0-d floating arrays; rejects
    booleans and strings (``TypeError``), NaN and infinity and values below ``minimum``
    (or at it, with ``exclusive``) (``ValueError``).
    """
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if minimum is not None and (x < minimum or (exclusive and x == minimum)):
        op = ">" if exclusive else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {x}")
    return x


def float_dtype(dtype: object, name: str = "dtype") -> np.dtype:
    """``dtype`` as a floating NumPy dtype (float16/32/64), else a named ``TypeError``
    (an integer dtype would silently truncate initial values to zeros)."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}") from None
    if dt.kind != "f":
        raise TypeError(f"{name} must be a floating dtype (float16, float32, float64), got {dt}")
    return dt


def boolean(value: object, name: str) -> bool:
    """``value`` if it is True or False (Python or NumPy bool), else a named ``TypeError``:
    strings, numbers and None are never taken for booleans ("no" would be true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(value: object, name: str, options: Sequence[str]) -> str:
    """``value`` if it is one of the option strings: a ``TypeError`` for a non-string, a
    ``ValueError`` for an unknown name, both listing the options."""
    opts = tuple(options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {opts}, got {type(value).__name__} {value!r}")
    if value not in opts:
        raise ValueError(f"{name} must be one of {opts}, got {value!r}")
    return value


def seed(value: object, name: str = "seed") -> int:
    """A seed for ``np.random.default_rng``: an integer >= 0 (not a bool, float or string)."""
    return positive_int(value, name, minimum=0)


def cache_of(cache: object, kind: type | tuple[type, ...], op: str) -> None:
    """Refuse a cache that the forward ``op`` did not return (another op's cache, or
    anything else) with a ``TypeError`` naming the expected cache type, instead of an
    ``AttributeError`` or an unpacking error deep inside a backward."""
    if not isinstance(cache, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        want = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"cache must be the {want} returned by {op}, got {type(cache).__name__}")


def callable_arg(value: object, name: str, *, optional: bool = False) -> None:
    """A named ``TypeError`` unless ``value`` is callable (or None with ``optional``)."""
    if optional and value is None:
        return
    if not callable(value):
        what = "a callable or None" if optional else "a callable"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")


def mapping(value: object, name: str, what: str = "name → array") -> None:
    """A named ``TypeError`` unless ``value`` is a mapping (a dict of ``what``)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of {what}, got {type(value).__name__}")


def param_dict(
    params: object, shapes: Mapping[str, tuple[int, ...]], what: str, detail: str = ""
) -> dict[str, np.ndarray]:
    """A layer's parameters checked against their expected ``shapes``: a mapping with
    exactly those names (``KeyError`` listing the missing and unexpected ones), each a
    floating array (``TypeError``) of its shape (``ValueError``, ``detail`` appended),
    finite (``ValueError`` naming the first bad index). Returns them as arrays."""
    mapping(params, "params")
    assert isinstance(params, Mapping)
    names = set(params)
    missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
    if missing or extra:
        raise KeyError(f"parameters do not fit the {what}: missing {missing}, unexpected {extra}")
    out = {}
    for k, shape in shapes.items():
        name = f"parameter {k!r}"
        arr = float_array(params[k], name)
        if arr.shape != tuple(shape):
            raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)}{detail}")
        check_finite(arr, name)
        out[k] = arr
    return out


def path_arg(path: object, name: str = "path", *, mode: str = "r") -> None:
    """A named ``TypeError`` unless ``path`` is a file path (str or os.PathLike) or a
    binary file object (with ``read`` for ``mode="r"``, ``write`` for ``mode="w"``); an
    integer would be taken for an open file descriptor by NumPy."""
    method = "read" if mode == "r" else "write"
    if isinstance(path, (str, os.PathLike)) or hasattr(path, method):
        return
    raise TypeError(
        f"{name} must be a file path (str or os.PathLike) or a binary file object, got "
        f"{type(path).__name__} {path!r}"
    )
