"""The stages end to end on sklearn's digits, through a real artifact store and Parquet."""
import json
from pathlib import Path

import numpy as np
import pytest

from raydgm import density_ratio
from raydgm.cli import main
from raydgm.config import PipelineConfig, ResampleConfig
from raydgm.pipeline import tables
from raydgm.pipeline.stages import load_data, run_pipeline
from raydgm.pipeline.store import ArtifactStore

SMALL = {"data": {"name": "digits"},
         "generator": {"model": {"kind": "baseline", "pca_dim": 8, "n_components": 4}},
         "generate": {"num_samples": 600, "batch_size": 100},
         "density_ratio": {"hidden_units": 32, "max_epochs": 15},
         "resample": {"method": "residual", "num_samples": 400},
         "features": {"domain": {"channels": [8], "feature_dim": 16, "epochs": 2}},
         "quality": {"num_blocks": 3, "kid_subsets": 2, "eval_size": 100},
         "tracking": {"enabled": False}}


@pytest.fixture
def cfg():
    return PipelineConfig.from_dict(SMALL)


def test_pipeline_writes_consistent_tables_and_reuses_them(tmp_path, cfg, ray_local):
    store, lines = ArtifactStore(tmp_path), []
    arts = run_pipeline(cfg, store, log=lines.append)
    ids, seeds, images = tables.read_samples(arts["samples"].file("samples"))
    assert images.shape == (600, 1, 8, 8) and images.dtype == np.uint8
    weights = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
    np.testing.assert_array_equal(weights["sample_id"], ids)
    assert set(weights["split"]) == {"out_of_fold"} and np.bincount(weights["fold"]).tolist() == [120] * 5
    assert np.isfinite(weights["log_weight"]).all()
    used = tables.read_resampled(arts["resample"].file("resampled.parquet"))
    np.testing.assert_array_equal(used["sample_id"], ids)
    assert used["in_pool"].all() and used["count"].sum() == 400     # cross-fitted: every row is held out
    assert arts["resample"].rows == {"resampled": int((used["count"] > 0).sum())}
    summary = json.loads(arts["resample"].file("summary.json").read_text())
    expected, stats = density_ratio.used_weights(weights["log_weight"], cfg.resample)
    np.testing.assert_array_equal(used["log_weight"], expected)
    assert {k: summary[k] for k in stats} == stats
    report = json.loads(arts["density_ratio"].file("report.json").read_text())
    assert 0.5 <= report["roc_auc"] <= 1.0 and report["ess"] >= 1.0
    n_train = len(load_data(cfg.data).split("train")[0])
    assert (report["n_real"], report["n_gen"]) == (n_train, 600)     # out of fold: every row
    assert not any(a.reused for a in arts.values())
    again = run_pipeline(cfg, store, log=lines.append)
    assert all(a.reused for a in again.values())
    assert any("reused" in line for line in lines)


def test_a_change_upstream_recomputes_downstream_only(tmp_path, cfg, ray_local):
    store = ArtifactStore(tmp_path)
    first = run_pipeline(cfg, store, log=lambda _: None)
    new_seed = run_pipeline(cfg.replace(resample={**SMALL["resample"], "seed": 1}), store, log=lambda _: None)
    assert all(new_seed[k].reused for k in ("generator", "samples", "density_ratio"))
    assert not new_seed["resample"].reused and new_seed["resample"].key != first["resample"].key
    new_gen = run_pipeline(cfg.replace(generate={**SMALL["generate"], "seed": 1}), store,
                           log=lambda _: None)
    assert new_gen["generator"].reused
    assert not any(new_gen[k].reused for k in ("samples", "density_ratio", "resample"))


def test_a_single_split_keeps_its_train_rows_out_of_the_pool(tmp_path, cfg, ray_local):
    """folds = 1: the rows the classifier trained on get no used weight (-inf) and are never
    drawn; the quality stage and the sweeps see the same pool."""
    cfg = cfg.replace(density_ratio={**SMALL["density_ratio"], "folds": 1})
    arts = run_pipeline(cfg, ArtifactStore(tmp_path), log=lambda _: None)
    weights = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
    used = tables.read_resampled(arts["resample"].file("resampled.parquet"))
    trained = weights["split"] == "train"
    assert set(weights["split"]) == {"train", "val", "calib"} and not weights["fold"].any()
    np.testing.assert_array_equal(used["in_pool"], ~trained)
    assert np.isneginf(used["log_weight"][trained]).all() and not used["count"][trained].any()
    quality = json.loads(arts["quality"].file("quality.json").read_text())
    assert quality["pool_rows"] == (~trained).sum() == json.loads(arts["resample"].file("summary.json").read_text())["pool"]


def test_the_quality_reference_is_real_data_the_classifier_never_saw(tmp_path, cfg, ray_local):
    """The classifier's inputs are features of the real train split and the samples only; the
    quality reference is the real test split, whose rows are disjoint from the train split's."""
    from raydgm.pipeline.stages import Featurizer
    store = ArtifactStore(tmp_path)
    arts = run_pipeline(cfg, store, log=lambda _: None)
    dataset = load_data(cfg.data)
    feat = Featurizer(cfg.data, cfg.features, store, dataset, progress=False)
    classifier_inputs = set(arts["density_ratio"].manifest["inputs"].values())
    assert classifier_inputs == {feat.real(cfg.density_ratio.features, "train").key,
                                 feat.samples(cfg.density_ratio.features, arts["samples"]).key}
    assert arts["quality"].manifest["inputs"]["reference"] == feat.real(cfg.quality.features, "test").key
    assert not set(dataset.splits["test"]) & set(dataset.splits["train"])
    quality = json.loads(arts["quality"].file("quality.json").read_text())
    assert (quality["reference"], quality["floor"]) == ("real test split", "real train split")


def test_cli_help_explains_every_command(capsys):
    for argv in (["--help"], ["demo", "--help"], ["config", "--help"], ["data", "--help"],
                 ["train-generator", "--help"], ["generate", "--help"], ["import-samples", "--help"],
                 ["quality", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--set KEY=VALUE" in out and "RAYDGM_HOME" in out and "noise" in out
    assert "resume" in out and "Ray Data" in out and "sha256" in out


def test_cli_config_and_data(capsys):
    assert main(["config", "resample", "--set", "method=residual"]) == 0
    out = capsys.readouterr().out
    assert '"method": "residual"' in out
    assert f"hash: {ResampleConfig(method='residual').content_hash()}" in out
    assert main(["data", "--set", "name=digits"]) == 0
    out = capsys.readouterr().out
    assert "digits: 1797 images, shape (1, 8, 8)" in out and "train" in out


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert main(["config", "resample", "--set", "alpha=2"]) == 2
    assert "'alpha'" in capsys.readouterr().err
    assert main(["demo", "--set", "density_ratio.hiden_units=3"]) == 2
    assert "did you mean 'hidden_units'" in capsys.readouterr().err
    assert main(["data", "--set", "name=npz", "--set", f"path={tmp_path / 'x.npz'}"]) == 2
    assert "x.npz" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a failed command leaves nothing behind"


def test_cli_demo_end_to_end_logs_to_mlflow(tmp_path, capsys, ray_local):
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "small.json"
    path.write_text(json.dumps({**SMALL, "tracking": {"tracking_uri": uri, "experiment": "t"}}))
    home = tmp_path / "home"
    assert main(["demo", "--config", str(path), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "roc_auc=" in out and "ess_fraction=" in out and "distinct" in out
    assert "| raw |" in out and "| importance-weighted |" in out and "±" in out
    assert "random noise: AUC=" in out and f"mlflow ui --backend-store-uri {uri}" in out
    figures = sorted(next(home.glob("quality/*/figures")).glob("*.png"))
    names = {p.stem for p in figures}
    assert {"samples", "weights", "ess_vs_alpha", "reliability", "proportion_curve",
            "quality_fid", "quality_kid", "quality_is"} <= names
    assert all(p.stat().st_size > 5000 for p in figures)
    assert all(p.with_suffix(".json").exists() for p in figures if p.stem != "samples")
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name("t").experiment_id
    by_stage = {r.data.tags["raydgm.stage"]: r for r in client.search_runs([exp_id])}
    assert set(by_stage) == {"train_generator", "generate", "density_ratio", "resample", "quality"}
    run = by_stage["quality"]
    assert all(r.info.status == "FINISHED" for r in by_stage.values())
    assert run.data.metrics["raw/fid_domain_mean"] > 0 and "noise_baseline_auc" in run.data.metrics
    assert run.data.params["config.features"] == "domain" and run.data.params["data.name"] == "digits"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/reliability.png" in logged and "figures/reliability.json" in logged
    dr = by_stage["density_ratio"]
    assert {"classifier_accuracy", "roc_auc", "ece", "brier", "ess_frac", "psis_khat"} <= set(dr.data.metrics)
    logged = {a.path for a in client.list_artifacts(dr.info.run_id)}
    assert {"calibration_curve.png", "calibration_curve.json", "weight_histogram.png"} <= logged
    assert main(["demo", "--config", str(path), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert ": computed" not in out and out.count(": reused") >= 10
    assert len(client.search_runs([exp_id])) == 5, "reused stages are not logged twice"


def test_an_unreachable_tracking_server_fails_before_any_compute(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({**SMALL, "tracking": {"tracking_uri": "http://127.0.0.1:9"}}))
    assert main(["demo", "--config", str(path), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9 is unreachable" in err and "tracking.enabled=false" in err
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("manifest.json"))


VAE_CFG = {"data": {"name": "digits"},
           "generator": {"model": {"kind": "vae", "latent_dim": 4, "hidden_channels": [8, 16, 32]},
                         "epochs": 2, "batch_size": 64},
           "generate": {"num_samples": 200, "batch_size": 50}}


def test_cli_train_generator_then_generate(tmp_path, capsys, ray_local):
    path = tmp_path / "vae.json"
    path.write_text(json.dumps(VAE_CFG))
    home = tmp_path / "home"
    assert main(["train-generator", "--config", str(path), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "val_bpd=" in out and "model.pt" in out
    ckpt = next(home.glob("train_generator/*/model.pt"))
    assert not list(home.glob("train_generator/.work-*")), "checkpoints are cleaned up after success"
    assert main(["generate", "--config", str(path), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert f"train_generator: reused {ckpt.parent}" in out
    assert "wrote 200 samples (0 dropped as NaN/Inf) from vae" in out
    samples_dir = Path(out.strip().splitlines()[-1].split("samples: ")[1])
    ids, _, images = tables.read_samples(samples_dir)
    np.testing.assert_array_equal(ids, np.arange(200))
    assert images.shape == (200, 1, 8, 8)


def test_cli_import_samples_and_use_them(tmp_path, capsys, ray_local):
    images = np.random.default_rng(0).integers(0, 256, (300, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", images=images)
    home = tmp_path / "home"
    assert main(["import-samples", str(tmp_path / "mine.npz"), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "imported 300 samples" in out and "import_samples=" in out
    ids, seeds, back = tables.read_samples(next(home.glob("import_samples/*/samples")))
    np.testing.assert_array_equal(back[:, 0], images)
    assert (seeds == -1).all()
    cfg = PipelineConfig.from_dict({**SMALL, "import_samples": str(tmp_path / "mine.npz"),  # 15 epochs: unconverged
                                    "density_ratio": {**SMALL["density_ratio"], "max_epochs": 40}})
    arts = run_pipeline(cfg, ArtifactStore(home), log=lambda _: None)
    assert "generator" not in arts and arts["samples"].reused
    report = json.loads(arts["density_ratio"].file("report.json").read_text())
    assert report["roc_auc"] > 0.95   # uniform noise is easy to tell from digits
    np.savez(tmp_path / "wrong.npz", images=np.zeros((10, 1, 16, 16), np.uint8))
    cfg = cfg.replace(import_samples=str(tmp_path / "wrong.npz"))
    with pytest.raises(ValueError, match=r"shape \(1, 16, 16\) but the real digits images \(1, 8, 8\)"):
        run_pipeline(cfg, ArtifactStore(home), log=lambda _: None)
    assert main(["import-samples", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
