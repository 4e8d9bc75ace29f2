"""Tables that compare a sweep's MLflow runs: pure pandas over ``mlflow.search_runs`` frames.

``notebooks/compare_runs.ipynb`` fetches one sweep's runs (the parent run and its children) and
turns them into tables with these functions; the MLflow calls stay in the notebook, except
``download_predictions``, which downloads trial artifacts with a client the caller passes. Frames are
``mlflow.search_runs`` output: one row per run, columns ``run_id``, ``status``,
``params.<key>`` (strings), ``metrics.<key>`` (floats) and ``tags.<key>``.

- ``ssl_trial`` runs: params ``generator`` ("-" for none and real), ``labeled_size``,
  ``unlabeled``, ``semantic_weight``, ``seed``; metrics ``test_accuracy`` (at the epoch with
  the best validation accuracy), ``best_val_accuracy`` and ``calib/test/ece`` (at that epoch;
  runs made before calibration was logged lack it); artifact ``test_predictions.npy``.
- ``quality`` runs: metrics ``<set>/<metric>_<features>_mean`` and ``_std`` (``raw/fid_domain_mean``),
  one set per sample set (``real_train`` (the floor), ``raw``, ``resampled_<method>``, ``importance_weighted``).
- the parent run: artifacts ``summary.json``, the sweep's own summary rows
  (``raydgm.sweeps.study.summarize``) as a table with typed columns, and
  ``reliability_by_arm.json``, each arm's test reliability curve pooled over seeds.
- ``ssl_trial`` artifact ``test_predictions.npy``: int8 (N_test,) predicted classes, read by
  ``download_predictions`` and compared arm against arm with ``mcnemar`` / ``mcnemar_over_seeds``.

The statistics themselves (means, intervals, paired differences) are computed once, by
``raydgm.sweeps.study`` on ``trials(...).to_dict("records")``; nothing here re-implements them.
"""
from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from raydgm.config.sweeps import GRID_KEYS, NO_GENERATOR
from raydgm.metrics import format_pm

SET_ORDER = ("real_train", "raw", "resampled", "importance_weighted")    # prefixes of quality sets
QUALITY_METRICS = ("fid", "kid", "is")
TRIAL_KEYS = GRID_KEYS                           # an ssl_trial run's params: its SSLTrial.grid()
GROUP_KEYS = TRIAL_KEYS[:-1]                     # an arm: all but the seed
STAGE_TAG = "tags.raydgm.stage"
TEST_ECE = "metrics.calib/test/ece"
_QUALITY_METRIC = re.compile(r"^metrics\.(?P<set>[^/]+)/(?P<metric>[a-z]+)_(?P<features>[a-z0-9]+)_(?P<stat>mean|std)$")


class RunsNotFound(LookupError):
    """The store, experiment, parent run or child runs the notebook needs are not there."""


def resolve_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else raydgm's default store
    (``sqlite:///$RAYDGM_HOME/mlflow.db``); a relative sqlite path is made absolute."""
    from raydgm import tracking
    from raydgm.config import TrackingConfig
    return tracking.tracking_uri(TrackingConfig(tracking_uri=tracking_uri))


def check_store(uri: str) -> None:
    """RunsNotFound if ``uri`` is a sqlite database that does not exist (opening it with
    MLflow would create an empty one). Servers and other schemes are left to MLflow."""
    from raydgm.tracking import sqlite_path
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise RunsNotFound(
            f"no MLflow database at {path} (tracking URI {uri}). raydgm's default store is "
            "$RAYDGM_HOME/mlflow.db, else ./artifacts/mlflow.db relative to the kernel's working "
            f"directory ({Path.cwd()}); set the notebook's tracking_uri, $MLFLOW_TRACKING_URI or "
            "$RAYDGM_HOME.")


def missing_experiment(experiment: str, uri: str, names: Iterable[str]) -> RunsNotFound:
    """The error for an experiment that ``uri`` does not hold; ``names``: those it holds."""
    have = sorted(names)
    listed = ", ".join(repr(n) for n in have) if have else "none"
    return RunsNotFound(f"no MLflow experiment {experiment!r} in {uri}; experiments there: {listed}. "
                        "Set the notebook's experiment (a sweep's experiment is its name, e.g. "
                        "'semantic_weight' or 'semantic_weight_smoke') or tracking_uri.")


def missing_parent(parent_run_id: str | None, experiment: str, uri: str,
                   parents: pd.DataFrame) -> RunsNotFound:
    """The error for a parent run that is not there; ``parents``: the experiment's parent runs
    (``mlflow.search_runs`` rows without an ``mlflow.parentRunId`` tag), newest first."""
    what = "no parent run" if parent_run_id is None else f"no parent run {parent_run_id!r}"
    if parents.empty:
        listed = "none (run a sweep first)"
    else:
        name = parents.get("tags.mlflow.runName", pd.Series("", index=parents.index)).fillna("")
        start = parents.get("start_time", pd.Series("", index=parents.index))
        lines = [f"  {r} {n} (started {s}, {st})" for r, n, s, st in
                 zip(parents["run_id"], name, start, parents.get("status", [""] * len(parents)))]
        listed = f"{len(parents)}, newest first:\n" + "\n".join(lines[:20])
    return RunsNotFound(f"{what} (a run without an mlflow.parentRunId tag) in experiment "
                        f"{experiment!r} of {uri}; parent runs there: {listed}")


def stage_runs(runs: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The rows of ``runs`` tagged ``raydgm.stage = stage``, oldest first."""
    if STAGE_TAG not in runs:
        return runs.iloc[:0]
    sel = runs[runs[STAGE_TAG] == stage]
    return sel.sort_values("start_time") if "start_time" in sel else sel


def trials(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished ``ssl_trial`` runs as ``run_id, generator (str), labeled_size (int),
    unlabeled (str), semantic_weight (float), seed (int), test_accuracy (float),
    val_accuracy (float: the best validation accuracy, where the run logged it)`` and, when
    every run logged it, ``test_ece`` (float); the records ``raydgm.sweeps.study`` takes
    (``.to_dict("records")``).

    Unfinished runs (a sweep in progress or interrupted) are left out: their ``test_accuracy``
    is the best so far. Two finished runs of one (size, source, weight, seed) would be counted
    twice in a mean: the newest is kept, with a warning. RunsNotFound if none is finished.
    """
    sel = stage_runs(runs, "ssl_trial")
    done = sel[sel["status"] == "FINISHED"] if "status" in sel else sel
    done = done.iloc[::-1]                                   # newest first
    if done.empty:
        raise RunsNotFound(f"no finished ssl_trial runs among {len(runs)} runs "
                           f"({len(sel)} ssl_trial runs, none FINISHED)")
    need = [f"params.{k}" for k in TRIAL_KEYS if k != "generator"] + ["metrics.test_accuracy"]
    missing = [c for c in need if c not in done]
    if missing:
        raise RunsNotFound(f"the ssl_trial runs lack {missing}")
    out = pd.DataFrame({
        "run_id": done["run_id"].to_numpy(),
        "generator": (done["params.generator"].fillna(NO_GENERATOR).astype(str).to_numpy()
                      if "params.generator" in done else NO_GENERATOR),   # runs before the generator axis
        "labeled_size": done["params.labeled_size"].astype(int).to_numpy(),
        "unlabeled": done["params.unlabeled"].astype(str).to_numpy(),
        "semantic_weight": done["params.semantic_weight"].astype(float).to_numpy(),
        "seed": done["params.seed"].astype(int).to_numpy(),
        "test_accuracy": done["metrics.test_accuracy"].astype(float).to_numpy(),
        "val_accuracy": done.get("metrics.best_val_accuracy", pd.Series(np.nan, index=done.index))
                            .astype(float).to_numpy(),
    })
    if TEST_ECE in done and done[TEST_ECE].notna().all():
        out["test_ece"] = done[TEST_ECE].astype(float).to_numpy()
    dup = out.duplicated(list(TRIAL_KEYS), keep="first")
    if dup.any():
        warnings.warn(f"{int(dup.sum())} finished ssl_trial runs repeat a (generator, labeled_size, "
                      f"unlabeled, semantic_weight, seed) of a newer run and are left out: "
                      f"{out.loc[dup, 'run_id'].tolist()}", stacklevel=2)
        out = out[~dup]
    return out.reset_index(drop=True)


def summary_disagreements(rows: pd.DataFrame, logged: pd.DataFrame,
                          columns: Iterable[str] = ("test_accuracy_mean", "test_ece_mean"),
                          atol: float = 1e-9) -> pd.DataFrame:
    """The arms whose ``columns`` differ by more than ``atol`` between ``rows`` (``study.summarize``
    of the trial runs, as a frame) and ``logged`` (the parent run's ``summary.json``, the sweep's
    own summary), or that only one side has: ``GROUP_KEYS``, then ``<column>`` and
    ``<column>_logged`` for each of ``columns`` both have. Arms are matched on their typed
    values (the weight as a float, never parsed from a metric name). Empty when they agree."""
    both = rows.merge(logged, on=list(GROUP_KEYS), how="outer", suffixes=("", "_logged"), indicator=True)
    off = both["_merge"] != "both"
    shown = [c for c in columns if c in rows and c in logged]
    for c in shown:
        off |= ~np.isclose(both[c].astype(float), both[f"{c}_logged"].astype(float), rtol=0, atol=atol)
    return both.loc[off, [*GROUP_KEYS, *(x for c in shown for x in (c, f"{c}_logged"))]].reset_index(drop=True)


CURVE_COLUMNS = ("bin", "count", "confidence", "accuracy")


def arm_curves(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The parent run's ``reliability_by_arm.json`` (``mlflow_table`` of it: one row per curve
    point, the arm's ``GROUP_KEYS``, ``seeds`` and ``test_ece_mean``, then ``CURVE_COLUMNS``) back
    as one dict per arm, in table order, with "curve": {column: list}; what
    ``raydgm.pipeline.calibration_plots.arm_reliability`` draws."""
    keys = [*GROUP_KEYS, "seeds", "test_ece_mean"]
    missing = [c for c in (*keys, *CURVE_COLUMNS) if c not in table]
    if missing:
        raise RunsNotFound(f"the reliability table lacks columns {missing}")
    return [dict(zip(keys, key)) | {"curve": {c: part[c].tolist() for c in CURVE_COLUMNS}}
            for key, part in table.groupby(keys, sort=False, dropna=False)]


def quality_table(quality_runs: pd.DataFrame, metrics: Iterable[str] = QUALITY_METRICS) -> pd.DataFrame:
    """One row per sample set of each ``quality`` run: ``<metric>_mean`` and ``<metric>_std``
    for each of ``metrics`` (NaN where a set has no value, e.g. KID of importance-weighted),
    read from the run's ``<set>/<metric>_<features>_<mean|std>`` metrics (a quality run scores
    on one extractor's features, ``params.config.features``).

    Index: ``set`` (the metric prefix: real_train, raw, resampled_<method>, importance_weighted),
    or (``run``, ``set``) when there are several quality runs. RunsNotFound if there is none.
    """
    metrics = tuple(metrics)
    if quality_runs.empty:
        raise RunsNotFound("no quality run among the parent's children")
    columns = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    frames = []
    for _, run in quality_runs.iterrows():
        values: dict[str, dict[str, float]] = {}
        for key, value in run.items():
            found = _QUALITY_METRIC.match(str(key))
            column = found and f"{found['metric']}_{found['stat']}"
            if column in columns and value is not None and not pd.isna(value):
                values.setdefault(found["set"], {})[column] = float(value)
        sets = sorted(values, key=_set_rank)
        frame = pd.DataFrame([values[s] for s in sets], index=pd.Index(sets, name="set"),
                             columns=columns, dtype=float)
        frames.append((run.get("tags.mlflow.runName") or run["run_id"], frame))
    if len(frames) == 1:
        return frames[0][1]
    return pd.concat({name: f for name, f in frames}, names=["run", "set"])


def mean_pm(table: pd.DataFrame, names: Iterable[str], digits: int = 4) -> pd.DataFrame:
    """``<name>_mean`` and ``<name>_std`` columns as one "mean ± std" string column per name
    ("–" where the mean is NaN, no ± part where the std is)."""
    out = pd.DataFrame(index=table.index)
    for name in names:
        out[name] = [format_pm(m, s, f".{digits}g") for m, s in zip(table[f"{name}_mean"], table[f"{name}_std"])]
    return out


def mcnemar(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test of two classifiers on the same test images: int (N,) predicted
    classes of a and of b and the true labels. b: images a gets right and b wrong; c: the
    reverse; ``p_value``: the two-sided exact binomial p of b under Binomial(b + c, 1/2)
    (``scipy.stats.binomtest``), 1 when b + c = 0. Keys: n, b, c, p_value, accuracy_a, accuracy_b."""
    a, b_, y = (np.asarray(x) for x in (pred_a, pred_b, labels))
    if not (a.ndim == b_.ndim == y.ndim == 1) or not (a.shape == b_.shape == y.shape) or y.size == 0:
        raise ValueError(f"pred_a, pred_b and labels must be non-empty 1-D arrays of one length, got shapes "
                         f"{a.shape}, {b_.shape}, {y.shape}")
    right_a, right_b = a == y, b_ == y
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"n": int(y.size), "b": b, "c": c, "p_value": p,
            "accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean())}


def mcnemar_over_seeds(preds_a: Mapping[int, np.ndarray], preds_b: Mapping[int, np.ndarray],
                       labels: np.ndarray) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Arm a against arm b seed by seed (seed -> int (N_test,) predictions; the seeds both
    have, ascending): a frame with columns seed, n, b, c, p_value, accuracy_a, accuracy_b, and
    the pooled counts {"seeds", "n", "b", "c", "p_value"}: b and c summed over seeds with the
    exact binomial p of the sums. The seeds share the test images, so the pooled pairs are not
    independent: its p is descriptive; the per-seed tests are exact. ValueError without a
    common seed."""
    seeds = sorted(set(preds_a) & set(preds_b))
    if not seeds:
        raise ValueError(f"no seed in both arms (a: {sorted(preds_a)}, b: {sorted(preds_b)})")
    rows = pd.DataFrame([{"seed": s} | mcnemar(preds_a[s], preds_b[s], labels) for s in seeds])
    b, c = int(rows["b"].sum()), int(rows["c"].sum())
    pooled = {"seeds": len(seeds), "n": int(rows["n"].sum()), "b": b, "c": c,
              "p_value": 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)}
    return rows, pooled


PREDICTIONS = "test_predictions.npy"


def download_predictions(client: Any, run_ids: Iterable[str], artifact: str = PREDICTIONS) -> dict[str, np.ndarray]:
    """run id -> the run's ``artifact`` (``test_predictions.npy``: int8 (N_test,) predicted
    classes) as a numpy array, downloaded with ``client`` (an ``mlflow.MlflowClient``) into a
    temporary folder and read with ``np.load(allow_pickle=False)``. ValueError if one is not 1-D."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, run_id in enumerate(run_ids):
            path = client.download_artifacts(run_id, artifact, f"{tmp}/{i}")
            out[run_id] = np.load(path, allow_pickle=False)
            if out[run_id].ndim != 1:
                raise ValueError(f"run {run_id}: {artifact} has shape {out[run_id].shape}, expected (N_test,)")
    return out


def predictions_by_seed(client: Any, arm: pd.DataFrame, artifact: str = PREDICTIONS) -> dict[int, np.ndarray]:
    """seed -> test predictions of one arm's runs (rows of ``trials``: ``run_id``, ``seed``;
    one run per seed, else ValueError), for ``mcnemar_over_seeds``."""
    if arm["seed"].duplicated().any():
        raise ValueError(f"one arm has several runs of seeds {sorted(arm.loc[arm['seed'].duplicated(), 'seed'])}")
    preds = download_predictions(client, arm["run_id"], artifact)
    return {int(s): preds[r] for r, s in zip(arm["run_id"], arm["seed"])}


def mlflow_table(data: Mapping[str, Any]) -> pd.DataFrame:
    """A table logged with ``MlflowClient.log_table`` (JSON ``{"columns": [...], "data": [[...]]}``)."""
    return pd.DataFrame(data["data"], columns=data["columns"])


def _set_rank(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(SET_ORDER):
        if name == prefix or name.startswith(prefix + "_"):
            return i, name
    return len(SET_ORDER), name

