"""Fit loops for the feature extractors' networks, and their checkpoints.

``domain``: a ``raydgm.models.domain.DomainCNN`` trained on real images' labels (cross-entropy;
early stopping on validation accuracy). ``autoencoder``: a
``raydgm.models.autoencoder.ConvAutoencoder`` trained on the images alone (binary cross-entropy
of the reconstruction; early stopping on validation loss). ``contrastive``: a
``raydgm.models.contrastive.ContrastiveEncoder`` trained on the images alone (NT-Xent between
two random distortions of each image, ``raydgm.training.contrastive``; early stopping on
validation loss). All run the one loop ``_fit``, seeded as ``generators.fit_generator``:
initial weights from (seed, 0), epoch e's shuffling permutation from ``default_rng([seed, e])``;
no network has dropout; the contrastive distortions draw from (seed, 1) in training and from
(seed, 2), afresh at every evaluation, for validation. Saved in ``generators.save_generator``'s
file layout (kinds ``domain_cnn``, ``conv_autoencoder`` and ``contrastive_encoder``); they load
with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from raydgm.config import AutoencoderConfig, ContrastiveConfig, DomainClassifierConfig
from raydgm.data import check_labels
from raydgm.models.autoencoder import ConvAutoencoder
from raydgm.models.contrastive import ContrastiveEncoder
from raydgm.models.domain import DomainCNN
from raydgm.training.common import check_finite_loss, checked_images, derived_seed, one_thread
from raydgm.training.contrastive import nt_xent, random_affine
from raydgm.training.generators import OnEpoch, load_model, save_generator

DOMAIN_KIND = "domain_cnn"             # the ``kind`` written into a domain-classifier checkpoint
AUTOENCODER_KIND = "conv_autoencoder"  # ... and into an autoencoder checkpoint
CONTRASTIVE_KIND = "contrastive_encoder"
NETWORKS: dict[str, tuple[str, str, type[torch.nn.Module]]] = {   # extractor -> (kind, what, class)
    "domain": (DOMAIN_KIND, "domain classifier", DomainCNN),
    "autoencoder": (AUTOENCODER_KIND, "autoencoder", ConvAutoencoder),
    "contrastive": (CONTRASTIVE_KIND, "contrastive encoder", ContrastiveEncoder)}
NetworkConfig = DomainClassifierConfig | AutoencoderConfig | ContrastiveConfig
# (model, batch tensors) -> (mean loss to minimise, {statistic: its sum over the batch's rows})
BatchStats = Callable[..., tuple[torch.Tensor, dict[str, float]]]


def fit_network(cfg: NetworkConfig, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                progress: bool = True, where: str = "the dataset"
                ) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """The network ``cfg`` configures, fitted on a dataset's (images, labels) train split.

    DomainClassifierConfig: a DomainCNN on the labels (ValueError when the train split is
    unlabelled, labels -1); AutoencoderConfig: a ConvAutoencoder, ContrastiveConfig: a
    ContrastiveEncoder, both on the images, labels unused. An empty ``val`` split means no
    early stopping.
    """
    (x, y), (xv, yv) = train, val
    xv, yv = (xv, yv) if len(xv) else (None, None)
    if isinstance(cfg, AutoencoderConfig):
        return fit_autoencoder(x, xv, cfg, progress=progress)
    if isinstance(cfg, ContrastiveConfig):
        return fit_contrastive(x, xv, cfg, progress=progress)
    if (np.asarray(y) < 0).any():
        raise ValueError(f"the domain extractor trains on class labels, but {where}'s train split "
                         "is unlabelled; use features=contrastive, autoencoder, inception or pixels")
    return fit_domain_classifier(x, y, xv, yv, cfg, progress=progress)


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
    model = _seeded(cfg, lambda: DomainCNN(tuple(x.shape[1:]), k, tuple(cfg.channels), cfg.feature_dim))
    history = _fit(model, _classify, (x, y), None if val is None else val[:2], cfg,
                   "domain classifier", "val_accuracy", progress, on_epoch)
    return model.eval(), history


def fit_autoencoder(images: np.ndarray, val_images: np.ndarray | None, cfg: AutoencoderConfig,
                    progress: bool = True, on_epoch: OnEpoch | None = None
                    ) -> tuple[ConvAutoencoder, list[dict[str, float]]]:
    """Train a ConvAutoencoder on uint8 (N, C, H, W) ``images``; no labels are involved.

    Adam on the binary cross-entropy between the reconstruction and the pixels x / 255 in
    [0, 1] (continuous targets), averaged over every pixel. History rows: ``epoch``,
    ``train_loss`` and ``train_mse`` (per pixel, on [0, 1], averaged over the epoch's batches
    while the weights moved) and, with ``val_images``, ``val_loss`` / ``val_mse`` of the weights
    at the epoch's end. With validation images training stops after ``cfg.patience`` epochs
    without a lower validation loss and the best epoch's weights (the first, on ties) are
    returned; without them every epoch runs. The model comes back in eval mode on ``cfg.device``.
    """
    x = checked_images(images, "train images")
    val = None if val_images is None else (checked_images(val_images, "validation images"),)
    if val is not None and val[0].shape[1:] != x.shape[1:]:
        raise ValueError(f"validation images have shape {val[0].shape[1:]} but the train "
                         f"images {x.shape[1:]}; they must match")
    model = _seeded(cfg, lambda: ConvAutoencoder(tuple(x.shape[1:]), tuple(cfg.channels), cfg.feature_dim))
    history = _fit(model, _reconstruct, (x,), val, cfg, "autoencoder", "val_loss", progress, on_epoch)
    return model.eval(), history


def fit_contrastive(images: np.ndarray, val_images: np.ndarray | None, cfg: ContrastiveConfig,
                    progress: bool = True, on_epoch: OnEpoch | None = None
                    ) -> tuple[ContrastiveEncoder, list[dict[str, float]]]:
    """Train a ContrastiveEncoder on uint8 (N, C, H, W) ``images``; no labels are involved.

    Adam on ``nt_xent`` of two ``random_affine`` distortions of each batch's images. History
    rows: ``epoch``, ``train_loss`` (averaged over the epoch's batches while the weights moved)
    and, with ``val_images``, ``val_loss`` of the weights at the epoch's end, on distortions
    drawn alike every epoch. With validation images training stops after ``cfg.patience``
    epochs without a lower validation loss and the best epoch's weights (the first, on ties)
    are returned; without them every epoch runs. The model comes back in eval mode on ``cfg.device``.
    """
    x = checked_images(images, "train images")
    val = None if val_images is None else (checked_images(val_images, "validation images"),)
    if val is not None and val[0].shape[1:] != x.shape[1:]:
        raise ValueError(f"validation images have shape {val[0].shape[1:]} but the train "
                         f"images {x.shape[1:]}; they must match")
    model = _seeded(cfg, lambda: ContrastiveEncoder(tuple(x.shape[1:]), tuple(cfg.channels), cfg.feature_dim,
                                                   cfg.projection_dim))
    device = next(model.parameters()).device

    def seeded(purpose: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, purpose))
    draws = {"train": seeded(1), "val": seeded(2)}

    def contrast(net: ContrastiveEncoder, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        generator = draws["train"] if net.training else draws["val"]
        views = torch.cat([random_affine(batch.float(), generator, cfg.max_rotation, cfg.max_scale, cfg.max_shift)
                           for _ in range(2)])
        loss = nt_xent(net(views), cfg.temperature)
        return loss, {"loss": loss.item() * len(batch)}

    def after_epoch(row: dict[str, float]) -> None:   # the next evaluation draws as this one did
        draws["val"] = seeded(2)
        if on_epoch is not None:
            on_epoch(row)
    history = _fit(model, contrast, (x,), val, cfg, "contrastive encoder", "val_loss", progress, after_epoch)
    return model.eval(), history


def _classify(model: DomainCNN, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": loss.item() * len(x), "accuracy": float((logits.argmax(dim=1) == y).sum())}


def _reconstruct(model: ConvAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model.decode_logits(model.features(x))
    target = x.to(logits.dtype) / 255.0
    loss = F.binary_cross_entropy_with_logits(logits, target)
    mse = F.mse_loss(torch.sigmoid(logits), target)
    return loss, {"loss": loss.item() * len(x), "mse": mse.item() * len(x)}


def _seeded(cfg: NetworkConfig, make: Callable[[], torch.nn.Module]) -> Any:
    """``make()`` with torch's global generator seeded from (cfg.seed, 0), then restored; on cfg.device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(cfg.seed, 0))
        return make().to(torch.device(cfg.device))


@one_thread()   # the same weights whatever the caller's thread count
def _fit(model: torch.nn.Module, batch_stats: BatchStats, train: tuple[np.ndarray, ...],
         val: tuple[np.ndarray, ...] | None, cfg: NetworkConfig, what: str, monitor: str,
         progress: bool, on_epoch: OnEpoch | None) -> list[dict[str, float]]:
    """Adam epochs over the row-aligned arrays ``train``, early stopping on history key ``monitor``
    (``*_loss``: lower is better, else higher) when ``val`` is given; the best epoch's weights
    (the first, on ties) are loaded back. Returns the history."""
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    train_t = tuple(torch.from_numpy(a).to(device) for a in train)
    val_t = None if val is None else tuple(torch.from_numpy(a).to(device) for a in val)
    sign = -1.0 if monitor.endswith("loss") else 1.0
    history: list[dict[str, float]] = []
    best, best_state, since_best = -float("inf"), None, 0
    bar = tqdm(range(cfg.epochs), desc=what, unit="epoch", disable=not progress)
    for epoch in bar:
        row = {"epoch": epoch + 1} | _train_epoch(model, opt, batch_stats, train_t, cfg, epoch, what)
        if val_t is not None:
            row.update(_evaluate(model, batch_stats, val_t, cfg.batch_size))
        history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
        if on_epoch is not None:
            on_epoch(row)
        if val_t is None:
            continue
        if sign * row[monitor] > best:
            best, since_best = sign * row[monitor], 0
            best_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, batch_stats: BatchStats,
                 tensors: tuple[torch.Tensor, ...], cfg: NetworkConfig, epoch: int,
                 what: str) -> dict[str, float]:
    model.train()
    n = len(tensors[0])
    perm = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(n)).to(tensors[0].device)
    sums: dict[str, float] = {}
    for start in range(0, n, cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        loss, stats = batch_stats(model, *(t[idx] for t in tensors))
        check_finite_loss(loss.detach(), f"{what} loss", epoch, f"lower learning_rate (now {cfg.learning_rate})",
                     batch=start // cfg.batch_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums = {k: sums.get(k, 0.0) + v for k, v in stats.items()}
    return {f"train_{k}": v / n for k, v in sums.items()}


@torch.no_grad()
def _evaluate(model: torch.nn.Module, batch_stats: BatchStats, tensors: tuple[torch.Tensor, ...],
              batch_size: int) -> dict[str, float]:
    model.eval()
    n = len(tensors[0])
    sums: dict[str, float] = {}
    for start in range(0, n, batch_size):
        _, stats = batch_stats(model, *(t[start:start + batch_size] for t in tensors))
        sums = {k: sums.get(k, 0.0) + v for k, v in stats.items()}
    return {f"val_{k}": v / n for k, v in sums.items()}


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


def save_network(model: DomainCNN | ConvAutoencoder, path: str | Path) -> None:
    """Write a DomainCNN or ConvAutoencoder (kind, image shape, constructor arguments, weights)
    atomically, in :func:`save_generator`'s file layout; it loads with ``weights_only=True``."""
    kind = next((k for k, _, cls in NETWORKS.values() if type(model) is cls), None)
    if kind is None:
        raise TypeError(f"not a feature-extractor network: {type(model).__name__}")
    save_generator(model, kind, model.constructor_kwargs(), path)  # type: ignore[arg-type]


def load_network(path: str | Path, extractor: str, device: str | torch.device = "cpu") -> Any:
    """Rebuild the network of ``extractor`` (a key of ``NETWORKS``) written by :func:`save_network`,
    in eval mode on ``device``."""
    kind, what, cls = NETWORKS[extractor]

    def make(state: dict) -> torch.nn.Module:
        if state.get("kind") != kind:
            raise KeyError(f"kind is {state.get('kind')!r}, not {kind!r}")
        return cls(tuple(state["image_shape"]), **state["model_kwargs"])
    return load_model(path, what, make).to(device).eval()


def save_domain_classifier(model: DomainCNN, path: str | Path) -> None:
    """:func:`save_network` for a DomainCNN (kind ``"domain_cnn"``)."""
    save_network(model, path)


def load_domain_classifier(path: str | Path, device: str | torch.device = "cpu") -> DomainCNN:
    """A DomainCNN written by :func:`save_domain_classifier`, in eval mode on ``device``."""
    return load_network(path, "domain", device)


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> ConvAutoencoder:
    """A ConvAutoencoder written by :func:`save_network`, in eval mode on ``device``."""
    return load_network(path, "autoencoder", device)
