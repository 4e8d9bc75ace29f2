"""The MLflow client: the tracking URI, its reachability check, and one run written through it.

The tracking URI is ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<RAYDGM_HOME>/mlflow.db`` (MLflow 3 refuses the old ``./mlruns`` file store by
default); a relative sqlite path is made absolute, because Ray Tune trials run in their own
working directories. On a sqlite store, an experiment's artifacts go to ``mlartifacts/``
beside the database. ``check_reachable`` runs before any compute, so a stage never spends
an hour and then fails to log. Runs are written through an explicit ``MlflowClient`` and
run id, never through mlflow's global "active run" (trials run in parallel processes).

A sweep is one parent run; every trial and every pipeline stage is a child run tagged
``mlflow.parentRunId``. ``Run.find_or_create`` looks a run up by a key tag first, so a
resumed sweep (or a retried trial) writes into the run it already has instead of a new one.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from raydgm._env import code_version, default_root
from raydgm.config import TrackingConfig

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "raydgm.key"
KIND_TAG, TRAINING = "mlflow.experimentKind", "custom_model_development"   # what kind of experiment


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable database)."""


def default_uri() -> str:
    return f"sqlite:///{default_root().resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def tracking_uri(cfg: TrackingConfig) -> str:
    """The store's URI; sqlite paths absolute (``sqlite:///rel.db`` -> ``sqlite:////cwd/rel.db``)."""
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    db = sqlite_path(uri)
    if db is not None and uri != "sqlite:///:memory:":
        uri = f"sqlite:///{db.resolve()}"
    return uri


def ui_command(uri: str, experiment_id: str | None = None) -> str:
    """How to look at this store's runs: the command that serves the MLflow UI on it (bound to
    127.0.0.1), or the server's address, then the page to open: the experiment's runs (else
    the experiment list) in MLflow's "Model training" view. MLflow 3.17 opens in its GenAI
    view (traces), whatever the experiment's ``KIND_TAG``, unless the URL asks for this one."""
    page = (f"#/experiments/{experiment_id}/runs" if experiment_id else "#/experiments") \
        + "?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/{page} in a browser"
    return (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, "
            f"then open http://127.0.0.1:5000/{page}")


def check_reachable(cfg: TrackingConfig, timeout: float = 5.0) -> str | None:
    """The tracking URI if logging will work, None when tracking is disabled; else TrackingError.

    http(s): the server's ``/health`` endpoint must answer. sqlite: the database's
    directory must exist and be writable. Other schemes are left to MLflow.
    """
    if not cfg.enabled:
        return None
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow server {uri} answered /health with {resp.status}")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({err}); start it, point "
                "tracking.tracking_uri (or MLFLOW_TRACKING_URI) at a running server, or set "
                "tracking.enabled=false. Nothing was computed.") from None
    elif (db := sqlite_path(uri)) is not None:
        folder = db.parent
        if uri == default_uri():
            folder.mkdir(parents=True, exist_ok=True)     # $RAYDGM_HOME on a fresh clone
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the MLflow database {uri}: {folder} is not a "
                                "writable directory; set tracking.tracking_uri or "
                                "tracking.enabled=false. Nothing was computed.")
    return uri


class Run:
    """One MLflow run written through an explicit client: metrics, params, files, tables.

    ``parent``: the parent run's id (tagged ``mlflow.parentRunId``); ``run_id``: attach to an
    existing run instead of creating one. ``experiment``: overrides ``cfg.experiment``.
    """

    def __init__(self, cfg: TrackingConfig, run_name: str = "", tags: Mapping[str, str] | None = None,
                 parent: str | None = None, run_id: str | None = None, experiment: str | None = None):
        from mlflow.tracking import MlflowClient
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.previous_status: str | None = None    # set when attached to an existing run
        if run_id is not None:
            self.run_id = run_id
            info = self.client.get_run(run_id).info
            self.previous_status, self.experiment_id = info.status, info.experiment_id
            if info.status != "FINISHED":    # a finished run stays as it is (see ``end``)
                self.client.update_run(run_id, status="RUNNING")
            return
        self.experiment_id = experiment_id(self.client, experiment or cfg.experiment, self.uri)
        tags = {"raydgm.code_version": code_version()} | dict(tags or {}) | ({PARENT_TAG: parent} if parent else {})
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name or None,
                                             tags=tags).info.run_id

    @classmethod
    def find_or_create(cls, cfg: TrackingConfig, key: str, run_name: str = "",
                       tags: Mapping[str, str] | None = None, parent: str | None = None,
                       experiment: str | None = None) -> "Run":
        """The live run tagged ``raydgm.key=key`` (under ``parent``), else a new one with that tag."""
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=tracking_uri(cfg))
        exp = experiment_id(client, experiment or cfg.experiment, tracking_uri(cfg))
        query = f"tags.`{KEY_TAG}` = '{key}'" + (f" and tags.`{PARENT_TAG}` = '{parent}'" if parent else "")
        found = client.search_runs([exp], filter_string=query, max_results=1)
        if found:
            return cls(cfg, run_id=found[0].info.run_id)
        return cls(cfg, run_name, dict(tags or {}) | {KEY_TAG: key}, parent=parent,
                   experiment=experiment)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

    def end(self, status: str = "FINISHED") -> None:
        """FINISHED, FAILED or KILLED (an interrupted sweep, resumable). A run that was already
        FINISHED when attached keeps its status and end time: a trial that Tune restarts from
        its last checkpoint after MLflow saw it finish recomputes the same last epoch."""
        if self.previous_status != "FINISHED":
            self.client.set_terminated(self.run_id, status)

    def params(self, params: Mapping[str, Any]) -> None:
        """Flat ``{key: value}`` params (nested dicts flattened with dots), 100 at a time.

        Params already on the run (a resumed run) are skipped; MLflow refuses to change one.
        """
        from mlflow.entities import Param
        have = self.client.get_run(self.run_id).data.params
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in have]
        for start in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[start:start + 100])

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def logged_steps(self, metric: str) -> set[int]:
        """The steps at which ``metric`` is already logged (a resumed trial skips them)."""
        return {m.step for m in self.client.get_metric_history(self.run_id, _key(metric))}

    def tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def file(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def table(self, data: Mapping[str, list], artifact_file: str) -> None:
        """A column table (equal-length lists), viewable in the UI's artifact browser."""
        self.client.log_table(self.run_id, data=dict(data), artifact_file=artifact_file)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def url(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} in {self.uri}"


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing (artifacts beside a sqlite database),
    tagged as a training experiment (``KIND_TAG``). MLflow 3.17's UI opens in its GenAI view
    whatever the tag (``ui_command`` names the page that does not); other 3.x releases read it."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        db, location = sqlite_path(uri), None
        if db is not None:
            location = (db.parent / "mlartifacts" / name).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={KIND_TAG: TRAINING})
        except Exception:                     # created meanwhile by a parallel trial
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(KIND_TAG) != TRAINING:    # an experiment made before raydgm tagged them
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, TRAINING)
    return exp.experiment_id


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _key(name: str) -> str:
    """MLflow metric names allow alphanumerics, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
