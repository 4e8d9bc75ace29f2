"""Calibration of probabilistic classifiers: reliability curves, ECE, NLL and Brier score.

Binning (one rule for every ECE and reliability curve in raydgm): ``n_bins`` equal-width bins
on [0, 1], bin b = floor(n_bins * p) holding [b/n_bins, (b+1)/n_bins), the last bin also
p = 1. For a probability p and a 0/1 outcome o, the reliability curve is, per non-empty bin B,
(mean p over B, mean o over B), and

    ECE = sum_b |B_b| / N * |mean(o)_b - mean(p)_b|          (Naeini et al. 2015; Guo et al. 2017, eq. 3)

Binary (``density_ratio``: p = P(real), o = [row is real]): 10 bins (``raydgm._diagnostics``).

Multiclass, top-label (Guo et al. 2017, Sec. 2): a K-class classifier with class probabilities
p_i = softmax(logits_i) has confidence c_i = max_k p_ik and is correct when argmax_k p_ik = y_i;
``top_label`` bins (c_i, correct_i) into ``TOP_LABEL_BINS`` = 15 equal-width bins, as Guo et al.
(bins below 1/K stay empty: c_i >= 1/K). Equal width, not equal mass, so that every run's
curve has the same bin edges and MLflow can overlay them bin by bin. It also gives
NLL = -1/N sum_i log p_{i, y_i} (nats) and the multiclass Brier score
1/N sum_i sum_k (p_ik - [y_i = k])^2 in [0, 2] (Brier 1950; not divided by K).
Pure numpy.
"""
from __future__ import annotations

from typing import Any

import numpy as np

TOP_LABEL_BINS = 15
CURVE_KEYS = ("bin", "count", "confidence", "accuracy")   # top_label's "curve" columns


def bin_ids(prob: np.ndarray, n_bins: int) -> np.ndarray:
    """int64 (N,) equal-width bin of each probability in [0, 1]: floor(n_bins * p), clipped to
    [0, n_bins - 1] (bin b holds [b/n, (b+1)/n), the last bin also 1)."""
    return np.clip((np.asarray(prob) * n_bins).astype(np.int64), 0, n_bins - 1)


def reliability_bins(prob: np.ndarray, outcome: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    """The non-empty bins of ``bin_ids``, in bin order: {"bin": int64 (M,), "count": int64 (M,),
    "prob": float64 (M,) mean probability, "outcome": float64 (M,) mean outcome}.
    ``prob``: float (N,) in [0, 1]; ``outcome``: (N,) 0/1 (bool or numbers)."""
    count, sum_p, sum_o = _sums(prob, outcome, n_bins)
    full = np.flatnonzero(count)
    return {"bin": full.astype(np.int64), "count": count[full].astype(np.int64),
            "prob": sum_p[full] / count[full], "outcome": sum_o[full] / count[full]}


def expected_calibration_error(prob: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """ECE = sum_b (n_b / N) |mean(outcome)_b - mean(prob)_b| over the bins of ``bin_ids``,
    computed as sum_b |sum(outcome)_b - sum(prob)_b| / N."""
    count, sum_p, sum_o = _sums(prob, outcome, n_bins)
    return float(np.abs(sum_o - sum_p).sum() / count.sum())


def _sums(prob: np.ndarray, outcome: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of ``bin_ids`` (n_bins,): count, sum of prob, sum of outcome."""
    p, o = np.asarray(prob, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    bins = bin_ids(p, n_bins)
    return np.bincount(bins, minlength=n_bins), np.bincount(bins, p, n_bins), np.bincount(bins, o, n_bins)


def reliability_curve(prob: np.ndarray, outcome: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean outcome, mean prob) of each non-empty bin of ``bin_ids``, in bin order: the points
    of the reliability diagram, on the ECE's own bins."""
    b = reliability_bins(prob, outcome, n_bins)
    return b["outcome"], b["prob"]


def top_label(log_probs: np.ndarray, labels: np.ndarray, n_bins: int = TOP_LABEL_BINS) -> dict[str, Any]:
    """Top-label calibration of a K-class classifier on N labelled rows (module docstring).

    Args:
        log_probs: float (N, K) log class probabilities (a log-softmax); each row's exp sums to 1.
        labels: int (N,) true classes in [0, K).
        n_bins: equal-width confidence bins.

    Returns:
        {"accuracy", "ece", "nll", "brier" (floats), "n_bins", "curve": {"bin", "count",
        "confidence", "accuracy"} (lists over the non-empty bins, in bin order)}; JSON-safe.

    Raises:
        ValueError: wrong shapes, no rows, NaN or +inf, rows whose probabilities do not sum to 1
        (|sum - 1| > 1e-3), labels outside [0, K), n_bins < 1.
    """
    lp, y = _checked(log_probs, labels, n_bins)
    p = np.exp(lp)                                                   # (N, K)
    conf, pred = p.max(axis=1), lp.argmax(axis=1)                    # (N,), (N,)
    correct = pred == y
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    b = reliability_bins(conf, correct, n_bins)
    return {"accuracy": float(correct.mean()), "ece": expected_calibration_error(conf, correct, n_bins),
            "nll": float(-lp[np.arange(len(y)), y].mean()),
            "brier": float(((p - onehot) ** 2).sum(axis=1).mean()), "n_bins": int(n_bins),
            "curve": {"bin": b["bin"].tolist(), "count": b["count"].tolist(),
                      "confidence": b["prob"].tolist(), "accuracy": b["outcome"].tolist()}}


def pool_curves(curves: list[dict[str, list]], n_bins: int) -> dict[str, list]:
    """Several ``top_label`` curves (runs of one arm: its seeds) pooled bin by bin: per bin the
    summed count, and confidence and accuracy averaged with the runs' counts as weights (the
    curve of all their rows together). Same keys as a curve; ValueError if ``curves`` is empty."""
    if not curves:
        raise ValueError("curves is empty")
    count, conf, acc = (np.zeros(n_bins) for _ in range(3))
    for c in curves:
        b, n = np.asarray(c["bin"], dtype=np.int64), np.asarray(c["count"], dtype=np.float64)
        if b.size and (b.min() < 0 or b.max() >= n_bins):
            raise ValueError(f"curve bins {b.tolist()} outside [0, {n_bins})")
        np.add.at(count, b, n)
        np.add.at(conf, b, n * np.asarray(c["confidence"], dtype=np.float64))
        np.add.at(acc, b, n * np.asarray(c["accuracy"], dtype=np.float64))
    full = np.flatnonzero(count)
    return {"bin": full.tolist(), "count": count[full].astype(np.int64).tolist(),
            "confidence": (conf[full] / count[full]).tolist(), "accuracy": (acc[full] / count[full]).tolist()}


def _checked(log_probs: Any, labels: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    lp, y = np.asarray(log_probs, dtype=np.float64), np.asarray(labels)
    if lp.ndim != 2 or y.ndim != 1 or len(y) != len(lp) or len(y) == 0 or lp.shape[1] < 2:
        raise ValueError(f"log_probs must be (N, K), K >= 2, and labels (N,), N >= 1; got shapes "
                         f"{lp.shape} and {y.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if np.isnan(lp).any() or (lp == np.inf).any():
        raise ValueError("log_probs holds NaN or +inf")
    off = np.abs(np.exp(lp).sum(axis=1) - 1.0)
    if off.max() > 1e-3:
        raise ValueError(f"log_probs are not log probabilities: a row's probabilities sum to "
                         f"1 off by {off.max():.3g} (pass a log-softmax, not logits)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= lp.shape[1]:
        raise ValueError(f"labels must be integers in [0, {lp.shape[1]}), got dtype {y.dtype}, "
                         f"range [{y.min()}, {y.max()}]")
    return lp, y.astype(np.int64)
