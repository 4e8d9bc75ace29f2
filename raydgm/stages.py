"""One function per pipeline stage: typed config (+ upstream artifacts) -> cached artifact.

Each stage is keyed by its config hash and its inputs' keys (see ``raydgm.store``); a stage
whose artifact exists is reused, never recomputed. Stages that exist so far:

``data`` (not stored: loading is cheap) -> ``baseline_generator`` (samples.parquet)
-> ``density_ratio`` (weights.parquet, classifier, report.json) -> ``resample``
(resampled.parquet, summary.json).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from raydgm import density_ratio, features, resample, tables
from raydgm.baseline import PCAGaussianMixture
from raydgm.config import (BaselineGeneratorConfig, DataConfig, DensityRatioConfig,
                           PipelineConfig, ResampleConfig)
from raydgm.data import Dataset, load_dataset
from raydgm.store import Artifact, ArtifactStore

Log = Callable[[str], None]


def load_data(config: DataConfig) -> Dataset:
    return load_dataset(config.name, config.path, seed=config.seed, download=config.download,
                        val_fraction=config.val_fraction, test_fraction=config.test_fraction)


def baseline_samples(data_cfg: DataConfig, gen_cfg: BaselineGeneratorConfig,
                     store: ArtifactStore, dataset: Dataset | None = None) -> Artifact:
    """Fit the PCA + Gaussian-mixture generator on the real train split and draw samples."""
    def write(out: Path) -> dict[str, int]:
        real = (dataset or load_data(data_cfg)).split("train")[0]
        model = PCAGaussianMixture.fit(real, gen_cfg)
        ids = np.arange(gen_cfg.num_samples, dtype=np.int64)
        images = model.sample_ids(ids, gen_cfg.seed)
        return {"samples": tables.write_samples(out / "samples.parquet", ids,
                                                np.full(len(ids), gen_cfg.seed), images)}
    return store.run(gen_cfg.STAGE, gen_cfg, write, inputs={"data": data_cfg.content_hash()})


def fit_density_ratio(data_cfg: DataConfig, dr_cfg: DensityRatioConfig, samples: Artifact,
                      store: ArtifactStore, dataset: Dataset | None = None) -> Artifact:
    """Train and calibrate the real-vs-generated classifier; write every sample's log-weight.

    The classifier sees the real *train* split; its diagnostics are computed on the real
    *test* split against the generated samples it did not train on.
    """
    def write(out: Path) -> dict[str, int]:
        data = dataset or load_data(data_cfg)
        extract = features.EXTRACTORS[dr_cfg.features]
        real_train, real_test = extract(data.split("train")[0]), extract(data.split("test")[0])
        ids, _, images = tables.read_samples(samples.file("samples.parquet"))
        gen = extract(images)
        with tqdm(total=dr_cfg.max_epochs, desc="density_ratio: classifier epochs",
                  unit="epoch", leave=False) as bar:
            def on_epoch(row: dict) -> None:
                bar.set_postfix(val_bce=f"{row['val_loss']:.4f}")
                bar.update()
            model = density_ratio.fit(real_train, gen, dr_cfg, on_epoch=on_epoch)
        held_out = model.gen_split != "train"
        report = density_ratio.diagnose(model, real_test, gen[held_out])
        model.save(out / "classifier")
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        return {"weights": tables.write_weights(out / "weights.parquet", ids, model.logit(gen),
                                                model.log_weights(gen), model.gen_split)}
    return store.run(dr_cfg.STAGE, dr_cfg, write,
                     inputs={"data": data_cfg.content_hash(), "samples": samples.key})


def resample_weights(rs_cfg: ResampleConfig, weights: Artifact, store: ArtifactStore) -> Artifact:
    """Flatten / clip the log-weights as configured, then resample the generated pool."""
    def write(out: Path) -> dict[str, int]:
        table = tables.read_weights(weights.file("weights.parquet"))
        log_w, alpha = flattened(table["log_weight"], rs_cfg)
        n = rs_cfg.num_samples or len(log_w)
        idx = resample.resample(log_w, n, rs_cfg.method, np.random.default_rng(rs_cfg.seed))
        counts = np.bincount(idx, minlength=len(log_w))
        summary = {
            "method": rs_cfg.method, "alpha": alpha, "num_samples": int(n),
            "pool": int(len(log_w)), "unique_drawn": int((counts > 0).sum()),
            "max_count": int(counts.max()),
            "ess_fraction_raw": density_ratio.effective_sample_size(table["log_weight"]) / len(log_w),
            "ess_fraction_used": density_ratio.effective_sample_size(log_w) / len(log_w),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return {"resampled": tables.write_counts(out / "resampled.parquet", table["sample_id"], counts)}
    return store.run(rs_cfg.STAGE, rs_cfg, write, inputs={"weights": weights.key})


def flattened(log_w: np.ndarray, cfg: ResampleConfig) -> tuple[np.ndarray, float]:
    """Apply ``w ** alpha`` (alpha from ``target_ess_fraction`` when set), then the clips."""
    alpha = (density_ratio.alpha_for_ess(log_w, cfg.target_ess_fraction)
             if cfg.target_ess_fraction is not None else cfg.alpha)
    return density_ratio.flatten(log_w, alpha, cfg.log_clip_min, cfg.log_clip_max), float(alpha)


def run_pipeline(cfg: PipelineConfig, store: ArtifactStore | None = None, log: Log = print,
                 dataset: Dataset | None = None) -> dict[str, Artifact]:
    """Run (or reuse) every stage that exists, in order; returns the artifacts by stage.

    ``dataset``: ``load_data(cfg.data)`` already loaded by the caller, to avoid a reload.
    """
    store = store or ArtifactStore()
    dataset = dataset or load_data(cfg.data)
    log(f"data: {cfg.data.name}, {len(dataset)} images {dataset.images.shape[1:]}, "
        + ", ".join(f"{k} {len(v)}" for k, v in dataset.splits.items()))
    out: dict[str, Artifact] = {}
    out["generator"] = _logged(log, baseline_samples(cfg.data, cfg.generator, store, dataset))
    out["density_ratio"] = _logged(log, fit_density_ratio(cfg.data, cfg.density_ratio,
                                                          out["generator"], store, dataset))
    out["resample"] = _logged(log, resample_weights(cfg.resample, out["density_ratio"], store))
    return out


def _logged(log: Log, artifact: Artifact) -> Artifact:
    how = "reused" if artifact.reused else "computed"
    rows = ", ".join(f"{k}={v}" for k, v in artifact.rows.items())
    log(f"{artifact.stage}: {how} {artifact.path} ({rows})")
    return artifact
