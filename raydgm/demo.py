"""``raydgm demo`` and ``raydgm quality``: every stage, with the tracking store checked first,
the stage runs logged, and a printed summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from raydgm import tracking
from raydgm.config import PipelineConfig
from raydgm.pipeline import report
from raydgm.pipeline import truth as known
from raydgm.pipeline.stages import load_data, run_pipeline
from raydgm.pipeline.store import Artifact, ArtifactStore
from raydgm.tracking import runs

REPORT_KEYS = ("accuracy", "roc_auc", "ece", "brier", "mean_weight", "ess", "ess_fraction", "khat")


def run_logged(cfg: PipelineConfig, home: Path | None = None) -> tuple[dict[str, Artifact], str | None,
                                                                      dict[str, str]]:
    """Check the tracking store (before any compute), run or reuse every stage, log the stage
    runs: (artifacts by stage, tracking URI or None, {stage: MLflow run id})."""
    uri = tracking.check_reachable(cfg.tracking)
    store = ArtifactStore(home)
    print(f"raydgm: artifacts under {store.root.resolve()}")
    arts = run_pipeline(cfg, store, dataset=load_data(cfg.data))
    return arts, uri, (runs.log_pipeline(cfg, arts, figures=report.stage_figures) if uri is not None else {})


def run_demo(cfg: PipelineConfig, home: Path | None = None) -> dict:
    """Run or reuse the pipeline and print what was produced; returns a summary."""
    start = time.perf_counter()
    arts, uri, run_ids = run_logged(cfg, home)
    dr_report = json.loads(arts["density_ratio"].file("report.json").read_text())
    resampled = json.loads(arts["resample"].file("summary.json").read_text())
    quality = json.loads(arts["quality"].file("quality.json").read_text())
    summary = {"report": {k: dr_report[k] for k in REPORT_KEYS}, "resample": resampled,
               "quality": quality, "table": arts["quality"].file("table.md").read_text()}
    print_summary(summary, dr_report.get("warnings", []), cfg.density_ratio.folds)
    print_quality(arts["quality"], uri, run_ids.get("quality"))
    print(f"done in {time.perf_counter() - start:.1f} s. Run it again to see every stage reused.")
    return summary


def print_summary(summary: dict, warnings: list[str], folds: int) -> None:
    """The classifier's out-of-sample diagnostics and the weights the later stages use."""
    r, s, q = summary["report"], summary["resample"], summary["quality"]
    how = (f"out-of-fold predictions of {folds} cross-fitted classifiers, real train split vs every "
           "generated sample" if folds > 1 else "real test split vs held-out generated samples")
    print(f"\nreal-vs-generated classifier ({how}):")
    print("  " + "  ".join(f"{k}={r[k]:.4g}" for k in REPORT_KEYS))
    for w in warnings:
        print(f"  warning: {w}")
    if "noise_baseline_auc" in q:
        print(f"  sanity baseline, same classifier vs random noise: AUC={q['noise_baseline_auc']:.4f}")
    print(f"\nweights used downstream (pool {s['pool_kind']}: {s['pool']} samples): raw ESS fraction "
          f"{s['ess_fraction_raw']:.4f}, k-hat {s['khat_raw']:.2f}; w^alpha with alpha={s['alpha']:.3g} -> "
          f"ESS fraction {s['ess_fraction_used']:.4f}, k-hat {s['khat_used']:.2f}")
    print(f"  {s['method']} resampling, {s['num_samples']} draws: {s['unique_drawn']} distinct, "
          f"most-drawn sample x{s['max_count']}")
    if "truth" in q:     # a known-bias generator: the weights against its exact truth
        print("\n" + known.describe(q["truth"]["weights"], q["truth"]["sir"], s["alpha"]))


def print_quality(art: Artifact, uri: str | None, run_id: str | None) -> None:
    """The quality table, its figures and the MLflow run that holds them."""
    q = json.loads(art.file("quality.json").read_text())
    print(f"\n{report.describe(q)}:")
    print(art.file("table.md").read_text().rstrip())
    print("\nfigures (each with its data, .json):")
    for name in q["figures"]:
        png = art.path / "figures" / f"{name}.png"
        shown = os.path.relpath(png)
        print(f"  {png.resolve() if shown.startswith('..') else shown}")
    if uri is not None:
        print(f"\nMLflow: quality run {run_id} (and one run per stage) in {uri}")
        print(f"  open the UI: {tracking.ui_command(uri)}")
