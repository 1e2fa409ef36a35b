"""Polygons of a label raster, block by block, dissolved across block seams, written to a GeoPackage.

:func:`polygonize` turns a ``uint8`` label GeoTIFF (0 = nodata, classes ``1..k``) into one polygon
per 4-connected region of a class, with fields ``class_id``, ``class_name`` and ``area`` (square
map units of the raster's CRS; square pixels when it has none), in the raster's CRS, written with
pyogrio (GDAL/OGR). Memory is bounded by the block size, not the raster:

1. **Small islands** (optional, ``min_area`` in square map units): a 4-connected region smaller
   than ``min_area`` takes the class of the adjacent region of at least ``min_area`` it shares the
   longest border with (ties: the lower class id). Regions that touch only nodata or other small
   regions stay as they are. This runs per block with a halo of ``2 * n + 2`` pixels (``n`` =
   ``min_area`` in pixels): a small region touching the block has fewer than ``n`` pixels, so it
   and its neighbours' sizes are seen whole, and every pixel gets the same answer as on the whole
   raster. The merged labels go to a temporary GeoTIFF.
2. **Polygons per block** (rasterio ``features.shapes``, 4-connectivity), in *pixel* coordinates so
   coordinates on the seams are exact integers. A polygon that does not touch an inner block seam
   is final and written in the next batch; the others wait.
3. **Dissolve**: the waiting polygons are unioned per class (shapely) and split into their parts, so
   a region crossing seams comes out as one polygon, exactly as without blocks.
4. Pixel coordinates go through the raster's affine transform; ``simplify`` (map units, 0 = off)
   simplifies each polygon on its own (topology-preserving per polygon, so neighbours may no
   longer share exact edges).
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
import shapely
from affine import Affine
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage

from segcore.errors import RasterError
from segcore.safety import POLYGONS_TAG_VALUE, PREDICT_TAG, claim_output_file

log = logging.getLogger(__name__)

FIELDS = ("class_id", "class_name", "area")
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
BATCH = 20000


@dataclass(frozen=True)
class VectorResult:
    """Summary of one :func:`polygonize` call."""

    path: Path
    layer: str
    polygons: int
    min_pixels: int
    blocks: int


def pixel_area(transform: Affine) -> float:
    """Area of one pixel in square map units (1 for an identity transform)."""
    return abs(transform.a * transform.e - transform.b * transform.d)


def merge_small(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Labels with 4-connected regions under ``min_pixels`` merged into their longest-border large neighbour.

    ``labels``: ``uint8 (H, W)``, 0 = nodata (never changed, never a target). Returns a new array.
    """
    out = labels.copy()
    if min_pixels <= 1:
        return out
    comp = np.zeros(labels.shape, np.int64)
    n = 0
    for cls in np.unique(labels[labels > 0]):
        lab, count = ndimage.label(labels == cls, structure=FOUR)
        comp[lab > 0] = lab[lab > 0] + n
        n += count
    sizes = np.bincount(comp.reshape(-1), minlength=n + 1)
    small = sizes < min_pixels
    small[0] = False
    if not small.any():
        return out
    # Border pairs (small region, class of a large neighbour pixel), counted over the 4 directions.
    keys = []
    pairs = ((comp[:, :-1], comp[:, 1:], labels[:, 1:]), (comp[:, 1:], comp[:, :-1], labels[:, :-1]),
             (comp[:-1], comp[1:], labels[1:]), (comp[1:], comp[:-1], labels[:-1]))
    for a, b, b_label in pairs:  # pixel a, its neighbour b, and b's class
        sel = small[a] & (b > 0) & ~small[b]
        keys.append(a[sel] * 256 + b_label[sel].astype(np.int64))
    keys = np.concatenate(keys)
    if keys.size == 0:
        return out
    uniq, counts = np.unique(keys, return_counts=True)
    region, cls = uniq // 256, uniq % 256
    # Per region: the class with most border pixels, ties to the lower class id (uniq is sorted).
    order = np.lexsort((cls, -counts, region))
    first = np.ones(len(order), bool)
    first[1:] = region[order][1:] != region[order][:-1]
    target = np.zeros(n + 1, np.int64)
    target[region[order][first]] = cls[order][first]
    change = target[comp] > 0
    out[change] = target[comp][change]
    return out


def merge_small_raster(src: str | Path, dst: str | Path, min_pixels: int, block: int = 1024) -> Path:
    """:func:`merge_small` over a whole label raster, block by block with a ``2n + 2`` halo, into ``dst``."""
    halo = 2 * min_pixels + 2
    with rasterio.open(src) as ds:
        profile = ds.profile | {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256,
                                "compress": "deflate"}
        with rasterio.open(dst, "w", **profile) as out:
            for col, row, w, h in blocks(ds.width, ds.height, block):
                c0, r0 = max(0, col - halo), max(0, row - halo)
                c1, r1 = min(ds.width, col + w + halo), min(ds.height, row + h + halo)
                data = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
                merged = merge_small(data, min_pixels)
                out.write(merged[row - r0 : row - r0 + h, col - c0 : col - c0 + w], 1, window=Window(col, row, w, h))
    return Path(dst)


def blocks(width: int, height: int, block: int) -> list[tuple[int, int, int, int]]:
    """``(col, row, w, h)`` blocks covering the raster, row-major."""
    return [(c, r, min(block, width - c), min(block, height - r))
            for r in range(0, height, block) for c in range(0, width, block)]


def _touches_seam(poly: shapely.Polygon, col: int, row: int, w: int, h: int, width: int, height: int) -> bool:
    minx, miny, maxx, maxy = poly.bounds
    return ((minx <= col and col > 0) or (maxx >= col + w and col + w < width)
            or (miny <= row and row > 0) or (maxy >= row + h and row + h < height))


class _Writer:
    """Batched, appending pyogrio writer of (class id, polygon in map coordinates) records."""

    def __init__(self, path: Path, layer: str, crs_wkt: str | None, names: list[str], transform: Affine,
                 simplify: float):
        self.path, self.layer, self.crs, self.names = path, layer, crs_wkt, names
        self.matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
        self.simplify, self.batch, self.count, self.started = simplify, [], 0, False

    def add(self, cls: int, poly_px: shapely.Polygon) -> None:
        self.batch.append((cls, poly_px))
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write the batch (on ``final``, also an empty layer when nothing was written yet)."""
        import pyogrio.raw

        if not self.batch and (self.started or not final):
            return
        cls = np.array([c for c, _ in self.batch], np.int32)
        geoms = shapely.transform(np.array([p for _, p in self.batch] or [], dtype=object), self._to_map)
        if self.simplify > 0:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
        fields = [cls, np.array([self.names[c - 1] for c in cls], dtype=object), shapely.area(geoms).astype(np.float64)]
        with warnings.catch_warnings():  # a raster without a CRS gives a layer without one: never invent it
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            pyogrio.raw.write(str(self.path), shapely.to_wkb(geoms), fields, list(FIELDS), layer=self.layer,
                              driver="GPKG", geometry_type="Polygon", crs=self.crs, append=self.started,
                              promote_to_multi=False,
                              dataset_metadata=None if self.started else {PREDICT_TAG: POLYGONS_TAG_VALUE})
        self.count += len(self.batch)
        self.batch, self.started = [], True

    def _to_map(self, xy: np.ndarray) -> np.ndarray:
        a, b, d, e, c, f = self.matrix
        return np.stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f], axis=1)


def polygonize(
    labels: str | Path,
    out: str | Path,
    class_names: list[str],
    *,
    min_area: float = 0.0,
    simplify: float = 0.0,
    block: int = 1024,
    layer: str = "classes",
) -> VectorResult:
    """Polygons of label raster ``labels`` into GeoPackage ``out`` (replaced atomically; an existing
    ``out`` that segcore did not write is refused, see :func:`segcore.safety.claim_output_file`).

    Args:
        class_names: names of classes ``1..k`` (``class_name`` field); ids above ``k`` are an error.
        min_area: regions smaller than this (square map units) are merged into a neighbour (0: off).
        simplify: simplification tolerance in map units (0: off).
        block: block side in pixels (memory is bounded by it, plus the polygons waiting on seams).
    """
    out = claim_output_file(out, inputs=[labels], what="polygons", kind="polygons")
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # no georeferencing: pixel coordinates, no CRS (never invented)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return _polygonize(Path(labels), out, class_names, min_area, simplify, block, layer)


def _polygonize(labels: Path, out: Path, class_names: list[str], min_area: float, simplify: float, block: int,
                layer: str) -> VectorResult:
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.gpkg")
    merged = out.with_name(f".{out.stem}.{os.getpid()}.merged.tif")
    with rasterio.open(labels) as ds:
        transform, crs, width, height = ds.transform, ds.crs, ds.width, ds.height
    min_pixels = math.ceil(min_area / pixel_area(transform)) if min_area > 0 else 0
    tmp.unlink(missing_ok=True)
    try:
        src = merge_small_raster(labels, merged, min_pixels, block) if min_pixels > 1 else Path(labels)
        writer = _Writer(tmp, layer, crs.to_wkt() if crs is not None else None, class_names, transform, simplify)
        waiting: dict[int, list[shapely.Polygon]] = {}
        cells = blocks(width, height, block)
        with rasterio.open(src) as ds:
            for col, row, w, h in cells:
                data = ds.read(1, window=Window(col, row, w, h))
                if data.max(initial=0) > len(class_names):
                    raise RasterError(f"{labels}: class id {int(data.max())} but only {len(class_names)} class "
                                      "names; pass one name per class")
                for geom, value in features.shapes(data, mask=data > 0, connectivity=4,
                                                   transform=Affine.translation(col, row)):
                    poly = shapely.geometry.shape(geom)
                    if _touches_seam(poly, col, row, w, h, width, height):
                        waiting.setdefault(int(value), []).append(poly)
                    else:
                        writer.add(int(value), poly)
        for cls in sorted(waiting):
            # simplify(0) drops the collinear vertices the seams leave behind; the shape is unchanged.
            for part in shapely.get_parts(shapely.simplify(shapely.union_all(waiting.pop(cls)), 0.0)):
                writer.add(cls, part)
        writer.flush(final=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        merged.unlink(missing_ok=True)
    log.info("wrote %d polygons to %s (layer %s, %d blocks)", writer.count, out, layer, len(cells))
    return VectorResult(out, layer, writer.count, min_pixels, len(cells))
