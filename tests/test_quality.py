"""The quality report on Gaussian features with known density ratios, and the stage end to end."""
import json

import numpy as np
import pytest

from raydgm.config import QualityConfig
from raydgm.pipeline import quality
from raydgm.pipeline.quality import FeatureSet
from raydgm.tracking import runs

D, MU = 2, 0.5   # E[w^2] = exp(D mu^2) = 1.65: weights with a usable ESS


def gaussian_sets(seed=0, n_pool=20_000):
    """Real ~ N(mu 1, I), generated ~ N(0, I); the true log ratio is mu 1.x - D mu^2 / 2."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(MU, 1.0, size=(4000, D))
    test = rng.normal(MU, 1.0, size=(2000, D))
    pool = rng.normal(0.0, 1.0, size=(n_pool, D))
    log_w = MU * pool.sum(axis=1) - D * MU ** 2 / 2
    # class "probabilities": softmax of the features, so IS is defined and differs by set
    def probs(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return (FeatureSet(ref, probs(ref)), FeatureSet(test, probs(test)),
            FeatureSet(pool, probs(pool)), log_w)


CFG = QualityConfig(methods=("systematic", "multinomial"), num_blocks=4, eval_size=500,
                    kid_subsets=3, kid_subset_size=200, noise_baseline=False)


@pytest.fixture(scope="module")
def scored():
    ref, test, pool, log_w = gaussian_sets()
    rows, per_block = quality.evaluate(ref, test, pool, log_w, CFG)
    return {r["set"]: r for r in rows}, per_block


def test_raw_fid_is_the_squared_mean_shift_and_correction_removes_it(scored):
    rows, _ = scored
    # equal covariances: FID -> |mu_p - mu_q|^2 = D mu^2 = 0.5, plus small-sample bias
    assert rows["raw"]["fid_mean"] == pytest.approx(D * MU ** 2, abs=0.06)
    for name in ("real train", "resampled (systematic)", "resampled (multinomial)",
                 "importance-weighted"):
        assert rows[name]["fid_mean"] < 0.1 * rows["raw"]["fid_mean"], name
    assert rows["real train"]["fid_mean"] < 0.1


def test_kid_and_prdc_rank_the_sets(scored):
    rows, _ = scored
    assert rows["raw"]["kid_mean"] > 10 * abs(rows["resampled (systematic)"]["kid_mean"])
    assert rows["raw"]["precision_mean"] < rows["resampled (systematic)"]["precision_mean"]
    assert rows["real train"]["coverage_mean"] > rows["raw"]["coverage_mean"]
    assert "kid_mean" not in rows["importance-weighted"]        # not defined for weighted sets


def test_importance_weighted_is_matches_resampled_is(scored):
    rows, _ = scored
    assert rows["importance-weighted"]["is_mean"] == pytest.approx(
        rows["real train"]["is_mean"], rel=0.05)


def test_rows_carry_block_statistics(scored):
    rows, per_block = scored
    for name, row in rows.items():
        fids = [b["fid"] for b in per_block[name]]
        assert len(fids) == CFG.num_blocks
        assert row["fid_mean"] == pytest.approx(np.mean(fids))
        assert row["fid_std"] == pytest.approx(np.std(fids, ddof=1))
        assert row["n"] == 500
    assert rows["raw"]["disjoint"] and rows["real train"]["disjoint"]
    assert not rows["resampled (systematic)"]["disjoint"]


def test_uniform_weights_make_weighted_equal_raw():
    ref, test, pool, _ = gaussian_sets(n_pool=2000)
    rows, _ = quality.evaluate(ref, test, pool, np.zeros(len(pool)), CFG)
    by = {r["set"]: r for r in rows}
    assert by["importance-weighted"]["fid_mean"] == pytest.approx(by["raw"]["fid_mean"], rel=1e-9)
    assert by["importance-weighted"]["is_mean"] == pytest.approx(by["raw"]["is_mean"], rel=1e-9)
    # distinct images in a block of 500 drawn from 2,000 equal weights: systematic draws every
    # 4th row (all distinct); multinomial keeps N (1 - (1 - 1/N)^n) = 442.5 in expectation
    assert by["resampled (systematic)"]["distinct"] == 500
    assert by["resampled (multinomial)"]["distinct"] == pytest.approx(2000 * (1 - (1 - 1 / 2000) ** 500), rel=0.03)
    assert "distinct" not in by["raw"] and "distinct" not in by["real train"]


def test_default_eval_size_prefers_disjoint_blocks():
    cfg = QualityConfig(num_blocks=10)
    assert quality.default_eval_size(500, 2000, cfg) == 200      # 10 disjoint blocks of the pool
    assert quality.default_eval_size(500, 500, cfg) == 100       # never below MIN_BLOCK
    assert quality.default_eval_size(60, 5000, cfg) == 60        # capped by the real floor set
    with pytest.raises(ValueError, match="eval_size=900 exceeds"):
        quality.default_eval_size(500, 5000, cfg.replace(eval_size=900))


def test_bad_inputs_are_named():
    ref, test, pool, log_w = gaussian_sets(n_pool=1000)
    with pytest.raises(ValueError, match="log_w has shape"):
        quality.evaluate(ref, test, pool, log_w[:-1], CFG)


def test_headline_metric_names_are_mlflow_safe(scored):
    rows, _ = scored
    names = runs.headline(list(rows.values()), "domain")
    assert "resampled_systematic/fid_domain_mean" in names and "importance_weighted/fid_domain_mean" in names
    assert all(all(c.isalnum() or c in "_/" for c in k) for k in names)


def test_headline_names_state_the_features_so_two_protocols_never_share_a_key(scored):
    rows, _ = scored
    domain, inception = (runs.headline(list(rows.values()), f) for f in ("domain", "inception"))
    assert set(domain).isdisjoint(inception) and len(domain) == len(inception)
    assert domain["raw/fid_domain_mean"] == inception["raw/fid_inception_mean"] == rows["raw"]["fid_mean"]
    assert domain["raw/fid_domain_std"] == rows["raw"]["fid_std"]


def test_degenerate_weights_drop_blocks_from_the_weighted_row_only():
    ref, test, pool, _ = gaussian_sets(n_pool=2000)
    log_w = np.full(len(pool), -np.inf)
    log_w[0] = 0.0                                      # all weight on one sample
    cfg = CFG.replace(methods=("multinomial",))
    rows, _ = quality.evaluate(ref, test, pool, log_w, cfg)
    by = {r["set"]: r for r in rows}
    weighted = by["importance-weighted"]
    assert weighted["blocks_used"] == 0 and "fid_mean" not in weighted   # no block has 2 weighted rows
    assert by["resampled (multinomial)"]["fid_mean"] > by["raw"]["fid_mean"]  # one image, repeated


@pytest.mark.slow
def test_vae_resampled_set_scores_no_worse_than_raw_on_the_default_dataset(tmp_path, ray_local):
    """The issue's bar: configs/vae_mnist.yaml (10 CPU epochs), domain features (~5 min)."""
    from pathlib import Path

    from raydgm.config import PipelineConfig
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    config = Path(__file__).parents[1] / "configs" / "vae_mnist.yaml"
    cfg = PipelineConfig.load(config, ["tracking.enabled=false", "quality.noise_baseline=false"])
    art = run_pipeline(cfg, ArtifactStore(tmp_path), log=lambda _: None)["quality"]
    rows = {r["set"]: r for r in json.loads(art.file("quality.json").read_text())["rows"]}
    for method in cfg.quality.methods:
        assert rows[f"resampled ({method})"]["fid_mean"] <= rows["raw"]["fid_mean"], method
        assert rows[f"resampled ({method})"]["is_mean"] >= rows["raw"]["is_mean"], method
