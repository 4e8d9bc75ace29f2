"""Feature extractors: images -> (N, D) float features shared by every downstream stage.

So far only ``pixels``; the Inception and domain-CNN extractors build on this module.
"""
from __future__ import annotations

import numpy as np


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 (N, C*H*W) in [0, 1]: flattened pixels, for tests and demos."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"pixels: expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("pixels: no images")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


EXTRACTORS = {"pixels": pixels}
