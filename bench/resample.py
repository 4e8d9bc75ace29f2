"""Benchmark raydgm.resample against numpy's ``Generator.choice(N, N, p=w)``.

    python bench/resample.py --n 10000000
    python bench/resample.py --n 1000000 --methods multinomial,systematic
    python bench/resample.py --smoke      # seconds: N = 20,000, one timing each (not a result)

Builds N log-weights ~ Normal(0, sd), times the baseline once, then each method in the same
process (fastest of --repeat runs), and prints seconds, draws/s and the throughput ratio
(our draws/s over choice's draws/s; the time ratio when both make N draws).

gumbel_max costs O(N) per draw, rejection ~ max(w)/mean(w) proposals per draw, and mh runs
a Python loop, so by default they make fewer draws (--slow-draws); gumbel_topk draws
without replacement (not SIR) and is timed with k = N // 10. Last line: the resample stage's
default method against the baseline, ``systematic vs rng.choice (N draws each): N.NNx the draws/s``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from raydgm import resample as R
from raydgm.config import ResampleConfig

# methods timed on fewer draws by default: (default draws, note)
SLOW = {"gumbel_max": (20, "O(N) work per draw"),
        "rejection": (1_000_000, "~1/rate proposals per draw"),
        "mh": (1_000_000, "sequential Python loop")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000, help="pool size N = draws (default 1e7)")
    p.add_argument("--methods", default=",".join(R.METHODS),
                   help=f"comma-separated subset of {','.join(R.METHODS)} (default: all)")
    p.add_argument("--slow-draws", type=int, default=None,
                   help="draws for gumbel_max (default min(N, 20)), rejection and mh "
                        "(default min(N, 1e6)); their cost is linear in the draws")
    p.add_argument("--sd", type=float, default=1.0, help="std of the log-weights (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3,
                   help="time each method this many times and report the fastest (default 3; "
                        "the baseline runs once)")
    p.add_argument("--no-baseline", action="store_true", help="skip rng.choice (slow at 1e7)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: N = 20,000, slow methods 200 draws, one timing each (CI; not a result)")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.slow_draws, args.repeat = 20_000, 200, 1
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(R.METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known: {', '.join(R.METHODS)}")
    return args


def draws_for(method: str, n: int, slow_draws: int | None) -> tuple[int, str]:
    """Number of draws to time for ``method`` and a note for the table."""
    if method == "gumbel_topk":
        return max(1, n // 10), "k = N/10 distinct, not SIR"
    if method in SLOW:
        default, note = SLOW[method]
        return min(n, slow_draws or default), note
    return n, ""


def time_baseline(log_w: np.ndarray, seed: int) -> float:
    """Seconds for np.random.default_rng(seed).choice(N, N, p=w) (normalizing included)."""
    t0 = time.perf_counter()
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    np.random.default_rng(seed).choice(log_w.size, log_w.size, p=w)
    return time.perf_counter() - t0


def time_method(log_w: np.ndarray, method: str, draws: int, seed: int, repeat: int) -> float:
    """Fastest of ``repeat`` timings of one resample call (a fresh rng each time)."""
    best = np.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        R.resample(log_w, draws, method, np.random.default_rng(seed))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    args = parse_args(argv)
    log_w = np.random.default_rng(args.seed).normal(0.0, args.sd, size=args.n)
    rate = float(np.exp(log_w - log_w.max()).mean())
    print(f"N = {args.n:,} log-weights ~ Normal(0, {args.sd:g}); "
          f"rejection acceptance rate mean(w)/max(w) = {rate:.3g}; "
          f"our methods: best of {args.repeat}")
    rows = []
    if not args.no_baseline:
        sec = time_baseline(log_w, args.seed)
        rows.append(("choice (baseline)", args.n, sec, "rng.choice(N, N, p=w)"))
    base_rate = args.n / rows[0][2] if rows else None
    for method in args.methods:
        draws, note = draws_for(method, args.n, args.slow_draws)
        sec = time_method(log_w, method, draws, args.seed, args.repeat)
        rows.append((method, draws, sec, note))
    print(f"{'method':<18} {'draws':>11} {'seconds':>9} {'draws/s':>10} {'x choice':>9}  note")
    for name, draws, sec, note in rows:
        ratio = f"{draws / sec / base_rate:9.1f}" if base_rate else f"{'-':>9}"
        print(f"{name:<18} {draws:>11,} {sec:9.3f} {draws / sec:10.3g} {ratio}  {note}")
    default = ResampleConfig().method            # the stage's method: the summary line
    mine = [(draws, sec) for name, draws, sec, _ in rows if name == default]
    if base_rate and mine:
        draws, sec = mine[0]
        print(f"{default} vs rng.choice ({args.n:,} draws each): {draws / sec / base_rate:.3g}x the draws/s")


if __name__ == "__main__":
    main()
