"""``segcore predict``: rules 1, 7 and 8. It never writes over its input or a user's file, replaces
only label rasters it wrote, leaves no temporary file after SIGTERM, and finds sparse valid pixels."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from segcore.predict import fit_raster, sample_windows
from segcore.runtime import load_export
from segcore.safety import PREDICT_TAG
from tests.reliability.conftest import CRS, UTM, start_segcore, write_rgb
from tests.reliability.test_locks_and_signals import wait_for

NATIVE = "data.gsd=0"  # every raster at its own resolution


def test_predict_onto_its_input_is_refused(tmp_path: Path, export_dir: Path, cli) -> None:
    """The issue's example: ``segcore predict A.tif A.tif`` replaced the input with labels."""
    image = write_rgb(tmp_path / "A.tif")
    before = image.read_bytes()
    (tmp_path / "link.tif").symlink_to(image)
    for out in (image, tmp_path / "link.tif"):
        rc, err, _ = cli("predict", image, out, NATIVE, "--export", export_dir)
        assert rc == 2
        assert "is the input raster" in err
    assert image.read_bytes() == before


def test_predict_replaces_only_its_own_output(tmp_path: Path, export_dir: Path, cli) -> None:
    image = write_rgb(tmp_path / "A.tif")
    out = tmp_path / "labels.tif"
    assert cli("predict", image, out, NATIVE, "--export", export_dir, "--k", "3")[0] == 0
    with rasterio.open(out) as ds:
        assert ds.tags()[PREDICT_TAG] == "predict-labels"
    rc, err, _ = cli("predict", image, out, NATIVE, "--export", export_dir, "--k", "4")
    assert rc == 0, err
    with rasterio.open(out) as ds:
        assert ds.read(1).max() <= 4
    assert (tmp_path / "labels.qml").is_file()  # its style, replaced with it
    (tmp_path / "new.qml").write_text("<qgis>my own style</qgis>\n")  # a user's style where predict writes its own
    rc, err, _ = cli("predict", image, tmp_path / "new.tif", NATIVE, "--export", export_dir)
    assert rc == 2
    assert "new.qml exists" in err
    assert (tmp_path / "new.qml").read_text() == "<qgis>my own style</qgis>\n"
    assert not (tmp_path / "new.tif").exists()
    theirs = write_rgb(tmp_path / "theirs.tif", seed=9)  # a user's GeoTIFF at the output path
    before = theirs.read_bytes()
    rc, err, _ = cli("predict", image, theirs, NATIVE, "--export", export_dir)
    assert rc == 2
    assert "not a label raster written by segcore" in err
    assert theirs.read_bytes() == before


def test_mosaic_and_polygons_replace_only_their_own_files(tmp_path: Path, export_dir: Path, cli) -> None:
    """``mosaic.vrt`` and ``--vector`` outputs follow the same rule as the labels; a refusal comes
    before anything is written."""
    from affine import Affine

    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "a.tif")
    write_rgb(src / "b.tif", seed=1, transform=UTM @ Affine.translation(128, 0))  # the next cut east
    out, polys = tmp_path / "out", tmp_path / "polys"
    argv = ("predict", src, out, NATIVE, "--export", export_dir, "--k", "3", "--vector", polys, "--no-progress")
    assert cli(*argv)[0] == 0
    assert (out / "mosaic.vrt").is_file()
    assert (polys / "a.gpkg").is_file()
    rc, err, _ = cli(*argv)  # its own mosaic and polygons are replaced
    assert rc == 0, err
    for theirs, message in ((out / "mosaic.vrt", "not a mosaic VRT written by segcore"),
                            (polys / "b.gpkg", "not a polygon GeoPackage written by segcore")):
        fresh = tmp_path / "fresh"
        (fresh / "out").mkdir(parents=True)
        (fresh / "polys").mkdir()
        mine = fresh / theirs.parent.name / theirs.name
        mine.write_text("<VRTDataset>a user's own mosaic</VRTDataset>\n")
        rc, err, _ = cli("predict", src, fresh / "out", NATIVE, "--export", export_dir, "--k", "3",
                         "--vector", fresh / "polys", "--no-progress")
        assert rc == 2
        assert message in err
        assert str(mine) in err
        assert mine.read_text() == "<VRTDataset>a user's own mosaic</VRTDataset>\n"
        assert sorted(p.name for p in fresh.rglob("*")) == sorted(["out", "polys", mine.name])  # nothing else
        shutil.rmtree(fresh)
    # A single raster's --vector path that is a user's file is refused too, before the labels are written.
    user = tmp_path / "mine.gpkg"
    user.write_bytes(b"not a geopackage")
    rc, err, _ = cli("predict", src / "a.tif", tmp_path / "one.tif", NATIVE, "--export", export_dir, "--vector", user)
    assert rc == 2
    assert "not a polygon GeoPackage written by segcore" in err
    assert user.read_bytes() == b"not a geopackage"
    assert not (tmp_path / "one.tif").exists()


def test_sigterm_during_predict_leaves_no_temporary_file(tmp_path: Path, export_dir: Path) -> None:
    image = write_rgb(tmp_path / "big.tif", height=4096, width=4096, tiled=True, blockxsize=256, blockysize=256)
    out = tmp_path / "labels.tif"
    proc = start_segcore("predict", image, out, NATIVE, "predict.tile=128", "--export", export_dir, "--no-progress",
                         cwd=tmp_path)
    wait_for(lambda: any(tmp_path.glob(".labels.tif.*.tmp.tif")), proc, "predict opened its temporary output")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


def _sparse(path: Path, side: int, at: tuple[int, int], valid: int = 256) -> Path:
    """A ``side``² nodata raster (tiled, sparse on disk) with one ``valid``² window of data at ``at``."""
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs=CRS,
                       transform=UTM, nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       SPARSE_OK=True, BIGTIFF="YES") as ds:
        ds.write(rng.integers(1, 255, (3, valid, valid)).astype(np.uint8), window=Window(*at, valid, valid))
    return path


def _outside(windows, at, valid) -> bool:
    c, r = at
    return all(col + w <= c or col >= c + valid or row + h <= r or row >= r + valid for col, row, w, h in windows)


def test_sparse_valid_pixels_are_found_on_a_60000_px_raster(tmp_path: Path, export_dir: Path) -> None:
    """60 000² px with one valid 256² window that the evenly spread sample windows miss."""
    from segcore.config import DataConfig

    at = (41_000, 17_000)
    assert _outside(sample_windows(60_000, 60_000, 65536), at, 256)  # the old sampling could only refuse
    path = _sparse(tmp_path / "sparse.tif", 60_000, at)
    fit = fit_raster(load_export(export_dir), path, 6, data_cfg=DataConfig(gsd=0.0))
    assert fit.sample_cells >= 6
    assert not _outside(fit.windows, at, 256)
    assert fit.prototypes.shape[0] == 6


def test_predict_on_a_sparse_raster(tmp_path: Path, export_dir: Path, cli) -> None:
    at = (1_700, 400)  # between the evenly spread sample windows
    assert _outside(sample_windows(2_304, 2_304, 65536), at, 96)
    path = _sparse(tmp_path / "sparse.tif", 2_304, at, valid=96)
    rc, err, _ = cli("predict", path, tmp_path / "labels.tif", NATIVE, "--export", export_dir, "--k", "4",
                     "--no-progress")
    assert rc == 0, err
    with rasterio.open(tmp_path / "labels.tif") as ds:
        labels = ds.read(1)
    inside = labels[at[1]: at[1] + 96, at[0]: at[0] + 96]
    assert (inside > 0).all()
    assert labels.sum() == inside.sum()  # nodata (0) everywhere else


@pytest.mark.parametrize("k", [0, 17, 1000])
def test_k_out_of_range_names_the_range(tmp_path: Path, export_dir: Path, cli, k: int) -> None:
    rc, err, _ = cli("predict", write_rgb(tmp_path / "A.tif"), tmp_path / "o.tif", "--export", export_dir, "--k", k)
    assert rc == 2
    assert f"--k={k}" in err
    assert "1..16" in err
