"""Opt-in CUDA checks (``make test-gpu`` on a machine with a GPU; never part of ``make test``)."""
import numpy as np
import pytest
import torch

from raydgm.config import GenerateConfig
from raydgm.models import build
from raydgm.pipeline import tables
from raydgm.pipeline.generate import draw_levels, generate_with_ray
from raydgm.training import generators

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

VAE = {"latent_dim": 32, "hidden_channels": [32, 64, 128], "likelihood": "logistic"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpu") / "model.pt"
    generators.save_generator(build("vae", (1, 32, 32), **VAE), "vae", VAE, path)
    return path


def test_cuda_generation_matches_cpu_up_to_rounding(ckpt):
    ids = np.arange(256)
    _, cpu = draw_levels(generators.load_generator(ckpt, "cpu"), ids, seed=0)
    _, gpu = draw_levels(generators.load_generator(ckpt, "cuda"), ids, seed=0)
    # the same noise on both devices; kernels differ, so a level may flip at a rounding edge
    assert torch.isfinite(gpu).all()
    assert (cpu != gpu).float().mean().item() < 1e-3


def test_bf16_autocast_gives_valid_images(ckpt):
    _, levels = draw_levels(generators.load_generator(ckpt, "cuda"), np.arange(64), seed=0,
                            autocast="bf16")
    assert torch.isfinite(levels).all() and levels.min() >= 0 and levels.max() <= 255


def test_ray_data_uses_gpu_actors(tmp_path, ckpt):
    import ray
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        stats = generate_with_ray(ckpt, GenerateConfig(num_samples=2000, batch_size=256,
                                                       num_cpus_per_actor=0.25), tmp_path)
    finally:
        ray.shutdown()
    ids, _, images = tables.read_samples(tmp_path / "samples")
    assert stats["samples"] == 2000 and images.shape == (2000, 1, 32, 32)
    np.testing.assert_array_equal(ids, np.arange(2000))
