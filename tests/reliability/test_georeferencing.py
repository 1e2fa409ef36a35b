"""Rule 5: georeferencing is checked, not assumed. A label raster with the image's size and CRS but
another transform is refused, naming both transforms; float noise within the tolerance is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from affine import Affine

from segcore.checks import GRID_TOLERANCE_PX, check_label_grid
from segcore.errors import RasterError
from tests.reliability.conftest import UTM, write_label, write_rgb

SHIFTED = Affine(UTM.a, UTM.b, UTM.c + 100_000.0, UTM.d, UTM.e, UTM.f)  # same pixel size, 100 km east


def _pair(tmp_path: Path, label_transform: Affine) -> Path:
    write_rgb(tmp_path / "images" / "a.tif", height=128, width=128)
    write_label(tmp_path / "labels" / "a.tif", height=128, width=128, transform=label_transform)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,label\nimages/a.tif,labels/a.tif\n")
    return manifest


def test_shifted_label_is_refused_by_build_shards(tmp_path: Path, cli) -> None:
    manifest = _pair(tmp_path, SHIFTED)
    rc, err, _ = cli("build-shards", "--manifest", manifest, "--processed-root", tmp_path / "p", "--tile-size", "64",
                     "--no-progress")
    assert rc == 2
    assert "Traceback" not in err
    assert "labels/a.tif" in err
    assert "500000" in err  # the image's origin ...
    assert "600000" in err  # ... and the label's, 100 km away
    assert not (tmp_path / "p" / "default").exists()


def test_shifted_label_is_refused_by_eval(tmp_path: Path, cli) -> None:
    manifest = _pair(tmp_path, SHIFTED)
    rc, err, _ = cli("eval", "--baseline", "kmeans", "--data", manifest, "--out", tmp_path / "e")
    assert rc == 2
    assert "does not match image" in err
    assert not (tmp_path / "e").exists()


def test_label_within_tolerance_is_accepted(tmp_path: Path, cli) -> None:
    noisy = Affine(UTM.a, UTM.b, UTM.c + 1e-6, UTM.d, UTM.e, UTM.f - 1e-6)  # float noise of a re-export
    manifest = _pair(tmp_path, noisy)
    rc, err, _ = cli("build-shards", "--manifest", manifest, "--processed-root", tmp_path / "p", "--tile-size", "64",
                     "--no-progress", "data.gsd=0")
    assert rc == 0, err
    assert (tmp_path / "p" / "default" / "manifest.json").is_file()


@pytest.mark.parametrize(("dx", "ok"), [(0.0, True), (GRID_TOLERANCE_PX / 2, True), (0.5, False), (1.0, False)])
def test_sub_pixel_shifts(tmp_path: Path, dx: float, ok: bool) -> None:
    image = write_rgb(tmp_path / "a.tif")
    label = write_label(tmp_path / "l.tif", transform=Affine(UTM.a, 0, UTM.c + dx * UTM.a, 0, UTM.e, UTM.f))
    if ok:
        check_label_grid(image, label)
    else:
        with pytest.raises(RasterError, match="does not match image"):
            check_label_grid(image, label)


def test_other_pixel_size_is_refused(tmp_path: Path) -> None:
    image = write_rgb(tmp_path / "a.tif")
    label = write_label(tmp_path / "l.tif", transform=Affine(UTM.a * 2, 0, UTM.c, 0, UTM.e * 2, UTM.f))
    with pytest.raises(RasterError, match=r"transform \(1, 0, 500000"):
        check_label_grid(image, label)
