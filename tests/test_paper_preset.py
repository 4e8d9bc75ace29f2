"""The paper preset on a CIFAR-10-shaped directory: every check passes before the first compute
step, in every mode, and "all 45,000 labels" is drawable once the splits are stratified."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from raydgm.config import SweepConfig
from raydgm.sweeps import cli, semantic


class FirstCompute(Exception):
    """Raised where the sweep would start Ray: every check before it has passed."""


def _cifar(root: Path) -> Path:
    """root/cifar-10-batches-py with 5 train batches of 10,000 (5,000 per class) and a test
    batch of 10,000, in the official pickle layout; the pixels are zeros (never read here)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": [j % 10 for j in range(10_000)], b"data": np.zeros((10_000, 3072), np.uint8)}
        (d / name).write_bytes(pickle.dumps(batch, protocol=4))
    return d


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return _cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture
def no_compute(monkeypatch):
    from raydgm.pipeline import raydata

    def first_compute(*args, **kwargs):
        raise FirstCompute
    monkeypatch.setattr(raydata, "session", first_compute)


def _main(*argv: str) -> int:
    return cli.main(list(argv), SweepConfig, semantic.run_semantic_sweep, "semantic_weight.py", "", "",
                    smoke="smoke", default="default", presets=("study", "paper"))


@pytest.mark.parametrize("mode", [(), ("--pipeline-only",)], ids=["sweep", "pipeline-only"])
def test_paper_preset_passes_every_check_up_to_the_first_compute_step(cifar, tmp_path, no_compute, mode):
    with pytest.raises(FirstCompute):
        _main("--preset", "paper", "--home", str(tmp_path / "home"), "--set", f"pipeline.data.path={cifar}", *mode)


@pytest.mark.parametrize("mode", [(), ("--pipeline-only",)], ids=["sweep", "pipeline-only"])
def test_unstratified_splits_cannot_give_all_45000_labels_and_fail_before_compute(cifar, tmp_path, no_compute,
                                                                                 capsys, mode):
    """A random 5,000-image val split leaves some class below 4,500 train images."""
    code = _main("--preset", "paper", "--home", str(tmp_path / "home"), "--set", f"pipeline.data.path={cifar}",
                 "--set", "pipeline.data.stratify=false", *mode)
    assert code == 2
    assert "labeled_sizes: 45000 cannot be drawn from the cifar10 train split (45000 images" in capsys.readouterr().err


def test_paper_preset_has_two_generators_and_a_class_balanced_45000(cifar):
    cfg = cli.load_sweep(SweepConfig, "paper", overrides=(f"pipeline.data.path={cifar}",))
    assert list(cfg.pipelines()) == ["pixelcnnpp", "vae"]
    assert cfg.pipelines()["vae"].generator.model.latent_dim == 180          # the thesis's VAE
    from raydgm.pipeline.stages import load_data
    labels = load_data(cfg.pipeline.data).split("train")[1]
    assert np.bincount(labels).tolist() == [4_500] * 10
    assert 45_000 in cfg.labeled_sizes
    semantic.check_grid(cfg, load_data(cfg.pipeline.data))                 # no error
