"""The recovery scores (raydgm.recovery) against hand-computed answers and brute force."""
import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from raydgm import recovery


def test_total_variation_by_hand():
    assert recovery.tv_distance([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5)
    assert recovery.tv_distance([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert recovery.tv_distance([0.1, 0.6, 0.3], [0.4, 0.4, 0.2]) == pytest.approx((0.3 + 0.2 + 0.1) / 2)
    assert recovery.tv_distance([1, 0, 0], [0, 0, 1]) == 1.0


def test_total_variation_is_the_largest_gap_over_events():
    """TV = max over events A of |p(A) - q(A)|: enumerate every subset of 4 classes."""
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
    events = (s for r in range(5) for s in itertools.combinations(range(4), r))
    brute = max(abs(p[list(s)].sum() - q[list(s)].sum()) for s in events)
    assert recovery.tv_distance(p, q) == pytest.approx(brute, abs=1e-15)


@pytest.mark.parametrize("p, q, message", [
    ([0.5, 0.6], [0.5, 0.5], "p must sum to 1"),
    ([0.5, 0.5], [1.5, -0.5], "q must hold finite non-negative"),
    ([0.5, 0.5], [1.0, 0.0, 0.0], "p has 2 classes and q 3"),
    ([], [1.0], "p must be a non-empty 1-D array"),
    ([np.nan, 1.0], [0.0, 1.0], "p holds NaN"),
])
def test_total_variation_refuses_bad_input(p, q, message):
    with pytest.raises(ValueError, match=message):
        recovery.tv_distance(p, q)


def test_class_mix_leaves_junk_out_and_weighs_rows():
    y = np.array([0, 1, 1, -1, 2, -1])
    np.testing.assert_allclose(recovery.class_mix(y, 3), [1 / 4, 2 / 4, 1 / 4])
    w = np.array([2.0, 1.0, 0.0, 5.0, 1.0, 9.0])
    np.testing.assert_allclose(recovery.class_mix(y, 3, w), [2 / 4, 1 / 4, 1 / 4])
    with pytest.raises(ValueError, match="classes must lie in -1..2"):
        recovery.class_mix(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="carry no weight"):
        recovery.class_mix(np.array([0, -1]), 2, [0.0, 1.0])


def test_sir_probabilities_and_ess_by_hand():
    lw = np.log([1.0, 3.0, 0.0 + 1e-300])
    lw[2] = -np.inf                      # a zero weight
    np.testing.assert_allclose(recovery.sir_probabilities(lw), [0.25, 0.75, 0.0])
    assert recovery.ess(lw) == pytest.approx(16 / 10)           # (1 + 3)^2 / (1 + 9)
    assert recovery.ess(np.full(7, 3.2)) == pytest.approx(7)
    assert recovery.ess(np.array([1000.0, 1000.0])) == pytest.approx(2)   # no overflow
    with pytest.raises(ValueError, match="no \\+inf"):
        recovery.sir_probabilities([0.0, np.inf])


def test_junk_auc_counts_pairs_by_brute_force():
    rng = np.random.default_rng(1)
    lw = np.round(rng.normal(size=40), 1)          # rounding makes ties
    junk = rng.random(40) < 0.4
    lw[np.flatnonzero(junk)[:3]] = -np.inf
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a in lw[~junk] for b in lw[junk]]
    assert recovery.junk_auc(lw, junk) == pytest.approx(np.mean(pairs))
    assert math.isnan(recovery.junk_auc(lw, np.zeros(40, bool)))


def test_recovery_of_the_truth_itself_is_perfect():
    truth = np.log(np.array([0.5, 0.5, 2.0, 2.0, 1.0, 1.0]) / 1.0)
    out = recovery.recovery(truth + 0.3, truth)               # a constant offset is no error
    assert out["spearman"] == pytest.approx(1) and out["pearson"] == pytest.approx(1)
    assert out["slope"] == pytest.approx(1) and out["ess_ratio"] == pytest.approx(1)
    assert out["junk_rows"] == 0 and math.isnan(out["junk_auc"]) and out["junk_weight_share"] == 0


def test_recovery_by_hand_with_junk():
    truth = np.array([0.0, 0.0, math.log(2), -np.inf, -np.inf])
    est = np.array([0.0, math.log(2), math.log(4), math.log(2), 0.0])
    out = recovery.recovery(est, truth)
    assert (out["rows"], out["real_rows"], out["junk_rows"]) == (5, 3, 2)
    x, y = np.array([0, 0, math.log(2)]), np.log([1, 2, 4])
    assert out["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert out["slope"] == pytest.approx(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    ranks_x, ranks_y = np.array([1.5, 1.5, 3]), np.array([1, 2, 3])      # average ranks for the tie
    assert out["spearman"] == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])
    assert out["ess_true"] == pytest.approx((1 + 1 + 2) ** 2 / (1 + 1 + 4))
    assert out["ess_estimated"] == pytest.approx((1 + 2 + 4 + 2 + 1) ** 2 / (1 + 4 + 16 + 4 + 1))
    assert out["junk_weight_share"] == pytest.approx(3 / 10)
    # (real, junk) pairs: (1, 2) 0, (1, 1) 1/2, (2, 2) 1/2, (2, 1) 1, (4, 2) 1, (4, 1) 1
    assert out["junk_auc"] == pytest.approx((0 + 0.5 + 0.5 + 1 + 1 + 1) / 6)


def test_the_spearman_ceiling_under_ties_by_hand():
    """Truth (0, 0, 1, 1): average ranks (1.5, 1.5, 3.5, 3.5) against ordinal (1, 2, 3, 4):
    centred (-1, -1, 1, 1) and (-1.5, -0.5, 0.5, 1.5): 4 / (2 sqrt 5). A perfect ordering of the
    groups with ties broken reaches it; the truth itself (tied) reaches 1."""
    truth = np.array([0.0, 0.0, 1.0, 1.0])
    out = recovery.recovery(np.array([0.1, 0.2, 0.7, 0.9]), truth)
    assert out["spearman_max"] == pytest.approx(4 / (2 * math.sqrt(5)))
    assert out["spearman"] == pytest.approx(out["spearman_max"])
    big = np.repeat([0.0, 1.0], 5000)               # two equal groups: sqrt(3)/2 as n grows
    assert recovery.recovery(big + np.linspace(0, 0.5, 10_000), big)["spearman_max"] == pytest.approx(
        math.sqrt(3) / 2, abs=1e-3)
    assert recovery.recovery(truth, truth)["spearman"] == 1.0


def test_class_count_spearman_by_hand():
    """Two classes, data mix (1/2, 1/2), pi_gen (0.6, 0.4): true log w = log(5/6), log(5/4).
    A pool whose counts match pi_gen (6 and 4 rows) gives the truth itself: 1. A pool of 4 and 6
    rows puts class 0 above class 1, the truth's reverse: -1. Junk rows are left out."""
    data_mix = [0.5, 0.5]
    def pool(n0: int, n1: int, junk: int = 0) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat([0, 1, -1], [n0, n1, junk])
        truth = np.log(np.array([0.5 / 0.6, 0.5 / 0.4, 0.0])[y])
        return np.where(y == -1, -np.inf, truth), y
    with np.errstate(divide="ignore"):
        assert recovery.class_count_spearman(*pool(6, 4, junk=3), data_mix) == pytest.approx(1.0)
        assert recovery.class_count_spearman(*pool(4, 6), data_mix) == pytest.approx(-1.0)
        assert math.isnan(recovery.class_count_spearman(*pool(5, 5), data_mix))   # equal counts: constant
    # three classes against scipy on the estimate written out: pool mix (2, 3, 5) / 10
    y = np.repeat([0, 1, 2], [2, 3, 5])
    truth = np.log(np.array([0.2, 0.5, 0.3]) / np.array([0.3, 0.3, 0.4]))[y]
    by_hand = np.log(np.array([0.2, 0.5, 0.3]) / np.array([0.2, 0.3, 0.5]))[y]
    assert recovery.class_count_spearman(truth, y, [0.2, 0.5, 0.3]) == pytest.approx(spearmanr(truth, by_hand)[0])
    with pytest.raises(ValueError, match="junk class"):
        recovery.class_count_spearman(truth, np.where(y == 0, -1, y), [0.2, 0.5, 0.3])


def test_within_class_by_hand():
    """Classes 0 (truth 0) and 1 (truth 1), a junk row left out. Estimates (0, 2 | 5, 5, 8):
    class means 1 and 6, squared deviations 1, 1 | 1, 1, 4 over 5 rows: sd sqrt(8 / 5); the
    means keep the classes' order: Spearman 1. Reversed means give -1."""
    y = np.array([0, 0, 1, 1, 1, -1])
    truth = np.array([0.0, 0.0, 1.0, 1.0, 1.0, -np.inf])
    out = recovery.within_class([0.0, 2.0, 5.0, 5.0, 8.0, -3.0], truth, y)
    assert out["within_class_sd"] == pytest.approx(math.sqrt(8 / 5))
    assert out["spearman_class_means"] == pytest.approx(1.0)
    assert recovery.within_class([9.0, 9.0, 1.0, 2.0, 3.0, 0.0], truth, y)["spearman_class_means"] == pytest.approx(-1.0)
    assert recovery.within_class(truth[:5], truth[:5], y[:5])["within_class_sd"] == 0.0
    with pytest.raises(ValueError, match="junk class"):
        recovery.within_class([0.0, 1.0], [0.0, 1.0], np.array([0, -1]))


def test_noise_tolerance_matches_the_bivariate_normal():
    """For a Gaussian truth t, t + s z is bivariate normal with rho = 1 / sqrt(1 + s^2 / var t),
    whose Spearman is 6 / pi arcsin(rho / 2): Spearman 0.9 at s = sd(t) sqrt(1 / rho^2 - 1)
    with rho = 2 sin(0.15 pi). The answer scales with the truth."""
    t = np.random.default_rng(1).standard_normal(100_000)
    rho = 2 * math.sin(math.pi * 0.9 / 6)
    exact = math.sqrt(1 / rho**2 - 1)
    assert recovery.noise_tolerance(t, 0.9) == pytest.approx(exact, rel=0.02)
    assert recovery.noise_tolerance(3 * t, 0.9) == pytest.approx(3 * exact, rel=0.02)
    rho = 2 * math.sin(math.pi * 0.5 / 6)
    assert recovery.noise_tolerance(t, 0.5) == pytest.approx(math.sqrt(1 / rho**2 - 1), rel=0.02)


def test_noise_tolerance_of_tied_and_constant_truths():
    """Two equal groups: no untied estimate ranks above sqrt(3)/2 < 0.9, so nothing is
    tolerated; below that ceiling a little is. A constant truth has no rank: NaN."""
    two = np.repeat([0.0, 1.0], 5000)
    assert recovery.noise_tolerance(two, 0.9) == 0.0
    assert 0.0 < recovery.noise_tolerance(two, 0.8) < math.inf
    assert math.isnan(recovery.noise_tolerance(np.zeros(10), 0.9))
    assert math.isnan(recovery.noise_tolerance([0.0, -np.inf, -np.inf], 0.9))   # junk is left out
    with pytest.raises(ValueError, match="target must lie in"):
        recovery.noise_tolerance(two, 1.0)


def test_recovery_refuses_bad_input():
    with pytest.raises(ValueError, match="every row is junk"):
        recovery.recovery([0.0, 1.0], [-np.inf, -np.inf])
    with pytest.raises(ValueError, match="true_log_weights has 1 entries, expected 2"):
        recovery.recovery([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="log_weights must be finite"):
        recovery.recovery([0.0, -np.inf], [0.0, 0.0])


def test_sir_effect_by_hand():
    classes = np.array([0, 0, 1, -1])
    data = np.array([0.5, 0.5])
    before = recovery.sir_effect(np.ones(4), classes, data)     # mix (2/3, 1/3): TV 1/6; junk 1/4
    assert before["class_tv"] == pytest.approx(1 / 6) and before["junk_share"] == pytest.approx(0.25)
    after = recovery.sir_effect([0.25, 0.25, 0.5, 0.0], classes, data)
    assert after == {"class_tv": 0.0, "junk_share": 0.0}
    only_junk = recovery.sir_effect([0, 0, 0, 3], classes, data)
    assert math.isnan(only_junk["class_tv"]) and only_junk["junk_share"] == 1.0
    with pytest.raises(ValueError, match="not all 0"):
        recovery.sir_effect(np.zeros(4), classes, data)
