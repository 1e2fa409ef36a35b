"""Prediction tasks: fetch a registered export, segment one raster with the numpy runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from segcore.config import Config
from tasks import tracking
from tasks.retry import retry_on_io


@task(name="fetch_export", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
def fetch_export(model_name: str, alias: str, dst: str) -> dict[str, str]:
    """Download the export behind ``model_name@alias`` into ``dst``; its local path and version."""
    version = tracking.client().get_model_version_by_alias(model_name, alias)
    local = tracking.fetch(version.source, Path(dst) / f"{model_name}-v{version.version}")
    return {"export_dir": str(local), "version": version.version, "source": version.source}


@task(name="predict_raster", task_run_name="predict-{src}", retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
def predict_one(export_dir: str, src: str, dst: str, config: dict[str, Any] | None, k: int | None,
                overrides: list[str] | None = None) -> dict[str, Any]:
    """Segment ``src`` into ``dst`` with the export in ``export_dir``, as ``segcore predict`` does.

    ``config`` (a ``Config.to_dict()``), else the export's own config with ``overrides``, gives
    ``predict.*`` (classes, region vote, tiling) and the ``data.*`` policy (working resolution,
    bands, nodata). Returns a small summary dict.
    """
    from segcore.config import load_config
    from segcore.predict import export_config
    from segcore.products import class_plan, predict_to_map
    from segcore.runtime import load_export

    model = load_export(export_dir)
    cfg = Config.from_dict(config) if config else load_config(None, overrides=overrides or [],
                                                                base=export_config(model.meta))
    plan = class_plan(model, export_dir, cfg.predict.classes if k is None else "raster", k, cfg.predict.class_names)
    res = predict_to_map([src], [Path(dst)], model, plan, cfg, overviews=cfg.predict.overviews,
                         progress=False).rasters[0]
    return {"path": str(res.path), "width": res.width, "height": res.height, "k": res.k, "tiles": res.tiles,
            "classes": res.classes}


@task(name="plan_predictions", cache_policy=NO_CACHE)
def plan_predictions(rasters: str | list[str], out_dir: str) -> list[tuple[str, str]]:
    """``[(raster, output path)]`` for a directory, glob, file or list of them."""
    from segcore.batch import list_rasters, output_paths

    sources = list_rasters(rasters)
    return list(zip(sources, output_paths(sources, out_dir), strict=True))
