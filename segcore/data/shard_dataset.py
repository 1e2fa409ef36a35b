"""``ShardDataset``: an IterableDataset over the tiles of one split of a built shard dataset.

Every tile is yielded exactly once per epoch across all distributed ranks times DataLoader workers
("consumers"). Per epoch, the shard order is shuffled by ``(seed, epoch)``; with at least as many
shards as consumers, consumer ``c`` takes every ``n``-th shard from ``c`` and shuffles its tiles by
``(seed, epoch, c)``; with fewer shards, the shuffled tiles themselves are dealt out the same way.
Ranks may then see different tile counts (differing by at most one shard).

Use with a DataLoader (``batch_size=None`` for single samples, or ``collate_fn=collate_samples``) and
call :meth:`ShardDataset.set_epoch` before each epoch; DataLoader workers receive a copy of the
dataset when they start, so use ``persistent_workers=False`` (the default).
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import IterableDataset, get_worker_info

from segcore.config import Config
from segcore.data.shard_index import read_index, read_manifest
from segcore.errors import ShardError

log = logging.getLogger(__name__)

SAMPLE_KEYS = ("image", "slic", "target", "valid")


def make_sample(rgb: np.ndarray, slic: np.ndarray, target: np.ndarray, valid: np.ndarray, meta: dict) -> dict:
    """A sample dict (``docs/architecture.md``) from ``uint8 (H, W, 3)`` RGB and ``(H, W)`` arrays.

    Returns ``image`` float32 ``(3, H, W)`` in 0..1 (0 where invalid), ``slic``/``target`` int64
    ``(H, W)``, ``valid`` bool ``(H, W)`` and ``meta``; tensors never share memory with the inputs.
    """
    # numpy, not torch ops: tiny torch kernels pay intra-op thread hand-offs (10 ms each on busy cores).
    valid = np.array(valid, dtype=bool)
    image = np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), dtype=np.float32)
    if not valid.all():
        image *= valid
    return {
        "image": torch.from_numpy(image),
        "slic": torch.from_numpy(slic.astype(np.int64)),
        "target": torch.from_numpy(target.astype(np.int64)),
        "valid": torch.from_numpy(valid),
        "meta": meta,
    }


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-sized samples into ``(B, ...)`` tensors; ``meta`` becomes a list of dicts."""
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"collate_samples needs one image shape per batch, got {sorted(shapes)}")
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in SAMPLE_KEYS}
    batch["meta"] = [s["meta"] for s in samples]
    return batch


def partition(n_tiles_per_shard: list[int], consumer: int, consumers: int, seed: int, epoch: int) -> list[tuple]:
    """``[(shard, position)]`` for one consumer in one epoch (see the module docstring)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(n_tiles_per_shard))
    if len(order) >= consumers:
        mine = [(int(s), p) for s in order[consumer::consumers] for p in range(n_tiles_per_shard[s])]
        perm = np.random.default_rng([seed, epoch, consumer]).permutation(len(mine))
        return [mine[i] for i in perm]
    tiles = [(int(s), p) for s in order for p in range(n_tiles_per_shard[s])]
    perm = rng.permutation(len(tiles))
    return [tiles[i] for i in perm[consumer::consumers]]


class ShardDataset(IterableDataset):
    """Tiles of ``<root>/<split>`` (``root`` = ``<processed_root>/<dataset>``) as sample dicts.

    Args:
        root: the published dataset directory (holds ``manifest.json``).
        split: split name, e.g. ``"train"``.
        cfg: uses ``data.require_slic``, ``data.cache_mode`` and ``data.cache_max_items``.
        rank, world_size: distributed rank of this process and number of ranks.
        epoch: initial epoch (see :meth:`set_epoch`); seed: seed of the per-epoch shuffle.

    Raises ShardError for a missing manifest/split/index, or a shard without SLIC when
    ``data.require_slic`` is true.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        cfg: Config,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        self.root, self.split = Path(root), split
        self.rank, self.world_size, self.epoch, self.seed = rank, world_size, epoch, seed
        self.require_slic = cfg.data.require_slic
        self.cache_max_items = cfg.data.cache_max_items if cfg.data.cache_mode == "lru" else 0
        self.shards = self._shard_dirs(read_manifest(self.root))
        self.index = [read_index(d).to_dict("records") for d in self.shards]
        self._check_slic()
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, ...]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def _shard_dirs(self, manifest: dict) -> list[Path]:
        splits = manifest.get("splits", {})
        if self.split not in splits:
            raise ShardError(f"{self.root}: no split {self.split!r} (has {', '.join(sorted(splits)) or 'none'})")
        dirs = [self.root / rel for rel in splits[self.split]["shards"]]
        missing = [str(d) for d in dirs if not (d / "index.csv").is_file()]
        if missing:
            raise ShardError(f"{missing[0]}: shard listed in the manifest has no index.csv; rebuild the dataset")
        return dirs

    def _check_slic(self) -> None:
        if not self.require_slic:
            return
        for shard_dir, rows in zip(self.shards, self.index, strict=True):
            bad = [r["tile_id"] for r in rows if not r["has_slic"] or not (shard_dir / str(r["slic_file"])).is_file()]
            if bad:
                raise ShardError(
                    f"{shard_dir}: {len(bad)} tile(s) have no SLIC superpixels (e.g. {bad[0]}) but "
                    "data.require_slic=true; rebuild with data.shard_slic=true or set data.require_slic=false"
                )

    @property
    def total_tiles(self) -> int:
        """Tiles in the split (all ranks and workers together)."""
        return sum(len(rows) for rows in self.index)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch``; call before creating the epoch's iterator."""
        self.epoch = epoch

    def epoch_tiles(self, epoch: int):
        """Iterator over this process's tiles of ``epoch`` (the tile-source protocol of ``batches.py``)."""
        self.set_epoch(epoch)
        return iter(self)

    def consumer(self) -> tuple[int, int]:
        """``(consumer id, consumers)`` of the calling process: rank x DataLoader worker."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self):
        consumer, consumers = self.consumer()
        sizes = [len(rows) for rows in self.index]
        for shard, position in partition(sizes, consumer, consumers, self.seed, self.epoch):
            yield self.load(shard, position)

    def load(self, shard: int, position: int) -> dict[str, Any]:
        """The sample dict of tile ``position`` of shard ``shard`` (through the LRU cache if enabled)."""
        row = self.index[shard][position]
        arrays = self._cached(shard, position, row)
        return make_sample(*arrays, meta=self._meta(row))

    def _cached(self, shard: int, position: int, row: dict) -> tuple[np.ndarray, ...]:
        key = (shard, position)
        if self.cache_max_items <= 0:
            return self._decode(self.shards[shard], row)
        if key in self._cache:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return self._cache[key]
        self.cache_misses += 1
        arrays = self._decode(self.shards[shard], row)
        self._cache[key] = arrays
        if len(self._cache) > self.cache_max_items:
            self._cache.popitem(last=False)
        return arrays

    def _decode(self, shard_dir: Path, row: dict) -> tuple[np.ndarray, ...]:
        """``(rgb (H, W, 3) uint8, slic, target, valid)`` of one tile from its GeoTIFFs."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(shard_dir / row["rgb_file"]) as ds:
                    rgb = ds.read().transpose(1, 2, 0)
                    valid = ds.read_masks(1) > 0
                slic = self._read_band(shard_dir / row["slic_file"], valid.shape, row["has_slic"])
                target = self._read_band(shard_dir / row["target_file"], valid.shape, row["has_target"])
        except rasterio.errors.RasterioError as exc:
            raise ShardError(f"{shard_dir}: tile {row['tile_id']} cannot be read ({exc}); rebuild the shards") from exc
        return rgb, slic, target, valid

    @staticmethod
    def _read_band(path: Path, shape: tuple[int, ...], present: bool) -> np.ndarray:
        if not present:
            return np.zeros(shape, dtype=np.int64)
        with rasterio.open(path) as ds:
            return ds.read(1).astype(np.int64)

    @staticmethod
    def _meta(row: dict) -> dict[str, Any]:
        transform = [float(v) for v in row["transform"].strip("[]").split(",")] if row["transform"] else None
        return {
            "source": row["source"],
            "window": (int(row["col_off"]), int(row["row_off"]), int(row["width"]), int(row["height"])),
            "crs": row["crs"] or None,
            "transform": transform,
            "tile_id": row["tile_id"],
        }

    def cache_info(self) -> dict[str, int]:
        """``{"hits", "misses", "size", "max_items"}`` of this process's LRU cache."""
        return {
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "size": len(self._cache),
            "max_items": self.cache_max_items,
        }
