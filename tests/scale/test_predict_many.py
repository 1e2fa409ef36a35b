"""Tiled prediction over several rasters fanned out as Prefect task runs: same labels as one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from flows.predict_flow import output_paths, predict_many
from segcore.config import Config
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.predict import predict_raster
from segcore.runtime import load_export

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "predict.tile": 64}


def _read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_output_paths_refuse_clashing_stems():
    assert output_paths(["a/x.tif", "b/y.tif"], "out") == ["out/x.labels.tif", "out/y.labels.tif"]
    with pytest.raises(ValueError, match="same file stem"):
        output_paths(["a/x.tif", "b/x.tif"], "out")


@pytest.mark.slow
def test_predict_many_thread_runner_matches_serial(geotiffs, use_prefect_server, tmp_path):
    cfg = Config().replace(**SMALL)
    torch.manual_seed(0)
    export_dir = export_model(build_segmenter(cfg), cfg, tmp_path / "export")
    rasters = sorted(str(p) for p in (geotiffs / "images").glob("*.tif"))
    results = predict_many(str(export_dir), rasters, str(tmp_path / "many"), "thread", config=cfg.to_dict(), k=4)
    assert [r["path"] for r in results] == output_paths(rasters, str(tmp_path / "many"))
    model = load_export(export_dir)
    for src, res in zip(rasters, results, strict=True):
        ref = predict_raster(src, tmp_path / "one.tif", model, 4, tile=64, data_cfg=cfg.data, progress=False,
                             region_m=cfg.predict.region_m, region_compactness=cfg.predict.region_compactness).path
        labels = _read(res["path"])
        np.testing.assert_array_equal(labels, _read(ref))
        assert res["tiles"] == 4  # 128 px rasters in 64 px tiles
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
