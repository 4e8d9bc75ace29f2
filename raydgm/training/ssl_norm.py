"""The semi-supervised trainer's BatchNorm handling: the unlabeled pass normalized with the
labeled pass's batch statistics (``labeled_statistics``), and evaluation statistics
recomputed from labeled images under the current weights (``recompute_batch_norm``)."""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F


def _remember_batch_norm(m: torch.nn.BatchNorm2d, stats: dict, x: torch.Tensor) -> torch.Tensor:
    """``m``'s own train-mode forward of (B, C, H, W) ``x``, keeping x's batch mean and biased
    variance (with their gradients) in ``stats[m]``."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)                        # (1, C, 1, 1)
    centered = x - mean
    stats[m] = (centered * centered).mean(dim=(0, 2, 3), keepdim=True), mean   # torch.var_mean: 10x slower on CPU
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, True, m.momentum, m.eps)


def _reuse_batch_norm(m: torch.nn.BatchNorm2d, stats: dict, x: torch.Tensor) -> torch.Tensor:
    """(B_u, C, H, W) ``x`` normalized with the statistics ``stats[m]`` of the labeled pass."""
    var, mean = stats[m]
    scale = m.weight.view(1, -1, 1, 1) * torch.rsqrt(var + m.eps)
    return torch.addcmul(m.bias.view(1, -1, 1, 1) - mean * scale, x, scale)


@contextlib.contextmanager
def labeled_statistics(model: torch.nn.Module) -> Iterator[Callable[[], None]]:
    """Two passes through ``model`` (train mode) in which the second (unlabeled) is normalized by
    every BatchNorm2d with the batch statistics of the first (the labeled real images), and
    only the first updates the running statistics. Yields a function to call between them.

    So the unlabeled rows pass through the function the labeled ones do (and that eval mode,
    normalizing with real images' statistics, approximates): gradients reach the weights
    through the labeled statistics, and a weight-0 arm trains exactly as supervised-only.
    Measured on mnist5k, 100 labels, 2 seeds, evaluated with recomputed statistics: weight 0.5
    fell at most 0.02 below its best val accuracy in a later epoch (0.058 with each pass
    normalized by its own batch statistics; same best val accuracy, 0.89-0.91); the unlabeled
    pass in eval mode collapsed to one class (val 0.13 at every epoch); generated images in the
    running statistics collapsed val accuracy to 0.28 at 1,000 labels (an earlier version).
    Two passes of 32 images ran faster on CPU than one pass of 64 with these statistics when the
    model was contiguous (21.4 vs 18.3 steps/s, ResNet-8 width 8, 32x32, 1 thread). In
    channels_last (now) a one-pass version with hand-written normalization was about 5% faster
    (25.1-25.5 vs 23.9-24.1 steps/s, bench/README.md); not taken, as it changes every trained
    weight's last bits.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    for m in layers:
        m.forward = functools.partial(_remember_batch_norm, m, stats)

    def unlabeled_pass() -> None:
        for m in layers:
            m.forward = functools.partial(_reuse_batch_norm, m, stats)
    try:
        yield unlabeled_pass
    finally:
        for m in layers:
            del m.forward


_BN_IMAGES = 4096   # at most this many labeled images set the evaluation statistics


def bn_rows(labeled: np.ndarray) -> np.ndarray:
    """Evenly spaced rows of the labeled subset, at most ``_BN_IMAGES``: int64 into the train split."""
    return labeled[::math.ceil(len(labeled) / _BN_IMAGES)]


@torch.no_grad()
def recompute_batch_norm(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Replace every BatchNorm's running statistics with those of uint8 (N, C, H, W) ``images``
    under the current weights: the average over passes of ``batch_size`` images of each batch's
    mean and unbiased variance, passes of near-equal size ("precise BN", Wu & Johnson 2021, Sec. 3.1); no augmentation.

    The running statistics are only what eval mode normalizes with (training normalizes with
    batch statistics), so this changes no training step. The exponential moving average
    (momentum 0.1) they replace lags the weights: measured on mnist5k, 100 labels, semantic
    weight 0.05, val accuracy fell 0.88 -> 0.52 in one epoch with the moving average while the
    same weights scored 0.87 with statistics recomputed like this (see ``labeled_statistics``).
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None                        # cumulative average over the passes
    model.train()
    try:
        for batch in torch.tensor_split(images, math.ceil(len(images) / batch_size)):   # equal sizes +-1
            model(batch)
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum
        model.eval()
