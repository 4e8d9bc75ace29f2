"""The ``autoencoder`` feature extractor's network: a small conv autoencoder of real images,
trained without labels.

Encoder: per entry of ``channels`` one conv3x3 (padding 1) -> ReLU, with stride 2 while that
keeps the map at least 2x2 and stride 1 after (so 8x8 digits get 8 -> 4 -> 2, 32x32 images
32 -> 16 -> 8 with two entries); then flatten -> Linear(feature_dim): the bottleneck ``z``,
"the features" (linear, no activation, so no unit is dead). Decoder, the mirror image:
Linear -> ReLU -> unflatten -> one transposed conv3x3 per encoder layer (same strides; the
output padding restores odd sizes exactly), ReLU between -> (N, C, H, W) logits, whose
sigmoid is the reconstruction in [0, 1]. No dropout or batch norm: in eval and train mode
alike the outputs are a deterministic function of the input, and each row depends only on
its own image.

Inputs are raw pixel levels, uint8 or float (N, C, H, W) in [0, 255]; the encoder sees
x / 127.5 - 1 in [-1, 1], the reconstruction targets x / 255 in [0, 1].

Imports only torch.
"""
from __future__ import annotations

import torch
from torch import nn

from raydgm.models.base import check_batch_shape, checked_conv_args


class ConvAutoencoder(nn.Module):
    """uint8 (N, C, H, W) -> bottleneck features (N, feature_dim) -> reconstruction in [0, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, ...] = (8, 16),
                 feature_dim: int = 32) -> None:
        super().__init__()
        (C, H, W), channels = checked_conv_args(image_shape, channels)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.image_shape, self.channels, self.feature_dim = (C, H, W), channels, int(feature_dim)
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        h, w = H, W
        for c_in, c_out in zip((C,) + channels[:-1], channels):
            stride = 2 if min(h, w) // 2 >= 2 else 1   # stride 2 only while the map stays >= 2x2
            enc += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
            # conv: h -> ceil(h / 2); transposed conv: ceil(h / 2) -> 2 ceil(h / 2) - 1 + pad = h
            pad = (int(h % 2 == 0), int(w % 2 == 0)) if stride == 2 else (0, 0)
            dec = [nn.ConvTranspose2d(c_out, c_in, 3, stride=stride, padding=1, output_padding=pad),
                   nn.ReLU()] + dec
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        flat = channels[-1] * h * w
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, self.feature_dim))
        self.decoder = nn.Sequential(nn.Linear(self.feature_dim, flat), nn.ReLU(),
                                     nn.Unflatten(1, (channels[-1], h, w)), *dec[:-1])  # logits: no last ReLU

    def constructor_kwargs(self) -> dict[str, object]:
        """The keyword arguments (besides ``image_shape``) that rebuild this network."""
        return {"channels": list(self.channels), "feature_dim": self.feature_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels in [0, 255] -> float (N, feature_dim): the bottleneck."""
        check_batch_shape(x, self.image_shape)
        return self.encoder(x.to(self.decoder[0].weight.dtype) / 127.5 - 1.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """float (N, feature_dim) -> (N, C, H, W) logits of the reconstruction."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float (N, C, H, W) levels -> float (N, C, H, W) reconstruction in [0, 1]."""
        return torch.sigmoid(self.decode_logits(self.features(x)))
