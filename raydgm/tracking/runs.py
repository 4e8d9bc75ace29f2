"""The pipeline's artifacts as MLflow runs: one run per stage, optionally under a parent run.

Stage runs are logged from the cached artifacts, after the stages ran or were reused, so
every sweep (a parent run) holds its own stage runs whether the stages were computed now or
last week; each holds its stage's ``config.json``. A stage run is keyed by (parent, stage,
artifact key): logging the same artifact again under the same parent finds the finished run
and adds nothing.

- ``train_generator``: the generator config; per-epoch losses (``step=epoch``).
- ``generate``: sample counts.
- ``density_ratio``: ``classifier_accuracy``, ``roc_auc``, ``ece``, ``brier``, ``ess_frac``,
  ``psis_khat`` out of sample (out of fold when cross-fitted); the reliability points as
  step-indexed metrics (``reliability/prob_pred``, ``/prob_true``, step = bin:
  ``raydgm.tracking.curves``); the figures the caller hands over (``figures``:
  ``raydgm.pipeline.report.stage_figures`` draws ``calibration_curve`` and
  ``weight_histogram``, each a picture and its data as a table).
- ``resample``: alpha, ESS, ESS fraction and k-hat of the raw and of the used weights,
  distinct draws.
- known-bias samples (a truth): ``truth/<name>`` metrics on the ``density_ratio`` run
  (Spearman, Pearson, ESS vs true ESS, ...) with the stage's ``truth_scatter.png``, and on the
  ``resample`` run (class-mix TV and junk share before and after SIR).
- ``quality``: FID / KID / IS (and precision / recall / density / coverage) per sample set,
  named with their features (``raw/fid_domain_mean``),
  the table, every figure with the data behind it (the stage wrote them into its artifact).

This module reads the artifacts' files and logs them; it draws nothing and imports nothing
from ``raydgm.pipeline`` (tests/test_layering.py): an artifact is anything with the attributes
of ``pipeline.store.Artifact`` (``stage``, ``key``, ``path``, ``manifest``, ``rows``, ``file``).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from raydgm import tracking
from raydgm._diagnostics import N_BINS
from raydgm.config import PipelineConfig, TrackingConfig
from raydgm.tracking import curves

Artifact = Any                                  # a raydgm.pipeline.store.Artifact
Figures = Callable[[Artifact, Path], list[Path]]  # (artifact, folder) -> <name>.png / <name>.json files

DR_METRICS = {"classifier_accuracy": "accuracy", "roc_auc": "roc_auc", "ece": "ece",
              "brier": "brier", "ess_frac": "ess_fraction", "psis_khat": "khat",
              "mean_weight": "mean_weight"}


def log_pipeline(cfg: PipelineConfig, arts: dict[str, Artifact], track: TrackingConfig | None = None,
                 parent: str | None = None, experiment: str | None = None,
                 label: str | None = None, *, figures: Figures) -> dict[str, str]:
    """Log each artifact of ``arts`` (by stage name) as a run; returns {stage: run id}.
    ``label``: the generator's name in a sweep (run names ``vae-quality-<key>``); a stage
    shared by two generators (the same artifact) is one run, named after the first.
    ``figures(artifact, folder)``: the figure files a new run logs beside its artifact's own
    (``raydgm.pipeline.report.stage_figures``), drawn into a temporary folder."""
    track = track or cfg.tracking
    loggers: dict[str, Callable[[tracking.Run, Artifact], None]] = {
        "generator": _log_generator, "samples": _log_samples, "density_ratio": _log_density_ratio,
        "resample": _log_resample, "quality": _log_quality}
    tags = {"raydgm.dataset": cfg.data.name, "raydgm.generator": label or _generator_name(cfg)}
    prefix = f"{label}-" if label else ""
    out = {}
    for name, log in loggers.items():
        art = arts.get(name)
        if art is None:
            continue
        key = f"{parent or 'none'}:{art.stage}:{art.key}"
        run = tracking.Run.find_or_create(track, key, run_name=f"{prefix}{art.stage}-{art.key[:8]}",
                                          tags=tags | {"raydgm.stage": art.stage}, parent=parent,
                                          experiment=experiment)
        if run.previous_status != "FINISHED":
            with run:
                run.params(_stage_params(cfg, art))
                run.text(json.dumps(art.manifest.get("config", {}), indent=2), "config.json")
                run.tags({"raydgm.artifact": str(art.path)})
                log(run, art)
                with tempfile.TemporaryDirectory() as tmp:
                    log_figures(run, figures(art, Path(tmp)))
        out[art.stage] = run.run_id
    return out


def _generator_name(cfg: PipelineConfig) -> str:
    return "imported" if cfg.import_samples is not None else cfg.generator.model.kind


def _stage_params(cfg: PipelineConfig, art: Artifact) -> dict[str, Any]:
    return {"stage": art.stage, "artifact_key": art.key, "config": art.manifest.get("config", {}),
            "data": cfg.data.to_dict()}


def _log_generator(run: tracking.Run, art: Artifact) -> None:
    history = json.loads(art.file("history.json").read_text())
    for row in history:
        run.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    run.metrics({f"rows/{k}": v for k, v in art.rows.items()})


def _log_samples(run: tracking.Run, art: Artifact) -> None:
    run.metrics({f"rows/{k}": v for k, v in art.rows.items()})


def _log_resample(run: tracking.Run, art: Artifact) -> None:
    summary = json.loads(art.file("summary.json").read_text())
    run.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    run.metrics(_truth_metrics(summary))
    run.params({"method": summary["method"]})


def _truth_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """``truth/<name>``: the numbers of a stage's ``truth`` section (known-bias samples only)."""
    truth = doc.get("truth") or {}
    return {f"truth/{k}": v for k, v in truth.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _log_density_ratio(run: tracking.Run, art: Artifact) -> None:
    """Held-out diagnostics and warnings (the figures come from ``log_pipeline``'s ``figures``)."""
    rep = json.loads(art.file("report.json").read_text())
    run.metrics({name: rep[key] for name, key in DR_METRICS.items() if rep.get(key) is not None})
    run.metrics(_truth_metrics(rep))
    if (art.path / "truth_scatter.png").exists():
        run.file(art.file("truth_scatter.png"))
    run.text("\n".join(rep.get("warnings", [])) + "\n", "warnings.txt")
    curves.log_binary(run, rep["reliability_prob_pred"], rep["reliability_prob_true"], N_BINS)


def _log_quality(run: tracking.Run, art: Artifact) -> None:
    summary = json.loads(art.file("quality.json").read_text())
    metrics = headline(summary["rows"], summary["features"]) | {
        k: summary[k] for k in ("alpha", "ess_fraction_pool", "ess_fraction_pool_raw", "noise_baseline_auc")
        if k in summary}
    run.metrics(metrics)
    run.text(art.file("table.md").read_text(), "quality/table.md")
    keys = list(dict.fromkeys(k for r in summary["rows"] for k in r))
    run.table({k: [r.get(k) for r in summary["rows"]] for k in keys}, "quality/table.json")
    for name in summary["figures"]:
        run.file(art.file("figures") / f"{name}.png", "figures")
        data = art.file("figures") / f"{name}.json"
        if data.exists():
            run.table(json.loads(data.read_text()), f"figures/{name}.json")


def log_figures(run: tracking.Run, files: list[Path]) -> None:
    """Each ``.png`` as a file, each ``.json`` (a column dict) as an MLflow table, by its name."""
    for path in files:
        if path.suffix == ".json":
            run.table(json.loads(path.read_text()), path.name)
        else:
            run.file(path)


def headline(rows: list[dict[str, Any]], features: str) -> dict[str, float]:
    """Flat ``{<set>/<metric>_<features>_<mean|std>: value}`` metrics of the quality table's
    ``rows``, set names slugged: the key states its protocol (``raw/fid_domain_mean``,
    ``raw/fid_inception_mean``)."""
    out = {}
    for row in rows:
        slug = row["set"].replace(" (", "_").replace(")", "").replace(" ", "_").replace("-", "_")
        for key, value in row.items():
            metric, _, stat = key.rpartition("_")
            if stat in ("mean", "std"):
                out[f"{slug}/{metric}_{features}_{stat}"] = float(value)
    return out
