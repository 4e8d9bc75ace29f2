"""What cross-fitting costs and changes on the demo (``configs/demo.yaml``), side by side.

    python bench/crossfit.py                       # RAYDGM_HOME or ./artifacts: the demo's cache
    python bench/crossfit.py --home /tmp/demohome --features autoencoder

Runs (or reuses) the demo's generator, samples and feature tables, then for each extractor
fits the density-ratio classifier once on a single train / val / calib split (``folds`` = 1)
and cross-fitted over 5 folds, on the same features, and prints: the seconds of each, the
mean log-weight of the single fit's own train rows and of its held-out rows, the mean
out-of-fold log-weight, the alpha that keeps 10% ESS (old protocol: all rows of the single
fit; new: out of fold), and the out-of-fold AUC / ECE. Last line: the time ratio.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from raydgm import density_ratio
from raydgm.config import PipelineConfig
from raydgm.pipeline.stages import Featurizer, generate_samples, load_data, read_features, train_generator
from raydgm.pipeline.store import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="artifact store (default: $RAYDGM_HOME or ./artifacts)")
    parser.add_argument("--features", nargs="+", default=["autoencoder", "domain"])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    cfg = PipelineConfig.load(ROOT / "configs" / "demo.yaml", ["tracking.enabled=false"])
    store = ArtifactStore(args.home)
    data = load_data(cfg.data)
    samples = generate_samples(cfg.generate, train_generator(cfg.data, cfg.generator, store, data, progress=False),
                               store)
    feat = Featurizer(cfg.data, cfg.features, store, data, progress=False)
    ratio = {}
    for name in args.features:
        real, gen = (read_features(a)[1] for a in (feat.real(name, "train"), feat.samples(name, samples)))
        dr = cfg.density_ratio.replace(features=name)
        with warnings.catch_warnings():          # degenerate weights are the finding here
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            single = density_ratio.fit(real, gen, dr.replace(folds=1))
            t1 = time.perf_counter() - start
            start = time.perf_counter()
            cf = density_ratio.cross_fit(real, gen, args.folds, dr)
            tk = time.perf_counter() - start
        lw, own = single.log_weights(gen), single.gen_split == "train"
        ratio[name] = tk / t1
        print(f"{name}: single split {t1:.1f} s, cross-fitted (K={args.folds}) {tk:.1f} s")
        print(f"  mean log w: single fit's own train rows {lw[own].mean():.3f}, its held-out rows "
              f"{lw[~own].mean():.3f}; out of fold {cf.log_weights.mean():.3f}")
        print(f"  alpha for 10% ESS: single split, all rows {density_ratio.alpha_for_ess(lw, 0.1):.3f}; "
              f"out of fold {density_ratio.alpha_for_ess(cf.log_weights, 0.1):.3f}")
        print(f"  out of fold: AUC {cf.report.roc_auc:.4f}, ECE {cf.report.ece:.4f}, "
              f"ESS fraction {cf.report.ess_fraction:.4g}, k-hat {cf.report.khat:.2f}")
    for name, r in ratio.items():
        print(f"cross-fitted (K={args.folds}) vs single split, {name} features: {r:.1f}x the time")


if __name__ == "__main__":
    main()
