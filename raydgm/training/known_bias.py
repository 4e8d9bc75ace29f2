"""Fitting the known-bias generators: store the real train split and each row's exact true weight.

p_data is the empirical train distribution: p_data(x) = c(x) / N, where c(x) counts the train
images equal to x pixel for pixel (N images in all). A copy of train row i has

- skewed (class y drawn with pi_gen(y), then one of the n_y train images of class y):
  p_gen(x) = sum_{j: x_j = x} pi_gen(y_j) / n_{y_j}, so w*(x) = (c(x) / N) / p_gen(x). Without
  duplicate images (c = 1) this is pi_data(y) / pi_gen(y), pi_data(y) = n_y / N.
- contaminated (a uniform train row, scrambled with probability eps by a uniform permutation
  sigma of its D = C*H*W values): p_gen(x) = (1 - eps) c(x) / N + eps q(x) with
  q(x) = (1/N) sum_j P(sigma(x_j) = x). sigma(x_j) = x needs x_j to hold the same multiset of
  values as x, and then exactly prod_v m_v(x)! of the D! permutations give x (m_v: how many of
  the D values equal v). So q(x) = M(x) / N * prod_v m_v! / D!, M(x) the number of train images
  with x's multiset, and w*(x) = c / ((1 - eps) c + eps M prod_v m_v! / D!). For a 32x32 digit
  prod_v m_v! / D! is below 1e-200, so w* = 1 / (1 - eps) to double precision; scrambled
  images that equal no train image have p_data = 0: w* = 0, log w* = -inf.

No Ray, no MLflow: numpy in, a ``raydgm.models.known_bias`` module out.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import gammaln

from raydgm.config import CLASS_MIX_RULES, ContaminatedConfig, SkewedConfig
from raydgm.models.known_bias import ContaminatedCopies, EmpiricalCopies, SkewedCopies
from raydgm.training.common import checked_images


def class_mix(rule: str | tuple[float, ...] | list[float], num_classes: int) -> np.ndarray:
    """pi_gen as float64 (K,) summing to 1, from a rule of ``CLASS_MIX_RULES`` or K positive numbers."""
    y = np.arange(num_classes, dtype=np.float64)
    if isinstance(rule, str):
        if rule not in CLASS_MIX_RULES:
            raise ValueError(f"unknown class_mix rule {rule!r}; known: {', '.join(CLASS_MIX_RULES)}")
        mix = y + 1 if rule == "linear" else num_classes - y
    else:
        mix = np.asarray(rule, dtype=np.float64)
        if mix.shape != (num_classes,):
            raise ValueError(f"class_mix lists {mix.size} numbers but the data has {num_classes} classes")
        if not (np.isfinite(mix).all() and (mix > 0).all()):
            raise ValueError(f"class_mix must be positive and finite, got {mix.tolist()}")
    return mix / mix.sum()


def content_groups(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group int64 (N,), c int64 (N,)): rows with equal pixels share a group; c = its size."""
    flat = images.reshape(len(images), -1)
    _, group, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    return group, counts[group]


def checked_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """int64 (N,) labels in 0..K-1, or a ValueError saying the known-bias generators need them."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
    if num_classes < 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError("a known-bias generator needs the train split's labels in 0..K-1 "
                         f"(K={num_classes}); found {labels.min()}..{labels.max()} (unlabeled data?)")
    return labels.astype(np.int64)


def skewed_log_weights(images: np.ndarray, labels: np.ndarray, pi_gen: np.ndarray) -> np.ndarray:
    """float64 (N,): log w* of a copy of each train row under the skewed law (module docstring)."""
    n = len(images)
    n_y = np.bincount(labels, minlength=pi_gen.size)
    empty = np.flatnonzero(n_y == 0)
    if empty.size:
        raise ValueError(f"class {int(empty[0])} has no train image to copy, but pi_gen gives it "
                         f"{pi_gen[empty[0]]:.3g}; a skewed generator draws only train images")
    group, c = content_groups(images)
    p_gen = np.bincount(group, pi_gen[labels] / n_y[labels])[group]   # sum over equal images
    return np.log(c / n) - np.log(p_gen)


def log_scramble_probability(images: np.ndarray) -> np.ndarray:
    """float64 (N,): log of prod_v m_v! / D!, the chance that a uniform permutation of a row's
    D values gives back exactly that row (or any row with the same multiset)."""
    flat = images.reshape(len(images), -1).astype(np.int64)
    n, d = flat.shape
    counts = np.bincount((flat + 256 * np.arange(n)[:, None]).ravel(), minlength=256 * n).reshape(n, 256)
    return gammaln(counts + 1.0).sum(axis=1) - gammaln(d + 1.0)


def contaminated_log_weights(images: np.ndarray, junk_fraction: float) -> np.ndarray:
    """float64 (N,): log w* of a copy of each train row under the contaminated law (scrambled junk)."""
    eps = float(junk_fraction)
    _, c = content_groups(images)
    multiset = np.sort(images.reshape(len(images), -1), axis=1)
    _, m_group, m_counts = np.unique(multiset, axis=0, return_inverse=True, return_counts=True)
    m = m_counts[m_group.reshape(-1)]
    log_q = np.log(eps) + np.log(m) + log_scramble_probability(images)     # eps * M * P
    return np.log(c) - np.logaddexp(np.log1p(-eps) + np.log(c), log_q)


def fit_known_bias(images: np.ndarray, labels: np.ndarray, num_classes: int,
                   config: SkewedConfig | ContaminatedConfig) -> EmpiricalCopies:
    """The generator of ``config`` over uint8 (N, C, H, W) train ``images`` with int labels (N,)."""
    images = checked_images(images, "known-bias generator's train images")
    labels = checked_labels(labels, len(images), num_classes)
    shape = tuple(int(s) for s in images.shape[1:])
    if config.kind == "skewed":
        pi_gen = class_mix(config.class_mix, num_classes)
        model: EmpiricalCopies = SkewedCopies(shape, class_mix=config.to_dict()["class_mix"])
        log_w = skewed_log_weights(images, labels, pi_gen)
        order = np.argsort(labels, kind="stable")
        n_y = np.bincount(labels, minlength=num_classes)
        cdf = np.cumsum(pi_gen)
        cdf[-1] = 1.0
        extra = {"class_cdf": cdf, "order": order, "class_start": np.cumsum(n_y) - n_y, "class_count": n_y}
    elif config.kind == "contaminated":
        model = ContaminatedCopies(shape, junk_fraction=config.junk_fraction, junk=config.junk)
        log_w, extra = contaminated_log_weights(images, config.junk_fraction), {}
    else:
        raise ValueError(f"not a known-bias generator: {config.kind!r}")
    buffers = {"images": images, "labels": labels, "log_weight": log_w} | extra
    for name, value in buffers.items():
        dtype = getattr(model, name).dtype
        setattr(model, name, torch.from_numpy(np.ascontiguousarray(value)).to(dtype))
    return model
