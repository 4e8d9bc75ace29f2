"""One function per pipeline stage: typed config (+ upstream artifacts) -> cached artifact.

Each stage is keyed by its config hash and its inputs' keys (see ``raydgm.pipeline.store``); a stage
whose artifact exists is reused, never recomputed. The stages:

``data`` (not stored: loading is cheap) -> ``train_generator`` (model.pt, history.json)
-> ``generate`` (samples/*.parquet via Ray Data) or ``import_samples`` (an .npz)
-> ``density_ratio`` (weights.parquet, classifier/fold-k, report.json) -> ``resample``
(resampled.parquet: the used weights and draw counts, summary.json) -> ``quality``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from raydgm import density_ratio, resample
from raydgm.config import (AutoencoderConfig, ContrastiveConfig, DataConfig, DensityRatioConfig,
                           DomainClassifierConfig, ExtractConfig, FeaturesConfig, GenerateConfig, ImportSamplesConfig, PipelineConfig,
                           ResampleConfig, TrainGeneratorConfig)
from raydgm.data import Dataset, load_dataset, read_npz
from raydgm.pipeline import features, tables
from raydgm.pipeline import truth as known
from raydgm.pipeline.store import Artifact, ArtifactStore, stage_key

Log = Callable[[str], None]


def load_data(config: DataConfig) -> Dataset:
    return load_dataset(config.name, config.path, seed=config.seed, download=config.download,
                        val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                        stratify=config.stratify)


def train_generator(data_cfg: DataConfig, cfg: TrainGeneratorConfig, store: ArtifactStore,
                    dataset: Dataset | None = None, progress: bool = True,
                    log: Log | None = None) -> Artifact:
    """Fit the generator on the real train split (validation and test splits for held-out bits/dim).

    Per-epoch checkpoints live in a work directory that survives a kill; running the stage
    again resumes from the last one. The artifact holds ``model.pt`` (what generation
    actors load) and ``history.json``. With ``cfg.checkpoint`` set the file is imported
    instead (0 epochs; ``import.json`` names it), keyed by its sha256.
    """
    from raydgm.training import generators
    if cfg.checkpoint is not None:   # a pretrained file: imported, not trained
        shape = tuple((dataset or load_data(data_cfg)).images.shape[1:])
        digest = file_sha256(generators.check_import(cfg, shape))
        art = store.run(cfg.STAGE, generators.import_key(cfg, digest),
                        lambda out: generators.import_generator(cfg, shape, out, digest))
        if log is not None:
            log(f"train_generator: {'reused the import of' if art.reused else 'imported'} "
                f"{cfg.checkpoint} ({cfg.checkpoint_format}, sha256 {digest[:12]}): 0 training epochs")
        return art
    inputs = {"data": data_cfg.content_hash()}
    work = store.workdir(cfg.STAGE, stage_key(cfg, inputs))

    def write(out: Path) -> dict[str, int]:
        data = dataset or load_data(data_cfg)
        real, val, test = (data.split(name)[0] for name in ("train", "val", "test"))
        def on_epoch(row: dict[str, float]) -> None:
            if log is not None:
                log(f"train_generator: epoch {row['epoch']}/{cfg.epochs} "
                    + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        model, history = generators.fit_generator(real, cfg, work, val_images=val if len(val) else None,
                                                  test_images=test if len(test) else None,
                                                  on_epoch=on_epoch, progress=progress,
                                                  labels=data.split("train")[1], num_classes=data.num_classes)
        generators.save_generator(model, cfg.model.kind, generators.model_kwargs(cfg), out / generators.MODEL)
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
    from raydgm.pipeline.generate import generate_with_ray
    inputs = {"generator": generator.key}
    work = store.workdir(cfg.STAGE, stage_key(cfg, inputs))

    def write(out: Path) -> dict[str, int]:
        stats = generate_with_ray(generator.file("model.pt"), cfg, out, work_dir=work,
                                  crash_once_marker=crash_once_marker)
        (out / "generation.json").write_text(json.dumps(stats, indent=2))
        return {"samples": stats["samples"], "dropped_nonfinite": stats["dropped_nonfinite"],
                "ray_nodes": len(stats["nodes"])}
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


def train_extractor(data_cfg: DataConfig, cfg: DomainClassifierConfig | AutoencoderConfig | ContrastiveConfig,
                    store: ArtifactStore, dataset: Dataset | None = None, progress: bool = True) -> Artifact:
    """Train (or reuse) an extractor's network on the real train split: ``domain``'s CNN on its
    labels (``cfg`` a DomainClassifierConfig) or ``autoencoder``'s or ``contrastive``'s on the
    images alone.

    The validation split drives early stopping. The artifact (stage ``cfg.STAGE``) holds
    ``model.pt`` and ``history.json`` (per-epoch losses and accuracy or MSE).
    """
    from raydgm.training import extractors, generators

    def write(out: Path) -> dict[str, int]:
        data = dataset or load_data(data_cfg)
        model, history = extractors.fit_network(cfg, data.split("train"), data.split("val"),
                                                progress=progress, where=data.name)
        extractors.save_network(model, out / generators.MODEL)
        (out / "history.json").write_text(json.dumps(history, indent=2))
        return {"train_images": len(data.split("train")[0]), "epochs": len(history)}
    return store.run(cfg.STAGE, cfg, write, inputs={"data": data_cfg.content_hash()})


class Featurizer:
    """Cached feature tables of the real splits and of generated sample sets, per extractor.

    One ``features`` artifact per (image set, extractor, extractor weights): computed once,
    then reused by the classifier, the quality metrics and the diagnostics.
    """

    def __init__(self, data_cfg: DataConfig, cfg: FeaturesConfig, store: ArtifactStore,
                 dataset: Dataset | None = None, progress: bool = True, log: Log | None = None):
        self.data_cfg, self.cfg, self.store = data_cfg, cfg, store
        self._dataset, self.progress, self.log = dataset, progress, log
        self._identity: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_data(self.data_cfg)
        return self._dataset

    def identity(self, name: str) -> tuple[dict[str, str], dict[str, Any]]:
        """(cache-key inputs naming the extractor's weights, ``build_extractor`` kwargs)."""
        if name not in self._identity:
            kwargs: dict[str, Any] = {"device": self.cfg.device, "batch_size": self.cfg.batch_size}
            inputs: dict[str, str] = {}
            if name in ("domain", "autoencoder", "contrastive"):
                net_cfg = getattr(self.cfg, name)     # its weights: the key of its training stage
                art = self._logged(train_extractor(self.data_cfg, net_cfg, self.store, self.dataset,
                                                   self.progress))
                inputs[net_cfg.STAGE] = art.key
                kwargs[f"{name}_checkpoint"] = str(art.file("model.pt"))
            elif name == "inception":
                from raydgm.pipeline.inception import resolve_weights
                path, _ = resolve_weights(self.cfg.inception_weights)
                inputs["inception_weights"] = file_sha256(path)
                kwargs["inception_weights"] = str(path)
            self._identity[name] = inputs, kwargs
        return self._identity[name]

    def extractor(self, name: str) -> Callable[[np.ndarray], Any]:
        """The extractor itself (uncached use, e.g. the noise baseline's images)."""
        return features.build_extractor(name, **self.identity(name)[1])

    def real(self, name: str, split: str) -> Artifact:
        """Features of the real ``split``; sample_id = the row's index within the split."""
        def arrays() -> tuple[np.ndarray, np.ndarray]:
            images = self.dataset.split(split)[0]
            if len(images) == 0:
                raise ValueError(f"the real {split!r} split of {self.data_cfg.name} is empty")
            return np.arange(len(images), dtype=np.int64), images
        return self._run(name, {"images": f"real:{self.data_cfg.content_hash()}:{split}"},
                         arrays=arrays)

    def samples(self, name: str, samples: Artifact) -> Artifact:
        """Features of a generated (or imported) sample set, keyed by its sample_id."""
        shape, real = tables.image_shape(samples.file("samples")), self.dataset.images.shape[1:]
        if shape != tuple(real):
            raise ValueError(f"generated images have shape {shape} but the real {self.dataset.name} "
                             f"images {tuple(real)}; they must match")
        return self._run(name, {"images": samples.key}, samples_dir=samples.file("samples"))

    def _run(self, name: str, images: dict[str, str], samples_dir: Path | None = None,
             arrays: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> Artifact:
        inputs, kwargs = self.identity(name)
        def write(out: Path) -> dict[str, int]:
            rows = features.extract_to(out, name, kwargs, self.cfg, samples_dir=samples_dir,
                                       arrays=arrays() if arrays else None, progress=self.progress)
            return {"features": rows}
        return self._logged(self.store.run("features", ExtractConfig(extractor=name), write,
                                           inputs=images | inputs))

    def _logged(self, art: Artifact) -> Artifact:
        return log_artifact(self.log, art) if self.log is not None else art


def read_features(art: Artifact) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(sample_id, features, logits or None) of a ``features`` artifact."""
    return tables.read_features(art.file(features.FEATURES_DIR))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fit_density_ratio(dr_cfg: DensityRatioConfig, samples: Artifact, featurizer: Featurizer) -> Artifact:
    """Train and calibrate the real-vs-generated classifier; write every sample's log-weight.

    The classifier sees the real *train* split's features. ``folds`` >= 2: cross-fitted
    (``density_ratio.cross_fit``), so every weight and the report are out-of-fold and the real
    test split stays unseen, for the quality stage's reference. ``folds`` = 1: one split; the
    report compares the real test split with the generated rows it did not train on.
    ``group_copies``: a sample equal to a real train image shares its fold and split. Known-bias
    samples' truth goes into the weights table and is scored (``pipeline.truth.score_weights``).
    """
    arts = {"real_train": featurizer.real(dr_cfg.features, "train"),
            "samples": featurizer.samples(dr_cfg.features, samples)}
    if dr_cfg.folds == 1:           # the single split's report needs real rows it never saw
        arts["real_test"] = featurizer.real(dr_cfg.features, "test")

    def write(out: Path) -> dict[str, int]:
        real_train = read_features(arts["real_train"])[1]
        ids, gen, _ = read_features(arts["samples"])
        if gen.shape[1] != real_train.shape[1]:
            raise ValueError(f"generated samples give {gen.shape[1]} {dr_cfg.features} features "
                             f"but the real images {real_train.shape[1]}: the generated images' "
                             "shape must match the real dataset's")
        groups = known.copy_groups(featurizer.dataset.split("train")[0],
                                   tables.read_samples(samples.file("samples"))[2]) if dr_cfg.group_copies else None
        with tqdm(total=dr_cfg.max_epochs * dr_cfg.folds, desc="density_ratio: classifier epochs",
                  unit="epoch", leave=False) as bar:
            def on_epoch(row: dict) -> None:
                bar.set_postfix(fold=row.get("fold", 0), val_bce=f"{row['val_loss']:.4f}")
                bar.update()
            if dr_cfg.folds == 1:
                model = density_ratio.fit(real_train, gen, dr_cfg, on_epoch=on_epoch, groups=groups)
                report = density_ratio.diagnose(model, read_features(arts["real_test"])[1],
                                                gen[model.gen_split != "train"])
                models, logit, log_w = [model], model.logit(gen), model.log_weights(gen)
                split, fold = model.gen_split, np.zeros(len(gen), np.int64)
            else:
                cf = density_ratio.cross_fit(real_train, gen, dr_cfg.folds, dr_cfg, on_epoch=on_epoch,
                                             groups=groups)
                models, report, logit, log_w = cf.models, cf.report, cf.gen_logit, cf.log_weights
                split, fold = np.full(len(gen), "out_of_fold"), cf.gen_fold
        for k, model in enumerate(models):
            model.save(out / "classifier" / f"fold-{k}")
        rep = report.to_dict()
        truth = known.score_weights(out, rep, samples.file("samples"), ids, log_w, split != "train",
                                    featurizer.dataset.split("train")[1], featurizer.dataset.num_classes,
                                    gen, fold if dr_cfg.folds > 1 else None)
        (out / "report.json").write_text(json.dumps(rep, indent=2))
        return {"weights": tables.write_weights(out / "weights.parquet", ids, logit, log_w, split, fold, truth)}
    return featurizer.store.run(dr_cfg.STAGE, dr_cfg, write,
                                inputs={k: a.key for k, a in arts.items()})


def resample_weights(rs_cfg: ResampleConfig, weights: Artifact, store: ArtifactStore) -> Artifact:
    """The one place raw log-weights become the weights every later stage uses, and the SIR set.

    On the pool (``rs_cfg.pool``): flatten, smooth and clip once (``density_ratio.used_weights``),
    then resample. ``resampled.parquet``: every row's used log-weight (-inf outside the pool)
    and draw count; ``summary.json``: alpha and ESS / ESS fraction / k-hat of the raw and the
    used weights, and with known-bias samples ``truth`` (``pipeline.truth.sir_report``). Warns
    when the used weights' k-hat exceeds ``khat_threshold``.
    """
    def write(out: Path) -> dict[str, int]:
        table = tables.read_weights(weights.file("weights.parquet"))
        pool = table["split"] != "train" if rs_cfg.pool == "held_out" else np.ones(len(table["split"]), bool)
        if pool.sum() < 2:
            raise ValueError(f"resample.pool={rs_cfg.pool} leaves {int(pool.sum())} generated rows")
        used, stats = density_ratio.used_weights(table["log_weight"][pool], rs_cfg)
        if stats["khat_used"] > stats["khat_limit"]:
            warnings.warn(f"resample: PSIS k-hat of the used weights {stats['khat_used']:.2f} > "
                          f"{stats['khat_limit']:.2f}: estimates from them are unreliable (lower "
                          "alpha, set smoothing: psis, or clip)", stacklevel=2)
        n = rs_cfg.num_samples or len(used)
        counts = np.zeros(len(pool), np.int64)
        counts[pool] = np.bincount(resample.resample(used, n, rs_cfg.method, np.random.default_rng(rs_cfg.seed)),
                                   minlength=len(used))
        log_w = np.full(len(pool), -np.inf)
        log_w[pool] = used
        summary = {"method": rs_cfg.method, "pool_kind": rs_cfg.pool, "num_samples": int(n),
                   "unique_drawn": int((counts > 0).sum()), "max_count": int(counts.max())} | stats
        truth = tables.read_truth(weights.file("weights.parquet"))
        if truth is not None:    # known-bias samples: what SIR did to the class mix and the junk
            data_mix = json.loads(weights.file("report.json").read_text())["truth"]["data_class_mix"]
            summary["truth"] = known.sir_report(known.aligned(truth, table["sample_id"]), pool,
                                                table["log_weight"][pool], used, counts, data_mix)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return {"resampled": tables.write_resampled(out / "resampled.parquet", table["sample_id"], pool, log_w,
                                                    counts)}
    return store.run(rs_cfg.STAGE, rs_cfg, write, inputs={"weights": weights.key})


def quality_report(cfg: PipelineConfig, arts: dict[str, Artifact], featurizer: Featurizer,
                   log: Log = print) -> Artifact:
    """Score real, raw, resampled and importance-weighted sets (``raydgm.pipeline.quality``), draw the
    figures and log everything to MLflow (``raydgm.pipeline.report``); cached like every stage.

    ``arts``: the pipeline's ``samples``, ``density_ratio`` and ``resample`` artifacts. The
    reference is the real test split; the floor row, the real train split.
    """
    from raydgm.pipeline import report
    q = cfg.quality
    feats = {"reference": featurizer.real(q.features, "test"),
             "real_floor": featurizer.real(q.features, "train"),
             "generated": featurizer.samples(q.features, arts["samples"])}

    def write(out: Path) -> dict[str, int]:
        data = featurizer.dataset
        inputs: dict[str, Any] = {k: read_features(a) for k, a in feats.items()}
        inputs["weights"] = tables.read_weights(arts["density_ratio"].file("weights.parquet"))
        inputs["truth"] = tables.read_truth(arts["density_ratio"].file("weights.parquet"))
        inputs["used"] = tables.read_resampled(arts["resample"].file("resampled.parquet"))
        inputs["resample"] = json.loads(arts["resample"].file("summary.json").read_text())
        inputs["dr_report"] = json.loads(arts["density_ratio"].file("report.json").read_text())
        inputs["real_images"] = data.split("test")[0]
        inputs["gen_images"] = tables.read_samples(arts["samples"].file("samples"))[2]
        inputs["noise_auc"] = lambda: report.noise_baseline_auc(
            data.split("train")[0], featurizer.extractor(cfg.density_ratio.features), cfg)
        return report.build(out, cfg, inputs, log)
    keys = {k: a.key for k, a in feats.items()}
    return featurizer.store.run(q.STAGE, q, write, inputs=keys | {
        "density_ratio": arts["density_ratio"].key, "resample": arts["resample"].key})


def run_pipeline(cfg: PipelineConfig, store: ArtifactStore | None = None, log: Log = print,
                 dataset: Dataset | None = None, quality: bool = True) -> dict[str, Artifact]:
    """Run (or reuse) every stage, in order; returns the artifacts by stage.

    ``dataset``: ``load_data(cfg.data)`` already loaded by the caller, to avoid a reload.
    ``quality``: also run the quality report. Nothing here talks to MLflow: callers log the
    stage runs afterwards (``tracking.runs.log_pipeline``), having checked the store first.
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
    featurizer = Featurizer(cfg.data, cfg.features, store, dataset, log=log)
    out["density_ratio"] = log_artifact(log, fit_density_ratio(cfg.density_ratio, out["samples"],
                                                               featurizer))
    out["resample"] = log_artifact(log, resample_weights(cfg.resample, out["density_ratio"], store))
    if quality:
        out["quality"] = log_artifact(log, quality_report(cfg, out, featurizer, log))
    return out


def log_artifact(log: Log, artifact: Artifact) -> Artifact:
    """Print one line per stage: reused or computed, where, and its row counts."""
    how = "reused" if artifact.reused else "computed"
    rows = ", ".join(f"{k}={v}" for k, v in artifact.rows.items())
    log(f"{artifact.stage}: {how} {artifact.path} ({rows})")
    return artifact
