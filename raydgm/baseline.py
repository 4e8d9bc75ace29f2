"""A fast baseline generator: PCA to ``pca_dim`` components, then a Gaussian mixture there.

It is a real density model fitted to the real train split (a mixture of probabilistic-PCA
style Gaussians), cheap enough for CPU demos and tests, and visibly biased: its samples are
blurry and sometimes off-manifold, which is what importance weighting should detect.
Sample i is drawn from its own generator seeded by (seed, i), so the images do not depend
on how many are drawn at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from raydgm.config import BaselineGeneratorConfig


@dataclass(frozen=True)
class PCAGaussianMixture:
    """Fitted parameters; ``sample`` maps ids to uint8 images."""

    shape: tuple[int, int, int]     # (C, H, W)
    mean: np.ndarray                # (D,) pixel mean in [0, 1]
    components: np.ndarray          # (P, D) PCA basis
    mix_weights: np.ndarray         # (K,)
    mix_means: np.ndarray           # (K, P)
    mix_chol: np.ndarray            # (K, P, P) Cholesky factors of the covariances

    @classmethod
    def fit(cls, images: np.ndarray, config: BaselineGeneratorConfig) -> "PCAGaussianMixture":
        """Fit on uint8 (N, C, H, W) images."""
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {images.shape}")
        n, c, h, w = images.shape
        x = images.reshape(n, -1).astype(np.float64) / 255.0
        pca_dim = min(config.pca_dim, n - 1, x.shape[1])
        pca = PCA(n_components=pca_dim, random_state=config.seed).fit(x)
        z = pca.transform(x)
        gmm = GaussianMixture(n_components=config.n_components, covariance_type="full",
                              reg_covar=1e-4, random_state=config.seed).fit(z)
        return cls(shape=(c, h, w), mean=pca.mean_, components=pca.components_,
                   mix_weights=gmm.weights_, mix_means=gmm.means_,
                   mix_chol=np.linalg.cholesky(gmm.covariances_))

    def sample_ids(self, sample_ids: np.ndarray, seed: int) -> np.ndarray:
        """uint8 (N, C, H, W): image i from ``np.random.default_rng([seed, i])``."""
        k, p = self.mix_means.shape
        comp = np.empty(len(sample_ids), dtype=np.int64)
        noise = np.empty((len(sample_ids), p))
        for row, sid in enumerate(np.asarray(sample_ids, dtype=np.int64)):
            rng = np.random.default_rng([seed, int(sid)])
            comp[row] = rng.choice(k, p=self.mix_weights)
            noise[row] = rng.standard_normal(p)
        z = self.mix_means[comp] + np.einsum("npq,nq->np", self.mix_chol[comp], noise)
        x = z @ self.components + self.mean                          # (N, D) in ~[0, 1]
        x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        return x.reshape(len(sample_ids), *self.shape)
