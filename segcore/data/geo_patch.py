"""``GeoPatchDataset``: random square windows read straight from rasters, one patch size per batch.

Map-style: ``dataset[(index, size)]`` is the sample of window ``index`` at ``size`` px, a pure
function of ``(seed, index, size)``. :class:`PatchBatchSampler` yields batches of such keys sharing
one size, so ``DataLoader(dataset, batch_sampler=PatchBatchSampler(...), collate_fn=collate_samples)``
gives one patch size per step. Only windows are read (never a whole raster); each process keeps
its own open datasets.

Window choice: a raster is drawn with probability proportional to its area among the rasters at
least ``size`` px on both sides, then a uniform offset. When no raster is that large, ``size`` is
**clamped** to the largest square that fits in some raster (so a batch still has one shape). A
window whose valid fraction is below ``data.min_valid`` is redrawn, up to ``max_tries`` times, then
:class:`RasterError`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from torch.utils.data import Dataset, Sampler

from segcore.config import Config
from segcore.data.raster import (
    RasterSource,
    check_label,
    discover_sources,
    inspect_raster,
    read_label,
    read_rgb,
    window_transform,
)
from segcore.data.shard_dataset import collate_samples, make_sample
from segcore.errors import RasterError

log = logging.getLogger(__name__)

__all__ = ["GeoPatchDataset", "PatchBatchSampler", "collate_samples"]


class GeoPatchDataset(Dataset):
    """Random windows from rasters as sample dicts (``docs/architecture.md``).

    Args:
        paths: image paths or :class:`RasterSource` (with labels); ``None``: ``data.manifest`` or
            ``data.raster_paths`` of ``cfg``.
        cfg: uses ``data.patch_sizes``, ``data.min_valid``, ``data.require_slic``, band/nodata/scaling
            keys and the SLIC keys.
        seed: windows are a pure function of ``(seed, index, size)``.
        length: ``len(dataset)`` (windows per epoch for samplers).
        max_tries: draws per sample before giving up on ``data.min_valid``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path | RasterSource] | None = None,
        cfg: Config | None = None,
        seed: int = 0,
        length: int = 1000,
        max_tries: int = 20,
    ):
        self.cfg = cfg or Config()
        items = discover_sources(self.cfg.data) if paths is None else paths
        self.sources = [p if isinstance(p, RasterSource) else RasterSource(str(p)) for p in items]
        if not self.sources:
            raise RasterError("GeoPatchDataset needs at least one raster (paths, data.raster_paths or data.manifest)")
        self.infos = [inspect_raster(s.image, self.cfg.data) for s in self.sources]
        for source, info in zip(self.sources, self.infos, strict=True):
            if source.label:
                check_label(source.label, info)
        self.seed, self.length, self.max_tries = seed, length, max_tries
        self._handles: dict[int, tuple[Any, Any]] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open datasets never cross processes
        return state

    def effective_size(self, size: int) -> int:
        """``size`` clamped to the largest square window that fits in some raster."""
        return min(size, max(min(i.width, i.height) for i in self.infos))

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        """Sample of window ``index`` at ``size`` px; ``key`` is ``(index, size)`` or ``index`` (largest size)."""
        index, size = key if isinstance(key, tuple) else (key, max(self.cfg.data.patch_sizes))
        rng = np.random.default_rng([self.seed, int(index), int(size)])
        return self.sample(int(size), rng)

    def sample(self, size: int, generator: np.random.Generator) -> dict[str, Any]:
        """One window of ``size`` px (clamped, see module docstring) drawn with ``generator``."""
        size = self.effective_size(size)
        eligible = [i for i, info in enumerate(self.infos) if min(info.width, info.height) >= size]
        areas = np.array([self.infos[i].width * self.infos[i].height for i in eligible], dtype=np.float64)
        best = 0.0
        for _ in range(self.max_tries):
            i = eligible[int(generator.choice(len(eligible), p=areas / areas.sum()))]
            info = self.infos[i]
            row = int(generator.integers(info.height - size + 1))
            col = int(generator.integers(info.width - size + 1))
            window = Window(col, row, size, size)
            rgb, valid = read_rgb(self._open(i)[0], info, window, self.cfg.data)
            best = max(best, float(valid.mean()))
            if valid.mean() >= self.cfg.data.min_valid and valid.any():
                return self._to_sample(i, window, rgb, valid)
        raise RasterError(
            f"{', '.join(self.sources[i].image for i in eligible)}: no {size}px window with valid fraction >= "
            f"data.min_valid={self.cfg.data.min_valid} in {self.max_tries} draws (best {best:.2f}); "
            "lower data.min_valid or check the rasters' nodata"
        )

    def _to_sample(self, i: int, window: Window, rgb: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        from segcore.data.slic import compute_slic

        data, info, source = self.cfg.data, self.infos[i], self.sources[i]
        if data.require_slic:
            slic = compute_slic(rgb, valid, data.slic_region_size, data.slic_compactness)
        else:
            slic = np.zeros(valid.shape, dtype=np.int64)
        label_ds = self._open(i)[1]
        target = read_label(label_ds, window, info) if label_ds is not None else np.zeros_like(slic)
        transform = window_transform(window, info.transform) if info.transform else None
        meta = {
            "source": source.image,
            "window": (int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
            "crs": info.crs,
            "transform": list(transform)[:6] if transform else None,
            "tile_id": f"{Path(source.image).stem}-r{window.row_off}-c{window.col_off}-s{window.width}",
        }
        return make_sample(rgb, slic, target, valid, meta)

    def _open(self, i: int) -> tuple[Any, Any]:
        """Open datasets of raster ``i`` (image, label or None), kept per process."""
        if os.getpid() != self._pid:  # a forked DataLoader worker: never share GDAL handles
            self._handles, self._pid = {}, os.getpid()
        if i not in self._handles:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                image = rasterio.open(self.sources[i].image)
                label = rasterio.open(self.sources[i].label) if self.sources[i].label else None
            self._handles[i] = (image, label)
        return self._handles[i]

    def close(self) -> None:
        """Close the datasets this process opened."""
        for image, label in self._handles.values():
            image.close()
            if label is not None:
                label.close()
        self._handles = {}


class PatchBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, size)`` keys with one size per batch, drawn by ``(seed, epoch, batch)``.

    Args:
        length: windows per epoch (``len(dataset)``); batches per epoch = ``length // batch_size``.
        batch_size: windows per batch.
        patch_sizes: candidate sizes (``data.patch_sizes``).
        seed: seed of the size draws; indexes of epoch ``e`` are ``e * length + k``.
    """

    def __init__(self, length: int, batch_size: int, patch_sizes: Sequence[int], seed: int = 0):
        self.length, self.batch_size, self.patch_sizes, self.seed = length, batch_size, tuple(patch_sizes), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        base = self.epoch * self.length
        for b in range(len(self)):
            rng = np.random.default_rng([self.seed, self.epoch, b])
            size = self.patch_sizes[int(rng.integers(len(self.patch_sizes)))]
            start = base + b * self.batch_size
            yield [(start + k, size) for k in range(self.batch_size)]
