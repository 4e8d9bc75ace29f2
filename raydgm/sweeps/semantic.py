"""The semantic-loss sweep: ``run_semantic_sweep``, what ``sweeps/semantic_weight.py`` calls.

1. check the config, the tracking store and the labeled sizes against the data (before any
   compute or Ray; ``--pipeline-only`` runs the same checks, less the tracking store);
2. run or reuse one cached pipeline per generator (``SweepConfig.pipelines``): generator,
   samples, features, density ratio, resampling, quality (``raydgm.pipeline.stages``);
3. put the arrays the trials need (``ssl.SSLData``, one per generator, the real splits shared)
   into Ray's object store once (``tune.with_parameters``) and run a Tune grid over
   ``labeled_size`` x (``generator``, ``unlabeled``, ``semantic_weight``) x ``seed``, one
   ``SSLTrial`` per trial (built once by ``SweepConfig.trials``); each trial is
   ``raydgm.training.ssl.train(trial.ssl, ...)`` with a checkpoint and a report per epoch,
   which the driver logs to the trial's MLflow child run (``TrialRuns``: ``TRIAL_METRICS``),
   with, when it finishes, its test predictions (``test_predictions.npy``, int8 per test
   image) and its reliability curves at the reported epoch (step-indexed metrics, see
   ``raydgm.tracking.curves``; ``reliability.png`` / ``.json``);
4. print and log the statistics (``raydgm.sweeps.study``, ``raydgm.sweeps.primary``): the
   declared primary comparisons, Holm-adjusted (``primary.md``, ``primary.csv``); per arm
   (exploratory), test accuracy and test ECE with 95% intervals and paired differences vs
   ``none`` and vs ``generated``; the thesis-shaped tables (Table 6.4: accuracy and ECE at the
   weight selected on validation; Table 6.3: sample quality per generator, and the raw
   weights (alpha = 1) beside the used ones); the plot of test accuracy vs semantic weight and
   each arm's reliability curve pooled over seeds (``reliability_by_arm.png``).

Each invocation is one MLflow parent run in the experiment named after the sweep; stage
runs and trial runs are its children. Tune's state lives in
``<storage>/<name>/<config hash>-<time>/``; ``resume=True`` restores the newest such folder of
the same config (``Tuner.restore``): finished trials are not rerun, unfinished ones continue
from their last checkpoint, and they write into the MLflow runs they already have.
"""
from __future__ import annotations

import json
import logging
import tempfile
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from ray.tune import Callback

from raydgm import tracking
from raydgm.calibration import TOP_LABEL_BINS, pool_curves
from raydgm.config import ConfigError, SSLTrial, SweepConfig, TrackingConfig
from raydgm.config.sweeps import NO_GENERATOR
from raydgm.data import Dataset, labeled_subset
from raydgm.pipeline import calibration_plots, plots, tables
from raydgm.sweeps import primary, study
from raydgm.sweeps.tuning import (Log, Parent, Progress, SweepResult, checked_data, checkpoint_state,
                                  finished, last_state, prologue, report, run_pipeline_only,
                                  trial_resources, tune_grid, write_csv, write_tables)
from raydgm.tracking import curves
from raydgm.tracking.compare import PREDICTIONS   # each trial run's artifact: int8 (N_test,) classes
from raydgm.training import ssl

LABELS = "test_labels.npy"                          # the parent run's: int8 (N_test,) true classes


def trial_grid(cfg: SweepConfig) -> list[SSLTrial]:
    """Every trial (``SweepConfig.trials``: by labeled size, then arm, then seed), its SSLConfig
    built once, here; Tune, the trainable and ``TrialRuns`` get these objects."""
    return cfg.trials()


def check_grid(cfg: SweepConfig, dataset: Dataset) -> None:
    """Every check that needs no compute, in every mode (``--pipeline-only`` too): the labeled
    sizes against the data and every trial's SSL config (built, so validated)."""
    check_labeled_sizes(cfg, dataset)
    trial_grid(cfg)


def check_labeled_sizes(cfg: SweepConfig, dataset: Dataset) -> None:
    """Every labeled size must be drawable from the real train split (before Ray starts)."""
    labels = dataset.split("train")[1]
    if dataset.num_classes < 2 or (labels < 0).any():
        raise ConfigError(f"dataset {dataset.name!r} has no class labels; the semantic-loss sweep needs them")
    for size in cfg.labeled_sizes:
        try:
            labeled_subset(labels, size, seed=0, num_classes=dataset.num_classes)
        except ValueError as err:
            raise ConfigError(f"labeled_sizes: {size} cannot be drawn from the {dataset.name} train "
                              f"split ({len(labels)} images, {dataset.num_classes} classes): {err}") from None
        if "real" in cfg.unlabeled and size >= len(labels):
            raise ConfigError(f"labeled_sizes: {size} leaves no unlabeled real images for unlabeled=real")


def ssl_data(dataset: Dataset, arts: Mapping[str, dict[str, Any]]) -> dict[str, ssl.SSLData]:
    """Generator name -> the arrays its trials need: the real splits and that generator's
    resample-stage pool (its generated images and used log-weights, and the stage's SIR
    method and number of draws: each trial draws its own SIR set from these weights, per seed,
    ``ssl_batches.generated_choices``); ``NO_GENERATOR`` -> the real splits alone. Every
    unlabeled source draws from its generator's one pool; the sweep recomputes no weight. The real arrays are shared
    (Ray's object store holds them once)."""
    split = {name: dataset.split(name) for name in ("train", "val", "test")}
    real = dict(train_images=split["train"][0], train_labels=split["train"][1],
                val_images=split["val"][0], val_labels=split["val"][1],
                test_images=split["test"][0], test_labels=split["test"][1], num_classes=dataset.num_classes)
    out = {NO_GENERATOR: ssl.SSLData(**real)}
    for name, a in arts.items():
        ids, _, images = tables.read_samples(a["samples"].file("samples"))
        used = tables.read_resampled(a["resample"].file("resampled.parquet"))
        if not np.array_equal(used["sample_id"], ids):
            raise ValueError(f"generator {name!r}: samples and the resample stage's weights cover "
                             "different sample ids; rerun the pipeline in a fresh RAYDGM_HOME")
        pool = used["in_pool"]
        sir = json.loads(a["resample"].file("summary.json").read_text())
        out[name] = ssl.SSLData(**real, generated=images[pool], log_weights=used["log_weight"][pool],
                                sir_method=sir["method"], sir_size=int(used["count"][pool].sum()))
    return out


TRIAL_METRICS = {   # MLflow metric (and Tune report key) of a trial run, step = epoch: ssl.train's row key
    "train_loss": "train_loss", "supervised_loss": "supervised_loss", "semantic_loss": "semantic_loss",
    "val_accuracy": "val_accuracy", "test_accuracy_epoch": "test_accuracy",       # this epoch's
    "val_ece": "val_ece", "test_ece_epoch": "test_ece",                           # this epoch's
    "best_epoch": "best_epoch", "best_val_accuracy": "best_val_accuracy",
    "test_accuracy": "test_accuracy_at_best",                                      # at the best epoch so far
    **{f"calib/{s}/{k}": f"{s}_{k}_at_best" for s in ("val", "test") for k in ssl.SCORES},
    "calib/val/accuracy": "best_val_accuracy", "calib/test/accuracy": "test_accuracy_at_best"}


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A trial's Tune report for one ``ssl.train`` history row: ``TRIAL_METRICS`` and the epoch."""
    return {name: row[key] for name, key in TRIAL_METRICS.items()} | {"epoch": int(row["epoch"])}


def ssl_trial(config: dict[str, Any], *, data: dict[str, ssl.SSLData], device: str | None, threads: int) -> None:
    """One Tune trial: ``config["trial"]`` (an ``SSLTrial``) trained on ``data[generator]`` with
    a checkpoint and a Tune report (``TRIAL_METRICS``) after every epoch. It does not talk to
    MLflow: the driver logs its reports (``TrialRuns``). ``device`` "auto": CUDA if this
    process sees a GPU; None: the trial's own device."""
    import torch
    torch.set_num_threads(threads)
    from raydgm.pipeline import raydata
    trial: SSLTrial = config["trial"]
    cfg = trial.ssl.replace(device=raydata.resolve_device(device)) if device else trial.ssl
    where = {"node_id": raydata.node_id() or "", "device": cfg.device, "gpus": raydata.assigned_gpus()}

    def on_epoch(row: dict[str, Any], checkpoint: Callable[[], dict]) -> None:
        report(epoch_metrics(row) | where, checkpoint())

    ssl.train(cfg, data[trial.generator], on_epoch=on_epoch, state=last_state())


class TrialRuns(Callback):
    """The trials' MLflow child runs, written by the driver from their Tune reports.

    Trials never talk to MLflow: on a cluster only the driver (on the head) needs the
    tracking server, which can then listen on the head's 127.0.0.1 (cluster.yaml), and MLflow
    never records an epoch that Tune did not. A run is found by its key tag
    (``tracking.Run.find_or_create``), so a resumed or retried trial writes into the run it
    already has and epochs already logged are skipped. Tune pickles callbacks with the
    experiment; the MLflow clients are rebuilt after a resume.
    """

    def __init__(self, track: dict[str, Any], parent: str | None, experiment: str):
        self.track, self.parent, self.experiment = track, parent, experiment
        self._runs: dict[str, tuple[tracking.Run, set[int]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runs": {}}

    def run(self, trial: Any, result: Mapping[str, Any]) -> tuple[tracking.Run, set[int]]:
        """(the trial's run, epochs already logged), created with params at its first report."""
        if trial.trial_id not in self._runs:
            point: SSLTrial = trial.config["trial"]
            config = point.ssl.to_dict() | {"device": result["device"]}     # where it trained
            run = tracking.Run.find_or_create(TrackingConfig(**self.track), point.key(self.parent), point.name,
                                              parent=self.parent, experiment=self.experiment,
                                              tags={"raydgm.stage": "ssl_trial", "raydgm.generator": point.generator})
            run.params(point.grid() | {"ssl": config})
            run.text(json.dumps(config, indent=2), "config.json")
            run.tags({"raydgm.node_id": result.get("node_id", ""), "raydgm.device": result["device"],
                      "raydgm.gpus": f"{result.get('gpus', 0.0):g}"})
            self._runs[trial.trial_id] = run, run.logged_steps("val_accuracy")
        return self._runs[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run, logged = self.run(trial, result)
        epoch = int(result["epoch"])
        if epoch not in logged:
            run.metrics({k: result[k] for k in TRIAL_METRICS}, step=epoch)
            logged.add(epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._runs:
            run = self._runs.pop(trial.trial_id)[0]
            state = checkpoint_state(trial.checkpoint)
            if state is not None:
                log_outcome(run, state, trial.config["trial"].name)
            run.end("FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._runs:     # retried or resumed: found again by its key
            self._runs.pop(trial.trial_id)[0].end("FAILED")


def log_outcome(run: tracking.Run, state: Mapping[str, Any], name: str) -> None:
    """A finished trial's last checkpoint ``state`` in its run: the test predictions
    (``test_predictions.npy``) and the reliability curves at the reported epoch, as
    step-indexed metrics (``curves.log_top_label``), ``reliability.png`` and ``reliability.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PREDICTIONS
        np.save(path, state["test_predictions"].numpy().astype(np.int8), allow_pickle=False)
        run.file(path)
        curves.log_top_label(run, state["calibration"])
        title = f"{name}: reliability at epoch {state['history'][-1]['best_epoch']}"
        png, table = calibration_plots.trial_reliability(state["calibration"], Path(tmp) / "reliability.png", title)
        run.file(png)
        run.table(table, "reliability.json")


def run_semantic_sweep(cfg: SweepConfig, resume: bool = False, log: Log = print,
                       pipeline_only: bool = False) -> SweepResult | None:
    """Pipelines, then the Tune grid of semi-supervised trials; see the module docstring.
    ``pipeline_only``: every check, then the pipelines only (no MLflow, no Tune); returns None."""
    from raydgm.pipeline import raydata
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    if pipeline_only:
        run_pipeline_only(cfg.pipelines().values(), checked_data(cfg, check_grid), log=log)
        return None
    track, uri, dataset, folder, restored, grid = prologue(cfg, resume, check_grid, trial_grid)
    pipelines = cfg.pipelines()
    # Tune's TensorBoard logger says, once per trial, that an SSLTrial is no hparam: it is not
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
    with raydata.session() as ray:
        resources, device = trial_resources(cfg.resources, ray.cluster_resources())
        store = ArtifactStore()
        arts = {g: run_pipeline(p, store, log, dataset) for g, p in pipelines.items()}
        data = ssl_data(dataset, arts)
        for trial in grid:                                      # every trial's config, before Tune
            ssl.validate(trial.ssl, data[trial.generator])
        parent = Parent(track, cfg, folder, restored, cfg.name)
        for g, p in pipelines.items():
            parent.log_stages(p, arts[g], track, cfg.name, label=g)
        log(f"sweep: {len(grid)} trials ({len(cfg.labeled_sizes)} labeled sizes x "
            f"{len(grid) // len(cfg.labeled_sizes) // len(cfg.seeds)} generator/source/weight arms x "
            f"{len(cfg.seeds)} seeds), {resources} each; Tune state in {folder}")
        callbacks: list[Any] = [Progress(len(grid), cfg.ssl.epochs, attrgetter("name"))]
        if parent.run is not None:
            callbacks.append(TrialRuns(track.to_dict() | {"tracking_uri": uri}, parent.run_id, cfg.name))
        result_grid = tune_grid(ssl_trial, grid, folder, restored, cfg.resources, resources, log,
                                data=data, device=device, threads=max(1, int(resources["cpu"])),
                                callbacks=callbacks)
    ok = finished(result_grid, len(grid), lambda m: m.get("epoch") == cfg.ssl.epochs, parent)
    trials = [r.config["trial"].grid() | {"test_accuracy": r.metrics["test_accuracy"], "val_accuracy":
                                          r.metrics["best_val_accuracy"], "test_ece": r.metrics["calib/test/ece"]}
              for r in ok]
    curves_by_trial = [checkpoint_state(r.checkpoint)["calibration"]["test"]["curve"] for r in ok]
    quality_reports = {g: json.loads(a["quality"].file("quality.json").read_text()) for g, a in arts.items()}
    weights = {g: json.loads(a["resample"].file("summary.json").read_text()) for g, a in arts.items()}
    rows, selected, primaries = study.summarize(trials), study.select_weights(trials), primary.primary_comparisons(trials)
    tables_md = {"primary.md": primary.format_primary(primaries), "summary.md": study.format_summary(rows),
                 "table_6_4.md": study.table_6_4(selected),
                 "table_6_3.md": study.table_6_3(quality_reports, weights=weights)}
    table = "\n\n".join(tables_md.values())
    _write_summary(folder, parent.run, rows, {"selected.csv": selected, "primary.csv": primaries}, trials, tables_md,
                   data[NO_GENERATOR].test_labels, arm_curves(rows, trials, curves_by_trial))
    return SweepResult(rows, trials, table, folder, parent.run_id, uri, parent.experiment_id)


def arm_curves(rows: list[dict], trials: list[dict], trial_curves: list[dict]) -> list[dict[str, Any]]:
    """Per summary row (arm), its keys, seeds, test_ece_mean and "curve": its trials' test
    reliability curves (``trial_curves``, aligned with ``trials``) pooled over seeds."""
    by_arm: dict[tuple, list[dict]] = {}
    for t, c in zip(trials, trial_curves):
        key = (t["generator"], t["labeled_size"], t["unlabeled"], float(t["semantic_weight"]))
        by_arm.setdefault(key, []).append(c)
    keys = ("generator", "labeled_size", "unlabeled", "semantic_weight", "seeds", "test_ece_mean")
    return [{k: r[k] for k in keys} | {"curve": pool_curves(by_arm[(r["generator"], r["labeled_size"], r["unlabeled"],
                                                                       r["semantic_weight"])], TOP_LABEL_BINS)}
            for r in rows]


def _write_summary(folder: Path, run: tracking.Run | None, rows: list[dict], csvs: dict[str, list[dict]],
                   trials: list[dict], tables_md: dict[str, str], test_labels: np.ndarray,
                   arms: list[dict]) -> None:
    """summary.md / summary.csv / ``csvs`` (selected.csv, primary.csv) / trials.json, the
    thesis-shaped tables and the primary comparisons (primary.md), the
    accuracy plot, each arm's reliability curve (``reliability_by_arm``) and the test labels
    (``test_labels.npy``, int8: what the trials' predictions are scored against, for McNemar),
    in ``folder/summary`` and the parent run, which also gets the summary rows as a table
    (``summary.json``: typed columns, read back by ``compare.summary_disagreements``)."""
    out = write_tables(folder, rows, trials, tables_md["summary.md"])
    for name, table in csvs.items():
        if table:
            write_csv(out / name, table)
    np.save(out / LABELS, test_labels.astype(np.int8), allow_pickle=False)
    for name, text in tables_md.items():
        (out / name).write_text(text + "\n")
    figures = {"accuracy_vs_weight": plots.accuracy_vs_weight(rows, out / "accuracy_vs_weight.png"),
               "reliability_by_arm": calibration_plots.arm_reliability(arms, out / "reliability_by_arm.png")}
    for name, (_, data) in figures.items():
        (out / f"{name}.json").write_text(json.dumps(data))
    if run is None:
        return
    for name in ("summary.csv", *(c for c, t in csvs.items() if t), "trials.json", LABELS, *tables_md):
        run.file(out / name)
    for name, (png, data) in figures.items():
        run.file(png)
        run.table(data, f"{name}.json")
    run.table({k: [r[k] for r in rows] for k in rows[0]}, "summary.json")
    run.end("FINISHED")
