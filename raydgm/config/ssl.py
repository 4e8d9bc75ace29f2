"""The semi-supervised learner's configs: its network, its training, and one trial."""
from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import Field, model_validator

from raydgm.config.base import Config


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


Unlabeled = Literal["none", "generated", "resampled", "subset", "weighted", "real"]
UNLABELED_SOURCES: tuple[str, ...] = get_args(Unlabeled)   # in this order in every summary table


class SSLTrainingConfig(Config):
    """How a semi-supervised run trains: everything of ``SSLConfig`` but the four values a
    sweep's grid sets per trial (``MOVED_KEYS``); the semantic-loss sweep's ``ssl`` section."""

    STAGE: ClassVar[str] = "ssl"
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        key: f"is set per trial by the sweep's grid; list its values in {grid!r} instead"
        for key, grid in {"labeled_size": "labeled_sizes", "semantic_weight": "semantic_weights",
                          "unlabeled": "unlabeled", "seed": "seeds"}.items()}
    model: ResNetConfig = ResNetConfig()
    epochs: int = Field(8, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)        # labeled batch
    unlabeled_batch_size: int | None = Field(None, ge=1)  # None: batch_size
    learning_rate: float = Field(3e-3, gt=0.0)   # Adam; the thesis used 1e-3 for 20 epochs
    lr_schedule: Literal["constant", "cosine"] = "constant"   # cosine: per step, to 0 at the last step
    semantic_rampup_epochs: float = Field(0.0, ge=0.0)   # semantic weight x exp(-5 (1 - t)^2), t: 0 -> 1
    weight_decay: float = Field(0.0, ge=0.0)
    # weighted: w_i / sum_batch w (self-normalized per batch, biased) or w_i / (B mean_pool w)
    weight_normalization: Literal["batch", "pool"] = "batch"
    augment: Literal["none", "crop", "crop_flip"] = "crop"   # training batches only; no flips for digits
    eval_batch_size: int = Field(500, ge=1)
    device: str = "cpu"


class SSLConfig(SSLTrainingConfig):
    """One semi-supervised run (``raydgm.training.ssl``): cross-entropy on a fixed labeled subset
    of the real train split + ``semantic_weight`` x the exactly-one semantic loss on unlabeled
    images.

    ``unlabeled``: ``none`` (supervised only), ``generated`` (raw samples), ``resampled``
    (an SIR set drawn per seed from the resample stage's used weights), ``subset`` (a uniform
    random subset of the raw samples with as many distinct images as that seed's SIR set: the
    diversity-matched control for ``resampled``), ``weighted`` (raw samples, each semantic loss
    times its importance weight, normalized as ``weight_normalization`` says) or ``real`` (the
    train split's rows outside the labeled subset, labels unused). The labeled subset is fixed by
    (``labeled_size``, ``seed``). An epoch is ``steps_per_epoch`` steps of one labeled and
    one unlabeled batch (None: one pass over the real train split's size).
    """

    MOVED_KEYS: ClassVar[dict[str, str]] = {}   # the grid's four keys are fields here
    labeled_size: int = Field(100, ge=1)     # class-balanced: a multiple of the number of classes
    semantic_weight: float = Field(0.0, ge=0.0)
    unlabeled: Unlabeled = "none"
    seed: int = Field(0, ge=0)
