"""Shard building as a subflow that fans out one Prefect task run per shard.

``build_shards_fanout(config, "thread")`` writes the shards on a thread pool in this process;
``"dask"`` on a Dask cluster: the scheduler at ``dask_address``, or a local cluster of
``dask_workers`` single-threaded processes started (on 127.0.0.1) for this run. The published
dataset is byte-identical to a serial ``segcore.data.shards.build_shards(cfg)``.

Called inside a flow or task it is a subflow run; called alone, a flow run of its own.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from tasks.build_shards_dask import (
    dataset_lock,
    failed_image,
    plan_shards,
    publish_shards,
    task_runner_for,
    write_one_shard,
)


@flow(name="segcore-build-shards", log_prints=True)
def build_shards_flow(config: dict[str, Any], task_runner: Literal["thread", "dask"] = "thread",
                      dask_address: str = "", dask_workers: int = 2, on_error: str = "fail") -> str:
    """Plan once, write every shard as its own task run, publish; returns the published root.

    The runner parameters only label the run here: :func:`build_shards_fanout` applies them.
    """
    log = get_run_logger()
    exclude: tuple[str, ...] = ()
    with dataset_lock(config):  # held by this process from planning to publishing
        while True:
            # Phase 1: plan (rasters validated, tiles and splits fixed) in this process.
            plan = plan_shards(config, on_error, exclude)
            # Phase 2: one task run per shard on the flow's task runner; results back in shard order.
            futures = [write_one_shard.submit(plan, i) for i in range(len(plan.shards))]
            outcomes = [f.result() for f in futures]
            errors = [o for o in outcomes if isinstance(o, Exception)]
            if not errors:
                break
            if on_error == "fail":
                raise errors[0]
            exclude += tuple(sorted({failed_image(plan, e) for e in errors}))
            log.warning("dropping %d unreadable raster(s) and planning again: %s", len(errors), exclude)
        # Phase 3: manifest last, then the staging directory replaces the published dataset.
        root = publish_shards(plan, outcomes)
    log.info("published %s: %d shards (%d reused)", root, len(outcomes), sum(o.reused for o in outcomes))
    return root


def build_shards_fanout(config: dict[str, Any], task_runner: Literal["thread", "dask"] = "thread",
                        dask_address: str = "", dask_workers: int = 2, on_error: str = "fail") -> str:
    """Run :func:`build_shards_flow` on the task runner named by ``task_runner``; the published root."""
    runner = task_runner_for(task_runner, dask_address, dask_workers)
    return build_shards_flow.with_options(task_runner=runner)(
        config=config, task_runner=task_runner, dask_address=dask_address, dask_workers=dask_workers,
        on_error=on_error)
