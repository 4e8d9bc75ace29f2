"""The two pieces of contrastive (SimCLR) training: random distortions and the NT-Xent loss.

- ``random_affine``: each image rotated by up to ``max_rotation`` degrees, scaled by a factor in
  [1 - max_scale, 1 + max_scale] and shifted by up to ``max_shift`` of its side in x and y,
  all uniform and independent per image, by bilinear resampling (zeros outside). Digits are
  not flipped: a flip changes their meaning.
- ``nt_xent``: the normalized-temperature cross-entropy of Chen et al. (2020). For 2B
  projections where rows i and i + B are two views of one image, with s(u, v) the cosine
  similarity, the loss of row i is -log(exp(s(z_i, z_j) / t) / sum_{k != i} exp(s(z_i, z_k) / t))
  with j its partner; the mean over the 2B rows is returned.

Imports only torch.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, max_rotation: float,
                  max_scale: float, max_shift: float) -> torch.Tensor:
    """float (N, C, H, W) -> float (N, C, H, W): one random affine distortion per image."""
    n = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator, device=x.device) * 2 - 1).to(x.dtype)
    angle = uniform(n) * math.radians(max_rotation)
    scale = 1 + uniform(n) * max_scale
    shift = uniform(n, 2) * (2 * max_shift)            # grid coordinates span 2 per side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The mean NT-Xent loss of (2B, D) projections, rows i and i + B two views of one image."""
    if z.ndim != 2 or z.shape[0] % 2 or z.shape[0] < 2:
        raise ValueError(f"nt_xent needs (2B, D) projections with B >= 1, got {tuple(z.shape)}")
    b = z.shape[0] // 2
    z = F.normalize(z, dim=1)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, partner)
