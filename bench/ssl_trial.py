"""Semi-supervised trial speed: the real Tune trial path against a plain loop, side by side.

    python bench/ssl_trial.py            # default preset's model, 3 epochs of 125 steps: ~2 min
    python bench/ssl_trial.py --epochs 8 # one whole default-preset trial (the sweep's unit)
    python bench/ssl_trial.py --smoke    # seconds: 2 epochs of 5 steps, 500 samples of a smaller
                                         # baseline (PCA 8, 2 components); not a result

The default preset's classifier (ResNet-8, width 8; batch 32 labeled + 32 unlabeled; crop
augment; mnist5k at 32x32, 100 labels; unlabeled = 5,000 samples of the PCA + GMM baseline
fitted to the train split, semantic weight 0.5) trained three ways in this one process, each
with ``--threads`` torch threads (the sweep gives a trial ``cpus_per_trial`` = 1):

- plain: ssl.train's step (the same model in the same memory format, channels_last on the
  CPU; the same two forward passes, the unlabeled one with the labeled batch's BatchNorm
  statistics; the same loss and optimizer) on batches gathered from pre-made tensors, no
  augmentation, no evaluation: what the step itself costs. Beside it, for reference, one pass
  of both batches with BatchNorm over all 64 images: what the network costs without the
  labeled-statistics design;
- train: ``raydgm.training.ssl.train`` in process (plans, augmentation, lr and weight
  schedules, per-epoch evaluation of val and test);
- trial: one Tune trial of ``raydgm.sweeps.semantic.ssl_trial`` through ``tuning.tune_grid``
  on a local ``ray.init(num_cpus=2)`` (object store, checkpoint and report per epoch).

Steps/s of train and trial are over whole epochs after the first (evaluation and, for the
trial, checkpoints included); the trial's wall time is the driver's, from ``tune_grid`` to its
return. Then the epoch apart, in process (train steps, precise BatchNorm, evaluation, the
checkpoint's state and ``torch.save``) against the trial's epoch (what is left: Tune's report
and the checkpoint's hand-over), and the trial's seconds outside its epochs (its actor's
start: once per actor in a sweep, which reuses actors). Last line: ``trial vs plain: N.NNx the
steps/s``.
"""
from __future__ import annotations

import argparse
import contextlib
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
from raydgm.sweeps.tuning import CHECKPOINT
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


def plain_steps_per_s(cfg: SSLConfig, data: ssl.SSLData, steps: int, two_pass: bool = True) -> float:
    """Steps/s of a bare loop: forward labeled + unlabeled, CE + w S, backward, Adam step.

    ``two_pass``: ssl.train's forward (the labeled batch, then the unlabeled one normalized with
    the labeled batch's statistics, ``ssl_norm.labeled_statistics``); else one pass of both
    batches with BatchNorm over all of them (what the network costs without that design)."""
    model = ssl.build_model(cfg, data.train_images.shape[1:], data.num_classes).train()
    model = model.to(memory_format=ssl.memory_format(torch.device("cpu")))   # as ssl.train lays it out
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, foreach=True)
    xl, yl = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    xu = torch.from_numpy(data.generated)
    g = torch.Generator().manual_seed(0)
    li, ui = torch.randint(0, len(xl), (steps, cfg.batch_size), generator=g), torch.randint(0, len(xu), (steps, 32), generator=g)
    start = 0.0
    for s in range(steps + 10):                 # 10 warm-up steps
        if s == 10:
            start = time.perf_counter()
        i = s % steps
        if two_pass:
            out, out_u = ssl._forward(model, xl[li[i]], xu[ui[i]])       # ssl.train's own forward
        else:
            out, out_u = model(torch.cat([xl[li[i]], xu[ui[i]]])).split([cfg.batch_size, 32])
        loss = F.cross_entropy(out, yl[li[i]]) + cfg.semantic_weight * exactly_one(out_u).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


@contextlib.contextmanager
def timing(parts: dict[str, list[float]], names: dict[str, str]):
    """Time every call of the ``ssl`` module functions ``names`` (function -> part) into ``parts``."""
    saved = {fn: getattr(ssl, fn) for fn in names}

    def timed(fn, part):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts.setdefault(part, []).append(time.perf_counter() - start)
        return call
    for fn, part in names.items():
        setattr(ssl, fn, timed(saved[fn], part))
    try:
        yield
    finally:
        for fn, f in saved.items():
            setattr(ssl, fn, f)


def _later(values: list[float]) -> float:
    """The median over the epochs after the first (all of them if there is one)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def train_steps_per_s(cfg: SSLConfig, data: ssl.SSLData) -> tuple[float, float, dict[str, float]]:
    """(steps/s over the epochs after the first, whole run's seconds, {part: median seconds per
    epoch}) of ``ssl.train`` in process. After each epoch it makes the trial's checkpoint (the
    state and its ``torch.save``), timed apart and left out of the steps/s."""
    parts: dict[str, list[float]] = {}
    begin, ends = time.perf_counter(), []

    def on_epoch(row, checkpoint):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(checkpoint(), Path(tmp) / CHECKPOINT)
        ends.append((start, time.perf_counter()))
    with timing(parts, {"_train_epoch": "train steps", "recompute_batch_norm": "precise BatchNorm",
                        "_score_epoch": "val and test evaluation"}):
        ssl.train(cfg, data, on_epoch=on_epoch)
    epochs = [start - prev for (start, _), prev in zip(ends, [begin] + [end for _, end in ends])]
    parts["checkpoint (state and torch.save)"] = [end - start for start, end in ends]
    return _steps(cfg, data) / _later(epochs), ends[-1][1] - begin, {k: _later(v) for k, v in parts.items()}


def trial_steps_per_s(cfg: SSLConfig, data: ssl.SSLData, threads: int) -> tuple[float, float, float]:
    """(steps/s over the epochs after the first, driver's wall seconds, the epochs' seconds
    (Tune's ``time_this_iter_s`` summed)) of one Tune trial."""
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
    return _steps(cfg, data) / _later(list(per_epoch)), wall, float(per_epoch.sum())


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
    joint = plain_steps_per_s(cfg, data, args.plain_steps, two_pass=False)
    print(f"plain loop, one pass with BatchNorm over both batches: {joint:.2f} steps/s "
          f"({joint / plain:.2f}x the two-pass loop: the price of the labeled statistics)", flush=True)
    inproc, inproc_s, parts = train_steps_per_s(cfg, data)
    print(f"ssl.train in process: {inproc:.2f} steps/s, {args.epochs} epochs in {inproc_s:.1f} s", flush=True)
    trial, trial_s, epochs_s = trial_steps_per_s(cfg, data, args.threads)
    print(f"Tune trial (ssl_trial, 1 cpu): {trial:.2f} steps/s, {args.epochs} epochs in {trial_s:.1f} s "
          "(driver wall, Ray start excluded)", flush=True)
    steps = _steps(cfg, data)
    print("per epoch after the first, median seconds:")
    for part, seconds in parts.items():
        print(f"  {part:<36} {seconds:6.3f}")
    inside = sum(parts.values())
    print(f"  {'in process, all of the above':<36} {inside:6.3f}")
    print(f"  {'Tune trial epoch':<36} {steps / trial:6.3f}  (report and the rest: {steps / trial - inside:+.3f})")
    print(f"per trial: {trial_s - epochs_s:.1f} s outside its epochs (the trial's actor start, its data "
          "through the object store, the driver's bookkeeping)")
    print(f"train vs plain: {inproc / plain:.3g}x the steps/s")
    print(f"trial vs plain: {trial / plain:.3g}x the steps/s")


if __name__ == "__main__":
    main()
