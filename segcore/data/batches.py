"""From a stream of tiles to training batches: one patch size per step, deterministic by step.

A *tile source* is anything with ``epoch_tiles(epoch) -> Iterator[sample]`` (sample dicts as in
``docs/architecture.md``). :class:`PatchBatcher` walks that stream epoch after epoch, takes
``batch_size`` tiles per step, and crops each to the step's patch size at a random offset. The
patch size and offsets come from a generator seeded by ``(seed, step)``, so the batch of step ``s``
depends only on the seed, the tile order and ``s``: a resumed run sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

SAMPLE_KEYS = ("image", "slic", "target", "valid")


class TileSource(Protocol):
    """Yields sample dicts, in a seeded order per epoch."""

    def epoch_tiles(self, epoch: int) -> Iterator[dict[str, Any]]: ...


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensor keys of same-sized samples into ``(B, ...)``; ``meta`` becomes a list."""
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in samples]) for k in SAMPLE_KEYS}
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch


def crop(sample: dict[str, Any], top: int, left: int, height: int, width: int) -> dict[str, Any]:
    """The window ``[top:top+height, left:left+width]`` of every spatial key, meta updated."""
    out = {k: sample[k][..., top : top + height, left : left + width] for k in SAMPLE_KEYS}
    meta = dict(sample.get("meta", {}))
    meta["crop"] = (left, top, width, height)
    out["meta"] = meta
    return out


def step_patch_size(patch_sizes: tuple[int, ...], mode: str, rng: np.random.Generator) -> int:
    """The patch side of one step: drawn from ``patch_sizes`` or, in ``fixed`` mode, the first."""
    if mode == "fixed":
        return patch_sizes[0]
    return int(patch_sizes[int(rng.integers(len(patch_sizes)))])


class PatchBatcher:
    """Deterministic batches of random crops from a tile source.

    Args:
        source: the tile stream.
        patch_sizes: candidate square patch sides in pixels.
        batch_size: tiles per batch.
        seed: seed of the per-step generator.
        mode: ``sample_one_scale_per_step`` or ``fixed``.
    """

    def __init__(self, source: TileSource, patch_sizes: tuple[int, ...], batch_size: int, seed: int, mode: str):
        self.source = source
        self.patch_sizes = patch_sizes
        self.batch_size = batch_size
        self.seed = seed
        self.mode = mode
        self.epoch = 0
        self.consumed = 0  # tiles taken from the stream since the start of training
        self._iter: Iterator[dict[str, Any]] | None = None
        self._warned: set[int] = set()

    def _next_tile(self) -> dict[str, Any]:
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.source.epoch_tiles(self.epoch))
            try:
                tile = next(self._iter)
                self.consumed += 1
                return tile
            except StopIteration:
                self.epoch += 1
                self._iter = None
        raise RuntimeError("the tile source yielded no tiles for a whole epoch: is the dataset empty?")

    def skip_tiles(self, count: int) -> None:
        """Advance the stream by ``count`` tiles (used on resume)."""
        for _ in range(count):
            self._next_tile()

    def batch(self, step: int) -> dict[str, Any]:
        """The batch of optimizer step ``step``: ``(B, ...)`` tensors of one patch size."""
        rng = np.random.default_rng([self.seed, step])
        size = step_patch_size(self.patch_sizes, self.mode, rng)
        tiles = [self._next_tile() for _ in range(self.batch_size)]
        height = min([size] + [t["image"].shape[-2] for t in tiles])
        width = min([size] + [t["image"].shape[-1] for t in tiles])
        if (height, width) != (size, size) and size not in self._warned:
            self._warned.add(size)
            log.warning("patch size %d is larger than the tiles; using %dx%d crops", size, height, width)
        crops = []
        for tile in tiles:
            top = int(rng.integers(tile["image"].shape[-2] - height + 1))
            left = int(rng.integers(tile["image"].shape[-1] - width + 1))
            crops.append(crop(tile, top, left, height, width))
        return collate(crops)


class InMemoryTiles:
    """A fixed list of samples, shuffled per epoch by ``(seed, epoch)``."""

    def __init__(self, samples: list[dict[str, Any]], seed: int):
        if not samples:
            raise ValueError("InMemoryTiles needs at least one sample")
        self.samples = samples
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def epoch_tiles(self, epoch: int) -> Iterator[dict[str, Any]]:
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.samples))
        return (self.samples[i] for i in order)
