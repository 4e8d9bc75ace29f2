#!/usr/bin/env python
"""The second sweep: the real-vs-generated classifier behind the importance weights.

    python sweeps/classifier.py                   # default: mnist5k, 12 fits x 3 alphas
    python sweeps/classifier.py --smoke-test      # everything in miniature, ~70 s on 2 cores
    python sweeps/classifier.py --set hidden_units=[32,128,1000] --set seeds=[0,1,2]
    python sweeps/classifier.py --resume          # continue an interrupted sweep
"""
import sys

from raydgm.config import ClassifierSweepConfig
from raydgm.sweeps.cli import main

DESCRIPTION = """\
Run (or reuse) the pipeline - train the generator, generate, extract features, fit the
density-ratio classifier, resample - then a Ray Tune grid of real-vs-generated classifiers
over hidden_units x learning_rates x calibrations (none, temperature, isotonic) x seeds,
each scored at every flattening exponent of alphas (weights w -> w^alpha). Scores are held
out (the real test split vs the generated rows the classifier did not train on): ECE, Brier,
accuracy and ROC AUC of the classifier; ESS fraction and PSIS k-hat of the flattened weights.
Every (fit, alpha) is an MLflow child run (with its calibration curve) of one parent run
(experiment = the sweep's name). Prints one row per (hidden_units, learning_rate,
calibration, alpha), mean over seeds, sorted by held-out ECE."""

EPILOG = """\
presets (raydgm/sweeps/presets/*.yaml): classifier (mnist5k, the default), classifier_smoke
(--smoke-test)."""


def run(cfg: ClassifierSweepConfig, resume: bool, pipeline_only: bool = False):
    from raydgm.sweeps.classifier import run_classifier_sweep   # Ray loads here, not for --help
    return run_classifier_sweep(cfg, resume=resume, pipeline_only=pipeline_only)


if __name__ == "__main__":
    sys.exit(main(None, ClassifierSweepConfig, run, "classifier.py", DESCRIPTION,
                  EPILOG, smoke="classifier_smoke", default="classifier"))
