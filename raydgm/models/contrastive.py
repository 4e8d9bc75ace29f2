"""The ``contrastive`` feature extractor's network: an encoder of real images trained without
labels to give two random distortions of one image nearby features (SimCLR, Chen et al. 2020).

Encoder: per entry of ``channels`` one conv3x3 (padding 1, stride 2 while that keeps the map at
least 2x2, else 1) -> BatchNorm -> ReLU; then flatten -> Linear(feature_dim): "the features".
Projection head (used only by the training loss): ReLU -> Linear(projection_dim). No dropout;
in eval mode BatchNorm uses its running statistics, so each row's features depend only on its
own image.

Inputs are raw pixel levels, uint8 or float (N, C, H, W) in [0, 255]; the encoder sees
x / 127.5 - 1 in [-1, 1].

Imports only torch.
"""
from __future__ import annotations

import torch
from torch import nn

from raydgm.models.base import check_batch_shape, checked_conv_args


class ContrastiveEncoder(nn.Module):
    """uint8 (N, C, H, W) -> features (N, feature_dim); ``forward``: the projections (N, projection_dim)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...] = (32, 64, 128),
                 feature_dim: int = 64, projection_dim: int = 64) -> None:
        super().__init__()
        (C, H, W), channels = checked_conv_args(image_shape, channels)
        if feature_dim < 1 or projection_dim < 1:
            raise ValueError(f"feature_dim and projection_dim must be >= 1, got {feature_dim}, {projection_dim}")
        self.image_shape, self.channels = (C, H, W), channels
        self.feature_dim, self.projection_dim = int(feature_dim), int(projection_dim)
        layers: list[nn.Module] = []
        h, w = H, W
        for c_in, c_out in zip((C,) + channels[:-1], channels):
            stride = 2 if min(h, w) // 2 >= 2 else 1
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * h * w, self.feature_dim))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(self.feature_dim, self.projection_dim))

    def constructor_kwargs(self) -> dict[str, object]:
        """The keyword arguments (besides ``image_shape``) that rebuild this network."""
        return {"channels": list(self.channels), "feature_dim": self.feature_dim,
                "projection_dim": self.projection_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels in [0, 255] -> float (N, feature_dim)."""
        check_batch_shape(x, self.image_shape)
        return self.encoder(x.to(self.head[1].weight.dtype) / 127.5 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels -> float (N, projection_dim): what the loss compares."""
        return self.head(self.features(x))
