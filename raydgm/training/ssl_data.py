"""The arrays a semi-supervised trial needs (``SSLData``), checked when built: the sweep ships
one instance to every trial through Ray's object store, so a bad field fails on the driver."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raydgm._names import RESAMPLE_METHODS
from raydgm.data import check_images, check_labels


@dataclass(frozen=True, eq=False)
class SSLData:
    """Everything a trial needs as numpy arrays (the sweep ships one instance through Ray's
    object store). Construction checks every field and names the bad one in a ValueError.

    Attributes:
        train_images, val_images, test_images: uint8 (N, C, H, W), C in {1, 3}, N >= 1, one
            (C, H, W) for all; train_labels, ...: int (N,) in 0..num_classes-1, kept as int64.
        num_classes: K >= 2.
        generated: uint8 (M, C, H, W) raw generated samples, the real images' (C, H, W).
        log_weights: finite float, M entries (kept as float64 (M,)): log w of ``generated``
            (the resample stage's used weights: flattened, smoothed, clipped).
        sir_method: the SIR scheme (``raydgm.resample.METHODS``) of the per-seed draw of the
            ``resampled`` and ``subset`` sources (``ssl_batches.sir_draw``).
        sir_size: draws per SIR set, >= 1; None: M (as many as the pool).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    generated: np.ndarray | None = None
    log_weights: np.ndarray | None = None
    sir_method: str = "systematic"
    sir_size: int | None = None

    def __post_init__(self) -> None:
        k = self.num_classes
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
            raise ValueError(f"SSLData.num_classes must be an int >= 2, got {k!r}")
        shape = None
        for split in ("train", "val", "test"):
            images = getattr(self, f"{split}_images")
            check_images(images, f"SSLData.{split}_images")
            shape = shape or images.shape[1:]
            if images.shape[1:] != shape:
                raise ValueError(f"SSLData.{split}_images: image shape {images.shape[1:]} differs "
                                 f"from train_images' {shape}")
            labels = check_labels(getattr(self, f"{split}_labels"), len(images),
                                  f"SSLData.{split}_labels", num_classes=int(k))
            object.__setattr__(self, f"{split}_labels", labels)
        self._check_generated(shape)

    def _check_generated(self, shape: tuple[int, ...]) -> None:
        if self.generated is None:
            if self.log_weights is not None:
                raise ValueError("SSLData.log_weights is given without SSLData.generated")
            return
        check_images(self.generated, "SSLData.generated")
        m = len(self.generated)
        if self.generated.shape[1:] != shape:
            raise ValueError(f"SSLData.generated: image shape {self.generated.shape[1:]} differs "
                             f"from the real images' {shape}")
        if self.log_weights is not None:
            lw = np.asarray(self.log_weights).reshape(-1)
            if not np.issubdtype(lw.dtype, np.number) or lw.size != m:
                raise ValueError(f"SSLData.log_weights has {lw.size} {lw.dtype} entries for {m} "
                                 "generated images; expected floats")
            if not np.isfinite(lw).all():
                raise ValueError(f"SSLData.log_weights: {int((~np.isfinite(lw)).sum())} of {m} "
                                 "entries are NaN or infinite")
            object.__setattr__(self, "log_weights", lw.astype(np.float64, copy=False))
        if self.sir_method not in RESAMPLE_METHODS:
            raise ValueError(f"SSLData.sir_method {self.sir_method!r} is not one of {', '.join(RESAMPLE_METHODS)}")
        size = self.sir_size
        if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
            raise ValueError(f"SSLData.sir_size must be an int >= 1 or None, got {size!r}")
