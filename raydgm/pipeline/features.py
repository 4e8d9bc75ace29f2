"""Feature extractors: uint8 images -> (N, D) float features (and class logits), cached.

Extractors (``build_extractor``):

- ``pixels``: flattened pixels in [0, 1]; for tests and the pixel-space classifier.
- ``domain``: a small CNN trained on the real train split's labels (``raydgm.models.domain``);
  its penultimate layer gives features and its softmax an Inception-Score analogue.
- ``autoencoder``: a small conv autoencoder trained on the real train images without labels
  (``raydgm.models.autoencoder``); its bottleneck gives features, and there are no logits.
- ``contrastive``: an encoder trained on the real train images without labels to map two random
  distortions of an image close together (SimCLR, ``raydgm.models.contrastive``); no logits.
- ``inception``: clean-fid's protocol on the TorchScript Inception-V3 (``raydgm.pipeline.inception``):
  2048-d pool features and, with the full weights file, the 1008 logits for IS.

Each is a callable ``images uint8 (N, C, H, W) -> (features float32 (N, D), logits float32
(N, K) or None)`` with attributes ``name`` and ``num_classes``.

``extract_to`` computes one image set's features into a Parquet table keyed by sample_id.
Large sets go through Ray Data (``ExtractBatch`` actors, on GPUs when the cluster has them);
small ones run in this process, which skips the actors' start-up. The stage functions in
``raydgm.pipeline.stages`` cache the tables, so each sample's features are computed once and reused
by the density-ratio classifier, FID, KID, IS and the diagnostics.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, get_args

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from tqdm.auto import tqdm

from raydgm.config import Extractor, FeaturesConfig
from raydgm.pipeline import raydata, tables

FEATURES_DIR = "features"
EXTRACTORS: tuple[str, ...] = get_args(Extractor)   # config.Extractor, the names build_extractor knows
Features = tuple[np.ndarray, "np.ndarray | None"]


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, C*H*W) in [0, 1]: flattened pixels, for tests and demos."""
    images = check_uint8(images, "pixels")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def check_uint8(images: Any, who: str) -> np.ndarray:
    """``images`` as a non-empty uint8 (N, C, H, W) array, or a ValueError naming ``who``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{who}: expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{who}: no images")
    return images


class PixelExtractor:
    name, num_classes = "pixels", None

    def __call__(self, images: np.ndarray) -> Features:
        return pixels(images), None


class NetworkExtractor:
    """A trained extractor network's features and, with a class head, logits; in batches, no grad.

    ``domain``: the DomainCNN's penultimate features (N, feature_dim) and class logits;
    ``autoencoder``: the ConvAutoencoder's bottleneck (N, feature_dim) and no logits;
    ``contrastive``: the ContrastiveEncoder's features (N, feature_dim) and no logits.
    """

    def __init__(self, name: str, checkpoint: str | Path, device: str = "cpu", batch_size: int = 200):
        from raydgm.training.extractors import load_network
        self.model = load_network(checkpoint, name, device)
        self.name, self.device, self.batch_size = name, device, batch_size
        self.num_classes = getattr(self.model, "num_classes", None)

    def __call__(self, images: np.ndarray) -> Features:
        images = check_uint8(images, f"{self.name} features")
        feats, logits = [], []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = torch.from_numpy(np.array(images[start:start + self.batch_size])).to(self.device)
                if self.num_classes is None:
                    f, lg = self.model.features(x), None
                else:
                    f, lg = self.model.features_and_logits(x)
                feats.append(f.float().cpu().numpy())
                logits.append(None if lg is None else lg.float().cpu().numpy())
        return np.concatenate(feats), (None if logits[0] is None else np.concatenate(logits))


def build_extractor(name: str, *, domain_checkpoint: str | Path | None = None,
                    autoencoder_checkpoint: str | Path | None = None,
                    contrastive_checkpoint: str | Path | None = None,
                    inception_weights: str | None = None, device: str = "cpu",
                    batch_size: int = 200) -> Callable[[np.ndarray], Features]:
    """The extractor ``name``; ``domain``, ``autoencoder`` and ``contrastive`` need their trained
    network's checkpoint."""
    from raydgm.training.extractors import NETWORKS
    if name == "pixels":
        return PixelExtractor()
    if name in NETWORKS:
        checkpoint = {"domain": domain_checkpoint, "autoencoder": autoencoder_checkpoint,
                      "contrastive": contrastive_checkpoint}[name]
        if checkpoint is None:
            raise ValueError(f"the {name} extractor needs a trained {NETWORKS[name][1]} checkpoint "
                             "(raydgm.pipeline.stages.train_extractor makes one)")
        return NetworkExtractor(name, checkpoint, raydata.resolve_device(device), batch_size)
    if name == "inception":
        from raydgm.pipeline.inception import InceptionExtractor
        return InceptionExtractor(inception_weights, device=raydata.resolve_device(device), batch_size=batch_size)
    raise ValueError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")


def extract(extractor: Callable[[np.ndarray], Features], images: np.ndarray, batch_size: int,
            progress: bool = True, desc: str = "features") -> Features:
    """Run ``extractor`` over ``images`` in chunks of ``batch_size`` with a progress bar."""
    feats, logits = [], []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            f, lg = extractor(images[start:start + batch_size])
            feats.append(f)
            logits.append(lg)
            bar.update(len(f))
    return np.concatenate(feats), (None if logits[0] is None else np.concatenate(logits))


class ExtractBatch:
    """Ray Data callable class: a samples-layout batch -> the features layout.

    Builds the extractor once per actor (``build_extractor(name, **kwargs)``); ``device``, when
    given, replaces ``kwargs``'s.
    """

    def __init__(self, name: str, kwargs: dict[str, Any], device: str | None = None,
                 torch_threads: int | None = None):
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.extractor = build_extractor(name, **kwargs | ({"device": device} if device else {}))

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = np.asarray(batch.column("sample_id").to_numpy(), dtype=np.int64)
        feats, logits = self.extractor(_images(batch.column("image")))
        return tables.features_table(ids, feats, logits)


def _images(column: pa.ChunkedArray) -> np.ndarray:
    """uint8 (N, C, H, W) from a samples table's image column (pyarrow's or Ray's tensor type)."""
    array = column.combine_chunks()
    if isinstance(array.type, pa.FixedShapeTensorType):
        return array.to_numpy_ndarray()
    return np.asarray(array.to_numpy(zero_copy_only=False))   # Ray's ArrowTensorArray


def stage_samples(directory: Path, ids: np.ndarray, images: np.ndarray) -> None:
    """Write (ids, images) as a samples directory (seed -1) of files of at most 10,000 rows:
    one Ray Data block each."""
    directory.mkdir()
    for k, chunk in enumerate(np.array_split(np.arange(len(ids)), max(1, len(ids) // 10_000))):
        tables.write_samples(directory / f"part-{k:06d}.parquet", ids[chunk], np.full(len(chunk), -1), images[chunk])


def extract_to(out_dir: Path, name: str, kwargs: dict[str, Any], cfg: FeaturesConfig,
               samples_dir: Path | None = None, arrays: tuple[np.ndarray, np.ndarray] | None = None,
               progress: bool = True) -> int:
    """Write the features of one image set into ``out_dir/features/``; returns the rows.

    The set is a samples directory (``samples_dir``, generated images) or ``(ids, images)``
    arrays (a real split). Sets of ``cfg.ray_min_rows`` rows or more go through Ray Data (None: none).
    """
    out = out_dir / FEATURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    if samples_dir is not None:
        rows = pads.dataset(samples_dir, format="parquet").count_rows()
    else:
        rows = len(arrays[0])
    if cfg.ray_min_rows is not None and rows >= cfg.ray_min_rows:
        staged = samples_dir is None
        if staged:                                    # stage the arrays for Ray to read
            samples_dir = out_dir / "staged"
            stage_samples(samples_dir, *arrays)
        try:
            _extract_with_ray(samples_dir, out, name, kwargs, cfg)
        finally:
            if staged:
                shutil.rmtree(samples_dir, ignore_errors=True)
        return rows
    if arrays is None:
        ids, _, images = tables.read_samples(samples_dir)
    else:
        ids, images = arrays
    extractor = build_extractor(name, **kwargs)
    feats, logits = extract(extractor, images, cfg.batch_size, progress, desc=f"{name} features")
    return tables.write_features(out / "part-000000.parquet", ids, feats, logits)


def _extract_with_ray(samples_dir: Path, out: Path, name: str, kwargs: dict[str, Any],
                      cfg: FeaturesConfig) -> None:
    with raydata.session() as ray:
        raydata.map_parquet(ray, samples_dir, out, ExtractBatch, cfg, "features", cfg.batch_size,
                            name=name, kwargs=kwargs)
