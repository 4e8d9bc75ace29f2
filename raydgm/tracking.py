"""MLflow tracking: the only module that imports mlflow.

The tracking URI is ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory (MLflow 3 refuses the old ``./mlruns``
file store by default). ``check_reachable`` runs before any compute, so a stage never
spends an hour and then fails to log. Runs are written through an explicit
``MlflowClient`` and run id, never through mlflow's global "active run".

Open the UI with ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` (it binds to
127.0.0.1 by default).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from raydgm.config import TrackingConfig

DEFAULT_URI = "sqlite:///mlflow.db"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable database)."""


def tracking_uri(cfg: TrackingConfig) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def ui_command(uri: str) -> str:
    """The shell command that opens the MLflow UI on this store (bound to 127.0.0.1)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


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
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the MLflow database {uri}: {folder} is not a "
                                "writable directory; set tracking.tracking_uri or "
                                "tracking.enabled=false. Nothing was computed.")
    return uri


class Run:
    """One MLflow run written through an explicit client: metrics, params, files, tables."""

    def __init__(self, cfg: TrackingConfig, run_name: str, tags: Mapping[str, str] | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient
        self._mlflow = mlflow
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(cfg.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(cfg.experiment)
        self.experiment_id = exp_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if exc_type else "FINISHED")

    def params(self, params: Mapping[str, Any]) -> None:
        """Flat ``{key: value}`` params (nested dicts flattened with dots), 100 at a time."""
        from mlflow.entities import Param
        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[start:start + 100])

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def file(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def table(self, data: Mapping[str, list], artifact_file: str) -> None:
        """A column table (equal-length lists), viewable in the UI's artifact browser."""
        self.client.log_table(self.run_id, data=dict(data), artifact_file=artifact_file)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def url(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id} in {self.uri}"


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
