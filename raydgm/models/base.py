"""The protocol every generator follows (``GenerativeModel``) and the helpers the models share.

See ``raydgm.models`` for the protocol; this module imports only torch.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class GenerativeModel(nn.Module):
    """Base class of raydgm's generators; subclasses set ``image_shape`` and implement the protocol."""

    image_shape: tuple[int, int, int]   # (C, H, W)

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def truth(self, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Per-sample known truth (the known-bias generators' true log-weights); None: unknown."""
        return None

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """uint8 (n, C, H, W); raises ValueError if any generated value is NaN or Inf."""
        return to_uint8(self.decode(self.draw_noise(n, generator)))

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) ``loss(x)`` in bits per sub-pixel: nats / (C*H*W*ln 2)."""
        return self.loss(x) / (math.prod(self.image_shape) * math.log(2.0))


def finite_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> bool (N,): True where every value of row n is finite."""
    return torch.isfinite(t).flatten(1).all(dim=1)


def to_uint8(levels: torch.Tensor) -> torch.Tensor:
    """Float pixel levels in [0, 255] -> uint8; a non-finite value is an error, not a pixel."""
    bad = ~finite_rows(levels)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(levels)} generated images hold NaN or Inf")
    return levels.round().clamp(0, 255).to(torch.uint8)


def checked_conv_args(image_shape: tuple[int, ...], channels: tuple[int, ...]
                      ) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """(C, H, W) and the conv channel counts as ints, or a ValueError naming the bad one."""
    C, H, W = (int(s) for s in image_shape)
    channels = tuple(int(c) for c in channels)
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    if not channels or min(channels) < 1:
        raise ValueError(f"channels must list at least one positive count, got {channels}")
    return (C, H, W), channels


def check_batch_shape(x: torch.Tensor, image_shape: tuple[int, int, int]) -> None:
    """ValueError unless ``x`` is a batch (N, C, H, W) of images of ``image_shape`` (C, H, W)."""
    if tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, image_shape))}), "
                         f"got {tuple(x.shape)}")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (the models' input scale)."""
    return x.float() / 127.5 - 1.0


def nan_where_invalid(levels: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """Set a sample's levels to NaN wherever any of its parameters is non-finite.

    Sampling steps like ``u < p`` or ``clamp`` turn NaN parameters into valid-looking
    pixels; this keeps the evidence so the generation stage can count or drop the sample.
    """
    bad = torch.zeros(len(levels), dtype=torch.bool, device=levels.device)
    for p in params:
        bad |= ~finite_rows(p)
    return torch.where(bad.view(-1, 1, 1, 1), torch.full_like(levels, float("nan")), levels)


def discretized_logistic_logpmf(
    levels: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Elementwise log P(level) of a logistic discretized to 256 bins (Salimans et al. 2017, eq. 2).

    levels: integer-valued 0..255 (any float/int dtype); mean, log_scale: float, same shape
    (broadcastable), on the [-1, 1] scale where level k sits at x_k = 2k/255 - 1. With
    a = (x_k + 1/255 - mean)/s, b = (x_k - 1/255 - mean)/s and s = exp(log_scale):
        P(0)   = sigmoid(a),   P(255) = 1 - sigmoid(b) = sigmoid(-b),
        P(k)   = sigmoid(a) - sigmoid(b)
               = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a))   (exact; no cancellation),
    so the 256 probabilities sum to 1 for any mean and scale. ``log_scale`` is used as given
    (the models clamp it at -7 before calling).
    """
    x = levels.to(mean.dtype) / 127.5 - 1.0
    inv_s = torch.exp(-log_scale)
    a = (x - mean + 1.0 / 255) * inv_s
    b = (x - mean - 1.0 / 255) * inv_s
    log_width = torch.log(-torch.expm1(-(2.0 / 255) * inv_s))   # log(1 - exp(b - a))
    interior = F.logsigmoid(a) + F.logsigmoid(-b) + log_width
    return torch.where(levels == 0, F.logsigmoid(a), torch.where(levels == 255, F.logsigmoid(-b), interior))
