"""A known-bias generator through the pipeline (``stage_digests``'s tiny contaminated digits
pipeline): its truth reaches the weights, the density-ratio and resample scores, the quality
report and MLflow; an ordinary generator's stages carry none."""
import json

import numpy as np
import pytest

import stage_digests
from raydgm import recovery
from raydgm.config import TrackingConfig
from raydgm.pipeline import report, tables
from raydgm.pipeline import truth as known
from raydgm.pipeline.stages import load_data, run_pipeline
from raydgm.pipeline.store import ArtifactStore


def artifacts(home, name):
    """The (cached) artifacts of one of the tiny pipelines."""
    cfg = stage_digests.configs()[name]
    arts = run_pipeline(cfg, ArtifactStore(home), log=lambda _: None, quality=name == "contaminated")
    assert all(a.reused for a in arts.values())
    return cfg, arts


@pytest.fixture(scope="module")
def contaminated(tiny_pipelines):
    return artifacts(tiny_pipelines, "contaminated")


def test_samples_carry_their_truth_into_the_weights_table(contaminated):
    cfg, arts = contaminated
    ids, _, images = tables.read_samples(arts["samples"].file("samples"))
    truth = tables.read_truth(arts["samples"].file("samples"))
    junk = truth["true_class"] == -1
    assert 0.35 < junk.mean() < 0.65 and (np.isneginf(truth["true_log_weight"]) == junk).all()
    train_x, train_y = load_data(cfg.data).split("train")
    np.testing.assert_array_equal(images[~junk], train_x[truth["source_index"][~junk]])
    np.testing.assert_array_equal(truth["true_class"][~junk], train_y[truth["source_index"][~junk]])
    np.testing.assert_allclose(truth["true_log_weight"][~junk], np.log(2))      # 1 / (1 - 0.5)
    in_weights = tables.read_truth(arts["density_ratio"].file("weights.parquet"))
    assert set(in_weights) == {"sample_id", "true_log_weight", "true_class"}
    for key, values in in_weights.items():
        np.testing.assert_array_equal(values, truth[key])


def test_an_ordinary_generator_has_no_truth(tiny_pipelines):
    _, arts = artifacts(tiny_pipelines, "baseline")
    assert tables.read_truth(arts["samples"].file("samples")) is None
    assert tables.read_truth(arts["density_ratio"].file("weights.parquet")) is None
    assert "truth" not in json.loads(arts["density_ratio"].file("report.json").read_text())
    assert "truth" not in json.loads(arts["resample"].file("summary.json").read_text())


def test_the_density_ratio_report_scores_the_held_out_weights(contaminated):
    cfg, arts = contaminated
    weights = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
    truth = tables.read_truth(arts["density_ratio"].file("weights.parquet"))
    rep = json.loads(arts["density_ratio"].file("report.json").read_text())["truth"]
    expected = recovery.recovery(weights["log_weight"], truth["true_log_weight"])   # every row is out of fold
    undefined = [k for k, v in expected.items() if v != v]        # NaN: the copies' truth is one value
    assert sorted(undefined) == ["pearson", "slope", "spearman", "spearman_max"] and all(rep[k] is None for k in undefined)
    assert "spearman_class_counts" in rep and rep["spearman_class_counts"] is None   # one truth: no ranks
    spread = recovery.within_class(weights["log_weight"], truth["true_log_weight"], truth["true_class"])
    assert rep["within_class_sd"] == pytest.approx(spread["within_class_sd"]) and rep["within_class_sd"] > 0
    assert all(rep[k] is None for k in ("spearman_class_means", "rank_noise_tolerance", "spearman_features",
                                        "class_probe_accuracy"))
    assert {k: rep[k] for k in expected if k not in undefined} == pytest.approx(
        {k: v for k, v in expected.items() if k not in undefined})
    junk = truth["true_class"] == -1
    assert rep["junk_rows"] == junk.sum() and rep["ess_true"] == pytest.approx((~junk).sum())
    labels = load_data(cfg.data).split("train")[1]
    assert rep["data_class_mix"] == pytest.approx(np.bincount(labels, minlength=10) / len(labels))
    points = json.loads(arts["density_ratio"].file("truth_scatter.json").read_text())
    assert len(points["log_weight"]) == len(junk) and points["true_log_weight"].count(None) == junk.sum()
    assert arts["density_ratio"].file("truth_scatter.png").stat().st_size > 5000


def test_the_feature_ceiling_is_perfect_on_class_indicators_and_chance_on_noise():
    """Features that are the class (one-hot, junk its own class): the probe's posteriors are
    the same for every row of a class in a fold and favour it, so the estimate orders the
    classes as the truth does: at least the ceiling under ties (``spearman_max``; the folds'
    probes differ a little, which breaks some ties), accuracy 1. Features of pure noise hold
    no class: accuracy near chance, rank near 0. One fold or a constant truth: NaN."""
    rng = np.random.default_rng(0)
    classes = rng.integers(-1, 3, 2000)
    with np.errstate(divide="ignore"):
        truth = np.log(np.array([0.5, 1.0, 2.0, 0.0])[classes])      # class -1 (junk) -> w = 0
    folds = np.arange(2000) % 5
    onehot = np.eye(4)[classes + 1]
    out = known.feature_ceiling(onehot, truth, classes, folds)
    ceiling = recovery.recovery(truth[classes >= 0] + folds[classes >= 0] * 1e-9, truth[classes >= 0])["spearman_max"]
    assert ceiling - 1e-12 <= out["spearman_features"] <= 1.0 and out["class_probe_accuracy"] == 1.0
    noise = known.feature_ceiling(rng.standard_normal((2000, 4)), truth, classes, folds)
    assert abs(noise["spearman_features"]) < 0.1 and noise["class_probe_accuracy"] < 0.35
    for args in ((onehot, truth, classes, np.zeros(2000, int)), (onehot, np.zeros(2000), classes, folds)):
        assert all(v != v for v in known.feature_ceiling(*args).values())


def test_the_resample_summary_scores_sir_by_hand(contaminated):
    _, arts = contaminated
    summary = json.loads(arts["resample"].file("summary.json").read_text())
    s = summary["truth"]
    truth = tables.read_truth(arts["density_ratio"].file("weights.parquet"))
    counts = tables.read_resampled(arts["resample"].file("resampled.parquet"))["count"]
    y, junk = truth["true_class"], truth["true_class"] == -1
    data = np.array(json.loads(arts["density_ratio"].file("report.json").read_text())["truth"]["data_class_mix"])
    assert s["junk_share_before"] == pytest.approx(junk.mean())
    assert s["junk_share_drawn"] == pytest.approx(counts[junk].sum() / counts.sum())
    assert s["junk_share_true"] == 0.0
    mix = np.bincount(y[~junk], minlength=10) / (~junk).sum()
    assert s["class_tv_before"] == pytest.approx(0.5 * np.abs(mix - data).sum())
    drawn = np.bincount(y[~junk], counts[~junk], minlength=10) / counts[~junk].sum()
    assert s["class_tv_drawn"] == pytest.approx(0.5 * np.abs(drawn - data).sum())
    # alpha = 1 uses the raw weights, "used" the flattened ones: they differ unless alpha is 1
    assert summary["alpha"] < 1 and s["junk_share_used"] != s["junk_share_alpha1"]


def test_the_quality_report_and_mlflow_carry_the_truth(contaminated, tmp_path):
    from mlflow.tracking import MlflowClient

    from raydgm.tracking import runs
    cfg, arts = contaminated
    q = json.loads(arts["quality"].file("quality.json").read_text())
    assert set(q["truth"]) == {"weights", "sir"} and "truth_scatter" in q["figures"]
    assert "weights vs the known truth" in arts["quality"].file("table.md").read_text()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = runs.log_pipeline(cfg, arts, TrackingConfig(tracking_uri=uri, experiment="truth"),
                            figures=report.stage_figures)
    client = MlflowClient(tracking_uri=uri)
    dr, rs = client.get_run(ids["density_ratio"]), client.get_run(ids["resample"])
    assert dr.data.metrics["truth/junk_auc"] == pytest.approx(q["truth"]["weights"]["junk_auc"])
    assert dr.data.metrics["truth/junk_rows"] == q["truth"]["weights"]["junk_rows"]
    assert "truth/spearman" not in dr.data.metrics      # undefined (None) here: not logged
    assert "truth_scatter.png" in {a.path for a in client.list_artifacts(dr.info.run_id)}
    assert rs.data.metrics["truth/junk_share_drawn"] == pytest.approx(q["truth"]["sir"]["junk_share_drawn"])
