"""Input validation shared by every public function.

Every check raises a ``TypeError`` (wrong kind of object or dtype) or a
``ValueError`` (wrong shape or value) whose message names the argument, what it
got and what was expected, so that bad input never surfaces as a NumPy
broadcasting error deep inside an op or as a silent NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype an op computes in: the promotion of its floating inputs.

    float32 inputs stay float32; any float64 input makes the result float64.
    float16 is computed in float32 (NumPy has no float16 BLAS) and documented so.
    """
    dt = np.result_type(*arrays)
    if dt == np.float16:
        return np.dtype(np.float32)
    return dt


def bool_mask(mask: object, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a boolean array (True = may attend), got dtype {arr.dtype}"
        )
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
