"""Tiled prediction over many rasters: one Prefect task run per raster.

``batch_predict`` (the ``batch-predict`` deployment) segments a folder, glob or list of rasters
with the export behind a registered model's alias (``champion`` by default), on a thread pool.
``predict_many(export_dir, rasters, out_dir, "dask")`` does the same with an export directory on
the chosen task runner (the same choice as shard building: ``tasks.build_shards_dask.task_runner_for``).
Each task loads the export itself (numpy only, a few MB), so nothing but paths travels to the
workers. Outputs are ``<out_dir>/<stem>.labels.tif``.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from segcore.batch import output_paths
from tasks.build_shards_dask import task_runner_for
from tasks.predict import fetch_export, plan_predictions, predict_one

__all__ = ["batch_predict", "output_paths", "predict_many", "predict_many_flow"]
BATCH_THREADS = 4  # numpy releases the GIL in its heavy kernels; more threads than cores rarely helps


@flow(name="segcore-predict-many", log_prints=True)
def predict_many_flow(export_dir: str, rasters: list[str], out_dir: str, config: dict[str, Any] | None = None,
                      k: int | None = None, task_runner: Literal["thread", "dask"] = "thread",
                      dask_address: str = "", dask_workers: int = 2) -> list[dict[str, Any]]:
    """Predict every raster (one task run each); summaries in the order of ``rasters``.

    The runner parameters only label the run here: :func:`predict_many` applies them.
    """
    pairs = plan_predictions(rasters, out_dir)
    futures = [predict_one.submit(export_dir, src, dst, config, k) for src, dst in pairs]
    results = [f.result() for f in futures]
    get_run_logger().info("predicted %d raster(s) into %s", len(results), out_dir)
    return results


def predict_many(export_dir: str, rasters: list[str], out_dir: str, task_runner: Literal["thread", "dask"] = "thread",
                 *, config: dict[str, Any] | None = None, k: int | None = None, dask_address: str = "",
                 dask_workers: int = 2) -> list[dict[str, Any]]:
    """Run :func:`predict_many_flow` on the task runner named by ``task_runner``.

    ``config`` (a ``Config.to_dict()``) supplies ``predict.*`` (tile, halo, sample_pixels) and the
    ``data.*`` band/nodata policy; ``k`` defaults to the export's ``max_k``.
    """
    runner = task_runner_for(task_runner, dask_address, dask_workers)
    return predict_many_flow.with_options(task_runner=runner)(
        export_dir=export_dir, rasters=[str(r) for r in rasters], out_dir=str(out_dir), config=config, k=k,
        task_runner=task_runner, dask_address=dask_address, dask_workers=dask_workers)


@flow(name="segcore-batch-predict", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=BATCH_THREADS))
def batch_predict(rasters: str | list[str], out_dir: str, model_name: str = "segcore-student",
                  alias: str = "champion", k: int | None = None, work_dir: str = "segcore-work",
                  overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Segment every raster of ``rasters`` (a directory, glob, file or list) with ``model_name@alias``.

    ``overrides`` (``predict.tile=2048``, ``data.bands=[3,2,1]``...) adjust the tiling and the band
    and nodata policy; ``k`` defaults to the export's ``max_k``. Returns one summary per raster.
    """
    export = fetch_export(model_name, alias, f"{work_dir}/registry-exports")
    pairs = plan_predictions(rasters, out_dir)
    futures = [predict_one.submit(export["export_dir"], src, dst, None, k, overrides) for src, dst in pairs]
    results = [f.result() for f in futures]
    get_run_logger().info("predicted %d raster(s) with %s v%s into %s", len(results), model_name,
                          export["version"], out_dir)
    return results
