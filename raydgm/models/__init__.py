"""Generative models: each is one ``nn.Module`` that imports only torch.

Every generator follows the same small protocol (``GenerativeModel``) so that training,
generation and the Ray Data stage treat them alike:

- ``draw_noise(n, generator) -> dict[str, Tensor]``: all randomness for ``n`` samples,
  drawn on the CPU from one ``torch.Generator`` (leading dim ``n``). The generation stage
  calls it with ``n=1`` and a generator seeded from ``(base_seed, sample_id)``, so sample i
  is the same image whatever the batch size, number of actors or machine.
- ``decode(noise) -> float (n, C, H, W)``: deterministic given the noise; integer-valued
  pixel levels in [0, 255], NaN where the model produced a non-finite value (never a
  silently clipped NaN).
- ``sample(n, generator) -> uint8 (n, C, H, W)``: both of the above, failing on NaN.
- ``loss(x) -> (B,)``: negative log-likelihood (or its ELBO bound) in nats per image of
  uint8 images ``x``; ``bits_per_dim`` converts it.
- ``truth(noise) -> dict[str, Tensor] | None``: what is known about each sample (the
  known-bias generators of ``known_bias``: its true log-weight, class and source row).

The protocol and the helpers the models share live in ``base``; ``build`` makes a model by kind.
"""
from __future__ import annotations

from typing import Any

from raydgm.models.base import (GenerativeModel, check_batch_shape, discretized_logistic_logpmf, finite_rows,
                                nan_where_invalid, to_uint8, to_unit)

__all__ = ["GenerativeModel", "build", "check_batch_shape", "discretized_logistic_logpmf", "finite_rows",
           "nan_where_invalid", "to_uint8", "to_unit"]


def build(kind: str, image_shape: tuple[int, int, int], **kwargs: Any) -> GenerativeModel:
    """A fresh model of ``kind`` for images of ``image_shape`` (C, H, W)."""
    from raydgm.models.baseline import PCAGaussianMixture
    from raydgm.models.known_bias import ContaminatedCopies, SkewedCopies
    from raydgm.models.pixelcnnpp import PixelCNNpp
    from raydgm.models.vae import VAE
    kinds: dict[str, type[GenerativeModel]] = {
        "baseline": PCAGaussianMixture, "vae": VAE, "pixelcnnpp": PixelCNNpp, "skewed": SkewedCopies,
        "contaminated": ContaminatedCopies}
    if kind not in kinds:
        raise ValueError(f"unknown generator kind {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind](image_shape=tuple(image_shape), **kwargs)
