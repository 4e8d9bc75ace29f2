"""Fit loops for the feature extractors' networks.

``domain``: a ``raydgm.models.domain.DomainCNN`` trained on real images' labels. Seeding as in
``generators.fit_generator``: initial weights from (seed, 0), epoch e's shuffling permutation
from ``default_rng([seed, e])``; the network has no dropout, so nothing else draws. Saved in
``generators.save_generator``'s file layout (kind ``domain_cnn``); it loads with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from raydgm.config import DomainClassifierConfig
from raydgm.data import check_labels
from raydgm.models.domain import DomainCNN
from raydgm.training.common import check_finite, checked_images, derived_seed
from raydgm.training.generators import OnEpoch, load_model, save_generator

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
    images = checked_images(images, f"{where} images")
    labels = check_labels(labels, len(images), f"{where} labels", num_classes)
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    if num_classes is None and len(np.unique(labels)) < 2:
        raise ValueError(f"{where} labels hold a single class ({int(labels[0])}); "
                         "a classifier needs at least 2")
    return images, labels, k


def _domain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, cfg: DomainClassifierConfig, epoch: int) -> dict[str, float]:
    model.train()
    perm = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(len(x))).to(x.device)
    total, correct = 0.0, 0
    for start in range(0, len(x), cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        logits = model(x[idx])
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        check_finite(loss, "domain classifier loss", epoch, f"lower learning_rate (now {cfg.learning_rate})",
                     batch=start // cfg.batch_size)
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
    return load_model(path, "domain classifier", make).to(device).eval()
