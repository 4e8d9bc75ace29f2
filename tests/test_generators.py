"""Fit loops: learning, per-epoch checkpoints, resume after a real kill, safe loading."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from raydgm.config import TrainGeneratorConfig
from raydgm.data import load_dataset
from raydgm.training import generators

TINY_VAE = {"kind": "vae", "latent_dim": 4, "hidden_channels": [8, 16, 32]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(**changes):
    return TrainGeneratorConfig.from_dict({"model": TINY_VAE, "epochs": 3, "batch_size": 32,
                                           "learning_rate": 3e-3, **changes})


def test_training_lowers_bits_per_dim_and_checkpoints_every_epoch(tmp_path, digits):
    seen = []
    model, history = generators.fit_generator(digits.split("train")[0], _cfg(), tmp_path,
                                              val_images=digits.split("val")[0],
                                              test_images=digits.split("test")[0],
                                              on_epoch=seen.append, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3] and seen == history
    assert history[-1]["train_bpd"] < history[0]["train_bpd"] - 0.2
    assert history[-1]["val_bpd"] < history[0]["val_bpd"]
    assert history[-1]["test_bpd"] < history[0]["test_bpd"]
    for row in history:  # bits/dim = nats per image / (C*H*W ln 2)
        for split in ("train", "val", "test"):
            assert row[f"{split}_bpd"] == pytest.approx(row[f"{split}_loss"] / (64 * np.log(2)))
    state = torch.load(tmp_path / generators.LAST, weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3


def test_pixelcnnpp_trains_too(tmp_path, digits):
    cfg = TrainGeneratorConfig.from_dict({
        "model": {"kind": "pixelcnnpp", "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2,
                  "dropout": 0.0}, "epochs": 2, "batch_size": 32, "max_train_images": 256})
    _, history = generators.fit_generator(digits.split("train")[0], cfg, tmp_path, progress=False)
    assert history[1]["train_bpd"] < history[0]["train_bpd"] < 9.0


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from raydgm.config import TrainGeneratorConfig
    from raydgm.data import load_dataset
    from raydgm.training import generators
    cfg = TrainGeneratorConfig.model_validate_json(sys.argv[1])
    generators.fit_generator(load_dataset("digits").split("train")[0], cfg, sys.argv[2], progress=False)
""")


def test_resume_after_kill_gives_the_same_weights(tmp_path, digits):
    """SIGKILL a training process after its second checkpoint; resuming must end bit-identical."""
    cfg = _cfg(epochs=6, model={**TINY_VAE, "likelihood": "logistic"})
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, cfg.model_dump_json(), str(killed)])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / generators.LAST
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait(30) == -signal.SIGKILL, "training finished before it could be killed"
    done = torch.load(killed / generators.LAST, weights_only=True)["epoch"]
    assert 2 <= done < 6
    images = digits.split("train")[0]
    resumed, history = generators.fit_generator(images, cfg, killed, progress=False)
    assert len(history) == 6 and [r["epoch"] for r in history] == list(range(1, 7))
    straight, _ = generators.fit_generator(images, cfg, tmp_path / "straight", progress=False)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_a_checkpoint_of_another_config_is_refused(tmp_path, digits):
    images = digits.split("train")[0][:64]
    generators.fit_generator(images, _cfg(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another training config"):
        generators.fit_generator(images, _cfg(epochs=1, learning_rate=1e-4), tmp_path, progress=False)
    (tmp_path / generators.LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot resume"):
        generators.fit_generator(images, _cfg(epochs=1), tmp_path, progress=False)


def test_saved_generator_round_trips_and_loads_weights_only(tmp_path, digits):
    cfg = _cfg(epochs=1)
    model, _ = generators.fit_generator(digits.split("train")[0][:64], cfg, tmp_path, progress=False)
    generators.save_generator(model, "vae", generators.model_kwargs(cfg), tmp_path / "model.pt")
    loaded = generators.load_generator(tmp_path / "model.pt")
    assert not loaded.training
    a = model.eval().sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, loaded.sample(5, torch.Generator().manual_seed(3)))
    with pytest.raises(FileNotFoundError, match="not found"):
        generators.load_generator(tmp_path / "missing.pt")
    torch.save({"kind": "vae"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a raydgm generator checkpoint"):
        generators.load_generator(tmp_path / "bad.pt")


def test_divergence_is_reported_not_trained_through(tmp_path, digits):
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        bad = digits.split("train")[0][:64]
        cfg = _cfg(epochs=1, learning_rate=1e30)
        generators.fit_generator(bad, cfg, tmp_path, progress=False)


def test_baseline_is_fitted_in_closed_form(tmp_path, digits):
    cfg = TrainGeneratorConfig.from_dict({"model": {"kind": "baseline", "pca_dim": 4,
                                                    "n_components": 2}})
    model, history = generators.fit_generator(digits.split("train")[0], cfg, tmp_path, progress=False)
    assert history == [] and model.components.shape == (4, 64)


def test_bad_images_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="train images: images must have dtype uint8"):
        generators.fit_generator(np.zeros((8, 1, 8, 8), np.float32), _cfg(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="channels-last"):
        generators.fit_generator(np.zeros((8, 8, 8, 1), np.uint8), _cfg(), tmp_path, progress=False)
    assert not (tmp_path / generators.LAST).exists()
