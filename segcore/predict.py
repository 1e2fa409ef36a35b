"""Tiled prediction of a raster of any size with the numpy runtime (no torch).

``predict_raster(src, dst, model, k)`` works in two passes over windowed reads:

1. **Fit, once per raster.** A grid of sample windows spread over the whole raster (at most
   ``sample_pixels`` stride-4 cells in all; the whole raster when it is that small) is embedded
   *jointly*: GroupNorm statistics are measured over all sample windows together and frozen, then
   the valid embeddings fit one set of ``k`` prototypes. Every tile uses these statistics and
   prototypes, so cluster ids agree across tiles and every norm is a per-pixel affine map.
2. **Assign, tile by tile.** Tile origins are multiples of 4 and each tile is read with a halo of
   ``max(halo, receptive radius)`` pixels (rounded up to a multiple of 4), clipped to the raster.
   With frozen statistics the network is translation-equivariant on the stride-4 grid, and a
   label depends on input pixels within the receptive radius only, so the tiled output equals the
   output of a single tile covering the raster, pixel for pixel (``tests/test_predict.py``).

Output: ``uint8`` GeoTIFF, one band, ``0`` = nodata, clusters ``1..k``; CRS and transform copied
from the input (a raster without them stays without), written to a temp name then renamed.
Memory depends on ``tile`` and ``sample_pixels``, not on the raster size (``docs/benchmarks.md``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from segcore.config import DataConfig
from segcore.data.raster import inspect_raster, open_raster, read_rgb
from segcore.errors import RasterError
from segcore.runtime import STRIDE, NormStats, NumpyModel

log = logging.getLogger(__name__)

SAMPLE_SIDE = 256  # side of one sample window in pixels


@dataclass(frozen=True)
class RasterFit:
    """What pass 1 produced: frozen norm statistics and ``prototypes (k, E)`` for one raster."""

    stats: NormStats
    prototypes: np.ndarray
    windows: list[tuple[int, int, int, int]]
    sample_cells: int


@dataclass(frozen=True)
class PredictResult:
    """Summary of one :func:`predict_raster` call (sizes in pixels)."""

    path: Path
    width: int
    height: int
    k: int
    tiles: int
    tile: int
    halo: int
    sample_cells: int


def _round4(n: int) -> int:
    return STRIDE * math.ceil(n / STRIDE)


def sample_windows(width: int, height: int, sample_pixels: int, side: int = SAMPLE_SIDE
                   ) -> list[tuple[int, int, int, int]]:
    """``(col, row, width, height)`` windows spread evenly over the raster, origins multiples of 4.

    The windows hold about ``sample_pixels`` stride-4 cells in all; a raster with no more than
    ``16 * sample_pixels`` pixels is one window covering it.
    """
    budget = STRIDE * STRIDE * sample_pixels
    if width * height <= budget:
        return [(0, 0, width, height)]
    sw, sh = min(side, width), min(side, height)
    n = max(1, math.ceil(budget / (sw * sh)))
    gy = max(1, min(round(math.sqrt(n * height / width)), height // sh))
    gx = max(1, min(math.ceil(n / gy), width // sw))

    def origins(extent: int, size: int, count: int) -> list[int]:
        if count == 1:
            return [(extent - size) // 2 // STRIDE * STRIDE]
        return [int(i * (extent - size) / (count - 1)) // STRIDE * STRIDE for i in range(count)]

    return [(c, r, sw, sh) for r in origins(height, sh, gy) for c in origins(width, sw, gx)]


def fit_raster(model: NumpyModel, path: str | Path, k: int, sample_pixels: int = 65536,
               data_cfg: DataConfig | None = None) -> RasterFit:
    """Pass 1 of :func:`predict_raster`: frozen norm statistics and ``k`` prototypes for ``path``."""
    cfg = data_cfg or DataConfig()
    info = inspect_raster(path, cfg)
    windows = sample_windows(info.width, info.height, sample_pixels)
    images, valids = [], []
    with open_raster(path) as ds:
        for col, row, w, h in windows:
            rgb, valid = read_rgb(ds, info, Window(col, row, w, h), cfg)
            images.append(rgb)
            valids.append(valid[::STRIDE, ::STRIDE])
    embeds, stats = model.embed_joint(images)
    if len(windows) == 1:  # the whole raster: the same fit as NumpyModel.segment
        protos = model.fit_prototypes(embeds[0], k, valids[0])
        cells = int(valids[0].sum())
    else:
        pairs = zip(embeds, valids, strict=True)
        sample = np.concatenate([z.reshape(z.shape[0], -1).T[v.reshape(-1)] for z, v in pairs])
        step = max(1, math.ceil(len(sample) / sample_pixels))
        sample = sample[::step]
        cells = len(sample)
        if cells < k:
            raise RasterError(f"{path}: only {cells} valid pixels in the sample windows, fewer than k={k}; "
                              "the raster is (almost) all nodata")
        protos = model.fit_prototypes(sample, k)
    if cells == 0:
        raise RasterError(f"{path}: every sampled pixel is nodata; nothing to predict")
    return RasterFit(stats, protos, windows, cells)


def tiles(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core tiles ``(col, row, width, height)`` covering the raster; ``tile`` a multiple of 4."""
    return [(c, r, min(tile, width - c), min(tile, height - r))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def _profile(src: rasterio.DatasetReader) -> dict:
    profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    if src.crs is not None or not src.transform.is_identity:
        profile.update(crs=src.crs, transform=src.transform)
    return profile


def predict_raster(
    src: str | Path,
    dst: str | Path,
    model: NumpyModel,
    k: int | None = None,
    *,
    tile: int = 1024,
    halo: int = 32,
    sample_pixels: int = 65536,
    data_cfg: DataConfig | None = None,
    progress: bool = True,
) -> PredictResult:
    """Segment raster ``src`` into a ``uint8`` label GeoTIFF ``dst`` (0 nodata, clusters 1..k).

    Args:
        model: a loaded export (:func:`segcore.runtime.load_export`).
        k: clusters (default ``model.max_k``; at most 255).
        tile: core tile side in pixels (rounded up to a multiple of 4).
        halo: pixels read around each tile; raised to the model's receptive radius when smaller.
        sample_pixels: stride-4 embedding cells sampled over the raster to fit the prototypes.
        data_cfg: band/nodata policy (``segcore.config.DataConfig``); defaults otherwise.
    """
    from tqdm import tqdm

    cfg = data_cfg or DataConfig()
    k = model.max_k if k is None else int(k)
    if not 1 <= k <= min(model.max_k, 255):
        raise ValueError(f"k={k} must be within 1..{min(model.max_k, 255)}")
    tile = _round4(max(tile, STRIDE))
    halo = _round4(max(halo, model.receptive_radius()))
    fit = fit_raster(model, src, k, sample_pixels, cfg)
    info = inspect_raster(src, cfg)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp.tif")
    cores = tiles(info.width, info.height, tile)
    try:
        with open_raster(src) as ds, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **_profile(ds)) as out:
                for col, row, w, h in tqdm(cores, desc="predict", unit="tile", disable=not progress):
                    out.write(_predict_tile(model, ds, info, cfg, fit, (col, row, w, h), halo), 1,
                              window=Window(col, row, w, h))
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%dx%d px, %d tiles of %d px, halo %d)", dst, info.width, info.height, len(cores), tile, halo)
    return PredictResult(dst, info.width, info.height, k, len(cores), tile, halo, fit.sample_cells)


def _predict_tile(model: NumpyModel, ds, info, cfg: DataConfig, fit: RasterFit,
                  core: tuple[int, int, int, int], halo: int) -> np.ndarray:
    """``uint8 (h, w)`` labels of one core tile, computed on the tile plus its halo."""
    col, row, w, h = core
    c0, r0 = max(0, col - halo), max(0, row - halo)
    c1, r1 = min(info.width, col + w + halo), min(info.height, row + h + halo)
    rgb, valid = read_rgb(ds, info, Window(c0, r0, c1 - c0, r1 - r0), cfg)
    z = model.embed(rgb, fit.stats)
    labels = model.assign(z, fit.prototypes, (r1 - r0, c1 - c0))[1]
    core_labels = labels[row - r0 : row - r0 + h, col - c0 : col - c0 + w] + 1
    core_valid = valid[row - r0 : row - r0 + h, col - c0 : col - c0 + w]
    return np.where(core_valid, core_labels, 0).astype(np.uint8)
