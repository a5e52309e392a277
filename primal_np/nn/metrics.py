"""Uncertainty metrics of a classifier's predictive distribution, and Monte-Carlo averaging.

For M scored examples i with predicted probabilities p_i ∈ R^C (p_ic ≥ 0, Σ_c p_ic = 1),
labels y_i, the confidence conf_i = max_c p_ic and the prediction ŷ_i = argmax_c p_ic
(ties: the first maximum):

    accuracy = (1/M) Σ_i [ŷ_i = y_i]
    NLL      = −(1/M) Σ_i log p_{i, y_i}                          (natural log)
    Brier    = (1/M) Σ_i Σ_c (p_ic − [c = y_i])²
    ECE      = Σ_b (M_b / M) · abs(acc_b − conf_b),
               bin b = {i : (b−1)/n_b < conf_i ≤ b/n_b},  b = 1 … n_b  (n_b = 15 bins)

with M_b the number of examples in bin b, acc_b and conf_b their mean correctness and
mean confidence. These are
the metrics the KEP-SVGP paper reports and computes (its ``utils/metrics.py``: 15 equal-width
bins, right-closed, on the maximum softmax probability); its tables scale them (ECE and
Brier × 100, NLL × 10), these functions do not.

A model with stochastic outputs (KEP-SVGP attention) predicts with K samples of its logits
z⁽¹⁾ … z⁽ᴷ⁾; ``mc_log_probs`` combines them:

    "probs":  p = (1/K) Σ_k softmax(z⁽ᵏ⁾)          (the Monte-Carlo predictive mean)
    "logits": p = softmax((1/K) Σ_k z⁽ᵏ⁾)          (the authors' ``valid.py``)

in log space (log-sum-exp), so that an NLL is finite wherever the log-probabilities are.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_finite, float_array, index_array, positive_int

__all__ = [
    "MC_AVERAGES",
    "log_softmax",
    "mc_log_probs",
    "ExampleScores",
    "example_scores",
    "negative_log_likelihood",
    "brier_score",
    "expected_calibration_error",
    "ReliabilityBins",
    "reliability_bins",
    "CalibrationMetrics",
    "calibration_metrics",
    "summarize_scores",
]

MC_AVERAGES = ("probs", "logits")
_SUM_TOL = 1e-6  # |Σ_c p_ic − 1| allowed for probabilities (float32 round-off)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax along the last axis: z_c − log Σ_c' exp(z_c'), shifted by the maximum."""
    z = float_array(logits, "logits", min_ndim=1)
    check_finite(z, "logits")
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def mc_log_probs(logit_samples: np.ndarray, average: str = "probs") -> np.ndarray:
    """log p of the Monte-Carlo prediction from K logit samples (module docstring).

    Shapes: logit_samples (K, ..., C), K ≥ 1 → (..., C). ``average``: "probs" — log of the
    mean of the K softmax distributions, log((1/K) Σ_k exp(log_softmax(z⁽ᵏ⁾)));
    "logits" — log_softmax of the mean logits. For K = 1 both are log_softmax(z⁽¹⁾).
    """
    if average not in MC_AVERAGES:
        raise ValueError(f"average must be one of {MC_AVERAGES}, got {average!r}")
    z = float_array(logit_samples, "logit_samples", min_ndim=2)
    if z.shape[0] == 0:
        raise ValueError("logit_samples needs at least one sample (axis 0 is empty)")
    if average == "logits":
        return log_softmax(z.mean(axis=0))
    lp = log_softmax(z)
    top = lp.max(axis=0)
    return top + np.log(np.exp(lp - top).mean(axis=0))


def _labels(labels: object, m: int, c: int) -> np.ndarray:
    y = index_array(labels, "labels", c)
    if y.shape != (m,):
        raise ValueError(f"labels has shape {y.shape}, expected ({m},) for {m} examples")
    return y


def _probs(probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    p = float_array(probs, "probs", ndim=2)
    m, c = p.shape
    if m == 0 or c == 0:
        raise ValueError(f"probs must have at least one row and one class, got shape {(m, c)}")
    check_finite(p, "probs")
    if p.min() < 0 or p.max() > 1 or np.abs(p.sum(axis=1) - 1).max() > _SUM_TOL:
        raise ValueError(
            "probs must be probabilities: entries in [0, 1], each row summing to 1 "
            f"(within {_SUM_TOL}); got entries in [{p.min():.3g}, {p.max():.3g}], row sums "
            f"in [{p.sum(axis=1).min():.6g}, {p.sum(axis=1).max():.6g}]"
        )
    return p, _labels(labels, m, c)


def _log_probs(log_probs: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    lp = float_array(log_probs, "log_probs", ndim=2)
    m, c = lp.shape
    if m == 0 or c == 0:
        raise ValueError(f"log_probs must have at least one row and one class, got shape {(m, c)}")
    check_finite(lp, "log_probs")
    if np.abs(np.exp(lp).sum(axis=1) - 1).max() > _SUM_TOL:
        raise ValueError(f"log_probs must be log-probabilities: exp of each row sums to 1 "
                         f"(within {_SUM_TOL})")  # fmt: skip
    return lp, _labels(labels, m, c)


class ExampleScores(NamedTuple):
    """Per-example quantities from which every metric is a mean or a binned mean (M,)."""

    confidence: np.ndarray  # conf_i = max_c p_ic
    correct: np.ndarray  # bool, argmax_c p_ic = y_i
    nll: np.ndarray  # −log p_{i, y_i}
    brier: np.ndarray  # Σ_c (p_ic − [c = y_i])²


def example_scores(log_probs: np.ndarray, labels: np.ndarray) -> ExampleScores:
    """The per-example terms of accuracy, NLL, Brier score and ECE.

    Shapes: log_probs (M, C) finite log-probabilities (rows of exp sum to 1); labels
    integer (M,) in [0, C).
    """
    lp, y = _log_probs(log_probs, labels)
    p = np.exp(lp)
    rows = np.arange(lp.shape[0])
    onehot = np.zeros_like(p)
    onehot[rows, y] = 1.0
    return ExampleScores(
        confidence=p.max(axis=1),
        correct=np.argmax(p, axis=1) == y,
        nll=-lp[rows, y],
        brier=((p - onehot) ** 2).sum(axis=1),
    )


def negative_log_likelihood(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """NLL = −(1/M) Σ_i log p_{i, y_i}. Shapes: log_probs (M, C), labels (M,)."""
    lp, y = _log_probs(log_probs, labels)
    return float(-lp[np.arange(lp.shape[0]), y].mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier = (1/M) Σ_i Σ_c (p_ic − [c = y_i])². Shapes: probs (M, C), labels (M,)."""
    p, y = _probs(probs, labels)
    d = p.copy()
    d[np.arange(p.shape[0]), y] -= 1.0
    return float((d * d).sum(axis=1).mean())


class ReliabilityBins(NamedTuple):
    """The reliability diagram: n_b equal-width confidence bins (lower, upper] on [0, 1].

    ``counts`` examples per bin; ``confidence`` and ``accuracy`` are the bin's means (0 for
    an empty bin: read them where counts > 0)."""

    edges: np.ndarray  # (n_b + 1,)
    counts: np.ndarray  # (n_b,) int
    confidence: np.ndarray  # (n_b,)
    accuracy: np.ndarray  # (n_b,)


def _bin_index(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """b − 1 for (edges[b−1], edges[b]]: a confidence on an edge belongs to the bin below."""
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, len(edges) - 2)


def _reliability(confidence: np.ndarray, correct: np.ndarray, bins: int) -> ReliabilityBins:
    bins = positive_int(bins, "bins")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = _bin_index(confidence, edges)
    count = np.bincount(idx, minlength=bins)
    sum_conf = np.bincount(idx, weights=confidence, minlength=bins)
    sum_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins)
    safe = np.maximum(count, 1)
    return ReliabilityBins(edges, count, sum_conf / safe, sum_acc / safe)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> ReliabilityBins:
    """Counts, mean confidence and accuracy per confidence bin (``ReliabilityBins``).

    Shapes: probs (M, C), labels (M,). Confidence conf_i = max_c p_ic; bin b holds
    (b−1)/n_b < conf_i ≤ b/n_b.
    """
    p, y = _probs(probs, labels)
    return _reliability(p.max(axis=1), np.argmax(p, axis=1) == y, bins)


def _ece(rel: ReliabilityBins) -> float:
    m = rel.counts.sum()
    return float(np.sum(rel.counts / m * np.abs(rel.accuracy - rel.confidence)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE = Σ_b (M_b/M) · abs(acc_b − conf_b) over ``bins`` equal-width bins (module
    docstring). Shapes: probs (M, C), labels (M,)."""
    return _ece(reliability_bins(probs, labels, bins))


class CalibrationMetrics(NamedTuple):
    accuracy: float
    nll: float
    ece: float
    brier: float


def summarize_scores(scores: ExampleScores, bins: int = 15) -> CalibrationMetrics:
    """Accuracy, NLL, ECE and Brier score from the per-example terms (means and bins)."""
    conf, correct, nll, brier = (np.asarray(a) for a in scores)
    if conf.ndim != 1 or conf.size == 0 or not (correct.shape == nll.shape == brier.shape
                                                == conf.shape):  # fmt: skip
        raise ValueError("scores must hold four (M,) arrays with M >= 1")
    ece = _ece(_reliability(conf, correct.astype(bool), bins))
    return CalibrationMetrics(float(correct.mean()), float(nll.mean()), ece, float(brier.mean()))


def calibration_metrics(
    log_probs: np.ndarray, labels: np.ndarray, bins: int = 15
) -> CalibrationMetrics:
    """``CalibrationMetrics(accuracy, nll, ece, brier)`` of the predictive distribution
    exp(log_probs) (M, C) on labels (M,)."""
    return summarize_scores(example_scores(log_probs, labels), bins)
