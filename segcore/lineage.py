"""Provenance of a pipeline run: which shards a stage reads, what data a model was trained on.

Stages hand each other artifact URIs, not paths: the train stage gets the URI of the shard
manifest the build stage logged and finds the dataset on disk from it (:func:`shard_root`), after
checking that the shards there are still the ones that manifest describes. :func:`dataset_record`
is the small record a tracker logs as the run's dataset input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.config import Config
from segcore.errors import ShardError


@dataclass(frozen=True)
class DatasetRecord:
    """The data a run trained on: dataset name, manifest digest, rasters and tiles per split."""

    name: str
    digest: str  # sha256 of the canonical manifest JSON (first 16 hex digits)
    rasters: int
    tiles: dict[str, int]
    root: str

    def as_tags(self) -> dict[str, str]:
        return {"segcore.dataset": self.name, "segcore.dataset.digest": self.digest,
                "segcore.dataset.rasters": str(self.rasters), "segcore.dataset.root": self.root,
                **{f"segcore.dataset.tiles.{k}": str(v) for k, v in sorted(self.tiles.items())}}


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def shard_root(cfg: Config, logged_manifest: str | Path) -> Path:
    """The published dataset whose ``manifest.json`` is byte-identical to ``logged_manifest``.

    The dataset lives at ``<data.processed_root>/<manifest's dataset>``. A ShardError says to
    rebuild when it is gone or was rebuilt since the manifest was logged.
    """
    logged = Path(logged_manifest).read_bytes()
    name = json.loads(logged)["dataset"]
    root = Path(cfg.data.processed_root) / name
    on_disk = root / "manifest.json"
    if not on_disk.is_file() or on_disk.read_bytes() != logged:
        raise ShardError(f"{root}: the shards described by {logged_manifest} are gone or were rebuilt since; "
                         "re-run the build_shards stage")
    return root.resolve()


def dataset_record(root: str | Path) -> DatasetRecord:
    """What a training run on the shard dataset at ``root`` read (for lineage and dataset inputs)."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    tiles = {split: entry["tiles"] for split, entry in manifest.get("splits", {}).items()}
    return DatasetRecord(manifest["dataset"], manifest_digest(manifest)[:16], manifest["counts"]["rasters"],
                         tiles, str(root.resolve()))


def build_counts(root: str | Path) -> dict[str, float]:
    """Flat counts of a published build (the metric names the build stage logs)."""
    counts = json.loads((Path(root) / "manifest.json").read_text())["counts"]
    return {"shards/rasters": counts["rasters"], "shards/tiles_written": counts["tiles_written"],
            "shards/tiles_skipped": sum(counts["tiles_skipped"].values()),
            "shards/rasters_failed": counts["rasters_failed"], "shards/shards": counts["shards"]}
