"""Stage 1: rasters -> shards, cached on the content of the inputs and the data config.

A finished earlier build with the same content key is reused as it is; otherwise the builder
reuses every shard of the published dataset whose own key still matches (rasters that did not
change keep their tiles; new rasters are tiled, removed ones dropped) and writes only the rest.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task

from segcore.config import Config
from tasks import tracking
from tasks.retry import retry_on_io

CACHE_TAG = "segcore.shards.key"
MANIFEST = "shards/manifest.json"


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


def _log_build(run_id: str, root: Path) -> None:
    """The manifest, per-shard indexes and a preview tile with its superpixels."""
    from segcore.data.preview import write_shard_preview

    c = tracking.client()
    c.log_artifact(run_id, str(root / "manifest.json"), "shards")
    for index in sorted(root.glob("*/shard-*/index.csv")):
        c.log_artifact(run_id, str(index), f"shards/index/{index.parent.parent.name}/{index.parent.name}")
    with tempfile.TemporaryDirectory() as tmp:
        preview = write_shard_preview(root, Path(tmp) / "preview.png")
        if preview is not None:
            c.log_artifact(run_id, str(preview), "shards")


@task(name="build_shards", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def build_shards(config: dict[str, Any], parent_run_id: str, on_error: str = "fail",
                 prebuilt_root: str = "") -> dict[str, Any]:
    """Build (or reuse) the shard dataset; log its manifest, indexes and a preview in a child run.

    ``prebuilt_root``: shards the flow already built by fanning one task per shard out on a thread
    or Dask runner (``flows/build_shards_flow.py``); this task then only records them. Returns the
    run id, ``manifest_uri`` (what the next stages read) and the build's counts.
    """
    from segcore.data.cache_key import shard_build_key
    from segcore.data.shards import build_shards as build
    from segcore.lineage import build_counts

    cfg = Config.from_dict(config)
    key = shard_build_key(cfg)
    experiment = tracking.client().get_run(parent_run_id).info.experiment_id
    with tracking.stage_run(parent_run_id, "build_shards", {CACHE_TAG: key}) as run_id:
        hit = _reusable_build(key, experiment)
        written = reused = -1  # unknown: shards recorded, not built here
        if hit is None and not prebuilt_root:
            summary = build(cfg, on_error=on_error, progress=True)
            root, written, reused = Path(summary.root), summary.shards_written, summary.shards_reused
            tracking.log_metrics(run_id, {"shards/megapixels": summary.megapixels,
                                          "shards/megapixels_per_s": summary.megapixels_per_s,
                                          "shards/seconds": summary.seconds, "shards/shards_written": written,
                                          "shards/shards_reused": reused})
            tracking.client().log_text(run_id, summary.table() + "\n", "shards/build-summary.md")
        else:
            root = hit[1] if hit is not None else Path(prebuilt_root)
        tracking.log_metrics(run_id, build_counts(root))
        tracking.set_tags(run_id, {"segcore.shards.root": str(root.resolve()), "segcore.cached": hit is not None,
                                   "segcore.reused_run_id": hit[0] if hit else ""})
        tracking.log_params(run_id, {f"data.{k}": v for k, v in cfg.to_dict()["data"].items()})
        _log_build(run_id, root)
        counts = json.loads((root / "manifest.json").read_text())["counts"]
    return {"run_id": run_id, "cached": hit is not None, "root": str(root.resolve()),
            "manifest_uri": tracking.artifact_uri(run_id, MANIFEST), "shards_written": written,
            "shards_reused": reused, "rasters": counts["rasters"]}
