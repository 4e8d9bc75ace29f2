"""The MLflow layout that the UI's chart view relies on to overlay calibration curves across runs
(raydgm.tracking.curves, docs/calibration.md): metric names, steps and tags, written by the
semantic sweep's driver callback (``TrialRuns``) for a real tiny trial into a real MLflow sqlite
store, and by ``curves.log_binary`` for the real-vs-generated classifier."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from raydgm import tracking
from raydgm.config import SSLTrial, SweepConfig, TrackingConfig
from raydgm.data import load_dataset
from raydgm.sweeps import semantic
from raydgm.sweeps.tuning import CHECKPOINT
from raydgm.tracking import curves
from raydgm.training import ssl


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A 2-epoch trial trained for real on 8x8 digits and logged, report by report, as the sweep's
    driver does: (client, run, trial result, SSLTrial, parent run id)."""
    home = tmp_path_factory.mktemp("store")
    track = TrackingConfig(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", experiment="calib")
    parent = tracking.Run(track, "parent")
    cfg = SweepConfig.from_dict({"labeled_sizes": [50], "semantic_weights": [0.5], "unlabeled": ["real"],
                                 "seeds": [0], "ssl": {"model": {"width": 4}, "epochs": 2, "steps_per_epoch": 4,
                                                       "batch_size": 16, "eval_batch_size": 128}})
    (trial,) = semantic.trial_grid(cfg)
    ds = load_dataset("digits")
    data = ssl.SSLData(*ds.split("train"), *ds.split("val"), *ds.split("test"), ds.num_classes)
    callback = semantic.TrialRuns(track.to_dict(), parent.run_id, "calib")
    tune_trial = SimpleNamespace(trial_id="t0", config={"trial": trial}, checkpoint=None)   # what the callback reads
    states = {}

    def on_epoch(row, checkpoint):
        states[row["epoch"]] = checkpoint()
        result = semantic.epoch_metrics(row) | {"device": "cpu", "node_id": "n", "gpus": 0.0}
        callback.on_trial_result(row["epoch"], [], tune_trial, result)

    result = ssl.train(trial.ssl, data, on_epoch=on_epoch)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(states[2], Path(tmp) / CHECKPOINT)
        from ray.tune import Checkpoint
        tune_trial.checkpoint = Checkpoint.from_directory(tmp)
        callback.on_trial_complete(2, [], tune_trial)
    client = MlflowClient(track.tracking_uri)
    (run,) = [r for r in client.search_runs([parent.experiment_id]) if r.info.run_id != parent.run_id]
    return client, run, result, trial, parent.run_id


def test_trial_run_tags_and_per_epoch_metrics(logged):
    client, run, result, trial, parent = logged
    tags = run.data.tags
    assert (tags["raydgm.stage"], tags["mlflow.parentRunId"], tags["mlflow.runName"]) == ("ssl_trial", parent, trial.name)
    assert tags[curves.RELIABILITY_TAG] == curves.TOP_LABEL and run.info.status == "FINISHED"
    assert run.data.params["semantic_weight"] == "0.5" and run.data.params["unlabeled"] == "real"
    for name in ("val_accuracy", "test_accuracy_epoch", "val_ece", "test_ece_epoch", "test_accuracy",
                 "calib/test/ece", "calib/test/nll", "calib/test/brier", "calib/test/accuracy",
                 "calib/val/ece", "calib/val/nll", "calib/val/brier", "calib/val/accuracy"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == [1, 2], name          # step = epoch, once each
    rows = {r["epoch"]: r for r in result["history"]}
    ece = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test_ece_epoch")}
    assert ece == {e: pytest.approx(rows[e]["test_ece"]) for e in (1, 2)}
    best = result["calibration"]
    assert run.data.metrics["calib/test/ece"] == pytest.approx(best["test"]["ece"])
    assert run.data.metrics["calib/val/nll"] == pytest.approx(best["val"]["nll"])
    assert run.data.metrics["calib/test/accuracy"] == pytest.approx(result["test_accuracy"])


def test_reliability_curves_are_metrics_with_step_equal_to_the_bin(logged):
    client, run, result, _, _ = logged
    for split in ("val", "test"):
        curve = result["calibration"][split]["curve"]
        for axis in ("confidence", "accuracy", "count"):
            history = client.get_metric_history(run.info.run_id, f"reliability/{split}/{axis}")
            got = {m.step: m.value for m in history}
            assert len(history) == len(got) == len(curve["bin"]), "each bin once"
            assert got == {b: pytest.approx(v) for b, v in zip(curve["bin"], curve[axis])}
        assert all(0 <= b < 15 for b in curve["bin"]) and sum(curve["count"]) == len(load_dataset("digits").split(split)[1])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reliability.png", "reliability.json", "test_predictions.npy", "config.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "reliability.json")).read_text())
    assert table["columns"] == ["split", "bin", "count", "confidence", "accuracy"]


def test_a_curve_already_logged_is_not_logged_twice(logged):
    """A retried or resumed trial's completion writes into the run it has: the curve stays one
    point per bin."""
    client, run, result, _, _ = logged
    again = tracking.Run(TrackingConfig(tracking_uri=client.tracking_uri), run_id=run.info.run_id)
    assert curves.log_curve(again, "reliability/test", {"confidence": [0.5]}, [7]) is False
    history = client.get_metric_history(run.info.run_id, "reliability/test/confidence")
    assert len(history) == len(result["calibration"]["test"]["curve"]["bin"])


def test_binary_reliability_curve_steps_are_its_bins(tmp_path):
    track = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="dr")
    run = tracking.Run(track, "fit")
    curves.log_binary(run, [0.05, 0.34, 0.98], [0.0, 0.5, 1.0], n_bins=10)
    pred = run.client.get_metric_history(run.run_id, "reliability/prob_pred")
    true = run.client.get_metric_history(run.run_id, "reliability/prob_true")
    assert {m.step: m.value for m in pred} == {0: 0.05, 3: 0.34, 9: 0.98}
    assert {m.step: m.value for m in true} == {0: 0.0, 3: 0.5, 9: 1.0}
    assert run.client.get_run(run.run_id).data.tags[curves.RELIABILITY_TAG] == curves.BINARY
    with pytest.raises(ValueError, match="each step once"):
        curves.log_curve(run, "x", {"a": [1.0, 2.0]}, [1, 1])
    assert np.isfinite([m.value for m in pred]).all()


def test_typed_trial_is_what_the_callback_logs_as_params(logged):
    client, run, _, trial, _ = logged
    assert isinstance(trial, SSLTrial)
    assert {k: run.data.params[k] for k in trial.grid()} == {k: str(v) for k, v in trial.grid().items()}
    assert run.data.tags[tracking.KEY_TAG] == trial.key(logged[4])
