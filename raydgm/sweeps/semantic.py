"""The semantic-loss sweep: ``run_semantic_sweep``, what ``sweeps/semantic_weight.py`` calls.

1. check the config, the tracking store and the labeled sizes against the data (before any
   compute or Ray);
2. run or reuse the cached pipeline: generator, samples, features, density ratio,
   resampling, quality (``raydgm.pipeline.stages``);
3. put the arrays a trial needs (``ssl.SSLData``) into Ray's object store once
   (``tune.with_parameters``) and run a Tune grid over ``labeled_size`` x (``unlabeled``,
   ``semantic_weight``) x ``seed``; each trial is ``raydgm.training.ssl.train`` with a checkpoint and
   a report per epoch, which the driver logs to the trial's MLflow child run (``TrialRuns``);
4. print and log the summary table (test accuracy, mean ± std over seeds) and the plot of
   test accuracy vs semantic weight.

Each invocation is one MLflow parent run in the experiment named after the sweep; stage
runs and trial runs are its children. Tune's state lives in
``<storage>/<name>/<config hash>-<time>/``; ``resume=True`` restores the newest such folder of
the same config (``Tuner.restore``): finished trials are not rerun, unfinished ones continue
from their last checkpoint, and they write into the MLflow runs they already have.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from ray.tune import Callback

from raydgm import tracking
from raydgm.config import UNLABELED_SOURCES, ConfigError, SSLConfig, SweepConfig, TrackingConfig
from raydgm.data import Dataset, labeled_subset
from raydgm.metrics import format_pm
from raydgm.pipeline import plots, tables
from raydgm.sweeps.tuning import (Log, Parent, Progress, SweepResult, finished, last_state, prologue,
                                  report, trial_resources, tune_grid, write_tables)
from raydgm.training import ssl


def trial_grid(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every trial's grid values; ``none`` runs once per (labeled size, seed), at weight 0."""
    arms = [(u, 0.0) if u == "none" else (u, w) for u in cfg.unlabeled
            for w in (cfg.semantic_weights if u != "none" else (0.0,))]
    return [{"labeled_size": n, "unlabeled": u, "semantic_weight": w, "seed": s}
            for n in cfg.labeled_sizes for u, w in arms for s in cfg.seeds]


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


def ssl_data(dataset: Dataset, arts: dict[str, Any], cfg: SweepConfig) -> ssl.SSLData:
    """The arrays every trial needs: real splits and the resample stage's pool: its generated
    images, used log-weights and SIR set (indices into those images). Every unlabeled source
    draws from that one pool; the sweep recomputes no weight."""
    ids, _, images = tables.read_samples(arts["samples"].file("samples"))
    used = tables.read_resampled(arts["resample"].file("resampled.parquet"))
    if not np.array_equal(used["sample_id"], ids):
        raise ValueError("samples and the resample stage's weights cover different sample ids; "
                         "rerun the pipeline in a fresh RAYDGM_HOME")
    pool = used["in_pool"]
    counts = used["count"][pool]
    split = {name: dataset.split(name) for name in ("train", "val", "test")}
    return ssl.SSLData(train_images=split["train"][0], train_labels=split["train"][1],
                       val_images=split["val"][0], val_labels=split["val"][1],
                       test_images=split["test"][0], test_labels=split["test"][1],
                       num_classes=dataset.num_classes, generated=images[pool],
                       log_weights=used["log_weight"][pool],
                       resampled=np.repeat(np.arange(len(counts), dtype=np.int64), counts))


TRIAL_METRICS = ("train_loss", "supervised_loss", "semantic_loss", "val_accuracy", "test_accuracy_epoch",
                 "best_epoch", "best_val_accuracy", "test_accuracy")


def ssl_trial(config: dict[str, Any], *, data: ssl.SSLData, base: dict[str, Any], device: str | None,
              threads: int) -> None:
    """One Tune trial: ``base`` (an SSLConfig dict) with the trial's grid values, trained with a
    checkpoint and a Tune report after every epoch. It does not talk to MLflow: the driver
    logs its reports (``TrialRuns``). ``device`` "auto": CUDA if this process sees a GPU;
    None: ``base``'s device."""
    import torch
    torch.set_num_threads(threads)
    from raydgm.pipeline import raydata
    params = config["trial"]
    cfg = SSLConfig.from_dict(base | params | ({"device": raydata.resolve_device(device)} if device else {}))
    where = {"node_id": raydata.node_id() or "", "device": cfg.device, "gpus": raydata.assigned_gpus()}

    def on_epoch(row: dict[str, Any], checkpoint: Callable[[], dict]) -> None:
        metrics = {"train_loss": row["train_loss"], "supervised_loss": row["supervised_loss"],
                   "semantic_loss": row["semantic_loss"], "val_accuracy": row["val_accuracy"],
                   "test_accuracy_epoch": row["test_accuracy"], "best_epoch": row["best_epoch"],
                   "best_val_accuracy": row["best_val_accuracy"], "test_accuracy": row["test_accuracy_at_best"]}
        report(metrics | {"epoch": int(row["epoch"])} | where, checkpoint())

    ssl.train(cfg, data, on_epoch=on_epoch, state=last_state())


class TrialRuns(Callback):
    """The trials' MLflow child runs, written by the driver from their Tune reports.

    Trials never talk to MLflow: on a cluster only the driver (on the head) needs the
    tracking server, which can then listen on the head's 127.0.0.1 (cluster.yaml), and MLflow
    never records an epoch that Tune did not. A run is found by its key tag
    (``tracking.Run.find_or_create``), so a resumed or retried trial writes into the run it
    already has and epochs already logged are skipped. Tune pickles callbacks with the
    experiment; the MLflow clients are rebuilt after a resume.
    """

    def __init__(self, track: dict[str, Any], parent: str | None, experiment: str, base: dict[str, Any]):
        self.track, self.parent, self.experiment, self.base = track, parent, experiment, base
        self._runs: dict[str, tuple[tracking.Run, set[int]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runs": {}}

    def run(self, trial: Any, result: Mapping[str, Any]) -> tuple[tracking.Run, set[int]]:
        """(the trial's run, epochs already logged), created with params at its first report."""
        if trial.trial_id not in self._runs:
            params = trial.config["trial"]
            key = f"{self.parent}:" + ":".join(f"{k}={params[k]}" for k in sorted(params))
            cfg = SSLConfig.from_dict(self.base | params | {"device": result["device"]})
            run = tracking.Run.find_or_create(TrackingConfig(**self.track), key, trial_name(params),
                                              parent=self.parent, experiment=self.experiment,
                                              tags={"raydgm.stage": "ssl_trial"})
            run.params(dict(params) | {"ssl": cfg.to_dict()})
            run.text(json.dumps(cfg.to_dict(), indent=2), "config.json")
            run.tags({"raydgm.node_id": result.get("node_id", ""), "raydgm.device": cfg.device,
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
            self._runs.pop(trial.trial_id)[0].end("FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._runs:     # retried or resumed: found again by its key
            self._runs.pop(trial.trial_id)[0].end("FAILED")


def trial_name(params: Mapping[str, Any]) -> str:
    """``n100-resampled-w0.5-s2``: labeled size, unlabeled source, weight, seed."""
    return (f"n{params['labeled_size']}-{params['unlabeled']}-w{params['semantic_weight']:g}"
            f"-s{params['seed']}")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per (labeled_size, unlabeled, semantic_weight): test accuracy mean and sample std
    (ddof=1) over seeds, 0 for a single seed (the table then shows no ± for it)."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        groups.setdefault((r["labeled_size"], r["unlabeled"], r["semantic_weight"]), []).append(r["test_accuracy"])
    order = {source: i for i, source in enumerate(UNLABELED_SOURCES)}
    rows = []
    for (n, u, w), acc in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        a = np.asarray(acc)
        rows.append({"labeled_size": n, "unlabeled": u, "semantic_weight": w, "seeds": len(a),
                     "test_accuracy_mean": float(a.mean()),
                     "test_accuracy_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0})
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    """Markdown: labeled | unlabeled | weight | test accuracy (mean ± std, the std only over
    more than one seed) | seeds."""
    lines = ["| labeled | unlabeled | semantic weight | test accuracy | seeds |", "|---:|---|---:|---|---:|"]
    for r in rows:
        accuracy = format_pm(r["test_accuracy_mean"], r["test_accuracy_std"] if r["seeds"] > 1 else None,
                                   ".4f")
        lines.append(f"| {r['labeled_size']} | {r['unlabeled']} | {r['semantic_weight']:g} | {accuracy} | "
                     f"{r['seeds']} |")
    return "\n".join(lines)


def run_semantic_sweep(cfg: SweepConfig, resume: bool = False, log: Log = print) -> SweepResult:
    """Pipeline, then the Tune grid of semi-supervised trials; see the module docstring."""
    from raydgm.pipeline import raydata
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    track, uri, dataset, folder, restored, grid = prologue(cfg, resume, check_labeled_sizes, trial_grid)
    with raydata.session() as ray:
        resources, device = trial_resources(cfg.resources, ray.cluster_resources())
        arts = run_pipeline(cfg.pipeline, ArtifactStore(), log, dataset)
        data = ssl_data(dataset, arts, cfg)
        for params in grid:                                     # every trial's config, before Tune
            ssl.validate(SSLConfig.from_dict(cfg.ssl.to_dict() | params), data)
        parent = Parent(track, cfg, folder, restored, cfg.name)
        parent.log_stages(cfg.pipeline, arts, track, cfg.name)
        log(f"sweep: {len(grid)} trials ({len(cfg.labeled_sizes)} labeled sizes x "
            f"{len(grid) // len(cfg.labeled_sizes) // len(cfg.seeds)} unlabeled/weight arms x "
            f"{len(cfg.seeds)} seeds), {resources} each; Tune state in {folder}")
        callbacks: list[Any] = [Progress(len(grid), cfg.ssl.epochs, trial_name)]
        if parent.run is not None:
            callbacks.append(TrialRuns(track.to_dict() | {"tracking_uri": uri}, parent.run_id, cfg.name,
                                       cfg.ssl.to_dict()))
        result_grid = tune_grid(ssl_trial, grid, folder, restored, cfg.resources, resources, log,
                                data=data, base=cfg.ssl.to_dict(), device=device,
                                threads=max(1, int(resources["cpu"])), callbacks=callbacks)
    ok = finished(result_grid, len(grid), lambda m: m.get("epoch") == cfg.ssl.epochs, parent)
    trials = [r.config["trial"] | {"test_accuracy": r.metrics["test_accuracy"],
                                   "val_accuracy": r.metrics["val_accuracy"]} for r in ok]
    rows = summarize(trials)
    table = format_summary(rows)
    _write_summary(folder, parent.run, rows, trials, table)
    return SweepResult(rows, trials, table, folder, parent.run_id, uri, parent.experiment_id)


def _write_summary(folder: Path, run: tracking.Run | None, rows: list[dict], trials: list[dict],
                   table: str) -> None:
    """summary.md / summary.csv / trials.json and the accuracy plot, in ``folder`` and the parent run."""
    out = write_tables(folder, rows, trials, table)
    png, data = plots.accuracy_vs_weight(rows, out / "accuracy_vs_weight.png")
    (out / "accuracy_vs_weight.json").write_text(json.dumps(data))
    if run is None:
        return
    for name in ("summary.md", "summary.csv", "trials.json", "accuracy_vs_weight.png"):
        run.file(out / name)
    run.table(data, "accuracy_vs_weight.json")
    run.metrics({f"test_accuracy/n{r['labeled_size']}_{r['unlabeled']}_w{r['semantic_weight']:g}": r["test_accuracy_mean"]
                 for r in rows})
    run.end("FINISHED")
