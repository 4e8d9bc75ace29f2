"""Typed configs, one per stage (``stages``), the semi-supervised learner's (``ssl``) and one per
sweep (``sweeps``), on one base (``base``).

Every config is a frozen pydantic model validated in strict JSON mode: unknown keys, wrong
types (``"3"`` for an int, ``2.5`` for an int) and out-of-range values are errors that name
the key. A config loads from a YAML/JSON file and from ``key=value`` overrides (dotted keys
reach into nested configs: ``density_ratio.hidden_units=64``), and has a stable content
hash that the artifact store uses as its directory name. Every name is importable from
``raydgm.config``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from raydgm.config.base import Config, ConfigError, merge, parse_override, read_mapping
from raydgm.config.known_bias import CLASS_MIX_RULES, ContaminatedConfig, SkewedConfig
from raydgm.config.ssl import UNLABELED_SOURCES, ResNetConfig, SSLConfig, SSLTrainingConfig, Unlabeled
from raydgm.config.stages import (ActorPool, AutoencoderConfig, BaselineModelConfig, Calibration, ContrastiveConfig,
                                  DataConfig,
                                  DensityRatioConfig, DomainClassifierConfig, ExtractConfig, Extractor,
                                  FeaturesConfig, GenerateConfig, ImportSamplesConfig, ModelConfig,
                                  PipelineConfig, PixelCNNConfig, QualityConfig, ResampleConfig,
                                  ResampleMethod, TrackingConfig, TrainGeneratorConfig, VAEConfig)
from raydgm.config.sweeps import ClassifierSweepConfig, SSLTrial, SweepConfig, TrialResources, check_grid_axes

STAGE_CONFIGS: dict[str, type[Config]] = {
    c.STAGE: c for c in (DataConfig, TrainGeneratorConfig, GenerateConfig, DomainClassifierConfig,
                         AutoencoderConfig, ContrastiveConfig, FeaturesConfig, DensityRatioConfig, ResampleConfig, QualityConfig,
                         TrackingConfig, PipelineConfig, SSLConfig, SweepConfig,
                         ClassifierSweepConfig)
}


def load_config(stage: str, path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """The config of ``stage`` from an optional file plus ``key=value`` overrides."""
    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; known stages: {', '.join(STAGE_CONFIGS)}")
    return STAGE_CONFIGS[stage].load(path, overrides)


__all__ = ["CLASS_MIX_RULES", "STAGE_CONFIGS", "UNLABELED_SOURCES", "ActorPool", "AutoencoderConfig", "ContrastiveConfig",
           "BaselineModelConfig", "ContaminatedConfig", "SkewedConfig", "Calibration", "ClassifierSweepConfig", "Config", "ConfigError", "DataConfig",
           "DensityRatioConfig", "DomainClassifierConfig", "ExtractConfig", "Extractor",
           "FeaturesConfig", "GenerateConfig", "ImportSamplesConfig", "ModelConfig",
           "PipelineConfig", "PixelCNNConfig", "QualityConfig", "ResNetConfig", "ResampleConfig",
           "ResampleMethod", "SSLConfig", "SSLTrainingConfig", "SSLTrial", "SweepConfig", "TrackingConfig",
           "TrainGeneratorConfig", "TrialResources", "Unlabeled", "VAEConfig", "check_grid_axes",
           "load_config", "merge", "parse_override", "read_mapping"]
