"""Benchmark VAE generation through Ray Data against a plain in-process loop, side by side.

    python bench/generate.py                      # 20,000 samples, mnist5k-sized VAE (1x32x32)
    python bench/generate.py --n 5000 --actors 1 --cpus-per-actor 1.5
    python bench/generate.py --smoke              # seconds: 500 samples, 1 actor (not a result)

Both sides run the same per-sample-seeded code (``raydgm.pipeline.generate.draw_levels``) on the same
untrained VAE (generation cost does not depend on the weights) and end with the samples in
Parquet. The plain loop runs in this process with ``--threads`` torch threads; the Ray Data
pipeline (read ids -> actor pool -> write_parquet) runs on a local Ray cluster limited to
``--cpus`` CPUs, started before the clock starts (as on a cluster, where Ray is already up);
actor start-up is timed. Prints both throughputs and, last, the ratio:
``Ray Data vs plain loop, end to end: N.NNx the samples/s (steady state N.NNx; target >= 0.8x)``.

Ray Data pays a fixed start-up (fresh actor processes that import torch and load the
checkpoint), so the bench also prints its steady-state throughput: rows over the window from
the first batch an actor starts to the last one it finishes (from the actors' timing log).

It also prints PixelCNN++ seconds per image for a tiny config (autoregressive sampling: one
network pass per pixel), before the VAE's lines.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from raydgm.config import GenerateConfig
from raydgm.models import build, to_uint8
from raydgm.pipeline.generate import draw_levels, generate_with_ray
from raydgm.pipeline.tables import samples_table
from raydgm.training import generators

VAE_KWARGS = {"latent_dim": 32, "hidden_channels": [32, 64, 128], "likelihood": "logistic"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="samples to generate (default 20,000)")
    p.add_argument("--batch-size", type=int, default=250, help="samples per batch (default 250)")
    p.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2),
                   help="CPU budget for both sides (default: all cores)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the plain loop (default: --cpus)")
    p.add_argument("--actors", type=int, default=2, help="Ray Data actors (default 2)")
    p.add_argument("--cpus-per-actor", type=float, default=None,
                   help="CPUs reserved per actor (default: (cpus - 0.5) / actors, leaving "
                        "half a CPU to Ray Data's read and write tasks)")
    p.add_argument("--pixelcnn-images", type=int, default=4,
                   help="images for the PixelCNN++ timing (default 4; 0 skips it)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: 500 samples in batches of 125, 1 actor, no PixelCNN++ (CI; not a result)")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.batch_size, args.actors, args.pixelcnn_images = 500, 125, 1, 0
    return args


def plain_loop(ckpt: Path, n: int, batch_size: int, threads: int, out: Path) -> float:
    """Seconds to draw n samples in-process and write them to one Parquet file."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = generators.load_generator(ckpt)
    tables = []
    for lo in range(0, n, batch_size):
        ids = np.arange(lo, min(n, lo + batch_size))
        seeds, levels = draw_levels(model, ids, seed=0)
        tables.append(samples_table(ids, seeds, to_uint8(levels).numpy()))
    import pyarrow as pa
    pq.write_table(pa.concat_tables(tables), out)
    return time.perf_counter() - start


def ray_data(ckpt: Path, n: int, batch_size: int, actors: int, cpus_per_actor: float,
             out: Path) -> tuple[float, dict[str, float], float]:
    """(seconds end to end, {start-up milestone: seconds after the call}, seconds of the batch window)."""
    cfg = GenerateConfig(num_samples=n, batch_size=batch_size, num_actors=actors,
                         num_cpus_per_actor=cpus_per_actor)
    log = out.parent / "timing.jsonl"
    start_wall, start = time.time(), time.perf_counter()
    stats = generate_with_ray(ckpt, cfg, out, timing_log=str(log))
    total = time.perf_counter() - start
    assert stats["samples"] == n, stats
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    batches, actors_up = [r for r in lines if "rows" in r], [r for r in lines if "init_end" in r]
    first, last = min(r["start"] for r in batches), max(r["end"] for r in batches)
    startup = {"first actor process": min(r["process_start"] for r in actors_up),
               "first constructor": min(r["init_start"] for r in actors_up),
               "first actor ready": min(r["init_end"] for r in actors_up),
               "first batch": first}
    return total, {k: v - start_wall for k, v in startup.items()}, last - first


def pixelcnn_seconds_per_image(num: int, shape=(1, 32, 32)) -> float:
    torch.manual_seed(0)
    model = build("pixelcnnpp", shape, nr_resnet=1, nr_filters=16, nr_logistic_mix=5, dropout=0.0)
    start = time.perf_counter()
    model.sample(num, torch.Generator().manual_seed(0))
    return (time.perf_counter() - start) / num


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = args.threads or max(1, int(args.cpus))
    per_actor = args.cpus_per_actor or (args.cpus - 0.5) / args.actors
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        ckpt = tmp / "model.pt"
        generators.save_generator(build("vae", (1, 32, 32), **VAE_KWARGS), "vae", VAE_KWARGS, ckpt)
        plain = plain_loop(ckpt, args.n, args.batch_size, threads, tmp / "plain.parquet")
        import ray
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        try:
            ray_s = ray_data(ckpt, args.n, args.batch_size, args.actors, per_actor, tmp / "ray")
        finally:
            ray.shutdown()
    if args.pixelcnn_images:
        spi = pixelcnn_seconds_per_image(args.pixelcnn_images)
        print(f"\nPixelCNN++ tiny (nr_resnet=1, nr_filters=16, nr_logistic_mix=5), 1x32x32, CPU: "
              f"{spi:.2f} s per image ({args.pixelcnn_images} images in one batch)")
    n = args.n
    total, startup, window = ray_s
    print(f"\nVAE generation, {n} samples of 1x32x32, batch {args.batch_size}, "
          f"{args.cpus:g} CPUs ({os.cpu_count()} cores here):")
    print(f"  plain in-process loop ({threads} torch threads): {plain:6.2f} s  "
          f"{n / plain:6.0f} samples/s")
    print(f"  Ray Data ({args.actors} actors x {per_actor:g} CPU), end to end: {total:6.2f} s  "
          f"{n / total:6.0f} samples/s")
    print("    start-up, seconds after the call: " + ", ".join(f"{k} {v:.1f}" for k, v in startup.items()))
    print(f"  Ray Data, steady state (first batch start to last batch end): {window:6.2f} s  "
          f"{n / window:6.0f} samples/s")
    print(f"Ray Data vs plain loop, end to end: {plain / total:.3g}x the samples/s "
          f"(steady state {plain / window:.3g}x; target >= 0.8x)")


if __name__ == "__main__":
    main()
