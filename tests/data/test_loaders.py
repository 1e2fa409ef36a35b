"""ShardDataset (exactly-once partitioning, shuffles, LRU, require_slic) and GeoPatchDataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from segcore.data.geo_patch import GeoPatchDataset, PatchBatchSampler
from segcore.data.raster import RasterSource
from segcore.data.shard_dataset import ShardDataset, collate_samples, partition
from segcore.data.shards import build_shards
from segcore.errors import RasterError, ShardError
from tests.data.conftest import make_cfg, write_tif


@pytest.fixture
def built(labelled_dir: Path, tmp_path: Path):
    """A built dataset (26 tiles: train 2 rasters, val 1) and its config."""
    cfg = make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"), val_fraction=0.34)
    build_shards(cfg, progress=False)
    return tmp_path / "out" / "unit", cfg


def _all_tile_ids(root: Path, split: str, cfg) -> list[str]:
    dataset = ShardDataset(root, split, cfg)
    return [row["tile_id"] for rows in dataset.index for row in rows]


def test_sample_contract(built) -> None:
    root, cfg = built
    sample = next(iter(ShardDataset(root, "train", cfg)))
    assert sample["image"].dtype == torch.float32
    assert sample["image"].shape == (3, 128, 128)
    assert 0.0 <= float(sample["image"].min()) <= float(sample["image"].max()) <= 1.0
    assert sample["slic"].dtype == torch.int64
    assert sample["target"].dtype == torch.int64
    assert sample["valid"].dtype == torch.bool
    assert set(sample["target"].unique().tolist()) <= {1, 2, 3, 4}
    meta = sample["meta"]
    assert set(meta) == {"source", "window", "crs", "transform", "tile_id"}
    with rasterio.open(meta["source"]) as src:
        col, row, width, height = meta["window"]
        expected = src.read(window=((row, row + height), (col, col + width))).astype(np.float32) / 255
        assert meta["crs"] == src.crs.to_wkt()
    valid = sample["valid"].numpy()
    np.testing.assert_allclose(sample["image"].numpy()[:, valid], expected[:, valid], atol=1e-6)
    batch = collate_samples([sample, sample])
    assert batch["image"].shape == (2, 3, 128, 128)
    assert batch["meta"] == [meta, meta]


@pytest.mark.parametrize(("shards", "consumers"), [(7, 4), (2, 4), (1, 3), (5, 5)])
def test_partition_is_exactly_once(shards: int, consumers: int) -> None:
    sizes = [3 + i % 2 for i in range(shards)]
    seen = Counter(t for c in range(consumers) for t in partition(sizes, c, consumers, seed=1, epoch=2))
    assert sorted(seen) == [(s, p) for s in range(shards) for p in range(sizes[s])]
    assert set(seen.values()) == {1}


def test_every_tile_once_across_two_ranks_times_two_workers(built) -> None:
    root, cfg = built
    expected = _all_tile_ids(root, "train", cfg)
    assert len(expected) == 17  # 5 shards of <= 4 tiles
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            dataset = ShardDataset(root, "train", cfg, rank=rank, world_size=2, seed=3)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=None, num_workers=2)
            seen += [s["meta"]["tile_id"] for s in loader]
        assert sorted(seen) == sorted(expected)
        orders.append(seen)
    assert orders[0] != orders[1]  # a new shuffle per epoch


def test_shuffle_is_seeded(built) -> None:
    root, cfg = built
    first = [s["meta"]["tile_id"] for s in ShardDataset(root, "train", cfg, seed=5, epoch=1)]
    again = [s["meta"]["tile_id"] for s in ShardDataset(root, "train", cfg, seed=5, epoch=1)]
    other = [s["meta"]["tile_id"] for s in ShardDataset(root, "train", cfg, seed=6, epoch=1)]
    assert first == again
    assert first != other
    assert sorted(first) == sorted(other)


def test_lru_cache_hits(built) -> None:
    root, _ = built
    cfg = make_cfg(root.parent, **{"cache_mode": "lru", "cache_max_items": 100})
    dataset = ShardDataset(root, "val", cfg)
    first = list(dataset.epoch_tiles(0))
    assert dataset.cache_info() == {"hits": 0, "misses": 9, "size": 9, "max_items": 100}
    second = {s["meta"]["tile_id"]: s for s in dataset.epoch_tiles(1)}
    assert dataset.cache_info()["hits"] == 9
    for sample in first:
        torch.testing.assert_close(sample["image"], second[sample["meta"]["tile_id"]]["image"])
    small = ShardDataset(root, "val", make_cfg(root.parent, cache_mode="lru", cache_max_items=2))
    list(small.epoch_tiles(0))
    list(small.epoch_tiles(1))
    assert small.cache_info()["size"] == 2
    assert small.cache_hits + small.cache_misses == 18


def test_require_slic_error(labelled_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "out", manifest=str(labelled_dir / "manifest.csv"), shard_slic=False)
    build_shards(cfg, progress=False)
    root = tmp_path / "out" / "unit"
    with pytest.raises(ShardError, match=r"shard-00000: 4 tile\(s\) have no SLIC superpixels"):
        ShardDataset(root, "train", cfg)
    sample = next(iter(ShardDataset(root, "train", cfg.replace(**{"data.require_slic": False}))))
    assert int(sample["slic"].abs().sum()) == 0


def test_missing_dataset_and_split(built, tmp_path: Path) -> None:
    root, cfg = built
    with pytest.raises(ShardError, match="no manifest"):
        ShardDataset(tmp_path / "nowhere", "train", cfg)
    with pytest.raises(ShardError, match="no split 'test'"):
        ShardDataset(root, "test", cfg)


# ---- GeoPatchDataset -----------------------------------------------------------------------------


def test_geo_patch_windows_are_deterministic_and_valid(labelled_dir: Path) -> None:
    cfg = make_cfg(labelled_dir / "out", manifest=str(labelled_dir / "manifest.csv"), patch_sizes=(64, 96))
    dataset = GeoPatchDataset(cfg=cfg, seed=7)
    a, b = dataset[(3, 64)], GeoPatchDataset(cfg=cfg, seed=7)[(3, 64)]
    assert a["meta"] == b["meta"]
    torch.testing.assert_close(a["image"], b["image"])
    assert a["image"].shape == (3, 64, 64)
    assert dataset[(3, 96)]["image"].shape == (3, 96, 96)
    for index in range(10):
        sample = dataset[(index, 96)]
        assert sample["valid"].float().mean() >= 0.5
        assert int(sample["slic"][sample["valid"]].min()) >= 1
        col, row, width, height = sample["meta"]["window"]
        with rasterio.open(sample["meta"]["source"]) as src:
            expected = src.read(1, window=((row, row + height), (col, col + width)))
        valid = sample["valid"].numpy()
        np.testing.assert_allclose(sample["image"][0].numpy()[valid] * 255, expected[valid], atol=1e-3)


def test_geo_patch_batches_have_one_size_per_step(labelled_dir: Path) -> None:
    cfg = make_cfg(labelled_dir / "out", manifest=str(labelled_dir / "manifest.csv"), patch_sizes=(32, 64))
    dataset = GeoPatchDataset(cfg=cfg, seed=0, length=12)
    sampler = PatchBatchSampler(len(dataset), batch_size=3, patch_sizes=cfg.data.patch_sizes, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples, num_workers=2)
    sizes = [batch["image"].shape[-1] for batch in loader]
    assert len(sizes) == 4
    assert set(sizes) <= {32, 64}
    assert all(b["image"].shape[0] == 3 for b in loader)


def test_geo_patch_clamps_to_the_largest_raster(make_scene) -> None:
    image, label = make_scene("small", height=100, width=140)
    dataset = GeoPatchDataset([RasterSource(str(image), str(label))], cfg=make_cfg(Path("."), patch_sizes=(256,)))
    sample = dataset[(0, 256)]
    assert sample["image"].shape == (3, 100, 100)
    assert sample["target"].max() >= 1


def test_geo_patch_gives_up_on_mostly_nodata(tmp_path: Path) -> None:
    data = np.zeros((3, 200, 200), np.uint8)
    data[:, :10, :10] = 50
    path = write_tif(tmp_path / "sparse.tif", data, nodata=0)
    dataset = GeoPatchDataset([path], cfg=make_cfg(tmp_path, patch_sizes=(64,)), max_tries=5)
    with pytest.raises(RasterError, match=r"sparse\.tif: no 64px window with valid fraction >= data.min_valid=0.5"):
        dataset[(0, 64)]
