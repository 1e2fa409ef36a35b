"""Per-raster shard reuse: a folder that gains or loses rasters rebuilds only what changed."""

from __future__ import annotations

from pathlib import Path

from scale_support import shard_config, snapshot

from segcore.config import Config
from segcore.data.shards import build_shards


def tiles(root: Path) -> dict[str, bytes]:
    """Every shard file (the manifest differs in its processed_root only)."""
    return {k: v for k, v in snapshot(root).items() if k != "manifest.json"}


def build(geotiffs: Path, out: Path, scenes: list[int]):
    images = tuple(str(geotiffs / "images" / f"scene-{i:03d}.tif") for i in scenes)
    cfg = Config.from_dict(shard_config(geotiffs, out, manifest="", raster_paths=images, val_fraction=0.0,
                                             tiles_per_shard=3))
    return build_shards(cfg, progress=False)


def test_added_and_removed_rasters_touch_only_their_own_shards(geotiffs, tmp_path):
    out = tmp_path / "processed"
    first = build(geotiffs, out, [0, 1])
    assert (first.shards_written, first.shards_reused) == (4, 0)  # 4 tiles per raster: shards of 3 and 1
    before = {p.name: p.stat().st_ino for p in Path(first.root).glob("train/shard-*/*.tif")}
    grown = build(geotiffs, out, [0, 1, 2])
    assert (grown.shards_written, grown.shards_reused) == (2, 4)
    assert grown.rasters == 3
    # The kept shards are the same files (hard links of the previous build), not re-tiled copies.
    root = Path(grown.root)
    kept = {p.stat().st_ino for p in root.glob("train/shard-*/*.tif")}
    assert set(before.values()) <= kept
    # ...and the grown dataset is byte-identical to a fresh build of the three rasters.
    fresh = build(geotiffs, tmp_path / "fresh", [0, 1, 2])
    assert tiles(root) == tiles(Path(fresh.root))
    shrunk = build(geotiffs, out, [1, 2])
    assert (shrunk.shards_written, shrunk.shards_reused) == (0, 4)
    assert tiles(Path(shrunk.root)) == tiles(Path(build(geotiffs, tmp_path / "fresh2", [1, 2]).root))
