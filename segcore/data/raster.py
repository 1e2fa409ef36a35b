"""Raster inputs: discovery, band/dtype policy, nodata and valid masks, windowed reads.

Policy (see ``docs/data.md``):

* **Inputs** are files, directories (every ``*.tif``/``*.tiff``/``*.vrt``/``*.jp2``/``*.img`` inside,
  sorted), globs, or a manifest CSV with columns ``image`` and optionally ``label`` and ``split``
  (relative paths are relative to the CSV). Anything GDAL reads is accepted, with or without a CRS;
  a missing CRS is never invented.
* **Bands**: 3-band rasters are read as they are; 4+ bands use the first three unless ``data.bands``
  names three 1-based band indexes; 1-2 bands are a :class:`RasterError`.
* **Dtypes**: ``uint8`` is used as is. Any other dtype is scaled per band to ``0..255`` with the
  ``data.percentile_low``/``data.percentile_high`` percentiles of the valid pixels of a decimated
  (overview) read of the whole raster; the numbers are recorded in the shard manifest.
* **Nodata**: the raster's own nodata value, mask band or alpha band; otherwise ``data.nodata`` when set.
  A pixel is invalid when every selected band is nodata (GDAL's dataset-mask rule) or any band is not
  finite. Every read returns a ``bool (H, W)`` valid mask next to the pixels.
* **Working resolution**: a raster is read on a *working grid* of ``data.gsd`` metres per pixel
  (:func:`working_grid`). The source resolution comes from the CRS (projected units, or degrees at
  the raster's centre latitude) or, for a raster without a CRS, from ``data.source_gsd``. Rasters are
  only ever shrunk (never upsampled), and never below ``data.min_side`` pixels on the shorter side;
  a raster of unknown resolution stays at its own. :class:`RasterInfo` ``width``/``height``/
  ``transform`` describe the working grid, every window is in working pixels, and reads resample on
  the fly (GDAL average for pixels, mode for labels, over the fractional source window), so no whole
  raster is loaded to resample it.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from segcore.config import DataConfig
from segcore.errors import RasterError

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
OVERVIEW_MAX_SIDE = 1024  # longest side of the decimated read used for percentile scaling


@dataclass(frozen=True)
class RasterSource:
    """One input raster: ``image`` path, optional ``label`` path, optional forced ``split`` name."""

    image: str
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class RasterInfo:
    """What the builder and the datasets need to know about an opened input raster.

    ``transform`` is the 6 affine coefficients ``(a, b, c, d, e, f)`` of the working grid or ``None``
    when the raster has no georeferencing; ``scale_low``/``scale_high`` hold one value per selected band
    (``None`` for uint8). ``width``/``height`` are the working grid in pixels (columns/rows);
    ``native_width``/``native_height`` the file's own. ``factor_x``/``factor_y`` are source pixels per
    working pixel (1.0: read as is); ``source_gsd``/``gsd`` the source and working metres per pixel
    (``None`` when unknown).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    bands: tuple[int, int, int]
    crs: str | None
    transform: tuple[float, ...] | None
    nodata: float | None
    scale_low: tuple[float, ...] | None
    scale_high: tuple[float, ...] | None
    native_width: int = 0
    native_height: int = 0
    factor_x: float = 1.0
    factor_y: float = 1.0
    source_gsd: float | None = None
    gsd: float | None = None

    @property
    def resampled(self) -> bool:
        """Whether the working grid differs from the file's own pixel grid."""
        return (self.width, self.height) != (self.native_width or self.width, self.native_height or self.height)

    def native_window(self, window: Window) -> Window:
        """The (fractional) source window that working-grid ``window`` covers."""
        return Window(window.col_off * self.factor_x, window.row_off * self.factor_y,
                      window.width * self.factor_x, window.height * self.factor_y)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    """Open ``path`` read-only; any failure becomes a :class:`RasterError` naming the file."""
    path = str(path)
    if not Path(path).exists():
        raise RasterError(f"{path}: file does not exist; check the path or the manifest row that names it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{path}: not a readable raster ({exc}); re-export it as a GeoTIFF") from exc
    try:
        yield ds
    finally:
        ds.close()


def discover_sources(cfg: DataConfig) -> list[RasterSource]:
    """The input rasters named by ``cfg.manifest`` (wins) or ``cfg.raster_paths``, in a stable order."""
    if cfg.manifest:
        return read_manifest_csv(cfg.manifest)
    sources: list[RasterSource] = []
    for entry in cfg.raster_paths:
        sources += [RasterSource(image=p) for p in _expand(entry)]
    if not sources:
        raise RasterError(
            f"no rasters found in data.raster_paths={list(cfg.raster_paths)}; "
            "pass files, directories or globs, or a manifest CSV (data.manifest)"
        )
    return sources


def _expand(entry: str) -> list[str]:
    path = Path(entry)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()]
        if not files:
            raise RasterError(f"{entry}: directory holds no rasters ({', '.join(RASTER_SUFFIXES)})")
        return sorted(str(p) for p in files)
    if any(ch in entry for ch in "*?["):
        matches = sorted(glob.glob(entry, recursive=True))
        if not matches:
            raise RasterError(f"{entry}: glob matched no files")
        return matches
    return [entry]


def read_manifest_csv(path: str | Path) -> list[RasterSource]:
    """Rows of a CSV with ``image`` and optional ``label``/``split`` columns; paths relative to the CSV."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise RasterError(f"{path}: cannot read the manifest CSV ({exc})") from exc
    if "image" not in table.columns:
        raise RasterError(f"{path}: manifest CSV needs an 'image' column (has {', '.join(table.columns)})")
    base = path.parent

    def resolve(value: str) -> str | None:
        value = value.strip()
        if not value:
            return None
        return str(Path(value) if Path(value).is_absolute() else base / value)

    sources = []
    for row in table.to_dict("records"):
        image = resolve(row["image"])
        if image is None:
            raise RasterError(f"{path}: a row has an empty 'image' value")
        split = (row.get("split") or "").strip() or None
        sources.append(RasterSource(image=image, label=resolve(row.get("label", "")), split=split))
    return sources


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_georeferenced(ds: rasterio.DatasetReader) -> bool:
    """Whether the raster carries a CRS or a non-identity geotransform."""
    return ds.crs is not None or not ds.transform.is_identity


def select_bands(ds: rasterio.DatasetReader, requested: tuple[int, ...]) -> tuple[int, int, int]:
    """The three 1-based band indexes read as RGB (see the module policy); RasterError otherwise."""
    if ds.count < 3:
        raise RasterError(
            f"{ds.name}: has {ds.count} band(s); segcore needs RGB (3 bands, or 4+ with data.bands choosing three)"
        )
    if not requested:
        return (1, 2, 3)
    if len(requested) != 3 or max(requested) > ds.count:
        raise RasterError(f"{ds.name}: data.bands={list(requested)} must name 3 of its {ds.count} bands (1-based)")
    return (requested[0], requested[1], requested[2])


def inspect_raster(path: str | Path, cfg: DataConfig) -> RasterInfo:
    """Open ``path``, apply the band/dtype policy and compute the scaling (decimated read)."""
    with open_raster(path) as ds:
        bands = select_bands(ds, cfg.bands)
        dtype = ds.dtypes[bands[0] - 1]
        if len({ds.dtypes[b - 1] for b in bands}) != 1:
            raise RasterError(f"{path}: bands {bands} have different dtypes {ds.dtypes}; convert to one dtype")
        low = high = None
        if dtype != "uint8":
            low, high = _percentile_scaling(ds, bands, cfg)
        geo = is_georeferenced(ds)
        src_gsd = source_gsd(ds, cfg)
        width, height = working_grid(ds.width, ds.height, src_gsd, cfg)
        fx, fy = ds.width / width, ds.height / height
        transform = ds.transform @ Affine.scale(fx, fy)
        return RasterInfo(
            path=str(path),
            width=width,
            height=height,
            count=ds.count,
            dtype=dtype,
            bands=bands,
            crs=ds.crs.to_wkt() if ds.crs is not None else None,
            transform=tuple(float(v) for v in tuple(transform)[:6]) if geo else None,
            nodata=_nodata_value(ds, cfg),
            scale_low=low,
            scale_high=high,
            native_width=ds.width,
            native_height=ds.height,
            factor_x=fx,
            factor_y=fy,
            source_gsd=src_gsd,
            gsd=src_gsd * max(fx, fy) if src_gsd is not None else None,
        )


def source_gsd(ds: rasterio.DatasetReader, cfg: DataConfig) -> float | None:
    """Metres per pixel of ``ds`` (the larger of the two axes), or ``None`` when it cannot be known.

    A projected CRS gives the pixel size in its linear unit; a geographic CRS gives degrees, turned
    into metres at the raster's centre latitude; a raster without a CRS takes ``data.source_gsd``
    (0: unknown).
    """
    if ds.crs is None:
        return cfg.source_gsd or None
    a, b, _, d, e, _ = tuple(ds.transform)[:6]
    px, py = math.hypot(a, d), math.hypot(b, e)
    if ds.crs.is_geographic:
        lat = (ds.transform @ (ds.width / 2, ds.height / 2))[1]
        metres_per_degree = 111_320.0
        return max(px * metres_per_degree * max(math.cos(math.radians(lat)), 1e-6), py * metres_per_degree)
    try:
        unit = float(ds.crs.linear_units_factor[1])
    except Exception:  # a CRS without linear units: trust the numbers as metres
        unit = 1.0
    return max(px, py) * unit


def working_grid(width: int, height: int, src_gsd: float | None, cfg: DataConfig) -> tuple[int, int]:
    """``(width, height)`` of the working grid of a ``width`` x ``height`` raster (see the module policy)."""
    if not cfg.gsd or not src_gsd:
        return width, height
    factor = max(1.0, cfg.gsd / src_gsd)
    factor = min(factor, max(1.0, min(width, height) / cfg.min_side))
    if factor <= 1.0 + 1e-6:
        return width, height
    return max(1, round(width / factor)), max(1, round(height / factor))


def _nodata_value(ds: rasterio.DatasetReader, cfg: DataConfig) -> float | None:
    if ds.nodata is not None:
        return float(ds.nodata)
    return cfg.nodata


def _uses_mask_band(ds: rasterio.DatasetReader, bands: tuple[int, ...]) -> bool:
    """Whether GDAL holds a real mask for the bands (nodata value, mask band or alpha)."""
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in ds.mask_flag_enums[b - 1] for b in bands)


def _percentile_scaling(
    ds: rasterio.DatasetReader, bands: tuple[int, int, int], cfg: DataConfig
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    factor = max(1, math.ceil(max(ds.width, ds.height) / OVERVIEW_MAX_SIDE))
    shape = (3, max(1, ds.height // factor), max(1, ds.width // factor))
    try:
        data = ds.read(bands, out_shape=shape, resampling=Resampling.nearest).astype(np.float64)
        valid = valid_mask(ds, bands, data, cfg, out_shape=shape)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{ds.name}: read failed while computing scaling ({exc}); the file may be truncated") from exc
    if not valid.any():
        raise RasterError(f"{ds.name}: every pixel is nodata; nothing to scale or tile (remove it from the inputs)")
    lows, highs = [], []
    for band in data:
        values = band[valid]
        lo, hi = np.percentile(values, [cfg.percentile_low, cfg.percentile_high])
        lows.append(float(lo))
        highs.append(float(hi) if hi > lo else float(lo) + 1.0)
    return tuple(lows), tuple(highs)


def valid_mask(
    ds: rasterio.DatasetReader,
    bands: tuple[int, ...],
    data: np.ndarray,
    cfg: DataConfig,
    window: Window | None = None,
    out_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """``bool (H, W)`` valid pixels of ``data`` (``(3, H, W)``, already read from ``window``)."""
    valid = np.ones(data.shape[1:], dtype=bool)
    if _uses_mask_band(ds, bands):
        masks = ds.read_masks(list(bands), window=window, out_shape=out_shape)
        valid = (masks > 0).any(axis=0)
    elif cfg.nodata is not None:
        valid = (data != cfg.nodata).any(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    return valid


def to_uint8(data: np.ndarray, info: RasterInfo) -> np.ndarray:
    """Scale ``(3, H, W)`` raw band values to ``uint8`` with the raster's recorded percentiles."""
    if info.scale_low is None or info.scale_high is None:
        return data.astype(np.uint8, copy=False)
    low = np.asarray(info.scale_low, dtype=np.float32)[:, None, None]
    high = np.asarray(info.scale_high, dtype=np.float32)[:, None, None]
    scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def read_rgb(
    ds: rasterio.DatasetReader, info: RasterInfo, window: Window, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """RGB and valid mask of ``window``, padded where the window leaves the raster.

    Returns ``uint8 (H, W, 3)`` (0 where invalid) and ``bool (H, W)`` with ``H, W`` the window's
    height and width; pixels outside the raster are invalid.
    """
    inner, (top, left) = _clip_window(window, info.width, info.height)
    height, width = int(window.height), int(window.width)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    valid = np.zeros((height, width), dtype=bool)
    if inner is None:
        return rgb, valid
    try:
        if info.resampled:
            src, shape = info.native_window(inner), (3, int(inner.height), int(inner.width))
            data = ds.read(list(info.bands), window=src, out_shape=shape, resampling=Resampling.average)
            inner_valid = valid_mask(ds, info.bands, data, cfg, window=src, out_shape=shape)
        else:
            data = ds.read(list(info.bands), window=inner)
            inner_valid = valid_mask(ds, info.bands, data, cfg, window=inner)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(
            f"{info.path}: read of window {_window_tuple(inner)} failed ({exc}); the file may be corrupt or truncated"
        ) from exc
    pixels = to_uint8(data, info).transpose(1, 2, 0)
    pixels = np.where(inner_valid[..., None], pixels, 0)
    rgb[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    valid[top : top + pixels.shape[0], left : left + pixels.shape[1]] = inner_valid
    return rgb, valid


def read_valid(ds: rasterio.DatasetReader, info: RasterInfo, window: Window, cfg: DataConfig) -> np.ndarray:
    """Only the ``bool (H, W)`` valid mask of ``window`` (cheap when the raster has no nodata)."""
    inner, (top, left) = _clip_window(window, info.width, info.height)
    valid = np.zeros((int(window.height), int(window.width)), dtype=bool)
    if inner is None:
        return valid
    if not _uses_mask_band(ds, info.bands) and cfg.nodata is None and not info.dtype.startswith("float"):
        valid[top : top + int(inner.height), left : left + int(inner.width)] = True
        return valid
    return read_rgb(ds, info, window, cfg)[1]


def read_label(ds: rasterio.DatasetReader, window: Window, info: RasterInfo) -> np.ndarray:
    """Band 1 of a label raster over working-grid ``window`` of image ``info`` as ``int64 (H, W)``.

    0 (ignore) outside the raster; on a resampled grid each working pixel takes the most frequent
    source label (GDAL mode).
    """
    inner, (top, left) = _clip_window(window, info.width, info.height)
    out = np.zeros((int(window.height), int(window.width)), dtype=np.int64)
    if inner is None:
        return out
    try:
        if info.resampled:
            data = ds.read(1, window=info.native_window(inner), out_shape=(int(inner.height), int(inner.width)),
                           resampling=Resampling.mode)
        else:
            data = ds.read(1, window=inner)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{ds.name}: label read failed ({exc}); the file may be corrupt") from exc
    if ds.nodata is not None:
        data = np.where(data == ds.nodata, 0, data)
    out[top : top + data.shape[0], left : left + data.shape[1]] = data
    return out


def check_label(label_path: str, info: RasterInfo) -> None:
    """RasterError unless the label raster is 1+ integer band(s) on the image's grid, CRS and transform."""
    with open_raster(label_path) as ds:
        native = (info.native_width or info.width, info.native_height or info.height)
        if (ds.width, ds.height) != native:
            raise RasterError(
                f"{label_path}: label is {ds.width}x{ds.height} px but its image {info.path} is "
                f"{native[0]}x{native[1]}; labels must be on the image's pixel grid"
            )
        crs = ds.crs.to_wkt() if ds.crs is not None else None
        if crs != info.crs:
            raise RasterError(
                f"{label_path}: label CRS {ds.crs} differs from image {info.path} CRS "
                f"{info.crs and rasterio.crs.CRS.from_wkt(info.crs)}; reproject the label onto the image"
            )
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            raise RasterError(f"{label_path}: label dtype {ds.dtypes[0]} is not integer class ids")
    from segcore.georef import check_label_grid

    check_label_grid(info.path, label_path)  # same size and CRS is not enough: the transforms must agree too


def window_transform(window: Window, transform: tuple[float, ...]) -> Affine:
    """Affine transform of ``window`` inside a raster with ``transform`` (as ``rasterio.windows.transform``)."""
    return Affine(*transform[:6]) @ Affine.translation(int(window.col_off), int(window.row_off))


def _clip_window(window: Window, width: int, height: int) -> tuple[Window | None, tuple[int, int]]:
    """The part of ``window`` inside a ``width`` x ``height`` raster and its offset inside ``window``."""
    col0, row0 = int(window.col_off), int(window.row_off)
    col1, row1 = col0 + int(window.width), row0 + int(window.height)
    c0, r0, c1, r1 = max(col0, 0), max(row0, 0), min(col1, width), min(row1, height)
    if c1 <= c0 or r1 <= r0:
        return None, (0, 0)
    return Window(c0, r0, c1 - c0, r1 - r0), (r0 - row0, c0 - col0)


def _window_tuple(window: Window) -> tuple[int, int, int, int]:
    return (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
