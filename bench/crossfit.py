"""What cross-fitting costs and changes on the demo (``configs/demo.yaml``), side by side.

    python bench/crossfit.py                       # RAYDGM_HOME or ./artifacts: the demo's cache
    python bench/crossfit.py --home /tmp/demohome --features autoencoder
    python bench/crossfit.py --smoke               # seconds, in a temporary home (not a result)

Runs (or reuses) the demo's generator, samples and feature tables, then for each extractor
fits the density-ratio classifier once on a single train / val / calib split (``folds`` = 1)
and cross-fitted over 5 folds, on the same features, and prints: the seconds of each, the
mean log-weight of the single fit's own train rows and of its held-out rows, the mean
out-of-fold log-weight, the alpha that keeps 10% ESS (old protocol: all rows of the single
fit; new: out of fold), and the out-of-fold AUC / ECE. Last line per extractor: the time
ratio, ``cross-fitted (K=5) vs single split, autoencoder features: N.NNx the time``.

``--smoke`` shrinks everything to seconds (not a result): a PCA (8) + 2-component baseline,
300 samples, pixel features (no extractor to train), a 32-unit classifier for 3 epochs, 2
folds, in a temporary artifact home unless ``--home`` names one.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from raydgm import density_ratio
from raydgm.config import PipelineConfig
from raydgm.pipeline.stages import Featurizer, generate_samples, load_data, read_features, train_generator
from raydgm.pipeline.store import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["generator.model.pca_dim=8", "generator.model.n_components=2", "generate.num_samples=300",
         "density_ratio.hidden_units=32", "density_ratio.max_epochs=3"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="artifact store (default: $RAYDGM_HOME or ./artifacts)")
    parser.add_argument("--features", nargs="+", default=["autoencoder", "domain"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="seconds (CI; not a result): see above")
    args = parser.parse_args(argv)
    if args.smoke:
        args.features, args.folds = ["pixels"], 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = PipelineConfig.load(ROOT / "configs" / "demo.yaml", ["tracking.enabled=false"] + SMOKE * args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(args.home or (tmp if args.smoke else None))
        compare(cfg, store, args.features, args.folds)


def compare(cfg: PipelineConfig, store: ArtifactStore, extractors: list[str], folds: int) -> None:
    """Print the single split and the cross-fit side by side, for each of ``extractors``."""
    data = load_data(cfg.data)
    samples = generate_samples(cfg.generate, train_generator(cfg.data, cfg.generator, store, data, progress=False),
                               store)
    feat = Featurizer(cfg.data, cfg.features, store, data, progress=False)
    ratio = {}
    for name in extractors:
        real, gen = (read_features(a)[1] for a in (feat.real(name, "train"), feat.samples(name, samples)))
        dr = cfg.density_ratio.replace(features=name)
        with warnings.catch_warnings():          # degenerate weights are the finding here
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            single = density_ratio.fit(real, gen, dr.replace(folds=1))
            t1 = time.perf_counter() - start
            start = time.perf_counter()
            cf = density_ratio.cross_fit(real, gen, folds, dr)
            tk = time.perf_counter() - start
        lw, own = single.log_weights(gen), single.gen_split == "train"
        ratio[name] = tk / t1
        print(f"{name}: single split {t1:.1f} s, cross-fitted (K={folds}) {tk:.1f} s")
        print(f"  mean log w: single fit's own train rows {lw[own].mean():.3f}, its held-out rows "
              f"{lw[~own].mean():.3f}; out of fold {cf.log_weights.mean():.3f}")
        print(f"  alpha for 10% ESS: single split, all rows {density_ratio.alpha_for_ess(lw, 0.1):.3f}; "
              f"out of fold {density_ratio.alpha_for_ess(cf.log_weights, 0.1):.3f}")
        print(f"  out of fold: AUC {cf.report.roc_auc:.4f}, ECE {cf.report.ece:.4f}, "
              f"ESS fraction {cf.report.ess_fraction:.4g}, k-hat {cf.report.khat:.2f}")
    for name, r in ratio.items():
        print(f"cross-fitted (K={folds}) vs single split, {name} features: {r:.3g}x the time")


if __name__ == "__main__":
    main()
