"""PixelCNN++ cached sampling on one CUDA GPU: samples/s of the trained mnist5k preset
(configs/pixelcnnpp_mnist.yaml) and of the paper-size model, fp32 and bf16.

    python bench/gpu_pixelcnnpp.py                  # batches 64, 256, 1,024; make bench-gpu
    python bench/gpu_pixelcnnpp.py --batches 64 --skip-250
    python bench/gpu_pixelcnnpp.py --smoke          # seconds: batch 16 only, no 250 line (not a result)

The paper-size model (5 resnets / 160 filters / 10 mixtures, 3x32x32, 53.6M parameters,
untrained: sampling cost does not depend on the weights) in eval mode on ``cuda:0``. For each
batch size and precision it times one whole ``decode(noise, sampler="cached")`` (all 1,024
pixels; one warm-up decode of 8 samples per precision first), with ``torch.cuda.synchronize``
around the clock; bf16 is ``torch.autocast(dtype=torch.bfloat16)``, as the generation stage's
``autocast: bf16`` runs it. Then the time for 250 samples (one batch of 250, fp32 and bf16)
against the thesis's 57 minutes for 250 samples on a P100. It also prints the max abs difference
of the fp32 cached parameters to one full network pass (TF32 convolutions are turned off for
that check) and the peak GPU memory of each run. Last line, with both precisions: ``bf16 vs fp32,
cached sampling (batch 1024): N.NNx the samples/s`` (the largest batch).

Exits with status 2 and a message naming the problem when CUDA is not available.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

from raydgm.models.pixelcnnpp import PixelCNNpp
from raydgm.models.pixelcnnpp.cached import CachedSampler, sample_cached

PAPER = {"image_shape": (3, 32, 32), "nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10}
MNIST_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pixelcnnpp_mnist.yaml"


def mnist_preset() -> dict:
    """The trained mnist5k preset's sizes (configs/pixelcnnpp_mnist.yaml), 1x32x32."""
    model = yaml.safe_load(MNIST_CONFIG.read_text())["generator"]["model"]
    return {"image_shape": (1, 32, 32), **{k: model[k] for k in ("nr_resnet", "nr_filters", "nr_logistic_mix")}}
THESIS_250_S = 57 * 60  # 250 samples in 57 min on a P100 (the thesis, naive sampling)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024],
                   help="batch sizes (default 64 256 1024)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--skip-250", action="store_true", help="skip the 250-sample line")
    p.add_argument("--smoke", action="store_true", help="seconds: batch 16, no 250 line (CI; not a result)")
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.skip_250 = [16], True
    return args


def run(model: PixelCNNpp, n: int, dtype: str) -> tuple[float, float]:
    """(seconds, peak GiB of GPU memory) of the cached sampler on n samples."""
    noise = model.draw_noise(n, torch.Generator().manual_seed(n))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        levels = model.decode(noise)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if not torch.isfinite(levels).all():
        raise RuntimeError(f"non-finite samples at batch {n}, {dtype}")
    return seconds, torch.cuda.max_memory_allocated() / 2**30


def check(model: PixelCNNpp) -> float:
    """Max abs difference of cached fp32 parameters to the full pass, 4 samples, no TF32."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        noise = {k: v.cuda() for k, v in model.draw_noise(4, torch.Generator().manual_seed(0)).items()}
        with torch.no_grad():
            canvas, params = sample_cached(model, noise["mix"], noise["logistic"])
            return (model(canvas) - params).abs().max().item()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def table(model: PixelCNNpp, args: argparse.Namespace) -> dict[tuple[int, str], float]:
    """Prints the fp32 check, then s/batch, samples/s and memory per batch size and dtype."""
    print(f"cached fp32 params vs full pass (no TF32): max abs difference {check(model):.1e}")
    print(f"{'batch':>5} | {'dtype':>5} | {'s/batch':>8} | {'samples/s':>10} | {'peak GiB':>8} | cache GiB")
    for dtype in args.dtypes:
        run(model, 8, dtype)  # warm-up: kernels, allocator
    rate = {}
    for n in args.batches:
        cache = CachedSampler(model, torch.zeros(n, *model.image_shape, device="cuda")).cache_bytes() / 2**30
        for dtype in args.dtypes:
            seconds, peak = run(model, n, dtype)
            rate[n, dtype] = n / seconds
            print(f"{n:>5} | {dtype:>5} | {seconds:>8.2f} | {n / seconds:>10.1f} | {peak:>8.2f} | "
                  f"{cache:.2f}", flush=True)
    return rate


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench-gpu needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it where "
              "nvidia-smi sees a GPU.", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    mnist = PixelCNNpp(dropout=0.0, **mnist_preset()).cuda().eval()
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"\nmodel: the mnist5k preset (configs/pixelcnnpp_mnist.yaml), "
          f"{sum(p.numel() for p in mnist.parameters()) / 1e6:.2f}M parameters, untrained")
    table(mnist, args)
    model = PixelCNNpp(dropout=0.5, **PAPER).cuda().eval()
    print(f"\nmodel: paper size, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, untrained")
    rate = table(model, args)
    if not args.skip_250:
        for dtype in args.dtypes:
            seconds, _ = run(model, 250, dtype)
            print(f"250 samples ({dtype}, one batch): {seconds:.1f} s vs the thesis's 57 min on a "
                  f"P100: {THESIS_250_S / seconds:,.0f}x")
    n = max(args.batches)
    if {"fp32", "bf16"} <= set(args.dtypes):
        print(f"bf16 vs fp32, cached sampling (batch {n}): {rate[n, 'bf16'] / rate[n, 'fp32']:.3g}x the samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
