"""The cached sampler (raydgm.models.pixelcnnpp.cached) against the naive one-pass-per-pixel
sampler and the full network pass, position by position."""
import numpy as np
import pytest
import torch

from raydgm.models.pixelcnnpp import PixelCNNpp, sample_discretized_mix_logistic
from raydgm.models.pixelcnnpp.cached import CachedSampler, sample_cached
from raydgm.pipeline.generate import draw_levels

CONFIGS = [(C, shape, nr) for C in (1, 3) for shape in ((8, 8), (16, 12)) for nr in (1, 2)]
ATOL = 1e-4  # float32: cached and full-pass parameters differ by summation order only


def tiny(C, shape, nr_resnet, seed=0):
    torch.manual_seed(seed)
    return PixelCNNpp((C, *shape), nr_resnet=nr_resnet, nr_filters=8, nr_logistic_mix=3,
                      dropout=0.5).eval()


def cached_params_on(model, canvas):
    """Run the cached sampler over a fixed canvas (no sampling) -> params (n, K_out, H, W)."""
    n, _, H, W = canvas.shape
    sampler = CachedSampler(model, canvas)
    out = torch.zeros(n, model.out.out_channels, H, W)
    with torch.no_grad():
        for i in range(H):
            sampler.row(i)
            for j in range(W):
                out[:, :, i, j] = sampler.pixel(i, j)
    return out


@pytest.mark.parametrize("C, shape, nr", CONFIGS)
def test_cached_params_equal_the_full_pass_at_every_position(C, shape, nr):
    """On an arbitrary canvas (off-grid values too) and on the canvas the sampler draws."""
    model = tiny(C, shape, nr)
    canvas = torch.rand(3, C, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        full = model(canvas)
    assert (full.abs() > 0.01).float().mean() > 0.5  # a real signal, not a constant
    torch.testing.assert_close(cached_params_on(model, canvas), full, atol=ATOL, rtol=0)

    noise = model.draw_noise(3, torch.Generator().manual_seed(2))
    drawn, params = sample_cached(model, noise["mix"], noise["logistic"])
    with torch.no_grad():
        full = model(drawn)
    diff = (params - full).abs().max().item()
    assert diff < ATOL, diff
    # teacher forcing: each pixel redrawn from the full pass's parameters with its own noise
    # is the pixel the cached sampler drew, so the naive sampler (whose pass at (i, j) sees the
    # same earlier pixels) draws the same image
    H, W = shape
    for i in range(H):
        for j in range(W):
            again = sample_discretized_mix_logistic(full[:, :, i, j], noise["mix"][:, :, i, j],
                                                    noise["logistic"][:, :, i, j])
            assert torch.equal(again, drawn[:, :, i, j]), (i, j)


@pytest.mark.parametrize("C, shape, nr, seeds", [(1, (8, 8), 1, (0, 1)), (3, (8, 8), 2, (0, 1)),
                                                (3, (16, 12), 1, (0,))])
def test_cached_and_naive_decode_give_identical_levels(C, shape, nr, seeds):
    """The naive sampler runs one network pass per pixel: kept to the smaller cases (the
    teacher-forcing check above covers every config)."""
    model = tiny(C, shape, nr, seed=C + nr)
    for seed in seeds:
        noise = model.draw_noise(2, torch.Generator().manual_seed(seed))
        cached = model.decode(noise)
        assert torch.equal(cached, model.decode(noise, sampler="naive")), seed
        assert cached.min() >= 0 and cached.max() <= 255 and len(cached.unique()) > 10
    assert not torch.equal(cached, model.decode(model.draw_noise(2, torch.Generator().manual_seed(9))))


def test_a_sample_does_not_depend_on_its_batch():
    """The generation stage's per-sample seeds: a batch of 5 equals batches of 2 + 3."""
    model = tiny(3, (8, 8), 2)
    ids = np.arange(5)
    seeds, five = draw_levels(model, ids, seed=3)
    _, two = draw_levels(model, ids[:2], seed=3)
    _, three = draw_levels(model, ids[2:], seed=3)
    assert torch.equal(five, torch.cat([two, three]))
    assert len(set(seeds.tolist())) == 5 and not torch.equal(five[0], five[1])


def test_bf16_autocast_runs_and_stays_close_to_fp32_parameters():
    model = tiny(3, (8, 8), 1)
    _, levels = draw_levels(model, np.arange(2), seed=0, autocast="bf16")
    assert levels.shape == (2, 3, 8, 8) and torch.isfinite(levels).all()
    noise = model.draw_noise(2, torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        canvas, params = sample_cached(model, noise["mix"], noise["logistic"])
    assert params.dtype == torch.float32
    with torch.no_grad():
        full = model(canvas)
    assert (params - full).abs().max() < 0.1  # bf16 keeps ~3 significant digits


def test_nan_output_gives_nan_levels_and_bad_arguments_raise():
    model = tiny(1, (8, 8), 1)
    with torch.no_grad():
        model.out.bias[0] = float("nan")
    levels = model.decode(model.draw_noise(2, torch.Generator().manual_seed(0)))
    assert levels.shape == (2, 1, 8, 8) and torch.isnan(levels).all()
    noise = model.draw_noise(1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="sampler"):
        model.decode(noise, sampler="fast")
    with pytest.raises(ValueError, match="eval mode"):
        sample_cached(model.train(), noise["mix"], noise["logistic"])


def test_cache_bytes_count_every_window():
    """Level-0 ul_init_above window: (n, C+1, 1, W+2) floats; the total grows linearly in n."""
    model = tiny(3, (8, 8), 1)
    one, four = (CachedSampler(model, torch.zeros(n, 3, 8, 8)) for n in (1, 4))
    assert one.ul_init_above.nbytes() == 1 * 4 * 1 * (8 + 2) * 4
    assert four.cache_bytes() == 4 * one.cache_bytes() > 0
