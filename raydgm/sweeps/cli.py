"""The command line every sweep script shares: ``--preset``, ``--smoke-test``, ``--config``,
``--set``, ``--resume``, ``--home``, ``--show-config``, ``--pipeline-only``; exit codes 0 (done), 2
(a bad config or input, found before any compute) and 3 (some trials unfinished: rerun with
``--resume``). Nothing here imports Ray or torch: ``--help`` and ``--show-config`` stay fast;
``run`` (the sweep) is called only after the config is loaded and checked."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from raydgm import tracking
from raydgm.config import Config, ConfigError, read_mapping
from raydgm.sweeps import SweepIncomplete

PRESETS = Path(__file__).parent / "presets"
# every sweep script's --help ends with this
EPILOG = """\
MLflow: tracking URI from pipeline.tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else
sqlite:///$RAYDGM_HOME/mlflow.db; an unreachable server fails before any compute.
exit codes: 0 done, 2 bad config or input, 3 some trials unfinished (use --resume)."""


def load_sweep(cls: type[Config], preset: str, path: str | None = None, overrides: tuple[str, ...] = ()) -> Any:
    """A sweep config: the preset file ``raydgm/sweeps/presets/<preset>.yaml``, then ``path``'s keys,
    then ``key=value`` overrides."""
    file = PRESETS / f"{preset}.yaml"
    if not file.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known)}")
    return cls.load(path, overrides, base=read_mapping(file))


def parse_args(argv: list[str] | None, prog: str, description: str, epilog: str,
               presets: tuple[str, ...]) -> Any:
    """The arguments every sweep script takes."""
    import argparse
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=f"{epilog}\n{EPILOG}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, choices=presets,
                        help=f"a named config in raydgm/sweeps/presets/ (default: {presets[0]})")
    parser.add_argument("--smoke-test", action="store_true",
                        help="the sweep in miniature (tiny data, models and grid; minutes on a laptop)")
    parser.add_argument("--config", default=None, help="a YAML/JSON file whose keys override the preset's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key (dotted for nested: --set ssl.epochs=20, "
                             "--set seeds=[0,1,2]); unknown keys are errors")
    parser.add_argument("--resume", action="store_true",
                        help="continue the newest interrupted sweep of the same config: finished "
                             "trials are kept, no MLflow run is duplicated")
    parser.add_argument("--home", default=None,
                        help="artifact cache and default MLflow store (default: $RAYDGM_HOME or ./artifacts)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--pipeline-only", action="store_true",
                        help="run (or reuse) only the pipeline's stages, cached in the home; no "
                             "MLflow, no trials. On a cluster whose head has no GPU: submit this "
                             "with --entrypoint-num-gpus 1, then the sweep itself on the head")
    return parser.parse_args(argv)


def main(argv: list[str] | None, cls: type[Config], run: Callable[..., Any], prog: str,
         description: str, epilog: str, smoke: str, default: str, presets: tuple[str, ...] = ()) -> int:
    """Parse, load and check the config, run the sweep, print what it made; an exit code.
    ``run(cfg, resume, pipeline_only=False)``: the sweep (with ``pipeline_only``: its checks and
    its pipelines only); ``presets``: the preset names this sweep accepts (``default`` first,
    ``smoke`` among them)."""
    import sys

    import yaml
    args = parse_args(argv, prog, description, epilog, tuple(dict.fromkeys((default, smoke, *presets))))
    if args.home:
        os.environ["RAYDGM_HOME"] = str(Path(args.home).resolve())
    try:
        cfg = load_sweep(cls, args.preset or (smoke if args.smoke_test else default), args.config,
                         tuple(args.overrides))
        if args.show_config:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        if args.pipeline_only:
            from raydgm.pipeline.store import default_root
            run(cfg, resume=False, pipeline_only=True)      # the sweep's checks, then its pipelines
            print(f"pipeline ready in {default_root().resolve()}; the sweep with the same config "
                  "reuses every stage")
            return 0
        result = run(cfg, resume=args.resume)
    except (ConfigError, FileNotFoundError, ValueError, tracking.TrackingError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except SweepIncomplete as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 3
    print(f"\n{result.table}\n\nsummary, plot and per-trial results: {result.folder / 'summary'}")
    if result.tracking_uri is not None:
        print(f"MLflow: parent run {result.parent_run_id} (experiment {cfg.name!r}) in {result.tracking_uri}")
        print(f"  open the UI: {tracking.ui_command(result.tracking_uri, result.experiment_id)}")
    return 0
