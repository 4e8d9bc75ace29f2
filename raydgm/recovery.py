"""Scoring estimated importance weights against known ones (the known-bias generators' truth).

A known-bias generator (``raydgm.models.known_bias``) stores with every sample its true
log-weight log w*(x) = log p_data(x) - log p_gen(x) (``-inf`` for junk, which p_data never
produces) and the class of the real image it copied (-1 for junk). These functions say how
well estimated log-weights log w recover them:

- ``recovery``: on the rows with a finite truth, the rank (Spearman) and linear (Pearson)
  correlation of log w with log w* and the least-squares slope of log w on log w* (1: the
  right spread; below 1: weights too flat); on every row, Kish's ESS of w and of w*; where
  junk exists, the ROC AUC of log w separating real copies (positive) from junk. A truth with
  few distinct values (one per class) has ties that an untied estimate cannot match:
  ``spearman_max`` is the Spearman of any estimate that orders the distinct true values
  rightly and breaks their ties (the correlation of the truth's average ranks with its
  ordinal ranks; every tie-break gives the same value). Two equal groups give sqrt(3)/2.
- ``class_count_spearman``: the Spearman that weights read off the pool's own class counts
  reach, log w(y) = log pi_data(y) - log pool_mix(y): an estimator that knows every row's
  class (label-free weights do not) and has only this pool to learn pi_gen from. Where true
  weights of two classes are close, the pool's counts misorder them, so this falls below
  ``spearman_max``: a reference for what class-level recovery can reach on this pool.
- ``within_class``: how far the estimate is from class-level where the truth is one value per
  class: the pooled standard deviation of log w around its class means (the truth's is 0),
  and the Spearman of the truth with those class means (the order of the classes the
  estimate holds once that spread is removed).
- ``noise_tolerance``: the largest per-row error a rank target leaves room for: the standard
  deviation s at which the truth plus s z (z seeded standard normal draws, one per row)
  still reaches the target Spearman with the truth. A truth whose classes lie close together
  tolerates little; one whose ties cap every untied estimate below the target
  (``spearman_max``) tolerates none.
- ``sir_effect``: what sampling-importance-resampling with probabilities p_i = w_i / sum_j w_j
  (or with observed draw counts) does to the class mix and the junk share: the class mix of
  the drawn real copies, sum_{i real, y_i = k} p_i / sum_{i real} p_i, against the data's
  class mix by total variation, and the junk share sum_{i junk} p_i.

Total variation: TV(p, q) = 1/2 sum_k |p_k - q_k|, in [0, 1].

Leaf module: numpy and scipy only. Every function checks its inputs and raises ValueError
with a message that names the bad argument.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import pearsonr, rankdata, spearmanr

JUNK = -1   # the true class of a junk row


def _vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {v.shape}")
    if n is not None and v.size != n:
        raise ValueError(f"{name} has {v.size} entries, expected {n}")
    if np.isnan(v).any():
        raise ValueError(f"{name} holds NaN")
    return v


def _distribution(p: Any, name: str) -> np.ndarray:
    v = _vector(p, name)
    if (v < 0).any() or not np.isfinite(v).all():
        raise ValueError(f"{name} must hold finite non-negative probabilities")
    if abs(v.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1, sums to {v.sum():.12g}")
    return v


def tv_distance(p: Any, q: Any) -> float:
    """Total variation 1/2 sum_k |p_k - q_k| of two (K,) probability vectors, in [0, 1]."""
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.size != q.size:
        raise ValueError(f"p has {p.size} classes and q {q.size}")
    return float(0.5 * np.abs(p - q).sum())


def class_mix(classes: Any, num_classes: int, weights: Any | None = None) -> np.ndarray:
    """The (weighted) class mix of the non-junk rows: float64 (K,) summing to 1.

    ``classes``: int (N,) in {-1 (junk, left out), 0..K-1}; ``weights``: non-negative (N,)
    (None: every row counts 1). Raises when the non-junk rows carry no weight.
    """
    y = np.asarray(classes)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"classes must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < JUNK or y.max() >= num_classes):
        raise ValueError(f"classes must lie in -1..{num_classes - 1}, found {y.min()}..{y.max()}")
    w = np.ones(y.size) if weights is None else _vector(weights, "weights", y.size)
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    real = y != JUNK
    mix = np.bincount(y[real], w[real], minlength=num_classes)
    if mix.sum() <= 0:
        raise ValueError("the non-junk rows carry no weight: their class mix is undefined")
    return mix / mix.sum()


def sir_probabilities(log_weights: Any) -> np.ndarray:
    """p_i = w_i / sum_j w_j from log-weights (-inf: 0), float64 (N,); max subtracted first."""
    lw = _vector(log_weights, "log_weights")
    if np.isposinf(lw).any() or np.isneginf(lw).all():
        raise ValueError("log_weights must hold no +inf and at least one finite entry")
    return np.exp(lw - logsumexp(lw))


def ess(log_weights: Any) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of log-weights (-inf: w = 0)."""
    p = sir_probabilities(log_weights)
    return float(1.0 / np.sum(p * p))


def junk_auc(log_weights: Any, is_junk: Any) -> float:
    """ROC AUC of ``log_weights`` ranking real rows above junk rows (ties count 1/2); NaN
    unless both kinds are present. Mann-Whitney: (sum of real ranks - n_r (n_r + 1) / 2) /
    (n_r n_j) with average ranks."""
    lw = _vector(log_weights, "log_weights")
    junk = np.asarray(is_junk, dtype=bool)
    if junk.shape != lw.shape:
        raise ValueError(f"is_junk has shape {junk.shape}, log_weights {lw.shape}")
    n_j, n_r = int(junk.sum()), int((~junk).sum())
    if n_j == 0 or n_r == 0:
        return float("nan")
    ranks = rankdata(lw)          # -inf ranks lowest, as it should
    return float((ranks[~junk].sum() - n_r * (n_r + 1) / 2) / (n_r * n_j))


def recovery(log_weights: Any, true_log_weights: Any) -> dict[str, float]:
    """How well estimated ``log_weights`` (N,) recover ``true_log_weights`` (N,; -inf = junk).

    Returns ``rows``, ``real_rows``, ``junk_rows``; on the rows with a finite truth:
    ``spearman``, ``spearman_max`` (its ceiling under the truth's ties), ``pearson`` (NaN when
    either side is constant there) and ``slope`` (the least-squares slope of log w on log w*); on every row: ``ess_estimated``, ``ess_true``,
    their fractions of N and ``ess_ratio`` = ess_estimated / ess_true; ``junk_auc`` (NaN
    without junk) and ``junk_weight_share`` (sum of p_i over junk, ``sir_probabilities``).
    """
    lw = _vector(log_weights, "log_weights")
    truth = _vector(true_log_weights, "true_log_weights", lw.size)
    if not np.isfinite(lw).all():
        raise ValueError("log_weights must be finite (estimated weights are never 0 or inf)")
    if np.isposinf(truth).any():
        raise ValueError("true_log_weights holds +inf")
    real = np.isfinite(truth)
    if real.sum() < 1:
        raise ValueError("every row is junk: nothing to score the weights against")
    out: dict[str, float] = {"rows": lw.size, "real_rows": int(real.sum()), "junk_rows": int((~real).sum())}
    x, y = truth[real], lw[real]
    varies = x.size >= 2 and x.min() < x.max() and y.min() < y.max()
    out["spearman"] = float(spearmanr(x, y)[0]) if varies else math.nan
    out["spearman_max"] = float(np.corrcoef(rankdata(x), rankdata(x, method="ordinal"))[0, 1]) if varies else math.nan
    out["pearson"] = float(pearsonr(x, y)[0]) if varies else math.nan
    out["slope"] = float(np.cov(x, y)[0, 1] / np.var(x, ddof=1)) if varies else math.nan
    out["ess_estimated"], out["ess_true"] = ess(lw), ess(truth)
    out["ess_fraction_estimated"] = out["ess_estimated"] / lw.size
    out["ess_fraction_true"] = out["ess_true"] / lw.size
    out["ess_ratio"] = out["ess_estimated"] / out["ess_true"]
    out["junk_auc"] = junk_auc(lw, ~real)
    out["junk_weight_share"] = float(sir_probabilities(lw)[~real].sum())
    return out


def _finite_truth_classes(truth: np.ndarray, true_classes: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the rows of ``truth`` with a finite true weight, bool (N,); their classes): checks that
    ``true_classes`` is an integer array shaped like ``truth`` and that no such row is junk."""
    y = np.asarray(true_classes)
    if y.shape != truth.shape or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"true_classes must be an integer array of shape {truth.shape}, got {y.dtype} {y.shape}")
    real = np.isfinite(truth)
    if (y[real] == JUNK).any():
        raise ValueError("a row with a finite true weight has the junk class -1")
    return real, y[real]


def class_count_spearman(true_log_weights: Any, true_classes: Any, data_mix: Any) -> float:
    """Spearman, over the rows with a finite truth, of ``true_log_weights`` (N,) with the
    class-count weights log ``data_mix``[y] - log pool_mix(y), pool_mix the class mix of
    those rows (``true_classes`` int (N,), -1 = junk; ``data_mix`` (K,)). NaN when either
    side is constant there."""
    data_mix = _distribution(data_mix, "data_mix")
    truth = _vector(true_log_weights, "true_log_weights")
    real, y = _finite_truth_classes(truth, true_classes)
    x = truth[real]
    if y.size == 0:
        return math.nan
    estimate = np.log(data_mix[y]) - np.log(class_mix(y, data_mix.size)[y])
    varies = x.size >= 2 and x.min() < x.max() and estimate.min() < estimate.max()
    return float(spearmanr(x, estimate)[0]) if varies else math.nan


def within_class(log_weights: Any, true_log_weights: Any, true_classes: Any) -> dict[str, float]:
    """On the rows with a finite truth: ``within_class_sd``, the pooled standard deviation
    sqrt(sum_i (log w_i - m_{y_i})^2 / n) of ``log_weights`` (N,) around its class means m_y
    (``true_classes`` int (N,), -1 = junk), and ``spearman_class_means``, the Spearman of
    ``true_log_weights`` (N,) with m_{y_i} (NaN when either side is constant there)."""
    lw = _vector(log_weights, "log_weights")
    truth = _vector(true_log_weights, "true_log_weights", lw.size)
    real, y = _finite_truth_classes(truth, true_classes)
    if not real.any():
        return {"within_class_sd": math.nan, "spearman_class_means": math.nan}
    x, est = truth[real], lw[real]
    _, group = np.unique(y, return_inverse=True)
    means = (np.bincount(group, est) / np.bincount(group))[group]
    varies = x.min() < x.max() and means.min() < means.max()
    return {"within_class_sd": float(np.sqrt(np.mean((est - means) ** 2))),
            "spearman_class_means": float(spearmanr(x, means)[0]) if varies else math.nan}


def noise_tolerance(true_log_weights: Any, target: float, seed: int = 0, tol: float = 1e-3) -> float:
    """The largest s with Spearman(t, t + s z) >= ``target`` over the rows with a finite truth
    t (z: standard normal draws of ``seed``, the same for every s), to a relative ``tol``, by
    bisection on s / sd(t) in [1e-6, 1e3] (log scale). 0 when s = 1e-6 sd(t), which only
    breaks the truth's ties at random, already falls below ``target``; inf when s = 1e3 sd(t)
    still reaches it; NaN when the finite truth is constant. For a Gaussian truth the answer
    is sd(t) sqrt(1 / rho^2 - 1) with rho = 2 sin(pi target / 6) (the Spearman of a bivariate
    normal is 6 / pi arcsin(rho / 2))."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must lie in (0, 1), got {target}")
    truth = _vector(true_log_weights, "true_log_weights")
    x = truth[np.isfinite(truth)]
    if x.size < 2 or x.min() == x.max():
        return math.nan
    z = np.random.default_rng(seed).standard_normal(x.size) * np.std(x)
    def reaches(s: float) -> bool:
        return spearmanr(x, x + s * z)[0] >= target
    lo, hi = 1e-6, 1e3
    if not reaches(lo):
        return 0.0
    if reaches(hi):
        return math.inf
    while hi / lo > 1.0 + tol:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if reaches(mid) else (lo, mid)
    return float(lo * np.std(x))


def sir_effect(weights: Any, true_classes: Any, data_mix: Any) -> dict[str, float]:
    """The class mix and junk share of a set drawn with per-row ``weights`` (N,; SIR
    probabilities or draw counts, non-negative, not all 0) from rows of ``true_classes``
    (int (N,), -1 = junk), against ``data_mix`` (K,): ``class_tv`` (TV of the drawn real
    copies' class mix to ``data_mix``; NaN when every drawn row is junk) and ``junk_share``
    (the weight on junk rows over the total)."""
    data_mix = _distribution(data_mix, "data_mix")
    y = np.asarray(true_classes)
    w = _vector(weights, "weights", y.size)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all 0")
    junk = y == JUNK
    share = float(w[junk].sum() / w.sum())
    if w[~junk].sum() <= 0:
        return {"class_tv": math.nan, "junk_share": share}
    return {"class_tv": tv_distance(class_mix(y, data_mix.size, w), data_mix), "junk_share": share}
