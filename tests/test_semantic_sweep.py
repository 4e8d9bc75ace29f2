"""The semantic-loss sweep: grid, config checks before Ray, the smoke sweep's MLflow runs, resume."""
from __future__ import annotations

import csv
import json
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import smoke
from raydgm.config import ResampleConfig, SSLConfig, SSLTrial, SweepConfig
from raydgm.sweeps import cli, semantic



def _main(argv: list[str]) -> int:
    return cli.main(argv, SweepConfig, semantic.run_semantic_sweep, "semantic_weight.py", "", "",
                      smoke="smoke", default="default", presets=("study", "paper"))


def _script(home: Path, *args: str):
    return smoke.script(home, *args)


def _runs(home: Path, name: str = "semantic_weight_smoke") -> tuple[object, list]:
    return smoke.runs(f"sqlite:///{home / 'mlflow.db'}", name)


def test_grid_runs_supervised_only_once_per_size_and_seed():
    cfg = SweepConfig.from_dict({"labeled_sizes": [10, 20], "semantic_weights": [0.1, 1.0],
                                 "unlabeled": ["none", "generated", "weighted"], "seeds": [0, 1, 2]})
    grid = [t.grid() for t in semantic.trial_grid(cfg)]
    assert len(grid) == 2 * (1 + 2 * 2) * 3
    assert len({tuple(sorted(g.items())) for g in grid}) == len(grid)
    assert all(g["semantic_weight"] == 0.0 for g in grid if g["unlabeled"] == "none")
    assert sum(g["unlabeled"] == "none" for g in grid) == 2 * 3
    assert {g["generator"] for g in grid} == {"-", "baseline"}       # pipeline.generator, by its kind


def test_grid_runs_generated_sources_per_generator_and_none_and_real_once():
    """sizes x (none + generators x generated-sources x weights + real x weights) x seeds."""
    cfg = SweepConfig.from_dict({
        "generators": {"weak": {"model": {"kind": "baseline"}}, "vae": {"model": {"kind": "vae"}}},
        "labeled_sizes": [10, 20], "semantic_weights": [0.01, 0.1, 1.0], "seeds": [0, 1],
        "unlabeled": ["none", "generated", "resampled", "weighted", "real"]})
    trials = semantic.trial_grid(cfg)
    grid = [t.grid() for t in trials]
    assert len(grid) == 2 * (1 + 2 * 3 * 3 + 3) * 2
    assert len({tuple(sorted(g.items())) for g in grid}) == len(grid)
    by_source = {u: {g["generator"] for g in grid if g["unlabeled"] == u} for u in cfg.unlabeled}
    assert by_source == {"none": {"-"}, "real": {"-"}, "generated": {"weak", "vae"},
                         "resampled": {"weak", "vae"}, "weighted": {"weak", "vae"}}
    pipes = cfg.pipelines()
    assert list(pipes) == ["weak", "vae"] and pipes["vae"].generator.model.kind == "vae"
    assert pipes["weak"].replace(generator=pipes["vae"].generator.to_dict()) == pipes["vae"]  # only the generator differs
    names = {t.name for t in trials}
    assert {"n10-none-s0", "n10-real-w0.1-s1", "n20-vae-resampled-w0.01-s0"} <= names and len(names) == len(grid)
    assert len({t.key("parent") for t in trials}) == len(grid)


def test_a_trial_is_built_once_as_a_frozen_typed_config():
    """The grid holds SSLTrial objects whose ssl is the sweep's ssl section with the four grid
    values put in; the semantic weight reaches ssl.train as trial.ssl.semantic_weight, and no
    name or key is parsed back."""
    cfg = SweepConfig.from_dict({"labeled_sizes": [20], "semantic_weights": [0.000166, 2.5], "seeds": [3],
                                 "unlabeled": ["none", "weighted"], "ssl": {"epochs": 2, "batch_size": 8}})
    none, small, big = semantic.trial_grid(cfg)
    assert isinstance(small, SSLTrial) and isinstance(small.ssl, SSLConfig)
    assert small.ssl == SSLConfig.from_dict(cfg.ssl.to_dict() | {"labeled_size": 20, "unlabeled": "weighted",
                                                                "semantic_weight": 0.000166, "seed": 3})
    assert (none.ssl.semantic_weight, big.ssl.semantic_weight, none.generator) == (0.0, 2.5, "-")
    assert small.grid() == {"generator": "baseline", "labeled_size": 20, "unlabeled": "weighted",
                            "semantic_weight": 0.000166, "seed": 3}
    assert small.name == "n20-baseline-weighted-w0.000166-s3"
    assert small.key("p1") == ("p1:generator=baseline:labeled_size=20:seed=3:semantic_weight=0.000166:"
                               "unlabeled=weighted")            # the key of runs made before SSLTrial
    with pytest.raises(ValidationError, match="frozen"):
        small.ssl.semantic_weight = 1.0
    with pytest.raises(ValueError, match="need a generator"):
        SSLTrial(generator="-", ssl=small.ssl)
    with pytest.raises(ValueError, match="need a generator"):
        SSLTrial(generator="vae", ssl=none.ssl)
    assert pickle.loads(pickle.dumps(small)) == small          # what Tune does to a trial's config


@pytest.mark.parametrize("changes, message", [
    ({"generators": {}}, "generators must name at least one generator"),
    ({"generators": {"a-b": {}}}, "generators: name 'a-b' must be letters"),
    ({"generators": {"vae": {"model": {"kind": "vae"}}}, "pipeline": {"generator": {"epochs": 3}}},
     "set either generators (a sweep axis) or pipeline.generator"),
    ({"generators": {"vae": {"model": {"kind": "vae"}, "epocs": 3}}}, "unknown key 'generators.vae.epocs'"),
])
def test_generator_axis_refuses_bad_configs(changes, message):
    with pytest.raises(ValueError) as err:
        SweepConfig.from_dict(changes)
    assert message in str(err.value)


def test_presets_load_and_differ():
    smoke, default, paper = (cli.load_sweep(SweepConfig, p) for p in ("smoke", "default", "paper"))
    assert smoke.pipeline.data.name == "digits" and default.pipeline.data.name == "mnist5k"
    assert paper.pipeline.data.name == "cifar10" and 0.000166 in paper.semantic_weights
    assert paper.ssl.epochs == 20 and paper.ssl.batch_size == 32 and paper.ssl.learning_rate == 1e-3
    for cfg in (smoke, default, paper):
        assert list(cfg.pipelines())[-1] == "vae" and len(cfg.pipelines()) == 2
    assert set(default.unlabeled) >= {"none", "generated", "resampled"}
    assert len(default.seeds) >= 3 and len([w for w in default.semantic_weights if w > 0]) >= 3
    study, known = (cli.load_sweep(SweepConfig, p) for p in ("study", "known_bias"))
    pipelines = study.pipelines()
    assert {k: pipelines[k] for k in default.pipelines()} == default.pipelines(), \
        "the study reuses make demo's cached pipelines"
    assert {k: pipelines[k] for k in ("skewed", "contaminated")} == {
        k: v for k, v in known.pipelines().items() if k in ("skewed", "contaminated")}, "and known_bias's"
    assert pipelines["pixelcnnpp"].generator.model.kind == "pixelcnnpp" and len(pipelines) == 5
    assert (len(semantic.trial_grid(default)), len(semantic.trial_grid(study))) == (
        1 * (1 + 2 * 2 * 3) * 3, 2 * (1 + 5 * 4 * 3 + 3) * 3)                  # 39 and 384 trials
    assert study.semantic_weights == default.semantic_weights, "the trimming rule keeps the default's weights"
    assert min(study.semantic_weights) == 0.000166 and max(study.semantic_weights) / 0.000166 >= 1e3
    with pytest.raises(ValueError, match="unknown preset 'nope'; known presets: .*default"):
        cli.load_sweep(SweepConfig, "nope")
    assert known.pipeline == default.pipeline and known.ssl == default.ssl, "the default pipeline"
    assert {g.model.kind for g in known.generators.values()} == {"skewed", "contaminated"}


@pytest.mark.parametrize("override, message", [
    ("ssl.labled_size=5", "unknown key 'ssl.labled_size' (did you mean 'labeled_size'?)"),
    ("ssl.semantic_weight=0.1", "key 'ssl.semantic_weight' is set per trial by the sweep's grid; "
                                "list its values in 'semantic_weights' instead"),
    ("ssl.seed=3", "key 'ssl.seed' is set per trial by the sweep's grid; list its values in 'seeds'"),
    ("semantic_weights=[0.5,-1]", "semantic_weights must be >= 0"),
    ("labeled_sizes=[5000]", "labeled_sizes: 5000 cannot be drawn from the digits train split"),
    ("labeled_sizes=[55]", "not divisible by the number of classes 10"),
    ("pipeline.tracking.tracking_uri=http://127.0.0.1:9", "http://127.0.0.1:9 is unreachable"),
    ("resources.storage_path=s3://bucket/tune", "must be a directory; on a cluster"),
    ("pipeline.density_ratio.features=domain", "pipeline.density_ratio.features=domain leaks labels into "
                                               "the weights"),
])
def test_bad_config_fails_before_any_compute(tmp_path, capsys, override, message):
    home = tmp_path / "home"
    assert _main(["--smoke-test", "--home", str(home), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err
    stages = [p.name for p in home.iterdir()] if home.exists() else []
    assert not set(stages) & {"train_generator", "generate", "tune"}, "nothing was computed"


def test_resume_without_an_interrupted_sweep_is_a_clear_error(tmp_path, capsys):
    assert _main(["--smoke-test", "--home", str(tmp_path), "--resume"]) == 2
    assert "--resume: no interrupted sweep of this config" in capsys.readouterr().err


def test_smoke_sweep_logs_parent_trials_and_stages_to_mlflow(smoke_sweep):
    home, out = smoke_sweep.home, smoke_sweep.output
    assert smoke_sweep.returncode == 0, out[-3000:]
    assert "| labeled | generator | unlabeled | weight | test accuracy (mean [95% CI]) |" in out
    assert "| generator | unlabeled | 50 labeled |" in out.split("Table 6.4")[1] and "Table 6.3" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}" in out
    client, runs = _runs(home)
    experiment = client.get_experiment_by_name("semantic_weight_smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the page to open: the experiment's runs in the UI's "Model training" view, not its GenAI one
    assert (f"then open http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
            "?workflowType=machine_learning") in out
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    trials = [r for r in children if r.data.tags["raydgm.stage"] == "ssl_trial"]
    cfg = cli.load_sweep(SweepConfig, "smoke")
    assert len(trials) == len(semantic.trial_grid(cfg))
    assert {r.data.params["unlabeled"] for r in trials} == set(cfg.unlabeled)
    assert {r.data.params["generator"] for r in trials} == {"-", "baseline", "vae"}
    labels = np.load(client.download_artifacts(parent.info.run_id, "test_labels.npy"))
    for run in trials:
        assert {"generator", "labeled_size", "semantic_weight", "unlabeled", "seed",
                "ssl.model.width"} <= set(run.data.params)
        predictions = np.load(client.download_artifacts(run.info.run_id, "test_predictions.npy"))
        assert predictions.dtype == np.int8 and predictions.shape == labels.shape
        assert (predictions == labels).mean() == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
        assert run.info.status == "FINISHED"
        assert run.data.tags["raydgm.device"] == "cpu" and len(run.data.tags["raydgm.node_id"]) == 56
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, cfg.ssl.epochs + 1))
        assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
        assert "train_loss" in run.data.metrics
        assert run.data.metrics["calib/test/accuracy"] == run.data.metrics["test_accuracy"]
        assert {"calib/test/ece", "calib/val/nll", "calib/test/brier", "test_ece_epoch", "val_ece"} <= set(run.data.metrics)
        bins = {m.step for m in client.get_metric_history(run.info.run_id, "reliability/test/accuracy")}
        assert bins == {m.step for m in client.get_metric_history(run.info.run_id, "reliability/test/confidence")}
        assert bins and bins <= set(range(15)) and run.data.tags["raydgm.reliability"].startswith("top-label")
        assert {"reliability.png", "reliability.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    stages = {r.data.tags["raydgm.stage"]: r for r in children if r.data.tags["raydgm.stage"] != "ssl_trial"}
    assert {"train_generator", "generate", "density_ratio", "resample", "quality"} <= set(stages)
    dr = stages["density_ratio"]
    assert {"classifier_accuracy", "roc_auc", "ece", "brier", "ess_frac", "psis_khat"} <= set(dr.data.metrics)
    assert {"calibration_curve.png", "calibration_curve.json", "weight_histogram.png",
            "weight_histogram.json"} <= {a.path for a in client.list_artifacts(dr.info.run_id)}
    assert "raw/fid_domain_mean" in stages["quality"].data.metrics
    assert client.get_metric_history(dr.info.run_id, "reliability/prob_pred")       # the binary curve, step = bin
    assert {"summary.csv", "summary.md", "selected.csv", "table_6_4.md", "table_6_3.md", "primary.md", "primary.csv",
            "accuracy_vs_weight.png",
            "accuracy_vs_weight.json", "summary.json", "reliability_by_arm.png", "reliability_by_arm.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    assert not [k for k in parent.data.metrics if k.startswith("test_accuracy/")], "no weight in a metric name"
    accuracy = {(r.data.params["generator"], r.data.params["unlabeled"]): r.data.metrics["test_accuracy"]
                for r in trials}
    ece = {(r.data.params["generator"], r.data.params["unlabeled"]): r.data.metrics["calib/test/ece"] for r in trials}
    with smoke_sweep.summary("summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(trials)            # one seed: one trial per row
    for row in table:
        assert float(row["test_accuracy_mean"]) == pytest.approx(accuracy[row["generator"], row["unlabeled"]])
        assert float(row["test_ece_mean"]) == pytest.approx(ece[row["generator"], row["unlabeled"]])
        assert int(row["seeds"]) == 1
        for ref in ("none", "generated"):       # one seed: a difference but no interval
            assert {f"diff_vs_{ref}_mean", f"diff_vs_{ref}_lo", f"diff_vs_{ref}_hi"} <= set(row)
        if row["unlabeled"] in ("resampled", "subset", "weighted"):
            expected = accuracy[row["generator"], row["unlabeled"]] - accuracy[row["generator"], "generated"]
            assert float(row["diff_vs_generated_mean"]) == pytest.approx(expected)
            assert row["diff_vs_generated_lo"] == "nan"
    with smoke_sweep.summary("primary.csv").open() as f:     # one seed: the primaries, with no p-value
        primaries = list(csv.DictReader(f))
    assert [(r["generator"], r["comparison"]) for r in primaries] == [
        (g, c) for g in ("baseline", "vae") for c in ("resampled - generated", "weighted - generated",
                                                      "resampled - subset")]
    assert all(r["p"] == r["p_holm"] == "nan" and r["reject"] == "False" for r in primaries)
    sub = primaries[2]
    assert float(sub["diff_mean"]) == pytest.approx(accuracy["baseline", "resampled"] - accuracy["baseline", "subset"])
    assert "raw weights (alpha = 1)" in smoke_sweep.summary("table_6_3.md").read_text()


# The smoke preset's stage artifacts, <stage>/<cache key>. A key hashes configs and input keys
# only: moving code must not change one, or every cached artifact of every user would be
# recomputed. The domain-CNN keys are those recorded when the weighting protocol (issue 14) made
# them; every other key changed on purpose, by a stage version: train_generator
# v2 (351193f: test bits/dim per epoch) and v3 changed both generators' keys and so every key
# downstream of them; density_ratio v2 and resample v2 (issue 22: copies of a train image share
# its fold; truth scores) changed those stages' configs again; generate v2 and features v2
# (5c1c470: one Ray Data block and one output file per input file) changed the real splits'
# feature keys and every generated set's; density_ratio v3 (spearman_class_counts) those of
# density_ratio and the stages after it; the contrastive extractor as the default weighting
# features (issue 22, chosen on the known_bias_validation generators) replaced the autoencoder's
# keys by its own and changed the density_ratio keys and those after them; density_ratio v4
# (what limits the rank: within-class spread, noise tolerance, feature ceiling) those of
# density_ratio and the stages after it again.
REAL_KEYS = {"contrastive/97b0795f48be6f66", "domain_classifier/e92c6f8625fecfc3", "features/159dc2863c5086bc",
             "features/4f5acaf500deeed1", "features/cb53e9b3c59edd98"}
# the two generators' pipelines, 7 keys each
GENERATOR_KEYS = {"density_ratio/05e232f6a86adb08", "density_ratio/7d978cd417c0bbdb", "features/3b64663b591d1733",
                  "features/678554668945d17f", "features/09d2977c33a21e02", "features/72926f0e8351a11d",
                  "generate/06964a167260d978", "generate/4e42531ef0be9008", "quality/29e2da06dc6a5792",
                  "quality/4d802a707070b7b5", "resample/4e3a371ab6e71bc5", "resample/8ef1fe0ba4021fc3",
                  "train_generator/101d6d47d2d204a6", "train_generator/dbac65e984c3a67d"}
SMOKE_KEYS = REAL_KEYS | GENERATOR_KEYS


def test_moving_code_left_every_stage_cache_key_as_it_was(smoke_sweep):
    keys = {f"{m.parent.parent.name}/{m.parent.name}" for m in smoke_sweep.home.glob("*/*/manifest.json")}
    assert keys == SMOKE_KEYS


def test_every_run_of_the_sweep_logs_its_config(smoke_sweep):
    """Parent, stage and trial runs each hold a config.json that rebuilds their config."""
    client, runs = _runs(smoke_sweep.home)
    for run in runs:
        assert "config.json" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name
    stage = next(r for r in runs if r.data.tags.get("raydgm.stage") == "resample")
    text = Path(client.download_artifacts(stage.info.run_id, "config.json")).read_text()
    assert ResampleConfig.from_dict(json.loads(text)).content_hash() == \
        cli.load_sweep(SweepConfig, "smoke").pipeline.resample.content_hash()


def test_an_interrupted_sweep_resumes_to_the_full_grid_without_duplicate_runs(tmp_path, smoke_sweep):
    home = smoke.copy_stages(smoke_sweep.home, tmp_path / "home")     # the pipeline is reused
    args = ("--set", "seeds=[0,1]", "--set", "ssl.epochs=3", "--set", "unlabeled=[none,resampled]")
    cfg = cli.load_sweep(SweepConfig, "smoke", overrides=args[1::2])
    n_trials = len(semantic.trial_grid(cfg))
    proc = _script(home, *args)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        _, runs = _runs(home)
        if sum(r.data.tags.get("raydgm.stage") == "ssl_trial" and r.info.status == "FINISHED" for r in runs) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)          # Ctrl+C: Tune saves its state and stops
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out[-3000:]
    assert "Resume with --resume" in out
    _, before = _runs(home)
    done_before = {r.info.run_id: r.info.end_time for r in before
                   if r.data.tags.get("raydgm.stage") == "ssl_trial" and r.info.status == "FINISHED"}
    assert 2 <= len(done_before) < n_trials, (len(done_before), out[-3000:])

    proc = _script(home, *args, "--resume")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    client, runs = _runs(home)
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1, "one parent run"
    trials = [r for r in runs if r.data.tags.get("raydgm.stage") == "ssl_trial"]
    keys = [tuple(r.data.params[k] for k in ("generator", "labeled_size", "unlabeled", "semantic_weight", "seed"))
            for r in trials]
    assert len(keys) == len(set(keys)) == n_trials, "every grid point once, none twice"
    assert all(r.info.status == "FINISHED" for r in trials)
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == [1, 2, 3], "no epoch logged twice, none missing"
        if run.info.run_id in done_before:     # finished before the interrupt: not rerun
            assert run.info.end_time == done_before[run.info.run_id]
    stage_runs = [r for r in runs if r.data.tags.get("raydgm.stage") == "density_ratio"]
    assert len(stage_runs) == len(cfg.pipelines()) == 2, "one per generator, not logged again on resume"
    assert np.isfinite([r.data.metrics["test_accuracy"] for r in trials]).all()


def test_pipeline_only_caches_the_stages_and_logs_nothing(tmp_path, capsys, smoke_sweep):
    """Both generators' pipelines, found in the cache the smoke sweep left (which proves they
    are computed): every stage line says reused, and no MLflow store or Tune state appears."""
    home = smoke.copy_stages(smoke_sweep.home, tmp_path / "home")
    before = {p.relative_to(home) for p in home.glob("*/*")}
    assert _main(["--smoke-test", "--home", str(home), "--pipeline-only"]) == 0
    out = capsys.readouterr().out
    assert f"pipeline ready in {home}" in out
    lines = [line for line in out.splitlines() if ": computed " in line or ": reused " in line]
    assert len(lines) >= 2 * 7 and all(": reused " in line for line in lines), lines
    assert {p.relative_to(home) for p in home.glob("*/*")} == before, "nothing computed, nothing logged"
