"""Ray Data plumbing shared by the generation and feature stages.

- ``session()``: use the running Ray cluster, or start a local one for the duration.
- ``data_context()``: deterministic block order and the v1 Parquet reader (v2's ListFiles
  task takes a whole CPU and 5-10 s on a small machine, and can hang a small pool).
- ``actor_resources()``: CPUs/GPUs per map actor; refuses a pool that starves read/write tasks.
- ``map_parquet()``: Parquet in -> a callable class on an actor pool -> Parquet out, in order.
- ``PartNames``: deterministic ``part-<task index>`` output file names.
- ``resolve_device()`` / ``node_id()``: decided inside an actor or trial, where it runs: a
  GPU granted by Ray is used when CUDA is visible there; a logical GPU (a test cluster, a
  node without drivers) runs on the CPU, slower but with the same results.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

READ_WRITE_CPUS = 0.25       # each read and write task reserves this much


@contextlib.contextmanager
def session() -> Iterator[Any]:
    """The ``ray`` module, connected: to the running cluster, else a local one for this block."""
    import ray
    started = not ray.is_initialized()
    if started:   # a driver on a cluster is already connected
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def data_context() -> Iterator[None]:
    """Ordered execution and the v1 Parquet reader for the duration; restores the settings."""
    from ray.data import DataContext
    ctx = DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.use_datasource_v2
    ctx.execution_options.preserve_order, ctx.use_datasource_v2 = True, False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.use_datasource_v2 = saved


def part_names() -> Any:
    """A Ray ``FilenameProvider`` naming outputs ``part-<task index>-<i>.parquet``."""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}"
    return PartNames()


def actor_resources(config: Any, cluster: dict[str, float], section: str) -> tuple[float, float]:
    """(num_gpus, num_cpus) per actor; refuses a pool that would starve read/write tasks.

    ``config``: a ``config.ActorPool`` (``num_gpus_per_actor`` None: 1 GPU on a GPU cluster,
    else 0); ``section`` names it in the error.
    """
    total_cpus = float(cluster.get("CPU", 0.0))
    gpus = config.num_gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0.0) > 0 else 0.0
    pool_cpus = config.num_actors * config.num_cpus_per_actor
    if pool_cpus > total_cpus - 2 * READ_WRITE_CPUS:
        raise ValueError(
            f"{section}.num_actors x {section}.num_cpus_per_actor = {config.num_actors} x "
            f"{config.num_cpus_per_actor} reserves {pool_cpus:g} of the cluster's {total_cpus:g} "
            "CPUs; leave at least 0.5 CPU for Ray Data's read and write tasks, or the pipeline hangs")
    return float(gpus), config.num_cpus_per_actor


def map_parquet(ray: Any, source: Path, dest: Path, fn: type, pool: Any, section: str, batch_size: int,
                **fn_kwargs: Any) -> None:
    """Read the Parquet files under ``source``, map ``fn`` (a callable class, built once per
    actor) over ``batch_size``-row pyarrow batches on the actor pool ``pool`` (a
    ``config.ActorPool``; ``section`` names it in errors), and write the results to ``dest``
    as ``part-<task index>`` files, in input order: one input file, one block, one output file.

    One block per file is asked for (``override_num_blocks``): left to itself, ``read_parquet``
    merges the files into a few large blocks, so one actor could get most of the work and a
    large write would follow the last batch. Each block is written as soon as it is mapped.
    Callers choose the number of input files: enough for every actor to stay busy.

    ``fn``'s constructor gets ``fn_kwargs`` plus ``device`` (``pool_device``: resolved in the
    actor) and ``torch_threads`` (the actor's CPUs, rounded, at least 1).
    """
    from ray.data import ActorPoolStrategy, SaveMode
    gpus, cpus = actor_resources(pool, ray.cluster_resources(), section)
    files = len(list(Path(source).glob("*.parquet")))
    with data_context():
        ds = ray.data.read_parquet(str(source), num_cpus=READ_WRITE_CPUS, override_num_blocks=max(1, files))
        ds = ds.map_batches(
            fn, batch_size=batch_size, batch_format="pyarrow",
            compute=ActorPoolStrategy(size=pool.num_actors), num_cpus=cpus, num_gpus=gpus,
            fn_constructor_kwargs=fn_kwargs | {"device": pool_device(gpus),
                                               "torch_threads": max(1, int(round(cpus)))})
        ds.write_parquet(str(dest), filename_provider=part_names(), mode=SaveMode.OVERWRITE,
                         ray_remote_args={"num_cpus": READ_WRITE_CPUS})


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible in this process, else ``cpu``; others as given.

    Call it in the actor or trial, not on the driver: a cluster's head often has no GPU.
    """
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pool_device(gpus: float) -> str:
    """The device argument for actors granted ``gpus`` each (resolved by ``resolve_device``)."""
    return "auto" if gpus > 0 else "cpu"


def node_id() -> str | None:
    """This process's Ray node id (hex), or None outside Ray."""
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def assigned_gpus() -> float:
    """The GPUs Ray granted this task, actor or trial (fractional ones too); 0 outside Ray."""
    import ray
    return ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0) if ray.is_initialized() else 0.0
