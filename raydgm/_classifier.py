"""The real-vs-generated classifier behind ``raydgm.density_ratio`` (private; use ``fit``).

Row splits, feature standardisation, the one-hidden-layer MLP and its early-stopped training
loop, and the calibration maps (temperature / Platt scaling, isotonic regression).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.isotonic import IsotonicRegression

from raydgm.config import DensityRatioConfig

EVAL_BATCH = 8192            # rows per forward pass at prediction time
STD_FLOOR = 0.01             # feature std floored at this fraction of the median feature std


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


def calibrate(model_kw: dict, z: np.ndarray, y: np.ndarray, config: DensityRatioConfig) -> None:
    """Fit the calibration map on the calib split's raw logits; fills ``model_kw`` in place."""
    weight = class_weights(y, config.balanced)
    if config.calibration == "temperature":
        model_kw["temperature"] = fit_temperature(z, y, weight)
    elif config.calibration == "isotonic":
        model_kw["iso_knots"] = fit_isotonic(z, y, weight, config.isotonic_eps)
