"""Known-answer tests for raydgm.metrics: closed forms, clean-fid agreement, brute force, errors."""
import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import softmax
from scipy.stats import norm

from raydgm import metrics as M


def rng(seed=0):
    return np.random.default_rng(seed)


def correlated(n, d, seed=0, shift=0.0):
    g = rng(seed)
    return g.normal(size=(n, d)) @ g.normal(size=(d, d)) + shift


@pytest.fixture(scope="module")
def cleanfid():
    """clean-fid's ``kernel_distance`` and ``frechet_distance``, compiled from its installed
    fid.py alone (importing cleanfid.fid pulls torchvision: seconds we do not need)."""
    spec = importlib.util.find_spec("cleanfid")
    if spec is None:
        pytest.skip("clean-fid is not installed")
    source = (Path(spec.submodule_search_locations[0]) / "fid.py").read_text()
    tree = ast.parse(source)
    wanted = {"kernel_distance", "frechet_distance"}
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"np": np, "linalg": scipy.linalg}
    exec(compile(tree, "cleanfid/fid.py", "exec"), namespace)
    return namespace


def rel(x, y):
    return abs(x - y) / max(abs(y), 1e-300)


# ------------------------------------------------------------------------------ FID


def test_fid_self_is_zero():
    a = correlated(300, 8)
    scale = np.trace(np.cov(a, rowvar=False))
    assert abs(M.frechet_distance(a, a)) < 1e-6 * scale


def test_fid_pure_shift_is_squared_norm():
    a = correlated(400, 6, seed=1)
    shift = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.5])   # ||shift||^2 = 1+4+0.25+9+0+2.25
    assert rel(M.frechet_distance(a, a + shift), 16.5) < 1e-6


def test_fid_gaussians_close_to_analytic():
    # N(0, I) vs N(0, 4I) in D = 3: D * (1 + 4 - 2 * sqrt(1 * 4)) = 3
    g = rng(2)
    a, b = g.normal(size=(20_000, 3)), 2.0 * g.normal(size=(20_000, 3))
    assert abs(M.frechet_distance(a, b) - 3.0) < 0.1


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_fid_symmetric_and_matches_cleanfid(cleanfid):
    a, b = correlated(300, 16, seed=3), correlated(250, 16, seed=4, shift=0.3)
    fid = M.frechet_distance(a, b)
    assert rel(M.frechet_distance(b, a), fid) < 1e-9
    mu_a, cov_a = np.mean(a, axis=0), np.cov(a, rowvar=False)
    mu_b, cov_b = np.mean(b, axis=0), np.cov(b, rowvar=False)
    assert rel(fid, cleanfid["frechet_distance"](mu_a, cov_a, mu_b, cov_b)) < 1e-8
    assert rel(M.frechet_from_stats(mu_a, cov_a, mu_b, cov_b), fid) < 1e-12


def test_fid_singular_covariance():
    a = correlated(10, 32, seed=5)                   # N < D: rank 9, no Cholesky factor
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(np.cov(a, rowvar=False))
    scale = np.trace(np.cov(a, rowvar=False))
    assert abs(M.frechet_distance(a, a)) < 1e-6 * scale
    shift = np.full(32, 0.5)                         # ||shift||^2 = 32 / 4
    # sqrt of round-off eigenvalues of the 23 null directions: error relative to the scale
    assert abs(M.frechet_distance(a, a + shift) - 8.0) < 1e-6 * scale
    b = correlated(200, 32, seed=6)                  # full rank: factored by Cholesky
    fid = M.frechet_distance(a, b)                   # eigendecomposition path
    assert np.isfinite(fid) and fid > 0
    assert abs(M.frechet_distance(b, a) - fid) < 1e-6 * scale


def test_fid_accepts_torch_and_float32():
    a, b = correlated(100, 5, seed=7), correlated(100, 5, seed=8)
    expected = M.frechet_distance(a, b)
    assert M.frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == expected
    assert rel(M.frechet_distance(a.astype(np.float32), b.astype(np.float32)), expected) < 1e-5


def test_gaussian_stats_matches_np_cov_and_ignores_weight_scale(monkeypatch):
    x = correlated(50, 4, seed=9)
    mu, cov = M.gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12)
    w = rng(10).uniform(0.1, 2.0, size=50)
    mu_w, cov_w = M.gaussian_stats(x, weights=w)
    mu_w3, cov_w3 = M.gaussian_stats(x, weights=3.0 * w)
    np.testing.assert_allclose(mu_w3, mu_w, rtol=1e-12)
    np.testing.assert_allclose(cov_w3, cov_w, rtol=1e-12)
    # reliability weights: numpy's aweights with ddof=1 divide by the same 1 - sum w^2
    np.testing.assert_allclose(cov_w, np.cov(x, rowvar=False, aweights=w), rtol=1e-12)
    monkeypatch.setattr(M, "CHUNK_ELEMENTS", 8)            # 2 rows per block
    np.testing.assert_allclose(M.gaussian_stats(x, weights=w)[1], cov_w, rtol=1e-12)


# ------------------------------------------------------------------------------ KID


def test_kid_full_subsets_equal_cleanfid(cleanfid):
    a, b = correlated(40, 7, seed=11), correlated(40, 7, seed=12, shift=0.2)
    kid = M.kernel_inception_distance(a, b, rng(0), num_subsets=3, subset_size=1000)
    ref = cleanfid["kernel_distance"](a, b, num_subsets=1, max_subset_size=1000)
    assert kid.values.shape == (3,)
    assert all(rel(v, ref) < 1e-10 for v in kid.values)      # permutation-invariant
    assert rel(kid.mean, ref) < 1e-10 and kid.std < 1e-10 * abs(ref)


def test_kid_replays_cleanfid_subsets(cleanfid):
    a, b = correlated(60, 5, seed=13), correlated(50, 5, seed=14, shift=0.1)
    S, m, seed = 5, 20, 1234
    state = np.random.get_state()
    try:
        np.random.seed(seed)                    # clean-fid draws x from feats2 (= b) first
        idx_b, idx_a = [], []
        for _ in range(S):
            idx_b.append(np.random.choice(50, m, replace=False))
            idx_a.append(np.random.choice(60, m, replace=False))
        np.random.seed(seed)
        ref = cleanfid["kernel_distance"](a, b, num_subsets=S, max_subset_size=m)
    finally:
        np.random.set_state(state)
    kid = M.kid_from_subsets(a, b, np.array(idx_a), np.array(idx_b))
    assert rel(kid.mean, ref) < 1e-10
    assert np.unique(kid.values).size == S


def test_kid_same_distribution_near_zero_and_shift_large():
    g = rng(15)
    a, b, c = g.normal(size=(500, 4)), g.normal(size=(500, 4)), g.normal(size=(500, 4)) + 0.5
    same = M.kernel_inception_distance(a, b, rng(1), num_subsets=50, subset_size=100)
    shifted = M.kernel_inception_distance(a, c, rng(1), num_subsets=50, subset_size=100)
    # the mean of correlated subset values has a std at most the per-subset std
    assert abs(same.mean) < 3 * same.std
    assert shifted.mean > 10 * same.std and shifted.mean > 0


def test_kid_seeded():
    a, b = correlated(80, 3, seed=16), correlated(90, 3, seed=17)
    one = M.kernel_inception_distance(a, b, rng(5), num_subsets=4, subset_size=30)
    again = M.kernel_inception_distance(a, b, rng(5), num_subsets=4, subset_size=30)
    other = M.kernel_inception_distance(a, b, rng(6), num_subsets=4, subset_size=30)
    np.testing.assert_array_equal(one.values, again.values)
    assert one.mean == again.mean and one.std == again.std
    assert not np.allclose(one.values, other.values)
    mean, std = M.mean_std(one.values)
    assert (one.mean, one.std) == (mean, std)


# ------------------------------------------------------------------------------ IS


def reference_is(p, splits):
    """The original improved-GAN loop (all probabilities positive here)."""
    scores = []
    for part in np.array_split(p, splits):
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return np.mean(scores), np.std(scores)


def test_is_uniform_is_one():
    mean, std = M.inception_score(np.full((30, 7), 1 / 7), splits=3)
    assert abs(mean - 1.0) < 1e-12 and std < 1e-12


def test_is_balanced_one_hot_is_k():
    K = 4
    probs = np.eye(K)[np.tile(np.arange(K), 10)]   # 10 contiguous chunks, each [0, 1, 2, 3]
    mean, std = M.inception_score(probs, splits=10)
    assert abs(mean - K) < 1e-12 and std < 1e-12


def test_is_matches_reference_and_logits():
    logits = 3.0 * rng(18).normal(size=(103, 10))
    probs = softmax(logits, axis=1)
    for splits in (1, 4, 10):
        got = M.inception_score(probs, splits)
        np.testing.assert_allclose(got, reference_is(probs, splits), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(M.inception_score_from_logits(logits, splits), got,
                                   rtol=1e-10, atol=1e-12)


def test_is_logits_stable_when_probs_underflow():
    logits = 800.0 * rng(19).normal(size=(50, 6))   # probabilities of exactly 0 and 1
    mean, std = M.inception_score_from_logits(logits, splits=2)
    assert np.isfinite(mean) and np.isfinite(std)
    np.testing.assert_allclose((mean, std), M.inception_score(softmax(logits, axis=1), 2),
                               rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ PRDC


def brute_prdc(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)        # (N, M)
    r_real = np.sort(d_rr + np.diag(np.full(len(real), np.inf)), axis=1)[:, k - 1]
    r_fake = np.sort(d_ff + np.diag(np.full(len(fake), np.inf)), axis=1)[:, k - 1]
    inside = d_rf < r_real[:, None]
    return {"precision": inside.any(axis=0).mean(),
            "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
            "density": inside.sum(axis=0).mean() / k,
            "coverage": (d_rf.min(axis=1) < r_real).mean()}


def test_prdc_hand_example():
    real = np.array([[0.0], [1.0], [3.0], [7.0]])    # 1-NN radii 1, 1, 2, 4
    fake = np.array([[0.5], [2.5], [12.0], [13.0]])  # 1-NN radii 2, 2, 1, 1
    got = M.prdc(real, fake, k=1)
    # precision: 0.5 in B(0,1); 2.5 in B(3,2); 12 and 13 in no real ball
    # recall: 0, 1, 3 within 2 of 0.5 or 2.5; 7 is 5 from 12 (radius 1), 4.5 from 2.5
    # density: 0.5 in 2 balls (B(0,1), B(1,1)), 2.5 in 1, others 0: (2 + 1) / (1 * 4)
    # coverage: nearest fake to 0, 1, 3 is within their radius; to 7 it is 5 > 4
    assert got == {"precision": 2 / 4, "recall": 3 / 4, "density": 3 / 4, "coverage": 3 / 4}
    # balls are open, as in the authors' code: -1 lies on the boundary of B(0, 1) only
    assert M.prdc(real, np.array([[-1.0], [0.5]]), k=1)["precision"] == 1 / 2


@pytest.mark.parametrize("k", [1, 3])
def test_prdc_matches_brute_force_chunked(monkeypatch, k):
    g = rng(20)
    real, fake = g.normal(size=(60, 2)), g.normal(size=(45, 2)) * 1.3 + 0.4
    expected = brute_prdc(real, fake, k)
    assert M.prdc(real, fake, k=k) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(M, "CHUNK_ELEMENTS", 100)          # blocks of 1-2 rows
    assert M.prdc(real, fake, k=k) == pytest.approx(expected, rel=1e-12)


def test_prdc_identical_and_far():
    real = correlated(80, 5, seed=21)
    same = M.prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0       # each point lies in its own ball and k others' ish
    far = M.prdc(real, real + 1e3, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


# ------------------------------------------------------------------------------ weighted


def test_weighted_equal_weights_equal_unweighted():
    a, b = correlated(120, 6, seed=22), correlated(100, 6, seed=23, shift=0.5)
    assert rel(M.weighted_frechet_distance(a, b, np.zeros(100)), M.frechet_distance(a, b)) < 1e-12
    assert rel(M.weighted_frechet_distance(a, b, np.full(100, -7.5)),
               M.frechet_distance(a, b)) < 1e-12                     # scale-free
    probs = softmax(2.0 * rng(24).normal(size=(100, 5)), axis=1)
    assert rel(M.weighted_inception_score(probs, np.zeros(100)),
               M.inception_score(probs, splits=1)[0]) < 1e-12


def test_weighted_fid_corrects_a_known_ratio():
    # gen ~ N(0, 1), real ~ N(1, 1); exact log w = log N(x; 1, 1) - log N(x; 0, 1) = x - 1/2
    g = rng(25)
    gen, real = g.normal(size=(20_000, 1)), g.normal(1.0, size=(20_000, 1))
    log_w = norm.logpdf(gen[:, 0], 1.0) - norm.logpdf(gen[:, 0], 0.0)
    plain = M.frechet_distance(real, gen)
    weighted = M.weighted_frechet_distance(real, gen, log_w)
    assert abs(plain - 1.0) < 0.1          # ||1 - 0||^2 + (1 + 1 - 2)
    assert weighted < 0.02


def test_weighted_is_known_answer_and_degenerate_weights():
    probs = np.eye(2)[[0, 0, 0, 1]]               # 3 of class 0, 1 of class 1: IS < 2
    # weights 1/6, 1/6, 1/6, 1/2 balance the classes: p_w = (1/2, 1/2), each KL = log 2
    log_w = np.log([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert rel(M.weighted_inception_score(probs, log_w), 2.0) < 1e-12
    # all weight on one row: p_w is that row, KL = 0, IS = 1
    only = np.array([-np.inf, 0.0, -np.inf, -np.inf])
    assert M.weighted_inception_score(probs, only) == pytest.approx(1.0, abs=1e-12)
    # a covariance from one weighted row is undefined (ESS 1)
    a = correlated(10, 2, seed=26)
    with pytest.raises(ValueError, match="nonzero entries"):
        M.weighted_frechet_distance(a, a[:4], only)
    two = np.array([0.0, 0.0, -np.inf, -np.inf])  # two rows: their plain ddof=1 stats
    assert rel(M.weighted_frechet_distance(a, a[:4], two), M.frechet_distance(a, a[:2])) < 1e-12


# ------------------------------------------------------------------------------ blocks


def test_block_indices_disjoint_and_overlapping():
    idx, disjoint = M.block_indices(100, 4, 25, rng(27))
    assert disjoint and idx.dtype == np.int64 and idx.shape == (4, 25)
    np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(100))
    idx, disjoint = M.block_indices(100, 3, 20, rng(27))
    assert disjoint and np.unique(idx).size == 60
    idx, disjoint = M.block_indices(30, 4, 10, rng(28))
    assert not disjoint and idx.shape == (4, 10) and idx.dtype == np.int64
    assert all(np.unique(row).size == 10 for row in idx) and idx.max() < 30
    np.testing.assert_array_equal(M.block_indices(30, 4, 10, rng(28))[0], idx)


def test_mean_std():
    assert M.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert M.mean_std(np.array([5.0])) == (5.0, 0.0)


# ------------------------------------------------------------------------------ errors

A = correlated(10, 3, seed=30)
B = correlated(12, 3, seed=31)
P = softmax(rng(32).normal(size=(10, 4)), axis=1)
NAN_ROWS = A.copy()
NAN_ROWS[[3, 7], 1] = [np.nan, np.inf]


FEATURE_CALLS = {
    "fid_a": lambda x: M.frechet_distance(x, B),
    "fid_b": lambda x: M.frechet_distance(B, x),
    "kid": lambda x: M.kernel_inception_distance(x, B, rng(), num_subsets=2, subset_size=5),
    "kid_subsets": lambda x: M.kid_from_subsets(x, B, np.array([[0, 1]]), np.array([[0, 1]])),
    "prdc": lambda x: M.prdc(x, B),
    "weighted_fid": lambda x: M.weighted_frechet_distance(x, B, np.zeros(12)),
    "gaussian_stats": lambda x: M.gaussian_stats(x),     # one set: no dimension to mismatch
}


@pytest.mark.parametrize("name", sorted(FEATURE_CALLS))
@pytest.mark.parametrize("bad, match", [
    (NAN_ROWS, r"has 2 of 10 rows with NaN or inf \(first at row 3\)"),
    (np.empty((0, 3)), "empty"),
    (np.empty((5, 0)), "empty"),
    (np.ones(10), "2-D"),
    (np.ones((2, 5, 3)), "2-D"),
    (np.ones((10, 4)), "feature dimension mismatch"),
    (np.array([["a", "b", "c"]] * 10), "real numbers"),
], ids=["nan", "empty", "no-dims", "1d", "3d", "dim", "strings"])
def test_feature_errors(name, bad, match):
    if name == "gaussian_stats" and match == "feature dimension mismatch":
        return
    with pytest.raises(ValueError, match=match):
        FEATURE_CALLS[name](bad)


@pytest.mark.parametrize("call, match", [
    (lambda: M.frechet_distance(A[:1], B), "feats_a has 1 rows; a covariance needs at least 2"),
    (lambda: M.gaussian_stats(A[:1]), "at least 2"),
    (lambda: M.kernel_inception_distance(A, B[:1], rng()), "feats_b has 1 rows"),
    (lambda: M.kernel_inception_distance(A, B, rng(), subset_size=1), "subset_size >= 2"),
    (lambda: M.kernel_inception_distance(A, B, rng(), num_subsets=0), "num_subsets >= 1"),
    (lambda: M.kernel_inception_distance(A, B, np.random), "np.random.Generator"),
    (lambda: M.prdc(A, B, k=10), "real_feats has 10 rows; k=10 nearest"),
    (lambda: M.prdc(A, B[:3], k=3), "fake_feats has 3 rows"),
    (lambda: M.prdc(A, B, k=0), "k must be an integer >= 1"),
])
def test_too_few_rows_and_bad_options(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("sub_a, sub_b, match", [
    ([[0, 1, 2]], [[0, 1]], "differ in shape"),
    ([[0, 10]], [[0, 1]], r"subsets_a has indices outside \[0, 10\)"),
    ([[0, 1]], [[-1, 1]], "subsets_b has indices outside"),
    ([[0, 0]], [[0, 1]], "repeats an index"),
    ([[0]], [[0]], "m >= 2"),
    ([[0.0, 1.0]], [[0, 1]], "integer"),
    (np.array([0, 1]), [[0, 1]], r"\(S, m\)"),
])
def test_kid_subset_errors(sub_a, sub_b, match):
    with pytest.raises(ValueError, match=match):
        M.kid_from_subsets(A, B, np.asarray(sub_a), np.asarray(sub_b))


@pytest.mark.parametrize("weights, match", [
    (-np.ones(10), "negative"),
    (np.full(10, np.nan), "non-finite"),
    (np.ones(9), r"shape \(10,\)"),
])
def test_gaussian_stats_weight_errors(weights, match):
    with pytest.raises(ValueError, match=match):
        M.gaussian_stats(A, weights=weights)


@pytest.mark.parametrize("log_w, match", [
    (np.r_[np.nan, np.zeros(9)], "1 NaN"),
    (np.r_[np.inf, np.zeros(9)], r"1 \+inf"),
    (np.full(10, -np.inf), "every weight is zero"),
    (np.zeros(9), r"shape \(10,\)"),
    (np.zeros((10, 1)), r"shape \(10,\)"),
])
@pytest.mark.parametrize("call", [
    lambda lw: M.weighted_frechet_distance(B, A, lw),
    lambda lw: M.weighted_inception_score(P, lw),
], ids=["fid", "is"])
def test_log_weight_errors(call, log_w, match):
    with pytest.raises(ValueError, match=match):
        call(log_w)


@pytest.mark.parametrize("probs, match", [
    (P * 2.0, r"10 rows that do not sum to 1 .* softmax"),
    (np.r_[P[:9], [[0.5, 0.5, 0.5, -0.5]]], "negative"),
    (np.r_[P[:9], [[np.nan, 0.5, 0.5, 0.0]]], "NaN or inf"),
    (P[:, :, None], "2-D"),
])
@pytest.mark.parametrize("call", [
    lambda p: M.inception_score(p, splits=2),
    lambda p: M.weighted_inception_score(p, np.zeros(len(p))),
], ids=["is", "weighted"])
def test_probs_errors(call, probs, match):
    with pytest.raises(ValueError, match=match):
        call(probs)


def test_is_split_and_logit_errors():
    with pytest.raises(ValueError, match=r"splits must be in \[1, N=10\]"):
        M.inception_score(P, splits=11)
    with pytest.raises(ValueError, match="splits must be"):
        M.inception_score_from_logits(np.log(P), splits=0)
    with pytest.raises(ValueError, match="logits has 1 of 10 rows"):
        M.inception_score_from_logits(np.r_[np.log(P[:9]), [[np.inf, 0, 0, 0]]])


def test_frechet_from_stats_errors():
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="same shape|one shape"):
        M.frechet_from_stats(mu, cov, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"cov_b must have shape \(3, 3\)"):
        M.frechet_from_stats(mu, cov, mu, np.eye(2))
    with pytest.raises(ValueError, match="cov_a has 1 NaN"):
        M.frechet_from_stats(mu, np.diag([1.0, np.nan, 1.0]), mu, cov)


def test_block_and_mean_std_errors():
    with pytest.raises(ValueError, match="block_size=11 exceeds n=10"):
        M.block_indices(10, 2, 11, rng())
    with pytest.raises(ValueError, match=">= 1"):
        M.block_indices(10, 0, 5, rng())
    with pytest.raises(ValueError, match="Generator"):
        M.block_indices(10, 2, 5, 0)
    with pytest.raises(ValueError, match="values is empty"):
        M.mean_std([])
    with pytest.raises(ValueError, match="1 NaN"):
        M.mean_std([1.0, np.nan])


def test_format_pm_is_the_one_mean_pm_std_format():
    assert M.format_pm(12.3456, 0.5) == "12.35 \u00b1 0.50"            # 2 decimals from 1 up
    assert M.format_pm(0.00123, 0.00045) == "0.00123 \u00b1 0.00045"     # else 3 significant digits
    assert M.format_pm(0.91234, 0.0123, ".4f") == "0.9123 \u00b1 0.0123"
    assert M.format_pm(0.9, None, ".4f") == "0.9000"                     # one seed: no spread
    assert M.format_pm(3.0, float("nan")) == "3.00"
    assert M.format_pm(float("nan"), 0.1) == "\u2013"
