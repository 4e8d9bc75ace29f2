"""``raydgm demo``: every stage that exists, on the default dataset, with a printed summary."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from raydgm import density_ratio, features, tables
from raydgm.config import PipelineConfig
from raydgm.data import Dataset
from raydgm.plots import sample_rows, weight_histogram
from raydgm.stages import load_data, run_pipeline
from raydgm.store import Artifact, ArtifactStore

REPORT_KEYS = ("accuracy", "roc_auc", "ece", "brier", "mean_weight", "ess", "ess_fraction", "khat")


def run_demo(cfg: PipelineConfig, home: Path | None = None, noise_baseline: bool = True) -> dict:
    """Run or reuse the pipeline, draw the figures, print what was produced; returns a summary."""
    start = time.perf_counter()
    store = ArtifactStore(home)
    print(f"raydgm demo: artifacts under {store.root.resolve()}")
    dataset = load_data(cfg.data)
    arts = run_pipeline(cfg, store, dataset=dataset)
    report = json.loads(arts["density_ratio"].file("report.json").read_text())
    resampled = json.loads(arts["resample"].file("summary.json").read_text())
    figures = draw_figures(cfg, dataset, arts, store.root / "demo")
    summary = {"report": {k: report[k] for k in REPORT_KEYS}, "resample": resampled,
               "figures": [str(p) for p in figures]}
    if noise_baseline:
        summary["noise_baseline_auc"] = noise_auc(cfg, dataset)
    print_summary(summary, report.get("warnings", []))
    print(f"done in {time.perf_counter() - start:.1f} s. Rerun `make demo` to see every stage reused.")
    return summary


def draw_figures(cfg: PipelineConfig, dataset: Dataset, arts: dict[str, Artifact],
                 out: Path) -> list[Path]:
    """Sample rows (real / raw / resampled / highest / lowest weight) and the weight histogram."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    real = dataset.split("test")[0]          # stored sorted by class: shuffle
    _, _, images = tables.read_samples(arts["samples"].file("samples"))
    log_w = tables.read_weights(arts["density_ratio"].file("weights.parquet"))["log_weight"]
    ids, counts = tables.read_counts(arts["resample"].file("resampled.parquet"))
    drawn = np.repeat(ids, counts)
    order = np.argsort(log_w)
    tag = arts["resample"].key
    grid = sample_rows({
        "real (test split)": real[rng.permutation(len(real))],
        f"raw generated ({cfg.generator.model.kind})": images,
        f"resampled ({cfg.resample.method})": images[rng.permutation(drawn)],
        "highest importance weight": images[order[::-1]],
        "lowest importance weight": images[order],
    }, out / f"samples-{tag}.png")
    ess = density_ratio.effective_sample_size(log_w) / len(log_w)
    hist = weight_histogram(log_w, out / f"weights-{tag}.png", f"ESS fraction {ess:.2g} of {len(log_w)} samples")
    return [grid, hist]


NOISE_MAX_EPOCHS = 5  # noise is separable at once; held-out loss falls for ever, so cap it


def noise_auc(cfg: PipelineConfig, dataset: Dataset) -> float:
    """The thesis's sanity baseline: the same classifier against random grayscale noise."""
    real = dataset.split("train")[0]
    dr_cfg = cfg.density_ratio.replace(max_epochs=min(cfg.density_ratio.max_epochs, NOISE_MAX_EPOCHS))
    _, report = density_ratio.noise_baseline(real, features.pixels, dr_cfg, seed=dr_cfg.seed)
    return float(report.roc_auc)


def print_summary(summary: dict, warnings: list[str]) -> None:
    r, s = summary["report"], summary["resample"]
    print("\nreal-vs-generated classifier (real test split vs held-out generated samples):")
    print("  " + "  ".join(f"{k}={r[k]:.4g}" for k in REPORT_KEYS))
    for w in warnings:
        print(f"  warning: {w}")
    if "noise_baseline_auc" in summary:
        print(f"  sanity baseline, same classifier vs random noise: AUC={summary['noise_baseline_auc']:.4f}")
    print(f"\nresampling ({s['method']}): ESS fraction of the raw weights {s['ess_fraction_raw']:.4f}; "
          f"flattened w^alpha with alpha={s['alpha']:.3g} -> ESS fraction {s['ess_fraction_used']:.4f}")
    print(f"  {s['num_samples']} draws from {s['pool']} samples: {s['unique_drawn']} distinct, "
          f"most-drawn sample x{s['max_count']}")
    print("\nfigures:")
    for path in summary["figures"]:
        print(f"  {os.path.relpath(path)}")
