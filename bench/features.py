"""Benchmark feature extraction (images/s) for each extractor, with baselines side by side.

    python bench/features.py                       # 5,000 mnist5k images; 64 for inception
    python bench/features.py --n-inception 16 --skip-ray
    python bench/features.py --skip-inception      # a machine without Inception weights
    python bench/features.py --smoke               # seconds: 200 images, 4 for inception (not a result)

All images are mnist5k's (uint8 1x32x32; tiled when --n exceeds 5,000), torch runs with
``--threads`` threads. In one run it measures:

1. each extractor's in-process path, ``features.extract(build_extractor(...), images)``,
   built and warmed up (two calls) before the clock starts; pixels and domain: best of
   ``--repeats``. ``domain`` needs a checkpoint: a tiny DomainCNN (1 epoch, channels
   (16, 32)) is trained first into a temporary directory (accuracy does not matter for speed).
2. ``inception`` against clean-fid's own loop (``cleanfid.fid.get_model_features``): per image
   ``build_resizer("clean")`` on HWC uint8 (gray repeated to 3 channels), then
   ``InceptionV3W.forward``: ``(x - 128) / 128`` and ``layers`` of the SAME TorchScript file,
   alternating with ours batch by batch. Prints ours / clean-fid and the max abs feature
   difference (a correctness check). Weights: ``resolve_weights(download=False)``; none: skipped.
3. ``domain`` through Ray Data (``features._extract_with_ray``, actor start-up included)
   against the in-process branch of ``features.extract_to``, both from a samples Parquet
   directory to a features Parquet directory; the features must agree.

Last lines: each side-by-side ratio, ``inception, ours vs clean-fid loop: N.NNx the images/s``
and ``domain, Ray Data vs in-process (Parquet -> Parquet): N.NNx the images/s``; then any
feature mismatch (exit status 1).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raydgm.config import DomainClassifierConfig, FeaturesConfig
from raydgm.data import load_dataset
from raydgm.pipeline import features, tables

TINY_CNN = DomainClassifierConfig(channels=(16, 32), epochs=1)
TOLERANCE = 1e-4          # max abs feature difference accepted between two routes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000,
                   help="images for pixels/domain/Ray (default 5,000)")
    p.add_argument("--n-inception", type=int, default=64,
                   help="images for inception, ~0.5 s each on CPU (default 64)")
    p.add_argument("--batch-size", type=int, default=200, help="images per batch (default 200)")
    p.add_argument("--inception-batch-size", type=int, default=16,
                   help="inception images per batch; ours and clean-fid alternate (default 16)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads in this process (default 2)")
    p.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2),
                   help="CPUs of the local Ray cluster (default: all cores)")
    p.add_argument("--actors", type=int, default=1, help="Ray Data actors (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=None,
                   help="CPUs of each Ray Data actor (default: (cpus - 0.5) / actors)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timings of the pixels/domain rows, best kept (default 3)")
    p.add_argument("--skip-inception", action="store_true", help="no inception rows")
    p.add_argument("--skip-ray", action="store_true", help="no Ray Data rows")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: 200 images, 4 for inception, one timing each, the tiny CNN trained "
                        "on 500 images (CI; not a result)")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.n_inception, args.inception_batch_size, args.repeats = 200, 4, 2, 1
    return args


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor() or platform.machine())
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def train_domain(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Fit the tiny DomainCNN of ``TINY_CNN`` (no validation split) and save it to ``path``."""
    from raydgm.training.extractors import fit_domain_classifier, save_domain_classifier
    save_domain_classifier(fit_domain_classifier(images, labels, None, None, TINY_CNN,
                                                 progress=False)[0], path)


def in_process(extractor, images: np.ndarray, batch_size: int) -> float:
    """Seconds of ``features.extract`` after two warm-up calls."""
    for _ in range(2):
        extractor(images[:2])
    return timed(features.extract, extractor, images, batch_size, progress=False)[1]


def cleanfid_features(layers, images: np.ndarray, batch_size: int) -> np.ndarray:
    """clean-fid 0.1.35's loop: ``get_model_features`` (fid.py) with ``mode="clean"``."""
    from cleanfid.fid import get_batch_features
    from cleanfid.resize import build_resizer

    def model(x):                                   # InceptionV3W.forward, resize_inside=False
        bs = x.shape[0]
        assert (x.shape[2] == 299) and (x.shape[3] == 299)
        x1 = x - 128
        x2 = x1 / 128
        return layers.forward(x2, ).view((bs, 2048))

    fn_resize = build_resizer("clean")
    img_all = np.repeat(images, 3, axis=1)          # gray -> the 3 channels a generator gives
    l_feats = []
    for lo in range(0, len(images), batch_size):
        img_batch = img_all[lo:lo + batch_size]
        l_resized_batch = []
        for curr_img in img_batch:
            img_np = curr_img.transpose((1, 2, 0))
            img_resize = fn_resize(img_np)
            l_resized_batch.append(torch.tensor(img_resize.transpose((2, 0, 1))).unsqueeze(0))
        resized_batch = torch.cat(l_resized_batch, dim=0)
        l_feats.append(get_batch_features(resized_batch, model, torch.device("cpu")))
    return np.concatenate(l_feats)


def inception_rows(images: np.ndarray, batch_size: int) -> tuple[list[tuple], float | None]:
    """(rows, max abs difference): ours vs clean-fid's loop, alternating batch by batch (and who
    goes first) so both see the same machine load. Both modules get the same history first:
    ``InceptionExtractor``'s one-image probe, then two warm-up calls (TorchScript's profiling
    executor optimizes a graph on its second call)."""
    from raydgm.pipeline.inception import InceptionExtractor, load_weights, resolve_weights
    try:
        file, kind = resolve_weights(download=False)
    except FileNotFoundError as err:
        print(f"\ninception: skipped, no weights:\n{err}")
        return [], None
    ours = InceptionExtractor(file, batch_size=batch_size)
    module, _ = load_weights(file)                  # a second, independent copy of the file
    layers = module.layers if hasattr(module, "layers") else module.net.layers
    with torch.no_grad():
        layers(torch.zeros(1, 3, 299, 299))         # = ours._probe()
    for _ in range(2):
        ours(images[:2])
        cleanfid_features(layers, images[:2], batch_size)
    runs = {"ours": lambda x: features.extract(ours, x, batch_size, progress=False)[0],
            "clean-fid": lambda x: cleanfid_features(layers, x, batch_size)}
    feats, secs = {k: [] for k in runs}, dict.fromkeys(runs, 0.0)
    for k, lo in enumerate(range(0, len(images), batch_size)):
        for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            f, t = timed(runs[name], images[lo:lo + batch_size])
            feats[name].append(f)
            secs[name] += t
    f_ours, f_ref = np.concatenate(feats["ours"]), np.concatenate(feats["clean-fid"])
    t_ours, t_ref = secs["ours"], secs["clean-fid"]
    diff = float(np.abs(f_ours - f_ref).max())
    print(f"\ninception: {file} ({kind}); {len(images)} images, batch {batch_size}, ours and "
          f"clean-fid alternating per batch: {t_ours:.1f} s vs {t_ref:.1f} s; "
          f"max |ours - clean-fid| = {diff:.2e} (mean |feature| {np.abs(f_ref).mean():.3f})")
    n = len(images)
    return [("inception", "in-process, ours", n / t_ours, f"{t_ref / t_ours:.2f}x clean-fid"),
            ("inception", "clean-fid loop", n / t_ref, "")], diff


def ray_rows(ids: np.ndarray, images: np.ndarray, kwargs: dict, args, tmp: Path
             ) -> tuple[list[tuple], float]:
    """(rows, max abs difference): Parquet -> Parquet, ``extract_to`` in process vs
    ``_extract_with_ray`` (``args.actors`` actors), the samples in files of at most 10,000 rows
    (as ``extract_to`` stages a real split; one file is one Ray Data block)."""
    import ray
    per_actor = args.cpus_per_actor or (args.cpus - 0.5) / args.actors
    cfg = FeaturesConfig(batch_size=args.batch_size, device="cpu", num_actors=args.actors,
                         num_cpus_per_actor=per_actor, ray_min_rows=len(ids) + 1)
    samples = tmp / "samples"
    features.stage_samples(samples, ids, images)
    _, t_local = timed(features.extract_to, tmp / "local", "domain", kwargs, cfg,
                       samples_dir=samples, progress=False)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ctx, log = ray.data.DataContext.get_current(), logging.getLogger("ray.data")
    saved = ctx.enable_progress_bars, log.level
    ctx.enable_progress_bars = False                # else a log line per operator per 5 s
    log.setLevel(logging.ERROR)
    try:
        _, t_ray = timed(features._extract_with_ray, samples, tmp / "ray", "domain", kwargs, cfg)
    finally:
        ctx.enable_progress_bars = saved[0]
        log.setLevel(saved[1])
        ray.shutdown()
    a = tables.read_features(tmp / "local" / features.FEATURES_DIR)
    b = tables.read_features(tmp / "ray")
    assert np.array_equal(a[0], b[0]), "Ray Data and in-process sample ids differ"
    diff = max(float(np.abs(a[1] - b[1]).max()), float(np.abs(a[2] - b[2]).max()))
    print(f"\ndomain, samples Parquet -> features Parquet, {len(ids)} images: Ray Data with "
          f"{args.actors} actor(s) x {per_actor:g} CPU (torch threads {max(1, round(per_actor))}) on a "
          f"{args.cpus:g}-CPU local cluster, actor start-up included: {t_ray:.1f} s vs "
          f"{t_local:.1f} s in process; max |in-process - Ray| over features and logits = "
          f"{diff:.2e}")
    n = len(ids)
    return [("domain", "in-process, Parquet->Parquet", n / t_local, ""),
            ("domain", "Ray Data, Parquet->Parquet", n / t_ray,
             f"{t_local / t_ray:.2f}x in-process")], diff


def print_table(rows: list[tuple]) -> None:
    print(f"\n{'extractor':<10} | {'path':<30} | {'images/s':>11} | ratio")
    print(f"{'-' * 10}-+-{'-' * 30}-+-{'-' * 11}-+-{'-' * 20}")
    for name, path, rate, ratio in rows:
        print(f"{name:<10} | {path:<30} | {rate:11,.1f} | {ratio}")


def print_ratios(rows: list[tuple]) -> None:
    """One line per side-by-side pair of rows: ours vs its baseline, in images/s."""
    rate = {(name, path): r for name, path, r, _ in rows}
    pairs = {"inception": (("inception", "in-process, ours"), ("inception", "clean-fid loop"),
                           "inception, ours vs clean-fid loop"),
             "domain": (("domain", "Ray Data, Parquet->Parquet"), ("domain", "in-process, Parquet->Parquet"),
                        "domain, Ray Data vs in-process (Parquet -> Parquet)")}
    for ours, base, what in pairs.values():
        if ours in rate and base in rate:
            print(f"{what}: {rate[ours] / rate[base]:.3g}x the images/s")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    ids = np.arange(args.n, dtype=np.int64)                 # unique ids, images tiled
    images = data.images[ids % len(data)]
    print(f"machine: {machine()}; torch threads {args.threads}")
    print(f"images: mnist5k uint8 {images.shape[1:]}, n={args.n}, batch {args.batch_size}")
    rows, checks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "domain.pt"
        train = tuple(a[:500] for a in data.split("train")) if args.smoke else data.split("train")
        _, seconds = timed(train_domain, *train, ckpt)
        print(f"domain: trained a tiny DomainCNN (1 epoch, channels (16, 32), "
              f"{len(train[0])} images) into a temp dir in {seconds:.1f} s")
        kwargs = {"domain_checkpoint": str(ckpt), "batch_size": args.batch_size}
        for name in ("pixels", "domain"):
            extractor = features.build_extractor(name, **(kwargs if name == "domain" else {}))
            t = min(in_process(extractor, images, args.batch_size) for _ in range(args.repeats))
            rows.append((name, f"in-process (best of {args.repeats})", args.n / t, ""))
        if not args.skip_inception:
            new, checks["inception, ours vs clean-fid"] = inception_rows(
                images[:args.n_inception], args.inception_batch_size)
            rows += new
        if not args.skip_ray:
            new, checks["domain, Ray Data vs in-process"] = ray_rows(ids, images, kwargs, args, tmp)
            rows += new
    print_table(rows)
    print_ratios(rows)
    bad = {what: d for what, d in checks.items() if d is not None and not d <= TOLERANCE}
    for what, d in bad.items():
        print(f"FEATURE MISMATCH {what}: max abs difference {d:.2e} > {TOLERANCE:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
