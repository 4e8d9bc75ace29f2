"""Known-answer tests for raydgm.resample: laws, variances, edge cases, errors."""
import numpy as np
import pytest
import scipy.stats

from raydgm import resample as R

W = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 7.0, 8.0])  # sum 31.5
P = W / W.sum()
LOG_W = np.log(W)
LOW_VARIANCE = ("systematic", "stratified", "residual")
# draws per law test; mh is kept 1 in THIN (see test_mh_law)
DRAWS = {"multinomial": 300_000, "systematic": 300_000, "stratified": 300_000,
         "residual": 300_000, "gumbel_max": 100_000, "rejection": 300_000}
THIN = 20
WITH_REPLACEMENT = tuple(m for m in R.METHODS if m != "gumbel_topk")


def draw(method, n, seed=0, log_w=LOG_W, **kw):
    return R.resample(log_w, n, method, np.random.default_rng(seed), **kw)


# ------------------------------------------------------------------------------ the law


@pytest.mark.parametrize("method", sorted(DRAWS))
def test_histogram_matches_target(method):
    n = DRAWS[method]
    idx = draw(method, n, seed=1)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    observed = R.counts(idx, W.size)
    assert observed.sum() == n
    assert scipy.stats.chisquare(observed, n * P).pvalue > 1e-3


def test_mh_law():
    """Chain thinned 1 in 20: the lag-20 autocorrelation is < 0.51**20 ~ 1e-6 here
    (rejection prob. is at most 1 - 31.5/64 = 0.51, at the max-weight state)."""
    n = 20_000 * THIN
    idx = draw("mh", n, seed=1, burn_in=1_000)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    observed = R.counts(idx[::THIN], W.size)
    assert scipy.stats.chisquare(observed, n // THIN * P).pvalue > 1e-3


def test_mh_repeat_rate_matches_stationary_rejection():
    """P(x_{t+1} = x_t) = sum_i p_i [1 - mean_j min(1, w_j/w_i) + 1/N]: rejected proposals
    plus accepted proposals of the same index."""
    rej = 1 - np.minimum(1, W[None, :] / W[:, None]).mean(axis=1)
    expected = float(np.sum(P * (rej + 1 / W.size)))
    idx = draw("mh", 400_000, seed=2, burn_in=1_000)
    assert abs(np.mean(idx[1:] == idx[:-1]) - expected) < 0.01


@pytest.mark.parametrize("seed", range(5))
def test_count_bounds(seed):
    """systematic: floor(n p_i) <= count_i <= ceil(n p_i); residual: >= floor(n p_i);
    stratified: |count_i - n p_i| < 2 (at most two boundary strata per entry)."""
    n = 1000
    expected = n * P
    sys_c = R.counts(draw("systematic", n, seed), W.size)
    res_c = R.counts(draw("residual", n, seed), W.size)
    str_c = R.counts(draw("stratified", n, seed), W.size)
    assert np.all(np.abs(sys_c - expected) < 1)
    assert np.all(res_c >= np.floor(expected - 1e-9))
    assert np.all(np.abs(str_c - expected) < 2)
    assert sys_c.sum() == res_c.sum() == str_c.sum() == n


def test_low_variance_schemes_beat_multinomial():
    """Over 2000 runs of n = 1000 draws: multinomial count variance is n p (1 - p) (within
    15%, i.e. ~5 standard errors); systematic (<= 1/4), stratified (<= 1/2) and residual
    (<= 1) are below 0.1 x that (n p (1 - p) >= 15.6 here); all unbiased."""
    n, reps = 1000, 2000
    rng = np.random.default_rng(3)
    binom_var = n * P * (1 - P)
    for method in ("multinomial",) + LOW_VARIANCE:
        c = np.stack([R.counts(R.resample(LOG_W, n, method, rng), W.size)
                      for _ in range(reps)])
        var = c.var(axis=0, ddof=1)
        assert np.all(np.abs(c.mean(axis=0) - n * P)
                      < 5 * np.sqrt(np.maximum(var, 0.25) / reps)), method
        if method == "multinomial":
            np.testing.assert_allclose(var, binom_var, rtol=0.15)
        else:
            assert np.all(var < 0.1 * binom_var), (method, var)


# ---------------------------------------------------------------------------- gumbel_topk


def test_gumbel_topk_inclusion_is_plackett_luce():
    """k = 2 of N = 5: P(i in set) = p_i + sum_{j != i} p_j p_i / (1 - p_j), by enumerating
    ordered pairs (j first, then i); first pick ~ p. Not SIR: pi_i != 2 p_i."""
    w = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    p = w / w.sum()
    pair = p[:, None] * p[None, :] / (1 - p[:, None])  # P(first j, second i)
    np.fill_diagonal(pair, 0)
    inclusion = p + pair.sum(axis=0)
    assert abs(inclusion.sum() - 2) < 1e-12
    reps = 40_000
    rng = np.random.default_rng(4)
    draws = np.stack([R.resample(np.log(w), 2, "gumbel_topk", rng) for _ in range(reps)])
    assert np.all(draws[:, 0] != draws[:, 1])
    mc = R.counts(draws.ravel(), 5) / reps
    se = np.sqrt(inclusion * (1 - inclusion) / reps)
    assert np.all(np.abs(mc - inclusion) < 5 * se), (mc, inclusion)
    assert scipy.stats.chisquare(R.counts(draws[:, 0], 5), reps * p).pvalue > 1e-3
    assert abs(inclusion[-1] - 2 * p[-1]) > 0.1  # the heaviest entry is under-represented


def test_gumbel_topk_distinct_and_ordered():
    idx = draw("gumbel_topk", 8)
    assert sorted(idx.tolist()) == list(range(8))  # k = N: a permutation
    rng = np.random.default_rng(5)
    log_w = rng.normal(size=1000)
    assert np.unique(R.resample(log_w, 300, "gumbel_topk", rng)).size == 300


def test_gumbel_topk_too_many_raises():
    with pytest.raises(ValueError, match="exceeds"):
        draw("gumbel_topk", 9)
    with pytest.raises(ValueError, match="exceeds the 2 entries with finite"):
        draw("gumbel_topk", 3, log_w=np.array([0.0, -np.inf, 1.0]))


# ------------------------------------------------------------------------------ -inf, edges


@pytest.mark.parametrize("method", R.METHODS)
def test_neg_inf_never_drawn(method):
    log_w = np.array([-np.inf, 0.3, 1.0, -np.inf, -0.5, 2.0, -np.inf])
    finite = {1, 2, 4, 5}
    n = 4 if method == "gumbel_topk" else 5_000
    idx = draw(method, n, seed=6, log_w=log_w)
    assert set(idx.tolist()) <= finite
    if method != "gumbel_topk":
        assert set(idx.tolist()) == finite


@pytest.mark.parametrize("method", R.METHODS)
def test_single_finite_entry(method):
    log_w = np.array([-np.inf, -np.inf, 5.0, -np.inf])
    n = 1 if method == "gumbel_topk" else 50
    assert np.all(draw(method, n, log_w=log_w) == 2)


@pytest.mark.parametrize("method", R.METHODS)
def test_deterministic_and_shift_invariant(method):
    rng = np.random.default_rng(7)
    log_w = rng.normal(size=200)
    n = 50 if method == "gumbel_topk" else 500
    a = draw(method, n, seed=8, log_w=log_w)
    np.testing.assert_array_equal(a, draw(method, n, seed=8, log_w=log_w))
    np.testing.assert_array_equal(a, draw(method, n, seed=8, log_w=log_w + 123.0))
    np.testing.assert_array_equal(a, draw(method, n, seed=8, log_w=list(log_w)))


def test_different_seeds_differ():
    assert not np.array_equal(draw("multinomial", 100, seed=0), draw("multinomial", 100, 1))


def test_tiny_relative_weights_underflow_to_never_drawn():
    log_w = np.array([0.0, -800.0, 0.0])  # w_1 / w_0 = e^-800 underflows to 0
    for method in WITH_REPLACEMENT:
        assert 1 not in draw(method, 1000, log_w=log_w), method


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("log_w, match", [
    (np.array([0.0, np.nan]), "NaN"),
    (np.array([0.0, np.inf]), r"\+inf"),
    (np.array([]), "empty"),
    (np.zeros((2, 3)), "1-D"),
    (np.float64(1.0), "1-D"),
    (np.array([-np.inf, -np.inf]), "all 2 entries of log_weights are -inf"),
    (np.array(["a", "b"]), "real numbers"),
    (np.array([True, False]), "real numbers"),
])
def test_bad_log_weights_raise(log_w, match):
    for method in R.METHODS:
        with pytest.raises(ValueError, match=match):
            draw(method, 1, log_w=log_w)
    with pytest.raises(ValueError, match=match):
        R.gumbel_softmax_weights(log_w, 1.0, np.random.default_rng(0))


@pytest.mark.parametrize("n", [0, -1, 2.5, True, None])
def test_bad_num_samples_raise(n):
    with pytest.raises(ValueError, match="num_samples"):
        draw("multinomial", n)


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0)])
def test_bad_rng_raises(rng):
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        R.resample(LOG_W, 10, "multinomial", rng)
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        R.gumbel_softmax_weights(LOG_W, 1.0, rng)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ValueError, match="known methods: multinomial, systematic"):
        draw("sir", 10)
    with pytest.raises(ValueError, match="unknown method"):
        draw(None, 10)


def test_option_errors():
    with pytest.raises(ValueError, match="burn_in applies only to method 'mh'"):
        draw("multinomial", 10, burn_in=5)
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        draw("mh", 10, burn_in=-1)
    with pytest.raises(ValueError, match="min_accept_rate applies only to method 'rejection'"):
        draw("systematic", 10, min_accept_rate=0.1)
    for bad in (0.0, 1.5, "0.1"):
        with pytest.raises(ValueError, match="min_accept_rate must be in"):
            draw("rejection", 10, min_accept_rate=bad)


def test_rejection_guards_low_acceptance():
    log_w = np.r_[0.0, np.full(4999, -30.0)]  # rate = (1 + 4999 e^-30) / 5000 ~ 2e-4
    with pytest.raises(ValueError, match="acceptance rate .* is below min_accept_rate"):
        draw("rejection", 10, log_w=log_w)
    assert np.all(draw("rejection", 10, log_w=log_w, min_accept_rate=1e-4) == 0)


# ------------------------------------------------------------------ gumbel_softmax_weights


def test_gumbel_softmax_sums_to_one_and_zero_at_neg_inf():
    log_w = np.array([0.0, -np.inf, 1.0, 2.0, -np.inf])
    y = R.gumbel_softmax_weights(log_w, 0.7, np.random.default_rng(9))
    assert y.dtype == np.float64 and y.shape == (5,)
    assert abs(y.sum() - 1) < 1e-12 and np.all(y >= 0)
    assert y[1] == 0 and y[4] == 0


def test_gumbel_softmax_small_tau_is_one_hot_at_perturbed_argmax():
    log_w = np.random.default_rng(10).normal(size=50)
    for seed in range(5):
        g = np.random.default_rng(seed).gumbel(size=50)  # the documented noise draw
        y = R.gumbel_softmax_weights(log_w, 1e-4, np.random.default_rng(seed))
        expected = np.zeros(50)
        expected[np.argmax(log_w + g)] = 1
        np.testing.assert_allclose(y, expected, atol=1e-6)


def test_gumbel_softmax_extreme_tau_stays_finite():
    for tau in (1e-300, 1e300):
        y = R.gumbel_softmax_weights(LOG_W, tau, np.random.default_rng(0))
        assert np.all(np.isfinite(y)) and abs(y.sum() - 1) < 1e-12


def test_gumbel_softmax_large_tau_is_uniform_over_finite():
    log_w = np.array([0.0, 3.0, -np.inf, -2.0])
    y = R.gumbel_softmax_weights(log_w, 1e6, np.random.default_rng(11))
    np.testing.assert_allclose(y, [1 / 3, 1 / 3, 0, 1 / 3], atol=1e-4)


def test_gumbel_softmax_deterministic_and_shift_invariant():
    log_w = np.random.default_rng(12).normal(size=20)
    a = R.gumbel_softmax_weights(log_w, 0.5, np.random.default_rng(13))
    b = R.gumbel_softmax_weights(log_w + 50.0, 0.5, np.random.default_rng(13))
    np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("tau", [0.0, -1.0, np.nan, np.inf, "1", None])
def test_gumbel_softmax_bad_tau_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        R.gumbel_softmax_weights(LOG_W, tau, np.random.default_rng(0))


# ------------------------------------------------------------------------------- counts


def test_counts():
    c = R.counts(np.array([0, 2, 2, 4]), 6)
    assert c.dtype == np.int64
    np.testing.assert_array_equal(c, [1, 0, 2, 0, 1, 0])
    np.testing.assert_array_equal(R.counts(np.array([], dtype=np.int64), 3), [0, 0, 0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        R.counts(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="integers"):
        R.counts(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="1-D"):
        R.counts(np.zeros((2, 2), dtype=int), 3)
