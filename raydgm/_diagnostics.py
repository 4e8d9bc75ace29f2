"""Importance-weight diagnostics behind ``raydgm.density_ratio`` (private; import from there).

Everything works on log-weights ``log w`` (float64, shape ``(N,)``); ``-inf`` is a weight of
zero, ``+inf`` and NaN are errors. Weights are only exponentiated after subtracting their
maximum, so logits of several hundred do not overflow.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.special import expit, logit, logsumexp
from sklearn.metrics import roc_auc_score

from raydgm._checks import check_log_weights
from raydgm.calibration import expected_calibration_error, reliability_curve

KHAT_UNRELIABLE = 0.7      # Vehtari et al. (2024), Sec. 3.2: above this, estimates are unreliable
KHAT_GOOD = 0.5            # below this the weights have a finite variance
ESS_FRACTION_MIN = 0.01    # below 1% of the pool, resampling keeps a handful of samples
AUC_SEPARABLE = 0.99       # near-perfect separation: the odds (weights) degenerate
MIN_PSIS_WEIGHTS = 25      # tail size M = ceil(min(N/5, 3 sqrt(N))) >= 5 needs N >= 25
N_BINS = 10                # equal-width bins of P(real) (raydgm.calibration)


def effective_sample_size(log_weights: Any) -> float:
    """Kish's effective sample size ESS = (sum_i w_i)^2 / sum_i w_i^2, in [1, N].

    Computed as exp(2 logsumexp(log w) - logsumexp(2 log w)); invariant to adding a constant
    to ``log_weights`` (i.e. to the weights' scale). ``-inf`` entries are weights of zero.
    """
    lw = check_log_weights(log_weights)
    return float(np.exp(2.0 * logsumexp(lw) - logsumexp(2.0 * lw)))


def _scale(log_weights: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * log w with zero weights kept at zero (0 * -inf would be NaN)."""
    with np.errstate(invalid="ignore"):   # 0 * -inf is computed, then discarded by where
        return np.where(np.isneginf(log_weights), -np.inf, alpha * log_weights)


def ess_fraction(log_weights: Any) -> float:
    """ESS / N in (0, 1] (Kish: (sum w)^2 / sum w^2 / N); exactly (nonzero weights) / N when the
    nonzero weights are all equal (alpha = 0), where the log-sum-exp route would round 1 to
    0.9999999999999999."""
    lw = check_log_weights(log_weights)
    nonzero = lw[np.isfinite(lw)]
    if nonzero.min() == nonzero.max():
        return nonzero.size / lw.size
    return effective_sample_size(lw) / lw.size


def flatten(log_weights: np.ndarray, alpha: float, log_clip_min: float | None = None,
            log_clip_max: float | None = None) -> np.ndarray:
    """Flattened, clipped log-weights: alpha * log w (w -> w^alpha), then clipped to
    [log_clip_min, log_clip_max]. ``alpha`` in [0, inf): 0 gives uniform weights, 1 the full
    correction; zero weights (-inf) stay zero even at alpha = 0. float64 ``(N,)``.
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if log_clip_min is not None and log_clip_max is not None and log_clip_min > log_clip_max:
        raise ValueError(f"log_clip_min={log_clip_min} exceeds log_clip_max={log_clip_max}")
    lw = _scale(np.asarray(log_weights, dtype=np.float64), alpha)
    if log_clip_min is not None or log_clip_max is not None:
        lw = np.clip(lw, log_clip_min, log_clip_max)
    return lw


def alpha_for_ess(log_weights: Any, target_fraction: float, iters: int = 60) -> float:
    """Largest flattening exponent alpha in [0, 1] with ESS(w^alpha) / N >= ``target_fraction``.

    w^alpha interpolates between uniform weights (alpha = 0, ESS = number of nonzero
    weights) and the full correction (alpha = 1). Found by bisection (``iters`` halvings,
    so to within 2^-60), which assumes ESS(alpha) decreases in alpha, as it does for the
    weights met in practice. Returns 1.0 when the weights already meet the target, and 0.0
    when even alpha -> 0 misses it (too many zero weights).
    """
    lw = check_log_weights(log_weights)
    target = float(target_fraction)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction!r}")

    def meets(alpha: float) -> bool:
        return ess_fraction(_scale(lw, alpha)) >= target

    if meets(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    if not meets(1e-12):
        return 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo


def gpd_fit_zhang_stephens(x: np.ndarray, min_grid_pts: int = 30) -> tuple[float, float]:
    """(shape k, scale sigma) of a generalized Pareto fitted to exceedances ``x >= 0`` (Zhang &
    Stephens 2009).

    The empirical-Bayes estimator: a grid of theta = -k / sigma values (Z&S eq. 5 grid with
    prior 3), each weighted by its profile likelihood L(theta) = n [log(-theta / k) - k - 1]
    with k(theta) = mean(log(1 - theta x)); theta_hat is the posterior mean and
    k = mean(log(1 - theta_hat x)), sigma = -k / theta_hat. Positive k is a heavy tail (the
    tail index is 1/k). k does not depend on the scale of ``x``; sigma scales with it.
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, top = x.size, x[-1]
    x = x / top                                            # scale-free; max exceedance 1
    m = min_grid_pts + int(math.floor(math.sqrt(n)))
    j = np.arange(1, m + 1, dtype=np.float64)
    xstar = x[int(math.floor(n / 4 + 0.5)) - 1]            # first quartile
    if xstar <= 0.0:                                       # ties at the threshold
        xstar = x[x > 0].min()
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * xstar)
    k = np.log1p(-theta[:, None] * x[None, :]).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prof = n * (np.log(-theta / k) - k - 1.0)
    prof = np.where(np.isfinite(prof), prof, -np.inf)
    theta_hat = float(np.sum(theta * np.exp(prof - logsumexp(prof))))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    return k_hat, float(-k_hat / theta_hat * top)


def psis_khat(log_weights: Any) -> float:
    """Pareto k-hat of the upper tail of the weights (PSIS; Vehtari et al. 2024, Sec. 3).

    The M = ceil(min(N/5, 3 sqrt(N))) largest weights are exceedances over the (M+1)-th
    largest, u: a generalized Pareto is fitted to w - u with the Zhang & Stephens (2009)
    estimator, then shrunk towards 0.5 by the weakly informative prior of the PSIS paper
    (as in the ``loo`` package): k = (M k_ZS + 10 * 0.5) / (M + 10). k < 0.5: finite
    variance; 0.5-0.7: usable; > 0.7: importance-sampling estimates are unreliable.
    Returns -inf when the tail weights are all equal (no tail at all). Needs N >= 25.
    """
    return _pareto_tail(check_log_weights(log_weights))[3]


def _pareto_tail(lw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """The generalized Pareto fit behind ``psis_khat`` and ``pareto_smooth``, done once: (the
    indices of the M largest of ``lw``, ascending; the cutoff then those M log-weights; their
    weights scaled to a maximum of 1; shrunk k-hat (-inf when the tail is flat); sigma in
    those scaled units)."""
    n = lw.size
    if n < MIN_PSIS_WEIGHTS:
        raise ValueError(f"psis_khat needs at least {MIN_PSIS_WEIGHTS} log-weights "
                         f"(a tail of >= 5), got {n}")
    m = int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))
    order = np.argsort(lw, kind="stable")
    top = lw[order[-(m + 1):]]                             # cutoff, then the M largest
    w = np.exp(top - top[-1])                              # in (0, 1], overflow-free
    x = w[1:] - w[0]
    if x[-1] <= 0.0:
        return order[-m:], top, w, float("-inf"), 0.0
    k, sigma = gpd_fit_zhang_stephens(x)
    return order[-m:], top, w, float((m * k + 10.0 * 0.5) / (m + 10.0)), sigma


def khat_threshold(n: int) -> float:
    """The sample-size-aware k-hat limit min(1 - 1 / log10 n, 0.7) (Vehtari et al. 2024, Sec. 3.2):
    above it, n draws are too few for the Pareto-smoothed estimate to be reliable."""
    return min(1.0 - 1.0 / math.log10(n), KHAT_UNRELIABLE) if n > 10 else 0.0


def pareto_smooth(log_weights: Any) -> tuple[np.ndarray, float]:
    """(Pareto-smoothed log-weights, k-hat): PSIS (Vehtari et al. 2015/2024, Sec. 3).

    The M = ceil(min(N/5, 3 sqrt(N))) largest weights are replaced, in their order, by
    u + F^-1((z - 1/2) / M), z = 1..M, where u is the (M+1)-th largest weight and F the
    generalized Pareto fitted to the M exceedances (``gpd_fit_zhang_stephens``, its k shrunk
    as in ``psis_khat``): F^-1(p) = sigma / k ((1 - p)^-k - 1) (-sigma log(1 - p) at k = 0);
    then truncated at the largest raw weight. The other weights are unchanged. Needs N >= 25;
    returns the weights unchanged and k-hat -inf when the tail weights are all equal.
    """
    lw = check_log_weights(log_weights)
    tail, top, w, k_hat, sigma = _pareto_tail(lw)
    if not np.isfinite(k_hat):
        return lw.copy(), k_hat
    m = tail.size
    p = (np.arange(1, m + 1) - 0.5) / m
    q = -sigma * np.log1p(-p) if k_hat == 0 else sigma / k_hat * np.expm1(-k_hat * np.log1p(-p))
    out = lw.copy()
    out[tail] = np.log(np.minimum(w[0] + q, 1.0)) + top[-1]
    return out, k_hat


def weight_stats(log_weights: Any) -> dict[str, float]:
    """``ess``, ``ess_fraction`` and ``khat`` (NaN below ``MIN_PSIS_WEIGHTS`` rows) of one set."""
    lw = check_log_weights(log_weights)
    return {"ess": effective_sample_size(lw), "ess_fraction": ess_fraction(lw),
            "khat": psis_khat(lw) if lw.size >= MIN_PSIS_WEIGHTS else float("nan")}


def used_weights(log_weights: Any, cfg: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """(the weights every later stage uses, their statistics) from one pool's raw log-weights,
    as a ``config.ResampleConfig`` ``cfg`` says.

    w ** alpha, alpha from ``cfg.target_ess_fraction`` (``alpha_for_ess``) when set, else
    ``cfg.alpha``; then Pareto smoothing when ``cfg.smoothing`` is ``psis`` (``pareto_smooth``);
    then the clips ``cfg.log_clip_min`` / ``cfg.log_clip_max``. The statistics: ``alpha``,
    ``khat_limit`` (``khat_threshold`` of the pool size) and ``ess`` / ``ess_fraction`` /
    ``khat`` of the raw (``<stat>_raw``) and of the used weights (``<stat>_used``).
    """
    raw = check_log_weights(log_weights)
    alpha = alpha_for_ess(raw, cfg.target_ess_fraction) if cfg.target_ess_fraction is not None else cfg.alpha
    used = flatten(raw, alpha)
    if cfg.smoothing == "psis":
        used = pareto_smooth(used)[0]
    used = flatten(used, 1.0, cfg.log_clip_min, cfg.log_clip_max)
    stats: dict[str, Any] = {"alpha": float(alpha), "pool": int(raw.size),
                             "khat_limit": khat_threshold(raw.size)}
    for name, lw in (("raw", raw), ("used", used)):
        stats.update({f"{k}_{name}": v for k, v in weight_stats(lw).items()})
    return used, stats


# --------------------------------------------------------------------------- report

@dataclasses.dataclass
class DensityRatioReport:
    """Diagnostics of a fitted density-ratio classifier on a labelled evaluation set.

    Probabilities are the prior-1/2 ("balanced odds") probabilities c = sigmoid(log w),
    log w = calibrated logit + prior correction. ``accuracy``, ``ece``, ``brier`` and the
    reliability curve use a class-balanced subsample (the larger class subsampled without
    replacement to the smaller's size) so that a chance classifier scores 0.5 whatever the
    evaluation set's proportions; ``roc_auc`` and the weight statistics use every row.
    ``ece`` = sum_b (n_b / n) |mean(y)_b - mean(c)_b| over 10 equal-width bins [lo, hi), the
    reliability curve's bins.

    The mix curve (the thesis's calibration curve): for each real-sample proportion rho, a
    mix of ``mix_size`` rows, round(rho * size) real and the rest generated, drawn without
    replacement. ``mix_mean_prob`` is the mean of c; for a calibrated classifier it is the
    line rho a + (1 - rho)(1 - a), a = E_p[c], through (1/2, 1/2) with slope 2a - 1
    (the diagonal only for separable classes, a = 1). ``mix_mean_prob_prior_adjusted`` is
    the mean of sigmoid(log w + log(rho / (1 - rho))), the classifier told the mix's prior:
    it equals rho in expectation for any calibrated classifier.
    Weight statistics over the generated rows: ``mean_weight`` = E_q[w] (about 1 when
    p_data's support is covered), ``ess``, ``ess_fraction`` = ess / n_gen, ``khat``.
    """

    n_real: int
    n_gen: int
    accuracy: float
    roc_auc: float
    ece: float
    brier: float
    reliability_prob_true: list[float]
    reliability_prob_pred: list[float]
    mix_size: int
    mix_rho: list[float]
    mix_mean_prob: list[float]
    mix_mean_prob_prior_adjusted: list[float]
    mean_weight: float
    ess: float
    ess_fraction: float
    khat: float
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: plain floats and lists; non-finite floats become None."""
        return {k: _json_safe(v) for k, v in dataclasses.asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def mix_curve(lw_real: np.ndarray, lw_gen: np.ndarray, rng: np.random.Generator,
              n_points: int = 11) -> tuple[int, list[float], list[float], list[float]]:
    """(size, rho, mean c, mean prior-adjusted c) over mixes with real proportion rho."""
    size = min(lw_real.size, lw_gen.size)
    rhos = np.linspace(0.0, 1.0, n_points)
    raw, adjusted = [], []
    for rho in rhos:
        k = int(round(rho * size))
        mix = np.concatenate([rng.choice(lw_real, k, replace=False),
                              rng.choice(lw_gen, size - k, replace=False)])
        raw.append(float(expit(mix).mean()))
        adjusted.append(float(expit(mix + logit(rho)).mean()))   # logit(0), logit(1) = -inf, inf
    return size, [float(r) for r in rhos], raw, adjusted


def build_report(lw_real: np.ndarray, lw_gen: np.ndarray, rng: np.random.Generator) -> DensityRatioReport:
    """A ``DensityRatioReport`` from the log-weights of labelled real and generated rows."""
    n = min(lw_real.size, lw_gen.size)
    bal = np.concatenate([rng.choice(lw_real, n, replace=False), rng.choice(lw_gen, n, replace=False)])
    y_bal = np.concatenate([np.ones(n), np.zeros(n)])
    c = expit(bal)
    prob_true, prob_pred = reliability_curve(c, y_bal, N_BINS)
    y_all = np.concatenate([np.ones(lw_real.size), np.zeros(lw_gen.size)])
    size, rho, raw, adjusted = mix_curve(lw_real, lw_gen, rng)
    stats = weight_stats(lw_gen)
    report = DensityRatioReport(
        n_real=int(lw_real.size), n_gen=int(lw_gen.size),
        accuracy=float(np.mean((c > 0.5) == (y_bal == 1))),
        roc_auc=float(roc_auc_score(y_all, np.concatenate([lw_real, lw_gen]))),
        ece=expected_calibration_error(c, y_bal, N_BINS), brier=float(np.mean((c - y_bal) ** 2)),
        reliability_prob_true=prob_true.tolist(), reliability_prob_pred=prob_pred.tolist(),
        mix_size=size, mix_rho=rho, mix_mean_prob=raw, mix_mean_prob_prior_adjusted=adjusted,
        mean_weight=float(np.exp(logsumexp(lw_gen) - math.log(lw_gen.size))),
        ess=stats["ess"], ess_fraction=stats["ess_fraction"], khat=stats["khat"], warnings=[])
    report.warnings = report_warnings(report)
    return report


def report_warnings(r: DensityRatioReport) -> list[str]:
    """Plain-language warnings for the diagnostics that signal unusable weights."""
    out = []
    limit = khat_threshold(r.n_gen)
    if r.khat > limit:
        out.append(f"PSIS k-hat {r.khat:.2f} > {limit:.2f} (min(1 - 1/log10 {r.n_gen}, 0.7)): importance "
                   "weights are unreliable (flatten with alpha < 1, clip, smooth, or calibrate)")
    elif r.khat > KHAT_GOOD:
        out.append(f"PSIS k-hat {r.khat:.2f} in ({KHAT_GOOD}, {limit:.2f}]: weights have "
                   "infinite variance; estimates converge slowly")
    if r.ess_fraction < ESS_FRACTION_MIN:
        out.append(f"ESS fraction {r.ess_fraction:.4f} < {ESS_FRACTION_MIN}: the weights keep "
                   f"about {r.ess:.1f} of {r.n_gen} generated samples")
    if r.roc_auc > AUC_SEPARABLE:
        out.append(f"ROC AUC {r.roc_auc:.3f} > {AUC_SEPARABLE}: the classifier separates real from "
                   "generated almost perfectly; the odds (weights) are degenerate")
    if not 0.5 <= r.mean_weight <= 2.0:
        out.append(f"E_q[w] = {r.mean_weight:.3g} is far from 1: the classifier is miscalibrated "
                   "or the generator misses part of the data's support")
    return out
