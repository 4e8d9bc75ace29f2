"""The known-bias generators: their true weights against brute-force counts, their sampling law
by chi-square, and their round trip through a checkpoint."""
import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from raydgm.config import ContaminatedConfig, SkewedConfig, TrainGeneratorConfig
from raydgm.data import load_dataset
from raydgm.training import generators, known_bias

# tiny 1x1x2 images with duplicates inside a class (rows 0, 1) and across classes (rows 2, 4)
TINY = np.array([[7, 7], [7, 7], [0, 9], [9, 0], [0, 9], [5, 5]], np.uint8).reshape(6, 1, 1, 2)
TINY_Y = np.array([0, 0, 0, 1, 1, 2])


def fit(kind, images=TINY, labels=TINY_Y, num_classes=3, **kw):
    cfg = TrainGeneratorConfig.from_dict({"model": {"kind": kind, **kw}})
    return generators.fit_generator(images, cfg, "unused", labels=labels, num_classes=num_classes)[0]


def test_skewed_truth_is_the_brute_force_density_ratio():
    mix = (1.0, 2.0, 5.0)
    model = fit("skewed", class_mix=list(mix))
    pi = np.array(mix) / sum(mix)
    p_gen, p_data = Counter(), Counter()      # by enumerating (class, row) draws
    for i, (img, y) in enumerate(zip(TINY, TINY_Y)):
        p_gen[img.tobytes()] += pi[y] / (TINY_Y == y).sum()
        p_data[img.tobytes()] += 1 / len(TINY)
    expected = [math.log(p_data[img.tobytes()] / p_gen[img.tobytes()]) for img in TINY]
    np.testing.assert_allclose(model.log_weight.numpy(), expected, rtol=1e-12)
    # without duplicates it is pi_data(y) / pi_gen(y): row 5 is the only image of class 2
    assert model.log_weight[5].item() == pytest.approx(math.log((1 / 6) / pi[2]))


def test_contaminated_truth_is_the_brute_force_density_ratio():
    """2x2 images of two levels: scrambles often give back a train image, so the q(x) term counts."""
    images = np.array([[0, 0, 9, 9], [9, 0, 0, 9], [9, 9, 9, 0], [0, 0, 9, 9], [1, 2, 3, 4]],
                      np.uint8).reshape(5, 1, 2, 2)
    eps = 0.3
    model = fit("contaminated", images, np.zeros(5, np.int64), 1, junk_fraction=eps)
    p_gen, p_data = Counter(), Counter()
    for img in images.reshape(5, 4):
        p_data[img.tobytes()] += 1 / 5
        p_gen[img.tobytes()] += (1 - eps) / 5
        for perm in itertools.permutations(range(4)):            # every scramble, 1/24 each
            p_gen[img[list(perm)].tobytes()] += eps / 5 / 24
    expected = [math.log(p_data[img.tobytes()] / p_gen[img.tobytes()]) for img in images.reshape(5, 4)]
    np.testing.assert_allclose(model.log_weight.numpy(), expected, rtol=1e-12)
    noise = model.draw_noise(400, torch.Generator().manual_seed(0))      # junk rows' truth by lookup
    truth, out = model.truth(noise), model.decode(noise).to(torch.uint8).numpy().reshape(400, 4)
    for lw, y, img in zip(truth["true_log_weight"].numpy(), truth["true_class"].numpy(), out):
        p = p_data[img.tobytes()]
        assert (lw == -np.inf and y == -1) if p == 0 else lw == pytest.approx(
            math.log(p / p_gen[img.tobytes()]), rel=1e-12)
    assert np.isneginf(truth["true_log_weight"].numpy()).any()


def test_contaminated_truth_of_a_real_digit_is_one_over_one_minus_eps():
    x, y = load_dataset("digits").split("train")
    model = fit("contaminated", x, y, 10, junk_fraction=0.25)
    # duplicates among the digits would give c > 1 but the same ratio; scrambles never hit a digit
    np.testing.assert_allclose(model.log_weight.numpy(), -math.log(0.75), rtol=1e-12)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").split("train")


def test_skewed_draws_follow_the_stated_law(digits):
    """Chi-square of 20,000 draws: classes ~ pi_gen, and rows within class 3 uniform."""
    x, y = digits
    model = fit("skewed", x, y, 10, class_mix="linear")
    rows = model.sources(model.draw_noise(20_000, torch.Generator().manual_seed(0))).numpy()
    pi = (np.arange(10) + 1) / 55
    assert stats.chisquare(np.bincount(y[rows], minlength=10), 20_000 * pi).pvalue > 1e-3
    in_3 = np.flatnonzero(y == 3)
    counts = np.array([(rows == i).sum() for i in in_3])
    assert stats.chisquare(counts).pvalue > 1e-3
    truth = model.truth(model.draw_noise(50, torch.Generator().manual_seed(1)))
    n_y = np.bincount(y, minlength=10)
    np.testing.assert_allclose(truth["true_log_weight"].numpy(),
                               np.log(n_y / len(y) / pi)[truth["true_class"].numpy()], rtol=1e-12)


def test_contaminated_junk_share_and_scrambles(digits):
    x, y = digits
    model = fit("contaminated", x, y, 10, junk_fraction=0.4)
    noise = model.draw_noise(5000, torch.Generator().manual_seed(0))
    truth, images = model.truth(noise), model.decode(noise).to(torch.uint8).numpy()
    junk = np.isneginf(truth["true_log_weight"].numpy())
    assert stats.binomtest(int(junk.sum()), 5000, 0.4).pvalue > 1e-3
    src = x[truth["source_index"].numpy()]
    np.testing.assert_array_equal(images[~junk], src[~junk])          # copies are exact
    np.testing.assert_array_equal(np.sort(images[junk].reshape(junk.sum(), -1)),   # same pixels,
                                  np.sort(src[junk].reshape(junk.sum(), -1)))      # other places
    assert (images[junk] != src[junk]).any(axis=(1, 2, 3)).all()
    assert (truth["true_class"].numpy()[junk] == -1).all()


@pytest.mark.parametrize("kind, kw", [("skewed", {"class_mix": "reversed"}), ("contaminated", {})])
def test_a_checkpoint_gives_back_the_same_samples_and_truth(tmp_path, digits, kind, kw):
    x, y = digits
    cfg = TrainGeneratorConfig.from_dict({"model": {"kind": kind, **kw}})
    model = generators.fit_generator(x, cfg, tmp_path, labels=y, num_classes=10)[0]
    generators.save_generator(model, kind, generators.model_kwargs(cfg), tmp_path / "m.pt")
    back = generators.load_generator(tmp_path / "m.pt")
    noise = model.draw_noise(64, torch.Generator().manual_seed(2))
    assert torch.equal(back.decode(noise), model.decode(noise))
    for k, v in model.truth(noise).items():
        assert torch.equal(back.truth(noise)[k], v), k


@pytest.mark.parametrize("kind, kw, labels, message", [
    ("skewed", {"class_mix": [1, 2]}, TINY_Y, "class_mix lists 2 numbers but the data has 3 classes"),
    ("skewed", {}, np.array([0, 0, 0, 1, 1, 1]), "class 2 has no train image to copy"),
    ("skewed", {}, np.full(6, -1), "needs the train split's labels"),
    ("contaminated", {}, None, "copies labelled train images: pass labels"),
])
def test_bad_known_bias_input_fails_with_a_clear_error(kind, kw, labels, message):
    with pytest.raises(ValueError, match=message):
        fit(kind, labels=labels, **kw)


def test_config_kinds_and_their_errors():
    assert TrainGeneratorConfig.from_dict({"model": {"kind": "skewed"}}).model == SkewedConfig()
    assert SkewedConfig.from_dict({"class_mix": [1, 2]}).class_mix == (1.0, 2.0)
    assert ContaminatedConfig().junk_fraction == 0.5
    assert known_bias.class_mix("reversed", 4).tolist() == [0.4, 0.3, 0.2, 0.1]
    for bad, key in (({"class_mix": [1, 0]}, "greater than 0"), ({"class_mix": [1]}, "at least 2 classes"),
                     ({"class_mix": "lin"}, "'linear' or 'reversed'")):
        with pytest.raises(ValueError, match=key):
            SkewedConfig.from_dict(bad)
    with pytest.raises(ValueError, match="junk_fraction"):
        ContaminatedConfig.from_dict({"junk_fraction": 1.0})
