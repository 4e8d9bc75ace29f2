"""Running the sweep scripts as a user does (a subprocess) and reading back their MLflow runs."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEMANTIC = ROOT / "sweeps" / "semantic_weight.py"


def script(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python sweeps/semantic_weight.py --smoke-test <args>`` with RAYDGM_HOME=home;
    MLFLOW_TRACKING_URI and RAY_ADDRESS only when ``env`` sets them (the default store is
    ``home/mlflow.db``)."""
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    full = base | {"RAYDGM_HOME": str(home), "PYTHONUNBUFFERED": "1"} | (env or {})
    return subprocess.Popen([sys.executable, str(SEMANTIC), "--smoke-test", *args], cwd=home.parent,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs(uri: str, experiment: str = "semantic_weight_smoke") -> tuple[object, list]:
    """(MlflowClient, every run of ``experiment``) in the store at ``uri``."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id], max_results=1000))


@dataclass
class Sweep:
    home: Path
    output: str
    returncode: int

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    def summary(self, name: str) -> Path:
        """The summary folder's file ``name`` (summary.csv, trials.json, ...)."""
        return next(self.home.glob(f"tune/*/*/summary/{name}"))


def copy_stages(src: Path, dst: Path) -> Path:
    """A new home ``dst`` holding ``src``'s cached stage artifacts (not its MLflow store or Tune
    state): a sweep there reuses the pipeline instead of recomputing it."""
    import shutil
    dst.mkdir(parents=True)
    for stage in src.iterdir():
        if stage.is_dir() and any(stage.glob("*/manifest.json")):
            shutil.copytree(stage, dst / stage.name)
    return dst


def run_smoke(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Sweep:
    proc = script(home, *args, env=env)
    out, _ = proc.communicate(timeout=timeout)
    return Sweep(home, out, proc.returncode)
