"""Small GeoTIFFs written with rasterio for the data tests: CRS, nodata, labels, odd dtypes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.windows
from affine import Affine

from segcore.config import Config

CRS = "EPSG:32633"
SHARED_DATA = Path(os.environ.get("SEGCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "../shared/data"))


def write_tif(path: Path, data: np.ndarray, crs: str | None = CRS, transform=None, nodata=None, **extra) -> Path:
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF; default transform: 10 m pixels at a UTM origin."""
    count, height, width = data.shape
    if transform is None and crs is not None:
        transform = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A blocky RGB scene ``uint8 (3, H, W)`` and its labels ``uint8 (1, H, W)`` (classes 1..4)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 5, size=(height // 40 + 1, width // 40 + 1))
    labels = np.kron(coarse, np.ones((40, 40), dtype=np.int64))[:height, :width].astype(np.uint8)
    palette = np.array([[0, 0, 0], [200, 60, 40], [40, 160, 60], [60, 80, 200], [220, 220, 120]], dtype=np.int16)
    rgb = palette[labels].transpose(2, 0, 1) + rng.integers(-20, 21, size=(3, height, width))
    return np.clip(rgb, 1, 255).astype(np.uint8), labels[None]


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``make_scene(name, h, w, seed, border=0)``: image + label GeoTIFFs; ``border`` px of nodata=0."""

    def make(name: str, height: int = 260, width: int = 300, seed: int = 0, border: int = 0) -> tuple[Path, Path]:
        rgb, labels = scene(height, width, seed)
        if border:
            rgb[:, :border, :] = 0
            rgb[:, :, :border] = 0
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        image = write_tif(tmp_path / "images" / f"{name}.tif", rgb, nodata=0 if border else None)
        label = write_tif(tmp_path / "labels" / f"{name}.tif", labels)
        return image, label

    return make


@pytest.fixture
def labelled_dir(make_scene, tmp_path: Path) -> Path:
    """Three labelled 260x300 scenes and ``manifest.csv`` pairing them (one with a nodata border)."""
    rows = ["image,label"]
    for i, name in enumerate(["alpha", "bravo", "charlie"]):
        make_scene(name, seed=i, border=40 if name == "bravo" else 0)
        rows.append(f"images/{name}.tif,labels/{name}.tif")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def make_cfg(out: Path, **data) -> Config:
    """A small-tile build config writing under ``out``; ``data`` keys override ``[data]``."""
    values = {
        "processed_root": str(out),
        "dataset": "unit",
        "tile_size": 128,
        "tiles_per_shard": 4,
        "slic_region_size": 16,
        "min_valid": 0.5,
    }
    values.update(data)
    return Config().replace(**{f"data.{k}": v for k, v in values.items()})


def rio_window_transform(window, transform):
    """``rasterio.windows.transform`` (the reference), quiet about affine's ``*`` deprecation inside it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return rasterio.windows.transform(window, transform)


def snapshot(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
