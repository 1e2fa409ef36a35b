"""Stage 1: rasters -> shards, cached on the content of the inputs and the data config."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking
from tasks.retry import retry_on_io

CACHE_TAG = "segcore.shards.key"


def _reusable_build(key: str, experiment_id: str) -> tuple[str, Path] | None:
    """An earlier finished build run with the same content key whose shards are still on disk."""
    runs = tracking.client().search_runs(
        [experiment_id],
        filter_string=f"tags.`{CACHE_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        root = Path(run.data.tags.get("segcore.shards.root", ""))
        if (root / "manifest.json").is_file():
            return run.info.run_id, root
    return None


@task(name="build_shards", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def build_shards(config: dict[str, Any], parent_run_id: str, on_error: str = "fail",
                 prebuilt_root: str = "") -> dict[str, Any]:
    """Build (or reuse) the shard dataset; log its manifest, indexes and a preview in a child run.

    ``prebuilt_root``: shards the flow already built by fanning one task per shard out on a thread
    or Dask runner (``flows/build_shards_flow.py``); this task then only records them.
    """
    from segcore.data.cache_key import shard_build_key
    from segcore.data.preview import write_shard_preview
    from segcore.data.shards import build_shards as build

    cfg = Config.from_dict(config)
    key = shard_build_key(cfg)
    experiment = tracking.client().get_run(parent_run_id).info.experiment_id
    with tracking.stage_run(parent_run_id, "build_shards", {CACHE_TAG: key}) as run_id:
        hit = _reusable_build(key, experiment)
        if hit is None and not prebuilt_root:
            summary = build(cfg, on_error=on_error, progress=True)
            root = Path(summary.root)
            tracking.log_metrics(run_id, {
                "shards/rasters": summary.rasters, "shards/tiles_written": summary.tiles_written,
                "shards/tiles_skipped": sum(summary.tiles_skipped.values()), "shards/megapixels": summary.megapixels,
                "shards/megapixels_per_s": summary.megapixels_per_s, "shards/seconds": summary.seconds,
                "shards/rasters_failed": len(summary.failures)})
            tracking.client().log_text(run_id, summary.table() + "\n", "shards/build-summary.md")
        elif hit is None:
            root = Path(prebuilt_root)
            counts = json.loads((root / "manifest.json").read_text())["counts"]
            tracking.log_metrics(run_id, {"shards/rasters": counts["rasters"],
                                          "shards/tiles_written": counts["tiles_written"],
                                          "shards/tiles_skipped": sum(counts["tiles_skipped"].values()),
                                          "shards/rasters_failed": counts["rasters_failed"]})
        else:
            root = hit[1]
        tracking.set_tags(run_id, {"segcore.shards.root": str(root.resolve()), "segcore.cached": hit is not None,
                                   "segcore.reused_run_id": hit[0] if hit else ""})
        tracking.log_params(run_id, {f"data.{k}": v for k, v in cfg.to_dict()["data"].items()})
        c = tracking.client()
        c.log_artifact(run_id, str(root / "manifest.json"), "shards")
        for index in sorted(root.glob("*/shard-*/index.csv")):
            c.log_artifact(run_id, str(index), f"shards/index/{index.parent.parent.name}/{index.parent.name}")
        with tempfile.TemporaryDirectory() as tmp:
            preview = write_shard_preview(root, Path(tmp) / "preview.png")
            if preview is not None:
                c.log_artifact(run_id, str(preview), "shards")
        manifest = json.loads((root / "manifest.json").read_text())
    return {"run_id": run_id, "cached": hit is not None, "root": str(root.resolve()),
            "manifest_uri": tracking.artifact_uri(run_id, "shards/manifest.json"),
            "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()}
