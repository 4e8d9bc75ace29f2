"""Ray Tune sweeps: the shared machinery, and the semantic-loss sweep itself.

``run_semantic_sweep`` (what ``sweeps/semantic_weight.py`` calls):

1. check the config, the tracking store and the labeled sizes against the data (before any
   compute or Ray);
2. run or reuse the cached pipeline: generator, samples, features, density ratio,
   resampling, quality (``raydgm.stages``);
3. put the arrays a trial needs (``ssl.SSLData``) into Ray's object store once
   (``tune.with_parameters``) and run a Tune grid over ``labeled_size`` x (``unlabeled``,
   ``semantic_weight``) x ``seed``; each trial is ``raydgm.ssl.train`` with a checkpoint and
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
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
from ray.tune import Callback
from tqdm.auto import tqdm

from raydgm import plots, runs, ssl, tables, tracking
from raydgm.config import (UNLABELED_SOURCES, Config, ConfigError, SSLConfig, SweepConfig,
                           TrackingConfig, TrialResources)
from raydgm.data import Dataset, labeled_subset

PRESETS = Path(__file__).parent / "presets"
STATE = "raydgm_sweep.json"          # parent run id and config, beside Tune's own state
CHECKPOINT = "state.pt"
Log = Callable[[str], None]


class SweepIncomplete(RuntimeError):
    """Some trials did not finish (interrupted, or failed after their retries)."""


# --------------------------------------------------------------------------- configs

def load_sweep(cls: type[Config], preset: str, path: str | None = None, overrides: tuple[str, ...] = ()) -> Any:
    """A sweep config: the preset file ``raydgm/presets/<preset>.yaml``, then ``path``'s keys,
    then ``key=value`` overrides."""
    from raydgm.config import read_mapping
    file = PRESETS / f"{preset}.yaml"
    if not file.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known)}")
    return cls.load(path, overrides, base=read_mapping(file))


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


# --------------------------------------------------------------------------- Tune plumbing

class Prologue(NamedTuple):
    """What a sweep knows before Ray starts."""
    track: TrackingConfig         # its experiment is the sweep's name
    uri: str | None               # the tracking URI, checked reachable; None with tracking off
    dataset: Dataset
    folder: Path                  # the Tune experiment folder
    restored: bool                # whether ``folder`` is an interrupted sweep being resumed
    grid: list[dict[str, Any]]    # one dict per trial


def prologue(cfg: Any, resume: bool, check: Callable[[Any, Dataset], None],
             grid: Callable[[Any], list[dict[str, Any]]]) -> Prologue:
    """Both sweeps' first steps, cheapest first so bad input fails before any compute: the
    tracking server, the data, ``check(cfg, dataset)`` (the grid against the data), the Tune
    folder (``resume``: the interrupted one), then ``grid(cfg)``."""
    from raydgm.stages import load_data
    track = cfg.pipeline.tracking.replace(experiment=cfg.name)
    uri = tracking.check_reachable(track)
    dataset = load_data(cfg.pipeline.data)
    check(cfg, dataset)
    folder, restored = experiment_dir(cfg.resources.storage_path, cfg.name, cfg, resume)
    return Prologue(track, uri, dataset, folder, restored, grid(cfg))


def experiment_dir(storage: str | None, name: str, cfg: Config, resume: bool) -> tuple[Path, bool]:
    """(Tune experiment folder, whether it is restored). A new folder is ``<hash>-<time>``;
    ``resume`` picks the newest restorable folder of the same config hash, else raises."""
    from ray import tune
    where = str(storage or os.environ.get("RAYDGM_TUNE_STORAGE") or _home() / "tune")
    if "://" in where:
        raise ConfigError(f"Tune storage {where!r} (resources.storage_path or $RAYDGM_TUNE_STORAGE) "
                          "must be a directory; on a cluster, one on storage every node mounts "
                          "(NFS, EFS), not a bucket URI")
    root = Path(where).resolve() / name
    prefix = cfg.content_hash()[:12]
    if resume:
        found = sorted(p for p in root.glob(f"{prefix}-*") if (p / STATE).exists() and tune.Tuner.can_restore(str(p)))
        if not found:
            raise ConfigError(f"--resume: no interrupted sweep of this config ({prefix}) under {root}; "
                              "run without --resume to start one")
        return found[-1], True
    return root / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}", False


def _home() -> Path:
    from raydgm.store import default_root
    return default_root()


def trial_resources(res: TrialResources, cluster: Mapping[str, float]) -> tuple[dict[str, float], str | None]:
    """({"cpu": .., "gpu": ..} per trial, the trials' device: "auto" (CUDA where the trial runs,
    see ``raydata.resolve_device``) when trials get a GPU, else None)."""
    gpus = res.gpus_per_trial
    if gpus is None:
        gpus = 0.5 if cluster.get("GPU", 0.0) > 0 else 0.0
    if res.cpus_per_trial > cluster.get("CPU", 0.0):
        raise ConfigError(f"resources.cpus_per_trial={res.cpus_per_trial:g} exceeds the cluster's "
                          f"{cluster.get('CPU', 0.0):g} CPUs")
    return {"cpu": res.cpus_per_trial, "gpu": float(gpus)}, ("auto" if gpus > 0 else None)


def tune_grid(trainable: Callable, grid: list[dict[str, Any]], folder: Path, restored: bool,
              res: TrialResources, resources: dict[str, float], log: Log,
              callbacks: list[Any] = (), **shared: Any) -> Any:
    """Run (or restore) a Tune grid: one trial per entry of ``grid`` (``config["trial"]``);
    ``shared`` reaches every trial through the object store. Returns the ResultGrid."""
    from ray import tune
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    fn = tune.with_resources(tune.with_parameters(trainable, **shared), resources)
    if restored:
        log(f"sweep: resuming {folder} (finished trials are kept, unfinished ones continue)")
        tuner = tune.Tuner.restore(str(folder), trainable=fn, resume_errored=True)
    else:
        tuner = tune.Tuner(
            fn, param_space={"trial": tune.grid_search(grid)},
            tune_config=tune.TuneConfig(max_concurrent_trials=res.max_concurrent_trials,
                                        reuse_actors=True),   # saves ~7 s of imports per trial
            run_config=tune.RunConfig(
                name=folder.name, storage_path=str(folder.parent), verbose=0, callbacks=list(callbacks),
                failure_config=tune.FailureConfig(max_failures=res.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    return tuner.fit()


class Progress(Callback):
    """One bar over every trial's epochs and a line per finished or failed trial, in place of
    Tune's tables. Tune pickles callbacks with the experiment; the bar is rebuilt on resume."""

    def __init__(self, trials: int, epochs: int, name: Callable[[dict], str]):
        self.trials, self.epochs, self.name = trials, epochs, name
        self._bar: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bar": None}

    def bar(self, trials: list[Any]) -> Any:
        """The progress bar, started at the first event (counting epochs already done)."""
        if self._bar is None:
            done = sum(int((t.last_result or {}).get("epoch", 0)) for t in trials)
            self._bar = tqdm(total=self.trials * self.epochs, initial=done, unit="epoch",
                             desc="sweep: trial epochs", dynamic_ncols=True)
        return self._bar

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.bar(trials).update(1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r, done = trial.last_result or {}, sum(t.status == "TERMINATED" for t in trials) + 1
        self.bar(trials).write(
            f"trial {self.name(trial.config['trial'])}: test_accuracy {r.get('test_accuracy', float('nan')):.4f} "
            f"(val {r.get('best_val_accuracy', float('nan')):.4f} at epoch {r.get('best_epoch', 0):.0f}) "
            f"[{done}/{self.trials} trials]")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.bar(trials).write(f"trial {self.name(trial.config['trial'])} failed: {trial.error_file}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def report(metrics: Mapping[str, float], state: dict[str, Any] | None = None) -> None:
    """``tune.report`` with an optional checkpoint holding ``state`` (torch.save'd)."""
    import torch
    from ray import tune
    if state is None:
        tune.report(dict(metrics))
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT)
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(tmp))


def last_state() -> dict[str, Any] | None:
    """The trial's latest checkpoint state (after a retry or a resume), else None."""
    from ray import tune
    return checkpoint_state(tune.get_checkpoint())


def checkpoint_state(checkpoint: Any) -> dict[str, Any] | None:
    """The state ``report`` saved in ``checkpoint`` (a ``tune.Checkpoint``; None -> None).
    The driver reads a finished trial's last one as ``trial.checkpoint`` in a callback."""
    import torch
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT, weights_only=True)


def finished(result_grid: Any, n_trials: int, done: Callable[[dict], bool], parent: "Parent") -> list[Any]:
    """The results whose last report satisfies ``done``; if fewer than ``n_trials``, the parent
    run is marked KILLED and SweepIncomplete names the failures (resumable with ``--resume``)."""
    ok, errors = [], []
    for result in result_grid:
        if result.error is not None:
            errors.append(f"{result.config.get('trial')}: {str(result.error).splitlines()[0][:300]}")
        elif result.metrics and done(result.metrics):
            ok.append(result)
    if len(ok) < n_trials:
        if parent.run is not None:
            parent.run.end("KILLED")
        detail = "; ".join(errors[:5])
        raise SweepIncomplete(f"{len(ok)} of {n_trials} trials finished ({len(errors)} failed"
                              f"{': ' + detail if detail else ''}). Resume with --resume (same config).")
    return ok


class Parent:
    """The sweep's MLflow parent run, created once and reattached on resume (id in ``STATE``)."""

    def __init__(self, track: TrackingConfig, cfg: Config, folder: Path, restored: bool, name: str):
        self.run: tracking.Run | None = None
        if restored:
            run_id = json.loads((folder / STATE).read_text())["parent_run_id"]
            if run_id is not None and track.enabled:
                self.run = tracking.Run(track, run_id=run_id)
            return
        if track.enabled:
            self.run = tracking.Run(track, f"{name}-{folder.name}", experiment=name,
                                    tags={"raydgm.sweep": name, "raydgm.config_hash": cfg.content_hash()})
            self.run.params(cfg.to_dict())
            self.run.text(json.dumps(cfg.to_dict(), indent=2), "config.json")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE).write_text(json.dumps({"parent_run_id": self.run_id, "config": cfg.to_dict()},
                                               indent=2))

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.run_id

    def log_stages(self, cfg: Any, arts: dict[str, Any], track: TrackingConfig, experiment: str) -> None:
        """The pipeline's stages as child runs (``raydgm.runs``); found, not repeated, on resume."""
        if self.run is not None:
            runs.log_pipeline(cfg, arts, track, parent=self.run_id, experiment=experiment)


# --------------------------------------------------------------------------- the semantic sweep

def ssl_data(dataset: Dataset, arts: dict[str, Any], cfg: SweepConfig) -> ssl.SSLData:
    """The arrays every trial needs: real splits, generated images, flattened log-weights and
    the resample stage's SIR set (indices into the generated images)."""
    from raydgm.stages import flattened
    ids, _, images = tables.read_samples(arts["samples"].file("samples"))
    weights = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
    count_ids, counts = tables.read_counts(arts["resample"].file("resampled.parquet"))
    pos = np.searchsorted(ids, count_ids)
    if not np.array_equal(weights["sample_id"], ids) or not np.array_equal(ids[np.minimum(pos, len(ids) - 1)], count_ids):
        raise ValueError("samples, weights and resampled counts cover different sample ids; "
                         "rerun the pipeline in a fresh RAYDGM_HOME")
    counts = np.bincount(pos, weights=counts, minlength=len(ids)).astype(np.int64)
    log_w, _ = flattened(weights["log_weight"], cfg.pipeline.resample)
    split = {name: dataset.split(name) for name in ("train", "val", "test")}
    return ssl.SSLData(train_images=split["train"][0], train_labels=split["train"][1],
                       val_images=split["val"][0], val_labels=split["val"][1],
                       test_images=split["test"][0], test_labels=split["test"][1],
                       num_classes=dataset.num_classes, generated=images, log_weights=log_w,
                       resampled=np.repeat(np.arange(len(ids), dtype=np.int64), counts))


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
    from raydgm import raydata
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
        spread = f" ± {r['test_accuracy_std']:.4f}" if r["seeds"] > 1 else ""
        lines.append(f"| {r['labeled_size']} | {r['unlabeled']} | {r['semantic_weight']:g} | "
                     f"{r['test_accuracy_mean']:.4f}{spread} | {r['seeds']} |")
    return "\n".join(lines)


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    table: str
    folder: Path
    parent_run_id: str | None
    tracking_uri: str | None


def run_semantic_sweep(cfg: SweepConfig, resume: bool = False, log: Log = print) -> SweepResult:
    """Pipeline, then the Tune grid of semi-supervised trials; see the module docstring."""
    from raydgm import raydata
    from raydgm.stages import run_pipeline
    from raydgm.store import ArtifactStore
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
    return SweepResult(rows, trials, table, folder, parent.run_id, uri)


def run_pipeline_only(cfg: Any, quality: bool = True, log: Log = print) -> dict[str, Any]:
    """Only the sweep's pipeline (``cfg.pipeline``), cached in ``$RAYDGM_HOME``; no MLflow, no
    Tune. On a cluster whose head has no GPU, run this where one is (``ray job submit
    --entrypoint-num-gpus 1``), then the sweep on the head reuses every stage."""
    from raydgm import raydata
    from raydgm.stages import load_data, run_pipeline
    from raydgm.store import ArtifactStore
    dataset = load_data(cfg.pipeline.data)
    with raydata.session():
        return run_pipeline(cfg.pipeline, ArtifactStore(), log, dataset, quality=quality)


def write_tables(folder: Path, rows: list[dict], trials: list[dict], table: str) -> Path:
    """``folder/summary/``: summary.md (``table``), summary.csv (``rows``) and trials.json."""
    import csv
    import io
    out = folder / "summary"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "summary.csv").write_text(buf.getvalue())
    (out / "trials.json").write_text(json.dumps(trials, indent=1))
    return out


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
