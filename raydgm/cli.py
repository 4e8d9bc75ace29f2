"""The ``raydgm`` command. Each subcommand: parse -> validated config -> a stage function."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from raydgm.config import STAGE_CONFIGS, ConfigError, PipelineConfig, load_config
from raydgm.tracking import TrackingError

DESCRIPTION = """\
raydgm: measure and correct the bias of deep generative models (likelihood-free importance
weighting), then sweep what corrected samples are worth downstream.

Configs are YAML/JSON files; any key can be overridden with --set key=value (dotted keys
reach nested stages: --set density_ratio.hidden_units=64). Unknown keys are errors.
Stage outputs are cached under $RAYDGM_HOME (default ./artifacts) and reused.
"""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, FloatingPointError, TrackingError) as err:
        print(f"raydgm {args.command}: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its help text. Long because it is one flat block per subcommand,
    read like the command's help page; splitting it would only scatter the texts."""
    parser = argparse.ArgumentParser(prog="raydgm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run every stage on the default dataset (mnist5k)",
                          description="Fit the configured generator (by default the PCA + Gaussian "
                          "mixture baseline) on the real train split, generate through Ray Data, "
                          "extract features, train and calibrate the real-vs-generated classifier, "
                          "weight every sample, resample, score FID / KID / IS / PRDC of the raw, "
                          "resampled and importance-weighted sets, draw the figures and log it all "
                          "to MLflow. Cached stages are reused.")
    _config_args(demo)
    _home_arg(demo)
    demo.add_argument("--no-noise-baseline", action="store_true",
                      help="skip the sanity baseline (the classifier against random noise images)")
    demo.set_defaults(func=_demo)

    _command(sub, "quality", _quality,
             help="score raw, resampled and importance-weighted samples (FID/KID/IS/PRDC)",
             description="Run (or reuse) every stage up to the resample stage, then score against "
             "the real test split (images neither the generator nor the classifier trained on), on "
             "quality.num_blocks blocks: the real train split (the floor), "
             "the raw generated pool, the pool resampled by each of quality.methods, and the "
             "importance-weighted pool. Prints the table (mean ± std over blocks), writes the "
             "figures (sample grids, weight histogram, ESS vs flattening exponent, reliability "
             "diagram, proportion curve, metric bars) with their data, and logs everything to "
             "MLflow (tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///$RAYDGM_HOME/mlflow.db).",
             epilog="example: raydgm quality --config configs/demo.yaml "
             "--set 'quality.methods=[systematic,residual]'")

    show = sub.add_parser("config", help="print a stage's validated config and its hash",
                          description="Validate a config (defaults, a file, overrides) and print it.")
    show.add_argument("stage", choices=sorted(STAGE_CONFIGS))
    _config_args(show)
    show.set_defaults(func=_show_config)

    _command(sub, "train-generator", _train_generator,
             help="train (or reuse) the generator of a pipeline config",
             description="Train the config's generator (generator.model.kind: baseline, vae or "
             "pixelcnnpp) on the real train split, with a progress bar, per-epoch train/val bits "
             "per dim and a checkpoint every epoch. Killed runs resume from the last checkpoint "
             "when run again. Prints the artifact directory holding model.pt.",
             epilog="example: raydgm train-generator --config configs/vae_mnist.yaml "
             "--set generator.epochs=2")
    _command(sub, "generate", _generate,
             help="draw samples from the trained generator through Ray Data",
             description="Train or reuse the generator, then draw generate.num_samples samples "
             "through a Ray Data actor pool into Parquet (sample_id, seed, image). Sample i comes "
             "from seed (generate.seed, i): the same images for any batch size or number of "
             "actors. Uses the running Ray cluster (RAY_ADDRESS) or starts a local one.",
             epilog="example: raydgm generate --config configs/vae_mnist.yaml "
             "--set generate.num_actors=2")

    imp = sub.add_parser(
        "import-samples", help="bring samples made elsewhere (.npz) into the samples layout",
        description="Copy an .npz holding 'images' (uint8, (N, C, H, W) or (N, H, W)) into the "
        "artifact store as samples/*.parquet, keyed by the file's sha256. Use it in a pipeline "
        "with --set import_samples=FILE.npz.")
    imp.add_argument("file", type=Path, help="the .npz file")
    _home_arg(imp)
    imp.set_defaults(func=_import_samples)

    gen = _command(
        sub, "import-generator", _import_generator,
        help="bring a pretrained PixelCNN++ (pclucas14/pixel-cnn-pp .pth) in as the generator",
        description="Import a pretrained generator instead of training one: FILE is the PyTorch "
        "state dict of pclucas14/pixel-cnn-pp's PixelCNN (e.g. its CIFAR-10 model, 5 resnets / 160 "
        "filters / 10 mixtures, 2.95 bits/dim), loaded with torch.load(weights_only=True), its "
        "weight norm folded into plain weights. generator.model must be kind pixelcnnpp with the "
        "file's nr_resnet / nr_filters / nr_logistic_mix; a tensor that does not fit is an error "
        "that names it. Writes the train_generator artifact (model.pt, 0 epochs) keyed by the "
        "file's sha256, which generate, demo, quality and the sweeps reuse when the config sets "
        "generator.checkpoint=FILE.",
        epilog="example: raydgm import-generator pcnn_lr.0.00040_nr-resnet5_nr-filters160_889.pth "
        "--config configs/pixelcnnpp_cifar10.yaml --set data.path=/data/cifar10")
    gen.add_argument("file", type=Path, help="the .pth state dict")
    gen.add_argument("--format", choices=["pclucas14"], default="pclucas14",
                     help="whose layout FILE has (default: pclucas14)")

    data = sub.add_parser("data", help="summarize a dataset: shape, classes, splits",
                          description="Load a dataset as the pipeline would and print a summary.")
    _config_args(data)
    data.set_defaults(func=_data)

    mls = sub.add_parser(
        "mlflow-server", help="run one MLflow tracking server for a team or a cluster",
        description="Check the options (database driver, writable directories, free port), print "
        "how clients reach the server, then run `mlflow server --serve-artifacts` in the "
        "foreground until Ctrl+C / SIGTERM: clients upload artifacts through the server, so "
        "trials and drivers need no access to the artifact storage. The server has no "
        "authentication: keep it on 127.0.0.1 and reach it through an SSH tunnel.",
        epilog="example (cluster.yaml): raydgm mlflow-server --backend-store-uri "
        "sqlite:///$HOME/mlflow/mlflow.db --artifacts-destination $RAYDGM_SHARED/mlartifacts "
        "--host 127.0.0.1 --port 5000")
    mls.add_argument("--backend-store-uri", metavar="URI",
                     help="runs database: sqlite:///PATH, postgresql+psycopg://USER@HOST/DB or "
                     "mysql+pymysql://USER@HOST/DB (default: sqlite:///$RAYDGM_HOME/mlflow-server/mlflow.db)")
    mls.add_argument("--artifacts-destination", metavar="DIR_OR_URI",
                     help="where artifacts go: a directory, or s3://, gs://, ... (needs boto3, ...) "
                     "(default: $RAYDGM_SHARED/mlartifacts, else $RAYDGM_HOME/mlflow-server/mlartifacts)")
    mls.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default: 127.0.0.1; any other is warned about)")
    mls.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    mls.add_argument("--dry-run", action="store_true",
                     help="check the options, print the mlflow command line and exit")
    mls.set_defaults(func=_mlflow_server)
    return parser


def _command(sub: Any, name: str, func: Any, **texts: str) -> argparse.ArgumentParser:
    """A subcommand that takes a pipeline config (--config, --set) and an artifact root (--home)."""
    parser = sub.add_parser(name, **texts)
    _config_args(parser)
    _home_arg(parser)
    parser.set_defaults(func=func)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set seed=3")


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="artifact root (default: $RAYDGM_HOME or ./artifacts)")


def _trained(args: argparse.Namespace, **generator_changes: Any) -> tuple[PipelineConfig, Any, Any]:
    """(pipeline config, artifact store, generator artifact): the config of ``--config`` and
    ``--set`` (its generator section updated with ``generator_changes``), and its generator
    trained, imported or reused in ``--home``, each step printed."""
    from raydgm.pipeline.stages import load_data, log_artifact, train_generator
    from raydgm.pipeline.store import ArtifactStore
    cfg = PipelineConfig.load(args.config, args.overrides)
    if generator_changes:
        cfg = cfg.replace(generator=cfg.generator.to_dict() | generator_changes)
    store = ArtifactStore(args.home)
    art = log_artifact(print, train_generator(cfg.data, cfg.generator, store, load_data(cfg.data), log=print))
    return cfg, store, art


def _train_generator(args: argparse.Namespace) -> int:
    cfg, _, art = _trained(args)
    print(f"checkpoint ({cfg.generator.model.kind}): {art.file('model.pt')}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from raydgm.pipeline.stages import generate_samples
    cfg, store, trained = _trained(args)
    art = generate_samples(cfg.generate, trained, store)
    rows = art.rows
    print(f"generate: {'reused' if art.reused else 'wrote'} {rows['samples']} samples "
          f"({rows['dropped_nonfinite']} dropped as NaN/Inf) from {cfg.generator.model.kind}")
    print(f"samples: {art.file('samples')}")
    return 0


def _import_samples(args: argparse.Namespace) -> int:
    from raydgm.pipeline.stages import import_samples
    from raydgm.pipeline.store import ArtifactStore
    art = import_samples(args.file, ArtifactStore(args.home))
    print(f"import-samples: {'reused' if art.reused else 'imported'} {art.rows['samples']} samples "
          f"from {args.file}")
    print(f"samples: {art.file('samples')}")
    print(f"use them: raydgm demo --set import_samples={args.file}")
    return 0


def _import_generator(args: argparse.Namespace) -> int:
    _, _, art = _trained(args, checkpoint=str(args.file), checkpoint_format=args.format)
    print(f"checkpoint (pixelcnnpp): {art.file('model.pt')}")
    print(f"use it: --set generator.checkpoint={args.file}")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.stage, args.config, args.overrides)
    print(json.dumps(cfg.to_dict(), indent=2))
    print(f"# {args.stage} config hash: {cfg.content_hash()}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from raydgm.pipeline.stages import load_data
    cfg = load_config("data", args.config, args.overrides)
    ds = load_data(cfg)
    print(f"{ds.name}: {len(ds)} images, shape {tuple(ds.images.shape[1:])}, "
          f"dtype {ds.images.dtype}, {ds.num_classes} classes")
    for name, idx in ds.splits.items():
        counts = np.bincount(ds.labels[idx][ds.labels[idx] >= 0], minlength=ds.num_classes)
        print(f"  {name:5s} {len(idx):6d}  per class: {counts.tolist()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from raydgm.demo import run_demo
    overrides = args.overrides + (["quality.noise_baseline=false"] if args.no_noise_baseline else [])
    run_demo(PipelineConfig.load(args.config, overrides), home=args.home)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from raydgm.demo import print_quality, run_logged
    arts, uri, run_ids = run_logged(PipelineConfig.load(args.config, args.overrides), args.home)
    print_quality(arts["quality"], uri, run_ids.get("quality"))
    return 0


def _mlflow_server(args: argparse.Namespace) -> int:
    from raydgm.tracking.server import run_server
    return run_server(args.backend_store_uri, args.artifacts_destination, args.host, args.port,
                      args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
