"""Curves that MLflow's chart view overlays across runs: metrics whose step is a bin index.

MLflow 3.17's line chart (an experiment's "Chart" view, one line per visible run) plots a
metric's history against its step, or, with "X-axis: Metric", against another metric of the
same run, matched step by step. A reliability curve logged as two metrics with step = bin,
``<prefix>/<x>`` and ``<prefix>/<y>``, is therefore one chart holding every selected run's
curve: Y-axis ``<prefix>/<y>`` (add ``<prefix>/<x>`` too for each run's diagonal), X-axis
Metric ``<prefix>/<x>``. PNG and JSON artifacts show one run at a time.

The layout (``docs/calibration.md`` and ``tests/test_calibration_logging.py`` rely on it):

- ``ssl_trial`` runs, at the reported (best-validation) epoch, per split in ``val``, ``test``:
  ``reliability/<split>/confidence`` (mean top-label confidence of the bin),
  ``reliability/<split>/accuracy`` and ``reliability/<split>/count``, step = bin b of 15
  equal-width confidence bins [b/15, (b+1)/15) (``raydgm.calibration.top_label``), non-empty
  bins only; tag ``raydgm.reliability`` = ``TOP_LABEL``.
- ``classifier_trial`` and ``density_ratio`` runs: ``reliability/prob_pred`` (mean P(real) of
  the bin) and ``reliability/prob_true`` (fraction real), step = bin b of 10 equal-width bins
  of P(real), non-empty bins only; tag ``raydgm.reliability`` = ``BINARY``.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from raydgm.calibration import bin_ids

RELIABILITY_TAG = "raydgm.reliability"
TOP_LABEL = "top-label confidence, 15 equal-width bins, step = bin"
BINARY = "P(real), 10 equal-width bins, step = bin"
SPLITS = ("val", "test")


def log_curve(run: Any, prefix: str, columns: Mapping[str, Sequence[float]], steps: Sequence[int]) -> bool:
    """Log ``<prefix>/<name>`` = ``columns[name][i]`` at step ``steps[i]`` for every column, in one
    batch; ``run``: a ``raydgm.tracking.Run``. Skipped (False) when the run already has the
    curve (a resumed or retried trial); True when logged. ValueError for unequal lengths or a
    repeated step."""
    steps = [int(s) for s in steps]
    if any(len(v) != len(steps) for v in columns.values()) or len(set(steps)) != len(steps):
        raise ValueError(f"curve {prefix!r}: columns of lengths {[len(v) for v in columns.values()]} "
                         f"and steps {steps} must match, each step once")
    first = f"{prefix}/{next(iter(columns))}"
    if run.logged_steps(first):
        return False
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    items = [Metric(f"{prefix}/{name}", float(v), now, s) for name, values in columns.items()
             for v, s in zip(values, steps)]
    for start in range(0, len(items), 1000):
        run.client.log_batch(run.run_id, metrics=items[start:start + 1000])
    return True


def log_top_label(run: Any, calibration: Mapping[str, Mapping[str, Any]]) -> None:
    """An ssl_trial's reliability curves: ``calibration`` = {"val": .., "test": ..}, each a
    ``raydgm.calibration.top_label`` result (its "curve": bin, count, confidence, accuracy)."""
    for split in SPLITS:
        curve = calibration[split]["curve"]
        log_curve(run, f"reliability/{split}", {k: curve[k] for k in ("confidence", "accuracy", "count")},
                  curve["bin"])
    run.tags({RELIABILITY_TAG: TOP_LABEL})


def log_binary(run: Any, prob_pred: Sequence[float], prob_true: Sequence[float], n_bins: int) -> None:
    """The real-vs-generated classifier's reliability curve (``DensityRatioReport``'s non-empty
    bins): step = the bin of each point's mean P(real) (a bin's mean lies in it); should rounding
    put two means in one bin, step = the point's index."""
    steps = bin_ids(np.asarray(prob_pred, dtype=np.float64), n_bins)
    if np.any(np.diff(steps) <= 0):
        steps = np.arange(len(steps))
    log_curve(run, "reliability", {"prob_pred": prob_pred, "prob_true": prob_true}, steps.tolist())
    run.tags({RELIABILITY_TAG: BINARY})
