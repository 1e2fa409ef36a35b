"""ShardDataset tiles/s against raw rasterio reads of the same tiles, and the warm-LRU speedup.

    python bench/loader.py --rasters 2

Builds a shard dataset from the first N deepglobe-sample rasters (SLIC included), then times, in
one process: (a) raw ``rasterio`` reads of every tile file (rgb + mask, slic, target; no tensors),
(b) one ``ShardDataset`` epoch without cache, (c) a cold and (d) a warm epoch with the LRU cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import rasterio

from segcore.config import Config
from segcore.data.shard_dataset import ShardDataset
from segcore.data.shards import build_shards

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/deepglobe-sample"


def raw_reads(root: Path) -> tuple[int, float]:
    """Read every tile's files with plain rasterio; ``(tiles, seconds)``."""
    start, count = time.perf_counter(), 0
    for index in sorted(root.rglob("index.csv")):
        for row in pd.read_csv(index, keep_default_na=False).to_dict("records"):
            with rasterio.open(index.parent / row["rgb_file"]) as ds:
                ds.read()
                ds.read_masks(1)
            for name in (row["slic_file"], row["target_file"]):
                if name:
                    with rasterio.open(index.parent / name) as ds:
                        ds.read(1)
            count += 1
    return count, time.perf_counter() - start


def epoch(dataset: ShardDataset, n: int) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in dataset.epoch_tiles(n))
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="deepglobe-sample folder")
    parser.add_argument("--rasters", type=int, default=2, help="first N rasters of manifest.csv")
    parser.add_argument("--tile-size", type=int, default=512)
    args = parser.parse_args()
    if not (args.data / "manifest.csv").exists():
        raise SystemExit(f"{args.data}/manifest.csv not found: pass --data or provide ../shared/data")
    rows = (args.data / "manifest.csv").read_text().splitlines()[1 : 1 + args.rasters]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("image,label\n" + "".join(f"{args.data / r.split(',')[0]},{args.data / r.split(',')[1]}\n"
                                                      for r in rows))  # fmt: skip
        cfg = Config().replace(**{"data.manifest": str(manifest), "data.processed_root": tmp, "data.dataset": "b",
                                  "data.tile_size": args.tile_size, "data.val_fraction": 0.0})  # fmt: skip
        build_shards(cfg, progress=False)
        root = Path(tmp) / "b"
        raw_n, raw_s = raw_reads(root)
        plain_n, plain_s = epoch(ShardDataset(root, "train", cfg), 0)
        lru = ShardDataset(root, "train", cfg.replace(**{"data.cache_mode": "lru", "data.cache_max_items": 4096}))
        cold_n, cold_s = epoch(lru, 0)
        warm_n, warm_s = epoch(lru, 1)
    raw = raw_n / raw_s
    print(f"{raw_n} tiles of {args.tile_size} px from {len(rows)} rasters; LRU {lru.cache_info()}\n")
    print("| reader | tiles | s | tiles/s | vs raw rasterio |")
    print("|---|---|---|---|---|")
    rows_out = [
        ("raw rasterio reads", raw_n, raw_s),
        ("ShardDataset, no cache", plain_n, plain_s),
        ("ShardDataset, LRU cold", cold_n, cold_s),
        ("ShardDataset, LRU warm", warm_n, warm_s),
    ]
    for name, n, s in rows_out:
        print(f"| {name} | {n} | {s:.2f} | {n / s:.0f} | {n / s / raw:.2f} |")
    print(f"\nwarm-LRU speedup over the cold epoch: {cold_s / warm_s:.1f}x")


if __name__ == "__main__":
    main()
