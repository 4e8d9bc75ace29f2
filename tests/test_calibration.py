"""raydgm.calibration: top-label ECE, NLL and Brier score against values worked out by hand, a
brute-force ECE over explicit bin edges, sklearn's log loss, and the errors for bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from raydgm import calibration

# Four predictions over K = 3 classes (rows), their labels, and what a hand computation gives.
P = np.array([[0.7, 0.2, 0.1],     # confidence 0.7 -> bin floor(15 * 0.7) = 10, correct (y = 0)
              [0.2, 0.7, 0.1],     # 0.7 -> bin 10, wrong (y = 2)
              [0.4, 0.3, 0.3],     # 0.4 -> bin 6, wrong (y = 1)
              [0.1, 0.1, 0.8]])    # 0.8 -> bin 12, correct (y = 2)
Y = np.array([0, 2, 1, 2])


def test_top_label_matches_a_hand_computation():
    got = calibration.top_label(np.log(P), Y)
    assert got["accuracy"] == 2 / 4
    # bins 6, 10, 12: |0 - 0.4| (1 row), |1/2 - 0.7| (2 rows), |1 - 0.8| (1 row)
    assert got["ece"] == pytest.approx(1 / 4 * 0.4 + 2 / 4 * 0.2 + 1 / 4 * 0.2)              # 0.25
    assert got["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.1) + math.log(0.3) + math.log(0.8)) / 4)
    rows = [(0.7 - 1) ** 2 + 0.2 ** 2 + 0.1 ** 2, 0.2 ** 2 + 0.7 ** 2 + (0.1 - 1) ** 2,
            0.4 ** 2 + (0.3 - 1) ** 2 + 0.3 ** 2, 0.1 ** 2 + 0.1 ** 2 + (0.8 - 1) ** 2]   # 0.14, 1.34, 0.74, 0.06
    assert got["brier"] == pytest.approx(sum(rows) / 4)                                       # 0.57
    assert got["curve"] == {"bin": [6, 10, 12], "count": [1, 2, 1],
                            "confidence": pytest.approx([0.4, 0.7, 0.8]), "accuracy": [0.0, 0.5, 1.0]}
    assert got["n_bins"] == 15


def test_a_perfect_one_hot_classifier_has_zero_ece_nll_and_brier():
    lp = np.log(np.eye(3)[[0, 2, 1]] * (1 - 2e-12) + 1e-12)
    got = calibration.top_label(lp, np.array([0, 2, 1]))
    assert got["accuracy"] == 1 and got["ece"] < 1e-9 and got["nll"] < 1e-9 and got["brier"] < 1e-9
    assert got["curve"]["bin"] == [14]               # confidence 1 goes to the last bin


def test_ece_agrees_with_a_brute_force_loop_over_bin_edges_and_nll_with_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(500, 4))
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    y = rng.integers(0, 4, 500)
    got = calibration.top_label(lp, y, n_bins=7)
    conf, correct = np.exp(lp).max(axis=1), lp.argmax(axis=1) == y
    ece = 0.0
    for b in range(7):
        inside = (conf >= b / 7) & ((conf < (b + 1) / 7) if b < 6 else (conf <= 1))
        if inside.any():
            ece += inside.sum() / 500 * abs(correct[inside].mean() - conf[inside].mean())
    assert got["ece"] == pytest.approx(ece, rel=1e-12)
    assert got["nll"] == pytest.approx(log_loss(y, np.exp(lp), labels=range(4)), rel=1e-9)
    assert sum(got["curve"]["count"]) == 500 and min(got["curve"]["bin"]) >= math.floor(7 * 1 / 4)   # confidence >= 1/K


def test_binary_ece_is_the_same_rule_on_p_real():
    """The density-ratio classifier's ECE: prob = P(real), outcome = [real]; 0.3 and 0.7 on edges
    go to the bin above."""
    prob, real = np.array([0.3, 0.3, 0.25, 0.7]), np.array([1, 0, 0, 1])
    assert calibration.bin_ids(prob, 10).tolist() == [3, 3, 2, 7]
    assert calibration.expected_calibration_error(prob, real, 10) == pytest.approx(
        1 / 4 * 0.25 + 2 / 4 * abs(0.5 - 0.3) + 1 / 4 * 0.3)


def test_pool_curves_weights_each_bin_by_its_counts():
    a = {"bin": [10, 12], "count": [2, 1], "confidence": [0.7, 0.8], "accuracy": [0.5, 1.0]}
    b = {"bin": [10], "count": [3], "confidence": [0.6], "accuracy": [1.0]}
    got = calibration.pool_curves([a, b], 15)
    assert got["bin"] == [10, 12] and got["count"] == [5, 1]
    assert got["confidence"] == pytest.approx([(2 * 0.7 + 3 * 0.6) / 5, 0.8])
    assert got["accuracy"] == pytest.approx([(2 * 0.5 + 3 * 1.0) / 5, 1.0])
    with pytest.raises(ValueError, match="empty"):
        calibration.pool_curves([], 15)
    with pytest.raises(ValueError, match="outside"):
        calibration.pool_curves([a], 12)


@pytest.mark.parametrize("log_probs, labels, match", [
    (np.log(P)[0], Y, "must be \\(N, K\\)"),
    (np.log(P), Y[:3], "must be \\(N, K\\)"),
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "must be \\(N, K\\)"),
    (np.where(np.eye(4, 3) > 0, np.nan, np.log(P)), Y, "NaN"),
    (np.log(P) + 1.0, Y, "not log probabilities.*not logits"),
    (np.log(P), np.array([0, 2, 1, 3]), "labels must be integers in \\[0, 3\\)"),
    (np.log(P), Y.astype(float), "labels must be integers"),
])
def test_bad_input_is_refused(log_probs, labels, match):
    with pytest.raises(ValueError, match=match):
        calibration.top_label(log_probs, labels)
