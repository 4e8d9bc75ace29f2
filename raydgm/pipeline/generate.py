"""Generation: per-sample seeds, the Ray Data callable class, and the Parquet output.

Sample i is drawn from its own ``torch.Generator`` seeded by ``sample_seed(seed, i)``: the
model draws all of that sample's noise from it (``GenerativeModel.draw_noise``), then
decodes a whole batch at once. The images therefore do not depend on the batch size, the
number of actors or the order in which batches arrive.

The Ray Data pipeline (``generate_with_ray``)::

    ids-*.parquet ──read_parquet──► map_batches(GenerateBatch, ActorPoolStrategy) ──write_parquet──► part-*.parquet

The ids go in ``id_shards`` files, one Ray Data block and one output file each. Each actor
loads the checkpoint once in ``__init__``. An image with NaN or Inf is never
written: the batch fails (``on_nonfinite="fail"``) or the row is dropped and the stage
counts it (``"drop"``). The written ids are checked afterwards: every requested id exactly
once, except the dropped ones. A killed run resumes: only the missing ids are generated.
``generation.json`` records the nodes the actors started on and the rows each generated
(``nodes``), so a cluster run shows how the actors spread.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raydgm.config import GenerateConfig
from raydgm.models import GenerativeModel, finite_rows, to_uint8
from raydgm.pipeline import raydata
from raydgm.pipeline.tables import samples_table

IDS_DIR = "ids"
ATTEMPTS_DIR = "attempts"
SAMPLES_DIR = "samples"
PLACEMENT_DIR = "placement"


class NonFiniteSamples(ValueError):
    """Generated images held NaN or Inf and ``on_nonfinite="fail"``."""


def sample_seed(seed: int, sample_id: int) -> int:
    """The 63-bit seed of sample ``sample_id`` under base ``seed`` (numpy SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed), int(sample_id)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def draw_levels(model: GenerativeModel, sample_ids: np.ndarray, seed: int,
                autocast: str = "none") -> tuple[np.ndarray, torch.Tensor]:
    """(seeds int64 (N,), float levels (N, C, H, W) on CPU, NaN where the model failed)."""
    seeds, levels, _ = draw_batch(model, sample_ids, seed, autocast)
    return seeds, levels


def draw_batch(model: GenerativeModel, sample_ids: np.ndarray, seed: int, autocast: str = "none"
               ) -> tuple[np.ndarray, torch.Tensor, dict[str, np.ndarray] | None]:
    """``draw_levels`` and the model's ``truth`` of each sample (numpy (N,) columns; None when
    the model knows none)."""
    seeds = np.array([sample_seed(seed, i) for i in np.asarray(sample_ids)], dtype=np.int64)
    parts = [model.draw_noise(1, torch.Generator().manual_seed(int(s))) for s in seeds]
    noise = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    device_type = next(itertools.chain(model.parameters(), model.buffers())).device.type
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16,
                                         enabled=autocast == "bf16"):
        levels = model.decode(noise)
        truth = model.truth(noise)
    truth = None if truth is None else {k: v.cpu().numpy() for k, v in truth.items()}
    return seeds, levels.float().cpu(), truth


class GenerateBatch:
    """Ray Data callable class: a batch of ``sample_id`` -> the samples layout.

    Loads the generator once in ``__init__``. ``crash_once_marker`` is a fault-injection
    hook for tests: the actor process exits on its second batch if that file does not exist
    yet (and creates it first), as a preempted or OOM-killed worker would. ``timing_log``
    (a file path) appends one JSON line per batch (pid, start and end wall time, rows) and one
    per actor once built (pid, wall times of the process start and of the constructor's start
    and end).
    ``placement_dir``: the actor keeps ``<pid>-<node>.json`` there, its node and row count.
    ``device``: ``auto`` uses CUDA when this process sees it (``raydata.resolve_device``).
    """

    def __init__(self, checkpoint: str, seed: int, device: str = "cpu", autocast: str = "none",
                 on_nonfinite: str = "fail", torch_threads: int | None = None,
                 crash_once_marker: str | None = None, timing_log: str | None = None,
                 placement_dir: str | None = None):
        from raydgm.training.generators import load_generator
        init_start = time.time()
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.model = load_generator(checkpoint, raydata.resolve_device(device))
        self.seed, self.autocast, self.on_nonfinite = seed, autocast, on_nonfinite
        self.crash_once_marker, self.calls, self.rows = crash_once_marker, 0, 0
        self.timing_log, self.placement_dir, self.node = timing_log, placement_dir, raydata.node_id()
        self._record_placement()
        if timing_log:
            import psutil
            with open(timing_log, "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "process_start": psutil.Process().create_time(),
                                      "init_start": init_start, "init_end": time.time()}) + "\n")

    def __call__(self, batch: pa.Table | dict[str, np.ndarray]) -> pa.Table:
        start = time.time()
        table = self._generate(batch)
        self.rows += table.num_rows
        if self.timing_log:
            with open(self.timing_log, "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "start": start, "end": time.time(),
                                      "rows": len(batch["sample_id"])}) + "\n")
        self._record_placement()
        return table

    def _record_placement(self) -> None:
        """``<pid>-<node>.json``: this actor's node and rows so far (0 once it has started)."""
        if self.placement_dir:
            record = Path(self.placement_dir) / f"{os.getpid()}-{self.node}.json"
            record.with_suffix(".tmp").write_text(json.dumps({"node": self.node, "rows": self.rows}))
            os.replace(record.with_suffix(".tmp"), record)

    def _generate(self, batch: pa.Table | dict[str, np.ndarray]) -> pa.Table:
        self.calls += 1
        if self.crash_once_marker and self.calls == 2 and not os.path.exists(self.crash_once_marker):
            Path(self.crash_once_marker).touch()
            os._exit(1)
        ids = np.asarray(batch["sample_id"], dtype=np.int64)
        seeds, levels, truth = draw_batch(self.model, ids, self.seed, self.autocast)
        ok = finite_rows(levels).numpy()
        if not ok.all() and self.on_nonfinite == "fail":
            raise NonFiniteSamples(
                f"{int((~ok).sum())} of {len(ids)} generated images in the batch starting at "
                f"sample_id {ids[0]} hold NaN or Inf (first: {ids[~ok][:5].tolist()}); "
                "set generate.on_nonfinite=drop to drop and count them instead")
        images = to_uint8(levels[torch.from_numpy(ok)]).numpy()
        truth = None if truth is None else {k: v[ok] for k, v in truth.items()}
        return samples_table(ids[ok], seeds[ok], images, truth)


BLOCKS_PER_ACTOR = 16    # input blocks per actor: the last one's imbalance is ~1/16 of the run
MIN_BATCHES_PER_BLOCK = 4


def id_shards(rows: int, config: GenerateConfig) -> int:
    """How many id files (= Ray Data blocks = output files) ``rows`` sample ids go in.

    ``BLOCKS_PER_ACTOR`` per actor, so the actors finish close together and each block's file
    is written while the others are still generating; at least ``MIN_BATCHES_PER_BLOCK``
    batches per block, so a block's fixed cost stays small; at most ``rows_per_file`` rows each.
    """
    balanced = min(BLOCKS_PER_ACTOR * config.num_actors, rows // (MIN_BATCHES_PER_BLOCK * config.batch_size))
    return max(1, balanced, math.ceil(rows / config.rows_per_file))


def write_ids(directory: Path, ids: np.ndarray, num_files: int) -> int:
    """``ids-00000.parquet``...: the sample ids to make, in ``num_files`` shards."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = np.array_split(np.asarray(ids, dtype=np.int64), max(1, min(num_files, len(ids))))
    for k, shard in enumerate(shards):
        pq.write_table(pa.table({"sample_id": pa.array(shard)}), directory / f"ids-{k:05d}.parquet")
    return len(shards)


def generate_with_ray(checkpoint: str | Path, config: GenerateConfig, out_dir: str | Path, *,
                      work_dir: str | Path | None = None, crash_once_marker: str | None = None,
                      timing_log: str | None = None) -> dict[str, Any]:
    """Run the Ray Data generation pipeline into ``out_dir/samples/``; returns counts.

    Each attempt writes ``part-<task>-<i>.parquet`` files under ``work_dir/attempts/<k>/``
    (``work_dir`` defaults to ``out_dir``). A run that was killed leaves its finished part
    files there: the next call with the same ``work_dir`` discards unreadable (torn) files and
    generates only the ids that are missing, which gives the same images as an uninterrupted
    run because sample i depends only on (seed, i). At the end every part moves to
    ``out_dir/samples/`` as ``a<k>-part-...``. Uses the running Ray cluster (or starts a local
    one for this call).
    """
    work = Path(work_dir if work_dir is not None else out_dir)
    done, attempt = salvage(work / ATTEMPTS_DIR)
    todo = np.setdiff1d(np.arange(config.num_samples), done)
    if len(todo):
        with raydata.session() as ray:
            _run_pipeline(ray, checkpoint, config, todo, work, attempt,
                          dict(crash_once_marker=crash_once_marker, timing_log=timing_log))
    return publish(work, Path(out_dir) / SAMPLES_DIR, config.num_samples)


def salvage(attempts: Path) -> tuple[np.ndarray, int]:
    """(ids already written by earlier attempts, the next attempt's number); drops torn files."""
    done = []
    dirs = sorted(p for p in attempts.glob("*") if p.is_dir()) if attempts.is_dir() else []
    for part in (f for d in dirs for f in sorted(d.glob("*.parquet"))):
        try:
            done.append(pq.read_table(part, columns=["sample_id"]).column("sample_id").to_numpy())
        except (pa.ArrowException, OSError):
            part.unlink()   # written when the run died: its rows are generated again
    return (np.concatenate(done) if done else np.zeros(0, np.int64)), len(dirs)


def publish(work: Path, samples_dir: Path, num_samples: int) -> dict[str, Any]:
    """Move every attempt's parts into ``samples_dir``, check the ids, remove the scratch."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    for attempt in sorted((work / ATTEMPTS_DIR).glob("*")):
        for part in sorted(attempt.glob("*.parquet")):
            os.replace(part, samples_dir / f"a{attempt.name}-{part.name}")
    shutil.rmtree(work / ATTEMPTS_DIR, ignore_errors=True)
    for ids_dir in work.glob(f"{IDS_DIR}-*"):
        shutil.rmtree(ids_dir, ignore_errors=True)
    return check_written(samples_dir, num_samples) | {"nodes": placement(work / PLACEMENT_DIR)}


def placement(folder: Path) -> dict[str, int]:
    """{Ray node id: rows generated there} from the actors' records: every node an actor
    started on, 0 rows if the others took all the work; retried batches count again. The
    records are removed."""
    nodes: dict[str, int] = {}
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = json.loads(record.read_text())
        nodes[str(entry["node"])] = nodes.get(str(entry["node"]), 0) + int(entry["rows"])
    shutil.rmtree(folder, ignore_errors=True)
    return nodes


def _run_pipeline(ray: Any, checkpoint: str | Path, config: GenerateConfig, todo: np.ndarray,
                  work: Path, attempt: int, hooks: dict[str, str | None]) -> None:
    shards = id_shards(len(todo), config)
    ids_dir, parts_dir = work / f"{IDS_DIR}-{attempt:03d}", work / ATTEMPTS_DIR / f"{attempt:03d}"
    write_ids(ids_dir, todo, shards)
    (work / PLACEMENT_DIR).mkdir(parents=True, exist_ok=True)
    try:
        raydata.map_parquet(ray, ids_dir, parts_dir, GenerateBatch, config, "generate", config.batch_size,
                            checkpoint=str(checkpoint),
                            seed=config.seed, autocast=config.autocast, on_nonfinite=config.on_nonfinite,
                            placement_dir=str(work / PLACEMENT_DIR), **hooks)
    except Exception as err:
        raise _unwrap(err) from err


def check_written(samples_dir: Path, num_samples: int) -> dict[str, Any]:
    """Every requested id exactly once, or missing because it was dropped as non-finite."""
    ids = pq.read_table(samples_dir, columns=["sample_id"]).column("sample_id").to_numpy()
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise RuntimeError(f"generation wrote {int((counts > 1).sum())} sample ids more than "
                           f"once (e.g. {unique[counts > 1][:5].tolist()}); not publishing")
    if len(unique) and (unique[0] < 0 or unique[-1] >= num_samples):
        raise RuntimeError(f"generation wrote sample ids outside 0..{num_samples - 1}")
    dropped = np.setdiff1d(np.arange(num_samples), unique)
    return {"samples": int(len(unique)), "dropped_nonfinite": int(len(dropped)),
            "dropped_ids": dropped.tolist()}


def _unwrap(err: Exception) -> Exception:
    """The user-facing error inside Ray's wrappers (a NonFiniteSamples keeps its message)."""
    text = str(err)
    if "NonFiniteSamples" in text or "hold NaN or Inf" in text:
        line = next((ln for ln in text.splitlines() if "hold NaN or Inf" in ln), text)
        return NonFiniteSamples(line.split("NonFiniteSamples: ")[-1].strip())
    return err
