"""Raster inputs: discovery, band/dtype policy, nodata masks, padded windowed reads, tile offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from segcore.config import DataConfig
from segcore.data.raster import (
    RasterSource,
    discover_sources,
    inspect_raster,
    open_raster,
    read_rgb,
    to_uint8,
)
from segcore.data.shard_plan import check_name, tile_offsets
from segcore.errors import ConfigError, RasterError
from tests.data.conftest import write_tif


def test_discover_directory_glob_and_manifest(tmp_path: Path) -> None:
    for name in ("b.tif", "a.tif", "c.TIFF"):
        write_tif(tmp_path / name, np.ones((3, 8, 8), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    found = discover_sources(DataConfig(raster_paths=(str(tmp_path),)))
    assert [Path(s.image).name for s in found] == ["a.tif", "b.tif", "c.TIFF"]
    globbed = discover_sources(DataConfig(raster_paths=(str(tmp_path / "[ab].tif"),)))
    assert [Path(s.image).name for s in globbed] == ["a.tif", "b.tif"]
    (tmp_path / "m.csv").write_text("image,label,split\na.tif,b.tif,val\nc.TIFF,,\n")
    rows = discover_sources(DataConfig(manifest=str(tmp_path / "m.csv"), raster_paths=("ignored",)))
    assert rows == [
        RasterSource(str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "val"),
        RasterSource(str(tmp_path / "c.TIFF"), None, None),
    ]
    with pytest.raises(RasterError, match="glob matched no files"):
        discover_sources(DataConfig(raster_paths=(str(tmp_path / "*.jp2"),)))


def test_band_policy(tmp_path: Path) -> None:
    data = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30, 40)])
    path = write_tif(tmp_path / "four.tif", data)
    assert inspect_raster(path, DataConfig()).bands == (1, 2, 3)
    info = inspect_raster(path, DataConfig(bands=(4, 3, 2)))
    with open_raster(path) as ds:
        rgb, valid = read_rgb(ds, info, Window(0, 0, 16, 16), DataConfig(bands=(4, 3, 2)))
    assert rgb[0, 0].tolist() == [40, 30, 20]
    assert valid.all()
    with pytest.raises(RasterError, match=r"must name 3 of its 4 bands"):
        inspect_raster(path, DataConfig(bands=(1, 5, 2)))
    two = write_tif(tmp_path / "two.tif", data[:2])
    with pytest.raises(RasterError, match=r"two\.tif: has 2 band\(s\)"):
        inspect_raster(two, DataConfig())


def test_float_scaling_and_nan_is_invalid(tmp_path: Path) -> None:
    data = np.linspace(0.0, 1.0, 3 * 50 * 50, dtype=np.float32).reshape(3, 50, 50)
    data[:, 0, 0] = np.nan
    path = write_tif(tmp_path / "float.tif", data)
    cfg = DataConfig(percentile_low=0.0, percentile_high=100.0)
    info = inspect_raster(path, cfg)
    finite = data[0][np.isfinite(data[0])]
    assert info.scale_low[0] == pytest.approx(float(finite.min()))
    assert info.scale_high[0] == pytest.approx(float(finite.max()))
    with open_raster(path) as ds:
        rgb, valid = read_rgb(ds, info, Window(0, 0, 50, 50), cfg)
    assert not valid[0, 0]
    assert valid.sum() == 50 * 50 - 1
    assert rgb[0, 1, 0] == 0
    assert rgb[49, 49, 0] == 255


def test_to_uint8_clips_to_the_percentile_range() -> None:
    from segcore.data.raster import RasterInfo

    info = RasterInfo("x", 3, 1, 3, "uint16", (1, 2, 3), None, None, None, (100.0,) * 3, (200.0,) * 3)
    raw = np.array([50, 150, 250], np.uint16)[None, None, :].repeat(3, axis=0)
    assert to_uint8(raw, info)[0, 0].tolist() == [0, 128, 255]


def test_user_nodata_and_padding_outside_the_raster(tmp_path: Path) -> None:
    data = np.full((3, 20, 30), 9, np.uint8)
    data[:, :5, :] = 7
    path = write_tif(tmp_path / "plain.tif", data)  # declares no nodata
    cfg = DataConfig(nodata=7.0)
    info = inspect_raster(path, cfg)
    assert info.nodata == 7.0
    with open_raster(path) as ds:
        rgb, valid = read_rgb(ds, info, Window(20, 0, 16, 32), cfg)
    assert rgb.shape == (32, 16, 3)
    expected = np.zeros((32, 16), bool)
    expected[5:20, :10] = True
    np.testing.assert_array_equal(valid, expected)
    assert (rgb[~valid] == 0).all()
    assert (rgb[valid] == 9).all()


def test_raster_without_crs_is_accepted_as_is(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "plain.tif", np.ones((3, 16, 16), np.uint8), crs=None)
    info = inspect_raster(path, DataConfig())
    assert info.crs is None
    assert info.transform is None


@pytest.mark.parametrize(
    ("extent", "tile", "overlap", "expected"),
    [(300, 128, 0, [0, 128, 172]), (256, 128, 0, [0, 128]), (100, 128, 0, [0]), (300, 128, 32, [0, 96, 172])],
)
def test_tile_offsets(extent: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert tile_offsets(extent, tile, overlap) == expected


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a\\b"])
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="single path component"):
        check_name(name, "data.dataset")
