"""What every fit loop here shares: seeds derived from (seed, purpose, epoch), the image check,
the stop on a non-finite loss."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from raydgm.data import check_images


def derived_seed(*words: int) -> int:
    """A 63-bit torch seed from (seed, purpose[, epoch]); the fit loops use init 0, training 1,
    validation 2."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0] >> 1)


def checked_images(images: np.ndarray, where: str) -> np.ndarray:
    """``images`` (uint8 (N, C, H, W), checked by ``data.check_images``) as a contiguous array."""
    check_images(images, where)
    return np.ascontiguousarray(images)


def check_finite_loss(loss: Any, what: str, epoch: int, hint: str, batch: int | None = None) -> None:
    """FloatingPointError naming ``what`` (e.g. "training loss"), the 0-based ``epoch`` (shown
    1-based), the batch and ``hint`` unless the float / 0-d tensor ``loss`` is finite."""
    value = float(loss)
    if not math.isfinite(value):
        where = f"epoch {epoch + 1}" + (f", batch {batch}" if batch is not None else "")
        raise FloatingPointError(f"{what} became {value} at {where}; {hint}")
