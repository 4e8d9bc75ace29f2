#!/usr/bin/env python
"""The main sweep: semi-supervised classifiers with a semantic loss on generated images.

    python sweeps/semantic_weight.py                  # default: mnist5k, 39 trials, ~15 min on 2 cores
    python sweeps/semantic_weight.py --preset study   # the study: 384 trials, < 2 h on 2 cores
    python sweeps/semantic_weight.py --smoke-test     # everything in miniature, < 3 min
    python sweeps/semantic_weight.py --preset paper --set pipeline.data.path=/data/cifar10
    python sweeps/semantic_weight.py --resume         # continue an interrupted sweep
"""
import sys

from raydgm.config import SweepConfig
from raydgm.sweeps.cli import main

DESCRIPTION = """\
Run (or reuse) one pipeline per generator - train the generator, generate, extract features,
fit the real-vs-generated classifier, resample, score FID / KID / IS - then a Ray Tune grid of
semi-supervised classifiers: cross-entropy on a fixed labeled subset of the real train split
plus semantic_weight x the exactly-one semantic loss on unlabeled images, over labeled_sizes x
(generators x unlabeled sources (none, generated, resampled, weighted, real) x
semantic_weights) x seeds. Every trial and stage is an MLflow child run of one parent run
(experiment = the sweep's name). Prints, per arm, test accuracy (at the epoch with the best
validation accuracy) with a 95% interval over seeds and the seed-paired differences vs none
and vs generated; then Table 6.4 (accuracy at the weight selected on validation) and
Table 6.3 (sample quality per generator)."""

EPILOG = """\
presets (raydgm/sweeps/presets/*.yaml): default (mnist5k, baseline and VAE generators, 100
labels, 3 weights, 3 seeds: 39 trials, ~15 min), smoke (--smoke-test), study (the README's
study: 100 and 1,000 labels, 5 generators (baseline, VAE, PixelCNN++, skewed, contaminated),
every source, 3 weights, 3 seeds: 384 trials, trimmed to 2 h on 2 cores by a stated rule), paper
(CIFAR-10, PixelCNN++ and VAE, the thesis's grid, for a GPU cluster), known_bias (the default
pipeline on generators whose true weights are known: docs/known_bias.md), known_bias_validation
(other splits and biases, to choose a weighting setting on before running known_bias once)."""


def run(cfg: SweepConfig, resume: bool, pipeline_only: bool = False):
    from raydgm.sweeps.semantic import run_semantic_sweep   # Ray loads here, not for --help
    return run_semantic_sweep(cfg, resume=resume, pipeline_only=pipeline_only)


if __name__ == "__main__":
    sys.exit(main(None, SweepConfig, run, "semantic_weight.py", DESCRIPTION, EPILOG,
                  smoke="smoke", default="default", presets=("study", "paper", "known_bias", "known_bias_validation")))
