"""Polygons from label rasters: exact coverage, CRS, whole across block seams, small islands, simplify."""

from __future__ import annotations

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio import features

from segcore.data.synthetic import generate_scene
from segcore.errors import RasterError
from segcore.vector import merge_small, polygonize

T = Affine(0.5, 0, 500000, 0, -0.5, 5000000)
NAMES = ["field", "meadow", "forest", "water", "road", "building"]


def _write(path, labels, transform=T, crs="EPSG:32633"):
    profile = {"driver": "GTiff", "width": labels.shape[1], "height": labels.shape[0], "count": 1,
               "dtype": "uint8", "nodata": 0}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(labels, 1)
    return path


def _read(path):
    meta, _, wkb, fields = pyogrio.raw.read(path)
    return meta, shapely.from_wkb(wkb), fields


def _rasterize(geoms, ids, shape, transform=T):
    return features.rasterize(zip(geoms, ids, strict=True), out_shape=shape, transform=transform, fill=0,
                              dtype="uint8")


@pytest.fixture
def scene_labels(tmp_path):
    labels = generate_scene((300, 260), 4).labels.copy()
    labels[:5] = 0  # a nodata strip
    return labels, _write(tmp_path / "labels.tif", labels)


def test_polygons_cover_exactly_the_labelled_pixels_with_crs_and_fields(tmp_path, scene_labels):
    labels, path = scene_labels
    res = polygonize(path, tmp_path / "out.gpkg", NAMES, block=64)
    assert res.blocks == 25
    meta, geoms, (ids, names, area) = _read(res.path)
    assert meta["crs"] == "EPSG:32633"
    assert list(meta["fields"]) == ["class_id", "class_name", "area"]
    assert meta["geometry_type"] == "Polygon"
    np.testing.assert_array_equal(_rasterize(geoms, ids, labels.shape), labels)
    assert [NAMES[i - 1] for i in ids] == list(names)
    np.testing.assert_allclose(area, shapely.area(geoms))
    assert area.sum() == pytest.approx((labels > 0).sum() * 0.25)  # 0.5 m pixels
    assert shapely.is_valid(geoms).all()


def test_blocks_give_the_same_polygons_as_one_block(tmp_path, scene_labels):
    _, path = scene_labels
    whole = polygonize(path, tmp_path / "whole.gpkg", NAMES, block=4096)
    tiled = polygonize(path, tmp_path / "tiled.gpkg", NAMES, block=48)
    assert whole.polygons == tiled.polygons

    def key(item):
        return item[0], round(item[1].area, 6), round(item[1].centroid.x, 6), round(item[1].centroid.y, 6)

    _, g1, f1 = _read(whole.path)
    _, g2, f2 = _read(tiled.path)
    a = sorted(zip(f1[0], g1, strict=True), key=key)
    b = sorted(zip(f2[0], g2, strict=True), key=key)
    for (c1, p1), (c2, p2) in zip(a, b, strict=True):
        assert c1 == c2
        assert shapely.equals(p1, p2)


def test_polygon_crossing_seams_is_whole(tmp_path):
    labels = np.full((200, 200), 1, np.uint8)
    labels[20:180, 90:110] = 2  # a vertical bar across the row seams at 64, 128
    labels[90:110, 20:180] = 2  # a horizontal bar across the column seams: one cross
    labels[150:170, 150:170] = 3  # a square across the seam corner at (128, 128)? no: inside one block
    path = _write(tmp_path / "cross.tif", labels)
    res = polygonize(path, tmp_path / "cross.gpkg", ["a", "b", "c"], block=64)
    _, geoms, (ids, _, area) = _read(res.path)
    assert sorted(ids.tolist()) == [1, 2, 3]  # one polygon per class: the background with a hole, the cross
    cross = geoms[ids == 2][0]
    assert area[ids == 2][0] == pytest.approx((labels == 2).sum() * 0.25)
    assert len(shapely.get_coordinates(cross)) == 13  # 12 corners of a cross, closed: no seam vertices left
    assert len(geoms[ids == 1][0].interiors) == 2


def test_small_islands_merge_into_their_neighbour_blockwise_as_whole(tmp_path, scene_labels):
    labels, path = scene_labels
    res = polygonize(path, tmp_path / "m.gpkg", NAMES, block=48, min_area=10.0)  # 40 pixels of 0.25 m²
    assert res.min_pixels == 40
    _, geoms, (ids, _, area) = _read(res.path)
    merged = merge_small(labels, 40)
    np.testing.assert_array_equal(_rasterize(geoms, ids, labels.shape), merged)
    assert len(geoms) < len(_read(polygonize(path, tmp_path / "all.gpkg", NAMES).path)[1])
    small = area < 10.0
    # What stays small touches nothing large it could join (only nodata here).
    for g in geoms[small]:
        assert g.bounds[3] >= T.f - 5 * 0.5 - 1e-9


def test_merge_small_takes_the_longest_border_neighbour():
    labels = np.ones((12, 12), np.uint8)
    labels[:, 6:] = 2
    labels[5:7, 5:7] = 3  # 4 px island: 2 px touch class 1, 2 px touch class 2 -> tie, the lower id
    labels[2, 9] = 3  # 1 px island inside class 2
    out = merge_small(labels, 5)
    assert out[5, 5] == out[5, 6] == 1
    assert out[2, 9] == 2
    assert (out == 3).sum() == 0
    assert (merge_small(labels, 1) == labels).all()


def test_simplify_and_no_crs(tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    labels[(yy - 32) ** 2 + (xx - 32) ** 2 < 25**2] = 1
    path = _write(tmp_path / "disc.tif", labels, crs=None)
    meta, geoms, (_, _, area) = _read(polygonize(path, tmp_path / "d.gpkg", ["disc"], block=16).path)
    assert meta["crs"] is None
    assert area[0] == (labels == 1).sum()  # square pixels when there is no CRS
    _, simple, _ = _read(polygonize(path, tmp_path / "s.gpkg", ["disc"], simplify=1.5).path)
    assert len(shapely.get_coordinates(simple[0])) < len(shapely.get_coordinates(geoms[0])) / 2
    assert shapely.is_valid(simple[0])
    assert abs(simple[0].area - geoms[0].area) / geoms[0].area < 0.05


def test_class_ids_beyond_the_names_are_an_error(tmp_path, scene_labels):
    _, path = scene_labels
    with pytest.raises(RasterError, match="one name per class"):
        polygonize(path, tmp_path / "x.gpkg", NAMES[:2])
    assert not (tmp_path / "x.gpkg").exists()
    assert not list(tmp_path.glob(".*"))
