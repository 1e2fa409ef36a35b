"""Tile sources for training, one per ``data.source``.

Each source has ``epoch_tiles(epoch) -> Iterator[sample]`` and is consumed by
:class:`~segcore.data.batches.PatchBatcher`:

- ``synthetic``: ``data.synthetic_count`` generated scenes of ``data.synthetic_size`` px, kept in
  memory with their SLIC superpixels. Scene ``i`` of training seed ``s`` uses seed
  ``scene_seed(TRAIN_NAMESPACE + s, i)``, a stream no evaluation seed list draws from.
- ``shards``: the tiles of ``<processed_root>/<dataset>/<split>`` through :class:`ShardDataset`
  (partitioned over distributed ranks and DataLoader workers, every tile once per epoch).
- ``geotiff``: random windows of ``max(data.patch_sizes)`` straight from ``data.raster_paths``
  through :class:`GeoPatchDataset`; an epoch is ``data.synthetic_count * 8`` windows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segcore.config import Config
from segcore.data.batches import InMemoryTiles, TileSource
from segcore.errors import ConfigError

log = logging.getLogger(__name__)

# Offset that keeps training scene seeds apart from evaluation seeds (which are small ints).
TRAIN_NAMESPACE = 7_000_003


def synthetic_samples(cfg: Config, seed: int, count: int | None = None, size: int | None = None) -> list[dict]:
    """Generate the training scenes of ``seed`` as sample dicts (SLIC included when required)."""
    from segcore.data.synthetic import generate_scene, scene_seed, scene_to_sample

    count = cfg.data.synthetic_count if count is None else count
    size = cfg.data.synthetic_size if size is None else size
    samples = []
    for i in range(count):
        scene = generate_scene(size, scene_seed(TRAIN_NAMESPACE + seed, i))
        samples.append(
            scene_to_sample(scene, cfg.data.require_slic, cfg.data.slic_region_size, cfg.data.slic_compactness)
        )
    return samples


class ShardTiles:
    """Tiles of one shard split, streamed through a DataLoader (workers optional)."""

    def __init__(self, cfg: Config, seed: int, rank: int, world_size: int):
        from segcore.data.shard_dataset import ShardDataset

        root = Path(cfg.data.processed_root) / cfg.data.dataset
        self.dataset = ShardDataset(root, cfg.data.split, cfg, rank=rank, world_size=world_size, seed=seed)
        self.workers = cfg.data.loader_workers

    def epoch_tiles(self, epoch: int) -> Iterator[dict[str, Any]]:
        import torch

        self.dataset.set_epoch(epoch)
        if self.workers == 0:
            return iter(self.dataset)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=None, num_workers=self.workers)
        return iter(loader)


class GeoTiffWindows:
    """Random windows from rasters; ``windows_per_epoch`` of them per epoch."""

    def __init__(self, cfg: Config, seed: int, rank: int, world_size: int):
        from segcore.data.geo_patch import GeoPatchDataset

        if not cfg.data.raster_paths and not cfg.data.manifest:
            raise ConfigError(
                "data.source=geotiff needs data.raster_paths (files, directories or globs) or data.manifest"
            )
        self.dataset = GeoPatchDataset(cfg=cfg, seed=seed + 1_000_003 * rank)
        self.size = max(cfg.data.patch_sizes)
        self.windows_per_epoch = max(cfg.data.synthetic_count * 8, 1)

    def epoch_tiles(self, epoch: int) -> Iterator[dict[str, Any]]:
        base = epoch * self.windows_per_epoch
        return (self.dataset[(base + i, self.size)] for i in range(self.windows_per_epoch))


def build_tile_source(cfg: Config, rank: int = 0, world_size: int = 1) -> TileSource:
    """The training tile source for ``cfg.data.source``."""
    seed = cfg.train.seed
    if cfg.data.source == "synthetic":
        # With several ranks, each trains on its own share of the generated scenes.
        return InMemoryTiles(synthetic_samples(cfg, seed)[rank::world_size], seed)
    if cfg.data.source == "shards":
        return ShardTiles(cfg, seed, rank, world_size)
    if cfg.data.source == "geotiff":
        return GeoTiffWindows(cfg, seed, rank, world_size)
    raise ConfigError(f"data.source={cfg.data.source!r} is not one of synthetic, shards, geotiff")
