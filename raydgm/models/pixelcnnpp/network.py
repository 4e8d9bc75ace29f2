"""The PixelCNN++ network: the up and down passes over three resolutions, the loss and the
autoregressive sampler."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydgm.models.base import GenerativeModel, nan_where_invalid, to_unit
from raydgm.models.pixelcnnpp.cached import sample_cached
from raydgm.models.pixelcnnpp.layers import (
    DownRightShiftedConv2d, DownRightShiftedDeconv2d, DownShiftedConv2d, DownShiftedDeconv2d, GatedResnet,
    down_shift, right_shift)
from raydgm.models.pixelcnnpp.mixture import (
    discretized_mix_logistic_log_prob, params_per_mixture, sample_discretized_mix_logistic)


class PixelCNNpp(GenerativeModel):
    """PixelCNN++ on (C, H, W) images, C in {1, 3}, H and W divisible by 4."""

    def __init__(self, image_shape: tuple[int, int, int], nr_resnet: int = 5, nr_filters: int = 160,
                 nr_logistic_mix: int = 10, dropout: float = 0.5):
        super().__init__()
        C, H, W = image_shape
        if H % 4 or W % 4:
            raise ValueError(f"PixelCNN++ needs H and W divisible by 4, got {image_shape}")
        self.image_shape = tuple(image_shape)
        self.nr_mix = nr_logistic_mix
        nf = nr_filters
        n_out = nr_logistic_mix * params_per_mixture(C)

        def blocks(n: int, conv: type[nn.Module], n_skip: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(nf, conv, n_skip, dropout) for _ in range(n))

        self.u_init = DownShiftedConv2d(C + 1, nf, (2, 3))  # +1: the channel of ones
        self.ul_init_above = DownShiftedConv2d(C + 1, nf, (1, 3))
        self.ul_init_left = DownRightShiftedConv2d(C + 1, nf, (2, 1))
        self.up_u = nn.ModuleList(blocks(nr_resnet, DownShiftedConv2d, 0) for _ in range(3))
        self.up_ul = nn.ModuleList(blocks(nr_resnet, DownRightShiftedConv2d, 1) for _ in range(3))
        self.downsize_u = nn.ModuleList(DownShiftedConv2d(nf, nf, (2, 3), stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv2d(nf, nf, (2, 2), stride=2) for _ in range(2))
        sizes = (nr_resnet, nr_resnet + 1, nr_resnet + 1)
        self.down_u = nn.ModuleList(blocks(n, DownShiftedConv2d, 1) for n in sizes)
        self.down_ul = nn.ModuleList(blocks(n, DownRightShiftedConv2d, 2) for n in sizes)
        self.upsize_u = nn.ModuleList(DownShiftedDeconv2d(nf, nf) for _ in range(2))
        self.upsize_ul = nn.ModuleList(DownRightShiftedDeconv2d(nf, nf) for _ in range(2))
        self.out = nn.Conv2d(nf, n_out, 1)  # the output NIN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float (B, C, H, W) in [-1, 1] -> raw mixture parameters (B, K_out, H, W); the
        output at (i, j) depends only on input pixels strictly before (i, j) in raster order."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # marks image vs zero padding
        us = [down_shift(self.u_init(x))]
        uls = [down_shift(self.ul_init_above(x)) + right_shift(self.ul_init_left(x))]
        for level in range(3):  # up pass: nr_resnet blocks per resolution
            for block_u, block_ul in zip(self.up_u[level], self.up_ul[level]):
                us.append(block_u(us[-1]))
                uls.append(block_ul(uls[-1], us[-1]))
            if level < 2:
                us.append(self.downsize_u[level](us[-1]))
                uls.append(self.downsize_ul[level](uls[-1]))
        u, ul = us.pop(), uls.pop()
        for level in range(3):  # down pass, consuming every up-pass output as a skip input
            if level > 0:
                u, ul = self.upsize_u[level - 1](u), self.upsize_ul[level - 1](ul)
            for block_u, block_ul in zip(self.down_u[level], self.down_ul[level]):
                u = block_u(u, us.pop())
                ul = block_ul(ul, torch.cat([u, uls.pop()], dim=1))
        assert not us and not uls
        return self.out(F.elu(ul))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> (B,) negative log-likelihood in nats per image."""
        x = to_unit(x.to(self.out.weight.device))
        return -discretized_mix_logistic_log_prob(x, self(x)).sum(dim=(1, 2))

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """CPU uniforms in [1e-5, 1-1e-5]: "mix" (n, K, H, W) for the Gumbel-max component
        choice, "logistic" (n, C, H, W) for the logistic draws."""
        C, H, W = self.image_shape
        u_mix = torch.rand(n, self.nr_mix, H, W, generator=generator)
        u_logistic = torch.rand(n, C, H, W, generator=generator)
        return {"mix": u_mix.clamp(1e-5, 1 - 1e-5), "logistic": u_logistic.clamp(1e-5, 1 - 1e-5)}

    @torch.no_grad()
    def decode(self, noise: dict[str, torch.Tensor], sampler: str = "cached") -> torch.Tensor:
        """Autoregressive sampling in raster order -> float (n, C, H, W) integer levels in
        [0, 255]; NaN for samples whose network output was non-finite at any pixel.

        ``sampler="cached"`` (default) evaluates every layer once per position from per-layer
        caches (``raydgm.models.pixelcnnpp.cached``); ``"naive"``, the reference, runs one
        network pass per pixel. Same noise, same levels."""
        if sampler not in ("cached", "naive"):
            raise ValueError(f"decode: sampler must be 'cached' or 'naive', got {sampler!r}")
        device = self.out.weight.device
        u_mix, u_logistic = noise["mix"].to(device), noise["logistic"].to(device)
        n, (C, H, W) = len(u_mix), self.image_shape
        was_training = self.training
        self.eval()
        try:
            if sampler == "cached":
                canvas, seen = sample_cached(self, u_mix, u_logistic)
            else:
                canvas = torch.zeros(n, C, H, W, device=device)
                seen = torch.zeros(n, self.out.out_channels, H, W, device=device)
                for i in range(H):
                    rows = min(H, (i // 4 + 1) * 4)  # causal: rows below i cannot matter
                    for j in range(W):
                        params = self(canvas[:, :, :rows])[:, :, i, j]  # (n, K_out)
                        seen[:, :, i, j] = params
                        canvas[:, :, i, j] = sample_discretized_mix_logistic(
                            params, u_mix[:, :, i, j], u_logistic[:, :, i, j])
        finally:
            self.train(was_training)
        return nan_where_invalid(torch.round((canvas + 1) * 127.5), seen)
