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
calibration on a third split. Diagnostics (ESS, PSIS k-hat, calibration curves) live in
``raydgm._diagnostics`` and are re-exported here.
"""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.isotonic import IsotonicRegression

from raydgm import metrics
from raydgm._diagnostics import (KHAT_UNRELIABLE, DensityRatioReport, alpha_for_ess, build_report,
                                 effective_sample_size, ess_fraction, flatten, flattened, psis_khat)
from raydgm.config import DensityRatioConfig

__all__ = ["DensityRatioModel", "DensityRatioReport", "alpha_for_ess", "diagnose", "effective_sample_size",
           "ess_fraction", "fit", "flatten", "flattened", "noise_baseline", "psis_khat"]

SPLITS = ("train", "val", "calib")
EVAL_BATCH = 8192            # rows per forward pass at prediction time
STD_FLOOR = 0.01             # feature std floored at this fraction of the median feature std
WEIGHTS_FILE, META_FILE = "weights.pt", "model.json"


# --------------------------------------------------------------------------- inputs

def check_features(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` (numpy or torch) as a finite float64 ``(N, D)`` array with N >= 1; ``dim``: the
    required D (``raydgm.metrics.check_features``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return metrics.check_features(x, name, dim)


def split_rows(n: int, config: DensityRatioConfig, rng: np.random.Generator, name: str) -> np.ndarray:
    """A seeded assignment of ``n`` rows to 0 = train, 1 = val, 2 = calib (int8, ``(n,)``)."""
    n_val = max(1, round(config.val_fraction * n))
    n_calib = max(1, round(config.calib_fraction * n))
    if n - n_val - n_calib < 1:
        raise ValueError(f"too few rows: {name} has {n}; it needs at least 1 train, 1 val and "
                         f"1 calib row (val_fraction={config.val_fraction}, "
                         f"calib_fraction={config.calib_fraction})")
    split = np.zeros(n, dtype=np.int8)
    perm = rng.permutation(n)
    split[perm[:n_val]] = 1
    split[perm[n_val:n_val + n_calib]] = 2
    return split


# --------------------------------------------------------------------------- network

def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``(N, D)`` ``x``, the std floored at ``STD_FLOOR`` x median.

    Without the floor a near-constant feature (a padding pixel that is 1/255 in one sample
    of thousands) is blown up to |z| ~ 70 and the net extrapolates it to log w ~ 50,
    which alone makes the effective sample size 1. Constant features get std 1.
    """
    mean, std = x.mean(axis=0), x.std(axis=0)
    spread = std[std > 0]
    floor = STD_FLOOR * float(np.median(spread)) if spread.size else 1.0
    return mean, np.where(std > 0, np.maximum(std, floor), 1.0)


def build_mlp(dim: int, hidden: int, gen: torch.Generator) -> torch.nn.Sequential:
    """Linear(D, H) - ReLU - Linear(H, 1), initialised like ``nn.Linear`` (U(+-1/sqrt(fan_in)))
    from ``gen`` rather than the global RNG."""
    net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            for p in (layer.weight, layer.bias):
                p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1) * bound)
    return net


def raw_logits(net: torch.nn.Module, z: np.ndarray, device: str) -> np.ndarray:
    """Uncalibrated logits, float64 ``(N,)``, of standardized features ``z`` ``(N, D)``."""
    out = []
    net.eval()
    with torch.no_grad():
        for start in range(0, z.shape[0], EVAL_BATCH):
            xb = torch.as_tensor(z[start:start + EVAL_BATCH], dtype=torch.float32, device=device)
            out.append(net(xb).squeeze(1).double().cpu().numpy())
    return np.concatenate(out)


def _batches(idx_real: np.ndarray, idx_gen: np.ndarray, batch_size: int, balanced: bool,
             gen: torch.Generator) -> list[np.ndarray]:
    """One epoch of row indices into the pooled train rows (real first, then generated)."""
    n_real, n_gen = idx_real.size, idx_gen.size
    steps = math.ceil((n_real + n_gen) / batch_size)
    if not balanced:                                   # a shuffled pass over the pool
        perm = torch.randperm(n_real + n_gen, generator=gen).numpy()
        return [perm[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
    half = batch_size // 2                             # half real, half generated
    r = torch.randint(n_real, (steps, half), generator=gen).numpy()
    g = torch.randint(n_gen, (steps, batch_size - half), generator=gen).numpy() + n_real
    return list(np.concatenate([r, g], axis=1))


def _val_loss(net: torch.nn.Module, z: torch.Tensor, y: torch.Tensor, balanced: bool) -> float:
    """Held-out BCE; class-balanced (mean of the per-class means) when ``balanced``."""
    net.eval()
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(z).squeeze(1), y, reduction="none")
    if not balanced:
        return float(loss.mean())
    return float(0.5 * (loss[y == 1].mean() + loss[y == 0].mean()))


def train_classifier(z_tr: np.ndarray, y_tr: np.ndarray, z_val: np.ndarray, y_val: np.ndarray,
                     config: DensityRatioConfig, gen: torch.Generator,
                     on_epoch: Callable[[dict], None] | None = None):
    """Adam on BCEWithLogits with early stopping on the val BCE (patience ``config.patience``).

    Returns (net with the best epoch's weights, history [{epoch, train_loss, val_loss}],
    best_epoch). ``y`` is 1 for real, 0 for generated; train rows are real first.
    """
    dev = config.device
    net = build_mlp(z_tr.shape[1], config.hidden_units, gen).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x_tr, t_tr = (torch.as_tensor(a, dtype=torch.float32, device=dev) for a in (z_tr, y_tr))
    x_val, t_val = (torch.as_tensor(a, dtype=torch.float32, device=dev) for a in (z_val, y_val))
    idx_real, idx_gen = np.flatnonzero(y_tr == 1), np.flatnonzero(y_tr == 0)
    history, best, best_state, best_epoch = [], math.inf, None, 0
    for epoch in range(config.max_epochs):
        net.train()
        total, count = 0.0, 0
        for b in _batches(idx_real, idx_gen, config.batch_size, config.balanced, gen):
            b = torch.as_tensor(b, device=dev)
            loss = loss_fn(net(x_tr[b]).squeeze(1), t_tr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(b), count + len(b)
        val = _val_loss(net, x_val, t_val, config.balanced)
        history.append({"epoch": epoch, "train_loss": total / count, "val_loss": val})
        if on_epoch is not None:
            on_epoch(history[-1])
        if val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    net.load_state_dict(best_state)
    return net, history, best_epoch


# --------------------------------------------------------------------------- calibration

def class_weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    """Sample weights summing to 1; each class carries 1/2 of it when ``balanced``."""
    if not balanced:
        return np.full(y.size, 1.0 / y.size)
    return np.where(y == 1, 0.5 / (y == 1).sum(), 0.5 / (y == 0).sum())


def fit_temperature(z: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising the weighted BCE of sigmoid(a z + b) (L-BFGS-B)."""
    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        nll = -np.sum(weight * (y * log_expit(s) + (1 - y) * log_expit(-s)))
        r = weight * (expit(s) - y)                    # d nll / d s
        return float(nll), np.array([np.sum(r * z), np.sum(r)])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def fit_isotonic(z: np.ndarray, y: np.ndarray, weight: np.ndarray,
                 eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic P(real | z) as interpolation knots (x, p); warns that it reaches 0 / 1."""
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(z, y, sample_weight=weight)
    xs, ps = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
    if ps.min() < eps or ps.max() > 1 - eps:
        lim = math.log((1 - eps) / eps)
        warnings.warn("isotonic calibration gives probabilities of exactly 0 or 1 (infinite "
                      f"log-weights) on part of the feature space; they are clipped to "
                      f"[{eps:g}, 1 - {eps:g}], i.e. logits in [{-lim:.2f}, {lim:.2f}]", stacklevel=4)
    return xs, ps


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

def _calibrate(model_kw: dict, z: np.ndarray, y: np.ndarray, config: DensityRatioConfig) -> None:
    """Fit the calibration map on the calib split's raw logits; fills ``model_kw`` in place."""
    weight = class_weights(y, config.balanced)
    if config.calibration == "temperature":
        model_kw["temperature"] = fit_temperature(z, y, weight)
    elif config.calibration == "isotonic":
        model_kw["iso_knots"] = fit_isotonic(z, y, weight, config.isotonic_eps)


def fit(real_features: Any, gen_features: Any, config: DensityRatioConfig | None = None, *,
        on_epoch: Callable[[dict], None] | None = None) -> DensityRatioModel:
    """Fit c(x) = P(real | x) on real ``(N_r, D)`` vs generated ``(N_g, D)`` features.

    Each class is split train / val / calib by ``config.val_fraction`` / ``calib_fraction``
    (seeded by ``config.seed``); features are z-scored with the train split's mean and std;
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
    _calibrate(kw, raw_logits(net, (x_cal - mean) / std, config.device), y_cal, config)
    return DensityRatioModel(**kw)


def diagnose(model: DensityRatioModel, real_features: Any, gen_features: Any) -> DensityRatioReport:
    """Calibration, separability and weight diagnostics on labelled evaluation features.

    ``real_features`` ``(N_r, D)`` ~ p_data and ``gen_features`` ``(N_g, D)`` ~ p_theta,
    ideally rows not used by ``fit``. Subsampling is seeded by ``model.config.seed``.
    Warns (``warnings.warn``) when PSIS k-hat > 0.7.
    """
    real = check_features(real_features, "real_features", model.dim)
    gen = check_features(gen_features, "gen_features", model.dim)
    rng = np.random.default_rng(model.config.seed)
    report = build_report(model.log_weights(real), model.log_weights(gen), rng)
    if report.khat > KHAT_UNRELIABLE:
        warnings.warn(report.warnings[0], stacklevel=2)
    return report


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
