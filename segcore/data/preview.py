"""A picture of what shard building made: a tile with its SLIC boundaries drawn on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def slic_overlay(rgb: np.ndarray, slic: np.ndarray, colour: tuple[int, int, int] = (255, 230, 0)) -> np.ndarray:
    """``rgb uint8 (H, W, 3)`` with the boundaries of ``slic int (H, W)`` painted in ``colour``."""
    out = rgb.copy()
    edge = np.zeros(slic.shape, dtype=bool)
    edge[:, 1:] |= slic[:, 1:] != slic[:, :-1]
    edge[1:, :] |= slic[1:, :] != slic[:-1, :]
    out[edge] = colour
    return out


def write_shard_preview(root: str | Path, out_png: str | Path) -> Path | None:
    """Write ``image | image with SLIC boundaries`` of the first tile of a shard dataset.

    Returns the PNG path, or None when the dataset holds no tile with superpixels.
    """
    import rasterio
    from PIL import Image

    rgb_files = sorted(Path(root).glob("*/shard-*/*.rgb.tif"))
    if not rgb_files:
        return None
    rgb_path = rgb_files[0]
    slic_path = rgb_path.with_name(rgb_path.name.replace(".rgb.tif", ".slic.tif"))
    if not slic_path.exists():
        return None
    with rasterio.open(rgb_path) as ds:
        rgb = ds.read().transpose(1, 2, 0)
    with rasterio.open(slic_path) as ds:
        slic = ds.read(1)
    panel = np.concatenate([rgb, np.full((rgb.shape[0], 8, 3), 255, np.uint8), slic_overlay(rgb, slic)], axis=1)
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    Image.fromarray(panel).save(tmp)
    os.replace(tmp, out_png)
    return out_png
