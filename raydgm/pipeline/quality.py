"""The quality report (the thesis's Table 6.3): real, raw, resampled and weighted sets, scored.

Every set is scored against the real *test* split's features (the reference: images neither
the generator nor the density-ratio classifier trained on) on ``num_blocks`` evaluation
blocks of ``eval_size`` rows, and each metric is reported as the mean and standard deviation
over blocks (the thesis's 10 runs):

- ``real train``: blocks of the real train split, disjoint from the reference (the floor a
  perfect generator would reach);
- ``raw``: blocks of the generated pool;
- ``resampled (<method>)``: ``eval_size`` draws from the pool by ``resample.resample`` on the
  resample stage's used log-weights, drawn afresh for each block; ``distinct`` is the mean
  number of distinct images in a block;
- ``importance-weighted``: the raw blocks with their weights (LFIW's debiased evaluation, no
  resampling): weighted FID and IS; KID and PRDC are not defined for weighted sets.

Blocks are disjoint where a set has ``num_blocks x eval_size`` rows, else independent draws
without replacement (``disjoint`` is False in the row). Pure functions: no Ray, no MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax

from raydgm import metrics, resample
from raydgm.config import QualityConfig

METRICS = ("fid", "kid", "is", "precision", "recall", "density", "coverage")
FLOOR = "real train"   # the floor row: real images disjoint from the reference (the test split)


@dataclass(frozen=True)
class FeatureSet:
    """Features ``(N, D)`` and class probabilities ``(N, K)`` (None: no IS) of one image set."""

    features: np.ndarray
    probs: np.ndarray | None = None

    @classmethod
    def from_logits(cls, features: np.ndarray, logits: np.ndarray | None) -> "FeatureSet":
        probs = None if logits is None else np.exp(log_softmax(np.asarray(logits, np.float64), axis=1))
        return cls(np.asarray(features, np.float64), probs)

    def __len__(self) -> int:
        return len(self.features)

    def take(self, idx: np.ndarray) -> "FeatureSet":
        return FeatureSet(self.features[idx], None if self.probs is None else self.probs[idx])


MIN_BLOCK = 100   # below this, blocks give FID / KID too noisy to compare: prefer overlap


def default_eval_size(floor: int, pool: int, cfg: QualityConfig) -> int:
    """``cfg.eval_size``, or the largest size at which the pool splits into disjoint blocks
    (at least ``MIN_BLOCK`` rows and at most the floor set's size)."""
    largest = min(floor, pool)
    size = cfg.eval_size or min(largest, max(pool // cfg.num_blocks, MIN_BLOCK))
    if size > largest:
        raise ValueError(f"quality.eval_size={size} exceeds the smaller of the real floor set "
                         f"({floor} rows) and the generated pool ({pool} rows)")
    return size


def evaluate(reference: FeatureSet, floor: FeatureSet, pool: FeatureSet, log_w: np.ndarray,
             cfg: QualityConfig) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, float]]]]:
    """Score every set; returns (one summary row per set, per-block metric values per set).

    ``reference``: the real set every block is compared with; ``floor``: real rows disjoint
    from it (the ``real train`` row); ``log_w``: the pool's used log importance weights,
    ``(len(pool),)``. Row keys: ``set``, ``n`` (rows per block), ``blocks``, ``disjoint``, for
    each metric that applies ``<metric>_mean`` / ``<metric>_std``, and for resampled sets
    ``distinct`` (mean distinct images per block).
    """
    log_w = np.asarray(log_w, np.float64)
    if log_w.shape != (len(pool),):
        raise ValueError(f"log_w has shape {log_w.shape}; the pool has {len(pool)} rows")
    size = default_eval_size(len(floor), len(pool), cfg)
    ref_stats = metrics.gaussian_stats(reference.features)
    rng = np.random.default_rng([cfg.seed, 0])
    floor_blocks, floor_disjoint = metrics.block_indices(len(floor), cfg.num_blocks, size, rng)
    pool_blocks, pool_disjoint = metrics.block_indices(len(pool), cfg.num_blocks, size, rng)
    values: dict[str, list[dict[str, float]]] = {}
    disjoint = {FLOOR: floor_disjoint, "raw": pool_disjoint, "importance-weighted": pool_disjoint}
    distinct: dict[str, list[int]] = {}
    for b in range(cfg.num_blocks):
        brng = np.random.default_rng([cfg.seed, 1, b])
        sets = {FLOOR: floor.take(floor_blocks[b]), "raw": pool.take(pool_blocks[b])}
        for method in cfg.methods:
            idx = resample.resample(log_w, size, method, brng)
            sets[f"resampled ({method})"] = pool.take(idx)
            disjoint[f"resampled ({method})"] = False
            distinct.setdefault(f"resampled ({method})", []).append(len(np.unique(idx)))
        for name, fs in sets.items():
            values.setdefault(name, []).append(score(reference, ref_stats, fs, cfg, brng))
        weighted = pool.take(pool_blocks[b])
        values.setdefault("importance-weighted", []).append(
            score_weighted(ref_stats, weighted, log_w[pool_blocks[b]]))
    rows = []
    for name, per_block in values.items():
        row: dict[str, Any] = {"set": name, "n": size, "blocks": cfg.num_blocks,
                               "disjoint": bool(disjoint[name])}
        for m in METRICS:
            vals = [v[m] for v in per_block if m in v]
            if vals:
                row[f"{m}_mean"], row[f"{m}_std"] = metrics.mean_std(vals)
        if name in distinct:
            row["distinct"] = float(np.mean(distinct[name]))
        if sum(1 for v in per_block if v) < cfg.num_blocks:
            row["blocks_used"] = sum(1 for v in per_block if v)
        rows.append(row)
    return rows, values


def score(reference: FeatureSet, ref_stats: tuple[np.ndarray, np.ndarray], fs: FeatureSet,
          cfg: QualityConfig, rng: np.random.Generator) -> dict[str, float]:
    """FID, KID, IS (when there are class probabilities) and PRDC of one block."""
    out = {"fid": metrics.frechet_from_stats(*ref_stats, *metrics.gaussian_stats(fs.features))}
    kid = metrics.kernel_inception_distance(reference.features, fs.features, rng,
                                            num_subsets=cfg.kid_subsets,
                                            subset_size=min(cfg.kid_subset_size, len(fs)))
    out["kid"] = kid.mean
    if fs.probs is not None:
        out["is"] = metrics.inception_score(fs.probs, splits=1)[0]
    ref_rows = rng.choice(len(reference), size=min(len(fs), len(reference)), replace=False)
    out.update(metrics.prdc(reference.features[ref_rows], fs.features, k=cfg.prdc_k))
    return {k: float(v) for k, v in out.items()}


def score_weighted(ref_stats: tuple[np.ndarray, np.ndarray], fs: FeatureSet,
                   log_w: np.ndarray) -> dict[str, float]:
    """Importance-weighted FID (weighted mean and covariance) and IS of one raw block.

    A block whose weight sits on fewer than 2 rows (ESS 1: degenerate weights) has no
    weighted covariance; it is left out of the weighted row's mean (``blocks_used``).
    """
    if np.isfinite(log_w).sum() < 2:
        return {}
    w = np.exp(log_w - np.logaddexp.reduce(log_w))
    if np.count_nonzero(w) < 2:
        return {}
    out = {"fid": metrics.frechet_from_stats(*ref_stats, *metrics.gaussian_stats(fs.features, w))}
    if fs.probs is not None:
        out["is"] = metrics.weighted_inception_score(fs.probs, log_w)
    return {k: float(v) for k, v in out.items()}

