"""Rule 4: caches are keyed on everything that changes the result. The embedded default data is
written once per (count, size, seed), so a run with other values never trains on stale scenes, and
the shard cache key (the content of the scenes) changes with them."""

from __future__ import annotations

import csv
from pathlib import Path

import rasterio

from segcore.config import Config
from segcore.data.cache_key import shard_build_key
from tasks.pipeline import prepare_default_data


def _scenes(manifest: str) -> list[tuple[int, int]]:
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    sizes = []
    for row in rows:
        with rasterio.open(Path(manifest).parent / row["image"]) as ds:
            sizes.append((ds.width, ds.height))
    return sizes


def _key(manifest: str, tmp_path: Path) -> str:
    cfg = Config().replace(**{"data.manifest": manifest, "data.processed_root": str(tmp_path / "p")})
    return shard_build_key(cfg)


def test_default_data_and_shard_key_follow_count_size_and_seed(tmp_path: Path) -> None:
    root = str(tmp_path / "default-data")
    first = prepare_default_data.fn(root, 2, 64, 0)
    stamp = {p: p.stat().st_mtime_ns for p in Path(first).parent.rglob("*")}
    assert prepare_default_data.fn(root, 2, 64, 0) == first  # same values: reused as they are
    assert {p: p.stat().st_mtime_ns for p in Path(first).parent.rglob("*")} == stamp
    more = prepare_default_data.fn(root, 5, 64, 7)  # the re-run: --synthetic-count 5 --seed 7
    bigger = prepare_default_data.fn(root, 2, 96, 0)  # --synthetic-size changed
    reseeded = prepare_default_data.fn(root, 2, 64, 1)
    assert len({first, more, bigger, reseeded}) == 4
    assert _scenes(first) == [(64, 64)] * 2
    assert _scenes(more) == [(64, 64)] * 5
    assert _scenes(bigger) == [(96, 96)] * 2
    keys = {_key(m, tmp_path) for m in (first, more, bigger, reseeded)}
    assert len(keys) == 4
    assert _key(first, tmp_path) == _key(prepare_default_data.fn(root, 2, 64, 0), tmp_path)
    assert not [p for p in Path(root).iterdir() if p.name.startswith(".")]  # no temporary or lock files left
