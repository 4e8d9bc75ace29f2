"""``raydgm demo``: every stage, on the default dataset, with a printed summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from raydgm import tracking
from raydgm.pipeline import report
from raydgm.tracking import runs
from raydgm.config import PipelineConfig
from raydgm.pipeline.stages import load_data, run_pipeline
from raydgm.pipeline.store import ArtifactStore

REPORT_KEYS = ("accuracy", "roc_auc", "ece", "brier", "mean_weight", "ess", "ess_fraction", "khat")


def run_demo(cfg: PipelineConfig, home: Path | None = None) -> dict:
    """Run or reuse the pipeline and print what was produced; returns a summary."""
    start = time.perf_counter()
    uri = tracking.check_reachable(cfg.tracking)          # before any compute
    store = ArtifactStore(home)
    print(f"raydgm demo: artifacts under {store.root.resolve()}")
    arts = run_pipeline(cfg, store, dataset=load_data(cfg.data))
    run_ids = runs.log_pipeline(cfg, arts) if uri is not None else {}
    dr_report = json.loads(arts["density_ratio"].file("report.json").read_text())
    resampled = json.loads(arts["resample"].file("summary.json").read_text())
    quality = json.loads(arts["quality"].file("quality.json").read_text())
    summary = {"report": {k: dr_report[k] for k in REPORT_KEYS}, "resample": resampled,
               "quality": quality, "table": arts["quality"].file("table.md").read_text()}
    print_summary(summary, dr_report.get("warnings", []), arts["quality"].path, uri,
                  run_ids.get("quality"))
    print(f"done in {time.perf_counter() - start:.1f} s. Run it again to see every stage reused.")
    return summary


def print_summary(summary: dict, warnings: list[str], quality_dir: Path, uri: str | None,
                  run_id: str | None = None) -> None:
    r, s, q = summary["report"], summary["resample"], summary["quality"]
    print("\nreal-vs-generated classifier (real test split vs held-out generated samples):")
    print("  " + "  ".join(f"{k}={r[k]:.4g}" for k in REPORT_KEYS))
    for w in warnings:
        print(f"  warning: {w}")
    if "noise_baseline_auc" in q:
        print(f"  sanity baseline, same classifier vs random noise: AUC={q['noise_baseline_auc']:.4f}")
    print(f"\nresampling ({s['method']}): ESS fraction of the raw weights {s['ess_fraction_raw']:.4f}; "
          f"flattened w^alpha with alpha={s['alpha']:.3g} -> ESS fraction {s['ess_fraction_used']:.4f}")
    print(f"  {s['num_samples']} draws from {s['pool']} samples: {s['unique_drawn']} distinct, "
          f"most-drawn sample x{s['max_count']}")
    print(f"\n{report.describe(q)}:")
    print(summary["table"].rstrip())
    print("\nfigures:")
    for name in q["figures"]:
        print(f"  {os.path.relpath(quality_dir / 'figures' / (name + '.png'))}")
    if uri is not None:
        print(f"\nMLflow: quality run {run_id} (and one run per stage) in {uri}")
        print(f"  open the UI: {tracking.ui_command(uri)}")
