"""Semi-supervised trial speed: the real Tune trial path against a plain loop, side by side.

    python bench/ssl_trial.py            # default preset's model, 3 epochs of 125 steps: ~2 min
    python bench/ssl_trial.py --epochs 8 # one whole default-preset trial (the sweep's unit)
    python bench/ssl_trial.py --smoke    # seconds: 2 epochs of 5 steps, 500 samples of a smaller
                                         # baseline (PCA 8, 2 components); not a result

The default preset's classifier (ResNet-8, width 8; batch 32 labeled + 32 unlabeled; crop
augment; mnist5k at 32x32, 100 labels; unlabeled = 5,000 samples of the PCA + GMM baseline
fitted to the train split, semantic weight 0.5) trained three ways in this one process, each
with ``--threads`` torch threads (the sweep gives a trial ``cpus_per_trial`` = 1):

- plain: the same model, optimizer and loss on batches gathered from pre-made tensors, no
  augmentation, no evaluation: what the network itself costs per step;
- train: ``raydgm.training.ssl.train`` in process (plans, augmentation, lr and weight
  schedules, per-epoch evaluation of val and test);
- trial: one Tune trial of ``raydgm.sweeps.semantic.ssl_trial`` through ``tuning.tune_grid``
  on a local ``ray.init(num_cpus=2)`` (object store, checkpoint and report per epoch).

Steps/s of train and trial are over whole epochs after the first (evaluation and, for the
trial, checkpoints included); the trial's wall time is the driver's, from ``tune_grid`` to its
return. Last line: ``trial vs plain: N.NNx the steps/s``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from raydgm.config import SSLConfig
from raydgm.data import load_dataset
from raydgm.semantic_loss import exactly_one
from raydgm.training import ssl
from raydgm.training.generators import fit_baseline

GENERATOR = "baseline"   # the trial's ``generator`` grid value: which SSLData it trains on
PRESET = {"model": {"depth": 8, "width": 8}, "batch_size": 32, "learning_rate": 3e-3, "augment": "crop",
          "labeled_size": 100, "unlabeled": "generated", "semantic_weight": 0.5, "seed": 0}


def bench_data(num_generated: int = 5000, pca_dim: int = 32, n_components: int = 10) -> ssl.SSLData:
    """mnist5k's splits + ``num_generated`` samples of the PCA + GMM baseline (fitted here, seed 0)."""
    ds = load_dataset("mnist5k")
    (xt, yt), (xv, yv), (xs, ys) = ds.split("train"), ds.split("val"), ds.split("test")
    gen = fit_baseline(xt, pca_dim=pca_dim, n_components=n_components, seed=0).sample(
        num_generated, torch.Generator().manual_seed(0))
    return ssl.SSLData(xt, yt, xv, yv, xs, ys, ds.num_classes, generated=gen.numpy())


def _steps(cfg: SSLConfig, data: ssl.SSLData) -> int:
    """Steps per epoch (None: the train split's size in labeled batches, 4000 / 32 -> 125)."""
    return cfg.steps_per_epoch or math.ceil(len(data.train_labels) / cfg.batch_size)


def plain_steps_per_s(cfg: SSLConfig, data: ssl.SSLData, steps: int) -> float:
    """Steps/s of a bare loop: forward labeled + unlabeled, CE + w S, backward, Adam step."""
    model = ssl.build_model(cfg, data.train_images.shape[1:], data.num_classes).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    xl, yl = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    xu = torch.from_numpy(data.generated)
    g = torch.Generator().manual_seed(0)
    li, ui = torch.randint(0, len(xl), (steps, cfg.batch_size), generator=g), torch.randint(0, len(xu), (steps, 32), generator=g)
    start = 0.0
    for s in range(steps + 10):                 # 10 warm-up steps
        if s == 10:
            start = time.perf_counter()
        i = s % steps
        out = model(torch.cat([xl[li[i]], xu[ui[i]]]))
        loss = F.cross_entropy(out[:cfg.batch_size], yl[li[i]]) + cfg.semantic_weight * exactly_one(out[cfg.batch_size:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def train_steps_per_s(cfg: SSLConfig, data: ssl.SSLData) -> tuple[float, float]:
    """(steps/s over the epochs after the first, whole run's seconds) of ``ssl.train`` in process."""
    stamps = [time.perf_counter()]
    ssl.train(cfg, data, on_epoch=lambda row, checkpoint: stamps.append(time.perf_counter()))
    steps = _steps(cfg, data)
    per_epoch = np.diff(stamps)
    return steps / statistics.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch), stamps[-1] - stamps[0]


def trial_steps_per_s(cfg: SSLConfig, data: ssl.SSLData, threads: int) -> tuple[float, float]:
    """(steps/s over the epochs after the first, driver's wall seconds) of one Tune trial."""
    import ray

    from raydgm.config import SSLTrial, TrialResources
    from raydgm.sweeps.semantic import ssl_trial
    from raydgm.sweeps.tuning import tune_grid
    grid = [SSLTrial(generator=GENERATOR, ssl=cfg)]   # the typed grid point the sweep hands Tune
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = tune_grid(ssl_trial, grid, Path(tmp) / "bench", False, TrialResources(max_failures=0),
                                {"cpu": 1.0, "gpu": 0.0}, print, data={GENERATOR: data}, device=None, threads=threads)
            wall = time.perf_counter() - start
            result = results[0]
            if result.error is not None:
                raise result.error
            per_epoch = result.metrics_dataframe["time_this_iter_s"].to_numpy()
    finally:
        ray.shutdown()
    steps = _steps(cfg, data)
    return steps / float(np.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch)), wall


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs of 125 steps (default 3; 8 = the preset)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, a trial's)")
    p.add_argument("--plain-steps", type=int, default=250)
    p.add_argument("--smoke", action="store_true",
                   help="seconds: 2 epochs of 5 steps, 20 plain steps, 500 generated images (CI; not a result)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    smoke = {"epochs": 2, "steps_per_epoch": 5} if args.smoke else {"epochs": args.epochs}
    if args.smoke:
        args.epochs, args.plain_steps = smoke["epochs"], 20
    cfg = SSLConfig.from_dict(PRESET | smoke)
    data = bench_data(500, 8, 2) if args.smoke else bench_data()
    plain = plain_steps_per_s(cfg, data, args.plain_steps)
    print(f"plain loop: {plain:.2f} steps/s ({args.threads} thread(s))", flush=True)
    inproc, inproc_s = train_steps_per_s(cfg, data)
    print(f"ssl.train in process: {inproc:.2f} steps/s, {args.epochs} epochs in {inproc_s:.1f} s", flush=True)
    trial, trial_s = trial_steps_per_s(cfg, data, args.threads)
    print(f"Tune trial (ssl_trial, 1 cpu): {trial:.2f} steps/s, {args.epochs} epochs in {trial_s:.1f} s "
          "(driver wall, Ray start excluded)", flush=True)
    print(f"train vs plain: {inproc / plain:.3g}x the steps/s")
    print(f"trial vs plain: {trial / plain:.3g}x the steps/s")


if __name__ == "__main__":
    main()
