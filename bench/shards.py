"""Shard-build throughput against raw SLIC on the same tiles, measured in the same process.

    python bench/shards.py --rasters 4 --workers 0 1 2

Raw SLIC = ``skimage.segmentation.slic`` alone (RGB input, default LAB conversion) on tiles that
were read into memory beforehand, with the builder's superpixel count and compactness. Build =
``build_shards`` end to end (planning, reads, SLIC, GeoTIFF writes, checksums, manifest), timed
as wall clock. Goal: build MP/s >= 0.8 x workers x raw MP/s (workers 0 counts as one).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from segcore.config import Config
from segcore.data.raster import inspect_raster, open_raster, read_rgb
from segcore.data.shard_plan import tile_offsets
from segcore.data.shards import build_shards

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/deepglobe-sample"


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the pool's workers, once shut down)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def raw_slic_mps(images: list[str], cfg: Config) -> tuple[float, float, int]:
    """Megapixels per wall second and per CPU second of raw skimage SLIC on the pre-read tiles."""
    from rasterio.windows import Window
    from skimage.segmentation import slic

    data, size = cfg.data, cfg.data.tile_size
    tiles = []
    for path in images:
        info = inspect_raster(path, data)
        with open_raster(path) as ds:
            for row in tile_offsets(info.height, size, data.tile_overlap):
                for col in tile_offsets(info.width, size, data.tile_overlap):
                    tiles.append(read_rgb(ds, info, Window(col, row, size, size), data)[0])
    n_segments = math.ceil(size * size / data.slic_region_size**2)
    start, cpu = time.perf_counter(), cpu_seconds()
    for tile in tiles:
        slic(tile, n_segments=n_segments, compactness=data.slic_compactness, start_label=1, channel_axis=-1)
    megapixels = len(tiles) * size * size / 1e6
    return megapixels / (time.perf_counter() - start), megapixels / (cpu_seconds() - cpu), len(tiles)


def build_mps(manifest: Path, out: Path, cfg: Config, workers: int) -> tuple[float, float, float]:
    """``(MP per wall second, wall seconds, MP per CPU second)`` of a fresh build with ``workers`` processes."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = cfg.replace(**{"data.num_workers": workers, "data.manifest": str(manifest), "data.processed_root": str(out)})
    cpu = cpu_seconds()
    summary = build_shards(cfg, progress=False)
    return summary.megapixels_per_s, summary.seconds, summary.megapixels / (cpu_seconds() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="deepglobe-sample folder")
    parser.add_argument("--rasters", type=int, default=4, help="first N rasters of manifest.csv")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers values to time")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.tile_size=256")
    args = parser.parse_args()
    if not (args.data / "manifest.csv").exists():
        raise SystemExit(f"{args.data}/manifest.csv not found: pass --data or provide ../shared/data")
    rows = (args.data / "manifest.csv").read_text().splitlines()[1 : 1 + args.rasters]
    images = [str(args.data / r.split(",")[0]) for r in rows]
    cfg = Config().replace(**{"data.dataset": "bench", **dict(o.split("=", 1) for o in args.overrides)})
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("image,label\n" + "".join(f"{args.data / r.split(',')[0]},{args.data / r.split(',')[1]}\n"
                                                      for r in rows))  # fmt: skip
        raw_before, raw_cpu_before, n_tiles = raw_slic_mps(images, cfg)
        results = [(w, *build_mps(manifest, Path(tmp) / "out", cfg, w)) for w in args.workers]
        raw_after, raw_cpu_after, _ = raw_slic_mps(images, cfg)
    raw = (raw_before + raw_after) / 2  # measured before and after the builds: shows load drift on shared cores
    raw_cpu = (raw_cpu_before + raw_cpu_after) / 2
    print(f"{len(images)} rasters, {n_tiles} tiles of {cfg.data.tile_size} px, slic_region_size="
          f"{cfg.data.slic_region_size}, {os.cpu_count()} CPUs; raw SLIC {raw_before:.2f} MP/s before the builds, "
          f"{raw_after:.2f} after, mean {raw:.2f}\n")  # fmt: skip
    print("| num_workers | build s | build MP/s | raw SLIC MP/s | build / (max(1, workers) x raw) "
          "| build MP per CPU-s / raw MP per CPU-s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for workers, mps, seconds, mp_cpu in results:
        ratio = mps / (max(1, workers) * raw)
        print(f"| {workers} | {seconds:.1f} | {mps:.2f} | {raw:.2f} | {ratio:.2f} | {mp_cpu / raw_cpu:.2f} |")


if __name__ == "__main__":
    main()
