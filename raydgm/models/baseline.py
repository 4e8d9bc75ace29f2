"""PCA + Gaussian mixture as a generator module (parameters fitted by ``raydgm.training.generators.fit_baseline``).

A sample is ``x = mean + (mu_c + L_c eps) @ components`` with the component ``c`` chosen by
Gumbel-max over the mixture's log-weights and ``eps ~ N(0, I_P)``; pixels are clipped to
[0, 1] and quantized to 256 levels. Computed in float64 so that a sample's levels do not
depend on the batch it is decoded in.
"""
from __future__ import annotations

import torch

from raydgm.models.base import GenerativeModel, nan_where_invalid


class PCAGaussianMixture(GenerativeModel):
    """A Gaussian mixture in the span of ``pca_dim`` principal components of the pixels."""

    def __init__(self, image_shape: tuple[int, int, int], pca_dim: int = 32, n_components: int = 10):
        super().__init__()
        self.image_shape = tuple(image_shape)
        d = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        p, k = min(pca_dim, d), n_components
        f64 = dict(dtype=torch.float64)
        self.register_buffer("mean", torch.zeros(d, **f64))               # (D,) in [0, 1]
        self.register_buffer("components", torch.zeros(p, d, **f64))      # (P, D)
        self.register_buffer("log_mix", torch.full((k,), -torch.log(torch.tensor(float(k))).item(), **f64))
        self.register_buffer("mix_means", torch.zeros(k, p, **f64))       # (K, P)
        self.register_buffer("mix_chol", torch.eye(p, **f64).repeat(k, 1, 1))  # (K, P, P)

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        k, p = self.mix_means.shape
        u = torch.rand(n, k, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return {"u": u, "eps": torch.randn(n, p, generator=generator, dtype=torch.float64)}

    @torch.no_grad()
    def decode(self, noise: dict[str, torch.Tensor]) -> torch.Tensor:
        u, eps = (noise[k].to(self.mean.device, torch.float64) for k in ("u", "eps"))
        comp = (self.log_mix - torch.log(-torch.log(u))).argmax(dim=1)          # (N,) Gumbel-max
        z = self.mix_means[comp] + (self.mix_chol[comp] @ eps.unsqueeze(-1)).squeeze(-1)  # (N, P)
        x = (z.unsqueeze(1) @ self.components).squeeze(1) + self.mean           # (N, D), row by row
        levels = (x.clamp(0.0, 1.0) * 255.0).round().view(len(x), *self.image_shape)
        return nan_where_invalid(levels.float(), x.view_as(levels))
