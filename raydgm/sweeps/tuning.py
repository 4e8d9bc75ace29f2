"""What both Ray Tune sweeps share (``semantic``, ``classifier``): the steps before Ray starts,
trial resources, the Tune grid (run or restored), progress, checkpoints, the MLflow parent
run, the summary tables.

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
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from ray.tune import Callback
from tqdm.auto import tqdm

from raydgm import tracking
from raydgm.config import Config, ConfigError, TrackingConfig, TrialResources
from raydgm.data import Dataset
from raydgm.sweeps import SweepIncomplete
from raydgm.tracking import runs

STATE = "raydgm_sweep.json"          # parent run id and config, beside Tune's own state
CHECKPOINT = "state.pt"
Log = Callable[[str], None]


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
    track = cfg.pipeline.tracking.replace(experiment=cfg.name)
    uri = tracking.check_reachable(track)
    dataset = checked_data(cfg, check)
    folder, restored = experiment_dir(cfg.resources.storage_path, cfg.name, cfg, resume)
    return Prologue(track, uri, dataset, folder, restored, grid(cfg))


def checked_data(cfg: Any, check: Callable[[Any, Dataset], None]) -> Dataset:
    """The sweep's real dataset, after ``check(cfg, dataset)``: every check that needs the data
    but no compute, in every mode (``--pipeline-only`` too)."""
    from raydgm.pipeline.stages import load_data
    dataset = load_data(cfg.pipeline.data)
    check(cfg, dataset)
    return dataset


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
    from raydgm.pipeline.store import default_root
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

    @property
    def experiment_id(self) -> str | None:
        return None if self.run is None else self.run.experiment_id

    def log_stages(self, cfg: Any, arts: dict[str, Any], track: TrackingConfig, experiment: str,
                   label: str | None = None) -> None:
        """The pipeline's stages as child runs (``raydgm.tracking.runs``); found, not repeated, on
        resume. ``label``: the generator's name in the sweep, put in the run names."""
        if self.run is not None:
            from raydgm.pipeline.report import stage_figures
            runs.log_pipeline(cfg, arts, track, parent=self.run_id, experiment=experiment, label=label,
                              figures=stage_figures)


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    table: str
    folder: Path
    parent_run_id: str | None
    tracking_uri: str | None
    experiment_id: str | None = None


def run_pipeline_only(pipelines: Iterable[Any], dataset: Dataset, quality: bool = True,
                      log: Log = print) -> list[dict[str, Any]]:
    """Only the sweep's pipelines (one per generator), cached in ``$RAYDGM_HOME``; no MLflow, no
    Tune. Call it after the sweep's checks (``checked_data``). On a cluster whose head has no
    GPU, run this where one is (``ray job submit --entrypoint-num-gpus 1``), then the sweep on
    the head reuses every stage."""
    from raydgm.pipeline import raydata
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    with raydata.session():
        store = ArtifactStore()
        return [run_pipeline(p, store, log, dataset, quality=quality) for p in pipelines]


def write_tables(folder: Path, rows: list[dict], trials: list[dict], table: str) -> Path:
    """``folder/summary/``: summary.md (``table``), summary.csv (``rows``) and trials.json."""
    out = folder / "summary"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table + "\n")
    write_csv(out / "summary.csv", rows)
    (out / "trials.json").write_text(json.dumps(trials, indent=1))
    return out


def write_csv(path: Path, rows: list[dict]) -> Path:
    """``rows`` (dicts with the first row's keys) as CSV with a header line."""
    import csv
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    return path
