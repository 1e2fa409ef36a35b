"""Shard building fanned out per shard: Prefect task runs on a thread pool or a Dask cluster.

The units of work come from :mod:`segcore.data.shards`: ``plan_build`` (once, in the flow process),
``write_shard`` (one task run per shard, in any process and any order) and ``publish`` (once).
Every shard's bytes depend only on the plan, so the published dataset is byte-identical to a
serial ``build_shards(cfg)`` whichever runner wrote it. :func:`task_runner_for` picks the runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from segcore.config import Config
from segcore.data.shard_index import reuse_shard
from segcore.data.shard_plan import BuildPlan, dataset_dirs
from segcore.data.shards import ShardResult, building, plan_build, prepare_staging, publish, write_shard
from segcore.errors import RasterError, ShardError
from tasks.retry import retry_on_io

RUNNERS = ("thread", "dask")


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """``LocalCluster`` arguments: ``workers`` single-threaded processes, everything on 127.0.0.1.

    The scheduler and worker dashboards bind ``0.0.0.0`` unless told otherwise (they only start when
    bokeh is installed); ``host`` keeps the scheduler and worker sockets on loopback too.
    """
    return {
        "n_workers": workers, "processes": True, "threads_per_worker": 1, "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0", "worker_dashboard_address": "127.0.0.1:0",
    }  # fmt: skip


def task_runner_for(kind: str, dask_address: str = "", dask_workers: int = 2, threads: int | None = None):
    """The Prefect task runner for ``kind``: ``thread`` or ``dask``.

    ``dask`` with ``dask_address`` (``tcp://host:8786``) uses that running scheduler, whose workers
    must be able to import ``segcore`` and ``tasks`` and reach the same filesystem; without it a
    local cluster of ``dask_workers`` processes is started for the flow run and stopped after it.
    """
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=threads or os.cpu_count() or 1)
    if kind != "dask":
        raise ValueError(f"task_runner={kind!r} is not one of {', '.join(RUNNERS)}")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ImportError("task_runner=dask needs prefect-dask: pip install 'segcore[dask]'") from exc
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(dask_workers))


@contextmanager
def dataset_lock(config: dict[str, Any]) -> Iterator[str]:
    """Hold the dataset's build lock (``segcore.data.shards.building``) in the flow process while the
    fan-out plans, writes and publishes; yields the dataset root. A second build of the same dataset,
    serial or fanned out, fails at once naming this PID; a failed fan-out leaves no staging debris."""
    with building(Config.from_dict(config)) as (root, _):
        yield str(root)


@task(name="plan_shards", cache_policy=NO_CACHE)
def plan_shards(config: dict[str, Any], on_error: str = "fail", exclude: tuple[str, ...] = ()) -> BuildPlan:
    """Validate the rasters and fix every shard's tiles (nothing written but the staging directory)."""
    cfg = Config.from_dict(config)
    prepare_staging(dataset_dirs(cfg)[1])
    plan = plan_build(cfg, on_error, exclude)
    if not plan.shards:
        raise ShardError(f"{plan.root}: no tile to write from {len(plan.rasters)} raster(s); check the inputs "
                         f"and data.min_valid={cfg.data.min_valid}")
    return plan


@task(name="write_shard", task_run_name="write_shard-{index}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
def write_one_shard(plan: BuildPlan, index: int) -> ShardResult | RasterError:
    """Write shard ``index`` of ``plan`` into the staging directory (I/O errors are retried).

    A verified copy already staged or published (an earlier, interrupted build) is reused. A raster
    that cannot be read comes back as the :class:`RasterError` (not raised), so the flow can drop
    that raster under ``on_error=skip``.
    """
    shard = plan.shards[index]
    try:
        return reuse_shard(plan, shard) or write_shard(plan, shard)
    except RasterError as exc:
        return exc


@task(name="publish_shards", cache_policy=NO_CACHE)
def publish_shards(plan: BuildPlan, results: list[ShardResult]) -> str:
    """Write the manifest and swap the staging directory into place; the published root."""
    return str(publish(plan, results).resolve())


def failed_image(plan: BuildPlan, exc: RasterError) -> str:
    """The input image whose read failed (errors name the image or label path first)."""
    for r in plan.rasters:
        if str(exc).startswith(r.source.image) or (r.source.label and str(exc).startswith(r.source.label)):
            return r.source.image
    raise exc
