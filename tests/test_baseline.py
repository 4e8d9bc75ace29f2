import numpy as np
import pytest

from raydgm.baseline import PCAGaussianMixture
from raydgm.config import BaselineGeneratorConfig
from raydgm.data import load_dataset


@pytest.fixture(scope="module")
def model():
    real = load_dataset("digits").split("train")[0]
    return PCAGaussianMixture.fit(real, BaselineGeneratorConfig(pca_dim=8, n_components=3))


def test_sample_i_depends_only_on_seed_and_i(model):
    ids = np.arange(40)
    all_at_once = model.sample_ids(ids, seed=5)
    one_by_one = np.concatenate([model.sample_ids(ids[i:i + 7], seed=5) for i in range(0, 40, 7)])
    np.testing.assert_array_equal(all_at_once, one_by_one)
    reversed_ = model.sample_ids(ids[::-1], seed=5)[::-1]
    np.testing.assert_array_equal(all_at_once, reversed_)
    assert not np.array_equal(all_at_once, model.sample_ids(ids, seed=6))


def test_samples_match_the_data_moments(model):
    real = load_dataset("digits").split("train")[0].astype(np.float64)
    fake = model.sample_ids(np.arange(3000), seed=0)
    assert fake.dtype == np.uint8 and fake.shape[1:] == real.shape[1:]
    fake = fake.astype(np.float64)
    # the mixture reproduces the mean image up to sampling noise and clipping
    assert np.abs(fake.mean(0) - real.mean(0)).mean() < 6.0  # in 0..255 pixel units
    assert 0.5 < fake.std() / real.std() < 1.5


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        PCAGaussianMixture.fit(np.zeros((10, 1, 8, 8)), BaselineGeneratorConfig())
