"""The ``domain`` feature extractor's network: a small CNN classifier of real images.

Per entry of ``channels`` one block conv3x3 (padding 1) -> ReLU -> MaxPool2d(2), the pool
left out once it would take the spatial size below 2 (so 8x8 digits get 8 -> 4 -> 2);
then flatten -> Linear(feature_dim) -> ReLU -> Linear(num_classes). The ReLU output of the
penultimate layer is "the features" (FID/KID/precision-recall); the softmax of the logits
gives an Inception-Score analogue. No dropout or batch norm: in eval and train mode alike
the outputs are a deterministic function of the input, and each row depends only on its
own image.

Inputs are raw pixel levels, uint8 or float (N, C, H, W) in [0, 255]; the model casts and
normalizes them itself: x -> (x / 255 - 0.5) / 0.5, in [-1, 1].

Imports only torch.
"""
from __future__ import annotations

import torch
from torch import nn

from raydgm.models.base import check_batch_shape


class DomainCNN(nn.Module):
    """Conv blocks -> features (N, feature_dim), nonnegative -> logits (N, num_classes)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int,
                 channels: tuple[int, ...] = (32, 64), feature_dim: int = 128) -> None:
        super().__init__()
        C, H, W = (int(s) for s in image_shape)
        channels = tuple(int(c) for c in channels)
        if C < 1 or H < 1 or W < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must list at least one positive count, got {channels}")
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.image_shape = (C, H, W)
        self.num_classes, self.channels, self.feature_dim = int(num_classes), channels, int(feature_dim)
        blocks: list[nn.Module] = []
        h, w = H, W
        for c_in, c_out in zip((C,) + channels[:-1], channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if min(h, w) // 2 >= 2:   # pool only while the map stays at least 2x2
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.conv = nn.Sequential(*blocks, nn.Flatten())
        self.to_features = nn.Sequential(nn.Linear(channels[-1] * h * w, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def constructor_kwargs(self) -> dict[str, object]:
        """The keyword arguments (besides ``image_shape``) that rebuild this network."""
        return {"num_classes": self.num_classes, "channels": list(self.channels),
                "feature_dim": self.feature_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels in [0, 255] -> float (N, feature_dim), >= 0."""
        check_batch_shape(x, self.image_shape)
        x = (x.to(self.head.weight.dtype) / 255.0 - 0.5) / 0.5   # levels -> [-1, 1]
        return self.to_features(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) -> logits (N, num_classes)."""
        return self.head(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ((N, feature_dim) features, (N, num_classes) logits)."""
        feats = self.features(x)
        return feats, self.head(feats)
