"""Tiled raster prediction: tiled == whole, georeferencing and nodata kept, CLI, sample windows."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from segcore.cli.main import main as cli_main
from segcore.config import Config, DataConfig
from segcore.data.synthetic import generate_scene, write_scene_geotiff
from segcore.export import export_model
from segcore.models import build_segmenter
from segcore.predict import predict_raster, sample_windows
from segcore.runtime import load_export

SHARED_DATA = Path(os.environ["SEGCORE_SHARED_DATA"])

NATIVE = DataConfig(gsd=0.0)  # every raster at its own resolution
HALF = DataConfig(gsd=1.0, min_side=64)  # the 0.5 m test scenes on a 1 m working grid

SMALL = {"student.width": 16, "student.groups": 4, "student.embed_dim": 16, "model.embed_dim": 16,
         "model.temperature": 0.1}


def _export(tmp_path, **overrides):
    cfg = Config().replace(**{**SMALL, **overrides})
    torch.manual_seed(0)
    return load_export(export_model(build_segmenter(cfg), cfg, tmp_path / "export"))


@pytest.fixture
def scene_tif(tmp_path):
    scene = generate_scene((300, 262), seed=5)
    write_scene_geotiff(scene, tmp_path / "img.tif", tmp_path / "lab.tif", origin=(500000.0, 5000000.0),
                        pixel_size=0.5, nodata_border=6)
    return tmp_path / "img.tif", scene


def _read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize(
    ("overrides", "sample_pixels", "data", "n_tiles"),
    [({}, 65536, NATIVE, 25), ({}, 1500, NATIVE, 25),
     ({"model.refiner": True, "student.depth": 2, "model.smooth_iters": 3}, 65536, NATIVE, 25),
     ({}, 65536, HALF, 9), ({"student.dilations": (1, 2, 4)}, 65536, NATIVE, 25)],
    ids=["one-sample-window", "grid-of-sample-windows", "refiner-depth2-smooth3", "working-grid-x2", "dilated"],
)
def test_tiled_equals_whole(tmp_path, scene_tif, overrides, sample_pixels, data, n_tiles):
    # halo=0 asks for the smallest halo: the model's receptive radius, which must suffice for equality.
    model = _export(tmp_path, **overrides)
    src, _ = scene_tif
    tiled = predict_raster(src, tmp_path / "tiled.tif", model, 5, tile=64, halo=0, sample_pixels=sample_pixels,
                           data_cfg=data, progress=False)
    whole = predict_raster(src, tmp_path / "whole.tif", model, 5, tile=4096, sample_pixels=sample_pixels,
                           data_cfg=data, progress=False)
    assert tiled.tiles == n_tiles  # 64 working px are 128 file px on the x2 grid
    assert whole.tiles == 1
    assert tiled.halo == model.receptive_radius() + (-model.receptive_radius()) % 4
    a, b = _read(tmp_path / "tiled.tif"), _read(tmp_path / "whole.tif")
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= set(range(6))
    assert len(np.unique(a[a > 0])) >= 3


def test_single_window_equals_segment_inside(tmp_path, scene_tif):
    # Away from the raster edge (farther than the halo) predict is NumpyModel.segment on the whole
    # image; within it, predict sees the raster mirrored instead of the network's zero padding.
    model = _export(tmp_path)
    src, _ = scene_tif
    res = predict_raster(src, tmp_path / "out.tif", model, 5, tile=96, data_cfg=NATIVE, progress=False, prior_rounds=0)
    with rasterio.open(src) as ds:
        image, valid = ds.read().transpose(1, 2, 0), ds.read_masks(1) > 0
    expect = np.where(valid, model.segment(image, 5, valid) + 1, 0)
    m = res.halo
    assert np.array_equal(_read(tmp_path / "out.tif")[m:-m, m:-m], expect[m:-m, m:-m])


def test_nodata_and_georeferencing_kept(tmp_path, scene_tif):
    model = _export(tmp_path)
    src, _ = scene_tif
    predict_raster(src, tmp_path / "out.tif", model, 4, tile=128, progress=False)
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert b.crs == a.crs
        assert b.transform == a.transform
        assert (b.width, b.height) == (a.width, a.height)
        assert b.dtypes == ("uint8",)
        assert b.nodata == 0
        labels, valid = b.read(1), a.read_masks(1) > 0
    assert (labels[~valid] == 0).all()
    assert (labels[valid] >= 1).all()
    assert labels.max() <= 4
    assert not valid[:6].any()  # the nodata border is really there
    assert not list(tmp_path.glob(".*tmp*"))


def test_raster_without_crs_stays_without(tmp_path):
    model = _export(tmp_path)
    image = generate_scene(80, seed=3).image.transpose(2, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=80, height=80, count=3,
                           dtype="uint8") as ds:
            ds.write(image)
        predict_raster(tmp_path / "plain.tif", tmp_path / "out.tif", model, 3, progress=False)
        with rasterio.open(tmp_path / "out.tif") as out:
            assert out.crs is None
            assert out.transform.is_identity
            assert set(np.unique(out.read(1))) <= {1, 2, 3}


def test_shared_rgb_byte(tmp_path):
    src = SHARED_DATA / "RGB.byte.tif"
    if not src.is_file():
        pytest.skip(f"{src} is absent; set SEGCORE_SHARED_DATA to the shared data directory")
    model = _export(tmp_path)
    res = predict_raster(src, tmp_path / "out.tif", model, 6, tile=256, progress=False)
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert b.crs == a.crs
        assert b.crs.to_epsg() == 32618
        assert b.transform == a.transform
        valid = a.dataset_mask() > 0
        labels = b.read(1)
    assert res.tiles == 12  # 4 x 3 tiles of 256 px
    assert 0.2 < (~valid).mean() < 0.5  # the README's "about a third" nodata
    assert (labels[~valid] == 0).all()
    assert (labels[valid] >= 1).all()
    assert labels.max() <= 6


def test_cli_predict(tmp_path, scene_tif, capsys):
    _export(tmp_path)
    src, _ = scene_tif
    rc = cli_main(["predict", str(src), str(tmp_path / "out.tif"), "predict.tile=128", "data.gsd=0", "--export",
                   str(tmp_path / "export"), "--k", "3", "--no-progress"])
    assert rc == 0
    assert "9 tiles of 128 px" in capsys.readouterr().out
    assert set(np.unique(_read(tmp_path / "out.tif"))) <= {0, 1, 2, 3}
    assert cli_main(["predict", str(src), str(tmp_path / "o.tif"), "--export", str(tmp_path / "none")]) == 2


@pytest.mark.parametrize(("width", "height"), [(300, 200), (5000, 700), (700, 5000), (10000, 10000), (3000, 2000)])
def test_sample_windows(width, height):
    windows = sample_windows(width, height, sample_pixels=16384)
    if width * height <= 16 * 16384:
        assert windows == [(0, 0, width, height)]
        return
    cells = sum(w * h for _, _, w, h in windows) // 16
    assert 16384 <= cells <= 2 * 16384
    for col, row, w, h in windows:
        assert col % 4 == 0
        assert row % 4 == 0
        assert col + w <= width
        assert row + h <= height
    assert len(set(windows)) == len(windows)


def test_region_vote_tiles_nearly_agree_and_keep_nodata(tmp_path, scene_tif):
    model = _export(tmp_path)
    src, _ = scene_tif
    kw = {"data_cfg": NATIVE, "progress": False, "region_m": 12.0}  # 24 px regions at 0.5 m
    tiled = predict_raster(src, tmp_path / "tiled.tif", model, 5, tile=64, **kw)
    predict_raster(src, tmp_path / "whole.tif", model, 5, tile=4096, **kw)
    predict_raster(src, tmp_path / "plain.tif", model, 5, tile=4096, data_cfg=NATIVE, progress=False)
    a, b, c = _read(tmp_path / "tiled.tif"), _read(tmp_path / "whole.tif"), _read(tmp_path / "plain.tif")
    assert tiled.halo >= 2 * 24  # two region sides of context around every tile
    assert (a == b).mean() >= 0.97
    assert np.array_equal(a == 0, c == 0)  # nodata stays nodata, valid pixels stay labelled
    # Fewer, larger pieces: the vote leaves fewer label changes between neighbouring pixels.
    def changes(x):
        return (x[1:] != x[:-1]).sum() + (x[:, 1:] != x[:, :-1]).sum()
    assert changes(b) < changes(c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_pixels_are_assigned_like_interior_ones(tmp_path, seed):
    # Horizontal stripes of three noisy colours: every column crosses the same classes, so the labels
    # of an edge column should match an interior column as well as two interior columns match.
    # The network's own zero padding (NumpyModel.segment, as torch runs it) assigns the edge columns
    # differently, which is the strip of one cluster seen along raster edges; predict mirrors the
    # raster beyond its edge instead.
    cfg = Config().replace(**SMALL)
    torch.manual_seed(seed)
    model = load_export(export_model(build_segmenter(cfg), cfg, tmp_path / "export"))
    rng = np.random.default_rng(0)
    colours = np.array([[200, 60, 40], [40, 160, 60], [60, 60, 200]], np.int16)
    image = colours[(np.arange(200) // 25) % 3][:, None, :].repeat(200, 1) + rng.integers(-20, 20, (200, 200, 3))
    image = np.clip(image, 1, 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "s.tif", "w", driver="GTiff", width=200, height=200, count=3,
                           dtype="uint8") as ds:
            ds.write(image.transpose(2, 0, 1))
        predict_raster(tmp_path / "s.tif", tmp_path / "o.tif", model, 3, data_cfg=NATIVE, progress=False)
    labels, padded = _read(tmp_path / "o.tif"), model.segment(image, 3) + 1

    def agreement(lab, col):
        return (lab[:, col] == lab[:, 100]).mean()

    interior = agreement(labels, 60)
    for col in (0, 1, 2, 197, 198, 199):
        assert agreement(labels, col) >= interior - 0.06
    assert min(agreement(padded, c) for c in (0, 199)) < agreement(padded, 60) - 0.15


@pytest.mark.parametrize("mode", ["codebook", "codebook-named-alike", "raster"])
def test_segment_image_equals_predict_raster(tmp_path, mode):
    # segment_image is what evaluation scores an export with: on an image that is one sample window
    # and one tile it must give predict_raster's ids, with the prior, the region vote and the merge.
    from segcore.codebook import CodebookRequest, load_codebook
    from segcore.predict import segment_image

    cfg = Config().replace(**{**SMALL, "data.source": "synthetic", "data.synthetic_size": 128})
    torch.manual_seed(0)
    req = CodebookRequest(k=5, windows=6, side=64) if mode != "raster" else None
    model = load_export(export_model(build_segmenter(cfg), cfg, tmp_path / "export", codebook=req))
    codebook = load_codebook(tmp_path / "export", model.meta) if req else None
    names = ["a", "b", "a", "c", "b"] if mode == "codebook-named-alike" else None
    image = generate_scene((150, 122), seed=8).image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=122, height=150, count=3,
                           dtype="uint8") as ds:
            ds.write(image.transpose(2, 0, 1))
    kw = {"region_m": 12.0, "region_compactness": 0.4, "prior_rounds": 2}
    predict_raster(tmp_path / "plain.tif", tmp_path / "out.tif", model, None if req else 4, data_cfg=NATIVE,
                   progress=False, codebook=codebook, class_names=names, **kw)
    ids = segment_image(model, image, k=None if req else 4, codebook=codebook, class_names=names, gsd=None, **kw)
    written = _read(tmp_path / "out.tif")
    assert ids.shape == written.shape
    assert ids.dtype == np.int64
    assert np.array_equal(ids + 1, written)
    assert len(np.unique(ids)) >= 2
    # The vote and the prior are applied: without them the ids differ.
    plain = segment_image(model, image, k=None if req else 4, codebook=codebook, class_names=names)
    assert not np.array_equal(plain, ids)
