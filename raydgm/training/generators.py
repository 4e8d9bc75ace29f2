"""Fit loops for the generators, with a checkpoint every epoch and resume after a kill, and
the baseline's closed-form fit (``fit_baseline``).

No Ray and no MLflow in here: ``fit_generator`` takes uint8 images and a config, writes
``last.pt`` into a work directory after every epoch (atomically: temp file, then rename)
and, when that file exists, continues from it. Everything an epoch draws is seeded by
(seed, epoch): the shuffling permutation from ``np.random.default_rng([seed, epoch])`` and
torch's global generator (dropout, the VAE's reparameterization noise) from the same pair,
and the initial weights from (seed, 0),
so a resumed run ends with the same weights as an uninterrupted one on the same machine
and thread count.

A pretrained checkpoint (``config.checkpoint``) is imported instead of trained
(``import_generator``).

Checkpoints hold only tensors, numbers, strings, lists and dicts: they load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from raydgm.config import TrainGeneratorConfig
from raydgm.models import GenerativeModel, build
from raydgm.models.baseline import PCAGaussianMixture
from raydgm.training.common import check_finite_loss, checked_images, derived_seed, one_thread

LAST = "last.pt"          # resume checkpoint (model + optimizer + scheduler + history)
MODEL = "model.pt"        # the trained generator alone: what generation actors load

OnEpoch = Callable[[dict[str, float]], None]


def model_kwargs(config: TrainGeneratorConfig) -> dict[str, Any]:
    """The model constructor's keyword arguments from its config (``kind`` removed)."""
    return {k: v for k, v in config.model.to_dict().items() if k != "kind"}


KNOWN_BIAS = ("skewed", "contaminated")   # copies of the train images: fitted from images + labels


def fit_generator(images: np.ndarray, config: TrainGeneratorConfig, work_dir: str | Path, *,
                  val_images: np.ndarray | None = None, test_images: np.ndarray | None = None,
                  on_epoch: OnEpoch | None = None, progress: bool = True,
                  labels: np.ndarray | None = None,
                  num_classes: int = 0) -> tuple[GenerativeModel, list[dict[str, float]]]:
    """Train ``config.model`` on uint8 (N, C, H, W) ``images``; returns (model, per-epoch history).

    History rows: ``epoch``, ``train_loss`` (nats per image), ``train_bpd`` (bits per dim)
    and, with ``val_images`` / ``test_images``, ``val_loss`` / ``val_bpd`` and
    ``test_loss`` / ``test_bpd`` of the weights at the end of that epoch. The known-bias
    kinds (``KNOWN_BIAS``) are fitted in closed form from the images and their int ``labels``
    (N,) in 0..``num_classes``-1 (``raydgm.training.known_bias``); no history.
    """
    images = checked_images(images, "train images")
    if config.max_train_images is not None:
        images = images[:config.max_train_images]
        labels = None if labels is None else labels[:config.max_train_images]
    shape = tuple(int(s) for s in images.shape[1:])
    if config.model.kind == "baseline":
        return fit_baseline(images, seed=config.seed, **model_kwargs(config)), []
    if config.model.kind in KNOWN_BIAS:
        from raydgm.training.known_bias import fit_known_bias
        if labels is None:
            raise ValueError(f"a {config.model.kind} generator copies labelled train images: pass labels")
        return fit_known_bias(images, labels, num_classes, config.model), []
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
        for split, held_out in (("val", val_images), ("test", test_images)):
            if held_out is not None:
                row.update(_evaluate(model, checked_images(held_out, f"{split} images"),
                                     config, epoch, device, split))
        sched.step()
        history.append(row)
        _save_checkpoint(work_dir / LAST, config, model, opt, sched, history)
        if on_epoch is not None:
            on_epoch(row)
    return model, history


@one_thread()   # the same weights whatever the caller's thread count
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
        check_finite_loss(loss, "training loss", epoch, f"lower learning_rate (now {config.learning_rate}) "
                     "or set grad_clip", batch=start // config.batch_size)
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
@one_thread()
def _evaluate(model: GenerativeModel, images: np.ndarray, config: TrainGeneratorConfig,
              epoch: int, device: torch.device, split: str = "val") -> dict[str, float]:
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(derived_seed(config.seed, 2, epoch))   # the VAE's ELBO draws z
    total = sum(model.loss(torch.from_numpy(images[i:i + config.batch_size]).to(device)).sum().item()
                for i in range(0, len(images), config.batch_size))
    torch.set_rng_state(state)
    return {f"{split}_loss": total / len(images), f"{split}_bpd": _bpd(total / len(images), model)}


def _bpd(nats_per_image: float, model: GenerativeModel) -> float:
    return nats_per_image / (math.prod(model.image_shape) * math.log(2.0))


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
    return load_model(path, "generator", lambda state: build(
        state["kind"], tuple(state["image_shape"]), **state["model_kwargs"])).to(device).eval()


def load_model(path: str | Path, what: str, make: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
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


# --------------------------------------------------------------------------- imported checkpoints
# ``config.checkpoint`` names a pretrained file: the stage imports it instead of training. It
# is stored under ``import_key`` (the file's sha256, not its path) with the same files as a
# trained generator, so ``generate`` and the sweeps use it alike.

def check_import(config: TrainGeneratorConfig, image_shape: tuple[int, ...]) -> Path:
    """``config.checkpoint`` as a path, after the checks that need no loading: the file exists,
    the model is a PixelCNN++ (the config checks that too), the data's (C, H, W) fits one."""
    if config.checkpoint is None:
        raise ValueError("generator.checkpoint is not set: there is nothing to import")
    path = Path(config.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"generator.checkpoint not found: {path}")
    if config.model.kind != "pixelcnnpp":
        raise ValueError(f"generator.checkpoint holds a PixelCNN++, but generator.model.kind is "
                         f"{config.model.kind!r}")
    c, h, w = image_shape
    if c not in (1, 3) or h % 4 or w % 4:
        raise ValueError(f"a PixelCNN++ models 1- or 3-channel images with sides divisible by 4; "
                         f"the data's images have shape {tuple(image_shape)}")
    return path


def import_key(config: TrainGeneratorConfig, sha256: str) -> TrainGeneratorConfig:
    """The config an imported generator is stored under: the model, the format and
    ``sha256:<hex>`` of the file in place of its path (a moved file keeps its key); the
    training keys, unused, at their defaults."""
    return TrainGeneratorConfig.from_dict({"model": config.model.to_dict(), "checkpoint": f"sha256:{sha256}",
                                           "checkpoint_format": config.checkpoint_format})


def import_generator(config: TrainGeneratorConfig, image_shape: tuple[int, int, int], out: Path,
                     sha256: str) -> dict[str, int]:
    """Import ``config.checkpoint`` (``torch.load(..., weights_only=True)``) into ``out``:
    ``model.pt`` as ``save_generator`` writes it, ``history.json`` (no epochs) and
    ``import.json`` (source path, format, sha256). Returns the manifest's row counts."""
    from raydgm.models.pixelcnnpp import load_pclucas14
    model = load_pclucas14(config.checkpoint, tuple(image_shape), **model_kwargs(config))
    save_generator(model, config.model.kind, model_kwargs(config), out / MODEL)
    (out / "history.json").write_text("[]")
    (out / "import.json").write_text(json.dumps({
        "source": str(Path(config.checkpoint).resolve()), "format": config.checkpoint_format,
        "sha256": sha256}, indent=2))
    return {"epochs": 0, "parameters": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------- baseline
# PCA to ``pca_dim`` components, then a Gaussian mixture there: a real density model fitted to
# the real train split (a mixture of probabilistic-PCA style Gaussians), cheap enough for CPU
# demos and tests, and visibly biased (blurry, sometimes off-manifold samples), which is what
# importance weighting should detect. Closed-form: no epochs, no checkpoint.

def fit_baseline(images: np.ndarray, pca_dim: int = 32, n_components: int = 10,
                 seed: int = 0) -> PCAGaussianMixture:
    """Fit on uint8 (N, C, H, W) images; returns the generator module."""
    from sklearn.decomposition import PCA          # here: generation actors import this module
    from sklearn.mixture import GaussianMixture
    checked_images(images, "baseline training images")
    n, c, h, w = images.shape
    x = images.reshape(n, -1).astype(np.float64) / 255.0
    pca_dim = min(pca_dim, n - 1, x.shape[1])
    pca = PCA(n_components=pca_dim, random_state=seed).fit(x)
    gmm = GaussianMixture(n_components=n_components, covariance_type="full",
                          reg_covar=1e-4, random_state=seed).fit(pca.transform(x))
    model = PCAGaussianMixture((c, h, w), pca_dim=pca_dim, n_components=n_components)
    params = {"mean": pca.mean_, "components": pca.components_, "log_mix": np.log(gmm.weights_),
              "mix_means": gmm.means_, "mix_chol": np.linalg.cholesky(gmm.covariances_)}
    for name, value in params.items():
        getattr(model, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)))
    return model
