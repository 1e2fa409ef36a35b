"""Colour table, band description, class-name tags, overviews, .qml and the VRT mosaic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from segcore.errors import RasterError
from segcore.style import (
    colormap,
    overview_factors,
    palette,
    qml_path,
    read_qml_palette,
    style_labels,
    write_qml,
    write_vrt,
)

NAMES = ["water", "forest", "field & meadow", "<road>"]


def _labels(path, data: np.ndarray, transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000), crs="EPSG:32633"):
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": "uint8",
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256, "crs": crs, "transform": transform}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def test_palette_is_distinct_and_deterministic():
    cols = palette(40)
    assert len(set(cols)) == 40
    assert cols == palette(40)
    assert palette(3) == cols[:3]
    assert colormap(2)[0] == (0, 0, 0, 0)
    assert colormap(2)[1] == (*cols[0], 255)


def test_style_labels_writes_colour_table_description_and_names(tmp_path):
    data = np.random.default_rng(0).integers(0, 5, (300, 200)).astype(np.uint8)
    path = _labels(tmp_path / "lab.tif", data)
    style_labels(path, NAMES, "codebook")
    with rasterio.open(path) as ds:
        cmap = ds.colormap(1)
        assert cmap[0] == (0, 0, 0, 0)
        for i, rgb in enumerate(palette(4), start=1):
            assert cmap[i] == (*rgb, 255)
        assert ds.descriptions[0] == "segcore classes: codebook, k=4"
        assert json.loads(ds.tags(1)["class_names"]) == NAMES
        assert ds.overviews(1) == []
        np.testing.assert_array_equal(ds.read(1), data)  # pixels untouched


def test_qml_matches_colour_table_and_names(tmp_path):
    path = _labels(tmp_path / "lab.tif", np.ones((16, 16), np.uint8))
    style_labels(path, NAMES, "codebook")
    qml = write_qml(path, NAMES)
    assert qml == qml_path(path) == tmp_path / "lab.qml"
    entries = read_qml_palette(qml)
    with rasterio.open(path) as ds:
        cmap = ds.colormap(1)
    assert sorted(entries) == [1, 2, 3, 4]
    for value, (colour, label) in entries.items():
        assert label == NAMES[value - 1]
        assert colour == "#{:02x}{:02x}{:02x}".format(*cmap[value][:3])
    assert 'type="paletted"' in qml.read_text()


def test_overviews_are_internal_and_categorical(tmp_path):
    data = np.kron(np.arange(1, 5, dtype=np.uint8).reshape(2, 2), np.ones((600, 500), np.uint8))
    path = _labels(tmp_path / "big.tif", data)
    style_labels(path, NAMES, "raster", overviews=True)
    assert overview_factors(1000, 1200) == [2, 4]
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
        small = ds.read(1, out_shape=(300, 250))  # served from the x4 overview
    assert set(np.unique(small)) == {1, 2, 3, 4}  # class ids, never blends
    assert not list(tmp_path.glob("*.ovr"))


def test_vrt_mosaic_places_rasters_and_keeps_nodata(tmp_path):
    a = _labels(tmp_path / "a.tif", np.full((100, 120), 1, np.uint8))
    b_data = np.full((80, 60), 2, np.uint8)
    b_data[:, :10] = 0  # nodata in b must not hide a
    b = _labels(tmp_path / "b.tif", b_data, transform=Affine(0.5, 0, 500000 + 100 * 0.5, 0, -0.5, 5000000 - 60 * 0.5))
    vrt = write_vrt([a, b], tmp_path / "out" / "mosaic.vrt", NAMES[:2])
    with rasterio.open(vrt) as ds:
        assert (ds.width, ds.height) == (160, 140)
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == Affine(0.5, 0, 500000, 0, -0.5, 5000000)
        mosaic = ds.read(1)
        assert ds.colormap(1)[2] == (*palette(2)[1], 255)
    assert (mosaic[:100, :100] == 1).all()
    assert (mosaic[60:140, 110:160] == 2).all()
    assert (mosaic[60:100, 100:110] == 1).all()  # b's nodata columns show a
    assert (mosaic[100:, :100] == 0).all()  # neither raster covers it
    assert "../a.tif" in vrt.read_text()  # relative paths: the folder can move


def test_vrt_refuses_mixed_grids(tmp_path):
    a = _labels(tmp_path / "a.tif", np.ones((10, 10), np.uint8))
    b = _labels(tmp_path / "b.tif", np.ones((10, 10), np.uint8), transform=Affine(1.0, 0, 0, 0, -1.0, 0))
    with pytest.raises(RasterError, match="pixel size"):
        write_vrt([a, b], tmp_path / "m.vrt", ["x"])
