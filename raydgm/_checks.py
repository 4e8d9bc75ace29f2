"""The checks every loader and trainer applies to image and label arrays (``raydgm.data``
re-exports them): a bad array fails with a message that names it and says what was found."""
from __future__ import annotations

from typing import Any

import numpy as np


def _is_int_dtype(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype != np.bool_


def check_images(images: Any, where: str) -> None:
    """Raise unless ``images`` is a non-empty uint8 (N, C, H, W) array with C in {1, 3}."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{where}: images must be a numpy array, found {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must have dtype uint8 (0..255), found {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape:
        channels_last = images.ndim == 4 and images.shape[-1] in (1, 3)
        hint = "; it looks channels-last, transpose to (N, C, H, W)" if channels_last else ""
        raise ValueError(f"{where}: images must have shape (N, C, H, W) with C in {{1, 3}} and N, H, W > 0, "
                         f"found {images.shape}{hint}")


def check_labels(labels: Any, n: int, where: str, num_classes: int | None = None) -> np.ndarray:
    """``labels`` as int64 (n,) after checking dtype, length and values: >= 0, and below
    ``num_classes`` when given. ``where`` names the labels in the error (``"npz file x: labels"``)."""
    labels = np.asarray(labels)
    expected = f"{where} must be an integer array of shape ({n},) matching the images"
    if not _is_int_dtype(labels.dtype):
        raise ValueError(f"{expected} (they must have an integer dtype, found {labels.dtype})")
    if labels.shape != (n,):
        raise ValueError(f"{expected} (labels length mismatch: expected shape ({n},), found {labels.shape})")
    if not labels.size:
        return labels.astype(np.int64)
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where} must be in 0..{num_classes - 1}, found "
                         f"{int(labels.min())}..{int(labels.max())}")
    if labels.min() < 0:
        raise ValueError(f"{where}: label values must be >= 0, found {int(labels.min())}; "
                         "omit labels for unlabeled data")
    return labels.astype(np.int64)
