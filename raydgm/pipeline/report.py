"""The quality stage's body: score the sets, draw the figures, write the tables; and the
figures a stage's tracked run holds beyond its artifact's files (``stage_figures``).

Writes into the stage directory: ``quality.json`` (rows, per-block values, settings, the
noise baseline), ``table.md`` (the Table-6.3-like comparison),
``figures/*.png`` and, next to each figure, ``figures/*.json``: the data it plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydgm import density_ratio, resample
from raydgm.config import PipelineConfig
from raydgm.pipeline import plots, quality, tables
from raydgm.pipeline import truth as known
from raydgm.pipeline.quality import FeatureSet
from raydgm.pipeline.store import Artifact

NOISE_MAX_EPOCHS = 5  # noise is separable at once; held-out loss falls for ever, so cap it
NOISE_MAX_IMAGES = 2000  # a sanity check: Inception features of 45,000 noise images are not needed


def build(out: Path, cfg: PipelineConfig, inputs: dict[str, Any], log: Callable[[str], None]) -> dict[str, int]:
    """Compute the report into ``out``; returns row counts for the manifest.

    ``inputs``: ``reference`` (the real test split) / ``real_floor`` (the real train split) /
    ``generated``: (sample_id, features, logits); ``weights``: the density-ratio stage's raw
    weights table; ``used`` / ``resample``: the resample stage's table (pool, used weights,
    counts) and summary; ``dr_report``: the density-ratio report dict;
    ``real_images``/``gen_images``: uint8 arrays for the grids (gen sorted by sample_id);
    ``noise_auc``: a callable giving the noise baseline's AUC (or None); ``truth``: the known-bias
    columns of the weights table (``tables.read_truth``) or None: with them, ``quality.json``
    gets ``truth`` (the density-ratio and resample stages' scores), ``table.md`` their lines
    and the figures ``truth_scatter``.
    """
    q = cfg.quality
    gen_ids, gen_f, gen_l = inputs["generated"]
    weights, used, rs = inputs["weights"], inputs["used"], inputs["resample"]
    if not (np.array_equal(weights["sample_id"], gen_ids) and np.array_equal(used["sample_id"], gen_ids)):
        raise ValueError("the density-ratio weights, the resample stage's weights and the generated "
                         "features cover different sample ids; rerun the density_ratio stage")
    pool = used["in_pool"]
    log_w, alpha = used["log_weight"][pool], rs["alpha"]
    reference = FeatureSet.from_logits(*inputs["reference"][1:])
    floor = FeatureSet.from_logits(*inputs["real_floor"][1:])
    gen = FeatureSet.from_logits(gen_f[pool], None if gen_l is None else gen_l[pool])
    log(f"quality: scoring {len(cfg.quality.methods) + 3} sets on {q.num_blocks} blocks ({q.features} "
        f"features, vs the real test split; pool {rs['pool_kind']}: {len(gen)} generated rows, alpha={alpha:.3g})")
    rows, per_block = quality.evaluate(reference, floor, gen, log_w, q)
    summary: dict[str, Any] = {
        "rows": rows, "per_block": per_block, "alpha": alpha, "pool": rs["pool_kind"],
        "pool_rows": int(pool.sum()), "features": q.features, "reference": "real test split",
        "floor": "real train split", "ess_fraction_pool": rs["ess_fraction_used"],
        "ess_fraction_pool_raw": rs["ess_fraction_raw"],
    }
    if q.noise_baseline and inputs.get("noise_auc") is not None:
        summary["noise_baseline_auc"] = float(inputs["noise_auc"]())
    table = plots.format_quality_table(rows)
    if inputs.get("truth") is not None:
        summary["truth"] = {"weights": inputs["dr_report"]["truth"], "sir": rs["truth"]}
        table += "\n\n" + known.describe(inputs["dr_report"]["truth"], rs["truth"], alpha)
    (out / "table.md").write_text(table + "\n")
    figures = draw(out / "figures", cfg, inputs, pool, weights["log_weight"][pool], log_w, alpha, rows)
    summary["figures"] = sorted(figures)
    (out / "quality.json").write_text(json.dumps(summary, indent=1))
    return {"sets": len(rows), "pool": int(pool.sum())}


def describe(summary: dict[str, Any]) -> str:
    """One line saying what the quality table (``summary``: quality.json) compares."""
    row = summary["rows"][0]
    return (f"sample quality on {summary['features']} features, vs the {summary['reference']} "
            f"(mean ± std over {row['blocks']} blocks of {row['n']}; generated pool: "
            f"{summary['pool']} rows, {summary['pool_rows']}; alpha={summary['alpha']:.3g})")


def draw(folder: Path, cfg: PipelineConfig, inputs: dict[str, Any], pool: np.ndarray,
         raw_log_w: np.ndarray, log_w: np.ndarray, alpha: float,
         rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Every figure as ``<name>.png`` plus ``<name>.json`` (its data); returns {name: png}."""
    folder.mkdir(parents=True, exist_ok=True)
    q, rep = cfg.quality, inputs["dr_report"]
    rng = np.random.default_rng(q.seed)
    real, images = inputs["real_images"], inputs["gen_images"][pool]
    grid_rows = {"real (test split)": real[rng.permutation(len(real))[:q.grid_size]],
                 f"raw generated ({len(images)} in the pool)": images[:q.grid_size]}
    for method in q.methods:
        idx = resample.resample(log_w, q.grid_size, method, np.random.default_rng([q.seed, 2]))
        grid_rows[f"resampled ({method}, alpha={alpha:.2g})"] = images[idx]
    order = np.argsort(raw_log_w)
    grid_rows["highest importance weight"] = images[order[::-1][:q.grid_size]]
    grid_rows["lowest importance weight"] = images[order[:q.grid_size]]
    figures: dict[str, Path] = {}

    def keep(name: str, made: Any, data: dict[str, list] | None = None) -> None:
        path, table = made if isinstance(made, tuple) else (made, data)
        figures[name] = Path(path)
        if table is not None:
            (folder / f"{name}.json").write_text(json.dumps(table))

    keep("samples", plots.sample_rows(grid_rows, folder / "samples.png", per_row=q.grid_size))
    ess = density_ratio.ess_fraction(raw_log_w)
    keep("weights", plots.weight_histogram(raw_log_w, folder / "weights.png",
                                           f"pool log-weights: ESS fraction {ess:.2g} of {len(raw_log_w)}"),
         plots.weight_histogram_table(raw_log_w))
    keep("ess_vs_alpha", plots.ess_vs_alpha(raw_log_w, folder / "ess_vs_alpha.png", alpha_used=alpha,
                                            target_fraction=cfg.resample.target_ess_fraction))
    keep("reliability", plots.reliability_diagram(rep["reliability_prob_pred"], rep["reliability_prob_true"],
                                                  folder / "reliability.png", ece=rep["ece"]))
    keep("proportion_curve", plots.proportion_curve(rep["mix_rho"], rep["mix_mean_prob"],
                                                    folder / "proportion_curve.png",
                                                    rep["mix_mean_prob_prior_adjusted"]))
    if inputs.get("truth") is not None:
        keep(known.SCATTER, known.scatter(folder, inputs["truth"]["true_log_weight"][pool], raw_log_w,
                                          rep["truth"]))
    for metric in ("fid", "kid", "is"):
        if any(f"{metric}_mean" in r for r in rows):
            keep(f"quality_{metric}", plots.quality_bars(rows, metric, folder / f"quality_{metric}.png"))
    return figures


def noise_baseline_auc(real_images: np.ndarray, extractor: Callable, cfg: PipelineConfig) -> float:
    """The thesis's sanity baseline: the density-ratio classifier against random noise images
    (on at most ``NOISE_MAX_IMAGES`` real train images, a seeded subset)."""
    dr_cfg = cfg.density_ratio.replace(max_epochs=min(cfg.density_ratio.max_epochs, NOISE_MAX_EPOCHS))
    if len(real_images) > NOISE_MAX_IMAGES:
        keep = np.random.default_rng(dr_cfg.seed).choice(len(real_images), NOISE_MAX_IMAGES, replace=False)
        real_images = real_images[np.sort(keep)]
    _, report = density_ratio.noise_baseline(real_images, lambda x: extractor(x)[0], dr_cfg,
                                             seed=dr_cfg.seed)
    return float(report.roc_auc)


def stage_figures(art: Artifact, folder: Path) -> list[Path]:
    """The figures that ``art``'s tracked run logs beside its artifact's files, drawn into
    ``folder`` from those files (``tracking.runs.log_pipeline`` is handed this function):
    ``<name>.png`` and its data ``<name>.json``. The density-ratio stage: its calibration curve
    (``report.json``) and the histogram of its log-weights (``weights.parquet``); other stages: none."""
    if art.stage != "density_ratio":
        return []
    rep = json.loads(art.file("report.json").read_text())
    log_w = tables.read_weights(art.file("weights.parquet"))["log_weight"]
    png, points = plots.reliability_diagram(rep["reliability_prob_pred"], rep["reliability_prob_true"],
                                            folder / "calibration_curve.png", ece=rep["ece"])
    title = f"log-weights of {len(log_w)} samples: out-of-sample ESS fraction {rep['ess_fraction']:.2g}"
    hist = plots.weight_histogram(log_w, folder / "weight_histogram.png", title)
    (folder / "calibration_curve.json").write_text(json.dumps(points))
    (folder / "weight_histogram.json").write_text(json.dumps(plots.weight_histogram_table(log_w)))
    return [png, folder / "calibration_curve.json", hist, folder / "weight_histogram.json"]
