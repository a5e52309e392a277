"""Uncertainty metrics (NLL, ECE, Brier) and Monte-Carlo averaging against hand computations."""

import math

import numpy as np
import pytest

from primal_np.nn.metrics import (
    brier_score,
    calibration_metrics,
    example_scores,
    expected_calibration_error,
    log_softmax,
    mc_log_probs,
    negative_log_likelihood,
    reliability_bins,
    summarize_scores,
)

# four binary predictions, confidences 0.9, 0.81, 0.7, 0.55 (away from the bin edges k/15)
P4 = np.array([[0.9, 0.1], [0.81, 0.19], [0.3, 0.7], [0.55, 0.45]])
Y4 = np.array([0, 1, 1, 1])  # correct, wrong, correct, wrong


def test_ece_hand_computed_one_example_per_bin():
    # bin b (0-based) is (b/15, (b+1)/15]: 0.9 → b = 13, 0.81 → 12, 0.7 → 10, 0.55 → 8,
    # four bins of one example each, so
    # ECE = (1/4)(|1 − 0.9| + |0 − 0.81| + |1 − 0.7| + |0 − 0.55|)
    assert math.isclose(
        expected_calibration_error(P4, Y4), (0.1 + 0.81 + 0.3 + 0.55) / 4, rel_tol=1e-14
    )
    rel = reliability_bins(P4, Y4)
    assert rel.edges.shape == (16,) and rel.counts.sum() == 4
    assert {int(b) for b in np.flatnonzero(rel.counts)} == {8, 10, 12, 13}
    np.testing.assert_allclose(rel.confidence[[8, 10, 12, 13]], [0.55, 0.7, 0.81, 0.9])
    np.testing.assert_array_equal(rel.accuracy[[8, 10, 12, 13]], [0, 1, 0, 1])


def test_ece_averages_within_a_bin_and_weights_by_bin_size():
    # two examples in (9/15, 10/15] (0.61, 0.65; one right), one in (14/15, 1] (0.95, right)
    p = np.array([[0.61, 0.39], [0.35, 0.65], [0.95, 0.05]])
    y = np.array([0, 0, 0])
    expected = (2 / 3) * abs(0.5 - 0.63) + (1 / 3) * abs(1 - 0.95)
    assert math.isclose(expected_calibration_error(p, y), expected, rel_tol=1e-14)
    # 5 bins instead of 15: (0.6, 0.8] holds both 0.61 and 0.65; (0.8, 1] holds 0.95
    assert math.isclose(expected_calibration_error(p, y, bins=5), expected, rel_tol=1e-14)
    # 1 bin: |mean accuracy − mean confidence|
    assert math.isclose(
        expected_calibration_error(p, y, bins=1), abs(2 / 3 - (0.61 + 0.65 + 0.95) / 3),
        rel_tol=1e-14,
    )  # fmt: skip


def test_ece_is_zero_for_a_calibrated_bin_and_bins_are_right_closed():
    # ten predictions of confidence 0.7, seven right: calibrated
    p = np.tile([0.7, 0.3], (10, 1))
    y = np.array([0] * 7 + [1] * 3)
    assert expected_calibration_error(p, y) < 1e-15
    # a confidence exactly on an edge belongs to the bin below (the authors' gt/le test)
    edges = np.linspace(0, 1, 16)
    c = edges[10]  # 10/15 in float64
    rel = reliability_bins(np.array([[c, 1 - c]]), np.array([0]))
    assert rel.counts[9] == 1 and rel.counts.sum() == 1
    rel = reliability_bins(np.array([[1.0, 0.0]]), np.array([0]))
    assert rel.counts[14] == 1


def test_brier_and_nll_closed_forms():
    # Brier: Σ_c (p_c − y_c)² per row, then the mean
    per_row = [0.01 + 0.01, 0.81**2 + 0.81**2, 0.09 + 0.09, 0.55**2 + 0.55**2]
    assert math.isclose(brier_score(P4, Y4), np.mean(per_row), rel_tol=1e-14)
    # uniform over C classes: (1 − 1/C)² + (C − 1)/C² = (C − 1)/C; one-hot and right: 0
    for c in (2, 5, 10):
        assert math.isclose(brier_score(np.full((3, c), 1 / c), np.zeros(3, int)), (c - 1) / c)
    assert brier_score(np.eye(4), np.arange(4)) == 0.0
    assert brier_score(np.eye(4), np.array([1, 2, 3, 0])) == 2.0  # confidently wrong
    nll = negative_log_likelihood(np.log(P4), Y4)
    assert math.isclose(nll, -(np.log(0.9) + np.log(0.19) + np.log(0.7) + np.log(0.45)) / 4)


def test_calibration_metrics_and_example_scores_agree_with_the_single_metrics():
    m = calibration_metrics(np.log(P4), Y4)
    assert m.accuracy == 0.5
    assert math.isclose(m.nll, negative_log_likelihood(np.log(P4), Y4), rel_tol=1e-14)
    assert math.isclose(m.ece, (0.1 + 0.81 + 0.3 + 0.55) / 4, rel_tol=1e-13)
    assert math.isclose(m.brier, brier_score(P4, Y4), rel_tol=1e-13)
    # per-example terms concatenated over batches give the same metrics
    parts = [example_scores(np.log(P4[:1]), Y4[:1]), example_scores(np.log(P4[1:]), Y4[1:])]
    joined = summarize_scores(
        type(parts[0])(*(np.concatenate(a) for a in zip(*parts, strict=True)))
    )
    assert joined == m


def test_ties_predict_the_first_class():
    s = example_scores(np.log(np.array([[0.5, 0.5], [0.5, 0.5]])), np.array([0, 1]))
    np.testing.assert_array_equal(s.correct, [True, False])


def test_log_softmax_and_mc_averages(rng):
    z = rng.standard_normal((3, 4, 5)) * 3  # K = 3 samples of 4 rows, 5 classes
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(log_softmax(z[0]), np.log(p[0]), rtol=1e-13)
    np.testing.assert_allclose(mc_log_probs(z), np.log(p.mean(0)), rtol=1e-13)
    zbar = z.mean(0)
    np.testing.assert_allclose(
        mc_log_probs(z, "logits"), np.log(np.exp(zbar) / np.exp(zbar).sum(-1, keepdims=True)),
        rtol=1e-13,
    )  # fmt: skip
    for avg in ("probs", "logits"):
        np.testing.assert_allclose(mc_log_probs(z[:1], avg), np.log(p[0]), rtol=1e-13)
    # huge logits: exact in log space, where exp would overflow
    big = np.array([[[1000.0, 0.0]], [[0.0, 1000.0]]])
    np.testing.assert_allclose(mc_log_probs(big), [[np.log(0.5), np.log(0.5)]], rtol=1e-15)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: brier_score(np.array([[0.6, 0.6]]), np.array([0])), "probabilities"),
        (lambda: brier_score(np.array([[1.2, -0.2]]), np.array([0])), "probabilities"),
        (lambda: brier_score(np.array([[0.5, np.nan]]), np.array([0])), "finite"),
        (
            lambda: brier_score(np.array([[0.5, 0.5]]), np.array([2])),
            r"labels must lie in \[0, 2\)",
        ),
        (lambda: brier_score(np.array([[0.5, 0.5]]), np.array([0, 1])), "labels has shape"),
        (lambda: expected_calibration_error(P4, Y4, bins=0), "bins must be >= 1"),
        (lambda: negative_log_likelihood(np.zeros((1, 2)), np.array([0])), "log-probabilities"),
        (lambda: mc_log_probs(np.zeros((2, 3)), "median"), "average must be one of"),
        (lambda: mc_log_probs(np.zeros((0, 3))), "at least one sample"),
        (lambda: brier_score(np.zeros((0, 2)), np.zeros(0, int)), "at least one row"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
    with pytest.raises(TypeError, match="labels must be an integer array"):
        brier_score(P4, Y4.astype(float))
