"""Planning a shard build: which tiles of which rasters go to which split and shard.

A plan is computed before any pixel is written, so shard contents are fixed up front: the builder
(:mod:`segcore.data.shards`) can then write shards in any order, in any process, and resume.

Tiling: offsets along each axis step by ``tile_size - tile_overlap``; the last tile is **shifted
inward** to end at the raster edge (it overlaps its neighbour more). A raster side shorter than a
tile gives one tile **as long as that side** (a 300 x 300 chip is one 300 x 300 tile), so small
rasters are never refused for padding; like every tile it is kept only when its valid fraction is
at least ``data.min_valid``. Sizes and offsets are in pixels of the working grid (``data.gsd``).

Splits (``docs/data.md``): a manifest ``split`` value wins. Otherwise units (whole rasters, or
``split_block_tiles``-tile square blocks with ``split_policy=block``) are ordered by the sha256 of
``"<file name>#<block>"`` and the first ``round(n * val_fraction)`` go to ``val``. When any raster has a
label, only labelled units are candidates for ``val`` and unlabelled ones always train; when none
has, all units are candidates. With blocks, a tile reaching into a block of another split is skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.windows import Window

from segcore import __version__
from segcore.config import Config, DataConfig
from segcore.data.raster import (
    RasterInfo,
    RasterSource,
    check_label,
    inspect_raster,
    open_raster,
    read_valid,
    sha256_file,
)
from segcore.errors import ConfigError, RasterError

FORMAT_VERSION = 1
SKIP_LOW_VALID = "valid fraction below data.min_valid"
SKIP_SPLIT_EDGE = "reaches into a block of another split"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Keys whose value changes what the builder writes (num_workers only changes how).
OUTPUT_KEYS = (
    "tile_size", "tile_overlap", "tiles_per_shard", "min_valid", "bands", "nodata", "percentile_low",
    "percentile_high", "slic_region_size", "slic_compactness", "shard_slic", "split_policy",
    "split_block_tiles", "val_fraction",
)  # fmt: skip


@dataclass(frozen=True)
class TileSpec:
    """One tile to write: source raster (index into ``BuildPlan.rasters``), pixel window, split."""

    raster: int
    col_off: int
    row_off: int
    width: int
    height: int
    valid_fraction: float
    split: str
    tile_id: str

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class RasterPlan:
    """An input raster that passed validation, with its hashes and tile counts."""

    source: RasterSource
    info: RasterInfo
    sha256: str
    label_sha256: str | None
    tiles_total: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardSpec:
    """The tiles of one shard directory ``<split>/shard-<index:05d>`` and its content key."""

    split: str
    index: int
    tiles: tuple[TileSpec, ...]
    build_key: str

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass(frozen=True)
class BuildPlan:
    """Everything needed to write every shard; small and picklable (sent to worker processes)."""

    cfg: Config
    root: Path  # <processed_root>/<dataset>
    staging: Path  # <processed_root>/.staging-<dataset>
    rasters: tuple[RasterPlan, ...]
    shards: tuple[ShardSpec, ...]
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def tiles(self) -> int:
        return sum(len(s.tiles) for s in self.shards)


def check_name(value: str, key: str) -> str:
    """``value`` if it is one safe path component, else ConfigError (no separators, no ``..``)."""
    if not _SAFE_NAME.match(value or ""):
        raise ConfigError(
            f"{key}={value!r} must be a single path component of letters, digits, '.', '_' or '-' "
            "(no '/', no '..', not starting with '.')"
        )
    return value


def dataset_dirs(cfg: Config) -> tuple[Path, Path]:
    """``(root, staging)``: the published dataset directory and its staging sibling."""
    name = check_name(cfg.data.dataset, "data.dataset")
    base = Path(cfg.data.processed_root)
    return base / name, base / f".staging-{name}"


def tile_offsets(extent: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis of ``extent`` px (last tile shifted inward; one if short)."""
    if extent <= tile:
        return [0]
    stride = tile - overlap
    offsets = list(range(0, extent - tile + 1, stride))
    if offsets[-1] != extent - tile:
        offsets.append(extent - tile)
    return offsets


def plan_raster(source: RasterSource, cfg: DataConfig) -> tuple[RasterPlan, list[tuple[Window, float]]]:
    """Validate one source and measure each tile window's valid fraction (no pixels kept).

    Returns the raster plan and ``[(window, valid_fraction)]`` in row-major order. Raises
    :class:`RasterError` for an unreadable, 1-2 band, all-nodata or mismatched-label raster.
    """
    info = inspect_raster(source.image, cfg)
    if source.label is not None:
        check_label(source.label, info)
    size, overlap = cfg.tile_size, cfg.tile_overlap
    tile_w, tile_h = min(size, info.width), min(size, info.height)
    windows = []
    with open_raster(source.image) as ds:
        _probe_last_block(ds, info)
        for row in tile_offsets(info.height, size, overlap):
            for col in tile_offsets(info.width, size, overlap):
                window = Window(col, row, tile_w, tile_h)
                valid = read_valid(ds, info, window, cfg)
                windows.append((window, float(valid.mean())))
    if not any(frac > 0 for _, frac in windows):
        raise RasterError(f"{source.image}: every pixel is nodata; nothing to tile (remove it from the inputs)")
    label_sha = sha256_file(source.label) if source.label else None
    plan = RasterPlan(source, info, sha256_file(source.image), label_sha, tiles_total=len(windows))
    return plan, windows


def _probe_last_block(ds, info: RasterInfo) -> None:
    """Read the raster's last pixel row: a truncated file fails here, before any shard is written."""
    window = Window(0, ds.height - 1, ds.width, 1)  # the file's own last row, whatever the working grid
    try:
        ds.read(list(info.bands), window=window)
    except Exception as exc:  # GDAL raises several types for a truncated/corrupt stream
        raise RasterError(
            f"{info.path}: pixel data cannot be decoded ({exc}); the file is truncated or corrupt"
        ) from exc


def assign_splits(
    rasters: list[RasterPlan], windows: list[list[tuple[Window, float]]], cfg: DataConfig
) -> list[list[TileSpec]]:
    """Per raster, the kept tiles with their split (see the module docstring); fills ``skipped``."""
    block_px = cfg.split_block_tiles * (cfg.tile_size - cfg.tile_overlap)
    units = _split_units(rasters, windows, cfg, block_px)
    out = []
    for i, (plan, wins) in enumerate(zip(rasters, windows, strict=True)):
        kept = []
        for window, frac in wins:
            if frac < cfg.min_valid or frac == 0.0:
                plan.skipped[SKIP_LOW_VALID] = plan.skipped.get(SKIP_LOW_VALID, 0) + 1
                continue
            split = _tile_split(i, window, units, cfg.split_policy, block_px)
            if split is None:
                plan.skipped[SKIP_SPLIT_EDGE] = plan.skipped.get(SKIP_SPLIT_EDGE, 0) + 1
                continue
            tile_id = f"{Path(plan.source.image).stem}-{plan.sha256[:8]}-r{window.row_off}-c{window.col_off}"
            kept.append(TileSpec(i, window.col_off, window.row_off, window.width, window.height, frac, split, tile_id))
        out.append(kept)
    return out


def _split_units(rasters, windows, cfg: DataConfig, block_px: int) -> dict[tuple[int, int, int], str]:
    """Split of every unit ``(raster, block_row, block_col)`` (block 0,0 only for the raster policy)."""
    units: dict[tuple[int, int, int], str] = {}
    candidates = []
    any_label = any(r.source.label for r in rasters)
    for i, plan in enumerate(rasters):
        if plan.source.split is not None:
            check_name(plan.source.split, f"split of {plan.source.image}")
        for key in _raster_units(i, plan.info, cfg.split_policy, block_px):
            if plan.source.split is not None:
                units[key] = plan.source.split
            elif any_label and not plan.source.label:
                units[key] = "train"
            else:
                candidates.append(key)
    order = sorted(candidates, key=lambda k: _unit_hash(rasters[k[0]], k))
    n_val = math.floor(len(order) * cfg.val_fraction + 0.5)
    if cfg.val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    for rank, key in enumerate(order):
        units[key] = "val" if rank < n_val else "train"
    return units


def _raster_units(i: int, info: RasterInfo, policy: str, block_px: int) -> list[tuple[int, int, int]]:
    if policy == "raster":
        return [(i, 0, 0)]
    rows, cols = math.ceil(info.height / block_px), math.ceil(info.width / block_px)
    return [(i, r, c) for r in range(rows) for c in range(cols)]


def _unit_hash(plan: RasterPlan, key: tuple[int, int, int]) -> str:
    return hashlib.sha256(f"{Path(plan.source.image).name}#{key[1]},{key[2]}".encode()).hexdigest()


def _tile_split(i: int, window: Window, units, policy: str, block_px: int) -> str | None:
    if policy == "raster":
        return units[(i, 0, 0)]
    row_c, col_c = window.row_off + window.height // 2, window.col_off + window.width // 2
    split = units.get((i, row_c // block_px, col_c // block_px))
    r0, r1 = window.row_off // block_px, (window.row_off + window.height - 1) // block_px
    c0, c1 = window.col_off // block_px, (window.col_off + window.width - 1) // block_px
    for r in range(r0, r1 + 1):
        for c in range(c0, c1 + 1):
            other = units.get((i, r, c))
            if other is not None and other != split:
                return None
    return split


def make_shards(rasters: list[RasterPlan], tiles: list[list[TileSpec]], cfg: Config) -> list[ShardSpec]:
    """Group kept tiles per split and raster, row-major, ``tiles_per_shard`` at a time.

    A shard never spans two rasters, so its build key depends on one raster only: when rasters are
    added to or removed from the inputs, every other raster's shards keep their keys and an
    incremental build reuses them (:func:`segcore.data.shard_index.reuse_shard`).
    """
    by_split: dict[str, list[list[TileSpec]]] = {}
    for raster_tiles in tiles:
        per_split: dict[str, list[TileSpec]] = {}
        for tile in raster_tiles:
            per_split.setdefault(tile.split, []).append(tile)
        for split, items in per_split.items():
            by_split.setdefault(split, []).append(items)
    shards = []
    per = cfg.data.tiles_per_shard
    for split in sorted(by_split):
        index = 0
        for items in by_split[split]:
            for start in range(0, len(items), per):
                chunk = tuple(items[start : start + per])
                shards.append(ShardSpec(split, index, chunk, _build_key(rasters, chunk, cfg)))
                index += 1
    return shards


def output_params(cfg: Config) -> dict:
    """The data keys that determine the written bytes."""
    data = cfg.to_dict()["data"]
    return {key: data[key] for key in OUTPUT_KEYS}


def _build_key(rasters: list[RasterPlan], chunk: tuple[TileSpec, ...], cfg: Config) -> str:
    import skimage

    tiles = []
    for t in chunk:
        r = rasters[t.raster]
        tiles.append([r.sha256, r.label_sha256, r.info.scale_low, r.info.scale_high, t.tile_id, t.split, t.width])
    blob = {
        "format": FORMAT_VERSION,
        "segcore": __version__,
        "skimage": skimage.__version__,
        "params": output_params(cfg),
        "tiles": tiles,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
