"""One function per pipeline stage: typed config (+ upstream artifacts) -> cached artifact.

Each stage is keyed by its config hash and its inputs' keys (see ``raydgm.store``); a stage
whose artifact exists is reused, never recomputed. The stages:

``data`` (not stored: loading is cheap) -> ``train_generator`` (model.pt, history.json)
-> ``generate`` (samples/*.parquet via Ray Data) or ``import_samples`` (an .npz)
-> ``density_ratio`` (weights.parquet, classifier, report.json) -> ``resample``
(resampled.parquet, summary.json).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from raydgm import density_ratio, features, resample, tables
from raydgm.config import (DataConfig, DensityRatioConfig, GenerateConfig, ImportSamplesConfig,
                           PipelineConfig, ResampleConfig, TrainGeneratorConfig)
from raydgm.data import Dataset, load_dataset, read_npz
from raydgm.store import Artifact, ArtifactStore, stage_key

Log = Callable[[str], None]


def load_data(config: DataConfig) -> Dataset:
    return load_dataset(config.name, config.path, seed=config.seed, download=config.download,
                        val_fraction=config.val_fraction, test_fraction=config.test_fraction)


def train_generator(data_cfg: DataConfig, cfg: TrainGeneratorConfig, store: ArtifactStore,
                    dataset: Dataset | None = None, progress: bool = True,
                    log: Log | None = None) -> Artifact:
    """Fit the generator on the real train split (validation split for held-out bits/dim).

    Per-epoch checkpoints live in a work directory that survives a kill; running the stage
    again resumes from the last one. The artifact holds ``model.pt`` (what generation
    actors load) and ``history.json``.
    """
    from raydgm import train
    inputs = {"data": data_cfg.content_hash()}
    work = store.workdir(cfg.STAGE, stage_key(cfg, inputs))

    def write(out: Path) -> dict[str, int]:
        data = dataset or load_data(data_cfg)
        real, val = data.split("train")[0], data.split("val")[0]
        def on_epoch(row: dict[str, float]) -> None:
            if log is not None:
                log(f"train_generator: epoch {row['epoch']}/{cfg.epochs} "
                    + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        model, history = train.fit_generator(real, cfg, work, val_images=val if len(val) else None,
                                             on_epoch=on_epoch, progress=progress)
        train.save_generator(model, cfg.model.kind, train.model_kwargs(cfg), out / train.MODEL)
        (out / "history.json").write_text(json.dumps(history, indent=2))
        rows = {"train_images": min(len(real), cfg.max_train_images or len(real))}
        return rows | ({"epochs": len(history)} if history else {})   # the baseline has none
    artifact = store.run(cfg.STAGE, cfg, write, inputs=inputs)
    shutil.rmtree(work, ignore_errors=True)
    return artifact


def generate_samples(cfg: GenerateConfig, generator: Artifact, store: ArtifactStore,
                     crash_once_marker: str | None = None) -> Artifact:
    """Draw ``cfg.num_samples`` samples through Ray Data into ``samples/`` (one part per task).

    Finished parts of a killed run wait in a work directory; running the stage again
    generates only the missing sample ids.
    """
    from raydgm.generate import generate_with_ray
    inputs = {"generator": generator.key}
    work = store.workdir(cfg.STAGE, stage_key(cfg, inputs))

    def write(out: Path) -> dict[str, int]:
        stats = generate_with_ray(generator.file("model.pt"), cfg, out, work_dir=work,
                                  crash_once_marker=crash_once_marker)
        (out / "generation.json").write_text(json.dumps(stats, indent=2))
        return {"samples": stats["samples"], "dropped_nonfinite": stats["dropped_nonfinite"]}
    artifact = store.run(cfg.STAGE, cfg, write, inputs=inputs)
    shutil.rmtree(work, ignore_errors=True)
    return artifact


def import_samples(path: str | Path, store: ArtifactStore) -> Artifact:
    """An .npz of samples made elsewhere (``images`` uint8 (N, C, H, W) or (N, H, W)) -> samples/."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file not found: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = ImportSamplesConfig(sha256=digest)

    def write(out: Path) -> dict[str, int]:
        images, _, _ = read_npz(path)
        ids = np.arange(len(images), dtype=np.int64)
        (out / "samples").mkdir()
        (out / "import.json").write_text(json.dumps({"source": str(path.resolve()),
                                                     "sha256": digest}, indent=2))
        return {"samples": tables.write_samples(out / "samples" / "part-000000-0.parquet", ids,
                                                np.full(len(ids), -1), images)}
    return store.run(cfg.STAGE, cfg, write)


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
        ids, _, images = tables.read_samples(samples.file("samples"))
        if images.shape[1:] != data.images.shape[1:]:
            raise ValueError(f"generated images have shape {images.shape[1:]} but the real "
                             f"{data.name} images {data.images.shape[1:]}; they must match")
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
    if cfg.import_samples is not None:
        out["samples"] = log_artifact(log, import_samples(cfg.import_samples, store))
    else:
        out["generator"] = log_artifact(log, train_generator(cfg.data, cfg.generator, store, dataset,
                                                        log=log))
        out["samples"] = log_artifact(log, generate_samples(cfg.generate, out["generator"], store))
    out["density_ratio"] = log_artifact(log, fit_density_ratio(cfg.data, cfg.density_ratio,
                                                          out["samples"], store, dataset))
    out["resample"] = log_artifact(log, resample_weights(cfg.resample, out["density_ratio"], store))
    return out


def log_artifact(log: Log, artifact: Artifact) -> Artifact:
    """Print one line per stage: reused or computed, where, and its row counts."""
    how = "reused" if artifact.reused else "computed"
    rows = ", ".join(f"{k}={v}" for k, v in artifact.rows.items())
    log(f"{artifact.stage}: {how} {artifact.path} ({rows})")
    return artifact
