"""Cross-fitting (``density_ratio.cross_fit``) and the weights later stages use
(``density_ratio.used_weights``, Pareto smoothing, the k-hat limit, the reliability bins)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import genpareto

from raydgm import _diagnostics, calibration
from raydgm import density_ratio as dr
from raydgm.config import DensityRatioConfig, ResampleConfig

# A classifier big enough to over-fit 240 train rows per class in 100 dimensions within an epoch.
OVERFIT = DensityRatioConfig(hidden_units=1024, batch_size=8, learning_rate=3e-3, max_epochs=3, patience=1)


def normals(n: int, d: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """real ~ N(shift e_0, I), generated ~ N(0, I) in d dimensions: log w(x) = shift x_0 - shift^2 / 2."""
    rng = np.random.default_rng(seed)
    real, gen = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    real[:, 0] += shift
    return real, gen


# --------------------------------------------------------------------------- cross-fitting

def test_out_of_fold_weights_are_unbiased_where_in_sample_ones_are_not():
    """Same distribution for both sets: the true log w is 0 everywhere. The single fit calls its
    own generated train rows "generated" (mean log w -0.98 on them at this seed); out of fold the
    mean is within 0.2 of 0 (its standard error is ~0.055 here)."""
    real, gen = normals(600, 100, 0.0, seed=0)
    cfg = OVERFIT.replace(calibration="none")
    single = dr.fit(real, gen, cfg)
    in_sample = single.log_weights(gen[single.gen_split == "train"]).mean()
    out_of_fold = dr.cross_fit(real, gen, 5, cfg).log_weights.mean()
    print(f"mean log w: in-sample {in_sample:.3f}, out-of-fold {out_of_fold:.3f}")
    assert in_sample < -0.5
    assert abs(out_of_fold) < 0.2


@pytest.mark.parametrize("calibration", ["none", "temperature"])
def test_cross_fitted_weights_track_a_known_ratio_at_least_as_well(calibration):
    """Two Gaussians with log w(x) = x_0 - 1/2, the over-fitting classifier: RMSE of every
    generated row's log-weight against the truth (measured: none 1.53 vs 1.70, temperature
    0.879 vs 0.887)."""
    real, gen = normals(600, 100, 1.0, seed=0)
    truth = gen[:, 0] - 0.5
    cfg = OVERFIT.replace(calibration=calibration)
    rmse_single = np.sqrt(np.mean((dr.fit(real, gen, cfg).log_weights(gen) - truth) ** 2))
    rmse_cross = np.sqrt(np.mean((dr.cross_fit(real, gen, 5, cfg).log_weights - truth) ** 2))
    print(f"RMSE vs the true log w ({calibration}): single split {rmse_single:.3f}, cross-fitted {rmse_cross:.3f}")
    assert rmse_cross <= rmse_single


def test_every_weight_comes_from_a_model_that_never_saw_its_row(monkeypatch):
    """Spy on ``fit`` (it still runs): each fold's model receives exactly the rows outside its
    fold (train, early-stopping and calibration rows all come from those), and every row's
    weight is its own fold's model's prediction."""
    real, gen = normals(150, 3, 1.0, seed=1)
    real[:, 1], gen[:, 1] = np.arange(150), 1000 + np.arange(150)   # a row's id, read back from its features
    calls, fit = [], dr.fit
    monkeypatch.setattr(dr, "fit", lambda r, g, c, **kw: calls.append((r, g)) or fit(r, g, c, **kw))
    cf = dr.cross_fit(real, gen, 4, DensityRatioConfig(hidden_units=8, max_epochs=3, standardize=False))
    assert len(calls) == len(cf.models) == 4
    for fold, counts in ((cf.real_fold, np.bincount(cf.real_fold)), (cf.gen_fold, np.bincount(cf.gen_fold))):
        assert counts.max() - counts.min() <= 1 and fold.min() == 0 and fold.max() == 3
    for k, (r, g) in enumerate(calls):
        seen_real, seen_gen = set(r[:, 1].astype(int)), set(g[:, 1].astype(int) - 1000)
        assert seen_real == set(np.flatnonzero(cf.real_fold != k))
        assert seen_gen == set(np.flatnonzero(cf.gen_fold != k))
        mine = cf.gen_fold == k
        assert not seen_gen & set(np.flatnonzero(mine))
        np.testing.assert_array_equal(cf.log_weights[mine], cf.models[k].log_weights(gen[mine]))
        np.testing.assert_array_equal(cf.real_logit[cf.real_fold == k], cf.models[k].logit(real[cf.real_fold == k]))
    np.testing.assert_allclose(cf.real_proba, 1 / (1 + np.exp(-cf.real_logit)))


def test_the_report_is_computed_on_out_of_fold_predictions_only():
    real, gen = normals(200, 2, 1.0, seed=2)
    cfg = DensityRatioConfig(hidden_units=8, max_epochs=3)
    cf = dr.cross_fit(real, gen, 3, cfg)
    expected = _diagnostics.build_report(cf.real_log_weights, cf.log_weights, np.random.default_rng(cfg.seed))
    assert cf.report.to_dict() == expected.to_dict()
    assert (cf.report.n_real, cf.report.n_gen) == (200, 200)


def test_unbalanced_folds_correct_their_own_prior():
    real, gen = normals(120, 2, 1.0, seed=3)
    gen = np.vstack([gen, gen + 0.01])                        # 240 generated rows vs 120 real
    cf = dr.cross_fit(real, gen, 3, DensityRatioConfig(hidden_units=8, max_epochs=2, balanced=False))
    for k, model in enumerate(cf.models):
        assert cf.prior_correction[k] == model.prior_correction != 0.0
    np.testing.assert_array_equal(cf.log_weights, cf.gen_logit + cf.prior_correction[cf.gen_fold])


def test_share_groups_by_hand():
    """Every row takes the part of its group's first row, real rows first; singletons stay."""
    real_part, gen_part = np.array([0, 1, 2]), np.array([2, 0, 1, 1, 2])
    groups = (np.array([10, 11, 12]), np.array([11, 99, 10, 99, 50]))   # gen 0 copies real 1, gen 2 real 0
    real, gen = dr.share_groups(real_part, gen_part, groups, 3)
    assert real.tolist() == [0, 1, 2] and gen.tolist() == [1, 0, 0, 0, 2]
    with pytest.raises(ValueError, match="leaves a fold or split without generated rows"):
        dr.share_groups(real_part, np.array([2, 0]), (np.array([10, 11, 12]), np.array([10, 10])), 3)


def test_a_copy_of_a_real_row_shares_its_fold_and_split():
    """Half the generated rows copy real rows (some twice): with groups no copy is weighted, early
    stopped or calibrated by a classifier that trained on its twin; without them some are."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(150, 3))
    source = rng.integers(0, 150, 100)
    gen = np.concatenate([real[source], rng.normal(size=(100, 3))])
    groups = (np.arange(150), np.concatenate([source, 150 + np.arange(100)]))
    cfg = DensityRatioConfig(hidden_units=4, max_epochs=1)
    cf = dr.cross_fit(real, gen, 3, cfg, groups=groups)
    np.testing.assert_array_equal(cf.gen_fold[:100], cf.real_fold[source])
    for k, model in enumerate(cf.models):
        real_split = dict(zip(np.flatnonzero(cf.real_fold != k), model.real_split))
        copies = np.flatnonzero(cf.gen_fold[:100] != k)                        # copies it trained on
        gen_split = model.gen_split[np.searchsorted(np.flatnonzero(cf.gen_fold != k), copies)]
        assert [real_split[source[i]] for i in copies] == gen_split.tolist()
    plain = dr.cross_fit(real, gen, 3, cfg)
    assert (plain.gen_fold[:100] != plain.real_fold[source]).mean() > 0.5


def test_cross_fit_refuses_bad_folds():
    real, gen = normals(10, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="folds >= 2"):
        dr.cross_fit(real, gen, 1)
    with pytest.raises(ValueError, match="too few rows for 20 folds: real_features has 10"):
        dr.cross_fit(real, gen, 20)


# --------------------------------------------------------------------------- the weights used

def test_khat_limit_by_hand():
    assert _diagnostics.khat_threshold(100) == pytest.approx(1 - 1 / 2)
    assert _diagnostics.khat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert _diagnostics.khat_threshold(10 ** 4) == 0.7                 # 0.75, capped


def test_pareto_smoothing_reproduces_an_exact_pareto_tail():
    """A tail that *is* the generalized Pareto's quantile grid (k = 0.5, which the PSIS prior
    leaves unshrunk) above a cutoff comes back almost unchanged; the body is untouched, order
    is kept and nothing exceeds the largest raw weight."""
    n = 400
    m = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))                    # 60
    body = np.sort(np.random.default_rng(0).uniform(0.0, 1.0, n - m))
    tail = 1.0 + genpareto.ppf((np.arange(1, m + 1) - 0.5) / m, c=0.5, scale=2.0)
    lw = np.log(np.concatenate([body, tail]))
    smoothed, k_hat = dr.pareto_smooth(lw)
    assert k_hat == pytest.approx(0.5, abs=0.1)
    np.testing.assert_array_equal(smoothed[: n - m], lw[: n - m])
    np.testing.assert_allclose(np.exp(smoothed[n - m:-1]), tail[:-1], rtol=0.1)
    assert np.all(np.diff(smoothed[n - m:]) >= 0) and smoothed.max() <= lw.max()


def test_pareto_smoothing_replaces_the_tail_by_the_fitted_quantiles():
    """Against scipy's generalized Pareto quantiles at the fitted (k, sigma), in any row order."""
    rng = np.random.default_rng(1)
    lw = rng.standard_t(3, size=500)
    smoothed, k_hat = dr.pareto_smooth(lw)
    m = math.ceil(min(0.2 * 500, 3 * math.sqrt(500)))
    order = np.argsort(lw)
    top = lw[order[-(m + 1):]]
    w = np.exp(top - top[-1])
    sigma = _diagnostics.gpd_fit_zhang_stephens(w[1:] - w[0])[1]
    expected = np.minimum(w[0] + genpareto.ppf((np.arange(1, m + 1) - 0.5) / m, c=k_hat, scale=sigma), 1.0)
    np.testing.assert_allclose(np.exp(smoothed[order[-m:]] - top[-1]), expected, rtol=1e-10)
    np.testing.assert_array_equal(smoothed[order[:-m]], lw[order[:-m]])


def test_used_weights_flatten_then_smooth_then_clip():
    lw = np.random.default_rng(2).standard_t(2, size=300) * 2
    used, stats = dr.used_weights(lw, ResampleConfig(target_ess_fraction=0.5))
    assert stats["alpha"] == dr.alpha_for_ess(lw, 0.5) and stats["ess_fraction_used"] >= 0.5
    np.testing.assert_array_equal(used, dr.flatten(lw, stats["alpha"]))
    assert stats["khat_raw"] == dr.psis_khat(lw) and stats["khat_used"] == dr.psis_khat(used)
    assert stats["pool"] == 300 and stats["khat_limit"] == pytest.approx(1 - 1 / math.log10(300))
    cfg = ResampleConfig(alpha=0.5, smoothing="psis", log_clip_max=1.0)
    used, stats = dr.used_weights(lw, cfg)
    np.testing.assert_array_equal(used, np.minimum(dr.pareto_smooth(0.5 * lw)[0], 1.0))
    assert stats["ess_used"] == dr.effective_sample_size(used)


def test_reliability_curve_and_ece_share_bins_and_edges():
    """0.3 and 0.7 sit exactly on bin edges: both go to the bin above ([lo, hi)), for the curve
    as for the ECE (sklearn's curve would put them below)."""
    prob = np.array([0.3, 0.3, 0.25, 0.7, 0.75, 1.0])
    label = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    true, pred = calibration.reliability_curve(prob, label, _diagnostics.N_BINS)
    np.testing.assert_allclose(pred, [0.25, 0.3, 0.725, 1.0])        # bins 2, 3, 7, 9
    np.testing.assert_allclose(true, [0.0, 0.5, 1.0, 1.0])
    counts = np.array([1, 2, 2, 1])
    assert calibration.expected_calibration_error(prob, label, _diagnostics.N_BINS) == pytest.approx(
        np.sum(counts / 6 * np.abs(true - pred)))
