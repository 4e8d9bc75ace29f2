"""What every fit loop here shares: seeds derived from (seed, purpose, epoch), the image check,
the stop on a non-finite loss, one intra-op thread."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

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
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        where = f"epoch {epoch + 1}" + (f", batch {batch}" if batch is not None else "")
        raise FloatingPointError(f"{what} became {value} at {where}; {hint}")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block (or the decorated function) on one intra-op torch thread; the caller's count
    is restored after.

    One key, one output: on CPU a convolution's weight gradient (oneDNN and the native kernels
    alike) and a large sum are added up in an order that depends on the thread count, so the
    same seed trained on 1, 2, 4 or 8 threads gave weights that differ (by 1e-9 after one step,
    more after many). The fit loops of the conv nets run under this; forward passes (features,
    generation) and the density-ratio MLP gave the same bits on 1, 2, 4 and 8 threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
