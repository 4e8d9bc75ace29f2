"""The known-bias truth inside the pipeline: copies kept together, weights scored, one figure.

Samples of a known-bias generator carry ``true_log_weight`` and ``true_class``
(``raydgm.pipeline.tables``). Here:

- ``copy_groups``: rows of the real train split and of the samples that are pixel-for-pixel
  equal share a group id, so that cross-fitting never weights a copy of a real image with a
  classifier that trained on that image (``density_ratio.share_groups``). Labels play no part.
- ``weights_report``: the density-ratio stage's recovery numbers (``raydgm.recovery.recovery``)
  on the held-out rows, with the data's class mix that later stages score against, and what
  limits the rank: the estimate's spread within a class (``recovery.within_class``), the
  per-row error the rank target tolerates (``recovery.noise_tolerance``) and what the
  features allow (``feature_ceiling``).
- ``sir_report``: the resample stage's class-mix TV and junk share, before SIR and after it
  at alpha = 1 (the raw weights), at the used weights (the stage's alpha) and with the true
  weights (the finite-pool floor), in expectation (p_i = w_i / sum w) and as drawn.
- ``scatter``: estimated vs true log w (``truth_scatter.png`` and its data as JSON).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from raydgm import recovery
from raydgm.density_ratio import Groups
from raydgm.pipeline import tables

SCATTER = "truth_scatter"
RANK_TARGET = 0.9   # the rank correlation the known-bias weights are asked to reach


def copy_groups(real_images: np.ndarray, gen_images: np.ndarray) -> Groups:
    """int64 group ids of uint8 (N_r, C, H, W) and (N_g, C, H, W) images: equal images, equal ids
    (a 64-bit BLAKE2 digest of each image's bytes)."""
    def digests(images: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(images).reshape(len(images), -1)
        return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little",
                                        signed=True) for r in rows], dtype=np.int64)
    _, ids = np.unique(np.concatenate([digests(real_images), digests(gen_images)]), return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    return ids[:len(real_images)], ids[len(real_images):]


def aligned(truth: dict[str, np.ndarray], sample_ids: np.ndarray) -> dict[str, np.ndarray]:
    """``truth`` (``tables.read_truth``) checked to cover exactly ``sample_ids`` (sorted)."""
    if not np.array_equal(truth["sample_id"], sample_ids):
        raise ValueError("the samples' truth and the weights cover different sample ids")
    return truth


def weights_report(truth: dict[str, np.ndarray], log_w: np.ndarray, held_out: np.ndarray,
                   data_labels: np.ndarray, num_classes: int, features: np.ndarray | None = None,
                   folds: np.ndarray | None = None) -> dict[str, Any]:
    """``recovery.recovery`` of the held-out rows' log-weights, plus ``spearman_class_counts``
    (``recovery.class_count_spearman``: what weights read off the held-out pool's class
    counts reach), ``within_class_sd`` and ``spearman_class_means`` (``recovery.within_class``),
    ``rank_noise_tolerance`` (``recovery.noise_tolerance`` at ``RANK_TARGET``),
    ``spearman_features`` and ``class_probe_accuracy`` (``feature_ceiling``, given the rows'
    ``features`` and cross-fitting ``folds``) and ``data_class_mix`` (K,): the real train
    split's class mix (what SIR should restore)."""
    true_log_w, classes = truth["true_log_weight"][held_out], truth["true_class"][held_out]
    out = recovery.recovery(log_w[held_out], true_log_w)
    data_mix = recovery.class_mix(np.asarray(data_labels), num_classes)
    out["spearman_class_counts"] = recovery.class_count_spearman(true_log_w, classes, data_mix)
    out |= recovery.within_class(log_w[held_out], true_log_w, classes)
    out["rank_noise_tolerance"] = recovery.noise_tolerance(true_log_w, RANK_TARGET)
    if features is not None and folds is not None:
        out |= feature_ceiling(features[held_out], true_log_w, classes, folds[held_out])
    out["data_class_mix"] = data_mix.tolist()
    return _json_safe(out)


def feature_ceiling(features: np.ndarray, true_log_w: np.ndarray, classes: np.ndarray,
                    folds: np.ndarray) -> dict[str, float]:
    """What the weighting's features allow a class-level estimate to reach (a diagnosis: it
    uses the labels, which the weights never see). A multinomial logistic probe, cross-fitted
    over the density ratio's ``folds`` (so copies of an image stay on one side), gives each
    row's class posterior p(y | x) (junk, class -1, as a class of its own); the estimate is
    log sum_y p(y | x) w*(y), with w*(y) the median true weight of class y (0 for junk).
    ``spearman_features``: its Spearman with the finite truth; ``class_probe_accuracy``.
    Both NaN when the finite truth is constant (nothing to rank) or there is one fold."""
    from scipy.special import logsumexp
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    real = np.isfinite(true_log_w)
    if real.sum() < 2 or np.ptp(true_log_w[real]) == 0 or np.unique(folds).size < 2:
        return {"spearman_features": math.nan, "class_probe_accuracy": math.nan}
    labels, y = np.unique(classes, return_inverse=True)
    class_log_w = np.array([np.median(true_log_w[classes == c]) if c != recovery.JUNK else -np.inf
                            for c in labels])
    posterior = np.zeros((len(y), labels.size))
    x = np.asarray(features, dtype=np.float64)
    with threadpool_limits(1):         # one BLAS thread: the same bytes on any machine size
        for k in np.unique(folds):
            train, test = folds != k, folds == k
            mean, std = x[train].mean(0), x[train].std(0) + 1e-12
            probe = LogisticRegression(max_iter=1000).fit((x[train] - mean) / std, y[train])
            posterior[np.ix_(test, probe.classes_)] = probe.predict_proba((x[test] - mean) / std)
    with np.errstate(divide="ignore"):
        estimate = logsumexp(np.log(posterior) + class_log_w, axis=1)
    return {"spearman_features": recovery.recovery(estimate[real], true_log_w[real])["spearman"],
            "class_probe_accuracy": float((posterior.argmax(1) == y).mean())}


def score_weights(out: Path, report: dict[str, Any], samples_dir: Path, ids: np.ndarray, log_w: np.ndarray,
                  held_out: np.ndarray, data_labels: np.ndarray, num_classes: int,
                  features: np.ndarray | None = None, folds: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
    """The density-ratio stage's truth: the samples' truth columns (None without them), with
    ``report["truth"]`` (``weights_report``) set and ``out/truth_scatter.png`` drawn."""
    truth = tables.read_truth(samples_dir)
    if truth is not None:
        report["truth"] = weights_report(aligned(truth, ids), log_w, held_out, data_labels, num_classes,
                                         features, folds)
        scatter(out, truth["true_log_weight"][held_out], log_w[held_out], report["truth"])
    return truth


def sir_report(truth: dict[str, np.ndarray], pool: np.ndarray, raw: np.ndarray, used: np.ndarray,
               counts: np.ndarray, data_mix: list[float]) -> dict[str, float]:
    """Class-mix TV and junk share of the pool (``pool`` bool (N,)) before SIR and after it:
    ``*_alpha1`` with the raw weights ``raw``, ``*_used`` with the used ones ``used`` (both over
    the pool), ``*_drawn`` by the draw ``counts`` (N,), ``*_true`` with the true weights."""
    classes, true = truth["true_class"][pool], truth["true_log_weight"][pool]
    sets = {"before": np.ones(classes.size), "alpha1": recovery.sir_probabilities(raw),
            "used": recovery.sir_probabilities(used), "drawn": counts[pool].astype(np.float64),
            "true": recovery.sir_probabilities(true)}
    out: dict[str, float] = {}
    for name, weights in sets.items():
        effect = recovery.sir_effect(weights, classes, data_mix)
        out[f"class_tv_{name}"], out[f"junk_share_{name}"] = effect["class_tv"], effect["junk_share"]
    return _json_safe(out)


def scatter(folder: Path, truth: np.ndarray, log_w: np.ndarray, stats: dict[str, Any]) -> Path:
    """``truth_scatter.png``: estimated (y) vs true (x) log w of the held-out rows, junk (true
    w = 0) in a strip at the left; ``truth_scatter.json``: the points (junk's truth as null)."""
    from raydgm.pipeline.plots import figure_axes
    real = np.isfinite(truth)
    fig, ax = figure_axes(figsize=(5, 4))
    jitter = np.random.default_rng(0).uniform(-1, 1, truth.size)
    span = float(np.ptp(truth[real])) if real.sum() > 1 else 1.0
    ax.scatter(truth[real] + 0.02 * max(span, 0.1) * jitter[real], log_w[real], s=3, alpha=0.3,
               label="real copies")
    if (~real).any():
        left = (truth[real].min() if real.any() else 0.0) - 0.3 * max(span, 1.0)
        ax.scatter(left + 0.05 * jitter[~real], log_w[~real], s=3, alpha=0.3, color="tab:red",
                   label="junk (true w = 0)")
    if real.any():
        lo, hi = float(truth[real].min()), float(truth[real].max())
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="estimate = truth")
    ax.set_xlabel("true log w")
    ax.set_ylabel("estimated log w")
    ax.set_title(f"Spearman {_fmt(stats['spearman'])}, Pearson {_fmt(stats['pearson'])}, "
                 f"ESS {stats['ess_estimated']:.0f} vs true {stats['ess_true']:.0f}", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    path = folder / f"{SCATTER}.png"
    fig.savefig(path, dpi=120)
    points = {"true_log_weight": [float(f"{t:.6g}") if math.isfinite(t) else None for t in truth],
              "log_weight": [float(f"{w:.6g}") for w in log_w]}
    (folder / f"{SCATTER}.json").write_text(json.dumps(points))
    return path


def describe(weights: dict[str, Any], sir: dict[str, Any] | None, alpha: float | None = None) -> str:
    """Markdown lines: the weights against the truth (``weights_report``) and what SIR did
    (``sir_report``; ``alpha``: the used exponent)."""
    lines = ["weights vs the known truth (held-out rows):",
             f"- rank (Spearman) {_fmt(weights['spearman'])} (at most {_fmt(weights['spearman_max'])} "
             f"under the truth's ties; the pool's class counts reach "
             f"{_fmt(weights.get('spearman_class_counts'))}), linear (Pearson) {_fmt(weights['pearson'])}, "
             f"slope {_fmt(weights['slope'])} on {weights['real_rows']} real copies; ESS "
             f"{weights['ess_estimated']:.1f} estimated vs {weights['ess_true']:.1f} true "
             f"(ratio {weights['ess_ratio']:.3f})"]
    if weights.get("spearman_class_means") is not None:
        lines.append(f"- what limits the rank: log w spreads {_fmt(weights['within_class_sd'])} (sd) within a "
                     f"class, where rank >= {RANK_TARGET} tolerates {_fmt(weights['rank_noise_tolerance'])}; "
                     f"its class means rank {_fmt(weights['spearman_class_means'])}; a class probe on these "
                     f"features (labels: diagnosis only) reaches {_fmt(weights.get('spearman_features'))}")
    if weights["junk_rows"]:
        lines.append(f"- junk: {weights['junk_rows']} rows, AUC real vs junk {_fmt(weights['junk_auc'])}, "
                     f"weight share {weights['junk_weight_share']:.4f}")
    if sir is not None:
        used = "used" if alpha is None else f"alpha={alpha:.3g}"
        for what, key in (("class-mix TV to the data's", "class_tv"), ("junk share", "junk_share")):
            lines.append(f"- {what}: before {_fmt(sir[f'{key}_before'])} -> SIR alpha=1 "
                         f"{_fmt(sir[f'{key}_alpha1'])}, {used} {_fmt(sir[f'{key}_used'])} (drawn "
                         f"{_fmt(sir[f'{key}_drawn'])}); true weights {_fmt(sir[f'{key}_true'])}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
