"""The semi-supervised trainer's batches: which images each step sees and how they are shifted.

An epoch's plan is drawn up front from two independent streams, so arms that differ only in
their unlabeled source see the same labeled batches (docs/design.md, "Statistics of a sweep"):

- labeled stream ``np.random.default_rng([seed, 1, epoch])``: the permutations of the labeled
  subset that the steps cycle through, then the crop offsets (and flips) of every labeled image;
- unlabeled stream ``np.random.default_rng([seed, 2, epoch])``: the unlabeled pool indices
  (uniform, with replacement), then their crop offsets.

Which rows of the generated pool a seed's unlabeled draws choose from is fixed once per seed
(:func:`generated_choices`): the ``resampled`` source's SIR set is drawn from the SIR stream
``np.random.default_rng([seed, 3])`` (:func:`sir_draw`), and the ``subset`` source's uniform
subset, as many distinct rows as that SIR set has, from ``np.random.default_rng([seed, 4])``
(:func:`subset_draw`). So the SIR draw's randomness varies with the seed, and lies inside the
seed-paired intervals, instead of one draw shared by every seed.

A plan holds only indices and offsets (a few int arrays); ``Plan.images(s)`` gathers and crops
step s's images on the fly. Imports no other raydgm training module.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from raydgm import resample

AUGMENTS = ("none", "crop", "crop_flip")


@dataclass(frozen=True, eq=False)
class Crops:
    """Per-image window offsets into the zero-padded image: ``dy``, ``dx`` int64 (n,) in 0..2 pad,
    ``flip`` bool (n,) (mirror the window left-right); ``pad`` the padding in pixels."""
    pad: int
    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray

    def take(self, sl: slice) -> "Crops":
        return Crops(self.pad, self.dy[sl], self.dx[sl], self.flip[sl])


def draw_crops(n: int, mode: str, height: int, rng: np.random.Generator) -> Crops | None:
    """``n`` random windows for ``mode`` (``crop``: pad p = 2, or 1 when height <= 8, offsets
    uniform in 0..2p; ``crop_flip``: also a fair coin per image to mirror); None for ``none``.
    Draws dy, then dx, then the flips, from ``rng`` only."""
    if mode not in AUGMENTS:
        raise ValueError(f"unknown augment {mode!r}; known: {', '.join(AUGMENTS)}")
    if mode == "none":
        return None
    p = 1 if height <= 8 else 2
    dy, dx = rng.integers(0, 2 * p + 1, size=n), rng.integers(0, 2 * p + 1, size=n)
    flip = rng.random(n) < 0.5 if mode == "crop_flip" else np.zeros(n, dtype=bool)
    return Crops(p, dy, dx, flip)


def apply_crops(images: torch.Tensor, crops: Crops | None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> the (B, C, H, W) windows ``crops`` names (B offsets); None: ``images``."""
    if crops is None:
        return images
    B, C, H, W = images.shape
    p, dev = crops.pad, images.device
    rows = crops.dy[:, None] + np.arange(H)                                              # (B, H)
    cols = crops.dx[:, None] + np.where(crops.flip[:, None], W - 1 - np.arange(W), np.arange(W))  # (B, W)
    r, c = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
    padded = F.pad(images, (p, p, p, p))
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    ch = torch.arange(C, device=dev).view(1, C, 1, 1)
    return padded[b, ch, r.view(B, 1, H, 1), c.view(B, 1, 1, W)]


def augment(images: torch.Tensor, mode: str, rng: np.random.Generator) -> torch.Tensor:
    """Random translation (and flips) of uint8 (B, C, H, W) images; same shape and dtype.

    ``crop``: zero-pad by p (2, or 1 when H <= 8) and crop a random H x W window (offsets
    uniform in 0..2p per image); ``crop_flip``: also mirror each window left-right with
    probability 1/2; ``none``: the images themselves. Draws only from ``rng``.
    """
    return apply_crops(images, draw_crops(len(images), mode, images.shape[2], rng))


@dataclass(frozen=True, eq=False)
class Plan:
    """One epoch of one stream: ``indices`` int64 (steps * batch,) into ``pool`` (uint8
    (P, C, H, W), on the training device), step s taking rows s*batch..(s+1)*batch-1."""
    pool: torch.Tensor
    indices: np.ndarray
    crops: Crops | None
    batch: int

    def rows(self, step: int) -> slice:
        return slice(step * self.batch, (step + 1) * self.batch)

    def images(self, step: int) -> torch.Tensor:
        """Step ``step``'s augmented uint8 (batch, C, H, W) images."""
        sl = self.rows(step)
        idx = torch.from_numpy(self.indices[sl]).to(self.pool.device)
        return apply_crops(self.pool[idx], None if self.crops is None else self.crops.take(sl))


def labeled_plan(images: torch.Tensor, labeled: np.ndarray, *, steps: int, batch: int, augment: str,
                 seed: int, epoch: int) -> Plan:
    """Epoch ``epoch`` (0-based) of the labeled stream: ``steps`` batches of ``batch`` rows of
    ``images`` (the train split) cycling through fresh permutations of int64 ``labeled``."""
    rng = np.random.default_rng([seed, 1, epoch])
    reps = math.ceil(steps * batch / len(labeled))
    order = np.concatenate([labeled[rng.permutation(len(labeled))] for _ in range(reps)])[:steps * batch]
    return Plan(images, order, draw_crops(len(order), augment, images.shape[2], rng), batch)


def unlabeled_plan(pool: torch.Tensor, choices: np.ndarray, *, steps: int, batch: int, augment: str,
                   seed: int, epoch: int) -> Plan:
    """Epoch ``epoch`` of the unlabeled stream: ``steps * batch`` draws, uniform with replacement,
    from int64 ``choices`` (indices into ``pool``, repeats allowed)."""
    rng = np.random.default_rng([seed, 2, epoch])
    order = choices[rng.integers(0, len(choices), size=steps * batch)]
    return Plan(pool, order, draw_crops(len(order), augment, pool.shape[2], rng), batch)


def sir_draw(log_weights: np.ndarray, size: int, method: str, seed: int) -> np.ndarray:
    """Seed ``seed``'s SIR set: int64 (size,) indices into float (M,) ``log_weights``, with
    repeats, drawn by ``method`` (``raydgm.resample.resample``, eq. 1) from the SIR stream
    ``np.random.default_rng([seed, 3])``: same seed, same bytes."""
    return resample.resample(log_weights, size, method, np.random.default_rng([seed, 3])).astype(np.int64)


def subset_draw(pool_size: int, distinct: int, seed: int) -> np.ndarray:
    """Seed ``seed``'s uniform subset: ``distinct`` sorted distinct int64 indices in
    0..pool_size-1 (without replacement), from ``np.random.default_rng([seed, 4])``."""
    if not 1 <= distinct <= pool_size:
        raise ValueError(f"a subset of {distinct} distinct rows of a pool of {pool_size} cannot be drawn")
    return np.sort(np.random.default_rng([seed, 4]).choice(pool_size, size=distinct, replace=False)).astype(np.int64)


def generated_choices(source: str, log_weights: np.ndarray | None, size: int | None, method: str,
                      seed: int, pool_size: int) -> np.ndarray:
    """int64 indices into a generated pool of ``pool_size`` rows that the unlabeled draws of
    ``source`` choose from (uniformly, repeats counting): every row for ``generated`` and
    ``weighted``; seed ``seed``'s SIR set of ``size`` draws (None: ``pool_size``) from the
    float (pool_size,) ``log_weights`` for ``resampled``; for ``subset``, a uniform subset
    with as many distinct rows as that SIR set (the diversity-matched control)."""
    if source in ("generated", "weighted"):
        return np.arange(pool_size, dtype=np.int64)
    if source not in ("resampled", "subset") or log_weights is None:
        raise ValueError(f"unlabeled={source!r}: no generated choices (resampled and subset need log-weights)")
    sir = sir_draw(log_weights, size or pool_size, method, seed)
    return sir if source == "resampled" else subset_draw(pool_size, int(np.unique(sir).size), seed)


def index_digest(indices: np.ndarray) -> int:
    """48-bit int of sha256 over the sorted distinct int64 ``indices``: equal sets, equal digests."""
    blob = np.unique(np.asarray(indices, dtype=np.int64)).astype("<i8").tobytes()
    return int(hashlib.sha256(blob).hexdigest()[:12], 16)
