"""Fit loops for the generators (and the domain feature extractor's CNN), with a checkpoint every epoch and resume after a kill.

No Ray and no MLflow in here: ``fit_generator`` takes uint8 images and a config, writes
``last.pt`` into a work directory after every epoch (atomically: temp file, then rename)
and, when that file exists, continues from it. Everything an epoch draws is seeded by
(seed, epoch): the shuffling permutation from ``np.random.default_rng([seed, epoch])`` and
torch's global generator (dropout, the VAE's reparameterization noise) from the same pair,
and the initial weights from (seed, 0),
so a resumed run ends with the same weights as an uninterrupted one on the same machine
and thread count.

Checkpoints hold only tensors, numbers, strings, lists and dicts: they load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from raydgm.config import DomainClassifierConfig, TrainGeneratorConfig
from raydgm.data import check_images
from raydgm.models import GenerativeModel, build
from raydgm.models.domain import DomainCNN

LAST = "last.pt"          # resume checkpoint (model + optimizer + scheduler + history)
MODEL = "model.pt"        # the trained generator alone: what generation actors load

OnEpoch = Callable[[dict[str, float]], None]


def model_kwargs(config: TrainGeneratorConfig) -> dict[str, Any]:
    """The model constructor's keyword arguments from its config (``kind`` removed)."""
    return {k: v for k, v in config.model.to_dict().items() if k != "kind"}


def fit_generator(images: np.ndarray, config: TrainGeneratorConfig, work_dir: str | Path, *,
                  val_images: np.ndarray | None = None, on_epoch: OnEpoch | None = None,
                  progress: bool = True) -> tuple[GenerativeModel, list[dict[str, float]]]:
    """Train ``config.model`` on uint8 (N, C, H, W) ``images``; returns (model, per-epoch history).

    History rows: ``epoch``, ``train_loss`` (nats per image), ``train_bpd`` (bits per dim)
    and, with ``val_images``, ``val_loss`` / ``val_bpd``.
    """
    images = _checked(images, "train images")
    if config.max_train_images is not None:
        images = images[:config.max_train_images]
    shape = tuple(int(s) for s in images.shape[1:])
    if config.model.kind == "baseline":
        from raydgm.baseline import fit_baseline
        return fit_baseline(images, seed=config.seed, **model_kwargs(config)), []
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[]):   # seeded init, global state left as it was
        torch.manual_seed(derived_seed(config.seed, 0))
        model = build(config.model.kind, shape, **model_kwargs(config)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=config.lr_decay)
    start, history = _resume(work_dir / LAST, config, model, opt, sched)
    for epoch in range(start, config.epochs):
        row = _train_epoch(model, opt, images, config, epoch, device, progress)
        if val_images is not None:
            row.update(_evaluate(model, _checked(val_images, "validation images"),
                                 config, epoch, device))
        sched.step()
        history.append(row)
        _save_checkpoint(work_dir / LAST, config, model, opt, sched, history)
        if on_epoch is not None:
            on_epoch(row)
    return model, history


def _train_epoch(model: GenerativeModel, opt: torch.optim.Optimizer, images: np.ndarray,
                 config: TrainGeneratorConfig, epoch: int, device: torch.device,
                 progress: bool) -> dict[str, float]:
    model.train()
    torch.manual_seed(derived_seed(config.seed, 1, epoch))
    perm = np.random.default_rng([config.seed, epoch]).permutation(len(images))
    total, count = 0.0, 0
    steps = range(0, len(images), config.batch_size)
    bar = tqdm(steps, desc=f"train {config.model.kind} epoch {epoch + 1}/{config.epochs}",
               unit="batch", leave=False, disable=not progress)
    for start in bar:
        x = torch.from_numpy(images[perm[start:start + config.batch_size]]).to(device)
        loss = model.loss(x).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, "
                                     f"batch {start // config.batch_size}; lower learning_rate "
                                     f"(now {config.learning_rate}) or set grad_clip")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        total += loss.item() * len(x)
        count += len(x)
        bar.set_postfix(bpd=f"{_bpd(loss.item(), model):.3f}")
    return {"epoch": epoch + 1, "train_loss": total / count,
            "train_bpd": _bpd(total / count, model)}


@torch.no_grad()
def _evaluate(model: GenerativeModel, images: np.ndarray, config: TrainGeneratorConfig,
              epoch: int, device: torch.device) -> dict[str, float]:
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(derived_seed(config.seed, 2, epoch))   # the VAE's ELBO draws z
    total = sum(model.loss(torch.from_numpy(images[i:i + config.batch_size]).to(device)).sum().item()
                for i in range(0, len(images), config.batch_size))
    torch.set_rng_state(state)
    return {"val_loss": total / len(images), "val_bpd": _bpd(total / len(images), model)}


def _bpd(nats_per_image: float, model: GenerativeModel) -> float:
    return nats_per_image / (math.prod(model.image_shape) * math.log(2.0))


def derived_seed(*words: int) -> int:
    """A 63-bit torch seed from (seed, purpose[, epoch]); fit loops here use init 0, training 1,
    validation 2 (``raydgm.ssl`` uses init 0 too)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0] >> 1)


def _checked(images: np.ndarray, where: str) -> np.ndarray:
    check_images(images, where)
    return np.ascontiguousarray(images)


# --------------------------------------------------------------------------- checkpoints

def _save_checkpoint(path: Path, config: TrainGeneratorConfig, model: GenerativeModel,
                     opt: torch.optim.Optimizer, sched: Any, history: list[dict[str, float]]) -> None:
    state = {"config_hash": config.content_hash(), "epoch": len(history), "history": history,
             "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict()}
    _atomic_save(state, path)


def _resume(path: Path, config: TrainGeneratorConfig, model: GenerativeModel,
            opt: torch.optim.Optimizer, sched: Any) -> tuple[int, list[dict[str, float]]]:
    if not path.exists():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn file cannot happen (atomic rename), a foreign one can
        raise ValueError(f"cannot resume from {path}: {err}; delete it to start over") from err
    if state.get("config_hash") != config.content_hash():
        raise ValueError(f"{path} belongs to another training config; delete it to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["epoch"]), list(state["history"])


def save_generator(model: GenerativeModel, kind: str, kwargs: dict[str, Any], path: str | Path) -> None:
    """Write the generator alone (kind, constructor arguments, weights) for generation actors."""
    state = {"kind": kind, "image_shape": list(model.image_shape), "model_kwargs": kwargs,
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    _atomic_save(state, Path(path))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """Rebuild a generator written by ``save_generator`` (``weights_only=True``), in eval mode."""
    return _rebuild(path, "generator", lambda state: build(
        state["kind"], tuple(state["image_shape"]), **state["model_kwargs"])).to(device).eval()


def _rebuild(path: str | Path, what: str, make: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """Load a ``save_generator``-layout file and ``make(state)`` the module with its weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = make(state)
        model.load_state_dict(state["state_dict"])
    except Exception as err:  # unpickling, zip, key, shape errors: all mean "not ours"
        raise ValueError(f"{path} is not a raydgm {what} checkpoint: "
                         f"{type(err).__name__}: {err}") from err
    return model


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- domain classifier
# The ``domain`` feature extractor (raydgm.models.domain.DomainCNN) trained on real images'
# labels. Seeding as in fit_generator: initial weights from (seed, 0), epoch e's shuffling
# permutation from default_rng([seed, e]); the network has no dropout, so nothing else draws.

DOMAIN_KIND = "domain_cnn"   # the ``kind`` written into a domain-classifier checkpoint


def fit_domain_classifier(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray | None,
                          val_labels: np.ndarray | None, cfg: DomainClassifierConfig,
                          progress: bool = True, on_epoch: OnEpoch | None = None
                          ) -> tuple[DomainCNN, list[dict[str, float]]]:
    """Train a DomainCNN on uint8 (N, C, H, W) ``images`` with int ``labels`` in 0..K-1.

    K = labels.max() + 1 (at least 2 classes present). Adam on the mean cross-entropy.
    History rows: ``epoch``, ``train_loss`` (nats per image) and ``train_accuracy`` (both
    averaged over the epoch's batches while the weights moved) and, with a validation set,
    ``val_loss`` / ``val_accuracy`` of the weights at the epoch's end. With a validation set
    training stops after ``cfg.patience`` epochs without a better validation accuracy and the
    best epoch's weights (the first, on ties) are returned; without one every epoch runs and
    the last weights are returned. The model comes back in eval mode on ``cfg.device``.
    """
    x, y, k = _domain_data(images, labels, "train")
    val = None if val_images is None and val_labels is None else _domain_data(
        val_images, val_labels, "validation", num_classes=k)
    device = torch.device(cfg.device)
    with torch.random.fork_rng(devices=[]):   # seeded init, global state left as it was
        torch.manual_seed(derived_seed(cfg.seed, 0))
        model = DomainCNN(tuple(x.shape[1:]), k, tuple(cfg.channels), cfg.feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    val_t = None if val is None else (torch.from_numpy(val[0]).to(device), torch.from_numpy(val[1]).to(device))
    history: list[dict[str, float]] = []
    best_acc, best_state, since_best = -1.0, None, 0
    bar = tqdm(range(cfg.epochs), desc="domain classifier", unit="epoch", disable=not progress)
    for epoch in bar:
        row = _domain_epoch(model, opt, x, y, cfg, epoch)
        if val_t is not None:
            row.update(_domain_evaluate(model, *val_t, cfg.batch_size))
        history.append(row)
        bar.set_postfix({k_: f"{v:.3f}" for k_, v in row.items() if k_ != "epoch"})
        if on_epoch is not None:
            on_epoch(row)
        if val_t is None:
            continue
        if row["val_accuracy"] > best_acc:
            best_acc, since_best = row["val_accuracy"], 0
            best_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def _domain_data(images: Any, labels: Any, where: str,
                 num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked (uint8 (N, C, H, W), int64 (N,), K) with labels in 0..K-1; K inferred when None."""
    if images is None or labels is None:
        raise ValueError(f"{where} images and labels must be given together (or both None)")
    images = _checked(images, f"{where} images")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where} labels must be a 1-D integer array, found {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{where} labels length mismatch: {len(labels)} labels for {len(images)} images")
    if labels.min() < 0:
        raise ValueError(f"{where} labels must be >= 0 (class indices), found {int(labels.min())}")
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.max() >= k:
        raise ValueError(f"{where} labels must be in 0..{k - 1} (the training classes), "
                         f"found {int(labels.max())}")
    if num_classes is None and len(np.unique(labels)) < 2:
        raise ValueError(f"{where} labels hold a single class ({int(labels[0])}); "
                         "a classifier needs at least 2")
    return images, labels.astype(np.int64), k


def _domain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, cfg: DomainClassifierConfig, epoch: int) -> dict[str, float]:
    model.train()
    perm = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(len(x))).to(x.device)
    total, correct = 0.0, 0
    for start in range(0, len(x), cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        logits = model(x[idx])
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"domain classifier loss became {loss.item()} at epoch {epoch + 1}, "
                                     f"batch {start // cfg.batch_size}; lower learning_rate "
                                     f"(now {cfg.learning_rate})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        correct += int((logits.argmax(dim=1) == y[idx]).sum())
    return {"epoch": epoch + 1, "train_loss": total / len(x), "train_accuracy": correct / len(x)}


@torch.no_grad()
def _domain_evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> dict[str, float]:
    model.eval()
    total, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == target).sum())
    return {"val_loss": total / len(x), "val_accuracy": correct / len(x)}


def save_domain_classifier(model: DomainCNN, path: str | Path) -> None:
    """Write a DomainCNN (kind, image shape, constructor arguments, weights) atomically.

    The same file layout as :func:`save_generator`, with kind ``"domain_cnn"``; it loads with
    ``torch.load(..., weights_only=True)``.
    """
    save_generator(model, DOMAIN_KIND, model.constructor_kwargs(), path)  # type: ignore[arg-type]


def load_domain_classifier(path: str | Path, device: str | torch.device = "cpu") -> DomainCNN:
    """Rebuild a DomainCNN written by :func:`save_domain_classifier`, in eval mode on ``device``."""
    def make(state: dict) -> DomainCNN:
        if state.get("kind") != DOMAIN_KIND:
            raise KeyError(f"kind is {state.get('kind')!r}, not {DOMAIN_KIND!r}")
        return DomainCNN(tuple(state["image_shape"]), **state["model_kwargs"])
    return _rebuild(path, "domain classifier", make).to(device).eval()
