"""Typed configs, one per pipeline stage.

Every config is a frozen pydantic model validated in strict JSON mode: unknown keys, wrong
types (``"3"`` for an int, ``2.5`` for an int) and out-of-range values are errors that name
the key. A config loads from a YAML/JSON file and from ``key=value`` overrides (dotted keys
reach into nested configs: ``density_ratio.hidden_units=64``), and has a stable content
hash that the artifact store uses as its directory name.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Literal, Mapping, TypeVar, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


class Config(BaseModel):
    """Base of every stage config: strict, frozen, hashable by content."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    STAGE: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """16 hex chars of sha256 over the stage name and the canonical JSON of the values."""
        blob = json.dumps({"stage": self.STAGE, "config": self.to_dict()},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of keys, got {type(data).__name__}")
        try:
            return cls.model_validate_json(json.dumps(dict(data), allow_nan=True))
        except ValidationError as err:
            raise ConfigError(_explain(cls, err)) from None

    @classmethod
    def load(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = (),
             base: Mapping[str, Any] | None = None) -> C:
        """Read a YAML/JSON file (or start from defaults) and apply ``key=value`` overrides.

        ``base``: a mapping (a preset) that the file's keys are merged into, nested keys
        one by one.
        """
        data = merge(base or {}, read_mapping(path) if path is not None else {})
        for item in overrides:
            key, value = parse_override(item)
            _set_dotted(data, key, value)
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some keys changed (``model_copy`` would skip validation)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def read_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys put in; nested mappings are merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=0.5"`` -> ``("a.b", 0.5)``; the value is parsed as YAML (``true``, ``null``, ``[1,2]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a nested config")
        node = child
    node[parts[-1]] = value


def _explain(cls: type[Config], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            known = _known_keys(cls, e["loc"][:-1])
            near = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            lines.append(f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}")
        elif e["type"] == "value_error" and isinstance(e.get("input"), Mapping):  # a whole-config check
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}" if e["loc"] else msg)
        else:
            lines.append(f"key {key!r}: {e['msg']} (got {e.get('input')!r})")
    return f"{cls.__name__}: " + "; ".join(lines)


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = cls
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


# --------------------------------------------------------------------------- stages

class DataConfig(Config):
    """Which real dataset, and how it is split (see ``raydgm.data.load_dataset``)."""

    STAGE: ClassVar[str] = "data"
    name: Literal["mnist5k", "digits", "cifar10", "npz"] = "mnist5k"
    path: str | None = None          # cifar10 directory or npz file
    download: bool = False           # cifar10 only: fetch with torchvision if missing
    seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)   # cifar10: the official test_batch instead

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1")
        if self.name == "npz" and not self.path:
            raise ValueError("dataset 'npz' needs path=FILE.npz")
        return self


class BaselineModelConfig(Config):
    """PCA + Gaussian mixture fitted on the real train split: a fast, honest, biased generator."""

    STAGE: ClassVar[str] = "model"
    kind: Literal["baseline"] = "baseline"
    pca_dim: int = Field(32, ge=1)
    n_components: int = Field(10, ge=1)


class VAEConfig(Config):
    """Convolutional VAE (``raydgm.models.vae``); defaults follow the thesis's CIFAR-10 model."""

    STAGE: ClassVar[str] = "model"
    kind: Literal["vae"] = "vae"
    latent_dim: int = Field(180, ge=1)
    hidden_channels: tuple[int, ...] = (64, 128, 256)   # one stride-2 conv layer each
    likelihood: Literal["bernoulli", "logistic"] = "logistic"
    pixel_noise: bool = True          # sample pixels from p(x|z); False: its mean

    @model_validator(mode="after")
    def _check(self) -> "VAEConfig":
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ValueError("hidden_channels must be a non-empty list of positive ints")
        return self


class PixelCNNConfig(Config):
    """PixelCNN++ (Salimans et al. 2017); the paper's CIFAR-10 model is 5 / 160 / 10."""

    STAGE: ClassVar[str] = "model"
    kind: Literal["pixelcnnpp"] = "pixelcnnpp"
    nr_resnet: int = Field(5, ge=1)
    nr_filters: int = Field(160, ge=1)
    nr_logistic_mix: int = Field(10, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


ModelConfig = Annotated[Union[BaselineModelConfig, VAEConfig, PixelCNNConfig],
                        Field(discriminator="kind")]


class TrainGeneratorConfig(Config):
    """Fit a generator on the real train split (``raydgm.train``); one checkpoint per epoch."""

    STAGE: ClassVar[str] = "train_generator"
    model: ModelConfig = BaselineModelConfig()
    epochs: int = Field(10, ge=1)                # ignored by the baseline (closed-form fit)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)   # Adam
    lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # multiplied into the rate after every epoch
    grad_clip: float | None = Field(None, gt=0.0)  # max global grad norm
    max_train_images: int | None = Field(None, ge=1)  # first N of the (shuffled) train split
    device: str = "cpu"
    seed: int = Field(0, ge=0)


class ActorPool(Config):
    """A Ray Data actor pool (``raydata.actor_resources``): ``num_actors`` actors, each
    reserving ``num_cpus_per_actor`` CPUs (keep the pool below the cluster's CPUs, or Ray
    Data's read/write tasks starve) and ``num_gpus_per_actor`` GPUs (None: 1 on a cluster
    with GPUs, else 0). An actor granted a GPU uses CUDA where it runs, if it sees one."""

    num_actors: int = Field(1, ge=1)
    num_cpus_per_actor: float = Field(0.5, gt=0.0)
    num_gpus_per_actor: float | None = Field(None, ge=0.0)


class GenerateConfig(ActorPool):
    """Draw samples from a trained generator through Ray Data (``raydgm.generate``), on an
    actor pool (``ActorPool``). Sample i is drawn from its own seed derived from (seed, i).
    """

    STAGE: ClassVar[str] = "generate"
    num_samples: int = Field(5000, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    autocast: Literal["none", "bf16"] = "none"   # bf16 autocast on CUDA actors
    on_nonfinite: Literal["fail", "drop"] = "fail"  # NaN/Inf image: fail with a count, or drop and count
    rows_per_file: int = Field(10_000, ge=1)


class ImportSamplesConfig(Config):
    """Samples made elsewhere (an .npz with uint8 ``images``), keyed by the file's content."""

    STAGE: ClassVar[str] = "import_samples"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Extractor = Literal["pixels", "domain", "inception"]


class DomainClassifierConfig(Config):
    """The ``domain`` feature extractor: a small CNN trained on the real train split's labels.

    Its penultimate layer (``feature_dim`` units) gives features; its softmax over the classes
    gives an Inception-Score analogue. Early stopping keeps the epoch with the best
    validation accuracy.
    """

    STAGE: ClassVar[str] = "domain_classifier"
    channels: tuple[int, ...] = (16, 32)     # one conv block (conv, ReLU, 2x2 max-pool) each
    feature_dim: int = Field(128, ge=2)      # penultimate layer: the features
    epochs: int = Field(8, ge=1)             # mnist5k: val accuracy 0.978 in ~9 s on 2 cores
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(2e-3, gt=0.0)   # Adam
    patience: int = Field(3, ge=1)
    device: str = "cpu"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "DomainClassifierConfig":
        if not self.channels or min(self.channels) < 1:
            raise ValueError("channels must list at least one positive channel count")
        return self


class FeaturesConfig(ActorPool):
    """How features are extracted and cached (``raydgm.features``), shared by every extractor.

    Features are cached per (image set, extractor): execution settings here (batch size,
    actors) do not change the cache key. Sets of at least ``ray_min_rows`` images go through
    Ray Data on an actor pool (``ActorPool``); smaller ones are extracted in this process,
    which skips the actors' start-up.
    """

    STAGE: ClassVar[str] = "features"
    inception_weights: str | None = None    # TorchScript file; None: $RAYDGM_INCEPTION_WEIGHTS, ...
    domain: DomainClassifierConfig = DomainClassifierConfig()
    batch_size: int = Field(200, ge=1)
    device: str = "auto"                    # auto: cuda when available
    ray_min_rows: int = Field(20_000, ge=0)


class ExtractConfig(Config):
    """The cache key of one feature table: the extractor; its weights enter as an input hash."""

    STAGE: ClassVar[str] = "features"
    extractor: Extractor


class DensityRatioConfig(Config):
    """The real-vs-generated classifier of LFIW (Grover et al. 2019, Sec. 3) and its calibration."""

    STAGE: ClassVar[str] = "density_ratio"
    features: Extractor = "domain"           # the classifier's input features (cached, shared)
    hidden_units: int = Field(1000, ge=1)    # the paper's one hidden layer of 1,000 units
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, ge=2)
    balanced: bool = True                    # batches half real, half generated (prior 1/2)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)           # early stopping on held-out BCE
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)     # early-stopping split
    calib_fraction: float = Field(0.2, gt=0.0, lt=1.0)   # calibration split
    calibration: Literal["none", "temperature", "isotonic"] = "temperature"
    isotonic_eps: float = Field(1e-4, gt=0.0, lt=0.5)    # isotonic probabilities clipped to [eps, 1-eps]
    standardize: bool = True                 # z-score features with train-split statistics
    device: str = "cpu"                      # torch device for the classifier
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "DensityRatioConfig":
        if self.val_fraction + self.calib_fraction >= 1.0:
            raise ValueError("val_fraction + calib_fraction must be below 1")
        return self


ResampleMethod = Literal["multinomial", "systematic", "stratified", "residual", "gumbel_max",
                         "gumbel_topk", "rejection", "mh"]


class ResampleConfig(Config):
    """How log-weights become a resampled set (sampling-importance-resampling and friends)."""

    STAGE: ClassVar[str] = "resample"
    method: ResampleMethod = "systematic"
    num_samples: int | None = Field(None, ge=1)   # None: as many as the pool
    alpha: float = Field(1.0, ge=0.0, le=1.0)     # flattening: w ** alpha
    target_ess_fraction: float | None = Field(None, gt=0.0, le=1.0)  # overrides alpha
    log_clip_max: float | None = None             # cap on log w
    log_clip_min: float | None = None             # floor on log w
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ResampleConfig":
        lo, hi = self.log_clip_min, self.log_clip_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("log_clip_min must not exceed log_clip_max")
        return self


class QualityConfig(Config):
    """The quality report (thesis Table 6.3): real, raw, resampled and importance-weighted sets.

    Every set is scored against the real train split on ``num_blocks`` evaluation blocks of
    ``eval_size`` rows (disjoint where the set is large enough; None: the size at which the
    generated pool splits into disjoint blocks, between 100 and the real test split's size),
    reporting the mean and standard deviation over blocks. Resampled
    sets are drawn afresh for each block, by each of ``methods``, from the flattened weights
    of the resample stage's settings. ``pool``: which generated rows are scored: ``held_out``
    (those the classifier did not train on, whose weights are out-of-sample) or ``all``.
    """

    STAGE: ClassVar[str] = "quality"
    features: Extractor = "domain"          # the features FID / KID / IS / PRDC are computed on
    methods: tuple[ResampleMethod, ...] = ("systematic",)
    pool: Literal["held_out", "all"] = "held_out"
    eval_size: int | None = Field(None, ge=2)
    num_blocks: int = Field(10, ge=1)
    kid_subsets: int = Field(10, ge=1)      # KID subsets per block (10 blocks: 100 in all)
    kid_subset_size: int = Field(1000, ge=2)
    prdc_k: int = Field(5, ge=1)
    noise_baseline: bool = True             # the same classifier against random noise
    grid_size: int = Field(16, ge=1)        # images per row of the sample grids
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "QualityConfig":
        if not self.methods:
            raise ValueError("methods must name at least one resampling method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods lists a method twice")
        return self


class TrackingConfig(Config):
    """Where runs are logged (``raydgm.tracking``, MLflow). Not part of any artifact key."""

    STAGE: ClassVar[str] = "tracking"
    enabled: bool = True
    tracking_uri: str | None = None         # None: $MLFLOW_TRACKING_URI, else sqlite:///<RAYDGM_HOME>/mlflow.db
    experiment: str = "raydgm"


class ResNetConfig(Config):
    """CIFAR-style ResNet (He et al. 2016, Sec. 4.2): depth 6n+2, three stages of n basic blocks
    with ``width``, 2x and 4x channels; the first stage keeps the input size, the others halve it."""

    STAGE: ClassVar[str] = "resnet"
    depth: int = Field(8, ge=8)              # 8: one block per stage (fast on CPU); 20, 32, 56, 110
    width: int = Field(16, ge=1)             # channels of the first stage

    @model_validator(mode="after")
    def _check(self) -> "ResNetConfig":
        if (self.depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 56, 110), got {self.depth}")
        return self


Unlabeled = Literal["none", "generated", "resampled", "weighted", "real"]
UNLABELED_SOURCES: tuple[str, ...] = get_args(Unlabeled)   # in this order in every summary table


class SSLConfig(Config):
    """One semi-supervised run (``raydgm.ssl``): cross-entropy on a fixed labeled subset of the
    real train split + ``semantic_weight`` x the exactly-one semantic loss on unlabeled images.

    ``unlabeled``: ``none`` (supervised only), ``generated`` (raw samples), ``resampled``
    (the SIR set of the resample stage), ``weighted`` (raw samples, each semantic loss times
    its self-normalized importance weight within the batch) or ``real`` (the train split's
    rows outside the labeled subset, labels unused). The labeled subset is fixed by
    (``labeled_size``, ``seed``). An epoch is ``steps_per_epoch`` steps of one labeled and
    one unlabeled batch (None: one pass over the real train split's size).
    """

    STAGE: ClassVar[str] = "ssl"
    model: ResNetConfig = ResNetConfig()
    labeled_size: int = Field(100, ge=1)     # class-balanced: a multiple of the number of classes
    semantic_weight: float = Field(0.0, ge=0.0)
    unlabeled: Unlabeled = "none"
    seed: int = Field(0, ge=0)
    epochs: int = Field(8, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)        # labeled batch
    unlabeled_batch_size: int | None = Field(None, ge=1)  # None: batch_size
    learning_rate: float = Field(3e-3, gt=0.0)   # Adam; the thesis used 1e-3 for 20 epochs
    weight_decay: float = Field(0.0, ge=0.0)
    augment: Literal["none", "crop", "crop_flip"] = "crop"   # training batches only; no flips for digits
    eval_batch_size: int = Field(500, ge=1)
    device: str = "cpu"


class PipelineConfig(Config):
    """The stages that exist so far, in one file (``raydgm demo --config``)."""

    STAGE: ClassVar[str] = "pipeline"
    data: DataConfig = DataConfig()
    generator: TrainGeneratorConfig = TrainGeneratorConfig()
    generate: GenerateConfig = GenerateConfig()
    import_samples: str | None = None   # an .npz of samples made elsewhere: replaces the generator
    features: FeaturesConfig = FeaturesConfig()
    density_ratio: DensityRatioConfig = DensityRatioConfig()
    resample: ResampleConfig = ResampleConfig()
    quality: QualityConfig = QualityConfig()
    tracking: TrackingConfig = TrackingConfig()


class TrialResources(Config):
    """What each Ray Tune trial reserves. ``gpus_per_trial`` None: 0.5 (two trials share a GPU)
    on a cluster with GPUs, else 0; a trial with a GPU trains on ``cuda``."""

    STAGE: ClassVar[str] = "resources"
    cpus_per_trial: float = Field(1.0, gt=0.0)     # also the trial's torch threads (rounded, >= 1)
    gpus_per_trial: float | None = Field(None, ge=0.0)
    max_concurrent_trials: int | None = Field(None, ge=1)   # None: as many as resources allow
    max_failures: int = Field(2, ge=0)             # retries per trial, from its last checkpoint
    storage_path: str | None = None                # Tune results; None: $RAYDGM_TUNE_STORAGE, else <RAYDGM_HOME>/tune


def _check_grid_axes(cfg: Config, names: Iterable[str]) -> None:
    """ValueError unless each of the sweep's grid axes ``names`` lists at least one value, none twice."""
    for name in names:
        values = getattr(cfg, name)
        if not values:
            raise ValueError(f"{name} must list at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} lists a value twice: {list(values)}")


class SweepConfig(Config):
    """The semantic-loss sweep (``raydgm.sweep``): the pipeline, then a Ray Tune grid of
    ``labeled_sizes`` x (``unlabeled`` x ``semantic_weights``) x ``seeds`` semi-supervised runs.

    ``unlabeled='none'`` (supervised only) runs once per labeled size and seed, at weight 0.
    Each trial's config is ``ssl`` with its four grid values put in.
    """

    STAGE: ClassVar[str] = "sweep"
    name: str = Field("semantic_weight", pattern=r"^[A-Za-z0-9_.-]+$")   # MLflow experiment, Tune folder
    pipeline: PipelineConfig = PipelineConfig()
    ssl: SSLConfig = SSLConfig()
    labeled_sizes: tuple[int, ...] = (100, 1000)
    semantic_weights: tuple[float, ...] = (0.5,)
    unlabeled: tuple[Unlabeled, ...] = ("none", "generated", "resampled", "weighted")
    seeds: tuple[int, ...] = (0, 1, 2)
    resources: TrialResources = TrialResources()

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        _check_grid_axes(self, ("labeled_sizes", "semantic_weights", "unlabeled", "seeds"))
        if min(self.labeled_sizes) < 1:
            raise ValueError(f"labeled_sizes must be positive, got {list(self.labeled_sizes)}")
        if min(self.semantic_weights) < 0:
            raise ValueError(f"semantic_weights must be >= 0, got {list(self.semantic_weights)}")
        if min(self.seeds) < 0:
            raise ValueError(f"seeds must be >= 0, got {list(self.seeds)}")
        return self


class ClassifierSweepConfig(Config):
    """The real-vs-generated classifier sweep (``sweeps/classifier.py``): a grid over the
    classifier's hidden size, learning rate, calibration method and flattening exponent,
    each trial scored on held-out rows by ECE, Brier score and effective sample size."""

    STAGE: ClassVar[str] = "classifier_sweep"
    name: str = Field("classifier", pattern=r"^[A-Za-z0-9_.-]+$")
    pipeline: PipelineConfig = PipelineConfig()
    hidden_units: tuple[int, ...] = (64, 1000)
    learning_rates: tuple[float, ...] = (1e-3, 1e-4)
    calibrations: tuple[Literal["none", "temperature", "isotonic"], ...] = ("none", "temperature", "isotonic")
    alphas: tuple[float, ...] = (1.0, 0.5)        # flattening w -> w ** alpha
    seeds: tuple[int, ...] = (0,)
    resources: TrialResources = TrialResources()

    @model_validator(mode="after")
    def _check(self) -> "ClassifierSweepConfig":
        _check_grid_axes(self, ("hidden_units", "learning_rates", "calibrations", "alphas", "seeds"))
        if min(self.hidden_units) < 1 or min(self.learning_rates) <= 0:
            raise ValueError("hidden_units and learning_rates must be positive")
        if not all(0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"alphas must lie in [0, 1], got {list(self.alphas)}")
        return self


STAGE_CONFIGS: dict[str, type[Config]] = {
    c.STAGE: c for c in (DataConfig, TrainGeneratorConfig, GenerateConfig, DomainClassifierConfig,
                         FeaturesConfig, DensityRatioConfig, ResampleConfig, QualityConfig,
                         TrackingConfig, PipelineConfig, SSLConfig, SweepConfig,
                         ClassifierSweepConfig)
}


def load_config(stage: str, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """The config of ``stage`` from an optional file plus ``key=value`` overrides."""
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; known stages: {', '.join(STAGE_CONFIGS)}")
    return STAGE_CONFIGS[stage].load(path, overrides)
