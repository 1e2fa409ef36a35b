"""Tiled prediction over many rasters as one subflow: one Prefect task run per raster.

``predict_many(export_dir, rasters, out_dir, "dask")`` runs :func:`segcore.predict.predict_raster`
for every raster on the chosen task runner (the same choice as shard building:
``tasks.build_shards_dask.task_runner_for``). Each task loads the export itself (numpy only, a few
MB), so nothing but paths travels to the workers. Outputs are ``<out_dir>/<stem>.labels.tif``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.build_shards_dask import task_runner_for
from tasks.retry import retry_on_io


def output_paths(rasters: list[str], out_dir: str) -> list[str]:
    """``<out_dir>/<stem>.labels.tif`` per raster; ValueError when two rasters share a stem."""
    outs = [str(Path(out_dir) / f"{Path(r).stem}.labels.tif") for r in rasters]
    if len(set(outs)) != len(outs):
        dup = sorted({o for o in outs if outs.count(o) > 1})
        raise ValueError(f"rasters with the same file stem would overwrite each other in {out_dir}: {dup}; "
                         "rename them or predict them into separate directories")
    return outs


@task(name="predict_raster", task_run_name="predict-{src}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
def predict_one(export_dir: str, src: str, dst: str, config: dict[str, Any], k: int | None) -> dict[str, Any]:
    """Segment ``src`` into ``dst`` with the export in ``export_dir``; a small summary dict."""
    from segcore.config import Config
    from segcore.predict import predict_raster
    from segcore.runtime import load_export

    cfg = Config.from_dict(config)
    p = cfg.predict
    res = predict_raster(src, dst, load_export(export_dir), k, tile=p.tile, halo=p.halo,
                         sample_pixels=p.sample_pixels, data_cfg=cfg.data, progress=False)
    return {"path": str(res.path), "width": res.width, "height": res.height, "k": res.k, "tiles": res.tiles}


@flow(name="segcore-predict-many", log_prints=True)
def predict_many_flow(export_dir: str, rasters: list[str], out_dir: str, config: dict[str, Any] | None = None,
                      k: int | None = None, task_runner: Literal["thread", "dask"] = "thread",
                      dask_address: str = "", dask_workers: int = 2) -> list[dict[str, Any]]:
    """Predict every raster (one task run each); summaries in the order of ``rasters``.

    The runner parameters only label the run here: :func:`predict_many` applies them.
    """
    from segcore.config import Config

    config = config or Config().to_dict()
    outs = output_paths(rasters, out_dir)
    futures = [predict_one.submit(export_dir, src, dst, config, k) for src, dst in zip(rasters, outs, strict=True)]
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
