"""The classifier sweep: scoring (known answers), the summary, config errors, and the smoke
sweep end to end (``sweeps/classifier.py --smoke-test`` as CI runs it, then MLflow read back)."""
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from raydgm import density_ratio
from raydgm.config import ClassifierSweepConfig, DensityRatioConfig, TrackingConfig
from raydgm.sweeps import classifier as cs
from raydgm.sweeps.cli import load_sweep, main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "classifier.py"


# --------------------------------------------------------------------------- scoring

def test_ess_fraction_known_values():
    assert density_ratio.ess_fraction(np.log([1.0, 3.0])) == pytest.approx((1 + 3) ** 2 / (1 + 9) / 2, rel=1e-12)
    assert density_ratio.ess_fraction(np.array([-np.inf, 0.0, 0.0, 0.0])) == 3 / 4      # exact: equal weights
    assert density_ratio.ess_fraction(np.full(600, 2.5)) == 1.0


@pytest.fixture(scope="module", params=[1, 3], ids=["single", "crossfit"])
def fitted(request):
    """A small classifier on Gaussian features: real N(0.7, 1) vs generated N(0, 1), D = 3,
    fitted once (folds = 1) and cross-fitted (folds = 3)."""
    rng = np.random.default_rng(0)
    real, gen, test = rng.normal(0.7, 1, (300, 3)), rng.normal(0, 1, (300, 3)), rng.normal(0.7, 1, (100, 3))
    cfg = DensityRatioConfig(hidden_units=8, max_epochs=5, calibration="temperature", folds=request.param)
    data = cs.ClassifierData(real_train=real, real_test=test, generated=gen)
    history, scores = cs.fit_and_score(cfg, data, (0.0, 0.25, 0.5, 1.0))
    if cfg.folds == 1:
        model = density_ratio.fit(real, gen, cfg)
        rep = density_ratio.diagnose(model, data.real_test, data.generated[model.gen_split != "train"])
        models, n_scored = [model], (model.gen_split != "train").sum()
    else:
        cf = density_ratio.cross_fit(real, gen, cfg.folds, cfg)
        rep, models, n_scored = cf.report, cf.models, len(gen)
    return models, rep, n_scored, history, scores


def test_score_flattening_known_answers(fitted):
    _, _, n_scored, _, scores = fitted
    by_alpha = {w["alpha"]: w for w in scores.weights}
    assert scores.log_w.shape == (n_scored,) and by_alpha[0.0]["ess"] == n_scored
    assert by_alpha[0.0]["ess_frac"] == 1.0 and by_alpha[0.0]["psis_khat"] == -math.inf
    fracs = [by_alpha[a]["ess_frac"] for a in (0.0, 0.25, 0.5, 1.0)]
    assert all(a > b for a, b in zip(fracs, fracs[1:])), f"ESS must fall as alpha grows: {fracs}"
    for alpha in (0.25, 0.5, 1.0):                 # Kish's ESS written out, in plain numpy
        w = np.exp(alpha * scores.log_w)
        assert by_alpha[alpha]["ess_frac"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum() / w.size, rel=1e-9)


def test_score_at_alpha_one_is_the_out_of_sample_diagnosis(fitted):
    """The sweep scores exactly what the pipeline reports: a refit with the same config (fits
    are seeded) gives the same report, out of fold when cross-fitting."""
    models, rep, _, history, scores = fitted
    one = next(w for w in scores.weights if w["alpha"] == 1.0)
    assert one["ess_frac"] == pytest.approx(rep.ess_fraction, rel=1e-12)
    assert one["psis_khat"] == rep.khat
    assert {k: scores.fit[k] for k in cs.CLASSIFIER_METRICS} == {
        "ece": rep.ece, "brier": rep.brier, "classifier_accuracy": rep.accuracy,
        "roc_auc": rep.roc_auc, "mean_weight": rep.mean_weight}
    assert scores.fit["best_epoch"] == np.mean([m.best_epoch for m in models])
    assert scores.fit["epochs"] == sum(len(m.history) for m in models) and history == models[0].history


# --------------------------------------------------------------------------- grid and summary

def test_grid_is_the_product_and_alpha_is_scored_inside_each_trial():
    cfg = ClassifierSweepConfig.from_dict({"hidden_units": [8, 16], "learning_rates": [0.01, 0.001],
                                           "calibrations": ["none", "isotonic"], "alphas": [1.0, 0.5, 0.0],
                                           "seeds": [0, 1]})
    grid = cs.trial_grid(cfg)
    assert len(grid) == 2 * 2 * 2 * 2 and all(set(g) == set(cs.FIT_KEYS) for g in grid)
    assert len({tuple(g.values()) for g in grid}) == len(grid)
    assert cs.fit_config(cfg.pipeline.density_ratio.to_dict(), grid[-1], "cuda") == \
        cfg.pipeline.density_ratio.replace(hidden_units=16, learning_rate=0.001, calibration="isotonic",
                                           seed=1, device="cuda")


def _point(cal, seed, alpha, ece, ess_frac, khat=0.5):
    return {"hidden_units": 8, "learning_rate": 0.01, "calibration": cal, "seed": seed, "alpha": alpha,
            "ece": ece, "brier": 0.2, "ess_frac": ess_frac, "psis_khat": khat,
            "classifier_accuracy": 0.8, "roc_auc": 0.9}


def test_summary_averages_seeds_and_sorts_by_ece_then_ess():
    points = [_point("none", 0, 1.0, 0.1, 0.5), _point("none", 1, 1.0, 0.3, 0.7),
              _point("isotonic", 0, 1.0, 0.15, 0.2), _point("isotonic", 0, 0.0, 0.15, 1.0, math.nan)]
    rows = cs.summarize(points)
    assert [(r["calibration"], r["alpha"]) for r in rows] == [("isotonic", 0.0), ("isotonic", 1.0), ("none", 1.0)]
    none = rows[2]
    assert none["seeds"] == 2 and none["ece"] == pytest.approx(0.2) and none["ess_frac"] == pytest.approx(0.6)
    assert none["ece_std"] == pytest.approx(math.sqrt((0.1 ** 2 + 0.1 ** 2) / 1))
    table = cs.format_summary(rows).splitlines()
    assert len(table) == 2 + 3 and "| 0.2000 ± 0.1414 |" in table[4] and "| \u2013 |" in table[2]


def test_grid_points_read_the_final_report():
    report = {"hidden_units": 8, "learning_rate": 0.01, "calibration": "none", "seed": 0, "best_epoch": 3,
              **{k: 0.1 for k in cs.CLASSIFIER_METRICS},
              "ess_frac@1.0": 0.4, "ess@1.0": 40.0, "psis_khat@1.0": 0.6,
              "ess_frac@0.0": 1.0, "ess@0.0": 100.0, "psis_khat@0.0": None}
    points = cs.grid_points([report], (1.0, 0.0))
    assert [(p["alpha"], p["ess_frac"]) for p in points] == [(1.0, 0.4), (0.0, 1.0)]
    assert points[0]["psis_khat"] == 0.6 and math.isnan(points[1]["psis_khat"])


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("override, message", [
    ("alphas=[1.0, 1.0]", "alphas lists a value twice"),
    ("alphas=[]", "alphas must list at least one value"),
    ("alphas=[1.5]", "alphas must lie in [0, 1]"),
    ("hiden_units=[8]", "did you mean 'hidden_units'"),
    ("calibrations=[platt]", "calibrations"),
    ("pipeline.tracking.tracking_uri=http://127.0.0.1:9", "unreachable"),
])
def test_bad_config_exits_2_before_ray_starts(override, message, tmp_path, monkeypatch, capsys):
    from raydgm.pipeline import raydata

    def refuse():
        raise AssertionError("Ray must not start for a bad config")
    monkeypatch.setattr(raydata, "session", refuse)
    monkeypatch.setenv("RAYDGM_HOME", str(tmp_path))
    argv = ["--smoke-test", "--set", override]
    assert main(argv, ClassifierSweepConfig, cs.run_classifier_sweep, "classifier.py", "", "",
                smoke="classifier_smoke", default="classifier") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tune").exists()


def test_presets_share_the_pipelines_of_the_other_sweeps():
    """The classifier sweep's pipeline is the semantic sweep's baseline one: cached once."""
    for mine, theirs in (("classifier", "default"), ("classifier_smoke", "smoke")):
        from raydgm.config import SweepConfig
        assert load_sweep(ClassifierSweepConfig, mine).pipeline == \
            load_sweep(SweepConfig, theirs).pipelines()["baseline"]


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def smoke(tmp_path_factory, ray_local):
    """``python sweeps/classifier.py --smoke-test`` in a subprocess (on the session's Ray),
    MLflow and RAYDGM_HOME in a temporary folder; its output and the MLflow runs."""
    from mlflow.tracking import MlflowClient
    root = tmp_path_factory.mktemp("classifier_sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAYDGM_TUNE_STORAGE")}
    env["RAY_ADDRESS"] = ray_local.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke-test", "--home", str(root / "home"),
                           "--set", f"pipeline.tracking.tracking_uri={uri}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("classifier_smoke").experiment_id])
    parents = [r for r in runs if r.data.tags.get("raydgm.sweep") == "classifier_smoke"]
    trials = [r for r in runs if r.data.tags.get("raydgm.stage") == "classifier_trial"]
    return SimpleNamespace(root=root, home=root / "home", uri=uri, out=proc.stdout, client=client,
                           runs=runs, parents=parents, trials=trials)


def _by_point(trials):
    return {(r.data.params["calibration"], float(r.data.params["alpha"])): r for r in trials}


def test_smoke_script_logs_a_parent_and_one_run_per_grid_point(smoke):
    cfg = load_sweep(ClassifierSweepConfig, "classifier_smoke")
    assert len(smoke.parents) == 1
    parent = smoke.parents[0]
    assert parent.info.status == "FINISHED" and f"parent run {parent.info.run_id}" in smoke.out
    for cal in cfg.calibrations:                     # the progress line of each finished fit
        assert f"trial h32-lr0.001-{cal}-s0: ECE " in smoke.out
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in smoke.runs if r is not parent)
    stages = {r.data.tags.get("raydgm.stage") for r in smoke.runs}
    assert {"train_generator", "generate", "density_ratio", "resample"} <= stages
    points = _by_point(smoke.trials)
    assert len(smoke.trials) == len(points) == len(cfg.calibrations) * len(cfg.alphas)
    assert set(points) == set(itertools.product(cfg.calibrations, cfg.alphas))
    for (cal, alpha), run in points.items():
        assert run.info.status == "FINISHED"
        assert run.data.params["hidden_units"] == "32" and run.data.params["learning_rate"] == "0.001"
        assert run.data.params["density_ratio.calibration"] == cal
        assert {"ece", "brier", "ess_frac", "classifier_accuracy", "roc_auc"} <= set(run.data.metrics)
        assert ("psis_khat" in run.data.metrics) == (alpha > 0)      # -inf at alpha = 0: left out
        files = {a.path: a.file_size for a in smoke.client.list_artifacts(run.info.run_id)}
        assert files["calibration_curve.png"] > 5000
        assert {"calibration_curve.json", "weight_histogram.json"} <= set(files)
        curve = json.loads(Path(smoke.client.download_artifacts(run.info.run_id, "calibration_curve.json")).read_text())
        points_logged = [dict(zip(curve["columns"], row)) for row in curve["data"]]
        for axis in ("prob_pred", "prob_true"):     # the same curve as metrics the chart view overlays, step = bin
            history = sorted(smoke.client.get_metric_history(run.info.run_id, f"reliability/{axis}"), key=lambda m: m.step)
            assert [m.value for m in history] == pytest.approx([p[axis] for p in points_logged])
            assert [m.step for m in history] == [min(int(p["prob_pred"] * 10), 9) for p in points_logged]
        assert run.data.tags["raydgm.reliability"].startswith("P(real), 10 equal-width bins")
        saved = Path(smoke.client.download_artifacts(run.info.run_id, "config.json")).read_text()
        assert DensityRatioConfig.from_dict(json.loads(saved)).calibration == cal      # every run: its config
        steps = [m.step for m in smoke.client.get_metric_history(run.info.run_id, "val_loss")]
        # the loss curve is fold 0's; "epochs" counts every fold's (5 folds, up to 15 each)
        assert sorted(steps) == list(range(len(steps))) and len(steps) < run.data.metrics["epochs"] <= 75
    logged = {a.path for a in smoke.client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.csv", "ece_vs_ess.png", "calibration_curves.png",
            "calibration_curves.json"} <= logged


def test_smoke_table_is_sorted_by_ece_and_matches_the_runs(smoke):
    lines = [line for line in smoke.out.splitlines() if line.startswith("| 32 |")]
    assert len(lines) == len(smoke.trials)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    eces = [float(c[4]) for c in cells]
    assert eces == sorted(eces)
    points = _by_point(smoke.trials)
    for c in cells:
        run = points[(c[2], float(c[3]))]
        assert float(c[4]) == pytest.approx(run.data.metrics["ece"], abs=5e-5)
        assert float(c[6]) == pytest.approx(run.data.metrics["ess_frac"], abs=5e-5)


def test_smoke_known_answers(smoke):
    points = _by_point(smoke.trials)
    for cal in {c for c, _ in points}:
        m = {a: points[(cal, a)].data.metrics for a in (0.0, 0.5, 1.0)}
        assert m[0.0]["ess_frac"] == 1.0                          # uniform weights, exactly
        assert m[0.0]["ess_frac"] > m[0.5]["ess_frac"] > m[1.0]["ess_frac"]
        for key in ("ece", "brier", "roc_auc", "classifier_accuracy", "val_loss"):
            assert m[0.0][key] == m[0.5][key] == m[1.0][key], f"{key} must not depend on alpha"
    # the trial whose config is the pipeline's own density_ratio config is that stage's classifier
    stage = next(r for r in smoke.runs if r.data.tags.get("raydgm.stage") == "density_ratio")
    report = json.loads((Path(stage.data.tags["raydgm.artifact"]) / "report.json").read_text())
    same = points[("temperature", 1.0)].data.metrics
    for mine, theirs in (("ece", "ece"), ("brier", "brier"), ("roc_auc", "roc_auc"),
                         ("ess_frac", "ess_fraction"), ("psis_khat", "khat")):
        # k-hat's grid fit amplifies the float noise of a refit in another process (~1e-8)
        assert same[mine] == pytest.approx(report[theirs], rel=1e-9 if mine != "psis_khat" else 1e-6), mine


def test_refit_in_process_agrees_and_relogging_adds_no_runs(smoke, monkeypatch):
    from raydgm.pipeline.stages import load_data, run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    monkeypatch.setenv("RAYDGM_HOME", str(smoke.home))
    cfg = load_sweep(ClassifierSweepConfig, "classifier_smoke")
    dataset, store = load_data(cfg.pipeline.data), ArtifactStore()
    arts = run_pipeline(cfg.pipeline, store, lambda _: None, dataset, quality=False)
    assert all(a.reused for a in arts.values())
    data = cs.classifier_data(cfg.pipeline, dataset, arts["samples"], store)
    params = {"hidden_units": 32, "learning_rate": 0.001, "calibration": "isotonic", "seed": 0}
    fit_cfg = cs.fit_config(cfg.pipeline.density_ratio.to_dict(), params)
    history, scores = cs.fit_and_score(fit_cfg, data, cfg.alphas)
    points = _by_point(smoke.trials)
    for w in scores.weights:
        logged = points[("isotonic", w["alpha"])].data.metrics
        assert logged["ece"] == pytest.approx(scores.fit["ece"], rel=1e-9)
        assert logged["ess_frac"] == pytest.approx(w["ess_frac"], rel=1e-9)
    track = TrackingConfig(tracking_uri=smoke.uri, experiment="classifier_smoke")
    ids = cs.log_trial(track, smoke.parents[0].info.run_id, "classifier_smoke", params, fit_cfg,
                       history, scores)
    assert ids == [points[("isotonic", w["alpha"])].info.run_id for w in scores.weights]
    exp = smoke.client.get_experiment_by_name("classifier_smoke").experiment_id
    assert len(smoke.client.search_runs([exp])) == len(smoke.runs)


def test_resume_reattaches_the_parent_and_adds_no_runs(smoke, monkeypatch):
    monkeypatch.setenv("RAYDGM_HOME", str(smoke.home))
    monkeypatch.delenv("RAYDGM_TUNE_STORAGE", raising=False)
    cfg = load_sweep(ClassifierSweepConfig, "classifier_smoke",
                     overrides=(f"pipeline.tracking.tracking_uri={smoke.uri}",))
    lines = []
    result = cs.run_classifier_sweep(cfg, resume=True, log=lines.append)
    assert any(line.startswith("sweep: resuming") for line in lines)
    assert sum(": reused" in line for line in lines) >= 4 and not any(": computed" in line for line in lines)
    assert result.parent_run_id == smoke.parents[0].info.run_id
    assert result.table in smoke.out
    exp = smoke.client.get_experiment_by_name("classifier_smoke").experiment_id
    assert len(smoke.client.search_runs([exp])) == len(smoke.runs)
    assert smoke.client.get_run(result.parent_run_id).info.status == "FINISHED"
