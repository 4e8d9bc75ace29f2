"""Density ratios p_data / p_theta from a real-vs-generated classifier (LFIW).

Grover et al. (NeurIPS 2019), Sec. 3: a probabilistic classifier c(x) = P(real | x)
trained with the cross-entropy loss has odds c / (1 - c) = [p_data(x) / p_theta(x)] *
[pi_real / pi_gen] (eq. 4), where pi are the class proportions it learned under. So

    log w(x) = logit c(x) + prior_correction,   prior_correction = log(pi_gen / pi_real).

Balanced batches and class-balanced calibration make pi = 1/2 and the correction 0;
otherwise it is log(n_gen / n_real) of the split that set the final probabilities (the
calibration split, or the training split for ``calibration="none"``).

The classifier is the paper's: one hidden layer (``hidden_units``, ReLU), a logit output,
BCE loss, Adam, early stopping on held-out BCE; then temperature (Platt) or isotonic
calibration on a third split (``raydgm._classifier``). ``cross_fit`` fits K of them, each
predicting the fold it never saw. Diagnostics (ESS, PSIS k-hat and smoothing, calibration
curves, the weights later stages use) live in ``raydgm._diagnostics`` and are re-exported here.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.special import expit

from raydgm._checks import check_features
from raydgm._classifier import build_mlp, calibrate, raw_logits, split_rows, standardizer, train_classifier
from raydgm._diagnostics import (DensityRatioReport, alpha_for_ess, build_report, effective_sample_size,
                                 ess_fraction, flatten, khat_threshold, pareto_smooth, psis_khat,
                                 used_weights, weight_stats)
from raydgm.config import DensityRatioConfig

__all__ = ["CrossFit", "DensityRatioModel", "DensityRatioReport", "Groups", "alpha_for_ess", "cross_fit",
           "diagnose", "effective_sample_size", "ess_fraction", "fit", "flatten", "khat_threshold",
           "noise_baseline", "pareto_smooth", "psis_khat", "share_groups", "used_weights", "weight_stats"]

SPLITS = ("train", "val", "calib")
WEIGHTS_FILE, META_FILE = "weights.pt", "model.json"


# --------------------------------------------------------------------------- model

class DensityRatioModel:
    """A fitted classifier c(x) = P(real | x) and its log density ratio (built by ``fit``).

    Attributes: ``config``; ``n_real``, ``n_gen`` (rows given to ``fit``); ``prior_correction``
    (float, log(pi_gen / pi_real), see the module docstring); ``gen_split`` / ``real_split``
    (str arrays, "train" / "val" / "calib" per fitted row); ``history`` (per-epoch dicts
    with train_loss, val_loss); ``best_epoch`` (the epoch whose weights were kept).
    """

    def __init__(self, *, config: DensityRatioConfig, net: torch.nn.Module, mean: np.ndarray,
                 std: np.ndarray, temperature: tuple[float, float] = (1.0, 0.0),
                 iso_knots: tuple[np.ndarray, np.ndarray] | None = None, prior_correction: float = 0.0,
                 n_real: int = 0, n_gen: int = 0, real_split: np.ndarray | None = None,
                 gen_split: np.ndarray | None = None, history: list | None = None, best_epoch: int = 0):
        self.config, self.net = config, net.to(config.device).eval()
        self.mean, self.std, self.dim = mean, std, int(mean.size)
        self.temperature, self.iso_knots = temperature, iso_knots
        self.prior_correction, self.n_real, self.n_gen = float(prior_correction), n_real, n_gen
        codes = np.array(SPLITS)
        self.real_split = codes[real_split] if real_split is not None else None
        self.gen_split = codes[gen_split] if gen_split is not None else None
        self.history, self.best_epoch = history or [], best_epoch

    def raw_logit(self, features: Any) -> np.ndarray:
        """The uncalibrated network logit, float64 ``(N,)``."""
        x = check_features(features, "features", self.dim)
        z = (x - self.mean) / self.std if self.config.standardize else x
        return raw_logits(self.net, z, self.config.device)

    def logit(self, features: Any) -> np.ndarray:
        """Calibrated logit of P(real | x), float64 ``(N,)``, under the fitted class prior.

        temperature: a z + b; isotonic: log(p / (1 - p)) of the isotonic p clipped to
        [eps, 1 - eps]; none: the raw logit z.
        """
        z = self.raw_logit(features)
        if self.config.calibration == "isotonic":
            eps = self.config.isotonic_eps
            p = np.clip(np.interp(z, *self.iso_knots), eps, 1 - eps)
            return np.log(p) - np.log1p(-p)
        a, b = self.temperature
        return a * z + b

    def predict_proba(self, features: Any) -> np.ndarray:
        """Calibrated P(real | x) = sigmoid(logit), float64 ``(N,)`` in [0, 1]."""
        return expit(self.logit(features))

    def log_weights(self, features: Any, alpha: float = 1.0, log_clip_max: float | None = None,
                    log_clip_min: float | None = None, normalize: bool = False) -> np.ndarray:
        """log w = alpha (logit + prior_correction), float64 ``(N,)`` (LFIW eq. 4, flattened).

        ``alpha`` in [0, inf): 0 gives uniform weights, 1 the full correction. Then clipped
        to [log_clip_min, log_clip_max]; ``normalize``: minus logsumexp, so sum w = 1.
        """
        lw = flatten(self.logit(features) + self.prior_correction, alpha, log_clip_min, log_clip_max)
        if normalize:
            lw = lw - np.logaddexp.reduce(lw)
        return lw

    def alpha_for_ess(self, features: Any, target_fraction: float) -> float:
        """``alpha_for_ess(self.log_weights(features), target_fraction)``."""
        return alpha_for_ess(self.log_weights(features), target_fraction)

    def save(self, path: str | Path) -> None:
        """Write directory ``path``: weights.pt (tensors only) and model.json (config, floats)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        code = {s: i for i, s in enumerate(SPLITS)}
        tensors = {f"net.{k}": v.detach().cpu() for k, v in self.net.state_dict().items()}
        tensors.update(mean=torch.from_numpy(self.mean), std=torch.from_numpy(self.std))
        for name, split in (("real_split", self.real_split), ("gen_split", self.gen_split)):
            if split is not None:
                tensors[name] = torch.tensor([code[s] for s in split], dtype=torch.int8)
        if self.iso_knots is not None:
            tensors.update(iso_x=torch.from_numpy(self.iso_knots[0]),
                           iso_p=torch.from_numpy(self.iso_knots[1]))
        torch.save(tensors, path / WEIGHTS_FILE)
        meta = {"config": self.config.to_dict(), "temperature": list(self.temperature),
                "prior_correction": self.prior_correction, "n_real": self.n_real, "n_gen": self.n_gen,
                "history": self.history, "best_epoch": self.best_epoch, "dim": self.dim}
        (path / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "DensityRatioModel":
        """Read a directory written by ``save`` (``torch.load(weights_only=True)``)."""
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        tensors = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        config = DensityRatioConfig.from_dict(meta["config"])
        if device is not None:
            config = config.replace(device=device)
        net = build_mlp(meta["dim"], config.hidden_units, torch.Generator())
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        split = {k: tensors[k].numpy().astype(np.int64) if k in tensors else None
                 for k in ("real_split", "gen_split")}
        iso = (tensors["iso_x"].numpy(), tensors["iso_p"].numpy()) if "iso_x" in tensors else None
        return cls(config=config, net=net, mean=tensors["mean"].numpy(), std=tensors["std"].numpy(),
                   temperature=tuple(meta["temperature"]), iso_knots=iso,
                   prior_correction=meta["prior_correction"], n_real=meta["n_real"],
                   n_gen=meta["n_gen"], history=meta["history"], best_epoch=meta["best_epoch"], **split)


# --------------------------------------------------------------------------- public functions

Groups = tuple[np.ndarray, np.ndarray]   # int64 (N_r,), (N_g,): rows with equal ids are copies


def share_groups(real_part: np.ndarray, gen_part: np.ndarray, groups: Groups | None,
                 parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Put every row of a group in the part (fold or split) of its group's first row, real rows
    first: a copy of a real image is never predicted by a model that trained on its twin.
    Rows in groups of one keep their part. Raises when a part of either set ends up empty."""
    if groups is None:
        return real_part, gen_part
    g_real, g_gen = (np.asarray(g, np.int64) for g in groups)
    if g_real.shape != real_part.shape or g_gen.shape != gen_part.shape:
        raise ValueError(f"groups have shapes {g_real.shape}, {g_gen.shape}; the features "
                         f"{real_part.shape}, {gen_part.shape}")
    part, group = np.concatenate([real_part, gen_part]), np.concatenate([g_real, g_gen])
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    part = part[first[inverse.reshape(-1)]]
    real_part, gen_part = part[:real_part.size], part[real_part.size:]
    for name, p in (("real", real_part), ("generated", gen_part)):
        if np.bincount(p, minlength=parts).min() == 0:
            raise ValueError(f"keeping copies together leaves a fold or split without {name} rows; "
                             "use fewer folds or set group_copies: false")
    return real_part, gen_part


def fit(real_features: Any, gen_features: Any, config: DensityRatioConfig | None = None, *,
        on_epoch: Callable[[dict], None] | None = None, groups: Groups | None = None) -> DensityRatioModel:
    """Fit c(x) = P(real | x) on real ``(N_r, D)`` vs generated ``(N_g, D)`` features.

    Each class is split train / val / calib by ``config.val_fraction`` / ``calib_fraction``
    (seeded by ``config.seed``); ``groups`` (see ``share_groups``): copies share a split.
    Features are z-scored with the train split's mean and std;
    the MLP trains on train with early stopping on val; calibration fits on calib.
    ``on_epoch``, if given, is called after each epoch with ``{epoch, train_loss, val_loss}``
    (a progress hook: the module itself prints nothing).
    """
    config = config or DensityRatioConfig()
    real = check_features(real_features, "real_features")
    gen = check_features(gen_features, "gen_features", real.shape[1])
    rng = np.random.default_rng(config.seed)
    tgen = torch.Generator().manual_seed(config.seed)
    s_real = split_rows(real.shape[0], config, rng, "real_features")
    s_gen = split_rows(gen.shape[0], config, rng, "gen_features")
    s_real, s_gen = share_groups(s_real, s_gen, groups, len(SPLITS))

    def part(k: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([real[s_real == k], gen[s_gen == k]])
        return x, np.concatenate([np.ones((s_real == k).sum()), np.zeros((s_gen == k).sum())])

    (x_tr, y_tr), (x_val, y_val), (x_cal, y_cal) = part(0), part(1), part(2)
    mean, std = np.zeros(real.shape[1]), np.ones(real.shape[1])
    if config.standardize:
        mean, std = standardizer(x_tr)
    net, history, best_epoch = train_classifier((x_tr - mean) / std, y_tr, (x_val - mean) / std,
                                                y_val, config, tgen, on_epoch)
    kw = dict(config=config, net=net, mean=mean, std=std, n_real=real.shape[0], n_gen=gen.shape[0],
              real_split=s_real, gen_split=s_gen, history=history, best_epoch=best_epoch)
    y_prior = y_cal if config.calibration != "none" else y_tr
    if not config.balanced:
        kw["prior_correction"] = math.log((y_prior == 0).sum() / (y_prior == 1).sum())
    calibrate(kw, raw_logits(net, (x_cal - mean) / std, config.device), y_cal, config)
    return DensityRatioModel(**kw)


def diagnose(model: DensityRatioModel, real_features: Any, gen_features: Any) -> DensityRatioReport:
    """Calibration, separability and weight diagnostics on labelled evaluation features.

    ``real_features`` ``(N_r, D)`` ~ p_data and ``gen_features`` ``(N_g, D)`` ~ p_theta,
    ideally rows not used by ``fit``. Subsampling is seeded by ``model.config.seed``.
    Warns (``warnings.warn``) when PSIS k-hat exceeds ``khat_threshold`` (0.7 from 2,155 rows up).
    """
    real = check_features(real_features, "real_features", model.dim)
    gen = check_features(gen_features, "gen_features", model.dim)
    rng = np.random.default_rng(model.config.seed)
    report = build_report(model.log_weights(real), model.log_weights(gen), rng)
    _warn_khat(report)
    return report


def _warn_khat(report: DensityRatioReport) -> None:
    if report.khat > khat_threshold(report.n_gen):
        warnings.warn(report.warnings[0], stacklevel=3)


@dataclasses.dataclass(frozen=True)
class CrossFit:
    """Out-of-fold density ratios from K classifiers (``cross_fit``).

    ``models[k]`` was fitted (its train, early-stopping and calibration rows) on the rows
    outside fold k and predicts the rows of fold k only. ``real_fold`` / ``gen_fold``: int64
    ``(N_r,)`` / ``(N_g,)``, each row's fold; ``real_logit`` / ``gen_logit``: float64 calibrated
    out-of-fold logits of P(real | x); ``prior_correction``: float64 ``(K,)``, fold k's
    log(pi_gen / pi_real). ``report``: diagnostics of the out-of-fold predictions of every row.
    """

    models: list[DensityRatioModel]
    real_fold: np.ndarray
    gen_fold: np.ndarray
    real_logit: np.ndarray
    gen_logit: np.ndarray
    prior_correction: np.ndarray
    report: DensityRatioReport

    @property
    def log_weights(self) -> np.ndarray:
        """Out-of-fold log w, float64 ``(N_g,)`` aligned with the generated features."""
        return self.gen_logit + self.prior_correction[self.gen_fold]

    @property
    def real_log_weights(self) -> np.ndarray:
        """Out-of-fold log w of the real rows, float64 ``(N_r,)``."""
        return self.real_logit + self.prior_correction[self.real_fold]

    @property
    def real_proba(self) -> np.ndarray:
        """Out-of-fold calibrated P(real | x) of the real rows, float64 ``(N_r,)``."""
        return expit(self.real_logit)


def assign_folds(n: int, folds: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """A seeded assignment of ``n`` rows to ``folds`` folds of sizes differing by at most 1
    (int64 ``(n,)``)."""
    if n < folds:
        raise ValueError(f"too few rows for {folds} folds: {name} has {n}")
    fold = np.empty(n, dtype=np.int64)
    fold[rng.permutation(n)] = np.arange(n) % folds
    return fold


def cross_fit(real_features: Any, gen_features: Any, folds: int = 5,
              config: DensityRatioConfig | None = None, rng: np.random.Generator | None = None, *,
              on_epoch: Callable[[dict], None] | None = None, groups: Groups | None = None) -> CrossFit:
    """K-fold cross-fitted density ratios: every row's weight from a model that never saw it.

    Both sets are split into ``folds`` folds (``rng``, default seeded by ``config.seed``); with
    ``groups`` (``share_groups``) copies share a fold, so no row is weighted by a model that
    trained on a copy of it. Fold
    k's classifier is ``fit`` on the other folds' rows (its own train / val / calib split, so
    early stopping and calibration use them only; prior correction per fold) and predicts fold
    k. The report is ``build_report`` of the out-of-fold log-weights of every real and
    generated row; warns when its k-hat exceeds ``khat_threshold``. ``on_epoch`` gets each
    epoch's row with ``fold`` added.
    """
    config = config or DensityRatioConfig()
    if folds < 2:
        raise ValueError(f"cross_fit needs folds >= 2, got {folds}; use fit for a single split")
    real = check_features(real_features, "real_features")
    gen = check_features(gen_features, "gen_features", real.shape[1])
    rng = rng if rng is not None else np.random.default_rng([config.seed, folds])
    real_fold = assign_folds(len(real), folds, rng, "real_features")
    gen_fold = assign_folds(len(gen), folds, rng, "gen_features")
    real_fold, gen_fold = share_groups(real_fold, gen_fold, groups, folds)
    real_logit, gen_logit = np.empty(len(real)), np.empty(len(gen))
    models, prior = [], np.empty(folds)
    for k in range(folds):
        hook = None if on_epoch is None else (lambda row, k=k: on_epoch(row | {"fold": k}))
        rest = None if groups is None else (groups[0][real_fold != k], groups[1][gen_fold != k])
        model = fit(real[real_fold != k], gen[gen_fold != k], config, on_epoch=hook, groups=rest)
        real_logit[real_fold == k] = model.logit(real[real_fold == k])
        gen_logit[gen_fold == k] = model.logit(gen[gen_fold == k])
        models.append(model)
        prior[k] = model.prior_correction
    report = build_report(real_logit + prior[real_fold], gen_logit + prior[gen_fold],
                          np.random.default_rng(config.seed))
    _warn_khat(report)
    return CrossFit(models, real_fold, gen_fold, real_logit, gen_logit, prior, report)


def noise_baseline(real_images: Any, featurize: Callable[[np.ndarray], Any],
                   config: DensityRatioConfig | None = None, seed: int = 0):
    """The thesis's sanity baseline: the same classifier, real images vs grayscale noise.

    ``real_images``: uint8 ``(N, C, H, W)``. The noise set has the same shape and dtype, one
    uniform value in {0..255} per pixel repeated over the C channels (rng seeded by ``seed``).
    ``featurize`` maps uint8 ``(N, C, H, W)`` to float ``(N, D)``. Returns (model, report); the
    report is on the rows fit kept out of training (val + calib splits). A useful classifier
    must reach AUC ~ 1 here.
    """
    images = real_images.numpy() if isinstance(real_images, torch.Tensor) else np.asarray(real_images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"real_images must be a non-empty uint8 (N, C, H, W) array, "
                         f"got dtype {images.dtype}, shape {images.shape}")
    n, c, h, w = images.shape
    gray = np.random.default_rng(seed).integers(0, 256, size=(n, 1, h, w), dtype=np.uint8)
    noise = np.ascontiguousarray(np.repeat(gray, c, axis=1))
    real_f = check_features(featurize(images), "featurize(real_images)")
    noise_f = check_features(featurize(noise), "featurize(noise)", real_f.shape[1])
    model = fit(real_f, noise_f, config)
    report = diagnose(model, real_f[model.real_split != "train"], noise_f[model.gen_split != "train"])
    return model, report
