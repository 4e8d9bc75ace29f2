"""Benchmark PixelCNN++ sampling on CPU: the cached sampler against the naive one, side by side.

    python bench/pixelcnnpp.py            # the paper-size model (5 resnets / 160 filters / 10
                                          # mixtures, 3x32x32, 53.6M parameters): minutes
    python bench/pixelcnnpp.py --quick    # 2 resnets / 32 filters / 5 mixtures, 3x16x16: < 1 min
    python bench/pixelcnnpp.py --smoke    # 1 resnet / 8 filters / 2 mixtures, 3x8x8, batch 4: seconds

Both samplers run on the same untrained model in eval mode (sampling cost does not depend on
the weights), at batch 1 and 16, with ``--threads`` torch threads (default 1).

- cached: ``PixelCNNpp.decode(noise, sampler="cached")``, every pixel of the image, timed end to
  end. Its mixture parameters are checked against one full network pass on the canvas it drew
  (the max abs difference is printed; the naive sampler sees exactly those parameters).
- naive: ``decode(noise, sampler="naive")`` runs one network pass per pixel over the rows up to
  the current 4-row band (``rows = min(H, 4 * (i // 4 + 1))``), so its cost per pixel depends only
  on the band. It is timed on ONE pixel position per 4-row band (H / 4 positions spread over the
  image: row 4b + b % 4, column (7 b) mod W), one network pass plus the pixel draw each, and
  extrapolated: each timed position stands for the 4 W pixels of its band. ``--naive-full``
  times the whole naive decode instead (hours at paper size).

Prints a table (seconds per batch, samples/s, the ratio), the bytes of the sampler's caches
at the configured generation batch (``configs/pixelcnnpp_cifar10.yaml``: 256), the peak RSS,
and last: ``cached vs naive (paper size, batch 16): N.Nx`` (``quick size`` with ``--quick``; the
largest of ``--batches``).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from raydgm.models.pixelcnnpp import PixelCNNpp, sample_discretized_mix_logistic
from raydgm.models.pixelcnnpp.cached import CachedSampler, sample_cached

PAPER = {"image_shape": (3, 32, 32), "nr_resnet": 5, "nr_filters": 160, "nr_logistic_mix": 10}
QUICK = {"image_shape": (3, 16, 16), "nr_resnet": 2, "nr_filters": 32, "nr_logistic_mix": 5}
SMOKE = {"image_shape": (3, 8, 8), "nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2}
TOLERANCE = 1e-4  # max abs difference accepted between cached and full-pass parameters


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller model, under a minute")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16],
                   help="batch sizes (default 1 16; the last line uses 16)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared, loaded 2-core box two threads "
                        "made both samplers up to 10x slower and erratic, as tests/conftest.py says)")
    p.add_argument("--cache-batch", type=int, default=256,
                   help="batch for the cache-size line (default 256, the config's)")
    p.add_argument("--naive-full", action="store_true",
                   help="time the whole naive decode instead of one position per band")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: a 3x8x8 model of 8 filters, batch 4 (CI; not a result)")
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.cache_batch = [4], 4
    return args


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor() or platform.machine())
    return f"{model}, torch {torch.__version__}"


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


@torch.no_grad()
def time_cached(model: PixelCNNpp, n: int) -> tuple[float, float]:
    """(seconds for one batch of n, max abs difference of its parameters to the full pass).
    Times ``sample_cached``, the whole of ``decode(sampler="cached")`` but the final rounding."""
    noise = model.draw_noise(n, torch.Generator().manual_seed(n))
    start = time.perf_counter()
    canvas, params = sample_cached(model, noise["mix"], noise["logistic"])
    seconds = time.perf_counter() - start
    return seconds, (model(canvas) - params).abs().max().item()


def naive_positions(H: int, W: int) -> list[tuple[int, int]]:
    """One pixel per 4-row band, spread over rows and columns."""
    return [(4 * b + b % 4, (7 * b) % W) for b in range(H // 4)]


@torch.no_grad()
def time_naive(model: PixelCNNpp, n: int, full: bool) -> float:
    """Seconds of the naive decode of one batch of n: measured, or extrapolated from one
    position per band (the body of ``decode``'s naive loop: a pass over the band's rows, the
    pixel draw), each counted 4 W times."""
    C, H, W = model.image_shape
    noise = model.draw_noise(n, torch.Generator().manual_seed(n))
    if full:
        start = time.perf_counter()
        model.decode(noise, sampler="naive")
        return time.perf_counter() - start
    canvas = torch.rand(n, C, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1
    total = 0.0
    for i, j in naive_positions(H, W):
        rows = min(H, (i // 4 + 1) * 4)
        start = time.perf_counter()
        params = model(canvas[:, :, :rows])[:, :, i, j]
        canvas[:, :, i, j] = sample_discretized_mix_logistic(
            params, noise["mix"][:, :, i, j], noise["logistic"][:, :, i, j])
        total += (time.perf_counter() - start) * 4 * W
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size, kw = (("smoke size", SMOKE) if args.smoke else ("quick size", QUICK) if args.quick
                else ("paper size", PAPER))
    torch.manual_seed(0)
    model = PixelCNNpp(dropout=0.5, **kw).eval()
    C, H, W = kw["image_shape"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {machine()}; torch threads {args.threads}; load average {load()}")
    print(f"model ({size}): {kw['nr_resnet']} resnets / {kw['nr_filters']} filters / "
          f"{kw['nr_logistic_mix']} mixtures, {C}x{H}x{W}, {n_params / 1e6:.1f}M parameters, untrained")
    how = ("whole decode" if args.naive_full else
           f"extrapolated from {H // 4} positions (one per 4-row band: {naive_positions(H, W)})")
    print(f"naive: {how}")
    with torch.no_grad():
        model(torch.zeros(1, C, H, W))  # warm-up
    rows, ratios, worst = [], {}, 0.0
    for n in args.batches:
        t_cached, diff = time_cached(model, n)
        t_naive = time_naive(model, n, args.naive_full)
        worst = max(worst, diff)
        ratios[n] = t_naive / t_cached
        rows.append((n, t_naive, t_cached))
        print(f"  batch {n}: naive {t_naive:,.1f} s, cached {t_cached:,.1f} s", flush=True)
    print(f"\n{'batch':>5} | {'naive s/batch':>13} | {'cached s/batch':>14} | "
          f"{'cached samples/s':>16} | ratio")
    print(f"{'-' * 5}-+-{'-' * 13}-+-{'-' * 14}-+-{'-' * 16}-+-------")
    for n, t_naive, t_cached in rows:
        print(f"{n:>5} | {t_naive:>13,.1f} | {t_cached:>14,.2f} | {n / t_cached:>16,.3f} | "
              f"{t_naive / t_cached:.1f}x")
    sampler = CachedSampler(model, torch.zeros(args.cache_batch, C, H, W))
    print(f"\ncache tensors at batch {args.cache_batch}: {sampler.cache_bytes() / 2**20:,.1f} MiB "
          f"(model weights {n_params * 4 / 2**20:,.1f} MiB); peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    print(f"load average at the end {load()} (other processes slow both sides alike only if steady)")
    print(f"cached params vs full pass: max abs difference {worst:.1e} (tolerance {TOLERANCE:g})")
    n = max(ratios)
    print(f"cached vs naive ({size}, batch {n}): {ratios[n]:.3g}x")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
