"""Every bench script still runs: ``python bench/<script> --smoke`` exits 0 and its last line is
its side-by-side ratio, ``<ours> vs <baseline>...: <positive number>x``. The figures are not
results (seconds of work on tiny sizes); the point is that a bench the code moved away from
fails here, not in the hands of whoever runs ``make bench`` next.

The scripts run as ``make bench`` runs them: the venv's python, a script path (so ``bench/`` is
first on ``sys.path``), the repo root as working directory, one after another (four of them
start a local Ray cluster; run together on 2 cores they took longer than in a row); BLAS and
OpenMP get one thread each, as torch does in conftest.py (on a loaded 2-core box a GMM fit ran
26.7 s with 2 OpenBLAS threads and 0.6 s with one).
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
CPU_SCRIPTS = ["resample.py", "pixelcnnpp.py", "generate.py", "features.py", "crossfit.py", "ssl_trial.py"]
RATIO = re.compile(r"^(?P<what>.+ vs .+?): (?P<ratio>[0-9.eE+-]+)x(\s|$)")
TIMEOUT_S = 300

pytestmark = pytest.mark.integration   # subprocesses, four of them with a local Ray cluster


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}   # each script starts its own Ray
    out |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return out


def run_smoke(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", "--smoke"], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def ratio_line(stdout: str) -> tuple[str, float]:
    """(what, ratio) of the last non-empty line; fails the test if it is no ratio line."""
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    match = RATIO.match(last)
    assert match, f"the last line is not '<ours> vs <baseline>: <N>x ...': {last!r}"
    return match["what"], float(match["ratio"])


@pytest.mark.parametrize("script", CPU_SCRIPTS)
def test_each_bench_script_runs_at_smoke_size_and_ends_with_its_ratio(script):
    out = run_smoke(script)
    assert out.returncode == 0, f"bench/{script} --smoke exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    what, ratio = ratio_line(out.stdout)
    assert math.isfinite(ratio) and ratio > 0, (what, ratio)


def test_the_ratio_line_check_can_fail():
    assert ratio_line("table\ncross-fitted (K=5) vs single split, domain features: 5.2x the time\n") == \
        ("cross-fitted (K=5) vs single split, domain features", 5.2)
    for last in ("    4 |           0.6 |           0.07 |           53.833 | 7.7x",   # a table row
                 "250 samples (bf16, one batch): 12.0 s"):                           # no "vs", no ratio
        with pytest.raises(AssertionError, match="is not"):
            ratio_line(last)


def test_every_bench_script_is_run_here_or_needs_a_gpu():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(CPU_SCRIPTS + ["gpu_pixelcnnpp.py"])


def test_make_bench_runs_every_cpu_script():
    """``make bench`` (and ``make bench-gpu``) name every script; none is missing or stale."""
    make = (ROOT / "Makefile").read_text()
    target = re.search(r"^bench:.*\n((?:\t.*\n)+)", make, re.M).group(1)
    named = re.findall(r"bench/(\w+\.py)", target)
    assert sorted(named) == sorted(CPU_SCRIPTS)
    assert "bench/gpu_pixelcnnpp.py" in re.search(r"^bench-gpu:.*\n((?:\t.*\n)+)", make, re.M).group(1)


def test_no_bench_script_shadows_a_standard_library_module():
    """Run as ``python bench/x.py``, bench/ is first on sys.path: a bench/ssl.py once broke every
    script beside it (``import ssl`` inside urllib3 found it)."""
    assert {p.stem for p in BENCH.glob("*.py")} & set(sys.stdlib_module_names) == set()
    assert "ssl" in sys.stdlib_module_names           # the check sees what it looks for


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the gpu test runs the bench")
def test_gpu_bench_without_cuda_exits_2_and_says_why():
    out = run_smoke("gpu_pixelcnnpp.py")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "needs a CUDA GPU" in out.stderr and "torch.cuda.is_available() is False" in out.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bench_runs_at_smoke_size_and_ends_with_its_ratio():
    out = run_smoke("gpu_pixelcnnpp.py")
    assert out.returncode == 0, out.stderr[-3000:]
    what, ratio = ratio_line(out.stdout)
    assert what.startswith("bf16 vs fp32") and math.isfinite(ratio) and ratio > 0, (what, ratio)
