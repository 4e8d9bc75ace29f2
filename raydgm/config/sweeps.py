"""The sweeps' configs: what each Ray Tune trial reserves, and the two grids."""
from __future__ import annotations

import re
from typing import Any, ClassVar, Iterable

from pydantic import Field, model_validator

from raydgm.config.base import Config
from raydgm.config.ssl import SSLConfig, SSLTrainingConfig, Unlabeled
from raydgm.config.stages import Calibration, PipelineConfig, TrainGeneratorConfig


class TrialResources(Config):
    """What each Ray Tune trial reserves. ``gpus_per_trial`` None: 0.5 (two trials share a GPU)
    on a cluster with GPUs, else 0; a trial with a GPU trains on ``cuda``."""

    STAGE: ClassVar[str] = "resources"
    cpus_per_trial: float = Field(1.0, gt=0.0)     # also the trial's torch threads (rounded, >= 1)
    gpus_per_trial: float | None = Field(None, ge=0.0)
    max_concurrent_trials: int | None = Field(None, ge=1)   # None: as many as resources allow
    max_failures: int = Field(2, ge=0)             # retries per trial, from its last checkpoint
    storage_path: str | None = None                # Tune results; None: $RAYDGM_TUNE_STORAGE, else <RAYDGM_HOME>/tune


def check_grid_axes(cfg: Config, names: Iterable[str]) -> None:
    """ValueError unless each of the sweep's grid axes ``names`` lists at least one value, none twice."""
    for name in names:
        values = getattr(cfg, name)
        if not values:
            raise ValueError(f"{name} must list at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} lists a value twice: {list(values)}")


WEIGHTED_SOURCES = {"resampled", "subset", "weighted"}   # unlabeled sources chosen (or sized) with the density ratio
GENERATED_SOURCES = {"generated", *WEIGHTED_SOURCES}   # sources drawn from a generator's samples
NO_GENERATOR = "-"   # the generator of the arms that use none (unlabeled none and real)
GRID_KEYS = ("generator", "labeled_size", "unlabeled", "semantic_weight", "seed")   # one trial's grid values


class SSLTrial(Config):
    """One trial of the semantic-loss sweep, built once (``SweepConfig.trials``) and handed as is
    to Tune, the trainable (``ssl`` is what ``raydgm.training.ssl.train`` gets) and the MLflow
    callback: the generator whose pool gives the unlabeled images (``NO_GENERATOR`` for the
    sources that use none) and the run's whole ``SSLConfig``, the sweep's ``ssl`` section with
    the grid's labeled_size, unlabeled, semantic_weight and seed in it."""

    STAGE: ClassVar[str] = "ssl_trial"
    generator: str = Field(pattern=r"^([A-Za-z0-9_.]+|-)$")
    ssl: SSLConfig

    @model_validator(mode="after")
    def _check(self) -> "SSLTrial":
        if (self.generator == NO_GENERATOR) == (self.ssl.unlabeled in GENERATED_SOURCES):
            raise ValueError(f"unlabeled={self.ssl.unlabeled!r} with generator={self.generator!r}: the "
                             f"sources {sorted(GENERATED_SOURCES)} need a generator, the others take "
                             f"{NO_GENERATOR!r}")
        return self

    def grid(self) -> dict[str, Any]:
        """The grid values ``GRID_KEYS`` (str, int, str, float, int): MLflow params, study records."""
        return {"generator": self.generator} | {k: getattr(self.ssl, k) for k in GRID_KEYS[1:]}

    @property
    def name(self) -> str:
        """``n100-vae-resampled-w0.005-s2``: labeled size, generator, unlabeled source, weight, seed;
        ``n100-none-s2`` for supervised only, ``n100-real-w0.005-s2`` for real images."""
        c = self.ssl
        gen = "" if self.generator == NO_GENERATOR else f"{self.generator}-"
        weight = "" if c.unlabeled == "none" else f"-w{c.semantic_weight:g}"
        return f"n{c.labeled_size}-{gen}{c.unlabeled}{weight}-s{c.seed}"

    def key(self, parent: str | None) -> str:
        """The trial's MLflow key under ``parent`` (a resumed trial finds its run by it)."""
        grid = self.grid()
        return f"{parent}:" + ":".join(f"{k}={grid[k]}" for k in sorted(grid))


class SweepConfig(Config):
    """The semantic-loss sweep (``raydgm.sweeps.semantic``): a pipeline per generator, then a
    Ray Tune grid of ``labeled_sizes`` x (``generators`` x ``unlabeled`` x ``semantic_weights``)
    x ``seeds`` semi-supervised runs.

    ``generators``: name -> generator config; each name gets ``pipeline`` with that generator
    (``pipelines()``), cached once. None: the one generator of ``pipeline.generator``, named
    after its kind. The arms that use no generated image, ``unlabeled='none'`` (supervised
    only, once per labeled size and seed, at weight 0: the weight-0 point of every curve) and
    ``real``, run once per labeled size, weight and seed, with generator ``"-"``. Each trial's
    config is ``ssl`` with its four grid values put in; ``ssl`` itself refuses them
    (``ssl.semantic_weight`` would be overwritten: set ``semantic_weights``).
    """

    STAGE: ClassVar[str] = "sweep"
    name: str = Field("semantic_weight", pattern=r"^[A-Za-z0-9_.-]+$")   # MLflow experiment, Tune folder
    pipeline: PipelineConfig = PipelineConfig()
    generators: dict[str, TrainGeneratorConfig] | None = Field(None, exclude_if=lambda v: v is None)
    ssl: SSLTrainingConfig = SSLTrainingConfig()
    labeled_sizes: tuple[int, ...] = (100, 1000)
    semantic_weights: tuple[float, ...] = (0.5,)
    unlabeled: tuple[Unlabeled, ...] = ("none", "generated", "resampled", "weighted")
    seeds: tuple[int, ...] = (0, 1, 2)
    resources: TrialResources = TrialResources()

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        check_grid_axes(self, ("labeled_sizes", "semantic_weights", "unlabeled", "seeds"))
        if min(self.labeled_sizes) < 1:
            raise ValueError(f"labeled_sizes must be positive, got {list(self.labeled_sizes)}")
        if min(self.semantic_weights) < 0:
            raise ValueError(f"semantic_weights must be >= 0, got {list(self.semantic_weights)}")
        if min(self.seeds) < 0:
            raise ValueError(f"seeds must be >= 0, got {list(self.seeds)}")
        self._check_generators()
        if self.pipeline.density_ratio.features == "domain" and set(self.unlabeled) & WEIGHTED_SOURCES:
            raise ValueError(
                "pipeline.density_ratio.features=domain leaks labels into the weights: the domain CNN "
                "is trained on every train label, so resampled / subset / weighted images for a trial given "
                f"{min(self.labeled_sizes)} labels would be chosen with the other labels' information. "
                "Use a label-free extractor (autoencoder, contrastive, inception or pixels); domain may still score "
                "samples (quality.features)")
        return self

    def _check_generators(self) -> None:
        if self.generators is None:
            return
        if not self.generators:
            raise ValueError("generators must name at least one generator (or be left out: "
                             "pipeline.generator)")
        for name in self.generators:
            if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
                raise ValueError(f"generators: name {name!r} must be letters, digits, '_' or '.'")
        if self.pipeline.generator != TrainGeneratorConfig():
            raise ValueError("set either generators (a sweep axis) or pipeline.generator (one "
                             "generator), not both")
        if self.pipeline.import_samples is not None:
            raise ValueError("pipeline.import_samples replaces the generator; leave generators out")

    def pipelines(self) -> dict[str, PipelineConfig]:
        """Generator name -> the pipeline that trains it and weights its samples, in order."""
        if self.generators is None:
            name = "imported" if self.pipeline.import_samples else self.pipeline.generator.model.kind
            return {name: self.pipeline}
        return {name: self.pipeline.replace(generator=g.to_dict()) for name, g in self.generators.items()}

    def trials(self) -> list[SSLTrial]:
        """Every trial, by labeled size, then arm (source, generator, weight), then seed; each
        ``SSLConfig`` built once, here. ``none`` runs once per (labeled size, seed), at weight 0;
        ``none`` and ``real`` use no generator; generated, resampled, subset and weighted run per generator."""
        arms: list[tuple[str, str, float]] = []
        for source in self.unlabeled:
            if source == "none":
                arms.append((NO_GENERATOR, source, 0.0))
            else:
                gens = list(self.pipelines()) if source in GENERATED_SOURCES else [NO_GENERATOR]
                arms += [(g, source, w) for g in gens for w in self.semantic_weights]
        base = self.ssl.to_dict()
        return [SSLTrial(generator=g, ssl=SSLConfig.from_dict(base | {"labeled_size": n, "unlabeled": u,
                                                                      "semantic_weight": w, "seed": s}))
                for n in self.labeled_sizes for g, u, w in arms for s in self.seeds]


class ClassifierSweepConfig(Config):
    """The real-vs-generated classifier sweep (``sweeps/classifier.py``): a grid over the
    classifier's hidden size, learning rate, calibration method and flattening exponent,
    each trial scored on held-out rows by ECE, Brier score and effective sample size."""

    STAGE: ClassVar[str] = "classifier_sweep"
    name: str = Field("classifier", pattern=r"^[A-Za-z0-9_.-]+$")
    pipeline: PipelineConfig = PipelineConfig()
    hidden_units: tuple[int, ...] = (64, 1000)
    learning_rates: tuple[float, ...] = (1e-3, 1e-4)
    calibrations: tuple[Calibration, ...] = ("none", "temperature", "isotonic")
    alphas: tuple[float, ...] = (1.0, 0.5)        # flattening w -> w ** alpha
    seeds: tuple[int, ...] = (0,)
    resources: TrialResources = TrialResources()

    @model_validator(mode="after")
    def _check(self) -> "ClassifierSweepConfig":
        check_grid_axes(self, ("hidden_units", "learning_rates", "calibrations", "alphas", "seeds"))
        if min(self.hidden_units) < 1 or min(self.learning_rates) <= 0:
            raise ValueError("hidden_units and learning_rates must be positive")
        if not all(0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"alphas must lie in [0, 1], got {list(self.alphas)}")
        return self
