"""Convolutional VAE (Kingma & Welling, 2014) on uint8 images.

Encoder: L conv layers (kernel 4, stride 2, padding 1, ReLU) -> flatten -> linear heads
for mu and logvar of q(z|x) = N(mu, diag(exp(logvar))). Decoder: Linear(latent_dim, .) ->
ReLU -> reshape to (hidden_channels[-1], H/2^L, W/2^L) -> L transposed convs mirroring the
encoder (ReLU between) -> per-pixel parameters of p(x|z). Prior p(z) = N(0, I).

Loss (nats per image) = -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z))   (K&W 2014, eq. 10),
the expectation estimated with one reparameterized draw z = mu + exp(logvar/2) * eps.

Imports only torch, math and typing (plus the protocol in ``raydgm.models``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raydgm.models.base import (GenerativeModel, check_batch_shape, discretized_logistic_logpmf, nan_where_invalid,
                           to_unit)

LIKELIHOODS = ("bernoulli", "logistic")
MIN_LOG_SCALE = -7.0
NOISE_CLAMP = 1e-5


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) KL(N(mu, diag exp(logvar)) || N(0, I)) = 1/2 sum_j (mu_j^2 + e^logvar_j - 1 - logvar_j).

    mu, logvar: float (B, D). Kingma & Welling 2014, appendix B.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def rowwise_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, K) @ weight.T + bias -> (B, N), each row bitwise independent of the other rows.

    h = b + x_1 w_1 + ... + x_K w_K accumulated in a fixed order with separate elementwise
    mul and add (each correctly rounded), so the result does not depend on B, BLAS or SIMD
    tails. About 6x slower than gemm; used only on the generation path.
    """
    w_rows = weight.t().contiguous()   # (K, N)
    h = bias.expand(len(x), -1).clone()
    for k in range(w_rows.shape[0]):
        h.add_(x[:, k : k + 1] * w_rows[k])
    return h


class VAE(GenerativeModel):
    """Convolutional VAE with a Bernoulli or discretized-logistic pixel likelihood.

    likelihood="logistic": the decoder gives (n, 2C, H, W) = per-pixel mean (unconstrained,
        on the [-1, 1] scale) and log-scale (clamped below at -7) of a discretized logistic
        over the 256 levels: a normalized distribution, so bits/dim is a real code length.
    likelihood="bernoulli": the decoder gives (n, C, H, W) logits; the loss is binary
        cross-entropy against continuous targets x/255. That is NOT a normalized likelihood
        of grey levels, so its bits/dim is not comparable with the logistic model's.
    pixel_noise: sample pixels from p(x|z) (True) or output its mean (False).
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 180,
                 hidden_channels: tuple[int, ...] = (64, 128, 256), likelihood: str = "logistic",
                 pixel_noise: bool = True) -> None:
        super().__init__()
        C, H, W = (int(s) for s in image_shape)
        L = len(hidden_channels)
        if C not in (1, 3):
            raise ValueError(f"VAE needs 1 or 3 image channels, got C={C}")
        if L < 1 or H % 2**L or W % 2**L or H < 2**L or W < 2**L:
            raise ValueError(
                f"VAE with {L} stride-2 layers needs H and W divisible by 2**{L}={2**L}, got H={H}, W={W}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; known: {', '.join(LIKELIHOODS)}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.image_shape = (C, H, W)
        self.latent_dim, self.likelihood, self.pixel_noise = latent_dim, likelihood, pixel_noise
        h, w, top = H // 2**L, W // 2**L, hidden_channels[-1]
        enc: list[nn.Module] = []
        for c_in, c_out in zip((C,) + tuple(hidden_channels[:-1]), hidden_channels):
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.to_mu = nn.Linear(top * h * w, latent_dim)
        self.to_logvar = nn.Linear(top * h * w, latent_dim)
        out_channels = 2 * C if likelihood == "logistic" else C
        dec: list[nn.Module] = [nn.Linear(latent_dim, top * h * w), nn.ReLU(), nn.Unflatten(1, (top, h, w))]
        rev = tuple(reversed(hidden_channels))
        for i, (c_in, c_out) in enumerate(zip(rev, rev[1:] + (out_channels,))):
            dec.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < L - 1:
                dec.append(nn.ReLU())
        self.decoder = nn.Sequential(*dec)   # decoder[0] is Linear(latent_dim, .), decoder[1] ReLU

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) -> (mu, logvar), float (B, latent_dim) each."""
        check_batch_shape(x, self.image_shape)
        hidden = self.encoder(to_unit(x))
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode_params(self, z: torch.Tensor, batch_invariant: bool = False) -> torch.Tensor:
        """float (B, latent_dim) -> (B, 2C, H, W) [mean; raw log-scale] or (B, C, H, W) logits.

        batch_invariant: compute the first Linear with :func:`rowwise_linear`, so each row is
        bitwise the same whatever the batch size (BLAS picks gemv for B=1 and differently
        blocked gemm kernels for small B, which changes float32 rounding by ~1e-7).
        """
        if not batch_invariant:
            return self.decoder(z)
        first = self.decoder[0]
        return self.decoder[1:](rowwise_linear(z, first.weight, first.bias))

    def nll_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B,) -log p(x|z) in nats, summed over pixels; x uint8 (B, C, H, W), z (B, latent_dim)."""
        params = self.decode_params(z)
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(params, x.to(params.dtype) / 255.0, reduction="none")
        else:
            mean, log_scale = self._split(params)
            nll = -discretized_logistic_logpmf(x, mean, log_scale)
        return nll.flatten(1).sum(dim=1)

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon, kl), each (B,) nats: one-draw estimate of E_q[-log p(x|z)] and analytic KL.

        eps ~ N(0, I) comes from torch's default RNG (training noise, never the generation path).
        """
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.nll_given_z(x, z), gaussian_kl(mu, logvar)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) negative ELBO in nats per image (an upper bound on -log p(x), in expectation)."""
        recon, kl = self.elbo_terms(x)
        return recon + kl

    def draw_noise(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"z": (n, latent_dim) N(0, 1), "u": (n, C, H, W) U(1e-5, 1 - 1e-5)}, on the CPU, z drawn first."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        u = torch.rand(n, *self.image_shape, generator=generator).clamp(NOISE_CLAMP, 1.0 - NOISE_CLAMP)
        return {"z": z, "u": u}

    @torch.no_grad()
    def decode(self, noise: dict[str, Any]) -> torch.Tensor:
        """float (n, C, H, W) integer-valued levels in [0, 255]; NaN for a sample whose params are not finite.

        logistic: x = mean + s * (log u - log(1 - u)) (inverse logistic CDF), clamped to [-1, 1],
        level = round((x + 1) * 127.5). bernoulli: level = 255 * [u < sigmoid(logit)].
        Without pixel_noise: the mean (clamped mean, or round(255 * sigmoid(logit))).
        The first layer runs through :func:`rowwise_linear`; on CPU the transposed convs are
        also per-sample, so a sample's levels are bitwise the same in any batch (tested).
        """
        device = next(self.parameters()).device
        z, u = noise["z"].to(device), noise["u"].to(device)
        params = self.decode_params(z, batch_invariant=True)
        if self.likelihood == "bernoulli":
            p = torch.sigmoid(params)
            levels = (u < p).to(p.dtype) * 255.0 if self.pixel_noise else torch.round(p * 255.0)
        else:
            mean, log_scale = self._split(params)
            x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u)) if self.pixel_noise else mean
            levels = torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5)
        return nan_where_invalid(levels, params)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2C, H, W) -> mean (B, C, H, W), log-scale clamped at MIN_LOG_SCALE (B, C, H, W)."""
        mean, raw = params.chunk(2, dim=1)
        return mean, raw.clamp(min=MIN_LOG_SCALE)
