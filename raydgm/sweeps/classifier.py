"""The real-vs-generated classifier sweep (``sweeps/classifier.py``).

A Ray Tune grid over the density-ratio classifier of ``raydgm.density_ratio``:
``hidden_units`` x ``learning_rates`` x ``calibrations`` x ``seeds``. Each trial fits
``pipeline.density_ratio`` with its four values put in, on the pipeline's cached features (real
train split vs every generated sample), then scores that classifier at every flattening
exponent of ``alphas`` (weights w -> w^alpha). Alpha changes no fit, so each classifier is
fitted once and scored ``len(alphas)`` times; a *grid point* is (trial, alpha).

Scores are out of sample, as in the pipeline's ``density_ratio`` stage: with
``density_ratio.folds`` >= 2 (the default), the cross-fitted out-of-fold predictions of every
real train and generated row, so isotonic calibration never grades itself on its own
calibration rows; with ``folds`` = 1, the real *test* split vs the generated rows the network
did not train on (its val + calib rows).

- ``ece``, ``brier``, ``classifier_accuracy``, ``roc_auc``, ``mean_weight``: the calibrated
  classifier's (``density_ratio.diagnose``); the same at every alpha.
- ``ess_frac`` = ESS(w^alpha) / N in (0, 1] (Kish), ``ess``, ``psis_khat``: the flattened
  weights of the N held-out generated rows. ESS falls as alpha grows (d log ESS / d alpha =
  2 (E_{w^alpha}[log w] - E_{w^(2 alpha)}[log w]) <= 0); alpha = 0 gives uniform weights,
  ``ess_frac`` = 1 exactly and k-hat -inf (no tail; left out of MLflow, "–" in the table).

MLflow: one parent run per sweep (experiment = ``name``) holding the pipeline's stage runs and
one child run per grid point: flat params (``hidden_units``, ``learning_rate``,
``calibration``, ``seed``, ``alpha``, ``density_ratio.*``) and flat metrics, comparable side by
side (filter on ``params.alpha``); train / val BCE per epoch (``step=epoch``); the
classifier's calibration curve (``calibration_curve.png`` + ``.json``; ``reliability/*`` metrics
overlaid across runs by MLflow's chart view, ``raydgm.tracking.curves``) and the histogram of
the flattened log-weights (``weight_histogram.json``); the loss curves are fold 0's. Runs of one fit share the tag
``raydgm.fit``; runs are keyed by (parent, grid point), so a retried or resumed trial (it
refits from scratch: fits are short) writes into the runs it has. Tune gets the losses after
every epoch and a final report with a checkpoint of the fit's history and scores; the driver
writes the MLflow runs from it (``FitRuns``), so trials never talk to MLflow.

The summary: one row per (hidden_units, learning_rate, calibration, alpha), mean over seeds,
sorted by ECE, then ESS fraction (descending); markdown, CSV, the ECE vs ESS-fraction scatter
and the calibration curves, in ``<tune folder>/summary`` and the parent run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ray.tune import Callback

from raydgm import density_ratio, tracking
from raydgm._diagnostics import N_BINS, DensityRatioReport
from raydgm.config import (ClassifierSweepConfig, ConfigError, DensityRatioConfig, PipelineConfig,
                           TrackingConfig)
from raydgm.data import Dataset
from raydgm.metrics import format_pm
from raydgm.pipeline import plots
from raydgm.sweeps.tuning import (Log, Parent, Progress, SweepResult, checked_data, checkpoint_state,
                                  finished, prologue, report, run_pipeline_only, trial_resources,
                                  tune_grid, write_tables)
from raydgm.tracking import curves

FIT_KEYS = ("hidden_units", "learning_rate", "calibration", "seed")
CLASSIFIER_METRICS = {"ece": "ece", "brier": "brier", "classifier_accuracy": "accuracy",
                      "roc_auc": "roc_auc", "mean_weight": "mean_weight"}   # name: report field
WEIGHT_METRICS = ("ess_frac", "ess", "psis_khat")
CURVE = ("reliability_prob_pred", "reliability_prob_true")


@dataclass(frozen=True)
class ClassifierData:
    """The features every trial fits and scores on: float ``(N, D)`` arrays of one extractor.

    ``real_train``: the real train split (fitted; scored out of fold when cross-fitting);
    ``real_test``: the real test split (scored by a single fit, ``folds`` = 1); ``generated``:
    every generated sample in sample_id order.
    """

    real_train: np.ndarray
    real_test: np.ndarray
    generated: np.ndarray


def classifier_data(cfg: PipelineConfig, dataset: Dataset, samples: Any, store: Any) -> ClassifierData:
    """The cached ``cfg.density_ratio.features`` of the real splits and of ``samples`` (the
    pipeline's samples artifact); computed here only if the pipeline has not done so."""
    from raydgm.pipeline.stages import Featurizer, read_features
    feat, name = Featurizer(cfg.data, cfg.features, store, dataset), cfg.density_ratio.features
    arts = (feat.real(name, "train"), feat.real(name, "test"), feat.samples(name, samples))
    return ClassifierData(*(read_features(a)[1] for a in arts))


# --------------------------------------------------------------------------- grid

def trial_grid(cfg: ClassifierSweepConfig) -> list[dict[str, Any]]:
    """One Tune trial per (hidden_units, learning_rate, calibration, seed); alphas are scored inside each trial."""
    return [{"hidden_units": h, "learning_rate": lr, "calibration": c, "seed": s} for h in cfg.hidden_units
            for lr in cfg.learning_rates for c in cfg.calibrations for s in cfg.seeds]


def fit_config(base: dict[str, Any], params: dict[str, Any], device: str | None = None) -> DensityRatioConfig:
    """``base`` (a DensityRatioConfig dict) with a trial's values (and device) put in."""
    return DensityRatioConfig.from_dict(base | params | ({"device": device} if device else {}))


def check_grid(cfg: ClassifierSweepConfig, dataset: Dataset) -> None:
    """Refuse, before Ray starts, a trial config that does not validate or an empty real test
    split (a value listed twice, which would map two trials to one MLflow run, the config
    itself refuses: ``config.check_grid_axes``)."""
    for params in trial_grid(cfg):
        fit_config(cfg.pipeline.density_ratio.to_dict(), params)
    if len(dataset.split("test")[0]) == 0:
        raise ConfigError(f"the real test split of {dataset.name} is empty; the sweep scores on it "
                          "(set pipeline.data.test_fraction)")


# --------------------------------------------------------------------------- one trial

@dataclass(frozen=True)
class Scores:
    """What a trial measured. ``fit``: the classifier's out-of-sample metrics
    (``CLASSIFIER_METRICS``) and ``best_epoch``, ``epochs``, ``best_val_loss`` (means over the
    folds' models); ``weights``: per alpha, ``alpha``, ``ess_frac``, ``ess``, ``psis_khat``;
    ``report``: the DensityRatioReport (calibration curve, warnings); ``log_w``: float ``(N,)``
    log w of the N scored generated rows."""

    fit: dict[str, float]
    weights: list[dict[str, float]]
    report: Any
    log_w: np.ndarray


def fit_and_score(cfg: DensityRatioConfig, data: ClassifierData, alphas: Sequence[float],
                  on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], Scores]:
    """(fold 0's per-epoch history, the scores) of one fit, scored on predictions from models
    that never saw the rows: ``cfg.folds`` >= 2, the out-of-fold predictions of
    ``density_ratio.cross_fit`` (every real train and generated row); ``folds`` = 1, the real
    *test* split vs the generated rows the single fit did not train on (its val + calib rows)."""
    with warnings.catch_warnings():          # k-hat > 0.7 is a result here, not a warning
        warnings.simplefilter("ignore")
        if cfg.folds == 1:
            model = density_ratio.fit(data.real_train, data.generated, cfg, on_epoch=on_epoch)
            held_out = data.generated[model.gen_split != "train"]
            rep, models = density_ratio.diagnose(model, data.real_test, held_out), [model]
            log_w = model.log_weights(held_out)
        else:
            cf = density_ratio.cross_fit(data.real_train, data.generated, cfg.folds, cfg, on_epoch=on_epoch)
            rep, models, log_w = cf.report, cf.models, cf.log_weights
    return models[0].history, score(rep, log_w, models, alphas)


def score(rep: DensityRatioReport, log_w: np.ndarray, models: Sequence[density_ratio.DensityRatioModel],
          alphas: Sequence[float]) -> Scores:
    """Scores from a report and the out-of-sample log-weights ``log_w`` it was made from. Per
    alpha: ``ess_frac`` = ``density_ratio.ess_fraction`` of alpha x log w, ``ess`` = N x
    ``ess_frac``, ``psis_khat`` (NaN below 25 rows); at alpha = 1 they are the report's
    ``ess_fraction``, ``ess``, ``khat`` (to rounding)."""
    rows = []
    for alpha in alphas:
        flat = density_ratio.flatten(log_w, float(alpha))
        st = density_ratio.weight_stats(flat)
        rows.append({"alpha": float(alpha), "ess_frac": st["ess_fraction"], "ess": st["ess_fraction"] * flat.size,
                     "psis_khat": st["khat"]})
    fit = {name: float(getattr(rep, key)) for name, key in CLASSIFIER_METRICS.items()} | {
        "best_epoch": float(np.mean([m.best_epoch for m in models])),
        "epochs": sum(len(m.history) for m in models),
        "best_val_loss": float(np.mean([m.history[m.best_epoch]["val_loss"] for m in models]))}
    return Scores(fit, rows, rep, log_w)


def classifier_trial(config: dict[str, Any], *, data: ClassifierData, base: dict[str, Any],
                     alphas: tuple[float, ...], device: str | None, threads: int) -> None:
    """One Tune trial: fit ``base`` with ``config["trial"]``'s values, reporting the losses to
    Tune after every epoch; score every alpha; then the final report: every score (weight
    metrics as ``<metric>@<alpha>``, None when not finite: Tune's TensorBoard logger rejects
    inf), the calibration curve, ``scored`` = 1 and a checkpoint holding the history and
    scores, from which the driver writes the MLflow runs (``FitRuns``)."""
    import torch
    from raydgm.pipeline import raydata
    torch.set_num_threads(threads)
    params = config["trial"]
    device = raydata.resolve_device(device) if device else None
    cfg = fit_config(base, params, device)

    def on_epoch(row: dict[str, Any]) -> None:
        report({"epoch": row["epoch"], "train_loss": row["train_loss"], "val_loss": row["val_loss"]})

    history, scores = fit_and_score(cfg, data, alphas, on_epoch)
    flat = {f"{k}@{w['alpha']!r}": w[k] if math.isfinite(w[k]) else None
            for w in scores.weights for k in WEIGHT_METRICS}
    state = {"history": history, "fit": scores.fit, "weights": scores.weights,
             "report": dataclasses.asdict(scores.report), "log_w": torch.from_numpy(scores.log_w)}
    report(scores.fit | flat | {k: getattr(scores.report, k) for k in CURVE}
           | {"scored": 1, "device": cfg.device}, state)


class FitRuns(Callback):
    """The driver writes a finished fit's MLflow runs (``log_trial``) from its last checkpoint,
    so trials never talk to MLflow (see ``semantic.TrialRuns``)."""

    def __init__(self, track: dict[str, Any], parent: str | None, experiment: str, base: dict[str, Any]):
        self.track, self.parent, self.experiment, self.base = track, parent, experiment, base

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = checkpoint_state(trial.checkpoint)
        if state is None or (trial.last_result or {}).get("scored") != 1:
            return
        params = trial.config["trial"]
        scores = Scores(state["fit"], state["weights"], DensityRatioReport(**state["report"]),
                        state["log_w"].numpy())
        cfg = fit_config(self.base, params, trial.last_result["device"])   # the device it ran on
        log_trial(TrackingConfig(**self.track), self.parent, self.experiment, params, cfg,
                  state["history"], scores)


def fit_name(params: dict[str, Any]) -> str:
    """``h32-lr0.001-isotonic-s0``: hidden units, learning rate, calibration, seed."""
    return f"h{params['hidden_units']}-lr{params['learning_rate']:g}-{params['calibration']}-s{params['seed']}"


class FitProgress(Progress):
    """``tuning.Progress`` for classifier fits: the bar counts epochs against ``max_epochs`` per
    fit (a fit stopped early skips the rest); one line per finished fit."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" in result:                 # not the final report
            self.bar(trials).update(1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r, bar = trial.last_result or {}, self.bar(trials)
        bar.update(max(0, self.epochs - int(r.get("epochs", self.epochs))))
        ess = {k.split("@")[1]: v for k, v in r.items() if k.startswith("ess_frac@") and v is not None}
        done = sum(t.status == "TERMINATED" for t in trials) + 1
        bar.write(f"trial {self.name(trial.config['trial'])}: ECE {r.get('ece', math.nan):.4f}, Brier "
                  f"{r.get('brier', math.nan):.4f}, AUC {r.get('roc_auc', math.nan):.3f}, ESS fraction "
                  + ", ".join(f"{v:.3g} at alpha {float(a):g}" for a, v in ess.items())
                  + f" [{done}/{self.trials} fits]")


def run_key(parent: str | None, params: dict[str, Any], alpha: float) -> str:
    """The MLflow key of a grid point's run: unique under its parent."""
    return f"{parent}:" + ":".join(f"{k}={params[k]}" for k in FIT_KEYS) + f":alpha={float(alpha)!r}"


def log_trial(track: TrackingConfig, parent: str | None, experiment: str, params: dict[str, Any],
              cfg: DensityRatioConfig, history: list[dict], scores: Scores) -> list[str]:
    """One MLflow child run per alpha (found by key, so a rerun writes into it; a FINISHED one is
    left alone): params, per-epoch losses, metrics (finite ones), calibration curve, weight
    histogram, warnings. Returns the run ids, in the order of ``scores.weights``."""
    ids, rep, name = [], scores.report, fit_name(params)
    with tempfile.TemporaryDirectory() as tmp:
        png, points = plots.reliability_diagram(
            rep.reliability_prob_pred, rep.reliability_prob_true, Path(tmp) / "calibration_curve.png",
            ece=rep.ece, title=f"Calibration, held out: {name}")
        for w in scores.weights:
            run = tracking.Run.find_or_create(
                track, run_key(parent, params, w["alpha"]), f"{name}-a{w['alpha']:g}", parent=parent,
                experiment=experiment, tags={"raydgm.stage": "classifier_trial", "raydgm.fit": name})
            ids.append(run.run_id)
            if run.previous_status == "FINISHED":
                continue
            run.params(dict(params) | {"alpha": w["alpha"], "density_ratio": cfg.to_dict()})
            run.text(json.dumps(cfg.to_dict(), indent=2), "config.json")
            logged = run.logged_steps("val_loss")
            for row in (r for r in history if r["epoch"] not in logged):
                run.metrics({"train_loss": row["train_loss"], "val_loss": row["val_loss"]}, step=row["epoch"])
            values = scores.fit | {k: w[k] for k in WEIGHT_METRICS}
            run.metrics({k: v for k, v in values.items() if math.isfinite(v)})
            run.file(png)
            run.table(points, "calibration_curve.json")
            curves.log_binary(run, rep.reliability_prob_pred, rep.reliability_prob_true, N_BINS)
            flat = density_ratio.flatten(scores.log_w, w["alpha"])
            run.table(plots.weight_histogram_table(flat), "weight_histogram.json")
            if rep.warnings:
                run.text("\n".join(rep.warnings) + "\n", "warnings.txt")
            run.end("FINISHED")
    return ids


# --------------------------------------------------------------------------- summary

def grid_points(results: list[dict[str, Any]], alphas: Sequence[float]) -> list[dict[str, Any]]:
    """Per grid point (trial x alpha): its params, classifier metrics and weight metrics
    (NaN where the trial reported None: k-hat of equal weights, -inf, or of < 25 rows).
    ``results``: dicts of a trial's params and its final report."""
    out = []
    for r in results:
        fit = {k: r[k] for k in FIT_KEYS} | {k: r[k] for k in CLASSIFIER_METRICS} | {"best_epoch": r["best_epoch"]}
        for a in alphas:
            weights = {k: r.get(f"{k}@{float(a)!r}") for k in WEIGHT_METRICS}
            out.append(fit | {"alpha": float(a)} | {k: math.nan if v is None else v for k, v in weights.items()})
    return out


SUMMARY_METRICS = ("ece", "brier", "ess_frac", "psis_khat", "classifier_accuracy", "roc_auc")


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (hidden_units, learning_rate, calibration, alpha): each metric's mean (and
    ``<metric>_std``, ddof=1, 0 for one seed) over seeds; sorted by ECE, then ESS fraction
    (descending), then the grid values."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["hidden_units"], p["learning_rate"], p["calibration"], p["alpha"]), []).append(p)
    rows = []
    for (h, lr, cal, alpha), group in groups.items():
        row: dict[str, Any] = {"hidden_units": h, "learning_rate": lr, "calibration": cal,
                               "alpha": alpha, "seeds": len(group)}
        for m in SUMMARY_METRICS:
            v = np.array([p[m] for p in group], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                row[m] = float(v.mean())
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        rows.append(row)
    return sorted(rows, key=lambda r: (r["ece"], -r["ess_frac"], r["hidden_units"], r["learning_rate"],
                                       r["calibration"], r["alpha"]))


def format_summary(rows: list[dict[str, Any]]) -> str:
    """Markdown, one line per row of ``summarize``: mean (± std over seeds when > 1 seed)."""
    def cell(r: dict, m: str, fmt: str) -> str:
        return format_pm(r[m], r[m + "_std"] if r["seeds"] > 1 else None, fmt)
    lines = ["| hidden | lr | calibration | alpha | ECE | Brier | ESS frac | k-hat | accuracy | AUC | seeds |",
             "|---:|---:|---|---:|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hidden_units']} | {r['learning_rate']:g} | {r['calibration']} | {r['alpha']:g} | "
                     f"{cell(r, 'ece', '.4f')} | {cell(r, 'brier', '.4f')} | {cell(r, 'ess_frac', '.4f')} | "
                     f"{format_pm(r['psis_khat'], None, '.2f')} | {r['classifier_accuracy']:.3f} | {r['roc_auc']:.3f} | "
                     f"{r['seeds']} |")
    return "\n".join(lines)


def write_summary(folder: Path, run: tracking.Run | None, rows: list[dict], points: list[dict],
                  fits: list[dict], table: str) -> Path:
    """summary.md, summary.csv, trials.json and both figures (+ their data) in
    ``folder/summary``; logged to the parent ``run`` (then ended FINISHED) when given."""
    out = write_tables(folder, rows, points, table)
    figures = {"ece_vs_ess": plots.ece_vs_ess(rows, out / "ece_vs_ess.png"),
               "calibration_curves": plots.calibration_curves(fits, out / "calibration_curves.png")}
    for name, (_, data) in figures.items():
        (out / f"{name}.json").write_text(json.dumps(data))
    if run is not None:
        for name in ("summary.md", "summary.csv", "trials.json"):
            run.file(out / name)
        for name, (png, data) in figures.items():
            run.file(png)
            run.table(data, f"{name}.json")
        best = rows[0]
        run.metrics({"best_ece": best["ece"], "best_brier": min(r["brier"] for r in rows),
                     "best_ess_frac": max(r["ess_frac"] for r in rows)})
        run.tags({"raydgm.best_ece": f"hidden {best['hidden_units']}, lr {best['learning_rate']:g}, "
                                     f"{best['calibration']}, alpha {best['alpha']:g}"})
        run.end("FINISHED")
    return out


# --------------------------------------------------------------------------- the sweep

def run_classifier_sweep(cfg: ClassifierSweepConfig, resume: bool = False, log: Log = print,
                         pipeline_only: bool = False) -> SweepResult | None:
    """Pipeline (no quality report), then the Tune grid of classifier fits; see the module
    docstring. Raises ConfigError / TrackingError before Ray starts, SweepIncomplete when some
    trials did not finish (rerun with ``resume=True``). ``pipeline_only``: the checks, then
    the pipeline only (no MLflow, no Tune); returns None."""
    from raydgm.pipeline import raydata
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    if pipeline_only:
        run_pipeline_only([cfg.pipeline], checked_data(cfg, check_grid), quality=False, log=log)
        return None
    track, uri, dataset, folder, restored, grid = prologue(cfg, resume, check_grid, trial_grid)
    with raydata.session() as ray:
        resources, device = trial_resources(cfg.resources, ray.cluster_resources())
        store = ArtifactStore()
        arts = run_pipeline(cfg.pipeline, store, log, dataset, quality=False)
        data = classifier_data(cfg.pipeline, dataset, arts["samples"], store)
        parent = Parent(track, cfg, folder, restored, cfg.name)
        parent.log_stages(cfg.pipeline, arts, track, cfg.name)
        log(f"sweep: {len(grid)} classifier fits ({len(cfg.hidden_units)} hidden sizes x "
            f"{len(cfg.learning_rates)} learning rates x {len(cfg.calibrations)} calibrations x "
            f"{len(cfg.seeds)} seeds), each scored at {len(cfg.alphas)} alphas "
            f"({len(grid) * len(cfg.alphas)} grid points); {resources} each; Tune state in {folder}")
        base = cfg.pipeline.density_ratio.to_dict()
        dr = cfg.pipeline.density_ratio
        callbacks: list[Any] = [FitProgress(len(grid), dr.max_epochs * dr.folds, fit_name)]
        if parent.run is not None:
            callbacks.append(FitRuns(track.to_dict() | {"tracking_uri": uri}, parent.run_id, cfg.name, base))
        result_grid = tune_grid(classifier_trial, grid, folder, restored, cfg.resources, resources, log,
                                data=data, base=base, alphas=tuple(float(a) for a in cfg.alphas),
                                device=device, threads=max(1, int(resources["cpu"])), callbacks=callbacks)
    ok = finished(result_grid, len(grid), lambda m: m.get("scored") == 1, parent)
    results = [r.config["trial"] | r.metrics for r in ok]
    points = grid_points(results, cfg.alphas)
    rows = summarize(points)
    table = format_summary(rows)
    fits = [{k: r[k] for k in (*FIT_KEYS, *CURVE)} for r in results]
    write_summary(folder, parent.run, rows, points, fits, table)
    return SweepResult(rows, points, table, folder, parent.run_id, uri, parent.experiment_id)
