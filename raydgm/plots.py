"""Figures (matplotlib, Agg backend): sample grids and weight histograms, saved as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sample_rows(rows: Mapping[str, np.ndarray], path: str | Path, per_row: int = 16) -> Path:
    """One labelled row per entry: uint8 (N, C, H, W) images, the first ``per_row`` shown."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(per_row * 0.6, len(rows) * 0.9), squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(_strip(images[:per_row]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def weight_histogram(log_weights: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Histogram of finite log importance weights, with the ESS fraction in the title."""
    finite = log_weights[np.isfinite(log_weights)]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(finite, bins=60, color="tab:blue")
    ax.set_yscale("log")                      # a single extreme weight stays visible
    ax.set_xlabel("log w (calibrated log-odds, prior-corrected)")
    ax.set_ylabel("generated samples (log scale)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _strip(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> (H, N*(W+1)) or (H, N*(W+1), 3) image strip with 1-pixel gaps."""
    n, c, h, w = images.shape
    strip = np.full((h, n * (w + 1), c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        strip[:, i * (w + 1):i * (w + 1) + w] = img.transpose(1, 2, 0)
    return strip[..., 0] if c == 1 else strip
