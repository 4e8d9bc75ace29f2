"""Tests of raydgm.density_ratio: analytic weight diagnostics first, then the classifier on
two Gaussians whose density ratio is known in closed form."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from raydgm import _classifier
from raydgm import density_ratio as dr
from raydgm.config import DensityRatioConfig

MU1 = np.array([1.0, 0.0])     # real ~ N(MU1, I); generated ~ N(0, I)
CFG = DensityRatioConfig(hidden_units=64, max_epochs=30)


def gaussians(n_real: int, n_gen: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_real, 2)) + MU1, rng.normal(size=(n_gen, 2))


def true_log_ratio(x: np.ndarray) -> np.ndarray:
    """log N(x; MU1, I) - log N(x; 0, I) = MU1.x - |MU1|^2 / 2."""
    return x @ MU1 - MU1 @ MU1 / 2


@pytest.fixture(scope="module")
def fitted() -> dict[str, dr.DensityRatioModel]:
    """Models on 3000 vs 3000 (balanced) and 1500 vs 4500 (balanced and unbalanced)."""
    models = {"balanced": dr.fit(*gaussians(3000, 3000, 0), CFG)}
    for balanced in (True, False):
        cfg = CFG.replace(balanced=balanced)
        models[f"unequal_{balanced}"] = dr.fit(*gaussians(1500, 4500, 0), cfg)
    return models


@pytest.fixture(scope="module")
def evaluation() -> tuple[np.ndarray, np.ndarray]:
    return gaussians(4000, 4000, 1)


# --------------------------------------------------------------------------- ESS

def test_ess_by_hand():
    assert dr.effective_sample_size(np.zeros(7)) == pytest.approx(7.0)
    assert dr.effective_sample_size([3.0, -np.inf, -np.inf, -np.inf]) == pytest.approx(1.0)
    lw = np.array([0.0, 0.0, math.log(2.0), -np.inf])   # weights [1, 1, 2, 0]
    assert dr.effective_sample_size(lw) == pytest.approx((1 + 1 + 2) ** 2 / (1 + 1 + 4))


def test_ess_invariant_to_constant_shift():
    lw = np.random.default_rng(0).normal(size=1000) * 2
    for shift in (-700.0, 0.0, 700.0):             # exp(700) alone would overflow the weights
        assert dr.effective_sample_size(lw + shift) == pytest.approx(dr.effective_sample_size(lw), rel=1e-10)


# --------------------------------------------------------------------------- PSIS k-hat

@pytest.mark.parametrize("s2", [0.3, 0.5, 0.8])
def test_psis_khat_known_tail(s2):
    """x ~ q = N(0, s^2), w = N(x; 0, 1) / q(x): P(w > t) ~ t^(-1/(1 - s^2)), so k = 1 - s^2."""
    k_true = 1 - s2
    khats = []
    for seed in range(5):
        x = np.random.default_rng(seed).normal(scale=math.sqrt(s2), size=100_000)
        khats.append(dr.psis_khat(norm.logpdf(x) - norm.logpdf(x, scale=math.sqrt(s2))))
    assert np.all(np.abs(np.array(khats) - k_true) < 0.1), khats
    assert abs(np.mean(khats) - k_true) < 0.05, khats


def test_psis_khat_bounded_weights():
    x = np.random.default_rng(0).normal(scale=1.5, size=100_000)   # s > 1: w <= s
    assert dr.psis_khat(norm.logpdf(x) - norm.logpdf(x, scale=1.5)) < 0.5
    assert dr.psis_khat(np.zeros(100)) == -np.inf                  # no tail at all


# --------------------------------------------------------------------------- alpha

def test_alpha_for_ess():
    lw = 3.0 * np.random.default_rng(0).normal(size=5000)
    n = lw.size
    alphas = [dr.alpha_for_ess(lw, t) for t in (0.05, 0.2, 0.5, 0.9)]
    for target, alpha in zip((0.05, 0.2, 0.5, 0.9), alphas):
        assert 0.0 < alpha < 1.0
        assert dr.effective_sample_size(alpha * lw) / n >= target
        assert dr.effective_sample_size((alpha + 1e-6) * lw) / n < target   # the largest such alpha
    assert alphas == sorted(alphas, reverse=True)                            # monotone in the target
    assert dr.alpha_for_ess(0.01 * lw, 0.5) == 1.0                           # already met


# --------------------------------------------------------------------------- the classifier

@pytest.mark.parametrize("name", ["balanced", "unequal_True", "unequal_False"])
def test_log_weights_match_closed_form(fitted, evaluation, name):
    model = fitted[name]
    _, gen = evaluation
    lw, truth = model.log_weights(gen), true_log_ratio(gen)
    bulk = np.linalg.norm(gen, axis=1) < 2.5
    assert np.mean(np.abs(lw - truth)[bulk]) < 0.25
    assert np.corrcoef(lw[bulk], truth[bulk])[0, 1] > 0.95
    assert abs(np.mean(np.exp(lw)) - 1.0) < 0.1                 # E_q[w] = 1
    expected = 0.0 if model.config.balanced else math.log(3.0)  # log(n_gen / n_real) of calib
    assert model.prior_correction == pytest.approx(expected, abs=0.01)


def test_model_attributes(fitted):
    model = fitted["unequal_False"]
    assert (model.n_real, model.n_gen) == (1500, 4500)
    assert model.gen_split.shape == (4500,)
    counts = {s: int(np.sum(model.gen_split == s)) for s in ("train", "val", "calib")}
    assert counts == {"train": 2700, "val": 900, "calib": 900}
    assert set(model.history[0]) >= {"train_loss", "val_loss"}
    p = model.predict_proba(np.zeros((3, 2)))
    assert p.dtype == np.float64 and np.all((p > 0) & (p < 1))
    assert np.allclose(model.logit(np.zeros((3, 2))), np.log(p / (1 - p)))


def test_log_weights_options(fitted, evaluation):
    model, gen = fitted["balanced"], evaluation[1]
    lw = model.log_weights(gen)
    assert np.allclose(model.log_weights(gen, alpha=0.5), 0.5 * lw)
    clipped = model.log_weights(gen, log_clip_max=0.5, log_clip_min=-1.0)
    assert clipped.max() <= 0.5 and clipped.min() >= -1.0
    norm_lw = model.log_weights(gen, normalize=True)
    assert np.exp(norm_lw).sum() == pytest.approx(1.0)
    alpha = model.alpha_for_ess(gen, 0.9)
    assert dr.effective_sample_size(alpha * lw) / gen.shape[0] == pytest.approx(0.9, abs=1e-3)


def test_calibration_and_thesis_curve(fitted, evaluation):
    report = dr.diagnose(fitted["balanced"], *evaluation)
    assert report.ece < 0.05
    assert 0.72 < report.roc_auc < 0.80          # Bayes AUC = Phi(|mu1 - mu0| / sqrt(2)) = 0.760
    assert np.all(np.diff(report.mix_mean_prob) > 0)
    # Calibrated at prior 1/2, the raw curve is the line rho a + (1 - rho)(1 - a) through (1/2, 1/2).
    assert report.mix_mean_prob[5] == pytest.approx(0.5, abs=0.03)
    assert np.allclose(report.mix_mean_prob_prior_adjusted, report.mix_rho, atol=0.03)
    assert 0.8 < report.mean_weight < 1.2 and report.khat < 0.5 and report.warnings == []
    d = report.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert len(d["reliability_prob_true"]) == len(d["reliability_prob_pred"]) > 5


def test_isotonic_and_none_calibration(evaluation):
    real, gen = gaussians(1500, 1500, 0)
    with pytest.warns(UserWarning, match="isotonic calibration gives probabilities of exactly 0 or 1"):
        iso = dr.fit(real, gen, CFG.replace(calibration="isotonic"))
    lw = iso.log_weights(evaluation[1])
    eps = CFG.isotonic_eps
    assert np.all(np.isfinite(lw)) and np.abs(lw).max() <= math.log((1 - eps) / eps) + 1e-9
    plain = dr.fit(real, gen, CFG.replace(calibration="none"))
    assert np.array_equal(plain.logit(gen[:50]), plain.raw_logit(gen[:50]))
    assert dr.diagnose(plain, *evaluation).ece < 0.05


def test_identical_distributions():
    rng = np.random.default_rng(3)
    model = dr.fit(rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2)), CFG)
    real, gen = rng.normal(size=(3000, 2)), rng.normal(size=(3000, 2))
    report = dr.diagnose(model, real, gen)
    assert abs(report.roc_auc - 0.5) < 0.04
    assert np.mean(np.abs(model.log_weights(gen))) < 0.1
    assert report.ess_fraction > 0.97


def test_noise_baseline_separates():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8] / 8.0
    freq, phase = rng.uniform(0.5, 1.5, (300, 1, 1)), rng.uniform(0, 2 * np.pi, (300, 1, 1))
    smooth = 128 + 100 * np.sin(2 * np.pi * freq * (xx + yy) + phase)
    images = np.repeat(smooth[:, None], 3, axis=1).astype(np.uint8)     # (300, 3, 8, 8)
    seen = []

    def featurize(x):
        seen.append(x)
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    with pytest.warns(UserWarning, match=r"PSIS k-hat .* > 0.52 \(min\(1 - 1/log10 120"):  # separable: degenerate
        model, report = dr.noise_baseline(images, featurize, CFG, seed=1)
    noise = seen[1]
    assert noise.shape == images.shape and noise.dtype == np.uint8
    assert np.all(noise == noise[:, :1])                                # grayscale
    assert report.roc_auc > 0.99 and report.accuracy > 0.95
    assert any(w.startswith("ROC AUC") for w in report.warnings)
    assert model.n_real == model.n_gen == 300


def test_early_stopping_restores_best_epoch(fitted):
    model = fitted["balanced"]
    val = [h["val_loss"] for h in model.history]
    assert model.best_epoch == int(np.argmin(val))
    assert len(model.history) == model.best_epoch + CFG.patience + 1 < CFG.max_epochs


def test_save_load_round_trip(fitted, evaluation, tmp_path):
    for name in ("balanced", "unequal_False"):
        model = fitted[name]
        model.save(tmp_path / name)
        loaded = dr.DensityRatioModel.load(tmp_path / name)
        assert np.array_equal(loaded.logit(evaluation[1]), model.logit(evaluation[1]))
        assert np.array_equal(loaded.gen_split, model.gen_split)
        assert loaded.prior_correction == model.prior_correction
        assert loaded.history == model.history and loaded.config == model.config


def test_save_load_isotonic(tmp_path):
    real, gen = gaussians(500, 500, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dr.fit(real, gen, CFG.replace(calibration="isotonic", max_epochs=3))
    model.save(tmp_path)
    assert np.array_equal(dr.DensityRatioModel.load(tmp_path).logit(gen), model.logit(gen))


def test_determinism():
    real, gen = gaussians(600, 600, 0)
    cfg = CFG.replace(max_epochs=5, seed=7)
    a, b = dr.fit(real, gen, cfg), dr.fit(real, gen, cfg)
    assert np.array_equal(a.logit(gen), b.logit(gen))
    assert not np.array_equal(a.logit(gen), dr.fit(real, gen, cfg.replace(seed=8)).logit(gen))


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("real, gen, match", [
    (np.full((10, 2), np.nan), np.zeros((10, 2)), r"real_features has 10 of 10 rows with NaN or inf"),
    (np.zeros((10, 2)), np.array([[0.0, np.inf]] * 3 + [[0.0, 0.0]] * 7), r"gen_features has 3 of 10 rows"),
    (np.zeros(10), np.zeros((10, 2)), r"real_features must be 2-D"),
    (np.zeros((0, 2)), np.zeros((10, 2)), r"real_features is empty"),
    (np.zeros((10, 2)), np.zeros((10, 3)), r"dimension mismatch: gen_features has D=3"),
    (np.zeros((2, 2)), np.zeros((10, 2)), r"too few rows: real_features has 2"),
])
def test_fit_rejects_bad_input(real, gen, match):
    with pytest.raises(ValueError, match=match):
        dr.fit(real, gen, CFG)


def test_bad_input_elsewhere(fitted):
    model = fitted["balanced"]
    with pytest.raises(ValueError, match=r"features has D=3, expected D=2"):
        model.logit(np.zeros((4, 3)))
    for target in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"target_fraction must be in \(0, 1\]"):
            dr.alpha_for_ess(np.zeros(10), target)
    with pytest.raises(ValueError, match=r"all 3 entries of log_weights are -inf"):
        dr.effective_sample_size(np.full(3, -np.inf))
    with pytest.raises(ValueError, match=r"log_weights has 1 NaN"):
        dr.psis_khat(np.array([0.0] * 30 + [np.nan]))
    with pytest.raises(ValueError, match=r"at least 25 log-weights"):
        dr.psis_khat(np.zeros(10))
    with pytest.raises(ValueError, match=r"log_clip_min=1 exceeds log_clip_max=0"):
        model.log_weights(np.zeros((2, 2)), log_clip_min=1, log_clip_max=0)
    with pytest.raises(ValueError, match=r"uint8 \(N, C, H, W\)"):
        dr.noise_baseline(np.zeros((5, 1, 8, 8)), lambda x: x.reshape(5, -1), CFG)


@pytest.mark.parametrize("floor", [_classifier.STD_FLOOR, 0.0])
def test_near_constant_feature_cannot_dominate_the_weights(monkeypatch, floor):
    """A padding-pixel-like feature: 0 everywhere except 1/255 in three generated rows.

    With its std floored, that row's log-weight stays near the closed form; without the
    floor (the regression: z ~ 70) the net extrapolates it far away.
    """
    monkeypatch.setattr(_classifier, "STD_FLOOR", floor)
    real, gen = gaussians(1500, 1500, seed=4)
    real, gen = np.hstack([real, np.zeros((1500, 1))]), np.hstack([gen, np.zeros((1500, 1))])
    odd = np.argsort(np.abs(true_log_ratio(gen[:, :2])))[:3]   # bulk points, true log w ~ 0
    gen[odd, -1] = 1 / 255
    model = dr.fit(real, gen, DensityRatioConfig(hidden_units=64, max_epochs=30, seed=0))
    err = np.abs(model.log_weights(gen) - true_log_ratio(gen[:, :2]))
    if floor:
        assert err[odd].max() < 1.0 and err.max() < 3.0
    else:  # measured: 6.6 for this seed
        assert err[odd].max() > 3.0, "without the floor the near-constant feature should dominate"


def test_on_epoch_reports_every_epoch_of_the_history():
    seen = []
    model = dr.fit(*gaussians(300, 300, 5), CFG.replace(max_epochs=4, patience=10),
                   on_epoch=seen.append)
    assert seen == model.history and [r["epoch"] for r in seen] == [0, 1, 2, 3]
