import numpy as np
import pytest
import torch

from raydgm.data import load_dataset
from raydgm.pipeline.generate import draw_levels
from raydgm.training.generators import fit_baseline


@pytest.fixture(scope="module")
def model():
    real = load_dataset("digits").split("train")[0]
    return fit_baseline(real, pca_dim=8, n_components=3, seed=0)


def _images(model, ids, seed):
    _, levels = draw_levels(model, np.asarray(ids), seed)
    return levels.to(torch.uint8).numpy()


def test_sample_i_depends_only_on_seed_and_i(model):
    ids = np.arange(40)
    all_at_once = _images(model, ids, seed=5)
    one_by_one = np.concatenate([_images(model, ids[i:i + 7], seed=5) for i in range(0, 40, 7)])
    np.testing.assert_array_equal(all_at_once, one_by_one)
    np.testing.assert_array_equal(all_at_once, _images(model, ids[::-1], seed=5)[::-1])
    assert not np.array_equal(all_at_once, _images(model, ids, seed=6))


def test_samples_match_the_data_moments(model):
    real = load_dataset("digits").split("train")[0].astype(np.float64)
    fake = model.sample(3000, torch.Generator().manual_seed(0)).numpy()
    assert fake.dtype == np.uint8 and fake.shape[1:] == real.shape[1:]
    fake = fake.astype(np.float64)
    # the mixture reproduces the mean image up to sampling noise and clipping
    assert np.abs(fake.mean(0) - real.mean(0)).mean() < 6.0  # in 0..255 pixel units
    assert 0.5 < fake.std() / real.std() < 1.5


def test_mixture_weights_are_respected(model):
    """Gumbel-max picks component c with probability pi_c: chi-square on 20,000 draws."""
    from scipy.stats import chisquare
    noise = model.draw_noise(20_000, torch.Generator().manual_seed(1))
    comp = (model.log_mix - torch.log(-torch.log(noise["u"]))).argmax(1).numpy()
    expected = model.log_mix.exp().numpy() * 20_000
    assert chisquare(np.bincount(comp, minlength=len(expected)), expected).pvalue > 1e-3


def test_nan_parameters_give_nan_levels_not_pixels(model):
    broken = fit_baseline(load_dataset("digits").split("train")[0], pca_dim=8, n_components=3)
    broken.mean[5] = float("nan")
    levels = broken.decode(broken.draw_noise(4, torch.Generator().manual_seed(0)))
    assert torch.isnan(levels).flatten(1).all(1).all()
    with pytest.raises(ValueError, match="4 of 4 generated images hold NaN"):
        broken.sample(4, torch.Generator().manual_seed(0))


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        fit_baseline(np.zeros((10, 1, 8, 8)))
