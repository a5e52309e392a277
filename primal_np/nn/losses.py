"""Softmax cross-entropy from logits, forward and backward, and accuracy.

    L = (1/B) Σ_b [ LSE(z_b) − z_{b, y_b} ],   LSE(z) = log Σ_c exp(z_c)   (natural log)

as ``torch.nn.functional.cross_entropy(z, y)`` (reduction "mean"). The LSE is
shifted by each row's maximum, so logits of any finite size (beyond 700, where
exp overflows) are exact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import cache_of, check_finite, float_array, index_array, real_number, result_dtype
from ..primitives import _softmax_lse_inplace

__all__ = [
    "CrossEntropyCache",
    "CrossEntropyGrads",
    "cross_entropy",
    "cross_entropy_backward",
    "accuracy",
    "TokenCrossEntropyCache",
    "token_cross_entropy",
    "token_cross_entropy_backward",
    "token_accuracy",
]


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray  # (B, C) softmax(z)
    labels: np.ndarray  # (B,) integer


class CrossEntropyGrads(NamedTuple):
    logits: np.ndarray  # (B, C); labels are not differentiable


def _logits_labels(logits: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    logits = float_array(logits, "logits", ndim=2)
    b, c = logits.shape
    if b == 0 or c == 0:
        raise ValueError(f"logits must have at least one row and one class, got shape {(b, c)}")
    labels = index_array(labels, "labels", c)
    if labels.shape != (b,):
        raise ValueError(
            f"labels has shape {labels.shape}, expected ({b},) for logits of shape {(b, c)}"
        )
    return logits, labels


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.floating, CrossEntropyCache]:
    """Mean softmax cross-entropy over the batch.

    Shapes: logits (B, C) finite floats; labels integer (B,), each in [0, C)
    → L a scalar of the logits' dtype.

        L = (1/B) Σ_b [ log Σ_c exp(z_bc) − z_{b, y_b} ]
    """
    logits, labels = _logits_labels(logits, labels)
    check_finite(logits, "logits")
    b = logits.shape[0]
    probs, lse = _softmax_lse_inplace(logits.astype(result_dtype(logits), copy=True), None)
    picked = logits[np.arange(b), labels]
    loss = np.mean(lse - picked)
    return loss, CrossEntropyCache(probs, labels)


def cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> CrossEntropyGrads:
    """VJP of ``cross_entropy``: forward was L = mean_b [LSE(z_b) − z_{b,y_b}], so

        dz_bc = dL · (p_bc − [c = y_b]) / B,   p = softmax(z) along C.

    ``dloss`` is the upstream scalar gradient (1.0 when L is the objective).
    Returns ``CrossEntropyGrads(logits)``, dlogits (B, C).
    """
    cache_of(cache, CrossEntropyCache, "cross_entropy")
    probs, labels = cache
    dl = probs.dtype.type(real_number(dloss, "dloss"))
    b = probs.shape[0]
    dz = probs.copy()
    dz[np.arange(b), labels] -= 1.0
    dz *= dl / probs.dtype.type(b)
    return CrossEntropyGrads(dz)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max logit is the label (ties: the first maximum).

    Shapes: logits (B, C), labels integer (B,) in [0, C).
    """
    logits, labels = _logits_labels(logits, labels)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


# --------------------------------------------------------------------------- per-token
class TokenCrossEntropyCache(NamedTuple):
    scored: np.ndarray  # (...,) bool: target != ignore
    inner: CrossEntropyCache  # of the scored rows
    shape: tuple[int, ...]  # the logits' shape


def _scored(
    logits: object, targets: object, ignore: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logits = float_array(logits, "logits", min_ndim=2)
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets has shape {targets.shape}, expected the logits' leading shape {logits.shape[:-1]}"
        )
    scored = targets != ignore
    if not scored.any():
        raise ValueError(f"targets score no position (every entry is the ignore value {ignore})")
    return logits, targets, scored


def token_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, *, ignore: int = -1
) -> tuple[np.floating, TokenCrossEntropyCache]:
    """Mean softmax cross-entropy over the scored positions of a sequence model.

    Shapes: logits (..., C) (typically (B, N, C)); targets integer (...) in [0, C), or
    ``ignore`` where nothing is scored. L = mean over scored positions t of
    LSE(z_t) − z_{t, y_t} (``cross_entropy`` of the scored rows).
    """
    logits, targets, scored = _scored(logits, targets, ignore)
    loss, inner = cross_entropy(logits[scored], targets[scored])
    return loss, TokenCrossEntropyCache(scored, inner, logits.shape)


def token_cross_entropy_backward(dloss: float, cache: TokenCrossEntropyCache) -> CrossEntropyGrads:
    """VJP of ``token_cross_entropy``: the scored rows get ``cross_entropy_backward``'s rows,
    the ignored positions zero. Returns ``CrossEntropyGrads(logits)`` of the logits' shape."""
    cache_of(cache, TokenCrossEntropyCache, "token_cross_entropy")
    d_rows = cross_entropy_backward(dloss, cache.inner).logits
    dz = np.zeros(cache.shape, dtype=d_rows.dtype)
    dz[cache.scored] = d_rows
    return CrossEntropyGrads(dz)


def token_accuracy(logits: np.ndarray, targets: np.ndarray, *, ignore: int = -1) -> float:
    """Fraction of scored positions whose arg-max logit is the target."""
    logits, targets, scored = _scored(logits, targets, ignore)
    return accuracy(logits[scored], targets[scored])
