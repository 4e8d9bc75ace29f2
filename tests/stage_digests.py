"""Two tiny pipelines (sklearn's digits: the baseline generator, and a contaminated one with a known
truth) whose every stage output is fingerprinted: the stage-version guard and the thread test read it.

``python tests/stage_digests.py HOME --threads N``: with N torch threads, recompute the
density_ratio and resample stages of the pipelines cached in HOME (every other stage is reused,
so neither Ray nor a GPU is needed) and print ``{"<stage>/<key>": sha256}`` as JSON.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from pathlib import Path

TINY = {"data": {"name": "digits"},
        "generate": {"num_samples": 300, "batch_size": 100},
        "features": {"domain": {"channels": [8], "feature_dim": 16, "epochs": 1},
                     "autoencoder": {"channels": [8], "feature_dim": 16, "epochs": 1},
                     "contrastive": {"channels": [8], "feature_dim": 16, "epochs": 1, "batch_size": 64}},
        "density_ratio": {"hidden_units": 16, "max_epochs": 4, "folds": 3},
        "resample": {"method": "systematic", "target_ess_fraction": 0.9},
        "quality": {"num_blocks": 2, "kid_subsets": 2, "kid_subset_size": 50, "eval_size": 100,
                    "noise_baseline": False, "grid_size": 4},
        "tracking": {"enabled": False}}
GENERATORS = {"baseline": {"model": {"kind": "baseline", "pca_dim": 4, "n_components": 2}},
              "contaminated": {"model": {"kind": "contaminated", "junk_fraction": 0.5}}}
WEIGHT_FEATURES = {"baseline": "autoencoder", "contaminated": "contrastive"}   # both label-free extractors pinned
RECOMPUTED = ("density_ratio", "resample")   # what the thread test computes again


def configs() -> dict:
    """Generator name -> its PipelineConfig."""
    from raydgm.config import PipelineConfig
    return {name: PipelineConfig.from_dict({**TINY, "generator": gen, "density_ratio": TINY["density_ratio"] | {
        "features": WEIGHT_FEATURES[name]}}) for name, gen in GENERATORS.items()}


def run(home: Path) -> None:
    """Run (or reuse) both pipelines in ``home``; the quality stage for the contaminated one only."""
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    for name, cfg in configs().items():
        run_pipeline(cfg, ArtifactStore(home), log=lambda _: None, quality=name == "contaminated")


def digest(folder: Path) -> str:
    """sha256 over an artifact's files (path and bytes, in path order): the manifest without
    ``created_at`` and ``code_version``, ``generation.json`` without the Ray node ids, PNG files
    left out (their bytes carry the plotting library's version; the data behind each figure
    is a .json beside it)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".png"):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if rel == "manifest.json":
            manifest = json.loads(data)
            for key in ("created_at", "code_version"):
                manifest.pop(key)
            manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.endswith(".png")}
            data = json.dumps(manifest, sort_keys=True).encode()
        elif rel == "generation.json":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "nodes"}).encode()
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def digests(home: Path, stages: tuple[str, ...] | None = None) -> dict[str, tuple[str, str]]:
    """``"<stage>/<key>"`` -> (its config class, ``digest``) of every published artifact in ``home``."""
    out = {}
    for manifest in sorted(home.glob("*/*/manifest.json")):
        folder = manifest.parent
        if stages is None or folder.parent.name in stages:
            config_class = json.loads(manifest.read_text())["config_class"]
            out[f"{folder.parent.name}/{folder.name}"] = (config_class, digest(folder))
    return out


def environment() -> dict[str, str]:
    """What the bytes may depend on besides the code: library versions and the CPU's vector unit."""
    import numpy
    import pyarrow
    import scipy
    import sklearn
    import torch
    return {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "sklearn": sklearn.__version__, "pyarrow": pyarrow.__version__}


def copy_upstream(src: Path, dst: Path) -> Path:
    """A home holding ``src``'s artifacts except the ``RECOMPUTED`` stages and what follows them."""
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if Path(d) == src and (
        n in (*RECOMPUTED, "quality") or n.endswith(".lock"))])
    return dst


def main(argv: list[str]) -> int:
    import torch
    home, threads = Path(argv[0]), int(argv[argv.index("--threads") + 1])
    torch.set_num_threads(threads)
    from raydgm.pipeline.stages import run_pipeline
    from raydgm.pipeline.store import ArtifactStore
    for cfg in configs().values():
        run_pipeline(cfg, ArtifactStore(home), log=lambda _: None, quality=False)
    assert torch.get_num_threads() == threads
    print(json.dumps({k: d for k, (_, d) in digests(home, RECOMPUTED).items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
