"""One typed config per stage: data, generator, generation, features, density ratio, resampling,
quality, tracking, the semi-supervised classifier, and the pipeline that holds them."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, model_validator

from raydgm._names import KNOWN_DATASETS, RESAMPLE_METHODS
from raydgm.config.base import Config
from raydgm.config.known_bias import ContaminatedConfig, SkewedConfig


class DataConfig(Config):
    """Which real dataset, and how it is split (see ``raydgm.data.load_dataset``)."""

    STAGE: ClassVar[str] = "data"
    name: Literal[KNOWN_DATASETS] = "mnist5k"   # the datasets raydgm.data loads
    path: str | None = None          # cifar10 directory or npz file
    download: bool = False           # cifar10 only: fetch with torchvision if missing
    seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)   # cifar10: the official test_batch instead
    # split each class alike (CIFAR-10: 4,500 train images per class); left out of the cache key when off
    stratify: bool = Field(False, exclude_if=lambda v: not v)

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


ModelConfig = Annotated[Union[BaselineModelConfig, VAEConfig, PixelCNNConfig, SkewedConfig,
                              ContaminatedConfig], Field(discriminator="kind")]


class TrainGeneratorConfig(Config):
    """Fit a generator on the real train split (``raydgm.training.generators``); one checkpoint per epoch.

    ``checkpoint``: a pretrained file to import instead of training (0 epochs; the training
    keys are then ignored), in ``checkpoint_format``: ``pclucas14`` is the PyTorch state dict
    of pclucas14/pixel-cnn-pp (``model.kind`` pixelcnnpp with the file's nr_resnet /
    nr_filters / nr_logistic_mix). The stage keys it by the file's sha256, not its path. Both
    keys are left out of the content hash while unset, so configs that train keep their keys.
    """

    STAGE: ClassVar[str] = "train_generator"
    VERSION: ClassVar[int] = 3   # 2: history rows carry test_loss / test_bpd; 3: trains on one intra-op thread
    model: ModelConfig = BaselineModelConfig()
    checkpoint: str | None = Field(None, min_length=1, exclude_if=lambda v: v is None)
    checkpoint_format: Literal["pclucas14"] = Field("pclucas14", exclude_if=lambda v: v == "pclucas14")
    epochs: int = Field(10, ge=1)                # ignored by closed-form fits (baseline, skewed, contaminated)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)   # Adam
    lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # multiplied into the rate after every epoch
    grad_clip: float | None = Field(None, gt=0.0)  # max global grad norm
    max_train_images: int | None = Field(None, ge=1)  # first N of the (shuffled) train split
    device: str = "cpu"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "TrainGeneratorConfig":
        if self.checkpoint is not None and self.model.kind != "pixelcnnpp":
            raise ValueError(f"checkpoint: a {self.checkpoint_format} file holds a PixelCNN++, but "
                             f"model.kind is {self.model.kind!r}; set model.kind=pixelcnnpp")
        return self


class ActorPool(Config):
    """A Ray Data actor pool (``pipeline.raydata.actor_resources``): ``num_actors`` actors, each
    reserving ``num_cpus_per_actor`` CPUs (keep the pool below the cluster's CPUs, or Ray
    Data's read/write tasks starve) and ``num_gpus_per_actor`` GPUs (None: 1 on a cluster
    with GPUs, else 0). An actor granted a GPU uses CUDA where it runs, if it sees one."""

    num_actors: int = Field(1, ge=1)
    num_cpus_per_actor: float = Field(0.5, gt=0.0)
    num_gpus_per_actor: float | None = Field(None, ge=0.0)


class GenerateConfig(ActorPool):
    """Draw samples from a trained generator through Ray Data (``raydgm.pipeline.generate``), on an
    actor pool (``ActorPool``). Sample i is drawn from its own seed derived from (seed, i).
    """

    STAGE: ClassVar[str] = "generate"
    num_samples: int = Field(5000, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    autocast: Literal["none", "bf16"] = "none"   # bf16 autocast on CUDA actors
    on_nonfinite: Literal["fail", "drop"] = "fail"  # NaN/Inf image: fail with a count, or drop and count
    rows_per_file: int = Field(10_000, ge=1)        # at most; smaller files keep every actor busy
    VERSION: ClassVar[int] = 2   # 2: 16 blocks per actor, one output file per block (generate.id_shards)


class ImportSamplesConfig(Config):
    """Samples made elsewhere (an .npz with uint8 ``images``), keyed by the file's content."""

    STAGE: ClassVar[str] = "import_samples"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Extractor = Literal["pixels", "domain", "autoencoder", "contrastive", "inception"]


Count = Annotated[int, Field(ge=1)]
FeatureDim = Annotated[int, Field(ge=2)]
Rate = Annotated[float, Field(gt=0.0)]


class ExtractorNetConfig(Config):
    """What the two feature extractors' networks share: conv ``channels``, a ``feature_dim``-unit
    feature layer, Adam at ``learning_rate`` for up to ``epochs`` with early stopping after
    ``patience`` epochs without a better validation score. Each subclass names its stage and
    sets the defaults without one here."""

    channels: tuple[int, ...]
    feature_dim: FeatureDim
    epochs: Count = 8
    batch_size: Count
    learning_rate: Rate
    patience: Count
    device: str = "cpu"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ExtractorNetConfig":
        if not self.channels or min(self.channels) < 1:
            raise ValueError("channels must list at least one positive channel count")
        return self


class DomainClassifierConfig(ExtractorNetConfig):
    """The ``domain`` feature extractor: a small CNN trained on the real train split's labels.

    Its penultimate layer (``feature_dim`` units) gives features; its softmax over the classes
    gives an Inception-Score analogue. Early stopping keeps the epoch with the best
    validation accuracy (mnist5k, 8 epochs: val accuracy 0.978 in ~9 s on 2 cores).
    """

    STAGE: ClassVar[str] = "domain_classifier"
    channels: tuple[int, ...] = (16, 32)     # one conv block (conv, ReLU, 2x2 max-pool) each
    feature_dim: FeatureDim = 128            # penultimate layer: the features
    batch_size: Count = 128
    learning_rate: Rate = 2e-3
    patience: Count = 3


class AutoencoderConfig(ExtractorNetConfig):
    """The ``autoencoder`` feature extractor: a small conv autoencoder trained on the real train
    split's images without their labels (``raydgm.models.autoencoder``).

    Its bottleneck (``feature_dim`` units) gives features; there are no logits, so no
    Inception-Score analogue. Loss: binary cross-entropy of the sigmoid reconstruction against
    the pixels x / 255; early stopping keeps the epoch with the lowest validation loss
    (mnist5k, 8 epochs: val MSE 0.0076, mean image 0.051, 17 s on 1 thread).
    """

    STAGE: ClassVar[str] = "autoencoder"
    channels: tuple[int, ...] = (8, 16)      # one conv3x3 (stride 2 while >= 2x2) + ReLU each
    feature_dim: FeatureDim = 32             # the bottleneck: the features
    batch_size: Count = 32
    learning_rate: Rate = 4e-3
    patience: Count = 2


class ContrastiveConfig(ExtractorNetConfig):
    """The ``contrastive`` feature extractor: an encoder trained on the real train split's images
    without their labels, so that two random distortions of one image get nearby features
    (SimCLR: ``raydgm.models.contrastive``, ``raydgm.training.contrastive``).

    Its ``feature_dim`` units give features (the projection head only serves the loss); no
    logits. Each batch's images are distorted twice (rotation, scale, shift: the ``max_*``
    fields; no flips); loss: NT-Xent at ``temperature``; early stopping keeps the epoch with the
    lowest validation loss (distortions of the validation images drawn alike every epoch).
    """

    STAGE: ClassVar[str] = "contrastive"
    channels: tuple[int, ...] = (32, 64, 128)   # conv3x3 (stride 2 while >= 2x2) + BatchNorm + ReLU each
    feature_dim: FeatureDim = 64                # the features
    projection_dim: Count = 64                  # the head the loss compares
    epochs: Count = 40
    batch_size: Count = 256                     # 2 x 256 views: 510 negatives per view
    learning_rate: Rate = 2e-3
    patience: Count = 5
    temperature: Rate = 0.5
    max_rotation: float = Field(15.0, ge=0.0, le=180.0)   # degrees
    max_scale: float = Field(0.15, ge=0.0, lt=1.0)
    max_shift: float = Field(0.1, ge=0.0, le=0.5)          # of the image side


class FeaturesConfig(ActorPool):
    """How features are extracted and cached (``raydgm.pipeline.features``), shared by every extractor.

    Features are cached per (image set, extractor): execution settings here (batch size,
    actors) do not change the cache key. With ``ray_min_rows`` set, sets of at least that many
    images go through Ray Data on an actor pool (``ActorPool``); the rest, and every set when
    it is None (the default), are extracted in this process. On one 2-core machine Ray Data
    never won (0.19x at 20,000 domain-feature images, 0.44x at 100,000: the actors share the
    driver's cores and add start-up and a copy through the object store, bench/README.md);
    set it where the actors bring GPUs or nodes the driver lacks (configs/pixelcnnpp_cifar10.yaml).
    """

    STAGE: ClassVar[str] = "features"
    inception_weights: str | None = None    # TorchScript file; None: $RAYDGM_INCEPTION_WEIGHTS, ...
    domain: DomainClassifierConfig = DomainClassifierConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    batch_size: int = Field(200, ge=1)
    device: str = "auto"                    # auto: cuda when available
    ray_min_rows: int | None = Field(None, ge=0)   # None: always in this process


class ExtractConfig(Config):
    """The cache key of one feature table: the extractor; its weights enter as an input hash."""

    STAGE: ClassVar[str] = "features"
    VERSION: ClassVar[int] = 2   # 2: through Ray Data, one output file per input file
    extractor: Extractor


Calibration = Literal["none", "temperature", "isotonic"]


class DensityRatioConfig(Config):
    """The real-vs-generated classifier of LFIW (Grover et al. 2019, Sec. 3) and its calibration.

    ``folds`` >= 2: K-fold cross-fitting (``density_ratio.cross_fit``): every generated row's
    weight comes from a classifier that never saw it (for training, early stopping or
    calibration). ``folds`` = 1: one train / val / calib split, whose train rows get in-sample
    weights (kept for comparison).
    """

    STAGE: ClassVar[str] = "density_ratio"
    # 2: samples equal to a real train image share its fold (group_copies); truth scored in report.json
    # 3: report.json's truth gives spearman_class_counts
    # 4: ... and what limits the rank: within_class_sd, spearman_class_means, rank_noise_tolerance,
    #    spearman_features, class_probe_accuracy
    VERSION: ClassVar[int] = 4
    features: Extractor = "contrastive"      # the classifier's input features: label-free by default
    folds: int = Field(5, ge=1)              # cross-fitting folds; 1: a single split
    hidden_units: int = Field(1000, ge=1)    # the paper's one hidden layer of 1,000 units
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, ge=2)
    balanced: bool = True                    # batches half real, half generated (prior 1/2)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1)           # early stopping on held-out BCE
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)     # early-stopping split
    calib_fraction: float = Field(0.2, gt=0.0, lt=1.0)   # calibration split
    calibration: Calibration = "temperature"
    isotonic_eps: float = Field(1e-4, gt=0.0, lt=0.5)    # isotonic probabilities clipped to [eps, 1-eps]
    standardize: bool = True                 # z-score features with train-split statistics
    group_copies: bool = True                # a sample equal to a real train image shares its fold and split
    device: str = "cpu"                      # torch device for the classifier
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "DensityRatioConfig":
        if self.val_fraction + self.calib_fraction >= 1.0:
            raise ValueError("val_fraction + calib_fraction must be below 1")
        return self


ResampleMethod = Literal[RESAMPLE_METHODS]   # the methods raydgm.resample implements


class ResampleConfig(Config):
    """How log-weights become the weights every later stage uses, and a resampled set.

    Computed once, on one pool: ``pool`` ``held_out`` (rows whose weight came from a classifier
    that did not train on them: every row under cross-fitting) or ``all``; flattening w ** alpha
    (alpha from ``target_ess_fraction`` when set), then Pareto smoothing (``smoothing: psis``,
    Vehtari et al. 2024), then the clips; then ``method`` draws ``num_samples`` rows.
    """

    STAGE: ClassVar[str] = "resample"
    VERSION: ClassVar[int] = 2   # 2: summary.json scores SIR against known-bias samples' truth
    method: ResampleMethod = "systematic"
    num_samples: int | None = Field(None, ge=1)   # None: as many as the pool
    pool: Literal["held_out", "all"] = "held_out"
    alpha: float = Field(1.0, ge=0.0, le=1.0)     # flattening: w ** alpha
    target_ess_fraction: float | None = Field(None, gt=0.0, le=1.0)  # overrides alpha
    smoothing: Literal["none", "psis"] = "none"   # psis: the largest weights -> Pareto quantiles
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

    Every set is scored against the real test split (images neither the generator nor the
    classifier trained on) on ``num_blocks`` evaluation blocks of ``eval_size`` rows (disjoint
    where the set is large enough; None: the size at which the generated pool splits into
    disjoint blocks, between 100 and the floor set's size), reporting the mean and standard
    deviation over blocks; the floor row scores blocks of the real train split, disjoint from
    the reference. The generated pool and its weights are the resample stage's (``pool``,
    flattening, smoothing, clips); resampled sets are drawn afresh for each block, by each of
    ``methods``.
    """
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "pool": "moved to 'resample.pool': every stage uses the resample stage's pool"}

    STAGE: ClassVar[str] = "quality"
    features: Extractor = "domain"          # the features FID / KID / IS / PRDC are computed on
    methods: tuple[ResampleMethod, ...] = ("systematic",)
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
