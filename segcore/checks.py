"""Checks of user-supplied values and inputs, each failing with a message that names the value and the fix.

Argument ranges (seeds, ``k``), file names that are not valid UTF-8, label rasters whose
georeferencing does not match their image (:mod:`segcore.georef`), and a fallback that finds the valid pixels of a
mostly-nodata raster when evenly spread sample windows miss them (``docs/reliability.md``).
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from segcore.errors import ConfigError, RasterError
from segcore.georef import GRID_TOLERANCE_PX, check_label_grid

__all__ = [
    "GRID_TOLERANCE_PX",
    "check_k",
    "check_label_grid",
    "check_seed",
    "check_utf8",
    "seed_arg",
    "utf8_problem",
    "valid_sample_windows",
]

SEED_MAX = 2**32 - 1  # numpy's and torch's seeding both accept 0..2**32-1
SCAN_MAX_SIDE = 2048  # longest side of the decimated valid-mask scan of the sparse-sampling fallback


def check_seed(value: int, name: str = "--seed") -> int:
    """``value`` when it is a usable seed (``0..2**32-1``), else :class:`ConfigError` naming ``name``."""
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name}={value} is out of range: seeds are integers in 0..{SEED_MAX}")
    return value


def seed_arg(text: str) -> int:
    """``argparse`` type of a ``--seed`` flag: an integer in ``0..2**32-1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; seeds are integers in 0..{SEED_MAX}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range: seeds are integers in 0..{SEED_MAX}")
    return value


def positive_int_arg(text: str) -> int:
    """``argparse`` type of a count: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def check_k(k: int | None, max_k: int, name: str = "--k") -> int:
    """The cluster count to use: ``max_k`` when ``k`` is None, else ``k`` if within ``1..min(max_k, 255)``."""
    top = min(max_k, 255)
    if k is None:
        return top
    if not 1 <= int(k) <= top:
        raise ConfigError(f"{name}={k} is out of range: this export segments into 1..{top} clusters "
                          f"(its max_k is {max_k}, and labels are uint8)")
    return int(k)


def utf8_problem(path: str | os.PathLike) -> str | None:
    """``None`` when ``path`` is valid UTF-8, else a one-line description with the fix."""
    text = os.fsdecode(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")  # the raw bytes, e.g. sc\xe8ne.tif
        return (f"{shown}: the file name is not valid UTF-8 and cannot be recorded in manifests, CSV or MLflow; "
                "rename the file (e.g. convmv -f latin1 -t utf8)")
    return None


def check_utf8(path: str | os.PathLike, error: type[Exception] = RasterError) -> None:
    """Raise ``error`` when ``path`` is not valid UTF-8 (see :func:`utf8_problem`)."""
    problem = utf8_problem(path)
    if problem is not None:
        raise error(problem)


def valid_sample_windows(ds, info, cfg, side: int, count: int, stride: int = 4) -> list[tuple[int, int, int, int]]:
    """Windows ``(col, row, w, h)`` of the working grid centred on valid pixels found by a coarse scan.

    The fallback of prediction's sampling for rasters whose valid pixels are few and sparse: the
    valid mask is read decimated (at most :data:`SCAN_MAX_SIDE` px on the long side; GDAL uses
    overviews when the file has them), and up to ``count`` valid scan cells, evenly spread over all
    valid ones, become windows of ``side`` px (origins multiples of ``stride``). Empty when the
    scan finds no valid pixel. ``ds`` is the open raster, ``info`` its
    :class:`~segcore.data.raster.RasterInfo`, ``cfg`` its :class:`~segcore.config.DataConfig`.
    """
    from rasterio.enums import Resampling

    from segcore.data.raster import _uses_mask_band, valid_mask

    scale = max(1.0, max(ds.width, ds.height) / SCAN_MAX_SIDE)
    shape = (3, max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    if _uses_mask_band(ds, info.bands):  # nodata, mask or alpha band: the mask alone says what is valid
        valid = (ds.read_masks(list(info.bands), out_shape=shape) > 0).any(axis=0)
    else:
        data = ds.read(list(info.bands), out_shape=shape, resampling=Resampling.nearest)
        valid = valid_mask(ds, info.bands, data, cfg, out_shape=shape)
    rows, cols = np.nonzero(valid)
    if len(rows) == 0:
        return []
    pick = np.unique(np.linspace(0, len(rows) - 1, num=min(count, len(rows))).round().astype(int))
    sw, sh = min(side, info.width), min(side, info.height)
    windows = set()
    for r, c in zip(rows[pick], cols[pick], strict=True):
        x = (c + 0.5) * info.width / shape[2]
        y = (r + 0.5) * info.height / shape[1]
        col = min(max(0, int(x - sw / 2)), info.width - sw) // stride * stride
        row = min(max(0, int(y - sh / 2)), info.height - sh) // stride * stride
        windows.add((col, row, sw, sh))
    return sorted(windows)


def sample_count(width: int, height: int, sample_pixels: int, side: int, stride: int = 4) -> int:
    """How many ``side`` px windows hold about ``sample_pixels`` stride cells (at least 1)."""
    sw, sh = min(side, width), min(side, height)
    return max(1, math.ceil(stride * stride * sample_pixels / (sw * sh)))
