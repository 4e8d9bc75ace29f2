"""Fit the baseline generator: PCA to ``pca_dim`` components, then a Gaussian mixture there.

It is a real density model fitted to the real train split (a mixture of probabilistic-PCA
style Gaussians), cheap enough for CPU demos and tests, and visibly biased: its samples are
blurry and sometimes off-manifold, which is what importance weighting should detect. The
fitted parameters live in ``raydgm.models.baseline.PCAGaussianMixture``, a generator module
like the VAE and PixelCNN++.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from raydgm.data import check_images
from raydgm.models.baseline import PCAGaussianMixture


def fit_baseline(images: np.ndarray, pca_dim: int = 32, n_components: int = 10,
                 seed: int = 0) -> PCAGaussianMixture:
    """Fit on uint8 (N, C, H, W) images; returns the generator module."""
    check_images(images, "baseline training images")
    n, c, h, w = images.shape
    x = images.reshape(n, -1).astype(np.float64) / 255.0
    pca_dim = min(pca_dim, n - 1, x.shape[1])
    pca = PCA(n_components=pca_dim, random_state=seed).fit(x)
    gmm = GaussianMixture(n_components=n_components, covariance_type="full",
                          reg_covar=1e-4, random_state=seed).fit(pca.transform(x))
    model = PCAGaussianMixture((c, h, w), pca_dim=pca_dim, n_components=n_components)
    params = {"mean": pca.mean_, "components": pca.components_, "log_mix": np.log(gmm.weights_),
              "mix_means": gmm.means_, "mix_chol": np.linalg.cholesky(gmm.covariances_)}
    for name, value in params.items():
        getattr(model, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)))
    return model
